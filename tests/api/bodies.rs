//! R-PARAM: request bodies. Rails reads `key` from the bodies it parses (forms, multipart, JSON,
//! XML); a body of those types the gate did not see whole is denied 413, never guessed at.

use crate::helpers::*;

/// Content types Rails parses into `params`, each with a body that sets `key`.
const PARSED: [(&str, &str); 8] = [
    ("application/x-www-form-urlencoded", "key=K&x="),
    (
        "multipart/form-data; boundary=b",
        "--b\r\ncontent-disposition: form-data; name=\"key\"\r\n\r\nK\r\n--b--\r\n",
    ),
    ("application/json", r#"{"key":"K","x":""}"#),
    ("text/x-json", r#"{"key":"K","x":""}"#),
    ("application/jsonrequest; charset=utf-8", r#"{"key":"K"}"#),
    ("application/xml", "<key>K</key>"),
    ("text/xml", "<key>K</key>"),
    ("application/x-xml", "<key>K</key>"),
];

#[tokio::test]
async fn a_parsed_body_envoy_cut_is_413_whoever_sends_it() {
    let app = spawn_app(&[]).await;
    let alice = demo_key("alice");
    for (content_type, body) in PARSED {
        let verdict = app
            .check(
                post("/issues.json")
                    .header("x-redmine-api-key", alice)
                    .header("content-type", content_type)
                    .cut_body(body.as_bytes(), 70_000),
            )
            .await;
        verdict.assert_denied(413, "body_too_large");
        assert_eq!(
            verdict.body(),
            r#"{"errors":["Request body too large to check for credentials"]}"#,
            "{content_type}"
        );
        // In the request's format, as Redmine answers.
        let verdict = app
            .check(
                post("/issues.xml")
                    .header("content-type", content_type)
                    .cut_body(body.as_bytes(), 70_000),
            )
            .await;
        verdict.assert_denied(413, "body_too_large");
        assert!(verdict.body().contains("<error>Request body too large"));
        assert_eq!(
            verdict.header("content-type").as_deref(),
            Some("application/xml; charset=utf-8")
        );
    }
    // A POST without a content type is a form to Rack.
    app.check(
        post("/issues.json")
            .header("x-redmine-api-key", alice)
            .cut_body(b"key=K", 70_000),
    )
    .await
    .assert_denied(413, "body_too_large");
}

#[tokio::test]
async fn a_body_rails_does_not_parse_is_never_needed() {
    let app = spawn_app(&[]).await;
    let alice = demo_key("alice");
    for content_type in [
        "application/octet-stream",
        "image/png",
        "application/vnd.api+json",
    ] {
        let upload = |path: &str| {
            post(path)
                .header("x-redmine-api-key", alice)
                .header("content-type", content_type)
        };
        app.check(upload("/uploads.json").cut_body(b"\x89PNG\0\0", 5_000_000))
            .await
            .assert_user("alice", "api-key");
        // Not forwarded at all (a route with `disable_request_body_buffering`).
        app.check(upload("/uploads.json").header("content-length", "5000000"))
            .await
            .assert_user("alice", "api-key");
    }
}

#[tokio::test]
async fn a_parsed_body_envoy_did_not_forward_is_413() {
    let app = spawn_app(&[]).await;
    let alice = demo_key("alice");
    for (content_type, _) in PARSED {
        let request = post("/issues.json")
            .header("x-redmine-api-key", alice)
            .header("content-type", content_type);
        app.check(request.clone().header("content-length", "20"))
            .await
            .assert_denied(413, "body_not_forwarded");
        app.check(request.clone().header("transfer-encoding", "chunked"))
            .await
            .assert_denied(413, "body_not_forwarded");
        // No body at all: nothing to miss.
        app.check(request.clone().header("content-length", "0"))
            .await
            .assert_user("alice", "api-key");
        app.check(request).await.assert_user("alice", "api-key");
    }
}

#[tokio::test]
async fn a_whole_body_is_checked_and_a_small_one_arrives_whole() {
    let app = spawn_app(&[]).await;
    let alice = demo_key("alice");
    for (content_type, body) in PARSED {
        // Seen whole, and read: Redmine takes the body's `key` over the header's
        // (R-PARAM-4), and `K` is no key.
        app.check(
            post("/issues.json")
                .header("x-redmine-api-key", alice)
                .header("content-type", content_type)
                .body(body.as_bytes()),
        )
        .await
        .assert_denied(401, "invalid_api_key");
        let with_alice = body.replace('K', alice);
        app.check(
            post("/issues.json")
                .header("content-type", content_type)
                .body(with_alice.as_bytes()),
        )
        .await
        .assert_user("alice", "api-key");
    }
    // Envoy calls a body of exactly max_request_bytes whole even when more follows: the
    // Content-Length tells.
    let first = vec![b'a'; 65_536];
    app.check(
        post("/issues.json")
            .header("x-redmine-api-key", alice)
            .header("content-type", "application/x-www-form-urlencoded")
            .cut_body(&first, 65_536)
            .header("content-length", "65600"),
    )
    .await
    .assert_denied(413, "body_too_large");
}

#[tokio::test]
async fn only_gated_requests_need_their_body() {
    let app = spawn_app(&[]).await;
    // The web UI: Redmine checks its own forms; the gate only scrubs identity headers.
    for path in ["/issues", "/projects/demo/issues/new", "/uploads.js"] {
        let verdict = app
            .check(
                post(path)
                    .header("content-type", "multipart/form-data; boundary=b")
                    .cut_body(b"--b\r\n", 5_000_000),
            )
            .await;
        assert!(verdict.is_allowed(), "{path}: {verdict:?}");
    }
    // A `public` route is gated when a credential may be there, and the body may hold one.
    app.check(
        post("/projects.json")
            .context("redmine_authz_mode", "public")
            .header("content-type", "application/json")
            .cut_body(b"{\"key\":", 70_000),
    )
    .await
    .assert_denied(413, "body_too_large");
}

#[tokio::test]
async fn a_client_cannot_make_a_cut_body_whole() {
    let app = spawn_app(&[]).await;
    let alice = demo_key("alice");
    // Envoy drops a client's x-envoy-auth-partial-body and sets its own; were both to reach
    // the gate, any `true` wins, in either header form.
    for raw in [false, true] {
        let mut request = post("/issues.json")
            .header("x-redmine-api-key", alice)
            .header("content-type", "application/json")
            .header("x-envoy-auth-partial-body", "false")
            .cut_body(b"{\"key\":", 70_000);
        if raw {
            request = request.raw();
        }
        app.check(request)
            .await
            .assert_denied(413, "body_too_large");
    }
}
