//! kycq's provider sandbox: one loopback HTTP server that speaks the vendors' own protocols, answers documented test identities deterministically and records every call.
//!
//! # Layout
//! - [`scenarios`]: provider-agnostic scenarios chosen from the ID number, documented test identities, carriers.
//! - [`http_fault`]: the HTTP-layer answers every vendor gives alike (scenarios 934–937).
//! - [`ledger`]: every call received (refused ones too), hashed subject keys only, per-identity counters.
//! - [`tencent`]: Tencent FaceID `PhoneVerification` at `POST /` (told apart by `X-TC-Action`).
//! - [`alibaba`]: Alibaba cloudauth-intl (three APIs) at `POST /` (told apart by `x-acs-action`).
//! - [`alimarket`]: the Marketplace `POST /mobile3/check` (AppCode; gateway errors as headers).
//!
//! Each vendor is a folder with the same roles: `mod.rs` (its `handle` entry), `auth.rs`
//! (authentication), `params.rs` (the request's parameters), `answers.rs` (scenario and vendor
//! code → answer, rendering) and `tests.rs`, whose scaffolding is the shared `testing` module.
//!
//! The vendor routes come from the registry: each vendor's `sandbox_route` (its path, and on a
//! shared path the header that tells it apart), served by its handler in `HANDLERS`.
//!
//! Operator endpoints: `GET /_sandbox/ledger`, `POST /_sandbox/reset`, `GET /_sandbox/identities`.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::{ConnectInfo, State};
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use chrono::Utc;
use futures::future::BoxFuture;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use secrecy::{ExposeSecret, SecretString};
use serde::Serialize;
use tokio_util::sync::CancellationToken;

use crate::check::mask::{mask_id_number, mask_mobile, mask_name};
use crate::configuration::ProvidersSettings;
use crate::providers::{self, registry::VENDORS};

pub mod alibaba;
pub mod alimarket;
pub mod http_fault;
pub mod ledger;
pub mod scenarios;
pub mod tencent;
#[cfg(test)]
pub(crate) mod testing;
pub mod tls;

pub use http_fault::HttpFault;
pub use ledger::{Ledger, LedgerEntry};
pub use scenarios::{Scenario, TestIdentity};
pub use tls::TlsFiles;

/// The credentials the sandbox accepts: vendor name → (the vendor's configuration key, e.g.
/// `secret_key`, → value).
pub type Credentials = BTreeMap<String, BTreeMap<String, SecretString>>;

/// How the sandbox runs.
#[derive(Clone)]
pub struct SandboxSettings {
    /// Address to listen on; port 0 picks a free port.
    pub listen: SocketAddr,
    /// The credentials accepted, per vendor of the registry ([`credentials_from`]; by default
    /// every vendor's documented local ones, its descriptor's `sandbox_credentials`).
    pub credentials: Credentials,
    /// 0..1: share of calls answered with an injected transient fault (busy or HTTP 500), unbilled.
    pub fault_rate: f64,
    /// Added to every provider answer.
    pub latency: Duration,
    /// Up to this much more, drawn uniformly per answer (a vendor's latency varies).
    pub latency_jitter: Duration,
    /// Serve HTTPS with these files instead of plain HTTP.
    pub tls: Option<TlsFiles>,
    /// With `tls`: how long each new connection waits before its handshake is answered (the
    /// round trips of a handshake with a distant vendor).
    pub handshake_delay: Duration,
    /// How long the `Slow` scenario waits before answering (default 30 s).
    pub slow_delay: Duration,
    /// Seed of the fault-injection RNG.
    pub seed: u64,
    /// A token that opens the operator endpoints (`/_sandbox/…`) to callers that are not on
    /// loopback (`Authorization: Bearer <token>`); None: loopback only.
    pub operator_token: Option<SecretString>,
}

impl SandboxSettings {
    /// The credential `key` accepted for `vendor` (e.g. `("tencent", "secret_key")`); empty
    /// when none is set.
    pub fn credential(&self, vendor: &str, key: &str) -> &str {
        self.credentials
            .get(vendor)
            .and_then(|keys| keys.get(key))
            .map_or("", |value| value.expose_secret())
    }

    /// The same settings accepting `value` as `vendor`'s credential `key`.
    pub fn with_credential(mut self, vendor: &str, key: &str, value: &str) -> Self {
        self.credentials
            .entry(vendor.to_owned())
            .or_default()
            .insert(key.to_owned(), SecretString::from(value));
        self
    }
}

/// The credentials the sandbox accepts for each vendor of the registry: every key of the
/// vendor's `sandbox_credentials`, with the value of `[providers.<name>]` where one is set
/// there, else the documented local default.
pub fn credentials_from(providers: &ProvidersSettings) -> Credentials {
    VENDORS
        .iter()
        .map(|vendor| {
            let section = providers.get(vendor.name);
            let keys = vendor
                .sandbox_credentials
                .iter()
                .map(|(key, default)| {
                    let configured = section
                        .and_then(|s| s.vendor.0.get(*key))
                        .and_then(|value| value.clone().into_string().ok())
                        .filter(|value| !value.trim().is_empty());
                    let value = configured.unwrap_or_else(|| (*default).to_owned());
                    ((*key).to_owned(), SecretString::from(value))
                })
                .collect();
            (vendor.name.to_owned(), keys)
        })
        .collect()
}

impl Default for SandboxSettings {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 8970)),
            credentials: credentials_from(&ProvidersSettings::default()),
            fault_rate: 0.0,
            latency: Duration::ZERO,
            latency_jitter: Duration::ZERO,
            tls: None,
            handshake_delay: Duration::ZERO,
            slow_delay: Duration::from_secs(30),
            seed: 0,
            operator_token: None,
        }
    }
}

impl std::fmt::Debug for SandboxSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Key names only: every value may be a secret.
        let credentials: BTreeMap<&str, BTreeMap<&str, &str>> = self
            .credentials
            .iter()
            .map(|(vendor, keys)| {
                let keys = keys.keys().map(|k| (k.as_str(), "[REDACTED]")).collect();
                (vendor.as_str(), keys)
            })
            .collect();
        f.debug_struct("SandboxSettings")
            .field("listen", &self.listen)
            .field("credentials", &credentials)
            .field("fault_rate", &self.fault_rate)
            .field("latency", &self.latency)
            .field("latency_jitter", &self.latency_jitter)
            .field("tls", &self.tls)
            .field("handshake_delay", &self.handshake_delay)
            .field("slow_delay", &self.slow_delay)
            .field("seed", &self.seed)
            .field(
                "operator_token",
                &self.operator_token.as_ref().map(|_| "[REDACTED]"),
            )
            .finish()
    }
}

/// A started sandbox.
pub struct RunningSandbox {
    /// The address actually bound (useful with port 0).
    pub addr: SocketAddr,
    /// The call ledger, shared with the server.
    pub ledger: Ledger,
    /// The server task; ends after the shutdown token is cancelled and open calls are answered.
    pub task: tokio::task::JoinHandle<std::io::Result<()>>,
}

impl std::fmt::Debug for RunningSandbox {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RunningSandbox")
            .field("addr", &self.addr)
            .field("ledger", &self.ledger)
            .finish_non_exhaustive()
    }
}

/// A transient fault injected instead of the scenario's answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum InjectedFault {
    /// The vendor's "busy" answer (Tencent `-11`).
    Busy,
    /// HTTP 500.
    Http500,
}

/// What every handler shares.
pub(crate) struct AppState {
    pub(crate) settings: SandboxSettings,
    pub(crate) ledger: Ledger,
    pub(crate) alibaba_nonces: alibaba::NonceCache,
    faults: Mutex<StdRng>,
    shutdown: CancellationToken,
}

impl AppState {
    /// Draws whether this call gets an injected fault, and which one.
    pub(crate) fn draw_fault(&self) -> Option<InjectedFault> {
        let rate = self.settings.fault_rate;
        if rate.is_nan() || rate <= 0.0 {
            return None;
        }
        let mut rng = self
            .faults
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        if !rng.random_bool(rate.min(1.0)) {
            return None;
        }
        Some(if rng.random_bool(0.5) {
            InjectedFault::Busy
        } else {
            InjectedFault::Http500
        })
    }

    /// Log one recorded call (masked fields only) and, for the slow scenario, wait before
    /// answering. The call is recorded first: a caller that gives up while waiting was still
    /// billed.
    pub(crate) async fn after_record(
        &self,
        entry: &LedgerEntry,
        name: Option<&str>,
        mobile: Option<&str>,
        slow: bool,
    ) {
        tracing::debug!(
            provider = entry.provider.as_str(),
            action = entry.action.as_str(),
            seq = entry.seq,
            id_number = entry.id_number_masked.as_deref().unwrap_or(""),
            name = %name.map(mask_name).unwrap_or_default(),
            mobile = %mobile.map(mask_mobile).unwrap_or_default(),
            http_status = entry.http_status,
            code = entry.code.as_str(),
            billed = entry.billed,
            slow,
            "sandbox call"
        );
        if slow {
            self.pause(self.settings.slow_delay).await;
        }
    }

    /// Sleeps for `delay`, cut short by shutdown so a draining server is not held up.
    pub(crate) async fn pause(&self, delay: Duration) {
        if delay.is_zero() {
            return;
        }
        tokio::select! {
            () = tokio::time::sleep(delay) => {}
            () = self.shutdown.cancelled() => {}
        }
    }
}

/// What the sandbox listens with.
enum Listening {
    Plain(tokio::net::TcpListener),
    Tls(tls::TlsListener),
}

/// Binds `settings.listen` and serves until `shutdown` is cancelled.
pub async fn start(
    settings: SandboxSettings,
    shutdown: CancellationToken,
) -> std::io::Result<RunningSandbox> {
    let listener = tokio::net::TcpListener::bind(settings.listen).await?;
    let addr = listener.local_addr()?;
    let listener = match &settings.tls {
        Some(files) => Listening::Tls(tls::TlsListener::new(
            listener,
            tls::acceptor(files)?,
            settings.handshake_delay,
            shutdown.clone(),
        )?),
        None => Listening::Plain(listener),
    };
    let ledger = Ledger::new();
    tracing::info!(%addr, settings = ?settings, "provider sandbox listening");
    let state = Arc::new(AppState {
        faults: Mutex::new(StdRng::seed_from_u64(settings.seed)),
        settings,
        ledger: ledger.clone(),
        alibaba_nonces: Default::default(),
        shutdown: shutdown.clone(),
    });
    let service = router(state).into_make_service_with_connect_info::<SocketAddr>();
    let stopped = async move { shutdown.cancelled().await };
    let task = match listener {
        Listening::Plain(l) => tokio::spawn(async move {
            axum::serve(l, service)
                .with_graceful_shutdown(stopped)
                .await
        }),
        // `tap_io` gives the listener the `SocketAddr` connect info the handlers read.
        Listening::Tls(l) => tokio::spawn(async move {
            axum::serve(axum::serve::ListenerExt::tap_io(l, |_| {}), service)
                .with_graceful_shutdown(stopped)
                .await
        }),
    };
    Ok(RunningSandbox { addr, ledger, task })
}

/// A vendor's handler: serves one call (decides, records it in the ledger, answers).
pub(crate) type Handler =
    for<'a> fn(&'a AppState, &'a Uri, &'a HeaderMap, &'a [u8]) -> BoxFuture<'a, Response>;

/// Every vendor's handler, by the vendor's name in the registry.
pub(crate) const HANDLERS: &[(&str, Handler)] = &[
    (
        providers::tencent::VENDOR.name,
        |state, uri, headers, body| Box::pin(tencent::handle(state, uri, headers, body)),
    ),
    (
        providers::alibaba::VENDOR.name,
        |state, uri, headers, body| Box::pin(alibaba::handle(state, uri, headers, body)),
    ),
    (
        providers::alimarket::VENDOR.name,
        |state, uri, headers, body| Box::pin(alimarket::handle(state, uri, headers, body)),
    ),
];

/// The handler of a vendor, by name.
fn handler(vendor: &str) -> Option<Handler> {
    HANDLERS
        .iter()
        .find(|(name, _)| *name == vendor)
        .map(|(_, handler)| *handler)
}

/// The vendors served on one path: each with the header that tells it apart (None: the path is
/// its alone), those with a header first, in registry order.
type PathRoutes = Arc<[(Option<&'static str>, Handler)]>;

/// Every vendor's route of the registry, grouped by path.
fn vendor_routes() -> BTreeMap<&'static str, PathRoutes> {
    let mut by_path: BTreeMap<&'static str, Vec<(Option<&'static str>, Handler)>> = BTreeMap::new();
    for vendor in VENDORS {
        let route = vendor.sandbox_route;
        let handler = handler(vendor.name)
            .unwrap_or_else(|| panic!("the sandbox has no handler for {}", vendor.name));
        by_path
            .entry(route.path)
            .or_default()
            .push((route.header, handler));
    }
    by_path
        .into_iter()
        .map(|(path, mut vendors)| {
            vendors.sort_by_key(|(header, _)| header.is_none());
            (path, vendors.into())
        })
        .collect()
}

/// What the sandbox serves, for people: each vendor of the registry with its route.
pub fn served() -> String {
    VENDORS
        .iter()
        .map(|v| match v.sandbox_route.header {
            Some(header) => format!("{} at POST {} ({header})", v.name, v.sandbox_route.path),
            None => format!("{} at POST {}", v.name, v.sandbox_route.path),
        })
        .collect::<Vec<_>>()
        .join(", ")
}

/// The sandbox's routes: one per distinct vendor path of the registry, and the operator's.
fn router(state: Arc<AppState>) -> Router {
    let mut router = Router::new();
    for (path, vendors) in vendor_routes() {
        router = router.route(
            path,
            post(
                move |State(state): State<Arc<AppState>>,
                      uri: Uri,
                      headers: HeaderMap,
                      body: Bytes| {
                    let vendors = Arc::clone(&vendors);
                    async move { dispatch(&state, path, &vendors, &uri, &headers, &body).await }
                },
            ),
        );
    }
    router
        .route("/_sandbox/ledger", get(get_ledger))
        .route("/_sandbox/reset", post(post_reset))
        .route("/_sandbox/identities", get(get_identities))
        .fallback(not_found)
        .with_state(state)
}

/// `POST path`: the first vendor of the path whose header the call carries (or whose path it
/// is alone) serves it; none → unroutable.
async fn dispatch(
    state: &AppState,
    path: &str,
    vendors: &[(Option<&'static str>, Handler)],
    uri: &Uri,
    headers: &HeaderMap,
    body: &[u8],
) -> Response {
    let chosen = vendors
        .iter()
        .find(|(header, _)| header.is_none_or(|h| headers.contains_key(h)));
    let Some((_, handler)) = chosen else {
        return unroutable(state, "unknown", &format!("POST {path}"));
    };
    let response = handler(state, uri, headers, body).await;
    let jitter = state.settings.latency_jitter.mul_f64(rand::random::<f64>());
    state.pause(state.settings.latency + jitter).await;
    response
}

/// A header's value when it is present and UTF-8.
pub(crate) fn header_str<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get(name)
        .and_then(|v| std::str::from_utf8(v.as_bytes()).ok())
}

/// Any other method or path.
async fn not_found(State(state): State<Arc<AppState>>, method: Method, uri: Uri) -> Response {
    unroutable(&state, "unknown", &format!("{method} {}", uri.path()))
}

/// Records and answers a call the sandbox does not serve.
fn unroutable(state: &AppState, provider: &str, action: &str) -> Response {
    state.ledger.record(ledger::CallRecord {
        at: Utc::now(),
        provider,
        action,
        id_number: None,
        http_status: StatusCode::NOT_FOUND.as_u16(),
        code: "NotFound",
        billed: false,
    });
    tracing::debug!(provider, action, "sandbox call not served");
    (
        StatusCode::NOT_FOUND,
        Json(serde_json::json!({
            "error": "NotFound",
            "message": format!("the sandbox does not serve {provider} {action}"),
        })),
    )
        .into_response()
}

/// Whether a caller may use the operator endpoints: on loopback, or with the configured token.
fn operator_allowed(settings: &SandboxSettings, peer: SocketAddr, headers: &HeaderMap) -> bool {
    if peer.ip().is_loopback() {
        return true;
    }
    let Some(token) = &settings.operator_token else {
        return false;
    };
    let sent = headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .unwrap_or_default();
    crate::providers::signing::constant_time_eq(sent.as_bytes(), token.expose_secret().as_bytes())
}

fn operator_refused() -> Response {
    (
        StatusCode::FORBIDDEN,
        Json(serde_json::json!({
            "error": "Forbidden",
            "message": "the sandbox's operator endpoints answer loopback, or the operator token",
        })),
    )
        .into_response()
}

async fn get_ledger(
    State(state): State<Arc<AppState>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
) -> Response {
    if !operator_allowed(&state.settings, peer, &headers) {
        return operator_refused();
    }
    Json(state.ledger.entries()).into_response()
}

async fn post_reset(
    State(state): State<Arc<AppState>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
) -> Response {
    if !operator_allowed(&state.settings, peer, &headers) {
        return operator_refused();
    }
    let cleared = state.ledger.len();
    state.ledger.clear();
    Json(serde_json::json!({ "cleared": cleared })).into_response()
}

/// A documented identity as the HTTP endpoint shows it: masked only.
#[derive(Debug, Serialize)]
struct MaskedIdentity {
    scenario: Scenario,
    code: &'static str,
    description: &'static str,
    name: String,
    id_number: String,
    mobile: String,
}

async fn get_identities() -> Json<Vec<MaskedIdentity>> {
    Json(
        scenarios::documented()
            .into_iter()
            .map(|identity| MaskedIdentity {
                scenario: identity.scenario,
                code: identity.scenario.code(),
                description: identity.scenario.description(),
                name: mask_name(&identity.name),
                id_number: mask_id_number(&identity.id_number),
                mobile: mask_mobile(&identity.mobile),
            })
            .collect(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_redacts_every_credential() {
        let settings = SandboxSettings::default().with_credential("tencent", "secret_id", "AKIDx");
        let shown = format!("{settings:?}");
        assert!(shown.contains("REDACTED"), "{shown}");
        assert!(!shown.contains("AKIDx"), "{shown}");
        for v in VENDORS {
            assert!(shown.contains(v.name), "{shown}");
            for (key, value) in v.sandbox_credentials {
                assert!(shown.contains(key), "{shown}");
                assert!(!shown.contains(value), "{value} in {shown}");
            }
        }
    }

    #[test]
    fn defaults_are_the_documented_ones() {
        let settings = SandboxSettings::default();
        assert_eq!(settings.listen.to_string(), "127.0.0.1:8970");
        assert_eq!(
            settings.credential("tencent", "secret_key"),
            "kycq-sandbox-tencent-key"
        );
        for v in VENDORS {
            for (key, value) in v.sandbox_credentials {
                assert_eq!(settings.credential(v.name, key), *value, "{} {key}", v.name);
            }
        }
        assert_eq!(settings.credential("tencent", "no_such_key"), "");
        assert_eq!(settings.credential("acme", "secret_key"), "");
        assert_eq!(settings.slow_delay, Duration::from_secs(30));
        assert_eq!(settings.fault_rate, 0.0);
    }

    #[test]
    fn configured_provider_credentials_replace_the_defaults() {
        use crate::providers::{alibaba, tencent};
        // The shipped configuration sets `secret_id = ""` and `access_key_id = ""`: not set.
        let settings = testing::settings_with(&[
            ("KYCQ__PROVIDERS__TENCENT__SECRET_KEY", "configured-key"),
            ("KYCQ__PROVIDERS__ALIMARKET__APP_CODE", "configured-code"),
            ("KYCQ__PROVIDERS__ALIBABA__ACCESS_KEY_SECRET", " "),
        ]);
        let c = SandboxSettings {
            credentials: credentials_from(&settings.providers),
            ..SandboxSettings::default()
        };
        assert_eq!(c.credential("tencent", "secret_key"), "configured-key");
        assert_eq!(
            c.credential("tencent", "secret_id"),
            tencent::SANDBOX_SECRET_ID
        );
        assert_eq!(c.credential("alimarket", "app_code"), "configured-code");
        assert_eq!(
            c.credential("alibaba", "access_key_id"),
            alibaba::SANDBOX_ACCESS_KEY_ID
        );
        assert_eq!(
            c.credential("alibaba", "access_key_secret"),
            alibaba::SANDBOX_ACCESS_KEY_SECRET
        );
        // Every vendor of the registry, and only its documented keys.
        let vendors: Vec<&str> = c.credentials.keys().map(String::as_str).collect();
        let mut names = crate::providers::registry::vendor_names();
        names.sort_unstable();
        assert_eq!(vendors, names);
        let shown = format!("{c:?}");
        assert!(!shown.contains("configured-key") && !shown.contains("configured-code"));
    }

    #[test]
    fn every_vendor_has_one_handler_and_a_route_of_its_own() {
        for v in VENDORS {
            let n = HANDLERS.iter().filter(|(name, _)| *name == v.name).count();
            assert_eq!(n, 1, "handlers of {}", v.name);
        }
        assert_eq!(
            HANDLERS.len(),
            VENDORS.len(),
            "a handler for a vendor not in the registry"
        );
        let mut seen = std::collections::HashSet::new();
        for v in VENDORS {
            let route = v.sandbox_route;
            assert!(
                seen.insert((route.path, route.header)),
                "{} shares {route:?} with another vendor",
                v.name
            );
            assert!(route.path.starts_with('/') && !route.path.starts_with("/_sandbox"));
        }
        // The routes as served: "/" is shared and told apart by headers.
        let routes = vendor_routes();
        assert_eq!(
            routes.keys().copied().collect::<Vec<_>>(),
            ["/", "/mobile3/check"]
        );
        let headers: Vec<_> = routes["/"].iter().map(|(h, _)| *h).collect();
        assert_eq!(headers, [Some("x-tc-action"), Some("x-acs-action")]);
        assert_eq!(
            served(),
            "tencent at POST / (x-tc-action), alibaba at POST / (x-acs-action), \
             alimarket at POST /mobile3/check"
        );
    }

    #[tokio::test]
    async fn other_vendors_and_paths_get_404_json_and_are_recorded() {
        let sandbox = testing::spawn().await;
        let no_headers: [(&str, &str); 0] = [];
        let bare = sandbox.post_raw("/", no_headers, Vec::new()).await;
        assert_eq!(bare.status().as_u16(), 404);
        let market = sandbox
            .post_raw("/mobile3/other", no_headers, Vec::new())
            .await;
        assert_eq!(market.status().as_u16(), 404);
        let entries = sandbox.running.ledger.entries();
        let seen: Vec<(&str, &str, u16)> = entries
            .iter()
            .map(|e| (e.provider.as_str(), e.action.as_str(), e.http_status))
            .collect();
        assert_eq!(
            seen,
            [
                ("unknown", "POST /", 404),
                ("unknown", "POST /mobile3/other", 404)
            ]
        );
    }

    fn state(fault_rate: f64, seed: u64) -> AppState {
        AppState {
            settings: SandboxSettings {
                fault_rate,
                seed,
                ..SandboxSettings::default()
            },
            ledger: Ledger::new(),
            alibaba_nonces: Default::default(),
            faults: Mutex::new(StdRng::seed_from_u64(seed)),
            shutdown: CancellationToken::new(),
        }
    }

    #[test]
    fn fault_injection_is_seeded_and_bounded() {
        let draws = |s: &AppState| (0..200).map(|_| s.draw_fault()).collect::<Vec<_>>();
        assert!(draws(&state(0.0, 1)).iter().all(Option::is_none));
        assert!(draws(&state(f64::NAN, 1)).iter().all(Option::is_none));
        let all = draws(&state(1.0, 1));
        assert!(all.iter().all(Option::is_some));
        assert!(all.contains(&Some(InjectedFault::Busy)));
        assert!(all.contains(&Some(InjectedFault::Http500)));
        assert_eq!(draws(&state(0.3, 7)), draws(&state(0.3, 7)));
        let some = draws(&state(0.3, 7)).iter().filter(|d| d.is_some()).count();
        assert!((20..=100).contains(&some), "{some}");
        assert!(draws(&state(5.0, 1)).iter().all(Option::is_some));
    }

    #[tokio::test]
    async fn pause_is_cut_short_by_shutdown() {
        let state = state(0.0, 0);
        state.shutdown.cancel();
        tokio::time::timeout(
            Duration::from_secs(5),
            state.pause(Duration::from_secs(3600)),
        )
        .await
        .expect("shutdown ends the pause");
    }

    #[test]
    fn operator_endpoints_answer_loopback_or_the_token_only() {
        use axum::http::HeaderValue;
        let loopback: SocketAddr = "127.0.0.1:5000".parse().unwrap();
        let v6: SocketAddr = "[::1]:5000".parse().unwrap();
        let other: SocketAddr = "192.0.2.7:5000".parse().unwrap(); // TEST-NET-1, never dialled
        let none = HeaderMap::new();
        let open = SandboxSettings::default();
        assert!(operator_allowed(&open, loopback, &none));
        assert!(operator_allowed(&open, v6, &none));
        assert!(!operator_allowed(&open, other, &none));
        let with_token = SandboxSettings {
            operator_token: Some(SecretString::from("op-token")),
            ..SandboxSettings::default()
        };
        let mut good = HeaderMap::new();
        good.insert("authorization", HeaderValue::from_static("Bearer op-token"));
        let mut bad = HeaderMap::new();
        bad.insert("authorization", HeaderValue::from_static("Bearer op-tokeX"));
        assert!(operator_allowed(&with_token, other, &good));
        assert!(!operator_allowed(&with_token, other, &bad));
        assert!(!operator_allowed(&with_token, other, &none));
        assert!(!format!("{with_token:?}").contains("op-token"));
    }
}
