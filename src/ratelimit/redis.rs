//! The bucket shared by every worker: one `EVALSHA` of `bucket.lua` per admitted call (Redis
//! server time, reservation, exact sleep), cool-down on "throttled", and a per-worker governor
//! fallback at `rate × fallback_share` while Redis is unreachable.
//!
//! States: *shared* (every acquire runs the script) and *fallback* (every acquire uses this
//! worker's [`LocalBucket`]). A failed script call switches to fallback once (warn, metric) and
//! starts one probe task; its first success switches back (info, metric). The switches are made
//! not to overlap the two schedules:
//! - going down: calls already holding a shared slot keep it; the local buckets start where the
//!   shared schedule of every worker ends (each reply says how far ahead it reaches);
//! - coming back: every worker probes on the same wall-clock ticks, so all see Redis at once,
//!   and callers queued in a local bucket leave it and reserve shared slots instead.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, OnceLock, Weak};
use std::time::Duration;

use async_trait::async_trait;
use tokio::time::Instant;
use tracing::{debug, info, warn};

use super::conn::{RedisClient, RedisConn};
use super::fleet::{self, Fleet};
use super::gcra::Reservation;
use super::local::LocalBucket;
use super::{jitter, BucketSpec, Buckets, Limiter, Saturated};
use crate::configuration::{RedisSettings, Settings};

/// How soon a worker whose heartbeat has not been written yet asks again while falling back.
const UNCOUNTED_RETRY: Duration = Duration::from_millis(500);

/// The bucket script (see its header for KEYS/ARGV/replies).
pub const BUCKET_LUA: &str = include_str!("bucket.lua");

/// Why Redis could not answer (the limiter then falls back).
#[derive(Debug, thiserror::Error)]
enum Unavailable {
    #[error("no connection")]
    NotConnected,
    #[error("timed out after {0:?}")]
    Timeout(Duration),
    #[error(transparent)]
    Redis(#[from] redis::RedisError),
    #[error("unexpected reply {0:?}")]
    Reply(Vec<i64>),
}

struct Inner {
    buckets: Buckets,
    local: HashMap<String, LocalBucket>,
    /// Per bucket: until when this worker treats it as full (no slot within `max_wait`).
    full: HashMap<String, Mutex<Full>>,
    /// Per bucket: until when this worker knows it paused ("throttled"), from its own
    /// throttled answers and from every script reply.
    paused: HashMap<String, Mutex<Option<Instant>>>,
    client: RedisClient,
    conn: Mutex<Option<RedisConn>>,
    fallback: AtomicBool,
    /// Wakes callers waiting in a local bucket when Redis answers again.
    shared_again: tokio::sync::Notify,
    script: redis::Script,
    timeout: Duration,
    probe_interval: Duration,
    /// The fleet the heartbeats count (a worker's limiter); without it the fallback uses the
    /// configured `fallback_share` as it is.
    fleet: OnceLock<Arc<Fleet>>,
}

/// The shared limiter of one worker process.
#[derive(Clone)]
pub struct RedisLimiter {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for RedisLimiter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisLimiter")
            .field("buckets", &self.inner.buckets)
            .field("fallback", &self.is_fallback())
            .finish_non_exhaustive()
    }
}

impl RedisLimiter {
    /// The limiter for a worker: every provider's buckets, `[redis]` connection settings.
    pub async fn from_settings(settings: &Settings) -> Result<RedisLimiter, redis::RedisError> {
        let buckets = Buckets::from_settings(&settings.redis.key_prefix, &settings.providers);
        Self::connect(&settings.redis, buckets).await
    }

    /// Connect (once, with the short timeout) and load the script — to one node, a cluster or
    /// a Sentinel-managed primary (see [`RedisClient`]). Only a malformed URL or a bad
    /// combination of `[redis]` keys is an error: an unreachable Redis starts the limiter in
    /// fallback, probing in the background.
    pub async fn connect(
        redis: &RedisSettings,
        buckets: Buckets,
    ) -> Result<RedisLimiter, redis::RedisError> {
        let client = RedisClient::from_settings(redis)?;
        let local = buckets
            .all()
            .map(|b| (b.key.clone(), LocalBucket::new(b.fallback_rate())))
            .collect();
        let full = buckets
            .all()
            .map(|b| (b.key.clone(), Mutex::new(Full::default())))
            .collect();
        let paused = buckets
            .all()
            .map(|b| (b.key.clone(), Mutex::new(None)))
            .collect();
        let inner = Arc::new(Inner {
            buckets,
            local,
            full,
            paused,
            client,
            conn: Mutex::new(None),
            fallback: AtomicBool::new(false),
            shared_again: tokio::sync::Notify::new(),
            script: redis::Script::new(BUCKET_LUA),
            timeout: Duration::from_millis(redis.timeout_ms),
            probe_interval: Duration::from_millis(redis.probe_interval_ms),
            fleet: OnceLock::new(),
        });
        metrics::gauge!("kycq_ratelimit_fallback").set(0.0);
        for b in inner.buckets.all() {
            metrics::gauge!("kycq_ratelimit_rate_per_second", "bucket" => b.label())
                .set(b.rate.per_sec);
            metrics::gauge!("kycq_ratelimit_burst", "bucket" => b.label())
                .set(f64::from(b.rate.burst));
        }
        match inner.open().await {
            Ok(c) => *inner.lock_conn() = Some(c),
            Err(e) => Inner::enter_fallback(&inner, &e),
        }
        Ok(RedisLimiter { inner })
    }

    /// Follow the fleet the heartbeats count while falling back (once; later calls are
    /// ignored).
    pub fn attach_fleet(&self, fleet: Arc<Fleet>) {
        let _ = self.inner.fleet.set(fleet);
    }

    /// True while this worker limits itself locally (Redis unreachable).
    pub fn is_fallback(&self) -> bool {
        self.inner.fallback.load(Ordering::SeqCst)
    }

    /// The buckets this limiter knows.
    pub fn buckets(&self) -> &Buckets {
        &self.inner.buckets
    }
}

impl Inner {
    fn lock_conn(&self) -> std::sync::MutexGuard<'_, Option<RedisConn>> {
        self.conn.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A fresh connection with the script loaded, within the timeout. On a cluster the script
    /// is loaded on the master owning each bucket's slot, so this fails (and the probe goes
    /// on) until every bucket's slot has a master that answers and every master says
    /// `cluster_state:ok` ([`RedisConn::load_script`]).
    async fn open(&self) -> Result<RedisConn, Unavailable> {
        let keys: Vec<&str> = self.buckets.all().map(|b| b.key.as_str()).collect();
        let attempt = async {
            let mut c = self.client.connect().await?;
            c.load_script(BUCKET_LUA, &keys).await?;
            Ok::<_, redis::RedisError>(c)
        };
        match tokio::time::timeout(self.timeout * 2, attempt).await {
            Ok(r) => Ok(r?),
            Err(_) => Err(Unavailable::Timeout(self.timeout * 2)),
        }
    }

    /// Run the script for one bucket: one round trip (plus a `SCRIPT LOAD` after a restart).
    async fn script(&self, spec: &BucketSpec, op: &str) -> Result<Vec<i64>, Unavailable> {
        let mut conn = self.lock_conn().clone().ok_or(Unavailable::NotConnected)?;
        let p = spec.params();
        let mut inv = self.script.key(&spec.key);
        inv.arg(op)
            .arg(p.interval_us)
            .arg(p.tau_us)
            .arg(if op == "pause" {
                p.cooldown_us
            } else {
                p.max_wait_us
            })
            .arg(p.min_share)
            .arg(p.recovery_us)
            .arg(p.cooldown_us);
        let reply: Vec<i64> =
            match tokio::time::timeout(self.timeout, inv.invoke_async(&mut conn)).await {
                Ok(r) => r?,
                Err(_) => return Err(Unavailable::Timeout(self.timeout)),
            };
        Ok(reply)
    }

    async fn reserve(&self, spec: &BucketSpec) -> Result<Reservation, Unavailable> {
        match self.script(spec, "acquire").await?[..] {
            [1, wait_us, next_us, paused_us] => Ok(Reservation::Admitted {
                wait_us,
                next_us,
                paused_us,
            }),
            [0, excess_us, paused_us] => Ok(Reservation::Saturated {
                excess_us,
                paused_us,
            }),
            ref other => Err(Unavailable::Reply(other.to_vec())),
        }
    }

    /// Switch to the local buckets (once: the first failure logs, counts and starts the probe).
    fn enter_fallback(this: &Arc<Inner>, e: &Unavailable) {
        if this
            .fallback
            .compare_exchange(false, true, Ordering::SeqCst, Ordering::SeqCst)
            .is_err()
        {
            return;
        }
        *this.lock_conn() = None;
        let now = Instant::now();
        for b in this.local.values() {
            b.start_fallback(now);
        }
        warn!(
            error = %e,
            probe_every_ms = this.probe_interval.as_millis() as u64,
            "redis unreachable: rate limits fall back to this worker's share (fallback_share) until it answers again"
        );
        metrics::gauge!("kycq_ratelimit_fallback").set(1.0);
        metrics::counter!("kycq_ratelimit_fallback_transitions_total", "to" => "local")
            .increment(1);
        let weak = Arc::downgrade(this);
        let interval = this.probe_interval;
        tokio::spawn(probe(weak, interval));
    }

    fn full(&self, spec: &BucketSpec) -> std::sync::MutexGuard<'_, Full> {
        self.full[&spec.key]
            .lock()
            .unwrap_or_else(|p| p.into_inner())
    }

    /// How long the bucket is still taken as full, if it is.
    fn full_for(&self, spec: &BucketSpec, now: Instant) -> Option<Duration> {
        let until = self.full(spec).until?;
        (until > now).then(|| until - now)
    }

    /// Redis said "no slot within max_wait; one frees at `frees_at`": treat the bucket as full
    /// until then plus a backoff that doubles while it stays full (from one interval up to
    /// half of max_wait, so the reserved horizon never drains before someone asks again).
    fn mark_full(&self, spec: &BucketSpec, frees_at: Instant) {
        let interval = micros(spec.params().interval_us);
        let mut f = self.full(spec);
        f.backoff = if f.backoff.is_zero() {
            interval
        } else {
            (f.backoff * 2).min((spec.max_wait / 2).max(interval))
        };
        f.until = Some(frees_at + jitter(f.backoff));
    }

    /// The bucket is paused until `until` (a past instant changes nothing).
    fn note_paused(&self, spec: &BucketSpec, until: Instant) {
        let mut p = self.paused[&spec.key]
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        if until > Instant::now() && p.is_none_or(|old| old < until) {
            *p = Some(until);
        }
    }

    /// A slot was reserved: the bucket is not full.
    fn mark_open(&self, spec: &BucketSpec) {
        let mut f = self.full(spec);
        if f.until.is_some() {
            *f = Full::default();
        }
    }

    /// Falling back: this worker's share follows the fleet the heartbeats count. `Saturated`
    /// while not every other worker has counted this one yet (it has just started): no call
    /// leaves until then.
    fn fit_to_fleet(&self, spec: &BucketSpec) -> Result<(), Saturated> {
        let Some(fleet) = self.fleet.get() else {
            return Ok(());
        };
        let Some(view) = fleet.view() else {
            return Err(Saturated {
                retry_after: UNCOUNTED_RETRY + jitter(UNCOUNTED_RETRY),
            });
        };
        let share = fleet::share(spec.fallback_share, view.live);
        let local = self.local(spec);
        if local.set_rate(spec.fallback_rate_at(share), Instant::now()) {
            let bucket = spec.label();
            metrics::gauge!("kycq_ratelimit_fallback_share", "bucket" => bucket.clone()).set(share);
            info!(
                bucket,
                live_workers = view.live,
                share,
                rate_per_sec = spec.spacing_rate() * share,
                "fallback share follows the fleet: rate / live workers (capped by fallback_share)"
            );
        }
        local.hold_until(view.counted_from);
        Ok(())
    }

    fn local(&self, spec: &BucketSpec) -> &LocalBucket {
        self.local
            .get(&spec.key)
            .expect("a local bucket for every bucket")
    }
}

/// How long until the next multiple of `interval` on the wall clock. Every worker probes on the
/// same ticks, so all of them see Redis come back at once: local and shared admissions of
/// different workers do not overlap for up to a probe interval.
fn until_next_tick(interval: Duration) -> Duration {
    let i = interval.as_micros().max(1);
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default()
        .as_micros();
    Duration::from_micros((i - now % i) as u64)
}

/// One worker's view of a saturated bucket. Callers arriving while it is "full" are answered
/// `Saturated` without a round trip, so a saturated bucket costs each worker about one command
/// per backoff period instead of one per waiting caller.
#[derive(Debug, Default)]
struct Full {
    until: Option<Instant>,
    backoff: Duration,
}

/// Reconnect every `interval` (on wall-clock ticks) until Redis answers and the script loads,
/// then switch back.
async fn probe(weak: Weak<Inner>, interval: Duration) {
    loop {
        tokio::time::sleep(until_next_tick(interval)).await;
        let Some(inner) = weak.upgrade() else { return };
        match inner.open().await {
            Ok(c) => {
                *inner.lock_conn() = Some(c);
                inner.fallback.store(false, Ordering::SeqCst);
                inner.shared_again.notify_waiters();
                info!("redis answers again: rate limits are shared again");
                metrics::gauge!("kycq_ratelimit_fallback").set(0.0);
                metrics::counter!("kycq_ratelimit_fallback_transitions_total", "to" => "redis")
                    .increment(1);
                return;
            }
            Err(e) => debug!(error = %e, "redis still unreachable"),
        }
    }
}

fn micros(us: i64) -> Duration {
    Duration::from_micros(us.max(0) as u64)
}

#[async_trait]
impl Limiter for RedisLimiter {
    async fn acquire(&self, provider: &str, action: &str) -> Result<Duration, Saturated> {
        let inner = &self.inner;
        let Some(spec) = inner.buckets.get(provider, action) else {
            return Ok(Duration::ZERO);
        };
        let start = Instant::now();
        // Saturated callers come back spread over half of max_wait (at least one interval).
        let spread = (spec.max_wait / 2).max(micros(spec.params().interval_us));
        loop {
            if !inner.fallback.load(Ordering::SeqCst) {
                if let Some(left) = inner.full_for(spec, start) {
                    metrics::counter!("kycq_ratelimit_saturated_total", "bucket" => spec.label())
                        .increment(1);
                    return Err(Saturated {
                        retry_after: left + jitter(spread),
                    });
                }
                match inner.reserve(spec).await {
                    Ok(Reservation::Admitted {
                        wait_us,
                        next_us,
                        paused_us,
                    }) => {
                        inner.mark_open(spec);
                        let now = Instant::now();
                        inner.note_paused(spec, now + micros(paused_us));
                        let slot = now + micros(wait_us);
                        // Should Redis go away, this worker's local bucket starts where the
                        // shared schedule (every worker's reservations) ends.
                        inner.local(spec).note_shared(now, micros(next_us));
                        metrics::counter!("kycq_ratelimit_admitted_total", "bucket" => spec.label(), "mode" => "shared")
                            .increment(1);
                        tokio::time::sleep_until(slot).await;
                        return Ok(start.elapsed());
                    }
                    Ok(Reservation::Saturated {
                        excess_us,
                        paused_us,
                    }) => {
                        inner.note_paused(spec, Instant::now() + micros(paused_us));
                        metrics::counter!("kycq_ratelimit_saturated_total", "bucket" => spec.label())
                            .increment(1);
                        inner.mark_full(spec, Instant::now() + micros(excess_us));
                        return Err(Saturated {
                            retry_after: micros(excess_us) + jitter(spread),
                        });
                    }
                    Err(e) => {
                        metrics::counter!("kycq_ratelimit_redis_errors_total").increment(1);
                        Inner::enter_fallback(inner, &e);
                    }
                }
            }
            // Registered before the flag is read again, so a switch back cannot be missed.
            let shared_again = inner.shared_again.notified();
            tokio::pin!(shared_again);
            shared_again.as_mut().enable();
            if !inner.fallback.load(Ordering::SeqCst) {
                continue;
            }
            if let Err(s) = inner.fit_to_fleet(spec) {
                metrics::counter!("kycq_ratelimit_saturated_total", "bucket" => spec.label())
                    .increment(1);
                return Err(s);
            }
            tokio::select! {
                r = inner.local(spec).acquire(spec.max_wait) => {
                    match r {
                        Ok(_) => metrics::counter!("kycq_ratelimit_admitted_total", "bucket" => spec.label(), "mode" => "fallback")
                            .increment(1),
                        Err(_) => metrics::counter!("kycq_ratelimit_saturated_total", "bucket" => spec.label())
                            .increment(1),
                    }
                    return r;
                }
                // Redis answers again: leave the local queue (nothing was taken from it) and
                // reserve a shared slot, so local and shared admissions do not overlap.
                _ = &mut shared_again => {}
            }
        }
    }

    fn paused_until(&self, provider: &str, action: &str) -> Option<Instant> {
        let spec = self.inner.buckets.get(provider, action)?;
        let until = (*self.inner.paused[&spec.key]
            .lock()
            .unwrap_or_else(|p| p.into_inner()))?;
        (until > Instant::now()).then_some(until)
    }

    fn max_lateness(&self, provider: &str, action: &str) -> Duration {
        self.inner
            .buckets
            .get(provider, action)
            .map(|s| s.jitter_margin)
            .filter(|m| !m.is_zero())
            .unwrap_or(Duration::MAX)
    }

    async fn throttled(&self, provider: &str, action: &str) {
        let inner = &self.inner;
        let Some(spec) = inner.buckets.get(provider, action) else {
            warn!(provider, action, "provider answered throttled");
            return;
        };
        let bucket = spec.label();
        metrics::counter!("kycq_ratelimit_throttled_total", "bucket" => bucket.clone())
            .increment(1);
        inner.local(spec).hold_until(Instant::now() + spec.cooldown);
        inner.note_paused(spec, Instant::now() + spec.cooldown);
        if !inner.fallback.load(Ordering::SeqCst) {
            match inner.script(spec, "pause").await.as_deref() {
                Ok(&[_, share_ppm]) => {
                    let share = share_ppm as f64 / 1e6;
                    metrics::gauge!("kycq_ratelimit_rate_share", "bucket" => bucket.clone())
                        .set(share);
                    warn!(
                        bucket,
                        cooldown_ms = spec.cooldown.as_millis() as u64,
                        rate_share = share,
                        rate_per_sec = spec.rate.per_sec * share,
                        "provider answered throttled: shared bucket paused for every worker"
                    );
                    return;
                }
                Ok(other) => {
                    metrics::counter!("kycq_ratelimit_redis_errors_total").increment(1);
                    Inner::enter_fallback(inner, &Unavailable::Reply(other.to_vec()));
                }
                Err(e) => {
                    metrics::counter!("kycq_ratelimit_redis_errors_total").increment(1);
                    Inner::enter_fallback(inner, e);
                }
            }
        }
        warn!(
            bucket,
            cooldown_ms = spec.cooldown.as_millis() as u64,
            "provider answered throttled: this worker's fallback bucket paused"
        );
    }
}
