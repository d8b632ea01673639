//! Building an Alibaba call (pure: the time and the nonce are passed in): each API's
//! parameters where the official SDK puts them (query or form body), and the ACS3-HMAC-SHA256
//! signature.

use chrono::{DateTime, Utc};
use md5::{Digest, Md5};
use reqwest::header::{HeaderName, HeaderValue};
use reqwest::{Method, Request};

use super::{Api, ParamType, DOC_TYPE_RESIDENT_ID, LONG_TERM, VERSION};
use crate::check::identity::format_yyyymmdd;
use crate::check::mask::{mask_id_number, mask_mobile, mask_name};
use crate::check::{CheckRequest, ReasonCode, ValidityEnd};
use crate::providers::signing::{acs3, sha256_hex};
use crate::providers::{Classification, ProviderReply};

/// Longest `MerchantBizId` the vendor takes (letters and digits).
pub const MERCHANT_BIZ_ID_MAX: usize = 32;
/// Longest `SceneCode` the vendor takes (letters, digits, `_`).
pub const SCENE_CODE_MAX: usize = 10;
/// Longest `MerchantUserId` kycq passes on. The vendor page states no limit; 64 printable ASCII
/// characters is kycq's own bound [inferred], so an opaque or hashed user id always fits.
pub const MERCHANT_USER_ID_MAX: usize = 64;

/// The parameters of one call, placed as the official SDK places them. Holds personal data:
/// `Debug` masks it.
#[derive(Clone, PartialEq, Eq)]
pub struct ApiRequest {
    /// Which API.
    pub api: Api,
    /// Query-string parameters (Mobile3MetaVerifyIntl, Id2MetaVerifyIntl).
    pub query: Vec<(&'static str, String)>,
    /// Form-body parameters (Id2MetaPeriodVerifyIntl).
    pub form: Option<Vec<(&'static str, String)>>,
}

impl ApiRequest {
    /// A parameter's value, wherever it is placed.
    pub fn param(&self, name: &str) -> Option<&str> {
        self.query
            .iter()
            .chain(self.form.iter().flatten())
            .find(|(n, _)| *n == name)
            .map(|(_, v)| v.as_str())
    }
}

impl std::fmt::Debug for ApiRequest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let masked = |params: &[(&'static str, String)]| -> Vec<(&'static str, String)> {
            params
                .iter()
                .map(|(n, v)| {
                    let shown = match *n {
                        "IdentifyNum" | "DocNo" if v.len() != 32 => mask_id_number(v),
                        "UserName" | "DocName" if v.len() != 32 => mask_name(v),
                        "Mobile" if v.len() != 32 => mask_mobile(v),
                        "IdentifyNum" | "DocNo" | "UserName" | "DocName" | "Mobile"
                        | "MerchantUserId" => "***".to_owned(),
                        _ => v.clone(),
                    };
                    (*n, shown)
                })
                .collect()
        };
        f.debug_struct("ApiRequest")
            .field("api", &self.api)
            .field("query", &masked(&self.query))
            .field("form", &self.form.as_deref().map(masked))
            .finish()
    }
}

/// Lower-case hex MD5 of the UTF-8 bytes of `s` (ParamType `md5`).
pub fn md5_hex(s: &str) -> String {
    hex::encode(Md5::digest(s.as_bytes()))
}

/// `MerchantBizId` of a request: the `request_id` itself when it is at most 32 ASCII letters
/// and digits, else the first 32 hex characters of its SHA-256. The same on every retry.
pub fn merchant_biz_id(request_id: &str) -> String {
    if !request_id.is_empty()
        && request_id.len() <= MERCHANT_BIZ_ID_MAX
        && request_id.bytes().all(|b| b.is_ascii_alphanumeric())
    {
        request_id.to_owned()
    } else {
        sha256_hex(request_id.as_bytes())[..MERCHANT_BIZ_ID_MAX].to_owned()
    }
}

/// Whether the vendor takes this `SceneCode`: 1–10 ASCII letters, digits or `_`.
pub fn valid_scene_code(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= SCENE_CODE_MAX
        && s.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
}

/// Whether kycq passes this `MerchantUserId` on: 1–64 printable ASCII characters, no spaces.
pub fn valid_merchant_user_id(s: &str) -> bool {
    !s.is_empty() && s.len() <= MERCHANT_USER_ID_MAX && s.bytes().all(|b| b.is_ascii_graphic())
}

fn refuse(reason: ReasonCode, detail: &str) -> ProviderReply {
    ProviderReply::transport(Classification::invalid_field(reason), None, detail)
}

/// Builds the parameters of the API that runs `req.check`. A request without the fields its
/// check needs (validation guarantees them) is answered as an invalid field, never sent.
pub fn build_request(
    req: &CheckRequest,
    param_type: ParamType,
) -> Result<ApiRequest, ProviderReply> {
    let api = Api::for_check(req.check);
    let s = &req.subject;
    // The ID number exactly as on the card, with an upper-case X (also before hashing).
    let id_number = s.id_number.expose().to_ascii_uppercase();
    let name = s.name.expose();
    let param = |k: &'static str, v: &str| (k, v.to_owned());
    Ok(match api {
        Api::Mobile3 => {
            let mobile = s
                .mobile
                .as_ref()
                .ok_or_else(|| {
                    refuse(
                        ReasonCode::InvalidMobile,
                        "mobile is required for Mobile3MetaVerifyIntl",
                    )
                })?
                .expose();
            let (id_number, name, mobile) = match param_type {
                ParamType::Normal => (id_number, name.to_owned(), mobile.to_owned()),
                ParamType::Md5 => (md5_hex(&id_number), md5_hex(name), md5_hex(mobile)),
            };
            ApiRequest {
                api,
                query: vec![
                    param("ProductCode", api.product_code()),
                    param("ParamType", param_type.as_str()),
                    ("IdentifyNum", id_number),
                    ("UserName", name),
                    ("Mobile", mobile),
                ],
                form: None,
            }
        }
        // ID_2META takes plaintext only ("MD5 is not supported").
        Api::Id2 => ApiRequest {
            api,
            query: vec![
                param("ProductCode", api.product_code()),
                param("ParamType", ParamType::Normal.as_str()),
                ("IdentifyNum", id_number),
                param("UserName", name),
            ],
            form: None,
        },
        Api::Id2Period => {
            let validity = s.validity.as_ref().ok_or_else(|| {
                refuse(
                    ReasonCode::InvalidDate,
                    "validity dates are required for Id2MetaPeriodVerifyIntl",
                )
            })?;
            let end = match validity.end {
                ValidityEnd::Date(d) => format_yyyymmdd(d),
                ValidityEnd::LongTerm => LONG_TERM.to_owned(),
            };
            let mut form = vec![
                param("ProductCode", api.product_code()),
                ("MerchantBizId", merchant_biz_id(&req.request_id)),
                param("DocType", DOC_TYPE_RESIDENT_ID),
                param("DocName", name),
                ("DocNo", id_number),
                ("ValidityStartDate", format_yyyymmdd(validity.start)),
                ("ValidityEndDate", end),
            ];
            match req.scene_code.as_deref() {
                Some(code) if valid_scene_code(code) => form.push(param("SceneCode", code)),
                Some(_) => tracing::debug!(
                    field = "scene_code",
                    "not sent: Alibaba takes at most 10 letters, digits or _"
                ),
                None => {}
            }
            match req.merchant_user_id.as_deref() {
                Some(id) if valid_merchant_user_id(id) => form.push(param("MerchantUserId", id)),
                Some(_) => tracing::debug!(
                    field = "merchant_user_id",
                    "not sent: kycq passes at most 64 printable ASCII characters"
                ),
                None => {}
            }
            ApiRequest {
                api,
                query: Vec::new(),
                form: Some(form),
            }
        }
    })
}

/// Signs the call for `host` at `date` with `nonce` (pure).
pub fn sign(
    request: &ApiRequest,
    host: &str,
    access_key_id: &str,
    access_key_secret: &str,
    date: DateTime<Utc>,
    nonce: &str,
) -> acs3::SignedRpc {
    acs3::sign_rpc(
        &acs3::RpcCall {
            host,
            action: request.api.action(),
            version: VERSION,
            query: &request.query,
            form: request.form.as_deref(),
        },
        access_key_id,
        access_key_secret,
        date,
        nonce,
    )
}

/// The HTTP request of a signed call to `endpoint` (the API root, `/`).
pub fn http_request(
    endpoint: &url::Url,
    signed: acs3::SignedRpc,
) -> Result<Request, ProviderReply> {
    let mut url = endpoint.clone();
    url.set_query(Some(signed.query.as_str()).filter(|q| !q.is_empty()));
    let mut request = Request::new(Method::POST, url);
    let headers = std::iter::once(("accept", "application/json".to_owned())).chain(signed.headers);
    for (name, value) in headers {
        let value = HeaderValue::from_str(&value).map_err(|_| {
            refuse(
                ReasonCode::InvalidRequest,
                &format!("{name} cannot be sent as an HTTP header"),
            )
        })?;
        request
            .headers_mut()
            .insert(HeaderName::from_static(name), value);
    }
    if !signed.body.is_empty() {
        *request.body_mut() = Some(signed.body.into());
    }
    Ok(request)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::check::{decode, Decoded};
    use chrono::NaiveDate;

    fn request(json: serde_json::Value) -> CheckRequest {
        let today = NaiveDate::from_ymd_opt(2026, 11, 23).unwrap();
        match decode(json.to_string().as_bytes(), today).unwrap() {
            Decoded::Valid(r) => r,
            Decoded::Rejected(r) => panic!("rejected: {}", r.reason),
        }
    }

    fn mobile3(id: &str) -> CheckRequest {
        request(serde_json::json!({
            "request_id": id, "check": "mobile3", "name": "张三",
            "id_number": "11010519491231002x", "mobile": "13112345678",
            "scene_code": "signup", "merchant_user_id": "u-42",
        }))
    }

    fn period(end: &str, scene: Option<&str>, user: Option<&str>) -> CheckRequest {
        request(serde_json::json!({
            "request_id": "9f0c7a3e-2b8d-4c1f-a6e5-d4c3b2a19087", "check": "id2_period",
            "name": "张三", "id_number": "11010519491231002X",
            "validity_start": "20201001", "validity_end": end,
            "scene_code": scene, "merchant_user_id": user,
        }))
    }

    fn names(params: &[(&'static str, String)]) -> Vec<&'static str> {
        params.iter().map(|(n, _)| *n).collect()
    }

    #[test]
    fn mobile3_parameters_go_in_the_query_in_plaintext() {
        let r = build_request(&mobile3("r1"), ParamType::Normal).unwrap();
        assert_eq!(r.api, Api::Mobile3);
        assert!(r.form.is_none());
        assert_eq!(
            r.query,
            vec![
                ("ProductCode", "MOBILE_3META".to_owned()),
                ("ParamType", "normal".to_owned()),
                ("IdentifyNum", "11010519491231002X".to_owned()),
                ("UserName", "张三".to_owned()),
                ("Mobile", "13112345678".to_owned()),
            ]
        );
        // The SDK capture's query string, byte for byte.
        let signed = sign(
            &r,
            "127.0.0.1:18080",
            "testid",
            "testsecret",
            Utc::now(),
            "n",
        );
        assert_eq!(
            signed.query,
            "IdentifyNum=11010519491231002X&Mobile=13112345678&ParamType=normal&ProductCode=MOBILE_3META&UserName=%E5%BC%A0%E4%B8%89"
        );
        assert!(signed.body.is_empty());
        // Mobile3MetaVerifyIntl takes no SceneCode / MerchantUserId.
        assert_eq!(r.param("SceneCode"), None);
        let shown = format!("{r:?}");
        assert!(
            !shown.contains("11010519491231002X")
                && !shown.contains("13112345678")
                && !shown.contains("张三"),
            "{shown}"
        );
    }

    #[test]
    fn mobile3_md5_mode_hashes_each_field_with_an_upper_case_x() {
        let r = build_request(&mobile3("r1"), ParamType::Md5).unwrap();
        assert_eq!(r.param("ParamType"), Some("md5"));
        // Known answers (hashlib.md5 of the UTF-8 bytes); the ID was sent with a lower-case x.
        assert_eq!(
            r.param("IdentifyNum"),
            Some("ae05564031c21338aa8a2e7266e7855c")
        );
        assert_eq!(
            r.param("UserName"),
            Some("615db57aa314529aaa0fbe95b3e95bd3")
        );
        assert_eq!(r.param("Mobile"), Some("dafc728802534d51fbf85c70313a2bd2"));
        assert_ne!(md5_hex("11010519491231002x"), md5_hex("11010519491231002X"));
        for (_, v) in &r.query[2..] {
            assert!(
                v.len() == 32
                    && v.bytes()
                        .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
            );
        }
        let shown = format!("{r:?}");
        assert!(
            !shown.contains("ae05564031c21338aa8a2e7266e7855c"),
            "{shown}"
        );
    }

    #[test]
    fn id2_is_always_plaintext_in_the_query() {
        let req = request(serde_json::json!({
            "request_id": "r2", "check": "id2", "name": "张三", "id_number": "11010519491231002X",
        }));
        for pt in [ParamType::Normal, ParamType::Md5] {
            let r = build_request(&req, pt).unwrap();
            assert!(r.form.is_none());
            let signed = sign(&r, "h", "id", "s", Utc::now(), "n");
            assert_eq!(
                signed.query,
                "IdentifyNum=11010519491231002X&ParamType=normal&ProductCode=ID_2META&UserName=%E5%BC%A0%E4%B8%89"
            );
        }
    }

    #[test]
    fn period_parameters_go_in_a_form_body() {
        let r = build_request(&period("20301001", None, None), ParamType::Md5).unwrap();
        assert!(r.query.is_empty());
        let form = r.form.as_ref().unwrap();
        assert_eq!(
            names(form),
            [
                "ProductCode",
                "MerchantBizId",
                "DocType",
                "DocName",
                "DocNo",
                "ValidityStartDate",
                "ValidityEndDate"
            ]
        );
        assert_eq!(r.param("ProductCode"), Some("eKYC_Date_MIN"));
        assert_eq!(r.param("DocType"), Some("00000001"));
        assert_eq!(
            r.param("DocName"),
            Some("张三"),
            "plaintext whatever ParamType"
        );
        assert_eq!(r.param("ValidityStartDate"), Some("20201001"));
        assert_eq!(r.param("ValidityEndDate"), Some("20301001"));
        // The request_id has dashes: hashed.
        assert_eq!(
            r.param("MerchantBizId"),
            Some("879dffe4999bb7fe1d41bceaf187b278")
        );
        let date = acs3::parse_date("2026-11-23T02:18:16Z").unwrap();
        let signed = sign(&r, "127.0.0.1:18080", "testid", "testsecret", date, "n");
        assert!(signed.query.is_empty());
        assert_eq!(
            String::from_utf8(signed.body.clone()).unwrap(),
            "DocName=%E5%BC%A0%E4%B8%89&DocNo=11010519491231002X&DocType=00000001&MerchantBizId=879dffe4999bb7fe1d41bceaf187b278&ProductCode=eKYC_Date_MIN&ValidityEndDate=20301001&ValidityStartDate=20201001"
        );
        let header = |n: &str| {
            signed
                .headers
                .iter()
                .find(|(k, _)| *k == n)
                .map(|(_, v)| v.clone())
        };
        assert_eq!(
            header("content-type").as_deref(),
            Some(acs3::FORM_CONTENT_TYPE)
        );
        assert_eq!(
            header("x-acs-content-sha256"),
            Some(sha256_hex(&signed.body))
        );
        assert_eq!(
            header("x-acs-action").as_deref(),
            Some("Id2MetaPeriodVerifyIntl")
        );
        assert_eq!(header("x-acs-version").as_deref(), Some("2022-08-09"));
        assert_eq!(
            header("x-acs-date").as_deref(),
            Some("2026-11-23T02:18:16Z")
        );
        assert_eq!(header("x-acs-signature-nonce").as_deref(), Some("n"));
        let auth = acs3::parse_authorization(&header("authorization").unwrap()).unwrap();
        assert_eq!(
            auth.signed_headers,
            [
                "content-type",
                "host",
                "x-acs-action",
                "x-acs-content-sha256",
                "x-acs-date",
                "x-acs-signature-nonce",
                "x-acs-version"
            ]
        );
    }

    #[test]
    fn long_term_is_sent_as_changqi() {
        for spelling in ["long-term", "长期", "LONGTERM"] {
            let r = build_request(&period(spelling, None, None), ParamType::Normal).unwrap();
            assert_eq!(r.param("ValidityEndDate"), Some("长期"), "{spelling}");
        }
        let signed = sign(
            &build_request(&period("long-term", None, None), ParamType::Normal).unwrap(),
            "h",
            "id",
            "s",
            Utc::now(),
            "n",
        );
        assert!(String::from_utf8(signed.body)
            .unwrap()
            .contains("ValidityEndDate=%E9%95%BF%E6%9C%9F"));
    }

    #[test]
    fn scene_code_and_merchant_user_id_pass_only_when_the_vendor_takes_them() {
        let r = build_request(
            &period("20301001", Some("signup_01"), Some("u-42")),
            ParamType::Normal,
        )
        .unwrap();
        assert_eq!(r.param("SceneCode"), Some("signup_01"));
        assert_eq!(r.param("MerchantUserId"), Some("u-42"));
        for bad in ["sign-up", "signup_2026x", "注册"] {
            let r = build_request(&period("20301001", Some(bad), None), ParamType::Normal).unwrap();
            assert_eq!(r.param("SceneCode"), None, "{bad}");
        }
        for bad in ["has space", &"u".repeat(65), "用户"] {
            let r = build_request(&period("20301001", None, Some(bad)), ParamType::Normal).unwrap();
            assert_eq!(r.param("MerchantUserId"), None, "{bad}");
        }
        assert!(
            valid_scene_code("1234567890")
                && !valid_scene_code("12345678901")
                && !valid_scene_code("")
        );
        assert!(valid_merchant_user_id(&"u".repeat(64)));
    }

    #[test]
    fn merchant_biz_id_is_stable_unique_and_fits() {
        assert_eq!(
            merchant_biz_id("9f0c7a3e2b8d4c1fa6e5d4c3b2a19087"),
            "9f0c7a3e2b8d4c1fa6e5d4c3b2a19087"
        );
        assert_eq!(merchant_biz_id("req1"), "req1");
        assert_eq!(merchant_biz_id("req_1"), "dfe7be6cee3b99ca63628de710b914dd");
        assert_eq!(
            merchant_biz_id("9f0c7a3e-2b8d-4c1f-a6e5-d4c3b2a19087"),
            "879dffe4999bb7fe1d41bceaf187b278"
        );
        let long = "a".repeat(33);
        assert_eq!(merchant_biz_id(&long).len(), 32);
        assert_ne!(merchant_biz_id(&long), merchant_biz_id(&"a".repeat(34)));
        assert_eq!(merchant_biz_id(&long), merchant_biz_id(&long));
        for id in ["req_1", &long, "x-y"] {
            let m = merchant_biz_id(id);
            assert!(m.len() <= 32 && m.bytes().all(|b| b.is_ascii_alphanumeric()));
        }
        // The same request retried sends the same MerchantBizId.
        let a = build_request(&period("20301001", None, None), ParamType::Normal).unwrap();
        let b = build_request(&period("20301001", None, None), ParamType::Normal).unwrap();
        assert_eq!(a.param("MerchantBizId"), b.param("MerchantBizId"));
    }

    #[test]
    fn the_http_request_carries_the_signed_query_headers_and_body() {
        let endpoint = url::Url::parse("http://127.0.0.1:18080/").unwrap();
        let r = build_request(&mobile3("r1"), ParamType::Normal).unwrap();
        let signed = sign(
            &r,
            "127.0.0.1:18080",
            "testid",
            "testsecret",
            Utc::now(),
            "n",
        );
        let query = signed.query.clone();
        let http = http_request(&endpoint, signed).unwrap();
        assert_eq!(http.method(), Method::POST);
        assert_eq!(http.url().query(), Some(query.as_str()));
        assert_eq!(http.headers()["accept"], "application/json");
        assert!(http.headers()["authorization"]
            .to_str()
            .unwrap()
            .starts_with("ACS3-HMAC-SHA256 Credential=testid"));
        assert!(http.body().is_none());
        let p = build_request(&period("20301001", None, None), ParamType::Normal).unwrap();
        let signed = sign(
            &p,
            "127.0.0.1:18080",
            "testid",
            "testsecret",
            Utc::now(),
            "n",
        );
        let body = signed.body.clone();
        let http = http_request(&endpoint, signed).unwrap();
        assert_eq!(http.url().query(), None);
        assert_eq!(
            http.body().and_then(|b| b.as_bytes()),
            Some(body.as_slice())
        );
    }
}
