//! What the benchmark binaries share: where PostgreSQL and Redis are, the bench databases and
//! the API keys seeded into them. Included with `#[path]`; it is not a bench target itself.
#![allow(dead_code)] // Each bench binary uses part of it.

use sha2::Digest as _;
use sqlx::{Connection as _, PgConnection};

/// The PostgreSQL server the bench databases live on.
pub fn admin_url() -> String {
    std::env::var("BENCH_DATABASE_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".to_owned())
}

pub fn redis_url() -> String {
    std::env::var("BENCH_REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".to_owned())
}

/// Deletes every Redis key under `prefix` (what a bench run left behind).
pub async fn delete_redis_prefix(prefix: &str) {
    use deadpool_redis::redis::AsyncCommands as _;
    let Ok(client) = deadpool_redis::redis::Client::open(redis_url()) else {
        return;
    };
    let Ok(mut conn) = client.get_multiplexed_async_connection().await else {
        return;
    };
    let keys: Vec<String> = conn.keys(format!("{prefix}*")).await.unwrap_or_default();
    for chunk in keys.chunks(500) {
        let _: Result<(), _> = conn.del(chunk).await;
    }
}

pub fn database_url(name: &str) -> String {
    let admin = admin_url();
    let base = admin
        .rsplit_once('/')
        .map(|(base, _)| base)
        .unwrap_or(&admin);
    format!("{base}/{name}")
}

/// The bench database with `users` generated users (plus the demo users), each with a key.
pub fn database_name(users: u64) -> String {
    match users {
        n if n % 1_000_000 == 0 => format!("authz_bench_{}m", n / 1_000_000),
        n if n % 1_000 == 0 => format!("authz_bench_{}k", n / 1_000),
        n => format!("authz_bench_{n}"),
    }
}

/// The API key of generated user `i` (1-based): 40 hex characters, the same as the SQL
/// that seeds it computes.
pub fn bench_key(i: u64) -> String {
    let digest = sha2::Sha256::digest(format!("bench-key-{i}").as_bytes());
    hex::encode(digest)[..40].to_owned()
}

/// Creates and seeds the bench database for `users` users unless a complete one is there
/// (the 1M-user seed takes a minute; it is kept between runs).
pub async fn prepare_database(users: u64) -> Result<String, Box<dyn std::error::Error>> {
    let name = database_name(users);
    let url = database_url(&name);
    let mut admin = PgConnection::connect(&admin_url()).await?;
    let exists: bool =
        sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM pg_database WHERE datname = $1)")
            .bind(&name)
            .fetch_one(&mut admin)
            .await?;
    if exists && is_complete(&url, users).await {
        install_triggers(&url).await?;
        return Ok(url);
    }
    if exists {
        sqlx::query(&format!("DROP DATABASE {name} WITH (FORCE)"))
            .execute(&mut admin)
            .await?;
    }
    eprintln!("seeding {name} with {users} users and API keys ...");
    sqlx::query(&format!("CREATE DATABASE {name}"))
        .execute(&mut admin)
        .await?;
    redmine_authz::store::seed_demo(&url.parse()?, false).await?;
    let mut db = PgConnection::connect(&url).await?;
    sqlx::query(
        "INSERT INTO users (login, firstname, lastname, status, type, created_on, updated_on) \
         SELECT 'bench' || i, 'Bench', 'User ' || i, 1, 'User', \
                now() AT TIME ZONE 'UTC', now() AT TIME ZONE 'UTC' \
         FROM generate_series(1, $1::int8) AS i",
    )
    .bind(users as i64)
    .execute(&mut db)
    .await?;
    sqlx::query(
        "INSERT INTO tokens (user_id, action, value, created_on) \
         SELECT u.id, 'api', \
                left(encode(sha256(convert_to('bench-key-' || substr(u.login, 6), 'UTF8')), 'hex'), 40), \
                now() AT TIME ZONE 'UTC' \
         FROM users u WHERE u.login LIKE 'bench%'",
    )
    .execute(&mut db)
    .await?;
    sqlx::query("VACUUM ANALYZE").execute(&mut db).await?;
    if !is_complete(&url, users).await {
        return Err(format!("{name}: seeded keys do not match bench_key()").into());
    }
    install_triggers(&url).await?;
    Ok(url)
}

/// The notification triggers, as `install-triggers` puts them on a production database:
/// eviction and the API key filter depend on them. After seeding, so the bulk insert sends
/// no notifications.
async fn install_triggers(url: &str) -> Result<(), Box<dyn std::error::Error>> {
    redmine_authz::store::install_triggers(&url.parse()?).await?;
    Ok(())
}

/// True when user `users` exists with the key `bench_key(users)` and no user beyond it.
async fn is_complete(url: &str, users: u64) -> bool {
    let Ok(mut db) = PgConnection::connect(url).await else {
        return false;
    };
    let last: Result<i64, _> = sqlx::query_scalar(
        "SELECT count(*) FROM tokens t JOIN users u ON u.id = t.user_id \
         WHERE (u.login = 'bench' || $1::int8 AND t.value = $2) OR u.login = 'bench' || ($1::int8 + 1)",
    )
    .bind(users as i64)
    .bind(bench_key(users))
    .fetch_one(&mut db)
    .await;
    matches!(last, Ok(1))
}
