//! The Tencent client (IO only): builds the call ([`super::request`]), sends it through the
//! shared HTTP exchange and reads the answer ([`super::answer`]).

use async_trait::async_trait;

use super::request::{self, Target};
use super::settings::TencentSettings;
use super::{answer, VENDOR};
use crate::check::{CheckKind, CheckRequest};
use crate::configuration::{invalid, ConfigError, ProviderSettings};
use crate::providers::http;
use crate::providers::{Gate, Probe, Provider, ProviderReply};

/// Tencent Cloud FaceID (intl) client.
#[derive(Debug)]
pub struct TencentProvider {
    http: http::Client,
    target: Target,
}

impl TencentProvider {
    /// Build from `[providers.tencent]` and Tencent's keys of it.
    pub fn new(section: &ProviderSettings, s: TencentSettings) -> Result<Self, ConfigError> {
        let key = |k: &str| format!("{}.{k}", VENDOR.section());
        let endpoint = url::Url::parse(&section.endpoint)
            .map_err(|e| invalid(&key("endpoint"), e.to_string()))?;
        let secret_key = s
            .secret_key
            .ok_or_else(|| invalid(&key("secret_key"), "is required"))?;
        Ok(TencentProvider {
            http: http::client(VENDOR.name, section)?,
            target: Target {
                endpoint,
                secret_id: s.secret_id,
                secret_key,
                region: Some(s.region).filter(|r| !r.is_empty()),
            },
        })
    }

    /// Its connections (tests look at what is kept).
    #[cfg(test)]
    pub(crate) fn http(&self) -> &http::Client {
        &self.http
    }

    /// Build from `[providers.tencent]` alone (its credentials must be set).
    pub fn from_settings(section: &ProviderSettings) -> Result<Self, ConfigError> {
        Self::new(section, TencentSettings::from_section(section)?)
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

    async fn call_when(&self, req: &CheckRequest, gate: &dyn Gate) -> ProviderReply {
        let request = match request::build(&self.target, req, chrono::Utc::now().timestamp()) {
            Ok(r) => r,
            Err(reply) => return reply,
        };
        match http::exchange(&self.http, request, gate, None).await {
            Ok(a) => answer::classify(a.status, &a.body),
            Err(reply) => reply,
        }
    }

    async fn probe(&self) -> Probe {
        let reply = match request::probe(&self.target, chrono::Utc::now().timestamp()) {
            Ok(r) => match http::exchange(&self.http, r, &http::Open, None).await {
                Ok(a) => answer::classify(a.status, &a.body),
                Err(reply) => reply,
            },
            Err(reply) => reply,
        };
        Probe {
            reply,
            accepted: request::PROBE_ACCEPTED,
        }
    }
}
