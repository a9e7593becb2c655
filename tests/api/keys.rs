//! R-CRED (choosing the credential) and R-KEY (API keys).

use crate::helpers::*;

#[tokio::test]
async fn api_key_in_parameter_or_header() {
    let app = spawn_app(&[]).await;
    let alice = app.user_id("alice").await.to_string();
    let verdict = app
        .check(get(&format!("/issues.json?key={}", demo_key("alice"))))
        .await;
    verdict.assert_user("alice", "api-key");
    assert_eq!(verdict.header("x-auth-user-id"), Some(alice));
    assert_eq!(
        verdict.header("x-auth-user-admin").as_deref(),
        Some("false")
    );
    app.check(get("/issues.json").header("X-Redmine-API-Key", demo_key("admin")))
        .await
        .assert_user("admin", "api-key");
}

#[tokio::test]
async fn unknown_malformed_and_inactive_keys_fail_alike() {
    let app = spawn_app(&[]).await;
    let long = "a".repeat(41);
    for key in [
        "0000000000000000000000000000000000000000",
        "not-a-key",
        long.as_str(),
        demo_key("larry"),
        demo_key("reggie"),
    ] {
        let verdict = app
            .check(get("/issues.json").header("x-redmine-api-key", key))
            .await;
        verdict.assert_denied(401, "invalid_api_key");
        assert_eq!(
            verdict.header("www-authenticate"),
            None,
            "no challenge for a wrong key (Redmine 7)"
        );
        assert_eq!(verdict.grpc_code(), 16);
    }
}

#[tokio::test]
async fn keys_are_case_sensitive() {
    let app = spawn_app(&[]).await;
    let upper = demo_key("alice").to_uppercase();
    app.check(get("/issues.json").header("x-redmine-api-key", &upper))
        .await
        .assert_denied(401, "invalid_api_key");
}

#[tokio::test]
async fn keys_of_non_user_principals_do_not_authenticate() {
    let app = spawn_app(&[]).await;
    app.exec("UPDATE users SET type = 'Group' WHERE login = 'alice'")
        .await;
    app.check(get("/issues.json").header("x-redmine-api-key", demo_key("alice")))
        .await
        .assert_denied(401, "invalid_api_key");
}

#[tokio::test]
async fn keys_skip_twofa_and_password_change_checks() {
    let app = spawn_app(&[]).await;
    app.check(get("/issues.json").header("x-redmine-api-key", demo_key("tina")))
        .await
        .assert_user("tina", "api-key");
    app.check(get("/issues.json").header("x-redmine-api-key", demo_key("mona")))
        .await
        .assert_user("mona", "api-key");
}

#[tokio::test]
async fn precedence_query_then_header_then_bearer_then_basic() {
    let app = spawn_app(&[]).await;
    let all = get(&format!(
        "/issues.json?key={}&access_token={}",
        demo_key("alice"),
        DEMO_OAUTH_TOKEN
    ))
    .header("x-redmine-api-key", demo_key("admin"))
    .header("authorization", &basic("mona", demo_password("mona")));
    app.check(all).await.assert_user("alice", "api-key");
    let header = get(&format!("/issues.json?access_token={DEMO_OAUTH_TOKEN}"))
        .header("x-redmine-api-key", demo_key("tina"));
    app.check(header).await.assert_user("tina", "api-key");
    let bearer = get(&format!("/issues.json?access_token={DEMO_OAUTH_TOKEN}"))
        .header("authorization", &basic("alice", demo_password("alice")));
    app.check(bearer).await.assert_user("admin", "oauth2");
}

#[tokio::test]
async fn a_wrong_credential_never_falls_back_to_the_next() {
    let app = spawn_app(&[]).await;
    app.check(get("/issues.json?key=wrongkey").header("x-redmine-api-key", demo_key("alice")))
        .await
        .assert_denied(401, "invalid_api_key");
    app.check(
        get("/issues.json")
            .header("x-redmine-api-key", "wrongkey")
            .header("authorization", &basic("alice", demo_password("alice"))),
    )
    .await
    .assert_denied(401, "invalid_api_key");
    // A malformed key is a wrong key, not an absent one.
    app.check(get("/issues.json?key=bad!key").header("x-redmine-api-key", demo_key("alice")))
        .await
        .assert_denied(401, "invalid_api_key");
}

#[tokio::test]
async fn blank_credentials_count_as_absent() {
    let app = spawn_app(&[]).await;
    app.check(get("/issues.json?key=").header("x-redmine-api-key", demo_key("alice")))
        .await
        .assert_user("alice", "api-key");
    app.check(get("/issues.json?key=%20%20").header("x-redmine-api-key", demo_key("alice")))
        .await
        .assert_user("alice", "api-key");
}

#[tokio::test]
async fn query_parameters_are_percent_decoded() {
    let app = spawn_app(&[]).await;
    let encoded: String = demo_key("alice")
        .bytes()
        .map(|b| format!("%{b:02X}"))
        .collect();
    app.check(get(&format!("/issues.json?key={encoded}")))
        .await
        .assert_user("alice", "api-key");
}

#[tokio::test]
async fn ambiguous_credentials_are_denied() {
    let app = spawn_app(&[]).await;
    let two_keys = format!(
        "/issues.json?key={}&key={}",
        demo_key("alice"),
        demo_key("admin")
    );
    app.check(get(&two_keys))
        .await
        .assert_denied(401, "ambiguous_credential");
    // Envoy joins a repeated header with a comma.
    let joined = get("/issues.json")
        .header("x-redmine-api-key", demo_key("alice"))
        .header("x-redmine-api-key", demo_key("admin"));
    app.check(joined.clone())
        .await
        .assert_denied(401, "ambiguous_credential");
    // With encode_raw_headers the two arrive as separate entries.
    app.check(joined.raw())
        .await
        .assert_denied(401, "ambiguous_credential");
    let two_auth = get("/issues.json")
        .header("authorization", &basic("alice", demo_password("alice")))
        .header("authorization", &basic("admin", demo_password("admin")));
    app.check(two_auth)
        .await
        .assert_denied(401, "ambiguous_credential");
    // The same value twice is not ambiguous.
    let same = format!("/issues.json?key={0}&key={0}", demo_key("alice"));
    app.check(get(&same)).await.assert_user("alice", "api-key");
}

#[tokio::test]
async fn header_map_requests_are_read_like_headers() {
    let app = spawn_app(&[]).await;
    app.check(
        get("/issues.json")
            .header("X-Redmine-API-Key", demo_key("alice"))
            .raw(),
    )
    .await
    .assert_user("alice", "api-key");
    app.check(
        get("/issues.json")
            .header("authorization", &basic("alice", demo_password("alice")))
            .raw(),
    )
    .await
    .assert_user("alice", "basic-password");
    app.check(get("/issues.json").raw())
        .await
        .assert_denied(401, "no_credential");
}

/// `R-PARAM-1`: the query as the configured Redmine's Rack reads it.
#[tokio::test]
async fn query_keys_as_each_redmine_release_reads_them() {
    let semicolon =
        || get("/users/current.json?x=1;key=junk").header("x-redmine-api-key", demo_key("alice"));
    let bracket = || get(&format!("/users/current.json?[key]={}", demo_key("alice")));
    // Redmine 5 (Rack 2) reads `key=junk` after the `;`, which hides the header's key.
    let five = spawn_app(&["--redmine-version", "5.0"]).await;
    five.check(semicolon())
        .await
        .assert_denied(401, "invalid_api_key");
    five.check(bracket()).await.assert_user("alice", "api-key");
    // Redmine 6 (Rack 3) splits at `&` only and reads `[key]` literally.
    let six = spawn_app(&["--redmine-version", "6.1"]).await;
    six.check(semicolon()).await.assert_user("alice", "api-key");
    six.check(bracket())
        .await
        .assert_denied(401, "no_credential");
    // The default reads as both and will not pick one.
    let any = spawn_app(&[]).await;
    any.check(semicolon())
        .await
        .assert_denied(401, "ambiguous_credential");
    any.check(bracket())
        .await
        .assert_denied(401, "ambiguous_credential");
}
