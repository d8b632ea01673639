//! The sandbox's Tencent FaceID `PhoneVerification`: TC3 signature checks and answers in the vendor's own wire format.
//!
//! Checks run in the vendor's order and every refusal is HTTP 200 with
//! `{"Response":{"Error":{"Code","Message"},"RequestId"}}` (PROVIDERS.md §6.3):
//! authorization header → timestamp within 300 s → SecretId → signature → action and version →
//! body → the vendor's own field checks (`-6`/`-7`/`-8`) → injected fault → the scenario.
//! Billing follows PROVIDERS.md §6.2: only `Result` `0` and `-4` are charged.
//! The HTTP-layer scenarios 934–937 are not in Tencent's format: [`Answer::Http`] delegates
//! them to [`super::http_fault`].

use axum::http::{header, HeaderMap, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::Json;
use chrono::Utc;
use secrecy::ExposeSecret;
use serde_json::{json, Value};

use super::http_fault::HttpFault;
use super::ledger::CallRecord;
use super::scenarios::{carrier_for, Carrier, Scenario};
use super::{AppState, InjectedFault};
use crate::check::identity::id_check_char;
use crate::check::mask::{mask_id_number, mask_mobile, mask_name};
use crate::providers::signing::{constant_time_eq, sha256_hex, tc3};

/// Provider name in the ledger.
pub const PROVIDER: &str = "tencent";
/// The TC3 service name of FaceID.
pub const SERVICE: &str = "faceid";
/// The one action served.
pub const ACTION: &str = "PhoneVerification";
/// The API version served.
pub const VERSION: &str = "2018-03-01";
/// How far `X-TC-Timestamp` may be from the server's clock, either way.
pub const MAX_CLOCK_SKEW_SECS: i64 = 300;

/// What the vendor answers, before it is rendered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Answer {
    /// HTTP 200 with a `Result` code; `detail` is `ResultDetail`.
    Result {
        /// The `Result` code, e.g. `"0"`, `"-4"`.
        result: &'static str,
        /// `ResultDetail`, only with `-4`.
        detail: Option<&'static str>,
    },
    /// HTTP 200 with `Response.Error`.
    Error {
        /// `Error.Code`.
        code: &'static str,
        /// `Error.Message`.
        message: String,
    },
    /// HTTP 500 with a plain-text body.
    Http500,
    /// An HTTP-layer fault, the same for every vendor (unbilled).
    Http(HttpFault),
}

impl Answer {
    fn result(result: &'static str) -> Self {
        Answer::Result {
            result,
            detail: None,
        }
    }

    fn mismatch(detail: Option<&'static str>) -> Self {
        Answer::Result {
            result: "-4",
            detail,
        }
    }

    fn error(code: &'static str, message: impl Into<String>) -> Self {
        Answer::Error {
            code,
            message: message.into(),
        }
    }

    /// Whether the vendor charges for this answer: `Result` `0` or `-4` only.
    pub fn billed(&self) -> bool {
        match self {
            Answer::Result { result, .. } => matches!(*result, "0" | "-4"),
            Answer::Error { .. } | Answer::Http500 => false,
            Answer::Http(fault) => fault.billed(),
        }
    }

    /// The HTTP status it is sent with.
    pub fn http_status(&self) -> StatusCode {
        match self {
            Answer::Http500 => StatusCode::INTERNAL_SERVER_ERROR,
            Answer::Http(fault) => fault.status(),
            _ => StatusCode::OK,
        }
    }

    /// The code the ledger records: the `Result`, the `Error.Code`, `HTTP500`, or the fault's
    /// [`HttpFault::ledger_code`].
    pub fn code(&self) -> &'static str {
        match self {
            Answer::Result { result, .. } => result,
            Answer::Error { code, .. } => code,
            Answer::Http500 => "HTTP500",
            Answer::Http(fault) => fault.ledger_code(),
        }
    }
}

fn header_str<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get(name)
        .and_then(|v| std::str::from_utf8(v.as_bytes()).ok())
}

fn signature_failure() -> Answer {
    Answer::error(
        "AuthFailure.SignatureFailure",
        "The provided credentials could not be validated. Please check your signature is correct.",
    )
}

/// Checks 1–4: the `Authorization` header, the timestamp, the SecretId and the TC3 signature
/// recomputed from the received headers, query and exact body bytes. `now` is the server's
/// clock in Unix seconds.
pub fn authenticate(
    headers: &HeaderMap,
    query: &str,
    body: &[u8],
    secret_id: &str,
    secret_key: &str,
    now: i64,
) -> Result<(), Answer> {
    let auth = header_str(headers, "authorization")
        .and_then(tc3::parse_authorization)
        .ok_or_else(|| {
            Answer::error(
                "AuthFailure.InvalidAuthorization",
                "The Authorization header is missing or not in the TC3-HMAC-SHA256 format.",
            )
        })?;

    let timestamp = header_str(headers, "x-tc-timestamp")
        .and_then(|t| t.trim().parse::<i64>().ok())
        .filter(|t| now.abs_diff(*t) <= MAX_CLOCK_SKEW_SECS.unsigned_abs())
        .ok_or_else(|| {
            Answer::error(
                "AuthFailure.SignatureExpire",
                format!(
                    "Signature expired: X-TC-Timestamp must be within {MAX_CLOCK_SKEW_SECS} seconds of the server time ({now})."
                ),
            )
        })?;

    if auth.secret_id != secret_id {
        return Err(Answer::error(
            "AuthFailure.SecretIdNotFound",
            "The SecretId is not found, please ensure that your SecretId is correct.",
        ));
    }

    let signed: Vec<String> = auth
        .signed_headers
        .iter()
        .map(|h| h.to_ascii_lowercase())
        .collect();
    if !signed.iter().any(|h| h == "content-type")
        || !signed.iter().any(|h| h == "host")
        || auth.service != SERVICE
        || auth.date != tc3::utc_date(timestamp)
    {
        return Err(signature_failure());
    }
    let mut received = Vec::with_capacity(signed.len());
    for name in &signed {
        let value = header_str(headers, name).ok_or_else(signature_failure)?;
        received.push((name.clone(), value.to_owned()));
    }
    let (request, _) = tc3::canonical_request("POST", "/", query, &received, &sha256_hex(body));
    let to_sign = tc3::string_to_sign(timestamp, &auth.credential_scope(), &request);
    let expected = tc3::signature(secret_key, &auth.date, &auth.service, &to_sign);
    if constant_time_eq(expected.as_bytes(), auth.signature.as_bytes()) {
        Ok(())
    } else {
        Err(signature_failure())
    }
}

/// Check 5: the action and version.
pub fn check_action(headers: &HeaderMap) -> Result<(), Answer> {
    let action = header_str(headers, "x-tc-action").unwrap_or_default();
    if action != ACTION {
        return Err(Answer::error(
            "InvalidAction",
            format!("The action `{action}` is not found. The sandbox serves `{ACTION}`."),
        ));
    }
    let version = header_str(headers, "x-tc-version").unwrap_or_default();
    if version != VERSION {
        return Err(Answer::error(
            "NoSuchVersion",
            format!("The API version `{version}` does not exist for `{ACTION}`; use `{VERSION}`."),
        ));
    }
    Ok(())
}

/// The `PhoneVerification` parameters. Holds plaintext PII: never logged, `Debug` masks it.
#[derive(Clone, PartialEq, Eq)]
pub struct PhoneVerification {
    /// `IdCard`.
    pub id_card: String,
    /// `Name`.
    pub name: String,
    /// `Phone`.
    pub phone: String,
}

impl std::fmt::Debug for PhoneVerification {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PhoneVerification")
            .field("id_card", &mask_id_number(&self.id_card))
            .field("name", &mask_name(&self.name))
            .field("phone", &mask_mobile(&self.phone))
            .finish()
    }
}

/// Check 6: decodes the JSON body (`MissingParameter` / `InvalidParameter` as the vendor names them).
pub fn parse_body(body: &[u8]) -> Result<PhoneVerification, Answer> {
    let value: Value = serde_json::from_slice(body)
        .map_err(|_| Answer::error("InvalidParameter", "The request body is not valid JSON."))?;
    let object = value.as_object().ok_or_else(|| {
        Answer::error(
            "InvalidParameter",
            "The request body must be a JSON object.",
        )
    })?;
    if object.contains_key("CiphertextBlob") || object.contains_key("EncryptList") {
        return Err(Answer::error(
            "UnsupportedOperation",
            "The sandbox does not decrypt fields: send IdCard, Name and Phone in plain text.",
        ));
    }
    let field = |name: &str| match object.get(name) {
        None | Some(Value::Null) => Err(Answer::error(
            "MissingParameter",
            format!("The request is missing a required parameter `{name}`."),
        )),
        Some(Value::String(s)) => Ok(s.clone()),
        Some(_) => Err(Answer::error(
            "InvalidParameter",
            format!("The parameter `{name}` must be a string."),
        )),
    };
    Ok(PhoneVerification {
        id_card: field("IdCard")?,
        name: field("Name")?,
        phone: field("Phone")?,
    })
}

/// Check 7: the vendor's own field checks (`-6` phone, `-7` ID number, `-8` name).
pub fn field_check(request: &PhoneVerification) -> Option<Answer> {
    let phone = request.phone.as_bytes();
    if phone.len() != 11 || !phone.iter().all(u8::is_ascii_digit) {
        return Some(Answer::result("-6"));
    }
    let id_valid = request.id_card.len() == 18
        && request.id_card.is_char_boundary(17)
        && id_check_char(&request.id_card[..17]).is_some_and(|c| {
            request.id_card[17..].eq_ignore_ascii_case(c.encode_utf8(&mut [0; 4]))
        });
    if !id_valid {
        return Some(Answer::result("-7"));
    }
    if request.name.trim().is_empty() {
        return Some(Answer::result("-8"));
    }
    None
}

/// Check 8: the scenario's answer; `attempt` counts calls for this identity (1 = first).
/// `Slow` answers like `Match` (the caller adds the delay).
pub fn scenario_answer(scenario: Scenario, attempt: u64) -> Answer {
    let first = attempt <= 1;
    match scenario {
        Scenario::Match | Scenario::Slow => Answer::result("0"),
        Scenario::NameMismatch => Answer::mismatch(Some("PhoneNameMismatch")),
        Scenario::IdNumberMismatch => Answer::mismatch(Some("PhoneIdCardMismatch")),
        Scenario::MobileOwnerMismatch => Answer::mismatch(Some("PhoneNameIdCardMismatch")),
        Scenario::NameIdNumberMismatch => Answer::mismatch(Some("NameIdCardMismatch")),
        Scenario::MismatchUnspecified => Answer::mismatch(None),
        Scenario::InvalidMobile => Answer::result("-6"),
        Scenario::InvalidIdNumber => Answer::result("-7"),
        Scenario::InvalidName => Answer::result("-8"),
        Scenario::NoRecord => Answer::result("-9"),
        Scenario::Busy => Answer::result("-11"),
        Scenario::BusyOnce if first => Answer::result("-11"),
        Scenario::IdentityDailyLimit => Answer::result("-12"),
        Scenario::UnsupportedNumberRange => Answer::result("-13"),
        Scenario::UnknownCode => Answer::result("-99"),
        Scenario::Throttled => request_limit_exceeded(),
        Scenario::ThrottledOnce if first => request_limit_exceeded(),
        Scenario::InternalError => Answer::error(
            "InternalError",
            "An internal error has occurred. Retry your request, but if the problem persists, contact us.",
        ),
        Scenario::ProviderWide => {
            Answer::error("UnauthorizedOperation.Arrears", "The account is in arrears.")
        }
        Scenario::Http500 => Answer::Http500,
        Scenario::Http500Once if first => Answer::Http500,
        Scenario::BusyOnce | Scenario::ThrottledOnce | Scenario::Http500Once => {
            Answer::result("0")
        }
        Scenario::Http502CutOff
        | Scenario::Http429Once
        | Scenario::Http400Backend
        | Scenario::Http504CutOff => scenario
            .http_fault(attempt)
            .map_or_else(|| Answer::result("0"), Answer::Http),
    }
}

fn request_limit_exceeded() -> Answer {
    Answer::error(
        "RequestLimitExceeded",
        "Your current request times exceed the frequency limit of 20 per second. Please reduce the frequency of calls.",
    )
}

/// The vendor-like `Description` of a `Result` code.
pub fn description(result: &str) -> &'static str {
    match result {
        "0" => "Authentication passed",
        "-4" => "Information inconsistency",
        "-6" => "Invalid phone number",
        "-7" => "Identity number error",
        "-8" => "Name verification failed",
        "-9" => "No records",
        "-11" => "The verification center service is busy",
        "-12" => "Authentication attempts exceeded the daily limit. Retry the next day",
        "-13" => "The number range is unsupported for verification",
        _ => "Unknown result",
    }
}

/// `Isp` as the vendor may spell it: Chinese, or one of two English forms, chosen by the
/// mobile's last digit (deterministic); `""` when the carrier is unknown.
pub fn isp(mobile: &str) -> &'static str {
    let Some(carrier) = carrier_for(mobile) else {
        return "";
    };
    let last = mobile.bytes().last().map_or(0, |b| b - b'0');
    match (carrier, last % 3) {
        (Carrier::Cmcc, 0) => "移动",
        (Carrier::Cmcc, 1) => "China Mobile",
        (Carrier::Cmcc, _) => "mobile",
        (Carrier::Cucc, 0) => "联通",
        (Carrier::Cucc, 1) => "China Unicom",
        (Carrier::Cucc, _) => "cucc",
        (Carrier::Ctcc, 0) => "电信",
        (Carrier::Ctcc, 1) => "Telecom",
        (Carrier::Ctcc, _) => "telecom",
        (Carrier::Cbn, 0) => "广电",
        (Carrier::Cbn, _) => "China Broadnet",
    }
}

/// Renders an answer in the vendor's wire format.
pub fn render(answer: &Answer, mobile: Option<&str>, request_id: &str) -> Response {
    match answer {
        Answer::Result { result, detail } => {
            let isp = match (*result, mobile) {
                ("-6", _) | (_, None) => "",
                (_, Some(mobile)) => isp(mobile),
            };
            Json(json!({"Response": {
                "Result": result,
                "Description": description(result),
                "Isp": isp,
                "ResultDetail": detail,
                "RequestId": request_id,
            }}))
            .into_response()
        }
        Answer::Error { code, message } => Json(json!({"Response": {
            "Error": {"Code": code, "Message": message},
            "RequestId": request_id,
        }}))
        .into_response(),
        Answer::Http500 => (
            StatusCode::INTERNAL_SERVER_ERROR,
            [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
            "Internal Server Error",
        )
            .into_response(),
        Answer::Http(fault) => fault.render(),
    }
}

/// Runs checks 1–8 for one received call. Returns the answer and whether it is the slow scenario.
fn decide(
    state: &AppState,
    uri: &Uri,
    headers: &HeaderMap,
    body: &[u8],
    now: i64,
) -> (Answer, bool) {
    let settings = &state.settings;
    let checked = authenticate(
        headers,
        uri.query().unwrap_or(""),
        body,
        &settings.tencent_secret_id,
        settings.tencent_secret_key.expose_secret(),
        now,
    )
    .and_then(|()| check_action(headers))
    .and_then(|()| parse_body(body));
    let request = match checked {
        Ok(request) => request,
        Err(answer) => return (answer, false),
    };
    if let Some(answer) = field_check(&request) {
        return (answer, false);
    }
    match state.draw_fault() {
        Some(InjectedFault::Busy) => return (Answer::result("-11"), false),
        Some(InjectedFault::Http500) => return (Answer::Http500, false),
        None => {}
    }
    let scenario = Scenario::from_id_number(&request.id_card);
    let attempt = state.ledger.next_attempt(PROVIDER, &request.id_card);
    (
        scenario_answer(scenario, attempt),
        scenario == Scenario::Slow,
    )
}

/// Reads the fields best-effort (also from refused calls), for the ledger and masked logs.
fn peek(body: &[u8]) -> (Option<String>, Option<String>, Option<String>) {
    let value: Value = serde_json::from_slice(body).unwrap_or(Value::Null);
    let text = |name: &str| value.get(name).and_then(Value::as_str).map(str::to_owned);
    (text("IdCard"), text("Name"), text("Phone"))
}

/// Serves one Tencent call: decides, records it in the ledger, waits if slow, answers.
pub(crate) async fn handle(
    state: &AppState,
    uri: &Uri,
    headers: &HeaderMap,
    body: &[u8],
) -> Response {
    let at = Utc::now();
    let (answer, slow) = decide(state, uri, headers, body, at.timestamp());
    let (id_card, name, phone) = peek(body);
    let action = header_str(headers, "x-tc-action").unwrap_or_default();
    let entry = state.ledger.record(CallRecord {
        at,
        provider: PROVIDER,
        action,
        id_number: id_card.as_deref(),
        http_status: answer.http_status().as_u16(),
        code: answer.code(),
        billed: answer.billed(),
    });
    state
        .after_record(&entry, name.as_deref(), phone.as_deref(), slow)
        .await;
    render(&answer, phone.as_deref(), &uuid::Uuid::new_v4().to_string())
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use axum::http::HeaderValue;
    use serde_json::Value;
    use tokio_util::sync::CancellationToken;

    use super::*;
    use crate::sandbox::http_fault;
    use crate::sandbox::scenarios::identity;
    use crate::sandbox::{start, SandboxSettings};

    const ID: &str = "AKIDkycqsandbox";
    const KEY: &str = "kycq-sandbox-tencent-key";

    /// The shared test sandbox, with this module's helpers.
    struct Sandbox(crate::sandbox::testing::TestSandbox);

    impl std::ops::Deref for Sandbox {
        type Target = crate::sandbox::testing::TestSandbox;
        fn deref(&self) -> &Self::Target {
            &self.0
        }
    }

    async fn spawn_with(settings: SandboxSettings) -> Sandbox {
        Sandbox(crate::sandbox::testing::spawn_with(settings).await)
    }

    async fn spawn() -> Sandbox {
        Sandbox(crate::sandbox::testing::spawn().await)
    }

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
            let body =
                serde_json::to_vec(&json!({"IdCard": id_number, "Name": name, "Phone": mobile}))
                    .unwrap();
            Call::new(body)
        }
    }

    impl Sandbox {
        /// The response as it arrives (the body not read yet).
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
            self.client
                .post(format!("http://{host}/"))
                .header("X-TC-Action", call.action)
                .header("X-TC-Version", call.version)
                .header("X-TC-Timestamp", call.timestamp.to_string())
                .header("Content-Type", call.content_type)
                .header(
                    "Authorization",
                    call.authorization.unwrap_or(signed.authorization),
                )
                .body(call.sent_body.unwrap_or(call.body))
                .send()
                .await
                .expect("sandbox answers")
        }

        /// Status and body text; a body that cannot be read (a cut-off answer) reads as
        /// `<body error: …>`, which no JSON check accepts.
        async fn send(&self, call: Call) -> (u16, String) {
            let response = self.send_response(call).await;
            let status = response.status().as_u16();
            let text = response
                .text()
                .await
                .unwrap_or_else(|e| format!("<body error: {e}>"));
            (status, text)
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
            Scenario::Throttled | Scenario::ThrottledOnce => {
                (200, "RequestLimitExceeded", None, false)
            }
            Scenario::InternalError => (200, "InternalError", None, false),
            Scenario::ProviderWide => (200, "UnauthorizedOperation.Arrears", None, false),
            Scenario::Http500 | Scenario::Http500Once => (500, "HTTP500", None, false),
            Scenario::Http502CutOff => (502, "HTTP502-cut", None, false),
            Scenario::Http429Once => (429, "HTTP429", None, false),
            Scenario::Http400Backend => (400, "HTTP400", None, false),
            Scenario::Http504CutOff => (504, "HTTP504-cut", None, false),
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
        sandbox: &Sandbox,
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
            Some(sha256_hex(who.id_number.as_bytes()).as_str())
        );
        assert_eq!(sandbox.running.ledger.calls_for_id(&who.id_number), 1);
    }

    #[tokio::test]
    async fn http_faults_are_the_shared_answers_after_authentication() {
        let sandbox = spawn().await;
        for scenario in [
            Scenario::Http502CutOff,
            Scenario::Http429Once,
            Scenario::Http400Backend,
            Scenario::Http504CutOff,
        ] {
            let (want_status, want_code, _, _) = expected(scenario);
            let fault = http_fault::testing::expected_fault(scenario, 1).unwrap();
            let response = sandbox.check_response(scenario, 3).await;
            http_fault::testing::assert_answer(response, fault).await;
            let entry = sandbox.running.ledger.entries().pop().unwrap();
            assert_eq!(
                (entry.http_status, entry.code.as_str(), entry.billed),
                (want_status, want_code, false),
                "{scenario:?}"
            );
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
        let last_code = || {
            sandbox
                .running
                .ledger
                .entries()
                .last()
                .unwrap()
                .code
                .clone()
        };
        for scenario in [
            Scenario::BusyOnce,
            Scenario::ThrottledOnce,
            Scenario::Http500Once,
            Scenario::Http429Once,
        ] {
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
        let reset: Value = sandbox
            .client
            .post(format!("http://{}/_sandbox/reset", sandbox.running.addr))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        assert_eq!(reset["cleared"], 2);
        assert!(sandbox.running.ledger.is_empty());
        assert_eq!(sandbox.check(Scenario::Http500Once, 1).await.0, 500);
    }

    fn match_call() -> Call {
        let who = identity(Scenario::Match, 0);
        Call::for_identity(&who.name, &who.id_number, &who.mobile)
    }

    async fn refused(sandbox: &Sandbox, call: Call, code: &str) {
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
            Call::new(
                br#"{"IdCard":110105197001010011,"Name":"x","Phone":"13812345678"}"#.to_vec(),
            ),
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
        let over_http = sandbox
            .client
            .get(format!("http://{}/_sandbox/ledger", sandbox.running.addr))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        let in_memory = serde_json::to_string(&sandbox.running.ledger.entries()).unwrap();
        let parsed: Vec<Value> = serde_json::from_str(&over_http).unwrap();
        assert_eq!(parsed.len(), Scenario::ALL.len() * 2);
        for text in [&over_http, &in_memory] {
            for who in &people {
                assert!(!text.contains(&who.id_number), "ID number leaked");
                assert!(!text.contains(&who.mobile), "mobile leaked");
                assert!(!text.contains(&who.name), "name leaked");
                assert!(text.contains(&mask_id_number(&who.id_number)));
            }
        }
    }

    #[tokio::test]
    async fn documented_identities_endpoint_is_masked() {
        let sandbox = spawn().await;
        let text = sandbox
            .client
            .get(format!(
                "http://{}/_sandbox/identities",
                sandbox.running.addr
            ))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
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
        let sandbox = spawn_with(SandboxSettings {
            fault_rate: 1.0,
            seed: 3,
            ..SandboxSettings::default()
        })
        .await;
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
    async fn other_vendors_and_paths_get_404_json_and_are_recorded() {
        let sandbox = spawn().await;
        let base = format!("http://{}", sandbox.running.addr);
        let bare = sandbox
            .client
            .post(format!("{base}/"))
            .send()
            .await
            .unwrap();
        assert_eq!(bare.status().as_u16(), 404);
        let market = sandbox
            .client
            .post(format!("{base}/mobile3/other"))
            .send()
            .await
            .unwrap();
        assert_eq!(market.status().as_u16(), 404);
        let entries = sandbox.running.ledger.entries();
        let seen: Vec<(&str, &str, u16)> = entries
            .iter()
            .map(|e| (e.provider.as_str(), e.action.as_str(), e.http_status))
            .collect();
        assert_eq!(
            seen,
            [
                ("unknown", "POST /", 404),
                ("unknown", "POST /mobile3/other", 404)
            ]
        );
    }

    #[tokio::test]
    async fn slow_calls_are_recorded_before_the_wait_and_shutdown_ends_the_server() {
        let sandbox = spawn_with(SandboxSettings {
            slow_delay: Duration::from_secs(3600),
            ..SandboxSettings::default()
        })
        .await;
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
        let mut headers = HeaderMap::new();
        for (name, value) in [
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
        ] {
            headers.insert(name, HeaderValue::from_static(value));
        }
        headers
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
            let (request, names) =
                tc3::canonical_request("POST", "/", "", &pairs, &sha256_hex(body));
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
                HeaderValue::from_str(&tc3::authorization_header("id", &scope, &names, &sig))
                    .unwrap(),
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
}
