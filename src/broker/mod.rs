//! RabbitMQ: connecting, the topology of docs/src/reference/contract.md ("Topology",
//! declared idempotently), confirmed publishing of results and requests, and dead letters
//! with their reason.

pub mod dlq;

use std::sync::Arc;
use std::time::Duration;

use lapin::options::{
    BasicPublishOptions, ConfirmSelectOptions, ExchangeDeclareOptions, QueueBindOptions,
    QueueDeclareOptions,
};
use lapin::protocol::{AMQPErrorKind, AMQPSoftError};
use lapin::types::{AMQPValue, FieldTable, LongString, ShortString};
use lapin::{
    BasicProperties, Channel, Confirmation, Connection, ConnectionProperties, ExchangeKind,
};

use crate::check::CheckResult;
use crate::configuration::Names;

/// A broker problem.
#[derive(Debug, thiserror::Error)]
pub enum BrokerError {
    /// Connection or channel failure.
    #[error("rabbitmq: {0}")]
    Amqp(#[from] lapin::Error),
    /// An existing object was declared with other arguments.
    #[error(
        "{kind} `{name}` already exists with different arguments ({broker}). kycq never deletes a \
         queue that holds messages: run `kycq setup` for how to migrate it, or point \
         KYCQ__TOPOLOGY__PREFIX / KYCQ__TOPOLOGY__* at new names"
    )]
    Inequivalent {
        /// `exchange` or `queue`.
        kind: &'static str,
        /// The object's name.
        name: String,
        /// The broker's words, which name the differing argument.
        broker: String,
    },
    /// The broker refused a publish (nack) or did not confirm in time.
    #[error("publish to `{0}` was not confirmed: {1}")]
    NotConfirmed(String, String),
    /// The broker did not answer in time (what was being done).
    #[error("rabbitmq: no answer in time while {0}")]
    Timeout(String),
}

/// Connect to RabbitMQ on the tokio runtime. `name` shows in the management UI.
pub async fn connect(url: &str, name: &str) -> Result<Connection, BrokerError> {
    // lapin runs on the current tokio runtime (its `tokio` feature): no thread or reactor of its
    // own. No automatic recovery: the worker reconnects itself (`worker::run`).
    let props = ConnectionProperties::default().with_connection_name(name.into());
    Ok(Connection::connect(url, props).await?)
}

/// How long one node may take to accept a connection before the next one is tried (a node
/// whose host is down does not refuse: it never answers).
pub const NODE_CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// Where the next [`connect_any`] starts in the node list: seeded per process (so workers
/// spread over the nodes) and moved on by every call (so a reconnection after a node stops
/// tries another node first).
static NEXT_NODE: std::sync::OnceLock<std::sync::atomic::AtomicUsize> = std::sync::OnceLock::new();

/// The order [`connect_any`] tries `n` nodes in: every node once, starting at a rotating
/// position.
pub fn node_order(n: usize) -> Vec<usize> {
    if n == 0 {
        return Vec::new();
    }
    let next = NEXT_NODE.get_or_init(|| {
        // Seeded per process (pid and clock): no two workers start on the same node by rule.
        let seed = std::process::id() as usize
            ^ std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.subsec_nanos() as usize)
                .unwrap_or(0);
        std::sync::atomic::AtomicUsize::new(seed)
    });
    let start = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed) % n;
    (0..n).map(|i| (start + i) % n).collect()
}

/// `host:port` of an AMQP URL, for logs (never its user or password).
pub fn node_label(url: &str) -> String {
    match url::Url::parse(url) {
        Ok(u) => {
            let port = u
                .port()
                .unwrap_or(if u.scheme() == "amqps" { 5671 } else { 5672 });
            format!("{}:{port}", u.host_str().unwrap_or("?"))
        }
        Err(_) => "(unparsable URL)".into(),
    }
}

/// Connect to the first node of a RabbitMQ cluster that answers, trying every node once in a
/// rotating order ([`node_order`]); each gets [`NODE_CONNECT_TIMEOUT`]. The error is the last
/// node's. Logs the node connected to (`host:port` only).
pub async fn connect_any(
    urls: &[secrecy::SecretString],
    name: &str,
) -> Result<Connection, BrokerError> {
    use secrecy::ExposeSecret;
    let mut last = None;
    for i in node_order(urls.len()) {
        let url = urls[i].expose_secret();
        let node = node_label(url);
        match tokio::time::timeout(NODE_CONNECT_TIMEOUT, connect(url, name)).await {
            Ok(Ok(conn)) => {
                if urls.len() > 1 {
                    tracing::info!(node = %node, "connected to RabbitMQ");
                }
                return Ok(conn);
            }
            Ok(Err(e)) => {
                if urls.len() > 1 {
                    tracing::warn!(node = %node, error = %e, "RabbitMQ node unavailable; trying the next");
                }
                last = Some(e);
            }
            Err(_) => {
                if urls.len() > 1 {
                    tracing::warn!(node = %node, "RabbitMQ node did not answer in time; trying the next");
                }
                last = Some(BrokerError::Timeout(format!("connecting to {node}")));
            }
        }
    }
    Err(last
        .unwrap_or_else(|| BrokerError::Timeout("connecting: no RabbitMQ node configured".into())))
}

/// The work queue's arguments (docs/src/reference/contract.md, "Topology").
pub fn work_queue_arguments(names: &Names, delivery_limit: u32) -> FieldTable {
    let mut t = FieldTable::default();
    t.insert(
        "x-queue-type".into(),
        AMQPValue::LongString("quorum".into()),
    );
    t.insert(
        "x-dead-letter-exchange".into(),
        AMQPValue::LongString(names.dead_exchange.as_str().into()),
    );
    t.insert(
        "x-delivery-limit".into(),
        AMQPValue::LongInt(delivery_limit as i32),
    );
    t.insert(
        "x-dead-letter-strategy".into(),
        AMQPValue::LongString("at-least-once".into()),
    );
    t.insert(
        "x-overflow".into(),
        AMQPValue::LongString("reject-publish".into()),
    );
    t
}

/// Declare every object, idempotently. A mismatch with an existing object stops with a message
/// that names it and the broker's account of the differing argument.
pub async fn declare_topology(
    conn: &Connection,
    names: &Names,
    delivery_limit: u32,
) -> Result<(), BrokerError> {
    let durable_exchange = ExchangeDeclareOptions {
        durable: true,
        ..Default::default()
    };
    let durable_queue = QueueDeclareOptions {
        durable: true,
        ..Default::default()
    };
    // Each failed declare closes its channel, so every step gets a fresh one.
    for (name, kind) in [
        (&names.dead_exchange, ExchangeKind::Fanout),
        (&names.requests, ExchangeKind::Topic),
        (&names.results, ExchangeKind::Topic),
    ] {
        let ch = conn.create_channel().await?;
        ch.exchange_declare(
            name.as_str().into(),
            kind,
            durable_exchange,
            FieldTable::default(),
        )
        .await
        .map_err(|e| inequivalent(e, "exchange", name))?;
        let _ = ch.close(200, "ok".into()).await;
    }
    let ch = conn.create_channel().await?;
    // The dead-letter queue is a classic durable queue: inspecting it (get + requeue) must never
    // count towards a delivery limit.
    match ch
        .queue_declare(
            names.dead_queue.as_str().into(),
            durable_queue,
            FieldTable::default(),
        )
        .await
    {
        Ok(_) => {
            ch.queue_bind(
                names.dead_queue.as_str().into(),
                names.dead_exchange.as_str().into(),
                "".into(),
                QueueBindOptions::default(),
                FieldTable::default(),
            )
            .await?;
            let _ = ch.close(200, "ok".into()).await;
        }
        // A classic queue lives on one node of a cluster: while that node is stopped the queue
        // (and its binding) exists but cannot be declared. The work goes on; dead-lettering
        // waits for the node (https://www.rabbitmq.com/docs/clustering).
        Err(e) if home_node_down(&e) => {
            tracing::warn!(queue = %names.dead_queue, error = %e, "the dead-letter queue's RabbitMQ node is down: going on without declaring it; dead letters wait until that node is back");
        }
        Err(e) => return Err(inequivalent(e, "queue", &names.dead_queue)),
    }
    let ch = conn.create_channel().await?;
    ch.queue_declare(
        names.work_queue.as_str().into(),
        durable_queue,
        work_queue_arguments(names, delivery_limit),
    )
    .await
    .map_err(|e| inequivalent(e, "queue", &names.work_queue))?;
    ch.queue_bind(
        names.work_queue.as_str().into(),
        names.requests.as_str().into(),
        "check.#".into(),
        QueueBindOptions::default(),
        FieldTable::default(),
    )
    .await?;
    let _ = ch.close(200, "ok".into()).await;
    declare_wait_queue(conn, names).await
}

/// The wait queue's arguments: a quorum queue (replicated like the work queue) whose expired
/// messages are dead-lettered back to the request exchange at least once (RabbitMQ 3.10+:
/// per-message TTL on quorum queues, `at-least-once` dead-lettering, which needs
/// `reject-publish`) — a parked request is never dropped on its way back.
pub fn wait_queue_arguments(names: &Names) -> FieldTable {
    let mut t = FieldTable::default();
    let s = |v: &str| AMQPValue::LongString(LongString::from(v));
    t.insert("x-queue-type".into(), s("quorum"));
    t.insert("x-dead-letter-exchange".into(), s(&names.requests));
    t.insert("x-dead-letter-strategy".into(), s("at-least-once"));
    t.insert("x-overflow".into(), s("reject-publish"));
    t
}

/// The wait queue: a fanout exchange and a durable quorum queue of the same name. A parked
/// request carries its own TTL (`expiration`); when it runs out the broker dead-letters it back
/// to the request exchange with its routing key (`check.<kind>`) kept — the standard delayed
/// retry pattern, no plugin needed.
async fn declare_wait_queue(conn: &Connection, names: &Names) -> Result<(), BrokerError> {
    let ch = conn.create_channel().await?;
    ch.exchange_declare(
        names.wait_queue.as_str().into(),
        ExchangeKind::Fanout,
        ExchangeDeclareOptions {
            durable: true,
            ..Default::default()
        },
        FieldTable::default(),
    )
    .await
    .map_err(|e| inequivalent(e, "exchange", &names.wait_queue))?;
    let _ = ch.close(200, "ok".into()).await;
    let ch = conn.create_channel().await?;
    ch.queue_declare(
        names.wait_queue.as_str().into(),
        QueueDeclareOptions {
            durable: true,
            ..Default::default()
        },
        wait_queue_arguments(names),
    )
    .await
    .map_err(|e| inequivalent(e, "queue", &names.wait_queue))?;
    ch.queue_bind(
        names.wait_queue.as_str().into(),
        names.wait_queue.as_str().into(),
        "".into(),
        QueueBindOptions::default(),
        FieldTable::default(),
    )
    .await?;
    let _ = ch.close(200, "ok".into()).await;
    Ok(())
}

/// The broker's answer for a durable classic queue whose node is down (404 `NOT_FOUND - home
/// node … is down or inaccessible`).
fn home_node_down(e: &lapin::Error) -> bool {
    matches!(e.kind(), lapin::ErrorKind::ProtocolError(p)
        if matches!(p.kind(), AMQPErrorKind::Soft(AMQPSoftError::NOTFOUND))
            && p.get_message().as_str().contains("home node"))
}

fn inequivalent(e: lapin::Error, kind: &'static str, name: &str) -> BrokerError {
    if let lapin::ErrorKind::ProtocolError(p) = e.kind() {
        if matches!(
            p.kind(),
            AMQPErrorKind::Soft(AMQPSoftError::PRECONDITIONFAILED)
        ) {
            return BrokerError::Inequivalent {
                kind,
                name: name.to_owned(),
                broker: p.get_message().to_string(),
            };
        }
    }
    BrokerError::Amqp(e)
}

/// Headers kycq puts on what it dead-letters.
pub mod headers {
    /// The prefix of every header kycq sets; no other header with it is kept.
    pub const PREFIX: &str = "x-kycq-";
    /// Short machine reason (`not_json`, `retries_exhausted`, `billing_unknown`…).
    pub const REASON: &str = "x-kycq-reason";
    /// A sentence (never personal data).
    pub const DETAIL: &str = "x-kycq-detail";
    /// Provider calls made.
    pub const ATTEMPTS: &str = "x-kycq-attempts";
    /// The routing key the request was published with (used by replay).
    pub const ROUTING_KEY: &str = "x-kycq-routing-key";
    /// The request id, when there was one.
    pub const REQUEST_ID: &str = "x-kycq-request-id";
    /// When it was dead-lettered (RFC 3339).
    pub const AT: &str = "x-kycq-dead-lettered-at";
    /// On a parked request: when it first had to wait (RFC 3339).
    pub const WAITING_SINCE: &str = "x-kycq-waiting-since";
    /// On a parked request: how many times it was parked.
    pub const PARKS: &str = "x-kycq-parks";
    /// The run of the request the dead letter belongs to (`checks.retry_round`: 0 = the first;
    /// each `kycq dlq retry` adds one). Absent when the request was never claimed.
    pub const RETRY_ROUND: &str = "x-kycq-retry-round";
}

/// The client's headers without any `x-kycq-*` one (kycq's own are never taken from a client).
fn client_headers(original: &BasicProperties) -> FieldTable {
    let mut h = FieldTable::default();
    let Some(original) = original.headers() else {
        return h;
    };
    for (k, v) in original.inner() {
        let kycq_own = k
            .as_str()
            .get(..headers::PREFIX.len())
            .is_some_and(|p| p.eq_ignore_ascii_case(headers::PREFIX));
        if !kycq_own {
            h.insert(k.clone(), v.clone());
        }
    }
    h
}

/// Why a parked request waits, and since when.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Park {
    /// How long it stays in the wait queue (its message TTL).
    pub wait: Duration,
    /// When it first had to wait (kept across parks).
    pub waiting_since: chrono::DateTime<chrono::Utc>,
    /// Times parked before this one.
    pub parks: u32,
}

/// Why a request is dead-lettered, with what to tell an operator.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DeadLetter {
    /// Short machine reason.
    pub reason: String,
    /// A sentence.
    pub detail: String,
    /// Provider calls made.
    pub attempts: u32,
    /// The request id, if known.
    pub request_id: Option<String>,
    /// The run of the request it ended (`checks.retry_round`), when it was claimed.
    pub retry_round: Option<i32>,
}

/// Publishes with publisher confirms on one channel.
#[derive(Clone)]
pub struct Publisher {
    channel: Channel,
    names: Names,
    confirm_timeout: Duration,
    replies: Option<Arc<Replies>>,
}

/// Publish persistent on `channel` (in confirm mode) and wait up to `timeout` for the broker's
/// confirm; a nack or no confirm in time is [`BrokerError::NotConfirmed`] naming the target.
/// `mandatory`: a message no queue takes is returned by the broker (and still confirmed), which
/// is then an error too — never acknowledged as delivered.
async fn publish_and_confirm(
    channel: &Channel,
    exchange: &str,
    routing_key: &str,
    body: &[u8],
    props: BasicProperties,
    timeout: Duration,
    mandatory: bool,
) -> Result<(), BrokerError> {
    let target = if exchange.is_empty() {
        routing_key
    } else {
        exchange
    };
    let (Ok(exchange_name), Ok(key)) = (
        ShortString::try_new(exchange),
        ShortString::try_new(routing_key),
    ) else {
        return Err(BrokerError::NotConfirmed(
            target.into(),
            "not sent: an AMQP name is at most 255 bytes".into(),
        ));
    };
    let confirm = channel
        .basic_publish(
            exchange_name,
            key,
            BasicPublishOptions {
                mandatory,
                ..Default::default()
            },
            body,
            props.with_delivery_mode(2),
        )
        .await?;
    match tokio::time::timeout(timeout, confirm).await {
        Ok(Ok(Confirmation::Ack(Some(_)))) => Err(BrokerError::NotConfirmed(
            target.into(),
            format!("unroutable: no queue is bound for routing key {routing_key} (returned by the broker; run `kycq setup`)"),
        )),
        Ok(Ok(Confirmation::Ack(None))) | Ok(Ok(Confirmation::NotRequested)) => Ok(()),
        Ok(Ok(Confirmation::Nack(_))) => Err(BrokerError::NotConfirmed(
            target.into(),
            "nack (refused: e.g. a full queue)".into(),
        )),
        Ok(Err(e)) => Err(e.into()),
        Err(_) => Err(BrokerError::NotConfirmed(target.into(), "timed out".into())),
    }
}

/// Replies to a request's `reply_to`, on a connection of their own: a destination is the
/// client's business, and a broker refusal (a made-up `amq.rabbitmq.reply-to.*` name makes the
/// broker close the whole connection; a full queue refuses publishes) closes at most this
/// disposable connection, never the worker's.
pub struct Replies {
    urls: Vec<secrecy::SecretString>,
    name: String,
    link: tokio::sync::Mutex<Option<(Connection, Channel)>>,
    timeout: Duration,
}

impl Replies {
    /// Publish `body` to the queue `reply_to` and wait for the broker's confirm. Any failure
    /// drops the connection (the next reply opens a new one).
    async fn send(
        &self,
        reply_to: &str,
        body: &[u8],
        props: BasicProperties,
    ) -> Result<(), BrokerError> {
        let mut link = self.link.lock().await;
        if !link
            .as_ref()
            .is_some_and(|(c, ch)| c.status().connected() && ch.status().connected())
        {
            let conn = connect_any(&self.urls, &self.name).await?;
            let channel = conn.create_channel().await?;
            channel
                .confirm_select(ConfirmSelectOptions::default())
                .await?;
            *link = Some((conn, channel));
        }
        let channel = link.as_ref().expect("connected above").1.clone();
        let sent =
            publish_and_confirm(&channel, "", reply_to, body, props, self.timeout, false).await;
        if sent.is_err() {
            if let Some((conn, _)) = link.take() {
                let _ = conn.close(200, "reply failed".into()).await;
            }
        }
        sent
    }
}

impl Publisher {
    /// Open a confirm-mode channel on `conn`.
    pub async fn new(
        conn: &Connection,
        names: Names,
        confirm_timeout: Duration,
    ) -> Result<Self, BrokerError> {
        let channel = conn.create_channel().await?;
        channel
            .confirm_select(ConfirmSelectOptions::default())
            .await?;
        Ok(Publisher {
            channel,
            names,
            confirm_timeout,
            replies: None,
        })
    }

    /// The same publisher, sending `reply_to` replies on a disposable connection to one of
    /// `urls` (the cluster's nodes, [`connect_any`]) whose failures are logged and counted,
    /// never returned: they never affect the stored result, the result exchange, other
    /// requests or the ack.
    pub fn with_replies(mut self, urls: Vec<secrecy::SecretString>, name: &str) -> Self {
        self.replies = Some(Arc::new(Replies {
            urls,
            name: format!("{name} replies"),
            link: tokio::sync::Mutex::new(None),
            timeout: self.confirm_timeout.min(Duration::from_secs(5)),
        }));
        self
    }

    /// Whether the channel is usable.
    pub fn is_connected(&self) -> bool {
        self.channel.status().connected()
    }

    /// Close the channel (at shutdown, before its connection: a channel closed by dropping its
    /// last handle while the connection closes can race with it).
    pub async fn close(&self) {
        let _ = self.channel.close(200, "shutdown".into()).await;
    }

    /// Publish persistent and wait for the broker's confirm.
    pub async fn publish_confirmed(
        &self,
        exchange: &str,
        routing_key: &str,
        body: &[u8],
        props: BasicProperties,
    ) -> Result<(), BrokerError> {
        self.publish(exchange, routing_key, body, props, false)
            .await
    }

    /// Publish persistent, mandatory, and wait for the broker's confirm: a message no queue
    /// takes (an exchange without its queue) is an error, never a silent loss. For requests,
    /// dead letters and parked requests, whose queue kycq declares.
    async fn publish_routed(
        &self,
        exchange: &str,
        routing_key: &str,
        body: &[u8],
        props: BasicProperties,
    ) -> Result<(), BrokerError> {
        self.publish(exchange, routing_key, body, props, true).await
    }

    async fn publish(
        &self,
        exchange: &str,
        routing_key: &str,
        body: &[u8],
        props: BasicProperties,
        mandatory: bool,
    ) -> Result<(), BrokerError> {
        publish_and_confirm(
            &self.channel,
            exchange,
            routing_key,
            body,
            props,
            self.confirm_timeout,
            mandatory,
        )
        .await
    }

    /// Publish a result to the result exchange (`result.<check>.<status>`) and, when the request
    /// asked for it, to its `reply_to` queue with its `correlation_id`. Both are sent at once and
    /// their confirms awaited together. The result exchange decides: its failure is the error
    /// (the delivery is retried, and the reply may then be sent again: replies are at least
    /// once, like results). A reply's failure (on the disposable replies connection) is logged
    /// and counted, never returned.
    ///
    /// `trace`: the request's trace context, carried as the `traceparent` and `tracestate`
    /// headers (W3C Trace Context).
    pub async fn publish_result(
        &self,
        result: &CheckResult,
        reply_to: Option<&str>,
        correlation_id: Option<&str>,
        trace: Option<&crate::telemetry::trace_context::Outgoing>,
    ) -> Result<(), BrokerError> {
        let body = result.to_json();
        let mut props = BasicProperties::default()
            .with_content_type("application/json".into())
            .with_message_id(result.request_id.as_str().into())
            .with_type(ShortString::from("kycq.result"));
        if let Some(c) = correlation_id {
            props = props.with_correlation_id(c.into());
        }
        if let Some(t) = trace {
            props = t.on(&props);
        }
        let routing_key = result.routing_key();
        let Some(q) = reply_to.filter(|q| !q.is_empty()) else {
            return self
                .publish_confirmed(&self.names.results, &routing_key, &body, props)
                .await;
        };
        let to_results =
            self.publish_confirmed(&self.names.results, &routing_key, &body, props.clone());
        match &self.replies {
            Some(replies) => {
                let (published, replied) =
                    futures::join!(to_results, replies.send(q, &body, props));
                if let Err(e) = replied {
                    metrics::counter!("kycq_reply_failures_total").increment(1);
                    tracing::warn!(error = %e, "the result could not be delivered to the request's reply_to; it is stored and on the result exchange");
                }
                published
            }
            None => {
                let (published, replied) =
                    futures::join!(to_results, self.publish_confirmed("", q, &body, props));
                published.and(replied)
            }
        }
    }

    /// Publish a request body to the dead-letter exchange, keeping its properties and adding
    /// the reason headers.
    pub async fn dead_letter(
        &self,
        body: &[u8],
        original: &BasicProperties,
        routing_key: &str,
        dl: &DeadLetter,
    ) -> Result<(), BrokerError> {
        // Every x-kycq-* header is kycq's own: one a client set (or an earlier dead-lettering
        // left) is never trusted, and never survives next to ours. The broker's dead-lettering
        // history (`x-death`, from the wait queue or set by a client) is dropped too: in the
        // dead-letter queue an `x-death` entry then always means the broker dead-lettered it,
        // and its x-kycq-* headers are not kycq's (see `broker::dlq`).
        let mut h = client_headers(original);
        h = dlq::without_death_headers(&h);
        let s = |v: &str| AMQPValue::LongString(LongString::from(v));
        h.insert(headers::REASON.into(), s(&dl.reason));
        h.insert(headers::DETAIL.into(), s(&dl.detail));
        h.insert(
            headers::ATTEMPTS.into(),
            AMQPValue::LongInt(dl.attempts as i32),
        );
        h.insert(headers::ROUTING_KEY.into(), s(routing_key));
        h.insert(
            headers::AT.into(),
            s(&chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true)),
        );
        if let Some(id) = &dl.request_id {
            h.insert(headers::REQUEST_ID.into(), s(id));
        }
        if let Some(round) = dl.retry_round {
            h.insert(headers::RETRY_ROUND.into(), AMQPValue::LongInt(round));
        }
        // A client's `expiration` would let the dead letter expire unseen in the queue.
        let props = dlq::without_expiration(original).with_headers(h);
        self.publish_routed(&self.names.dead_exchange, routing_key, body, props)
            .await
    }

    /// Park a request in the wait queue (confirmed) for `park.wait`: it comes back to the
    /// request exchange with `routing_key` and its properties, carrying when it first waited.
    pub async fn park(
        &self,
        body: &[u8],
        original: &BasicProperties,
        routing_key: &str,
        park: &Park,
    ) -> Result<(), BrokerError> {
        let mut h = client_headers(original);
        h.insert(
            headers::WAITING_SINCE.into(),
            AMQPValue::LongString(LongString::from(
                park.waiting_since
                    .to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
            )),
        );
        h.insert(
            headers::PARKS.into(),
            AMQPValue::LongInt(park.parks.saturating_add(1).min(i32::MAX as u32) as i32),
        );
        let ttl_ms = park.wait.as_millis().max(1).to_string();
        let props = original
            .clone()
            .with_headers(h)
            .with_expiration(ShortString::from(ttl_ms));
        self.publish_routed(&self.names.wait_queue, routing_key, body, props)
            .await
    }

    /// Publish a request to the request exchange (`check.<check>`).
    pub async fn publish_request(
        &self,
        routing_key: &str,
        body: &[u8],
        props: BasicProperties,
    ) -> Result<(), BrokerError> {
        self.publish_routed(&self.names.requests, routing_key, body, props)
            .await
    }
}

/// A header value as text (LongString or ShortString), for reading dead-letter headers.
pub fn header_str(props: &BasicProperties, key: &str) -> Option<String> {
    match props.headers().as_ref()?.inner().get(key)? {
        AMQPValue::LongString(s) => Some(String::from_utf8_lossy(s.as_bytes()).into_owned()),
        AMQPValue::ShortString(s) => Some(s.to_string()),
        AMQPValue::LongInt(i) => Some(i.to_string()),
        AMQPValue::LongLongInt(i) => Some(i.to_string()),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_node_is_tried_once_and_each_call_starts_at_the_next() {
        let a = node_order(3);
        let mut sorted = a.clone();
        sorted.sort();
        assert_eq!(sorted, vec![0, 1, 2]);
        assert_eq!(a, (0..3).map(|i| (a[0] + i) % 3).collect::<Vec<_>>());
        // (Other tests may move the shared start meanwhile: only the order's shape is checked.)
        assert_eq!(node_order(1), vec![0]);
        assert!(node_order(0).is_empty());
    }

    #[test]
    fn a_node_shows_as_host_and_port_never_its_password() {
        assert_eq!(
            node_label("amqp://kycq:s3cret@rabbitmq-2.internal/%2f"),
            "rabbitmq-2.internal:5672"
        );
        assert_eq!(
            node_label("amqps://kycq:s3cret@10.0.0.3:5999/%2f"),
            "10.0.0.3:5999"
        );
        assert!(!node_label("not a url :s3cret").contains("s3cret"));
    }
}
