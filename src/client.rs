//! A client for onboarding services: send a check to kycq and get its result back, over
//! RabbitMQ, with the worker's own types.
//!
//! ```no_run
//! # async fn run() -> Result<(), kycq::client::ClientError> {
//! use kycq::client::{Client, Request};
//!
//! let client = Client::connect("amqp://guest:guest@127.0.0.1:5672/%2f").await?;
//! let result = client
//!     .verify(Request {
//!         check: "mobile3".into(),
//!         name: "张三".into(),
//!         id_number: "11010519491231002X".into(),
//!         mobile: Some("13800138000".into()),
//!         ..Default::default()
//!     })
//!     .await?;
//! println!("{} {:?} billed {}", result.request_id, result.verdict, result.billed.as_str());
//! # Ok(()) }
//! ```
//!
//! - [`Client::verify`] publishes the request (confirmed by the broker) with `reply_to` set to
//!   the client's reply queue and `correlation_id` set to the `request_id`, and waits for the
//!   result up to [`ClientOptions::timeout`]. A `request_id` is generated unless given: give your
//!   own to make retries of the same check idempotent (kycq answers a repeated `request_id`
//!   from its stored result, never calling a provider twice).
//! - [`Client::submit`] publishes and returns at once (fire-and-forget); results still reach
//!   the result exchange (`kyc.results`, routing key `result.<check>`) and Postgres.
//! - A result that arrives after its `verify` gave up is kept (up to [`LATE_RESULTS`]) for
//!   [`Client::result`].
//! - The reply queue is durable and named ([`ClientOptions::reply_queue`]): give it a stable
//!   name and results published while this process restarts wait for it there. By default it
//!   is `kycq.client.<random>`, deleted by RabbitMQ after [`ClientOptions::reply_queue_expires`]
//!   without a consumer.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::StreamExt;
use lapin::options::{BasicAckOptions, BasicConsumeOptions, QueueDeclareOptions};
use lapin::types::{AMQPValue, FieldTable};
use lapin::Connection;
use tokio::sync::oneshot;

use crate::broker::{self, BrokerError, Publisher};
use crate::configuration::{Names, TopologySettings};

pub use crate::check::CheckResult;
/// A check request: the message contract's request (docs/src/reference/contract.md).
pub use crate::ops::enqueue::RequestMessage as Request;

/// Results kept for [`Client::result`] after their `verify` gave up (the oldest go first).
pub const LATE_RESULTS: usize = 10_000;

/// How a [`Client`] connects and waits.
#[derive(Clone, Debug)]
pub struct ClientOptions {
    /// The topology's names (the same `[topology]` settings as the workers').
    pub names: Names,
    /// The durable reply queue; None: `kycq.client.<random>`.
    pub reply_queue: Option<String>,
    /// How long RabbitMQ keeps the reply queue without a consumer.
    pub reply_queue_expires: Duration,
    /// How long [`Client::verify`] waits for a result.
    pub timeout: Duration,
    /// How long a publish waits for the broker's confirm.
    pub confirm_timeout: Duration,
}

impl Default for ClientOptions {
    fn default() -> Self {
        ClientOptions {
            names: TopologySettings::default().names(),
            reply_queue: None,
            reply_queue_expires: Duration::from_secs(3600),
            timeout: Duration::from_secs(60),
            confirm_timeout: Duration::from_secs(30),
        }
    }
}

/// What can go wrong for a client.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// RabbitMQ refused, failed, or did not confirm the publish.
    #[error(transparent)]
    Broker(#[from] BrokerError),
    /// No result within the timeout. The request was published: its result will still come
    /// ([`Client::result`]) or can be read with `kycq status <request_id>`.
    #[error("no result for {request_id} within {timeout:?}: the request was published; wait with Client::result or look it up with `kycq status {request_id}`")]
    Timeout {
        /// The request's id.
        request_id: String,
        /// How long was waited.
        timeout: Duration,
    },
    /// The reply consumer stopped (the connection was lost): connect again.
    #[error("the reply queue's consumer stopped (connection lost): connect again")]
    Disconnected,
    /// The request cannot be sent as it is (no check named).
    #[error("{0}")]
    Invalid(String),
}

#[derive(Default)]
struct Waiting {
    pending: HashMap<String, oneshot::Sender<CheckResult>>,
    late: HashMap<String, CheckResult>,
    late_order: VecDeque<String>,
    stopped: bool,
}

impl Waiting {
    fn deliver(&mut self, correlation_id: Option<String>, r: CheckResult) {
        let key = correlation_id.unwrap_or_else(|| r.request_id.clone());
        if let Some(tx) = self.pending.remove(&key) {
            if let Err(r) = tx.send(r) {
                self.keep(key, r);
            }
        } else {
            self.keep(key, r);
        }
    }

    fn keep(&mut self, key: String, r: CheckResult) {
        if self.late.insert(key.clone(), r).is_none() {
            self.late_order.push_back(key);
        }
        while self.late_order.len() > LATE_RESULTS {
            if let Some(old) = self.late_order.pop_front() {
                self.late.remove(&old);
            }
        }
    }
}

/// A connection to kycq's broker: publishes requests, receives results.
pub struct Client {
    conn: Connection,
    publisher: Publisher,
    reply_queue: String,
    waiting: Arc<Mutex<Waiting>>,
    consumer: tokio::task::JoinHandle<()>,
    timeout: Duration,
}

impl Client {
    /// Connect with the default topology names and a reply queue of its own.
    pub async fn connect(url: &str) -> Result<Client, ClientError> {
        Client::connect_with(url, ClientOptions::default()).await
    }

    /// Connect with explicit options.
    pub async fn connect_with(url: &str, o: ClientOptions) -> Result<Client, ClientError> {
        Client::connect_any_with(&[url], o).await
    }

    /// Connect to the first node of a RabbitMQ cluster that answers (each tried once, in a
    /// rotating order), with explicit options. A client does not reconnect by itself: after a
    /// connection loss, connect again (to another node) and resend what was not answered —
    /// kycq answers a request id sent twice with the same stored result.
    pub async fn connect_any_with(urls: &[&str], o: ClientOptions) -> Result<Client, ClientError> {
        let urls: Vec<secrecy::SecretString> = urls
            .iter()
            .map(|u| secrecy::SecretString::from(*u))
            .collect();
        let conn = broker::connect_any(&urls, "kycq client").await?;
        let reply_queue = o.reply_queue.clone().unwrap_or_else(|| {
            format!(
                "{}kycq.client.{}",
                prefix_of(&o.names),
                uuid::Uuid::new_v4().simple()
            )
        });
        let channel = conn.create_channel().await.map_err(BrokerError::from)?;
        let mut args = FieldTable::default();
        args.insert(
            "x-expires".into(),
            AMQPValue::LongLongInt(o.reply_queue_expires.as_millis() as i64),
        );
        channel
            .queue_declare(
                reply_queue.as_str().into(),
                QueueDeclareOptions {
                    durable: true,
                    ..Default::default()
                },
                args,
            )
            .await
            .map_err(BrokerError::from)?;
        let mut deliveries = channel
            .basic_consume(
                reply_queue.as_str().into(),
                "kycq-client".into(),
                BasicConsumeOptions::default(),
                FieldTable::default(),
            )
            .await
            .map_err(BrokerError::from)?;
        let waiting: Arc<Mutex<Waiting>> = Arc::default();
        let w = waiting.clone();
        let consumer = tokio::spawn(async move {
            let _channel = channel;
            while let Some(Ok(d)) = deliveries.next().await {
                match crate::ops::enqueue::decode_reply(&d) {
                    Ok((corr, r)) => lock(&w).deliver(corr, r),
                    Err(e) => {
                        tracing::warn!(error = %e, "kycq client: a reply that is not a result, dropped")
                    }
                }
                // Acknowledged once handed over: a crash before this leaves it in the queue.
                let _ = d.acker.ack(BasicAckOptions::default()).await;
            }
            let mut w = lock(&w);
            w.stopped = true;
            // Waiters learn that no result will come through this client.
            w.pending.clear();
        });
        let publisher = Publisher::new(&conn, o.names.clone(), o.confirm_timeout).await?;
        Ok(Client {
            conn,
            publisher,
            reply_queue,
            waiting,
            consumer,
            timeout: o.timeout,
        })
    }

    /// The reply queue's name.
    pub fn reply_queue(&self) -> &str {
        &self.reply_queue
    }

    /// Publish a request and wait for its result (up to [`ClientOptions::timeout`]). Every
    /// outcome is a result: `completed`, `rejected` (invalid input, nothing billed) or `failed`
    /// (with its reason code); an error means no result reached this client.
    pub async fn verify(&self, request: Request) -> Result<CheckResult, ClientError> {
        self.verify_within(request, self.timeout).await
    }

    /// [`Client::verify`] with its own timeout.
    pub async fn verify_within(
        &self,
        request: Request,
        timeout: Duration,
    ) -> Result<CheckResult, ClientError> {
        self.verify_traced(request, timeout, None).await
    }

    /// [`Client::verify`] as part of the caller's trace: `traceparent` (W3C Trace Context,
    /// `00-<trace-id>-<span-id>-<flags>`: the caller's current span) goes on the request as its
    /// `traceparent` header, so the worker's span for the request is that span's child and the
    /// result carries the same trace on. A value that is not a valid `traceparent` is refused
    /// ([`ClientError::Invalid`]) before anything is sent.
    pub async fn verify_in_trace(
        &self,
        request: Request,
        traceparent: &str,
    ) -> Result<CheckResult, ClientError> {
        let Some(parent) = crate::telemetry::trace_context::TraceParent::parse(traceparent) else {
            return Err(ClientError::Invalid(
                "not a W3C traceparent (00-<32 hex trace id>-<16 hex span id>-<2 hex flags>, \
                 lower case, ids not all zero)"
                    .into(),
            ));
        };
        self.verify_traced(request, self.timeout, Some(&parent))
            .await
    }

    async fn verify_traced(
        &self,
        request: Request,
        timeout: Duration,
        traceparent: Option<&crate::telemetry::trace_context::TraceParent>,
    ) -> Result<CheckResult, ClientError> {
        let request = prepared(request)?;
        let id = request.request_id.clone();
        let rx = self.wait_for(&id)?;
        let reply_to = Some(self.reply_queue.as_str());
        let sent =
            crate::ops::enqueue::publish_in_trace(&self.publisher, &request, reply_to, traceparent)
                .await;
        if let Err(e) = sent.map_err(ClientError::from) {
            lock(&self.waiting).pending.remove(&id);
            return Err(e);
        }
        self.receive(id, rx, timeout).await
    }

    /// Publish a request without waiting (its result still goes to the result exchange, to
    /// Postgres, and to this client's reply queue for [`Client::result`]). Returns the
    /// `request_id` (generated unless given).
    pub async fn submit(&self, request: Request) -> Result<String, ClientError> {
        let request = prepared(request)?;
        self.publish(&request, true).await?;
        Ok(request.request_id)
    }

    /// Wait up to `timeout` for the result of a request this client published (returns at once
    /// when it has already arrived).
    pub async fn result(
        &self,
        request_id: &str,
        timeout: Duration,
    ) -> Result<CheckResult, ClientError> {
        let rx = self.wait_for(request_id)?;
        self.receive(request_id.to_owned(), rx, timeout).await
    }

    /// Register a waiter, or answer from the results that came before it.
    fn wait_for(&self, id: &str) -> Result<oneshot::Receiver<CheckResult>, ClientError> {
        let (tx, rx) = oneshot::channel();
        let mut w = lock(&self.waiting);
        if let Some(r) = w.late.remove(id) {
            w.late_order.retain(|k| k != id);
            let _ = tx.send(r);
        } else if w.stopped {
            return Err(ClientError::Disconnected);
        } else {
            w.pending.insert(id.to_owned(), tx);
        }
        Ok(rx)
    }

    async fn receive(
        &self,
        request_id: String,
        rx: oneshot::Receiver<CheckResult>,
        timeout: Duration,
    ) -> Result<CheckResult, ClientError> {
        match tokio::time::timeout(timeout, rx).await {
            Ok(Ok(r)) => Ok(r),
            Ok(Err(_)) => Err(ClientError::Disconnected),
            Err(_) => {
                lock(&self.waiting).pending.remove(&request_id);
                Err(ClientError::Timeout {
                    request_id,
                    timeout,
                })
            }
        }
    }

    async fn publish(&self, r: &Request, reply: bool) -> Result<(), ClientError> {
        let reply_to = reply.then_some(self.reply_queue.as_str());
        crate::ops::enqueue::publish(&self.publisher, r, reply_to).await?;
        Ok(())
    }

    /// Close the connection (the reply queue stays until it expires).
    pub async fn close(self) {
        self.publisher.close().await;
        let _ = self.conn.close(200, "client closed".into()).await;
        let _ = self.consumer.await;
    }
}

/// A request ready to publish: ids and checks trimmed, an id generated unless given.
fn prepared(r: Request) -> Result<Request, ClientError> {
    let r = r.normalised();
    if r.check.is_empty() {
        return Err(ClientError::Invalid(
            "no check named: set check to mobile3, id2 or id2_period".into(),
        ));
    }
    Ok(r)
}

/// The topology prefix the names were made with (what precedes the request exchange's name).
fn prefix_of(n: &Names) -> &str {
    let base = TopologySettings::default().request_exchange;
    n.requests.strip_suffix(base.as_str()).unwrap_or("")
}

fn lock(m: &Mutex<Waiting>) -> std::sync::MutexGuard<'_, Waiting> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::check::{Billed, MaskedSubject, ReasonCode, Status};

    fn result(id: &str) -> CheckResult {
        CheckResult {
            request_id: id.into(),
            check: None,
            status: Status::Rejected,
            verdict: None,
            reason_code: ReasonCode::InvalidIdNumber,
            reason: "x".into(),
            billed: Billed::No,
            carrier: None,
            provider: None,
            provider_code: None,
            provider_request_id: None,
            attempts: 0,
            subject: MaskedSubject::default(),
            received_at: chrono::Utc::now(),
            completed_at: chrono::Utc::now(),
        }
    }

    #[test]
    fn results_go_to_their_waiter_or_are_kept_for_later() {
        let mut w = Waiting::default();
        let (tx, mut rx) = oneshot::channel();
        w.pending.insert("a".into(), tx);
        w.deliver(Some("a".into()), result("a"));
        assert_eq!(rx.try_recv().unwrap().request_id, "a");
        // No waiter: kept, by correlation id, else by request_id.
        w.deliver(None, result("b"));
        assert!(w.late.contains_key("b"));
        // A waiter that gave up: kept too.
        let (tx, rx) = oneshot::channel();
        drop(rx);
        w.pending.insert("c".into(), tx);
        w.deliver(Some("c".into()), result("c"));
        assert!(w.late.contains_key("c"));
    }

    #[test]
    fn late_results_are_bounded_oldest_first() {
        let mut w = Waiting::default();
        for i in 0..LATE_RESULTS + 5 {
            w.deliver(None, result(&format!("r{i}")));
        }
        assert_eq!(w.late.len(), LATE_RESULTS);
        assert!(!w.late.contains_key("r0") && w.late.contains_key("r5"));
    }

    #[test]
    fn requests_get_an_id_and_need_a_check() {
        let r = prepared(Request {
            check: " mobile3 ".into(),
            ..Default::default()
        })
        .unwrap();
        assert_eq!(r.check, "mobile3");
        assert_eq!(r.request_id.len(), 32);
        let given = prepared(Request {
            request_id: "mine-1".into(),
            check: "id2".into(),
            ..Default::default()
        })
        .unwrap();
        assert_eq!(given.request_id, "mine-1");
        assert!(matches!(
            prepared(Request::default()),
            Err(ClientError::Invalid(_))
        ));
    }

    #[test]
    fn the_reply_queue_takes_the_topology_prefix() {
        let mut t = TopologySettings::default();
        assert_eq!(prefix_of(&t.names()), "");
        t.prefix = "staging.".into();
        assert_eq!(prefix_of(&t.names()), "staging.");
    }
}
