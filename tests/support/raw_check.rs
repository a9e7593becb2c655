//! A client for `Authorization/Check` that sends the request as the bytes given: an encoded
//! `CheckRequest` (the load generator encodes each once) or anything else (what a client
//! other than Envoy may send).

use bytes::{BufMut as _, Bytes};
use prost::Message as _;
use redmine_authz::envoy::proto::envoy::service::auth::v3::CheckResponse;
use tonic::client::Grpc;
use tonic::codec::{BufferSettings, Codec, DecodeBuf, Decoder, EncodeBuf, Encoder};
use tonic::codegen::http::uri::PathAndQuery;
use tonic::transport::Channel;
use tonic::Status;

const CHECK: &str = "/envoy.service.auth.v3.Authorization/Check";

/// One Check: what the generated `AuthorizationClient::check` does, with the request as bytes.
pub async fn check(client: &mut Grpc<Channel>, request: Bytes) -> Result<CheckResponse, Status> {
    client
        .ready()
        .await
        .map_err(|e| Status::unavailable(e.to_string()))?;
    client
        .unary(
            tonic::Request::new(request),
            PathAndQuery::from_static(CHECK),
            RawCheck,
        )
        .await
        .map(tonic::Response::into_inner)
}

/// Sends bytes as they are, decodes `CheckResponse`s.
#[derive(Clone, Copy, Default)]
struct RawCheck;

impl Codec for RawCheck {
    type Encode = Bytes;
    type Decode = CheckResponse;
    type Encoder = RawCheck;
    type Decoder = RawCheck;

    fn encoder(&mut self) -> Self::Encoder {
        *self
    }

    fn decoder(&mut self) -> Self::Decoder {
        *self
    }
}

// A Check is a few hundred bytes; tonic's default 8 KiB buffer is allocated per call.
fn buffer_settings() -> BufferSettings {
    BufferSettings::new(1024, 32 * 1024)
}

impl Encoder for RawCheck {
    type Item = Bytes;
    type Error = Status;

    fn encode(&mut self, item: Bytes, dst: &mut EncodeBuf<'_>) -> Result<(), Status> {
        dst.put(item);
        Ok(())
    }

    fn buffer_settings(&self) -> BufferSettings {
        buffer_settings()
    }
}

impl Decoder for RawCheck {
    type Item = CheckResponse;
    type Error = Status;

    fn decode(&mut self, src: &mut DecodeBuf<'_>) -> Result<Option<CheckResponse>, Status> {
        CheckResponse::decode(src)
            .map(Some)
            .map_err(|e| Status::internal(e.to_string()))
    }

    fn buffer_settings(&self) -> BufferSettings {
        buffer_settings()
    }
}
