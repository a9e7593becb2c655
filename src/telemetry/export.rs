//! Where spans go: an OTLP exporter (gRPC or HTTP/protobuf) behind a batch processor on
//! Tokio, with the configured sampler and resource.

use opentelemetry::KeyValue;
use opentelemetry_otlp::{WithExportConfig as _, WithHttpConfig as _, WithTonicConfig as _};
use opentelemetry_sdk::trace::{Sampler, SdkTracerProvider};
use opentelemetry_sdk::Resource;

use super::config::{OtlpConfig, OtlpProtocol, SamplerChoice};
use super::TelemetryError;

pub(super) fn tracer_provider(otlp: &OtlpConfig) -> Result<SdkTracerProvider, TelemetryError> {
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
        .with_sampler(sampler(&otlp.sampler))
        .with_resource(resource.build())
        .build())
}

/// The SDK's sampler for the configured one.
fn sampler(choice: &SamplerChoice) -> Sampler {
    match *choice {
        SamplerChoice::AlwaysOn => Sampler::AlwaysOn,
        SamplerChoice::AlwaysOff => Sampler::AlwaysOff,
        SamplerChoice::TraceIdRatio(r) => Sampler::TraceIdRatioBased(r),
        SamplerChoice::ParentBasedAlwaysOn => Sampler::ParentBased(Box::new(Sampler::AlwaysOn)),
        SamplerChoice::ParentBasedAlwaysOff => Sampler::ParentBased(Box::new(Sampler::AlwaysOff)),
        SamplerChoice::ParentBasedTraceIdRatio(r) => {
            Sampler::ParentBased(Box::new(Sampler::TraceIdRatioBased(r)))
        }
    }
}
