//! The sandbox's Marketplace `POST /mobile3/check`: the API gateway's AppCode check and error headers, then the seller's JSON answers, chosen deterministically from the ID number.
//!
//! Checks run in the gateway's order, then the backend's (PROVIDERS.md §5, vendor-docs/003_*):
//!
//! 1. `Authorization: APPCODE <code>` — the literal `APPCODE`, one space, the code.
//!    Missing, or not in that form → 400 `Invalid AppCode \`not exists\`` **[inferred]**: the
//!    gateway finds no AppCode, and this is its documented "AppCode not found" answer (the
//!    Marketplace sample code; VPC table `A400AC`). A well-formed but wrong code → 403
//!    `Unauthorized`, as the product page FAQ (六.1) says.
//! 2. The body: empty → 400 `Empty Request Body`; not a JSON object with string `name`,
//!    `mobile`, `idCard` → 400 `Invalid Request Body` (the field check is **[inferred]**).
//! 3. The seller's own field checks **[inferred]** (its code table was not in the stored page):
//!    a malformed mobile, ID number or blank name → 200 without `data`, `code` `"400"`, `isFee` 0.
//! 4. An injected fault (`fault_rate`): 503 `Service Unavailable`, or a backend 500.
//! 5. The ID number's sequence code: one of [`VENDOR_CODES`] (850–899, one exact answer each),
//!    else the shared [`Scenario`].
//!
//! Gateway refusals carry `X-Ca-Error-Message` (and `X-Ca-Error-Code` for the VPC-style
//! codes), `Content-Type: text/plain;charset=UTF-8` and an empty body, as captured from the real
//! gateway; every answer carries `X-Ca-Request-Id`.
//!
//! Billing (`isFee`, and the ledger's `billed`), per the seller's FAQ (五: the package is counted
//! when the answer is 2xx): a 200 that carries a `data.result` is billed (`isFee` 1) unless a
//! vendor test code says otherwise; a 200 without a result is not (`isFee` 0) **[inferred]**; a
//! 200 whose body is garbled stands for a billed answer **[inferred]**; gateway refusals and
//! backend errors are not billed — the 504 `Async Service` included, since the FAQ counts 2xx
//! only (kycq still treats a 504 as billing unknown: it cannot see the seller's side).
//!
//! The HTTP-layer scenarios 934–937 are the same for every vendor: [`Answer::Http`] delegates
//! them to [`super::http_fault`]. A cut-off body and the backend's 400 passed through the
//! gateway, so they carry `X-Ca-Request-Id` (and no `X-Ca-Error-*`); the bare 429 stands for
//! something in front of the gateway and carries no gateway header at all.

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{header, HeaderMap, HeaderName, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use chrono::Utc;
use secrecy::ExposeSecret;
use serde_json::{json, Map, Value};

use super::http_fault::HttpFault;
use super::ledger::CallRecord;
use super::scenarios::{carrier_for, sequence_code, Carrier, Scenario};
use super::{AppState, InjectedFault};
use crate::check::identity::id_check_char;
use crate::check::mask::{mask_mobile, mask_name};
use crate::providers::signing::constant_time_eq;

/// Provider name in the ledger.
pub const PROVIDER: &str = "alimarket";
/// The one action served (the path without its `/`).
pub const ACTION: &str = "mobile3/check";
/// The gateway's answer when it finds no AppCode.
pub const INVALID_APPCODE: &str = "Invalid AppCode `not exists`";

/// `isFee` as sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IsFee {
    /// `"isFee": 1`.
    One,
    /// `"isFee": 0`.
    Zero,
    /// No `isFee` field.
    Absent,
}

/// `data.mobileChannel` as sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Channel {
    /// From the mobile number's prefix (`cmcc` for every documented test identity).
    FromMobile,
    /// This spelling.
    Fixed(&'static str),
}

/// What the sandbox answers, before it is rendered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Answer {
    /// HTTP 200 with `data.result`.
    Result {
        /// `data.result` (1, 2, 3, or an undocumented value).
        result: u8,
        /// `isFee`.
        is_fee: IsFee,
        /// `data.mobileChannel`.
        channel: Channel,
    },
    /// HTTP 200 with `data: null`: a seller `code` other than success.
    NoResult {
        /// `code`.
        code: &'static str,
        /// `msg`.
        msg: &'static str,
        /// `isFee`.
        is_fee: IsFee,
    },
    /// HTTP 200 whose body is cut off (not JSON).
    Unreadable,
    /// The gateway refuses: status, `X-Ca-Error-Message`, `X-Ca-Error-Code` (VPC style), empty body.
    Gateway {
        /// HTTP status.
        status: u16,
        /// `X-Ca-Error-Message`.
        message: &'static str,
        /// `X-Ca-Error-Code`, VPC-type instances only.
        code: Option<&'static str>,
    },
    /// The backend's own error status, passed through without gateway error headers.
    Backend {
        /// HTTP status.
        status: u16,
    },
    /// An HTTP-layer fault, the same for every vendor (unbilled).
    Http(HttpFault),
}

const fn result(result: u8, is_fee: IsFee) -> Answer {
    Answer::Result {
        result,
        is_fee,
        channel: Channel::FromMobile,
    }
}

const fn gateway(status: u16, message: &'static str) -> Answer {
    Answer::Gateway {
        status,
        message,
        code: None,
    }
}

const fn vpc(status: u16, code: &'static str, message: &'static str) -> Answer {
    Answer::Gateway {
        status,
        message,
        code: Some(code),
    }
}

const fn channel(spelling: &'static str) -> Answer {
    Answer::Result {
        result: 1,
        is_fee: IsFee::One,
        channel: Channel::Fixed(spelling),
    }
}

/// The seller's answer to malformed fields **[inferred]**.
const BAD_FIELDS: Answer = Answer::NoResult {
    code: "400",
    msg: "参数错误",
    is_fee: IsFee::Zero,
};

/// Vendor test codes (ID number characters 15–17; make an identity with
/// [`super::scenarios::identity_with_code`]): one exact answer each, so that every row of
/// `providers::alimarket::codes` can be produced.
#[rustfmt::skip]
pub const VENDOR_CODES: &[(&str, Answer, &str)] = &[
    ("850", gateway(400, INVALID_APPCODE), "gateway: AppCode not found"),
    ("851", gateway(403, "Unauthorized"), "gateway: AppCode not authorized"),
    ("852", gateway(403, "Expiry of Authorization"), "gateway: authorization expired"),
    ("853", gateway(403, "Quota Exhausted"), "gateway: purchased calls used up"),
    ("854", gateway(403, "Quota Expired"), "gateway: package expired"),
    ("855", gateway(403, "User Arrears"), "gateway: account in arrears"),
    ("856", gateway(403, "Throttled by USER Flow Control"), "gateway: user flow control"),
    ("857", gateway(403, "Throttled by APP Flow Control"), "gateway: app flow control"),
    ("858", gateway(403, "Throttled by API Flow Control"), "gateway: API flow control"),
    ("859", gateway(403, "Throttled by DOMAIN Flow Control"), "gateway: domain flow control"),
    ("860", gateway(403, "TThrottled by GROUP Flow Control"), "gateway: group flow control (the docs' spelling)"),
    ("861", gateway(400, "Invalid Url"), "gateway: malformed request (URL)"),
    ("862", gateway(400, "Invalid Domain"), "gateway: malformed request (domain)"),
    ("863", gateway(400, "Invalid HttpMethod"), "gateway: malformed request (method)"),
    ("864", gateway(400, "Invalid Param Location"), "gateway: malformed request (parameter location)"),
    ("865", gateway(400, "Empty Request Body"), "gateway: malformed request (empty body)"),
    ("866", gateway(400, "Invalid Request Body"), "gateway: malformed request (body)"),
    ("867", gateway(400, "Unsupported Multipart"), "gateway: malformed request (multipart)"),
    ("868", gateway(400, "API Not Found"), "gateway: no such API"),
    ("869", gateway(500, "Internal Error"), "gateway: internal error"),
    ("870", gateway(500, "Failed To Call Backend Service"), "gateway: backend failed (PROVIDERS.md spelling)"),
    ("871", gateway(500, "Failed To Invoke Backend Service"), "gateway: backend failed (gateway README spelling)"),
    ("872", gateway(503, "Service Unavailable"), "gateway: service unavailable"),
    ("873", gateway(504, "Async Service"), "gateway: backend timeout"),
    ("874", vpc(500, "X500ED", "Expired api definition"), "VPC gateway: expired API definition"),
    ("875", vpc(500, "X500AM", "Invalid Api Meta, try deploy again or contact us via ticket"), "VPC gateway: invalid API metadata"),
    ("876", vpc(403, "B403OD", "Provider Account Overdue"), "VPC gateway: the seller's account is overdue"),
    ("877", Answer::Backend { status: 500 }, "backend HTTP 500, no gateway header"),
    ("878", Answer::Backend { status: 502 }, "backend HTTP 502, no gateway header"),
    ("879", Answer::Backend { status: 504 }, "backend HTTP 504, no gateway header"),
    ("880", Answer::Backend { status: 400 }, "backend HTTP 400, no gateway header"),
    ("881", result(1, IsFee::One), "result 1 (consistent), isFee 1"),
    ("882", result(2, IsFee::One), "result 2 (inconsistent), isFee 1"),
    ("883", result(3, IsFee::One), "result 3 (no record), isFee 1"),
    ("884", result(1, IsFee::Zero), "result 1, isFee 0"),
    ("885", result(2, IsFee::Zero), "result 2, isFee 0"),
    ("886", result(3, IsFee::Zero), "result 3, isFee 0"),
    ("887", result(1, IsFee::Absent), "result 1, no isFee"),
    ("888", result(9, IsFee::One), "undocumented result 9, isFee 1"),
    ("889", result(9, IsFee::Zero), "undocumented result 9, isFee 0"),
    ("890", result(9, IsFee::Absent), "undocumented result 9, no isFee"),
    ("891", BAD_FIELDS, "200 without data.result, isFee 0"),
    ("892", Answer::NoResult { code: "500", msg: "系统异常", is_fee: IsFee::Absent }, "200 without data.result, no isFee"),
    ("893", Answer::Unreadable, "200 with a body that is not JSON"),
    ("894", channel("cucc"), "result 1, mobileChannel cucc"),
    ("895", channel("ctcc"), "result 1, mobileChannel ctcc"),
    ("896", channel("gdcc"), "result 1, mobileChannel gdcc (China Broadnet)"),
];

impl Answer {
    /// Whether the seller counts this answer (see the module docs).
    pub fn billed(&self) -> bool {
        match self {
            Answer::Result { is_fee, .. } => *is_fee != IsFee::Zero,
            Answer::NoResult { is_fee, .. } => *is_fee == IsFee::One,
            Answer::Unreadable => true,
            Answer::Gateway { .. } | Answer::Backend { .. } => false,
            Answer::Http(fault) => fault.billed(),
        }
    }

    /// The HTTP status it is sent with.
    pub fn http_status(&self) -> u16 {
        match self {
            Answer::Result { .. } | Answer::NoResult { .. } | Answer::Unreadable => 200,
            Answer::Gateway { status, .. } | Answer::Backend { status } => *status,
            Answer::Http(fault) => fault.status().as_u16(),
        }
    }

    /// The code the ledger records: `data.result`, the seller's `code`, the gateway message,
    /// `unreadable`, `HTTP<status>`, or the fault's [`HttpFault::ledger_code`].
    pub fn code(&self) -> String {
        match self {
            Answer::Result { result, .. } => result.to_string(),
            Answer::NoResult { code, .. } => (*code).to_owned(),
            Answer::Unreadable => "unreadable".to_owned(),
            Answer::Gateway { message, .. } => (*message).to_owned(),
            Answer::Backend { status } => format!("HTTP{status}"),
            Answer::Http(fault) => fault.ledger_code().to_owned(),
        }
    }
}

/// Check 1: the AppCode, compared in constant time.
pub fn authenticate(headers: &HeaderMap, app_code: &str) -> Result<(), Answer> {
    let given = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| std::str::from_utf8(v.as_bytes()).ok())
        .and_then(|v| v.strip_prefix("APPCODE "))
        .filter(|code| !code.is_empty() && !code.contains(char::is_whitespace))
        .ok_or(gateway(400, INVALID_APPCODE))?;
    if constant_time_eq(given.as_bytes(), app_code.as_bytes()) {
        Ok(())
    } else {
        Err(gateway(403, "Unauthorized"))
    }
}

/// The body's fields. Holds plaintext PII: never logged, `Debug` masks it.
#[derive(Clone, PartialEq, Eq)]
pub struct Mobile3Check {
    /// `name`.
    pub name: String,
    /// `mobile`.
    pub mobile: String,
    /// `idCard`.
    pub id_card: String,
}

impl std::fmt::Debug for Mobile3Check {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Mobile3Check")
            .field("name", &mask_name(&self.name))
            .field("mobile", &mask_mobile(&self.mobile))
            .field(
                "id_card",
                &crate::check::mask::mask_id_number(&self.id_card),
            )
            .finish()
    }
}

/// Check 2: the body.
pub fn parse_body(body: &[u8]) -> Result<Mobile3Check, Answer> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Err(gateway(400, "Empty Request Body"));
    }
    let invalid = gateway(400, "Invalid Request Body");
    let value: Value = serde_json::from_slice(body).map_err(|_| invalid)?;
    let object = value.as_object().ok_or(invalid)?;
    let field = |name: &str| match object.get(name) {
        Some(Value::String(s)) => Ok(s.clone()),
        _ => Err(invalid),
    };
    Ok(Mobile3Check {
        name: field("name")?,
        mobile: field("mobile")?,
        id_card: field("idCard")?,
    })
}

/// Check 3: the seller's own field checks **[inferred]**.
pub fn field_check(request: &Mobile3Check) -> Option<Answer> {
    let mobile = request.mobile.as_bytes();
    let mobile_ok = mobile.len() == 11 && mobile.iter().all(u8::is_ascii_digit);
    let id = &request.id_card;
    let id_ok = id.len() == 18
        && id.is_char_boundary(17)
        && id_check_char(&id[..17])
            .is_some_and(|c| id[17..].eq_ignore_ascii_case(c.encode_utf8(&mut [0; 4])));
    (!mobile_ok || !id_ok || request.name.trim().is_empty()).then_some(BAD_FIELDS)
}

/// The answer a vendor test code selects, if the ID number carries one.
pub fn vendor_answer(id_number: &str) -> Option<Answer> {
    let code = sequence_code(id_number)?;
    VENDOR_CODES
        .iter()
        .find(|(c, ..)| *c == code)
        .map(|(_, answer, _)| *answer)
}

/// Check 5 (shared table): the scenario's answer; `attempt` counts calls for this identity.
/// `Slow` answers like `Match` (the caller adds the delay). The vendor documents no answer for
/// invalid fields, identity limits or unsupported ranges: those render as a 200 without `data`
/// and `isFee` 0 **[inferred]**, which kycq classifies as an unknown code.
pub fn scenario_answer(scenario: Scenario, attempt: u64) -> Answer {
    let first = attempt <= 1;
    match scenario {
        Scenario::Match | Scenario::Slow => result(1, IsFee::One),
        Scenario::NameMismatch
        | Scenario::IdNumberMismatch
        | Scenario::MobileOwnerMismatch
        | Scenario::MismatchUnspecified
        | Scenario::NameIdNumberMismatch => result(2, IsFee::One),
        Scenario::NoRecord => result(3, IsFee::One),
        Scenario::InvalidMobile | Scenario::InvalidIdNumber | Scenario::InvalidName => BAD_FIELDS,
        Scenario::IdentityDailyLimit => Answer::NoResult {
            code: "429",
            msg: "查询次数超限",
            is_fee: IsFee::Zero,
        },
        Scenario::UnsupportedNumberRange => Answer::NoResult {
            code: "404",
            msg: "号段不支持",
            is_fee: IsFee::Zero,
        },
        Scenario::Busy => gateway(503, "Service Unavailable"),
        Scenario::BusyOnce if first => gateway(503, "Service Unavailable"),
        Scenario::Throttled => gateway(403, "Throttled by USER Flow Control"),
        Scenario::ThrottledOnce if first => gateway(403, "Throttled by USER Flow Control"),
        Scenario::InternalError => gateway(500, "Internal Error"),
        Scenario::Http500 => Answer::Backend { status: 500 },
        Scenario::Http500Once if first => Answer::Backend { status: 500 },
        Scenario::UnknownCode => result(9, IsFee::One),
        Scenario::ProviderWide => gateway(403, "Quota Exhausted"),
        Scenario::BusyOnce | Scenario::ThrottledOnce | Scenario::Http500Once => {
            result(1, IsFee::One)
        }
        Scenario::Http502CutOff
        | Scenario::Http429Once
        | Scenario::Http400Backend
        | Scenario::Http504CutOff => scenario
            .http_fault(attempt)
            .map_or(result(1, IsFee::One), Answer::Http),
    }
}

/// `data.resultDesc` of a result.
pub fn result_desc(result: u8) -> &'static str {
    match result {
        1 => "一致",
        2 => "不一致",
        3 => "无记录",
        _ => "未知",
    }
}

/// `data.mobileChannel` for a mobile number: `cmcc`, `cucc`, `ctcc`, `gdcc`, or `""`.
pub fn mobile_channel(mobile: &str) -> &'static str {
    match carrier_for(mobile) {
        Some(Carrier::Cmcc) => "cmcc",
        Some(Carrier::Cucc) => "cucc",
        Some(Carrier::Ctcc) => "ctcc",
        Some(Carrier::Cbn) => "gdcc",
        None => "",
    }
}

/// An `X-Ca-Request-Id` in the gateway's form (upper-case UUID).
pub fn new_request_id() -> String {
    uuid::Uuid::new_v4().to_string().to_uppercase()
}

/// Renders an answer as the gateway and seller would send it.
pub fn render(answer: &Answer, mobile: Option<&str>, request_id: &str) -> Response {
    let status = StatusCode::from_u16(answer.http_status()).unwrap_or(StatusCode::OK);
    let mut response = match answer {
        Answer::Result {
            result,
            is_fee,
            channel,
        } => {
            let channel = match channel {
                Channel::Fixed(spelling) => spelling,
                Channel::FromMobile => mobile.map_or("", mobile_channel),
            };
            let mut top = envelope("200", "成功", *is_fee);
            top.insert(
                "data".into(),
                json!({
                    "result": result,
                    "resultDesc": result_desc(*result),
                    "mobileChannel": channel,
                }),
            );
            json_response(top)
        }
        Answer::NoResult { code, msg, is_fee } => {
            let mut top = envelope(code, msg, *is_fee);
            top.insert("data".into(), Value::Null);
            json_response(top)
        }
        Answer::Unreadable => (
            [(header::CONTENT_TYPE, "application/json;charset=UTF-8")],
            r#"{"code":"200","msg":"成功","isFee":1,"seqNo":"#,
        )
            .into_response(),
        Answer::Gateway { message, code, .. } => {
            let mut r = (
                status,
                [(header::CONTENT_TYPE, "text/plain;charset=UTF-8")],
                "",
            )
                .into_response();
            insert(r.headers_mut(), "x-ca-error-message", message);
            if let Some(code) = code {
                insert(r.headers_mut(), "x-ca-error-code", code);
            }
            r
        }
        Answer::Backend { status: code } => (
            status,
            [(header::CONTENT_TYPE, "text/plain;charset=UTF-8")],
            format!("backend error {code}"),
        )
            .into_response(),
        Answer::Http(fault) => {
            let mut response = fault.render();
            if !matches!(fault, HttpFault::Bare { .. }) {
                insert(response.headers_mut(), "x-ca-request-id", request_id);
            }
            return response;
        }
    };
    *response.status_mut() = status;
    insert(response.headers_mut(), "x-ca-request-id", request_id);
    response
}

fn envelope(code: &str, msg: &str, is_fee: IsFee) -> Map<String, Value> {
    let mut top = Map::new();
    top.insert("code".into(), code.into());
    top.insert("msg".into(), msg.into());
    match is_fee {
        IsFee::One => drop(top.insert("isFee".into(), 1.into())),
        IsFee::Zero => drop(top.insert("isFee".into(), 0.into())),
        IsFee::Absent => {}
    }
    top.insert(
        "seqNo".into(),
        uuid::Uuid::new_v4().simple().to_string().into(),
    );
    top
}

fn json_response(top: Map<String, Value>) -> Response {
    (
        [(header::CONTENT_TYPE, "application/json;charset=UTF-8")],
        Value::Object(top).to_string(),
    )
        .into_response()
}

fn insert(headers: &mut HeaderMap, name: &'static str, value: &str) {
    if let Ok(value) = HeaderValue::from_str(value) {
        headers.insert(HeaderName::from_static(name), value);
    }
}

/// Runs checks 1–5 for one received call. Returns the answer and whether it is the slow scenario.
fn decide(state: &AppState, headers: &HeaderMap, body: &[u8]) -> (Answer, bool) {
    let checked = authenticate(headers, state.settings.alimarket_app_code.expose_secret())
        .and_then(|()| parse_body(body));
    let request = match checked {
        Ok(request) => request,
        Err(answer) => return (answer, false),
    };
    if let Some(answer) = field_check(&request) {
        return (answer, false);
    }
    match state.draw_fault() {
        Some(InjectedFault::Busy) => return (gateway(503, "Service Unavailable"), false),
        Some(InjectedFault::Http500) => return (Answer::Backend { status: 500 }, false),
        None => {}
    }
    let attempt = state.ledger.next_attempt(PROVIDER, &request.id_card);
    if let Some(answer) = vendor_answer(&request.id_card) {
        return (answer, false);
    }
    let scenario = Scenario::from_id_number(&request.id_card);
    (
        scenario_answer(scenario, attempt),
        scenario == Scenario::Slow,
    )
}

/// Reads the fields best-effort (also from refused calls), for the ledger and masked logs.
fn peek(body: &[u8]) -> (Option<String>, Option<String>, Option<String>) {
    let value: Value = serde_json::from_slice(body).unwrap_or(Value::Null);
    let text = |name: &str| value.get(name).and_then(Value::as_str).map(str::to_owned);
    (text("idCard"), text("name"), text("mobile"))
}

/// Serves one Marketplace call: decides, records it in the ledger, waits if slow, answers.
async fn handle(state: &AppState, headers: &HeaderMap, body: &[u8]) -> Response {
    let at = Utc::now();
    let (answer, slow) = decide(state, headers, body);
    let (id_card, name, mobile) = peek(body);
    let code = answer.code();
    let entry = state.ledger.record(CallRecord {
        at,
        provider: PROVIDER,
        action: ACTION,
        id_number: id_card.as_deref(),
        http_status: answer.http_status(),
        code: &code,
        billed: answer.billed(),
    });
    state
        .after_record(&entry, name.as_deref(), mobile.as_deref(), slow)
        .await;
    render(&answer, mobile.as_deref(), &new_request_id())
}

/// `POST /mobile3/check`.
pub(crate) async fn post(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let response = handle(&state, &headers, &body).await;
    state.pause(state.settings.latency).await;
    response
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use secrecy::SecretString;

    use super::*;
    use crate::check::mask::mask_id_number;
    use crate::check::request::{decode, Decoded};
    use crate::check::{Billed, CheckRequest, ReasonCode as R};
    use crate::configuration::Settings;
    use crate::providers::alimarket::{codes, AlimarketProvider};
    use crate::providers::{OutcomeClass, Provider, ProviderReply};
    use crate::sandbox::scenarios::{identity, identity_with_code, TestIdentity};
    use crate::sandbox::{SandboxSettings, DEFAULT_ALIMARKET_APP_CODE};

    const APP_CODE: &str = DEFAULT_ALIMARKET_APP_CODE;

    /// The shared test sandbox, with this module's helpers.
    struct Sandbox(crate::sandbox::testing::TestSandbox);

    impl std::ops::Deref for Sandbox {
        type Target = crate::sandbox::testing::TestSandbox;
        fn deref(&self) -> &Self::Target {
            &self.0
        }
    }

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

    async fn spawn_with(settings: SandboxSettings) -> Sandbox {
        Sandbox(crate::sandbox::testing::spawn_with(settings).await)
    }

    async fn spawn() -> Sandbox {
        Sandbox(crate::sandbox::testing::spawn().await)
    }

    fn body_for(who: &TestIdentity) -> Vec<u8> {
        serde_json::to_vec(
            &json!({"name": who.name, "mobile": who.mobile, "idCard": who.id_number}),
        )
        .unwrap()
    }

    impl Sandbox {
        fn url(&self) -> String {
            format!("http://{}/mobile3/check", self.running.addr)
        }

        /// One raw call, the response as it arrives; `authorization` None sends no header.
        async fn post_response(
            &self,
            authorization: Option<&str>,
            body: Vec<u8>,
        ) -> reqwest::Response {
            let mut request = self
                .client
                .post(self.url())
                .header("Content-Type", "application/json; charset=UTF-8")
                .body(body);
            if let Some(value) = authorization {
                request = request.header("Authorization", value);
            }
            let response = request.send().await.expect("sandbox answers");
            if let Some(id) = response.headers().get("x-ca-request-id") {
                let id = id.to_str().unwrap();
                assert_eq!(id.len(), 36, "{id}");
                assert_eq!(id, id.to_uppercase());
            }
            response
        }

        /// One raw call; every answer but the bare HTTP 429 carries `X-Ca-Request-Id`.
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
            let status = response.status().as_u16();
            assert!(
                request_id.is_some() || status == 429,
                "X-Ca-Request-Id on every answer through the gateway"
            );
            Reply {
                status,
                request_id,
                message,
                code,
                body: response
                    .text()
                    .await
                    .unwrap_or_else(|e| format!("<body error: {e}>")),
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

        /// A provider pointed at this sandbox, as the worker builds it.
        fn provider(&self, timeout_ms: u64) -> AlimarketProvider {
            let env = [
                (
                    "KYCQ__PROVIDERS__ALIMARKET__ENDPOINT".to_owned(),
                    format!("http://{}", self.running.addr),
                ),
                (
                    "KYCQ__PROVIDERS__ALIMARKET__APP_CODE".to_owned(),
                    APP_CODE.to_owned(),
                ),
                (
                    "KYCQ__PROVIDERS__ALIMARKET__TIMEOUT_MS".to_owned(),
                    timeout_ms.to_string(),
                ),
            ];
            let settings = Settings::load_with(
                std::path::Path::new("config"),
                None,
                Some(env.into_iter().collect()),
            )
            .unwrap();
            AlimarketProvider::from_settings(settings.providers.get("alimarket").unwrap()).unwrap()
        }
    }

    fn check_request(who: &TestIdentity) -> CheckRequest {
        let json = json!({
            "request_id": "sandbox-test",
            "check": "mobile3",
            "name": who.name,
            "id_number": who.id_number,
            "mobile": who.mobile,
        });
        let today = chrono::NaiveDate::from_ymd_opt(2026, 11, 23).unwrap();
        match decode(json.to_string().as_bytes(), today) {
            Ok(Decoded::Valid(request)) => request,
            _ => panic!("test identities pass kycq's validation"),
        }
    }

    fn last_entry(sandbox: &Sandbox) -> crate::sandbox::LedgerEntry {
        sandbox.running.ledger.entries().pop().expect("recorded")
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
        let entry = last_entry(&sandbox);
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
            let entry = last_entry(&sandbox);
            assert_eq!(
                (entry.http_status, entry.code.as_str(), entry.billed),
                (403, "Unauthorized", false)
            );
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
            Scenario::InternalError => {
                row(500, "Internal Error", false, (Transient, Billed::No, None))
            }
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
            Scenario::Http502CutOff => (502, "HTTP502-cut", false, None),
            Scenario::Http429Once => (429, "HTTP429", false, None),
            Scenario::Http400Backend => (400, "HTTP400", false, None),
            Scenario::Http504CutOff => (504, "HTTP504-cut", false, None),
        }
    }

    #[tokio::test]
    async fn every_shared_scenario_renders_and_classifies_as_documented() {
        let sandbox = spawn().await;
        let provider = sandbox.provider(5_000);
        for scenario in Scenario::ALL {
            let (status, code, billed, client) = expected(scenario);
            // Raw, on variant 1; through kycq's client, on variant 2 (first calls both).
            if let Some(fault) = crate::sandbox::http_fault::testing::expected_fault(scenario, 1) {
                let response = sandbox.check_response(&identity(scenario, 1)).await;
                assert_eq!(response.status().as_u16(), status, "{scenario:?}");
                let headers =
                    crate::sandbox::http_fault::testing::assert_answer(response, fault).await;
                assert_fault_headers(&headers, scenario);
            } else {
                let reply = sandbox.check(&identity(scenario, 1)).await;
                assert_eq!(reply.status, status, "{scenario:?}: {}", reply.body);
                if status != 200 && code != "HTTP500" {
                    assert_eq!(reply.message.as_deref(), Some(code), "{scenario:?}");
                }
            }
            let entry = last_entry(&sandbox);
            assert_eq!(
                (entry.http_status, entry.code.as_str(), entry.billed),
                (status, code, billed),
                "{scenario:?}"
            );
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
        for scenario in [
            Scenario::Http502CutOff,
            Scenario::Http429Once,
            Scenario::Http400Backend,
            Scenario::Http504CutOff,
        ] {
            let (status, code, billed, _) = expected(scenario);
            let who = identity(scenario, 9);
            // The gateway's AppCode check comes first, in the gateway's form.
            let reply = sandbox.post(Some("APPCODE wrong"), body_for(&who)).await;
            assert_eq!(
                (reply.status, reply.message.as_deref()),
                (403, Some("Unauthorized")),
                "{scenario:?}"
            );
            let fault = crate::sandbox::http_fault::testing::expected_fault(scenario, 1).unwrap();
            let response = sandbox.check_response(&who).await;
            let headers = crate::sandbox::http_fault::testing::assert_answer(response, fault).await;
            assert_fault_headers(&headers, scenario);
            let entry = last_entry(&sandbox);
            assert_eq!(
                (entry.http_status, entry.code.as_str(), entry.billed),
                (status, code, billed),
                "{scenario:?}"
            );
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
        for scenario in [
            Scenario::BusyOnce,
            Scenario::ThrottledOnce,
            Scenario::Http500Once,
            Scenario::Http429Once,
        ] {
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
            let entry = last_entry(&sandbox);
            assert_eq!(
                (entry.http_status, entry.code.as_str(), entry.billed),
                (*status, *ledger_code, *billed),
                "{code}"
            );
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
        assert_eq!(parsed.len(), Scenario::ALL.len() * 2 + VENDOR_CODES.len());
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
    async fn slow_answers_are_recorded_first_and_a_client_timeout_is_billing_unknown() {
        let sandbox = spawn_with(SandboxSettings {
            slow_delay: Duration::from_secs(3600),
            ..SandboxSettings::default()
        })
        .await;
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
        let entry = last_entry(&sandbox);
        assert_eq!((entry.code.as_str(), entry.billed), ("1", true));
    }

    #[tokio::test]
    async fn injected_faults_are_transient_and_unbilled_after_auth() {
        let sandbox = spawn_with(SandboxSettings {
            fault_rate: 1.0,
            seed: 3,
            ..SandboxSettings::default()
        })
        .await;
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
        let sandbox = spawn_with(SandboxSettings {
            alimarket_app_code: SecretString::from("another-code"),
            ..SandboxSettings::default()
        })
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
        let load = |env: &[(&str, &str)]| {
            Settings::load_with(
                std::path::Path::new("config"),
                None,
                Some(
                    env.iter()
                        .map(|(k, v)| (k.to_string(), v.to_string()))
                        .collect(),
                ),
            )
            .unwrap()
        };
        let with = load(&[
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
        let without = load(&[("KYCQ__ROUTES__MOBILE3", "alimarket")]);
        let (registry, notes) = crate::providers::Registry::from_settings(&without).unwrap();
        assert!(!registry.provider_names().contains(&"alimarket"));
        assert!(notes.iter().any(|n| n.contains("alimarket")), "{notes:?}");
    }
}
