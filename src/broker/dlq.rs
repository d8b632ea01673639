//! The dead-letter queue at the broker: reading it once (a [`Cursor`] over a snapshot of its
//! message count), describing each dead letter without personal data, masking bodies, publishing
//! back (confirmed, then ack). What an operator may do with each one is decided in
//! `ops::dlq`.

use lapin::options::{BasicAckOptions, BasicGetOptions, QueueDeclareOptions};
use lapin::types::{AMQPValue, FieldTable};
use lapin::{BasicProperties, Connection};
use serde::Serialize;

use super::{header_str, headers, BrokerError, Publisher};
use crate::check::mask::{mask_id_number, mask_mobile, mask_name};
use crate::configuration::Names;

/// One dead letter, described without personal data.
#[derive(Clone, Debug, Serialize)]
pub struct DeadLetterInfo {
    /// Position in the queue (0 = oldest).
    pub position: usize,
    /// The request id, when the body had one.
    pub request_id: Option<String>,
    /// kycq's reason, or the broker's (`delivery_limit`, `rejected`…).
    pub reason: String,
    /// kycq's detail sentence.
    pub detail: Option<String>,
    /// Provider calls made.
    pub attempts: Option<String>,
    /// The routing key replay will use.
    pub routing_key: String,
    /// When kycq dead-lettered it.
    pub dead_lettered_at: Option<String>,
    /// Body size in bytes.
    pub body_bytes: usize,
    /// Who dead-lettered it: `kycq` (its `x-kycq-*` headers are kycq's) or `broker` (RabbitMQ
    /// itself, e.g. the delivery limit or a client's `expiration`: any `x-kycq-*` header on it
    /// came from the client and is ignored).
    pub dead_lettered_by: &'static str,
    /// The run of the request it belongs to (kycq's `x-kycq-retry-round`; 0 = the first), when
    /// kycq dead-lettered a claimed request.
    pub retry_round: Option<i32>,
}

/// Messages waiting in the dead-letter queue.
pub async fn count(conn: &Connection, names: &Names) -> Result<u32, BrokerError> {
    Ok(depth(conn, &names.dead_queue).await?.0)
}

/// Messages ready in queue `name` and its consumers (a passive declare: changes nothing; fails
/// when the queue does not exist).
pub async fn depth(conn: &Connection, name: &str) -> Result<(u32, u32), BrokerError> {
    let ch = conn.create_channel().await?;
    let q = ch
        .queue_declare(
            name.into(),
            QueueDeclareOptions {
                passive: true,
                ..Default::default()
            },
            FieldTable::default(),
        )
        .await;
    let _ = ch.close(200, "ok".into()).await;
    let q = q?;
    Ok((q.message_count(), q.consumer_count()))
}

/// Describe up to `limit` dead letters. Messages are read and returned to the queue untouched
/// (the channel closes with them unacknowledged).
pub async fn list(
    conn: &Connection,
    names: &Names,
    limit: usize,
) -> Result<Vec<(DeadLetterInfo, Vec<u8>)>, BrokerError> {
    let ch = conn.create_channel().await?;
    let mut out = Vec::new();
    while out.len() < limit {
        let Some(msg) = ch
            .basic_get(
                names.dead_queue.as_str().into(),
                BasicGetOptions { no_ack: false },
            )
            .await?
        else {
            break;
        };
        let d = msg.delivery;
        out.push((describe(out.len(), &d.properties, &d.data), d.data));
    }
    let _ = ch.close(200, "ok".into()).await;
    Ok(out)
}

/// Replay dead letters to the request exchange: each is published (confirmed) and only then
/// acknowledged. `only` limits replay to one request id; malformed messages (see [`malformed`])
/// are left in place. Each dead letter is handled at most once per call (see [`Cursor`]).
/// Returns how many were replayed.
pub async fn replay(
    conn: &Connection,
    publisher: &Publisher,
    names: &Names,
    only: Option<&str>,
) -> Result<usize, BrokerError> {
    let mut cursor = Cursor::open(conn, names).await?;
    let mut replayed = 0;
    while let Some(m) = cursor.next().await? {
        if only.is_some_and(|id| m.info.request_id.as_deref() != Some(id))
            || malformed(&m.info.reason)
        {
            continue; // left unacknowledged: back in the queue when the cursor closes
        }
        m.replay(publisher).await?;
        replayed += 1;
    }
    cursor.close().await;
    Ok(replayed)
}

/// The reasons of messages kycq cannot read as a request (or store): replaying or retrying them
/// can only dead-letter them again; they can only be purged.
pub const MALFORMED: [&str; 6] = [
    "not_json",
    "not_an_object",
    "no_request_id",
    "duplicate_key",
    "too_large",
    "unstorable",
];

/// Whether a dead-letter reason is one of [`MALFORMED`].
pub fn malformed(reason: &str) -> bool {
    MALFORMED.contains(&reason)
}

/// Reads the dead-letter queue once: the number of messages is taken when it opens and at most
/// that many are read, each held unacknowledged until the caller acts on it or the cursor
/// closes (then it returns to the queue, in place). A message published back and dead-lettered
/// again during the run lands behind that snapshot and is not read again.
pub struct Cursor {
    ch: lapin::Channel,
    queue: String,
    left: u32,
    position: usize,
}

/// One dead letter read by a [`Cursor`].
pub struct Held {
    /// Its description.
    pub info: DeadLetterInfo,
    /// The original body.
    pub body: Vec<u8>,
    /// The original properties with kycq's dead-letter headers.
    pub properties: BasicProperties,
    acker: lapin::Acker,
}

impl Cursor {
    /// Open a channel and take the queue's message count.
    pub async fn open(conn: &Connection, names: &Names) -> Result<Cursor, BrokerError> {
        let ch = conn.create_channel().await?;
        let q = ch
            .queue_declare(
                names.dead_queue.as_str().into(),
                QueueDeclareOptions {
                    passive: true,
                    ..Default::default()
                },
                FieldTable::default(),
            )
            .await?;
        Ok(Cursor {
            ch,
            queue: names.dead_queue.clone(),
            left: q.message_count(),
            position: 0,
        })
    }

    /// How many dead letters the queue held when the cursor opened.
    pub fn snapshot(&self) -> u32 {
        self.left + self.position as u32
    }

    /// The next dead letter of the snapshot, or None when the snapshot is read.
    pub async fn next(&mut self) -> Result<Option<Held>, BrokerError> {
        if self.left == 0 {
            return Ok(None);
        }
        self.left -= 1;
        let Some(msg) = self
            .ch
            .basic_get(
                self.queue.as_str().into(),
                BasicGetOptions { no_ack: false },
            )
            .await?
        else {
            self.left = 0;
            return Ok(None);
        };
        let d = msg.delivery;
        let info = describe(self.position, &d.properties, &d.data);
        self.position += 1;
        Ok(Some(Held {
            info,
            body: d.data,
            properties: d.properties,
            acker: d.acker,
        }))
    }

    /// Close the channel: every message read and not acknowledged returns to the queue.
    pub async fn close(self) {
        let _ = self.ch.close(200, "ok".into()).await;
    }
}

impl Held {
    /// Remove it from the queue.
    pub async fn ack(&self) -> Result<(), BrokerError> {
        // lapin 4 answers Ok(false), not an error, when the channel is already gone.
        if self.acker.ack(BasicAckOptions::default()).await? {
            Ok(())
        } else {
            Err(BrokerError::Amqp(
                lapin::ErrorKind::InvalidChannelState(lapin::ChannelState::Closed, "basic.ack")
                    .into(),
            ))
        }
    }

    /// Publish it back to the request exchange (confirmed) with its original properties, then
    /// remove it.
    pub async fn replay(&self, publisher: &Publisher) -> Result<(), BrokerError> {
        self.republish(publisher).await?;
        self.ack().await
    }

    /// Publish it back to the request exchange (confirmed) without removing it.
    pub async fn republish(&self, publisher: &Publisher) -> Result<(), BrokerError> {
        publisher
            .publish_request(
                &self.info.routing_key,
                &self.body,
                replay_properties(&self.properties),
            )
            .await
    }

    /// What identifies this dead letter among the dead letters of its request: its reason and
    /// when it was dead-lettered (kycq's header, else the broker's `x-death` time and count).
    pub fn key(&self) -> Option<String> {
        dead_letter_key(&self.properties)
    }
}

/// See [`Held::key`]. The `x-kycq-*` headers count only on a dead letter kycq made.
pub fn dead_letter_key(p: &BasicProperties) -> Option<String> {
    let death = newest_death(p);
    if death.is_none() {
        if let Some(at) = header_str(p, headers::AT) {
            let reason = header_str(p, headers::REASON).unwrap_or_default();
            return Some(format!("{reason}@{at}"));
        }
    }
    let death = death?;
    let time = match death.inner().get("time")? {
        AMQPValue::Timestamp(t) => *t,
        _ => return None,
    };
    let count = match death.inner().get("count") {
        Some(AMQPValue::LongLongInt(n)) => *n,
        Some(AMQPValue::LongInt(n)) => i64::from(*n),
        _ => 0,
    };
    let reason = table_str(&death, "reason").unwrap_or_default();
    Some(format!("{reason}@x-death:{time}:{count}"))
}

/// The body with name, ID number and mobile masked (what `kycq dlq show` prints).
pub fn masked_body(body: &[u8]) -> String {
    match serde_json::from_slice::<serde_json::Value>(body) {
        Ok(serde_json::Value::Object(mut o)) => {
            for (k, f) in [
                ("name", mask_name as fn(&str) -> String),
                ("id_number", mask_id_number),
                ("mobile", mask_mobile),
            ] {
                if let Some(serde_json::Value::String(s)) = o.get(k) {
                    let m = f(s);
                    o.insert(k.into(), m.into());
                }
            }
            serde_json::to_string_pretty(&o).unwrap_or_default()
        }
        Ok(_) => "(JSON, not an object)".into(),
        Err(_) => format!("({} bytes, not JSON: not shown)", body.len()),
    }
}

/// Describe a dead letter. Who made it decides what is read from its headers:
///
/// - kycq strips every client `x-kycq-*` header and the broker's `x-death` history from what it
///   dead-letters, so a dead letter without `x-death` is kycq's own and its `x-kycq-*` headers
///   (reason, detail, routing key, time, run) are kycq's;
/// - a dead letter with an `x-death` entry was dead-lettered by RabbitMQ itself (the work
///   queue's delivery limit, a client's `expiration`): the client's headers survived, so every
///   `x-kycq-*` header on it is ignored and the reason, routing key and time are the broker's
///   newest `x-death` entry.
///
/// The request id is always the one in the body, read as the worker reads it
/// ([`crate::check::request::decode`]: a body the worker could not read has none); a header
/// never names it.
fn describe(position: usize, p: &BasicProperties, body: &[u8]) -> DeadLetterInfo {
    let request_id = body_request_id(body);
    let death = newest_death(p);
    let ours = |key: &str| {
        if death.is_some() {
            None
        } else {
            header_str(p, key)
        }
    };
    let reason = ours(headers::REASON)
        .or_else(|| death.as_ref().and_then(|d| table_str(d, "reason")))
        .unwrap_or_else(|| "unknown".into());
    let routing_key = ours(headers::ROUTING_KEY)
        .or_else(|| {
            death
                .as_ref()
                .and_then(|d| match d.inner().get("routing-keys") {
                    Some(AMQPValue::FieldArray(a)) => a.as_slice().first().and_then(|v| match v {
                        AMQPValue::LongString(s) => {
                            Some(String::from_utf8_lossy(s.as_bytes()).into_owned())
                        }
                        _ => None,
                    }),
                    _ => None,
                })
        })
        .unwrap_or_else(|| "check.unknown".into());
    DeadLetterInfo {
        position,
        request_id,
        reason,
        detail: ours(headers::DETAIL),
        attempts: ours(headers::ATTEMPTS),
        routing_key,
        dead_lettered_at: ours(headers::AT).or_else(|| {
            match death.as_ref()?.inner().get("time")? {
                AMQPValue::Timestamp(t) => chrono::DateTime::from_timestamp(*t as i64, 0)
                    .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)),
                _ => None,
            }
        }),
        body_bytes: body.len(),
        dead_lettered_by: if death.is_some() { "broker" } else { "kycq" },
        retry_round: ours(headers::RETRY_ROUND).and_then(|r| r.parse().ok()),
    }
}

/// The body's request id as the worker reads it: None for a body the worker refuses unread
/// (not JSON, a key given twice, no valid request_id).
fn body_request_id(body: &[u8]) -> Option<String> {
    // `today` only bounds birth dates, which decide valid or rejected: both carry the id.
    crate::check::request::decode(body, chrono::Utc::now().date_naive())
        .ok()
        .map(|d| d.request_id().to_owned())
}

/// The broker's newest dead-lettering record (RabbitMQ keeps `x-death` newest first).
fn newest_death(p: &BasicProperties) -> Option<FieldTable> {
    match p.headers().as_ref()?.inner().get("x-death")? {
        AMQPValue::FieldArray(a) => match a.as_slice().first()? {
            AMQPValue::FieldTable(t) => Some(t.clone()),
            _ => None,
        },
        _ => None,
    }
}

/// Whether a header is the broker's dead-lettering history.
fn is_death_header(name: &str) -> bool {
    name == "x-death" || name.starts_with("x-first-death") || name.starts_with("x-last-death")
}

/// `h` without the broker's dead-lettering history (`x-death`, `x-first-death-*`,
/// `x-last-death-*`).
pub(crate) fn without_death_headers(h: &FieldTable) -> FieldTable {
    let mut out = FieldTable::default();
    for (k, v) in h.inner() {
        if !is_death_header(k.as_str()) {
            out.insert(k.clone(), v.clone());
        }
    }
    out
}

/// Every property but `expiration` (a client's per-message TTL): a dead letter must not expire
/// unseen in the dead-letter queue, nor a retried request in the work queue.
pub(crate) fn without_expiration(p: &BasicProperties) -> BasicProperties {
    let mut out = BasicProperties::default();
    if let Some(v) = p.content_type() {
        out = out.with_content_type(v.clone());
    }
    if let Some(v) = p.content_encoding() {
        out = out.with_content_encoding(v.clone());
    }
    if let Some(v) = p.headers() {
        out = out.with_headers(v.clone());
    }
    if let Some(v) = p.delivery_mode() {
        out = out.with_delivery_mode(*v);
    }
    if let Some(v) = p.priority() {
        out = out.with_priority(*v);
    }
    if let Some(v) = p.correlation_id() {
        out = out.with_correlation_id(v.clone());
    }
    if let Some(v) = p.reply_to() {
        out = out.with_reply_to(v.clone());
    }
    if let Some(v) = p.message_id() {
        out = out.with_message_id(v.clone());
    }
    if let Some(v) = p.timestamp() {
        out = out.with_timestamp(*v);
    }
    if let Some(v) = p.kind() {
        out = out.with_type(v.clone());
    }
    if let Some(v) = p.user_id() {
        out = out.with_user_id(v.clone());
    }
    if let Some(v) = p.app_id() {
        out = out.with_app_id(v.clone());
    }
    if let Some(v) = p.cluster_id() {
        out = out.with_cluster_id(v.clone());
    }
    out
}

fn table_str(t: &FieldTable, key: &str) -> Option<String> {
    match t.inner().get(key)? {
        AMQPValue::LongString(s) => Some(String::from_utf8_lossy(s.as_bytes()).into_owned()),
        AMQPValue::ShortString(s) => Some(s.to_string()),
        _ => None,
    }
}

/// The original properties without the dead-letter bookkeeping, counting replays.
fn replay_properties(p: &BasicProperties) -> BasicProperties {
    let mut h = FieldTable::default();
    let mut replays = 0;
    if let Some(old) = p.headers() {
        for (k, v) in old.inner() {
            let name = k.as_str();
            if name == "x-kycq-replays" {
                if let AMQPValue::LongInt(n) = v {
                    replays = *n;
                }
                continue;
            }
            if name.to_ascii_lowercase().starts_with(headers::PREFIX)
                || is_death_header(name)
                || name == "x-delivery-count"
            {
                continue;
            }
            h.insert(k.clone(), v.clone());
        }
    }
    h.insert("x-kycq-replays".into(), AMQPValue::LongInt(replays + 1));
    without_expiration(p).with_headers(h)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn show_masks_personal_data() {
        let body = br#"{"request_id":"r1","name":"\u5f20\u4e09","id_number":"11010519491231002X","mobile":"13812345678"}"#;
        let m = masked_body(body);
        assert!(m.contains("110***********002X") && m.contains("138****5678") && m.contains("张*"));
        assert!(
            !m.contains("11010519491231002X") && !m.contains("13812345678") && !m.contains("张三")
        );
        assert!(masked_body(b"garbage 13812345678").contains("not shown"));
    }

    #[test]
    fn replay_strips_bookkeeping_and_counts_replays() {
        let mut h = FieldTable::default();
        h.insert(
            headers::REASON.into(),
            AMQPValue::LongString("retries_exhausted".into()),
        );
        h.insert("x-delivery-count".into(), AMQPValue::LongInt(3));
        h.insert("app-header".into(), AMQPValue::LongString("keep".into()));
        let p = BasicProperties::default()
            .with_headers(h)
            .with_correlation_id("c1".into());
        let r = replay_properties(&p);
        let hh = r.headers().clone().unwrap();
        assert!(hh.inner().get(headers::REASON).is_none());
        assert!(hh.inner().get("x-delivery-count").is_none());
        assert!(hh.inner().get("app-header").is_some());
        assert_eq!(
            hh.inner().get("x-kycq-replays"),
            Some(&AMQPValue::LongInt(1))
        );
        assert_eq!(r.correlation_id().as_ref().map(|c| c.as_str()), Some("c1"));
        assert_eq!(
            replay_properties(&r)
                .headers()
                .clone()
                .unwrap()
                .inner()
                .get("x-kycq-replays"),
            Some(&AMQPValue::LongInt(2))
        );
    }

    #[test]
    fn a_dead_letter_is_identified_by_its_reason_and_time() {
        let s = |v: &str| AMQPValue::LongString(v.into());
        let mut h = FieldTable::default();
        h.insert(headers::REASON.into(), s("retries_exhausted"));
        h.insert(headers::AT.into(), s("2026-12-02T14:44:23.131Z"));
        let p = BasicProperties::default().with_headers(h);
        assert_eq!(
            dead_letter_key(&p).as_deref(),
            Some("retries_exhausted@2026-12-02T14:44:23.131Z")
        );
        // The broker's own dead letters (delivery limit): its x-death time and count.
        let mut death = FieldTable::default();
        death.insert("reason".into(), s("delivery_limit"));
        death.insert("time".into(), AMQPValue::Timestamp(1_764_686_663));
        death.insert("count".into(), AMQPValue::LongLongInt(1));
        let mut h = FieldTable::default();
        h.insert(
            "x-death".into(),
            AMQPValue::FieldArray(vec![AMQPValue::FieldTable(death)].into()),
        );
        let p = BasicProperties::default().with_headers(h);
        assert_eq!(
            dead_letter_key(&p).as_deref(),
            Some("delivery_limit@x-death:1764686663:1")
        );
        let info = describe(0, &p, b"{}");
        assert_eq!(info.reason, "delivery_limit");
        assert_eq!(
            info.dead_lettered_at.as_deref(),
            Some("2025-12-02T14:44:23Z")
        );
        assert_eq!(dead_letter_key(&BasicProperties::default()), None);
    }

    fn body(request_id: &str) -> Vec<u8> {
        format!(
            r#"{{"request_id":"{request_id}","check":"mobile3","name":"\u5f20\u4e09","id_number":"11010519491231002X","mobile":"13812345678"}}"#
        )
        .into_bytes()
    }

    fn broker_death(reason: &str) -> AMQPValue {
        let s = |v: &str| AMQPValue::LongString(v.into());
        let mut death = FieldTable::default();
        death.insert("reason".into(), s(reason));
        death.insert("queue".into(), s("kycq.requests"));
        death.insert("time".into(), AMQPValue::Timestamp(1_764_686_663));
        death.insert("count".into(), AMQPValue::LongLongInt(1));
        death.insert(
            "routing-keys".into(),
            AMQPValue::FieldArray(vec![s("check.mobile3")].into()),
        );
        AMQPValue::FieldArray(vec![AMQPValue::FieldTable(death)].into())
    }

    fn forged() -> FieldTable {
        let s = |v: &str| AMQPValue::LongString(v.into());
        let mut h = FieldTable::default();
        h.insert(headers::REQUEST_ID.into(), s("victim-2"));
        h.insert(headers::REASON.into(), s("retries_exhausted"));
        h.insert(headers::ROUTING_KEY.into(), s("check.id2"));
        h.insert(headers::AT.into(), s("2026-12-02T14:44:23.131Z"));
        h.insert(headers::RETRY_ROUND.into(), AMQPValue::LongInt(7));
        h
    }

    #[test]
    fn a_broker_dead_letter_ignores_client_set_kycq_headers() {
        // The broker dead-lettered it (x-death present): a client's x-kycq-* headers survived.
        let mut h = forged();
        h.insert("x-death".into(), broker_death("delivery_limit"));
        let p = BasicProperties::default().with_headers(h);
        let info = describe(0, &p, &body("sender-1"));
        assert_eq!(info.request_id.as_deref(), Some("sender-1"));
        assert_eq!(info.reason, "delivery_limit");
        assert_eq!(info.routing_key, "check.mobile3");
        assert_eq!(info.dead_lettered_by, "broker");
        assert_eq!(info.retry_round, None);
        assert_eq!(info.detail, None);
        assert_eq!(
            info.dead_lettered_at.as_deref(),
            Some("2025-12-02T14:44:23Z")
        );
        assert_eq!(
            dead_letter_key(&p).as_deref(),
            Some("delivery_limit@x-death:1764686663:1")
        );
    }

    #[test]
    fn the_request_id_is_the_bodys_as_the_worker_reads_it() {
        // kycq's own dead letter: its headers count, but never for the request id.
        let p = BasicProperties::default().with_headers(forged());
        let info = describe(0, &p, &body("sender-1"));
        assert_eq!(info.dead_lettered_by, "kycq");
        assert_eq!(info.reason, "retries_exhausted");
        assert_eq!(info.retry_round, Some(7));
        assert_eq!(info.request_id.as_deref(), Some("sender-1"));
        // A body the worker refuses unread names no request: a key given twice, no JSON, an
        // invalid id.
        let twice = br#"{"request_id":"sender-1","request_id":"victim-2","check":"mobile3"}"#;
        assert_eq!(describe(0, &p, twice).request_id, None);
        assert_eq!(describe(0, &p, b"not json").request_id, None);
        assert_eq!(describe(0, &p, br#"{"request_id":"a b"}"#).request_id, None);
        // A request kycq's validation rejects still has its id.
        assert_eq!(
            describe(0, &p, br#"{"request_id":"r-9","check":"mobile3"}"#)
                .request_id
                .as_deref(),
            Some("r-9")
        );
    }

    #[test]
    fn expiration_never_survives_a_dead_letter_or_a_retry() {
        let mut h = FieldTable::default();
        h.insert("x-death".into(), broker_death("expired"));
        h.insert(
            "x-first-death-queue".into(),
            AMQPValue::LongString("q".into()),
        );
        h.insert(
            "x-last-death-reason".into(),
            AMQPValue::LongString("expired".into()),
        );
        h.insert("app-header".into(), AMQPValue::LongString("keep".into()));
        let base = BasicProperties::default()
            .with_headers(h.clone())
            .with_correlation_id("c1".into())
            .with_reply_to("replies".into())
            .with_message_id("m1".into())
            .with_content_type("application/json".into())
            .with_content_encoding("utf-8".into())
            .with_delivery_mode(2)
            .with_priority(3)
            .with_timestamp(17)
            .with_type("t".into())
            .with_user_id("guest".into())
            .with_app_id("onboarding".into())
            .with_cluster_id("c".into());
        let p = base.clone().with_expiration("50".into());
        // Every other property is kept as it was.
        assert_eq!(without_expiration(&p), base);
        let r = replay_properties(&p);
        assert_eq!(r.expiration(), &None);
        assert_eq!(r.correlation_id().as_ref().map(|c| c.as_str()), Some("c1"));
        let hh = r.headers().clone().unwrap();
        assert!(hh.inner().get("x-death").is_none());
        assert!(hh.inner().get("x-first-death-queue").is_none());
        assert!(hh.inner().get("x-last-death-reason").is_none());
        assert!(hh.inner().get("app-header").is_some());
        let stripped = without_death_headers(&h);
        assert_eq!(
            stripped
                .inner()
                .keys()
                .map(|k| k.as_str())
                .collect::<Vec<_>>(),
            vec!["app-header"]
        );
    }
}
