//! The consumer: connects (and reconnects with backoff), declares the topology, consumes with
//! prefetch and bounded concurrency, and drains in-flight work on shutdown.

pub mod acks;
pub mod heartbeat;
pub mod leases;
pub mod plan;
pub mod process;

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use lapin::options::{BasicCancelOptions, BasicConsumeOptions, BasicQosOptions};
use lapin::types::FieldTable;
use tokio::sync::Semaphore;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use tracing::{error, info, warn};

use crate::broker::{self, BrokerError, DeadLetter, Publisher};
use crate::configuration::{env_name, ConfigError, Names};
use crate::fault::{FaultClass, INFRA_BACKOFF};
use acks::Acker;
pub use process::{Disposition, ProcessError, Processor};

/// How the consumer connects and how much it takes at once.
#[derive(Clone, Debug)]
pub struct ConsumerConfig {
    /// Broker URLs: one node, or the nodes of a cluster (the first that answers, in a rotating
    /// order: a reconnection after a node stops goes to another, `broker::connect_any`).
    pub amqp_urls: Vec<secrecy::SecretString>,
    /// Object names.
    pub names: Names,
    /// basic.qos prefetch.
    pub prefetch: u16,
    /// Work queue delivery limit.
    pub delivery_limit: u32,
    /// Concurrent deliveries.
    pub concurrency: usize,
    /// Drain time after a stop signal.
    pub shutdown_grace: Duration,
    /// Publisher confirm timeout.
    pub confirm_timeout: Duration,
    /// The longest provider call (its timeout): in-flight calls get this long after a hard stop.
    pub call_timeout: Duration,
}

/// Liveness facts the readiness endpoint reports.
#[derive(Debug, Default)]
pub struct WorkerState {
    /// Consuming from the work queue right now.
    pub consuming: AtomicBool,
    /// Deliveries being processed right now (taken from the queue, not yet settled).
    pub in_flight: AtomicUsize,
    /// A misconfiguration of RabbitMQ met at run time (cleared once consuming again).
    broker_problem: std::sync::Mutex<Option<String>>,
    /// A misconfiguration of Postgres met at run time (cleared by the next processed message).
    store_problem: std::sync::Mutex<Option<String>>,
}

/// Which service a run-time misconfiguration is about.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Service {
    Broker,
    Store,
}

/// Counts one delivery in [`WorkerState::in_flight`] for as long as it lives.
struct InFlight(Arc<WorkerState>);

impl InFlight {
    fn start(state: &Arc<WorkerState>) -> InFlight {
        state.in_flight.fetch_add(1, Ordering::Relaxed);
        InFlight(state.clone())
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::Relaxed);
    }
}

impl WorkerState {
    /// What is misconfigured right now, as met at run time.
    pub fn problems(&self) -> Vec<String> {
        [&self.broker_problem, &self.store_problem]
            .into_iter()
            .filter_map(|p| p.lock().unwrap_or_else(|p| p.into_inner()).clone())
            .collect()
    }

    fn slot(&self, service: Service) -> &std::sync::Mutex<Option<String>> {
        match service {
            Service::Broker => &self.broker_problem,
            Service::Store => &self.store_problem,
        }
    }

    fn set_problem(&self, service: Service, why: String) {
        *self.slot(service).lock().unwrap_or_else(|p| p.into_inner()) = Some(why);
    }

    fn clear_problem(&self, service: Service) {
        let mut p = self.slot(service).lock().unwrap_or_else(|p| p.into_inner());
        if p.is_some() {
            *p = None;
        }
    }
}

/// Why the worker stopped without being asked to.
#[derive(Debug, thiserror::Error)]
pub enum WorkerError {
    /// The topology on the broker conflicts with the configuration: operator action needed.
    #[error(transparent)]
    Topology(BrokerError),
    /// The broker refused the first connection for good (credentials, virtual host).
    #[error(transparent)]
    Misconfigured(crate::configuration::ConfigError),
}

/// Run until `shutdown` is cancelled: then stop consuming, give in-flight work
/// `shutdown_grace` to finish, return the rest to the queue, and return.
pub async fn run(
    cfg: ConsumerConfig,
    processor: Arc<Processor>,
    state: Arc<WorkerState>,
    shutdown: CancellationToken,
) -> Result<(), WorkerError> {
    let hard_stop = CancellationToken::new();
    let mut tasks = JoinSet::new();
    let semaphore = Arc::new(Semaphore::new(cfg.concurrency));
    let mut delays = INFRA_BACKOFF.delays(None);
    let mut connected_once = false;
    let mut session: Option<Session> = None;
    let mut fatal = None;
    while !shutdown.is_cancelled() {
        match consume(
            &cfg, &processor, &state, &shutdown, &hard_stop, &semaphore, &mut tasks,
        )
        .await
        {
            Ok(s) => {
                session = Some(s);
                break;
            }
            Err(e @ BrokerError::Inequivalent { .. }) => {
                // Operator action needed; finish what is in flight first.
                fatal = Some(WorkerError::Topology(e));
                break;
            }
            Err(e) => {
                if state.consuming.swap(false, Ordering::SeqCst) {
                    // It was consuming: a fresh outage starts from the shortest delay.
                    connected_once = true;
                    delays = INFRA_BACKOFF.delays(None);
                }
                if let FaultClass::Misconfigured { key } = crate::fault::classify_broker(&e) {
                    let why = format!("RabbitMQ refuses the connection: {e}");
                    if !connected_once {
                        // Nothing runs yet: stop, naming the key (exit code 2).
                        fatal = Some(WorkerError::Misconfigured(ConfigError::Invalid {
                            key: key.to_owned(),
                            env: env_name(key),
                            reason: why,
                        }));
                        break;
                    }
                    // Credentials changed under a running worker: keep trying, say why.
                    state.set_problem(Service::Broker, format!("{key} ({}): {why}", env_name(key)));
                }
                let delay = delays.next().unwrap_or(INFRA_BACKOFF.max);
                warn!(error = %e, retry_in_ms = delay.as_millis() as u64, "broker unavailable; reconnecting");
                tokio::select! {
                    _ = shutdown.cancelled() => break,
                    _ = tokio::time::sleep(delay) => {}
                }
            }
        }
    }
    state.consuming.store(false, Ordering::SeqCst);
    if let Some(s) = &session {
        let _ = s
            .channel
            .basic_cancel(s.tag.as_str().into(), BasicCancelOptions::default())
            .await;
    }
    drain(&mut tasks, cfg.shutdown_grace, cfg.call_timeout, &hard_stop).await;
    if let Some(s) = session {
        // What the drained tasks reported is sent before the channel closes; what is still in
        // flight returns to the queue with it.
        s.acker.finish(cfg.confirm_timeout).await;
        s.publisher.close().await;
        let _ = s.channel.close(200, "shutdown".into()).await;
        let _ = s.conn.close(200, "shutdown".into()).await;
    }
    fatal.map_or(Ok(()), Err)
}

/// A consuming connection, kept to be closed in order at shutdown.
struct Session {
    conn: lapin::Connection,
    channel: lapin::Channel,
    tag: String,
    /// Settles this channel's deliveries (tags are per channel: a new channel, a new acker).
    acker: Acker,
    publisher: Arc<Publisher>,
}

/// One connection's life: returns the session when shutdown was requested, Err when the
/// connection failed (the caller reconnects; the old channel's acker settles what its tasks
/// still report, then ends).
async fn consume(
    cfg: &ConsumerConfig,
    processor: &Arc<Processor>,
    state: &Arc<WorkerState>,
    shutdown: &CancellationToken,
    hard_stop: &CancellationToken,
    semaphore: &Arc<Semaphore>,
    tasks: &mut JoinSet<()>,
) -> Result<Session, BrokerError> {
    let conn = broker::connect_any(
        &cfg.amqp_urls,
        &format!("kycq worker {}", processor.worker_id),
    )
    .await?;
    broker::declare_topology(&conn, &cfg.names, cfg.delivery_limit).await?;
    // Shared by every delivery's task (an Arc, not a clone of its names per delivery).
    let publisher = Arc::new(
        Publisher::new(&conn, cfg.names.clone(), cfg.confirm_timeout)
            .await?
            .with_replies(
                cfg.amqp_urls.clone(),
                &format!("kycq worker {}", processor.worker_id),
            ),
    );
    let channel = conn.create_channel().await?;
    channel
        .basic_qos(cfg.prefetch, BasicQosOptions::default())
        .await?;
    let tag = format!("kycq-{}", processor.worker_id);
    let mut consumer = channel
        .basic_consume(
            cfg.names.work_queue.as_str().into(),
            tag.as_str().into(),
            BasicConsumeOptions::default(),
            FieldTable::default(),
        )
        .await?;
    let acker = Acker::start(channel.clone());
    state.consuming.store(true, Ordering::SeqCst);
    state.clear_problem(Service::Broker);
    info!(queue = %cfg.names.work_queue, prefetch = cfg.prefetch, concurrency = cfg.concurrency, "consuming");
    loop {
        if !publisher.is_connected() {
            return Err(BrokerError::NotConfirmed(
                cfg.names.results.clone(),
                "the publishing channel closed".into(),
            ));
        }
        while let Some(done) = tasks.try_join_next() {
            if let Err(e) = done {
                error!(error = %e, "a processing task panicked; its delivery returns to the queue");
            }
        }
        // A free slot, then the next delivery; a stop signal ends the wait for either.
        let ready = tokio::select! {
            _ = shutdown.cancelled() => None,
            ready = async {
                let permit = semaphore.clone().acquire_owned().await.expect("semaphore never closes");
                (permit, consumer.next().await)
            } => Some(ready),
        };
        let Some((permit, next)) = ready else {
            return Ok(Session {
                conn,
                channel,
                tag,
                acker,
                publisher,
            });
        };
        let delivery = match next {
            Some(Ok(d)) => d,
            Some(Err(e)) => return Err(e.into()),
            None => {
                return Err(BrokerError::Amqp(
                    lapin::ErrorKind::InvalidChannelState(
                        lapin::ChannelState::Closed,
                        "the consumer ended",
                    )
                    .into(),
                ))
            }
        };
        let processor = processor.clone();
        let publisher = publisher.clone();
        let state = state.clone();
        let stop = hard_stop.clone();
        let settle = acker.delivered(delivery.delivery_tag);
        let in_flight = InFlight::start(&state);
        tasks.spawn(async move {
            let _permit = permit;
            let _in_flight = in_flight;
            // Boxed: the processing future is tens of kilobytes, and a task's future is moved
            // several times as it is spawned and run (callgrind: a sixth of the worker's
            // instructions were those copies); a box is moved as a pointer.
            let disposition = Box::pin(settle_with_retries(
                &processor, &publisher, &state, &delivery, &stop,
            ))
            .await;
            // Acknowledged (with others, when they are done too) or requeued by the acker.
            settle.report(disposition);
        });
    }
}

/// Process one delivery. A failure of kycq's own infrastructure (Postgres, a publish) is
/// classified once ([`crate::fault`]):
///
/// - transient or misconfiguration: retried here with the shared backoff, holding the delivery
///   (a nack would count towards the quorum queue's delivery limit and dead-letter a healthy
///   request during an outage); a misconfiguration is shown by `/readyz` meanwhile;
/// - deterministic for this message (a value Postgres refuses, a stored result that cannot be
///   read): the message is dead-lettered with its reason and acknowledged, never retried.
///
/// A panic returns the delivery to the queue.
async fn settle_with_retries(
    processor: &Processor,
    publisher: &Publisher,
    state: &WorkerState,
    delivery: &lapin::message::Delivery,
    stop: &CancellationToken,
) -> Disposition {
    use futures::FutureExt;
    let lease_owner = processor.lease_owner();
    let mut delays = INFRA_BACKOFF.delays(None);
    loop {
        let attempt = std::panic::AssertUnwindSafe(processor.process(
            publisher,
            delivery,
            stop,
            &lease_owner,
        ));
        let e = match attempt.catch_unwind().await {
            Ok(Ok(d)) => {
                state.clear_problem(Service::Store);
                state.clear_problem(Service::Broker);
                return d;
            }
            Ok(Err(e)) => e,
            Err(_) => {
                error!("a processing task panicked; the delivery returns to the queue");
                return Disposition::Requeue;
            }
        };
        if !publisher.is_connected() {
            // This connection is gone: the broker redelivers the message elsewhere.
            warn!(error = %e, "processing failed and the broker connection is gone");
            return Disposition::Requeue;
        }
        let class = e.class();
        match class {
            FaultClass::Deterministic { reason } => {
                match dead_letter_unprocessable(publisher, delivery, reason, &e).await {
                    Ok(()) => return Disposition::Ack,
                    Err(dl) => {
                        warn!(error = %dl, "dead-lettering an unprocessable message failed; retrying")
                    }
                }
            }
            FaultClass::Misconfigured { key } => {
                let service = match e {
                    ProcessError::Store(_) => Service::Store,
                    ProcessError::Broker(_) => Service::Broker,
                };
                state.set_problem(
                    service,
                    format!("{key} ({}) looks misconfigured: {e}", env_name(key)),
                );
            }
            FaultClass::Transient => {}
        }
        let delay = delays.next().unwrap_or(INFRA_BACKOFF.max);
        error!(error = %e, ?class, retry_in_ms = delay.as_millis() as u64, "processing failed on kycq's own infrastructure; retrying this delivery");
        tokio::select! {
            _ = stop.cancelled() => return Disposition::Requeue,
            _ = tokio::time::sleep(delay) => {}
        }
    }
}

/// Dead-letter a message that fails the same way every time, with its reason.
async fn dead_letter_unprocessable(
    publisher: &Publisher,
    delivery: &lapin::message::Delivery,
    reason: &'static str,
    e: &ProcessError,
) -> Result<(), BrokerError> {
    let today = chrono::Utc::now().date_naive();
    let request_id = crate::check::decode(&delivery.data, today)
        .ok()
        .map(|d| d.request_id().to_owned());
    let dl = DeadLetter {
        reason: reason.to_owned(),
        detail: e.operator_detail(),
        attempts: 0,
        request_id,
        retry_round: None,
    };
    publisher
        .dead_letter(
            &delivery.data,
            &delivery.properties,
            delivery.routing_key.as_str(),
            &dl,
        )
        .await?;
    metrics::counter!("kycq_dead_letters_total", "reason" => reason).increment(1);
    error!(reason, detail = %dl.detail, "message dead-lettered: kycq cannot process it (the same every time)");
    Ok(())
}

async fn drain(
    tasks: &mut JoinSet<()>,
    grace: Duration,
    call_timeout: Duration,
    hard_stop: &CancellationToken,
) {
    while tasks.try_join_next().is_some() {}
    if tasks.is_empty() {
        return;
    }
    info!(
        in_flight = tasks.len(),
        grace_s = grace.as_secs(),
        "draining in-flight work"
    );
    let all = async { while tasks.join_next().await.is_some() {} };
    if tokio::time::timeout(grace, all).await.is_ok() {
        return;
    }
    // Past the grace period: work not yet sent to a provider is requeued at its next safe point.
    warn!(
        left = tasks.len(),
        "grace period over: returning unfinished work to the queue"
    );
    hard_stop.cancel();
    let rest = async { while tasks.join_next().await.is_some() {} };
    // Calls already sent finish (or time out) on their own: aborting them would turn answers
    // into billing_unknown.
    if tokio::time::timeout(call_timeout + Duration::from_secs(2), rest)
        .await
        .is_err()
    {
        warn!(
            left = tasks.len(),
            "aborting calls still in flight; their requests will be redelivered"
        );
        tasks.abort_all();
        while tasks.join_next().await.is_some() {}
    }
}
