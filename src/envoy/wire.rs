//! The part of Envoy's `CheckRequest` the gate reads, as the gate's server decodes it.
//!
//! Wire-compatible with `envoy.service.auth.v3.CheckRequest` (`proto/`): the same field
//! numbers, with each `map<string, string>` as what it is on the wire, a repeated key/value
//! entry; the tests (`wire/tests.rs`) hold these tags to the descriptors compiled from
//! `proto/`. prost skips every field not declared here (the destination, metadata, TLS and
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
mod tests;
