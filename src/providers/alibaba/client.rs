//! The Alibaba provider: builds each API's parameters where the official SDK puts them, signs
//! the call with ACS3-HMAC-SHA256, sends it and classifies the answer with the code tables.

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use md5::{Digest, Md5};
use secrecy::{ExposeSecret, SecretString};

use super::settings::AlibabaSettings;
use super::{codes, wire, Api, ParamType, DOC_TYPE_RESIDENT_ID, LONG_TERM, VENDOR, VERSION};
use crate::check::identity::format_yyyymmdd;
use crate::check::mask::{mask_id_number, mask_mobile, mask_name};
use crate::check::{Carrier, CheckKind, CheckRequest, ReasonCode, ValidityEnd};
use crate::configuration::{invalid, ConfigError, ProviderSettings};
use crate::providers::http::{self, transport_failure};
use crate::providers::outcome::Origin;
use crate::providers::signing::{acs3, sha256_hex};
use crate::providers::{host_header, Classification, Provider, ProviderReply};

/// Longest `MerchantBizId` the vendor takes (letters and digits).
pub const MERCHANT_BIZ_ID_MAX: usize = 32;
/// Longest `SceneCode` the vendor takes (letters, digits, `_`).
pub const SCENE_CODE_MAX: usize = 10;
/// Longest `MerchantUserId` kycq passes on. The vendor page states no limit; 64 printable ASCII
/// characters is kycq's own bound [inferred], so an opaque or hashed user id always fits.
pub const MERCHANT_USER_ID_MAX: usize = 64;

/// Alibaba Cloud ID Verification (intl) client.
pub struct AlibabaProvider {
    http: reqwest::Client,
    endpoint: url::Url,
    host: String,
    access_key_id: String,
    access_key_secret: SecretString,
    param_type: ParamType,
}

impl std::fmt::Debug for AlibabaProvider {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AlibabaProvider")
            .field("endpoint", &self.endpoint.as_str())
            .field("access_key_id", &self.access_key_id)
            .field("param_type", &self.param_type)
            .finish_non_exhaustive()
    }
}

/// The parameters of one call, placed as the official SDK places them. Holds personal data:
/// `Debug` masks it.
#[derive(Clone, PartialEq, Eq)]
pub struct ApiRequest {
    /// Which API.
    pub api: Api,
    /// Query-string parameters (Mobile3MetaVerifyIntl, Id2MetaVerifyIntl).
    pub query: Vec<(&'static str, String)>,
    /// Form-body parameters (Id2MetaPeriodVerifyIntl).
    pub form: Option<Vec<(&'static str, String)>>,
}

impl ApiRequest {
    /// A parameter's value, wherever it is placed.
    pub fn param(&self, name: &str) -> Option<&str> {
        self.query
            .iter()
            .chain(self.form.iter().flatten())
            .find(|(n, _)| *n == name)
            .map(|(_, v)| v.as_str())
    }
}

impl std::fmt::Debug for ApiRequest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let masked = |params: &[(&'static str, String)]| -> Vec<(&'static str, String)> {
            params
                .iter()
                .map(|(n, v)| {
                    let shown = match *n {
                        "IdentifyNum" | "DocNo" if v.len() != 32 => mask_id_number(v),
                        "UserName" | "DocName" if v.len() != 32 => mask_name(v),
                        "Mobile" if v.len() != 32 => mask_mobile(v),
                        "IdentifyNum" | "DocNo" | "UserName" | "DocName" | "Mobile"
                        | "MerchantUserId" => "***".to_owned(),
                        _ => v.clone(),
                    };
                    (*n, shown)
                })
                .collect()
        };
        f.debug_struct("ApiRequest")
            .field("api", &self.api)
            .field("query", &masked(&self.query))
            .field("form", &self.form.as_deref().map(masked))
            .finish()
    }
}

/// Lower-case hex MD5 of the UTF-8 bytes of `s` (ParamType `md5`).
pub fn md5_hex(s: &str) -> String {
    hex::encode(Md5::digest(s.as_bytes()))
}

/// `MerchantBizId` of a request: the `request_id` itself when it is at most 32 ASCII letters
/// and digits, else the first 32 hex characters of its SHA-256. The same on every retry.
pub fn merchant_biz_id(request_id: &str) -> String {
    if !request_id.is_empty()
        && request_id.len() <= MERCHANT_BIZ_ID_MAX
        && request_id.bytes().all(|b| b.is_ascii_alphanumeric())
    {
        request_id.to_owned()
    } else {
        sha256_hex(request_id.as_bytes())[..MERCHANT_BIZ_ID_MAX].to_owned()
    }
}

/// Whether the vendor takes this `SceneCode`: 1–10 ASCII letters, digits or `_`.
pub fn valid_scene_code(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= SCENE_CODE_MAX
        && s.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
}

/// Whether kycq passes this `MerchantUserId` on: 1–64 printable ASCII characters, no spaces.
pub fn valid_merchant_user_id(s: &str) -> bool {
    !s.is_empty() && s.len() <= MERCHANT_USER_ID_MAX && s.bytes().all(|b| b.is_ascii_graphic())
}

fn refuse(reason: ReasonCode, detail: &str) -> ProviderReply {
    ProviderReply::transport(Classification::invalid_field(reason), None, detail)
}

/// Builds the parameters of the API that runs `req.check`. A request without the fields its
/// check needs (validation guarantees them) is answered as an invalid field, never sent.
pub fn build_request(
    req: &CheckRequest,
    param_type: ParamType,
) -> Result<ApiRequest, ProviderReply> {
    let api = Api::for_check(req.check);
    let s = &req.subject;
    // The ID number exactly as on the card, with an upper-case X (also before hashing).
    let id_number = s.id_number.expose().to_ascii_uppercase();
    let name = s.name.expose();
    let param = |k: &'static str, v: &str| (k, v.to_owned());
    Ok(match api {
        Api::Mobile3 => {
            let mobile = s
                .mobile
                .as_ref()
                .ok_or_else(|| {
                    refuse(
                        ReasonCode::InvalidMobile,
                        "mobile is required for Mobile3MetaVerifyIntl",
                    )
                })?
                .expose();
            let (id_number, name, mobile) = match param_type {
                ParamType::Normal => (id_number, name.to_owned(), mobile.to_owned()),
                ParamType::Md5 => (md5_hex(&id_number), md5_hex(name), md5_hex(mobile)),
            };
            ApiRequest {
                api,
                query: vec![
                    param("ProductCode", api.product_code()),
                    param("ParamType", param_type.as_str()),
                    ("IdentifyNum", id_number),
                    ("UserName", name),
                    ("Mobile", mobile),
                ],
                form: None,
            }
        }
        // ID_2META takes plaintext only ("MD5 is not supported").
        Api::Id2 => ApiRequest {
            api,
            query: vec![
                param("ProductCode", api.product_code()),
                param("ParamType", ParamType::Normal.as_str()),
                ("IdentifyNum", id_number),
                param("UserName", name),
            ],
            form: None,
        },
        Api::Id2Period => {
            let validity = s.validity.as_ref().ok_or_else(|| {
                refuse(
                    ReasonCode::InvalidDate,
                    "validity dates are required for Id2MetaPeriodVerifyIntl",
                )
            })?;
            let end = match validity.end {
                ValidityEnd::Date(d) => format_yyyymmdd(d),
                ValidityEnd::LongTerm => LONG_TERM.to_owned(),
            };
            let mut form = vec![
                param("ProductCode", api.product_code()),
                ("MerchantBizId", merchant_biz_id(&req.request_id)),
                param("DocType", DOC_TYPE_RESIDENT_ID),
                param("DocName", name),
                ("DocNo", id_number),
                ("ValidityStartDate", format_yyyymmdd(validity.start)),
                ("ValidityEndDate", end),
            ];
            match req.scene_code.as_deref() {
                Some(code) if valid_scene_code(code) => form.push(param("SceneCode", code)),
                Some(_) => tracing::debug!(
                    field = "scene_code",
                    "not sent: Alibaba takes at most 10 letters, digits or _"
                ),
                None => {}
            }
            match req.merchant_user_id.as_deref() {
                Some(id) if valid_merchant_user_id(id) => form.push(param("MerchantUserId", id)),
                Some(_) => tracing::debug!(
                    field = "merchant_user_id",
                    "not sent: kycq passes at most 64 printable ASCII characters"
                ),
                None => {}
            }
            ApiRequest {
                api,
                query: Vec::new(),
                form: Some(form),
            }
        }
    })
}

/// Signs the call for `host` at `date` with `nonce` (pure).
pub fn sign(
    request: &ApiRequest,
    host: &str,
    access_key_id: &str,
    access_key_secret: &str,
    date: DateTime<Utc>,
    nonce: &str,
) -> acs3::SignedRpc {
    acs3::sign_rpc(
        &acs3::RpcCall {
            host,
            action: request.api.action(),
            version: VERSION,
            query: &request.query,
            form: request.form.as_deref(),
        },
        access_key_id,
        access_key_secret,
        date,
        nonce,
    )
}

/// Vendor text for logs and results, scrubbed of anything that looks like personal data (runs
/// of six or more digits, Chinese characters) and cut to 200 characters.
fn scrub(message: &str) -> String {
    let mut out = String::new();
    let mut token = String::new();
    let flush = |token: &mut String, out: &mut String| {
        if token.bytes().filter(u8::is_ascii_digit).count() >= 6 {
            out.push_str("***");
        } else {
            out.push_str(token);
        }
        token.clear();
    };
    for c in message.chars().take(200) {
        if c.is_ascii_digit() || c == 'X' || c == 'x' {
            token.push(c);
            continue;
        }
        flush(&mut token, &mut out);
        if ('\u{3400}'..='\u{9fff}').contains(&c) {
            out.push('*');
        } else {
            out.push(c);
        }
    }
    flush(&mut token, &mut out);
    out
}

/// An answer that is not the vendor's JSON (or has no `Code`): the shared status table.
fn not_json(status: u16, why: &str) -> ProviderReply {
    ProviderReply::from_status(status, Origin::Backend, why)
}

/// The header that carries the vendor's request id (kept when a body is cut off).
const REQUEST_ID_HEADER: &str = "x-acs-request-id";

impl AlibabaProvider {
    /// Build from `[providers.alibaba]` and Alibaba's keys of it.
    pub fn new(section: &ProviderSettings, s: AlibabaSettings) -> Result<Self, ConfigError> {
        let key = |k: &str| format!("{}.{k}", VENDOR.section());
        let mut endpoint = url::Url::parse(&section.endpoint)
            .map_err(|e| invalid(&key("endpoint"), e.to_string()))?;
        // RPC-style APIs live at `/`.
        endpoint.set_path("/");
        endpoint.set_query(None);
        if s.access_key_id.trim().is_empty() {
            return Err(invalid(&key("access_key_id"), "is required"));
        }
        let param_type = s.param_type()?;
        Ok(AlibabaProvider {
            http: http::client(VENDOR.name, section)?,
            host: host_header(&endpoint),
            endpoint,
            access_key_id: s.access_key_id,
            access_key_secret: s
                .access_key_secret
                .ok_or_else(|| invalid(&key("access_key_secret"), "is required"))?,
            param_type,
        })
    }

    /// Build from `[providers.alibaba]` alone (its credentials must be set).
    pub fn from_settings(section: &ProviderSettings) -> Result<Self, ConfigError> {
        Self::new(section, AlibabaSettings::from_section(section)?)
    }

    /// The `ParamType` used for Mobile3MetaVerifyIntl.
    pub fn param_type(&self) -> ParamType {
        self.param_type
    }

    /// Classify an answer from its JSON `Code` and `Result`; the HTTP status matters only when
    /// the body is not the vendor's JSON.
    pub fn classify_response(api: Api, status: u16, body: &[u8]) -> ProviderReply {
        let env: wire::Envelope = match serde_json::from_slice(body) {
            Ok(e) => e,
            Err(_) => return not_json(status, "body is not JSON"),
        };
        let provider_request_id = env.request_id.clone();
        if env.is_success() {
            let Some(result) = env.result.as_ref() else {
                // Success without an answer: it was processed, and maybe billed.
                let mut reply = ProviderReply::transport(
                    Classification::UNKNOWN,
                    Some(status),
                    "Code Success without a Result",
                );
                reply.provider_request_id = provider_request_id;
                return reply;
            };
            let provider_code = codes::result_code(result);
            return ProviderReply {
                classification: codes::classify_result(api, result),
                http_status: Some(status),
                detail: format!(
                    "{} {}: {}",
                    api.action(),
                    provider_code.as_deref().unwrap_or("-"),
                    codes::result_meaning(api, result)
                ),
                provider_code,
                provider_request_id,
                carrier: result.isp_name.as_deref().and_then(Carrier::normalise),
            };
        }
        let Some(code) = env.code else {
            return not_json(status, "JSON without Code");
        };
        ProviderReply {
            classification: codes::classify_error(&code),
            http_status: Some(status),
            detail: format!(
                "{code}: {}",
                scrub(env.message.as_deref().unwrap_or_default())
            ),
            provider_code: Some(code),
            provider_request_id,
            carrier: None,
        }
    }
}

#[async_trait]
impl Provider for AlibabaProvider {
    fn name(&self) -> &'static str {
        VENDOR.name
    }

    fn action(&self, check: CheckKind) -> Option<&'static str> {
        VENDOR.action(check)
    }

    async fn call(&self, request: &CheckRequest) -> ProviderReply {
        let built = match build_request(request, self.param_type) {
            Ok(b) => b,
            Err(reply) => return reply,
        };
        let nonce = uuid::Uuid::new_v4().simple().to_string();
        let signed = sign(
            &built,
            &self.host,
            &self.access_key_id,
            self.access_key_secret.expose_secret(),
            Utc::now(),
            &nonce,
        );
        let mut url = self.endpoint.clone();
        url.set_query(
            Some(&signed.query)
                .filter(|q| !q.is_empty())
                .map(String::as_str),
        );
        let mut req = self.http.post(url).header("accept", "application/json");
        for (name, value) in signed.headers {
            req = req.header(name, value);
        }
        if !signed.body.is_empty() {
            req = req.body(signed.body);
        }
        let request = match req.build() {
            Ok(r) => r,
            Err(e) => return transport_failure(e),
        };
        match http::exchange(&self.http, request, Some(REQUEST_ID_HEADER)).await {
            Ok(answer) => Self::classify_response(built.api, answer.status, &answer.body),
            Err(reply) => reply,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::check::{decode, Billed, Decoded};
    use crate::providers::OutcomeClass;
    use chrono::NaiveDate;

    fn request(json: serde_json::Value) -> CheckRequest {
        let today = NaiveDate::from_ymd_opt(2026, 11, 23).unwrap();
        match decode(json.to_string().as_bytes(), today).unwrap() {
            Decoded::Valid(r) => r,
            Decoded::Rejected(r) => panic!("rejected: {}", r.reason),
        }
    }

    fn mobile3(id: &str) -> CheckRequest {
        request(serde_json::json!({
            "request_id": id, "check": "mobile3", "name": "张三",
            "id_number": "11010519491231002x", "mobile": "13112345678",
            "scene_code": "signup", "merchant_user_id": "u-42",
        }))
    }

    fn period(end: &str, scene: Option<&str>, user: Option<&str>) -> CheckRequest {
        request(serde_json::json!({
            "request_id": "9f0c7a3e-2b8d-4c1f-a6e5-d4c3b2a19087", "check": "id2_period",
            "name": "张三", "id_number": "11010519491231002X",
            "validity_start": "20201001", "validity_end": end,
            "scene_code": scene, "merchant_user_id": user,
        }))
    }

    fn names(params: &[(&'static str, String)]) -> Vec<&'static str> {
        params.iter().map(|(n, _)| *n).collect()
    }

    #[test]
    fn mobile3_parameters_go_in_the_query_in_plaintext() {
        let r = build_request(&mobile3("r1"), ParamType::Normal).unwrap();
        assert_eq!(r.api, Api::Mobile3);
        assert!(r.form.is_none());
        assert_eq!(
            r.query,
            vec![
                ("ProductCode", "MOBILE_3META".to_owned()),
                ("ParamType", "normal".to_owned()),
                ("IdentifyNum", "11010519491231002X".to_owned()),
                ("UserName", "张三".to_owned()),
                ("Mobile", "13112345678".to_owned()),
            ]
        );
        // The SDK capture's query string, byte for byte.
        let signed = sign(
            &r,
            "127.0.0.1:18080",
            "testid",
            "testsecret",
            Utc::now(),
            "n",
        );
        assert_eq!(
            signed.query,
            "IdentifyNum=11010519491231002X&Mobile=13112345678&ParamType=normal&ProductCode=MOBILE_3META&UserName=%E5%BC%A0%E4%B8%89"
        );
        assert!(signed.body.is_empty());
        // Mobile3MetaVerifyIntl takes no SceneCode / MerchantUserId.
        assert_eq!(r.param("SceneCode"), None);
        let shown = format!("{r:?}");
        assert!(
            !shown.contains("11010519491231002X")
                && !shown.contains("13112345678")
                && !shown.contains("张三"),
            "{shown}"
        );
    }

    #[test]
    fn mobile3_md5_mode_hashes_each_field_with_an_upper_case_x() {
        let r = build_request(&mobile3("r1"), ParamType::Md5).unwrap();
        assert_eq!(r.param("ParamType"), Some("md5"));
        // Known answers (hashlib.md5 of the UTF-8 bytes); the ID was sent with a lower-case x.
        assert_eq!(
            r.param("IdentifyNum"),
            Some("ae05564031c21338aa8a2e7266e7855c")
        );
        assert_eq!(
            r.param("UserName"),
            Some("615db57aa314529aaa0fbe95b3e95bd3")
        );
        assert_eq!(r.param("Mobile"), Some("dafc728802534d51fbf85c70313a2bd2"));
        assert_ne!(md5_hex("11010519491231002x"), md5_hex("11010519491231002X"));
        for (_, v) in &r.query[2..] {
            assert!(
                v.len() == 32
                    && v.bytes()
                        .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
            );
        }
        let shown = format!("{r:?}");
        assert!(
            !shown.contains("ae05564031c21338aa8a2e7266e7855c"),
            "{shown}"
        );
    }

    #[test]
    fn id2_is_always_plaintext_in_the_query() {
        let req = request(serde_json::json!({
            "request_id": "r2", "check": "id2", "name": "张三", "id_number": "11010519491231002X",
        }));
        for pt in [ParamType::Normal, ParamType::Md5] {
            let r = build_request(&req, pt).unwrap();
            assert!(r.form.is_none());
            let signed = sign(&r, "h", "id", "s", Utc::now(), "n");
            assert_eq!(
                signed.query,
                "IdentifyNum=11010519491231002X&ParamType=normal&ProductCode=ID_2META&UserName=%E5%BC%A0%E4%B8%89"
            );
        }
    }

    #[test]
    fn period_parameters_go_in_a_form_body() {
        let r = build_request(&period("20301001", None, None), ParamType::Md5).unwrap();
        assert!(r.query.is_empty());
        let form = r.form.as_ref().unwrap();
        assert_eq!(
            names(form),
            [
                "ProductCode",
                "MerchantBizId",
                "DocType",
                "DocName",
                "DocNo",
                "ValidityStartDate",
                "ValidityEndDate"
            ]
        );
        assert_eq!(r.param("ProductCode"), Some("eKYC_Date_MIN"));
        assert_eq!(r.param("DocType"), Some("00000001"));
        assert_eq!(
            r.param("DocName"),
            Some("张三"),
            "plaintext whatever ParamType"
        );
        assert_eq!(r.param("ValidityStartDate"), Some("20201001"));
        assert_eq!(r.param("ValidityEndDate"), Some("20301001"));
        // The request_id has dashes: hashed.
        assert_eq!(
            r.param("MerchantBizId"),
            Some("879dffe4999bb7fe1d41bceaf187b278")
        );
        let date = acs3::parse_date("2026-11-23T02:18:16Z").unwrap();
        let signed = sign(&r, "127.0.0.1:18080", "testid", "testsecret", date, "n");
        assert!(signed.query.is_empty());
        assert_eq!(
            String::from_utf8(signed.body.clone()).unwrap(),
            "DocName=%E5%BC%A0%E4%B8%89&DocNo=11010519491231002X&DocType=00000001&MerchantBizId=879dffe4999bb7fe1d41bceaf187b278&ProductCode=eKYC_Date_MIN&ValidityEndDate=20301001&ValidityStartDate=20201001"
        );
        let header = |n: &str| {
            signed
                .headers
                .iter()
                .find(|(k, _)| *k == n)
                .map(|(_, v)| v.clone())
        };
        assert_eq!(
            header("content-type").as_deref(),
            Some(acs3::FORM_CONTENT_TYPE)
        );
        assert_eq!(
            header("x-acs-content-sha256"),
            Some(sha256_hex(&signed.body))
        );
        assert_eq!(
            header("x-acs-action").as_deref(),
            Some("Id2MetaPeriodVerifyIntl")
        );
        assert_eq!(header("x-acs-version").as_deref(), Some("2022-08-09"));
        assert_eq!(
            header("x-acs-date").as_deref(),
            Some("2026-11-23T02:18:16Z")
        );
        assert_eq!(header("x-acs-signature-nonce").as_deref(), Some("n"));
        let auth = acs3::parse_authorization(&header("authorization").unwrap()).unwrap();
        assert_eq!(
            auth.signed_headers,
            [
                "content-type",
                "host",
                "x-acs-action",
                "x-acs-content-sha256",
                "x-acs-date",
                "x-acs-signature-nonce",
                "x-acs-version"
            ]
        );
    }

    #[test]
    fn long_term_is_sent_as_changqi() {
        for spelling in ["long-term", "长期", "LONGTERM"] {
            let r = build_request(&period(spelling, None, None), ParamType::Normal).unwrap();
            assert_eq!(r.param("ValidityEndDate"), Some("长期"), "{spelling}");
        }
        let signed = sign(
            &build_request(&period("long-term", None, None), ParamType::Normal).unwrap(),
            "h",
            "id",
            "s",
            Utc::now(),
            "n",
        );
        assert!(String::from_utf8(signed.body)
            .unwrap()
            .contains("ValidityEndDate=%E9%95%BF%E6%9C%9F"));
    }

    #[test]
    fn scene_code_and_merchant_user_id_pass_only_when_the_vendor_takes_them() {
        let r = build_request(
            &period("20301001", Some("signup_01"), Some("u-42")),
            ParamType::Normal,
        )
        .unwrap();
        assert_eq!(r.param("SceneCode"), Some("signup_01"));
        assert_eq!(r.param("MerchantUserId"), Some("u-42"));
        for bad in ["sign-up", "signup_2026x", "注册"] {
            let r = build_request(&period("20301001", Some(bad), None), ParamType::Normal).unwrap();
            assert_eq!(r.param("SceneCode"), None, "{bad}");
        }
        for bad in ["has space", &"u".repeat(65), "用户"] {
            let r = build_request(&period("20301001", None, Some(bad)), ParamType::Normal).unwrap();
            assert_eq!(r.param("MerchantUserId"), None, "{bad}");
        }
        assert!(
            valid_scene_code("1234567890")
                && !valid_scene_code("12345678901")
                && !valid_scene_code("")
        );
        assert!(valid_merchant_user_id(&"u".repeat(64)));
    }

    #[test]
    fn merchant_biz_id_is_stable_unique_and_fits() {
        assert_eq!(
            merchant_biz_id("9f0c7a3e2b8d4c1fa6e5d4c3b2a19087"),
            "9f0c7a3e2b8d4c1fa6e5d4c3b2a19087"
        );
        assert_eq!(merchant_biz_id("req1"), "req1");
        assert_eq!(merchant_biz_id("req_1"), "dfe7be6cee3b99ca63628de710b914dd");
        assert_eq!(
            merchant_biz_id("9f0c7a3e-2b8d-4c1f-a6e5-d4c3b2a19087"),
            "879dffe4999bb7fe1d41bceaf187b278"
        );
        let long = "a".repeat(33);
        assert_eq!(merchant_biz_id(&long).len(), 32);
        assert_ne!(merchant_biz_id(&long), merchant_biz_id(&"a".repeat(34)));
        assert_eq!(merchant_biz_id(&long), merchant_biz_id(&long));
        for id in ["req_1", &long, "x-y"] {
            let m = merchant_biz_id(id);
            assert!(m.len() <= 32 && m.bytes().all(|b| b.is_ascii_alphanumeric()));
        }
        // The same request retried sends the same MerchantBizId.
        let a = build_request(&period("20301001", None, None), ParamType::Normal).unwrap();
        let b = build_request(&period("20301001", None, None), ParamType::Normal).unwrap();
        assert_eq!(a.param("MerchantBizId"), b.param("MerchantBizId"));
    }

    fn classify(api: Api, status: u16, body: &str) -> ProviderReply {
        AlibabaProvider::classify_response(api, status, body.as_bytes())
    }

    #[test]
    fn success_answers_classify_with_code_carrier_and_request_id() {
        let r = classify(
            Api::Mobile3,
            200,
            r#"{"RequestId":"130A2C10-B9EE-4D84-88E3-5384FF039795","Code":"Success","Message":"success","Result":{"BizCode":"2","SubCode":"203","IspName":"CMCC"}}"#,
        );
        assert_eq!(r.classification.reason_code, Some(ReasonCode::NameMismatch));
        assert_eq!(r.classification.billed, Billed::Yes);
        assert_eq!(r.provider_code.as_deref(), Some("203"));
        assert_eq!(
            r.provider_request_id.as_deref(),
            Some("130A2C10-B9EE-4D84-88E3-5384FF039795")
        );
        assert_eq!(r.carrier, Some(Carrier::Cmcc));
        assert_eq!(r.http_status, Some(200));
        for (isp, carrier) in [("CUCC", Carrier::Cucc), ("CTCC", Carrier::Ctcc)] {
            let body = format!(
                r#"{{"Code":"Success","Result":{{"BizCode":"1","SubCode":"101","IspName":"{isp}"}}}}"#
            );
            assert_eq!(classify(Api::Mobile3, 200, &body).carrier, Some(carrier));
        }
        let r = classify(
            Api::Id2,
            200,
            r#"{"RequestId":"a","Code":"Success","Result":{"BizCode":"3"}}"#,
        );
        assert_eq!(
            (r.classification.reason_code, r.classification.billed),
            (Some(ReasonCode::NoRecord), Billed::No)
        );
        assert_eq!(r.provider_code.as_deref(), Some("3"));
        assert_eq!(r.carrier, None);
        let r = classify(
            Api::Id2Period,
            200,
            r#"{"RequestId":"a","Code":"success","Result":{"Passed":"N","SubCode":"202"}}"#,
        );
        assert_eq!(
            (r.classification.reason_code, r.classification.billed),
            (Some(ReasonCode::NoRecord), Billed::Yes)
        );
        assert_eq!(r.provider_code.as_deref(), Some("202"));
        // An unknown SubCode: counted and finished, billing from the vendor table.
        let r = classify(
            Api::Mobile3,
            200,
            r#"{"Code":"Success","Result":{"BizCode":"2","SubCode":"299"}}"#,
        );
        assert_eq!(
            (r.classification.class, r.classification.billed),
            (OutcomeClass::UnknownCode, Billed::Yes)
        );
        assert_eq!(r.provider_code.as_deref(), Some("299"));
        let r = classify(
            Api::Id2Period,
            200,
            r#"{"Code":"Success","Result":{"Passed":"N","SubCode":"299"}}"#,
        );
        assert_eq!(
            (r.classification.class, r.classification.billed),
            (OutcomeClass::UnknownCode, Billed::Unknown)
        );
    }

    #[test]
    fn errors_classify_on_the_code_whatever_the_status() {
        for status in [200, 400, 401, 403, 500] {
            let r = classify(
                Api::Id2,
                status,
                r#"{"RequestId":"r","HostId":"cloudauth-intl.cn-hongkong.aliyuncs.com","Code":"InvalidParameter","Message":"IdentifyNum 11010519491231002X of 张三 is invalid","Recommend":"https://api.aliyun.com/troubleshoot?q=InvalidParameter"}"#,
            );
            assert_eq!(
                r.classification.class,
                OutcomeClass::InvalidField,
                "{status}"
            );
            assert_eq!(r.provider_code.as_deref(), Some("InvalidParameter"));
            assert_eq!(r.provider_request_id.as_deref(), Some("r"));
            assert!(
                !r.detail.contains("11010519491231002X") && !r.detail.contains("张三"),
                "{}",
                r.detail
            );
        }
        let r = classify(
            Api::Mobile3,
            403,
            r#"{"Code":"Throttling.Api","Message":"x"}"#,
        );
        assert!(r.classification.throttled);
        let r = classify(
            Api::Mobile3,
            500,
            r#"{"Code":"Forbidden.ExceptionDataSource","Message":"x"}"#,
        );
        assert_eq!(r.classification.class, OutcomeClass::Transient);
        let r = classify(
            Api::Mobile3,
            403,
            r#"{"Code":"Forbidden.RiskControl","Message":"x"}"#,
        );
        assert_eq!(
            (r.classification.class, r.classification.billed),
            (OutcomeClass::UnknownCode, Billed::No)
        );
    }

    #[test]
    fn bodies_that_are_not_the_vendors_json() {
        let class = |status, body: &str| {
            let r = classify(Api::Mobile3, status, body);
            (
                r.classification.class,
                r.classification.billed,
                r.classification.throttled,
            )
        };
        assert_eq!(
            class(500, "<html>500</html>"),
            (OutcomeClass::Transient, Billed::No, false)
        );
        assert_eq!(class(502, ""), (OutcomeClass::Transient, Billed::No, false));
        assert_eq!(
            class(503, "{}"),
            (OutcomeClass::Transient, Billed::No, false)
        );
        assert_eq!(
            class(429, "slow down"),
            (OutcomeClass::Transient, Billed::No, true)
        );
        assert_eq!(
            class(404, "not found"),
            (OutcomeClass::ProviderWide, Billed::No, false)
        );
        // A 400 without the vendor's JSON: this request's parameters, never provider-wide.
        assert_eq!(
            class(400, "<html>Bad Request</html>"),
            (OutcomeClass::RequestRefused, Billed::No, false)
        );
        assert_eq!(
            class(504, "<html>Gateway Timeout</html>"),
            (OutcomeClass::Unknown, Billed::Unknown, false)
        );
        assert_eq!(
            classify(Api::Mobile3, 404, "x").provider_code.as_deref(),
            Some("HTTP404")
        );
        assert_eq!(
            class(200, "<html>ok</html>"),
            (OutcomeClass::Unknown, Billed::Unknown, false)
        );
        assert_eq!(
            class(200, r#"{"Code":"Success"}"#),
            (OutcomeClass::Unknown, Billed::Unknown, false)
        );
        assert_eq!(
            class(200, "{}"),
            (OutcomeClass::Unknown, Billed::Unknown, false)
        );
    }

    #[test]
    fn scrub_hides_numbers_and_chinese_text() {
        assert_eq!(
            scrub("IdentifyNum 11010519491231002X invalid"),
            "IdentifyNum *** invalid"
        );
        assert_eq!(scrub("mobile 13112345678 / 张三"), "mobile *** / **");
        assert_eq!(scrub("code 403 at 2026"), "code 403 at 2026");
        assert_eq!(scrub(&"a".repeat(300)).len(), 200);
    }

    #[test]
    fn debug_never_shows_the_secret() {
        let settings = crate::configuration::Settings::load_with(
            std::path::Path::new("config"),
            None,
            Some(
                [
                    ("KYCQ__PROVIDERS__ALIBABA__ACCESS_KEY_ID", "LTAIid"),
                    (
                        "KYCQ__PROVIDERS__ALIBABA__ACCESS_KEY_SECRET",
                        "very-secret-value",
                    ),
                    ("KYCQ__PROVIDERS__ALIBABA__PARAM_TYPE", "md5"),
                ]
                .into_iter()
                .map(|(k, v)| (k.to_owned(), v.to_owned()))
                .collect(),
            ),
        )
        .unwrap();
        let p = AlibabaProvider::from_settings(settings.providers.get("alibaba").unwrap()).unwrap();
        assert_eq!(p.param_type(), ParamType::Md5);
        let shown = format!("{p:?}");
        assert!(
            shown.contains("LTAIid") && !shown.contains("very-secret-value"),
            "{shown}"
        );
        assert_eq!(
            p.action(CheckKind::Id2Period),
            Some("Id2MetaPeriodVerifyIntl")
        );
        assert_eq!(p.action(CheckKind::Mobile3), Some("Mobile3MetaVerifyIntl"));
        assert_eq!(p.action(CheckKind::Id2), Some("Id2MetaVerifyIntl"));
    }
}
