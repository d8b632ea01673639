//! The Tencent provider: signs `PhoneVerification` with TC3-HMAC-SHA256, sends it, classifies
//! the answer with the code tables.

use async_trait::async_trait;
use secrecy::{ExposeSecret, SecretString};

use super::settings::TencentSettings;
use super::{codes, wire, SERVICE, VENDOR, VERSION};
use crate::check::{Carrier, CheckKind, CheckRequest};
use crate::configuration::{invalid, ConfigError, ProviderSettings};
use crate::providers::http::{self, transport_failure};
use crate::providers::outcome::Origin;
use crate::providers::signing::tc3;
use crate::providers::{host_header, Classification, Provider, ProviderReply};

const CONTENT_TYPE: &str = "application/json";

/// Tencent Cloud FaceID (intl) client.
pub struct TencentProvider {
    http: reqwest::Client,
    endpoint: url::Url,
    host: String,
    secret_id: String,
    secret_key: SecretString,
    region: Option<String>,
}

impl std::fmt::Debug for TencentProvider {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TencentProvider")
            .field("endpoint", &self.endpoint.as_str())
            .field("secret_id", &self.secret_id)
            .finish_non_exhaustive()
    }
}

impl TencentProvider {
    /// Build from `[providers.tencent]` and Tencent's keys of it.
    pub fn new(section: &ProviderSettings, s: TencentSettings) -> Result<Self, ConfigError> {
        let key = format!("{}.endpoint", VENDOR.section());
        let endpoint =
            url::Url::parse(&section.endpoint).map_err(|e| invalid(&key, e.to_string()))?;
        let secret_key = s
            .secret_key
            .ok_or_else(|| invalid(&format!("{}.secret_key", VENDOR.section()), "is required"))?;
        Ok(TencentProvider {
            http: http::client(VENDOR.name, section)?,
            host: host_header(&endpoint),
            endpoint,
            secret_id: s.secret_id,
            secret_key,
            region: Some(s.region).filter(|r| !r.is_empty()),
        })
    }

    /// Build from `[providers.tencent]` alone (its credentials must be set).
    pub fn from_settings(section: &ProviderSettings) -> Result<Self, ConfigError> {
        Self::new(section, TencentSettings::from_section(section)?)
    }

    /// Classify a whole answer: the API's `Response.Error` or `Response.Result` when the body
    /// is the API's JSON (whatever the status), else the shared status table.
    pub fn classify_body(status: u16, body: &[u8]) -> ProviderReply {
        let env: wire::Envelope = match serde_json::from_slice(body) {
            Ok(e) => e,
            Err(_) => {
                return ProviderReply::from_status(status, Origin::Backend, "not the API's JSON")
            }
        };
        let r = env.response;
        let provider_request_id = r.request_id.clone();
        if let Some(err) = r.error {
            return ProviderReply {
                classification: codes::classify_error(&err.code),
                http_status: Some(status),
                detail: format!(
                    "{}: {}",
                    err.code,
                    err.message.as_deref().unwrap_or_default()
                ),
                provider_code: Some(err.code),
                provider_request_id,
                carrier: None,
            };
        }
        let Some(result) = r.result else {
            let mut reply = ProviderReply::from_status(
                status,
                Origin::Backend,
                "the API's JSON without Result or Error",
            );
            reply.provider_request_id = provider_request_id;
            return reply;
        };
        let detail = r.result_detail.as_deref().filter(|d| !d.is_empty());
        ProviderReply {
            classification: codes::classify_result(&result, detail),
            http_status: Some(status),
            detail: match detail {
                Some(d) => format!("{} ({d})", r.description.unwrap_or_default()),
                None => r.description.unwrap_or_default(),
            },
            provider_code: Some(result),
            provider_request_id,
            carrier: r.isp.as_deref().and_then(Carrier::normalise),
        }
    }
}

#[async_trait]
impl Provider for TencentProvider {
    fn name(&self) -> &'static str {
        VENDOR.name
    }

    fn action(&self, check: CheckKind) -> Option<&'static str> {
        VENDOR.action(check)
    }

    async fn call(&self, request: &CheckRequest) -> ProviderReply {
        let s = &request.subject;
        let Some(mobile) = s.mobile.as_ref() else {
            return ProviderReply::transport(
                Classification::invalid_field(crate::check::ReasonCode::InvalidMobile),
                None,
                "mobile is required for PhoneVerification",
            );
        };
        let body = serde_json::to_vec(&wire::PhoneVerificationRequest {
            id_card: s.id_number.expose(),
            name: s.name.expose(),
            phone: mobile.expose(),
        })
        .expect("request body serialises");
        let timestamp = chrono::Utc::now().timestamp();
        let signed = tc3::sign_json_post(
            &self.secret_id,
            self.secret_key.expose_secret(),
            &self.host,
            SERVICE,
            CONTENT_TYPE,
            &body,
            timestamp,
        );
        let mut req = self
            .http
            .post(self.endpoint.clone())
            .header("Content-Type", CONTENT_TYPE)
            .header("X-TC-Action", super::ACTION)
            .header("X-TC-Version", VERSION)
            .header("X-TC-Timestamp", signed.timestamp.to_string())
            .header("Authorization", signed.authorization)
            .body(body);
        if let Some(region) = &self.region {
            req = req.header("X-TC-Region", region);
        }
        let request = match req.build() {
            Ok(r) => r,
            Err(e) => return transport_failure(e),
        };
        match http::exchange(&self.http, request, None).await {
            Ok(answer) => Self::classify_body(answer.status, &answer.body),
            Err(reply) => reply,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::check::{Billed, ReasonCode};
    use crate::providers::OutcomeClass;

    #[test]
    fn bodies_classify_with_carrier_and_request_id() {
        let r = TencentProvider::classify_body(
            200,
            br#"{"Response":{"Result":"0","Description":"Authentication passed","Isp":"Telecom","RequestId":"a5fd"}}"#,
        );
        assert_eq!(r.classification.class, OutcomeClass::Verdict);
        assert_eq!(r.classification.billed, Billed::Yes);
        assert_eq!(r.carrier, Some(Carrier::Ctcc));
        assert_eq!(r.provider_code.as_deref(), Some("0"));
        assert_eq!(r.provider_request_id.as_deref(), Some("a5fd"));

        let r = TencentProvider::classify_body(
            200,
            "{\"Response\":{\"Result\":\"-4\",\"Description\":\"不一致\",\"Isp\":\"联通\",\"ResultDetail\":\"PhoneNameMismatch\",\"RequestId\":\"x\"}}".as_bytes(),
        );
        assert_eq!(r.classification.reason_code, Some(ReasonCode::NameMismatch));
        assert_eq!(r.carrier, Some(Carrier::Cucc));

        let r = TencentProvider::classify_body(
            200,
            br#"{"Response":{"Error":{"Code":"AuthFailure.SignatureFailure","Message":"bad"},"RequestId":"y"}}"#,
        );
        assert_eq!(r.classification.class, OutcomeClass::ProviderWide);
        assert_eq!(
            r.provider_code.as_deref(),
            Some("AuthFailure.SignatureFailure")
        );

        let r = TencentProvider::classify_body(200, b"<html>");
        assert_eq!(r.classification.class, OutcomeClass::Unknown);
        assert_eq!(r.classification.billed, Billed::Unknown);
    }

    #[test]
    fn answers_without_the_api_json_follow_the_shared_status_table() {
        let class = |status: u16, body: &[u8]| {
            let r = TencentProvider::classify_body(status, body);
            (
                r.classification.class,
                r.classification.throttled,
                r.provider_code,
            )
        };
        let code = |s: &str| Some(s.to_owned());
        assert_eq!(
            class(429, b"Too Many Requests"),
            (OutcomeClass::Transient, true, code("HTTP429"))
        );
        assert_eq!(
            class(400, br#"{"code":400}"#),
            (OutcomeClass::RequestRefused, false, code("HTTP400"))
        );
        assert_eq!(
            class(502, b"Bad Gateway"),
            (OutcomeClass::Transient, false, code("HTTP502"))
        );
        assert_eq!(
            class(504, b""),
            (OutcomeClass::Unknown, false, code("HTTP504"))
        );
        assert_eq!(
            class(403, b"<html>"),
            (OutcomeClass::ProviderWide, false, code("HTTP403"))
        );
        // The API's own JSON decides whatever the status.
        let r = TencentProvider::classify_body(
            500,
            br#"{"Response":{"Error":{"Code":"InvalidParameter","Message":"x"},"RequestId":"y"}}"#,
        );
        assert_eq!(r.classification.class, OutcomeClass::InvalidField);
    }
}
