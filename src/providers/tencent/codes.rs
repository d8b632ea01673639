//! Tencent's code tables as data, in the shared row shape ([`CodeRow`]): `PhoneVerification`
//! Result codes (with billing), the ResultDetail of a mismatch, and API error codes. Sources:
//! the intl API doc (cloud.tencent.com/document/api/1061/79046), the CN doc (1007/39765), the
//! SDK's errors.go and the common error codes (1007/31323); FaceID bills no error response.

use crate::check::{Billed, ReasonCode};
use crate::providers::codes::{find, CodeRow};
use crate::providers::{Classification, Refusal};

const RESULT_SRC: &str = "PhoneVerification, Result table (intl API doc cloud.tencent.com/document/api/1061/79046; CN doc 1007/39765): 0 and -4 are charged";
const DETAIL_SRC: &str =
    "PhoneVerification ResultDetail of a -4 (detailed mode, CN doc 1007/39765)";
const ERR_SRC: &str = "Tencent Cloud API 3.0 common error codes (cloud.tencent.com/document/api/1007/31323) and the FaceID SDK's errors.go; error responses are not charged";

use Classification as C;

/// `Result` codes: class, billing, reason (a `-4`'s reason is refined by its `ResultDetail`).
#[rustfmt::skip]
pub const RESULT_CODES: &[CodeRow] = &[
    CodeRow::exact("0", C::verdict(ReasonCode::Match, Billed::Yes), "three elements consistent (billed)", RESULT_SRC),
    CodeRow::exact("-4", C::verdict(ReasonCode::MismatchUnspecified, Billed::Yes), "three elements inconsistent (billed)", RESULT_SRC),
    CodeRow::exact("-6", C::invalid_field(ReasonCode::InvalidMobile), "phone number invalid", RESULT_SRC),
    CodeRow::exact("-7", C::invalid_field(ReasonCode::InvalidIdNumber), "ID number invalid", RESULT_SRC),
    CodeRow::exact("-8", C::invalid_field(ReasonCode::InvalidName), "name check failed", RESULT_SRC),
    CodeRow::exact("-9", C::verdict(ReasonCode::NoRecord, Billed::No), "no record", RESULT_SRC),
    CodeRow::exact("-11", C::TRANSIENT, "verification center busy", RESULT_SRC),
    CodeRow::exact("-12", C::identity_limit(ReasonCode::IdentityDailyLimit), "daily attempt limit for this identity", RESULT_SRC),
    CodeRow::exact("-13", C::verdict(ReasonCode::UnsupportedNumberRange, Billed::No), "number range not supported", RESULT_SRC),
];

/// `ResultDetail` of a `-4` (detailed mode): the precise mismatch, billed as the `-4` is.
#[rustfmt::skip]
pub const RESULT_DETAILS: &[CodeRow] = &[
    CodeRow::exact("PhoneNameMismatch", C::verdict(ReasonCode::NameMismatch, Billed::Yes), "mobile and ID number match, the name does not", DETAIL_SRC).paired("-4"),
    CodeRow::exact("PhoneIdCardMismatch", C::verdict(ReasonCode::IdNumberMismatch, Billed::Yes), "mobile and name match, the ID number does not", DETAIL_SRC).paired("-4"),
    CodeRow::exact("PhoneNameIdCardMismatch", C::verdict(ReasonCode::MobileOwnerMismatch, Billed::Yes), "the mobile belongs to someone else", DETAIL_SRC).paired("-4"),
    CodeRow::exact("NameIdCardMismatch", C::verdict(ReasonCode::NameIdNumberMismatch, Billed::Yes), "name and ID number do not belong together", DETAIL_SRC).paired("-4"),
    CodeRow::exact("OtherMismatch", C::verdict(ReasonCode::MismatchUnspecified, Billed::Yes), "inconsistent, no detail", DETAIL_SRC).paired("-4"),
];

/// Error codes (`Response.Error.Code`), each matching itself and its `.` sub-codes. None of
/// them is billed.
#[rustfmt::skip]
pub const ERROR_CODES: &[CodeRow] = &[
    // Frequency limits: retry with backoff; the shared bucket cools down.
    CodeRow::family("RequestLimitExceeded", C::THROTTLED, "request frequency over the limit", ERR_SRC),
    // Temporary trouble on Tencent's side.
    CodeRow::family("InternalError", C::TRANSIENT, "internal error", ERR_SRC),
    CodeRow::family("ServiceUnavailable", C::TRANSIENT, "service temporarily unavailable", ERR_SRC),
    CodeRow::family("ResourceUnavailable", C::TRANSIENT, "resource unavailable", ERR_SRC),
    CodeRow::family("ResourceInsufficient", C::TRANSIENT, "resource insufficient", ERR_SRC),
    CodeRow::family("FailedOperation.UnKnown", C::TRANSIENT, "unknown internal failure", ERR_SRC),
    // Credentials, signing, account, activation: nothing this request can fix.
    CodeRow::family("AuthFailure", C::refused(Refusal::Credentials), "signature, SecretId or token refused", ERR_SRC),
    CodeRow::family("UnauthorizedOperation", C::refused(Refusal::Account), "not authorized (arrears, not activated, CAM)", ERR_SRC),
    CodeRow::family("FailedOperation.StsUnAuthErrError", C::refused(Refusal::Credentials), "STS authorization failed", ERR_SRC),
    CodeRow::family("InvalidAction", C::PROVIDER_WIDE, "no such action", ERR_SRC),
    CodeRow::family("NoSuchVersion", C::PROVIDER_WIDE, "no such API version", ERR_SRC),
    CodeRow::family("ActionOffline", C::PROVIDER_WIDE, "the action is offline", ERR_SRC),
    CodeRow::family("UnsupportedRegion", C::PROVIDER_WIDE, "region not supported", ERR_SRC),
    CodeRow::family("UnsupportedProtocol", C::PROVIDER_WIDE, "protocol not supported", ERR_SRC),
    CodeRow::family("UnsupportedOperation", C::PROVIDER_WIDE, "operation not supported", ERR_SRC),
    CodeRow::family("IpInBlacklist", C::PROVIDER_WIDE, "caller IP blacklisted", ERR_SRC),
    CodeRow::family("IpNotInWhitelist", C::PROVIDER_WIDE, "caller IP not whitelisted", ERR_SRC),
    CodeRow::family("LimitExceeded", C::refused(Refusal::Quota), "a quota is exceeded", ERR_SRC),
    CodeRow::family("OperationDenied", C::PROVIDER_WIDE, "operation denied", ERR_SRC),
    // The request itself: completed / invalid_input, never retried.
    CodeRow::family("InvalidParameter", C::invalid_field(ReasonCode::InvalidRequest), "a parameter is wrong", ERR_SRC),
    CodeRow::family("InvalidParameterValue", C::invalid_field(ReasonCode::InvalidRequest), "a parameter value is wrong", ERR_SRC),
    CodeRow::family("MissingParameter", C::invalid_field(ReasonCode::InvalidRequest), "a parameter is missing", ERR_SRC),
    CodeRow::family("UnknownParameter", C::invalid_field(ReasonCode::InvalidRequest), "an unknown parameter", ERR_SRC),
    CodeRow::family("RequestSizeLimitExceeded", C::invalid_field(ReasonCode::InvalidRequest), "the request is too large", ERR_SRC),
    CodeRow::family("FailedOperation.DecryptSystemError", C::invalid_field(ReasonCode::InvalidRequest), "the encrypted fields cannot be decrypted", ERR_SRC),
];

/// Classify a `Result` code (with the optional `ResultDetail` of a `-4`).
pub fn classify_result(result: &str, detail: Option<&str>) -> Classification {
    let Some(row) = find(RESULT_CODES, result) else {
        // Not in the table: it might be billed (as 0 and -4 are) — never retry it.
        return Classification::unknown_code(Billed::Unknown);
    };
    detail
        .and_then(|d| find(RESULT_DETAILS, d))
        .filter(|d| d.pairs_with == Some(row.code))
        .map_or(row.classification, |d| d.classification)
}

/// Classify an API error code: exact match first, then the longest listed family
/// (`RequestLimitExceeded.UinLimitExceeded` → `RequestLimitExceeded`). Unlisted codes are not
/// billed (FaceID bills no error response) and are never retried.
pub fn classify_error(code: &str) -> Classification {
    find(ERROR_CODES, code).map_or(Classification::unknown_code(Billed::No), |r| {
        r.classification
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::check::{ReasonCode as R, Verdict as V};
    use crate::providers::OutcomeClass;

    #[test]
    fn every_result_code_maps_to_its_class_billing_and_reason() {
        use OutcomeClass::*;
        type Row<'a> = (&'a str, Option<&'a str>, OutcomeClass, Billed, Option<R>);
        let table: &[Row] = &[
            ("0", None, Verdict, Billed::Yes, Some(R::Match)),
            (
                "-4",
                None,
                Verdict,
                Billed::Yes,
                Some(R::MismatchUnspecified),
            ),
            (
                "-4",
                Some("PhoneNameMismatch"),
                Verdict,
                Billed::Yes,
                Some(R::NameMismatch),
            ),
            (
                "-4",
                Some("PhoneIdCardMismatch"),
                Verdict,
                Billed::Yes,
                Some(R::IdNumberMismatch),
            ),
            (
                "-4",
                Some("PhoneNameIdCardMismatch"),
                Verdict,
                Billed::Yes,
                Some(R::MobileOwnerMismatch),
            ),
            (
                "-4",
                Some("NameIdCardMismatch"),
                Verdict,
                Billed::Yes,
                Some(R::NameIdNumberMismatch),
            ),
            (
                "-4",
                Some("OtherMismatch"),
                Verdict,
                Billed::Yes,
                Some(R::MismatchUnspecified),
            ),
            (
                "-4",
                Some("SomethingNew"),
                Verdict,
                Billed::Yes,
                Some(R::MismatchUnspecified),
            ),
            ("-6", None, InvalidField, Billed::No, Some(R::InvalidMobile)),
            (
                "-7",
                None,
                InvalidField,
                Billed::No,
                Some(R::InvalidIdNumber),
            ),
            ("-8", None, InvalidField, Billed::No, Some(R::InvalidName)),
            ("-9", None, Verdict, Billed::No, Some(R::NoRecord)),
            ("-11", None, Transient, Billed::No, None),
            (
                "-12",
                None,
                IdentityLimit,
                Billed::No,
                Some(R::IdentityDailyLimit),
            ),
            (
                "-13",
                None,
                Verdict,
                Billed::No,
                Some(R::UnsupportedNumberRange),
            ),
            (
                "-99",
                None,
                UnknownCode,
                Billed::Unknown,
                Some(R::UnknownProviderCode),
            ),
        ];
        for (code, detail, class, billed, reason) in table {
            let c = classify_result(code, *detail);
            assert_eq!(
                (c.class, c.billed, c.reason_code),
                (*class, *billed, *reason),
                "{code} {detail:?}"
            );
        }
        // The verdicts the shared table implies.
        assert_eq!(
            classify_result("-9", None)
                .reason_code
                .unwrap()
                .completed_verdict(),
            Some(V::NotFound)
        );
        assert_eq!(
            classify_result("-13", None)
                .reason_code
                .unwrap()
                .completed_verdict(),
            Some(V::Unsupported)
        );
    }

    #[test]
    fn error_codes_classify_by_exact_code_or_prefix() {
        use OutcomeClass::*;
        for (code, class, throttled) in [
            ("RequestLimitExceeded", Transient, true),
            ("RequestLimitExceeded.UinLimitExceeded", Transient, true),
            (
                "RequestLimitExceeded.GlobalRegionUinLimitExceeded",
                Transient,
                true,
            ),
            ("RequestLimitExceeded.IPLimitExceeded", Transient, true),
            ("InternalError", Transient, false),
            ("FailedOperation.UnKnown", Transient, false),
            ("AuthFailure.SignatureFailure", ProviderWide, false),
            ("AuthFailure.SignatureExpire", ProviderWide, false),
            ("AuthFailure.SecretIdNotFound", ProviderWide, false),
            ("UnauthorizedOperation.Arrears", ProviderWide, false),
            ("UnauthorizedOperation.Nonactivated", ProviderWide, false),
            ("InvalidParameter", InvalidField, false),
            (
                "InvalidParameter.UnsupportEncryptField",
                InvalidField,
                false,
            ),
            ("FailedOperation.DecryptSystemError", InvalidField, false),
            ("FailedOperation.SomethingElse", UnknownCode, false),
            ("Brand.NewCode", UnknownCode, false),
            ("InternalErrorX", UnknownCode, false),
        ] {
            let c = classify_error(code);
            assert_eq!((c.class, c.throttled), (class, throttled), "{code}");
            assert_eq!(c.billed, Billed::No, "{code}");
        }
    }
}
