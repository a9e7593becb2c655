//! Logs, traces and the audit log, set up once per process.
//!
//! - `config`: what is asked for, from the standard `OTEL_*` variables and `RUST_LOG`;
//! - `subscriber`: the `tracing` subscriber (text logs; spans to `export` when configured);
//! - `export`: the OTLP exporter, sampler and resource;
//! - `propagation`: whose trace a Check joins (W3C, baggage, B3);
//! - `audit`: one JSON line per decision, on its own writer.

mod audit;
mod config;
mod export;
mod propagation;
mod subscriber;

pub use audit::write_audit_line;
pub use config::{OtlpConfig, OtlpProtocol, Propagators, SamplerChoice, TelemetryConfig};
pub use propagation::parent_context;
pub use subscriber::{init, init_stdio, Telemetry, TelemetryError};
