//! The limiter every outbound provider call goes through, keyed by provider and vendor API.
//!
//! # Layout
//!
//! - [`Limiter`]: the seam `worker::process` calls: `acquire` (reserve a slot and sleep until it,
//!   or [`Saturated`] without reserving) and `throttled` (the vendor said so: cool down).
//! - [`BucketSpec`] / [`Buckets`]: configuration → buckets (one per provider, or per
//!   provider + vendor API where `[providers.<name>.actions.<Action>]` says so) and their keys.
//! - [`gcra`]: the bucket's arithmetic as pure Rust, the reference model of `bucket.lua`.
//! - [`redis`]: [`RedisLimiter`], the bucket shared by every worker (one script call per admitted
//!   call, Redis server time), with a per-worker `governor` fallback while Redis is unreachable.
//! - [`conn`]: [`RedisClient`] / [`RedisConn`], one node, a Redis Cluster or a Sentinel-managed
//!   primary behind one connection type (the limiter's and the tools').
//! - [`local`]: [`LocalLimiter`], governor buckets local to one process (the fallback's engine,
//!   and a limiter for tests and single-process tools).

pub mod conn;
pub mod fleet;
pub mod gcra;
pub mod local;
pub mod redis;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;

use crate::configuration::{ProviderSettings, ProvidersSettings};

pub use self::conn::{RedisClient, RedisConn};
pub use self::fleet::Fleet;
pub use self::local::LocalLimiter;
pub use self::redis::RedisLimiter;

/// No slot was reserved: the wait would have exceeded the bucket's `max_wait`. The caller waits
/// `retry_after` without holding anything, then asks again.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[error("rate limit saturated; ask again in {retry_after:?}")]
pub struct Saturated {
    /// When asking again has a chance of fitting within `max_wait`.
    pub retry_after: Duration,
}

/// Admission control for provider calls.
#[async_trait]
pub trait Limiter: Send + Sync + 'static {
    /// Reserve a slot for one call to `provider`/`action` and sleep until it: returns how long
    /// it waited. `Err(Saturated)` when the wait would exceed the bucket's `max_wait`: nothing is
    /// reserved and nothing was slept. Dropping the future abandons the reserved slot (safe: a
    /// slot unused is a call not made).
    async fn acquire(&self, provider: &str, action: &str) -> Result<Duration, Saturated>;
    /// The provider answered "throttled": pause the bucket for its cool-down.
    async fn throttled(&self, provider: &str, action: &str);
    /// Until when the bucket is paused because a vendor answered "throttled", as far as this
    /// worker knows (its own answers, and every reply of the shared bucket since): a slot
    /// reserved before the pause does not go during it.
    fn paused_until(&self, _provider: &str, _action: &str) -> Option<tokio::time::Instant> {
        None
    }
    /// How late after its slot a call may still leave (the bucket's `jitter_margin`; a margin
    /// of 0 does not police lateness); a call held up longer takes a fresh slot.
    fn max_lateness(&self, _provider: &str, _action: &str) -> Duration {
        Duration::MAX
    }
}

/// Rate and burst of one bucket.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Rate {
    /// Calls per second.
    pub per_sec: f64,
    /// Calls that may go at once.
    pub burst: u32,
}

impl Rate {
    /// The governor quota for this rate.
    pub fn quota(self) -> governor::Quota {
        let period = Duration::from_secs_f64(1.0 / self.per_sec.max(1e-6));
        governor::Quota::with_period(period)
            .expect("a positive period")
            .allow_burst(std::num::NonZeroU32::new(self.burst.max(1)).expect("non-zero"))
    }
}

/// One bucket: what it limits, its Redis key and its limits.
#[derive(Clone, Debug, PartialEq)]
pub struct BucketSpec {
    /// Provider name.
    pub provider: String,
    /// Vendor API when the bucket is per API.
    pub action: Option<String>,
    /// `<prefix>:{rl:<provider>[:<action>]}`.
    pub key: String,
    /// Rate and burst of all workers together.
    pub rate: Rate,
    /// Longest wait a caller may reserve.
    pub max_wait: Duration,
    /// Most of the rate one worker uses alone while Redis is unreachable (the share is
    /// `1 / live workers` below this cap, see [`fleet`]).
    pub fallback_share: f64,
    /// Pause after "throttled".
    pub cooldown: Duration,
    /// Lowest share of the rate adaptive lowering goes to (1.0 = never lower).
    pub min_share: f64,
    /// Time a lowered rate takes to recover fully.
    pub recovery: Duration,
    /// Delay variation between a slot and the vendor seeing the call, absorbed by spacing.
    pub jitter_margin: Duration,
}

impl BucketSpec {
    /// The script's parameters.
    pub fn params(&self) -> gcra::Params {
        gcra::Params::new(
            self.spacing_rate(),
            self.rate.burst,
            self.max_wait,
            self.cooldown,
            self.min_share,
            self.recovery,
        )
    }

    /// This worker's own rate while Redis is unreachable, knowing nothing of the fleet:
    /// `rate × fallback_share` ([`BucketSpec::fallback_rate_at`]).
    pub fn fallback_rate(&self) -> Rate {
        self.fallback_rate_at(self.fallback_share)
    }

    /// This worker's own rate at `share` of the bucket: `rate × share`, with a burst of
    /// `burst × share` (at least 1), so N workers with share 1/N stay within the shared limit.
    pub fn fallback_rate_at(&self, share: f64) -> Rate {
        Rate {
            per_sec: self.spacing_rate() * share,
            burst: ((f64::from(self.rate.burst) * share).floor() as u32).max(1),
        }
    }

    /// The rate calls are spaced at: `rate / (1 + jitter_margin in seconds)`. Calls leave at
    /// most `jitter_margin` apart from their slots, so any 1-second window at the vendor sees
    /// the calls of a `1 s + margin` window of slots: at most `rate + burst`.
    pub fn spacing_rate(&self) -> f64 {
        self.rate.per_sec / (1.0 + self.jitter_margin.as_secs_f64())
    }

    /// `provider` or `provider:action`, for logs and metric labels.
    pub fn label(&self) -> String {
        match &self.action {
            Some(a) => format!("{}:{a}", self.provider),
            None => self.provider.clone(),
        }
    }
}

/// The Redis key of a bucket: `<prefix>:{rl:<provider>}` or `<prefix>:{rl:<provider>:<action>}`.
/// The braces are a Redis Cluster hash tag: everything a bucket stores is in that one key, and
/// any key added later for the same bucket would land in the same slot.
pub fn bucket_key(prefix: &str, provider: &str, action: Option<&str>) -> String {
    let tag = match action {
        Some(a) => format!("{{rl:{provider}:{a}}}"),
        None => format!("{{rl:{provider}}}"),
    };
    if prefix.is_empty() {
        tag
    } else {
        format!("{prefix}:{tag}")
    }
}

/// Every bucket of a configuration, found by provider and vendor API.
#[derive(Clone, Debug, Default)]
pub struct Buckets {
    by_provider: HashMap<String, Arc<BucketSpec>>,
    by_action: HashMap<(String, String), Arc<BucketSpec>>,
}

impl Buckets {
    /// One bucket per provider section, plus one per configured vendor API.
    pub fn from_settings(key_prefix: &str, providers: &ProvidersSettings) -> Buckets {
        let mut b = Buckets::default();
        for (name, p) in providers.all() {
            b.add_provider(key_prefix, name, p);
        }
        b
    }

    /// Add one provider's buckets.
    pub fn add_provider(&mut self, key_prefix: &str, name: &str, p: &ProviderSettings) {
        let base = BucketSpec {
            provider: name.to_owned(),
            action: None,
            key: bucket_key(key_prefix, name, None),
            rate: Rate {
                per_sec: p.rate_per_sec,
                burst: p.burst,
            },
            max_wait: Duration::from_millis(p.max_wait_ms),
            fallback_share: p.fallback_share,
            cooldown: Duration::from_millis(p.throttle_cooldown_ms),
            min_share: p.throttle_min_share,
            recovery: Duration::from_secs(p.throttle_recovery_secs),
            jitter_margin: Duration::from_millis(p.jitter_margin_ms),
        };
        // Vendor API names are matched case-insensitively: environment variables arrive
        // lower-cased (`KYCQ__PROVIDERS__ALIBABA__ACTIONS__ID2METAPERIODVERIFYINTL__RATE_PER_SEC`),
        // and such an entry overrides the file's entry for the same API. The map iterates the
        // file's spelling (upper-case first) before the lower-cased one.
        for (action, a) in &p.actions {
            let canon = action.to_ascii_lowercase();
            let spelled = self
                .by_action
                .get(&(name.to_owned(), canon.clone()))
                .and_then(|s| s.action.clone())
                .unwrap_or_else(|| action.clone());
            let spec = BucketSpec {
                key: bucket_key(key_prefix, name, Some(&spelled)),
                action: Some(spelled),
                rate: Rate {
                    per_sec: a.rate_per_sec,
                    burst: a.burst.unwrap_or(p.burst),
                },
                max_wait: a.max_wait_ms.map_or(base.max_wait, Duration::from_millis),
                fallback_share: a.fallback_share.unwrap_or(p.fallback_share),
                ..base.clone()
            };
            self.by_action
                .insert((name.to_owned(), canon), Arc::new(spec));
        }
        self.by_provider.insert(name.to_owned(), Arc::new(base));
    }

    /// Add (or replace) one bucket.
    pub fn insert(&mut self, spec: BucketSpec) {
        let spec = Arc::new(spec);
        match spec.action.clone() {
            Some(a) => self
                .by_action
                .insert((spec.provider.clone(), a.to_ascii_lowercase()), spec),
            None => self.by_provider.insert(spec.provider.clone(), spec),
        };
    }

    /// The bucket a call to `provider`/`action` takes: the API's own when configured, else the
    /// provider's. None for a provider without a section.
    pub fn get(&self, provider: &str, action: &str) -> Option<&Arc<BucketSpec>> {
        self.by_action
            .get(&(provider.to_owned(), action.to_ascii_lowercase()))
            .or_else(|| self.by_provider.get(provider))
    }

    /// Every bucket.
    pub fn all(&self) -> impl Iterator<Item = &Arc<BucketSpec>> {
        self.by_provider.values().chain(self.by_action.values())
    }
}

/// A random delay in `[0, up_to]`, spreading callers that would otherwise come back together.
pub(crate) fn jitter(up_to: Duration) -> Duration {
    up_to.mul_f64(rand::random::<f64>())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::configuration::Settings;
    use std::collections::BTreeMap;
    use std::path::Path;

    fn settings(env: &[(&str, &str)]) -> Settings {
        let map: BTreeMap<String, String> = env
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        Settings::load_with(Path::new("config"), None, Some(map)).unwrap()
    }

    #[test]
    fn keys_carry_the_prefix_and_a_hash_tag_per_bucket() {
        assert_eq!(bucket_key("kycq", "tencent", None), "kycq:{rl:tencent}");
        assert_eq!(
            bucket_key("prod-eu", "alibaba", Some("Id2MetaVerifyIntl")),
            "prod-eu:{rl:alibaba:Id2MetaVerifyIntl}"
        );
        assert_eq!(bucket_key("", "tencent", None), "{rl:tencent}");
    }

    #[test]
    fn an_api_limit_from_the_environment_overrides_the_files_whatever_its_case() {
        let s = settings(&[(
            "KYCQ__PROVIDERS__ALIBABA__ACTIONS__ID2METAPERIODVERIFYINTL__RATE_PER_SEC",
            "5",
        )]);
        let b = Buckets::from_settings(&s.redis.key_prefix, &s.providers);
        let a = b.get("alibaba", "Id2MetaPeriodVerifyIntl").unwrap();
        assert_eq!(a.rate.per_sec, 5.0);
        assert_eq!(a.key, "kycq:{rl:alibaba:Id2MetaPeriodVerifyIntl}");
        assert_eq!(
            b.get("alibaba", "id2metaperiodverifyintl").unwrap().key,
            a.key
        );
        assert_eq!(
            b.get("alibaba", "Id2MetaVerifyIntl").unwrap().rate.per_sec,
            50.0
        );
    }

    #[test]
    fn defaults_are_the_vendor_limits() {
        let s = settings(&[]);
        let b = Buckets::from_settings(&s.redis.key_prefix, &s.providers);
        let t = b.get("tencent", "PhoneVerification").unwrap();
        assert_eq!(t.key, "kycq:{rl:tencent}");
        assert_eq!(
            t.rate,
            Rate {
                per_sec: 20.0,
                burst: 1
            }
        );
        assert_eq!(t.max_wait, Duration::from_millis(5000));
        assert_eq!(t.cooldown, Duration::from_millis(1000));
        assert_eq!(t.jitter_margin, Duration::from_millis(20));
        // 20/s spaced 51 ms apart: 20 calls + burst in any 1 s + 20 ms of slots.
        assert_eq!(t.params().interval_us, 51_000);
        for (action, rate) in [
            ("Mobile3MetaVerifyIntl", 50.0),
            ("Id2MetaVerifyIntl", 50.0),
            ("Id2MetaPeriodVerifyIntl", 10.0),
        ] {
            let a = b.get("alibaba", action).unwrap();
            assert_eq!(a.key, format!("kycq:{{rl:alibaba:{action}}}"));
            assert_eq!(
                a.rate,
                Rate {
                    per_sec: rate,
                    burst: 1
                }
            );
            assert_eq!(a.action.as_deref(), Some(action));
        }
        // An API without its own table shares the provider's bucket.
        assert_eq!(b.get("alibaba", "Other").unwrap().key, "kycq:{rl:alibaba}");
        assert_eq!(
            b.get("alimarket", "mobile3/check").unwrap().rate.per_sec,
            20.0
        );
        assert!(b.get("nobody", "x").is_none());
        // One bucket per provider section, plus one per API with a table of its own.
        let want: usize = s.providers.all().map(|(_, p)| 1 + p.actions.len()).sum();
        assert_eq!(b.all().count(), want);
    }

    #[test]
    fn environment_overrides_reach_the_buckets() {
        let s = settings(&[
            ("KYCQ__REDIS__KEY_PREFIX", "staging"),
            ("KYCQ__PROVIDERS__TENCENT__RATE_PER_SEC", "7.5"),
            ("KYCQ__PROVIDERS__TENCENT__BURST", "3"),
            ("KYCQ__PROVIDERS__TENCENT__MAX_WAIT_MS", "800"),
            ("KYCQ__PROVIDERS__TENCENT__FALLBACK_SHARE", "0.25"),
            ("KYCQ__PROVIDERS__TENCENT__JITTER_MARGIN_MS", "0"),
        ]);
        let b = Buckets::from_settings(&s.redis.key_prefix, &s.providers);
        let t = b.get("tencent", "PhoneVerification").unwrap();
        assert_eq!(t.key, "staging:{rl:tencent}");
        assert_eq!(
            t.rate,
            Rate {
                per_sec: 7.5,
                burst: 3
            }
        );
        assert_eq!(t.max_wait, Duration::from_millis(800));
        assert_eq!(
            t.fallback_rate(),
            Rate {
                per_sec: 1.875,
                burst: 1
            }
        );
    }

    #[test]
    fn fallback_shares_add_up_to_the_shared_limit() {
        let spec = BucketSpec {
            provider: "p".into(),
            action: None,
            key: "k".into(),
            rate: Rate {
                per_sec: 50.0,
                burst: 6,
            },
            max_wait: Duration::from_secs(5),
            fallback_share: 1.0 / 3.0,
            cooldown: Duration::from_secs(1),
            min_share: 0.5,
            recovery: Duration::from_secs(60),
            jitter_margin: Duration::ZERO,
        };
        let f = spec.fallback_rate();
        assert!((f.per_sec * 3.0 - 50.0).abs() < 1e-9);
        assert_eq!(f.burst, 2);
        assert_eq!(spec.label(), "p");
    }
}
