//! The `kycq` command line: worker, setup, migrate, sandbox, enqueue, dlq, demo, loadgen.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use clap::{Args, Parser, Subcommand};
use secrecy::ExposeSecret;
use tokio_util::sync::CancellationToken;

use crate::broker::{self, BrokerError, Publisher};
use crate::configuration::Settings;
use crate::ops::enqueue::{self, ReplyQueue, RequestMessage};

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
    Worker,
    /// Declare the RabbitMQ topology (idempotent) and apply database migrations.
    Setup,
    /// Apply database migrations.
    Migrate,
    /// Serve the provider sandbox (Tencent PhoneVerification) on loopback.
    Sandbox(SandboxArgs),
    /// Publish one check (from flags) or a CSV of checks.
    Enqueue(EnqueueArgs),
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
    Demo {
        /// Ordinary matching requests added to the batch.
        #[arg(long, default_value_t = 20)]
        extra: usize,
    },
    /// Benchmark the shared rate limiter: N processes drive one Redis bucket; prints admitted
    /// rate ÷ R, worst 1-second window ÷ (R + burst) and Redis commands per admitted call.
    Loadgen(LoadgenArgs),
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
    /// A CSV file with a header row (request_id, check, name, id_number, mobile,
    /// validity_start, validity_end, provider, merchant_user_id, scene_code).
    #[arg(long, conflicts_with_all = ["check", "name", "id_number"])]
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
    /// Wait for the result(s) and print them as JSON lines.
    #[arg(long)]
    pub wait: bool,
    /// Seconds to wait with --wait.
    #[arg(long, default_value_t = 60)]
    pub timeout: u64,
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
    /// No personal data. Actions: retry, resolve, purge only, wait, replay or purge.
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
    /// again, its new result is stored and published. Each dead letter is handled at most once.
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

/// Run a parsed command line.
pub async fn run(cli: Cli) -> anyhow::Result<()> {
    let settings = Settings::load(&cli.config_dir)?;
    // Provider sections and routes are checked against the vendor registry (exit code 2).
    crate::providers::registry::validate(&settings)?;
    // The demo prints a report of everything that happened, including the expected failures;
    // its log shows errors only (RUST_LOG still wins).
    let level = match cli.command {
        Command::Demo { .. } => "error,lapin=off",
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
        Command::Sandbox(a) => sandbox(&settings, a).await,
        Command::Enqueue(a) => enqueue_cmd(&settings, a).await,
        Command::Dlq { action } => dlq_cmd(&settings, action).await,
        Command::Demo { extra } => crate::ops::demo::run(settings, extra).await,
        Command::Loadgen(a) => loadgen(&settings, a, &cli.config_dir).await,
    }
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
    let batch = match &a.csv {
        Some(path) => enqueue::read_csv(path)?,
        None => vec![RequestMessage {
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
        .normalised()],
    };
    let names = settings.topology.names();
    let conn = broker::connect(settings.amqp.url.expose_secret(), "kycq enqueue").await?;
    broker::declare_topology(&conn, &names, settings.amqp.delivery_limit).await?;
    let publisher = Publisher::new(
        &conn,
        names,
        Duration::from_secs(settings.amqp.confirm_timeout_secs),
    )
    .await?;
    let mut replies = if a.wait {
        Some(ReplyQueue::open(&conn).await?)
    } else {
        None
    };
    let bar = (batch.len() > 1).then(|| indicatif::ProgressBar::new(batch.len() as u64));
    for m in &batch {
        enqueue::publish(&publisher, m, replies.as_ref().map(ReplyQueue::name)).await?;
        if let Some(b) = &bar {
            b.inc(1);
        } else if !a.wait {
            println!("{}", m.request_id);
        }
    }
    if let Some(b) = bar {
        b.finish_with_message("published");
        eprintln!("published {} requests", batch.len());
    }
    if let Some(replies) = replies.as_mut() {
        let mut waiting: std::collections::HashSet<String> =
            batch.iter().map(|m| m.request_id.clone()).collect();
        let deadline = tokio::time::Instant::now() + Duration::from_secs(a.timeout);
        while !waiting.is_empty() {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            let Some((_, r)) = replies.next(left).await else {
                anyhow::bail!(
                    "timed out after {}s waiting for {} result(s)",
                    a.timeout,
                    waiting.len()
                );
            };
            if waiting.remove(&r.request_id) {
                println!("{}", serde_json::to_string(&r)?);
            }
        }
    }
    let _ = conn.close(200, "done").await;
    Ok(())
}

async fn dlq_cmd(settings: &Settings, action: DlqAction) -> anyhow::Result<()> {
    use crate::ops::dlq::{self as ops_dlq, Ctx};
    let names = settings.topology.names();
    let conn = broker::connect(settings.amqp.url.expose_secret(), "kycq dlq").await?;
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
    let _ = conn.close(200, "done").await;
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
