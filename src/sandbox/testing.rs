//! The scaffolding every vendor's sandbox tests share: a sandbox on a free loopback port (stopped when dropped), raw calls, the ledger, and kycq's own clients pointed at it.

use std::path::Path;
use std::time::Duration;

use axum::http::{HeaderMap, HeaderValue};
use serde_json::Value;
use tokio_util::sync::CancellationToken;

use super::scenarios::{Scenario, TestIdentity};
use super::{start, LedgerEntry, RunningSandbox, SandboxSettings};
use crate::check::mask::mask_id_number;
use crate::check::{decode, CheckKind, CheckRequest, Decoded};
use crate::configuration::{ProviderSettings, Settings};

/// A running sandbox with an HTTP client.
pub(crate) struct TestSandbox {
    pub running: RunningSandbox,
    pub shutdown: CancellationToken,
    pub client: reqwest::Client,
}

impl Drop for TestSandbox {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

/// Start with `settings` on a free port.
pub(crate) async fn spawn_with(settings: SandboxSettings) -> TestSandbox {
    let shutdown = CancellationToken::new();
    let running = start(
        SandboxSettings {
            listen: "127.0.0.1:0".parse().unwrap(),
            ..settings
        },
        shutdown.clone(),
    )
    .await
    .expect("sandbox starts");
    TestSandbox {
        running,
        shutdown,
        client: reqwest::Client::new(),
    }
}

/// Start with the defaults and a short slow delay.
pub(crate) async fn spawn() -> TestSandbox {
    spawn_with(SandboxSettings {
        slow_delay: Duration::from_millis(20),
        ..SandboxSettings::default()
    })
    .await
}

/// Start with every call answered by an injected fault (`fault_rate` 1), drawn from `seed`.
pub(crate) async fn spawn_faulty(seed: u64) -> TestSandbox {
    spawn_with(SandboxSettings {
        fault_rate: 1.0,
        seed,
        ..SandboxSettings::default()
    })
    .await
}

/// Start with the slow scenario held back for an hour (until the client gives up or shutdown).
pub(crate) async fn spawn_slow() -> TestSandbox {
    spawn_with(SandboxSettings {
        slow_delay: Duration::from_secs(3600),
        ..SandboxSettings::default()
    })
    .await
}

impl TestSandbox {
    /// `http://<addr><path>`; `path` starts with `/` and may carry a query.
    pub(crate) fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.running.addr)
    }

    /// The last call the ledger recorded.
    pub(crate) fn last_entry(&self) -> LedgerEntry {
        self.running
            .ledger
            .entries()
            .pop()
            .expect("a call recorded")
    }

    /// Asserts the last call the ledger recorded: (HTTP status, code, billed); `what` names the
    /// case. Returns the entry.
    pub(crate) fn assert_last(&self, want: (u16, &str, bool), what: &str) -> LedgerEntry {
        let entry = self.last_entry();
        let got = (entry.http_status, entry.code.as_str(), entry.billed);
        assert_eq!(got, want, "{what}");
        entry
    }

    /// `POST path` with exactly these headers and body bytes; the response as it arrives (the
    /// body not read yet).
    pub(crate) async fn post_raw<K: AsRef<str>, V: AsRef<str>>(
        &self,
        path: &str,
        headers: impl IntoIterator<Item = (K, V)>,
        body: Vec<u8>,
    ) -> reqwest::Response {
        let mut request = self.client.post(self.url(path));
        for (name, value) in headers {
            request = request.header(name.as_ref(), value.as_ref());
        }
        request.body(body).send().await.expect("sandbox answers")
    }

    /// `GET path` (an operator endpoint): the body text.
    pub(crate) async fn get_text(&self, path: &str) -> String {
        let response = self.client.get(self.url(path)).send().await.unwrap();
        response.text().await.unwrap()
    }

    /// `POST path` without a body (an operator endpoint): the JSON answer.
    pub(crate) async fn post_empty(&self, path: &str) -> Value {
        let response = self.client.post(self.url(path)).send().await.unwrap();
        response.json().await.unwrap()
    }

    /// Asserts that the ledger, over HTTP and in memory, holds no plaintext ID number, mobile or
    /// name of `people`, and each one's masked ID number. Returns the entries read over HTTP.
    pub(crate) async fn assert_ledger_hides(&self, people: &[TestIdentity]) -> Vec<Value> {
        let over_http = self.get_text("/_sandbox/ledger").await;
        let in_memory = serde_json::to_string(&self.running.ledger.entries()).unwrap();
        for text in [&over_http, &in_memory] {
            for who in people {
                assert!(!text.contains(&who.id_number), "ID number leaked");
                assert!(!text.contains(&who.mobile), "mobile leaked");
                assert!(!text.contains(&who.name), "name leaked");
                assert!(text.contains(&mask_id_number(&who.id_number)));
            }
        }
        serde_json::from_str(&over_http).unwrap()
    }

    /// `[providers.<vendor>]` from the shipped configuration, pointed at this sandbox, with
    /// these keys of the section set (e.g. `("app_code", …)`, `("timeout_ms", …)`).
    pub(crate) fn provider_section(
        &self,
        vendor: &str,
        keys: &[(&str, String)],
    ) -> ProviderSettings {
        let var = |key: &str| format!("KYCQ__PROVIDERS__{vendor}__{key}").to_uppercase();
        let mut env = vec![(var("endpoint"), self.url(""))];
        env.extend(keys.iter().map(|(k, v)| (var(k), v.clone())));
        let settings = settings_with(&env);
        settings.providers.get(vendor).expect("a section").clone()
    }
}

/// The scenarios that misbehave on an identity's first call only.
pub(crate) const ONCE: [Scenario; 4] = [
    Scenario::BusyOnce,
    Scenario::ThrottledOnce,
    Scenario::Http500Once,
    Scenario::Http429Once,
];

/// A header map of these (lower-case) names and values, e.g. a captured request's.
pub(crate) fn header_map(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
    let mut headers = HeaderMap::new();
    for (name, value) in pairs {
        headers.insert(*name, HeaderValue::from_static(value));
    }
    headers
}

/// Status and body text of a response; a body that cannot be read (a cut-off answer) reads as
/// `<body error: …>`, which no JSON check accepts.
pub(crate) async fn status_and_text(response: reqwest::Response) -> (u16, String) {
    let status = response.status().as_u16();
    let text = response
        .text()
        .await
        .unwrap_or_else(|e| format!("<body error: {e}>"));
    (status, text)
}

/// The shipped configuration (`config/`) with these environment variables.
pub(crate) fn settings_with<K: AsRef<str>, V: AsRef<str>>(env: &[(K, V)]) -> Settings {
    let env = env
        .iter()
        .map(|(k, v)| (k.as_ref().to_owned(), v.as_ref().to_owned()))
        .collect();
    Settings::load_with(Path::new("config"), None, Some(env)).expect("settings")
}

/// A valid kycq request for `check` about `who`, with a validity period and scene code (taken
/// by the checks that use them).
pub(crate) fn check_request(
    check: CheckKind,
    who: &TestIdentity,
    request_id: &str,
) -> CheckRequest {
    let json = serde_json::json!({
        "request_id": request_id, "check": check.as_str(), "name": who.name,
        "id_number": who.id_number, "mobile": who.mobile,
        "validity_start": "20201001", "validity_end": "20301001",
        "scene_code": "kycq_test",
    });
    let today = chrono::NaiveDate::from_ymd_opt(2026, 11, 23).unwrap();
    match decode(json.to_string().as_bytes(), today).unwrap() {
        Decoded::Valid(r) => r,
        Decoded::Rejected(r) => panic!("rejected: {}", r.reason),
    }
}
