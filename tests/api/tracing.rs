//! Telemetry that follows a request: the W3C trace context (`traceparent`, `tracestate`) of a
//! request continued in the worker's spans and carried on its result and dead letters, and the
//! spans exported over OTLP/HTTP — to a tiny collector this test runs itself.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use kycq::check::{Status, Verdict};
use kycq::sandbox::scenarios::{identity, Scenario};
use kycq::telemetry::trace_context::{Incoming, TraceParent};
use lapin::options::BasicGetOptions;
use lapin::types::{AMQPValue, FieldTable, LongString};
use lapin::BasicProperties;
use serde_json::Value;

use crate::helpers::{free_port, mobile3, TestApp};
use crate::process::{signal, wait_exit};

const T: Duration = Duration::from_secs(30);

/// The trace and span of "the onboarding service that published the request".
const TRACE_ID: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
const CALLER_SPAN: &str = "00f067aa0ba902b7";
const TRACESTATE: &str = "onboarding=t61rcWkgMzE,rojo=00f067aa0ba902b7";

fn traced(traceparent: &str, tracestate: Option<&str>) -> BasicProperties {
    let mut h = FieldTable::default();
    h.insert(
        "traceparent".into(),
        AMQPValue::LongString(LongString::from(traceparent)),
    );
    if let Some(s) = tracestate {
        h.insert(
            "tracestate".into(),
            AMQPValue::LongString(LongString::from(s)),
        );
    }
    BasicProperties::default()
        .with_content_type("application/json".into())
        .with_headers(h)
}

fn incoming(props: &BasicProperties) -> Option<Incoming> {
    Incoming::from_headers(props.headers().as_ref())
}

/// A collector: every OTLP/HTTP JSON export request it received.
#[derive(Clone, Default)]
struct Collector {
    bodies: Arc<Mutex<Vec<String>>>,
}

impl Collector {
    async fn start(self, port: u16) {
        let bodies = self.bodies.clone();
        let app = axum::Router::new().route(
            "/v1/traces",
            axum::routing::post(move |body: axum::body::Bytes| {
                let bodies = bodies.clone();
                async move {
                    bodies
                        .lock()
                        .unwrap()
                        .push(String::from_utf8_lossy(&body).into_owned());
                    (
                        [(axum::http::header::CONTENT_TYPE, "application/json")],
                        "{}",
                    )
                }
            }),
        );
        let listener = tokio::net::TcpListener::bind(("127.0.0.1", port))
            .await
            .unwrap();
        tokio::spawn(async move {
            axum::serve(listener, app).await.unwrap();
        });
    }

    /// Every span received, with its resource.
    fn spans(&self) -> Vec<(Value, Value)> {
        let mut out = Vec::new();
        for body in self.bodies.lock().unwrap().iter() {
            let v: Value = serde_json::from_str(body).expect("OTLP/JSON");
            for rs in v["resourceSpans"].as_array().into_iter().flatten() {
                for ss in rs["scopeSpans"].as_array().into_iter().flatten() {
                    for s in ss["spans"].as_array().into_iter().flatten() {
                        out.push((rs["resource"].clone(), s.clone()));
                    }
                }
            }
        }
        out
    }

    fn raw(&self) -> String {
        self.bodies.lock().unwrap().join("\n")
    }
}

/// An attribute's value as text (OTLP/JSON: `{"key": …, "value": {"stringValue": …}}`; an
/// int is a string or a number).
fn attr(item: &Value, key: &str) -> Option<String> {
    let a = item["attributes"]
        .as_array()?
        .iter()
        .find(|a| a["key"] == key)?;
    let v = &a["value"];
    for k in ["stringValue", "intValue", "boolValue", "doubleValue"] {
        match &v[k] {
            Value::String(s) => return Some(s.clone()),
            Value::Null => {}
            other => return Some(other.to_string()),
        }
    }
    None
}

fn every_attribute_value(v: &Value, out: &mut Vec<String>) {
    match v {
        Value::Object(m) => {
            if let (Some(Value::String(_)), Some(value)) = (m.get("key"), m.get("value")) {
                out.push(value.to_string());
            }
            m.values().for_each(|x| every_attribute_value(x, out));
        }
        Value::Array(a) => a.iter().for_each(|x| every_attribute_value(x, out)),
        _ => {}
    }
}

#[tokio::test]
async fn a_requests_trace_is_continued_exported_and_carried_on_its_result() {
    let mut app = TestApp::new().await;
    let port = free_port();
    let collector = Collector::default();
    collector.clone().start(port).await;
    let endpoint = format!("http://127.0.0.1:{port}");
    let (mut child, log) = app.spawn_worker_process(&[
        ("KYCQ__TELEMETRY__OTLP_ENDPOINT", endpoint.as_str()),
        ("KYCQ__TELEMETRY__OTLP_PROTOCOL", "http/json"),
        ("KYCQ__TELEMETRY__SERVICE_NAME", "kycq-under-test"),
    ]);

    let who = identity(Scenario::Match, 1);
    let m = mobile3(&who);
    let caller = format!("00-{TRACE_ID}-{CALLER_SPAN}-01");
    app.publish_raw(
        "check.mobile3",
        &serde_json::to_vec(&m).unwrap(),
        traced(&caller, Some(TRACESTATE)),
    )
    .await;
    let (r, props) = app.next_result_with_properties(T).await.expect("a result");
    assert_eq!(r.request_id, m.request_id);
    assert_eq!(
        (r.status, r.verdict),
        (Status::Completed, Some(Verdict::Match))
    );

    // SIGTERM: the worker drains and flushes its spans before it exits.
    signal(&child, "-TERM");
    let status = wait_exit(&mut child, T).await;
    let text = std::fs::read_to_string(&log).unwrap_or_default();
    let _ = std::fs::remove_file(&log);
    assert!(status.is_some_and(|s| s.success()), "{status:?}: {text}");
    assert!(text.contains("exporting spans over OTLP"), "{text}");

    let spans = collector.spans();
    assert!(!spans.is_empty(), "no span exported: {text}");
    for (resource, s) in &spans {
        assert_eq!(
            s["traceId"], TRACE_ID,
            "every span is in the caller's trace: {s}"
        );
        assert_eq!(
            attr(resource, "service.name").as_deref(),
            Some("kycq-under-test")
        );
    }
    let named = |name: &str| -> Vec<&Value> {
        spans
            .iter()
            .map(|(_, s)| s)
            .filter(|s| s["name"] == name)
            .collect()
    };
    // The request's span: a child of the caller's span, named by its request id.
    let checks = named("check");
    assert_eq!(checks.len(), 1, "{spans:?}");
    let check = checks[0];
    assert_eq!(check["parentSpanId"], CALLER_SPAN);
    assert_eq!(
        attr(check, "request_id").as_deref(),
        Some(m.request_id.as_str())
    );
    assert_eq!(attr(check, "check").as_deref(), Some("mobile3"));
    assert_eq!(attr(check, "trace_id").as_deref(), Some(TRACE_ID));
    let check_span = check["spanId"].as_str().unwrap().to_owned();
    assert_eq!(check_span.len(), 16);
    // One provider call, a child of the request's span, saying how it went.
    let calls = named("provider.call");
    assert_eq!(calls.len(), 1, "{spans:?}\n{text}");
    let call = calls[0];
    assert_eq!(call["parentSpanId"], check_span.as_str());
    assert_eq!(attr(call, "provider").as_deref(), Some("tencent"));
    assert_eq!(attr(call, "action").as_deref(), Some("PhoneVerification"));
    assert_eq!(attr(call, "attempt").as_deref(), Some("1"));
    assert_eq!(attr(call, "outcome").as_deref(), Some("verdict"));
    assert_eq!(attr(call, "billed").as_deref(), Some("yes"));
    assert_eq!(attr(call, "http_status").as_deref(), Some("200"));
    assert_eq!(attr(call, "vendor_code").as_deref(), Some("0"));
    assert_eq!(
        attr(call, "vendor_request_id"),
        r.provider_request_id.clone()
    );
    // Only these two spans: no log line, no dependency's span.
    assert_eq!(spans.len(), 2, "{spans:?}");

    // The result carries the trace on: the same trace, the request's span as its parent, the
    // caller's tracestate as it came.
    let out = incoming(&props).expect("the result carries a traceparent");
    assert_eq!(
        out.parent.to_string(),
        format!("00-{TRACE_ID}-{check_span}-01")
    );
    assert_eq!(out.state.as_deref(), Some(TRACESTATE));

    // No personal data in any attribute, nor anywhere in what was exported.
    let raw = collector.raw();
    let mut values = Vec::new();
    for body in collector.bodies.lock().unwrap().iter() {
        every_attribute_value(&serde_json::from_str(body).unwrap(), &mut values);
    }
    assert!(values.len() > 10, "{values:?}");
    for secret in [&who.name, &who.id_number, &who.mobile] {
        assert!(!raw.contains(secret.as_str()), "{secret} exported: {raw}");
        assert!(
            values.iter().all(|v| !v.contains(secret.as_str())),
            "{secret} in an attribute"
        );
    }
    app.cleanup().await;
}

#[tokio::test]
async fn the_trace_is_propagated_without_export_and_a_malformed_one_is_ignored() {
    let mut app = TestApp::new().await;
    app.start_worker().await;

    // A valid traceparent, spans not exported (this in-process worker has no exporter): the
    // result is in the same trace, under a span of the worker's, the flags and tracestate kept.
    let m = mobile3(&identity(Scenario::Match, 1));
    let caller = format!("00-{TRACE_ID}-{CALLER_SPAN}-00");
    app.publish_raw(
        "check.mobile3",
        &serde_json::to_vec(&m).unwrap(),
        traced(&caller, Some(TRACESTATE)),
    )
    .await;
    let (r, props) = app.next_result_with_properties(T).await.unwrap();
    assert_eq!(
        (r.request_id.as_str(), r.status),
        (m.request_id.as_str(), Status::Completed)
    );
    let out = incoming(&props).unwrap();
    assert_eq!(out.parent.trace_id_hex(), TRACE_ID);
    assert_ne!(out.parent.span_id_hex(), CALLER_SPAN);
    assert_eq!(out.parent.flags, 0);
    assert_eq!(out.state.as_deref(), Some(TRACESTATE));

    // Malformed traceparents: a normal result, in a new trace; the tracestate is dropped.
    for bad in [
        "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7",
        "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
        "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
        "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
        "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",
        "00-xyz",
    ] {
        let m = mobile3(&identity(Scenario::Match, 1));
        app.publish_raw(
            "check.mobile3",
            &serde_json::to_vec(&m).unwrap(),
            traced(bad, Some(TRACESTATE)),
        )
        .await;
        let (r, props) = app.next_result_with_properties(T).await.unwrap();
        assert_eq!(r.request_id, m.request_id, "{bad}");
        assert_eq!(
            (r.status, r.verdict),
            (Status::Completed, Some(Verdict::Match)),
            "{bad}"
        );
        let out = incoming(&props).expect("a new trace");
        assert_ne!(out.parent.trace_id_hex(), TRACE_ID, "{bad}");
        assert_eq!(out.state, None, "{bad}");
    }
    assert!(app.dead_letters().await.is_empty());

    // No traceparent at all: a new trace too.
    let m = mobile3(&identity(Scenario::Match, 2));
    app.publish(&m).await;
    let (_, props) = app.next_result_with_properties(T).await.unwrap();
    let out = incoming(&props).unwrap();
    assert!(TraceParent::parse(&out.parent.to_string()).is_some());
    assert_eq!(out.state, None);
    app.cleanup().await;
}

#[tokio::test]
async fn a_dead_letter_carries_the_workers_span_as_its_trace_parent() {
    let mut app = TestApp::new().await;
    app.start_worker().await;
    let caller = format!("00-{TRACE_ID}-{CALLER_SPAN}-01");
    app.publish_raw(
        "check.mobile3",
        b"this is not json",
        traced(&caller, Some(TRACESTATE)),
    )
    .await;
    assert_eq!(app.wait_dead_letters(1, T).await.len(), 1);
    let ch = app.conn.create_channel().await.unwrap();
    let got = ch
        .basic_get(
            app.names.dead_queue.as_str().into(),
            BasicGetOptions { no_ack: true },
        )
        .await
        .unwrap()
        .expect("the dead letter");
    let out = incoming(&got.delivery.properties).expect("a traceparent");
    assert_eq!(out.parent.trace_id_hex(), TRACE_ID);
    assert_ne!(out.parent.span_id_hex(), CALLER_SPAN, "the worker's span");
    assert!(out.parent.sampled());
    assert_eq!(out.state.as_deref(), Some(TRACESTATE));
    let _ = ch.close(200, "ok".into()).await;
    app.cleanup().await;
}

#[tokio::test]
async fn the_rust_client_sends_its_callers_traceparent() {
    use kycq::client::{Client, ClientError, ClientOptions, Request};
    let mut app = TestApp::new().await;
    app.start_worker().await;
    let client = Client::connect_with(
        crate::helpers::AMQP_URL,
        ClientOptions {
            names: app.names.clone(),
            reply_queue: Some(format!("t-{}.traced", app.id)),
            timeout: T,
            ..Default::default()
        },
    )
    .await
    .unwrap();
    let who = identity(Scenario::Match, 3);
    let request = || Request {
        check: "mobile3".into(),
        name: who.name.clone(),
        id_number: who.id_number.clone(),
        mobile: Some(who.mobile.clone()),
        ..Default::default()
    };
    let refused = client.verify_in_trace(request(), "00-not-a-trace").await;
    assert!(
        matches!(refused, Err(ClientError::Invalid(_))),
        "{refused:?}"
    );
    let caller = format!("00-{TRACE_ID}-{CALLER_SPAN}-01");
    let r = client.verify_in_trace(request(), &caller).await.unwrap();
    assert_eq!(r.status, Status::Completed);
    // The copy on the result exchange carries the trace on.
    let (tapped, props) = app.next_result_with_properties(T).await.unwrap();
    assert_eq!(tapped.request_id, r.request_id);
    let out = incoming(&props).unwrap();
    assert_eq!(out.parent.trace_id_hex(), TRACE_ID);
    assert_ne!(out.parent.span_id_hex(), CALLER_SPAN);
    let reply_queue = client.reply_queue().to_owned();
    client.close().await;
    let ch = app.conn.create_channel().await.unwrap();
    let _ = ch
        .queue_delete(reply_queue.as_str().into(), Default::default())
        .await;
    app.cleanup().await;
}

#[tokio::test]
async fn an_unreachable_collector_never_holds_a_check_and_a_bad_endpoint_stops_the_worker() {
    let mut app = TestApp::new().await;
    // Nothing listens there: every export fails.
    let closed = format!("http://127.0.0.1:{}", free_port());
    let (mut child, log) = app.spawn_worker_process(&[
        ("KYCQ__TELEMETRY__OTLP_ENDPOINT", closed.as_str()),
        ("OTEL_BSP_SCHEDULE_DELAY", "100"),
    ]);
    let who = identity(Scenario::Match, 4);
    let m = mobile3(&who);
    let caller = format!("00-{TRACE_ID}-{CALLER_SPAN}-01");
    app.publish_raw(
        "check.mobile3",
        &serde_json::to_vec(&m).unwrap(),
        traced(&caller, None),
    )
    .await;
    let (r, props) = app.next_result_with_properties(T).await.expect("a result");
    assert_eq!(
        (r.status, r.verdict),
        (Status::Completed, Some(Verdict::Match))
    );
    assert_eq!(incoming(&props).unwrap().parent.trace_id_hex(), TRACE_ID);
    // Let a batch fail, then stop: the exit waits for the collector at most a few seconds.
    tokio::time::sleep(Duration::from_millis(500)).await;
    signal(&child, "-TERM");
    let status = wait_exit(&mut child, Duration::from_secs(20)).await;
    let text = std::fs::read_to_string(&log).unwrap_or_default();
    let _ = std::fs::remove_file(&log);
    assert!(status.is_some_and(|s| s.success()), "{status:?}: {text}");
    assert!(text.contains("BatchSpanProcessor.ExportError"), "{text}");
    for secret in [&who.name, &who.id_number, &who.mobile] {
        assert!(!text.contains(secret.as_str()), "{secret} logged: {text}");
    }

    // An endpoint that is not an http(s) URL: the worker does not start, and says which key.
    let (mut child, log) =
        app.spawn_worker_process(&[("KYCQ__TELEMETRY__OTLP_ENDPOINT", "collector:4318")]);
    let status = wait_exit(&mut child, T).await;
    let text = std::fs::read_to_string(&log).unwrap_or_default();
    let _ = std::fs::remove_file(&log);
    assert_eq!(status.and_then(|s| s.code()), Some(2), "{text}");
    assert!(
        text.contains("telemetry.otlp_endpoint") && text.contains("KYCQ__TELEMETRY__OTLP_ENDPOINT"),
        "{text}"
    );
    app.cleanup().await;
}
