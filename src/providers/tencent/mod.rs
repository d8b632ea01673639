//! Tencent Cloud FaceID (international): `PhoneVerification` for the `mobile3` check.

pub mod client;
pub mod codes;
pub mod wire;

pub use client::TencentProvider;

/// API service name (TC3 credential scope).
pub const SERVICE: &str = "faceid";
/// API version.
pub const VERSION: &str = "2018-03-01";
/// The one action kycq uses.
pub const ACTION: &str = "PhoneVerification";
