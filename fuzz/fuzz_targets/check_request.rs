//! Arbitrary bytes as Envoy's `CheckRequest`: decode, parse, classify, pick the credential
//! and render the answer. Nothing may panic, and the rendered answer must keep R-DENY-1's and R-ALLOW-3's
//! promises whatever the request carried.
#![no_main]

use libfuzzer_sys::fuzz_target;
use prost::Message as _;
use redmine_authz::auth::decision::{Allow, AuthMethod, Identity};
use redmine_authz::auth::{self, Credential, Decision, Deny, Format, Reason};
use redmine_authz::envoy::proto::envoy::service::auth::v3::check_response::HttpResponse;
use redmine_authz::envoy::proto::envoy::service::auth::v3::CheckResponse;
use redmine_authz::envoy::wire::CheckRequest;
use redmine_authz::envoy::{self, ResponseOptions};

fuzz_target!(|data: &[u8]| {
    let Ok(check) = CheckRequest::decode(data) else {
        return;
    };
    let Ok(request) = envoy::parse(check) else {
        return;
    };
    let _ = auth::classify(&request);
    let format = request.format().unwrap_or(Format::Json);
    let options = ResponseOptions::default();
    match Credential::select(&request) {
        Err(reason) => {
            let deny = Deny::new(reason, format);
            let _ = deny.body();
            let response = envoy::respond(&Decision::Deny(deny), &request, &options);
            assert_denied(&response);
        }
        Ok(_) => {
            // The two allows every request can end in: passed on without identity (scrubbed),
            // and authenticated, with and without stripping the credentials.
            let passed_on = Decision::Allow(Allow {
                identity: None,
                reason: Reason::NotGated,
            });
            assert_allowed(&envoy::respond(&passed_on, &request, &options), &options);
            let authenticated = Decision::Allow(Allow {
                identity: Some(Identity {
                    user_id: 7,
                    login: "alice".to_owned(),
                    admin: false,
                    method: AuthMethod::ApiKey,
                    impersonator: None,
                    oauth: None,
                }),
                reason: Reason::Authenticated,
            });
            for strip_credentials in [false, true] {
                let options = ResponseOptions {
                    strip_credentials,
                    ..ResponseOptions::default()
                };
                assert_allowed(
                    &envoy::respond(&authenticated, &request, &options),
                    &options,
                );
            }
        }
    }
});

fn assert_denied(response: &CheckResponse) {
    let code = response.status.as_ref().map(|s| s.code).unwrap_or(0);
    assert_ne!(code, 0, "a deny must not carry gRPC OK");
    let Some(HttpResponse::DeniedResponse(denied)) = &response.http_response else {
        panic!("a deny rendered without a denied_response");
    };
    let status = denied.status.as_ref().map(|s| s.code).unwrap_or(0);
    assert!((400..600).contains(&status), "deny status {status}");
}

/// Identity headers are set, never also removed, and every client header under the
/// prefix that is not set is removed (spoofing).
fn assert_allowed(response: &CheckResponse, options: &ResponseOptions) {
    let Some(HttpResponse::OkResponse(ok)) = &response.http_response else {
        panic!("an allow rendered without an ok_response");
    };
    let set: Vec<&str> = ok
        .headers
        .iter()
        .filter_map(|h| h.header.as_ref())
        .map(|h| h.key.as_str())
        .collect();
    for name in &ok.headers_to_remove {
        assert!(!set.contains(&name.as_str()), "{name} both set and removed");
    }
    for name in &set {
        assert!(
            name.starts_with(&options.header_prefix),
            "{name} outside the prefix"
        );
    }
}
