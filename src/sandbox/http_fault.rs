//! HTTP-layer faults every vendor of the sandbox answers alike (a body cut off mid-stream, a bare status, a backend's own refusal), rendered in one place.
//!
//! The shared scenarios 934–937 stand for what sits between kycq and a vendor's application
//! rather than for the vendor's protocol: a proxy or load balancer that drops the connection
//! after the status line (RFC 9112 §6.3: a message whose connection closes before
//! `Content-Length` octets arrived is incomplete), a bare `429 Too Many Requests` (RFC 6585 §4)
//! from something in front of the vendor, and a backend that refuses a request's parameters in its
//! own JSON instead of the vendor's envelope. Each vendor module wraps an [`HttpFault`] in its
//! `Answer` and delegates status, ledger code, billing and rendering here.

use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use futures::StreamExt as _;

use super::scenarios::Scenario;

/// How long a cut-off answer waits after sending the first half of its body before it errors.
/// The wait lets the server flush the status line, headers and that half before the
/// connection is dropped (an error from the body stream makes hyper abort the connection, and
/// anything still buffered would be lost with it).
pub const CUT_OFF_PAUSE: Duration = Duration::from_millis(30);

/// The body of a backend's own refusal: JSON, but not any vendor's envelope.
pub const BACKEND_REFUSAL_BODY: &str = r#"{"code":400,"msg":"parameter error"}"#;

/// An answer at the HTTP layer, the same for every vendor and API.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum HttpFault {
    /// `status`, `Content-Type: application/json` and a `Content-Length` of the whole JSON body,
    /// then about half of that body, then the connection is closed: the client sees the status,
    /// then an error while reading the body.
    CutOff {
        /// The status line sent.
        status: StatusCode,
    },
    /// A bare status: `text/plain` with the reason phrase as the body, no vendor JSON, no vendor
    /// or gateway headers.
    Bare {
        /// The status line sent.
        status: StatusCode,
    },
    /// `400` with [`BACKEND_REFUSAL_BODY`] (`application/json`): a backend refusing this
    /// request's parameters in its own words, without the vendor's envelope or gateway headers.
    BackendRefusal,
}

/// Ledger codes of the statuses a fault is sent with: (status, bare, cut off).
const LEDGER_CODES: &[(u16, &str, &str)] = &[
    (200, "HTTP200", "HTTP200-cut"),
    (400, "HTTP400", "HTTP400-cut"),
    (401, "HTTP401", "HTTP401-cut"),
    (403, "HTTP403", "HTTP403-cut"),
    (404, "HTTP404", "HTTP404-cut"),
    (408, "HTTP408", "HTTP408-cut"),
    (429, "HTTP429", "HTTP429-cut"),
    (500, "HTTP500", "HTTP500-cut"),
    (502, "HTTP502", "HTTP502-cut"),
    (503, "HTTP503", "HTTP503-cut"),
    (504, "HTTP504", "HTTP504-cut"),
];

impl HttpFault {
    /// The status line sent.
    pub fn status(self) -> StatusCode {
        match self {
            HttpFault::CutOff { status } | HttpFault::Bare { status } => status,
            HttpFault::BackendRefusal => StatusCode::BAD_REQUEST,
        }
    }

    /// The code the ledger records: `HTTP<status>-cut` for a cut-off body, `HTTP<status>`
    /// otherwise (`HTTP502-cut`, `HTTP429`, `HTTP400`, `HTTP504-cut` for the shared scenarios).
    /// A status outside the sandbox's table records `HTTP-cut` / `HTTP`; the ledger's
    /// `http_status` still holds it.
    pub fn ledger_code(self) -> &'static str {
        let status = self.status().as_u16();
        let row = LEDGER_CODES.iter().find(|(s, ..)| *s == status);
        match (self, row) {
            (HttpFault::CutOff { .. }, Some((_, _, cut))) => cut,
            (HttpFault::CutOff { .. }, None) => "HTTP-cut",
            (_, Some((_, bare, _))) => bare,
            (_, None) => "HTTP",
        }
    }

    /// Whether the vendor charges for it: never (no vendor answer was produced).
    pub fn billed(self) -> bool {
        false
    }

    /// The `Content-Type` sent.
    pub fn content_type(self) -> &'static str {
        match self {
            HttpFault::CutOff { .. } | HttpFault::BackendRefusal => "application/json",
            HttpFault::Bare { .. } => "text/plain; charset=utf-8",
        }
    }

    /// The whole body this answer stands for; a cut-off answer announces its length in
    /// `Content-Length` but sends only the first [`HttpFault::sent_len`] bytes of it.
    pub fn body(self) -> String {
        let status = self.status();
        let reason = status.canonical_reason().unwrap_or("Error");
        match self {
            HttpFault::CutOff { .. } => format!(
                r#"{{"code":{},"msg":"{reason}","detail":"the upstream closed the connection before the answer was complete"}}"#,
                status.as_u16()
            ),
            HttpFault::Bare { .. } => reason.to_owned(),
            HttpFault::BackendRefusal => BACKEND_REFUSAL_BODY.to_owned(),
        }
    }

    /// How many bytes of [`HttpFault::body`] are actually sent: about half for a cut-off body,
    /// all of it otherwise.
    pub fn sent_len(self) -> usize {
        let len = self.body().len();
        match self {
            HttpFault::CutOff { .. } => len / 2,
            _ => len,
        }
    }

    /// The response. A cut-off body is a stream that yields its first half, waits
    /// [`CUT_OFF_PAUSE`], then fails with an I/O error: hyper then aborts the connection with
    /// fewer bytes sent than `Content-Length` announced.
    pub fn render(self) -> Response {
        let content_type = [(header::CONTENT_TYPE, self.content_type())];
        match self {
            HttpFault::CutOff { status } => {
                let body = self.body();
                let full_len = body.len();
                let head = Bytes::from(body).slice(..self.sent_len());
                let stream = futures::stream::iter([Ok::<Bytes, std::io::Error>(head)]).chain(
                    futures::stream::once(async {
                        tokio::time::sleep(CUT_OFF_PAUSE).await;
                        Err(std::io::Error::new(
                            std::io::ErrorKind::ConnectionReset,
                            "sandbox: the connection is cut off in the middle of the body",
                        ))
                    }),
                );
                let mut response =
                    (status, content_type, Body::from_stream(stream)).into_response();
                response
                    .headers_mut()
                    .insert(header::CONTENT_LENGTH, HeaderValue::from(full_len));
                response
            }
            HttpFault::Bare { status } => (status, content_type, self.body()).into_response(),
            HttpFault::BackendRefusal => (self.status(), content_type, self.body()).into_response(),
        }
    }
}

impl Scenario {
    /// The HTTP-layer fault this scenario answers on call number `attempt` for an identity
    /// (1 = first): 934 → 502 cut off, 935 → a bare 429 on the first call only, 936 → a
    /// backend's 400, 937 → 504 cut off; `None` for every other scenario (and for 935 after its
    /// first call, which then matches).
    pub fn http_fault(self, attempt: u64) -> Option<HttpFault> {
        match self {
            Scenario::Http502CutOff => Some(HttpFault::CutOff {
                status: StatusCode::BAD_GATEWAY,
            }),
            Scenario::Http429Once if attempt <= 1 => Some(HttpFault::Bare {
                status: StatusCode::TOO_MANY_REQUESTS,
            }),
            Scenario::Http400Backend => Some(HttpFault::BackendRefusal),
            Scenario::Http504CutOff => Some(HttpFault::CutOff {
                status: StatusCode::GATEWAY_TIMEOUT,
            }),
            _ => None,
        }
    }

    /// True for the scenarios answered at the HTTP layer (934–937), whatever the attempt.
    pub fn is_http_fault(self) -> bool {
        self.http_fault(1).is_some()
    }
}

#[cfg(test)]
pub(crate) mod testing {
    //! Checks shared by the vendor modules' tests: what a fault looks like to a real client.

    use axum::http::{HeaderMap, StatusCode};

    use super::HttpFault;
    use crate::sandbox::Scenario;

    /// The fault each shared scenario answers on call `attempt`, written out independently of
    /// [`Scenario::http_fault`].
    pub(crate) fn expected_fault(scenario: Scenario, attempt: u64) -> Option<HttpFault> {
        match (scenario, attempt) {
            (Scenario::Http502CutOff, _) => Some(HttpFault::CutOff {
                status: StatusCode::from_u16(502).unwrap(),
            }),
            (Scenario::Http429Once, 1) => Some(HttpFault::Bare {
                status: StatusCode::from_u16(429).unwrap(),
            }),
            (Scenario::Http400Backend, _) => Some(HttpFault::BackendRefusal),
            (Scenario::Http504CutOff, _) => Some(HttpFault::CutOff {
                status: StatusCode::from_u16(504).unwrap(),
            }),
            _ => None,
        }
    }

    /// The HTTP-layer scenarios, in code order.
    pub(crate) const SCENARIOS: [Scenario; 4] = [
        Scenario::Http502CutOff,
        Scenario::Http429Once,
        Scenario::Http400Backend,
        Scenario::Http504CutOff,
    ];

    /// What the ledger records for the first call of an HTTP-layer scenario, the same for every
    /// vendor and API, written out independently: (HTTP status, ledger code, billed).
    pub(crate) fn expected_record(scenario: Scenario) -> Option<(u16, &'static str, bool)> {
        match scenario {
            Scenario::Http502CutOff => Some((502, "HTTP502-cut", false)),
            Scenario::Http429Once => Some((429, "HTTP429", false)),
            Scenario::Http400Backend => Some((400, "HTTP400", false)),
            Scenario::Http504CutOff => Some((504, "HTTP504-cut", false)),
            _ => None,
        }
    }

    /// Asserts that `response` is `fault` as a client sees it: the status and content type;
    /// for a cut-off body a `Content-Length` larger than what arrives and an error (not a
    /// truncated `Ok`) from reading the body; otherwise the exact body. Returns the headers
    /// for the vendor's own checks.
    pub(crate) async fn assert_answer(response: reqwest::Response, fault: HttpFault) -> HeaderMap {
        assert_eq!(response.status(), fault.status(), "{fault:?}");
        let headers = response.headers().clone();
        let content_type = headers
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default();
        assert_eq!(content_type, fault.content_type(), "{fault:?}");
        match fault {
            HttpFault::CutOff { .. } => {
                assert_eq!(
                    response.content_length(),
                    Some(fault.body().len() as u64),
                    "{fault:?}: Content-Length announces the whole body"
                );
                let read = response.bytes().await;
                let err = read.expect_err("a cut-off body is an error, not a truncated Ok");
                assert!(err.is_body() || err.is_decode(), "{fault:?}: {err:?}");
            }
            HttpFault::Bare { .. } | HttpFault::BackendRefusal => {
                assert_eq!(response.text().await.unwrap(), fault.body(), "{fault:?}");
            }
        }
        headers
    }
}

#[cfg(test)]
mod tests {
    use std::net::SocketAddr;

    use axum::extract::Path;
    use axum::routing::get;
    use axum::Router;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio_util::sync::CancellationToken;

    use super::testing::{assert_answer, expected_fault};
    use super::*;

    const CUT_502: HttpFault = HttpFault::CutOff {
        status: StatusCode::BAD_GATEWAY,
    };
    const CUT_504: HttpFault = HttpFault::CutOff {
        status: StatusCode::GATEWAY_TIMEOUT,
    };
    const BARE_429: HttpFault = HttpFault::Bare {
        status: StatusCode::TOO_MANY_REQUESTS,
    };

    #[test]
    fn the_four_scenarios_and_only_they_are_http_faults() {
        for scenario in Scenario::ALL {
            for attempt in [1, 2, 3] {
                assert_eq!(
                    scenario.http_fault(attempt),
                    expected_fault(scenario, attempt),
                    "{scenario:?} call {attempt}"
                );
            }
        }
        let faults: Vec<Scenario> = Scenario::ALL
            .into_iter()
            .filter(|s| s.is_http_fault())
            .collect();
        assert_eq!(
            faults,
            [
                Scenario::Http502CutOff,
                Scenario::Http429Once,
                Scenario::Http400Backend,
                Scenario::Http504CutOff
            ]
        );
        // The documented identities (the book's test identities page).
        for (scenario, id_number) in [
            (Scenario::Http502CutOff, "11010519700101934X"),
            (Scenario::Http429Once, "110105197001019358"),
            (Scenario::Http400Backend, "110105197001019366"),
            (Scenario::Http504CutOff, "110105197001019374"),
        ] {
            assert_eq!(
                crate::sandbox::scenarios::identity(scenario, 0).id_number,
                id_number
            );
        }
        assert_eq!(Scenario::Http429Once.http_fault(0), Some(BARE_429));
        assert_eq!(Scenario::Http429Once.http_fault(2), None);
        assert!(Scenario::Http429Once.is_once());
    }

    #[test]
    fn status_ledger_code_and_billing() {
        for (fault, status, code) in [
            (CUT_502, 502, "HTTP502-cut"),
            (BARE_429, 429, "HTTP429"),
            (HttpFault::BackendRefusal, 400, "HTTP400"),
            (CUT_504, 504, "HTTP504-cut"),
            (
                HttpFault::Bare {
                    status: StatusCode::SERVICE_UNAVAILABLE,
                },
                503,
                "HTTP503",
            ),
            (
                HttpFault::CutOff {
                    status: StatusCode::IM_A_TEAPOT,
                },
                418,
                "HTTP-cut",
            ),
            (
                HttpFault::Bare {
                    status: StatusCode::IM_A_TEAPOT,
                },
                418,
                "HTTP",
            ),
        ] {
            assert_eq!(fault.status().as_u16(), status, "{fault:?}");
            assert_eq!(fault.ledger_code(), code, "{fault:?}");
            assert!(!fault.billed(), "{fault:?}");
        }
        for (status, bare, cut) in LEDGER_CODES {
            assert_eq!(*bare, format!("HTTP{status}"));
            assert_eq!(*cut, format!("HTTP{status}-cut"));
        }
    }

    #[tokio::test]
    async fn bare_and_backend_answers_render_whole() {
        for (fault, body, content_type) in [
            (BARE_429, "Too Many Requests", "text/plain; charset=utf-8"),
            (
                HttpFault::BackendRefusal,
                r#"{"code":400,"msg":"parameter error"}"#,
                "application/json",
            ),
        ] {
            let response = fault.render();
            assert_eq!(response.status(), fault.status());
            assert_eq!(response.headers()["content-type"], content_type);
            let bytes = axum::body::to_bytes(response.into_body(), 1 << 16)
                .await
                .unwrap();
            assert_eq!(bytes, body.as_bytes(), "{fault:?}");
        }
        let v: serde_json::Value = serde_json::from_str(BACKEND_REFUSAL_BODY).unwrap();
        assert_eq!(
            v,
            serde_json::json!({"code": 400, "msg": "parameter error"})
        );
        assert!(v.get("Response").is_none() && v.get("RequestId").is_none());
    }

    #[tokio::test]
    async fn a_cut_off_answer_announces_more_than_its_body_stream_gives() {
        for fault in [CUT_502, CUT_504] {
            let full = fault.body();
            assert!(serde_json::from_str::<serde_json::Value>(&full).is_ok());
            assert!(fault.sent_len() > 0 && fault.sent_len() < full.len());
            let response = fault.render();
            assert_eq!(response.status(), fault.status());
            assert_eq!(response.headers()["content-type"], "application/json");
            assert_eq!(
                response.headers()["content-length"],
                full.len().to_string().as_str()
            );
            let err = axum::body::to_bytes(response.into_body(), 1 << 16).await;
            assert!(err.is_err(), "{fault:?}: the body stream fails");
        }
    }

    /// A loopback server answering `GET /fault/{n}` with fault `n` of [`FAULTS`] and `GET /ok`
    /// with 200, until the token is cancelled.
    async fn serve() -> (SocketAddr, CancellationToken) {
        let app = Router::new()
            .route(
                "/fault/{n}",
                get(|Path(n): Path<usize>| async move { FAULTS[n].render() }),
            )
            .route("/ok", get(|| async { "ok" }));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let stop = CancellationToken::new();
        let token = stop.clone();
        tokio::spawn(async move {
            axum::serve(listener, app)
                .with_graceful_shutdown(async move { token.cancelled().await })
                .await
        });
        (addr, stop)
    }

    const FAULTS: [HttpFault; 4] = [CUT_502, BARE_429, HttpFault::BackendRefusal, CUT_504];

    #[tokio::test]
    async fn reqwest_gets_the_status_then_an_error_reading_a_cut_off_body() {
        let (addr, stop) = serve().await;
        let client = reqwest::Client::new();
        // Several rounds on one client: the broken connection must not be reused either.
        for round in 0..5 {
            for (n, fault) in FAULTS.into_iter().enumerate() {
                let response = client
                    .get(format!("http://{addr}/fault/{n}"))
                    .send()
                    .await
                    .unwrap_or_else(|e| panic!("round {round} {fault:?}: send() is Ok: {e:?}"));
                assert_answer(response, fault).await;
                let ok = client
                    .get(format!("http://{addr}/ok"))
                    .send()
                    .await
                    .unwrap();
                assert_eq!(ok.text().await.unwrap(), "ok");
            }
        }
        stop.cancel();
    }

    #[tokio::test]
    async fn on_the_wire_the_connection_closes_before_content_length_bytes() {
        let (addr, stop) = serve().await;
        for (n, fault) in [(0, CUT_502), (3, CUT_504)] {
            let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
            stream
                .write_all(format!("GET /fault/{n} HTTP/1.1\r\nHost: {addr}\r\n\r\n").as_bytes())
                .await
                .unwrap();
            // Read until the server closes (EOF, or a reset).
            let mut received = Vec::new();
            let mut buf = [0u8; 1024];
            loop {
                match tokio::time::timeout(Duration::from_secs(10), stream.read(&mut buf))
                    .await
                    .expect("the server closes the connection")
                {
                    Ok(0) | Err(_) => break,
                    Ok(k) => received.extend_from_slice(&buf[..k]),
                }
            }
            let text = String::from_utf8(received).unwrap();
            let (head, body) = text.split_once("\r\n\r\n").expect("a complete head");
            let status = fault.status().as_u16();
            assert!(head.starts_with(&format!("HTTP/1.1 {status} ")), "{head}");
            let head = head.to_ascii_lowercase();
            assert!(
                head.contains(&format!("\r\ncontent-length: {}", fault.body().len())),
                "{head}"
            );
            assert!(!head.contains("transfer-encoding"), "{head}");
            assert_eq!(body, &fault.body()[..fault.sent_len()]);
        }
        stop.cancel();
    }
}
