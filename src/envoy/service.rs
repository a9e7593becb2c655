//! The `envoy.service.auth.v3.Authorization` gRPC service.

use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::FutureExt as _;
use opentelemetry::propagation::Extractor;
use std::panic::AssertUnwindSafe;
use std::pin::pin;
use tracing::Instrument as _;
use tracing_opentelemetry::OpenTelemetrySpanExt as _;

use tonic::{Request as GrpcRequest, Response, Status};

use super::wire::server::authorization_server::Authorization;
use super::wire::{Check, MAX_CHECK_BYTES};
use super::{parse, Answer, ParseError, Responder, ResponseOptions};
use crate::auth::{Decision, Deny, Format, Reason, Request};
use crate::cache::{dearest_tier, track_tier, Tier};
use crate::directory::Directory;
use crate::gate::Gate;
use crate::observe::{check_span, Observer};
use crate::telemetry;

pub struct AuthorizationService<D> {
    gate: Arc<Gate<D>>,
    responder: Responder,
    observer: Arc<Observer>,
    /// Upper bound on a decision when Envoy sends no deadline.
    max_budget: Duration,
}

impl<D> AuthorizationService<D> {
    pub fn new(
        gate: Arc<Gate<D>>,
        options: ResponseOptions,
        observer: Arc<Observer>,
        max_budget: Duration,
    ) -> Self {
        Self {
            gate,
            responder: Responder::new(options),
            observer,
            max_budget,
        }
    }
}

#[tonic::async_trait]
impl<D: Directory> Authorization for AuthorizationService<D> {
    async fn check(&self, grpc: GrpcRequest<Check>) -> Result<Response<Answer>, Status> {
        let started = Instant::now();
        let budget = budget(
            grpc.metadata()
                .get("grpc-timeout")
                .and_then(|v| v.to_str().ok()),
            self.max_budget,
        );
        let span = check_span();
        let (metadata, _, check) = grpc.into_parts();
        let (request, decision, tier) = match read(check) {
            Ok(request) => {
                // With tracing off the span is disabled and its parent would be thrown away.
                if !span.is_disabled() {
                    let parent =
                        telemetry::parent_context(&Metadata(&metadata), &Forwarded(&request));
                    let _ = span.set_parent(parent);
                }
                // A bug that panics must still end in a deny: an RPC error is an allow to a
                // fail-open Envoy.
                let (decision, tier) = {
                    let mut tracked = pin!(track_tier(self.gate.check_within(&request, budget)));
                    let checked = AssertUnwindSafe(tracked.as_mut())
                        .catch_unwind()
                        .instrument(span.clone())
                        .await;
                    let decision = checked.unwrap_or_else(|_| {
                        tracing::error!("the decision panicked; answering 500");
                        Decision::Deny(Deny::new(Reason::InternalError, Format::Json))
                    });
                    (decision, dearest_tier(tracked))
                };
                (request, decision, tier)
            }
            Err(reason) => (
                Request::default(),
                Decision::Deny(Deny::new(reason, Format::Json)),
                Tier::None,
            ),
        };
        self.observer
            .record(&decision, &request, &span, tier, started.elapsed());
        Ok(Response::new(self.responder.answer(&decision, &request)))
    }
}

/// The request a Check describes, or why it is refused.
fn read(check: Check) -> Result<Request, Reason> {
    match check {
        Check::Request(message) => parse(message).map_err(|error| {
            tracing::info!(%error, "check request refused");
            match error {
                ParseError::NoHttpRequest | ParseError::NotUtf8 => Reason::BadRequest,
                ParseError::TooLarge => Reason::HeadersTooLarge,
            }
        }),
        Check::Malformed(error) => {
            tracing::info!(%error, "check request refused: not a CheckRequest");
            Err(Reason::BadRequest)
        }
        Check::TooLarge => {
            tracing::info!(
                limit = MAX_CHECK_BYTES,
                "check request refused: over the size limit"
            );
            Err(Reason::RequestTooLarge)
        }
    }
}

/// The gRPC call's metadata, where Envoy puts the trace context of its ext_authz call.
struct Metadata<'a>(&'a tonic::metadata::MetadataMap);

impl Extractor for Metadata<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).and_then(|v| v.to_str().ok())
    }

    fn keys(&self) -> Vec<&str> {
        self.0
            .keys()
            .filter_map(|k| match k {
                tonic::metadata::KeyRef::Ascii(k) => Some(k.as_str()),
                tonic::metadata::KeyRef::Binary(_) => None,
            })
            .collect()
    }
}

/// The checked request's own headers: the fallback when the call carries no context.
struct Forwarded<'a>(&'a Request);

impl Extractor for Forwarded<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0.headers.first(key)
    }

    fn keys(&self) -> Vec<&str> {
        self.0.headers.names().collect()
    }
}

/// The time a decision may take: a fifth under Envoy's deadline, so the 503 reaches Envoy
/// before Envoy gives up even on a loaded machine, and never more than `max`.
pub fn budget(grpc_timeout: Option<&str>, max: Duration) -> Duration {
    let Some(deadline) = grpc_timeout.and_then(parse_grpc_timeout) else {
        return max;
    };
    let margin = (deadline / 5).max(Duration::from_millis(5));
    deadline.saturating_sub(margin).min(max)
}

/// The `grpc-timeout` header: up to 8 digits and a unit (H, M, S, m, u, n).
fn parse_grpc_timeout(value: &str) -> Option<Duration> {
    let (digits, unit) = value.split_at(value.len().checked_sub(1)?);
    if digits.is_empty() || digits.len() > 8 {
        return None;
    }
    let amount: u64 = digits.parse().ok()?;
    Some(match unit {
        "H" => Duration::from_secs(amount * 3600),
        "M" => Duration::from_secs(amount * 60),
        "S" => Duration::from_secs(amount),
        "m" => Duration::from_millis(amount),
        "u" => Duration::from_micros(amount),
        "n" => Duration::from_nanos(amount),
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn budget_stays_inside_envoys_deadline() {
        let max = Duration::from_secs(2);
        assert_eq!(budget(None, max), max);
        assert_eq!(budget(Some("200m"), max), Duration::from_millis(160));
        assert_eq!(budget(Some("10S"), max), max);
        assert_eq!(budget(Some("bogus"), max), max);
        assert_eq!(budget(Some("1000000000m"), max), max);
        assert_eq!(budget(Some("1m"), max), Duration::ZERO);
    }
}
