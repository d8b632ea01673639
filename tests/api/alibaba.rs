//! Alibaba cloudauth-intl through the real pipeline (RabbitMQ → worker → sandbox → Postgres):
//! every code of the Alibaba tables, for each of the three APIs, ends with the right status,
//! verdict, reason code and billing; md5 mode end to end; provider-wide refusals fail over.

use std::collections::BTreeMap;
use std::time::Duration;

use kycq::check::{Billed, CheckResult, ReasonCode as R, Status, Verdict};
use kycq::ops::enqueue::RequestMessage;
use kycq::providers::alibaba;
use kycq::sandbox::alibaba::{test_identity, VENDOR_CODES};
use kycq::sandbox::ledger::subject_key;
use kycq::sandbox::scenarios::{identity_with_code, Scenario, TestIdentity};
use sqlx::Row;

use crate::helpers::{captured_logs, unique, Options, TestApp};

const T: Duration = Duration::from_secs(30);

/// The three checks Alibaba runs.
const CHECKS: [&str; 3] = ["mobile3", "id2", "id2_period"];

fn env(extra: &[(&str, &str)]) -> Vec<(String, String)> {
    let mut v: Vec<(String, String)> = vec![
        (
            "KYCQ__PROVIDERS__ALIBABA__ACCESS_KEY_ID".into(),
            alibaba::SANDBOX_ACCESS_KEY_ID.into(),
        ),
        (
            "KYCQ__PROVIDERS__ALIBABA__ACCESS_KEY_SECRET".into(),
            alibaba::SANDBOX_ACCESS_KEY_SECRET.into(),
        ),
        ("KYCQ__PROVIDERS__ALIBABA__TIMEOUT_MS".into(), "2000".into()),
        (
            "KYCQ__PROVIDERS__ALIBABA__RATE_PER_SEC".into(),
            "1000".into(),
        ),
        ("KYCQ__PROVIDERS__ALIBABA__BURST".into(), "100".into()),
        (
            "KYCQ__PROVIDERS__ALIBABA__THROTTLE_COOLDOWN_MS".into(),
            "10".into(),
        ),
        (
            "KYCQ__PROVIDERS__ALIBABA__CIRCUIT_COOLDOWN_SECS".into(),
            "1".into(),
        ),
        ("KYCQ__ROUTES__MOBILE3".into(), "alibaba".into()),
        ("KYCQ__ROUTES__ID2".into(), "alibaba".into()),
        ("KYCQ__ROUTES__ID2_PERIOD".into(), "alibaba".into()),
    ];
    v.extend(
        extra
            .iter()
            .map(|(k, val)| (k.to_string(), val.to_string())),
    );
    v
}

/// A test deployment whose routes all go to Alibaba (plus `extra` settings).
async fn app(extra: &[(&str, &str)]) -> TestApp {
    let mut app = TestApp::with(Options {
        env: env(extra),
        ..Options::default()
    })
    .await;
    // The endpoint is the sandbox's, known only once it listens.
    app.env.insert(
        "KYCQ__PROVIDERS__ALIBABA__ENDPOINT".into(),
        format!("http://{}", app.sandbox.addr),
    );
    app.settings = kycq::configuration::Settings::load_with(
        &crate::helpers::config_dir(),
        None,
        Some(app.env.clone()),
    )
    .unwrap();
    app
}

fn request(check: &str, who: &TestIdentity) -> RequestMessage {
    RequestMessage {
        request_id: format!("ali-{}", unique()),
        check: check.into(),
        name: who.name.clone(),
        id_number: who.id_number.clone(),
        mobile: (check == "mobile3").then(|| who.mobile.clone()),
        validity_start: (check == "id2_period").then(|| "20201001".into()),
        validity_end: (check == "id2_period").then(|| "20301001".into()),
        scene_code: Some("kycq_api".into()),
        merchant_user_id: Some("user-1".into()),
        ..Default::default()
    }
}

/// What a request ends with.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Want {
    status: Status,
    verdict: Option<Verdict>,
    reason: R,
    billed: Billed,
    /// The result's `provider_code` (None: no vendor code, e.g. a lost answer).
    code: Option<&'static str>,
    /// Calls made (and received by the sandbox).
    attempts: u32,
    /// Calls the sandbox billed (the vendor's truth).
    ledger_billed: u32,
    /// Dead-letter reason, if dead-lettered.
    dead: Option<&'static str>,
}

fn done(reason: R, billed: bool, code: &'static str) -> Want {
    Want {
        status: Status::Completed,
        verdict: reason.completed_verdict(),
        reason,
        billed: if billed { Billed::Yes } else { Billed::No },
        code: Some(code),
        attempts: 1,
        ledger_billed: billed as u32,
        dead: None,
    }
}

fn failed(
    reason: R,
    billed: Billed,
    code: Option<&'static str>,
    attempts: u32,
    ledger_billed: u32,
) -> Want {
    let dead = match reason {
        R::RetriesExhausted => Some("retries_exhausted"),
        R::BillingUnknown => Some("billing_unknown"),
        _ => None,
    };
    Want {
        status: Status::Failed,
        verdict: None,
        reason,
        billed,
        code,
        attempts,
        ledger_billed,
        dead,
    }
}

fn invalid() -> Want {
    Want {
        status: Status::Completed,
        verdict: Some(Verdict::InvalidInput),
        reason: R::InvalidRequest,
        billed: Billed::No,
        code: Some("InvalidParameter"),
        attempts: 1,
        ledger_billed: 0,
        dead: None,
    }
}

fn exhausted(code: &'static str) -> Want {
    failed(R::RetriesExhausted, Billed::No, Some(code), 4, 0)
}

fn unknown_code(code: &'static str, billed: Billed, ledger_billed: bool) -> Want {
    failed(
        R::UnknownProviderCode,
        billed,
        Some(code),
        1,
        ledger_billed as u32,
    )
}

/// A match after one refused first call (the `*Once` scenarios).
fn match_on_second(check: &str) -> Want {
    Want {
        attempts: 2,
        ..matched(check)
    }
}

fn matched(check: &str) -> Want {
    match check {
        "mobile3" => done(R::Match, true, "101"),
        "id2" => done(R::Match, true, "1"),
        _ => done(R::Match, true, "200"),
    }
}

/// Written out from the vendor tables (each API's page, as cited in
/// `src/providers/alibaba/codes.rs`) and the sandbox's documented codes,
/// independently of the code under test.
fn want(check: &str, code: &str) -> Want {
    let m3 = check == "mobile3";
    let id2 = check == "id2";
    let pair = |mobile3: Want, id2w: Want, period: Want| {
        if m3 {
            mobile3
        } else if id2 {
            id2w
        } else {
            period
        }
    };
    let name_id = done(R::NameIdNumberMismatch, true, "2");
    let validity = done(R::IdentityOrValidityMismatch, true, "223");
    match code {
        // Shared scenarios (scenarios.rs) as the Alibaba sandbox renders them.
        "001" | "800" => matched(check),
        "901" => pair(done(R::NameMismatch, true, "203"), name_id, validity),
        "902" => pair(done(R::IdNumberMismatch, true, "202"), name_id, validity),
        "903" => pair(
            done(R::MobileOwnerMismatch, true, "201"),
            matched(check),
            matched(check),
        ),
        "904" | "905" => pair(done(R::MismatchUnspecified, true, "204"), name_id, validity),
        "906" | "913" => pair(invalid(), matched(check), matched(check)),
        "907" | "908" => invalid(),
        "909" => pair(
            done(R::NoRecord, false, "301"),
            done(R::NoRecord, false, "3"),
            done(R::NoRecord, true, "202"),
        ),
        "911" | "817" => exhausted("Forbidden.ExceptionDataSource"),
        "914" | "922" | "933" => match_on_second(check),
        "912" | "812" => failed(
            R::RepeatedInvocationBlocked,
            Billed::No,
            Some("Forbidden.ExceptionRepeatedInvoke"),
            1,
            0,
        ),
        "921" | "813" => exhausted("Throttling.Api"),
        "931" | "815" => exhausted("InternalError"),
        "932" => exhausted("HTTP500"),
        // HTTP-layer faults (sandbox/http_fault.rs), the same for every API. A status followed by
        // a cut-off body was sent and its answer lost: billing unknown, never called again.
        "934" | "937" => failed(R::BillingUnknown, Billed::Unknown, None, 1, 0),
        // A bare 429 is retried; the second call matches.
        "935" => match_on_second(check),
        // A backend refusing the request's parameters: this request is invalid, one call, and
        // the provider stays available (its circuit is not opened).
        "936" => Want {
            code: None,
            ..invalid()
        },
        "941" => failed(R::BillingUnknown, Billed::Unknown, None, 1, 1),
        "951" | "806" => pair(
            unknown_code("205", Billed::Yes, true),
            unknown_code("4", Billed::Unknown, false),
            unknown_code("224", Billed::Unknown, true),
        ),
        // Alibaba-only codes 800–849 (sandbox/alibaba.rs VENDOR_CODES).
        "801" => pair(done(R::MobileOwnerMismatch, true, "201"), name_id, validity),
        "802" => pair(done(R::IdNumberMismatch, true, "202"), name_id, validity),
        "803" => pair(done(R::NameMismatch, true, "203"), name_id, validity),
        "804" => pair(done(R::MismatchUnspecified, true, "204"), name_id, validity),
        "805" => pair(
            done(R::NoRecord, false, "301"),
            done(R::NoRecord, false, "3"),
            done(R::NoRecord, true, "202"),
        ),
        "807" => pair(
            unknown_code("401", Billed::Unknown, false),
            unknown_code("9", Billed::Unknown, false),
            unknown_code("201", Billed::Unknown, true),
        ),
        "808" => failed(R::BillingUnknown, Billed::Unknown, None, 1, 1),
        "810" => Want {
            code: Some("MissingParameter"),
            ..invalid()
        },
        "811" => invalid(),
        "814" => exhausted("Throttling.User"),
        "816" => exhausted("ServiceUnavailable"),
        "827" => failed(
            R::UnknownProviderCode,
            Billed::No,
            Some("Forbidden.RiskControl"),
            1,
            0,
        ),
        "828" => exhausted("Throttling"),
        other => panic!("no expectation for code {other}"),
    }
}

/// The provider-wide codes: they open the circuit instead of finishing the request.
const PROVIDER_WIDE: [&str; 10] = [
    "961", "818", "819", "820", "821", "822", "823", "824", "825", "826",
];

/// Every code that finishes a request: the shared scenarios and the vendor codes 800–849.
fn finishing_codes() -> Vec<&'static str> {
    let shared = Scenario::ALL.iter().map(|s| match s {
        Scenario::Match => "001",
        other => other.code(),
    });
    shared
        .chain(VENDOR_CODES.iter().map(|v| v.code))
        .filter(|c| !PROVIDER_WIDE.contains(c))
        .collect()
}

fn ledger_for(app: &TestApp, who: &TestIdentity) -> (u32, u32) {
    let key = subject_key(&who.id_number);
    let entries: Vec<_> = app
        .sandbox
        .ledger
        .entries()
        .into_iter()
        .filter(|e| e.subject_key.as_deref() == Some(key.as_str()))
        .collect();
    (
        entries.len() as u32,
        entries.iter().filter(|e| e.billed).count() as u32,
    )
}

fn assert_result(r: &CheckResult, w: &Want, what: &str) {
    assert_eq!(
        (r.status, r.verdict, r.reason_code, r.billed),
        (w.status, w.verdict, w.reason, w.billed),
        "{what}: {}",
        r.reason
    );
    assert_eq!(r.provider.as_deref(), Some("alibaba"), "{what}");
    if w.code.is_some() {
        assert_eq!(r.provider_code.as_deref(), w.code, "{what}");
    }
    assert_eq!(r.attempts, w.attempts, "{what}");
    assert_eq!(
        r.routing_key(),
        format!("result.{}.{}", r.check.unwrap(), w.status.as_str()),
        "{what}"
    );
}

#[tokio::test]
async fn every_alibaba_code_for_each_api_maps_to_status_verdict_reason_and_billing() {
    let mut app = app(&[]).await;
    app.start_worker().await;
    let mut sent: BTreeMap<String, (String, &str, TestIdentity, Want)> = BTreeMap::new();
    for (n, check) in CHECKS.into_iter().enumerate() {
        for (i, code) in finishing_codes().into_iter().enumerate() {
            let who = test_identity(code, 300 + 100 * n as u32 + i as u32);
            let m = request(check, &who);
            app.publish(&m).await;
            sent.insert(
                m.request_id.clone(),
                (check.to_owned(), code, who, want(check, code)),
            );
        }
    }
    let ids: Vec<String> = sent.keys().cloned().collect();
    let got = app.results_for(&ids, Duration::from_secs(120)).await;
    let mut dead_expected = Vec::new();
    for (id, results) in &got {
        let (check, code, who, w) = &sent[id];
        let what = format!("{check} code {code}");
        assert_result(&results[0], w, &what);
        assert_eq!(results[0].check.map(|c| c.as_str()), Some(check.as_str()));
        if *code == "001" && check == "mobile3" {
            assert_eq!(results[0].carrier, Some(kycq::check::Carrier::Cmcc));
        }
        assert_eq!(
            ledger_for(&app, who),
            (w.attempts, w.ledger_billed),
            "{what}: calls and billed calls at the provider"
        );
        dead_expected.extend(w.dead);
        // The journal agrees with the result.
        let calls = sqlx::query("SELECT action, outcome, billed FROM provider_calls WHERE request_id = $1 ORDER BY attempt")
            .bind(id)
            .fetch_all(app.db().await)
            .await
            .unwrap();
        assert_eq!(calls.len() as u32, w.attempts, "{what}");
        let action = match check.as_str() {
            "mobile3" => "Mobile3MetaVerifyIntl",
            "id2" => "Id2MetaVerifyIntl",
            _ => "Id2MetaPeriodVerifyIntl",
        };
        assert!(
            calls.iter().all(|c| c.get::<String, _>("action") == action),
            "{what}"
        );
        assert_eq!(
            calls.last().unwrap().get::<String, _>("billed"),
            w.billed.as_str(),
            "{what}"
        );
        let stored =
            sqlx::query("SELECT status, reason_code, billed FROM checks WHERE request_id = $1")
                .bind(id)
                .fetch_one(app.db().await)
                .await
                .unwrap();
        assert_eq!(
            (
                stored.get::<String, _>("status"),
                stored.get::<String, _>("reason_code"),
                stored.get::<String, _>("billed")
            ),
            (
                w.status.as_str().to_owned(),
                w.reason.as_str().to_owned(),
                w.billed.as_str().to_owned()
            ),
            "{what}"
        );
    }
    // retries_exhausted and billing_unknown are dead-lettered; nothing else is.
    let dead = app.wait_dead_letters(dead_expected.len(), T).await;
    let mut reasons: Vec<String> = dead.iter().map(|(d, _)| d.reason.clone()).collect();
    reasons.sort();
    dead_expected.sort();
    assert_eq!(reasons, dead_expected);
    // What the provider billed: what kycq's results say, plus the answers kycq could not read.
    let ledger_billed: u32 = sent.values().map(|(_, _, _, w)| w.ledger_billed).sum();
    assert_eq!(app.sandbox.ledger.billed_count() as u32, ledger_billed);
    // No plaintext identity in any log line.
    let logs = captured_logs();
    for (_, _, who, _) in sent.values() {
        assert!(!logs.contains(&who.id_number), "ID number in the logs");
        assert!(!logs.contains(&who.mobile), "mobile in the logs");
        assert!(
            !logs.contains(&format!("\"{}\"", who.name)),
            "name in the logs"
        );
    }
    app.cleanup().await;
}

#[tokio::test]
async fn md5_mode_end_to_end() {
    let mut app = app(&[("KYCQ__PROVIDERS__ALIBABA__PARAM_TYPE", "md5")]).await;
    app.start_worker().await;
    let mut sent = BTreeMap::new();
    for (i, (check, code)) in [
        ("mobile3", "001"),
        ("mobile3", "901"),
        ("mobile3", "902"),
        ("mobile3", "903"),
        ("mobile3", "909"),
        ("mobile3", "803"),
        ("mobile3", "806"),
        ("mobile3", "812"),
        ("mobile3", "914"),
        // Id2 and the period API are plaintext whatever param_type says.
        ("id2", "905"),
        ("id2_period", "909"),
    ]
    .into_iter()
    .enumerate()
    {
        let who = test_identity(code, 990 + i as u32);
        let m = request(check, &who);
        app.publish(&m).await;
        sent.insert(m.request_id.clone(), (check, code, who, want(check, code)));
    }
    // An identity the sandbox cannot recognise from its hash answers a match.
    let stranger = identity_with_code("901", 5_000);
    let m = request("mobile3", &stranger);
    app.publish(&m).await;
    sent.insert(
        m.request_id.clone(),
        ("mobile3", "stranger", stranger, matched("mobile3")),
    );
    let ids: Vec<String> = sent.keys().cloned().collect();
    let got = app.results_for(&ids, Duration::from_secs(60)).await;
    for (id, results) in &got {
        let (check, code, who, w) = &sent[id];
        assert_result(&results[0], w, &format!("md5 {check} {code}"));
        if *code == "001" {
            assert_eq!(results[0].carrier, Some(kycq::check::Carrier::Cmcc));
        }
        if *code != "stranger" {
            // The sandbox resolved the hash to the documented identity.
            assert_eq!(ledger_for(&app, who).0, w.attempts, "md5 {check} {code}");
        }
    }
    let hashed = subject_key(&kycq::providers::alibaba::request::md5_hex(
        &sent
            .values()
            .find(|v| v.1 == "stranger")
            .unwrap()
            .2
            .id_number,
    ));
    assert!(app
        .sandbox
        .ledger
        .entries()
        .iter()
        .any(|e| e.subject_key.as_deref() == Some(hashed.as_str())));
    app.cleanup().await;
}

#[tokio::test]
async fn provider_wide_refusals_open_the_circuit_and_fail_over() {
    // mobile3 can fail over to Tencent; id2 has Alibaba only.
    let mut app = app(&[("KYCQ__ROUTES__MOBILE3", "alibaba,tencent")]).await;
    app.start_worker().await;
    // 961 is provider-wide at Tencent too: it is the one that waits, below.
    for (i, code) in PROVIDER_WIDE
        .into_iter()
        .filter(|c| *c != "961")
        .enumerate()
    {
        let who = test_identity(code, 700 + i as u32);
        let m = request("mobile3", &who);
        app.publish(&m).await;
        let r = app.result_of(&m.request_id).await;
        // Tencent does not know Alibaba's codes: a match there.
        assert_eq!(
            (r.status, r.reason_code, r.provider.as_deref(), r.billed),
            (Status::Completed, R::Match, Some("tencent"), Billed::Yes),
            "{code}"
        );
        let calls = sqlx::query("SELECT provider, provider_code, outcome, billed FROM provider_calls WHERE request_id = $1 ORDER BY attempt")
            .bind(&m.request_id)
            .fetch_all(app.db().await)
            .await
            .unwrap();
        let seen: Vec<(String, Option<String>, String, String)> = calls
            .iter()
            .map(|c| {
                (
                    c.get("provider"),
                    c.get("provider_code"),
                    c.get("outcome"),
                    c.get("billed"),
                )
            })
            .collect();
        assert_eq!(seen.len(), 2, "{code}: {seen:?}");
        assert_eq!(
            (seen[0].0.as_str(), seen[0].2.as_str(), seen[0].3.as_str()),
            ("alibaba", "provider_wide", "no"),
            "{code}"
        );
        assert!(seen[0].1.is_some(), "{code}");
        assert_eq!(seen[1].0, "tencent");
        // Let the circuit close again before the next code.
        tokio::time::sleep(Duration::from_millis(1_100)).await;
    }
    // With no other provider, the request waits (unacknowledged) while the circuit is open.
    let who = test_identity("961", 790);
    let m = request("id2", &who);
    app.publish(&m).await;
    let deadline = tokio::time::Instant::now() + T;
    while ledger_for(&app, &who).0 == 0 && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let entry = app.sandbox.ledger.entries().into_iter().last().unwrap();
    assert_eq!(
        (entry.code.as_str(), entry.billed, entry.http_status),
        ("Forbidden.AccountAccessDenied", false, 403)
    );
    app.assert_no_result_within(Duration::from_millis(1_500))
        .await;
    app.cleanup().await;
}

#[tokio::test]
async fn wrong_alibaba_credentials_are_refused_and_nothing_is_billed() {
    let mut app = app(&[]).await;
    let bad = app
        .start_worker_with(&[(
            "KYCQ__PROVIDERS__ALIBABA__ACCESS_KEY_SECRET",
            "not-the-secret",
        )])
        .await;
    let who = test_identity("001", 880);
    let m = request("id2_period", &who);
    app.publish(&m).await;
    let deadline = tokio::time::Instant::now() + T;
    while app.sandbox.ledger.is_empty() && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let e = app.sandbox.ledger.entries();
    assert_eq!(
        (e[0].code.as_str(), e[0].billed),
        ("SignatureDoesNotMatch", false)
    );
    app.assert_no_result_within(Duration::from_secs(1)).await;
    bad.cancel();
    app.stop_workers().await;
    // A correctly configured worker answers the same request: nothing was lost.
    app.start_worker().await;
    let r = app.result_of(&m.request_id).await;
    assert_eq!(
        (r.status, r.reason_code, r.billed),
        (Status::Completed, R::Match, Billed::Yes)
    );
    assert_eq!(app.sandbox.ledger.billed_count(), 1);
    app.cleanup().await;
}
