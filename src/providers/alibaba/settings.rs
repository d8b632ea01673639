//! `[providers.alibaba]`: Alibaba's own keys of the section (AccessKey pair, `ParamType`),
//! typed and checked, and the builder the vendor registry calls.

use std::sync::Arc;

use secrecy::SecretString;
use serde::Deserialize;

use super::{AlibabaProvider, ParamType, VENDOR};
use crate::configuration::{invalid, ConfigError, ProviderSettings};
use crate::providers::vendor::{is_set, Credentials};
use crate::providers::Provider;

/// Alibaba's keys (the shared ones are in [`ProviderSettings`]).
#[derive(Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AlibabaSettings {
    /// AccessKeyId (`KYCQ__PROVIDERS__ALIBABA__ACCESS_KEY_ID`).
    #[serde(default)]
    pub access_key_id: String,
    /// AccessKeySecret (`KYCQ__PROVIDERS__ALIBABA__ACCESS_KEY_SECRET`).
    #[serde(default)]
    pub access_key_secret: Option<SecretString>,
    /// `ParamType` of Mobile3MetaVerifyIntl: `normal` (plaintext) or `md5`.
    #[serde(default = "default_param_type")]
    pub param_type: String,
}

fn default_param_type() -> String {
    ParamType::Normal.as_str().to_owned()
}

impl Default for AlibabaSettings {
    fn default() -> Self {
        AlibabaSettings {
            access_key_id: String::new(),
            access_key_secret: None,
            param_type: default_param_type(),
        }
    }
}

impl std::fmt::Debug for AlibabaSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AlibabaSettings")
            .field("access_key_id", &self.access_key_id)
            .field("access_key_secret", &"[REDACTED]")
            .field("param_type", &self.param_type)
            .finish()
    }
}

impl AlibabaSettings {
    /// Read from the section; `param_type` must be `normal` or `md5`.
    pub fn from_section(section: &ProviderSettings) -> Result<Self, ConfigError> {
        let s: AlibabaSettings = section.vendor_keys(&VENDOR.section())?;
        s.param_type()?;
        Ok(s)
    }

    /// The `ParamType`, or an error naming the key.
    pub fn param_type(&self) -> Result<ParamType, ConfigError> {
        ParamType::parse(&self.param_type).ok_or_else(|| {
            invalid(
                &format!("{}.param_type", VENDOR.section()),
                "must be normal or md5",
            )
        })
    }

    /// Whether both credentials are set.
    pub fn credentials(&self) -> Credentials {
        Credentials::of(&[
            ("access_key_id", !self.access_key_id.trim().is_empty()),
            ("access_key_secret", is_set(&self.access_key_secret)),
        ])
    }
}

/// The registry's builder (see [`crate::providers::vendor::Build`]).
pub fn build(section: &ProviderSettings) -> Result<Option<Arc<dyn Provider>>, ConfigError> {
    let s = AlibabaSettings::from_section(section)?;
    if !s.credentials().check(&VENDOR.section())? {
        return Ok(None);
    }
    Ok(Some(Arc::new(AlibabaProvider::new(section, s)?)))
}
