//! The shared tier: Redis, optional and never fatal. Every call is bounded by a timeout;
//! a failure is counted, logged at most every few seconds, and treated as a miss.

use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use deadpool_redis::redis::aio::MultiplexedConnection;
use deadpool_redis::redis::{self, AsyncCommands as _};
use deadpool_redis::{Config, Pool, Runtime};
use tracing::Instrument as _;

use super::key::CacheKey;
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
    started: Instant,
    /// Milliseconds since `started` of the last warning, to rate-limit them.
    last_warning: AtomicU64,
}

#[derive(Debug, thiserror::Error)]
#[error("invalid Redis configuration")]
pub struct RedisConfigError;

impl RedisTier {
    pub fn new(
        url: &str,
        prefix: String,
        timeout: Duration,
        stats: Arc<CacheStats>,
    ) -> Result<Self, RedisConfigError> {
        let mut config = Config::from_url(url);
        let mut pool_config = deadpool_redis::PoolConfig::new(32);
        pool_config.timeouts.wait = Some(timeout);
        pool_config.timeouts.create = Some(timeout.max(Duration::from_millis(250)));
        pool_config.timeouts.recycle = Some(timeout);
        config.pool = Some(pool_config);
        let pool = config
            .create_pool(Some(Runtime::Tokio1))
            .map_err(|_| RedisConfigError)?;
        Ok(Self {
            pool,
            shared: Mutex::new(None),
            prefix,
            timeout,
            stats,
            started: Instant::now(),
            last_warning: AtomicU64::new(0),
        })
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

    /// Counts one failure under `key` in a fixed window that starts with the first one.
    /// Returns the shared count and the time left in the window.
    pub async fn count_failure(&self, key: CacheKey, window: Duration) -> Option<(u64, Duration)> {
        let counter = format!("{}t:{}", self.prefix, key.to_hex());
        let window_ms = window.as_millis().max(1) as u64;
        self.bounded("count failure", async move {
            let mut conn = self.connection().await?;
            let (count, ttl_ms): (u64, i64) = redis::pipe()
                .atomic()
                .cmd("SET")
                .arg(&counter)
                .arg(0)
                .arg("NX")
                .arg("PX")
                .arg(window_ms)
                .ignore()
                .cmd("INCR")
                .arg(&counter)
                .cmd("PTTL")
                .arg(&counter)
                .query_async(&mut conn)
                .await
                .map_err(|e| e.to_string())?;
            Ok((count, Duration::from_millis(ttl_ms.max(0) as u64)))
        })
        .await
    }

    /// Drops every entry indexed under `user_id`.
    pub async fn evict_user(&self, user_id: i64) {
        let index = self.user_index(user_id);
        self.bounded("evict", async move {
            let mut conn = self.connection().await?;
            let members: Vec<String> = conn.smembers(&index).await.map_err(|e| e.to_string())?;
            let mut pipe = redis::pipe();
            for member in &members {
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
        let call = Box::pin(call);
        let span = tracing::info_span!(
            "redis",
            otel.kind = "client",
            db.system = "redis",
            db.operation.name = operation
        );
        async move {
            match tokio::time::timeout(self.timeout, call)
                .instrument(span)
                .await
            {
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
        let now = self.started.elapsed().as_millis() as u64;
        let last = self.last_warning.load(Ordering::Relaxed);
        if (last == 0 || now.saturating_sub(last) >= 10_000)
            && self
                .last_warning
                .compare_exchange(last, now.max(1), Ordering::Relaxed, Ordering::Relaxed)
                .is_ok()
        {
            let errors = self.stats.redis_errors.get();
            tracing::warn!(
                operation,
                errors,
                "Redis unavailable or slow; deciding from the in-process tier and the database"
            );
        }
    }
}
