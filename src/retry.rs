//! Waiting and retrying as data: the one [`Backoff`] type every wait loop of kycq uses, the
//! provider [`RetryPolicy`] built on it, and the decision table that turns a classified reply
//! into the next step: finish, retry the same provider, fail over, or stop with billing unknown.

use std::time::Duration;

use backon::{BackoffBuilder, ExponentialBuilder};

use crate::configuration::RetrySettings;
use crate::providers::{Classification, OutcomeClass};

/// The one backoff type: delays from `min`, multiplied by `factor` up to `max`, each drawn in
/// `[d, 2d]` (capped at `max`) when `jitter` is set, ending after `max_times` delays (`None`:
/// endless — the caller bounds it, by a stop signal or a deadline, and says how in its docs).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Backoff {
    /// The first delay.
    pub min: Duration,
    /// The largest delay.
    pub max: Duration,
    /// Growth per delay.
    pub factor: f32,
    /// Random jitter (thundering herds).
    pub jitter: bool,
    /// How many delays at most.
    pub max_times: Option<usize>,
}

impl Backoff {
    /// Exponential doubling from `min` to `max`, jittered, endless.
    pub const fn doubling(min: Duration, max: Duration) -> Backoff {
        Backoff {
            min,
            max,
            factor: 2.0,
            jitter: true,
            max_times: None,
        }
    }

    /// The delays. `seed` fixes the jitter (tests); None draws it at random.
    pub fn delays(self, seed: Option<u64>) -> impl Iterator<Item = Duration> {
        let mut b = ExponentialBuilder::default()
            .with_min_delay(self.min)
            .with_max_delay(self.max)
            .with_factor(self.factor);
        b = match self.max_times {
            Some(n) => b.with_max_times(n),
            None => b.without_max_times(),
        };
        if self.jitter {
            b = match seed {
                Some(s) => b.with_jitter().with_jitter_seed(s),
                None => b.with_jitter(),
            };
        }
        let max = self.max;
        b.build().map(move |d| d.min(max))
    }
}

/// How transient failures are retried. Defaults: 4 calls per provider, 200 ms doubling to 5 s,
/// jittered, at most 60 s per request.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct RetryPolicy {
    /// Calls to one provider for one request, first call included.
    pub max_attempts: u32,
    /// First delay.
    pub initial_delay: Duration,
    /// Largest delay.
    pub max_delay: Duration,
    /// Growth per attempt.
    pub multiplier: f32,
    /// Add up to 100% random jitter to each delay.
    pub jitter: bool,
    /// Total time one request may spend retrying.
    pub max_elapsed: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            max_attempts: 4,
            initial_delay: Duration::from_millis(200),
            max_delay: Duration::from_secs(5),
            multiplier: 2.0,
            jitter: true,
            max_elapsed: Duration::from_secs(60),
        }
    }
}

impl RetryPolicy {
    /// From `[retry]`.
    pub fn from_settings(s: &RetrySettings) -> Self {
        RetryPolicy {
            max_attempts: s.max_attempts,
            initial_delay: Duration::from_millis(s.initial_delay_ms),
            max_delay: Duration::from_millis(s.max_delay_ms),
            multiplier: s.multiplier,
            jitter: s.jitter,
            max_elapsed: Duration::from_secs(s.max_elapsed_secs),
        }
    }

    /// The delays between calls to one provider (`max_attempts - 1` of them). `seed` fixes the
    /// jitter (tests); None draws it at random.
    pub fn delays(&self, seed: Option<u64>) -> impl Iterator<Item = Duration> {
        self.backoff().delays(seed)
    }

    /// As a [`Backoff`].
    pub fn backoff(&self) -> Backoff {
        Backoff {
            min: self.initial_delay,
            max: self.max_delay,
            factor: self.multiplier,
            jitter: self.jitter,
            max_times: Some(self.max_attempts.saturating_sub(1) as usize),
        }
    }
}

/// The next step after one classified reply.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Decision {
    /// The provider answered about the identity (or refused it): finish with that answer.
    Finish,
    /// Sent and lost: finish `failed` / `billing_unknown` and dead-letter; never call again.
    StopBillingUnknown,
    /// Unbilled and transient: retry this provider after a backoff delay, if budget is left.
    Retry,
    /// Unbilled and provider-wide: open this provider's circuit and try the next one.
    FailOver,
}

/// The decision table (docs/src/reference/reason-codes.md, "Retries, billing and dead letters"), one row per class.
pub fn decide(c: &Classification) -> Decision {
    match c.class {
        OutcomeClass::Verdict
        | OutcomeClass::InvalidField
        | OutcomeClass::IdentityLimit
        | OutcomeClass::RequestRefused
        | OutcomeClass::UnknownCode => Decision::Finish,
        OutcomeClass::Unknown => Decision::StopBillingUnknown,
        OutcomeClass::Transient => Decision::Retry,
        OutcomeClass::ProviderWide => Decision::FailOver,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::check::{Billed, ReasonCode};

    #[test]
    fn delays_double_up_to_the_cap_and_stop_after_max_attempts() {
        let p = RetryPolicy {
            jitter: false,
            max_attempts: 6,
            initial_delay: Duration::from_millis(200),
            max_delay: Duration::from_millis(1000),
            ..RetryPolicy::default()
        };
        let got: Vec<u128> = p.delays(None).map(|d| d.as_millis()).collect();
        assert_eq!(got, vec![200, 400, 800, 1000, 1000]);
        let one = RetryPolicy {
            max_attempts: 1,
            ..p
        };
        assert_eq!(one.delays(None).count(), 0);
    }

    #[test]
    fn jitter_stays_within_one_base_delay_and_is_seeded() {
        let p = RetryPolicy::default();
        let a: Vec<Duration> = p.delays(Some(7)).collect();
        let b: Vec<Duration> = p.delays(Some(7)).collect();
        assert_eq!(a, b);
        let bases = [200u64, 400, 800];
        for (d, base) in a.iter().zip(bases) {
            assert!(
                *d >= Duration::from_millis(base) && *d <= Duration::from_millis(2 * base),
                "{d:?}"
            );
        }
    }

    #[test]
    fn the_decision_table() {
        assert_eq!(
            decide(&Classification::verdict(ReasonCode::Match, Billed::Yes)),
            Decision::Finish
        );
        assert_eq!(
            decide(&Classification::invalid_field(ReasonCode::InvalidMobile)),
            Decision::Finish
        );
        assert_eq!(
            decide(&Classification::identity_limit(
                ReasonCode::IdentityDailyLimit
            )),
            Decision::Finish
        );
        assert_eq!(
            decide(&Classification::unknown_code(Billed::Unknown)),
            Decision::Finish
        );
        assert_eq!(decide(&Classification::request_refused()), Decision::Finish);
        assert_eq!(decide(&Classification::TRANSIENT), Decision::Retry);
        assert_eq!(decide(&Classification::THROTTLED), Decision::Retry);
        assert_eq!(decide(&Classification::PROVIDER_WIDE), Decision::FailOver);
        assert_eq!(
            decide(&Classification::UNKNOWN),
            Decision::StopBillingUnknown
        );
    }
}
