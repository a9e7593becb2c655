//! What the gate answers: allow with an identity, or deny with a status and a reason.

use super::request::Format;

/// How the caller proved who they are; also the `x-auth-method` header value.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum AuthMethod {
    ApiKey,
    BasicPassword,
    BasicApiKey,
    OAuth2,
}

impl AuthMethod {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::ApiKey => "api-key",
            Self::BasicPassword => "basic-password",
            Self::BasicApiKey => "basic-api-key",
            Self::OAuth2 => "oauth2",
        }
    }
}

/// OAuth details passed upstream with an identity.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct OAuthGrant {
    pub scopes: Vec<String>,
    pub application_id: Option<i64>,
}

/// The user a request proceeds as.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Identity {
    pub user_id: i64,
    pub login: String,
    /// Effective admin: for OAuth only with the `admin` scope.
    pub admin: bool,
    pub method: AuthMethod,
    /// The admin's login after an `X-Redmine-Switch-User`.
    pub impersonator: Option<String>,
    pub oauth: Option<OAuthGrant>,
}

/// Why a request was allowed or denied. Bounded: safe as a metric label.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Reason {
    // Allows.
    Authenticated,
    NotGated,
    AnonymousAllowed,
    ExternalAuthPassedOn,
    // Denies.
    NoCredential,
    InvalidApiKey,
    InvalidBasic,
    MalformedBasic,
    MalformedHeader,
    AmbiguousCredential,
    UnknownBearerToken,
    TokenRevoked,
    TokenExpired,
    TokenOwnerInactive,
    TwofaBasicNotAllowed,
    ExternalAuthUnsupported,
    MustChangePassword,
    RestApiDisabled,
    InvalidSwitchUser,
    Throttled,
    BadRequest,
    /// Rack or Rails cannot read the query or the body's parameters (Redmine: 400).
    MalformedParameters,
    /// Too many headers, or too large: more than Envoy would forward by default.
    HeadersTooLarge,
    /// A Check message over the gate's limit (a large body Envoy forwards), not read.
    RequestTooLarge,
    /// A credential longer than any Redmine issues.
    CredentialTooLong,
    /// A body Rails parses that the proxy cut at its buffer limit: it may hold a credential
    /// the gate did not see.
    BodyTooLarge,
    /// A body Rails parses that the proxy did not send at all (no `with_request_body`).
    BodyNotForwarded,
    /// The gate failed (a bug): denied, never let through.
    InternalError,
    DirectoryUnavailable,
}

impl Reason {
    /// A credential was presented and rejected: what throttling counts. Missing credentials,
    /// policy denies (403, 412) and outages are not attempts to guess.
    pub fn is_failed_authentication(self) -> bool {
        matches!(
            self,
            Self::InvalidApiKey
                | Self::InvalidBasic
                | Self::MalformedBasic
                | Self::MalformedHeader
                | Self::AmbiguousCredential
                | Self::CredentialTooLong
                | Self::UnknownBearerToken
                | Self::TokenRevoked
                | Self::TokenExpired
                | Self::TokenOwnerInactive
                | Self::ExternalAuthUnsupported
        )
    }

    /// Stable snake_case name for logs, spans and metrics.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Authenticated => "authenticated",
            Self::NotGated => "not_gated",
            Self::AnonymousAllowed => "anonymous_allowed",
            Self::ExternalAuthPassedOn => "external_auth_passed_on",
            Self::NoCredential => "no_credential",
            Self::InvalidApiKey => "invalid_api_key",
            Self::InvalidBasic => "invalid_basic",
            Self::MalformedBasic => "malformed_basic",
            Self::MalformedHeader => "malformed_header",
            Self::AmbiguousCredential => "ambiguous_credential",
            Self::UnknownBearerToken => "unknown_bearer_token",
            Self::TokenRevoked => "token_revoked",
            Self::TokenExpired => "token_expired",
            Self::TokenOwnerInactive => "token_owner_inactive",
            Self::TwofaBasicNotAllowed => "twofa_basic_not_allowed",
            Self::ExternalAuthUnsupported => "external_auth_unsupported",
            Self::MustChangePassword => "must_change_password",
            Self::RestApiDisabled => "rest_api_disabled",
            Self::InvalidSwitchUser => "invalid_switch_user",
            Self::BadRequest => "bad_request",
            Self::MalformedParameters => "malformed_parameters",
            Self::HeadersTooLarge => "headers_too_large",
            Self::RequestTooLarge => "request_too_large",
            Self::CredentialTooLong => "credential_too_long",
            Self::BodyTooLarge => "body_too_large",
            Self::BodyNotForwarded => "body_not_forwarded",
            Self::InternalError => "internal_error",
            Self::DirectoryUnavailable => "directory_unavailable",
            Self::Throttled => "throttled",
        }
    }

    /// The message in a deny body; Redmine's own wording where Redmine has one.
    pub fn message(self) -> &'static str {
        match self {
            Self::Authenticated | Self::NotGated | Self::AnonymousAllowed => "",
            Self::ExternalAuthPassedOn => "",
            Self::NoCredential => "Authentication required",
            Self::InvalidApiKey => "Invalid API key",
            Self::InvalidBasic => "Invalid user name, password or API key",
            Self::MalformedBasic => "Malformed HTTP Basic credentials",
            Self::MalformedHeader => "Malformed credential header",
            Self::AmbiguousCredential => "Ambiguous credentials: send exactly one",
            Self::UnknownBearerToken => "Invalid access token",
            Self::TokenRevoked => "The access token was revoked",
            Self::TokenExpired => "The access token expired",
            Self::TokenOwnerInactive => "The access token's owner is not active",
            Self::TwofaBasicNotAllowed => {
                "HTTP Basic authentication is not allowed. Use API key instead"
            }
            Self::ExternalAuthUnsupported => {
                "This account authenticates against LDAP, which this gateway cannot check. Use an API key instead"
            }
            Self::MustChangePassword => "You must change your password",
            Self::RestApiDisabled => "REST API is disabled",
            Self::InvalidSwitchUser => "Invalid X-Redmine-Switch-User header",
            Self::BadRequest => "Malformed request",
            Self::MalformedParameters => "Malformed request parameters",
            Self::HeadersTooLarge => "Request headers too large",
            Self::RequestTooLarge => "Request too large",
            Self::CredentialTooLong => "Credential too long",
            Self::BodyTooLarge => "Request body too large to check for credentials",
            Self::BodyNotForwarded => "Request body not forwarded to the authentication gateway",
            Self::InternalError => "Internal error",
            Self::DirectoryUnavailable => "Authentication is temporarily unavailable",
            Self::Throttled => "Too many failed authentication attempts; retry later",
        }
    }
}

/// The HTTP status of a deny; each maps to one gRPC code on the wire.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DenyStatus {
    BadRequest,
    Unauthorized,
    HeadersTooLarge,
    PayloadTooLarge,
    InternalError,
    Forbidden,
    PreconditionFailed,
    TooManyRequests,
    ServiceUnavailable,
}

impl DenyStatus {
    pub fn http_code(self) -> u16 {
        match self {
            Self::BadRequest => 400,
            Self::HeadersTooLarge => 431,
            Self::PayloadTooLarge => 413,
            Self::InternalError => 500,
            Self::Unauthorized => 401,
            Self::Forbidden => 403,
            Self::PreconditionFailed => 412,
            Self::TooManyRequests => 429,
            Self::ServiceUnavailable => 503,
        }
    }
}

/// The `WWW-Authenticate` challenge a 401 carries, if any.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Challenge {
    Basic,
    /// `error="invalid_token"` with the reason's message as description.
    BearerInvalidToken,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Deny {
    pub status: DenyStatus,
    pub reason: Reason,
    pub challenge: Option<Challenge>,
    /// Seconds for `Retry-After` (429, 503).
    pub retry_after: Option<u32>,
    pub format: Format,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Allow {
    /// `None` for anonymous and not-gated requests.
    pub identity: Option<Identity>,
    pub reason: Reason,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    Allow(Allow),
    Deny(Deny),
}

impl Decision {
    pub fn reason(&self) -> Reason {
        match self {
            Self::Allow(allow) => allow.reason,
            Self::Deny(deny) => deny.reason,
        }
    }

    pub fn is_allow(&self) -> bool {
        matches!(self, Self::Allow(_))
    }
}

impl Deny {
    /// The status, challenge and retry hint each reason is answered with (R-DENY-2).
    pub fn new(reason: Reason, format: Format) -> Self {
        use Challenge::*;
        use DenyStatus::*;
        let (status, challenge, retry_after) = match reason {
            Reason::NoCredential | Reason::InvalidBasic | Reason::MalformedBasic => {
                (Unauthorized, Some(Basic), None)
            }
            Reason::UnknownBearerToken => (Unauthorized, Some(Basic), None),
            // Redmine 7 sends no challenge for a wrong key: a browser must not prompt.
            Reason::InvalidApiKey
            | Reason::MalformedHeader
            | Reason::AmbiguousCredential
            | Reason::CredentialTooLong => (Unauthorized, None, None),
            Reason::TokenRevoked | Reason::TokenExpired | Reason::TokenOwnerInactive => {
                (Unauthorized, Some(BearerInvalidToken), None)
            }
            Reason::TwofaBasicNotAllowed | Reason::ExternalAuthUnsupported => {
                (Unauthorized, None, None)
            }
            Reason::MustChangePassword | Reason::RestApiDisabled => (Forbidden, None, None),
            Reason::InvalidSwitchUser => (PreconditionFailed, None, None),
            Reason::DirectoryUnavailable => (ServiceUnavailable, None, Some(5)),
            // The caller sets the real wait; one window is the safe default.
            Reason::Throttled => (TooManyRequests, None, Some(60)),
            Reason::HeadersTooLarge => (DenyStatus::HeadersTooLarge, None, None),
            Reason::RequestTooLarge | Reason::BodyTooLarge | Reason::BodyNotForwarded => {
                (PayloadTooLarge, None, None)
            }
            Reason::InternalError => (DenyStatus::InternalError, None, None),
            Reason::BadRequest
            | Reason::MalformedParameters
            | Reason::Authenticated
            | Reason::NotGated
            | Reason::AnonymousAllowed
            | Reason::ExternalAuthPassedOn => (BadRequest, None, None),
        };
        Self {
            status,
            reason,
            challenge,
            retry_after,
            format,
        }
    }

    /// Redmine's API error body in the request's format, and its content type.
    pub fn body(&self) -> (String, &'static str) {
        let message = self.reason.message();
        match self.format {
            Format::Json => (
                serde_json::to_string(&JsonErrors { errors: [message] }).unwrap_or_default(),
                "application/json; charset=utf-8",
            ),
            Format::Xml => (
                format!(
                    "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<errors type=\"array\"><error>{}</error></errors>",
                    xml_escape(message)
                ),
                "application/xml; charset=utf-8",
            ),
        }
    }
}

/// `{"errors":[message]}`, serialized straight from a struct: building a `serde_json::Value`
/// first was 2.9k instructions of every deny in a flood (callgrind).
#[derive(serde::Serialize)]
struct JsonErrors<'a> {
    errors: [&'a str; 1],
}

fn xml_escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bodies_in_both_formats() {
        let json = Deny::new(Reason::RestApiDisabled, Format::Json).body();
        assert_eq!(json.0, r#"{"errors":["REST API is disabled"]}"#);
        assert!(json.1.starts_with("application/json"));
        let xml = Deny::new(Reason::InvalidSwitchUser, Format::Xml).body();
        assert!(xml.0.ends_with(
            "<errors type=\"array\"><error>Invalid X-Redmine-Switch-User header</error></errors>"
        ));
        assert!(xml.1.starts_with("application/xml"));
    }

    #[test]
    fn statuses_follow_the_spec_table() {
        let status = |r| Deny::new(r, Format::Json).status.http_code();
        assert_eq!(status(Reason::NoCredential), 401);
        assert_eq!(status(Reason::MustChangePassword), 403);
        assert_eq!(status(Reason::RestApiDisabled), 403);
        assert_eq!(status(Reason::InvalidSwitchUser), 412);
        assert_eq!(status(Reason::DirectoryUnavailable), 503);
        assert_eq!(status(Reason::BodyTooLarge), 413);
        assert_eq!(status(Reason::BodyNotForwarded), 413);
        assert_eq!(
            Deny::new(Reason::InvalidApiKey, Format::Json).challenge,
            None
        );
        assert_eq!(
            Deny::new(Reason::InvalidBasic, Format::Json).challenge,
            Some(Challenge::Basic)
        );
    }
}
