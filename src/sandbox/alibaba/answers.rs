//! Alibaba's answers: the vendor codes 800–849 and the shared scenarios per API, billing, and rendering in the vendor's JSON.

use std::collections::HashMap;
use std::sync::OnceLock;

use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::{json, Map};

use super::params::Subject;
use crate::providers::alibaba::Api;
use crate::sandbox::http_fault::HttpFault;
use crate::sandbox::scenarios::{
    carrier_for, identity, identity_with_code, sequence_code, Carrier, Scenario, TestIdentity,
};

/// Variants per code whose MD5 the sandbox recognises in md5 mode.
pub const MD5_VARIANTS: u32 = 1_000;

/// A `Result` the vendor answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// `Mobile3MetaVerifyIntl`: `BizCode`, `SubCode` (and `IspName`).
    Mobile3 {
        /// `BizCode`.
        biz: &'static str,
        /// `SubCode`.
        sub: &'static str,
    },
    /// `Id2MetaVerifyIntl`: `BizCode`.
    Id2 {
        /// `BizCode`.
        biz: &'static str,
    },
    /// `Id2MetaPeriodVerifyIntl`: `Passed`, `SubCode`.
    Period {
        /// `Y` / `N`.
        passed: &'static str,
        /// `SubCode`.
        sub: &'static str,
    },
}

/// What the vendor answers, before it is rendered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Answer {
    /// HTTP 200, `Code: Success`, with a `Result`.
    Result(Outcome),
    /// A vendor error: `Code` and what its `Message` names (a parameter, the string to sign).
    Error {
        /// The error `Code`.
        code: &'static str,
        /// Filled into the message.
        detail: Option<String>,
    },
    /// A body that is not the vendor's JSON (a gateway page), with this HTTP status.
    Garbled(u16),
    /// An HTTP-layer fault, the same for every vendor and API (unbilled).
    Http(HttpFault),
}

impl Answer {
    pub(super) fn error(code: &'static str) -> Self {
        Answer::Error { code, detail: None }
    }

    pub(super) fn invalid(param: &str) -> Self {
        Answer::Error {
            code: "InvalidParameter",
            detail: Some(param.to_owned()),
        }
    }

    pub(super) fn missing(param: &str) -> Self {
        Answer::Error {
            code: "MissingParameter",
            detail: Some(param.to_owned()),
        }
    }

    /// Whether the vendor charges for this answer (see the module docs).
    pub fn billed(&self) -> bool {
        match self {
            Answer::Result(Outcome::Mobile3 { biz, .. } | Outcome::Id2 { biz }) => {
                matches!(*biz, "1" | "2")
            }
            Answer::Result(Outcome::Period { .. }) => true,
            Answer::Error { .. } => false,
            Answer::Garbled(status) => *status == 200,
            Answer::Http(fault) => fault.billed(),
        }
    }

    /// The code the ledger records: SubCode, else BizCode; the error `Code`; `HTTP<status>`; or
    /// the fault's [`HttpFault::ledger_code`].
    pub fn code(&self) -> String {
        match self {
            Answer::Result(Outcome::Mobile3 { sub, .. } | Outcome::Period { sub, .. }) => {
                (*sub).to_owned()
            }
            Answer::Result(Outcome::Id2 { biz }) => (*biz).to_owned(),
            Answer::Error { code, .. } => (*code).to_owned(),
            Answer::Garbled(status) => format!("HTTP{status}"),
            Answer::Http(fault) => fault.ledger_code().to_owned(),
        }
    }

    /// The HTTP status it is sent with. Where the vendor's pages disagree, each API uses its own
    /// page (InvalidParameter 401 on ID_2META, 400 on eKYC_Date_MIN).
    pub fn http_status(&self, api: Option<Api>) -> u16 {
        let period = api == Some(Api::Id2Period);
        match self {
            Answer::Result(_) => 200,
            Answer::Garbled(status) => *status,
            Answer::Http(fault) => fault.status().as_u16(),
            Answer::Error { code, .. } => match *code {
                "InvalidParameter" if !period => 401,
                "Forbidden.ExceptionRepeatedInvoke" if period => 401,
                "Throttling.Api"
                | "Forbidden.AccountAccessDenied"
                | "Forbidden.RAMUserAccessDenied"
                | "Forbidden.RiskControl" => 403,
                "InvalidAccessKeyId.NotFound" | "InvalidAction.NotFound" => 404,
                "InternalError" | "Forbidden.ExceptionDataSource" => 500,
                "ServiceUnavailable" => 503,
                _ => 400,
            },
        }
    }
}

/// The vendor-like `Message` of an error code.
pub fn error_message(code: &str, detail: Option<&str>) -> String {
    let detail = detail.unwrap_or_default();
    match code {
        "MissingParameter" => format!(
            "The input parameter \"{detail}\" that is mandatory for processing this request is not supplied."
        ),
        "InvalidParameter" => format!("Specified parameter {detail} is not valid."),
        "Forbidden.ExceptionRepeatedInvoke" => {
            "The number of abnormal repeated invocations exceeds the limit.".into()
        }
        "Throttling.Api" => "Request was denied due to api flow control.".into(),
        "Throttling.User" => "Request was denied due to user flow control.".into(),
        "Throttling" => "Request was denied due to flow control.".into(),
        "InternalError" => {
            "The request processing has failed due to some unknown error, exception or failure."
                .into()
        }
        "ServiceUnavailable" => {
            "The request has failed due to a temporary failure of the server.".into()
        }
        "Forbidden.ExceptionDataSource" => {
            "The authoritative data source service is abnormal.".into()
        }
        "Forbidden.AccountAccessDenied" => {
            "Activate ID Verification and make sure your account has no overdue payment.".into()
        }
        "Forbidden.RAMUserAccessDenied" => {
            "Grant the RAM user the AliyunAntCloudAuthFullAccess permission.".into()
        }
        "Forbidden.RiskControl" => {
            "This operation is forbidden by Aliyun RiskControl system.".into()
        }
        "SignatureDoesNotMatch" => format!(
            "Specified signature does not match our calculation. The server string to sign is: {detail}"
        ),
        "InvalidAccessKeyId.NotFound" => "Specified access key is not found.".into(),
        "InvalidAccessKeyId.Inactive" => "Specified access key is disabled.".into(),
        "IncompleteSignature" => {
            "The request signature does not conform to Aliyun standards.".into()
        }
        "InvalidTimeStamp.Expired" => "Specified time stamp or date value is expired.".into(),
        "InvalidTimeStamp.Format" => {
            "Specified time stamp or date value is not well formatted.".into()
        }
        "SignatureNonceUsed" => "Specified signature nonce was used already.".into(),
        "InvalidAction.NotFound" => {
            format!("Specified api {detail} is not found, please check your url and method.")
        }
        "InvalidVersion" => format!("Specified parameter Version {detail} is not valid."),
        _ => "The request failed.".into(),
    }
}

/// What one of the vendor codes 800–849 answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum VendorAnswer {
    /// A `Result`, per API.
    Result {
        /// Mobile3 (`BizCode`, `SubCode`).
        mobile3: (&'static str, &'static str),
        /// Id2 `BizCode`.
        id2: &'static str,
        /// Id2Period (`Passed`, `SubCode`).
        period: (&'static str, &'static str),
    },
    /// This error `Code`, whatever the API.
    Error(&'static str),
    /// A non-JSON body with this status.
    Garbled(u16),
}

/// A vendor test code: the ID number's sequence code and what every API answers for it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct VendorCode {
    /// The 3-digit sequence code (`identity_with_code(code, variant)`).
    pub code: &'static str,
    /// The answer.
    pub answer: VendorAnswer,
    /// One line for people.
    pub description: &'static str,
}

const fn result(
    code: &'static str,
    mobile3: (&'static str, &'static str),
    id2: &'static str,
    period: (&'static str, &'static str),
    description: &'static str,
) -> VendorCode {
    VendorCode {
        code,
        answer: VendorAnswer::Result {
            mobile3,
            id2,
            period,
        },
        description,
    }
}

const fn error(
    code: &'static str,
    vendor_code: &'static str,
    description: &'static str,
) -> VendorCode {
    VendorCode {
        code,
        answer: VendorAnswer::Error(vendor_code),
        description,
    }
}

/// Alibaba-only test codes: every BizCode, SubCode, Passed/SubCode and error `Code` of the
/// Alibaba tables, an unlisted SubCode, an unlisted error and a garbled answer.
pub const VENDOR_CODES: &[VendorCode] = &[
    result(
        "800",
        ("1", "101"),
        "1",
        ("Y", "200"),
        "match: Mobile3 1/101, Id2 1, period Y/200",
    ),
    result(
        "801",
        ("2", "201"),
        "2",
        ("N", "223"),
        "Mobile3 2/201 (mobile owner), Id2 2, period N/223",
    ),
    result(
        "802",
        ("2", "202"),
        "2",
        ("N", "223"),
        "Mobile3 2/202 (ID number), Id2 2, period N/223",
    ),
    result(
        "803",
        ("2", "203"),
        "2",
        ("N", "223"),
        "Mobile3 2/203 (name), Id2 2, period N/223",
    ),
    result(
        "804",
        ("2", "204"),
        "2",
        ("N", "223"),
        "Mobile3 2/204 (other), Id2 2, period N/223",
    ),
    result(
        "805",
        ("3", "301"),
        "3",
        ("N", "202"),
        "no record: Mobile3 3/301, Id2 3, period N/202",
    ),
    result(
        "806",
        ("2", "205"),
        "4",
        ("N", "224"),
        "unlisted: Mobile3 SubCode 205 under BizCode 2, Id2 BizCode 4, period N/224",
    ),
    result(
        "807",
        ("4", "401"),
        "9",
        ("Y", "201"),
        "unlisted: Mobile3 4/401, Id2 BizCode 9, period Y/201",
    ),
    VendorCode {
        code: "808",
        answer: VendorAnswer::Garbled(200),
        description: "HTTP 200 with a body that is not JSON (processed and billed)",
    },
    error("810", "MissingParameter", "MissingParameter"),
    error("811", "InvalidParameter", "InvalidParameter"),
    error(
        "812",
        "Forbidden.ExceptionRepeatedInvoke",
        "abnormal repeated invocations",
    ),
    error("813", "Throttling.Api", "API flow control"),
    error("814", "Throttling.User", "user flow control"),
    error("815", "InternalError", "internal error"),
    error("816", "ServiceUnavailable", "service unavailable"),
    error(
        "817",
        "Forbidden.ExceptionDataSource",
        "authoritative data source abnormal",
    ),
    error(
        "818",
        "Forbidden.AccountAccessDenied",
        "not activated or in arrears",
    ),
    error(
        "819",
        "Forbidden.RAMUserAccessDenied",
        "RAM user not authorised",
    ),
    error(
        "820",
        "SignatureDoesNotMatch",
        "signature mismatch (forced)",
    ),
    error(
        "821",
        "InvalidAccessKeyId.NotFound",
        "unknown AccessKeyId (forced)",
    ),
    error("822", "InvalidAccessKeyId.Inactive", "disabled AccessKeyId"),
    error(
        "823",
        "IncompleteSignature",
        "incomplete signature (forced)",
    ),
    error(
        "824",
        "InvalidTimeStamp.Expired",
        "expired x-acs-date (forced)",
    ),
    error(
        "825",
        "InvalidTimeStamp.Format",
        "malformed x-acs-date (forced)",
    ),
    error("826", "SignatureNonceUsed", "nonce used already (forced)"),
    error(
        "827",
        "Forbidden.RiskControl",
        "an error Code not in kycq's tables",
    ),
    error("828", "Throttling", "flow control (bare Throttling)"),
];

/// The vendor test code for a sequence code.
pub fn vendor_code(code: &str) -> Option<&'static VendorCode> {
    VENDOR_CODES.iter().find(|v| v.code == code)
}

fn outcome(
    api: Api,
    mobile3: (&'static str, &'static str),
    id2: &'static str,
    period: (&'static str, &'static str),
) -> Answer {
    Answer::Result(match api {
        Api::Mobile3 => Outcome::Mobile3 {
            biz: mobile3.0,
            sub: mobile3.1,
        },
        Api::Id2 => Outcome::Id2 { biz: id2 },
        Api::Id2Period => Outcome::Period {
            passed: period.0,
            sub: period.1,
        },
    })
}

/// What a vendor test code answers for `api`.
pub fn vendor_answer(api: Api, v: &VendorCode) -> Answer {
    match v.answer {
        VendorAnswer::Result {
            mobile3,
            id2,
            period,
        } => outcome(api, mobile3, id2, period),
        VendorAnswer::Error(code) => match code {
            "MissingParameter" => Answer::missing("ProductCode"),
            "InvalidParameter" => Answer::invalid("ProductCode"),
            _ => Answer::error(code),
        },
        VendorAnswer::Garbled(status) => Answer::Garbled(status),
    }
}

const MATCH: ((&str, &str), &str, (&str, &str)) = (("1", "101"), "1", ("Y", "200"));

/// A shared scenario rendered for `api`; `attempt` counts calls for this identity (1 = first).
/// Scenarios about the mobile alone (903, 906, 913) are a match for the APIs without one.
pub fn scenario_answer(api: Api, scenario: Scenario, attempt: u64) -> Answer {
    let first = attempt <= 1;
    let verdict = |(m3, id2, period): (
        (&'static str, &'static str),
        &'static str,
        (&'static str, &'static str),
    )| { outcome(api, m3, id2, period) };
    let id_param = if api == Api::Id2Period {
        "DocNo"
    } else {
        "IdentifyNum"
    };
    let name_param = if api == Api::Id2Period {
        "DocName"
    } else {
        "UserName"
    };
    match scenario {
        Scenario::Match | Scenario::Slow => verdict(MATCH),
        Scenario::NameMismatch => verdict((("2", "203"), "2", ("N", "223"))),
        Scenario::IdNumberMismatch => verdict((("2", "202"), "2", ("N", "223"))),
        Scenario::MobileOwnerMismatch => verdict((("2", "201"), "1", ("Y", "200"))),
        Scenario::MismatchUnspecified | Scenario::NameIdNumberMismatch => {
            verdict((("2", "204"), "2", ("N", "223")))
        }
        Scenario::InvalidMobile | Scenario::UnsupportedNumberRange => match api {
            Api::Mobile3 => Answer::invalid("Mobile"),
            _ => verdict(MATCH),
        },
        Scenario::InvalidIdNumber => Answer::invalid(id_param),
        Scenario::InvalidName => Answer::invalid(name_param),
        Scenario::NoRecord => verdict((("3", "301"), "3", ("N", "202"))),
        Scenario::Busy => Answer::error("Forbidden.ExceptionDataSource"),
        Scenario::BusyOnce if first => Answer::error("Forbidden.ExceptionDataSource"),
        Scenario::IdentityDailyLimit => Answer::error("Forbidden.ExceptionRepeatedInvoke"),
        Scenario::Throttled => Answer::error("Throttling.Api"),
        Scenario::ThrottledOnce if first => Answer::error("Throttling.Api"),
        Scenario::InternalError => Answer::error("InternalError"),
        Scenario::Http500 => Answer::Garbled(500),
        Scenario::Http500Once if first => Answer::Garbled(500),
        Scenario::UnknownCode => verdict((("2", "205"), "4", ("N", "224"))),
        Scenario::ProviderWide => Answer::error("Forbidden.AccountAccessDenied"),
        Scenario::BusyOnce | Scenario::ThrottledOnce | Scenario::Http500Once => verdict(MATCH),
        Scenario::Http502CutOff
        | Scenario::Http429Once
        | Scenario::Http400Backend
        | Scenario::Http504CutOff => scenario
            .http_fault(attempt)
            .map_or_else(|| verdict(MATCH), Answer::Http),
    }
}

/// Every sequence code the sandbox documents: the shared ones (`001` for a match) and 800–849.
pub fn documented_codes() -> Vec<&'static str> {
    let mut codes: Vec<&'static str> = Scenario::ALL
        .iter()
        .map(|s| match s {
            Scenario::Match => "001",
            other => other.code(),
        })
        .collect();
    codes.extend(VENDOR_CODES.iter().map(|v| v.code));
    codes
}

/// MD5 (lower-case hex) of a documented identity's ID number → (sequence code, variant), for
/// variants `0..MD5_VARIANTS` of every documented code. Built on first use.
pub fn md5_identities() -> &'static HashMap<String, (&'static str, u32)> {
    static MAP: OnceLock<HashMap<String, (&'static str, u32)>> = OnceLock::new();
    MAP.get_or_init(|| {
        let mut map = HashMap::new();
        for code in documented_codes() {
            for variant in 0..MD5_VARIANTS {
                let id = identity_with_code(code, variant).id_number;
                map.insert(
                    crate::providers::alibaba::request::md5_hex(&id),
                    (code, variant),
                );
            }
        }
        map
    })
}

/// Who the subject is for the sandbox: the plaintext ID number (resolved from its MD5 for the
/// documented identities), its sequence code, and the plaintext mobile when known.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Resolved {
    /// The ID number the ledger records (the hash as received when it is not a documented one).
    pub id_number: String,
    /// The sequence code, if any.
    pub code: Option<String>,
    /// The plaintext mobile, when sent in plaintext or recognised from its MD5.
    pub mobile: Option<String>,
}

/// Resolves a subject (md5 mode: through [`md5_identities`]).
pub fn resolve(subject: &Subject) -> Resolved {
    if !subject.md5 {
        return Resolved {
            code: sequence_code(&subject.id_number).map(str::to_owned),
            id_number: subject.id_number.clone(),
            mobile: subject.mobile.clone(),
        };
    }
    match md5_identities().get(&subject.id_number) {
        Some((code, variant)) => {
            let who = identity_with_code(code, *variant);
            let md5_mobile = crate::providers::alibaba::request::md5_hex(&who.mobile);
            Resolved {
                code: Some((*code).to_owned()),
                mobile: (subject.mobile.as_deref() == Some(md5_mobile.as_str()))
                    .then_some(who.mobile),
                id_number: who.id_number,
            }
        }
        None => Resolved {
            id_number: subject.id_number.clone(),
            code: None,
            mobile: None,
        },
    }
}

/// The answer for a resolved subject: a vendor code first, then the shared scenarios.
/// Returns the answer and whether it is the slow scenario.
pub fn answer_for(api: Api, code: Option<&str>, attempt: u64) -> (Answer, bool) {
    if let Some(v) = code.and_then(vendor_code) {
        return (vendor_answer(api, v), false);
    }
    let scenario = code
        .and_then(|c| Scenario::ALL.into_iter().find(|s| s.code() == c))
        .unwrap_or(Scenario::Match);
    (
        scenario_answer(api, scenario, attempt),
        scenario == Scenario::Slow,
    )
}

/// `IspName` of a mobile's carrier.
fn isp_name(mobile: Option<&str>) -> Option<&'static str> {
    Some(match carrier_for(mobile?)? {
        Carrier::Cmcc => "CMCC",
        Carrier::Cucc => "CUCC",
        Carrier::Ctcc => "CTCC",
        Carrier::Cbn => "CBN",
    })
}

/// Renders an answer in the vendor's wire format.
pub fn render(
    answer: &Answer,
    api: Option<Api>,
    mobile: Option<&str>,
    host: &str,
    request_id: &str,
) -> Response {
    let status =
        StatusCode::from_u16(answer.http_status(api)).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let body = match answer {
        Answer::Result(outcome) => {
            let mut result = Map::new();
            match outcome {
                Outcome::Mobile3 { biz, sub } => {
                    result.insert("BizCode".into(), json!(biz));
                    result.insert("SubCode".into(), json!(sub));
                    if matches!(*biz, "1" | "2") {
                        if let Some(isp) = isp_name(mobile) {
                            result.insert("IspName".into(), json!(isp));
                        }
                    }
                }
                Outcome::Id2 { biz } => {
                    result.insert("BizCode".into(), json!(biz));
                }
                Outcome::Period { passed, sub } => {
                    result.insert("Passed".into(), json!(passed));
                    result.insert("SubCode".into(), json!(sub));
                }
            }
            json!({"RequestId": request_id, "Code": "Success", "Message": "success", "Result": result})
        }
        Answer::Error { code, detail } => json!({
            "RequestId": request_id,
            "HostId": host,
            "Code": code,
            "Message": error_message(code, detail.as_deref()),
            "Recommend": format!("https://api.aliyun.com/troubleshoot?q={code}&product=Cloudauth-intl&requestId={request_id}"),
        }),
        Answer::Garbled(status) => {
            return (
                StatusCode::from_u16(*status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR),
                [(header::CONTENT_TYPE, "text/html; charset=utf-8")],
                format!("<html><head><title>{status}</title></head><body><h1>{status}</h1><p>tengine</p></body></html>"),
            )
                .into_response();
        }
        Answer::Http(fault) => return fault.render(),
    };
    (status, axum::Json(body)).into_response()
}

/// The documented identity (variant `variant`) of a vendor code or shared scenario code.
pub fn test_identity(code: &str, variant: u32) -> TestIdentity {
    match Scenario::ALL.into_iter().find(|s| s.code() == code) {
        Some(s) => identity(s, variant),
        None => identity_with_code(code, variant),
    }
}
