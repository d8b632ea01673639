//! The providers this worker can call, their circuits, and the route a request takes.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;

use super::circuit::Circuit;
use super::{Provider, ProviderError};
use crate::check::CheckKind;
use crate::configuration::{ProviderSettings, Settings};

/// One configured provider with its circuit.
#[derive(Debug)]
pub struct Entry {
    /// The provider.
    pub provider: Arc<dyn Provider>,
    /// Its circuit breaker.
    pub circuit: Circuit,
    /// How long a provider-wide failure keeps it out.
    pub cooldown: Duration,
}

/// Why a request has no provider to go to.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum RouteError {
    /// Nothing configured can run this check: answered `rejected` (nothing is spent).
    #[error("{0}")]
    NotEnabled(String),
}

/// Builds one provider from its settings section.
type Builder = fn(&ProviderSettings) -> Result<Arc<dyn Provider>, ProviderError>;

/// Every provider kycq knows: a new vendor is one folder and one line here.
const BUILDERS: [(&str, Builder); 3] = [
    ("tencent", |s| {
        Ok(Arc::new(super::tencent::TencentProvider::from_settings(s)?))
    }),
    ("alibaba", |s| {
        Ok(Arc::new(super::alibaba::AlibabaProvider::from_settings(s)?))
    }),
    ("alimarket", |s| {
        Ok(Arc::new(
            super::alimarket::AlimarketProvider::from_settings(s)?,
        ))
    }),
];

/// Every configured provider, and the routes.
#[derive(Debug)]
pub struct Registry {
    entries: BTreeMap<&'static str, Entry>,
    routes: BTreeMap<CheckKind, Vec<&'static str>>,
}

impl Registry {
    /// Build every provider that has credentials. Returns the notes worth logging at start
    /// (providers skipped for want of credentials, checks left without a provider).
    pub fn from_settings(s: &Settings) -> Result<(Registry, Vec<String>), ProviderError> {
        let mut entries = BTreeMap::new();
        let mut notes = Vec::new();
        for (name, build) in BUILDERS {
            let settings = s.providers.get(name).expect("every provider has a section");
            if settings.configured(name) {
                entries.insert(
                    name,
                    Entry {
                        provider: build(settings)?,
                        circuit: Circuit::default(),
                        cooldown: Duration::from_secs(settings.circuit_cooldown_secs),
                    },
                );
            }
        }
        let mut reg = Registry {
            entries,
            routes: BTreeMap::new(),
        };
        for check in CheckKind::ALL {
            let mut route = Vec::new();
            for name in s.routes.for_check(check) {
                match reg.entries.get_key_value(name.as_str()) {
                    Some((k, _)) => route.push(*k),
                    None => notes.push(format!(
                        "provider {name} is in the {check} route but has no credentials: not routed to"
                    )),
                }
            }
            if route.is_empty() {
                notes.push(format!(
                    "check {check} has no configured provider: its requests are answered rejected"
                ));
            }
            reg.routes.insert(check, route);
        }
        Ok((reg, notes))
    }

    /// A registry from explicit providers (tests and embedding).
    pub fn new(
        providers: Vec<(Arc<dyn Provider>, Duration)>,
        routes: &[(CheckKind, Vec<&'static str>)],
    ) -> Registry {
        let entries = providers
            .into_iter()
            .map(|(provider, cooldown)| {
                (
                    provider.name(),
                    Entry {
                        provider,
                        circuit: Circuit::default(),
                        cooldown,
                    },
                )
            })
            .collect();
        Registry {
            entries,
            routes: routes.iter().cloned().collect(),
        }
    }

    /// The providers to try, in order, for a check (or the pinned one).
    pub fn route(&self, check: CheckKind, pinned: Option<&str>) -> Result<Vec<&Entry>, RouteError> {
        let names: Vec<&'static str> = match pinned {
            Some(p) => match self.entries.get_key_value(p) {
                Some((k, e)) if e.provider.action(check).is_some() => vec![*k],
                _ => {
                    return Err(RouteError::NotEnabled(format!(
                        "provider {p} is not available for {check} on this deployment"
                    )))
                }
            },
            None => self.routes.get(&check).cloned().unwrap_or_default(),
        };
        if names.is_empty() {
            return Err(RouteError::NotEnabled(format!(
                "check {check} is not enabled on this deployment (no configured provider)"
            )));
        }
        Ok(names.iter().filter_map(|n| self.entries.get(n)).collect())
    }

    /// Checks whose every provider has an open circuit right now (readiness).
    pub fn blocked_checks(&self, now: Instant) -> Vec<CheckKind> {
        self.routes
            .iter()
            .filter(|(_, r)| !r.is_empty())
            .filter(|(_, r)| {
                r.iter().all(|n| {
                    self.entries
                        .get(n)
                        .is_none_or(|e| !e.circuit.is_available(now))
                })
            })
            .map(|(c, _)| *c)
            .collect()
    }

    /// Names of the configured providers.
    pub fn provider_names(&self) -> Vec<&'static str> {
        self.entries.keys().copied().collect()
    }

    /// One provider's entry.
    pub fn get(&self, name: &str) -> Option<&Entry> {
        self.entries.get(name)
    }
}
