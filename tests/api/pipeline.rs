//! The pipeline end to end with in-process workers: RabbitMQ → validation → Postgres → the
//! Tencent sandbox → the result exchange.

use std::time::Duration;

use kycq::check::{Billed, ReasonCode, Status, Verdict};
use kycq::sandbox::scenarios::{identity, Scenario};
use lapin::options::QueueDeclareOptions;
use lapin::types::FieldTable;
use lapin::BasicProperties;
use sqlx::Row;

use crate::helpers::{mobile3, unique, TestApp};

const T: Duration = Duration::from_secs(30);

#[tokio::test]
async fn a_request_flows_to_one_result_on_the_exchange_and_in_postgres() {
    let mut app = TestApp::new().await;
    app.start_worker().await;
    let who = identity(Scenario::Match, 1);
    let m = mobile3(&who);
    app.publish(&m).await;
    let (rk, r) = app.next_result(T).await.expect("a result");
    assert_eq!(rk, "result.mobile3.completed");
    assert_eq!(r.request_id, m.request_id);
    assert_eq!(
        (r.status, r.verdict, r.reason_code, r.billed),
        (
            Status::Completed,
            Some(Verdict::Match),
            ReasonCode::Match,
            Billed::Yes
        )
    );
    assert_eq!(r.provider.as_deref(), Some("tencent"));
    assert_eq!(r.provider_code.as_deref(), Some("0"));
    assert!(r.provider_request_id.is_some());
    assert_eq!(r.attempts, 1);
    assert!(r.carrier.is_some());
    assert_eq!(
        r.subject.id_number.as_deref(),
        Some(kycq::check::mask::mask_id_number(&who.id_number).as_str())
    );
    assert!(r.completed_at >= r.received_at);

    // The stored row is exactly the published result.
    let row = sqlx::query("SELECT * FROM checks WHERE request_id = $1")
        .bind(&m.request_id)
        .fetch_one(app.db().await)
        .await
        .unwrap();
    let stored: serde_json::Value = row.get("result");
    assert_eq!(stored, serde_json::to_value(&r).unwrap());
    assert_eq!(row.get::<String, _>("status"), "completed");
    assert_eq!(row.get::<String, _>("verdict"), "match");
    assert_eq!(row.get::<String, _>("reason_code"), "match");
    assert_eq!(row.get::<String, _>("billed"), "yes");
    assert_eq!(row.get::<String, _>("check_kind"), "mobile3");
    assert_eq!(row.get::<i32, _>("attempts"), 1);
    assert_eq!(row.get::<Option<String>, _>("lease_owner"), None);
    let fp: String = row.get("subject_fingerprint");
    assert_eq!(fp.len(), 64);
    assert_ne!(
        fp,
        kycq::providers::signing::sha256_hex(who.id_number.as_bytes()),
        "keyed, not a bare hash"
    );
    // The call journal: one row, completed, billed.
    let calls = sqlx::query("SELECT * FROM provider_calls WHERE request_id = $1")
        .bind(&m.request_id)
        .fetch_all(app.db().await)
        .await
        .unwrap();
    assert_eq!(calls.len(), 1);
    let c = &calls[0];
    assert_eq!(c.get::<String, _>("provider"), "tencent");
    assert_eq!(c.get::<String, _>("action"), "PhoneVerification");
    assert_eq!(c.get::<String, _>("outcome"), "verdict");
    assert_eq!(c.get::<String, _>("billed"), "yes");
    assert_eq!(c.get::<Option<i32>, _>("http_status"), Some(200));
    assert!(c
        .get::<Option<chrono::DateTime<chrono::Utc>>, _>("finished_at")
        .is_some());
    assert_eq!(app.sandbox.ledger.calls_for_id(&who.id_number), 1);
    app.cleanup().await;
}

#[tokio::test]
async fn a_client_with_reply_to_gets_its_result_with_its_correlation_id() {
    let mut app = TestApp::new().await;
    app.start_worker().await;
    let mut replies = kycq::ops::enqueue::ReplyQueue::open(&app.conn)
        .await
        .unwrap();
    let m = mobile3(&identity(Scenario::NameMismatch, 2));
    let corr = format!("corr-{}", unique());
    let props = BasicProperties::default()
        .with_content_type("application/json".into())
        .with_reply_to(replies.name().into())
        .with_correlation_id(corr.as_str().into());
    app.publish_raw("check.mobile3", &serde_json::to_vec(&m).unwrap(), props)
        .await;
    let d = replies.next_delivery(T).await.expect("a reply");
    assert_eq!(
        d.properties.correlation_id().as_ref().map(|c| c.as_str()),
        Some(corr.as_str())
    );
    let r: kycq::check::CheckResult = serde_json::from_slice(&d.data).unwrap();
    assert_eq!(r.request_id, m.request_id);
    assert_eq!(
        (r.status, r.reason_code),
        (Status::Completed, ReasonCode::NameMismatch)
    );
    app.cleanup().await;
}

#[tokio::test]
async fn the_same_request_id_twice_reaches_the_provider_once() {
    let mut app = TestApp::new().await;
    app.start_worker().await;
    let who = identity(Scenario::Match, 3);
    let m = mobile3(&who);
    app.publish(&m).await;
    app.publish(&m).await;
    let mut got = Vec::new();
    while got.len() < 2 {
        let (_, r) = app.next_result(T).await.expect("two results");
        got.push(r);
    }
    assert_eq!(
        got[0], got[1],
        "the duplicate is answered with the identical stored result"
    );
    assert_eq!(app.sandbox.ledger.calls_for_id(&who.id_number), 1);
    // A third copy much later: still from the stored result.
    app.publish(&m).await;
    let (_, again) = app.next_result(T).await.unwrap();
    assert_eq!(again, got[0]);
    assert_eq!(app.sandbox.ledger.calls_for_id(&who.id_number), 1);
    let n: i64 = sqlx::query_scalar("SELECT count(*) FROM provider_calls")
        .fetch_one(app.db().await)
        .await
        .unwrap();
    assert_eq!(n, 1);
    app.cleanup().await;
}

#[tokio::test]
async fn a_message_that_is_not_json_is_dead_lettered_with_its_reason() {
    let mut app = TestApp::new().await;
    app.start_worker().await;
    let body = b"{this is not json".to_vec();
    app.publish_raw("check.mobile3", &body, BasicProperties::default())
        .await;
    app.publish_raw(
        "check.mobile3",
        br#"{"check":"mobile3"}"#,
        BasicProperties::default(),
    )
    .await;
    let dead = app.wait_dead_letters(2, T).await;
    assert_eq!(dead.len(), 2, "both dead-lettered: {dead:?}");
    let (info, kept) = dead
        .iter()
        .find(|(i, _)| i.reason == "not_json")
        .expect("not_json");
    assert_eq!(kept, &body, "the original body is kept");
    assert!(info.detail.as_deref().unwrap().contains("not valid JSON"));
    assert_eq!(info.routing_key, "check.mobile3");
    assert!(dead.iter().any(|(i, _)| i.reason == "no_request_id"));
    app.assert_no_result_within(Duration::from_millis(500))
        .await;
    // Nothing is left unacknowledged in the work queue.
    let ch = app.conn.create_channel().await.unwrap();
    let q = ch
        .queue_declare(
            app.names.work_queue.as_str().into(),
            QueueDeclareOptions {
                passive: true,
                ..Default::default()
            },
            FieldTable::default(),
        )
        .await
        .unwrap();
    assert_eq!(q.message_count(), 0);
    app.cleanup().await;
}

#[tokio::test]
async fn an_invalid_id_number_is_rejected_without_a_provider_call() {
    let mut app = TestApp::new().await;
    app.start_worker().await;
    let who = identity(Scenario::Match, 4);
    let mut m = mobile3(&who);
    let bad_check = if m.id_number.ends_with('1') { '2' } else { '1' };
    m.id_number.replace_range(17.., &bad_check.to_string());
    app.publish(&m).await;
    let (rk, r) = app.next_result(T).await.unwrap();
    assert_eq!(rk, "result.mobile3.rejected");
    assert_eq!(
        (r.status, r.verdict, r.reason_code, r.billed),
        (
            Status::Rejected,
            None,
            ReasonCode::InvalidIdNumber,
            Billed::No
        )
    );
    assert_eq!(r.attempts, 0);
    assert_eq!(r.provider, None);
    assert_eq!(r.provider_code, None);
    assert!(r.reason.contains("check character"), "{}", r.reason);
    assert!(app.sandbox.ledger.is_empty(), "no provider call");
    let calls: i64 = sqlx::query_scalar("SELECT count(*) FROM provider_calls")
        .fetch_one(app.db().await)
        .await
        .unwrap();
    assert_eq!(calls, 0);
    let status: String = sqlx::query_scalar("SELECT status FROM checks WHERE request_id = $1")
        .bind(&m.request_id)
        .fetch_one(app.db().await)
        .await
        .unwrap();
    assert_eq!(status, "rejected");
    app.cleanup().await;
}

/// Every Tencent Result code (and the error classes) through the real pipeline.
#[tokio::test]
async fn every_tencent_code_maps_to_status_verdict_reason_and_billing() {
    use ReasonCode as R;
    let mut app = TestApp::new().await;
    app.start_worker().await;
    type Row = (
        Scenario,
        Status,
        Option<Verdict>,
        ReasonCode,
        Billed,
        &'static str,
        u32,
    );
    #[rustfmt::skip]
    let table: Vec<Row> = vec![
        (Scenario::Match,                  Status::Completed, Some(Verdict::Match),        R::Match,                  Billed::Yes,     "0",   1),
        (Scenario::NameMismatch,           Status::Completed, Some(Verdict::Mismatch),     R::NameMismatch,           Billed::Yes,     "-4",  1),
        (Scenario::IdNumberMismatch,       Status::Completed, Some(Verdict::Mismatch),     R::IdNumberMismatch,       Billed::Yes,     "-4",  1),
        (Scenario::MobileOwnerMismatch,    Status::Completed, Some(Verdict::Mismatch),     R::MobileOwnerMismatch,    Billed::Yes,     "-4",  1),
        (Scenario::NameIdNumberMismatch,   Status::Completed, Some(Verdict::Mismatch),     R::NameIdNumberMismatch,   Billed::Yes,     "-4",  1),
        (Scenario::MismatchUnspecified,    Status::Completed, Some(Verdict::Mismatch),     R::MismatchUnspecified,    Billed::Yes,     "-4",  1),
        (Scenario::InvalidMobile,          Status::Completed, Some(Verdict::InvalidInput), R::InvalidMobile,          Billed::No,      "-6",  1),
        (Scenario::InvalidIdNumber,        Status::Completed, Some(Verdict::InvalidInput), R::InvalidIdNumber,        Billed::No,      "-7",  1),
        (Scenario::InvalidName,            Status::Completed, Some(Verdict::InvalidInput), R::InvalidName,            Billed::No,      "-8",  1),
        (Scenario::NoRecord,               Status::Completed, Some(Verdict::NotFound),     R::NoRecord,               Billed::No,      "-9",  1),
        (Scenario::Busy,                   Status::Failed,    None,                        R::RetriesExhausted,       Billed::No,      "-11", 4),
        (Scenario::BusyOnce,               Status::Completed, Some(Verdict::Match),        R::Match,                  Billed::Yes,     "0",   2),
        (Scenario::IdentityDailyLimit,     Status::Failed,    None,                        R::IdentityDailyLimit,     Billed::No,      "-12", 1),
        (Scenario::UnsupportedNumberRange, Status::Completed, Some(Verdict::Unsupported),  R::UnsupportedNumberRange, Billed::No,      "-13", 1),
        (Scenario::Throttled,              Status::Failed,    None,                        R::RetriesExhausted,       Billed::No,      "RequestLimitExceeded", 4),
        (Scenario::ThrottledOnce,          Status::Completed, Some(Verdict::Match),        R::Match,                  Billed::Yes,     "0",   2),
        (Scenario::InternalError,          Status::Failed,    None,                        R::RetriesExhausted,       Billed::No,      "InternalError", 4),
        (Scenario::Http500,                Status::Failed,    None,                        R::RetriesExhausted,       Billed::No,      "HTTP500", 4),
        (Scenario::Http500Once,            Status::Completed, Some(Verdict::Match),        R::Match,                  Billed::Yes,     "0",   2),
        (Scenario::UnknownCode,            Status::Failed,    None,                        R::UnknownProviderCode,    Billed::Unknown, "-99", 1),
        (Scenario::Slow,                   Status::Failed,    None,                        R::BillingUnknown,         Billed::Unknown, "",    1),
    ];
    let mut ids = Vec::new();
    let mut want = std::collections::BTreeMap::new();
    for (i, row) in table.iter().enumerate() {
        let who = identity(row.0, 100 + i as u32);
        let m = mobile3(&who);
        app.publish(&m).await;
        ids.push(m.request_id.clone());
        want.insert(m.request_id.clone(), (*row, who));
    }
    let got = app.results_for(&ids, Duration::from_secs(60)).await;
    for (id, results) in &got {
        let ((scenario, status, verdict, reason, billed, code, attempts), who) = &want[id];
        let r = &results[0];
        assert_eq!(
            (r.status, r.verdict, r.reason_code, r.billed),
            (*status, *verdict, *reason, *billed),
            "{scenario:?}"
        );
        if !code.is_empty() {
            assert_eq!(r.provider_code.as_deref(), Some(*code), "{scenario:?}");
        }
        assert_eq!(r.attempts, *attempts, "{scenario:?}");
        assert_eq!(
            app.sandbox.ledger.calls_for_id(&who.id_number) as u32,
            *attempts,
            "{scenario:?}: calls at the provider"
        );
        assert_eq!(
            r.routing_key(),
            format!("result.mobile3.{}", status.as_str())
        );
    }
    // retries_exhausted and billing_unknown are dead-lettered; nothing else is.
    let dead = app.wait_dead_letters(5, T).await;
    let mut reasons: Vec<String> = dead.iter().map(|(d, _)| d.reason.clone()).collect();
    reasons.sort();
    assert_eq!(
        reasons,
        vec![
            "billing_unknown",
            "retries_exhausted",
            "retries_exhausted",
            "retries_exhausted",
            "retries_exhausted"
        ]
    );
    // What the provider billed equals what kycq's results say was billed, plus the answer lost
    // to the timeout (the slow identity: billed at the provider, unknown to kycq).
    let billed_results = got.values().filter(|v| v[0].billed == Billed::Yes).count();
    assert_eq!(app.sandbox.ledger.billed_count(), billed_results + 1);
    app.cleanup().await;
}

#[tokio::test]
async fn a_provider_wide_failure_holds_requests_until_a_provider_can_answer() {
    let mut app = TestApp::new().await;
    // Wrong key: the sandbox refuses every call exactly as Tencent does.
    let bad = app
        .start_worker_with(&[("KYCQ__PROVIDERS__TENCENT__SECRET_KEY", "not-the-key")])
        .await;
    let who = identity(Scenario::Match, 5);
    let m = mobile3(&who);
    app.publish(&m).await;
    let deadline = tokio::time::Instant::now() + T;
    while app.sandbox.ledger.is_empty() && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let e = app.sandbox.ledger.entries();
    assert_eq!(e[0].code, "AuthFailure.SignatureFailure");
    assert!(!e[0].billed);
    // No result while no provider can answer: the request waits, unacknowledged.
    app.assert_no_result_within(Duration::from_secs(1)).await;
    bad.cancel();
    app.stop_workers().await;
    // A correctly configured worker picks it up: nothing was lost.
    app.start_worker().await;
    let r = app.result_of(&m.request_id).await;
    assert_eq!(
        (r.status, r.reason_code),
        (Status::Completed, ReasonCode::Match)
    );
    assert_eq!(app.sandbox.ledger.billed_count(), 1);
    app.cleanup().await;
}

#[tokio::test]
async fn dead_letters_can_be_listed_shown_masked_and_replayed() {
    let mut app = TestApp::new().await;
    app.start_worker().await;
    let who = identity(Scenario::Busy, 6);
    let m = mobile3(&who);
    app.publish(&m).await;
    let first = app.result_of(&m.request_id).await;
    assert_eq!(first.reason_code, ReasonCode::RetriesExhausted);
    let dead = app.wait_dead_letters(1, T).await;
    assert_eq!(dead.len(), 1);
    let (info, body) = &dead[0];
    assert_eq!(info.request_id.as_deref(), Some(m.request_id.as_str()));
    assert_eq!(info.reason, "retries_exhausted");
    assert_eq!(info.attempts.as_deref(), Some("4"));
    let shown = kycq::broker::dlq::masked_body(body);
    assert!(!shown.contains(&who.id_number) && !shown.contains(&who.mobile));
    // Replay: published (confirmed) to the request exchange, then removed from the DLQ; the
    // worker answers it from the stored result, without calling the provider again.
    let n = kycq::broker::dlq::replay(&app.conn, &app.publisher, &app.names, None)
        .await
        .unwrap();
    assert_eq!(n, 1);
    let again = app.result_of(&m.request_id).await;
    assert_eq!(again, first);
    assert!(app.dead_letters().await.is_empty());
    assert_eq!(app.sandbox.ledger.calls_for_id(&who.id_number), 4);
    app.cleanup().await;
}

#[tokio::test]
async fn health_readiness_and_metrics_answer() {
    let port = crate::helpers::free_port();
    let mut app = TestApp::with(crate::helpers::Options {
        env: vec![("KYCQ__HTTP__LISTEN".into(), format!("127.0.0.1:{port}"))],
        ..Default::default()
    })
    .await;
    app.start_worker().await;
    let m = mobile3(&identity(Scenario::Match, 7));
    app.publish(&m).await;
    app.result_of(&m.request_id).await;
    let base = format!("http://127.0.0.1:{port}");
    let http = reqwest::Client::new();
    assert_eq!(
        http.get(format!("{base}/healthz"))
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
    let ready = http.get(format!("{base}/readyz")).send().await.unwrap();
    assert_eq!(ready.status(), 200, "{:?}", ready.text().await);
    let metrics = http
        .get(format!("{base}/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    for name in [
        "kycq_checks_total",
        "kycq_provider_calls_total",
        "kycq_provider_call_seconds",
        "kycq_billed_calls_total",
    ] {
        assert!(metrics.contains(name), "{name} missing from /metrics");
    }
    app.cleanup().await;
}

fn masked(who: &kycq::sandbox::scenarios::TestIdentity) -> kycq::check::MaskedSubject {
    use kycq::check::mask::*;
    kycq::check::MaskedSubject {
        name: Some(mask_name(&who.name)),
        id_number: Some(mask_id_number(&who.id_number)),
        mobile: Some(mask_mobile(&who.mobile)),
    }
}

/// The result another worker stores for a request it holds.
fn their_result(
    request_id: &str,
    who: &kycq::sandbox::scenarios::TestIdentity,
) -> kycq::check::CheckResult {
    let now = chrono::Utc::now();
    kycq::check::CheckResult {
        request_id: request_id.to_owned(),
        check: Some(kycq::check::CheckKind::Mobile3),
        status: Status::Completed,
        verdict: Some(Verdict::Match),
        reason_code: ReasonCode::Match,
        reason: ReasonCode::Match.meaning().into(),
        billed: Billed::Yes,
        carrier: None,
        provider: Some("tencent".into()),
        provider_code: Some("0".into()),
        provider_request_id: Some("theirs".into()),
        attempts: 1,
        subject: masked(who),
        received_at: now,
        completed_at: now,
    }
}

#[tokio::test]
async fn a_request_a_live_worker_holds_is_answered_from_its_result_without_a_call() {
    let mut app = TestApp::new().await;
    app.start_worker().await;
    let store = kycq::store::Store::from_pool(app.db().await.clone());
    let who = identity(Scenario::Match, 8);
    let m = mobile3(&who);
    // Another (live) worker holds the request.
    let claim = store
        .claim(
            &m.request_id,
            kycq::check::CheckKind::Mobile3,
            &masked(&who),
            &fingerprint(&m),
            "other#1",
            Duration::from_secs(30),
            None,
        )
        .await
        .unwrap();
    assert!(matches!(claim, kycq::store::Claim::Claimed { .. }));
    app.publish(&m).await;
    app.assert_no_result_within(Duration::from_millis(1500))
        .await;
    assert!(
        app.sandbox.ledger.is_empty(),
        "no call while another worker holds it"
    );
    // The other worker finishes: its stored result is what this delivery is answered with.
    let theirs = their_result(&m.request_id, &who);
    store
        .complete(
            &theirs,
            Some(fingerprint(&m).as_str()),
            &kycq::store::Fence {
                owner: "other#1".into(),
                retry_round: 0,
            },
            None,
        )
        .await
        .unwrap()
        .expect("the other worker holds this run");
    let r = app.result_of(&m.request_id).await;
    assert_eq!(r.provider_request_id.as_deref(), Some("theirs"));
    assert!(app.sandbox.ledger.is_empty());
    app.cleanup().await;
}

#[tokio::test]
async fn a_dead_workers_lease_runs_out_and_the_request_is_taken_over() {
    let mut app = TestApp::new().await;
    app.start_worker().await;
    let store = kycq::store::Store::from_pool(app.db().await.clone());
    let who = identity(Scenario::Match, 9);
    let m = mobile3(&who);
    store
        .claim(
            &m.request_id,
            kycq::check::CheckKind::Mobile3,
            &masked(&who),
            &fingerprint(&m),
            "dead#1",
            Duration::from_secs(2),
            None,
        )
        .await
        .unwrap();
    app.publish(&m).await;
    let r = app.result_of(&m.request_id).await;
    assert_eq!(
        (r.status, r.reason_code),
        (Status::Completed, ReasonCode::Match)
    );
    assert_eq!(app.sandbox.ledger.calls_for_id(&who.id_number), 1);
    app.cleanup().await;
}

#[tokio::test]
async fn a_rejection_never_overwrites_a_request_another_worker_holds() {
    let mut app = TestApp::new().await;
    app.start_worker().await;
    let store = kycq::store::Store::from_pool(app.db().await.clone());
    let who = identity(Scenario::Match, 10);
    let m = mobile3(&who);
    store
        .claim(
            &m.request_id,
            kycq::check::CheckKind::Mobile3,
            &masked(&who),
            &fingerprint(&m),
            "other#1",
            Duration::from_secs(30),
            None,
        )
        .await
        .unwrap();
    // The same request_id with an invalid field: kycq's validation refuses it, but the request
    // is being worked on (and may have been billed): the rejection waits for that result.
    let mut bad = m.clone();
    bad.mobile = Some("12345678901".into());
    app.publish(&bad).await;
    app.assert_no_result_within(Duration::from_millis(1500))
        .await;
    let theirs = their_result(&m.request_id, &who);
    store
        .complete(
            &theirs,
            Some(fingerprint(&m).as_str()),
            &kycq::store::Fence {
                owner: "other#1".into(),
                retry_round: 0,
            },
            None,
        )
        .await
        .unwrap()
        .expect("the other worker holds this run");
    // Its answer is never the other request's result: a conflict, not stored.
    let r = app.result_of(&m.request_id).await;
    assert_eq!(
        (r.status, r.reason_code, r.billed),
        (Status::Rejected, ReasonCode::RequestIdConflict, Billed::No)
    );
    let status: String = sqlx::query_scalar("SELECT status FROM checks WHERE request_id = $1")
        .bind(&m.request_id)
        .fetch_one(app.db().await)
        .await
        .unwrap();
    assert_eq!(status, "completed", "the billed verdict stands");
    app.cleanup().await;
}

/// The keyed fingerprint a worker of this test deployment computes for a message's subject.
fn fingerprint(m: &kycq::ops::enqueue::RequestMessage) -> String {
    let today = chrono::Utc::now().date_naive();
    match kycq::check::decode(&serde_json::to_vec(m).unwrap(), today).unwrap() {
        kycq::check::Decoded::Valid(r) => r.subject.fingerprint(crate::helpers::PII_KEY.as_bytes()),
        kycq::check::Decoded::Rejected(r) => panic!("{}", r.reason),
    }
}
