//! Failures through the real pipeline and the sandbox: every vendor's HTTP-layer answers end
//! the same way (one shared outcome table); a message Postgres refuses is dead-lettered (never
//! retried, never holding a slot); a configuration the broker or Postgres refuses stops the
//! worker at start with exit code 2 naming the key.

use std::collections::BTreeMap;
use std::time::Duration;

use kycq::check::CheckKind;
use kycq::check::{Billed, CheckResult, ReasonCode, Status, Verdict};
use kycq::ops::enqueue::RequestMessage;
use kycq::providers::registry::{vendors_for, VENDORS};
use kycq::sandbox::ledger::subject_key;
use kycq::sandbox::scenarios::{identity, Scenario, TestIdentity};

use crate::helpers::{mobile3, TestApp};

/// Every vendor of the registry pointed at this test's sandbox with its documented local
/// credentials, generous limits, and a circuit cool-down far longer than the test: a circuit
/// opened by mistake holds every later request of that provider.
fn every_vendor_env(app: &TestApp) -> Vec<(String, String)> {
    let mut env: Vec<(String, String)> = CheckKind::ALL
        .iter()
        .map(|c| {
            let route: Vec<&str> = vendors_for(*c).iter().map(|v| v.name).collect();
            (
                format!("KYCQ__ROUTES__{}", c.as_str().to_uppercase()),
                route.join(","),
            )
        })
        .collect();
    for v in VENDORS {
        let p = format!("KYCQ__PROVIDERS__{}__", v.name.to_uppercase());
        let mut set = |k: &str, val: String| env.push((format!("{p}{}", k.to_uppercase()), val));
        set("endpoint", format!("http://{}", app.sandbox.addr));
        set("rate_per_sec", "1000".into());
        set("burst", "100".into());
        set("throttle_cooldown_ms", "20".into());
        set("circuit_cooldown_secs", "600".into());
        for (k, val) in v.sandbox_credentials {
            set(k, val.to_string());
        }
    }
    env
}

/// A request for `check` about `who`, pinned to `provider`.
fn request_for(check: CheckKind, who: &TestIdentity, provider: &str) -> RequestMessage {
    let mut m = mobile3(who);
    m.check = check.as_str().to_owned();
    if check != CheckKind::Mobile3 {
        m.mobile = None;
    }
    if check == CheckKind::Id2Period {
        m.validity_start = Some("20201001".into());
        m.validity_end = Some("20301001".into());
    }
    m.provider = Some(provider.to_owned());
    m
}

/// Calls the sandbox received for one identity.
fn sandbox_calls(app: &TestApp, who: &TestIdentity) -> usize {
    let key = subject_key(&who.id_number);
    app.sandbox
        .ledger
        .entries()
        .iter()
        .filter(|e| e.subject_key.as_deref() == Some(key.as_str()))
        .count()
}

fn outcome(r: &CheckResult) -> (Status, Option<Verdict>, ReasonCode, Billed, u32) {
    (r.status, r.verdict, r.reason_code, r.billed, r.attempts)
}

/// The HTTP-layer answers of the sandbox (codes 934–937), pinned to each vendor in turn (with
/// the first check it serves):
/// - a status line and a body cut off (502 or 504): billing unknown, one call, dead-lettered;
/// - a bare 429: throttled for every vendor, retried, then a match;
/// - a backend 400 about this request: `completed` / `invalid_input`, one call, and the
///   vendor's circuit stays closed (a match right after it is answered by the same vendor).
#[tokio::test]
async fn http_layer_answers_end_the_same_way_for_every_vendor() {
    let mut app = TestApp::new().await;
    let env = every_vendor_env(&app);
    let pairs: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    app.start_worker_with(&pairs).await;
    type Want = (Status, Option<Verdict>, ReasonCode, Billed, u32);
    let lost: Want = (
        Status::Failed,
        None,
        ReasonCode::BillingUnknown,
        Billed::Unknown,
        1,
    );
    let table: [(Scenario, Want, &str); 4] = [
        (Scenario::Http502CutOff, lost, "unknown"),
        (Scenario::Http504CutOff, lost, "unknown"),
        (
            Scenario::Http429Once,
            (
                Status::Completed,
                Some(Verdict::Match),
                ReasonCode::Match,
                Billed::Yes,
                2,
            ),
            "transient",
        ),
        (
            Scenario::Http400Backend,
            (
                Status::Completed,
                Some(Verdict::InvalidInput),
                ReasonCode::InvalidRequest,
                Billed::No,
                1,
            ),
            "request_refused",
        ),
    ];
    let mut sent = BTreeMap::new();
    for (i, v) in VENDORS.iter().enumerate() {
        for (j, (scenario, want, first_outcome)) in table.iter().enumerate() {
            let who = identity(*scenario, 50 + (i * 10 + j) as u32);
            let m = request_for(v.apis[0].0, &who, v.name);
            app.publish(&m).await;
            sent.insert(
                m.request_id.clone(),
                (v.name, *scenario, who, *want, *first_outcome),
            );
        }
    }
    let ids: Vec<String> = sent.keys().cloned().collect();
    let got = app.results_for(&ids, Duration::from_secs(60)).await;
    let mut lost_count = 0;
    for (id, results) in &got {
        let (vendor, scenario, who, want, first_outcome) = &sent[id];
        let r = &results[0];
        let what = format!("{vendor} {scenario:?}: {}", r.reason);
        assert_eq!(outcome(r), *want, "{what}");
        assert_eq!(r.provider.as_deref(), Some(*vendor), "{what}");
        let calls = app.journal(id).await;
        assert_eq!(calls.len() as u32, want.4, "{what}: {calls:?}");
        assert_eq!(calls[0].0, *vendor, "{what}");
        assert_eq!(calls[0].1, *first_outcome, "{what}: {calls:?}");
        // The sandbox saw exactly the calls kycq journaled: nothing was called twice.
        assert_eq!(sandbox_calls(&app, who), calls.len(), "{what}");
        match scenario {
            Scenario::Http429Once => assert_eq!(calls[0].3.as_deref(), Some("HTTP429"), "{what}"),
            Scenario::Http400Backend => {
                assert_eq!(r.provider_code.as_deref(), Some("HTTP400"), "{what}")
            }
            _ => {
                lost_count += 1;
                assert_eq!(calls[0].2, "unknown", "{what}");
            }
        }
    }
    // A backend 400 opened no circuit: a match pinned to each vendor right after is answered by
    // that vendor (a circuit opened for 600 s would hold it past the timeout).
    let mut after = BTreeMap::new();
    for (i, v) in VENDORS.iter().enumerate() {
        let m = request_for(
            v.apis[0].0,
            &identity(Scenario::Match, 90 + i as u32),
            v.name,
        );
        app.publish(&m).await;
        after.insert(m.request_id.clone(), v.name);
    }
    let ids: Vec<String> = after.keys().cloned().collect();
    for (id, results) in app.results_for(&ids, Duration::from_secs(30)).await {
        let r = &results[0];
        assert_eq!(
            (r.status, r.reason_code, r.provider.as_deref()),
            (Status::Completed, ReasonCode::Match, Some(after[&id])),
            "{}",
            r.reason
        );
    }
    let dead = app.wait_dead_letters(lost_count, T).await;
    assert_eq!(dead.len(), lost_count, "{dead:?}");
    assert!(
        dead.iter().all(|(d, _)| d.reason == "billing_unknown"),
        "{dead:?}"
    );
    app.cleanup().await;
}

const T: Duration = Duration::from_secs(30);

#[tokio::test]
async fn messages_postgres_refuses_are_dead_lettered_and_never_stall_the_worker() {
    let mut app = TestApp::new().await;
    app.start_worker().await;
    // A database that refuses some values deterministically (here a constraint of this test's
    // own database; in life a value of a type Postgres cannot hold).
    sqlx::query(
        "ALTER TABLE checks ADD CONSTRAINT kycq_test_refuses \
         CHECK (request_id NOT LIKE 'refused-%')",
    )
    .execute(app.db().await)
    .await
    .unwrap();
    // More refused messages than the worker has slots (concurrency 16): before, each held its
    // slot forever, retried until shutdown.
    let n = 20;
    for i in 0..n {
        let mut m = mobile3(&identity(Scenario::Match, 10 + i));
        m.request_id = format!("refused-{i}");
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
        assert!(detail.contains("SQLSTATE 23514"), "{detail}");
        assert!(
            info.request_id.as_deref().unwrap().starts_with("refused-"),
            "{info:?}"
        );
    }
    // Nothing else was answered: a refused message gets no result, and no provider was called.
    app.assert_no_result_within(Duration::from_millis(500))
        .await;
    assert_eq!(app.sandbox.ledger.len(), 1);
    app.cleanup().await;
}

/// A control character (a NUL, which Postgres refuses) in any field is refused by validation
/// before anything is stored or sent: `rejected` with the field's reason, its masked subject
/// without the character, and the worker keeps serving.
#[tokio::test]
async fn control_characters_in_a_field_are_rejected_before_anything_is_stored() {
    let mut app = TestApp::new().await;
    app.start_worker().await;
    let mut sent = BTreeMap::new();
    for (i, field) in ["name", "id_number", "mobile"].into_iter().enumerate() {
        for (j, bad) in ["\u{0}", "\u{1b}", "\u{7f}"].into_iter().enumerate() {
            let mut m = mobile3(&identity(Scenario::Match, 100 + (i * 3 + j) as u32));
            match field {
                "name" => m.name = format!("{bad}{}", m.name),
                "id_number" => m.id_number = format!("{}{bad}", m.id_number),
                _ => m.mobile = m.mobile.map(|x| format!("{bad}{x}")),
            }
            app.publish(&m).await;
            sent.insert(m.request_id.clone(), field);
        }
    }
    let ok = mobile3(&identity(Scenario::Match, 2));
    app.publish(&ok).await;
    let mut ids: Vec<String> = sent.keys().cloned().collect();
    ids.push(ok.request_id.clone());
    let got = app.results_for(&ids, T).await;
    for (id, results) in &got {
        let r = &results[0];
        let Some(field) = sent.get(id) else {
            assert_eq!(r.reason_code, ReasonCode::Match);
            continue;
        };
        let want = match *field {
            "name" => ReasonCode::InvalidName,
            "id_number" => ReasonCode::InvalidIdNumber,
            _ => ReasonCode::InvalidMobile,
        };
        assert_eq!(
            (r.status, r.reason_code),
            (Status::Rejected, want),
            "{field}"
        );
        assert!(r.reason.contains("control characters"), "{}", r.reason);
        let json = serde_json::to_string(r).unwrap();
        assert!(
            !json.contains("\\u0000") && !json.contains("\\u001b"),
            "{json}"
        );
    }
    assert_eq!(
        app.sandbox.ledger.len(),
        1,
        "only the valid request was sent"
    );
    assert!(app.dead_letters().await.is_empty());
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

/// A `request_id` reused for another person (or another check) is never answered with the
/// earlier person's result: it gets `rejected` / `request_id_conflict`, costs nothing, and the
/// stored result stays the first request's. The same request again is still a duplicate.
#[tokio::test]
async fn a_request_id_reused_for_another_person_never_gets_their_result() {
    let mut app = TestApp::new().await;
    app.start_worker().await;
    let first = mobile3(&identity(Scenario::Match, 1));
    let id = first.request_id.clone();
    app.publish(&first).await;
    let (_, r) = app.next_result(T).await.expect("the first result");
    assert_eq!(
        (r.status, r.reason_code),
        (Status::Completed, ReasonCode::Match)
    );
    let calls = app.sandbox.ledger.len();

    // Another person under the same id; the same person for another check; an invalid request.
    let mut other_person = mobile3(&identity(Scenario::Match, 2));
    other_person.request_id = id.clone();
    let mut other_check = first.clone();
    other_check.check = "id2".into();
    other_check.mobile = None;
    let mut invalid = mobile3(&identity(Scenario::Match, 3));
    invalid.request_id = id.clone();
    invalid.mobile = Some("12345".into());
    for (what, m) in [
        ("another person", &other_person),
        ("another check", &other_check),
        ("an invalid request", &invalid),
    ] {
        app.publish(m).await;
        let (key, r) = app.next_result(T).await.expect("an answer");
        assert_eq!(
            (r.status, r.reason_code, r.verdict),
            (Status::Rejected, ReasonCode::RequestIdConflict, None),
            "{what}: {}",
            r.reason
        );
        assert!(key.ends_with(".rejected"), "{key}");
        assert_eq!(r.billed, Billed::No);
        assert_eq!(r.provider, None, "{what}");
        assert_eq!(
            r.subject.id_number.as_deref(),
            Some(kycq::check::mask::mask_id_number(&m.id_number).as_str()),
            "{what}: its own masked subject, never the first person's"
        );
    }
    assert_eq!(app.sandbox.ledger.len(), calls, "no provider was called");
    // The stored result is still the first person's, and the first request again is answered
    // from it.
    let stored: serde_json::Value =
        sqlx::query_scalar("SELECT result FROM checks WHERE request_id = $1")
            .bind(&id)
            .fetch_one(app.db().await)
            .await
            .unwrap();
    assert_eq!(stored["reason_code"], "match");
    app.publish(&first).await;
    let (_, again) = app.next_result(T).await.expect("the duplicate's answer");
    assert_eq!(again, r);
    assert!(app.dead_letters().await.is_empty());
    app.cleanup().await;
}

/// A client-set `x-kycq-*` header is never trusted: dead-lettering drops it and sets kycq's own.
#[tokio::test]
async fn forged_kycq_headers_do_not_survive_dead_lettering() {
    use lapin::types::{AMQPValue, FieldTable, LongString};
    let mut app = TestApp::new().await;
    app.start_worker().await;
    let mut headers = FieldTable::default();
    for (k, v) in [
        ("x-kycq-request-id", "victim-req-42"),
        ("x-kycq-reason", "forged"),
        ("X-KYCQ-DETAIL", "forged"),
        ("x-client-trace", "kept"),
    ] {
        headers.insert(k.into(), AMQPValue::LongString(LongString::from(v)));
    }
    app.publish_raw(
        "check.mobile3",
        b"{not json",
        lapin::BasicProperties::default().with_headers(headers),
    )
    .await;
    let dead = app.wait_dead_letters(1, T).await;
    assert_eq!(dead.len(), 1, "{dead:?}");
    let (info, _) = &dead[0];
    assert_eq!(info.reason, "not_json", "{info:?}");
    assert_ne!(
        info.request_id.as_deref(),
        Some("victim-req-42"),
        "{info:?}"
    );
    assert!(!info
        .detail
        .as_deref()
        .unwrap_or_default()
        .contains("forged"));
    app.assert_no_result_within(Duration::from_millis(300))
        .await;
    app.cleanup().await;
}

/// Size limits: a body over `worker.max_body_bytes` is dead-lettered `too_large` unread; a field
/// over its documented maximum is `rejected` / `field_too_long` with a small result; the worker
/// keeps serving behind them.
#[tokio::test]
async fn oversized_messages_and_fields_end_small_and_at_once() {
    let mut app = TestApp::new().await;
    app.start_worker().await;
    let mut huge = mobile3(&identity(Scenario::Match, 3));
    huge.name = "张".repeat(40_000);
    let body = serde_json::to_vec(&huge).unwrap();
    assert!(body.len() > 65_536);
    app.publish_raw("check.mobile3", &body, lapin::BasicProperties::default())
        .await;
    let mut long_name = mobile3(&identity(Scenario::Match, 4));
    long_name.name = "张".repeat(65);
    app.publish(&long_name).await;
    let ok = mobile3(&identity(Scenario::Match, 5));
    app.publish(&ok).await;
    let got = app
        .results_for(&[long_name.request_id.clone(), ok.request_id.clone()], T)
        .await;
    let r = &got[&long_name.request_id][0];
    assert_eq!(
        (r.status, r.reason_code),
        (Status::Rejected, ReasonCode::FieldTooLong)
    );
    assert!(r.reason.contains("name must be at most 64"), "{}", r.reason);
    assert!(serde_json::to_vec(r).unwrap().len() < 2_000);
    assert_eq!(got[&ok.request_id][0].reason_code, ReasonCode::Match);
    let dead = app.wait_dead_letters(1, T).await;
    assert_eq!(dead.len(), 1, "{dead:?}");
    assert_eq!(dead[0].0.reason, "too_large");
    assert_eq!(dead[0].1, body, "the body is kept as sent");
    assert_eq!(
        app.sandbox.ledger.len(),
        1,
        "only the valid request was sent"
    );
    app.cleanup().await;
}

/// Lenient parsing decided: a body published under another check's routing key is rejected
/// (the client's intent is a guess); a field given twice is dead-lettered `duplicate_key`; JSON
/// nested past 128 levels is `not_json`. The worker keeps serving behind them.
#[tokio::test]
async fn ambiguous_messages_are_refused_not_guessed() {
    let mut app = TestApp::new().await;
    app.start_worker().await;
    let who = identity(Scenario::Match, 6);
    let m = mobile3(&who);
    let body = serde_json::to_vec(&m).unwrap();
    app.publish_raw("check.id2", &body, lapin::BasicProperties::default())
        .await;
    let twice = format!(
        r#"{{"request_id":"twice-1","check":"mobile3","name":"{}","id_number":"{}","id_number":"110105194912310029","mobile":"{}"}}"#,
        who.name, who.id_number, who.mobile
    );
    app.publish_raw(
        "check.mobile3",
        twice.as_bytes(),
        lapin::BasicProperties::default(),
    )
    .await;
    let deep = format!(
        r#"{{"request_id":"deep-1","x":{}1{}}}"#,
        "[".repeat(200),
        "]".repeat(200)
    );
    app.publish_raw(
        "check.mobile3",
        deep.as_bytes(),
        lapin::BasicProperties::default(),
    )
    .await;
    let ok = mobile3(&identity(Scenario::Match, 7));
    app.publish(&ok).await;
    let got = app
        .results_for(&[m.request_id.clone(), ok.request_id.clone()], T)
        .await;
    let r = &got[&m.request_id][0];
    assert_eq!(
        (r.status, r.reason_code),
        (Status::Rejected, ReasonCode::InvalidRequest)
    );
    assert!(r.reason.contains("routing key check.id2"), "{}", r.reason);
    assert_eq!(got[&ok.request_id][0].reason_code, ReasonCode::Match);
    let dead = app.wait_dead_letters(2, T).await;
    let mut reasons: Vec<&str> = dead.iter().map(|(d, _)| d.reason.as_str()).collect();
    reasons.sort();
    assert_eq!(reasons, ["duplicate_key", "not_json"], "{dead:?}");
    assert_eq!(
        app.sandbox.ledger.len(),
        1,
        "only the valid request was sent"
    );
    app.cleanup().await;
}

/// A `reply_to` is the client's business: a made-up direct-reply name or a full queue that
/// refuses publishes never holds the message, never takes the worker's channel down, and never
/// changes the stored result or the result exchange; other requests are served meanwhile.
#[tokio::test]
async fn a_reply_to_the_broker_refuses_affects_nobody() {
    use lapin::options::{QueueDeclareOptions, QueueDeleteOptions};
    use lapin::types::{AMQPValue, FieldTable, LongString, ShortString};
    let mut app = TestApp::new().await;
    app.start_worker().await;
    let full = format!("t-{}.full-reply", app.id);
    let ch = app.conn.create_channel().await.unwrap();
    let mut args = FieldTable::default();
    args.insert("x-max-length".into(), AMQPValue::LongInt(0));
    args.insert(
        "x-overflow".into(),
        AMQPValue::LongString(LongString::from("reject-publish")),
    );
    ch.queue_declare(full.as_str().into(), QueueDeclareOptions::default(), args)
        .await
        .unwrap();
    let mut ids = Vec::new();
    for (i, reply_to) in [
        "amq.rabbitmq.reply-to.g1h2AA5yZXBseUAzMjE4.bogus",
        full.as_str(),
    ]
    .into_iter()
    .enumerate()
    {
        let m = mobile3(&identity(Scenario::Match, 20 + i as u32));
        let body = serde_json::to_vec(&m).unwrap();
        let props = lapin::BasicProperties::default()
            .with_reply_to(ShortString::from(reply_to))
            .with_correlation_id(ShortString::from("c-1"));
        app.publish_raw("check.mobile3", &body, props).await;
        ids.push(m.request_id.clone());
    }
    let ok = mobile3(&identity(Scenario::Match, 22));
    app.publish(&ok).await;
    ids.push(ok.request_id.clone());
    let got = app.results_for(&ids, T).await;
    for id in &ids {
        let r = &got[id][0];
        assert_eq!(
            (r.status, r.reason_code),
            (Status::Completed, ReasonCode::Match),
            "{id}"
        );
        assert_eq!(got[id].len(), 1, "published once, not again and again");
    }
    // Each was called once and acknowledged: nothing waits in the work queue, nothing is
    // dead-lettered, and no later result appears.
    app.assert_no_result_within(Duration::from_secs(2)).await;
    assert_eq!(app.sandbox.ledger.len(), 3);
    assert!(app.dead_letters().await.is_empty());
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
    ch.queue_delete(full.as_str().into(), QueueDeleteOptions::default())
        .await
        .unwrap();
    app.cleanup().await;
}

/// What one message of the bad-input table must end with.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Ends {
    Dead(&'static str),
    Answered(Status, ReasonCode),
}

/// The bad-input table (docs/src/reference/reason-codes.md) in one batch, through the real broker and one worker: every
/// message ends in exactly one outcome (one result, or one dead letter with its reason) within
/// the bound, nothing is answered twice, and valid requests published behind them are served.
#[tokio::test]
async fn every_kind_of_bad_input_ends_in_exactly_one_outcome_and_the_worker_keeps_serving() {
    use kycq::check::identity::id_check_char;
    use lapin::types::{AMQPValue, FieldTable, LongString, ShortString};
    use lapin::BasicProperties;

    let mut app = TestApp::new().await;
    app.start_worker().await;
    sqlx::query(
        "ALTER TABLE checks ADD CONSTRAINT kycq_test_refuses \
         CHECK (request_id NOT LIKE 'refused-%')",
    )
    .execute(app.db().await)
    .await
    .unwrap();
    // A request whose id is then reused for somebody else.
    let first = mobile3(&identity(Scenario::Match, 900));
    app.publish(&first).await;
    assert_eq!(
        app.result_of(&first.request_id).await.reason_code,
        ReasonCode::Match
    );

    let json = |m: &RequestMessage| serde_json::to_vec(m).unwrap();
    let with_id = |first17: String| {
        let check = id_check_char(&first17).unwrap();
        format!("{first17}{check}")
    };
    let person = |variant: u32| mobile3(&identity(Scenario::Match, 901 + variant));
    let plain = BasicProperties::default;
    let mut cases: Vec<(&str, &str, Vec<u8>, BasicProperties, Ends)> = Vec::new();
    let mut add = |what, key, body, props, ends| cases.push((what, key, body, props, ends));

    add(
        "not JSON",
        "check.mobile3",
        b"{not json".to_vec(),
        plain(),
        Ends::Dead("not_json"),
    );
    add(
        "not an object",
        "check.mobile3",
        b"[1, 2]".to_vec(),
        plain(),
        Ends::Dead("not_an_object"),
    );
    let deep = format!(
        r#"{{"request_id":"deep-{}","x":{}1{}}}"#,
        app.id,
        "[".repeat(200),
        "]".repeat(200)
    );
    add(
        "nested past 128",
        "check.mobile3",
        deep.into_bytes(),
        plain(),
        Ends::Dead("not_json"),
    );
    let mut m = serde_json::to_value(person(0)).unwrap();
    m.as_object_mut().unwrap().remove("request_id");
    add(
        "no request_id",
        "check.mobile3",
        serde_json::to_vec(&m).unwrap(),
        plain(),
        Ends::Dead("no_request_id"),
    );
    let p = person(1);
    let twice = format!(
        r#"{{"request_id":"{}","check":"mobile3","name":"{}","id_number":"{}","id_number":"110105194912310029","mobile":"{}"}}"#,
        p.request_id,
        p.name,
        p.id_number,
        p.mobile.clone().unwrap()
    );
    add(
        "a field twice",
        "check.mobile3",
        twice.into_bytes(),
        plain(),
        Ends::Dead("duplicate_key"),
    );
    let mut huge = person(2);
    huge.name = "张".repeat(40_000);
    add(
        "over max_body_bytes",
        "check.mobile3",
        json(&huge),
        plain(),
        Ends::Dead("too_large"),
    );
    let mut refused = person(3);
    refused.request_id = format!("refused-{}", app.id);
    add(
        "a value Postgres refuses",
        "check.mobile3",
        json(&refused),
        plain(),
        Ends::Dead("unstorable"),
    );
    let mut headers = FieldTable::default();
    headers.insert(
        "x-kycq-request-id".into(),
        AMQPValue::LongString(LongString::from(first.request_id.as_str())),
    );
    add(
        "forged x-kycq headers",
        "check.mobile3",
        b"{forged".to_vec(),
        plain().with_headers(headers),
        Ends::Dead("not_json"),
    );

    let rejected = |code| Ends::Answered(Status::Rejected, code);
    let mut long = person(4);
    long.name = "张".repeat(65);
    add(
        "a field too long",
        "check.mobile3",
        json(&long),
        plain(),
        rejected(ReasonCode::FieldTooLong),
    );
    let mut nul = person(5);
    nul.name = format!("\u{0}{}", nul.name);
    add(
        "a NUL in the name",
        "check.mobile3",
        json(&nul),
        plain(),
        rejected(ReasonCode::InvalidName),
    );
    let mut esc = person(6);
    esc.id_number.push('\u{1b}');
    add(
        "an escape in the ID number",
        "check.mobile3",
        json(&esc),
        plain(),
        rejected(ReasonCode::InvalidIdNumber),
    );
    let mut mobile = person(7);
    mobile.mobile = Some("12345678901".into());
    add(
        "a malformed mobile",
        "check.mobile3",
        json(&mobile),
        plain(),
        rejected(ReasonCode::InvalidMobile),
    );
    let mut county = person(8);
    county.id_number = with_id("11019919700101001".into());
    add(
        "a county code that does not exist",
        "check.mobile3",
        json(&county),
        plain(),
        rejected(ReasonCode::InvalidIdNumber),
    );
    let mut abolished = person(9);
    abolished.id_number = with_id("11010320150101001".into());
    add(
        "a county code abolished before the birth",
        "check.mobile3",
        json(&abolished),
        plain(),
        rejected(ReasonCode::InvalidIdNumber),
    );
    let mut dates = person(10);
    dates.check = "id2_period".into();
    dates.mobile = None;
    dates.validity_start = Some("20200230".into());
    dates.validity_end = Some("20400101".into());
    add(
        "a date that does not exist",
        "check.id2_period",
        json(&dates),
        plain(),
        rejected(ReasonCode::InvalidDate),
    );
    add(
        "another check's routing key",
        "check.id2",
        json(&person(11)),
        plain(),
        rejected(ReasonCode::InvalidRequest),
    );
    let mut reused = person(12);
    reused.request_id = first.request_id.clone();
    add(
        "a request_id of another person",
        "check.mobile3",
        json(&reused),
        plain(),
        rejected(ReasonCode::RequestIdConflict),
    );

    let served = Ends::Answered(Status::Completed, ReasonCode::Match);
    let reply_to = plain().with_reply_to(ShortString::from(
        "amq.rabbitmq.reply-to.g1h2AA5yZXBseUAzMjE4.bogus",
    ));
    add(
        "a reply_to the broker refuses",
        "check.mobile3",
        json(&person(13)),
        reply_to,
        served,
    );
    let mut wide = person(14);
    wide.id_number = wide
        .id_number
        .chars()
        .map(|c| char::from_u32(c as u32 + 0xFEE0).unwrap())
        .collect();
    add(
        "full-width digits (read as ASCII)",
        "check.mobile3",
        json(&wide),
        plain(),
        served,
    );
    let mut dot = person(15);
    dot.name = "阿依古丽\u{0387}买买提".into();
    add(
        "a middle-dot look-alike (stored as ·)",
        "check.mobile3",
        json(&dot),
        plain(),
        served,
    );
    for v in 16..19 {
        add(
            "a valid request behind them",
            "check.mobile3",
            json(&person(v)),
            plain(),
            served,
        );
    }

    for (_, key, body, props, _) in &cases {
        app.publish_raw(key, body, props.clone()).await;
    }
    let want_results: Vec<String> = cases
        .iter()
        .filter(|c| matches!(c.4, Ends::Answered(..)))
        .map(|c| {
            serde_json::from_slice::<RequestMessage>(&c.2)
                .unwrap()
                .request_id
        })
        .collect();
    let want_dead = cases.len() - want_results.len();
    // The bound: everything ends within T, at once rather than after retries.
    let got = app.results_for(&want_results, T).await;
    let dead = app.wait_dead_letters(want_dead, T).await;
    app.assert_no_result_within(Duration::from_secs(1)).await;

    for (what, _, body, _, ends) in &cases {
        let as_dead: Vec<_> = dead.iter().filter(|(_, b)| b == body).collect();
        match ends {
            Ends::Dead(reason) => {
                assert_eq!(as_dead.len(), 1, "{what}: one dead letter");
                assert_eq!(as_dead[0].0.reason, *reason, "{what}");
                assert_ne!(
                    as_dead[0].0.request_id.as_deref(),
                    Some(first.request_id.as_str()),
                    "{what}"
                );
            }
            Ends::Answered(status, code) => {
                assert!(as_dead.is_empty(), "{what}: not dead-lettered");
                let id = serde_json::from_slice::<RequestMessage>(body)
                    .unwrap()
                    .request_id;
                let results = &got[&id];
                assert_eq!(results.len(), 1, "{what}: one result, {results:?}");
                assert_eq!(
                    (results[0].status, results[0].reason_code),
                    (*status, *code),
                    "{what}: {}",
                    results[0].reason
                );
            }
        }
    }
    assert_eq!(dead.len(), want_dead, "{dead:?}");
    // Only the requests that were served reached the provider (the first one included).
    let served_count = cases.iter().filter(|c| c.4 == served).count();
    assert_eq!(app.sandbox.ledger.len(), served_count + 1);
    app.cleanup().await;
}

/// Tencent (mobile3's only provider here) refuses the worker's key; Alibaba answers id2. The
/// circuit cool-down is long, each stay in the wait queue short.
fn tencent_refused_env(app: &TestApp, extra: &[(&str, &str)]) -> Vec<(String, String)> {
    let mut env = every_vendor_env(app);
    env.retain(|(k, _)| !k.starts_with("KYCQ__ROUTES__"));
    for (k, v) in [
        ("KYCQ__ROUTES__MOBILE3", "tencent"),
        ("KYCQ__ROUTES__ID2", "alibaba"),
        ("KYCQ__ROUTES__ID2_PERIOD", "alibaba"),
        ("KYCQ__PROVIDERS__TENCENT__SECRET_KEY", "not-the-key"),
        ("KYCQ__WORKER__PARK_MAX_SECS", "1"),
    ]
    .into_iter()
    .chain(extra.iter().copied())
    {
        env.push((k.into(), v.into()));
    }
    env
}

fn as_pairs(env: &[(String, String)]) -> Vec<(&str, &str)> {
    env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect()
}

/// A request whose every provider is out waits in the wait queue, not in a worker slot: a
/// worker with one slot serves another check meanwhile, and the parked requests are answered
/// once a provider can answer — each once, nothing lost.
#[tokio::test]
async fn a_request_whose_every_provider_is_out_waits_in_the_wait_queue_not_in_a_worker_slot() {
    let mut app = TestApp::new().await;
    let env = tencent_refused_env(&app, &[("KYCQ__WORKER__CONCURRENCY", "1")]);
    let bad = app.start_worker_with(&as_pairs(&env)).await;
    let waiting: Vec<RequestMessage> = (0..3)
        .map(|i| mobile3(&identity(Scenario::Match, 40 + i)))
        .collect();
    for m in &waiting {
        app.publish(m).await;
    }
    let id2 = request_for(CheckKind::Id2, &identity(Scenario::Match, 43), "alibaba");
    app.publish(&id2).await;
    // Before, the first mobile3 request held the only slot until a provider came back.
    let r = app.result_of(&id2.request_id).await;
    assert_eq!(
        (r.status, r.reason_code),
        (Status::Completed, ReasonCode::Match)
    );
    app.assert_no_result_within(Duration::from_secs(1)).await;
    let refused: Vec<_> = app
        .sandbox
        .ledger
        .entries()
        .into_iter()
        .filter(|e| e.provider == "tencent")
        .collect();
    assert_eq!(
        refused.len(),
        1,
        "one refused call opens the circuit: {refused:?}"
    );
    assert_eq!(refused[0].code, "AuthFailure.SignatureFailure");
    // They wait in the wait queue (each stay is short: they come and go).
    let ch = app.conn.create_channel().await.unwrap();
    let deadline = tokio::time::Instant::now() + T;
    loop {
        let q = ch
            .queue_declare(
                app.names.wait_queue.as_str().into(),
                lapin::options::QueueDeclareOptions {
                    passive: true,
                    ..Default::default()
                },
                Default::default(),
            )
            .await
            .unwrap();
        if q.message_count() > 0 {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "nothing parked");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    // The key is fixed: a worker with the right one answers the parked requests.
    bad.cancel();
    app.stop_workers().await;
    app.start_worker().await;
    let ids: Vec<String> = waiting.iter().map(|m| m.request_id.clone()).collect();
    let got = app.results_for(&ids, T).await;
    for id in &ids {
        assert_eq!(got[id].len(), 1, "{id}");
        assert_eq!(
            (got[id][0].status, got[id][0].reason_code),
            (Status::Completed, ReasonCode::Match)
        );
    }
    app.assert_no_result_within(Duration::from_secs(2)).await;
    assert_eq!(app.sandbox.ledger.billed_count(), 4);
    assert!(app.dead_letters().await.is_empty());
    app.cleanup().await;
}

/// Nobody waits forever: past `worker.max_wait_secs` a request whose every provider is still
/// out ends `failed` / `provider_unavailable`, not billed, and is dead-lettered (retryable).
#[tokio::test]
async fn past_the_maximum_wait_a_request_ends_provider_unavailable() {
    let mut app = TestApp::new().await;
    let env = tencent_refused_env(&app, &[("KYCQ__WORKER__MAX_WAIT_SECS", "2")]);
    app.start_worker_with(&as_pairs(&env)).await;
    let m = mobile3(&identity(Scenario::Match, 44));
    app.publish(&m).await;
    let r = app.result_of(&m.request_id).await;
    assert_eq!(
        (r.status, r.reason_code, r.billed),
        (Status::Failed, ReasonCode::ProviderUnavailable, Billed::No),
        "{}",
        r.reason
    );
    assert_eq!(r.provider.as_deref(), Some("tencent"));
    let dead = app.wait_dead_letters(1, T).await;
    assert_eq!(dead.len(), 1, "{dead:?}");
    assert_eq!(dead[0].0.reason, "provider_unavailable");
    assert_eq!(dead[0].0.request_id.as_deref(), Some(m.request_id.as_str()));
    let journal = app.journal(&m.request_id).await;
    assert_eq!(journal.len(), 1, "{journal:?}");
    assert_eq!(
        (journal[0].1.as_str(), journal[0].2.as_str()),
        ("provider_wide", "no")
    );
    app.assert_no_result_within(Duration::from_secs(1)).await;
    app.cleanup().await;
}
