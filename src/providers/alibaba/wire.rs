//! Alibaba cloudauth-intl wire types: the response envelope shared by the three APIs and by
//! error answers (`{RequestId, Code, Message, Result}` / `{RequestId, HostId, Code, Message, Recommend}`).

use serde::{Deserialize, Deserializer};

/// Every JSON answer: a success carries `Code: "Success"` and `Result`, an error its `Code`.
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
pub struct Envelope {
    /// The vendor's request id.
    #[serde(deserialize_with = "lenient_string")]
    pub request_id: Option<String>,
    /// `Success`, or the error code.
    #[serde(deserialize_with = "lenient_string")]
    pub code: Option<String>,
    /// Human text.
    #[serde(deserialize_with = "lenient_string")]
    pub message: Option<String>,
    /// The verification result (success only).
    pub result: Option<ResultObject>,
}

impl Envelope {
    /// Whether `Code` says success (the vendor writes `Success`; one page's example says `success`).
    pub fn is_success(&self) -> bool {
        self.code
            .as_deref()
            .is_some_and(|c| c.eq_ignore_ascii_case("success"))
    }
}

/// `Result` of the three APIs: `BizCode`/`SubCode`/`IspName` (Mobile3), `BizCode` (Id2),
/// `Passed`/`SubCode` (Id2Period).
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
pub struct ResultObject {
    /// `1`, `2`, `3`.
    #[serde(deserialize_with = "lenient_string")]
    pub biz_code: Option<String>,
    /// Mobile3 `101`… / Id2Period `200`….
    #[serde(deserialize_with = "lenient_string")]
    pub sub_code: Option<String>,
    /// `CMCC`, `CUCC`, `CTCC`.
    #[serde(deserialize_with = "lenient_string")]
    pub isp_name: Option<String>,
    /// Id2Period `Y` / `N`.
    #[serde(deserialize_with = "lenient_string")]
    pub passed: Option<String>,
}

/// A string field that may come as a JSON string or number; null or blank is None.
fn lenient_string<'de, D: Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    let v = Option::<serde_json::Value>::deserialize(d)?;
    Ok(match v {
        Some(serde_json::Value::String(s)) => Some(s.trim().to_owned()).filter(|s| !s.is_empty()),
        Some(serde_json::Value::Number(n)) => Some(n.to_string()),
        Some(serde_json::Value::Bool(b)) => Some(b.to_string()),
        _ => None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn success_and_error_envelopes_parse() {
        let e: Envelope = serde_json::from_str(
            r#"{"RequestId":"130A2C10-B9EE-4D84-88E3-5384FF039795","Code":"Success","Message":"success","Result":{"BizCode":"2","SubCode":203,"IspName":"CMCC"}}"#,
        )
        .unwrap();
        assert!(e.is_success());
        let r = e.result.unwrap();
        assert_eq!(r.biz_code.as_deref(), Some("2"));
        assert_eq!(r.sub_code.as_deref(), Some("203"));
        assert_eq!(r.isp_name.as_deref(), Some("CMCC"));
        assert_eq!(r.passed, None);

        let e: Envelope = serde_json::from_str(
            r#"{"RequestId":"x","HostId":"cloudauth-intl.cn-hongkong.aliyuncs.com","Code":"Throttling.Api","Message":"throttled","Recommend":"https://api.aliyun.com/troubleshoot?q=Throttling.Api"}"#,
        )
        .unwrap();
        assert!(!e.is_success());
        assert_eq!(e.code.as_deref(), Some("Throttling.Api"));
        assert!(e.result.is_none());

        let e: Envelope = serde_json::from_str(r#"{"Code":"success","Result":null}"#).unwrap();
        assert!(e.is_success());
        assert!(e.result.is_none());
        let e: Envelope = serde_json::from_str(r#"{"Code":"  "}"#).unwrap();
        assert_eq!(e.code, None);
    }
}
