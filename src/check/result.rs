//! The one result every request ends with: its shape is the published and stored contract.

use std::fmt;
use std::str::FromStr;

use chrono::{DateTime, SecondsFormat, Utc};
use serde::{Deserialize, Serialize};

use super::outcome::{OutcomeClass, ProviderReply};
use super::reason::{ReasonCode, Status, Verdict};
use super::request::{CheckKind, CheckRequest, Rejection};

/// Whether the provider charged for the call that produced a result.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Billed {
    /// Charged.
    Yes,
    /// Not charged (or no call was made).
    No,
    /// The call may have been charged and its answer was lost.
    Unknown,
}

impl Billed {
    /// Every value, in contract order (spec/schemas/result.json lists the same).
    pub const ALL: &'static [Billed] = &[Billed::Yes, Billed::No, Billed::Unknown];

    /// `yes`, `no`, `unknown`.
    pub fn as_str(self) -> &'static str {
        match self {
            Billed::Yes => "yes",
            Billed::No => "no",
            Billed::Unknown => "unknown",
        }
    }
}

impl FromStr for Billed {
    type Err = ();
    fn from_str(s: &str) -> Result<Self, ()> {
        match s {
            "yes" => Ok(Billed::Yes),
            "no" => Ok(Billed::No),
            "unknown" => Ok(Billed::Unknown),
            _ => Err(()),
        }
    }
}

/// Mainland carriers, normalised from each provider's spelling.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Carrier {
    /// China Mobile.
    Cmcc,
    /// China Unicom.
    Cucc,
    /// China Telecom.
    Ctcc,
    /// China Broadnet.
    Cbn,
}

impl Carrier {
    /// Every carrier, in contract order (spec/schemas/result.json lists the same).
    pub const ALL: &'static [Carrier] =
        &[Carrier::Cmcc, Carrier::Cucc, Carrier::Ctcc, Carrier::Cbn];

    /// `cmcc`, `cucc`, `ctcc`, `cbn`.
    pub fn as_str(self) -> &'static str {
        match self {
            Carrier::Cmcc => "cmcc",
            Carrier::Cucc => "cucc",
            Carrier::Ctcc => "ctcc",
            Carrier::Cbn => "cbn",
        }
    }

    /// Normalise any provider's spelling: Chinese (`移动`, `中国联通`…), English (`China Mobile`,
    /// `telecom`…) or codes (`CMCC`, `gdcc`…). Blank or unknown → None.
    pub fn normalise(raw: &str) -> Option<Carrier> {
        let s = raw.trim().to_ascii_lowercase();
        if s.is_empty() {
            return None;
        }
        const TABLE: &[(&str, Carrier)] = &[
            ("移动", Carrier::Cmcc),
            ("mobile", Carrier::Cmcc),
            ("cmcc", Carrier::Cmcc),
            ("联通", Carrier::Cucc),
            ("unicom", Carrier::Cucc),
            ("cucc", Carrier::Cucc),
            ("电信", Carrier::Ctcc),
            ("telecom", Carrier::Ctcc),
            ("ctcc", Carrier::Ctcc),
            ("广电", Carrier::Cbn),
            ("broadnet", Carrier::Cbn),
            ("gdcc", Carrier::Cbn),
            ("cbn", Carrier::Cbn),
        ];
        TABLE
            .iter()
            .find(|(needle, _)| s.contains(needle))
            .map(|(_, c)| *c)
    }
}

impl fmt::Display for Carrier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The subject as published and stored: masked only. Every field is always present.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct MaskedSubject {
    /// `张*`.
    pub name: Option<String>,
    /// `110***********002X`.
    pub id_number: Option<String>,
    /// `138****5678`.
    pub mobile: Option<String>,
}

/// What a result built from provider calls is made of.
#[derive(Clone, Copy, Debug)]
pub struct FromCall<'a> {
    /// The request.
    pub request: &'a CheckRequest,
    /// The provider of the last call.
    pub provider: &'a str,
    /// Its classified reply.
    pub reply: &'a ProviderReply,
    /// Calls made for the request.
    pub attempts: u32,
    /// When kycq first received the request.
    pub received_at: DateTime<Utc>,
    /// When the result was decided.
    pub completed_at: DateTime<Utc>,
}

impl FromCall<'_> {
    fn base(&self) -> CheckResult {
        let (req, reply) = (self.request, self.reply);
        CheckResult {
            request_id: req.request_id.clone(),
            check: Some(req.check),
            status: Status::Failed,
            verdict: None,
            reason_code: ReasonCode::UnknownProviderCode,
            reason: String::new(),
            billed: reply.classification.billed,
            carrier: reply.carrier,
            provider: Some(self.provider.to_owned()),
            provider_code: reply.provider_code.clone(),
            provider_request_id: reply.provider_request_id.clone(),
            attempts: self.attempts,
            subject: req.subject.masked(),
            received_at: self.received_at,
            completed_at: self.completed_at,
        }
    }
}

/// The result of one request (docs/src/reference/contract.md, "Result"). Serialises with
/// every field present.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CheckResult {
    /// The idempotency key.
    pub request_id: String,
    /// Null only when the request named no check kycq knows.
    pub check: Option<CheckKind>,
    /// completed / rejected / failed.
    pub status: Status,
    /// Only when completed.
    pub verdict: Option<Verdict>,
    /// From the shared table.
    pub reason_code: ReasonCode,
    /// A sentence for people.
    pub reason: String,
    /// yes / no / unknown.
    pub billed: Billed,
    /// Normalised carrier.
    pub carrier: Option<Carrier>,
    /// The provider that produced the answer.
    pub provider: Option<String>,
    /// The provider's most specific code.
    pub provider_code: Option<String>,
    /// The provider's request id, for support tickets.
    pub provider_request_id: Option<String>,
    /// Provider calls made for this request.
    pub attempts: u32,
    /// Masked subject.
    pub subject: MaskedSubject,
    /// When kycq first received the request (RFC 3339, milliseconds, UTC).
    #[serde(with = "millis")]
    pub received_at: DateTime<Utc>,
    /// When the result was decided.
    #[serde(with = "millis")]
    pub completed_at: DateTime<Utc>,
}

impl CheckResult {
    /// The `rejected` result for a request kycq's validation refused.
    pub fn rejected(r: &Rejection, received_at: DateTime<Utc>, now: DateTime<Utc>) -> CheckResult {
        CheckResult {
            request_id: r.request_id.clone(),
            check: r.check,
            status: Status::Rejected,
            verdict: None,
            reason_code: r.reason_code,
            reason: r.reason.clone(),
            billed: Billed::No,
            carrier: None,
            provider: None,
            provider_code: None,
            provider_request_id: None,
            attempts: 0,
            subject: r.subject.clone(),
            received_at,
            completed_at: now,
        }
    }

    /// The result of a provider's final answer about the request (a verdict, an invalid field,
    /// a refusal of this request's parameters, an identity limit, or a code not in kycq's
    /// tables).
    pub fn answered(call: &FromCall<'_>) -> CheckResult {
        let (provider, reply) = (call.provider, call.reply);
        let reason_code = reply
            .classification
            .reason_code
            .unwrap_or(ReasonCode::UnknownProviderCode);
        let mut r = call.base();
        r.reason_code = reason_code;
        match reply.classification.class {
            OutcomeClass::Verdict | OutcomeClass::InvalidField => {
                r.status = Status::Completed;
                r.verdict = reason_code.completed_verdict();
                r.reason = reason_code.meaning().to_owned();
            }
            OutcomeClass::RequestRefused => {
                r.status = Status::Completed;
                r.verdict = reason_code.completed_verdict();
                r.reason = format!(
                    "{provider} refused this request's parameters ({})",
                    reply.detail
                );
            }
            OutcomeClass::IdentityLimit => r.reason = reason_code.meaning().to_owned(),
            _ => {
                r.reason = format!(
                    "{provider} answered code {}, which is not in kycq's tables ({}); billing {}",
                    reply.provider_code.as_deref().unwrap_or("?"),
                    reply.detail,
                    reply.classification.billed.as_str()
                );
            }
        }
        r
    }

    /// A `failed` result with `reason_code` and `billed`, the last provider reply named in
    /// the reason (`retries_exhausted`, `billing_unknown`).
    pub fn failed(call: &FromCall<'_>, reason_code: ReasonCode, billed: Billed) -> CheckResult {
        let mut r = call.base();
        r.reason_code = reason_code;
        r.billed = billed;
        r.reason = format!(
            "{} (last: {}: {})",
            reason_code.meaning(),
            call.provider,
            call.reply.detail
        );
        r
    }

    /// The routing key on the result exchange: `result.<check>.<status>` (`unknown` for a
    /// request that named no valid check).
    pub fn routing_key(&self) -> String {
        format!(
            "result.{}.{}",
            self.check.map_or("unknown", CheckKind::as_str),
            self.status.as_str()
        )
    }

    /// The JSON published and stored.
    pub fn to_json(&self) -> Vec<u8> {
        serde_json::to_vec(self).expect("a result always serialises")
    }
}

mod millis {
    use super::*;
    use serde::{Deserializer, Serializer};

    pub fn serialize<S: Serializer>(t: &DateTime<Utc>, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&t.to_rfc3339_opts(SecondsFormat::Millis, true))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<DateTime<Utc>, D::Error> {
        let s = String::deserialize(d)?;
        DateTime::parse_from_rfc3339(&s)
            .map(|t| t.with_timezone(&Utc))
            .map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::check::outcome::Classification;
    use crate::check::{decode, Decoded};
    use chrono::TimeZone;

    fn request() -> CheckRequest {
        let json = serde_json::json!({
            "request_id": "r-1", "check": "mobile3", "name": "张三",
            "id_number": "11010519491231002X", "mobile": "13812345678",
        });
        let today = chrono::NaiveDate::from_ymd_opt(2026, 11, 23).unwrap();
        match decode(json.to_string().as_bytes(), today).unwrap() {
            Decoded::Valid(r) => r,
            Decoded::Rejected(r) => panic!("{}", r.reason),
        }
    }

    fn built(c: Classification, f: impl Fn(&FromCall<'_>) -> CheckResult) -> CheckResult {
        let req = request();
        let mut reply = ProviderReply::transport(c, Some(200), "vendor words");
        reply.provider_code = Some("X1".into());
        reply.carrier = Some(Carrier::Cmcc);
        let t = Utc.with_ymd_and_hms(2026, 11, 23, 2, 18, 16).unwrap();
        f(&FromCall {
            request: &req,
            provider: "acme",
            reply: &reply,
            attempts: 3,
            received_at: t,
            completed_at: t + chrono::Duration::milliseconds(290),
        })
    }

    #[test]
    fn results_of_final_answers_by_class() {
        type Want = (Status, Option<Verdict>, ReasonCode, Billed);
        let table: &[(Classification, Want)] = &[
            (
                Classification::verdict(ReasonCode::NameMismatch, Billed::Yes),
                (
                    Status::Completed,
                    Some(Verdict::Mismatch),
                    ReasonCode::NameMismatch,
                    Billed::Yes,
                ),
            ),
            (
                Classification::invalid_field(ReasonCode::InvalidMobile),
                (
                    Status::Completed,
                    Some(Verdict::InvalidInput),
                    ReasonCode::InvalidMobile,
                    Billed::No,
                ),
            ),
            (
                Classification::request_refused(),
                (
                    Status::Completed,
                    Some(Verdict::InvalidInput),
                    ReasonCode::InvalidRequest,
                    Billed::No,
                ),
            ),
            (
                Classification::identity_limit(ReasonCode::IdentityDailyLimit),
                (
                    Status::Failed,
                    None,
                    ReasonCode::IdentityDailyLimit,
                    Billed::No,
                ),
            ),
            (
                Classification::unknown_code(Billed::Unknown),
                (
                    Status::Failed,
                    None,
                    ReasonCode::UnknownProviderCode,
                    Billed::Unknown,
                ),
            ),
        ];
        for (c, want) in table {
            let r = built(*c, CheckResult::answered);
            assert_eq!(
                (r.status, r.verdict, r.reason_code, r.billed),
                *want,
                "{c:?}"
            );
            assert_eq!(r.provider.as_deref(), Some("acme"));
            assert_eq!(r.provider_code.as_deref(), Some("X1"));
            assert_eq!((r.attempts, r.carrier), (3, Some(Carrier::Cmcc)));
            assert_eq!(r.subject.mobile.as_deref(), Some("138****5678"));
            assert_eq!((r.completed_at - r.received_at).num_milliseconds(), 290);
        }
        let r = built(Classification::request_refused(), CheckResult::answered);
        assert_eq!(
            r.reason,
            "acme refused this request's parameters (vendor words)"
        );
        let r = built(
            Classification::unknown_code(Billed::Yes),
            CheckResult::answered,
        );
        assert!(
            r.reason.contains("code X1") && r.reason.contains("billing yes"),
            "{}",
            r.reason
        );
    }

    #[test]
    fn failed_results_carry_the_reason_and_billing_given() {
        let r = built(Classification::TRANSIENT, |c| {
            CheckResult::failed(c, ReasonCode::RetriesExhausted, Billed::No)
        });
        assert_eq!(
            (r.status, r.verdict, r.reason_code, r.billed),
            (
                Status::Failed,
                None,
                ReasonCode::RetriesExhausted,
                Billed::No
            )
        );
        assert!(
            r.reason.ends_with("(last: acme: vendor words)"),
            "{}",
            r.reason
        );
        let r = built(Classification::UNKNOWN, |c| {
            CheckResult::failed(c, ReasonCode::BillingUnknown, Billed::Unknown)
        });
        assert_eq!(
            (r.reason_code, r.billed),
            (ReasonCode::BillingUnknown, Billed::Unknown)
        );
    }

    #[test]
    fn all_lists_every_billed_and_carrier_once_in_their_serde_form() {
        // Exhaustive on purpose: a new variant fails to compile here until it is in ALL (and in
        // spec/schemas/result.json, which tests/api/schema.rs compares with ALL).
        let billed = |b: Billed| match b {
            Billed::Yes | Billed::No | Billed::Unknown => Billed::ALL.contains(&b),
        };
        let carrier = |c: Carrier| match c {
            Carrier::Cmcc | Carrier::Cucc | Carrier::Ctcc | Carrier::Cbn => {
                Carrier::ALL.contains(&c)
            }
        };
        for b in [Billed::Yes, Billed::No, Billed::Unknown] {
            assert!(billed(b), "{b:?} is not in Billed::ALL");
        }
        for c in [Carrier::Cmcc, Carrier::Cucc, Carrier::Ctcc, Carrier::Cbn] {
            assert!(carrier(c), "{c:?} is not in Carrier::ALL");
        }
        let names = |v: Vec<serde_json::Value>| -> Vec<String> {
            v.into_iter()
                .map(|s| s.as_str().unwrap().to_owned())
                .collect()
        };
        let billed_names = names(Billed::ALL.iter().map(|b| serde_json::json!(b)).collect());
        let as_strs: Vec<&str> = Billed::ALL.iter().map(|b| b.as_str()).collect();
        assert_eq!(billed_names, as_strs);
        let carrier_names = names(Carrier::ALL.iter().map(|c| serde_json::json!(c)).collect());
        let as_strs: Vec<&str> = Carrier::ALL.iter().map(|c| c.as_str()).collect();
        assert_eq!(carrier_names, as_strs);
        let unique: std::collections::HashSet<_> = carrier_names.iter().collect();
        assert_eq!(unique.len(), Carrier::ALL.len());
    }

    #[test]
    fn carriers_normalise_from_every_spelling() {
        for (raw, want) in [
            ("移动", Some(Carrier::Cmcc)),
            ("中国移动", Some(Carrier::Cmcc)),
            ("China Mobile", Some(Carrier::Cmcc)),
            ("mobile", Some(Carrier::Cmcc)),
            ("CMCC", Some(Carrier::Cmcc)),
            ("联通", Some(Carrier::Cucc)),
            ("China Unicom", Some(Carrier::Cucc)),
            ("cucc", Some(Carrier::Cucc)),
            ("电信", Some(Carrier::Ctcc)),
            ("Telecom", Some(Carrier::Ctcc)),
            ("CTCC", Some(Carrier::Ctcc)),
            ("广电", Some(Carrier::Cbn)),
            ("gdcc", Some(Carrier::Cbn)),
            ("China Broadnet", Some(Carrier::Cbn)),
            ("", None),
            ("acme", None),
        ] {
            assert_eq!(Carrier::normalise(raw), want, "{raw}");
        }
    }

    #[test]
    fn a_result_serialises_with_every_field_and_the_contract_shape() {
        let t = Utc.with_ymd_and_hms(2026, 11, 23, 2, 18, 16).unwrap()
            + chrono::Duration::milliseconds(120);
        let r = CheckResult {
            request_id: "9f0c".into(),
            check: Some(CheckKind::Mobile3),
            status: Status::Completed,
            verdict: Some(Verdict::Mismatch),
            reason_code: ReasonCode::NameMismatch,
            reason: ReasonCode::NameMismatch.meaning().into(),
            billed: Billed::Yes,
            carrier: Some(Carrier::Cmcc),
            provider: Some("alibaba".into()),
            provider_code: Some("203".into()),
            provider_request_id: None,
            attempts: 1,
            subject: MaskedSubject {
                name: Some("张*".into()),
                id_number: Some("110***********002X".into()),
                mobile: None,
            },
            received_at: t,
            completed_at: t,
        };
        let v: serde_json::Value = serde_json::from_slice(&r.to_json()).unwrap();
        let keys: Vec<&str> = v.as_object().unwrap().keys().map(String::as_str).collect();
        for k in [
            "request_id",
            "check",
            "status",
            "verdict",
            "reason_code",
            "reason",
            "billed",
            "carrier",
            "provider",
            "provider_code",
            "provider_request_id",
            "attempts",
            "subject",
            "received_at",
            "completed_at",
        ] {
            assert!(keys.contains(&k), "missing {k}");
        }
        assert_eq!(v["status"], "completed");
        assert_eq!(v["verdict"], "mismatch");
        assert_eq!(v["reason_code"], "name_mismatch");
        assert_eq!(v["billed"], "yes");
        assert_eq!(v["carrier"], "cmcc");
        assert_eq!(v["provider_request_id"], serde_json::Value::Null);
        assert_eq!(v["subject"]["mobile"], serde_json::Value::Null);
        assert_eq!(v["received_at"], "2026-11-23T02:18:16.120Z");
        assert_eq!(r.routing_key(), "result.mobile3.completed");
        let back: CheckResult = serde_json::from_value(v).unwrap();
        assert_eq!(back, r);
    }
}
