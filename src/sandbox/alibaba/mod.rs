//! The sandbox's Alibaba cloudauth-intl (`Mobile3MetaVerifyIntl`, `Id2MetaVerifyIntl`, `Id2MetaPeriodVerifyIntl`): ACS3 signature checks and answers in the vendor's own wire format.
//!
//! Checks run in the vendor's order, each refusal in the vendor's error shape
//! `{"RequestId","HostId","Code","Message","Recommend"}` with a 4xx/5xx status:
//! `Authorization` header (`IncompleteSignature`) → `x-acs-date` well formed and within 15
//! minutes (`InvalidTimeStamp.Format` / `.Expired`) → AccessKeyId (`InvalidAccessKeyId.NotFound`)
//! → every `host`, `content-type` and `x-acs-*` header signed (`IncompleteSignature`) →
//! `x-acs-content-sha256` equals the body's SHA-256 and the signature recomputed from the method,
//! path, re-canonicalised raw query and the headers named in `SignedHeaders` matches
//! (`SignatureDoesNotMatch`) → the nonce is fresh (`SignatureNonceUsed`) → action and version →
//! parameters (query string, plus a form body; `MissingParameter` / `InvalidParameter`) →
//! injected fault → the answer. Success is HTTP 200
//! `{"RequestId","Code":"Success","Message":"success","Result":{...}}`.
//!
//! The answer comes from the ID number's sequence code (`id[14..17]`): first this module's own
//! codes 800–849 ([`VENDOR_CODES`]), which produce every code of the Alibaba tables, then the
//! shared scenarios (`scenarios.rs`) rendered by [`scenario_answer`]. With `ParamType=md5` the
//! sequence code is looked up from the MD5 of the ID number among the documented identities
//! (variants 0..=999 of every code); an unknown hash answers a match. The HTTP-layer scenarios
//! 934–937 are the same for every API and vendor: [`Answer::Http`] delegates them to
//! [`super::http_fault`].
//!
//! Billing (the ledger) follows the vendor tables: Mobile3/Id2 BizCode 1 and 2 are billed, 3 is
//! not; every Id2MetaPeriodVerifyIntl SubCode is billed (202 included); errors are not billed;
//! a garbled (non-JSON) 200 was processed and is billed.

use axum::http::{HeaderMap, Uri};
use axum::response::Response;
use chrono::{DateTime, Utc};

use super::ledger::CallRecord;
use super::{header_str, AppState, InjectedFault};
use crate::providers::alibaba::Api;

mod answers;
mod auth;
mod params;
#[cfg(test)]
mod tests;

pub use answers::{
    answer_for, documented_codes, error_message, md5_identities, render, resolve, scenario_answer,
    test_identity, vendor_answer, vendor_code, Answer, Outcome, Resolved, VendorAnswer, VendorCode,
    MD5_VARIANTS, VENDOR_CODES,
};
pub(crate) use auth::NonceCache;
pub use auth::{authenticate, Received, MAX_CLOCK_SKEW_SECS, NONCE_MEMORY};
pub use params::{check_action, parameters, validate, Subject};

/// Provider name in the ledger.
pub const PROVIDER: &str = "alibaba";

struct Decided {
    answer: Answer,
    api: Option<Api>,
    /// For the ledger: the plaintext (or unresolved hashed) ID number.
    id_number: Option<String>,
    /// For `IspName`.
    mobile: Option<String>,
    slow: bool,
}

fn decide(
    state: &AppState,
    uri: &Uri,
    headers: &HeaderMap,
    body: &[u8],
    now: DateTime<Utc>,
) -> Decided {
    let raw_query = uri.query().unwrap_or("");
    let refused = |answer: Answer, api: Option<Api>| Decided {
        answer,
        api,
        id_number: params::peek_id(raw_query, headers, body),
        mobile: None,
        slow: false,
    };
    let settings = &state.settings;
    let received = Received {
        method: "POST",
        path: uri.path(),
        raw_query,
        headers,
        body,
    };
    let nonce = match authenticate(
        &received,
        settings.credential(PROVIDER, "access_key_id"),
        settings.credential(PROVIDER, "access_key_secret"),
        now,
    ) {
        Ok(nonce) => nonce,
        Err(answer) => {
            return refused(
                answer,
                Api::from_action(header_str(headers, "x-acs-action").unwrap_or_default()),
            )
        }
    };
    if !state.alibaba_nonces.fresh(&nonce, now.timestamp()) {
        return refused(Answer::error("SignatureNonceUsed"), None);
    }
    let api = match check_action(headers) {
        Ok(api) => api,
        Err(answer) => return refused(answer, None),
    };
    let subject = match parameters(raw_query, headers, body)
        .ok_or_else(|| Answer::invalid("Body"))
        .and_then(|p| validate(api, &p))
    {
        Ok(s) => s,
        Err(answer) => return refused(answer, Some(api)),
    };
    let who = resolve(&subject);
    let decided = |answer, slow| Decided {
        answer,
        api: Some(api),
        id_number: Some(who.id_number.clone()),
        mobile: who.mobile.clone(),
        slow,
    };
    match state.draw_fault() {
        Some(InjectedFault::Busy) => return decided(Answer::error("ServiceUnavailable"), false),
        Some(InjectedFault::Http500) => return decided(Answer::Garbled(500), false),
        None => {}
    }
    let attempt = state.ledger.next_attempt(PROVIDER, &who.id_number);
    let (answer, slow) = answer_for(api, who.code.as_deref(), attempt);
    decided(answer, slow)
}

/// Serves one Alibaba call: decides, records it in the ledger, waits if slow, answers.
pub(crate) async fn handle(
    state: &AppState,
    uri: &Uri,
    headers: &HeaderMap,
    body: &[u8],
) -> Response {
    let at = Utc::now();
    let decided = decide(state, uri, headers, body, at);
    let action = header_str(headers, "x-acs-action").unwrap_or_default();
    let code = decided.answer.code();
    let status = decided.answer.http_status(decided.api);
    let entry = state.ledger.record(CallRecord {
        at,
        provider: PROVIDER,
        action,
        id_number: decided.id_number.as_deref(),
        http_status: status,
        code: &code,
        billed: decided.answer.billed(),
    });
    state.after_record(&entry, None, None, decided.slow).await;
    let host = header_str(headers, "host").unwrap_or("cloudauth-intl.cn-hongkong.aliyuncs.com");
    render(
        &decided.answer,
        decided.api,
        decided.mobile.as_deref(),
        host,
        &uuid::Uuid::new_v4().to_string().to_uppercase(),
    )
}
