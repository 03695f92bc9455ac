//! Doppel's public gRPC API, package `doppel.v1`, generated from the protos shipped in
//! this crate (`doppel/v1/twin.proto`) so any language can generate a client.

/// The `doppel.v1` package: messages, the `TwinService` client and server.
#[allow(missing_docs, clippy::all, clippy::pedantic)]
pub mod v1 {
    tonic::include_proto!("doppel.v1");
}

/// The encoded file descriptor set of every Doppel proto, for server reflection.
pub const FILE_DESCRIPTOR_SET: &[u8] =
    include_bytes!(concat!(env!("OUT_DIR"), "/doppel_descriptor.bin"));
