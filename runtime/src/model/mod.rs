//! Models: explain a twin's state from its samples and project it forward.

pub mod deploy;
pub mod package;
pub mod recommend;
pub mod registry;

use std::collections::BTreeMap;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::sample::Sample;
use crate::time::Timestamp;
use crate::twin::{Severity, TwinView};
use crate::value::Value;

/// A model a twin runs. One instance per twin; it lives inside the twin actor.
///
/// `observe` runs for every sample that becomes its channel's current value, and
/// `observe_late` for every late one (older than the current value, kept in history),
/// in the actor's message handling, so both must be quick and must not block. They are
/// also re-run over the journal tail during recovery, so they must be deterministic
/// given the model's saved state and the samples.
pub trait Model: Send + 'static {
    /// The model's name, unique within the twin.
    fn name(&self) -> &str;

    /// The model's version, recorded in audit records it informs.
    fn version(&self) -> &str;

    /// Names of the derived values this model writes, in slot order.
    fn outputs(&self) -> Vec<String>;

    /// Updates derived values, alarms and health from a newly applied sample.
    fn observe(&mut self, sample: &Sample, twin: &TwinView<'_>, out: &mut ModelOutput);

    /// Takes in a late sample: older than its channel's current value (out of order,
    /// or store-and-forward data sent after a connection came back). It is in history
    /// already. By default a model ignores it: a model of the present must not be taken
    /// back in time by old data. A model that can use it (a counter, an integral)
    /// overrides this.
    fn observe_late(&mut self, sample: &Sample, twin: &TwinView<'_>, out: &mut ModelOutput) {
        let _ = (sample, twin, out);
    }

    /// Projects the twin forward over `scenario.horizon` under the scenario's
    /// desired values, writing series into `trajectory`. Must not change `self`.
    fn project(&self, twin: &TwinView<'_>, scenario: &Scenario, trajectory: &mut Trajectory);

    /// Confidence in the model's current outputs, 0..=1.
    fn confidence(&self) -> f64 {
        1.0
    }

    /// Serializes internal state for snapshots.
    fn save(&self) -> Vec<u8> {
        Vec::new()
    }

    /// Restores internal state saved by [`Model::save`].
    fn restore(&mut self, saved: &[u8]) -> Result<(), String> {
        let _ = saved;
        Ok(())
    }
}

/// What a model produced for one sample. Reused across samples.
#[derive(Debug, Default)]
pub struct ModelOutput {
    pub(crate) values: Vec<(u16, f64, f64)>,
    pub(crate) raised: Vec<(String, Severity, String)>,
    pub(crate) cleared: Vec<String>,
    pub(crate) health: Option<f64>,
    pub(crate) explained: Vec<(String, String, Vec<ExplainedInput>)>,
}

/// Why an alarm was raised: the model (or governor) that raised it, its version and
/// confidence then, what it concluded and the inputs it concluded it from.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Explanation {
    /// The model or governor.
    pub source: String,
    /// Its version.
    pub version: String,
    /// Its confidence when it raised the alarm, 0..=1.
    pub confidence: f64,
    /// What it concluded, in a sentence.
    pub summary: String,
    /// The inputs that contributed, with their values then.
    pub inputs: Vec<ExplainedInput>,
}

/// One input to an explanation.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ExplainedInput {
    /// What it is (`temperature`, `expected temperature`, `speed`).
    pub name: String,
    /// Its value.
    pub value: f64,
    /// Its unit.
    pub unit: String,
}

impl ExplainedInput {
    /// An input `name` of `value` in `unit`.
    pub fn new(name: impl Into<String>, value: f64, unit: impl Into<String>) -> Self {
        Self {
            name: name.into(),
            value,
            unit: unit.into(),
        }
    }
}

impl ModelOutput {
    /// Sets derived value `slot` (index into [`Model::outputs`]) with a confidence.
    pub fn set(&mut self, slot: usize, value: f64, confidence: f64) {
        if value.is_finite() {
            self.values
                .push((slot as u16, value, confidence.clamp(0.0, 1.0)));
        }
    }

    /// Raises (or updates) an alarm. Call on transitions: repeated identical raises are
    /// ignored, but each call allocates.
    pub fn raise(
        &mut self,
        code: impl Into<String>,
        severity: Severity,
        message: impl Into<String>,
    ) {
        self.raised.push((code.into(), severity, message.into()));
    }

    /// Says why alarm `code` (raised in the same output) was raised: a sentence and
    /// the inputs it rests on. The twin adds the model's name, version and confidence.
    pub fn explain(
        &mut self,
        code: impl Into<String>,
        summary: impl Into<String>,
        inputs: Vec<ExplainedInput>,
    ) {
        self.explained.push((code.into(), summary.into(), inputs));
    }

    /// Clears an alarm by code, if active.
    pub fn clear(&mut self, code: impl Into<String>) {
        self.cleared.push(code.into());
    }

    /// Reports this model's view of the twin's health, 0..=1.
    pub fn health(&mut self, health: f64) {
        if health.is_finite() {
            self.health = Some(health.clamp(0.0, 1.0));
        }
    }

    /// Derived values set since the last reset: `(slot, value, confidence)`.
    pub fn values(&self) -> &[(u16, f64, f64)] {
        &self.values
    }

    /// Alarms raised since the last reset: `(code, severity, message)`.
    pub fn raised(&self) -> &[(String, Severity, String)] {
        &self.raised
    }

    /// Alarm codes cleared since the last reset.
    pub fn cleared(&self) -> &[String] {
        &self.cleared
    }

    /// The health reported since the last reset, if any.
    pub fn health_value(&self) -> Option<f64> {
        self.health
    }

    /// Empties the output for the next sample, keeping its buffers.
    pub fn reset(&mut self) {
        self.values.clear();
        self.raised.clear();
        self.cleared.clear();
        self.health = None;
        self.explained.clear();
    }
}

/// A what-if question: hold these desired values for this long.
#[derive(Debug, Clone)]
pub struct Scenario {
    /// When the projection starts.
    pub start: Timestamp,
    /// How far to project.
    pub horizon: Duration,
    /// Spacing of projected points.
    pub step: Duration,
    /// Desired values (by name) in force during the projection.
    pub desired: BTreeMap<String, Value>,
}

impl Scenario {
    /// A desired value in force during the scenario.
    pub fn desired(&self, name: &str) -> Option<Value> {
        self.desired.get(name).copied()
    }

    /// Offsets (seconds from start) of every projected point, step by step up to the
    /// horizon inclusive.
    pub fn times(&self) -> impl Iterator<Item = f64> + '_ {
        let step = self.step.as_secs_f64().max(1e-3);
        let horizon = self.horizon.as_secs_f64();
        let count = (horizon / step).floor() as usize;
        (0..=count.min(100_000)).map(move |i| i as f64 * step)
    }
}

/// One projected point.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct TrajectoryPoint {
    /// Seconds from the scenario start.
    pub t: f64,
    /// Projected value.
    pub value: f64,
    /// Lower bound of where the value is expected, when the model can tell
    /// ([`BOUND_Z`] standard errors below `value`).
    #[serde(default)]
    pub lower: Option<f64>,
    /// Upper bound of where the value is expected, when the model can tell.
    #[serde(default)]
    pub upper: Option<f64>,
}

/// How many standard errors a projection's bounds lie from its value: about 95 % of
/// outcomes under Gaussian errors.
pub const BOUND_Z: f64 = 2.0;

impl TrajectoryPoint {
    /// A point without bounds.
    pub fn new(t: f64, value: f64) -> Self {
        Self {
            t,
            value,
            lower: None,
            upper: None,
        }
    }

    /// A point with bounds [`BOUND_Z`] standard errors `error` either side; without
    /// bounds when `error` is not a finite number, 0 or more.
    pub fn with_error(t: f64, value: f64, error: f64) -> Self {
        let half = BOUND_Z * error;
        if !(half.is_finite() && half >= 0.0) {
            return Self::new(t, value);
        }
        Self {
            t,
            value,
            lower: Some(value - half),
            upper: Some(value + half),
        }
    }
}

/// Projected series by name (channels and derived values).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Trajectory {
    /// Series by name, points in time order.
    pub series: BTreeMap<String, Vec<TrajectoryPoint>>,
}

impl Trajectory {
    /// Appends a point to series `name`.
    pub fn push(&mut self, name: &str, t: f64, value: f64) {
        self.push_point(name, TrajectoryPoint::new(t, value));
    }

    /// Appends a point, with or without bounds, to series `name`; a point whose value
    /// is not finite is left out.
    pub fn push_point(&mut self, name: &str, point: TrajectoryPoint) {
        if !point.value.is_finite() {
            return;
        }
        match self.series.get_mut(name) {
            Some(series) => series.push(point),
            None => {
                self.series.insert(name.to_string(), vec![point]);
            }
        }
    }

    /// The last projected value of a series.
    pub fn last(&self, name: &str) -> Option<f64> {
        self.series.get(name)?.last().map(|p| p.value)
    }
}
