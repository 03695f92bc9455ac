//! A Doppel node from its config file: the runtime with the twins it hosts, the
//! connectors that feed them, the public gRPC API and, when the file has a `[cluster]`
//! table, the node's part in its cluster.
//!
//! [`NodeConfig`] reads the whole file once into one typed value; [`Node::start`]
//! checks that every safety action reaches the machine, then composes the crates below
//! it in order: the runtime; on a cluster node its cluster part (an edge claims its
//! plants; the API is served through the cluster's router, so calls for twins hosted
//! elsewhere are forwarded); then the connectors, so an edge whose claim fails never
//! reads from or actuates a machine; on a node of its own, the API last. All of them
//! start while the twins' actors do: a reading for a twin not running yet waits for
//! it, and a request for one is answered UNAVAILABLE with a retry hint.
//!
//! ```no_run
//! # async fn run() -> Result<(), doppel_node::NodeError> {
//! let node = doppel_node::Node::start_file("node.toml").await?;
//! println!("{} twins", node.twins().len());
//! node.stop().await;
//! # Ok(()) }
//! ```

#![forbid(unsafe_code)]

mod actuation;
mod config;
mod error;

use std::path::Path;
use std::time::Duration;

use doppel_actors::Runtime;
use doppel_api::{ApiHandle, ApiServer};
use doppel_cluster::config::covers;
use doppel_cluster::{Cluster, NodeRole};
use doppel_connectors::Reach;
use doppel_connectors::mqtt::MqttConnector;
use doppel_connectors::opcua::{OpcUaConnector, OpcUaHandle};
use doppel_runtime::twin::Twins;
use doppel_runtime::{AssetPath, Topology, TwinTypes};

pub use actuation::{ActuatedElsewhere, ActuationConfig, Unmapped};
pub use config::{NodeConfig, NodeSection};
pub use error::NodeError;

/// A running node: its runtime, connectors, API and cluster part.
pub struct Node {
    runtime: Runtime,
    mqtt: Vec<MqttConnector>,
    opcua: Vec<OpcUaHandle>,
    api: Option<ApiHandle>,
    cluster: Option<Cluster>,
}

impl Node {
    /// Reads a config file and starts the node it describes.
    pub async fn start_file(path: impl AsRef<Path>) -> Result<Self, NodeError> {
        Self::start(NodeConfig::from_file(path)?).await
    }

    /// Starts the node `config` describes. A node on its own hosts every machine of
    /// its plant file; a cluster edge node those under the plants or lines it owns; a
    /// cloud node none. On an error everything started so far is stopped again.
    pub async fn start(config: NodeConfig) -> Result<Self, NodeError> {
        let NodeConfig {
            node: section,
            mut settings,
            mut mqtt,
            opcua,
            mut api,
            cluster,
            actuation,
            models,
        } = config;
        settings.models = models;
        let edge = cluster.as_ref().map(|c| c.role == NodeRole::Edge);
        if let Some(edge) = edge {
            settings.replicate = edge;
        }
        // An edge reads the telemetry of what it owns: on a plant broker it shares with
        // other edges, theirs never reaches it.
        if let Some(cluster) = cluster.as_ref().filter(|c| c.role == NodeRole::Edge) {
            for connector in &mut mqtt {
                connector.uns.scope.clone_from(&cluster.owns);
            }
        }
        let hosts = |path: &AssetPath| match &cluster {
            None => true,
            Some(cluster) => {
                cluster.role == NodeRole::Edge && cluster.owns.iter().any(|own| covers(own, path))
            }
        };
        let types = TwinTypes::from_file(&section.types)?;
        let mut topology = match &section.plant {
            Some(plant) => Topology::from_file(plant, &types)?,
            None => Topology::default(),
        };
        topology.retain_machines(hosts);
        let builder = Runtime::builder();
        let mut reach = Reach::default();
        for connector in &mqtt {
            reach.merge(connector.reach());
        }
        for connector in &opcua {
            reach.merge(connector.reach());
        }
        let unmapped =
            actuation::check(&actuation, &types, &topology, builder.components(), &reach)?;
        for gap in &unmapped {
            tracing::warn!(
                twin_type = %gap.twin_type,
                command = %gap.command,
                desired = %gap.desired,
                asset = %gap.asset,
                twins = gap.twins,
                "no connector carries this command's desired value to the machine; the command changes the twin only"
            );
        }
        let runtime = builder
            .twin_types(types)
            .topology(topology)
            .data_dir(&section.data_dir)
            .settings(settings)
            .launch()
            .await?;
        let mut node = Node {
            runtime,
            mqtt: Vec::new(),
            opcua: Vec::new(),
            api: None,
            cluster: None,
        };
        let started = async {
            let twins = node.runtime.twins().clone();
            // A cluster edge claims its plants first: its connectors, which feed the
            // twins and carry their actuations to the machines, start only once no
            // other edge owns them.
            if let Some(cluster) = cluster {
                node.cluster = Some(
                    Cluster::start(cluster, twins.clone(), api.take(), &section.data_dir).await?,
                );
            }
            for config in mqtt {
                node.mqtt
                    .push(MqttConnector::start(config, twins.clone()).await?);
            }
            for config in opcua {
                node.opcua
                    .push(OpcUaConnector::start(config, twins.clone(), &section.data_dir).await?);
            }
            if let Some(api) = api {
                node.api = Some(ApiServer::start(api, twins).await?);
            }
            // Everything above serves while the twins start: readings wait for their
            // twin, requests for a twin not started yet are answered "starting".
            node.runtime.started().await?;
            Ok::<(), NodeError>(())
        }
        .await;
        match started {
            Ok(()) => Ok(node),
            Err(error) => {
                node.stop().await;
                Err(error)
            }
        }
    }

    /// The runtime.
    pub fn runtime(&self) -> &Runtime {
        &self.runtime
    }

    /// The twins this node hosts.
    pub fn twins(&self) -> &Twins {
        self.runtime.twins()
    }

    /// The MQTT connectors.
    pub fn mqtt(&self) -> &[MqttConnector] {
        &self.mqtt
    }

    /// The OPC UA connectors.
    pub fn opcua(&self) -> &[OpcUaHandle] {
        &self.opcua
    }

    /// The gRPC API, when the config has an `[api]` table.
    pub fn api(&self) -> Option<&ApiHandle> {
        self.api
            .as_ref()
            .or_else(|| self.cluster.as_ref().and_then(Cluster::api))
    }

    /// The node's part in its cluster, when the config has a `[cluster]` table.
    pub fn cluster(&self) -> Option<&Cluster> {
        self.cluster.as_ref()
    }

    /// Everything the connectors dropped at the boundary, summed over them.
    pub fn dropped(&self) -> u64 {
        self.mqtt.iter().map(|m| m.drops().total()).sum::<u64>()
            + self.opcua.iter().map(|o| o.drops().total()).sum::<u64>()
    }

    /// Waits until every connector is connected; the names of those that are not
    /// after `timeout`.
    pub async fn wait_connected(&self, timeout: Duration) -> Vec<String> {
        let mut missing = Vec::new();
        for mqtt in &self.mqtt {
            if !mqtt.wait_connected(timeout).await {
                missing.push(mqtt.name().to_string());
            }
        }
        for opcua in &self.opcua {
            if !opcua.wait_connected(timeout).await {
                missing.push(opcua.name().to_string());
            }
        }
        missing
    }

    /// Stops the cluster part and the API, the connectors, then the runtime.
    pub async fn stop(self) {
        if let Some(cluster) = self.cluster {
            cluster.stop().await;
        }
        if let Some(api) = self.api {
            api.stop().await;
        }
        for mqtt in self.mqtt {
            mqtt.stop().await;
        }
        for opcua in self.opcua {
            opcua.stop().await;
        }
        self.runtime.shutdown().await;
    }
}
