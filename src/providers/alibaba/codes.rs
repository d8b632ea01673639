//! Alibaba's code tables as data: BizCode / SubCode / Passed per API with billing, and the
//! error `Code`s, each row citing its source (the vendor's public pages: the ID Verification
//! server's HTTP status codes and each API's page, named in the `*_SRC` constants below).
//!
//! Classification reads the JSON `Code` and `Result` only, never the HTTP status: the vendor's
//! own pages give the same code different statuses (`InvalidParameter` 400 vs 401,
//! `Forbidden.ExceptionRepeatedInvoke` 401 vs 400).

use crate::check::{Billed, ReasonCode};
use crate::providers::codes::{self, CodeRow, Matching};
use crate::providers::{Classification, Refusal};

use super::Api;

/// One row of a vendor table: the shared row shape.
pub type Row = CodeRow;

const fn row(
    code: &'static str,
    pairs_with: Option<&'static str>,
    classification: Classification,
    meaning: &'static str,
    source: &'static str,
) -> Row {
    CodeRow {
        code,
        matching: Matching::Exact,
        pairs_with,
        status: None,
        classification,
        meaning,
        source,
    }
}

/// An error `Code` row: it covers its `.` sub-codes too.
const fn err(
    code: &'static str,
    classification: Classification,
    meaning: &'static str,
    source: &'static str,
) -> Row {
    CodeRow::family(code, classification, meaning, source)
}

const M3_BIZ_SRC: &str = "Mobile3MetaVerifyIntl doc zh/tc (https://www.alibabacloud.com/help/zh/ekyc/latest/wko0wqqd2gepvbtq): \"1:校验一致(计费) 2:校验不一致(计费) 3:查无记录(不计费)\"";
const M3_SUB_SRC: &str = "python SDK models/_mobile_3meta_verify_intl_response_body.py and the tc version of https://www.alibabacloud.com/help/zh/ekyc/latest/wko0wqqd2gepvbtq; billing from the BizCode it pairs with (pairing [inferred])";
const ID2_SRC: &str =
    "Id2MetaVerifyIntl doc zh/tc/en (https://www.alibabacloud.com/help/zh/ekyc/latest/ok4bwxwmu1n94o76)";
const PERIOD_SRC: &str = "Id2MetaPeriodVerifyIntl doc (https://www.alibabacloud.com/help/en/ekyc/latest/dateverify) ResultObject.SubCode table with its Billed column";
const ERR_PRODUCT_SRC: &str = "ID Verification server HTTP status codes (https://www.alibabacloud.com/help/zh/ekyc/latest/http-status-code-returned-by-the-server)";
const ERR_API_SRC: &str = "per-API error tables of ID_2META (https://www.alibabacloud.com/help/zh/ekyc/latest/ok4bwxwmu1n94o76) and eKYC_Date_MIN (https://www.alibabacloud.com/help/en/ekyc/latest/dateverify)";
const ERR_POP_SRC: &str = "Alibaba Cloud POP gateway client errors (https://www.alibabacloud.com/help/doc-detail/67787.htm, V3 signature page https://www.alibabacloud.com/help/en/sdk/product-overview/v3-request-structure-and-signature) [inferred for cloudauth-intl]";

/// `Mobile3MetaVerifyIntl` `Result.BizCode`: billing is per BizCode.
pub const MOBILE3_BIZ_CODES: &[Row] = &[
    row(
        "1",
        None,
        Classification::verdict(ReasonCode::Match, Billed::Yes),
        "consistent (billed)",
        M3_BIZ_SRC,
    ),
    row(
        "2",
        None,
        Classification::verdict(ReasonCode::MismatchUnspecified, Billed::Yes),
        "inconsistent (billed)",
        M3_BIZ_SRC,
    ),
    row(
        "3",
        None,
        Classification::verdict(ReasonCode::NoRecord, Billed::No),
        "no record found (not billed)",
        M3_BIZ_SRC,
    ),
];

/// `Mobile3MetaVerifyIntl` `Result.SubCode`, with the BizCode each one comes with.
pub const MOBILE3_SUB_CODES: &[Row] = &[
    row(
        "101",
        Some("1"),
        Classification::verdict(ReasonCode::Match, Billed::Yes),
        "verification passed",
        M3_SUB_SRC,
    ),
    row(
        "201",
        Some("2"),
        Classification::verdict(ReasonCode::MobileOwnerMismatch, Billed::Yes),
        "mobile does not match the name nor the ID number",
        M3_SUB_SRC,
    ),
    row(
        "202",
        Some("2"),
        Classification::verdict(ReasonCode::IdNumberMismatch, Billed::Yes),
        "mobile matches the name, not the ID number",
        M3_SUB_SRC,
    ),
    row(
        "203",
        Some("2"),
        Classification::verdict(ReasonCode::NameMismatch, Billed::Yes),
        "mobile matches the ID number, not the name",
        M3_SUB_SRC,
    ),
    row(
        "204",
        Some("2"),
        Classification::verdict(ReasonCode::MismatchUnspecified, Billed::Yes),
        "other inconsistency",
        M3_SUB_SRC,
    ),
    row(
        "301",
        Some("3"),
        Classification::verdict(ReasonCode::NoRecord, Billed::No),
        "no record",
        M3_SUB_SRC,
    ),
];

/// `Id2MetaVerifyIntl` `Result.BizCode` (no SubCode in this API).
pub const ID2_BIZ_CODES: &[Row] = &[
    row(
        "1",
        None,
        Classification::verdict(ReasonCode::Match, Billed::Yes),
        "name and ID number consistent (billed)",
        ID2_SRC,
    ),
    row(
        "2",
        None,
        Classification::verdict(ReasonCode::NameIdNumberMismatch, Billed::Yes),
        "name and ID number inconsistent (billed)",
        ID2_SRC,
    ),
    row(
        "3",
        None,
        Classification::verdict(ReasonCode::NoRecord, Billed::No),
        "no record (not billed)",
        ID2_SRC,
    ),
];

/// `Id2MetaPeriodVerifyIntl` `Result.SubCode`, with the `Passed` value each one comes with.
/// Every listed SubCode is billed, no record (202) included.
pub const PERIOD_SUB_CODES: &[Row] = &[
    row(
        "200",
        Some("Y"),
        Classification::verdict(ReasonCode::Match, Billed::Yes),
        "consistent, passed (billed)",
        PERIOD_SRC,
    ),
    row(
        "202",
        Some("N"),
        Classification::verdict(ReasonCode::NoRecord, Billed::Yes),
        "identity not found in the official database (billed)",
        PERIOD_SRC,
    ),
    row(
        "223",
        Some("N"),
        Classification::verdict(ReasonCode::IdentityOrValidityMismatch, Billed::Yes),
        "name and ID number, or the validity dates, do not match (billed)",
        PERIOD_SRC,
    ),
];

/// Billing of an `Id2MetaPeriodVerifyIntl` SubCode not in [`PERIOD_SUB_CODES`]. The vendor page
/// is cut off after 223 and says nothing about other SubCodes, so it is not known.
pub const PERIOD_UNLISTED_SUB_CODE_BILLING: Billed = Billed::Unknown;

/// Error `Code`s, matched exactly or by a listed prefix followed by `.` (`Throttling` covers
/// `Throttling.Api` and `Throttling.User`). None is billed.
pub const ERROR_CODES: &[Row] = &[
    err(
        "MissingParameter",
        Classification::invalid_field(ReasonCode::InvalidRequest),
        "a required parameter is empty",
        ERR_PRODUCT_SRC,
    ),
    err(
        "InvalidParameter",
        Classification::invalid_field(ReasonCode::InvalidRequest),
        "a parameter value is illegal",
        ERR_PRODUCT_SRC,
    ),
    err(
        "Forbidden.ExceptionRepeatedInvoke",
        Classification::identity_limit(ReasonCode::RepeatedInvocationBlocked),
        "abnormal repeated invocations exceeded the limit",
        ERR_PRODUCT_SRC,
    ),
    err(
        "Throttling",
        Classification::THROTTLED,
        "flow control (Throttling.Api: the API's QPS limit)",
        ERR_PRODUCT_SRC,
    ),
    err(
        "InternalError",
        Classification::TRANSIENT,
        "internal error",
        ERR_PRODUCT_SRC,
    ),
    err(
        "ServiceUnavailable",
        Classification::TRANSIENT,
        "service unavailable",
        ERR_PRODUCT_SRC,
    ),
    err(
        "Forbidden.ExceptionDataSource",
        Classification::TRANSIENT,
        "the authoritative data source is abnormal",
        ERR_API_SRC,
    ),
    err(
        "Forbidden.AccountAccessDenied",
        Classification::refused(Refusal::Account),
        "service not activated or account in arrears",
        ERR_PRODUCT_SRC,
    ),
    err(
        "Forbidden.RAMUserAccessDenied",
        Classification::refused(Refusal::Account),
        "the RAM user lacks AliyunAntCloudAuthFullAccess",
        ERR_PRODUCT_SRC,
    ),
    err(
        "SignatureDoesNotMatch",
        Classification::refused(Refusal::Credentials),
        "the signature does not match (wrong secret or signing bug)",
        ERR_POP_SRC,
    ),
    err(
        "InvalidAccessKeyId",
        Classification::refused(Refusal::Credentials),
        "the AccessKeyId is unknown or disabled (.NotFound, .Inactive)",
        ERR_POP_SRC,
    ),
    err(
        "IncompleteSignature",
        Classification::refused(Refusal::Credentials),
        "the signature does not follow the standard",
        ERR_POP_SRC,
    ),
    err(
        "InvalidTimeStamp",
        Classification::PROVIDER_WIDE,
        "x-acs-date missing, malformed or too far from the server's clock (.Format, .Expired)",
        ERR_POP_SRC,
    ),
    err(
        "SignatureNonceUsed",
        Classification::PROVIDER_WIDE,
        "the signature nonce was used already",
        ERR_POP_SRC,
    ),
];

fn find<'a>(table: &'a [Row], code: &str) -> Option<&'a Row> {
    codes::find(table, code)
}

/// The billing both rows agree on, else unknown.
fn agreed(a: Billed, b: Billed) -> Billed {
    if a == b {
        a
    } else {
        Billed::Unknown
    }
}

/// `Mobile3MetaVerifyIntl`: the SubCode decides; an unlisted SubCode finishes as an unknown
/// code billed as its (listed) BizCode says; a SubCode whose BizCode disagrees is an unknown code.
pub fn classify_mobile3(biz: Option<&str>, sub: Option<&str>) -> Classification {
    let biz_row = biz.and_then(|b| find(MOBILE3_BIZ_CODES, b));
    match (sub, sub.and_then(|s| find(MOBILE3_SUB_CODES, s))) {
        (Some(_), Some(sub_row)) => match (biz, biz_row) {
            (None, _) => sub_row.classification,
            (Some(b), _) if sub_row.pairs_with == Some(b) => sub_row.classification,
            (Some(_), Some(biz_row)) => Classification::unknown_code(agreed(
                biz_row.classification.billed,
                sub_row.classification.billed,
            )),
            (Some(_), None) => Classification::unknown_code(Billed::Unknown),
        },
        (Some(_), None) => Classification::unknown_code(
            biz_row.map_or(Billed::Unknown, |r| r.classification.billed),
        ),
        (None, _) => biz_row.map_or(Classification::unknown_code(Billed::Unknown), |r| {
            r.classification
        }),
    }
}

/// `Id2MetaVerifyIntl`: the BizCode decides.
pub fn classify_id2(biz: Option<&str>) -> Classification {
    biz.and_then(|b| find(ID2_BIZ_CODES, b))
        .map_or(Classification::unknown_code(Billed::Unknown), |r| {
            r.classification
        })
}

/// `Id2MetaPeriodVerifyIntl`: the SubCode decides when `Passed` agrees with it.
pub fn classify_period(passed: Option<&str>, sub: Option<&str>) -> Classification {
    match sub.and_then(|s| find(PERIOD_SUB_CODES, s)) {
        Some(r) if passed.is_none() || r.pairs_with == passed => r.classification,
        // Passed contradicts the SubCode: the SubCode's billing, but not a verdict we trust.
        Some(r) => Classification::unknown_code(r.classification.billed),
        None => Classification::unknown_code(PERIOD_UNLISTED_SUB_CODE_BILLING),
    }
}

/// A success `Result` of `api`.
pub fn classify_result(api: Api, result: &super::wire::ResultObject) -> Classification {
    let (biz, sub, passed) = (
        result.biz_code.as_deref(),
        result.sub_code.as_deref(),
        result.passed.as_deref(),
    );
    match api {
        Api::Mobile3 => classify_mobile3(biz, sub),
        Api::Id2 => classify_id2(biz),
        Api::Id2Period => classify_period(passed, sub),
    }
}

/// `provider_code` of a success: SubCode when present, else BizCode, else Passed.
pub fn result_code(result: &super::wire::ResultObject) -> Option<String> {
    result
        .sub_code
        .clone()
        .or_else(|| result.biz_code.clone())
        .or_else(|| result.passed.clone())
}

/// What the tables say a success `Result` means (for logs and results; never PII).
pub fn result_meaning(api: Api, result: &super::wire::ResultObject) -> &'static str {
    let sub = result.sub_code.as_deref();
    let biz = result.biz_code.as_deref();
    let (subs, bizs): (&[Row], &[Row]) = match api {
        Api::Mobile3 => (MOBILE3_SUB_CODES, MOBILE3_BIZ_CODES),
        Api::Id2 => (&[], ID2_BIZ_CODES),
        Api::Id2Period => (PERIOD_SUB_CODES, &[]),
    };
    sub.and_then(|s| find(subs, s))
        .or_else(|| biz.and_then(|b| find(bizs, b)))
        .map_or("code not in kycq's tables", |r| r.meaning)
}

/// The row of an error `Code`: exact match first, then the longest listed family before a `.`.
pub fn error_row(code: &str) -> Option<&'static Row> {
    codes::find(ERROR_CODES, code)
}

/// Classify an error `Code`. An unlisted code is not billed (no error answer is) and finishes
/// as an unknown code.
pub fn classify_error(code: &str) -> Classification {
    error_row(code).map_or(Classification::unknown_code(Billed::No), |r| {
        r.classification
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::check::{ReasonCode as R, Verdict as V};
    use crate::providers::OutcomeClass::{self, *};

    type Expect = (OutcomeClass, Billed, Option<R>);

    fn got(c: Classification) -> Expect {
        (c.class, c.billed, c.reason_code)
    }

    const UNKNOWN_CODE: Option<R> = Some(R::UnknownProviderCode);

    #[test]
    fn mobile3_every_sub_code_with_its_biz_code() {
        let table: &[(&str, &str, Expect)] = &[
            ("1", "101", (Verdict, Billed::Yes, Some(R::Match))),
            (
                "2",
                "201",
                (Verdict, Billed::Yes, Some(R::MobileOwnerMismatch)),
            ),
            (
                "2",
                "202",
                (Verdict, Billed::Yes, Some(R::IdNumberMismatch)),
            ),
            ("2", "203", (Verdict, Billed::Yes, Some(R::NameMismatch))),
            (
                "2",
                "204",
                (Verdict, Billed::Yes, Some(R::MismatchUnspecified)),
            ),
            ("3", "301", (Verdict, Billed::No, Some(R::NoRecord))),
        ];
        for (biz, sub, want) in table {
            assert_eq!(
                got(classify_mobile3(Some(biz), Some(sub))),
                *want,
                "{biz}/{sub}"
            );
            // Without a BizCode, the SubCode alone decides.
            assert_eq!(got(classify_mobile3(None, Some(sub))), *want, "-/{sub}");
        }
        assert_eq!(table.len(), MOBILE3_SUB_CODES.len());
    }

    #[test]
    fn mobile3_every_biz_code_alone() {
        let table: &[(&str, Expect)] = &[
            ("1", (Verdict, Billed::Yes, Some(R::Match))),
            ("2", (Verdict, Billed::Yes, Some(R::MismatchUnspecified))),
            ("3", (Verdict, Billed::No, Some(R::NoRecord))),
        ];
        for (biz, want) in table {
            assert_eq!(got(classify_mobile3(Some(biz), None)), *want, "{biz}");
        }
        assert_eq!(table.len(), MOBILE3_BIZ_CODES.len());
    }

    #[test]
    fn mobile3_unknown_and_contradictory_codes() {
        // Unlisted SubCode: billing from the BizCode table.
        assert_eq!(
            got(classify_mobile3(Some("2"), Some("205"))),
            (UnknownCode, Billed::Yes, UNKNOWN_CODE)
        );
        assert_eq!(
            got(classify_mobile3(Some("3"), Some("302"))),
            (UnknownCode, Billed::No, UNKNOWN_CODE)
        );
        // Unlisted BizCode and SubCode: billing unknown.
        assert_eq!(
            got(classify_mobile3(Some("4"), Some("401"))),
            (UnknownCode, Billed::Unknown, UNKNOWN_CODE)
        );
        assert_eq!(
            got(classify_mobile3(Some("4"), None)),
            (UnknownCode, Billed::Unknown, UNKNOWN_CODE)
        );
        assert_eq!(
            got(classify_mobile3(None, None)),
            (UnknownCode, Billed::Unknown, UNKNOWN_CODE)
        );
        // Listed codes that contradict each other.
        assert_eq!(
            got(classify_mobile3(Some("1"), Some("203"))),
            (UnknownCode, Billed::Yes, UNKNOWN_CODE)
        );
        assert_eq!(
            got(classify_mobile3(Some("2"), Some("301"))),
            (UnknownCode, Billed::Unknown, UNKNOWN_CODE)
        );
        assert_eq!(
            got(classify_mobile3(Some("7"), Some("101"))),
            (UnknownCode, Billed::Unknown, UNKNOWN_CODE)
        );
    }

    #[test]
    fn id2_every_biz_code() {
        let table: &[(&str, Expect)] = &[
            ("1", (Verdict, Billed::Yes, Some(R::Match))),
            ("2", (Verdict, Billed::Yes, Some(R::NameIdNumberMismatch))),
            ("3", (Verdict, Billed::No, Some(R::NoRecord))),
            ("4", (UnknownCode, Billed::Unknown, UNKNOWN_CODE)),
        ];
        for (biz, want) in table {
            assert_eq!(got(classify_id2(Some(biz))), *want, "{biz}");
        }
        assert_eq!(
            got(classify_id2(None)),
            (UnknownCode, Billed::Unknown, UNKNOWN_CODE)
        );
    }

    #[test]
    fn period_every_passed_and_sub_code() {
        let table: &[(Option<&str>, &str, Expect)] = &[
            (Some("Y"), "200", (Verdict, Billed::Yes, Some(R::Match))),
            (Some("N"), "202", (Verdict, Billed::Yes, Some(R::NoRecord))),
            (
                Some("N"),
                "223",
                (Verdict, Billed::Yes, Some(R::IdentityOrValidityMismatch)),
            ),
            (
                None,
                "223",
                (Verdict, Billed::Yes, Some(R::IdentityOrValidityMismatch)),
            ),
            // Unlisted SubCodes: the vendor table says nothing about their billing.
            (
                Some("N"),
                "224",
                (UnknownCode, Billed::Unknown, UNKNOWN_CODE),
            ),
            (
                Some("Y"),
                "201",
                (UnknownCode, Billed::Unknown, UNKNOWN_CODE),
            ),
            // Passed contradicts a listed SubCode: billed as the SubCode says, not trusted.
            (Some("Y"), "223", (UnknownCode, Billed::Yes, UNKNOWN_CODE)),
            (Some("N"), "200", (UnknownCode, Billed::Yes, UNKNOWN_CODE)),
        ];
        for (passed, sub, want) in table {
            assert_eq!(
                got(classify_period(*passed, Some(sub))),
                *want,
                "{passed:?}/{sub}"
            );
        }
        assert_eq!(
            got(classify_period(Some("Y"), None)),
            (UnknownCode, Billed::Unknown, UNKNOWN_CODE)
        );
        // The verdicts the shared table implies.
        let verdict = |p, s| {
            classify_period(Some(p), Some(s))
                .reason_code
                .unwrap()
                .completed_verdict()
        };
        assert_eq!(verdict("Y", "200"), Some(V::Match));
        assert_eq!(verdict("N", "202"), Some(V::NotFound));
        assert_eq!(verdict("N", "223"), Some(V::Mismatch));
    }

    #[test]
    fn every_error_code() {
        let table: &[(&str, OutcomeClass, Option<R>, bool)] = &[
            (
                "MissingParameter",
                InvalidField,
                Some(R::InvalidRequest),
                false,
            ),
            (
                "InvalidParameter",
                InvalidField,
                Some(R::InvalidRequest),
                false,
            ),
            (
                "Forbidden.ExceptionRepeatedInvoke",
                IdentityLimit,
                Some(R::RepeatedInvocationBlocked),
                false,
            ),
            ("Throttling.Api", Transient, None, true),
            ("Throttling.User", Transient, None, true),
            ("Throttling", Transient, None, true),
            ("InternalError", Transient, None, false),
            ("ServiceUnavailable", Transient, None, false),
            ("Forbidden.ExceptionDataSource", Transient, None, false),
            ("Forbidden.AccountAccessDenied", ProviderWide, None, false),
            ("Forbidden.RAMUserAccessDenied", ProviderWide, None, false),
            ("SignatureDoesNotMatch", ProviderWide, None, false),
            ("InvalidAccessKeyId.NotFound", ProviderWide, None, false),
            ("InvalidAccessKeyId.Inactive", ProviderWide, None, false),
            ("IncompleteSignature", ProviderWide, None, false),
            ("InvalidTimeStamp.Expired", ProviderWide, None, false),
            ("InvalidTimeStamp.Format", ProviderWide, None, false),
            ("SignatureNonceUsed", ProviderWide, None, false),
            // Not in the tables: counted, finished, not billed.
            ("Forbidden.RiskControl", UnknownCode, UNKNOWN_CODE, false),
            ("Forbidden", UnknownCode, UNKNOWN_CODE, false),
            ("ThrottlingX", UnknownCode, UNKNOWN_CODE, false),
            ("InvalidParameterX", UnknownCode, UNKNOWN_CODE, false),
        ];
        for (code, class, reason, throttled) in table {
            let c = classify_error(code);
            assert_eq!(
                (c.class, c.reason_code, c.throttled, c.billed),
                (*class, *reason, *throttled, Billed::No),
                "{code}"
            );
        }
        for r in ERROR_CODES {
            assert!(!r.source.is_empty() && !r.meaning.is_empty(), "{}", r.code);
            assert_eq!(classify_error(r.code), r.classification);
        }
        assert_eq!(
            classify_error("InvalidParameter")
                .reason_code
                .unwrap()
                .completed_verdict(),
            Some(V::InvalidInput)
        );
    }

    #[test]
    fn every_row_cites_a_source_and_provider_codes_prefer_the_sub_code() {
        for table in [
            MOBILE3_BIZ_CODES,
            MOBILE3_SUB_CODES,
            ID2_BIZ_CODES,
            PERIOD_SUB_CODES,
            ERROR_CODES,
        ] {
            for r in table {
                assert!(!r.source.is_empty() && !r.meaning.is_empty(), "{}", r.code);
            }
        }
        let r = super::super::wire::ResultObject {
            biz_code: Some("2".into()),
            sub_code: Some("203".into()),
            isp_name: None,
            passed: None,
        };
        assert_eq!(result_code(&r).as_deref(), Some("203"));
        assert_eq!(
            result_meaning(Api::Mobile3, &r),
            "mobile matches the ID number, not the name"
        );
        let r = super::super::wire::ResultObject {
            biz_code: Some("3".into()),
            ..Default::default()
        };
        assert_eq!(result_code(&r).as_deref(), Some("3"));
        assert_eq!(result_meaning(Api::Id2, &r), "no record (not billed)");
        let r = super::super::wire::ResultObject {
            passed: Some("N".into()),
            ..Default::default()
        };
        assert_eq!(result_code(&r).as_deref(), Some("N"));
    }
}
