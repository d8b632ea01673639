//! The vendor descriptor: everything kycq knows about one identity-verification vendor, defined
//! in the vendor's own folder (`providers/<name>/mod.rs`) and listed once in
//! [`super::registry::VENDORS`]. Known provider names, route validation, configuration sections,
//! the CLI's provider choices and the demo are derived from that list.

use std::sync::Arc;

use super::codes::CodeRow;
use super::Provider;
use crate::check::CheckKind;
use crate::configuration::{ConfigError, ProviderSettings};

/// Builds the vendor's client from its `[providers.<name>]` section: `Ok(None)` when no
/// credential is set (the vendor is not routed to), an error naming the key when the section is
/// wrong (a credential half set, an unknown key, a bad value).
pub type Build = fn(&ProviderSettings) -> Result<Option<Arc<dyn Provider>>, ConfigError>;

/// One vendor.
#[derive(Debug)]
pub struct Vendor {
    /// Its name in config, requests, results, the journal and the limiter.
    pub name: &'static str,
    /// What it is, for people.
    pub title: &'static str,
    /// The checks it serves, each with the vendor API that runs it (journal and limiter key).
    pub apis: &'static [(CheckKind, &'static str)],
    /// Builds its client from its section.
    pub build: Build,
    /// Its code tables, by name (checked for well-formedness with every other vendor's).
    pub code_tables: &'static [(&'static str, &'static [CodeRow])],
    /// The vendor keys (and values) that point its section at `kycq sandbox` with the sandbox's
    /// documented local credentials (`kycq demo`, tests): every credential key of the vendor,
    /// in the order an operator reads them ([`Vendor::credential_keys`]).
    pub sandbox_credentials: &'static [(&'static str, &'static str)],
    /// Where `kycq sandbox` serves the vendor's protocol.
    pub sandbox_route: SandboxRoute,
}

/// Where `kycq sandbox` serves a vendor's protocol (`POST`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SandboxRoute {
    /// The vendor's own path.
    pub path: &'static str,
    /// For vendors that share a path, the request header that tells this one apart.
    pub header: Option<&'static str>,
}

impl Vendor {
    /// The API that runs `check`, or None when the vendor does not serve it.
    pub fn action(&self, check: CheckKind) -> Option<&'static str> {
        self.apis.iter().find(|(c, _)| *c == check).map(|(_, a)| *a)
    }

    /// Whether it serves `check`.
    pub fn serves(&self, check: CheckKind) -> bool {
        self.action(check).is_some()
    }

    /// The keys of `[providers.<name>]` that hold its credentials (named, never shown, when the
    /// vendor refuses them).
    pub fn credential_keys(&self) -> impl Iterator<Item = &'static str> + '_ {
        self.sandbox_credentials.iter().map(|(k, _)| *k)
    }

    /// `[providers.<name>]`, the prefix of every key error about this vendor.
    pub fn section(&self) -> String {
        format!("providers.{}", self.name)
    }
}

/// What a vendor's credentials in its section amount to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Credentials {
    /// Every credential is set.
    Complete,
    /// None is set: the vendor is not routed to.
    Absent,
    /// Some are set and this key is not: a likely mistake, refused at start.
    Missing(&'static str),
}

impl Credentials {
    /// From `(key, is set)` pairs of one vendor's credentials.
    pub fn of(keys: &[(&'static str, bool)]) -> Credentials {
        match (
            keys.iter().any(|(_, set)| *set),
            keys.iter().find(|(_, set)| !*set),
        ) {
            (false, _) => Credentials::Absent,
            (true, None) => Credentials::Complete,
            (true, Some((key, _))) => Credentials::Missing(key),
        }
    }

    /// `Ok(true)` when complete, `Ok(false)` when absent, an error naming the missing key.
    pub fn check(self, section: &str) -> Result<bool, ConfigError> {
        match self {
            Credentials::Complete => Ok(true),
            Credentials::Absent => Ok(false),
            Credentials::Missing(key) => Err(crate::configuration::invalid(
                &format!("{section}.{key}"),
                "is empty while another credential of the provider is set",
            )),
        }
    }
}

/// Whether an optional secret is set to something.
pub fn is_set(s: &Option<secrecy::SecretString>) -> bool {
    use secrecy::ExposeSecret;
    s.as_ref()
        .is_some_and(|k| !k.expose_secret().trim().is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn credentials_are_complete_absent_or_missing_one() {
        assert_eq!(
            Credentials::of(&[("id", true), ("key", true)]),
            Credentials::Complete
        );
        assert_eq!(
            Credentials::of(&[("id", false), ("key", false)]),
            Credentials::Absent
        );
        assert_eq!(
            Credentials::of(&[("id", true), ("key", false)]),
            Credentials::Missing("key")
        );
        assert_eq!(Credentials::of(&[("code", true)]), Credentials::Complete);
        let e = Credentials::Missing("secret_key")
            .check("providers.tencent")
            .unwrap_err()
            .to_string();
        assert!(e.contains("providers.tencent.secret_key"), "{e}");
        assert!(e.contains("KYCQ__PROVIDERS__TENCENT__SECRET_KEY"), "{e}");
    }
}
