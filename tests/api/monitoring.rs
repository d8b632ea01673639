//! The monitoring files against a real worker: every `kycq_*` metric that the alert rules
//! (`deploy/prometheus/rules/kycq.yml`) and the Grafana dashboard
//! (`deploy/grafana/dashboards/kycq.json`) select — with the exact label values they match on —
//! is on the `/metrics` of `kycq worker` processes that went through the paths those metrics
//! count (billing unknown, a vendor throttling, an unknown code, invalid input, a refused
//! account opening the circuit, parked requests, Redis away, a saturated bucket). Renaming a
//! metric or a label value fails here. Each alert's annotations and runbook anchor are checked
//! against the book's Monitoring page. `tools/ci/monitoring.sh` checks the files' syntax with
//! promtool.

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::process::Child;
use std::time::Duration;

use kycq::ops::enqueue::RequestMessage;
use kycq::sandbox::scenarios::{identity, Scenario};

use crate::helpers::{free_port, mobile3, Options, TestApp};

const T: Duration = Duration::from_secs(60);

fn repo_file(path: &str) -> String {
    let p = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(path);
    std::fs::read_to_string(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}

/// The alerting rules: (alert name, expr, labels, annotations).
type Rule = (
    String,
    String,
    BTreeMap<String, String>,
    BTreeMap<String, String>,
);

fn alert_rules() -> Vec<Rule> {
    let doc: serde_norway::Value =
        serde_norway::from_str(&repo_file("deploy/prometheus/rules/kycq.yml")).unwrap();
    let map = |v: &serde_norway::Value| -> BTreeMap<String, String> {
        v.as_mapping()
            .map(|m| {
                m.iter()
                    .map(|(k, v)| {
                        (
                            k.as_str().unwrap().to_owned(),
                            v.as_str().unwrap().to_owned(),
                        )
                    })
                    .collect()
            })
            .unwrap_or_default()
    };
    let mut out = Vec::new();
    for group in doc["groups"].as_sequence().unwrap() {
        for rule in group["rules"].as_sequence().unwrap() {
            out.push((
                rule["alert"]
                    .as_str()
                    .expect("alerting rules only")
                    .to_owned(),
                rule["expr"].as_str().unwrap().to_owned(),
                map(&rule["labels"]),
                map(&rule["annotations"]),
            ));
        }
    }
    out
}

/// Every PromQL expression of the dashboard: the panels' targets and the variables' selectors.
fn dashboard_exprs() -> Vec<String> {
    fn walk(v: &serde_json::Value, out: &mut Vec<String>) {
        match v {
            serde_json::Value::Object(m) => {
                for (k, v) in m {
                    match (k.as_str(), v) {
                        ("expr" | "definition", serde_json::Value::String(s)) => {
                            out.push(s.clone())
                        }
                        _ => walk(v, out),
                    }
                }
            }
            serde_json::Value::Array(a) => a.iter().for_each(|v| walk(v, out)),
            _ => {}
        }
    }
    let dash: serde_json::Value =
        serde_json::from_str(&repo_file("deploy/grafana/dashboards/kycq.json")).unwrap();
    let mut out = Vec::new();
    walk(&dash, &mut out);
    out
}

/// The `kycq_*` metrics an expression selects, each with the label values it matches exactly
/// (`label="value"`; regex and negative matchers say nothing about what must exist).
fn selected(expr: &str, into: &mut BTreeMap<String, BTreeSet<(String, String)>>) {
    let b = expr.as_bytes();
    let ident = |c: u8| c.is_ascii_alphanumeric() || c == b'_' || c == b':';
    let mut i = 0;
    while let Some(at) = expr[i..].find("kycq_").map(|k| k + i) {
        let mut end = at + "kycq_".len();
        while end < b.len() && ident(b[end]) {
            end += 1;
        }
        if at > 0 && ident(b[at - 1]) {
            i = end;
            continue; // part of another identifier
        }
        let labels = into.entry(expr[at..end].to_owned()).or_default();
        if b.get(end) == Some(&b'{') {
            let close = expr[end..].find('}').expect("closing brace") + end;
            for m in expr[end + 1..close].split(',') {
                if let Some((l, v)) = m.split_once('=') {
                    let (l, v) = (l.trim(), v.trim());
                    if !l.ends_with('!') && !v.starts_with('~') {
                        labels.insert((l.to_owned(), v.trim_matches('"').to_owned()));
                    }
                }
            }
            i = close;
        } else {
            i = end;
        }
    }
}

/// Every metric the rules and the dashboard select, with their exact label matchers.
fn referenced() -> BTreeMap<String, BTreeSet<(String, String)>> {
    let mut out = BTreeMap::new();
    for (_, expr, _, _) in alert_rules() {
        selected(&expr, &mut out);
    }
    for expr in dashboard_exprs() {
        selected(&expr, &mut out);
    }
    out
}

/// The samples of a Prometheus text exposition: metric name → label sets.
fn samples(text: &str) -> BTreeMap<String, Vec<BTreeMap<String, String>>> {
    let mut out: BTreeMap<String, Vec<BTreeMap<String, String>>> = BTreeMap::new();
    for line in text
        .lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
    {
        let (name, rest) = match line.find(['{', ' ']) {
            Some(k) => line.split_at(k),
            None => continue,
        };
        let mut labels = BTreeMap::new();
        if let Some(body) = rest.strip_prefix('{') {
            let body = &body[..body.rfind('}').expect("closing brace")];
            // kycq's label values hold no quotes or commas (codes and names only).
            for pair in body.split(',').filter(|p| !p.is_empty()) {
                let (l, v) = pair.split_once('=').expect("label=value");
                labels.insert(l.to_owned(), v.trim_matches('"').to_owned());
            }
        }
        out.entry(name.to_owned()).or_default().push(labels);
    }
    out
}

async fn scrape(port: u16) -> String {
    let url = format!("http://127.0.0.1:{port}/metrics");
    let deadline = tokio::time::Instant::now() + T;
    loop {
        if let Ok(r) = reqwest::get(&url).await {
            if r.status() == 200 {
                return r.text().await.unwrap();
            }
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "no /metrics on {url}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn stop(mut child: Child) {
    let _ = child.kill();
    let _ = child.wait();
}

/// Publish, and wait until each has its result (whatever it is).
async fn run(app: &mut TestApp, requests: &[RequestMessage]) {
    for m in requests {
        app.publish(m).await;
    }
    let ids: Vec<String> = requests.iter().map(|m| m.request_id.clone()).collect();
    app.results_for(&ids, T).await;
}

#[test]
fn the_extractor_finds_names_and_exact_label_values() {
    let mut got = BTreeMap::new();
    selected(
        r#"sum by (reason) ((kycq_parked_total{reason="no_provider", instance=~"$instance"} unless kycq_parked_total offset 10m)) / up{job="kycq"} + histogram_quantile(0.5, rate(kycq_provider_call_seconds_bucket{provider!="x"}[5m])) + my_kycq_other"#,
        &mut got,
    );
    let want: BTreeMap<String, BTreeSet<(String, String)>> = [
        (
            "kycq_parked_total".to_owned(),
            [("reason".to_owned(), "no_provider".to_owned())].into(),
        ),
        ("kycq_provider_call_seconds_bucket".to_owned(), [].into()),
    ]
    .into();
    assert_eq!(got, want);
}

/// Each alert has a severity, a summary, a description and a runbook_url whose anchor is a
/// heading of the book's Monitoring page (mdBook's heading ids: the alert's name, lower-cased).
#[test]
fn every_alert_is_annotated_and_its_runbook_is_a_heading_of_the_monitoring_page() {
    let page = repo_file("docs/src/guides/monitoring.md");
    let headings: BTreeSet<String> = page
        .lines()
        .filter(|l| l.starts_with('#'))
        .map(|l| {
            l.trim_start_matches('#')
                .trim()
                .to_lowercase()
                .chars()
                .filter(|c| c.is_alphanumeric() || *c == ' ' || *c == '-' || *c == '_')
                .map(|c| if c == ' ' { '-' } else { c })
                .collect()
        })
        .collect();
    let rules = alert_rules();
    assert!(rules.len() >= 10, "{rules:?}");
    for (alert, _, labels, annotations) in &rules {
        assert!(
            matches!(
                labels.get("severity").map(String::as_str),
                Some("critical" | "warning")
            ),
            "{alert}: {labels:?}"
        );
        for a in ["summary", "description", "runbook_url"] {
            assert!(annotations.contains_key(a), "{alert} has no {a}");
        }
        let url = &annotations["runbook_url"];
        let (page_url, anchor) = url.split_once('#').expect("an anchor");
        assert_eq!(page_url, "guides/monitoring.html", "{alert}");
        assert_eq!(anchor, alert.to_lowercase(), "{alert}: anchor of its own");
        assert!(
            headings.contains(anchor),
            "{alert}: no heading #{anchor} in docs/src/guides/monitoring.md"
        );
    }
}

/// The worker really exports every metric (and label value) the rules and the dashboard use.
/// Two `kycq worker` processes of their own (the metrics recorder is process-wide, so an
/// in-process worker would also show other tests' metrics): one with Redis through billing
/// unknown, throttling, retries, an unknown code, invalid input, a duplicate, a request_id
/// conflict and a refused account (circuit open, requests parked); one without Redis on a slow
/// bucket (fallback, saturated).
#[tokio::test]
async fn every_metric_the_alerts_and_the_dashboard_use_is_exported_by_a_worker() {
    let want = referenced();
    for name in [
        "kycq_provider_calls_total",
        "kycq_circuit_open_total",
        "kycq_ratelimit_admitted_total",
        "kycq_ratelimit_rate_per_second",
        "kycq_provider_call_seconds_bucket",
    ] {
        assert!(want.contains_key(name), "the extractor missed {name}");
    }
    let mut app = TestApp::with(Options::default()).await;

    // With Redis: every path but the fallback.
    let port = free_port();
    let listen = format!("127.0.0.1:{port}");
    let (worker, log) = app.spawn_worker_process(&[
        ("KYCQ__HTTP__LISTEN", listen.as_str()),
        ("KYCQ__WORKER__PARK_MAX_SECS", "1"),
        ("KYCQ__WORKER__MAX_WAIT_SECS", "3"),
    ]);
    let first = mobile3(&identity(Scenario::Match, 1));
    run(
        &mut app,
        &[
            first.clone(),
            mobile3(&identity(Scenario::Http504CutOff, 2)),
            mobile3(&identity(Scenario::ThrottledOnce, 3)),
            mobile3(&identity(Scenario::BusyOnce, 4)),
            mobile3(&identity(Scenario::UnknownCode, 5)),
            mobile3(&identity(Scenario::InvalidMobile, 6)),
        ],
    )
    .await;
    // The same request again (answered from the stored result), then its request_id for
    // another person (a conflict).
    run(&mut app, std::slice::from_ref(&first)).await;
    let mut conflict = mobile3(&identity(Scenario::Match, 7));
    conflict.request_id = first.request_id.clone();
    run(&mut app, &[conflict]).await;
    // An account in arrears: refused, the circuit opens, the route's only provider is out and
    // requests are parked until worker.max_wait_secs.
    run(
        &mut app,
        &[
            mobile3(&identity(Scenario::ProviderWide, 8)),
            mobile3(&identity(Scenario::Match, 9)),
        ],
    )
    .await;
    let mut scraped = samples(&scrape(port).await);
    stop(worker);
    let _ = std::fs::remove_file(log);

    // Without Redis, on a bucket of 2 calls a second that lets a caller wait 200 ms at most:
    // the worker limits itself alone (fallback) and refuses slots it cannot give in time
    // (saturated; the request waits and is answered later). The requests are queued before
    // the worker starts, so that they arrive together.
    let slow: Vec<RequestMessage> = (10..16)
        .map(|i| mobile3(&identity(Scenario::Match, i)))
        .collect();
    for m in &slow {
        app.publish(m).await;
    }
    let port = free_port();
    let listen = format!("127.0.0.1:{port}");
    let no_redis = format!("redis://127.0.0.1:{}/", free_port());
    let (worker, log) = app.spawn_worker_process(&[
        ("KYCQ__HTTP__LISTEN", listen.as_str()),
        ("KYCQ__REDIS__URL", no_redis.as_str()),
        ("KYCQ__PROVIDERS__TENCENT__RATE_PER_SEC", "2"),
        ("KYCQ__PROVIDERS__TENCENT__BURST", "1"),
        ("KYCQ__PROVIDERS__TENCENT__MAX_WAIT_MS", "200"),
        ("KYCQ__PROVIDERS__TENCENT__FALLBACK_SHARE", "1.0"),
    ]);
    let ids: Vec<String> = slow.iter().map(|m| m.request_id.clone()).collect();
    app.results_for(&ids, T).await;
    for (name, sets) in samples(&scrape(port).await) {
        scraped.entry(name).or_default().extend(sets);
    }
    stop(worker);
    let _ = std::fs::remove_file(log);

    let mut missing = Vec::new();
    for (name, labels) in &want {
        let Some(sets) = scraped.get(name) else {
            missing.push(format!("{name} (not on /metrics)"));
            continue;
        };
        for (l, v) in labels {
            if !sets.iter().any(|s| s.get(l) == Some(v)) {
                missing.push(format!("{name}{{{l}=\"{v}\"}}"));
            }
        }
    }
    assert!(
        missing.is_empty(),
        "the monitoring files select what no worker exports: {missing:?}\n\
         exported: {:?}",
        scraped.keys().collect::<Vec<_>>()
    );
    app.cleanup().await;
}
