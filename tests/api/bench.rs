//! The real `kycq bench` at its smallest (50 requests, one run), with and without the bare
//! pipeline: the JSON has every figure, every request got a result, and nothing the runs
//! created is left behind. No timing is checked: it is a benchmark, not a test of speed.

use lapin::options::QueueDeclareOptions;
use lapin::types::FieldTable;
use serde_json::Value;
use sqlx::postgres::PgPoolOptions;

use crate::helpers::{config_dir, AMQP_URL, PG_ADMIN_URL};

const FIGURES: [&str; 12] = [
    "msgs_per_sec",
    "p50_ms",
    "p99_ms",
    "added_p50_ms",
    "added_p99_ms",
    "pg_commits_per_request",
    "provider_calls_per_request",
    "worker_cpu_us_per_msg",
    "worker_peak_rss_mib",
    "machine_cpu_us_per_msg",
    "seconds",
    "window",
];

/// `kycq bench --requests 50 --runs 1 <extra> --json`, its report.
async fn bench(extra: &[&str]) -> Value {
    let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_kycq"))
        .args([
            "bench",
            "--requests",
            "50",
            "--runs",
            "1",
            "--prefetch",
            "8",
            "--concurrency",
            "4",
            "--provider-latency-ms",
            "5",
            "--json",
        ])
        .args(extra)
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env("KYCQ_CONFIG_DIR", config_dir())
        .env("KYCQ__LOG__LEVEL", "warn")
        .stdin(std::process::Stdio::null())
        .output()
        .await
        .expect("run kycq bench");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{:?}\n{stdout}\n{stderr}", out.status);
    serde_json::from_str(&stdout).unwrap_or_else(|e| panic!("{e}: {stdout}"))
}

/// Every figure of a run is there, every request got a `completed` result, with one provider
/// call each.
fn check_run(r: &Value) {
    for f in FIGURES {
        assert!(r[f].as_f64().is_some_and(f64::is_finite), "{f} in {r}");
    }
    assert!(r.get("pg_round_trips_per_request").is_some(), "{r}");
    assert_eq!(r["requests"], 50, "{r}");
    assert_eq!(r["results"], 50, "every request got a result: {r}");
    assert_eq!(r["statuses"]["completed"], 50, "{r}");
    assert_eq!(r["provider_calls_per_request"], 1.0, "{r}");
    assert_eq!(
        (r["prefetch"].as_u64(), r["concurrency"].as_u64()),
        (Some(8), Some(4))
    );
    assert_eq!(r["provider_latency_ms"], 5, "{r}");
    assert!(r["worker_peak_rss_mib"].as_f64().unwrap() > 0.0, "{r}");
    assert!(r["pg_commits_per_request"].as_f64().unwrap() >= 1.0, "{r}");
}

/// Nothing of run `id` is left: its queues and exchanges, its database, its Redis keys.
async fn assert_removed(id: &str) {
    let conn = kycq::broker::connect(AMQP_URL, "kycq test bench")
        .await
        .unwrap();
    for q in ["kyc.checks", "kyc.checks.dead", "kyc.checks.wait"] {
        let ch = conn.create_channel().await.unwrap();
        let passive = QueueDeclareOptions {
            passive: true,
            ..Default::default()
        };
        let name = format!("kycq-bench-{id}.{q}");
        let found = ch
            .queue_declare(name.as_str().into(), passive, FieldTable::default())
            .await;
        assert!(found.is_err(), "queue {name} is left");
    }
    let _ = conn.close(200, "ok".into()).await;
    let pool = PgPoolOptions::new()
        .max_connections(1)
        .connect(PG_ADMIN_URL)
        .await
        .unwrap();
    let n: i64 = sqlx::query_scalar("SELECT count(*) FROM pg_database WHERE datname = $1")
        .bind(format!("kycq_bench_{id}"))
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(n, 0, "database kycq_bench_{id} is left");
    pool.close().await;
    let client = redis::Client::open("redis://127.0.0.1:6379/").unwrap();
    let mut c = client.get_multiplexed_async_connection().await.unwrap();
    let keys: Vec<String> = redis::cmd("KEYS")
        .arg(format!("kycq-bench-{id}:*"))
        .query_async(&mut c)
        .await
        .unwrap();
    assert!(keys.is_empty(), "{keys:?}");
}

#[tokio::test]
async fn bench_reports_every_figure_and_a_result_for_every_request_and_cleans_up() {
    let report = bench(&[]).await;
    let runs = report["runs"].as_array().unwrap();
    assert_eq!(runs.len(), 1, "{report}");
    assert_eq!(runs[0]["pipeline"], "kycq");
    check_run(&runs[0]);
    assert_eq!(report["summary"].as_array().unwrap().len(), 1, "{report}");
    assert!(report["ratios"].as_array().unwrap().is_empty());
    assert_removed(runs[0]["id"].as_str().unwrap()).await;
}

#[tokio::test]
async fn bench_with_the_bare_pipeline_runs_both_and_compares_them() {
    let report = bench(&["--bare", "--pg-round-trips"]).await;
    let runs = report["runs"].as_array().unwrap();
    let pipelines: Vec<&str> = runs
        .iter()
        .map(|r| r["pipeline"].as_str().unwrap())
        .collect();
    assert_eq!(pipelines, ["kycq", "bare"], "{report}");
    for r in runs {
        check_run(r);
        // Counted by the proxy: at least the statements each pipeline runs per request.
        assert_eq!(r["pg_round_trips_source"], "proxy", "{r}");
        assert!(
            r["pg_round_trips_per_request"].as_f64().unwrap() >= 2.0,
            "{r}"
        );
        assert_removed(r["id"].as_str().unwrap()).await;
    }
    // The bare pipeline commits its INSERT and its UPDATE (and prepares each statement once
    // per connection).
    let bare = &runs[1];
    assert!(
        bare["pg_commits_per_request"].as_f64().unwrap() >= 2.0,
        "{bare}"
    );
    let ratios = report["ratios"].as_array().unwrap();
    assert_eq!(ratios.len(), 1, "{report}");
    assert!(ratios[0]["msgs_per_sec_ratio"].as_f64().unwrap() > 0.0);
}
