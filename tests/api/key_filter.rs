//! The API key filter (issue 7, floods of random keys): keys absent from Redmine's `tokens`
//! are refused without a query during a flood, keys created at any time still work, and the
//! filter stays off when it cannot be kept current.

use std::time::Duration;

use redmine_authz::cache::CacheStats;

use crate::helpers::*;

fn lookups(app: &TestApp) -> u64 {
    CacheStats::get(&app.stats.directory_lookups)
}

fn refusals(app: &TestApp) -> u64 {
    CacheStats::get(&app.stats.filter_refusals)
}

fn with_key(key: &str) -> CheckBuilder {
    get("/issues.json").header("x-redmine-api-key", key)
}

/// A well-formed key that no `tokens` row holds.
fn random_key(n: u32) -> String {
    format!("{:040x}", 0xbad0_0000_u64 + u64::from(n))
}

/// Waits until the filter is loaded: unknown keys start being refused (threshold 0).
async fn until_filter_loaded(app: &TestApp) {
    let start = refusals(app);
    for n in 0..200 {
        app.check(with_key(&random_key(n)))
            .await
            .assert_denied(401, "invalid_api_key");
        if refusals(app) > start {
            return;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    panic!("the key filter did not load");
}

#[tokio::test]
async fn unknown_keys_are_refused_without_a_query_once_loaded() {
    let app = spawn_app(&["--key-filter-above", "0"]).await;
    until_filter_loaded(&app).await;
    let before = lookups(&app);
    for n in 1000..1050 {
        app.check(with_key(&random_key(n)))
            .await
            .assert_denied(401, "invalid_api_key");
    }
    assert_eq!(lookups(&app), before, "refused keys made no query");
    assert!(refusals(&app) >= 50);
    // Every real key passes the filter and is looked up as usual.
    for login in ["alice", "mona", "admin"] {
        app.check(with_key(demo_key(login)))
            .await
            .assert_user(login, "api-key");
    }
    assert_eq!(lookups(&app), before + 3);
}

#[tokio::test]
async fn keys_created_or_changed_after_the_load_work_within_a_second() {
    let app = spawn_app(&["--key-filter-above", "0"]).await;
    until_filter_loaded(&app).await;
    let limit = Duration::from_secs(1);
    let alice = app.user_id("alice").await;
    let created = "c0ffee0000000000000000000000000000000001";
    app.exec(&format!(
        "DELETE FROM tokens WHERE user_id = {alice} AND action = 'api'"
    ))
    .await;
    app.exec(&format!(
        "INSERT INTO tokens (user_id, action, value, created_on, updated_on) \
         VALUES ({alice}, 'api', '{created}', now(), now())"
    ))
    .await;
    let took = app.until_status(with_key(created), 200, limit).await;
    app.check(with_key(created))
        .await
        .assert_user("alice", "api-key");
    // A reset in place (Redmine's UPDATE of the value) too.
    let reset = "c0ffee0000000000000000000000000000000002";
    app.exec(&format!(
        "UPDATE tokens SET value = '{reset}' WHERE value = '{created}'"
    ))
    .await;
    app.until_status(with_key(reset), 200, limit).await;
    app.check(with_key(created))
        .await
        .assert_denied(401, "invalid_api_key");
    println!("a new key worked after {took:?}");
}

#[tokio::test]
async fn below_the_threshold_every_key_is_looked_up() {
    let app = spawn_app(&[]).await; // the default: 100 unknown keys per second
    tokio::time::sleep(Duration::from_millis(300)).await; // the filter loads meanwhile
    let before = lookups(&app);
    for n in 0..20 {
        app.check(with_key(&random_key(n)))
            .await
            .assert_denied(401, "invalid_api_key");
    }
    assert_eq!(lookups(&app), before + 20);
    assert_eq!(refusals(&app), 0);
}

#[tokio::test]
async fn without_triggers_the_filter_stays_off() {
    let database = fresh_database().await;
    redmine_authz::store::uninstall_triggers(&database.parse().unwrap())
        .await
        .unwrap();
    let app = spawn_app_on(&database, &["--key-filter-above", "0"]).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let before = lookups(&app);
    for n in 0..20 {
        app.check(with_key(&random_key(n)))
            .await
            .assert_denied(401, "invalid_api_key");
    }
    assert_eq!(lookups(&app), before + 20, "every key was looked up");
    assert_eq!(refusals(&app), 0);
}

#[tokio::test]
async fn a_key_added_while_the_listener_reconnects_works() {
    let app = spawn_app(&["--key-filter-above", "0"]).await;
    until_filter_loaded(&app).await;
    // Cut the LISTEN connection, then add a key at once: its notification may be lost, so
    // the filter must be off until it is reloaded, and the reload must include the key.
    app.exec(
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity \
         WHERE datname = current_database() AND query LIKE 'LISTEN%'",
    )
    .await;
    let bob = app.user_id("bob").await; // bob has no key yet
    let added = "c0ffee00000000000000000000000000000000b0";
    app.exec(&format!(
        "INSERT INTO tokens (user_id, action, value, created_on, updated_on) \
         VALUES ({bob}, 'api', '{added}', now(), now())"
    ))
    .await;
    app.until_status(with_key(added), 200, Duration::from_secs(3))
        .await;
    app.check(with_key(added))
        .await
        .assert_user("bob", "api-key");
    // And the reloaded filter refuses again.
    let before = refusals(&app);
    until_filter_loaded(&app).await;
    assert!(refusals(&app) > before);
}

#[tokio::test]
async fn keys_added_in_one_statement_all_work() {
    let app = spawn_app(&["--key-filter-above", "0"]).await;
    until_filter_loaded(&app).await;
    let alice = app.user_id("alice").await;
    app.exec(&format!(
        "DELETE FROM tokens WHERE user_id = {alice} AND action = 'api'"
    ))
    .await;
    // One statement, one notification per user, applied to the filter in one query.
    app.exec(
        "INSERT INTO tokens (user_id, action, value, created_on, updated_on) \
         SELECT id, 'api', 'c0ffee' || lpad(id::text, 34, '0'), now(), now() \
         FROM users WHERE login IN ('alice', 'bob')",
    )
    .await;
    for login in ["alice", "bob"] {
        let id = app.user_id(login).await;
        let key = format!("c0ffee{id:034}");
        app.until_status(with_key(&key), 200, Duration::from_secs(1))
            .await;
    }
}
