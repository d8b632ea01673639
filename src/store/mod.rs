//! Postgres: claims with leases, the one stored result per request, and the provider-call journal
//! written before every outbound call.

use std::str::FromStr;
use std::time::Duration;

use chrono::{DateTime, Utc};
use secrecy::ExposeSecret;
use sqlx::migrate::MigrateDatabase;
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::{PgPool, Postgres, Row};

use crate::check::{CheckKind, CheckResult, MaskedSubject};
use crate::configuration::DatabaseSettings;
use crate::providers::ProviderReply;

mod operator;
pub use operator::{
    journal_rows, Decision, DecisionRow, JournalRow, RetryWrite, RowSnapshot, SupersededRow,
};

/// Migrations embedded in the binary.
pub static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations");

/// A store error (a database problem: the delivery is returned to the queue, never acked).
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The database refused or failed.
    #[error("database: {0}")]
    Db(#[from] sqlx::Error),
    /// Migrations failed.
    #[error("migrations: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    /// A stored result could not be read back.
    #[error("stored result for {0} is unreadable: {1}")]
    Corrupt(String, String),
}

/// Connect (creating the database when configured to and missing) and apply migrations.
pub async fn connect_and_migrate(s: &DatabaseSettings) -> Result<Store, StoreError> {
    let url = s.url.expose_secret();
    if s.create_if_missing && !Postgres::database_exists(url).await? {
        // Two workers starting together may race to create it; the loser sees "already exists".
        if let Err(e) = Postgres::create_database(url).await {
            if !Postgres::database_exists(url).await? {
                return Err(e.into());
            }
        }
    }
    let opts = PgConnectOptions::from_str(url)?;
    let pool = PgPoolOptions::new()
        .max_connections(s.max_connections)
        .acquire_timeout(Duration::from_secs(10))
        .connect_with(opts)
        .await?;
    MIGRATOR.run(&pool).await?;
    Ok(Store { pool })
}

/// What a claim found.
#[derive(Debug)]
pub enum Claim {
    /// This worker holds the lease now.
    Claimed {
        /// When the request was first received.
        received_at: DateTime<Utc>,
        /// The run claimed (`checks.retry_round`): every write of this claim is fenced by it
        /// (see [`Fence`]).
        retry_round: i32,
    },
    /// The request already has its result.
    Finished(Box<CheckResult>),
    /// Another worker holds a live lease.
    Leased {
        /// Holder.
        owner: String,
        /// Until when (database clock).
        until: DateTime<Utc>,
    },
    /// The `request_id` is known for another subject or another check: nothing of it may be
    /// given to this request.
    Conflict {
        /// The masked subject the id is known for.
        subject: MaskedSubject,
        /// The check it is known for.
        check: Option<String>,
    },
}

/// Which claim a write belongs to: the lease holder and the run it claimed. A worker whose lease
/// was taken over, or whose run a `kycq dlq retry` superseded, writes nothing into the row's
/// current run: [`Store::begin_call`] and [`Store::complete`] answer "lease lost" instead.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Fence {
    /// The `lease_owner` of the claim.
    pub owner: String,
    /// The run claimed (`checks.retry_round`).
    pub retry_round: i32,
}

/// A journaled call, as found when taking over a request.
#[derive(Debug, Clone)]
pub struct JournaledCall {
    /// Row id.
    pub id: i64,
    /// Provider name.
    pub provider: String,
    /// Attempt number (1-based, across providers).
    pub attempt: i32,
    /// The classified reply, when the call finished.
    pub reply: Option<ProviderReply>,
}

/// The Postgres store.
#[derive(Clone, Debug)]
pub struct Store {
    pool: PgPool,
}

impl Store {
    /// Wrap an existing pool (migrations must have run).
    pub fn from_pool(pool: PgPool) -> Self {
        Store { pool }
    }

    /// The pool.
    pub fn pool(&self) -> &PgPool {
        &self.pool
    }

    /// Whether the database answers (readiness).
    pub async fn ping(&self) -> bool {
        sqlx::query("SELECT 1").execute(&self.pool).await.is_ok()
    }

    /// Claim a request: insert it, or take over an unfinished one whose lease expired (or is
    /// ours). Leases use the database clock only.
    pub async fn claim(
        &self,
        request_id: &str,
        check: CheckKind,
        subject: &MaskedSubject,
        fingerprint: &str,
        owner: &str,
        lease: Duration,
    ) -> Result<Claim, StoreError> {
        let row = sqlx::query(
            r#"
            INSERT INTO checks (request_id, check_kind, status, subject_masked, subject_fingerprint,
                                lease_owner, lease_until)
            VALUES ($1, $2, 'pending', $3, $4, $5, now() + make_interval(secs => $6))
            ON CONFLICT (request_id) DO UPDATE
               SET lease_owner = EXCLUDED.lease_owner,
                   lease_until = EXCLUDED.lease_until,
                   updated_at = now()
             WHERE checks.completed_at IS NULL
               AND (checks.lease_until IS NULL OR checks.lease_until < now()
                    OR checks.lease_owner = EXCLUDED.lease_owner)
               AND checks.check_kind = EXCLUDED.check_kind
               AND checks.subject_fingerprint = EXCLUDED.subject_fingerprint
            RETURNING received_at, retry_round
            "#,
        )
        .bind(request_id)
        .bind(check.as_str())
        .bind(sqlx::types::Json(subject))
        .bind(fingerprint)
        .bind(owner)
        .bind(lease.as_secs_f64())
        .fetch_optional(&self.pool)
        .await?;
        if let Some(row) = row {
            return Ok(Claim::Claimed {
                received_at: row.try_get("received_at")?,
                retry_round: row.try_get("retry_round")?,
            });
        }
        self.current(request_id, check, fingerprint).await
    }

    /// What the row says now: known for another subject or check, finished, or leased by
    /// someone.
    async fn current(
        &self,
        request_id: &str,
        check: CheckKind,
        fingerprint: &str,
    ) -> Result<Claim, StoreError> {
        let row = sqlx::query(
            r#"SELECT result, lease_owner, lease_until, check_kind, subject_fingerprint,
                      subject_masked
                 FROM checks WHERE request_id = $1"#,
        )
        .bind(request_id)
        .fetch_one(&self.pool)
        .await?;
        let known_check: Option<String> = row.try_get("check_kind")?;
        let known_fingerprint: Option<String> = row.try_get("subject_fingerprint")?;
        // A row without a fingerprint or check is a rejection of an unreadable request: it is
        // compared by the rejection path, not here.
        let other_check = known_check.as_deref().is_some_and(|c| c != check.as_str());
        let other_subject = known_fingerprint
            .as_deref()
            .is_some_and(|f| f != fingerprint);
        if other_check || other_subject {
            let subject: sqlx::types::Json<MaskedSubject> = row.try_get("subject_masked")?;
            return Ok(Claim::Conflict {
                subject: subject.0,
                check: known_check,
            });
        }
        let result: Option<serde_json::Value> = row.try_get("result")?;
        if let Some(v) = result {
            return Ok(Claim::Finished(Box::new(parse_result(request_id, v)?)));
        }
        Ok(Claim::Leased {
            owner: row
                .try_get::<Option<String>, _>("lease_owner")?
                .unwrap_or_default(),
            until: row
                .try_get::<Option<DateTime<Utc>>, _>("lease_until")?
                .unwrap_or_else(Utc::now),
        })
    }

    /// The stored result, if the request is finished.
    pub async fn stored_result(&self, request_id: &str) -> Result<Option<CheckResult>, StoreError> {
        let v: Option<Option<serde_json::Value>> =
            sqlx::query_scalar(r#"SELECT result FROM checks WHERE request_id = $1"#)
                .bind(request_id)
                .fetch_optional(&self.pool)
                .await?;
        v.flatten().map(|v| parse_result(request_id, v)).transpose()
    }

    /// Extend our lease. False when it is no longer ours.
    pub async fn renew(
        &self,
        request_id: &str,
        owner: &str,
        lease: Duration,
    ) -> Result<bool, StoreError> {
        let n = sqlx::query(
            r#"UPDATE checks SET lease_until = now() + make_interval(secs => $3), updated_at = now()
               WHERE request_id = $1 AND lease_owner = $2 AND completed_at IS NULL"#,
        )
        .bind(request_id)
        .bind(owner)
        .bind(lease.as_secs_f64())
        .execute(&self.pool)
        .await?
        .rows_affected();
        Ok(n == 1)
    }

    /// Give up our lease without a result (shutdown before any call): the next delivery takes
    /// over at once.
    pub async fn release(&self, request_id: &str, owner: &str) -> Result<(), StoreError> {
        sqlx::query(
            r#"UPDATE checks SET lease_owner = NULL, lease_until = NULL, updated_at = now()
               WHERE request_id = $1 AND lease_owner = $2 AND completed_at IS NULL"#,
        )
        .bind(request_id)
        .bind(owner)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// Store the result of the claim `fence`, unless one is stored already. Returns the result
    /// that is stored now (ours, or the one that won), or None when the row is no longer this
    /// claim's (another worker took the lease over, or a `kycq dlq retry` started a new run)
    /// and has no result yet: nothing was written, and the caller treats it as a lost lease
    /// (waits for the stored result; never stores its own over another run).
    pub async fn complete(
        &self,
        result: &CheckResult,
        fingerprint: Option<&str>,
        fence: &Fence,
    ) -> Result<Option<CheckResult>, StoreError> {
        let json = serde_json::to_value(result).expect("a result serialises");
        let stored = sqlx::query(
            r#"
            UPDATE checks
               SET status = $2, verdict = $3, reason_code = $4, billed = $5, provider = $6,
                   attempts = $7, result = $8, completed_at = $9,
                   subject_fingerprint = COALESCE(subject_fingerprint, $10),
                   lease_owner = NULL, lease_until = NULL, updated_at = now()
             WHERE request_id = $1 AND completed_at IS NULL
               AND retry_round = $11 AND lease_owner = $12
            RETURNING request_id
            "#,
        )
        .bind(&result.request_id)
        .bind(result.status.as_str())
        .bind(result.verdict.map(|v| v.as_str()))
        .bind(result.reason_code.as_str())
        .bind(result.billed.as_str())
        .bind(result.provider.as_deref())
        .bind(result.attempts as i32)
        .bind(&json)
        .bind(result.completed_at)
        .bind(fingerprint)
        .bind(fence.retry_round)
        .bind(&fence.owner)
        .fetch_optional(&self.pool)
        .await?;
        if stored.is_some() {
            return Ok(Some(result.clone()));
        }
        self.stored_result(&result.request_id).await
    }

    /// Store a result for a request nobody has claimed (a rejection): insert only. Returns the
    /// stored result (ours or an earlier one), or None while another delivery of the same
    /// request_id is being worked on — a rejection never overwrites a claimed request.
    pub async fn insert_final(
        &self,
        result: &CheckResult,
    ) -> Result<Option<CheckResult>, StoreError> {
        if self
            .insert_result(result, None, "ON CONFLICT (request_id) DO NOTHING")
            .await?
        {
            return Ok(Some(result.clone()));
        }
        self.stored_result(&result.request_id).await
    }

    /// Insert a finished row with `on_conflict`; true when this call wrote it.
    async fn insert_result(
        &self,
        result: &CheckResult,
        fingerprint: Option<&str>,
        on_conflict: &str,
    ) -> Result<bool, StoreError> {
        let json = serde_json::to_value(result).expect("a result serialises");
        let sql = format!(
            r#"
            INSERT INTO checks (request_id, check_kind, status, verdict, reason_code, billed, provider,
                                attempts, result, subject_masked, subject_fingerprint, received_at,
                                completed_at)
            VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13)
            {on_conflict}
            RETURNING request_id
            "#
        );
        let row = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(&result.request_id)
            .bind(result.check.map(CheckKind::as_str))
            .bind(result.status.as_str())
            .bind(result.verdict.map(|v| v.as_str()))
            .bind(result.reason_code.as_str())
            .bind(result.billed.as_str())
            .bind(result.provider.as_deref())
            .bind(result.attempts as i32)
            .bind(&json)
            .bind(sqlx::types::Json(&result.subject))
            .bind(fingerprint)
            .bind(result.received_at)
            .bind(result.completed_at)
            .fetch_optional(&self.pool)
            .await?;
        Ok(row.is_some())
    }

    /// Journal an outbound call of the claim `fence` before it is sent. Returns the row id, or
    /// None when the row is no longer this claim's (its lease taken over, its run superseded, or
    /// finished): nothing is journaled and the call must not be sent.
    pub async fn begin_call(
        &self,
        request_id: &str,
        provider: &str,
        action: &str,
        attempt: u32,
        worker: &str,
        fence: &Fence,
    ) -> Result<Option<i64>, StoreError> {
        Ok(sqlx::query_scalar(
            // `attempt` counts within the current run; the row's attempt number continues after
            // the runs a `kycq dlq retry` superseded (see `checks.attempt_base`). The row is
            // locked so a retry cannot supersede the run between this check and the insert.
            r#"WITH run AS (
                   SELECT attempt_base, retry_round FROM checks
                    WHERE request_id = $1 AND completed_at IS NULL
                      AND retry_round = $6 AND lease_owner = $7
                      FOR UPDATE)
               INSERT INTO provider_calls (request_id, provider, action, attempt, worker, retry_round)
               SELECT $1, $2, $3, $4 + attempt_base, $5, retry_round FROM run
               RETURNING id"#,
        )
        .bind(request_id)
        .bind(provider)
        .bind(action)
        .bind(attempt as i32)
        .bind(worker)
        .bind(fence.retry_round)
        .bind(&fence.owner)
        .fetch_optional(&self.pool)
        .await?)
    }

    /// Complete a journaled call with its outcome and billing. Not fenced: the row is the call
    /// this worker journaled and sent, so its outcome is the truth about that call whichever run
    /// is current now (the billing audit trail needs it).
    pub async fn finish_call(&self, id: i64, reply: &ProviderReply) -> Result<(), StoreError> {
        sqlx::query(
            r#"UPDATE provider_calls
                  SET finished_at = now(), http_status = $2, provider_code = $3,
                      provider_request_id = $4, outcome = $5, billed = $6, reply = $7
                WHERE id = $1"#,
        )
        .bind(id)
        .bind(reply.http_status.map(i32::from))
        .bind(reply.provider_code.as_deref())
        .bind(reply.provider_request_id.as_deref())
        .bind(reply.classification.class.as_str())
        .bind(reply.classification.billed.as_str())
        .bind(sqlx::types::Json(reply))
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// Every journaled call of the request's current run, oldest first, numbered within the run.
    /// The calls of runs superseded by `kycq dlq retry` stay in the journal but are not part of
    /// this view: a retried request starts fresh.
    pub async fn calls(&self, request_id: &str) -> Result<Vec<JournaledCall>, StoreError> {
        let rows = sqlx::query(
            r#"SELECT pc.id, pc.provider, pc.attempt - c.attempt_base AS attempt, pc.reply
                 FROM provider_calls pc JOIN checks c ON c.request_id = pc.request_id
                WHERE pc.request_id = $1 AND pc.attempt > c.attempt_base
                ORDER BY pc.attempt"#,
        )
        .bind(request_id)
        .fetch_all(&self.pool)
        .await?;
        rows.into_iter()
            .map(|r| {
                let reply: Option<sqlx::types::Json<ProviderReply>> = r.try_get("reply")?;
                Ok(JournaledCall {
                    id: r.try_get("id")?,
                    provider: r.try_get("provider")?,
                    attempt: r.try_get("attempt")?,
                    reply: reply.map(|j| j.0),
                })
            })
            .collect()
    }
}

fn parse_result(request_id: &str, v: serde_json::Value) -> Result<CheckResult, StoreError> {
    serde_json::from_value(v).map_err(|e| StoreError::Corrupt(request_id.to_owned(), e.to_string()))
}
