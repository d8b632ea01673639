//! The Tencent provider: signs `PhoneVerification` with TC3-HMAC-SHA256, sends it, classifies
//! the answer with the code tables.

use std::time::Duration;

use async_trait::async_trait;
use secrecy::{ExposeSecret, SecretString};

use super::{codes, wire, ACTION, SERVICE, VERSION};
use crate::check::{Carrier, CheckKind, CheckRequest};
use crate::configuration::ProviderSettings;
use crate::providers::signing::tc3;
use crate::providers::{
    classify_transport, host_header, Classification, Provider, ProviderError, ProviderReply,
};

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
    /// Build from `[providers.tencent]` (credentials must be present).
    pub fn from_settings(s: &ProviderSettings) -> Result<Self, ProviderError> {
        let endpoint = url::Url::parse(&s.endpoint)
            .map_err(|e| ProviderError::Config(format!("providers.tencent.endpoint: {e}")))?;
        let http = reqwest::Client::builder()
            .connect_timeout(Duration::from_millis(s.connect_timeout_ms))
            .timeout(Duration::from_millis(s.timeout_ms))
            .build()
            .map_err(|e| ProviderError::Config(format!("providers.tencent: {e}")))?;
        Ok(TencentProvider {
            http,
            host: host_header(&endpoint),
            endpoint,
            secret_id: s.secret_id.clone(),
            secret_key: s.secret_key.clone().ok_or_else(|| {
                ProviderError::Config("providers.tencent.secret_key is required".into())
            })?,
            region: Some(s.region.clone()).filter(|r| !r.is_empty()),
        })
    }

    /// Classify a response body that arrived with HTTP 200.
    pub fn classify_body(status: u16, body: &[u8]) -> ProviderReply {
        let env: wire::Envelope = match serde_json::from_slice(body) {
            Ok(e) => e,
            // An answer arrived but cannot be read: it may have been a billed verdict.
            Err(e) => {
                return ProviderReply::transport(
                    Classification::UNKNOWN,
                    Some(status),
                    format!("unreadable response body: {e}"),
                )
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
            return ProviderReply::transport(
                Classification::UNKNOWN,
                Some(status),
                "response has neither Result nor Error",
            );
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
        "tencent"
    }

    fn action(&self, check: CheckKind) -> Option<&'static str> {
        (check == CheckKind::Mobile3).then_some(ACTION)
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
            .header("X-TC-Action", ACTION)
            .header("X-TC-Version", VERSION)
            .header("X-TC-Timestamp", signed.timestamp.to_string())
            .header("Authorization", signed.authorization)
            .body(body);
        if let Some(region) = &self.region {
            req = req.header("X-TC-Region", region);
        }
        let resp = match req.send().await {
            Ok(r) => r,
            Err(e) => return classify_transport(e),
        };
        let status = resp.status().as_u16();
        if status == 504 {
            // A gateway timeout: the backend may have run the check (and billed it).
            return ProviderReply::http_error(Classification::UNKNOWN, status);
        }
        if resp.status().is_server_error() {
            return ProviderReply::http_error(Classification::TRANSIENT, status);
        }
        let bytes = match resp.bytes().await {
            Ok(b) => b,
            Err(e) => {
                return ProviderReply::transport(
                    Classification::UNKNOWN,
                    Some(status),
                    format!("response body lost: {e}"),
                )
            }
        };
        if status != 200 {
            // API errors come with 200; anything else is the gateway refusing the request.
            return ProviderReply::http_error(Classification::PROVIDER_WIDE, status);
        }
        Self::classify_body(status, &bytes)
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
}
