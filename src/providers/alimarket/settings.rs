//! `[providers.alimarket]`: the Marketplace's own key of the section (the AppCode), typed and
//! checked, and the builder the vendor registry calls.

use std::sync::Arc;

use secrecy::SecretString;
use serde::Deserialize;

use super::{AlimarketProvider, VENDOR};
use crate::configuration::{ConfigError, ProviderSettings};
use crate::providers::vendor::{is_set, Credentials};
use crate::providers::Provider;

/// The Marketplace's keys (the shared ones are in [`ProviderSettings`]).
#[derive(Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AlimarketSettings {
    /// The AppCode (`KYCQ__PROVIDERS__ALIMARKET__APP_CODE`).
    #[serde(default)]
    pub app_code: Option<SecretString>,
}

impl std::fmt::Debug for AlimarketSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AlimarketSettings")
            .field("app_code", &"[REDACTED]")
            .finish()
    }
}

impl AlimarketSettings {
    /// Read from the section.
    pub fn from_section(section: &ProviderSettings) -> Result<Self, ConfigError> {
        section.vendor_keys(&VENDOR.section())
    }

    /// Whether the AppCode is set.
    pub fn credentials(&self) -> Credentials {
        Credentials::of(&[("app_code", is_set(&self.app_code))])
    }
}

/// The registry's builder (see [`crate::providers::vendor::Build`]).
pub fn build(section: &ProviderSettings) -> Result<Option<Arc<dyn Provider>>, ConfigError> {
    let s = AlimarketSettings::from_section(section)?;
    if !s.credentials().check(&VENDOR.section())? {
        return Ok(None);
    }
    Ok(Some(Arc::new(AlimarketProvider::new(section, s)?)))
}
