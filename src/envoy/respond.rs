//! [`Decision`] -> `CheckResponse` (`R-ALLOW`, `R-DENY` in docs/decisions.md). The RPC always succeeds; the verdict is in
//! `status` and the HTTP response Envoy should produce or modify.

use prost::bytes::Bytes;
use prost::Message as _;
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
use crate::auth::request::has_rack_prefix;
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
        Decision::Allow(allow) => allowed(allow, removals(allow, request, options), options),
        Decision::Deny(deny) => denied(deny),
    }
}

/// A `CheckResponse` as the gate's server sends it: encoded once for each distinct answer
/// that follows from the decision alone (an identity's allow without removals, a deny),
/// built for each Check otherwise. Only ever encoded.
#[derive(Debug, Clone)]
pub enum Answer {
    Encoded(Bytes),
    Built(Box<CheckResponse>),
}

impl Default for Answer {
    fn default() -> Self {
        Self::Built(Box::default())
    }
}

impl prost::Message for Answer {
    fn encode_raw(&self, buf: &mut impl prost::bytes::BufMut) {
        match self {
            Self::Encoded(bytes) => buf.put_slice(bytes),
            Self::Built(response) => response.encode_raw(buf),
        }
    }

    fn merge_field(
        &mut self,
        tag: u32,
        wire_type: prost::encoding::WireType,
        buf: &mut impl prost::bytes::Buf,
        ctx: prost::encoding::DecodeContext,
    ) -> Result<(), prost::DecodeError> {
        // The server never decodes an answer; a decoder would see an empty one.
        prost::encoding::skip_field(wire_type, tag, buf, ctx)
    }

    fn encoded_len(&self) -> usize {
        match self {
            Self::Encoded(bytes) => bytes.len(),
            Self::Built(response) => response.encoded_len(),
        }
    }

    fn clear(&mut self) {
        *self = Self::default();
    }
}

/// Most answers repeat: the same user's allow, the same deny. Building one took a dozen
/// strings and prost's encoding of nested messages and a map; a repeat is a copy of bytes.
/// Keyed by the decision itself, so an entry never needs invalidating.
pub struct Responder {
    options: ResponseOptions,
    allows: quick_cache::sync::Cache<Option<Identity>, Bytes>,
    denies: quick_cache::sync::Cache<Deny, Bytes>,
}

/// Distinct identities and denies whose answers are kept (a few hundred bytes each).
const ALLOWS_KEPT: usize = 4096;
const DENIES_KEPT: usize = 1024;

impl Responder {
    pub fn new(options: ResponseOptions) -> Self {
        Self {
            options,
            allows: quick_cache::sync::Cache::new(ALLOWS_KEPT),
            denies: quick_cache::sync::Cache::new(DENIES_KEPT),
        }
    }

    pub fn answer(&self, decision: &Decision, request: &Request) -> Answer {
        let encode = |response: CheckResponse| {
            Ok::<_, std::convert::Infallible>(Bytes::from(response.encode_to_vec()))
        };
        let options = &self.options;
        let encoded = match decision {
            Decision::Allow(allow) => {
                let removals = removals(allow, request, options);
                if !removals.is_empty() {
                    return Answer::Built(Box::new(allowed(allow, removals, options)));
                }
                self.allows.get_or_insert_with(&allow.identity, || {
                    encode(allowed(allow, removals, options))
                })
            }
            Decision::Deny(deny) => self
                .denies
                .get_or_insert_with(deny, || encode(denied(deny))),
        };
        let Ok(encoded) = encoded;
        Answer::Encoded(encoded)
    }
}

/// What an allow takes out of the request: all that depends on the request, not the decision.
#[derive(Debug, Default)]
struct Removals {
    headers: Vec<String>,
    query_parameters: Vec<String>,
}

impl Removals {
    fn is_empty(&self) -> bool {
        self.headers.is_empty() && self.query_parameters.is_empty()
    }
}

fn removals(allow: &Allow, request: &Request, options: &ResponseOptions) -> Removals {
    // Anything the client sent under our prefix is spoofed: drop what we do not overwrite.
    // The identity headers are listed only for a request that has such a header, which few do.
    let mut set: Option<Vec<(String, String)>> = None;
    let mut headers: Vec<String> = Vec::new();
    for name in request.headers.names() {
        // In any spelling: a Rack upstream reads `x_auth_user_id` as `x-auth-user-id`.
        if !has_rack_prefix(name, &options.header_prefix) {
            continue;
        }
        let set = set.get_or_insert_with(|| {
            allow
                .identity
                .as_ref()
                .map(|i| identity_headers(i, &options.header_prefix))
                .unwrap_or_default()
        });
        if !set.iter().any(|(n, _)| n == name) && !headers.iter().any(|r| r == name) {
            headers.push(name.to_owned());
        }
    }
    let switched = allow
        .identity
        .as_ref()
        .is_some_and(|i| i.impersonator.is_some());
    // Upstream Redmine checks an LDAP user itself and must see the same request.
    let passed_on = allow.reason == Reason::ExternalAuthPassedOn;
    let strip = options.strip_credentials && allow.reason == Reason::Authenticated;
    // Every spelling Rack reads as the header goes, or the upstream could read one the gate
    // did not judge.
    let mut remove_spellings = |header: &str| {
        for name in request.headers.spelling_names(header) {
            if !headers.iter().any(|r| r == name) {
                headers.push(name.to_owned());
            }
        }
    };
    if !passed_on && (!switched || strip) {
        remove_spellings(SWITCH_USER_HEADER);
    }
    let mut query_parameters = Vec::new();
    if strip {
        remove_spellings(AUTHORIZATION);
        remove_spellings(API_KEY_HEADER);
        query_parameters = request.raw_parameter_names(&CREDENTIAL_PARAMETERS);
    }
    Removals {
        headers,
        query_parameters,
    }
}

fn allowed(allow: &Allow, removals: Removals, options: &ResponseOptions) -> CheckResponse {
    let identity_headers = allow
        .identity
        .as_ref()
        .map(|i| identity_headers(i, &options.header_prefix))
        .unwrap_or_default();
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
            headers_to_remove: removals.headers,
            query_parameters_to_remove: removals.query_parameters,
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
        DenyStatus::PayloadTooLarge => (StatusCode::PayloadTooLarge, 3), // INVALID_ARGUMENT
        DenyStatus::InternalError => (StatusCode::InternalServerError, 13), // INTERNAL
        DenyStatus::Unauthorized => (StatusCode::Unauthorized, 16),      // UNAUTHENTICATED
        DenyStatus::Forbidden => (StatusCode::Forbidden, 7),             // PERMISSION_DENIED
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
    fn a_repeated_answer_is_the_built_one_encoded() {
        let oauth = Decision::Allow(Allow {
            identity: Some(Identity {
                user_id: 9,
                login: "carol".to_owned(),
                admin: true,
                method: AuthMethod::OAuth2,
                impersonator: None,
                oauth: Some(crate::auth::decision::OAuthGrant {
                    scopes: vec!["view_issues".to_owned(), "admin".to_owned()],
                    application_id: Some(3),
                }),
            }),
            reason: Reason::Authenticated,
        });
        let anonymous = Decision::Allow(Allow {
            identity: None,
            reason: Reason::NotGated,
        });
        let mut throttled = Deny::new(Reason::Throttled, Format::Json);
        throttled.retry_after = Some(30);
        let decisions = [
            alice(None),
            alice(Some("root")),
            oauth,
            anonymous,
            Decision::Deny(Deny::new(Reason::InvalidApiKey, Format::Json)),
            Decision::Deny(Deny::new(Reason::InvalidApiKey, Format::Xml)),
            Decision::Deny(Deny::new(Reason::NoCredential, Format::Json)),
            Decision::Deny(throttled),
        ];
        let request = Request::new("GET", "/issues.json").with_header("x-request-id", "r1");
        let responder = Responder::new(ResponseOptions::default());
        for round in ["first", "kept"] {
            for decision in &decisions {
                let built = respond(decision, &request, &ResponseOptions::default());
                let answer = responder.answer(decision, &request);
                assert!(
                    matches!(answer, Answer::Encoded(_)),
                    "{round}: {decision:?}"
                );
                assert_eq!(
                    answer.encode_to_vec(),
                    built.encode_to_vec(),
                    "{round}: {decision:?}"
                );
            }
        }
    }

    #[test]
    fn an_allow_that_removes_from_the_request_is_never_kept() {
        let spoofed = Request::new("GET", "/issues.json").with_header("x-auth-role", "admin");
        let clean = Request::new("GET", "/issues.json");
        let with_key = Request::new("GET", "/issues.json?key=k");
        let stripping = Responder::new(ResponseOptions {
            strip_credentials: true,
            ..Default::default()
        });
        let removed = |answer: Answer| {
            let ok = match CheckResponse::decode(answer.encode_to_vec().as_slice())
                .unwrap()
                .http_response
            {
                Some(HttpResponse::OkResponse(ok)) => ok,
                other => panic!("not an ok_response: {other:?}"),
            };
            (ok.headers_to_remove, ok.query_parameters_to_remove)
        };
        for request in [&spoofed, &clean, &with_key, &spoofed, &clean] {
            let answer = stripping.answer(&alice(None), request);
            let expected = respond(&alice(None), request, &stripping.options);
            assert_eq!(
                removed(answer),
                removed(Answer::Built(Box::new(expected))),
                "{:?}",
                request.headers
            );
        }
        assert_eq!(
            removed(stripping.answer(&alice(None), &spoofed)).0,
            ["x-auth-role"]
        );
        assert_eq!(
            removed(stripping.answer(&alice(None), &with_key)).1,
            ["key"]
        );
        assert_eq!(
            removed(stripping.answer(&alice(None), &clean)),
            (vec![], vec![])
        );
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

    fn removals_of(
        decision: &Decision,
        request: &Request,
        strip: bool,
    ) -> (Vec<String>, Vec<String>) {
        let options = ResponseOptions {
            strip_credentials: strip,
            ..Default::default()
        };
        match respond(decision, request, &options).http_response {
            Some(HttpResponse::OkResponse(ok)) => {
                (ok.headers_to_remove, ok.query_parameters_to_remove)
            }
            other => panic!("not an ok_response: {other:?}"),
        }
    }

    #[test]
    fn identity_headers_are_removed_in_every_spelling_rack_reads() {
        let request = Request::new("GET", "/issues.json")
            .with_header("x_auth_user_id", "1")
            .with_header("X-Auth_User-Login", "admin")
            .with_header("x-auth-user-admin", "true")
            .with_header("x_auth_impersonator", "root")
            .with_header("x-auth_oauth-scopes", "admin")
            .with_header("x-authority", "not ours")
            .with_header("x_authx", "not ours either");
        let removed = [
            "x_auth_user_id",
            "x-auth_user-login",
            "x_auth_impersonator",
            "x-auth_oauth-scopes",
        ];
        // Allowed: the dash spellings the gate sets overwrite; every other spelling goes.
        assert_eq!(removals_of(&alice(None), &request, false).0, removed);
        // Not gated or anonymous: nothing is set, so everything under the prefix goes.
        let passed = Decision::Allow(Allow {
            identity: None,
            reason: Reason::NotGated,
        });
        let mut all = removed.to_vec();
        all.insert(2, "x-auth-user-admin");
        assert_eq!(removals_of(&passed, &request, false).0, all);
    }

    #[test]
    fn switch_and_credential_headers_go_in_every_spelling() {
        let request = Request::new(
            "GET",
            "/issues.json?%6Bey=k&k%65y=k&access%5Ftoken=t&key[]=k&keys=1&x=key",
        )
        .with_header("x_redmine_switch_user", "bob")
        .with_header("X-Redmine_Switch-User", "bob")
        .with_header("x_redmine_api_key", "k")
        .with_header("authorization", "Basic YTpi");
        // A non-admin's switch header, in both spellings; credentials stay unless stripped.
        assert_eq!(
            removals_of(&alice(None), &request, false),
            (
                vec![
                    "x_redmine_switch_user".to_owned(),
                    "x-redmine_switch-user".to_owned()
                ],
                vec![]
            )
        );
        let (headers, parameters) = removals_of(&alice(None), &request, true);
        assert_eq!(
            headers,
            [
                "x_redmine_switch_user",
                "x-redmine_switch-user",
                "authorization",
                "x_redmine_api_key"
            ]
        );
        assert_eq!(
            parameters,
            [
                "%6Bey",
                "key",
                "k%65y",
                "access%5Ftoken",
                "access_token",
                "key[]"
            ]
        );
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
