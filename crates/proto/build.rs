//! Compiles every contract under `proto/` into Rust with a vendored `protoc`,
//! so building Bowtie needs no system package, and writes the descriptor set
//! that the servers publish through gRPC reflection.

use std::path::PathBuf;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../proto");
    let protos = [
        "bowtie/common/v1/common.proto",
        "bowtie/accounts/v1/accounts.proto",
        // Only for the descriptor set, so reflection clients such as grpcurl
        // can decode the google.rpc.BadRequest details of INVALID_ARGUMENT.
        "google/rpc/error_details.proto",
    ];
    let out_dir = PathBuf::from(std::env::var("OUT_DIR")?);

    let mut config = prost_build::Config::new();
    config.protoc_executable(protoc_bin_vendored::protoc_bin_path()?);
    config.enable_type_names();
    config.type_name_domain(["."], "type.googleapis.com");

    tonic_prost_build::configure()
        .file_descriptor_set_path(out_dir.join("bowtie_descriptor.bin"))
        .compile_with_config(
            config,
            &protos.map(|p| root.join(p)),
            &[root.clone(), protoc_bin_vendored::include_path()?],
        )?;
    println!("cargo:rerun-if-changed={}", root.display());
    Ok(())
}
