//! Reading a Marketplace answer (pure): a non-2xx by the API gateway's error headers (the
//! gateway's tables) or, without them, by the shared status table; a 2xx body by `data.result`
//! with the billing `isFee` gives.

use reqwest::header::HeaderMap;

use super::codes;
use super::wire;
use crate::check::Carrier;
use crate::providers::http::{header_text, Answer};
use crate::providers::outcome::{self, Origin};
use crate::providers::{Classification, ProviderReply};

/// The gateway's error message header.
pub const ERROR_MESSAGE_HEADER: &str = "x-ca-error-message";
/// The VPC gateway's error code header (empty: the status is the backend's).
pub const ERROR_CODE_HEADER: &str = "x-ca-error-code";
/// The gateway's request id, for support tickets.
pub const REQUEST_ID_HEADER: &str = "x-ca-request-id";

/// Vendor text kept in a reply (`detail`) is cut to this many characters.
pub const MAX_DETAIL_CHARS: usize = 120;

/// Classify a whole answer: a refusal (non-2xx) or a body.
pub fn classify(answer: &Answer) -> ProviderReply {
    if !(200..300).contains(&answer.status) {
        return classify_refusal(answer.status, &answer.headers);
    }
    classify_body(
        answer.status,
        &answer.body,
        answer.header(REQUEST_ID_HEADER),
    )
}

/// Classify a non-2xx answer from its status and gateway headers (the body is not needed):
/// the gateway's tables first, then the shared status table — with the backend as the
/// origin when the gateway sent no error header (the seller's backend answered that status
/// about this request).
pub fn classify_refusal(status: u16, headers: &HeaderMap) -> ProviderReply {
    let message = header_text(headers, ERROR_MESSAGE_HEADER);
    let code = header_text(headers, ERROR_CODE_HEADER);
    let from_gateway = message.is_some() || code.is_some();
    let classification = codes::classify_gateway(message.as_deref(), code.as_deref())
        .unwrap_or_else(|| {
            let origin = if from_gateway {
                Origin::Gateway
            } else {
                Origin::Backend
            };
            outcome::status_row(status, origin).classification
        });
    let origin = if from_gateway { "gateway" } else { "backend" };
    let detail = match (&message, &code) {
        (Some(m), Some(c)) => format!("{origin} HTTP {status} {c}: {m}"),
        (Some(m), None) => format!("{origin} HTTP {status}: {m}"),
        (None, Some(c)) => format!("{origin} HTTP {status} {c}"),
        (None, None) => format!("{origin} HTTP {status} without X-Ca-Error-Message"),
    };
    ProviderReply {
        classification,
        http_status: Some(status),
        provider_code: Some(message.or(code).unwrap_or_else(|| format!("HTTP{status}"))),
        provider_request_id: header_text(headers, REQUEST_ID_HEADER),
        carrier: None,
        detail: vendor_text(&detail),
    }
}

/// Classify a 2xx body. `gateway_request_id` (`X-Ca-Request-Id`) stands in when the body
/// has no `seqNo`.
pub fn classify_body(
    status: u16,
    body: &[u8],
    gateway_request_id: Option<String>,
) -> ProviderReply {
    let reply = match wire::parse_reply(body) {
        Ok(r) => r,
        // An answer arrived and cannot be read: the shared status table (a 2xx may be a
        // billed verdict: billing unknown, never repeated).
        Err(e) => {
            let mut r = ProviderReply::from_status(status, Origin::Backend, &e.to_string());
            r.provider_request_id = gateway_request_id;
            return r;
        }
    };
    let billed = codes::billed_from_is_fee(reply.is_fee);
    let (classification, provider_code, detail) = match &reply.result {
        Some(result) => (
            codes::classify_result(result, billed),
            Some(result.clone()),
            reply
                .result_desc
                .clone()
                .or_else(|| reply.msg.clone())
                .unwrap_or_else(|| format!("result {result}")),
        ),
        None => (
            Classification::unknown_code(billed),
            reply.code.clone(),
            format!(
                "no data.result (code {}: {})",
                reply.code.as_deref().unwrap_or("none"),
                reply.msg.as_deref().unwrap_or("")
            ),
        ),
    };
    ProviderReply {
        classification,
        http_status: Some(status),
        provider_code,
        provider_request_id: reply.seq_no.or(gateway_request_id),
        carrier: reply.mobile_channel.as_deref().and_then(Carrier::normalise),
        detail: vendor_text(&detail),
    }
}

/// Vendor text fit for logs and results: cut short, with any run of six or more digits masked
/// (a vendor echoing an ID or mobile number must not put it in a result).
fn vendor_text(text: &str) -> String {
    let mut out = String::new();
    let mut digits = String::new();
    let flush = |digits: &mut String, out: &mut String| {
        if digits.chars().count() >= 6 {
            out.push_str("***");
        } else {
            out.push_str(digits);
        }
        digits.clear();
    };
    for c in text.chars().take(MAX_DETAIL_CHARS) {
        if c.is_ascii_digit() || (c == 'X' || c == 'x') && !digits.is_empty() {
            digits.push(c);
        } else {
            flush(&mut digits, &mut out);
            out.push(c);
        }
    }
    flush(&mut digits, &mut out);
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::check::{Billed, ReasonCode};
    use crate::providers::OutcomeClass;
    use reqwest::header::HeaderValue;

    fn body(json: &str) -> ProviderReply {
        classify_body(200, json.as_bytes(), Some("GW-1".into()))
    }

    #[test]
    fn results_classify_with_billing_from_is_fee() {
        use crate::check::ReasonCode as R;
        for (result, reason) in [
            ("1", R::Match),
            ("2", R::MismatchUnspecified),
            ("3", R::NoRecord),
        ] {
            for (is_fee, billed) in [
                (",\"isFee\":1", Billed::Yes),
                (",\"isFee\":0", Billed::No),
                ("", Billed::Unknown),
                (",\"isFee\":null", Billed::Unknown),
                (",\"isFee\":7", Billed::Unknown),
            ] {
                let r = body(&format!(
                    r#"{{"code":"200","msg":"ok","seqNo":"S1"{is_fee},"data":{{"result":{result},"resultDesc":"d","mobileChannel":"cmcc"}}}}"#
                ));
                let c = r.classification;
                assert_eq!(
                    (c.class, c.billed, c.reason_code),
                    (OutcomeClass::Verdict, billed, Some(reason)),
                    "{result} {is_fee}"
                );
                assert_eq!(r.provider_code.as_deref(), Some(result));
                assert_eq!(r.provider_request_id.as_deref(), Some("S1"));
                assert_eq!(r.http_status, Some(200));
                assert_eq!(r.carrier, Some(Carrier::Cmcc));
            }
        }
    }

    #[test]
    fn carriers_are_normalised_and_gdcc_is_broadnet() {
        for (channel, carrier) in [
            ("\"cmcc\"", Some(Carrier::Cmcc)),
            ("\"cucc\"", Some(Carrier::Cucc)),
            ("\"ctcc\"", Some(Carrier::Ctcc)),
            ("\"gdcc\"", Some(Carrier::Cbn)),
            ("\"\"", None),
            ("\"unknown\"", None),
            ("null", None),
        ] {
            let r = body(&format!(
                r#"{{"isFee":1,"data":{{"result":1,"mobileChannel":{channel}}}}}"#
            ));
            assert_eq!(r.carrier, carrier, "{channel}");
        }
    }

    #[test]
    fn answers_without_a_readable_result_are_unknown_codes_never_retried() {
        let cases: &[(&str, Billed, Option<&str>)] = &[
            // An undocumented result value.
            (
                r#"{"isFee":1,"seqNo":"S","data":{"result":9}}"#,
                Billed::Yes,
                Some("9"),
            ),
            (r#"{"isFee":0,"data":{"result":4}}"#, Billed::No, Some("4")),
            (r#"{"data":{"result":0}}"#, Billed::Unknown, Some("0")),
            // No data.result: the vendor's `code` is the most specific code there is.
            (
                r#"{"code":"400","msg":"参数错误","isFee":0,"data":null}"#,
                Billed::No,
                Some("400"),
            ),
            (r#"{"isFee":1,"data":{}}"#, Billed::Yes, None),
            (r#"{}"#, Billed::Unknown, None),
        ];
        for (json, billed, code) in cases {
            let r = body(json);
            let c = r.classification;
            assert_eq!(
                (c.class, c.billed, c.reason_code),
                (
                    OutcomeClass::UnknownCode,
                    *billed,
                    Some(ReasonCode::UnknownProviderCode)
                ),
                "{json}"
            );
            assert!(c.class.is_final_answer());
            assert_eq!(r.provider_code.as_deref(), *code, "{json}");
            assert!(r.provider_request_id.is_some(), "{json}");
        }
    }

    #[test]
    fn a_2xx_body_that_cannot_be_read_is_billing_unknown_as_for_every_vendor() {
        for json in ["<html>502 Bad Gateway</html>", "", "[1,2]"] {
            let r = body(json);
            let c = r.classification;
            assert_eq!(
                (c.class, c.billed),
                (OutcomeClass::Unknown, Billed::Unknown),
                "{json}"
            );
            assert_eq!(r.provider_code.as_deref(), Some("HTTP200"), "{json}");
            assert_eq!(r.provider_request_id.as_deref(), Some("GW-1"), "{json}");
        }
    }

    #[test]
    fn the_gateway_request_id_stands_in_for_a_missing_seq_no() {
        assert_eq!(
            body(r#"{"isFee":1,"data":{"result":1}}"#)
                .provider_request_id
                .as_deref(),
            Some("GW-1")
        );
        let r = classify_body(200, br#"{"isFee":1,"data":{"result":1}}"#, None);
        assert_eq!(r.provider_request_id, None);
    }

    fn headers(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.insert(*k, HeaderValue::from_static(v));
        }
        h
    }

    #[test]
    fn gateway_errors_classify_from_their_headers() {
        use OutcomeClass::*;
        /// Status, gateway headers, class, billing, throttled, provider_code.
        type Case = (
            u16,
            &'static [(&'static str, &'static str)],
            OutcomeClass,
            Billed,
            bool,
            &'static str,
        );
        let cases: &[Case] = &[
            (
                403,
                &[("x-ca-error-message", "Unauthorized")],
                ProviderWide,
                Billed::No,
                false,
                "Unauthorized",
            ),
            (
                400,
                &[("x-ca-error-message", "Invalid AppCode `not exists`")],
                ProviderWide,
                Billed::No,
                false,
                "Invalid AppCode `not exists`",
            ),
            (
                403,
                &[("x-ca-error-message", "Quota Exhausted")],
                ProviderWide,
                Billed::No,
                false,
                "Quota Exhausted",
            ),
            (
                403,
                &[("x-ca-error-message", "Throttled by APP Flow Control")],
                Transient,
                Billed::No,
                true,
                "Throttled by APP Flow Control",
            ),
            (
                500,
                &[("x-ca-error-message", "Failed To Call Backend Service")],
                Transient,
                Billed::No,
                false,
                "Failed To Call Backend Service",
            ),
            (
                504,
                &[("x-ca-error-message", "Async Service")],
                Unknown,
                Billed::Unknown,
                false,
                "Async Service",
            ),
            (
                500,
                &[
                    ("x-ca-error-code", "X500ED"),
                    ("x-ca-error-message", "Expired api definition"),
                ],
                ProviderWide,
                Billed::No,
                false,
                "Expired api definition",
            ),
            (
                500,
                &[("x-ca-error-code", "X500AM")],
                ProviderWide,
                Billed::No,
                false,
                "X500AM",
            ),
            // No gateway header: the backend's own status.
            (500, &[], Transient, Billed::No, false, "HTTP500"),
            (502, &[], Transient, Billed::No, false, "HTTP502"),
            (504, &[], Unknown, Billed::Unknown, false, "HTTP504"),
            // The seller's backend refusing this request's parameters: finish it, no circuit.
            (400, &[], RequestRefused, Billed::No, false, "HTTP400"),
            (429, &[], Transient, Billed::No, true, "HTTP429"),
            (404, &[], ProviderWide, Billed::No, false, "HTTP404"),
            // A gateway 400 kycq does not know: finish failed, no circuit.
            (
                400,
                &[("x-ca-error-message", "Invalid Body: x")],
                UnknownCode,
                Billed::No,
                false,
                "Invalid Body: x",
            ),
        ];
        for (status, pairs, class, billed, throttled, code) in cases {
            let mut h = headers(pairs);
            h.insert("x-ca-request-id", HeaderValue::from_static("7AD052CB"));
            let r = classify_refusal(*status, &h);
            let c = r.classification;
            assert_eq!(
                (c.class, c.billed, c.throttled),
                (*class, *billed, *throttled),
                "{status} {pairs:?}"
            );
            assert_eq!(r.provider_code.as_deref(), Some(*code));
            assert_eq!(r.http_status, Some(*status));
            assert_eq!(r.provider_request_id.as_deref(), Some("7AD052CB"));
            assert_eq!(r.carrier, None);
            let origin = if pairs.is_empty() {
                "backend"
            } else {
                "gateway"
            };
            assert!(r.detail.starts_with(origin), "{}", r.detail);
        }
    }

    #[test]
    fn vendor_text_is_short_and_never_holds_long_digit_runs() {
        assert_eq!(
            vendor_text("身份证 11010519491231002X 不一致"),
            "身份证 *** 不一致"
        );
        assert_eq!(vendor_text("手机 13812345678"), "手机 ***");
        assert_eq!(
            vendor_text("HTTP 504: Async Service"),
            "HTTP 504: Async Service"
        );
        assert_eq!(vendor_text("code 12345 X"), "code 12345 X");
        assert_eq!(
            vendor_text(&"a".repeat(500)).chars().count(),
            MAX_DETAIL_CHARS
        );
    }
}
