//! Wiring: settings → store, providers, limiter, processor, HTTP endpoint → a running worker.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::configuration::{env_name, ConfigError, Settings};
use crate::fault::{self, FaultClass, INFRA_BACKOFF};
use crate::ops::http::{Health, Startup};
use crate::providers::Registry;
use crate::ratelimit::{Fleet, RedisLimiter};
use crate::retry::RetryPolicy;
use crate::store;
use crate::worker::heartbeat::{self, Heartbeat};
use crate::worker::{self, ConsumerConfig, Processor, WorkerError, WorkerState};

/// A worker running in this process.
pub struct RunningWorker {
    /// Where `/healthz`, `/readyz`, `/metrics` answer (None when disabled).
    pub http_addr: Option<SocketAddr>,
    /// The worker's identity.
    pub worker_id: String,
    /// Its row in the `workers` table (the worker's identity, made unique per process).
    pub heartbeat_id: String,
    /// Finishes when the worker has drained after `shutdown`.
    pub task: tokio::task::JoinHandle<Result<(), WorkerError>>,
}

/// Connect everything and start consuming. The HTTP endpoint listens first (`/readyz` says what
/// start-up still waits for); returns once the store is migrated; the consumer connects (and
/// reconnects) in the background.
pub async fn start_worker(
    settings: &Settings,
    shutdown: CancellationToken,
) -> anyhow::Result<RunningWorker> {
    let pii_key = settings.pii_key()?.clone();
    let worker_id = settings.worker_id();
    let (registry, notes) = Registry::from_settings(settings)?;
    for n in &notes {
        warn!("{n}");
    }
    info!(providers = ?registry.provider_names(), "providers configured");
    let registry = Arc::new(registry);
    let state = Arc::new(WorkerState::default());
    let startup = Arc::new(Startup::default());
    // The endpoint answers from the first second; a start that fails takes it down with it.
    let http_stop = shutdown.child_token();
    let http_guard = http_stop.clone().drop_guard();
    let http_addr = if settings.http.listen.is_empty() {
        None
    } else {
        let addr: SocketAddr = settings.http.listen.parse().context("http.listen")?;
        let health = Health {
            worker: state.clone(),
            startup: startup.clone(),
            registry: registry.clone(),
        };
        Some(
            crate::ops::http::serve(addr, health, http_stop)
                .await
                .with_context(|| format!("cannot listen on http.listen = {addr}"))?,
        )
    };
    let store = connect_store_reporting(settings, &shutdown, |why| startup.waiting_for(why))
        .await?
        .with_group_commit(settings.database.group_commit());
    startup.connected(store.clone());
    let limiter = RedisLimiter::from_settings(settings)
        .await
        .context("redis.url")?;
    // While Redis is away each worker's share follows the fleet its heartbeats count.
    let fleet = Arc::new(Fleet::new(
        settings.worker.heartbeat(),
        heartbeat::beat_timeout(settings.worker.heartbeat()),
    ));
    limiter.attach_fleet(fleet.clone());
    let processor = Arc::new(Processor {
        store: store.clone(),
        registry: registry.clone(),
        limiter: Arc::new(limiter),
        policy: RetryPolicy::from_settings(&settings.retry),
        worker_id: worker_id.clone(),
        lease: settings.worker.lease(),
        pii_key,
        max_body_bytes: settings.worker.max_body_bytes,
        wait: settings.worker.wait_policy(),
        leases: Default::default(),
    });
    let heartbeat_id = heartbeat::row_id(&settings.worker.id, &worker_id);
    let heartbeat = Heartbeat::start(
        &settings.database,
        settings.worker.heartbeat(),
        settings.worker.alive_within(),
        heartbeat::Identity::of_this_process(heartbeat_id.clone(), settings.worker.concurrency),
        registry.clone(),
        state.clone(),
        fleet,
    )
    .context("database.url")?;
    http_guard.disarm();
    let cfg = ConsumerConfig {
        amqp_urls: settings.amqp.nodes(),
        names: settings.topology.names(),
        prefetch: settings.amqp.prefetch,
        delivery_limit: settings.amqp.delivery_limit,
        concurrency: settings.worker.concurrency,
        shutdown_grace: settings.worker.shutdown_grace(),
        confirm_timeout: Duration::from_secs(settings.amqp.confirm_timeout_secs),
        call_timeout: Duration::from_millis(
            settings
                .providers
                .all()
                .map(|(_, p)| p.timeout_ms)
                .max()
                .unwrap_or(0),
        ),
    };
    info!(worker_id = %worker_id, heartbeat_id = %heartbeat_id, http = ?http_addr, "worker starting");
    let task = tokio::spawn(async move {
        let result = worker::run(cfg, processor, state, shutdown).await;
        // Drained (or stopped for good): the row says so.
        heartbeat.stop().await;
        result
    });
    Ok(RunningWorker {
        http_addr,
        worker_id,
        heartbeat_id,
        task,
    })
}

/// Connect to Postgres (creating and migrating the database), retrying while it is down with
/// the shared backoff. A misconfiguration (the role or password refused, no such database,
/// missing privileges, failed migrations) stops at once with a [`ConfigError`] naming
/// `database.url` (exit code 2).
pub async fn connect_store_with_retry(
    settings: &Settings,
    shutdown: &CancellationToken,
) -> anyhow::Result<store::Store> {
    connect_store_reporting(settings, shutdown, |_| {}).await
}

/// [`connect_store_with_retry`], telling `waiting` why each attempt failed (for `/readyz`).
async fn connect_store_reporting(
    settings: &Settings,
    shutdown: &CancellationToken,
    waiting: impl Fn(String),
) -> anyhow::Result<store::Store> {
    let mut delays = INFRA_BACKOFF.delays(None);
    loop {
        let e = match store::connect_and_migrate(&settings.database).await {
            Ok(s) => return Ok(s),
            Err(e) => e,
        };
        if let FaultClass::Misconfigured { key } = fault::classify_store(&e) {
            return Err(ConfigError::Invalid {
                key: key.to_owned(),
                env: env_name(key),
                reason: format!("Postgres refuses it: {e}"),
            }
            .into());
        }
        let delay = delays.next().unwrap_or(INFRA_BACKOFF.max);
        waiting(format!(
            "postgres: not reachable yet at database.url ({}): {e}; retrying",
            env_name("database.url")
        ));
        warn!(error = %e, retry_in_ms = delay.as_millis() as u64, "postgres unavailable; retrying");
        tokio::select! {
            _ = shutdown.cancelled() => anyhow::bail!("stopped while waiting for postgres"),
            _ = tokio::time::sleep(delay) => {}
        }
    }
}
