//! What a provider call came to, in the domain's terms: the classes of a classified answer
//! (verdict, invalid field, transient, provider-wide, billing unknown, …), with billing and the
//! shared reason code. Vendors classify into these (`providers`); results are built from them
//! ([`super::result`]). Holds no personal data: replies are journaled.

use serde::{Deserialize, Serialize};

use super::{Billed, Carrier, ReasonCode, Subject};

/// The class of a call's outcome: what it means for billing, retries and the result (the
/// "Retries, billing and dead letters" table of docs/src/reference/reason-codes.md).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OutcomeClass {
    /// An answer about the identity (match, mismatch, no record, unsupported range).
    Verdict,
    /// The provider says a field is invalid.
    InvalidField,
    /// The provider refuses more checks of this identity for now.
    IdentityLimit,
    /// Busy, throttled, 5xx, connection refused before sending: retry, then fail over.
    Transient,
    /// Credentials, account, activation, quota: open the provider's circuit and fail over.
    ProviderWide,
    /// The vendor refused this request's parameters (an HTTP 4xx about the request, not the
    /// credentials): finish `completed` / `invalid_input`; never opens a circuit.
    RequestRefused,
    /// Sent, answer lost (timeout, reset): may have been billed; never retried.
    Unknown,
    /// The provider answered with a code not in our tables.
    UnknownCode,
}

impl OutcomeClass {
    /// The name stored in `provider_calls.outcome`.
    pub fn as_str(self) -> &'static str {
        match self {
            OutcomeClass::Verdict => "verdict",
            OutcomeClass::InvalidField => "invalid_field",
            OutcomeClass::IdentityLimit => "identity_limit",
            OutcomeClass::Transient => "transient",
            OutcomeClass::ProviderWide => "provider_wide",
            OutcomeClass::RequestRefused => "request_refused",
            OutcomeClass::Unknown => "unknown",
            OutcomeClass::UnknownCode => "unknown_code",
        }
    }

    /// Whether this class ends the request with the provider's answer (no retry, no failover).
    pub fn is_final_answer(self) -> bool {
        matches!(
            self,
            OutcomeClass::Verdict
                | OutcomeClass::InvalidField
                | OutcomeClass::IdentityLimit
                | OutcomeClass::RequestRefused
                | OutcomeClass::UnknownCode
        )
    }
}

/// Why a provider refuses every call, when a provider-wide answer says so: what the operator
/// must fix. Carried by the vendor tables' rows (and the shared HTTP status table), so that the
/// worker, `/readyz` and `kycq doctor` name the same cause.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Refusal {
    /// The credentials are refused (unknown key, wrong secret or AppCode, bad signature).
    Credentials,
    /// The account behind the credentials may not call: arrears, the service not activated,
    /// missing permissions.
    Account,
    /// The purchased quota or package is used up or has expired.
    Quota,
}

impl Refusal {
    /// The name in metrics labels and JSON.
    pub fn as_str(self) -> &'static str {
        match self {
            Refusal::Credentials => "credentials",
            Refusal::Account => "account",
            Refusal::Quota => "quota",
        }
    }

    /// What the provider's answer amounts to, for people.
    pub fn describe(self) -> &'static str {
        match self {
            Refusal::Credentials => "credentials refused",
            Refusal::Account => "account not allowed (arrears, not activated or no permission)",
            Refusal::Quota => "quota used up or expired",
        }
    }

    /// What to do about it, before the credential keys are named.
    pub fn remedy(self) -> &'static str {
        match self {
            Refusal::Credentials => "check",
            Refusal::Account => "check the vendor account (activation, balance, permissions) of",
            Refusal::Quota => "buy or renew the package of the account of",
        }
    }
}

/// One row of a vendor's code table: class, billing and the shared reason code.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Classification {
    /// What to do.
    pub class: OutcomeClass,
    /// Whether the vendor charged.
    pub billed: Billed,
    /// The shared reason code of a final answer.
    pub reason_code: Option<ReasonCode>,
    /// The vendor said "throttled" (the shared bucket cools down).
    pub throttled: bool,
    /// For a provider-wide answer about the credentials or the account: which (logged once per
    /// change, shown by `/readyz`, counted in `kycq_provider_refusals_total`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub refusal: Option<Refusal>,
}

impl Classification {
    /// A verdict.
    pub const fn verdict(reason: ReasonCode, billed: Billed) -> Self {
        Self::new(OutcomeClass::Verdict, billed, Some(reason))
    }
    /// The provider says a field is invalid (never billed).
    pub const fn invalid_field(reason: ReasonCode) -> Self {
        Self::new(OutcomeClass::InvalidField, Billed::No, Some(reason))
    }
    /// The provider refuses this identity for now (never billed).
    pub const fn identity_limit(reason: ReasonCode) -> Self {
        Self::new(OutcomeClass::IdentityLimit, Billed::No, Some(reason))
    }
    /// The vendor refused this request's parameters (never billed): `invalid_request`.
    pub const fn request_refused() -> Self {
        Self::new(
            OutcomeClass::RequestRefused,
            Billed::No,
            Some(ReasonCode::InvalidRequest),
        )
    }
    /// Transient and not billed.
    pub const TRANSIENT: Self = Self::new(OutcomeClass::Transient, Billed::No, None);
    /// Throttled by the vendor: transient, not billed, cool the bucket down.
    pub const THROTTLED: Self = Classification {
        throttled: true,
        ..Self::TRANSIENT
    };
    /// Provider-wide and not billed.
    pub const PROVIDER_WIDE: Self = Self::new(OutcomeClass::ProviderWide, Billed::No, None);
    /// Provider-wide and not billed, because of the credentials, the account or the quota.
    pub const fn refused(refusal: Refusal) -> Self {
        Classification {
            refusal: Some(refusal),
            ..Self::PROVIDER_WIDE
        }
    }
    /// Sent and lost: billing unknown.
    pub const UNKNOWN: Self = Self::new(OutcomeClass::Unknown, Billed::Unknown, None);
    /// A code not in the tables, with what is known about its billing.
    pub const fn unknown_code(billed: Billed) -> Self {
        Self::new(
            OutcomeClass::UnknownCode,
            billed,
            Some(ReasonCode::UnknownProviderCode),
        )
    }

    const fn new(class: OutcomeClass, billed: Billed, reason_code: Option<ReasonCode>) -> Self {
        Classification {
            class,
            billed,
            reason_code,
            throttled: false,
            refusal: None,
        }
    }
}

/// What one provider call came back with, classified. Holds no personal data: it is journaled.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProviderReply {
    /// Class, billing, reason.
    pub classification: Classification,
    /// HTTP status, when a response arrived.
    pub http_status: Option<u16>,
    /// The vendor's most specific code (a result's `provider_code`).
    pub provider_code: Option<String>,
    /// The vendor's request id.
    pub provider_request_id: Option<String>,
    /// Normalised carrier.
    pub carrier: Option<Carrier>,
    /// A short description for logs and the result's `reason` (vendor text; never PII).
    pub detail: String,
}

impl ProviderReply {
    /// A reply that never reached the vendor or whose answer could not be read.
    pub fn transport(
        classification: Classification,
        http_status: Option<u16>,
        detail: impl Into<String>,
    ) -> Self {
        ProviderReply {
            classification,
            http_status,
            provider_code: None,
            provider_request_id: None,
            carrier: None,
            detail: detail.into(),
        }
    }
}

impl ProviderReply {
    /// The reply fit to journal, log and put in a result: the subject's own values (a vendor
    /// may echo what it was sent) masked, and control characters (a NUL, which Postgres refuses)
    /// removed from the vendor's text, code and request id.
    pub fn sanitized(mut self, subject: &Subject) -> ProviderReply {
        self.detail = clean(subject, &self.detail);
        self.provider_code = self.provider_code.map(|c| clean(subject, &c));
        self.provider_request_id = self.provider_request_id.map(|r| clean(subject, &r));
        self
    }
}

/// `text` with control characters removed and then the subject's values masked (in that
/// order: a control character inside an echoed value would otherwise hide it from the mask and
/// then, removed, show it whole).
fn clean(subject: &Subject, text: &str) -> String {
    let text: String = text.chars().filter(|c| !c.is_control()).collect();
    subject.scrub(&text)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::check::{decode, Decoded};

    #[test]
    fn a_sanitized_reply_holds_neither_the_subject_nor_control_characters() {
        let json = serde_json::json!({
            "request_id": "r-1", "check": "mobile3", "name": "张三",
            "id_number": "11010519491231002X", "mobile": "13812345678",
        });
        let today = chrono::NaiveDate::from_ymd_opt(2026, 11, 23).unwrap();
        let Decoded::Valid(req) = decode(json.to_string().as_bytes(), today).unwrap() else {
            panic!("valid")
        };
        let mut reply = ProviderReply::transport(
            Classification::TRANSIENT,
            Some(200),
            "bad\u{0}name 张三 for 11010519491231002X\n",
        );
        reply.provider_code = Some("E\u{0}1 13812345678".into());
        reply.provider_request_id = Some("req\u{7}-1".into());
        let r = reply.sanitized(&req.subject);
        assert_eq!(r.detail, "badname 张* for 110***********002X");
        assert_eq!(r.provider_code.as_deref(), Some("E1 138****5678"));
        assert_eq!(r.provider_request_id.as_deref(), Some("req-1"));
        // A control character inside an echoed value does not keep it from being masked.
        let mut reply = ProviderReply::transport(Classification::TRANSIENT, Some(200), "");
        reply.detail = "IdCard 110105194912\u{7f}31002X of 张\u{0}三 (1381234\u{85}5678)".into();
        let r = reply.sanitized(&req.subject);
        assert_eq!(r.detail, "IdCard 110***********002X of 张* (138****5678)");
    }
}
