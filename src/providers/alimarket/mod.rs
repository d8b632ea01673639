//! Alibaba Cloud Marketplace "运营商3要素V2" (operator three-factor V2): `POST /mobile3/check` for the `mobile3` check, authenticated by AppCode.
//!
//! Sources: the product page (<http://market.aliyun.com/detail/cmapi00063272.html>) and the
//! API Gateway error codes (<https://help.aliyun.com/document_detail/43906.html>).
//!
//! - [`settings`]: the section's own key (the AppCode) and the registry's builder.
//! - [`wire`]: the JSON request body and the response envelope (lenient about number/string).
//! - [`codes`]: `data.result` values and the API gateway's error messages and codes, as data.
//! - [`request`]: the call, built (pure); [`answer`]: what came back, classified (pure).
//! - [`client`]: [`AlimarketProvider`], which sends the call (IO only).

pub mod answer;
pub mod client;
pub mod codes;
pub mod request;
pub mod settings;
pub mod wire;

pub use client::AlimarketProvider;

use crate::check::CheckKind;
use crate::providers::vendor::{SandboxRoute, Vendor};

/// The vendor, as the registry lists it.
pub const VENDOR: Vendor = Vendor {
    name: PROVIDER,
    title: "Alibaba Cloud Marketplace operator three-factor V2 (AppCode)",
    apis: &[(CheckKind::Mobile3, ACTION)],
    build: settings::build,
    code_tables: &[
        ("results", codes::RESULTS),
        ("gateway messages", codes::GATEWAY_MESSAGES),
        ("gateway codes", codes::GATEWAY_CODES),
    ],
    sandbox_credentials: &[("app_code", SANDBOX_APP_CODE)],
    sandbox_route: SandboxRoute {
        path: PATH,
        header: None,
    },
};

/// The AppCode `kycq sandbox` accepts by default (documented, local, not a credential).
pub const SANDBOX_APP_CODE: &str = "kycq-sandbox-appcode";

/// The provider's name in config, requests and results.
pub const PROVIDER: &str = "alimarket";
/// The one API kycq uses (journal and limiter key): the path under the endpoint, without `/`.
pub const ACTION: &str = "mobile3/check";
/// The request path under the configured endpoint.
pub const PATH: &str = "/mobile3/check";
