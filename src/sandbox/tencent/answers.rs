//! Tencent's answers: the scenario → `Result` or error table, billing, and rendering in the vendor's JSON.

use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::json;

use crate::sandbox::http_fault::HttpFault;
use crate::sandbox::scenarios::{carrier_for, Carrier, Scenario};

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
    pub(super) fn result(result: &'static str) -> Self {
        Answer::Result {
            result,
            detail: None,
        }
    }

    pub(super) fn mismatch(detail: Option<&'static str>) -> Self {
        Answer::Result {
            result: "-4",
            detail,
        }
    }

    pub(super) fn error(code: &'static str, message: impl Into<String>) -> Self {
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
