//! `kycq::providers::alimarket::answer::classify` on any answer: a non-2xx by the API gateway's
//! headers (`classify_refusal`), a 2xx by its body (`classify_body`). The input reads like the
//! answer: a status line (`HTTP 403`), header lines (`x-ca-error-message: Quota Exhausted`),
//! an empty line, then the body. Besides never panicking, the reply passes
//! `kycq_fuzz::check_reply` (billing follows the class, an unreadable 2xx is billing-unknown,
//! sanitized it holds no control character and no personal data), and vendor text in its detail
//! is cut to `MAX_DETAIL_CHARS` with no run of six or more digits.
#![no_main]

use kycq::providers::alimarket::answer::{classify, MAX_DETAIL_CHARS};
use kycq::providers::alimarket::wire::parse_reply;
use kycq::providers::Answer;
use kycq_fuzz::{check_reply, split_line};
use libfuzzer_sys::fuzz_target;
use reqwest::header::{HeaderMap, HeaderName, HeaderValue};

/// The answer `data` stands for; None if its status line is not `HTTP <status>`.
fn answer(data: &[u8]) -> Option<Answer> {
    let (status_line, mut rest) = split_line(data)?;
    let status = status_line.strip_prefix("HTTP ")?.trim().parse().ok()?;
    let mut headers = HeaderMap::new();
    // Header lines up to an empty line; a name or value HTTP does not allow is left out.
    while let Some(end) = rest.iter().position(|&b| b == b'\n') {
        let line = &rest[..end];
        rest = &rest[end + 1..];
        if line.is_empty() || line == b"\r" {
            break;
        }
        let Some(colon) = line.iter().position(|&b| b == b':') else {
            continue;
        };
        let value = line[colon + 1..]
            .strip_prefix(b" ")
            .unwrap_or(&line[colon + 1..]);
        if let (Ok(n), Ok(v)) = (
            HeaderName::from_bytes(&line[..colon]),
            HeaderValue::from_bytes(value),
        ) {
            headers.append(n, v);
        }
    }
    Some(Answer {
        status,
        headers,
        body: bytes::Bytes::copy_from_slice(rest),
    })
}

fuzz_target!(|data: &[u8]| {
    let Some(answer) = answer(data) else {
        return;
    };
    let reply = classify(&answer);
    check_reply(&reply, answer.status, &answer.body);
    // Vendor text went through the cut unless a 2xx body was unreadable (then the detail is
    // kycq's own sentence about the status).
    let refusal = !(200..300).contains(&answer.status);
    if refusal || parse_reply(&answer.body).is_ok() {
        let detail = &reply.detail;
        assert!(detail.chars().count() <= MAX_DETAIL_CHARS, "{detail:?}");
        let mut digits = 0;
        for c in detail.chars() {
            digits = if c.is_ascii_digit() { digits + 1 } else { 0 };
            assert!(digits < 6, "a run of digits: {detail:?}");
        }
    }
});
