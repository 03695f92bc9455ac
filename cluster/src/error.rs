//! The crate's error type.

use std::net::SocketAddr;
use std::path::PathBuf;

use doppel_runtime::journal::StoreError;

use crate::placement::Conflict;
use crate::planner::PlannerConfigError;

/// Why a cluster node or one of its parts failed.
#[derive(Debug, thiserror::Error)]
pub enum ClusterError {
    /// A key of the `[cluster]` table has a value the node cannot run with.
    #[error("{key}: {problem}")]
    Config {
        /// The key, e.g. `cluster.owns`.
        key: &'static str,
        /// What is wrong with it.
        problem: String,
    },
    /// A fleet planner's table is invalid.
    #[error("{table}: {source}")]
    Planner {
        /// The table, e.g. `[cluster.planners.energy]`.
        table: &'static str,
        /// What is wrong with it.
        source: PlannerConfigError,
    },
    /// Another live edge node owns some of this node's plants or lines.
    #[error("ownership conflict: {}", .0.message)]
    Conflict(Conflict),
    /// An address could not be bound.
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// Why.
        source: std::io::Error,
    },
    /// A file or directory could not be read or created.
    #[error("cannot read {path}: {source}")]
    ReadFile {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// TLS or channel setup between nodes failed.
    #[error("cluster transport: {0}")]
    Transport(#[source] tonic::transport::Error),
    /// Membership (gossip) did not start.
    #[error("membership: {0}")]
    Membership(#[source] Box<dyn std::error::Error + Send + Sync>),
    /// The mirror store's database failed.
    #[error("mirror store: {0}")]
    Store(#[from] StoreError),
    /// A newer replication stream of the same edge node took over this one.
    #[error("replaced by a newer stream of edge node `{node}`")]
    StreamReplaced {
        /// The edge node.
        node: String,
    },
    /// A thread could not be started.
    #[error("cannot start thread {name}: {source}")]
    Thread {
        /// The thread's name.
        name: &'static str,
        /// Why.
        source: std::io::Error,
    },
    /// The public API failed to start.
    #[error(transparent)]
    Api(#[from] doppel_api::ApiError),
    /// The kernel refused.
    #[error(transparent)]
    Kernel(#[from] doppel_runtime::Error),
}

impl From<redb::Error> for ClusterError {
    fn from(error: redb::Error) -> Self {
        ClusterError::Store(StoreError::from(error))
    }
}
