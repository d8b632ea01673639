//! The `kycq` command line: worker, setup, migrate, doctor, sandbox, enqueue, status, dlq, demo,
//! loadgen.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use clap::{Args, Parser, Subcommand};
use secrecy::ExposeSecret;
use tokio_util::sync::CancellationToken;

use crate::broker::{self, dlq, BrokerError, Publisher};
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
postgres          migrations applied  OK      1 of 1\n  \
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
    /// Inspect and replay dead letters.
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
}

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

The answer is chosen by the ID number's 3-digit sequence code (characters 15-17): see the
README's sandbox section, or GET /_sandbox/identities on the running sandbox.";

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

Figures and how to read them: docs/ratelimit.md.";

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

/// `kycq dlq` actions.
#[derive(Debug, Subcommand)]
pub enum DlqAction {
    /// How many dead letters there are, by reason.
    Stats,
    /// List dead letters (no personal data).
    List {
        /// At most this many.
        #[arg(long, default_value_t = 50)]
        limit: usize,
    },
    /// Show one dead letter, personal data masked.
    Show {
        /// Its request id.
        request_id: String,
    },
    /// Publish dead letters back to the request exchange (confirmed), then remove them.
    Replay {
        /// Only this request id.
        #[arg(long, conflicts_with = "all")]
        request_id: Option<String>,
        /// Every dead letter.
        #[arg(long)]
        all: bool,
    },
    /// Drop every dead letter.
    Purge {
        /// Required: purging cannot be undone.
        #[arg(long)]
        yes: bool,
    },
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
        _ => settings.log.level.as_str(),
    };
    crate::telemetry::init_tracing(settings.log.format, level);
    match cli.command {
        Command::Worker => worker(settings).await,
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
        Command::Demo { extra } => crate::ops::demo::run(settings, extra).await,
        Command::Loadgen(a) => loadgen(&settings, a, &cli.config_dir).await,
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
    let conn = broker::connect(settings.amqp.url.expose_secret(), "kycq setup").await?;
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
    let names = settings.topology.names();
    let conn = broker::connect(settings.amqp.url.expose_secret(), "kycq dlq").await?;
    broker::declare_topology(&conn, &names, settings.amqp.delivery_limit).await?;
    match action {
        DlqAction::Stats => {
            let all = dlq::list(&conn, &names, usize::MAX).await?;
            let mut by: std::collections::BTreeMap<String, usize> = Default::default();
            for (d, _) in &all {
                *by.entry(d.reason.clone()).or_default() += 1;
            }
            println!("{}: {} dead letters", names.dead_queue, all.len());
            for (r, n) in by {
                println!("  {r:<24} {n}");
            }
        }
        DlqAction::List { limit } => {
            for (d, _) in dlq::list(&conn, &names, limit).await? {
                println!("{}", serde_json::to_string(&d)?);
            }
        }
        DlqAction::Show { request_id } => {
            let all = dlq::list(&conn, &names, usize::MAX).await?;
            let Some((d, body)) = all
                .iter()
                .find(|(d, _)| d.request_id.as_deref() == Some(request_id.as_str()))
            else {
                anyhow::bail!("no dead letter with request_id {request_id}");
            };
            println!("{}", serde_json::to_string_pretty(d)?);
            println!("body (personal data masked):\n{}", dlq::masked_body(body));
        }
        DlqAction::Replay { request_id, all } => {
            anyhow::ensure!(
                all || request_id.is_some(),
                "say --all or --request-id <id>"
            );
            let publisher = Publisher::new(
                &conn,
                names.clone(),
                Duration::from_secs(settings.amqp.confirm_timeout_secs),
            )
            .await?;
            let n = dlq::replay(&conn, &publisher, &names, request_id.as_deref()).await?;
            println!("replayed {n} dead letter(s) to {}", names.requests);
        }
        DlqAction::Purge { yes } => {
            anyhow::ensure!(yes, "purging drops every dead letter for good: add --yes");
            let n = dlq::purge(&conn, &names).await?;
            println!("purged {n} dead letter(s)");
        }
    }
    let _ = conn.close(200, "done").await;
    Ok(())
}
