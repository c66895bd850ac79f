//! Generates the gRPC service and messages from `proto/` with a vendored `protoc`, so a
//! fresh machine needs no system protobuf compiler, and writes the encoded file
//! descriptor set that server reflection serves.

use std::path::PathBuf;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let protos = ["proto/calloutcome/v1/call_outcome.proto"];
    let out_dir = PathBuf::from(std::env::var("OUT_DIR")?);

    let mut config = prost_build::Config::new();
    config.protoc_executable(protoc_bin_vendored::protoc_bin_path()?);
    // The vendored include path provides google/protobuf/*.proto for well-known types.
    let wkt_include = protoc_bin_vendored::include_path()?;

    tonic_prost_build::configure()
        .file_descriptor_set_path(out_dir.join("calloutcome_v1_descriptor.bin"))
        .compile_with_config(
            config,
            &protos.map(PathBuf::from),
            &[PathBuf::from("proto"), wkt_include],
        )?;
    for proto in protos {
        println!("cargo:rerun-if-changed={proto}");
    }
    Ok(())
}
