//! R-BEARER, OAuth2 bearer tokens from Redmine's Doorkeeper.

use chrono::{Duration, NaiveDate, NaiveDateTime, TimeZone as _, Utc};

use crate::helpers::*;

fn local(y: i32, m: u32, d: u32, h: u32, min: u32) -> NaiveDateTime {
    NaiveDate::from_ymd_opt(y, m, d)
        .unwrap()
        .and_hms_opt(h, min, 0)
        .unwrap()
}

fn bearer(token: &str) -> String {
    format!("Bearer {token}")
}

#[tokio::test]
async fn valid_token_with_and_without_admin_scope() {
    let app = spawn_app(&[]).await;
    let verdict = app
        .check(get("/issues.json").header("authorization", &bearer(DEMO_OAUTH_TOKEN)))
        .await;
    verdict.assert_user("admin", "oauth2");
    assert_eq!(verdict.header("x-auth-user-admin").as_deref(), Some("true"));
    assert_eq!(
        verdict.header("x-auth-oauth-scopes").as_deref(),
        Some("admin view_issues view_project")
    );
    assert!(verdict.header("x-auth-oauth-application-id").is_some());

    let now = local(2026, 6, 1, 12, 0);
    app.set_now(Utc.from_utc_datetime(&now));
    app.add_token(
        "admin",
        "no-admin-scope",
        "view_issues",
        now,
        Some(7200),
        None,
    )
    .await;
    let verdict = app
        .check(get("/issues.json").header("authorization", &bearer("no-admin-scope")))
        .await;
    verdict.assert_user("admin", "oauth2");
    assert_eq!(
        verdict.header("x-auth-user-admin").as_deref(),
        Some("false")
    );
}

#[tokio::test]
async fn token_from_parameters_and_any_case_prefix() {
    let app = spawn_app(&[]).await;
    app.check(get(&format!(
        "/issues.json?access_token={DEMO_OAUTH_TOKEN}"
    )))
    .await
    .assert_user("admin", "oauth2");
    app.check(get(&format!(
        "/issues.json?bearer_token={DEMO_OAUTH_TOKEN}"
    )))
    .await
    .assert_user("admin", "oauth2");
    app.check(get("/issues.json").header("authorization", &format!("bearer {DEMO_OAUTH_TOKEN}")))
        .await
        .assert_user("admin", "oauth2");
}

#[tokio::test]
async fn expired_revoked_and_future_revocation() {
    let app = spawn_app(&[]).await;
    let now = local(2026, 6, 1, 12, 0);
    app.set_now(Utc.from_utc_datetime(&now));
    app.add_token(
        "alice",
        "expired",
        "",
        now - Duration::hours(3),
        Some(7200),
        None,
    )
    .await;
    app.add_token(
        "alice",
        "revoked",
        "",
        now - Duration::hours(1),
        Some(7200),
        Some(now - Duration::minutes(1)),
    )
    .await;
    app.add_token(
        "alice",
        "revoked-later",
        "",
        now - Duration::hours(1),
        Some(7200),
        Some(now + Duration::minutes(5)),
    )
    .await;
    app.add_token(
        "alice",
        "no-expiry",
        "",
        now - Duration::days(400),
        None,
        None,
    )
    .await;

    let expired = app
        .check(get("/issues.json").header("authorization", &bearer("expired")))
        .await;
    expired.assert_denied(401, "token_expired");
    assert_eq!(
        expired.header("www-authenticate").as_deref(),
        Some(
            r#"Bearer realm="Redmine", error="invalid_token", error_description="The access token expired""#
        )
    );
    let revoked = app
        .check(get("/issues.json").header("authorization", &bearer("revoked")))
        .await;
    revoked.assert_denied(401, "token_revoked");
    assert_eq!(
        revoked.header("www-authenticate").as_deref(),
        Some(
            r#"Bearer realm="Redmine", error="invalid_token", error_description="The access token was revoked""#
        )
    );
    app.check(get("/issues.json").header("authorization", &bearer("revoked-later")))
        .await
        .assert_user("alice", "oauth2");
    app.check(get("/issues.json").header("authorization", &bearer("no-expiry")))
        .await
        .assert_user("alice", "oauth2");

    // The revocation time comes: the same token is now refused.
    app.set_now(Utc.from_utc_datetime(&(now + Duration::minutes(6))));
    app.check(get("/issues.json").header("authorization", &bearer("revoked-later")))
        .await
        .assert_denied(401, "token_revoked");
}

#[tokio::test]
async fn owner_locked_or_missing() {
    let app = spawn_app(&[]).await;
    let now = local(2026, 6, 1, 12, 0);
    app.set_now(Utc.from_utc_datetime(&now));
    app.add_token("larry", "locked-owner", "", now, Some(7200), None)
        .await;
    app.check(get("/issues.json").header("authorization", &bearer("locked-owner")))
        .await
        .assert_denied(401, "token_owner_inactive");
    app.add_token("bob", "deleted-owner", "", now, Some(7200), None)
        .await;
    app.exec("DELETE FROM users WHERE login = 'bob'").await;
    app.check(get("/issues.json").header("authorization", &bearer("deleted-owner")))
        .await
        .assert_denied(401, "token_owner_inactive");
}

#[tokio::test]
async fn unknown_token_is_anonymous() {
    let app = spawn_app(&[]).await;
    let verdict = app
        .check(get("/issues.json").header("authorization", &bearer("never-issued")))
        .await;
    verdict.assert_denied(401, "unknown_bearer_token");
    assert_eq!(
        verdict.header("www-authenticate").as_deref(),
        Some(r#"Basic realm="Redmine API""#)
    );
    let open = spawn_app_on(&app.database_url, &["--allow-anonymous"]).await;
    let verdict = open
        .check(get("/issues.json").header("authorization", &bearer("never-issued")))
        .await;
    assert!(
        verdict.is_allowed() && verdict.header("x-auth-user-id").is_none(),
        "{verdict:?}"
    );
}

#[tokio::test]
async fn timestamps_are_read_in_redmines_time_zone() {
    // Redmine in Berlin wrote created_at 12:00 local = 10:00 UTC (summer); expires in 1 h.
    let database = fresh_database().await;
    let app = spawn_app_on(&database, &["--redmine-timezone", "Europe/Berlin"]).await;
    app.add_token(
        "alice",
        "berlin",
        "",
        local(2026, 7, 1, 12, 0),
        Some(3600),
        None,
    )
    .await;
    app.set_now(Utc.with_ymd_and_hms(2026, 7, 1, 10, 59, 0).unwrap());
    app.check(get("/issues.json").header("authorization", &bearer("berlin")))
        .await
        .assert_user("alice", "oauth2");
    app.set_now(Utc.with_ymd_and_hms(2026, 7, 1, 11, 1, 0).unwrap());
    app.check(get("/issues.json").header("authorization", &bearer("berlin")))
        .await
        .assert_denied(401, "token_expired");

    // The same row read as UTC would still be valid at 11:01 UTC.
    let utc = spawn_app_on(&database, &[]).await;
    utc.set_now(Utc.with_ymd_and_hms(2026, 7, 1, 11, 1, 0).unwrap());
    utc.check(get("/issues.json").header("authorization", &bearer("berlin")))
        .await
        .assert_user("alice", "oauth2");
}
