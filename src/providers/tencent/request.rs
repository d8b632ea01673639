//! Building a Tencent `PhoneVerification` call (pure: the time is passed in): the JSON body,
//! the API 3.0 headers and the TC3-HMAC-SHA256 signature.

use reqwest::header::{HeaderName, HeaderValue};
use reqwest::{Method, Request};
use secrecy::{ExposeSecret, SecretString};

use super::{wire, ACTION, SERVICE, VERSION};
use crate::check::{CheckRequest, ReasonCode};
use crate::providers::signing::tc3;
use crate::providers::{host_header, Classification, ProviderReply};

/// The body's media type.
pub const CONTENT_TYPE: &str = "application/json";

/// Where calls go and as whom.
pub struct Target {
    /// The API endpoint.
    pub endpoint: url::Url,
    /// `SecretId`.
    pub secret_id: String,
    /// `SecretKey`.
    pub secret_key: SecretString,
    /// `X-TC-Region`, when set.
    pub region: Option<String>,
}

impl std::fmt::Debug for Target {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Target")
            .field("endpoint", &self.endpoint.as_str())
            .field("secret_id", &self.secret_id)
            .field("region", &self.region)
            .finish_non_exhaustive()
    }
}

/// The signed HTTP request of one check at `timestamp` (Unix seconds). A request without a
/// mobile (validation guarantees one for `mobile3`) is answered as an invalid field, never sent.
pub fn build(
    target: &Target,
    req: &CheckRequest,
    timestamp: i64,
) -> Result<Request, ProviderReply> {
    let s = &req.subject;
    let Some(mobile) = s.mobile.as_ref() else {
        return Err(ProviderReply::transport(
            Classification::invalid_field(ReasonCode::InvalidMobile),
            None,
            "mobile is required for PhoneVerification",
        ));
    };
    let body = serde_json::to_vec(&wire::PhoneVerificationRequest {
        id_card: s.id_number.expose(),
        name: s.name.expose(),
        phone: mobile.expose(),
    })
    .expect("request body serialises");
    signed_request(target, body, timestamp)
}

/// The error code that answers [`probe`] when the credentials are accepted.
pub const PROBE_ACCEPTED: &str = "MissingParameter";

/// A `PhoneVerification` call with an empty JSON object for a body, signed like any other
/// (`kycq doctor`). Tencent Cloud API 3.0 checks the signature and the SecretId first (an
/// `AuthFailure.*` error) and the action's parameters after (`MissingParameter`); error
/// responses are not charged (FaceID billing: only `Result` 0 and -4 are, see
/// cloud.tencent.com/document/api/1007/31323 and 1061/79046).
pub fn probe(target: &Target, timestamp: i64) -> Result<Request, ProviderReply> {
    signed_request(target, b"{}".to_vec(), timestamp)
}

fn signed_request(
    target: &Target,
    body: Vec<u8>,
    timestamp: i64,
) -> Result<Request, ProviderReply> {
    let signed = tc3::sign_json_post(
        &target.secret_id,
        target.secret_key.expose_secret(),
        &host_header(&target.endpoint),
        SERVICE,
        CONTENT_TYPE,
        &body,
        timestamp,
    );
    let mut headers = vec![
        ("content-type", CONTENT_TYPE.to_owned()),
        ("x-tc-action", ACTION.to_owned()),
        ("x-tc-version", VERSION.to_owned()),
        ("x-tc-timestamp", signed.timestamp.to_string()),
        ("authorization", signed.authorization),
    ];
    if let Some(region) = &target.region {
        headers.push(("x-tc-region", region.clone()));
    }
    let mut request = Request::new(Method::POST, target.endpoint.clone());
    for (name, value) in headers {
        let value = HeaderValue::from_str(&value).map_err(|_| {
            ProviderReply::transport(
                Classification::invalid_field(ReasonCode::InvalidRequest),
                None,
                format!("{name} cannot be sent as an HTTP header"),
            )
        })?;
        request
            .headers_mut()
            .insert(HeaderName::from_static(name), value);
    }
    *request.body_mut() = Some(body.into());
    Ok(request)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::check::{decode, Decoded};

    fn request(mobile: bool) -> CheckRequest {
        let mut json = serde_json::json!({
            "request_id": "r-1", "check": "mobile3", "name": "张三",
            "id_number": "11010519491231002X", "mobile": "13812345678",
        });
        if !mobile {
            json["check"] = "id2".into();
            json.as_object_mut().unwrap().remove("mobile");
        }
        let today = chrono::NaiveDate::from_ymd_opt(2026, 11, 23).unwrap();
        match decode(json.to_string().as_bytes(), today).unwrap() {
            Decoded::Valid(r) => r,
            Decoded::Rejected(r) => panic!("{}", r.reason),
        }
    }

    fn target(region: Option<&str>) -> Target {
        Target {
            endpoint: url::Url::parse("https://faceid.intl.tencentcloudapi.com").unwrap(),
            secret_id: "AKIDtest".into(),
            secret_key: SecretString::from("key"),
            region: region.map(str::to_owned),
        }
    }

    #[test]
    fn builds_the_signed_api_3_call() {
        let r = build(&target(Some("ap-singapore")), &request(true), 1_700_000_000).unwrap();
        assert_eq!(r.method(), Method::POST);
        assert_eq!(r.url().as_str(), "https://faceid.intl.tencentcloudapi.com/");
        let h = r.headers();
        assert_eq!(h["content-type"], "application/json");
        assert_eq!(h["x-tc-action"], "PhoneVerification");
        assert_eq!(h["x-tc-version"], "2018-03-01");
        assert_eq!(h["x-tc-timestamp"], "1700000000");
        assert_eq!(h["x-tc-region"], "ap-singapore");
        let auth = h["authorization"].to_str().unwrap();
        assert!(
            auth.starts_with("TC3-HMAC-SHA256 Credential=AKIDtest/2023-11-14/faceid/tc3_request, SignedHeaders=content-type;host, Signature="),
            "{auth}"
        );
        let body = r.body().and_then(|b| b.as_bytes()).unwrap();
        assert_eq!(
            std::str::from_utf8(body).unwrap(),
            r#"{"IdCard":"11010519491231002X","Name":"张三","Phone":"13812345678"}"#
        );
        // The same inputs sign the same way (no clock, no randomness inside).
        let again = build(&target(Some("ap-singapore")), &request(true), 1_700_000_000).unwrap();
        assert_eq!(again.headers()["authorization"], h["authorization"]);
        let no_region = build(&target(None), &request(true), 1_700_000_000).unwrap();
        assert!(no_region.headers().get("x-tc-region").is_none());
        // The target's Debug never shows the key.
        assert!(!format!("{:?}", target(None)).contains("key\""));
    }

    #[test]
    fn a_request_without_a_mobile_is_never_sent() {
        let e = build(&target(None), &request(false), 1_700_000_000).unwrap_err();
        assert_eq!(
            e.classification,
            Classification::invalid_field(ReasonCode::InvalidMobile)
        );
    }
}
