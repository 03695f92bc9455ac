//! The logic of one twin, independent of the actor that hosts it: applying samples,
//! running models and governors, executing commands and safety actions, snapshots and
//! recovery. Everything here is synchronous and deterministic given its inputs.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::state::{
    Alarm, Delivery, DeliveryOutcome, DeliveryReport, DeliveryState, DerivedValue, DesiredValue,
    SampleOutcome, Severity, Trip, TwinState, TwinView,
};
use crate::audit::{AuditKind, AuditRecord, ModelInfo};
use crate::command::{Command, CommandId, DesiredChange, Origin, OriginKind, Verdict};
use crate::config::{CommandSpec, SetSource, TwinType};
use crate::error::Error;
use crate::governor::{Governor, Proposal, Review, SafetyDemand};
use crate::journal::{JournalEvent, JournalRecord, Snapshot};
use crate::model::{Model, ModelOutput, Scenario, Trajectory};
use crate::path::AssetPath;
use crate::sample::{ChannelId, Quality, Sample};
use crate::time::Timestamp;
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

/// A change of a twin, published to subscribers.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum TwinChange {
    /// A channel's current value changed.
    Reported {
        /// The channel.
        channel: String,
        /// New value.
        value: f64,
        /// Its quality.
        quality: Quality,
        /// Its source time.
        source_time: Timestamp,
    },
    /// Desired values changed (command or safety action).
    Desired {
        /// New values by name.
        values: Vec<(String, Value)>,
    },
    /// An alarm was raised or changed.
    AlarmRaised(Alarm),
    /// An alarm cleared.
    AlarmCleared {
        /// Its code.
        code: String,
    },
    /// A trip latched.
    Tripped(Trip),
    /// Latched trips were cleared.
    TripsCleared,
    /// The twin restarted from durable state after a crash.
    Restarted,
    /// How far desired values got on their way to the machine.
    Delivery {
        /// Each value's delivery, by name.
        values: Vec<(String, Delivery)>,
    },
}

/// A published change with the twin and version it produced.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TwinEvent {
    /// The twin.
    pub asset: AssetPath,
    /// Its version after the change.
    pub version: u64,
    /// What changed.
    pub change: TwinChange,
}

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
    asset: AssetPath,
    version: u64,
    command_id: CommandId,
    command: String,
    values: Vec<(String, Value)>,
    origin: Origin,
    safety: bool,
    reason: String,
    at: Timestamp,
    deadline: Option<Timestamp>,
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
    /// The current sample, if any arrived.
    pub sample: Option<Sample>,
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
        self.derived.iter().find(|d| d.name == name)?.value
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
        self.alarms.iter().any(|a| a.code == code)
    }
}

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
    /// Samples kept in history only.
    pub stale: u32,
    /// Duplicates ignored.
    pub duplicates: u32,
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
            models,
            governors,
            slots: Vec::new(),
            output: ModelOutput::default(),
            demands: Vec::new(),
            events_since_snapshot: 0,
            replay_channels: None,
        };
        core.layout_derived(&[]);
        core
    }

    fn layout_derived(&mut self, previous: &[DerivedValue]) {
        let mut derived = Vec::new();
        self.slots.clear();
        for model in &self.models {
            self.slots.push(derived.len());
            for name in model.outputs() {
                let kept = previous
                    .iter()
                    .find(|d| d.name == name && d.model == model.name());
                derived.push(kept.cloned().unwrap_or(DerivedValue {
                    name,
                    model: model.name().to_string(),
                    value: None,
                    confidence: 0.0,
                    at: Timestamp(0),
                }));
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

    /// Applies a validated sample: state, journal record, models, then governors'
    /// watch and any safety action they demand, all before returning.
    pub fn apply_sample(&mut self, sample: &Sample, fx: &mut Effects) -> SampleOutcome {
        let outcome = self.state.apply_sample(sample);
        match outcome {
            SampleOutcome::Duplicate => {
                fx.duplicates += 1;
                return outcome;
            }
            SampleOutcome::Stale => fx.stale += 1,
            SampleOutcome::Applied => fx.applied += 1,
        }
        self.bump(sample.receive_time);
        fx.record(self.id, self.state.version, JournalEvent::Sample(*sample));
        if outcome == SampleOutcome::Applied {
            if fx.collect_changes {
                fx.changes.push(TwinEvent {
                    asset: self.state.path.clone(),
                    version: self.state.version,
                    change: TwinChange::Reported {
                        channel: self.channel_name(sample.channel),
                        value: sample.value,
                        quality: sample.quality,
                        source_time: sample.source_time,
                    },
                });
            }
            self.run_models(sample, Some(fx));
            self.watch(sample, fx);
        }
        outcome
    }

    fn channel_name(&self, channel: ChannelId) -> String {
        self.twin_type
            .channel_spec(channel)
            .map(|c| c.name.clone())
            .unwrap_or_default()
    }

    fn bump(&mut self, at: Timestamp) {
        self.state.version += 1;
        self.state.updated_at = at;
        self.events_since_snapshot += 1;
    }

    fn run_models(&mut self, sample: &Sample, mut fx: Option<&mut Effects>) {
        for index in 0..self.models.len() {
            self.output.reset();
            let view = TwinView {
                twin_type: &self.twin_type,
                state: &self.state,
            };
            self.models[index].observe(sample, &view, &mut self.output);
            let model_name = self.models[index].name();
            let base = self.slots[index];
            for &(slot, value, confidence) in &self.output.values {
                if let Some(derived) = self.state.derived.get_mut(base + slot as usize) {
                    derived.value = Some(value);
                    derived.confidence = confidence;
                    derived.at = sample.source_time;
                }
            }
            for (code, severity, message) in self.output.raised.drain(..) {
                let alarm = Alarm {
                    code,
                    severity,
                    message,
                    raised_by: model_name.to_string(),
                    since: sample.source_time,
                };
                if self.state.raise_alarm(alarm.clone())
                    && let Some(fx) = fx.as_deref_mut()
                    && fx.collect_changes
                {
                    fx.changes.push(TwinEvent {
                        asset: self.state.path.clone(),
                        version: self.state.version,
                        change: TwinChange::AlarmRaised(alarm),
                    });
                }
            }
            for code in self.output.cleared.drain(..) {
                if self.state.clear_alarm(&code)
                    && let Some(fx) = fx.as_deref_mut()
                    && fx.collect_changes
                {
                    fx.changes.push(TwinEvent {
                        asset: self.state.path.clone(),
                        version: self.state.version,
                        change: TwinChange::AlarmCleared { code },
                    });
                }
            }
            if let Some(health) = self.output.health {
                self.model_health[index] = health;
            }
        }
        self.update_health();
    }

    fn update_health(&mut self) {
        let models = self.model_health.iter().copied().fold(1.0_f64, f64::min);
        self.state.health = if self.state.is_tripped() { 0.0 } else { models };
    }

    fn watch(&mut self, sample: &Sample, fx: &mut Effects) {
        self.demands.clear();
        let view = TwinView {
            twin_type: &self.twin_type,
            state: &self.state,
        };
        for (index, governor) in self.governors.iter_mut().enumerate() {
            if let Some(demand) = governor.watch(sample, &view) {
                self.demands.push((index, demand));
            }
        }
        let demands = std::mem::take(&mut self.demands);
        for (index, demand) in &demands {
            self.execute_safety(*index, demand, sample.receive_time, fx);
        }
        self.demands = demands;
    }

    fn execute_safety(
        &mut self,
        governor: usize,
        demand: &SafetyDemand,
        at: Timestamp,
        fx: &mut Effects,
    ) {
        let governor_name = self.governors[governor].name().to_string();
        if !self.governors[governor]
            .safety_commands()
            .contains(&demand.command)
        {
            tracing::error!(asset = %self.state.path, governor = %governor_name, command = %demand.command, "safety action demands a command its governor does not declare in `safety_commands`; the node's start check did not cover it");
        }
        let Some(spec) = self.twin_type.commands.get(&demand.command).cloned() else {
            tracing::error!(asset = %self.state.path, governor = %governor_name, command = %demand.command, "safety action names an unknown command");
            return;
        };
        let command = Command {
            id: CommandId::random(),
            asset: self.state.path.clone(),
            name: demand.command.clone(),
            params: demand.params.clone(),
            origin: Origin {
                kind: OriginKind::Safety,
                principal: governor_name.clone(),
            },
            issued_at: at,
            deadline: None,
            idempotent: false,
        };
        let changes = match resolve_changes(&self.twin_type, &spec, &command) {
            Ok(changes) => changes,
            Err(error) => {
                tracing::error!(asset = %self.state.path, governor = %governor_name, %error, "safety action has invalid parameters");
                return;
            }
        };
        let applied: Vec<(String, Value)> =
            changes.iter().map(|c| (c.name.clone(), c.value)).collect();
        let state_version = self.state.version;
        self.apply_safety(
            &governor_name,
            &demand.reason,
            &demand.command,
            &applied,
            demand.latch,
            at,
            Some(fx),
        );
        fx.record(
            self.id,
            self.state.version,
            JournalEvent::Safety {
                governor: governor_name.clone(),
                reason: demand.reason.clone(),
                command: demand.command.clone(),
                changes: applied.clone(),
                latch: demand.latch,
                at,
            },
        );
        fx.audit.push(AuditRecord {
            seq: 0,
            at,
            asset: self.state.path.clone(),
            kind: AuditKind::SafetyAction,
            command_id: command.id.clone(),
            command: command.name.clone(),
            requested: command.params.clone(),
            origin: command.origin.clone(),
            state_version,
            models: self.model_infos(),
            verdict: Verdict::Accepted,
            applied: applied.clone(),
            reason: demand.reason.clone(),
        });
        fx.safety_actuations.push(Actuation {
            asset: self.state.path.clone(),
            version: self.state.version,
            command_id: command.id,
            command: command.name,
            values: applied,
            origin: command.origin,
            safety: true,
            reason: demand.reason.clone(),
            at,
            deadline: None,
        });
        fx.urgent = true;
        tracing::warn!(asset = %self.state.path, governor = %governor_name, reason = %demand.reason, "safety action");
    }

    #[allow(clippy::too_many_arguments)]
    fn apply_safety(
        &mut self,
        governor: &str,
        reason: &str,
        command: &str,
        changes: &[(String, Value)],
        latch: bool,
        at: Timestamp,
        fx: Option<&mut Effects>,
    ) {
        let delivery = Delivery {
            state: DeliveryState::Pending,
            version: self.state.version + 1,
            command_id: None,
            command: command.to_string(),
            origin: Some(Origin {
                kind: OriginKind::Safety,
                principal: governor.to_string(),
            }),
            safety: true,
            deadline: None,
            at,
            by: String::new(),
            reason: String::new(),
        };
        let deliveries = self.set_desired(changes, at, &delivery);
        let mut published = Vec::new();
        if latch {
            let trip = Trip {
                governor: governor.to_string(),
                reason: reason.to_string(),
                at,
            };
            self.state.trips.push(trip.clone());
            let alarm = Alarm {
                code: format!("trip:{governor}"),
                severity: Severity::Critical,
                message: reason.to_string(),
                raised_by: governor.to_string(),
                since: at,
            };
            self.state.raise_alarm(alarm.clone());
            published.push(TwinChange::Tripped(trip));
            published.push(TwinChange::AlarmRaised(alarm));
        }
        self.bump(at);
        self.update_health();
        if let Some(fx) = fx
            && fx.collect_changes
        {
            published.insert(
                0,
                TwinChange::Desired {
                    values: changes.to_vec(),
                },
            );
            published.insert(1, TwinChange::Delivery { values: deliveries });
            for change in published {
                fx.changes.push(TwinEvent {
                    asset: self.state.path.clone(),
                    version: self.state.version,
                    change,
                });
            }
        }
    }

    /// Sets desired values, each pending delivery as `delivery`; returns the deliveries
    /// by name.
    fn set_desired(
        &mut self,
        changes: &[(String, Value)],
        at: Timestamp,
        delivery: &Delivery,
    ) -> Vec<(String, Delivery)> {
        let mut deliveries = Vec::with_capacity(changes.len());
        for (name, value) in changes {
            if let Some((index, _)) = self.twin_type.desired(name) {
                self.state.desired[index] = DesiredValue {
                    value: *value,
                    set_at: at,
                    delivery: delivery.clone(),
                    agrees: None,
                };
                // A new value supersedes the one that could not be delivered.
                self.state.clear_alarm(&undelivered_code(name));
                deliveries.push((name.clone(), delivery.clone()));
            }
        }
        deliveries
    }

    /// Reviews a command with every governor and applies it unless denied. The audit
    /// record is added to `fx` in every case.
    pub fn command(
        &mut self,
        command: &Command,
        now: Timestamp,
        fx: &mut Effects,
    ) -> Result<(Verdict, Vec<(String, Value)>), Error> {
        let spec = self.command_spec(command)?;
        let changes = resolve_changes(&self.twin_type, &spec, command)?;
        let mut proposal = Proposal::new(command, changes, spec.clears_trips, now);
        let verdict = self.review(&mut proposal);
        let applied: Vec<(String, Value)> = if verdict.is_applied() {
            proposal
                .changes
                .iter()
                .map(|c| (c.name.clone(), c.value))
                .collect()
        } else {
            Vec::new()
        };
        let state_version = self.state.version;
        fx.audit.push(AuditRecord {
            seq: 0,
            at: now,
            asset: self.state.path.clone(),
            kind: AuditKind::Command,
            command_id: command.id.clone(),
            command: command.name.clone(),
            requested: command.params.clone(),
            origin: command.origin.clone(),
            state_version,
            models: self.model_infos(),
            verdict: verdict.clone(),
            applied: applied.clone(),
            reason: match &verdict {
                Verdict::Denied { reason, .. } => reason.clone(),
                Verdict::Clamped { clamps } => clamps
                    .iter()
                    .map(|c| c.reason.as_str())
                    .collect::<Vec<_>>()
                    .join("; "),
                Verdict::Accepted => String::new(),
            },
        });
        if verdict.is_applied() {
            let delivery = Delivery {
                state: DeliveryState::Pending,
                version: self.state.version + 1,
                command_id: Some(command.id.clone()),
                command: command.name.clone(),
                origin: Some(command.origin.clone()),
                safety: false,
                deadline: command.deadline,
                at: now,
                by: String::new(),
                reason: String::new(),
            };
            self.apply_command(&applied, spec.clears_trips, now, &delivery, Some(fx));
            fx.record(
                self.id,
                self.state.version,
                JournalEvent::Command {
                    id: command.id.clone(),
                    name: command.name.clone(),
                    origin: command.origin.clone(),
                    verdict: verdict.clone(),
                    changes: applied.clone(),
                    clears_trips: spec.clears_trips,
                    at: now,
                },
            );
            if command.deadline.is_some() {
                // The command event has no deadline of its own: an annex of the same
                // version carries it, so a value pending across a restart is never sent
                // past it.
                fx.record(
                    self.id,
                    self.state.version,
                    JournalEvent::Delivery {
                        desired: applied.iter().map(|(name, _)| name.clone()).collect(),
                        delivery,
                    },
                );
            }
        }
        Ok((verdict, applied))
    }

    fn command_spec(&self, command: &Command) -> Result<CommandSpec, Error> {
        self.twin_type
            .commands
            .get(&command.name)
            .cloned()
            .ok_or_else(|| Error::UnknownCommand {
                asset: self.state.path.clone(),
                command: command.name.clone(),
            })
    }

    fn review<'a>(&'a self, proposal: &mut Proposal<'a>) -> Verdict {
        if let Some(deadline) = proposal.command.deadline
            && deadline < proposal.now
        {
            return Verdict::Denied {
                governor: "deadline".to_string(),
                reason: format!(
                    "deadline passed {:.3} s ago",
                    proposal.now.secs_since(deadline)
                ),
            };
        }
        let view = TwinView {
            twin_type: &self.twin_type,
            state: &self.state,
        };
        for governor in &self.governors {
            let _span = tracing::info_span!("governor", governor = governor.name()).entered();
            proposal.reviewer = governor.name();
            if let Review::Deny(reason) = governor.review(proposal, &view) {
                return Verdict::Denied {
                    governor: governor.name().to_string(),
                    reason,
                };
            }
        }
        if proposal.clamps.is_empty() {
            Verdict::Accepted
        } else {
            Verdict::Clamped {
                clamps: proposal.clamps.clone(),
            }
        }
    }

    fn apply_command(
        &mut self,
        changes: &[(String, Value)],
        clears_trips: bool,
        at: Timestamp,
        delivery: &Delivery,
        fx: Option<&mut Effects>,
    ) {
        let deliveries = self.set_desired(changes, at, delivery);
        let mut published = vec![
            TwinChange::Desired {
                values: changes.to_vec(),
            },
            TwinChange::Delivery { values: deliveries },
        ];
        if clears_trips && !self.state.trips.is_empty() {
            for trip in std::mem::take(&mut self.state.trips) {
                let code = format!("trip:{}", trip.governor);
                self.state.clear_alarm(&code);
                published.push(TwinChange::AlarmCleared { code });
            }
            published.push(TwinChange::TripsCleared);
        }
        self.bump(at);
        self.update_health();
        if let Some(fx) = fx
            && fx.collect_changes
        {
            for change in published {
                fx.changes.push(TwinEvent {
                    asset: self.state.path.clone(),
                    version: self.state.version,
                    change,
                });
            }
        }
    }

    /// Raises a critical alarm the runtime itself owns (code `code`), published to
    /// watchers; true when it was not raised already. Not journaled: the condition is
    /// the node's, and raised again by the node after a restart if it persists.
    pub fn raise_system_alarm(
        &mut self,
        code: &str,
        message: &str,
        at: Timestamp,
        fx: &mut Effects,
    ) -> bool {
        let alarm = Alarm {
            code: code.to_string(),
            severity: Severity::Critical,
            message: message.to_string(),
            raised_by: "node".to_string(),
            since: at,
        };
        if !self.state.raise_alarm(alarm.clone()) {
            return false;
        }
        if fx.collect_changes {
            fx.changes.push(TwinEvent {
                asset: self.state.path.clone(),
                version: self.state.version,
                change: TwinChange::AlarmRaised(alarm),
            });
        }
        true
    }

    /// Sets the delivery of the named desired values that `delivery`'s version set, and
    /// raises or clears their safety alarm; returns what changed.
    fn set_delivery(&mut self, desired: &[String], delivery: &Delivery) -> Vec<(String, Delivery)> {
        let mut changed = Vec::new();
        for name in desired {
            let Some((index, _)) = self.twin_type.desired(name) else {
                continue;
            };
            let slot = &mut self.state.desired[index];
            if slot.delivery.version != delivery.version || slot.delivery == *delivery {
                continue;
            }
            slot.delivery = delivery.clone();
            let code = undelivered_code(name);
            if delivery.safety && delivery.state == DeliveryState::Failed {
                self.state.raise_alarm(Alarm {
                    code,
                    severity: Severity::Critical,
                    message: format!(
                        "safety action `{}` did not reach the machine: {} ({})",
                        delivery.command, delivery.reason, name
                    ),
                    raised_by: delivery
                        .origin
                        .as_ref()
                        .map(|o| o.principal.clone())
                        .unwrap_or_default(),
                    since: delivery.at,
                });
            } else {
                self.state.clear_alarm(&code);
            }
            changed.push((name.clone(), delivery.clone()));
        }
        changed
    }

    /// Records an actuator's report: a pending or failed value becomes delivered; a
    /// pending one becomes failed. A report about a value set since by a newer
    /// actuation changes nothing. Journaled, audited and published; true when it
    /// changed the state.
    pub fn apply_delivery(&mut self, report: &DeliveryReport, fx: &mut Effects) -> bool {
        let mut by_version: Option<Delivery> = None;
        let mut desired = Vec::new();
        let mut values = Vec::new();
        for name in &report.desired {
            let Some((index, _)) = self.twin_type.desired(name) else {
                continue;
            };
            let slot = &self.state.desired[index];
            let current = &slot.delivery;
            let applies = current.version == report.version
                && match report.outcome {
                    DeliveryOutcome::Delivered => matches!(
                        current.state,
                        DeliveryState::Pending | DeliveryState::Failed
                    ),
                    DeliveryOutcome::Failed(_) => current.state == DeliveryState::Pending,
                };
            if !applies {
                continue;
            }
            if by_version.is_none() {
                let mut next = current.clone();
                match &report.outcome {
                    DeliveryOutcome::Delivered => {
                        next.state = DeliveryState::Delivered;
                        next.reason.clear();
                    }
                    DeliveryOutcome::Failed(reason) => {
                        next.state = DeliveryState::Failed;
                        next.reason.clone_from(reason);
                    }
                }
                next.at = report.at;
                next.by.clone_from(&report.by);
                by_version = Some(next);
            }
            desired.push(name.clone());
            values.push((name.clone(), slot.value));
        }
        let Some(delivery) = by_version else {
            return false;
        };
        self.record_delivery(desired, values, delivery, fx);
        true
    }

    /// Gives up on pending values whose deadline passed, and on safety values no
    /// actuator confirmed within `safety_bound` (raising their critical alarm).
    pub fn expire_deliveries(&mut self, now: Timestamp, safety_bound: Duration, fx: &mut Effects) {
        let bound_us = safety_bound.as_micros() as i64;
        let mut expired = Vec::new();
        for (spec, slot) in self.twin_type.desired.iter().zip(&self.state.desired) {
            let delivery = &slot.delivery;
            if delivery.state != DeliveryState::Pending {
                continue;
            }
            let reason = if delivery.deadline.is_some_and(|deadline| deadline < now) {
                "its deadline passed before an actuator confirmed it; it is not sent".to_string()
            } else if delivery.safety && now.0 - delivery.at.0 >= bound_us {
                format!(
                    "no actuator confirmed it within {} ms",
                    safety_bound.as_millis()
                )
            } else {
                continue;
            };
            let mut next = delivery.clone();
            next.state = DeliveryState::Failed;
            next.at = now;
            next.by = "twin".to_string();
            next.reason = reason;
            expired.push((spec.name.clone(), slot.value, next));
        }
        for (name, value, delivery) in expired {
            self.record_delivery(vec![name.clone()], vec![(name, value)], delivery, fx);
        }
    }

    fn record_delivery(
        &mut self,
        desired: Vec<String>,
        values: Vec<(String, Value)>,
        delivery: Delivery,
        fx: &mut Effects,
    ) {
        let alarm_of = |state: &TwinState, name: &str| {
            let code = undelivered_code(name);
            state.alarms.iter().find(|a| a.code == code).cloned()
        };
        let before: Vec<(String, Option<Alarm>)> = desired
            .iter()
            .map(|name| (name.clone(), alarm_of(&self.state, name)))
            .collect();
        let changed = self.set_delivery(&desired, &delivery);
        self.bump(delivery.at);
        fx.record(
            self.id,
            self.state.version,
            JournalEvent::Delivery {
                desired,
                delivery: delivery.clone(),
            },
        );
        let failed = delivery.state == DeliveryState::Failed;
        fx.audit.push(AuditRecord {
            seq: 0,
            at: delivery.at,
            asset: self.state.path.clone(),
            kind: if failed {
                AuditKind::DeliveryFailed
            } else {
                AuditKind::Delivered
            },
            command_id: delivery
                .command_id
                .clone()
                .unwrap_or_else(|| CommandId(String::new())),
            command: delivery.command.clone(),
            requested: Vec::new(),
            origin: Origin {
                kind: OriginKind::System,
                principal: delivery.by.clone(),
            },
            state_version: delivery.version,
            models: Vec::new(),
            verdict: Verdict::Accepted,
            applied: values,
            reason: if failed {
                delivery.reason.clone()
            } else {
                format!("delivered by {}", delivery.by)
            },
        });
        if failed && delivery.safety {
            fx.urgent = true;
            tracing::error!(asset = %self.state.path, command = %delivery.command, by = %delivery.by, reason = %delivery.reason, "safety action not delivered to the machine");
        }
        if fx.collect_changes {
            let version = self.state.version;
            let asset = self.state.path.clone();
            fx.changes.push(TwinEvent {
                asset: asset.clone(),
                version,
                change: TwinChange::Delivery {
                    values: changed.clone(),
                },
            });
            for (name, before) in before {
                let change = match (before, alarm_of(&self.state, &name)) {
                    (before, Some(now)) if before.as_ref() != Some(&now) => {
                        TwinChange::AlarmRaised(now)
                    }
                    (Some(_), None) => TwinChange::AlarmCleared {
                        code: undelivered_code(&name),
                    },
                    _ => continue,
                };
                fx.changes.push(TwinEvent {
                    asset: asset.clone(),
                    version,
                    change,
                });
            }
        }
    }

    /// When the next pending value reaches its deadline or its safety bound, if any is
    /// pending.
    pub fn next_delivery_check(&self, safety_bound: Duration) -> Option<Timestamp> {
        let bound_us = safety_bound.as_micros() as i64;
        self.state
            .desired
            .iter()
            .map(|slot| &slot.delivery)
            .filter(|delivery| delivery.state == DeliveryState::Pending)
            .filter_map(|delivery| {
                let safety = delivery
                    .safety
                    .then(|| Timestamp(delivery.at.0.saturating_add(bound_us)));
                match (delivery.deadline, safety) {
                    (Some(a), Some(b)) => Some(a.min(b)),
                    (a, b) => a.or(b),
                }
            })
            .min()
    }

    /// What an actuator should send again now: the values still pending or failed and
    /// not past their deadline, and delivered values the machine reports back
    /// differently (since their delivery, beyond the tolerance), grouped by the
    /// actuation that set them, safety actions first.
    pub fn undelivered(&self, now: Timestamp) -> Vec<Actuation> {
        let mut actuations: Vec<Actuation> = Vec::new();
        for (spec, slot) in self.twin_type.desired.iter().zip(&self.state.desired) {
            let delivery = &slot.delivery;
            let disagrees = delivery.state == DeliveryState::Delivered
                && spec.reported.is_some_and(|channel| {
                    self.state.current(channel).is_some_and(|sample| {
                        sample.source_time > delivery.at && !spec.agrees(slot.value, sample.value)
                    })
                });
            if !(delivery.resendable(now) || disagrees) {
                continue;
            }
            match actuations
                .iter_mut()
                .find(|a| a.version == delivery.version)
            {
                Some(actuation) => actuation.values.push((spec.name.clone(), slot.value)),
                None => actuations.push(Actuation {
                    asset: self.state.path.clone(),
                    version: delivery.version,
                    command_id: delivery
                        .command_id
                        .clone()
                        .unwrap_or_else(|| CommandId(format!("v{}", delivery.version))),
                    command: delivery.command.clone(),
                    values: vec![(spec.name.clone(), slot.value)],
                    origin: delivery.origin.clone().unwrap_or(Origin {
                        kind: OriginKind::System,
                        principal: "twin".to_string(),
                    }),
                    safety: delivery.safety,
                    reason: String::new(),
                    at: slot.set_at,
                    deadline: delivery.deadline,
                }),
            }
        }
        actuations.sort_by_key(|a| (!a.safety, a.version));
        actuations
    }

    /// Answers a what-if question: the verdict the governors would give now, and the
    /// models' projection under the desired values that would result. Changes nothing.
    pub fn what_if(
        &self,
        command: &Command,
        horizon: Duration,
        step: Duration,
        now: Timestamp,
    ) -> Result<WhatIf, Error> {
        let spec = self.command_spec(command)?;
        let changes = resolve_changes(&self.twin_type, &spec, command)?;
        let mut proposal = Proposal::new(command, changes, spec.clears_trips, now);
        let verdict = self.review(&mut proposal);
        let mut desired: BTreeMap<String, Value> = self
            .twin_type
            .desired
            .iter()
            .zip(&self.state.desired)
            .map(|(spec, value)| (spec.name.clone(), value.value))
            .collect();
        if verdict.is_applied() {
            for change in &proposal.changes {
                desired.insert(change.name.clone(), change.value);
            }
        }
        let scenario = Scenario {
            start: now,
            horizon,
            step,
            desired,
        };
        let view = TwinView {
            twin_type: &self.twin_type,
            state: &self.state,
        };
        let mut trajectory = Trajectory::default();
        for model in &self.models {
            model.project(&view, &scenario, &mut trajectory);
        }
        // A measured quantity stays inside its channel's plausible range: a model's
        // extrapolation beyond it (vibration below zero) is cut at the bound.
        for channel in &self.twin_type.channels {
            if let Some(points) = trajectory.series.get_mut(&channel.name) {
                let (low, high) = channel.range;
                for point in points {
                    point.value = point.value.clamp(low, high);
                }
            }
        }
        Ok(WhatIf {
            verdict,
            assumed: scenario.desired.into_iter().collect(),
            trajectory,
            models: self.model_infos(),
        })
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

    /// Encodes a snapshot of the twin and resets the snapshot counter. On an error the
    /// counter is kept, so the journal keeps every event since the last snapshot.
    pub fn snapshot(&mut self) -> Result<Vec<u8>, postcard::Error> {
        #[derive(Serialize)]
        struct SnapshotRef<'a> {
            state: &'a TwinState,
            channel_names: Vec<&'a str>,
            desired_names: Vec<&'a str>,
            models: Vec<(&'a str, Vec<u8>)>,
            governors: Vec<(&'a str, Vec<u8>)>,
        }
        let snapshot = SnapshotRef {
            state: &self.state,
            channel_names: self
                .twin_type
                .channels
                .iter()
                .map(|c| c.name.as_str())
                .collect(),
            desired_names: self
                .twin_type
                .desired
                .iter()
                .map(|d| d.name.as_str())
                .collect(),
            models: self.models.iter().map(|m| (m.name(), m.save())).collect(),
            governors: self
                .governors
                .iter()
                .map(|g| (g.name(), g.save()))
                .collect(),
        };
        let bytes = postcard::to_stdvec(&snapshot)?;
        self.events_since_snapshot = 0;
        self.replay_channels = None;
        Ok(bytes)
    }

    /// Restores from a snapshot, remapping channels by name if the type changed since.
    pub fn restore(&mut self, snapshot: Snapshot) -> Result<(), Error> {
        let Snapshot {
            mut state,
            channel_names,
            desired_names,
            models,
            governors,
        } = snapshot;
        self.replay_channels = None;
        let same_channels = channel_names.len() == self.twin_type.channels.len()
            && channel_names
                .iter()
                .zip(&self.twin_type.channels)
                .all(|(a, b)| *a == b.name);
        if !same_channels {
            let map: Vec<Option<u16>> = channel_names
                .iter()
                .map(|name| self.twin_type.channel(name).map(|c| c.0))
                .collect();
            let mut channels = vec![Default::default(); self.twin_type.channels.len()];
            for (old, channel) in state.channels.into_iter().enumerate() {
                if let Some(Some(new)) = map.get(old) {
                    let mut channel: super::state::ChannelState = channel;
                    let remap = |s: &mut Sample| s.channel = ChannelId(*new);
                    channel.current.iter_mut().for_each(remap);
                    channel.history.iter_mut().for_each(remap);
                    channels[*new as usize] = channel;
                }
            }
            state.channels = channels;
            // Journal records after this snapshot were written under its schema (every
            // node start snapshots each twin before writing anything else for it).
            self.replay_channels = Some(map.clone());
            state
                .windows
                .retain_mut(|w| match map.get(w.channel.0 as usize) {
                    Some(Some(new)) => {
                        w.channel = ChannelId(*new);
                        true
                    }
                    _ => false,
                });
        }
        let desired = self
            .twin_type
            .desired
            .iter()
            .map(|spec| {
                desired_names
                    .iter()
                    .position(|name| *name == spec.name)
                    .and_then(|i| state.desired.get(i).cloned())
                    .filter(|d| d.value.kind() == spec.kind)
                    .unwrap_or(DesiredValue::initial(spec.initial))
            })
            .collect();
        state.desired = desired;
        let previous_derived = std::mem::take(&mut state.derived);
        state.history_capacity = self.state.history_capacity;
        self.state = state;
        self.layout_derived(&previous_derived);
        for (name, saved) in models {
            if let Some(model) = self.models.iter_mut().find(|m| m.name() == name)
                && let Err(error) = model.restore(&saved)
            {
                tracing::warn!(asset = %self.state.path, model = %name, %error, "model state not restored");
            }
        }
        for (name, saved) in governors {
            if let Some(governor) = self.governors.iter_mut().find(|g| g.name() == name)
                && let Err(error) = governor.restore(&saved)
            {
                tracing::warn!(asset = %self.state.path, governor = %name, %error, "governor state not restored");
            }
        }
        let health = self.state.health;
        self.model_health.iter_mut().for_each(|h| *h = health);
        Ok(())
    }

    /// Re-applies a journaled event during recovery. Models re-run over samples;
    /// governors do not watch (their safety actions are journaled events themselves).
    pub fn replay(&mut self, record: &JournalRecord) {
        // A delivery annex shares the version of the event it completes.
        let annex = matches!(record.event, JournalEvent::Delivery { .. });
        if record.version < self.state.version || (record.version == self.state.version && !annex) {
            return;
        }
        match &record.event {
            JournalEvent::Sample(sample) => {
                let mut sample = *sample;
                if let Some(map) = &self.replay_channels {
                    match map.get(sample.channel.0 as usize) {
                        Some(Some(current)) => sample.channel = ChannelId(*current),
                        _ => {
                            self.state.version = record.version;
                            return;
                        }
                    }
                }
                if self.twin_type.channel_spec(sample.channel).is_none() {
                    self.state.version = record.version;
                    return;
                }
                let sample = &sample;
                let outcome = self.state.apply_sample(sample);
                self.state.updated_at = sample.receive_time;
                if outcome == SampleOutcome::Applied {
                    self.run_models(sample, None);
                }
            }
            JournalEvent::Command {
                id,
                name,
                origin,
                changes,
                clears_trips,
                at,
                ..
            } => {
                let delivery = Delivery {
                    state: DeliveryState::Pending,
                    version: record.version,
                    command_id: Some(id.clone()),
                    command: name.clone(),
                    origin: Some(origin.clone()),
                    safety: false,
                    deadline: None,
                    at: *at,
                    by: String::new(),
                    reason: String::new(),
                };
                self.apply_command(changes, *clears_trips, *at, &delivery, None);
            }
            JournalEvent::Safety {
                governor,
                reason,
                command,
                changes,
                latch,
                at,
            } => {
                self.apply_safety(governor, reason, command, changes, *latch, *at, None);
            }
            JournalEvent::Delivery { desired, delivery } => {
                self.set_delivery(desired, delivery);
                self.state.updated_at = self.state.updated_at.max(delivery.at);
            }
        }
        self.state.version = record.version;
    }
}

/// The code of the critical alarm a safety value that did not reach the machine raises.
pub fn undelivered_code(desired: &str) -> String {
    format!("undelivered:{desired}")
}

/// Resolves a command's parameters against its spec into the desired values it writes.
pub fn resolve_changes(
    twin_type: &TwinType,
    spec: &CommandSpec,
    command: &Command,
) -> Result<Vec<DesiredChange>, Error> {
    let invalid = |param: &str, problem: String| Error::InvalidParam {
        command: command.name.clone(),
        param: param.to_string(),
        problem,
    };
    for (name, _) in &command.params {
        if !spec.params.iter().any(|p| &p.name == name) {
            return Err(invalid(name, "unknown parameter".to_string()));
        }
    }
    let mut values = Vec::with_capacity(spec.params.len());
    for param in &spec.params {
        let Some(raw) = command.get(&param.name) else {
            return Err(invalid(&param.name, "missing".to_string()));
        };
        let Some(value) = raw.coerce(param.kind) else {
            return Err(invalid(
                &param.name,
                format!("{raw} is not a {:?}", param.kind).to_lowercase(),
            ));
        };
        if let Value::Float(f) = value
            && !f.is_finite()
        {
            return Err(invalid(&param.name, "not a finite number".to_string()));
        }
        if let Some((low, high)) = param.range {
            let number = value.as_f64();
            if number < low || number > high {
                return Err(invalid(
                    &param.name,
                    format!("{value} is outside [{low}, {high}] {}", param.unit)
                        .trim_end()
                        .to_string(),
                ));
            }
        }
        values.push((param.name.as_str(), value));
    }
    let mut changes = Vec::with_capacity(spec.sets.len());
    for (target, source) in &spec.sets {
        let Some((index, desired)) = twin_type.desired(target) else {
            continue;
        };
        let value = match source {
            SetSource::Const(value) => *value,
            SetSource::Param(param) => {
                let value = values
                    .iter()
                    .find(|(n, _)| n == param)
                    .map(|(_, v)| *v)
                    .unwrap_or(desired.initial);
                value.coerce(desired.kind).unwrap_or(value)
            }
        };
        changes.push(DesiredChange {
            index: index as u16,
            name: target.clone(),
            requested: value,
            value,
        });
    }
    Ok(changes)
}
