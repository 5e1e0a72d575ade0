//! Logging setup: one readable line per event for people (text), or one JSON object per
//! event for machines (`LOG_FORMAT=json`), filtered by `RUST_LOG` or a per-command default.

use tracing_subscriber::filter::{filter_fn, EnvFilter};
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::Layer;

/// Installs the global subscriber, writing to stderr.
pub fn init(format: &str, default_filter: &str) {
    // The level filter is global, not per layer: events below it are then switched off at
    // their call sites, and the `log` bridge's maximum level follows it, so libraries that
    // build log records only when asked (sqlx's statement log) never build them.
    let filter =
        EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default_filter));
    // Colours only for a person at a terminal, not in log files.
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let layer = tracing_subscriber::fmt::layer()
        .with_ansi(ansi)
        .with_writer(std::io::stderr);
    let layer = if format == "json" {
        layer.json().boxed()
    } else {
        // tracing-actix-web opens a span per request with a dozen OpenTelemetry fields; in
        // text, every line logged while handling a request would start with all of them.
        // JSON keeps them (machines read them); text leaves the span out.
        layer
            .with_filter(filter_fn(|meta| !is_request_span(meta)))
            .boxed()
    };
    tracing_subscriber::registry()
        .with(filter)
        .with(layer)
        .init();
}

fn is_request_span(meta: &tracing::Metadata<'_>) -> bool {
    meta.is_span()
        && meta.name() == "HTTP request"
        && meta.target().starts_with("tracing_actix_web")
}
