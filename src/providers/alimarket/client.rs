//! The Marketplace provider: sends `POST <endpoint>/mobile3/check` with `Authorization: APPCODE <code>` and classifies the gateway's or the seller's answer with the code tables.

use async_trait::async_trait;
use reqwest::header::{HeaderMap, ACCEPT, AUTHORIZATION, CONTENT_TYPE};
use secrecy::{ExposeSecret, SecretString};

use super::settings::AlimarketSettings;
use super::{codes, wire, PATH, PROVIDER, VENDOR};
use crate::check::{Carrier, CheckKind, CheckRequest, ReasonCode};
use crate::configuration::{invalid, ConfigError, ProviderSettings};
use crate::providers::http::{self, header_text, transport_failure};
use crate::providers::outcome::{self, Origin};
use crate::providers::{Classification, Provider, ProviderReply};

/// The body's media type (**[inferred]** charset: the page lists only "POST JSON").
pub const JSON_UTF8: &str = "application/json; charset=UTF-8";
/// The gateway's error message header.
pub const ERROR_MESSAGE_HEADER: &str = "x-ca-error-message";
/// The VPC gateway's error code header (empty: the status is the backend's).
pub const ERROR_CODE_HEADER: &str = "x-ca-error-code";
/// The gateway's request id, for support tickets.
pub const REQUEST_ID_HEADER: &str = "x-ca-request-id";

/// Vendor text kept in a reply (`detail`) is cut to this many characters.
const MAX_DETAIL_CHARS: usize = 120;

/// Alibaba Cloud Marketplace "运营商3要素V2" client.
pub struct AlimarketProvider {
    http: reqwest::Client,
    url: url::Url,
    app_code: SecretString,
}

impl std::fmt::Debug for AlimarketProvider {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AlimarketProvider")
            .field("url", &self.url.as_str())
            .field("app_code", &"[REDACTED]")
            .finish_non_exhaustive()
    }
}

impl AlimarketProvider {
    /// Build from `[providers.alimarket]` and the Marketplace's key of it.
    pub fn new(section: &ProviderSettings, s: AlimarketSettings) -> Result<Self, ConfigError> {
        let url = check_url(&section.endpoint)?;
        let app_code = s
            .app_code
            .filter(|c| !c.expose_secret().trim().is_empty())
            .ok_or_else(|| invalid(&format!("{}.app_code", VENDOR.section()), "is required"))?;
        Ok(AlimarketProvider {
            http: http::client(PROVIDER, section)?,
            url,
            app_code,
        })
    }

    /// Build from `[providers.alimarket]` alone (the AppCode must be set).
    pub fn from_settings(section: &ProviderSettings) -> Result<Self, ConfigError> {
        Self::new(section, AlimarketSettings::from_section(section)?)
    }

    /// The URL calls go to: the endpoint with `/mobile3/check` appended.
    pub fn url(&self) -> &url::Url {
        &self.url
    }

    /// The HTTP request for one check (no network). Errors only when the subject has no
    /// mobile or the request cannot be built; both are answered as classified replies.
    pub fn build_request(&self, request: &CheckRequest) -> Result<reqwest::Request, ProviderReply> {
        let s = &request.subject;
        let Some(mobile) = s.mobile.as_ref() else {
            return Err(ProviderReply::transport(
                Classification::invalid_field(ReasonCode::InvalidMobile),
                None,
                "mobile is required for mobile3/check",
            ));
        };
        let body = serde_json::to_vec(&wire::Mobile3CheckRequest {
            name: s.name.expose(),
            mobile: mobile.expose(),
            id_card: s.id_number.expose(),
        })
        .expect("request body serialises");
        self.http
            .post(self.url.clone())
            // The one place the AppCode leaves its SecretString.
            .header(
                AUTHORIZATION,
                format!("APPCODE {}", self.app_code.expose_secret().trim()),
            )
            .header(CONTENT_TYPE, JSON_UTF8)
            .header(ACCEPT, "application/json")
            .body(body)
            .build()
            .map_err(transport_failure)
    }

    /// Classify a non-2xx answer from its status and gateway headers (the body is not needed):
    /// the gateway's tables first, then the shared status table — with the backend as the
    /// origin when the gateway sent no error header (the seller's backend answered that status
    /// about this request).
    pub fn classify_gateway(status: u16, headers: &HeaderMap) -> ProviderReply {
        let message = header_text(headers, ERROR_MESSAGE_HEADER);
        let code = header_text(headers, ERROR_CODE_HEADER);
        let from_gateway = message.is_some() || code.is_some();
        let classification = codes::classify_gateway(message.as_deref(), code.as_deref())
            .unwrap_or_else(|| {
                let origin = if from_gateway {
                    Origin::Gateway
                } else {
                    Origin::Backend
                };
                outcome::status_row(status, origin).classification
            });
        let origin = if from_gateway { "gateway" } else { "backend" };
        let detail = match (&message, &code) {
            (Some(m), Some(c)) => format!("{origin} HTTP {status} {c}: {m}"),
            (Some(m), None) => format!("{origin} HTTP {status}: {m}"),
            (None, Some(c)) => format!("{origin} HTTP {status} {c}"),
            (None, None) => format!("{origin} HTTP {status} without X-Ca-Error-Message"),
        };
        ProviderReply {
            classification,
            http_status: Some(status),
            provider_code: Some(message.or(code).unwrap_or_else(|| format!("HTTP{status}"))),
            provider_request_id: header_text(headers, REQUEST_ID_HEADER),
            carrier: None,
            detail: vendor_text(&detail),
        }
    }

    /// Classify a 2xx body. `gateway_request_id` (`X-Ca-Request-Id`) stands in when the body
    /// has no `seqNo`.
    pub fn classify_body(
        status: u16,
        body: &[u8],
        gateway_request_id: Option<String>,
    ) -> ProviderReply {
        let reply = match wire::parse_reply(body) {
            Ok(r) => r,
            // An answer arrived and cannot be read: the shared status table (a 2xx may be a
            // billed verdict: billing unknown, never repeated).
            Err(e) => {
                let mut r = ProviderReply::from_status(status, Origin::Backend, &e.to_string());
                r.provider_request_id = gateway_request_id;
                return r;
            }
        };
        let billed = codes::billed_from_is_fee(reply.is_fee);
        let (classification, provider_code, detail) = match &reply.result {
            Some(result) => (
                codes::classify_result(result, billed),
                Some(result.clone()),
                reply
                    .result_desc
                    .clone()
                    .or_else(|| reply.msg.clone())
                    .unwrap_or_else(|| format!("result {result}")),
            ),
            None => (
                Classification::unknown_code(billed),
                reply.code.clone(),
                format!(
                    "no data.result (code {}: {})",
                    reply.code.as_deref().unwrap_or("none"),
                    reply.msg.as_deref().unwrap_or("")
                ),
            ),
        };
        ProviderReply {
            classification,
            http_status: Some(status),
            provider_code,
            provider_request_id: reply.seq_no.or(gateway_request_id),
            carrier: reply.mobile_channel.as_deref().and_then(Carrier::normalise),
            detail: vendor_text(&detail),
        }
    }
}

/// The endpoint joined with [`PATH`]; `http://` is allowed (sandbox, staging).
fn check_url(endpoint: &str) -> Result<url::Url, ConfigError> {
    let bad = |e: String| invalid(&format!("{}.endpoint", VENDOR.section()), e);
    let base = url::Url::parse(endpoint.trim()).map_err(|e| bad(e.to_string()))?;
    if !matches!(base.scheme(), "http" | "https") || base.host_str().is_none() {
        return Err(bad("an http(s) URL with a host is required".into()));
    }
    let joined = format!("{}{PATH}", base.as_str().trim_end_matches('/'));
    url::Url::parse(&joined).map_err(|e| bad(e.to_string()))
}

/// Vendor text fit for logs and results: cut short, with any run of six or more digits masked
/// (a vendor echoing an ID or mobile number must not put it in a result).
fn vendor_text(text: &str) -> String {
    let mut out = String::new();
    let mut digits = String::new();
    let flush = |digits: &mut String, out: &mut String| {
        if digits.chars().count() >= 6 {
            out.push_str("***");
        } else {
            out.push_str(digits);
        }
        digits.clear();
    };
    for c in text.chars().take(MAX_DETAIL_CHARS) {
        if c.is_ascii_digit() || (c == 'X' || c == 'x') && !digits.is_empty() {
            digits.push(c);
        } else {
            flush(&mut digits, &mut out);
            out.push(c);
        }
    }
    flush(&mut digits, &mut out);
    out
}

#[async_trait]
impl Provider for AlimarketProvider {
    fn name(&self) -> &'static str {
        VENDOR.name
    }

    fn action(&self, check: CheckKind) -> Option<&'static str> {
        VENDOR.action(check)
    }

    async fn call(&self, request: &CheckRequest) -> ProviderReply {
        let http_request = match self.build_request(request) {
            Ok(r) => r,
            Err(reply) => return reply,
        };
        let answer = match http::exchange(&self.http, http_request, Some(REQUEST_ID_HEADER)).await {
            Ok(a) => a,
            Err(reply) => return reply,
        };
        if !(200..300).contains(&answer.status) {
            return Self::classify_gateway(answer.status, &answer.headers);
        }
        let gateway_request_id = answer.header(REQUEST_ID_HEADER);
        Self::classify_body(answer.status, &answer.body, gateway_request_id)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::check::Billed;
    use crate::configuration::Settings;
    use crate::providers::OutcomeClass;
    use reqwest::header::HeaderValue;

    const CODE: &str = "0123456789abcdef0123456789abcdef";

    fn settings(endpoint: &str, app_code: Option<&str>) -> ProviderSettings {
        let mut s = Settings::load_with(
            std::path::Path::new("config"),
            None,
            Some(Default::default()),
        )
        .expect("default settings load")
        .providers
        .get("alimarket")
        .unwrap()
        .clone();
        s.endpoint = endpoint.to_owned();
        if let Some(code) = app_code {
            s.vendor.set("app_code", code);
        }
        s
    }

    fn provider(endpoint: &str) -> AlimarketProvider {
        AlimarketProvider::from_settings(&settings(endpoint, Some(CODE))).unwrap()
    }

    fn request(mobile: bool) -> CheckRequest {
        let mut json = serde_json::json!({
            "request_id": "r-1",
            "check": "mobile3",
            "name": "张三",
            "id_number": "11010519491231002X",
            "mobile": "13812345678",
        });
        if !mobile {
            json["check"] = "id2".into();
            json.as_object_mut().unwrap().remove("mobile");
        }
        let today = chrono::NaiveDate::from_ymd_opt(2026, 11, 23).unwrap();
        match crate::check::request::decode(json.to_string().as_bytes(), today) {
            Ok(crate::check::request::Decoded::Valid(r)) => r,
            _ => panic!("a valid request"),
        }
    }

    #[test]
    fn builds_the_documented_request() {
        let p = provider("https://sxm3v2.market.alicloudapi.com");
        let r = p.build_request(&request(true)).unwrap();
        assert_eq!(r.method(), reqwest::Method::POST);
        assert_eq!(
            r.url().as_str(),
            "https://sxm3v2.market.alicloudapi.com/mobile3/check"
        );
        let h = r.headers();
        assert_eq!(h[AUTHORIZATION], format!("APPCODE {CODE}").as_str());
        assert_eq!(h[CONTENT_TYPE], "application/json; charset=UTF-8");
        assert_eq!(h[ACCEPT], "application/json");
        let body = r.body().and_then(|b| b.as_bytes()).unwrap();
        assert_eq!(
            std::str::from_utf8(body).unwrap(),
            r#"{"name":"张三","mobile":"13812345678","idCard":"11010519491231002X"}"#
        );
        assert_eq!(p.action(CheckKind::Mobile3), Some("mobile3/check"));
        assert_eq!(p.action(CheckKind::Id2), None);
        assert_eq!(p.action(CheckKind::Id2Period), None);
        assert_eq!(p.name(), "alimarket");
    }

    #[test]
    fn endpoints_may_carry_a_path_or_a_slash_and_must_be_http() {
        for (endpoint, url) in [
            (
                "http://127.0.0.1:8970",
                "http://127.0.0.1:8970/mobile3/check",
            ),
            (
                "http://127.0.0.1:8970/",
                "http://127.0.0.1:8970/mobile3/check",
            ),
            (
                "https://staging.example/market/",
                "https://staging.example/market/mobile3/check",
            ),
        ] {
            assert_eq!(provider(endpoint).url().as_str(), url);
        }
        for bad in ["", "not a url", "ftp://host", "unix:/tmp/sock"] {
            let e = AlimarketProvider::from_settings(&settings(bad, Some(CODE))).unwrap_err();
            assert!(
                e.to_string().contains("providers.alimarket.endpoint"),
                "{e}"
            );
        }
    }

    #[test]
    fn the_app_code_is_required_and_never_shown() {
        for missing in [None, Some(""), Some("  ")] {
            let e = AlimarketProvider::from_settings(&settings("http://h", missing)).unwrap_err();
            assert!(e.to_string().contains("app_code"), "{e}");
        }
        let shown = format!("{:?}", provider("http://h"));
        assert!(!shown.contains(CODE), "{shown}");
        assert!(shown.contains("REDACTED"));
    }

    #[test]
    fn a_request_without_mobile_is_an_invalid_field_and_is_not_sent() {
        let reply = provider("http://h")
            .build_request(&request(false))
            .unwrap_err();
        assert_eq!(reply.classification.class, OutcomeClass::InvalidField);
        assert_eq!(reply.classification.billed, Billed::No);
    }

    fn body(json: &str) -> ProviderReply {
        AlimarketProvider::classify_body(200, json.as_bytes(), Some("GW-1".into()))
    }

    #[test]
    fn results_classify_with_billing_from_is_fee() {
        use crate::check::ReasonCode as R;
        for (result, reason) in [
            ("1", R::Match),
            ("2", R::MismatchUnspecified),
            ("3", R::NoRecord),
        ] {
            for (is_fee, billed) in [
                (",\"isFee\":1", Billed::Yes),
                (",\"isFee\":0", Billed::No),
                ("", Billed::Unknown),
                (",\"isFee\":null", Billed::Unknown),
                (",\"isFee\":7", Billed::Unknown),
            ] {
                let r = body(&format!(
                    r#"{{"code":"200","msg":"ok","seqNo":"S1"{is_fee},"data":{{"result":{result},"resultDesc":"d","mobileChannel":"cmcc"}}}}"#
                ));
                let c = r.classification;
                assert_eq!(
                    (c.class, c.billed, c.reason_code),
                    (OutcomeClass::Verdict, billed, Some(reason)),
                    "{result} {is_fee}"
                );
                assert_eq!(r.provider_code.as_deref(), Some(result));
                assert_eq!(r.provider_request_id.as_deref(), Some("S1"));
                assert_eq!(r.http_status, Some(200));
                assert_eq!(r.carrier, Some(Carrier::Cmcc));
            }
        }
    }

    #[test]
    fn carriers_are_normalised_and_gdcc_is_broadnet() {
        for (channel, carrier) in [
            ("\"cmcc\"", Some(Carrier::Cmcc)),
            ("\"cucc\"", Some(Carrier::Cucc)),
            ("\"ctcc\"", Some(Carrier::Ctcc)),
            ("\"gdcc\"", Some(Carrier::Cbn)),
            ("\"\"", None),
            ("\"unknown\"", None),
            ("null", None),
        ] {
            let r = body(&format!(
                r#"{{"isFee":1,"data":{{"result":1,"mobileChannel":{channel}}}}}"#
            ));
            assert_eq!(r.carrier, carrier, "{channel}");
        }
    }

    #[test]
    fn answers_without_a_readable_result_are_unknown_codes_never_retried() {
        let cases: &[(&str, Billed, Option<&str>)] = &[
            // An undocumented result value.
            (
                r#"{"isFee":1,"seqNo":"S","data":{"result":9}}"#,
                Billed::Yes,
                Some("9"),
            ),
            (r#"{"isFee":0,"data":{"result":4}}"#, Billed::No, Some("4")),
            (r#"{"data":{"result":0}}"#, Billed::Unknown, Some("0")),
            // No data.result: the vendor's `code` is the most specific code there is.
            (
                r#"{"code":"400","msg":"参数错误","isFee":0,"data":null}"#,
                Billed::No,
                Some("400"),
            ),
            (r#"{"isFee":1,"data":{}}"#, Billed::Yes, None),
            (r#"{}"#, Billed::Unknown, None),
        ];
        for (json, billed, code) in cases {
            let r = body(json);
            let c = r.classification;
            assert_eq!(
                (c.class, c.billed, c.reason_code),
                (
                    OutcomeClass::UnknownCode,
                    *billed,
                    Some(ReasonCode::UnknownProviderCode)
                ),
                "{json}"
            );
            assert!(c.class.is_final_answer());
            assert_eq!(r.provider_code.as_deref(), *code, "{json}");
            assert!(r.provider_request_id.is_some(), "{json}");
        }
    }

    #[test]
    fn a_2xx_body_that_cannot_be_read_is_billing_unknown_as_for_every_vendor() {
        for json in ["<html>502 Bad Gateway</html>", "", "[1,2]"] {
            let r = body(json);
            let c = r.classification;
            assert_eq!(
                (c.class, c.billed),
                (OutcomeClass::Unknown, Billed::Unknown),
                "{json}"
            );
            assert_eq!(r.provider_code.as_deref(), Some("HTTP200"), "{json}");
            assert_eq!(r.provider_request_id.as_deref(), Some("GW-1"), "{json}");
        }
    }

    #[test]
    fn the_gateway_request_id_stands_in_for_a_missing_seq_no() {
        assert_eq!(
            body(r#"{"isFee":1,"data":{"result":1}}"#)
                .provider_request_id
                .as_deref(),
            Some("GW-1")
        );
        let r = AlimarketProvider::classify_body(200, br#"{"isFee":1,"data":{"result":1}}"#, None);
        assert_eq!(r.provider_request_id, None);
    }

    fn headers(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.insert(*k, HeaderValue::from_static(v));
        }
        h
    }

    #[test]
    fn gateway_errors_classify_from_their_headers() {
        use OutcomeClass::*;
        /// Status, gateway headers, class, billing, throttled, provider_code.
        type Case = (
            u16,
            &'static [(&'static str, &'static str)],
            OutcomeClass,
            Billed,
            bool,
            &'static str,
        );
        let cases: &[Case] = &[
            (
                403,
                &[("x-ca-error-message", "Unauthorized")],
                ProviderWide,
                Billed::No,
                false,
                "Unauthorized",
            ),
            (
                400,
                &[("x-ca-error-message", "Invalid AppCode `not exists`")],
                ProviderWide,
                Billed::No,
                false,
                "Invalid AppCode `not exists`",
            ),
            (
                403,
                &[("x-ca-error-message", "Quota Exhausted")],
                ProviderWide,
                Billed::No,
                false,
                "Quota Exhausted",
            ),
            (
                403,
                &[("x-ca-error-message", "Throttled by APP Flow Control")],
                Transient,
                Billed::No,
                true,
                "Throttled by APP Flow Control",
            ),
            (
                500,
                &[("x-ca-error-message", "Failed To Call Backend Service")],
                Transient,
                Billed::No,
                false,
                "Failed To Call Backend Service",
            ),
            (
                504,
                &[("x-ca-error-message", "Async Service")],
                Unknown,
                Billed::Unknown,
                false,
                "Async Service",
            ),
            (
                500,
                &[
                    ("x-ca-error-code", "X500ED"),
                    ("x-ca-error-message", "Expired api definition"),
                ],
                ProviderWide,
                Billed::No,
                false,
                "Expired api definition",
            ),
            (
                500,
                &[("x-ca-error-code", "X500AM")],
                ProviderWide,
                Billed::No,
                false,
                "X500AM",
            ),
            // No gateway header: the backend's own status.
            (500, &[], Transient, Billed::No, false, "HTTP500"),
            (502, &[], Transient, Billed::No, false, "HTTP502"),
            (504, &[], Unknown, Billed::Unknown, false, "HTTP504"),
            // The seller's backend refusing this request's parameters: finish it, no circuit.
            (400, &[], RequestRefused, Billed::No, false, "HTTP400"),
            (429, &[], Transient, Billed::No, true, "HTTP429"),
            (404, &[], ProviderWide, Billed::No, false, "HTTP404"),
            // A gateway 400 kycq does not know: finish failed, no circuit.
            (
                400,
                &[("x-ca-error-message", "Invalid Body: x")],
                UnknownCode,
                Billed::No,
                false,
                "Invalid Body: x",
            ),
        ];
        for (status, pairs, class, billed, throttled, code) in cases {
            let mut h = headers(pairs);
            h.insert("x-ca-request-id", HeaderValue::from_static("7AD052CB"));
            let r = AlimarketProvider::classify_gateway(*status, &h);
            let c = r.classification;
            assert_eq!(
                (c.class, c.billed, c.throttled),
                (*class, *billed, *throttled),
                "{status} {pairs:?}"
            );
            assert_eq!(r.provider_code.as_deref(), Some(*code));
            assert_eq!(r.http_status, Some(*status));
            assert_eq!(r.provider_request_id.as_deref(), Some("7AD052CB"));
            assert_eq!(r.carrier, None);
            let origin = if pairs.is_empty() {
                "backend"
            } else {
                "gateway"
            };
            assert!(r.detail.starts_with(origin), "{}", r.detail);
        }
    }

    #[test]
    fn vendor_text_is_short_and_never_holds_long_digit_runs() {
        assert_eq!(
            vendor_text("身份证 11010519491231002X 不一致"),
            "身份证 *** 不一致"
        );
        assert_eq!(vendor_text("手机 13812345678"), "手机 ***");
        assert_eq!(
            vendor_text("HTTP 504: Async Service"),
            "HTTP 504: Async Service"
        );
        assert_eq!(vendor_text("code 12345 X"), "code 12345 X");
        assert_eq!(
            vendor_text(&"a".repeat(500)).chars().count(),
            MAX_DETAIL_CHARS
        );
    }
}
