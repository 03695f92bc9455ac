//! Compiles `doppel/v1/*.proto` with protox (no system protoc) into prost messages and
//! tonic clients and servers, and writes the descriptor set for server reflection.

use prost::Message;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let files = [
        "doppel/v1/twin.proto",
        "doppel/v1/node.proto",
        "doppel/v1/status.proto",
        "doppel/v1/alarm.proto",
        "doppel/v1/model.proto",
        "doppel/v1/http.proto",
    ];
    for file in files {
        println!("cargo:rerun-if-changed={file}");
    }
    let descriptors = protox::compile(files, ["."])?;
    let out = std::path::PathBuf::from(std::env::var("OUT_DIR")?);
    std::fs::write(
        out.join("doppel_descriptor.bin"),
        descriptors.encode_to_vec(),
    )?;
    tonic_prost_build::configure()
        .build_client(true)
        .build_server(true)
        .compile_fds(descriptors)?;
    Ok(())
}
