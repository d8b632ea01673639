//! `[providers.tencent]`: Tencent's own keys of the section (credentials, region), typed and
//! checked, and the builder the vendor registry calls.

use std::sync::Arc;

use secrecy::SecretString;
use serde::Deserialize;

use super::{TencentProvider, VENDOR};
use crate::configuration::{ConfigError, ProviderSettings};
use crate::providers::vendor::{is_set, Credentials};
use crate::providers::Provider;

/// Tencent's keys (the shared ones — endpoint, timeouts, limits — are in [`ProviderSettings`]).
#[derive(Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TencentSettings {
    /// `SecretId` (`KYCQ__PROVIDERS__TENCENT__SECRET_ID`).
    #[serde(default)]
    pub secret_id: String,
    /// `SecretKey` (`KYCQ__PROVIDERS__TENCENT__SECRET_KEY`).
    #[serde(default)]
    pub secret_key: Option<SecretString>,
    /// `X-TC-Region`; empty = not sent (PhoneVerification does not need it).
    #[serde(default)]
    pub region: String,
}

impl std::fmt::Debug for TencentSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TencentSettings")
            .field("secret_id", &self.secret_id)
            .field("secret_key", &"[REDACTED]")
            .field("region", &self.region)
            .finish()
    }
}

impl TencentSettings {
    /// Read from the section.
    pub fn from_section(section: &ProviderSettings) -> Result<Self, ConfigError> {
        section.vendor_keys(&VENDOR.section())
    }

    /// Whether both credentials are set.
    pub fn credentials(&self) -> Credentials {
        Credentials::of(&[
            ("secret_id", !self.secret_id.trim().is_empty()),
            ("secret_key", is_set(&self.secret_key)),
        ])
    }
}

/// The registry's builder (see [`crate::providers::vendor::Build`]).
pub fn build(section: &ProviderSettings) -> Result<Option<Arc<dyn Provider>>, ConfigError> {
    let s = TencentSettings::from_section(section)?;
    if !s.credentials().check(&VENDOR.section())? {
        return Ok(None);
    }
    Ok(Some(Arc::new(TencentProvider::new(section, s)?)))
}
