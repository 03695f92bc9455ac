//! Sparkplug configuration: the `sparkplug` table of an `[[mqtt]]` connector.

use std::collections::{BTreeMap, HashSet};

use doppel_runtime::AssetPath;
use serde::Deserialize;

use crate::mqtt::Resolver;

/// The Sparkplug B layout of one broker connection.
///
/// ```toml
/// [[mqtt]]
/// name = "plant-a"
/// url = "mqtt://broker:1883"
///
/// [mqtt.sparkplug]
/// host_id = "doppel"
///
/// [[mqtt.sparkplug.map]]
/// group = "PlantA"
/// node = "Line1-PLC"
/// device = "Press1"
/// asset = "acme/plant-a/line-1/press-1"
/// metrics = { "Sensors/Temperature" = "temperature" }
/// commands = { speed = "Outputs/Speed" }
/// ```
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SparkplugConfig {
    /// The Sparkplug host application id. When set, the connector publishes the retained
    /// host state `spBv1.0/STATE/<host_id>` (`{"online":true,"timestamp":<ms>}`) on every
    /// connection and registers the matching `online: false` message as its last will,
    /// so edge nodes that name this host as their primary application can follow it.
    /// Leave it out to read Sparkplug without announcing a host application.
    #[serde(default)]
    pub host_id: Option<String>,
    /// Which edge nodes and devices feed which twins.
    #[serde(default)]
    pub map: Vec<SparkplugMapping>,
}

/// One edge node or device and the twin it feeds.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SparkplugMapping {
    /// The Sparkplug group id.
    pub group: String,
    /// The edge node id.
    pub node: String,
    /// The device id; left out, the mapping takes the edge node's own metrics (NBIRTH,
    /// NDATA) and its commands go out as NCMD.
    #[serde(default)]
    pub device: Option<String>,
    /// The twin the metrics feed.
    pub asset: AssetPath,
    /// Metric name to channel name. A metric not listed feeds the channel of the same
    /// name when the twin's type has one; otherwise it is dropped as an unknown channel.
    #[serde(default)]
    pub metrics: BTreeMap<String, String>,
    /// Desired value name to the metric name that carries it in outgoing commands
    /// (NCMD/DCMD). A desired value not listed goes out under its own name.
    #[serde(default)]
    pub commands: BTreeMap<String, String>,
}

/// Why a Sparkplug configuration was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SparkplugConfigError {
    /// The table maps nothing.
    #[error("sparkplug: no `map` entries")]
    NoMappings,
    /// A host, group, node or device id is not one valid topic level.
    #[error("sparkplug: {what} id `{id}` {why}")]
    BadId {
        /// Which kind of id (`host`, `group`, `node`, `device`).
        what: &'static str,
        /// The id as configured.
        id: String,
        /// What is wrong with it.
        why: &'static str,
    },
    /// No twin has the asset path.
    #[error("sparkplug: unknown asset `{0}`")]
    UnknownAsset(AssetPath),
    /// A metric is mapped to a channel the twin's type does not have.
    #[error("sparkplug: metric `{metric}` maps to `{channel}`, which `{asset}` does not have")]
    UnknownChannel {
        /// The twin.
        asset: AssetPath,
        /// The metric name.
        metric: String,
        /// The channel it was mapped to.
        channel: String,
    },
    /// A command mapping names a desired value the twin's type does not have.
    #[error("sparkplug: `{asset}` has no desired value `{desired}`")]
    UnknownDesired {
        /// The twin.
        asset: AssetPath,
        /// The desired value name.
        desired: String,
    },
    /// A command mapping sends a desired value under an empty metric name.
    #[error("sparkplug: desired value `{desired}` of `{asset}` maps to an empty metric name")]
    EmptyCommandMetric {
        /// The twin.
        asset: AssetPath,
        /// The desired value name.
        desired: String,
    },
    /// Two mappings name the same edge node or device.
    #[error("sparkplug: `{0}` is mapped twice")]
    DuplicateSource(String),
    /// Two mappings feed the same twin, so its commands would have two destinations.
    #[error("sparkplug: `{0}` is mapped from two edge nodes or devices")]
    DuplicateAsset(AssetPath),
}

impl SparkplugMapping {
    /// `group/node` or `group/node/device`, for messages.
    pub fn source_name(&self) -> String {
        match &self.device {
            Some(device) => format!("{}/{}/{}", self.group, self.node, device),
            None => format!("{}/{}", self.group, self.node),
        }
    }
}

impl SparkplugConfig {
    /// Checks ids, and that every asset, mapped channel and commanded desired value
    /// exists.
    pub fn validate(&self, resolver: &Resolver) -> Result<(), SparkplugConfigError> {
        if let Some(host_id) = &self.host_id {
            check_id("host", host_id)?;
        }
        if self.map.is_empty() {
            return Err(SparkplugConfigError::NoMappings);
        }
        let mut sources = HashSet::new();
        let mut assets = HashSet::new();
        for mapping in &self.map {
            check_id("group", &mapping.group)?;
            if mapping.group == "STATE" {
                return Err(SparkplugConfigError::BadId {
                    what: "group",
                    id: mapping.group.clone(),
                    why: "is reserved for host application state",
                });
            }
            check_id("node", &mapping.node)?;
            if let Some(device) = &mapping.device {
                check_id("device", device)?;
            }
            let source = mapping.source_name();
            if !sources.insert(source.clone()) {
                return Err(SparkplugConfigError::DuplicateSource(source));
            }
            if !assets.insert(mapping.asset.clone()) {
                return Err(SparkplugConfigError::DuplicateAsset(mapping.asset.clone()));
            }
            let entry = resolver
                .twins()
                .entry(&mapping.asset)
                .map_err(|_| SparkplugConfigError::UnknownAsset(mapping.asset.clone()))?;
            for (metric, channel) in &mapping.metrics {
                if entry.twin_type.channel(channel).is_none() {
                    return Err(SparkplugConfigError::UnknownChannel {
                        asset: mapping.asset.clone(),
                        metric: metric.clone(),
                        channel: channel.clone(),
                    });
                }
            }
            for (desired, metric) in &mapping.commands {
                if entry.twin_type.desired(desired).is_none() {
                    return Err(SparkplugConfigError::UnknownDesired {
                        asset: mapping.asset.clone(),
                        desired: desired.clone(),
                    });
                }
                if metric.is_empty() {
                    return Err(SparkplugConfigError::EmptyCommandMetric {
                        asset: mapping.asset.clone(),
                        desired: desired.clone(),
                    });
                }
            }
        }
        Ok(())
    }
}

/// Sparkplug ids are single topic levels: non-empty, without `/` or wildcards.
fn check_id(what: &'static str, id: &str) -> Result<(), SparkplugConfigError> {
    let why = if id.is_empty() {
        "is empty"
    } else if id.contains(['/', '+', '#']) {
        "must not contain `/`, `+` or `#`"
    } else {
        return Ok(());
    };
    Err(SparkplugConfigError::BadId {
        what,
        id: id.to_string(),
        why,
    })
}
