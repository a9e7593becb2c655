//! Throttling failed authentication (R-THROTTLE).

use std::time::Duration;

use chrono::Utc;
use redmine_authz::cache::CacheStats;

use crate::helpers::*;

fn wrong_key(ip: &str) -> CheckBuilder {
    get("/issues.json")
        .header(
            "x-redmine-api-key",
            "0000000000000000000000000000000000000000",
        )
        .source(ip)
}

#[tokio::test]
async fn a_client_over_its_limit_gets_429_without_a_database_query() {
    let app = spawn_app(&[
        "--throttle-client-limit",
        "5",
        "--throttle-client-window-secs",
        "60",
    ])
    .await;
    let start = Utc::now();
    app.set_now(start);
    for _ in 0..5 {
        app.check(wrong_key("198.51.100.1"))
            .await
            .assert_denied(401, "invalid_api_key");
    }
    let lookups = CacheStats::get(&app.stats.directory_lookups);
    let blocked = app
        .check(
            get("/issues.json")
                .header("x-redmine-api-key", demo_key("alice"))
                .source("198.51.100.1"),
        )
        .await;
    blocked.assert_denied(429, "throttled");
    assert_eq!(blocked.grpc_code(), 8, "RESOURCE_EXHAUSTED");
    let retry: u64 = blocked.header("retry-after").unwrap().parse().unwrap();
    assert!((1..=60).contains(&retry), "{retry}");
    app.check(get("/issues.json?key=bad").source("198.51.100.1"))
        .await
        .assert_denied(429, "throttled");
    assert_eq!(
        CacheStats::get(&app.stats.directory_lookups),
        lookups,
        "no lookups while blocked"
    );
    // Another client is not affected; not-gated requests pass.
    app.check(
        get("/issues.json")
            .header("x-redmine-api-key", demo_key("alice"))
            .source("198.51.100.2"),
    )
    .await
    .assert_user("alice", "api-key");
    assert!(app
        .check(get("/projects").source("198.51.100.1"))
        .await
        .is_allowed());
    // The window passes.
    app.set_now(start + chrono::Duration::seconds(61));
    app.check(
        get("/issues.json")
            .header("x-redmine-api-key", demo_key("alice"))
            .source("198.51.100.1"),
    )
    .await
    .assert_user("alice", "api-key");
    let metrics = http_get(app.admin_port.unwrap(), "/metrics").await;
    assert!(metrics.contains("authz_throttled_total 2"), "{metrics}");
}

#[tokio::test]
async fn successes_and_missing_credentials_are_never_counted() {
    let app = spawn_app(&["--throttle-client-limit", "3"]).await;
    for _ in 0..10 {
        app.check(
            get("/issues.json")
                .header("x-redmine-api-key", demo_key("alice"))
                .source("198.51.100.3"),
        )
        .await
        .assert_user("alice", "api-key");
        app.check(get("/issues.json").source("198.51.100.3"))
            .await
            .assert_denied(401, "no_credential");
        app.check(
            get("/issues.json")
                .header("x-redmine-api-key", demo_key("mona"))
                .source("198.51.100.3"),
        )
        .await
        .assert_user("mona", "api-key");
    }
}

#[tokio::test]
async fn a_login_under_attack_blocks_basic_for_that_login_only() {
    let app = spawn_app(&[
        "--throttle-login-limit",
        "3",
        "--throttle-client-limit",
        "0",
    ])
    .await;
    for (i, login) in ["alice", "ALICE", " alice "].iter().enumerate() {
        let ip = format!("198.51.100.{}", 10 + i);
        app.check(
            get("/issues.json")
                .header("authorization", &basic(login, "guess"))
                .source(&ip),
        )
        .await
        .assert_denied(401, "invalid_basic");
    }
    // Even the right password, from a fresh address: the login is locked for the window.
    app.check(
        get("/issues.json")
            .header("authorization", &basic("alice", demo_password("alice")))
            .source("198.51.100.99"),
    )
    .await
    .assert_denied(429, "throttled");
    // Her API key still works, and other logins are untouched.
    app.check(
        get("/issues.json")
            .header("x-redmine-api-key", demo_key("alice"))
            .source("198.51.100.99"),
    )
    .await
    .assert_user("alice", "api-key");
    app.check(
        get("/issues.json")
            .header("authorization", &basic("bob", demo_password("bob")))
            .source("198.51.100.99"),
    )
    .await
    .assert_user("bob", "basic-password");
}

#[tokio::test]
async fn replicas_share_counts_through_redis() {
    let prefix = redis_prefix();
    let flags = [
        "--throttle-client-limit",
        "4",
        "--redis-url",
        "redis://127.0.0.1:6379",
        "--redis-key-prefix",
        &prefix,
        "--cache-secret",
        "throttle-shared-secret",
    ];
    let first = spawn_app(&flags).await;
    let second = spawn_app_on(&first.database_url, &flags).await;
    first.check(wrong_key("198.51.100.20")).await;
    second.check(wrong_key("198.51.100.20")).await;
    first.check(wrong_key("198.51.100.20")).await;
    // The fourth failure, on the second replica, brings the shared count to the limit. Each
    // replica has seen only two: the shared count, back from Redis moments after the deny,
    // is what blocks. Polled with a valid key, which is not a failure and adds nothing.
    let valid = get("/issues.json")
        .header("x-redmine-api-key", demo_key("alice"))
        .source("198.51.100.20");
    second
        .check(wrong_key("198.51.100.20"))
        .await
        .assert_denied(401, "invalid_api_key");
    let limit = Duration::from_secs(1);
    second.until_status(valid.clone(), 429, limit).await;
    second
        .check(wrong_key("198.51.100.20"))
        .await
        .assert_denied(429, "throttled");
    // The first replica learns it on its next failure and blocks from then on.
    first.check(wrong_key("198.51.100.20")).await;
    first.until_status(valid, 429, limit).await;
}

#[tokio::test]
async fn trusted_hops_pick_the_client_from_x_forwarded_for() {
    let app = spawn_app(&["--throttle-client-limit", "2", "--trusted-hops", "1"]).await;
    let via_proxy = |client: &str| {
        wrong_key("10.0.0.1").header("x-forwarded-for", &format!("192.0.2.200, {client}"))
    };
    app.check(via_proxy("203.0.113.5")).await;
    app.check(via_proxy("203.0.113.5")).await;
    app.check(via_proxy("203.0.113.5"))
        .await
        .assert_denied(429, "throttled");
    // Same proxy, another client: not blocked. The spoofable left entry is ignored.
    app.check(via_proxy("203.0.113.6"))
        .await
        .assert_denied(401, "invalid_api_key");
}

/// Every key under `pattern` with its time to live in milliseconds (-1: none).
fn redis_ttls(pattern: &str) -> Vec<(String, i64)> {
    let redis_cli = |args: &[&str]| {
        let output = std::process::Command::new("redis-cli")
            .args(["-h", "127.0.0.1"])
            .args(args)
            .output()
            .expect("redis-cli");
        String::from_utf8(output.stdout).unwrap()
    };
    redis_cli(&["--scan", "--pattern", pattern])
        .lines()
        .map(|key| {
            let ttl = redis_cli(&["PTTL", key]).trim().parse().unwrap();
            (key.to_owned(), ttl)
        })
        .collect()
}

#[tokio::test]
async fn shared_counters_always_expire() {
    let prefix = redis_prefix();
    let app = spawn_app(&[
        "--throttle-client-window-secs",
        "30",
        "--redis-url",
        "redis://127.0.0.1:6379",
        "--redis-key-prefix",
        &prefix,
    ])
    .await;
    let counters = format!("{prefix}t:*");
    let counted = || async {
        let deadline = std::time::Instant::now() + Duration::from_secs(2);
        loop {
            let ttls = redis_ttls(&counters);
            if !ttls.is_empty() || std::time::Instant::now() > deadline {
                return ttls;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    };
    for _ in 0..3 {
        app.check(wrong_key("198.51.100.30"))
            .await
            .assert_denied(401, "invalid_api_key");
    }
    let ttls = counted().await;
    assert_eq!(ttls.len(), 1, "one counter for the address: {ttls:?}");
    let (key, ttl) = &ttls[0];
    assert!(
        !key.contains("198.51.100.30"),
        "the address is hashed: {key}"
    );
    // The rest of the window, and one more for replicas whose clocks run late.
    assert!((30_000..=60_000).contains(ttl), "{key}: {ttl} ms");

    // Redis restarted or evicted the counter: the next failure creates it again, and a
    // counter made by a bare INCR gets its expiry in a second trip.
    let deleted = std::process::Command::new("redis-cli")
        .args(["-h", "127.0.0.1", "DEL", key])
        .output()
        .unwrap();
    assert!(deleted.status.success());
    app.check(wrong_key("198.51.100.30"))
        .await
        .assert_denied(401, "invalid_api_key");
    let deadline = std::time::Instant::now() + Duration::from_secs(2);
    loop {
        let ttls = counted().await;
        if ttls.len() == 1 && ttls[0].1 > 0 {
            assert!(ttls[0].1 <= 60_000, "{ttls:?}");
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the counter made again never expires: {ttls:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
