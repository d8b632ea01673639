//! Tencent's authentication: the TC3-HMAC-SHA256 `Authorization` header, timestamp, SecretId and signature, checked as the vendor does.

use axum::http::HeaderMap;

use super::Answer;
use crate::providers::signing::{constant_time_eq, sha256_hex, tc3};
use crate::sandbox::header_str;

/// The TC3 service name of FaceID.
pub const SERVICE: &str = "faceid";
/// How far `X-TC-Timestamp` may be from the server's clock, either way.
pub const MAX_CLOCK_SKEW_SECS: i64 = 300;

fn signature_failure() -> Answer {
    Answer::error(
        "AuthFailure.SignatureFailure",
        "The provided credentials could not be validated. Please check your signature is correct.",
    )
}

/// Checks 1–4: the `Authorization` header, the timestamp, the SecretId and the TC3 signature
/// recomputed from the received headers, query and exact body bytes. `now` is the server's
/// clock in Unix seconds.
pub fn authenticate(
    headers: &HeaderMap,
    query: &str,
    body: &[u8],
    secret_id: &str,
    secret_key: &str,
    now: i64,
) -> Result<(), Answer> {
    let auth = header_str(headers, "authorization")
        .and_then(tc3::parse_authorization)
        .ok_or_else(|| {
            Answer::error(
                "AuthFailure.InvalidAuthorization",
                "The Authorization header is missing or not in the TC3-HMAC-SHA256 format.",
            )
        })?;

    let timestamp = header_str(headers, "x-tc-timestamp")
        .and_then(|t| t.trim().parse::<i64>().ok())
        .filter(|t| now.abs_diff(*t) <= MAX_CLOCK_SKEW_SECS.unsigned_abs())
        .ok_or_else(|| {
            Answer::error(
                "AuthFailure.SignatureExpire",
                format!(
                    "Signature expired: X-TC-Timestamp must be within {MAX_CLOCK_SKEW_SECS} seconds of the server time ({now})."
                ),
            )
        })?;

    if auth.secret_id != secret_id {
        return Err(Answer::error(
            "AuthFailure.SecretIdNotFound",
            "The SecretId is not found, please ensure that your SecretId is correct.",
        ));
    }

    let signed: Vec<String> = auth
        .signed_headers
        .iter()
        .map(|h| h.to_ascii_lowercase())
        .collect();
    if !signed.iter().any(|h| h == "content-type")
        || !signed.iter().any(|h| h == "host")
        || auth.service != SERVICE
        || auth.date != tc3::utc_date(timestamp)
    {
        return Err(signature_failure());
    }
    let mut received = Vec::with_capacity(signed.len());
    for name in &signed {
        let value = header_str(headers, name).ok_or_else(signature_failure)?;
        received.push((name.clone(), value.to_owned()));
    }
    let (request, _) = tc3::canonical_request("POST", "/", query, &received, &sha256_hex(body));
    let to_sign = tc3::string_to_sign(timestamp, &auth.credential_scope(), &request);
    let expected = tc3::signature(secret_key, &auth.date, &auth.service, &to_sign);
    if constant_time_eq(expected.as_bytes(), auth.signature.as_bytes()) {
        Ok(())
    } else {
        Err(signature_failure())
    }
}
