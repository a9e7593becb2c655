//! Check requests as Envoy sends them for a Redmine API call.

use base64::Engine as _;
use redmine_authz::envoy::proto::envoy::service::auth::v3::CheckRequest;

use crate::support::check_request::{get, SOURCE};

/// The client address of ordinary users; the flood comes from [`FLOOD_NETWORK`].
pub const USER_SOURCE: &str = SOURCE;
pub const FLOOD_NETWORK: &str = "10.66";

/// `GET path` with Envoy's usual attributes and the given extra headers.
pub fn check(path: &str, extra: &[(&str, String)]) -> CheckRequest {
    check_from(USER_SOURCE, path, extra)
}

pub fn check_from(source: &str, path: &str, extra: &[(&str, String)]) -> CheckRequest {
    let usual = [
        (":authority", "redmine.example"),
        (":method", "GET"),
        (":path", path),
        (":scheme", "https"),
        ("accept", "application/json"),
        ("user-agent", "redmine-authz-bench/1.0"),
        ("x-forwarded-proto", "https"),
        ("x-request-id", "6a1c6f0e-5f7e-4e39-9d1b-1c0d1f1c2b3a"),
    ];
    let request = get(path).id("1234567890").source(source);
    let request = usual.into_iter().fold(request, |request, (name, value)| {
        request.header(name, value)
    });
    extra
        .iter()
        .fold(request, |request, (name, value)| {
            request.header(name, value)
        })
        .build()
}

/// An API call with the key in `X-Redmine-API-Key`.
pub fn api_key(key: &str) -> CheckRequest {
    check(
        "/issues.json?project_id=1&limit=25",
        &[("x-redmine-api-key", key.to_owned())],
    )
}

pub fn basic(login: &str, password: &str) -> CheckRequest {
    let encoded = base64::engine::general_purpose::STANDARD.encode(format!("{login}:{password}"));
    check(
        "/projects.json",
        &[("authorization", format!("Basic {encoded}"))],
    )
}

/// The request the Redmine comparison sends: a wrong key in the query string.
pub fn wrong_key_query() -> CheckRequest {
    check("/users/current.json?key=wrong", &[])
}

/// A random 40-hex key no user has, from a random address in the flood's /16.
pub fn flood_key() -> CheckRequest {
    use rand::Rng as _;
    let host: [u8; 2] = rand::rng().random();
    check_from(
        &format!("{FLOOD_NETWORK}.{}.{}", host[0], host[1]),
        "/issues.json?project_id=1&limit=25",
        &[("x-redmine-api-key", random_key())],
    )
}

/// A random 40-hex key no user has.
pub fn random_key() -> String {
    use rand::Rng as _;
    let bytes: [u8; 20] = rand::rng().random();
    hex::encode(bytes)
}

/// `request` as a POST carrying a JSON body of `size` bytes, as Envoy sends it with
/// `with_request_body` and `pack_as_bytes`: the body in `raw_body`, its `Content-Length`
/// and Envoy's mark that it is whole.
pub fn with_body(mut request: CheckRequest, size: usize) -> CheckRequest {
    let http = request
        .attributes
        .as_mut()
        .and_then(|a| a.request.as_mut())
        .and_then(|r| r.http.as_mut())
        .expect("an HTTP check");
    let mut body = br#"{"issue":{"notes":""#.to_vec();
    body.resize(size.saturating_sub(3).max(body.len()), b'x');
    body.extend_from_slice(br#""}}"#);
    http.method = "POST".into();
    for (name, value) in [
        (":method", "POST".to_owned()),
        ("content-type", "application/json".to_owned()),
        ("content-length", body.len().to_string()),
        ("x-envoy-auth-partial-body", "false".to_owned()),
    ] {
        http.headers.insert(name.to_owned(), value);
    }
    http.size = body.len() as i64;
    http.raw_body = body;
    request
}

/// The request as the load generator sends it, encoded once.
pub fn encode(request: &CheckRequest) -> bytes::Bytes {
    use prost::Message as _;
    request.encode_to_vec().into()
}

/// The body h2load sends: one gRPC message frame (not compressed, 4-byte length, message).
pub fn grpc_frame(request: &CheckRequest) -> Vec<u8> {
    use prost::Message as _;
    let message = request.encode_to_vec();
    let mut frame = Vec::with_capacity(5 + message.len());
    frame.push(0);
    frame.extend_from_slice(&(message.len() as u32).to_be_bytes());
    frame.extend_from_slice(&message);
    frame
}
