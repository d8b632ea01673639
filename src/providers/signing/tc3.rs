//! Tencent Cloud API 3.0 signing (TC3-HMAC-SHA256), used by the client to sign and by the sandbox to verify.
//!
//! The algorithm follows the vendor's "签名方法 v3" page and is pinned by the published vectors in
//! `shared/providers/SIGNING_VECTORS.md` §1 (T1–T3, T7) and the SDK capture in `SDK_CAPTURES.md`:
//!
//! ```text
//! CanonicalRequest = Method \n URI \n Query \n CanonicalHeaders \n SignedHeaders \n sha256hex(payload)
//! StringToSign     = "TC3-HMAC-SHA256" \n Timestamp \n <UTC date>/<service>/tc3_request \n sha256hex(CanonicalRequest)
//! kDate = HMAC("TC3"+SecretKey, date); kService = HMAC(kDate, service); kSigning = HMAC(kService, "tc3_request")
//! Signature = hex(HMAC(kSigning, StringToSign))
//! ```
//!
//! Canonical headers: the vendor's rule is "header key and value lower-cased and trimmed, sorted by
//! key" (T1 signs `x-tc-action:describeinstances` for the sent `DescribeInstances`). No function
//! here logs or formats a secret key.

use super::{hmac_sha256, sha256_hex};

/// The algorithm name that opens the string to sign and the `Authorization` header.
pub const ALGORITHM: &str = "TC3-HMAC-SHA256";

/// The fixed last element of a TC3 credential scope.
pub const TERMINATOR: &str = "tc3_request";

/// Builds the canonical request and the `;`-joined signed-header list.
///
/// Header names are trimmed and lower-cased, values trimmed and lower-cased (the vendor's rule),
/// and the headers sorted by name. `hashed_payload` is the lower-case hex SHA-256 of the exact
/// body bytes.
pub fn canonical_request(
    method: &str,
    canonical_uri: &str,
    canonical_query: &str,
    headers: &[(String, String)],
    hashed_payload: &str,
) -> (String, String) {
    let mut normalised: Vec<(String, String)> = headers
        .iter()
        .map(|(name, value)| {
            (
                name.trim().to_ascii_lowercase(),
                value.trim().to_lowercase(),
            )
        })
        .collect();
    normalised.sort_by(|a, b| a.0.cmp(&b.0));
    let canonical_headers: String = normalised
        .iter()
        .map(|(name, value)| format!("{name}:{value}\n"))
        .collect();
    let signed_headers = normalised
        .iter()
        .map(|(name, _)| name.as_str())
        .collect::<Vec<_>>()
        .join(";");
    let request = format!(
        "{method}\n{canonical_uri}\n{canonical_query}\n{canonical_headers}\n{signed_headers}\n{hashed_payload}"
    );
    (request, signed_headers)
}

/// The string to sign for a canonical request made at `timestamp` (Unix seconds).
pub fn string_to_sign(timestamp: i64, credential_scope: &str, canonical_request: &str) -> String {
    format!(
        "{ALGORITHM}\n{timestamp}\n{credential_scope}\n{}",
        sha256_hex(canonical_request.as_bytes())
    )
}

/// `<UTC date of timestamp>/<service>/tc3_request`.
pub fn credential_scope(timestamp: i64, service: &str) -> String {
    format!("{}/{service}/{TERMINATOR}", utc_date(timestamp))
}

/// The UTC calendar date (`YYYY-MM-DD`) of a Unix timestamp in seconds.
pub fn utc_date(timestamp: i64) -> String {
    let (year, month, day) = civil_from_days(timestamp.div_euclid(86_400));
    format!("{year:04}-{month:02}-{day:02}")
}

/// Days since 1970-01-01 to a proleptic Gregorian (year, month, day) (H. Hinnant's algorithm).
fn civil_from_days(days: i64) -> (i64, i64, i64) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1_460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

/// The derived signing key: `"TC3"+key` → date → service → `tc3_request`.
pub fn signing_key(secret_key: &str, date: &str, service: &str) -> [u8; 32] {
    let mut seed = Vec::with_capacity(3 + secret_key.len());
    seed.extend_from_slice(b"TC3");
    seed.extend_from_slice(secret_key.as_bytes());
    let k_date = hmac_sha256(&seed, date.as_bytes());
    seed.fill(0);
    let k_service = hmac_sha256(&k_date, service.as_bytes());
    hmac_sha256(&k_service, TERMINATOR.as_bytes())
}

/// Lower-case hex signature of `string_to_sign` under the key derived for `date` and `service`.
pub fn signature(secret_key: &str, date: &str, service: &str, string_to_sign: &str) -> String {
    let key = signing_key(secret_key, date, service);
    hex::encode(hmac_sha256(&key, string_to_sign.as_bytes()))
}

/// The `Authorization` header value.
pub fn authorization_header(
    secret_id: &str,
    credential_scope: &str,
    signed_headers: &str,
    signature: &str,
) -> String {
    format!(
        "{ALGORITHM} Credential={secret_id}/{credential_scope}, SignedHeaders={signed_headers}, Signature={signature}"
    )
}

/// What a client puts on a signed request: the `Authorization` header and the `X-TC-Timestamp` it was made for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SignedRequest {
    /// The `Authorization` header value.
    pub authorization: String,
    /// Unix seconds, sent as `X-TC-Timestamp`.
    pub timestamp: i64,
}

/// Signs a JSON `POST /` the way the official SDKs do: signed headers `content-type;host`,
/// empty query, the payload hashed exactly as it will be sent.
pub fn sign_json_post(
    secret_id: &str,
    secret_key: &str,
    host: &str,
    service: &str,
    content_type: &str,
    payload: &[u8],
    timestamp: i64,
) -> SignedRequest {
    let headers = [
        ("content-type".to_owned(), content_type.to_owned()),
        ("host".to_owned(), host.to_owned()),
    ];
    let (request, signed_headers) =
        canonical_request("POST", "/", "", &headers, &sha256_hex(payload));
    let scope = credential_scope(timestamp, service);
    let to_sign = string_to_sign(timestamp, &scope, &request);
    let sig = signature(secret_key, &utc_date(timestamp), service, &to_sign);
    SignedRequest {
        authorization: authorization_header(secret_id, &scope, &signed_headers, &sig),
        timestamp,
    }
}

/// A parsed TC3 `Authorization` header (no secret in it).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Authorization {
    /// The caller's SecretId.
    pub secret_id: String,
    /// The scope's date, `YYYY-MM-DD`.
    pub date: String,
    /// The scope's service, e.g. `faceid`.
    pub service: String,
    /// Signed header names, as listed.
    pub signed_headers: Vec<String>,
    /// The hex signature, as sent.
    pub signature: String,
}

impl Authorization {
    /// `<date>/<service>/tc3_request`.
    pub fn credential_scope(&self) -> String {
        format!("{}/{}/{TERMINATOR}", self.date, self.service)
    }
}

/// Parses `TC3-HMAC-SHA256 Credential=<id>/<date>/<service>/tc3_request, SignedHeaders=a;b, Signature=<hex>`.
///
/// Returns `None` for another algorithm, a missing, repeated or unknown component, or an empty value.
pub fn parse_authorization(header: &str) -> Option<Authorization> {
    let rest = header.trim().strip_prefix(ALGORITHM)?;
    if !rest.starts_with(' ') {
        return None;
    }
    let (mut credential, mut signed_headers, mut signature) = (None, None, None);
    for part in rest.split(',') {
        let (key, value) = part.trim().split_once('=')?;
        let slot = match key {
            "Credential" => &mut credential,
            "SignedHeaders" => &mut signed_headers,
            "Signature" => &mut signature,
            _ => return None,
        };
        if slot.is_some() || value.is_empty() {
            return None;
        }
        *slot = Some(value);
    }
    let mut scope = credential?.rsplitn(4, '/');
    let (terminator, service, date, secret_id) =
        (scope.next()?, scope.next()?, scope.next()?, scope.next()?);
    if terminator != TERMINATOR || [service, date, secret_id].iter().any(|s| s.is_empty()) {
        return None;
    }
    let signed_headers: Vec<String> = signed_headers?.split(';').map(str::to_owned).collect();
    if signed_headers.iter().any(String::is_empty) {
        return None;
    }
    Some(Authorization {
        secret_id: secret_id.to_owned(),
        date: date.to_owned(),
        service: service.to_owned(),
        signed_headers,
        signature: signature?.to_owned(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// T1–T3 payload (Python `json.dumps`, non-ASCII escaped as `\uXXXX`).
    const T1_PAYLOAD: &str =
        r#"{"Limit": 1, "Filters": [{"Values": ["\u672a\u547d\u540d"], "Name": "instance-name"}]}"#;
    const T1_TIMESTAMP: i64 = 1_551_113_065;
    const CVM_HOST: &str = "cvm.tencentcloudapi.com";
    const CT_UTF8: &str = "application/json; charset=utf-8";
    const STARS_KEY: &str = "********************************";
    const STARS_ID: &str = "AKID********************************";

    fn headers(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(n, v)| ((*n).to_owned(), (*v).to_owned()))
            .collect()
    }

    #[test]
    fn t1_every_intermediate() {
        assert_eq!(STARS_KEY.len(), 32);
        let hashed = sha256_hex(T1_PAYLOAD.as_bytes());
        assert_eq!(
            hashed,
            "35e9c5b0e3ae67532d3c9f17ead6c90222632e5b1ff7f6e89887f1398934f064"
        );
        // Sent with the action's own case and in another order: the rules normalise both.
        let sent = headers(&[
            ("X-TC-Action", "DescribeInstances"),
            ("Host", CVM_HOST),
            ("Content-Type", CT_UTF8),
        ]);
        let (request, signed) = canonical_request("POST", "/", "", &sent, &hashed);
        assert_eq!(
            request,
            "POST\n/\n\ncontent-type:application/json; charset=utf-8\nhost:cvm.tencentcloudapi.com\n\
             x-tc-action:describeinstances\n\ncontent-type;host;x-tc-action\n\
             35e9c5b0e3ae67532d3c9f17ead6c90222632e5b1ff7f6e89887f1398934f064"
        );
        assert_eq!(signed, "content-type;host;x-tc-action");
        assert_eq!(
            sha256_hex(request.as_bytes()),
            "7019a55be8395899b900fb5564e4200d984910f34794a27cb3fb7d10ff6a1e84"
        );
        let scope = credential_scope(T1_TIMESTAMP, "cvm");
        assert_eq!(scope, "2019-02-25/cvm/tc3_request");
        let to_sign = string_to_sign(T1_TIMESTAMP, &scope, &request);
        assert_eq!(
            to_sign,
            "TC3-HMAC-SHA256\n1551113065\n2019-02-25/cvm/tc3_request\n\
             7019a55be8395899b900fb5564e4200d984910f34794a27cb3fb7d10ff6a1e84"
        );
        let k_date = hmac_sha256(format!("TC3{STARS_KEY}").as_bytes(), b"2019-02-25");
        assert_eq!(
            hex::encode(k_date),
            "da98fb70dcf6b112dc21038d1eeeb3a95c74b4dcb12c1131f864f6066bd02be0"
        );
        let k_service = hmac_sha256(&k_date, b"cvm");
        assert_eq!(
            hex::encode(k_service),
            "8d70cbefb03939f929db64d32dc2ba89b1095620119fe3e050e2b18c5bd2752f"
        );
        assert_eq!(
            hex::encode(signing_key(STARS_KEY, "2019-02-25", "cvm")),
            "b596b923aad85185e2d1f6659d2a062e0a86731226e021e61bfe06f7ed05f5af"
        );
        let sig = signature(STARS_KEY, "2019-02-25", "cvm", &to_sign);
        assert_eq!(
            sig,
            "10b1a37a7301a02ca19a647ad722d5e43b4b3cff309d421d85b46093f6ab6c4f"
        );
        assert_eq!(
            authorization_header(STARS_ID, &scope, &signed, &sig),
            "TC3-HMAC-SHA256 Credential=AKID********************************/2019-02-25/cvm/tc3_request, \
             SignedHeaders=content-type;host;x-tc-action, \
             Signature=10b1a37a7301a02ca19a647ad722d5e43b4b3cff309d421d85b46093f6ab6c4f"
        );
    }

    #[test]
    fn t2_international_revision() {
        let signed = sign_json_post(
            "AKIDz8krbsJ5yKBZQpn74WFkmLPx3EXAMPLE",
            "Gu5t9xGARNpq86cd98joQYCN3EXAMPLE",
            CVM_HOST,
            "cvm",
            CT_UTF8,
            T1_PAYLOAD.as_bytes(),
            T1_TIMESTAMP,
        );
        assert_eq!(signed.timestamp, T1_TIMESTAMP);
        assert_eq!(
            signed.authorization,
            "TC3-HMAC-SHA256 Credential=AKIDz8krbsJ5yKBZQpn74WFkmLPx3EXAMPLE/2019-02-25/cvm/tc3_request, \
             SignedHeaders=content-type;host, \
             Signature=72e494ea809ad7a8c8f7a4507b9bddcbaa8e581f516e8da2f66e2c5a96525168"
        );
        let (request, _) = canonical_request(
            "POST",
            "/",
            "",
            &headers(&[("content-type", CT_UTF8), ("host", CVM_HOST)]),
            &sha256_hex(T1_PAYLOAD.as_bytes()),
        );
        assert_eq!(
            sha256_hex(request.as_bytes()),
            "5ffe6a04c0664d6b969fab9a13bdab201d63ee709638e2749d62a09ca18d7031"
        );
    }

    #[test]
    fn t3_ascii_payload() {
        let payload =
            br#"{"Limit": 1, "Filters": [{"Values": ["unnamed"], "Name": "instance-name"}]}"#;
        assert_eq!(
            sha256_hex(payload),
            "99d58dfbc6745f6747f36bfca17dee5e6881dc0428a0a36f96199342bc5b4907"
        );
        let signed = sign_json_post(
            STARS_ID,
            STARS_KEY,
            CVM_HOST,
            "cvm",
            CT_UTF8,
            payload,
            T1_TIMESTAMP,
        );
        assert_eq!(
            signed.authorization,
            "TC3-HMAC-SHA256 Credential=AKID********************************/2019-02-25/cvm/tc3_request, \
             SignedHeaders=content-type;host, \
             Signature=a7b8551448762bd123d6f79e81815e31a92013640a6cef36a08ad4b292a4d2f2"
        );
    }

    #[test]
    fn t7_node_sdk_json_post() {
        let signed = sign_json_post(
            "test-secret-id",
            "test-secret-key",
            CVM_HOST,
            "cvm",
            "application/json",
            br#"{"Action":"DescribeInstances","Version":"2017-03-12"}"#,
            1_640_995_200,
        );
        assert_eq!(
            signed.authorization,
            "TC3-HMAC-SHA256 Credential=test-secret-id/2022-01-01/cvm/tc3_request, \
             SignedHeaders=content-type;host, \
             Signature=96473b50fe407833672a5d6d067238d88bb44c8abcc39ef83baa3132afbfadd3"
        );
    }

    /// The body the Python SDK sent in `SDK_CAPTURES.md` (Content-Length 80).
    const CAPTURED_BODY: &str =
        r#"{"IdCard": "11010519491231002X", "Name": "\u5f20\u4e09", "Phone": "13112345678"}"#;
    const CAPTURED_AUTHORIZATION: &str = "TC3-HMAC-SHA256 Credential=AKIDtest/2026-11-23/faceid/tc3_request, SignedHeaders=content-type;host, Signature=09005ed376d00f95a3cbe531c5dc33fc9d511297b8b267c7d54c22b1fedcbf8d";

    #[test]
    fn python_sdk_phone_verification_capture() {
        assert_eq!(CAPTURED_BODY.len(), 80);
        let auth = parse_authorization(CAPTURED_AUTHORIZATION).expect("captured header parses");
        assert_eq!(auth.secret_id, "AKIDtest");
        assert_eq!(auth.date, "2026-11-23");
        assert_eq!(auth.service, "faceid");
        assert_eq!(auth.signed_headers, ["content-type", "host"]);
        assert_eq!(utc_date(1_795_400_296), auth.date);

        // Recompute from the received headers, as the sandbox does.
        let received = headers(&[
            ("Content-Type", "application/json"),
            ("Host", "127.0.0.1:18080"),
        ]);
        let (request, signed) = canonical_request(
            "POST",
            "/",
            "",
            &received,
            &sha256_hex(CAPTURED_BODY.as_bytes()),
        );
        assert_eq!(signed, "content-type;host");
        let to_sign = string_to_sign(1_795_400_296, &auth.credential_scope(), &request);
        assert_eq!(
            signature("secretkey", &auth.date, &auth.service, &to_sign),
            auth.signature
        );

        // And the client convenience produces the identical header.
        let ours = sign_json_post(
            "AKIDtest",
            "secretkey",
            "127.0.0.1:18080",
            "faceid",
            "application/json",
            CAPTURED_BODY.as_bytes(),
            1_795_400_296,
        );
        assert_eq!(ours.authorization, CAPTURED_AUTHORIZATION);
    }

    #[test]
    fn one_byte_of_payload_changes_the_signature() {
        let sign = |body: &[u8]| {
            sign_json_post(
                "AKIDtest",
                "secretkey",
                "127.0.0.1:18080",
                "faceid",
                "application/json",
                body,
                1_795_400_296,
            )
            .authorization
        };
        let mut tampered = CAPTURED_BODY.as_bytes().to_vec();
        tampered[20] ^= 0x01;
        assert_ne!(sign(CAPTURED_BODY.as_bytes()), sign(&tampered));
    }

    #[test]
    fn signature_depends_on_key_timestamp_and_service() {
        let base = sign_json_post("id", "key", "h", "faceid", "application/json", b"{}", 100);
        let other_key = sign_json_post("id", "kez", "h", "faceid", "application/json", b"{}", 100);
        let other_time = sign_json_post("id", "key", "h", "faceid", "application/json", b"{}", 101);
        let other_service = sign_json_post("id", "key", "h", "cvm", "application/json", b"{}", 100);
        assert_ne!(base.authorization, other_key.authorization);
        assert_ne!(base.authorization, other_time.authorization);
        assert_ne!(base.authorization, other_service.authorization);
    }

    #[test]
    fn utc_date_agrees_with_chrono() {
        for ts in [
            0,
            -1,
            86_399,
            86_400,
            951_782_400, // 2000-02-29
            T1_TIMESTAMP,
            1_640_995_199,
            1_640_995_200,
            1_795_400_296,
            4_102_444_800, // 2100-01-01
            -2_208_988_800,
        ] {
            let expected = chrono::DateTime::from_timestamp(ts, 0)
                .unwrap()
                .format("%Y-%m-%d")
                .to_string();
            assert_eq!(utc_date(ts), expected, "timestamp {ts}");
        }
        // 1551113065 is 2019-02-26 in UTC+8: the scope uses the UTC date.
        assert_eq!(utc_date(T1_TIMESTAMP), "2019-02-25");
    }

    #[test]
    fn parse_authorization_round_trips_and_rejects_malformed_headers() {
        let header = authorization_header(
            "AKIDa/b",
            "2026-11-23/faceid/tc3_request",
            "content-type;host",
            "abc",
        );
        let parsed = parse_authorization(&header).unwrap();
        assert_eq!(parsed.secret_id, "AKIDa/b");
        assert_eq!(parsed.credential_scope(), "2026-11-23/faceid/tc3_request");
        assert_eq!(parsed.signature, "abc");

        for bad in [
            "",
            "TC3-HMAC-SHA256",
            "TC3-HMAC-SHA1 Credential=a/2026-11-23/faceid/tc3_request, SignedHeaders=host, Signature=x",
            "TC3-HMAC-SHA256Credential=a/2026-11-23/faceid/tc3_request, SignedHeaders=host, Signature=x",
            "TC3-HMAC-SHA256 Credential=a/2026-11-23/faceid/tc3_request, SignedHeaders=host",
            "TC3-HMAC-SHA256 Credential=a/2026-11-23/faceid/other, SignedHeaders=host, Signature=x",
            "TC3-HMAC-SHA256 Credential=2026-11-23/faceid/tc3_request, SignedHeaders=host, Signature=x",
            "TC3-HMAC-SHA256 Credential=a/2026-11-23/faceid/tc3_request, SignedHeaders=host;, Signature=x",
            "TC3-HMAC-SHA256 Credential=a/2026-11-23/faceid/tc3_request, SignedHeaders=host, Signature=",
            "TC3-HMAC-SHA256 Credential=a/2026-11-23/faceid/tc3_request, SignedHeaders=host, Signature=x, Signature=y",
            "TC3-HMAC-SHA256 Credential=a/2026-11-23/faceid/tc3_request, SignedHeaders=host, Signature=x, Extra=1",
            "Bearer abc",
        ] {
            assert_eq!(parse_authorization(bad), None, "{bad:?}");
        }
    }
}
