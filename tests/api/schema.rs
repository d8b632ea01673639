//! The published contract (`spec/asyncapi.yaml`, `spec/schemas/*.json`) against the code:
//!
//! - drift: every enum of the schemas equals the Rust type's full variant list, the schemas'
//!   property sets equal the fields the Rust types serialise (and their required sets), every
//!   result the Rust constructors can build validates and every inconsistent one is refused;
//! - the request schema against kycq's own validation (`kycq::check::decode`): what it accepts
//!   the schema accepts, what it refuses the schema refuses where a schema can say so;
//! - every example: the AsyncAPI document's, and every tagged JSON block of the Markdown docs
//!   (```` ```json kycq-request ```` / ```` ```json kycq-result ````; an untagged block with a
//!   top-level `request_id` fails);
//! - what kycq publishes: the requests of `kycq::client`, `kycq enqueue` (flags and CSV) and the
//!   demo's identities captured from a queue of this test's own, and real dead letters.
//!
//! The validators are compiled once ([`spec`]); `helpers.rs` uses [`check_result`] and
//! [`check_request_if_kycq_accepts`] on every result and request the integration tests see.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use std::time::Duration;

use chrono::{NaiveDate, TimeZone, Utc};
use jsonschema::Validator;
use kycq::check::{
    decode, Billed, Carrier, CheckKind, CheckRequest, CheckResult, Classification, Decoded,
    MaskedSubject, ProviderReply, ReasonCode, Status, Verdict,
};
use kycq::ops::enqueue::RequestMessage;
use lapin::types::AMQPValue;
use lapin::BasicProperties;
use serde_json::{json, Map, Value};

// ---------------------------------------------------------------------------------------------
// The spec, loaded and compiled once
// ---------------------------------------------------------------------------------------------

/// The contract as files and compiled validators.
pub struct Spec {
    /// spec/asyncapi.yaml as JSON.
    pub doc: Value,
    pub request_schema: Value,
    pub result_schema: Value,
    pub dead_letter_schema: Value,
    pub request: Validator,
    pub result: Validator,
    pub dead_letter: Validator,
    /// `components.schemas.requestProperties` of the AsyncAPI document.
    pub request_properties: Validator,
    /// `components.schemas.resultProperties`.
    pub result_properties: Validator,
    /// `components.schemas.parkHeaders`.
    pub park_headers: Validator,
}

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn read(rel: &str) -> String {
    std::fs::read_to_string(repo().join(rel)).unwrap_or_else(|e| panic!("{rel}: {e}"))
}

fn json_file(rel: &str) -> Value {
    serde_json::from_str(&read(rel)).unwrap_or_else(|e| panic!("{rel} is not JSON: {e}"))
}

/// A draft 2020-12 validator (formats asserted), after checking the schema against the
/// meta-schema.
fn compile(name: &str, schema: &Value) -> Validator {
    if let Err(e) = jsonschema::draft202012::meta::validate(schema) {
        panic!("{name} is not a valid draft 2020-12 schema: {e}");
    }
    jsonschema::draft202012::options()
        .should_validate_formats(true)
        .build(schema)
        .unwrap_or_else(|e| panic!("{name} does not compile: {e}"))
}

/// The loaded contract.
pub fn spec() -> &'static Spec {
    static SPEC: OnceLock<Spec> = OnceLock::new();
    SPEC.get_or_init(|| {
        let doc: Value = serde_norway::from_str(&read("spec/asyncapi.yaml"))
            .expect("spec/asyncapi.yaml is YAML");
        let request_schema = json_file("spec/schemas/request.json");
        let result_schema = json_file("spec/schemas/result.json");
        let dead_letter_schema = json_file("spec/schemas/dead-letter.json");
        let component = |name: &str| {
            let s = &doc["components"]["schemas"][name];
            assert!(s.is_object(), "components.schemas.{name} is missing");
            compile(name, s)
        };
        Spec {
            request: compile("request.json", &request_schema),
            result: compile("result.json", &result_schema),
            dead_letter: compile("dead-letter.json", &dead_letter_schema),
            request_properties: component("requestProperties"),
            result_properties: component("resultProperties"),
            park_headers: component("parkHeaders"),
            doc,
            request_schema,
            result_schema,
            dead_letter_schema,
        }
    })
}

/// Every error of `instance` against `v`, one per line (empty: valid).
pub fn errors(v: &Validator, instance: &Value) -> String {
    v.iter_errors(instance)
        .map(|e| format!("  at `{}`: {e}", e.instance_path()))
        .collect::<Vec<_>>()
        .join("\n")
}

fn assert_valid(what: &str, v: &Validator, instance: &Value) {
    let e = errors(v, instance);
    assert!(
        e.is_empty(),
        "{what} does not match the schema:\n{e}\n{instance:#}"
    );
}

fn assert_invalid(what: &str, v: &Validator, instance: &Value) {
    assert!(
        !v.is_valid(instance),
        "{what}: the schema accepts it:\n{instance:#}"
    );
}

/// AMQP properties and headers as one JSON object, the way the AsyncAPI document lists them:
/// basic properties under their snake_case names, headers-table entries under their own.
pub fn properties_json(p: &BasicProperties) -> Value {
    let mut m = Map::new();
    let mut put = |k: &str, v: Option<Value>| {
        if let Some(v) = v {
            m.insert(k.to_owned(), v);
        }
    };
    let s = |v: &Option<lapin::types::ShortString>| v.as_ref().map(|s| json!(s.as_str()));
    put("content_type", s(p.content_type()));
    put("content_encoding", s(p.content_encoding()));
    put("delivery_mode", p.delivery_mode().map(|d| json!(d)));
    put("priority", p.priority().map(|d| json!(d)));
    put("correlation_id", s(p.correlation_id()));
    put("reply_to", s(p.reply_to()));
    put("expiration", s(p.expiration()));
    put("message_id", s(p.message_id()));
    put("timestamp", p.timestamp().map(|d| json!(d)));
    put("type", s(p.kind()));
    put("user_id", s(p.user_id()));
    put("app_id", s(p.app_id()));
    if let Some(h) = p.headers() {
        for (k, v) in h.inner() {
            m.insert(k.as_str().to_owned(), amqp_json(v));
        }
    }
    Value::Object(m)
}

fn amqp_json(v: &AMQPValue) -> Value {
    match v {
        AMQPValue::Boolean(b) => json!(b),
        AMQPValue::ShortShortInt(i) => json!(i),
        AMQPValue::ShortShortUInt(i) => json!(i),
        AMQPValue::ShortInt(i) => json!(i),
        AMQPValue::ShortUInt(i) => json!(i),
        AMQPValue::LongInt(i) => json!(i),
        AMQPValue::LongUInt(i) => json!(i),
        AMQPValue::LongLongInt(i) => json!(i),
        AMQPValue::Timestamp(t) => json!(t),
        AMQPValue::Float(f) => json!(f),
        AMQPValue::Double(f) => json!(f),
        AMQPValue::ShortString(s) => json!(s.as_str()),
        AMQPValue::LongString(s) => json!(String::from_utf8_lossy(s.as_bytes())),
        AMQPValue::FieldArray(a) => Value::Array(a.as_slice().iter().map(amqp_json).collect()),
        AMQPValue::FieldTable(t) => Value::Object(
            t.inner()
                .iter()
                .map(|(k, v)| (k.as_str().to_owned(), amqp_json(v)))
                .collect(),
        ),
        AMQPValue::Void => Value::Null,
        other => json!(format!("{other:?}")),
    }
}

// ---------------------------------------------------------------------------------------------
// Hooks for the test helpers
// ---------------------------------------------------------------------------------------------

/// A result kycq published, as a consumer receives it: the body against result.json, the
/// properties against the AsyncAPI document's `resultProperties`, and (when it came through the
/// result exchange) the routing key `result.<check|unknown>.<status>`. Panics naming what
/// differs: a schema-invalid result fails the test that received it.
pub fn check_result(body: &[u8], props: &BasicProperties, routing_key: Option<&str>) {
    let v: Value = serde_json::from_slice(body).unwrap_or_else(|e| {
        panic!(
            "a result that is not JSON ({e}): {}",
            String::from_utf8_lossy(body)
        )
    });
    let s = spec();
    assert_valid("a result kycq published", &s.result, &v);
    assert_valid(
        "the properties of a result kycq published",
        &s.result_properties,
        &properties_json(props),
    );
    if let Some(key) = routing_key {
        let want = format!(
            "result.{}.{}",
            v["check"].as_str().unwrap_or("unknown"),
            v["status"].as_str().unwrap_or_default()
        );
        assert_eq!(key, want, "routing key of {v}");
    }
}

/// A request body published through the test helpers: when kycq's own validation accepts it as
/// a valid request, the schema must accept it too (a schema that refuses what kycq serves would
/// be a lie to clients). Bodies kycq refuses are the tests' own business (they publish bad input
/// on purpose).
pub fn check_request_if_kycq_accepts(body: &[u8]) {
    if let Ok(Decoded::Valid(_)) = decode(body, Utc::now().date_naive()) {
        let v: Value = serde_json::from_slice(body).expect("a valid request is JSON");
        assert_valid("a request kycq's validation accepts", &spec().request, &v);
    }
}

#[test]
fn the_helpers_hook_fails_on_a_result_off_the_contract() {
    let good = sample_result().to_json();
    let mut headers = lapin::types::FieldTable::default();
    headers.insert(
        "traceparent".into(),
        AMQPValue::LongString("00-4bf92f3577b34da6a3ce929d0e0e4736-53995c3f42cd8ad8-01".into()),
    );
    let props = BasicProperties::default()
        .with_content_type("application/json".into())
        .with_delivery_mode(2)
        .with_message_id("9f0c7a3e2b8d4c1fa6e5d4c3b2a19087".into())
        .with_type("kycq.result".into())
        .with_headers(headers);
    check_result(&good, &props, Some("result.mobile3.completed"));
    let fails = |body: Vec<u8>, props: BasicProperties, key: Option<&'static str>| {
        std::panic::catch_unwind(move || check_result(&body, &props, key)).is_err()
    };
    let mut bad: Value = serde_json::from_slice(&good).unwrap();
    bad["billed"] = json!("maybe");
    assert!(fails(bad.to_string().into_bytes(), props.clone(), None));
    assert!(fails(
        good.clone(),
        props.clone(),
        Some("result.id2.completed")
    ));
    let untyped = props.clone().with_type("other".into());
    assert!(fails(good.clone(), untyped, None));
    // Every result carries the trace it belongs to.
    let untraced = props.clone().with_headers(Default::default());
    assert!(fails(good.clone(), untraced, None));
    assert!(fails(b"not json".to_vec(), props, None));
}

// ---------------------------------------------------------------------------------------------
// Drift: schemas vs Rust types
// ---------------------------------------------------------------------------------------------

/// The strings of a schema's `enum`, `null` as "null".
fn enum_of(schema: &Value, pointer: &str) -> Vec<String> {
    let e = schema
        .pointer(pointer)
        .and_then(|s| s.get("enum"))
        .and_then(Value::as_array)
        .unwrap_or_else(|| panic!("no enum at {pointer}"));
    e.iter()
        .map(|v| v.as_str().map_or_else(|| v.to_string(), str::to_owned))
        .collect()
}

fn serde_names<T: serde::Serialize>(all: &[T]) -> Vec<String> {
    all.iter()
        .map(|v| {
            serde_json::to_value(v)
                .unwrap()
                .as_str()
                .unwrap()
                .to_owned()
        })
        .collect()
}

fn with_null(mut v: Vec<String>) -> Vec<String> {
    v.push("null".into());
    v
}

fn keys(v: &Value) -> BTreeSet<String> {
    v.as_object()
        .unwrap_or_else(|| panic!("not an object: {v}"))
        .keys()
        .cloned()
        .collect()
}

fn required(schema: &Value, pointer: &str) -> BTreeSet<String> {
    schema
        .pointer(pointer)
        .and_then(|s| s.get("required"))
        .and_then(Value::as_array)
        .map(|r| r.iter().map(|k| k.as_str().unwrap().to_owned()).collect())
        .unwrap_or_default()
}

fn properties(schema: &Value, pointer: &str) -> BTreeSet<String> {
    keys(&schema.pointer(pointer).unwrap()["properties"])
}

// Exhaustive on purpose: a new variant fails to compile here. Give it its place in the enum's
// ALL list and in spec/schemas/*.json (the tests below compare the two).
fn _every_variant_is_in_the_contract(
    c: CheckKind,
    s: Status,
    v: Verdict,
    b: Billed,
    k: Carrier,
    r: ReasonCode,
) {
    match c {
        CheckKind::Mobile3 | CheckKind::Id2 | CheckKind::Id2Period => {}
    }
    match s {
        Status::Completed | Status::Rejected | Status::Failed => {}
    }
    match v {
        Verdict::Match
        | Verdict::Mismatch
        | Verdict::NotFound
        | Verdict::InvalidInput
        | Verdict::Unsupported => {}
    }
    match b {
        Billed::Yes | Billed::No | Billed::Unknown => {}
    }
    match k {
        Carrier::Cmcc | Carrier::Cucc | Carrier::Ctcc | Carrier::Cbn => {}
    }
    match r {
        ReasonCode::Match
        | ReasonCode::NameMismatch
        | ReasonCode::IdNumberMismatch
        | ReasonCode::MobileOwnerMismatch
        | ReasonCode::NameIdNumberMismatch
        | ReasonCode::IdentityOrValidityMismatch
        | ReasonCode::MismatchUnspecified
        | ReasonCode::NoRecord
        | ReasonCode::InvalidIdNumber
        | ReasonCode::InvalidMobile
        | ReasonCode::InvalidName
        | ReasonCode::InvalidDate
        | ReasonCode::InvalidRequest
        | ReasonCode::UnsupportedNumberRange
        | ReasonCode::IdentityDailyLimit
        | ReasonCode::RepeatedInvocationBlocked
        | ReasonCode::RetriesExhausted
        | ReasonCode::BillingUnknown
        | ReasonCode::UnknownProviderCode
        | ReasonCode::RequestIdConflict
        | ReasonCode::FieldTooLong
        | ReasonCode::ProviderUnavailable => {}
    }
}

#[test]
fn the_schemas_are_draft_2020_12_with_ids_and_the_asyncapi_document_refers_to_them() {
    let s = spec();
    for (file, schema) in [
        ("request.json", &s.request_schema),
        ("result.json", &s.result_schema),
        ("dead-letter.json", &s.dead_letter_schema),
    ] {
        assert_eq!(
            schema["$schema"],
            json!("https://json-schema.org/draft/2020-12/schema"),
            "{file}"
        );
        assert!(
            schema["$id"].as_str().is_some_and(|i| !i.is_empty()),
            "{file}"
        );
        assert!(schema["description"].is_string(), "{file}");
        let by_ref = &s.doc["components"]["schemas"];
        assert!(
            by_ref
                .as_object()
                .unwrap()
                .values()
                .any(|v| v["$ref"] == json!(format!("./schemas/{file}"))),
            "spec/asyncapi.yaml refers to schemas/{file}"
        );
    }
    assert_eq!(s.doc["asyncapi"], json!("3.0.0"));
}

#[test]
fn every_enum_of_the_schemas_is_the_rust_enum_s_full_variant_list() {
    let s = spec();
    let (req, res) = (&s.request_schema, &s.result_schema);
    let checks = serde_names(&CheckKind::ALL);
    assert_eq!(enum_of(req, "/properties/check"), checks);
    assert_eq!(enum_of(res, "/properties/check"), with_null(checks.clone()));
    assert_eq!(enum_of(res, "/properties/status"), serde_names(Status::ALL));
    assert_eq!(
        enum_of(res, "/properties/verdict"),
        with_null(serde_names(Verdict::ALL))
    );
    assert_eq!(
        enum_of(res, "/properties/reason_code"),
        serde_names(ReasonCode::ALL)
    );
    assert_eq!(enum_of(res, "/properties/billed"), serde_names(Billed::ALL));
    assert_eq!(
        enum_of(res, "/properties/carrier"),
        with_null(serde_names(Carrier::ALL))
    );
    let vendors: Vec<String> = kycq::providers::registry::vendor_names()
        .into_iter()
        .map(str::to_owned)
        .collect();
    assert_eq!(
        enum_of(res, "/properties/provider"),
        with_null(vendors.clone())
    );
    // A request may pin any provider-shaped name (kycq answers an unconfigured one `rejected`):
    // the schema names the known ones as its examples.
    let examples: Vec<String> = req["properties"]["provider"]["examples"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap().to_owned())
        .collect();
    assert_eq!(examples, vendors);
    for v in &vendors {
        assert!(kycq::check::request::is_provider_name(v));
    }
    // The AsyncAPI channels' parameters are the same lists.
    let param = |channel: &str, p: &str| -> Vec<String> {
        enum_of(&s.doc, &format!("/channels/{channel}/parameters/{p}"))
    };
    assert_eq!(param("requests", "check"), checks);
    let mut result_checks = checks.clone();
    result_checks.push("unknown".into());
    assert_eq!(param("results", "check"), result_checks);
    assert_eq!(param("results", "status"), serde_names(Status::ALL));
}

#[test]
fn the_result_schema_has_exactly_the_fields_a_check_result_serialises_all_required() {
    let s = spec();
    let r = sample_result();
    // Exhaustive on purpose (no `..`): a new field fails to compile here until the schema has it.
    let CheckResult {
        request_id: _,
        check: _,
        status: _,
        verdict: _,
        reason_code: _,
        reason: _,
        billed: _,
        carrier: _,
        provider: _,
        provider_code: _,
        provider_request_id: _,
        attempts: _,
        subject:
            MaskedSubject {
                name: _,
                id_number: _,
                mobile: _,
            },
        received_at: _,
        completed_at: _,
    } = &r;
    let v = serde_json::to_value(&r).unwrap();
    let fields = keys(&v);
    assert_eq!(properties(&s.result_schema, ""), fields);
    assert_eq!(
        required(&s.result_schema, ""),
        fields,
        "every field is always present"
    );
    let subject = keys(&v["subject"]);
    assert_eq!(properties(&s.result_schema, "/properties/subject"), subject);
    assert_eq!(required(&s.result_schema, "/properties/subject"), subject);
    // No other field is allowed: a field added on the Rust side only is refused.
    assert_eq!(s.result_schema["additionalProperties"], json!(false));
    let mut extra = v.clone();
    extra["new_field"] = json!(1);
    assert_invalid("a result with a field the schema lacks", &s.result, &extra);
    // Nullable exactly where the Rust type is an Option: null is accepted for those, refused
    // for the others.
    let nullable: BTreeSet<&str> = [
        "check",
        "verdict",
        "carrier",
        "provider",
        "provider_code",
        "provider_request_id",
    ]
    .into();
    // From a failed result (which may lack a verdict, a provider and its codes).
    let mut failed = v.clone();
    failed["status"] = json!("failed");
    failed["verdict"] = Value::Null;
    failed["reason_code"] = json!("retries_exhausted");
    assert_valid("a failed result", &s.result, &failed);
    for f in &fields {
        let mut n = failed.clone();
        n[f.as_str()] = Value::Null;
        // A null check is only for rejected results.
        if f == "check" {
            n["status"] = json!("rejected");
            n["verdict"] = Value::Null;
            n["reason_code"] = json!("invalid_request");
            for k in [
                "carrier",
                "provider",
                "provider_code",
                "provider_request_id",
            ] {
                n[k] = Value::Null;
            }
            n["billed"] = json!("no");
            n["attempts"] = json!(0);
        }
        let deserialises = serde_json::from_value::<CheckResult>(n.clone()).is_ok();
        assert_eq!(
            deserialises,
            nullable.contains(f.as_str()),
            "Rust's Option-ness of {f}"
        );
        assert_eq!(
            s.result.is_valid(&n),
            nullable.contains(f.as_str()),
            "{f} null: {}",
            errors(&s.result, &n)
        );
    }
    for f in ["name", "id_number", "mobile"] {
        let mut n = v.clone();
        n["subject"][f] = Value::Null;
        assert_valid(&format!("subject.{f} null"), &s.result, &n);
        n["subject"].as_object_mut().unwrap().remove(f);
        assert_invalid(&format!("subject without {f}"), &s.result, &n);
    }
}

#[test]
fn the_request_schema_has_exactly_the_fields_of_request_message() {
    let s = spec();
    let m = RequestMessage {
        request_id: "r-1".into(),
        check: "id2_period".into(),
        name: "张三".into(),
        id_number: "11010519491231002X".into(),
        mobile: Some("13812345678".into()),
        validity_start: Some("20200101".into()),
        validity_end: Some("long-term".into()),
        provider: Some("tencent".into()),
        merchant_user_id: Some("u-42".into()),
        scene_code: Some("signup".into()),
    };
    // Exhaustive on purpose: a new field fails to compile here until the schema has it.
    let RequestMessage {
        request_id: _,
        check: _,
        name: _,
        id_number: _,
        mobile: _,
        validity_start: _,
        validity_end: _,
        provider: _,
        merchant_user_id: _,
        scene_code: _,
    } = &m;
    let full = serde_json::to_value(&m).unwrap();
    assert_eq!(properties(&s.request_schema, ""), keys(&full));
    // Required: what RequestMessage always serialises (its non-Option fields) is what the
    // schema requires of every request; the rest is per check.
    let always = keys(&serde_json::to_value(RequestMessage::default()).unwrap());
    assert_eq!(required(&s.request_schema, ""), always);
    // The CSV columns of `kycq enqueue` are the same fields, in the same order as the schema.
    let order: Vec<String> = s.request_schema["properties"]
        .as_object()
        .unwrap()
        .keys()
        .cloned()
        .collect();
    assert_eq!(
        BTreeSet::from_iter(order),
        BTreeSet::from_iter(
            kycq::ops::enqueue::CSV_COLUMNS
                .iter()
                .map(|c| c.to_string())
        )
    );
    // Every maximum length of the validator is the schema's maxLength.
    for (field, max) in kycq::check::request::FIELD_MAX_CHARS {
        assert_eq!(
            s.request_schema["properties"][field]["maxLength"],
            json!(max),
            "maxLength of {field}"
        );
    }
    assert_eq!(
        s.request_schema["properties"]["request_id"]["pattern"],
        json!(format!(
            "^[A-Za-z0-9_-]{{1,{}}}$",
            kycq::check::request::MAX_REQUEST_ID_LEN
        ))
    );
    // kycq ignores keys it does not know: so does the schema.
    assert_eq!(s.request_schema["additionalProperties"], json!(true));
    let mut unknown = full.clone();
    unknown["x_client_field"] = json!({"any": ["thing"]});
    assert!(matches!(
        decode(unknown.to_string().as_bytes(), today()),
        Ok(Decoded::Valid(_))
    ));
    assert_valid("a request with a key kycq ignores", &s.request, &unknown);
}

/// Reason codes of `rejected` results beyond the invalid-input ones kycq's validation shares
/// with providers (docs/src/reference/reason-codes.md).
const REJECTED_ONLY: [ReasonCode; 2] = [ReasonCode::FieldTooLong, ReasonCode::RequestIdConflict];

fn today() -> NaiveDate {
    NaiveDate::from_ymd_opt(2026, 11, 23).unwrap()
}

fn sample_request(check: CheckKind) -> CheckRequest {
    let mut m = json!({
        "request_id": "r-1", "check": check.as_str(), "name": "张三",
        "id_number": "11010519491231002X",
    });
    match check {
        CheckKind::Mobile3 => m["mobile"] = json!("13812345678"),
        CheckKind::Id2 => {}
        CheckKind::Id2Period => {
            m["validity_start"] = json!("20200101");
            m["validity_end"] = json!("20400101");
        }
    }
    match decode(m.to_string().as_bytes(), today()).unwrap() {
        Decoded::Valid(r) => r,
        Decoded::Rejected(r) => panic!("{}", r.reason),
    }
}

fn sample_result() -> CheckResult {
    let t = Utc.with_ymd_and_hms(2026, 11, 23, 2, 18, 16).unwrap();
    CheckResult {
        request_id: "9f0c7a3e2b8d4c1fa6e5d4c3b2a19087".into(),
        check: Some(CheckKind::Mobile3),
        status: Status::Completed,
        verdict: Some(Verdict::Mismatch),
        reason_code: ReasonCode::NameMismatch,
        reason: ReasonCode::NameMismatch.meaning().into(),
        billed: Billed::Yes,
        carrier: Some(Carrier::Cmcc),
        provider: Some("tencent".into()),
        provider_code: Some("-4".into()),
        provider_request_id: Some("884a35af".into()),
        attempts: 1,
        subject: sample_request(CheckKind::Mobile3).subject.masked(),
        received_at: t,
        completed_at: t + chrono::Duration::milliseconds(290),
    }
}

/// A result from the worker's own constructors, for a provider reply classified `c`.
fn built(
    check: CheckKind,
    c: Classification,
    provider: &str,
    f: impl Fn(&kycq::check::result::FromCall<'_>) -> CheckResult,
) -> CheckResult {
    let req = sample_request(check);
    let mut reply = ProviderReply::transport(c, Some(200), "vendor words");
    reply.provider_code = Some("X1".into());
    reply.carrier = (check == CheckKind::Mobile3).then_some(Carrier::Ctcc);
    let t = Utc.with_ymd_and_hms(2026, 11, 23, 2, 18, 16).unwrap();
    f(&kycq::check::result::FromCall {
        request: &req,
        provider,
        reply: &reply,
        attempts: 2,
        received_at: t,
        completed_at: t + chrono::Duration::milliseconds(7),
    })
}

#[test]
fn every_result_the_worker_s_constructors_build_validates() {
    let s = spec();
    let mut seen: BTreeSet<(&str, Option<&str>, &str)> = BTreeSet::new();
    let mut check = |r: &CheckResult| {
        let v = serde_json::to_value(r).unwrap();
        assert_valid(
            &format!("{:?}/{:?}", r.status, r.reason_code),
            &s.result,
            &v,
        );
        seen.insert((
            r.status.as_str(),
            r.verdict.map(Verdict::as_str),
            r.reason_code.as_str(),
        ));
    };
    for provider in kycq::providers::registry::vendor_names() {
        for check_kind in CheckKind::ALL {
            for &code in ReasonCode::ALL {
                // A provider's final answer: a verdict, an invalid field, an identity limit.
                let c = match code.completed_verdict() {
                    Some(Verdict::InvalidInput) => Classification::invalid_field(code),
                    Some(_) => Classification::verdict(code, Billed::Yes),
                    None => Classification::identity_limit(code),
                };
                let r = built(check_kind, c, provider, CheckResult::answered);
                if code.completed_verdict().is_some() {
                    assert_eq!(r.status, Status::Completed);
                    check(&r);
                } else if matches!(
                    code,
                    ReasonCode::IdentityDailyLimit | ReasonCode::RepeatedInvocationBlocked
                ) {
                    check(&r);
                }
            }
            for billed in Billed::ALL {
                check(&built(
                    check_kind,
                    Classification::unknown_code(*billed),
                    provider,
                    CheckResult::answered,
                ));
            }
            check(&built(
                check_kind,
                Classification::request_refused(),
                provider,
                CheckResult::answered,
            ));
            for (code, billed) in [
                (ReasonCode::RetriesExhausted, Billed::No),
                (ReasonCode::BillingUnknown, Billed::Unknown),
                (ReasonCode::ProviderUnavailable, Billed::No),
            ] {
                check(&built(
                    check_kind,
                    Classification::TRANSIENT,
                    provider,
                    |c| CheckResult::failed(c, code, billed),
                ));
            }
        }
    }
    // Rejections from kycq's own validation, one per kind of refusal.
    let rejections = [
        json!({"request_id": "r", "check": "mobile3", "name": "张三", "id_number": "110105194912310021", "mobile": "13812345678"}),
        json!({"request_id": "r", "check": "mobile3", "name": "张三", "id_number": "11010519491231002X", "mobile": "12345678901"}),
        json!({"request_id": "r", "check": "mobile3", "name": "张3", "id_number": "11010519491231002X", "mobile": "13812345678"}),
        json!({"request_id": "r", "check": "id2_period", "name": "张三", "id_number": "11010519491231002X", "validity_start": "20201301", "validity_end": "long-term"}),
        json!({"request_id": "r", "check": "mobile4", "name": "张三"}),
        json!({"request_id": "r", "name": "张三"}),
        json!({"request_id": "r", "check": "id2", "name": "张".repeat(65), "id_number": "11010519491231002X"}),
    ];
    for body in rejections {
        let Decoded::Rejected(rej) = decode(body.to_string().as_bytes(), today()).unwrap() else {
            panic!("not rejected: {body}")
        };
        let t = Utc.with_ymd_and_hms(2026, 11, 23, 2, 18, 16).unwrap();
        check(&CheckResult::rejected(&rej, t, t));
        let mut conflict = rej.clone();
        conflict.reason_code = ReasonCode::RequestIdConflict;
        check(&CheckResult::rejected(&conflict, t, t));
    }
    // Every reason code and every status was produced by the constructors.
    let codes: BTreeSet<&str> = seen.iter().map(|(_, _, c)| *c).collect();
    assert_eq!(
        codes,
        ReasonCode::ALL.iter().map(|c| c.as_str()).collect(),
        "reason codes the constructors produced"
    );
    let statuses: BTreeSet<&str> = seen.iter().map(|(s, _, _)| *s).collect();
    assert_eq!(statuses, Status::ALL.iter().map(|s| s.as_str()).collect());
}

#[test]
fn status_verdict_and_reason_code_combinations_are_valid_exactly_as_the_table_says() {
    let s = spec();
    let base = serde_json::to_value(sample_result()).unwrap();
    for &status in Status::ALL {
        for verdict in Verdict::ALL.iter().copied().map(Some).chain([None]) {
            for &code in ReasonCode::ALL {
                let consistent = match status {
                    Status::Completed => verdict.is_some() && code.completed_verdict() == verdict,
                    Status::Rejected => {
                        verdict.is_none()
                            && (code.completed_verdict() == Some(Verdict::InvalidInput)
                                || REJECTED_ONLY.contains(&code))
                    }
                    Status::Failed => {
                        verdict.is_none()
                            && code.completed_verdict().is_none()
                            && !REJECTED_ONLY.contains(&code)
                    }
                };
                let mut v = base.clone();
                v["status"] = json!(status);
                v["verdict"] = json!(verdict);
                v["reason_code"] = json!(code);
                if status == Status::Rejected {
                    v["billed"] = json!("no");
                    v["attempts"] = json!(0);
                    for k in [
                        "carrier",
                        "provider",
                        "provider_code",
                        "provider_request_id",
                    ] {
                        v[k] = Value::Null;
                    }
                }
                assert_eq!(
                    s.result.is_valid(&v),
                    consistent,
                    "{status:?} / {verdict:?} / {code:?}: {}",
                    errors(&s.result, &v)
                );
            }
        }
    }
    // A rejected result never names a provider call or a charge.
    let mut v = base.clone();
    v["status"] = json!("rejected");
    v["verdict"] = Value::Null;
    v["reason_code"] = json!("invalid_mobile");
    assert_invalid("rejected with a provider, billed", &s.result, &v);
}

// ---------------------------------------------------------------------------------------------
// The request schema against kycq's validation
// ---------------------------------------------------------------------------------------------

fn base_request() -> Value {
    json!({
        "request_id": "r-1", "check": "mobile3", "name": "张三",
        "id_number": "11010519491231002X", "mobile": "13812345678",
    })
}

fn with(mut v: Value, changes: &[(&str, Value)]) -> Value {
    for (k, x) in changes {
        if x == &json!("<absent>") {
            v.as_object_mut().unwrap().remove(*k);
        } else {
            v[*k] = x.clone();
        }
    }
    v
}

#[test]
fn what_kycq_s_validation_accepts_the_request_schema_accepts() {
    let s = spec();
    let period = json!({
        "request_id": "p", "check": "id2_period", "name": "张三",
        "id_number": "11010519491231002X", "validity_start": "20200101", "validity_end": "20400101",
    });
    let id2 = json!({"request_id": "i", "check": "id2", "name": "张三", "id_number": "11010519491231002X"});
    let accepted = [
        base_request(),
        with(
            base_request(),
            &[("id_number", json!("11010519491231002x"))],
        ),
        with(
            base_request(),
            &[("id_number", json!("１１０１０５１９４９１２３１００２Ｘ"))],
        ),
        with(
            base_request(),
            &[("id_number", json!("  11010519491231002X "))],
        ),
        with(base_request(), &[("mobile", json!("+86 138-1234-5678"))]),
        with(base_request(), &[("mobile", json!("0086 13812345678"))]),
        with(base_request(), &[("mobile", json!("8613812345678"))]),
        with(
            base_request(),
            &[("mobile", json!("＋８６１３８１２３４５６７８"))],
        ),
        with(base_request(), &[("mobile", json!(" 138 1234 5678 "))]),
        with(base_request(), &[("name", json!("Zoë Smith-Jones"))]),
        with(base_request(), &[("name", json!("买买提·艾力"))]),
        with(base_request(), &[("provider", json!("tencent"))]),
        with(base_request(), &[("provider", json!(" alibaba "))]),
        with(base_request(), &[("provider", json!("acme_2"))]),
        with(base_request(), &[("provider", Value::Null)]),
        with(
            base_request(),
            &[
                ("merchant_user_id", json!("u-42")),
                ("scene_code", json!("signup")),
            ],
        ),
        with(
            base_request(),
            &[
                ("merchant_user_id", Value::Null),
                ("scene_code", Value::Null),
            ],
        ),
        with(base_request(), &[("request_id", json!("x".repeat(64)))]),
        with(
            base_request(),
            &[("request_id", json!("9f0c7a3e-2b8d-4c1f-a6e5-d4c3b2a19087"))],
        ),
        with(base_request(), &[("extra", json!(42))]),
        id2.clone(),
        with(id2.clone(), &[("mobile", json!("garbage"))]),
        with(id2.clone(), &[("mobile", Value::Null)]),
        with(id2.clone(), &[("validity_start", json!("junk"))]),
        period.clone(),
        with(period.clone(), &[("validity_end", json!("long-term"))]),
        with(period.clone(), &[("validity_end", json!("LONG_TERM"))]),
        with(period.clone(), &[("validity_end", json!("longterm"))]),
        with(period.clone(), &[("validity_end", json!("长期"))]),
        with(
            period.clone(),
            &[("validity_start", json!("２０２００１０１"))],
        ),
        with(period.clone(), &[("validity_start", json!(" 20200101 "))]),
        with(period.clone(), &[("mobile", json!("whatever"))]),
    ];
    for body in accepted {
        let d = decode(body.to_string().as_bytes(), today());
        assert!(
            matches!(d, Ok(Decoded::Valid(_))),
            "kycq does not accept {body}: {d:?}"
        );
        assert_valid("a request kycq accepts", &s.request, &body);
    }
}

#[test]
fn what_kycq_s_validation_refuses_the_request_schema_refuses_where_a_schema_can_say_so() {
    let s = spec();
    let period = json!({
        "request_id": "p", "check": "id2_period", "name": "张三",
        "id_number": "11010519491231002X", "validity_start": "20200101", "validity_end": "20400101",
    });
    let absent = json!("<absent>");
    let refused = [
        // No usable request_id: a dead letter.
        with(base_request(), &[("request_id", absent.clone())]),
        with(base_request(), &[("request_id", Value::Null)]),
        with(base_request(), &[("request_id", json!(""))]),
        with(base_request(), &[("request_id", json!("has space"))]),
        with(base_request(), &[("request_id", json!("x".repeat(65)))]),
        with(base_request(), &[("request_id", json!("é"))]),
        with(base_request(), &[("request_id", json!(42))]),
        // Rejected.
        with(base_request(), &[("check", absent.clone())]),
        with(base_request(), &[("check", json!("mobile4"))]),
        with(base_request(), &[("check", json!(3))]),
        with(base_request(), &[("mobile", absent.clone())]),
        with(base_request(), &[("mobile", Value::Null)]),
        with(base_request(), &[("mobile", json!(""))]),
        with(base_request(), &[("mobile", json!("1381234567"))]),
        with(base_request(), &[("mobile", json!("138123456789"))]),
        with(base_request(), &[("mobile", json!("13812345678a"))]),
        with(base_request(), &[("mobile", json!(13812345678u64))]),
        with(base_request(), &[("name", absent.clone())]),
        with(base_request(), &[("name", json!("   "))]),
        with(base_request(), &[("name", json!("张\u{0}三"))]),
        with(base_request(), &[("name", json!(5))]),
        with(base_request(), &[("name", json!("张".repeat(65)))]),
        with(base_request(), &[("id_number", absent.clone())]),
        with(base_request(), &[("id_number", json!("1101051949123100"))]),
        with(
            base_request(),
            &[("id_number", json!("11010519491231002Y"))],
        ),
        with(
            base_request(),
            &[("id_number", json!("110105-1949-1231-002X"))],
        ),
        with(
            base_request(),
            &[("id_number", json!(110105194912310029u64))],
        ),
        with(base_request(), &[("provider", json!("Tencent"))]),
        with(base_request(), &[("provider", json!("acme corp"))]),
        with(base_request(), &[("provider", json!(""))]),
        with(base_request(), &[("provider", json!(7))]),
        with(base_request(), &[("provider", json!("a".repeat(33)))]),
        with(base_request(), &[("merchant_user_id", json!("a\u{0}b"))]),
        with(
            base_request(),
            &[("merchant_user_id", json!("x".repeat(129)))],
        ),
        with(base_request(), &[("merchant_user_id", json!(42))]),
        with(base_request(), &[("scene_code", json!("a\u{1b}b"))]),
        with(base_request(), &[("scene_code", json!("x".repeat(65)))]),
        with(period.clone(), &[("validity_start", absent.clone())]),
        with(period.clone(), &[("validity_end", absent.clone())]),
        with(period.clone(), &[("validity_end", Value::Null)]),
        with(period.clone(), &[("validity_start", json!("2020-01-01"))]),
        with(period.clone(), &[("validity_end", json!("forever"))]),
        with(period.clone(), &[("validity_start", json!(20200101))]),
        with(period.clone(), &[("validity_end", json!("2".repeat(17)))]),
        json!({"request_id": "i", "check": "id2", "name": "张三", "id_number": "11010519491231002X", "mobile": "1".repeat(33)}),
    ];
    for body in refused {
        let d = decode(body.to_string().as_bytes(), today());
        assert!(!matches!(d, Ok(Decoded::Valid(_))), "kycq accepts {body}");
        assert_invalid("a request kycq refuses", &s.request, &body);
    }
    // What only kycq can see (a check character, a region code, a real date, a number range,
    // an unconfigured provider) is accepted by the schema and refused by kycq: documented.
    for body in [
        with(
            base_request(),
            &[("id_number", json!("110105194912310021"))],
        ),
        with(base_request(), &[("mobile", json!("12345678901"))]),
        with(period.clone(), &[("validity_start", json!("20201301"))]),
    ] {
        assert!(matches!(
            decode(body.to_string().as_bytes(), today()),
            Ok(Decoded::Rejected(_))
        ));
        assert_valid("a request only kycq refuses", &s.request, &body);
    }
    let desc = s.request_schema["description"].as_str().unwrap();
    for word in [
        "check character",
        "region code",
        "number range",
        "configured",
    ] {
        assert!(
            desc.contains(word),
            "the schema's description names {word:?}"
        );
    }
}

#[test]
fn dead_letter_headers_are_kycq_s_header_names_and_reasons() {
    use kycq::broker::headers;
    let s = spec();
    let mut named: BTreeSet<String> = properties(&s.dead_letter_schema, "")
        .into_iter()
        .filter(|k| k.starts_with(headers::PREFIX))
        .collect();
    let ours: BTreeSet<String> = [
        headers::REASON,
        headers::DETAIL,
        headers::ATTEMPTS,
        headers::ROUTING_KEY,
        headers::REQUEST_ID,
        headers::AT,
        headers::RETRY_ROUND,
    ]
    .iter()
    .map(|h| h.to_string())
    .collect();
    assert_eq!(named, ours);
    named = keys(&s.doc["components"]["schemas"]["parkHeaders"]["properties"])
        .into_iter()
        .filter(|k| k.starts_with(headers::PREFIX))
        .collect();
    assert_eq!(
        named,
        [headers::WAITING_SINCE, headers::PARKS]
            .iter()
            .map(|h| h.to_string())
            .collect()
    );
    // The reasons: the malformed ones kycq's decoder names, plus what the worker ends requests
    // with (and dead-letters) and what it cannot read back.
    let reasons: BTreeSet<String> = enum_of(&s.dead_letter_schema, "/properties/x-kycq-reason")
        .into_iter()
        .collect();
    let mut want: BTreeSet<String> = kycq::broker::dlq::MALFORMED
        .iter()
        .map(|r| r.to_string())
        .collect();
    for m in [
        kycq::check::Malformed::NotJson(String::new()),
        kycq::check::Malformed::NotObject,
        kycq::check::Malformed::NoRequestId(""),
        kycq::check::Malformed::DuplicateKey(None),
    ] {
        assert!(want.contains(m.reason()), "{}", m.reason());
    }
    want.insert(kycq::fault::STORED_RESULT_UNREADABLE.into());
    for r in [
        ReasonCode::RetriesExhausted,
        ReasonCode::ProviderUnavailable,
        ReasonCode::BillingUnknown,
    ] {
        want.insert(r.as_str().into());
    }
    assert_eq!(reasons, want);
}

// ---------------------------------------------------------------------------------------------
// Every example
// ---------------------------------------------------------------------------------------------

/// Follow `$ref`s: `#/…` inside the AsyncAPI document, `./schemas/…` to the schema files.
fn resolve<'a>(s: &'a Spec, mut v: &'a Value) -> &'a Value {
    while let Some(r) = v.get("$ref").and_then(Value::as_str) {
        v = if let Some(p) = r.strip_prefix('#') {
            s.doc
                .pointer(p)
                .unwrap_or_else(|| panic!("dangling $ref {r}"))
        } else {
            match r {
                "./schemas/request.json" => &s.request_schema,
                "./schemas/result.json" => &s.result_schema,
                "./schemas/dead-letter.json" => &s.dead_letter_schema,
                other => panic!("a $ref this test does not know: {other}"),
            }
        };
    }
    v
}

fn validator_for<'a>(s: &'a Spec, schema: &Value) -> Option<&'a Validator> {
    if schema == &s.request_schema {
        Some(&s.request)
    } else if schema == &s.result_schema {
        Some(&s.result)
    } else if schema == &s.dead_letter_schema {
        Some(&s.dead_letter)
    } else if schema == &s.doc["components"]["schemas"]["requestProperties"] {
        Some(&s.request_properties)
    } else if schema == &s.doc["components"]["schemas"]["resultProperties"] {
        Some(&s.result_properties)
    } else if schema == &s.doc["components"]["schemas"]["parkHeaders"] {
        Some(&s.park_headers)
    } else {
        None
    }
}

#[test]
fn every_example_of_the_asyncapi_document_validates() {
    let s = spec();
    let messages = s.doc["components"]["messages"].as_object().unwrap();
    let mut counted = 0;
    for (name, m) in messages {
        let examples = m["examples"].as_array().cloned().unwrap_or_default();
        for ex in &examples {
            let what = format!("{name} example {}", ex["name"]);
            for part in ["payload", "headers"] {
                let Some(instance) = ex.get(part) else {
                    continue;
                };
                let schema = resolve(s, &m[part]);
                match validator_for(s, schema) {
                    Some(v) => assert_valid(&format!("{what} {part}"), v, instance),
                    None => {
                        // The dead letter's body is the original body: a request when the
                        // reason says kycq could read it, refused by the schema when not.
                        assert_eq!((name.as_str(), part), ("deadLetter", "payload"));
                        let reason = ex["headers"]["x-kycq-reason"].as_str().unwrap();
                        if kycq::broker::dlq::malformed(reason) {
                            assert_invalid(&what, &s.request, instance);
                            assert!(decode(instance.to_string().as_bytes(), today()).is_err());
                        } else {
                            assert_valid(&what, &s.request, instance);
                        }
                    }
                }
                counted += 1;
            }
            match name.as_str() {
                // A request example is a request kycq accepts.
                "checkRequest" => {
                    let d = decode(ex["payload"].to_string().as_bytes(), today());
                    assert!(matches!(d, Ok(Decoded::Valid(_))), "{what}: {d:?}");
                }
                // A result example is a CheckResult, field for field.
                "checkResult" => {
                    let r: CheckResult = serde_json::from_value(ex["payload"].clone())
                        .unwrap_or_else(|e| panic!("{what}: {e}"));
                    assert_eq!(serde_json::to_value(&r).unwrap(), ex["payload"], "{what}");
                }
                _ => {}
            }
        }
    }
    // Examples of each status of the result, of each check of the request, of a dead letter.
    let names = |m: &str, field: &str| -> BTreeSet<String> {
        messages[m]["examples"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| e["payload"][field].as_str().unwrap_or_default().to_owned())
            .collect()
    };
    assert_eq!(
        names("checkResult", "status"),
        serde_names(Status::ALL).into_iter().collect()
    );
    assert_eq!(
        names("checkRequest", "check"),
        serde_names(&CheckKind::ALL).into_iter().collect()
    );
    assert!(!messages["deadLetter"]["examples"]
        .as_array()
        .unwrap()
        .is_empty());
    assert!(counted >= 20, "{counted} example parts checked");
}

/// A fenced code block of a Markdown file: its info string, first line and text.
#[derive(Debug)]
struct Fence {
    info: String,
    line: usize,
    text: String,
}

/// Every fenced code block (``` or ~~~, indented or not) of `markdown`.
fn fences(markdown: &str) -> Vec<Fence> {
    let mut out = Vec::new();
    let mut open: Option<(String, usize, usize, Fence)> = None; // marker, length, indent, fence
    for (i, line) in markdown.lines().enumerate() {
        let trimmed = line.trim_start();
        let indent = line.len() - trimmed.len();
        let marker_len = |c: char| trimmed.chars().take_while(|x| *x == c).count();
        match &mut open {
            None => {
                for c in ['`', '~'] {
                    let n = marker_len(c);
                    if n >= 3 {
                        let info = trimmed[n..].trim().to_owned();
                        open = Some((
                            c.to_string(),
                            n,
                            indent,
                            Fence {
                                info,
                                line: i + 1,
                                text: String::new(),
                            },
                        ));
                        break;
                    }
                }
            }
            Some((marker, n, ind, fence)) => {
                let c = marker.chars().next().unwrap();
                if marker_len(c) >= *n && trimmed[marker_len(c)..].trim().is_empty() {
                    let (_, _, _, f) = open.take().unwrap();
                    out.push(f);
                } else {
                    let strip = line.len() - line.trim_start().len();
                    fence.text.push_str(&line[strip.min(*ind)..]);
                    fence.text.push('\n');
                }
            }
        }
    }
    if let Some((_, _, _, f)) = open {
        out.push(f);
    }
    out
}

/// Whether JSON-ish `text` has `"request_id"` as a key of a top-level object (a scan that
/// needs no valid JSON: examples may hold `…` or comments).
fn has_top_level_request_id(text: &str) -> bool {
    let (mut depth, mut in_object_at_1, mut chars) = (0usize, false, text.chars().peekable());
    let mut stack: Vec<char> = Vec::new();
    while let Some(c) = chars.next() {
        match c {
            '{' | '[' => {
                stack.push(c);
                depth += 1;
                in_object_at_1 = depth == 1 && c == '{';
            }
            '}' | ']' => {
                stack.pop();
                depth = depth.saturating_sub(1);
                in_object_at_1 = depth == 1 && stack.last() == Some(&'{');
            }
            '"' => {
                let mut s = String::new();
                while let Some(x) = chars.next() {
                    match x {
                        '\\' => {
                            chars.next();
                        }
                        '"' => break,
                        _ => s.push(x),
                    }
                }
                if in_object_at_1 && depth == 1 && s == "request_id" {
                    while chars.peek().is_some_and(|x| x.is_whitespace()) {
                        chars.next();
                    }
                    if chars.peek() == Some(&':') {
                        return true;
                    }
                }
            }
            _ => {}
        }
    }
    false
}

/// JSON values of a block: one document, or one per non-empty line (JSON Lines).
fn json_values(text: &str) -> Result<Vec<Value>, String> {
    if let Ok(v) = serde_json::from_str::<Value>(text) {
        return Ok(vec![v]);
    }
    text.lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| serde_json::from_str::<Value>(l).map_err(|e| format!("{e}: {l}")))
        .collect()
}

/// The problems of one Markdown file's JSON blocks; counts the tagged ones checked.
fn check_markdown(
    file: &str,
    markdown: &str,
    requests: &mut usize,
    results: &mut usize,
) -> Vec<String> {
    let s = spec();
    let mut problems = Vec::new();
    for f in fences(markdown) {
        let mut words = f.info.split_whitespace();
        let lang = words.next().unwrap_or_default();
        if !lang.starts_with("json") {
            continue;
        }
        let tags: Vec<&str> = words.collect();
        let at = format!("{file}:{}", f.line);
        let tagged = |t: &str| tags.contains(&t);
        let (validator, count) = match (tagged("kycq-request"), tagged("kycq-result")) {
            (true, false) => (&s.request, &mut *requests),
            (false, true) => (&s.result, &mut *results),
            (true, true) => {
                problems.push(format!("{at}: tagged both kycq-request and kycq-result"));
                continue;
            }
            (false, false) => {
                if has_top_level_request_id(&f.text) {
                    problems.push(format!(
                        "{at}: a ```{} block with a top-level \"request_id\" carries neither \
                         kycq-request nor kycq-result (tag it: ```json kycq-request)",
                        f.info
                    ));
                }
                continue;
            }
        };
        match json_values(&f.text) {
            Err(e) => problems.push(format!("{at}: not JSON: {e}")),
            Ok(values) => {
                for v in values {
                    let e = errors(validator, &v);
                    if !e.is_empty() {
                        problems.push(format!("{at}: does not match the schema:\n{e}"));
                    }
                    *count += 1;
                }
            }
        }
    }
    problems
}

fn markdown_files() -> Vec<PathBuf> {
    fn walk(dir: &Path, out: &mut Vec<PathBuf>) {
        let Ok(entries) = std::fs::read_dir(dir) else {
            return;
        };
        for e in entries.flatten() {
            let p = e.path();
            let name = e.file_name();
            if name == "node_modules" || name == "target" || name.to_string_lossy().starts_with('.')
            {
                continue;
            }
            if p.is_dir() {
                walk(&p, out);
            } else if p.extension().is_some_and(|x| x == "md") {
                out.push(p);
            }
        }
    }
    let mut out = vec![repo().join("README.md")];
    for d in ["docs", "clients"] {
        walk(&repo().join(d), &mut out);
    }
    out.sort();
    out
}

#[test]
fn every_tagged_json_example_in_the_docs_validates_and_none_escapes_the_tags() {
    let (mut requests, mut results, mut problems) = (0, 0, Vec::new());
    for path in markdown_files() {
        let rel = path.strip_prefix(repo()).unwrap().display().to_string();
        let text = std::fs::read_to_string(&path).unwrap();
        problems.extend(check_markdown(&rel, &text, &mut requests, &mut results));
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
    assert!(
        requests >= 1 && results >= 1,
        "the docs show {requests} tagged requests and {results} tagged results"
    );
}

#[test]
fn the_markdown_check_catches_untagged_and_invalid_examples() {
    let md = r#"
Text.

```json
{"request_id": "r", "check": "id2"}
```

```json
[{"nested": {"request_id": "not top level"}}]
```

  ```json kycq-request
  {"request_id": "has space", "check": "id2", "name": "张三", "id_number": "11010519491231002X"}
  ```

```json kycq-result
{"request_id": "r"}
```

~~~jsonc
{
  "request_id": "x", // a comment
}
~~~

```json kycq-request
{"request_id": "ok", "check": "id2", "name": "张三", "id_number": "11010519491231002X"}
{"request_id": "ok2", "check": "id2", "name": "张三", "id_number": "11010519491231002X"}
```

```bash
echo '{"request_id": "in a shell block"}'
```
"#;
    let (mut requests, mut results) = (0, 0);
    let problems = check_markdown("x.md", md, &mut requests, &mut results);
    assert_eq!(problems.len(), 4, "{problems:#?}");
    assert!(
        problems[0].starts_with("x.md:4: a ```json block"),
        "{}",
        problems[0]
    );
    assert!(
        problems[1].starts_with("x.md:12: does not match"),
        "{}",
        problems[1]
    );
    assert!(
        problems[2].starts_with("x.md:16: does not match"),
        "{}",
        problems[2]
    );
    assert!(
        problems[3].starts_with("x.md:20: a ```jsonc block"),
        "{}",
        problems[3]
    );
    assert_eq!((requests, results), (3, 1));
}

// ---------------------------------------------------------------------------------------------
// What kycq publishes, captured from the broker
// ---------------------------------------------------------------------------------------------

mod published {
    use super::*;
    use crate::helpers::{kycq, unique, TestApp, AMQP_URL};
    use kycq::client::{Client, ClientOptions};
    use kycq::ops::enqueue::ReplyQueue;
    use kycq::sandbox::scenarios::{identity, Scenario};

    /// Every request kycq publishes itself — `kycq::client` (submit; verify publishes the same
    /// way), `kycq enqueue` with flags and from a CSV, and the demo's mix of identities through
    /// the same client — captured from a queue of this test's own bound to the request
    /// exchange: each body validates, kycq accepts it, and its properties are the document's.
    #[tokio::test]
    async fn every_request_kycq_publishes_matches_the_contract() {
        let app = TestApp::new().await;
        let mut capture = ReplyQueue::open_bound(&app.conn, Some((&app.names.requests, "check.#")))
            .await
            .unwrap();
        let client = Client::connect_with(
            AMQP_URL,
            ClientOptions {
                names: app.names.clone(),
                ..Default::default()
            },
        )
        .await
        .unwrap();
        let who = identity(Scenario::Match, 11);
        let mut expected: Vec<(String, bool)> = Vec::new(); // (request_id, has reply_to)
                                                            // The client, every check, with and without the optional fields.
        for (check, extra) in [("mobile3", true), ("id2", false), ("id2_period", true)] {
            let mut r = RequestMessage {
                check: check.into(),
                name: who.name.clone(),
                id_number: who.id_number.clone(),
                ..Default::default()
            };
            match check {
                "mobile3" => r.mobile = Some(who.mobile.clone()),
                "id2_period" => {
                    r.validity_start = Some("20200101".into());
                    r.validity_end = Some("long-term".into());
                }
                _ => {}
            }
            if extra {
                r.provider = Some("tencent".into());
                r.merchant_user_id = Some("u-42".into());
                r.scene_code = Some("signup".into());
                // Blank optional fields are left out, never sent as "".
                r.mobile = r.mobile.or(Some("  ".into()));
            }
            let id = client.submit(r).await.unwrap();
            expected.push((id, true));
        }
        // The demo's identities: every sandbox scenario, mobile3, through the client.
        for (i, s) in Scenario::ALL.iter().enumerate() {
            let id = identity(*s, 300 + i as u32);
            let r = RequestMessage {
                request_id: format!("demo-{}-{i:03}", unique()),
                check: "mobile3".into(),
                name: id.name,
                id_number: id.id_number,
                mobile: Some(id.mobile),
                ..Default::default()
            };
            expected.push((client.submit(r).await.unwrap(), true));
        }
        // `kycq enqueue` with flags, each check.
        let flag_ids: Vec<String> = (0..3).map(|i| format!("cli-{}-{i}", unique())).collect();
        let runs: [Vec<&str>; 3] = [
            vec!["--check", "mobile3", "--mobile", &who.mobile],
            vec!["--check", "id2", "--provider", "alibaba"],
            vec![
                "--check",
                "id2_period",
                "--validity-start",
                "20200101",
                "--validity-end",
                "20400101",
            ],
        ];
        for (id, run) in flag_ids.iter().zip(runs) {
            let mut args = vec![
                "enqueue",
                "--name",
                &who.name,
                "--id-number",
                &who.id_number,
                "--request-id",
                id,
            ];
            args.extend(run);
            let out = kycq(&app, &args).await;
            assert!(
                out.status.success(),
                "kycq {args:?}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
            expected.push((id.clone(), false));
        }
        // `kycq enqueue --csv`.
        let csv_ids: Vec<String> = (0..3).map(|i| format!("csv-{}-{i}", unique())).collect();
        let csv = format!(
            "request_id,check,name,id_number,mobile,validity_start,validity_end,provider,merchant_user_id,scene_code\n\
             {},mobile3,{},{},{},,,,u-1,signup\n\
             {},id2,{},{},,,,alimarket,,\n\
             {},id2_period,{},{},,20200101,长期,,,\n",
            csv_ids[0], who.name, who.id_number, who.mobile,
            csv_ids[1], who.name, who.id_number,
            csv_ids[2], who.name, who.id_number,
        );
        let path = std::env::temp_dir().join(format!("kycq-schema-{}.csv", app.id));
        std::fs::write(&path, csv).unwrap();
        let out = kycq(&app, &["enqueue", "--csv", path.to_str().unwrap()]).await;
        let _ = std::fs::remove_file(&path);
        assert!(
            out.status.success(),
            "kycq enqueue --csv: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        expected.extend(csv_ids.iter().map(|i| (i.clone(), false)));

        let s = spec();
        let mut seen = BTreeSet::new();
        while seen.len() < expected.len() {
            let d = capture
                .next_delivery(Duration::from_secs(20))
                .await
                .unwrap_or_else(|| {
                    panic!("captured {} of {} requests", seen.len(), expected.len())
                });
            let body: Value = serde_json::from_slice(&d.data).expect("a request is JSON");
            let id = body["request_id"].as_str().unwrap().to_owned();
            assert_valid(&format!("request {id}"), &s.request, &body);
            assert!(
                matches!(
                    decode(&d.data, Utc::now().date_naive()),
                    Ok(Decoded::Valid(_))
                ),
                "kycq refuses what it published itself: {id}"
            );
            assert_eq!(
                d.routing_key.as_str(),
                format!("check.{}", body["check"].as_str().unwrap())
            );
            for (k, v) in body.as_object().unwrap() {
                assert!(
                    v.as_str() != Some("") && !v.is_null(),
                    "{id}: {k} sent blank"
                );
            }
            let props = properties_json(&d.properties);
            assert_valid(
                &format!("request {id} properties"),
                &s.request_properties,
                &props,
            );
            assert_eq!(props["content_type"], "application/json", "{id}");
            assert_eq!(props["delivery_mode"], 2, "{id}: persistent");
            assert_eq!(props["message_id"], json!(id));
            let reply = expected
                .iter()
                .find(|(e, _)| *e == id)
                .unwrap_or_else(|| panic!("an unexpected request {id}"))
                .1;
            if reply {
                assert_eq!(props["reply_to"], json!(client.reply_queue()), "{id}");
                assert_eq!(props["correlation_id"], json!(id), "{id}");
            } else {
                assert!(props.get("reply_to").is_none(), "{id}");
            }
            assert!(seen.insert(id.clone()), "{id} published twice");
        }
        client.close().await;
        app.cleanup().await;
    }

    /// Real dead letters of each kind kycq publishes: the headers match dead-letter.json.
    #[tokio::test]
    async fn the_dead_letters_kycq_publishes_match_the_contract() {
        use lapin::options::BasicGetOptions;
        let mut app = TestApp::new().await;
        app.start_worker().await;
        let props = || BasicProperties::default().with_content_type("application/json".into());
        app.publish_raw(
            "check.id2",
            b"not json",
            props().with_expiration("600000".into()),
        )
        .await;
        app.publish_raw("check.id2", br#"{"check":"id2"}"#, props())
            .await;
        app.publish_raw(
            "check.id2",
            br#"{"request_id":"dup","name":"a","name":"b"}"#,
            props(),
        )
        .await;
        // A request the sandbox answers with a timeout after sending: billing_unknown.
        let mut cut = crate::helpers::mobile3(&identity(Scenario::Http504CutOff, 7));
        cut.request_id = format!("dl-{}", unique());
        app.publish(&cut).await;
        let failed = app.result_of(&cut.request_id).await;
        assert_eq!(failed.status, Status::Failed);
        let dead = app.wait_dead_letters(4, Duration::from_secs(30)).await;
        assert_eq!(
            dead.len(),
            4,
            "{:?}",
            dead.iter().map(|d| &d.0.reason).collect::<Vec<_>>()
        );

        let ch = app.conn.create_channel().await.unwrap();
        let s = spec();
        let mut reasons = BTreeSet::new();
        for _ in 0..4 {
            let m = ch
                .basic_get(
                    app.names.dead_queue.as_str().into(),
                    BasicGetOptions { no_ack: false },
                )
                .await
                .unwrap()
                .expect("a dead letter");
            let h = properties_json(&m.delivery.properties);
            assert_valid("a dead letter's properties and headers", &s.dead_letter, &h);
            reasons.insert(h["x-kycq-reason"].as_str().unwrap().to_owned());
        }
        let _ = ch.close(200, "ok".into()).await;
        assert_eq!(
            reasons,
            [
                "not_json",
                "no_request_id",
                "duplicate_key",
                "billing_unknown"
            ]
            .iter()
            .map(|r| r.to_string())
            .collect()
        );
        app.cleanup().await;
    }
}
