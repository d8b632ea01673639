//! Tencent's request parameters: the action and version headers, the JSON body and the vendor's own field checks.

use axum::http::HeaderMap;
use serde_json::Value;

use super::{Answer, ACTION, VERSION};
use crate::check::mask::{mask_id_number, mask_mobile, mask_name};
use crate::sandbox::header_str;
use crate::sandbox::scenarios::well_formed_id_number;

/// Check 5: the action and version.
pub fn check_action(headers: &HeaderMap) -> Result<(), Answer> {
    let action = header_str(headers, "x-tc-action").unwrap_or_default();
    if action != ACTION {
        return Err(Answer::error(
            "InvalidAction",
            format!("The action `{action}` is not found. The sandbox serves `{ACTION}`."),
        ));
    }
    let version = header_str(headers, "x-tc-version").unwrap_or_default();
    if version != VERSION {
        return Err(Answer::error(
            "NoSuchVersion",
            format!("The API version `{version}` does not exist for `{ACTION}`; use `{VERSION}`."),
        ));
    }
    Ok(())
}

/// The `PhoneVerification` parameters. Holds plaintext PII: never logged, `Debug` masks it.
#[derive(Clone, PartialEq, Eq)]
pub struct PhoneVerification {
    /// `IdCard`.
    pub id_card: String,
    /// `Name`.
    pub name: String,
    /// `Phone`.
    pub phone: String,
}

impl std::fmt::Debug for PhoneVerification {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PhoneVerification")
            .field("id_card", &mask_id_number(&self.id_card))
            .field("name", &mask_name(&self.name))
            .field("phone", &mask_mobile(&self.phone))
            .finish()
    }
}

/// Check 6: decodes the JSON body (`MissingParameter` / `InvalidParameter` as the vendor names them).
pub fn parse_body(body: &[u8]) -> Result<PhoneVerification, Answer> {
    let value: Value = serde_json::from_slice(body)
        .map_err(|_| Answer::error("InvalidParameter", "The request body is not valid JSON."))?;
    let object = value.as_object().ok_or_else(|| {
        Answer::error(
            "InvalidParameter",
            "The request body must be a JSON object.",
        )
    })?;
    if object.contains_key("CiphertextBlob") || object.contains_key("EncryptList") {
        return Err(Answer::error(
            "UnsupportedOperation",
            "The sandbox does not decrypt fields: send IdCard, Name and Phone in plain text.",
        ));
    }
    let field = |name: &str| match object.get(name) {
        None | Some(Value::Null) => Err(Answer::error(
            "MissingParameter",
            format!("The request is missing a required parameter `{name}`."),
        )),
        Some(Value::String(s)) => Ok(s.clone()),
        Some(_) => Err(Answer::error(
            "InvalidParameter",
            format!("The parameter `{name}` must be a string."),
        )),
    };
    Ok(PhoneVerification {
        id_card: field("IdCard")?,
        name: field("Name")?,
        phone: field("Phone")?,
    })
}

/// Check 7: the vendor's own field checks (`-6` phone, `-7` ID number, `-8` name).
pub fn field_check(request: &PhoneVerification) -> Option<Answer> {
    let phone = request.phone.as_bytes();
    if phone.len() != 11 || !phone.iter().all(u8::is_ascii_digit) {
        return Some(Answer::result("-6"));
    }
    if !well_formed_id_number(&request.id_card) {
        return Some(Answer::result("-7"));
    }
    if request.name.trim().is_empty() {
        return Some(Answer::result("-8"));
    }
    None
}

/// Reads the fields best-effort (also from refused calls), for the ledger and masked logs.
pub(super) fn peek(body: &[u8]) -> (Option<String>, Option<String>, Option<String>) {
    let value: Value = serde_json::from_slice(body).unwrap_or(Value::Null);
    let text = |name: &str| value.get(name).and_then(Value::as_str).map(str::to_owned);
    (text("IdCard"), text("Name"), text("Phone"))
}
