//! `kycq demo`: the sandbox and a worker in this process, a sample batch that covers every
//! outcome, a progress bar, and a summary (counts, billing, latency).

use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, Instant};

use anyhow::Context;
use indicatif::{ProgressBar, ProgressStyle};
use lapin::BasicProperties;
use secrecy::{ExposeSecret, SecretString};
use tokio_util::sync::CancellationToken;

use crate::broker::{self, Publisher};
use crate::check::{Billed, CheckKind, CheckResult};
use crate::configuration::Settings;
use crate::ops::enqueue::{publish, ReplyQueue, RequestMessage};
use crate::providers::registry::{vendors_for, VENDORS};
use crate::sandbox::scenarios::{identity, Scenario};
use crate::sandbox::{self, SandboxSettings};

/// Scenarios the demo leaves out: a provider-wide failure opens the only provider's circuit and
/// would hold every other request of the batch for the cool-down (the tests cover it).
const SKIPPED: [Scenario; 1] = [Scenario::ProviderWide];

/// Run the demo. `extra` adds that many ordinary "match" requests to the batch (for latency).
pub async fn run(mut settings: Settings, extra: usize) -> anyhow::Result<()> {
    let shutdown = CancellationToken::new();
    // The sandbox, on a free loopback port; the "slow" identity outlasts the client timeout.
    let sb = sandbox::start(
        SandboxSettings {
            listen: "127.0.0.1:0".parse()?,
            slow_delay: Duration::from_secs(3),
            ..SandboxSettings::default()
        },
        shutdown.clone(),
    )
    .await
    .context("starting the sandbox")?;
    // The demo's own names and database, so it never touches a real deployment's.
    let run_id = format!("{:08x}", rand::random::<u32>());
    settings.topology.prefix = format!("kycq-demo-{run_id}.");
    // Its own rate-limit buckets too: the demo's rate must not share a deployment's bucket.
    settings.redis.key_prefix = format!("kycq-demo-{run_id}");
    settings.database.url =
        SecretString::from(demo_database_url(settings.database.url.expose_secret())?);
    settings.http.listen = String::new();
    // Every vendor of the registry points at the sandbox with its documented local credentials,
    // and each check's route tries every vendor that serves it, in registry order (mobile3 fails
    // over tencent → alibaba → alimarket; id2 and id2_period go to alibaba).
    for check in CheckKind::ALL {
        *settings.routes.for_check_mut(check) = vendors_for(check)
            .iter()
            .map(|v| v.name.to_owned())
            .collect();
    }
    for v in VENDORS {
        let s = settings
            .providers
            .get_mut(v.name)
            .with_context(|| format!("config has no [providers.{}] section", v.name))?;
        for (key, value) in v.sandbox_credentials {
            s.vendor.set(key, value);
        }
        // The sandbox has no rate limit of its own: the shared buckets run at 200/s (burst 20)
        // and a "throttled" answer pauses them for 200 ms, so the batch finishes in seconds.
        s.endpoint = format!("http://{}", sb.addr);
        s.timeout_ms = 1000;
        s.rate_per_sec = 200.0;
        s.burst = 20;
        s.throttle_cooldown_ms = 200;
        s.actions.clear();
    }
    settings.retry.initial_delay_ms = 100;
    settings.retry.max_delay_ms = 400;
    if settings.pii.key.is_none() {
        settings.pii.key = Some(SecretString::from(format!(
            "demo-{}",
            uuid::Uuid::new_v4().simple()
        )));
    }
    let names = settings.topology.names();

    let worker = crate::startup::start_worker(&settings, shutdown.clone()).await?;
    let conn = broker::connect_any(&settings.amqp.nodes(), "kycq demo").await?;
    broker::declare_topology(&conn, &names, settings.amqp.delivery_limit).await?;
    let publisher = Publisher::new(&conn, names.clone(), Duration::from_secs(30)).await?;
    let mut replies = ReplyQueue::open(&conn).await?;

    let batch = sample_batch(&run_id, extra);
    let expected: usize = batch.len();
    println!(
        "kycq demo — {} requests ({} documented test identities over 3 providers and 3 checks, 2 invalid, {extra} more matches, 1 duplicate, 1 malformed) against the built-in sandbox at {}",
        expected + 2,
        batch.len() - 2 - extra,
        sb.addr
    );
    let bar = ProgressBar::new(expected as u64);
    bar.set_style(
        ProgressStyle::with_template("{bar:40} {pos}/{len} results {msg}").expect("template"),
    );
    let mut sent_at: HashMap<String, Instant> = HashMap::new();
    for m in &batch {
        sent_at.insert(m.request_id.clone(), Instant::now());
        publish(&publisher, m, Some(replies.name())).await?;
    }
    // The same request again (answered from the stored result, never billed twice) and a
    // message that is not JSON (dead-lettered with its reason).
    publish(&publisher, &batch[0], Some(replies.name())).await?;
    publisher
        .publish_request("check.mobile3", b"{not json", BasicProperties::default())
        .await?;

    let mut results: BTreeMap<String, CheckResult> = BTreeMap::new();
    let mut latencies = Vec::new();
    let mut duplicates = 0;
    let deadline = Instant::now() + Duration::from_secs(120);
    while results.len() < expected && Instant::now() < deadline {
        let Some((_, r)) = replies.next(Duration::from_secs(5)).await else {
            continue;
        };
        if results.contains_key(&r.request_id) {
            duplicates += 1;
            continue;
        }
        if let Some(t) = sent_at.get(&r.request_id) {
            latencies.push(t.elapsed());
        }
        bar.inc(1);
        results.insert(r.request_id.clone(), r);
    }
    // The duplicate's answer may arrive last.
    if duplicates == 0 {
        if let Some((_, r)) = replies.next(Duration::from_secs(5)).await {
            duplicates += usize::from(results.contains_key(&r.request_id));
        }
    }
    bar.finish_and_clear();
    tokio::time::sleep(Duration::from_millis(300)).await;
    let dead = broker::dlq::list(&conn, &names, 1000).await?;

    print_summary(
        &results, expected, duplicates, &latencies, &dead, &sb.ledger,
    );

    shutdown.cancel();
    let _ = worker.task.await;
    let _ = sb.task.await;
    delete_topology(&conn, &names).await;
    let _ = conn.close(200, "demo done".into()).await;
    anyhow::ensure!(
        results.len() == expected,
        "only {} of {expected} results arrived",
        results.len()
    );
    Ok(())
}

/// Every documented test identity (but the skipped ones) on the mobile3 route, a few on each
/// provider and check, two requests kycq's validation refuses, and `extra` ordinary matches.
fn sample_batch(run_id: &str, extra: usize) -> Vec<RequestMessage> {
    let mut out = Vec::new();
    let mut n = 0;
    let mut next_id = || {
        n += 1;
        format!("demo-{run_id}-{n:03}")
    };
    // Vary the identities per run so the sandbox's "once" scenarios start fresh.
    let variant = u32::from_str_radix(&run_id[..4], 16).unwrap_or(0) % 5000;
    for s in Scenario::ALL
        .iter()
        .copied()
        .filter(|s| !SKIPPED.contains(s))
    {
        let id = identity(s, variant);
        out.push(mobile3(next_id(), &id.name, &id.id_number, &id.mobile));
    }
    // Each provider pinned, and the ID checks (Alibaba).
    let verdicts = [Scenario::Match, Scenario::NameMismatch, Scenario::NoRecord];
    // Every mobile3 vendor after the head of the route, pinned.
    let pinned: Vec<&str> = vendors_for(CheckKind::Mobile3)
        .iter()
        .skip(1)
        .map(|v| v.name)
        .collect();
    for (i, provider) in pinned.into_iter().enumerate() {
        for s in verdicts {
            let id = identity(s, variant + 6000 + i as u32);
            let mut m = mobile3(next_id(), &id.name, &id.id_number, &id.mobile);
            m.provider = Some(provider.into());
            out.push(m);
        }
    }
    for (i, s) in verdicts.into_iter().enumerate() {
        let id = identity(s, variant + 7000 + i as u32);
        out.push(RequestMessage {
            request_id: next_id(),
            check: "id2".into(),
            name: id.name.clone(),
            id_number: id.id_number.clone(),
            ..Default::default()
        });
        out.push(RequestMessage {
            request_id: next_id(),
            check: "id2_period".into(),
            name: id.name,
            id_number: id.id_number,
            validity_start: Some("20201001".into()),
            validity_end: Some(if i == 0 { "long-term" } else { "20301001" }.into()),
            ..Default::default()
        });
    }
    let ok = identity(Scenario::Match, variant);
    let mut bad_id = ok.id_number.clone();
    let last = if bad_id.ends_with('0') { '1' } else { '0' };
    bad_id.replace_range(17.., &last.to_string());
    out.push(mobile3(next_id(), &ok.name, &bad_id, &ok.mobile));
    out.push(mobile3(next_id(), &ok.name, &ok.id_number, "12345678901"));
    for i in 0..extra {
        let id = identity(Scenario::Match, variant + 1 + i as u32);
        out.push(mobile3(next_id(), &id.name, &id.id_number, &id.mobile));
    }
    out
}

fn mobile3(request_id: String, name: &str, id_number: &str, mobile: &str) -> RequestMessage {
    RequestMessage {
        request_id,
        check: "mobile3".into(),
        name: name.into(),
        id_number: id_number.into(),
        mobile: Some(mobile.into()),
        ..Default::default()
    }
}

fn print_summary(
    results: &BTreeMap<String, CheckResult>,
    expected: usize,
    duplicates: usize,
    latencies: &[Duration],
    dead: &[(broker::dlq::DeadLetterInfo, Vec<u8>)],
    ledger: &sandbox::ledger::Ledger,
) {
    let count = |f: &dyn Fn(&CheckResult) -> String| {
        let mut m: BTreeMap<String, usize> = BTreeMap::new();
        for r in results.values() {
            *m.entry(f(r)).or_default() += 1;
        }
        m.into_iter()
            .map(|(k, v)| format!("{k} {v}"))
            .collect::<Vec<_>>()
            .join(", ")
    };
    println!(
        "results: {} of {expected} (the duplicate answered {duplicates}× from the stored result)",
        results.len()
    );
    println!("  by status:  {}", count(&|r| r.status.as_str().to_owned()));
    println!(
        "  by verdict: {}",
        count(&|r| r.verdict.map_or("-", |v| v.as_str()).to_owned())
    );
    println!(
        "  by reason:  {}",
        count(&|r| r.reason_code.as_str().to_owned())
    );
    let billed = results.values().filter(|r| r.billed == Billed::Yes).count();
    let unknown = results
        .values()
        .filter(|r| r.billed == Billed::Unknown)
        .count();
    let entries = ledger.entries();
    println!(
        "billing: {billed} results billed, {unknown} unknown; the sandbox saw {} calls, {} billed",
        entries.len(),
        ledger.billed_count()
    );
    let attempts: u32 = results.values().map(|r| r.attempts).sum();
    println!("provider calls made by kycq: {attempts}");
    let mut l: Vec<Duration> = latencies.to_vec();
    l.sort();
    let pct = |p: f64| {
        l.get(((l.len() as f64 - 1.0) * p).round() as usize)
            .copied()
            .unwrap_or_default()
    };
    println!(
        "latency (publish → result): p50 {}, p99 {}, max {}",
        ms(pct(0.5)),
        ms(pct(0.99)),
        ms(l.last().copied().unwrap_or_default())
    );
    let mut reasons: BTreeMap<&str, usize> = BTreeMap::new();
    for (d, _) in dead {
        *reasons.entry(d.reason.as_str()).or_default() += 1;
    }
    println!(
        "dead-letter queue: {} ({})",
        dead.len(),
        reasons
            .iter()
            .map(|(k, v)| format!("{k} {v}"))
            .collect::<Vec<_>>()
            .join(", ")
    );
    println!();
    println!(
        "{:<18} {:<10} {:<9} {:<9} {:<13} {:<29} {:<7} {:<30} {:>5}  subject",
        "request_id",
        "check",
        "provider",
        "status",
        "verdict",
        "reason_code",
        "billed",
        "code",
        "calls"
    );
    for r in results.values() {
        println!(
            "{:<18} {:<10} {:<9} {:<9} {:<13} {:<29} {:<7} {:<30} {:>5}  {} {} {}",
            r.request_id,
            r.check.map_or("-", |c| c.as_str()),
            r.provider.as_deref().unwrap_or("-"),
            r.status.as_str(),
            r.verdict.map_or("-", |v| v.as_str()),
            r.reason_code.as_str(),
            r.billed.as_str(),
            r.provider_code.as_deref().unwrap_or("-"),
            r.attempts,
            r.subject.name.as_deref().unwrap_or(""),
            r.subject.id_number.as_deref().unwrap_or(""),
            r.subject.mobile.as_deref().unwrap_or("")
        );
    }
}

fn ms(d: Duration) -> String {
    format!("{:.1} ms", d.as_secs_f64() * 1000.0)
}

/// The configured database URL with `_demo` appended to the database name.
fn demo_database_url(url: &str) -> anyhow::Result<String> {
    let mut u = url::Url::parse(url).context("database.url")?;
    let db = u.path().trim_start_matches('/').to_owned();
    let db = if db.is_empty() { "kycq".to_owned() } else { db };
    u.set_path(&format!("/{db}_demo"));
    Ok(u.to_string())
}

/// Remove the demo's exchanges and queues (they are empty by now but for dead letters, which
/// the summary has shown); `kycq bench` removes each run's with it too.
pub(crate) async fn delete_topology(conn: &lapin::Connection, names: &crate::configuration::Names) {
    let Ok(ch) = conn.create_channel().await else {
        return;
    };
    for q in [&names.work_queue, &names.dead_queue, &names.wait_queue] {
        let _ = ch.queue_delete(q.as_str().into(), Default::default()).await;
    }
    for e in [
        &names.requests,
        &names.results,
        &names.dead_exchange,
        &names.wait_queue,
    ] {
        let _ = ch
            .exchange_delete(e.as_str().into(), Default::default())
            .await;
    }
    let _ = ch.close(200, "ok".into()).await;
}
