//! The worker announces itself in Postgres: its row in `workers` is written at start, refreshed
//! every `worker.heartbeat_secs` (host, pid, version, deliveries in flight, whether it consumes,
//! each provider's circuit and refusal) and marked `stopped_at` on a clean stop. The console
//! reads it ([`crate::store::workers`]).
//!
//! The heartbeat never stops or slows the worker: it has its own connection (a pool of one,
//! opened lazily, so it never waits for the hot path's connections nor holds one of them), it
//! only reads atomics and takes each circuit's lock for a copy, every beat is one statement
//! bounded by a timeout, and a beat that fails is skipped (logged at WARN once per outage).

use std::str::FromStr;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use secrecy::ExposeSecret;
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::PgPool;
use tokio::task::JoinHandle;
use tokio::time::{Instant, MissedTickBehavior};
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use super::WorkerState;
use crate::configuration::DatabaseSettings;
use crate::providers::Registry;
use crate::ratelimit::Fleet;
use crate::store::workers::{self as table, Beat};

/// How often a beat also deletes the rows of workers silent for 24 hours.
const PRUNE_EVERY: Duration = Duration::from_secs(3600);
/// Longest the last write (`stopped_at`) may delay the end of a stop.
const STOP_TIMEOUT: Duration = Duration::from_secs(5);

/// Who the worker is, for its row.
#[derive(Clone, Debug)]
pub struct Identity {
    /// The row's key ([`row_id`]).
    pub worker_id: String,
    /// Host name.
    pub host: String,
    /// Process id.
    pub pid: u32,
    /// kycq's version.
    pub version: String,
    /// When the worker started.
    pub started_at: DateTime<Utc>,
    /// Its slots (`worker.concurrency`).
    pub concurrency: usize,
}

impl Identity {
    /// This process, with `worker_id` as the row's key.
    pub fn of_this_process(worker_id: String, concurrency: usize) -> Identity {
        Identity {
            worker_id,
            host: host_name(),
            pid: std::process::id(),
            version: env!("CARGO_PKG_VERSION").to_owned(),
            started_at: Utc::now(),
            concurrency,
        }
    }
}

/// The key of this process's row: the worker's id when it was generated (host, pid and a
/// random part: unique per process); a configured `worker.id` may be shared by several
/// processes, so it gets `#` and a random part appended (as lease owners do).
pub fn row_id(configured_id: &str, worker_id: &str) -> String {
    if configured_id.is_empty() {
        worker_id.to_owned()
    } else {
        format!("{worker_id}#{:08x}", rand::random::<u32>())
    }
}

/// The machine's host name (`/proc/sys/kernel/hostname`, else `$HOSTNAME`, else `unknown`).
pub fn host_name() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .or_else(|| std::env::var("HOSTNAME").ok())
        .map(|h| h.trim().to_owned())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "unknown".to_owned())
}

/// A running heartbeat; [`Heartbeat::stop`] writes `stopped_at`.
#[derive(Debug)]
pub struct Heartbeat {
    stop: CancellationToken,
    task: JoinHandle<()>,
}

impl Heartbeat {
    /// Start beating every `every` on a connection of its own to `database` (opened lazily:
    /// this never waits for Postgres). The first beat is written at once. Each beat tells
    /// `fleet` how many workers are alive (a heartbeat less than `alive_within` old).
    pub fn start(
        database: &DatabaseSettings,
        every: Duration,
        alive_within: Duration,
        me: Identity,
        registry: Arc<Registry>,
        state: Arc<WorkerState>,
        fleet: Arc<Fleet>,
    ) -> Result<Heartbeat, sqlx::Error> {
        let timeout = beat_timeout(every);
        let opts = PgConnectOptions::from_str(database.url.expose_secret())?
            .application_name("kycq heartbeat");
        let pool = PgPoolOptions::new()
            .max_connections(1)
            .min_connections(0)
            .acquire_timeout(timeout)
            .connect_lazy_with(opts);
        let stop = CancellationToken::new();
        let beats = Beats {
            every,
            alive_within,
            fleet,
        };
        let task = tokio::spawn(run(pool, beats, me, registry, state, stop.clone()));
        Ok(Heartbeat { stop, task })
    }

    /// Stop beating and mark the row stopped (waiting at most a few seconds for Postgres).
    pub async fn stop(self) {
        self.stop.cancel();
        let _ = self.task.await;
    }
}

/// Longest one beat may take: a beat that takes longer is abandoned (the next one tries again).
pub fn beat_timeout(every: Duration) -> Duration {
    every.clamp(Duration::from_secs(2), Duration::from_secs(10))
}

fn beat_of<'a>(
    me: &'a Identity,
    state: &WorkerState,
    providers: &'a [crate::providers::registry::ProviderState],
) -> Beat<'a> {
    Beat {
        worker_id: &me.worker_id,
        host: &me.host,
        pid: i32::try_from(me.pid).unwrap_or(i32::MAX),
        version: &me.version,
        started_at: me.started_at,
        concurrency: i32::try_from(me.concurrency).unwrap_or(i32::MAX),
        in_flight: i32::try_from(state.in_flight.load(Ordering::Relaxed)).unwrap_or(i32::MAX),
        consuming: state.consuming.load(Ordering::Relaxed),
        providers,
    }
}

/// How the beats go: their period, who counts as alive, and whom the count is told.
struct Beats {
    every: Duration,
    alive_within: Duration,
    fleet: Arc<Fleet>,
}

async fn run(
    pool: PgPool,
    Beats {
        every,
        alive_within,
        fleet,
    }: Beats,
    me: Identity,
    registry: Arc<Registry>,
    state: Arc<WorkerState>,
    stop: CancellationToken,
) {
    let timeout = beat_timeout(every);
    let mut ticker = tokio::time::interval(every);
    ticker.set_missed_tick_behavior(MissedTickBehavior::Delay);
    let mut failing = false;
    let mut pruned_at: Option<Instant> = None;
    loop {
        tokio::select! {
            biased;
            _ = stop.cancelled() => break,
            _ = ticker.tick() => {}
        }
        let prune = pruned_at.is_none_or(|t| t.elapsed() >= PRUNE_EVERY);
        let providers = registry.snapshot(Instant::now());
        let beat = beat_of(&me, &state, &providers);
        let written = tokio::select! {
            biased;
            _ = stop.cancelled() => break,
            r = tokio::time::timeout(timeout, table::beat(&pool, &beat, alive_within, prune)) => r,
        };
        let error = match written {
            Ok(Ok(live)) => {
                fleet.beat(live, Instant::now());
                if prune {
                    pruned_at = Some(Instant::now());
                }
                if failing {
                    failing = false;
                    info!(worker_id = %me.worker_id, "heartbeat written again");
                }
                continue;
            }
            Ok(Err(e)) => e.to_string(),
            Err(_) => format!("no answer within {} ms", timeout.as_millis()),
        };
        if !failing {
            failing = true;
            warn!(
                worker_id = %me.worker_id,
                error = %error,
                "heartbeat not written to Postgres (table workers); the worker goes on, \
                 heartbeats are skipped until Postgres answers"
            );
        }
    }
    let providers = registry.snapshot(Instant::now());
    let beat = beat_of(&me, &state, &providers);
    match tokio::time::timeout(STOP_TIMEOUT, table::stopped(&pool, &beat)).await {
        Ok(Ok(())) => {}
        Ok(Err(e)) => {
            warn!(worker_id = %me.worker_id, error = %e, "could not mark the worker stopped in Postgres (table workers)")
        }
        Err(_) => {
            warn!(worker_id = %me.worker_id, "could not mark the worker stopped in Postgres (table workers): no answer")
        }
    }
    pool.close().await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_configured_id_is_made_unique_per_process() {
        assert_eq!(row_id("", "host-42-0a1b"), "host-42-0a1b");
        let a = row_id("worker-a", "worker-a");
        let b = row_id("worker-a", "worker-a");
        assert!(
            a.starts_with("worker-a#") && a.len() == "worker-a#".len() + 8,
            "{a}"
        );
        assert_ne!(a, b);
        assert!(!host_name().is_empty());
        assert_eq!(beat_timeout(Duration::from_secs(1)), Duration::from_secs(2));
        assert_eq!(
            beat_timeout(Duration::from_secs(300)),
            Duration::from_secs(10)
        );
    }

    /// Postgres unreachable: the heartbeat starts without waiting, keeps trying, and its stop
    /// (the `stopped_at` write failing too) ends promptly.
    #[tokio::test]
    async fn a_postgres_that_does_not_answer_neither_blocks_the_start_nor_the_stop() {
        let env = [(
            "KYCQ__DATABASE__URL".to_owned(),
            "postgres://postgres@127.0.0.1:1/kycq".to_owned(),
        )]
        .into_iter()
        .collect();
        let settings = crate::configuration::Settings::load_with(
            std::path::Path::new("config"),
            None,
            Some(env),
        )
        .unwrap();
        let registry = Arc::new(Registry::new(Vec::new(), &[]));
        let state = Arc::new(WorkerState::default());
        let began = std::time::Instant::now();
        let fleet = Arc::new(Fleet::new(Duration::from_secs(1), Duration::from_secs(2)));
        let hb = Heartbeat::start(
            &settings.database,
            Duration::from_secs(1),
            Duration::from_secs(3),
            Identity::of_this_process("unreachable-test".into(), 1),
            registry,
            state,
            fleet.clone(),
        )
        .unwrap();
        tokio::time::sleep(Duration::from_millis(2500)).await;
        hb.stop().await;
        assert_eq!(fleet.view(), None, "no beat written, no count");
        assert!(
            began.elapsed() < Duration::from_millis(2500) + STOP_TIMEOUT + Duration::from_secs(1),
            "{:?}",
            began.elapsed()
        );
    }
}
