//! One table, shared by every vendor, for what a call came back with when the vendor's own
//! business code does not say: transport failures and HTTP statuses, each row with its class
//! and billing.
//!
//! The rule every client follows: the vendor's code tables first (a JSON `Code`/`Result`, a
//! gateway's error header), this table second. So the same status or failure means the same
//! thing for every vendor:
//!
//! - a request that never left (connection refused, DNS, TLS before sending) is transient and
//!   unbilled;
//! - a request that was sent and got no whole answer — no status line, or a status line and
//!   then a body cut off, reset or timed out, **whatever the status said** — may have run and
//!   been billed: billing unknown, never called again;
//! - an answer that arrived whole but that the vendor's tables do not explain (a bare status, a
//!   body not in the vendor's format) is classified by its status in [`STATUS_ROWS`].
//!
//! Sources: RFC 9110 §15 (status semantics), the vendors' error pages for the statuses their
//! gateways use (Alibaba Cloud API Gateway error codes, help.aliyun.com/document_detail/43906;
//! Tencent Cloud API 3.0 common errors, cloud.tencent.com/document/api/1007/31323).

use super::{Classification, ProviderReply, Refusal};
use crate::check::Billed;

/// How a call failed below HTTP (no whole answer arrived).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Transport {
    /// The request never left: connection refused, name resolution, TLS handshake, or the
    /// request could not be built.
    NotSent,
    /// Sent, and no status line came back: a timeout or a reset while waiting.
    SentNoAnswer,
    /// A status line came back and the body did not arrive whole (reset, timeout, bad framing).
    CutOff,
}

/// Who produced a non-2xx answer, when the vendor's protocol tells (an API gateway's error
/// headers). Vendors without a gateway signal report [`Origin::Backend`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Origin {
    /// The vendor's API itself (or a proxy that forwards its status): the status is about this
    /// request.
    Backend,
    /// An API gateway in front of it refused, with an error the vendor's table does not list.
    Gateway,
}

/// One transport row.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TransportRow {
    /// The failure.
    pub failure: Transport,
    /// Class and billing.
    pub classification: Classification,
    /// What it means, for logs and results.
    pub meaning: &'static str,
    /// Why this class.
    pub source: &'static str,
}

/// Which answers a status row applies to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Applies {
    /// Any origin.
    Any,
    /// Only this origin.
    Only(Origin),
}

/// One status row: an inclusive range of statuses.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct StatusRow {
    /// First status of the range.
    pub from: u16,
    /// Last status of the range.
    pub to: u16,
    /// Which origin it applies to.
    pub origin: Applies,
    /// Class and billing.
    pub classification: Classification,
    /// What it means, for logs and results.
    pub meaning: &'static str,
    /// Why this class.
    pub source: &'static str,
}

const RFC: &str = "RFC 9110 §15";
const DESIGN_UNKNOWN: &str =
    "a call that may have reached the vendor without a whole answer may have been billed: \
     never repeated (kycq's billing rule)";

/// Transient and unbilled.
const TRANSIENT: Classification = Classification::TRANSIENT;
/// Provider-wide and unbilled: opens the circuit.
const PROVIDER_WIDE: Classification = Classification::PROVIDER_WIDE;
/// This request's parameters were refused: finish it, never open a circuit.
const REFUSED: Classification = Classification::request_refused();
/// A refusal kycq cannot place: finish `failed`, unbilled, no circuit.
const UNPLACED: Classification = Classification::unknown_code(Billed::No);
/// May have run: billing unknown, never repeated.
const UNKNOWN: Classification = Classification::UNKNOWN;

/// Failures without a whole answer. Looked up with [`transport`].
pub const TRANSPORT_ROWS: &[TransportRow] = &[
    TransportRow {
        failure: Transport::NotSent,
        classification: TRANSIENT,
        meaning: "not sent: connection refused, name resolution, TLS, or the request could not be built",
        source: "nothing reached the vendor, so nothing can have been billed",
    },
    TransportRow {
        failure: Transport::SentNoAnswer,
        classification: UNKNOWN,
        meaning: "sent, and no answer came back (timeout or reset)",
        source: DESIGN_UNKNOWN,
    },
    TransportRow {
        failure: Transport::CutOff,
        classification: UNKNOWN,
        meaning: "a status line, then the body cut off (reset, timeout, bad framing), whatever the status said",
        source: DESIGN_UNKNOWN,
    },
];

const fn status(
    from: u16,
    to: u16,
    origin: Applies,
    classification: Classification,
    meaning: &'static str,
    source: &'static str,
) -> StatusRow {
    StatusRow {
        from,
        to,
        origin,
        classification,
        meaning,
        source,
    }
}

use Applies::{Any, Only};

/// Whole answers the vendor's tables do not explain, by status. The first row that covers the
/// status and the origin wins; the last row covers everything.
#[rustfmt::skip]
pub const STATUS_ROWS: &[StatusRow] = &[
    status(200, 299, Any, UNKNOWN, "an answer kycq cannot read: it may be a billed verdict", DESIGN_UNKNOWN),
    status(300, 399, Any, PROVIDER_WIDE, "a redirect (never followed: it could send the request twice): the endpoint is misconfigured", RFC),
    status(400, 400, Only(Origin::Backend), REFUSED, "the vendor refused this request's parameters", RFC),
    status(400, 400, Only(Origin::Gateway), UNPLACED, "the API gateway refused this request with an error kycq does not know", "Alibaba Cloud API Gateway error codes (doc 43906)"),
    status(401, 401, Any, Classification::refused(Refusal::Credentials), "credentials refused", RFC),
    status(402, 403, Any, Classification::refused(Refusal::Account), "the account is not allowed (payment, authorization, quota)", RFC),
    status(404, 405, Any, PROVIDER_WIDE, "the endpoint or method does not exist: misconfigured", RFC),
    status(408, 408, Any, TRANSIENT, "the server timed out waiting for the request: it did not run", RFC),
    status(413, 414, Any, REFUSED, "this request is too large for the vendor", RFC),
    status(422, 422, Any, REFUSED, "the vendor could not process this request's content", RFC),
    status(429, 429, Any, Classification::THROTTLED, "too many requests: throttled", "RFC 6585 §4"),
    status(431, 431, Any, REFUSED, "this request's headers are too large", "RFC 6585 §5"),
    status(400, 499, Any, UNPLACED, "refused with a status kycq does not place", RFC),
    status(501, 501, Any, PROVIDER_WIDE, "the method is not implemented there: misconfigured", RFC),
    status(504, 504, Any, UNKNOWN, "gateway timeout: the backend may have run the check", DESIGN_UNKNOWN),
    status(500, 599, Any, TRANSIENT, "the vendor's server failed: try again", RFC),
    status(0, u16::MAX, Any, UNKNOWN, "an unexpected status: the request may have run", DESIGN_UNKNOWN),
];

impl ProviderReply {
    /// A whole answer the vendor's tables do not explain, classified by its status alone
    /// ([`STATUS_ROWS`]): `provider_code` is `HTTP<status>`.
    pub fn from_status(status: u16, origin: Origin, why: &str) -> Self {
        let row = status_row(status, origin);
        let mut r = Self::transport(
            row.classification,
            Some(status),
            format!("HTTP {status}: {why} ({})", row.meaning),
        );
        r.provider_code = Some(format!("HTTP{status}"));
        r
    }
}

/// The row of a transport failure.
pub fn transport(failure: Transport) -> &'static TransportRow {
    TRANSPORT_ROWS
        .iter()
        .find(|r| r.failure == failure)
        .expect("every transport failure has a row")
}

/// The row of a whole answer with `status` from `origin`.
pub fn status_row(status: u16, origin: Origin) -> &'static StatusRow {
    STATUS_ROWS
        .iter()
        .find(|r| {
            (r.from..=r.to).contains(&status)
                && match r.origin {
                    Any => true,
                    Only(o) => o == origin,
                }
        })
        .expect("the last row covers every status")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::check::ReasonCode;
    use crate::providers::OutcomeClass::{self, *};

    fn got(c: Classification) -> (OutcomeClass, Billed, bool) {
        (c.class, c.billed, c.throttled)
    }

    /// docs/src/reference/failures.md shows these tables exactly as the code has them.
    #[test]
    fn the_documentation_shows_these_tables() {
        let docs = include_str!("../../docs/src/reference/failures.md");
        let range = |r: &StatusRow| match (r.from, r.to) {
            (0, u16::MAX) => "any other".to_owned(),
            (a, b) if a == b => a.to_string(),
            (a, b) => format!("{a}–{b}"),
        };
        let origin = |r: &StatusRow| match r.origin {
            Any => "any",
            Only(Origin::Backend) => "the vendor's backend",
            Only(Origin::Gateway) => "an API gateway",
        };
        let class = |c: Classification| {
            let mut s = format!("`{}`", c.class.as_str());
            if c.throttled {
                s.push_str(" (throttled)");
            }
            s
        };
        let mut want =
            String::from("| status | from | class | billed | meaning |\n|---|---|---|---|---|\n");
        for r in STATUS_ROWS {
            want.push_str(&format!(
                "| {} | {} | {} | {} | {} |\n",
                range(r),
                origin(r),
                class(r.classification),
                r.classification.billed.as_str(),
                r.meaning
            ));
        }
        assert!(
            docs.contains(&want),
            "docs/src/reference/failures.md should hold:\n{want}"
        );
        let mut want = String::from("| failure | class | billed | why |\n|---|---|---|---|\n");
        for r in TRANSPORT_ROWS {
            want.push_str(&format!(
                "| {} | {} | {} | {} |\n",
                r.meaning,
                class(r.classification),
                r.classification.billed.as_str(),
                r.source
            ));
        }
        assert!(
            docs.contains(&want),
            "docs/src/reference/failures.md should hold:\n{want}"
        );
    }

    #[test]
    fn transport_rows() {
        let table = [
            (Transport::NotSent, (Transient, Billed::No, false)),
            (Transport::SentNoAnswer, (Unknown, Billed::Unknown, false)),
            (Transport::CutOff, (Unknown, Billed::Unknown, false)),
        ];
        assert_eq!(table.len(), TRANSPORT_ROWS.len());
        for (failure, want) in table {
            assert_eq!(got(transport(failure).classification), want, "{failure:?}");
        }
    }

    #[test]
    fn status_rows_for_the_backend() {
        let table: &[(u16, (OutcomeClass, Billed, bool))] = &[
            (200, (Unknown, Billed::Unknown, false)),
            (204, (Unknown, Billed::Unknown, false)),
            (301, (ProviderWide, Billed::No, false)),
            (307, (ProviderWide, Billed::No, false)),
            (400, (RequestRefused, Billed::No, false)),
            (401, (ProviderWide, Billed::No, false)),
            (402, (ProviderWide, Billed::No, false)),
            (403, (ProviderWide, Billed::No, false)),
            (404, (ProviderWide, Billed::No, false)),
            (405, (ProviderWide, Billed::No, false)),
            (406, (UnknownCode, Billed::No, false)),
            (408, (Transient, Billed::No, false)),
            (409, (UnknownCode, Billed::No, false)),
            (413, (RequestRefused, Billed::No, false)),
            (414, (RequestRefused, Billed::No, false)),
            (422, (RequestRefused, Billed::No, false)),
            (429, (Transient, Billed::No, true)),
            (431, (RequestRefused, Billed::No, false)),
            (499, (UnknownCode, Billed::No, false)),
            (500, (Transient, Billed::No, false)),
            (501, (ProviderWide, Billed::No, false)),
            (502, (Transient, Billed::No, false)),
            (503, (Transient, Billed::No, false)),
            (504, (Unknown, Billed::Unknown, false)),
            (505, (Transient, Billed::No, false)),
            (599, (Transient, Billed::No, false)),
            (100, (Unknown, Billed::Unknown, false)),
            (600, (Unknown, Billed::Unknown, false)),
        ];
        for (s, want) in table {
            assert_eq!(
                got(status_row(*s, Origin::Backend).classification),
                *want,
                "{s}"
            );
        }
    }

    #[test]
    fn a_gateway_400_it_does_not_know_finishes_the_request_without_a_circuit() {
        let row = status_row(400, Origin::Gateway);
        assert_eq!(got(row.classification), (UnknownCode, Billed::No, false));
        // Every other status means the same from the gateway as from the backend.
        for s in [200, 301, 401, 403, 429, 500, 502, 504] {
            assert_eq!(
                status_row(s, Origin::Gateway),
                status_row(s, Origin::Backend)
            );
        }
    }

    #[test]
    fn no_row_of_a_single_request_opens_a_circuit_or_retries_a_possibly_billed_call() {
        // The statuses about one request's content never take the provider out.
        for s in [400, 413, 414, 422, 431] {
            let c = status_row(s, Origin::Backend).classification;
            assert_eq!(c.class, RequestRefused, "{s}");
            assert_ne!(
                status_row(s, Origin::Gateway).classification.class,
                ProviderWide,
                "{s}"
            );
        }
        for r in STATUS_ROWS {
            let c = r.classification;
            if c.billed != Billed::No {
                assert_eq!(c.class, Unknown, "{r:?}");
            }
            if matches!(c.class, RequestRefused) {
                assert_eq!(c.reason_code, Some(ReasonCode::InvalidRequest));
            }
        }
        assert!(TRANSPORT_ROWS
            .iter()
            .all(|r| r.classification.billed == Billed::No || r.classification.class == Unknown));
    }
}
