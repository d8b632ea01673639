//! The providers this worker can call, their circuits, and the route a request takes.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use tokio::time::Instant;

use super::circuit::{Circuit, RefusalState, Refused, Transition, TripReason};
use super::vendor::Vendor;
use super::{Provider, ProviderReply};
use crate::check::CheckKind;
use crate::configuration::{env_name, invalid, ConfigError, Settings};

/// One configured provider with its circuit.
#[derive(Debug)]
pub struct Entry {
    /// The provider.
    pub provider: Arc<dyn Provider>,
    /// Its circuit breaker.
    pub circuit: Circuit,
    /// How long a provider-wide failure keeps it out.
    pub cooldown: Duration,
    /// Whether it refuses the credentials, the account or the quota right now.
    pub refusal: RefusalState,
}

impl Entry {
    fn new(provider: Arc<dyn Provider>, cooldown: Duration) -> Entry {
        Entry {
            provider,
            circuit: Circuit::default(),
            cooldown,
            refusal: RefusalState::default(),
        }
    }

    /// Take in one reply of this provider (every reply, before the route acts on it): a refusal
    /// of the credentials, the account or the quota is counted
    /// (`kycq_provider_refusals_total{provider,kind}`) and logged at ERROR once when it starts,
    /// naming the keys to fix; the first final answer after it is logged as the recovery. The
    /// circuit is the caller's business, as before.
    pub fn note_reply(&self, reply: &ProviderReply) {
        let provider = self.provider.name();
        if let Some(kind) = reply.classification.refusal {
            metrics::counter!("kycq_provider_refusals_total", "provider" => provider, "kind" => kind.as_str())
                .increment(1);
        }
        match self.refusal.record(reply) {
            Transition::Unchanged => {}
            Transition::Refused(r) => {
                metrics::gauge!("kycq_provider_refused", "provider" => provider).set(1.0);
                tracing::error!(
                    provider,
                    kind = r.kind.as_str(),
                    code = %r.code,
                    "{}",
                    refusal_message(provider, &r)
                );
            }
            Transition::Recovered(was) => {
                metrics::gauge!("kycq_provider_refused", "provider" => provider).set(0.0);
                tracing::info!(
                    provider,
                    was = was.kind.as_str(),
                    "provider {provider} answers again: its {} is over",
                    was.kind.describe()
                );
            }
        }
    }
}

/// The keys an operator fixes for a refusal of `provider`, as `providers.<name>.<key>` joined
/// with `/`, followed by their environment forms (`providers.tencent.secret_id/secret_key
/// (KYCQ__PROVIDERS__TENCENT__SECRET_ID, KYCQ__PROVIDERS__TENCENT__SECRET_KEY)`). Never values.
pub fn credential_keys(provider: &str) -> String {
    let keys: Vec<&str> = vendor(provider)
        .map(|v| v.credential_keys().collect())
        .unwrap_or_default();
    if keys.is_empty() {
        return format!("providers.{provider}");
    }
    let full: Vec<String> = keys
        .iter()
        .map(|k| format!("providers.{provider}.{k}"))
        .collect();
    let envs: Vec<String> = full.iter().map(|k| env_name(k)).collect();
    format!(
        "providers.{provider}.{} ({})",
        keys.join("/"),
        envs.join(", ")
    )
}

/// One line for logs, `/readyz` and `kycq doctor`: `provider tencent: credentials refused
/// (AuthFailure.SignatureFailure) — check providers.tencent.secret_id/secret_key (…)`.
pub fn refusal_message(provider: &str, r: &Refused) -> String {
    format!(
        "provider {provider}: {} ({}) — {} {}",
        r.kind.describe(),
        r.code,
        r.kind.remedy(),
        credential_keys(provider)
    )
}

/// Whether a provider's circuit lets calls through.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CircuitStatus {
    /// Calls go through (never opened, reset, or its cool-down is over).
    Closed,
    /// A provider-wide failure keeps the provider out until `open_until`.
    Open,
}

/// One provider as this worker sees it right now ([`Registry::snapshot`]): published in the
/// `workers` table by the heartbeat. Codes only, never personal data.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProviderState {
    /// Provider name (`tencent`).
    pub provider: String,
    /// Closed or open.
    pub circuit: CircuitStatus,
    /// When open: seconds until it closes (rounded up).
    pub closes_in_secs: Option<u64>,
    /// When open: when it closes (wall clock of this worker).
    pub open_until: Option<DateTime<Utc>>,
    /// When open: the reply that opened it.
    pub why: Option<TripReason>,
    /// The refusal of the credentials, the account or the quota in force, with the vendor's
    /// code (it lasts until the provider's next final answer, the circuit open or not).
    pub refusal: Option<Refused>,
}

/// Why a request has no provider to go to.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum RouteError {
    /// Nothing configured can run this check: answered `rejected` (nothing is spent).
    #[error("{0}")]
    NotEnabled(String),
}

/// Every configured provider, and the routes.
#[derive(Debug)]
pub struct Registry {
    entries: BTreeMap<&'static str, Entry>,
    routes: BTreeMap<CheckKind, Vec<&'static str>>,
}

/// Every vendor kycq knows, in the order the default routes try them: a new vendor is one
/// folder (`providers/<name>/`) and one line here.
pub const VENDORS: &[&Vendor] = &[
    &super::tencent::VENDOR,
    &super::alibaba::VENDOR,
    &super::alimarket::VENDOR,
];

/// The vendor of this name.
pub fn vendor(name: &str) -> Option<&'static Vendor> {
    VENDORS.iter().copied().find(|v| v.name == name)
}

/// Every vendor's name, in registry order.
pub fn vendor_names() -> Vec<&'static str> {
    VENDORS.iter().map(|v| v.name).collect()
}

/// The vendors that serve `check`, in registry order.
pub fn vendors_for(check: CheckKind) -> Vec<&'static Vendor> {
    VENDORS
        .iter()
        .copied()
        .filter(|v| v.serves(check))
        .collect()
}

/// Checks the parts of the settings only the registry understands: every `[providers.<name>]`
/// section names a known vendor and its vendor keys are right, and every route names a vendor
/// that serves its check. Errors name the key (exit code 2).
pub fn validate(s: &Settings) -> Result<(), ConfigError> {
    Registry::from_settings(s).map(|_| ())
}

impl Registry {
    /// Build every provider that has credentials. Returns the notes worth logging at start
    /// (providers skipped for want of credentials, checks left without a provider).
    pub fn from_settings(s: &Settings) -> Result<(Registry, Vec<String>), ConfigError> {
        for (name, _) in s.providers.all() {
            if vendor(name).is_none() {
                return Err(invalid(
                    &format!("providers.{name}"),
                    format!("unknown provider (known: {})", vendor_names().join(", ")),
                ));
            }
        }
        for check in CheckKind::ALL {
            let key = format!("routes.{}", check.as_str());
            for name in s.routes.for_check(check) {
                match vendor(name) {
                    None => {
                        return Err(invalid(
                            &key,
                            format!(
                                "unknown provider `{name}` (known: {})",
                                vendor_names().join(", ")
                            ),
                        ))
                    }
                    Some(v) if !v.serves(check) => {
                        return Err(invalid(
                            &key,
                            format!("provider `{name}` cannot run {check}"),
                        ))
                    }
                    Some(_) => {}
                }
            }
        }
        let mut entries = BTreeMap::new();
        let mut notes = Vec::new();
        for v in VENDORS {
            let Some(section) = s.providers.get(v.name) else {
                continue;
            };
            if let Some(provider) = (v.build)(section)? {
                entries.insert(
                    v.name,
                    Entry::new(provider, Duration::from_secs(section.circuit_cooldown_secs)),
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
            .map(|(provider, cooldown)| (provider.name(), Entry::new(provider, cooldown)))
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
                _ if vendor(p).is_none() => {
                    return Err(RouteError::NotEnabled(format!(
                        "provider {p} is unknown (known: {})",
                        vendor_names().join(", ")
                    )))
                }
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

    /// The providers whose last word was a refusal of the credentials, the account or the
    /// quota, one line each naming the keys to fix, and whether the provider is out right now
    /// (its circuit open). A refusal is only cleared by the provider's next final answer, and a
    /// provider later in a route may not be called again for a long time: readiness counts it
    /// only while it is out, and shows it as a warning after.
    pub fn refusals(&self, now: Instant) -> Vec<(String, bool)> {
        self.entries
            .iter()
            .filter_map(|(name, e)| {
                e.refusal
                    .current()
                    .map(|r| (refusal_message(name, &r), !e.circuit.is_available(now)))
            })
            .collect()
    }

    /// Every configured provider's circuit and refusal at `now`, in name order.
    pub fn snapshot(&self, now: Instant) -> Vec<ProviderState> {
        let wall = Utc::now();
        self.entries
            .iter()
            .map(|(name, e)| {
                let c = e.circuit.state(now);
                let left = c
                    .open_until
                    .map(|until| until.saturating_duration_since(now));
                ProviderState {
                    provider: (*name).to_owned(),
                    circuit: if left.is_some() {
                        CircuitStatus::Open
                    } else {
                        CircuitStatus::Closed
                    },
                    closes_in_secs: left.map(|d| d.as_secs() + u64::from(d.subsec_nanos() > 0)),
                    open_until: left
                        .and_then(|d| chrono::Duration::from_std(d).ok().map(|d| wall + d)),
                    why: c.why,
                    refusal: e.refusal.current(),
                }
            })
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

#[cfg(test)]
mod tests {
    use super::*;

    fn settings(env: &[(&str, &str)]) -> Settings {
        let map = env
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        Settings::load_with(std::path::Path::new("config"), None, Some(map)).expect("settings")
    }

    fn error(env: &[(&str, &str)]) -> String {
        validate(&settings(env)).unwrap_err().to_string()
    }

    #[test]
    fn names_checks_and_default_routes_come_from_the_vendor_list() {
        assert_eq!(vendor_names(), ["tencent", "alibaba", "alimarket"]);
        let names = |c| vendors_for(c).iter().map(|v| v.name).collect::<Vec<_>>();
        assert_eq!(
            names(CheckKind::Mobile3),
            ["tencent", "alibaba", "alimarket"]
        );
        assert_eq!(names(CheckKind::Id2), ["alibaba"]);
        assert_eq!(names(CheckKind::Id2Period), ["alibaba"]);
        // Every vendor has a section in the shipped configuration, and its defaults are valid.
        let s = settings(&[]);
        for v in VENDORS {
            assert!(s.providers.get(v.name).is_some(), "{}", v.name);
            assert!(!v.apis.is_empty() && !v.title.is_empty());
        }
        let (reg, notes) = Registry::from_settings(&s).unwrap();
        assert!(
            reg.provider_names().is_empty(),
            "no credentials, no provider"
        );
        assert!(
            notes.iter().any(|n| n.contains("no credentials")),
            "{notes:?}"
        );
    }

    #[test]
    fn credentials_build_the_provider_and_routes_hold_it() {
        let mut env = Vec::new();
        for v in VENDORS {
            for (k, val) in v.sandbox_credentials {
                env.push((
                    format!("KYCQ__PROVIDERS__{}__{}", v.name, k).to_uppercase(),
                    val.to_string(),
                ));
            }
        }
        let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        let (reg, notes) = Registry::from_settings(&settings(&env)).unwrap();
        assert!(notes.is_empty(), "{notes:?}");
        assert_eq!(reg.provider_names(), ["alibaba", "alimarket", "tencent"]);
        let route = reg.route(CheckKind::Mobile3, None).unwrap();
        let names: Vec<_> = route.iter().map(|e| e.provider.name()).collect();
        assert_eq!(names, ["tencent", "alibaba", "alimarket"]);
        for v in VENDORS {
            let p = &reg.get(v.name).unwrap().provider;
            for check in CheckKind::ALL {
                assert_eq!(p.action(check), v.action(check), "{} {check}", v.name);
            }
        }
        let e = reg.route(CheckKind::Id2, Some("tencent")).unwrap_err();
        assert!(e.to_string().contains("not available"), "{e}");
        let e = reg.route(CheckKind::Id2, Some("nosuch")).unwrap_err();
        assert!(e.to_string().contains("unknown"), "{e}");
    }

    #[test]
    fn a_refusal_names_the_provider_its_code_and_the_credential_keys_never_values() {
        let r = Refused {
            kind: crate::check::Refusal::Credentials,
            code: "AuthFailure.SignatureFailure".into(),
        };
        assert_eq!(
            refusal_message("tencent", &r),
            "provider tencent: credentials refused (AuthFailure.SignatureFailure) — check \
             providers.tencent.secret_id/secret_key (KYCQ__PROVIDERS__TENCENT__SECRET_ID, \
             KYCQ__PROVIDERS__TENCENT__SECRET_KEY)"
        );
        assert_eq!(
            credential_keys("alibaba"),
            "providers.alibaba.access_key_id/access_key_secret \
             (KYCQ__PROVIDERS__ALIBABA__ACCESS_KEY_ID, KYCQ__PROVIDERS__ALIBABA__ACCESS_KEY_SECRET)"
        );
        let quota = Refused {
            kind: crate::check::Refusal::Quota,
            code: "Quota Exhausted".into(),
        };
        let m = refusal_message("alimarket", &quota);
        assert!(m.starts_with("provider alimarket: quota used up or expired (Quota Exhausted) — buy or renew the package of the account of providers.alimarket.app_code (KYCQ__PROVIDERS__ALIMARKET__APP_CODE)"), "{m}");
    }

    #[test]
    fn a_snapshot_shows_each_circuit_with_why_and_the_refusal_in_force() {
        use crate::check::outcome::{Classification, OutcomeClass, ProviderReply};
        let mut env = Vec::new();
        for v in VENDORS {
            for (k, val) in v.sandbox_credentials {
                env.push((
                    format!("KYCQ__PROVIDERS__{}__{}", v.name, k).to_uppercase(),
                    val.to_string(),
                ));
            }
        }
        let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        let (reg, _) = Registry::from_settings(&settings(&env)).unwrap();
        let t0 = Instant::now();
        let snap = reg.snapshot(t0);
        assert_eq!(snap.len(), 3);
        assert!(snap
            .iter()
            .all(|p| p.circuit == CircuitStatus::Closed && p.why.is_none() && p.refusal.is_none()));

        let mut reply = ProviderReply::transport(
            Classification::refused(crate::check::Refusal::Account),
            Some(200),
            "arrears of 张三",
        );
        reply.provider_code = Some("961".into());
        let e = reg.get("tencent").unwrap();
        e.note_reply(&reply);
        e.circuit
            .trip(t0, Duration::from_millis(30_500), TripReason::of(&reply));
        let snap = reg.snapshot(t0);
        let t = snap.iter().find(|p| p.provider == "tencent").unwrap();
        assert_eq!(t.circuit, CircuitStatus::Open);
        assert_eq!(t.closes_in_secs, Some(31));
        assert!(t.open_until.unwrap() > Utc::now() + chrono::Duration::seconds(29));
        let why = t.why.as_ref().unwrap();
        assert_eq!(
            (why.class, why.code.as_str(), why.refusal),
            (
                OutcomeClass::ProviderWide,
                "961",
                Some(crate::check::Refusal::Account)
            )
        );
        assert_eq!(t.refusal.as_ref().unwrap().code, "961");
        let json = serde_json::to_value(&snap).unwrap();
        assert!(!json.to_string().contains("张三"), "{json}");
        assert_eq!(json[2]["circuit"], "open");
        assert_eq!(json[2]["refusal"]["kind"], "account");
        assert_eq!(json[0]["circuit"], "closed");
        // Past the cool-down: closed, no why; the refusal stays until a final answer.
        let later = reg.snapshot(t0 + Duration::from_secs(31));
        let t = later.iter().find(|p| p.provider == "tencent").unwrap();
        assert_eq!(
            (t.circuit, t.closes_in_secs, t.open_until, &t.why),
            (CircuitStatus::Closed, None, None, &None)
        );
        assert!(t.refusal.is_some());
    }

    #[test]
    fn a_wrong_section_or_route_names_its_key() {
        let e = error(&[("KYCQ__ROUTES__ID2", "tencent")]);
        assert!(
            e.contains("routes.id2") && e.contains("cannot run id2"),
            "{e}"
        );
        let e = error(&[("KYCQ__ROUTES__MOBILE3", "tencent,nosuch")]);
        assert!(
            e.contains("routes.mobile3") && e.contains("unknown provider `nosuch`"),
            "{e}"
        );
        let e = error(&[("KYCQ__PROVIDERS__TENCENT__SECRET_ID", "AKID1")]);
        assert!(e.contains("KYCQ__PROVIDERS__TENCENT__SECRET_KEY"), "{e}");
        let e = error(&[("KYCQ__PROVIDERS__ALIBABA__ACCESS_KEY_SECRET", "s")]);
        assert!(e.contains("providers.alibaba.access_key_id"), "{e}");
        let e = error(&[("KYCQ__PROVIDERS__ALIBABA__PARAM_TYPE", "sha1")]);
        assert!(e.contains("providers.alibaba.param_type"), "{e}");
        let e = error(&[("KYCQ__PROVIDERS__TENCENT__SECRETKEY", "x")]);
        assert!(
            e.contains("providers.tencent") && e.contains("secretkey"),
            "{e}"
        );
        let e = error(&[
            (
                "KYCQ__PROVIDERS__NOSUCH__ENDPOINT",
                "https://nosuch.example",
            ),
            ("KYCQ__PROVIDERS__NOSUCH__CONNECT_TIMEOUT_MS", "1"),
            ("KYCQ__PROVIDERS__NOSUCH__TIMEOUT_MS", "1"),
            ("KYCQ__PROVIDERS__NOSUCH__RATE_PER_SEC", "1"),
            ("KYCQ__PROVIDERS__NOSUCH__BURST", "1"),
            ("KYCQ__PROVIDERS__NOSUCH__CIRCUIT_COOLDOWN_SECS", "1"),
        ]);
        assert!(
            e.contains("providers.nosuch") && e.contains("unknown provider"),
            "{e}"
        );
    }
}
