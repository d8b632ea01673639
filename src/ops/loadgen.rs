//! `kycq loadgen`: the shared limiter's benchmark — N processes drive one Redis bucket, and the
//! run reports admitted rate ÷ R, worst 1-second window ÷ (R + burst) and Redis commands per
//! admitted call (from `INFO commandstats`), each measured from timestamps of the one run.
//!
//! The parent re-executes itself once per process in a hidden child mode (`--child <prefix>`).
//! Protocol on the child's stdin/stdout: the child connects and loads the script, prints
//! `ready`; the parent snapshots `INFO commandstats` and writes `go <start_us> <end_us>`; every
//! child caller loops `acquire` until `end_us` and prints `t <unix_us>` per admitted call, then
//! `s <saturated>`, `f <fallback 0|1>` and `done`.

use std::process::Stdio;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::{bail, Context};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};

use crate::configuration::{ProviderSettings, Settings};
use crate::ratelimit::{Buckets, Limiter, RedisLimiter};

/// The provider name of the benchmark's bucket.
pub const PROVIDER: &str = "loadgen";

/// What one benchmark drives.
#[derive(Clone, Debug)]
pub struct LoadSpec {
    /// Configured rate R (calls per second, all processes together).
    pub rate: f64,
    /// Burst.
    pub burst: u32,
    /// Seconds each run lasts.
    pub seconds: f64,
    /// Concurrent callers per process.
    pub tasks: usize,
    /// `max_wait_ms` of the bucket.
    pub max_wait_ms: u64,
    /// `jitter_margin_ms` of the bucket.
    pub jitter_margin_ms: u64,
}

/// The figures of one run.
#[derive(Clone, Debug, serde::Serialize)]
pub struct RunStats {
    /// Processes.
    pub procs: usize,
    /// Run number (from 1).
    pub run: usize,
    /// Calls admitted within the run's window.
    pub admitted: usize,
    /// Admitted calls per second ÷ R.
    pub rate_ratio: f64,
    /// Most calls in any closed 1-second window ÷ (R + burst).
    pub worst_window_ratio: f64,
    /// Commands clients sent to Redis (round trips) per admitted call, from `INFO commandstats`:
    /// every command except those the script runs inside Redis.
    pub round_trips_per_call: f64,
    /// Every command Redis executed per admitted call, the script's own included.
    pub cmds_per_call: f64,
    /// Acquires answered `Saturated`.
    pub saturated: u64,
    /// Whether any process fell back to its local limiter.
    pub fallback: bool,
}

/// Most timestamps (microseconds) in any closed window `[t, t + window_us]`.
pub fn worst_window(times_us: &mut [i64], window_us: i64) -> usize {
    times_us.sort_unstable();
    let (mut j, mut best) = (0, 0);
    for i in 0..times_us.len() {
        while j < times_us.len() && times_us[j] - times_us[i] <= window_us {
            j += 1;
        }
        best = best.max(j - i);
    }
    best
}

/// The median of a few figures.
pub fn median(mut xs: Vec<f64>) -> f64 {
    xs.sort_by(f64::total_cmp);
    match xs.len() {
        0 => f64::NAN,
        n if n % 2 == 1 => xs[n / 2],
        n => (xs[n / 2 - 1] + xs[n / 2]) / 2.0,
    }
}

/// The commands `bucket.lua` runs inside Redis (counted by `INFO commandstats` too).
pub const SCRIPT_COMMANDS: [&str; 5] = ["time", "hmget", "hset", "hdel", "pexpire"];

/// `calls=` per command of `INFO commandstats`.
pub fn command_calls(info: &str) -> Vec<(String, u64)> {
    info.lines()
        .filter_map(|l| l.strip_prefix("cmdstat_"))
        .filter_map(|l| {
            let (name, stats) = l.split_once(':')?;
            let calls = stats
                .split(',')
                .find_map(|kv| kv.strip_prefix("calls="))?
                .trim()
                .parse()
                .ok()?;
            Some((name.to_owned(), calls))
        })
        .collect()
}

/// (commands sent by clients, every command executed) from `INFO commandstats`, assuming no
/// client sends the script's own commands (a Redis nobody else uses during the benchmark).
pub fn total_calls(info: &str) -> (u64, u64) {
    command_calls(info)
        .into_iter()
        .fold((0, 0), |(client, all), (name, n)| {
            let inner = SCRIPT_COMMANDS.contains(&name.as_str());
            (client + if inner { 0 } else { n }, all + n)
        })
}

fn unix_us() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_micros() as i64)
}

/// The bucket settings a loadgen process uses (the benchmark's own provider section).
fn bucket(spec: &LoadSpec, base: &ProviderSettings) -> ProviderSettings {
    let mut p = base.clone();
    p.rate_per_sec = spec.rate;
    p.burst = spec.burst;
    p.max_wait_ms = spec.max_wait_ms;
    p.jitter_margin_ms = spec.jitter_margin_ms;
    p.actions.clear();
    p
}

/// Run every configuration `runs` times and print a table (or JSON lines) and the medians.
pub async fn run(
    settings: &Settings,
    spec: &LoadSpec,
    workers: &[usize],
    runs: usize,
    json: bool,
    config_dir: &std::path::Path,
) -> anyhow::Result<Vec<RunStats>> {
    let client =
        crate::ratelimit::RedisClient::from_settings(&settings.redis).context("[redis]")?;
    let mut conn = client.connect().await.context("connecting to redis")?;
    if !json {
        println!(
            "kycq loadgen — R = {} /s, burst {}, {} s per run, {} callers per process, max_wait {} ms, jitter_margin {} ms",
            spec.rate, spec.burst, spec.seconds, spec.tasks, spec.max_wait_ms, spec.jitter_margin_ms
        );
        println!("procs  run  admitted  admitted÷R  worst1s÷(R+burst)  round trips/call  cmds/call  saturated  fallback");
    }
    let mut all = Vec::new();
    for &n in workers {
        for r in 1..=runs {
            let s = run_once(settings, spec, n, r, &mut conn, config_dir).await?;
            if json {
                println!("{}", serde_json::to_string(&s)?);
            } else {
                println!(
                    "{:>5}  {:>3}  {:>8}  {:>10.3}  {:>17.3}  {:>16.3}  {:>9.3}  {:>9}  {:>8}",
                    s.procs,
                    s.run,
                    s.admitted,
                    s.rate_ratio,
                    s.worst_window_ratio,
                    s.round_trips_per_call,
                    s.cmds_per_call,
                    s.saturated,
                    if s.fallback { "yes" } else { "no" }
                );
            }
            all.push(s);
        }
    }
    if !json {
        println!("\nmedian of {runs} run(s)");
        println!("procs  admitted÷R  worst1s÷(R+burst)  round trips/call  cmds/call");
        for &n in workers {
            let of = |f: fn(&RunStats) -> f64| {
                median(all.iter().filter(|s| s.procs == n).map(f).collect())
            };
            println!(
                "{:>5}  {:>10.3}  {:>17.3}  {:>16.3}  {:>9.3}",
                n,
                of(|s| s.rate_ratio),
                of(|s| s.worst_window_ratio),
                of(|s| s.round_trips_per_call),
                of(|s| s.cmds_per_call)
            );
        }
    }
    Ok(all)
}

/// `INFO commandstats` of the node holding `key` (on a cluster: the master owning its slot).
async fn commandstats(
    conn: &mut crate::ratelimit::RedisConn,
    key: &str,
) -> anyhow::Result<(u64, u64)> {
    let info: String = conn
        .query_at_key(redis::cmd("INFO").arg("commandstats"), key)
        .await
        .context("INFO commandstats")?;
    Ok(total_calls(&info))
}

struct Child {
    proc: tokio::process::Child,
    stdin: tokio::process::ChildStdin,
    lines: tokio::io::Lines<BufReader<tokio::process::ChildStdout>>,
}

async fn run_once(
    settings: &Settings,
    spec: &LoadSpec,
    procs: usize,
    run: usize,
    conn: &mut crate::ratelimit::RedisConn,
    config_dir: &std::path::Path,
) -> anyhow::Result<RunStats> {
    let prefix = format!(
        "{}:loadgen:{}",
        settings.redis.key_prefix,
        &uuid::Uuid::new_v4().simple().to_string()[..12]
    );
    let exe = std::env::current_exe().context("locating the kycq executable")?;
    let mut children = Vec::new();
    for _ in 0..procs {
        let mut proc = tokio::process::Command::new(&exe)
            .args([
                "loadgen",
                "--child",
                &prefix,
                "--rate",
                &spec.rate.to_string(),
                "--burst",
                &spec.burst.to_string(),
                "--seconds",
                &spec.seconds.to_string(),
                "--tasks",
                &spec.tasks.to_string(),
                "--max-wait-ms",
                &spec.max_wait_ms.to_string(),
                "--jitter-margin-ms",
                &spec.jitter_margin_ms.to_string(),
            ])
            .env("KYCQ_CONFIG_DIR", config_dir)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .context("spawning a loadgen child")?;
        let stdin = proc.stdin.take().expect("piped stdin");
        let lines = BufReader::new(proc.stdout.take().expect("piped stdout")).lines();
        children.push(Child { proc, stdin, lines });
    }
    for c in &mut children {
        match c.lines.next_line().await? {
            Some(l) if l == "ready" => {}
            other => bail!("loadgen child did not get ready: {other:?}"),
        }
    }
    let key = crate::ratelimit::bucket_key(&prefix, PROVIDER, None);
    let before = commandstats(conn, &key).await?;
    let start = unix_us() + 200_000;
    let end = start + (spec.seconds * 1e6) as i64;
    for c in &mut children {
        c.stdin
            .write_all(format!("go {start} {end}\n").as_bytes())
            .await?;
        c.stdin.flush().await?;
    }
    let mut times = Vec::new();
    let (mut admitted_total, mut saturated, mut fallback) = (0usize, 0u64, false);
    for c in &mut children {
        while let Some(l) = c.lines.next_line().await? {
            let mut it = l.split(' ');
            match (it.next(), it.next().map(str::parse::<i64>)) {
                (Some("t"), Some(Ok(t))) => {
                    admitted_total += 1;
                    if (start..=end).contains(&t) {
                        times.push(t);
                    }
                }
                (Some("s"), Some(Ok(n))) => saturated += n as u64,
                (Some("f"), Some(Ok(f))) => fallback |= f != 0,
                (Some("done"), _) => break,
                _ => bail!("loadgen child said {l:?}"),
            }
        }
        let status = c.proc.wait().await?;
        anyhow::ensure!(status.success(), "loadgen child exited with {status}");
    }
    // The first INFO is counted in the second snapshot.
    let after = commandstats(conn, &key).await?;
    let round_trips = after.0.saturating_sub(before.0 + 1);
    let cmds = after.1.saturating_sub(before.1 + 1);
    let _: () = redis::cmd("DEL").arg(&key).query_async(conn).await?;
    let admitted = times.len();
    let worst = worst_window(&mut times, 1_000_000);
    Ok(RunStats {
        procs,
        run,
        admitted,
        rate_ratio: admitted as f64 / spec.seconds / spec.rate,
        worst_window_ratio: worst as f64 / (spec.rate + f64::from(spec.burst)),
        round_trips_per_call: round_trips as f64 / admitted_total.max(1) as f64,
        cmds_per_call: cmds as f64 / admitted_total.max(1) as f64,
        saturated,
        fallback,
    })
}

/// The hidden child mode: drive the bucket with `spec.tasks` callers until the parent's window
/// ends, reporting every admission on stdout.
pub async fn child(settings: &Settings, spec: &LoadSpec, prefix: &str) -> anyhow::Result<()> {
    let mut buckets = Buckets::default();
    // The bucket's shape comes from the spec; the first provider section gives the rest.
    let base = settings
        .providers
        .all()
        .next()
        .map(|(_, p)| p)
        .context("config has no [providers.<name>] section")?;
    buckets.add_provider(prefix, PROVIDER, &bucket(spec, base));
    let limiter = Arc::new(RedisLimiter::connect(&settings.redis, buckets).await?);
    let mut out = tokio::io::stdout();
    out.write_all(b"ready\n").await?;
    out.flush().await?;
    let mut stdin = BufReader::new(tokio::io::stdin()).lines();
    let go = stdin.next_line().await?.unwrap_or_default();
    let nums: Vec<i64> = go
        .strip_prefix("go ")
        .map(|r| r.split(' ').filter_map(|n| n.parse().ok()).collect())
        .unwrap_or_default();
    let [start, end] = nums[..] else {
        bail!("expected `go <start_us> <end_us>`, got {go:?}");
    };
    tokio::time::sleep(Duration::from_micros((start - unix_us()).max(0) as u64)).await;
    let saturated = Arc::new(AtomicU64::new(0));
    let fell_back = Arc::new(AtomicBool::new(false));
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<i64>();
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..spec.tasks {
        let (limiter, tx) = (limiter.clone(), tx.clone());
        let (saturated, fell_back) = (saturated.clone(), fell_back.clone());
        tasks.spawn(async move {
            // Ask only while the window is open; an admission landing after it still counts as
            // a Redis round trip (the parent leaves it out of the rate and window figures).
            while unix_us() < end {
                match limiter.acquire(PROVIDER, "call").await {
                    Ok(_) => {
                        let _ = tx.send(unix_us());
                    }
                    Err(s) => {
                        saturated.fetch_add(1, Ordering::Relaxed);
                        tokio::time::sleep(s.retry_after).await;
                    }
                }
                if limiter.is_fallback() {
                    fell_back.store(true, Ordering::Relaxed);
                }
            }
        });
    }
    drop(tx);
    let mut buf = String::new();
    while let Some(t) = rx.recv().await {
        buf.push_str(&format!("t {t}\n"));
    }
    while tasks.join_next().await.is_some() {}
    buf.push_str(&format!(
        "s {}\nf {}\ndone\n",
        saturated.load(Ordering::Relaxed),
        u8::from(fell_back.load(Ordering::Relaxed))
    ));
    out.write_all(buf.as_bytes()).await?;
    out.flush().await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn worst_window_counts_a_closed_window() {
        let mut t = vec![0, 500_000, 1_000_000, 1_000_001, 2_500_000];
        assert_eq!(worst_window(&mut t, 1_000_000), 3);
        assert_eq!(worst_window(&mut [], 1_000_000), 0);
        let mut t: Vec<i64> = (0..100).map(|i| i * 50_000).collect();
        assert_eq!(worst_window(&mut t, 1_000_000), 21);
    }

    #[test]
    fn medians() {
        assert_eq!(median(vec![3.0, 1.0, 2.0]), 2.0);
        assert_eq!(median(vec![4.0, 1.0]), 2.5);
        assert!(median(vec![]).is_nan());
    }

    #[test]
    fn commandstats_are_summed() {
        let info = "# Commandstats\r\ncmdstat_evalsha:calls=1000,usec=9000,usec_per_call=9.00,rejected_calls=0,failed_calls=0\r\ncmdstat_info:calls=3,usec=100,usec_per_call=33.3,rejected_calls=0,failed_calls=0\r\ncmdstat_script|load:calls=2,usec=10\r\n";
        assert_eq!(total_calls(info), (1005, 1005));
        let info = "cmdstat_evalsha:calls=10,usec=1\r\ncmdstat_time:calls=10,usec=1\r\ncmdstat_hset:calls=10\r\ncmdstat_hmget:calls=10\r\ncmdstat_pexpire:calls=10\r\n";
        assert_eq!(total_calls(info), (10, 50));
    }
}
