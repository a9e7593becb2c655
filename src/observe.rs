//! What each decision leaves behind: span attributes, metrics and the audit line. Nothing
//! here sees a credential: only the decision, the identity and request metadata.

use std::sync::Arc;
use std::time::Duration;

use opentelemetry::trace::TraceContextExt as _;
use tracing::Span;
use tracing_opentelemetry::OpenTelemetrySpanExt as _;

use crate::auth::{Decision, Reason, Request};
use crate::cache::Tier;
use crate::metrics::Metrics;
use crate::telemetry;

/// Which decisions get an audit line.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum AuditMode {
    #[default]
    All,
    DenyOnly,
    Off,
}

pub struct Observer {
    metrics: Arc<Metrics>,
    audit: AuditMode,
}

/// A new `authz.check` server span; fields are filled in as the decision is made.
pub fn check_span() -> Span {
    tracing::info_span!(
        "authz.check",
        otel.kind = "server",
        rpc.system = "grpc",
        rpc.service = "envoy.service.auth.v3.Authorization",
        rpc.method = "Check",
        rpc.grpc.status_code = 0,
        authz.decision = tracing::field::Empty,
        authz.reason = tracing::field::Empty,
        authz.method = tracing::field::Empty,
        authz.cache = tracing::field::Empty,
        enduser.id = tracing::field::Empty,
        otel.status_code = tracing::field::Empty,
        otel.status_description = tracing::field::Empty,
    )
}

impl Observer {
    pub fn new(metrics: Arc<Metrics>, audit: AuditMode) -> Self {
        Self { metrics, audit }
    }

    pub fn record(
        &self,
        decision: &Decision,
        request: &Request,
        span: &Span,
        tier: Tier,
        elapsed: Duration,
    ) {
        self.metrics.observe(decision, elapsed);
        let reason = decision.reason();
        let (outcome, identity) = match decision {
            Decision::Allow(allow) => ("allow", allow.identity.as_ref()),
            Decision::Deny(_) => ("deny", None),
        };
        let method = identity.map(|i| i.method.as_str());
        span.record("authz.decision", outcome);
        span.record("authz.reason", reason.as_str());
        span.record("authz.cache", tier.as_str());
        if let Some(method) = method {
            span.record("authz.method", method);
        }
        if let Some(identity) = identity {
            span.record("enduser.id", identity.user_id);
        }
        // A deny is an answer; not being able to decide is the error.
        if is_failure(reason) {
            span.record("otel.status_code", "ERROR");
            span.record("otel.status_description", reason.as_str());
        }
        if self.audit == AuditMode::Off || (self.audit == AuditMode::DenyOnly && outcome == "allow")
        {
            return;
        }
        let trace_id = (!span.is_disabled())
            .then(|| span.context().span().span_context().clone())
            .filter(|context| context.is_valid())
            .map(|context| context.trace_id().to_string());
        let status = match decision {
            Decision::Allow(_) => 200,
            Decision::Deny(deny) => deny.status.http_code(),
        };
        let mut line = JsonLine::new();
        line.timestamp(chrono::Utc::now());
        line.fixed("level", "INFO");
        line.fixed("message", "decision");
        if let Some(request_id) = request.headers.get_all("x-request-id").next() {
            line.text("request_id", request_id);
        }
        if let Some(trace_id) = trace_id {
            line.text("trace_id", &trace_id);
        }
        line.fixed("outcome", outcome);
        line.number("status", status.into());
        line.fixed("reason", reason.as_str());
        if let Some(method) = method {
            line.fixed("method", method);
        }
        if let Some(identity) = identity {
            line.number("user_id", identity.user_id);
            line.text("login", &identity.login);
            if let Some(impersonator) = &identity.impersonator {
                line.text("impersonator", impersonator);
            }
        }
        if let Some(source) = request.source {
            line.address("source", source);
        }
        line.text("http_method", &request.method);
        line.fixed("cache", tier.as_str());
        // Rendered here rather than by tracing's JSON formatter, which cost more than the
        // rest of a cached decision.
        telemetry::write_audit_line(line.finish().as_bytes());
    }
}

/// One JSON object on one line, fields in the order written. By hand rather than with serde:
/// serde_json escaped every name and value byte by byte, an eighth of a cached decision's own
/// work (callgrind); here only a value that needs escaping goes through serde_json.
struct JsonLine(String);

impl JsonLine {
    fn new() -> Self {
        Self(String::with_capacity(320))
    }

    fn name(&mut self, name: &'static str) {
        self.0.push(if self.0.is_empty() { '{' } else { ',' });
        self.0.push('"');
        self.0.push_str(name);
        self.0.push_str("\":");
    }

    fn text(&mut self, name: &'static str, value: &str) {
        self.name(name);
        // A fold without early exit: a quarter cheaper per byte than `all` (callgrind).
        let plain = !value.bytes().fold(false, |any, b| {
            any | (b < 0x20) | (b == b'"') | (b == b'\\')
        });
        if plain {
            self.0.push('"');
            self.0.push_str(value);
            self.0.push('"');
        } else {
            let escaped = serde_json::to_string(value);
            self.0.push_str(escaped.as_deref().unwrap_or("\"\""));
        }
    }

    /// One of the gate's own names (outcome, reason, method, tier): never needs escaping.
    fn fixed(&mut self, name: &'static str, value: &'static str) {
        debug_assert!(!value.bytes().any(|b| b < 0x20 || b == b'"' || b == b'\\'));
        self.name(name);
        self.0.push('"');
        self.0.push_str(value);
        self.0.push('"');
    }

    /// RFC 3339 in UTC with microseconds. The part up to the second is formatted once a
    /// second: chrono's formatter was the largest part of the line (callgrind).
    fn timestamp(&mut self, now: chrono::DateTime<chrono::Utc>) {
        use std::fmt::Write as _;
        thread_local! {
            static SECOND: std::cell::RefCell<(i64, String)> =
                const { std::cell::RefCell::new((i64::MIN, String::new())) };
        }
        self.name("timestamp");
        self.0.push('"');
        SECOND.with_borrow_mut(|(second, text)| {
            if *second != now.timestamp() {
                *second = now.timestamp();
                text.clear();
                let _ = write!(text, "{}", now.format("%Y-%m-%dT%H:%M:%S"));
            }
            self.0.push_str(text);
        });
        // A leap second's nanoseconds run past a million microseconds. Zero-padded by hand:
        // 1_000_000 + micros has seven digits, the first one dropped.
        let micros = now.timestamp_subsec_micros().min(999_999);
        let mut digits = itoa::Buffer::new();
        self.0.push('.');
        self.0.push_str(&digits.format(1_000_000 + micros)[1..]);
        self.0.push_str("Z\"");
    }

    /// An IP address, written in place: its text never needs escaping.
    fn address(&mut self, name: &'static str, value: std::net::IpAddr) {
        use std::fmt::Write as _;
        self.name(name);
        let _ = write!(self.0, "\"{value}\"");
    }

    fn number(&mut self, name: &'static str, value: i64) {
        self.name(name);
        self.0.push_str(itoa::Buffer::new().format(value));
    }

    /// The line, with its newline.
    fn finish(&mut self) -> &str {
        self.0.push_str("}\n");
        &self.0
    }
}

fn is_failure(reason: Reason) -> bool {
    matches!(reason, Reason::DirectoryUnavailable | Reason::InternalError)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps_match_rfc3339_with_microseconds() {
        let times = [
            "2026-12-06T04:18:38.000001Z",
            "2026-12-06T04:18:38.999999Z",
            "2026-12-06T04:18:39Z",
            "1999-01-01T00:00:00.5Z",
        ];
        for time in times {
            let now: chrono::DateTime<chrono::Utc> = time.parse().unwrap();
            let mut line = JsonLine::new();
            line.timestamp(now);
            let parsed: serde_json::Value = serde_json::from_str(line.finish()).unwrap();
            let expected = now.to_rfc3339_opts(chrono::SecondsFormat::Micros, true);
            assert_eq!(parsed["timestamp"], expected.as_str());
        }
    }

    #[test]
    fn audit_line_values_survive_json() {
        let odd = [
            "plain",
            "qu\"ote",
            "back\\slash",
            "tab\tnew\nline",
            "\u{1}",
            "zoë 🦀",
            "",
        ];
        for value in odd {
            let mut line = JsonLine::new();
            line.text("login", value);
            line.number("user_id", -7);
            line.address("source", "2001:db8::1".parse().unwrap());
            line.text("cache", "l1");
            let parsed: serde_json::Value = serde_json::from_str(line.finish()).unwrap();
            assert_eq!(
                parsed,
                serde_json::json!({"login": value, "user_id": -7, "source": "2001:db8::1", "cache": "l1"})
            );
        }
    }
}
