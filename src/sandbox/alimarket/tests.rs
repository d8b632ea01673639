//! The Marketplace sandbox tests: the gateway's AppCode and body checks, every vendor code and shared scenario through kycq's client, billing.

use axum::http::HeaderMap;
use serde_json::{json, Value};

use super::*;
use crate::check::mask::mask_id_number;
use crate::check::{Billed, CheckKind, CheckRequest, ReasonCode as R};
use crate::providers::alimarket::{codes, AlimarketProvider, SANDBOX_APP_CODE as APP_CODE};
use crate::providers::{OutcomeClass, Provider, ProviderReply};
use crate::sandbox::scenarios::{identity, identity_with_code, TestIdentity};
use crate::sandbox::testing::{
    self, settings_with, spawn, spawn_faulty, spawn_slow, spawn_with, status_and_text, TestSandbox,
};
use crate::sandbox::{http_fault, SandboxSettings};

/// What came back: status, `X-Ca-Request-Id`, `X-Ca-Error-Message`, `X-Ca-Error-Code`,
/// body (`<body error: …>` when it could not be read).
struct Reply {
    status: u16,
    request_id: Option<String>,
    message: Option<String>,
    code: Option<String>,
    body: String,
}

impl Reply {
    fn json(&self) -> Value {
        serde_json::from_str(&self.body).unwrap_or_else(|_| panic!("JSON: {}", self.body))
    }
}

fn body_for(who: &TestIdentity) -> Vec<u8> {
    serde_json::to_vec(&json!({"name": who.name, "mobile": who.mobile, "idCard": who.id_number}))
        .unwrap()
}

/// Marketplace calls on the shared test sandbox.
trait Calls {
    /// One raw call, the response as it arrives; `authorization` None sends no header.
    async fn post_response(&self, authorization: Option<&str>, body: Vec<u8>) -> reqwest::Response;
    /// One raw call; every answer but the bare HTTP 429 carries `X-Ca-Request-Id`.
    async fn post(&self, authorization: Option<&str>, body: Vec<u8>) -> Reply;
    /// `who`'s call with the right AppCode.
    async fn check(&self, who: &TestIdentity) -> Reply;
    /// The same, the response as it arrives.
    async fn check_response(&self, who: &TestIdentity) -> reqwest::Response;
    /// A provider pointed at this sandbox, as the worker builds it.
    fn provider(&self, timeout_ms: u64) -> AlimarketProvider;
}

impl Calls for TestSandbox {
    async fn post_response(&self, authorization: Option<&str>, body: Vec<u8>) -> reqwest::Response {
        let headers = [("Content-Type", "application/json; charset=UTF-8")]
            .into_iter()
            .chain(authorization.map(|value| ("Authorization", value)));
        let response = self.post_raw("/mobile3/check", headers, body).await;
        if let Some(id) = response.headers().get("x-ca-request-id") {
            let id = id.to_str().unwrap();
            assert_eq!(id.len(), 36, "{id}");
            assert_eq!(id, id.to_uppercase());
        }
        response
    }

    async fn post(&self, authorization: Option<&str>, body: Vec<u8>) -> Reply {
        let response = self.post_response(authorization, body).await;
        let text = |name: &str| {
            response
                .headers()
                .get(name)
                .map(|v| v.to_str().unwrap().to_owned())
        };
        let request_id = text("x-ca-request-id");
        let (message, code) = (text("x-ca-error-message"), text("x-ca-error-code"));
        assert!(
            request_id.is_some() || response.status() == 429,
            "X-Ca-Request-Id on every answer through the gateway"
        );
        let (status, body) = status_and_text(response).await;
        Reply {
            status,
            request_id,
            message,
            code,
            body,
        }
    }

    async fn check(&self, who: &TestIdentity) -> Reply {
        self.post(Some(&format!("APPCODE {APP_CODE}")), body_for(who))
            .await
    }

    async fn check_response(&self, who: &TestIdentity) -> reqwest::Response {
        self.post_response(Some(&format!("APPCODE {APP_CODE}")), body_for(who))
            .await
    }

    fn provider(&self, timeout_ms: u64) -> AlimarketProvider {
        let section = self.provider_section(
            "alimarket",
            &[
                ("app_code", APP_CODE.to_owned()),
                ("timeout_ms", timeout_ms.to_string()),
            ],
        );
        AlimarketProvider::from_settings(&section).unwrap()
    }
}

fn check_request(who: &TestIdentity) -> CheckRequest {
    testing::check_request(CheckKind::Mobile3, who, "sandbox-test")
}

#[tokio::test]
async fn the_right_app_code_gets_the_seller_answer() {
    let sandbox = spawn().await;
    let who = identity(Scenario::Match, 0);
    let reply = sandbox.check(&who).await;
    assert_eq!(reply.status, 200, "{}", reply.body);
    assert_eq!(
        (reply.message.as_deref(), reply.code.as_deref()),
        (None, None)
    );
    let v = reply.json();
    assert_eq!(v["isFee"], 1);
    assert_eq!(v["data"]["result"], 1);
    assert_eq!(v["data"]["resultDesc"], "一致");
    assert_eq!(v["data"]["mobileChannel"], "cmcc");
    assert_eq!(v["code"], "200");
    assert!(v["seqNo"].as_str().is_some_and(|s| s.len() == 32), "{v}");
    let entry = sandbox.last_entry();
    assert_eq!(
        (entry.provider.as_str(), entry.action.as_str()),
        ("alimarket", "mobile3/check")
    );
    assert_eq!(
        (entry.http_status, entry.code.as_str(), entry.billed),
        (200, "1", true)
    );
    assert_eq!(entry.id_number_masked, Some(mask_id_number(&who.id_number)));
}

#[tokio::test]
async fn a_wrong_app_code_is_unauthorized_and_not_billed() {
    let sandbox = spawn().await;
    let who = identity(Scenario::Match, 0);
    for wrong in [
        "APPCODE kycq-sandbox-appcodf",
        "APPCODE kycq-sandbox-appcode2",
        "APPCODE x",
    ] {
        let reply = sandbox.post(Some(wrong), body_for(&who)).await;
        assert_eq!(reply.status, 403, "{wrong}");
        assert_eq!(reply.message.as_deref(), Some("Unauthorized"));
        assert_eq!(reply.code, None);
        assert_eq!(reply.body, "");
        let entry = sandbox.assert_last((403, "Unauthorized", false), wrong);
        assert!(
            entry.subject_key.is_some(),
            "a refused call is still recorded with its subject"
        );
    }
    // Auth comes before the body.
    let reply = sandbox
        .post(Some("APPCODE nope"), b"not json".to_vec())
        .await;
    assert_eq!(reply.message.as_deref(), Some("Unauthorized"));
}

#[tokio::test]
async fn a_missing_or_malformed_authorization_finds_no_app_code() {
    let sandbox = spawn().await;
    let who = identity(Scenario::Match, 0);
    let malformed = [
        None,
        Some(""),
        Some("APPCODE"),
        Some("APPCODE "),
        Some("appcode kycq-sandbox-appcode"),
        Some("APPCODE  kycq-sandbox-appcode"),
        Some("APPCODE:kycq-sandbox-appcode"),
        Some("Bearer kycq-sandbox-appcode"),
        Some("kycq-sandbox-appcode"),
    ];
    for auth in malformed {
        let reply = sandbox.post(auth, body_for(&who)).await;
        assert_eq!(reply.status, 400, "{auth:?}");
        assert_eq!(
            reply.message.as_deref(),
            Some("Invalid AppCode `not exists`"),
            "{auth:?}"
        );
        assert_eq!(reply.body, "");
    }
    assert_eq!(sandbox.running.ledger.len(), malformed.len());
    assert_eq!(sandbox.running.ledger.billed_count(), 0);
}

#[tokio::test]
async fn bodies_are_checked_as_the_gateway_does() {
    let sandbox = spawn().await;
    let auth = format!("APPCODE {APP_CODE}");
    for (body, message) in [
        ("", "Empty Request Body"),
        ("  ", "Empty Request Body"),
        ("not json", "Invalid Request Body"),
        ("[1]", "Invalid Request Body"),
        (
            r#"{"name":"张三","mobile":"13812345678"}"#,
            "Invalid Request Body",
        ),
        (
            r#"{"name":"张三","mobile":13812345678,"idCard":"110105197001010011"}"#,
            "Invalid Request Body",
        ),
    ] {
        let reply = sandbox.post(Some(&auth), body.as_bytes().to_vec()).await;
        assert_eq!(
            (reply.status, reply.message.as_deref()),
            (400, Some(message)),
            "{body}"
        );
    }
    // The seller's own field checks [inferred]: a 200 without data, not billed.
    let who = identity(Scenario::Match, 0);
    for (name, id, mobile) in [
        (who.name.as_str(), who.id_number.as_str(), "1381234567"),
        (who.name.as_str(), "110105197001010012", who.mobile.as_str()),
        (" ", who.id_number.as_str(), who.mobile.as_str()),
    ] {
        let body =
            serde_json::to_vec(&json!({"name": name, "mobile": mobile, "idCard": id})).unwrap();
        let reply = sandbox.post(Some(&auth), body).await;
        assert_eq!(reply.status, 200);
        let v = reply.json();
        assert_eq!(
            (v["code"].as_str(), v["isFee"].as_i64()),
            (Some("400"), Some(0)),
            "{v}"
        );
        assert!(v["data"].is_null());
    }
    assert_eq!(sandbox.running.ledger.billed_count(), 0);
}

/// What kycq's client makes of an answer: class, billing, reason.
type Client = (OutcomeClass, Billed, Option<R>);

/// Per shared scenario, written out independently of `scenario_answer`: HTTP status, ledger
/// code, billed by the seller; then what kycq makes of it, where this module pins it (the
/// HTTP-layer scenarios 934–937 are left to the client's own HTTP table).
fn expected(s: Scenario) -> (u16, &'static str, bool, Option<Client>) {
    use OutcomeClass::*;
    let unknown = (UnknownCode, Billed::No, Some(R::UnknownProviderCode));
    let row = |status, code, billed, client: Client| (status, code, billed, Some(client));
    match s {
        Scenario::Match | Scenario::Slow => {
            row(200, "1", true, (Verdict, Billed::Yes, Some(R::Match)))
        }
        Scenario::NameMismatch
        | Scenario::IdNumberMismatch
        | Scenario::MobileOwnerMismatch
        | Scenario::MismatchUnspecified
        | Scenario::NameIdNumberMismatch => row(
            200,
            "2",
            true,
            (Verdict, Billed::Yes, Some(R::MismatchUnspecified)),
        ),
        Scenario::NoRecord => row(200, "3", true, (Verdict, Billed::Yes, Some(R::NoRecord))),
        Scenario::InvalidMobile | Scenario::InvalidIdNumber | Scenario::InvalidName => {
            row(200, "400", false, unknown)
        }
        Scenario::IdentityDailyLimit => row(200, "429", false, unknown),
        Scenario::UnsupportedNumberRange => row(200, "404", false, unknown),
        Scenario::Busy | Scenario::BusyOnce => row(
            503,
            "Service Unavailable",
            false,
            (Transient, Billed::No, None),
        ),
        Scenario::Throttled | Scenario::ThrottledOnce => row(
            403,
            "Throttled by USER Flow Control",
            false,
            (Transient, Billed::No, None),
        ),
        Scenario::InternalError => row(500, "Internal Error", false, (Transient, Billed::No, None)),
        Scenario::Http500 | Scenario::Http500Once => {
            row(500, "HTTP500", false, (Transient, Billed::No, None))
        }
        Scenario::UnknownCode => row(
            200,
            "9",
            true,
            (UnknownCode, Billed::Yes, Some(R::UnknownProviderCode)),
        ),
        Scenario::ProviderWide => row(
            403,
            "Quota Exhausted",
            false,
            (ProviderWide, Billed::No, None),
        ),
        // 934–937, the same for every vendor; what kycq makes of them is not pinned here.
        http => http_fault::testing::expected_record(http)
            .map(|(status, code, billed)| (status, code, billed, None))
            .expect("an HTTP-layer scenario"),
    }
}

#[tokio::test]
async fn every_shared_scenario_renders_and_classifies_as_documented() {
    let sandbox = spawn().await;
    let provider = sandbox.provider(5_000);
    for scenario in Scenario::ALL {
        let (status, code, billed, client) = expected(scenario);
        // Raw, on variant 1; through kycq's client, on variant 2 (first calls both).
        if let Some(fault) = http_fault::testing::expected_fault(scenario, 1) {
            let response = sandbox.check_response(&identity(scenario, 1)).await;
            assert_eq!(response.status().as_u16(), status, "{scenario:?}");
            let headers = http_fault::testing::assert_answer(response, fault).await;
            assert_fault_headers(&headers, scenario);
        } else {
            let reply = sandbox.check(&identity(scenario, 1)).await;
            assert_eq!(reply.status, status, "{scenario:?}: {}", reply.body);
            if status != 200 && code != "HTTP500" {
                assert_eq!(reply.message.as_deref(), Some(code), "{scenario:?}");
            }
        }
        sandbox.assert_last((status, code, billed), &format!("{scenario:?}"));
        let Some((class, kycq_billed, reason)) = client else {
            continue;
        };
        let r = provider.call(&check_request(&identity(scenario, 2))).await;
        let c = r.classification;
        assert_eq!(
            (c.class, c.billed, c.reason_code),
            (class, kycq_billed, reason),
            "{scenario:?}"
        );
        assert_eq!(
            c.throttled,
            matches!(scenario, Scenario::Throttled | Scenario::ThrottledOnce)
        );
        assert_eq!(r.http_status, Some(status));
        assert!(r.provider_request_id.is_some(), "{scenario:?}");
        if status == 200 && code != "400" && code != "429" && code != "404" {
            assert_eq!(r.carrier, Some(crate::check::Carrier::Cmcc), "{scenario:?}");
        }
    }
}

/// The gateway headers of an HTTP-layer fault: never `X-Ca-Error-*` (the gateway did not
/// refuse); `X-Ca-Request-Id` when the answer passed through the gateway, i.e. all but the
/// bare 429.
fn assert_fault_headers(headers: &HeaderMap, scenario: Scenario) {
    assert!(
        headers.get("x-ca-error-message").is_none() && headers.get("x-ca-error-code").is_none(),
        "{scenario:?}: {headers:?}"
    );
    assert_eq!(
        headers.get("x-ca-request-id").is_some(),
        scenario != Scenario::Http429Once,
        "{scenario:?}: {headers:?}"
    );
}

#[tokio::test]
async fn http_faults_are_the_shared_answers_after_the_app_code_check() {
    let sandbox = spawn().await;
    for scenario in http_fault::testing::SCENARIOS {
        let (status, code, billed, _) = expected(scenario);
        let who = identity(scenario, 9);
        // The gateway's AppCode check comes first, in the gateway's form.
        let reply = sandbox.post(Some("APPCODE wrong"), body_for(&who)).await;
        assert_eq!(
            (reply.status, reply.message.as_deref()),
            (403, Some("Unauthorized")),
            "{scenario:?}"
        );
        let fault = http_fault::testing::expected_fault(scenario, 1).unwrap();
        let response = sandbox.check_response(&who).await;
        let headers = http_fault::testing::assert_answer(response, fault).await;
        assert_fault_headers(&headers, scenario);
        let entry = sandbox.assert_last((status, code, billed), &format!("{scenario:?}"));
        assert_eq!(entry.id_number_masked, Some(mask_id_number(&who.id_number)));
    }
    // The backend's 400 is JSON, but not the seller's envelope, and no gateway refusal.
    let reply = sandbox.check(&identity(Scenario::Http400Backend, 10)).await;
    assert_eq!(
        (
            reply.status,
            reply.message.as_deref(),
            reply.code.as_deref()
        ),
        (400, None, None)
    );
    assert!(reply.request_id.is_some(), "passed through the gateway");
    let v = reply.json();
    assert!(v.get("isFee").is_none() && v.get("data").is_none(), "{v}");
    assert_eq!(sandbox.running.ledger.billed_count(), 0);
}

#[tokio::test]
async fn once_scenarios_misbehave_on_the_first_call_only() {
    let sandbox = spawn().await;
    for scenario in testing::ONCE {
        let who = identity(scenario, 5);
        let first = sandbox.check(&who).await;
        assert_ne!(first.status, 200, "{scenario:?}");
        // Only the bare 429 comes from in front of the gateway, without its request id.
        assert_eq!(
            first.request_id.is_none(),
            scenario == Scenario::Http429Once,
            "{scenario:?}"
        );
        for _ in 0..2 {
            let reply = sandbox.check(&who).await;
            assert_eq!(reply.status, 200, "{scenario:?}");
            assert_eq!(reply.json()["data"]["result"], 1);
        }
    }
}

/// Per vendor code, written out independently of the table: HTTP status, ledger code and
/// billing; kycq's class, billing, throttled, reason and carrier.
#[rustfmt::skip]
#[allow(clippy::type_complexity)]
const VENDOR_EXPECTED: &[(&str, u16, &str, bool, (OutcomeClass, Billed, bool), Option<R>, Option<&str>)] = {
    use OutcomeClass::*;
    const PW: (OutcomeClass, Billed, bool) = (ProviderWide, Billed::No, false);
    const TH: (OutcomeClass, Billed, bool) = (Transient, Billed::No, true);
    const TR: (OutcomeClass, Billed, bool) = (Transient, Billed::No, false);
    const UK: (OutcomeClass, Billed, bool) = (Unknown, Billed::Unknown, false);
    const V_YES: (OutcomeClass, Billed, bool) = (Verdict, Billed::Yes, false);
    const V_NO: (OutcomeClass, Billed, bool) = (Verdict, Billed::No, false);
    const V_UNK: (OutcomeClass, Billed, bool) = (Verdict, Billed::Unknown, false);
    const C_YES: (OutcomeClass, Billed, bool) = (UnknownCode, Billed::Yes, false);
    const C_NO: (OutcomeClass, Billed, bool) = (UnknownCode, Billed::No, false);
    const C_UNK: (OutcomeClass, Billed, bool) = (UnknownCode, Billed::Unknown, false);
    const UNK: Option<R> = Some(R::UnknownProviderCode);
    &[
        ("850", 400, "Invalid AppCode `not exists`", false, PW, None, None),
        ("851", 403, "Unauthorized", false, PW, None, None),
        ("852", 403, "Expiry of Authorization", false, PW, None, None),
        ("853", 403, "Quota Exhausted", false, PW, None, None),
        ("854", 403, "Quota Expired", false, PW, None, None),
        ("855", 403, "User Arrears", false, PW, None, None),
        ("856", 403, "Throttled by USER Flow Control", false, TH, None, None),
        ("857", 403, "Throttled by APP Flow Control", false, TH, None, None),
        ("858", 403, "Throttled by API Flow Control", false, TH, None, None),
        ("859", 403, "Throttled by DOMAIN Flow Control", false, TH, None, None),
        ("860", 403, "TThrottled by GROUP Flow Control", false, TH, None, None),
        ("861", 400, "Invalid Url", false, PW, None, None),
        ("862", 400, "Invalid Domain", false, PW, None, None),
        ("863", 400, "Invalid HttpMethod", false, PW, None, None),
        ("864", 400, "Invalid Param Location", false, PW, None, None),
        ("865", 400, "Empty Request Body", false, PW, None, None),
        ("866", 400, "Invalid Request Body", false, PW, None, None),
        ("867", 400, "Unsupported Multipart", false, PW, None, None),
        ("868", 400, "API Not Found", false, PW, None, None),
        ("869", 500, "Internal Error", false, TR, None, None),
        ("870", 500, "Failed To Call Backend Service", false, TR, None, None),
        ("871", 500, "Failed To Invoke Backend Service", false, TR, None, None),
        ("872", 503, "Service Unavailable", false, TR, None, None),
        ("873", 504, "Async Service", false, UK, None, None),
        ("874", 500, "Expired api definition", false, PW, None, None),
        ("875", 500, "Invalid Api Meta, try deploy again or contact us via ticket", false, PW, None, None),
        ("876", 403, "Provider Account Overdue", false, PW, None, None),
        ("877", 500, "HTTP500", false, TR, None, None),
        ("878", 502, "HTTP502", false, TR, None, None),
        ("879", 504, "HTTP504", false, UK, None, None),
        ("880", 400, "HTTP400", false, (RequestRefused, Billed::No, false), Some(R::InvalidRequest), None),
        ("881", 200, "1", true, V_YES, Some(R::Match), Some("cmcc")),
        ("882", 200, "2", true, V_YES, Some(R::MismatchUnspecified), Some("cmcc")),
        ("883", 200, "3", true, V_YES, Some(R::NoRecord), Some("cmcc")),
        ("884", 200, "1", false, V_NO, Some(R::Match), Some("cmcc")),
        ("885", 200, "2", false, V_NO, Some(R::MismatchUnspecified), Some("cmcc")),
        ("886", 200, "3", false, V_NO, Some(R::NoRecord), Some("cmcc")),
        ("887", 200, "1", true, V_UNK, Some(R::Match), Some("cmcc")),
        ("888", 200, "9", true, C_YES, UNK, Some("cmcc")),
        ("889", 200, "9", false, C_NO, UNK, Some("cmcc")),
        ("890", 200, "9", true, C_UNK, UNK, Some("cmcc")),
        ("891", 200, "400", false, C_NO, UNK, None),
        ("892", 200, "500", false, C_UNK, UNK, None),
        ("893", 200, "unreadable", true, UK, None, None),
        ("894", 200, "1", true, V_YES, Some(R::Match), Some("cucc")),
        ("895", 200, "1", true, V_YES, Some(R::Match), Some("ctcc")),
        ("896", 200, "1", true, V_YES, Some(R::Match), Some("cbn")),
    ]
};

#[tokio::test]
async fn every_vendor_code_renders_and_classifies_as_documented() {
    assert_eq!(VENDOR_EXPECTED.len(), VENDOR_CODES.len());
    let sandbox = spawn().await;
    let provider = sandbox.provider(5_000);
    for (code, status, ledger_code, billed, (class, kycq_billed, throttled), reason, carrier) in
        VENDOR_EXPECTED
    {
        let who = identity_with_code(code, 7);
        assert_eq!(
            who.scenario,
            Scenario::Match,
            "vendor codes are not shared codes"
        );
        let r: ProviderReply = provider.call(&check_request(&who)).await;
        sandbox.assert_last((*status, *ledger_code, *billed), code);
        let c = r.classification;
        assert_eq!(
            (c.class, c.billed, c.throttled, c.reason_code),
            (*class, *kycq_billed, *throttled, *reason),
            "{code}"
        );
        assert_eq!(r.carrier.map(|c| c.as_str()), *carrier, "{code}");
        assert_eq!(r.http_status, Some(*status), "{code}");
        assert!(
            r.provider_request_id.is_some(),
            "{code}: seqNo or X-Ca-Request-Id"
        );
        // provider_code: data.result, the seller's code, the gateway message or HTTP<status>.
        let want_code = match *ledger_code {
            "unreadable" => "HTTP200",
            other => other,
        };
        assert_eq!(r.provider_code.as_deref(), Some(want_code), "{code}");
    }
    // The raw wire form of the VPC-style answers carries X-Ca-Error-Code.
    let reply = sandbox.check(&identity_with_code("874", 0)).await;
    assert_eq!(reply.code.as_deref(), Some("X500ED"));
    let reply = sandbox.check(&identity_with_code("877", 0)).await;
    assert_eq!((reply.message, reply.code), (None, None));
    let reply = sandbox.check(&identity_with_code("887", 0)).await;
    assert!(reply.json().get("isFee").is_none());
}

/// Every row of the provider's code tables is produced by some documented test identity.
#[test]
fn every_code_table_row_has_a_test_identity() {
    let answers: Vec<Answer> = VENDOR_CODES.iter().map(|(_, a, _)| *a).collect();
    let codes_are_unique: std::collections::HashSet<&str> =
        VENDOR_CODES.iter().map(|(c, ..)| *c).collect();
    assert_eq!(codes_are_unique.len(), VENDOR_CODES.len());
    for (code, answer, description) in VENDOR_CODES {
        let n: u16 = code.parse().unwrap();
        assert!((850..=899).contains(&n), "{code}");
        assert!(!description.is_empty());
        let who = identity_with_code(code, 0);
        assert_eq!(vendor_answer(&who.id_number), Some(*answer), "{code}");
    }
    for row in codes::GATEWAY_MESSAGES {
        assert!(
            answers
                .iter()
                .any(|a| matches!(a, Answer::Gateway { message, code: None, .. }
                if codes::find_message(message) == Some(row))),
            "no test identity for {:?}",
            row.code
        );
    }
    for row in codes::GATEWAY_CODES {
        let (error_code, status) = (&row.code, &row.status.expect("documented"));
        assert!(
            answers.iter().any(
                |a| matches!(a, Answer::Gateway { message, code: Some(c), status: s }
                if c == error_code && s == status && codes::find_message(message).is_none())
            ),
            "no test identity for {error_code}"
        );
    }
    // The backend statuses whose class differs in the shared status table.
    for wanted in [400, 500, 504] {
        assert!(
            answers
                .iter()
                .any(|a| matches!(a, Answer::Backend { status } if *status == wanted)),
            "no test identity for a backend HTTP {wanted}"
        );
    }
    for row in codes::RESULTS {
        let n: u8 = row.code.parse().unwrap();
        for fee in [IsFee::One, IsFee::Zero] {
            assert!(
                answers.iter().any(|a| matches!(a, Answer::Result { result, is_fee, .. } if *result == n && *is_fee == fee)),
                "no test identity for result {n} {fee:?}"
            );
        }
    }
    assert!(answers.iter().any(|a| matches!(
        a,
        Answer::Result {
            is_fee: IsFee::Absent,
            ..
        }
    )));
    assert!(answers.iter().any(|a| matches!(a, Answer::Result { result, .. } if codes::RESULTS.iter().all(|r| r.code != result.to_string()))));
    assert!(answers.iter().any(|a| matches!(a, Answer::NoResult { .. })));
    assert!(answers.contains(&Answer::Unreadable));
    for (spelling, _) in codes::MOBILE_CHANNELS {
        let fixed = answers.iter().any(
            |a| matches!(a, Answer::Result { channel: Channel::Fixed(s), .. } if s == spelling),
        );
        assert!(
            fixed || *spelling == mobile_channel(&identity(Scenario::Match, 0).mobile),
            "{spelling}"
        );
    }
}

#[test]
fn mobile_channels_follow_the_number_prefix() {
    assert_eq!(mobile_channel("13812345678"), "cmcc");
    assert_eq!(mobile_channel("13112345678"), "cucc");
    assert_eq!(mobile_channel("13312345678"), "ctcc");
    assert_eq!(mobile_channel("19212345678"), "gdcc");
    assert_eq!(mobile_channel("12012345678"), "");
}

#[test]
fn request_fields_never_show_in_debug() {
    let who = identity(Scenario::Match, 0);
    let parsed = parse_body(&body_for(&who)).unwrap();
    let shown = format!("{parsed:?}");
    assert!(
        !shown.contains(&who.id_number)
            && !shown.contains(&who.mobile)
            && !shown.contains(&who.name),
        "{shown}"
    );
}

#[tokio::test]
async fn the_ledger_never_holds_plaintext_pii() {
    let sandbox = spawn().await;
    let mut people = Vec::new();
    for scenario in Scenario::ALL {
        let who = identity(scenario, 42);
        sandbox.check(&who).await;
        sandbox.post(Some("APPCODE wrong"), body_for(&who)).await;
        people.push(who);
    }
    for (code, ..) in VENDOR_CODES {
        let who = identity_with_code(code, 42);
        sandbox.check(&who).await;
        people.push(who);
    }
    let parsed = sandbox.assert_ledger_hides(&people).await;
    assert_eq!(parsed.len(), Scenario::ALL.len() * 2 + VENDOR_CODES.len());
}

#[tokio::test]
async fn slow_answers_are_recorded_first_and_a_client_timeout_is_billing_unknown() {
    let sandbox = spawn_slow().await;
    let provider = sandbox.provider(300);
    let r = provider
        .call(&check_request(&identity(Scenario::Slow, 0)))
        .await;
    assert_eq!(
        r.classification.class,
        OutcomeClass::Unknown,
        "{}",
        r.detail
    );
    assert_eq!(r.classification.billed, Billed::Unknown);
    let entry = sandbox.last_entry();
    assert_eq!((entry.code.as_str(), entry.billed), ("1", true));
}

#[tokio::test]
async fn injected_faults_are_transient_and_unbilled_after_auth() {
    let sandbox = spawn_faulty(3).await;
    let who = identity(Scenario::Match, 0);
    let mut seen = std::collections::HashSet::new();
    for _ in 0..20 {
        let reply = sandbox.check(&who).await;
        match reply.status {
            503 => assert_eq!(reply.message.as_deref(), Some("Service Unavailable")),
            500 => assert_eq!(reply.message, None),
            other => panic!("{other}"),
        }
        seen.insert(reply.status);
    }
    assert_eq!(seen.len(), 2);
    assert_eq!(sandbox.running.ledger.billed_count(), 0);
    let reply = sandbox.post(Some("APPCODE wrong"), body_for(&who)).await;
    assert_eq!(reply.message.as_deref(), Some("Unauthorized"));
}

#[tokio::test]
async fn a_configured_app_code_replaces_the_default() {
    let sandbox = spawn_with(SandboxSettings::default().with_credential(
        "alimarket",
        "app_code",
        "another-code",
    ))
    .await;
    let who = identity(Scenario::Match, 0);
    assert_eq!(sandbox.check(&who).await.status, 403);
    let reply = sandbox
        .post(Some("APPCODE another-code"), body_for(&who))
        .await;
    assert_eq!(reply.status, 200);
}

#[tokio::test]
async fn the_registry_routes_mobile3_to_alimarket_when_an_app_code_is_set() {
    let with = settings_with(&[
        ("KYCQ__PROVIDERS__ALIMARKET__APP_CODE", APP_CODE),
        ("KYCQ__ROUTES__MOBILE3", "alimarket"),
    ]);
    let (registry, notes) = crate::providers::Registry::from_settings(&with).unwrap();
    assert!(
        registry.provider_names().contains(&"alimarket"),
        "{notes:?}"
    );
    let route = registry
        .route(crate::check::CheckKind::Mobile3, None)
        .unwrap();
    assert_eq!(route[0].provider.name(), "alimarket");
    assert!(registry
        .route(crate::check::CheckKind::Id2, Some("alimarket"))
        .is_err());
    let without = settings_with(&[("KYCQ__ROUTES__MOBILE3", "alimarket")]);
    let (registry, notes) = crate::providers::Registry::from_settings(&without).unwrap();
    assert!(!registry.provider_names().contains(&"alimarket"));
    assert!(notes.iter().any(|n| n.contains("alimarket")), "{notes:?}");
}
