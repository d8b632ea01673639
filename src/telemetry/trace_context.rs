//! W3C Trace Context on AMQP messages: the `traceparent` and `tracestate` application headers
//! (<https://www.w3.org/TR/trace-context/>; the AMQP mapping,
//! <https://w3c.github.io/trace-context-amqp/>, carries them as application properties of these
//! names). Pure parsing and formatting; what the worker does with them is in
//! [`crate::telemetry::continue_trace`].
//!
//! A value that does not parse is ignored — the request starts a new trace — and never fails or
//! dead-letters the message: tracing is the caller's convenience, never a reason to refuse work.

use std::fmt;

use lapin::types::{AMQPValue, FieldTable, LongString};

/// The `traceparent` header.
pub const TRACEPARENT: &str = "traceparent";
/// The `tracestate` header.
pub const TRACESTATE: &str = "tracestate";

/// The longest `tracestate` passed on: 32 list members of at most 256 characters each, plus
/// their separators (Trace Context, "tracestate Header Field Values"). A longer one is dropped.
pub const TRACESTATE_MAX_LEN: usize = 32 * 257;

/// A parsed `traceparent`: the trace, the caller's span (`parent-id`) and the trace flags.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct TraceParent {
    /// 16 bytes, never all zero.
    pub trace_id: [u8; 16],
    /// 8 bytes, never all zero: the span of whoever sent this.
    pub span_id: [u8; 8],
    /// Trace flags; bit 0 is `sampled`.
    pub flags: u8,
}

impl TraceParent {
    /// The `sampled` flag: the sender may have recorded its part of the trace.
    pub const SAMPLED: u8 = 0x01;

    /// Parse a `traceparent` value. Version `00` is exactly 55 characters; a later version may
    /// be longer, its first 55 characters read as version `00` when the 56th is `-` (Trace
    /// Context, "Versioning of traceparent"). None for anything else: a wrong length, version
    /// `ff`, a non-hex or upper-case digit, an all-zero trace id or parent id.
    pub fn parse(value: &str) -> Option<TraceParent> {
        let v = value.as_bytes();
        if v.len() < 55 {
            return None;
        }
        let version = hex_byte(&v[0..2])?;
        if version == 0xff {
            return None;
        }
        match (version, v.len()) {
            (0, 55) => {}
            (0, _) => return None,
            (_, 55) => {}
            (_, _) if v[55] == b'-' => {}
            _ => return None,
        }
        if v[2] != b'-' || v[35] != b'-' || v[52] != b'-' {
            return None;
        }
        let mut trace_id = [0u8; 16];
        for (i, b) in trace_id.iter_mut().enumerate() {
            *b = hex_byte(&v[3 + 2 * i..5 + 2 * i])?;
        }
        let mut span_id = [0u8; 8];
        for (i, b) in span_id.iter_mut().enumerate() {
            *b = hex_byte(&v[36 + 2 * i..38 + 2 * i])?;
        }
        let flags = hex_byte(&v[53..55])?;
        if trace_id == [0; 16] || span_id == [0; 8] {
            return None;
        }
        Some(TraceParent {
            trace_id,
            span_id,
            flags,
        })
    }

    /// The trace id as 32 lower-case hex digits.
    pub fn trace_id_hex(&self) -> String {
        hex::encode(self.trace_id)
    }

    /// The span id as 16 lower-case hex digits.
    pub fn span_id_hex(&self) -> String {
        hex::encode(self.span_id)
    }

    /// Whether the `sampled` flag is set.
    pub fn sampled(&self) -> bool {
        self.flags & Self::SAMPLED != 0
    }

    /// The same trace, continued by the span `span_id` (the value this one passes on).
    pub fn child(&self, span_id: [u8; 8]) -> TraceParent {
        TraceParent { span_id, ..*self }
    }
}

/// Version `00`: `00-<trace-id>-<parent-id>-<flags>`, lower-case hex.
impl fmt::Display for TraceParent {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "00-{}-{}-{:02x}",
            self.trace_id_hex(),
            self.span_id_hex(),
            self.flags
        )
    }
}

impl fmt::Debug for TraceParent {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "TraceParent({self})")
    }
}

/// Whether `value` may be passed on as `tracestate`: printable ASCII (Trace Context allows
/// nothing else in a list member), at most [`TRACESTATE_MAX_LEN`] characters, not blank. Its
/// list members are not interpreted: kycq adds no entry of its own and passes it on as it came.
pub fn tracestate_ok(value: &str) -> bool {
    !value.trim().is_empty()
        && value.len() <= TRACESTATE_MAX_LEN
        && value
            .bytes()
            .all(|b| (0x20..=0x7e).contains(&b) || b == b'\t')
}

/// What a message says about the trace it belongs to.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Incoming {
    /// The sender's span.
    pub parent: TraceParent,
    /// Its `tracestate`, when it is one to pass on (read only with a valid `traceparent`).
    pub state: Option<String>,
}

impl Incoming {
    /// Read from the values of the two headers. A `tracestate` without a valid `traceparent`
    /// is ignored (Trace Context: "If the vendor failed to parse traceparent, it MUST NOT attempt
    /// to parse tracestate"); a `traceparent` that does not parse is ignored too.
    pub fn from_values(traceparent: Option<&str>, tracestate: Option<&str>) -> Option<Incoming> {
        let parent = TraceParent::parse(traceparent?)?;
        let state = tracestate.filter(|s| tracestate_ok(s)).map(str::to_owned);
        Some(Incoming { parent, state })
    }

    /// Read from a message's application headers (a long or short string each; any other type
    /// is ignored).
    pub fn from_headers(headers: Option<&FieldTable>) -> Option<Incoming> {
        let h = headers?.inner();
        let text = |key: &str| match h.get(key)? {
            AMQPValue::LongString(s) => std::str::from_utf8(s.as_bytes()).ok().map(str::to_owned),
            AMQPValue::ShortString(s) => Some(s.as_str().to_owned()),
            _ => None,
        };
        Self::from_values(text(TRACEPARENT).as_deref(), text(TRACESTATE).as_deref())
    }
}

/// The trace context a message kycq publishes carries: its `traceparent` (the span that sent
/// it) and the `tracestate` it passes on.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Outgoing {
    /// `traceparent`.
    pub parent: TraceParent,
    /// `tracestate`, passed on as received.
    pub state: Option<String>,
}

impl Outgoing {
    /// `headers` with `traceparent` (and `tracestate`, or none) set to this context: any value
    /// they had is replaced, never kept next to it.
    pub fn apply(&self, headers: &mut FieldTable) {
        let mut kept = FieldTable::default();
        for (k, v) in headers.inner() {
            let name = k.as_str();
            if !name.eq_ignore_ascii_case(TRACEPARENT) && !name.eq_ignore_ascii_case(TRACESTATE) {
                kept.insert(k.clone(), v.clone());
            }
        }
        kept.insert(
            TRACEPARENT.into(),
            AMQPValue::LongString(LongString::from(self.parent.to_string())),
        );
        if let Some(s) = &self.state {
            kept.insert(
                TRACESTATE.into(),
                AMQPValue::LongString(LongString::from(s.as_str())),
            );
        }
        *headers = kept;
    }

    /// Properties whose headers carry this context (see [`Outgoing::apply`]).
    pub fn on(&self, props: &lapin::BasicProperties) -> lapin::BasicProperties {
        let mut h = props.headers().clone().unwrap_or_default();
        self.apply(&mut h);
        props.clone().with_headers(h)
    }
}

fn hex_byte(two: &[u8]) -> Option<u8> {
    let digit = |c: u8| match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        _ => None,
    };
    Some(digit(two[0])? << 4 | digit(two[1])?)
}

#[cfg(test)]
mod tests {
    use super::*;

    // The example of Trace Context, "traceparent Header Field Values".
    const EXAMPLE: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

    #[test]
    fn the_specifications_example_parses_and_formats_back() {
        let p = TraceParent::parse(EXAMPLE).unwrap();
        assert_eq!(p.trace_id_hex(), "4bf92f3577b34da6a3ce929d0e0e4736");
        assert_eq!(p.span_id_hex(), "00f067aa0ba902b7");
        assert_eq!(p.flags, 1);
        assert!(p.sampled());
        assert_eq!(p.to_string(), EXAMPLE);
        assert_eq!(
            p.trace_id,
            [
                0x4b, 0xf9, 0x2f, 0x35, 0x77, 0xb3, 0x4d, 0xa6, 0xa3, 0xce, 0x92, 0x9d, 0x0e, 0x0e,
                0x47, 0x36
            ]
        );
        let unsampled =
            TraceParent::parse("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00").unwrap();
        assert!(!unsampled.sampled());
        // Flags other than sampled are kept as they came.
        let other =
            TraceParent::parse("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-09").unwrap();
        assert_eq!(other.flags, 9);
        assert_eq!(
            other.to_string(),
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-09"
        );
    }

    #[test]
    fn a_child_keeps_the_trace_and_flags_and_names_its_own_span() {
        let p = TraceParent::parse(EXAMPLE).unwrap();
        let c = p.child([0x53, 0x99, 0x5c, 0x3f, 0x42, 0xcd, 0x8a, 0xd8]);
        assert_eq!(
            c.to_string(),
            "00-4bf92f3577b34da6a3ce929d0e0e4736-53995c3f42cd8ad8-01"
        );
    }

    #[test]
    fn malformed_values_are_ignored() {
        for bad in [
            "",
            "00",
            // one character short, one too many (version 00 is exactly 55)
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-0",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01x",
            // version ff is invalid
            "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            // all-zero trace id, all-zero parent id
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
            // not hex; upper case
            "00-4bf92f3577b34da6a3ce929d0e0e473g-00f067aa0ba902b7-01",
            "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",
            "0x-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-0g",
            // wrong separators
            "00_4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736_00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7_01",
            // a later version whose 56th character is not a dash
            "01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01x",
            // multi-byte text of the right byte length
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902é-01",
            " 00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
        ] {
            assert_eq!(TraceParent::parse(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn a_later_version_is_read_as_version_00() {
        let p =
            TraceParent::parse("cc-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-what-ever")
                .unwrap();
        assert_eq!(p.to_string(), EXAMPLE);
        let p =
            TraceParent::parse("01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01").unwrap();
        assert_eq!(p.to_string(), EXAMPLE);
    }

    #[test]
    fn tracestate_is_passed_on_only_with_a_valid_traceparent() {
        let i = Incoming::from_values(
            Some(EXAMPLE),
            Some("congo=t61rcWkgMzE,rojo=00f067aa0ba902b7"),
        )
        .unwrap();
        assert_eq!(
            i.state.as_deref(),
            Some("congo=t61rcWkgMzE,rojo=00f067aa0ba902b7")
        );
        assert_eq!(Incoming::from_values(None, Some("congo=t61rcWkgMzE")), None);
        assert_eq!(
            Incoming::from_values(Some("00-garbage"), Some("congo=t61rcWkgMzE")),
            None
        );
        // A blank, non-ASCII or oversized tracestate is dropped; the traceparent still counts.
        for bad in ["", "  ", "congo=t61rcWkgMzE\n", "congo=é"] {
            let i = Incoming::from_values(Some(EXAMPLE), Some(bad)).unwrap();
            assert_eq!(i.state, None, "{bad:?}");
        }
        let huge = "a=b,".repeat(TRACESTATE_MAX_LEN / 4 + 1);
        assert_eq!(
            Incoming::from_values(Some(EXAMPLE), Some(&huge))
                .unwrap()
                .state,
            None
        );
    }

    #[test]
    fn headers_are_read_as_long_or_short_strings() {
        use lapin::types::ShortString;
        let mut h = FieldTable::default();
        h.insert(
            TRACEPARENT.into(),
            AMQPValue::LongString(LongString::from(EXAMPLE)),
        );
        h.insert(
            TRACESTATE.into(),
            AMQPValue::ShortString(ShortString::from("rojo=00f067aa0ba902b7")),
        );
        let i = Incoming::from_headers(Some(&h)).unwrap();
        assert_eq!(i.parent.to_string(), EXAMPLE);
        assert_eq!(i.state.as_deref(), Some("rojo=00f067aa0ba902b7"));
        // Another type, or no headers at all: no trace context.
        let mut n = FieldTable::default();
        n.insert(TRACEPARENT.into(), AMQPValue::LongInt(7));
        assert_eq!(Incoming::from_headers(Some(&n)), None);
        assert_eq!(Incoming::from_headers(None), None);
    }

    #[test]
    fn applying_replaces_the_trace_headers_and_keeps_the_rest() {
        let mut h = FieldTable::default();
        h.insert(
            "TraceParent".into(),
            AMQPValue::LongString(LongString::from("00-stale")),
        );
        h.insert(
            TRACESTATE.into(),
            AMQPValue::LongString(LongString::from("stale=1")),
        );
        h.insert("x-app".into(), AMQPValue::LongInt(3));
        let out = Outgoing {
            parent: TraceParent::parse(EXAMPLE).unwrap(),
            state: None,
        };
        out.apply(&mut h);
        let keys: Vec<&str> = h.inner().keys().map(|k| k.as_str()).collect();
        assert_eq!(keys, ["traceparent", "x-app"]);
        let props = out.on(&lapin::BasicProperties::default());
        assert_eq!(
            Incoming::from_headers(props.headers().as_ref()),
            Some(Incoming {
                parent: out.parent,
                state: None
            })
        );
    }
}
