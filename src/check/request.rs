//! Decoding and validating a request message before anything costs money.

use std::fmt;
use std::str::FromStr;

use chrono::NaiveDate;
use serde_json::{Map, Value};

use super::identity::{FieldError, IdNumber, Mobile, Name, Validity};
use super::mask::{mask_id_number, mask_mobile, mask_name};
use super::reason::ReasonCode;
use super::result::MaskedSubject;

/// The three checks kycq runs.
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize,
)]
#[serde(rename_all = "snake_case")]
pub enum CheckKind {
    /// Name + ID number + mobile belong together.
    Mobile3,
    /// Name + ID number belong together.
    Id2,
    /// Name + ID number + the card's validity period.
    Id2Period,
}

impl CheckKind {
    /// Every check, in contract order.
    pub const ALL: [CheckKind; 3] = [CheckKind::Mobile3, CheckKind::Id2, CheckKind::Id2Period];

    /// The contract name (`mobile3`, `id2`, `id2_period`).
    pub fn as_str(self) -> &'static str {
        match self {
            CheckKind::Mobile3 => "mobile3",
            CheckKind::Id2 => "id2",
            CheckKind::Id2Period => "id2_period",
        }
    }
}

impl fmt::Display for CheckKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for CheckKind {
    type Err = ();
    fn from_str(s: &str) -> Result<Self, ()> {
        match s {
            "mobile3" => Ok(CheckKind::Mobile3),
            "id2" => Ok(CheckKind::Id2),
            "id2_period" => Ok(CheckKind::Id2Period),
            _ => Err(()),
        }
    }
}

/// The validated person a check is about. Every field masks itself in `Debug`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Subject {
    /// Normalised name.
    pub name: Name,
    /// Normalised ID number (upper-case `X`).
    pub id_number: IdNumber,
    /// Present for `mobile3`.
    pub mobile: Option<Mobile>,
    /// Present for `id2_period`.
    pub validity: Option<Validity>,
}

impl Subject {
    /// The masked form stored and published.
    pub fn masked(&self) -> MaskedSubject {
        MaskedSubject {
            name: Some(self.name.masked()),
            id_number: Some(self.id_number.masked()),
            mobile: self.mobile.as_ref().map(Mobile::masked),
        }
    }

    /// `text` with every plaintext field of this subject replaced by its mask: vendor messages
    /// (errors, descriptions) may echo what they were sent, and they go into results and logs.
    pub fn scrub(&self, text: &str) -> String {
        let mut out = text.to_owned();
        let id = self.id_number.expose();
        let mut pairs = vec![
            (id.to_owned(), self.id_number.masked()),
            (id.to_ascii_lowercase(), self.id_number.masked()),
            (self.name.expose().to_owned(), self.name.masked()),
        ];
        if let Some(m) = &self.mobile {
            pairs.push((m.expose().to_owned(), m.masked()));
        }
        for (plain, masked) in pairs {
            if !plain.is_empty() && out.contains(&plain) {
                out = out.replace(&plain, &masked);
            }
        }
        out
    }

    /// Keyed fingerprint of the person (ID number and name) for "have we checked this person
    /// before" look-ups: hex HMAC-SHA256 of `kycq-subject-v1\n<id_number>\n<name>`.
    pub fn fingerprint(&self, key: &[u8]) -> String {
        let msg = format!(
            "kycq-subject-v1\n{}\n{}",
            self.id_number.expose(),
            self.name.expose()
        );
        use hmac::{Hmac, Mac};
        // HMAC takes keys of any length: this cannot fail.
        let mut mac = <Hmac<sha2::Sha256> as Mac>::new_from_slice(key).expect("any key length");
        mac.update(msg.as_bytes());
        hex::encode(mac.finalize().into_bytes())
    }
}

/// A request that passed validation: safe to spend money on.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CheckRequest {
    /// The idempotency key.
    pub request_id: String,
    /// What to check.
    pub check: CheckKind,
    /// Who to check.
    pub subject: Subject,
    /// A pinned provider, if the client asked for one.
    pub provider: Option<String>,
    /// Passed to providers that take it.
    pub merchant_user_id: Option<String>,
    /// Passed to providers that take it.
    pub scene_code: Option<String>,
}

/// A request with a usable `request_id` whose fields kycq refuses: it gets a `rejected` result.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Rejection {
    /// The idempotency key.
    pub request_id: String,
    /// The check, when it was one kycq knows.
    pub check: Option<CheckKind>,
    /// Which rule refused it.
    pub reason_code: ReasonCode,
    /// A sentence naming the field; never the submitted value.
    pub reason: String,
    /// What was submitted, masked.
    pub subject: MaskedSubject,
}

/// A message that cannot be answered at all: it goes to the dead-letter queue with this reason.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum Malformed {
    /// The body is not JSON (or not UTF-8).
    #[error("body is not valid JSON: {0}")]
    NotJson(String),
    /// The body is JSON but not an object.
    #[error("body is not a JSON object")]
    NotObject,
    /// No usable idempotency key.
    #[error("no usable request_id: {0}")]
    NoRequestId(&'static str),
    /// A key is given twice (which one counts would be a guess; the audit trail must not be).
    /// Holds the request field's name; None for any other key, which is the client's own text
    /// (it may hold personal data or control characters, at any length) and is never echoed.
    #[error("{} is given more than once", duplicate(.0))]
    DuplicateKey(Option<&'static str>),
}

fn duplicate(field: &Option<&'static str>) -> String {
    match field {
        Some(f) => format!("the field {f}"),
        None => "a key that is not a request field".to_owned(),
    }
}

impl Malformed {
    /// The short reason put in the `x-kycq-reason` header.
    pub fn reason(&self) -> &'static str {
        match self {
            Malformed::NotJson(_) => "not_json",
            Malformed::NotObject => "not_an_object",
            Malformed::NoRequestId(_) => "no_request_id",
            Malformed::DuplicateKey(_) => "duplicate_key",
        }
    }
}

/// What a message decodes to.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Decoded {
    /// Valid: go on and claim it.
    Valid(CheckRequest),
    /// Refused by validation: answer `rejected`, call nobody.
    Rejected(Rejection),
}

impl Decoded {
    /// The request's idempotency key.
    pub fn request_id(&self) -> &str {
        match self {
            Decoded::Valid(r) => &r.request_id,
            Decoded::Rejected(r) => &r.request_id,
        }
    }
}

/// The longest value each text field may have, in characters (as sent, before normalising):
/// longer is `rejected` / `field_too_long` before anything else is read. Room for every real
/// name (the longest registered Chinese names have a few dozen characters), an ID number or a
/// mobile with spaces and a country code, a date, and opaque client ids.
pub const FIELD_MAX_CHARS: &[(&str, usize)] = &[
    ("name", 64),
    ("id_number", 32),
    ("mobile", 32),
    ("validity_start", 16),
    ("validity_end", 16),
    ("provider", MAX_PROVIDER_LEN),
    ("merchant_user_id", 128),
    ("scene_code", 64),
];

/// The documented maximum of a field, if it has one.
pub fn field_max_chars(field: &str) -> Option<usize> {
    FIELD_MAX_CHARS
        .iter()
        .find(|(f, _)| *f == field)
        .map(|(_, n)| *n)
}

/// Longest provider name a request may pin.
pub const MAX_PROVIDER_LEN: usize = 32;

/// Whether `s` has the form of a provider name: 1–32 lower-case ASCII letters, digits or `_`.
/// Whether such a provider exists and runs the check is the worker's routing to say (the
/// domain does not know the vendors).
pub fn is_provider_name(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= MAX_PROVIDER_LEN
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
}

/// Longest accepted `request_id`.
pub const MAX_REQUEST_ID_LEN: usize = 64;

/// Whether `s` is a usable idempotency key: 1–64 characters of `[A-Za-z0-9_-]`.
pub fn is_valid_request_id(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= MAX_REQUEST_ID_LEN
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

/// Decode and validate one message body. `today` bounds birth dates (never read from a clock here).
pub fn decode(body: &[u8], today: NaiveDate) -> Result<Decoded, Malformed> {
    // One parse: the top-level object with the first key it gives twice, if any.
    let top: TopLevel = serde_json::from_slice(body).map_err(|e| {
        // serde_json's message names a line and column, never the content.
        Malformed::NotJson(e.to_string())
    })?;
    let TopLevel::Object(obj, twice) = top else {
        return Err(Malformed::NotObject);
    };
    if let Some(key) = twice {
        return Err(Malformed::DuplicateKey(request_field(&key)));
    }
    let request_id = match obj.get("request_id") {
        None | Some(Value::Null) => return Err(Malformed::NoRequestId("request_id is missing")),
        Some(Value::String(s)) if is_valid_request_id(s) => s.clone(),
        Some(Value::String(_)) => {
            return Err(Malformed::NoRequestId(
                "request_id must be 1-64 characters of A-Z a-z 0-9 _ -",
            ))
        }
        Some(_) => return Err(Malformed::NoRequestId("request_id must be a string")),
    };
    let fields = Fields(&obj);
    let check = fields
        .str("check")
        .and_then(|s| CheckKind::from_str(s).ok());
    match validate(&fields, check, today) {
        Ok(valid) => Ok(Decoded::Valid(CheckRequest {
            request_id,
            check: valid.0,
            subject: valid.1,
            provider: fields.str("provider").map(str::to_owned),
            merchant_user_id: fields.str("merchant_user_id").map(str::to_owned),
            scene_code: fields.str("scene_code").map(str::to_owned),
        })),
        Err((reason_code, reason)) => Ok(Decoded::Rejected(Rejection {
            request_id,
            check,
            reason_code,
            reason,
            subject: fields.masked(check),
        })),
    }
}

/// The name of a request field (`request_id`, `check` or one of [`FIELD_MAX_CHARS`]); None
/// for any other key.
fn request_field(key: &str) -> Option<&'static str> {
    ["request_id", "check"]
        .into_iter()
        .chain(FIELD_MAX_CHARS.iter().map(|(f, _)| *f))
        .find(|f| *f == key)
}

/// A body's top level: an object (with the first key it gives twice, which serde_json's own
/// `Value` would keep silently, last one winning), or anything else.
enum TopLevel {
    Object(Map<String, Value>, Option<String>),
    Other,
}

impl<'de> serde::Deserialize<'de> for TopLevel {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        use serde::de::{IgnoredAny, MapAccess, SeqAccess, Visitor};
        struct Top;
        impl<'de> Visitor<'de> for Top {
            type Value = TopLevel;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a JSON value")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<TopLevel, A::Error> {
                let mut obj = Map::new();
                let mut twice = None;
                while let Some(key) = map.next_key::<String>()? {
                    let value: Value = map.next_value()?;
                    if obj.contains_key(&key) {
                        twice.get_or_insert(key);
                    } else {
                        obj.insert(key, value);
                    }
                }
                Ok(TopLevel::Object(obj, twice))
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<TopLevel, A::Error> {
                while seq.next_element::<IgnoredAny>()?.is_some() {}
                Ok(TopLevel::Other)
            }
            fn visit_bool<E>(self, _: bool) -> Result<TopLevel, E> {
                Ok(TopLevel::Other)
            }
            fn visit_i64<E>(self, _: i64) -> Result<TopLevel, E> {
                Ok(TopLevel::Other)
            }
            fn visit_u64<E>(self, _: u64) -> Result<TopLevel, E> {
                Ok(TopLevel::Other)
            }
            fn visit_f64<E>(self, _: f64) -> Result<TopLevel, E> {
                Ok(TopLevel::Other)
            }
            fn visit_str<E>(self, _: &str) -> Result<TopLevel, E> {
                Ok(TopLevel::Other)
            }
            fn visit_unit<E>(self) -> Result<TopLevel, E> {
                Ok(TopLevel::Other)
            }
        }
        d.deserialize_any(Top)
    }
}

struct Fields<'a>(&'a Map<String, Value>);

impl Fields<'_> {
    /// A field as a non-empty trimmed string; absent, null or blank → None.
    fn str(&self, key: &str) -> Option<&str> {
        match self.0.get(key) {
            Some(Value::String(s)) if !s.trim().is_empty() => Some(s.trim()),
            _ => None,
        }
    }

    /// A required string field: present but of another type is an error naming the field.
    fn required(&self, key: &'static str) -> Result<&str, FieldError> {
        match self.0.get(key) {
            None | Some(Value::Null) => Err(FieldError::Missing(key)),
            Some(Value::String(s)) if s.trim().is_empty() => Err(FieldError::Missing(key)),
            Some(Value::String(s)) => Ok(s.trim()),
            Some(_) => Err(type_error(key)),
        }
    }

    fn optional_text(&self, key: &'static str, max_chars: usize) -> Result<(), String> {
        match self.0.get(key) {
            None | Some(Value::Null) => Ok(()),
            Some(Value::String(s)) if s.chars().count() > max_chars => {
                Err(format!("{key} must be at most {max_chars} characters"))
            }
            Some(Value::String(s)) if s.chars().any(char::is_control) => {
                Err(format!("{key} must not contain control characters"))
            }
            Some(Value::String(_)) => Ok(()),
            Some(_) => Err(format!("{key} must be a string")),
        }
    }

    /// Whether a string field is longer than its documented maximum.
    fn too_long(&self, key: &str) -> bool {
        match (self.0.get(key), field_max_chars(key)) {
            (Some(Value::String(s)), Some(max)) => s.chars().count() > max,
            _ => false,
        }
    }

    /// What was submitted, masked, for a rejected result (only the fields the check uses; a
    /// field over its maximum length is `***`, so a huge input never makes a huge result).
    fn masked(&self, check: Option<CheckKind>) -> MaskedSubject {
        let masked = |key: &str, mask: fn(&str) -> String| {
            let value = self.str(key)?;
            Some(if self.too_long(key) {
                "***".to_owned()
            } else {
                mask(value)
            })
        };
        MaskedSubject {
            name: masked("name", mask_name),
            id_number: masked("id_number", mask_id_number),
            mobile: match check {
                Some(CheckKind::Mobile3) | None => masked("mobile", mask_mobile),
                _ => None,
            },
        }
    }
}

fn type_error(key: &'static str) -> FieldError {
    match key {
        "name" => FieldError::Name("must be a string"),
        "id_number" => FieldError::IdNumber("must be a string"),
        "mobile" => FieldError::Mobile("must be a string"),
        _ => FieldError::Date {
            field: key,
            reason: "must be a string",
        },
    }
}

fn field(e: FieldError) -> (ReasonCode, String) {
    (e.reason_code(), e.to_string())
}

fn validate(
    f: &Fields<'_>,
    check: Option<CheckKind>,
    today: NaiveDate,
) -> Result<(CheckKind, Subject), (ReasonCode, String)> {
    let check = match (f.0.get("check"), check) {
        (_, Some(c)) => c,
        (None | Some(Value::Null), None) => {
            return Err((ReasonCode::InvalidRequest, "check is required".into()))
        }
        (Some(_), None) => {
            return Err((
                ReasonCode::InvalidRequest,
                "check must be one of mobile3, id2, id2_period".into(),
            ))
        }
    };
    for (key, max) in FIELD_MAX_CHARS {
        if f.too_long(key) {
            return Err((
                ReasonCode::FieldTooLong,
                format!("{key} must be at most {max} characters"),
            ));
        }
    }
    let name = Name::parse(f.required("name").map_err(field)?).map_err(field)?;
    let id_number =
        IdNumber::parse(f.required("id_number").map_err(field)?, today).map_err(field)?;
    let mobile = match check {
        CheckKind::Mobile3 => {
            Some(Mobile::parse(f.required("mobile").map_err(field)?).map_err(field)?)
        }
        _ => None,
    };
    let validity = match check {
        CheckKind::Id2Period => {
            let start = f.required("validity_start").map_err(field)?;
            let end = f.required("validity_end").map_err(field)?;
            Some(Validity::parse(start, end).map_err(field)?)
        }
        _ => None,
    };
    if let Some(p) = f.0.get("provider") {
        match p {
            Value::Null => {}
            Value::String(s) if is_provider_name(s.trim()) => {}
            _ => {
                return Err((
                    ReasonCode::InvalidRequest,
                    format!(
                        "provider must be a provider name (1-{MAX_PROVIDER_LEN} lower-case letters, digits or _)"
                    ),
                ))
            }
        }
    }
    f.optional_text("merchant_user_id", 128)
        .and_then(|_| f.optional_text("scene_code", 64))
        .map_err(|m| (ReasonCode::InvalidRequest, m))?;
    Ok((
        check,
        Subject {
            name,
            id_number,
            mobile,
            validity,
        },
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn today() -> NaiveDate {
        NaiveDate::from_ymd_opt(2026, 11, 23).unwrap()
    }

    fn dec(v: serde_json::Value) -> Result<Decoded, Malformed> {
        decode(v.to_string().as_bytes(), today())
    }

    fn rejected(v: serde_json::Value) -> Rejection {
        match dec(v).unwrap() {
            Decoded::Rejected(r) => r,
            other => panic!("expected a rejection, got {other:?}"),
        }
    }

    #[test]
    fn a_valid_mobile3_request_decodes() {
        let d = dec(serde_json::json!({
            "request_id": "9f0c7a3e2b8d4c1fa6e5d4c3b2a19087", "check": "mobile3",
            "name": "张三", "id_number": "11010519491231002x", "mobile": "13812345678",
            "provider": "tencent", "merchant_user_id": "u-42", "scene_code": "signup"
        }))
        .unwrap();
        let Decoded::Valid(r) = d else {
            panic!("not valid")
        };
        assert_eq!(r.check, CheckKind::Mobile3);
        assert_eq!(r.subject.id_number.expose(), "11010519491231002X");
        assert_eq!(r.subject.mobile.as_ref().unwrap().expose(), "13812345678");
        assert_eq!(r.provider.as_deref(), Some("tencent"));
        let m = r.subject.masked();
        assert_eq!(m.name.as_deref(), Some("张*"));
        assert_eq!(m.id_number.as_deref(), Some("110***********002X"));
        assert_eq!(m.mobile.as_deref(), Some("138****5678"));
        // Debug of the whole request never shows plaintext.
        let dbg = format!("{r:?}");
        assert!(
            !dbg.contains("张三")
                && !dbg.contains("11010519491231002X")
                && !dbg.contains("13812345678")
        );
    }

    #[test]
    fn vendor_text_is_scrubbed_of_the_subject() {
        let Decoded::Valid(r) = dec(serde_json::json!({
            "request_id": "r", "check": "mobile3", "name": "张三",
            "id_number": "11010519491231002X", "mobile": "13812345678"
        }))
        .unwrap() else {
            panic!()
        };
        let s = r
            .subject
            .scrub("bad IdCard 11010519491231002x for 张三 (13812345678)");
        assert_eq!(s, "bad IdCard 110***********002X for 张* (138****5678)");
    }

    #[test]
    fn id2_ignores_mobile_and_period_needs_dates() {
        let Decoded::Valid(r) = dec(serde_json::json!({"request_id":"a","check":"id2","name":"张三","id_number":"11010519491231002X","mobile":"garbage"})).unwrap() else { panic!() };
        assert!(r.subject.mobile.is_none());
        let rej = rejected(
            serde_json::json!({"request_id":"a","check":"id2_period","name":"张三","id_number":"11010519491231002X","validity_start":"20201001"}),
        );
        assert_eq!(rej.reason_code, ReasonCode::InvalidDate);
        let Decoded::Valid(r) = dec(serde_json::json!({"request_id":"a","check":"id2_period","name":"张三","id_number":"11010519491231002X","validity_start":"20201001","validity_end":"long-term"})).unwrap() else { panic!() };
        assert!(r.subject.validity.is_some());
    }

    #[test]
    fn malformed_messages_name_their_reason() {
        assert!(matches!(
            decode(b"not json", today()),
            Err(Malformed::NotJson(_))
        ));
        assert!(matches!(
            decode(b"\xff\xfe", today()),
            Err(Malformed::NotJson(_))
        ));
        for other in [
            &b"[1,2]"[..],
            b"42",
            b"-1.5",
            b"\"text\"",
            b"null",
            b"true",
            b"[[{}]]",
        ] {
            assert_eq!(
                decode(other, today()),
                Err(Malformed::NotObject),
                "{other:?}"
            );
        }
        assert!(matches!(
            decode(b"{\"request_id\":\"r1\"} trailing", today()),
            Err(Malformed::NotJson(_))
        ));
        assert!(matches!(
            dec(serde_json::json!({"check":"id2"})),
            Err(Malformed::NoRequestId(_))
        ));
        assert!(matches!(
            dec(serde_json::json!({"request_id":42})),
            Err(Malformed::NoRequestId(_))
        ));
        assert!(matches!(
            dec(serde_json::json!({"request_id":"has space"})),
            Err(Malformed::NoRequestId(_))
        ));
        assert!(matches!(
            dec(serde_json::json!({"request_id":"x".repeat(65)})),
            Err(Malformed::NoRequestId(_))
        ));
        assert!(dec(serde_json::json!({"request_id":"x".repeat(64)})).is_ok());
    }

    #[test]
    fn invalid_fields_are_rejected_with_the_right_code_and_masked_subject() {
        let base = |k: &str, v: serde_json::Value| {
            let mut o = serde_json::json!({"request_id":"r1","check":"mobile3","name":"张三","id_number":"11010519491231002X","mobile":"13812345678"});
            o[k] = v;
            o
        };
        let r = rejected(base("id_number", "110105194912310021".into()));
        assert_eq!(r.reason_code, ReasonCode::InvalidIdNumber);
        assert_eq!(r.subject.id_number.as_deref(), Some("110***********0021"));
        assert!(!r.reason.contains("110105194912310021"));
        assert_eq!(
            rejected(base("mobile", "12345678901".into())).reason_code,
            ReasonCode::InvalidMobile
        );
        assert_eq!(
            rejected(base("mobile", serde_json::Value::Null)).reason_code,
            ReasonCode::InvalidMobile
        );
        assert_eq!(
            rejected(base("name", "张3".into())).reason_code,
            ReasonCode::InvalidName
        );
        assert_eq!(
            rejected(base("name", 5.into())).reason_code,
            ReasonCode::InvalidName
        );
        assert_eq!(
            rejected(base("check", "mobile4".into())).reason_code,
            ReasonCode::InvalidRequest
        );
        assert_eq!(rejected(base("check", "mobile4".into())).check, None);
        for bad in ["Tencent", "acme corp", "", "x;y"] {
            assert_eq!(
                rejected(base("provider", bad.into())).reason_code,
                ReasonCode::InvalidRequest,
                "{bad:?}"
            );
        }
        assert_eq!(
            rejected(base("provider", 7.into())).reason_code,
            ReasonCode::InvalidRequest
        );
        assert!(is_provider_name("alimarket") && is_provider_name("acme_2"));
        // Every field has a documented maximum; over it the request is refused before anything
        // else is read, and the rejection never carries the huge value.
        for (key, max) in FIELD_MAX_CHARS {
            let r = rejected(base(key, "x".repeat(max + 1).into()));
            assert_eq!(r.reason_code, ReasonCode::FieldTooLong, "{key}");
            assert!(r.reason.contains(&max.to_string()), "{}", r.reason);
        }
        // A field given twice is refused whole: which one counts would be a guess.
        let twice = r#"{"request_id":"r1","check":"mobile3","name":"张三","id_number":"11010519491231002X","id_number":"110105194912310029","mobile":"13812345678"}"#;
        assert_eq!(
            decode(
                twice.as_bytes(),
                NaiveDate::from_ymd_opt(2026, 11, 23).unwrap()
            ),
            Err(Malformed::DuplicateKey(Some("id_number")))
        );
        // A key of the client's own is never echoed: it may be personal data or hold control
        // characters (the reason goes into a dead-letter header and the log).
        let other =
            r#"{"request_id":"r1","11010519491231002X\u0007":1,"11010519491231002X\u0007":2}"#;
        let m = decode(other.as_bytes(), today()).unwrap_err();
        assert_eq!(m, Malformed::DuplicateKey(None));
        assert_eq!(
            m.to_string(),
            "a key that is not a request field is given more than once"
        );
        // JSON nested deeper than serde_json's 128 levels is not JSON kycq reads.
        let deep = format!(
            r#"{{"request_id":"r1","x":{}1{}}}"#,
            "[".repeat(200),
            "]".repeat(200)
        );
        assert!(matches!(
            decode(
                deep.as_bytes(),
                NaiveDate::from_ymd_opt(2026, 11, 23).unwrap()
            ),
            Err(Malformed::NotJson(_))
        ));
        let r = rejected(base("name", "张".repeat(10_000).into()));
        assert_eq!(r.subject.name.as_deref(), Some("***"));
        assert!(!is_provider_name(&"a".repeat(MAX_PROVIDER_LEN + 1)));
        assert_eq!(
            rejected(base("merchant_user_id", "x".repeat(200).into())).reason_code,
            ReasonCode::FieldTooLong
        );
        assert_eq!(
            rejected(base("merchant_user_id", "a\u{0}b".into())).reason_code,
            ReasonCode::InvalidRequest
        );
    }
}
