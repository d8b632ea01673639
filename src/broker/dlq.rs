//! The dead-letter queue for operators: stats, list, show (masked), replay (publish confirmed,
//! then ack) and purge — nothing is lost on the way.

use lapin::options::{BasicAckOptions, BasicGetOptions, QueueDeclareOptions, QueuePurgeOptions};
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
}

/// Messages waiting in the dead-letter queue.
pub async fn count(conn: &Connection, names: &Names) -> Result<u32, BrokerError> {
    let ch = conn.create_channel().await?;
    let q = ch
        .queue_declare(
            &names.dead_queue,
            QueueDeclareOptions {
                passive: true,
                ..Default::default()
            },
            FieldTable::default(),
        )
        .await?;
    let _ = ch.close(200, "ok").await;
    Ok(q.message_count())
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
            .basic_get(&names.dead_queue, BasicGetOptions { no_ack: false })
            .await?
        else {
            break;
        };
        let d = msg.delivery;
        out.push((describe(out.len(), &d.properties, &d.data), d.data));
    }
    let _ = ch.close(200, "ok").await;
    Ok(out)
}

/// Replay dead letters to the request exchange: each is published (confirmed) and only then
/// acknowledged. `only` limits replay to one request id. Returns how many were replayed.
pub async fn replay(
    conn: &Connection,
    publisher: &Publisher,
    names: &Names,
    only: Option<&str>,
) -> Result<usize, BrokerError> {
    let ch = conn.create_channel().await?;
    let mut replayed = 0;
    loop {
        let Some(msg) = ch
            .basic_get(&names.dead_queue, BasicGetOptions { no_ack: false })
            .await?
        else {
            break;
        };
        let d = msg.delivery;
        let info = describe(0, &d.properties, &d.data);
        if only.is_some_and(|id| info.request_id.as_deref() != Some(id)) {
            continue; // left unacknowledged: back in the queue when the channel closes
        }
        let props = replay_properties(&d.properties);
        publisher
            .publish_request(&info.routing_key, &d.data, props)
            .await?;
        d.acker.ack(BasicAckOptions::default()).await?;
        replayed += 1;
    }
    let _ = ch.close(200, "ok").await;
    Ok(replayed)
}

/// Drop every dead letter. Returns how many were dropped.
pub async fn purge(conn: &Connection, names: &Names) -> Result<u32, BrokerError> {
    let ch = conn.create_channel().await?;
    let n = ch
        .queue_purge(&names.dead_queue, QueuePurgeOptions::default())
        .await?;
    let _ = ch.close(200, "ok").await;
    Ok(n)
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

fn describe(position: usize, p: &BasicProperties, body: &[u8]) -> DeadLetterInfo {
    let request_id = header_str(p, headers::REQUEST_ID).or_else(|| {
        serde_json::from_slice::<serde_json::Value>(body)
            .ok()
            .and_then(|v| v.get("request_id")?.as_str().map(str::to_owned))
            .filter(|s| crate::check::request::is_valid_request_id(s))
    });
    let death = first_death(p);
    let reason = header_str(p, headers::REASON)
        .or_else(|| death.as_ref().and_then(|d| table_str(d, "reason")))
        .unwrap_or_else(|| "unknown".into());
    let routing_key = header_str(p, headers::ROUTING_KEY)
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
        detail: header_str(p, headers::DETAIL),
        attempts: header_str(p, headers::ATTEMPTS),
        routing_key,
        dead_lettered_at: header_str(p, headers::AT),
        body_bytes: body.len(),
    }
}

fn first_death(p: &BasicProperties) -> Option<FieldTable> {
    match p.headers().as_ref()?.inner().get("x-death")? {
        AMQPValue::FieldArray(a) => match a.as_slice().first()? {
            AMQPValue::FieldTable(t) => Some(t.clone()),
            _ => None,
        },
        _ => None,
    }
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
            if name.starts_with("x-kycq-")
                || name.starts_with("x-death")
                || name.starts_with("x-first-death")
                || name.starts_with("x-last-death")
                || name == "x-delivery-count"
            {
                continue;
            }
            h.insert(k.clone(), v.clone());
        }
    }
    h.insert("x-kycq-replays".into(), AMQPValue::LongInt(replays + 1));
    p.clone().with_headers(h)
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
}
