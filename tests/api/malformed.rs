//! R-NEVER-3, R-LIMIT: malformed input ends in a deny, never a panic, a hang or an allow.

use bytes::Bytes;
use prost::Message as _;
use redmine_authz::envoy::proto::envoy::service::auth::v3::{AttributeContext, CheckRequest};
use redmine_authz::envoy::wire::MAX_CHECK_BYTES;
use tonic::transport::Channel;
use tonic::Status;

use crate::helpers::*;
use crate::support::raw_check;

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
    // Invalid UTF-8 in a query value: Rails refuses the request (400), so does the gate.
    app.check(get("/issues.json?key=%FF%FE"))
        .await
        .assert_denied(400, "malformed_parameters");
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
        "/issues.json#frag?key=x",
    ] {
        let verdict = app.check(get(path)).await;
        assert_eq!(verdict.status(), 401, "{path}: {verdict:?}");
    }
    // Escapes Rack refuses: Redmine answers 400, and so does the gate.
    for path in [
        "/issues.json?key=%",
        "/issues.json?%zz=1",
        "/issues?a=1&a[b]=2",
    ] {
        app.check(get(path))
            .await
            .assert_denied(400, "malformed_parameters");
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

/// The answer to `message`: a CheckResponse, or the RPC error a fail-open Envoy would allow.
async fn check_raw(app: &TestApp, message: Vec<u8>) -> Result<Verdict, Status> {
    let channel = Channel::from_shared(format!("http://127.0.0.1:{}", app.port))
        .unwrap()
        .connect_lazy();
    let mut client = tonic::client::Grpc::new(channel);
    raw_check::check(&mut client, Bytes::from(message))
        .await
        .map(Verdict)
}

#[tokio::test]
async fn undecodable_and_oversized_checks_are_denied_not_rpc_errors() {
    let app = spawn_app(&[]).await;
    let valid = get("/issues.json")
        .header("x-redmine-api-key", demo_key("alice"))
        .build()
        .encode_to_vec();
    for message in [
        vec![0xff; 11],                    // a varint that never ends
        vec![0x00],                        // field number 0
        vec![0x08, 0x01],                  // attributes as a varint
        vec![0x0a, 0x7f, 0x0a],            // a length past the end
        valid[..valid.len() / 2].to_vec(), // a Check cut short
        vec![0x13; 200],                   // groups nested past prost's limit
    ] {
        let verdict = check_raw(&app, message.clone()).await;
        let verdict = verdict.unwrap_or_else(|e| panic!("{message:02x?}: RPC error {e}"));
        verdict.assert_denied(400, "bad_request");
        assert_eq!(verdict.grpc_code(), 3);
    }

    // Padded with an unknown field (99) to the limit: read and decided.
    let mut at_limit = valid.clone();
    let padding = MAX_CHECK_BYTES - valid.len() - 2 - 4;
    at_limit.extend_from_slice(&[0x9a, 0x06]);
    prost::encoding::encode_varint(padding as u64, &mut at_limit);
    at_limit.resize(MAX_CHECK_BYTES, 0);
    assert_eq!(at_limit.len() - valid.len() - 2 - 4, padding);
    check_raw(&app, at_limit.clone())
        .await
        .expect("a CheckResponse")
        .assert_user("alice", "api-key");
    // One byte more: denied unread.
    at_limit.push(0);
    let verdict = check_raw(&app, at_limit).await.expect("a CheckResponse");
    verdict.assert_denied(413, "request_too_large");
    assert_eq!(verdict.grpc_code(), 3);
    let verdict = check_raw(&app, vec![b'x'; 3 * MAX_CHECK_BYTES]).await;
    verdict
        .expect("a CheckResponse")
        .assert_denied(413, "request_too_large");
}
