//! `/healthz` (the process is up), `/readyz` (consuming, Postgres answers, every enabled check has
//! a provider, no provider refuses its credentials) and `/metrics` (Prometheus). The endpoint
//! is up from the first second of a worker's start: while Postgres is still being retried,
//! `/healthz` answers and `/readyz` says what is missing.

use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex, OnceLock};

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::routing::get;
use axum::{Json, Router};
use tokio_util::sync::CancellationToken;

use crate::providers::Registry;
use crate::store::Store;
use crate::worker::WorkerState;

/// What readiness looks at.
#[derive(Clone)]
pub struct Health {
    /// Consumer state.
    pub worker: Arc<WorkerState>,
    /// Postgres, once connected.
    pub startup: Arc<Startup>,
    /// Circuits and refused credentials.
    pub registry: Arc<Registry>,
}

/// What a starting worker has connected so far.
#[derive(Debug, Default)]
pub struct Startup {
    store: OnceLock<Store>,
    waiting: Mutex<Option<String>>,
}

impl Startup {
    /// Start-up is waiting for a dependency: why, naming the key (shown by `/readyz`).
    pub fn waiting_for(&self, why: String) {
        *self.waiting.lock().unwrap_or_else(|p| p.into_inner()) = Some(why);
    }

    /// Postgres is connected and migrated.
    pub fn connected(&self, store: Store) {
        let _ = self.store.set(store);
        *self.waiting.lock().unwrap_or_else(|p| p.into_inner()) = None;
    }

    /// The store, once connected.
    pub fn store(&self) -> Option<&Store> {
        self.store.get()
    }

    fn waiting(&self) -> Option<String> {
        self.waiting
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }
}

/// Serve until `shutdown`. Returns the bound address (port 0 picks one).
pub async fn serve(
    addr: SocketAddr,
    health: Health,
    shutdown: CancellationToken,
) -> std::io::Result<SocketAddr> {
    let listener = tokio::net::TcpListener::bind(addr).await?;
    let local = listener.local_addr()?;
    crate::telemetry::metrics_handle();
    let app = Router::new()
        .route("/healthz", get(|| async { "ok" }))
        .route("/readyz", get(readyz))
        .route(
            "/metrics",
            get(|| async { crate::telemetry::metrics_handle().render() }),
        )
        .with_state(health);
    tokio::spawn(async move {
        let _ = axum::serve(listener, app)
            .with_graceful_shutdown(shutdown.cancelled_owned())
            .await;
    });
    Ok(local)
}

async fn readyz(State(h): State<Health>) -> impl IntoResponse {
    let mut reasons = Vec::new();
    if !h.worker.consuming.load(Ordering::SeqCst) {
        reasons.push("not consuming from RabbitMQ".to_string());
    }
    reasons.extend(h.worker.problems());
    match h.startup.store() {
        Some(store) => {
            if !store.ping().await {
                reasons.push("postgres does not answer".to_string());
            }
        }
        None => reasons.push(h.startup.waiting().unwrap_or_else(|| {
            "postgres: not connected yet (database.url, KYCQ__DATABASE__URL)".to_string()
        })),
    }
    let now = tokio::time::Instant::now();
    let mut warnings = Vec::new();
    for (message, out) in h.registry.refusals(now) {
        if out {
            reasons.push(message);
        } else {
            warnings.push(message);
        }
    }
    for c in h.registry.blocked_checks(now) {
        reasons.push(format!(
            "every provider of the {c} route has an open circuit"
        ));
    }
    let code = if reasons.is_empty() {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (
        code,
        Json(
            serde_json::json!({"ready": reasons.is_empty(), "reasons": reasons, "warnings": warnings}),
        ),
    )
}
