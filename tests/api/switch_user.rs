//! R-SWITCH: an admin's X-Redmine-Switch-User.

use chrono::{TimeZone as _, Utc};

use crate::helpers::*;

#[tokio::test]
async fn admin_switches_to_an_active_user() {
    let app = spawn_app(&[]).await;
    let verdict = app
        .check(
            get("/issues.json")
                .header("x-redmine-api-key", demo_key("admin"))
                .header("x-redmine-switch-user", "alice"),
        )
        .await;
    verdict.assert_user("alice", "api-key");
    assert_eq!(
        verdict.header("x-auth-impersonator").as_deref(),
        Some("admin")
    );
    assert_eq!(
        verdict.header("x-auth-user-id"),
        Some(app.user_id("alice").await.to_string())
    );
    // Upstream Redmine must see the switch too.
    assert!(!verdict
        .removed()
        .contains(&"x-redmine-switch-user".to_owned()));
    // Case-insensitive login, and Basic admins too.
    app.check(
        get("/issues.json")
            .header("authorization", &basic("admin", demo_password("admin")))
            .header("x-redmine-switch-user", "ALICE"),
    )
    .await
    .assert_user("alice", "basic-password");
}

#[tokio::test]
async fn switch_to_missing_or_inactive_user_is_412() {
    let app = spawn_app(&[]).await;
    for target in ["nobody", "larry", "reggie"] {
        let verdict = app
            .check(
                get("/issues.json")
                    .header("x-redmine-api-key", demo_key("admin"))
                    .header("x-redmine-switch-user", target),
            )
            .await;
        verdict.assert_denied(412, "invalid_switch_user");
        assert_eq!(verdict.grpc_code(), 9);
        assert_eq!(
            verdict.body(),
            r#"{"errors":["Invalid X-Redmine-Switch-User header"]}"#
        );
    }
}

#[tokio::test]
async fn non_admin_switch_header_is_ignored_and_removed() {
    let app = spawn_app(&[]).await;
    let verdict = app
        .check(
            get("/issues.json")
                .header("x-redmine-api-key", demo_key("alice"))
                .header("x-redmine-switch-user", "admin"),
        )
        .await;
    verdict.assert_user("alice", "api-key");
    assert!(verdict.header("x-auth-impersonator").is_none());
    assert!(
        verdict
            .removed()
            .contains(&"x-redmine-switch-user".to_owned()),
        "{verdict:?}"
    );
    // Even to a user that does not exist: no 412 for non-admins.
    app.check(
        get("/issues.json")
            .header("x-redmine-api-key", demo_key("alice"))
            .header("x-redmine-switch-user", "nobody"),
    )
    .await
    .assert_user("alice", "api-key");
}

#[tokio::test]
async fn oauth_admin_needs_the_admin_scope_and_switched_user_has_full_rights() {
    let app = spawn_app(&[]).await;
    let verdict = app
        .check(
            get("/issues.json")
                .header("authorization", &format!("Bearer {DEMO_OAUTH_TOKEN}"))
                .header("x-redmine-switch-user", "alice"),
        )
        .await;
    verdict.assert_user("alice", "oauth2");
    assert_eq!(
        verdict.header("x-auth-impersonator").as_deref(),
        Some("admin")
    );
    assert_eq!(
        verdict.header("x-auth-oauth-scopes"),
        None,
        "the switched user is not limited by the admin's scopes"
    );

    let now = Utc.with_ymd_and_hms(2026, 6, 1, 12, 0, 0).unwrap();
    app.set_now(now);
    app.add_token(
        "admin",
        "admin-no-scope",
        "view_issues",
        now.naive_utc(),
        Some(3600),
        None,
    )
    .await;
    let verdict = app
        .check(
            get("/issues.json")
                .header("authorization", "Bearer admin-no-scope")
                .header("x-redmine-switch-user", "alice"),
        )
        .await;
    verdict.assert_user("admin", "oauth2");
    assert!(verdict
        .removed()
        .contains(&"x-redmine-switch-user".to_owned()));
}

#[tokio::test]
async fn switching_to_an_admin_gives_admin() {
    let app = spawn_app(&[]).await;
    app.exec("UPDATE users SET admin = true WHERE login = 'bob'")
        .await;
    let verdict = app
        .check(
            get("/issues.json")
                .header("x-redmine-api-key", demo_key("admin"))
                .header("x-redmine-switch-user", "bob"),
        )
        .await;
    verdict.assert_user("bob", "api-key");
    assert_eq!(verdict.header("x-auth-user-admin").as_deref(), Some("true"));
}

#[tokio::test]
async fn blank_switch_header_is_no_switch() {
    let app = spawn_app(&[]).await;
    app.check(
        get("/issues.json")
            .header("x-redmine-api-key", demo_key("admin"))
            .header("x-redmine-switch-user", "  "),
    )
    .await
    .assert_user("admin", "api-key");
}
