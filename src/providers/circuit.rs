//! A per-provider circuit breaker: a provider-wide failure takes the provider out of routes for a
//! cool-down, then one call is let through to probe it. Beside it, [`RefusalState`]: whether
//! the provider refuses the credentials or the account right now, changed only by answers that
//! say so (a refusal sets it, a final answer clears it), so that it is reported once per change.

use std::sync::Mutex;
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use tokio::time::Instant;

use crate::check::outcome::{OutcomeClass, ProviderReply, Refusal};

/// A provider refusing the credentials, the account or the quota: the kind and the vendor's own
/// code (never a secret: codes and gateway messages carry none).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Refused {
    /// Credentials, account or quota.
    pub kind: Refusal,
    /// The vendor's code (`AuthFailure.SignatureFailure`, `Quota Exhausted`, `HTTP401`).
    pub code: String,
}

impl Refused {
    /// The refusal a reply carries, if any.
    pub fn of(reply: &ProviderReply) -> Option<Refused> {
        reply.classification.refusal.map(|kind| Refused {
            kind,
            code: reply
                .provider_code
                .clone()
                .or_else(|| reply.http_status.map(|s| format!("HTTP{s}")))
                .unwrap_or_else(|| "-".to_owned()),
        })
    }
}

/// What one reply changed in a provider's [`RefusalState`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Transition {
    /// Nothing: still refused the same way, still fine, or an answer that says neither.
    Unchanged,
    /// Refused now (it was not, or it was for another reason).
    Refused(Refused),
    /// Answered again after a refusal: the earlier refusal is over.
    Recovered(Refused),
}

/// Whether a provider refuses the credentials or the account right now (local to this worker).
#[derive(Debug, Default)]
pub struct RefusalState {
    current: Mutex<Option<Refused>>,
}

impl RefusalState {
    /// Take in one reply: a refusal sets the state, a final answer (a verdict, an invalid
    /// field, …: the credentials were accepted) clears it; transient and unknown outcomes
    /// change nothing. Returns the change, which the caller reports once.
    pub fn record(&self, reply: &ProviderReply) -> Transition {
        let mut current = self.current.lock().expect("refusal lock");
        if let Some(refused) = Refused::of(reply) {
            // Another code of the same kind is the same trouble: not a new transition.
            if current.as_ref().map(|c| c.kind) == Some(refused.kind) {
                return Transition::Unchanged;
            }
            *current = Some(refused.clone());
            return Transition::Refused(refused);
        }
        let accepted = reply.classification.class.is_final_answer();
        match current.take() {
            Some(was) if accepted => Transition::Recovered(was),
            was => {
                *current = was;
                Transition::Unchanged
            }
        }
    }

    /// The refusal in force, if any.
    pub fn current(&self) -> Option<Refused> {
        self.current.lock().expect("refusal lock").clone()
    }
}

/// Why a circuit opened: the reply that tripped it, by its codes only (the vendor's code or the
/// HTTP status, the outcome class, the refusal kind). Never the reply's text, never anything of
/// the request: it is published in the `workers` table.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TripReason {
    /// The outcome class of the reply (`provider_wide`).
    pub class: OutcomeClass,
    /// The vendor's code (`AuthFailure.SignatureFailure`, `961`), else `HTTP<status>`, else `-`.
    pub code: String,
    /// The HTTP status, when a response arrived.
    pub http_status: Option<u16>,
    /// When the reply says the credentials, the account or the quota are refused: which.
    pub refusal: Option<Refusal>,
    /// When the circuit opened (wall clock of this worker).
    pub at: DateTime<Utc>,
}

impl TripReason {
    /// The reason a reply gives, stamped now.
    pub fn of(reply: &ProviderReply) -> TripReason {
        TripReason {
            class: reply.classification.class,
            code: reply
                .provider_code
                .clone()
                .or_else(|| reply.http_status.map(|s| format!("HTTP{s}")))
                .unwrap_or_else(|| "-".to_owned()),
            http_status: reply.http_status,
            refusal: reply.classification.refusal,
            at: Utc::now(),
        }
    }
}

/// What a circuit looks like at one instant ([`Circuit::state`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CircuitState {
    /// When it lets calls through again, if it is open now.
    pub open_until: Option<Instant>,
    /// Why it opened: while open, the reply that opened it.
    pub why: Option<TripReason>,
}

#[derive(Debug, Default)]
struct Inner {
    open_until: Option<Instant>,
    why: Option<TripReason>,
}

/// Circuit state of one provider (local to this worker), with the reason it last opened.
#[derive(Debug, Default)]
pub struct Circuit {
    inner: Mutex<Inner>,
}

impl Circuit {
    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().expect("circuit lock")
    }

    /// Whether calls may go to the provider now (closed, or the cool-down has passed).
    pub fn is_available(&self, now: Instant) -> bool {
        match self.lock().open_until {
            Some(until) => now >= until,
            None => true,
        }
    }

    /// When the circuit lets calls through again, if it is open now.
    pub fn reopens_at(&self, now: Instant) -> Option<Instant> {
        self.lock().open_until.filter(|until| *until > now)
    }

    /// Open the circuit for `cooldown` (a provider-wide failure), remembering `why`.
    pub fn trip(&self, now: Instant, cooldown: Duration, why: TripReason) {
        let mut inner = self.lock();
        inner.open_until = Some(now + cooldown);
        inner.why = Some(why);
    }

    /// Close it (the provider answered).
    pub fn reset(&self) {
        let mut inner = self.lock();
        inner.open_until = None;
        inner.why = None;
    }

    /// Whether it is open at `now`, until when and why. Once the cool-down has passed it is
    /// closed (calls go through), whatever the probe call will say.
    pub fn state(&self, now: Instant) -> CircuitState {
        let inner = self.lock();
        match inner.open_until.filter(|until| *until > now) {
            Some(until) => CircuitState {
                open_until: Some(until),
                why: inner.why.clone(),
            },
            None => CircuitState {
                open_until: None,
                why: None,
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::check::outcome::Classification;
    use crate::check::{Billed, ReasonCode};

    fn reply(classification: Classification, code: Option<&str>) -> ProviderReply {
        let mut r = ProviderReply::transport(classification, Some(200), "");
        r.provider_code = code.map(str::to_owned);
        r
    }

    #[test]
    fn a_refusal_is_one_transition_until_a_final_answer_clears_it() {
        let s = RefusalState::default();
        let auth = reply(
            Classification::refused(Refusal::Credentials),
            Some("AuthFailure.SignatureFailure"),
        );
        let refused = Refused {
            kind: Refusal::Credentials,
            code: "AuthFailure.SignatureFailure".into(),
        };
        assert_eq!(s.record(&auth), Transition::Refused(refused.clone()));
        // The same refusal again (every cool-down's probe call): reported once only.
        assert_eq!(s.record(&auth), Transition::Unchanged);
        let other_code = reply(
            Classification::refused(Refusal::Credentials),
            Some("AuthFailure.SecretIdNotFound"),
        );
        assert_eq!(s.record(&other_code), Transition::Unchanged);
        // Transient trouble and lost answers say nothing about the credentials.
        assert_eq!(
            s.record(&reply(Classification::TRANSIENT, Some("InternalError"))),
            Transition::Unchanged
        );
        assert_eq!(
            s.record(&reply(Classification::UNKNOWN, None)),
            Transition::Unchanged
        );
        // A provider-wide answer that is not about the credentials (a wrong endpoint) neither.
        assert_eq!(
            s.record(&reply(Classification::PROVIDER_WIDE, Some("InvalidAction"))),
            Transition::Unchanged
        );
        assert_eq!(s.current(), Some(refused.clone()));
        // Another kind is a new transition.
        let quota = reply(
            Classification::refused(Refusal::Quota),
            Some("Quota Exhausted"),
        );
        assert!(matches!(s.record(&quota), Transition::Refused(r) if r.kind == Refusal::Quota));
        // A verdict: the credentials work again.
        let verdict = reply(
            Classification::verdict(ReasonCode::Match, Billed::Yes),
            Some("0"),
        );
        assert!(
            matches!(s.record(&verdict), Transition::Recovered(r) if r.code == "Quota Exhausted")
        );
        assert_eq!(s.record(&verdict), Transition::Unchanged);
        assert_eq!(s.current(), None);
        // Without a vendor code, the HTTP status stands for it.
        let mut bare = reply(Classification::refused(Refusal::Credentials), None);
        bare.http_status = Some(401);
        assert_eq!(Refused::of(&bare).unwrap().code, "HTTP401");
    }

    fn why() -> TripReason {
        let mut r = reply(Classification::PROVIDER_WIDE, Some("InvalidAction"));
        r.detail = "something a vendor said".into();
        TripReason::of(&r)
    }

    #[test]
    fn trips_for_the_cooldown_then_lets_calls_through() {
        let c = Circuit::default();
        let t0 = Instant::now();
        assert!(c.is_available(t0));
        c.trip(t0, Duration::from_secs(30), why());
        assert!(!c.is_available(t0 + Duration::from_secs(29)));
        assert_eq!(c.reopens_at(t0), Some(t0 + Duration::from_secs(30)));
        assert!(c.is_available(t0 + Duration::from_secs(30)));
        c.reset();
        assert!(c.is_available(t0));
        assert_eq!(c.reopens_at(t0), None);
    }

    #[test]
    fn remembers_why_it_opened_while_it_is_open() {
        let c = Circuit::default();
        let t0 = Instant::now();
        assert_eq!(
            c.state(t0),
            CircuitState {
                open_until: None,
                why: None
            }
        );
        c.trip(t0, Duration::from_secs(30), why());
        let s = c.state(t0 + Duration::from_secs(1));
        assert_eq!(s.open_until, Some(t0 + Duration::from_secs(30)));
        let w = s.why.expect("why");
        assert_eq!(
            (w.class, w.code.as_str(), w.http_status, w.refusal),
            (OutcomeClass::ProviderWide, "InvalidAction", Some(200), None)
        );
        // Codes only: the reply's text is not kept.
        let json = serde_json::to_string(&w).unwrap();
        assert!(!json.contains("vendor said"), "{json}");
        assert!(json.contains("\"class\":\"provider_wide\""), "{json}");
        // Past the cool-down it is closed, and says no more why.
        assert_eq!(c.state(t0 + Duration::from_secs(30)).why, None);
        // A refusal is named; a reply without a code is known by its status.
        let mut bare = reply(Classification::refused(Refusal::Quota), None);
        bare.http_status = Some(403);
        c.trip(t0, Duration::from_secs(30), TripReason::of(&bare));
        let w = c.state(t0).why.unwrap();
        assert_eq!(
            (w.code.as_str(), w.refusal),
            ("HTTP403", Some(Refusal::Quota))
        );
        c.reset();
        assert_eq!(c.state(t0).why, None);
    }
}
