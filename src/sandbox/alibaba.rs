//! The sandbox's Alibaba cloudauth-intl (`Mobile3MetaVerifyIntl`, `Id2MetaVerifyIntl`, `Id2MetaPeriodVerifyIntl`): ACS3 signature checks and answers in the vendor's own wire format.
//!
//! Checks run in the vendor's order, each refusal in the vendor's error shape
//! `{"RequestId","HostId","Code","Message","Recommend"}` with a 4xx/5xx status:
//! `Authorization` header (`IncompleteSignature`) → `x-acs-date` well formed and within 15
//! minutes (`InvalidTimeStamp.Format` / `.Expired`) → AccessKeyId (`InvalidAccessKeyId.NotFound`)
//! → every `host`, `content-type` and `x-acs-*` header signed (`IncompleteSignature`) →
//! `x-acs-content-sha256` equals the body's SHA-256 and the signature recomputed from the method,
//! path, re-canonicalised raw query and the headers named in `SignedHeaders` matches
//! (`SignatureDoesNotMatch`) → the nonce is fresh (`SignatureNonceUsed`) → action and version →
//! parameters (query string, plus a form body; `MissingParameter` / `InvalidParameter`) →
//! injected fault → the answer. Success is HTTP 200
//! `{"RequestId","Code":"Success","Message":"success","Result":{...}}`.
//!
//! The answer comes from the ID number's sequence code (`id[14..17]`): first this module's own
//! codes 800–849 ([`VENDOR_CODES`]), which produce every code of the Alibaba tables, then the
//! shared scenarios (`scenarios.rs`) rendered by [`scenario_answer`]. With `ParamType=md5` the
//! sequence code is looked up from the MD5 of the ID number among the documented identities
//! (variants 0..=999 of every code); an unknown hash answers a match. The HTTP-layer scenarios
//! 934–937 are the same for every API and vendor: [`Answer::Http`] delegates them to
//! [`super::http_fault`].
//!
//! Billing (the ledger) follows the vendor tables: Mobile3/Id2 BizCode 1 and 2 are billed, 3 is
//! not; every Id2MetaPeriodVerifyIntl SubCode is billed (202 included); errors are not billed;
//! a garbled (non-JSON) 200 was processed and is billed.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::{Mutex, OnceLock};

use axum::http::{header, HeaderMap, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use chrono::{DateTime, NaiveDate, Utc};
use secrecy::ExposeSecret;
use serde_json::{json, Map};

use super::http_fault::HttpFault;
use super::ledger::CallRecord;
use super::scenarios::{
    carrier_for, identity, identity_with_code, sequence_code, Carrier, Scenario,
};
use super::{AppState, InjectedFault};
use crate::check::identity::id_check_char;
use crate::check::mask::{mask_mobile, mask_name};
use crate::providers::alibaba::{Api, DOC_TYPE_RESIDENT_ID, VERSION};
use crate::providers::signing::{acs3, constant_time_eq, sha256_hex};

/// Provider name in the ledger.
pub const PROVIDER: &str = "alibaba";
/// How far `x-acs-date` may be from the server's clock, either way.
pub const MAX_CLOCK_SKEW_SECS: i64 = 15 * 60;
/// How many used nonces are remembered (oldest forgotten first), besides the time window.
pub const NONCE_MEMORY: usize = 200_000;
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
    fn error(code: &'static str) -> Self {
        Answer::Error { code, detail: None }
    }

    fn invalid(param: &str) -> Self {
        Answer::Error {
            code: "InvalidParameter",
            detail: Some(param.to_owned()),
        }
    }

    fn missing(param: &str) -> Self {
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

/// Used nonces in arrival order (with when), and the same set for look-ups.
type Nonces = (VecDeque<(i64, String)>, HashSet<String>);

/// Nonces of correctly signed calls, remembered for twice the clock-skew window.
#[derive(Default)]
pub(crate) struct NonceCache(Mutex<Nonces>);

impl NonceCache {
    /// Records `nonce` at `now` (Unix seconds); false when it was used already.
    pub(crate) fn fresh(&self, nonce: &str, now: i64) -> bool {
        let mut guard = self.0.lock().unwrap_or_else(|p| p.into_inner());
        let (order, seen) = &mut *guard;
        while let Some((at, _)) = order.front() {
            if now - *at <= 2 * MAX_CLOCK_SKEW_SECS && order.len() < NONCE_MEMORY {
                break;
            }
            let (_, old) = order.pop_front().expect("front exists");
            seen.remove(&old);
        }
        if !seen.insert(nonce.to_owned()) {
            return false;
        }
        order.push_back((now, nonce.to_owned()));
        true
    }
}

fn header_values(headers: &HeaderMap, name: &str) -> Vec<String> {
    headers
        .get_all(name)
        .iter()
        .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
        .collect()
}

fn header_str<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get(name)
        .and_then(|v| std::str::from_utf8(v.as_bytes()).ok())
}

/// A call as received, for verification.
#[derive(Clone, Copy)]
pub struct Received<'a> {
    /// HTTP method.
    pub method: &'a str,
    /// Path (`/`).
    pub path: &'a str,
    /// The raw query string, as sent (without `?`).
    pub raw_query: &'a str,
    /// Every header.
    pub headers: &'a HeaderMap,
    /// The exact body bytes.
    pub body: &'a [u8],
}

/// Checks the ACS3 signature of a received call exactly as the vendor does (everything up to
/// and excluding the nonce's freshness). `now` is the server's clock. Returns the nonce.
pub fn authenticate(
    call: &Received<'_>,
    access_key_id: &str,
    access_key_secret: &str,
    now: DateTime<Utc>,
) -> Result<String, Answer> {
    let Received {
        method,
        path,
        raw_query,
        headers,
        body,
    } = *call;
    let auth = header_str(headers, "authorization")
        .and_then(acs3::parse_authorization)
        .ok_or_else(|| Answer::error("IncompleteSignature"))?;
    let date = header_str(headers, "x-acs-date")
        .and_then(acs3::parse_date)
        .ok_or_else(|| Answer::error("InvalidTimeStamp.Format"))?;
    if (now - date).num_seconds().abs() > MAX_CLOCK_SKEW_SECS {
        return Err(Answer::error("InvalidTimeStamp.Expired"));
    }
    if auth.access_key_id != access_key_id {
        return Err(Answer::error("InvalidAccessKeyId.NotFound"));
    }
    // Every header the vendor requires signed, and every host / content-type / x-acs-* sent.
    let required = [
        "host",
        "x-acs-action",
        "x-acs-version",
        "x-acs-date",
        "x-acs-signature-nonce",
        "x-acs-content-sha256",
    ];
    let sent = headers
        .keys()
        .map(|k| k.as_str())
        .filter(|k| acs3::is_signed_header(k));
    if required
        .into_iter()
        .chain(sent)
        .any(|h| !auth.signed_headers.iter().any(|s| s == h))
    {
        return Err(Answer::error("IncompleteSignature"));
    }
    let mismatch = |string_to_sign: &str| Answer::Error {
        code: "SignatureDoesNotMatch",
        detail: Some(string_to_sign.replace('\n', "#")),
    };
    let mut signed = Vec::with_capacity(auth.signed_headers.len());
    for name in &auth.signed_headers {
        let values = header_values(headers, name);
        if values.is_empty() {
            return Err(mismatch(""));
        }
        signed.extend(values.into_iter().map(|v| (name.clone(), v)));
    }
    let hashed = header_str(headers, "x-acs-content-sha256").unwrap_or_default();
    if !constant_time_eq(hashed.trim().as_bytes(), sha256_hex(body).as_bytes()) {
        return Err(mismatch(""));
    }
    let query = acs3::parse_query(raw_query).ok_or_else(|| mismatch(""))?;
    let (request, _) = acs3::canonical_request(
        method,
        path,
        &acs3::canonical_query(&query),
        &signed,
        hashed.trim(),
    );
    let to_sign = acs3::string_to_sign(&request);
    let expected = acs3::signature(access_key_secret, &to_sign);
    if !constant_time_eq(expected.as_bytes(), auth.signature.as_bytes()) {
        return Err(mismatch(&to_sign));
    }
    Ok(header_str(headers, "x-acs-signature-nonce")
        .unwrap_or_default()
        .to_owned())
}

/// The API and version of a call (`InvalidAction.NotFound` / `InvalidVersion`).
pub fn check_action(headers: &HeaderMap) -> Result<Api, Answer> {
    let action = header_str(headers, "x-acs-action").unwrap_or_default();
    let api = Api::from_action(action).ok_or_else(|| Answer::Error {
        code: "InvalidAction.NotFound",
        detail: Some(action.chars().take(64).collect()),
    })?;
    let version = header_str(headers, "x-acs-version").unwrap_or_default();
    if version != VERSION {
        return Err(Answer::Error {
            code: "InvalidVersion",
            detail: Some(version.chars().take(32).collect()),
        });
    }
    Ok(api)
}

/// The parameters of a call: the query string, then a form body when the content type says so.
/// None when a component is not UTF-8.
pub fn parameters(
    raw_query: &str,
    headers: &HeaderMap,
    body: &[u8],
) -> Option<Vec<(String, String)>> {
    let mut params = acs3::parse_query(raw_query)?;
    let is_form = header_str(headers, "content-type")
        .is_some_and(|c| c.trim_start().starts_with(acs3::FORM_CONTENT_TYPE));
    if is_form && !body.is_empty() {
        params.extend(acs3::parse_query(std::str::from_utf8(body).ok()?)?);
    }
    Some(params)
}

/// The subject of a call as received. Holds plaintext (or hashed) PII: `Debug` masks it.
#[derive(Clone, PartialEq, Eq)]
pub struct Subject {
    /// `IdentifyNum` / `DocNo` as received (an MD5 hex string in md5 mode).
    pub id_number: String,
    /// `UserName` / `DocName` as received.
    pub name: String,
    /// `Mobile` as received (Mobile3 only).
    pub mobile: Option<String>,
    /// `ParamType=md5`.
    pub md5: bool,
}

impl std::fmt::Debug for Subject {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Subject")
            .field("id_number", &"***")
            .field("name", &mask_name(&self.name))
            .field("mobile", &self.mobile.as_deref().map(mask_mobile))
            .field("md5", &self.md5)
            .finish()
    }
}

fn valid_id_number(s: &str) -> bool {
    s.len() == 18
        && s.is_char_boundary(17)
        && id_check_char(&s[..17])
            .is_some_and(|c| s[17..].eq_ignore_ascii_case(c.encode_utf8(&mut [0; 4])))
}

fn is_md5_hex(s: &str) -> bool {
    s.len() == 32
        && s.bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

fn valid_date(s: &str) -> bool {
    s.len() == 8 && NaiveDate::parse_from_str(s, "%Y%m%d").is_ok()
}

/// The vendor's own parameter checks for `api`; the subject when they pass.
pub fn validate(api: Api, params: &[(String, String)]) -> Result<Subject, Answer> {
    let get = |name: &str| {
        params
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    };
    let required = |name: &'static str| {
        get(name)
            .filter(|v| !v.trim().is_empty())
            .ok_or_else(|| Answer::missing(name))
    };
    if required("ProductCode")? != api.product_code() {
        return Err(Answer::invalid("ProductCode"));
    }
    match api {
        Api::Mobile3 | Api::Id2 => {
            let param_type = required("ParamType")?;
            let md5 = match (api, param_type) {
                (_, "normal") => false,
                (Api::Mobile3, "md5") => true,
                _ => return Err(Answer::invalid("ParamType")),
            };
            let id_number = required("IdentifyNum")?;
            let name = required("UserName")?;
            let mobile = if api == Api::Mobile3 {
                Some(required("Mobile")?)
            } else {
                None
            };
            if md5 {
                for (param, value) in [("IdentifyNum", id_number), ("UserName", name)]
                    .into_iter()
                    .chain(mobile.map(|m| ("Mobile", m)))
                {
                    if !is_md5_hex(value) {
                        return Err(Answer::invalid(param));
                    }
                }
            } else {
                if !valid_id_number(id_number) {
                    return Err(Answer::invalid("IdentifyNum"));
                }
                if mobile.is_some_and(|m| {
                    m.len() != 11 || !m.starts_with('1') || !m.bytes().all(|b| b.is_ascii_digit())
                }) {
                    return Err(Answer::invalid("Mobile"));
                }
            }
            Ok(Subject {
                id_number: id_number.to_owned(),
                name: name.to_owned(),
                mobile: mobile.map(str::to_owned),
                md5,
            })
        }
        Api::Id2Period => {
            let biz_id = required("MerchantBizId")?;
            if biz_id.len() > 32 || !biz_id.bytes().all(|b| b.is_ascii_alphanumeric()) {
                return Err(Answer::invalid("MerchantBizId"));
            }
            if required("DocType")? != DOC_TYPE_RESIDENT_ID {
                return Err(Answer::invalid("DocType"));
            }
            let name = required("DocName")?;
            let id_number = required("DocNo")?;
            if !valid_id_number(id_number) {
                return Err(Answer::invalid("DocNo"));
            }
            if !valid_date(required("ValidityStartDate")?) {
                return Err(Answer::invalid("ValidityStartDate"));
            }
            let end = required("ValidityEndDate")?;
            // The zh/tc pages say 长期, the English page "long-term": both are taken.
            if !(valid_date(end) || end == "长期" || end.eq_ignore_ascii_case("long-term")) {
                return Err(Answer::invalid("ValidityEndDate"));
            }
            if let Some(scene) = get("SceneCode").filter(|s| !s.is_empty()) {
                if scene.len() > 10
                    || !scene
                        .bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b == b'_')
                {
                    return Err(Answer::invalid("SceneCode"));
                }
            }
            Ok(Subject {
                id_number: id_number.to_owned(),
                name: name.to_owned(),
                mobile: None,
                md5: false,
            })
        }
    }
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

struct Decided {
    answer: Answer,
    api: Option<Api>,
    /// For the ledger: the plaintext (or unresolved hashed) ID number.
    id_number: Option<String>,
    /// For `IspName`.
    mobile: Option<String>,
    slow: bool,
}

/// Best effort, also for refused calls: the ID number the ledger records.
fn peek_id(raw_query: &str, headers: &HeaderMap, body: &[u8]) -> Option<String> {
    let params = parameters(raw_query, headers, body)?;
    let get = |n: &str| params.iter().find(|(k, _)| k == n).map(|(_, v)| v.clone());
    let id = get("IdentifyNum").or_else(|| get("DocNo"))?;
    Some(match md5_identities().get(&id) {
        Some((code, variant)) if is_md5_hex(&id) => identity_with_code(code, *variant).id_number,
        _ => id,
    })
}

fn decide(
    state: &AppState,
    uri: &Uri,
    headers: &HeaderMap,
    body: &[u8],
    now: DateTime<Utc>,
) -> Decided {
    let raw_query = uri.query().unwrap_or("");
    let refused = |answer: Answer, api: Option<Api>| Decided {
        answer,
        api,
        id_number: peek_id(raw_query, headers, body),
        mobile: None,
        slow: false,
    };
    let settings = &state.settings;
    let received = Received {
        method: "POST",
        path: uri.path(),
        raw_query,
        headers,
        body,
    };
    let nonce = match authenticate(
        &received,
        &settings.alibaba_access_key_id,
        settings.alibaba_access_key_secret.expose_secret(),
        now,
    ) {
        Ok(nonce) => nonce,
        Err(answer) => {
            return refused(
                answer,
                Api::from_action(header_str(headers, "x-acs-action").unwrap_or_default()),
            )
        }
    };
    if !state.alibaba_nonces.fresh(&nonce, now.timestamp()) {
        return refused(Answer::error("SignatureNonceUsed"), None);
    }
    let api = match check_action(headers) {
        Ok(api) => api,
        Err(answer) => return refused(answer, None),
    };
    let subject = match parameters(raw_query, headers, body)
        .ok_or_else(|| Answer::invalid("Body"))
        .and_then(|p| validate(api, &p))
    {
        Ok(s) => s,
        Err(answer) => return refused(answer, Some(api)),
    };
    let who = resolve(&subject);
    let decided = |answer, slow| Decided {
        answer,
        api: Some(api),
        id_number: Some(who.id_number.clone()),
        mobile: who.mobile.clone(),
        slow,
    };
    match state.draw_fault() {
        Some(InjectedFault::Busy) => return decided(Answer::error("ServiceUnavailable"), false),
        Some(InjectedFault::Http500) => return decided(Answer::Garbled(500), false),
        None => {}
    }
    let attempt = state.ledger.next_attempt(PROVIDER, &who.id_number);
    let (answer, slow) = answer_for(api, who.code.as_deref(), attempt);
    decided(answer, slow)
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

/// Serves one Alibaba call: decides, records it in the ledger, waits if slow, answers.
pub(crate) async fn handle(
    state: &AppState,
    uri: &Uri,
    headers: &HeaderMap,
    body: &[u8],
) -> Response {
    let at = Utc::now();
    let decided = decide(state, uri, headers, body, at);
    let action = header_str(headers, "x-acs-action").unwrap_or_default();
    let code = decided.answer.code();
    let status = decided.answer.http_status(decided.api);
    let entry = state.ledger.record(CallRecord {
        at,
        provider: PROVIDER,
        action,
        id_number: decided.id_number.as_deref(),
        http_status: status,
        code: &code,
        billed: decided.answer.billed(),
    });
    state.after_record(&entry, None, None, decided.slow).await;
    let host = header_str(headers, "host").unwrap_or("cloudauth-intl.cn-hongkong.aliyuncs.com");
    render(
        &decided.answer,
        decided.api,
        decided.mobile.as_deref(),
        host,
        &uuid::Uuid::new_v4().to_string().to_uppercase(),
    )
}

/// The documented identity (variant `variant`) of a vendor code or shared scenario code.
pub fn test_identity(code: &str, variant: u32) -> super::TestIdentity {
    match Scenario::ALL.into_iter().find(|s| s.code() == code) {
        Some(s) => identity(s, variant),
        None => identity_with_code(code, variant),
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use axum::http::HeaderValue;
    use serde_json::Value;

    use super::*;
    use crate::check::{decode, Billed, CheckRequest, Decoded, ReasonCode as R};
    use crate::configuration::Settings;
    use crate::providers::alibaba::AlibabaProvider;
    use crate::providers::{OutcomeClass, Provider, ProviderReply};
    use crate::sandbox::{SandboxSettings, TestIdentity};

    const KEY_ID: &str = "LTAIkycqsandbox";
    const SECRET: &str = "kycq-sandbox-alibaba-secret";

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

    impl Sandbox {
        fn provider_with(&self, key_id: &str, secret: &str, param_type: &str) -> AlibabaProvider {
            let env = [
                (
                    "KYCQ__PROVIDERS__ALIBABA__ENDPOINT",
                    format!("http://{}", self.running.addr),
                ),
                ("KYCQ__PROVIDERS__ALIBABA__ACCESS_KEY_ID", key_id.to_owned()),
                (
                    "KYCQ__PROVIDERS__ALIBABA__ACCESS_KEY_SECRET",
                    secret.to_owned(),
                ),
                (
                    "KYCQ__PROVIDERS__ALIBABA__PARAM_TYPE",
                    param_type.to_owned(),
                ),
            ]
            .into_iter()
            .map(|(k, v)| (k.to_owned(), v))
            .collect();
            let settings = Settings::load_with(Path::new("config"), None, Some(env)).unwrap();
            AlibabaProvider::from_settings(settings.providers.get("alibaba").unwrap()).unwrap()
        }

        fn provider(&self) -> AlibabaProvider {
            self.provider_with(KEY_ID, SECRET, "normal")
        }

        fn last(&self) -> crate::sandbox::LedgerEntry {
            self.running
                .ledger
                .entries()
                .last()
                .cloned()
                .expect("a call")
        }
    }

    fn check_request(api: Api, who: &TestIdentity, request_id: &str) -> CheckRequest {
        let check = match api {
            Api::Mobile3 => "mobile3",
            Api::Id2 => "id2",
            Api::Id2Period => "id2_period",
        };
        let json = serde_json::json!({
            "request_id": request_id, "check": check, "name": who.name,
            "id_number": who.id_number, "mobile": who.mobile,
            "validity_start": "20201001", "validity_end": "20301001",
            "scene_code": "kycq_test",
        });
        let today = NaiveDate::from_ymd_opt(2026, 11, 23).unwrap();
        match decode(json.to_string().as_bytes(), today).unwrap() {
            Decoded::Valid(r) => r,
            Decoded::Rejected(r) => panic!("rejected: {}", r.reason),
        }
    }

    /// What the client makes of an answer and what the ledger records, written out
    /// independently of the code under test: (provider_code, class, reason, billed,
    /// ledger code, ledger billed, HTTP status).
    type Expected = (
        Option<&'static str>,
        OutcomeClass,
        Option<R>,
        Billed,
        &'static str,
        bool,
        u16,
    );

    fn verdict(code: &'static str, reason: R, billed: bool) -> Expected {
        let b = if billed { Billed::Yes } else { Billed::No };
        (
            Some(code),
            OutcomeClass::Verdict,
            Some(reason),
            b,
            code,
            billed,
            200,
        )
    }

    fn unknown(code: &'static str, billed: Billed, ledger_billed: bool) -> Expected {
        (
            Some(code),
            OutcomeClass::UnknownCode,
            Some(R::UnknownProviderCode),
            billed,
            code,
            ledger_billed,
            200,
        )
    }

    fn err(code: &'static str, class: OutcomeClass, reason: Option<R>, status: u16) -> Expected {
        (Some(code), class, reason, Billed::No, code, false, status)
    }

    fn expected_vendor(api: Api, code: &str) -> Expected {
        use Api::*;
        use OutcomeClass::*;
        let invalid_status = if api == Id2Period { 400 } else { 401 };
        let repeated_status = if api == Id2Period { 401 } else { 400 };
        match (code, api) {
            ("800", Mobile3) => verdict("101", R::Match, true),
            ("800", Id2) => verdict("1", R::Match, true),
            ("800", Id2Period) => verdict("200", R::Match, true),
            ("801", Mobile3) => verdict("201", R::MobileOwnerMismatch, true),
            ("802", Mobile3) => verdict("202", R::IdNumberMismatch, true),
            ("803", Mobile3) => verdict("203", R::NameMismatch, true),
            ("804", Mobile3) => verdict("204", R::MismatchUnspecified, true),
            ("801" | "802" | "803" | "804", Id2) => verdict("2", R::NameIdNumberMismatch, true),
            ("801" | "802" | "803" | "804", Id2Period) => {
                verdict("223", R::IdentityOrValidityMismatch, true)
            }
            ("805", Mobile3) => verdict("301", R::NoRecord, false),
            ("805", Id2) => verdict("3", R::NoRecord, false),
            ("805", Id2Period) => verdict("202", R::NoRecord, true),
            ("806", Mobile3) => unknown("205", Billed::Yes, true),
            ("806", Id2) => unknown("4", Billed::Unknown, false),
            ("806", Id2Period) => unknown("224", Billed::Unknown, true),
            ("807", Mobile3) => unknown("401", Billed::Unknown, false),
            ("807", Id2) => unknown("9", Billed::Unknown, false),
            ("807", Id2Period) => unknown("201", Billed::Unknown, true),
            ("808", _) => (
                Some("HTTP200"),
                Unknown,
                None,
                Billed::Unknown,
                "HTTP200",
                true,
                200,
            ),
            ("810", _) => err(
                "MissingParameter",
                InvalidField,
                Some(R::InvalidRequest),
                400,
            ),
            ("811", _) => err(
                "InvalidParameter",
                InvalidField,
                Some(R::InvalidRequest),
                invalid_status,
            ),
            ("812", _) => err(
                "Forbidden.ExceptionRepeatedInvoke",
                IdentityLimit,
                Some(R::RepeatedInvocationBlocked),
                repeated_status,
            ),
            ("813", _) => err("Throttling.Api", Transient, None, 403),
            ("814", _) => err("Throttling.User", Transient, None, 400),
            ("815", _) => err("InternalError", Transient, None, 500),
            ("816", _) => err("ServiceUnavailable", Transient, None, 503),
            ("817", _) => err("Forbidden.ExceptionDataSource", Transient, None, 500),
            ("818", _) => err("Forbidden.AccountAccessDenied", ProviderWide, None, 403),
            ("819", _) => err("Forbidden.RAMUserAccessDenied", ProviderWide, None, 403),
            ("820", _) => err("SignatureDoesNotMatch", ProviderWide, None, 400),
            ("821", _) => err("InvalidAccessKeyId.NotFound", ProviderWide, None, 404),
            ("822", _) => err("InvalidAccessKeyId.Inactive", ProviderWide, None, 400),
            ("823", _) => err("IncompleteSignature", ProviderWide, None, 400),
            ("824", _) => err("InvalidTimeStamp.Expired", ProviderWide, None, 400),
            ("825", _) => err("InvalidTimeStamp.Format", ProviderWide, None, 400),
            ("826", _) => err("SignatureNonceUsed", ProviderWide, None, 400),
            ("827", _) => err(
                "Forbidden.RiskControl",
                UnknownCode,
                Some(R::UnknownProviderCode),
                403,
            ),
            ("828", _) => err("Throttling", Transient, None, 400),
            other => panic!("no expectation for {other:?}"),
        }
    }

    fn expected_scenario(api: Api, s: Scenario) -> Expected {
        use Api::*;
        use OutcomeClass::*;
        let invalid_status = if api == Id2Period { 400 } else { 401 };
        let m = match api {
            Mobile3 => verdict("101", R::Match, true),
            Id2 => verdict("1", R::Match, true),
            Id2Period => verdict("200", R::Match, true),
        };
        match (s, api) {
            (Scenario::Match | Scenario::Slow, _) => m,
            (Scenario::NameMismatch, Mobile3) => verdict("203", R::NameMismatch, true),
            (Scenario::IdNumberMismatch, Mobile3) => verdict("202", R::IdNumberMismatch, true),
            (Scenario::MobileOwnerMismatch, Mobile3) => {
                verdict("201", R::MobileOwnerMismatch, true)
            }
            (Scenario::MobileOwnerMismatch, _) => m,
            (Scenario::MismatchUnspecified | Scenario::NameIdNumberMismatch, Mobile3) => {
                verdict("204", R::MismatchUnspecified, true)
            }
            (
                Scenario::NameMismatch
                | Scenario::IdNumberMismatch
                | Scenario::MismatchUnspecified
                | Scenario::NameIdNumberMismatch,
                Id2,
            ) => verdict("2", R::NameIdNumberMismatch, true),
            (
                Scenario::NameMismatch
                | Scenario::IdNumberMismatch
                | Scenario::MismatchUnspecified
                | Scenario::NameIdNumberMismatch,
                Id2Period,
            ) => verdict("223", R::IdentityOrValidityMismatch, true),
            (Scenario::InvalidMobile | Scenario::UnsupportedNumberRange, Mobile3) => err(
                "InvalidParameter",
                InvalidField,
                Some(R::InvalidRequest),
                401,
            ),
            (Scenario::InvalidMobile | Scenario::UnsupportedNumberRange, _) => m,
            (Scenario::InvalidIdNumber | Scenario::InvalidName, _) => err(
                "InvalidParameter",
                InvalidField,
                Some(R::InvalidRequest),
                invalid_status,
            ),
            (Scenario::NoRecord, Mobile3) => verdict("301", R::NoRecord, false),
            (Scenario::NoRecord, Id2) => verdict("3", R::NoRecord, false),
            (Scenario::NoRecord, Id2Period) => verdict("202", R::NoRecord, true),
            (Scenario::Busy | Scenario::BusyOnce, _) => {
                err("Forbidden.ExceptionDataSource", Transient, None, 500)
            }
            (Scenario::IdentityDailyLimit, _) => err(
                "Forbidden.ExceptionRepeatedInvoke",
                IdentityLimit,
                Some(R::RepeatedInvocationBlocked),
                if api == Id2Period { 401 } else { 400 },
            ),
            (Scenario::Throttled | Scenario::ThrottledOnce, _) => {
                err("Throttling.Api", Transient, None, 403)
            }
            (Scenario::InternalError, _) => err("InternalError", Transient, None, 500),
            (Scenario::Http500 | Scenario::Http500Once, _) => (
                Some("HTTP500"),
                Transient,
                None,
                Billed::No,
                "HTTP500",
                false,
                500,
            ),
            (Scenario::UnknownCode, Mobile3) => unknown("205", Billed::Yes, true),
            (Scenario::UnknownCode, Id2) => unknown("4", Billed::Unknown, false),
            (Scenario::UnknownCode, Id2Period) => unknown("224", Billed::Unknown, true),
            (Scenario::ProviderWide, _) => {
                err("Forbidden.AccountAccessDenied", ProviderWide, None, 403)
            }
            (
                Scenario::Http502CutOff
                | Scenario::Http429Once
                | Scenario::Http400Backend
                | Scenario::Http504CutOff,
                _,
            ) => unreachable!("{s:?} is answered at the HTTP layer: see expected_http_fault"),
        }
    }

    /// The HTTP-layer scenarios, the same for every API (the shared answers of `http_fault`),
    /// written out independently: (HTTP status, ledger code, billed) of the first call. What
    /// kycq's client makes of them is its own HTTP table's business (not asserted here).
    fn expected_http_fault(s: Scenario) -> Option<(u16, &'static str, bool)> {
        match s {
            Scenario::Http502CutOff => Some((502, "HTTP502-cut", false)),
            Scenario::Http429Once => Some((429, "HTTP429", false)),
            Scenario::Http400Backend => Some((400, "HTTP400", false)),
            Scenario::Http504CutOff => Some((504, "HTTP504-cut", false)),
            _ => None,
        }
    }

    fn assert_reply(reply: &ProviderReply, want: &Expected, what: &str) {
        let c = &reply.classification;
        assert_eq!(
            (
                reply.provider_code.as_deref(),
                c.class,
                c.reason_code,
                c.billed
            ),
            (want.0, want.1, want.2, want.3),
            "{what}: {}",
            reply.detail
        );
        assert_eq!(reply.http_status, Some(want.6), "{what}");
        if want.0.is_some_and(|c| !c.starts_with("HTTP")) {
            let id = reply.provider_request_id.as_deref().expect("a RequestId");
            assert!(
                uuid::Uuid::parse_str(id).is_ok() && id == id.to_uppercase(),
                "{id}"
            );
        }
    }

    async fn call_and_check(
        sandbox: &Sandbox,
        provider: &AlibabaProvider,
        api: Api,
        who: &TestIdentity,
        want: &Expected,
        what: &str,
    ) {
        let reply = provider.call(&check_request(api, who, "req1")).await;
        assert_reply(&reply, want, what);
        let entry = sandbox.last();
        assert_eq!(
            (entry.provider.as_str(), entry.action.as_str()),
            ("alibaba", api.action()),
            "{what}"
        );
        assert_eq!(
            (entry.code.as_str(), entry.billed, entry.http_status),
            (want.4, want.5, want.6),
            "{what}"
        );
        assert_eq!(
            entry.subject_key,
            Some(sha256_hex(who.id_number.as_bytes())),
            "{what}"
        );
    }

    #[tokio::test]
    async fn every_vendor_code_answers_each_api_as_the_tables_say() {
        let sandbox = spawn().await;
        let provider = sandbox.provider();
        for (n, api) in Api::ALL.into_iter().enumerate() {
            for v in VENDOR_CODES {
                let who = identity_with_code(v.code, 10 + n as u32);
                let want = expected_vendor(api, v.code);
                call_and_check(
                    &sandbox,
                    &provider,
                    api,
                    &who,
                    &want,
                    &format!("{} {api:?}", v.code),
                )
                .await;
            }
        }
        let billed = sandbox.running.ledger.billed_count();
        let want: usize = Api::ALL
            .into_iter()
            .map(|api| {
                VENDOR_CODES
                    .iter()
                    .filter(|v| expected_vendor(api, v.code).5)
                    .count()
            })
            .sum();
        assert_eq!(billed, want);
    }

    #[tokio::test]
    async fn every_shared_scenario_renders_for_each_api() {
        let sandbox = spawn().await;
        let provider = sandbox.provider();
        for (n, api) in Api::ALL.into_iter().enumerate() {
            for s in Scenario::ALL
                .into_iter()
                .filter(|s| expected_http_fault(*s).is_none())
            {
                let who = identity(s, 20 + n as u32);
                call_and_check(
                    &sandbox,
                    &provider,
                    api,
                    &who,
                    &expected_scenario(api, s),
                    &format!("{s:?} {api:?}"),
                )
                .await;
                if s.is_once() {
                    // The next call for the same identity matches.
                    let reply = provider.call(&check_request(api, &who, "req1")).await;
                    assert_eq!(
                        reply.classification.reason_code,
                        Some(R::Match),
                        "{s:?} {api:?}"
                    );
                }
            }
        }
    }

    #[tokio::test]
    async fn mobile3_carries_the_carrier_and_md5_mode_resolves_documented_identities() {
        let sandbox = spawn().await;
        let plain = sandbox.provider();
        let reply = plain
            .call(&check_request(
                Api::Mobile3,
                &identity(Scenario::Match, 0),
                "r",
            ))
            .await;
        assert_eq!(reply.carrier, Some(crate::check::Carrier::Cmcc));
        let md5 = sandbox.provider_with(KEY_ID, SECRET, "md5");
        for code in [
            "001", "901", "902", "903", "909", "803", "806", "812", "813",
        ] {
            for variant in [0, MD5_VARIANTS - 1] {
                let who = test_identity(code, variant);
                let want = match Scenario::ALL.into_iter().find(|s| s.code() == code) {
                    Some(s) => expected_scenario(Api::Mobile3, s),
                    None if code == "001" => expected_scenario(Api::Mobile3, Scenario::Match),
                    None => expected_vendor(Api::Mobile3, code),
                };
                call_and_check(
                    &sandbox,
                    &md5,
                    Api::Mobile3,
                    &who,
                    &want,
                    &format!("md5 {code}/{variant}"),
                )
                .await;
            }
        }
        // The carrier is recognised from the mobile's MD5 too.
        let reply = md5
            .call(&check_request(
                Api::Mobile3,
                &identity(Scenario::Match, 5),
                "r",
            ))
            .await;
        assert_eq!(reply.carrier, Some(crate::check::Carrier::Cmcc));
        // Not a documented identity (or a variant past the map): a match, recorded by its hash.
        let stranger = identity_with_code("901", MD5_VARIANTS);
        let reply = md5.call(&check_request(Api::Mobile3, &stranger, "r")).await;
        assert_eq!(reply.classification.reason_code, Some(R::Match));
        assert_eq!(reply.carrier, None);
        let entry = sandbox.last();
        assert_eq!(
            entry.subject_key,
            Some(sha256_hex(
                crate::providers::alibaba::request::md5_hex(&stranger.id_number).as_bytes()
            ))
        );
        // Id2 and the period API take plaintext only, whatever param_type says.
        let reply = md5
            .call(&check_request(
                Api::Id2,
                &identity(Scenario::NameMismatch, 0),
                "r",
            ))
            .await;
        assert_eq!(reply.provider_code.as_deref(), Some("2"));
    }

    #[tokio::test]
    async fn wrong_secret_and_unknown_key_are_refused_unbilled() {
        let sandbox = spawn().await;
        let who = identity(Scenario::Match, 0);
        for (key_id, secret, code, status) in [
            (KEY_ID, "not-the-secret", "SignatureDoesNotMatch", 400),
            (
                "LTAIsomeoneelse",
                SECRET,
                "InvalidAccessKeyId.NotFound",
                404,
            ),
        ] {
            let provider = sandbox.provider_with(key_id, secret, "normal");
            for api in Api::ALL {
                let reply = provider.call(&check_request(api, &who, "r")).await;
                assert_eq!(reply.provider_code.as_deref(), Some(code));
                assert_eq!(reply.classification.class, OutcomeClass::ProviderWide);
                assert_eq!(reply.http_status, Some(status));
                let entry = sandbox.last();
                assert_eq!((entry.code.as_str(), entry.billed), (code, false));
                // Refused calls are still attributed to the identity (hashed).
                assert_eq!(
                    entry.subject_key,
                    Some(sha256_hex(who.id_number.as_bytes()))
                );
            }
        }
        assert_eq!(sandbox.running.ledger.billed_count(), 0);
    }

    /// A request signed with [`acs3::sign_rpc`], open to tampering before it is sent.
    struct Raw {
        query: String,
        headers: Vec<(String, String)>,
        body: Vec<u8>,
    }

    fn raw(
        sandbox: &Sandbox,
        api: Api,
        who: &TestIdentity,
        date: DateTime<Utc>,
        nonce: &str,
    ) -> Raw {
        let host = sandbox.running.addr.to_string();
        let built = crate::providers::alibaba::request::build_request(
            &check_request(api, who, "req1"),
            crate::providers::alibaba::ParamType::Normal,
        )
        .unwrap();
        let signed =
            crate::providers::alibaba::request::sign(&built, &host, KEY_ID, SECRET, date, nonce);
        Raw {
            query: signed.query,
            headers: signed
                .headers
                .into_iter()
                .map(|(n, v)| (n.to_owned(), v))
                .collect(),
            body: signed.body,
        }
    }

    impl Sandbox {
        /// The response as it arrives (the body not read yet).
        async fn send_response(&self, raw: Raw) -> reqwest::Response {
            let mut url = format!("http://{}/", self.running.addr);
            if !raw.query.is_empty() {
                url = format!("{url}?{}", raw.query);
            }
            let mut req = self.client.post(url);
            for (n, v) in raw.headers {
                req = req.header(n, v);
            }
            req.body(raw.body).send().await.unwrap()
        }

        async fn send(&self, raw: Raw) -> (u16, Value) {
            let resp = self.send_response(raw).await;
            let status = resp.status().as_u16();
            (status, resp.json().await.unwrap_or(Value::Null))
        }
    }

    #[tokio::test]
    async fn http_faults_render_for_each_api_after_the_signature_check() {
        let sandbox = spawn().await;
        let mut calls = 0;
        for (n, api) in Api::ALL.into_iter().enumerate() {
            for s in Scenario::ALL {
                let Some((status, code, billed)) = expected_http_fault(s) else {
                    continue;
                };
                let what = format!("{s:?} {api:?}");
                let who = identity(s, 60 + n as u32);
                let fault = crate::sandbox::http_fault::testing::expected_fault(s, 1).unwrap();
                let r = raw(
                    &sandbox,
                    api,
                    &who,
                    Utc::now(),
                    &format!("f{n}{}", s.code()),
                );
                let response = sandbox.send_response(r).await;
                assert_eq!(response.status().as_u16(), status, "{what}");
                crate::sandbox::http_fault::testing::assert_answer(response, fault).await;
                calls += 1;
                let entry = sandbox.last();
                assert_eq!(
                    (entry.provider.as_str(), entry.action.as_str()),
                    ("alibaba", api.action()),
                    "{what}"
                );
                assert_eq!(
                    (entry.http_status, entry.code.as_str(), entry.billed),
                    (status, code, billed),
                    "{what}"
                );
                assert_eq!(
                    entry.subject_key,
                    Some(sha256_hex(who.id_number.as_bytes())),
                    "{what}"
                );
                // The second call for the identity: 935 matches, the others fault again.
                let r = raw(
                    &sandbox,
                    api,
                    &who,
                    Utc::now(),
                    &format!("g{n}{}", s.code()),
                );
                let (again, v) = sandbox.send(r).await;
                calls += 1;
                if s == Scenario::Http429Once {
                    assert_eq!(
                        (again, v["Code"].as_str()),
                        (200, Some("Success")),
                        "{what}"
                    );
                } else {
                    assert_eq!(again, status, "{what}");
                }
                // A bad signature is refused in Alibaba's format first.
                let mut r = raw(
                    &sandbox,
                    api,
                    &who,
                    Utc::now(),
                    &format!("h{n}{}", s.code()),
                );
                set(
                    &mut r,
                    "authorization",
                    "ACS3-HMAC-SHA256 Credential=LTAIkycqsandbox,SignedHeaders=host,Signature=00",
                );
                let (refused, v) = sandbox.send(r).await;
                calls += 1;
                assert_eq!(
                    (refused, v["Code"].as_str()),
                    (400, Some("IncompleteSignature")),
                    "{what}"
                );
            }
        }
        assert_eq!(sandbox.running.ledger.len(), calls);
        // Only the matches of 935's second calls are billed.
        assert_eq!(sandbox.running.ledger.billed_count(), Api::ALL.len());
    }

    fn set(raw: &mut Raw, name: &str, value: &str) {
        raw.headers.retain(|(n, _)| n != name);
        raw.headers.push((name.to_owned(), value.to_owned()));
    }

    #[tokio::test]
    async fn stale_dates_tampering_replays_and_unsigned_headers_are_refused() {
        let sandbox = spawn().await;
        let who = identity(Scenario::Match, 3);
        let now = Utc::now();
        let code = |v: &Value| v["Code"].as_str().unwrap_or_default().to_owned();

        // Within 15 minutes either way: accepted.
        for (i, skew) in [-14i64, 14].into_iter().enumerate() {
            let r = raw(
                &sandbox,
                Api::Mobile3,
                &who,
                now + chrono::Duration::minutes(skew),
                &format!("ok{i}"),
            );
            let (status, v) = sandbox.send(r).await;
            assert_eq!((status, code(&v)), (200, "Success".into()), "{v}");
        }
        for skew in [-16i64, 16] {
            let r = raw(
                &sandbox,
                Api::Id2,
                &who,
                now + chrono::Duration::minutes(skew),
                &format!("stale{skew}"),
            );
            let (status, v) = sandbox.send(r).await;
            assert_eq!(
                (status, code(&v)),
                (400, "InvalidTimeStamp.Expired".into()),
                "{v}"
            );
            assert!(
                v["HostId"].is_string() && v["Recommend"].is_string() && v["RequestId"].is_string()
            );
            assert!(v["Message"].as_str().is_some_and(|m| !m.is_empty()));
        }
        let mut r = raw(&sandbox, Api::Id2, &who, now, "badformat");
        set(&mut r, "x-acs-date", "2026-11-23 02:18:16");
        assert_eq!(code(&sandbox.send(r).await.1), "InvalidTimeStamp.Format");

        // A tampered query, a tampered body, a tampered signed header.
        let mut r = raw(&sandbox, Api::Mobile3, &who, now, "tq");
        r.query = r.query.replace("ParamType=normal", "ParamType=md5");
        let (status, v) = sandbox.send(r).await;
        assert_eq!((status, code(&v)), (400, "SignatureDoesNotMatch".into()));
        assert!(
            v["Message"].as_str().unwrap().contains("ACS3-HMAC-SHA256#"),
            "{v}"
        );
        let mut r = raw(&sandbox, Api::Id2Period, &who, now, "tb");
        r.body = String::from_utf8(r.body)
            .unwrap()
            .replace("20301001", "20311001")
            .into_bytes();
        assert_eq!(code(&sandbox.send(r).await.1), "SignatureDoesNotMatch");
        let mut r = raw(&sandbox, Api::Id2Period, &who, now, "tb2");
        let tampered = String::from_utf8(r.body.clone())
            .unwrap()
            .replace("20301001", "20311001");
        set(
            &mut r,
            "x-acs-content-sha256",
            &sha256_hex(tampered.as_bytes()),
        );
        r.body = tampered.into_bytes();
        assert_eq!(code(&sandbox.send(r).await.1), "SignatureDoesNotMatch");
        let mut r = raw(&sandbox, Api::Id2, &who, now, "th");
        set(&mut r, "x-acs-action", "Mobile3MetaVerifyIntl");
        assert_eq!(code(&sandbox.send(r).await.1), "SignatureDoesNotMatch");

        // An x-acs-* header that was not signed; no Authorization at all.
        let mut r = raw(&sandbox, Api::Id2, &who, now, "unsigned");
        r.headers.push(("x-acs-extra".into(), "1".into()));
        assert_eq!(code(&sandbox.send(r).await.1), "IncompleteSignature");
        let mut r = raw(&sandbox, Api::Id2, &who, now, "noauth");
        r.headers.retain(|(n, _)| n != "authorization");
        assert_eq!(code(&sandbox.send(r).await.1), "IncompleteSignature");

        // The same nonce twice.
        let first = raw(&sandbox, Api::Id2, &who, now, "replayed");
        let again = Raw {
            query: first.query.clone(),
            headers: first.headers.clone(),
            body: first.body.clone(),
        };
        assert_eq!(code(&sandbox.send(first).await.1), "Success");
        assert_eq!(code(&sandbox.send(again).await.1), "SignatureNonceUsed");

        // Spaces sent as `+` (what the Python SDK's urlencode writes) verify against `%20`.
        let spaced = TestIdentity {
            name: "Zhang San".into(),
            ..identity(Scenario::Match, 4)
        };
        let mut r = raw(&sandbox, Api::Id2, &spaced, now, "plus");
        assert!(r.query.contains("Zhang%20San"));
        r.query = r.query.replace("%20", "+");
        assert_eq!(code(&sandbox.send(r).await.1), "Success");

        // Refusals are never billed: only the four accepted calls are.
        assert_eq!(sandbox.running.ledger.billed_count(), 4);
    }

    #[tokio::test]
    async fn action_version_and_parameters_are_checked_like_the_vendor() {
        let sandbox = spawn().await;
        let who = identity(Scenario::Match, 6);
        let now = Utc::now();
        let host = sandbox.running.addr.to_string();
        let send = |action: &'static str,
                    version: &'static str,
                    query: Vec<(&'static str, String)>,
                    form: Option<Vec<(&'static str, String)>>,
                    nonce: String| {
            let signed = acs3::sign_rpc(
                &acs3::RpcCall {
                    host: &host,
                    action,
                    version,
                    query: &query,
                    form: form.as_deref(),
                },
                KEY_ID,
                SECRET,
                now,
                &nonce,
            );
            let raw = Raw {
                query: signed.query,
                headers: signed
                    .headers
                    .into_iter()
                    .map(|(n, v)| (n.to_owned(), v))
                    .collect(),
                body: signed.body,
            };
            sandbox.send(raw)
        };
        let p = |k: &'static str, v: &str| (k, v.to_owned());
        let m3 = |param_type: &str, id: &str| {
            vec![
                p("ProductCode", "MOBILE_3META"),
                p("ParamType", param_type),
                p("IdentifyNum", id),
                p("UserName", &who.name),
                p("Mobile", &who.mobile),
            ]
        };
        type Params = Vec<(&'static str, String)>;
        type Case = (
            &'static str,
            &'static str,
            Params,
            Option<Params>,
            u16,
            &'static str,
        );
        let cases: Vec<Case> = vec![
            (
                "DescribeRegions",
                VERSION,
                m3("normal", &who.id_number),
                None,
                404,
                "InvalidAction.NotFound",
            ),
            (
                "Mobile3MetaVerifyIntl",
                "2019-03-07",
                m3("normal", &who.id_number),
                None,
                400,
                "InvalidVersion",
            ),
            (
                "Mobile3MetaVerifyIntl",
                VERSION,
                m3("sm2", &who.id_number),
                None,
                401,
                "InvalidParameter",
            ),
            (
                "Mobile3MetaVerifyIntl",
                VERSION,
                m3("md5", &who.id_number),
                None,
                401,
                "InvalidParameter",
            ),
            (
                "Mobile3MetaVerifyIntl",
                VERSION,
                m3("normal", "110105197001010012"),
                None,
                401,
                "InvalidParameter",
            ),
            (
                "Mobile3MetaVerifyIntl",
                VERSION,
                m3("normal", &who.id_number)[..4].to_vec(),
                None,
                400,
                "MissingParameter",
            ),
            (
                "Id2MetaVerifyIntl",
                VERSION,
                vec![
                    p("ProductCode", "ID_2META"),
                    p("ParamType", "md5"),
                    p("IdentifyNum", &"a".repeat(32)),
                    p("UserName", &"b".repeat(32)),
                ],
                None,
                401,
                "InvalidParameter",
            ),
            (
                "Id2MetaPeriodVerifyIntl",
                VERSION,
                Vec::new(),
                Some(vec![
                    p("ProductCode", "eKYC_Date_MIN"),
                    p("DocType", "00000001"),
                    p("DocName", &who.name),
                    p("DocNo", &who.id_number),
                    p("ValidityStartDate", "20201001"),
                    p("ValidityEndDate", "20301001"),
                ]),
                400,
                "MissingParameter",
            ),
            (
                "Id2MetaPeriodVerifyIntl",
                VERSION,
                Vec::new(),
                Some(vec![
                    p("ProductCode", "eKYC_Date_MIN"),
                    p("MerchantBizId", "b1"),
                    p("DocType", "00000002"),
                    p("DocName", &who.name),
                    p("DocNo", &who.id_number),
                    p("ValidityStartDate", "20201001"),
                    p("ValidityEndDate", "20301001"),
                ]),
                400,
                "InvalidParameter",
            ),
            (
                "Id2MetaPeriodVerifyIntl",
                VERSION,
                Vec::new(),
                Some(vec![
                    p("ProductCode", "eKYC_Date_MIN"),
                    p("MerchantBizId", "b1"),
                    p("SceneCode", "too-long-scene"),
                    p("DocType", "00000001"),
                    p("DocName", &who.name),
                    p("DocNo", &who.id_number),
                    p("ValidityStartDate", "20201001"),
                    p("ValidityEndDate", "长期"),
                ]),
                400,
                "InvalidParameter",
            ),
            // Parameters of the period API in the query string are taken too, and 长期 / long-term.
            (
                "Id2MetaPeriodVerifyIntl",
                VERSION,
                vec![
                    p("ProductCode", "eKYC_Date_MIN"),
                    p("MerchantBizId", "b1"),
                    p("DocType", "00000001"),
                    p("DocName", &who.name),
                    p("DocNo", &who.id_number),
                    p("ValidityStartDate", "20201001"),
                    p("ValidityEndDate", "长期"),
                ],
                None,
                200,
                "Success",
            ),
            (
                "Id2MetaPeriodVerifyIntl",
                VERSION,
                Vec::new(),
                Some(vec![
                    p("ProductCode", "eKYC_Date_MIN"),
                    p("MerchantBizId", "b2"),
                    p("DocType", "00000001"),
                    p("DocName", &who.name),
                    p("DocNo", &who.id_number),
                    p("ValidityStartDate", "20201001"),
                    p("ValidityEndDate", "long-term"),
                ]),
                200,
                "Success",
            ),
        ];
        for (i, (action, version, query, form, status, want)) in cases.into_iter().enumerate() {
            let (got_status, v) = send(action, version, query, form, format!("n{i}")).await;
            assert_eq!(
                (got_status, v["Code"].as_str().unwrap_or_default()),
                (status, want),
                "case {i}: {v}"
            );
            assert!(
                !v.to_string().contains(&who.id_number),
                "case {i} echoes the ID number"
            );
        }
    }

    #[tokio::test]
    async fn injected_faults_are_transient_and_unbilled() {
        let sandbox = spawn_with(SandboxSettings {
            fault_rate: 1.0,
            seed: 5,
            ..SandboxSettings::default()
        })
        .await;
        let provider = sandbox.provider();
        let who = identity(Scenario::Match, 0);
        for _ in 0..8 {
            let reply = provider.call(&check_request(Api::Mobile3, &who, "r")).await;
            assert_eq!(
                reply.classification.class,
                OutcomeClass::Transient,
                "{}",
                reply.detail
            );
            assert!(["ServiceUnavailable", "HTTP500"]
                .contains(&reply.provider_code.as_deref().unwrap()));
        }
        assert_eq!(sandbox.running.ledger.billed_count(), 0);
        // Authentication still comes first.
        let wrong = sandbox.provider_with(KEY_ID, "wrong", "normal");
        let reply = wrong.call(&check_request(Api::Mobile3, &who, "r")).await;
        assert_eq!(
            reply.provider_code.as_deref(),
            Some("SignatureDoesNotMatch")
        );
    }

    #[tokio::test]
    async fn the_ledger_and_answers_never_hold_plaintext_pii() {
        let sandbox = spawn().await;
        let provider = sandbox.provider();
        let wrong = sandbox.provider_with(KEY_ID, "wrong", "normal");
        let mut people = Vec::new();
        for (i, code) in documented_codes().into_iter().enumerate() {
            let who = test_identity(code, 40 + i as u32);
            for api in Api::ALL {
                let reply = provider.call(&check_request(api, &who, "r")).await;
                assert!(
                    !reply.detail.contains(&who.id_number) && !reply.detail.contains(&who.name)
                );
                wrong.call(&check_request(api, &who, "r")).await;
            }
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
        for text in [&over_http, &in_memory] {
            for who in &people {
                assert!(!text.contains(&who.id_number), "ID number leaked");
                assert!(!text.contains(&who.mobile), "mobile leaked");
                assert!(!text.contains(&who.name), "name leaked");
            }
        }
    }

    #[test]
    fn accepts_what_the_official_python_sdk_sends() {
        // The Id2MetaVerifyIntl request of SDK_CAPTURES.md, as the official Python SDK sent it.
        let mut headers = HeaderMap::new();
        for (name, value) in [
            ("accept-encoding", "identity"),
            ("host", "127.0.0.1:18080"),
            ("x-acs-version", "2022-08-09"),
            ("x-acs-action", "Id2MetaVerifyIntl"),
            ("user-agent", "AlibabaCloud (Linux; x86_64) Python/3.11.7 Core/0.4.3 TeaDSL/2"),
            ("x-acs-date", "2026-11-23T02:18:16Z"),
            ("x-acs-signature-nonce", "78a744132c6ff7aa82583b03795154ec"),
            ("accept", "application/json"),
            ("x-acs-content-sha256", acs3::EMPTY_BODY_SHA256),
            ("x-acs-credentials-provider", "static_ak"),
            (
                "authorization",
                "ACS3-HMAC-SHA256 Credential=testid,SignedHeaders=accept;host;user-agent;x-acs-action;x-acs-content-sha256;x-acs-credentials-provider;x-acs-date;x-acs-signature-nonce;x-acs-version,Signature=c11eacece803ac250c4c3776517a3b3fe4b153c84fb0ba2b191e724b54ee6bb4",
            ),
        ] {
            headers.insert(name, HeaderValue::from_static(value));
        }
        let query = "IdentifyNum=11010519491231002X&ParamType=normal&ProductCode=ID_2META&UserName=%E5%BC%A0%E4%B8%89";
        let call = Received {
            method: "POST",
            path: "/",
            raw_query: query,
            headers: &headers,
            body: b"",
        };
        let at = acs3::parse_date("2026-11-23T02:18:16Z").unwrap();
        let auth = |call: &Received<'_>, key: &str, secret: &str, now| {
            authenticate(call, key, secret, now).map_err(|a| a.code())
        };
        assert_eq!(
            auth(
                &call,
                "testid",
                "testsecret",
                at + chrono::Duration::minutes(15)
            ),
            Ok("78a744132c6ff7aa82583b03795154ec".into())
        );
        assert_eq!(
            auth(
                &call,
                "testid",
                "testsecret",
                at + chrono::Duration::seconds(901)
            ),
            Err("InvalidTimeStamp.Expired".into())
        );
        assert_eq!(
            auth(&call, "other", "testsecret", at),
            Err("InvalidAccessKeyId.NotFound".into())
        );
        assert_eq!(
            auth(&call, "testid", "testsecreT", at),
            Err("SignatureDoesNotMatch".into())
        );
        let tampered = Received { raw_query: "IdentifyNum=11010519491231002X&ParamType=normal&ProductCode=ID_2META&UserName=%E6%9D%8E%E5%9B%9B", ..call };
        assert_eq!(
            auth(&tampered, "testid", "testsecret", at),
            Err("SignatureDoesNotMatch".into())
        );
        let with_body = Received {
            body: b"x=1",
            ..call
        };
        assert_eq!(
            auth(&with_body, "testid", "testsecret", at),
            Err("SignatureDoesNotMatch".into())
        );
        assert_eq!(check_action(&headers), Ok(Api::Id2));
        let params = parameters(query, &headers, b"").unwrap();
        let subject = validate(Api::Id2, &params).unwrap();
        assert_eq!(subject.name, "张三");
        assert!(!format!("{subject:?}").contains("11010519491231002X"));
        assert_eq!(resolve(&subject).code.as_deref(), Some("002"));
        assert_eq!(
            answer_for(Api::Id2, Some("002"), 1).0,
            Answer::Result(Outcome::Id2 { biz: "1" })
        );
    }

    #[test]
    fn vendor_codes_are_in_range_distinct_and_cover_every_table_row() {
        use crate::providers::alibaba::codes;
        let mut seen = HashSet::new();
        for v in VENDOR_CODES {
            let n: u16 = v.code.parse().unwrap();
            assert!((800..=849).contains(&n), "{}", v.code);
            assert!(seen.insert(v.code), "duplicate {}", v.code);
            assert!(!Scenario::ALL.iter().any(|s| s.code() == v.code));
        }
        let answers: Vec<Answer> = Api::ALL
            .into_iter()
            .flat_map(|api| VENDOR_CODES.iter().map(move |v| vendor_answer(api, v)))
            .collect();
        let produced = |f: &dyn Fn(&Answer) -> bool| answers.iter().any(f);
        for row in codes::MOBILE3_SUB_CODES {
            assert!(
                produced(
                    &|a| matches!(a, Answer::Result(Outcome::Mobile3 { biz, sub }) if Some(*biz) == row.pairs_with && *sub == row.code)
                ),
                "{}",
                row.code
            );
        }
        for row in codes::MOBILE3_BIZ_CODES {
            assert!(
                produced(
                    &|a| matches!(a, Answer::Result(Outcome::Mobile3 { biz, .. }) if *biz == row.code)
                ),
                "{}",
                row.code
            );
        }
        for row in codes::ID2_BIZ_CODES {
            assert!(
                produced(
                    &|a| matches!(a, Answer::Result(Outcome::Id2 { biz }) if *biz == row.code)
                ),
                "{}",
                row.code
            );
        }
        for row in codes::PERIOD_SUB_CODES {
            assert!(
                produced(
                    &|a| matches!(a, Answer::Result(Outcome::Period { passed, sub }) if Some(*passed) == row.pairs_with && *sub == row.code)
                ),
                "{}",
                row.code
            );
        }
        for row in codes::ERROR_CODES {
            assert!(
                produced(
                    &|a| matches!(a, Answer::Error { code, .. } if codes::error_row(code).map(|r| r.code) == Some(row.code))
                ),
                "{}",
                row.code
            );
        }
        assert!(produced(
            &|a| matches!(a, Answer::Error { code, .. } if codes::error_row(code).is_none())
        ));
        assert!(produced(
            &|a| matches!(a, Answer::Result(Outcome::Mobile3 { sub, .. }) if !codes::MOBILE3_SUB_CODES.iter().any(|r| r.code == *sub))
        ));
        assert_eq!(
            md5_identities().len(),
            documented_codes().len() * MD5_VARIANTS as usize
        );
    }

    #[test]
    fn the_readme_identities() {
        for (code, id) in [
            ("800", "110105197001018005"),
            ("803", "11010519700101803X"),
            ("811", "11010519700101811X"),
            ("828", "110105197001018283"),
        ] {
            assert_eq!(test_identity(code, 0).id_number, id);
        }
        assert_eq!(test_identity("901", 0).id_number, "110105197001019016");
    }

    #[test]
    fn nonces_are_remembered_for_the_window_only() {
        let cache = NonceCache::default();
        assert!(cache.fresh("a", 0));
        assert!(!cache.fresh("a", 10));
        assert!(cache.fresh("b", 10));
        assert!(cache.fresh("a", 2 * MAX_CLOCK_SKEW_SECS + 1));
    }
}
