//! A structured request (method, target, header pairs as bytes, route mode) straight into
//! the decision core's parsers: `Credential::select`, `BasicCredentials::decode`,
//! `Request::format` and `classify`. Nothing may panic, and what they return must be valid
//! by construction.
#![no_main]

use arbitrary::Arbitrary;
use libfuzzer_sys::fuzz_target;
use redmine_authz::auth::credentials::BasicCredentials;
use redmine_authz::auth::{self, Credential, Request, RouteMode};

#[derive(Debug, Arbitrary)]
enum Name {
    Authorization,
    ApiKey,
    SwitchUser,
    /// Under the identity prefix: what a spoofer sends.
    Identity(String),
    Other(Vec<u8>),
}

impl Name {
    fn text(&self) -> String {
        match self {
            Self::Authorization => "Authorization".to_owned(),
            Self::ApiKey => "X-Redmine-API-Key".to_owned(),
            Self::SwitchUser => "X-Redmine-Switch-User".to_owned(),
            Self::Identity(rest) => format!("x-auth-{rest}"),
            Self::Other(bytes) => String::from_utf8_lossy(bytes).into_owned(),
        }
    }
}

#[derive(Debug, Arbitrary)]
enum Value {
    Raw(Vec<u8>),
    /// `Basic ` and the given bytes, base64 or not.
    Basic(Vec<u8>),
    /// `<scheme> base64(user:password)`, scheme spelled in any case.
    BasicPair(String, String, bool),
    Bearer(Vec<u8>),
}

impl Value {
    fn bytes(&self) -> Vec<u8> {
        match self {
            Self::Raw(bytes) => bytes.clone(),
            Self::Basic(rest) => [b"Basic ".as_slice(), rest].concat(),
            Self::BasicPair(user, password, upper) => {
                let scheme = if *upper { "BASIC " } else { "basic " };
                format!(
                    "{scheme}{}",
                    base64(format!("{user}:{password}").as_bytes())
                )
                .into_bytes()
            }
            Self::Bearer(rest) => [b"Bearer ".as_slice(), rest].concat(),
        }
    }
}

#[derive(Debug, Arbitrary)]
struct Input {
    method: String,
    target: String,
    headers: Vec<(Name, Value)>,
    mode: Option<String>,
}

fuzz_target!(|input: Input| {
    let mut request = Request::new(&input.method, &input.target);
    for (name, value) in &input.headers {
        let name = name.text();
        match std::str::from_utf8(&value.bytes()) {
            Ok(text) => request.headers.push(&name, text),
            Err(_) => request.headers.push_not_utf8(&name),
        }
    }
    request.mode = input
        .mode
        .as_ref()
        .map(|m| RouteMode::parse(m).ok_or_else(|| m.clone()));
    let _ = request.format();
    let _ = auth::classify(&request);

    match Credential::select(&request) {
        Ok(Credential::ApiKey(Some(key), _)) => {
            let key = key.expose();
            assert!(!key.is_empty() && key.len() <= 40);
            assert!(key.bytes().all(|b| b.is_ascii_alphanumeric()), "{key:?}");
        }
        Ok(Credential::Bearer(token)) => assert!(!token.expose().is_empty()),
        Ok(Credential::Basic(basic)) => {
            if let Some((login, password)) = basic.password_login() {
                assert!(!login.as_str().is_empty() && !password.expose().is_empty());
            }
        }
        Ok(_) | Err(_) => {}
    }

    // The Basic decoder on its own: anything decodes or fails, and a pair it was given
    // (user without ':') comes back as it went in.
    for (_, value) in &input.headers {
        if let Ok(text) = std::str::from_utf8(&value.bytes()) {
            let _ = BasicCredentials::decode(text);
        }
        if let Value::BasicPair(user, password, _) = value {
            let decoded =
                BasicCredentials::decode(&base64(format!("{user}:{password}").as_bytes()))
                    .expect("a well-formed pair decodes");
            if !user.contains(':') {
                assert_eq!((&decoded.username, &decoded.password), (user, password));
            }
        }
    }
});

/// Standard base64 with padding (kept here so the fuzzer needs no extra crate).
fn base64(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::new();
    for chunk in bytes.chunks(3) {
        let n = chunk
            .iter()
            .enumerate()
            .fold(0u32, |n, (i, b)| n | u32::from(*b) << (16 - 8 * i));
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(ALPHABET[(n >> (18 - 6 * i) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}
