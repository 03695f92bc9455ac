//! Commands: reviewed by every governor, applied unless denied; what-if answers.

use std::collections::BTreeMap;
use std::time::Duration;

use super::{Effects, TwinCore};
use crate::audit::{AuditKind, AuditRecord};
use crate::command::{Command, DesiredChange, Origin, Verdict};
use crate::config::{CommandSpec, SetSource, TwinType};
use crate::error::Error;
use crate::governor::{Proposal, Review};
use crate::journal::JournalEvent;
use crate::model::recommend::{RecommendSpec, Recommendation, evaluate, rank};
use crate::model::{Scenario, Trajectory};
use crate::time::Timestamp;
use crate::twin::change::TwinChange;
use crate::twin::report::WhatIf;
use crate::twin::state::{Delivery, DeliveryState, TwinView};
use crate::value::Value;
use crate::value::ValueKind;

/// Points each candidate of a recommendation is projected at, over its horizon.
const RECOMMEND_POINTS: u32 = 60;

impl TwinCore {
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

    pub(super) fn command_spec(&self, command: &Command) -> Result<CommandSpec, Error> {
        self.twin_type
            .commands
            .get(&command.name)
            .cloned()
            .ok_or_else(|| Error::UnknownCommand {
                asset: self.state.path.clone(),
                command: command.name.clone(),
            })
    }

    pub(super) fn review<'a>(&'a self, proposal: &mut Proposal<'a>) -> Verdict {
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

    pub(super) fn apply_command(
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
                published.extend(self.state.clear_alarm(&code));
            }
            published.push(TwinChange::TripsCleared);
        }
        self.bump(at);
        self.update_health();
        published.extend(self.suppress_by_design());
        if let Some(fx) = fx {
            self.publish(published, fx);
        }
    }

    /// Evaluates every candidate of `spec` through what-if as if `origin` sent it (the
    /// governors' review now, the models' projection, and whether a governor would act
    /// on the projection), checks them against its objective and constraints, and
    /// ranks them best first. Changes nothing.
    pub fn recommend(
        &self,
        spec: &RecommendSpec,
        origin: &Origin,
        now: Timestamp,
    ) -> Result<Recommendation, Error> {
        spec.check().map_err(|problem| Error::InvalidParam {
            command: spec.command.clone(),
            param: spec.param.clone(),
            problem,
        })?;
        let command_spec = self.command_spec(&Command::new(
            self.state.path.clone(),
            spec.command.clone(),
            origin.clone(),
        ))?;
        let param = (command_spec.params.iter())
            .find(|p| p.name == spec.param)
            .ok_or_else(|| Error::InvalidParam {
                command: spec.command.clone(),
                param: spec.param.clone(),
                problem: "the command has no such parameter".into(),
            })?;
        // The desired value the parameter sets: its applied value after clamps.
        let sets = (command_spec.sets.iter())
            .find(|(_, source)| *source == SetSource::Param(spec.param.clone()))
            .map(|(desired, _)| desired.clone());
        let horizon = Duration::from_secs_f64(spec.horizon_secs);
        let step = (horizon / RECOMMEND_POINTS).max(Duration::from_secs(1));
        let view = TwinView {
            twin_type: &self.twin_type,
            state: &self.state,
        };
        let mut candidates = Vec::with_capacity(spec.values.len());
        for &value in &spec.values {
            let argument = match param.kind {
                ValueKind::Int => Value::Int(value.round() as i64),
                _ => Value::Float(value),
            };
            let command = Command::new(
                self.state.path.clone(),
                spec.command.clone(),
                origin.clone(),
            )
            .param(spec.param.clone(), argument);
            let what_if = self.what_if(&command, horizon, step, now)?;
            let applied = (what_if.assumed.iter())
                .find(|(name, _)| Some(name) == sets.as_ref())
                .map_or(value, |(_, v)| v.as_f64());
            let projected_action = self.governors.iter().find_map(|governor| {
                governor
                    .review_projection(&what_if.trajectory, &view)
                    .map(|reason| (governor.name().to_string(), reason))
            });
            candidates.push(evaluate(
                spec,
                value,
                applied,
                what_if.verdict,
                projected_action,
                what_if.trajectory,
            ));
        }
        rank(spec, &mut candidates);
        Ok(Recommendation {
            objective: spec.objective_text(),
            command: spec.command.clone(),
            param: spec.param.clone(),
            candidates,
        })
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
                    point.lower = point.lower.map(|v| v.clamp(low, high));
                    point.upper = point.upper.map(|v| v.clamp(low, high));
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
