//! Two cache tiers in front of the directory: in-process (quick_cache) and Redis. Both hold what the
//! directory answered (the principal, a token's times and scopes), never a decision: expiry,
//! switch-user and every other rule are applied on each request by the decision core.
//!
//! Misses for one key are coalesced into one lookup (a quick_cache placeholder). Entries carry
//! their own expiry, read from the [`Clock`], so a test can move time past a TTL. What Redis
//! holds is sealed (`seal.rs`): a value nobody but this deployment wrote is a miss.

mod key;
mod redis;
mod seal;

use std::cell::Cell;
use std::collections::HashSet;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use quick_cache::sync::Cache;
use serde::{Deserialize, Serialize};

use crate::auth::{
    AccessToken, ApiKey, BearerToken, Login, Password, PasswordCheck, Principal, Settings,
};
use crate::clock::Clock;
use crate::directory::{Directory, DirectoryError};
use crate::store::Invalidation;

pub use key::{CacheKey, KeyHasher, KeyKind};
pub use redis::{RedisConfigError, RedisTier, SharedCounter};
pub use seal::Rejection;

use seal::Seal;

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

/// The tier that answered a lookup, from cheapest to dearest.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Tier {
    #[default]
    None,
    /// Refused by the API key filter (`store::KnownKeys`) without a lookup.
    Filter,
    L1,
    Redis,
    Db,
}

impl Tier {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::None => "none",
            Self::Filter => "filter",
            Self::L1 => "l1",
            Self::Redis => "redis",
            Self::Db => "db",
        }
    }
}

tokio::task_local! {
    static DEAREST_TIER: Cell<Tier>;
}

/// `work` with a slot for the dearest tier its lookups reach (for the span and audit line).
pub type TierTracked<F> = tokio::task::futures::TaskLocalFuture<Cell<Tier>, F>;

pub fn track_tier<F: Future>(work: F) -> TierTracked<F> {
    DEAREST_TIER.scope(Cell::new(Tier::None), work)
}

/// The dearest tier reached, read once `tracked` has finished (or panicked). A plain
/// function rather than an async wrapper, which would hold `work` twice over.
pub fn dearest_tier<F: Future>(tracked: Pin<&mut TierTracked<F>>) -> Tier {
    tracked.take_value().map_or(Tier::None, Cell::into_inner)
}

fn reached(tier: Tier) {
    let _ = DEAREST_TIER.try_with(|dearest| dearest.set(dearest.get().max(tier)));
}

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

/// What a cached lookup answered. The token is boxed: it is twice the size of the other
/// answers, and every entry would pay for it.
#[derive(Debug, Clone, Serialize, Deserialize)]
enum Answer {
    User(Option<Principal>),
    Password(PasswordCheck),
    Token(Option<Box<AccessToken>>),
}

impl Answer {
    /// The user this answer is about, for eviction; `None` for a negative answer.
    fn user_id(&self) -> Option<i64> {
        match self {
            Self::User(Some(p))
            | Self::Password(PasswordCheck::Valid(p) | PasswordCheck::External(p)) => Some(p.id),
            Self::Token(Some(token)) => token.owner.as_ref().map(|p| p.id),
            _ => None,
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct Entry {
    answer: Answer,
    /// Microseconds, not chrono's default RFC 3339 text: parsing that text was a fifth of
    /// reading an entry back.
    #[serde(with = "chrono::serde::ts_microseconds")]
    expires_at: DateTime<Utc>,
}

impl Entry {
    /// The Redis value for `key`: postcard, sealed. postcard rather than JSON: decoding a
    /// principal from JSON was 6.8k instructions, a fifth of a Redis hit's own work
    /// (callgrind).
    fn encode(&self, seal: &Seal, key: CacheKey) -> Option<Vec<u8>> {
        let mut value = postcard::to_extend(self, vec![0; seal::HEADER_LEN]).ok()?;
        seal.seal(key, &mut value);
        Some(value)
    }

    /// The entry `value` holds, if this deployment sealed it for `key` and it has not
    /// expired by the time it carries (Redis's own TTL is not trusted).
    fn decode(
        value: &[u8],
        seal: &Seal,
        key: CacheKey,
        now: DateTime<Utc>,
    ) -> Result<Self, Rejection> {
        let body = seal.open(key, value)?;
        // Authentic but unreadable: written by a release with the same format byte and
        // another layout, which the format byte exists to prevent.
        let entry: Self = postcard::from_bytes(body).map_err(|_| Rejection::Format)?;
        if entry.expires_at <= now {
            return Err(Rejection::Expired);
        }
        Ok(entry)
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

fn unexpected() -> DirectoryError {
    DirectoryError::Unavailable("cache entry of the wrong kind".to_owned())
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
        match self
            .lookup(cache_key, async {
                self.inner.user_by_api_key(key).await.map(Answer::User)
            })
            .await?
        {
            Answer::User(user) => Ok(user),
            _ => Err(unexpected()),
        }
    }

    async fn user_by_login(&self, login: &Login) -> Result<Option<Principal>, DirectoryError> {
        let cache_key = self.hasher.key(KeyKind::Login, &[login.as_str()]);
        match self
            .lookup(cache_key, async {
                self.inner.user_by_login(login).await.map(Answer::User)
            })
            .await?
        {
            Answer::User(user) => Ok(user),
            _ => Err(unexpected()),
        }
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
        match self
            .lookup(cache_key, async {
                self.inner
                    .password_login(login, password)
                    .await
                    .map(Answer::Password)
            })
            .await?
        {
            Answer::Password(check) => Ok(check),
            _ => Err(unexpected()),
        }
    }

    async fn access_token(
        &self,
        token: &BearerToken,
    ) -> Result<Option<AccessToken>, DirectoryError> {
        let cache_key = self.hasher.key(KeyKind::Bearer, &[token.expose()]);
        match self
            .lookup(cache_key, async {
                self.inner
                    .access_token(token)
                    .await
                    .map(|found| Answer::Token(found.map(Box::new)))
            })
            .await?
        {
            Answer::Token(found) => Ok(found.map(|token| *token)),
            _ => Err(unexpected()),
        }
    }

    async fn settings(&self) -> Result<Settings, DirectoryError> {
        self.inner.settings().await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::NaiveDate;

    fn principal() -> Principal {
        Principal {
            id: 7,
            login: "zoë".into(),
            admin: false,
            status: 1,
            twofa: true,
            must_change_passwd: false,
            passwd_changed_on: NaiveDate::from_ymd_opt(2024, 2, 29)
                .and_then(|d| d.and_hms_micro_opt(23, 59, 58, 123_456)),
            external_auth: false,
        }
    }

    fn seal() -> (Seal, CacheKey) {
        let hasher = KeyHasher::new(b"test-secret-0123456789".to_vec().into());
        let key = hasher.key(KeyKind::ApiKey, &["a key"]);
        (Seal::new(&hasher, "authz:"), key)
    }

    fn written_at() -> DateTime<Utc> {
        DateTime::from_timestamp_micros(1_764_979_200_123_456).unwrap()
    }

    fn round_trip(answer: Answer) -> Answer {
        let (seal, key) = seal();
        let expires_at = written_at() + Duration::from_secs(60);
        let bytes = Entry { answer, expires_at }.encode(&seal, key).unwrap();
        let entry = Entry::decode(&bytes, &seal, key, written_at()).unwrap();
        assert_eq!(entry.expires_at, expires_at);
        entry.answer
    }

    #[test]
    fn redis_values_read_back_as_written() {
        let Answer::User(Some(user)) = round_trip(Answer::User(Some(principal()))) else {
            panic!("not a user");
        };
        assert_eq!(user, principal());
        assert!(matches!(round_trip(Answer::User(None)), Answer::User(None)));
        let Answer::Password(check) =
            round_trip(Answer::Password(PasswordCheck::External(principal())))
        else {
            panic!("not a password check");
        };
        assert_eq!(check, PasswordCheck::External(principal()));
        let token = AccessToken {
            application_id: Some(3),
            owner: Some(principal()),
            scopes: vec!["view_issues".into(), "add_issues".into()],
            created_at: principal().passwd_changed_on.unwrap(),
            expires_in_seconds: Some(7200),
            revoked_at: None,
        };
        let Answer::Token(Some(read)) = round_trip(Answer::Token(Some(Box::new(token.clone()))))
        else {
            panic!("not a token");
        };
        assert_eq!(*read, token);
    }

    #[test]
    fn foreign_damaged_or_expired_redis_values_are_misses() {
        let (seal, key) = seal();
        let now = written_at();
        let decode = |bytes: &[u8]| Entry::decode(bytes, &seal, key, now).map(|_| ());
        let json = br#"{"answer":{"User":null},"expires_at":"2026-12-05T00:00:00Z"}"#;
        assert_eq!(
            decode(json),
            Err(Rejection::Format),
            "an older release's JSON"
        );
        assert_eq!(decode(&[]), Err(Rejection::Format));
        let entry = Entry {
            answer: Answer::User(Some(principal())),
            expires_at: now + Duration::from_secs(60),
        };
        let bytes = entry.encode(&seal, key).unwrap();
        // The previous release wrote the same postcard behind format byte 1, unsealed.
        let previous = postcard::to_extend(&entry, vec![1]).unwrap();
        assert_eq!(decode(&previous), Err(Rejection::Format));
        for cut in 1..bytes.len() {
            assert_eq!(decode(&bytes[..cut]), Err(Rejection::Mac), "cut at {cut}");
        }
        // Sealed for another key: a valid value replayed under this one.
        let other = KeyHasher::new(b"test-secret-0123456789".to_vec().into())
            .key(KeyKind::ApiKey, &["another key"]);
        let replayed = entry.encode(&seal, other).unwrap();
        assert_eq!(decode(&replayed), Err(Rejection::Mac));
        // Authentic, but read at or past the expiry it carries.
        assert_eq!(
            Entry::decode(&bytes, &seal, key, entry.expires_at).map(|_| ()),
            Err(Rejection::Expired)
        );
        assert!(decode(&bytes).is_ok());
    }

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
