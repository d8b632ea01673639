//! Tencent's code tables as data: `PhoneVerification` Result codes (with billing) and API error
//! codes. Sources: PROVIDERS.md §6.2–6.3 (intl API doc 1061/79046, CN doc 1007/39765, SDK
//! errors.go, common error codes 1001/31332; FaceID marks error responses as not billed).

use crate::check::{Billed, ReasonCode};
use crate::providers::Classification;

/// One Result code: class, billing, reason (the reason of `-4` depends on ResultDetail).
pub const RESULT_CODES: &[(&str, Classification, &str)] = &[
    (
        "0",
        Classification::verdict(ReasonCode::Match, Billed::Yes),
        "three elements consistent (billed)",
    ),
    (
        "-4",
        Classification::verdict(ReasonCode::MismatchUnspecified, Billed::Yes),
        "three elements inconsistent (billed)",
    ),
    (
        "-6",
        Classification::invalid_field(ReasonCode::InvalidMobile),
        "phone number invalid",
    ),
    (
        "-7",
        Classification::invalid_field(ReasonCode::InvalidIdNumber),
        "ID number invalid",
    ),
    (
        "-8",
        Classification::invalid_field(ReasonCode::InvalidName),
        "name check failed",
    ),
    (
        "-9",
        Classification::verdict(ReasonCode::NoRecord, Billed::No),
        "no record",
    ),
    ("-11", Classification::TRANSIENT, "verification center busy"),
    (
        "-12",
        Classification::identity_limit(ReasonCode::IdentityDailyLimit),
        "daily attempt limit for this identity",
    ),
    (
        "-13",
        Classification::verdict(ReasonCode::UnsupportedNumberRange, Billed::No),
        "number range not supported",
    ),
];

/// `ResultDetail` of a `-4` (detailed mode) → the precise mismatch.
pub const RESULT_DETAILS: &[(&str, ReasonCode)] = &[
    ("PhoneNameMismatch", ReasonCode::NameMismatch),
    ("PhoneIdCardMismatch", ReasonCode::IdNumberMismatch),
    ("PhoneNameIdCardMismatch", ReasonCode::MobileOwnerMismatch),
    ("NameIdCardMismatch", ReasonCode::NameIdNumberMismatch),
    ("OtherMismatch", ReasonCode::MismatchUnspecified),
];

/// Error codes (`Response.Error.Code`), matched exactly or by the prefix before the first dot
/// segment listed. None of them is billed.
pub const ERROR_CODES: &[(&str, Classification)] = &[
    // Frequency limits: retry with backoff; the shared bucket cools down.
    ("RequestLimitExceeded", Classification::THROTTLED),
    // Temporary trouble on Tencent's side.
    ("InternalError", Classification::TRANSIENT),
    ("ServiceUnavailable", Classification::TRANSIENT),
    ("ResourceUnavailable", Classification::TRANSIENT),
    ("ResourceInsufficient", Classification::TRANSIENT),
    ("FailedOperation.UnKnown", Classification::TRANSIENT),
    // Credentials, signing, account, activation: nothing this request can fix.
    ("AuthFailure", Classification::PROVIDER_WIDE),
    ("UnauthorizedOperation", Classification::PROVIDER_WIDE),
    (
        "FailedOperation.StsUnAuthErrError",
        Classification::PROVIDER_WIDE,
    ),
    ("InvalidAction", Classification::PROVIDER_WIDE),
    ("NoSuchVersion", Classification::PROVIDER_WIDE),
    ("ActionOffline", Classification::PROVIDER_WIDE),
    ("UnsupportedRegion", Classification::PROVIDER_WIDE),
    ("UnsupportedProtocol", Classification::PROVIDER_WIDE),
    ("UnsupportedOperation", Classification::PROVIDER_WIDE),
    ("IpInBlacklist", Classification::PROVIDER_WIDE),
    ("IpNotInWhitelist", Classification::PROVIDER_WIDE),
    ("LimitExceeded", Classification::PROVIDER_WIDE),
    ("OperationDenied", Classification::PROVIDER_WIDE),
    // The request itself: completed / invalid_input, never retried.
    (
        "InvalidParameter",
        Classification::invalid_field(ReasonCode::InvalidRequest),
    ),
    (
        "InvalidParameterValue",
        Classification::invalid_field(ReasonCode::InvalidRequest),
    ),
    (
        "MissingParameter",
        Classification::invalid_field(ReasonCode::InvalidRequest),
    ),
    (
        "UnknownParameter",
        Classification::invalid_field(ReasonCode::InvalidRequest),
    ),
    (
        "RequestSizeLimitExceeded",
        Classification::invalid_field(ReasonCode::InvalidRequest),
    ),
    (
        "FailedOperation.DecryptSystemError",
        Classification::invalid_field(ReasonCode::InvalidRequest),
    ),
];

/// Classify a `Result` code (with the optional `ResultDetail` of a `-4`).
pub fn classify_result(result: &str, detail: Option<&str>) -> Classification {
    let Some((_, c, _)) = RESULT_CODES.iter().find(|(code, _, _)| *code == result) else {
        // Not in the table: it might be billed (as 0 and -4 are) — never retry it.
        return Classification::unknown_code(Billed::Unknown);
    };
    let mut c = *c;
    if result == "-4" {
        if let Some(reason) = detail.and_then(|d| {
            RESULT_DETAILS
                .iter()
                .find(|(k, _)| *k == d)
                .map(|(_, r)| *r)
        }) {
            c.reason_code = Some(reason);
        }
    }
    c
}

/// Classify an API error code: exact match first, then the longest listed prefix
/// (`RequestLimitExceeded.UinLimitExceeded` → `RequestLimitExceeded`). Unlisted codes are not
/// billed (FaceID bills no error response) and are never retried.
pub fn classify_error(code: &str) -> Classification {
    ERROR_CODES
        .iter()
        .filter(|(k, _)| {
            code == *k
                || code
                    .strip_prefix(k)
                    .is_some_and(|rest| rest.starts_with('.'))
        })
        .max_by_key(|(k, _)| k.len())
        .map(|(_, c)| *c)
        .unwrap_or(Classification::unknown_code(Billed::No))
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
