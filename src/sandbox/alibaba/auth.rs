//! Alibaba's authentication: the ACS3-HMAC-SHA256 signature recomputed from the received call, the date window and the nonce cache.

use std::collections::{HashSet, VecDeque};
use std::sync::Mutex;

use axum::http::HeaderMap;
use chrono::{DateTime, Utc};

use super::Answer;
use crate::providers::signing::{acs3, constant_time_eq, sha256_hex};
use crate::sandbox::header_str;

/// How far `x-acs-date` may be from the server's clock, either way.
pub const MAX_CLOCK_SKEW_SECS: i64 = 15 * 60;
/// How many used nonces are remembered (oldest forgotten first), besides the time window.
pub const NONCE_MEMORY: usize = 200_000;

/// Used nonces in arrival order (with when), and the same set for look-ups.
type Nonces = (VecDeque<(i64, String)>, HashSet<String>);

/// Nonces of correctly signed calls, remembered for twice the clock-skew window.
#[derive(Default)]
pub(crate) struct NonceCache(Mutex<Nonces>);

impl NonceCache {
    /// Records `nonce` at `now` (Unix seconds); false when it was used already.
    pub(crate) fn fresh(&self, nonce: &str, now: i64) -> bool {
        let mut guard = self.0.lock().unwrap_or_else(|p| p.into_inner());
        let (order, seen) = &mut *guard;
        while let Some((at, _)) = order.front() {
            if now - *at <= 2 * MAX_CLOCK_SKEW_SECS && order.len() < NONCE_MEMORY {
                break;
            }
            let (_, old) = order.pop_front().expect("front exists");
            seen.remove(&old);
        }
        if !seen.insert(nonce.to_owned()) {
            return false;
        }
        order.push_back((now, nonce.to_owned()));
        true
    }
}

fn header_values(headers: &HeaderMap, name: &str) -> Vec<String> {
    headers
        .get_all(name)
        .iter()
        .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
        .collect()
}

/// A call as received, for verification.
#[derive(Clone, Copy)]
pub struct Received<'a> {
    /// HTTP method.
    pub method: &'a str,
    /// Path (`/`).
    pub path: &'a str,
    /// The raw query string, as sent (without `?`).
    pub raw_query: &'a str,
    /// Every header.
    pub headers: &'a HeaderMap,
    /// The exact body bytes.
    pub body: &'a [u8],
}

/// Checks the ACS3 signature of a received call exactly as the vendor does (everything up to
/// and excluding the nonce's freshness). `now` is the server's clock. Returns the nonce.
pub fn authenticate(
    call: &Received<'_>,
    access_key_id: &str,
    access_key_secret: &str,
    now: DateTime<Utc>,
) -> Result<String, Answer> {
    let Received {
        method,
        path,
        raw_query,
        headers,
        body,
    } = *call;
    let auth = header_str(headers, "authorization")
        .and_then(acs3::parse_authorization)
        .ok_or_else(|| Answer::error("IncompleteSignature"))?;
    let date = header_str(headers, "x-acs-date")
        .and_then(acs3::parse_date)
        .ok_or_else(|| Answer::error("InvalidTimeStamp.Format"))?;
    if (now - date).num_seconds().abs() > MAX_CLOCK_SKEW_SECS {
        return Err(Answer::error("InvalidTimeStamp.Expired"));
    }
    if auth.access_key_id != access_key_id {
        return Err(Answer::error("InvalidAccessKeyId.NotFound"));
    }
    // Every header the vendor requires signed, and every host / content-type / x-acs-* sent.
    let required = [
        "host",
        "x-acs-action",
        "x-acs-version",
        "x-acs-date",
        "x-acs-signature-nonce",
        "x-acs-content-sha256",
    ];
    let sent = headers
        .keys()
        .map(|k| k.as_str())
        .filter(|k| acs3::is_signed_header(k));
    if required
        .into_iter()
        .chain(sent)
        .any(|h| !auth.signed_headers.iter().any(|s| s == h))
    {
        return Err(Answer::error("IncompleteSignature"));
    }
    let mismatch = |string_to_sign: &str| Answer::Error {
        code: "SignatureDoesNotMatch",
        detail: Some(string_to_sign.replace('\n', "#")),
    };
    let mut signed = Vec::with_capacity(auth.signed_headers.len());
    for name in &auth.signed_headers {
        let values = header_values(headers, name);
        if values.is_empty() {
            return Err(mismatch(""));
        }
        signed.extend(values.into_iter().map(|v| (name.clone(), v)));
    }
    let hashed = header_str(headers, "x-acs-content-sha256").unwrap_or_default();
    if !constant_time_eq(hashed.trim().as_bytes(), sha256_hex(body).as_bytes()) {
        return Err(mismatch(""));
    }
    let query = acs3::parse_query(raw_query).ok_or_else(|| mismatch(""))?;
    let (request, _) = acs3::canonical_request(
        method,
        path,
        &acs3::canonical_query(&query),
        &signed,
        hashed.trim(),
    );
    let to_sign = acs3::string_to_sign(&request);
    let expected = acs3::signature(access_key_secret, &to_sign);
    if !constant_time_eq(expected.as_bytes(), auth.signature.as_bytes()) {
        return Err(mismatch(&to_sign));
    }
    Ok(header_str(headers, "x-acs-signature-nonce")
        .unwrap_or_default()
        .to_owned())
}
