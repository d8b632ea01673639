//! The shared result vocabulary (status, verdict and the reason-code table of docs/src/reference/reason-codes.md), kept as data.

use std::fmt;
use std::str::FromStr;

/// The outcome class of a result.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    /// A provider gave an answer about this identity.
    Completed,
    /// kycq's own validation refused the request; no provider was called.
    Rejected,
    /// No answer could be had.
    Failed,
}

/// What a completed check says about the identity.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Verdict {
    Match,
    Mismatch,
    NotFound,
    InvalidInput,
    Unsupported,
}

/// The one reason-code table shared by all providers.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ReasonCode {
    Match,
    NameMismatch,
    IdNumberMismatch,
    MobileOwnerMismatch,
    NameIdNumberMismatch,
    IdentityOrValidityMismatch,
    MismatchUnspecified,
    NoRecord,
    InvalidIdNumber,
    InvalidMobile,
    InvalidName,
    InvalidDate,
    InvalidRequest,
    UnsupportedNumberRange,
    IdentityDailyLimit,
    RepeatedInvocationBlocked,
    RetriesExhausted,
    BillingUnknown,
    UnknownProviderCode,
    RequestIdConflict,
    FieldTooLong,
    ProviderUnavailable,
}

/// The error of parsing one of the enums of this module from a string.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown {kind}: {value:?}")]
pub struct UnknownVariant {
    /// Which enum was being parsed: "status", "verdict" or "reason_code".
    pub kind: &'static str,
    /// The string that matched no variant.
    pub value: String,
}

impl Status {
    /// Every status.
    pub const ALL: &'static [Status] = &[Status::Completed, Status::Rejected, Status::Failed];

    /// The snake_case name, identical to the serde form.
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Completed => "completed",
            Status::Rejected => "rejected",
            Status::Failed => "failed",
        }
    }
}

impl Verdict {
    /// Every verdict.
    pub const ALL: &'static [Verdict] = &[
        Verdict::Match,
        Verdict::Mismatch,
        Verdict::NotFound,
        Verdict::InvalidInput,
        Verdict::Unsupported,
    ];

    /// The snake_case name, identical to the serde form.
    pub fn as_str(self) -> &'static str {
        match self {
            Verdict::Match => "match",
            Verdict::Mismatch => "mismatch",
            Verdict::NotFound => "not_found",
            Verdict::InvalidInput => "invalid_input",
            Verdict::Unsupported => "unsupported",
        }
    }
}

/// One row of the reason-code table.
struct Row {
    code: ReasonCode,
    name: &'static str,
    completed_verdict: Option<Verdict>,
    meaning: &'static str,
}

const fn row(
    code: ReasonCode,
    name: &'static str,
    completed_verdict: Option<Verdict>,
    meaning: &'static str,
) -> Row {
    Row {
        code,
        name,
        completed_verdict,
        meaning,
    }
}

use ReasonCode as R;
use Verdict as V;

/// The table, one row per code, in declaration order (row `i` is the variant with discriminant `i`).
const TABLE: [Row; 22] = [
    row(
        R::Match,
        "match",
        Some(V::Match),
        "every element consistent",
    ),
    row(
        R::NameMismatch,
        "name_mismatch",
        Some(V::Mismatch),
        "mobile number and ID number match, the name does not",
    ),
    row(
        R::IdNumberMismatch,
        "id_number_mismatch",
        Some(V::Mismatch),
        "mobile number and name match, the ID number does not",
    ),
    row(
        R::MobileOwnerMismatch,
        "mobile_owner_mismatch",
        Some(V::Mismatch),
        "the mobile belongs to someone else (neither name nor ID match it)",
    ),
    row(
        R::NameIdNumberMismatch,
        "name_id_number_mismatch",
        Some(V::Mismatch),
        "name and ID number do not belong together",
    ),
    row(
        R::IdentityOrValidityMismatch,
        "identity_or_validity_mismatch",
        Some(V::Mismatch),
        "name/ID or the card's validity dates do not match",
    ),
    row(
        R::MismatchUnspecified,
        "mismatch_unspecified",
        Some(V::Mismatch),
        "inconsistent, the provider gives no detail",
    ),
    row(
        R::NoRecord,
        "no_record",
        Some(V::NotFound),
        "the authority has no record",
    ),
    row(
        R::InvalidIdNumber,
        "invalid_id_number",
        Some(V::InvalidInput),
        "the ID number is malformed",
    ),
    row(
        R::InvalidMobile,
        "invalid_mobile",
        Some(V::InvalidInput),
        "the mobile number is malformed",
    ),
    row(
        R::InvalidName,
        "invalid_name",
        Some(V::InvalidInput),
        "the name is malformed",
    ),
    row(
        R::InvalidDate,
        "invalid_date",
        Some(V::InvalidInput),
        "a date is malformed",
    ),
    row(
        R::InvalidRequest,
        "invalid_request",
        Some(V::InvalidInput),
        "the request is malformed",
    ),
    row(
        R::UnsupportedNumberRange,
        "unsupported_number_range",
        Some(V::Unsupported),
        "the number range cannot be verified",
    ),
    row(
        R::IdentityDailyLimit,
        "identity_daily_limit",
        None,
        "the provider refuses more checks of this identity today",
    ),
    row(
        R::RepeatedInvocationBlocked,
        "repeated_invocation_blocked",
        None,
        "the provider blocks abnormal repeated checks",
    ),
    row(
        R::RetriesExhausted,
        "retries_exhausted",
        None,
        "transient failures outlasted the retry budget and every provider of the route",
    ),
    row(
        R::BillingUnknown,
        "billing_unknown",
        None,
        "the call may have been billed and its answer was lost",
    ),
    row(
        R::UnknownProviderCode,
        "unknown_provider_code",
        None,
        "the provider answered with a code not in our tables",
    ),
    row(
        R::RequestIdConflict,
        "request_id_conflict",
        None,
        "this request_id is already known for another subject or check; the earlier result is never sent to it",
    ),
    row(
        R::FieldTooLong,
        "field_too_long",
        None,
        "a field exceeds its documented maximum length",
    ),
    row(
        R::ProviderUnavailable,
        "provider_unavailable",
        None,
        "every provider of the route stayed out longer than the maximum wait",
    ),
];

impl ReasonCode {
    /// Every reason code, in declaration order.
    pub const ALL: &'static [ReasonCode] = &[
        R::Match,
        R::NameMismatch,
        R::IdNumberMismatch,
        R::MobileOwnerMismatch,
        R::NameIdNumberMismatch,
        R::IdentityOrValidityMismatch,
        R::MismatchUnspecified,
        R::NoRecord,
        R::InvalidIdNumber,
        R::InvalidMobile,
        R::InvalidName,
        R::InvalidDate,
        R::InvalidRequest,
        R::UnsupportedNumberRange,
        R::IdentityDailyLimit,
        R::RepeatedInvocationBlocked,
        R::RetriesExhausted,
        R::BillingUnknown,
        R::UnknownProviderCode,
        R::RequestIdConflict,
        R::FieldTooLong,
        R::ProviderUnavailable,
    ];

    fn row(self) -> &'static Row {
        &TABLE[self as usize]
    }

    /// The snake_case name, identical to the serde form.
    pub fn as_str(self) -> &'static str {
        self.row().name
    }

    /// The human sentence used as a result's `reason`.
    pub fn meaning(self) -> &'static str {
        self.row().meaning
    }

    /// The verdict this reason implies when the status is `completed`
    /// (None for codes that only occur on failed results).
    pub fn completed_verdict(self) -> Option<Verdict> {
        self.row().completed_verdict
    }
}

impl fmt::Display for Status {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl fmt::Display for Verdict {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl fmt::Display for ReasonCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Status {
    type Err = UnknownVariant;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Status::ALL
            .iter()
            .copied()
            .find(|v| v.as_str() == s)
            .ok_or_else(|| UnknownVariant {
                kind: "status",
                value: s.to_owned(),
            })
    }
}

impl FromStr for Verdict {
    type Err = UnknownVariant;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Verdict::ALL
            .iter()
            .copied()
            .find(|v| v.as_str() == s)
            .ok_or_else(|| UnknownVariant {
                kind: "verdict",
                value: s.to_owned(),
            })
    }
}

impl FromStr for ReasonCode {
    type Err = UnknownVariant;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        TABLE
            .iter()
            .find(|r| r.name == s)
            .map(|r| r.code)
            .ok_or_else(|| UnknownVariant {
                kind: "reason_code",
                value: s.to_owned(),
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;

    /// Exhaustive on purpose: adding a variant fails to compile here until ALL and TABLE are updated.
    fn index_of(c: ReasonCode) -> usize {
        match c {
            R::Match => 0,
            R::NameMismatch => 1,
            R::IdNumberMismatch => 2,
            R::MobileOwnerMismatch => 3,
            R::NameIdNumberMismatch => 4,
            R::IdentityOrValidityMismatch => 5,
            R::MismatchUnspecified => 6,
            R::NoRecord => 7,
            R::InvalidIdNumber => 8,
            R::InvalidMobile => 9,
            R::InvalidName => 10,
            R::InvalidDate => 11,
            R::InvalidRequest => 12,
            R::UnsupportedNumberRange => 13,
            R::IdentityDailyLimit => 14,
            R::RepeatedInvocationBlocked => 15,
            R::RetriesExhausted => 16,
            R::BillingUnknown => 17,
            R::UnknownProviderCode => 18,
            R::RequestIdConflict => 19,
            R::FieldTooLong => 20,
            R::ProviderUnavailable => 21,
        }
    }

    #[test]
    fn all_has_every_variant_exactly_once() {
        assert_eq!(ReasonCode::ALL.len(), 22);
        let set: HashSet<_> = ReasonCode::ALL.iter().copied().collect();
        assert_eq!(set.len(), ReasonCode::ALL.len());
        for (i, c) in ReasonCode::ALL.iter().enumerate() {
            assert_eq!(index_of(*c), i);
            assert_eq!(*c as usize, i);
        }
    }

    #[test]
    fn table_rows_are_in_discriminant_order() {
        assert_eq!(TABLE.len(), ReasonCode::ALL.len());
        for (i, r) in TABLE.iter().enumerate() {
            assert_eq!(r.code as usize, i, "row {i} is {:?}", r.code);
        }
        let names: HashSet<_> = TABLE.iter().map(|r| r.name).collect();
        assert_eq!(names.len(), TABLE.len());
    }

    #[test]
    fn serde_round_trip_equals_as_str() {
        for &c in ReasonCode::ALL {
            let json = serde_json::to_string(&c).unwrap();
            assert_eq!(json, format!("\"{}\"", c.as_str()));
            let back: ReasonCode = serde_json::from_str(&json).unwrap();
            assert_eq!(back, c);
            assert_eq!(c.as_str().parse::<ReasonCode>().unwrap(), c);
            assert_eq!(c.to_string(), c.as_str());
            assert!(!c.meaning().is_empty());
        }
        for &s in Status::ALL {
            let json = serde_json::to_string(&s).unwrap();
            assert_eq!(json, format!("\"{}\"", s.as_str()));
            assert_eq!(serde_json::from_str::<Status>(&json).unwrap(), s);
            assert_eq!(s.as_str().parse::<Status>().unwrap(), s);
        }
        for &v in Verdict::ALL {
            let json = serde_json::to_string(&v).unwrap();
            assert_eq!(json, format!("\"{}\"", v.as_str()));
            assert_eq!(serde_json::from_str::<Verdict>(&json).unwrap(), v);
            assert_eq!(v.as_str().parse::<Verdict>().unwrap(), v);
        }
    }

    #[test]
    fn known_names() {
        assert_eq!(R::NameMismatch.as_str(), "name_mismatch");
        assert_eq!(
            R::IdentityOrValidityMismatch.as_str(),
            "identity_or_validity_mismatch"
        );
        assert_eq!(R::UnknownProviderCode.as_str(), "unknown_provider_code");
        assert_eq!(Verdict::NotFound.as_str(), "not_found");
        assert_eq!(Verdict::InvalidInput.as_str(), "invalid_input");
        assert_eq!(Status::Rejected.as_str(), "rejected");
    }

    #[test]
    fn known_meanings() {
        assert_eq!(
            R::NameMismatch.meaning(),
            "mobile number and ID number match, the name does not"
        );
        assert_eq!(R::NoRecord.meaning(), "the authority has no record");
        assert_eq!(
            R::BillingUnknown.meaning(),
            "the call may have been billed and its answer was lost"
        );
        assert_eq!(R::Match.meaning(), "every element consistent");
    }

    #[test]
    fn completed_verdicts() {
        assert_eq!(R::Match.completed_verdict(), Some(V::Match));
        let mismatches = [
            R::NameMismatch,
            R::IdNumberMismatch,
            R::MobileOwnerMismatch,
            R::NameIdNumberMismatch,
            R::IdentityOrValidityMismatch,
            R::MismatchUnspecified,
        ];
        for c in mismatches {
            assert_eq!(c.completed_verdict(), Some(V::Mismatch), "{c}");
        }
        assert_eq!(R::NoRecord.completed_verdict(), Some(V::NotFound));
        for c in [
            R::InvalidIdNumber,
            R::InvalidMobile,
            R::InvalidName,
            R::InvalidDate,
            R::InvalidRequest,
        ] {
            assert_eq!(c.completed_verdict(), Some(V::InvalidInput), "{c}");
        }
        assert_eq!(
            R::UnsupportedNumberRange.completed_verdict(),
            Some(V::Unsupported)
        );
        for c in [
            R::IdentityDailyLimit,
            R::RepeatedInvocationBlocked,
            R::RetriesExhausted,
            R::BillingUnknown,
            R::UnknownProviderCode,
            R::RequestIdConflict,
            R::FieldTooLong,
            R::ProviderUnavailable,
        ] {
            assert_eq!(c.completed_verdict(), None, "{c}");
        }
        let mismatch_count = ReasonCode::ALL
            .iter()
            .filter(|c| c.completed_verdict() == Some(V::Mismatch))
            .count();
        assert_eq!(mismatch_count, 6);
    }

    #[test]
    fn from_str_rejects_unknown() {
        let e = "NameMismatch".parse::<ReasonCode>().unwrap_err();
        assert_eq!(e.kind, "reason_code");
        assert!("".parse::<Status>().is_err());
        assert!("Match".parse::<Verdict>().is_err());
        assert!(serde_json::from_str::<ReasonCode>("\"nope\"").is_err());
    }
}
