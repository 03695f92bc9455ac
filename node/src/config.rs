//! [`NodeConfig`]: a node's config file, read once into one typed value.
//!
//! ```toml
//! [node]
//! data_dir = "data"          # relative paths are relative to this file
//! types = "types.toml"
//! plant = "plant.toml"       # a node without one hosts no twins (a cloud node)
//!
//! [settings]                 # optional runtime settings
//! history_capacity = 64
//!
//! [settings.passivation]     # optional: idle twins stop their actor (docs/semantics.md)
//! idle_secs = 600            # 0: never
//! tripping = false           # also twins whose governors name safety commands
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
//!
//! [models]                   # optional: which model packages the node accepts
//! trusted_keys = ["3b6a27bc…"]   # Ed25519 public keys (`doppel model keygen`)
//! allow_unsigned = false     # development only
//!
//! [[actuation.elsewhere]]    # optional: a desired value something else actuates
//! type = "press"
//! desired = "running"
//! by = "PLC interlock"
//!
//! [cluster]                  # optional: join a cluster (see doppel_cluster::config)
//! id = "acme-prod"
//! node_id = "edge-a"
//! role = "edge"
//! # …
//! ```

use std::path::{Path, PathBuf};

use doppel_api::ApiConfig;
use doppel_cluster::ClusterConfig;
use doppel_connectors::mqtt::MqttConfig;
use doppel_connectors::opcua::OpcUaConfig;
use doppel_runtime::RuntimeSettings;
use doppel_runtime::config::ModelSettings;
use serde::Deserialize;

use crate::actuation::ActuationConfig;
use crate::error::NodeError;

/// A node's config file. Relative paths in it (data directory, types, plant, TLS files
/// of the API and the cluster) are resolved against the file's directory when read.
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
    /// The public gRPC API (`doppel.v1.TwinService`); not served when absent.
    #[serde(default)]
    pub api: Option<ApiConfig>,
    /// Cluster membership; a node without it runs on its own.
    #[serde(default)]
    pub cluster: Option<ClusterConfig>,
    /// Desired values actuated outside the node (see [`ActuationConfig`]).
    #[serde(default)]
    pub actuation: ActuationConfig,
    /// Which model packages the node accepts into its registry: signed by a trusted
    /// key, or unsigned only where `allow_unsigned` says so.
    #[serde(default)]
    pub models: ModelSettings,
}

/// The `[node]` table.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NodeSection {
    /// The node's data directory (its redb files and OPC UA certificates).
    pub data_dir: PathBuf,
    /// The twin types file.
    pub types: PathBuf,
    /// The plant topology file; a node without one hosts no twins (a cloud node).
    #[serde(default)]
    pub plant: Option<PathBuf>,
}

impl NodeConfig {
    /// Reads and checks a config file.
    pub fn from_file(path: impl AsRef<Path>) -> Result<Self, NodeError> {
        let path = path.as_ref();
        let text = std::fs::read_to_string(path).map_err(|source| NodeError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        Self::from_toml(&text, path)
    }

    /// Parses and checks the text of the config file at `path`; relative paths are
    /// resolved against its directory.
    pub fn from_toml(text: &str, path: &Path) -> Result<Self, NodeError> {
        let mut config: NodeConfig = toml::from_str(text).map_err(|source| {
            let line = source
                .span()
                .map(|span| text[..span.start.min(text.len())].lines().count().max(1));
            NodeError::Parse {
                path: path.to_path_buf(),
                line,
                source: Box::new(source),
            }
        })?;
        config.resolve_paths(path.parent().unwrap_or(Path::new(".")));
        config.validate()?;
        Ok(config)
    }

    /// Checks what parsing cannot: each connector, the API's tokens, the cluster table,
    /// the trusted model keys and that no two connectors share a name.
    pub fn validate(&self) -> Result<(), NodeError> {
        for mqtt in &self.mqtt {
            mqtt.validate()?;
        }
        for opcua in &self.opcua {
            opcua.validate()?;
        }
        if let Some(api) = &self.api {
            api.validate()?;
        }
        if let Some(cluster) = &self.cluster {
            cluster.validate()?;
        }
        self.models
            .trust()
            .map_err(|message| doppel_runtime::ConfigError::at("[models]", None, message))?;
        let mut names: Vec<&str> = self.mqtt.iter().map(|m| m.name.as_str()).collect();
        names.extend(self.opcua.iter().map(|o| o.name.as_str()));
        names.sort_unstable();
        if let Some(pair) = names.windows(2).find(|pair| pair[0] == pair[1]) {
            return Err(NodeError::DuplicateConnector {
                name: pair[0].to_string(),
            });
        }
        Ok(())
    }

    fn resolve_paths(&mut self, base: &Path) {
        let resolve = |path: &mut PathBuf| {
            if path.is_relative() {
                *path = base.join(&*path);
            }
        };
        resolve(&mut self.node.data_dir);
        resolve(&mut self.node.types);
        if let Some(plant) = &mut self.node.plant {
            resolve(plant);
        }
        if let Some(tls) = self.api.as_mut().and_then(|api| api.tls.as_mut()) {
            resolve(&mut tls.cert);
            resolve(&mut tls.key);
        }
        if let Some(cluster) = &mut self.cluster {
            cluster.resolve_paths(base);
        }
        for tls in self.mqtt.iter_mut().filter_map(|mqtt| mqtt.tls.as_mut()) {
            tls.resolve_paths(base);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const EDGE: &str = r#"
        [node]
        data_dir = "data"
        types = "types.toml"
        plant = "/etc/doppel/plant.toml"

        [[mqtt]]
        name = "broker"
        url = "mqtt://127.0.0.1:1883"

        [api]
        listen = "127.0.0.1:0"
        tls = { cert = "api.pem", key = "/keys/api.key" }

        [cluster]
        id = "acme"
        node_id = "edge-a"
        role = "edge"
        listen = "127.0.0.1:0"
        gossip = "127.0.0.1:0"
        owns = ["acme/plant-a"]
        tls = { cert = "node.pem", key = "node.key", ca = "ca.pem" }
    "#;

    #[test]
    fn one_read_types_every_table_and_resolves_relative_paths() {
        let config = NodeConfig::from_toml(EDGE, Path::new("/srv/edge/node.toml")).unwrap();
        assert_eq!(config.node.data_dir, Path::new("/srv/edge/data"));
        assert_eq!(config.node.types, Path::new("/srv/edge/types.toml"));
        assert_eq!(
            config.node.plant.as_deref(),
            Some(Path::new("/etc/doppel/plant.toml"))
        );
        let api_tls = config.api.as_ref().unwrap().tls.as_ref().unwrap();
        assert_eq!(api_tls.cert, Path::new("/srv/edge/api.pem"));
        assert_eq!(api_tls.key, Path::new("/keys/api.key"));
        let cluster = config.cluster.as_ref().unwrap();
        assert_eq!(cluster.node_id, "edge-a");
        let tls = cluster.tls.as_ref().unwrap();
        assert_eq!(tls.ca, Path::new("/srv/edge/ca.pem"));
        assert_eq!(config.mqtt.len(), 1);
    }

    #[test]
    fn errors_say_where_and_what() {
        let path = Path::new("/srv/edge/node.toml");
        let typo = EDGE.replace("owns =", "own =");
        match NodeConfig::from_toml(&typo, path) {
            Err(NodeError::Parse { path: at, line, .. }) => {
                assert_eq!(at, path);
                let expected = typo.lines().position(|l| l.contains("own =")).unwrap() + 1;
                assert!(line.is_some_and(|line| line <= expected), "{line:?}");
            }
            other => panic!("not a parse error: {other:?}"),
        }

        let cloud_owning = EDGE.replace("role = \"edge\"", "role = \"cloud\"");
        let error = NodeConfig::from_toml(&cloud_owning, path).unwrap_err();
        assert!(
            matches!(
                &error,
                NodeError::Cluster(doppel_cluster::ClusterError::Config {
                    key: "cluster.owns",
                    ..
                })
            ),
            "{error:?}"
        );

        let twice = format!(
            "{EDGE}\n[[opcua]]\nname = \"broker\"\nendpoint = \"opc.tcp://127.0.0.1:4840/\"\n"
        );
        let error = NodeConfig::from_toml(&twice, path).unwrap_err();
        assert!(
            matches!(&error, NodeError::DuplicateConnector { name } if name == "broker"),
            "{error:?}"
        );
    }
}
