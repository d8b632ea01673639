//! The sandbox's Tencent FaceID `PhoneVerification`: TC3 signature checks and answers in the vendor's own wire format.
//!
//! Checks run in the vendor's order and every refusal is HTTP 200 with
//! `{"Response":{"Error":{"Code","Message"},"RequestId"}}` (the `PhoneVerification` page's error
//! codes, <https://www.tencentcloud.com/document/api/1061/79046>, and the common error codes,
//! <https://cloud.tencent.com/document/product/1001/31332>):
//! authorization header → timestamp within 300 s → SecretId → signature → action and version →
//! body → the vendor's own field checks (`-6`/`-7`/`-8`) → injected fault → the scenario.
//! Billing follows the vendor's `Result` table
//! (<https://cloud.tencent.com/document/api/1007/39765>): only `Result` `0` and `-4` are charged.
//! The HTTP-layer scenarios 934–937 are not in Tencent's format: [`Answer::Http`] delegates
//! them to [`super::http_fault`].

use axum::http::{HeaderMap, Uri};
use axum::response::Response;
use chrono::Utc;

use super::ledger::CallRecord;
use super::scenarios::Scenario;
use super::{header_str, AppState, InjectedFault};

mod answers;
mod auth;
mod params;
#[cfg(test)]
mod tests;

pub use answers::{description, isp, render, scenario_answer, Answer};
pub use auth::{authenticate, MAX_CLOCK_SKEW_SECS, SERVICE};
pub use params::{check_action, field_check, parse_body, PhoneVerification};

/// Provider name in the ledger.
pub const PROVIDER: &str = "tencent";
/// The one action served.
pub const ACTION: &str = "PhoneVerification";
/// The API version served.
pub const VERSION: &str = "2018-03-01";

/// Runs checks 1–8 for one received call. Returns the answer and whether it is the slow scenario.
fn decide(
    state: &AppState,
    uri: &Uri,
    headers: &HeaderMap,
    body: &[u8],
    now: i64,
) -> (Answer, bool) {
    let settings = &state.settings;
    let checked = authenticate(
        headers,
        uri.query().unwrap_or(""),
        body,
        settings.credential(PROVIDER, "secret_id"),
        settings.credential(PROVIDER, "secret_key"),
        now,
    )
    .and_then(|()| check_action(headers))
    .and_then(|()| parse_body(body));
    let request = match checked {
        Ok(request) => request,
        Err(answer) => return (answer, false),
    };
    if let Some(answer) = field_check(&request) {
        return (answer, false);
    }
    match state.draw_fault() {
        Some(InjectedFault::Busy) => return (Answer::result("-11"), false),
        Some(InjectedFault::Http500) => return (Answer::Http500, false),
        None => {}
    }
    let scenario = Scenario::from_id_number(&request.id_card);
    let attempt = state.ledger.next_attempt(PROVIDER, &request.id_card);
    (
        scenario_answer(scenario, attempt),
        scenario == Scenario::Slow,
    )
}

/// Serves one Tencent call: decides, records it in the ledger, waits if slow, answers.
pub(crate) async fn handle(
    state: &AppState,
    uri: &Uri,
    headers: &HeaderMap,
    body: &[u8],
) -> Response {
    let at = Utc::now();
    let (answer, slow) = decide(state, uri, headers, body, at.timestamp());
    let (id_card, name, phone) = params::peek(body);
    let action = header_str(headers, "x-tc-action").unwrap_or_default();
    let entry = state.ledger.record(CallRecord {
        at,
        provider: PROVIDER,
        action,
        id_number: id_card.as_deref(),
        http_status: answer.http_status().as_u16(),
        code: answer.code(),
        billed: answer.billed(),
    });
    state
        .after_record(&entry, name.as_deref(), phone.as_deref(), slow)
        .await;
    render(&answer, phone.as_deref(), &uuid::Uuid::new_v4().to_string())
}
