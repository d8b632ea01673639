//! Telemetry: the tracing subscriber (pretty or JSON, to stderr), the trace a request
//! continues (W3C Trace Context, [`trace_context`]), the optional OTLP export of the worker's
//! spans ([`otlp`]) and the Prometheus recorder.

pub mod otlp;
pub mod trace_context;

use std::ffi::OsStr;
use std::io::IsTerminal;
use std::sync::OnceLock;

use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};
use opentelemetry::trace::{SpanContext, SpanId, TraceContextExt, TraceFlags, TraceId, TraceState};
use tracing::Level;
use tracing_opentelemetry::OpenTelemetrySpanExt;
use tracing_subscriber::filter::{filter_fn, FilterExt};
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{EnvFilter, Layer};

use crate::check::ProviderReply;
use crate::configuration::LogFormat;
use trace_context::{Incoming, Outgoing, TraceParent};

/// The most verbose level a dependency may log at, whatever the filter says: below it, crates
/// log what goes over the wire (lapin logs every message body and the AMQP login at trace
/// level, as decimal byte arrays), which holds personal data and secrets.
pub const DEPENDENCY_MAX_LEVEL: Level = Level::INFO;

/// Dependency log targets that are never logged at any level: lapin logs a message the broker
/// returned (an unroutable request, dead letter or parked request) at WARN with its whole body,
/// personal data included. kycq reports a returned message itself, as a publish error.
const NEVER_LOGGED: &[&str] = &["lapin::returned_messages"];

/// Whether an event of `target` at `level` may be logged at all: kycq's own events at any
/// level the filter allows, a dependency's at [`DEPENDENCY_MAX_LEVEL`] or less verbose, except
/// [`NEVER_LOGGED`] targets.
pub fn may_log(target: &str, level: &Level) -> bool {
    let own = target == "kycq" || target.starts_with("kycq::");
    own || (*level <= DEPENDENCY_MAX_LEVEL && !NEVER_LOGGED.contains(&target))
}

/// Whether log lines carry ANSI colour codes: only when they go to a terminal — a file, a pipe
/// or a log collector gets plain text — and never while `NO_COLOR` is set to anything but the
/// empty string (no-color.org).
pub fn use_ansi(is_terminal: bool, no_color: Option<&OsStr>) -> bool {
    is_terminal && no_color.is_none_or(OsStr::is_empty)
}

/// Install the global subscriber. `RUST_LOG` wins over `level`, except that no dependency logs
/// below [`DEPENDENCY_MAX_LEVEL`] (see [`may_log`]). With `otlp`, kycq's spans are exported
/// too (see [`otlp`]; only spans, never log events, and whatever the log level says). Safe to
/// call more than once: only the first call installs anything.
///
/// Shut the returned [`Telemetry`] down before the process exits: it flushes the spans not yet
/// exported.
pub fn init_tracing(
    format: LogFormat,
    level: &str,
    otlp: Option<&otlp::Otlp>,
) -> anyhow::Result<Telemetry> {
    let filter = EnvFilter::try_from_default_env()
        .or_else(|_| EnvFilter::try_new(level))
        .unwrap_or_else(|_| EnvFilter::new("info"));
    let clamp = filter_fn(|meta| may_log(meta.target(), meta.level()));
    // The level filter is the log's own: the exporter sees kycq's spans at any log level.
    let logged = filter.and(clamp);
    let ansi = use_ansi(
        std::io::stderr().is_terminal(),
        std::env::var_os("NO_COLOR").as_deref(),
    );
    let fmt = tracing_subscriber::fmt::layer()
        .with_writer(std::io::stderr)
        .with_ansi(ansi);
    let provider = otlp.map(otlp::tracer_provider).transpose()?;
    let exported = provider.as_ref().map(exporting_layer);
    let registry = tracing_subscriber::registry().with(exported);
    let installed = match format {
        LogFormat::Json => registry
            .with(
                fmt.json()
                    .flatten_event(true)
                    .with_current_span(true)
                    .with_filter(logged),
            )
            .try_init(),
        LogFormat::Pretty => registry.with(fmt.compact().with_filter(logged)).try_init(),
    };
    Ok(Telemetry {
        // Another subscriber was installed first (embedding, tests): nothing of ours exports.
        provider: installed.ok().and(provider),
    })
}

/// The layer that hands kycq's spans (only those: see [`otlp::exported`]) to `provider`.
///
/// Its filter asks about every span again ("sometimes", never "always"): tracing-subscriber
/// keeps a per-layer filter's answer in a thread-local until the next span or event, and a
/// dependency's `tracing::enabled!` check (sqlx makes one before every query) that the log
/// accepts and this filter refuses would otherwise leave "refused" there for the next span
/// whose callsite is "always" enabled — which then never reaches the exporter.
fn exporting_layer<S>(provider: &opentelemetry_sdk::trace::SdkTracerProvider) -> impl Layer<S>
where
    S: tracing::Subscriber + for<'a> tracing_subscriber::registry::LookupSpan<'a>,
{
    use opentelemetry::trace::TracerProvider as _;
    let exported =
        |meta: &tracing::Metadata<'_>| otlp::exported(meta.target(), meta.level(), meta.is_span());
    let filter = tracing_subscriber::filter::dynamic_filter_fn(move |meta, _| exported(meta))
        .with_callsite_filter(move |meta| {
            if exported(meta) {
                tracing::subscriber::Interest::sometimes()
            } else {
                tracing::subscriber::Interest::never()
            }
        });
    tracing_opentelemetry::layer()
        .with_tracer(provider.tracer("kycq"))
        .with_filter(filter)
}

/// What [`init_tracing`] installed that needs shutting down: the OTLP exporter, if any.
#[must_use = "shut it down before exiting, or spans not yet exported are lost"]
pub struct Telemetry {
    provider: Option<opentelemetry_sdk::trace::SdkTracerProvider>,
}

impl Telemetry {
    /// Whether spans are exported.
    pub fn exporting(&self) -> bool {
        self.provider.is_some()
    }

    /// Export the spans not exported yet (for at most [`otlp::SHUTDOWN_TIMEOUT`]: an
    /// unreachable collector never holds up the exit) and stop the exporter.
    pub async fn shutdown(mut self) {
        if let Some(p) = self.provider.take() {
            // Blocking (it joins the exporter's thread): off the async workers.
            let _ = tokio::task::spawn_blocking(move || {
                if let Err(e) = p.shutdown_with_timeout(otlp::SHUTDOWN_TIMEOUT) {
                    tracing::warn!(error = %e, "exporting the last spans failed");
                }
            })
            .await;
        }
    }
}

/// Continue the trace a request message names (or start a new one) in `span`, the request's
/// span, and say what the messages kycq publishes for it carry: the same trace id, `span`'s own
/// id as the parent, the incoming `tracestate` passed on.
///
/// When spans are exported, `span` is the OpenTelemetry span whose parent is the incoming one
/// and the ids are its own. Otherwise nothing is recorded, and the context is propagated all
/// the same: a fresh span id (and a fresh trace id when none came in), the incoming flags kept —
/// a trace is never broken because this worker does not export.
///
/// Records the trace id on `span` (`trace_id`), so the logs of a request name its trace.
pub fn continue_trace(span: &tracing::Span, incoming: Option<&Incoming>) -> Outgoing {
    let parent = match incoming {
        Some(i) => opentelemetry::Context::new().with_remote_span_context(SpanContext::new(
            TraceId::from_bytes(i.parent.trace_id),
            SpanId::from_bytes(i.parent.span_id),
            TraceFlags::new(i.parent.flags),
            true,
            i.state
                .as_deref()
                .and_then(|s| s.parse::<TraceState>().ok())
                .unwrap_or_default(),
        )),
        // A new trace: never a child of whatever happens to be current.
        None => opentelemetry::Context::new(),
    };
    let exported = span
        .set_parent(parent)
        .ok()
        .map(|()| span.context().span().span_context().clone())
        .filter(SpanContext::is_valid);
    let traceparent = match (exported, incoming) {
        (Some(sc), _) => TraceParent {
            trace_id: sc.trace_id().to_bytes(),
            span_id: sc.span_id().to_bytes(),
            flags: sc.trace_flags().to_u8(),
        },
        (None, Some(i)) => i.parent.child(random_id()),
        (None, None) => TraceParent {
            trace_id: random_id(),
            span_id: random_id(),
            flags: 0,
        },
    };
    span.record("trace_id", traceparent.trace_id_hex());
    Outgoing {
        parent: traceparent,
        state: incoming.and_then(|i| i.state.clone()),
    }
}

/// A random id, never all zero (Trace Context: an all-zero id is invalid).
fn random_id<const N: usize>() -> [u8; N] {
    loop {
        let id: [u8; N] = rand::random();
        if id != [0; N] {
            return id;
        }
    }
}

/// The span of one provider call, a child of the request's span. Its attributes say which
/// call it is and, once [`record_provider_reply`] ran, how it went — never a word of the
/// request's subject (name, ID number, mobile) nor the vendor's text.
pub fn provider_call_span(
    provider: &'static str,
    action: &str,
    attempt: u32,
    call_id: i64,
) -> tracing::Span {
    tracing::info_span!(
        "provider.call",
        provider,
        action,
        attempt,
        call_id,
        outcome = tracing::field::Empty,
        billed = tracing::field::Empty,
        http_status = tracing::field::Empty,
        vendor_code = tracing::field::Empty,
        vendor_request_id = tracing::field::Empty,
    )
}

/// Record how a provider call went on its span (see [`provider_call_span`]).
pub fn record_provider_reply(span: &tracing::Span, reply: &ProviderReply) {
    span.record("outcome", reply.classification.class.as_str());
    span.record("billed", reply.classification.billed.as_str());
    if let Some(s) = reply.http_status {
        span.record("http_status", s);
    }
    if let Some(c) = &reply.provider_code {
        span.record("vendor_code", c.as_str());
    }
    if let Some(id) = &reply.provider_request_id {
        span.record("vendor_request_id", id.as_str());
    }
}

static PROMETHEUS: OnceLock<PrometheusHandle> = OnceLock::new();

/// The process-wide Prometheus recorder (installed on first use).
pub fn metrics_handle() -> &'static PrometheusHandle {
    PROMETHEUS.get_or_init(|| {
        let builder = PrometheusBuilder::new()
            .set_buckets(&[
                0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
            ])
            .expect("static buckets");
        let recorder = builder.build_recorder();
        let handle = recorder.handle();
        // Another recorder may already be installed (embedding); then ours only renders empty.
        let _ = metrics::set_global_recorder(recorder);
        handle
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::{Arc, Mutex};

    /// Every span that ended, in order.
    #[derive(Clone, Debug, Default)]
    struct Ended(Arc<Mutex<Vec<opentelemetry_sdk::trace::SpanData>>>);

    impl opentelemetry_sdk::trace::SpanProcessor for Ended {
        fn on_start(&self, _: &mut opentelemetry_sdk::trace::Span, _: &opentelemetry::Context) {}
        fn on_end(&self, span: opentelemetry_sdk::trace::SpanData) {
            self.0.lock().unwrap().push(span);
        }
        fn force_flush(&self) -> opentelemetry_sdk::error::OTelSdkResult {
            Ok(())
        }
        fn shutdown_with_timeout(
            &self,
            _: std::time::Duration,
        ) -> opentelemetry_sdk::error::OTelSdkResult {
            Ok(())
        }
    }

    const CALLER: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

    /// The request's span and a provider call in it, as the worker makes them; what ended.
    fn one_request(
        incoming: Option<Incoming>,
        exporting: bool,
    ) -> (Outgoing, Vec<opentelemetry_sdk::trace::SpanData>) {
        let ended = Ended::default();
        let provider = opentelemetry_sdk::trace::SdkTracerProvider::builder()
            .with_span_processor(ended.clone())
            .with_sampler(opentelemetry_sdk::trace::Sampler::ParentBased(Box::new(
                opentelemetry_sdk::trace::Sampler::AlwaysOn,
            )))
            .build();
        let run = || {
            let span = tracing::info_span!(
                "check",
                request_id = tracing::field::Empty,
                trace_id = tracing::field::Empty
            );
            let out = continue_trace(&span, incoming.as_ref());
            span.in_scope(|| {
                let call = provider_call_span("tencent", "PhoneVerification", 1, 7);
                call.in_scope(|| {});
                let mut reply = ProviderReply::transport(
                    crate::check::Classification::TRANSIENT,
                    Some(503),
                    "unavailable",
                );
                reply.provider_code = Some("ResourceUnavailable".into());
                record_provider_reply(&call, &reply);
            });
            out
        };
        let out = if exporting {
            let logged = EnvFilter::new("debug,lapin=warn,sqlx=warn")
                .and(filter_fn(|meta| may_log(meta.target(), meta.level())));
            let subscriber = tracing_subscriber::registry()
                .with(Some(exporting_layer(&provider)))
                .with(
                    tracing_subscriber::fmt::layer()
                        .with_test_writer()
                        .compact()
                        .with_filter(logged),
                );
            tracing::subscriber::with_default(subscriber, run)
        } else {
            tracing::subscriber::with_default(tracing_subscriber::registry(), run)
        };
        let spans = ended.0.lock().unwrap().clone();
        (out, spans)
    }

    fn attribute(s: &opentelemetry_sdk::trace::SpanData, key: &str) -> Option<String> {
        s.attributes
            .iter()
            .find(|kv| kv.key.as_str() == key)
            .map(|kv| kv.value.to_string())
    }

    #[test]
    fn the_request_span_continues_the_callers_trace_and_provider_calls_are_its_children() {
        let incoming = Incoming::from_values(Some(CALLER), Some("rojo=00f067aa0ba902b7"));
        let (out, spans) = one_request(incoming, true);
        let names: Vec<&str> = spans.iter().map(|s| s.name.as_ref()).collect();
        assert_eq!(names, ["provider.call", "check"]);
        let (call, check) = (&spans[0], &spans[1]);
        let caller = TraceParent::parse(CALLER).unwrap();
        assert_eq!(check.span_context.trace_id().to_bytes(), caller.trace_id);
        assert_eq!(check.parent_span_id.to_bytes(), caller.span_id);
        assert!(check.parent_span_is_remote);
        assert_eq!(call.span_context.trace_id(), check.span_context.trace_id());
        assert_eq!(call.parent_span_id, check.span_context.span_id());
        // What is propagated names the request's span.
        assert_eq!(out.parent.trace_id, caller.trace_id);
        assert_eq!(out.parent.span_id, check.span_context.span_id().to_bytes());
        assert!(out.parent.sampled());
        assert_eq!(out.state.as_deref(), Some("rojo=00f067aa0ba902b7"));
        assert_eq!(
            attribute(check, "trace_id").as_deref(),
            Some("4bf92f3577b34da6a3ce929d0e0e4736")
        );
        for (key, value) in [
            ("provider", "tencent"),
            ("action", "PhoneVerification"),
            ("attempt", "1"),
            ("call_id", "7"),
            ("outcome", "transient"),
            ("billed", "no"),
            ("http_status", "503"),
            ("vendor_code", "ResourceUnavailable"),
        ] {
            assert_eq!(attribute(call, key).as_deref(), Some(value), "{key}");
        }
    }

    #[test]
    fn a_dependencys_enabled_check_never_hides_the_next_span_from_the_exporter() {
        // sqlx asks `tracing::enabled!` before every query: the log's filter says yes, the
        // exporter's no. The worker's subscriber is the global one (a scoped one makes every
        // callsite "sometimes", which hides the problem): this is the only test that sets it.
        let ended = Ended::default();
        let provider = opentelemetry_sdk::trace::SdkTracerProvider::builder()
            .with_span_processor(ended.clone())
            .build();
        let logged = EnvFilter::new("debug,sqlx=info")
            .and(filter_fn(|meta| may_log(meta.target(), meta.level())));
        tracing_subscriber::registry()
            .with(Some(exporting_layer(&provider)))
            .with(
                tracing_subscriber::fmt::layer()
                    .with_test_writer()
                    .with_filter(logged),
            )
            .try_init()
            .expect("no other test sets the global subscriber");
        let _ = tracing::enabled!(target: "sqlx::query", tracing::Level::INFO);
        let span = tracing::info_span!("check", trace_id = tracing::field::Empty);
        let out = continue_trace(&span, Incoming::from_values(Some(CALLER), None).as_ref());
        span.in_scope(|| {
            let _ = tracing::enabled!(target: "sqlx::query", tracing::Level::INFO);
            let call = provider_call_span("tencent", "PhoneVerification", 1, 7);
            call.in_scope(|| {});
        });
        drop(span);
        // Only this trace's spans: other tests' threads may log through the global subscriber.
        let caller = TraceParent::parse(CALLER).unwrap();
        let spans: Vec<_> = ended
            .0
            .lock()
            .unwrap()
            .iter()
            .filter(|s| s.span_context.trace_id().to_bytes() == caller.trace_id)
            .cloned()
            .collect();
        let names: Vec<&str> = spans.iter().map(|s| s.name.as_ref()).collect();
        assert_eq!(names, ["provider.call", "check"]);
        assert_eq!(spans[1].parent_span_id.to_bytes(), caller.span_id);
        assert_eq!(spans[0].parent_span_id, spans[1].span_context.span_id());
        assert_eq!(
            out.parent.span_id,
            spans[1].span_context.span_id().to_bytes()
        );
    }

    #[test]
    fn an_unsampled_caller_is_followed_and_no_caller_starts_a_new_trace() {
        let unsampled = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00";
        let (out, spans) = one_request(Incoming::from_values(Some(unsampled), None), true);
        assert!(spans.is_empty(), "not recorded: {spans:?}");
        assert_eq!(
            out.parent.trace_id_hex(),
            "4bf92f3577b34da6a3ce929d0e0e4736"
        );
        assert!(!out.parent.sampled());
        let (out, spans) = one_request(None, true);
        assert_eq!(spans.len(), 2);
        assert_eq!(
            out.parent.trace_id,
            spans[1].span_context.trace_id().to_bytes()
        );
        assert_eq!(spans[1].parent_span_id, SpanId::INVALID);
        assert_eq!(out.state, None);
    }

    #[test]
    fn without_an_exporter_the_context_is_propagated_all_the_same() {
        let caller = TraceParent::parse(CALLER).unwrap();
        let (out, spans) = one_request(Incoming::from_values(Some(CALLER), Some("a=b")), false);
        assert!(spans.is_empty());
        assert_eq!(out.parent.trace_id, caller.trace_id);
        assert_ne!(out.parent.span_id, caller.span_id);
        assert_ne!(out.parent.span_id, [0; 8]);
        assert_eq!(out.parent.flags, caller.flags);
        assert_eq!(out.state.as_deref(), Some("a=b"));
        let (fresh, _) = one_request(None, false);
        assert_ne!(fresh.parent.trace_id, [0; 16]);
        assert_eq!(fresh.parent.flags, 0);
    }

    #[test]
    fn colours_only_on_a_terminal_and_never_with_no_color() {
        assert!(use_ansi(true, None));
        assert!(use_ansi(true, Some(OsStr::new(""))));
        assert!(!use_ansi(true, Some(OsStr::new("1"))));
        assert!(!use_ansi(false, None));
        assert!(!use_ansi(false, Some(OsStr::new(""))));
    }

    #[test]
    fn dependencies_never_log_below_info_whatever_the_filter() {
        for target in [
            "lapin::channel",
            "amq_protocol::frame",
            "pinky_swear",
            "sqlx::query",
            "hyper",
            "reqwest::connect",
        ] {
            assert!(!may_log(target, &Level::TRACE), "{target}");
            assert!(!may_log(target, &Level::DEBUG), "{target}");
            assert!(may_log(target, &Level::INFO), "{target}");
            assert!(may_log(target, &Level::WARN), "{target}");
        }
        for target in ["kycq", "kycq::worker::process"] {
            assert!(may_log(target, &Level::TRACE), "{target}");
        }
        // A crate whose name merely starts with kycq is a dependency.
        assert!(!may_log("kycqx", &Level::DEBUG));
        // lapin's returned messages carry the whole body: never logged.
        assert!(!may_log("lapin::returned_messages", &Level::WARN));
        assert!(!may_log("lapin::returned_messages", &Level::ERROR));
    }
}
