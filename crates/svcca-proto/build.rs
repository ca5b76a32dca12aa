//! Generates the gRPC code from `proto/svcca.proto` at build time.
//!
//! A fresh machine must build without a system `protoc`: the compiler comes from
//! `protoc-bin-vendored` unless `PROTOC` is set (packagers may point it at their own). The path is
//! handed to prost's config rather than exported, because `set_var` is `unsafe` in edition 2024.

use std::path::PathBuf;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let proto_dir = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR")?).join("../../proto");
    let proto_file = proto_dir.join("svcca.proto");
    println!("cargo:rerun-if-changed={}", proto_file.display());
    println!("cargo:rerun-if-env-changed=PROTOC");

    let mut config = tonic_prost_build::Config::new();
    let protoc = match std::env::var_os("PROTOC") {
        Some(path) => PathBuf::from(path),
        None => protoc_bin_vendored::protoc_bin_path()?,
    };
    config.protoc_executable(protoc);

    tonic_prost_build::configure()
        .build_client(true)
        .build_server(true)
        .compile_with_config(config, &[proto_file], &[proto_dir])?;
    Ok(())
}
