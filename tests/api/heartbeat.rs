//! Workers announce themselves in Postgres: a started worker's row is alive within a few beats,
//! shows a provider's circuit open (and why) after a provider-wide failure, and is marked
//! stopped after a clean stop. No personal data in the row.

use std::time::Duration;

use kycq::check::OutcomeClass;
use kycq::providers::registry::CircuitStatus;
use kycq::sandbox::scenarios::{identity, Scenario};
use kycq::store::{self, WorkerRow};

use crate::helpers::{mobile3, Options, TestApp};

const T: Duration = Duration::from_secs(30);
/// Three beats of `worker.heartbeat_secs = 1`.
const ALIVE_WITHIN: Duration = Duration::from_secs(3);

/// Poll the table until `ok` holds for the rows (or fail at the deadline, showing them).
async fn wait_for(app: &TestApp, what: &str, ok: impl Fn(&[WorkerRow]) -> bool) -> Vec<WorkerRow> {
    let deadline = tokio::time::Instant::now() + T;
    loop {
        // Before the worker's migrations ran, the table may not exist yet.
        let rows = store::workers(app.db().await, ALIVE_WITHIN)
            .await
            .unwrap_or_default();
        if ok(&rows) {
            return rows;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{what}: not within {T:?}: {rows:#?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test]
async fn a_worker_heartbeats_its_circuits_and_says_when_it_stopped() {
    let mut app = TestApp::with(Options {
        env: vec![
            ("KYCQ__WORKER__HEARTBEAT_SECS".into(), "1".into()),
            // Open for longer than the test: the circuit stays open once tripped.
            (
                "KYCQ__PROVIDERS__TENCENT__CIRCUIT_COOLDOWN_SECS".into(),
                "600".into(),
            ),
        ],
        ..Options::default()
    })
    .await;
    assert_eq!(app.settings.worker.alive_within(), ALIVE_WITHIN);
    app.start_worker().await;

    let rows = wait_for(&app, "an alive, consuming worker", |rows| {
        rows.len() == 1 && rows[0].alive && rows[0].consuming
    })
    .await;
    let w = &rows[0];
    assert_eq!(w.stopped_at, None);
    assert_eq!(w.pid, std::process::id() as i32);
    assert_eq!(w.version, env!("CARGO_PKG_VERSION"));
    assert_eq!(w.concurrency, app.settings.worker.concurrency as i32);
    assert!(w.in_flight >= 0 && w.heartbeat_at >= w.started_at, "{w:?}");
    let tencent = w.providers.iter().find(|p| p.provider == "tencent");
    assert_eq!(
        tencent.map(|p| (p.circuit, p.why.is_none())),
        Some((CircuitStatus::Closed, true)),
        "{w:?}"
    );
    // Its heartbeats go on.
    let first = w.heartbeat_at;
    wait_for(&app, "a later heartbeat", |rows| {
        rows.len() == 1 && rows[0].alive && rows[0].heartbeat_at > first
    })
    .await;

    // A provider-wide failure (the account in arrears) opens tencent's circuit.
    let who = identity(Scenario::ProviderWide, 7);
    app.publish(&mobile3(&who)).await;
    let rows = wait_for(&app, "tencent's circuit open with a why", |rows| {
        rows.len() == 1
            && rows[0].providers.iter().any(|p| {
                p.provider == "tencent" && p.circuit == CircuitStatus::Open && p.why.is_some()
            })
    })
    .await;
    let w = &rows[0];
    assert!(w.alive, "{w:?}");
    let p = w
        .providers
        .iter()
        .find(|p| p.provider == "tencent")
        .unwrap();
    let why = p.why.as_ref().unwrap();
    assert_eq!(why.class, OutcomeClass::ProviderWide, "{why:?}");
    assert!(!why.code.is_empty() && why.code != "-", "{why:?}");
    assert!(
        p.open_until.is_some_and(|u| u > chrono::Utc::now()),
        "{p:?}"
    );
    assert!(p.closes_in_secs.is_some_and(|s| s > 0 && s <= 600), "{p:?}");
    // The console's merge: open on 1 of 1 workers, with that why.
    let merged = store::merge_providers(&rows);
    let t = merged.iter().find(|s| s.provider == "tencent").unwrap();
    assert_eq!(
        (t.circuit, t.open_on, t.workers),
        (CircuitStatus::Open, 1, 1)
    );
    assert_eq!(t.why.as_ref(), Some(why));
    assert!(
        t.describe().starts_with("open on 1 of 1 workers"),
        "{}",
        t.describe()
    );
    // Codes only: nothing of the person checked.
    let raw: String = sqlx::query_scalar("SELECT providers::text FROM workers")
        .fetch_one(app.db().await)
        .await
        .unwrap();
    for personal in [&who.name, &who.id_number, &who.mobile] {
        assert!(!raw.contains(personal.as_str()), "{raw}");
    }

    // A clean stop marks the row stopped: no longer alive.
    app.stop_workers().await;
    let rows = store::workers(app.db().await, ALIVE_WITHIN).await.unwrap();
    assert_eq!(rows.len(), 1, "{rows:?}");
    assert!(rows[0].stopped_at.is_some(), "{:?}", rows[0]);
    assert!(!rows[0].alive && !rows[0].consuming, "{:?}", rows[0]);
    assert!(store::merge_providers(&rows).is_empty());
    app.cleanup().await;
}
