//! `kycq::client` against a real worker, RabbitMQ and the sandbox: every field of the results,
//! fire-and-forget, a result that comes after `verify` gave up, and a named reply queue that
//! keeps results while no client is connected.

use std::time::Duration;

use kycq::check::mask::{mask_id_number, mask_mobile, mask_name};
use kycq::check::{Billed, CheckKind, ReasonCode, Status, Verdict};
use kycq::client::{Client, ClientError, ClientOptions, Request};
use kycq::sandbox::scenarios::{carrier_for, identity, Scenario, TestIdentity};

use crate::helpers::{TestApp, AMQP_URL};

const T: Duration = Duration::from_secs(30);

fn options(app: &TestApp, reply_queue: &str) -> ClientOptions {
    ClientOptions {
        names: app.names.clone(),
        reply_queue: Some(format!("t-{}.{reply_queue}", app.id)),
        timeout: T,
        ..Default::default()
    }
}

fn mobile3(who: &TestIdentity) -> Request {
    Request {
        check: "mobile3".into(),
        name: who.name.clone(),
        id_number: who.id_number.clone(),
        mobile: Some(who.mobile.clone()),
        ..Default::default()
    }
}

async fn delete_queue(name: &str) {
    let conn = kycq::broker::connect(AMQP_URL, "kycq test cleanup")
        .await
        .unwrap();
    let ch = conn.create_channel().await.unwrap();
    let _ = ch.queue_delete(name.into(), Default::default()).await;
    let _ = conn.close(200, "done".into()).await;
}

#[tokio::test]
async fn verify_returns_every_field_of_the_result() {
    let mut app = TestApp::new().await;
    app.start_worker().await;
    let client = Client::connect_with(AMQP_URL, options(&app, "replies"))
        .await
        .unwrap();
    let reply_queue = client.reply_queue().to_owned();

    // A match, under an id of our own.
    let who = identity(Scenario::Match, 201);
    let mut req = mobile3(&who);
    req.request_id = format!("client-{}", app.id);
    let r = client.verify(req).await.unwrap();
    assert_eq!(r.request_id, format!("client-{}", app.id));
    assert_eq!(r.check, Some(CheckKind::Mobile3));
    assert_eq!(r.status, Status::Completed);
    assert_eq!(r.verdict, Some(Verdict::Match));
    assert_eq!(r.reason_code, ReasonCode::Match);
    assert!(!r.reason.is_empty());
    assert_eq!(r.billed, Billed::Yes);
    assert_eq!(r.provider.as_deref(), Some("tencent"));
    assert_eq!(r.provider_code.as_deref(), Some("0"));
    assert!(r.carrier.is_some());
    assert_eq!(r.carrier, carrier_for(&who.mobile));
    assert!(r
        .provider_request_id
        .as_deref()
        .is_some_and(|s| !s.is_empty()));
    assert_eq!(r.attempts, 1);
    assert_eq!(r.subject.name, Some(mask_name(&who.name)));
    assert_eq!(r.subject.id_number, Some(mask_id_number(&who.id_number)));
    assert_eq!(r.subject.mobile, Some(mask_mobile(&who.mobile)));
    assert!(r.received_at <= r.completed_at);

    // A generated id; an invalid ID number is a `rejected` result, nothing billed or called.
    let mut bad = mobile3(&identity(Scenario::Match, 202));
    bad.id_number = "110105194912310021".into();
    let calls = app.sandbox.ledger.len();
    let r = client.verify(bad).await.unwrap();
    assert_eq!(r.request_id.len(), 32);
    assert_eq!(r.status, Status::Rejected);
    assert_eq!(r.verdict, None);
    assert_eq!(r.reason_code, ReasonCode::InvalidIdNumber);
    assert_eq!((r.billed, r.attempts, r.provider), (Billed::No, 0, None));
    assert_eq!(app.sandbox.ledger.len(), calls);

    // The same request_id again is answered from the stored result: no second call.
    let mut again = mobile3(&who);
    again.request_id = format!("client-{}", app.id);
    let calls = app.sandbox.ledger.len();
    let r = client.verify(again).await.unwrap();
    assert_eq!((r.status, r.billed), (Status::Completed, Billed::Yes));
    assert_eq!(app.sandbox.ledger.len(), calls);

    // Fire-and-forget; the result still reaches the client.
    let id = client
        .submit(mobile3(&identity(Scenario::NameMismatch, 203)))
        .await
        .unwrap();
    let r = client.result(&id, T).await.unwrap();
    assert_eq!(
        (r.status, r.verdict, r.reason_code),
        (
            Status::Completed,
            Some(Verdict::Mismatch),
            ReasonCode::NameMismatch
        )
    );

    // No check named: refused before anything is sent.
    assert!(matches!(
        client.verify(Request::default()).await,
        Err(ClientError::Invalid(_))
    ));

    client.close().await;
    delete_queue(&reply_queue).await;
    app.cleanup().await;
}

#[tokio::test]
async fn a_late_result_waits_for_the_client() {
    let mut app = TestApp::new().await;
    app.start_worker().await;
    let client = Client::connect_with(AMQP_URL, options(&app, "late"))
        .await
        .unwrap();
    let reply_queue = client.reply_queue().to_owned();

    // verify gives up before the worker answers; the result comes later all the same.
    let mut req = mobile3(&identity(Scenario::BusyOnce, 204));
    req.request_id = format!("late-{}", app.id);
    match client.verify_within(req, Duration::from_millis(1)).await {
        Err(ClientError::Timeout { request_id, .. }) => {
            assert_eq!(request_id, format!("late-{}", app.id))
        }
        other => panic!("expected a timeout, got {other:?}"),
    }
    let r = client.result(&format!("late-{}", app.id), T).await.unwrap();
    assert_eq!(r.status, Status::Completed);
    client.close().await;

    // A named reply queue keeps results while no client is connected.
    let first = Client::connect_with(AMQP_URL, options(&app, "late"))
        .await
        .unwrap();
    let id = first
        .submit(mobile3(&identity(Scenario::Match, 205)))
        .await
        .unwrap();
    first.close().await;
    let _ = app.result_of(&id).await;
    let second = Client::connect_with(AMQP_URL, options(&app, "late"))
        .await
        .unwrap();
    let r = second.result(&id, T).await.unwrap();
    assert_eq!(
        (r.request_id.as_str(), r.status),
        (id.as_str(), Status::Completed)
    );
    second.close().await;

    delete_queue(&reply_queue).await;
    app.cleanup().await;
}
