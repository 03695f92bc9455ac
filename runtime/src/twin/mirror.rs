//! Replication of twin state to read-only mirrors.
//!
//! When a node replicates (`RuntimeSettings::replicate`), every twin message that changed
//! something also produces a [`MirrorUpdate`]: a patch of the twin's mirror row. The
//! journal commits the updates of a batch, in the same transaction as the batch, as one
//! entry of the node's outbox, so an update is in the outbox exactly when the change it
//! describes is durable. A mirror row is a [`TwinReport`]; [`MirrorUpdate::apply`] brings
//! a row up to date and [`MirrorUpdate::merge`] folds two updates of one twin into one
//! (outbox compaction) without changing what applying them gives.

use serde::{Deserialize, Serialize};

use crate::audit::AuditRecord;
use crate::path::AssetPath;
use crate::sample::{ChannelId, Quality, Sample, SourceId};
use crate::time::Timestamp;

use super::state::DerivedValue;
use super::{ReportedValue, RunState, TwinChange, TwinReport};

/// One twin's change as replicated: a patch of its mirror row.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MirrorUpdate {
    /// The twin.
    pub asset: AssetPath,
    /// Its version after the change.
    pub version: u64,
    /// When the change happened on the owning node.
    pub at: Timestamp,
    /// Run state after the change.
    pub run_state: RunState,
    /// Health after the change.
    pub health: f64,
    /// The whole row (a baseline): replaces whatever the mirror held.
    pub full: Option<Box<TwinReport>>,
    /// What changed, in order (applied after `full`).
    pub changes: Vec<TwinChange>,
    /// Derived values that changed.
    pub derived: Vec<DerivedValue>,
    /// Audit records written with the change, with their sequence numbers.
    pub audit: Vec<AuditRecord>,
}

impl MirrorUpdate {
    /// A baseline update carrying the whole row.
    pub fn baseline(report: TwinReport) -> Self {
        Self {
            asset: report.asset.clone(),
            version: report.version,
            at: report.updated_at,
            run_state: report.run_state,
            health: report.health,
            full: Some(Box::new(report)),
            changes: Vec::new(),
            derived: Vec::new(),
            audit: Vec::new(),
        }
    }

    /// Applies this update to a mirror row. Returns false (and changes nothing) when
    /// the row is already at or past this version, or there is no row and this update
    /// is not a baseline.
    pub fn apply(&self, row: &mut Option<TwinReport>) -> bool {
        if let Some(full) = &self.full {
            if row.as_ref().is_some_and(|r| r.version >= self.version) {
                return false;
            }
            *row = Some((**full).clone());
        } else {
            match row {
                Some(r) if r.version < self.version => {}
                _ => return false,
            }
        }
        let Some(report) = row.as_mut() else {
            return false;
        };
        for change in &self.changes {
            apply_change(report, change, self.at);
        }
        for value in &self.derived {
            match report.derived.iter_mut().find(|d| d.name == value.name) {
                Some(slot) => *slot = value.clone(),
                None => report.derived.push(value.clone()),
            }
        }
        report.version = self.version;
        report.run_state = self.run_state;
        report.health = self.health;
        report.updated_at = report.updated_at.max(self.at);
        true
    }

    /// Folds `later` (a later update of the same twin) into this one: applying the
    /// result equals applying both in order. Audit records are all kept.
    pub fn merge(&mut self, later: MirrorUpdate) {
        debug_assert_eq!(self.asset, later.asset);
        let mut audit = std::mem::take(&mut self.audit);
        audit.extend(later.audit.iter().cloned());
        if later.full.is_some() {
            *self = later;
            self.audit = audit;
            return;
        }
        if let Some(full) = self.full.take() {
            let mut row = Some(*full);
            later.apply(&mut row);
            self.full = row.map(Box::new);
        } else {
            for change in later.changes {
                fold_change(&mut self.changes, change);
            }
            for value in later.derived {
                match self.derived.iter_mut().find(|d| d.name == value.name) {
                    Some(slot) => *slot = value,
                    None => self.derived.push(value),
                }
            }
        }
        self.version = later.version;
        self.at = self.at.max(later.at);
        self.run_state = later.run_state;
        self.health = later.health;
        self.audit = audit;
    }
}

/// Adds a change to a list of pending changes, dropping earlier ones it supersedes.
fn fold_change(changes: &mut Vec<TwinChange>, change: TwinChange) {
    match &change {
        // A newer reading lifts any condition, so it supersedes both.
        TwinChange::Reported { channel, .. } => changes.retain(|c| {
            !matches!(c, TwinChange::Reported { channel: earlier, .. }
                | TwinChange::Condition { channel: earlier, .. } if earlier == channel)
        }),
        TwinChange::Condition { channel, .. } => changes.retain(
            |c| !matches!(c, TwinChange::Condition { channel: earlier, .. } if earlier == channel),
        ),
        TwinChange::Desired { values } => {
            if let Some(TwinChange::Desired { values: earlier }) = changes
                .iter_mut()
                .rev()
                .find(|c| matches!(c, TwinChange::Desired { .. }))
            {
                for (name, value) in values {
                    match earlier.iter_mut().find(|(n, _)| n == name) {
                        Some(slot) => slot.1 = *value,
                        None => earlier.push((name.clone(), *value)),
                    }
                }
                return;
            }
        }
        TwinChange::AlarmRaised(alarm) => changes.retain(|c| match c {
            TwinChange::AlarmRaised(earlier) => earlier.code != alarm.code,
            TwinChange::AlarmCleared { code } => *code != alarm.code,
            _ => true,
        }),
        TwinChange::AlarmCleared { code } => changes.retain(|c| match c {
            TwinChange::AlarmRaised(earlier) => earlier.code != *code,
            TwinChange::AlarmCleared { code: earlier } => earlier != code,
            _ => true,
        }),
        TwinChange::Restarted => return,
        TwinChange::Delivery { values } => {
            if let Some(TwinChange::Delivery { values: earlier }) = changes
                .iter_mut()
                .rev()
                .find(|c| matches!(c, TwinChange::Delivery { .. }))
            {
                for (name, delivery) in values {
                    match earlier.iter_mut().find(|(n, _)| n == name) {
                        Some(slot) => slot.1 = delivery.clone(),
                        None => earlier.push((name.clone(), delivery.clone())),
                    }
                }
                return;
            }
        }
        TwinChange::Tripped(_) | TwinChange::TripsCleared => {}
    }
    changes.push(change);
}

fn apply_change(report: &mut TwinReport, change: &TwinChange, at: Timestamp) {
    match change {
        TwinChange::Reported {
            channel,
            value,
            quality,
            source_time,
        } => {
            let index = match report.reported.iter().position(|r| r.channel == *channel) {
                Some(index) => index,
                None => {
                    report.reported.push(ReportedValue {
                        channel: channel.clone(),
                        unit: String::new(),
                        sample: None,
                        condition: None,
                    });
                    report.reported.len() - 1
                }
            };
            report.reported[index].condition = None;
            report.reported[index].sample = Some(mirrored_sample(
                index,
                *value,
                *quality,
                *source_time,
                report.reported[index].sample.as_ref(),
            ));
        }
        TwinChange::Desired { values } => {
            for (name, value) in values {
                if let Some((_, slot)) = report.desired.iter_mut().find(|(n, _)| n == name) {
                    slot.value = *value;
                    slot.set_at = at;
                }
            }
        }
        TwinChange::AlarmRaised(alarm) => {
            match report.alarms.iter_mut().find(|a| a.code == alarm.code) {
                Some(slot) => *slot = alarm.clone(),
                None => report.alarms.push(alarm.clone()),
            }
        }
        TwinChange::AlarmCleared { code } => report.alarms.retain(|a| a.code != *code),
        TwinChange::Tripped(trip) => report.trips.push(trip.clone()),
        TwinChange::TripsCleared => report.trips.clear(),
        TwinChange::Restarted => {}
        TwinChange::Condition { channel, condition } => {
            match report.reported.iter_mut().find(|r| r.channel == *channel) {
                Some(slot) => {
                    if let Some(sample) = &mut slot.sample {
                        sample.quality = condition.quality;
                    }
                    slot.condition = Some(condition.clone());
                }
                None => report.reported.push(ReportedValue {
                    channel: channel.clone(),
                    unit: String::new(),
                    sample: None,
                    condition: Some(condition.clone()),
                }),
            }
        }
        TwinChange::Delivery { values } => {
            for (name, delivery) in values {
                if let Some((_, slot)) = report.desired.iter_mut().find(|(n, _)| n == name) {
                    slot.delivery = delivery.clone();
                }
            }
        }
    }
}

fn mirrored_sample(
    index: usize,
    value: f64,
    quality: Quality,
    source_time: Timestamp,
    previous: Option<&Sample>,
) -> Sample {
    Sample {
        channel: ChannelId(u16::try_from(index).unwrap_or(u16::MAX)),
        value,
        source_time,
        receive_time: source_time,
        quality,
        source: previous.map_or(SourceId(0), |p| p.source),
        epoch: previous.map_or(0, |p| p.epoch),
        seq: previous.map_or(0, |p| p.seq),
        stamped: true,
    }
}
