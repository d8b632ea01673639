//! Group commit: many requests' writes in one transaction, a value Postgres refuses hurting only
//! its own request, and SIGKILLs at the batch boundaries (after a batch of journal rows commits,
//! before its calls are sent; after an answer, before the batch that journals it).

use std::time::Duration;

use kycq::check::{Billed, CheckKind, MaskedSubject, ReasonCode, Status};
use kycq::fault::{classify_store, FaultClass};
use kycq::sandbox::scenarios::{identity, Scenario};
use kycq::sandbox::SandboxSettings;
use kycq::store::{Claim, GroupCommit, Store};

use crate::helpers::{mobile3, Options, TestApp};
use crate::process::{signal, wait_exit};

fn subject() -> MaskedSubject {
    MaskedSubject {
        name: Some("张*".into()),
        id_number: Some("1101**********1234".into()),
        mobile: None,
    }
}

async fn store(app: &TestApp) -> Store {
    kycq::store::connect_and_migrate(&app.settings.database)
        .await
        .expect("the test database")
        .with_group_commit(GroupCommit {
            writers: 1,
            max_ops: 256,
            linger: Duration::ZERO,
        })
}

/// Claims of `ids` submitted together while the writer is held on a table lock, so that they
/// queue up behind it; returns each claim's answer.
async fn claims_queued_behind_a_lock(
    app: &TestApp,
    store: &Store,
    claims: Vec<(String, String, String)>,
) -> Vec<Result<Claim, kycq::store::StoreError>> {
    let db = app.db().await;
    let mut blocker = db.begin().await.unwrap();
    sqlx::query("LOCK TABLE checks IN EXCLUSIVE MODE")
        .execute(&mut *blocker)
        .await
        .unwrap();
    let s = store.clone();
    let first = tokio::spawn(async move {
        s.claim(
            &format!("first-{}", kycq_unique()),
            CheckKind::Id2,
            &subject(),
            "fp",
            "w#first",
            Duration::from_secs(30),
            None,
        )
        .await
    });
    // The writer is now waiting for the lock with the first claim…
    loop {
        let waiting: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM pg_locks WHERE NOT granted AND relation = 'checks'::regclass",
        )
        .fetch_one(db)
        .await
        .unwrap();
        if waiting > 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    // …and everything submitted meanwhile waits for the next batch.
    let tasks: Vec<_> = claims
        .into_iter()
        .map(|(id, fp, owner)| {
            let s = store.clone();
            tokio::spawn(async move {
                s.claim(
                    &id,
                    CheckKind::Id2,
                    &subject(),
                    &fp,
                    &owner,
                    Duration::from_secs(30),
                    None,
                )
                .await
            })
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(300)).await;
    blocker.rollback().await.unwrap();
    assert!(matches!(
        first.await.unwrap().unwrap(),
        Claim::Claimed { fresh: true, .. }
    ));
    let mut out = Vec::new();
    for t in tasks {
        out.push(t.await.unwrap());
    }
    out
}

fn kycq_unique() -> String {
    crate::helpers::unique()
}

/// Transactions that wrote the rows of `ids` (rows written in one transaction share `xmin`).
async fn transactions(app: &TestApp, ids: &[String]) -> i64 {
    sqlx::query_scalar("SELECT count(DISTINCT xmin::text) FROM checks WHERE request_id = ANY($1)")
        .bind(ids)
        .fetch_one(app.db().await)
        .await
        .unwrap()
}

#[tokio::test]
async fn writes_queued_together_share_one_commit_and_duplicates_are_answered_apart() {
    let app = TestApp::new().await;
    let store = store(&app).await;
    let ids: Vec<String> = (0..40).map(|i| format!("gc-{i:02}-{}", app.id)).collect();
    let mut claims: Vec<_> = ids
        .iter()
        .map(|id| (id.clone(), "fp".to_owned(), format!("w#{id}")))
        .collect();
    // One request delivered three times at once.
    let dup = format!("dup-{}", app.id);
    for owner in ["w#a", "w#b", "w#c"] {
        claims.push((dup.clone(), "fp".into(), owner.into()));
    }
    let answers = claims_queued_behind_a_lock(&app, &store, claims).await;
    for a in &answers[..40] {
        assert!(matches!(a, Ok(Claim::Claimed { fresh: true, .. })), "{a:?}");
    }
    let held: Vec<_> = answers[40..]
        .iter()
        .map(|a| match a {
            Ok(Claim::Claimed { fresh, .. }) => format!("claimed fresh={fresh}"),
            Ok(Claim::Leased { .. }) => "leased".into(),
            other => format!("{other:?}"),
        })
        .collect();
    assert_eq!(
        held.iter().filter(|h| *h == "claimed fresh=true").count(),
        1,
        "one delivery holds the request: {held:?}"
    );
    assert_eq!(
        held.iter().filter(|h| *h == "leased").count(),
        2,
        "{held:?}"
    );
    // 40 claims queued together: one commit (a few more at most, if some came late).
    let tx = transactions(&app, &ids).await;
    assert!(tx <= 3, "40 queued claims took {tx} transactions");
    app.cleanup().await;
}

#[tokio::test]
async fn a_value_postgres_refuses_fails_only_its_own_write() {
    let app = TestApp::new().await;
    let store = store(&app).await;
    let ids: Vec<String> = (0..40).map(|i| format!("ok-{i:02}-{}", app.id)).collect();
    let mut claims: Vec<_> = ids
        .iter()
        .map(|id| (id.clone(), "fp".to_owned(), format!("w#{id}")))
        .collect();
    // A NUL: Postgres refuses it in text (SQLSTATE 22021), every time.
    claims.insert(
        17,
        (format!("bad-{}", app.id), "f\0p".into(), "w#bad".into()),
    );
    let answers = claims_queued_behind_a_lock(&app, &store, claims).await;
    let bad = &answers[17];
    let e = bad.as_ref().expect_err("the refused write fails");
    assert!(
        matches!(classify_store(e), FaultClass::Deterministic { .. }),
        "{e}"
    );
    for (i, a) in answers.iter().enumerate().filter(|(i, _)| *i != 17) {
        assert!(
            matches!(a, Ok(Claim::Claimed { fresh: true, .. })),
            "write {i}: {a:?}"
        );
    }
    // Found by halving, not by writing all 40 one by one.
    let tx = transactions(&app, &ids).await;
    assert!(tx < 20, "the 40 good claims took {tx} transactions");
    app.cleanup().await;
}

/// Requests published before a worker with `KYCQ_FAILPOINT=<point>` starts; it kills itself
/// there. Returns the messages and the worker's log.
async fn killed_at(
    app: &mut TestApp,
    point: &str,
    n: u32,
) -> Vec<kycq::ops::enqueue::RequestMessage> {
    let mut sent = Vec::new();
    for v in 0..n {
        let m = mobile3(&identity(Scenario::Match, 500 + v));
        app.publish(&m).await;
        sent.push(m);
    }
    let (mut worker, log) = app.spawn_worker_process(&[
        ("KYCQ_FAILPOINT", point),
        ("KYCQ__WORKER__CONCURRENCY", "8"),
        ("KYCQ__AMQP__PREFETCH", "8"),
    ]);
    let status = wait_exit(&mut worker, Duration::from_secs(60))
        .await
        .expect("the worker reaches the failpoint");
    let logs = std::fs::read_to_string(&log).unwrap();
    assert!(
        !status.success() && logs.contains(&format!("KYCQ_FAILPOINT={point}")),
        "{status:?}\n{logs}"
    );
    sent
}

#[tokio::test]
async fn sigkill_after_a_batch_of_journal_rows_commits_never_calls_them_twice() {
    let mut app = TestApp::with(Options {
        sandbox: SandboxSettings {
            listen: "127.0.0.1:0".parse().unwrap(),
            latency: Duration::from_millis(50),
            ..SandboxSettings::default()
        },
        ..Default::default()
    })
    .await;
    let sent = killed_at(&mut app, "journal_committed", 8).await;
    // Killed before any call left: the journal holds rows for calls the vendor never saw.
    for m in &sent {
        assert_eq!(app.sandbox.ledger.calls_for_id(&m.id_number), 0);
    }
    let journaled: i64 = sqlx::query_scalar("SELECT count(*) FROM provider_calls")
        .fetch_one(app.db().await)
        .await
        .unwrap();
    assert!(journaled >= 1);
    let (mut second, _log) = app.spawn_worker_process(&[]);
    let ids: Vec<String> = sent.iter().map(|m| m.request_id.clone()).collect();
    let results = app.results_for(&ids, Duration::from_secs(60)).await;
    let mut unknown = 0;
    for m in &sent {
        let r = &results[&m.request_id][0];
        let calls = app.sandbox.ledger.calls_for_id(&m.id_number);
        match (r.status, r.reason_code, r.billed) {
            // Its journal row was in the committed batch: the call may have been sent as far
            // as the journal knows — never sent again, left to the operator (`kycq dlq`).
            (Status::Failed, ReasonCode::BillingUnknown, Billed::Unknown) => {
                unknown += 1;
                assert_eq!(calls, 0, "{}", m.request_id);
            }
            (Status::Completed, _, Billed::Yes) => assert_eq!(calls, 1, "{}", m.request_id),
            other => panic!("{}: {other:?}", m.request_id),
        }
    }
    assert_eq!(
        unknown, journaled,
        "one billing_unknown per journal row of the killed batch"
    );
    assert_exactly_one_row_each(&app, &ids).await;
    signal(&second, "-TERM");
    let _ = wait_exit(&mut second, Duration::from_secs(20)).await;
    app.cleanup().await;
}

#[tokio::test]
async fn sigkill_between_an_answer_and_the_batch_that_journals_it_never_calls_again() {
    let mut app = TestApp::with(Options {
        sandbox: SandboxSettings {
            listen: "127.0.0.1:0".parse().unwrap(),
            latency: Duration::from_millis(50),
            ..SandboxSettings::default()
        },
        ..Default::default()
    })
    .await;
    let sent = killed_at(&mut app, "answer_received", 8).await;
    let (mut second, _log) = app.spawn_worker_process(&[]);
    let ids: Vec<String> = sent.iter().map(|m| m.request_id.clone()).collect();
    let results = app.results_for(&ids, Duration::from_secs(60)).await;
    let mut unknown = 0;
    for m in &sent {
        let calls = app.sandbox.ledger.calls_for_id(&m.id_number);
        let r = &results[&m.request_id][0];
        match (r.status, r.reason_code, r.billed) {
            // In flight or answered when the worker died (or journaled, about to be sent):
            // billing unknown, never called again.
            (Status::Failed, ReasonCode::BillingUnknown, Billed::Unknown) => {
                unknown += 1;
                assert!(calls <= 1, "{}: {calls} calls", m.request_id);
            }
            // Called once, by whichever worker sent it.
            (Status::Completed, _, Billed::Yes) => assert_eq!(calls, 1, "{}", m.request_id),
            other => panic!("{}: {other:?}", m.request_id),
        }
    }
    assert!(unknown >= 1, "the killed worker had an answer in hand");
    // The journal keeps each in-doubt call open, as it was when the worker died.
    let open: i64 =
        sqlx::query_scalar("SELECT count(*) FROM provider_calls WHERE finished_at IS NULL")
            .fetch_one(app.db().await)
            .await
            .unwrap();
    assert_eq!(open, unknown);
    assert_exactly_one_row_each(&app, &ids).await;
    signal(&second, "-TERM");
    let _ = wait_exit(&mut second, Duration::from_secs(20)).await;
    app.cleanup().await;
}

async fn assert_exactly_one_row_each(app: &TestApp, ids: &[String]) {
    let rows: Vec<(String, bool)> = sqlx::query_as(
        "SELECT request_id, completed_at IS NOT NULL FROM checks WHERE request_id = ANY($1)",
    )
    .bind(ids)
    .fetch_all(app.db().await)
    .await
    .unwrap();
    assert_eq!(rows.len(), ids.len());
    assert!(rows.iter().all(|(_, done)| *done), "{rows:?}");
}
