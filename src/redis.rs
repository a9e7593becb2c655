//! The connection to Redis that the cache's shared tier and the throttle's shared counts both
//! use. Redis is optional and never fatal: every call is bounded by a timeout, and a failure
//! is counted, logged at most every few seconds, and treated by the caller as a miss.

use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use deadpool_redis::redis::aio::MultiplexedConnection;
use deadpool_redis::redis::AsyncConnectionConfig;
use deadpool_redis::{Manager, Pool, Runtime};
use prometheus_client::metrics::counter::Counter;
use tracing::Instrument as _;

pub struct Redis {
    /// Opens connections (with its timeouts); they are not checked out per call, as the pool
    /// pings a connection before each checkout, which made every command two round trips.
    pool: Pool,
    /// One connection shared by all calls: redis-rs pipelines concurrent commands on it.
    /// Dropped after a failure, so the next call opens a fresh one.
    shared: Mutex<Option<MultiplexedConnection>>,
    /// The prefix of every key this deployment writes.
    prefix: String,
    timeout: Duration,
    /// Calls that failed or timed out (`authz_redis_errors`).
    errors: Counter,
    /// Failures warned about at most every 10 s.
    failure_warnings: WarnLimit,
}

#[derive(Debug, thiserror::Error)]
#[error("invalid Redis configuration")]
pub struct RedisConfigError;

impl Redis {
    /// Opens nothing yet: the first call connects. Failures are counted in `errors`.
    pub fn new(
        url: &str,
        prefix: String,
        timeout: Duration,
        errors: Counter,
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
        Ok(Arc::new(Self {
            pool,
            shared: Mutex::new(None),
            prefix,
            timeout,
            errors,
            failure_warnings: WarnLimit::new(Duration::from_secs(10)),
        }))
    }

    /// The prefix of every key this deployment writes; sealed values are bound to it.
    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    /// The bound on one call.
    pub(crate) fn timeout(&self) -> Duration {
        self.timeout
    }

    pub(crate) async fn connection(&self) -> Result<MultiplexedConnection, String> {
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

    /// Runs `call` within the timeout, in its own span. Not an `async fn`: that would keep the
    /// unboxed call (kilobytes of Redis client state) inside every caller's future.
    pub(crate) fn bounded<'a, T: 'a>(
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

    /// `bounded` without a span: for work that belongs to no one Check (the throttle's
    /// shared counts), which would otherwise be a root span per round trip.
    pub(crate) fn timed<'a, T: 'a>(
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

    /// Counts a failure, drops the shared connection and warns at most every 10 s; the error
    /// text stays out of logs, as Redis errors may quote the URL.
    pub(crate) fn failed(&self, operation: &str) {
        self.errors.inc();
        *self.lock_shared() = None;
        if self.failure_warnings.allows() {
            let errors = self.errors.get();
            tracing::warn!(
                operation,
                errors,
                "Redis unavailable or slow; deciding from the in-process tier and the database"
            );
        }
    }
}

/// Lets a warning through the first time, and then at most once per period.
pub(crate) struct WarnLimit {
    period: Duration,
    started: Instant,
    /// One more than the milliseconds since `started` of the last warning let through; 0
    /// before the first.
    last: AtomicU64,
}

impl WarnLimit {
    pub(crate) fn new(period: Duration) -> Self {
        Self {
            period,
            started: Instant::now(),
            last: AtomicU64::new(0),
        }
    }

    pub(crate) fn allows(&self) -> bool {
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
