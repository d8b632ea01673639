//! Operator decisions on dead letters, kept in Postgres: retrying a request under its own
//! `request_id` (the stored result superseded and kept, the row claimable again, the journal
//! continued), resolving a `billing_unknown` with the billing found in the vendor's console, and
//! purges. Every decision is a row of `operator_decisions`: who, when, what, why.
//!
//! Which decision is allowed is decided by the caller from a [`RowSnapshot`] taken under the row's
//! lock (`SELECT … FOR UPDATE`), so the check and the write are one transaction.

use chrono::{DateTime, Utc};
use serde::Serialize;
use sqlx::{Postgres, Row, Transaction};

use super::{Store, StoreError};
use crate::check::Billed;

/// A request's row as an operator decision sees it (no personal data).
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct RowSnapshot {
    /// `pending`, `completed`, `rejected`, `failed`.
    pub status: String,
    /// The stored result's reason code (None while pending).
    pub reason_code: Option<String>,
    /// The stored result's billing (None while pending).
    pub billed: Option<String>,
    /// The provider of the stored result.
    pub provider: Option<String>,
    /// The check.
    pub check: Option<String>,
    /// Whether a result is stored.
    pub completed: bool,
    /// The current run (0 = the first; each retry adds one).
    pub retry_round: i32,
}

/// What a retry writes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RetryWrite {
    /// Keep the stored result in `superseded_results`, make the row claimable again (a new run),
    /// record the decision.
    Supersede,
    /// Record the decision only (the row has no result to supersede).
    Record,
    /// Write nothing.
    Nothing,
}

/// One journaled call, for `kycq dlq show` and `kycq status`.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct JournalRow {
    /// The run it belongs to (0 = the first).
    pub retry_round: i32,
    /// Attempt number, increasing across runs.
    pub attempt: i32,
    /// Provider name.
    pub provider: String,
    /// Vendor API.
    pub action: String,
    /// When it was journaled (just before it was sent).
    pub sent_at: DateTime<Utc>,
    /// When its outcome was journaled (None: in flight when a worker stopped).
    pub finished_at: Option<DateTime<Utc>>,
    /// Outcome class.
    pub outcome: Option<String>,
    /// Billing as kycq observed it.
    pub billed: String,
    /// Billing an operator established for a call observed as `unknown`.
    pub billed_by_operator: Option<String>,
    /// HTTP status.
    pub http_status: Option<i32>,
    /// The provider's own code.
    pub provider_code: Option<String>,
    /// The provider's request id (what the vendor's console is searched by).
    pub provider_request_id: Option<String>,
}

/// One operator decision.
#[derive(Clone, Debug, Serialize)]
pub struct DecisionRow {
    /// Row id.
    pub id: i64,
    /// `retry`, `resolve`, `purge`.
    pub action: String,
    /// Who.
    pub operator: String,
    /// When.
    pub decided_at: DateTime<Utc>,
    /// The dead letter's reason.
    pub dead_letter_reason: Option<String>,
    /// The run it applies to.
    pub retry_round: Option<i32>,
    /// resolve: the billing found.
    pub billed: Option<String>,
    /// Free text.
    pub note: Option<String>,
}

/// A stored result a retry replaced, kept as it was.
#[derive(Clone, Debug, Serialize)]
pub struct SupersededRow {
    /// The run that produced it.
    pub retry_round: i32,
    /// The result exactly as it was stored and published.
    pub result: serde_json::Value,
    /// When it was superseded.
    pub superseded_at: DateTime<Utc>,
    /// The retry decision that superseded it.
    pub decision_id: i64,
}

/// Who decided what, for one dead letter.
#[derive(Clone, Copy, Debug)]
pub struct Decision<'a> {
    /// The request.
    pub request_id: Option<&'a str>,
    /// `--operator`.
    pub operator: &'a str,
    /// `--note`.
    pub note: Option<&'a str>,
    /// The dead letter's reason.
    pub reason: &'a str,
    /// The dead letter's identity (its dead-lettering time), when it has one.
    pub key: Option<&'a str>,
}

impl Store {
    /// The row of a request, if any.
    pub async fn snapshot(&self, request_id: &str) -> Result<Option<RowSnapshot>, StoreError> {
        let mut tx = self.pool().begin().await?;
        let s = snapshot_in(&mut tx, request_id, false).await?;
        tx.commit().await?;
        Ok(s)
    }

    /// The billing an operator established for the request's current run, if resolved.
    pub async fn resolution(&self, request_id: &str) -> Result<Option<Billed>, StoreError> {
        let mut tx = self.pool().begin().await?;
        let r = resolution_in(&mut tx, request_id).await?;
        tx.commit().await?;
        Ok(r)
    }

    /// Retry a request under its own id: under the row's lock, `decide` sees the row, the
    /// operator's billing finding for the current run and whether this very dead letter was
    /// retried before (a re-run after a crash), and says what to write. Returns what `decide`
    /// returned.
    pub async fn retry_request<T>(
        &self,
        d: Decision<'_>,
        decide: impl FnOnce(Option<&RowSnapshot>, Option<Billed>, bool) -> (RetryWrite, T),
    ) -> Result<T, StoreError> {
        let id = d.request_id.unwrap_or_default();
        let mut tx = self.pool().begin().await?;
        let row = snapshot_in(&mut tx, id, true).await?;
        let resolved = resolution_in(&mut tx, id).await?;
        let decided = match d.key {
            Some(key) => {
                sqlx::query_scalar::<_, bool>(
                    r#"SELECT EXISTS (SELECT 1 FROM operator_decisions
                        WHERE request_id = $1 AND action = 'retry' AND dead_letter_key = $2)"#,
                )
                .bind(id)
                .bind(key)
                .fetch_one(&mut *tx)
                .await?
            }
            None => false,
        };
        let (write, out) = decide(row.as_ref(), resolved, decided);
        let round = row.as_ref().map_or(0, |r| r.retry_round);
        match write {
            RetryWrite::Nothing => {}
            RetryWrite::Record => {
                insert_decision(&mut tx, d, "retry", Some(round), None).await?;
            }
            RetryWrite::Supersede => {
                let decision = insert_decision(&mut tx, d, "retry", Some(round + 1), None).await?;
                sqlx::query(
                    r#"INSERT INTO superseded_results (request_id, retry_round, status, reason_code,
                              billed, provider, attempts, result, completed_at, decision_id)
                       SELECT request_id, retry_round, status, reason_code, billed, provider,
                              attempts, result, completed_at, $2
                         FROM checks WHERE request_id = $1 AND result IS NOT NULL"#,
                )
                .bind(id)
                .bind(decision)
                .execute(&mut *tx)
                .await?;
                sqlx::query(
                    r#"UPDATE checks
                          SET status = 'pending', verdict = NULL, reason_code = NULL, billed = NULL,
                              provider = NULL, attempts = 0, result = NULL, completed_at = NULL,
                              lease_owner = NULL, lease_until = NULL,
                              retry_round = retry_round + 1,
                              attempt_base = GREATEST(attempt_base,
                                  (SELECT COALESCE(max(attempt), 0) FROM provider_calls
                                    WHERE request_id = $1)),
                              updated_at = now()
                        WHERE request_id = $1"#,
                )
                .bind(id)
                .execute(&mut *tx)
                .await?;
            }
        }
        tx.commit().await?;
        Ok(out)
    }

    /// Record the billing an operator found for a `billing_unknown` request: under the row's
    /// lock, `decide` sees the row and any earlier finding for the current run and answers
    /// whether to write (`Ok(true)`), that it is already recorded (`Ok(false)`), or why not.
    /// Writing sets `billed_by_operator` on the run's calls observed as `unknown`, corrects the
    /// stored result's `billed` (column and JSON) and records the decision.
    pub async fn resolve_billing(
        &self,
        d: Decision<'_>,
        billed: Billed,
        decide: impl FnOnce(Option<&RowSnapshot>, Option<Billed>) -> Result<bool, String>,
    ) -> Result<Result<bool, String>, StoreError> {
        let id = d.request_id.unwrap_or_default();
        let mut tx = self.pool().begin().await?;
        let row = snapshot_in(&mut tx, id, true).await?;
        let resolved = resolution_in(&mut tx, id).await?;
        let verdict = decide(row.as_ref(), resolved);
        if let (Ok(true), Some(row)) = (&verdict, &row) {
            let b = billed.as_str();
            sqlx::query(
                r#"UPDATE provider_calls SET billed_by_operator = $3
                    WHERE request_id = $1 AND retry_round = $2 AND billed = 'unknown'"#,
            )
            .bind(id)
            .bind(row.retry_round)
            .bind(b)
            .execute(&mut *tx)
            .await?;
            sqlx::query(
                r#"UPDATE checks SET billed = $2, result = jsonb_set(result, '{billed}', to_jsonb($2::text)),
                          updated_at = now()
                    WHERE request_id = $1 AND result IS NOT NULL"#,
            )
            .bind(id)
            .bind(b)
            .execute(&mut *tx)
            .await?;
            insert_decision(&mut tx, d, "resolve", Some(row.retry_round), Some(b)).await?;
        }
        tx.commit().await?;
        Ok(verdict)
    }

    /// Record that a dead letter was purged.
    pub async fn record_purge(&self, d: Decision<'_>) -> Result<(), StoreError> {
        let mut tx = self.pool().begin().await?;
        let round = match d.request_id {
            Some(id) => snapshot_in(&mut tx, id, false)
                .await?
                .map(|r| r.retry_round),
            None => None,
        };
        insert_decision(&mut tx, d, "purge", round, None).await?;
        tx.commit().await?;
        Ok(())
    }

    /// Every journaled call of a request, every run, oldest first.
    pub async fn journal(&self, request_id: &str) -> Result<Vec<JournalRow>, StoreError> {
        Ok(journal_rows(self.pool(), request_id).await?)
    }

    /// Every operator decision about a request, oldest first.
    pub async fn decisions(&self, request_id: &str) -> Result<Vec<DecisionRow>, StoreError> {
        let rows = sqlx::query(
            r#"SELECT id, action, operator, decided_at, dead_letter_reason, retry_round, billed, note
                 FROM operator_decisions WHERE request_id = $1 ORDER BY id"#,
        )
        .bind(request_id)
        .fetch_all(self.pool())
        .await?;
        rows.into_iter()
            .map(|r| {
                Ok(DecisionRow {
                    id: r.try_get("id")?,
                    action: r.try_get("action")?,
                    operator: r.try_get("operator")?,
                    decided_at: r.try_get("decided_at")?,
                    dead_letter_reason: r.try_get("dead_letter_reason")?,
                    retry_round: r.try_get("retry_round")?,
                    billed: r.try_get("billed")?,
                    note: r.try_get("note")?,
                })
            })
            .collect()
    }

    /// The results retries replaced, oldest first.
    pub async fn superseded(&self, request_id: &str) -> Result<Vec<SupersededRow>, StoreError> {
        let rows = sqlx::query(
            r#"SELECT retry_round, result, superseded_at, decision_id FROM superseded_results
                WHERE request_id = $1 ORDER BY retry_round"#,
        )
        .bind(request_id)
        .fetch_all(self.pool())
        .await?;
        rows.into_iter()
            .map(|r| {
                Ok(SupersededRow {
                    retry_round: r.try_get("retry_round")?,
                    result: r.try_get("result")?,
                    superseded_at: r.try_get("superseded_at")?,
                    decision_id: r.try_get("decision_id")?,
                })
            })
            .collect()
    }
}

async fn snapshot_in(
    tx: &mut Transaction<'_, Postgres>,
    request_id: &str,
    lock: bool,
) -> Result<Option<RowSnapshot>, StoreError> {
    let sql = format!(
        r#"SELECT status, reason_code, billed, provider, check_kind, completed_at IS NOT NULL AS done,
                  retry_round
             FROM checks WHERE request_id = $1 {}"#,
        if lock { "FOR UPDATE" } else { "" }
    );
    let Some(r) = sqlx::query(sqlx::AssertSqlSafe(sql))
        .bind(request_id)
        .fetch_optional(&mut **tx)
        .await?
    else {
        return Ok(None);
    };
    Ok(Some(RowSnapshot {
        status: r.try_get("status")?,
        reason_code: r.try_get("reason_code")?,
        billed: r.try_get("billed")?,
        provider: r.try_get("provider")?,
        check: r.try_get("check_kind")?,
        completed: r.try_get("done")?,
        retry_round: r.try_get("retry_round")?,
    }))
}

async fn resolution_in(
    tx: &mut Transaction<'_, Postgres>,
    request_id: &str,
) -> Result<Option<Billed>, StoreError> {
    let b: Option<String> = sqlx::query_scalar(
        r#"SELECT d.billed FROM operator_decisions d JOIN checks c ON c.request_id = d.request_id
            WHERE d.request_id = $1 AND d.action = 'resolve' AND d.retry_round = c.retry_round
            ORDER BY d.id DESC LIMIT 1"#,
    )
    .bind(request_id)
    .fetch_optional(&mut **tx)
    .await?;
    Ok(b.and_then(|b| b.parse().ok()))
}

async fn insert_decision(
    tx: &mut Transaction<'_, Postgres>,
    d: Decision<'_>,
    action: &str,
    round: Option<i32>,
    billed: Option<&str>,
) -> Result<i64, StoreError> {
    Ok(sqlx::query_scalar(
        r#"INSERT INTO operator_decisions (request_id, action, operator, dead_letter_reason,
                  dead_letter_key, retry_round, billed, note)
           VALUES ($1, $2, $3, $4, $5, $6, $7, $8) RETURNING id"#,
    )
    .bind(d.request_id)
    .bind(action)
    .bind(d.operator)
    .bind(d.reason)
    .bind(d.key)
    .bind(round)
    .bind(billed)
    .bind(d.note)
    .fetch_one(&mut **tx)
    .await?)
}

/// One request's journal, every run, in attempt order (`kycq dlq show`, `kycq status`). Reads
/// the run columns through `to_jsonb`, so a database whose workers predate retries still
/// answers: everything is then run 0.
pub async fn journal_rows(
    pool: &sqlx::PgPool,
    request_id: &str,
) -> Result<Vec<JournalRow>, sqlx::Error> {
    let rows = sqlx::query(
        r#"SELECT attempt, provider, action, sent_at, finished_at, outcome, billed, http_status,
                  provider_code, provider_request_id,
                  COALESCE((to_jsonb(pc) ->> 'retry_round')::int, 0) AS retry_round,
                  to_jsonb(pc) ->> 'billed_by_operator' AS billed_by_operator
             FROM provider_calls pc WHERE request_id = $1 ORDER BY attempt"#,
    )
    .bind(request_id)
    .fetch_all(pool)
    .await?;
    rows.into_iter()
        .map(|r| {
            Ok(JournalRow {
                retry_round: r.try_get("retry_round")?,
                attempt: r.try_get("attempt")?,
                provider: r.try_get("provider")?,
                action: r.try_get("action")?,
                sent_at: r.try_get("sent_at")?,
                finished_at: r.try_get("finished_at")?,
                outcome: r.try_get("outcome")?,
                billed: r.try_get("billed")?,
                billed_by_operator: r.try_get("billed_by_operator")?,
                http_status: r.try_get("http_status")?,
                provider_code: r.try_get("provider_code")?,
                provider_request_id: r.try_get("provider_request_id")?,
            })
        })
        .collect()
}
