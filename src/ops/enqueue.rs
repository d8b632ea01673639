//! `kycq enqueue`: publish one check (or a CSV of them) to the request exchange, confirmed, and
//! optionally wait for the results on a private reply queue (the RabbitMQ RPC pattern).

use std::time::Duration;

use futures::StreamExt;
use lapin::options::{BasicConsumeOptions, QueueBindOptions, QueueDeclareOptions};
use lapin::types::FieldTable;
use lapin::{BasicProperties, Channel, Connection, Consumer};
use serde::Serialize;

use crate::broker::{BrokerError, Publisher};
use crate::check::CheckResult;

/// One request as clients publish it (DESIGN.md §3). Empty optional fields are left out; CSV
/// columns may be missing (a missing `request_id` is generated).
#[derive(Clone, Debug, Default, Serialize, serde::Deserialize)]
#[serde(default)]
pub struct RequestMessage {
    /// Idempotency key (generated when empty).
    pub request_id: String,
    /// `mobile3`, `id2`, `id2_period`.
    pub check: String,
    /// Name.
    pub name: String,
    /// ID number.
    pub id_number: String,
    /// Mobile (mobile3).
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub mobile: Option<String>,
    /// Card validity start (id2_period).
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub validity_start: Option<String>,
    /// Card validity end (id2_period).
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub validity_end: Option<String>,
    /// Pin a provider.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub provider: Option<String>,
    /// Passed to providers that take it.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub merchant_user_id: Option<String>,
    /// Passed to providers that take it.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub scene_code: Option<String>,
}

impl RequestMessage {
    /// Fill in a request id when none was given, and drop blank optional fields.
    pub fn normalised(mut self) -> Self {
        if self.request_id.is_empty() {
            self.request_id = uuid::Uuid::new_v4().simple().to_string();
        }
        for f in [
            &mut self.mobile,
            &mut self.validity_start,
            &mut self.validity_end,
            &mut self.provider,
            &mut self.merchant_user_id,
            &mut self.scene_code,
        ] {
            if f.as_deref().is_some_and(|s| s.trim().is_empty()) {
                *f = None;
            }
        }
        self
    }

    /// The routing key clients use: `check.<check>`.
    pub fn routing_key(&self) -> String {
        format!("check.{}", self.check)
    }
}

/// A private, exclusive, auto-deleted queue that results are sent to via `reply_to`.
pub struct ReplyQueue {
    _channel: Channel,
    name: String,
    consumer: Consumer,
}

impl ReplyQueue {
    /// Declare a server-named exclusive queue and start consuming it.
    pub async fn open(conn: &Connection) -> Result<Self, BrokerError> {
        Self::open_bound(conn, None).await
    }

    /// The same, also bound to `exchange` with `routing_key` (a tap on the result exchange).
    pub async fn open_bound(
        conn: &Connection,
        bind: Option<(&str, &str)>,
    ) -> Result<Self, BrokerError> {
        let channel = conn.create_channel().await?;
        let q = channel
            .queue_declare(
                "",
                QueueDeclareOptions {
                    exclusive: true,
                    auto_delete: true,
                    ..Default::default()
                },
                FieldTable::default(),
            )
            .await?;
        let name = q.name().as_str().to_owned();
        if let Some((exchange, routing_key)) = bind {
            channel
                .queue_bind(
                    &name,
                    exchange,
                    routing_key,
                    QueueBindOptions::default(),
                    FieldTable::default(),
                )
                .await?;
        }
        let consumer = channel
            .basic_consume(
                &name,
                "kycq-reply",
                BasicConsumeOptions {
                    no_ack: true,
                    ..Default::default()
                },
                FieldTable::default(),
            )
            .await?;
        Ok(ReplyQueue {
            _channel: channel,
            name,
            consumer,
        })
    }

    /// The next delivery (raw), or None after `timeout`.
    pub async fn next_delivery(&mut self, timeout: Duration) -> Option<lapin::message::Delivery> {
        tokio::time::timeout(timeout, self.consumer.next())
            .await
            .ok()??
            .ok()
    }

    /// The queue name to put in `reply_to`.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The next result (with its correlation id), or None after `timeout`.
    pub async fn next(&mut self, timeout: Duration) -> Option<(Option<String>, CheckResult)> {
        loop {
            let d = tokio::time::timeout(timeout, self.consumer.next())
                .await
                .ok()??
                .ok()?;
            let corr = d
                .properties
                .correlation_id()
                .as_ref()
                .map(|c| c.as_str().to_owned());
            match serde_json::from_slice::<CheckResult>(&d.data) {
                Ok(r) => return Some((corr, r)),
                Err(e) => tracing::warn!(error = %e, "ignoring a reply that is not a result"),
            }
        }
    }
}

/// Publish one request (confirmed), with `reply_to` when a reply queue is given.
pub async fn publish(
    publisher: &Publisher,
    msg: &RequestMessage,
    reply_to: Option<&str>,
) -> Result<(), BrokerError> {
    let body = serde_json::to_vec(msg).expect("a request serialises");
    let mut props = BasicProperties::default()
        .with_content_type("application/json".into())
        .with_message_id(msg.request_id.as_str().into());
    if let Some(q) = reply_to {
        props = props
            .with_reply_to(q.into())
            .with_correlation_id(msg.request_id.as_str().into());
    }
    publisher
        .publish_request(&msg.routing_key(), &body, props)
        .await
}

/// Read requests from CSV (header row with the field names of [`RequestMessage`]).
pub fn read_csv(path: &std::path::Path) -> anyhow::Result<Vec<RequestMessage>> {
    let mut rdr = csv::ReaderBuilder::new()
        .trim(csv::Trim::All)
        .from_path(path)?;
    let mut out = Vec::new();
    for (i, row) in rdr.deserialize::<RequestMessage>().enumerate() {
        // The row number only: a CSV error could quote a field (personal data).
        let row = row.map_err(|_| {
            anyhow::anyhow!(
                "{}: row {} is not a valid request row",
                path.display(),
                i + 2
            )
        })?;
        out.push(row.normalised());
    }
    Ok(out)
}
