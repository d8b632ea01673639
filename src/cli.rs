//! The `kycq` command line: worker, setup, migrate, doctor, sandbox, enqueue, dlq, demo, loadgen.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use clap::{Args, Parser, Subcommand};
use secrecy::ExposeSecret;
use tokio_util::sync::CancellationToken;

use crate::broker::{self, dlq, BrokerError, Publisher};
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
    /// Serve the provider sandbox (Tencent PhoneVerification) on loopback.
    Sandbox(SandboxArgs),
    /// Publish one check (from flags) or a CSV of checks.
    Enqueue(EnqueueArgs),
    /// Inspect and replay dead letters.
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
