//! Dead letters an operator can act on (`kycq dlq`): what can be done with each one (retry,
//! resolve, purge), retrying a request under its own `request_id`, recording the billing found
//! for a `billing_unknown`, purging, and replaying — each dead letter handled at most once per
//! run, every decision kept in Postgres.
//!
//! The order of every step is chosen so that a crash loses nothing: the database change first,
//! then the request published (confirmed), then the dead letter acknowledged. A re-run after a
//! crash finds its own decision (by the dead letter's identity) and only publishes and
//! acknowledges what is left.

use std::time::Duration;

use chrono::{DateTime, Utc};
use lapin::Connection;
use serde::Serialize;

use crate::broker::dlq::{self, Cursor, DeadLetterInfo, Held};
use crate::broker::{BrokerError, Publisher};
use crate::check::Billed;
use crate::configuration::Names;
use crate::store::{
    Decision, DecisionRow, JournalRow, RetryWrite, RowSnapshot, Store, StoreError, SupersededRow,
};

/// Why a dead letter is left in place.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum SkipKind {
    /// kycq cannot read it as a request: it can only be purged.
    Malformed,
    /// `billing_unknown` without the operator's finding: resolve first.
    Unresolved,
    /// No stored result yet: a worker may still be finishing it.
    NotYet,
    /// Its stored result stands (billed, or not a retryable failure).
    Finished,
    /// Its reason is not one a retry can help.
    NotRetryable,
    /// It ended a run a retry has since superseded: stale. `retry` removes it (nothing to run:
    /// the request's current run answers for it); counted as skipped.
    OlderRun,
}

impl SkipKind {
    /// The action an operator can take (the "action" column of `kycq dlq list`).
    pub fn action(self) -> &'static str {
        match self {
            SkipKind::Malformed => "purge only",
            SkipKind::Unresolved => "resolve",
            SkipKind::NotYet => "wait",
            SkipKind::Finished | SkipKind::NotRetryable => "replay or purge",
            SkipKind::OlderRun => "stale (retry removes it)",
        }
    }
}

/// What `kycq dlq retry` does with one dead letter.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(tag = "plan", rename_all = "snake_case")]
pub enum RetryPlan {
    /// Run the request again under its own id. `supersede`: a stored result is replaced (and
    /// kept); otherwise the row has none (a delivery-limit dead letter) and the worker resumes it
    /// from the journal as for any redelivery.
    Retry {
        /// Whether a stored result is superseded.
        supersede: bool,
    },
    /// This dead letter was retried before and its new run has no result yet (a crash between
    /// the database change and the acknowledgement): publish it again.
    Republish,
    /// This dead letter was retried before and its new run finished: only remove it.
    AckOnly {
        /// What the new run ended with.
        why: String,
    },
    /// Leave it in place.
    Skip {
        /// Why, as data.
        kind: SkipKind,
        /// Why, for the operator (names what to do instead).
        why: String,
    },
}

impl RetryPlan {
    fn write(&self) -> RetryWrite {
        match self {
            RetryPlan::Retry { supersede: true } => RetryWrite::Supersede,
            RetryPlan::Retry { supersede: false } => RetryWrite::Record,
            _ => RetryWrite::Nothing,
        }
    }

    /// The action column: `retry`, or what to do instead.
    pub fn action(&self) -> &'static str {
        match self {
            RetryPlan::Retry { .. } | RetryPlan::Republish => "retry",
            RetryPlan::AckOnly { .. } => "retried",
            RetryPlan::Skip { kind, .. } => kind.action(),
        }
    }

    /// The sentence of a skip or an ack-only.
    pub fn why(&self) -> Option<&str> {
        match self {
            RetryPlan::AckOnly { why } | RetryPlan::Skip { why, .. } => Some(why),
            _ => None,
        }
    }
}

fn skip(kind: SkipKind, why: String) -> RetryPlan {
    RetryPlan::Skip { kind, why }
}

/// A dead letter whose body has no request_id the worker can read (the broker dead-lettered a
/// malformed message): retried, it could only be dead-lettered again.
fn no_request_id(reason: &str) -> RetryPlan {
    skip(
        SkipKind::Malformed,
        format!(
            "its body has no request_id kycq can read (dead-lettered as {reason}), so it cannot \
             be retried; `kycq dlq show` cannot find it by id: remove it with `kycq dlq purge \
             --reason {reason} --yes`"
        ),
    )
}

/// Decide what a retry does with a dead letter of `reason` (`x-kycq-reason`, or the broker's
/// `delivery_limit`) ending run `run` of its request (kycq's `x-kycq-retry-round`; None when the
/// dead letter does not say), given the request's row, the operator's billing finding for the
/// current run and whether this very dead letter was retried before. Pure.
///
/// A dead letter of a run older than the row's current one is stale (a second dead letter of a
/// run already retried, e.g. after a worker crashed between dead-lettering and storing): it is
/// removed, never run again, because it would supersede the newer run's result as its own.
///
/// Only an unbilled failure is run again: `retries_exhausted` and `provider_unavailable`
/// results, a `billing_unknown` the operator resolved as not billed, and delivery-limit dead
/// letters (no result stored: the worker's journal decides, so a call in flight is never
/// repeated). A billed result is never retried (it would bill again).
pub fn plan_retry(
    reason: &str,
    run: Option<i32>,
    row: Option<&RowSnapshot>,
    resolved: Option<Billed>,
    decided: bool,
) -> RetryPlan {
    if dlq::malformed(reason) {
        return skip(
            SkipKind::Malformed,
            format!(
                "malformed ({reason}): kycq cannot read it as a request, so it cannot be retried; \
                 remove it with `kycq dlq purge --reason {reason} --yes`"
            ),
        );
    }
    if decided {
        return match row {
            Some(r) if r.completed => RetryPlan::AckOnly {
                why: format!(
                    "already retried; the new run finished {}/{}",
                    r.status,
                    r.reason_code.as_deref().unwrap_or("-")
                ),
            },
            _ => RetryPlan::Republish,
        };
    }
    if let (Some(run), Some(r)) = (run, row) {
        if run < r.retry_round {
            return skip(
                SkipKind::OlderRun,
                format!(
                    "an older run: it ended run {run}, and a retry has since started run {} of \
                     this request; that run's result answers it. `kycq dlq retry` removes it",
                    r.retry_round
                ),
            );
        }
        if run > r.retry_round {
            return skip(
                SkipKind::NotRetryable,
                format!(
                    "it ended run {run} but Postgres is at run {} of this request: is \
                     database.url the workers' database (or was it restored from a backup)?",
                    r.retry_round
                ),
            );
        }
    }
    let delivery_limit = reason == "delivery_limit";
    match reason {
        "retries_exhausted" | "provider_unavailable" | "billing_unknown" | "delivery_limit" => {}
        "stored_result_unreadable" => {
            return skip(
                SkipKind::NotRetryable,
                "its stored result cannot be read back: repair the row in Postgres first".into(),
            )
        }
        other => {
            return skip(
                SkipKind::NotRetryable,
                format!(
                    "reason {other} is not retryable (retryable: retries_exhausted, \
                     provider_unavailable, delivery_limit, billing_unknown once resolved)"
                ),
            )
        }
    }
    let Some(row) = row else {
        if delivery_limit {
            return RetryPlan::Retry { supersede: false };
        }
        return skip(
            SkipKind::NotRetryable,
            "no row for this request_id in Postgres: is database.url the workers' database?".into(),
        );
    };
    if !row.completed {
        if delivery_limit {
            return RetryPlan::Retry { supersede: false };
        }
        return skip(
            SkipKind::NotYet,
            "no result is stored yet (a worker may still be finishing it): try again later".into(),
        );
    }
    let code = row.reason_code.as_deref().unwrap_or("-");
    let finished = format!(
        "{}/{code}, billed {}",
        row.status,
        row.billed.as_deref().unwrap_or("-")
    );
    if code == "billing_unknown" {
        return match resolved {
            Some(Billed::No) => RetryPlan::Retry { supersede: true },
            Some(_) => skip(
                SkipKind::Finished,
                "resolved as billed: closed; send a new request_id to check this subject again"
                    .into(),
            ),
            None => skip(
                SkipKind::Unresolved,
                "billing unknown: a call may have been billed. Look up its provider_request_id \
                 (`kycq dlq show REQUEST_ID`) in the vendor's console, then run \
                 `kycq dlq resolve REQUEST_ID --billed yes|no`; retry after `--billed no`"
                    .into(),
            ),
        };
    }
    if row.billed.as_deref() == Some("yes") {
        return skip(
            SkipKind::Finished,
            format!(
                "its stored result ({finished}) was billed: a retry would bill again; send a new \
                 request_id instead"
            ),
        );
    }
    match code {
        "retries_exhausted" | "provider_unavailable" => RetryPlan::Retry { supersede: true },
        _ => skip(
            SkipKind::Finished,
            format!(
                "already finished ({finished}): nothing to retry; `kycq dlq replay` republishes \
                 the stored result"
            ),
        ),
    }
}

/// Decide whether `kycq dlq resolve --billed <asked>` writes: `Ok(true)` write, `Ok(false)`
/// already recorded, `Err` why not. Pure.
pub fn plan_resolve(
    row: Option<&RowSnapshot>,
    prior: Option<Billed>,
    asked: Billed,
) -> Result<bool, String> {
    let Some(row) = row else {
        return Err(
            "no row for this request_id in Postgres: is database.url the workers' \
                    database?"
                .into(),
        );
    };
    if !row.completed {
        return Err("no result is stored yet (a worker may still be working on it)".into());
    }
    match prior {
        Some(p) if p == asked => return Ok(false),
        Some(p) => {
            return Err(format!(
                "already resolved as --billed {} for this run; a finding is not changed \
                 (see `kycq dlq show REQUEST_ID` for who decided it)",
                p.as_str()
            ))
        }
        None => {}
    }
    if row.reason_code.as_deref() != Some("billing_unknown") {
        return Err(format!(
            "its stored result is {}/{}, billed {}: only a billing_unknown result is resolved",
            row.status,
            row.reason_code.as_deref().unwrap_or("-"),
            row.billed.as_deref().unwrap_or("-")
        ));
    }
    Ok(true)
}

/// Parse an age such as `90s`, `30m`, `2h`, `7d`.
pub fn parse_age(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (n, unit) = s.split_at(split);
    let n: u64 = n
        .parse()
        .map_err(|_| format!("`{s}`: an age is a number and a unit, e.g. 90s, 30m, 2h, 7d"))?;
    let secs = match unit {
        "s" => 1,
        "m" => 60,
        "h" => 3600,
        "d" => 86400,
        _ => {
            return Err(format!(
                "`{s}`: the unit must be s, m, h or d (e.g. 90s, 30m, 2h, 7d)"
            ))
        }
    };
    Ok(Duration::from_secs(n * secs))
}

/// Which dead letters a command acts on.
#[derive(Clone, Debug, Default)]
pub struct Filters {
    /// Only these reasons (any, when empty).
    pub reasons: Vec<String>,
    /// Only this check (`mobile3`, `id2`, `id2_period`).
    pub check: Option<String>,
    /// Only requests whose stored result names this provider.
    pub provider: Option<String>,
    /// Only dead letters at least this old.
    pub older_than: Option<Duration>,
    /// Only dead letters at most this old.
    pub newer_than: Option<Duration>,
}

impl Filters {
    /// Whether the filters need the request's row (provider, check).
    fn need_row(&self) -> bool {
        self.provider.is_some() || self.check.is_some()
    }

    /// Whether a dead letter passes. Pure. A dead letter without a dead-lettering time passes no
    /// age filter.
    pub fn matches(
        &self,
        info: &DeadLetterInfo,
        row: Option<&RowSnapshot>,
        now: DateTime<Utc>,
    ) -> bool {
        if !self.reasons.is_empty() && !self.reasons.contains(&info.reason) {
            return false;
        }
        if let Some(c) = &self.check {
            let by_key = info.routing_key.strip_prefix("check.");
            let by_row = row.and_then(|r| r.check.as_deref());
            if by_key != Some(c.as_str()) && by_row != Some(c.as_str()) {
                return false;
            }
        }
        if let Some(p) = &self.provider {
            if row.and_then(|r| r.provider.as_deref()) != Some(p.as_str()) {
                return false;
            }
        }
        if self.older_than.is_some() || self.newer_than.is_some() {
            let Some(at) = info
                .dead_lettered_at
                .as_deref()
                .and_then(|t| DateTime::parse_from_rfc3339(t).ok())
            else {
                return false;
            };
            let age = (now - at.with_timezone(&Utc)).to_std().unwrap_or_default();
            if self.older_than.is_some_and(|d| age < d) || self.newer_than.is_some_and(|d| age > d)
            {
                return false;
            }
        }
        true
    }
}

/// Who decides, and why.
#[derive(Clone, Debug)]
pub struct Operator {
    /// `--operator` (default `$USER`).
    pub name: String,
    /// `--note`.
    pub note: Option<String>,
}

/// What a dead-letter command works with.
pub struct Ctx<'a> {
    /// RabbitMQ.
    pub conn: &'a Connection,
    /// Topology names.
    pub names: &'a Names,
    /// Postgres.
    pub store: &'a Store,
    /// Confirmed publishing.
    pub publisher: &'a Publisher,
}

/// A failure of a dead-letter command.
#[derive(Debug, thiserror::Error)]
pub enum DlqError {
    /// RabbitMQ.
    #[error(transparent)]
    Broker(#[from] BrokerError),
    /// Postgres.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The operator asked for something that cannot be done; the sentence says what to do.
    #[error("{0}")]
    Refused(String),
}

/// What happened to one dead letter in a run.
#[derive(Clone, Debug, Serialize)]
pub struct Item {
    /// Position in the queue when read (0 = oldest).
    pub position: usize,
    /// The request id, when it has one.
    pub request_id: Option<String>,
    /// The dead letter's reason.
    pub reason: String,
    /// `retried`, `replayed`, `purged`, `cleared`, `skipped`, `failed` (with `--dry-run`:
    /// `would retry`, …).
    pub outcome: String,
    /// Why (skips, failures, clears).
    pub why: Option<String>,
}

/// The exact account of one run.
#[derive(Clone, Debug, Default, Serialize)]
pub struct Report {
    /// `retry`, `replay`, `purge`.
    pub command: &'static str,
    /// Nothing was changed.
    pub dry_run: bool,
    /// Dead letters in the queue when the run started (at most this many were read).
    pub snapshot: u32,
    /// Dead letters that passed the target and filters.
    pub selected: usize,
    /// Acted on (retried, replayed or purged; with --dry-run: would be).
    pub done: usize,
    /// Removed because an earlier, interrupted run had already retried them.
    pub cleared: usize,
    /// Left in place, each with why.
    pub skipped: usize,
    /// Failed, each with the error; left in place.
    pub failed: usize,
    /// One line per selected dead letter.
    pub items: Vec<Item>,
}

impl Report {
    fn push(&mut self, m: &Held, outcome: &str, why: Option<String>) {
        self.items.push(Item {
            position: m.info.position,
            request_id: m.info.request_id.clone(),
            reason: m.info.reason.clone(),
            outcome: outcome.to_owned(),
            why,
        });
    }

    /// The summary line, e.g. `retried 2, skipped 1, failed 0 (of 3 dead letters)`.
    pub fn summary(&self) -> String {
        let verb = match self.command {
            "retry" => "retried",
            "replay" => "replayed",
            _ => "purged",
        };
        let pre = if self.dry_run {
            "dry run: would have "
        } else {
            ""
        };
        let mut s = format!(
            "{pre}{verb} {}, skipped {}, failed {}",
            self.done, self.skipped, self.failed
        );
        if self.cleared > 0 {
            s.push_str(&format!(", cleared {} already retried", self.cleared));
        }
        s.push_str(&format!(
            " ({} selected of {} dead letters)",
            self.selected, self.snapshot
        ));
        s
    }
}

/// Which dead letters: one request's, or every one that passes the filters.
#[derive(Clone, Copy, Debug)]
pub enum Target<'a> {
    /// The dead letters of one request id.
    One(&'a str),
    /// Exactly these dead letters of one request id, by [`Held::key`] (what an operator was
    /// shown): a dead letter that arrived since is left alone, and one already handled is not
    /// found.
    Exact {
        /// The request id.
        request_id: &'a str,
        /// The dead letters' keys.
        keys: &'a [String],
    },
    /// Every dead letter.
    All,
}

impl Target<'_> {
    fn takes(&self, m: &Held) -> bool {
        match self {
            Target::One(id) => m.info.request_id.as_deref() == Some(*id),
            Target::Exact { request_id, keys } => {
                m.info.request_id.as_deref() == Some(*request_id)
                    && m.key().is_some_and(|k| keys.contains(&k))
            }
            Target::All => true,
        }
    }
}

async fn row_for(store: &Store, info: &DeadLetterInfo) -> Result<Option<RowSnapshot>, StoreError> {
    match &info.request_id {
        Some(id) => store.snapshot(id).await,
        None => Ok(None),
    }
}

/// Read the snapshot once and return the held dead letters that pass `target` and `filters`
/// (the others stay held, unacknowledged, until the cursor closes).
async fn select(
    ctx: &Ctx<'_>,
    cursor: &mut Cursor,
    target: Target<'_>,
    filters: &Filters,
) -> Result<Vec<(Held, Option<RowSnapshot>)>, DlqError> {
    let now = Utc::now();
    let mut out = Vec::new();
    while let Some(m) = cursor.next().await? {
        if !target.takes(&m) {
            continue;
        }
        let row = if filters.need_row() {
            row_for(ctx.store, &m.info).await?
        } else {
            None
        };
        if filters.matches(&m.info, row.as_ref(), now) {
            out.push((m, row));
        }
    }
    match (target, out.is_empty()) {
        (Target::One(id), true) => {
            return Err(DlqError::Refused(format!(
                "no dead letter with request_id {id} matches (see `kycq dlq list`)"
            )))
        }
        (Target::Exact { request_id, .. }, true) => {
            return Err(DlqError::Refused(format!(
                "the dead letters of {request_id} you were shown are no longer in the queue \
                 (handled meanwhile): look at them again"
            )))
        }
        _ => {}
    }
    Ok(out)
}

/// The start of every run: a snapshot of the queue, the report, and the selected dead letters
/// (the cursor is closed again when selecting fails).
async fn begin(
    ctx: &Ctx<'_>,
    command: &'static str,
    target: Target<'_>,
    filters: &Filters,
    dry_run: bool,
) -> Result<(Cursor, Report, Vec<(Held, Option<RowSnapshot>)>), DlqError> {
    let mut cursor = Cursor::open(ctx.conn, ctx.names).await?;
    let mut report = Report {
        command,
        dry_run,
        snapshot: cursor.snapshot(),
        ..Default::default()
    };
    let selected = match select(ctx, &mut cursor, target, filters).await {
        Ok(s) => s,
        Err(e) => {
            cursor.close().await;
            return Err(e);
        }
    };
    report.selected = selected.len();
    Ok((cursor, report, selected))
}

/// `kycq dlq retry`: run each selected, retryable dead letter's request again under its own
/// request_id (see [`plan_retry`]), in the order database change → publish (confirmed) → ack.
pub async fn retry(
    ctx: &Ctx<'_>,
    target: Target<'_>,
    filters: &Filters,
    who: &Operator,
    dry_run: bool,
) -> Result<Report, DlqError> {
    let (cursor, mut report, selected) = begin(ctx, "retry", target, filters, dry_run).await?;
    for (m, _) in &selected {
        let key = m.key();
        let decision = Decision {
            request_id: m.info.request_id.as_deref(),
            operator: &who.name,
            note: who.note.as_deref(),
            reason: &m.info.reason,
            key: key.as_deref(),
        };
        let reason = m.info.reason.clone();
        let run = m.info.retry_round;
        let planned = if dlq::malformed(&reason) {
            // Nothing in Postgres to look at.
            Ok(plan_retry(&reason, run, None, None, false))
        } else if m.info.request_id.is_none() {
            Ok(no_request_id(&reason))
        } else {
            ctx.store
                .retry_request(decision, |row, resolved, decided| {
                    let p = plan_retry(&reason, run, row, resolved, decided);
                    (
                        if dry_run {
                            RetryWrite::Nothing
                        } else {
                            p.write()
                        },
                        p,
                    )
                })
                .await
        };
        let plan = match planned {
            Ok(p) => p,
            Err(e) => {
                report.failed += 1;
                report.push(m, "failed", Some(format!("Postgres: {e}")));
                continue;
            }
        };
        if dry_run {
            match &plan {
                RetryPlan::Retry { .. } | RetryPlan::Republish => {
                    report.done += 1;
                    report.push(m, "would retry", None);
                }
                RetryPlan::AckOnly { why } => {
                    report.cleared += 1;
                    report.push(m, "would clear", Some(why.clone()));
                }
                RetryPlan::Skip { kind, why } => {
                    report.skipped += 1;
                    let why = if *kind == SkipKind::OlderRun {
                        format!("{why} (would remove it)")
                    } else {
                        why.clone()
                    };
                    report.push(m, "skipped", Some(why));
                }
            }
            continue;
        }
        let done = match &plan {
            RetryPlan::Retry { .. } | RetryPlan::Republish => {
                // The decision is committed: if this fails, a re-run publishes it again.
                match m.republish(ctx.publisher).await {
                    Ok(()) => m.ack().await.map(|_| "retried"),
                    Err(e) => Err(e),
                }
            }
            RetryPlan::AckOnly { .. } => m.ack().await.map(|_| "cleared"),
            RetryPlan::Skip {
                kind: SkipKind::OlderRun,
                why,
            } => {
                // Stale: removed, counted as skipped (nothing was run).
                report.skipped += 1;
                match m.ack().await {
                    Ok(()) => report.push(m, "skipped", Some(format!("{why}; removed"))),
                    Err(e) => report.push(
                        m,
                        "skipped",
                        Some(format!("{why}; not removed (RabbitMQ: {e}): run it again")),
                    ),
                }
                continue;
            }
            RetryPlan::Skip { why, .. } => {
                report.skipped += 1;
                report.push(m, "skipped", Some(why.clone()));
                continue;
            }
        };
        match done {
            Ok("retried") => {
                report.done += 1;
                report.push(m, "retried", None);
            }
            Ok(_) => {
                report.cleared += 1;
                report.push(m, "cleared", plan.why().map(str::to_owned));
            }
            Err(e) => {
                report.failed += 1;
                report.push(
                    m,
                    "failed",
                    Some(format!(
                        "RabbitMQ: {e}; the retry is recorded: run the same command again to \
                         finish it"
                    )),
                );
            }
        }
    }
    cursor.close().await;
    Ok(report)
}

/// `kycq dlq replay`: publish each selected dead letter back unchanged (confirmed), then remove
/// it. A request with a stored result is answered from it (use `retry` to run it again).
/// Malformed messages are skipped: replayed, they would only be dead-lettered again.
pub async fn replay(
    ctx: &Ctx<'_>,
    target: Target<'_>,
    filters: &Filters,
    dry_run: bool,
) -> Result<Report, DlqError> {
    let (cursor, mut report, selected) = begin(ctx, "replay", target, filters, dry_run).await?;
    for (m, _) in &selected {
        if dlq::malformed(&m.info.reason) {
            report.skipped += 1;
            let why = plan_retry(&m.info.reason, None, None, None, false)
                .why()
                .map(str::to_owned);
            report.push(m, "skipped", why);
        } else if dry_run {
            report.done += 1;
            report.push(m, "would replay", None);
        } else {
            match m.replay(ctx.publisher).await {
                Ok(()) => {
                    report.done += 1;
                    report.push(m, "replayed", None);
                }
                Err(e) => {
                    report.failed += 1;
                    report.push(m, "failed", Some(format!("RabbitMQ: {e}")));
                }
            }
        }
    }
    cursor.close().await;
    Ok(report)
}

/// `kycq dlq purge`: remove each selected dead letter, the decision recorded first.
pub async fn purge(
    ctx: &Ctx<'_>,
    target: Target<'_>,
    filters: &Filters,
    who: &Operator,
    dry_run: bool,
) -> Result<Report, DlqError> {
    let (cursor, mut report, selected) = begin(ctx, "purge", target, filters, dry_run).await?;
    for (m, _) in &selected {
        if dry_run {
            report.done += 1;
            report.push(m, "would purge", None);
            continue;
        }
        let key = m.key();
        let d = Decision {
            request_id: m.info.request_id.as_deref(),
            operator: &who.name,
            note: who.note.as_deref(),
            reason: &m.info.reason,
            key: key.as_deref(),
        };
        let r = match ctx.store.record_purge(d).await {
            Ok(()) => m.ack().await.map_err(|e| format!("RabbitMQ: {e}")),
            Err(e) => Err(format!("Postgres: {e}")),
        };
        match r {
            Ok(()) => {
                report.done += 1;
                report.push(m, "purged", None);
            }
            Err(why) => {
                report.failed += 1;
                report.push(m, "failed", Some(why));
            }
        }
    }
    cursor.close().await;
    Ok(report)
}

/// What `kycq dlq resolve` did.
#[derive(Clone, Debug, Serialize)]
pub struct Resolved {
    /// The request.
    pub request_id: String,
    /// The billing recorded.
    pub billed: Billed,
    /// False when the same finding was recorded before (nothing written again).
    pub recorded: bool,
    /// Whether its dead letter was removed (`--billed yes` closes it).
    pub dead_letter_removed: bool,
    /// What to do next.
    pub next: String,
}

/// `kycq dlq resolve`: record the billing the operator found for a `billing_unknown` request.
/// `yes` corrects the stored result's billing and removes the dead letter (closed: the answer was
/// lost, so the result stays `failed` / `billing_unknown`); `no` corrects it too and keeps the
/// dead letter for `kycq dlq retry`.
pub async fn resolve(
    ctx: &Ctx<'_>,
    request_id: &str,
    billed: Billed,
    who: &Operator,
    dry_run: bool,
) -> Result<Resolved, DlqError> {
    if billed == Billed::Unknown {
        return Err(DlqError::Refused("--billed takes yes or no".into()));
    }
    let mut cursor = Cursor::open(ctx.conn, ctx.names).await?;
    let mut held = None;
    while let Some(m) = cursor.next().await? {
        if m.info.request_id.as_deref() == Some(request_id) && m.info.reason == "billing_unknown" {
            held = Some(m);
            break;
        }
    }
    let key = held.as_ref().and_then(Held::key);
    let d = Decision {
        request_id: Some(request_id),
        operator: &who.name,
        note: who.note.as_deref(),
        reason: "billing_unknown",
        key: key.as_deref(),
    };
    let verdict = if dry_run {
        let row = ctx.store.snapshot(request_id).await?;
        let prior = ctx.store.resolution(request_id).await?;
        plan_resolve(row.as_ref(), prior, billed).map(|_| false)
    } else {
        ctx.store
            .resolve_billing(d, billed, |row, prior| plan_resolve(row, prior, billed))
            .await?
    };
    let recorded = match verdict {
        Ok(r) => r,
        Err(why) => {
            cursor.close().await;
            return Err(DlqError::Refused(format!(
                "cannot resolve {request_id}: {why}"
            )));
        }
    };
    let mut removed = false;
    if billed == Billed::Yes && !dry_run {
        if let Some(m) = &held {
            m.ack().await?;
            removed = true;
        }
    }
    cursor.close().await;
    let next = match (billed, dry_run) {
        (_, true) => "dry run: nothing recorded".to_owned(),
        (Billed::Yes, _) => format!(
            "closed: the stored result stays failed/billing_unknown with billed yes; send a new \
             request_id to check this subject again{}",
            if held.is_none() {
                " (no dead letter of it was left in the queue)"
            } else {
                ""
            }
        ),
        _ => format!("now run `kycq dlq retry {request_id}` to run it again under its own id"),
    };
    Ok(Resolved {
        request_id: request_id.to_owned(),
        billed,
        recorded,
        dead_letter_removed: removed,
        next,
    })
}

/// One dead letter with what can be done with it (`kycq dlq list`).
#[derive(Clone, Debug, Serialize)]
pub struct Listed {
    /// The dead letter.
    #[serde(flatten)]
    pub info: DeadLetterInfo,
    /// `retry`, `resolve`, `purge only`, `wait`, `replay or purge`.
    pub action: &'static str,
    /// Why, when the action is not `retry`.
    pub why: Option<String>,
    /// The request's row (no personal data), when there is one.
    pub stored: Option<RowSnapshot>,
    /// Identifies this dead letter ([`Held::key`]), for acting on exactly it.
    pub key: Option<String>,
}

async fn listed(store: &Store, m: &Held) -> Result<Listed, StoreError> {
    let info = m.info.clone();
    let row = row_for(store, &info).await?;
    let resolved = match &info.request_id {
        Some(id) if row.is_some() => store.resolution(id).await?,
        _ => None,
    };
    let plan = if info.request_id.is_none() && !dlq::malformed(&info.reason) {
        no_request_id(&info.reason)
    } else {
        plan_retry(
            &info.reason,
            info.retry_round,
            row.as_ref(),
            resolved,
            false,
        )
    };
    Ok(Listed {
        action: plan.action(),
        why: plan.why().map(str::to_owned),
        key: m.key(),
        info,
        stored: row,
    })
}

/// `kycq dlq list`: up to `limit` dead letters that pass `filters`, each with its action.
/// Nothing is changed (every message read returns to the queue in place).
pub async fn list(ctx: &Ctx<'_>, filters: &Filters, limit: usize) -> Result<Vec<Listed>, DlqError> {
    let mut cursor = Cursor::open(ctx.conn, ctx.names).await?;
    let now = Utc::now();
    let mut out = Vec::new();
    while out.len() < limit {
        let Some(m) = cursor.next().await? else { break };
        let l = listed(ctx.store, &m).await?;
        if filters.matches(&l.info, l.stored.as_ref(), now) {
            out.push(l);
        }
    }
    cursor.close().await;
    Ok(out)
}

/// Everything `kycq dlq show` prints about one request (no personal data unmasked).
#[derive(Clone, Debug, Serialize)]
pub struct Shown {
    /// Its dead letters (with their action).
    pub dead_letters: Vec<Listed>,
    /// The body, personal data masked.
    pub body_masked: String,
    /// Every journaled call, every run.
    pub calls: Vec<JournalRow>,
    /// Operator decisions.
    pub decisions: Vec<DecisionRow>,
    /// Results retries replaced.
    pub superseded: Vec<SupersededRow>,
}

/// `kycq dlq show REQUEST_ID`.
pub async fn show(ctx: &Ctx<'_>, request_id: &str) -> Result<Shown, DlqError> {
    let mut cursor = Cursor::open(ctx.conn, ctx.names).await?;
    let mut dead = Vec::new();
    let mut body = None;
    while let Some(m) = cursor.next().await? {
        if m.info.request_id.as_deref() == Some(request_id) {
            body.get_or_insert_with(|| dlq::masked_body(&m.body));
            dead.push(listed(ctx.store, &m).await?);
        }
    }
    cursor.close().await;
    let Some(body_masked) = body else {
        return Err(DlqError::Refused(format!(
            "no dead letter with request_id {request_id} (see `kycq dlq list`)"
        )));
    };
    Ok(Shown {
        dead_letters: dead,
        body_masked,
        calls: ctx.store.journal(request_id).await?,
        decisions: ctx.store.decisions(request_id).await?,
        superseded: ctx.store.superseded(request_id).await?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(completed: bool, reason: Option<&str>, billed: Option<&str>) -> RowSnapshot {
        RowSnapshot {
            status: if completed { "failed" } else { "pending" }.into(),
            reason_code: reason.map(Into::into),
            billed: billed.map(Into::into),
            provider: Some("tencent".into()),
            check: Some("mobile3".into()),
            completed,
            retry_round: 0,
        }
    }

    fn kind(p: &RetryPlan) -> Option<SkipKind> {
        match p {
            RetryPlan::Skip { kind, .. } => Some(*kind),
            _ => None,
        }
    }

    #[test]
    fn retry_runs_unbilled_failures_again() {
        let exhausted = row(true, Some("retries_exhausted"), Some("no"));
        assert_eq!(
            plan_retry("retries_exhausted", None, Some(&exhausted), None, false),
            RetryPlan::Retry { supersede: true }
        );
        let unavailable = row(true, Some("provider_unavailable"), Some("no"));
        assert_eq!(
            plan_retry(
                "provider_unavailable",
                None,
                Some(&unavailable),
                None,
                false
            ),
            RetryPlan::Retry { supersede: true }
        );
        // Delivery limit: no result stored, or no row at all: the worker's journal decides.
        assert_eq!(
            plan_retry(
                "delivery_limit",
                None,
                Some(&row(false, None, None)),
                None,
                false
            ),
            RetryPlan::Retry { supersede: false }
        );
        assert_eq!(
            plan_retry("delivery_limit", None, None, None, false),
            RetryPlan::Retry { supersede: false }
        );
        assert_eq!(
            plan_retry("delivery_limit", None, Some(&exhausted), None, false),
            RetryPlan::Retry { supersede: true }
        );
    }

    #[test]
    fn billing_unknown_needs_the_operators_finding() {
        let unknown = row(true, Some("billing_unknown"), Some("unknown"));
        let p = plan_retry("billing_unknown", None, Some(&unknown), None, false);
        assert_eq!(kind(&p), Some(SkipKind::Unresolved));
        assert!(p.why().unwrap().contains("kycq dlq resolve"));
        assert_eq!(p.action(), "resolve");
        let no = row(true, Some("billing_unknown"), Some("no"));
        assert_eq!(
            plan_retry("billing_unknown", None, Some(&no), Some(Billed::No), false),
            RetryPlan::Retry { supersede: true }
        );
        let yes = row(true, Some("billing_unknown"), Some("yes"));
        assert_eq!(
            kind(&plan_retry(
                "billing_unknown",
                None,
                Some(&yes),
                Some(Billed::Yes),
                false
            )),
            Some(SkipKind::Finished)
        );
    }

    #[test]
    fn never_retries_billed_malformed_or_unfinished() {
        for r in dlq::MALFORMED {
            let p = plan_retry(r, None, None, None, false);
            assert_eq!(kind(&p), Some(SkipKind::Malformed), "{r}");
            assert_eq!(p.action(), "purge only");
            assert!(p.why().unwrap().contains(&format!("--reason {r}")));
        }
        let billed = row(true, Some("retries_exhausted"), Some("yes"));
        assert_eq!(
            kind(&plan_retry(
                "retries_exhausted",
                None,
                Some(&billed),
                None,
                false
            )),
            Some(SkipKind::Finished)
        );
        let matched = row(true, Some("match"), Some("yes"));
        assert_eq!(
            kind(&plan_retry(
                "delivery_limit",
                None,
                Some(&matched),
                None,
                false
            )),
            Some(SkipKind::Finished)
        );
        let pending = row(false, None, None);
        assert_eq!(
            kind(&plan_retry(
                "retries_exhausted",
                None,
                Some(&pending),
                None,
                false
            )),
            Some(SkipKind::NotYet)
        );
        assert_eq!(
            kind(&plan_retry(
                "stored_result_unreadable",
                None,
                Some(&billed),
                None,
                false
            )),
            Some(SkipKind::NotRetryable)
        );
        assert_eq!(
            kind(&plan_retry("rejected", None, None, None, false)),
            Some(SkipKind::NotRetryable)
        );
    }

    #[test]
    fn a_rerun_after_a_crash_finishes_the_same_retry() {
        // Decision committed, publish lost: publish again.
        assert_eq!(
            plan_retry(
                "retries_exhausted",
                None,
                Some(&row(false, None, None)),
                None,
                true
            ),
            RetryPlan::Republish
        );
        // Published, ack lost, new run finished: only remove the dead letter.
        let done = row(true, Some("match"), Some("yes"));
        let p = plan_retry("retries_exhausted", None, Some(&done), None, true);
        assert!(matches!(p, RetryPlan::AckOnly { .. }));
        assert_eq!(p.write(), RetryWrite::Nothing);
    }

    #[test]
    fn a_dead_letter_of_an_older_run_is_stale() {
        let mut exhausted = row(true, Some("retries_exhausted"), Some("no"));
        exhausted.retry_round = 1;
        // Run 0's second dead letter, after run 0 was retried (run 1 ended retries_exhausted
        // too): removed, never run again.
        let p = plan_retry("retries_exhausted", Some(0), Some(&exhausted), None, false);
        assert_eq!(kind(&p), Some(SkipKind::OlderRun));
        assert!(p.why().unwrap().contains("an older run"), "{p:?}");
        assert_eq!(p.write(), RetryWrite::Nothing);
        assert_eq!(p.action(), "stale (retry removes it)");
        // Run 1's own dead letter is retried.
        assert_eq!(
            plan_retry("retries_exhausted", Some(1), Some(&exhausted), None, false),
            RetryPlan::Retry { supersede: true }
        );
        // A dead letter that does not say its run (the broker's) is judged as before.
        assert_eq!(
            plan_retry("delivery_limit", None, Some(&exhausted), None, false),
            RetryPlan::Retry { supersede: true }
        );
        // A run Postgres has not reached: the wrong database.
        let p = plan_retry("retries_exhausted", Some(2), Some(&exhausted), None, false);
        assert_eq!(kind(&p), Some(SkipKind::NotRetryable));
        assert!(p.why().unwrap().contains("database.url"));
        // The dead letter this very retry acted on (a re-run after a crash) is finished, not
        // stale, although the row moved on to the run it started.
        let pending = RowSnapshot {
            retry_round: 1,
            ..row(false, None, None)
        };
        assert_eq!(
            plan_retry("retries_exhausted", Some(0), Some(&pending), None, true),
            RetryPlan::Republish
        );
        assert_eq!(
            kind(&no_request_id("delivery_limit")),
            Some(SkipKind::Malformed)
        );
    }

    #[test]
    fn resolve_only_an_unresolved_billing_unknown() {
        let unknown = row(true, Some("billing_unknown"), Some("unknown"));
        assert_eq!(plan_resolve(Some(&unknown), None, Billed::Yes), Ok(true));
        assert_eq!(
            plan_resolve(Some(&unknown), Some(Billed::Yes), Billed::Yes),
            Ok(false)
        );
        assert!(plan_resolve(Some(&unknown), Some(Billed::No), Billed::Yes)
            .unwrap_err()
            .contains("already resolved as --billed no"));
        let exhausted = row(true, Some("retries_exhausted"), Some("no"));
        assert!(plan_resolve(Some(&exhausted), None, Billed::No)
            .unwrap_err()
            .contains("only a billing_unknown"));
        assert!(plan_resolve(None, None, Billed::No).is_err());
        assert!(plan_resolve(Some(&row(false, None, None)), None, Billed::No).is_err());
    }

    #[test]
    fn ages_parse_with_units() {
        assert_eq!(parse_age("90s"), Ok(Duration::from_secs(90)));
        assert_eq!(parse_age("30m"), Ok(Duration::from_secs(1800)));
        assert_eq!(parse_age("2h"), Ok(Duration::from_secs(7200)));
        assert_eq!(parse_age("7d"), Ok(Duration::from_secs(604_800)));
        assert!(parse_age("7").unwrap_err().contains("unit"));
        assert!(parse_age("h").is_err());
        assert!(parse_age("3w").is_err());
    }

    fn info(reason: &str, key: &str, at: Option<&str>) -> DeadLetterInfo {
        DeadLetterInfo {
            position: 0,
            request_id: Some("r1".into()),
            reason: reason.into(),
            detail: None,
            attempts: None,
            routing_key: key.into(),
            dead_lettered_at: at.map(Into::into),
            body_bytes: 10,
            dead_lettered_by: "kycq",
            retry_round: Some(0),
        }
    }

    #[test]
    fn filters_select_by_reason_check_provider_and_age() {
        let now = DateTime::parse_from_rfc3339("2026-12-02T12:00:00Z")
            .unwrap()
            .with_timezone(&Utc);
        let d = info(
            "retries_exhausted",
            "check.mobile3",
            Some("2026-12-02T10:00:00Z"),
        );
        let r = row(true, Some("retries_exhausted"), Some("no"));
        assert!(Filters::default().matches(&d, None, now));
        let f = |f: Filters| f.matches(&d, Some(&r), now);
        assert!(f(Filters {
            reasons: vec!["retries_exhausted".into()],
            ..Default::default()
        }));
        assert!(!f(Filters {
            reasons: vec!["not_json".into()],
            ..Default::default()
        }));
        assert!(f(Filters {
            check: Some("mobile3".into()),
            ..Default::default()
        }));
        assert!(!f(Filters {
            check: Some("id2".into()),
            ..Default::default()
        }));
        assert!(f(Filters {
            provider: Some("tencent".into()),
            ..Default::default()
        }));
        assert!(!f(Filters {
            provider: Some("alibaba".into()),
            ..Default::default()
        }));
        // Two hours old.
        assert!(f(Filters {
            older_than: Some(Duration::from_secs(3600)),
            ..Default::default()
        }));
        assert!(!f(Filters {
            older_than: Some(Duration::from_secs(3 * 3600)),
            ..Default::default()
        }));
        assert!(f(Filters {
            newer_than: Some(Duration::from_secs(3 * 3600)),
            ..Default::default()
        }));
        assert!(!f(Filters {
            newer_than: Some(Duration::from_secs(3600)),
            ..Default::default()
        }));
        let undated = info("retries_exhausted", "check.mobile3", None);
        assert!(!Filters {
            older_than: Some(Duration::from_secs(1)),
            ..Default::default()
        }
        .matches(&undated, None, now));
    }
}
