//! Compiles every contract under `proto/` into Rust with a vendored `protoc`,
//! so building Bowtie needs no system package, and writes the descriptor set
//! that the servers publish through gRPC reflection.

use std::path::PathBuf;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../proto");
    // Every contract under proto/bowtie, plus google.rpc's error details: only
    // for the descriptor set, so reflection clients such as grpcurl can decode
    // the google.rpc.BadRequest details of INVALID_ARGUMENT.
    let mut protos = vec![root.join("google/rpc/error_details.proto")];
    collect_protos(&root.join("bowtie"), &mut protos)?;
    protos.sort();
    let out_dir = PathBuf::from(std::env::var("OUT_DIR")?);

    let mut config = prost_build::Config::new();
    config.protoc_executable(protoc_bin_vendored::protoc_bin_path()?);
    config.enable_type_names();
    config.type_name_domain(["."], "type.googleapis.com");

    tonic_prost_build::configure()
        .file_descriptor_set_path(out_dir.join("bowtie_descriptor.bin"))
        .compile_with_config(
            config,
            &protos,
            &[root.clone(), protoc_bin_vendored::include_path()?],
        )?;
    println!("cargo:rerun-if-changed={}", root.display());
    Ok(())
}

/// Every `.proto` file under `dir`, recursively.
fn collect_protos(dir: &std::path::Path, out: &mut Vec<PathBuf>) -> std::io::Result<()> {
    for entry in std::fs::read_dir(dir)? {
        let path = entry?.path();
        if path.is_dir() {
            collect_protos(&path, out)?;
        } else if path.extension().is_some_and(|e| e == "proto") {
            out.push(path);
        }
    }
    Ok(())
}
