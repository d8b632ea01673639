//! `kycq bench`: an end-to-end benchmark of the whole worker — the real `kycq worker` as a child
//! process, against the built-in sandbox, the real RabbitMQ, Postgres and Redis — and, with
//! `--bare`, of the smallest correct pipeline doing the same work ([`bare`]), interleaved.
//!
//! Each run has its own exchange/queue prefix, database and Redis key prefix, all removed at its
//! end (the database is kept with `--keep`). A run: start a sandbox with the configured provider
//! latency, create the database, declare the topology and a tap on the result exchange, start
//! the worker process and wait until it consumes; then publish N requests with pipelined
//! confirms (at most a window of them without a result), take every result off the tap, and
//! read the worker's CPU time and peak memory from `/proc`, the database's commits from
//! `pg_stat_database` and, when measured, Postgres round trips. docs/src/explanations/performance.md has the
//! method and figures.
//!
//! - [`figures`]: the sweep, the identity mix, percentiles, min/median/max (pure).
//! - [`procfs`]: `/proc` readers (pure parsers).
//! - [`pgproxy`]: the round-trip-counting Postgres proxy of `--pg-round-trips`.
//! - [`bare`]: the yardstick pipeline (`kycq bench --bare-worker`).

pub mod bare;
pub mod figures;
pub mod pgproxy;
pub mod procfs;

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use futures::stream::FuturesUnordered;
use futures::StreamExt;
use lapin::options::QueueDeclareOptions;
use lapin::types::FieldTable;
use secrecy::ExposeSecret;
use serde::Serialize;
use sqlx::postgres::PgPoolOptions;
use sqlx::PgPool;
use tokio_util::sync::CancellationToken;

use crate::broker::{self, Publisher};
use crate::configuration::{Names, Settings};
use crate::ops::enqueue::{self, ReplyQueue, RequestMessage};
use crate::sandbox::scenarios::{identity, Scenario};
use crate::sandbox::{self, SandboxSettings};
use figures::{percentile, scenario_for, scenario_name, Spread};
use pgproxy::PgProxy;

/// The counter a worker may expose for its Postgres round trips (read from `/metrics`).
pub const ROUND_TRIPS_METRIC: &str = "kycq_db_round_trips_total";

/// What to run.
#[derive(Clone, Debug)]
pub struct Spec {
    /// Requests per run.
    pub requests: usize,
    /// Runs per configuration.
    pub runs: usize,
    /// (prefetch, concurrency) pairs.
    pub pairs: Vec<(u16, usize)>,
    /// Provider latencies of the sandbox, milliseconds.
    pub latencies_ms: Vec<u64>,
    /// The provider kycq's mobile3 route names (served by the sandbox).
    pub provider: String,
    /// Scenarios and their weights.
    pub mix: Vec<(Scenario, u32)>,
    /// The provider's rate limit (calls per second) and burst, far above the load.
    pub rate: f64,
    /// Burst of the rate limit.
    pub burst: u32,
    /// Most requests published without a result yet; None: the prefetch (the worker holds them
    /// all, none waits in the broker); 0: no limit.
    pub window: Option<usize>,
    /// Longest wait for the next result before a run fails.
    pub timeout: Duration,
    /// Also run the bare pipeline.
    pub bare: bool,
    /// Count Postgres round trips through a proxy.
    pub pg_round_trips: bool,
    /// Keep each run's database.
    pub keep: bool,
    /// Publish at this many requests per second (open loop) instead of keeping the window full.
    pub publish_rate: Option<f64>,
    /// A command each worker runs under (e.g. valgrind), split on whitespace.
    pub wrap: Vec<String>,
}

impl Spec {
    /// The window of a run at `prefetch`: at a fixed publish rate, no limit unless asked for.
    fn window_for(&self, prefetch: u16) -> usize {
        match self.publish_rate {
            Some(_) => self.window.unwrap_or(0),
            None => self.window.unwrap_or(usize::from(prefetch)),
        }
    }

    fn mix_text(&self) -> String {
        self.mix
            .iter()
            .map(|(s, w)| format!("{}={w}", scenario_name(*s)))
            .collect::<Vec<_>>()
            .join(",")
    }
}

/// Which pipeline a run measured.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Pipeline {
    /// The real `kycq worker`.
    Kycq,
    /// The bare pipeline (`kycq bench --bare-worker`).
    Bare,
}

impl Pipeline {
    fn as_str(self) -> &'static str {
        match self {
            Pipeline::Kycq => "kycq",
            Pipeline::Bare => "bare",
        }
    }
}

/// One configuration of the sweep.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize)]
pub struct Config {
    /// The sandbox's added latency, milliseconds.
    pub provider_latency_ms: u64,
    /// `amqp.prefetch`.
    pub prefetch: u16,
    /// `worker.concurrency`.
    pub concurrency: usize,
}

/// The figures of one run.
#[derive(Clone, Debug, Serialize)]
pub struct RunFigures {
    /// What was measured.
    pub pipeline: Pipeline,
    /// The configuration.
    #[serde(flatten)]
    pub config: Config,
    /// Run number of this configuration and pipeline (from 1).
    pub run: usize,
    /// The run's own names: queue/exchange prefix `kycq-bench-<id>.`, database
    /// `kycq_bench_<id>`, Redis key prefix `kycq-bench-<id>`.
    pub id: String,
    /// Most requests published without a result yet (0: no limit).
    pub window: usize,
    /// Requests published.
    pub requests: usize,
    /// Requests that got a result.
    pub results: usize,
    /// Results by `status`.
    pub statuses: BTreeMap<String, usize>,
    /// From the first publish to the last result.
    pub seconds: f64,
    /// Results per second over that time.
    pub msgs_per_sec: f64,
    /// Publish → result, median, milliseconds.
    pub p50_ms: f64,
    /// Publish → result, 99th percentile, milliseconds.
    pub p99_ms: f64,
    /// `p50_ms` minus the provider latency.
    pub added_p50_ms: f64,
    /// `p99_ms` minus the provider latency.
    pub added_p99_ms: f64,
    /// Transactions committed in the run's database per request (`pg_stat_database`).
    pub pg_commits_per_request: f64,
    /// Postgres round trips per request, when measured.
    pub pg_round_trips_per_request: Option<f64>,
    /// How they were measured: `metrics` (the worker's counter) or `proxy`.
    pub pg_round_trips_source: Option<&'static str>,
    /// Calls the sandbox received per request.
    pub provider_calls_per_request: f64,
    /// The worker process's CPU time (user + system) per result, microseconds.
    pub worker_cpu_us_per_msg: f64,
    /// The worker process's peak resident set size (`VmHWM`), MiB.
    pub worker_peak_rss_mib: f64,
    /// The whole machine's busy CPU time per result, microseconds (every process: the services,
    /// the sandbox and this benchmark too).
    pub machine_cpu_us_per_msg: f64,
    /// Whether the run's database was kept (`--keep`).
    pub kept: bool,
}

/// The median, min and max of every figure of one configuration and pipeline.
#[derive(Clone, Debug, Serialize)]
pub struct Summary {
    /// What was measured.
    pub pipeline: Pipeline,
    /// The configuration.
    #[serde(flatten)]
    pub config: Config,
    /// Runs summarised.
    pub runs: usize,
    /// Figure name → spread (absent when never measured).
    pub figures: BTreeMap<&'static str, Spread>,
}

/// kycq's throughput ÷ the bare pipeline's, per configuration (medians).
#[derive(Clone, Debug, Serialize)]
pub struct Ratio {
    /// The configuration.
    #[serde(flatten)]
    pub config: Config,
    /// Median kycq msgs/s ÷ median bare msgs/s.
    pub msgs_per_sec_ratio: f64,
}

/// Everything a benchmark measured.
#[derive(Clone, Debug, Serialize)]
pub struct Report {
    /// kycq's version.
    pub version: &'static str,
    /// `release` or `debug`.
    pub build: &'static str,
    /// CPUs available to this process.
    pub cpus: usize,
    /// The Postgres server's version.
    pub postgres: String,
    /// Requests per run.
    pub requests: usize,
    /// Runs per configuration and pipeline.
    pub runs_per_config: usize,
    /// The provider kycq called.
    pub provider: String,
    /// The identity mix.
    pub mix: String,
    /// The provider's rate limit.
    pub rate_per_sec: f64,
    /// Its burst.
    pub burst: u32,
    /// Every run, in the order they ran.
    pub runs: Vec<RunFigures>,
    /// Per configuration and pipeline.
    pub summary: Vec<Summary>,
    /// With `--bare`: kycq ÷ bare throughput per configuration.
    pub ratios: Vec<Ratio>,
}

/// What every run shares.
struct Ctx<'a> {
    settings: &'a Settings,
    spec: &'a Spec,
    config_dir: &'a Path,
    exe: PathBuf,
    admin: PgPool,
    conn: lapin::Connection,
    clk_tck: u64,
}

/// What one run created, for the clean-up that follows it whatever happened.
struct Made {
    id: String,
    prefix: String,
    names: Names,
    db: String,
    redis_prefix: String,
    topology: bool,
    db_created: bool,
    child: Option<tokio::process::Child>,
    log: PathBuf,
    stop: CancellationToken,
}

/// Run the whole sweep, printing each run as it finishes (not with `json`), then the summary.
/// `interrupt` (Ctrl-C) stops at once; what the current run created is removed.
pub async fn run(
    settings: &Settings,
    spec: &Spec,
    config_dir: &Path,
    json: bool,
    interrupt: CancellationToken,
) -> anyhow::Result<Report> {
    anyhow::ensure!(
        spec.requests >= 1 && spec.runs >= 1,
        "--requests and --runs must be at least 1"
    );
    let admin_url = with_database(settings.database.url.expose_secret(), "postgres")?;
    let admin = PgPoolOptions::new()
        .max_connections(2)
        .connect(&admin_url)
        .await
        .context("connecting to Postgres (database.url, the `postgres` database)")?;
    let postgres: String = sqlx::query_scalar("SHOW server_version")
        .fetch_one(&admin)
        .await?;
    let conn = broker::connect_any(&settings.amqp.nodes(), "kycq bench").await?;
    let ctx = Ctx {
        settings,
        spec,
        config_dir,
        exe: std::env::current_exe().context("locating the kycq executable")?,
        admin,
        conn,
        clk_tck: procfs::clk_tck(),
    };
    let build = if cfg!(debug_assertions) {
        "debug"
    } else {
        "release"
    };
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
    if build == "debug" {
        eprintln!(
            "warning: a debug build — its figures say little about a release build \
             (cargo run --release -- bench …)"
        );
    }
    if !json {
        println!(
            "kycq bench — {} mobile3 requests per run ({}), provider {} in the built-in sandbox \
             (rate {}/s, burst {}), {} run(s) per configuration{}; {build} build, {cpus} CPUs, \
             PostgreSQL {postgres}",
            spec.requests,
            spec.mix_text(),
            spec.provider,
            spec.rate,
            spec.burst,
            spec.runs,
            if spec.bare {
                ", kycq and the bare pipeline interleaved"
            } else {
                ""
            },
        );
        println!("{}", row_header());
    }
    let mut runs = Vec::new();
    for run in 1..=spec.runs {
        for &latency in &spec.latencies_ms {
            for &(prefetch, concurrency) in &spec.pairs {
                let config = Config {
                    provider_latency_ms: latency,
                    prefetch,
                    concurrency,
                };
                let mut order = vec![Pipeline::Kycq];
                if spec.bare {
                    // Alternate which goes first, so warming up and drift hit both alike.
                    order.push(Pipeline::Bare);
                    if run % 2 == 0 {
                        order.reverse();
                    }
                }
                for pipeline in order {
                    let r = run_isolated(&ctx, pipeline, config, run, &interrupt).await?;
                    if !json {
                        println!("{}", row(&r));
                    }
                    runs.push(r);
                }
            }
        }
    }
    let _ = ctx.conn.close(200, "bench done".into()).await;
    ctx.admin.close().await;
    let (summary, ratios) = summarise(&runs);
    let report = Report {
        version: env!("CARGO_PKG_VERSION"),
        build,
        cpus,
        postgres,
        requests: spec.requests,
        runs_per_config: spec.runs,
        provider: spec.provider.clone(),
        mix: spec.mix_text(),
        rate_per_sec: spec.rate,
        burst: spec.burst,
        runs,
        summary,
        ratios,
    };
    if json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print!("{}", render_summary(&report));
        if spec.keep {
            let kept: Vec<String> = report
                .runs
                .iter()
                .map(|r| format!("kycq_bench_{}", r.id))
                .collect();
            println!("\nkept databases (--keep): {}", kept.join(" "));
        }
    }
    Ok(report)
}

/// The interrupt's error: `kycq bench` exits 130.
#[derive(Debug, thiserror::Error)]
#[error("interrupted: the current run's queues, database and Redis keys were removed")]
pub struct Interrupted;

/// One run with its own names, database and Redis prefix, removed afterwards whatever happened.
async fn run_isolated(
    ctx: &Ctx<'_>,
    pipeline: Pipeline,
    config: Config,
    run: usize,
    interrupt: &CancellationToken,
) -> anyhow::Result<RunFigures> {
    let id = format!("{:08x}", rand::random::<u32>());
    let mut topology = ctx.settings.topology.clone();
    topology.prefix = format!("kycq-bench-{id}.");
    let mut made = Made {
        id: id.clone(),
        prefix: topology.prefix.clone(),
        names: topology.names(),
        db: format!("kycq_bench_{id}"),
        redis_prefix: format!("kycq-bench-{id}"),
        topology: false,
        db_created: false,
        child: None,
        log: std::env::temp_dir().join(format!("kycq-bench-{id}-{}.log", pipeline.as_str())),
        stop: CancellationToken::new(),
    };
    let outcome = tokio::select! {
        r = run_once(ctx, &mut made, pipeline, config, run) => r,
        () = interrupt.cancelled() => Err(Interrupted.into()),
    };
    // The worker's log is kept when the run failed (not when it was interrupted).
    let keep_log = outcome.as_ref().is_err_and(|e| !e.is::<Interrupted>());
    clean_up(ctx, &mut made, keep_log).await;
    outcome
}

async fn run_once(
    ctx: &Ctx<'_>,
    made: &mut Made,
    pipeline: Pipeline,
    config: Config,
    run: usize,
) -> anyhow::Result<RunFigures> {
    let (spec, settings) = (ctx.spec, ctx.settings);
    let latency = Duration::from_millis(config.provider_latency_ms);
    let sb = sandbox::start(
        SandboxSettings {
            listen: "127.0.0.1:0".parse()?,
            latency,
            ..SandboxSettings::default()
        },
        made.stop.clone(),
    )
    .await
    .context("starting the sandbox")?;
    let mut db_url = with_database(settings.database.url.expose_secret(), &made.db)?;
    let proxy = if spec.pg_round_trips {
        let u = url::Url::parse(&db_url)?;
        let upstream = format!(
            "{}:{}",
            u.host_str().unwrap_or("127.0.0.1"),
            u.port().unwrap_or(5432)
        );
        let p = PgProxy::start(upstream, made.stop.clone()).await?;
        db_url = through(&db_url, p.addr)?;
        Some(p)
    } else {
        None
    };
    sqlx::query(sqlx::AssertSqlSafe(format!(
        r#"CREATE DATABASE "{}""#,
        made.db
    )))
    .execute(&ctx.admin)
    .await
    .context("creating the run's database")?;
    made.db_created = true;
    made.topology = true;
    broker::declare_topology(&ctx.conn, &made.names, settings.amqp.delivery_limit).await?;
    let mut tap =
        ReplyQueue::open_bound(&ctx.conn, Some((&made.names.results, "result.#"))).await?;
    let publisher = Publisher::new(
        &ctx.conn,
        made.names.clone(),
        Duration::from_secs(settings.amqp.confirm_timeout_secs),
    )
    .await?;

    let http = free_loopback_addr()?;
    let env = child_env(ctx, made, pipeline, config, &db_url, http, sb.addr);
    let log = std::fs::File::create(&made.log)
        .with_context(|| format!("creating {}", made.log.display()))?;
    let mut cmd = match spec.wrap.split_first() {
        Some((wrapper, args)) => {
            let mut c = tokio::process::Command::new(wrapper);
            c.args(args).arg(&ctx.exe);
            c
        }
        None => tokio::process::Command::new(&ctx.exe),
    };
    match pipeline {
        Pipeline::Kycq => cmd.arg("worker"),
        Pipeline::Bare => cmd.args([
            "bench",
            "--bare-worker",
            "--sandbox",
            &format!("http://{}", sb.addr),
            "--rate",
            &spec.rate.to_string(),
            "--burst",
            &spec.burst.to_string(),
        ]),
    };
    let child = cmd
        .env("KYCQ_CONFIG_DIR", ctx.config_dir)
        .envs(env)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(log)
        .kill_on_drop(true)
        .spawn()
        .context("starting the worker process")?;
    let pid = child.id().context("the worker process has no id")?;
    made.child = Some(child);
    wait_consuming(ctx, made).await?;
    let baseline = stable_commits(&ctx.admin, &made.db).await?;

    let batch = batch(spec, &made.redis_prefix);
    let window = spec.window_for(config.prefetch);
    let scrape = |on: bool| async move {
        if on {
            scrape_round_trips(http).await
        } else {
            None
        }
    };
    // Before the first message the counter may not exist yet: it counts from 0 then.
    let metrics_before = scrape(pipeline == Pipeline::Kycq)
        .await
        .map(|v| v.unwrap_or(0.0));
    let proxied_before = proxy.as_ref().map(PgProxy::round_trips);
    let (cpu_before, machine_before) = (procfs::process_ticks(pid)?, procfs::machine_ticks()?);

    let driven = drive(
        &publisher,
        &mut tap,
        &batch,
        window,
        spec.publish_rate,
        spec.timeout,
    )
    .await?;

    let (cpu_after, machine_after) = (procfs::process_ticks(pid)?, procfs::machine_ticks()?);
    let proxied_after = proxy.as_ref().map(PgProxy::round_trips);
    let metrics_after = scrape(metrics_before.is_some()).await.flatten();
    let peak_kib = procfs::peak_rss_kib(pid)?;
    stop_child(made).await;
    // Backends report their last counts as they exit.
    wait_no_backends(&ctx.admin, &made.db).await?;
    let commits = stable_commits(&ctx.admin, &made.db)
        .await?
        .saturating_sub(baseline);
    let calls = sb.ledger.len();

    let n = spec.requests as f64;
    let per_msg_us = |ticks: u64| ticks as f64 * 1e6 / ctx.clk_tck as f64 / n;
    let mut ms: Vec<f64> = driven
        .latencies
        .iter()
        .map(|d| d.as_secs_f64() * 1e3)
        .collect();
    ms.sort_by(f64::total_cmp);
    let (p50, p99) = (percentile(&ms, 0.5), percentile(&ms, 0.99));
    let provider_ms = config.provider_latency_ms as f64;
    let (round_trips, source) = match (metrics_before, metrics_after, proxied_before, proxied_after)
    {
        // The proxy, when asked for, counts every round trip on the wire.
        (_, _, Some(a), Some(b)) => (Some(b.saturating_sub(a) as f64 / n), Some("proxy")),
        (Some(a), Some(b), _, _) => (Some((b - a) / n), Some("metrics")),
        _ => (None, None),
    };
    Ok(RunFigures {
        pipeline,
        config,
        run,
        window,
        requests: spec.requests,
        results: driven.latencies.len(),
        statuses: driven.statuses,
        seconds: driven.elapsed.as_secs_f64(),
        msgs_per_sec: n / driven.elapsed.as_secs_f64(),
        p50_ms: p50,
        p99_ms: p99,
        added_p50_ms: p50 - provider_ms,
        added_p99_ms: p99 - provider_ms,
        pg_commits_per_request: commits as f64 / n,
        pg_round_trips_per_request: round_trips,
        pg_round_trips_source: source,
        provider_calls_per_request: calls as f64 / n,
        worker_cpu_us_per_msg: per_msg_us(cpu_after.saturating_sub(cpu_before)),
        worker_peak_rss_mib: peak_kib as f64 / 1024.0,
        machine_cpu_us_per_msg: per_msg_us(machine_after.0.saturating_sub(machine_before.0)),
        id: made.id.clone(),
        kept: spec.keep,
    })
}

/// The run's requests: the mix's documented test identities (a new birth date per request, so
/// that subjects differ), request ids unique to the run.
fn batch(spec: &Spec, run_prefix: &str) -> Vec<RequestMessage> {
    (0..spec.requests)
        .map(|i| {
            let who = identity(scenario_for(&spec.mix, i), i as u32 + 1);
            RequestMessage {
                request_id: format!("{run_prefix}-{i:06}"),
                check: "mobile3".into(),
                name: who.name,
                id_number: who.id_number,
                mobile: Some(who.mobile),
                ..Default::default()
            }
        })
        .collect()
}

/// What publishing and collecting the results gave.
struct Driven {
    latencies: Vec<Duration>,
    statuses: BTreeMap<String, usize>,
    elapsed: Duration,
}

/// Publish the batch with pipelined confirms, never more than `window` requests without a
/// result (0: no limit), and collect a result for every request from the tap.
async fn drive(
    publisher: &Publisher,
    tap: &mut ReplyQueue,
    batch: &[RequestMessage],
    window: usize,
    publish_rate: Option<f64>,
    timeout: Duration,
) -> anyhow::Result<Driven> {
    #[derive(serde::Deserialize)]
    struct Head {
        request_id: Option<String>,
        status: Option<String>,
    }
    let n = batch.len();
    let mut sent_at: HashMap<&str, Instant> = HashMap::with_capacity(n);
    let mut latencies = Vec::with_capacity(n);
    let mut statuses: BTreeMap<String, usize> = BTreeMap::new();
    let mut confirms = FuturesUnordered::new();
    let mut next = 0;
    let start = Instant::now();
    let mut last = start;
    // At a fixed rate, request i is published at start + i / rate.
    let due = |i: usize| publish_rate.map(|r| start + Duration::from_secs_f64(i as f64 / r));
    while latencies.len() < n {
        while next < n
            && (window == 0 || next - latencies.len() < window)
            && due(next).is_none_or(|t| t <= Instant::now())
        {
            let m = &batch[next];
            sent_at.insert(m.request_id.as_str(), Instant::now());
            confirms.push(enqueue::publish(publisher, m, None));
            next += 1;
        }
        let wake = due(next).filter(|_| next < n);
        tokio::select! {
            _ = tokio::time::sleep_until(tokio::time::Instant::from_std(
                    wake.unwrap_or_else(Instant::now)
                )), if wake.is_some() => {}
            Some(confirmed) = confirms.next(), if !confirms.is_empty() => {
                confirmed.context("publishing a request")?;
            }
            delivery = tap.next_delivery(timeout) => {
                let Some(d) = delivery else {
                    bail!(
                        "no result for {} s: {} of {n} requests answered ({} published); the \
                         worker's log says why",
                        timeout.as_secs(), latencies.len(), next
                    );
                };
                let head: Head = serde_json::from_slice(&d.data)
                    .unwrap_or(Head { request_id: None, status: None });
                let id = d
                    .properties
                    .message_id()
                    .as_ref()
                    .map(|m| m.as_str().to_owned())
                    .or(head.request_id);
                if let Some(at) = id.and_then(|id| sent_at.remove(id.as_str())) {
                    last = Instant::now();
                    latencies.push(last - at);
                    *statuses.entry(head.status.unwrap_or_default()).or_default() += 1;
                }
            }
        }
    }
    while let Some(confirmed) = confirms.next().await {
        confirmed.context("publishing a request")?;
    }
    Ok(Driven {
        latencies,
        statuses,
        elapsed: last - start,
    })
}

/// The child's configuration, as `KYCQ__*` variables over the inherited environment: the run's
/// names, database, Redis prefix, prefetch and concurrency; for kycq also the provider pointed
/// at the sandbox with its documented credentials and a rate limit far above the load.
fn child_env(
    ctx: &Ctx<'_>,
    made: &Made,
    pipeline: Pipeline,
    config: Config,
    db_url: &str,
    http: SocketAddr,
    sandbox: SocketAddr,
) -> Vec<(String, String)> {
    let spec = ctx.spec;
    let mut env: Vec<(String, String)> = vec![
        ("KYCQ__TOPOLOGY__PREFIX".into(), made.prefix.clone()),
        ("KYCQ__DATABASE__URL".into(), db_url.to_owned()),
        ("KYCQ__REDIS__KEY_PREFIX".into(), made.redis_prefix.clone()),
        ("KYCQ__AMQP__PREFETCH".into(), config.prefetch.to_string()),
        (
            "KYCQ__WORKER__CONCURRENCY".into(),
            config.concurrency.to_string(),
        ),
        ("KYCQ__HTTP__LISTEN".into(), http.to_string()),
    ];
    if ctx.settings.pii.key.is_none() {
        let key = format!("bench-{}", uuid::Uuid::new_v4().simple());
        env.push(("KYCQ__PII__KEY".into(), key));
    }
    if pipeline == Pipeline::Bare {
        return env;
    }
    let p = spec.provider.as_str();
    let section = |key: &str| format!("KYCQ__PROVIDERS__{}__{}", p.to_uppercase(), key);
    env.push(("KYCQ__ROUTES__MOBILE3".into(), p.to_owned()));
    env.push((section("ENDPOINT"), format!("http://{sandbox}")));
    env.push((section("RATE_PER_SEC"), spec.rate.to_string()));
    env.push((section("BURST"), spec.burst.to_string()));
    if let Some(vendor) = crate::providers::registry::vendor(p) {
        for (key, value) in vendor.sandbox_credentials {
            env.push((section(&key.to_uppercase()), (*value).to_owned()));
        }
    }
    if let Some(s) = ctx.settings.providers.get(p) {
        for action in s.actions.keys() {
            let a = format!("ACTIONS__{}", action.to_uppercase());
            env.push((
                section(&format!("{a}__RATE_PER_SEC")),
                spec.rate.to_string(),
            ));
            env.push((section(&format!("{a}__BURST")), spec.burst.to_string()));
        }
    }
    env
}

/// Wait until the worker consumes from the work queue (or fail when it exits first).
async fn wait_consuming(ctx: &Ctx<'_>, made: &mut Made) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(120);
    let ch = ctx.conn.create_channel().await?;
    loop {
        let q = ch
            .queue_declare(
                made.names.work_queue.as_str().into(),
                QueueDeclareOptions {
                    passive: true,
                    ..Default::default()
                },
                FieldTable::default(),
            )
            .await?;
        if q.consumer_count() > 0 {
            let _ = ch.close(200, "ok".into()).await;
            return Ok(());
        }
        if let Some(status) = made
            .child
            .as_mut()
            .and_then(|c| c.try_wait().ok().flatten())
        {
            bail!(
                "the worker process exited with {status} before consuming:\n{}",
                log_tail(&made.log)
            );
        }
        if Instant::now() > deadline {
            bail!(
                "the worker process did not consume within 120 s:\n{}",
                log_tail(&made.log)
            );
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// `xact_commit` of a database once it has not moved for a second: backends report their
/// counts lazily (at most once a second while busy, within 10 s when idle, and when they exit).
async fn stable_commits(admin: &PgPool, db: &str) -> anyhow::Result<u64> {
    let read = || async {
        sqlx::query_scalar::<_, i64>("SELECT xact_commit FROM pg_stat_database WHERE datname = $1")
            .bind(db)
            .fetch_optional(admin)
            .await
            .map(|v| v.unwrap_or(0).max(0) as u64)
    };
    let deadline = Instant::now() + Duration::from_secs(15);
    let mut last = read().await?;
    let mut same = 0;
    while same < 4 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(250)).await;
        let now = read().await?;
        same = if now == last { same + 1 } else { 0 };
        last = now;
    }
    Ok(last)
}

/// Wait (up to 15 s) until no backend is connected to a database.
async fn wait_no_backends(admin: &PgPool, db: &str) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let n: i64 = sqlx::query_scalar("SELECT count(*) FROM pg_stat_activity WHERE datname = $1")
            .bind(db)
            .fetch_one(admin)
            .await?;
        if n == 0 || Instant::now() > deadline {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The worker's round-trip counter from its `/metrics`, when it has one.
/// The worker's round-trip counter: None when its metrics page cannot be read, Some(None) when
/// the page has no such counter (yet).
async fn scrape_round_trips(http: SocketAddr) -> Option<Option<f64>> {
    let page = reqwest::get(format!("http://{http}/metrics"))
        .await
        .ok()?
        .text()
        .await
        .ok()?;
    Some(figures::metric_total(&page, ROUND_TRIPS_METRIC))
}

/// SIGTERM, then up to 30 s for the worker to drain and exit, then SIGKILL.
async fn stop_child(made: &mut Made) {
    let Some(mut child) = made.child.take() else {
        return;
    };
    if let Some(pid) = child.id() {
        let _ = tokio::process::Command::new("kill")
            .args(["-TERM", &pid.to_string()])
            .status()
            .await;
    }
    if tokio::time::timeout(Duration::from_secs(30), child.wait())
        .await
        .is_err()
    {
        let _ = child.kill().await;
    }
}

/// Remove what the run created: the worker, the sandbox, the topology, the database (unless
/// `--keep`), the Redis keys and, unless `keep_log`, the worker's log.
async fn clean_up(ctx: &Ctx<'_>, made: &mut Made, keep_log: bool) {
    stop_child(made).await;
    made.stop.cancel();
    if made.topology {
        crate::ops::demo::delete_topology(&ctx.conn, &made.names).await;
    }
    if made.db_created && !ctx.spec.keep {
        let _ = sqlx::query(sqlx::AssertSqlSafe(format!(
            r#"DROP DATABASE IF EXISTS "{}" WITH (FORCE)"#,
            made.db
        )))
        .execute(&ctx.admin)
        .await;
    }
    let _ = delete_redis_keys(ctx.settings, &made.redis_prefix).await;
    if keep_log {
        eprintln!("the worker's log: {}", made.log.display());
    } else {
        let _ = std::fs::remove_file(&made.log);
    }
}

async fn delete_redis_keys(settings: &Settings, prefix: &str) -> anyhow::Result<()> {
    let client = crate::ratelimit::RedisClient::from_settings(&settings.redis)?;
    let mut c = client.connect().await?;
    let keys = c.keys_matching(&format!("{prefix}:*")).await?;
    // On a cluster a DEL of keys in several slots is split per slot by the client.
    for chunk in keys.chunks(1000) {
        let _: () = redis::cmd("DEL").arg(chunk).query_async(&mut c).await?;
    }
    Ok(())
}

/// The last lines of a log file.
fn log_tail(path: &Path) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(20)..].join("\n")
}

/// A free loopback address (bound and released).
fn free_loopback_addr() -> std::io::Result<SocketAddr> {
    std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()
}

/// A Postgres URL with another database name.
fn with_database(url: &str, db: &str) -> anyhow::Result<String> {
    let mut u = url::Url::parse(url).context("database.url")?;
    u.set_path(&format!("/{db}"));
    Ok(u.to_string())
}

/// A Postgres URL pointed at `proxy` instead, without TLS (the proxy reads the protocol).
fn through(url: &str, proxy: SocketAddr) -> anyhow::Result<String> {
    let mut u = url::Url::parse(url).context("database.url")?;
    u.set_host(Some(&proxy.ip().to_string()))
        .map_err(|e| anyhow::anyhow!("database.url: {e}"))?;
    u.set_port(Some(proxy.port()))
        .map_err(|()| anyhow::anyhow!("database.url: cannot set a port"))?;
    let kept: Vec<(String, String)> = u
        .query_pairs()
        .filter(|(k, _)| k != "sslmode")
        .map(|(k, v)| (k.into_owned(), v.into_owned()))
        .collect();
    u.query_pairs_mut()
        .clear()
        .extend_pairs(kept)
        .append_pair("sslmode", "disable");
    Ok(u.to_string())
}

/// The median, min and max of every figure, per configuration and pipeline, and the ratios.
pub fn summarise(runs: &[RunFigures]) -> (Vec<Summary>, Vec<Ratio>) {
    type Figure = (&'static str, fn(&RunFigures) -> Option<f64>);
    const FIGURES: [Figure; 11] = [
        ("msgs_per_sec", |r| Some(r.msgs_per_sec)),
        ("p50_ms", |r| Some(r.p50_ms)),
        ("p99_ms", |r| Some(r.p99_ms)),
        ("added_p50_ms", |r| Some(r.added_p50_ms)),
        ("added_p99_ms", |r| Some(r.added_p99_ms)),
        ("pg_commits_per_request", |r| Some(r.pg_commits_per_request)),
        ("pg_round_trips_per_request", |r| {
            r.pg_round_trips_per_request
        }),
        ("provider_calls_per_request", |r| {
            Some(r.provider_calls_per_request)
        }),
        ("worker_cpu_us_per_msg", |r| Some(r.worker_cpu_us_per_msg)),
        ("worker_peak_rss_mib", |r| Some(r.worker_peak_rss_mib)),
        ("machine_cpu_us_per_msg", |r| Some(r.machine_cpu_us_per_msg)),
    ];
    let mut groups: BTreeMap<(Config, Pipeline), Vec<&RunFigures>> = BTreeMap::new();
    for r in runs {
        groups.entry((r.config, r.pipeline)).or_default().push(r);
    }
    let summary: Vec<Summary> = groups
        .iter()
        .map(|(&(config, pipeline), rs)| Summary {
            pipeline,
            config,
            runs: rs.len(),
            figures: FIGURES
                .iter()
                .filter_map(|(name, f)| {
                    Spread::of(rs.iter().filter_map(|r| f(r))).map(|s| (*name, s))
                })
                .collect(),
        })
        .collect();
    let median_rate = |config: Config, pipeline: Pipeline| {
        summary
            .iter()
            .find(|s| s.config == config && s.pipeline == pipeline)
            .and_then(|s| s.figures.get("msgs_per_sec"))
            .map(|s| s.median)
    };
    let ratios = summary
        .iter()
        .filter(|s| s.pipeline == Pipeline::Kycq)
        .filter_map(|s| {
            let bare = median_rate(s.config, Pipeline::Bare)?;
            Some(Ratio {
                config: s.config,
                msgs_per_sec_ratio: median_rate(s.config, Pipeline::Kycq)? / bare,
            })
        })
        .collect();
    (summary, ratios)
}

fn row_header() -> String {
    format!(
        "{:>7} {:>8} {:>5} {:<8} {:>3} {:>8} {:>8} {:>8} {:>8} {:>8} {:>8} {:>8} {:>7} {:>8} {:>7} {:>8}",
        "latency",
        "prefetch",
        "conc",
        "pipeline",
        "run",
        "msgs/s",
        "p50 ms",
        "p99 ms",
        "+p50 ms",
        "+p99 ms",
        "commits",
        "pg RT",
        "calls",
        "CPU µs",
        "RSS MiB",
        "host µs"
    )
}

fn row(r: &RunFigures) -> String {
    format!(
        "{:>7} {:>8} {:>5} {:<8} {:>3} {:>8.0} {:>8.1} {:>8.1} {:>8.1} {:>8.1} {:>8.2} {:>8} {:>7.2} {:>8.0} {:>7.1} {:>8.0}",
        format!("{} ms", r.config.provider_latency_ms),
        r.config.prefetch,
        r.config.concurrency,
        r.pipeline.as_str(),
        r.run,
        r.msgs_per_sec,
        r.p50_ms,
        r.p99_ms,
        r.added_p50_ms,
        r.added_p99_ms,
        r.pg_commits_per_request,
        r.pg_round_trips_per_request
            .map_or("n/a".to_owned(), |v| format!("{v:.2}")),
        r.provider_calls_per_request,
        r.worker_cpu_us_per_msg,
        r.worker_peak_rss_mib,
        r.machine_cpu_us_per_msg
    )
}

/// The summary: per configuration, every figure's median (min–max) for each pipeline, and the
/// throughput ratio.
pub fn render_summary(report: &Report) -> String {
    use std::fmt::Write;
    const ROWS: [(&str, &str, usize); 11] = [
        ("msgs_per_sec", "msgs/s", 0),
        ("p50_ms", "p50 publish→result, ms", 1),
        ("p99_ms", "p99 publish→result, ms", 1),
        ("added_p50_ms", "p50 − provider latency, ms", 1),
        ("added_p99_ms", "p99 − provider latency, ms", 1),
        ("pg_commits_per_request", "Postgres commits / request", 2),
        (
            "pg_round_trips_per_request",
            "Postgres round trips / request",
            2,
        ),
        ("provider_calls_per_request", "provider calls / request", 2),
        ("worker_cpu_us_per_msg", "worker CPU µs / msg", 0),
        ("worker_peak_rss_mib", "worker peak RSS, MiB", 1),
        ("machine_cpu_us_per_msg", "machine CPU µs / msg", 0),
    ];
    let mut out = String::new();
    let mut configs: Vec<Config> = report.summary.iter().map(|s| s.config).collect();
    configs.dedup();
    for config in configs {
        let of = |p: Pipeline| {
            report
                .summary
                .iter()
                .find(|s| s.config == config && s.pipeline == p)
        };
        let (kycq, bare) = (of(Pipeline::Kycq), of(Pipeline::Bare));
        let runs = kycq.map_or(0, |s| s.runs);
        let _ = writeln!(
            out,
            "\nprovider latency {} ms, prefetch {}, concurrency {} — median (min–max) of {runs} run(s)",
            config.provider_latency_ms, config.prefetch, config.concurrency
        );
        let line = format!(
            "  {:<32} {:<26} {}",
            "",
            "kycq",
            if bare.is_some() { "bare" } else { "" }
        );
        let _ = writeln!(out, "{}", line.trim_end());
        for (key, label, digits) in ROWS {
            let cell = |s: Option<&Summary>| match s.and_then(|s| s.figures.get(key)) {
                Some(v) => format!("{:.d$} ({:.d$}–{:.d$})", v.median, v.min, v.max, d = digits),
                None if s.is_some() => "n/a".to_owned(),
                None => String::new(),
            };
            let line = format!("  {label:<32} {:<26} {}", cell(kycq), cell(bare));
            let _ = writeln!(out, "{}", line.trim_end());
        }
        if let Some(r) = report.ratios.iter().find(|r| r.config == config) {
            let _ = writeln!(out, "  kycq ÷ bare msgs/s: {:.2}", r.msgs_per_sec_ratio);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn database_urls() {
        assert_eq!(
            with_database("postgres://postgres@127.0.0.1:5432/kycq", "kycq_bench_1").unwrap(),
            "postgres://postgres@127.0.0.1:5432/kycq_bench_1"
        );
        let proxied = through(
            "postgres://u:p@db.example:5433/x?sslmode=require&application_name=a",
            "127.0.0.1:4000".parse().unwrap(),
        )
        .unwrap();
        assert_eq!(
            proxied,
            "postgres://u:p@127.0.0.1:4000/x?application_name=a&sslmode=disable"
        );
    }

    fn figures(pipeline: Pipeline, prefetch: u16, run: usize, rate: f64) -> RunFigures {
        RunFigures {
            pipeline,
            config: Config {
                provider_latency_ms: 20,
                prefetch,
                concurrency: 16,
            },
            run,
            window: 32,
            requests: 10,
            results: 10,
            statuses: BTreeMap::new(),
            seconds: 1.0,
            msgs_per_sec: rate,
            p50_ms: 25.0,
            p99_ms: 40.0,
            added_p50_ms: 5.0,
            added_p99_ms: 20.0,
            pg_commits_per_request: 2.0,
            pg_round_trips_per_request: None,
            pg_round_trips_source: None,
            provider_calls_per_request: 1.0,
            worker_cpu_us_per_msg: 100.0,
            worker_peak_rss_mib: 30.0,
            machine_cpu_us_per_msg: 300.0,
            id: String::new(),
            kept: false,
        }
    }

    #[test]
    fn summaries_and_ratios_per_configuration() {
        let runs = vec![
            figures(Pipeline::Kycq, 16, 1, 100.0),
            figures(Pipeline::Bare, 16, 1, 200.0),
            figures(Pipeline::Bare, 16, 2, 300.0),
            figures(Pipeline::Kycq, 16, 2, 120.0),
            figures(Pipeline::Kycq, 16, 3, 80.0),
            figures(Pipeline::Bare, 16, 3, 250.0),
            figures(Pipeline::Kycq, 128, 1, 500.0),
        ];
        let (summary, ratios) = summarise(&runs);
        assert_eq!(summary.len(), 3);
        let k16 = &summary[0];
        assert_eq!(
            (k16.pipeline, k16.config.prefetch, k16.runs),
            (Pipeline::Kycq, 16, 3)
        );
        let rate = k16.figures["msgs_per_sec"];
        assert_eq!((rate.min, rate.median, rate.max), (80.0, 100.0, 120.0));
        assert!(!k16.figures.contains_key("pg_round_trips_per_request"));
        assert_eq!(
            ratios.len(),
            1,
            "only the configuration with both pipelines"
        );
        assert_eq!(ratios[0].config.prefetch, 16);
        assert!((ratios[0].msgs_per_sec_ratio - 0.4).abs() < 1e-9);
        let shown = render_summary(&Report {
            version: "0",
            build: "debug",
            cpus: 2,
            postgres: "15".into(),
            requests: 10,
            runs_per_config: 3,
            provider: "alimarket".into(),
            mix: "match=1".into(),
            rate_per_sec: 1e5,
            burst: 1000,
            runs: runs.clone(),
            summary,
            ratios,
        });
        assert!(shown.contains("kycq ÷ bare msgs/s: 0.40"), "{shown}");
        assert!(shown.contains("100 (80–120)"), "{shown}");
        assert!(shown.contains("n/a"), "{shown}");
        // Every run prints a row of the same width as the header.
        let width = |s: &str| s.chars().count();
        assert_eq!(width(&row(&runs[0])), width(&row_header()));
    }

    #[test]
    fn a_batch_follows_the_mix_with_distinct_subjects() {
        let spec = Spec {
            requests: 6,
            runs: 1,
            pairs: vec![(1, 1)],
            latencies_ms: vec![0],
            provider: "alimarket".into(),
            mix: vec![(Scenario::Match, 2), (Scenario::NoRecord, 1)],
            rate: 1.0,
            burst: 1,
            window: None,
            timeout: Duration::from_secs(1),
            bare: false,
            pg_round_trips: false,
            keep: false,
            publish_rate: None,
            wrap: Vec::new(),
        };
        let b = batch(&spec, "kycq-bench-x");
        let scenarios: Vec<Scenario> = b
            .iter()
            .map(|m| Scenario::from_id_number(&m.id_number))
            .collect();
        use Scenario::{Match as M, NoRecord as N};
        assert_eq!(scenarios, [M, M, N, M, M, N]);
        let ids: std::collections::HashSet<&str> = b.iter().map(|m| m.id_number.as_str()).collect();
        assert_eq!(ids.len(), 6);
        assert_eq!(b[5].request_id, "kycq-bench-x-000005");
        assert_eq!(spec.window_for(64), 64);
        // At a fixed publish rate the loop is open: no window unless one is asked for.
        let open = Spec {
            publish_rate: Some(100.0),
            ..spec.clone()
        };
        assert_eq!(open.window_for(64), 0);
        assert_eq!(
            Spec {
                window: Some(8),
                ..open
            }
            .window_for(64),
            8
        );
        // Every request is valid by the worker's own rules.
        for m in &b {
            assert!(enqueue::prepare(m, enqueue::today()).is_ok());
        }
    }
}
