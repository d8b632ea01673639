//! The Marketplace provider (`alimarket`) through the real pipeline: every sandbox code of the vendor — and every shared scenario as the vendor renders it — ends with the right status, verdict, reason code and billing, on the result exchange and in Postgres.

use std::collections::BTreeMap;
use std::time::Duration;

use kycq::check::{Billed, Carrier, CheckResult, ReasonCode as R, Status, Verdict};
use kycq::sandbox::ledger::subject_key;
use kycq::sandbox::scenarios::{identity, identity_with_code, Scenario, TestIdentity};
use sqlx::Row;

use crate::helpers::{mobile3, TestApp};

/// The worker settings that point `alimarket` at this test's sandbox. `route` is the mobile3
/// route; the circuit cool-down is 0 so that one provider-wide answer does not hold back the
/// other requests of the test.
fn alimarket_env(app: &TestApp, route: &str) -> Vec<(&'static str, String)> {
    vec![
        (
            "KYCQ__PROVIDERS__ALIMARKET__ENDPOINT",
            format!("http://{}", app.sandbox.addr),
        ),
        (
            "KYCQ__PROVIDERS__ALIMARKET__APP_CODE",
            kycq::providers::alimarket::SANDBOX_APP_CODE.into(),
        ),
        // Below the sandbox's 4 s slow delay: the slow identity times out.
        ("KYCQ__PROVIDERS__ALIMARKET__TIMEOUT_MS", "1500".into()),
        ("KYCQ__PROVIDERS__ALIMARKET__RATE_PER_SEC", "1000".into()),
        ("KYCQ__PROVIDERS__ALIMARKET__BURST", "100".into()),
        (
            "KYCQ__PROVIDERS__ALIMARKET__THROTTLE_COOLDOWN_MS",
            "20".into(),
        ),
        (
            "KYCQ__PROVIDERS__ALIMARKET__CIRCUIT_COOLDOWN_SECS",
            "0".into(),
        ),
        ("KYCQ__ROUTES__MOBILE3", route.into()),
    ]
}

async fn start_alimarket_worker(app: &mut TestApp, route: &str) {
    let env = alimarket_env(app, route);
    let pairs: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    app.start_worker_with(&pairs).await;
}

/// What one request must end with.
#[derive(Clone, Copy, Debug)]
struct Want {
    status: Status,
    verdict: Option<Verdict>,
    reason: R,
    billed: Billed,
    /// `provider_code` of the result; None: not asserted (a lost or unreadable answer).
    code: Option<&'static str>,
    /// Calls made to alimarket (= the result's `attempts` when alimarket answered last).
    calls: u32,
    /// Calls the sandbox counted as billed.
    sandbox_billed: usize,
    carrier: Option<Carrier>,
    /// The dead-letter reason, if the request must be dead-lettered.
    dead: Option<&'static str>,
}

const fn verdict(
    v: Verdict,
    reason: R,
    billed: Billed,
    code: &'static str,
    sandbox_billed: usize,
    carrier: Carrier,
) -> Want {
    Want {
        status: Status::Completed,
        verdict: Some(v),
        reason,
        billed,
        code: Some(code),
        calls: 1,
        sandbox_billed,
        carrier: Some(carrier),
        dead: None,
    }
}

const fn unknown_code(
    billed: Billed,
    code: Option<&'static str>,
    sandbox_billed: usize,
    carrier: Option<Carrier>,
) -> Want {
    Want {
        status: Status::Failed,
        verdict: None,
        reason: R::UnknownProviderCode,
        billed,
        code,
        calls: 1,
        sandbox_billed,
        carrier,
        dead: None,
    }
}

/// Retried with backoff until the retry budget (4 calls) is spent, then dead-lettered.
const fn exhausted(code: &'static str) -> Want {
    Want {
        status: Status::Failed,
        verdict: None,
        reason: R::RetriesExhausted,
        billed: Billed::No,
        code: Some(code),
        calls: 4,
        sandbox_billed: 0,
        carrier: None,
        dead: Some("retries_exhausted"),
    }
}

/// Never retried: billing unknown, dead-lettered for an operator.
const fn lost(code: Option<&'static str>, sandbox_billed: usize) -> Want {
    Want {
        status: Status::Failed,
        verdict: None,
        reason: R::BillingUnknown,
        billed: Billed::Unknown,
        code,
        calls: 1,
        sandbox_billed,
        carrier: None,
        dead: Some("billing_unknown"),
    }
}

/// The seller's backend refused this request's parameters: finished as invalid input, one call,
/// never a circuit.
const fn refused(code: &'static str) -> Want {
    Want {
        status: Status::Completed,
        verdict: Some(Verdict::InvalidInput),
        reason: R::InvalidRequest,
        billed: Billed::No,
        code: Some(code),
        calls: 1,
        sandbox_billed: 0,
        carrier: None,
        dead: None,
    }
}

/// Misbehaves once, then the vendor answers match.
const fn second_time_match() -> Want {
    Want {
        status: Status::Completed,
        verdict: Some(Verdict::Match),
        reason: R::Match,
        billed: Billed::Yes,
        code: Some("1"),
        calls: 2,
        sandbox_billed: 1,
        carrier: Some(Carrier::Cmcc),
        dead: None,
    }
}

/// Every alimarket answer that is not provider-wide, by test identity, written out from the
/// vendor material and docs/src/reference/reason-codes.md, "Retries, billing and dead letters" (not from the code tables).
#[rustfmt::skip]
fn answers() -> Vec<(String, TestIdentity, Want)> {
    use Verdict::{Match, Mismatch, NotFound};
    let cmcc = Carrier::Cmcc;
    let vendor: Vec<(&str, Want)> = vec![
        ("856", exhausted("Throttled by USER Flow Control")),
        ("857", exhausted("Throttled by APP Flow Control")),
        ("858", exhausted("Throttled by API Flow Control")),
        ("859", exhausted("Throttled by DOMAIN Flow Control")),
        ("860", exhausted("TThrottled by GROUP Flow Control")),
        ("869", exhausted("Internal Error")),
        ("870", exhausted("Failed To Call Backend Service")),
        ("871", exhausted("Failed To Invoke Backend Service")),
        ("872", exhausted("Service Unavailable")),
        ("873", lost(Some("Async Service"), 0)),
        ("877", exhausted("HTTP500")),
        ("878", exhausted("HTTP502")),
        ("879", lost(Some("HTTP504"), 0)),
        ("880", refused("HTTP400")),
        ("881", verdict(Match, R::Match, Billed::Yes, "1", 1, cmcc)),
        ("882", verdict(Mismatch, R::MismatchUnspecified, Billed::Yes, "2", 1, cmcc)),
        ("883", verdict(NotFound, R::NoRecord, Billed::Yes, "3", 1, cmcc)),
        ("884", verdict(Match, R::Match, Billed::No, "1", 0, cmcc)),
        ("885", verdict(Mismatch, R::MismatchUnspecified, Billed::No, "2", 0, cmcc)),
        ("886", verdict(NotFound, R::NoRecord, Billed::No, "3", 0, cmcc)),
        ("887", verdict(Match, R::Match, Billed::Unknown, "1", 1, cmcc)),
        ("888", unknown_code(Billed::Yes, Some("9"), 1, Some(cmcc))),
        ("889", unknown_code(Billed::No, Some("9"), 0, Some(cmcc))),
        ("890", unknown_code(Billed::Unknown, Some("9"), 1, Some(cmcc))),
        ("891", unknown_code(Billed::No, Some("400"), 0, None)),
        ("892", unknown_code(Billed::Unknown, Some("500"), 0, None)),
        ("893", lost(Some("HTTP200"), 1)),
        ("894", verdict(Match, R::Match, Billed::Yes, "1", 1, Carrier::Cucc)),
        ("895", verdict(Match, R::Match, Billed::Yes, "1", 1, Carrier::Ctcc)),
        ("896", verdict(Match, R::Match, Billed::Yes, "1", 1, Carrier::Cbn)),
    ];
    let shared: Vec<(Scenario, Want)> = vec![
        (Scenario::Match, verdict(Match, R::Match, Billed::Yes, "1", 1, cmcc)),
        (Scenario::NameMismatch, verdict(Mismatch, R::MismatchUnspecified, Billed::Yes, "2", 1, cmcc)),
        (Scenario::IdNumberMismatch, verdict(Mismatch, R::MismatchUnspecified, Billed::Yes, "2", 1, cmcc)),
        (Scenario::MobileOwnerMismatch, verdict(Mismatch, R::MismatchUnspecified, Billed::Yes, "2", 1, cmcc)),
        (Scenario::MismatchUnspecified, verdict(Mismatch, R::MismatchUnspecified, Billed::Yes, "2", 1, cmcc)),
        (Scenario::NameIdNumberMismatch, verdict(Mismatch, R::MismatchUnspecified, Billed::Yes, "2", 1, cmcc)),
        (Scenario::NoRecord, verdict(NotFound, R::NoRecord, Billed::Yes, "3", 1, cmcc)),
        // The vendor documents no invalid-field, identity-limit or number-range answer.
        (Scenario::InvalidMobile, unknown_code(Billed::No, Some("400"), 0, None)),
        (Scenario::InvalidIdNumber, unknown_code(Billed::No, Some("400"), 0, None)),
        (Scenario::InvalidName, unknown_code(Billed::No, Some("400"), 0, None)),
        (Scenario::IdentityDailyLimit, unknown_code(Billed::No, Some("429"), 0, None)),
        (Scenario::UnsupportedNumberRange, unknown_code(Billed::No, Some("404"), 0, None)),
        (Scenario::Busy, exhausted("Service Unavailable")),
        (Scenario::BusyOnce, second_time_match()),
        (Scenario::Throttled, exhausted("Throttled by USER Flow Control")),
        (Scenario::ThrottledOnce, second_time_match()),
        (Scenario::InternalError, exhausted("Internal Error")),
        (Scenario::Http500, exhausted("HTTP500")),
        (Scenario::Http500Once, second_time_match()),
        (Scenario::UnknownCode, unknown_code(Billed::Yes, Some("9"), 1, Some(cmcc))),
        // Sent, and the answer lost to the client timeout: billed at the vendor.
        (Scenario::Slow, lost(None, 1)),
    ];
    let mut out = Vec::new();
    for (i, (code, want)) in vendor.into_iter().enumerate() {
        out.push((format!("vendor code {code}"), identity_with_code(code, 200 + i as u32), want));
    }
    for (i, (scenario, want)) in shared.into_iter().enumerate() {
        out.push((format!("{scenario:?}"), identity(scenario, 300 + i as u32), want));
    }
    out
}

/// The sandbox's billed calls for one identity.
fn sandbox_billed(app: &TestApp, who: &TestIdentity) -> usize {
    let key = subject_key(&who.id_number);
    app.sandbox
        .ledger
        .entries()
        .iter()
        .filter(|e| e.subject_key.as_deref() == Some(key.as_str()) && e.billed)
        .count()
}

fn assert_no_plaintext(r: &CheckResult, who: &TestIdentity) {
    let text = serde_json::to_string(r).unwrap();
    for secret in [&who.id_number, &who.mobile, &who.name] {
        assert!(
            !text.contains(secret.as_str()),
            "PII in the result of {}",
            r.request_id
        );
    }
}

#[tokio::test]
async fn every_alimarket_code_ends_with_the_right_status_verdict_reason_and_billing() {
    let mut app = TestApp::new().await;
    start_alimarket_worker(&mut app, "alimarket").await;
    let table = answers();
    let mut want: BTreeMap<String, (String, TestIdentity, Want)> = BTreeMap::new();
    for (label, who, w) in table {
        let m = mobile3(&who);
        app.publish(&m).await;
        want.insert(m.request_id.clone(), (label, who, w));
    }
    let ids: Vec<String> = want.keys().cloned().collect();
    let got = app.results_for(&ids, Duration::from_secs(90)).await;
    for (id, results) in &got {
        let (label, who, w) = &want[id];
        let r = &results[0];
        assert_eq!(
            (r.status, r.verdict, r.reason_code, r.billed),
            (w.status, w.verdict, w.reason, w.billed),
            "{label}: {}",
            r.reason
        );
        assert_eq!(r.provider.as_deref(), Some("alimarket"), "{label}");
        if let Some(code) = w.code {
            assert_eq!(r.provider_code.as_deref(), Some(code), "{label}");
        }
        assert_eq!(r.attempts, w.calls, "{label}");
        assert_eq!(r.carrier, w.carrier, "{label}");
        assert_eq!(
            r.routing_key(),
            format!("result.mobile3.{}", w.status.as_str()),
            "{label}"
        );
        if r.status == Status::Completed || r.reason_code == R::UnknownProviderCode {
            assert!(
                r.provider_request_id.is_some(),
                "{label}: seqNo or X-Ca-Request-Id"
            );
        }
        assert_no_plaintext(r, who);
        // At the vendor: the calls made and what was billed.
        assert_eq!(
            app.sandbox.ledger.calls_for_id(&who.id_number) as u32,
            w.calls,
            "{label}: calls"
        );
        assert_eq!(
            sandbox_billed(&app, who),
            w.sandbox_billed,
            "{label}: billed at the vendor"
        );
        // The journal: one row per call, the last one with the result's billing.
        let calls = app.journal(id).await;
        assert_eq!(calls.len() as u32, w.calls, "{label}: journal");
        let last = calls.last().unwrap();
        assert_eq!(
            (last.0.as_str(), last.2.as_str()),
            ("alimarket", w.billed.as_str()),
            "{label}"
        );
        // The stored row is the published result.
        let row =
            sqlx::query("SELECT result, billed, reason_code FROM checks WHERE request_id = $1")
                .bind(id)
                .fetch_one(app.db().await)
                .await
                .unwrap();
        assert_eq!(
            row.get::<serde_json::Value, _>("result"),
            serde_json::to_value(r).unwrap(),
            "{label}"
        );
        assert_eq!(row.get::<String, _>("billed"), w.billed.as_str(), "{label}");
        assert_eq!(
            row.get::<String, _>("reason_code"),
            w.reason.as_str(),
            "{label}"
        );
    }
    // Dead-lettered: retries exhausted and billing unknown, nothing else.
    let mut want_dead: Vec<&str> = want.values().filter_map(|(_, _, w)| w.dead).collect();
    want_dead.sort();
    let dead = app
        .wait_dead_letters(want_dead.len(), Duration::from_secs(30))
        .await;
    let mut reasons: Vec<String> = dead.iter().map(|(d, _)| d.reason.clone()).collect();
    reasons.sort();
    assert_eq!(reasons, want_dead);
    app.cleanup().await;
}

#[tokio::test]
async fn provider_wide_alimarket_answers_fail_over_and_are_never_billed() {
    let mut app = TestApp::new().await;
    start_alimarket_worker(&mut app, "alimarket,tencent").await;
    #[rustfmt::skip]
    let provider_wide: Vec<(TestIdentity, &str)> = vec![
        (identity_with_code("850", 400), "Invalid AppCode `not exists`"),
        (identity_with_code("851", 401), "Unauthorized"),
        (identity_with_code("852", 402), "Expiry of Authorization"),
        (identity_with_code("853", 403), "Quota Exhausted"),
        (identity_with_code("854", 404), "Quota Expired"),
        (identity_with_code("855", 405), "User Arrears"),
        (identity_with_code("861", 406), "Invalid Url"),
        (identity_with_code("862", 407), "Invalid Domain"),
        (identity_with_code("863", 408), "Invalid HttpMethod"),
        (identity_with_code("864", 409), "Invalid Param Location"),
        (identity_with_code("865", 410), "Empty Request Body"),
        (identity_with_code("866", 411), "Invalid Request Body"),
        (identity_with_code("867", 412), "Unsupported Multipart"),
        (identity_with_code("868", 413), "API Not Found"),
        (identity_with_code("874", 414), "Expired api definition"),
        (identity_with_code("875", 415), "Invalid Api Meta, try deploy again or contact us via ticket"),
        (identity_with_code("876", 416), "Provider Account Overdue"),
    ];
    let mut want = BTreeMap::new();
    for (who, code) in &provider_wide {
        let m = mobile3(who);
        app.publish(&m).await;
        want.insert(m.request_id.clone(), (who, *code));
    }
    let ids: Vec<String> = want.keys().cloned().collect();
    let got = app.results_for(&ids, Duration::from_secs(60)).await;
    for (id, results) in &got {
        let (who, code) = want[id];
        let r = &results[0];
        // Tencent (which sees an ordinary identity) answered after alimarket refused.
        assert_eq!(
            (
                r.status,
                r.verdict,
                r.reason_code,
                r.billed,
                r.provider.as_deref()
            ),
            (
                Status::Completed,
                Some(Verdict::Match),
                R::Match,
                Billed::Yes,
                Some("tencent")
            ),
            "{code}"
        );
        assert_eq!(r.attempts, 2, "{code}");
        let calls = app.journal(id).await;
        assert_eq!(
            calls[0],
            (
                "alimarket".to_owned(),
                "provider_wide".to_owned(),
                "no".to_owned(),
                Some(code.to_owned())
            ),
            "{code}"
        );
        assert_eq!(
            (calls[1].0.as_str(), calls[1].1.as_str()),
            ("tencent", "verdict"),
            "{code}"
        );
        // One call to each provider; only Tencent's was billed.
        let key = subject_key(&who.id_number);
        let at_vendor: Vec<(String, bool)> = app
            .sandbox
            .ledger
            .entries()
            .into_iter()
            .filter(|e| e.subject_key.as_deref() == Some(key.as_str()))
            .map(|e| (e.provider, e.billed))
            .collect();
        assert_eq!(
            at_vendor,
            [
                ("alimarket".to_owned(), false),
                ("tencent".to_owned(), true)
            ],
            "{code}"
        );
        assert_no_plaintext(r, who);
    }
    assert!(app.dead_letters().await.is_empty());
    app.cleanup().await;
}

#[tokio::test]
async fn a_provider_wide_alimarket_answer_holds_the_request_when_no_provider_is_left() {
    let mut app = TestApp::new().await;
    start_alimarket_worker(&mut app, "alimarket").await;
    let who = identity(Scenario::ProviderWide, 7);
    let m = mobile3(&who);
    app.publish(&m).await;
    // The circuit (cool-down 0 here) lets one probe through about once a second.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while app.sandbox.ledger.calls_for_id(&who.id_number) < 2 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the provider was not probed again"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    app.assert_no_result_within(Duration::from_millis(1500))
        .await;
    for e in app.sandbox.ledger.entries() {
        assert_eq!(
            (e.provider.as_str(), e.code.as_str(), e.billed),
            ("alimarket", "Quota Exhausted", false)
        );
    }
    let calls = app.journal(&m.request_id).await;
    assert!(calls.len() >= 2);
    for c in &calls {
        assert_eq!(
            (c.1.as_str(), c.2.as_str(), c.3.as_deref()),
            ("provider_wide", "no", Some("Quota Exhausted"))
        );
    }
    assert!(
        app.dead_letters().await.is_empty(),
        "held, not dead-lettered"
    );
    app.cleanup().await;
}
