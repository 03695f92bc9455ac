//! Doppel's public gRPC service: `doppel.v1.TwinService` over a node's twins.
