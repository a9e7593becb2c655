//! The part of Envoy's `CheckRequest` the gate reads, as the gate's server decodes it.
//!
//! Wire-compatible with `envoy.service.auth.v3.CheckRequest` (`proto/`): the same field
//! numbers, with each `map<string, string>` as what it is on the wire, a repeated key/value
//! entry. The tests below hold the tags to the descriptors compiled from `proto/`. prost skips every field not declared here (the destination, metadata, TLS and
//! timing attributes) instead of decoding it, and a `bytes` field is a slice of the received
//! frame, not a copy: a header or a body costs no allocation until the gate reads it. UTF-8 is
//! checked in `parse`, for the fields the gate uses. The server's codec ([`CheckCodec`]) turns
//! a message it cannot read into a [`Check`] too, so that it is denied, not an RPC error.

use prost::bytes::{Buf as _, Bytes};
use prost::Message as _;
use tonic::codec::{Codec, DecodeBuf, Decoder};
use tonic::Status;

use super::Answer;

#[derive(Clone, PartialEq, prost::Message)]
pub struct CheckRequest {
    #[prost(message, optional, tag = "1")]
    pub attributes: Option<AttributeContext>,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct AttributeContext {
    #[prost(message, optional, tag = "1")]
    pub source: Option<Peer>,
    #[prost(message, optional, tag = "4")]
    pub request: Option<AttributeRequest>,
    /// `map<string, string> context_extensions`.
    #[prost(message, repeated, tag = "10")]
    pub context_extensions: Vec<Entry>,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct Peer {
    #[prost(message, optional, tag = "1")]
    pub address: Option<Address>,
}

/// `envoy.config.core.v3.Address`: of its `oneof`, only the socket address has an IP.
#[derive(Clone, PartialEq, prost::Message)]
pub struct Address {
    #[prost(message, optional, tag = "1")]
    pub socket_address: Option<SocketAddress>,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct SocketAddress {
    #[prost(bytes = "bytes", tag = "2")]
    pub address: Bytes,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct AttributeRequest {
    #[prost(message, optional, tag = "2")]
    pub http: Option<HttpRequest>,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct HttpRequest {
    #[prost(bytes = "bytes", tag = "2")]
    pub method: Bytes,
    /// `map<string, string> headers`: Envoy's default form.
    #[prost(message, repeated, tag = "3")]
    pub headers: Vec<Entry>,
    #[prost(bytes = "bytes", tag = "4")]
    pub path: Bytes,
    /// `string body`: the body Envoy buffered (`with_request_body`) without `pack_as_bytes`,
    /// where Envoy replaced bytes that are not UTF-8. Read as bytes: the same wire type.
    #[prost(bytes = "bytes", tag = "11")]
    pub body: Bytes,
    /// `bytes raw_body`: the body as the client sent it (`pack_as_bytes: true`).
    #[prost(bytes = "bytes", tag = "12")]
    pub raw_body: Bytes,
    /// The raw form, with `encode_raw_headers`.
    #[prost(message, optional, tag = "13")]
    pub header_map: Option<HeaderMap>,
}

/// One entry of a `map<string, string>`. A key sent twice stays twice (for `headers`, a
/// repeated header, as `header_map` has them; a map decoder would keep the last); Envoy
/// sends each key once.
#[derive(Clone, PartialEq, prost::Message)]
pub struct Entry {
    #[prost(bytes = "bytes", tag = "1")]
    pub key: Bytes,
    #[prost(bytes = "bytes", tag = "2")]
    pub value: Bytes,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct HeaderMap {
    #[prost(message, repeated, tag = "1")]
    pub headers: Vec<HeaderValue>,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct HeaderValue {
    #[prost(bytes = "bytes", tag = "1")]
    pub key: Bytes,
    #[prost(bytes = "bytes", tag = "2")]
    pub value: Bytes,
    #[prost(bytes = "bytes", tag = "3")]
    pub raw_value: Bytes,
}

/// The largest Check message the gate reads: tonic's own default. A larger one (a request
/// body Envoy forwards under `with_request_body`) is skipped as it arrives
/// (`envoy::limit`) and denied 413, never buffered and never an RPC error.
pub const MAX_CHECK_BYTES: usize = 4 * 1024 * 1024;

/// What the gate's server makes of one Check message. Every one is answered with a
/// CheckResponse: an RPC error would be an allow to a fail-open Envoy.
// Not boxed: a Check is moved once, from the codec to the handler, and a box would be an
// allocation on every one.
#[allow(clippy::large_enum_variant)]
#[derive(Debug)]
pub enum Check {
    Request(CheckRequest),
    /// Not a protobuf message the gate's decoder can read.
    Malformed(prost::DecodeError),
    /// Over [`MAX_CHECK_BYTES`].
    TooLarge,
}

/// Stands in for a message over [`MAX_CHECK_BYTES`] (`envoy::limit`): field 536870911
/// (the largest field number), varint 1, which Envoy's `CheckRequest` does not have. A
/// client that sends it itself is denied as if its message had been too large.
pub const TOO_LARGE: [u8; 6] = [0xf8, 0xff, 0xff, 0xff, 0x0f, 0x01];

/// The gate's codec for Check: decodes [`Check`] and never fails, encodes [`Answer`].
#[derive(Debug, Default, Clone, Copy)]
pub struct CheckCodec;

impl Codec for CheckCodec {
    type Encode = Answer;
    type Decode = Check;
    type Encoder = tonic_prost::ProstEncoder<Answer>;
    type Decoder = CheckDecoder;

    fn encoder(&mut self) -> Self::Encoder {
        tonic_prost::ProstEncoder::default()
    }

    fn decoder(&mut self) -> Self::Decoder {
        CheckDecoder
    }
}

#[derive(Debug, Default, Clone, Copy)]
pub struct CheckDecoder;

impl Decoder for CheckDecoder {
    type Item = Check;
    type Error = Status;

    fn decode(&mut self, buf: &mut DecodeBuf<'_>) -> Result<Option<Check>, Status> {
        if buf.remaining() == TOO_LARGE.len() && buf.chunk() == TOO_LARGE {
            buf.advance(TOO_LARGE.len());
            return Ok(Some(Check::TooLarge));
        }
        Ok(Some(match CheckRequest::decode(&mut *buf) {
            Ok(request) => Check::Request(request),
            Err(error) => {
                // tonic reads the next message where this one's decoding stopped.
                buf.advance(buf.remaining());
                Check::Malformed(error)
            }
        }))
    }
}

/// The gate's server for `envoy.service.auth.v3.Authorization`, generated by `build.rs` with
/// [`Check`] above as its input, [`super::Answer`] as its output and [`CheckCodec`]; the
/// server runs it as [`super::CheckServer`].
pub mod server {
    #![allow(clippy::all, missing_docs)]
    include!(concat!(
        env!("OUT_DIR"),
        "/gate/envoy.service.auth.v3.Authorization.rs"
    ));
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use prost::encoding::{decode_key, decode_varint, WireType};
    use prost_types::field_descriptor_proto::{Label, Type};
    use prost_types::{DescriptorProto, FileDescriptorSet};

    use super::*;
    use crate::envoy::proto::FILE_DESCRIPTOR_SET;

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
    /// the structs above is not left out of the check.
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

    /// The hand-typed tags above against the descriptors `build.rs` compiles from `proto/`: a
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
}
