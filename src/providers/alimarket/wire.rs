//! Marketplace `mobile3/check` wire types: the JSON request body and a lenient reading of the response envelope `{code, msg, isFee, seqNo, data:{result, resultDesc, mobileChannel}}`.
//!
//! The product page types `isFee` and `data.result` as `int` and `code` / `seqNo` as `string`
//! (<http://market.aliyun.com/detail/cmapi00063272.html>). Sellers' gateways are not always
//! faithful to their own tables, so numbers are accepted as JSON numbers or as numeric strings
//! **[inferred]**; anything else counts as absent, and the classification decides what an
//! absent field means.

use serde::Serialize;
use serde_json::{Map, Value};

/// The request body, field names as the product page lists them. Holds plaintext PII only for
/// the time it takes to serialise it; it has no `Debug`.
#[derive(Serialize)]
pub struct Mobile3CheckRequest<'a> {
    /// 姓名.
    pub name: &'a str,
    /// 手机号.
    pub mobile: &'a str,
    /// 身份证号.
    #[serde(rename = "idCard")]
    pub id_card: &'a str,
}

/// What kycq reads from a 2xx body. Holds no personal data.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Reply {
    /// `code` (the vendor's return code; its table is not in the stored product page).
    pub code: Option<String>,
    /// `msg`.
    pub msg: Option<String>,
    /// `isFee`: 1 billed, 0 not billed; None when absent or not a number.
    pub is_fee: Option<i64>,
    /// `seqNo`: the vendor's call serial number.
    pub seq_no: Option<String>,
    /// `data.result` as text (`"1"`, `"2"`, `"3"`, or whatever else arrived); None when absent.
    pub result: Option<String>,
    /// `data.resultDesc`.
    pub result_desc: Option<String>,
    /// `data.mobileChannel`: `cmcc`, `cucc`, `ctcc` or `gdcc`.
    pub mobile_channel: Option<String>,
}

/// Why a body could not be read at all.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum BodyError {
    /// Not JSON.
    #[error("response body is not JSON: {0}")]
    NotJson(String),
    /// JSON, but not an object.
    #[error("response body is JSON but not an object")]
    NotAnObject,
}

/// Reads a response body. Only a body that is not a JSON object is an error; missing or
/// mistyped fields come back as `None`.
pub fn parse_reply(body: &[u8]) -> Result<Reply, BodyError> {
    let value: Value =
        serde_json::from_slice(body).map_err(|e| BodyError::NotJson(e.to_string()))?;
    let Value::Object(top) = value else {
        return Err(BodyError::NotAnObject);
    };
    let data = top.get("data").and_then(Value::as_object);
    let from_data = |key: &str| data.and_then(|d| text(d, key));
    Ok(Reply {
        code: text(&top, "code"),
        msg: text(&top, "msg"),
        is_fee: top.get("isFee").and_then(integer),
        seq_no: text(&top, "seqNo"),
        result: data.and_then(|d| d.get("result")).and_then(scalar_text),
        result_desc: from_data("resultDesc"),
        mobile_channel: from_data("mobileChannel"),
    })
}

/// A string or number field as text; blank strings count as absent.
fn text(object: &Map<String, Value>, key: &str) -> Option<String> {
    object.get(key).and_then(scalar_text)
}

fn scalar_text(value: &Value) -> Option<String> {
    match value {
        Value::String(s) if !s.trim().is_empty() => Some(s.trim().to_owned()),
        Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

/// An integer given as a JSON integer or as a string of digits.
fn integer(value: &Value) -> Option<i64> {
    match value {
        Value::Number(n) => n.as_i64(),
        Value::String(s) => s.trim().parse().ok(),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_request_body_uses_the_vendor_field_names() {
        let body = serde_json::to_string(&Mobile3CheckRequest {
            name: "张三",
            mobile: "13812345678",
            id_card: "11010519491231002X",
        })
        .unwrap();
        assert_eq!(
            body,
            r#"{"name":"张三","mobile":"13812345678","idCard":"11010519491231002X"}"#
        );
    }

    #[test]
    fn reads_the_documented_envelope() {
        let r = parse_reply(
            "{\"code\":\"200\",\"msg\":\"成功\",\"isFee\":1,\"seqNo\":\"5e2f\",\"data\":{\"result\":1,\"resultDesc\":\"一致\",\"mobileChannel\":\"gdcc\"}}".as_bytes(),
        )
        .unwrap();
        assert_eq!(
            r,
            Reply {
                code: Some("200".into()),
                msg: Some("成功".into()),
                is_fee: Some(1),
                seq_no: Some("5e2f".into()),
                result: Some("1".into()),
                result_desc: Some("一致".into()),
                mobile_channel: Some("gdcc".into()),
            }
        );
    }

    #[test]
    fn numbers_may_come_as_strings_and_odd_fields_count_as_absent() {
        let r = parse_reply(br#"{"code":0,"isFee":"0","seqNo":42,"data":{"result":"3"}}"#).unwrap();
        assert_eq!(r.code.as_deref(), Some("0"));
        assert_eq!(r.is_fee, Some(0));
        assert_eq!(r.seq_no.as_deref(), Some("42"));
        assert_eq!(r.result.as_deref(), Some("3"));

        let r = parse_reply(br#"{"isFee":true,"data":null,"seqNo":" "}"#).unwrap();
        assert_eq!((r.is_fee, r.result, r.seq_no), (None, None, None));
        let r = parse_reply(br#"{"isFee":"yes","data":"oops"}"#).unwrap();
        assert_eq!((r.is_fee, r.result), (None, None));
        let r = parse_reply(br#"{"data":{"result":[1]}}"#).unwrap();
        assert_eq!(r.result, None);
        assert_eq!(parse_reply(b"{}").unwrap(), Reply::default());
    }

    #[test]
    fn only_non_objects_are_unreadable() {
        assert!(matches!(parse_reply(b"<html>"), Err(BodyError::NotJson(_))));
        assert!(matches!(parse_reply(b""), Err(BodyError::NotJson(_))));
        assert_eq!(parse_reply(b"[1]"), Err(BodyError::NotAnObject));
        assert_eq!(parse_reply(b"\"ok\""), Err(BodyError::NotAnObject));
    }
}
