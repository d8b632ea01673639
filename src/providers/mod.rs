//! The provider seam: every vendor answers through [`Provider`], and every answer is classified
//! once, as data ([`Classification`], defined with the domain in `check::outcome`): the
//! vendor's code tables first (`<vendor>/codes.rs`), the shared [`outcome`] table second.
//!
//! # Layout
//!
//! - [`vendor`]: the [`vendor::Vendor`] descriptor; [`registry`]: the one list of vendors, the
//!   configured providers, their circuits and the routes.
//! - One folder per vendor, the same files with the same roles: `mod.rs` (the descriptor),
//!   `settings.rs` (its keys of `[providers.<name>]`, typed; the builder), `request.rs` (the
//!   call built and signed — pure, time and nonce passed in), `client.rs` (IO only: send through
//!   [`http`]), `answer.rs` (what came back, classified — pure), `wire.rs` (serde types),
//!   `codes.rs` (the vendor's code tables as data, in the one [`codes::CodeRow`] shape).
//! - [`outcome`]: transport failures and HTTP statuses, one table for every vendor;
//!   [`codes`]: the one row shape of every vendor's code tables; [`http`]: the one HTTP exchange; [`signing`]: pure request signing; [`circuit`].

pub mod alibaba;
pub mod alimarket;
pub mod circuit;
pub mod codes;
pub(crate) mod http;
pub mod outcome;
pub mod registry;
pub mod signing;
pub mod tencent;
pub mod vendor;

use std::fmt;

use crate::check::{CheckKind, CheckRequest};
use async_trait::async_trait;

pub use crate::check::outcome::{Classification, OutcomeClass, ProviderReply, Refusal};
/// A whole answer (status, headers, body): what a vendor's `answer::classify` reads.
pub use http::Answer;
/// What lets a call leave once its connection is ready ([`Provider::call_when`]).
pub use http::{Gate, Open};
pub use registry::Registry;

/// One identity-verification vendor.
#[async_trait]
pub trait Provider: Send + Sync + 'static {
    /// Its name in config, requests and results.
    fn name(&self) -> &'static str;
    /// The vendor API that runs `check` (journal and limiter key), or None when unsupported.
    fn action(&self, check: CheckKind) -> Option<&'static str>;
    /// Make one call and classify its outcome. Never panics, never returns an error: every
    /// failure is a classified reply.
    async fn call(&self, request: &CheckRequest) -> ProviderReply {
        self.call_when(request, &http::Open).await
    }
    /// [`Provider::call`], written only once a connection is ready and `gate` lets it go (the
    /// rate-limit slot): a refusal is a transient, unbilled "not sent" reply.
    async fn call_when(&self, request: &CheckRequest, gate: &dyn Gate) -> ProviderReply;
    /// A call that tests the credentials and is never billed (`kycq doctor`): signed and sent
    /// exactly as a check is, without personal data, with a parameter missing so that the
    /// vendor, once it has accepted the credentials, refuses the request with an error that is
    /// not charged. Never panics; every failure is a classified reply.
    async fn probe(&self) -> Probe;
}

/// What a [`Provider::probe`] came back with.
#[derive(Clone, Debug)]
pub struct Probe {
    /// The classified reply.
    pub reply: ProviderReply,
    /// The vendor's code that answers the probe when the credentials are accepted (the
    /// reply's `provider_code`).
    pub accepted: &'static str,
}

impl fmt::Debug for dyn Provider {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Provider({})", self.name())
    }
}

/// `host[:port]` exactly as the HTTP client sends it in the `Host` header (signed by vendors).
pub fn host_header(url: &url::Url) -> String {
    let host = url.host_str().unwrap_or_default();
    match url.port() {
        Some(p) => format!("{host}:{p}"),
        None => host.to_owned(),
    }
}
