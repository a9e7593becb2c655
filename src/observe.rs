//! What each decision leaves behind: span attributes, metrics and the audit line. Nothing
//! here sees a credential: only the decision, the identity and request metadata.

use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use opentelemetry::trace::TraceContextExt as _;
use serde::Serialize;
use tracing::Span;
use tracing_opentelemetry::OpenTelemetrySpanExt as _;

use crate::auth::{Decision, Reason, Request};
use crate::cache::Tier;
use crate::metrics::Metrics;
use crate::telemetry::AUDIT_TARGET;

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
        let line = AuditLine {
            timestamp: chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Micros, true),
            level: "INFO",
            message: "decision",
            request_id: request.headers.get_all("x-request-id").next(),
            trace_id,
            outcome,
            status,
            reason: reason.as_str(),
            method,
            user_id: identity.map(|i| i.user_id),
            login: identity.map(|i| i.login.as_str()),
            impersonator: identity.and_then(|i| i.impersonator.as_deref()),
            source: request.source,
            http_method: request.method.as_str(),
            cache: tier.as_str(),
        };
        // Rendered here with serde and written as is by the audit layer (telemetry.rs):
        // tracing's own JSON formatter cost more than the rest of a cached decision.
        if let Ok(line) = serde_json::to_string(&line) {
            tracing::info!(target: AUDIT_TARGET, line = line.as_str());
        }
    }
}

/// One audit line; absent values are left out.
#[derive(Serialize)]
struct AuditLine<'a> {
    timestamp: String,
    level: &'static str,
    message: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    request_id: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    trace_id: Option<String>,
    outcome: &'static str,
    status: u16,
    reason: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    method: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    user_id: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    login: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    impersonator: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    source: Option<IpAddr>,
    http_method: &'a str,
    cache: &'static str,
}

fn is_failure(reason: Reason) -> bool {
    matches!(reason, Reason::DirectoryUnavailable | Reason::InternalError)
}
