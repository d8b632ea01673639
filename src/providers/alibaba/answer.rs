//! Reading an Alibaba answer (pure): the JSON `Code` and `Result` → a classified reply with
//! the code tables; an answer that is not the vendor's JSON goes to the shared status table.

use super::{codes, wire, Api};
use crate::check::Carrier;
use crate::providers::outcome::Origin;
use crate::providers::{Classification, ProviderReply};

/// Vendor text for logs and results, scrubbed of anything that looks like personal data (runs
/// of six or more digits, Chinese characters) and cut to 200 characters.
fn scrub(message: &str) -> String {
    let mut out = String::new();
    let mut token = String::new();
    let flush = |token: &mut String, out: &mut String| {
        if token.bytes().filter(u8::is_ascii_digit).count() >= 6 {
            out.push_str("***");
        } else {
            out.push_str(token);
        }
        token.clear();
    };
    for c in message.chars().take(200) {
        if c.is_ascii_digit() || c == 'X' || c == 'x' {
            token.push(c);
            continue;
        }
        flush(&mut token, &mut out);
        if ('\u{3400}'..='\u{9fff}').contains(&c) {
            out.push('*');
        } else {
            out.push(c);
        }
    }
    flush(&mut token, &mut out);
    out
}

/// An answer that is not the vendor's JSON (or has no `Code`): the shared status table.
fn not_json(status: u16, why: &str) -> ProviderReply {
    ProviderReply::from_status(status, Origin::Backend, why)
}

/// Classify an answer from its JSON `Code` and `Result`; the HTTP status matters only when
/// the body is not the vendor's JSON.
pub fn classify(api: Api, status: u16, body: &[u8]) -> ProviderReply {
    let env: wire::Envelope = match serde_json::from_slice(body) {
        Ok(e) => e,
        Err(_) => return not_json(status, "body is not JSON"),
    };
    let provider_request_id = env.request_id.clone();
    if env.is_success() {
        let Some(result) = env.result.as_ref() else {
            // Success without an answer: it was processed, and maybe billed.
            let mut reply = ProviderReply::transport(
                Classification::UNKNOWN,
                Some(status),
                "Code Success without a Result",
            );
            reply.provider_request_id = provider_request_id;
            return reply;
        };
        let provider_code = codes::result_code(result);
        return ProviderReply {
            classification: codes::classify_result(api, result),
            http_status: Some(status),
            detail: format!(
                "{} {}: {}",
                api.action(),
                provider_code.as_deref().unwrap_or("-"),
                codes::result_meaning(api, result)
            ),
            provider_code,
            provider_request_id,
            carrier: result.isp_name.as_deref().and_then(Carrier::normalise),
        };
    }
    let Some(code) = env.code else {
        return not_json(status, "JSON without Code");
    };
    ProviderReply {
        classification: codes::classify_error(&code),
        http_status: Some(status),
        detail: format!(
            "{code}: {}",
            scrub(env.message.as_deref().unwrap_or_default())
        ),
        provider_code: Some(code),
        provider_request_id,
        carrier: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::check::{Billed, ReasonCode};
    use crate::providers::OutcomeClass;

    fn classify(api: Api, status: u16, body: &str) -> ProviderReply {
        super::classify(api, status, body.as_bytes())
    }

    #[test]
    fn success_answers_classify_with_code_carrier_and_request_id() {
        let r = classify(
            Api::Mobile3,
            200,
            r#"{"RequestId":"130A2C10-B9EE-4D84-88E3-5384FF039795","Code":"Success","Message":"success","Result":{"BizCode":"2","SubCode":"203","IspName":"CMCC"}}"#,
        );
        assert_eq!(r.classification.reason_code, Some(ReasonCode::NameMismatch));
        assert_eq!(r.classification.billed, Billed::Yes);
        assert_eq!(r.provider_code.as_deref(), Some("203"));
        assert_eq!(
            r.provider_request_id.as_deref(),
            Some("130A2C10-B9EE-4D84-88E3-5384FF039795")
        );
        assert_eq!(r.carrier, Some(Carrier::Cmcc));
        assert_eq!(r.http_status, Some(200));
        for (isp, carrier) in [("CUCC", Carrier::Cucc), ("CTCC", Carrier::Ctcc)] {
            let body = format!(
                r#"{{"Code":"Success","Result":{{"BizCode":"1","SubCode":"101","IspName":"{isp}"}}}}"#
            );
            assert_eq!(classify(Api::Mobile3, 200, &body).carrier, Some(carrier));
        }
        let r = classify(
            Api::Id2,
            200,
            r#"{"RequestId":"a","Code":"Success","Result":{"BizCode":"3"}}"#,
        );
        assert_eq!(
            (r.classification.reason_code, r.classification.billed),
            (Some(ReasonCode::NoRecord), Billed::No)
        );
        assert_eq!(r.provider_code.as_deref(), Some("3"));
        assert_eq!(r.carrier, None);
        let r = classify(
            Api::Id2Period,
            200,
            r#"{"RequestId":"a","Code":"success","Result":{"Passed":"N","SubCode":"202"}}"#,
        );
        assert_eq!(
            (r.classification.reason_code, r.classification.billed),
            (Some(ReasonCode::NoRecord), Billed::Yes)
        );
        assert_eq!(r.provider_code.as_deref(), Some("202"));
        // An unknown SubCode: counted and finished, billing from the vendor table.
        let r = classify(
            Api::Mobile3,
            200,
            r#"{"Code":"Success","Result":{"BizCode":"2","SubCode":"299"}}"#,
        );
        assert_eq!(
            (r.classification.class, r.classification.billed),
            (OutcomeClass::UnknownCode, Billed::Yes)
        );
        assert_eq!(r.provider_code.as_deref(), Some("299"));
        let r = classify(
            Api::Id2Period,
            200,
            r#"{"Code":"Success","Result":{"Passed":"N","SubCode":"299"}}"#,
        );
        assert_eq!(
            (r.classification.class, r.classification.billed),
            (OutcomeClass::UnknownCode, Billed::Unknown)
        );
    }

    #[test]
    fn errors_classify_on_the_code_whatever_the_status() {
        for status in [200, 400, 401, 403, 500] {
            let r = classify(
                Api::Id2,
                status,
                r#"{"RequestId":"r","HostId":"cloudauth-intl.cn-hongkong.aliyuncs.com","Code":"InvalidParameter","Message":"IdentifyNum 11010519491231002X of 张三 is invalid","Recommend":"https://api.aliyun.com/troubleshoot?q=InvalidParameter"}"#,
            );
            assert_eq!(
                r.classification.class,
                OutcomeClass::InvalidField,
                "{status}"
            );
            assert_eq!(r.provider_code.as_deref(), Some("InvalidParameter"));
            assert_eq!(r.provider_request_id.as_deref(), Some("r"));
            assert!(
                !r.detail.contains("11010519491231002X") && !r.detail.contains("张三"),
                "{}",
                r.detail
            );
        }
        let r = classify(
            Api::Mobile3,
            403,
            r#"{"Code":"Throttling.Api","Message":"x"}"#,
        );
        assert!(r.classification.throttled);
        let r = classify(
            Api::Mobile3,
            500,
            r#"{"Code":"Forbidden.ExceptionDataSource","Message":"x"}"#,
        );
        assert_eq!(r.classification.class, OutcomeClass::Transient);
        let r = classify(
            Api::Mobile3,
            403,
            r#"{"Code":"Forbidden.RiskControl","Message":"x"}"#,
        );
        assert_eq!(
            (r.classification.class, r.classification.billed),
            (OutcomeClass::UnknownCode, Billed::No)
        );
    }

    #[test]
    fn bodies_that_are_not_the_vendors_json() {
        let class = |status, body: &str| {
            let r = classify(Api::Mobile3, status, body);
            (
                r.classification.class,
                r.classification.billed,
                r.classification.throttled,
            )
        };
        assert_eq!(
            class(500, "<html>500</html>"),
            (OutcomeClass::Transient, Billed::No, false)
        );
        assert_eq!(class(502, ""), (OutcomeClass::Transient, Billed::No, false));
        assert_eq!(
            class(503, "{}"),
            (OutcomeClass::Transient, Billed::No, false)
        );
        assert_eq!(
            class(429, "slow down"),
            (OutcomeClass::Transient, Billed::No, true)
        );
        assert_eq!(
            class(404, "not found"),
            (OutcomeClass::ProviderWide, Billed::No, false)
        );
        // A 400 without the vendor's JSON: this request's parameters, never provider-wide.
        assert_eq!(
            class(400, "<html>Bad Request</html>"),
            (OutcomeClass::RequestRefused, Billed::No, false)
        );
        assert_eq!(
            class(504, "<html>Gateway Timeout</html>"),
            (OutcomeClass::Unknown, Billed::Unknown, false)
        );
        assert_eq!(
            classify(Api::Mobile3, 404, "x").provider_code.as_deref(),
            Some("HTTP404")
        );
        assert_eq!(
            class(200, "<html>ok</html>"),
            (OutcomeClass::Unknown, Billed::Unknown, false)
        );
        assert_eq!(
            class(200, r#"{"Code":"Success"}"#),
            (OutcomeClass::Unknown, Billed::Unknown, false)
        );
        assert_eq!(
            class(200, "{}"),
            (OutcomeClass::Unknown, Billed::Unknown, false)
        );
    }

    #[test]
    fn scrub_hides_numbers_and_chinese_text() {
        assert_eq!(
            scrub("IdentifyNum 11010519491231002X invalid"),
            "IdentifyNum *** invalid"
        );
        assert_eq!(scrub("mobile 13112345678 / 张三"), "mobile *** / **");
        assert_eq!(scrub("code 403 at 2026"), "code 403 at 2026");
        assert_eq!(scrub(&"a".repeat(300)).len(), 200);
    }
}
