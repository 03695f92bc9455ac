//! Readings: applying a sample, then what models and governors make of it.

use super::{Effects, TwinCore};
use crate::governor::{Governor, SafetyDemand};
use crate::journal::JournalEvent;
use crate::sample::{Quality, Sample};
use crate::time::Timestamp;
use crate::twin::change::{TwinChange, TwinEvent};
use crate::twin::state::{Alarm, SampleOutcome, TwinView};

impl TwinCore {
    /// Applies a validated sample: state, journal record, models, then governors'
    /// watch and any safety action they demand, all before returning. A late sample
    /// (older than its channel's current value) goes into history and the journal, and
    /// models see it through [`Model::observe_late`](crate::Model::observe_late);
    /// governors watch current values only. A renewal (see
    /// [`SampleOutcome::Renewed`]) is journaled and lifts the channel's staleness.
    /// Duplicates and refused samples change nothing and are listed in `fx`.
    pub fn apply_sample(&mut self, sample: &Sample, fx: &mut Effects) -> SampleOutcome {
        let (outcome, lifted) = self.take_sample(sample);
        fx.count(sample.source, outcome);
        match outcome {
            SampleOutcome::Duplicate => {
                fx.duplicates += 1;
                return outcome;
            }
            SampleOutcome::Refused(reason) => {
                fx.refused.push((*sample, reason));
                return outcome;
            }
            SampleOutcome::Late => fx.late += 1,
            SampleOutcome::Applied => fx.applied += 1,
            // The reading was taken before: counted with the duplicates.
            SampleOutcome::Renewed => fx.duplicates += 1,
        }
        self.bump(sample.receive_time);
        fx.record(self.id, self.state.version, JournalEvent::Sample(*sample));
        if outcome != SampleOutcome::Late {
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
            if let Some(quality) = lifted {
                self.condition_lifted(sample.channel, quality, Some(fx));
            }
            if outcome == SampleOutcome::Applied {
                self.run_models(sample, false, Some(fx));
                self.watch(sample, fx);
            }
        } else {
            self.run_models(sample, true, Some(fx));
        }
        outcome
    }

    /// Applies a sample to the state; also returns the quality of the condition it
    /// lifted, if it lifted one.
    pub(super) fn take_sample(&mut self, sample: &Sample) -> (SampleOutcome, Option<Quality>) {
        let before = self
            .state
            .channels
            .get(sample.channel.0 as usize)
            .map(|c| (c.current.is_none(), c.condition.as_ref().map(|c| c.quality)));
        let outcome = self.state.apply_sample(sample);
        let mut lifted = None;
        if matches!(outcome, SampleOutcome::Applied | SampleOutcome::Renewed)
            && let Some((empty, held)) = before
        {
            self.freshness_changed |= empty || held.is_some();
            lifted = held;
        }
        (outcome, lifted)
    }

    /// Runs every model over a sample (`late`: one older than its channel's current
    /// value) and takes in what they produced.
    pub(super) fn run_models(&mut self, sample: &Sample, late: bool, mut fx: Option<&mut Effects>) {
        for index in 0..self.models.len() {
            self.output.reset();
            let view = TwinView {
                twin_type: &self.twin_type,
                state: &self.state,
            };
            if late {
                self.models[index].observe_late(sample, &view, &mut self.output);
            } else {
                self.models[index].observe(sample, &view, &mut self.output);
            }
            let base = self.slots[index];
            for &(slot, value, confidence) in &self.output.values {
                if let Some(derived) = self.state.derived.get_mut(base + slot as usize) {
                    derived.value = Some(value);
                    derived.confidence = confidence;
                    derived.at = derived.at.max(sample.source_time);
                }
            }
            let mut raised = std::mem::take(&mut self.output.raised);
            let mut newly_raised = Vec::new();
            for (code, severity, message) in raised.drain(..) {
                if !self.shadows.is_empty()
                    && !self.state.alarms.iter().any(|a| a.code == code && a.active)
                {
                    newly_raised.push(code.clone());
                }
                let model_name = self.models[index].name().to_string();
                let alarm = Alarm::new(code, severity, message, model_name, sample.source_time);
                if let Some(change) = self.raise_alarm(alarm)
                    && let Some(fx) = fx.as_deref_mut()
                    && fx.collect_changes
                {
                    fx.changes.push(TwinEvent {
                        asset: self.state.path.clone(),
                        version: self.state.version,
                        change,
                    });
                }
            }
            self.output.raised = raised;
            if !self.output.explained.is_empty() {
                let model = &self.models[index];
                for (code, summary, inputs) in self.output.explained.drain(..) {
                    let explanation = crate::model::Explanation {
                        source: model.name().to_string(),
                        version: model.version().to_string(),
                        confidence: model.confidence(),
                        summary,
                        inputs,
                    };
                    self.explanations.retain(|(c, _)| *c != code);
                    self.explanations.push((code, explanation));
                }
            }
            for code in self.output.cleared.drain(..) {
                self.explanations.retain(|(c, _)| *c != code);
                if let Some(change) = self.state.clear_alarm(&code)
                    && let Some(fx) = fx.as_deref_mut()
                    && fx.collect_changes
                {
                    fx.changes.push(TwinEvent {
                        asset: self.state.path.clone(),
                        version: self.state.version,
                        change,
                    });
                }
            }
            if let Some(health) = self.output.health {
                self.model_health[index] = health;
            }
            if !self.shadows.is_empty() {
                self.run_shadows(index, sample, late, &newly_raised);
            }
        }
        self.update_health();
        let suppressed = self.suppress_by_design();
        if let Some(fx) = fx {
            self.publish(suppressed, fx);
        }
    }

    pub(super) fn watch(&mut self, sample: &Sample, fx: &mut Effects) {
        if self.shadows.iter().any(|s| s.baseline) {
            return self.watch_canary(sample, fx);
        }
        self.ask_governors(sample.receive_time, fx, |governor, view| {
            governor.watch(sample, view)
        });
    }

    /// Watches a sample on a canary twin: governors see the candidate's outputs (it is
    /// production here) and act on them as always. A safety action they demand is
    /// counted against the candidate when the governor, from the state it saved
    /// before the sample, does not demand it from the baseline's outputs.
    fn watch_canary(&mut self, sample: &Sample, fx: &mut Effects) {
        let before: Vec<Vec<u8>> = self.governors.iter().map(|g| g.save()).collect();
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
        if !self.demands.is_empty() {
            let mut baseline = self.state.clone();
            for shadow in self.shadows.iter().filter(|s| s.baseline) {
                for value in &shadow.values {
                    if let Some(derived) = baseline
                        .derived
                        .iter_mut()
                        .find(|d| *d.model == *shadow.of && d.name == value.name)
                    {
                        derived.value = value.value;
                        derived.confidence = value.confidence;
                    }
                }
            }
            let view = TwinView {
                twin_type: &self.twin_type,
                state: &baseline,
            };
            let mut informed = 0;
            for (index, demand) in &self.demands {
                let governor = &mut self.governors[*index];
                let after = governor.save();
                let again = match governor.restore(&before[*index]) {
                    Ok(()) => governor.watch(sample, &view),
                    Err(_) => Some(demand.clone()),
                };
                if let Err(error) = governor.restore(&after) {
                    tracing::error!(asset = %self.state.path, governor = governor.name(), %error, "a governor did not take back its own saved state");
                }
                if again
                    .as_ref()
                    .is_none_or(|again| again.command != demand.command)
                {
                    informed += 1;
                }
            }
            for shadow in self.shadows.iter_mut().filter(|s| s.baseline) {
                shadow.divergence.informed_safety_actions += informed;
            }
        }
        let demands = std::mem::take(&mut self.demands);
        for (index, demand) in &demands {
            self.execute_safety(*index, demand, sample.receive_time, fx);
        }
        self.demands = demands;
    }

    /// Asks every governor, then executes the safety actions they demand, in order.
    pub(super) fn ask_governors(
        &mut self,
        at: Timestamp,
        fx: &mut Effects,
        mut ask: impl FnMut(&mut dyn Governor, &TwinView<'_>) -> Option<SafetyDemand>,
    ) {
        self.demands.clear();
        let view = TwinView {
            twin_type: &self.twin_type,
            state: &self.state,
        };
        for (index, governor) in self.governors.iter_mut().enumerate() {
            if let Some(demand) = ask(governor.as_mut(), &view) {
                self.demands.push((index, demand));
            }
        }
        let demands = std::mem::take(&mut self.demands);
        for (index, demand) in &demands {
            self.execute_safety(*index, demand, at, fx);
        }
        self.demands = demands;
    }
}
