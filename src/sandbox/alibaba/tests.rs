//! Alibaba's sandbox tests: every vendor code and shared scenario per API through kycq's client, the ACS3 checks and what the official Python SDK sends.

use std::collections::HashSet;

use chrono::{DateTime, Utc};
use serde_json::Value;

use super::*;
use crate::check::{Billed, CheckKind, CheckRequest, ReasonCode as R};
use crate::providers::alibaba::SANDBOX_ACCESS_KEY_SECRET as SECRET;
use crate::providers::alibaba::{AlibabaProvider, SANDBOX_ACCESS_KEY_ID as KEY_ID, VERSION};
use crate::providers::signing::{acs3, sha256_hex};
use crate::providers::{OutcomeClass, Provider, ProviderReply};
use crate::sandbox::http_fault;
use crate::sandbox::scenarios::{identity, identity_with_code, Scenario, TestIdentity};
use crate::sandbox::testing::{self, spawn, spawn_faulty, TestSandbox};

/// Alibaba calls on the shared test sandbox.
trait Calls {
    /// kycq's Alibaba client pointed at the sandbox with these credentials and `param_type`.
    fn provider_with(&self, key_id: &str, secret: &str, param_type: &str) -> AlibabaProvider;
    /// kycq's Alibaba client with the sandbox's credentials, plaintext.
    fn provider(&self) -> AlibabaProvider;
    /// A raw call, the response as it arrives (the body not read yet).
    async fn send_response(&self, raw: Raw) -> reqwest::Response;
    /// A raw call: the status and the JSON answer (`null` when it is not JSON).
    async fn send(&self, raw: Raw) -> (u16, Value);
}

impl Calls for TestSandbox {
    fn provider_with(&self, key_id: &str, secret: &str, param_type: &str) -> AlibabaProvider {
        let section = self.provider_section(
            "alibaba",
            &[
                ("access_key_id", key_id.to_owned()),
                ("access_key_secret", secret.to_owned()),
                ("param_type", param_type.to_owned()),
            ],
        );
        AlibabaProvider::from_settings(&section).unwrap()
    }

    fn provider(&self) -> AlibabaProvider {
        self.provider_with(KEY_ID, SECRET, "normal")
    }

    async fn send_response(&self, raw: Raw) -> reqwest::Response {
        let path = match raw.query.as_str() {
            "" => "/".to_owned(),
            query => format!("/?{query}"),
        };
        self.post_raw(&path, raw.headers, raw.body).await
    }

    async fn send(&self, raw: Raw) -> (u16, Value) {
        let resp = self.send_response(raw).await;
        let status = resp.status().as_u16();
        (status, resp.json().await.unwrap_or(Value::Null))
    }
}

fn check_request(api: Api, who: &TestIdentity, request_id: &str) -> CheckRequest {
    let check = match api {
        Api::Mobile3 => CheckKind::Mobile3,
        Api::Id2 => CheckKind::Id2,
        Api::Id2Period => CheckKind::Id2Period,
    };
    testing::check_request(check, who, request_id)
}

/// What the client makes of an answer and what the ledger records, written out
/// independently of the code under test: (provider_code, class, reason, billed,
/// ledger code, ledger billed, HTTP status).
type Expected = (
    Option<&'static str>,
    OutcomeClass,
    Option<R>,
    Billed,
    &'static str,
    bool,
    u16,
);

fn verdict(code: &'static str, reason: R, billed: bool) -> Expected {
    let b = if billed { Billed::Yes } else { Billed::No };
    (
        Some(code),
        OutcomeClass::Verdict,
        Some(reason),
        b,
        code,
        billed,
        200,
    )
}

fn unknown(code: &'static str, billed: Billed, ledger_billed: bool) -> Expected {
    (
        Some(code),
        OutcomeClass::UnknownCode,
        Some(R::UnknownProviderCode),
        billed,
        code,
        ledger_billed,
        200,
    )
}

fn err(code: &'static str, class: OutcomeClass, reason: Option<R>, status: u16) -> Expected {
    (Some(code), class, reason, Billed::No, code, false, status)
}

fn expected_vendor(api: Api, code: &str) -> Expected {
    use Api::*;
    use OutcomeClass::*;
    let invalid_status = if api == Id2Period { 400 } else { 401 };
    let repeated_status = if api == Id2Period { 401 } else { 400 };
    match (code, api) {
        ("800", Mobile3) => verdict("101", R::Match, true),
        ("800", Id2) => verdict("1", R::Match, true),
        ("800", Id2Period) => verdict("200", R::Match, true),
        ("801", Mobile3) => verdict("201", R::MobileOwnerMismatch, true),
        ("802", Mobile3) => verdict("202", R::IdNumberMismatch, true),
        ("803", Mobile3) => verdict("203", R::NameMismatch, true),
        ("804", Mobile3) => verdict("204", R::MismatchUnspecified, true),
        ("801" | "802" | "803" | "804", Id2) => verdict("2", R::NameIdNumberMismatch, true),
        ("801" | "802" | "803" | "804", Id2Period) => {
            verdict("223", R::IdentityOrValidityMismatch, true)
        }
        ("805", Mobile3) => verdict("301", R::NoRecord, false),
        ("805", Id2) => verdict("3", R::NoRecord, false),
        ("805", Id2Period) => verdict("202", R::NoRecord, true),
        ("806", Mobile3) => unknown("205", Billed::Yes, true),
        ("806", Id2) => unknown("4", Billed::Unknown, false),
        ("806", Id2Period) => unknown("224", Billed::Unknown, true),
        ("807", Mobile3) => unknown("401", Billed::Unknown, false),
        ("807", Id2) => unknown("9", Billed::Unknown, false),
        ("807", Id2Period) => unknown("201", Billed::Unknown, true),
        ("808", _) => (
            Some("HTTP200"),
            Unknown,
            None,
            Billed::Unknown,
            "HTTP200",
            true,
            200,
        ),
        ("810", _) => err(
            "MissingParameter",
            InvalidField,
            Some(R::InvalidRequest),
            400,
        ),
        ("811", _) => err(
            "InvalidParameter",
            InvalidField,
            Some(R::InvalidRequest),
            invalid_status,
        ),
        ("812", _) => err(
            "Forbidden.ExceptionRepeatedInvoke",
            IdentityLimit,
            Some(R::RepeatedInvocationBlocked),
            repeated_status,
        ),
        ("813", _) => err("Throttling.Api", Transient, None, 403),
        ("814", _) => err("Throttling.User", Transient, None, 400),
        ("815", _) => err("InternalError", Transient, None, 500),
        ("816", _) => err("ServiceUnavailable", Transient, None, 503),
        ("817", _) => err("Forbidden.ExceptionDataSource", Transient, None, 500),
        ("818", _) => err("Forbidden.AccountAccessDenied", ProviderWide, None, 403),
        ("819", _) => err("Forbidden.RAMUserAccessDenied", ProviderWide, None, 403),
        ("820", _) => err("SignatureDoesNotMatch", ProviderWide, None, 400),
        ("821", _) => err("InvalidAccessKeyId.NotFound", ProviderWide, None, 404),
        ("822", _) => err("InvalidAccessKeyId.Inactive", ProviderWide, None, 400),
        ("823", _) => err("IncompleteSignature", ProviderWide, None, 400),
        ("824", _) => err("InvalidTimeStamp.Expired", ProviderWide, None, 400),
        ("825", _) => err("InvalidTimeStamp.Format", ProviderWide, None, 400),
        ("826", _) => err("SignatureNonceUsed", ProviderWide, None, 400),
        ("827", _) => err(
            "Forbidden.RiskControl",
            UnknownCode,
            Some(R::UnknownProviderCode),
            403,
        ),
        ("828", _) => err("Throttling", Transient, None, 400),
        other => panic!("no expectation for {other:?}"),
    }
}

fn expected_scenario(api: Api, s: Scenario) -> Expected {
    use Api::*;
    use OutcomeClass::*;
    let invalid_status = if api == Id2Period { 400 } else { 401 };
    let m = match api {
        Mobile3 => verdict("101", R::Match, true),
        Id2 => verdict("1", R::Match, true),
        Id2Period => verdict("200", R::Match, true),
    };
    match (s, api) {
        (Scenario::Match | Scenario::Slow, _) => m,
        (Scenario::NameMismatch, Mobile3) => verdict("203", R::NameMismatch, true),
        (Scenario::IdNumberMismatch, Mobile3) => verdict("202", R::IdNumberMismatch, true),
        (Scenario::MobileOwnerMismatch, Mobile3) => verdict("201", R::MobileOwnerMismatch, true),
        (Scenario::MobileOwnerMismatch, _) => m,
        (Scenario::MismatchUnspecified | Scenario::NameIdNumberMismatch, Mobile3) => {
            verdict("204", R::MismatchUnspecified, true)
        }
        (
            Scenario::NameMismatch
            | Scenario::IdNumberMismatch
            | Scenario::MismatchUnspecified
            | Scenario::NameIdNumberMismatch,
            Id2,
        ) => verdict("2", R::NameIdNumberMismatch, true),
        (
            Scenario::NameMismatch
            | Scenario::IdNumberMismatch
            | Scenario::MismatchUnspecified
            | Scenario::NameIdNumberMismatch,
            Id2Period,
        ) => verdict("223", R::IdentityOrValidityMismatch, true),
        (Scenario::InvalidMobile | Scenario::UnsupportedNumberRange, Mobile3) => err(
            "InvalidParameter",
            InvalidField,
            Some(R::InvalidRequest),
            401,
        ),
        (Scenario::InvalidMobile | Scenario::UnsupportedNumberRange, _) => m,
        (Scenario::InvalidIdNumber | Scenario::InvalidName, _) => err(
            "InvalidParameter",
            InvalidField,
            Some(R::InvalidRequest),
            invalid_status,
        ),
        (Scenario::NoRecord, Mobile3) => verdict("301", R::NoRecord, false),
        (Scenario::NoRecord, Id2) => verdict("3", R::NoRecord, false),
        (Scenario::NoRecord, Id2Period) => verdict("202", R::NoRecord, true),
        (Scenario::Busy | Scenario::BusyOnce, _) => {
            err("Forbidden.ExceptionDataSource", Transient, None, 500)
        }
        (Scenario::IdentityDailyLimit, _) => err(
            "Forbidden.ExceptionRepeatedInvoke",
            IdentityLimit,
            Some(R::RepeatedInvocationBlocked),
            if api == Id2Period { 401 } else { 400 },
        ),
        (Scenario::Throttled | Scenario::ThrottledOnce, _) => {
            err("Throttling.Api", Transient, None, 403)
        }
        (Scenario::InternalError, _) => err("InternalError", Transient, None, 500),
        (Scenario::Http500 | Scenario::Http500Once, _) => (
            Some("HTTP500"),
            Transient,
            None,
            Billed::No,
            "HTTP500",
            false,
            500,
        ),
        (Scenario::UnknownCode, Mobile3) => unknown("205", Billed::Yes, true),
        (Scenario::UnknownCode, Id2) => unknown("4", Billed::Unknown, false),
        (Scenario::UnknownCode, Id2Period) => unknown("224", Billed::Unknown, true),
        (Scenario::ProviderWide, _) => {
            err("Forbidden.AccountAccessDenied", ProviderWide, None, 403)
        }
        (
            Scenario::Http502CutOff
            | Scenario::Http429Once
            | Scenario::Http400Backend
            | Scenario::Http504CutOff,
            _,
        ) => unreachable!(
            "{s:?} is answered at the HTTP layer: see http_fault::testing::expected_record"
        ),
    }
}

fn assert_reply(reply: &ProviderReply, want: &Expected, what: &str) {
    let c = &reply.classification;
    assert_eq!(
        (
            reply.provider_code.as_deref(),
            c.class,
            c.reason_code,
            c.billed
        ),
        (want.0, want.1, want.2, want.3),
        "{what}: {}",
        reply.detail
    );
    assert_eq!(reply.http_status, Some(want.6), "{what}");
    if want.0.is_some_and(|c| !c.starts_with("HTTP")) {
        let id = reply.provider_request_id.as_deref().expect("a RequestId");
        assert!(
            uuid::Uuid::parse_str(id).is_ok() && id == id.to_uppercase(),
            "{id}"
        );
    }
}

async fn call_and_check(
    sandbox: &TestSandbox,
    provider: &AlibabaProvider,
    api: Api,
    who: &TestIdentity,
    want: &Expected,
    what: &str,
) {
    let reply = provider.call(&check_request(api, who, "req1")).await;
    assert_reply(&reply, want, what);
    assert_recorded(sandbox, api, who, (want.6, want.4, want.5), what);
}

/// The last call the ledger recorded is `api`'s about `who`: (HTTP status, code, billed).
fn assert_recorded(
    sandbox: &TestSandbox,
    api: Api,
    who: &TestIdentity,
    want: (u16, &str, bool),
    what: &str,
) {
    let entry = sandbox.assert_last(want, what);
    assert_eq!(
        (entry.provider.as_str(), entry.action.as_str()),
        ("alibaba", api.action()),
        "{what}"
    );
    assert_eq!(
        entry.subject_key,
        Some(crate::sandbox::ledger::subject_key(&who.id_number)),
        "{what}"
    );
}

#[tokio::test]
async fn every_vendor_code_answers_each_api_as_the_tables_say() {
    let sandbox = spawn().await;
    let provider = sandbox.provider();
    for (n, api) in Api::ALL.into_iter().enumerate() {
        for v in VENDOR_CODES {
            let who = identity_with_code(v.code, 10 + n as u32);
            let want = expected_vendor(api, v.code);
            call_and_check(
                &sandbox,
                &provider,
                api,
                &who,
                &want,
                &format!("{} {api:?}", v.code),
            )
            .await;
        }
    }
    let billed = sandbox.running.ledger.billed_count();
    let want: usize = Api::ALL
        .into_iter()
        .map(|api| {
            VENDOR_CODES
                .iter()
                .filter(|v| expected_vendor(api, v.code).5)
                .count()
        })
        .sum();
    assert_eq!(billed, want);
}

#[tokio::test]
async fn every_shared_scenario_renders_for_each_api() {
    let sandbox = spawn().await;
    let provider = sandbox.provider();
    for (n, api) in Api::ALL.into_iter().enumerate() {
        for s in Scenario::ALL
            .into_iter()
            .filter(|s| http_fault::testing::expected_record(*s).is_none())
        {
            let who = identity(s, 20 + n as u32);
            call_and_check(
                &sandbox,
                &provider,
                api,
                &who,
                &expected_scenario(api, s),
                &format!("{s:?} {api:?}"),
            )
            .await;
            if s.is_once() {
                // The next call for the same identity matches.
                let reply = provider.call(&check_request(api, &who, "req1")).await;
                assert_eq!(
                    reply.classification.reason_code,
                    Some(R::Match),
                    "{s:?} {api:?}"
                );
            }
        }
    }
}

#[tokio::test]
async fn mobile3_carries_the_carrier_and_md5_mode_resolves_documented_identities() {
    let sandbox = spawn().await;
    let plain = sandbox.provider();
    let reply = plain
        .call(&check_request(
            Api::Mobile3,
            &identity(Scenario::Match, 0),
            "r",
        ))
        .await;
    assert_eq!(reply.carrier, Some(crate::check::Carrier::Cmcc));
    let md5 = sandbox.provider_with(KEY_ID, SECRET, "md5");
    for code in [
        "001", "901", "902", "903", "909", "803", "806", "812", "813",
    ] {
        for variant in [0, MD5_VARIANTS - 1] {
            let who = test_identity(code, variant);
            let want = match Scenario::ALL.into_iter().find(|s| s.code() == code) {
                Some(s) => expected_scenario(Api::Mobile3, s),
                None if code == "001" => expected_scenario(Api::Mobile3, Scenario::Match),
                None => expected_vendor(Api::Mobile3, code),
            };
            call_and_check(
                &sandbox,
                &md5,
                Api::Mobile3,
                &who,
                &want,
                &format!("md5 {code}/{variant}"),
            )
            .await;
        }
    }
    // The carrier is recognised from the mobile's MD5 too.
    let reply = md5
        .call(&check_request(
            Api::Mobile3,
            &identity(Scenario::Match, 5),
            "r",
        ))
        .await;
    assert_eq!(reply.carrier, Some(crate::check::Carrier::Cmcc));
    // Not a documented identity (or a variant past the map): a match, recorded by its hash.
    let stranger = identity_with_code("901", MD5_VARIANTS);
    let reply = md5.call(&check_request(Api::Mobile3, &stranger, "r")).await;
    assert_eq!(reply.classification.reason_code, Some(R::Match));
    assert_eq!(reply.carrier, None);
    let entry = sandbox.last_entry();
    assert_eq!(
        entry.subject_key,
        Some(crate::sandbox::ledger::subject_key(
            &crate::providers::alibaba::request::md5_hex(&stranger.id_number)
        ))
    );
    // Id2 and the period API take plaintext only, whatever param_type says.
    let reply = md5
        .call(&check_request(
            Api::Id2,
            &identity(Scenario::NameMismatch, 0),
            "r",
        ))
        .await;
    assert_eq!(reply.provider_code.as_deref(), Some("2"));
}

#[tokio::test]
async fn wrong_secret_and_unknown_key_are_refused_unbilled() {
    let sandbox = spawn().await;
    let who = identity(Scenario::Match, 0);
    for (key_id, secret, code, status) in [
        (KEY_ID, "not-the-secret", "SignatureDoesNotMatch", 400),
        (
            "LTAIsomeoneelse",
            SECRET,
            "InvalidAccessKeyId.NotFound",
            404,
        ),
    ] {
        let provider = sandbox.provider_with(key_id, secret, "normal");
        for api in Api::ALL {
            let reply = provider.call(&check_request(api, &who, "r")).await;
            assert_eq!(reply.provider_code.as_deref(), Some(code));
            assert_eq!(reply.classification.class, OutcomeClass::ProviderWide);
            assert_eq!(reply.http_status, Some(status));
            let entry = sandbox.last_entry();
            assert_eq!((entry.code.as_str(), entry.billed), (code, false));
            // Refused calls are still attributed to the identity (hashed).
            assert_eq!(
                entry.subject_key,
                Some(crate::sandbox::ledger::subject_key(&who.id_number))
            );
        }
    }
    assert_eq!(sandbox.running.ledger.billed_count(), 0);
}

/// A request signed with [`acs3::sign_rpc`], open to tampering before it is sent.
struct Raw {
    query: String,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

fn raw(
    sandbox: &TestSandbox,
    api: Api,
    who: &TestIdentity,
    date: DateTime<Utc>,
    nonce: &str,
) -> Raw {
    let host = sandbox.running.addr.to_string();
    let built = crate::providers::alibaba::request::build_request(
        &check_request(api, who, "req1"),
        crate::providers::alibaba::ParamType::Normal,
    )
    .unwrap();
    let signed =
        crate::providers::alibaba::request::sign(&built, &host, KEY_ID, SECRET, date, nonce);
    Raw {
        query: signed.query,
        headers: signed
            .headers
            .into_iter()
            .map(|(n, v)| (n.to_owned(), v))
            .collect(),
        body: signed.body,
    }
}

#[tokio::test]
async fn http_faults_render_for_each_api_after_the_signature_check() {
    let sandbox = spawn().await;
    let mut calls = 0;
    for (n, api) in Api::ALL.into_iter().enumerate() {
        for s in Scenario::ALL {
            let Some((status, code, billed)) = http_fault::testing::expected_record(s) else {
                continue;
            };
            let what = format!("{s:?} {api:?}");
            let who = identity(s, 60 + n as u32);
            let fault = http_fault::testing::expected_fault(s, 1).unwrap();
            let r = raw(
                &sandbox,
                api,
                &who,
                Utc::now(),
                &format!("f{n}{}", s.code()),
            );
            let response = sandbox.send_response(r).await;
            assert_eq!(response.status().as_u16(), status, "{what}");
            http_fault::testing::assert_answer(response, fault).await;
            calls += 1;
            assert_recorded(&sandbox, api, &who, (status, code, billed), &what);
            // The second call for the identity: 935 matches, the others fault again.
            let r = raw(
                &sandbox,
                api,
                &who,
                Utc::now(),
                &format!("g{n}{}", s.code()),
            );
            let (again, v) = sandbox.send(r).await;
            calls += 1;
            if s == Scenario::Http429Once {
                assert_eq!(
                    (again, v["Code"].as_str()),
                    (200, Some("Success")),
                    "{what}"
                );
            } else {
                assert_eq!(again, status, "{what}");
            }
            // A bad signature is refused in Alibaba's format first.
            let mut r = raw(
                &sandbox,
                api,
                &who,
                Utc::now(),
                &format!("h{n}{}", s.code()),
            );
            set(
                &mut r,
                "authorization",
                "ACS3-HMAC-SHA256 Credential=LTAIkycqsandbox,SignedHeaders=host,Signature=00",
            );
            let (refused, v) = sandbox.send(r).await;
            calls += 1;
            assert_eq!(
                (refused, v["Code"].as_str()),
                (400, Some("IncompleteSignature")),
                "{what}"
            );
        }
    }
    assert_eq!(sandbox.running.ledger.len(), calls);
    // Only the matches of 935's second calls are billed.
    assert_eq!(sandbox.running.ledger.billed_count(), Api::ALL.len());
}

fn set(raw: &mut Raw, name: &str, value: &str) {
    raw.headers.retain(|(n, _)| n != name);
    raw.headers.push((name.to_owned(), value.to_owned()));
}

#[tokio::test]
async fn stale_dates_tampering_replays_and_unsigned_headers_are_refused() {
    let sandbox = spawn().await;
    let who = identity(Scenario::Match, 3);
    let now = Utc::now();
    let code = |v: &Value| v["Code"].as_str().unwrap_or_default().to_owned();

    // Within 15 minutes either way: accepted.
    for (i, skew) in [-14i64, 14].into_iter().enumerate() {
        let r = raw(
            &sandbox,
            Api::Mobile3,
            &who,
            now + chrono::Duration::minutes(skew),
            &format!("ok{i}"),
        );
        let (status, v) = sandbox.send(r).await;
        assert_eq!((status, code(&v)), (200, "Success".into()), "{v}");
    }
    for skew in [-16i64, 16] {
        let r = raw(
            &sandbox,
            Api::Id2,
            &who,
            now + chrono::Duration::minutes(skew),
            &format!("stale{skew}"),
        );
        let (status, v) = sandbox.send(r).await;
        assert_eq!(
            (status, code(&v)),
            (400, "InvalidTimeStamp.Expired".into()),
            "{v}"
        );
        assert!(
            v["HostId"].is_string() && v["Recommend"].is_string() && v["RequestId"].is_string()
        );
        assert!(v["Message"].as_str().is_some_and(|m| !m.is_empty()));
    }
    let mut r = raw(&sandbox, Api::Id2, &who, now, "badformat");
    set(&mut r, "x-acs-date", "2026-11-23 02:18:16");
    assert_eq!(code(&sandbox.send(r).await.1), "InvalidTimeStamp.Format");

    // A tampered query, a tampered body, a tampered signed header.
    let mut r = raw(&sandbox, Api::Mobile3, &who, now, "tq");
    r.query = r.query.replace("ParamType=normal", "ParamType=md5");
    let (status, v) = sandbox.send(r).await;
    assert_eq!((status, code(&v)), (400, "SignatureDoesNotMatch".into()));
    assert!(
        v["Message"].as_str().unwrap().contains("ACS3-HMAC-SHA256#"),
        "{v}"
    );
    let mut r = raw(&sandbox, Api::Id2Period, &who, now, "tb");
    r.body = String::from_utf8(r.body)
        .unwrap()
        .replace("20301001", "20311001")
        .into_bytes();
    assert_eq!(code(&sandbox.send(r).await.1), "SignatureDoesNotMatch");
    let mut r = raw(&sandbox, Api::Id2Period, &who, now, "tb2");
    let tampered = String::from_utf8(r.body.clone())
        .unwrap()
        .replace("20301001", "20311001");
    set(
        &mut r,
        "x-acs-content-sha256",
        &sha256_hex(tampered.as_bytes()),
    );
    r.body = tampered.into_bytes();
    assert_eq!(code(&sandbox.send(r).await.1), "SignatureDoesNotMatch");
    let mut r = raw(&sandbox, Api::Id2, &who, now, "th");
    set(&mut r, "x-acs-action", "Mobile3MetaVerifyIntl");
    assert_eq!(code(&sandbox.send(r).await.1), "SignatureDoesNotMatch");

    // An x-acs-* header that was not signed; no Authorization at all.
    let mut r = raw(&sandbox, Api::Id2, &who, now, "unsigned");
    r.headers.push(("x-acs-extra".into(), "1".into()));
    assert_eq!(code(&sandbox.send(r).await.1), "IncompleteSignature");
    let mut r = raw(&sandbox, Api::Id2, &who, now, "noauth");
    r.headers.retain(|(n, _)| n != "authorization");
    assert_eq!(code(&sandbox.send(r).await.1), "IncompleteSignature");

    // The same nonce twice.
    let first = raw(&sandbox, Api::Id2, &who, now, "replayed");
    let again = Raw {
        query: first.query.clone(),
        headers: first.headers.clone(),
        body: first.body.clone(),
    };
    assert_eq!(code(&sandbox.send(first).await.1), "Success");
    assert_eq!(code(&sandbox.send(again).await.1), "SignatureNonceUsed");

    // Spaces sent as `+` (what the Python SDK's urlencode writes) verify against `%20`.
    let spaced = TestIdentity {
        name: "Zhang San".into(),
        ..identity(Scenario::Match, 4)
    };
    let mut r = raw(&sandbox, Api::Id2, &spaced, now, "plus");
    assert!(r.query.contains("Zhang%20San"));
    r.query = r.query.replace("%20", "+");
    assert_eq!(code(&sandbox.send(r).await.1), "Success");

    // Refusals are never billed: only the four accepted calls are.
    assert_eq!(sandbox.running.ledger.billed_count(), 4);
}

#[tokio::test]
async fn action_version_and_parameters_are_checked_like_the_vendor() {
    let sandbox = spawn().await;
    let who = identity(Scenario::Match, 6);
    let now = Utc::now();
    let host = sandbox.running.addr.to_string();
    let send = |action: &'static str,
                version: &'static str,
                query: Vec<(&'static str, String)>,
                form: Option<Vec<(&'static str, String)>>,
                nonce: String| {
        let signed = acs3::sign_rpc(
            &acs3::RpcCall {
                host: &host,
                action,
                version,
                query: &query,
                form: form.as_deref(),
            },
            KEY_ID,
            SECRET,
            now,
            &nonce,
        );
        let raw = Raw {
            query: signed.query,
            headers: signed
                .headers
                .into_iter()
                .map(|(n, v)| (n.to_owned(), v))
                .collect(),
            body: signed.body,
        };
        sandbox.send(raw)
    };
    let p = |k: &'static str, v: &str| (k, v.to_owned());
    let m3 = |param_type: &str, id: &str| {
        vec![
            p("ProductCode", "MOBILE_3META"),
            p("ParamType", param_type),
            p("IdentifyNum", id),
            p("UserName", &who.name),
            p("Mobile", &who.mobile),
        ]
    };
    type Params = Vec<(&'static str, String)>;
    type Case = (
        &'static str,
        &'static str,
        Params,
        Option<Params>,
        u16,
        &'static str,
    );
    let cases: Vec<Case> = vec![
        (
            "DescribeRegions",
            VERSION,
            m3("normal", &who.id_number),
            None,
            404,
            "InvalidAction.NotFound",
        ),
        (
            "Mobile3MetaVerifyIntl",
            "2019-03-07",
            m3("normal", &who.id_number),
            None,
            400,
            "InvalidVersion",
        ),
        (
            "Mobile3MetaVerifyIntl",
            VERSION,
            m3("sm2", &who.id_number),
            None,
            401,
            "InvalidParameter",
        ),
        (
            "Mobile3MetaVerifyIntl",
            VERSION,
            m3("md5", &who.id_number),
            None,
            401,
            "InvalidParameter",
        ),
        (
            "Mobile3MetaVerifyIntl",
            VERSION,
            m3("normal", "110105197001010012"),
            None,
            401,
            "InvalidParameter",
        ),
        (
            "Mobile3MetaVerifyIntl",
            VERSION,
            m3("normal", &who.id_number)[..4].to_vec(),
            None,
            400,
            "MissingParameter",
        ),
        (
            "Id2MetaVerifyIntl",
            VERSION,
            vec![
                p("ProductCode", "ID_2META"),
                p("ParamType", "md5"),
                p("IdentifyNum", &"a".repeat(32)),
                p("UserName", &"b".repeat(32)),
            ],
            None,
            401,
            "InvalidParameter",
        ),
        (
            "Id2MetaPeriodVerifyIntl",
            VERSION,
            Vec::new(),
            Some(vec![
                p("ProductCode", "eKYC_Date_MIN"),
                p("DocType", "00000001"),
                p("DocName", &who.name),
                p("DocNo", &who.id_number),
                p("ValidityStartDate", "20201001"),
                p("ValidityEndDate", "20301001"),
            ]),
            400,
            "MissingParameter",
        ),
        (
            "Id2MetaPeriodVerifyIntl",
            VERSION,
            Vec::new(),
            Some(vec![
                p("ProductCode", "eKYC_Date_MIN"),
                p("MerchantBizId", "b1"),
                p("DocType", "00000002"),
                p("DocName", &who.name),
                p("DocNo", &who.id_number),
                p("ValidityStartDate", "20201001"),
                p("ValidityEndDate", "20301001"),
            ]),
            400,
            "InvalidParameter",
        ),
        (
            "Id2MetaPeriodVerifyIntl",
            VERSION,
            Vec::new(),
            Some(vec![
                p("ProductCode", "eKYC_Date_MIN"),
                p("MerchantBizId", "b1"),
                p("SceneCode", "too-long-scene"),
                p("DocType", "00000001"),
                p("DocName", &who.name),
                p("DocNo", &who.id_number),
                p("ValidityStartDate", "20201001"),
                p("ValidityEndDate", "长期"),
            ]),
            400,
            "InvalidParameter",
        ),
        // Parameters of the period API in the query string are taken too, and 长期 / long-term.
        (
            "Id2MetaPeriodVerifyIntl",
            VERSION,
            vec![
                p("ProductCode", "eKYC_Date_MIN"),
                p("MerchantBizId", "b1"),
                p("DocType", "00000001"),
                p("DocName", &who.name),
                p("DocNo", &who.id_number),
                p("ValidityStartDate", "20201001"),
                p("ValidityEndDate", "长期"),
            ],
            None,
            200,
            "Success",
        ),
        (
            "Id2MetaPeriodVerifyIntl",
            VERSION,
            Vec::new(),
            Some(vec![
                p("ProductCode", "eKYC_Date_MIN"),
                p("MerchantBizId", "b2"),
                p("DocType", "00000001"),
                p("DocName", &who.name),
                p("DocNo", &who.id_number),
                p("ValidityStartDate", "20201001"),
                p("ValidityEndDate", "long-term"),
            ]),
            200,
            "Success",
        ),
    ];
    for (i, (action, version, query, form, status, want)) in cases.into_iter().enumerate() {
        let (got_status, v) = send(action, version, query, form, format!("n{i}")).await;
        assert_eq!(
            (got_status, v["Code"].as_str().unwrap_or_default()),
            (status, want),
            "case {i}: {v}"
        );
        assert!(
            !v.to_string().contains(&who.id_number),
            "case {i} echoes the ID number"
        );
    }
}

#[tokio::test]
async fn injected_faults_are_transient_and_unbilled() {
    let sandbox = spawn_faulty(5).await;
    let provider = sandbox.provider();
    let who = identity(Scenario::Match, 0);
    for _ in 0..8 {
        let reply = provider.call(&check_request(Api::Mobile3, &who, "r")).await;
        assert_eq!(
            reply.classification.class,
            OutcomeClass::Transient,
            "{}",
            reply.detail
        );
        assert!(
            ["ServiceUnavailable", "HTTP500"].contains(&reply.provider_code.as_deref().unwrap())
        );
    }
    assert_eq!(sandbox.running.ledger.billed_count(), 0);
    // Authentication still comes first.
    let wrong = sandbox.provider_with(KEY_ID, "wrong", "normal");
    let reply = wrong.call(&check_request(Api::Mobile3, &who, "r")).await;
    assert_eq!(
        reply.provider_code.as_deref(),
        Some("SignatureDoesNotMatch")
    );
}

#[tokio::test]
async fn the_ledger_and_answers_never_hold_plaintext_pii() {
    let sandbox = spawn().await;
    let provider = sandbox.provider();
    let wrong = sandbox.provider_with(KEY_ID, "wrong", "normal");
    let mut people = Vec::new();
    for (i, code) in documented_codes().into_iter().enumerate() {
        let who = test_identity(code, 40 + i as u32);
        for api in Api::ALL {
            let reply = provider.call(&check_request(api, &who, "r")).await;
            assert!(!reply.detail.contains(&who.id_number) && !reply.detail.contains(&who.name));
            wrong.call(&check_request(api, &who, "r")).await;
        }
        people.push(who);
    }
    sandbox.assert_ledger_hides(&people).await;
}

#[test]
fn accepts_what_the_official_python_sdk_sends() {
    // The Id2MetaVerifyIntl request of SDK_CAPTURES.md, as the official Python SDK sent it.
    let headers = testing::header_map(&[
        ("accept-encoding", "identity"),
        ("host", "127.0.0.1:18080"),
        ("x-acs-version", "2022-08-09"),
        ("x-acs-action", "Id2MetaVerifyIntl"),
        ("user-agent", "AlibabaCloud (Linux; x86_64) Python/3.11.7 Core/0.4.3 TeaDSL/2"),
        ("x-acs-date", "2026-11-23T02:18:16Z"),
        ("x-acs-signature-nonce", "78a744132c6ff7aa82583b03795154ec"),
        ("accept", "application/json"),
        ("x-acs-content-sha256", acs3::EMPTY_BODY_SHA256),
        ("x-acs-credentials-provider", "static_ak"),
        (
            "authorization",
            "ACS3-HMAC-SHA256 Credential=testid,SignedHeaders=accept;host;user-agent;x-acs-action;x-acs-content-sha256;x-acs-credentials-provider;x-acs-date;x-acs-signature-nonce;x-acs-version,Signature=c11eacece803ac250c4c3776517a3b3fe4b153c84fb0ba2b191e724b54ee6bb4",
        ),
    ]);
    let query = "IdentifyNum=11010519491231002X&ParamType=normal&ProductCode=ID_2META&UserName=%E5%BC%A0%E4%B8%89";
    let call = Received {
        method: "POST",
        path: "/",
        raw_query: query,
        headers: &headers,
        body: b"",
    };
    let at = acs3::parse_date("2026-11-23T02:18:16Z").unwrap();
    let auth = |call: &Received<'_>, key: &str, secret: &str, now| {
        authenticate(call, key, secret, now).map_err(|a| a.code())
    };
    assert_eq!(
        auth(
            &call,
            "testid",
            "testsecret",
            at + chrono::Duration::minutes(15)
        ),
        Ok("78a744132c6ff7aa82583b03795154ec".into())
    );
    assert_eq!(
        auth(
            &call,
            "testid",
            "testsecret",
            at + chrono::Duration::seconds(901)
        ),
        Err("InvalidTimeStamp.Expired".into())
    );
    assert_eq!(
        auth(&call, "other", "testsecret", at),
        Err("InvalidAccessKeyId.NotFound".into())
    );
    assert_eq!(
        auth(&call, "testid", "testsecreT", at),
        Err("SignatureDoesNotMatch".into())
    );
    let tampered = Received { raw_query: "IdentifyNum=11010519491231002X&ParamType=normal&ProductCode=ID_2META&UserName=%E6%9D%8E%E5%9B%9B", ..call };
    assert_eq!(
        auth(&tampered, "testid", "testsecret", at),
        Err("SignatureDoesNotMatch".into())
    );
    let with_body = Received {
        body: b"x=1",
        ..call
    };
    assert_eq!(
        auth(&with_body, "testid", "testsecret", at),
        Err("SignatureDoesNotMatch".into())
    );
    assert_eq!(check_action(&headers), Ok(Api::Id2));
    let params = parameters(query, &headers, b"").unwrap();
    let subject = validate(Api::Id2, &params).unwrap();
    assert_eq!(subject.name, "张三");
    assert!(!format!("{subject:?}").contains("11010519491231002X"));
    assert_eq!(resolve(&subject).code.as_deref(), Some("002"));
    assert_eq!(
        answer_for(Api::Id2, Some("002"), 1).0,
        Answer::Result(Outcome::Id2 { biz: "1" })
    );
}

#[test]
fn vendor_codes_are_in_range_distinct_and_cover_every_table_row() {
    use crate::providers::alibaba::codes;
    let mut seen = HashSet::new();
    for v in VENDOR_CODES {
        let n: u16 = v.code.parse().unwrap();
        assert!((800..=849).contains(&n), "{}", v.code);
        assert!(seen.insert(v.code), "duplicate {}", v.code);
        assert!(!Scenario::ALL.iter().any(|s| s.code() == v.code));
    }
    let answers: Vec<Answer> = Api::ALL
        .into_iter()
        .flat_map(|api| VENDOR_CODES.iter().map(move |v| vendor_answer(api, v)))
        .collect();
    let produced = |f: &dyn Fn(&Answer) -> bool| answers.iter().any(f);
    for row in codes::MOBILE3_SUB_CODES {
        assert!(
            produced(
                &|a| matches!(a, Answer::Result(Outcome::Mobile3 { biz, sub }) if Some(*biz) == row.pairs_with && *sub == row.code)
            ),
            "{}",
            row.code
        );
    }
    for row in codes::MOBILE3_BIZ_CODES {
        assert!(
            produced(
                &|a| matches!(a, Answer::Result(Outcome::Mobile3 { biz, .. }) if *biz == row.code)
            ),
            "{}",
            row.code
        );
    }
    for row in codes::ID2_BIZ_CODES {
        assert!(
            produced(&|a| matches!(a, Answer::Result(Outcome::Id2 { biz }) if *biz == row.code)),
            "{}",
            row.code
        );
    }
    for row in codes::PERIOD_SUB_CODES {
        assert!(
            produced(
                &|a| matches!(a, Answer::Result(Outcome::Period { passed, sub }) if Some(*passed) == row.pairs_with && *sub == row.code)
            ),
            "{}",
            row.code
        );
    }
    for row in codes::ERROR_CODES {
        assert!(
            produced(
                &|a| matches!(a, Answer::Error { code, .. } if codes::error_row(code).map(|r| r.code) == Some(row.code))
            ),
            "{}",
            row.code
        );
    }
    assert!(produced(
        &|a| matches!(a, Answer::Error { code, .. } if codes::error_row(code).is_none())
    ));
    assert!(produced(
        &|a| matches!(a, Answer::Result(Outcome::Mobile3 { sub, .. }) if !codes::MOBILE3_SUB_CODES.iter().any(|r| r.code == *sub))
    ));
    assert_eq!(
        md5_identities().len(),
        documented_codes().len() * MD5_VARIANTS as usize
    );
}

#[test]
fn the_readme_identities() {
    for (code, id) in [
        ("800", "110105197001018005"),
        ("803", "11010519700101803X"),
        ("811", "11010519700101811X"),
        ("828", "110105197001018283"),
    ] {
        assert_eq!(test_identity(code, 0).id_number, id);
    }
    assert_eq!(test_identity("901", 0).id_number, "110105197001019016");
}

#[test]
fn nonces_are_remembered_for_the_window_only() {
    let cache = NonceCache::default();
    assert!(cache.fresh("a", 0));
    assert!(!cache.fresh("a", 10));
    assert!(cache.fresh("b", 10));
    assert!(cache.fresh("a", 2 * MAX_CLOCK_SKEW_SECS + 1));
}
