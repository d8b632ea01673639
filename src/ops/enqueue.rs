//! `kycq enqueue`: check one request (or a CSV of them) with the worker's own validation, publish
//! the valid ones to the request exchange, confirmed, and optionally wait for the results on a
//! private reply queue (the RabbitMQ RPC pattern).
//!
//! The pure parts — the CSV header and row rules, the local validation of the exact bytes to be
//! published, the exit code of a run — are functions with unit tests; [`run`] does the IO.

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::time::Duration;

use chrono::NaiveDate;
use futures::StreamExt;
use indicatif::{ProgressBar, ProgressStyle};
use lapin::options::{BasicConsumeOptions, QueueBindOptions, QueueDeclareOptions};
use lapin::types::FieldTable;
use lapin::{BasicProperties, Channel, Connection, Consumer};
use serde::Serialize;
use tokio_util::sync::CancellationToken;

use crate::broker::{self, BrokerError, Publisher};
use crate::check::{decode, CheckResult, Decoded, Malformed, ReasonCode, Status};
use crate::configuration::Settings;

/// One request as clients publish it (the message contract, docs/src/reference/contract.md). Empty optional
/// fields are left out. `Debug` masks the name, ID number and mobile, as kycq's logs do.
#[derive(Clone, Default, Serialize, serde::Deserialize)]
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

impl std::fmt::Debug for RequestMessage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        use crate::check::mask::{mask_id_number, mask_mobile, mask_name};
        f.debug_struct("RequestMessage")
            .field("request_id", &self.request_id)
            .field("check", &self.check)
            .field("name", &mask_name(&self.name))
            .field("id_number", &mask_id_number(&self.id_number))
            .field("mobile", &self.mobile.as_deref().map(mask_mobile))
            .field("validity_start", &self.validity_start)
            .field("validity_end", &self.validity_end)
            .field("provider", &self.provider)
            .field("merchant_user_id", &self.merchant_user_id)
            .field("scene_code", &self.scene_code)
            .finish()
    }
}

impl RequestMessage {
    /// Fill in a request id when none was given, trim the id and the check (the check is also
    /// the routing key), and drop blank optional fields.
    pub fn normalised(self) -> Self {
        let mut m = self.tidy();
        if m.request_id.is_empty() {
            m.request_id = uuid::Uuid::new_v4().simple().to_string();
        }
        m
    }

    /// Trim the id and the check, drop blank optional fields; never invent an id.
    pub fn tidy(mut self) -> Self {
        self.request_id = self.request_id.trim().to_owned();
        self.check = self.check.trim().to_owned();
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
                "".into(),
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
                    name.as_str().into(),
                    exchange.into(),
                    routing_key.into(),
                    QueueBindOptions::default(),
                    FieldTable::default(),
                )
                .await?;
        }
        let consumer = channel
            .basic_consume(
                name.as_str().into(),
                "kycq-reply".into(),
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
            match decode_reply(&d) {
                Ok(r) => return Some(r),
                Err(e) => tracing::warn!(error = %e, "ignoring a reply that is not a result"),
            }
        }
    }
}

/// A reply delivery as its correlation id (kycq sets the `request_id`) and the result.
pub fn decode_reply(
    d: &lapin::message::Delivery,
) -> Result<(Option<String>, CheckResult), serde_json::Error> {
    let corr = d
        .properties
        .correlation_id()
        .as_ref()
        .map(|c| c.as_str().to_owned());
    Ok((corr, serde_json::from_slice::<CheckResult>(&d.data)?))
}

/// Publish one request (confirmed), with `reply_to` when a reply queue is given. Nothing is
/// validated here: `kycq enqueue` publishes only what [`prepare`] accepted.
pub async fn publish(
    publisher: &Publisher,
    msg: &RequestMessage,
    reply_to: Option<&str>,
) -> Result<(), BrokerError> {
    publish_in_trace(publisher, msg, reply_to, None).await
}

/// [`publish`], with a W3C Trace Context `traceparent` header when one is given (the caller's
/// span: the worker's spans for the request continue its trace).
pub async fn publish_in_trace(
    publisher: &Publisher,
    msg: &RequestMessage,
    reply_to: Option<&str>,
    traceparent: Option<&crate::telemetry::trace_context::TraceParent>,
) -> Result<(), BrokerError> {
    let body = serde_json::to_vec(msg).expect("a request serialises");
    let props = properties(&msg.request_id, reply_to);
    let props = match traceparent {
        Some(p) => crate::telemetry::trace_context::Outgoing {
            parent: *p,
            state: None,
        }
        .on(&props),
        None => props,
    };
    publisher
        .publish_request(&msg.routing_key(), &body, props)
        .await
}

/// Publish a request that passed [`prepare`]: exactly the bytes that were validated.
pub async fn publish_prepared(
    publisher: &Publisher,
    p: &Prepared,
    reply_to: Option<&str>,
) -> Result<(), BrokerError> {
    let props = properties(&p.request_id, reply_to);
    publisher
        .publish_request(&p.routing_key, &p.body, props)
        .await
}

/// A request's properties: JSON, its id, and its reply queue with the id as correlation id.
fn properties(request_id: &str, reply_to: Option<&str>) -> BasicProperties {
    let mut props = BasicProperties::default()
        .with_content_type("application/json".into())
        .with_message_id(request_id.into());
    if let Some(q) = reply_to {
        props = props
            .with_reply_to(q.into())
            .with_correlation_id(request_id.into());
    }
    props
}

// ---------------------------------------------------------------------------------------------
// Local validation: the worker's own decode, on the exact bytes to be published
// ---------------------------------------------------------------------------------------------

/// The date the worker validates birth dates against: today in UTC, as the worker reads it.
pub fn today() -> NaiveDate {
    chrono::Utc::now().date_naive()
}

/// A request that passed the worker's validation locally: the exact bytes to publish. Its
/// `Debug` never shows the body (personal data).
#[derive(Clone)]
pub struct Prepared {
    /// The idempotency key.
    pub request_id: String,
    /// `check.<check>`, from the validated check.
    pub routing_key: String,
    /// The JSON body that was validated.
    pub body: Vec<u8>,
}

impl std::fmt::Debug for Prepared {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Prepared")
            .field("request_id", &self.request_id)
            .field("routing_key", &self.routing_key)
            .field("body", &format_args!("<{} bytes>", self.body.len()))
            .finish()
    }
}

/// Why a request is not published: the column (field) and the rule it breaks, never the value.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Refusal {
    /// The field (CSV column) at fault, when one is.
    pub column: Option<&'static str>,
    /// The rule, as the worker's validation words it.
    pub rule: String,
    /// The reason code the worker would answer (`rejected`).
    pub reason_code: ReasonCode,
}

impl std::fmt::Display for Refusal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.column {
            Some(c) => write!(f, "column {c}: {} ({})", self.rule, self.reason_code),
            None => write!(f, "{} ({})", self.rule, self.reason_code),
        }
    }
}

impl Refusal {
    /// From one of the validation's messages, which begin with the field's name.
    fn from_reason(reason: &str, reason_code: ReasonCode) -> Refusal {
        let word = reason.split([':', ' ']).next().unwrap_or_default().trim();
        let column = CSV_COLUMNS.iter().copied().find(|c| *c == word);
        let rule = column
            .and_then(|c| reason.strip_prefix(c))
            .and_then(|r| r.strip_prefix(": "))
            .unwrap_or(reason)
            .to_owned();
        Refusal {
            column,
            rule,
            reason_code,
        }
    }
}

/// Serialise `msg` and validate those bytes with the worker's own [`decode`]: the request is
/// published only if the worker would accept it (a pinned provider that no worker has
/// configured is the worker's to refuse).
pub fn prepare(msg: &RequestMessage, today: NaiveDate) -> Result<Prepared, Refusal> {
    let body = serde_json::to_vec(msg).expect("a request serialises");
    match decode(&body, today) {
        Ok(Decoded::Valid(r)) => Ok(Prepared {
            routing_key: format!("check.{}", r.check),
            request_id: r.request_id,
            body,
        }),
        Ok(Decoded::Rejected(r)) => Err(Refusal::from_reason(&r.reason, r.reason_code)),
        Err(Malformed::NoRequestId(why)) => {
            Err(Refusal::from_reason(why, ReasonCode::InvalidRequest))
        }
        // A serialised `RequestMessage` is always a JSON object with unique keys.
        Err(other) => Err(Refusal {
            column: None,
            rule: other.to_string(),
            reason_code: ReasonCode::InvalidRequest,
        }),
    }
}

// ---------------------------------------------------------------------------------------------
// CSV
// ---------------------------------------------------------------------------------------------

/// The columns a CSV of requests may have, in contract order.
pub const CSV_COLUMNS: [&str; 10] = [
    "request_id",
    "check",
    "name",
    "id_number",
    "mobile",
    "validity_start",
    "validity_end",
    "provider",
    "merchant_user_id",
    "scene_code",
];

/// The columns a CSV must have. `request_id` is required so that a rerun of the same file
/// finds the same ids (a generated id would check the person again, and bill again).
pub const CSV_REQUIRED: [&str; 4] = ["request_id", "check", "name", "id_number"];

/// What is wrong with a CSV header.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum HeaderError {
    /// No header line at all.
    #[error("the file is empty: its first line must be a header naming the columns ({})", CSV_COLUMNS.join(","))]
    Empty,
    /// A column name kycq does not know.
    #[error("unknown column `{0}` in the header; the columns are: {cols}", cols = CSV_COLUMNS.join(", "))]
    Unknown(String),
    /// A header cell that does not look like a column name at all (a data line where the header
    /// should be): its text is not repeated, it may be personal data.
    #[error("header column {0} is not a column name (is the header line missing?); the first line must name the columns: {cols}", cols = CSV_COLUMNS.join(", "))]
    NotAName(usize),
    /// A column given twice.
    #[error("column `{0}` appears twice in the header")]
    Duplicate(&'static str),
    /// Required columns absent.
    #[error("the header has no {} column (required: {}; optional: the other columns of {})", .0.join(", "), CSV_REQUIRED.join(", "), CSV_COLUMNS.join(", "))]
    Missing(Vec<&'static str>),
}

/// Check a CSV header; the column of each position. Names are compared trimmed and
/// case-insensitively (a byte-order mark before the first is ignored).
pub fn check_header(header: &[&str]) -> Result<Vec<&'static str>, HeaderError> {
    if header.iter().all(|h| h.trim().is_empty()) {
        return Err(HeaderError::Empty);
    }
    let mut columns: Vec<&'static str> = Vec::with_capacity(header.len());
    for (i, raw) in header.iter().enumerate() {
        let h = raw
            .trim_start_matches('\u{feff}')
            .trim()
            .to_ascii_lowercase();
        let Some(c) = CSV_COLUMNS.iter().copied().find(|c| *c == h) else {
            let looks_like_a_name = !h.is_empty()
                && h.len() <= 40
                && h.bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"_- ".contains(&b));
            return Err(if looks_like_a_name {
                HeaderError::Unknown(h)
            } else {
                HeaderError::NotAName(i + 1)
            });
        };
        if columns.contains(&c) {
            return Err(HeaderError::Duplicate(c));
        }
        columns.push(c);
    }
    let missing: Vec<&'static str> = CSV_REQUIRED
        .iter()
        .copied()
        .filter(|c| !columns.contains(c))
        .collect();
    if !missing.is_empty() {
        return Err(HeaderError::Missing(missing));
    }
    Ok(columns)
}

/// The request of one CSV row (values trimmed; blank optional values left out).
pub fn row_message(columns: &[&'static str], row: &[&str]) -> RequestMessage {
    let mut m = RequestMessage::default();
    for (c, v) in columns.iter().zip(row) {
        let v = v.trim().to_owned();
        match *c {
            "request_id" => m.request_id = v,
            "check" => m.check = v,
            "name" => m.name = v,
            "id_number" => m.id_number = v,
            "mobile" => m.mobile = Some(v),
            "validity_start" => m.validity_start = Some(v),
            "validity_end" => m.validity_end = Some(v),
            "provider" => m.provider = Some(v),
            "merchant_user_id" => m.merchant_user_id = Some(v),
            "scene_code" => m.scene_code = Some(v),
            _ => {}
        }
    }
    m.tidy()
}

/// A CSV row that is not published.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RowError {
    /// The line it starts on (the header is line 1).
    pub line: u64,
    /// Its request id, when it has a usable one (for `--out`).
    pub request_id: Option<String>,
    /// Why.
    pub refusal: Refusal,
}

impl std::fmt::Display for RowError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "line {}, {}", self.line, self.refusal)
    }
}

/// A CSV file checked row by row.
#[derive(Debug, Default)]
pub struct CsvBatch {
    /// Valid rows, in file order, with their line.
    pub rows: Vec<(u64, Prepared)>,
    /// Refused rows, in file order.
    pub errors: Vec<RowError>,
}

/// Check CSV text: the header (an error stops everything), then every row with the worker's
/// validation (a bad row is reported with its line, column and rule). A `request_id` used
/// twice in the file is refused the second time. Lines are counted in the file as it is (the
/// csv reader's own count skips blank lines).
pub fn parse_csv(input: &[u8], today: NaiveDate) -> Result<CsvBatch, CsvError> {
    let newlines: Vec<u64> = input
        .iter()
        .enumerate()
        .filter(|(_, b)| **b == b'\n')
        .map(|(i, _)| i as u64)
        .collect();
    // The 1-based line of the first character at or after byte `offset` that is not a line
    // break (a record's position is where the reader stood, before the blank lines it skips).
    let line_of = |offset: u64| {
        let skipped = input
            .get(offset as usize..)
            .unwrap_or_default()
            .iter()
            .take_while(|b| matches!(b, b'\r' | b'\n'))
            .count() as u64;
        newlines.partition_point(|n| *n < offset + skipped) as u64 + 1
    };
    let mut rdr = csv::ReaderBuilder::new()
        .trim(csv::Trim::All)
        .from_reader(input);
    let header = rdr.headers().map_err(CsvError::from_csv)?.clone();
    let columns = check_header(&header.iter().collect::<Vec<_>>())?;
    let mut batch = CsvBatch::default();
    let mut seen: HashMap<String, u64> = HashMap::new();
    let mut record = csv::StringRecord::new();
    loop {
        let line_hint = line_of(rdr.position().byte());
        match rdr.read_record(&mut record) {
            Ok(false) => break,
            Ok(true) => {}
            Err(e) => {
                let line = e.position().map_or(line_hint, |p| line_of(p.byte()));
                let rule = match e.kind() {
                    csv::ErrorKind::UnequalLengths {
                        expected_len, len, ..
                    } => format!("has {len} fields, the header has {expected_len}"),
                    csv::ErrorKind::Utf8 { err, .. } => {
                        format!("field {} is not valid UTF-8", err.field() + 1)
                    }
                    _ => return Err(CsvError::from_csv(e)),
                };
                batch.errors.push(RowError {
                    line,
                    request_id: None,
                    refusal: Refusal {
                        column: None,
                        rule,
                        reason_code: ReasonCode::InvalidRequest,
                    },
                });
                continue;
            }
        }
        let line = record.position().map_or(line_hint, |p| line_of(p.byte()));
        if record.iter().all(|f| f.is_empty()) {
            continue; // a blank line
        }
        let msg = row_message(&columns, &record.iter().collect::<Vec<_>>());
        let usable_id = crate::check::request::is_valid_request_id(&msg.request_id)
            .then(|| msg.request_id.clone());
        let refused = |refusal| RowError {
            line,
            request_id: usable_id.clone(),
            refusal,
        };
        if msg.request_id.is_empty() {
            batch.errors.push(refused(Refusal {
                column: Some("request_id"),
                rule: "is required in a CSV (a rerun must find the same ids)".into(),
                reason_code: ReasonCode::InvalidRequest,
            }));
            continue;
        }
        if let Some(first) = seen.get(&msg.request_id) {
            batch.errors.push(RowError {
                line,
                request_id: None, // the id belongs to the row of line `first`
                refusal: Refusal {
                    column: Some("request_id"),
                    rule: format!("is already used on line {first} (one id is one check)"),
                    reason_code: ReasonCode::RequestIdConflict,
                },
            });
            continue;
        }
        match prepare(&msg, today) {
            Ok(p) => {
                seen.insert(p.request_id.clone(), line);
                batch.rows.push((line, p));
            }
            Err(r) => {
                if let Some(id) = &usable_id {
                    seen.insert(id.clone(), line);
                }
                batch.errors.push(refused(r));
            }
        }
    }
    Ok(batch)
}

/// A CSV file that cannot be used at all.
#[derive(Debug, thiserror::Error)]
pub enum CsvError {
    /// The header is wrong.
    #[error(transparent)]
    Header(#[from] HeaderError),
    /// Reading failed (I/O).
    #[error("{0}")]
    Read(String),
}

impl CsvError {
    fn from_csv(e: csv::Error) -> CsvError {
        match e.kind() {
            csv::ErrorKind::Io(io) => CsvError::Read(io.to_string()),
            csv::ErrorKind::Utf8 { .. } => CsvError::Read("the header is not valid UTF-8".into()),
            // The position only: csv's messages could quote a field (personal data).
            _ => CsvError::Read(format!(
                "unreadable CSV{}",
                e.position()
                    .map(|p| format!(" at line {}", p.line()))
                    .unwrap_or_default()
            )),
        }
    }
}

/// Read and check a CSV file; every error names the file.
pub fn read_csv(path: &Path, today: NaiveDate) -> anyhow::Result<CsvBatch> {
    let data = std::fs::read(path)
        .map_err(|e| anyhow::anyhow!("cannot read the CSV file {}: {e}", path.display()))?;
    parse_csv(&data, today).map_err(|e| anyhow::anyhow!("CSV file {}: {e}", path.display()))
}

// ---------------------------------------------------------------------------------------------
// Outcome of a run, exit codes
// ---------------------------------------------------------------------------------------------

/// Exit codes of `kycq enqueue` and `kycq status` (1 is any other error, 2 a configuration
/// error).
pub mod exit {
    /// Every request completed (or, without `--wait`, every request was published).
    pub const OK: u8 = 0;
    /// A request was rejected: by kycq's validation before publishing, or by the worker.
    pub const REJECTED: u8 = 3;
    /// A request failed (no answer could be had; see its `reason_code`).
    pub const FAILED: u8 = 4;
    /// A published request had no result in time: it is still queued under its id.
    pub const TIMEOUT: u8 = 5;
    /// `kycq status`: no request with that id in the database.
    pub const UNKNOWN: u8 = 6;
    /// Interrupted by Ctrl-C (published requests stay queued).
    pub const INTERRUPTED: u8 = 130;
}

/// What a run of `kycq enqueue` came to.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Tally {
    /// Requests published (confirmed by the broker).
    pub published: usize,
    /// Rows refused before publishing.
    pub refused: usize,
    /// Rows whose request id had already finished (read from Postgres, not published again).
    pub finished_before: usize,
    /// Rows not published because of Ctrl-C.
    pub not_published: usize,
    /// Results by status (including the ones already finished).
    pub completed: usize,
    /// Rejected by the worker (or already rejected).
    pub rejected: usize,
    /// Failed.
    pub failed: usize,
    /// Published, waited for, no result: still queued under these ids.
    pub pending: Vec<String>,
    /// Ctrl-C stopped the run.
    pub interrupted: bool,
}

impl Tally {
    /// Count one result.
    pub fn count(&mut self, status: Status) {
        match status {
            Status::Completed => self.completed += 1,
            Status::Rejected => self.rejected += 1,
            Status::Failed => self.failed += 1,
        }
    }

    /// The counts by status, for the progress bar and the summary.
    pub fn by_status(&self) -> String {
        format!(
            "completed {}, rejected {}, failed {}",
            self.completed, self.rejected, self.failed
        )
    }
}

/// The exit code of a run: interrupted 130; else any request still pending 5; else any failed
/// 4; else any rejected or refused 3; else 0.
pub fn exit_code(t: &Tally) -> u8 {
    if t.interrupted {
        exit::INTERRUPTED
    } else if !t.pending.is_empty() {
        exit::TIMEOUT
    } else if t.failed > 0 {
        exit::FAILED
    } else if t.rejected + t.refused > 0 {
        exit::REJECTED
    } else {
        exit::OK
    }
}

/// One line for the end of a batch.
pub fn summary(t: &Tally, waited: bool) -> String {
    let mut s = format!(
        "published {}, refused {}, already finished {} (not published again)",
        t.published, t.refused, t.finished_before
    );
    if t.not_published > 0 {
        s.push_str(&format!(", not published (Ctrl-C) {}", t.not_published));
    }
    if waited {
        s.push_str(&format!(
            "; results: {}, no result yet {}",
            t.by_status(),
            t.pending.len()
        ));
    }
    s
}

/// The message for requests that had no result in time (or when waiting was stopped).
pub fn pending_message(pending: &[String], why: &str) -> String {
    match pending {
        [] => String::new(),
        [one] => format!(
            "{why}: request {one} is still queued under that id and will be processed (and \
             possibly billed) when a worker takes it. Do not publish it again under a new id; \
             look it up with: kycq status {one}"
        ),
        many => {
            let shown: Vec<&str> = many.iter().take(20).map(String::as_str).collect();
            format!(
                "{why}: {} requests are still queued under their ids and will be processed when \
                 a worker takes them (do not publish them again under new ids); look one up with \
                 `kycq status ID`: {}{}",
                many.len(),
                shown.join(" "),
                if many.len() > shown.len() {
                    " … (all are in --out as `pending`)"
                } else {
                    ""
                }
            )
        }
    }
}

// ---------------------------------------------------------------------------------------------
// --out: one line per request, no personal data
// ---------------------------------------------------------------------------------------------

/// The columns of `--out`.
pub const OUT_COLUMNS: [&str; 6] = [
    "request_id",
    "status",
    "verdict",
    "reason_code",
    "billed",
    "provider",
];

/// The `--out` file, written (and flushed) one line per request as results arrive.
pub struct ResultsOut {
    w: csv::Writer<std::fs::File>,
    path: PathBuf,
}

impl ResultsOut {
    /// Create (truncate) the file and write the header.
    pub fn create(path: &Path) -> anyhow::Result<ResultsOut> {
        let file = std::fs::File::create(path)
            .map_err(|e| anyhow::anyhow!("cannot write --out file {}: {e}", path.display()))?;
        let mut out = ResultsOut {
            w: csv::Writer::from_writer(file),
            path: path.to_owned(),
        };
        out.line(&OUT_COLUMNS)?;
        Ok(out)
    }

    fn line(&mut self, cells: &[&str]) -> anyhow::Result<()> {
        self.w
            .write_record(cells)
            .and_then(|_| self.w.flush().map_err(Into::into))
            .map_err(|e| anyhow::anyhow!("writing --out file {}: {e}", self.path.display()))
    }

    /// A result.
    pub fn result(&mut self, r: &CheckResult) -> anyhow::Result<()> {
        self.line(&out_line(r))
    }

    /// A row refused before publishing (only rows with a usable request id).
    pub fn refused(&mut self, request_id: &str, reason_code: ReasonCode) -> anyhow::Result<()> {
        self.line(&[request_id, "rejected", "", reason_code.as_str(), "no", ""])
    }

    /// A published request without a result yet.
    pub fn pending(&mut self, request_id: &str) -> anyhow::Result<()> {
        self.line(&[request_id, "pending", "", "", "", ""])
    }
}

/// The `--out` cells of a result.
pub fn out_line(r: &CheckResult) -> [&str; 6] {
    [
        &r.request_id,
        r.status.as_str(),
        r.verdict.map_or("", |v| v.as_str()),
        r.reason_code.as_str(),
        r.billed.as_str(),
        r.provider.as_deref().unwrap_or(""),
    ]
}

// ---------------------------------------------------------------------------------------------
// The run: publish, wait for results, Ctrl-C
// ---------------------------------------------------------------------------------------------

/// How to run.
#[derive(Clone, Debug)]
pub struct RunOptions {
    /// Wait for the results.
    pub wait: bool,
    /// Give up after this long without a new result.
    pub timeout: Duration,
    /// A progress bar of results (batches).
    pub progress: bool,
    /// One request: tell its id on stderr before publishing, and print it on stdout once
    /// published when not waiting.
    pub single: bool,
}

/// The results of the given request ids that are already finished in Postgres. A database
/// that does not exist yet has none; one that cannot be reached is reported (`Err`) and the
/// caller decides.
pub async fn finished_results(
    settings: &Settings,
    ids: &[String],
) -> anyhow::Result<HashMap<String, CheckResult>> {
    let Some(pool) = crate::ops::status::connect_readonly(settings).await? else {
        return Ok(HashMap::new());
    };
    let mut out = HashMap::new();
    for chunk in ids.chunks(5000) {
        let rows: Vec<(String, serde_json::Value)> = match sqlx::query_as(
            "SELECT request_id, result FROM checks \
              WHERE request_id = ANY($1) AND result IS NOT NULL",
        )
        .bind(chunk)
        .fetch_all(&pool)
        .await
        {
            Ok(rows) => rows,
            // No `checks` table yet: no worker has run against this database.
            Err(sqlx::Error::Database(e)) if e.code().as_deref() == Some("42P01") => break,
            Err(e) => return Err(e.into()),
        };
        for (id, v) in rows {
            let r: CheckResult = serde_json::from_value(v)
                .map_err(|e| anyhow::anyhow!("the stored result of {id} is unreadable: {e}"))?;
            out.insert(id, r);
        }
    }
    pool.close().await;
    Ok(out)
}

/// Two tokens: the first Ctrl-C cancels the first, the second Ctrl-C the second.
fn ctrl_c_tokens() -> (CancellationToken, CancellationToken) {
    let (first, second) = (CancellationToken::new(), CancellationToken::new());
    let (f, s) = (first.clone(), second.clone());
    tokio::spawn(async move {
        if tokio::signal::ctrl_c().await.is_ok() {
            f.cancel();
            if tokio::signal::ctrl_c().await.is_ok() {
                s.cancel();
            }
        }
    });
    (first, second)
}

fn say(bar: &Option<ProgressBar>, msg: &str) {
    match bar {
        Some(b) => b.suspend(|| eprintln!("{msg}")),
        None => eprintln!("{msg}"),
    }
}

/// Publish `requests` (confirmed, in order) and, with `wait`, collect their results on a
/// private reply queue until each has one, `timeout` passes without a new result, or Ctrl-C.
/// A first Ctrl-C stops publishing and keeps waiting for what was published (a second stops
/// waiting); when everything was already published, the first stops waiting. Results go to
/// `out` when given, else to stdout as JSON lines. `tally` comes in with the refused and
/// already-finished rows counted.
pub async fn run(
    settings: &Settings,
    requests: &[Prepared],
    opts: &RunOptions,
    mut tally: Tally,
    mut out: Option<&mut ResultsOut>,
) -> anyhow::Result<Tally> {
    let names = settings.topology.names();
    let conn = broker::connect_any(&settings.amqp.nodes(), "kycq enqueue").await?;
    broker::declare_topology(&conn, &names, settings.amqp.delivery_limit).await?;
    let publisher = Publisher::new(
        &conn,
        names.clone(),
        Duration::from_secs(settings.amqp.confirm_timeout_secs),
    )
    .await?;
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<CheckResult>();
    let reply_to = if opts.wait {
        let mut q = ReplyQueue::open(&conn).await?;
        let name = q.name().to_owned();
        tokio::spawn(async move {
            while let Some((_, r)) = q.next(Duration::from_secs(86_400)).await {
                if tx.send(r).is_err() {
                    break;
                }
            }
        });
        Some(name)
    } else {
        drop(tx);
        None
    };
    let (first_ctrl_c, second_ctrl_c) = ctrl_c_tokens();
    let bar = (opts.progress && opts.wait).then(|| {
        let b = ProgressBar::new(requests.len() as u64);
        b.set_style(
            ProgressStyle::with_template("{bar:40} {pos}/{len} results  {msg}").expect("template"),
        );
        b
    });
    let mut outstanding: HashSet<String> = HashSet::new();
    let handle = |r: CheckResult,
                  outstanding: &mut HashSet<String>,
                  tally: &mut Tally,
                  out: &mut Option<&mut ResultsOut>|
     -> anyhow::Result<()> {
        if !outstanding.remove(&r.request_id) {
            return Ok(()); // not ours, or a second copy (results are published at least once)
        }
        tally.count(r.status);
        match out {
            Some(o) => o.result(&r)?,
            None => {
                let line = serde_json::to_string(&r)?;
                match &bar {
                    Some(b) => b.suspend(|| println!("{line}")),
                    None => println!("{line}"),
                }
            }
        }
        if let Some(b) = &bar {
            b.inc(1);
            b.set_message(tally.by_status());
        }
        Ok(())
    };
    let mut stopped_publishing = false;
    for (i, p) in requests.iter().enumerate() {
        if first_ctrl_c.is_cancelled() {
            stopped_publishing = true;
            tally.not_published = requests.len() - i;
            tally.interrupted = true;
            say(
                &bar,
                &format!(
                    "Ctrl-C: publishing stopped after {i} of {} requests; {} rows were not \
                     published.{}",
                    requests.len(),
                    tally.not_published,
                    if opts.wait {
                        " Waiting for the results of the published ones (Ctrl-C again to stop \
                         waiting: they stay queued)."
                    } else {
                        ""
                    }
                ),
            );
            break;
        }
        if opts.single {
            eprintln!("request_id {}", p.request_id);
        }
        if let Err(e) = publish_prepared(&publisher, p, reply_to.as_deref()).await {
            return Err(anyhow::anyhow!(
                "publishing request {} failed ({e}); {i} request(s) published before it stay \
                 queued, the rest were not published",
                p.request_id
            ));
        }
        tally.published += 1;
        if opts.single && !opts.wait {
            println!("{}", p.request_id);
        }
        if opts.wait {
            outstanding.insert(p.request_id.clone());
            while let Ok(r) = rx.try_recv() {
                handle(r, &mut outstanding, &mut tally, &mut out)?;
            }
        }
    }
    if let Some(b) = &bar {
        b.set_message(tally.by_status());
    }
    if opts.wait {
        // Once everything is published, the first Ctrl-C stops waiting.
        let stop = if stopped_publishing {
            second_ctrl_c
        } else {
            first_ctrl_c
        };
        let mut timed_out = false;
        while !outstanding.is_empty() {
            tokio::select! {
                r = tokio::time::timeout(opts.timeout, rx.recv()) => match r {
                    Ok(Some(r)) => handle(r, &mut outstanding, &mut tally, &mut out)?,
                    _ => {
                        timed_out = true;
                        break;
                    }
                },
                _ = stop.cancelled() => {
                    tally.interrupted = true;
                    break;
                }
            }
        }
        let mut pending: Vec<String> = outstanding.into_iter().collect();
        pending.sort();
        if let Some(o) = out.as_mut() {
            for id in &pending {
                o.pending(id)?;
            }
        }
        if let Some(b) = &bar {
            b.finish_and_clear();
        }
        let why = if timed_out {
            format!("no result within {}s", opts.timeout.as_secs())
        } else {
            "Ctrl-C: stopped waiting".to_owned()
        };
        if !pending.is_empty() {
            eprintln!("{}", pending_message(&pending, &why));
        }
        tally.pending = pending;
    }
    let _ = conn.close(200, "done".into()).await;
    Ok(tally)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sandbox::scenarios::{identity, Scenario};

    fn today() -> NaiveDate {
        NaiveDate::from_ymd_opt(2026, 11, 23).unwrap()
    }

    const HEADER: &str = "request_id,check,name,id_number,mobile\n";

    fn row(id: &str, who: &crate::sandbox::scenarios::TestIdentity) -> String {
        format!(
            "{id},mobile3,{},{},{}\n",
            who.name, who.id_number, who.mobile
        )
    }

    fn parse(text: &str) -> Result<CsvBatch, CsvError> {
        parse_csv(text.as_bytes(), today())
    }

    #[test]
    fn debug_masks_the_person() {
        let r = RequestMessage {
            request_id: "r-1".into(),
            check: "mobile3".into(),
            name: "张三丰".into(),
            id_number: "11010519491231002X".into(),
            mobile: Some("13812345678".into()),
            ..Default::default()
        };
        let d = format!("{r:?}");
        for secret in [
            "张三丰",
            "三丰",
            "11010519491231002X",
            "13812345678",
            "1949123",
        ] {
            assert!(!d.contains(secret), "{secret} in {d}");
        }
        assert!(
            d.contains("r-1") && d.contains("mobile3") && d.contains("138****5678"),
            "{d}"
        );
    }

    #[test]
    fn a_header_of_known_columns_is_accepted_in_any_order_and_case() {
        let cols = check_header(&[
            "ID_Number",
            " check",
            "\u{feff}request_id",
            "name",
            "scene_code",
        ])
        .unwrap();
        assert_eq!(
            cols,
            ["id_number", "check", "request_id", "name", "scene_code"]
        );
    }

    #[test]
    fn an_unknown_column_is_named_with_the_allowed_ones() {
        let e = check_header(&["request_id", "check", "name", "idnumber"]).unwrap_err();
        assert_eq!(e, HeaderError::Unknown("idnumber".into()));
        let msg = e.to_string();
        assert!(msg.contains("unknown column `idnumber`"), "{msg}");
        assert!(
            msg.contains("request_id, check, name, id_number, mobile"),
            "{msg}"
        );
    }

    #[test]
    fn a_data_line_where_the_header_should_be_is_not_echoed() {
        let who = identity(Scenario::Match, 0);
        let e = check_header(&["r-1", "mobile3", &who.name, &who.id_number]).unwrap_err();
        // `r-1` looks like a name; the first cell that cannot be one is reported by position.
        assert_eq!(e, HeaderError::Unknown("r-1".into()));
        let e = check_header(&[&who.name, "check"]).unwrap_err();
        assert_eq!(e, HeaderError::NotAName(1));
        assert!(!e.to_string().contains(&who.name));
    }

    #[test]
    fn missing_required_and_duplicate_columns_are_refused() {
        assert_eq!(
            check_header(&["check", "name", "mobile"]).unwrap_err(),
            HeaderError::Missing(vec!["request_id", "id_number"])
        );
        let msg = HeaderError::Missing(vec!["request_id"]).to_string();
        assert!(
            msg.starts_with("the header has no request_id column"),
            "{msg}"
        );
        assert_eq!(
            check_header(&["request_id", "check", "name", "id_number", "name"]).unwrap_err(),
            HeaderError::Duplicate("name")
        );
        assert_eq!(check_header(&[""]).unwrap_err(), HeaderError::Empty);
    }

    #[test]
    fn valid_rows_are_prepared_with_their_lines_and_the_worker_accepts_the_bytes() {
        let (a, b) = (
            identity(Scenario::Match, 1),
            identity(Scenario::NoRecord, 2),
        );
        let text = format!("{HEADER}{}\n{}", row("r-1", &a), row("r-2", &b));
        let batch = parse(&text).unwrap();
        assert!(batch.errors.is_empty(), "{:?}", batch.errors);
        let lines: Vec<u64> = batch.rows.iter().map(|(l, _)| *l).collect();
        assert_eq!(lines, [2, 4], "the blank line 3 is skipped");
        let (_, p) = &batch.rows[0];
        assert_eq!(p.request_id, "r-1");
        assert_eq!(p.routing_key, "check.mobile3");
        let Decoded::Valid(r) = decode(&p.body, today()).unwrap() else {
            panic!("the published bytes must decode as valid")
        };
        assert_eq!(r.subject.id_number.expose(), a.id_number);
        assert!(
            !format!("{p:?}").contains(&a.id_number),
            "Debug hides the body"
        );
    }

    #[test]
    fn a_bad_row_names_its_line_column_and_rule_never_the_value() {
        let good = identity(Scenario::Match, 3);
        let mut bad = identity(Scenario::Match, 4);
        // Break the check character.
        let last = if bad.id_number.ends_with('0') {
            '1'
        } else {
            '0'
        };
        bad.id_number.pop();
        bad.id_number.push(last);
        let text = format!(
            "{HEADER}{}{}r-3,mobile3,{},{},12345\nr-4,mobile9,{},{},{}\n",
            row("r-1", &good),
            row("r-2", &bad),
            good.name,
            good.id_number,
            good.name,
            good.id_number,
            good.mobile
        );
        let batch = parse(&text).unwrap();
        assert_eq!(batch.rows.len(), 1);
        let errs: Vec<String> = batch.errors.iter().map(ToString::to_string).collect();
        assert_eq!(errs.len(), 3, "{errs:?}");
        assert!(
            errs[0].starts_with("line 3, column id_number: "),
            "{}",
            errs[0]
        );
        assert!(errs[0].ends_with("(invalid_id_number)"), "{}", errs[0]);
        assert!(
            errs[1].starts_with("line 4, column mobile: "),
            "{}",
            errs[1]
        );
        assert!(errs[1].ends_with("(invalid_mobile)"), "{}", errs[1]);
        assert_eq!(
            errs[2],
            "line 5, column check: check must be one of mobile3, id2, id2_period (invalid_request)"
        );
        assert_eq!(batch.errors[0].request_id.as_deref(), Some("r-2"));
        for e in &errs {
            assert!(!e.contains(&bad.id_number) && !e.contains(&good.name) && !e.contains("12345"));
        }
    }

    #[test]
    fn ids_missing_malformed_or_repeated_are_refused() {
        let who = identity(Scenario::Match, 5);
        let text = format!(
            "{HEADER}{}{}{}{}",
            row("", &who),
            row("bad id!", &who),
            row("r-1", &who),
            row("r-1", &who)
        );
        let batch = parse(&text).unwrap();
        assert_eq!(batch.rows.len(), 1);
        let errs: Vec<String> = batch.errors.iter().map(ToString::to_string).collect();
        assert_eq!(
            errs,
            [
                "line 2, column request_id: is required in a CSV (a rerun must find the same ids) (invalid_request)",
                "line 3, column request_id: request_id must be 1-64 characters of A-Z a-z 0-9 _ - (invalid_request)",
                "line 5, column request_id: is already used on line 4 (one id is one check) (request_id_conflict)",
            ]
        );
        assert_eq!(
            batch.errors[1].request_id, None,
            "an unusable id is not written to --out"
        );
    }

    #[test]
    fn a_row_with_the_wrong_number_of_fields_is_reported_and_the_rest_read() {
        let who = identity(Scenario::Match, 6);
        let text = format!("{HEADER}r-1,mobile3\n{}", row("r-2", &who));
        let batch = parse(&text).unwrap();
        assert_eq!(batch.rows.len(), 1);
        assert_eq!(
            batch.errors[0].to_string(),
            "line 2, has 2 fields, the header has 5 (invalid_request)"
        );
    }

    #[test]
    fn a_wrong_header_stops_before_any_row() {
        let e = parse("request_id,check,full_name,id_number\nr,mobile3,x,y\n").unwrap_err();
        assert!(e.to_string().contains("unknown column `full_name`"), "{e}");
        assert!(matches!(
            parse("").unwrap_err(),
            CsvError::Header(HeaderError::Empty)
        ));
    }

    #[test]
    fn a_missing_file_is_named() {
        let e = read_csv(Path::new("/nonexistent/backfill.csv"), today()).unwrap_err();
        let msg = e.to_string();
        assert!(
            msg.starts_with("cannot read the CSV file /nonexistent/backfill.csv: "),
            "{msg}"
        );
    }

    #[test]
    fn a_single_request_is_refused_with_the_workers_rule() {
        let who = identity(Scenario::Match, 7);
        let m = RequestMessage {
            check: "mobile3".into(),
            name: who.name.clone(),
            id_number: who.id_number.clone(),
            ..Default::default()
        }
        .normalised();
        let r = prepare(&m, today()).unwrap_err();
        assert_eq!(r.column, Some("mobile"));
        assert_eq!(r.reason_code, ReasonCode::InvalidMobile);
        assert_eq!(
            r.to_string(),
            "column mobile: mobile is required (invalid_mobile)"
        );
        // The check is trimmed (it is the routing key too).
        let ok = RequestMessage {
            check: " id2 ".into(),
            ..m
        }
        .normalised();
        assert_eq!(prepare(&ok, today()).unwrap().routing_key, "check.id2");
    }

    #[test]
    fn exit_codes_follow_the_worst_outcome() {
        let t = |f: &dyn Fn(&mut Tally)| {
            let mut t = Tally {
                completed: 2,
                ..Tally::default()
            };
            f(&mut t);
            exit_code(&t)
        };
        assert_eq!(t(&|_| {}), exit::OK);
        assert_eq!(t(&|t| t.refused = 1), exit::REJECTED);
        assert_eq!(t(&|t| t.rejected = 1), exit::REJECTED);
        assert_eq!(
            t(&|t| {
                t.rejected = 1;
                t.failed = 1
            }),
            exit::FAILED
        );
        assert_eq!(
            t(&|t| {
                t.failed = 1;
                t.pending = vec!["r".into()]
            }),
            exit::TIMEOUT
        );
        assert_eq!(
            t(&|t| {
                t.pending = vec!["r".into()];
                t.interrupted = true
            }),
            exit::INTERRUPTED
        );
        assert_eq!((exit::REJECTED, exit::FAILED, exit::TIMEOUT), (3, 4, 5));
    }

    #[test]
    fn a_timeout_names_the_id_and_how_to_look_it_up() {
        let m = pending_message(&["r-9".into()], "no result within 60s");
        assert!(
            m.starts_with("no result within 60s: request r-9 is still queued"),
            "{m}"
        );
        assert!(m.ends_with("kycq status r-9"), "{m}");
        assert_eq!(pending_message(&[], "x"), "");
    }

    #[test]
    fn out_lines_carry_no_personal_data() {
        let r: CheckResult = serde_json::from_value(serde_json::json!({
            "request_id": "r-1", "check": "mobile3", "status": "completed", "verdict": "match",
            "reason_code": "match", "reason": "ok", "billed": "yes", "carrier": null,
            "provider": "tencent", "provider_code": "0", "provider_request_id": "x",
            "attempts": 1,
            "subject": {"name": "张*", "id_number": "110***********002X", "mobile": null},
            "received_at": "2026-11-23T02:18:16.120Z", "completed_at": "2026-11-23T02:18:16.410Z"
        }))
        .unwrap();
        assert_eq!(
            out_line(&r),
            ["r-1", "completed", "match", "match", "yes", "tencent"]
        );
    }
}
