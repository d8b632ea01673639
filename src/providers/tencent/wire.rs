//! Tencent FaceID wire types: the `PhoneVerification` request body and the API 3.0 response
//! envelope.

use serde::{Deserialize, Serialize};

/// `PhoneVerification` request body (plaintext mode; the encrypted fields are not used).
#[derive(Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct PhoneVerificationRequest<'a> {
    /// ID card number.
    pub id_card: &'a str,
    /// Name.
    pub name: &'a str,
    /// Mobile number.
    pub phone: &'a str,
}

/// `{"Response": {...}}`.
#[derive(Debug, Deserialize)]
pub struct Envelope {
    /// The response object.
    #[serde(rename = "Response")]
    pub response: Response,
}

/// Either a result or an error, always with a RequestId.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct Response {
    /// Present on failure.
    pub error: Option<ApiError>,
    /// Result code (a string such as `"0"` or `"-4"`).
    pub result: Option<String>,
    /// Business description.
    pub description: Option<String>,
    /// Carrier, Chinese or English spelling.
    pub isp: Option<String>,
    /// Detailed mismatch reason (detailed mode only).
    pub result_detail: Option<String>,
    /// Tencent's request id.
    pub request_id: Option<String>,
}

/// `Response.Error`.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct ApiError {
    /// e.g. `AuthFailure.SignatureFailure`.
    pub code: String,
    /// Human text.
    pub message: Option<String>,
}
