//! Building a Marketplace call (pure): `POST <endpoint>/mobile3/check` with the JSON body and
//! `Authorization: APPCODE <code>`.

use reqwest::header::{HeaderValue, ACCEPT, AUTHORIZATION, CONTENT_TYPE};
use reqwest::{Method, Request};
use secrecy::{ExposeSecret, SecretString};

use super::{wire, PATH, VENDOR};
use crate::check::{CheckRequest, ReasonCode};
use crate::configuration::{invalid, ConfigError};
use crate::providers::{Classification, ProviderReply};

/// The body's media type (**[inferred]** charset: the page lists only "POST JSON").
pub const JSON_UTF8: &str = "application/json; charset=UTF-8";

/// Where calls go and with which AppCode.
pub struct Target {
    /// The endpoint with `/mobile3/check` appended.
    pub url: url::Url,
    /// The AppCode.
    pub app_code: SecretString,
}

impl std::fmt::Debug for Target {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Target")
            .field("url", &self.url.as_str())
            .field("app_code", &"[REDACTED]")
            .finish()
    }
}

/// The HTTP request for one check (no network). Errors only when the subject has no
/// mobile or the request cannot be built; both are answered as classified replies.
pub fn build(target: &Target, request: &CheckRequest) -> Result<Request, ProviderReply> {
    let s = &request.subject;
    let Some(mobile) = s.mobile.as_ref() else {
        return Err(ProviderReply::transport(
            Classification::invalid_field(ReasonCode::InvalidMobile),
            None,
            "mobile is required for mobile3/check",
        ));
    };
    let body = serde_json::to_vec(&wire::Mobile3CheckRequest {
        name: s.name.expose(),
        mobile: mobile.expose(),
        id_card: s.id_number.expose(),
    })
    .expect("request body serialises");
    with_app_code(target, body)
}

/// The call of `kycq doctor`: the same request with an empty body (see the client's `probe`).
pub fn probe(target: &Target) -> Result<Request, ProviderReply> {
    with_app_code(target, Vec::new())
}

fn with_app_code(target: &Target, body: Vec<u8>) -> Result<Request, ProviderReply> {
    let mut r = Request::new(Method::POST, target.url.clone());
    // The one place the AppCode leaves its SecretString.
    let authorization = HeaderValue::from_str(&format!(
        "APPCODE {}",
        target.app_code.expose_secret().trim()
    ))
    .map_err(|_| {
        ProviderReply::transport(
            Classification::invalid_field(ReasonCode::InvalidRequest),
            None,
            "the AppCode cannot be sent as an HTTP header",
        )
    })?;
    let h = r.headers_mut();
    h.insert(AUTHORIZATION, authorization);
    h.insert(CONTENT_TYPE, HeaderValue::from_static(JSON_UTF8));
    h.insert(ACCEPT, HeaderValue::from_static("application/json"));
    *r.body_mut() = Some(body.into());
    Ok(r)
}

/// The endpoint joined with [`PATH`]; `http://` is allowed (sandbox, staging).
pub fn endpoint_url(endpoint: &str) -> Result<url::Url, ConfigError> {
    let bad = |e: String| invalid(&format!("{}.endpoint", VENDOR.section()), e);
    let base = url::Url::parse(endpoint.trim()).map_err(|e| bad(e.to_string()))?;
    if !matches!(base.scheme(), "http" | "https") || base.host_str().is_none() {
        return Err(bad("an http(s) URL with a host is required".into()));
    }
    let joined = format!("{}{PATH}", base.as_str().trim_end_matches('/'));
    url::Url::parse(&joined).map_err(|e| bad(e.to_string()))
}
