//! The cache (issue: warm decisions in microseconds, never a revoked credential): tiers,
//! TTLs on a test clock, single-flight, trigger-driven eviction, Redis failures, what Redis
//! ends up holding, and what it is refused (forged, replayed, cut and expired values).

use std::sync::atomic::Ordering;
use std::time::Duration;

use chrono::Utc;
use deadpool_redis::redis::{self, aio::MultiplexedConnection, AsyncCommands as _};
use redmine_authz::auth::Principal;
use redmine_authz::cache::{CacheStats, KeyHasher, KeyKind, Rejection};

use crate::helpers::*;

fn lookups(app: &TestApp) -> u64 {
    CacheStats::get(&app.stats.directory_lookups)
}

fn alice_key() -> CheckBuilder {
    get("/issues.json").header("x-redmine-api-key", demo_key("alice"))
}

/// Polls until `check` gives the wanted status, up to `limit`; returns the time it took.
#[tokio::test]
async fn second_check_is_an_in_process_hit() {
    let app = spawn_app(&[]).await;
    app.check(alice_key()).await.assert_user("alice", "api-key");
    app.check(alice_key()).await.assert_user("alice", "api-key");
    assert_eq!(lookups(&app), 1);
    assert_eq!(CacheStats::get(&app.stats.l1_hits), 1);
}

#[tokio::test]
async fn redis_tier_serves_when_the_in_process_tier_is_off() {
    let prefix = redis_prefix();
    let flags = [
        "--redis-url",
        "redis://127.0.0.1:6379",
        "--redis-key-prefix",
        &prefix,
        "--cache-secret",
        "shared-secret-for-tests",
        "--l1-capacity",
        "0",
    ];
    let first = spawn_app(&flags).await;
    first
        .check(alice_key())
        .await
        .assert_user("alice", "api-key");
    first
        .check(alice_key())
        .await
        .assert_user("alice", "api-key");
    assert_eq!(lookups(&first), 1);
    assert_eq!(CacheStats::get(&first.stats.redis_hits), 1);
    assert_eq!(CacheStats::get(&first.stats.l1_hits), 0);
    // A second replica with the same secret shares the entry.
    let second = spawn_app_on(&first.database_url, &flags).await;
    second
        .check(alice_key())
        .await
        .assert_user("alice", "api-key");
    assert_eq!(lookups(&second), 0);
    // Another secret: nothing shared.
    let other = spawn_app_on(
        &first.database_url,
        &[
            "--redis-url",
            "redis://127.0.0.1:6379",
            "--redis-key-prefix",
            &prefix,
            "--cache-secret",
            "a-different-secret-here",
        ],
    )
    .await;
    other
        .check(alice_key())
        .await
        .assert_user("alice", "api-key");
    assert_eq!(lookups(&other), 1);
}

#[tokio::test]
async fn entries_expire_after_their_ttl_on_the_clock() {
    let app = spawn_app(&["--cache-ttl", "60", "--negative-cache-ttl", "10"]).await;
    let start = Utc::now();
    app.set_now(start);
    app.check(alice_key()).await;
    app.set_now(start + chrono::Duration::seconds(59));
    app.check(alice_key()).await;
    assert_eq!(lookups(&app), 1);
    app.set_now(start + chrono::Duration::seconds(61));
    app.check(alice_key()).await.assert_user("alice", "api-key");
    assert_eq!(lookups(&app), 2);
}

#[tokio::test]
async fn unknown_credentials_are_cached_for_the_negative_ttl() {
    let app = spawn_app(&["--negative-cache-ttl", "10"]).await;
    let start = Utc::now();
    app.set_now(start);
    let unknown = get("/issues.json").header(
        "x-redmine-api-key",
        "0123456789abcdef0123456789abcdef01234567",
    );
    app.check(unknown.clone())
        .await
        .assert_denied(401, "invalid_api_key");
    app.check(unknown.clone())
        .await
        .assert_denied(401, "invalid_api_key");
    assert_eq!(lookups(&app), 1);
    app.set_now(start + chrono::Duration::seconds(11));
    app.check(unknown)
        .await
        .assert_denied(401, "invalid_api_key");
    assert_eq!(lookups(&app), 2);
    // Wrong passwords too.
    let wrong = get("/issues.json").header("authorization", &basic("alice", "wrong"));
    app.check(wrong.clone()).await;
    let before = lookups(&app);
    app.check(wrong).await.assert_denied(401, "invalid_basic");
    assert_eq!(lookups(&app), before);
}

#[tokio::test]
async fn basic_entries_need_the_same_password() {
    let app = spawn_app(&[]).await;
    app.check(get("/issues.json").header("authorization", &basic("alice", demo_password("alice"))))
        .await
        .assert_user("alice", "basic-password");
    app.check(get("/issues.json").header("authorization", &basic("alice", "not-her-password")))
        .await
        .assert_denied(401, "invalid_basic");
}

#[tokio::test]
async fn concurrent_misses_make_one_query() {
    let app = spawn_app(&[]).await;
    let verdicts = futures::future::join_all((0..64).map(|_| app.check(alice_key()))).await;
    for verdict in verdicts {
        verdict.assert_user("alice", "api-key");
    }
    assert_eq!(lookups(&app), 1, "64 concurrent misses for one key");
}

#[tokio::test]
async fn concurrent_misses_coalesce_with_the_in_process_tier_off() {
    let app = spawn_app(&["--l1-capacity", "0"]).await;
    // The lookup is held until every Check has arrived: with nothing kept in process, a
    // Check that arrived after the lookup ended would rightly look up again.
    let mut lock = app.db.begin().await.unwrap();
    sqlx::query("LOCK TABLE tokens IN ACCESS EXCLUSIVE MODE")
        .execute(&mut *lock)
        .await
        .unwrap();
    let release = async {
        let started = std::time::Instant::now();
        while lookups(&app) == 0 {
            assert!(
                started.elapsed() < Duration::from_secs(5),
                "no lookup began"
            );
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
        lock.commit().await.unwrap();
    };
    let checks = futures::future::join_all((0..64).map(|_| app.check(alice_key())));
    let (verdicts, ()) = tokio::join!(checks, release);
    for verdict in verdicts {
        verdict.assert_user("alice", "api-key");
    }
    assert_eq!(lookups(&app), 1, "64 concurrent misses for one key");
    app.check(alice_key()).await.assert_user("alice", "api-key");
    assert_eq!(lookups(&app), 2, "nothing kept in process");
}

#[tokio::test]
async fn triggers_evict_within_a_second() {
    // Settings are re-read only every minute here: the trigger must do it.
    let prefix = redis_prefix();
    let app = spawn_app(&[
        "--settings-refresh-secs",
        "60",
        "--cache-ttl",
        "600",
        "--redis-url",
        "redis://127.0.0.1:6379",
        "--redis-key-prefix",
        &prefix,
    ])
    .await;
    let limit = Duration::from_secs(1);
    let bearer = get("/issues.json").header("authorization", &format!("Bearer {DEMO_OAUTH_TOKEN}"));
    let mona = get("/issues.json").header("x-redmine-api-key", demo_key("mona"));
    let tina = get("/issues.json").header("x-redmine-api-key", demo_key("tina"));
    for request in [alice_key(), bearer.clone(), mona.clone(), tina.clone()] {
        assert_eq!(app.check(request.clone()).await.status(), 200);
        assert_eq!(app.check(request).await.status(), 200);
    }

    app.exec("UPDATE users SET status = 3 WHERE login = 'alice'")
        .await;
    let locked = app.until_status(alice_key(), 401, limit).await;
    app.exec("UPDATE oauth_access_tokens SET revoked_at = now() AT TIME ZONE 'UTC' - interval '1 second'").await;
    let revoked = app.until_status(bearer, 401, limit).await;
    app.exec("DELETE FROM tokens WHERE value = 'd3m0a11ce0000000000000000000000000000a06'")
        .await;
    let deleted = app.until_status(mona, 401, limit).await;
    app.exec("UPDATE tokens SET value = 'freshkey0000000000000000000000000000a05' WHERE value = 'd3m0a11ce0000000000000000000000000000a05'").await;
    let changed = app.until_status(tina, 401, limit).await;
    app.check(get("/issues.json").header(
        "x-redmine-api-key",
        "freshkey0000000000000000000000000000a05",
    ))
    .await
    .assert_user("tina", "api-key");
    let admin = get("/issues.json").header("x-redmine-api-key", demo_key("admin"));
    app.check(admin.clone())
        .await
        .assert_user("admin", "api-key");
    app.set_setting("rest_api_enabled", "0").await;
    let disabled = app.until_status(admin, 403, limit).await;
    println!("evicted after: lock {locked:?}, revoke {revoked:?}, delete key {deleted:?}, change key {changed:?}, REST off {disabled:?}");
}

#[tokio::test]
async fn without_triggers_changes_take_effect_within_the_ttl() {
    let database = fresh_database().await;
    let pool = sqlx::PgPool::connect(&database).await.unwrap();
    let options = database.parse().unwrap();
    redmine_authz::store::uninstall_triggers(&options)
        .await
        .unwrap();
    let app = spawn_app_on(
        &database,
        &["--listen-invalidations", "false", "--cache-ttl", "60"],
    )
    .await;
    let start = Utc::now();
    app.set_now(start);
    app.check(alice_key()).await.assert_user("alice", "api-key");
    sqlx::query("UPDATE users SET status = 3 WHERE login = 'alice'")
        .execute(&pool)
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    app.check(alice_key()).await.assert_user("alice", "api-key"); // stale, inside the TTL
    app.set_now(start + chrono::Duration::seconds(61));
    app.check(alice_key())
        .await
        .assert_denied(401, "invalid_api_key");
}

#[tokio::test]
async fn last_login_updates_do_not_evict() {
    let app = spawn_app(&[]).await;
    app.check(alice_key()).await;
    let before = CacheStats::get(&app.stats.evictions);
    app.exec("UPDATE users SET last_login_on = now() WHERE login = 'alice'")
        .await;
    app.exec("INSERT INTO tokens (user_id, action, value, created_on) SELECT id, 'session', 'sessiontoken', now() FROM users WHERE login = 'alice'").await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(CacheStats::get(&app.stats.evictions), before);
    app.check(alice_key()).await;
    assert_eq!(lookups(&app), 1);
}

#[tokio::test]
async fn a_bulk_update_evicts_every_user_it_touches() {
    let app = spawn_app(&["--cache-ttl", "600"]).await;
    let with_key = |login| get("/issues.json").header("x-redmine-api-key", demo_key(login));
    for login in ["alice", "mona", "admin", "tina"] {
        app.check(with_key(login)).await;
    }
    // One statement, three notifications, applied together in one pass over the cache.
    app.exec("UPDATE users SET status = 3 WHERE login IN ('alice', 'mona', 'admin')")
        .await;
    for login in ["alice", "mona", "admin"] {
        app.until_status(with_key(login), 401, Duration::from_secs(1))
            .await;
    }
    // The user the update did not touch keeps her entry.
    let before = lookups(&app);
    app.check(with_key("tina")).await;
    assert_eq!(lookups(&app), before);
}

/// A private Redis on its own port, killed when dropped.
struct PrivateRedis {
    port: u16,
    child: Option<tokio::process::Child>,
}

impl PrivateRedis {
    async fn start(port: u16) -> Self {
        let child = tokio::process::Command::new("redis-server")
            .args([
                "--port",
                &port.to_string(),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
            ])
            .stdout(std::process::Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .expect("redis-server on PATH");
        for _ in 0..100 {
            if tokio::net::TcpStream::connect(("127.0.0.1", port))
                .await
                .is_ok()
            {
                return Self {
                    port,
                    child: Some(child),
                };
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        panic!("private redis-server did not start");
    }

    async fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            child.kill().await.unwrap();
        }
    }
}

#[tokio::test]
async fn redis_stopped_mid_test_is_slower_never_wrong() {
    let mut redis = PrivateRedis::start(free_port()).await;
    let url = format!("redis://127.0.0.1:{}", redis.port);
    let app = spawn_app(&[
        "--redis-url",
        &url,
        "--l1-capacity",
        "0",
        "--redis-timeout-ms",
        "50",
    ])
    .await;
    app.check(alice_key()).await.assert_user("alice", "api-key");
    app.check(alice_key()).await.assert_user("alice", "api-key");
    assert_eq!(CacheStats::get(&app.stats.redis_hits), 1);

    redis.stop().await;
    for _ in 0..3 {
        app.check(alice_key()).await.assert_user("alice", "api-key");
        app.check(get("/issues.json").header("x-redmine-api-key", demo_key("larry")))
            .await
            .assert_denied(401, "invalid_api_key");
        app.check(get("/issues.json"))
            .await
            .assert_denied(401, "no_credential");
    }
    assert!(CacheStats::get(&app.stats.redis_errors) > 0);

    // Back on the same port: the pool reconnects by itself.
    let _redis = PrivateRedis::start(redis.port).await;
    let hits = CacheStats::get(&app.stats.redis_hits);
    let started = std::time::Instant::now();
    while CacheStats::get(&app.stats.redis_hits) == hits {
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "Redis tier did not come back"
        );
        app.check(alice_key()).await.assert_user("alice", "api-key");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn redis_holds_no_credential_or_hash() {
    let prefix = redis_prefix();
    let app = spawn_app(&[
        "--redis-url",
        "redis://127.0.0.1:6379",
        "--redis-key-prefix",
        &prefix,
        "--cache-secret",
        "scan-test-secret-0123",
    ])
    .await;
    for user in DEMO_USERS {
        app.check(get("/issues.json").header("authorization", &basic(user.login, user.password)))
            .await;
        if let Some(key) = user.api_key {
            app.check(get("/issues.json").header("x-redmine-api-key", key))
                .await;
            app.check(get("/issues.json").header("authorization", &basic(key, "x")))
                .await;
        }
    }
    app.check(get("/issues.json").header("authorization", &format!("Bearer {DEMO_OAUTH_TOKEN}")))
        .await;
    app.check(
        get("/issues.json")
            .header("x-redmine-api-key", demo_key("admin"))
            .header("x-redmine-switch-user", "alice"),
    )
    .await;
    let secrets = Box::pin(app.secrets()).await;

    let mut redis = std::process::Command::new("redis-cli");
    let keys = redis
        .args([
            "-h",
            "127.0.0.1",
            "--scan",
            "--pattern",
            &format!("{prefix}*"),
        ])
        .output()
        .unwrap();
    let keys = String::from_utf8(keys.stdout).unwrap();
    let keys: Vec<&str> = keys.lines().collect();
    assert!(keys.len() >= 10, "entries were written: {keys:?}");
    let mut dump = keys.join("\n");
    for key in &keys {
        let kind = std::process::Command::new("redis-cli")
            .args(["-h", "127.0.0.1", "TYPE", key])
            .output()
            .unwrap();
        let command: &[&str] = if String::from_utf8_lossy(&kind.stdout).trim() == "set" {
            &["SMEMBERS"]
        } else {
            &["GET"]
        };
        let value = std::process::Command::new("redis-cli")
            .args(["-h", "127.0.0.1"])
            .args(command)
            .arg(key)
            .output()
            .unwrap();
        dump.push_str(&String::from_utf8_lossy(&value.stdout));
    }
    // Values are principals (postcard, logins as plain UTF-8): keys are all hex.
    assert!(dump.contains("alice"), "values are principals: {dump}");
    for secret in &secrets {
        assert!(
            !dump.contains(secret.as_str()),
            "Redis holds a secret ({} chars)",
            secret.len()
        );
    }
    let _ = Ordering::Relaxed;
}

// Redis can't vouch for anyone: anyone who can reach Redis can write to it, so what the gate
// reads back must be sealed by this deployment for the very key it was read from.

const SHARED_SECRET: &str = "sealed-values-secret-0123";
const UNKNOWN_KEY: &str = "0123456789abcdef0123456789abcdef01234567";

/// A gate on the shared Redis under a prefix of its own, with nothing kept in process, so
/// every Check reads Redis.
async fn gate_on_redis(prefix: &str, extra: &[&str]) -> TestApp {
    let mut flags = vec![
        "--redis-url",
        "redis://127.0.0.1:6379",
        "--redis-key-prefix",
        prefix,
        "--cache-secret",
        SHARED_SECRET,
        "--l1-capacity",
        "0",
    ];
    flags.extend_from_slice(extra);
    spawn_app(&flags).await
}

async fn redis() -> MultiplexedConnection {
    redis::Client::open("redis://127.0.0.1:6379")
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap()
}

/// The Redis key of an API key's entry, as anyone holding the secret computes it.
fn api_key_slot(prefix: &str, api_key: &str) -> String {
    let hasher = KeyHasher::new(SHARED_SECRET.as_bytes().to_vec().into());
    let key = hasher.key(KeyKind::ApiKey, &[api_key]);
    format!("{prefix}e:{}", key.to_hex())
}

async fn value_of(redis: &mut MultiplexedConnection, slot: &str) -> Vec<u8> {
    let value: Option<Vec<u8>> = redis.get(slot).await.unwrap();
    value.unwrap_or_else(|| panic!("no entry at {slot}"))
}

/// A plain `SET`, without expiry: the forger's choice.
async fn plant(redis: &mut MultiplexedConnection, slot: &str, value: &[u8]) {
    let () = redis.set(slot, value).await.unwrap();
}

async fn pttl(redis: &mut MultiplexedConnection, key: &str) -> i64 {
    redis::cmd("PTTL")
        .arg(key)
        .query_async(redis)
        .await
        .unwrap()
}

fn rejected(app: &TestApp, reason: Rejection) -> u64 {
    CacheStats::get(app.stats.rejected(reason))
}

/// The entry the previous release served from Redis, unsealed: format byte 1, then postcard
/// of the answer and its expiry. The same layout is all a forger could write without the
/// secret, whatever format byte they put in front.
fn forged_admin_entry(admin_id: i64) -> Vec<u8> {
    #[derive(serde::Serialize)]
    enum Answer {
        User(Option<Principal>),
    }
    #[derive(serde::Serialize)]
    struct Entry {
        answer: Answer,
        expires_at_micros: i64,
    }
    let admin = Principal {
        id: admin_id,
        login: "forged-admin-login".into(),
        admin: true,
        status: 1,
        twofa: false,
        must_change_passwd: false,
        passwd_changed_on: None,
        external_auth: false,
    };
    let entry = Entry {
        answer: Answer::User(Some(admin)),
        // 2100-01-01: for all practical purposes, never.
        expires_at_micros: 4_102_444_800_000_000,
    };
    postcard::to_extend(&entry, vec![1]).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forged_redis_values_are_misses_never_identities() {
    let logs = &crate::telemetry::harness().logs;
    let prefix = redis_prefix();
    let app = gate_on_redis(&prefix, &[]).await;
    let mut redis = redis().await;
    let slot = api_key_slot(&prefix, UNKNOWN_KEY);
    let unknown = get("/issues.json").header("x-redmine-api-key", UNKNOWN_KEY);
    let previous_release = forged_admin_entry(app.user_id("admin").await);
    let body = &previous_release[1..];
    // What the previous release would have served as admin, then the sealed layout with a
    // tag of zeros, with none, and a few bytes of nothing.
    let mut zero_tag = vec![2u8];
    zero_tag.extend_from_slice(&[0; 16]);
    zero_tag.extend_from_slice(body);
    let mut no_tag = vec![2u8];
    no_tag.extend_from_slice(body);
    let forgeries: [(&str, &[u8], Rejection); 4] = [
        (
            "previous release's format",
            &previous_release,
            Rejection::Format,
        ),
        ("tag of zeros", &zero_tag, Rejection::Mac),
        ("no tag", &no_tag, Rejection::Mac),
        ("short", &[2, 1, 2, 3], Rejection::Mac),
    ];
    for (forgery, value, reason) in forgeries {
        plant(&mut redis, &slot, value).await;
        let (looked_up, refused) = (lookups(&app), rejected(&app, reason));
        app.check(unknown.clone())
            .await
            .assert_denied(401, "invalid_api_key");
        assert_eq!(
            lookups(&app),
            looked_up + 1,
            "{forgery}: the database decided"
        );
        assert_eq!(rejected(&app, reason), refused + 1, "{forgery}");
        // The gate's own answer replaced the forgery, and it expires.
        assert_ne!(value_of(&mut redis, &slot).await, value, "{forgery}");
        assert!(pttl(&mut redis, &slot).await > 0, "{forgery}");
    }
    assert_eq!(rejected(&app, Rejection::Expired), 0);

    let metrics = http_get(app.admin_port.unwrap(), "/metrics").await;
    for series in [
        r#"authz_redis_rejected_total{reason="format"} 1"#,
        r#"authz_redis_rejected_total{reason="mac"} 3"#,
        r#"authz_redis_rejected_total{reason="expired"} 0"#,
    ] {
        assert!(metrics.contains(series), "{series} in\n{metrics}");
    }
    // Warned of, without the key or what the value said.
    let logs = logs.text();
    assert!(logs.contains("refused a Redis value"), "{logs}");
    assert!(
        !logs.contains(&slot[prefix.len() + 2..]),
        "the key in the logs"
    );
    assert!(
        !logs.contains("forged-admin-login"),
        "the value in the logs"
    );
}

#[tokio::test]
async fn another_keys_sealed_value_is_refused() {
    let prefix = redis_prefix();
    let app = gate_on_redis(&prefix, &[]).await;
    let mut redis = redis().await;
    let admin = get("/issues.json").header("x-redmine-api-key", demo_key("admin"));
    app.check(admin).await.assert_user("admin", "api-key");
    let admins = value_of(&mut redis, &api_key_slot(&prefix, demo_key("admin"))).await;

    // Admin's genuine, sealed entry replayed under an unknown key and under alice's.
    plant(&mut redis, &api_key_slot(&prefix, UNKNOWN_KEY), &admins).await;
    app.check(get("/issues.json").header("x-redmine-api-key", UNKNOWN_KEY))
        .await
        .assert_denied(401, "invalid_api_key");
    plant(
        &mut redis,
        &api_key_slot(&prefix, demo_key("alice")),
        &admins,
    )
    .await;
    let alice = app.check(alice_key()).await;
    alice.assert_user("alice", "api-key");
    assert_eq!(alice.header("x-auth-user-admin").as_deref(), Some("false"));
    assert_eq!(rejected(&app, Rejection::Mac), 2);
    assert_eq!(CacheStats::get(&app.stats.redis_hits), 0);
}

#[tokio::test]
async fn truncated_redis_values_are_refused() {
    let prefix = redis_prefix();
    let app = gate_on_redis(&prefix, &[]).await;
    let mut redis = redis().await;
    let slot = api_key_slot(&prefix, demo_key("alice"));
    app.check(alice_key()).await.assert_user("alice", "api-key");
    let whole = value_of(&mut redis, &slot).await;
    for cut in [whole.len() - 1, 17, 16, 1] {
        plant(&mut redis, &slot, &whole[..cut]).await;
        let looked_up = lookups(&app);
        app.check(alice_key()).await.assert_user("alice", "api-key");
        assert_eq!(
            lookups(&app),
            looked_up + 1,
            "cut to {cut}: the database decided"
        );
    }
    assert_eq!(rejected(&app, Rejection::Mac), 4);
    // Put back whole, it is served.
    plant(&mut redis, &slot, &whole).await;
    app.check(alice_key()).await.assert_user("alice", "api-key");
    assert_eq!(CacheStats::get(&app.stats.redis_hits), 1);
}

#[tokio::test]
async fn a_value_kept_past_its_expiry_is_not_served() {
    let prefix = redis_prefix();
    // No eviction by the triggers: only the expiry stands between alice's entry and her lock.
    let app = gate_on_redis(
        &prefix,
        &["--cache-ttl", "60", "--listen-invalidations", "false"],
    )
    .await;
    let mut redis = redis().await;
    let slot = api_key_slot(&prefix, demo_key("alice"));
    let start = Utc::now();
    app.set_now(start);
    app.check(alice_key()).await.assert_user("alice", "api-key");
    let genuine = value_of(&mut redis, &slot).await;
    // TTL stripped: Redis would keep it for ever.
    let persisted: i64 = redis::cmd("PERSIST")
        .arg(&slot)
        .query_async(&mut redis)
        .await
        .unwrap();
    assert_eq!(persisted, 1);
    assert_eq!(pttl(&mut redis, &slot).await, -1);
    app.exec("UPDATE users SET status = 3 WHERE login = 'alice'")
        .await;
    app.set_now(start + chrono::Duration::seconds(59));
    app.check(alice_key()).await.assert_user("alice", "api-key"); // stale, inside the TTL
    app.set_now(start + chrono::Duration::seconds(61));
    app.check(alice_key())
        .await
        .assert_denied(401, "invalid_api_key");
    assert_eq!(rejected(&app, Rejection::Expired), 1);
    // The same genuine value replayed later, with a fresh TTL: still past its expiry.
    let () = redis.set_ex(&slot, &genuine[..], 600).await.unwrap();
    app.check(alice_key())
        .await
        .assert_denied(401, "invalid_api_key");
    assert_eq!(rejected(&app, Rejection::Expired), 2);
    assert_eq!(rejected(&app, Rejection::Mac), 0);
}

#[tokio::test]
async fn every_key_the_gate_writes_in_redis_expires() {
    let prefix = redis_prefix();
    let app = gate_on_redis(&prefix, &[]).await;
    let client = |request: CheckBuilder| request.source("203.0.113.7");
    for user in DEMO_USERS {
        let wrong = format!("{}-wrong", user.password);
        for password in [user.password, wrong.as_str()] {
            app.check(client(
                get("/issues.json").header("authorization", &basic(user.login, password)),
            ))
            .await;
        }
        if let Some(key) = user.api_key {
            app.check(client(get("/issues.json").header("x-redmine-api-key", key)))
                .await;
            app.check(client(
                get("/issues.json").header("authorization", &basic(key, "x")),
            ))
            .await;
        }
    }
    for credential in [
        ("x-redmine-api-key", UNKNOWN_KEY.to_owned()),
        ("authorization", format!("Bearer {DEMO_OAUTH_TOKEN}")),
        ("authorization", "Bearer not-a-token".to_owned()),
    ] {
        app.check(client(
            get("/issues.json").header(credential.0, &credential.1),
        ))
        .await;
    }
    app.check(client(
        get("/issues.json")
            .header("x-redmine-api-key", demo_key("admin"))
            .header("x-redmine-switch-user", "alice"),
    ))
    .await;

    // Entries, user indexes and the failure counters (written in the background).
    let mut redis = redis().await;
    let started = std::time::Instant::now();
    let keys = loop {
        let keys: Vec<String> = redis.keys(format!("{prefix}*")).await.unwrap();
        let kinds: Vec<&str> = ["e:", "u:", "t:"]
            .into_iter()
            .filter(|kind| keys.iter().any(|k| k[prefix.len()..].starts_with(kind)))
            .collect();
        if kinds.len() == 3 {
            break keys;
        }
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "only {kinds:?} written: {keys:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert!(keys.len() >= 20, "{keys:?}");
    for key in &keys {
        let left = pttl(&mut redis, key).await;
        assert!(left > 0, "{key} has no expiry ({left})");
    }
}

#[tokio::test]
async fn evicting_a_user_deletes_only_our_entries_named_in_its_index() {
    let prefix = redis_prefix();
    let app = gate_on_redis(&prefix, &[]).await;
    let mut redis = redis().await;
    app.check(alice_key()).await.assert_user("alice", "api-key");
    let index = format!("{prefix}u:{}", app.user_id("alice").await);
    // Another application's key, named in alice's index by someone who can write to Redis.
    let precious = format!("other-app-{prefix}precious");
    let () = redis.set_ex(&precious, "keep me", 60).await.unwrap();
    let () = redis.sadd(&index, &precious).await.unwrap();

    // Alice's own entry goes (else she would stay allowed from Redis), the planted name stays.
    app.exec("UPDATE users SET status = 3 WHERE login = 'alice'")
        .await;
    app.until_status(alice_key(), 401, Duration::from_secs(1))
        .await;
    let kept: bool = redis.exists(&precious).await.unwrap();
    assert!(kept, "the gate deleted a key outside its prefix");
    let () = redis.del(&precious).await.unwrap();
}
