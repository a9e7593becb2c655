//! R-GATE (which requests are gated) and R-REST (the REST API switch).

use std::time::Duration;

use crate::helpers::*;

#[tokio::test]
async fn api_requests_need_credentials_and_others_pass() {
    let app = spawn_app(&[]).await;
    for path in [
        "/issues.json",
        "/issues.xml",
        "/issues?format=json",
        "/projects/1/issues?format=xml&limit=1",
    ] {
        app.check(get(path))
            .await
            .assert_denied(401, "no_credential");
    }
    for path in [
        "/issues",
        "/projects/demo",
        "/javascripts/application.js",
        "/issues.atom",
        "/issues?format=csv",
    ] {
        let verdict = app.check(get(path)).await;
        assert!(verdict.is_allowed(), "{path}: {verdict:?}");
        assert!(
            verdict.set_headers().is_empty(),
            "no identity on a not-gated request: {verdict:?}"
        );
    }
}

#[tokio::test]
async fn accept_and_content_type_never_make_an_api_request() {
    let app = spawn_app(&[]).await;
    let verdict = app
        .check(
            get("/issues")
                .header("accept", "application/json")
                .header("content-type", "application/xml"),
        )
        .await;
    assert!(verdict.is_allowed());
}

#[tokio::test]
async fn files_named_like_api_paths_are_not_gated() {
    let app = spawn_app(&[]).await;
    for path in [
        "/attachments/download/7/report.json",
        "/attachments/7/report.xml?format=json",
        "/projects/demo/repository/main/raw/lib/a.json",
        "/projects/demo/repository/main/revisions/v1.0/entry/a.xml",
    ] {
        let verdict = app.check(get(path)).await;
        assert!(verdict.is_allowed(), "{path}: {verdict:?}");
    }
    for path in [
        // Redmine 5.0 reads ?format= on a named download and on a repository diff.
        "/attachments/download/7/report.pdf?format=json",
        "/projects/demo/repository/main/diff/a.rb?format=xml",
        "/attachments/7.json",
        // A proxy that resolves dot segments would hand Redmine /issues.json.
        "/attachments/7/../../issues.json",
        "/attachments/7/..%2F..%2Fissues.json",
    ] {
        app.check(get(path))
            .await
            .assert_denied(401, "no_credential");
    }
}

#[tokio::test]
async fn oauth_endpoints_are_not_gated_but_tricky_paths_are() {
    let app = spawn_app(&[]).await;
    for path in [
        "/oauth/token",
        "/oauth/authorize?client_id=x",
        "/oauth/revoke",
        "/oauth/token/info",
    ] {
        assert!(app.check(get(path)).await.is_allowed(), "{path}");
    }
    app.check(get("/oauth/../users/current.json"))
        .await
        .assert_denied(401, "no_credential");
}

#[tokio::test]
async fn route_modes_from_context_extensions() {
    let app = spawn_app(&[]).await;
    assert!(app
        .check(get("/issues.json").context("redmine_authz_mode", "skip"))
        .await
        .is_allowed());
    app.check(get("/my/page").context("redmine_authz_mode", "api"))
        .await
        .assert_denied(401, "no_credential");
    // public: anonymous passes, credentials are still checked.
    let anonymous = app
        .check(get("/issues.json").context("redmine_authz_mode", "public"))
        .await;
    assert!(
        anonymous.is_allowed() && anonymous.header("x-auth-user-id").is_none(),
        "{anonymous:?}"
    );
    app.check(get("/issues.json?key=wrong").context("redmine_authz_mode", "public"))
        .await
        .assert_denied(401, "invalid_api_key");
    app.check(
        get("/issues.json")
            .header("x-redmine-api-key", demo_key("alice"))
            .context("redmine_authz_mode", "public"),
    )
    .await
    .assert_user("alice", "api-key");
    // A typo must not open a route.
    app.check(get("/issues.json").context("redmine_authz_mode", "pubic"))
        .await
        .assert_denied(401, "no_credential");
}

#[tokio::test]
async fn rest_api_switch_is_read_from_settings_and_refreshed() {
    let app = spawn_app(&[]).await;
    app.check(get("/issues.json").header("x-redmine-api-key", demo_key("alice")))
        .await
        .assert_user("alice", "api-key");
    // The newest row wins; Ruby's to_i: "0" and "" are off.
    app.set_setting("rest_api_enabled", "0").await;
    let mut denied = None;
    for _ in 0..60 {
        let verdict = app
            .check(get("/issues.json").header("x-redmine-api-key", demo_key("alice")))
            .await;
        if !verdict.is_allowed() {
            denied = Some(verdict);
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let denied = denied.expect("REST API switch took effect within 6 s");
    denied.assert_denied(403, "rest_api_disabled");
    assert_eq!(denied.body(), r#"{"errors":["REST API is disabled"]}"#);
    // Credentials or not, and not-gated requests still pass.
    app.check(get("/issues.json"))
        .await
        .assert_denied(403, "rest_api_disabled");
    assert!(app.check(get("/projects")).await.is_allowed());
}

#[tokio::test]
async fn rest_api_off_when_setting_is_missing_as_in_redmine() {
    let database = fresh_database().await;
    let pool = sqlx::PgPool::connect(&database).await.unwrap();
    sqlx::query("DELETE FROM settings")
        .execute(&pool)
        .await
        .unwrap();
    let app = spawn_app_on(&database, &[]).await;
    app.check(get("/issues.json").header("x-redmine-api-key", demo_key("alice")))
        .await
        .assert_denied(403, "rest_api_disabled");
}

#[tokio::test]
async fn anonymous_can_be_allowed_by_configuration() {
    let app = spawn_app(&["--allow-anonymous"]).await;
    let verdict = app
        .check(get("/issues.json").header("x-auth-user-id", "1"))
        .await;
    assert!(verdict.is_allowed(), "{verdict:?}");
    assert!(verdict.set_headers().is_empty());
    assert!(verdict.removed().contains(&"x-auth-user-id".to_owned()));
    // Wrong credentials are still denied.
    app.check(get("/issues.json?key=nope"))
        .await
        .assert_denied(401, "invalid_api_key");
}
