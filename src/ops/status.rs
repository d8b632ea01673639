//! `kycq status REQUEST_ID`: what Postgres knows about one request — its stored result and its
//! provider-call journal — masked, read-only (no migration, no write, the database is never
//! created).

use std::str::FromStr;
use std::time::Duration;

use anyhow::Context;
use chrono::{DateTime, SecondsFormat, Utc};
use secrecy::ExposeSecret;
use serde::Serialize;
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::{PgPool, Row};

use crate::check::MaskedSubject;
use crate::configuration::Settings;
use crate::ops::enqueue::exit;

/// Connect to the configured database without creating or migrating it. `None` when the
/// database does not exist (no worker has run against it yet). Errors name the host and
/// database, never the URL (it may hold a password).
pub async fn connect_readonly(settings: &Settings) -> anyhow::Result<Option<PgPool>> {
    let opts = PgConnectOptions::from_str(settings.database.url.expose_secret())
        .context("database.url is not a valid Postgres URL")?;
    let place = format!(
        "database {} on {}:{}",
        opts.get_database().unwrap_or("(default)"),
        opts.get_host(),
        opts.get_port()
    );
    match PgPoolOptions::new()
        .max_connections(1)
        .acquire_timeout(Duration::from_secs(10))
        .connect_with(opts)
        .await
    {
        Ok(pool) => Ok(Some(pool)),
        Err(sqlx::Error::Database(e)) if e.code().as_deref() == Some("3D000") => Ok(None),
        Err(e) => Err(anyhow::anyhow!(
            "cannot connect to the {place} (database.url, KYCQ__DATABASE__URL): {e}"
        )),
    }
}

/// One request as stored: every field masked or free of personal data.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct RequestStatus {
    /// The idempotency key.
    pub request_id: String,
    /// The check, when known.
    pub check: Option<String>,
    /// `pending` (claimed, no result yet), `completed`, `rejected`, `failed`.
    pub status: String,
    /// Only when completed.
    pub verdict: Option<String>,
    /// From the shared table.
    pub reason_code: Option<String>,
    /// The result's sentence.
    pub reason: Option<String>,
    /// `yes`, `no`, `unknown`.
    pub billed: Option<String>,
    /// The provider of the result.
    pub provider: Option<String>,
    /// The provider's most specific code.
    pub provider_code: Option<String>,
    /// The provider's request id.
    pub provider_request_id: Option<String>,
    /// Provider calls made.
    pub attempts: i32,
    /// Masked.
    pub subject: MaskedSubject,
    /// When a worker first received it.
    pub received_at: DateTime<Utc>,
    /// When its result was decided.
    pub completed_at: Option<DateTime<Utc>>,
    /// The worker holding it, while pending.
    pub lease_owner: Option<String>,
    /// Until when (database clock), while pending.
    pub lease_until: Option<DateTime<Utc>>,
    /// The current run (0 = the first; each `kycq dlq retry` starts the next). The stored result
    /// is this run's; the calls of earlier runs belong to the results the retries superseded.
    pub retry_round: i32,
}

/// One journaled provider call (the store's own row type).
pub use crate::store::JournalRow as CallStatus;

/// A request and its journal.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct StatusReport {
    /// The request.
    pub request: RequestStatus,
    /// Its provider calls, in order.
    pub calls: Vec<CallStatus>,
}

/// Read a request and its journal. `None` when the id is unknown (or the database or its
/// tables do not exist yet).
pub async fn load(settings: &Settings, request_id: &str) -> anyhow::Result<Option<StatusReport>> {
    let Some(pool) = connect_readonly(settings).await? else {
        return Ok(None);
    };
    let report = read(&pool, request_id).await;
    pool.close().await;
    match report {
        Err(sqlx::Error::Database(e)) if e.code().as_deref() == Some("42P01") => Ok(None),
        other => other.context("reading the request from Postgres"),
    }
}

async fn read(pool: &PgPool, request_id: &str) -> Result<Option<StatusReport>, sqlx::Error> {
    let Some(row) = sqlx::query(
        r#"SELECT request_id, check_kind, status, verdict, reason_code, billed, provider,
                  attempts, subject_masked, received_at, completed_at, lease_owner, lease_until,
                  result ->> 'reason' AS reason,
                  result ->> 'provider_code' AS provider_code,
                  result ->> 'provider_request_id' AS provider_request_id,
                  COALESCE((to_jsonb(checks) ->> 'retry_round')::int, 0) AS retry_round
             FROM checks WHERE request_id = $1"#,
    )
    .bind(request_id)
    .fetch_optional(pool)
    .await?
    else {
        return Ok(None);
    };
    let subject: sqlx::types::Json<MaskedSubject> = row.try_get("subject_masked")?;
    let completed_at: Option<DateTime<Utc>> = row.try_get("completed_at")?;
    let request = RequestStatus {
        request_id: row.try_get("request_id")?,
        check: row.try_get("check_kind")?,
        status: row.try_get("status")?,
        verdict: row.try_get("verdict")?,
        reason_code: row.try_get("reason_code")?,
        reason: row.try_get("reason")?,
        billed: row.try_get("billed")?,
        provider: row.try_get("provider")?,
        provider_code: row.try_get("provider_code")?,
        provider_request_id: row.try_get("provider_request_id")?,
        attempts: row.try_get("attempts")?,
        subject: subject.0,
        received_at: row.try_get("received_at")?,
        lease_owner: if completed_at.is_none() {
            row.try_get("lease_owner")?
        } else {
            None
        },
        lease_until: if completed_at.is_none() {
            row.try_get("lease_until")?
        } else {
            None
        },
        completed_at,
        retry_round: row.try_get("retry_round")?,
    };
    let calls = crate::store::journal_rows(pool, request_id).await?;
    Ok(Some(StatusReport { request, calls }))
}

/// The exit code for a request's status, the same as `kycq enqueue --wait`: completed 0,
/// rejected 3, failed 4, not finished yet 5.
pub fn exit_code(status: &str) -> u8 {
    match status {
        "completed" => exit::OK,
        "rejected" => exit::REJECTED,
        "failed" => exit::FAILED,
        _ => exit::TIMEOUT,
    }
}

/// The message for an id Postgres does not know.
pub fn unknown_message(request_id: &str) -> String {
    format!(
        "no request {request_id} in the database: no worker has received it. It may still be \
         queued (no worker running, or a backlog: it will be processed when a worker takes it), \
         it may have been dead-lettered before it was stored (`kycq dlq show {request_id}`), or \
         the id is wrong"
    )
}

fn time(t: &DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Millis, true)
}

fn or_dash(v: &Option<String>) -> &str {
    v.as_deref().unwrap_or("-")
}

/// The report for people.
pub fn render(r: &StatusReport) -> String {
    let q = &r.request;
    let subject = [&q.subject.name, &q.subject.id_number, &q.subject.mobile]
        .into_iter()
        .flatten()
        .map(String::as_str)
        .collect::<Vec<_>>()
        .join(" ");
    let mut s = String::new();
    let mut line = |k: &str, v: &str| s.push_str(&format!("{k:<21}{v}\n"));
    line("request_id", &q.request_id);
    line("check", or_dash(&q.check));
    line("status", &q.status);
    line("verdict", or_dash(&q.verdict));
    line("reason_code", or_dash(&q.reason_code));
    line("reason", or_dash(&q.reason));
    line("billed", or_dash(&q.billed));
    line("provider", or_dash(&q.provider));
    line("provider_code", or_dash(&q.provider_code));
    line("provider_request_id", or_dash(&q.provider_request_id));
    line("attempts", &q.attempts.to_string());
    line(
        "run",
        &if q.retry_round == 0 {
            "0 (the first)".to_owned()
        } else {
            format!(
                "{} (current; runs 0-{} were superseded by `kycq dlq retry`: `kycq dlq show {}`)",
                q.retry_round,
                q.retry_round - 1,
                q.request_id
            )
        },
    );
    line("subject", if subject.is_empty() { "-" } else { &subject });
    line("received_at", &time(&q.received_at));
    line(
        "completed_at",
        &q.completed_at.as_ref().map_or("-".into(), time),
    );
    if q.completed_at.is_none() {
        line(
            "lease",
            &match (&q.lease_owner, &q.lease_until) {
                (Some(o), Some(u)) => format!("{o} until {}", time(u)),
                _ => "-".into(),
            },
        );
    }
    if r.calls.is_empty() {
        s.push_str("provider calls: none\n");
        return s;
    }
    let current = r
        .calls
        .iter()
        .filter(|c| c.retry_round == q.retry_round)
        .count();
    s.push_str(&format!(
        "provider calls: {} ({current} of the current run {}{})\n",
        r.calls.len(),
        q.retry_round,
        if current < r.calls.len() {
            "; the others belong to superseded runs"
        } else {
            ""
        }
    ));
    s.push_str(&format!(
        "  {:<11} {:<7} {:<9} {:<24} {:<24} {:<24} {:<4} {:<24} {:<36} {:<20} {}\n",
        "run",
        "attempt",
        "provider",
        "action",
        "sent_at",
        "finished_at",
        "http",
        "provider_code",
        "provider_request_id",
        "outcome",
        "billed"
    ));
    for c in &r.calls {
        let run = if c.retry_round == q.retry_round {
            format!("{} current", c.retry_round)
        } else {
            c.retry_round.to_string()
        };
        s.push_str(&format!(
            "  {:<11} {:<7} {:<9} {:<24} {:<24} {:<24} {:<4} {:<24} {:<36} {:<20} {}\n",
            run,
            c.attempt,
            c.provider,
            c.action,
            time(&c.sent_at),
            c.finished_at.as_ref().map_or("-".into(), time),
            c.http_status.map_or("-".into(), |h| h.to_string()),
            or_dash(&c.provider_code),
            or_dash(&c.provider_request_id),
            or_dash(&c.outcome),
            billed(c)
        ));
    }
    s
}

/// A call's billing: as observed, and the operator's finding for an `unknown` one.
fn billed(c: &CallStatus) -> String {
    match &c.billed_by_operator {
        Some(b) => format!("{} (operator found: {b})", c.billed),
        None => c.billed.clone(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn report() -> StatusReport {
        let t = DateTime::parse_from_rfc3339("2026-11-23T02:18:16.120Z")
            .unwrap()
            .with_timezone(&Utc);
        StatusReport {
            request: RequestStatus {
                request_id: "r-1".into(),
                check: Some("mobile3".into()),
                status: "completed".into(),
                verdict: Some("match".into()),
                reason_code: Some("match".into()),
                reason: Some("every element consistent".into()),
                billed: Some("yes".into()),
                provider: Some("tencent".into()),
                provider_code: Some("0".into()),
                provider_request_id: Some("abc".into()),
                attempts: 1,
                subject: MaskedSubject {
                    name: Some("张*".into()),
                    id_number: Some("110***********002X".into()),
                    mobile: Some("138****5678".into()),
                },
                received_at: t,
                completed_at: Some(t),
                lease_owner: None,
                lease_until: None,
                retry_round: 0,
            },
            calls: vec![CallStatus {
                retry_round: 0,
                attempt: 1,
                provider: "tencent".into(),
                action: "PhoneVerification".into(),
                sent_at: t,
                finished_at: None,
                http_status: None,
                provider_code: None,
                provider_request_id: None,
                outcome: None,
                billed: "unknown".into(),
                billed_by_operator: None,
            }],
        }
    }

    #[test]
    fn the_report_shows_every_field_and_each_call() {
        let s = render(&report());
        for want in [
            "request_id           r-1\n",
            "status               completed\n",
            "subject              张* 110***********002X 138****5678\n",
            "received_at          2026-11-23T02:18:16.120Z\n",
            "provider calls: 1 (1 of the current run 0)\n",
            "PhoneVerification",
        ] {
            assert!(s.contains(want), "{want:?} missing from\n{s}");
        }
        assert!(!s.contains("lease"), "no lease line once completed:\n{s}");
        // The unfinished call shows dashes, not blanks.
        let call = s.lines().last().unwrap();
        assert!(call.ends_with("unknown") && call.contains(" - "), "{call}");
    }

    #[test]
    fn the_report_says_which_run_each_call_belongs_to_and_the_operators_finding() {
        let mut r = report();
        r.request.retry_round = 1;
        let first = r.calls[0].clone();
        r.calls[0].billed_by_operator = Some("no".into());
        r.calls.push(CallStatus {
            retry_round: 1,
            attempt: 2,
            billed: "yes".into(),
            billed_by_operator: None,
            ..first
        });
        let s = render(&r);
        for want in [
            "run                  1 (current; runs 0-0 were superseded by `kycq dlq retry`",
            "provider calls: 2 (1 of the current run 1; the others belong to superseded runs)\n",
            "unknown (operator found: no)",
        ] {
            assert!(s.contains(want), "{want:?} missing from\n{s}");
        }
        let lines: Vec<&str> = s.lines().collect();
        let (old, new) = (lines[lines.len() - 2], lines[lines.len() - 1]);
        assert!(
            old.trim_start().starts_with("0 ") && !old.contains("current"),
            "{old}"
        );
        assert!(
            new.trim_start().starts_with("1 current") && new.ends_with("yes"),
            "{new}"
        );
        // A request never retried says so.
        assert!(render(&report()).contains("run                  0 (the first)\n"));
    }

    #[test]
    fn the_exit_code_follows_the_status() {
        assert_eq!(exit_code("completed"), 0);
        assert_eq!(exit_code("rejected"), 3);
        assert_eq!(exit_code("failed"), 4);
        assert_eq!(exit_code("pending"), 5);
    }
}
