//! The crate's error type, and how kernel errors become gRPC statuses.

use std::net::SocketAddr;
use std::path::PathBuf;

use doppel_runtime::Error as KernelError;
use tonic::Status;

/// Why the API could not start.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// The configuration is invalid.
    #[error("api config: {0}")]
    Config(String),
    /// The listen address could not be bound.
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// Why.
        source: std::io::Error,
    },
    /// A certificate or key file could not be read.
    #[error("cannot read {path}: {source}")]
    ReadFile {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The transport (TLS setup, reflection) could not be built.
    #[error("api transport: {0}")]
    Transport(String),
}

/// A status for a request field that is not acceptable, naming the field.
pub(crate) fn invalid(field: &str, problem: impl std::fmt::Display) -> Status {
    Status::invalid_argument(format!("{field}: {problem}"))
}

/// The trailer that tells a client when to retry (gRPC server pushback).
pub(crate) const RETRY_PUSHBACK: &str = "grpc-retry-pushback-ms";

/// The retry hint for a twin that is starting, in milliseconds.
const STARTING_RETRY_MS: u32 = 500;

/// The gRPC status of a kernel error.
pub(crate) fn kernel_status(error: KernelError) -> Status {
    match error {
        KernelError::UnknownAsset(_)
        | KernelError::UnknownChannel { .. }
        | KernelError::UnknownCommand { .. } => Status::not_found(error.to_string()),
        KernelError::InvalidParam { .. } => invalid("params", error),
        KernelError::SampleRejected { .. } => Status::invalid_argument(error.to_string()),
        KernelError::Unavailable(_) | KernelError::ShuttingDown => {
            Status::unavailable(error.to_string())
        }
        KernelError::Starting(_) => {
            let mut status = Status::unavailable(error.to_string());
            // gRPC's server pushback (gRFC A6): when a retrying client may try again.
            status.metadata_mut().insert(
                RETRY_PUSHBACK,
                tonic::metadata::MetadataValue::from(STARTING_RETRY_MS),
            );
            status
        }
        KernelError::AlarmRefused {
            refusal: doppel_runtime::twin::AlarmRefusal::Unknown(_),
            ..
        }
        | KernelError::UnknownSafetyAction { .. } => Status::not_found(error.to_string()),
        KernelError::Fenced { .. } | KernelError::AlarmRefused { .. } => {
            Status::failed_precondition(error.to_string())
        }
        KernelError::Registry(ref registry) => {
            use doppel_runtime::model::registry::RegistryError;
            match registry {
                RegistryError::UnknownPackage { .. } | RegistryError::UnknownDeployment(_) => {
                    Status::not_found(error.to_string())
                }
                RegistryError::Package(_) | RegistryError::Refused(_) => {
                    Status::invalid_argument(error.to_string())
                }
                RegistryError::Conflict { .. } => Status::already_exists(error.to_string()),
                RegistryError::Store(_) => {
                    tracing::error!(%error, "request failed in the model registry");
                    Status::internal(error.to_string())
                }
            }
        }
        KernelError::Journal(_) | KernelError::Config(_) => {
            tracing::error!(%error, "request failed in the kernel");
            Status::internal(error.to_string())
        }
    }
}

#[cfg(test)]
mod tests {
    use doppel_runtime::AssetPath;
    use doppel_runtime::journal::StoreError;
    use tonic::Code;

    use super::*;

    #[test]
    fn kernel_errors_map_to_codes() {
        let asset = AssetPath::parse("a/b").unwrap();
        let cases = [
            (KernelError::UnknownAsset(asset.clone()), Code::NotFound),
            (
                KernelError::UnknownChannel {
                    asset: asset.clone(),
                    channel: "x".into(),
                },
                Code::NotFound,
            ),
            (
                KernelError::UnknownCommand {
                    asset: asset.clone(),
                    command: "x".into(),
                },
                Code::NotFound,
            ),
            (
                KernelError::InvalidParam {
                    command: "c".into(),
                    param: "p".into(),
                    problem: "missing".into(),
                },
                Code::InvalidArgument,
            ),
            (KernelError::Starting(asset.clone()), Code::Unavailable),
            (KernelError::Unavailable(asset), Code::Unavailable),
            (KernelError::ShuttingDown, Code::Unavailable),
            (
                KernelError::Journal(StoreError::FrameMisplaced),
                Code::Internal,
            ),
        ];
        for (error, code) in cases {
            assert_eq!(kernel_status(error).code(), code);
        }
        let status = kernel_status(KernelError::InvalidParam {
            command: "set_speed".into(),
            param: "rpm".into(),
            problem: "missing".into(),
        });
        assert!(status.message().starts_with("params: "), "{status:?}");
    }
}
