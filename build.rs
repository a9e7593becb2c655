//! Compiles the trimmed Envoy protos with a vendored `protoc`, so a fresh machine needs no
//! system protobuf compiler.

use std::path::PathBuf;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let protoc = protoc_bin_vendored::protoc_bin_path()?;
    let well_known = protoc_bin_vendored::include_path()?;
    // prost-build reads PROTOC; the build script is its own process, so this is contained.
    std::env::set_var("PROTOC", protoc);

    let out_dir = PathBuf::from(std::env::var("OUT_DIR")?);
    std::fs::create_dir_all(out_dir.join("gate"))?;
    let protos = [
        // Paths as PathBuf: the include list below must have the same type.
        "proto/envoy/service/auth/v3/external_auth.proto",
        "proto/envoy/service/auth/v3/attribute_context.proto",
        "proto/envoy/config/core/v3/base.proto",
        "proto/envoy/type/v3/http_status.proto",
        "proto/google/rpc/status.proto",
    ]
    .map(PathBuf::from);
    tonic_prost_build::configure()
        .build_client(true)
        .build_server(true)
        .file_descriptor_set_path(out_dir.join("authz_descriptor.bin"))
        .compile_protos(&protos, &[PathBuf::from("proto"), well_known])?;

    // The gate's own server for the same service: it decodes a `CheckRequest` into
    // `envoy::wire::CheckRequest`, only the fields it reads, and answers with an
    // `envoy::respond::Answer` (the generated server above stays for the floor benchmark and
    // the clients).
    let check = tonic_prost_build::manual::Method::builder()
        .name("check")
        .route_name("Check")
        // A CheckRequest, or why it could not be read: every Check gets a CheckResponse.
        .input_type("crate::envoy::wire::Check")
        // A CheckResponse, often encoded once and sent as bytes (`envoy::respond::Answer`).
        .output_type("crate::envoy::respond::Answer")
        .codec_path("crate::envoy::wire::CheckCodec")
        .build();
    let authorization = tonic_prost_build::manual::Service::builder()
        .name("Authorization")
        .package("envoy.service.auth.v3")
        .method(check)
        .build();
    tonic_prost_build::manual::Builder::new()
        .build_client(false)
        .out_dir(out_dir.join("gate"))
        .compile(&[authorization]);
    println!("cargo:rerun-if-changed=proto");
    Ok(())
}
