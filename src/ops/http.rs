//! `/healthz` (the process is up), `/readyz` (consuming, Postgres answers, every enabled check has
//! a provider) and `/metrics` (Prometheus).

use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;

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
    /// Postgres.
    pub store: Store,
    /// Circuits.
    pub registry: Arc<Registry>,
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
    if !h.store.ping().await {
        reasons.push("postgres does not answer".to_string());
    }
    for c in h.registry.blocked_checks(tokio::time::Instant::now()) {
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
        Json(serde_json::json!({"ready": reasons.is_empty(), "reasons": reasons})),
    )
}
