//! kycq's own failures through the real pipeline: a message Postgres refuses is dead-lettered
//! (never retried, never holding a slot), and a configuration the broker or Postgres refuses
//! stops the worker at start with exit code 2 naming the key.

use std::time::Duration;

use kycq::check::{ReasonCode, Status};
use kycq::sandbox::scenarios::{identity, Scenario};

use crate::helpers::{mobile3, TestApp};

const T: Duration = Duration::from_secs(30);

#[tokio::test]
async fn messages_postgres_refuses_are_dead_lettered_and_never_stall_the_worker() {
    let mut app = TestApp::new().await;
    app.start_worker().await;
    // More refused messages than the worker has slots (concurrency 16): before, each held its
    // slot forever, retried until shutdown.
    let n = 20;
    for i in 0..n {
        let mut m = mobile3(&identity(Scenario::Match, 10 + i));
        m.name = format!("\u{0}{}", m.name);
        app.publish(&m).await;
    }
    let ok = mobile3(&identity(Scenario::Match, 1));
    app.publish(&ok).await;
    let r = app.result_of(&ok.request_id).await;
    assert_eq!(
        (r.status, r.reason_code),
        (Status::Completed, ReasonCode::Match)
    );
    let dead = app.wait_dead_letters(n as usize, T).await;
    assert_eq!(dead.len(), n as usize, "{dead:?}");
    for (info, _) in &dead {
        assert_eq!(info.reason, "unstorable", "{info:?}");
        let detail = info.detail.as_deref().unwrap_or_default();
        assert!(detail.contains("SQLSTATE"), "{detail}");
        assert!(info.request_id.is_some(), "{info:?}");
    }
    // Nothing else was answered: a refused message gets no result.
    app.assert_no_result_within(Duration::from_millis(500))
        .await;
    app.cleanup().await;
}

/// Runs `kycq worker` with `extra` settings and returns its exit code and stderr.
async fn worker_exit(app: &TestApp, extra: &[(&str, &str)]) -> (Option<i32>, String) {
    let (mut child, log) = app.spawn_worker_process(extra);
    let deadline = tokio::time::Instant::now() + T;
    let code = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status.code();
        }
        if tokio::time::Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let text = std::fs::read_to_string(&log).unwrap_or_default();
    let _ = std::fs::remove_file(&log);
    (code, text)
}

#[tokio::test]
async fn a_configuration_the_broker_or_postgres_refuses_stops_the_worker_naming_the_key() {
    let app = TestApp::new().await;
    let cases: &[(&[(&str, &str)], &str)] = &[
        (
            &[(
                "KYCQ__AMQP__URL",
                "amqp://guest:wrong-password@127.0.0.1:5672/%2f",
            )],
            "KYCQ__AMQP__URL",
        ),
        (
            &[(
                "KYCQ__AMQP__URL",
                "amqp://guest:guest@127.0.0.1:5672/no-such-vhost",
            )],
            "KYCQ__AMQP__URL",
        ),
        (
            &[(
                "KYCQ__DATABASE__URL",
                "postgres://no_such_role@127.0.0.1:5432/postgres",
            )],
            "KYCQ__DATABASE__URL",
        ),
        (
            &[
                (
                    "KYCQ__DATABASE__URL",
                    "postgres://postgres@127.0.0.1:5432/kycq_no_such_database",
                ),
                ("KYCQ__DATABASE__CREATE_IF_MISSING", "false"),
            ],
            "KYCQ__DATABASE__URL",
        ),
    ];
    for (extra, key) in cases {
        let (code, log) = worker_exit(&app, extra).await;
        assert_eq!(code, Some(2), "{extra:?}: {log}");
        assert!(log.contains(key), "{extra:?} does not name {key}: {log}");
        assert!(
            !log.contains("wrong-password"),
            "the password is never printed: {log}"
        );
    }
    app.cleanup().await;
}
