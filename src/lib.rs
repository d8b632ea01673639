//! kycq — identity-verification (KYC) checks from RabbitMQ, under a shared rate limit, with exactly
//! one stored result per request.
//!
//! # Layout
//!
//! - [`check`]: the domain — request decoding and validation, PII types that mask themselves,
//!   the classes of a provider call's outcome, results built from them, statuses and the shared
//!   reason-code table. Pure code that depends on nothing above it.
//! - [`configuration`]: the settings tree, layered loading (file → env file → `KYCQ__*`), validation
//!   that names the bad key.
//! - [`telemetry`]: tracing subscriber (pretty or JSON) and the Prometheus recorder.
//! - [`providers`]: the [`providers::Provider`] seam; the vendor registry (`VENDORS`: a vendor is
//!   one folder and one line), routing and circuit breaking; one outcome table for HTTP statuses
//!   and transport failures; one folder per vendor with the same files (`settings`, `request`,
//!   `client`, `answer`, `wire`, `codes`) and pure request signing.
//! - [`fault`]: kycq's own failures (Postgres, RabbitMQ) classified once: transient, deterministic
//!   for one message (dead-lettered), misconfiguration.
//! - [`retry`]: the one `Backoff` type, the provider retry policy and the decision taken for each
//!   outcome class.
//! - [`ratelimit`]: the per-provider (or per-API) bucket every outbound call goes through, shared
//!   by all workers in Redis, with a per-worker governor fallback.
//! - [`store`]: Postgres — claims with leases, stored results, the provider-call journal.
//! - [`broker`]: RabbitMQ — topology, confirmed publishing, dead letters.
//! - [`worker`]: the consumer loop (prefetch, bounded concurrency, graceful drain), the pure state
//!   machine that decides what happens next for a request (and when a waiting request parks in
//!   the wait queue), and the IO of one delivery.
//! - [`sandbox`]: kycq's own stand-in for the providers' wire protocols (one folder per vendor, its
//!   route taken from the vendor registry), with a call ledger.
//! - [`startup`]: wires settings into a running worker (pools, broker, providers, limiter, HTTP).
//! - [`ops`]: health/readiness/metrics HTTP (up from the first second), `doctor`, `enqueue`
//!   (local validation, exit codes, CSV), `status`, `dlq` (what each dead letter allows; retry,
//!   resolve, replay, purge), `demo`, `loadgen`.
//! - [`cli`]: the `kycq` command line.

pub mod broker;
pub mod check;
pub mod cli;
pub mod client;
pub mod configuration;
pub mod console;
pub mod failpoint;
pub mod fault;
pub mod ops;
pub mod providers;
pub mod ratelimit;
pub mod retry;
pub mod sandbox;
pub mod startup;
pub mod store;
pub mod telemetry;
pub mod worker;
