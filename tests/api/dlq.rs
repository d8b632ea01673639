//! Dead letters an operator acts on, through the real broker, Postgres, an in-process worker and
//! the sandbox: `retry` runs a request again under its own request_id (the superseded result
//! kept, the journal continued), `resolve` records the billing found for a `billing_unknown`,
//! `retry --all` and `replay --all` handle each dead letter at most once with exact counts,
//! malformed messages can only be purged, a forged `x-kycq-request-id` on a message the broker
//! dead-lettered names nothing, a dead letter of a superseded run is stale, and the writes of a
//! lost lease or a superseded run are refused.

use std::time::Duration;

use kycq::broker::dlq::Cursor;
use kycq::broker::DeadLetter;
use kycq::check::{Billed, ReasonCode, Status, Verdict};
use kycq::ops::dlq::{self, Ctx, DlqError, Filters, Operator, Target};
use kycq::sandbox::scenarios::{identity, Scenario};
use kycq::store::Store;
use lapin::BasicProperties;
use sqlx::Row;

use crate::helpers::{mobile3, Options, TestApp};

const T: Duration = Duration::from_secs(30);

/// One call per request, on Tencent only: a transient failure ends `retries_exhausted` at once,
/// and the sandbox's `*Once` identities answer the next call (the retry) with a match.
pub(crate) async fn app() -> TestApp {
    let mut app = TestApp::with(Options {
        env: vec![
            ("KYCQ__RETRY__MAX_ATTEMPTS".into(), "1".into()),
            ("KYCQ__ROUTES__MOBILE3".into(), "tencent".into()),
        ],
        ..Default::default()
    })
    .await;
    app.start_worker().await;
    app
}

fn tester(note: &str) -> Operator {
    Operator {
        name: "tester".into(),
        note: Some(note.into()),
    }
}

async fn store(app: &TestApp) -> Store {
    Store::from_pool(app.db().await.clone())
}

/// The dead-letter commands' context, borrowed for one statement (the app is borrowed mutably
/// between them to read results).
macro_rules! ctx {
    ($app:expr, $store:expr) => {
        &Ctx {
            conn: &$app.conn,
            names: &$app.names,
            store: &$store,
            publisher: &$app.publisher,
        }
    };
}

/// (retry_round, attempt, outcome, billed, billed_by_operator) of every call, in order.
async fn calls(app: &TestApp, id: &str) -> Vec<(i32, i32, String, String, Option<String>)> {
    sqlx::query(
        "SELECT retry_round, attempt, outcome, billed, billed_by_operator FROM provider_calls \
         WHERE request_id = $1 ORDER BY attempt",
    )
    .bind(id)
    .fetch_all(app.db().await)
    .await
    .unwrap()
    .iter()
    .map(|r| {
        (
            r.get("retry_round"),
            r.get("attempt"),
            r.get("outcome"),
            r.get("billed"),
            r.get("billed_by_operator"),
        )
    })
    .collect()
}

#[tokio::test]
async fn retry_runs_a_retries_exhausted_request_again_under_its_own_id() {
    let mut app = app().await;
    let who = identity(Scenario::BusyOnce, 31);
    let m = mobile3(&who);
    app.publish(&m).await;
    let first = app.result_of(&m.request_id).await;
    assert_eq!(
        (first.status, first.reason_code, first.billed),
        (Status::Failed, ReasonCode::RetriesExhausted, Billed::No)
    );
    assert_eq!(app.wait_dead_letters(1, T).await.len(), 1);
    assert_eq!(app.sandbox.ledger.calls_for_id(&who.id_number), 1);
    let store = store(&app).await;

    // The listing says what can be done; a dry run changes nothing.
    let listed = dlq::list(ctx!(app, store), &Filters::default(), 10)
        .await
        .unwrap();
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0].action, "retry");
    let dry = dlq::retry(
        ctx!(app, store),
        Target::One(&m.request_id),
        &Filters::default(),
        &tester("look"),
        true,
    )
    .await
    .unwrap();
    assert_eq!((dry.done, dry.skipped, dry.failed), (1, 0, 0));
    assert_eq!(app.dead_letters().await.len(), 1);
    assert!(store.decisions(&m.request_id).await.unwrap().is_empty());

    // The sandbox has recovered (BusyOnce answers its second call): retry.
    let r = dlq::retry(
        ctx!(app, store),
        Target::One(&m.request_id),
        &Filters::default(),
        &tester("Tencent busy spell over"),
        false,
    )
    .await
    .unwrap();
    assert_eq!(
        (r.snapshot, r.selected, r.done, r.skipped, r.failed),
        (1, 1, 1, 0, 0),
        "{r:?}"
    );
    let second = app.result_of(&m.request_id).await;
    assert_eq!(
        (second.status, second.verdict, second.billed),
        (Status::Completed, Some(Verdict::Match), Billed::Yes)
    );
    // One new call, billed once; both runs in the journal, attempt numbers increasing.
    assert_eq!(app.sandbox.ledger.calls_for_id(&who.id_number), 2);
    assert_eq!(app.sandbox.ledger.billed_count(), 1);
    let journal = calls(&app, &m.request_id).await;
    assert_eq!(journal.len(), 2, "{journal:?}");
    assert_eq!(
        (journal[0].0, journal[0].1, journal[0].3.as_str()),
        (0, 1, "no")
    );
    assert_eq!(
        (journal[1].0, journal[1].1, journal[1].3.as_str()),
        (1, 2, "yes")
    );
    // The stored result is the new one; the superseded one is kept with the decision.
    let stored = store.stored_result(&m.request_id).await.unwrap().unwrap();
    assert_eq!(stored, second);
    let old = store.superseded(&m.request_id).await.unwrap();
    assert_eq!(old.len(), 1);
    assert_eq!(old[0].retry_round, 0);
    assert_eq!(old[0].result["reason_code"], "retries_exhausted");
    let decisions = store.decisions(&m.request_id).await.unwrap();
    assert_eq!(decisions.len(), 1);
    assert_eq!(
        (decisions[0].action.as_str(), decisions[0].operator.as_str()),
        ("retry", "tester")
    );
    assert_eq!(
        decisions[0].note.as_deref(),
        Some("Tencent busy spell over")
    );
    // The dead letter is gone, and a second retry finds nothing to do.
    app.assert_no_result_within(Duration::from_millis(500))
        .await;
    assert!(app.dead_letters().await.is_empty());
    let again = dlq::retry(
        ctx!(app, store),
        Target::One(&m.request_id),
        &Filters::default(),
        &tester("x"),
        false,
    )
    .await;
    assert!(
        matches!(again, Err(DlqError::Refused(ref s)) if s.contains("no dead letter")),
        "{again:?}"
    );
    app.cleanup().await;
}

#[tokio::test]
async fn billing_unknown_is_resolved_before_it_is_retried() {
    let mut app = app().await;
    let (a, b) = (
        mobile3(&identity(Scenario::Http504CutOff, 41)),
        mobile3(&identity(Scenario::Http504CutOff, 42)),
    );
    app.publish(&a).await;
    app.publish(&b).await;
    let first = app
        .results_for(&[a.request_id.clone(), b.request_id.clone()], T)
        .await;
    for r in first.values().flatten() {
        assert_eq!(
            (r.reason_code, r.billed),
            (ReasonCode::BillingUnknown, Billed::Unknown)
        );
    }
    assert_eq!(app.wait_dead_letters(2, T).await.len(), 2);
    let store = store(&app).await;
    let calls_before = app.sandbox.ledger.len();

    // Never retried blindly: the skip says to resolve first.
    let r = dlq::retry(
        ctx!(app, store),
        Target::One(&a.request_id),
        &Filters::default(),
        &tester("try"),
        false,
    )
    .await
    .unwrap();
    assert_eq!((r.done, r.skipped), (0, 1));
    assert!(
        r.items[0]
            .why
            .as_deref()
            .unwrap()
            .contains("kycq dlq resolve"),
        "{r:?}"
    );
    let shown = dlq::show(ctx!(app, store), &a.request_id).await.unwrap();
    assert_eq!(shown.dead_letters[0].action, "resolve");
    assert_eq!(shown.calls.len(), 1);
    assert_eq!(shown.calls[0].billed, "unknown");
    assert_eq!(shown.calls[0].provider, "tencent");

    // --billed yes: closed, the billing recorded, the dead letter removed.
    let yes = dlq::resolve(
        ctx!(app, store),
        &a.request_id,
        Billed::Yes,
        &tester("charged per console"),
        false,
    )
    .await
    .unwrap();
    assert!(yes.recorded && yes.dead_letter_removed, "{yes:?}");
    let stored = store.stored_result(&a.request_id).await.unwrap().unwrap();
    assert_eq!(
        (stored.reason_code, stored.billed),
        (ReasonCode::BillingUnknown, Billed::Yes)
    );
    assert_eq!(
        calls(&app, &a.request_id).await[0].4.as_deref(),
        Some("yes")
    );
    let left = app.dead_letters().await;
    assert_eq!(left.len(), 1);
    assert_eq!(left[0].0.request_id.as_deref(), Some(b.request_id.as_str()));

    // --billed no: recorded, a contrary finding refused, then retry runs it again.
    let no = dlq::resolve(
        ctx!(app, store),
        &b.request_id,
        Billed::No,
        &tester("not in the bill"),
        false,
    )
    .await
    .unwrap();
    assert!(no.recorded && !no.dead_letter_removed);
    let contrary = dlq::resolve(
        ctx!(app, store),
        &b.request_id,
        Billed::Yes,
        &tester("?"),
        false,
    )
    .await;
    assert!(matches!(contrary, Err(DlqError::Refused(ref s)) if s.contains("already resolved")));
    let r = dlq::retry(
        ctx!(app, store),
        Target::One(&b.request_id),
        &Filters::default(),
        &tester("go"),
        false,
    )
    .await
    .unwrap();
    assert_eq!((r.done, r.skipped, r.failed), (1, 0, 0), "{r:?}");
    // The sandbox's 937 identity cuts every answer off: the new run ends billing_unknown again,
    // after exactly one new call, and is dead-lettered again for a new finding.
    let again = app.result_of(&b.request_id).await;
    assert_eq!(again.reason_code, ReasonCode::BillingUnknown);
    assert_eq!(app.sandbox.ledger.len(), calls_before + 1);
    let journal = calls(&app, &b.request_id).await;
    assert_eq!(
        journal
            .iter()
            .map(|c| (c.0, c.1, c.4.clone()))
            .collect::<Vec<_>>(),
        [(0, 1, Some("no".to_owned())), (1, 2, None)]
    );
    let dead = app.wait_dead_letters(1, T).await;
    assert_eq!(dead.len(), 1);
    let listed = dlq::list(ctx!(app, store), &Filters::default(), 10)
        .await
        .unwrap();
    assert_eq!(listed[0].action, "resolve", "a new run needs a new finding");
    let actions: Vec<String> = store
        .decisions(&b.request_id)
        .await
        .unwrap()
        .iter()
        .map(|d| format!("{}:{}", d.action, d.billed.as_deref().unwrap_or("-")))
        .collect();
    assert_eq!(actions, ["resolve:no", "retry:-"]);
    app.cleanup().await;
}

async fn publish_malformed(app: &TestApp) {
    app.publish_raw(
        "check.mobile3",
        b"this is not json",
        BasicProperties::default(),
    )
    .await;
    app.publish_raw(
        "check.mobile3",
        br#"{"request_id":"dup-1","request_id":"dup-2","check":"mobile3"}"#,
        BasicProperties::default(),
    )
    .await;
}

#[tokio::test]
async fn retry_all_handles_each_dead_letter_once_with_exact_counts() {
    let mut app = app().await;
    publish_malformed(&app).await;
    let busy = identity(Scenario::BusyOnce, 51);
    let exhausted = mobile3(&busy);
    let unknown = mobile3(&identity(Scenario::Http504CutOff, 52));
    app.publish(&exhausted).await;
    app.publish(&unknown).await;
    app.results_for(
        &[exhausted.request_id.clone(), unknown.request_id.clone()],
        T,
    )
    .await;
    assert_eq!(app.wait_dead_letters(4, T).await.len(), 4);
    let store = store(&app).await;

    let listed = dlq::list(ctx!(app, store), &Filters::default(), 10)
        .await
        .unwrap();
    let mut actions: Vec<(&str, &str)> = listed
        .iter()
        .map(|l| (l.info.reason.as_str(), l.action))
        .collect();
    actions.sort();
    assert_eq!(
        actions,
        [
            ("billing_unknown", "resolve"),
            ("duplicate_key", "purge only"),
            ("not_json", "purge only"),
            ("retries_exhausted", "retry")
        ]
    );

    let first = dlq::retry(
        ctx!(app, store),
        Target::All,
        &Filters::default(),
        &tester("sweep"),
        false,
    )
    .await
    .unwrap();
    assert_eq!(
        (
            first.snapshot,
            first.selected,
            first.done,
            first.skipped,
            first.failed,
            first.cleared
        ),
        (4, 4, 1, 3, 0, 0),
        "{first:?}"
    );
    let r = app.result_of(&exhausted.request_id).await;
    assert_eq!(r.verdict, Some(Verdict::Match));
    assert_eq!(app.sandbox.ledger.calls_for_id(&busy.id_number), 2);

    // Run twice: the second does nothing new.
    let second = dlq::retry(
        ctx!(app, store),
        Target::All,
        &Filters::default(),
        &tester("sweep"),
        false,
    )
    .await
    .unwrap();
    assert_eq!(
        (
            second.snapshot,
            second.selected,
            second.done,
            second.skipped,
            second.failed
        ),
        (3, 3, 0, 3, 0),
        "{second:?}"
    );
    assert_eq!(app.sandbox.ledger.calls_for_id(&busy.id_number), 2);
    app.assert_no_result_within(Duration::from_millis(500))
        .await;

    // Malformed messages can only be purged: by reason, each recorded.
    let filters = Filters {
        reasons: vec!["not_json".into(), "duplicate_key".into()],
        ..Default::default()
    };
    let purged = dlq::purge(
        ctx!(app, store),
        Target::All,
        &filters,
        &tester("junk"),
        false,
    )
    .await
    .unwrap();
    assert_eq!((purged.done, purged.failed), (2, 0));
    let n: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM operator_decisions WHERE action = 'purge' AND operator = 'tester' \
         AND note = 'junk' AND dead_letter_reason IN ('not_json', 'duplicate_key')",
    )
    .fetch_one(app.db().await)
    .await
    .unwrap();
    assert_eq!(n, 2);
    let left = app.dead_letters().await;
    assert_eq!(left.len(), 1);
    assert_eq!(left[0].0.reason, "billing_unknown");
    app.cleanup().await;
}

#[tokio::test]
async fn replay_all_reads_each_dead_letter_once() {
    let mut app = app().await;
    publish_malformed(&app).await;
    let m = mobile3(&identity(Scenario::Busy, 61));
    app.publish(&m).await;
    let first = app.result_of(&m.request_id).await;
    assert_eq!(app.wait_dead_letters(3, T).await.len(), 3);
    let store = store(&app).await;

    // Malformed messages are skipped (they can only be purged); the request is replayed once and
    // answered from its stored result.
    let r = dlq::replay(ctx!(app, store), Target::All, &Filters::default(), false)
        .await
        .unwrap();
    assert_eq!(
        (r.snapshot, r.done, r.skipped, r.failed),
        (3, 1, 2, 0),
        "{r:?}"
    );
    assert_eq!(app.result_of(&m.request_id).await, first);
    assert_eq!(
        app.sandbox
            .ledger
            .calls_for_id(&identity(Scenario::Busy, 61).id_number),
        1
    );
    assert_eq!(
        app.wait_dead_letters(2, Duration::from_secs(1)).await.len(),
        2
    );

    // A dead letter that comes back during a run lands behind the snapshot and is not read again:
    // each one read is dead-lettered anew, yet the cursor stops after the two it started with.
    let mut cursor = Cursor::open(&app.conn, &app.names).await.unwrap();
    let mut read = 0;
    while let Some(h) = cursor.next().await.unwrap() {
        read += 1;
        let dl = DeadLetter {
            reason: h.info.reason.clone(),
            detail: "again".into(),
            attempts: 0,
            request_id: None,
            retry_round: None,
        };
        app.publisher
            .dead_letter(&h.body, &h.properties, &h.info.routing_key, &dl)
            .await
            .unwrap();
        h.ack().await.unwrap();
        assert!(read <= 2, "read a dead letter twice");
    }
    cursor.close().await;
    assert_eq!(read, 2);
    assert_eq!(app.dead_letters().await.len(), 2);
    app.cleanup().await;
}

/// A retry interrupted after its database change (before the publish) is finished by running
/// the same command again: published once more, never superseded twice.
#[tokio::test]
async fn a_retry_interrupted_after_the_database_change_finishes_on_rerun() {
    let mut app = app().await;
    let who = identity(Scenario::BusyOnce, 71);
    let m = mobile3(&who);
    app.publish(&m).await;
    app.result_of(&m.request_id).await;
    assert_eq!(app.wait_dead_letters(1, T).await.len(), 1);
    let store = store(&app).await;
    // The first run got as far as its transaction: the decision committed, nothing published,
    // the dead letter still in the queue.
    let mut cursor = Cursor::open(&app.conn, &app.names).await.unwrap();
    let held = cursor.next().await.unwrap().unwrap();
    let key = held.key().expect("a kycq dead letter has an identity");
    cursor.close().await;
    let decision = kycq::store::Decision {
        request_id: Some(&m.request_id),
        operator: "tester",
        note: Some("crashed run"),
        reason: "retries_exhausted",
        key: Some(&key),
    };
    store
        .retry_request(decision, |_, _, _| (kycq::store::RetryWrite::Supersede, ()))
        .await
        .unwrap();
    assert_eq!(
        store.snapshot(&m.request_id).await.unwrap().unwrap().status,
        "pending"
    );
    app.assert_no_result_within(Duration::from_millis(300))
        .await;
    // The re-run publishes it and removes the dead letter; the request runs once more.
    let r = dlq::retry(
        ctx!(app, store),
        Target::One(&m.request_id),
        &Filters::default(),
        &tester("again"),
        false,
    )
    .await
    .unwrap();
    assert_eq!((r.done, r.skipped, r.failed), (1, 0, 0), "{r:?}");
    let after = app.result_of(&m.request_id).await;
    assert_eq!(after.verdict, Some(Verdict::Match));
    assert_eq!(app.sandbox.ledger.calls_for_id(&who.id_number), 2);
    assert_eq!(store.superseded(&m.request_id).await.unwrap().len(), 1);
    assert_eq!(store.decisions(&m.request_id).await.unwrap().len(), 1);
    assert!(app.dead_letters().await.is_empty());
    app.cleanup().await;
}

/// A message RabbitMQ itself dead-letters (here: past the work queue's delivery limit) keeps the
/// headers its publisher set. A forged `x-kycq-request-id` naming another request never makes
/// `dlq list` or `dlq retry --all` act on that request: the id is the body's.
#[tokio::test]
async fn a_forged_request_id_header_on_a_broker_dead_letter_is_ignored() {
    use lapin::options::{BasicGetOptions, BasicNackOptions};
    use lapin::types::{AMQPValue, FieldTable};

    let mut app = app().await;
    let store = store(&app).await;
    // The victim: a stored, retryable result. Its own dead letter is purged, so only the forged
    // one could name it.
    let victim_who = identity(Scenario::Busy, 81);
    let victim = mobile3(&victim_who);
    app.publish(&victim).await;
    let before = app.result_of(&victim.request_id).await;
    assert_eq!(before.reason_code, ReasonCode::RetriesExhausted);
    assert_eq!(app.wait_dead_letters(1, T).await.len(), 1);
    let purged = dlq::purge(
        ctx!(app, store),
        Target::One(&victim.request_id),
        &Filters::default(),
        &tester("setup"),
        false,
    )
    .await
    .unwrap();
    assert_eq!(purged.done, 1);

    // No worker: a consumer that keeps returning the forged message drives it past the delivery
    // limit, and the broker dead-letters it with the publisher's headers.
    app.stop_workers().await;
    let sender = mobile3(&identity(Scenario::Match, 82));
    let s = |v: &str| AMQPValue::LongString(v.into());
    let mut h = FieldTable::default();
    h.insert("x-kycq-request-id".into(), s(&victim.request_id));
    h.insert("x-kycq-reason".into(), s("retries_exhausted"));
    h.insert("x-kycq-routing-key".into(), s("check.mobile3"));
    h.insert(
        "x-kycq-dead-lettered-at".into(),
        s("2026-01-01T00:00:00.000Z"),
    );
    h.insert("x-kycq-retry-round".into(), AMQPValue::LongInt(0));
    app.publish_raw(
        "check.mobile3",
        &serde_json::to_vec(&sender).unwrap(),
        BasicProperties::default()
            .with_headers(h)
            .with_delivery_mode(2),
    )
    .await;
    let ch = app.conn.create_channel().await.unwrap();
    let deadline = tokio::time::Instant::now() + T;
    loop {
        assert!(
            tokio::time::Instant::now() < deadline,
            "never dead-lettered"
        );
        match ch
            .basic_get(
                app.names.work_queue.as_str().into(),
                BasicGetOptions { no_ack: false },
            )
            .await
            .unwrap()
        {
            Some(m) => assert!(m
                .delivery
                .acker
                .nack(BasicNackOptions {
                    requeue: true,
                    multiple: false,
                })
                .await
                .unwrap()),
            None if !app.dead_letters().await.is_empty() => break,
            None => tokio::time::sleep(Duration::from_millis(50)).await,
        }
    }
    let _ = ch.close(200, "ok".into()).await;
    let dead = app.wait_dead_letters(1, T).await;
    assert_eq!(dead.len(), 1);
    let info = &dead[0].0;
    assert_eq!(info.request_id.as_deref(), Some(sender.request_id.as_str()));
    assert_eq!(info.reason, "delivery_limit");
    assert_eq!(info.dead_lettered_by, "broker");
    assert_eq!(info.retry_round, None);

    // `list` describes the sender's request; nothing names the victim.
    let listed = dlq::list(ctx!(app, store), &Filters::default(), 10)
        .await
        .unwrap();
    assert_eq!(listed.len(), 1);
    assert_eq!(
        listed[0].info.request_id.as_deref(),
        Some(sender.request_id.as_str())
    );
    assert!(listed[0].stored.is_none(), "{:?}", listed[0].stored);
    assert!(matches!(
        dlq::show(ctx!(app, store), &victim.request_id).await,
        Err(DlqError::Refused(_))
    ));

    // `retry --all` runs the sender's request under its own id; the victim's result stands.
    app.start_worker().await;
    let r = dlq::retry(
        ctx!(app, store),
        Target::All,
        &Filters::default(),
        &tester("forged"),
        false,
    )
    .await
    .unwrap();
    assert_eq!((r.done, r.skipped, r.failed), (1, 0, 0), "{r:?}");
    assert_eq!(
        r.items[0].request_id.as_deref(),
        Some(sender.request_id.as_str())
    );
    let sent = app.result_of(&sender.request_id).await;
    assert_eq!(sent.verdict, Some(Verdict::Match));
    let snap = store.snapshot(&victim.request_id).await.unwrap().unwrap();
    assert_eq!(
        (
            snap.status.as_str(),
            snap.reason_code.as_deref(),
            snap.retry_round
        ),
        ("failed", Some("retries_exhausted"), 0)
    );
    assert!(store
        .superseded(&victim.request_id)
        .await
        .unwrap()
        .is_empty());
    let decided: Vec<String> = store
        .decisions(&victim.request_id)
        .await
        .unwrap()
        .into_iter()
        .map(|d| d.action)
        .collect();
    assert_eq!(decided, vec!["purge".to_owned()]);
    assert_eq!(app.sandbox.ledger.calls_for_id(&victim_who.id_number), 1);
    assert!(app.dead_letters().await.is_empty());
    app.cleanup().await;
}

/// Two dead letters of one run (a worker that crashed between dead-lettering and storing, and
/// the redelivery that dead-lettered again): the first retry starts run 1; the second dead letter
/// belongs to run 0, is stale, and is removed without running or superseding anything.
#[tokio::test]
async fn a_second_dead_letter_of_a_retried_run_is_stale_and_not_retried() {
    let mut app = app().await;
    let who = identity(Scenario::BusyOnce, 83);
    let m = mobile3(&who);
    app.publish(&m).await;
    app.result_of(&m.request_id).await;
    assert_eq!(app.wait_dead_letters(1, T).await.len(), 1);
    let mut cursor = Cursor::open(&app.conn, &app.names).await.unwrap();
    let held = cursor.next().await.unwrap().unwrap();
    assert_eq!(held.info.retry_round, Some(0), "kycq names the run");
    assert_eq!(held.info.dead_lettered_by, "kycq");
    tokio::time::sleep(Duration::from_millis(5)).await;
    let again = DeadLetter {
        reason: "retries_exhausted".into(),
        detail: "dead-lettered again on redelivery".into(),
        attempts: 1,
        request_id: Some(m.request_id.clone()),
        retry_round: Some(0),
    };
    app.publisher
        .dead_letter(&held.body, &held.properties, &held.info.routing_key, &again)
        .await
        .unwrap();
    cursor.close().await;
    assert_eq!(app.wait_dead_letters(2, T).await.len(), 2);

    let store = store(&app).await;
    let r = dlq::retry(
        ctx!(app, store),
        Target::One(&m.request_id),
        &Filters::default(),
        &tester("stale"),
        false,
    )
    .await
    .unwrap();
    assert_eq!((r.done, r.skipped, r.failed), (1, 1, 0), "{r:?}");
    let stale = &r.items[1];
    assert_eq!(stale.outcome, "skipped");
    let why = stale.why.as_deref().unwrap();
    assert!(
        why.contains("an older run") && why.ends_with("removed"),
        "{why}"
    );
    let after = app.result_of(&m.request_id).await;
    assert_eq!(after.verdict, Some(Verdict::Match));
    assert_eq!(app.sandbox.ledger.calls_for_id(&who.id_number), 2);
    assert_eq!(store.superseded(&m.request_id).await.unwrap().len(), 1);
    assert_eq!(store.decisions(&m.request_id).await.unwrap().len(), 1);
    assert_eq!(
        store
            .snapshot(&m.request_id)
            .await
            .unwrap()
            .unwrap()
            .retry_round,
        1
    );
    assert!(app.dead_letters().await.is_empty());
    app.cleanup().await;
}

/// Writes are fenced by the claim's lease and run: a worker whose lease was taken over, or whose
/// run a retry superseded, can neither journal a call nor store a result into the current run.
#[tokio::test]
async fn writes_of_a_lost_lease_or_a_superseded_run_are_refused() {
    use kycq::check::mask::{mask_id_number, mask_mobile, mask_name};
    use kycq::check::{CheckKind, CheckResult, MaskedSubject};
    use kycq::store::{Claim, Fence, RetryWrite};

    // A worker creates and migrates the database; nothing is published for this request.
    let app = app().await;
    let store = store(&app).await;
    let who = identity(Scenario::Match, 84);
    let id = mobile3(&who).request_id;
    let subject = MaskedSubject {
        name: Some(mask_name(&who.name)),
        id_number: Some(mask_id_number(&who.id_number)),
        mobile: Some(mask_mobile(&who.mobile)),
    };
    let result = |tag: &str| {
        let now = chrono::Utc::now();
        CheckResult {
            request_id: id.clone(),
            check: Some(CheckKind::Mobile3),
            status: Status::Completed,
            verdict: Some(Verdict::Match),
            reason_code: ReasonCode::Match,
            reason: ReasonCode::Match.meaning().into(),
            billed: Billed::Yes,
            carrier: None,
            provider: Some("tencent".into()),
            provider_code: Some("0".into()),
            provider_request_id: Some(tag.into()),
            attempts: 1,
            subject: subject.clone(),
            received_at: now,
            completed_at: now,
        }
    };
    let claim = |owner: &'static str| {
        let (store, id, subject) = (store.clone(), id.clone(), subject.clone());
        async move {
            match store
                .claim(
                    &id,
                    CheckKind::Mobile3,
                    &subject,
                    "fp",
                    owner,
                    Duration::from_secs(30),
                    None,
                )
                .await
                .unwrap()
            {
                Claim::Claimed { retry_round, .. } => Fence {
                    owner: owner.into(),
                    retry_round,
                },
                other => panic!("{owner} could not claim: {other:?}"),
            }
        }
    };
    let journal = |f: Fence| {
        let (store, id) = (store.clone(), id.clone());
        async move {
            store
                .begin_call(&id, "tencent", "PhoneVerification", 1, "w", &f)
                .await
                .unwrap()
        }
    };

    let w1 = claim("w#1").await;
    assert_eq!(w1.retry_round, 0);
    // w#1 stalls; its lease runs out and w#2 takes the request over.
    sqlx::query(
        "UPDATE checks SET lease_until = now() - interval '1 second' WHERE request_id = $1",
    )
    .bind(&id)
    .execute(app.db().await)
    .await
    .unwrap();
    let w2 = claim("w#2").await;
    assert_eq!(
        journal(w1.clone()).await,
        None,
        "a lost lease journals nothing"
    );
    assert_eq!(
        store
            .complete(&result("w1"), Some("fp"), &w1, None)
            .await
            .unwrap(),
        None,
        "a lost lease stores nothing"
    );
    assert!(journal(w2.clone()).await.is_some());
    let stored = store
        .complete(&result("w2"), Some("fp"), &w2, None)
        .await
        .unwrap();
    assert_eq!(stored.unwrap().provider_request_id.as_deref(), Some("w2"));

    // A retry supersedes run 0; run 1 is claimed by w#3. w#2's late writes go nowhere.
    let decision = kycq::store::Decision {
        request_id: Some(&id),
        operator: "tester",
        note: None,
        reason: "retries_exhausted",
        key: Some("k1"),
    };
    store
        .retry_request(decision, |_, _, _| (RetryWrite::Supersede, ()))
        .await
        .unwrap();
    assert_eq!(journal(w2.clone()).await, None);
    assert_eq!(
        store
            .complete(&result("late"), Some("fp"), &w2, None)
            .await
            .unwrap(),
        None,
        "run 0's result is never stored as run 1's"
    );
    let w3 = claim("w#3").await;
    assert_eq!(w3.retry_round, 1);
    // The same owner with the old run's number is fenced out too.
    let stale = Fence {
        retry_round: 0,
        ..w3.clone()
    };
    assert_eq!(journal(stale.clone()).await, None);
    assert_eq!(
        store
            .complete(&result("stale"), Some("fp"), &stale, None)
            .await
            .unwrap(),
        None
    );
    let stored = store
        .complete(&result("w3"), Some("fp"), &w3, None)
        .await
        .unwrap();
    assert_eq!(stored.unwrap().provider_request_id.as_deref(), Some("w3"));
    // Once run 1 is stored, a late writer is answered with it, never overwrites it.
    let answered = store
        .complete(&result("late"), Some("fp"), &w2, None)
        .await
        .unwrap();
    assert_eq!(answered.unwrap().provider_request_id.as_deref(), Some("w3"));
    let calls: i64 =
        sqlx::query_scalar("SELECT count(*) FROM provider_calls WHERE request_id = $1")
            .bind(&id)
            .fetch_one(app.db().await)
            .await
            .unwrap();
    assert_eq!(calls, 1, "only w#2's call, in its own run, was journaled");
    app.cleanup().await;
}
