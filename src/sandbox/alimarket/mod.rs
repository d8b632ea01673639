//! The sandbox's Marketplace `POST /mobile3/check`: the API gateway's AppCode check and error headers, then the seller's JSON answers, chosen deterministically from the ID number.
//!
//! Checks run in the gateway's order, then the backend's (the product page
//! <http://market.aliyun.com/detail/cmapi00063272.html> and the API Gateway error codes
//! <https://help.aliyun.com/document_detail/43906.html>):
//!
//! 1. `Authorization: APPCODE <code>` — the literal `APPCODE`, one space, the code.
//!    Missing, or not in that form → 400 `Invalid AppCode \`not exists\`` **[inferred]**: the
//!    gateway finds no AppCode, and this is its documented "AppCode not found" answer (the
//!    Marketplace sample code; VPC table `A400AC`). A well-formed but wrong code → 403
//!    `Unauthorized`, as the product page FAQ (六.1) says.
//! 2. The body: empty → 400 `Empty Request Body`; not a JSON object with string `name`,
//!    `mobile`, `idCard` → 400 `Invalid Request Body` (the field check is **[inferred]**).
//! 3. The seller's own field checks **[inferred]** (its code table was not in the stored page):
//!    a malformed mobile, ID number or blank name → 200 without `data`, `code` `"400"`, `isFee` 0.
//! 4. An injected fault (`fault_rate`): 503 `Service Unavailable`, or a backend 500.
//! 5. The ID number's sequence code: one of [`VENDOR_CODES`] (850–899, one exact answer each),
//!    else the shared [`Scenario`].
//!
//! Gateway refusals carry `X-Ca-Error-Message` (and `X-Ca-Error-Code` for the VPC-style
//! codes), `Content-Type: text/plain;charset=UTF-8` and an empty body, as captured from the real
//! gateway; every answer carries `X-Ca-Request-Id`.
//!
//! Billing (`isFee`, and the ledger's `billed`), per the seller's FAQ (五: the package is counted
//! when the answer is 2xx): a 200 that carries a `data.result` is billed (`isFee` 1) unless a
//! vendor test code says otherwise; a 200 without a result is not (`isFee` 0) **[inferred]**; a
//! 200 whose body is garbled stands for a billed answer **[inferred]**; gateway refusals and
//! backend errors are not billed — the 504 `Async Service` included, since the FAQ counts 2xx
//! only (kycq still treats a 504 as billing unknown: it cannot see the seller's side).
//!
//! The HTTP-layer scenarios 934–937 are the same for every vendor: [`Answer::Http`] delegates
//! them to [`super::http_fault`]. A cut-off body and the backend's 400 passed through the
//! gateway, so they carry `X-Ca-Request-Id` (and no `X-Ca-Error-*`); the bare 429 stands for
//! something in front of the gateway and carries no gateway header at all.

use axum::http::{HeaderMap, Uri};
use axum::response::Response;
use chrono::Utc;

use super::ledger::CallRecord;
use super::scenarios::Scenario;
use super::{AppState, InjectedFault};

mod answers;
mod auth;
mod params;
#[cfg(test)]
mod tests;

use answers::gateway;
pub use answers::{
    mobile_channel, new_request_id, render, result_desc, scenario_answer, vendor_answer, Answer,
    Channel, IsFee, INVALID_APPCODE, VENDOR_CODES,
};
pub use auth::authenticate;
pub use params::{field_check, parse_body, Mobile3Check};

/// Provider name in the ledger.
pub const PROVIDER: &str = "alimarket";
/// The one action served (the path without its `/`).
pub const ACTION: &str = "mobile3/check";

/// Runs checks 1–5 for one received call. Returns the answer and whether it is the slow scenario.
fn decide(state: &AppState, headers: &HeaderMap, body: &[u8]) -> (Answer, bool) {
    let checked = authenticate(headers, state.settings.credential(PROVIDER, "app_code"))
        .and_then(|()| parse_body(body));
    let request = match checked {
        Ok(request) => request,
        Err(answer) => return (answer, false),
    };
    if let Some(answer) = field_check(&request) {
        return (answer, false);
    }
    match state.draw_fault() {
        Some(InjectedFault::Busy) => return (gateway(503, "Service Unavailable"), false),
        Some(InjectedFault::Http500) => return (Answer::Backend { status: 500 }, false),
        None => {}
    }
    let attempt = state.ledger.next_attempt(PROVIDER, &request.id_card);
    if let Some(answer) = vendor_answer(&request.id_card) {
        return (answer, false);
    }
    let scenario = Scenario::from_id_number(&request.id_card);
    (
        scenario_answer(scenario, attempt),
        scenario == Scenario::Slow,
    )
}

/// Serves one Marketplace call: decides, records it in the ledger, waits if slow, answers.
pub(crate) async fn handle(
    state: &AppState,
    _uri: &Uri,
    headers: &HeaderMap,
    body: &[u8],
) -> Response {
    let at = Utc::now();
    let (answer, slow) = decide(state, headers, body);
    let (id_card, name, mobile) = params::peek(body);
    let code = answer.code();
    let entry = state.ledger.record(CallRecord {
        at,
        provider: PROVIDER,
        action: ACTION,
        id_number: id_card.as_deref(),
        http_status: answer.http_status(),
        code: &code,
        billed: answer.billed(),
    });
    state
        .after_record(&entry, name.as_deref(), mobile.as_deref(), slow)
        .await;
    render(&answer, mobile.as_deref(), &new_request_id())
}
