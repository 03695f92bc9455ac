//! The start check of a node's actuation: every desired value a safety action or a
//! command can set must reach the machine of every twin a connector serves.
//!
//! ```toml
//! # A value the node does not actuate because something else does: a PLC interlock
//! # stops the press on over-temperature by itself. `by` says what, for the reader and
//! # the start log. Without this entry, a trip whose `stop` sets `running` and no
//! # connector carrying `running` refuses the start.
//! [[actuation.elsewhere]]
//! type = "press"
//! desired = "running"
//! by = "PLC interlock: hardwired over-temperature stop"
//! ```

use std::collections::{BTreeMap, HashSet};

use doppel_connectors::Reach;
use doppel_runtime::{AssetPath, Components, Topology, TwinTypes};
use serde::Deserialize;

use crate::error::NodeError;

/// The `[actuation]` table.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ActuationConfig {
    /// Desired values actuated outside Doppel, per twin type.
    #[serde(default)]
    pub elsewhere: Vec<ActuatedElsewhere>,
}

/// A desired value that reaches the machine without Doppel (a PLC interlock, a
/// hardwired stop). The start check accepts it unmapped; every safety action that sets
/// it is still journaled, audited and published to subscribers.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ActuatedElsewhere {
    /// The twin type.
    #[serde(rename = "type")]
    pub twin_type: String,
    /// The desired value.
    pub desired: String,
    /// What actuates it, in words (logged at start).
    pub by: String,
}

/// A command's desired value that no connector carries to some served twins: the
/// start goes on, with a warning.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unmapped {
    /// The twin type.
    pub twin_type: String,
    /// The command.
    pub command: String,
    /// The desired value it sets.
    pub desired: String,
    /// The first twin it does not reach.
    pub asset: AssetPath,
    /// How many twins it does not reach.
    pub twins: usize,
}

/// Checks that every desired value a safety action sets reaches the machine of every
/// twin a connector serves; returns the operator commands' values that do not. Twins
/// no connector touches (fed only through the API) are not checked.
pub fn check(
    config: &ActuationConfig,
    types: &TwinTypes,
    topology: &Topology,
    components: &Components,
    reach: &Reach,
) -> Result<Vec<Unmapped>, NodeError> {
    for elsewhere in &config.elsewhere {
        let known = types
            .get(&elsewhere.twin_type)
            .is_some_and(|t| t.desired(&elsewhere.desired).is_some());
        if !known {
            return Err(NodeError::UnknownElsewhere {
                twin_type: elsewhere.twin_type.clone(),
                desired: elsewhere.desired.clone(),
            });
        }
        tracing::info!(twin_type = %elsewhere.twin_type, desired = %elsewhere.desired, by = %elsewhere.by, "desired value actuated outside this node");
    }
    let elsewhere: HashSet<(&str, &str)> = config
        .elsewhere
        .iter()
        .map(|e| (e.twin_type.as_str(), e.desired.as_str()))
        .collect();
    let mut needs = BTreeMap::new();
    let mut unmapped: BTreeMap<(String, String, String), Unmapped> = BTreeMap::new();
    for machine in topology.machines() {
        if !reach.touches(&machine.path) {
            continue;
        }
        let Some(twin_type) = types.get(&machine.twin_type) else {
            continue;
        };
        if !needs.contains_key(&twin_type.name) {
            needs.insert(
                twin_type.name.clone(),
                components.actuation_needs(twin_type)?,
            );
        }
        for need in &needs[&twin_type.name] {
            if elsewhere.contains(&(twin_type.name.as_str(), need.desired.as_str()))
                || reach.carries(&machine.path, &need.desired, &need.command)
            {
                continue;
            }
            if let Some(governor) = &need.safety_of {
                return Err(NodeError::UnactuatedSafety {
                    twin_type: twin_type.name.clone(),
                    governor: governor.clone(),
                    action: need.command.clone(),
                    desired: need.desired.clone(),
                    asset: machine.path.clone(),
                });
            }
            unmapped
                .entry((
                    twin_type.name.clone(),
                    need.command.clone(),
                    need.desired.clone(),
                ))
                .or_insert_with(|| Unmapped {
                    twin_type: twin_type.name.clone(),
                    command: need.command.clone(),
                    desired: need.desired.clone(),
                    asset: machine.path.clone(),
                    twins: 0,
                })
                .twins += 1;
        }
    }
    Ok(unmapped.into_values().collect())
}
