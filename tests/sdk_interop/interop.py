"""Calls `kycq sandbox` with the vendors' official Python SDKs and checks what they parse.

Alibaba: alibabacloud-cloudauth-intl20220809 (Mobile3MetaVerifyIntl, Id2MetaVerifyIntl,
Id2MetaPeriodVerifyIntl); Tencent: tencentcloud-sdk-python-faceid (PhoneVerification). Uses the
sandbox's documented default credentials and test identities; exits non-zero on the first SDK
error or misread answer.
"""

import argparse
import datetime
import hashlib
import sys

from alibabacloud_cloudauth_intl20220809 import models as ali
from alibabacloud_cloudauth_intl20220809.client import Client as AliClient
from alibabacloud_tea_openapi.models import Config
from tencentcloud.common import credential
from tencentcloud.common.exception.tencent_cloud_sdk_exception import TencentCloudSDKException
from tencentcloud.common.profile.client_profile import ClientProfile
from tencentcloud.common.profile.http_profile import HttpProfile
from tencentcloud.faceid.v20180301 import faceid_client
from tencentcloud.faceid.v20180301 import models as tc

# The defaults `kycq sandbox` accepts when [providers.<name>] sets none: the vendor descriptors'
# SANDBOX_* constants (src/providers/alibaba/mod.rs, src/providers/tencent/mod.rs).
ALIBABA_KEY_ID = "LTAIkycqsandbox"
ALIBABA_SECRET = "kycq-sandbox-alibaba-secret"
TENCENT_SECRET_ID = "AKIDkycqsandbox"
TENCENT_SECRET_KEY = "kycq-sandbox-tencent-key"

WEIGHTS = [7, 9, 10, 5, 8, 4, 2, 1, 6, 3, 7, 9, 10, 5, 8, 4, 2]
CHECK = "10X98765432"
SURNAMES = "张李王刘陈杨赵黄"
GIVEN = "伟芳娜敏静强磊洋艳勇军杰"


def identity(code, variant=0):
    """The sandbox's documented test identity (src/sandbox/scenarios.rs identity_with_code)."""
    birth = datetime.date(1970, 1, 1) + datetime.timedelta(days=variant % 18262)
    first17 = "110105" + birth.strftime("%Y%m%d") + code
    check = CHECK[sum(int(d) * w for d, w in zip(first17, WEIGHTS)) % 11]
    if variant == 0:
        name = "张三"
    else:
        v = variant - 1
        name = SURNAMES[(v // len(GIVEN)) % len(SURNAMES)] + GIVEN[v % len(GIVEN)]
    mobile = "138%08d" % ((12345678 + variant) % 100000000)
    return name, first17 + check, mobile


def md5(s):
    return hashlib.md5(s.encode("utf-8")).hexdigest()


checks = 0


def expect(what, got, want):
    global checks
    checks += 1
    if got != want:
        print(f"FAIL {what}: got {got!r}, want {want!r}")
        sys.exit(1)
    print(f"ok   {what}: {got!r}")


def alibaba(port, secret=ALIBABA_SECRET):
    return AliClient(
        Config(
            access_key_id=ALIBABA_KEY_ID,
            access_key_secret=secret,
            endpoint=f"127.0.0.1:{port}",
            protocol="http",
        )
    )


def mobile3(client, code, param_type="normal", variant=0):
    name, id_number, mobile = identity(code, variant)
    if param_type == "md5":
        name, id_number, mobile = md5(name), md5(id_number), md5(mobile)
    body = client.mobile_3meta_verify_intl(
        ali.Mobile3MetaVerifyIntlRequest(
            product_code="MOBILE_3META",
            param_type=param_type,
            identify_num=id_number,
            user_name=name,
            mobile=mobile,
        )
    ).body
    expect(f"Mobile3MetaVerifyIntl {code} {param_type} Code", body.code, "Success")
    if not body.request_id:
        print("FAIL Mobile3MetaVerifyIntl: no RequestId")
        sys.exit(1)
    return body.result.biz_code, body.result.sub_code, body.result.isp_name


def id2(client, code, name=None):
    default_name, id_number, _ = identity(code)
    name = name or default_name
    body = client.id_2meta_verify_intl(
        ali.Id2MetaVerifyIntlRequest(
            product_code="ID_2META", param_type="normal", identify_num=id_number, user_name=name
        )
    ).body
    expect(f"Id2MetaVerifyIntl {code} Code", body.code, "Success")
    return body.result.biz_code


def period(client, code, end="20301001"):
    name, id_number, _ = identity(code)
    body = client.id_2meta_period_verify_intl(
        ali.Id2MetaPeriodVerifyIntlRequest(
            product_code="eKYC_Date_MIN",
            merchant_biz_id="interop" + code,
            scene_code="interop",
            doc_type="00000001",
            doc_name=name,
            doc_no=id_number,
            validity_start_date="20201001",
            validity_end_date=end,
        )
    ).body
    expect(f"Id2MetaPeriodVerifyIntl {code} Code", body.code, "Success")
    return body.result.passed, body.result.sub_code


def alibaba_error(what, call, want_code, want_status):
    try:
        call()
    except Exception as e:  # the SDK raises ClientException / ServerException
        expect(f"{what} raises with Code", getattr(e, "code", None), want_code)
        expect(f"{what} HTTP status", getattr(e, "status_code", None), want_status)
        return
    print(f"FAIL {what}: the SDK did not raise")
    sys.exit(1)


def tencent(port, key=TENCENT_SECRET_KEY):
    # The SDK compares the scheme with "http" exactly ("http://" would fall back to https).
    http = HttpProfile(endpoint=f"127.0.0.1:{port}", reqMethod="POST", protocol="http")
    return faceid_client.FaceidClient(
        credential.Credential(TENCENT_SECRET_ID, key), "", ClientProfile(httpProfile=http)
    )


def phone_verification(client, code):
    name, id_number, mobile = identity(code)
    req = tc.PhoneVerificationRequest()
    req.IdCard, req.Name, req.Phone = id_number, name, mobile
    resp = client.PhoneVerification(req)
    if not resp.RequestId:
        print("FAIL PhoneVerification: no RequestId")
        sys.exit(1)
    return resp.Result, resp.ResultDetail, resp.Isp


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    port = parser.parse_args().port

    c = alibaba(port)
    # Mobile3MetaVerifyIntl: match, the three kinds of mismatch, no record, md5 mode.
    expect("Mobile3 match", mobile3(c, "001"), ("1", "101", "CMCC"))
    expect("Mobile3 name mismatch", mobile3(c, "901")[:2], ("2", "203"))
    expect("Mobile3 ID number mismatch", mobile3(c, "902")[:2], ("2", "202"))
    expect("Mobile3 mobile owner mismatch", mobile3(c, "903")[:2], ("2", "201"))
    expect("Mobile3 no record", mobile3(c, "909")[:2], ("3", "301"))
    expect("Mobile3 md5 match", mobile3(c, "001", "md5", 7), ("1", "101", "CMCC"))
    expect("Mobile3 md5 name mismatch", mobile3(c, "901", "md5", 999)[:2], ("2", "203"))
    # Id2MetaVerifyIntl.
    expect("Id2 match", id2(c, "001"), "1")
    expect("Id2 mismatch", id2(c, "905"), "2")
    expect("Id2 no record", id2(c, "909"), "3")
    # The SDK sends a space as `+` in the query and signs it as `%20`.
    expect("Id2 with a space in the name", id2(c, "001", "Zhang San"), "1")
    # Id2MetaPeriodVerifyIntl (form body), with a date and with 长期.
    expect("Period match", period(c, "001"), ("Y", "200"))
    expect("Period match, long-term card", period(c, "800", "长期"), ("Y", "200"))
    expect("Period mismatch", period(c, "901"), ("N", "223"))
    expect("Period no record", period(c, "909"), ("N", "202"))
    # Vendor errors are raised by the SDK with the vendor's Code.
    alibaba_error(
        "Mobile3 InvalidParameter (811)",
        lambda: mobile3(c, "811"),
        "InvalidParameter",
        401,
    )
    alibaba_error(
        "Id2 Throttling.Api (921)", lambda: id2(c, "921"), "Throttling.Api", 403
    )
    wrong = alibaba(port, secret="not-the-sandbox-secret")
    alibaba_error(
        "Mobile3 with a wrong secret", lambda: mobile3(wrong, "001"), "SignatureDoesNotMatch", 400
    )
    alibaba_error(
        "Period with a wrong secret", lambda: period(wrong, "001"), "SignatureDoesNotMatch", 400
    )

    t = tencent(port)
    result, detail, isp = phone_verification(t, "001")
    expect("PhoneVerification match", result, "0")
    if not isp:
        print("FAIL PhoneVerification: empty Isp")
        sys.exit(1)
    expect("PhoneVerification name mismatch", phone_verification(t, "901")[:2], ("-4", "PhoneNameMismatch"))
    expect("PhoneVerification no record", phone_verification(t, "909")[0], "-9")
    try:
        phone_verification(tencent(port, key="not-the-sandbox-key"), "001")
    except TencentCloudSDKException as e:
        expect("PhoneVerification with a wrong key raises", e.get_code(), "AuthFailure.SignatureFailure")
    else:
        print("FAIL PhoneVerification with a wrong key: the SDK did not raise")
        sys.exit(1)

    print(f"sdk interop: {checks} checks passed")


if __name__ == "__main__":
    main()
