//! Alibaba's request parameters: the action and version, the query string and form body, and the vendor's own checks per API.

use axum::http::HeaderMap;
use chrono::NaiveDate;

use super::answers::md5_identities;
use super::Answer;
use crate::check::mask::{mask_mobile, mask_name};
use crate::providers::alibaba::{Api, DOC_TYPE_RESIDENT_ID, VERSION};
use crate::providers::signing::acs3;
use crate::sandbox::header_str;
use crate::sandbox::scenarios::{identity_with_code, well_formed_id_number};

/// The API and version of a call (`InvalidAction.NotFound` / `InvalidVersion`).
pub fn check_action(headers: &HeaderMap) -> Result<Api, Answer> {
    let action = header_str(headers, "x-acs-action").unwrap_or_default();
    let api = Api::from_action(action).ok_or_else(|| Answer::Error {
        code: "InvalidAction.NotFound",
        detail: Some(action.chars().take(64).collect()),
    })?;
    let version = header_str(headers, "x-acs-version").unwrap_or_default();
    if version != VERSION {
        return Err(Answer::Error {
            code: "InvalidVersion",
            detail: Some(version.chars().take(32).collect()),
        });
    }
    Ok(api)
}

/// The parameters of a call: the query string, then a form body when the content type says so.
/// None when a component is not UTF-8.
pub fn parameters(
    raw_query: &str,
    headers: &HeaderMap,
    body: &[u8],
) -> Option<Vec<(String, String)>> {
    let mut params = acs3::parse_query(raw_query)?;
    let is_form = header_str(headers, "content-type")
        .is_some_and(|c| c.trim_start().starts_with(acs3::FORM_CONTENT_TYPE));
    if is_form && !body.is_empty() {
        params.extend(acs3::parse_query(std::str::from_utf8(body).ok()?)?);
    }
    Some(params)
}

/// The subject of a call as received. Holds plaintext (or hashed) PII: `Debug` masks it.
#[derive(Clone, PartialEq, Eq)]
pub struct Subject {
    /// `IdentifyNum` / `DocNo` as received (an MD5 hex string in md5 mode).
    pub id_number: String,
    /// `UserName` / `DocName` as received.
    pub name: String,
    /// `Mobile` as received (Mobile3 only).
    pub mobile: Option<String>,
    /// `ParamType=md5`.
    pub md5: bool,
}

impl std::fmt::Debug for Subject {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Subject")
            .field("id_number", &"***")
            .field("name", &mask_name(&self.name))
            .field("mobile", &self.mobile.as_deref().map(mask_mobile))
            .field("md5", &self.md5)
            .finish()
    }
}

fn is_md5_hex(s: &str) -> bool {
    s.len() == 32
        && s.bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

fn valid_date(s: &str) -> bool {
    s.len() == 8 && NaiveDate::parse_from_str(s, "%Y%m%d").is_ok()
}

/// The vendor's own parameter checks for `api`; the subject when they pass.
pub fn validate(api: Api, params: &[(String, String)]) -> Result<Subject, Answer> {
    let get = |name: &str| {
        params
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    };
    let required = |name: &'static str| {
        get(name)
            .filter(|v| !v.trim().is_empty())
            .ok_or_else(|| Answer::missing(name))
    };
    if required("ProductCode")? != api.product_code() {
        return Err(Answer::invalid("ProductCode"));
    }
    match api {
        Api::Mobile3 | Api::Id2 => {
            let param_type = required("ParamType")?;
            let md5 = match (api, param_type) {
                (_, "normal") => false,
                (Api::Mobile3, "md5") => true,
                _ => return Err(Answer::invalid("ParamType")),
            };
            let id_number = required("IdentifyNum")?;
            let name = required("UserName")?;
            let mobile = if api == Api::Mobile3 {
                Some(required("Mobile")?)
            } else {
                None
            };
            if md5 {
                for (param, value) in [("IdentifyNum", id_number), ("UserName", name)]
                    .into_iter()
                    .chain(mobile.map(|m| ("Mobile", m)))
                {
                    if !is_md5_hex(value) {
                        return Err(Answer::invalid(param));
                    }
                }
            } else {
                if !well_formed_id_number(id_number) {
                    return Err(Answer::invalid("IdentifyNum"));
                }
                if mobile.is_some_and(|m| {
                    m.len() != 11 || !m.starts_with('1') || !m.bytes().all(|b| b.is_ascii_digit())
                }) {
                    return Err(Answer::invalid("Mobile"));
                }
            }
            Ok(Subject {
                id_number: id_number.to_owned(),
                name: name.to_owned(),
                mobile: mobile.map(str::to_owned),
                md5,
            })
        }
        Api::Id2Period => {
            let biz_id = required("MerchantBizId")?;
            if biz_id.len() > 32 || !biz_id.bytes().all(|b| b.is_ascii_alphanumeric()) {
                return Err(Answer::invalid("MerchantBizId"));
            }
            if required("DocType")? != DOC_TYPE_RESIDENT_ID {
                return Err(Answer::invalid("DocType"));
            }
            let name = required("DocName")?;
            let id_number = required("DocNo")?;
            if !well_formed_id_number(id_number) {
                return Err(Answer::invalid("DocNo"));
            }
            if !valid_date(required("ValidityStartDate")?) {
                return Err(Answer::invalid("ValidityStartDate"));
            }
            let end = required("ValidityEndDate")?;
            // The zh/tc pages say 长期, the English page "long-term": both are taken.
            if !(valid_date(end) || end == "长期" || end.eq_ignore_ascii_case("long-term")) {
                return Err(Answer::invalid("ValidityEndDate"));
            }
            if let Some(scene) = get("SceneCode").filter(|s| !s.is_empty()) {
                if scene.len() > 10
                    || !scene
                        .bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b == b'_')
                {
                    return Err(Answer::invalid("SceneCode"));
                }
            }
            Ok(Subject {
                id_number: id_number.to_owned(),
                name: name.to_owned(),
                mobile: None,
                md5: false,
            })
        }
    }
}

/// Best effort, also for refused calls: the ID number the ledger records.
pub(super) fn peek_id(raw_query: &str, headers: &HeaderMap, body: &[u8]) -> Option<String> {
    let params = parameters(raw_query, headers, body)?;
    let get = |n: &str| params.iter().find(|(k, _)| k == n).map(|(_, v)| v.clone());
    let id = get("IdentifyNum").or_else(|| get("DocNo"))?;
    Some(match md5_identities().get(&id) {
        Some((code, variant)) if is_md5_hex(&id) => identity_with_code(code, *variant).id_number,
        _ => id,
    })
}
