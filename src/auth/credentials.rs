//! Picking the one credential a request carries (`R-CRED` in docs/decisions.md) and parsing it into types that are
//! valid by construction.

use std::fmt;

use base64::Engine as _;

use super::decision::Reason;
use super::params::{Malformed, Name, Params, Unreadable, Value};
use super::request::Request;

/// The longest API key Redmine issues or accepts (40 hex characters).
const API_KEY_MAX_LEN: usize = 40;

/// The longest Basic or bearer credential accepted; Redmine's are far shorter.
pub const CREDENTIAL_MAX_LEN: usize = 4096;

/// A Redmine API key: ASCII letters and digits, at most 40 characters.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct ApiKey(String);

impl ApiKey {
    /// `None` for anything Redmine would reject without a lookup.
    pub fn parse(value: &str) -> Option<Self> {
        let valid = !value.is_empty()
            && value.len() <= API_KEY_MAX_LEN
            && value.bytes().all(|b| b.is_ascii_alphanumeric());
        valid.then(|| Self(value.to_owned()))
    }

    pub fn expose(&self) -> &str {
        &self.0
    }
}

/// A login to look a user up by: non-empty and free of NUL, which no stored login holds and
/// PostgreSQL refuses in a query (an error there would read as an outage).
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct Login(String);

impl Login {
    /// A Basic login as `User.try_to_login!` takes it: trimmed as Ruby's `String#strip` trims
    /// (ASCII white space and NUL, not Unicode spaces).
    pub fn parse(value: &str) -> Option<Self> {
        Self::exact(value.trim_matches(is_ruby_space))
    }

    /// A login taken as sent, as Redmine takes an `X-Redmine-Switch-User` value (no strip).
    pub fn exact(value: &str) -> Option<Self> {
        (!value.is_empty() && !value.contains('\0')).then(|| Self(value.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The login as Ruby's `String#downcase` lowers it, which Redmine compares with
    /// `LOWER(login)`: full Unicode mappings (`K` KELVIN SIGN is `k`, `İ` is `i̇`), one
    /// character at a time (no final sigma). The database's own `LOWER` differs from it.
    pub fn downcased(&self) -> String {
        self.0.chars().flat_map(char::to_lowercase).collect()
    }
}

impl fmt::Debug for Login {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("Login").field(&self.0).finish()
    }
}

/// A clear-text password (non-empty, kept as sent).
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct Password(String);

impl Password {
    pub fn expose(&self) -> &str {
        &self.0
    }
}

/// An OAuth2 bearer token issued by Redmine's Doorkeeper.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct BearerToken(String);

impl BearerToken {
    /// A token known in clear (seeding and tests); requests go through [`Credential::select`].
    pub fn from_clear(token: &str) -> Self {
        Self(token.to_owned())
    }

    /// Doorkeeper stores only the lowercase hex SHA-256 of a token.
    pub fn sha256_hex(&self) -> String {
        use sha2::Digest as _;
        hex::encode(sha2::Sha256::digest(self.0.as_bytes()))
    }

    pub fn expose(&self) -> &str {
        &self.0
    }
}

/// The two halves of an HTTP Basic credential.
#[derive(Clone, PartialEq, Eq)]
pub struct BasicCredentials {
    /// The user name as sent (not trimmed): as an API key it must match exactly.
    pub username: String,
    pub password: String,
}

impl BasicCredentials {
    /// Decodes the part after `Basic `. Missing `=` padding is tolerated, as browsers and
    /// curl differ on it; anything else malformed is an error.
    pub fn decode(encoded: &str) -> Result<Self, Reason> {
        let encoded = encoded.trim().trim_end_matches('=');
        let bytes = base64::engine::general_purpose::STANDARD_NO_PAD
            .decode(encoded)
            .map_err(|_| Reason::MalformedBasic)?;
        let text = String::from_utf8(bytes).map_err(|_| Reason::MalformedBasic)?;
        // No colon: all of it is the user name and there is no password, which Redmine then
        // tries as an API key (`User.find_by_api_key(username)`).
        let (username, password) = text.split_once(':').unwrap_or((&text, ""));
        Ok(Self {
            username: username.to_owned(),
            password: password.to_owned(),
        })
    }

    /// The login/password pair Redmine would try, when both are non-empty.
    pub fn password_login(&self) -> Option<(Login, Password)> {
        let login = Login::parse(&self.username)?;
        (!self.password.is_empty()).then(|| (login, Password(self.password.clone())))
    }
}

/// Where an API key came from; a wrong key from either place gets no challenge.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeySource {
    /// The `key` parameter, from the query or the body.
    Parameter,
    Header,
}

/// The one credential a request is judged by.
#[derive(Clone, PartialEq, Eq)]
pub enum Credential {
    /// A `key` parameter or `X-Redmine-API-Key` header; `None` when it is malformed (or not
    /// a string, which Redmine's `to_s` makes one that fails), which fails like an unknown key.
    ApiKey(Option<ApiKey>, KeySource),
    Bearer(BearerToken),
    Basic(BasicCredentials),
    Anonymous,
}

impl Credential {
    /// Picks the credential by R-CRED-1's precedence. The first one present decides; a request
    /// whose credential is ambiguous or unreadable is an error, never a guess.
    pub fn select(request: &Request) -> Result<Self, Reason> {
        for header in [API_KEY_HEADER, AUTHORIZATION] {
            if request.headers.any_spelling_not_utf8(header) {
                return Err(Reason::MalformedHeader);
            }
        }
        let params = request
            .params()
            .map_err(|Malformed| Reason::MalformedParameters)?;
        // Redmine: `params[:key].present?`, then `params[:key].to_s`.
        if let Some(key) = present(params, Name::Key)? {
            let key = match key {
                Value::Text(text) => ApiKey::parse(text),
                _ => None,
            };
            return Ok(Self::ApiKey(key, KeySource::Parameter));
        }
        if let Some(key) = single_header(request, API_KEY_HEADER)? {
            return Ok(Self::ApiKey(ApiKey::parse(key), KeySource::Header));
        }
        let authorization = single_header(request, AUTHORIZATION)?;
        // Doorkeeper removes `Bearer ` and nothing else (a space or NBSP left is part of the
        // token, which then matches no stored one), and tries its next source when a token
        // is blank (`present?`).
        let bearer = match authorization
            .and_then(|value| strip_scheme(value, "bearer"))
            .filter(|token| !is_blank(token))
        {
            Some(token) => Some(token),
            None => match present(params, Name::AccessToken)? {
                Some(token) => Some(text_token(token)?),
                None => present(params, Name::BearerToken)?
                    .map(text_token)
                    .transpose()?,
            },
        };
        if let Some(token) = bearer {
            if token.len() > CREDENTIAL_MAX_LEN {
                return Err(Reason::CredentialTooLong);
            }
            return Ok(Self::Bearer(BearerToken(token.to_owned())));
        }
        if let Some(encoded) = authorization.and_then(|value| strip_scheme(value, "basic")) {
            if encoded.len() > CREDENTIAL_MAX_LEN {
                return Err(Reason::CredentialTooLong);
            }
            return BasicCredentials::decode(encoded).map(Self::Basic);
        }
        Ok(Self::Anonymous)
    }

    /// True when the request carries any credential at all (for `public` routes).
    pub fn is_present(&self) -> bool {
        !matches!(self, Self::Anonymous)
    }
}

pub const API_KEY_HEADER: &str = "x-redmine-api-key";
pub const AUTHORIZATION: &str = "authorization";
pub const SWITCH_USER_HEADER: &str = "x-redmine-switch-user";

/// A parameter's value when Redmine finds it present; one the gate cannot read as Redmine
/// will (sent twice, read differently by the releases it is set up for) is ambiguous.
fn present(params: &Params, name: Name) -> Result<Option<&Value>, Reason> {
    params
        .get(name)
        .present()
        .map_err(|Unreadable| Reason::AmbiguousCredential)
}

/// A token parameter Doorkeeper can use: a string.
fn text_token(value: &Value) -> Result<&str, Reason> {
    match value {
        Value::Text(text) => Ok(text),
        _ => Err(Reason::MalformedParameters),
    }
}

/// The one non-blank value of a header, in whichever spelling Rack reads as that header.
/// Rack keeps the last of several spellings (or repeats), where the gate could name another
/// user: more than one with any value is ambiguous. A comma means Envoy joined repeated
/// headers: no credential this gate reads may contain one.
pub fn single_header<'a>(request: &'a Request, name: &'a str) -> Result<Option<&'a str>, Reason> {
    let mut values = request.headers.spellings(name).map(|(_, value)| value);
    let Some(first) = values.next() else {
        return Ok(None);
    };
    let (mut several, mut all_blank) = (false, is_blank(first));
    for value in values {
        several = true;
        all_blank &= is_blank(value);
    }
    match (several, all_blank) {
        (false, _) if is_blank(first) => Ok(None),
        // Envoy joins a repeated header with commas: no credential this gate reads has one.
        (false, _) if first.contains(',') => Err(Reason::AmbiguousCredential),
        (false, _) => Ok(Some(first)),
        (true, true) => Ok(None),
        (true, false) => Err(Reason::AmbiguousCredential),
    }
}

/// What Ruby's `String#strip` strips: ASCII white space (vertical tab too) and NUL.
fn is_ruby_space(c: char) -> bool {
    matches!(c, '\0' | '\t' | '\n' | '\x0b' | '\x0c' | '\r' | ' ')
}

/// Ruby's `blank?`: empty or only white space.
pub fn is_blank(value: &str) -> bool {
    value.trim().is_empty()
}

/// The rest of `value` after `scheme` and a space, matching the scheme case-insensitively.
/// Compares bytes, not string slices: the header may hold any UTF-8, and slicing at the
/// scheme's length could land inside a character (the fuzzer found `Basié`).
fn strip_scheme<'a>(value: &'a str, scheme: &str) -> Option<&'a str> {
    // Rails and Doorkeeper anchor the scheme at the start (`\ABasic `); an HTTP server has
    // already dropped leading spaces and tabs, and nothing else: `\u{a0}Basic` is no scheme.
    let value = value.trim_start_matches([' ', '\t']);
    let bytes = value.as_bytes();
    let n = scheme.len();
    // Byte n is an ASCII space, so n + 1 is a character boundary.
    (bytes.len() > n && bytes[..n].eq_ignore_ascii_case(scheme.as_bytes()) && bytes[n] == b' ')
        .then(|| &value[n + 1..])
}

// Secrets never print, whatever derives Debug around them.
macro_rules! redacted_debug {
    ($($ty:ty),*) => {$(
        impl fmt::Debug for $ty {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(concat!(stringify!($ty), "(<redacted>)"))
            }
        }
    )*};
}
redacted_debug!(ApiKey, Password, BearerToken, BasicCredentials, Credential);

#[cfg(test)]
mod tests {
    use super::*;

    fn basic(user_pass: &str) -> String {
        format!(
            "Basic {}",
            base64::engine::general_purpose::STANDARD.encode(user_pass)
        )
    }

    fn select(request: Request) -> Result<Credential, Reason> {
        Credential::select(&request)
    }

    #[test]
    fn api_key_shape() {
        assert!(ApiKey::parse("abcDEF0123").is_some());
        assert!(ApiKey::parse(&"a".repeat(40)).is_some());
        assert!(ApiKey::parse(&"a".repeat(41)).is_none());
        assert!(ApiKey::parse("abc-def").is_none());
        assert!(ApiKey::parse("abc def").is_none());
        assert!(ApiKey::parse("ключ").is_none());
        assert!(ApiKey::parse("").is_none());
    }

    #[test]
    fn query_key_beats_header_key_beats_bearer_beats_basic() {
        let all = Request::new("GET", "/issues.json?key=fromquery&access_token=tok")
            .with_header("x-redmine-api-key", "fromheader")
            .with_header("authorization", &basic("u:p"));
        match select(all).unwrap() {
            Credential::ApiKey(Some(k), KeySource::Parameter) => {
                assert_eq!(k.expose(), "fromquery")
            }
            _ => panic!("query key should win"),
        }
        let header = Request::new("GET", "/issues.json?access_token=tok")
            .with_header("x-redmine-api-key", "fromheader");
        assert!(matches!(
            select(header).unwrap(),
            Credential::ApiKey(Some(_), KeySource::Header)
        ));
        let bearer = Request::new("GET", "/issues.json?access_token=tok")
            .with_header("authorization", &basic("u:p"));
        assert!(matches!(select(bearer).unwrap(), Credential::Bearer(t) if t.expose() == "tok"));
    }

    #[test]
    fn blank_values_do_not_count() {
        let request = Request::new("GET", "/issues.json?key=%20")
            .with_header("x-redmine-api-key", "  ")
            .with_header("authorization", &basic("u:p"));
        assert!(matches!(select(request).unwrap(), Credential::Basic(_)));
    }

    #[test]
    fn malformed_key_is_kept_as_an_invalid_key_not_skipped() {
        let request = Request::new("GET", "/issues.json?key=not-a-key")
            .with_header("x-redmine-api-key", "good");
        assert!(matches!(
            select(request).unwrap(),
            Credential::ApiKey(None, KeySource::Parameter)
        ));
    }

    #[test]
    fn bearer_sources_in_order() {
        let header =
            Request::new("GET", "/x.json?access_token=b").with_header("authorization", "bEaReR a");
        assert!(matches!(select(header).unwrap(), Credential::Bearer(t) if t.expose() == "a"));
        // Doorkeeper strips the scheme and one space only.
        for (value, token) in [("Bearer   a", "  a"), ("Bearer \u{a0}a", "\u{a0}a")] {
            let request = Request::new("GET", "/x.json").with_header("authorization", value);
            assert!(
                matches!(select(request).unwrap(), Credential::Bearer(t) if t.expose() == token)
            );
        }
        // A blank token: the next source.
        let blank = Request::new("GET", "/x.json?access_token=b")
            .with_header("authorization", "Bearer \u{3000}");
        assert!(matches!(select(blank).unwrap(), Credential::Bearer(t) if t.expose() == "b"));
        let access = Request::new("GET", "/x.json?bearer_token=c&access_token=b");
        assert!(matches!(select(access).unwrap(), Credential::Bearer(t) if t.expose() == "b"));
        let param = Request::new("GET", "/x.json?bearer_token=c");
        assert!(matches!(select(param).unwrap(), Credential::Bearer(t) if t.expose() == "c"));
        let percent = Request::new("GET", "/x.json?access_token=a%2Bb");
        assert!(matches!(select(percent).unwrap(), Credential::Bearer(t) if t.expose() == "a+b"));
    }

    #[test]
    fn ambiguous_credentials_are_errors() {
        let twice = Request::new("GET", "/x.json?key=a&key=b");
        assert_eq!(select(twice).unwrap_err(), Reason::AmbiguousCredential);
        let same_twice = Request::new("GET", "/x.json?key=a&key=a");
        assert!(matches!(
            select(same_twice).unwrap(),
            Credential::ApiKey(Some(_), _)
        ));
        let joined =
            Request::new("GET", "/x.json").with_header("authorization", "Basic YTpi, Basic YzpE");
        assert_eq!(select(joined).unwrap_err(), Reason::AmbiguousCredential);
        let map_twice = Request::new("GET", "/x.json")
            .with_header("x-redmine-api-key", "a")
            .with_header("x-redmine-api-key", "b");
        assert_eq!(select(map_twice).unwrap_err(), Reason::AmbiguousCredential);
    }

    fn with_body(target: &str, content_type: &str, body: &'static str) -> Request {
        let mut request = Request::new("POST", target)
            .with_header("content-type", content_type)
            .with_header("content-length", &body.len().to_string());
        request.body = Some(crate::auth::request::RequestBody {
            bytes: bytes::Bytes::from_static(body.as_bytes()),
            partial: false,
        });
        request
    }

    #[test]
    fn key_parameters_as_redmine_reads_them() {
        let five = crate::auth::RedmineVersion::parse("5.0").unwrap();
        let key = |request: Request| match select(request.with_redmine_version(five)) {
            Ok(Credential::ApiKey(key, KeySource::Parameter)) => Ok(key.map(|k| k.0)),
            Ok(_) => Ok(Some("<not a key parameter>".to_owned())),
            Err(reason) => Err(reason),
        };
        // Rack 2 splits at `;` too: Redmine reads the wrong key and ignores the header's.
        let semicolon =
            Request::new("GET", "/x.json?x=1;key=junk").with_header("x-redmine-api-key", "good");
        assert_eq!(key(semicolon), Ok(Some("junk".into())));
        assert_eq!(
            key(Request::new("GET", "/x.json?[key]=abc")),
            Ok(Some("abc".into()))
        );
        assert_eq!(key(Request::new("GET", "/x.json?key[]=abc")), Ok(None));
        assert_eq!(
            key(Request::new("GET", "/x.json?key=abc&key=")),
            Err(Reason::AmbiguousCredential)
        );
        assert_eq!(
            key(Request::new("GET", "/x.json?a=%zz")),
            Err(Reason::MalformedParameters)
        );
        // Body keys, over the header's; the query's over the body's.
        let form = with_body(
            "/x.json",
            "application/x-www-form-urlencoded",
            "key=frombody",
        )
        .with_header("x-redmine-api-key", "fromheader");
        assert_eq!(key(form), Ok(Some("frombody".into())));
        let json = with_body(
            "/x.json?key=fromquery",
            "application/json",
            r#"{"key":"b"}"#,
        );
        assert_eq!(key(json), Ok(Some("fromquery".into())));
        let number = with_body("/x.json", "application/json", r#"{"key":123}"#);
        assert_eq!(key(number), Ok(Some("123".into())));
        let xml = with_body("/x.json", "text/xml", "<key>fromxml</key>");
        assert_eq!(key(xml), Ok(Some("fromxml".into())));
        let tokens = with_body("/x.json", "application/json", r#"{"access_token":["t"]}"#);
        assert_eq!(select(tokens).unwrap_err(), Reason::MalformedParameters);
        // Releases disagree: the default fails closed.
        let any =
            Request::new("GET", "/x.json?x=1;key=junk").with_header("x-redmine-api-key", "good");
        assert_eq!(select(any).unwrap_err(), Reason::AmbiguousCredential);
    }

    #[test]
    fn credential_headers_in_every_spelling_rack_reads() {
        let spelled =
            |name: &str| select(Request::new("GET", "/x.json").with_header(name, "abc123"));
        for name in [
            "x_redmine_api_key",
            "X-Redmine_API-Key",
            "X_REDMINE_API_KEY",
        ] {
            assert!(
                matches!(
                    spelled(name),
                    Ok(Credential::ApiKey(Some(_), KeySource::Header))
                ),
                "{name}"
            );
        }
        assert!(matches!(
            spelled("x-redmine-api-keys"),
            Ok(Credential::Anonymous)
        ));
        assert!(matches!(
            spelled("x__redmine-api-key"),
            Ok(Credential::Anonymous)
        ));
        // Rack keeps the last of several spellings; the gate will not guess which.
        let two = |first: &str, second: &str| {
            select(
                Request::new("GET", "/x.json")
                    .with_header("x-redmine-api-key", first)
                    .with_header("x_redmine_api_key", second),
            )
        };
        assert_eq!(
            two("alice", "admin").unwrap_err(),
            Reason::AmbiguousCredential
        );
        assert_eq!(
            two("alice", "alice").unwrap_err(),
            Reason::AmbiguousCredential
        );
        assert_eq!(two("alice", " ").unwrap_err(), Reason::AmbiguousCredential);
        assert_eq!(two("", "admin").unwrap_err(), Reason::AmbiguousCredential);
        // All blank: no key, whichever Rack keeps.
        assert!(matches!(two(" ", ""), Ok(Credential::Anonymous)));
        let authorization = Request::new("GET", "/x.json")
            .with_header("authorization", &basic("a:b"))
            .with_header("Authorization", &basic("c:d"));
        assert_eq!(
            select(authorization).unwrap_err(),
            Reason::AmbiguousCredential
        );
        let mut not_utf8 = Request::new("GET", "/x.json").with_header("x-redmine-api-key", "abc");
        not_utf8.headers.push_not_utf8("X_Redmine_Api_Key");
        assert_eq!(select(not_utf8).unwrap_err(), Reason::MalformedHeader);
    }

    #[test]
    fn logins_are_trimmed_as_ruby_strips_and_never_hold_nul() {
        let parsed = |value: &str| Login::parse(value).map(|l| l.as_str().to_owned());
        assert_eq!(
            parsed(" \t\x0b\x0c\r\n\0alice\0 ").as_deref(),
            Some("alice")
        );
        // Ruby's strip leaves Unicode spaces: no stored login has them, so no user matches.
        assert_eq!(
            parsed("\u{a0}alice\u{3000}").as_deref(),
            Some("\u{a0}alice\u{3000}")
        );
        assert_eq!(parsed("al\0ice"), None, "PostgreSQL refuses NUL: no lookup");
        assert_eq!(parsed(" \0 "), None);
        assert_eq!(Login::exact("alice ").unwrap().as_str(), "alice ");
        assert!(Login::exact("al\0ice").is_none());
        assert!(Login::exact("").is_none());
    }

    #[test]
    fn logins_are_downcased_as_ruby_downcases() {
        let lower = |value: &str| Login::exact(value).unwrap().downcased();
        assert_eq!(lower("ALICE"), "alice");
        assert_eq!(lower("\u{212A}ATE"), "kate", "KELVIN SIGN");
        assert_eq!(lower("ADMİN"), "admi\u{307}n", "not `admin`");
        assert_eq!(lower("ΟΔΟΣ"), "οδοσ", "no final sigma");
    }

    #[test]
    fn basic_decoding() {
        let c = BasicCredentials::decode("YWxpY2U6cDpx").unwrap(); // alice:p:q
        assert_eq!((c.username.as_str(), c.password.as_str()), ("alice", "p:q"));
        let unpadded = BasicCredentials::decode("YTpiYw").unwrap(); // a:bc
        assert_eq!(unpadded.password, "bc");
        assert_eq!(
            BasicCredentials::decode("!!!").unwrap_err(),
            Reason::MalformedBasic
        );
        let no_colon = BasicCredentials::decode("YWxpY2U").unwrap(); // "alice"
        assert_eq!(
            (no_colon.username.as_str(), no_colon.password.as_str()),
            ("alice", "")
        );
        assert!(no_colon.password_login().is_none());
        assert_eq!(
            BasicCredentials::decode("/w==").unwrap_err(), // 0xff, not UTF-8
            Reason::MalformedBasic
        );
    }

    #[test]
    fn password_login_needs_both_halves() {
        let c = BasicCredentials::decode("IGFsaWNlIDpwdw").unwrap(); // " alice :pw"
        let (login, password) = c.password_login().unwrap();
        assert_eq!((login.as_str(), password.expose()), ("alice", "pw"));
        assert!(BasicCredentials::decode("YWxpY2U6")
            .unwrap()
            .password_login()
            .is_none());
        assert!(BasicCredentials::decode("IDpwdw")
            .unwrap()
            .password_login()
            .is_none());
    }

    #[test]
    fn multi_byte_characters_at_the_scheme_boundary() {
        for value in ["Basié", "Baxicۂx", "Bearéř token", "ⶁඅ", "é"] {
            let request = Request::new("GET", "/x.json").with_header("authorization", value);
            assert!(
                matches!(select(request), Ok(Credential::Anonymous)),
                "{value}"
            );
        }
    }

    #[test]
    fn only_spaces_and_tabs_may_stand_before_the_scheme() {
        let with = |value: &str| {
            select(Request::new("GET", "/x.json").with_header("authorization", value))
        };
        assert!(matches!(with(" \tBasic YTpi"), Ok(Credential::Basic(_))));
        for value in [
            "\u{a0}Basic YTpi",
            "\u{3000}Bearer tok",
            "\u{2003}Bearer tok",
        ] {
            assert!(matches!(with(value), Ok(Credential::Anonymous)), "{value}");
        }
    }

    #[test]
    fn other_schemes_are_anonymous() {
        let request = Request::new("GET", "/x.json").with_header("authorization", "Digest abc");
        assert!(matches!(select(request).unwrap(), Credential::Anonymous));
    }

    #[test]
    fn non_utf8_credential_header_is_an_error() {
        let mut request = Request::new("GET", "/x.json");
        request.headers.push_not_utf8("Authorization");
        assert_eq!(select(request).unwrap_err(), Reason::MalformedHeader);
    }

    #[test]
    fn secrets_do_not_debug_print() {
        let key = ApiKey::parse("secretkey123").unwrap();
        assert!(!format!("{key:?}").contains("secretkey123"));
    }
}
