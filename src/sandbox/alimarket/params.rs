//! The Marketplace request: the JSON body as the gateway checks it, and the seller's own field checks.

use serde_json::Value;

use super::answers::{gateway, Answer, BAD_FIELDS};
use crate::check::mask::{mask_id_number, mask_mobile, mask_name};
use crate::sandbox::scenarios::well_formed_id_number;

/// The body's fields. Holds plaintext PII: never logged, `Debug` masks it.
#[derive(Clone, PartialEq, Eq)]
pub struct Mobile3Check {
    /// `name`.
    pub name: String,
    /// `mobile`.
    pub mobile: String,
    /// `idCard`.
    pub id_card: String,
}

impl std::fmt::Debug for Mobile3Check {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Mobile3Check")
            .field("name", &mask_name(&self.name))
            .field("mobile", &mask_mobile(&self.mobile))
            .field("id_card", &mask_id_number(&self.id_card))
            .finish()
    }
}

/// Check 2: the body.
pub fn parse_body(body: &[u8]) -> Result<Mobile3Check, Answer> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Err(gateway(400, "Empty Request Body"));
    }
    let invalid = gateway(400, "Invalid Request Body");
    let value: Value = serde_json::from_slice(body).map_err(|_| invalid)?;
    let object = value.as_object().ok_or(invalid)?;
    let field = |name: &str| match object.get(name) {
        Some(Value::String(s)) => Ok(s.clone()),
        _ => Err(invalid),
    };
    Ok(Mobile3Check {
        name: field("name")?,
        mobile: field("mobile")?,
        id_card: field("idCard")?,
    })
}

/// Check 3: the seller's own field checks **[inferred]**.
pub fn field_check(request: &Mobile3Check) -> Option<Answer> {
    let mobile = request.mobile.as_bytes();
    let mobile_ok = mobile.len() == 11 && mobile.iter().all(u8::is_ascii_digit);
    let id_ok = well_formed_id_number(&request.id_card);
    (!mobile_ok || !id_ok || request.name.trim().is_empty()).then_some(BAD_FIELDS)
}

/// Reads the fields best-effort (also from refused calls), for the ledger and masked logs.
pub(super) fn peek(body: &[u8]) -> (Option<String>, Option<String>, Option<String>) {
    let value: Value = serde_json::from_slice(body).unwrap_or(Value::Null);
    let text = |name: &str| value.get(name).and_then(Value::as_str).map(str::to_owned);
    (text("idCard"), text("name"), text("mobile"))
}
