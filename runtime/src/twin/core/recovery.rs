//! Snapshots and recovery: restoring a snapshot, replaying the journal tail.

use serde::Serialize;

use super::TwinCore;
use crate::error::Error;
use crate::journal::{JournalEvent, JournalRecord, SNAPSHOT_FORMAT, Snapshot};
use crate::sample::{ChannelId, Sample};
use crate::twin::state::{
    ChannelCondition, Delivery, DeliveryState, DesiredValue, SampleOutcome, TwinState,
};

impl TwinCore {
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
            conditions: Vec<(ChannelId, &'a ChannelCondition)>,
            model_versions: Vec<crate::model::deploy::SavedVersion>,
            shadows: Vec<crate::model::deploy::SavedShadow>,
            explanations: &'a [(String, crate::model::Explanation)],
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
            conditions: self
                .state
                .channels
                .iter()
                .enumerate()
                .filter_map(|(i, c)| Some((ChannelId(i as u16), c.condition.as_deref()?)))
                .collect(),
            model_versions: self.saved_versions(),
            shadows: self.saved_shadows(),
            explanations: &self.explanations,
        };
        let bytes = postcard::to_extend(&snapshot, SNAPSHOT_FORMAT.to_vec())?;
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
            conditions,
            model_versions,
            shadows,
            explanations,
        } = snapshot;
        self.explanations = explanations;
        for (channel, condition) in conditions {
            if let Some(slot) = state.channels.get_mut(channel.0 as usize) {
                slot.condition = Some(Box::new(condition));
            }
        }
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
                    let mut channel: crate::twin::state::ChannelState = channel;
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
        let mut restored = vec![false; self.models.len()];
        let mut tried = vec![false; self.models.len()];
        for (name, saved) in models {
            let Some(index) = self.models.iter().position(|m| m.name() == name) else {
                continue;
            };
            let saved_by = model_versions.iter().find(|v| v.model == name);
            if !self.takes_state(index, saved_by) {
                tried[index] = true;
                continue;
            }
            match self.models[index].restore(&saved) {
                Ok(()) => restored[index] = true,
                Err(error) => {
                    tried[index] = true;
                    tracing::warn!(asset = %self.state.path, model = %name, %error, "model state not restored");
                }
            }
        }
        // A model whose saved state it did not take (another version saved it, or it
        // did not load), and a deployed model with none saved, starts from the history
        // the snapshot holds.
        for index in 0..self.models.len() {
            if !restored[index] && (tried[index] || self.deployed[index].is_some()) {
                self.warm_up_restored(index);
            }
        }
        self.restore_shadows(shadows);
        for (name, saved) in governors {
            if let Some(governor) = self.governors.iter_mut().find(|g| g.name() == name)
                && let Err(error) = governor.restore(&saved)
            {
                tracing::warn!(asset = %self.state.path, governor = %name, %error, "governor state not restored");
            }
        }
        let health = self.state.health;
        self.model_health.iter_mut().for_each(|h| *h = health);
        // Snapshots of before the lifecycle, or a type whose suppression changed.
        self.suppress_by_design();
        Ok(())
    }

    /// Re-applies a journaled event during recovery. Models re-run over samples;
    /// governors do not watch (their safety actions are journaled events themselves).
    /// Returns false for an event the twin's state already holds (its snapshot came
    /// after it), true when the twin moved on.
    pub fn replay(&mut self, record: &JournalRecord) -> bool {
        // A delivery annex shares the version of the event it completes.
        let annex = matches!(record.event, JournalEvent::Delivery { .. });
        if record.version < self.state.version || (record.version == self.state.version && !annex) {
            return false;
        }
        match &record.event {
            JournalEvent::Sample(_) | JournalEvent::LegacySample(_) => {
                let Some(mut sample) = record.event.sample() else {
                    return true;
                };
                if let Some(map) = &self.replay_channels {
                    match map.get(sample.channel.0 as usize) {
                        Some(Some(current)) => sample.channel = ChannelId(*current),
                        _ => {
                            self.state.version = record.version;
                            return true;
                        }
                    }
                }
                if self.twin_type.channel_spec(sample.channel).is_none() {
                    self.state.version = record.version;
                    return true;
                }
                let sample = &sample;
                let (outcome, lifted) = self.take_sample(sample);
                self.state.updated_at = sample.receive_time;
                if let Some(quality) = lifted {
                    self.condition_lifted(sample.channel, quality, None);
                }
                match outcome {
                    SampleOutcome::Applied => self.run_models(sample, false, None),
                    SampleOutcome::Late => self.run_models(sample, true, None),
                    SampleOutcome::Renewed
                    | SampleOutcome::Duplicate
                    | SampleOutcome::Refused(_) => {}
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
            JournalEvent::Condition { channel, condition } => {
                let channel = match &self.replay_channels {
                    Some(map) => map
                        .get(channel.0 as usize)
                        .copied()
                        .flatten()
                        .map(ChannelId),
                    None => Some(*channel),
                };
                if let Some(channel) = channel
                    && self.twin_type.channel_spec(channel).is_some()
                {
                    self.replay_condition(channel, condition);
                }
            }
            JournalEvent::Delivery { desired, delivery } => {
                self.set_delivery(desired, delivery);
                self.state.updated_at = self.state.updated_at.max(delivery.at);
            }
            JournalEvent::AlarmResponse { code, response } => {
                self.replay_alarm_response(code, response);
            }
        }
        self.state.version = record.version;
        true
    }
}
