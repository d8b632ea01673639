//! Misconfiguration speaks: with the real `kycq` binary, a configuration the broker or Postgres
//! refuses stops the worker with exit code 2 naming the key and what the server said; the
//! health endpoint answers while Postgres is still being retried and `/readyz` says why; a
//! provider refusing its credentials is named by `/readyz`, logged once and counted, and
//! `kycq doctor` reports it FAILED and the others OK, without printing a secret.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use kycq::providers::registry::VENDORS;
use kycq::sandbox::scenarios::{identity, Scenario};

use crate::helpers::{config_dir, free_port, mobile3, unique, TestApp};

const T: Duration = Duration::from_secs(30);
const WRONG_SECRET: &str = "wrong-secret-never-printed";

/// Waits for `child` to exit (at most [`T`]) and returns its exit code and log.
async fn exit_of(mut child: Child, log: PathBuf) -> (Option<i32>, String) {
    let deadline = tokio::time::Instant::now() + T;
    let code = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status.code();
        }
        if tokio::time::Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let text = std::fs::read_to_string(&log).unwrap_or_default();
    let _ = std::fs::remove_file(&log);
    (code, text)
}

/// Extra environment, the key the error must name, and what the server said.
type Case<'a> = (&'a [(&'a str, &'a str)], &'a str, &'a str);

#[tokio::test]
async fn a_configuration_the_servers_refuse_exits_2_naming_the_key_and_what_the_server_said() {
    let app = TestApp::new().await;
    let cases: &[Case] = &[
        (
            &[(
                "KYCQ__AMQP__URL",
                "amqp://guest:wrong-password@127.0.0.1:5672/%2f",
            )],
            "amqp.url",
            "ACCESS_REFUSED",
        ),
        (
            &[(
                "KYCQ__AMQP__URL",
                "amqp://guest:guest@127.0.0.1:5672/no-such-vhost",
            )],
            "amqp.url",
            "no-such-vhost",
        ),
        (
            &[(
                "KYCQ__DATABASE__URL",
                "postgres://no_such_role@127.0.0.1:5432/postgres",
            )],
            "database.url",
            "no_such_role",
        ),
        (
            &[
                (
                    "KYCQ__DATABASE__URL",
                    "postgres://postgres@127.0.0.1:5432/kycq_no_such_database",
                ),
                ("KYCQ__DATABASE__CREATE_IF_MISSING", "false"),
            ],
            "database.url",
            "kycq_no_such_database",
        ),
    ];
    for (extra, key, said) in cases {
        let (child, log) = app.spawn_worker_process(extra);
        let (code, log) = exit_of(child, log).await;
        assert_eq!(code, Some(2), "{extra:?}: {log}");
        let last = log
            .lines()
            .find(|l| l.starts_with("kycq: "))
            .unwrap_or_default();
        assert!(
            last.contains(key) && last.contains(said),
            "{extra:?}: the last line names {key} and what the server said ({said}): {log}"
        );
        assert!(
            !log.contains("wrong-password"),
            "no password printed: {log}"
        );
    }
    app.cleanup().await;
}

async fn get(url: &str) -> Option<(u16, String)> {
    let r = reqwest::Client::new()
        .get(url)
        .timeout(Duration::from_secs(2))
        .send()
        .await
        .ok()?;
    Some((r.status().as_u16(), r.text().await.ok()?))
}

/// Polls `url` until `ok` holds for its answer (at most [`T`]); returns the last answer.
async fn poll(url: &str, ok: impl Fn(u16, &str) -> bool) -> Option<(u16, String)> {
    let deadline = tokio::time::Instant::now() + T;
    let mut last = None;
    while tokio::time::Instant::now() < deadline {
        if let Some((s, body)) = get(url).await {
            if ok(s, &body) {
                return Some((s, body));
            }
            last = Some((s, body));
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    panic!("{url} never answered as expected; last answer: {last:?}");
}

fn stop(mut child: Child) {
    let _ = child.kill();
    let _ = child.wait();
}

#[tokio::test]
async fn the_health_endpoint_answers_while_postgres_is_unreachable_and_readyz_says_why() {
    let app = TestApp::new().await;
    let port = free_port();
    let closed = free_port();
    let db_url = format!("postgres://postgres@127.0.0.1:{closed}/kycq");
    let (child, log) = app.spawn_worker_process(&[
        ("KYCQ__HTTP__LISTEN", &format!("127.0.0.1:{port}")),
        ("KYCQ__DATABASE__URL", &db_url),
    ]);
    let base = format!("http://127.0.0.1:{port}");
    let (_, body) = poll(&format!("{base}/healthz"), |s, _| s == 200)
        .await
        .unwrap();
    assert_eq!(body, "ok");
    let (status, body) = poll(&format!("{base}/readyz"), |_, b| b.contains("postgres"))
        .await
        .unwrap();
    assert_eq!(status, 503, "{body}");
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v["ready"], false);
    let reasons = v["reasons"].to_string();
    assert!(
        reasons.contains("postgres: not reachable yet at database.url (KYCQ__DATABASE__URL)")
            && reasons.contains("retrying"),
        "{reasons}"
    );
    assert!(reasons.contains("not consuming from RabbitMQ"), "{reasons}");
    // Still retrying, not exited: Postgres being down is not a misconfiguration.
    stop(child);
    let text = std::fs::read_to_string(&log).unwrap_or_default();
    let _ = std::fs::remove_file(&log);
    assert!(text.contains("postgres unavailable; retrying"), "{text}");
    app.cleanup().await;
}

/// The environment that points every vendor at the test's sandbox with its documented
/// credentials (the test app configures Tencent only).
fn every_vendor(app: &TestApp) -> Vec<(String, String)> {
    let mut env = Vec::new();
    for v in VENDORS {
        let up = v.name.to_uppercase();
        env.push((
            format!("KYCQ__PROVIDERS__{up}__ENDPOINT"),
            format!("http://{}", app.sandbox.addr),
        ));
        for (k, val) in v.sandbox_credentials {
            env.push((
                format!("KYCQ__PROVIDERS__{up}__{}", k.to_uppercase()),
                val.to_string(),
            ));
        }
    }
    env
}

/// `kycq doctor [--json]` with the test's environment plus `extra`: exit code and stdout.
/// Runs on a blocking thread: the sandbox answers from this test's runtime meanwhile.
async fn doctor(
    app: &TestApp,
    extra: &[(String, String)],
    json: bool,
) -> (Option<i32>, String, String) {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_kycq"));
    cmd.arg("doctor")
        .env_clear()
        .env("KYCQ_CONFIG_DIR", config_dir())
        .envs(&app.env)
        .envs(extra.iter().map(|(k, v)| (k, v)))
        .stdin(Stdio::null());
    if json {
        cmd.arg("--json");
    }
    let out = tokio::task::spawn_blocking(move || cmd.output())
        .await
        .unwrap()
        .expect("run kycq doctor");
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[tokio::test]
async fn a_wrong_provider_secret_is_named_by_readyz_logged_once_counted_and_failed_by_doctor() {
    let app = TestApp::new().await;
    let port = free_port();
    let wrong = [(
        "KYCQ__PROVIDERS__TENCENT__SECRET_KEY".to_owned(),
        WRONG_SECRET.to_owned(),
    )];
    let listen = format!("127.0.0.1:{port}");
    let mut extra: Vec<(&str, &str)> = wrong
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    extra.push(("KYCQ__HTTP__LISTEN", &listen));
    let (child, log) = app.spawn_worker_process(&extra);
    let base = format!("http://127.0.0.1:{port}");
    poll(&format!("{base}/readyz"), |s, _| s == 200).await;

    // One request: Tencent refuses the signature, the circuit opens, the request waits and
    // every cool-down (2 s here) a call probes Tencent again.
    let id = identity(Scenario::Match, 1);
    app.publish(&mobile3(&id)).await;
    let (status, body) = poll(&format!("{base}/readyz"), |s, b| {
        s == 503 && b.contains("provider tencent")
    })
    .await
    .unwrap();
    assert_eq!(status, 503, "{body}");
    assert!(
        body.contains(
            "provider tencent: credentials refused (AuthFailure.SignatureFailure) — check providers.tencent.secret_id/secret_key (KYCQ__PROVIDERS__TENCENT__SECRET_ID, KYCQ__PROVIDERS__TENCENT__SECRET_KEY)"
        ),
        "{body}"
    );
    // Let Tencent refuse a few more calls: still one ERROR line.
    let deadline = tokio::time::Instant::now() + T;
    while app.sandbox.ledger.calls_for_id(&id.id_number) < 3 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "Tencent was never called again"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let (_, metrics) = get(&format!("{base}/metrics")).await.unwrap();
    let refusals = metrics
        .lines()
        .find(|l| {
            l.starts_with("kycq_provider_refusals_total")
                && l.contains(r#"provider="tencent""#)
                && l.contains(r#"kind="credentials""#)
        })
        .unwrap_or_else(|| panic!("no refusal counter: {metrics}"));
    let count: f64 = refusals.rsplit(' ').next().unwrap().parse().unwrap();
    assert!(count >= 2.0, "{refusals}");
    assert!(
        metrics.contains(r#"kycq_provider_refused{provider="tencent"} 1"#),
        "{metrics}"
    );
    stop(child);
    let text = std::fs::read_to_string(&log).unwrap_or_default();
    let _ = std::fs::remove_file(&log);
    let errors: Vec<&str> = text
        .lines()
        .filter(|l| l.contains("ERROR") && l.contains("provider tencent: credentials refused"))
        .collect();
    assert_eq!(errors.len(), 1, "one ERROR line per transition: {text}");
    assert!(
        errors[0].contains("providers.tencent.secret_id/secret_key"),
        "{text}"
    );
    assert!(
        !text.contains(WRONG_SECRET),
        "the secret is never logged: {text}"
    );

    // `kycq doctor`: Tencent FAILED naming the key, the others OK, exit 1, no secret.
    let mut env = every_vendor(&app);
    env.extend(wrong.iter().cloned());
    let calls_before = app.sandbox.ledger.len();
    let (code, out, err) = doctor(&app, &env, false).await;
    assert_eq!(code, Some(1), "{out}{err}");
    let line = |target: &str| {
        out.lines()
            .find(|l| l.starts_with(target))
            .unwrap_or_else(|| panic!("no {target} line: {out}"))
            .to_owned()
    };
    let tencent = line("provider tencent");
    assert!(
        tencent.contains("FAILED")
            && tencent.contains("credentials refused (AuthFailure.SignatureFailure)")
            && tencent.contains("providers.tencent.secret_id/secret_key"),
        "{out}"
    );
    for ok in [
        "provider alibaba",
        "provider alimarket",
        "postgres",
        "rabbitmq",
        "redis",
    ] {
        assert!(line(ok).contains(" OK "), "{ok}: {out}");
    }
    assert!(out.ends_with("1 of 8 checks failed\n"), "{out}");
    assert!(err.contains("1 of 8 checks failed"), "{err}");
    let secrets: Vec<&str> = VENDORS
        .iter()
        .flat_map(|v| v.sandbox_credentials.iter().map(|(_, s)| *s))
        .chain([WRONG_SECRET, "guest:guest"])
        .collect();
    for s in &secrets {
        assert!(
            !out.contains(s) && !err.contains(s),
            "{s} printed: {out}{err}"
        );
    }
    // The probes cost nothing: three calls, none billed.
    let probes = &app.sandbox.ledger.entries()[calls_before..];
    assert_eq!(probes.len(), 3, "{probes:?}");
    assert!(probes.iter().all(|e| !e.billed), "{probes:?}");

    // With the right secret: every check OK, exit 0; --json says the same.
    let (code, out, err) = doctor(&app, &every_vendor(&app), false).await;
    assert_eq!(code, Some(0), "{out}{err}");
    assert!(out.ends_with("all checks passed\n"), "{out}");
    let (code, out, _) = doctor(&app, &env, true).await;
    assert_eq!(code, Some(1));
    let v: serde_json::Value = serde_json::from_str(&out).expect("JSON");
    assert_eq!(v["ok"], false);
    let failed: Vec<&str> = v["checks"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|c| c["ok"] == false)
        .map(|c| c["target"].as_str().unwrap())
        .collect();
    assert_eq!(failed, ["provider tencent"], "{out}");
    app.cleanup().await;
}

#[tokio::test]
async fn doctor_names_the_key_of_each_service_it_cannot_use() {
    let app = TestApp::new().await;
    let closed = free_port();
    let env: Vec<(String, String)> = [
        (
            "KYCQ__AMQP__URL",
            "amqp://guest:wrong-password@127.0.0.1:5672/%2f".to_owned(),
        ),
        (
            "KYCQ__DATABASE__URL",
            format!(
                "postgres://postgres@127.0.0.1:5432/kycq_doctor_missing_{}",
                unique()
            ),
        ),
        ("KYCQ__DATABASE__CREATE_IF_MISSING", "false".to_owned()),
        ("KYCQ__REDIS__URL", format!("redis://127.0.0.1:{closed}/")),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v))
    .collect();
    let (code, out, err) = doctor(&app, &env, false).await;
    assert_eq!(code, Some(1), "{out}{err}");
    let line = |target: &str| {
        out.lines()
            .find(|l| l.starts_with(target))
            .unwrap_or_else(|| panic!("no {target} line: {out}"))
            .to_owned()
    };
    let pg = line("postgres");
    assert!(
        pg.contains("FAILED") && pg.contains("does not exist") && pg.contains("database.url"),
        "{out}"
    );
    let mq = line("rabbitmq");
    assert!(
        mq.contains("FAILED") && mq.contains("amqp.url") && mq.contains("ACCESS_REFUSED"),
        "{out}"
    );
    let redis = line("redis");
    assert!(
        redis.contains("FAILED") && redis.contains("redis.url"),
        "{out}"
    );
    assert!(line("provider tencent").contains(" OK "), "{out}");
    assert!(!out.contains("wrong-password"), "{out}");
    app.cleanup().await;
}
