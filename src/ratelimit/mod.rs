//! The limiter every outbound provider call goes through, keyed by provider and vendor API.
//!
//! This is the per-worker limiter (governor); the Redis bucket shared by all workers plugs in
//! behind the same trait.

use std::collections::HashMap;
use std::num::NonZeroU32;
use std::sync::Mutex;
use std::time::Duration;

use async_trait::async_trait;
use governor::{DefaultDirectRateLimiter, Quota, RateLimiter};

/// Admission control for provider calls.
#[async_trait]
pub trait Limiter: Send + Sync + 'static {
    /// Wait until one call to `provider`/`action` may go. Returns how long it waited.
    async fn acquire(&self, provider: &str, action: &str) -> Duration;
    /// The provider answered "throttled".
    async fn throttled(&self, provider: &str, action: &str);
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
    pub fn quota(self) -> Quota {
        let period = Duration::from_secs_f64(1.0 / self.per_sec.max(1e-6));
        Quota::with_period(period)
            .expect("a positive period")
            .allow_burst(NonZeroU32::new(self.burst.max(1)).expect("non-zero"))
    }
}

/// A limiter local to this process: one governor bucket per provider.
#[derive(Debug)]
pub struct LocalLimiter {
    rates: HashMap<String, Rate>,
    buckets: Mutex<HashMap<String, std::sync::Arc<DefaultDirectRateLimiter>>>,
}

impl LocalLimiter {
    /// Buckets for the given providers.
    pub fn new(rates: HashMap<String, Rate>) -> Self {
        LocalLimiter {
            rates,
            buckets: Mutex::new(HashMap::new()),
        }
    }

    fn bucket(&self, provider: &str) -> Option<std::sync::Arc<DefaultDirectRateLimiter>> {
        let rate = *self.rates.get(provider)?;
        let mut b = self.buckets.lock().expect("limiter lock");
        Some(
            b.entry(provider.to_owned())
                .or_insert_with(|| std::sync::Arc::new(RateLimiter::direct(rate.quota())))
                .clone(),
        )
    }
}

#[async_trait]
impl Limiter for LocalLimiter {
    async fn acquire(&self, provider: &str, _action: &str) -> Duration {
        let start = tokio::time::Instant::now();
        if let Some(b) = self.bucket(provider) {
            b.until_ready().await;
        }
        start.elapsed()
    }

    async fn throttled(&self, provider: &str, action: &str) {
        tracing::warn!(provider, action, "provider answered throttled");
    }
}
