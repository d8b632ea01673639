//! Processing one delivery: decode and validate, claim, call providers through the limiter with
//! the journal around every call, classify, store, publish — and say whether to ack or requeue.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::{DateTime, Utc};
use lapin::message::Delivery;
use secrecy::{ExposeSecret, SecretString};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn, Instrument};

use crate::broker::{header_str, headers, BrokerError, DeadLetter, Park, Publisher};
use crate::check::result::FromCall;
use crate::check::{
    decode, Billed, CheckRequest, CheckResult, Decoded, MaskedSubject, ReasonCode, Rejection,
    Status,
};
use crate::providers::circuit::TripReason;
use crate::providers::registry::{Entry, RouteError};
use crate::providers::{Classification, Gate, OutcomeClass, ProviderReply, Registry};
use crate::ratelimit::{Limiter, Saturated};
use crate::retry::{Backoff, RetryPolicy};
use crate::store::{Claim, Fence, FirstCall, Store, StoreError};
use crate::telemetry::trace_context::{Incoming, Outgoing};

use super::plan::{self, Finish, Plan, Step, WaitPolicy, Waiting};

/// Retrying the journal write of a call's outcome: 100 ms doubling to 5 s, jittered, for at
/// most [`JOURNAL_RETRY_FOR`].
pub(crate) const JOURNAL_RETRY: Backoff =
    Backoff::doubling(Duration::from_millis(100), Duration::from_secs(5));
/// How long a received answer is held while its journal write is retried.
pub(crate) const JOURNAL_RETRY_FOR: Duration = Duration::from_secs(60);
/// Waiting for a request another delivery holds (its lease, or its result before a rejection
/// is stored): 50 ms doubling to 1 s, jittered, never past the holder's lease; bounded by the
/// worker's stop signal and by the lease (a dead holder's lease runs out).
pub(crate) const HELD_ELSEWHERE_WAIT: Backoff =
    Backoff::doubling(Duration::from_millis(50), Duration::from_secs(1));

/// What to do with the delivery.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Disposition {
    /// Its result is stored and published (or it was dead-lettered): acknowledge.
    Ack,
    /// Not finished (stopping): return it to the queue.
    Requeue,
}

/// A failure of kycq's own infrastructure, classified by [`crate::fault`].
#[derive(Debug, thiserror::Error)]
pub enum ProcessError {
    /// Postgres.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// RabbitMQ.
    #[error(transparent)]
    Broker(#[from] BrokerError),
}

impl ProcessError {
    /// What to do about it.
    pub fn class(&self) -> crate::fault::FaultClass {
        match self {
            ProcessError::Store(e) => crate::fault::classify_store(e),
            ProcessError::Broker(e) => crate::fault::classify_broker(e),
        }
    }

    /// A sentence for an operator (dead-letter detail): what failed, by code, never the values
    /// (a database's message can quote the value it refused).
    pub fn operator_detail(&self) -> String {
        match self {
            ProcessError::Store(StoreError::Db(sqlx::Error::Database(db))) => {
                let code = db.code().unwrap_or_default();
                let meaning = crate::fault::sqlstate_row(&code).map_or("", |r| r.meaning);
                format!(
                    "Postgres refused this message (SQLSTATE {code}: {meaning}); any provider call \
                     already made for it is in the provider_calls journal"
                )
            }
            ProcessError::Store(StoreError::Corrupt(id, _)) => {
                format!("the stored result of {id} cannot be read back")
            }
            other => other.to_string(),
        }
    }
}

/// Everything processing needs, shared by every task of a worker.
pub struct Processor {
    /// Postgres.
    pub store: Store,
    /// Providers, circuits and routes.
    pub registry: Arc<Registry>,
    /// The limiter every call goes through.
    pub limiter: Arc<dyn Limiter>,
    /// Retries of transient failures.
    pub policy: RetryPolicy,
    /// This worker's identity in leases and the journal.
    pub worker_id: String,
    /// Lease length.
    pub lease: Duration,
    /// Key of subject fingerprints.
    pub pii_key: SecretString,
    /// Largest body read; a larger message is dead-lettered `too_large` unread.
    pub max_body_bytes: usize,
    /// When a request waits in its slot, parks in the wait queue, or gives up.
    pub wait: WaitPolicy,
    /// The leases this worker holds, renewed together.
    pub leases: super::leases::Leases,
}

/// What a delivery says about its earlier waits (headers kycq set when it parked it).
#[derive(Clone, Copy, Debug, Default)]
struct Waited {
    /// When it first had to wait, as the header says (not yet trusted: see [`Waited::since`]).
    since: Option<DateTime<Utc>>,
    /// Times parked before.
    parks: u32,
}

impl Waited {
    fn from_delivery(props: &lapin::BasicProperties) -> Waited {
        Waited {
            since: header_str(props, headers::WAITING_SINCE)
                .and_then(|s| DateTime::parse_from_rfc3339(&s).ok())
                .map(|t| t.with_timezone(&Utc)),
            parks: header_str(props, headers::PARKS)
                .and_then(|s| s.parse().ok())
                .unwrap_or(0),
        }
    }

    /// When the request first waited: the header, never before the request was first received
    /// (`received_at`, from Postgres) nor after `now` — a client-set header can neither end a
    /// wait early nor make it last forever. Without a header: now.
    fn since(&self, received_at: Option<DateTime<Utc>>, now: DateTime<Utc>) -> DateTime<Utc> {
        match (self.since, received_at) {
            (Some(h), Some(r)) => h.max(r).min(now),
            (Some(h), None) => h.min(now),
            (None, _) => now,
        }
    }

    fn park(&self, wait: Duration, since: DateTime<Utc>) -> Park {
        Park {
            wait,
            waiting_since: since,
            parks: self.parks,
        }
    }
}

/// What claiming a request came to.
enum Claimed {
    /// We hold the lease of this run; the request was first received then; whether the claim
    /// created the row (nothing journaled yet); the run's first call, journaled with the claim.
    Held(DateTime<Utc>, i32, bool, Option<Prejournaled>),
    /// Answered from the stored result or as a conflict (or we are stopping).
    Answered,
    /// Another live worker holds it for longer than is worth waiting in the slot.
    Park(Duration),
}

/// Where a request's result goes besides the result exchange (its AMQP `reply_to`), and the
/// trace context it carries.
struct Reply {
    to: Option<String>,
    correlation_id: Option<String>,
    trace: Outgoing,
}

impl Reply {
    async fn send(&self, publisher: &Publisher, result: &CheckResult) -> Result<(), BrokerError> {
        publisher
            .publish_result(
                result,
                self.to.as_deref(),
                self.correlation_id.as_deref(),
                Some(&self.trace),
            )
            .await
    }
}

/// The outcome of the last call, received but not journaled yet: written in the same commit as
/// the result it decides.
type Unjournaled = (i64, ProviderReply);

enum RouteOutcome {
    Done(Box<CheckResult>, Option<DeadLetter>, Option<Unjournaled>),
    Requeue,
    LeaseLost,
    /// Every provider is out for longer than is worth waiting in the slot.
    Park(Park),
}

impl Processor {
    /// Process one delivery. `stop` is the hard stop: once cancelled, work not yet sent to a
    /// provider is abandoned and the delivery requeued.
    ///
    /// `lease_owner` identifies this delivery's claim: the same for every retry of the same
    /// delivery (so a retry after an infrastructure error finds its own claim), never shared
    /// with a redelivery. [`Processor::lease_owner`] makes one.
    pub async fn process(
        &self,
        publisher: &Publisher,
        delivery: &Delivery,
        stop: &CancellationToken,
        lease_owner: &str,
    ) -> Result<Disposition, ProcessError> {
        let span = tracing::info_span!(
            "check",
            request_id = tracing::field::Empty,
            check = tracing::field::Empty,
            trace_id = tracing::field::Empty
        );
        // The caller's trace (`traceparent`), continued; a malformed one is ignored.
        let incoming = Incoming::from_headers(delivery.properties.headers().as_ref());
        let trace = crate::telemetry::continue_trace(&span, incoming.as_ref());
        self.process_inner(publisher, delivery, stop, lease_owner, &span, trace)
            .instrument(span.clone())
            .await
    }

    /// Journal a call's outcome (see [`Processor::holding_answer`]).
    async fn finish_call(&self, call_id: i64, reply: &ProviderReply) -> Result<(), StoreError> {
        self.holding_answer(|| self.store.finish_call(call_id, reply))
            .await
    }

    /// Store the result, with the outcome of the call it came from when that is not journaled
    /// yet (one commit; the answer is held as in [`Processor::holding_answer`]).
    async fn complete(
        &self,
        result: &CheckResult,
        fingerprint: &str,
        fence: &Fence,
        call: Option<&Unjournaled>,
    ) -> Result<Option<CheckResult>, StoreError> {
        let call = call.map(|(id, reply)| (*id, reply));
        let write = || self.store.complete(result, Some(fingerprint), fence, call);
        let Some((id, reply)) = call else {
            return write().await;
        };
        match self.holding_answer(write).await {
            Ok(stored) => Ok(stored),
            Err(e) => {
                // The result was refused (or never got through): the answer is still journaled
                // on its own, so the call reads as answered, never as in flight.
                if let Err(journal) = self.finish_call(id, reply).await {
                    warn!(error = %journal, "journaling a call's outcome failed");
                }
                Err(e)
            }
        }
    }

    /// A write that holds a received answer: the answer is kept in memory and the write retried
    /// with [`JOURNAL_RETRY`] for at most [`JOURNAL_RETRY_FOR`] — giving up would turn a
    /// received (maybe billed) answer into `billing_unknown`.
    async fn holding_answer<T, F, Fut>(&self, mut write: F) -> Result<T, StoreError>
    where
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = Result<T, StoreError>>,
    {
        let give_up = Instant::now() + JOURNAL_RETRY_FOR;
        let mut delays = JOURNAL_RETRY.delays(None);
        loop {
            let e = match write().await {
                Ok(v) => return Ok(v),
                Err(e) => e,
            };
            // Only a failure that may pass is worth holding the answer for.
            if crate::fault::classify_store(&e) != crate::fault::FaultClass::Transient {
                return Err(e);
            }
            match delays.next() {
                Some(d) if Instant::now() + d < give_up => {
                    warn!(error = %e, "journaling a call's outcome failed; retrying");
                    tokio::time::sleep(d).await;
                }
                _ => return Err(e),
            }
        }
    }

    /// A fresh claim identity for one delivery.
    pub fn lease_owner(&self) -> String {
        format!("{}#{}", self.worker_id, uuid::Uuid::new_v4().simple())
    }

    async fn process_inner(
        &self,
        publisher: &Publisher,
        delivery: &Delivery,
        stop: &CancellationToken,
        lease_owner: &str,
        span: &tracing::Span,
        trace: Outgoing,
    ) -> Result<Disposition, ProcessError> {
        let props = &delivery.properties;
        // A dead letter carries this worker's span as its trace parent.
        let traced = trace.on(props);
        let reply = Reply {
            to: props.reply_to().as_ref().map(|s| s.as_str().to_owned()),
            correlation_id: props
                .correlation_id()
                .as_ref()
                .map(|s| s.as_str().to_owned()),
            trace,
        };
        let routing_key = delivery.routing_key.as_str();
        let now = Utc::now();
        if delivery.data.len() > self.max_body_bytes {
            let dl = DeadLetter {
                reason: "too_large".into(),
                detail: format!(
                    "a body of {} bytes is over the limit of {} (worker.max_body_bytes); not read",
                    delivery.data.len(),
                    self.max_body_bytes
                ),
                attempts: 0,
                request_id: None,
                retry_round: None,
            };
            warn!(
                bytes = delivery.data.len(),
                limit = self.max_body_bytes,
                "message over the body limit dead-lettered unread"
            );
            publisher
                .dead_letter(&delivery.data, &traced, routing_key, &dl)
                .await?;
            metrics::counter!("kycq_dead_letters_total", "reason" => "too_large").increment(1);
            return Ok(Disposition::Ack);
        }
        let decoded = match decode(&delivery.data, now.date_naive()) {
            Ok(d) => d,
            Err(m) => {
                warn!(reason = m.reason(), detail = %m, bytes = delivery.data.len(), "malformed message dead-lettered");
                let dl = DeadLetter {
                    reason: m.reason().into(),
                    detail: m.to_string(),
                    attempts: 0,
                    request_id: None,
                    retry_round: None,
                };
                publisher
                    .dead_letter(&delivery.data, &traced, routing_key, &dl)
                    .await?;
                metrics::counter!("kycq_dead_letters_total", "reason" => m.reason()).increment(1);
                return Ok(Disposition::Ack);
            }
        };
        span.record("request_id", decoded.request_id());
        let req = match decoded {
            Decoded::Rejected(r) => return self.reject(publisher, &r, now, &reply, stop).await,
            Decoded::Valid(r) => r,
        };
        span.record("check", req.check.as_str());
        // Published as `check.<kind>` for another kind than the body's: which one the client
        // meant is a guess, and a guess is never billed.
        if let Some(published) = routing_key
            .strip_prefix("check.")
            .and_then(|k| k.parse::<crate::check::CheckKind>().ok())
            .filter(|k| *k != req.check)
        {
            let r = Rejection {
                request_id: req.request_id.clone(),
                check: Some(req.check),
                reason_code: ReasonCode::InvalidRequest,
                reason: format!(
                    "published with routing key check.{published} but the body's check is {}",
                    req.check
                ),
                subject: req.subject.masked(),
            };
            return self.reject(publisher, &r, now, &reply, stop).await;
        }
        let route = match self.registry.route(req.check, req.provider.as_deref()) {
            Ok(r) => r,
            Err(RouteError::NotEnabled(msg)) => {
                let r = Rejection {
                    request_id: req.request_id.clone(),
                    check: Some(req.check),
                    reason_code: ReasonCode::InvalidRequest,
                    reason: msg,
                    subject: req.subject.masked(),
                };
                return self.reject(publisher, &r, now, &reply, stop).await;
            }
        };
        let fingerprint = req
            .subject
            .fingerprint(self.pii_key.expose_secret().as_bytes());
        let waited = Waited::from_delivery(props);
        // The first call's slot, taken before the claim: its journal row is then written in the
        // claim's commit. Not for a redelivery or a request back from the wait queue: those are
        // often answered without a call (stored result, lease held elsewhere), and a storm of
        // them must not spend the provider's slots.
        let mut reserved = None;
        if !delivery.redelivered && waited.parks == 0 {
            match self.reserve_first(&req, &route, stop).await {
                Ok(r) => reserved = r,
                Err(Stopped) => return Ok(Disposition::Requeue),
            }
        }
        loop {
            let (received_at, fence, fresh, pre) = match self
                .claim(
                    publisher,
                    &req,
                    &fingerprint,
                    lease_owner,
                    stop,
                    &reply,
                    reserved.take(),
                )
                .await?
            {
                Claimed::Held(received_at, retry_round, fresh, pre) => (
                    received_at,
                    Fence {
                        owner: lease_owner.to_owned(),
                        retry_round,
                    },
                    fresh,
                    pre,
                ),
                Claimed::Answered => return Ok(self.finished_or_requeue(stop)),
                Claimed::Park(wait) => {
                    let park = waited.park(wait, waited.since(None, Utc::now()));
                    self.park(publisher, delivery, &park, "held_elsewhere")
                        .await?;
                    return Ok(Disposition::Ack);
                }
            };
            // Renewed until this scope ends, however it ends (a panic included).
            let held = self
                .leases
                .hold(&self.store, self.lease, &req.request_id, lease_owner);
            let outcome = self
                .run(
                    &req,
                    &route,
                    received_at,
                    &waited,
                    stop,
                    &Lease {
                        fence: &fence,
                        lost: &held.lost,
                        fresh,
                        first_call: pre,
                    },
                )
                .await;
            match outcome? {
                RouteOutcome::Requeue => {
                    self.store.release(&req.request_id, lease_owner).await?;
                    return Ok(Disposition::Requeue);
                }
                RouteOutcome::Park(park) => {
                    // Parked (confirmed) first: a crash before the release leaves a lease that
                    // runs out, never a request nobody holds.
                    self.park(publisher, delivery, &park, "no_provider").await?;
                    self.store.release(&req.request_id, lease_owner).await?;
                    return Ok(Disposition::Ack);
                }
                RouteOutcome::LeaseLost => {
                    warn!("lease lost to another worker; waiting for its result");
                    continue;
                }
                RouteOutcome::Done(result, dead_letter, call) => {
                    // A dead letter names its run: one of a run a retry has since superseded is
                    // stale, never retried again.
                    let dead_letter = dead_letter.map(|d| DeadLetter {
                        retry_round: Some(fence.retry_round),
                        ..d
                    });
                    if let Some(dl) = &dead_letter {
                        // Dead-letter first: a crash before the result is stored dead-letters
                        // again on redelivery (at least once), never zero times.
                        publisher
                            .dead_letter(&delivery.data, &traced, routing_key, dl)
                            .await?;
                        metrics::counter!("kycq_dead_letters_total", "reason" => dl.reason.clone())
                            .increment(1);
                    }
                    let Some(stored) = self
                        .complete(&result, &fingerprint, &fence, call.as_ref())
                        .await?
                    else {
                        warn!("lease lost before the result was stored; waiting for its result");
                        continue;
                    };
                    reply.send(publisher, &stored).await?;
                    record_result(&stored);
                    info!(
                        status = stored.status.as_str(),
                        reason_code = stored.reason_code.as_str(),
                        billed = stored.billed.as_str(),
                        provider = stored.provider.as_deref().unwrap_or(""),
                        attempts = stored.attempts,
                        subject = ?stored.subject,
                        "check finished"
                    );
                    return Ok(Disposition::Ack);
                }
            }
        }
    }

    /// Park the delivery in the wait queue (confirmed); the caller then acknowledges it.
    async fn park(
        &self,
        publisher: &Publisher,
        delivery: &Delivery,
        park: &Park,
        why: &'static str,
    ) -> Result<(), ProcessError> {
        publisher
            .park(
                &delivery.data,
                &delivery.properties,
                delivery.routing_key.as_str(),
                park,
            )
            .await?;
        metrics::counter!("kycq_parked_total", "reason" => why).increment(1);
        info!(
            reason = why,
            wait_ms = park.wait.as_millis() as u64,
            waiting_since = %park.waiting_since.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
            parks = park.parks + 1,
            "request parked in the wait queue; the worker slot is free"
        );
        Ok(())
    }

    fn finished_or_requeue(&self, stop: &CancellationToken) -> Disposition {
        if stop.is_cancelled() {
            Disposition::Requeue
        } else {
            Disposition::Ack
        }
    }

    /// Store (insert only: never over a claimed request) and publish a `rejected` result. While
    /// another delivery of the same request_id is being worked on, wait for its result.
    async fn reject(
        &self,
        publisher: &Publisher,
        r: &Rejection,
        now: DateTime<Utc>,
        reply: &Reply,
        stop: &CancellationToken,
    ) -> Result<Disposition, ProcessError> {
        let result = CheckResult::rejected(r, now, Utc::now());
        let mut delays = HELD_ELSEWHERE_WAIT.delays(None);
        let stored = loop {
            if let Some(stored) = self.store.insert_final(&result).await? {
                break stored;
            }
            let d = delays.next().unwrap_or(HELD_ELSEWHERE_WAIT.max);
            tokio::select! {
                _ = stop.cancelled() => return Ok(Disposition::Requeue),
                _ = tokio::time::sleep(d) => {}
            }
        };
        // The id holds another request's result (not this same rejection, delivered again):
        // that result is never sent to this one.
        let same = stored.status == Status::Rejected
            && stored.reason_code == r.reason_code
            && stored.check == r.check
            && stored.subject == r.subject;
        if !same {
            let conflict = Rejection {
                reason_code: ReasonCode::RequestIdConflict,
                reason: format!(
                    "request_id {} is already known for another request; the earlier result is \
                     never sent to this one (this one is also invalid: {})",
                    r.request_id, r.reason
                ),
                ..r.clone()
            };
            let known_check = stored.check.map(|c| c.as_str());
            self.conflict(publisher, &conflict, &stored.subject, known_check, reply)
                .await?;
            return Ok(Disposition::Ack);
        }
        reply.send(publisher, &stored).await?;
        record_result(&stored);
        info!(reason_code = stored.reason_code.as_str(), reason = %stored.reason, subject = ?stored.subject, "request rejected");
        Ok(Disposition::Ack)
    }

    /// Answer a request whose `request_id` is known for another subject or check: `rejected` /
    /// `request_id_conflict`, published (to the result exchange and `reply_to`) but never stored
    /// — the id's stored row and result stay the earlier request's, and are never sent to it.
    async fn conflict(
        &self,
        publisher: &Publisher,
        r: &Rejection,
        known_subject: &MaskedSubject,
        known_check: Option<&str>,
        reply: &Reply,
    ) -> Result<(), ProcessError> {
        let now = Utc::now();
        let result = CheckResult::rejected(r, now, now);
        reply.send(publisher, &result).await?;
        metrics::counter!("kycq_request_id_conflicts_total").increment(1);
        warn!(
            subject = ?r.subject,
            known_subject = ?known_subject,
            check = r.check.map_or("", |c| c.as_str()),
            known_check = known_check.unwrap_or(""),
            "request_id reused for another subject or check: answered request_id_conflict"
        );
        record_result(&result);
        Ok(())
    }

    /// Claim the request: held (we have the lease), answered (from the stored result, as a
    /// conflict, or we are stopping), or to be parked (another live worker holds it for longer
    /// than is worth waiting in the slot).
    #[allow(clippy::too_many_arguments)]
    async fn claim(
        &self,
        publisher: &Publisher,
        req: &CheckRequest,
        fingerprint: &str,
        lease_owner: &str,
        stop: &CancellationToken,
        reply: &Reply,
        mut reserved: Option<Reserved>,
    ) -> Result<Claimed, ProcessError> {
        let mut delays = HELD_ELSEWHERE_WAIT.delays(None);
        loop {
            // Only the first claim carries the reserved slot: after a wait it is stale.
            let reserved = reserved.take();
            match self
                .store
                .claim(
                    &req.request_id,
                    req.check,
                    &req.subject.masked(),
                    fingerprint,
                    lease_owner,
                    self.lease,
                    reserved.as_ref().map(|r| FirstCall {
                        provider: r.provider,
                        action: r.action,
                        worker: &self.worker_id,
                    }),
                )
                .await?
            {
                Claim::Claimed {
                    received_at,
                    retry_round,
                    fresh,
                    first_call,
                } => {
                    let pre = reserved.zip(first_call).map(|(r, call_id)| Prejournaled {
                        provider: r.provider,
                        call_id,
                        admitted: r.admitted,
                    });
                    return Ok(Claimed::Held(received_at, retry_round, fresh, pre));
                }
                Claim::Finished(stored) => {
                    reply.send(publisher, &stored).await?;
                    metrics::counter!("kycq_duplicates_total").increment(1);
                    info!(
                        status = stored.status.as_str(),
                        "duplicate or redelivery answered from the stored result"
                    );
                    return Ok(Claimed::Answered);
                }
                Claim::Conflict { subject, check } => {
                    let r = Rejection {
                        request_id: req.request_id.clone(),
                        check: Some(req.check),
                        reason_code: ReasonCode::RequestIdConflict,
                        reason: format!(
                            "request_id {} is already known for another {}; the earlier result is \
                             never sent to this request: send it under a new request_id",
                            req.request_id,
                            if check.as_deref() == Some(req.check.as_str()) {
                                "subject"
                            } else {
                                "check"
                            }
                        ),
                        subject: req.subject.masked(),
                    };
                    self.conflict(publisher, &r, &subject, check.as_deref(), reply)
                        .await?;
                    return Ok(Claimed::Answered);
                }
                Claim::Leased { owner, until } => {
                    // A live worker renews its lease; a dead one's lease runs out and we take
                    // over: never wait past its end.
                    let left = (until - Utc::now()).to_std().unwrap_or_default();
                    if let Waiting::Park(d) = self.wait.decide(left, None) {
                        return Ok(Claimed::Park(d));
                    }
                    let step = delays.next().unwrap_or(HELD_ELSEWHERE_WAIT.max);
                    let wait = step.min(left + Duration::from_millis(50));
                    tracing::debug!(%owner, ?wait, "request is being worked on by another worker");
                    tokio::select! {
                        _ = stop.cancelled() => return Ok(Claimed::Answered),
                        _ = tokio::time::sleep(wait) => {}
                    }
                }
            }
        }
    }

    /// Finish from the journal, or walk the route: the pure [`Plan`] says what happens next,
    /// this loop does the IO.
    async fn run(
        &self,
        req: &CheckRequest,
        route: &[&Entry],
        received_at: DateTime<Utc>,
        waited: &Waited,
        stop: &CancellationToken,
        lease: &Lease<'_>,
    ) -> Result<RouteOutcome, ProcessError> {
        let mut pre = lease.first_call;
        // A claim that created the row, or journaled the run's first call, found nothing
        // journaled: no read.
        let prior = if lease.fresh || pre.is_some() {
            Vec::new()
        } else {
            self.store.calls(&req.request_id).await?
        };
        let attempts = plan::journaled_attempts(&prior);
        if let Some(done) = plan::resume(&prior) {
            info!(
                calls = prior.len(),
                "finished from the call journal without calling again"
            );
            return Ok(finished(req, done, attempts, received_at, None));
        }
        let entry = |name: &str| {
            *route
                .iter()
                .find(|e| e.provider.name() == name)
                .expect("the plan walks this route")
        };
        let names = route.iter().map(|e| e.provider.name()).collect();
        let mut plan = Plan::new(names, self.policy, attempts, Instant::now(), None);
        let mut last_called = "";
        // The last call's outcome, not journaled yet.
        let mut unjournaled: Option<Unjournaled> = None;
        loop {
            let now = Instant::now();
            let step = plan.next(now, |p| entry(p).circuit.reopens_at(now));
            // An answer that decides the request is journaled in the same commit as its result;
            // anything else (a retry, a wait, a failure that is dead-lettered first) journals it
            // now.
            if let Some((id, reply)) = &unjournaled {
                if !matches!(step, Step::Finish(Finish::Answered(..))) {
                    self.finish_call(*id, reply).await?;
                    unjournaled = None;
                }
            }
            // The first call journaled with the claim is for this step's provider, unless its
            // circuit opened in between: then it is journaled as not sent, and counted.
            if let Some(p) = pre.filter(|p| !matches!(step, Step::Call(c) if c == p.provider)) {
                pre = None;
                let not_sent = ProviderReply::transport(
                    Classification::TRANSIENT,
                    None,
                    "not sent: the provider's circuit opened before the call",
                );
                self.finish_call(p.call_id, &not_sent).await?;
                plan.skip_attempt();
                continue;
            }
            match step {
                Step::Call(provider) => {
                    last_called = provider;
                    let e = entry(provider);
                    let attempt = plan.attempts() + 1;
                    let (call_id, reply) =
                        match self.call(req, e, attempt, stop, lease, pre.take()).await? {
                            Called::Replied(id, reply) => (id, reply),
                            Called::Stopped => return Ok(RouteOutcome::Requeue),
                            Called::LeaseLost => return Ok(RouteOutcome::LeaseLost),
                        };
                    crate::failpoint::hit("answer_received");
                    let kept = reply.clone();
                    e.note_reply(&reply);
                    let circuit = plan.record(provider, reply, Instant::now());
                    let reply = &unjournaled.insert((call_id, kept)).1;
                    match circuit {
                        plan::Circuit::Keep => {}
                        plan::Circuit::Reset => e.circuit.reset(),
                        plan::Circuit::Trip => {
                            warn!(
                                provider,
                                cooldown_s = e.cooldown.as_secs(),
                                "provider-wide failure: circuit opened"
                            );
                            metrics::counter!("kycq_circuit_open_total", "provider" => provider)
                                .increment(1);
                            e.circuit
                                .trip(Instant::now(), e.cooldown, TripReason::of(reply));
                        }
                    }
                }
                Step::Sleep(d) => {
                    metrics::counter!("kycq_retries_total", "provider" => last_called).increment(1);
                    tokio::select! {
                        _ = stop.cancelled() => return Ok(RouteOutcome::Requeue),
                        _ = tokio::time::sleep(d) => {}
                    }
                }
                Step::WaitForCircuit(until) => {
                    // Every provider of the route is out (provider-wide failures): a short wait
                    // in the slot; a longer one in the wait queue, the slot free; past the
                    // maximum wait, the request ends provider_unavailable.
                    let left = until.saturating_duration_since(now);
                    let now_utc = Utc::now();
                    let since = waited.since(Some(received_at), now_utc);
                    let so_far = (now_utc - since).to_std().unwrap_or_default();
                    match self.wait.decide(left, Some(so_far)) {
                        Waiting::InSlot(d) => {
                            tokio::select! {
                                _ = stop.cancelled() => return Ok(RouteOutcome::Requeue),
                                _ = tokio::time::sleep(d) => {}
                            }
                        }
                        Waiting::Park(d) => {
                            warn!(
                                wait_s = left.as_secs(),
                                waited_s = so_far.as_secs(),
                                "no provider available for this check; parking the request"
                            );
                            return Ok(RouteOutcome::Park(waited.park(d, since)));
                        }
                        Waiting::GiveUp => {
                            warn!(
                                waited_s = so_far.as_secs(),
                                "no provider came back within worker.max_wait_secs: provider_unavailable"
                            );
                            return Ok(finished(
                                req,
                                plan.unavailable(),
                                plan.attempts(),
                                received_at,
                                None,
                            ));
                        }
                    }
                }
                Step::Finish(f) => {
                    return Ok(finished(
                        req,
                        f,
                        plan.attempts(),
                        received_at,
                        unjournaled.take(),
                    ))
                }
            }
        }
    }

    /// One call to `entry`'s provider as attempt `attempt`: a slot in the shared bucket, the
    /// journal row committed before it is sent (or the row journaled with the claim, `pre`),
    /// the call. Its outcome is journaled by the caller.
    async fn call(
        &self,
        req: &CheckRequest,
        entry: &Entry,
        attempt: u32,
        stop: &CancellationToken,
        lease: &Lease<'_>,
        pre: Option<Prejournaled>,
    ) -> Result<Called, ProcessError> {
        let provider = entry.provider.name();
        let action = entry
            .provider
            .action(req.check)
            .expect("routes only hold supporting providers");
        let (call_id, admitted) = match pre {
            Some(p) => (p.call_id, p.admitted),
            None => {
                if stop.is_cancelled() {
                    return Ok(Called::Stopped);
                }
                let Some(admitted) = self.admit_recorded(provider, action, stop).await else {
                    return Ok(Called::Stopped);
                };
                if lease.lost.load(Ordering::SeqCst) {
                    return Ok(Called::LeaseLost);
                }
                let Some(call_id) = self
                    .store
                    .begin_call(
                        &req.request_id,
                        provider,
                        action,
                        attempt,
                        &self.worker_id,
                        lease.fence,
                    )
                    .await?
                else {
                    return Ok(Called::LeaseLost);
                };
                (call_id, admitted)
            }
        };
        // Journaled, not sent yet. The call is written once a connection is ready and the slot
        // gate lets it go; a refusal (stopping, a lost lease) is journaled as not sent.
        let gate = SlotGate {
            processor: self,
            provider,
            action,
            stop,
            lost: lease.lost,
            admitted: Mutex::new(admitted),
            refused: Mutex::new(None),
        };
        // Vendor text may echo what it was sent, or hold what Postgres refuses (a NUL): it goes
        // into the journal, results and logs.
        let span = crate::telemetry::provider_call_span(provider, action, attempt, call_id);
        let reply = entry
            .provider
            .call_when(req, &gate)
            .instrument(span.clone())
            .await
            .sanitized(&req.subject);
        crate::telemetry::record_provider_reply(&span, &reply);
        let refused = *gate.refused.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(refused) = refused {
            self.finish_call(call_id, &reply).await?;
            return Ok(match refused {
                Refused::Stopped => Called::Stopped,
                Refused::LeaseLost => Called::LeaseLost,
            });
        }
        let elapsed = gate
            .admitted
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .elapsed();
        record_call(provider, &reply, elapsed);
        info!(
            provider,
            action,
            attempt,
            outcome = reply.classification.class.as_str(),
            billed = reply.classification.billed.as_str(),
            code = reply.provider_code.as_deref().unwrap_or(""),
            http_status = reply.http_status,
            ms = elapsed.as_millis() as u64,
            "provider call"
        );
        if reply.classification.throttled {
            self.limiter.throttled(provider, action).await;
        }
        // Its outcome is journaled by the caller, with the result when it decides the request.
        Ok(Called::Replied(call_id, reply))
    }

    /// A slot for `provider`/`action` (see [`Processor::admit`]), its wait recorded: when it
    /// was granted, or None when stopped first.
    async fn admit_recorded(
        &self,
        provider: &'static str,
        action: &str,
        stop: &CancellationToken,
    ) -> Option<Instant> {
        let waited = self.admit(provider, action, stop).await?;
        metrics::histogram!("kycq_ratelimit_wait_seconds", "provider" => provider)
            .record(waited.as_secs_f64());
        Some(Instant::now())
    }

    /// The slot of the request's first call, taken before the claim so that the call's journal
    /// row is written in the claim's commit: the provider the plan would call first (None when
    /// its circuit, and every other's, is open: the run decides then), or Err when stopped.
    async fn reserve_first(
        &self,
        req: &CheckRequest,
        route: &[&Entry],
        stop: &CancellationToken,
    ) -> Result<Option<Reserved>, Stopped> {
        let now = Instant::now();
        let names = route.iter().map(|e| e.provider.name()).collect();
        let first = Plan::new(names, self.policy, 0, now, None).next(now, |p| {
            route
                .iter()
                .find(|e| e.provider.name() == p)
                .and_then(|e| e.circuit.reopens_at(now))
        });
        let Step::Call(provider) = first else {
            return Ok(None);
        };
        let action = route
            .iter()
            .find(|e| e.provider.name() == provider)
            .and_then(|e| e.provider.action(req.check))
            .expect("routes only hold supporting providers");
        match self.admit_recorded(provider, action, stop).await {
            Some(admitted) => Ok(Some(Reserved {
                provider,
                action,
                admitted,
            })),
            None => Err(Stopped),
        }
    }
}

/// Why a [`SlotGate`] kept a call from leaving.
#[derive(Clone, Copy, Debug)]
enum Refused {
    /// The worker is stopping.
    Stopped,
    /// Another worker took the request over.
    LeaseLost,
}

/// The last check before a journaled call is written, run once its connection is ready: the
/// worker is not stopping, the lease is still ours, and the slot is not older than its bucket
/// allows (`jitter_margin`). A slot outlasted — a slow journal write, a connection that took
/// long, a busy machine — is not used late: a fresh one is taken and waited for, so calls do
/// not bunch at the vendor.
struct SlotGate<'a> {
    processor: &'a Processor,
    provider: &'static str,
    action: &'a str,
    stop: &'a CancellationToken,
    lost: &'a AtomicBool,
    /// When the slot in use came; after `pass`, when the call left.
    admitted: Mutex<Instant>,
    refused: Mutex<Option<Refused>>,
}

impl SlotGate<'_> {
    fn refuse(&self, why: Refused) {
        *self.refused.lock().unwrap_or_else(|p| p.into_inner()) = Some(why);
    }

    /// Take and wait for a fresh slot (the one in use cannot be used); refused when the worker
    /// stops meanwhile (`while_` says what it was doing).
    async fn fresh_slot(&self, while_: &str) -> Result<(), String> {
        if self
            .processor
            .admit(self.provider, self.action, self.stop)
            .await
            .is_none()
        {
            self.refuse(Refused::Stopped);
            return Err(format!("the worker stopped while {while_}"));
        }
        *self.admitted.lock().unwrap_or_else(|p| p.into_inner()) = Instant::now();
        Ok(())
    }
}

#[async_trait::async_trait]
impl Gate for SlotGate<'_> {
    async fn pass(&self) -> Result<(), String> {
        let (provider, action) = (self.provider, self.action);
        loop {
            if self.stop.is_cancelled() {
                self.refuse(Refused::Stopped);
                return Err("the worker stopped".into());
            }
            if self.lost.load(Ordering::SeqCst) {
                self.refuse(Refused::LeaseLost);
                return Err("another worker took the request over".into());
            }
            // The vendor said "throttled" after this slot was reserved: wait out the pause,
            // then take a fresh slot (the shared schedule starts after the pause).
            if let Some(until) = self.processor.limiter.paused_until(provider, action) {
                metrics::counter!("kycq_ratelimit_pushed_back_total", "provider" => provider)
                    .increment(1);
                tracing::debug!(
                    provider,
                    pause_ms = until.saturating_duration_since(Instant::now()).as_millis() as u64,
                    "bucket paused (throttled) after this slot was reserved: waiting it out"
                );
                tokio::select! {
                    _ = self.stop.cancelled() => continue,
                    _ = tokio::time::sleep_until(until) => {}
                }
                self.fresh_slot("waiting out a pause").await?;
                continue;
            }
            let admitted = *self.admitted.lock().unwrap_or_else(|p| p.into_inner());
            let late = admitted.elapsed();
            if late <= self.processor.limiter.max_lateness(provider, action) {
                *self.admitted.lock().unwrap_or_else(|p| p.into_inner()) = Instant::now();
                return Ok(());
            }
            metrics::counter!("kycq_ratelimit_late_total", "provider" => provider).increment(1);
            tracing::debug!(
                provider,
                late_ms = late.as_millis() as u64,
                "the slot's margin passed before the call could leave: taking a fresh slot"
            );
            self.fresh_slot("waiting for a fresh slot").await?;
        }
    }
}

/// A slot taken before the claim for the request's first call.
struct Reserved {
    provider: &'static str,
    action: &'static str,
    admitted: Instant,
}

/// The run's first call, journaled in the claim's commit (its slot taken before).
#[derive(Clone, Copy)]
struct Prejournaled {
    provider: &'static str,
    call_id: i64,
    admitted: Instant,
}

/// The worker is stopping.
struct Stopped;

/// The claim a run works under: what fences its writes, and whether the lease renewer lost it.
struct Lease<'a> {
    fence: &'a Fence,
    lost: &'a AtomicBool,
    /// The claim created the row: nothing is journaled yet.
    fresh: bool,
    /// The run's first call, journaled with the claim.
    first_call: Option<Prejournaled>,
}

/// How one call went.
enum Called {
    /// The provider replied (or the failure was classified): the journal row and the reply,
    /// whose outcome is not journaled yet.
    Replied(i64, ProviderReply),
    /// The worker is stopping; nothing was sent.
    Stopped,
    /// Another worker took the request over.
    LeaseLost,
}

impl Processor {
    /// Wait for a slot of `provider`/`action`: how long it took, or None when stopped first.
    /// Saturated means nothing was reserved: wait unreserved (the backlog stays in the queue:
    /// this task takes no new delivery) and ask again. Never nacked: requeue loops would
    /// dead-letter a healthy backlog.
    async fn admit(
        &self,
        provider: &str,
        action: &str,
        stop: &CancellationToken,
    ) -> Option<Duration> {
        let asked = Instant::now();
        loop {
            let r = tokio::select! {
                _ = stop.cancelled() => return None,
                r = self.limiter.acquire(provider, action) => r,
            };
            let Err(Saturated { retry_after }) = r else {
                return Some(asked.elapsed());
            };
            tokio::select! {
                _ = stop.cancelled() => return None,
                _ = tokio::time::sleep(retry_after) => {}
            }
        }
    }
}

/// The result (and dead letter) a finished plan ends with; counted and logged.
fn finished(
    req: &CheckRequest,
    f: Finish,
    attempts: u32,
    received_at: DateTime<Utc>,
    unjournaled: Option<Unjournaled>,
) -> RouteOutcome {
    let (provider, reply, failure) = match f {
        Finish::Answered(p, r) => (p, r, None),
        Finish::BillingUnknown(p, r) => (
            p,
            r,
            Some((
                ReasonCode::BillingUnknown,
                Billed::Unknown,
                "billing_unknown",
            )),
        ),
        Finish::RetriesExhausted(p, r) => (
            p,
            r,
            Some((
                ReasonCode::RetriesExhausted,
                Billed::No,
                "retries_exhausted",
            )),
        ),
        Finish::ProviderUnavailable(p, r) => (
            p,
            r,
            Some((
                ReasonCode::ProviderUnavailable,
                Billed::No,
                "provider_unavailable",
            )),
        ),
    };
    let call = FromCall {
        request: req,
        provider,
        reply: &reply,
        attempts,
        received_at,
        completed_at: Utc::now(),
    };
    if let Some((reason, billed, dead_letter)) = failure {
        let r = CheckResult::failed(&call, reason, billed);
        let dead = DeadLetter {
            reason: dead_letter.into(),
            detail: r.reason.clone(),
            attempts,
            request_id: Some(req.request_id.clone()),
            retry_round: None, // stamped with the claim's run by the caller
        };
        return RouteOutcome::Done(Box::new(r), Some(dead), unjournaled);
    }
    match reply.classification.class {
        OutcomeClass::InvalidField | OutcomeClass::RequestRefused => {
            metrics::counter!("kycq_provider_invalid_input_total", "provider" => provider)
                .increment(1);
        }
        OutcomeClass::UnknownCode => {
            metrics::counter!("kycq_unknown_provider_codes_total", "provider" => provider, "code" => reply.provider_code.clone().unwrap_or_default()).increment(1);
            warn!(provider, code = reply.provider_code.as_deref().unwrap_or(""), detail = %reply.detail, "provider answered a code not in kycq's tables");
        }
        _ => {}
    }
    RouteOutcome::Done(Box::new(CheckResult::answered(&call)), None, unjournaled)
}

fn record_call(provider: &'static str, reply: &ProviderReply, elapsed: Duration) {
    let c = &reply.classification;
    metrics::histogram!("kycq_provider_call_seconds", "provider" => provider)
        .record(elapsed.as_secs_f64());
    metrics::counter!("kycq_provider_calls_total", "provider" => provider, "outcome" => c.class.as_str(), "billed" => c.billed.as_str()).increment(1);
    if c.billed == Billed::Yes {
        metrics::counter!("kycq_billed_calls_total", "provider" => provider).increment(1);
    }
}

fn record_result(r: &CheckResult) {
    metrics::counter!(
        "kycq_checks_total",
        "status" => r.status.as_str(),
        "verdict" => r.verdict.map_or("", |v| v.as_str()),
        "reason_code" => r.reason_code.as_str(),
        "provider" => r.provider.clone().unwrap_or_default()
    )
    .increment(1);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
    }

    #[test]
    fn the_waiting_since_header_is_clamped_by_what_postgres_and_the_clock_say() {
        let received = at("2026-12-02T10:00:00Z");
        let now = at("2026-12-02T10:05:00Z");
        let w = |h: Option<&str>| Waited {
            since: h.map(at),
            parks: 0,
        };
        // kycq's own header, set when it first parked the request.
        assert_eq!(
            w(Some("2026-12-02T10:01:00Z")).since(Some(received), now),
            at("2026-12-02T10:01:00Z")
        );
        // A client's forged header can neither end the wait at once nor make it endless.
        assert_eq!(
            w(Some("2000-01-01T00:00:00Z")).since(Some(received), now),
            received
        );
        assert_eq!(
            w(Some("2999-01-01T00:00:00Z")).since(Some(received), now),
            now
        );
        assert_eq!(w(Some("2999-01-01T00:00:00Z")).since(None, now), now);
        // No header: the wait starts now.
        assert_eq!(w(None).since(Some(received), now), now);
    }

    #[test]
    fn the_waiting_headers_are_read_back() {
        use lapin::types::{AMQPValue, FieldTable, LongString};
        let mut h = FieldTable::default();
        h.insert(
            headers::WAITING_SINCE.into(),
            AMQPValue::LongString(LongString::from("2026-12-02T10:01:00.000Z")),
        );
        h.insert(headers::PARKS.into(), AMQPValue::LongInt(3));
        let w = Waited::from_delivery(&lapin::BasicProperties::default().with_headers(h));
        assert_eq!(w.since, Some(at("2026-12-02T10:01:00Z")));
        assert_eq!(w.parks, 3);
        let none = Waited::from_delivery(&lapin::BasicProperties::default());
        assert_eq!((none.since, none.parks), (None, 0));
    }
}
