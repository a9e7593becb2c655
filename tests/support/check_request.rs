//! `CheckRequest`s as Envoy sends them, built a header at a time.

use std::collections::BTreeMap;

use redmine_authz::envoy::proto::envoy::config::core::v3::{
    address, socket_address::PortSpecifier, Address, HeaderMap, HeaderValue, SocketAddress,
};
use redmine_authz::envoy::proto::envoy::service::auth::v3::attribute_context::{
    HttpRequest, Peer, Request as AttrRequest,
};
use redmine_authz::envoy::proto::envoy::service::auth::v3::{AttributeContext, CheckRequest};

/// The direct peer Envoy reports unless told otherwise.
pub const SOURCE: &str = "203.0.113.9";

/// A Check request as Envoy would send it.
#[derive(Clone)]
pub struct CheckBuilder {
    method: String,
    path: String,
    id: String,
    headers: Vec<(String, Vec<u8>)>,
    raw: bool,
    context: BTreeMap<String, String>,
    source: Option<String>,
    body: Vec<u8>,
}

/// `GET path` from [`SOURCE`].
pub fn get(path: &str) -> CheckBuilder {
    CheckBuilder {
        method: "GET".into(),
        path: path.into(),
        id: String::new(),
        headers: vec![],
        raw: false,
        context: BTreeMap::new(),
        source: Some(SOURCE.into()),
        body: vec![],
    }
}

/// `POST path` from [`SOURCE`].
pub fn post(path: &str) -> CheckBuilder {
    get(path).method("POST")
}

impl CheckBuilder {
    pub fn method(mut self, method: &str) -> Self {
        self.method = method.into();
        self
    }

    /// Envoy's request id (`x-request-id`'s value in `HttpRequest.id`).
    pub fn id(mut self, id: &str) -> Self {
        self.id = id.into();
        self
    }

    /// A header; a repeated one is joined with a comma, as Envoy's `headers` map does.
    pub fn header(mut self, name: &str, value: &str) -> Self {
        self.headers
            .push((name.to_ascii_lowercase(), value.as_bytes().to_vec()));
        self
    }

    /// A header whose value need not be UTF-8: sent in `header_map` (see [`Self::raw`]).
    pub fn raw_header(mut self, name: &str, value: &[u8]) -> Self {
        self.headers
            .push((name.to_ascii_lowercase(), value.to_vec()));
        self.raw()
    }

    /// Sends the headers as `header_map` with `raw_value` (Envoy's `encode_raw_headers`).
    pub fn raw(mut self) -> Self {
        self.raw = true;
        self
    }

    /// The direct peer Envoy reports.
    pub fn source(mut self, ip: &str) -> Self {
        self.source = Some(ip.to_owned());
        self
    }

    /// A context extension of the route.
    pub fn context(mut self, key: &str, value: &str) -> Self {
        self.context.insert(key.into(), value.into());
        self
    }

    /// A whole body as Envoy sends it with `with_request_body` and `pack_as_bytes`: in
    /// `raw_body`, with the client's `Content-Length` and Envoy's partial-body mark.
    pub fn body(self, body: &[u8]) -> Self {
        self.cut_body(body, body.len())
    }

    /// The first bytes of a body of `sent` bytes, as Envoy sends them when the body is over
    /// `max_request_bytes` and `allow_partial_message` is on.
    pub fn cut_body(mut self, first: &[u8], sent: usize) -> Self {
        self.body = first.to_vec();
        let partial = if first.len() < sent { "true" } else { "false" };
        self.header("content-length", &sent.to_string())
            .header("x-envoy-auth-partial-body", partial)
    }

    pub fn build(&self) -> CheckRequest {
        let mut http = HttpRequest {
            id: self.id.clone(),
            method: self.method.clone(),
            path: self.path.clone(),
            host: "redmine.example".into(),
            scheme: "https".into(),
            protocol: "HTTP/1.1".into(),
            raw_body: self.body.clone(),
            ..Default::default()
        };
        if self.raw {
            http.header_map = Some(HeaderMap {
                headers: self
                    .headers
                    .iter()
                    .map(|(k, v)| HeaderValue {
                        key: k.clone(),
                        value: String::new(),
                        raw_value: v.clone(),
                    })
                    .collect(),
            });
        } else {
            for (name, value) in &self.headers {
                let value = String::from_utf8_lossy(value).into_owned();
                http.headers
                    .entry(name.clone())
                    .and_modify(|v| *v = format!("{v},{value}"))
                    .or_insert(value);
            }
        }
        let source = self.source.as_ref().map(|ip| Peer {
            address: Some(Address {
                address: Some(address::Address::SocketAddress(SocketAddress {
                    address: ip.clone(),
                    port_specifier: Some(PortSpecifier::PortValue(51000)),
                    ..Default::default()
                })),
            }),
            ..Default::default()
        });
        CheckRequest {
            attributes: Some(AttributeContext {
                source,
                request: Some(AttrRequest {
                    time: None,
                    http: Some(http),
                }),
                context_extensions: self.context.clone().into_iter().collect(),
                ..Default::default()
            }),
        }
    }
}
