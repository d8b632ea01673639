//! `kycq::check::request::decode` on any message body. Besides never panicking:
//!
//! - the same body decodes to the same result twice;
//! - a dead-letter message (`Malformed`) and a rejection's reason hold no control character;
//! - a rejection's masked subject holds no control character and no field longer than its
//!   documented maximum (`field_max_chars`: a huge input never makes a huge result);
//! - a valid request has a usable `request_id`, every field it exposes within its documented
//!   maximum and free of control characters, a pinned provider of the documented form, a mobile
//!   exactly for `mobile3` and a validity period exactly for `id2_period`, and a subject whose
//!   `Debug` shows neither the ID number nor the mobile.
#![no_main]

use kycq::check::request::{
    decode, field_max_chars, is_provider_name, is_valid_request_id, CheckKind, Decoded,
};
use kycq_fuzz::{has_control, today};
use libfuzzer_sys::fuzz_target;

/// `value` of `field` is within its documented maximum and free of control characters.
fn fits(field: &str, value: &str) {
    let max = field_max_chars(field).expect("a documented field");
    assert!(
        value.chars().count() <= max,
        "{field} over {max}: {value:?}"
    );
    assert!(!has_control(value), "{field}: {value:?}");
}

fuzz_target!(|body: &[u8]| {
    let decoded = decode(body, today());
    assert_eq!(decoded, decode(body, today()), "decoding is deterministic");
    match decoded {
        Err(malformed) => assert!(!has_control(&malformed.to_string()), "{malformed:?}"),
        Ok(Decoded::Rejected(r)) => {
            assert!(is_valid_request_id(&r.request_id));
            assert!(!has_control(&r.reason), "{:?}", r.reason);
            let masked = [
                ("name", &r.subject.name),
                ("id_number", &r.subject.id_number),
                ("mobile", &r.subject.mobile),
            ];
            for (field, value) in masked {
                if let Some(v) = value {
                    fits(field, v);
                }
            }
        }
        Ok(Decoded::Valid(v)) => {
            assert!(is_valid_request_id(&v.request_id));
            let s = &v.subject;
            fits("name", s.name.expose());
            fits("id_number", s.id_number.expose());
            if let Some(m) = &s.mobile {
                fits("mobile", m.expose());
            }
            for (field, value) in [
                ("provider", &v.provider),
                ("merchant_user_id", &v.merchant_user_id),
                ("scene_code", &v.scene_code),
            ] {
                if let Some(value) = value {
                    fits(field, value);
                }
            }
            assert!(v.provider.as_deref().is_none_or(is_provider_name));
            assert_eq!(s.mobile.is_some(), v.check == CheckKind::Mobile3);
            assert_eq!(s.validity.is_some(), v.check == CheckKind::Id2Period);
            let shown = format!("{s:?}");
            assert!(!shown.contains(s.id_number.expose()), "{shown}");
            if let Some(m) = &s.mobile {
                assert!(!shown.contains(m.expose()), "{shown}");
            }
        }
    }
});
