//! The crate's error type.

use std::net::SocketAddr;
use std::path::PathBuf;

/// Why a cluster node or one of its parts failed.
#[derive(Debug, thiserror::Error)]
pub enum ClusterError {
    /// The `[cluster]` configuration is invalid.
    #[error("cluster config: {0}")]
    Config(String),
    /// Two edge nodes claim the same plant or line.
    #[error("ownership conflict: {0}")]
    Conflict(String),
    /// An address could not be bound.
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
    /// TLS or channel setup failed.
    #[error("cluster transport: {0}")]
    Transport(String),
    /// Membership (gossip) failed.
    #[error("membership: {0}")]
    Membership(String),
    /// The mirror store failed.
    #[error("mirror store: {0}")]
    Store(String),
    /// The node itself (runtime, connectors, API) failed to start.
    #[error(transparent)]
    Node(#[from] doppel_connectors::node::NodeError),
    /// The public API failed to start.
    #[error(transparent)]
    Api(#[from] doppel_api::ApiError),
    /// The kernel refused.
    #[error(transparent)]
    Kernel(#[from] doppel_runtime::Error),
}

impl From<doppel_runtime::journal::StoreError> for ClusterError {
    fn from(error: doppel_runtime::journal::StoreError) -> Self {
        ClusterError::Store(error.0)
    }
}

impl From<redb::Error> for ClusterError {
    fn from(error: redb::Error) -> Self {
        ClusterError::Store(error.to_string())
    }
}
