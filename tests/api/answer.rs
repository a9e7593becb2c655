//! R-ALLOW, R-DENY: the shape of allow and deny answers.

use redmine_authz::envoy::proto::envoy::config::core::v3::header_value_option::HeaderAppendAction;
use redmine_authz::envoy::proto::envoy::service::auth::v3::check_response::HttpResponse;

use crate::helpers::*;

#[tokio::test]
async fn identity_headers_overwrite_and_never_append() {
    let app = spawn_app(&[]).await;
    let verdict = app
        .check(get("/issues.json").header("x-redmine-api-key", demo_key("alice")))
        .await;
    let Some(HttpResponse::OkResponse(ok)) = &verdict.0.http_response else {
        panic!("{verdict:?}")
    };
    let names: Vec<_> = ok
        .headers
        .iter()
        .map(|h| h.header.as_ref().unwrap().key.as_str())
        .collect();
    assert_eq!(
        names,
        [
            "x-auth-user-id",
            "x-auth-user-login",
            "x-auth-user-admin",
            "x-auth-method"
        ]
    );
    for header in &ok.headers {
        assert_eq!(header.append, Some(false));
        assert_eq!(
            header.append_action,
            HeaderAppendAction::OverwriteIfExistsOrAdd as i32
        );
    }
    assert_eq!(verdict.grpc_code(), 0);
}

#[tokio::test]
async fn spoofed_identity_headers_are_removed_or_overwritten() {
    let app = spawn_app(&[]).await;
    let spoofed = |req: CheckBuilder| {
        req.header("x-auth-user-id", "1")
            .header("x-auth-user-login", "admin")
            .header("x-auth-impersonator", "root")
            .header("X-Auth-Anything", "x")
    };
    let verdict = app
        .check(spoofed(
            get("/issues.json").header("x-redmine-api-key", demo_key("alice")),
        ))
        .await;
    verdict.assert_user("alice", "api-key");
    let mut removed = verdict.removed();
    removed.sort();
    // Set headers are overwritten, never also removed (removal would win in Envoy).
    assert_eq!(removed, ["x-auth-anything", "x-auth-impersonator"]);
    // Not gated and anonymous: everything under the prefix goes.
    let verdict = app.check(spoofed(get("/projects"))).await;
    assert!(verdict.is_allowed());
    let mut removed = verdict.removed();
    removed.sort();
    assert_eq!(
        removed,
        [
            "x-auth-anything",
            "x-auth-impersonator",
            "x-auth-user-id",
            "x-auth-user-login"
        ]
    );
    let verdict = app
        .check(spoofed(
            get("/issues.json").context("redmine_authz_mode", "public"),
        ))
        .await;
    assert_eq!(verdict.removed().len(), 4, "{verdict:?}");
    // The same with encode_raw_headers.
    let verdict = app.check(spoofed(get("/projects")).raw()).await;
    assert_eq!(verdict.removed().len(), 4, "{verdict:?}");
}

#[tokio::test]
async fn custom_header_prefix() {
    let app = spawn_app(&["--header-prefix", "X-Redmine-User-"]).await;
    let verdict = app
        .check(
            get("/issues.json")
                .header("x-redmine-api-key", demo_key("alice"))
                .header("x-auth-user-id", "7"),
        )
        .await;
    assert_eq!(
        verdict.header("x-redmine-user-user-login").as_deref(),
        Some("alice")
    );
    assert!(
        verdict.removed().is_empty(),
        "other prefixes are not ours: {verdict:?}"
    );
}

#[tokio::test]
async fn dynamic_metadata_for_later_filters() {
    let app = spawn_app(&[]).await;
    let verdict = app
        .check(get("/issues.json").header("x-redmine-api-key", demo_key("alice")))
        .await;
    let metadata = verdict
        .0
        .dynamic_metadata
        .clone()
        .expect("dynamic metadata on allow");
    let field = |name: &str| {
        format!(
            "{:?}",
            metadata.fields.get(name).and_then(|v| v.kind.clone())
        )
    };
    assert!(field("login").contains("alice"));
    assert!(field("method").contains("api-key"));
    assert!(field("user_id").contains(&app.user_id("alice").await.to_string()));
    let deny = app.check(get("/issues.json")).await;
    assert!(deny.0.dynamic_metadata.is_none());
}

#[tokio::test]
async fn credentials_pass_unchanged_by_default_and_can_be_stripped() {
    let app = spawn_app(&[]).await;
    let verdict = app
        .check(get("/issues.json").header("x-redmine-api-key", demo_key("alice")))
        .await;
    assert!(verdict.removed().is_empty());
    let strict = spawn_app_on(&app.database_url, &["--strip-credentials"]).await;
    let verdict = strict
        .check(
            get(&format!("/issues.json?key={}&limit=5", demo_key("alice")))
                .header("authorization", "Digest x"),
        )
        .await;
    verdict.assert_user("alice", "api-key");
    assert!(
        verdict.removed().contains(&"authorization".to_owned()),
        "{verdict:?}"
    );
    let Some(HttpResponse::OkResponse(ok)) = &verdict.0.http_response else {
        panic!()
    };
    assert_eq!(ok.query_parameters_to_remove, ["key"]);
    // Not-gated requests keep theirs (/oauth/token needs its client credentials).
    let verdict = strict
        .check(get("/oauth/token").header("authorization", &basic("client", "secret")))
        .await;
    assert!(verdict.removed().is_empty());
}

#[tokio::test]
async fn deny_bodies_follow_the_request_format() {
    let app = spawn_app(&[]).await;
    let json = app.check(get("/issues.json")).await;
    assert_eq!(json.body(), r#"{"errors":["Authentication required"]}"#);
    assert_eq!(
        json.header("content-type").as_deref(),
        Some("application/json; charset=utf-8")
    );
    let xml = app.check(get("/issues.xml?key=wrong")).await;
    assert_eq!(
        xml.header("content-type").as_deref(),
        Some("application/xml; charset=utf-8")
    );
    assert!(
        xml.body()
            .ends_with(r#"<errors type="array"><error>Invalid API key</error></errors>"#),
        "{}",
        xml.body()
    );
    let by_parameter = app.check(get("/issues?format=xml")).await;
    assert!(by_parameter.body().contains("<errors"));
}

#[tokio::test]
async fn no_credential_gets_a_basic_challenge_and_unauthenticated() {
    let app = spawn_app(&[]).await;
    let verdict = app.check(get("/issues.json")).await;
    verdict.assert_denied(401, "no_credential");
    assert_eq!(verdict.grpc_code(), 16);
    assert_eq!(
        verdict.header("www-authenticate").as_deref(),
        Some(r#"Basic realm="Redmine API""#)
    );
}
