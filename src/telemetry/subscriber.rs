//! The process-wide `tracing` subscriber: text logs, and spans to OTLP when configured.
//! When tracing is off no layer wants spans, so creating one costs a cached callsite check.

use std::io::IsTerminal as _;

use opentelemetry::trace::TracerProvider as _;
use opentelemetry_sdk::trace::SdkTracerProvider;
use tracing_appender::non_blocking::WorkerGuard;
use tracing_subscriber::filter::{filter_fn, EnvFilter, FilterExt as _, LevelFilter};
use tracing_subscriber::fmt::MakeWriter;
use tracing_subscriber::layer::SubscriberExt as _;
use tracing_subscriber::util::SubscriberInitExt as _;
use tracing_subscriber::Layer as _;

use super::{audit, export, propagation, TelemetryConfig};

#[derive(Debug, thiserror::Error)]
#[error("cannot set up the OTLP exporter: {0}")]
pub struct TelemetryError(pub(super) String);

/// Keeps the tracer provider alive; `shutdown` flushes what is buffered.
pub struct Telemetry {
    provider: Option<SdkTracerProvider>,
    /// The audit writer thread of [`init_stdio`]: dropping it writes out what is queued.
    audit_flush: Option<WorkerGuard>,
}

impl Telemetry {
    /// Exports buffered spans now.
    pub fn flush(&self) {
        if let Some(provider) = &self.provider {
            let _ = provider.force_flush();
        }
    }

    /// Exports buffered spans, then writes out queued audit lines.
    pub fn shutdown(self) {
        if let Some(provider) = self.provider {
            let _ = provider.shutdown();
        }
        drop(self.audit_flush);
    }
}

/// [`init`] for the process: logs to standard error, audit lines to standard output
/// (`audit::to_stdout`: a buffered, lossless writer thread).
pub fn init_stdio(config: &TelemetryConfig) -> Result<Telemetry, TelemetryError> {
    let (audit, audit_flush) = audit::to_stdout();
    let mut telemetry = init(config, std::io::stderr, audit)?;
    telemetry.audit_flush = Some(audit_flush);
    Ok(telemetry)
}

/// Installs the global subscriber: logs to `log_writer` (text), audit lines to
/// `audit_writer` (JSON), spans to OTLP when configured. Needs a Tokio runtime.
pub fn init<L, A>(
    config: &TelemetryConfig,
    log_writer: L,
    audit_writer: A,
) -> Result<Telemetry, TelemetryError>
where
    L: for<'w> MakeWriter<'w> + Send + Sync + 'static,
    A: for<'w> MakeWriter<'w> + Send + Sync + 'static,
{
    opentelemetry::global::set_text_map_propagator(propagation::composite_propagator(
        &config.propagators,
    ));
    let mut layers = text_layers(config, log_writer);
    let provider = match &config.otlp {
        Some(otlp) => {
            let provider = export::tracer_provider(otlp)?;
            let tracer = provider.tracer("redmine-authz");
            // Only this crate's spans (the check and its SQL/Redis children) are exported.
            layers.push(Box::new(
                tracing_opentelemetry::layer()
                    .with_tracer(tracer)
                    .with_filter(
                        filter_fn(|meta| {
                            meta.is_span() && meta.target().starts_with("redmine_authz")
                        })
                        // Our spans are all info. The hint keeps the process-wide maximum
                        // level at the log filter's: without it every trace-level span in h2
                        // went through the filters.
                        .with_max_level_hint(LevelFilter::INFO),
                    ),
            ));
            Some(provider)
        }
        None => None,
    };
    tracing_subscriber::registry()
        .with(layers)
        .try_init()
        .map_err(|e| TelemetryError(e.to_string()))?;
    audit::install(audit_writer);
    Ok(Telemetry {
        provider,
        audit_flush: None,
    })
}

type BoxedLayer = Box<dyn tracing_subscriber::Layer<tracing_subscriber::Registry> + Send + Sync>;

/// Logs (events only, text). They want no spans, so with tracing off no span is ever created.
fn text_layers<L>(config: &TelemetryConfig, log_writer: L) -> Vec<BoxedLayer>
where
    L: for<'w> MakeWriter<'w> + Send + Sync + 'static,
{
    let logs = tracing_subscriber::fmt::layer()
        .with_writer(log_writer)
        .with_ansi(std::io::stderr().is_terminal())
        .with_filter(EnvFilter::new(&config.log_filter).and(filter_fn(|meta| meta.is_event())));
    vec![Box::new(logs)]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn with_tracing_off_no_span_is_created() {
        use tracing_subscriber::layer::SubscriberExt as _;
        let vars = [("RUST_LOG".to_owned(), "trace".to_owned())].into();
        let config = TelemetryConfig::from_env(&vars).unwrap();
        let subscriber = tracing_subscriber::registry().with(text_layers(&config, std::io::sink));
        tracing::subscriber::with_default(subscriber, || {
            assert!(crate::observe::check_span().is_disabled());
            assert!(tracing::info_span!("sql", db.system = "postgresql").is_disabled());
            // Events still reach the logs.
            assert!(tracing::event_enabled!(tracing::Level::INFO));
        });
    }
}
