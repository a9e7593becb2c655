//! Prometheus metrics for the admin port. Labels are bounded: outcome, method and reason
//! come from closed enums, never from a login or a path.

use std::sync::{Arc, OnceLock};
use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;

use crate::auth::{AuthMethod, Decision, Reason};
use crate::cache::CacheStats;
use crate::connections::ConnectionStats;
use crate::throttle::Throttle;

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct DecisionLabels {
    outcome: &'static str,
    method: &'static str,
    reason: &'static str,
}

/// Room for every (outcome, method, reason); a variant past it falls back to the family.
const METHOD_SLOTS: usize = 8;
const REASON_SLOTS: usize = 32;
const DECISION_SLOTS: usize = 2 * METHOD_SLOTS * REASON_SLOTS;

fn decision_slot(allowed: bool, method: Option<AuthMethod>, reason: Reason) -> Option<usize> {
    let method = method.map_or(0, |m| m as usize + 1);
    let reason = reason as usize;
    (method < METHOD_SLOTS && reason < REASON_SLOTS)
        .then(|| (usize::from(allowed) * METHOD_SLOTS + method) * REASON_SLOTS + reason)
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct PoolLabels {
    state: &'static str,
}

/// Reads the database pool's size at scrape time: (in use, idle).
pub type PoolProbe = Box<dyn Fn() -> (u32, u32) + Send + Sync>;

pub struct Metrics {
    registry: Registry,
    decisions: Family<DecisionLabels, Counter>,
    /// The family's counters, each looked up once: `get_or_create` takes a lock and hashes
    /// three labels, on every Check.
    decision_counters: Box<[OnceLock<Counter>]>,
    duration: Histogram,
    pool: Family<PoolLabels, Gauge>,
    pool_probe: Option<PoolProbe>,
}

impl Metrics {
    pub fn new(
        cache: &Arc<CacheStats>,
        throttle: &Throttle,
        connections: &ConnectionStats,
        pool_probe: Option<PoolProbe>,
    ) -> Self {
        let mut registry = Registry::default();
        let decisions = Family::<DecisionLabels, Counter>::default();
        registry.register(
            "authz_decisions",
            "Decisions by outcome, authentication method and reason",
            decisions.clone(),
        );
        // 50 µs to about 1.6 s.
        let duration = Histogram::new(exponential_buckets(0.000_05, 2.0, 16));
        registry.register(
            "authz_decision_duration_seconds",
            "Time to decide one Check",
            duration.clone(),
        );
        // The cache's own counters, shared rather than copied.
        registry.register(
            "authz_lookups",
            "Credential lookups by the tier that answered (l1, redis, db)",
            cache.lookups.clone(),
        );
        registry.register(
            "authz_database_errors",
            "PostgreSQL lookups that failed or timed out",
            cache.directory_errors.clone(),
        );
        registry.register(
            "authz_redis_errors",
            "Redis calls that failed or timed out",
            cache.redis_errors.clone(),
        );
        registry.register(
            "authz_redis_rejected",
            "Values read from Redis and refused as misses, by reason (format, mac, expired)",
            cache.redis_rejected.clone(),
        );
        registry.register(
            "authz_cache_evictions",
            "Invalidations applied from database notifications",
            cache.evictions.clone(),
        );
        registry.register(
            "authz_throttled",
            "Requests answered 429 for too many failed authentications",
            throttle.throttled.clone(),
        );
        registry.register(
            "authz_connections",
            "Open client connections by listener (grpc, admin)",
            connections.open.clone(),
        );
        registry.register(
            "authz_connections_refused",
            "Connections closed at accept because their listener was at its cap",
            connections.refused.clone(),
        );
        let pool = Family::<PoolLabels, Gauge>::default();
        registry.register(
            "authz_db_pool_connections",
            "Database pool connections by state",
            pool.clone(),
        );
        Self {
            registry,
            decisions,
            decision_counters: (0..DECISION_SLOTS).map(|_| OnceLock::new()).collect(),
            duration,
            pool,
            pool_probe,
        }
    }

    pub fn observe(&self, decision: &Decision, elapsed: Duration) {
        let (allowed, method) = match decision {
            Decision::Allow(allow) => (true, allow.identity.as_ref().map(|i| i.method)),
            Decision::Deny(_) => (false, None),
        };
        let reason = decision.reason();
        let labels = || DecisionLabels {
            outcome: if allowed { "allow" } else { "deny" },
            method: method.map_or("none", AuthMethod::as_str),
            reason: reason.as_str(),
        };
        match decision_slot(allowed, method, reason).and_then(|i| self.decision_counters.get(i)) {
            Some(slot) => slot
                .get_or_init(|| self.decisions.get_or_create(&labels()).clone())
                .inc(),
            None => self.decisions.get_or_create(&labels()).inc(),
        };
        self.duration.observe(elapsed.as_secs_f64());
    }

    /// The text exposition format.
    pub fn encode(&self) -> String {
        if let Some(probe) = &self.pool_probe {
            let (in_use, idle) = probe();
            self.pool
                .get_or_create(&PoolLabels { state: "in_use" })
                .set(i64::from(in_use));
            self.pool
                .get_or_create(&PoolLabels { state: "idle" })
                .set(i64::from(idle));
        }
        let mut out = String::new();
        // Writing to a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }
}
