//! R-BASIC, R-LOGIN, HTTP Basic: passwords, keys in Basic, 2FA, must-change-password, LDAP.

use std::time::Duration;

use crate::helpers::*;

#[tokio::test]
async fn login_and_password() {
    let app = spawn_app(&[]).await;
    app.check(get("/issues.json").header("authorization", &basic("alice", demo_password("alice"))))
        .await
        .assert_user("alice", "basic-password");
    // Scheme is case-insensitive; the login is trimmed; the password is not.
    app.check(get("/issues.json").header(
        "authorization",
        &basic("  alice ", demo_password("alice")).replacen("Basic", "bAsIc", 1),
    ))
    .await
    .assert_user("alice", "basic-password");
    let verdict = app
        .check(get("/issues.json").header(
            "authorization",
            &basic("alice", &format!(" {}", demo_password("alice"))),
        ))
        .await;
    verdict.assert_denied(401, "invalid_basic");
    assert_eq!(
        verdict.header("www-authenticate").as_deref(),
        Some(r#"Basic realm="Redmine API""#)
    );
}

#[tokio::test]
async fn wrong_password_unknown_user_and_inactive_users() {
    let app = spawn_app(&[]).await;
    app.check(get("/issues.json").header("authorization", &basic("alice", "wrong")))
        .await
        .assert_denied(401, "invalid_basic");
    app.check(get("/issues.json").header("authorization", &basic("nobody", "whatever")))
        .await
        .assert_denied(401, "invalid_basic");
    // Right password, but locked or registered: like a wrong one.
    for login in ["larry", "reggie"] {
        app.check(get("/issues.json").header("authorization", &basic(login, demo_password(login))))
            .await
            .assert_denied(401, "invalid_basic");
    }
}

#[tokio::test]
async fn passwords_may_contain_colons() {
    let app = spawn_app(&[]).await;
    app.exec(&format!(
        "UPDATE users SET hashed_password = '{}', salt = 's' WHERE login = 'bob'",
        redmine_authz::auth::password::hash("pa:ss:word", "s")
    ))
    .await;
    app.check(get("/issues.json").header("authorization", &basic("bob", "pa:ss:word")))
        .await
        .assert_user("bob", "basic-password");
}

#[tokio::test]
async fn exact_login_first_then_case_insensitive() {
    let app = spawn_app(&[]).await;
    app.check(get("/issues.json").header("authorization", &basic("ALICE", demo_password("alice"))))
        .await
        .assert_user("alice", "basic-password");
    // A second account "Alice" with its own password: the exact match wins.
    let hash = redmine_authz::auth::password::hash("capital-pw", "x");
    app.exec(&format!("INSERT INTO users (login, hashed_password, salt, type, status) VALUES ('Alice', '{hash}', 'x', 'User', 1)")).await;
    app.check(get("/issues.json").header("authorization", &basic("Alice", "capital-pw")))
        .await
        .assert_user("Alice", "basic-password");
    app.check(get("/issues.json").header("authorization", &basic("Alice", demo_password("alice"))))
        .await
        .assert_denied(401, "invalid_basic");
    app.check(get("/issues.json").header("authorization", &basic("alice", demo_password("alice"))))
        .await
        .assert_user("alice", "basic-password");
}

#[tokio::test]
async fn null_salt_counts_as_empty() {
    let app = spawn_app(&[]).await;
    let hash = redmine_authz::auth::password::hash("old-style", "");
    app.exec(&format!(
        "UPDATE users SET hashed_password = '{hash}', salt = NULL WHERE login = 'bob'"
    ))
    .await;
    app.check(get("/issues.json").header("authorization", &basic("bob", "old-style")))
        .await
        .assert_user("bob", "basic-password");
}

#[tokio::test]
async fn api_key_as_user_name_or_as_password() {
    let app = spawn_app(&[]).await;
    app.check(get("/issues.json").header("authorization", &basic(demo_key("alice"), "anything")))
        .await
        .assert_user("alice", "basic-api-key");
    // Gate rule: any user name, key as the password.
    app.check(get("/issues.json").header("authorization", &basic("whoever", demo_key("alice"))))
        .await
        .assert_user("alice", "basic-api-key");
    app.check(get("/issues.json").header("authorization", &basic(demo_key("alice"), "")))
        .await
        .assert_user("alice", "basic-api-key");
    // A locked owner's key does not count; the next candidate is still tried.
    app.check(get("/issues.json").header(
        "authorization",
        &basic(demo_key("larry"), demo_key("alice")),
    ))
    .await
    .assert_user("alice", "basic-api-key");
    app.check(get("/issues.json").header("authorization", &basic(demo_key("larry"), "x")))
        .await
        .assert_denied(401, "invalid_basic");
}

#[tokio::test]
async fn twofa_users_cannot_use_passwords_but_can_use_keys() {
    let app = spawn_app(&[]).await;
    let verdict = app
        .check(get("/issues.json").header("authorization", &basic("tina", demo_password("tina"))))
        .await;
    verdict.assert_denied(401, "twofa_basic_not_allowed");
    assert_eq!(
        verdict.header("www-authenticate"),
        None,
        "2FA deny has no challenge"
    );
    assert_eq!(
        verdict.body(),
        r#"{"errors":["HTTP Basic authentication is not allowed. Use API key instead"]}"#
    );
    // A wrong password for a 2FA user is just a wrong password.
    app.check(get("/issues.json").header("authorization", &basic("tina", "wrong")))
        .await
        .assert_denied(401, "invalid_basic");
    app.check(get("/issues.json").header("authorization", &basic(demo_key("tina"), "x")))
        .await
        .assert_user("tina", "basic-api-key");
}

#[tokio::test]
async fn must_change_password_blocks_basic_only() {
    let app = spawn_app(&[]).await;
    let verdict = app
        .check(get("/issues.xml").header("authorization", &basic("mona", demo_password("mona"))))
        .await;
    verdict.assert_denied(403, "must_change_password");
    assert_eq!(verdict.grpc_code(), 7);
    assert!(
        verdict
            .body()
            .contains("<error>You must change your password</error>"),
        "{}",
        verdict.body()
    );
    app.check(get("/issues.json").header("authorization", &basic(demo_key("mona"), "x")))
        .await
        .assert_denied(403, "must_change_password");
    app.check(get("/issues.json").header("x-redmine-api-key", demo_key("mona")))
        .await
        .assert_user("mona", "api-key");
}

#[tokio::test]
async fn password_max_age_setting() {
    let app = spawn_app(&[]).await;
    app.exec(
        "UPDATE users SET passwd_changed_on = now() - interval '30 days' WHERE login = 'alice'",
    )
    .await;
    app.exec("UPDATE users SET passwd_changed_on = NULL WHERE login = 'bob'")
        .await;
    app.set_setting("password_max_age", "7").await;
    let mut verdict = None;
    for _ in 0..60 {
        let v = app
            .check(
                get("/issues.json")
                    .header("authorization", &basic("alice", demo_password("alice"))),
            )
            .await;
        if !v.is_allowed() {
            verdict = Some(v);
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    verdict
        .expect("password_max_age took effect")
        .assert_denied(403, "must_change_password");
    app.check(get("/issues.json").header("authorization", &basic("bob", demo_password("bob"))))
        .await
        .assert_denied(403, "must_change_password");
    app.check(get("/issues.json").header("x-redmine-api-key", demo_key("alice")))
        .await
        .assert_user("alice", "api-key");
    app.set_setting("password_max_age", "60").await;
    tokio::time::sleep(std::time::Duration::from_millis(2500)).await;
    app.check(get("/issues.json").header("authorization", &basic("alice", demo_password("alice"))))
        .await
        .assert_user("alice", "basic-password");
}

#[tokio::test]
async fn ldap_users_are_denied_with_a_reason() {
    let app = spawn_app(&[]).await;
    let verdict = app
        .check(get("/issues.json").header("authorization", &basic("lara", demo_password("lara"))))
        .await;
    verdict.assert_denied(401, "external_auth_unsupported");
    assert!(verdict.body().contains("LDAP"), "{}", verdict.body());
}

#[tokio::test]
async fn ldap_users_can_be_passed_on_without_identity() {
    let app = spawn_app(&["--ldap-pass-on"]).await;
    let verdict = app
        .check(
            get("/issues.json")
                .header("authorization", &basic("lara", "whatever"))
                .header("x-auth-user-id", "1"),
        )
        .await;
    assert!(verdict.is_allowed(), "{verdict:?}");
    assert!(verdict.set_headers().is_empty());
    assert!(verdict.removed().contains(&"x-auth-user-id".to_owned()));
    // Not for locked LDAP users (once the trigger has evicted the cached answer).
    app.exec("UPDATE users SET status = 3 WHERE login = 'lara'")
        .await;
    let lara = get("/issues.json").header("authorization", &basic("lara", "whatever"));
    app.until_status(lara.clone(), 401, Duration::from_secs(1))
        .await;
    app.check(lara).await.assert_denied(401, "invalid_basic");
}

/// PostgreSQL refuses a NUL in a query string; such a login was a database error answered
/// 503, so anyone could fake an outage. No stored login holds one: it is refused before any
/// query, as Redmine's rules refuse an unknown login, and counted as a failed login.
#[tokio::test]
async fn logins_no_user_can_hold_are_refused_before_any_query() {
    let app = spawn_app(&["--throttle-client-limit", "3"]).await;
    let nul_login = |login: &str| {
        get("/issues.json")
            .header("authorization", &basic(login, demo_password("alice")))
            .source("198.51.100.40")
    };
    app.check(nul_login("al\0ice"))
        .await
        .assert_denied(401, "invalid_basic");
    // Ruby's strip takes a NUL at either end, as it does spaces.
    app.check(nul_login("\0alice\0 "))
        .await
        .assert_user("alice", "basic-password");
    // A switch to a login with a NUL: the target cannot exist.
    app.check(
        get("/issues.json")
            .header("x-redmine-api-key", demo_key("admin"))
            .header("x-redmine-switch-user", "al\0ice"),
    )
    .await
    .assert_denied(412, "invalid_switch_user");
    app.check(nul_login("ad\0min"))
        .await
        .assert_denied(401, "invalid_basic");
    app.check(nul_login("a\0b"))
        .await
        .assert_denied(401, "invalid_basic");
    // Three failures from one client: the limit holds it, as for any wrong login.
    app.check(nul_login("alice"))
        .await
        .assert_denied(429, "throttled");
    let metrics = http_get(app.admin_port.expect("admin port"), "/metrics").await;
    let errors = metrics
        .lines()
        .find(|line| line.starts_with("authz_database_errors_total"))
        .unwrap_or("authz_database_errors_total 0");
    assert!(errors.ends_with(" 0"), "{errors}");
}

/// Redmine splits a Basic credential at its first colon; with none, the whole is the user name
/// and there is no password, so `User.find_by_api_key(username)` is what can succeed.
#[tokio::test]
async fn an_api_key_as_the_user_name_needs_no_colon() {
    use base64::Engine as _;
    let app = spawn_app(&[]).await;
    let encode = |text: &str| {
        format!(
            "Basic {}",
            base64::engine::general_purpose::STANDARD.encode(text)
        )
    };
    app.check(get("/issues.json").header("authorization", &encode(demo_key("alice"))))
        .await
        .assert_user("alice", "basic-api-key");
    // A login alone is no credential.
    app.check(get("/issues.json").header("authorization", &encode("alice")))
        .await
        .assert_denied(401, "invalid_basic");
}
