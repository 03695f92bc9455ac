//! A connector's mapping, checked against the twins and resolved: parsed node ids,
//! channel targets, and per asset the writes and calls its actuations become.

use std::collections::HashMap;
use std::str::FromStr;

use doppel_runtime::AssetPath;
use doppel_runtime::config::{CommandSpec, SetSource};
use doppel_runtime::twin::{ChannelTarget, Twins};
use opcua::types::NodeId;

use super::config::{MethodArg, OpcUaConfig, ScalarType};
use super::error::OpcUaError;

/// A variable monitored into a channel. Its position in [`Plan::channels`] plus one is
/// the monitored item's client handle.
#[derive(Debug, Clone)]
pub(crate) struct MonitoredChannel {
    pub asset: AssetPath,
    pub channel: String,
    pub node: NodeId,
    pub target: ChannelTarget,
    pub sampling_ms: u64,
    pub deadband: f64,
}

/// The method a command calls.
#[derive(Debug, Clone)]
pub(crate) struct MethodTarget {
    pub object: NodeId,
    pub method: NodeId,
    pub args: Vec<GovernedArg>,
}

/// A method argument, resolved to the desired value its parameter sets: the call
/// carries the governed value, never the parameter as requested.
#[derive(Debug, Clone)]
pub(crate) struct GovernedArg {
    pub desired: String,
    pub data_type: Option<ScalarType>,
}

/// What actuations of one asset become.
#[derive(Debug, Clone, Default)]
pub(crate) struct AssetActuation {
    /// Desired value name to the variable it is written to.
    pub writes: HashMap<String, NodeId>,
    /// Command name to the method it calls.
    pub methods: HashMap<String, MethodTarget>,
}

/// A connector's resolved mapping.
#[derive(Debug, Clone, Default)]
pub(crate) struct Plan {
    pub channels: Vec<MonitoredChannel>,
    pub assets: HashMap<AssetPath, AssetActuation>,
}

/// The desired value `arg`'s parameter sets in `command`; `Err(true)` when the command
/// has no such parameter, `Err(false)` when the parameter sets no desired value.
fn governed_arg(arg: &MethodArg, command: &CommandSpec) -> Result<GovernedArg, bool> {
    if !command.params.iter().any(|p| p.name == arg.param()) {
        return Err(true);
    }
    let desired = command
        .sets
        .iter()
        .find(|(_, source)| matches!(source, SetSource::Param(param) if param == arg.param()))
        .map(|(desired, _)| desired.clone())
        .ok_or(false)?;
    Ok(GovernedArg {
        desired,
        data_type: arg.data_type(),
    })
}

impl Plan {
    /// Resolves the mapping of `config` against the twins: every asset, channel,
    /// desired value, command and parameter must exist and every node id must parse.
    pub fn resolve(config: &OpcUaConfig, twins: &Twins) -> Result<Plan, OpcUaError> {
        let connector = || config.name.clone();
        let mut plan = Plan::default();
        for asset in &config.assets {
            let entry = twins
                .entry(&asset.path)
                .map_err(|_| OpcUaError::UnknownAsset {
                    connector: connector(),
                    asset: asset.path.clone(),
                })?;
            let node_id = |raw: &str| {
                NodeId::from_str(raw.trim()).map_err(|_| OpcUaError::InvalidNodeId {
                    connector: connector(),
                    asset: asset.path.clone(),
                    node: raw.to_string(),
                })
            };
            let duplicate = |what: &str, name: &str| OpcUaError::Invalid {
                connector: connector(),
                problem: format!("asset `{}`: {what} `{name}` is mapped twice", asset.path),
            };
            for mapping in &asset.channels {
                let target = twins.target(&asset.path, &mapping.channel).map_err(|_| {
                    OpcUaError::UnknownChannel {
                        connector: connector(),
                        asset: asset.path.clone(),
                        channel: mapping.channel.clone(),
                    }
                })?;
                plan.channels.push(MonitoredChannel {
                    asset: asset.path.clone(),
                    channel: mapping.channel.clone(),
                    node: node_id(&mapping.node)?,
                    target,
                    sampling_ms: mapping.sampling_ms,
                    deadband: mapping.deadband,
                });
            }
            let actuation = plan.assets.entry(asset.path.clone()).or_default();
            for write in &asset.writes {
                if entry.twin_type.desired(&write.desired).is_none() {
                    return Err(OpcUaError::UnknownDesired {
                        connector: connector(),
                        asset: asset.path.clone(),
                        desired: write.desired.clone(),
                    });
                }
                let node = node_id(&write.node)?;
                if actuation
                    .writes
                    .insert(write.desired.clone(), node)
                    .is_some()
                {
                    return Err(duplicate("desired value", &write.desired));
                }
            }
            for method in &asset.methods {
                let Some(command) = entry.twin_type.commands.get(&method.command) else {
                    return Err(OpcUaError::UnknownCommand {
                        connector: connector(),
                        asset: asset.path.clone(),
                        command: method.command.clone(),
                    });
                };
                let mut args = Vec::with_capacity(method.args.len());
                for arg in &method.args {
                    args.push(governed_arg(arg, command).map_err(|unknown| {
                        let (connector, asset, command, param) = (
                            connector(),
                            asset.path.clone(),
                            method.command.clone(),
                            arg.param().to_string(),
                        );
                        if unknown {
                            OpcUaError::UnknownParam {
                                connector,
                                asset,
                                command,
                                param,
                            }
                        } else {
                            OpcUaError::UngovernedParam {
                                connector,
                                asset,
                                command,
                                param,
                            }
                        }
                    })?);
                }
                let target = MethodTarget {
                    object: node_id(&method.object)?,
                    method: node_id(&method.method)?,
                    args,
                };
                if actuation
                    .methods
                    .insert(method.command.clone(), target)
                    .is_some()
                {
                    return Err(duplicate("command", &method.command));
                }
            }
        }
        plan.assets
            .retain(|_, actuation| !(actuation.writes.is_empty() && actuation.methods.is_empty()));
        Ok(plan)
    }

    /// Every variable written to, once each.
    pub fn write_nodes(&self) -> Vec<NodeId> {
        let mut nodes: Vec<NodeId> = Vec::new();
        for actuation in self.assets.values() {
            for node in actuation.writes.values() {
                if !nodes.contains(node) {
                    nodes.push(node.clone());
                }
            }
        }
        nodes
    }
}
