//! Logs, traces and the audit log, set up once per process.
//!
//! Configuration comes from the standard `OTEL_*` variables, read here from a map so tests
//! can pass their own. The Rust SDK ignores `OTEL_SDK_DISABLED` and `OTEL_PROPAGATORS`, so
//! both are handled here. Tracing is on only when an OTLP endpoint is configured; when it is
//! off no layer wants spans, so creating one costs a cached callsite check.

use std::collections::HashMap;
use std::io::IsTerminal as _;
use std::time::Duration;

use opentelemetry::propagation::{Extractor, TextMapCompositePropagator, TextMapPropagator};
use opentelemetry::trace::{TraceContextExt as _, TracerProvider as _};
use opentelemetry::{Context, KeyValue};
use opentelemetry_otlp::{WithExportConfig as _, WithHttpConfig as _, WithTonicConfig as _};
use opentelemetry_sdk::trace::{Sampler, SdkTracerProvider};
use opentelemetry_sdk::Resource;
use tracing_appender::non_blocking::WorkerGuard;
use tracing_subscriber::filter::{filter_fn, EnvFilter, FilterExt as _, LevelFilter};
use tracing_subscriber::fmt::MakeWriter;
use tracing_subscriber::layer::SubscriberExt as _;
use tracing_subscriber::util::SubscriberInitExt as _;
use tracing_subscriber::Layer as _;

/// Where audit lines go, set once by [`init`]; until then (and in processes that install
/// no telemetry) lines are dropped.
type AuditSink = Box<dyn Fn(&[u8]) + Send + Sync>;
static AUDIT: std::sync::OnceLock<AuditSink> = std::sync::OnceLock::new();

/// Writes one audit line, with its newline, in one write (so lines from concurrent checks
/// never interleave). Straight to the writer rather than as a `tracing` event: the dispatch
/// and a layer's copy of the line cost more than rendering it (callgrind).
pub fn write_audit_line(line: &[u8]) {
    if let Some(write) = AUDIT.get() {
        write(line);
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OtlpProtocol {
    Grpc,
    HttpProtobuf,
}

/// Where and how spans are exported.
#[derive(Debug, Clone)]
pub struct OtlpConfig {
    pub endpoint: String,
    pub protocol: OtlpProtocol,
    /// `OTEL_EXPORTER_OTLP_HEADERS`: often an API token, so never printed.
    headers: HashMap<String, String>,
    pub timeout: Duration,
    pub sampler: SamplerChoice,
    pub service_name: String,
    pub resource_attributes: Vec<(String, String)>,
}

#[derive(Debug, Clone, PartialEq)]
pub enum SamplerChoice {
    AlwaysOn,
    AlwaysOff,
    TraceIdRatio(f64),
    ParentBasedAlwaysOn,
    ParentBasedAlwaysOff,
    ParentBasedTraceIdRatio(f64),
}

/// Which incoming context formats are read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Propagators {
    pub tracecontext: bool,
    pub baggage: bool,
    pub b3: bool,
}

#[derive(Debug, Clone)]
pub struct TelemetryConfig {
    /// `RUST_LOG`, default `info`.
    pub log_filter: String,
    /// `None` when tracing is off.
    pub otlp: Option<OtlpConfig>,
    pub propagators: Propagators,
}

impl TelemetryConfig {
    /// Reads the standard variables; every error is reported at once.
    pub fn from_env(vars: &HashMap<String, String>) -> Result<Self, Vec<String>> {
        let get = |name: &str| vars.get(name).map(|v| v.trim()).filter(|v| !v.is_empty());
        let mut errors = Vec::new();
        let log_filter = get("RUST_LOG").unwrap_or("info").to_owned();
        if EnvFilter::try_new(&log_filter).is_err() {
            errors.push(format!("RUST_LOG {log_filter:?} is not a valid filter"));
        }
        let propagators = parse_propagators(
            get("OTEL_PROPAGATORS").unwrap_or("tracecontext,baggage,b3,b3multi"),
            &mut errors,
        );

        let disabled = get("OTEL_SDK_DISABLED").is_some_and(|v| v.eq_ignore_ascii_case("true"));
        let exporter = get("OTEL_TRACES_EXPORTER").unwrap_or("otlp");
        if !matches!(exporter, "otlp" | "none") {
            errors.push(format!(
                "OTEL_TRACES_EXPORTER {exporter:?} is not supported (otlp or none)"
            ));
        }
        let protocol = match get("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL")
            .or(get("OTEL_EXPORTER_OTLP_PROTOCOL"))
            .unwrap_or("grpc")
        {
            "grpc" => Some(OtlpProtocol::Grpc),
            "http/protobuf" => Some(OtlpProtocol::HttpProtobuf),
            other => {
                errors.push(format!("OTEL_EXPORTER_OTLP_PROTOCOL {other:?} is not supported (grpc or http/protobuf)"));
                None
            }
        };
        // The signal-specific endpoint is used as is; the generic one gets the signal's path.
        let endpoint = match (
            get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"),
            get("OTEL_EXPORTER_OTLP_ENDPOINT"),
            protocol,
        ) {
            (Some(endpoint), _, _) => Some(endpoint.to_owned()),
            (None, Some(base), Some(OtlpProtocol::HttpProtobuf)) => {
                Some(format!("{}/v1/traces", base.trim_end_matches('/')))
            }
            (None, Some(base), _) => Some(base.to_owned()),
            (None, None, _) => None,
        };
        if let Some(endpoint) = &endpoint {
            if !(endpoint.starts_with("http://") || endpoint.starts_with("https://")) {
                errors.push(
                    "OTEL_EXPORTER_OTLP_ENDPOINT must start with http:// or https://".to_owned(),
                );
            }
        }
        let timeout =
            match get("OTEL_EXPORTER_OTLP_TRACES_TIMEOUT").or(get("OTEL_EXPORTER_OTLP_TIMEOUT")) {
                None => Duration::from_secs(10),
                Some(ms) => ms.parse().map(Duration::from_millis).unwrap_or_else(|_| {
                    errors.push(format!(
                        "OTEL_EXPORTER_OTLP_TIMEOUT {ms:?} is not milliseconds"
                    ));
                    Duration::from_secs(10)
                }),
            };
        let headers = parse_pairs(
            get("OTEL_EXPORTER_OTLP_TRACES_HEADERS")
                .or(get("OTEL_EXPORTER_OTLP_HEADERS"))
                .unwrap_or(""),
            "OTEL_EXPORTER_OTLP_HEADERS",
            &mut errors,
        );
        let resource_attributes = parse_pairs(
            get("OTEL_RESOURCE_ATTRIBUTES").unwrap_or(""),
            "OTEL_RESOURCE_ATTRIBUTES",
            &mut errors,
        )
        .into_iter()
        .collect();
        let sampler = parse_sampler(
            get("OTEL_TRACES_SAMPLER"),
            get("OTEL_TRACES_SAMPLER_ARG"),
            &mut errors,
        );
        if !errors.is_empty() {
            return Err(errors);
        }
        let otlp = match (disabled || exporter == "none", endpoint, protocol) {
            (false, Some(endpoint), Some(protocol)) => Some(OtlpConfig {
                endpoint,
                protocol,
                headers,
                timeout,
                sampler,
                service_name: get("OTEL_SERVICE_NAME")
                    .unwrap_or("redmine-authz")
                    .to_owned(),
                resource_attributes,
            }),
            _ => None,
        };
        Ok(Self {
            log_filter,
            otlp,
            propagators,
        })
    }

    /// One line for the start-up log (no headers: they may hold a token).
    pub fn summary(&self) -> String {
        match &self.otlp {
            Some(otlp) => format!(
                "tracing=otlp endpoint={} protocol={:?} sampler={:?} service={}",
                otlp.endpoint, otlp.protocol, otlp.sampler, otlp.service_name
            ),
            None => "tracing=off".to_owned(),
        }
    }
}

fn parse_propagators(list: &str, errors: &mut Vec<String>) -> Propagators {
    let mut propagators = Propagators {
        tracecontext: false,
        baggage: false,
        b3: false,
    };
    for name in list.split(',').map(str::trim).filter(|n| !n.is_empty()) {
        match name {
            "tracecontext" => propagators.tracecontext = true,
            "baggage" => propagators.baggage = true,
            "b3" | "b3multi" => propagators.b3 = true,
            "none" => {}
            other => errors.push(format!("OTEL_PROPAGATORS: {other:?} is not supported (tracecontext, baggage, b3, b3multi, none)")),
        }
    }
    propagators
}

/// `k=v,k2=v2` with percent-encoded values, as the OTel spec defines for headers/attributes.
fn parse_pairs(list: &str, variable: &str, errors: &mut Vec<String>) -> HashMap<String, String> {
    let mut pairs = HashMap::new();
    for item in list.split(',').map(str::trim).filter(|i| !i.is_empty()) {
        match item.split_once('=') {
            Some((key, value)) if !key.trim().is_empty() => {
                let value = percent_encoding::percent_decode_str(value.trim())
                    .decode_utf8_lossy()
                    .into_owned();
                pairs.insert(key.trim().to_owned(), value);
            }
            _ => errors.push(format!("{variable}: an entry is not key=value")),
        }
    }
    pairs
}

fn parse_sampler(name: Option<&str>, arg: Option<&str>, errors: &mut Vec<String>) -> SamplerChoice {
    let mut ratio = || match arg.map(str::parse::<f64>) {
        None => 1.0,
        Some(Ok(r)) if (0.0..=1.0).contains(&r) => r,
        Some(_) => {
            errors.push("OTEL_TRACES_SAMPLER_ARG must be a ratio from 0 to 1".to_owned());
            1.0
        }
    };
    match name.unwrap_or("parentbased_always_on") {
        "always_on" => SamplerChoice::AlwaysOn,
        "always_off" => SamplerChoice::AlwaysOff,
        "traceidratio" => SamplerChoice::TraceIdRatio(ratio()),
        "parentbased_always_on" => SamplerChoice::ParentBasedAlwaysOn,
        "parentbased_always_off" => SamplerChoice::ParentBasedAlwaysOff,
        "parentbased_traceidratio" => SamplerChoice::ParentBasedTraceIdRatio(ratio()),
        other => {
            errors.push(format!("OTEL_TRACES_SAMPLER {other:?} is not supported"));
            SamplerChoice::ParentBasedAlwaysOn
        }
    }
}

impl SamplerChoice {
    fn build(&self) -> Sampler {
        match *self {
            Self::AlwaysOn => Sampler::AlwaysOn,
            Self::AlwaysOff => Sampler::AlwaysOff,
            Self::TraceIdRatio(r) => Sampler::TraceIdRatioBased(r),
            Self::ParentBasedAlwaysOn => Sampler::ParentBased(Box::new(Sampler::AlwaysOn)),
            Self::ParentBasedAlwaysOff => Sampler::ParentBased(Box::new(Sampler::AlwaysOff)),
            Self::ParentBasedTraceIdRatio(r) => {
                Sampler::ParentBased(Box::new(Sampler::TraceIdRatioBased(r)))
            }
        }
    }
}

#[derive(Debug, thiserror::Error)]
#[error("cannot set up the OTLP exporter: {0}")]
pub struct TelemetryError(String);

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

/// [`init`] for the process: logs to standard error, audit lines to standard output.
///
/// Audit lines (JSON) go through a writer thread, so a Check never waits on the pipe.
/// Lossless: under back-pressure checks wait rather than drop lines. Buffered: the thread
/// flushes after each batch it drains, so a busy gate makes one write per batch instead of
/// one per line, and an idle one still writes each line at once.
pub fn init_stdio(config: &TelemetryConfig) -> Result<Telemetry, TelemetryError> {
    let (audit, audit_flush) = tracing_appender::non_blocking::NonBlockingBuilder::default()
        .lossy(false)
        .finish(std::io::BufWriter::with_capacity(
            64 * 1024,
            std::io::stdout(),
        ));
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
    opentelemetry::global::set_text_map_propagator(composite_propagator(&config.propagators));
    let mut layers = text_layers(config, log_writer);
    let provider = match &config.otlp {
        Some(otlp) => {
            let provider = tracer_provider(otlp)?;
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
    // Set once, as the subscriber is: a second `init` has already failed above.
    let _ = AUDIT.set(Box::new(move |line| {
        let _ = std::io::Write::write_all(&mut audit_writer.make_writer(), line);
    }));
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

fn tracer_provider(otlp: &OtlpConfig) -> Result<SdkTracerProvider, TelemetryError> {
    let exporter = match otlp.protocol {
        OtlpProtocol::Grpc => {
            let mut metadata = tonic::metadata::MetadataMap::new();
            for (key, value) in &otlp.headers {
                let key =
                    tonic::metadata::MetadataKey::from_bytes(key.to_ascii_lowercase().as_bytes())
                        .map_err(|_| TelemetryError("bad header name".into()))?;
                let value = value
                    .parse()
                    .map_err(|_| TelemetryError("bad header value".into()))?;
                metadata.insert(key, value);
            }
            opentelemetry_otlp::SpanExporter::builder()
                .with_tonic()
                .with_endpoint(&otlp.endpoint)
                .with_timeout(otlp.timeout)
                .with_metadata(metadata)
                .build()
        }
        OtlpProtocol::HttpProtobuf => opentelemetry_otlp::SpanExporter::builder()
            .with_http()
            .with_protocol(opentelemetry_otlp::Protocol::HttpBinary)
            .with_endpoint(&otlp.endpoint)
            .with_timeout(otlp.timeout)
            .with_headers(otlp.headers.clone())
            .build(),
    }
    .map_err(|e| TelemetryError(e.to_string()))?;
    // The exporters need Tokio's reactor: export from a Tokio task, not the SDK's own thread.
    let processor =
        opentelemetry_sdk::trace::span_processor_with_async_runtime::BatchSpanProcessor::builder(
            exporter,
            opentelemetry_sdk::runtime::Tokio,
        )
        .build();
    let mut resource = Resource::builder().with_service_name(otlp.service_name.clone());
    for (key, value) in &otlp.resource_attributes {
        resource = resource.with_attribute(KeyValue::new(key.clone(), value.clone()));
    }
    Ok(SdkTracerProvider::builder()
        .with_span_processor(processor)
        .with_sampler(otlp.sampler.build())
        .with_resource(resource.build())
        .build())
}

fn composite_propagator(propagators: &Propagators) -> TextMapCompositePropagator {
    let mut list: Vec<Box<dyn TextMapPropagator + Send + Sync>> = Vec::new();
    if propagators.tracecontext {
        list.push(Box::new(
            opentelemetry_sdk::propagation::TraceContextPropagator::new(),
        ));
    }
    if propagators.b3 {
        list.push(Box::new(B3Propagator));
    }
    if propagators.baggage {
        list.push(Box::new(
            opentelemetry_sdk::propagation::BaggagePropagator::new(),
        ));
    }
    TextMapCompositePropagator::new(list)
}

/// Reads Zipkin's B3 context, single (`b3`) or multi-header (`x-b3-*`), as Envoy and Istio
/// send it. Extraction only: the gate starts no outgoing calls that would carry it. (The
/// opentelemetry-zipkin crate, which had one, is deprecated.)
#[derive(Debug)]
struct B3Propagator;

impl B3Propagator {
    fn span_context(carrier: &dyn Extractor) -> Option<opentelemetry::trace::SpanContext> {
        use opentelemetry::trace::{SpanContext, SpanId, TraceFlags, TraceId, TraceState};
        let (trace_id, span_id, sampled) = match carrier.get("b3") {
            Some(single) => {
                let mut parts = single.split('-');
                (parts.next()?, parts.next()?, parts.next())
            }
            None => {
                let flags_debug = carrier.get("x-b3-flags") == Some("1");
                let sampled = if flags_debug {
                    Some("1")
                } else {
                    carrier.get("x-b3-sampled")
                };
                (
                    carrier.get("x-b3-traceid")?,
                    carrier.get("x-b3-spanid")?,
                    sampled,
                )
            }
        };
        let hex_ok = |s: &str, lens: &[usize]| {
            lens.contains(&s.len()) && s.bytes().all(|b| b.is_ascii_hexdigit())
        };
        if !hex_ok(trace_id, &[16, 32]) || !hex_ok(span_id, &[16]) {
            return None;
        }
        let trace_id = TraceId::from_hex(&format!("{trace_id:0>32}")).ok()?;
        let span_id = SpanId::from_hex(span_id).ok()?;
        // Absent means "deferred"; Envoy decides upstream, so follow it as sampled.
        let flags = match sampled {
            Some("0" | "false") => TraceFlags::default(),
            _ => TraceFlags::SAMPLED,
        };
        let context = SpanContext::new(trace_id, span_id, flags, true, TraceState::default());
        context.is_valid().then_some(context)
    }
}

impl TextMapPropagator for B3Propagator {
    fn inject_context(&self, _: &Context, _: &mut dyn opentelemetry::propagation::Injector) {}

    fn extract_with_context(&self, cx: &Context, extractor: &dyn Extractor) -> Context {
        match Self::span_context(extractor) {
            Some(remote) => cx.with_remote_span_context(remote),
            None => cx.clone(),
        }
    }

    fn fields(&self) -> opentelemetry::propagation::text_map_propagator::FieldIter<'_> {
        const FIELDS: [String; 0] = [];
        opentelemetry::propagation::text_map_propagator::FieldIter::new(&FIELDS)
    }
}

/// The caller's trace context: from the gRPC call's metadata, else from the request headers
/// Envoy forwarded in the CheckRequest.
pub fn parent_context(metadata: &dyn Extractor, forwarded: &dyn Extractor) -> Context {
    opentelemetry::global::get_text_map_propagator(|propagator| {
        let from_metadata = propagator.extract(metadata);
        if from_metadata.span().span_context().is_valid() {
            from_metadata
        } else {
            propagator.extract(forwarded)
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(pairs: &[(&str, &str)]) -> Result<TelemetryConfig, Vec<String>> {
        TelemetryConfig::from_env(
            &pairs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        )
    }

    #[test]
    fn off_without_an_endpoint_or_when_disabled() {
        assert!(config(&[]).unwrap().otlp.is_none());
        assert!(config(&[
            ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://c:4317"),
            ("OTEL_SDK_DISABLED", "true")
        ])
        .unwrap()
        .otlp
        .is_none());
        assert!(config(&[
            ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://c:4317"),
            ("OTEL_TRACES_EXPORTER", "none")
        ])
        .unwrap()
        .otlp
        .is_none());
        let on = config(&[("OTEL_EXPORTER_OTLP_ENDPOINT", "http://c:4317")])
            .unwrap()
            .otlp
            .unwrap();
        assert_eq!(
            (on.endpoint.as_str(), on.protocol, on.service_name.as_str()),
            ("http://c:4317", OtlpProtocol::Grpc, "redmine-authz")
        );
    }

    #[test]
    fn http_endpoint_gets_the_signal_path() {
        let on = config(&[
            ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://c:4318/"),
            ("OTEL_EXPORTER_OTLP_PROTOCOL", "http/protobuf"),
        ])
        .unwrap()
        .otlp
        .unwrap();
        assert_eq!(on.endpoint, "http://c:4318/v1/traces");
        let specific = config(&[
            ("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "http://c:4318/custom"),
            ("OTEL_EXPORTER_OTLP_PROTOCOL", "http/protobuf"),
        ])
        .unwrap()
        .otlp
        .unwrap();
        assert_eq!(specific.endpoint, "http://c:4318/custom");
    }

    #[test]
    fn sampler_resource_and_propagators() {
        let on = config(&[
            ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://c:4317"),
            ("OTEL_TRACES_SAMPLER", "parentbased_traceidratio"),
            ("OTEL_TRACES_SAMPLER_ARG", "0.25"),
            ("OTEL_SERVICE_NAME", "gate"),
            (
                "OTEL_RESOURCE_ATTRIBUTES",
                "deployment.environment=prod,team=a%20b",
            ),
            ("OTEL_PROPAGATORS", "b3"),
        ])
        .unwrap();
        let otlp = on.otlp.unwrap();
        assert_eq!(otlp.sampler, SamplerChoice::ParentBasedTraceIdRatio(0.25));
        assert_eq!(otlp.service_name, "gate");
        assert!(otlp
            .resource_attributes
            .contains(&("team".to_owned(), "a b".to_owned())));
        assert_eq!(
            on.propagators,
            Propagators {
                tracecontext: false,
                baggage: false,
                b3: true
            }
        );
    }

    struct Map(HashMap<&'static str, &'static str>);

    impl Extractor for Map {
        fn get(&self, key: &str) -> Option<&str> {
            self.0.get(key).copied()
        }
        fn keys(&self) -> Vec<&str> {
            self.0.keys().copied().collect()
        }
    }

    fn b3(pairs: &[(&'static str, &'static str)]) -> Option<(String, String, bool)> {
        let context = B3Propagator::span_context(&Map(pairs.iter().copied().collect()))?;
        Some((
            context.trace_id().to_string(),
            context.span_id().to_string(),
            context.is_sampled(),
        ))
    }

    #[test]
    fn b3_single_and_multi_header() {
        let single = b3(&[(
            "b3",
            "80f198ee56343ba864fe8b2a57d3eff7-e457b5a2e4d86bd1-1-05e3ac9a4f6e3b90",
        )])
        .unwrap();
        assert_eq!(
            single,
            (
                "80f198ee56343ba864fe8b2a57d3eff7".into(),
                "e457b5a2e4d86bd1".into(),
                true
            )
        );
        let short = b3(&[
            ("x-b3-traceid", "64fe8b2a57d3eff7"),
            ("x-b3-spanid", "e457b5a2e4d86bd1"),
            ("x-b3-sampled", "0"),
        ])
        .unwrap();
        assert_eq!(
            short,
            (
                "000000000000000064fe8b2a57d3eff7".into(),
                "e457b5a2e4d86bd1".into(),
                false
            )
        );
        assert!(b3(&[("b3", "1")]).is_none());
        assert!(b3(&[("b3", "zz-yy-1")]).is_none());
        assert!(b3(&[
            ("x-b3-traceid", "00000000000000000000000000000000"),
            ("x-b3-spanid", "e457b5a2e4d86bd1")
        ])
        .is_none());
    }

    #[test]
    fn with_tracing_off_no_span_is_created() {
        use tracing_subscriber::layer::SubscriberExt as _;
        let config = config(&[("RUST_LOG", "trace")]).unwrap();
        let subscriber = tracing_subscriber::registry().with(text_layers(&config, std::io::sink));
        tracing::subscriber::with_default(subscriber, || {
            assert!(crate::observe::check_span().is_disabled());
            assert!(tracing::info_span!("sql", db.system = "postgresql").is_disabled());
            // Events still reach the logs.
            assert!(tracing::event_enabled!(tracing::Level::INFO));
        });
    }

    #[test]
    fn every_error_at_once_and_no_header_values() {
        let errors = config(&[
            ("OTEL_EXPORTER_OTLP_ENDPOINT", "c:4317"),
            ("OTEL_EXPORTER_OTLP_PROTOCOL", "http/json"),
            ("OTEL_TRACES_SAMPLER", "sometimes"),
            ("OTEL_PROPAGATORS", "jaeger"),
            ("OTEL_EXPORTER_OTLP_HEADERS", "authorization"),
        ])
        .unwrap_err();
        assert_eq!(errors.len(), 5, "{errors:?}");
        let with_token = config(&[
            ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://c:4317"),
            ("OTEL_EXPORTER_OTLP_HEADERS", "x-token=s3cr3t"),
        ])
        .unwrap();
        assert!(!with_token.summary().contains("s3cr3t"));
        assert!(!format!("{:?}", with_token.otlp.unwrap().endpoint).contains("s3cr3t"));
    }
}
