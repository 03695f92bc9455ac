//! Why a node could not start.

use std::path::PathBuf;

use doppel_api::ApiError;
use doppel_cluster::ClusterError;
use doppel_connectors::mqtt::MqttError;
use doppel_connectors::opcua::OpcUaError;

/// Why a node's config was refused or the node did not start.
#[derive(Debug, thiserror::Error)]
pub enum NodeError {
    /// The config file cannot be read.
    #[error("{path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The config file is not valid TOML or does not have a node config's shape.
    #[error(
        "{path}: {}{}",
        line.map(|line| format!("line {line}: ")).unwrap_or_default(),
        source.message()
    )]
    Parse {
        /// The file.
        path: PathBuf,
        /// The line the error starts on, when known.
        line: Option<usize>,
        /// What is wrong.
        source: Box<toml::de::Error>,
    },
    /// Two connectors of the file have the same name.
    #[error("two connectors are named `{name}`")]
    DuplicateConnector {
        /// The name.
        name: String,
    },
    /// Twin types or topology are invalid.
    #[error(transparent)]
    Config(#[from] doppel_runtime::ConfigError),
    /// The runtime did not start.
    #[error(transparent)]
    Runtime(#[from] doppel_actors::StartError),
    /// An MQTT connector's config is invalid or it did not start.
    #[error(transparent)]
    Mqtt(#[from] MqttError),
    /// An OPC UA connector's config is invalid or it did not start.
    #[error(transparent)]
    OpcUa(#[from] OpcUaError),
    /// The `[api]` table is invalid or the gRPC API did not start.
    #[error(transparent)]
    Api(#[from] ApiError),
    /// The `[cluster]` table is invalid or the node could not join its cluster.
    #[error(transparent)]
    Cluster(#[from] ClusterError),
}
