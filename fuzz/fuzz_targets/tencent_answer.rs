//! `kycq::providers::tencent::answer::classify` on any answer. The input is the HTTP status on
//! a line of its own, then the body (`200\n{"Response":{...}}`). Besides never panicking, the
//! reply passes `kycq_fuzz::check_reply`: billing follows the class, an unreadable 2xx is
//! billing-unknown, and once sanitized it holds no control character and no personal data.
#![no_main]

use kycq::providers::tencent::answer::classify;
use kycq_fuzz::{check_reply, split_line};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((line, body)) = split_line(data) else {
        return;
    };
    let Ok(status) = line.trim().parse::<u16>() else {
        return;
    };
    check_reply(&classify(status, body), status, body);
});
