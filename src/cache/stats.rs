//! The cache's counters: Prometheus counters, shared with the registry and read by tests.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;

use super::seal::Rejection;
use super::tier::Tier;

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct TierLabels {
    tier: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RejectionLabels {
    reason: &'static str,
}

/// Counters for tests and metrics (Prometheus counters, shared with the registry).
#[derive(Debug)]
pub struct CacheStats {
    /// Lookups by the tier that answered; the three counters below are its members.
    pub lookups: Family<TierLabels, Counter>,
    pub filter_refusals: Counter,
    pub l1_hits: Counter,
    pub redis_hits: Counter,
    /// Lookups that went to the directory (PostgreSQL).
    pub directory_lookups: Counter,
    pub directory_errors: Counter,
    pub redis_errors: Counter,
    /// Values read from Redis and refused, by `Rejection`; each was a miss.
    pub redis_rejected: Family<RejectionLabels, Counter>,
    /// Its members, in `Rejection::ALL`'s order.
    rejected: [Counter; Rejection::ALL.len()],
    pub evictions: Counter,
}

impl Default for CacheStats {
    fn default() -> Self {
        let lookups = Family::<TierLabels, Counter>::default();
        let member = |tier: Tier| {
            lookups
                .get_or_create(&TierLabels {
                    tier: tier.as_str(),
                })
                .clone()
        };
        let redis_rejected = Family::<RejectionLabels, Counter>::default();
        let rejected = Rejection::ALL.map(|reason| {
            redis_rejected
                .get_or_create(&RejectionLabels {
                    reason: reason.as_str(),
                })
                .clone()
        });
        Self {
            filter_refusals: member(Tier::Filter),
            l1_hits: member(Tier::L1),
            redis_hits: member(Tier::Redis),
            directory_lookups: member(Tier::Db),
            lookups,
            directory_errors: Counter::default(),
            redis_errors: Counter::default(),
            redis_rejected,
            rejected,
            evictions: Counter::default(),
        }
    }
}

impl CacheStats {
    pub fn get(counter: &Counter) -> u64 {
        counter.get()
    }

    /// Values refused for `reason`.
    pub fn rejected(&self, reason: Rejection) -> &Counter {
        &self.rejected[reason as usize]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rejection_counters_are_the_familys_members() {
        let stats = CacheStats::default();
        stats.rejected(Rejection::Mac).inc();
        stats.rejected(Rejection::Mac).inc();
        stats.rejected(Rejection::Expired).inc();
        for (reason, count) in Rejection::ALL.into_iter().zip([0, 2, 1]) {
            let member = stats.redis_rejected.get_or_create(&RejectionLabels {
                reason: reason.as_str(),
            });
            assert_eq!(member.get(), count, "{}", reason.as_str());
        }
    }
}
