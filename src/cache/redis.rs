//! The shared tier: Redis, optional and never fatal. Every call is bounded by a timeout;
//! a failure is counted, logged at most every few seconds, and treated as a miss. Every key
//! it writes expires: entries and user indexes with `PX`/`PEXPIRE` in the same round trip,
//! failure counters a window after their own (their key names the window, so a counter that
//! outlived its expiry is never read again).

use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};

use deadpool_redis::redis::aio::MultiplexedConnection;
use deadpool_redis::redis::{self, AsyncCommands as _, AsyncConnectionConfig};
use deadpool_redis::{Manager, Pool, Runtime};
use tokio::sync::mpsc;
use tracing::Instrument as _;

use super::key::CacheKey;
use super::seal::Rejection;
use super::CacheStats;

pub struct RedisTier {
    /// Opens connections (with its timeouts); they are not checked out per call, as the pool
    /// pings a connection before each checkout, which made every command two round trips.
    pool: Pool,
    /// One connection shared by all calls: redis-rs pipelines concurrent commands on it.
    /// Dropped after a failure, so the next call opens a fresh one.
    shared: Mutex<Option<MultiplexedConnection>>,
    prefix: String,
    timeout: Duration,
    stats: Arc<CacheStats>,
    /// Failures warned about at most every 10 s.
    failure_warnings: WarnLimit,
    /// Refused values warned about, per `Rejection`, at most once a minute.
    rejection_warnings: [WarnLimit; Rejection::ALL.len()],
    /// Failures waiting to be counted, in one round trip for all that arrived meanwhile.
    failures: mpsc::Sender<Failure>,
}

/// What to do with a shared failure count.
pub type SharedCount = Box<dyn FnOnce(u64) + Send + Sync>;

/// A failure counter shared by the replicas: one per subject and aligned window.
#[derive(Debug, Clone, Copy)]
pub struct SharedCounter {
    /// The subject's keyed hash.
    pub key: CacheKey,
    /// The window's number: counts of different windows are different counters.
    pub window: i64,
    /// How long Redis keeps the counter.
    pub keep: Duration,
    /// This replica's first failure for the subject in the window: it sets the expiry.
    pub first_here: bool,
}

/// One failure to count, and what to do with the shared count.
struct Failure {
    counter: String,
    keep_ms: u64,
    first_here: bool,
    then: SharedCount,
}

/// Most failures counted in one round trip.
const FAILURES_PER_TRIP: usize = 512;

#[derive(Debug, thiserror::Error)]
#[error("invalid Redis configuration")]
pub struct RedisConfigError;

impl RedisTier {
    /// Also starts the task that counts failures (needs a Tokio runtime).
    pub fn new(
        url: &str,
        prefix: String,
        timeout: Duration,
        stats: Arc<CacheStats>,
    ) -> Result<Arc<Self>, RedisConfigError> {
        let mut pool_config = deadpool_redis::PoolConfig::new(32);
        pool_config.timeouts.wait = Some(timeout);
        pool_config.timeouts.create = Some(timeout.max(Duration::from_millis(250)));
        pool_config.timeouts.recycle = Some(timeout);
        // No response timeout in redis-rs: every call is already bounded by `timed`, and a
        // second timer per command cost a timer-wheel entry and often a wake-up of the
        // runtime's driver (perf: an eventfd write for four Redis hits in ten).
        let connection = AsyncConnectionConfig::new().set_response_timeout(None);
        let manager = Manager::new_with_config(url, connection).map_err(|_| RedisConfigError)?;
        let pool = Pool::builder(manager)
            .config(pool_config)
            .runtime(Runtime::Tokio1)
            .build()
            .map_err(|_| RedisConfigError)?;
        let (failures, pending) = mpsc::channel(4 * FAILURES_PER_TRIP);
        let tier = Arc::new(Self {
            pool,
            shared: Mutex::new(None),
            prefix,
            timeout,
            stats,
            failure_warnings: WarnLimit::new(Duration::from_secs(10)),
            rejection_warnings: Rejection::ALL.map(|_| WarnLimit::new(Duration::from_secs(60))),
            failures,
        });
        tokio::spawn(count_failures(Arc::downgrade(&tier), pending));
        Ok(tier)
    }

    async fn connection(&self) -> Result<MultiplexedConnection, String> {
        if let Some(shared) = self.lock_shared().clone() {
            return Ok(shared);
        }
        let opened = self.pool.get().await.map_err(|e| e.to_string())?;
        let opened = deadpool_redis::Connection::take(opened);
        *self.lock_shared() = Some(opened.clone());
        Ok(opened)
    }

    fn lock_shared(&self) -> std::sync::MutexGuard<'_, Option<MultiplexedConnection>> {
        self.shared.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The prefix of every key this deployment writes; sealed values are bound to it.
    pub(super) fn prefix(&self) -> &str {
        &self.prefix
    }

    fn entry_key(&self, key: CacheKey) -> String {
        format!("{}e:{}", self.prefix, key.to_hex())
    }

    fn user_index(&self, user_id: i64) -> String {
        format!("{}u:{}", self.prefix, user_id)
    }

    pub async fn get(&self, key: CacheKey) -> Option<Vec<u8>> {
        let entry_key = self.entry_key(key);
        self.bounded("get", async move {
            let mut conn = self.connection().await?;
            conn.get::<_, Option<Vec<u8>>>(entry_key)
                .await
                .map_err(|e| e.to_string())
        })
        .await
        .flatten()
    }

    /// Stores an entry; a positive one is also indexed under its user for eviction.
    pub async fn set(&self, key: CacheKey, value: Vec<u8>, ttl: Duration, user_id: Option<i64>) {
        let entry_key = self.entry_key(key);
        let index = user_id.map(|id| self.user_index(id));
        let ttl_ms = ttl.as_millis().max(1) as u64;
        self.bounded("set", async move {
            let mut conn = self.connection().await?;
            let mut pipe = redis::pipe();
            pipe.cmd("SET")
                .arg(&entry_key)
                .arg(value)
                .arg("PX")
                .arg(ttl_ms)
                .ignore();
            if let Some(index) = index {
                pipe.cmd("SADD").arg(&index).arg(&entry_key).ignore();
                pipe.cmd("PEXPIRE").arg(&index).arg(ttl_ms).ignore();
            }
            pipe.query_async::<()>(&mut conn)
                .await
                .map_err(|e| e.to_string())
        })
        .await;
    }

    /// Counts one failure in the background: `then` gets the shared count once Redis has
    /// answered, and is dropped if it fails. Failures that arrive together share one round
    /// trip; a deny never waits for it (a flood from many addresses spent a third of its time
    /// there).
    pub fn count_failure(&self, counter: SharedCounter, then: SharedCount) {
        let failure = Failure {
            counter: format!(
                "{}t:{}:{}",
                self.prefix,
                counter.key.to_hex(),
                counter.window
            ),
            keep_ms: counter.keep.as_millis().max(1) as u64,
            first_here: counter.first_here,
            then,
        };
        // A full queue means Redis is behind: the in-process count stands alone.
        let _ = self.failures.try_send(failure);
    }

    /// One pipeline for `failures`: an `INCR` each, and the expiry with a replica's first
    /// failure in a window. Not a transaction: a counter belongs to one window, so an `INCR`
    /// never meets an expired counter of its own window, and one that finds none (Redis
    /// restarted or evicted it) gets its expiry in a second trip. A transaction per failure
    /// (`SET NX PX`, `INCR`, `PTTL`) cost Redis about 4 µs of CPU per failure in a flood,
    /// the `INCR` alone 0.7 µs.
    async fn count_together(&self, failures: &[Failure]) -> Result<Vec<u64>, String> {
        let mut conn = self.connection().await?;
        let mut pipe = redis::pipe();
        for failure in failures {
            pipe.cmd("INCR").arg(&failure.counter);
            if failure.first_here {
                pipe.cmd("PEXPIRE")
                    .arg(&failure.counter)
                    .arg(failure.keep_ms)
                    .ignore();
            }
        }
        let counts: Vec<u64> = pipe
            .query_async(&mut conn)
            .await
            .map_err(|e| e.to_string())?;
        let mut unexpiring = redis::pipe();
        for (failure, count) in failures.iter().zip(&counts) {
            if *count == 1 && !failure.first_here {
                unexpiring
                    .cmd("PEXPIRE")
                    .arg(&failure.counter)
                    .arg(failure.keep_ms)
                    .ignore();
            }
        }
        if !unexpiring.is_empty() {
            unexpiring
                .query_async::<()>(&mut conn)
                .await
                .map_err(|e| e.to_string())?;
        }
        Ok(counts)
    }

    /// Drops every entry indexed under `user_id`.
    pub async fn evict_user(&self, user_id: i64) {
        let index = self.user_index(user_id);
        self.bounded("evict", async move {
            let mut conn = self.connection().await?;
            let members: Vec<String> = conn.smembers(&index).await.map_err(|e| e.to_string())?;
            // Only our own entries: a name planted in the index must not make the gate delete
            // keys outside its prefix that the planter could not reach itself.
            let entries = format!("{}e:", self.prefix);
            let mut pipe = redis::pipe();
            for member in members.iter().filter(|m| m.starts_with(&entries)) {
                pipe.cmd("DEL").arg(member).ignore();
            }
            pipe.cmd("DEL").arg(&index).ignore();
            pipe.query_async::<()>(&mut conn)
                .await
                .map_err(|e| e.to_string())
        })
        .await;
    }

    /// Drops every key under this deployment's prefix.
    pub async fn evict_all(&self) {
        let pattern = format!("{}*", self.prefix);
        let result = tokio::time::timeout(self.timeout * 20, async move {
            let mut conn = self.connection().await?;
            let mut cursor: u64 = 0;
            loop {
                let (next, keys): (u64, Vec<String>) = redis::cmd("SCAN")
                    .arg(cursor)
                    .arg("MATCH")
                    .arg(&pattern)
                    .arg("COUNT")
                    .arg(500)
                    .query_async(&mut conn)
                    .await
                    .map_err(|e| e.to_string())?;
                if !keys.is_empty() {
                    redis::cmd("DEL")
                        .arg(&keys)
                        .query_async::<()>(&mut conn)
                        .await
                        .map_err(|e| e.to_string())?;
                }
                if next == 0 {
                    return Ok::<_, String>(());
                }
                cursor = next;
            }
        })
        .await;
        if !matches!(result, Ok(Ok(()))) {
            self.failed("evict all");
        }
    }

    /// Runs `call` within the timeout, in its own span. Not an `async fn`: that would keep the
    /// unboxed call (kilobytes of Redis client state) inside every caller's future.
    fn bounded<'a, T: 'a>(
        &'a self,
        operation: &'static str,
        call: impl Future<Output = Result<T, String>> + Send + 'a,
    ) -> impl Future<Output = Option<T>> + Send + 'a {
        let span = tracing::info_span!(
            "redis",
            otel.kind = "client",
            db.system = "redis",
            db.operation.name = operation
        );
        self.timed(operation, call).instrument(span)
    }

    /// `bounded` without a span: for the failure counts, which belong to no one Check and
    /// would otherwise be a root span per round trip.
    fn timed<'a, T: 'a>(
        &'a self,
        operation: &'static str,
        call: impl Future<Output = Result<T, String>> + Send + 'a,
    ) -> impl Future<Output = Option<T>> + Send + 'a {
        let call = Box::pin(call);
        async move {
            match tokio::time::timeout(self.timeout, call).await {
                Ok(Ok(value)) => Some(value),
                Ok(Err(_)) | Err(_) => {
                    self.failed(operation);
                    None
                }
            }
        }
    }

    /// Counts a failure and warns at most every 10 s; the error text stays out of logs, as
    /// Redis errors may quote the URL.
    fn failed(&self, operation: &str) {
        self.stats.redis_errors.inc();
        *self.lock_shared() = None;
        if self.failure_warnings.allows() {
            let errors = self.stats.redis_errors.get();
            tracing::warn!(
                operation,
                errors,
                "Redis unavailable or slow; deciding from the in-process tier and the database"
            );
        }
    }

    /// Counts a value refused on reading (a miss), and warns of forged or foreign values at
    /// most once a minute per reason. Neither key nor value is logged: the key is a keyed
    /// hash of a credential, and the value is whatever the writer chose.
    pub(super) fn rejected(&self, reason: Rejection) {
        let counter = self.stats.rejected(reason);
        counter.inc();
        // An authentic value past its own expiry tells of clocks or a stripped TTL, not of
        // a forger: counted, not warned of.
        if reason != Rejection::Expired && self.rejection_warnings[reason as usize].allows() {
            tracing::warn!(
                reason = reason.as_str(),
                rejected = counter.get(),
                "refused a Redis value not sealed by this deployment for its key, and looked \
                 the credential up instead: someone who can write to Redis may be tampering \
                 with it (format: also an older release's entries, during an upgrade)"
            );
        }
    }
}

/// Lets a warning through the first time, and then at most once per period.
struct WarnLimit {
    period: Duration,
    started: Instant,
    /// One more than the milliseconds since `started` of the last warning let through; 0
    /// before the first.
    last: AtomicU64,
}

impl WarnLimit {
    fn new(period: Duration) -> Self {
        Self {
            period,
            started: Instant::now(),
            last: AtomicU64::new(0),
        }
    }

    fn allows(&self) -> bool {
        self.allows_at(self.started.elapsed())
    }

    /// One of several concurrent callers wins a due warning.
    fn allows_at(&self, since_start: Duration) -> bool {
        let now = since_start.as_millis() as u64 + 1;
        let last = self.last.load(Ordering::Relaxed);
        (last == 0 || now.saturating_sub(last) >= self.period.as_millis() as u64)
            && self
                .last
                .compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed)
                .is_ok()
    }
}

/// Counts the queued failures, all that have arrived in one round trip, until the tier is
/// dropped, and hands each its shared count (none if Redis failed).
async fn count_failures(tier: Weak<RedisTier>, mut pending: mpsc::Receiver<Failure>) {
    let mut batch = Vec::with_capacity(FAILURES_PER_TRIP);
    while pending.recv_many(&mut batch, FAILURES_PER_TRIP).await > 0 {
        let Some(tier) = tier.upgrade() else { return };
        let counts = tier
            .timed("count failures", tier.count_together(&batch))
            .await
            .unwrap_or_default();
        // Draining empties the batch even when Redis gave no counts (the rest are dropped).
        for (failure, count) in batch.drain(..).zip(counts) {
            (failure.then)(count);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn warnings_first_then_at_most_once_a_period() {
        let limit = WarnLimit::new(Duration::from_secs(60));
        let at = Duration::from_secs;
        assert!(limit.allows_at(at(0)), "the first one");
        assert!(!limit.allows_at(at(0)));
        assert!(!limit.allows_at(at(59)));
        assert!(limit.allows_at(at(60)));
        assert!(!limit.allows_at(at(61)));
        assert!(!limit.allows_at(at(119)));
        assert!(limit.allows_at(at(600)));
        // A first one after a quiet start is let through too.
        assert!(WarnLimit::new(Duration::from_secs(60)).allows_at(at(3600)));
    }
}
