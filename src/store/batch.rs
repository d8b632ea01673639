//! Group commit: the writes of many requests in one transaction.
//!
//! The hot path writes three times per request: the claim, the journal row before a call, and
//! the call's outcome together with the stored result. Each write is an [`Op`]; a writer task
//! takes every op that is ready (up to `database.batch_max_ops`), runs each kind as one
//! multi-row statement over `UNNEST`ed arrays, commits once, and only then answers every op of
//! the batch. So a journal row is durable before its call is sent, and a result before it is
//! published and acknowledged, exactly as with one transaction per write — but under load one
//! commit covers dozens of requests.
//!
//! - **Light load**: a writer takes an op the moment it arrives and never waits for a batch to
//!   fill; the short wait for more (`database.batch_linger_us`) applies only while the previous
//!   batch held more than one op, i.e. while there is load to gather.
//! - **One bad op never fails the others**: when a batch fails, every op of it is run again on
//!   its own, so only the op that fails alone gets the error (a value Postgres refuses, say).
//! - **Duplicates** (two deliveries of one `request_id` in the same batch) go to successive
//!   rounds of the same transaction: a multi-row `INSERT … ON CONFLICT DO UPDATE` may not touch
//!   a row twice, and answers are matched back by `request_id`.
//! - Rows are locked in `request_id` order within each statement. Two batches touch the same
//!   `checks` row only for duplicates of one request, so they rarely deadlock; when Postgres
//!   breaks one, every op of the aborted batch gets the (transient) failure and its caller
//!   retries it as it would a write of its own. Lease renewal never waits for a batch's rows
//!   (see [`super::Store::renew_all`]).
//! - Once a batch is committed it is never written again: a failure after the commit (a
//!   follow-up read) is the failure of the ops that needed the read only.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use sqlx::{PgConnection, PgPool, Row};
use tokio::sync::{mpsc, oneshot, Mutex};

use super::{parse_result, Claim, Fence, StoreError};
use crate::check::{CheckKind, CheckResult, MaskedSubject};
use crate::providers::ProviderReply;

/// How writes are grouped (`database.batch_*`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct GroupCommit {
    /// Writer tasks (each holds one connection while it writes a batch).
    pub writers: usize,
    /// Most ops in one batch.
    pub max_ops: usize,
    /// How long a writer waits for more ops while there is load (the previous batch held more
    /// than one op). Zero: take only what is ready.
    pub linger: Duration,
}

/// Claim a request (see [`super::Store::claim`]).
#[derive(Debug)]
pub(crate) struct ClaimOp {
    pub request_id: String,
    pub check: CheckKind,
    pub subject: String,
    pub fingerprint: String,
    pub owner: String,
    pub lease_secs: f64,
    pub first_call: Option<FirstCallOp>,
}

/// The first call journaled with a claim (see [`super::FirstCall`]).
#[derive(Debug)]
pub(crate) struct FirstCallOp {
    pub provider: String,
    pub action: String,
    pub worker: String,
}

/// Journal a call before it is sent (see [`super::Store::begin_call`]).
#[derive(Debug)]
pub(crate) struct BeginOp {
    pub request_id: String,
    pub provider: String,
    pub action: String,
    pub attempt: i32,
    pub worker: String,
    pub fence: Fence,
}

/// Journal a call's outcome (see [`super::Store::finish_call`]).
#[derive(Debug)]
pub(crate) struct FinishOp {
    pub id: i64,
    pub http_status: Option<i32>,
    pub code: Option<String>,
    pub provider_request_id: Option<String>,
    pub outcome: &'static str,
    pub billed: &'static str,
    pub reply: String,
}

impl FinishOp {
    pub fn new(id: i64, reply: &ProviderReply) -> Self {
        FinishOp {
            id,
            http_status: reply.http_status.map(i32::from),
            code: reply.provider_code.clone(),
            provider_request_id: reply.provider_request_id.clone(),
            outcome: reply.classification.class.as_str(),
            billed: reply.classification.billed.as_str(),
            reply: serde_json::to_string(reply).expect("a reply serialises"),
        }
    }
}

/// Store a result (and, folded in, the outcome of the call it came from).
#[derive(Debug)]
pub(crate) struct CompleteOp {
    pub result: Box<CheckResult>,
    pub json: String,
    pub fingerprint: Option<String>,
    pub fence: Fence,
    pub call: Option<FinishOp>,
}

/// One write.
#[derive(Debug)]
pub(crate) enum Op {
    Claim(ClaimOp),
    Begin(BeginOp),
    Finish(FinishOp),
    Complete(CompleteOp),
}

/// What an op came to.
#[derive(Debug)]
pub(crate) enum Done {
    Claim(Claim),
    Begin(Option<i64>),
    Finish,
    Complete(Option<CheckResult>),
}

impl Op {
    /// This claim (the caller picked claims by [`Op::kind`]).
    fn claim(&self) -> &ClaimOp {
        match self {
            Op::Claim(c) => c,
            _ => unreachable!("claims only"),
        }
    }

    fn begin(&self) -> &BeginOp {
        match self {
            Op::Begin(b) => b,
            _ => unreachable!("journal rows only"),
        }
    }

    fn finish(&self) -> &FinishOp {
        match self {
            Op::Finish(f) => f,
            _ => unreachable!("outcomes only"),
        }
    }

    fn complete(&self) -> &CompleteOp {
        match self {
            Op::Complete(c) => c,
            _ => unreachable!("results only"),
        }
    }

    fn kind(&self) -> u8 {
        match self {
            Op::Claim(_) => 0,
            Op::Begin(_) => 1,
            Op::Finish(_) => 2,
            Op::Complete(_) => 3,
        }
    }

    /// What must be unique among the ops of one kind in one statement.
    fn key(&self) -> String {
        match self {
            Op::Claim(o) => o.request_id.clone(),
            Op::Begin(o) => o.request_id.clone(),
            Op::Finish(o) => o.id.to_string(),
            Op::Complete(o) => o.result.request_id.clone(),
        }
    }
}

type Pending = (Op, oneshot::Sender<Result<Done, StoreError>>);

/// The writers of one store: ops go in, answers come back once their batch is committed.
pub(crate) struct Batcher {
    tx: mpsc::Sender<Pending>,
}

impl std::fmt::Debug for Batcher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Batcher").finish_non_exhaustive()
    }
}

impl Batcher {
    /// Start `cfg.writers` writer tasks on `pool`. They stop when the last handle is dropped.
    pub fn start(pool: PgPool, cfg: GroupCommit) -> Batcher {
        let (tx, rx) = mpsc::channel::<Pending>(cfg.max_ops.max(1) * 4);
        let rx = Arc::new(Mutex::new(rx));
        for _ in 0..cfg.writers.max(1) {
            tokio::spawn(writer(pool.clone(), rx.clone(), cfg));
        }
        Batcher { tx }
    }

    /// Run `op` in the next batch.
    pub async fn submit(&self, op: Op) -> Result<Done, StoreError> {
        let (tx, rx) = oneshot::channel();
        if self.tx.send((op, tx)).await.is_err() {
            return Err(StoreError::WriterGone);
        }
        rx.await.unwrap_or(Err(StoreError::WriterGone))
    }
}

async fn writer(pool: PgPool, rx: Arc<Mutex<mpsc::Receiver<Pending>>>, cfg: GroupCommit) {
    let max = cfg.max_ops.max(1);
    let mut busy = false;
    loop {
        let mut batch: Vec<Pending> = Vec::new();
        {
            // One writer gathers at a time; the others are writing meanwhile.
            let mut rx = rx.lock().await;
            let Some(first) = rx.recv().await else {
                return;
            };
            batch.push(first);
            let until = tokio::time::Instant::now() + cfg.linger;
            while batch.len() < max {
                match rx.try_recv() {
                    Ok(p) => batch.push(p),
                    Err(_) if busy && !cfg.linger.is_zero() => {
                        match tokio::time::timeout_at(until, rx.recv()).await {
                            Ok(Some(p)) => batch.push(p),
                            _ => break,
                        }
                    }
                    Err(_) => break,
                }
            }
        }
        busy = batch.len() > 1;
        let (ops, replies): (Vec<Op>, Vec<_>) = batch.into_iter().unzip();
        let results = run(&pool, &ops).await;
        for (reply, r) in replies.into_iter().zip(results) {
            let _ = reply.send(r);
        }
    }
}

/// Run `ops` in one transaction. When Postgres refuses a value of one of them (a failure that
/// would repeat), the batch is split in halves until the op that fails alone is found: it gets
/// the error, the others are written. Any other failure (a lost connection, a deadlock) is every
/// op's: each caller retries as it would a write of its own.
pub(crate) async fn run(pool: &PgPool, ops: &[Op]) -> Vec<Result<Done, StoreError>> {
    metrics::counter!("kycq_db_batches_total").increment(1);
    metrics::counter!("kycq_db_batched_ops_total").increment(ops.len() as u64);
    split_on_refusal(pool, ops).await
}

fn split_on_refusal<'a>(
    pool: &'a PgPool,
    ops: &'a [Op],
) -> futures::future::BoxFuture<'a, Vec<Result<Done, StoreError>>> {
    Box::pin(async move {
        match run_once(pool, ops).await {
            Ok(done) => {
                let journals_calls = |o: &Op| match o {
                    Op::Begin(_) => true,
                    Op::Claim(c) => c.first_call.is_some(),
                    _ => false,
                };
                if ops.iter().any(journals_calls) {
                    crate::failpoint::hit("journal_committed");
                }
                done
            }
            Err(e) if ops.len() == 1 => vec![Err(e)],
            Err(e) => {
                let class = crate::fault::classify_store(&e);
                if !matches!(class, crate::fault::FaultClass::Deterministic { .. }) {
                    let why = e.to_string();
                    let mut out = vec![Err(e)];
                    out.extend((1..ops.len()).map(|_| Err(StoreError::Batch(class, why.clone()))));
                    return out;
                }
                tracing::warn!(error = %e, ops = ops.len(), "Postgres refused a value in a batch; splitting it to find the write it belongs to");
                metrics::counter!("kycq_db_batch_splits_total").increment(1);
                let (a, b) = ops.split_at(ops.len() / 2);
                let mut out = split_on_refusal(pool, a).await;
                out.extend(split_on_refusal(pool, b).await);
                out
            }
        }
    })
}

/// Round trips to Postgres (statements, and BEGIN/COMMIT), for `kycq_db_round_trips_total`.
pub(crate) fn round_trips(n: u64) {
    metrics::counter!("kycq_db_round_trips_total").increment(n);
}

/// Write `ops` in one transaction. Err: the writes failed (nothing is committed, or the commit's
/// fate is unknown). Ok: committed; each op's answer, where an op whose write did not apply and
/// whose follow-up read failed has that failure (its write is safe to repeat).
async fn run_once(pool: &PgPool, ops: &[Op]) -> Result<Vec<Result<Done, StoreError>>, StoreError> {
    let rounds = rounds(ops);
    let statements: usize = rounds.iter().map(|r| statements(ops, r)).sum();
    let mut done: Vec<Option<Result<Done, StoreError>>> = (0..ops.len()).map(|_| None).collect();
    let mut followups = Followups::default();
    if statements == 1 {
        // One statement is atomic on its own: no BEGIN/COMMIT round trips.
        let mut conn = pool.acquire().await?;
        write_round(&mut conn, ops, &rounds[0], &mut done, &mut followups).await?;
    } else {
        let mut tx = pool.begin().await?;
        for round in &rounds {
            write_round(&mut tx, ops, round, &mut done, &mut followups).await?;
        }
        tx.commit().await?;
        round_trips(2);
    }
    // Reads for the ops whose write found the row in another state (a duplicate, a lost
    // lease): after the commit, outside the batch. A failure here is theirs alone: the batch
    // is committed and never written again.
    if let Err(e) = followups.read(pool, ops, &mut done).await {
        let class = crate::fault::classify_store(&e);
        let why = e.to_string();
        for d in done.iter_mut().filter(|d| d.is_none()) {
            *d = Some(Err(StoreError::Batch(class, why.clone())));
        }
    }
    Ok(done
        .into_iter()
        .map(|d| d.expect("every op is answered"))
        .collect())
}

/// Ops split so that no key occurs twice among the ops of one kind in a round.
fn rounds(ops: &[Op]) -> Vec<Vec<usize>> {
    /// The (kind, key) pairs a round holds, and its ops.
    type Round = (HashSet<(u8, String)>, Vec<usize>);
    let mut rounds: Vec<Round> = Vec::new();
    for (i, op) in ops.iter().enumerate() {
        let k = (op.kind(), op.key());
        match rounds.iter_mut().find(|(seen, _)| !seen.contains(&k)) {
            Some((seen, idx)) => {
                seen.insert(k);
                idx.push(i);
            }
            None => rounds.push((HashSet::from([k]), vec![i])),
        }
    }
    rounds.into_iter().map(|(_, idx)| idx).collect()
}

/// How many statements a round runs (one per kind present; a folded outcome is a finish).
fn statements(ops: &[Op], round: &[usize]) -> usize {
    // The four kinds, and first calls journaled with claims.
    let mut kinds = [false; 5];
    for &i in round {
        kinds[ops[i].kind() as usize] = true;
        match &ops[i] {
            Op::Complete(c) => kinds[2] |= c.call.is_some(),
            Op::Claim(c) => kinds[4] |= c.first_call.is_some(),
            _ => {}
        }
    }
    kinds.iter().filter(|k| **k).count()
}

/// Ops whose write did not apply and need a read to be answered.
#[derive(Default)]
struct Followups {
    /// Claims that found the row finished, leased or another request's.
    claims: Vec<usize>,
    /// Completes that found the row not this claim's.
    completes: Vec<usize>,
}

impl Followups {
    async fn read(
        &self,
        pool: &PgPool,
        ops: &[Op],
        done: &mut [Option<Result<Done, StoreError>>],
    ) -> Result<(), StoreError> {
        if !self.claims.is_empty() {
            let ids: Vec<&str> = self
                .claims
                .iter()
                .map(|&i| ops[i].claim().request_id.as_str())
                .collect();
            let rows = sqlx::query(
                r#"SELECT request_id, result, lease_owner, lease_until, check_kind,
                          subject_fingerprint, subject_masked
                     FROM checks WHERE request_id = ANY($1)"#,
            )
            .bind(&ids)
            .fetch_all(pool)
            .await?;
            round_trips(1);
            let mut by_id = HashMap::new();
            for r in rows {
                by_id.insert(r.try_get::<String, _>("request_id")?, r);
            }
            for &i in &self.claims {
                let c = ops[i].claim();
                // A row that cannot be read (a stored result that no longer parses) is this
                // op's failure only.
                done[i] = Some(match by_id.get(&c.request_id) {
                    Some(row) => current(row, c).map(Done::Claim),
                    None => Err(StoreError::Db(sqlx::Error::RowNotFound)),
                });
            }
        }
        if !self.completes.is_empty() {
            let ids: Vec<&str> = self
                .completes
                .iter()
                .map(|&i| ops[i].complete().result.request_id.as_str())
                .collect();
            let rows =
                sqlx::query(r#"SELECT request_id, result FROM checks WHERE request_id = ANY($1)"#)
                    .bind(&ids)
                    .fetch_all(pool)
                    .await?;
            round_trips(1);
            let mut by_id: HashMap<String, Option<serde_json::Value>> = HashMap::new();
            for r in rows {
                by_id.insert(r.try_get("request_id")?, r.try_get("result")?);
            }
            for &i in &self.completes {
                let c = ops[i].complete();
                let id = &c.result.request_id;
                done[i] = Some(
                    by_id
                        .get(id)
                        .cloned()
                        .flatten()
                        .map(|v| parse_result(id, v))
                        .transpose()
                        .map(Done::Complete),
                );
            }
        }
        Ok(())
    }
}

/// What the row says when a claim did not take it: known for another subject or check,
/// finished, or leased by someone.
fn current(row: &sqlx::postgres::PgRow, c: &ClaimOp) -> Result<Claim, StoreError> {
    let known_check: Option<String> = row.try_get("check_kind")?;
    let known_fingerprint: Option<String> = row.try_get("subject_fingerprint")?;
    // A row without a fingerprint or check is a rejection of an unreadable request: it is
    // compared by the rejection path, not here.
    let other_check = known_check
        .as_deref()
        .is_some_and(|k| k != c.check.as_str());
    let other_subject = known_fingerprint
        .as_deref()
        .is_some_and(|f| f != c.fingerprint);
    if other_check || other_subject {
        let subject: sqlx::types::Json<MaskedSubject> = row.try_get("subject_masked")?;
        return Ok(Claim::Conflict {
            subject: subject.0,
            check: known_check,
        });
    }
    let result: Option<serde_json::Value> = row.try_get("result")?;
    if let Some(v) = result {
        return Ok(Claim::Finished(Box::new(parse_result(&c.request_id, v)?)));
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

/// One round's statements on `conn`: outcomes, results, journal rows, claims.
async fn write_round(
    conn: &mut PgConnection,
    ops: &[Op],
    round: &[usize],
    done: &mut [Option<Result<Done, StoreError>>],
    followups: &mut Followups,
) -> Result<(), StoreError> {
    let of = |k: u8| -> Vec<usize> {
        let mut v: Vec<usize> = round
            .iter()
            .copied()
            .filter(|&i| ops[i].kind() == k)
            .collect();
        v.sort_by_key(|&i| ops[i].key());
        v
    };
    let (claims, begins, finishes, completes) = (of(0), of(1), of(2), of(3));
    let mut outcomes: Vec<&FinishOp> = finishes.iter().map(|&i| ops[i].finish()).collect();
    outcomes.extend(
        completes
            .iter()
            .filter_map(|&i| ops[i].complete().call.as_ref()),
    );
    if !outcomes.is_empty() {
        outcomes.sort_by_key(|f| f.id);
        finish_calls(conn, &outcomes).await?;
        for &i in &finishes {
            done[i] = Some(Ok(Done::Finish));
        }
    }
    if !completes.is_empty() {
        let stored = complete(conn, ops, &completes).await?;
        for &i in &completes {
            let c = ops[i].complete();
            if stored.contains(&c.result.request_id) {
                done[i] = Some(Ok(Done::Complete(Some((*c.result).clone()))));
            } else {
                followups.completes.push(i);
            }
        }
    }
    if !begins.is_empty() {
        let ids = begin_calls(conn, ops, &begins).await?;
        for &i in &begins {
            let b = ops[i].begin();
            done[i] = Some(Ok(Done::Begin(ids.get(&b.request_id).copied())));
        }
    }
    if !claims.is_empty() {
        let mut claimed = claim(conn, ops, &claims).await?;
        let firsts: Vec<usize> = claims
            .iter()
            .copied()
            .filter(|&i| {
                let c = ops[i].claim();
                c.first_call.is_some() && claimed.contains_key(&c.request_id)
            })
            .collect();
        if !firsts.is_empty() {
            for (request_id, id) in first_calls(conn, ops, &firsts).await? {
                if let Some(Claim::Claimed { first_call, .. }) = claimed.get_mut(&request_id) {
                    *first_call = Some(id);
                }
            }
        }
        for &i in &claims {
            let c = ops[i].claim();
            match claimed.remove(&c.request_id) {
                Some(held) => done[i] = Some(Ok(Done::Claim(held))),
                None => followups.claims.push(i),
            }
        }
    }
    Ok(())
}

async fn claim(
    conn: &mut PgConnection,
    ops: &[Op],
    idx: &[usize],
) -> Result<HashMap<String, Claim>, StoreError> {
    let c: Vec<&ClaimOp> = idx.iter().map(|&i| ops[i].claim()).collect();
    let rows = sqlx::query(
        r#"
        INSERT INTO checks (request_id, check_kind, status, subject_masked, subject_fingerprint,
                            lease_owner, lease_until)
        SELECT r.request_id, r.check_kind, 'pending', r.subject::jsonb, r.fingerprint, r.owner,
               now() + make_interval(secs => r.lease)
          FROM UNNEST($1::text[], $2::text[], $3::text[], $4::text[], $5::text[], $6::float8[])
               AS r(request_id, check_kind, subject, fingerprint, owner, lease)
         ORDER BY r.request_id
        ON CONFLICT (request_id) DO UPDATE
           SET lease_owner = EXCLUDED.lease_owner,
               lease_until = EXCLUDED.lease_until,
               updated_at = now()
         WHERE checks.completed_at IS NULL
           AND (checks.lease_until IS NULL OR checks.lease_until < now()
                OR checks.lease_owner = EXCLUDED.lease_owner)
           AND checks.check_kind = EXCLUDED.check_kind
           AND checks.subject_fingerprint = EXCLUDED.subject_fingerprint
        RETURNING request_id, received_at, retry_round, (xmax = 0) AS fresh
        "#,
    )
    .bind(c.iter().map(|c| c.request_id.as_str()).collect::<Vec<_>>())
    .bind(c.iter().map(|c| c.check.as_str()).collect::<Vec<_>>())
    .bind(c.iter().map(|c| c.subject.as_str()).collect::<Vec<_>>())
    .bind(c.iter().map(|c| c.fingerprint.as_str()).collect::<Vec<_>>())
    .bind(c.iter().map(|c| c.owner.as_str()).collect::<Vec<_>>())
    .bind(c.iter().map(|c| c.lease_secs).collect::<Vec<_>>())
    .fetch_all(&mut *conn)
    .await?;
    round_trips(1);
    let mut out = HashMap::with_capacity(rows.len());
    for r in rows {
        out.insert(
            r.try_get("request_id")?,
            Claim::Claimed {
                received_at: r.try_get("received_at")?,
                retry_round: r.try_get("retry_round")?,
                fresh: r.try_get("fresh")?,
                first_call: None,
            },
        );
    }
    Ok(out)
}

async fn begin_calls(
    conn: &mut PgConnection,
    ops: &[Op],
    idx: &[usize],
) -> Result<HashMap<String, i64>, StoreError> {
    let b: Vec<&BeginOp> = idx.iter().map(|&i| ops[i].begin()).collect();
    // `attempt` counts within the current run; the row's attempt number continues after the
    // runs a `kycq dlq retry` superseded (see `checks.attempt_base`). The rows are locked so a
    // retry cannot supersede a run between this check and the insert.
    let rows = sqlx::query(
        r#"
        WITH r AS (
            SELECT * FROM UNNEST($1::text[], $2::text[], $3::text[], $4::int4[], $5::text[],
                                 $6::int4[], $7::text[])
                   AS r(request_id, provider, action, attempt, worker, retry_round, owner)),
        run AS (
            SELECT r.request_id, r.provider, r.action, r.attempt + c.attempt_base AS attempt,
                   r.worker, c.retry_round
              FROM r JOIN checks c
                ON c.request_id = r.request_id AND c.completed_at IS NULL
               AND c.retry_round = r.retry_round AND c.lease_owner = r.owner
             ORDER BY c.request_id
               FOR UPDATE OF c)
        INSERT INTO provider_calls (request_id, provider, action, attempt, worker, retry_round)
        SELECT request_id, provider, action, attempt, worker, retry_round FROM run
        RETURNING id, request_id
        "#,
    )
    .bind(b.iter().map(|b| b.request_id.as_str()).collect::<Vec<_>>())
    .bind(b.iter().map(|b| b.provider.as_str()).collect::<Vec<_>>())
    .bind(b.iter().map(|b| b.action.as_str()).collect::<Vec<_>>())
    .bind(b.iter().map(|b| b.attempt).collect::<Vec<_>>())
    .bind(b.iter().map(|b| b.worker.as_str()).collect::<Vec<_>>())
    .bind(b.iter().map(|b| b.fence.retry_round).collect::<Vec<_>>())
    .bind(b.iter().map(|b| b.fence.owner.as_str()).collect::<Vec<_>>())
    .fetch_all(&mut *conn)
    .await?;
    round_trips(1);
    rows.into_iter()
        .map(|r| Ok((r.try_get("request_id")?, r.try_get("id")?)))
        .collect()
}

/// The first call of each claimed run that has none journaled yet (a fresh request, or one
/// taken over before its first call): attempt 1 of the run. The rows were locked by the claim in
/// this same transaction.
async fn first_calls(
    conn: &mut PgConnection,
    ops: &[Op],
    idx: &[usize],
) -> Result<Vec<(String, i64)>, StoreError> {
    let c: Vec<(&ClaimOp, &FirstCallOp)> = idx
        .iter()
        .map(|&i| {
            let c = ops[i].claim();
            (c, c.first_call.as_ref().expect("claims with a first call"))
        })
        .collect();
    let rows = sqlx::query(
        r#"
        WITH r AS (
            SELECT * FROM UNNEST($1::text[], $2::text[], $3::text[], $4::text[], $5::text[])
                   AS r(request_id, provider, action, worker, owner)),
        run AS (
            SELECT r.request_id, r.provider, r.action, 1 + c.attempt_base AS attempt, r.worker,
                   c.retry_round
              FROM r JOIN checks c
                ON c.request_id = r.request_id AND c.completed_at IS NULL
               AND c.lease_owner = r.owner
             WHERE NOT EXISTS (SELECT 1 FROM provider_calls pc
                                WHERE pc.request_id = c.request_id
                                  AND pc.attempt > c.attempt_base))
        INSERT INTO provider_calls (request_id, provider, action, attempt, worker, retry_round)
        SELECT request_id, provider, action, attempt, worker, retry_round FROM run
        RETURNING id, request_id
        "#,
    )
    .bind(
        c.iter()
            .map(|(c, _)| c.request_id.as_str())
            .collect::<Vec<_>>(),
    )
    .bind(
        c.iter()
            .map(|(_, f)| f.provider.as_str())
            .collect::<Vec<_>>(),
    )
    .bind(c.iter().map(|(_, f)| f.action.as_str()).collect::<Vec<_>>())
    .bind(c.iter().map(|(_, f)| f.worker.as_str()).collect::<Vec<_>>())
    .bind(c.iter().map(|(c, _)| c.owner.as_str()).collect::<Vec<_>>())
    .fetch_all(&mut *conn)
    .await?;
    round_trips(1);
    rows.into_iter()
        .map(|r| Ok((r.try_get("request_id")?, r.try_get("id")?)))
        .collect()
}

async fn finish_calls(conn: &mut PgConnection, f: &[&FinishOp]) -> Result<(), StoreError> {
    // Not fenced: the row is a call this worker journaled and sent, so its outcome is the truth
    // about that call whichever run is current now (the billing audit trail needs it).
    sqlx::query(
        r#"
        UPDATE provider_calls pc
           SET finished_at = now(), http_status = r.http_status, provider_code = r.code,
               provider_request_id = r.provider_request_id, outcome = r.outcome,
               billed = r.billed, reply = r.reply::jsonb
          FROM UNNEST($1::int8[], $2::int4[], $3::text[], $4::text[], $5::text[], $6::text[],
                      $7::text[])
               AS r(id, http_status, code, provider_request_id, outcome, billed, reply)
         WHERE pc.id = r.id
        "#,
    )
    .bind(f.iter().map(|f| f.id).collect::<Vec<_>>())
    .bind(f.iter().map(|f| f.http_status).collect::<Vec<_>>())
    .bind(f.iter().map(|f| f.code.as_deref()).collect::<Vec<_>>())
    .bind(
        f.iter()
            .map(|f| f.provider_request_id.as_deref())
            .collect::<Vec<_>>(),
    )
    .bind(f.iter().map(|f| f.outcome).collect::<Vec<_>>())
    .bind(f.iter().map(|f| f.billed).collect::<Vec<_>>())
    .bind(f.iter().map(|f| f.reply.as_str()).collect::<Vec<_>>())
    .execute(&mut *conn)
    .await?;
    round_trips(1);
    Ok(())
}

async fn complete(
    conn: &mut PgConnection,
    ops: &[Op],
    idx: &[usize],
) -> Result<HashSet<String>, StoreError> {
    let c: Vec<&CompleteOp> = idx.iter().map(|&i| ops[i].complete()).collect();
    let res: Vec<&CheckResult> = c.iter().map(|c| &*c.result).collect();
    let rows = sqlx::query(
        r#"
        UPDATE checks c
           SET status = r.status, verdict = r.verdict, reason_code = r.reason_code,
               billed = r.billed, provider = r.provider, attempts = r.attempts,
               result = r.result::jsonb, completed_at = r.completed_at,
               subject_fingerprint = COALESCE(c.subject_fingerprint, r.fingerprint),
               lease_owner = NULL, lease_until = NULL, updated_at = now()
          FROM UNNEST($1::text[], $2::text[], $3::text[], $4::text[], $5::text[], $6::text[],
                      $7::int4[], $8::text[], $9::timestamptz[], $10::text[], $11::int4[],
                      $12::text[])
               AS r(request_id, status, verdict, reason_code, billed, provider, attempts,
                    result, completed_at, fingerprint, retry_round, owner)
         WHERE c.request_id = r.request_id AND c.completed_at IS NULL
           AND c.retry_round = r.retry_round AND c.lease_owner = r.owner
        RETURNING c.request_id
        "#,
    )
    .bind(
        res.iter()
            .map(|r| r.request_id.as_str())
            .collect::<Vec<_>>(),
    )
    .bind(res.iter().map(|r| r.status.as_str()).collect::<Vec<_>>())
    .bind(
        res.iter()
            .map(|r| r.verdict.map(|v| v.as_str()))
            .collect::<Vec<_>>(),
    )
    .bind(
        res.iter()
            .map(|r| r.reason_code.as_str())
            .collect::<Vec<_>>(),
    )
    .bind(res.iter().map(|r| r.billed.as_str()).collect::<Vec<_>>())
    .bind(
        res.iter()
            .map(|r| r.provider.as_deref())
            .collect::<Vec<_>>(),
    )
    .bind(res.iter().map(|r| r.attempts as i32).collect::<Vec<_>>())
    .bind(c.iter().map(|c| c.json.as_str()).collect::<Vec<_>>())
    .bind(res.iter().map(|r| r.completed_at).collect::<Vec<_>>())
    .bind(
        c.iter()
            .map(|c| c.fingerprint.as_deref())
            .collect::<Vec<_>>(),
    )
    .bind(c.iter().map(|c| c.fence.retry_round).collect::<Vec<_>>())
    .bind(c.iter().map(|c| c.fence.owner.as_str()).collect::<Vec<_>>())
    .fetch_all(&mut *conn)
    .await?;
    round_trips(1);
    rows.into_iter()
        .map(|r| Ok(r.try_get("request_id")?))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn claim(id: &str) -> Op {
        Op::Claim(ClaimOp {
            request_id: id.into(),
            check: CheckKind::Id2,
            subject: "{}".into(),
            fingerprint: "f".into(),
            owner: "o".into(),
            lease_secs: 30.0,
            first_call: None,
        })
    }

    fn finish(id: i64) -> Op {
        Op::Finish(FinishOp {
            id,
            http_status: None,
            code: None,
            provider_request_id: None,
            outcome: "answered",
            billed: "yes",
            reply: "{}".into(),
        })
    }

    #[test]
    fn duplicates_of_one_kind_go_to_later_rounds() {
        let ops = vec![claim("a"), claim("b"), claim("a"), finish(1), claim("a")];
        assert_eq!(rounds(&ops), vec![vec![0, 1, 3], vec![2], vec![4]]);
        // Distinct keys: one round, however many ops.
        let ops: Vec<Op> = (0..50).map(|i| claim(&format!("r{i}"))).collect();
        assert_eq!(rounds(&ops).len(), 1);
    }

    #[test]
    fn a_lone_statement_needs_no_transaction_and_kinds_count_once() {
        let ops = vec![claim("a"), claim("b")];
        assert_eq!(statements(&ops, &[0, 1]), 1);
        let ops = vec![claim("a"), finish(7), finish(8)];
        assert_eq!(statements(&ops, &[0, 1, 2]), 2);
    }
}
