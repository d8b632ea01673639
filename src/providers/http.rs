//! The HTTP exchange every vendor client uses: kycq's own HTTP/1.1 connections ([`Client`]:
//! timeouts, no redirects) and one `exchange` that waits for a ready connection, then for the
//! call's [`Gate`] (its rate-limit slot), writes the request at once and returns a whole answer
//! or a reply classified by the shared transport rows ([`super::outcome`]).
//!
//! Why not a client library's pool: the vendor's limit counts calls when they arrive, and a
//! slot only bounds them if the call leaves when its slot comes. With a library's pool a call
//! whose slot has come may still wait for a new connection (TCP, TLS: a few round trips to
//! the vendor), then leave together with calls whose slots came later. Here connecting happens
//! before the slot is taken.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http1;
use hyper_rustls::{HttpsConnector, HttpsConnectorBuilder};
use hyper_util::client::legacy::connect::HttpConnector;
use reqwest::header::HeaderMap;
use tokio::time::Instant;
use tower_service::Service;

use super::outcome::{self, Transport};
use super::ProviderReply;
use crate::configuration::{invalid, ConfigError, ProviderSettings};

/// An answer that arrived whole.
#[derive(Debug)]
pub struct Answer {
    /// The HTTP status.
    pub status: u16,
    /// The response headers.
    pub headers: HeaderMap,
    /// The whole body.
    pub body: Bytes,
}

impl Answer {
    /// A header's value as trimmed text, if present and not empty.
    pub fn header(&self, name: &str) -> Option<String> {
        header_text(&self.headers, name)
    }
}

/// A header's value as trimmed text, if present and not empty.
pub fn header_text(headers: &HeaderMap, name: &str) -> Option<String> {
    headers
        .get(name)
        .map(|v| String::from_utf8_lossy(v.as_bytes()).trim().to_owned())
        .filter(|v| !v.is_empty())
}

/// How long an idle connection is kept for the next call: below the idle timeouts vendors'
/// front ends use, so a kept connection is rarely one the vendor is closing.
const IDLE_FOR: std::time::Duration = Duration::from_secs(30);
/// Idle connections kept per origin.
const MAX_IDLE: usize = 64;

/// A vendor's HTTP/1.1 connections, held by kycq itself rather than inside a client library:
/// a call first gets a connection that is ready (connected, TLS done, idle), then passes its
/// [`Gate`] (the rate-limit slot), then is written at once. Connecting never delays a call
/// past its slot. No redirect is ever followed (following one could send a billed request
/// twice). Cloning shares the connections.
#[derive(Clone)]
pub struct Client {
    pool: Arc<Pool>,
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client")
            .field("connect_timeout", &self.pool.connect_timeout)
            .field("timeout", &self.pool.timeout)
            .finish_non_exhaustive()
    }
}

type Sender = http1::SendRequest<Full<Bytes>>;

struct Pool {
    connector: HttpsConnector<HttpConnector>,
    connect_timeout: Duration,
    timeout: Duration,
    idle: Mutex<HashMap<String, Vec<(Sender, Instant)>>>,
}

/// What decides, once a connection is ready, whether the call is written now.
#[async_trait]
pub trait Gate: Send + Sync {
    /// `Ok`: write the request now. `Err(why)`: it is not sent (a transient, unbilled reply
    /// saying why).
    async fn pass(&self) -> Result<(), String>;
}

/// The gate that always lets the call go (the credentials probe, tests).
#[derive(Clone, Copy, Debug, Default)]
pub struct Open;

#[async_trait]
impl Gate for Open {
    async fn pass(&self) -> Result<(), String> {
        Ok(())
    }
}

/// The HTTP client of the vendor `name` from its settings: a connect timeout (TCP and TLS,
/// before the call's slot) and a call timeout (from writing the request to the end of the
/// answer). TLS trusts the Mozilla root store (webpki-roots) and the certificates of
/// `ca_file`, when set (a private CA, a TLS-inspecting egress).
pub fn client(name: &str, s: &ProviderSettings) -> Result<Client, ConfigError> {
    let connect_timeout = Duration::from_millis(s.connect_timeout_ms);
    let mut tcp = HttpConnector::new();
    tcp.enforce_http(false);
    tcp.set_nodelay(true);
    tcp.set_connect_timeout(Some(connect_timeout));
    let tls = tls_config(s.ca_file.as_deref())
        .map_err(|e| invalid(&format!("providers.{name}.ca_file"), e))?;
    let connector = HttpsConnectorBuilder::new()
        .with_tls_config(tls)
        .https_or_http()
        .enable_http1()
        .wrap_connector(tcp);
    Ok(Client {
        pool: Arc::new(Pool {
            connector,
            connect_timeout,
            timeout: Duration::from_millis(s.timeout_ms),
            idle: Mutex::new(HashMap::new()),
        }),
    })
}

/// TLS 1.2 and 1.3 (ring), trusting the Mozilla roots and every certificate in `ca_file`.
fn tls_config(ca_file: Option<&str>) -> Result<rustls::ClientConfig, String> {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::CertificateDer;
    let mut roots = rustls::RootCertStore::empty();
    roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
    if let Some(path) = ca_file.filter(|p| !p.trim().is_empty()) {
        let mut added = 0;
        for cert in CertificateDer::pem_file_iter(path).map_err(|e| format!("{path}: {e}"))? {
            let cert = cert.map_err(|e| format!("{path}: {e}"))?;
            roots
                .add(cert)
                .map_err(|e| format!("{path}: a certificate rustls refuses: {e}"))?;
            added += 1;
        }
        if added == 0 {
            return Err(format!("{path}: no PEM certificate in it"));
        }
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    Ok(rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_root_certificates(roots)
        .with_no_client_auth())
}

#[cfg(test)]
impl Client {
    /// Idle connections kept now, over every origin.
    pub fn idle_connections(&self) -> usize {
        self.pool.idle().values().map(Vec::len).sum()
    }
}

/// `scheme://host:port` of a URL: the connections' key.
fn origin(url: &url::Url) -> String {
    format!(
        "{}://{}:{}",
        url.scheme(),
        url.host_str().unwrap_or_default(),
        url.port_or_known_default().unwrap_or_default()
    )
}

impl Pool {
    fn idle(&self) -> std::sync::MutexGuard<'_, HashMap<String, Vec<(Sender, Instant)>>> {
        self.idle.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A connection to `url`'s origin ready for a request: an idle one still open, else a new
    /// one (connected, TLS done, handshaken). A failure here means nothing was sent.
    async fn ready(&self, url: &url::Url) -> Result<Sender, String> {
        let key = origin(url);
        loop {
            let idle = {
                let mut map = self.idle();
                let list = map.entry(key.clone()).or_default();
                list.retain(|(s, since)| !s.is_closed() && since.elapsed() < IDLE_FOR);
                list.pop()
            };
            let Some((mut sender, _)) = idle else { break };
            // An idle connection is ready at once, or closed (the vendor hung up meanwhile).
            if let Ok(Ok(())) =
                tokio::time::timeout(Duration::from_millis(100), sender.ready()).await
            {
                return Ok(sender);
            }
        }
        let uri: hyper::Uri = key.parse().map_err(|e| format!("{e}"))?;
        let connect = async {
            let io = self
                .connector
                .clone()
                .call(uri)
                .await
                .map_err(|e| format!("connect: {}", chain(&*e)))?;
            let (mut sender, conn) = http1::handshake(io)
                .await
                .map_err(|e| format!("handshake: {}", chain(&e)))?;
            tokio::spawn(async move {
                if let Err(e) = conn.await {
                    tracing::debug!(error = %chain(&e), "provider connection ended");
                }
            });
            sender
                .ready()
                .await
                .map_err(|e| format!("connection: {}", chain(&e)))?;
            Ok::<_, String>(sender)
        };
        match tokio::time::timeout(self.connect_timeout, connect).await {
            Ok(r) => r,
            Err(_) => Err(format!(
                "connect: no connection within {} ms",
                self.connect_timeout.as_millis()
            )),
        }
    }

    /// Keep a connection whose exchange ended whole for the next call.
    fn put_back(&self, url: &url::Url, sender: Sender) {
        if sender.is_closed() {
            return;
        }
        let mut map = self.idle();
        let list = map.entry(origin(url)).or_default();
        if list.len() < MAX_IDLE {
            list.push((sender, Instant::now()));
        }
    }
}

/// Send `request` once a connection is ready and `gate` lets it go, and read the whole answer.
/// A failure is classified by the shared transport rows: not connected, refused by the gate,
/// or given back by the connection before it was written → transient, unbilled; written and
/// no status, or a status and a body cut off → billing unknown. `request_id_header` names the
/// vendor's request-id header, kept on a cut-off answer for support tickets.
pub async fn exchange(
    http: &Client,
    request: reqwest::Request,
    gate: &dyn Gate,
    request_id_header: Option<&str>,
) -> Result<Answer, ProviderReply> {
    let not_sent = |why: String| {
        let row = outcome::transport(Transport::NotSent);
        ProviderReply::transport(row.classification, None, format!("{}: {why}", row.meaning))
    };
    let url = request.url().clone();
    let outgoing = to_hyper(request).map_err(not_sent)?;
    let pool = &http.pool;
    let mut sender = pool.ready(&url).await.map_err(not_sent)?;
    if let Err(why) = gate.pass().await {
        pool.put_back(&url, sender);
        let row = outcome::transport(Transport::NotSent);
        return Err(ProviderReply::transport(
            row.classification,
            None,
            format!("not sent: {why}"),
        ));
    }
    let deadline = Instant::now() + pool.timeout;
    let sent = tokio::time::timeout_at(deadline, sender.try_send_request(outgoing)).await;
    let response = match sent {
        Ok(Ok(r)) => r,
        // Given back unwritten: the connection closed first. Nothing left.
        Ok(Err(e)) if e.message().is_some() => {
            return Err(not_sent(format!("connection: {}", chain(e.error()))));
        }
        Ok(Err(e)) => return Err(sent_no_answer(&chain(e.error()))),
        Err(_) => {
            return Err(sent_no_answer(&format!(
                "no answer within {} ms",
                pool.timeout.as_millis()
            )))
        }
    };
    let status = response.status().as_u16();
    let headers = response.headers().clone();
    let body = match tokio::time::timeout_at(deadline, response.into_body().collect()).await {
        Ok(Ok(collected)) => collected.to_bytes(),
        Ok(Err(e)) => return Err(cut_off(status, &headers, request_id_header, &chain(&e))),
        Err(_) => {
            let why = format!("body not whole within {} ms", pool.timeout.as_millis());
            return Err(cut_off(status, &headers, request_id_header, &why));
        }
    };
    pool.put_back(&url, sender);
    Ok(Answer {
        status,
        headers,
        body,
    })
}

/// The request as hyper sends it on a connection of its origin: origin-form target, `Host`
/// from the URL (as the signatures saw it), the whole body.
fn to_hyper(request: reqwest::Request) -> Result<hyper::Request<Full<Bytes>>, String> {
    let url = request.url();
    let target = match url.query() {
        Some(q) => format!("{}?{q}", url.path()),
        None => url.path().to_owned(),
    };
    let body = match request.body() {
        None => Bytes::new(),
        Some(b) => Bytes::copy_from_slice(
            b.as_bytes()
                .ok_or_else(|| "the request body is a stream".to_owned())?,
        ),
    };
    let mut builder = hyper::Request::builder()
        .method(request.method().clone())
        .uri(target);
    let headers = builder.headers_mut().expect("a valid builder");
    headers.extend(request.headers().clone());
    if !headers.contains_key(reqwest::header::HOST) {
        let host = super::host_header(url);
        headers.insert(
            reqwest::header::HOST,
            host.parse().map_err(|_| format!("host {host:?}"))?,
        );
    }
    builder.body(Full::new(body)).map_err(|e| e.to_string())
}

fn sent_no_answer(why: &str) -> ProviderReply {
    let row = outcome::transport(Transport::SentNoAnswer);
    ProviderReply::transport(row.classification, None, format!("{}: {why}", row.meaning))
}

fn cut_off(
    status: u16,
    headers: &HeaderMap,
    request_id_header: Option<&str>,
    why: &str,
) -> ProviderReply {
    let row = outcome::transport(Transport::CutOff);
    let mut reply = ProviderReply::transport(
        row.classification,
        Some(status),
        format!("HTTP {status}: {}: {why}", row.meaning),
    );
    reply.provider_request_id = request_id_header.and_then(|h| header_text(headers, h));
    reply
}

/// An error and its causes on one line.
fn chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        s.push_str(": ");
        s.push_str(&c.to_string());
        cur = c.source();
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::check::CheckKind;
    use crate::providers::tencent::TencentProvider;
    use crate::providers::Provider;
    use crate::sandbox::scenarios::{identity, Scenario};
    use crate::sandbox::testing::{self, spawn};
    use std::sync::atomic::{AtomicUsize, Ordering};

    /// Counts its passes; refuses when told to.
    struct Counting {
        passes: AtomicUsize,
        refuse: bool,
    }

    #[async_trait]
    impl Gate for Counting {
        async fn pass(&self) -> Result<(), String> {
            self.passes.fetch_add(1, Ordering::SeqCst);
            if self.refuse {
                Err("the test said no".into())
            } else {
                Ok(())
            }
        }
    }

    fn credentials() -> [(&'static str, String); 2] {
        [
            (
                "secret_id",
                crate::providers::tencent::SANDBOX_SECRET_ID.to_owned(),
            ),
            (
                "secret_key",
                crate::providers::tencent::SANDBOX_SECRET_KEY.to_owned(),
            ),
        ]
    }

    #[test]
    fn the_request_is_sent_origin_form_with_the_host_the_signature_saw() {
        let mut r = reqwest::Request::new(
            reqwest::Method::POST,
            "http://127.0.0.1:8970/mobile3/check?x=1".parse().unwrap(),
        );
        *r.body_mut() = Some(b"{}".to_vec().into());
        let h = to_hyper(r).unwrap();
        assert_eq!(h.uri().to_string(), "/mobile3/check?x=1");
        assert_eq!(h.headers()["host"], "127.0.0.1:8970");
        assert_eq!(h.method(), "POST");
        let r = reqwest::Request::new(
            reqwest::Method::POST,
            "https://faceid.intl.tencentcloudapi.com/".parse().unwrap(),
        );
        let h = to_hyper(r).unwrap();
        assert_eq!(h.headers()["host"], "faceid.intl.tencentcloudapi.com");
        assert_eq!(
            origin(&"https://faceid.intl.tencentcloudapi.com/".parse().unwrap()),
            "https://faceid.intl.tencentcloudapi.com:443"
        );
    }

    #[test]
    fn a_ca_file_that_holds_no_certificate_is_refused_naming_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let empty = dir.path().join("empty.pem");
        std::fs::write(&empty, "not a certificate\n").unwrap();
        let e = tls_config(Some(empty.to_str().unwrap())).unwrap_err();
        assert!(
            e.contains("empty.pem") && e.contains("no PEM certificate"),
            "{e}"
        );
        let missing = dir.path().join("missing.pem");
        let e = tls_config(Some(missing.to_str().unwrap())).unwrap_err();
        assert!(e.contains("missing.pem"), "{e}");
        assert!(tls_config(None).is_ok());
        assert!(tls_config(Some("  ")).is_ok(), "blank is unset");
    }

    #[tokio::test]
    async fn a_refused_gate_sends_nothing_and_connections_are_kept_for_the_next_call() {
        let sandbox = spawn().await;
        let section = sandbox.provider_section("tencent", &credentials());
        let provider = TencentProvider::from_settings(&section).unwrap();
        let who = identity(Scenario::Match, 3);
        let req = testing::check_request(CheckKind::Mobile3, &who, "gate-test");

        let no = Counting {
            passes: AtomicUsize::new(0),
            refuse: true,
        };
        let reply = provider.call_when(&req, &no).await;
        assert_eq!(no.passes.load(Ordering::SeqCst), 1);
        assert_eq!(
            reply.classification.billed,
            crate::check::Billed::No,
            "{reply:?}"
        );
        assert!(
            reply.detail.contains("not sent: the test said no"),
            "{reply:?}"
        );
        assert_eq!(
            sandbox.running.ledger.len(),
            0,
            "nothing reached the vendor"
        );
        // The connection made ready for the refused call is kept, and used.
        assert_eq!(provider.http().idle_connections(), 1);

        let yes = Counting {
            passes: AtomicUsize::new(0),
            refuse: false,
        };
        for _ in 0..3 {
            let reply = provider.call_when(&req, &yes).await;
            assert_eq!(reply.http_status, Some(200), "{reply:?}");
        }
        assert_eq!(yes.passes.load(Ordering::SeqCst), 3);
        assert_eq!(sandbox.running.ledger.len(), 3);
        assert_eq!(
            provider.http().idle_connections(),
            1,
            "one connection, reused"
        );
    }

    #[tokio::test]
    async fn nothing_listening_is_not_sent_and_the_gate_is_never_asked() {
        let sandbox = spawn().await;
        let mut section = sandbox.provider_section("tencent", &credentials());
        // A port nobody listens on.
        let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        section.endpoint = format!("http://{}", closed.local_addr().unwrap());
        drop(closed);
        let provider = TencentProvider::from_settings(&section).unwrap();
        let req = testing::check_request(CheckKind::Mobile3, &identity(Scenario::Match, 4), "r");
        let gate = Counting {
            passes: AtomicUsize::new(0),
            refuse: false,
        };
        let reply = provider.call_when(&req, &gate).await;
        assert_eq!(
            gate.passes.load(Ordering::SeqCst),
            0,
            "no slot for a call that cannot leave"
        );
        assert_eq!(reply.classification.billed, crate::check::Billed::No);
        assert!(reply.detail.contains("connect"), "{reply:?}");
    }
}
