//! The Alibaba client (IO only): builds and signs the call ([`super::request`]), sends it
//! through the shared HTTP exchange and reads the answer ([`super::answer`]).

use async_trait::async_trait;
use chrono::Utc;
use secrecy::{ExposeSecret, SecretString};

use super::request::{build_request, http_request, sign, ApiRequest};
use super::settings::AlibabaSettings;
use super::{answer, Api, ParamType, VENDOR};
use crate::check::{CheckKind, CheckRequest};
use crate::configuration::{invalid, ConfigError, ProviderSettings};
use crate::providers::http;
use crate::providers::{host_header, Gate, Probe, Provider, ProviderReply};

/// The header that carries the vendor's request id (kept when a body is cut off).
const REQUEST_ID_HEADER: &str = "x-acs-request-id";

/// Alibaba Cloud ID Verification (intl) client.
pub struct AlibabaProvider {
    http: http::Client,
    endpoint: url::Url,
    host: String,
    access_key_id: String,
    access_key_secret: SecretString,
    param_type: ParamType,
}

impl std::fmt::Debug for AlibabaProvider {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AlibabaProvider")
            .field("endpoint", &self.endpoint.as_str())
            .field("access_key_id", &self.access_key_id)
            .field("param_type", &self.param_type)
            .finish_non_exhaustive()
    }
}

impl AlibabaProvider {
    /// Build from `[providers.alibaba]` and Alibaba's keys of it.
    pub fn new(section: &ProviderSettings, s: AlibabaSettings) -> Result<Self, ConfigError> {
        let key = |k: &str| format!("{}.{k}", VENDOR.section());
        let mut endpoint = url::Url::parse(&section.endpoint)
            .map_err(|e| invalid(&key("endpoint"), e.to_string()))?;
        // RPC-style APIs live at `/`.
        endpoint.set_path("/");
        endpoint.set_query(None);
        if s.access_key_id.trim().is_empty() {
            return Err(invalid(&key("access_key_id"), "is required"));
        }
        let param_type = s.param_type()?;
        Ok(AlibabaProvider {
            http: http::client(VENDOR.name, section)?,
            host: host_header(&endpoint),
            endpoint,
            access_key_id: s.access_key_id,
            access_key_secret: s
                .access_key_secret
                .ok_or_else(|| invalid(&key("access_key_secret"), "is required"))?,
            param_type,
        })
    }

    /// Build from `[providers.alibaba]` alone (its credentials must be set).
    pub fn from_settings(section: &ProviderSettings) -> Result<Self, ConfigError> {
        Self::new(section, AlibabaSettings::from_section(section)?)
    }

    /// The `ParamType` used for Mobile3MetaVerifyIntl.
    pub fn param_type(&self) -> ParamType {
        self.param_type
    }
}

#[async_trait]
impl Provider for AlibabaProvider {
    fn name(&self) -> &'static str {
        VENDOR.name
    }

    fn action(&self, check: CheckKind) -> Option<&'static str> {
        VENDOR.action(check)
    }

    async fn call_when(&self, req: &CheckRequest, gate: &dyn Gate) -> ProviderReply {
        let built = match build_request(req, self.param_type) {
            Ok(b) => b,
            Err(reply) => return reply,
        };
        let nonce = uuid::Uuid::new_v4().simple().to_string();
        let signed = sign(
            &built,
            &self.host,
            &self.access_key_id,
            self.access_key_secret.expose_secret(),
            Utc::now(),
            &nonce,
        );
        let request = match http_request(&self.endpoint, signed) {
            Ok(r) => r,
            Err(reply) => return reply,
        };
        match http::exchange(&self.http, request, gate, Some(REQUEST_ID_HEADER)).await {
            Ok(a) => answer::classify(built.api, a.status, &a.body),
            Err(reply) => reply,
        }
    }

    /// `Mobile3MetaVerifyIntl` without parameters, signed like any call: Alibaba Cloud's
    /// gateway checks the AccessKey and the signature first (`InvalidAccessKeyId.*`,
    /// `SignatureDoesNotMatch`, `Forbidden.*` for the account) and the action's parameters after
    /// (`MissingParameter`); error responses are not charged (ID Verification bills a
    /// `Result`, see the product's billing and error-code pages listed in `codes.rs`).
    async fn probe(&self) -> Probe {
        let built = ApiRequest {
            api: Api::Mobile3,
            query: Vec::new(),
            form: None,
        };
        let nonce = uuid::Uuid::new_v4().simple().to_string();
        let signed = sign(
            &built,
            &self.host,
            &self.access_key_id,
            self.access_key_secret.expose_secret(),
            Utc::now(),
            &nonce,
        );
        let reply = match http_request(&self.endpoint, signed) {
            Ok(r) => {
                match http::exchange(&self.http, r, &http::Open, Some(REQUEST_ID_HEADER)).await {
                    Ok(a) => answer::classify(built.api, a.status, &a.body),
                    Err(reply) => reply,
                }
            }
            Err(reply) => reply,
        };
        Probe {
            reply,
            accepted: "MissingParameter",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_never_shows_the_secret() {
        let settings = crate::configuration::Settings::load_with(
            std::path::Path::new("config"),
            None,
            Some(
                [
                    ("KYCQ__PROVIDERS__ALIBABA__ACCESS_KEY_ID", "LTAIid"),
                    (
                        "KYCQ__PROVIDERS__ALIBABA__ACCESS_KEY_SECRET",
                        "very-secret-value",
                    ),
                    ("KYCQ__PROVIDERS__ALIBABA__PARAM_TYPE", "md5"),
                ]
                .into_iter()
                .map(|(k, v)| (k.to_owned(), v.to_owned()))
                .collect(),
            ),
        )
        .unwrap();
        let p = AlibabaProvider::from_settings(settings.providers.get("alibaba").unwrap()).unwrap();
        assert_eq!(p.param_type(), ParamType::Md5);
        let shown = format!("{p:?}");
        assert!(
            shown.contains("LTAIid") && !shown.contains("very-secret-value"),
            "{shown}"
        );
        assert_eq!(
            p.action(CheckKind::Id2Period),
            Some("Id2MetaPeriodVerifyIntl")
        );
        assert_eq!(p.action(CheckKind::Mobile3), Some("Mobile3MetaVerifyIntl"));
        assert_eq!(p.action(CheckKind::Id2), Some("Id2MetaVerifyIntl"));
    }
}
