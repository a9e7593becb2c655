//! Properties over generated requests, with no database: a `Gate` over a directory that
//! knows nobody must never let anyone in as somebody (R-NEVER-4: "never answer allow when the
//! decision could not be made"), and the parsers at the edge never panic.

use std::sync::Arc;

use proptest::prelude::*;
use prost::Message as _;
use redmine_authz::auth::{
    classify, AccessToken, ApiKey, BearerToken, Credential, Decision, Gating, Login, Password,
    PasswordCheck, Policy, Principal, Reason, Request, RouteMode, Settings,
};
use redmine_authz::clock::SystemClock;
use redmine_authz::directory::{Directory, DirectoryError};
use redmine_authz::envoy::proto::envoy::config::core::v3::{HeaderMap, HeaderValue};
use redmine_authz::envoy::proto::envoy::service::auth::v3::attribute_context::{
    HttpRequest, Request as AttrRequest,
};
use redmine_authz::envoy::proto::envoy::service::auth::v3::{AttributeContext, CheckRequest};
use redmine_authz::envoy::wire;
use redmine_authz::gate::{settings_once, Gate};

const CASES: u32 = 512;

/// A directory with no users, keys or tokens, and the REST API on.
struct Nobody;

impl Directory for Nobody {
    async fn user_by_api_key(&self, _: &ApiKey) -> Result<Option<Principal>, DirectoryError> {
        Ok(None)
    }

    async fn user_by_login(&self, _: &Login) -> Result<Option<Principal>, DirectoryError> {
        Ok(None)
    }

    async fn password_login(
        &self,
        _: &Login,
        _: &Password,
    ) -> Result<PasswordCheck, DirectoryError> {
        Ok(PasswordCheck::Invalid)
    }

    async fn access_token(&self, _: &BearerToken) -> Result<Option<AccessToken>, DirectoryError> {
        Ok(None)
    }

    async fn settings(&self) -> Result<Settings, DirectoryError> {
        Ok(Settings {
            rest_api_enabled: true,
            password_max_age_days: 0,
        })
    }
}

/// One generated header: its value is sent as UTF-8 text, or as raw bytes that are not.
#[derive(Debug, Clone)]
enum HeaderText {
    Utf8(String),
    NotUtf8,
}

#[derive(Debug, Clone)]
struct Generated {
    method: String,
    target: String,
    headers: Vec<(String, HeaderText)>,
    mode: Option<String>,
}

impl Generated {
    fn request(&self) -> Request {
        let mut request = Request::new(&self.method, &self.target);
        for (name, value) in &self.headers {
            match value {
                HeaderText::Utf8(text) => request.headers.push(name, text),
                HeaderText::NotUtf8 => request.headers.push_not_utf8(name),
            }
        }
        request.mode = self
            .mode
            .as_ref()
            .map(|m| RouteMode::parse(m).ok_or_else(|| m.clone()));
        request
    }
}

fn base64(text: &str) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD.encode(text)
}

fn token() -> impl Strategy<Value = String> {
    prop_oneof![
        "[A-Za-z0-9]{1,40}",
        "[A-Za-z0-9]{41,60}",
        "[ -~]{0,24}",
        Just(String::new()),
        Just(" ".to_owned()),
    ]
}

fn method() -> impl Strategy<Value = String> {
    prop_oneof![
        Just("GET".to_owned()),
        Just("POST".to_owned()),
        Just("PUT".to_owned()),
        Just("DELETE".to_owned()),
        Just("OPTIONS".to_owned()),
        "[A-Za-z]{0,8}",
    ]
}

/// `/path[.ext][/][?query][#fragment]`, with the tricks R-GATE-1 and `R-ROUTE` name.
fn target() -> impl Strategy<Value = String> {
    let path = prop_oneof![
        Just("/issues".to_owned()),
        Just("/users/current".to_owned()),
        Just("/projects/1/issues".to_owned()),
        Just("/oauth/token".to_owned()),
        Just("/oauth/../issues".to_owned()),
        Just("/oauth/%2E%2E/users/current".to_owned()),
        Just("/my/page".to_owned()),
        "/[a-z%0-9./]{0,20}",
    ];
    let extension = prop_oneof![
        Just(""),
        Just(".json"),
        Just(".xml"),
        Just(".js%6Fn"),
        Just("%2Exml"),
        Just(".atom"),
        Just(".JSON"),
    ];
    let trailing = prop_oneof![Just(""), Just("/"), Just("//")];
    let parameter = prop_oneof![
        Just("format=json".to_owned()),
        Just("format=xml".to_owned()),
        Just("format=csv".to_owned()),
        token().prop_map(|t| format!("key={t}")),
        token().prop_map(|t| format!("access_token={t}")),
        token().prop_map(|t| format!("bearer_token={t}")),
        "[a-z_]{1,8}=[a-zA-Z0-9 %=.:/+-]{0,12}",
    ];
    let query = proptest::collection::vec(parameter, 0..4);
    let fragment = prop_oneof![Just(String::new()), "#[ -~]{0,12}"];
    (path, extension, trailing, query, fragment).prop_map(
        |(path, extension, trailing, query, fragment)| {
            let query = if query.is_empty() {
                String::new()
            } else {
                format!("?{}", query.join("&"))
            };
            format!("{path}{extension}{trailing}{query}{fragment}")
        },
    )
}

fn header() -> impl Strategy<Value = (String, HeaderText)> {
    let authorization = prop_oneof![
        ("[ -~]{0,12}", "[ -~]{0,12}")
            .prop_map(|(u, p)| format!("Basic {}", base64(&format!("{u}:{p}")))),
        ("[ -~]{0,12}", "[ -~]{0,12}")
            .prop_map(|(u, p)| format!("bAsIc {}", base64(&format!("{u}:{p}")))),
        token().prop_map(|t| format!("Basic {t}")),
        token().prop_map(|t| format!("Bearer {t}")),
        token().prop_map(|t| format!("bearer {t}")),
        "[ -~]{0,30}",
    ];
    let value = prop_oneof![
        8 => prop_oneof![authorization, token(), "[ -~]{0,30}"].prop_map(HeaderText::Utf8),
        1 => Just(HeaderText::NotUtf8),
    ];
    let name = prop_oneof![
        Just("Authorization".to_owned()),
        Just("X-Redmine-API-Key".to_owned()),
        Just("X-Redmine-Switch-User".to_owned()),
        Just("x-auth-user-id".to_owned()),
        Just("x-auth-user-login".to_owned()),
        Just("x-auth-user-admin".to_owned()),
        Just("cookie".to_owned()),
        "[a-zA-Z-]{1,16}",
    ];
    (name, value)
}

/// Credential header names, or any text at all.
fn header_name() -> impl Strategy<Value = String> {
    prop_oneof![
        Just("authorization".to_owned()),
        Just("x-redmine-api-key".to_owned()),
        Just("x-redmine-switch-user".to_owned()),
        "\\PC{0,12}",
    ]
}

fn generated() -> impl Strategy<Value = Generated> {
    let mode = prop_oneof![
        4 => Just(None),
        1 => Just(Some("api".to_owned())),
        1 => Just(Some("skip".to_owned())),
        2 => Just(Some("public".to_owned())),
        1 => "[a-zA-Z]{0,8}".prop_map(Some),
    ];
    (
        method(),
        target(),
        proptest::collection::vec(header(), 0..6),
        mode,
    )
        .prop_map(|(method, target, headers, mode)| Generated {
            method,
            target,
            headers,
            mode,
        })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(CASES))]

    /// Against a directory that knows nobody, no request is allowed as somebody, and an
    /// allow without identity is only the not-gated pass or a `public` route's anonymous
    /// (no credential, or an unknown bearer token, which R-BEARER-3 treats as none).
    #[test]
    fn nobody_is_allowed_in_as_somebody(generated in generated()) {
        let runtime = tokio::runtime::Builder::new_current_thread().build().unwrap();
        let request = generated.request();
        let decision = runtime.block_on(async {
            let settings = settings_once(&Nobody).await.unwrap();
            let gate = Gate::new(Arc::new(Nobody), Policy::default(), settings, Arc::new(SystemClock));
            gate.check(&request).await
        });
        if let Decision::Allow(allow) = &decision {
            prop_assert!(allow.identity.is_none(), "allowed as somebody: {decision:?}");
            // R-BEARER-3: a bearer token Doorkeeper never issued counts as no credential, and
            // this directory knows no token.
            let anonymous = matches!(
                Credential::select(&request),
                Ok(Credential::Anonymous | Credential::Bearer(_))
            );
            match classify(&request) {
                Gating::NotGated => prop_assert_eq!(allow.reason, Reason::NotGated),
                Gating::GatedIfCredentials => {
                    prop_assert!(anonymous, "public route let a credential through: {decision:?}");
                    prop_assert_eq!(allow.reason, Reason::AnonymousAllowed);
                }
                Gating::Gated => prop_assert!(false, "gated request allowed: {decision:?}"),
            }
        }
    }

    /// The edge parsers take any bytes Envoy could send without panicking.
    #[test]
    fn parsers_never_panic_on_bytes(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
        if let Ok(check) = wire::CheckRequest::decode(bytes.as_slice()) {
            if let Ok(request) = redmine_authz::envoy::parse(check) {
                let _ = Credential::select(&request);
                let _ = classify(&request);
            }
        }
    }

    /// ... nor on well-formed `CheckRequest`s full of arbitrary strings and raw header bytes,
    /// in both of Envoy's header forms.
    #[test]
    fn parsers_never_panic_on_check_requests(
        method in "\\PC{0,8}",
        path in "\\PC{0,40}",
        headers in proptest::collection::vec((header_name(), "\\PC{0,24}"), 0..6),
        raw in proptest::collection::vec((header_name(), proptest::collection::vec(any::<u8>(), 0..24)), 0..6),
        mode in proptest::option::of("\\PC{0,8}"),
    ) {
        let mut http = HttpRequest {
            method,
            path,
            headers: headers.into_iter().collect(),
            ..Default::default()
        };
        if !raw.is_empty() {
            http.header_map = Some(HeaderMap {
                headers: raw
                    .into_iter()
                    .map(|(key, raw_value)| HeaderValue { key, value: String::new(), raw_value })
                    .collect(),
            });
        }
        let check = CheckRequest {
            attributes: Some(AttributeContext {
                request: Some(AttrRequest { time: None, http: Some(http) }),
                context_extensions: mode
                    .map(|m| (RouteMode::CONTEXT_KEY.to_owned(), m))
                    .into_iter()
                    .collect(),
                ..Default::default()
            }),
        };
        // Sent as Envoy sends it: encoded, then decoded as the gate's server does.
        let check = wire::CheckRequest::decode(check.encode_to_vec().as_slice()).unwrap();
        if let Ok(request) = redmine_authz::envoy::parse(check) {
            let _ = Credential::select(&request);
            let _ = classify(&request);
            let _ = request.format();
        }
    }
}
