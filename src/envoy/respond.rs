//! [`Decision`] -> `CheckResponse` (SPEC 7). The RPC always succeeds; the verdict is in
//! `status` and the HTTP response Envoy should produce or modify.

use prost_types::{value::Kind, Struct, Value};

use super::proto::envoy::config::core::v3::{
    header_value_option::HeaderAppendAction, HeaderValue, HeaderValueOption,
};
use super::proto::envoy::r#type::v3::{HttpStatus, StatusCode};
use super::proto::envoy::service::auth::v3::{
    check_response::HttpResponse, CheckResponse, DeniedHttpResponse, OkHttpResponse,
};
use super::proto::google::rpc;
use crate::auth::credentials::{API_KEY_HEADER, AUTHORIZATION, SWITCH_USER_HEADER};
use crate::auth::decision::{Allow, Challenge, DenyStatus};
use crate::auth::{Decision, Deny, Identity, Reason, Request};

/// How allowed requests are rewritten for the upstream.
#[derive(Debug, Clone)]
pub struct ResponseOptions {
    /// Prefix of the identity headers, lower-case, e.g. `x-auth-`.
    pub header_prefix: String,
    /// Remove the credential from authenticated requests (upstream trusts the identity).
    pub strip_credentials: bool,
}

impl Default for ResponseOptions {
    fn default() -> Self {
        Self {
            header_prefix: "x-auth-".to_owned(),
            strip_credentials: false,
        }
    }
}

const CREDENTIAL_PARAMETERS: [&str; 3] = ["key", "access_token", "bearer_token"];

pub fn respond(decision: &Decision, request: &Request, options: &ResponseOptions) -> CheckResponse {
    match decision {
        Decision::Allow(allow) => allowed(allow, request, options),
        Decision::Deny(deny) => denied(deny),
    }
}

fn allowed(allow: &Allow, request: &Request, options: &ResponseOptions) -> CheckResponse {
    let identity_headers = allow
        .identity
        .as_ref()
        .map(|i| identity_headers(i, &options.header_prefix))
        .unwrap_or_default();
    let is_set = |name: &str| identity_headers.iter().any(|(n, _)| n == name);

    // Anything the client sent under our prefix is spoofed: drop what we do not overwrite.
    let mut remove: Vec<String> = Vec::new();
    for name in request.headers.names() {
        if name.starts_with(&options.header_prefix)
            && !is_set(name)
            && !remove.iter().any(|r| r == name)
        {
            remove.push(name.to_owned());
        }
    }
    let switched = allow
        .identity
        .as_ref()
        .is_some_and(|i| i.impersonator.is_some());
    // Upstream Redmine checks an LDAP user itself and must see the same request.
    let passed_on = allow.reason == Reason::ExternalAuthPassedOn;
    let has_switch_header = request.headers.get_all(SWITCH_USER_HEADER).next().is_some();
    let strip = options.strip_credentials && allow.reason == Reason::Authenticated;
    if has_switch_header && !passed_on && (!switched || strip) {
        remove.push(SWITCH_USER_HEADER.to_owned());
    }
    let mut query_parameters_to_remove = Vec::new();
    if strip {
        for header in [AUTHORIZATION, API_KEY_HEADER] {
            if request.headers.names().any(|n| n == header) {
                remove.push(header.to_owned());
            }
        }
        for parameter in CREDENTIAL_PARAMETERS {
            if request.query_all(parameter).next().is_some() {
                query_parameters_to_remove.push(parameter.to_owned());
            }
        }
    }

    CheckResponse {
        status: Some(rpc::Status {
            code: GRPC_OK,
            ..Default::default()
        }),
        http_response: Some(HttpResponse::OkResponse(OkHttpResponse {
            headers: identity_headers
                .into_iter()
                .map(|(n, v)| overwrite(n, v))
                .collect(),
            headers_to_remove: remove,
            query_parameters_to_remove,
            ..Default::default()
        })),
        dynamic_metadata: allow.identity.as_ref().map(dynamic_metadata),
    }
}

fn identity_headers(identity: &Identity, prefix: &str) -> Vec<(String, String)> {
    // Concatenated, not format!ted: this runs on every allowed Check.
    let name = |suffix: &str| [prefix, suffix].concat();
    let mut headers = vec![
        // itoa, not `to_string`: the formatter machinery costs ten times as much per number.
        (
            name("user-id"),
            itoa::Buffer::new().format(identity.user_id).to_owned(),
        ),
        (name("user-login"), identity.login.clone()),
        (
            name("user-admin"),
            if identity.admin { "true" } else { "false" }.to_owned(),
        ),
        (name("method"), identity.method.as_str().to_owned()),
    ];
    if let Some(admin) = &identity.impersonator {
        headers.push((name("impersonator"), admin.clone()));
    }
    if let Some(oauth) = &identity.oauth {
        headers.push((name("oauth-scopes"), oauth.scopes.join(" ")));
        if let Some(application_id) = oauth.application_id {
            headers.push((name("oauth-application-id"), application_id.to_string()));
        }
    }
    headers
}

/// For later Envoy filters, e.g. a per-user rate limit.
fn dynamic_metadata(identity: &Identity) -> Struct {
    let text = |s: &str| Value {
        kind: Some(Kind::StringValue(s.to_owned())),
    };
    let mut fields = std::collections::BTreeMap::new();
    fields.insert(
        "user_id".to_owned(),
        Value {
            kind: Some(Kind::NumberValue(identity.user_id as f64)),
        },
    );
    fields.insert("login".to_owned(), text(&identity.login));
    fields.insert("method".to_owned(), text(identity.method.as_str()));
    if let Some(admin) = &identity.impersonator {
        fields.insert("impersonator".to_owned(), text(admin));
    }
    Struct { fields }
}

fn denied(deny: &Deny) -> CheckResponse {
    let (body, content_type) = deny.body();
    let mut headers = vec![overwrite(
        "content-type".to_owned(),
        content_type.to_owned(),
    )];
    match deny.challenge {
        Some(Challenge::Basic) => headers.push(overwrite(
            "www-authenticate".to_owned(),
            r#"Basic realm="Redmine API""#.to_owned(),
        )),
        Some(Challenge::BearerInvalidToken) => headers.push(overwrite(
            "www-authenticate".to_owned(),
            format!(
                r#"Bearer realm="Redmine", error="invalid_token", error_description="{}""#,
                deny.reason.message()
            ),
        )),
        None => {}
    }
    if let Some(seconds) = deny.retry_after {
        headers.push(overwrite("retry-after".to_owned(), seconds.to_string()));
    }
    let (http, grpc) = codes(deny.status);
    CheckResponse {
        status: Some(rpc::Status {
            code: grpc,
            message: deny.reason.as_str().to_owned(),
            details: vec![],
        }),
        http_response: Some(HttpResponse::DeniedResponse(DeniedHttpResponse {
            status: Some(HttpStatus { code: http as i32 }),
            headers,
            body,
        })),
        dynamic_metadata: None,
    }
}

const GRPC_OK: i32 = 0;

/// The HTTP status and the matching gRPC code (google.rpc.Code) for each deny.
fn codes(status: DenyStatus) -> (StatusCode, i32) {
    match status {
        DenyStatus::BadRequest => (StatusCode::BadRequest, 3), // INVALID_ARGUMENT
        DenyStatus::HeadersTooLarge => (StatusCode::RequestHeaderFieldsTooLarge, 3), // INVALID_ARGUMENT
        DenyStatus::InternalError => (StatusCode::InternalServerError, 13),          // INTERNAL
        DenyStatus::Unauthorized => (StatusCode::Unauthorized, 16), // UNAUTHENTICATED
        DenyStatus::Forbidden => (StatusCode::Forbidden, 7),        // PERMISSION_DENIED
        DenyStatus::PreconditionFailed => (StatusCode::PreconditionFailed, 9), // FAILED_PRECONDITION
        DenyStatus::TooManyRequests => (StatusCode::TooManyRequests, 8),       // RESOURCE_EXHAUSTED
        DenyStatus::ServiceUnavailable => (StatusCode::ServiceUnavailable, 14), // UNAVAILABLE
    }
}

/// A header that replaces any value the request had, in both the legacy and current fields.
fn overwrite(name: String, value: String) -> HeaderValueOption {
    HeaderValueOption {
        header: Some(HeaderValue {
            key: name,
            value,
            raw_value: Vec::new(),
        }),
        append: Some(false),
        append_action: HeaderAppendAction::OverwriteIfExistsOrAdd as i32,
        keep_empty_value: false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::auth::decision::AuthMethod;
    use crate::auth::Format;
    use crate::envoy::proto::envoy::service::auth::v3::check_response::HttpResponse;
    use prost_types::value::Kind;

    fn alice(impersonator: Option<&str>) -> Decision {
        Decision::Allow(Allow {
            identity: Some(Identity {
                user_id: 7,
                login: "alice".to_owned(),
                admin: false,
                method: AuthMethod::ApiKey,
                impersonator: impersonator.map(str::to_owned),
                oauth: None,
            }),
            reason: Reason::Authenticated,
        })
    }

    #[test]
    fn an_allow_reads_as_envoys_message() {
        let request = Request::new("GET", "/issues.json?key=k")
            .with_header("x-auth-user-id", "1")
            .with_header("x-auth-role", "admin")
            .with_header(SWITCH_USER_HEADER, "bob");
        let options = ResponseOptions {
            strip_credentials: true,
            ..Default::default()
        };
        let answer = respond(&alice(Some("root")), &request, &options);
        assert_eq!(answer.status.unwrap().code, 0);
        let Some(HttpResponse::OkResponse(ok)) = answer.http_response else {
            panic!("not an ok_response");
        };
        let set: Vec<(String, String, i32, Option<bool>)> = ok
            .headers
            .into_iter()
            .map(|h| {
                let header = h.header.unwrap();
                (header.key, header.value, h.append_action, h.append)
            })
            .collect();
        let overwrite = HeaderAppendAction::OverwriteIfExistsOrAdd as i32;
        let expected = [
            ("x-auth-user-id", "7"),
            ("x-auth-user-login", "alice"),
            ("x-auth-user-admin", "false"),
            ("x-auth-method", "api-key"),
            ("x-auth-impersonator", "root"),
        ]
        .map(|(k, v)| (k.to_owned(), v.to_owned(), overwrite, Some(false)));
        assert_eq!(set, expected);
        // Spoofed and not overwritten; the switch header, with the credentials stripped.
        assert_eq!(ok.headers_to_remove, ["x-auth-role", SWITCH_USER_HEADER]);
        assert_eq!(ok.query_parameters_to_remove, ["key"]);
        let metadata = answer.dynamic_metadata.unwrap().fields;
        let kind = |key: &str| metadata[key].kind.clone().unwrap();
        assert_eq!(kind("user_id"), Kind::NumberValue(7.0));
        assert_eq!(kind("login"), Kind::StringValue("alice".to_owned()));
        assert_eq!(kind("method"), Kind::StringValue("api-key".to_owned()));
        assert_eq!(kind("impersonator"), Kind::StringValue("root".to_owned()));
    }

    #[test]
    fn a_deny_reads_as_envoys_message() {
        let mut deny = Deny::new(Reason::Throttled, Format::Json);
        deny.retry_after = Some(30);
        let request = Request::new("GET", "/issues.json");
        let answer = respond(&Decision::Deny(deny.clone()), &request, &Default::default());
        let status = answer.status.unwrap();
        assert_eq!((status.code, status.message.as_str()), (8, "throttled"));
        let Some(HttpResponse::DeniedResponse(denied)) = answer.http_response else {
            panic!("not a denied_response");
        };
        assert_eq!(denied.status.unwrap().code, 429);
        assert_eq!(denied.body, deny.body().0);
        let headers: Vec<(String, String)> = denied
            .headers
            .into_iter()
            .map(|h| h.header.unwrap())
            .map(|h| (h.key, h.value))
            .collect();
        assert!(headers.contains(&("retry-after".to_owned(), "30".to_owned())));
        assert!(headers.iter().any(|(k, _)| k == "content-type"));
        assert_eq!(answer.dynamic_metadata, None);
    }
}
