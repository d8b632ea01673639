//! Dead letters an operator acts on, through the real broker, Postgres, an in-process worker and
//! the sandbox: `retry` runs a request again under its own request_id (the superseded result
//! kept, the journal continued), `resolve` records the billing found for a `billing_unknown`,
//! `retry --all` and `replay --all` handle each dead letter at most once with exact counts, and
//! malformed messages can only be purged.

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
async fn app() -> TestApp {
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
