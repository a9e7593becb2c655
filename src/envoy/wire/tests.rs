//! The trimmed structs of `wire` against Envoy's: their tags against the descriptors compiled
//! from `proto/`, and the trimmed and the full decoder on generated messages, both ways.

use std::collections::HashMap;
use std::net::IpAddr;

use proptest::collection::{hash_map, vec};
use proptest::option;
use proptest::prelude::*;
use prost::encoding::{decode_key, decode_varint, WireType};
use prost_types::field_descriptor_proto::{Label, Type};
use prost_types::{DescriptorProto, FileDescriptorSet};

use super::*;
use crate::auth::RouteMode;
use crate::envoy::proto::envoy::config::core::v3 as core;
use crate::envoy::proto::envoy::service::auth::v3 as auth;
use crate::envoy::proto::FILE_DESCRIPTOR_SET;
use crate::envoy::{parse, ParseError};
use auth::attribute_context as full;
use core::address::Address as AddressKind;

// --- The tags against the descriptors of `proto/`.

/// The messages compiled from `proto/`, by full name (`.envoy.service.auth.v3.CheckRequest`).
fn descriptors() -> HashMap<String, DescriptorProto> {
    fn add(scope: &str, message: &DescriptorProto, all: &mut HashMap<String, DescriptorProto>) {
        let name = format!("{scope}.{}", message.name());
        for nested in &message.nested_type {
            add(&name, nested, all);
        }
        all.insert(name, message.clone());
    }
    let set = FileDescriptorSet::decode(FILE_DESCRIPTOR_SET).unwrap();
    let mut all = HashMap::new();
    for file in &set.file {
        for message in &file.message_type {
            add(&format!(".{}", file.package()), message, &mut all);
        }
    }
    all
}

/// Every field of the trimmed `CheckRequest` set: each `bytes` field holds its own name,
/// each repeated field two elements. No `..Default::default()`, so that a field added to
/// the structs of `wire` is not left out of the check.
fn every_field() -> CheckRequest {
    let named = |name: &'static str| Bytes::from_static(name.as_bytes());
    let entry = || Entry {
        key: named("key"),
        value: named("value"),
    };
    let header = || HeaderValue {
        key: named("key"),
        value: named("value"),
        raw_value: named("raw_value"),
    };
    CheckRequest {
        attributes: Some(AttributeContext {
            source: Some(Peer {
                address: Some(Address {
                    socket_address: Some(SocketAddress {
                        address: named("address"),
                    }),
                }),
            }),
            request: Some(AttributeRequest {
                http: Some(HttpRequest {
                    method: named("method"),
                    headers: vec![entry(), entry()],
                    path: named("path"),
                    body: named("body"),
                    raw_body: named("raw_body"),
                    header_map: Some(HeaderMap {
                        headers: vec![header(), header()],
                    }),
                }),
            }),
            context_extensions: vec![entry(), entry()],
        }),
    }
}

/// Reads `encoded` as the message `name` of `proto/`: each field must be there under the
/// number it was encoded with, with a type of the same wire type, repeated if and only if
/// it came more than once, and a string or bytes field must be the one named as the value
/// it holds. Returns the string and bytes fields read, as paths.
fn read_as(
    encoded: &[u8],
    name: &str,
    path: &str,
    descriptors: &HashMap<String, DescriptorProto>,
) -> Vec<String> {
    let message = &descriptors[name];
    let mut read = Vec::new();
    let mut times = HashMap::<u32, usize>::new();
    let mut rest = encoded;
    while !rest.is_empty() {
        let (number, wire_type) = decode_key(&mut rest).unwrap();
        let field = (message.field.iter())
            .find(|field| u32::try_from(field.number()) == Ok(number))
            .unwrap_or_else(|| panic!("{path}: {name} has no field {number}"));
        let at = format!("{path}.{}", field.name());
        // The trimmed structs declare only strings, bytes and messages.
        assert_eq!(wire_type, WireType::LengthDelimited, "{at}");
        let length = usize::try_from(decode_varint(&mut rest).unwrap()).unwrap();
        let (value, after) = rest.split_at(length);
        rest = after;
        match field.r#type() {
            Type::String | Type::Bytes => {
                let holds = String::from_utf8_lossy(value);
                assert_eq!(holds, field.name(), "{at}: field {number} holds `{holds}`");
                read.push(at);
            }
            Type::Message => read.extend(read_as(value, field.type_name(), &at, descriptors)),
            other => panic!("{at}: field {number} is {other:?}, not length-delimited"),
        }
        *times.entry(number).or_default() += 1;
    }
    for field in &message.field {
        if let Some(&times) = u32::try_from(field.number())
            .ok()
            .and_then(|n| times.get(&n))
        {
            assert_eq!(
                field.label() == Label::Repeated,
                times > 1,
                "{path}.{}: read {times} times, declared {:?}",
                field.name(),
                field.label()
            );
        }
    }
    read
}

/// The hand-typed tags of `wire` against the descriptors `build.rs` compiles from `proto/`: a
/// field under another field's number, a message where Envoy has a string, a single field
/// where Envoy has a repeated one (or the other way round) fail here.
#[test]
fn the_trimmed_fields_have_envoys_numbers_and_types() {
    let descriptors = descriptors();
    let encoded = every_field().encode_to_vec();
    let mut read = read_as(
        &encoded,
        ".envoy.service.auth.v3.CheckRequest",
        "CheckRequest",
        &descriptors,
    );
    read.sort_unstable();
    read.dedup();
    // What the gate reads, in Envoy's names.
    let http = "CheckRequest.attributes.request.http";
    let mut expected = [
        "CheckRequest.attributes.context_extensions.key".to_owned(),
        "CheckRequest.attributes.context_extensions.value".to_owned(),
        "CheckRequest.attributes.source.address.socket_address.address".to_owned(),
        format!("{http}.body"),
        format!("{http}.header_map.headers.key"),
        format!("{http}.header_map.headers.raw_value"),
        format!("{http}.header_map.headers.value"),
        format!("{http}.headers.key"),
        format!("{http}.headers.value"),
        format!("{http}.method"),
        format!("{http}.path"),
        format!("{http}.raw_body"),
    ];
    expected.sort_unstable();
    assert_eq!(read, expected);
}

/// `TOO_LARGE` must not be a field Envoy could send.
#[test]
fn the_too_large_stand_in_is_no_field_of_check_request() {
    let (number, _) = decode_key(&mut &TOO_LARGE[..]).unwrap();
    assert_eq!(number, 536_870_911);
    let check = &descriptors()[".envoy.service.auth.v3.CheckRequest"];
    assert!(check
        .field
        .iter()
        .all(|field| field.number() != 536_870_911));
}

// --- The trimmed and the full decoder on generated messages.

/// Text as Envoy may send it: mostly ASCII, some of any script, sometimes an IP address.
fn text() -> impl Strategy<Value = String> {
    prop_oneof![
        4 => "[ -~]{0,12}",
        1 => "\\PC{0,6}",
        1 => any::<IpAddr>().prop_map(|ip| ip.to_string()),
    ]
}

fn raw() -> impl Strategy<Value = Vec<u8>> {
    vec(any::<u8>(), 0..24)
}

fn pairs() -> impl Strategy<Value = HashMap<String, String>> {
    hash_map(text(), text(), 0..4)
}

/// Any of the address kinds: only a socket address is read.
fn address() -> BoxedStrategy<core::Address> {
    let kind = prop_oneof![
        3 => (text(), any::<u32>()).prop_map(|(address, port)| {
            AddressKind::SocketAddress(core::SocketAddress {
                address,
                port_specifier: Some(core::socket_address::PortSpecifier::PortValue(port)),
                ..Default::default()
            })
        }),
        1 => text().prop_map(|path| AddressKind::Pipe(core::Pipe { path, mode: 0o600 })),
        1 => text().prop_map(|endpoint_id| {
            AddressKind::EnvoyInternalAddress(core::EnvoyInternalAddress {
                endpoint_id,
                address_name_specifier: None,
            })
        }),
    ];
    option::weighted(0.9, kind)
        .prop_map(|address| core::Address { address })
        .boxed()
}

fn peer() -> BoxedStrategy<full::Peer> {
    let address = option::weighted(0.9, address());
    (address, text(), pairs(), text(), text())
        .prop_map(
            |(address, service, labels, principal, certificate)| full::Peer {
                address,
                service,
                labels,
                principal,
                certificate,
            },
        )
        .boxed()
}

/// `encode_raw_headers`: a value in `value` or in `raw_value`, which may be any bytes.
fn header_map() -> BoxedStrategy<core::HeaderMap> {
    let header = (text(), text(), raw()).prop_map(|(key, value, raw_value)| core::HeaderValue {
        key,
        value,
        raw_value,
    });
    vec(header, 0..4)
        .prop_map(|headers| core::HeaderMap { headers })
        .boxed()
}

fn http() -> BoxedStrategy<full::HttpRequest> {
    let line = (
        text(),
        text(),
        text(),
        text(),
        text(),
        text(),
        text(),
        text(),
    );
    let rest = (
        pairs(),
        any::<i64>(),
        text(),
        raw(),
        option::of(header_map()),
    );
    (line, rest)
        .prop_map(
            |(
                (id, method, path, host, scheme, query, fragment, protocol),
                (headers, size, body, raw_body, header_map),
            )| full::HttpRequest {
                id,
                method,
                headers,
                path,
                host,
                scheme,
                query,
                fragment,
                size,
                protocol,
                body,
                raw_body,
                header_map,
            },
        )
        .boxed()
}

fn metadata() -> BoxedStrategy<core::Metadata> {
    use prost_types::value::Kind;
    hash_map(text(), text(), 0..3)
        .prop_map(|values| core::Metadata {
            filter_metadata: (values.into_iter())
                .map(|(filter, value)| {
                    let value = prost_types::Value {
                        kind: Some(Kind::StringValue(value)),
                    };
                    let fields = [("value".to_owned(), value)].into();
                    (filter, prost_types::Struct { fields })
                })
                .collect(),
            typed_filter_metadata: HashMap::new(),
        })
        .boxed()
}

/// A `CheckRequest` as Envoy may send it, the attributes the gate skips filled too.
fn full_check() -> BoxedStrategy<auth::CheckRequest> {
    let time = (any::<i64>(), 0..1_000_000_000)
        .prop_map(|(seconds, nanos)| prost_types::Timestamp { seconds, nanos });
    let request = (option::of(time), option::weighted(0.9, http()))
        .prop_map(|(time, http)| full::Request { time, http });
    let mode = option::of(prop_oneof![
        Just("api".to_owned()),
        Just("public".to_owned()),
        Just("skip".to_owned()),
        text(),
    ]);
    let attributes = (
        (option::weighted(0.9, peer()), option::of(peer())),
        option::weighted(0.9, request),
        (pairs(), mode),
        (
            option::of(metadata()),
            option::of(text()),
            option::of(metadata()),
        ),
    )
        .prop_map(
            |((source, destination), request, (mut context_extensions, mode), other)| {
                if let Some(mode) = mode {
                    context_extensions.insert(RouteMode::CONTEXT_KEY.to_owned(), mode);
                }
                let (metadata_context, sni, route_metadata_context) = other;
                auth::AttributeContext {
                    source,
                    destination,
                    request,
                    context_extensions,
                    metadata_context,
                    tls_session: sni.map(|sni| full::TlsSession { sni }),
                    route_metadata_context,
                }
            },
        );
    option::weighted(0.95, attributes)
        .prop_map(|attributes| auth::CheckRequest { attributes })
        .boxed()
}

/// What the trimmed decoder must make of `check`, from the full message's fields.
fn trimmed(check: &auth::CheckRequest) -> CheckRequest {
    let bytes = |text: &str| Bytes::copy_from_slice(text.as_bytes());
    // In the map's own order: prost encodes it in that order.
    let entries = |map: &HashMap<String, String>| {
        (map.iter())
            .map(|(key, value)| Entry {
                key: bytes(key),
                value: bytes(value),
            })
            .collect()
    };
    let http = |http: &full::HttpRequest| HttpRequest {
        method: bytes(&http.method),
        headers: entries(&http.headers),
        path: bytes(&http.path),
        body: bytes(&http.body),
        raw_body: Bytes::copy_from_slice(&http.raw_body),
        header_map: http.header_map.as_ref().map(|map| HeaderMap {
            headers: (map.headers.iter())
                .map(|header| HeaderValue {
                    key: bytes(&header.key),
                    value: bytes(&header.value),
                    raw_value: Bytes::copy_from_slice(&header.raw_value),
                })
                .collect(),
        }),
    };
    let peer = |peer: &full::Peer| Peer {
        address: peer.address.as_ref().map(|address| Address {
            socket_address: match &address.address {
                Some(AddressKind::SocketAddress(socket)) => Some(SocketAddress {
                    address: bytes(&socket.address),
                }),
                _ => None,
            },
        }),
    };
    CheckRequest {
        attributes: check
            .attributes
            .as_ref()
            .map(|attributes| AttributeContext {
                source: attributes.source.as_ref().map(peer),
                request: (attributes.request.as_ref()).map(|request| AttributeRequest {
                    http: request.http.as_ref().map(http),
                }),
                context_extensions: entries(&attributes.context_extensions),
            }),
    }
}

/// What the full decoder must make of `check`: an error when a field that is a string in
/// Envoy's API is not UTF-8, for prost refuses the whole message then.
fn widened(check: &CheckRequest) -> Result<auth::CheckRequest, std::string::FromUtf8Error> {
    let text = |bytes: &Bytes| String::from_utf8(bytes.to_vec());
    // A key sent twice keeps its last value, as a map decoder does.
    let map = |entries: &[Entry]| {
        (entries.iter())
            .map(|entry| Ok((text(&entry.key)?, text(&entry.value)?)))
            .collect::<Result<HashMap<_, _>, _>>()
    };
    let http = |http: &HttpRequest| {
        Ok(full::HttpRequest {
            method: text(&http.method)?,
            headers: map(&http.headers)?,
            path: text(&http.path)?,
            body: text(&http.body)?,
            raw_body: http.raw_body.to_vec(),
            header_map: (http.header_map.as_ref())
                .map(|map| {
                    let headers = (map.headers.iter())
                        .map(|header| {
                            Ok(core::HeaderValue {
                                key: text(&header.key)?,
                                value: text(&header.value)?,
                                raw_value: header.raw_value.to_vec(),
                            })
                        })
                        .collect::<Result<_, _>>()?;
                    Ok(core::HeaderMap { headers })
                })
                .transpose()?,
            ..Default::default()
        })
    };
    let peer = |peer: &Peer| {
        let address = |address: &Address| {
            let socket = |socket: &SocketAddress| {
                Ok(AddressKind::SocketAddress(core::SocketAddress {
                    address: text(&socket.address)?,
                    ..Default::default()
                }))
            };
            Ok(core::Address {
                address: address.socket_address.as_ref().map(socket).transpose()?,
            })
        };
        Ok(full::Peer {
            address: peer.address.as_ref().map(address).transpose()?,
            ..Default::default()
        })
    };
    let attributes = |attributes: &AttributeContext| {
        let request = |request: &AttributeRequest| {
            Ok(full::Request {
                http: request.http.as_ref().map(http).transpose()?,
                ..Default::default()
            })
        };
        Ok(auth::AttributeContext {
            source: attributes.source.as_ref().map(peer).transpose()?,
            request: attributes.request.as_ref().map(request).transpose()?,
            context_extensions: map(&attributes.context_extensions)?,
            ..Default::default()
        })
    };
    Ok(auth::CheckRequest {
        attributes: check.attributes.as_ref().map(attributes).transpose()?,
    })
}

/// Bytes as the gate's own messages may carry them: mostly text, sometimes not UTF-8.
fn bytes() -> impl Strategy<Value = Bytes> {
    prop_oneof![6 => text().prop_map(Bytes::from), 1 => raw().prop_map(Bytes::from)]
}

fn entries() -> impl Strategy<Value = Vec<Entry>> {
    vec((bytes(), bytes()), 0..4).prop_map(|pairs| {
        (pairs.into_iter())
            .map(|(key, value)| Entry { key, value })
            .collect()
    })
}

/// Any message the trimmed structs can hold.
fn trimmed_check() -> BoxedStrategy<CheckRequest> {
    let header = (bytes(), bytes(), bytes()).prop_map(|(key, value, raw_value)| HeaderValue {
        key,
        value,
        raw_value,
    });
    let header_map = vec(header, 0..4).prop_map(|headers| HeaderMap { headers });
    let http = (
        (bytes(), entries(), bytes()),
        (bytes(), bytes(), option::of(header_map)),
    )
        .prop_map(
            |((method, headers, path), (body, raw_body, header_map))| HttpRequest {
                method,
                headers,
                path,
                body,
                raw_body,
                header_map,
            },
        );
    let socket = bytes().prop_map(|address| SocketAddress { address });
    let address =
        option::weighted(0.9, socket).prop_map(|socket_address| Address { socket_address });
    let peer = option::weighted(0.9, address).prop_map(|address| Peer { address });
    let request = option::weighted(0.9, http).prop_map(|http| AttributeRequest { http });
    let attributes = (
        option::weighted(0.9, peer),
        option::weighted(0.9, request),
        entries(),
    )
        .prop_map(|(source, request, context_extensions)| AttributeContext {
            source,
            request,
            context_extensions,
        });
    option::weighted(0.9, attributes)
        .prop_map(|attributes| CheckRequest { attributes })
        .boxed()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    /// What Envoy sends, through the gate's decoder: every field the gate reads as the full
    /// message has it, the rest skipped; and `parse` reads method, source, route mode and
    /// body as they are in the full message.
    #[test]
    fn the_trimmed_decoder_reads_what_the_full_message_carries(check in full_check()) {
        let decoded = CheckRequest::decode(check.encode_to_vec().as_slice()).unwrap();
        prop_assert_eq!(&decoded, &trimmed(&check));

        let attributes = check.attributes.unwrap_or_default();
        let http = (attributes.request.and_then(|request| request.http))
            .filter(|http| !http.method.is_empty() || !http.path.is_empty());
        let Some(http) = http else {
            prop_assert_eq!(parse(decoded).unwrap_err(), ParseError::NoHttpRequest);
            return Ok(());
        };
        let request = parse(decoded).unwrap();
        prop_assert_eq!(&*request.method, http.method.as_str());
        let source = match attributes.source.and_then(|peer| peer.address?.address) {
            Some(AddressKind::SocketAddress(socket)) => socket.address.parse().ok(),
            _ => None,
        };
        prop_assert_eq!(request.source, source);
        let mode = (attributes.context_extensions.get(RouteMode::CONTEXT_KEY))
            .map(|value| RouteMode::parse(value).ok_or_else(|| value.clone()));
        prop_assert_eq!(request.mode, mode);
        let body = match (http.raw_body, http.body) {
            (raw, _) if !raw.is_empty() => raw,
            (_, body) => body.into_bytes(),
        };
        prop_assert_eq!(request.body.map(|body| body.bytes.to_vec()), Some(body).filter(|b| !b.is_empty()));
    }

    /// The other way: what the trimmed structs hold reads the same with the full decoder,
    /// which refuses the whole message for a string field that is not UTF-8 (the gate
    /// reads it, and `parse` answers it).
    #[test]
    fn the_full_decoder_reads_what_the_trimmed_message_carries(check in trimmed_check()) {
        let decoded = auth::CheckRequest::decode(check.encode_to_vec().as_slice());
        prop_assert_eq!(decoded.ok(), widened(&check).ok());
    }
}
