//! Real `kycq worker` processes: SIGTERM mid-batch, SIGKILL mid-call, bad configuration, a
//! conflicting topology, and personal data in logs, results and rows.

use std::collections::BTreeSet;
use std::process::Child;
use std::time::Duration;

use kycq::check::{Billed, ReasonCode, Status};
use kycq::sandbox::scenarios::{identity, Scenario};
use kycq::sandbox::SandboxSettings;
use lapin::options::QueueDeclareOptions;
use lapin::types::{AMQPValue, FieldTable};

use crate::helpers::{captured_logs, mobile3, Options, TestApp};

pub(crate) fn signal(child: &Child, sig: &str) {
    let ok = std::process::Command::new("kill")
        .args([sig, &child.id().to_string()])
        .status()
        .unwrap()
        .success();
    assert!(ok, "kill {sig}");
}

/// Wait for a child to exit, up to `timeout`.
pub(crate) async fn wait_exit(
    child: &mut Child,
    timeout: Duration,
) -> Option<std::process::ExitStatus> {
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        if let Some(s) = child.try_wait().unwrap() {
            return Some(s);
        }
        if tokio::time::Instant::now() > deadline {
            let _ = child.kill();
            return None;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn sigterm_during_a_batch_then_restart_every_request_ends_with_exactly_one_result() {
    let mut app = TestApp::with(Options {
        sandbox: SandboxSettings {
            listen: "127.0.0.1:0".parse().unwrap(),
            latency: Duration::from_millis(150),
            ..SandboxSettings::default()
        },
        env: vec![
            ("KYCQ__WORKER__CONCURRENCY".into(), "4".into()),
            ("KYCQ__AMQP__PREFETCH".into(), "4".into()),
        ],
        exclusive: false,
        amqp_urls: Vec::new(),
    })
    .await;
    let (mut worker, log) = app.spawn_worker_process(&[]);
    let mut ids = Vec::new();
    let mut people = Vec::new();
    for v in 0..40 {
        let who = identity(Scenario::Match, 200 + v);
        let m = mobile3(&who);
        app.publish(&m).await;
        ids.push(m.request_id.clone());
        people.push(who);
    }
    // Let part of the batch finish, then SIGTERM in the middle of it.
    let mut seen = BTreeSet::new();
    while seen.len() < 8 {
        let (_, r) = app
            .next_result(Duration::from_secs(30))
            .await
            .expect("results before SIGTERM");
        seen.insert(r.request_id);
    }
    signal(&worker, "-TERM");
    let status = wait_exit(&mut worker, Duration::from_secs(20))
        .await
        .expect("exits within the grace period");
    assert!(
        status.success(),
        "exit 0 after SIGTERM: {status:?}\n{}",
        std::fs::read_to_string(&log).unwrap()
    );
    let logs = std::fs::read_to_string(&log).unwrap();
    assert!(logs.contains("SIGTERM"), "{logs}");
    // The log went to a file, not a terminal: plain text, no ANSI colour codes.
    assert!(
        !logs.contains('\u{1b}'),
        "an escape code in a log file: {logs:?}"
    );
    assert!(seen.len() < 40, "SIGTERM came mid-batch");
    // A new worker finishes the rest.
    let (mut second, _log2) = app.spawn_worker_process(&[]);
    let remaining: Vec<String> = ids.iter().filter(|i| !seen.contains(*i)).cloned().collect();
    let got = app.results_for(&remaining, Duration::from_secs(60)).await;
    assert_eq!(got.len(), remaining.len());
    // Exactly one stored result per request, every one a match, billed once at the provider.
    let rows: Vec<(String, String, i32)> =
        sqlx::query_as("SELECT request_id, status, attempts FROM checks")
            .fetch_all(app.db().await)
            .await
            .unwrap();
    assert_eq!(rows.len(), 40);
    assert!(
        rows.iter().all(|(_, s, a)| s == "completed" && *a == 1),
        "{rows:?}"
    );
    for who in &people {
        assert_eq!(
            app.sandbox.ledger.calls_for_id(&who.id_number),
            1,
            "one call per identity"
        );
    }
    signal(&second, "-TERM");
    assert!(wait_exit(&mut second, Duration::from_secs(20))
        .await
        .unwrap()
        .success());
    app.cleanup().await;
}

#[tokio::test]
async fn a_worker_killed_mid_call_never_calls_again_on_redelivery() {
    let mut app = TestApp::with(Options {
        sandbox: SandboxSettings {
            listen: "127.0.0.1:0".parse().unwrap(),
            slow_delay: Duration::from_secs(3),
            ..SandboxSettings::default()
        },
        // The call outlives the kill; the next worker must not repeat it.
        env: vec![(
            "KYCQ__PROVIDERS__TENCENT__TIMEOUT_MS".into(),
            "10000".into(),
        )],
        exclusive: false,
        amqp_urls: Vec::new(),
    })
    .await;
    let (mut first, _log) = app.spawn_worker_process(&[]);
    let who = identity(Scenario::Slow, 300);
    let m = mobile3(&who);
    app.publish(&m).await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while app.sandbox.ledger.calls_for_id(&who.id_number) == 0 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the call never reached the sandbox"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    signal(&first, "-KILL");
    let _ = wait_exit(&mut first, Duration::from_secs(5)).await;
    // The broker redelivers; a new worker finds the journaled call in flight.
    let (mut second, _log2) = app.spawn_worker_process(&[]);
    let r = app.result_of(&m.request_id).await;
    assert_eq!(
        (r.status, r.reason_code, r.billed),
        (Status::Failed, ReasonCode::BillingUnknown, Billed::Unknown)
    );
    assert_eq!(
        app.sandbox.ledger.calls_for_id(&who.id_number),
        1,
        "the provider saw one call only"
    );
    let dead = app.wait_dead_letters(1, Duration::from_secs(10)).await;
    assert_eq!(dead[0].0.reason, "billing_unknown");
    let open: i64 =
        sqlx::query_scalar("SELECT count(*) FROM provider_calls WHERE finished_at IS NULL")
            .fetch_one(app.db().await)
            .await
            .unwrap();
    assert_eq!(open, 1, "the journal keeps the in-doubt call as it was");
    signal(&second, "-TERM");
    assert!(wait_exit(&mut second, Duration::from_secs(20))
        .await
        .unwrap()
        .success());
    app.cleanup().await;
}

#[tokio::test]
async fn a_bad_config_value_stops_the_worker_naming_the_key() {
    let app = TestApp::new().await;
    for (key, value, want) in [
        ("KYCQ__AMQP__PREFETCH", "lots", "amqp.prefetch"),
        (
            "KYCQ__WORKER__CONCURRENCY",
            "0",
            "KYCQ__WORKER__CONCURRENCY",
        ),
        ("KYCQ__ROUTES__MOBILE3", "tencent,acme", "routes.mobile3"),
        ("KYCQ__PII__KEY", "short", "KYCQ__PII__KEY"),
        ("KYCQ__DATABASE__URL", "mysql://x", "database.url"),
    ] {
        let (mut child, log) = app.spawn_worker_process(&[(key, value)]);
        let status = wait_exit(&mut child, Duration::from_secs(20))
            .await
            .expect("stops at start");
        let err = std::fs::read_to_string(&log).unwrap();
        assert!(!status.success(), "{key}={value} must stop the worker");
        assert!(
            err.contains(want),
            "{key}={value}: message must name {want}: {err}"
        );
    }
    app.cleanup().await;
}

#[tokio::test]
async fn a_conflicting_queue_stops_the_worker_naming_the_queue_and_argument() {
    let mut app = TestApp::new().await;
    // Re-declare the work queue as a classic queue without our arguments.
    let ch = app.conn.create_channel().await.unwrap();
    ch.queue_delete(app.names.work_queue.as_str().into(), Default::default())
        .await
        .unwrap();
    let mut args = FieldTable::default();
    args.insert("x-max-length".into(), AMQPValue::LongInt(10));
    ch.queue_declare(
        app.names.work_queue.as_str().into(),
        QueueDeclareOptions {
            durable: true,
            ..Default::default()
        },
        args,
    )
    .await
    .unwrap();
    let (mut child, log) = app.spawn_worker_process(&[]);
    let status = wait_exit(&mut child, Duration::from_secs(30))
        .await
        .expect("stops");
    let err = std::fs::read_to_string(&log).unwrap();
    assert!(!status.success());
    assert!(
        err.contains(&app.names.work_queue),
        "names the queue: {err}"
    );
    assert!(
        err.contains("x-queue-type")
            || err.contains("x-dead-letter-exchange")
            || err.contains("inequivalent arg"),
        "names the argument: {err}"
    );
    // It deleted nothing.
    let ch = app.conn.create_channel().await.unwrap();
    assert!(ch
        .queue_declare(
            app.names.work_queue.as_str().into(),
            QueueDeclareOptions {
                passive: true,
                ..Default::default()
            },
            FieldTable::default()
        )
        .await
        .is_ok());
    app.stop_workers().await;
    app.cleanup().await;
}

#[tokio::test]
async fn no_full_name_id_number_or_mobile_in_logs_results_rows_or_a_database_dump() {
    let mut app = TestApp::new().await;
    // Only the worker process consumes, at the most verbose filter kycq accepts (dependencies
    // still never log below info); the in-process worker runs only to be scanned afterwards.
    let (mut child, log) = app.spawn_worker_process(&[("RUST_LOG", "trace")]);
    let mut people = Vec::new();
    let mut ids = Vec::new();
    for (i, s) in [
        Scenario::Match,
        Scenario::NameMismatch,
        Scenario::Busy,
        Scenario::Slow,
        Scenario::UnknownCode,
        Scenario::NoRecord,
    ]
    .into_iter()
    .enumerate()
    {
        let mut who = identity(s, 400 + i as u32);
        who.name = format!(
            "{}{}",
            who.name,
            ["欧阳", "司马", "上官", "诸葛", "东方", "慕容"][i]
        );
        let m = mobile3(&who);
        app.publish(&m).await;
        ids.push(m.request_id.clone());
        people.push(who);
    }
    // Also a rejected one (bad mobile) and a malformed one carrying personal data.
    let mut bad = identity(Scenario::Match, 499);
    bad.name = "皇甫嵩嵩".into();
    let mut m = mobile3(&bad);
    m.mobile = Some("19412345678".into());
    app.publish(&m).await;
    ids.push(m.request_id.clone());
    people.push(kycq::sandbox::scenarios::TestIdentity {
        mobile: "19412345678".into(),
        ..bad.clone()
    });
    app.publish_raw(
        "check.mobile3",
        format!(
            "{{\"name\":\"{}\",\"id_number\":\"{}\"",
            bad.name, bad.id_number
        )
        .as_bytes(),
        Default::default(),
    )
    .await;
    let results = app.results_for(&ids, Duration::from_secs(60)).await;
    signal(&child, "-TERM");
    wait_exit(&mut child, Duration::from_secs(20)).await;
    app.stop_workers().await;

    let process_log = std::fs::read_to_string(&log).unwrap();
    let _ = std::fs::remove_file(&log);
    let mut haystacks = vec![
        ("in-process logs", captured_logs()),
        (
            "byte arrays in the process logs, decoded",
            decoded_byte_arrays(&process_log),
        ),
        ("process logs", process_log),
    ];
    haystacks.push(("metrics", kycq::telemetry::metrics_handle().render()));
    let dead: Vec<String> = app
        .dead_letters()
        .await
        .iter()
        .map(|(d, _)| format!("{d:?}"))
        .collect();
    assert!(!dead.is_empty());
    haystacks.push(("dead-letter headers", dead.join("\n")));
    haystacks.push(("results", serde_json::to_string(&results).unwrap()));
    let checks: Vec<String> = sqlx::query_scalar("SELECT row_to_json(c)::text FROM checks c")
        .fetch_all(app.db().await)
        .await
        .unwrap();
    let calls: Vec<String> =
        sqlx::query_scalar("SELECT row_to_json(p)::text FROM provider_calls p")
            .fetch_all(app.db().await)
            .await
            .unwrap();
    assert!(!checks.is_empty() && !calls.is_empty());
    haystacks.push(("checks rows", checks.join("\n")));
    // The whole database as an operator's backup would hold it (every table, index and sequence).
    let dump = std::process::Command::new("pg_dump")
        .args(["-h", "127.0.0.1", "-U", "postgres", "--no-password"])
        .arg(&app.db_name)
        .output()
        .expect("pg_dump runs");
    assert!(
        dump.status.success(),
        "pg_dump: {}",
        String::from_utf8_lossy(&dump.stderr)
    );
    let dump = String::from_utf8(dump.stdout).expect("a UTF-8 dump");
    assert!(dump.contains("COPY public.checks") && dump.contains(&ids[0]));
    haystacks.push(("pg_dump", dump));
    haystacks.push(("provider_calls rows", calls.join("\n")));
    haystacks.push((
        "sandbox ledger",
        serde_json::to_string(&app.sandbox.ledger.entries()).unwrap(),
    ));
    for who in &people {
        for (what, hay) in &haystacks {
            for secret in [&who.name, &who.id_number, &who.mobile] {
                assert!(
                    !hay.contains(secret.as_str()),
                    "{what} holds a plaintext value"
                );
            }
        }
    }
    // Nor a secret: the PII key and a provider's key.
    let provider_key = kycq::providers::tencent::SANDBOX_SECRET_KEY;
    for (what, hay) in &haystacks {
        for secret in [crate::helpers::PII_KEY, provider_key] {
            assert!(!hay.contains(secret), "{what} holds a secret");
        }
    }
    // The masked forms are there (the check can fail: logs do mention subjects).
    let masked = kycq::check::mask::mask_id_number(&people[0].id_number);
    let process_log = &haystacks
        .iter()
        .find(|(w, _)| *w == "process logs")
        .unwrap()
        .1;
    assert!(
        process_log.contains(&masked),
        "the worker logs masked subjects"
    );
    app.cleanup().await;
}

/// Every run of 8 or more decimal byte values in brackets (`[50, 51, ...]`, as some crates
/// log payloads) decoded as text, one per line: a plain search misses them.
fn decoded_byte_arrays(log: &str) -> String {
    let mut out = String::new();
    for part in log.split('[').skip(1) {
        let Some(inner) = part.split(']').next() else {
            continue;
        };
        let bytes: Option<Vec<u8>> = inner
            .split(',')
            .map(|n| n.trim().parse::<u8>().ok())
            .collect();
        if let Some(bytes) = bytes.filter(|b| b.len() >= 8) {
            out.push_str(&String::from_utf8_lossy(&bytes));
            out.push('\n');
        }
    }
    out
}
