//! The `envoy.service.auth.v3.Authorization` gRPC service.

use std::sync::Arc;
use std::time::Duration;

use tonic::{Request as GrpcRequest, Response, Status};

use super::proto::envoy::service::auth::v3::authorization_server::Authorization;
use super::proto::envoy::service::auth::v3::{CheckRequest, CheckResponse};
use super::{parse, respond, ResponseOptions};
use crate::auth::{Decision, Deny, Format, Reason};
use crate::directory::Directory;
use crate::gate::Gate;

pub struct AuthorizationService<D> {
    gate: Arc<Gate<D>>,
    options: Arc<ResponseOptions>,
    /// Upper bound on a decision when Envoy sends no deadline.
    max_budget: Duration,
}

impl<D> AuthorizationService<D> {
    pub fn new(gate: Arc<Gate<D>>, options: ResponseOptions, max_budget: Duration) -> Self {
        Self {
            gate,
            options: Arc::new(options),
            max_budget,
        }
    }
}

#[tonic::async_trait]
impl<D: Directory> Authorization for AuthorizationService<D> {
    async fn check(
        &self,
        grpc: GrpcRequest<CheckRequest>,
    ) -> Result<Response<CheckResponse>, Status> {
        let budget = budget(
            grpc.metadata()
                .get("grpc-timeout")
                .and_then(|v| v.to_str().ok()),
            self.max_budget,
        );
        let check = grpc.into_inner();
        let response = match parse(&check) {
            Ok(request) => {
                let decision = self.gate.check_within(&request, budget).await;
                log_decision(&decision);
                respond(&decision, &request, &self.options)
            }
            Err(error) => {
                tracing::info!(%error, "malformed check request");
                let decision = Decision::Deny(Deny::new(Reason::BadRequest, Format::Json));
                respond(&decision, &crate::auth::Request::default(), &self.options)
            }
        };
        Ok(Response::new(response))
    }
}

fn log_decision(decision: &Decision) {
    match decision {
        Decision::Allow(allow) => match &allow.identity {
            Some(identity) => tracing::debug!(
                reason = allow.reason.as_str(),
                user_id = identity.user_id,
                method = identity.method.as_str(),
                "allow"
            ),
            None => tracing::debug!(reason = allow.reason.as_str(), "allow"),
        },
        Decision::Deny(deny) => tracing::debug!(
            reason = deny.reason.as_str(),
            status = deny.status.http_code(),
            "deny"
        ),
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
