//! The real `kycq` binary (`enqueue`, `status`) against a worker, the sandbox and the real
//! broker and database: exit codes, the request id told before publishing, local validation
//! that publishes nothing, CSV header and row errors, `--out`, and a rerun that resumes.

use std::path::PathBuf;
use std::process::Output;

use kycq::sandbox::scenarios::{identity, Scenario, TestIdentity};
use lapin::options::QueueDeclareOptions;
use lapin::types::FieldTable;

use crate::helpers::{config_dir, kycq, unique, TestApp};

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// Exit code, stdout, stderr.
fn parts(o: &Output) -> (i32, String, String) {
    (
        o.status.code().unwrap_or(-1),
        text(&o.stdout),
        text(&o.stderr),
    )
}

fn single<'a>(who: &'a TestIdentity, id: &'a str) -> Vec<&'a str> {
    vec![
        "enqueue",
        "--check",
        "mobile3",
        "--name",
        &who.name,
        "--id-number",
        &who.id_number,
        "--mobile",
        &who.mobile,
        "--request-id",
        id,
    ]
}

/// Messages waiting in the work queue.
async fn queued(app: &TestApp) -> u32 {
    let ch = app.conn.create_channel().await.unwrap();
    let q = ch
        .queue_declare(
            app.names.work_queue.as_str().into(),
            QueueDeclareOptions {
                passive: true,
                ..Default::default()
            },
            FieldTable::default(),
        )
        .await
        .unwrap();
    let _ = ch.close(200, "ok".into()).await;
    q.message_count()
}

fn assert_no_pii(who: &TestIdentity, s: &str) {
    for plain in [&who.name, &who.id_number, &who.mobile] {
        assert!(!s.contains(plain.as_str()), "plaintext {plain} in:\n{s}");
    }
}

fn temp_file(app: &TestApp, name: &str) -> PathBuf {
    std::env::temp_dir().join(format!("kycq-cli-{}-{}-{name}", app.id, unique()))
}

#[tokio::test]
async fn enqueue_wait_exits_0_completed_3_rejected_4_failed_and_status_shows_the_journal() {
    let mut app = TestApp::new().await;
    app.start_worker().await;

    // Completed: exit 0, the id on stderr first, the result on stdout.
    let who = identity(Scenario::Match, 900);
    let id = format!("cli-ok-{}", unique());
    let mut args = single(&who, &id);
    args.push("--wait");
    let (code, out, err) = parts(&kycq(&app, &args).await);
    assert_eq!(code, 0, "stdout:\n{out}\nstderr:\n{err}");
    assert!(err.starts_with(&format!("request_id {id}\n")), "{err}");
    let r: serde_json::Value = serde_json::from_str(out.trim()).expect("one JSON result");
    assert_eq!(r["request_id"], id.as_str());
    assert_eq!(r["status"], "completed");
    assert_no_pii(&who, &out);
    assert_no_pii(&who, &err);

    // Rejected by the worker (local validation passes: a provider this deployment has not
    // configured is the worker's to refuse): exit 3.
    let id3 = format!("cli-rej-{}", unique());
    let mut args = single(&who, &id3);
    args.extend(["--provider", "alibaba", "--wait"]);
    let (code, out, err) = parts(&kycq(&app, &args).await);
    assert_eq!(code, 3, "stdout:\n{out}\nstderr:\n{err}");
    let r: serde_json::Value = serde_json::from_str(out.trim()).unwrap();
    assert_eq!(r["status"], "rejected");
    assert!(err.contains("1 request(s) rejected"), "{err}");

    // Failed (the vendor refuses this identity today): exit 4.
    let limited = identity(Scenario::IdentityDailyLimit, 901);
    let id4 = format!("cli-fail-{}", unique());
    let mut args = single(&limited, &id4);
    args.push("--wait");
    let (code, out, err) = parts(&kycq(&app, &args).await);
    assert_eq!(code, 4, "stdout:\n{out}\nstderr:\n{err}");
    let r: serde_json::Value = serde_json::from_str(out.trim()).unwrap();
    assert_eq!(r["status"], "failed");
    assert_eq!(r["reason_code"], "identity_daily_limit");

    // Status of the completed request: masked, with its journal; exit 0.
    let (code, out, err) = parts(&kycq(&app, &["status", &id]).await);
    assert_eq!(code, 0, "stdout:\n{out}\nstderr:\n{err}");
    for want in [
        format!("request_id           {id}\n"),
        "status               completed\n".into(),
        "verdict              match\n".into(),
        "billed               yes\n".into(),
        "provider             tencent\n".into(),
        "run                  0 (the first)\n".into(),
        "provider calls: 1 (1 of the current run 0)\n".into(),
        "PhoneVerification".into(),
        kycq::check::mask::mask_id_number(&who.id_number),
        kycq::check::mask::mask_mobile(&who.mobile),
    ] {
        assert!(out.contains(&want), "{want:?} missing from:\n{out}");
    }
    assert_no_pii(&who, &out);

    // --json: the same, as one object; the failed one exits 4.
    let (code, out, _) = parts(&kycq(&app, &["status", &id4, "--json"]).await);
    assert_eq!(code, 4);
    let j: serde_json::Value = serde_json::from_str(&out).expect("JSON");
    assert_eq!(j["request"]["status"], "failed");
    assert_eq!(j["request"]["reason_code"], "identity_daily_limit");
    assert_eq!(j["calls"][0]["attempt"], 1);
    assert_eq!(j["calls"][0]["provider"], "tencent");
    assert_eq!(j["calls"][0]["billed"], "no");
    assert_eq!(j["calls"][0]["retry_round"], 0);
    assert_eq!(j["request"]["retry_round"], 0);
    assert_no_pii(&limited, &out);

    // An unknown id: exit 6 and what it may mean.
    let (code, out, err) = parts(&kycq(&app, &["status", "no-such-request"]).await);
    assert_eq!(code, 6, "stdout:\n{out}\nstderr:\n{err}");
    assert!(out.is_empty());
    assert!(
        err.contains("no request no-such-request in the database") && err.contains("queued"),
        "{err}"
    );
    app.cleanup().await;
}

#[tokio::test]
async fn a_request_that_breaks_a_rule_is_not_published_and_a_timeout_exits_5_with_the_id() {
    // No worker: whatever is published stays in the queue.
    let app = TestApp::new().await;
    let who = identity(Scenario::Match, 910);

    // A bad mobile: refused locally with the column and the rule, exit 3, nothing queued.
    let mut args = single(&who, "cli-bad");
    let bad_mobile = "12345678901";
    args[8] = bad_mobile;
    args.push("--wait");
    let (code, out, err) = parts(&kycq(&app, &args).await);
    assert_eq!(code, 3, "stdout:\n{out}\nstderr:\n{err}");
    assert!(err.contains("not published: column mobile: "), "{err}");
    assert!(err.contains("(invalid_mobile)"), "{err}");
    assert!(!err.contains(bad_mobile), "{err}");
    assert_no_pii(&who, &err);
    // A bad request id too.
    let mut args = single(&who, "not an id!");
    args.push("--wait");
    let (code, _, err) = parts(&kycq(&app, &args).await);
    assert_eq!(code, 3, "{err}");
    assert!(
        err.contains("column request_id: request_id must be 1-64"),
        "{err}"
    );
    assert_eq!(queued(&app).await, 0, "nothing reached the queue");

    // A valid one with no worker: exit 5, the id told first and in the timeout message.
    let id = format!("cli-wait-{}", unique());
    let mut args = single(&who, &id);
    args.extend(["--wait", "--timeout", "2"]);
    let (code, out, err) = parts(&kycq(&app, &args).await);
    assert_eq!(code, 5, "stdout:\n{out}\nstderr:\n{err}");
    assert!(err.starts_with(&format!("request_id {id}\n")), "{err}");
    assert!(
        err.contains(&format!("request {id} is still queued under that id"))
            && err.contains(&format!("kycq status {id}")),
        "{err}"
    );
    assert_eq!(queued(&app).await, 1, "the request stays queued");
    app.cleanup().await;
}

#[tokio::test]
async fn csv_wrong_header_is_refused_and_nothing_is_published() {
    let app = TestApp::new().await;
    let who = identity(Scenario::Match, 920);
    let csv = temp_file(&app, "in.csv");
    std::fs::write(
        &csv,
        format!(
            "request_id,check,full_name,id_number,mobile\nr-1,mobile3,{},{},{}\n",
            who.name, who.id_number, who.mobile
        ),
    )
    .unwrap();
    let (code, _, err) = parts(&kycq(&app, &["enqueue", "--csv", csv.to_str().unwrap()]).await);
    assert_eq!(code, 1, "{err}");
    assert!(
        err.contains(&format!(
            "CSV file {}: unknown column `full_name`",
            csv.display()
        )) && err.contains("the columns are: request_id, check, name, id_number"),
        "{err}"
    );
    let missing = temp_file(&app, "missing.csv");
    let (code, _, err) = parts(&kycq(&app, &["enqueue", "--csv", missing.to_str().unwrap()]).await);
    assert_eq!(code, 1, "{err}");
    assert!(
        err.contains(&format!("cannot read the CSV file {}", missing.display())),
        "{err}"
    );
    assert_eq!(queued(&app).await, 0);
    let _ = std::fs::remove_file(&csv);
    app.cleanup().await;
}

#[tokio::test]
async fn csv_bad_rows_are_named_and_skipped_out_has_one_line_per_request_and_a_rerun_resumes() {
    let mut app = TestApp::new().await;
    app.start_worker().await;
    let run = unique();
    let (a, b, c) = (
        identity(Scenario::Match, 930),
        identity(Scenario::NoRecord, 931),
        identity(Scenario::Match, 932),
    );
    let ids: Vec<String> = (1..=4).map(|i| format!("csv-{run}-{i}")).collect();
    let csv = temp_file(&app, "in.csv");
    std::fs::write(
        &csv,
        format!(
            "request_id,check,name,id_number,mobile\n\
             {},mobile3,{},{},{}\n\
             {},mobile3,{},{},{}\n\
             {},mobile3,{},{},1234\n\
             {},mobile3,{},{},{}\n",
            ids[0],
            a.name,
            a.id_number,
            a.mobile,
            ids[1],
            b.name,
            b.id_number,
            b.mobile,
            ids[2],
            c.name,
            c.id_number,
            ids[3],
            c.name,
            c.id_number,
            c.mobile,
        ),
    )
    .unwrap();
    // --stop-on-error: the bad row stops everything before anything is published.
    let (code, _, err) = parts(
        &kycq(
            &app,
            &["enqueue", "--csv", csv.to_str().unwrap(), "--stop-on-error"],
        )
        .await,
    );
    assert_eq!(code, 3, "{err}");
    assert!(err.contains("nothing was published"), "{err}");
    assert_eq!(queued(&app).await, 0);
    app.assert_no_result_within(std::time::Duration::from_millis(500))
        .await;

    let out = temp_file(&app, "out.csv");
    let args = [
        "enqueue",
        "--csv",
        csv.to_str().unwrap(),
        "--wait",
        "--out",
        out.to_str().unwrap(),
    ];
    let (code, stdout, err) = parts(&kycq(&app, &args).await);
    // The refused row makes it exit 3; every other row completed.
    assert_eq!(code, 3, "stdout:\n{stdout}\nstderr:\n{err}");
    assert!(
        err.contains(&format!("{}: line 4, column mobile: ", csv.display()))
            && err.contains("(invalid_mobile)"),
        "{err}"
    );
    assert!(
        err.contains("published 3, refused 1, already finished 0"),
        "{err}"
    );
    assert!(
        err.contains("results: completed 3, rejected 0, failed 0"),
        "{err}"
    );
    assert!(stdout.is_empty(), "results go to --out: {stdout}");
    for who in [&a, &b, &c] {
        assert_no_pii(who, &err);
    }
    let mut lines: Vec<String> = std::fs::read_to_string(&out)
        .unwrap()
        .lines()
        .map(str::to_owned)
        .collect();
    assert_eq!(
        lines[0],
        "request_id,status,verdict,reason_code,billed,provider"
    );
    lines.remove(0);
    lines.sort();
    let mut want = vec![
        format!("{},completed,match,match,yes,tencent", ids[0]),
        format!("{},completed,not_found,no_record,no,tencent", ids[1]),
        format!("{},rejected,,invalid_mobile,no,", ids[2]),
        format!("{},completed,match,match,yes,tencent", ids[3]),
    ];
    want.sort();
    assert_eq!(lines, want);

    // The tap on the result exchange saw the three results, once each.
    let seen = app
        .results_for(
            &[ids[0].clone(), ids[1].clone(), ids[3].clone()],
            std::time::Duration::from_secs(10),
        )
        .await;
    assert!(seen.values().all(|v| v.len() == 1), "{seen:?}");

    // The rerun publishes nothing: the three finished ids are skipped, their stored results
    // written to --out again.
    let calls_before = app.sandbox.ledger.len();
    let (code, _, err) = parts(&kycq(&app, &args).await);
    assert_eq!(code, 3, "{err}");
    assert!(
        err.contains("3 request(s) already finished, skipped (not published again)"),
        "{err}"
    );
    assert!(
        err.contains("published 0, refused 1, already finished 3"),
        "{err}"
    );
    let mut again: Vec<String> = std::fs::read_to_string(&out)
        .unwrap()
        .lines()
        .skip(1)
        .map(str::to_owned)
        .collect();
    again.sort();
    assert_eq!(again, want);
    app.assert_no_result_within(std::time::Duration::from_millis(500))
        .await;
    assert_eq!(app.sandbox.ledger.len(), calls_before, "no provider call");
    let _ = std::fs::remove_file(&csv);
    let _ = std::fs::remove_file(&out);
    app.cleanup().await;
}

#[tokio::test]
async fn ctrl_c_while_waiting_stops_at_once_and_the_published_requests_stay_queued() {
    // No worker: nothing will answer.
    let app = TestApp::new().await;
    let who = identity(Scenario::Match, 940);
    let run = unique();
    let csv = temp_file(&app, "in.csv");
    let out = temp_file(&app, "out.csv");
    let ids: Vec<String> = (1..=3).map(|i| format!("int-{run}-{i}")).collect();
    let mut body = String::from("request_id,check,name,id_number,mobile\n");
    for id in &ids {
        body.push_str(&format!(
            "{id},mobile3,{},{},{}\n",
            who.name, who.id_number, who.mobile
        ));
    }
    std::fs::write(&csv, body).unwrap();
    let child = tokio::process::Command::new(env!("CARGO_BIN_EXE_kycq"))
        .args([
            "enqueue",
            "--csv",
            csv.to_str().unwrap(),
            "--wait",
            "--out",
            out.to_str().unwrap(),
        ])
        .env_clear()
        .env("KYCQ_CONFIG_DIR", config_dir())
        .env("KYCQ__LOG__LEVEL", "warn,lapin=off")
        .envs(&app.env)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // Once all three are published, Ctrl-C stops the wait.
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(30);
    while queued(&app).await < 3 {
        assert!(tokio::time::Instant::now() < deadline, "never published");
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    let pid = child.id().unwrap().to_string();
    assert!(std::process::Command::new("kill")
        .args(["-INT", &pid])
        .status()
        .unwrap()
        .success());
    let o = tokio::time::timeout(std::time::Duration::from_secs(20), child.wait_with_output())
        .await
        .expect("exits promptly after Ctrl-C")
        .unwrap();
    let (code, _, err) = parts(&o);
    assert_eq!(code, 130, "{err}");
    assert!(
        err.contains("Ctrl-C: stopped waiting: 3 requests are still queued under their ids"),
        "{err}"
    );
    let lines: Vec<String> = std::fs::read_to_string(&out)
        .unwrap()
        .lines()
        .skip(1)
        .map(str::to_owned)
        .collect();
    let want: Vec<String> = ids.iter().map(|i| format!("{i},pending,,,,")).collect();
    assert_eq!(lines, want);
    assert_eq!(queued(&app).await, 3, "nothing published is lost");
    let _ = std::fs::remove_file(&csv);
    let _ = std::fs::remove_file(&out);
    app.cleanup().await;
}

#[tokio::test]
async fn a_first_ctrl_c_stops_publishing_a_second_stops_waiting_and_every_published_request_stays_queued(
) {
    use tokio::io::AsyncBufReadExt;
    // No worker; a batch long enough that Ctrl-C lands while it is being published.
    let app = TestApp::new().await;
    let who = identity(Scenario::Match, 950);
    let run = unique();
    let csv = temp_file(&app, "in.csv");
    let out = temp_file(&app, "out.csv");
    let rows = 4000;
    let mut body = String::from("request_id,check,name,id_number,mobile\n");
    for i in 0..rows {
        body.push_str(&format!(
            "big-{run}-{i},mobile3,{},{},{}\n",
            who.name, who.id_number, who.mobile
        ));
    }
    std::fs::write(&csv, body).unwrap();
    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_kycq"))
        .args([
            "enqueue",
            "--csv",
            csv.to_str().unwrap(),
            "--wait",
            "--out",
            out.to_str().unwrap(),
        ])
        .env_clear()
        .env("KYCQ_CONFIG_DIR", config_dir())
        .env("KYCQ__LOG__LEVEL", "warn,lapin=off")
        .envs(&app.env)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(60);
    while queued(&app).await < 20 {
        assert!(tokio::time::Instant::now() < deadline, "never published");
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    let pid = child.id().unwrap().to_string();
    let sigint = || {
        assert!(std::process::Command::new("kill")
            .args(["-INT", &pid])
            .status()
            .unwrap()
            .success())
    };
    sigint();
    let mut err = tokio::io::BufReader::new(child.stderr.take().unwrap()).lines();
    let mut seen = Vec::new();
    loop {
        let line = tokio::time::timeout(std::time::Duration::from_secs(30), err.next_line())
            .await
            .expect("a line after Ctrl-C")
            .unwrap()
            .expect("stderr open");
        let stopped = line.starts_with("Ctrl-C: publishing stopped after");
        seen.push(line);
        if stopped {
            break;
        }
    }
    let told = seen.last().unwrap().clone();
    assert!(told.contains("Waiting for the results"), "{told}");
    // Still waiting (nothing answers): the second Ctrl-C ends it.
    sigint();
    let status = tokio::time::timeout(std::time::Duration::from_secs(20), child.wait())
        .await
        .expect("exits after the second Ctrl-C")
        .unwrap();
    while let Ok(Some(l)) = err.next_line().await {
        seen.push(l);
    }
    let all = seen.join("\n");
    assert_eq!(status.code(), Some(130), "{all}");
    let summary = seen
        .iter()
        .find(|l| l.starts_with("published "))
        .unwrap_or_else(|| panic!("no summary in:\n{all}"));
    let published: u32 = summary["published ".len()..]
        .split(',')
        .next()
        .unwrap()
        .parse()
        .unwrap();
    assert!(published > 0 && published < rows, "{summary}");
    assert!(
        summary.contains(&format!("not published (Ctrl-C) {}", rows - published)),
        "{summary}"
    );
    // Every confirmed publish is in the queue and in --out as pending; nothing else was sent.
    assert_eq!(queued(&app).await, published, "{all}");
    let pending = std::fs::read_to_string(&out)
        .unwrap()
        .lines()
        .skip(1)
        .filter(|l| l.ends_with(",pending,,,,"))
        .count();
    assert_eq!(pending as u32, published);
    let _ = std::fs::remove_file(&csv);
    let _ = std::fs::remove_file(&out);
    app.cleanup().await;
}
