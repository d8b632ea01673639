//! The Marketplace client (IO only): builds the call ([`super::request`]), sends it through
//! the shared HTTP exchange and reads the answer ([`super::answer`]).

use async_trait::async_trait;

use super::answer::{self, REQUEST_ID_HEADER};
use super::request::{self, endpoint_url, Target};
use super::settings::AlimarketSettings;
use super::VENDOR;
use crate::check::{CheckKind, CheckRequest};
use crate::configuration::{invalid, ConfigError, ProviderSettings};
use crate::providers::http;
use crate::providers::{Gate, Probe, Provider, ProviderReply};
use secrecy::ExposeSecret;

/// Alibaba Cloud Marketplace "运营商3要素V2" client.
#[derive(Debug)]
pub struct AlimarketProvider {
    http: http::Client,
    target: Target,
}

impl AlimarketProvider {
    /// Build from `[providers.alimarket]` and the Marketplace's key of it.
    pub fn new(section: &ProviderSettings, s: AlimarketSettings) -> Result<Self, ConfigError> {
        let url = endpoint_url(&section.endpoint)?;
        let app_code = s
            .app_code
            .filter(|c| !c.expose_secret().trim().is_empty())
            .ok_or_else(|| invalid(&format!("{}.app_code", VENDOR.section()), "is required"))?;
        Ok(AlimarketProvider {
            http: http::client(VENDOR.name, section)?,
            target: Target { url, app_code },
        })
    }

    /// Build from `[providers.alimarket]` alone (the AppCode must be set).
    pub fn from_settings(section: &ProviderSettings) -> Result<Self, ConfigError> {
        Self::new(section, AlimarketSettings::from_section(section)?)
    }

    /// Where calls go.
    pub fn target(&self) -> &Target {
        &self.target
    }
}

#[async_trait]
impl Provider for AlimarketProvider {
    fn name(&self) -> &'static str {
        VENDOR.name
    }

    fn action(&self, check: CheckKind) -> Option<&'static str> {
        VENDOR.action(check)
    }

    async fn call_when(&self, req: &CheckRequest, gate: &dyn Gate) -> ProviderReply {
        let request = match request::build(&self.target, req) {
            Ok(r) => r,
            Err(reply) => return reply,
        };
        match http::exchange(&self.http, request, gate, Some(REQUEST_ID_HEADER)).await {
            Ok(a) => answer::classify(&a),
            Err(reply) => reply,
        }
    }

    /// `mobile3/check` with an empty body: the Marketplace's API gateway checks the AppCode
    /// first (`Invalid AppCode`, `Unauthorized`, the quota and arrears messages) and the body
    /// after (`Empty Request Body`), without calling the seller's backend: the package is not
    /// counted (the product FAQ counts answers of the backend; see `codes.rs`).
    async fn probe(&self) -> Probe {
        let reply = match request::probe(&self.target) {
            Ok(r) => {
                match http::exchange(&self.http, r, &http::Open, Some(REQUEST_ID_HEADER)).await {
                    Ok(a) => answer::classify(&a),
                    Err(reply) => reply,
                }
            }
            Err(reply) => reply,
        };
        Probe {
            reply,
            accepted: "Empty Request Body",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::check::Billed;
    use crate::configuration::Settings;
    use crate::providers::OutcomeClass;
    use reqwest::header::{ACCEPT, AUTHORIZATION, CONTENT_TYPE};

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
        let r = request::build(p.target(), &request(true)).unwrap();
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
            assert_eq!(provider(endpoint).target().url.as_str(), url);
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
        let reply = request::build(provider("http://h").target(), &request(false)).unwrap_err();
        assert_eq!(reply.classification.class, OutcomeClass::InvalidField);
        assert_eq!(reply.classification.billed, Billed::No);
    }
}
