//! `kycq::providers::alibaba::answer::classify` on any answer to any of the three APIs. The
//! input is the HTTP status and the API's action name on a line of their own, then the body
//! (`200 Mobile3MetaVerifyIntl\n{"Code":"Success",...}`). Besides never panicking, the reply
//! passes `kycq_fuzz::check_reply` (billing follows the class, an unreadable 2xx is
//! billing-unknown, sanitized it holds no control character and no personal data), and an
//! error answer's `Message` is kept as the code promises: at most 200 characters, with no run of
//! six or more digits and no Chinese characters.
#![no_main]

use kycq::providers::alibaba::answer::classify;
use kycq::providers::alibaba::Api;
use kycq_fuzz::{check_reply, split_line};
use libfuzzer_sys::fuzz_target;

/// The scrubbed `Message` after `<Code>: ` in an error answer's detail.
fn message_of<'a>(detail: &'a str, code: Option<&str>) -> Option<&'a str> {
    detail.strip_prefix(code?)?.strip_prefix(": ")
}

fuzz_target!(|data: &[u8]| {
    let Some((line, body)) = split_line(data) else {
        return;
    };
    let Some((status, action)) = line.split_once(' ') else {
        return;
    };
    let (Ok(status), Some(api)) = (status.parse::<u16>(), Api::from_action(action.trim())) else {
        return;
    };
    let reply = classify(api, status, body);
    check_reply(&reply, status, body);
    if let Some(message) = message_of(&reply.detail, reply.provider_code.as_deref()) {
        assert!(message.chars().count() <= 200, "{message:?}");
        let mut digits = 0;
        for c in message.chars() {
            digits = if c.is_ascii_digit() { digits + 1 } else { 0 };
            assert!(digits < 6, "a run of digits: {message:?}");
            assert!(!('\u{3400}'..='\u{9fff}').contains(&c), "{message:?}");
        }
    }
});
