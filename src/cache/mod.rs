//! Two cache tiers in front of the directory: in-process (quick_cache) and Redis. Both hold what the
//! directory answered (the principal, a token's times and scopes), never a decision: expiry,
//! switch-user and every other rule are applied on each request by the decision core.
//!
//! Misses for one key are coalesced into one lookup (a quick_cache placeholder). Entries carry
//! their own expiry, read from the [`Clock`], so a test can move time past a TTL. What Redis
//! holds is sealed (`seal.rs`): a value nobody but this deployment wrote is a miss.

mod entry;
mod key;
mod redis;
mod seal;
mod stats;
mod tier;

use std::collections::HashSet;
use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use quick_cache::sync::Cache;

use crate::auth::{
    AccessToken, ApiKey, BearerToken, Login, Password, PasswordCheck, Principal, Settings,
};
use crate::clock::Clock;
use crate::directory::{Directory, DirectoryError};
use crate::store::Invalidation;

pub use key::{CacheKey, KeyHasher, KeyKind};
pub use redis::RedisTier;
pub use seal::Rejection;
pub use stats::{CacheStats, RejectionLabels, TierLabels};
pub use tier::{dearest_tier, track_tier, Tier, TierTracked};

use entry::{Answer, Cached, Entry};
use seal::Seal;
use tier::reached;

#[derive(Debug, Clone)]
pub struct CacheOptions {
    /// How long a found user, key or token is kept; zero turns caching off.
    pub ttl: Duration,
    /// How long a "not found" or wrong password is kept.
    pub negative_ttl: Duration,
    /// Entries in the in-process tier; zero keeps nothing in process (misses still coalesce).
    pub l1_capacity: u64,
}

impl Default for CacheOptions {
    fn default() -> Self {
        Self {
            ttl: Duration::from_secs(60),
            negative_ttl: Duration::from_secs(10),
            l1_capacity: 100_000,
        }
    }
}

pub struct CachedDirectory<D> {
    inner: Arc<D>,
    options: CacheOptions,
    hasher: Arc<KeyHasher>,
    l1: Cache<CacheKey, Arc<Entry>>,
    redis: Option<Arc<RedisTier>>,
    /// Seals what goes to Redis and opens what comes back.
    seal: Seal,
    clock: Arc<dyn Clock>,
    stats: Arc<CacheStats>,
    /// Bumped before and after every eviction. A lookup that saw it move while it was
    /// reading may hold what the eviction meant to drop, so its result is not kept.
    epoch: AtomicU64,
}

impl<D: Directory> CachedDirectory<D> {
    pub fn new(
        inner: Arc<D>,
        options: CacheOptions,
        hasher: Arc<KeyHasher>,
        redis: Option<Arc<RedisTier>>,
        clock: Arc<dyn Clock>,
        stats: Arc<CacheStats>,
    ) -> Self {
        // Capacity alone bounds memory: freshness is judged by `Entry::expires_at`, and a
        // stale entry is dropped when next read or pushed out by newer ones. quick_cache
        // rather than moka: far less bookkeeping per entry, and a `get` that takes no lock
        // for long (BENCHMARKS.md: 100k principals in 40 MiB instead of 73).
        let l1 = Cache::new(usize::try_from(options.l1_capacity).unwrap_or(usize::MAX));
        let seal = Seal::new(&hasher, redis.as_ref().map_or("", |redis| redis.prefix()));
        Self {
            inner,
            options,
            hasher,
            l1,
            redis,
            seal,
            clock,
            stats,
            epoch: AtomicU64::new(0),
        }
    }

    pub fn stats(&self) -> &Arc<CacheStats> {
        &self.stats
    }

    fn enabled(&self) -> bool {
        !self.options.ttl.is_zero()
    }

    /// What `fetch` answers for `key`, from the cheapest tier that has it. `fetch` is called
    /// only on a miss.
    async fn cached<T, F>(
        &self,
        key: CacheKey,
        fetch: impl FnOnce() -> F + Send,
    ) -> Result<T, DirectoryError>
    where
        T: Cached,
        F: Future<Output = Result<T, DirectoryError>> + Send,
    {
        let answer = self
            .lookup(key, async { fetch().await.map(T::into_answer) })
            .await?;
        T::from_answer(answer)
            .ok_or_else(|| DirectoryError::Unavailable("cache entry of the wrong kind".to_owned()))
    }

    /// L1, then Redis, then the directory, with concurrent misses for `key` coalesced.
    async fn lookup<F>(&self, key: CacheKey, fetch: F) -> Result<Answer, DirectoryError>
    where
        F: Future<Output = Result<Answer, DirectoryError>> + Send,
    {
        if !self.enabled() {
            self.stats.directory_lookups.inc();
            reached(Tier::Db);
            // Boxed, like every path that leaves the process: the future of a Check is
            // moved several times, and an inline database future would make it kilobytes.
            return Box::pin(self.counting_errors(fetch)).await;
        }
        let now = self.clock.now();
        if let Some(entry) = self.l1.get(&key) {
            if entry.expires_at > now {
                self.stats.l1_hits.inc();
                reached(Tier::L1);
                return Ok(entry.answer.clone());
            }
            self.l1.remove(&key);
        }
        Box::pin(self.fill(key, now, fetch)).await
    }

    /// The L1 miss: Redis, else the directory, with the answer written back to both.
    /// Redis is read outside the coalescing: a hit needs no company, and a placeholder's
    /// insert and removal would double its cost when L1 is off.
    async fn fill<F>(
        &self,
        key: CacheKey,
        now: DateTime<Utc>,
        fetch: F,
    ) -> Result<Answer, DirectoryError>
    where
        F: Future<Output = Result<Answer, DirectoryError>> + Send,
    {
        let epoch = self.epoch.load(Ordering::SeqCst);
        if let Some(entry) = self.read_redis(key, now).await {
            self.stats.redis_hits.inc();
            reached(Tier::Redis);
            let answer = entry.answer.clone();
            if self.keeps_in_process(epoch) {
                self.l1.insert(key, Arc::new(entry));
            }
            return Ok(answer);
        }
        // One lookup per key at a time: the first miss holds the placeholder, the others
        // wait for its entry. Should it fail, the next waiter takes the placeholder and tries.
        let placeholder = match self.l1.get_value_or_guard_async(&key).await {
            Ok(entry) => return Ok(entry.answer.clone()),
            Err(placeholder) => placeholder,
        };
        self.stats.directory_lookups.inc();
        reached(Tier::Db);
        let answer = self.counting_errors(fetch).await?;
        let ttl = if answer.user_id().is_some() {
            self.options.ttl
        } else {
            self.options.negative_ttl
        };
        let entry = Entry {
            expires_at: now + ttl,
            answer,
        };
        if self.epoch.load(Ordering::SeqCst) == epoch {
            self.write_redis(key, &entry).await;
        }
        let answer = entry.answer.clone();
        let _ = placeholder.insert(Arc::new(entry));
        if !self.keeps_in_process(epoch) {
            self.l1.remove(&key);
        }
        Ok(answer)
    }

    /// Whether an answer read since `epoch` may stay in L1: not with L1 off, and not when an
    /// eviction ran meanwhile (the answer may be what it meant to drop).
    fn keeps_in_process(&self, epoch: u64) -> bool {
        self.options.l1_capacity > 0 && self.epoch.load(Ordering::SeqCst) == epoch
    }

    async fn counting_errors<T>(
        &self,
        fetch: impl Future<Output = Result<T, DirectoryError>>,
    ) -> Result<T, DirectoryError> {
        let result = fetch.await;
        if result.is_err() {
            self.stats.directory_errors.inc();
        }
        result
    }

    async fn read_redis(&self, key: CacheKey, now: DateTime<Utc>) -> Option<Entry> {
        let redis = self.redis.as_ref()?;
        let value = redis.get(key).await?;
        Entry::decode(&value, &self.seal, key, now)
            .inspect_err(|&reason| redis.rejected(reason))
            .ok()
    }

    /// Redis keeps the entry until the expiry it carries, not a TTL from now: the lookup
    /// took time, and an entry Redis still holds past that expiry would be refused.
    async fn write_redis(&self, key: CacheKey, entry: &Entry) {
        let Some(redis) = &self.redis else { return };
        let Ok(ttl) = (entry.expires_at - self.clock.now()).to_std() else {
            return;
        };
        if ttl.is_zero() {
            return;
        }
        if let Some(value) = entry.encode(&self.seal, key) {
            redis.set(key, value, ttl, entry.answer.user_id()).await;
        }
    }

    /// Applies the notifications that arrived together. Settings are not cached here (the
    /// settings watch re-reads them); the listener's own state concerns the key filter.
    pub async fn invalidate(&self, events: &[Invalidation]) {
        let mut users = HashSet::new();
        let mut all = false;
        for event in events {
            match event {
                Invalidation::User(user_id) => _ = users.insert(*user_id),
                Invalidation::All => all = true,
                Invalidation::Settings => {}
                Invalidation::Listening | Invalidation::NotListening => continue,
            }
            self.stats.evictions.inc();
        }
        if !all && users.is_empty() {
            return;
        }
        self.epoch.fetch_add(1, Ordering::SeqCst);
        if all {
            self.evict_all().await;
        } else {
            self.evict_users(&users).await;
        }
        // Lookups that began mid-eviction may have read Redis before it was cleared.
        self.epoch.fetch_add(1, Ordering::SeqCst);
    }

    /// Redis first, then L1: a lookup between the two refills L1 from the database. One pass
    /// over L1 for all the users: a pass per notification stalled Checks in bulk updates.
    async fn evict_users(&self, users: &HashSet<i64>) {
        if let Some(redis) = &self.redis {
            for &user_id in users {
                redis.evict_user(user_id).await;
            }
        }
        self.l1.retain(|_, entry| {
            entry
                .answer
                .user_id()
                .is_none_or(|user_id| !users.contains(&user_id))
        });
    }

    async fn evict_all(&self) {
        if let Some(redis) = &self.redis {
            redis.evict_all().await;
        }
        self.l1.clear();
    }
}

impl<D: Directory> Directory for CachedDirectory<D> {
    async fn user_by_api_key(&self, key: &ApiKey) -> Result<Option<Principal>, DirectoryError> {
        // Not cached: a flood of random keys would only push real entries out.
        if self.inner.refuses_api_key(key) {
            self.stats.filter_refusals.inc();
            reached(Tier::Filter);
            return Ok(None);
        }
        let cache_key = self.hasher.key(KeyKind::ApiKey, &[key.expose()]);
        self.cached(cache_key, || self.inner.user_by_api_key(key))
            .await
    }

    async fn user_by_login(&self, login: &Login) -> Result<Option<Principal>, DirectoryError> {
        let cache_key = self.hasher.key(KeyKind::Login, &[login.as_str()]);
        self.cached(cache_key, || self.inner.user_by_login(login))
            .await
    }

    async fn password_login(
        &self,
        login: &Login,
        password: &Password,
    ) -> Result<PasswordCheck, DirectoryError> {
        // Keyed by login and password together: a cached "valid" needs the same password.
        let cache_key = self
            .hasher
            .key(KeyKind::Password, &[login.as_str(), password.expose()]);
        self.cached(cache_key, || self.inner.password_login(login, password))
            .await
    }

    async fn access_token(
        &self,
        token: &BearerToken,
    ) -> Result<Option<AccessToken>, DirectoryError> {
        let cache_key = self.hasher.key(KeyKind::Bearer, &[token.expose()]);
        self.cached(cache_key, || self.inner.access_token(token))
            .await
    }

    async fn settings(&self) -> Result<Settings, DirectoryError> {
        self.inner.settings().await
    }
}
