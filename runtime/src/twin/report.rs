//! Readable copies of a twin: its report, its run state, a what-if answer.

use serde::{Deserialize, Serialize};

use crate::audit::ModelInfo;
use crate::command::Verdict;
use crate::model::Trajectory;
use crate::path::AssetPath;
use crate::sample::Sample;
use crate::time::Timestamp;
use crate::twin::state::{Alarm, ChannelCondition, DerivedValue, DesiredValue, Trip};
use crate::value::Value;

/// Run state of a machine, derived from trips and the conventional `running` desired value.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RunState {
    /// Running (or the type has no `running` desired value).
    Running,
    /// Stopped by command.
    Stopped,
    /// Stopped by a latched safety trip.
    Tripped,
}

/// The result of a what-if question.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct WhatIf {
    /// The verdict the governors would give now.
    pub verdict: Verdict,
    /// Desired values the projection assumed.
    pub assumed: Vec<(String, Value)>,
    /// Projected series.
    pub trajectory: Trajectory,
    /// Models that projected, with version and confidence.
    pub models: Vec<ModelInfo>,
}

/// A reported value in a [`TwinReport`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ReportedValue {
    /// Channel name.
    pub channel: String,
    /// Unit.
    pub unit: String,
    /// The current sample, if any arrived; its quality is the condition's while there
    /// is one.
    pub sample: Option<Sample>,
    /// Why the value cannot be trusted now, if it cannot though no reading says so.
    pub condition: Option<ChannelCondition>,
}

/// A readable copy of a twin's state (without history and anti-replay windows).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TwinReport {
    /// The twin.
    pub asset: AssetPath,
    /// Its type.
    pub twin_type: String,
    /// Its version.
    pub version: u64,
    /// Run state.
    pub run_state: RunState,
    /// Reported values, by channel.
    pub reported: Vec<ReportedValue>,
    /// Desired values by name.
    pub desired: Vec<(String, DesiredValue)>,
    /// Derived values.
    pub derived: Vec<DerivedValue>,
    /// Active alarms.
    pub alarms: Vec<Alarm>,
    /// Latched trips.
    pub trips: Vec<Trip>,
    /// Health, 0..=1.
    pub health: f64,
    /// Models with version and confidence.
    pub models: Vec<ModelInfo>,
    /// Last change.
    pub updated_at: Timestamp,
}

impl TwinReport {
    /// The current value of a channel.
    pub fn value(&self, channel: &str) -> Option<f64> {
        self.reported
            .iter()
            .find(|r| r.channel == channel)?
            .sample
            .map(|s| s.value)
    }

    /// A derived value by name.
    pub fn derived(&self, name: &str) -> Option<f64> {
        self.derived.iter().find(|d| *d.name == *name)?.value
    }

    /// A desired value by name.
    pub fn desired(&self, name: &str) -> Option<Value> {
        self.desired
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, d)| d.value)
    }

    /// True when an alarm with this code is active.
    pub fn has_alarm(&self, code: &str) -> bool {
        self.alarms.iter().any(|a| a.code == code && a.active)
    }
}

/// A twin's listing line ([`Twins::summary`](super::Twins::summary)).
#[derive(Debug, Clone, PartialEq)]
pub struct TwinSummary {
    /// The twin.
    pub asset: AssetPath,
    /// Its type's name.
    pub twin_type: String,
    /// Its version.
    pub version: u64,
    /// Run state.
    pub run_state: RunState,
    /// Health, 0..=1.
    pub health: f64,
    /// Its alarms.
    pub alarms: Vec<Alarm>,
}
