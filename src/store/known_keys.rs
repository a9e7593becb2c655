//! Every API key in Redmine's `tokens` table, as a Bloom filter kept current by the
//! notification triggers. While wrong keys pour in faster than a threshold (a flood of
//! random keys, which no cache can absorb), a key the filter has never seen is refused
//! without asking the database. Below the threshold every key is looked up, exactly as
//! before: a key created a moment ago may not have reached the filter yet.
//!
//! The filter is trusted only while it is in sync: loaded after LISTEN began (so no insert
//! between the load and the first notification is missed), with the triggers installed, on
//! a primary (a standby sends no notifications), and not since the listener lost its
//! connection. Keys deleted from Redmine stay in the filter until the next load; they only
//! cost a lookup, as every key does without the filter.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Instant;

use fastbloom::AtomicBloomFilter;
use futures_util::TryStreamExt as _;
use sqlx::PgPool;

use super::queries;

/// At full capacity one unknown key in fifty passes to the database; fewer below it. About
/// 1 MB per million keys of capacity.
const FALSE_POSITIVES: f64 = 0.02;
const LEAST_CAPACITY: usize = 100_000;

pub struct KnownKeys {
    /// `None` while out of sync: then nothing is refused.
    filter: RwLock<Option<Arc<AtomicBloomFilter>>>,
    /// Keys absent from the filter per second (refused or not) above which they are refused.
    refuse_above: u64,
    unknown: PerSecond,
}

impl KnownKeys {
    pub fn new(refuse_above: u64) -> Self {
        Self {
            filter: RwLock::new(None),
            refuse_above,
            unknown: PerSecond::new(),
        }
    }

    /// Whether `key` may be refused without a lookup: the filter is in sync, has never seen
    /// it, and unknown keys are arriving faster than the threshold.
    pub fn refuses(&self, key: &str) -> bool {
        // Read under the lock, without cloning the Arc: this runs on every API-key Check.
        let unseen = match &*self.filter.read().unwrap_or_else(|e| e.into_inner()) {
            Some(filter) => !filter.contains(key),
            None => return false,
        };
        unseen && self.unknown.count() > self.refuse_above
    }

    /// Notifications may be missed from now on: stop refusing until the next load.
    pub fn lose_sync(&self) {
        *self.filter.write().unwrap_or_else(|e| e.into_inner()) = None;
    }

    /// Loads every API key, if the triggers that keep the filter current are in place.
    /// Call it once LISTEN has begun, from the task that applies notifications, so that
    /// notifications received during the load are applied after it.
    pub async fn load(&self, pool: &PgPool) -> Result<usize, sqlx::Error> {
        self.lose_sync();
        let notified: bool = sqlx::query_scalar(queries::API_KEY_TRIGGERS_LIVE)
            .fetch_one(pool)
            .await?;
        if !notified {
            tracing::info!("API key filter off: no notification triggers, or a standby");
            return Ok(0);
        }
        let count: i64 = sqlx::query_scalar(queries::API_KEY_COUNT)
            .fetch_one(pool)
            .await?;
        // Half again as many as now: room for growth until the next load resizes it.
        let count = usize::try_from(count).unwrap_or(0);
        let capacity = count.saturating_add(count / 2).max(LEAST_CAPACITY);
        let filter = AtomicBloomFilter::with_false_pos(FALSE_POSITIVES).expected_items(capacity);
        let mut keys = sqlx::query_scalar::<_, String>(queries::API_KEYS).fetch(pool);
        let mut loaded = 0;
        while let Some(key) = keys.try_next().await? {
            filter.insert(key.as_str());
            loaded += 1;
        }
        *self.filter.write().unwrap_or_else(|e| e.into_inner()) = Some(Arc::new(filter));
        tracing::info!(keys = loaded, "API key filter loaded");
        Ok(loaded)
    }

    /// These users' keys changed: adds their current API keys, in one query (a reset key's
    /// old value stays until the next load, which only costs it a lookup).
    pub async fn add_users(&self, pool: &PgPool, user_ids: &[i64]) -> Result<(), sqlx::Error> {
        if user_ids.is_empty() {
            return Ok(());
        }
        let Some(filter) = self.current() else {
            return Ok(());
        };
        let keys: Vec<String> = sqlx::query_scalar(queries::API_KEYS_OF_USERS)
            .bind(user_ids)
            .fetch_all(pool)
            .await?;
        for key in &keys {
            filter.insert(key.as_str());
        }
        Ok(())
    }

    fn current(&self) -> Option<Arc<AtomicBloomFilter>> {
        self.filter
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }
}

/// Events in the current second and the one before, without a lock.
struct PerSecond {
    started: Instant,
    /// The second `current` counts, since `started`.
    second: AtomicU64,
    current: AtomicU64,
    previous: AtomicU64,
}

impl PerSecond {
    fn new() -> Self {
        Self {
            started: Instant::now(),
            second: AtomicU64::new(0),
            current: AtomicU64::new(0),
            previous: AtomicU64::new(0),
        }
    }

    /// Counts one event; returns the larger of this second's and the last second's counts.
    fn count(&self) -> u64 {
        let now = self.started.elapsed().as_secs();
        let second = self.second.load(Ordering::Relaxed);
        if now != second
            && self
                .second
                .compare_exchange(second, now, Ordering::Relaxed, Ordering::Relaxed)
                .is_ok()
        {
            let last = self.current.swap(0, Ordering::Relaxed);
            let last = if now == second + 1 { last } else { 0 };
            self.previous.store(last, Ordering::Relaxed);
        }
        let current = self.current.fetch_add(1, Ordering::Relaxed) + 1;
        current.max(self.previous.load(Ordering::Relaxed))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn per_second_counts_this_and_the_last_second() {
        let meter = PerSecond::new();
        assert_eq!(meter.count(), 1);
        assert_eq!(meter.count(), 2);
        assert_eq!(meter.count(), 3);
    }

    #[test]
    fn out_of_sync_refuses_nothing() {
        let keys = KnownKeys::new(0);
        assert!(!keys.refuses("0123456789abcdef0123456789abcdef01234567"));
    }
}
