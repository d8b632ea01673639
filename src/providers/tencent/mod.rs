//! Tencent Cloud FaceID (international): `PhoneVerification` for the `mobile3` check.

pub mod answer;
pub mod client;
pub mod codes;
pub mod request;
pub mod settings;
pub mod wire;

pub use client::TencentProvider;

use crate::check::CheckKind;
use crate::providers::vendor::{SandboxRoute, Vendor};

/// The vendor, as the registry lists it.
pub const VENDOR: Vendor = Vendor {
    name: "tencent",
    title: "Tencent Cloud FaceID (international), PhoneVerification",
    apis: &[(CheckKind::Mobile3, ACTION)],
    build: settings::build,
    code_tables: &[
        ("results", codes::RESULT_CODES),
        ("result details", codes::RESULT_DETAILS),
        ("errors", codes::ERROR_CODES),
    ],
    sandbox_credentials: &[
        ("secret_id", SANDBOX_SECRET_ID),
        ("secret_key", SANDBOX_SECRET_KEY),
    ],
    sandbox_route: SandboxRoute {
        path: "/",
        header: Some("x-tc-action"),
    },
};

/// The SecretId `kycq sandbox` accepts by default (documented, local, not a credential).
pub const SANDBOX_SECRET_ID: &str = "AKIDkycqsandbox";
/// The SecretKey `kycq sandbox` accepts by default (documented, local, not a credential).
pub const SANDBOX_SECRET_KEY: &str = "kycq-sandbox-tencent-key";

/// API service name (TC3 credential scope).
pub const SERVICE: &str = "faceid";
/// API version.
pub const VERSION: &str = "2018-03-01";
/// The one action kycq uses.
pub const ACTION: &str = "PhoneVerification";
