//! The logic of one twin, independent of the actor that hosts it: applying samples,
//! running models and governors, executing commands and safety actions, snapshots and
//! recovery. Everything here is synchronous and deterministic given its inputs.
//!
//! The seams: [`samples`] (readings and what models and governors make of them),
//! [`commands`] (review and apply), [`safety`] (governors' safety actions),
//! [`delivery`] (how desired values reach the machine), [`freshness`] (stale and bad
//! channels), [`alarms`] (responses to alarms) and [`recovery`] (snapshots and
//! journal replay).

mod alarms;
mod commands;
mod delivery;
mod freshness;
mod models;
mod recovery;
mod safety;
mod samples;
#[cfg(test)]
mod tests;

pub use commands::resolve_changes;
pub use delivery::undelivered_code;
pub use freshness::CONDITION_ALARM_SOURCE;
pub use models::{Deployed, ModelPlan, ModelSwap, PlanOutcome, PlannedShadow};

use std::sync::Arc;

use crate::audit::{AuditRecord, ModelInfo};
use crate::config::TwinType;
use crate::governor::{Governor, SafetyDemand};
use crate::journal::{JournalEvent, JournalRecord};
use crate::metrics::SourceCounts;
use crate::model::{Model, ModelOutput};
use crate::path::AssetPath;
use crate::sample::{ChannelId, Sample, SourceId};
use crate::time::Timestamp;
use crate::twin::actuation::Actuation;
use crate::twin::change::{TwinChange, TwinEvent};
use crate::twin::report::{ReportedValue, RunState, TwinReport};
use crate::twin::state::{DerivedValue, SampleOutcome, SampleRejection, TwinState};

/// What handling one message produced besides the state change: journal records,
/// audit records, actuations and published changes.
#[derive(Default)]
pub struct Effects {
    /// Encoded journal records.
    pub records: Vec<u8>,
    /// Number of records.
    pub events: u32,
    /// Audit records.
    pub audit: Vec<AuditRecord>,
    /// Safety actuations to publish at once.
    pub safety_actuations: Vec<Actuation>,
    /// Changes for subscribers (only collected when `collect_changes`).
    pub changes: Vec<TwinEvent>,
    /// Whether anyone listens for changes.
    pub collect_changes: bool,
    /// A safety action happened: commit without waiting for the batch interval.
    pub urgent: bool,
    /// Samples applied as current values.
    pub applied: u32,
    /// Late samples kept in history only.
    pub late: u32,
    /// Duplicates ignored.
    pub duplicates: u32,
    /// Samples refused as bad input, with the reason.
    pub refused: Vec<(Sample, SampleRejection)>,
    /// Channels that came under a condition (stale or bad).
    pub conditions: u32,
    /// What became of the readings, per source.
    pub by_source: Vec<(SourceId, SourceCounts)>,
}

impl Effects {
    /// Counts one reading's outcome under its source.
    pub(super) fn count(&mut self, source: SourceId, outcome: SampleOutcome) {
        let slot = match self.by_source.iter_mut().find(|(s, _)| *s == source) {
            Some((_, counts)) => counts,
            None => {
                self.by_source.push((source, SourceCounts::default()));
                &mut self.by_source.last_mut().expect("just pushed").1
            }
        };
        match outcome {
            SampleOutcome::Applied => slot.applied += 1,
            SampleOutcome::Late => slot.late += 1,
            SampleOutcome::Duplicate | SampleOutcome::Renewed => slot.duplicate += 1,
            SampleOutcome::Refused(_) => slot.refused += 1,
        }
    }
}

impl Effects {
    fn record(&mut self, twin: u32, version: u64, event: JournalEvent) {
        let record = JournalRecord {
            twin,
            version,
            event,
        };
        match postcard::to_extend(&record, std::mem::take(&mut self.records)) {
            Ok(records) => self.records = records,
            Err(error) => tracing::error!(%error, "journal record encoding failed"),
        }
        self.events += 1;
    }
}

/// One twin's state, models and governors.
pub struct TwinCore {
    id: u32,
    twin_type: Arc<TwinType>,
    state: TwinState,
    models: Vec<Box<dyn Model>>,
    governors: Vec<Box<dyn Governor>>,
    /// Index of each model's first derived slot in `state.derived`.
    slots: Vec<usize>,
    model_health: Vec<f64>,
    output: ModelOutput,
    demands: Vec<(usize, SafetyDemand)>,
    events_since_snapshot: u64,
    /// Channel ids of the restored snapshot's schema → current ids, while replaying a
    /// journal tail written under a type that has changed since.
    replay_channels: Option<Vec<Option<u16>>>,
    /// A reading started or resumed a channel's freshness clock since the last sweep.
    freshness_changed: bool,
    /// Codes of alarms that became active since the actor last took them.
    activations: Vec<String>,
    /// Per model: the deployment it came from, when not from the type.
    deployed: Vec<Option<Deployed>>,
    /// Shadow models beside production ones.
    shadows: Vec<models::Shadow>,
    /// Why the models' active alarms were raised, by alarm code.
    explanations: Vec<(String, crate::model::Explanation)>,
}

impl TwinCore {
    /// A twin in its initial state.
    pub fn new(
        id: u32,
        path: AssetPath,
        twin_type: Arc<TwinType>,
        models: Vec<Box<dyn Model>>,
        governors: Vec<Box<dyn Governor>>,
        history_capacity: usize,
    ) -> Self {
        let state = TwinState::new(path, &twin_type, history_capacity);
        let mut core = Self {
            id,
            twin_type,
            state,
            model_health: vec![1.0; models.len()],
            deployed: vec![None; models.len()],
            models,
            governors,
            slots: Vec::new(),
            output: ModelOutput::default(),
            demands: Vec::new(),
            events_since_snapshot: 0,
            replay_channels: None,
            freshness_changed: false,
            activations: Vec::new(),
            shadows: Vec::new(),
            explanations: Vec::new(),
        };
        core.layout_derived(&[]);
        core
    }

    pub(super) fn layout_derived(&mut self, previous: &[DerivedValue]) {
        let mut derived = Vec::new();
        self.slots.clear();
        for model in &self.models {
            self.slots.push(derived.len());
            for name in model.outputs() {
                let mut value = DerivedValue::empty(&name, model.name());
                if let Some(kept) = previous
                    .iter()
                    .find(|d| *d.name == *name && *d.model == *model.name())
                {
                    value.value = kept.value;
                    value.confidence = kept.confidence;
                    value.at = kept.at;
                }
                derived.push(value);
            }
        }
        self.state.derived = derived;
    }

    /// The twin's durable id.
    pub fn id(&self) -> u32 {
        self.id
    }

    /// The twin's path.
    pub fn path(&self) -> &AssetPath {
        &self.state.path
    }

    /// The twin's type.
    pub fn twin_type(&self) -> &Arc<TwinType> {
        &self.twin_type
    }

    /// Why the active alarms its models raised were raised, by alarm code.
    pub fn explanations(&self) -> Vec<(String, crate::model::Explanation)> {
        self.explanations
            .iter()
            .filter(|(code, _)| {
                self.state
                    .alarms
                    .iter()
                    .any(|a| a.active && a.code == *code)
            })
            .cloned()
            .collect()
    }

    /// The twin's state.
    pub fn state(&self) -> &TwinState {
        &self.state
    }

    /// Journaled events since the last snapshot.
    pub fn events_since_snapshot(&self) -> u64 {
        self.events_since_snapshot
    }

    /// Run state.
    pub fn run_state(&self) -> RunState {
        if self.state.is_tripped() {
            return RunState::Tripped;
        }
        let running = self
            .twin_type
            .desired("running")
            .and_then(|(index, _)| self.state.desired[index].value.as_bool());
        match running {
            Some(false) => RunState::Stopped,
            _ => RunState::Running,
        }
    }

    /// The twin's models, in declaration order.
    pub fn models(&self) -> &[Box<dyn Model>] {
        &self.models
    }

    /// Models with their current version and confidence.
    pub fn model_infos(&self) -> Vec<ModelInfo> {
        self.models
            .iter()
            .map(|m| ModelInfo {
                name: m.name().to_string(),
                version: m.version().to_string(),
                confidence: m.confidence(),
            })
            .collect()
    }

    pub(super) fn channel_name(&self, channel: ChannelId) -> String {
        self.twin_type
            .channel_spec(channel)
            .map(|c| c.name.clone())
            .unwrap_or_default()
    }

    pub(super) fn bump(&mut self, at: Timestamp) {
        self.state.version += 1;
        self.state.updated_at = at;
        self.events_since_snapshot += 1;
    }

    /// Publishes `changes` of this twin at its current version, when anyone listens.
    pub(super) fn publish(&self, changes: impl IntoIterator<Item = TwinChange>, fx: &mut Effects) {
        if !fx.collect_changes {
            return;
        }
        fx.changes
            .extend(changes.into_iter().map(|change| TwinEvent {
                asset: self.state.path.clone(),
                version: self.state.version,
                change,
            }));
    }

    pub(super) fn update_health(&mut self) {
        let models = self.model_health.iter().copied().fold(1.0_f64, f64::min);
        self.state.health = if self.state.is_tripped() { 0.0 } else { models };
    }

    /// A readable copy of the state.
    pub fn report(&self) -> TwinReport {
        TwinReport {
            asset: self.state.path.clone(),
            twin_type: self.twin_type.name.clone(),
            version: self.state.version,
            run_state: self.run_state(),
            reported: self
                .twin_type
                .channels
                .iter()
                .zip(&self.state.channels)
                .map(|(spec, channel)| ReportedValue {
                    channel: spec.name.clone(),
                    unit: spec.unit.clone(),
                    sample: channel.current,
                    condition: channel.condition.as_deref().cloned(),
                })
                .collect(),
            desired: self
                .twin_type
                .desired
                .iter()
                .zip(&self.state.desired)
                .map(|(spec, value)| {
                    let mut value = value.clone();
                    value.agrees = spec.reported.and_then(|channel| {
                        let sample = self.state.current(channel)?;
                        Some(spec.agrees(value.value, sample.value))
                    });
                    (spec.name.clone(), value)
                })
                .collect(),
            derived: self.state.derived.clone(),
            alarms: self.state.alarms.clone(),
            trips: self.state.trips.clone(),
            health: self.state.health,
            models: self.model_infos(),
            updated_at: self.state.updated_at,
        }
    }

    /// Samples of a channel in `[from, to]` from the history ring, oldest first.
    pub fn history(&self, channel: ChannelId, from: Timestamp, to: Timestamp) -> Vec<Sample> {
        self.state
            .channels
            .get(channel.0 as usize)
            .map(|c| {
                c.history
                    .iter()
                    .filter(|s| s.source_time >= from && s.source_time <= to)
                    .copied()
                    .collect()
            })
            .unwrap_or_default()
    }
}
