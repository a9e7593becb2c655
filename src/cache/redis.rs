//! The shared tier: entries in Redis, through the shared connection (`crate::redis`). Every
//! key it writes expires: entries and user indexes with `PX`/`PEXPIRE` in the same round
//! trip.

use std::sync::Arc;
use std::time::Duration;

use deadpool_redis::redis::{self, AsyncCommands as _};

use super::key::CacheKey;
use super::seal::Rejection;
use super::CacheStats;
use crate::redis::{Redis, WarnLimit};

pub struct RedisTier {
    redis: Arc<Redis>,
    stats: Arc<CacheStats>,
    /// Refused values warned about, per `Rejection`, at most once a minute.
    rejection_warnings: [WarnLimit; Rejection::ALL.len()],
}

impl RedisTier {
    pub fn new(redis: Arc<Redis>, stats: Arc<CacheStats>) -> Arc<Self> {
        Arc::new(Self {
            redis,
            stats,
            rejection_warnings: Rejection::ALL.map(|_| WarnLimit::new(Duration::from_secs(60))),
        })
    }

    /// The prefix of every key this deployment writes; sealed values are bound to it.
    pub(super) fn prefix(&self) -> &str {
        self.redis.prefix()
    }

    fn entry_key(&self, key: CacheKey) -> String {
        format!("{}e:{}", self.prefix(), key.to_hex())
    }

    fn user_index(&self, user_id: i64) -> String {
        format!("{}u:{}", self.prefix(), user_id)
    }

    pub async fn get(&self, key: CacheKey) -> Option<Vec<u8>> {
        let entry_key = self.entry_key(key);
        self.redis
            .bounded("get", async move {
                let mut conn = self.redis.connection().await?;
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
        self.redis
            .bounded("set", async move {
                let mut conn = self.redis.connection().await?;
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

    /// Drops every entry indexed under `user_id`.
    pub async fn evict_user(&self, user_id: i64) {
        let index = self.user_index(user_id);
        self.redis
            .bounded("evict", async move {
                let mut conn = self.redis.connection().await?;
                let members: Vec<String> =
                    conn.smembers(&index).await.map_err(|e| e.to_string())?;
                // Only our own entries: a name planted in the index must not make the gate
                // delete keys outside its prefix that the planter could not reach itself.
                let entries = format!("{}e:", self.prefix());
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
        let pattern = format!("{}*", self.prefix());
        let result = tokio::time::timeout(self.redis.timeout() * 20, async move {
            let mut conn = self.redis.connection().await?;
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
            self.redis.failed("evict all");
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
