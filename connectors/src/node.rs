//! One node from a config file: its twins and the connectors that feed them.
//!
//! ```toml
//! [node]
//! data_dir = "data"          # relative paths are relative to this file
//! types = "types.toml"
//! plant = "plant.toml"
//!
//! [settings]                 # optional runtime settings
//! history_capacity = 64
//!
//! [[mqtt]]
//! name = "plant-broker"
//! url = "mqtt://127.0.0.1:1883"
//!
//! [[opcua]]
//! name = "line-1-plc"
//! endpoint = "opc.tcp://10.0.0.5:4840/"
//! # …
//!
//! [api]                      # optional: serve doppel.v1.TwinService
//! listen = "0.0.0.0:50051"
//! tokens = [{ name = "ann", token = "…", role = "operator" }]
//! tls = { cert = "api.pem", key = "api.key" }   # optional
//! ```

use std::path::{Path, PathBuf};
use std::time::Duration;

use doppel_actors::Runtime;
use doppel_api::{ApiConfig, ApiError, ApiHandle, ApiServer};
use doppel_runtime::{AssetPath, RuntimeSettings, Topology, TwinTypes};
use serde::Deserialize;

use crate::mqtt::{MqttConfig, MqttConnector, MqttError};
use crate::ua::{OpcUaConfig, OpcUaConnector, OpcUaHandle, UaError};

/// A node's config file.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NodeConfig {
    /// Where the node keeps its data and what it hosts.
    pub node: NodeSection,
    /// Runtime settings.
    #[serde(default)]
    pub settings: RuntimeSettings,
    /// MQTT broker connections.
    #[serde(default)]
    pub mqtt: Vec<MqttConfig>,
    /// OPC UA server connections.
    #[serde(default)]
    pub opcua: Vec<OpcUaConfig>,
    /// The public gRPC API (`doppel.v1.TwinService`); not served when absent. TLS
    /// paths are relative to the config file.
    #[serde(default)]
    pub api: Option<ApiConfig>,
    /// The `[cluster]` table, read by doppel-cluster (`ClusterConfig`).
    #[serde(default)]
    pub cluster: Option<serde::de::IgnoredAny>,
    /// The directory relative paths are resolved against (the file's directory).
    #[serde(skip)]
    pub base: PathBuf,
}

/// The `[node]` table.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NodeSection {
    /// The node's data directory (its redb file and OPC UA certificates).
    pub data_dir: PathBuf,
    /// The twin types file.
    pub types: PathBuf,
    /// The plant topology file; a node without one hosts no twins (a cloud node).
    #[serde(default)]
    pub plant: Option<PathBuf>,
}

/// Why a node could not start.
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
    /// The config file is not valid.
    #[error("{path}: {message}")]
    Parse {
        /// The file.
        path: PathBuf,
        /// What is wrong, with its line.
        message: String,
    },
    /// Twin types or topology are invalid.
    #[error(transparent)]
    Config(#[from] doppel_runtime::ConfigError),
    /// The runtime did not start.
    #[error(transparent)]
    Runtime(#[from] doppel_actors::Error),
    /// An MQTT connector did not start.
    #[error(transparent)]
    Mqtt(#[from] MqttError),
    /// An OPC UA connector did not start.
    #[error(transparent)]
    OpcUa(#[from] UaError),
    /// The gRPC API did not start.
    #[error(transparent)]
    Api(#[from] ApiError),
}

impl NodeConfig {
    /// Reads and checks a config file.
    pub fn from_file(path: impl AsRef<Path>) -> Result<Self, NodeError> {
        let path = path.as_ref();
        let text = std::fs::read_to_string(path).map_err(|source| NodeError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        let base = path.parent().unwrap_or(Path::new(".")).to_path_buf();
        Self::from_toml(&text, &base).map_err(|message| NodeError::Parse {
            path: path.to_path_buf(),
            message,
        })
    }

    /// Parses a config whose relative paths are relative to `base`.
    pub fn from_toml(text: &str, base: &Path) -> Result<Self, String> {
        let mut config: NodeConfig = toml::from_str(text).map_err(|error| {
            let line = error
                .span()
                .map(|span| text[..span.start.min(text.len())].lines().count().max(1));
            match line {
                Some(line) => format!("line {line}: {}", error.message()),
                None => error.message().to_string(),
            }
        })?;
        config.base = base.to_path_buf();
        for mqtt in &config.mqtt {
            mqtt.validate().map_err(|error| error.to_string())?;
        }
        if let Some(api) = &config.api {
            api.validate().map_err(|error| error.to_string())?;
        }
        let mut names: Vec<&str> = config.mqtt.iter().map(|m| m.name.as_str()).collect();
        names.extend(config.opcua.iter().map(|o| o.name.as_str()));
        names.sort_unstable();
        if let Some(pair) = names.windows(2).find(|pair| pair[0] == pair[1]) {
            return Err(format!("two connectors are named `{}`", pair[0]));
        }
        Ok(config)
    }

    /// A path from the config, resolved against the file's directory.
    pub fn resolve(&self, path: &Path) -> PathBuf {
        if path.is_absolute() {
            path.to_path_buf()
        } else {
            self.base.join(path)
        }
    }
}

/// A running node: the runtime, its connectors and its API.
pub struct Node {
    runtime: Runtime,
    mqtt: Vec<MqttConnector>,
    opcua: Vec<OpcUaHandle>,
    api: Option<ApiHandle>,
}

impl Node {
    /// Starts the runtime, every connector of `config` and its API.
    pub async fn start(config: NodeConfig) -> Result<Self, NodeError> {
        Self::start_hosting(config, |_| true).await
    }

    /// Like [`Node::start`], hosting only the machines of the plant file for which
    /// `host` is true (a cluster edge node hosts the plants or lines it owns).
    pub async fn start_hosting(
        config: NodeConfig,
        host: impl Fn(&AssetPath) -> bool,
    ) -> Result<Self, NodeError> {
        let types = TwinTypes::from_file(config.resolve(&config.node.types))?;
        let mut topology = match &config.node.plant {
            Some(plant) => Topology::from_file(config.resolve(plant), &types)?,
            None => Topology::default(),
        };
        for plant in &mut topology.plants {
            for line in &mut plant.lines {
                line.machines.retain(|machine| host(&machine.path));
            }
            plant.lines.retain(|line| !line.machines.is_empty());
        }
        topology.plants.retain(|plant| !plant.lines.is_empty());
        let data_dir = config.resolve(&config.node.data_dir);
        let runtime = Runtime::builder()
            .twin_types(types)
            .topology(topology)
            .data_dir(&data_dir)
            .settings(config.settings.clone())
            .start()
            .await?;
        let mut node = Node {
            runtime,
            mqtt: Vec::new(),
            opcua: Vec::new(),
            api: None,
        };
        let started = match node.start_connectors(&config, &data_dir).await {
            Ok(()) => node.start_api(&config).await,
            Err(error) => Err(error),
        };
        match started {
            Ok(()) => Ok(node),
            Err(error) => {
                node.stop().await;
                Err(error)
            }
        }
    }

    async fn start_connectors(
        &mut self,
        config: &NodeConfig,
        data_dir: &Path,
    ) -> Result<(), NodeError> {
        let twins = self.runtime.twins().clone();
        for mqtt in &config.mqtt {
            self.mqtt
                .push(MqttConnector::start(mqtt.clone(), twins.clone()).await?);
        }
        for opcua in &config.opcua {
            self.opcua
                .push(OpcUaConnector::start(opcua.clone(), twins.clone(), data_dir).await?);
        }
        Ok(())
    }

    async fn start_api(&mut self, config: &NodeConfig) -> Result<(), NodeError> {
        let Some(api) = &config.api else {
            return Ok(());
        };
        let mut api = api.clone();
        if let Some(tls) = &mut api.tls {
            tls.cert = config.resolve(&tls.cert);
            tls.key = config.resolve(&tls.key);
        }
        self.api = Some(ApiServer::start(api, self.runtime.twins().clone()).await?);
        Ok(())
    }

    /// The runtime.
    pub fn runtime(&self) -> &Runtime {
        &self.runtime
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
        self.api.as_ref()
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

    /// Stops the API, the connectors, then the runtime.
    pub async fn stop(self) {
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
