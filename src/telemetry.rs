//! Telemetry: the tracing subscriber (pretty or JSON, to stderr) and the Prometheus recorder.

use std::ffi::OsStr;
use std::io::IsTerminal;
use std::sync::OnceLock;

use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};
use tracing::Level;
use tracing_subscriber::filter::filter_fn;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{EnvFilter, Layer};

use crate::configuration::LogFormat;

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
/// below [`DEPENDENCY_MAX_LEVEL`] (see [`may_log`]). Safe to call more than once.
pub fn init_tracing(format: LogFormat, level: &str) {
    let filter = EnvFilter::try_from_default_env()
        .or_else(|_| EnvFilter::try_new(level))
        .unwrap_or_else(|_| EnvFilter::new("info"));
    let clamp = filter_fn(|meta| may_log(meta.target(), meta.level()));
    let ansi = use_ansi(
        std::io::stderr().is_terminal(),
        std::env::var_os("NO_COLOR").as_deref(),
    );
    let fmt = tracing_subscriber::fmt::layer()
        .with_writer(std::io::stderr)
        .with_ansi(ansi);
    let registry = tracing_subscriber::registry().with(filter);
    let _ = match format {
        LogFormat::Json => registry
            .with(
                fmt.json()
                    .flatten_event(true)
                    .with_current_span(true)
                    .with_filter(clamp),
            )
            .try_init(),
        LogFormat::Pretty => registry.with(fmt.compact().with_filter(clamp)).try_init(),
    };
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
