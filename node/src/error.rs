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
    /// A governor's safety action sets a desired value that no connector carries to a
    /// twin the node's connectors serve, and the config does not say it is actuated
    /// elsewhere: the trip would be decided and never reach the machine.
    #[error(
        "twin type `{twin_type}`: safety action `{action}` of governor `{governor}` sets desired value `{desired}`, which no connector carries to `{asset}`; map it to the machine (an OPC UA write or method, MQTT `…/cmd`, Sparkplug) or, if something else actuates it, say so under [[actuation.elsewhere]] (type = \"{twin_type}\", desired = \"{desired}\", by = \"…\")"
    )]
    UnactuatedSafety {
        /// The twin type.
        twin_type: String,
        /// The governor.
        governor: String,
        /// The command its safety action runs.
        action: String,
        /// The desired value that does not reach the machine.
        desired: String,
        /// The first twin it does not reach.
        asset: doppel_runtime::AssetPath,
    },
    /// An `[[actuation.elsewhere]]` entry names a type or desired value that does not
    /// exist.
    #[error("[[actuation.elsewhere]]: twin type `{twin_type}` has no desired value `{desired}`")]
    UnknownElsewhere {
        /// The twin type.
        twin_type: String,
        /// The desired value.
        desired: String,
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
