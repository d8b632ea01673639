//! Governor buckets local to one process: the shared limiter's fallback while Redis is
//! unreachable, and [`LocalLimiter`] for single-process use.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use governor::{DefaultDirectRateLimiter, RateLimiter};
use tokio::time::Instant;

use super::{jitter, Limiter, Rate, Saturated};

/// One governor bucket with a "not before" instant (a local cool-down, or the end of the shared
/// schedule when Redis went away) and a count of callers waiting in it. Its rate can change
/// (the fleet grew or shrank): the bucket is then replaced.
#[derive(Debug)]
pub struct LocalBucket {
    governed: Mutex<Governed>,
    waiting: AtomicUsize,
    not_before: Mutex<Option<Instant>>,
    /// When this worker last reserved a shared slot, and how far ahead the shared schedule
    /// (every worker's reservations) reached then.
    shared: Mutex<Option<(Instant, Duration)>>,
}

/// The governor bucket of one rate, and its spacing.
#[derive(Debug)]
struct Governed {
    rate: Rate,
    limiter: Arc<DefaultDirectRateLimiter>,
    interval: Duration,
}

impl Governed {
    fn new(rate: Rate) -> Governed {
        Governed {
            rate,
            limiter: Arc::new(RateLimiter::direct(rate.quota())),
            interval: Duration::from_secs_f64(1.0 / rate.per_sec.max(1e-6)),
        }
    }
}

struct Waiting<'a>(&'a AtomicUsize);

impl<'a> Waiting<'a> {
    fn enter(n: &'a AtomicUsize) -> Self {
        n.fetch_add(1, Ordering::SeqCst);
        Waiting(n)
    }
}

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

impl LocalBucket {
    /// A bucket at `rate`.
    pub fn new(rate: Rate) -> Self {
        LocalBucket {
            governed: Mutex::new(Governed::new(rate)),
            waiting: AtomicUsize::new(0),
            not_before: Mutex::new(None),
            shared: Mutex::new(None),
        }
    }

    fn governed(&self) -> std::sync::MutexGuard<'_, Governed> {
        self.governed.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn interval(&self) -> Duration {
        self.governed().interval
    }

    /// The bucket's rate now.
    pub fn rate(&self) -> Rate {
        self.governed().rate
    }

    /// Go on at `rate` from `now`: a different rate replaces the bucket, which starts one of its
    /// intervals later (a call the old bucket just let through is not followed at once by the
    /// new bucket's burst). Returns whether the rate changed.
    pub fn set_rate(&self, rate: Rate, now: Instant) -> bool {
        let interval = {
            let mut g = self.governed();
            if g.rate == rate {
                return false;
            }
            *g = Governed::new(rate);
            g.interval
        };
        self.hold_until(now + interval);
        true
    }

    /// A shared slot was reserved at `at`; the shared schedule then reached `ahead` further.
    pub fn note_shared(&self, at: Instant, ahead: Duration) {
        *self.shared.lock().expect("local bucket lock") = Some((at, ahead));
    }

    /// Redis went away at `now`: start after the shared schedule, at a random phase within
    /// one local interval (workers' first local calls spread out instead of coinciding).
    ///
    /// Other workers kept reserving after this worker's last reservation; while the schedule
    /// was live (a backlog), it stayed about `ahead` in front of the clock, so it is taken to
    /// end at `now + ahead` — an estimate on the safe side (at worst a late start).
    pub fn start_fallback(&self, now: Instant) {
        let shared = *self.shared.lock().expect("local bucket lock");
        let ahead = match shared {
            Some((at, ahead)) if now < at + ahead => ahead,
            _ => Duration::ZERO,
        };
        self.hold_until(now + ahead + jitter(self.interval()));
    }

    /// No call leaves this bucket before `t` (the later of `t` and any earlier hold wins).
    pub fn hold_until(&self, t: Instant) {
        let mut nb = self.not_before.lock().expect("local bucket lock");
        *nb = Some(nb.map_or(t, |old| old.max(t)));
    }

    /// Wait for a slot; `Saturated` (without waiting) when the callers already queued here
    /// would make this one wait longer than `max_wait`.
    pub async fn acquire(&self, max_wait: Duration) -> Result<Duration, Saturated> {
        let start = Instant::now();
        let not_before = *self.not_before.lock().expect("local bucket lock");
        let head = not_before.map_or(Duration::ZERO, |t| t.saturating_duration_since(start));
        let queued = self.waiting.load(Ordering::SeqCst) as u32;
        let interval = self.interval();
        let estimate = head + interval.saturating_mul(queued);
        if estimate > max_wait {
            return Err(Saturated {
                retry_after: estimate - max_wait + jitter((max_wait / 2).max(interval)),
            });
        }
        let _waiting = Waiting::enter(&self.waiting);
        if let Some(t) = not_before {
            tokio::time::sleep_until(t).await;
        }
        // The bucket of the rate current after the hold (a change of rate holds too).
        loop {
            let limiter = self.governed().limiter.clone();
            limiter.until_ready().await;
            if Arc::ptr_eq(&limiter, &self.governed().limiter) {
                break;
            }
            // The rate changed while this caller waited: the old bucket's slot no longer
            // counts; wait in the new one, after its hold.
            let hold = *self.not_before.lock().expect("local bucket lock");
            if let Some(t) = hold {
                tokio::time::sleep_until(t).await;
            }
        }
        Ok(start.elapsed())
    }
}

/// A limiter local to this process: one governor bucket per provider, no `max_wait`.
#[derive(Debug)]
pub struct LocalLimiter {
    rates: HashMap<String, Rate>,
    buckets: Mutex<HashMap<String, Arc<LocalBucket>>>,
}

impl LocalLimiter {
    /// Buckets for the given providers; a provider not listed is not limited.
    pub fn new(rates: HashMap<String, Rate>) -> Self {
        LocalLimiter {
            rates,
            buckets: Mutex::new(HashMap::new()),
        }
    }

    fn bucket(&self, provider: &str) -> Option<Arc<LocalBucket>> {
        let rate = *self.rates.get(provider)?;
        let mut b = self.buckets.lock().expect("limiter lock");
        Some(
            b.entry(provider.to_owned())
                .or_insert_with(|| Arc::new(LocalBucket::new(rate)))
                .clone(),
        )
    }
}

#[async_trait]
impl Limiter for LocalLimiter {
    async fn acquire(&self, provider: &str, _action: &str) -> Result<Duration, Saturated> {
        match self.bucket(provider) {
            Some(b) => b.acquire(Duration::MAX).await,
            None => Ok(Duration::ZERO),
        }
    }

    async fn throttled(&self, provider: &str, action: &str) {
        tracing::warn!(provider, action, "provider answered throttled");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_hold_delays_the_next_call() {
        let b = LocalBucket::new(Rate {
            per_sec: 1000.0,
            burst: 1,
        });
        b.hold_until(Instant::now() + Duration::from_millis(60));
        b.hold_until(Instant::now() + Duration::from_millis(20));
        let waited = b.acquire(Duration::from_secs(1)).await.unwrap();
        assert!(waited >= Duration::from_millis(60), "{waited:?}");
    }

    #[tokio::test]
    async fn saturated_when_the_hold_exceeds_max_wait() {
        let b = LocalBucket::new(Rate {
            per_sec: 10.0,
            burst: 1,
        });
        b.hold_until(Instant::now() + Duration::from_secs(2));
        let s = b.acquire(Duration::from_millis(500)).await.unwrap_err();
        assert!(s.retry_after >= Duration::from_millis(1500), "{s:?}");
        assert_eq!(b.waiting.load(Ordering::SeqCst), 0);
    }

    #[tokio::test]
    async fn fallback_starts_after_a_live_shared_schedule() {
        let rate = Rate {
            per_sec: 1000.0,
            burst: 1,
        };
        let b = LocalBucket::new(rate);
        let now = Instant::now();
        b.note_shared(now, Duration::from_millis(80));
        b.start_fallback(now + Duration::from_millis(10));
        let nb = b.not_before.lock().unwrap().unwrap();
        assert!(nb >= now + Duration::from_millis(90) && nb <= now + Duration::from_millis(91));
        // A schedule that already ended holds nothing back (beyond the phase).
        let b = LocalBucket::new(rate);
        b.note_shared(now, Duration::from_millis(5));
        b.start_fallback(now + Duration::from_millis(10));
        let nb = b.not_before.lock().unwrap().unwrap();
        assert!(nb <= now + Duration::from_millis(11));
    }

    #[tokio::test]
    async fn a_new_rate_replaces_the_bucket_after_one_of_its_intervals() {
        let fast = Rate {
            per_sec: 1000.0,
            burst: 1,
        };
        let slow = Rate {
            per_sec: 10.0,
            burst: 1,
        };
        let b = LocalBucket::new(fast);
        let now = Instant::now();
        assert!(!b.set_rate(fast, now), "the same rate keeps the bucket");
        assert!(b.set_rate(slow, now));
        assert_eq!(b.rate(), slow);
        assert_eq!(b.interval(), Duration::from_millis(100));
        let nb = b.not_before.lock().unwrap().unwrap();
        assert_eq!(nb, now + Duration::from_millis(100));
        // The next call waits for the hold; the one after it for the new spacing.
        let first = b.acquire(Duration::from_secs(1)).await.unwrap();
        assert!(first >= Duration::from_millis(95), "{first:?}");
        let second = b.acquire(Duration::from_secs(1)).await.unwrap();
        assert!(second >= Duration::from_millis(90), "{second:?}");
    }

    #[tokio::test]
    async fn unknown_providers_are_not_limited() {
        let l = LocalLimiter::new(HashMap::new());
        assert_eq!(l.acquire("x", "y").await, Ok(Duration::ZERO));
    }
}
