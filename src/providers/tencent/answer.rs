//! Reading a Tencent answer (pure): the API 3.0 JSON → a classified reply, with the code
//! tables first and the shared status table second.

use super::{codes, wire};
use crate::check::Carrier;
use crate::providers::outcome::Origin;
use crate::providers::ProviderReply;

/// Classify a whole answer: the API's `Response.Error` or `Response.Result` when the body
/// is the API's JSON (whatever the status), else the shared status table.
pub fn classify(status: u16, body: &[u8]) -> ProviderReply {
    let env: wire::Envelope = match serde_json::from_slice(body) {
        Ok(e) => e,
        Err(_) => return ProviderReply::from_status(status, Origin::Backend, "not the API's JSON"),
    };
    let r = env.response;
    let provider_request_id = r.request_id.clone();
    if let Some(err) = r.error {
        return ProviderReply {
            classification: codes::classify_error(&err.code),
            http_status: Some(status),
            detail: format!(
                "{}: {}",
                err.code,
                err.message.as_deref().unwrap_or_default()
            ),
            provider_code: Some(err.code),
            provider_request_id,
            carrier: None,
        };
    }
    let Some(result) = r.result else {
        let mut reply = ProviderReply::from_status(
            status,
            Origin::Backend,
            "the API's JSON without Result or Error",
        );
        reply.provider_request_id = provider_request_id;
        return reply;
    };
    let detail = r.result_detail.as_deref().filter(|d| !d.is_empty());
    ProviderReply {
        classification: codes::classify_result(&result, detail),
        http_status: Some(status),
        detail: match detail {
            Some(d) => format!("{} ({d})", r.description.unwrap_or_default()),
            None => r.description.unwrap_or_default(),
        },
        provider_code: Some(result),
        provider_request_id,
        carrier: r.isp.as_deref().and_then(Carrier::normalise),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::check::{Billed, ReasonCode};
    use crate::providers::OutcomeClass;

    #[test]
    fn bodies_classify_with_carrier_and_request_id() {
        let r = classify(
            200,
            br#"{"Response":{"Result":"0","Description":"Authentication passed","Isp":"Telecom","RequestId":"a5fd"}}"#,
        );
        assert_eq!(r.classification.class, OutcomeClass::Verdict);
        assert_eq!(r.classification.billed, Billed::Yes);
        assert_eq!(r.carrier, Some(Carrier::Ctcc));
        assert_eq!(r.provider_code.as_deref(), Some("0"));
        assert_eq!(r.provider_request_id.as_deref(), Some("a5fd"));

        let r = classify(
            200,
            "{\"Response\":{\"Result\":\"-4\",\"Description\":\"不一致\",\"Isp\":\"联通\",\"ResultDetail\":\"PhoneNameMismatch\",\"RequestId\":\"x\"}}".as_bytes(),
        );
        assert_eq!(r.classification.reason_code, Some(ReasonCode::NameMismatch));
        assert_eq!(r.carrier, Some(Carrier::Cucc));

        let r = classify(
            200,
            br#"{"Response":{"Error":{"Code":"AuthFailure.SignatureFailure","Message":"bad"},"RequestId":"y"}}"#,
        );
        assert_eq!(r.classification.class, OutcomeClass::ProviderWide);
        assert_eq!(
            r.provider_code.as_deref(),
            Some("AuthFailure.SignatureFailure")
        );

        let r = classify(200, b"<html>");
        assert_eq!(r.classification.class, OutcomeClass::Unknown);
        assert_eq!(r.classification.billed, Billed::Unknown);
    }

    #[test]
    fn answers_without_the_api_json_follow_the_shared_status_table() {
        let class = |status: u16, body: &[u8]| {
            let r = classify(status, body);
            (
                r.classification.class,
                r.classification.throttled,
                r.provider_code,
            )
        };
        let code = |s: &str| Some(s.to_owned());
        assert_eq!(
            class(429, b"Too Many Requests"),
            (OutcomeClass::Transient, true, code("HTTP429"))
        );
        assert_eq!(
            class(400, br#"{"code":400}"#),
            (OutcomeClass::RequestRefused, false, code("HTTP400"))
        );
        assert_eq!(
            class(502, b"Bad Gateway"),
            (OutcomeClass::Transient, false, code("HTTP502"))
        );
        assert_eq!(
            class(504, b""),
            (OutcomeClass::Unknown, false, code("HTTP504"))
        );
        assert_eq!(
            class(403, b"<html>"),
            (OutcomeClass::ProviderWide, false, code("HTTP403"))
        );
        // The API's own JSON decides whatever the status.
        let r = classify(
            500,
            br#"{"Response":{"Error":{"Code":"InvalidParameter","Message":"x"},"RequestId":"y"}}"#,
        );
        assert_eq!(r.classification.class, OutcomeClass::InvalidField);
    }
}
