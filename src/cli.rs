//! The `kycq` command line: worker, setup, migrate, doctor, sandbox, enqueue, status, dlq, demo,
//! loadgen, bench, report.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use clap::{Args, Parser, Subcommand};
use tokio_util::sync::CancellationToken;

use crate::broker::{self, BrokerError, Publisher};
use crate::configuration::Settings;
use crate::ops::enqueue::{self, Prepared, RequestMessage, ResultsOut, RunOptions, Tally};

/// kycq — identity-verification checks from RabbitMQ, with exactly one stored result per request.
#[derive(Debug, Parser)]
#[command(name = "kycq", version, about)]
pub struct Cli {
    /// Folder holding default.toml and <KYCQ_ENV>.toml.
    #[arg(long, global = true, env = "KYCQ_CONFIG_DIR", default_value = "config")]
    pub config_dir: PathBuf,
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// Commands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Consume check requests until SIGTERM/SIGINT.
    #[command(after_help = WORKER_HELP)]
    Worker,
    /// Declare the RabbitMQ topology (idempotent) and apply database migrations.
    #[command(after_help = SETUP_HELP)]
    Setup,
    /// Apply database migrations.
    #[command(after_help = MIGRATE_HELP)]
    Migrate,
    /// Check every configured service and provider once and say what to fix.
    #[command(
        long_about = "Check every configured service and provider once and say what to fix, \
naming the configuration key: Postgres (connects; every migration applied), RabbitMQ (connects; \
every object of the topology present, checked passively), Redis (PING) and each configured \
provider's credentials, with a signed call the vendor refuses without charging (a required \
parameter left out: the vendor checks the credentials first). Nothing is created or changed. \
Secrets and personal data are never printed. Exit status: 0 when every check passed, 1 when \
one failed, 2 when the configuration itself is invalid.",
        after_help = "Example:\n  \
KYCQ__PROVIDERS__TENCENT__SECRET_KEY=wrong kycq doctor\n\n  \
target            checked             result  detail\n  \
postgres          connects            OK      database kycq\n  \
postgres          migrations applied  OK      5 of 5\n  \
...\n  \
provider tencent  credentials         FAILED  provider tencent: credentials refused (AuthFailure.SignatureFailure) — check providers.tencent.secret_id/secret_key (KYCQ__PROVIDERS__TENCENT__SECRET_ID, KYCQ__PROVIDERS__TENCENT__SECRET_KEY)\n  \
1 of 8 checks failed\n\n  \
kycq doctor --json | jq '.checks[] | select(.ok | not)'"
    )]
    Doctor {
        /// Print the report as JSON (`{"ok": bool, "checks": [{target, checked, ok, detail}]}`).
        #[arg(long)]
        json: bool,
    },
    /// Serve the provider sandbox on loopback: every vendor of the registry, with the documented
    /// test identities.
    #[command(after_help = SANDBOX_HELP)]
    Sandbox(SandboxArgs),
    /// Validate and publish one check (from flags) or a CSV of checks; optionally wait for the
    /// results.
    #[command(after_help = ENQUEUE_HELP)]
    Enqueue(EnqueueArgs),
    /// Show a request's stored result and provider-call journal from Postgres (masked).
    #[command(after_help = STATUS_HELP)]
    Status(StatusArgs),
    /// Serve the operators' web console (overview, dead letters, request stories, billing).
    #[command(after_help = CONSOLE_HELP)]
    Console {
        /// `hash-password`: make a `console.users.<name>` entry.
        #[command(subcommand)]
        action: Option<ConsoleAction>,
    },
    /// Inspect, retry, resolve, replay and purge dead letters.
    #[command(
        after_help = "Examples:\n  kycq dlq list\n  kycq dlq show req-42\n  kycq dlq retry --all --dry-run\n  kycq dlq resolve req-42 --billed no --note \"not in the bill\""
    )]
    Dlq {
        /// What to do with the dead-letter queue.
        #[command(subcommand)]
        action: DlqAction,
    },
    /// Run the sandbox and a worker in-process against a sample batch covering every outcome.
    #[command(after_help = DEMO_HELP)]
    Demo {
        /// Ordinary matching requests added to the batch.
        #[arg(long, default_value_t = 20)]
        extra: usize,
    },
    /// Benchmark the shared rate limiter: N processes drive one Redis bucket; prints admitted
    /// rate ÷ R, worst 1-second window ÷ (R + burst) and Redis commands per admitted call.
    #[command(after_help = LOADGEN_HELP)]
    Loadgen(LoadgenArgs),
    /// Benchmark the whole worker end to end: the real `kycq worker` as a child process against
    /// the built-in sandbox, the real RabbitMQ, Postgres and Redis; msgs/s, latency, Postgres
    /// commits per request, worker CPU per message and peak memory, optionally against a bare
    /// pipeline doing the same work.
    #[command(after_help = BENCH_HELP)]
    Bench(BenchArgs),
    /// Reports from Postgres for people outside operations (read-only).
    #[command(
        after_help = "Examples:\n  kycq report billing\n  kycq report billing --from 2026-11-01 --to 2026-11-30 --csv > billing-2026-11.csv"
    )]
    Report {
        /// Which report.
        #[command(subcommand)]
        report: ReportKind,
    },
}

/// `kycq report` reports.
#[derive(Debug, Subcommand)]
pub enum ReportKind {
    /// Billed provider calls per billing day, provider and vendor API, priced: what finance
    /// compares line by line with a vendor's bill.
    #[command(after_help = BILLING_HELP)]
    Billing(BillingArgs),
}

/// `kycq report billing` flags.
#[derive(Debug, Args)]
pub struct BillingArgs {
    /// First billing day, YYYY-MM-DD (default: the first day of the month of --to, i.e. of the
    /// current month without --to).
    #[arg(long, value_parser = billing_date)]
    pub from: Option<chrono::NaiveDate>,
    /// Last billing day, inclusive, YYYY-MM-DD (default: today).
    #[arg(long, value_parser = billing_date)]
    pub to: Option<chrono::NaiveDate>,
    /// CSV on stdout: date,provider,api,billed_calls,unit_price_cny,cost_cny,billing_unknown_calls.
    #[arg(long, conflicts_with = "json")]
    pub csv: bool,
    /// One JSON object: the lines, totals per provider and overall, unpriced APIs, and the calls
    /// awaiting an operator's finding.
    #[arg(long)]
    pub json: bool,
}

/// A `--from` / `--to` day: exactly `YYYY-MM-DD`.
fn billing_date(text: &str) -> Result<chrono::NaiveDate, String> {
    let wrong = || "expected a date written YYYY-MM-DD (e.g. 2026-12-01)".to_owned();
    if text.len() != 10 {
        return Err(wrong());
    }
    chrono::NaiveDate::parse_from_str(text, "%Y-%m-%d").map_err(|e| format!("{} ({e})", wrong()))
}

const BILLING_HELP: &str = "\
Examples:
  kycq report billing
  kycq report billing --from 2026-11-01 --to 2026-11-30
  kycq report billing --from 2026-11-01 --to 2026-11-30 --csv > billing-2026-11.csv
  kycq report billing --json | jq '.total'

A billing day is a calendar day at billing.utc_offset (default +08:00, the vendors' China
Standard Time days); --to defaults to today there, --from to the first day of --to's month.
A call is billed when the operator's finding (kycq dlq resolve) or else kycq's own
observation says so; a call whose billing is still unknown is counted apart (billing unknown),
never as billed. Unit prices come from [billing.prices.<provider>] (CNY, exact); a billed call
of an API without a price has its cost unknown (empty in the CSV) and is listed as a warning.
Costs are rounded half up to the fen per line; totals add the lines.

Reads Postgres only: never creates, migrates or writes the database. No personal data.";

const WORKER_HELP: &str = "\
Example:
  export KYCQ__PII__KEY=\"$(cat /run/secrets/kycq-pii-key)\"   # required: at least 16 characters
  export KYCQ__PROVIDERS__TENCENT__SECRET_ID=... KYCQ__PROVIDERS__TENCENT__SECRET_KEY=...
  kycq worker

Settings come from config/default.toml, config/<KYCQ_ENV>.toml and KYCQ__SECTION__KEY
variables. Exit codes: 0 after a graceful stop, 1 an error, 2 a configuration error.";

const SETUP_HELP: &str = "\
Example:
  KYCQ__TOPOLOGY__PREFIX=staging. kycq setup

Declares the exchanges and queues (with topology.prefix) and migrates the database of
database.url, creating it when database.create_if_missing is true.";

const MIGRATE_HELP: &str = "\
Example:
  KYCQ__DATABASE__URL=postgres://postgres@127.0.0.1:5432/kycq kycq migrate";

const SANDBOX_HELP: &str = "\
Example:
  kycq sandbox --listen 127.0.0.1:8970 --latency-ms 50
  KYCQ__PROVIDERS__TENCENT__ENDPOINT=http://127.0.0.1:8970 kycq worker

The answer is chosen by the ID number's 3-digit sequence code (characters 15-17): see the book's
test identities (docs/src/reference/identities.md), or GET /_sandbox/identities on the running sandbox.";

const ENQUEUE_HELP: &str = "\
Examples:
  kycq enqueue --check mobile3 --name 张三 --id-number 11010519491231002X \\
      --mobile 13812345678 --wait
  kycq enqueue --csv backfill.csv --wait --out results.csv

Every request is validated first with the worker's own rules, on the exact bytes to be
published; one that breaks a rule is not published (the column and the rule are named, never
the value). A single request's request_id is printed on stderr before it is published.

CSV: a header line naming the columns (request_id, check, name, id_number required; mobile,
validity_start, validity_end, provider, merchant_user_id, scene_code optional). A bad row is
reported with its line, column and rule and skipped (--stop-on-error: nothing is published).
Rows whose request_id already finished in Postgres are not published again (a rerun resumes).
With --wait: a progress bar of results; results go to --out (one line per request: request_id,
status, verdict, reason_code, billed, provider) or, without --out, to stdout as JSON lines.
Ctrl-C once: stop publishing, keep waiting for what was published; twice: stop waiting
(published requests stay queued: look them up with `kycq status ID`).

Exit codes:
  0    every request completed (without --wait: every valid request was published)
  1    an error (broker or database unreachable, unreadable CSV, wrong header)
  2    a configuration error
  3    a request was rejected: refused before publishing, or by the worker
  4    a request failed (no answer could be had; see reason_code)
  5    no result within --timeout: the request is still queued under its id
  130  interrupted by Ctrl-C (published requests stay queued)
The highest-priority code wins: 130, then 5, 4, 3.";

const STATUS_HELP: &str = "\
Examples:
  kycq status 9f0c7a3e2b8d4c1fa6e5d4c3b2a19087
  kycq status 9f0c7a3e2b8d4c1fa6e5d4c3b2a19087 --json | jq .calls

Shows the stored result (status, verdict, reason, billed, provider, masked subject, received
and completed times) and every journaled provider call (attempt, provider, action, sent and
finished times, HTTP status, provider code and request id, outcome, billed). Read-only.

Exit codes: 0 completed, 3 rejected, 4 failed, 5 not finished yet (a worker holds it),
6 unknown request id (not received by any worker: maybe still queued), 1 an error.";

const DEMO_HELP: &str = "\
Example:
  kycq demo --extra 50

Uses its own queue names (kycq-demo-<random>.), its own database (kycq_demo) and Redis key
prefix, so it never touches a deployment's.";

const LOADGEN_HELP: &str = "\
Example:
  kycq loadgen --workers 1,4 --rate 50 --burst 5 --seconds 5 --runs 1

Figures and how to read them: docs/src/explanations/ratelimit.md.";

const BENCH_HELP: &str = "\
Examples:
  cargo run --release -- bench
  kycq bench --requests 5000 --runs 3 --prefetch 16,128 --concurrency 16,128 \\
      --provider-latency-ms 0,20 --bare
  kycq bench --requests 2000 --prefetch 128 --concurrency 16,64,128 --provider tencent
  kycq bench --requests 50 --runs 1 --json | jq '.runs[] | {pipeline, msgs_per_sec}'

Each run has its own queue prefix (kycq-bench-<id>.), database (kycq_bench_<id>, dropped
afterwards unless --keep) and Redis key prefix, removed at its end, on errors and on Ctrl-C.
--prefetch and --concurrency pair up in order (one value goes with every value of the other);
--cross runs every combination. Every configuration runs --runs times, interleaved; the summary
shows median (min-max). Measure a release build. Method and figures: docs/src/explanations/performance.md.";

/// `kycq bench` flags.
#[derive(Debug, Args)]
pub struct BenchArgs {
    /// Requests per run (mobile3).
    #[arg(long, default_value_t = 20_000)]
    pub requests: usize,
    /// Runs of each configuration (the summary shows min, median and max).
    #[arg(long, default_value_t = 3)]
    pub runs: usize,
    /// amqp.prefetch values, comma-separated.
    #[arg(long, value_delimiter = ',', default_value = "16,128")]
    pub prefetch: Vec<u16>,
    /// worker.concurrency values, comma-separated (paired with --prefetch in order).
    #[arg(long, value_delimiter = ',', default_value = "16,128")]
    pub concurrency: Vec<usize>,
    /// Run every prefetch with every concurrency instead of pairing them.
    #[arg(long)]
    pub cross: bool,
    /// Milliseconds the sandbox adds to every provider answer, comma-separated.
    #[arg(long, value_delimiter = ',', default_value = "0")]
    pub provider_latency_ms: Vec<u64>,
    /// The provider kycq calls (its mobile3 route). The default is the call the bare pipeline
    /// makes.
    #[arg(long, default_value = "alimarket", value_parser = clap::builder::PossibleValuesParser::new(
        crate::providers::registry::vendors_for(crate::check::CheckKind::Mobile3)
            .into_iter()
            .map(|v| v.name)
    ))]
    pub provider: String,
    /// Sandbox identities: `match`, or weights such as `match=90,no_record=5,name_mismatch=5`.
    #[arg(long, default_value = "match")]
    pub mix: String,
    /// The provider's rate limit for the run, calls per second (far above the load).
    #[arg(long, default_value_t = 100_000.0)]
    pub rate: f64,
    /// Burst of that rate limit.
    #[arg(long, default_value_t = 1000)]
    pub burst: u32,
    /// Most requests published without a result yet (default: the prefetch, so none waits in
    /// the broker; 0: publish everything at once).
    #[arg(long)]
    pub window: Option<usize>,
    /// Seconds to wait for the next result before a run fails.
    #[arg(long, default_value_t = 60)]
    pub timeout: u64,
    /// Also run the bare pipeline (same services, requests, prefetch and concurrency),
    /// interleaved, and print kycq's throughput ÷ its.
    #[arg(long)]
    pub bare: bool,
    /// Count the workers' Postgres round trips through a proxy (it adds a hop to every one).
    #[arg(long)]
    pub pg_round_trips: bool,
    /// Publish at this many requests per second (open loop; no window unless --window is
    /// given) instead of keeping the window full: latency at a load below the maximum.
    #[arg(long)]
    pub publish_rate: Option<f64>,
    /// Run each worker under this command, split on whitespace, e.g. `valgrind
    /// --tool=callgrind --callgrind-out-file=/tmp/kycq.%p.cg` (instructions per message: see
    /// docs/src/explanations/performance.md).
    #[arg(long, allow_hyphen_values = true)]
    pub wrap: Option<String>,
    /// Keep each run's database.
    #[arg(long)]
    pub keep: bool,
    /// Print the figures as one JSON document.
    #[arg(long)]
    pub json: bool,
    /// Internal: run as the bare pipeline's worker.
    #[arg(long, hide = true)]
    pub bare_worker: bool,
    /// Internal: the bare worker's sandbox URL.
    #[arg(long, hide = true)]
    pub sandbox: Option<String>,
}

/// `kycq status` arguments.
#[derive(Debug, Args)]
pub struct StatusArgs {
    /// The request's id.
    pub request_id: String,
    /// One JSON object ({"request": …, "calls": […]}) instead of the report.
    #[arg(long)]
    pub json: bool,
}

/// `kycq loadgen` flags.
#[derive(Debug, Args)]
pub struct LoadgenArgs {
    /// Process counts to run, comma-separated.
    #[arg(long, value_delimiter = ',', default_value = "1,2,4,8")]
    pub workers: Vec<usize>,
    /// Runs per process count (the summary shows medians).
    #[arg(long, default_value_t = 3)]
    pub runs: usize,
    /// Configured rate R of the bucket, calls per second.
    #[arg(long, default_value_t = 50.0)]
    pub rate: f64,
    /// Burst of the bucket.
    #[arg(long, default_value_t = 1)]
    pub burst: u32,
    /// Seconds per run.
    #[arg(long, default_value_t = 10.0)]
    pub seconds: f64,
    /// Concurrent callers per process.
    #[arg(long, default_value_t = 8)]
    pub tasks: usize,
    /// The bucket's max_wait_ms.
    #[arg(long, default_value_t = 5000)]
    pub max_wait_ms: u64,
    /// The bucket's jitter_margin_ms (calls spaced at R / (1 + margin)).
    #[arg(long, default_value_t = 20)]
    pub jitter_margin_ms: u64,
    /// One JSON object per run instead of the table.
    #[arg(long)]
    pub json: bool,
    /// Internal: run as one limiter-driving child process with this key prefix.
    #[arg(long, hide = true)]
    pub child: Option<String>,
}

/// `kycq sandbox` flags (defaults from `[sandbox]`).
#[derive(Debug, Args)]
pub struct SandboxArgs {
    /// Listen address.
    #[arg(long)]
    pub listen: Option<String>,
    /// Share of calls answered with an injected transient fault (0..1).
    #[arg(long)]
    pub fault_rate: Option<f64>,
    /// Milliseconds added to every answer.
    #[arg(long)]
    pub latency_ms: Option<u64>,
    /// Up to this many milliseconds more, drawn per answer.
    #[arg(long)]
    pub latency_jitter_ms: Option<u64>,
    /// Serve HTTPS with this certificate chain (PEM); needs --tls-key.
    #[arg(long, requires = "tls_key")]
    pub tls_cert: Option<String>,
    /// The private key of --tls-cert (PEM).
    #[arg(long, requires = "tls_cert")]
    pub tls_key: Option<String>,
    /// With TLS: milliseconds each new connection waits before its handshake is answered.
    #[arg(long)]
    pub handshake_delay_ms: Option<u64>,
    /// Milliseconds the slow test identity takes.
    #[arg(long)]
    pub slow_ms: Option<u64>,
    /// Fault injector seed.
    #[arg(long)]
    pub seed: Option<u64>,
}

/// `kycq enqueue` flags.
#[derive(Debug, Args)]
pub struct EnqueueArgs {
    /// A CSV file with a header line (request_id, check, name, id_number required; mobile,
    /// validity_start, validity_end, provider, merchant_user_id, scene_code optional).
    #[arg(long, conflicts_with_all = ["check", "name", "id_number", "mobile", "validity_start", "validity_end", "provider", "request_id"])]
    pub csv: Option<PathBuf>,
    /// `mobile3`, `id2` or `id2_period`.
    #[arg(long, required_unless_present = "csv")]
    pub check: Option<String>,
    /// Name.
    #[arg(long, required_unless_present = "csv")]
    pub name: Option<String>,
    /// ID number.
    #[arg(long, required_unless_present = "csv")]
    pub id_number: Option<String>,
    /// Mobile (mobile3).
    #[arg(long)]
    pub mobile: Option<String>,
    /// Validity start, YYYYMMDD (id2_period).
    #[arg(long)]
    pub validity_start: Option<String>,
    /// Validity end, YYYYMMDD or long-term (id2_period).
    #[arg(long)]
    pub validity_end: Option<String>,
    /// Pin a provider (one of the vendor registry's names).
    #[arg(long, value_parser = clap::builder::PossibleValuesParser::new(
        crate::providers::registry::vendor_names()
    ))]
    pub provider: Option<String>,
    /// Idempotency key (a new UUID when omitted).
    #[arg(long)]
    pub request_id: Option<String>,
    /// Wait for the result(s): JSON lines on stdout, or --out.
    #[arg(long)]
    pub wait: bool,
    /// With --wait: give up after this many seconds without a new result (exit code 5; the
    /// requests stay queued).
    #[arg(long, default_value_t = 60)]
    pub timeout: u64,
    /// With --wait: write one CSV line per request (request_id, status, verdict, reason_code,
    /// billed, provider; no personal data) to this file instead of JSON lines on stdout.
    #[arg(long, requires = "wait")]
    pub out: Option<PathBuf>,
    /// With --csv: publish nothing if any row is bad (default: report bad rows and skip them).
    #[arg(long, requires = "csv")]
    pub stop_on_error: bool,
}

/// An error that ends `kycq` with its own exit code (the message is printed like any error).
#[derive(Debug)]
pub struct Exit {
    /// The process exit code.
    pub code: u8,
    /// What to tell the user.
    pub message: String,
}

impl std::fmt::Display for Exit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for Exit {}

/// The exit code of any error `run` returns: an [`Exit`]'s own, 2 for a configuration error,
/// 1 otherwise.
pub fn exit_code(e: &anyhow::Error) -> u8 {
    if let Some(x) = e.downcast_ref::<Exit>() {
        x.code
    } else if e
        .downcast_ref::<crate::configuration::ConfigError>()
        .is_some()
    {
        2
    } else {
        1
    }
}

/// Which dead letters a `kycq dlq` command acts on.
#[derive(Debug, Args, Clone, Default)]
pub struct DlqFilters {
    /// Only dead letters with this reason (repeatable), e.g. retries_exhausted, not_json.
    #[arg(long = "reason", value_name = "REASON")]
    pub reasons: Vec<String>,
    /// Only this check: mobile3, id2 or id2_period.
    #[arg(long)]
    pub check: Option<String>,
    /// Only requests whose stored result names this provider.
    #[arg(long)]
    pub provider: Option<String>,
    /// Only dead letters at least this old (90s, 30m, 2h, 7d).
    #[arg(long, value_name = "AGE")]
    pub older_than: Option<String>,
    /// Only dead letters at most this old (90s, 30m, 2h, 7d).
    #[arg(long, value_name = "AGE")]
    pub newer_than: Option<String>,
}

impl DlqFilters {
    fn parse(&self) -> anyhow::Result<crate::ops::dlq::Filters> {
        let age = |a: &Option<String>, flag: &str| -> anyhow::Result<Option<Duration>> {
            a.as_deref()
                .map(|s| crate::ops::dlq::parse_age(s).map_err(|e| anyhow::anyhow!("{flag} {e}")))
                .transpose()
        };
        Ok(crate::ops::dlq::Filters {
            reasons: self.reasons.clone(),
            check: self.check.clone(),
            provider: self.provider.clone(),
            older_than: age(&self.older_than, "--older-than")?,
            newer_than: age(&self.newer_than, "--newer-than")?,
        })
    }
}

/// Who takes an operator decision (kept in Postgres with it).
#[derive(Debug, Args, Clone)]
pub struct DlqOperator {
    /// Who decides (recorded in operator_decisions).
    #[arg(long, env = "USER", value_name = "NAME")]
    pub operator: Option<String>,
    /// Why (recorded with the decision).
    #[arg(long, value_name = "TEXT")]
    pub note: Option<String>,
}

impl DlqOperator {
    fn get(&self) -> anyhow::Result<crate::ops::dlq::Operator> {
        let name = self
            .operator
            .clone()
            .filter(|n| !n.trim().is_empty())
            .ok_or_else(|| {
                anyhow::anyhow!(
                    "who is deciding? say --operator NAME (defaults to $USER, which is not set)"
                )
            })?;
        Ok(crate::ops::dlq::Operator {
            name,
            note: self.note.clone(),
        })
    }
}

/// `yes` or `no`.
#[derive(Debug, Clone, Copy, clap::ValueEnum)]
pub enum BilledFinding {
    /// The vendor's console shows the call was charged.
    Yes,
    /// The vendor's console shows no charge (or no call).
    No,
}

/// `kycq dlq` actions.
#[derive(Debug, Subcommand)]
pub enum DlqAction {
    /// How many dead letters there are, by reason and by action.
    #[command(after_help = "Example:\n  kycq dlq stats\n  kycq dlq stats --json")]
    Stats {
        /// One JSON object.
        #[arg(long)]
        json: bool,
    },
    /// List dead letters with the action each allows.
    ///
    /// No personal data. Actions: retry, resolve, purge only, wait, replay or purge, stale (retry
    /// removes it). The request id is always the body's; on a dead letter the broker made
    /// (delivery limit, a client's expiration) x-kycq-* headers are ignored.
    #[command(
        after_help = "Example:\n  kycq dlq list\n  kycq dlq list --reason billing_unknown --older-than 1h --json"
    )]
    List {
        /// At most this many.
        #[arg(long, default_value_t = 50)]
        limit: usize,
        /// Filters.
        #[command(flatten)]
        filters: DlqFilters,
        /// One JSON object per line.
        #[arg(long)]
        json: bool,
    },
    /// Show one request's dead letters, its provider calls and decisions.
    ///
    /// Personal data masked; every journaled provider call
    /// (provider, time, outcome, billed, provider_request_id), operator decisions and superseded
    /// results.
    #[command(after_help = "Example:\n  kycq dlq show req-42\n  kycq dlq show req-42 --json")]
    Show {
        /// Its request id.
        request_id: String,
        /// One JSON object.
        #[arg(long)]
        json: bool,
    },
    /// Run requests again under their own request_id.
    ///
    /// Only unbilled retryable failures
    /// (retries_exhausted, provider_unavailable, the broker's delivery_limit, billing_unknown once
    /// resolved --billed no). The stored result is kept in superseded_results, the request runs
    /// again, its new result is stored and published. Each dead letter is handled at most once. A
    /// dead letter of a run a retry has since superseded is stale: removed, counted as skipped.
    #[command(
        after_help = "Examples:\n  kycq dlq retry req-42 --note \"Tencent outage over\"\n  kycq dlq retry --all --reason retries_exhausted --older-than 10m --dry-run\n  kycq dlq retry --all --provider tencent --json"
    )]
    Retry {
        /// Only this request id.
        #[arg(conflicts_with = "all", required_unless_present = "all")]
        request_id: Option<String>,
        /// Every dead letter that passes the filters.
        #[arg(long)]
        all: bool,
        /// Filters.
        #[command(flatten)]
        filters: DlqFilters,
        /// Who and why.
        #[command(flatten)]
        who: DlqOperator,
        /// Print what would happen; change nothing.
        #[arg(long)]
        dry_run: bool,
        /// The report as one JSON object.
        #[arg(long)]
        json: bool,
    },
    /// Record the billing found for a billing_unknown request.
    ///
    /// Look the call up in the vendor's console (search it
    /// by the provider_request_id `kycq dlq show` prints). `--billed yes` corrects the stored
    /// result's billing and removes the dead letter (closed); `--billed no` corrects it and
    /// allows `kycq dlq retry`.
    #[command(
        after_help = "Examples:\n  kycq dlq resolve req-42 --billed no --note \"not in the Tencent bill for 2026-12-02\"\n  kycq dlq retry req-42\n  kycq dlq resolve req-43 --billed yes --note \"charged, RequestId 6c1f…\""
    )]
    Resolve {
        /// Its request id.
        request_id: String,
        /// What the vendor's console shows.
        #[arg(long, value_enum)]
        billed: BilledFinding,
        /// Who and why.
        #[command(flatten)]
        who: DlqOperator,
        /// Check and print; record nothing.
        #[arg(long)]
        dry_run: bool,
        /// One JSON object.
        #[arg(long)]
        json: bool,
    },
    /// Publish dead letters back unchanged, then remove them.
    ///
    /// Published to the request exchange (confirmed), then acknowledged.
    /// A request with a stored result is answered from it (use `retry` to run it again);
    /// malformed messages are skipped (they can only be purged). Each is handled at most once.
    #[command(
        after_help = "Examples:\n  kycq dlq replay --request-id req-42\n  kycq dlq replay --all --reason delivery_limit --dry-run"
    )]
    Replay {
        /// Only this request id.
        #[arg(long, conflicts_with = "all", required_unless_present = "all")]
        request_id: Option<String>,
        /// Every dead letter that passes the filters.
        #[arg(long)]
        all: bool,
        /// Filters.
        #[command(flatten)]
        filters: DlqFilters,
        /// Print what would happen; change nothing.
        #[arg(long)]
        dry_run: bool,
        /// The report as one JSON object.
        #[arg(long)]
        json: bool,
    },
    /// Remove dead letters for good.
    ///
    /// Each is recorded in operator_decisions: every one, one
    /// request's, or those passing the filters (e.g. `--reason not_json`).
    #[command(
        after_help = "Examples:\n  kycq dlq purge --reason not_json --reason duplicate_key --yes\n  kycq dlq purge --request-id req-42 --yes --note \"sent again as req-42b\"\n  kycq dlq purge --yes"
    )]
    Purge {
        /// Only this request id.
        #[arg(long)]
        request_id: Option<String>,
        /// Filters.
        #[command(flatten)]
        filters: DlqFilters,
        /// Who and why.
        #[command(flatten)]
        who: DlqOperator,
        /// Print what would happen; change nothing.
        #[arg(long)]
        dry_run: bool,
        /// Required (unless --dry-run): purging cannot be undone.
        #[arg(long)]
        yes: bool,
        /// The report as one JSON object.
        #[arg(long)]
        json: bool,
    },
}

const CONSOLE_HELP: &str = "Serves console.listen (default 127.0.0.1:9470) until SIGINT/SIGTERM. \
Sign-in is required: the operator token (console.operator_token) with the operator's name, or an \
account (console.users.<name> = argon2 hash). With neither configured, a loopback console prints \
a token generated at start (valid until it stops); any other address is refused.

Examples:
  kycq console
  KYCQ__CONSOLE__OPERATOR_TOKEN=$(openssl rand -hex 24) KYCQ__CONSOLE__LISTEN=0.0.0.0:9470 kycq console
  printf '%s' \"$PASSWORD\" | kycq console hash-password   # -> KYCQ__CONSOLE__USERS__ALICE";

/// `kycq console` actions.
#[derive(Debug, Subcommand)]
pub enum ConsoleAction {
    /// Read a password on standard input and print its argon2id hash, for
    /// `console.users.<name>` (`KYCQ__CONSOLE__USERS__<NAME>`).
    HashPassword,
}

/// Run a parsed command line.
pub async fn run(cli: Cli) -> anyhow::Result<()> {
    let settings = Settings::load(&cli.config_dir)?;
    // Provider sections and routes are checked against the vendor registry (exit code 2).
    crate::providers::registry::validate(&settings)?;
    // The demo prints a report of everything that happened, including the expected failures;
    // its log shows errors only (RUST_LOG still wins).
    let level = match cli.command {
        Command::Demo { .. } => "error,lapin=off",
        // The report is the output; the clients' own logs about refused connections are noise.
        Command::Doctor { .. } => "off",
        Command::Bench(ref a) if a.bare_worker => "warn,lapin=off",
        Command::Bench(_) => "error,lapin=off",
        _ => settings.log.level.as_str(),
    };
    // Spans are exported by the worker only (telemetry.otlp_endpoint).
    let otlp = match cli.command {
        Command::Worker => crate::telemetry::otlp::Otlp::from_settings(&settings.telemetry),
        _ => None,
    };
    let telemetry = crate::telemetry::init_tracing(settings.log.format, level, otlp.as_ref())?;
    match cli.command {
        Command::Worker => {
            if let Some(o) = &otlp {
                tracing::info!(
                    endpoint = %o.traces_url,
                    protocol = ?o.protocol,
                    "exporting spans over OTLP"
                );
            }
            let outcome = worker(settings).await;
            telemetry.shutdown().await;
            outcome
        }
        Command::Setup => setup(&settings).await,
        Command::Migrate => {
            crate::store::connect_and_migrate(&settings.database).await?;
            println!("migrations applied");
            Ok(())
        }
        Command::Doctor { json } => doctor(&settings, json).await,
        Command::Sandbox(a) => sandbox(&settings, a).await,
        Command::Enqueue(a) => enqueue_cmd(&settings, a).await,
        Command::Status(a) => status_cmd(&settings, a).await,
        Command::Dlq { action } => dlq_cmd(&settings, action).await,
        Command::Console { action: None } => crate::console::run(settings).await,
        Command::Console {
            action: Some(ConsoleAction::HashPassword),
        } => {
            let mut pw = String::new();
            std::io::stdin().read_line(&mut pw)?;
            let pw = pw.trim_end_matches(['\r', '\n']);
            anyhow::ensure!(
                pw.chars().count() >= 12,
                "a console password has at least 12 characters"
            );
            println!("{}", crate::console::auth::hash_password(pw));
            Ok(())
        }
        Command::Demo { extra } => crate::ops::demo::run(settings, extra).await,
        Command::Loadgen(a) => loadgen(&settings, a, &cli.config_dir).await,
        Command::Bench(a) => bench(&settings, a, &cli.config_dir).await,
        Command::Report {
            report: ReportKind::Billing(a),
        } => billing_report(&settings, a).await,
    }
}

async fn billing_report(settings: &Settings, a: BillingArgs) -> anyhow::Result<()> {
    use crate::ops::billing;
    let (offset, prices) = billing::configured(&settings.billing)?;
    let today = billing::today(offset);
    let to = a.to.unwrap_or(today);
    let from = a.from.unwrap_or_else(|| billing::month_start(to));
    if from > to {
        return Err(Exit {
            code: 2,
            message: format!(
                "--from {from} is after --to {to}: the range would be empty (both days are \
                 inclusive)"
            ),
        }
        .into());
    }
    let Some(pool) = crate::ops::status::connect_readonly(settings).await? else {
        anyhow::bail!(
            "the database of database.url does not exist: no worker has run against it (check \
             database.url, KYCQ__DATABASE__URL)"
        );
    };
    let read = async {
        let report = billing::report(&pool, from, to, offset, &prices).await?;
        let unresolved = billing::unresolved(&pool).await?;
        Ok::<_, sqlx::Error>((report, unresolved))
    }
    .await;
    pool.close().await;
    let (report, unresolved) = match read {
        Err(sqlx::Error::Database(e)) if e.code().as_deref() == Some("42P01") => anyhow::bail!(
            "the database has no provider_calls table: its migrations were never applied \
             (kycq migrate)"
        ),
        other => other.context("reading the call journal from Postgres")?,
    };
    if a.csv {
        print!("{}", report.to_csv());
    } else if a.json {
        let mut v = serde_json::to_value(&report)?;
        v["awaiting_resolution"] = serde_json::to_value(&unresolved)?;
        println!("{}", serde_json::to_string_pretty(&v)?);
    } else {
        print!("{}", report.render());
        if !unresolved.is_empty() {
            let list: Vec<String> = unresolved
                .iter()
                .map(|u| {
                    format!(
                        "{} {} (oldest sent {})",
                        u.provider,
                        u.calls,
                        u.oldest_sent_at
                            .with_timezone(&offset)
                            .format("%Y-%m-%d %H:%M")
                    )
                })
                .collect();
            println!(
                "awaiting an operator's billing finding, any date: {}",
                list.join(", ")
            );
        }
    }
    Ok(())
}

async fn bench(
    settings: &Settings,
    a: BenchArgs,
    config_dir: &std::path::Path,
) -> anyhow::Result<()> {
    use crate::ops::bench::{self, figures};
    anyhow::ensure!(
        a.rate > 0.0 && a.rate.is_finite() && a.burst >= 1,
        "--rate must be positive and --burst at least 1"
    );
    if a.bare_worker {
        let sandbox = a
            .sandbox
            .as_deref()
            .context("--bare-worker needs --sandbox URL")?;
        return bench::bare::run(settings, sandbox, a.rate, a.burst).await;
    }
    let spec = bench::Spec {
        requests: a.requests,
        runs: a.runs,
        pairs: figures::sweep(&a.prefetch, &a.concurrency, a.cross).map_err(anyhow::Error::msg)?,
        latencies_ms: a.provider_latency_ms,
        provider: a.provider,
        mix: figures::parse_mix(&a.mix).map_err(anyhow::Error::msg)?,
        rate: a.rate,
        burst: a.burst,
        window: a.window,
        timeout: Duration::from_secs(a.timeout.max(1)),
        bare: a.bare,
        pg_round_trips: a.pg_round_trips,
        keep: a.keep,
        publish_rate: a.publish_rate.filter(|r| *r > 0.0),
        wrap: a
            .wrap
            .as_deref()
            .map(|w| w.split_whitespace().map(str::to_owned).collect())
            .unwrap_or_default(),
    };
    let interrupt = CancellationToken::new();
    let on_ctrl_c = interrupt.clone();
    tokio::spawn(async move {
        if tokio::signal::ctrl_c().await.is_ok() {
            on_ctrl_c.cancel();
        }
    });
    match bench::run(settings, &spec, config_dir, a.json, interrupt).await {
        Ok(_) => Ok(()),
        Err(e) if e.is::<bench::Interrupted>() => Err(Exit {
            code: 130,
            message: e.to_string(),
        }
        .into()),
        Err(e) => Err(e),
    }
}

/// `kycq doctor`: the report on stdout; exit 1 when a check failed.
async fn doctor(settings: &Settings, json: bool) -> anyhow::Result<()> {
    let checks = crate::ops::doctor::run(settings).await;
    let failed = checks.iter().filter(|c| !c.ok).count();
    if json {
        println!(
            "{}",
            serde_json::json!({"ok": failed == 0, "checks": checks})
        );
    } else {
        print!("{}", crate::ops::doctor::render_table(&checks));
    }
    if failed > 0 {
        anyhow::bail!("{failed} of {} checks failed", checks.len());
    }
    Ok(())
}

/// Cancelled on SIGTERM or SIGINT.
pub fn shutdown_on_signals() -> CancellationToken {
    let token = CancellationToken::new();
    let t = token.clone();
    tokio::spawn(async move {
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
            .expect("SIGTERM handler");
        tokio::select! {
            _ = tokio::signal::ctrl_c() => tracing::info!("SIGINT: stopping"),
            _ = term.recv() => tracing::info!("SIGTERM: stopping"),
        }
        t.cancel();
    });
    token
}

async fn worker(settings: Settings) -> anyhow::Result<()> {
    let shutdown = shutdown_on_signals();
    let running = crate::startup::start_worker(&settings, shutdown.clone()).await?;
    match running.task.await.context("worker task")? {
        // A refused first connection is a configuration error (exit code 2).
        Err(crate::worker::WorkerError::Misconfigured(c)) => return Err(c.into()),
        other => other?,
    }
    tracing::info!("worker stopped");
    Ok(())
}

async fn loadgen(
    settings: &Settings,
    a: LoadgenArgs,
    config_dir: &std::path::Path,
) -> anyhow::Result<()> {
    anyhow::ensure!(
        a.rate > 0.0 && a.rate.is_finite() && a.burst >= 1 && a.seconds > 0.0 && a.tasks >= 1,
        "--rate and --seconds must be positive, --burst and --tasks at least 1"
    );
    let spec = crate::ops::loadgen::LoadSpec {
        rate: a.rate,
        burst: a.burst,
        seconds: a.seconds,
        tasks: a.tasks,
        max_wait_ms: a.max_wait_ms,
        jitter_margin_ms: a.jitter_margin_ms,
    };
    match &a.child {
        Some(prefix) => crate::ops::loadgen::child(settings, &spec, prefix).await,
        None => {
            crate::ops::loadgen::run(settings, &spec, &a.workers, a.runs, a.json, config_dir)
                .await?;
            Ok(())
        }
    }
}

async fn setup(settings: &Settings) -> anyhow::Result<()> {
    let names = settings.topology.names();
    let conn = broker::connect_any(&settings.amqp.nodes(), "kycq setup").await?;
    match broker::declare_topology(&conn, &names, settings.amqp.delivery_limit).await {
        Ok(()) => {}
        Err(e @ BrokerError::Inequivalent { .. }) => {
            eprintln!("{e}\n\n{}", migration_help(&names));
            anyhow::bail!("topology not declared");
        }
        Err(e) => return Err(e.into()),
    }
    println!("topology declared:");
    println!(
        "  request exchange  {} (topic, clients publish check.<check>)",
        names.requests
    );
    println!(
        "  work queue        {} (quorum, delivery limit {}, dead letters to {})",
        names.work_queue, settings.amqp.delivery_limit, names.dead_exchange
    );
    println!(
        "  result exchange   {} (topic, result.<check>.<status>)",
        names.results
    );
    println!(
        "  dead letters      {} → {}",
        names.dead_exchange, names.dead_queue
    );
    println!(
        "  wait queue        {} (fanout exchange and queue; per-message TTL, then back to {})",
        names.wait_queue, names.requests
    );
    crate::store::connect_and_migrate(&settings.database).await?;
    println!("database migrated");
    Ok(())
}

fn migration_help(n: &crate::configuration::Names) -> String {
    format!(
        "How to migrate (kycq never deletes a queue that holds messages):\n\
         1. Choose new names: set KYCQ__TOPOLOGY__PREFIX (e.g. `v2.`) or KYCQ__TOPOLOGY__WORK_QUEUE.\n\
         2. Run `kycq setup` with the new names, then start workers with them.\n\
         3. Point clients at the new request exchange, or bind the new work queue to `{}`.\n\
         4. Drain `{}` with the old workers (or a shovel to the new queue); delete it once empty.",
        n.requests, n.work_queue
    )
}

async fn sandbox(settings: &Settings, a: SandboxArgs) -> anyhow::Result<()> {
    let s = &settings.sandbox;
    let listen = a.listen.unwrap_or_else(|| s.listen.clone());
    let cfg = crate::sandbox::SandboxSettings {
        listen: listen
            .parse()
            .with_context(|| format!("--listen {listen}"))?,
        credentials: crate::sandbox::credentials_from(&settings.providers),
        fault_rate: a.fault_rate.unwrap_or(s.fault_rate),
        latency: Duration::from_millis(a.latency_ms.unwrap_or(s.latency_ms)),
        latency_jitter: Duration::from_millis(a.latency_jitter_ms.unwrap_or(s.latency_jitter_ms)),
        tls: match (
            a.tls_cert.or_else(|| s.tls_cert_file.clone()),
            a.tls_key.or_else(|| s.tls_key_file.clone()),
        ) {
            (Some(cert), Some(key)) => Some(crate::sandbox::TlsFiles {
                cert: cert.into(),
                key: key.into(),
            }),
            (None, None) => None,
            _ => anyhow::bail!("sandbox.tls_cert_file and sandbox.tls_key_file go together"),
        },
        handshake_delay: Duration::from_millis(
            a.handshake_delay_ms.unwrap_or(s.handshake_delay_ms),
        ),
        slow_delay: Duration::from_millis(a.slow_ms.unwrap_or(s.slow_ms)),
        seed: a.seed.unwrap_or(s.seed),
        operator_token: s.operator_token.clone(),
    };
    anyhow::ensure!(
        (0.0..=1.0).contains(&cfg.fault_rate),
        "--fault-rate must be between 0 and 1"
    );
    let shutdown = shutdown_on_signals();
    let running = crate::sandbox::start(cfg, shutdown.clone()).await?;
    println!(
        "kycq sandbox listening on http://{} ({})",
        running.addr,
        crate::sandbox::served()
    );
    running.task.await??;
    Ok(())
}

async fn enqueue_cmd(settings: &Settings, a: EnqueueArgs) -> anyhow::Result<()> {
    let today = enqueue::today();
    let mut out = a.out.as_deref().map(ResultsOut::create).transpose()?;
    let mut tally = Tally::default();
    let requests: Vec<Prepared> = match &a.csv {
        None => {
            let msg = RequestMessage {
                request_id: a.request_id.clone().unwrap_or_default(),
                check: a.check.clone().unwrap_or_default(),
                name: a.name.clone().unwrap_or_default(),
                id_number: a.id_number.clone().unwrap_or_default(),
                mobile: a.mobile.clone(),
                validity_start: a.validity_start.clone(),
                validity_end: a.validity_end.clone(),
                provider: a.provider.clone(),
                ..Default::default()
            }
            .normalised();
            match enqueue::prepare(&msg, today) {
                Ok(p) => vec![p],
                Err(r) => {
                    return Err(Exit {
                        code: enqueue::exit::REJECTED,
                        message: format!(
                            "not published: {r}. Nothing was sent; the worker would reject it with the same rule"
                        ),
                    }
                    .into())
                }
            }
        }
        Some(path) => {
            let batch = enqueue::read_csv(path, today)?;
            for e in &batch.errors {
                eprintln!("{}: {e}", path.display());
            }
            if a.stop_on_error && !batch.errors.is_empty() {
                return Err(Exit {
                    code: enqueue::exit::REJECTED,
                    message: format!(
                        "{}: {} bad row(s) (above); with --stop-on-error nothing was published",
                        path.display(),
                        batch.errors.len()
                    ),
                }
                .into());
            }
            tally.refused = batch.errors.len();
            if let Some(o) = out.as_mut() {
                for e in &batch.errors {
                    if let Some(id) = &e.request_id {
                        o.refused(id, e.refusal.reason_code)?;
                    }
                }
            }
            // A rerun of the same file resumes: ids already finished are not published again.
            let ids: Vec<String> = batch
                .rows
                .iter()
                .map(|(_, p)| p.request_id.clone())
                .collect();
            let finished = match enqueue::finished_results(settings, &ids).await {
                Ok(f) => f,
                Err(e) => {
                    eprintln!(
                        "warning: cannot read which requests already finished ({e:#}); every \
                         valid row is published (a finished one is answered from its stored \
                         result, never called or billed again)"
                    );
                    Default::default()
                }
            };
            let mut requests = Vec::with_capacity(batch.rows.len());
            for (_, p) in batch.rows {
                match finished.get(&p.request_id) {
                    Some(r) => {
                        tally.finished_before += 1;
                        if a.wait {
                            tally.count(r.status);
                        }
                        if let Some(o) = out.as_mut() {
                            o.result(r)?;
                        }
                    }
                    None => requests.push(p),
                }
            }
            if tally.finished_before > 0 {
                eprintln!(
                    "{}: {} request(s) already finished, skipped (not published again){}",
                    path.display(),
                    tally.finished_before,
                    if out.is_some() {
                        "; their stored results are in --out"
                    } else {
                        "; see `kycq status ID`"
                    }
                );
            }
            requests
        }
    };
    let opts = RunOptions {
        wait: a.wait,
        timeout: Duration::from_secs(a.timeout),
        progress: a.csv.is_some(),
        single: a.csv.is_none(),
    };
    let tally = enqueue::run(settings, &requests, &opts, tally, out.as_mut()).await?;
    if a.csv.is_some() {
        eprintln!("{}", enqueue::summary(&tally, a.wait));
    }
    let code = enqueue::exit_code(&tally);
    if code == enqueue::exit::OK {
        return Ok(());
    }
    let message = match code {
        enqueue::exit::INTERRUPTED => format!(
            "interrupted: {} published, {} not published{}",
            tally.published,
            tally.not_published,
            if tally.pending.is_empty() {
                String::new()
            } else {
                format!(", {} still queued without a result", tally.pending.len())
            }
        ),
        enqueue::exit::TIMEOUT => format!(
            "{} request(s) without a result within {}s (still queued: see above)",
            tally.pending.len(),
            a.timeout
        ),
        enqueue::exit::FAILED => format!("{} request(s) failed", tally.failed),
        _ => format!(
            "{} request(s) rejected{}",
            tally.rejected + tally.refused,
            if tally.refused > 0 {
                format!(" ({} refused before publishing)", tally.refused)
            } else {
                String::new()
            }
        ),
    };
    Err(Exit { code, message }.into())
}

async fn status_cmd(settings: &Settings, a: StatusArgs) -> anyhow::Result<()> {
    let Some(report) = crate::ops::status::load(settings, &a.request_id).await? else {
        return Err(Exit {
            code: enqueue::exit::UNKNOWN,
            message: crate::ops::status::unknown_message(&a.request_id),
        }
        .into());
    };
    if a.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print!("{}", crate::ops::status::render(&report));
    }
    match crate::ops::status::exit_code(&report.request.status) {
        0 => Ok(()),
        code => Err(Exit {
            code,
            message: match report.request.reason_code.as_deref() {
                Some(reason) => format!(
                    "request {} {} ({reason})",
                    a.request_id, report.request.status
                ),
                None => format!(
                    "request {} is not finished yet (a worker holds it, or it waits for a \
                     provider)",
                    a.request_id
                ),
            },
        }
        .into()),
    }
}

async fn dlq_cmd(settings: &Settings, action: DlqAction) -> anyhow::Result<()> {
    use crate::ops::dlq::{self as ops_dlq, Ctx};
    let names = settings.topology.names();
    let conn = broker::connect_any(&settings.amqp.nodes(), "kycq dlq").await?;
    broker::declare_topology(&conn, &names, settings.amqp.delivery_limit).await?;
    let store = crate::store::connect_and_migrate(&settings.database).await?;
    let publisher = Publisher::new(
        &conn,
        names.clone(),
        Duration::from_secs(settings.amqp.confirm_timeout_secs),
    )
    .await?;
    let ctx = Ctx {
        conn: &conn,
        names: &names,
        store: &store,
        publisher: &publisher,
    };
    match action {
        DlqAction::Stats { json } => {
            let all = ops_dlq::list(&ctx, &Default::default(), usize::MAX).await?;
            let mut by_reason: std::collections::BTreeMap<String, usize> = Default::default();
            let mut by_action: std::collections::BTreeMap<&str, usize> = Default::default();
            for d in &all {
                *by_reason.entry(d.info.reason.clone()).or_default() += 1;
                *by_action.entry(d.action).or_default() += 1;
            }
            if json {
                let v = serde_json::json!({
                    "queue": names.dead_queue, "total": all.len(),
                    "by_reason": by_reason, "by_action": by_action,
                });
                println!("{v}");
            } else {
                println!("{}: {} dead letters", names.dead_queue, all.len());
                for (r, n) in by_reason {
                    println!("  {r:<24} {n}");
                }
                if !by_action.is_empty() {
                    println!("by action:");
                    for (a, n) in by_action {
                        println!("  {a:<24} {n}");
                    }
                }
            }
        }
        DlqAction::List {
            limit,
            filters,
            json,
        } => {
            let listed = ops_dlq::list(&ctx, &filters.parse()?, limit).await?;
            if json {
                for d in &listed {
                    println!("{}", serde_json::to_string(d)?);
                }
            } else {
                println!(
                    "{:<4} {:<36} {:<20} {:<16} {:<25} action",
                    "pos", "request_id", "reason", "stored", "dead-lettered at"
                );
                for d in &listed {
                    let stored = d.stored.as_ref().map_or("-".to_owned(), |r| {
                        format!(
                            "{}/{}",
                            r.billed.as_deref().unwrap_or("-"),
                            r.provider.as_deref().unwrap_or("-")
                        )
                    });
                    println!(
                        "{:<4} {:<36} {:<20} {:<16} {:<25} {}",
                        d.info.position,
                        d.info.request_id.as_deref().unwrap_or("-"),
                        d.info.reason,
                        stored,
                        d.info.dead_lettered_at.as_deref().unwrap_or("-"),
                        d.action
                    );
                }
                println!(
                    "({} shown; stored = billed/provider of the stored result)",
                    listed.len()
                );
            }
        }
        DlqAction::Show { request_id, json } => {
            let shown = ops_dlq::show(&ctx, &request_id).await?;
            if json {
                println!("{}", serde_json::to_string_pretty(&shown)?);
            } else {
                print_shown(&request_id, &shown);
            }
        }
        DlqAction::Retry {
            request_id,
            all: _,
            filters,
            who,
            dry_run,
            json,
        } => {
            let r = ops_dlq::retry(
                &ctx,
                target_of(&request_id),
                &filters.parse()?,
                &who.get()?,
                dry_run,
            )
            .await?;
            print_report(&r, json)?;
            finish_report(&r)?;
        }
        DlqAction::Resolve {
            request_id,
            billed,
            who,
            dry_run,
            json,
        } => {
            let billed = match billed {
                BilledFinding::Yes => crate::check::Billed::Yes,
                BilledFinding::No => crate::check::Billed::No,
            };
            let r = ops_dlq::resolve(&ctx, &request_id, billed, &who.get()?, dry_run).await?;
            if json {
                println!("{}", serde_json::to_string(&r)?);
            } else {
                println!(
                    "{}: billed {} {}{}",
                    r.request_id,
                    r.billed.as_str(),
                    if r.recorded {
                        "recorded"
                    } else if dry_run {
                        "would be recorded"
                    } else {
                        "was already recorded"
                    },
                    if r.dead_letter_removed {
                        "; dead letter removed"
                    } else {
                        ""
                    }
                );
                println!("{}", r.next);
            }
        }
        DlqAction::Replay {
            request_id,
            all: _,
            filters,
            dry_run,
            json,
        } => {
            let r =
                ops_dlq::replay(&ctx, target_of(&request_id), &filters.parse()?, dry_run).await?;
            print_report(&r, json)?;
            finish_report(&r)?;
        }
        DlqAction::Purge {
            request_id,
            filters,
            who,
            dry_run,
            yes,
            json,
        } => {
            anyhow::ensure!(
                yes || dry_run,
                "purging removes dead letters for good: add --yes (or look first with --dry-run)"
            );
            let r = ops_dlq::purge(
                &ctx,
                target_of(&request_id),
                &filters.parse()?,
                &who.get()?,
                dry_run,
            )
            .await?;
            print_report(&r, json)?;
            finish_report(&r)?;
        }
    }
    let _ = conn.close(200, "done".into()).await;
    Ok(())
}

fn target_of(id: &Option<String>) -> crate::ops::dlq::Target<'_> {
    id.as_deref()
        .map_or(crate::ops::dlq::Target::All, crate::ops::dlq::Target::One)
}

fn print_report(r: &crate::ops::dlq::Report, json: bool) -> anyhow::Result<()> {
    if json {
        println!("{}", serde_json::to_string(r)?);
        return Ok(());
    }
    for i in &r.items {
        println!(
            "{:<14} {:<36} {:<20} {}",
            i.outcome,
            i.request_id.as_deref().unwrap_or("-"),
            i.reason,
            i.why.as_deref().unwrap_or("")
        );
    }
    println!("{}", r.summary());
    Ok(())
}

/// Exit 1 when some dead letter failed (the report says which and why).
fn finish_report(r: &crate::ops::dlq::Report) -> anyhow::Result<()> {
    anyhow::ensure!(
        r.failed == 0,
        "{} dead letter(s) failed; they are left in the queue (see above)",
        r.failed
    );
    Ok(())
}

fn print_shown(request_id: &str, s: &crate::ops::dlq::Shown) {
    println!("request_id {request_id}");
    for d in &s.dead_letters {
        println!(
            "dead letter: reason {}, dead-lettered at {}, routing key {}, action: {}",
            d.info.reason,
            d.info.dead_lettered_at.as_deref().unwrap_or("-"),
            d.info.routing_key,
            d.action
        );
        if let Some(detail) = &d.info.detail {
            println!("  detail: {detail}");
        }
        if let Some(why) = &d.why {
            println!("  {why}");
        }
    }
    if let Some(r) = s.dead_letters.first().and_then(|d| d.stored.as_ref()) {
        println!(
            "stored: {} {} billed {} provider {} (run {})",
            r.status,
            r.reason_code.as_deref().unwrap_or("-"),
            r.billed.as_deref().unwrap_or("-"),
            r.provider.as_deref().unwrap_or("-"),
            r.retry_round
        );
    }
    println!("provider calls ({}):", s.calls.len());
    println!(
        "  {:<3} {:<7} {:<9} {:<24} {:<16} {:<8} {:<6} provider_request_id",
        "run", "attempt", "provider", "sent_at", "outcome", "billed", "code"
    );
    for c in &s.calls {
        let billed = match &c.billed_by_operator {
            Some(b) => format!("{}→{b}", c.billed),
            None => c.billed.clone(),
        };
        println!(
            "  {:<3} {:<7} {:<9} {:<24} {:<16} {:<8} {:<6} {}",
            c.retry_round,
            c.attempt,
            c.provider,
            c.sent_at
                .to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
            c.outcome.as_deref().unwrap_or("in flight"),
            billed,
            c.provider_code.as_deref().unwrap_or("-"),
            c.provider_request_id.as_deref().unwrap_or("-")
        );
    }
    if !s.decisions.is_empty() {
        println!("operator decisions:");
        for d in &s.decisions {
            println!(
                "  {} {} by {}{}{}",
                d.decided_at
                    .to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
                d.action,
                d.operator,
                d.billed
                    .as_deref()
                    .map(|b| format!(" (billed {b})"))
                    .unwrap_or_default(),
                d.note
                    .as_deref()
                    .map(|n| format!(": {n}"))
                    .unwrap_or_default()
            );
        }
    }
    for r in &s.superseded {
        println!(
            "superseded result of run {} (at {}): {}",
            r.retry_round,
            r.superseded_at
                .to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
            r.result
        );
    }
    println!("body (personal data masked):\n{}", s.body_masked);
}
