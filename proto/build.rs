//! Generates the myelin.v1 types and a file descriptor set (served by gRPC reflection).
//! protoc comes from the `protoc-bin-vendored` crate unless PROTOC is set, so a fresh machine
//! needs no system protoc.
fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut config = prost_build::Config::new();
    let protoc = match std::env::var_os("PROTOC") {
        Some(path) => std::path::PathBuf::from(path),
        None => protoc_bin_vendored::protoc_bin_path()?,
    };
    config.protoc_executable(protoc);
    let out_dir = std::path::PathBuf::from(std::env::var("OUT_DIR")?);
    tonic_prost_build::configure().file_descriptor_set_path(out_dir.join("myelin_descriptor.bin")).compile_with_config(
        config,
        &["myelin/v1/myelin.proto"],
        &["."],
    )?;
    println!("cargo:rerun-if-changed=myelin/v1/myelin.proto");
    Ok(())
}
