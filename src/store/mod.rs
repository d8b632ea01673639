//! Postgres: claims with leases, the one stored result per request, and the provider-call journal
//! written before every outbound call.

use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use secrecy::ExposeSecret;
use sqlx::migrate::MigrateDatabase;
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::{PgPool, Postgres, Row};

use crate::check::{CheckKind, CheckResult, MaskedSubject};
use crate::configuration::DatabaseSettings;
use crate::providers::ProviderReply;

mod batch;
mod operator;
pub mod workers;
pub use batch::GroupCommit;
use batch::{Batcher, Done, Op};
pub use operator::{
    journal_rows, Decision, DecisionRow, JournalRow, RetryWrite, RowSnapshot, SupersededRow,
};
pub use workers::{merge_providers, workers, ProviderSummary, WorkerRow};

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
    /// The group-commit writer stopped (the worker is shutting down, or it panicked).
    #[error("the database writer stopped before answering")]
    WriterGone,
    /// The batch this write was part of failed for a reason that may pass (the connection was
    /// lost, a deadlock): the first write of the batch has the error itself.
    #[error("a batched write failed: {1}")]
    Batch(crate::fault::FaultClass, String),
}

/// Create the database when it is missing and `database.create_if_missing` is set.
pub async fn ensure_database(s: &DatabaseSettings) -> Result<(), StoreError> {
    let url = s.url.expose_secret();
    if s.create_if_missing && !Postgres::database_exists(url).await? {
        // Two workers starting together may race to create it; the loser sees "already exists".
        if let Err(e) = Postgres::create_database(url).await {
            if !Postgres::database_exists(url).await? {
                return Err(e.into());
            }
        }
    }
    Ok(())
}

/// Connect (creating the database when configured to and missing) and apply migrations.
pub async fn connect_and_migrate(s: &DatabaseSettings) -> Result<Store, StoreError> {
    ensure_database(s).await?;
    let url = s.url.expose_secret();
    let opts = PgConnectOptions::from_str(url)?;
    let pool = PgPoolOptions::new()
        .max_connections(s.max_connections)
        .acquire_timeout(Duration::from_secs(10))
        // No ping before every use: it doubled the round trips of the hot path. A connection
        // that died meanwhile fails its statement, which is retried like any lost connection.
        .test_before_acquire(false)
        .connect_with(opts)
        .await?;
    MIGRATOR.run(&pool).await?;
    Ok(Store::from_pool(pool))
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
        /// The row was created by this claim: nothing of the request is journaled yet, so the
        /// journal need not be read.
        fresh: bool,
        /// The journal row of the run's first call, written in the claim's commit when the
        /// claim asked for it ([`FirstCall`]) and the run had no call yet.
        first_call: Option<i64>,
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

/// The first call of a request, journaled in the same commit as its claim (its rate-limit slot
/// already taken): written only when the claimed run has no journaled call yet.
#[derive(Clone, Copy, Debug)]
pub struct FirstCall<'a> {
    /// Provider name.
    pub provider: &'a str,
    /// The provider's API action.
    pub action: &'a str,
    /// The worker's id (journal `worker`).
    pub worker: &'a str,
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
    /// Group commit of the hot path's writes; without it each write commits on its own.
    batcher: Option<Arc<Batcher>>,
}

impl Store {
    /// Wrap an existing pool (migrations must have run). Each write commits on its own.
    pub fn from_pool(pool: PgPool) -> Self {
        Store {
            pool,
            batcher: None,
        }
    }

    /// The same store, with the claims, journal rows, outcomes and results of concurrent
    /// requests written in shared transactions (see [`GroupCommit`]). Starts the writer tasks
    /// (on the current tokio runtime); they stop when the last clone of the store is dropped.
    pub fn with_group_commit(self, cfg: GroupCommit) -> Self {
        Store {
            batcher: Some(Arc::new(Batcher::start(self.pool.clone(), cfg))),
            ..self
        }
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
    /// ours). Leases use the database clock only. With `first_call`, the run's first call is
    /// journaled in the same commit when the claim holds the request and its run has no call
    /// yet (see [`Claim::Claimed`]).
    #[allow(clippy::too_many_arguments)]
    pub async fn claim(
        &self,
        request_id: &str,
        check: CheckKind,
        subject: &MaskedSubject,
        fingerprint: &str,
        owner: &str,
        lease: Duration,
        first_call: Option<FirstCall<'_>>,
    ) -> Result<Claim, StoreError> {
        let op = Op::Claim(batch::ClaimOp {
            request_id: request_id.to_owned(),
            check,
            subject: serde_json::to_string(subject).expect("a masked subject serialises"),
            fingerprint: fingerprint.to_owned(),
            owner: owner.to_owned(),
            lease_secs: lease.as_secs_f64(),
            first_call: first_call.map(|f| batch::FirstCallOp {
                provider: f.provider.to_owned(),
                action: f.action.to_owned(),
                worker: f.worker.to_owned(),
            }),
        });
        match self.write(op).await? {
            Done::Claim(c) => Ok(c),
            other => unreachable!("a claim answers a claim, not {other:?}"),
        }
    }

    /// Run one write: in the next group commit when the store has writers, else on its own.
    async fn write(&self, op: Op) -> Result<Done, StoreError> {
        match &self.batcher {
            Some(b) => b.submit(op).await,
            None => batch::run(&self.pool, std::slice::from_ref(&op))
                .await
                .remove(0),
        }
    }

    /// The stored result, if the request is finished.
    pub async fn stored_result(&self, request_id: &str) -> Result<Option<CheckResult>, StoreError> {
        let v: Option<Option<serde_json::Value>> =
            sqlx::query_scalar(r#"SELECT result FROM checks WHERE request_id = $1"#)
                .bind(request_id)
                .fetch_optional(&self.pool)
                .await?;
        batch::round_trips(1);
        v.flatten().map(|v| parse_result(request_id, v)).transpose()
    }

    /// Extend every lease in `held` (request id, lease owner) in one statement. Returns the
    /// owners whose lease is no longer theirs (taken over, or finished). A row a batch is
    /// writing right now is skipped, not waited for (no lock-order deadlock with the batches):
    /// it is renewed at the next round, well inside the lease, and never counted as lost.
    pub async fn renew_all(
        &self,
        held: &[(String, String)],
        lease: Duration,
    ) -> Result<std::collections::HashSet<String>, StoreError> {
        let rows: Vec<String> = sqlx::query_scalar(
            r#"WITH r AS (SELECT * FROM UNNEST($1::text[], $2::text[]) AS r(request_id, owner)),
               renewed AS (
                   UPDATE checks c
                      SET lease_until = now() + make_interval(secs => $3), updated_at = now()
                     FROM (SELECT c.request_id FROM checks c JOIN r
                               ON c.request_id = r.request_id AND c.lease_owner = r.owner
                            WHERE c.completed_at IS NULL
                            ORDER BY c.request_id
                              FOR UPDATE OF c SKIP LOCKED) l
                    WHERE c.request_id = l.request_id
                RETURNING c.request_id)
               -- Lost: not renewed, and not ours any more (read without waiting for locks).
               SELECT r.owner FROM r LEFT JOIN checks c ON c.request_id = r.request_id
                WHERE r.request_id NOT IN (SELECT request_id FROM renewed)
                  AND (c.request_id IS NULL OR c.completed_at IS NOT NULL
                       OR c.lease_owner IS DISTINCT FROM r.owner)"#,
        )
        .bind(held.iter().map(|h| h.0.as_str()).collect::<Vec<_>>())
        .bind(held.iter().map(|h| h.1.as_str()).collect::<Vec<_>>())
        .bind(lease.as_secs_f64())
        .fetch_all(&self.pool)
        .await?;
        batch::round_trips(1);
        Ok(rows.into_iter().collect())
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
        batch::round_trips(1);
        Ok(())
    }

    /// Store the result of the claim `fence`, unless one is stored already. Returns the result
    /// that is stored now (ours, or the one that won), or None when the row is no longer this
    /// claim's (another worker took the lease over, or a `kycq dlq retry` started a new run)
    /// and has no result yet: nothing was written, and the caller treats it as a lost lease
    /// (waits for the stored result; never stores its own over another run).
    ///
    /// `call` is the outcome of the call the result came from, when it is not journaled yet:
    /// it is written in the same commit (and whatever the fence says — see
    /// [`Store::finish_call`]).
    pub async fn complete(
        &self,
        result: &CheckResult,
        fingerprint: Option<&str>,
        fence: &Fence,
        call: Option<(i64, &ProviderReply)>,
    ) -> Result<Option<CheckResult>, StoreError> {
        let op = Op::Complete(batch::CompleteOp {
            json: serde_json::to_string(result).expect("a result serialises"),
            result: Box::new(result.clone()),
            fingerprint: fingerprint.map(str::to_owned),
            fence: fence.clone(),
            call: call.map(|(id, reply)| batch::FinishOp::new(id, reply)),
        });
        match self.write(op).await? {
            Done::Complete(stored) => Ok(stored),
            other => unreachable!("a result answers a result, not {other:?}"),
        }
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
        batch::round_trips(1);
        Ok(row.is_some())
    }

    /// Journal an outbound call of the claim `fence` before it is sent. Returns the row id, or
    /// None when the row is no longer this claim's (its lease taken over, its run superseded, or
    /// finished): nothing is journaled and the call must not be sent. The row is committed
    /// (durable) when this returns.
    pub async fn begin_call(
        &self,
        request_id: &str,
        provider: &str,
        action: &str,
        attempt: u32,
        worker: &str,
        fence: &Fence,
    ) -> Result<Option<i64>, StoreError> {
        let op = Op::Begin(batch::BeginOp {
            request_id: request_id.to_owned(),
            provider: provider.to_owned(),
            action: action.to_owned(),
            attempt: attempt as i32,
            worker: worker.to_owned(),
            fence: fence.clone(),
        });
        match self.write(op).await? {
            Done::Begin(id) => Ok(id),
            other => unreachable!("a journal row answers a journal row, not {other:?}"),
        }
    }

    /// Complete a journaled call with its outcome and billing. Not fenced: the row is the call
    /// this worker journaled and sent, so its outcome is the truth about that call whichever run
    /// is current now (the billing audit trail needs it).
    pub async fn finish_call(&self, id: i64, reply: &ProviderReply) -> Result<(), StoreError> {
        match self
            .write(Op::Finish(batch::FinishOp::new(id, reply)))
            .await?
        {
            Done::Finish => Ok(()),
            other => unreachable!("an outcome answers an outcome, not {other:?}"),
        }
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
        batch::round_trips(1);
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
