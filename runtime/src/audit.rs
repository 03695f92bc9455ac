//! The audit log: every command, verdict and safety action, with what informed it.

use serde::{Deserialize, Serialize};

use crate::command::{CommandId, Origin, Verdict};
use crate::path::AssetPath;
use crate::time::Timestamp;
use crate::value::Value;

/// A model that informed a decision, as it stood then.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ModelInfo {
    /// Model name.
    pub name: String,
    /// Model version.
    pub version: String,
    /// Its confidence at the time, 0..=1.
    pub confidence: f64,
}

/// What an audit record is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AuditKind {
    /// A command and the governors' verdict on it.
    Command,
    /// A safety action a governor took on its own.
    SafetyAction,
    /// An actuator confirmed that desired values reached the machine.
    Delivered,
    /// Desired values did not reach the machine (refused, past their deadline, or not
    /// confirmed in time).
    DeliveryFailed,
    /// Someone responded to an alarm: acknowledged, shelved, unshelved, took it out of
    /// service or returned it (`command` names the response, `reason` the alarm).
    AlarmResponse,
    /// A model was deployed to the twin: put in production in place of another
    /// version, started or stopped as a shadow (`command` says which, `models` the
    /// model, `reason` the versions and deployment).
    ModelDeployment,
}

/// One audit record.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AuditRecord {
    /// Node-wide sequence number, assigned when the record is journaled.
    pub seq: u64,
    /// When the decision was taken.
    pub at: Timestamp,
    /// The twin concerned.
    pub asset: AssetPath,
    /// Command or safety action.
    pub kind: AuditKind,
    /// The command's id.
    pub command_id: CommandId,
    /// The command's name.
    pub command: String,
    /// Its parameters as requested, before any governor reviewed them. Only the
    /// values in `applied` ever leave the twin.
    pub requested: Vec<(String, Value)>,
    /// Who asked (for safety actions: the governor).
    pub origin: Origin,
    /// The twin's state version the decision was based on.
    pub state_version: u64,
    /// Models that informed the decision, with version and confidence.
    pub models: Vec<ModelInfo>,
    /// The outcome.
    pub verdict: Verdict,
    /// Desired values written, after clamping (empty when denied).
    pub applied: Vec<(String, Value)>,
    /// Why (safety actions: the governor's reason).
    pub reason: String,
}
