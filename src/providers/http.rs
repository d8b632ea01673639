//! The HTTP exchange every vendor client uses: one client configuration (timeouts, no
//! redirects) and one `exchange` that returns a whole answer or a reply classified by the shared
//! transport rows ([`super::outcome`]).

use std::time::Duration;

use bytes::Bytes;
use reqwest::header::HeaderMap;

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

/// The HTTP client of the vendor `name` from its settings: connect and whole-call timeouts, and
/// redirects never followed (following one could send a billed request twice).
pub fn client(name: &str, s: &ProviderSettings) -> Result<reqwest::Client, ConfigError> {
    reqwest::Client::builder()
        .connect_timeout(Duration::from_millis(s.connect_timeout_ms))
        .timeout(Duration::from_millis(s.timeout_ms))
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .map_err(|e| invalid(&format!("providers.{name}"), e.to_string()))
}

/// Send `request` and read the whole answer. A failure is classified by the shared transport
/// rows: never sent → transient; sent and no status, or a status and a body cut off → billing
/// unknown. `request_id_header` names the vendor's request-id header, kept on a cut-off answer
/// for support tickets.
pub async fn exchange(
    http: &reqwest::Client,
    request: reqwest::Request,
    request_id_header: Option<&str>,
) -> Result<Answer, ProviderReply> {
    let response = http.execute(request).await.map_err(transport_failure)?;
    let status = response.status().as_u16();
    let headers = response.headers().clone();
    match response.bytes().await {
        Ok(body) => Ok(Answer {
            status,
            headers,
            body,
        }),
        Err(e) => {
            let row = outcome::transport(Transport::CutOff);
            let mut reply = ProviderReply::transport(
                row.classification,
                Some(status),
                format!("HTTP {status}: {}: {}", row.meaning, error_chain(e)),
            );
            reply.provider_request_id = request_id_header.and_then(|h| header_text(&headers, h));
            Err(reply)
        }
    }
}

/// Which transport failure a reqwest error before any status line is. Only a failure to connect
/// (or to build the request) is known not to have been sent; anything else may have reached
/// the vendor.
pub fn failure_of(e: &reqwest::Error) -> Transport {
    if e.is_connect() || e.is_builder() {
        Transport::NotSent
    } else {
        Transport::SentNoAnswer
    }
}

/// A reqwest error before any status line, classified.
pub fn transport_failure(e: reqwest::Error) -> ProviderReply {
    let row = outcome::transport(failure_of(&e));
    ProviderReply::transport(
        row.classification,
        None,
        format!("{}: {}", row.meaning, error_chain(e)),
    )
}

/// The error and its causes on one line, without the URL (its query can hold personal data).
fn error_chain(e: reqwest::Error) -> String {
    let e = e.without_url();
    let mut s = e.to_string();
    let mut cur = std::error::Error::source(&e);
    while let Some(c) = cur {
        s.push_str(": ");
        s.push_str(&c.to_string());
        cur = c.source();
    }
    s
}
