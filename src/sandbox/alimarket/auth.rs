//! The Marketplace gateway's authentication: the `Authorization: APPCODE <code>` header, compared in constant time.

use axum::http::{header, HeaderMap};

use super::answers::{gateway, Answer, INVALID_APPCODE};
use crate::providers::signing::constant_time_eq;

/// Check 1: the AppCode, compared in constant time.
pub fn authenticate(headers: &HeaderMap, app_code: &str) -> Result<(), Answer> {
    let given = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| std::str::from_utf8(v.as_bytes()).ok())
        .and_then(|v| v.strip_prefix("APPCODE "))
        .filter(|code| !code.is_empty() && !code.contains(char::is_whitespace))
        .ok_or(gateway(400, INVALID_APPCODE))?;
    if constant_time_eq(given.as_bytes(), app_code.as_bytes()) {
        Ok(())
    } else {
        Err(gateway(403, "Unauthorized"))
    }
}
