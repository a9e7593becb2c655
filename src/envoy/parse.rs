//! `CheckRequest` -> [`Request`]. Everything Envoy may send in either header form.

use bytestring::ByteString;
use prost::bytes::Bytes;

use super::wire::{CheckRequest, HttpRequest};
use crate::auth::body::content_length;
use crate::auth::request::{Headers, RequestBody};
use crate::auth::{Request, RouteMode};

/// A `CheckRequest` that does not describe an HTTP request.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum ParseError {
    #[error("check request has no HTTP attributes")]
    NoHttpRequest,
    #[error("request line or headers over the gate's limits")]
    TooLarge,
    #[error("method or path is not UTF-8")]
    NotUtf8,
}

/// Caps on what the gate reads, above Envoy's defaults (100 headers, 60 KiB of headers), so a
/// request Envoy forwards is never refused for size, and a larger one is refused outright.
pub const MAX_HEADERS: usize = 256;
pub const MAX_HEADER_BYTES: usize = 16 * 1024;
pub const MAX_TOTAL_HEADER_BYTES: usize = 96 * 1024;
pub const MAX_PATH_BYTES: usize = 16 * 1024;

/// The header Envoy adds to a Check that carries a body (`with_request_body`): `false` for the
/// whole body, `true` when it cut the body at `max_request_bytes` (`allow_partial_message`).
/// Envoy leaves out a header of that name sent by the client: only Envoy sets it.
pub const PARTIAL_BODY_HEADER: &str = "x-envoy-auth-partial-body";

/// Envoy marks a body whole when its buffer holds exactly `max_request_bytes` of it, even if
/// more follows. Without a `Content-Length` to compare with, a body this long may be cut: the
/// example configurations buffer this much, and a larger `max_request_bytes` only means that
/// longer bodies need a `Content-Length`.
pub const MAX_BODY_WITHOUT_LENGTH: usize = 64 * 1024;

/// Takes the message by value: header names and values move into the [`Request`] still
/// sharing the received frame.
pub fn parse(check: CheckRequest) -> Result<Request, ParseError> {
    let mut attributes = check.attributes.ok_or(ParseError::NoHttpRequest)?;
    let mut http = attributes
        .request
        .take()
        .and_then(|r| r.http)
        .ok_or(ParseError::NoHttpRequest)?;
    if http.method.is_empty() && http.path.is_empty() {
        return Err(ParseError::NoHttpRequest);
    }
    check_sizes(&http)?;
    let (Ok(method), Ok(target)) = (
        ByteString::try_from(std::mem::take(&mut http.method)),
        ByteString::try_from(std::mem::take(&mut http.path)),
    ) else {
        return Err(ParseError::NotUtf8);
    };
    let mut request = Request::from_target(method, target);
    // Envoy fills one of the two, as `pack_as_bytes` says.
    let body = match std::mem::take(&mut http.raw_body) {
        raw if raw.is_empty() => std::mem::take(&mut http.body),
        raw => raw,
    };
    move_headers(http, &mut request);
    request.body = read_body(body, &request.headers);
    request.source = attributes
        .source
        .and_then(|peer| peer.address)
        .and_then(|address| address.socket_address)
        .and_then(|socket| std::str::from_utf8(&socket.address).ok()?.parse().ok());
    // A map's last entry for a key is its value.
    request.mode = attributes
        .context_extensions
        .iter()
        .rfind(|entry| *entry.key == *RouteMode::CONTEXT_KEY.as_bytes())
        .map(|entry| {
            let value = String::from_utf8_lossy(&entry.value);
            RouteMode::parse(&value).ok_or_else(|| value.into_owned())
        });
    Ok(request)
}

fn check_sizes(http: &HttpRequest) -> Result<(), ParseError> {
    // One pass, no allocation: this runs on every Check.
    let (count, largest, total) = match http.header_map.as_ref().filter(|m| !m.headers.is_empty()) {
        Some(map) => sizes(
            map.headers
                .iter()
                .map(|h| h.key.len() + h.value.len().max(h.raw_value.len())),
        ),
        None => sizes(http.headers.iter().map(|e| e.key.len() + e.value.len())),
    };
    if http.path.len() > MAX_PATH_BYTES
        || count > MAX_HEADERS
        || largest > MAX_HEADER_BYTES
        || total > MAX_TOTAL_HEADER_BYTES
    {
        Err(ParseError::TooLarge)
    } else {
        Ok(())
    }
}

/// (how many, the largest, all together)
fn sizes(each: impl Iterator<Item = usize>) -> (usize, usize, usize) {
    each.fold((0, 0, 0), |(count, largest, total), size| {
        (count + 1, largest.max(size), total + size)
    })
}

/// The body Envoy sent, if it sent one, marked partial when it may be less than the client
/// sent: Envoy says it cut it, or its length is not the `Content-Length`, or it has no
/// `Content-Length` and is long enough to be a cut one that Envoy calls whole.
fn read_body(bytes: Bytes, headers: &Headers) -> Option<RequestBody> {
    let marked = headers.names().any(|name| name == PARTIAL_BODY_HEADER);
    if bytes.is_empty() && !marked {
        return None;
    }
    // Anything but Envoy's own `false` counts as cut: a stricter reading, never a looser one.
    let cut = headers.is_not_utf8(PARTIAL_BODY_HEADER)
        || headers
            .get_all(PARTIAL_BODY_HEADER)
            .any(|mark| mark != "false");
    let short = match content_length(headers) {
        Some(length) => length != Some(bytes.len() as u64),
        None => bytes.len() >= MAX_BODY_WITHOUT_LENGTH,
    };
    Some(RequestBody {
        bytes,
        partial: cut || short,
    })
}

/// Envoy fills `headers` by default and `header_map` (raw bytes) with `encode_raw_headers`.
/// A header whose name is not UTF-8 is dropped: no HTTP header name is.
fn move_headers(http: HttpRequest, request: &mut Request) {
    match http.header_map.filter(|m| !m.headers.is_empty()) {
        Some(map) => {
            request.headers.reserve(map.headers.len());
            for header in map.headers {
                // raw_value is authoritative when set; `value` is the older string form.
                let value = if header.raw_value.is_empty() {
                    header.value
                } else {
                    header.raw_value
                };
                push(request, header.key, value);
            }
        }
        None => {
            request.headers.reserve(http.headers.len());
            for entry in http.headers {
                push(request, entry.key, entry.value);
            }
        }
    }
}

fn push(request: &mut Request, name: Bytes, value: Bytes) {
    let Ok(name) = ByteString::try_from(name) else {
        return;
    };
    match ByteString::try_from(value) {
        Ok(value) => request.headers.push_text(name, value),
        Err(_) => request.headers.push_not_utf8(&name),
    }
}

#[cfg(test)]
mod tests {
    use prost::Message as _;

    use super::*;
    use crate::envoy::proto::envoy::config::core::v3 as core;
    use crate::envoy::proto::envoy::service::auth::v3 as auth;
    use auth::attribute_context::{HttpRequest as FullHttp, Peer, Request as FullRequest};

    /// What Envoy sends, through the gate's decoder: the full message, encoded.
    fn as_received(check: &auth::CheckRequest) -> CheckRequest {
        CheckRequest::decode(check.encode_to_vec().as_slice()).unwrap()
    }

    fn peer(ip: &str) -> Peer {
        Peer {
            address: Some(core::Address {
                address: Some(core::address::Address::SocketAddress(core::SocketAddress {
                    address: ip.to_owned(),
                    port_specifier: Some(core::socket_address::PortSpecifier::PortValue(443)),
                    ..Default::default()
                })),
            }),
            service: "svc".to_owned(),
            principal: "spiffe://x".to_owned(),
            ..Default::default()
        }
    }

    fn full(http: FullHttp) -> auth::CheckRequest {
        auth::CheckRequest {
            attributes: Some(auth::AttributeContext {
                source: Some(peer("203.0.113.9")),
                destination: Some(peer("10.0.0.1")),
                request: Some(FullRequest {
                    time: Some(prost_types::Timestamp {
                        seconds: 1,
                        nanos: 2,
                    }),
                    http: Some(http),
                }),
                context_extensions: [
                    ("other".to_owned(), "x".to_owned()),
                    (RouteMode::CONTEXT_KEY.to_owned(), "public".to_owned()),
                ]
                .into(),
                tls_session: Some(auth::attribute_context::TlsSession {
                    sni: "redmine.example".to_owned(),
                }),
                ..Default::default()
            }),
        }
    }

    #[test]
    fn reads_what_the_full_message_carries_and_skips_the_rest() {
        let check = full(FullHttp {
            id: "123".to_owned(),
            method: "GET".to_owned(),
            path: "/issues.json?key=abc&limit=2".to_owned(),
            host: "redmine.example".to_owned(),
            headers: [
                ("x-redmine-api-key".to_owned(), "abc".to_owned()),
                ("X-Request-Id".to_owned(), "r1".to_owned()),
            ]
            .into(),
            body: "limit=2".to_owned(),
            size: 7,
            ..Default::default()
        });
        let request = parse(as_received(&check)).unwrap();
        assert_eq!(request.method, "GET");
        assert_eq!(request.path, "/issues.json");
        assert_eq!(request.query_all("key").collect::<Vec<_>>(), ["abc"]);
        assert_eq!(request.headers.first("x-redmine-api-key"), Some("abc"));
        assert_eq!(
            request.headers.first("x-request-id"),
            Some("r1"),
            "name lower-cased"
        );
        assert_eq!(request.source, Some("203.0.113.9".parse().unwrap()));
        assert_eq!(request.mode, Some(Ok(RouteMode::Public)));
        assert_eq!(
            request.body.map(|b| b.bytes),
            Some(Bytes::from_static(b"limit=2"))
        );
    }

    #[test]
    fn header_map_wins_and_raw_values_are_checked_for_utf8() {
        let check = full(FullHttp {
            method: "GET".to_owned(),
            path: "/".to_owned(),
            headers: [("authorization".to_owned(), "from-map".to_owned())].into(),
            header_map: Some(core::HeaderMap {
                headers: vec![
                    core::HeaderValue {
                        key: "authorization".to_owned(),
                        value: String::new(),
                        raw_value: b"Basic raw".to_vec(),
                    },
                    core::HeaderValue {
                        key: "x-redmine-api-key".to_owned(),
                        value: String::new(),
                        raw_value: vec![0xff, 0xfe],
                    },
                    core::HeaderValue {
                        key: "accept".to_owned(),
                        value: "text/html".to_owned(),
                        raw_value: Vec::new(),
                    },
                ],
            }),
            ..Default::default()
        });
        let request = parse(as_received(&check)).unwrap();
        assert_eq!(request.headers.first("authorization"), Some("Basic raw"));
        assert_eq!(request.headers.first("accept"), Some("text/html"));
        assert_eq!(request.headers.first("x-redmine-api-key"), None);
        assert!(request.headers.is_not_utf8("x-redmine-api-key"));
    }

    #[test]
    fn a_key_twice_in_the_headers_map_is_a_repeated_header() {
        use crate::auth::{Credential, Reason};
        use crate::envoy::wire::{AttributeContext, AttributeRequest, Entry};
        let key = |value: &'static str| Entry {
            key: Bytes::from_static(b"x-redmine-api-key"),
            value: Bytes::from_static(value.as_bytes()),
        };
        let check = CheckRequest {
            attributes: Some(AttributeContext {
                request: Some(AttributeRequest {
                    http: Some(HttpRequest {
                        method: Bytes::from_static(b"GET"),
                        path: Bytes::from_static(b"/issues.json"),
                        headers: vec![key("first"), key("second")],
                        ..Default::default()
                    }),
                }),
                ..Default::default()
            }),
        };
        let request = parse(check).unwrap();
        assert_eq!(
            Credential::select(&request).unwrap_err(),
            Reason::AmbiguousCredential
        );
    }

    /// A POST as Envoy sends it with `with_request_body`: the body in `raw_body`
    /// (`pack_as_bytes`) or `body`, the partial mark among the headers of either form.
    fn with_body(body: &[u8], packed: bool, headers: &[(&str, &str)], raw: bool) -> Request {
        let mut http = FullHttp {
            method: "POST".to_owned(),
            path: "/issues.json".to_owned(),
            ..Default::default()
        };
        if packed {
            http.raw_body = body.to_vec();
        } else {
            http.body = String::from_utf8(body.to_vec()).unwrap();
        }
        if raw {
            http.header_map = Some(core::HeaderMap {
                headers: headers
                    .iter()
                    .map(|(k, v)| core::HeaderValue {
                        key: (*k).to_owned(),
                        value: String::new(),
                        raw_value: v.as_bytes().to_vec(),
                    })
                    .collect(),
            });
        } else {
            http.headers = headers
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect();
        }
        parse(as_received(&full(http))).unwrap()
    }

    #[test]
    fn the_body_is_a_slice_of_the_received_frame() {
        let check = full(FullHttp {
            method: "POST".to_owned(),
            path: "/issues.json".to_owned(),
            raw_body: vec![b'k'; 4096],
            ..Default::default()
        });
        let frame = Bytes::from(check.encode_to_vec());
        let request = parse(CheckRequest::decode(frame.clone()).unwrap()).unwrap();
        let body = request.body.unwrap().bytes;
        let within = frame.as_ptr_range();
        assert!(within.contains(&body.as_ptr()), "copied out of the frame");
        assert_eq!(body.len(), 4096);
    }

    #[test]
    fn the_body_arrives_in_either_field() {
        for packed in [true, false] {
            for raw in [true, false] {
                let request = with_body(
                    b"key=abc",
                    packed,
                    &[
                        ("content-type", "application/x-www-form-urlencoded"),
                        ("content-length", "7"),
                        (PARTIAL_BODY_HEADER, "false"),
                    ],
                    raw,
                );
                let body = request.body.expect("a body");
                assert_eq!(&body.bytes[..], b"key=abc", "packed {packed}, raw {raw}");
                assert!(!body.partial, "packed {packed}, raw {raw}");
            }
        }
        // Bytes that are not UTF-8 come through as sent.
        let request = with_body(
            b"\xff\x00key",
            true,
            &[(PARTIAL_BODY_HEADER, "false")],
            true,
        );
        assert_eq!(&request.body.unwrap().bytes[..], b"\xff\x00key");
        // No body and no mark: Envoy sent none (a GET, or no `with_request_body`).
        assert_eq!(
            with_body(b"", true, &[("content-length", "7")], false).body,
            None
        );
        // An empty body Envoy buffered is a body.
        let empty = with_body(b"", true, &[(PARTIAL_BODY_HEADER, "false")], false);
        assert_eq!(empty.body.map(|b| b.partial), Some(false));
    }

    #[test]
    fn a_body_is_partial_when_it_may_be_less_than_was_sent() {
        let partial = |body: &[u8], headers: &[(&str, &str)]| {
            let request = with_body(body, true, headers, false);
            request.body.expect("a body").partial
        };
        let mark = |value| (PARTIAL_BODY_HEADER, value);
        // Envoy says so.
        assert!(partial(
            b"key=",
            &[mark("true"), ("content-length", "99999")]
        ));
        // Anything but Envoy's `false` is read as cut.
        assert!(partial(b"key=", &[mark("TRUE"), ("content-length", "4")]));
        assert!(partial(b"key=", &[mark(""), ("content-length", "4")]));
        // Whole, Envoy says, but shorter than Content-Length: Envoy stops buffering at
        // exactly max_request_bytes and calls that whole.
        assert!(partial(b"key=", &[mark("false"), ("content-length", "5")]));
        assert!(partial(b"key=", &[mark("false"), ("content-length", "x")]));
        assert!(!partial(b"key=", &[mark("false"), ("content-length", "4")]));
        // Without Content-Length (chunked, HTTP/2) only a short body is surely whole.
        let long = vec![b'a'; MAX_BODY_WITHOUT_LENGTH];
        assert!(partial(&long, &[mark("false")]));
        assert!(!partial(&long[1..], &[mark("false")]));
        let length = MAX_BODY_WITHOUT_LENGTH.to_string();
        assert!(!partial(
            &long,
            &[mark("false"), ("content-length", &length)]
        ));
        // A mark that is not UTF-8 is not `false`.
        let mut http = FullHttp {
            method: "POST".to_owned(),
            path: "/issues.json".to_owned(),
            raw_body: b"key=".to_vec(),
            header_map: Some(core::HeaderMap {
                headers: vec![core::HeaderValue {
                    key: PARTIAL_BODY_HEADER.to_owned(),
                    value: String::new(),
                    raw_value: vec![0xff],
                }],
            }),
            ..Default::default()
        };
        let request = parse(as_received(&full(http.clone()))).unwrap();
        assert!(request.body.unwrap().partial);
        http.header_map = None;
        let request = parse(as_received(&full(http))).unwrap();
        assert!(!request.body.unwrap().partial, "no mark, no length, short");
    }

    #[test]
    fn refuses_what_is_not_an_http_request() {
        assert_eq!(
            parse(as_received(&auth::CheckRequest::default())).unwrap_err(),
            ParseError::NoHttpRequest
        );
        // A method that is not UTF-8 (the full message's decoder would refuse the whole
        // message; the gate answers it).
        let mut http = HttpRequest {
            method: Bytes::from_static(&[0xc3, 0x28]),
            path: Bytes::from_static(b"/"),
            ..Default::default()
        };
        let check = |http: HttpRequest| CheckRequest {
            attributes: Some(crate::envoy::wire::AttributeContext {
                request: Some(crate::envoy::wire::AttributeRequest { http: Some(http) }),
                ..Default::default()
            }),
        };
        assert_eq!(parse(check(http.clone())).unwrap_err(), ParseError::NotUtf8);
        http.method = Bytes::from_static(b"GET");
        http.path = Bytes::from(vec![b'a'; MAX_PATH_BYTES + 1]);
        assert_eq!(parse(check(http)).unwrap_err(), ParseError::TooLarge);
    }
}
