//! SPEC 8: malformed input ends in a deny, never a panic, a hang or an allow.

use redmine_authz::envoy::proto::envoy::service::auth::v3::{AttributeContext, CheckRequest};

use crate::helpers::*;

#[tokio::test]
async fn malformed_basic_credentials() {
    let app = spawn_app(&[]).await;
    for value in [
        "Basic !!!notbase64",
        "Basic YWxpY2U=",
        "Basic ",
        "Basic /w==",
        "Basic YWxpY2U6cHc=extra",
    ] {
        let verdict = app
            .check(get("/issues.json").header("authorization", value))
            .await;
        assert_eq!(verdict.status(), 401, "{value}: {verdict:?}");
        assert!(!verdict.is_allowed());
    }
    // Missing padding is tolerated: "alice:<password>" without '='.
    let encoded = basic("alice", demo_password("alice"));
    let unpadded = encoded.trim_end_matches('=');
    app.check(get("/issues.json").header("authorization", unpadded))
        .await
        .assert_user("alice", "basic-password");
    // "alice" with no colon: a user name without a password, tried only as an API key.
    app.check(get("/issues.json").header("authorization", "Basic YWxpY2U"))
        .await
        .assert_denied(401, "invalid_basic");
}

#[tokio::test]
async fn non_utf8_header_values() {
    let app = spawn_app(&[]).await;
    app.check(get("/issues.json").raw_header("authorization", b"Basic \xff\xfe"))
        .await
        .assert_denied(401, "malformed_header");
    app.check(get("/issues.json").raw_header("x-redmine-api-key", b"\xc3\x28"))
        .await
        .assert_denied(401, "malformed_header");
    // A non-UTF-8 value elsewhere does not matter.
    app.check(
        get("/issues.json")
            .raw_header("x-custom", b"\xff")
            .header("x-redmine-api-key", demo_key("alice")),
    )
    .await
    .assert_user("alice", "api-key");
    // Invalid UTF-8 in the query decodes to replacement characters: not a key.
    app.check(get("/issues.json?key=%FF%FE"))
        .await
        .assert_denied(401, "invalid_api_key");
}

#[tokio::test]
async fn huge_headers_are_answered() {
    let app = spawn_app(&[]).await;
    let big = "A".repeat(10 * 1024);
    app.check(get("/issues.json").header("x-redmine-api-key", &big))
        .await
        .assert_denied(401, "invalid_api_key");
    app.check(get("/issues.json").header("authorization", &format!("Basic {big}")))
        .await
        .assert_denied(401, "credential_too_long");
    app.check(get("/issues.json").header("authorization", &format!("Bearer {big}")))
        .await
        .assert_denied(401, "credential_too_long");
    app.check(get(&format!("/issues.json?access_token={big}")))
        .await
        .assert_denied(401, "credential_too_long");
    let verdict = app
        .check(
            get("/issues.json")
                .header("x-redmine-api-key", demo_key("alice"))
                .header("cookie", &big)
                .header("x-redmine-switch-user", &big),
        )
        .await;
    verdict.assert_user("alice", "api-key");
    let mut many = get("/issues.json").header("x-redmine-api-key", demo_key("alice"));
    for i in 0..200 {
        many = many.header(&format!("x-filler-{i}"), "v");
    }
    app.check(many).await.assert_user("alice", "api-key");
}

#[tokio::test]
async fn empty_and_partial_check_requests() {
    let app = spawn_app(&[]).await;
    for check in [
        CheckRequest { attributes: None },
        CheckRequest {
            attributes: Some(AttributeContext::default()),
        },
    ] {
        let verdict = Verdict(app.send(check).await);
        verdict.assert_denied(400, "bad_request");
        assert_eq!(verdict.grpc_code(), 3);
    }
}

#[tokio::test]
async fn odd_authorization_schemes_and_paths() {
    let app = spawn_app(&[]).await;
    for value in [
        "Basic",
        "Bearer",
        "Bearer    ",
        "Negotiate abc",
        "basicYWxpY2U6eA==",
        "\u{0}",
    ] {
        let verdict = app
            .check(get("/issues.json").header("authorization", value))
            .await;
        assert!(!verdict.is_allowed(), "{value:?}: {verdict:?}");
        assert_eq!(verdict.status(), 401, "{value:?}");
    }
    for path in [
        "/issues.json?key",
        "/issues.json?=&&=",
        "/issues.json?key=%",
        "/issues.json#frag?key=x",
        "/issues.json?%zz=1",
    ] {
        let verdict = app.check(get(path)).await;
        assert_eq!(verdict.status(), 401, "{path}: {verdict:?}");
    }
}

#[tokio::test]
async fn requests_over_the_size_limits_get_431() {
    let app = spawn_app(&[]).await;
    let mut crowded = get("/issues.json").header("x-redmine-api-key", demo_key("alice"));
    for i in 0..300 {
        crowded = crowded.header(&format!("x-filler-{i}"), "v");
    }
    let verdict = app.check(crowded.clone()).await;
    verdict.assert_denied(431, "headers_too_large");
    assert_eq!(verdict.grpc_code(), 3);
    app.check(crowded.raw())
        .await
        .assert_denied(431, "headers_too_large");
    let huge = "A".repeat(20 * 1024);
    app.check(get("/issues.json").header("cookie", &huge))
        .await
        .assert_denied(431, "headers_too_large");
    let mut heavy = get("/issues.json");
    for i in 0..10 {
        heavy = heavy.header(&format!("x-big-{i}"), &"B".repeat(12 * 1024));
    }
    app.check(heavy)
        .await
        .assert_denied(431, "headers_too_large");
    app.check(get(&format!("/issues.json?q={}", "C".repeat(20 * 1024))))
        .await
        .assert_denied(431, "headers_too_large");
    // Just under the caps: decided normally.
    let mut fine = get("/issues.json").header("x-redmine-api-key", demo_key("alice"));
    for i in 0..100 {
        fine = fine.header(&format!("x-filler-{i}"), &"v".repeat(500));
    }
    app.check(fine).await.assert_user("alice", "api-key");
}
