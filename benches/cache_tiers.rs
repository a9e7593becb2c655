//! One lookup per cache tier, through `CachedDirectory::user_by_api_key` itself: an
//! in-process (L1) hit, a Redis hit (in-process tier off) and a database miss (caches off),
//! against a real PostgreSQL bench database and the local Redis (a unique key prefix).
//!
//! Needs the database `scripts/bench.sh` prepares (`authz_bench_10k`); it creates it if
//! it is missing.

#[path = "common/mod.rs"]
mod common;

use std::sync::Arc;
use std::time::Duration;

use criterion::{criterion_group, criterion_main, Criterion};
use redmine_authz::auth::ApiKey;
use redmine_authz::cache::{CacheOptions, CacheStats, CachedDirectory, KeyHasher, RedisTier};
use redmine_authz::clock::SystemClock;
use redmine_authz::directory::Directory as _;
use redmine_authz::redis::Redis;
use redmine_authz::store::{Store, StoreOptions};

const USERS: u64 = 10_000;
/// Keys cycled through, so the database and Redis do not answer one hot row.
const KEYS: u64 = 1_000;

fn directory(options: CacheOptions, redis_prefix: Option<&str>) -> CachedDirectory<Store> {
    let url = common::database_url(&common::database_name(USERS));
    let store = Store::connect_lazy(url.parse().expect("database url"), &StoreOptions::default());
    let stats = Arc::new(CacheStats::default());
    let redis = redis_prefix.map(|prefix| {
        let redis = Redis::new(
            &common::redis_url(),
            prefix.to_owned(),
            Duration::from_millis(100),
            stats.redis_errors.clone(),
        )
        .expect("redis url");
        RedisTier::new(redis, stats.clone())
    });
    CachedDirectory::new(
        Arc::new(store),
        options,
        Arc::new(KeyHasher::random()),
        redis,
        Arc::new(SystemClock),
        stats,
    )
}

fn keys() -> Vec<ApiKey> {
    (1..=KEYS)
        .map(|i| ApiKey::parse(&common::bench_key(i)).expect("bench key"))
        .collect()
}

fn cache_tiers(c: &mut Criterion) {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    runtime
        .block_on(common::prepare_database(USERS))
        .expect("bench database");
    // The pool and Redis tier spawn their maintenance tasks on this runtime.
    let _context = runtime.enter();
    let keys = keys();
    let prefix = format!("authz-bench-tiers-{}:", std::process::id());

    let l1 = directory(CacheOptions::default(), None);
    let redis = directory(
        CacheOptions {
            l1_capacity: 0,
            ..CacheOptions::default()
        },
        Some(&prefix),
    );
    let database = directory(
        CacheOptions {
            ttl: Duration::ZERO,
            ..CacheOptions::default()
        },
        None,
    );
    // Warm L1 and Redis, and check every tier finds the users.
    runtime.block_on(async {
        for key in &keys {
            for tier in [&l1, &redis, &database] {
                let found = tier.user_by_api_key(key).await.expect("lookup");
                assert!(found.is_some(), "bench key not found");
            }
        }
    });
    let before = |tier: &CachedDirectory<Store>| {
        let stats = tier.stats();
        (
            CacheStats::get(&stats.l1_hits),
            CacheStats::get(&stats.redis_hits),
            CacheStats::get(&stats.directory_lookups),
        )
    };
    let counts = [before(&l1), before(&redis), before(&database)];

    let mut group = c.benchmark_group("cache_tier_lookup");
    for (name, tier) in [
        ("l1_hit", &l1),
        ("redis_hit", &redis),
        ("database_miss", &database),
    ] {
        let mut next = 0usize;
        group.bench_function(name, |b| {
            b.to_async(&runtime).iter(|| {
                next = (next + 1) % keys.len();
                let key = &keys[next];
                async move { tier.user_by_api_key(key).await.expect("lookup") }
            })
        });
    }
    group.finish();

    // Each tier answered from where its name says.
    let after = [before(&l1), before(&redis), before(&database)];
    assert_eq!(after[0].2, counts[0].2, "L1 benchmark reached the database");
    assert_eq!(
        after[1].2, counts[1].2,
        "Redis benchmark reached the database"
    );
    assert!(
        after[1].1 > counts[1].1,
        "Redis benchmark had no Redis hits"
    );
    assert!(after[2].2 > counts[2].2, "database benchmark did not query");
    runtime.block_on(common::delete_redis_prefix(&prefix));
}

criterion_group!(benches, cache_tiers);
criterion_main!(benches);
