//! Tencent's sandbox tests: every scenario, billing, the TC3 checks and what the official Python SDK sends.

use std::time::Duration;

use axum::http::{HeaderMap, HeaderValue};
use chrono::Utc;
use serde_json::{json, Value};
use tokio_util::sync::CancellationToken;

use super::*;
use crate::providers::signing::{sha256_hex, tc3};
use crate::providers::tencent::{SANDBOX_SECRET_ID as ID, SANDBOX_SECRET_KEY as KEY};
use crate::sandbox::http_fault;
use crate::sandbox::scenarios::identity;
use crate::sandbox::testing::{
    self, spawn, spawn_faulty, spawn_slow, status_and_text, TestSandbox,
};
use crate::sandbox::{start, SandboxSettings};

/// How a test call is made; the defaults are a correctly signed `PhoneVerification`.
struct Call {
    body: Vec<u8>,
    secret_id: &'static str,
    secret_key: &'static str,
    timestamp: i64,
    content_type: &'static str,
    action: &'static str,
    version: &'static str,
    /// Sent instead of the signed body (after signing), to tamper with it.
    sent_body: Option<Vec<u8>>,
    authorization: Option<String>,
}

impl Call {
    fn new(body: Vec<u8>) -> Self {
        Call {
            body,
            secret_id: ID,
            secret_key: KEY,
            timestamp: Utc::now().timestamp(),
            content_type: "application/json",
            action: ACTION,
            version: VERSION,
            sent_body: None,
            authorization: None,
        }
    }

    fn for_identity(name: &str, id_number: &str, mobile: &str) -> Self {
        let body = serde_json::to_vec(&json!({"IdCard": id_number, "Name": name, "Phone": mobile}))
            .unwrap();
        Call::new(body)
    }
}

/// Tencent calls on the shared test sandbox.
trait Calls {
    /// The response as it arrives (the body not read yet).
    async fn send_response(&self, call: Call) -> reqwest::Response;
    /// Status and body text (see [`status_and_text`]).
    async fn send(&self, call: Call) -> (u16, String);
    /// The JSON of an HTTP 200 answer.
    async fn send_json(&self, call: Call) -> Value;
    /// The first-variant call of a scenario's identity, signed right.
    async fn check(&self, scenario: Scenario, variant: u32) -> (u16, String);
    /// The same, the response as it arrives.
    async fn check_response(&self, scenario: Scenario, variant: u32) -> reqwest::Response;
}

impl Calls for TestSandbox {
    async fn send_response(&self, call: Call) -> reqwest::Response {
        let host = self.running.addr.to_string();
        let signed = tc3::sign_json_post(
            call.secret_id,
            call.secret_key,
            &host,
            SERVICE,
            call.content_type,
            &call.body,
            call.timestamp,
        );
        let headers = [
            ("X-TC-Action", call.action.to_owned()),
            ("X-TC-Version", call.version.to_owned()),
            ("X-TC-Timestamp", call.timestamp.to_string()),
            ("Content-Type", call.content_type.to_owned()),
            (
                "Authorization",
                call.authorization.unwrap_or(signed.authorization),
            ),
        ];
        self.post_raw("/", headers, call.sent_body.unwrap_or(call.body))
            .await
    }

    async fn send(&self, call: Call) -> (u16, String) {
        status_and_text(self.send_response(call).await).await
    }

    async fn send_json(&self, call: Call) -> Value {
        let (status, text) = self.send(call).await;
        assert_eq!(status, 200, "{text}");
        serde_json::from_str(&text).unwrap()
    }

    async fn check(&self, scenario: Scenario, variant: u32) -> (u16, String) {
        let who = identity(scenario, variant);
        self.send(Call::for_identity(&who.name, &who.id_number, &who.mobile))
            .await
    }

    async fn check_response(&self, scenario: Scenario, variant: u32) -> reqwest::Response {
        let who = identity(scenario, variant);
        self.send_response(Call::for_identity(&who.name, &who.id_number, &who.mobile))
            .await
    }
}

fn error_code(v: &Value) -> &str {
    v["Response"]["Error"]["Code"].as_str().unwrap_or("")
}

/// The expected outcome per scenario, written out independently of `scenario_answer`:
/// (HTTP status, Result or Error.Code or HTTP500 or the HTTP fault's ledger code,
/// ResultDetail, billed).
fn expected(s: Scenario) -> (u16, &'static str, Option<&'static str>, bool) {
    match s {
        Scenario::Match | Scenario::Slow => (200, "0", None, true),
        Scenario::NameMismatch => (200, "-4", Some("PhoneNameMismatch"), true),
        Scenario::IdNumberMismatch => (200, "-4", Some("PhoneIdCardMismatch"), true),
        Scenario::MobileOwnerMismatch => (200, "-4", Some("PhoneNameIdCardMismatch"), true),
        Scenario::NameIdNumberMismatch => (200, "-4", Some("NameIdCardMismatch"), true),
        Scenario::MismatchUnspecified => (200, "-4", None, true),
        Scenario::InvalidMobile => (200, "-6", None, false),
        Scenario::InvalidIdNumber => (200, "-7", None, false),
        Scenario::InvalidName => (200, "-8", None, false),
        Scenario::NoRecord => (200, "-9", None, false),
        Scenario::Busy | Scenario::BusyOnce => (200, "-11", None, false),
        Scenario::IdentityDailyLimit => (200, "-12", None, false),
        Scenario::UnsupportedNumberRange => (200, "-13", None, false),
        Scenario::UnknownCode => (200, "-99", None, false),
        Scenario::Throttled | Scenario::ThrottledOnce => (200, "RequestLimitExceeded", None, false),
        Scenario::InternalError => (200, "InternalError", None, false),
        Scenario::ProviderWide => (200, "UnauthorizedOperation.Arrears", None, false),
        Scenario::Http500 | Scenario::Http500Once => (500, "HTTP500", None, false),
        // 934–937, the same for every vendor.
        http => http_fault::testing::expected_record(http)
            .map(|(status, code, billed)| (status, code, None, billed))
            .expect("an HTTP-layer scenario"),
    }
}

#[tokio::test]
async fn every_scenario_answers_as_documented_and_is_billed_accordingly() {
    let sandbox = spawn().await;
    for (i, scenario) in Scenario::ALL.into_iter().enumerate() {
        let (want_status, want_code, want_detail, want_billed) = expected(scenario);
        if let Some(fault) = http_fault::testing::expected_fault(scenario, 1) {
            // Not in Tencent's format: the shared HTTP-layer answer.
            let response = sandbox.check_response(scenario, 0).await;
            assert_eq!(response.status().as_u16(), want_status, "{scenario:?}");
            http_fault::testing::assert_answer(response, fault).await;
            assert_ledger(&sandbox, scenario, i, want_status, want_code, want_billed);
            continue;
        }
        let (status, text) = sandbox.check(scenario, 0).await;
        assert_eq!(status, want_status, "{scenario:?}: {text}");
        if want_status == 500 {
            assert_eq!(text, "Internal Server Error");
        } else {
            let v: Value = serde_json::from_str(&text).unwrap();
            let response = &v["Response"];
            assert!(
                uuid::Uuid::parse_str(response["RequestId"].as_str().unwrap()).is_ok(),
                "{text}"
            );
            if want_code.starts_with(['0', '-']) {
                assert_eq!(response["Result"], want_code, "{scenario:?}: {text}");
                assert_eq!(
                    response["ResultDetail"].as_str(),
                    want_detail,
                    "{scenario:?}"
                );
                assert!(response.get("ResultDetail").is_some(), "always present");
                assert!(response["Description"]
                    .as_str()
                    .is_some_and(|d| !d.is_empty()));
                let isp = response["Isp"].as_str().unwrap();
                if want_code == "-6" {
                    assert_eq!(isp, "");
                } else {
                    assert!(["移动", "China Mobile", "mobile"].contains(&isp), "{isp}");
                }
            } else {
                assert_eq!(error_code(&v), want_code, "{scenario:?}: {text}");
                assert!(response["Error"]["Message"]
                    .as_str()
                    .is_some_and(|m| !m.is_empty()));
                assert!(response.get("Result").is_none());
            }
        }
        assert_ledger(&sandbox, scenario, i, want_status, want_code, want_billed);
    }
    let billed = Scenario::ALL.iter().filter(|s| expected(**s).3).count();
    assert_eq!(sandbox.running.ledger.billed_count(), billed);
}

/// The ledger holds `n + 1` calls and the last is the first call of `scenario`'s variant 0.
fn assert_ledger(
    sandbox: &TestSandbox,
    scenario: Scenario,
    n: usize,
    want_status: u16,
    want_code: &str,
    want_billed: bool,
) {
    let entries = sandbox.running.ledger.entries();
    assert_eq!(entries.len(), n + 1);
    let entry = entries.last().unwrap();
    assert_eq!(entry.provider, "tencent");
    assert_eq!(entry.action, "PhoneVerification");
    assert_eq!(entry.http_status, want_status, "{scenario:?}");
    assert_eq!(entry.code, want_code, "{scenario:?}");
    assert_eq!(entry.billed, want_billed, "{scenario:?}");
    let who = identity(scenario, 0);
    assert_eq!(
        entry.subject_key.as_deref(),
        Some(crate::sandbox::ledger::subject_key(&who.id_number).as_str())
    );
    assert_eq!(sandbox.running.ledger.calls_for_id(&who.id_number), 1);
}

#[tokio::test]
async fn http_faults_are_the_shared_answers_after_authentication() {
    let sandbox = spawn().await;
    for scenario in http_fault::testing::SCENARIOS {
        let (want_status, want_code, _, _) = expected(scenario);
        let fault = http_fault::testing::expected_fault(scenario, 1).unwrap();
        let response = sandbox.check_response(scenario, 3).await;
        http_fault::testing::assert_answer(response, fault).await;
        sandbox.assert_last((want_status, want_code, false), &format!("{scenario:?}"));
        // The second call: 935 matches, the others fault again.
        let (status, text) = sandbox.check(scenario, 3).await;
        if scenario == Scenario::Http429Once {
            assert_eq!(status, 200);
            assert!(text.contains(r#""Result":"0""#), "{text}");
        } else {
            assert_eq!(status, want_status, "{scenario:?}");
        }
        // A wrong signature is refused in Tencent's format first, and recorded as such.
        let who = identity(scenario, 4);
        let call = Call {
            secret_key: "wrong",
            ..Call::for_identity(&who.name, &who.id_number, &who.mobile)
        };
        refused(&sandbox, call, "AuthFailure.SignatureFailure").await;
    }
    assert_eq!(
        sandbox.running.ledger.billed_count(),
        1,
        "the 935 match only"
    );
}

#[tokio::test]
async fn once_scenarios_fail_first_then_match() {
    let sandbox = spawn().await;
    let last_code = || sandbox.last_entry().code;
    for scenario in testing::ONCE {
        let (want_status, want_code, _, _) = expected(scenario);
        let (status, text) = sandbox.check(scenario, 7).await;
        assert_eq!(
            (status, last_code().as_str()),
            (want_status, want_code),
            "{text}"
        );
        for _ in 0..2 {
            let (status, text) = sandbox.check(scenario, 7).await;
            assert_eq!(status, 200);
            let v: Value = serde_json::from_str(&text).unwrap();
            assert_eq!(v["Response"]["Result"], "0", "{scenario:?}: {text}");
        }
        // Another identity of the same scenario starts afresh.
        sandbox.check(scenario, 8).await;
        assert_eq!(last_code(), want_code, "{scenario:?}");
    }
    let busy = identity(Scenario::BusyOnce, 7);
    assert_eq!(sandbox.running.ledger.calls_for_id(&busy.id_number), 3);
    let codes: Vec<(String, bool)> = sandbox
        .running
        .ledger
        .entries()
        .into_iter()
        .take(3)
        .map(|e| (e.code, e.billed))
        .collect();
    assert_eq!(
        codes,
        [
            ("-11".into(), false),
            ("0".into(), true),
            ("0".into(), true)
        ]
    );
}

#[tokio::test]
async fn http500_once_recovers_after_a_reset_only_once_more() {
    let sandbox = spawn().await;
    assert_eq!(sandbox.check(Scenario::Http500Once, 1).await.0, 500);
    assert_eq!(sandbox.check(Scenario::Http500Once, 1).await.0, 200);
    let reset = sandbox.post_empty("/_sandbox/reset").await;
    assert_eq!(reset["cleared"], 2);
    assert!(sandbox.running.ledger.is_empty());
    assert_eq!(sandbox.check(Scenario::Http500Once, 1).await.0, 500);
}

fn match_call() -> Call {
    let who = identity(Scenario::Match, 0);
    Call::for_identity(&who.name, &who.id_number, &who.mobile)
}

async fn refused(sandbox: &TestSandbox, call: Call, code: &str) {
    let before = sandbox.running.ledger.len();
    let v = sandbox.send_json(call).await;
    assert_eq!(error_code(&v), code, "{v}");
    let entries = sandbox.running.ledger.entries();
    assert_eq!(entries.len(), before + 1);
    let entry = entries.last().unwrap();
    assert_eq!(entry.code, code);
    assert!(!entry.billed);
    assert_eq!(entry.http_status, 200);
}

#[tokio::test]
async fn wrong_key_is_a_signature_failure_and_not_billed() {
    let sandbox = spawn().await;
    let call = Call {
        secret_key: "not-the-sandbox-key",
        ..match_call()
    };
    refused(&sandbox, call, "AuthFailure.SignatureFailure").await;
    assert_eq!(sandbox.running.ledger.billed_count(), 0);
    // Refused calls still carry the subject for counting.
    assert_eq!(
        sandbox
            .running
            .ledger
            .calls_for_id(&identity(Scenario::Match, 0).id_number),
        1
    );
}

#[tokio::test]
async fn stale_or_future_timestamps_are_expired() {
    let sandbox = spawn().await;
    let now = Utc::now().timestamp();
    for timestamp in [now - 600, now + 600] {
        let call = Call {
            timestamp,
            ..match_call()
        };
        refused(&sandbox, call, "AuthFailure.SignatureExpire").await;
    }
    let call = Call {
        timestamp: now - 200,
        ..match_call()
    };
    assert_eq!(sandbox.send_json(call).await["Response"]["Result"], "0");
}

#[tokio::test]
async fn unknown_secret_id_is_not_found() {
    let sandbox = spawn().await;
    let call = Call {
        secret_id: "AKIDsomeoneelse",
        ..match_call()
    };
    refused(&sandbox, call, "AuthFailure.SecretIdNotFound").await;
}

#[tokio::test]
async fn tampered_body_is_a_signature_failure() {
    let sandbox = spawn().await;
    let mut call = match_call();
    let mut tampered = call.body.clone();
    let at = tampered.len() - 3;
    tampered[at] = if tampered[at] == b'9' { b'8' } else { b'9' };
    call.sent_body = Some(tampered);
    refused(&sandbox, call, "AuthFailure.SignatureFailure").await;
}

#[tokio::test]
async fn malformed_authorization_action_version_and_body_are_refused() {
    let sandbox = spawn().await;
    let call = Call {
        authorization: Some("Bearer token".into()),
        ..match_call()
    };
    refused(&sandbox, call, "AuthFailure.InvalidAuthorization").await;
    let call = Call {
        action: "IdCardVerification",
        ..match_call()
    };
    refused(&sandbox, call, "InvalidAction").await;
    let call = Call {
        version: "2017-03-12",
        ..match_call()
    };
    refused(&sandbox, call, "NoSuchVersion").await;
    refused(
        &sandbox,
        Call::new(b"not json".to_vec()),
        "InvalidParameter",
    )
    .await;
    refused(
        &sandbox,
        Call::new(br#"{"IdCard":"110105197001010011","Name":"x"}"#.to_vec()),
        "MissingParameter",
    )
    .await;
    refused(
        &sandbox,
        Call::new(br#"{"IdCard":110105197001010011,"Name":"x","Phone":"13812345678"}"#.to_vec()),
        "InvalidParameter",
    )
    .await;
}

#[tokio::test]
async fn the_vendors_own_field_checks() {
    let sandbox = spawn().await;
    let who = identity(Scenario::Match, 0);
    let mut bad_check = who.id_number.clone();
    bad_check.replace_range(17.., if bad_check.ends_with('0') { "1" } else { "0" });
    for (name, id, mobile, want) in [
        (
            who.name.as_str(),
            who.id_number.as_str(),
            "1381234567",
            "-6",
        ),
        (&who.name, &who.id_number, "1381234567x", "-6"),
        (&who.name, "11010519700101001", &who.mobile, "-7"),
        (&who.name, &bad_check, &who.mobile, "-7"),
        ("", &who.id_number, &who.mobile, "-8"),
        ("张三", "11010519491231002x", "13112345678", "0"),
    ] {
        let v = sandbox
            .send_json(Call::for_identity(name, id, mobile))
            .await;
        assert_eq!(v["Response"]["Result"], want, "{v}");
    }
    assert_eq!(sandbox.running.ledger.billed_count(), 1);
}

#[tokio::test]
async fn content_type_with_charset_is_accepted() {
    let sandbox = spawn().await;
    let call = Call {
        content_type: "application/json; charset=utf-8",
        ..match_call()
    };
    assert_eq!(sandbox.send_json(call).await["Response"]["Result"], "0");
}

#[tokio::test]
async fn the_ledger_never_holds_plaintext_pii() {
    let sandbox = spawn().await;
    let mut people = Vec::new();
    for scenario in Scenario::ALL {
        let who = identity(scenario, 42);
        sandbox.check(scenario, 42).await;
        let call = Call {
            secret_key: "wrong",
            ..Call::for_identity(&who.name, &who.id_number, &who.mobile)
        };
        sandbox.send(call).await;
        people.push(who);
    }
    let parsed = sandbox.assert_ledger_hides(&people).await;
    assert_eq!(parsed.len(), Scenario::ALL.len() * 2);
}

#[tokio::test]
async fn documented_identities_endpoint_is_masked() {
    let sandbox = spawn().await;
    let text = sandbox.get_text("/_sandbox/identities").await;
    let list: Vec<Value> = serde_json::from_str(&text).unwrap();
    assert_eq!(list.len(), Scenario::ALL.len());
    assert_eq!(list[1]["scenario"], "name_mismatch");
    assert_eq!(list[1]["code"], "901");
    assert_eq!(list[1]["name"], "张*");
    for who in crate::sandbox::scenarios::documented() {
        assert!(!text.contains(&who.id_number));
        assert!(!text.contains(&who.mobile));
    }
}

#[tokio::test]
async fn injected_faults_are_transient_and_unbilled() {
    let sandbox = spawn_faulty(3).await;
    for _ in 0..10 {
        let (status, text) = sandbox.check(Scenario::Match, 0).await;
        assert!(
            status == 500 || text.contains(r#""Result":"-11""#),
            "{status} {text}"
        );
    }
    assert_eq!(sandbox.running.ledger.len(), 10);
    assert_eq!(sandbox.running.ledger.billed_count(), 0);
    // Auth is still checked first.
    let call = Call {
        secret_key: "wrong",
        ..match_call()
    };
    refused(&sandbox, call, "AuthFailure.SignatureFailure").await;
}

#[tokio::test]
async fn slow_calls_are_recorded_before_the_wait_and_shutdown_ends_the_server() {
    let sandbox = spawn_slow().await;
    let who = identity(Scenario::Slow, 0);
    let call = Call::for_identity(&who.name, &who.id_number, &who.mobile);
    let pending = sandbox.send(call);
    tokio::pin!(pending);
    // Wait until the sandbox has recorded the call (the answer itself is held back).
    tokio::time::timeout(Duration::from_secs(10), async {
        while sandbox.running.ledger.is_empty() {
            tokio::select! {
                _ = &mut pending => panic!("answered before the slow delay"),
                () = tokio::time::sleep(Duration::from_millis(5)) => {}
            }
        }
    })
    .await
    .expect("call recorded");
    let entry = &sandbox.running.ledger.entries()[0];
    assert_eq!((entry.code.as_str(), entry.billed), ("0", true));
    // Shutdown cuts the wait short: the call is answered and the server stops.
    sandbox.shutdown.cancel();
    let (status, text) = tokio::time::timeout(Duration::from_secs(10), pending)
        .await
        .expect("answered on shutdown");
    assert_eq!(status, 200);
    assert!(text.contains(r#""Result":"0""#));
}

#[tokio::test]
async fn shutdown_stops_the_server_task() {
    let shutdown = CancellationToken::new();
    let running = start(
        SandboxSettings {
            listen: "127.0.0.1:0".parse().unwrap(),
            ..SandboxSettings::default()
        },
        shutdown.clone(),
    )
    .await
    .unwrap();
    assert_ne!(running.addr.port(), 0);
    shutdown.cancel();
    tokio::time::timeout(Duration::from_secs(10), running.task)
        .await
        .expect("server stops")
        .expect("task not panicked")
        .expect("served without error");
}

fn capture_headers() -> HeaderMap {
    // The Tencent request of SDK_CAPTURES.md, as the official Python SDK sent it.
    testing::header_map(&[
        ("user-agent", "python-requests/2.34.2"),
        ("x-tc-traceid", "a06649eb-e109-4c65-949f-157f9f8bb7d1"),
        ("content-type", "application/json"),
        ("host", "127.0.0.1:18080"),
        ("x-tc-action", "PhoneVerification"),
        ("x-tc-requestclient", "SDK_PYTHON_3.1.179"),
        ("x-tc-timestamp", "1795400296"),
        ("x-tc-version", "2018-03-01"),
        ("x-tc-language", "zh-CN"),
        (
            "authorization",
            "TC3-HMAC-SHA256 Credential=AKIDtest/2026-11-23/faceid/tc3_request, SignedHeaders=content-type;host, Signature=09005ed376d00f95a3cbe531c5dc33fc9d511297b8b267c7d54c22b1fedcbf8d",
        ),
    ])
}

const CAPTURE_BODY: &[u8] =
    br#"{"IdCard": "11010519491231002X", "Name": "\u5f20\u4e09", "Phone": "13112345678"}"#;

#[test]
fn accepts_what_the_official_python_sdk_sends() {
    let headers = capture_headers();
    let now = 1_795_400_296;
    assert_eq!(
        authenticate(
            &headers,
            "",
            CAPTURE_BODY,
            "AKIDtest",
            "secretkey",
            now + 299
        ),
        Ok(())
    );
    assert_eq!(check_action(&headers), Ok(()));
    let request = parse_body(CAPTURE_BODY).unwrap();
    assert_eq!(request.name, "张三");
    assert_eq!(field_check(&request), None);
    assert_eq!(Scenario::from_id_number(&request.id_card), Scenario::Match);
    assert!(!format!("{request:?}").contains("11010519491231002X"));

    let code = |r: Result<(), Answer>| r.err().map(|a| a.code());
    assert_eq!(
        code(authenticate(
            &headers,
            "",
            CAPTURE_BODY,
            "AKIDtest",
            "secretkey",
            now + 301
        )),
        Some("AuthFailure.SignatureExpire")
    );
    assert_eq!(
        code(authenticate(
            &headers,
            "",
            CAPTURE_BODY,
            "AKIDother",
            "secretkey",
            now
        )),
        Some("AuthFailure.SecretIdNotFound")
    );
    assert_eq!(
        code(authenticate(
            &headers,
            "",
            CAPTURE_BODY,
            "AKIDtest",
            "secretkez",
            now
        )),
        Some("AuthFailure.SignatureFailure")
    );
    assert_eq!(
        code(authenticate(
            &headers,
            "a=1",
            CAPTURE_BODY,
            "AKIDtest",
            "secretkey",
            now
        )),
        Some("AuthFailure.SignatureFailure")
    );
    let mut other_host = headers.clone();
    other_host.insert("host", HeaderValue::from_static("127.0.0.1:18081"));
    assert_eq!(
        code(authenticate(
            &other_host,
            "",
            CAPTURE_BODY,
            "AKIDtest",
            "secretkey",
            now
        )),
        Some("AuthFailure.SignatureFailure")
    );
    let mut no_timestamp = headers.clone();
    no_timestamp.remove("x-tc-timestamp");
    assert_eq!(
        code(authenticate(
            &no_timestamp,
            "",
            CAPTURE_BODY,
            "AKIDtest",
            "secretkey",
            now
        )),
        Some("AuthFailure.SignatureExpire")
    );
    let mut no_auth = headers;
    no_auth.remove("authorization");
    assert_eq!(
        code(authenticate(
            &no_auth,
            "",
            CAPTURE_BODY,
            "AKIDtest",
            "secretkey",
            now
        )),
        Some("AuthFailure.InvalidAuthorization")
    );
}

#[test]
fn signed_headers_must_include_content_type_and_host_and_the_scope_must_match() {
    let now = 1_795_400_296;
    let body = b"{}";
    let sign = |signed: &[(&str, &str)], timestamp: i64, service: &str| {
        let pairs: Vec<(String, String)> = signed
            .iter()
            .map(|(n, v)| ((*n).to_owned(), (*v).to_owned()))
            .collect();
        let (request, names) = tc3::canonical_request("POST", "/", "", &pairs, &sha256_hex(body));
        let scope = tc3::credential_scope(timestamp, service);
        let sts = tc3::string_to_sign(timestamp, &scope, &request);
        let sig = tc3::signature("k", &tc3::utc_date(timestamp), service, &sts);
        let mut headers = HeaderMap::new();
        headers.insert("content-type", HeaderValue::from_static("application/json"));
        headers.insert("host", HeaderValue::from_static("h"));
        headers.insert("x-tc-action", HeaderValue::from_static("PhoneVerification"));
        headers.insert("x-tc-timestamp", HeaderValue::from(now));
        headers.insert(
            "authorization",
            HeaderValue::from_str(&tc3::authorization_header("id", &scope, &names, &sig)).unwrap(),
        );
        authenticate(&headers, "", body, "id", "k", now)
            .err()
            .map(|a| a.code())
    };
    let ct = ("content-type", "application/json");
    let host = ("host", "h");
    assert_eq!(sign(&[ct, host], now, "faceid"), None);
    assert_eq!(
        sign(
            &[ct, host, ("x-tc-action", "PhoneVerification")],
            now,
            "faceid"
        ),
        None,
        "x-tc-action may be signed too (value lower-cased)"
    );
    assert_eq!(
        sign(&[ct], now, "faceid"),
        Some("AuthFailure.SignatureFailure")
    );
    assert_eq!(
        sign(&[host], now, "faceid"),
        Some("AuthFailure.SignatureFailure")
    );
    assert_eq!(
        sign(&[ct, host], now, "cvm"),
        Some("AuthFailure.SignatureFailure")
    );
    // Signed for another day than X-TC-Timestamp's.
    assert_eq!(
        sign(&[ct, host], now - 86_400, "faceid"),
        Some("AuthFailure.SignatureFailure")
    );
    assert_eq!(
        sign(&[ct, host, ("x-tc-region", "ap-guangzhou")], now, "faceid"),
        Some("AuthFailure.SignatureFailure"),
        "a signed header that was not sent"
    );
}

#[test]
fn billing_follows_the_vendor_table() {
    for scenario in Scenario::ALL {
        let answer = scenario_answer(scenario, 1);
        assert_eq!(answer.billed(), expected(scenario).3, "{scenario:?}");
        assert_eq!(answer.code(), expected(scenario).1, "{scenario:?}");
    }
    assert!(scenario_answer(Scenario::BusyOnce, 2).billed());
}

#[test]
fn isp_spellings_alternate_deterministically() {
    assert_eq!(isp("13812345670"), "移动");
    assert_eq!(isp("13812345671"), "China Mobile");
    assert_eq!(isp("13812345672"), "mobile");
    assert_eq!(isp("13112345670"), "联通");
    assert_eq!(isp("13112345672"), "cucc");
    assert_eq!(isp("13312345671"), "Telecom");
    assert_eq!(isp("13312345672"), "telecom");
    assert_eq!(isp("19212345673"), "广电");
    assert_eq!(isp("19212345674"), "China Broadnet");
    assert_eq!(isp("12012345678"), "");
    assert_eq!(isp(""), "");
}
