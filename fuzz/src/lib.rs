//! What the fuzz targets share: the day they decode with, the readable input of the answer
//! targets, and the checks every classified provider reply must pass.

use std::sync::LazyLock;

use chrono::NaiveDate;
use kycq::check::{decode, Billed, Decoded, ReasonCode, Subject};
use kycq::providers::{Classification, OutcomeClass, ProviderReply};
use serde::de::IgnoredAny;

/// The day requests are decoded on (fixed: a target must give the same answer every run).
pub fn today() -> NaiveDate {
    NaiveDate::from_ymd_opt(2026, 11, 23).expect("a real date")
}

/// Whether `text` holds a control character.
pub fn has_control(text: &str) -> bool {
    text.chars().any(char::is_control)
}

/// An answer target's input: a first line of text (the status, for Alibaba also the API), then
/// the body, so that a corpus file reads like the answer it stands for. None without a line.
pub fn split_line(data: &[u8]) -> Option<(&str, &[u8])> {
    let end = data.iter().position(|&b| b == b'\n')?;
    let line = std::str::from_utf8(&data[..end]).ok()?;
    Some((line.trim_end_matches('\r'), &data[end + 1..]))
}

/// The person replies are sanitized for: the vendors' documented test identity, which sample
/// answers in the corpus echo.
pub static SUBJECT: LazyLock<Subject> = LazyLock::new(|| {
    let body = r#"{"request_id":"fuzz","check":"mobile3","name":"张三","id_number":"11010519491231002X","mobile":"13812345678"}"#;
    match decode(body.as_bytes(), today()) {
        Ok(Decoded::Valid(r)) => r.subject,
        other => panic!("the documented test identity is valid: {other:?}"),
    }
});

/// Checks what `docs/src/reference/failures.md` and `kycq::check::outcome` promise of a reply classified
/// from a whole answer with `status` and `body`:
///
/// - it keeps the status (a response arrived);
/// - billing follows the class (the "A provider call" table): `unknown` is billing-unknown;
///   `invalid_field`, `request_refused`, `identity_limit`, `transient` and `provider_wide` are
///   never billed; only a transient answer is throttled;
/// - a final answer carries a shared reason code (`invalid_request` for a refused request);
/// - a 2xx answer that is not JSON at all is billing-unknown, never retried (the 200–299 row;
///   "at all": serde_json skips fields a reader ignores without checking their UTF-8 or
///   numbers, so only a body it cannot even skip over is certainly unreadable);
/// - once sanitized for the subject (`ProviderReply::sanitized`), its detail, code and
///   request id hold no control character and none of the subject's values.
pub fn check_reply(reply: &ProviderReply, status: u16, body: &[u8]) {
    let c = reply.classification;
    assert_eq!(reply.http_status, Some(status), "the status is kept");
    match c.class {
        OutcomeClass::Unknown => assert_eq!(c.billed, Billed::Unknown, "{c:?}"),
        OutcomeClass::InvalidField
        | OutcomeClass::RequestRefused
        | OutcomeClass::IdentityLimit
        | OutcomeClass::Transient
        | OutcomeClass::ProviderWide => assert_eq!(c.billed, Billed::No, "{c:?}"),
        OutcomeClass::Verdict | OutcomeClass::UnknownCode => {}
    }
    assert!(!c.throttled || c.class == OutcomeClass::Transient, "{c:?}");
    if c.class.is_final_answer() {
        assert!(
            c.reason_code.is_some(),
            "a final answer has a reason: {c:?}"
        );
    }
    if c.class == OutcomeClass::RequestRefused {
        assert_eq!(c.reason_code, Some(ReasonCode::InvalidRequest), "{c:?}");
    }
    if (200..300).contains(&status) && serde_json::from_slice::<IgnoredAny>(body).is_err() {
        assert_eq!(c, Classification::UNKNOWN, "an unreadable 2xx answer");
    }

    let clean = reply.clone().sanitized(&SUBJECT);
    let id = SUBJECT.id_number.expose();
    let plain = [
        id.to_owned(),
        id.to_ascii_lowercase(),
        SUBJECT.name.expose().to_owned(),
        SUBJECT
            .mobile
            .as_ref()
            .expect("mobile3")
            .expose()
            .to_owned(),
    ];
    let texts = [
        Some(&clean.detail),
        clean.provider_code.as_ref(),
        clean.provider_request_id.as_ref(),
    ];
    for text in texts.into_iter().flatten() {
        assert!(!has_control(text), "sanitized text: {text:?}");
        for p in &plain {
            assert!(
                !text.contains(p.as_str()),
                "sanitized text shows the subject: {text:?}"
            );
        }
    }
}
