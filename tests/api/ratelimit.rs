//! The shared rate limit against the real Redis: many limiters and processes on one bucket,
//! saturation, cool-down, fallback when Redis is unreachable or stopped mid-run — and the
//! pipeline with three `kycq worker` processes, judged by the sandbox's call ledger.

use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use kycq::configuration::RedisSettings;
use kycq::ops::loadgen::worst_window;
use kycq::ratelimit::{bucket_key, BucketSpec, Buckets, Limiter, Rate, RedisLimiter};
use kycq::sandbox::scenarios::{identity, Scenario};
use secrecy::SecretString;
use tokio::time::Instant;

use crate::helpers::{config_dir, free_port, mobile3, tls_files, unique, Options, TestApp};

const REDIS: &str = "redis://127.0.0.1:6379/";
pub(crate) const SEC: i64 = 1_000_000;

pub(crate) fn spec(prefix: &str, rate: f64, burst: u32) -> BucketSpec {
    BucketSpec {
        provider: "p".into(),
        action: None,
        key: bucket_key(prefix, "p", None),
        rate: Rate {
            per_sec: rate,
            burst,
        },
        max_wait: Duration::from_secs(5),
        fallback_share: 1.0,
        cooldown: Duration::from_millis(600),
        min_share: 0.5,
        recovery: Duration::from_secs(60),
        jitter_margin: Duration::from_millis(20),
    }
}

async fn limiter(url: &str, prefix: &str, spec: BucketSpec) -> RedisLimiter {
    let mut buckets = Buckets::default();
    buckets.insert(spec);
    RedisLimiter::connect(
        &RedisSettings {
            url: SecretString::from(url.to_owned()),
            cluster_urls: Vec::new(),
            sentinel_urls: Vec::new(),
            sentinel_master: None,
            key_prefix: prefix.to_owned(),
            timeout_ms: 100,
            probe_interval_ms: 200,
        },
        buckets,
    )
    .await
    .expect("a valid redis URL")
}

async fn redis_conn(url: &str) -> redis::aio::MultiplexedConnection {
    redis::Client::open(url)
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .expect("redis")
}

async fn delete_prefix(prefix: &str) {
    let mut c = redis_conn(REDIS).await;
    let keys: Vec<String> = redis::cmd("KEYS")
        .arg(format!("{prefix}*"))
        .query_async(&mut c)
        .await
        .unwrap();
    if !keys.is_empty() {
        let _: () = redis::cmd("DEL")
            .arg(keys)
            .query_async(&mut c)
            .await
            .unwrap();
    }
}

/// Microseconds since `origin` (a clock Redis knows nothing about).
pub(crate) fn since(origin: Instant) -> i64 {
    origin.elapsed().as_micros() as i64
}

/// Calls per second among `times` within `[from, to)`.
pub(crate) fn rate_within(times: &[i64], from: i64, to: i64) -> f64 {
    let n = times.iter().filter(|t| (from..to).contains(*t)).count();
    n as f64 * SEC as f64 / (to - from) as f64
}

/// Drive `limiters` with `tasks` callers each until `until`; every admission with its time and
/// whether its limiter was falling back.
pub(crate) async fn drive(
    limiters: &[RedisLimiter],
    tasks: usize,
    origin: Instant,
    until: Instant,
) -> Vec<(i64, usize, bool)> {
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let mut set = tokio::task::JoinSet::new();
    for (i, l) in limiters.iter().enumerate() {
        for _ in 0..tasks {
            let (l, tx) = (l.clone(), tx.clone());
            set.spawn(async move {
                while Instant::now() < until {
                    match tokio::time::timeout_at(until, l.acquire("p", "x")).await {
                        Ok(Ok(_)) => {
                            let _ = tx.send((since(origin), i, l.is_fallback()));
                        }
                        Ok(Err(s)) => tokio::time::sleep(s.retry_after).await,
                        Err(_) => break,
                    }
                }
            });
        }
    }
    drop(tx);
    while set.join_next().await.is_some() {}
    let mut out = Vec::new();
    while let Some(x) = rx.recv().await {
        out.push(x);
    }
    out
}

#[tokio::test]
async fn many_limiters_on_one_bucket_stay_within_rate_times_t_plus_burst() {
    let prefix = format!("kycq-t-{}", unique());
    let (rate, burst) = (40.0, 2);
    let mut ls = Vec::new();
    for _ in 0..4 {
        ls.push(limiter(REDIS, &prefix, spec(&prefix, rate, burst)).await);
    }
    let origin = Instant::now();
    let run = 3 * SEC;
    let got = drive(&ls, 5, origin, origin + Duration::from_micros(run as u64)).await;
    let mut times: Vec<i64> = got.iter().map(|g| g.0).collect();
    assert!(got.iter().all(|g| !g.2), "no limiter fell back");
    for (w, bound) in [(SEC, 42), (2 * SEC, 82), (SEC / 2, 22)] {
        let worst = worst_window(&mut times, w);
        assert!(
            worst <= bound,
            "{worst} calls in a {w} µs window (bound {bound})"
        );
    }
    let r = rate_within(&times, 0, run);
    assert!(r >= 0.95 * rate, "sustained {r:.1}/s of {rate}");
    delete_prefix(&prefix).await;
}

#[tokio::test]
async fn three_processes_on_one_bucket_stay_within_rate_plus_burst() {
    let prefix = format!("kycq-t-{}", unique());
    let out = Command::new(env!("CARGO_BIN_EXE_kycq"))
        .args([
            "loadgen",
            "--workers",
            "3",
            "--runs",
            "1",
            "--seconds",
            "3",
            "--rate",
            "30",
            "--tasks",
            "4",
            "--json",
        ])
        .env("KYCQ_CONFIG_DIR", config_dir())
        .env("KYCQ__REDIS__KEY_PREFIX", &prefix)
        .stderr(Stdio::inherit())
        .output()
        .expect("kycq loadgen");
    assert!(out.status.success(), "{out:?}");
    let stdout = String::from_utf8(out.stdout).unwrap();
    let run: serde_json::Value = serde_json::from_str(stdout.lines().next().unwrap()).unwrap();
    let s: (f64, f64, bool) = (
        run["worst_window_ratio"].as_f64().unwrap(),
        run["rate_ratio"].as_f64().unwrap(),
        run["fallback"].as_bool().unwrap(),
    );
    assert!(s.0 <= 1.0, "worst 1 s window ÷ (R + burst) = {}", s.0);
    assert!(s.1 >= 0.95, "admitted ÷ R = {}", s.1);
    assert!(!s.2, "no process fell back");
    delete_prefix(&prefix).await;
}

#[tokio::test]
async fn a_wait_beyond_max_wait_is_saturated_and_reserves_nothing() {
    let prefix = format!("kycq-t-{}", unique());
    let mut s = spec(&prefix, 10.0, 1);
    s.max_wait = Duration::from_millis(250);
    s.jitter_margin = Duration::ZERO;
    let key = s.key.clone();
    let l = Arc::new(limiter(REDIS, &prefix, s).await);
    // Slots at 0, 100 and 200 ms fit within 250 ms; the next two do not.
    let mut set = tokio::task::JoinSet::new();
    for _ in 0..5 {
        let l = l.clone();
        set.spawn(async move { l.acquire("p", "x").await });
    }
    let mut c = redis_conn(REDIS).await;
    let mut results = Vec::new();
    while let Some(r) = set.join_next().await {
        results.push(r.unwrap());
    }
    let saturated: Vec<_> = results.iter().filter_map(|r| r.err()).collect();
    assert_eq!(results.len() - saturated.len(), 3, "{results:?}");
    assert_eq!(saturated.len(), 2, "{results:?}");
    for s in &saturated {
        assert!(s.retry_after >= Duration::from_millis(40), "{s:?}");
    }
    // Three reservations moved the bucket 300 ms; the saturated callers moved nothing.
    let tat: i64 = redis::cmd("HGET")
        .arg(&key)
        .arg("tat")
        .query_async(&mut c)
        .await
        .unwrap();
    let (secs, micros): (i64, i64) = redis::cmd("TIME").query_async(&mut c).await.unwrap();
    // The last admitted caller went at +200 ms: 3 reservations leave `tat` 100 ms ahead, 5
    // would have left it 300 ms ahead.
    let ahead = tat - (secs * SEC + micros);
    assert!(ahead < 150_000, "tat is {ahead} µs ahead");
    let before = tat;
    l.throttled("p", "x").await; // tat moves past now + cool-down: the next wait is 600 ms
    let tat: i64 = redis::cmd("HGET")
        .arg(&key)
        .arg("tat")
        .query_async(&mut c)
        .await
        .unwrap();
    assert!(tat > before);
    assert!(l.acquire("p", "x").await.is_err());
    let again: i64 = redis::cmd("HGET")
        .arg(&key)
        .arg("tat")
        .query_async(&mut c)
        .await
        .unwrap();
    assert_eq!(
        again, tat,
        "a saturated acquire leaves the bucket as it was"
    );
    delete_prefix(&prefix).await;
}

#[tokio::test]
async fn a_throttled_answer_pauses_the_bucket_for_every_worker() {
    let prefix = format!("kycq-t-{}", unique());
    let a = limiter(REDIS, &prefix, spec(&prefix, 50.0, 5)).await;
    let b = limiter(REDIS, &prefix, spec(&prefix, 50.0, 5)).await;
    b.acquire("p", "x").await.unwrap();
    a.throttled("p", "x").await;
    let t0 = Instant::now();
    b.acquire("p", "x").await.unwrap();
    assert!(
        t0.elapsed() >= Duration::from_millis(550),
        "the other worker waited out the cool-down: {:?}",
        t0.elapsed()
    );
    let mut c = redis_conn(REDIS).await;
    let key = bucket_key(&prefix, "p", None);
    let fields: std::collections::HashMap<String, String> = redis::cmd("HGETALL")
        .arg(&key)
        .query_async(&mut c)
        .await
        .unwrap();
    assert!(fields.contains_key("paused_until"), "{fields:?}");
    // Lowered once (×0.75), bounded by min_share, and not again within the cool-down.
    assert_eq!(fields.get("share").map(String::as_str), Some("0.75"));
    a.throttled("p", "x").await;
    let share: String = redis::cmd("HGET")
        .arg(&key)
        .arg("share")
        .query_async(&mut c)
        .await
        .unwrap();
    let share: f64 = share.parse().unwrap();
    assert!((0.5..0.76).contains(&share), "{share}");
    let ttl: i64 = redis::cmd("PTTL")
        .arg(&key)
        .query_async(&mut c)
        .await
        .unwrap();
    assert!(ttl > 0, "the bucket expires once it holds nothing");
    delete_prefix(&prefix).await;
}

#[tokio::test]
async fn an_unreachable_redis_falls_back_to_this_workers_share() {
    let prefix = format!("kycq-t-{}", unique());
    let mut s = spec(&prefix, 20.0, 1);
    s.fallback_share = 0.5;
    let l = limiter("redis://127.0.0.1:1/", &prefix, s).await;
    assert!(l.is_fallback());
    let t0 = Instant::now();
    for _ in 0..6 {
        l.acquire("p", "x").await.unwrap();
    }
    // 10/s (÷ 1.02) locally: 6 calls span at least 5 intervals of ~102 ms.
    assert!(
        t0.elapsed() >= Duration::from_millis(480),
        "{:?}",
        t0.elapsed()
    );
    assert!(l.is_fallback());
}

/// A `redis-server` of this test's own (so stopping it disturbs no other test).
struct OwnRedis {
    port: u16,
    child: Option<Child>,
}

impl OwnRedis {
    async fn start(port: u16) -> OwnRedis {
        let mut r = OwnRedis { port, child: None };
        r.restart().await;
        r
    }

    fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/", self.port)
    }

    async fn restart(&mut self) {
        let child = Command::new("redis-server")
            .args([
                "--port",
                &self.port.to_string(),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("redis-server on PATH");
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Ok(client) = redis::Client::open(self.url()) {
                if let Ok(mut c) = client.get_multiplexed_async_connection().await {
                    if redis::cmd("PING")
                        .query_async::<String>(&mut c)
                        .await
                        .is_ok()
                    {
                        return;
                    }
                }
            }
            assert!(Instant::now() < deadline, "redis-server did not start");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Drop for OwnRedis {
    fn drop(&mut self) {
        self.stop();
    }
}

#[tokio::test]
async fn redis_stopped_mid_run_each_worker_falls_back_to_its_share_and_returns() {
    let mut redis = OwnRedis::start(free_port()).await;
    let prefix = format!("kycq-t-{}", unique());
    let (rate, workers) = (30.0, 3);
    let mut ls = Vec::new();
    for _ in 0..workers {
        let mut s = spec(&prefix, rate, 1);
        s.fallback_share = 1.0 / workers as f64;
        ls.push(limiter(&redis.url(), &prefix, s).await);
    }
    let origin = Instant::now();
    let at = move |us: i64| origin + Duration::from_micros(us as u64);
    let driving = {
        let ls = ls.clone();
        tokio::spawn(async move { drive(&ls, 4, origin, at(7 * SEC)).await })
    };
    tokio::time::sleep_until(at(2 * SEC)).await;
    redis.stop();
    tokio::time::sleep_until(at(4 * SEC + SEC / 2)).await;
    redis.restart().await;
    let got = driving.await.unwrap();

    let mut times: Vec<i64> = got.iter().map(|g| g.0).collect();
    // Every worker fell back while Redis was away, and every one came back.
    for w in 0..workers {
        assert!(
            got.iter()
                .any(|g| g.1 == w && g.2 && (2 * SEC..9 * SEC / 2).contains(&g.0)),
            "worker {w} fell back"
        );
        assert!(
            got.iter().any(|g| g.1 == w && !g.2 && g.0 > 6 * SEC),
            "worker {w} returned to the shared bucket"
        );
    }
    assert!(ls.iter().all(|l| !l.is_fallback()));
    // While Redis is away the workers' shares add up to at most R, and calls still go.
    let away = rate_within(&times, 2 * SEC + SEC / 2, 4 * SEC + SEC / 2);
    assert!(away <= rate, "{away:.1}/s without Redis (R = {rate})");
    assert!(
        away >= 0.8 * rate,
        "{away:.1}/s: the fallback kept calls going"
    );
    // Around the switches each worker may add its own burst of 1.
    let worst = worst_window(&mut times, SEC);
    assert!(
        worst <= rate as usize + workers,
        "{worst} calls in a 1 s window"
    );
    let back = rate_within(&times, 5 * SEC + SEC / 2, 7 * SEC);
    assert!(back >= 0.95 * rate, "{back:.1}/s back on the shared bucket");
}

/// The ledger's call times of one provider, in microseconds since the first.
pub(crate) fn ledger_times(app: &TestApp, provider: &str) -> Vec<i64> {
    let entries = app.sandbox.ledger.entries();
    let mut t: Vec<i64> = entries
        .iter()
        .filter(|e| e.provider == provider)
        .map(|e| e.at.timestamp_micros())
        .collect();
    t.sort_unstable();
    let first = t.first().copied().unwrap_or_default();
    t.iter().map(|x| x - first).collect()
}

pub(crate) fn stop_all(children: &mut [Child]) {
    for c in children.iter() {
        let _ = Command::new("kill")
            .args(["-TERM", &c.id().to_string()])
            .status();
    }
    for c in children.iter_mut() {
        let _ = c.wait();
    }
}

/// `n` requests queued (test identities from `base`), then three `kycq worker` processes
/// started on them; every request answered once, one call each: the ledger's call times.
async fn backlog_through_three_workers(app: &mut TestApp, n: usize, base: u32) -> Vec<i64> {
    let batch = publish_batch(n, base);
    for m in &batch {
        app.publish(m).await;
    }
    let mut workers: Vec<Child> = (0..3).map(|_| app.spawn_worker_process(&[]).0).collect();
    let ids: Vec<String> = batch.iter().map(|m| m.request_id.clone()).collect();
    let results = app.results_for(&ids, Duration::from_secs(120)).await;
    stop_all(&mut workers);
    assert_eq!(results.len(), n);
    let times = ledger_times(app, "tencent");
    assert_eq!(times.len(), n, "one call per request");
    times
}

pub(crate) fn publish_batch(n: usize, base: u32) -> Vec<kycq::ops::enqueue::RequestMessage> {
    (0..n as u32)
        .map(|i| mobile3(&identity(Scenario::Match, base + i)))
        .collect()
}

#[tokio::test]
async fn three_worker_processes_keep_the_sandbox_within_rate_plus_burst() {
    let (rate, burst, n) = (20.0, 1usize, 160);
    let app_env = vec![
        ("KYCQ__PROVIDERS__TENCENT__RATE_PER_SEC".into(), "20".into()),
        ("KYCQ__PROVIDERS__TENCENT__BURST".into(), "1".into()),
    ];
    let mut app = TestApp::with(Options {
        env: app_env,
        exclusive: true,
        ..Options::default()
    })
    .await;
    let mut times = backlog_through_three_workers(&mut app, n, 7000).await;
    let worst = worst_window(&mut times, SEC);
    assert!(
        worst <= rate as usize + burst,
        "{worst} calls in a 1 s window at the sandbox (R + burst = {})",
        rate as usize + burst
    );
    let span = *times.last().unwrap() as f64 / SEC as f64;
    let sustained = (n - 1) as f64 / span;
    let mut gaps: Vec<i64> = times.windows(2).map(|w| (w[1] - w[0]) / 1000).collect();
    gaps.sort_unstable();
    // A floor that catches a limiter admitting far less than R (a halved rate), not a speed
    // target: on a loaded 2-core CI machine the worker processes themselves can lag (seen:
    // 0.85 R with three other builds running). `kycq loadgen` measures the admitted rate.
    assert!(
        sustained >= 0.75 * rate,
        "sustained {sustained:.2}/s over the backlog (R = {rate}); largest gaps (ms): {:?}",
        &gaps[gaps.len().saturating_sub(8)..]
    );
    app.cleanup().await;
}

/// The bound `rate × T + burst` for every window `T` of 1, 2 and 5 s over the ledger's times.
fn assert_within_bound(times: &mut [i64], rate: f64, burst: usize, what: &str) {
    for t in [1, 2, 5] {
        let worst = worst_window(times, t * SEC);
        let bound = rate as usize * t as usize + burst;
        assert!(
            worst <= bound,
            "{what}: {worst} calls in a {t} s window at the sandbox (rate × T + burst = {bound}); \
             first calls (ms): {:?}",
            times.iter().take(30).map(|x| x / 1000).collect::<Vec<_>>()
        );
    }
}

/// Three cold worker processes start on a backlog and call a distant vendor over HTTPS: 30–50
/// ms to answer, and 150 ms for each new connection's TLS handshake (its round trips). Every
/// worker opens its first connections while its first slots come; calls on new connections
/// must not leave late and bunch with those on connections already open. The bound holds from
/// the very first call, not only once the pipeline is warm.
#[tokio::test]
async fn a_cold_start_on_a_backlog_holds_the_bound_from_the_first_call() {
    let (rate, burst, n) = (20.0, 1usize, 300);
    let dir = tempfile::tempdir().unwrap();
    let (files, ca) = tls_files(dir.path());
    let mut app = TestApp::with(Options {
        env: vec![
            ("KYCQ__PROVIDERS__TENCENT__RATE_PER_SEC".into(), "20".into()),
            ("KYCQ__PROVIDERS__TENCENT__BURST".into(), "1".into()),
            (
                "KYCQ__PROVIDERS__TENCENT__CA_FILE".into(),
                ca.display().to_string(),
            ),
        ],
        sandbox: kycq::sandbox::SandboxSettings {
            latency: Duration::from_millis(30),
            latency_jitter: Duration::from_millis(20),
            tls: Some(files),
            handshake_delay: Duration::from_millis(150),
            ..Options::default().sandbox
        },
        exclusive: true,
        amqp_urls: Vec::new(),
    })
    .await;
    let mut times = backlog_through_three_workers(&mut app, n, 6000).await;
    let first_second = times.iter().filter(|&&t| t <= SEC).count();
    assert!(
        first_second <= rate as usize + burst,
        "{first_second} calls in the first second (rate + burst = {}); first calls (ms): {:?}",
        rate as usize + burst,
        times.iter().take(30).map(|x| x / 1000).collect::<Vec<_>>()
    );
    println!(
        "cold start: {first_second} calls in the first second; worst 1/2/5 s windows {}/{}/{}",
        worst_window(&mut times, SEC),
        worst_window(&mut times, 2 * SEC),
        worst_window(&mut times, 5 * SEC)
    );
    assert_within_bound(&mut times, rate, burst, "cold start");
    app.cleanup().await;
}

/// Workers SIGKILLed mid-batch, each replaced at once by a cold one, over HTTPS with latency
/// jitter: a killed worker's reserved slots simply go unused, the new one takes fresh slots
/// from the shared bucket once its connection is ready, and the bound holds for every window.
/// A request whose call was in flight when its worker died ends `billing_unknown` (never
/// called again); every other is answered; no person is ever called twice.
#[tokio::test]
async fn workers_killed_and_replaced_mid_batch_keep_the_bound() {
    let (rate, burst, n) = (20.0, 1usize, 240);
    let dir = tempfile::tempdir().unwrap();
    let (files, ca) = tls_files(dir.path());
    let mut app = TestApp::with(Options {
        env: vec![
            ("KYCQ__PROVIDERS__TENCENT__RATE_PER_SEC".into(), "20".into()),
            ("KYCQ__PROVIDERS__TENCENT__BURST".into(), "1".into()),
            (
                "KYCQ__PROVIDERS__TENCENT__CA_FILE".into(),
                ca.display().to_string(),
            ),
            // A killed worker's claims run out in 3 s, not 30.
            ("KYCQ__WORKER__LEASE_SECS".into(), "3".into()),
        ],
        sandbox: kycq::sandbox::SandboxSettings {
            latency: Duration::from_millis(30),
            latency_jitter: Duration::from_millis(20),
            tls: Some(files),
            handshake_delay: Duration::from_millis(150),
            ..Options::default().sandbox
        },
        exclusive: true,
        amqp_urls: Vec::new(),
    })
    .await;
    let batch = publish_batch(n, 6600);
    for m in &batch {
        app.publish(m).await;
    }
    let ids: Vec<String> = batch.iter().map(|m| m.request_id.clone()).collect();
    let mut workers: Vec<Child> = (0..3).map(|_| app.spawn_worker_process(&[]).0).collect();
    let ledger = app.sandbox.ledger.clone();
    let mut killed_at = Vec::new();
    for calls in [40, 90, 140] {
        wait_calls(&ledger, calls).await;
        let mut victim = workers.remove(0);
        crate::process::signal(&victim, "-KILL");
        let _ = victim.wait();
        killed_at.push(ledger.len());
        workers.push(app.spawn_worker_process(&[]).0);
    }
    let results = app.results_for(&ids, Duration::from_secs(120)).await;
    stop_all(&mut workers);

    let mut unknown = 0;
    for (id, rs) in &results {
        let first = serde_json::to_value(&rs[0]).unwrap();
        assert!(
            rs.iter().all(|r| serde_json::to_value(r).unwrap() == first),
            "{id}: differing results {rs:?}"
        );
        match (rs[0].status, rs[0].reason_code) {
            (kycq::check::Status::Completed, _) => {}
            (kycq::check::Status::Failed, kycq::check::ReasonCode::BillingUnknown) => unknown += 1,
            other => panic!("{id}: {other:?}"),
        }
    }
    assert_one_stored_each(&app, n).await;
    let mut people: Vec<_> = ledger
        .entries()
        .iter()
        .map(|e| e.subject_key.clone().expect("an ID number"))
        .collect();
    let calls = people.len();
    people.sort();
    people.dedup();
    assert_eq!(people.len(), calls, "nobody called twice");
    // A call journaled but not yet written when its worker died is in doubt too: the
    // vendor may never have seen it.
    assert!(
        n - unknown <= calls && calls <= n,
        "{calls} calls for {n} requests, {unknown} in doubt"
    );
    let mut times = ledger_times(&app, "tencent");
    println!(
        "workers killed at {killed_at:?} calls: {unknown} billing_unknown, {calls} calls; worst 1/2/5 s windows {}/{}/{}",
        worst_window(&mut times, SEC),
        worst_window(&mut times, 2 * SEC),
        worst_window(&mut times, 5 * SEC)
    );
    assert_within_bound(&mut times, rate, burst, "workers killed");
    app.cleanup().await;
}

/// One stored row per request, `n` requests in all.
async fn assert_one_stored_each(app: &TestApp, n: usize) {
    let (rows, distinct): (i64, i64) =
        sqlx::query_as("SELECT count(*), count(DISTINCT request_id) FROM checks")
            .fetch_one(app.db().await)
            .await
            .unwrap();
    assert_eq!(
        (rows, distinct),
        (n as i64, n as i64),
        "one stored result per request"
    );
}

/// After a batch of `n` different people: one stored row per request and one vendor call each,
/// billed once — nobody billed twice (judged from the database and the sandbox's ledger).
pub(crate) async fn assert_one_stored_one_billed(app: &TestApp, n: usize) {
    assert_one_stored_each(app, n).await;
    let entries = app.sandbox.ledger.entries();
    assert_eq!(entries.len(), n, "one vendor call per request");
    let mut people: Vec<_> = entries
        .iter()
        .filter(|e| e.billed)
        .map(|e| e.subject_key.clone().expect("an ID number"))
        .collect();
    assert_eq!(people.len(), n, "every call billed once");
    people.sort();
    people.dedup();
    assert_eq!(people.len(), n, "nobody billed twice");
}

pub(crate) async fn wait_calls(ledger: &kycq::sandbox::Ledger, k: usize) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while ledger.len() < k {
        assert!(Instant::now() < deadline, "only {} calls", ledger.len());
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn redis_stopped_mid_run_every_request_still_gets_its_result() {
    let mut redis = OwnRedis::start(free_port()).await;
    let (rate, n) = (20.0, 200);
    let mut app = TestApp::with(Options {
        env: vec![
            ("KYCQ__PROVIDERS__TENCENT__RATE_PER_SEC".into(), "20".into()),
            ("KYCQ__PROVIDERS__TENCENT__BURST".into(), "1".into()),
            (
                "KYCQ__PROVIDERS__TENCENT__FALLBACK_SHARE".into(),
                "0.3333".into(),
            ),
            ("KYCQ__REDIS__URL".into(), redis.url()),
            ("KYCQ__REDIS__PROBE_INTERVAL_MS".into(), "300".into()),
            // 3 × 4 callers hold at most 12 shared slots (~0.6 s) when Redis goes away.
            ("KYCQ__WORKER__CONCURRENCY".into(), "4".into()),
            ("KYCQ__AMQP__PREFETCH".into(), "4".into()),
        ],
        exclusive: true,
        ..Options::default()
    })
    .await;
    let batch = publish_batch(n, 8000);
    for m in &batch {
        app.publish(m).await;
    }
    let spawned: Vec<_> = (0..3).map(|_| app.spawn_worker_process(&[])).collect();
    let logs: Vec<_> = spawned.iter().map(|s| s.1.clone()).collect();
    let mut workers: Vec<Child> = spawned.into_iter().map(|s| s.0).collect();
    let ids: Vec<String> = batch.iter().map(|m| m.request_id.clone()).collect();

    let ledger = app.sandbox.ledger.clone();
    wait_calls(&ledger, 40).await;
    redis.stop();
    let stopped_at = ledger.len();
    wait_calls(&ledger, stopped_at + 80).await;
    redis.restart().await;
    let results = app.results_for(&ids, Duration::from_secs(90)).await;
    stop_all(&mut workers);

    // Every request got exactly its result; nothing was dead-lettered.
    assert_eq!(results.len(), n);
    for (id, rs) in &results {
        assert!(
            rs.iter()
                .all(|r| r.status == kycq::check::Status::Completed),
            "{id}: {rs:?}"
        );
    }
    assert!(app.dead_letters().await.is_empty());
    let entries = app.sandbox.ledger.entries();
    assert_eq!(entries.len(), n, "one call per request");

    // Each worker logged going down and coming back exactly once.
    for log in &logs {
        let text = std::fs::read_to_string(log).unwrap();
        assert_eq!(
            text.matches("redis unreachable: rate limits fall back")
                .count(),
            1,
            "{text}"
        );
        assert_eq!(
            text.matches("redis answers again: rate limits are shared again")
                .count(),
            1,
            "{text}"
        );
    }
    // Without Redis the three shares add up to at most R; around the switches each worker
    // may add its own burst.
    let mut times = ledger_times(&app, "tencent");
    let away: Vec<i64> = times[stopped_at + 20..stopped_at + 70].to_vec();
    let away_rate = (away.len() - 1) as f64 * SEC as f64 / (away[away.len() - 1] - away[0]) as f64;
    assert!(
        away_rate <= rate,
        "{away_rate:.2}/s without Redis (R = {rate})"
    );
    let worst = worst_window(&mut times, SEC);
    assert!(worst <= rate as usize + 3, "{worst} calls in a 1 s window");
    app.cleanup().await;
    drop(redis);
}

/// Redis goes away under three workers; three more start during the outage. Each worker's
/// share follows the fleet its heartbeats count (`rate / live workers`, `fallback_share` left at
/// its default 1.0), and a new worker calls only once every other has counted it: the vendor
/// sees no more than its limit before, during and after the scale-up.
#[tokio::test]
async fn workers_added_during_a_redis_outage_keep_the_fleet_within_the_limit() {
    let mut redis = OwnRedis::start(free_port()).await;
    let (rate, n) = (20.0, 420);
    let mut app = TestApp::with(Options {
        env: vec![
            ("KYCQ__PROVIDERS__TENCENT__RATE_PER_SEC".into(), "20".into()),
            ("KYCQ__PROVIDERS__TENCENT__BURST".into(), "1".into()),
            ("KYCQ__REDIS__URL".into(), redis.url()),
            ("KYCQ__REDIS__PROBE_INTERVAL_MS".into(), "300".into()),
            ("KYCQ__WORKER__HEARTBEAT_SECS".into(), "1".into()),
            ("KYCQ__WORKER__CONCURRENCY".into(), "4".into()),
            ("KYCQ__AMQP__PREFETCH".into(), "4".into()),
        ],
        exclusive: true,
        ..Options::default()
    })
    .await;
    let batch = publish_batch(n, 8500);
    for m in &batch {
        app.publish(m).await;
    }
    let mut spawned: Vec<_> = (0..3).map(|_| app.spawn_worker_process(&[])).collect();
    let ledger = app.sandbox.ledger.clone();
    // Every worker has beaten and been counted (a beat a second, counted after 1 s + the
    // 2 s beat timeout) before Redis goes away.
    tokio::time::sleep(Duration::from_secs(3)).await;
    wait_calls(&ledger, 40).await;
    redis.stop();
    let stopped = Instant::now();
    let stopped_at = ledger.len();
    tokio::time::sleep(Duration::from_secs(3)).await;
    let grown_at = ledger.len();
    spawned.extend((0..3).map(|_| app.spawn_worker_process(&[])));
    tokio::time::sleep(Duration::from_secs(9)).await;
    let outage = stopped.elapsed();
    let restarted_at = ledger.len();
    redis.restart().await;
    let ids: Vec<String> = batch.iter().map(|m| m.request_id.clone()).collect();
    let results = app.results_for(&ids, Duration::from_secs(120)).await;
    let (mut workers, logs): (Vec<Child>, Vec<_>) = spawned.into_iter().unzip();
    stop_all(&mut workers);

    assert_eq!(results.len(), n);
    for (id, rs) in &results {
        assert!(
            rs.iter()
                .all(|r| r.status == kycq::check::Status::Completed),
            "{id}: {rs:?}"
        );
    }
    let times = ledger_times(&app, "tencent");
    assert_eq!(times.len(), n, "one call per request");
    // Falling back, every worker may add its own burst of 1 to rate × T: 6 workers.
    let away = &mut times[stopped_at..restarted_at].to_vec();
    assert!(
        away.len() as f64 <= rate * outage.as_secs_f64() + 6.0,
        "{} calls in {outage:?} without Redis (R = {rate})",
        away.len()
    );
    for t in [1, 2, 5] {
        let worst = worst_window(away, t * SEC);
        assert!(
            worst <= rate as usize * t as usize + 6,
            "{worst} calls in a {t} s window without Redis"
        );
    }
    // After the scale-up (the new workers counted), six shares of R/6.
    let after: Vec<i64> = times[grown_at..restarted_at].to_vec();
    let after_rate =
        (after.len() - 1) as f64 * SEC as f64 / (after[after.len() - 1] - after[0]) as f64;
    assert!(
        after_rate <= rate * 1.05,
        "{after_rate:.2}/s with six workers and no Redis (R = {rate})"
    );
    // The old workers recounted; the new ones waited to be counted.
    let texts: Vec<String> = logs
        .iter()
        .map(|l| std::fs::read_to_string(l).unwrap())
        .collect();
    for text in &texts[..3] {
        assert!(text.contains("live_workers=6"), "{text}");
    }
    for text in &texts[3..] {
        assert!(!text.contains("live_workers=3"), "{text}");
    }
    println!(
        "outage {outage:?}: {} calls ({:.2}/s), {after_rate:.2}/s after the scale-up",
        away.len(),
        away.len() as f64 / outage.as_secs_f64()
    );
    app.cleanup().await;
    drop(redis);
}

/// A backlog: callers hold slots reserved up to a second ahead when the vendor answers
/// "throttled". Those slots do not go during the pause: each waits it out and takes a fresh
/// slot after it.
#[tokio::test]
async fn a_throttled_answer_pushes_back_slots_already_reserved() {
    let mut app = TestApp::with(Options {
        env: vec![
            ("KYCQ__PROVIDERS__TENCENT__RATE_PER_SEC".into(), "20".into()),
            ("KYCQ__PROVIDERS__TENCENT__BURST".into(), "1".into()),
            (
                "KYCQ__PROVIDERS__TENCENT__THROTTLE_COOLDOWN_MS".into(),
                "800".into(),
            ),
            (
                "KYCQ__PROVIDERS__TENCENT__THROTTLE_MIN_SHARE".into(),
                "1.0".into(),
            ),
            ("KYCQ__WORKER__CONCURRENCY".into(), "16".into()),
            ("KYCQ__AMQP__PREFETCH".into(), "16".into()),
        ],
        exclusive: true,
        ..Options::default()
    })
    .await;
    let mut batch = publish_batch(40, 9300);
    batch.insert(8, mobile3(&identity(Scenario::ThrottledOnce, 9399)));
    for m in &batch {
        app.publish(m).await;
    }
    app.start_worker().await;
    let ids: Vec<String> = batch.iter().map(|m| m.request_id.clone()).collect();
    let results = app.results_for(&ids, Duration::from_secs(60)).await;
    assert_eq!(results.len(), batch.len());
    let entries = app.sandbox.ledger.entries();
    let throttled = entries
        .iter()
        .find(|e| e.code == "RequestLimitExceeded")
        .expect("the vendor said throttled")
        .at;
    // A call already past its gate when the answer came may still arrive (one slot: 51 ms).
    let during: Vec<i64> = entries
        .iter()
        .map(|e| (e.at - throttled).num_milliseconds())
        .filter(|&ms| ms > 60 && ms < 790)
        .collect();
    assert!(
        during.is_empty(),
        "calls during the 800 ms pause, ms after the throttled answer: {during:?}"
    );
    app.cleanup().await;
}

#[tokio::test]
async fn a_throttled_answer_at_the_sandbox_pauses_every_later_call_for_the_cooldown() {
    let mut app = TestApp::with(Options {
        env: vec![
            ("KYCQ__PROVIDERS__TENCENT__RATE_PER_SEC".into(), "50".into()),
            ("KYCQ__PROVIDERS__TENCENT__BURST".into(), "5".into()),
            (
                "KYCQ__PROVIDERS__TENCENT__THROTTLE_COOLDOWN_MS".into(),
                "800".into(),
            ),
        ],
        ..Options::default()
    })
    .await;
    app.start_worker().await;
    let throttled = mobile3(&identity(Scenario::ThrottledOnce, 9100));
    app.publish(&throttled).await;
    let ledger = app.sandbox.ledger.clone();
    wait_calls(&ledger, 1).await;
    let t0 = ledger.entries()[0].at;
    assert_eq!(ledger.entries()[0].code, "RequestLimitExceeded");
    let batch = publish_batch(10, 9200);
    for m in &batch {
        app.publish(m).await;
    }
    let mut ids: Vec<String> = batch.iter().map(|m| m.request_id.clone()).collect();
    ids.push(throttled.request_id.clone());
    let results = app.results_for(&ids, Duration::from_secs(30)).await;
    assert_eq!(
        results[&throttled.request_id][0].attempts, 2,
        "retried once"
    );
    let later: Vec<_> = ledger.entries().into_iter().skip(1).collect();
    assert_eq!(later.len(), 11);
    for e in &later {
        let after = (e.at - t0).num_milliseconds();
        assert!(after >= 790, "a call {after} ms after the throttled answer");
    }
    app.cleanup().await;
}
