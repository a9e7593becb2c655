//! `CheckRequest` -> [`Request`]. Everything Envoy may send in either header form.

use std::net::IpAddr;

use super::proto::envoy::config::core::v3::address;
use super::proto::envoy::service::auth::v3::{attribute_context, CheckRequest};
use crate::auth::{Request, RouteMode};

/// A `CheckRequest` that does not describe an HTTP request.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum ParseError {
    #[error("check request has no HTTP attributes")]
    NoHttpRequest,
    #[error("request line or headers over the gate's limits")]
    TooLarge,
}

/// Caps on what the gate reads, above Envoy's defaults (100 headers, 60 KiB of headers), so a
/// request Envoy forwards is never refused for size, and a larger one is refused outright.
pub const MAX_HEADERS: usize = 256;
pub const MAX_HEADER_BYTES: usize = 16 * 1024;
pub const MAX_TOTAL_HEADER_BYTES: usize = 96 * 1024;
pub const MAX_PATH_BYTES: usize = 16 * 1024;

/// Takes the message by value: header names and values move into the [`Request`] instead of
/// being copied, which is most of the allocation a cached decision makes.
pub fn parse(check: CheckRequest) -> Result<Request, ParseError> {
    let mut attributes = check.attributes.ok_or(ParseError::NoHttpRequest)?;
    let http = attributes
        .request
        .take()
        .and_then(|r| r.http)
        .ok_or(ParseError::NoHttpRequest)?;
    if http.method.is_empty() && http.path.is_empty() {
        return Err(ParseError::NoHttpRequest);
    }
    check_sizes(&http)?;
    let mut request = Request::new(&http.method, &http.path);
    move_headers(http, &mut request);
    request.source = attributes
        .source
        .as_ref()
        .and_then(|peer| peer.address.as_ref())
        .and_then(peer_ip);
    request.mode = attributes
        .context_extensions
        .remove(RouteMode::CONTEXT_KEY)
        .map(|value| RouteMode::parse(&value).ok_or(value));
    Ok(request)
}

fn check_sizes(http: &attribute_context::HttpRequest) -> Result<(), ParseError> {
    // One pass, no allocation: this runs on every Check.
    let (count, largest, total) = match http.header_map.as_ref().filter(|m| !m.headers.is_empty()) {
        Some(map) => sizes(
            map.headers
                .iter()
                .map(|h| h.key.len() + h.value.len().max(h.raw_value.len())),
        ),
        None => sizes(http.headers.iter().map(|(k, v)| k.len() + v.len())),
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

/// Envoy fills `headers` by default and `header_map` (raw bytes) with `encode_raw_headers`.
fn move_headers(http: attribute_context::HttpRequest, request: &mut Request) {
    match http.header_map.filter(|m| !m.headers.is_empty()) {
        Some(map) => {
            request.headers.reserve(map.headers.len());
            for header in map.headers {
                // raw_value is authoritative when set; `value` is the older string form.
                if header.raw_value.is_empty() {
                    request.headers.push_owned(header.key, header.value);
                } else {
                    match String::from_utf8(header.raw_value) {
                        Ok(value) => request.headers.push_owned(header.key, value),
                        Err(_) => request.headers.push_not_utf8(&header.key),
                    }
                }
            }
        }
        None => {
            request.headers.reserve(http.headers.len());
            for (name, value) in http.headers {
                request.headers.push_owned(name, value);
            }
        }
    }
}

fn peer_ip(address: &super::proto::envoy::config::core::v3::Address) -> Option<IpAddr> {
    match address.address.as_ref()? {
        address::Address::SocketAddress(socket) => socket.address.parse().ok(),
        _ => None,
    }
}
