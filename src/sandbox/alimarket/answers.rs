//! The Marketplace answers: the gateway's refusals and the seller's JSON, the vendor codes 850–899 and the shared scenarios, billing, and rendering.

use axum::http::{header, HeaderMap, HeaderName, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::{json, Map, Value};

use crate::sandbox::http_fault::HttpFault;
use crate::sandbox::scenarios::{carrier_for, sequence_code, Carrier, Scenario};

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

pub(super) const fn gateway(status: u16, message: &'static str) -> Answer {
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
pub(super) const BAD_FIELDS: Answer = Answer::NoResult {
    code: "400",
    msg: "参数错误",
    is_fee: IsFee::Zero,
};

/// Vendor test codes (ID number characters 15–17; make an identity with
/// [`crate::sandbox::scenarios::identity_with_code`]): one exact answer each, so that every row of
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
    ("870", gateway(500, "Failed To Call Backend Service"), "gateway: backend failed (the gateway error table's spelling)"),
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
