//! What telemetry is asked for: the standard `OTEL_*` variables and `RUST_LOG`, read from a
//! map so tests can pass their own. The Rust SDK ignores `OTEL_SDK_DISABLED` and
//! `OTEL_PROPAGATORS`, so both are handled here. Every error is reported at once.

use std::collections::HashMap;
use std::time::Duration;

use tracing_subscriber::filter::EnvFilter;

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
    pub(super) headers: HashMap<String, String>,
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
