//! What leaves a twin for the machine, and the verdicts published beside it.

use serde::{Deserialize, Serialize};

use crate::command::{Command, CommandId, Origin, Verdict};
use crate::path::AssetPath;
use crate::time::Timestamp;
use crate::value::Value;

/// What leaves a twin for the machine: the desired values a verdict applied, after
/// every governor, and nothing else.
///
/// Only the twin builds one, from a verdict that applied (or from a safety action), so
/// a connector cannot be handed a value no governor reviewed: the type has no field
/// for the parameters as requested (those stay in the verdict and the audit record).
/// Method arguments, MQTT payloads and Sparkplug metrics are built from
/// [`values`](Self::values).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Actuation {
    pub(super) asset: AssetPath,
    pub(super) version: u64,
    pub(super) command_id: CommandId,
    pub(super) command: String,
    pub(super) values: Vec<(String, Value)>,
    pub(super) origin: Origin,
    pub(super) safety: bool,
    pub(super) reason: String,
    pub(super) at: Timestamp,
    pub(super) deadline: Option<Timestamp>,
}

impl Actuation {
    /// The twin (and machine).
    pub fn asset(&self) -> &AssetPath {
        &self.asset
    }

    /// The twin's version whose command or safety action decided it: what an actuator
    /// reports its delivery against ([`Twins::report_delivery`](super::Twins::report_delivery)).
    pub fn version(&self) -> u64 {
        self.version
    }

    /// The command's id (a fresh one for a safety action).
    pub fn command_id(&self) -> &CommandId {
        &self.command_id
    }

    /// The command's name (for a safety action, the command the governor demanded).
    pub fn command(&self) -> &str {
        &self.command
    }

    /// The governed desired values to actuate, by name, in the command's order.
    pub fn values(&self) -> &[(String, Value)] {
        &self.values
    }

    /// The governed value of one desired value, if the actuation sets it.
    pub fn value(&self, desired: &str) -> Option<Value> {
        self.values
            .iter()
            .find(|(name, _)| name == desired)
            .map(|(_, value)| *value)
    }

    /// Who asked.
    pub fn origin(&self) -> &Origin {
        &self.origin
    }

    /// True for a governor's safety action.
    pub fn is_safety(&self) -> bool {
        self.safety
    }

    /// Why (safety actions; empty for commands).
    pub fn reason(&self) -> &str {
        &self.reason
    }

    /// When it was decided.
    pub fn at(&self) -> Timestamp {
        self.at
    }

    /// The command's absolute deadline: past it, nothing of this actuation may reach
    /// the machine. Safety actions have none.
    pub fn deadline(&self) -> Option<Timestamp> {
        self.deadline
    }

    /// The same actuation restricted to the desired values `keep` names: what is left
    /// is still exactly what the verdict applied.
    pub fn only(&self, keep: &[String]) -> Actuation {
        let mut part = self.clone();
        part.values.retain(|(name, _)| keep.contains(name));
        part
    }

    /// The names of the desired values it sets.
    pub fn desired_names(&self) -> Vec<String> {
        self.values.iter().map(|(name, _)| name.clone()).collect()
    }

    /// The actuation of a command the governors applied with `values`, as version
    /// `version` of the twin.
    pub(crate) fn command_applied(
        asset: AssetPath,
        version: u64,
        command: &Command,
        values: Vec<(String, Value)>,
        at: Timestamp,
    ) -> Self {
        Self {
            asset,
            version,
            command_id: command.id.clone(),
            command: command.name.clone(),
            values,
            origin: command.origin.clone(),
            safety: false,
            reason: String::new(),
            at,
            deadline: command.deadline,
        }
    }
}

/// A command's verdict as published to subscribers once its audit record is durable.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CommandVerdict {
    /// The twin.
    pub asset: AssetPath,
    /// The command's id.
    pub command_id: CommandId,
    /// The command's name.
    pub command: String,
    /// Who asked.
    pub origin: Origin,
    /// The governors' verdict.
    pub verdict: Verdict,
    /// Desired values written (empty when denied).
    pub applied: Vec<(String, Value)>,
    /// The twin's version after the command.
    pub version: u64,
    /// When it was decided.
    pub at: Timestamp,
}
