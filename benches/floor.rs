//! The floor: the same protos and tonic server settings as the gate, answering every Check
//! with a constant allow. Every load figure in BENCHMARKS.md is reported as a ratio to this
//! server measured in the same run, so the numbers say how close the gate is to what tonic
//! itself can do on this core, not how fast this particular machine is.
//!
//! `floor --listen 127.0.0.1:PORT` (scripts/bench.sh runs it under `taskset -c 0`). Run by
//! `cargo bench` without `--listen`, it only says how to use it and exits.

use std::net::SocketAddr;

use redmine_authz::envoy::proto::envoy::service::auth::v3::authorization_server::{
    Authorization, AuthorizationServer,
};
use redmine_authz::envoy::proto::envoy::service::auth::v3::{
    check_response::HttpResponse, CheckRequest, CheckResponse, OkHttpResponse,
};
use redmine_authz::envoy::proto::google::rpc::Status as RpcStatus;
use tonic::{Request, Response, Status};

// The gate's allocator too: the floor differs from the gate only by the work of deciding.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

struct AlwaysAllow;

#[tonic::async_trait]
impl Authorization for AlwaysAllow {
    async fn check(&self, _: Request<CheckRequest>) -> Result<Response<CheckResponse>, Status> {
        Ok(Response::new(CheckResponse {
            status: Some(RpcStatus {
                code: 0,
                ..Default::default()
            }),
            http_response: Some(HttpResponse::OkResponse(OkHttpResponse::default())),
            ..Default::default()
        }))
    }
}

// The same runtime as the gate's `main`.
fn main() -> Result<(), Box<dyn std::error::Error>> {
    redmine_authz::runtime::for_allowed_cores()?.block_on(serve())
}

async fn serve() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let mut listen: Option<SocketAddr> = None;
    while let Some(arg) = args.next() {
        if arg == "--listen" {
            listen = Some(args.next().ok_or("--listen needs an address")?.parse()?);
        }
    }
    let Some(listen) = listen else {
        eprintln!("floor: the constant-allow baseline server; run with --listen ADDR (see scripts/bench.sh)");
        return Ok(());
    };
    tonic::transport::Server::builder()
        .add_service(AuthorizationServer::new(AlwaysAllow))
        .serve(listen)
        .await?;
    Ok(())
}
