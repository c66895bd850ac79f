//! Generates the gRPC service and messages from `proto/` with a vendored `protoc`, so a
//! fresh machine needs no system protobuf compiler, and writes the encoded file
//! descriptor set that server reflection serves.
//!
//! Two passes: the messages and the server, whose codec answers an undecodable request
//! with INVALID_ARGUMENT (`src/api/layers/codec.rs`); then the client alone (into `client/`),
//! on the messages of the first pass and tonic's own codec.

use std::path::PathBuf;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let protos = ["proto/calloutcome/v1/call_outcome.proto"].map(PathBuf::from);
    let out_dir = PathBuf::from(std::env::var("OUT_DIR")?);
    // The vendored include path provides google/protobuf/*.proto for well-known types.
    let includes = [PathBuf::from("proto"), protoc_bin_vendored::include_path()?];
    let prost_config = || -> Result<prost_build::Config, Box<dyn std::error::Error>> {
        let mut config = prost_build::Config::new();
        config.protoc_executable(protoc_bin_vendored::protoc_bin_path()?);
        Ok(config)
    };

    tonic_prost_build::configure()
        .build_client(false)
        .codec_path("crate::api::layers::codec::RequestCodec")
        .file_descriptor_set_path(out_dir.join("calloutcome_v1_descriptor.bin"))
        .compile_with_config(prost_config()?, &protos, &includes)?;

    let client_dir = out_dir.join("client");
    std::fs::create_dir_all(&client_dir)?;
    tonic_prost_build::configure()
        .build_server(false)
        .extern_path(".calloutcome.v1", "crate::proto")
        .out_dir(&client_dir)
        .compile_with_config(prost_config()?, &protos, &includes)?;

    for proto in protos {
        println!("cargo:rerun-if-changed={}", proto.display());
    }
    Ok(())
}
