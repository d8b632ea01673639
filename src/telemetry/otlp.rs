//! OpenTelemetry export of the worker's spans over OTLP/HTTP
//! (<https://opentelemetry.io/docs/specs/otlp/#otlphttp>), switched on by
//! `telemetry.otlp_endpoint`.
//!
//! Spans go to a batch processor on a thread of its own, which sends them every few seconds
//! (OpenTelemetry's defaults: a batch every 5 s or 512 spans, at most 2048 waiting — more are
//! dropped, never waited for). A slow or unreachable collector therefore never slows a check
//! or fails one: its spans are lost, and the exporter logs the failure.
//!
//! Only kycq's own spans are exported ([`exported`]): the request's span (`check`) and its
//! provider calls (`provider.call`), never a log event — an event's fields are what the logs
//! hold, masked for a log reader, and do not belong in a trace store.

use std::time::Duration;

use opentelemetry_otlp::{Protocol, WithExportConfig};
use opentelemetry_sdk::trace::{Sampler, SdkTracerProvider};
use opentelemetry_sdk::Resource;

use crate::configuration::{OtlpProtocol, TelemetrySettings};

/// How long shutting the exporter down may take (the last spans' export included).
pub const SHUTDOWN_TIMEOUT: Duration = Duration::from_secs(5);

/// How long one export request may take before it is abandoned (its spans lost).
pub const EXPORT_TIMEOUT: Duration = Duration::from_secs(10);

/// Where and how spans are exported: the traces URL, the protocol, the service name.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Otlp {
    /// The OTLP/HTTP traces URL (`…/v1/traces`).
    pub traces_url: url::Url,
    /// Protobuf or JSON.
    pub protocol: OtlpProtocol,
    /// `service.name` of every span.
    pub service_name: String,
}

impl Otlp {
    /// From the settings (already validated): None when `telemetry.otlp_endpoint` is empty.
    pub fn from_settings(t: &TelemetrySettings) -> Option<Otlp> {
        Some(Otlp {
            traces_url: t.traces_url().ok()??,
            protocol: t.otlp_protocol,
            service_name: t.service_name.clone(),
        })
    }
}

/// Whether a span or event goes to the exporter: kycq's own spans at `info` or above; no
/// event, no dependency's span.
pub fn exported(target: &str, level: &tracing::Level, is_span: bool) -> bool {
    let own = target == "kycq" || target.starts_with("kycq::");
    is_span && own && *level <= tracing::Level::INFO
}

/// The tracer provider: OTLP/HTTP to `otlp.traces_url`, batched, `service.name` set. Its sampler
/// follows the caller's decision (the `sampled` flag of the incoming `traceparent`) and samples
/// every new trace (OpenTelemetry's `parentbased_always_on`, the SDK default).
pub fn tracer_provider(otlp: &Otlp) -> anyhow::Result<SdkTracerProvider> {
    let protocol = match otlp.protocol {
        OtlpProtocol::HttpProtobuf => Protocol::HttpBinary,
        OtlpProtocol::HttpJson => Protocol::HttpJson,
    };
    // The exporter builds a blocking HTTP client (on a thread of its own); it is used by the
    // batch processor's thread, never on the async workers.
    let exporter = opentelemetry_otlp::SpanExporter::builder()
        .with_http()
        .with_protocol(protocol)
        .with_endpoint(otlp.traces_url.as_str())
        .with_timeout(EXPORT_TIMEOUT)
        .build()
        .map_err(|e| {
            crate::configuration::invalid(
                "telemetry.otlp_endpoint",
                format!("the OTLP exporter cannot be built: {e}"),
            )
        })?;
    let resource = Resource::builder()
        .with_service_name(otlp.service_name.clone())
        .with_attribute(opentelemetry::KeyValue::new(
            "service.version",
            env!("CARGO_PKG_VERSION"),
        ))
        .build();
    Ok(SdkTracerProvider::builder()
        .with_batch_exporter(exporter)
        .with_sampler(Sampler::ParentBased(Box::new(Sampler::AlwaysOn)))
        .with_resource(resource)
        .build())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_kycqs_own_spans_are_exported() {
        use tracing::Level;
        assert!(exported("kycq::telemetry", &Level::INFO, true));
        assert!(exported("kycq", &Level::WARN, true));
        // Log events never; debug spans and dependencies' spans never.
        assert!(!exported("kycq::worker::process", &Level::INFO, false));
        assert!(!exported("kycq::worker", &Level::DEBUG, true));
        assert!(!exported("sqlx::query", &Level::INFO, true));
        assert!(!exported("kycqx", &Level::INFO, true));
    }
}
