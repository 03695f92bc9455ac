//! Deployed models: swapping a model for a package's in the twin's own message
//! handling, and shadow models that run beside production with their outputs kept
//! apart.
//!
//! A swap carries the model's saved state over when one version says it is compatible
//! with the other ([`ModelPackage::compatible_with`](crate::model::package::ModelPackage));
//! otherwise the new model starts afresh and warms up over the twin's history rings,
//! in source-time order, before the next reading. Its alarms then replace the old
//! model's: those the warmed-up model holds raised stay, the rest clear.
//!
//! A shadow sees every sample its production model sees, right after it. It never
//! raises an alarm on the twin, never informs a governor and never acts; what it would
//! have done is counted against what production did ([`Divergence`]).

use super::{Effects, TwinCore};
use crate::audit::{AuditKind, AuditRecord, ModelInfo};
use crate::command::{CommandId, Origin, Verdict};
use crate::config::ConfigError;
use crate::error::Error;
use crate::model::deploy::{Divergence, SavedShadow, SavedVersion, ShadowReport};
use crate::model::{Model, ModelOutput};
use crate::sample::Sample;
use crate::time::Timestamp;
use crate::twin::change::TwinChange;
use crate::twin::state::DerivedValue;
use crate::twin::{Alarm, TwinView};

/// Where a running model came from, when not from the twin's type.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Deployed {
    /// The deployment that put it there.
    pub deployment: u64,
    /// Versions whose saved state it takes over.
    pub compatible_with: Vec<String>,
}

impl From<&crate::model::deploy::ActiveDeployment> for Deployed {
    fn from(active: &crate::model::deploy::ActiveDeployment) -> Self {
        Self {
            deployment: active.deployment.id,
            compatible_with: active.package.compatible_with.clone(),
        }
    }
}

/// A shadow model beside production model `of`.
pub(super) struct Shadow {
    pub(super) deployment: u64,
    pub(super) of: String,
    pub(super) model: Box<dyn Model>,
    pub(super) values: Vec<DerivedValue>,
    pub(super) alarms: Vec<String>,
    pub(super) divergence: Divergence,
    /// A canary's baseline: the model the candidate replaced.
    pub(super) baseline: bool,
}

impl Shadow {
    fn new(planned: PlannedShadow) -> Self {
        let values = shadow_values(planned.model.as_ref());
        Self {
            deployment: planned.deployment,
            of: planned.model.name().to_string(),
            model: planned.model,
            values,
            alarms: Vec::new(),
            divergence: Divergence {
                twins: 1,
                ..Divergence::default()
            },
            baseline: planned.baseline,
        }
    }
}

/// A shadow a twin should run beside one of its models.
pub struct PlannedShadow {
    /// The model (named as the production model it runs beside).
    pub model: Box<dyn Model>,
    /// Its deployment: a shadow deployment, or for a baseline the canary's.
    pub deployment: u64,
    /// A canary's baseline (the model the candidate replaced) rather than a shadow
    /// deployment's package.
    pub baseline: bool,
}

/// What a model swap did.
#[derive(Debug, Clone, PartialEq)]
pub struct ModelSwap {
    /// The model now running.
    pub model: ModelInfo,
    /// The version it replaced.
    pub replaced: String,
    /// Whether the old model's state was carried over (else it warmed up from history).
    pub carried_over: bool,
    /// Samples of history it warmed up on.
    pub warmed_on: usize,
}

impl TwinCore {
    /// Marks model `name` as deployed (built from a package) rather than the type's.
    /// Used when a twin is built with its deployed models, before its state is restored.
    pub fn set_deployed(&mut self, name: &str, deployed: Deployed) {
        if let Some(index) = self.models.iter().position(|m| m.name() == name) {
            self.deployed[index] = Some(deployed);
        }
    }

    /// Whether model `index` takes over state saved by `saved` (`None`: a snapshot
    /// from before versions were kept). The type's own model takes what the type's
    /// own model saved, whatever its version, as it always has; a deployed model takes
    /// state saved by its own version or one it lists in `compatible_with`.
    pub(super) fn takes_state(&self, index: usize, saved: Option<&SavedVersion>) -> bool {
        match (&self.deployed[index], saved) {
            (None, None) => true,
            (None, Some(saved)) => saved.deployment.is_none(),
            (Some(_), None) => false,
            (Some(deployed), Some(saved)) => {
                saved.version == self.models[index].version()
                    || deployed.compatible_with.contains(&saved.version)
            }
        }
    }

    /// Each model's version and provenance, for a snapshot.
    pub(super) fn saved_versions(&self) -> Vec<SavedVersion> {
        self.models
            .iter()
            .zip(&self.deployed)
            .map(|(model, deployed)| SavedVersion {
                model: model.name().to_string(),
                version: model.version().to_string(),
                deployment: deployed.as_ref().map(|d| d.deployment),
            })
            .collect()
    }

    /// The index of the production model named `name`.
    fn model_index(&self, name: &str) -> Result<usize, Error> {
        self.models
            .iter()
            .position(|m| m.name() == name)
            .ok_or_else(|| {
                Error::Config(ConfigError::at(
                    self.state.path.as_str(),
                    None,
                    format!("type `{}` has no model `{name}`", self.twin_type.name),
                ))
            })
    }

    /// The audit record of a deployment step (`command`: production, shadow,
    /// end_shadow) on this twin.
    fn audit_model_step(
        &self,
        command: &str,
        origin: &Origin,
        at: Timestamp,
        state_version: u64,
        model: ModelInfo,
        reason: String,
    ) -> AuditRecord {
        AuditRecord {
            seq: 0,
            at,
            asset: self.state.path.clone(),
            kind: AuditKind::ModelDeployment,
            command_id: CommandId::random(),
            command: command.to_string(),
            requested: Vec::new(),
            origin: origin.clone(),
            state_version,
            models: vec![model],
            verdict: Verdict::Accepted,
            applied: Vec::new(),
            reason,
        }
    }

    /// Runs `model` in production in place of the model of the same name, carrying
    /// state over when it is the same version or says it takes over the old one's, else
    /// warming it up from history. Audited; the caller snapshots the twin in the same
    /// journal batch.
    pub fn swap_model(
        &mut self,
        model: Box<dyn Model>,
        deployed: Option<Deployed>,
        origin: &Origin,
        at: Timestamp,
        fx: &mut Effects,
    ) -> Result<ModelSwap, Error> {
        let name = model.name().to_string();
        let index = self.model_index(&name)?;
        let old_version = self.models[index].version().to_string();
        let new_accepts = deployed
            .as_ref()
            .is_some_and(|d| d.compatible_with.contains(&old_version));
        let saved = self.models[index].save();
        self.models[index] = model;
        self.deployed[index] = deployed.clone();
        let mut carried_over = false;
        if new_accepts || old_version == self.models[index].version() {
            match self.models[index].restore(&saved) {
                Ok(()) => carried_over = true,
                Err(error) => {
                    tracing::warn!(asset = %self.state.path, model = %name, %error, "saved state not taken over; warming up from history");
                }
            }
        }
        let previous = self.state.derived.clone();
        self.layout_derived(&previous);
        let warmed_on = if carried_over {
            0
        } else {
            self.warm_up(index, at, Some(&mut *fx))
        };
        let info = ModelInfo {
            name: name.clone(),
            version: self.models[index].version().to_string(),
            confidence: self.models[index].confidence(),
        };
        let state_version = self.state.version;
        self.bump(at);
        let how = if carried_over {
            "state carried over".to_string()
        } else {
            format!("warmed up on {warmed_on} samples of history")
        };
        let reason = format!(
            "model `{name}` {} in production in place of {old_version}{}: {how}",
            info.version,
            deployment_note(deployed.as_ref().map(|d| d.deployment)),
        );
        let record = self.audit_model_step(
            "production",
            origin,
            at,
            state_version,
            info.clone(),
            reason,
        );
        fx.audit.push(record);
        Ok(ModelSwap {
            model: info,
            replaced: old_version,
            carried_over,
            warmed_on,
        })
    }

    /// Runs `model` as a shadow of the production model of the same name for
    /// deployment `deployment`, replacing a shadow that ran beside it. It starts
    /// afresh and warms up from history. Audited.
    pub fn start_shadow(
        &mut self,
        planned: PlannedShadow,
        origin: &Origin,
        at: Timestamp,
        fx: &mut Effects,
    ) -> Result<ModelInfo, Error> {
        let of = planned.model.name().to_string();
        let deployment = planned.deployment;
        let role = if planned.baseline {
            "as the canary's baseline"
        } else {
            "in shadow"
        };
        let production = self.models[self.model_index(&of)?].version().to_string();
        self.shadows.retain(|s| s.of != of);
        self.shadows.push(Shadow::new(planned));
        let index = self.shadows.len() - 1;
        let warmed_on = self.warm_up_shadow(index);
        let shadow = &self.shadows[index];
        let info = ModelInfo {
            name: of.clone(),
            version: shadow.model.version().to_string(),
            confidence: shadow.model.confidence(),
        };
        let reason = format!(
            "model `{of}` {} {role} beside {production}{}: warmed up on {warmed_on} samples of history",
            info.version,
            deployment_note(Some(deployment)),
        );
        let record = self.audit_model_step(
            "shadow",
            origin,
            at,
            self.state.version,
            info.clone(),
            reason,
        );
        fx.audit.push(record);
        Ok(info)
    }

    /// Stops the shadow of deployment `deployment`, if it runs here. Audited.
    pub fn end_shadow(
        &mut self,
        deployment: u64,
        origin: &Origin,
        at: Timestamp,
        fx: &mut Effects,
    ) -> Option<ShadowReport> {
        let index = self
            .shadows
            .iter()
            .position(|s| s.deployment == deployment)?;
        let report = self.shadow_report(&self.shadows[index]);
        self.shadows.remove(index);
        let model = ModelInfo {
            name: report.model.clone(),
            version: report.version.clone(),
            confidence: 0.0,
        };
        let reason = format!(
            "shadow of `{}` {} stopped{} after {} samples",
            report.model,
            report.version,
            deployment_note(Some(deployment)),
            report.divergence.samples
        );
        let record =
            self.audit_model_step("end_shadow", origin, at, self.state.version, model, reason);
        fx.audit.push(record);
        Some(report)
    }

    /// The shadows running on this twin.
    pub fn shadows(&self) -> Vec<ShadowReport> {
        self.shadows.iter().map(|s| self.shadow_report(s)).collect()
    }

    fn shadow_report(&self, shadow: &Shadow) -> ShadowReport {
        ShadowReport {
            deployment: shadow.deployment,
            model: shadow.of.clone(),
            version: shadow.model.version().to_string(),
            production_version: self
                .models
                .iter()
                .find(|m| m.name() == shadow.of)
                .map(|m| m.version().to_string())
                .unwrap_or_default(),
            values: shadow.values.clone(),
            alarms: shadow.alarms.clone(),
            divergence: shadow.divergence.clone(),
            baseline: shadow.baseline,
        }
    }

    /// Adds a shadow while the twin is built, before its state is restored (its saved
    /// state, if the snapshot holds one for the same deployment, is restored then).
    pub fn add_shadow(&mut self, planned: PlannedShadow) {
        self.shadows.push(Shadow::new(planned));
    }

    /// Shadows' state for a snapshot.
    pub(super) fn saved_shadows(&self) -> Vec<SavedShadow> {
        self.shadows
            .iter()
            .map(|s| SavedShadow {
                deployment: s.deployment,
                model: s.of.clone(),
                version: s.model.version().to_string(),
                state: s.model.save(),
                values: s.values.clone(),
                alarms: s.alarms.clone(),
                divergence: s.divergence.clone(),
                baseline: s.baseline,
            })
            .collect()
    }

    /// Restores the shadows a snapshot holds that still run (same deployment and
    /// version); a shadow without saved state warms up from history.
    pub(super) fn restore_shadows(&mut self, saved: Vec<SavedShadow>) {
        for index in 0..self.shadows.len() {
            let shadow = &mut self.shadows[index];
            let found = saved.iter().find(|s| {
                s.deployment == shadow.deployment
                    && s.model == shadow.of
                    && s.version == shadow.model.version()
                    && s.baseline == shadow.baseline
            });
            let restored = match found {
                Some(saved) => match shadow.model.restore(&saved.state) {
                    Ok(()) => {
                        shadow.values = saved.values.clone();
                        shadow.alarms = saved.alarms.clone();
                        shadow.divergence = saved.divergence.clone();
                        true
                    }
                    Err(error) => {
                        tracing::warn!(model = %shadow.of, %error, "shadow state not restored; warming up from history");
                        false
                    }
                },
                None => false,
            };
            if !restored {
                self.warm_up_shadow(index);
            }
        }
    }

    /// Runs the shadows of production model `index` on a sample it just saw, and
    /// counts where they differ. `production_raised`: alarms production raised on it
    /// that were not active before.
    pub(super) fn run_shadows(
        &mut self,
        index: usize,
        sample: &Sample,
        late: bool,
        production_raised: &[String],
    ) {
        let of = self.models[index].name();
        let view = TwinView {
            twin_type: &self.twin_type,
            state: &self.state,
        };
        for shadow in self.shadows.iter_mut().filter(|s| s.of == of) {
            self.output.reset();
            if late {
                shadow.model.observe_late(sample, &view, &mut self.output);
            } else {
                shadow.model.observe(sample, &view, &mut self.output);
            }
            if shadow.divergence.samples == 0 {
                shadow.divergence.since = sample.source_time;
            }
            shadow.divergence.samples += 1;
            shadow.divergence.until = shadow.divergence.until.max(sample.source_time);
            for &(slot, value, confidence) in &self.output.values {
                let Some(derived) = shadow.values.get_mut(slot as usize) else {
                    continue;
                };
                derived.value = Some(value);
                derived.confidence = confidence;
                derived.at = derived.at.max(sample.source_time);
                let production = view
                    .state
                    .derived
                    .iter()
                    .find(|d| *d.model == *shadow.of && d.name == derived.name)
                    .and_then(|d| d.value);
                if let Some(production) = production {
                    shadow.divergence.compare(&derived.name, value, production);
                }
            }
            for (code, _, _) in &self.output.raised {
                if !shadow.alarms.contains(code) {
                    shadow.alarms.push(code.clone());
                    let production_has = view
                        .state
                        .alarms
                        .iter()
                        .any(|a| a.code == *code && a.active && a.raised_by == shadow.of);
                    if !production_has {
                        shadow.divergence.shadow_only_alarms += 1;
                    }
                }
            }
            for code in &self.output.cleared {
                shadow.alarms.retain(|c| c != code);
            }
            for code in production_raised {
                if !shadow.alarms.contains(code) {
                    shadow.divergence.production_only_alarms += 1;
                }
            }
        }
    }

    /// Every sample of the history rings, in source-time order.
    fn history_in_order(&self) -> Vec<Sample> {
        let mut samples: Vec<Sample> = self
            .state
            .channels
            .iter()
            .flat_map(|c| c.history.iter().copied())
            .collect();
        samples.sort_by_key(|s| (s.source_time, s.channel.0));
        samples
    }

    /// Runs production model `index`, fresh, over the history rings; takes its
    /// outputs and health, and makes its alarms the twin's: those it holds raised
    /// after the warm-up stay or are raised, the rest of the model's clear. Returns
    /// the samples it saw.
    fn warm_up(&mut self, index: usize, at: Timestamp, fx: Option<&mut Effects>) -> usize {
        let samples = self.history_in_order();
        let mut output = ModelOutput::default();
        let mut raised: Vec<(String, crate::twin::Severity, String)> = Vec::new();
        let base = self.slots[index];
        for sample in &samples {
            output.reset();
            let view = TwinView {
                twin_type: &self.twin_type,
                state: &self.state,
            };
            self.models[index].observe(sample, &view, &mut output);
            for &(slot, value, confidence) in &output.values {
                if let Some(derived) = self.state.derived.get_mut(base + slot as usize) {
                    derived.value = Some(value);
                    derived.confidence = confidence;
                    derived.at = derived.at.max(sample.source_time);
                }
            }
            for (code, severity, message) in output.raised.drain(..) {
                raised.retain(|(c, _, _)| *c != code);
                raised.push((code, severity, message));
            }
            for code in &output.cleared {
                raised.retain(|(c, _, _)| c != code);
            }
            if let Some(health) = output.health {
                self.model_health[index] = health;
            }
        }
        let name = self.models[index].name().to_string();
        let stale: Vec<String> = self
            .state
            .alarms
            .iter()
            .filter(|a| a.active && a.raised_by == name)
            .filter(|a| !raised.iter().any(|(code, _, _)| *code == a.code))
            .map(|a| a.code.clone())
            .collect();
        let mut changes: Vec<TwinChange> = Vec::new();
        for code in stale {
            changes.extend(self.state.clear_alarm(&code));
        }
        for (code, severity, message) in raised {
            let alarm = Alarm::new(code, severity, message, name.clone(), at);
            changes.extend(self.raise_alarm(alarm));
        }
        self.update_health();
        if let Some(fx) = fx {
            self.publish(changes, fx);
        }
        samples.len()
    }

    /// Warms up production model `index` from history while the twin is restored.
    pub(super) fn warm_up_restored(&mut self, index: usize) {
        let at = self.state.updated_at;
        self.warm_up(index, at, None);
    }

    /// Runs shadow `index`, fresh, over the history rings (its outputs only: nothing
    /// is compared while it warms up). Returns the samples it saw.
    fn warm_up_shadow(&mut self, index: usize) -> usize {
        let samples = self.history_in_order();
        let mut output = ModelOutput::default();
        let view = TwinView {
            twin_type: &self.twin_type,
            state: &self.state,
        };
        let shadow = &mut self.shadows[index];
        for sample in &samples {
            output.reset();
            shadow.model.observe(sample, &view, &mut output);
            for &(slot, value, confidence) in &output.values {
                if let Some(derived) = shadow.values.get_mut(slot as usize) {
                    derived.value = Some(value);
                    derived.confidence = confidence;
                    derived.at = derived.at.max(sample.source_time);
                }
            }
            for (code, _, _) in &output.raised {
                if !shadow.alarms.contains(code) {
                    shadow.alarms.push(code.clone());
                }
            }
            for code in &output.cleared {
                shadow.alarms.retain(|c| c != code);
            }
        }
        samples.len()
    }
}

/// A shadow's output slots, empty.
fn shadow_values(model: &dyn Model) -> Vec<DerivedValue> {
    model
        .outputs()
        .into_iter()
        .map(|name| DerivedValue::empty(&name, model.name()))
        .collect()
}

fn deployment_note(deployment: Option<u64>) -> String {
    match deployment {
        Some(id) => format!(" (deployment {id})"),
        None => " (the type's own)".to_string(),
    }
}

/// What should run as one model of a twin: its production model and its shadow.
pub struct ModelPlan {
    /// The production model (named as the model it is), and its deployment (`None`:
    /// the type's own).
    pub production: (Box<dyn Model>, Option<Deployed>),
    /// The shadow beside it.
    pub shadow: Option<PlannedShadow>,
}

/// What applying a model plan (`ModelPlan`) changed.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct PlanOutcome {
    /// The production model was swapped.
    pub swapped: Option<ModelSwap>,
    /// A shadow started.
    pub shadow_started: Option<ModelInfo>,
    /// A shadow stopped, with its figures.
    pub shadow_ended: Option<ShadowReport>,
}

impl PlanOutcome {
    /// Whether anything changed.
    pub fn changed(&self) -> bool {
        self.swapped.is_some() || self.shadow_started.is_some() || self.shadow_ended.is_some()
    }
}

impl TwinCore {
    /// Makes the twin run what `plan` says for its model, changing only what differs
    /// from what runs (by deployment): the production model is swapped when its
    /// deployment changed, the shadow stopped or started when its deployment changed.
    pub fn apply_plan(
        &mut self,
        plan: ModelPlan,
        origin: &Origin,
        at: Timestamp,
        fx: &mut Effects,
    ) -> Result<PlanOutcome, Error> {
        let (model, deployed) = plan.production;
        let name = model.name().to_string();
        let index = self.model_index(&name)?;
        let mut outcome = PlanOutcome::default();
        let running = self.deployed[index].as_ref().map(|d| d.deployment);
        if running != deployed.as_ref().map(|d| d.deployment) {
            outcome.swapped = Some(self.swap_model(model, deployed, origin, at, fx)?);
        }
        let shadowing = self
            .shadows
            .iter()
            .find(|s| s.of == name)
            .map(|s| s.deployment);
        let wanted = plan.shadow.as_ref().map(|s| s.deployment);
        if shadowing != wanted {
            if let Some(id) = shadowing {
                outcome.shadow_ended = self.end_shadow(id, origin, at, fx);
            }
            if let Some(shadow) = plan.shadow {
                outcome.shadow_started = Some(self.start_shadow(shadow, origin, at, fx)?);
            }
        }
        Ok(outcome)
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::audit::AuditKind;
    use crate::config::{TwinType, TwinTypes};
    use crate::journal::Snapshot;
    use crate::model::{Scenario, Trajectory};
    use crate::path::AssetPath;
    use crate::sample::{ChannelId, Quality, SourceId};
    use crate::twin::Severity;

    fn pump() -> Arc<TwinType> {
        TwinTypes::from_toml(
            "[types.pump.channels.pressure]\nunit = \"bar\"\nrange = [0.0, 100.0]\n",
            "tests.toml",
        )
        .unwrap()
        .get("pump")
        .unwrap()
        .clone()
    }

    /// Writes `level = pressure × gain`, counts the samples it saw (its saved state)
    /// and raises `high` above a limit.
    struct Level {
        version: &'static str,
        gain: f64,
        limit: f64,
        seen: u64,
        high: bool,
    }

    fn planned_shadow(model: Box<dyn Model>, deployment: u64) -> PlannedShadow {
        PlannedShadow {
            model,
            deployment,
            baseline: false,
        }
    }

    fn level(version: &'static str, gain: f64) -> Box<dyn Model> {
        Box::new(Level {
            version,
            gain,
            limit: 50.0,
            seen: 0,
            high: false,
        })
    }

    impl Model for Level {
        fn name(&self) -> &str {
            "level"
        }
        fn version(&self) -> &str {
            self.version
        }
        fn outputs(&self) -> Vec<String> {
            vec!["level".into()]
        }
        fn observe(&mut self, sample: &Sample, _: &TwinView<'_>, out: &mut ModelOutput) {
            self.seen += 1;
            let level = sample.value * self.gain;
            out.set(0, level, 1.0);
            if level > self.limit && !self.high {
                self.high = true;
                out.raise("high", Severity::Warning, "level high");
            } else if level <= self.limit && self.high {
                self.high = false;
                out.clear("high");
            }
        }
        fn project(&self, _: &TwinView<'_>, _: &Scenario, _: &mut Trajectory) {}
        fn save(&self) -> Vec<u8> {
            self.seen.to_le_bytes().to_vec()
        }
        fn restore(&mut self, saved: &[u8]) -> Result<(), String> {
            self.seen = u64::from_le_bytes(saved.try_into().map_err(|_| "8 bytes")?);
            Ok(())
        }
    }

    fn seen(core: &TwinCore) -> u64 {
        u64::from_le_bytes(core.models[0].save().try_into().unwrap())
    }

    fn core() -> TwinCore {
        core_with("1.0", None, 64)
    }

    fn feed(core: &mut TwinCore, values: &[f64]) {
        let base = Timestamp::now().0 - 600_000_000;
        let offset = core.state().version as i64;
        for (i, value) in values.iter().enumerate() {
            let mut fx = Effects::default();
            let at = Timestamp(base + (offset + i as i64) * 1_000_000);
            let sample = Sample {
                channel: ChannelId(0),
                value: *value,
                source_time: at,
                receive_time: at,
                quality: Quality::Good,
                source: SourceId(1),
                epoch: 0,
                seq: (offset + i as i64 + 1) as u64,
                stamped: false,
            };
            assert_eq!(
                core.apply_sample(&sample, &mut fx),
                crate::twin::SampleOutcome::Applied
            );
        }
    }

    fn deployed(id: u64, compatible_with: &[&str]) -> Option<Deployed> {
        Some(Deployed {
            deployment: id,
            compatible_with: compatible_with.iter().map(|v| v.to_string()).collect(),
        })
    }

    #[test]
    fn a_compatible_upgrade_carries_state_over_and_an_incompatible_one_warms_up() {
        let origin = Origin::operator("ann");
        let mut core = core();
        feed(&mut core, &[10.0, 20.0, 30.0]);
        assert_eq!(seen(&core), 3);

        let mut fx = Effects::default();
        let swap = core
            .swap_model(
                level("1.1", 1.0),
                deployed(1, &["1.0"]),
                &origin,
                Timestamp::now(),
                &mut fx,
            )
            .unwrap();
        assert!(swap.carried_over);
        assert_eq!(swap.replaced, "1.0");
        assert_eq!(seen(&core), 3, "the saved state came along");
        assert_eq!(core.model_infos()[0].version, "1.1");
        assert_eq!(fx.audit.len(), 1);
        assert_eq!(fx.audit[0].kind, AuditKind::ModelDeployment);
        assert_eq!(fx.audit[0].origin.principal, "ann");
        assert!(
            fx.audit[0].reason.contains("state carried over"),
            "{}",
            fx.audit[0].reason
        );

        // 2.0 says nothing of 1.1's state: it starts afresh over the history (three
        // readings), and its view of the alarm replaces the old model's.
        let mut fx = Effects::default();
        let swap = core
            .swap_model(
                level("2.0", 2.0),
                deployed(2, &["1.0"]),
                &origin,
                Timestamp::now(),
                &mut fx,
            )
            .unwrap();
        assert!(!swap.carried_over);
        assert_eq!(swap.warmed_on, 3);
        assert_eq!(seen(&core), 3, "one warm-up pass over history");
        assert_eq!(core.report().derived("level"), Some(60.0));
        assert!(
            core.state()
                .alarms
                .iter()
                .any(|a| a.code == "high" && a.active),
            "warmed up past its limit: its alarm is the twin's"
        );
        // Going back to the type's model clears the alarm the newer one held.
        let mut fx = Effects::default();
        core.swap_model(level("1.0", 1.0), None, &origin, Timestamp::now(), &mut fx)
            .unwrap();
        assert_eq!(core.report().derived("level"), Some(30.0));
        assert!(
            !core
                .state()
                .alarms
                .iter()
                .any(|a| a.code == "high" && a.active)
        );
    }

    #[test]
    fn a_restored_twin_takes_state_only_from_a_version_its_model_accepts() {
        // History keeps two readings of three: a model that took its saved state has
        // seen three, one that warmed up over history two.
        let origin = Origin::operator("ann");
        let mut core = core_with("1.0", None, 2);
        feed(&mut core, &[10.0, 20.0]);
        let mut fx = Effects::default();
        core.swap_model(
            level("1.1", 1.0),
            deployed(1, &["1.0"]),
            &origin,
            Timestamp::now(),
            &mut fx,
        )
        .unwrap();
        feed(&mut core, &[30.0]);
        assert_eq!(seen(&core), 3);
        let bytes = core.snapshot().unwrap();
        let restored = |mut twin: TwinCore| {
            twin.restore(Snapshot::decode(&bytes).unwrap()).unwrap();
            twin
        };

        // The same deployment: state restored as saved.
        let same = restored(core_with("1.1", deployed(1, &["1.0"]), 2));
        assert_eq!(seen(&same), 3);
        // A version that does not accept 1.1's state warms up from the snapshot's
        // history instead.
        let other = restored(core_with("3.0", deployed(4, &[]), 2));
        assert_eq!(seen(&other), 2, "two readings of history, seen afresh");
        assert_eq!(other.report().derived("level"), Some(30.0));
        // The type's own model does not take a package's state either.
        let typed = restored(core_with("1.1", None, 2));
        assert_eq!(seen(&typed), 2, "warmed up, not restored");

        // What the type's own model saved, it takes back whatever its version now (a
        // new release of the kind keeps its twins' state, as before versions were
        // kept).
        let mut plain = core_with("1.0", None, 2);
        feed(&mut plain, &[10.0, 20.0, 30.0]);
        let bytes = plain.snapshot().unwrap();
        let mut upgraded = core_with("1.0.1", None, 2);
        upgraded.restore(Snapshot::decode(&bytes).unwrap()).unwrap();
        assert_eq!(seen(&upgraded), 3);
    }

    fn core_with(version: &'static str, deployed: Option<Deployed>, history: usize) -> TwinCore {
        let mut core = TwinCore::new(
            3,
            AssetPath::parse("acme/plant-a/line-1/pump-1").unwrap(),
            pump(),
            vec![level(version, 1.0)],
            Vec::new(),
            history,
        );
        if let Some(deployed) = deployed {
            core.set_deployed("level", deployed);
        }
        core
    }

    #[test]
    fn a_shadow_keeps_its_outputs_apart_raises_nothing_and_counts_how_it_differs() {
        let origin = Origin::operator("ann");
        let mut core = core();
        feed(&mut core, &[10.0]);
        let mut fx = Effects::default();
        core.start_shadow(
            planned_shadow(level("2.0", 2.0), 9),
            &origin,
            Timestamp::now(),
            &mut fx,
        )
        .unwrap();
        assert_eq!(fx.audit[0].command, "shadow");
        feed(&mut core, &[20.0, 30.0]);

        let shadows = core.shadows();
        assert_eq!(shadows.len(), 1);
        let shadow = &shadows[0];
        assert_eq!(
            (shadow.version.as_str(), shadow.production_version.as_str()),
            ("2.0", "1.0")
        );
        assert_eq!(
            shadow.values[0].value,
            Some(60.0),
            "the shadow's own output"
        );
        assert_eq!(
            core.report().derived("level"),
            Some(30.0),
            "production's stays"
        );
        // Compared on the two readings since it started: |40-20| and |60-30|.
        let output = &shadow.divergence.outputs[0];
        assert_eq!((output.compared, output.max_abs), (2, 30.0));
        assert_eq!(output.mean_abs(), 25.0);
        // At 60 the shadow crossed its limit; production (30) did not, and the twin
        // has no alarm.
        assert_eq!(shadow.alarms, vec!["high".to_string()]);
        assert_eq!(shadow.divergence.shadow_only_alarms, 1);
        assert!(core.state().alarms.is_empty());

        // A snapshot keeps the shadow and its figures.
        let bytes = core.snapshot().unwrap();
        let mut restored = core_with("1.0", None, 64);
        restored.add_shadow(planned_shadow(level("2.0", 2.0), 9));
        restored.restore(Snapshot::decode(&bytes).unwrap()).unwrap();
        assert_eq!(restored.shadows(), shadows);

        let mut fx = Effects::default();
        let ended = core
            .end_shadow(9, &origin, Timestamp::now(), &mut fx)
            .unwrap();
        assert_eq!(ended.divergence.samples, 2);
        assert!(core.shadows().is_empty());
        assert_eq!(fx.audit[0].command, "end_shadow");
    }

    #[test]
    fn a_plan_changes_only_what_differs() {
        let origin = Origin::operator("ann");
        let mut core = core();
        feed(&mut core, &[10.0]);
        let plan = |shadow: bool| ModelPlan {
            production: (level("1.1", 1.0), deployed(1, &["1.0"])),
            shadow: shadow.then(|| planned_shadow(level("2.0", 2.0), 2)),
        };
        let mut fx = Effects::default();
        let first = core
            .apply_plan(plan(true), &origin, Timestamp::now(), &mut fx)
            .unwrap();
        assert!(first.swapped.is_some() && first.shadow_started.is_some());
        let again = core
            .apply_plan(plan(true), &origin, Timestamp::now(), &mut fx)
            .unwrap();
        assert!(!again.changed());
        let withdrawn = core
            .apply_plan(plan(false), &origin, Timestamp::now(), &mut fx)
            .unwrap();
        assert!(withdrawn.swapped.is_none());
        assert_eq!(withdrawn.shadow_ended.unwrap().deployment, 2);
    }

    /// Stops the pump when the derived `level` passes 60, latched.
    struct LevelTrip {
        tripped: bool,
    }

    impl crate::governor::Governor for LevelTrip {
        fn name(&self) -> &str {
            "level_trip"
        }
        fn review(
            &self,
            _: &mut crate::governor::Proposal<'_>,
            _: &TwinView<'_>,
        ) -> crate::governor::Review {
            crate::governor::Review::Allow
        }
        fn watch(
            &mut self,
            _: &Sample,
            twin: &TwinView<'_>,
        ) -> Option<crate::governor::SafetyDemand> {
            if self.tripped || twin.derived("level").is_none_or(|level| level <= 60.0) {
                return None;
            }
            self.tripped = true;
            Some(crate::governor::SafetyDemand {
                command: "stop".into(),
                params: Vec::new(),
                reason: "level above 60".into(),
                latch: true,
            })
        }
        fn save(&self) -> Vec<u8> {
            vec![u8::from(self.tripped)]
        }
        fn restore(&mut self, saved: &[u8]) -> Result<(), String> {
            self.tripped = saved.first() == Some(&1);
            Ok(())
        }
    }

    /// A canary twin: the candidate (gain 2) in production, the model it replaced
    /// (gain 1) as its baseline, and a governor that trips on the level.
    fn canary_core() -> TwinCore {
        let types = TwinTypes::from_toml(
            "[types.pump.channels.pressure]\nunit = \"bar\"\nrange = [0.0, 100.0]\n\
             [types.pump.desired.running]\ntype = \"bool\"\ninitial = true\n\
             [types.pump.commands.stop]\nsets = { running = false }\n",
            "tests.toml",
        )
        .unwrap();
        let mut core = TwinCore::new(
            3,
            AssetPath::parse("acme/plant-a/line-1/pump-1").unwrap(),
            types.get("pump").unwrap().clone(),
            vec![level("2.0", 2.0)],
            vec![Box::new(LevelTrip { tripped: false })],
            64,
        );
        core.set_deployed("level", deployed(5, &[]).unwrap());
        core.add_shadow(PlannedShadow {
            model: level("1.0", 1.0),
            deployment: 5,
            baseline: true,
        });
        core
    }

    #[test]
    fn a_safety_action_only_the_candidates_outputs_called_for_is_counted_against_it() {
        // 40: the candidate reads 80 and trips the pump; the baseline's 40 would not
        // have. The trip still happens: the candidate is production here.
        let mut core = canary_core();
        feed(&mut core, &[40.0]);
        assert_eq!(core.state().trips.len(), 1);
        let baseline = &core.shadows()[0];
        assert!(baseline.baseline);
        assert_eq!(baseline.divergence.informed_safety_actions, 1);
        // 70: both would have tripped; nothing counts against the candidate, and the
        // governor's own state (latched) is what the real sample left.
        let mut core = canary_core();
        feed(&mut core, &[70.0, 75.0]);
        assert_eq!(core.state().trips.len(), 1);
        assert_eq!(core.shadows()[0].divergence.informed_safety_actions, 0);
        assert_eq!(core.governors[0].save(), vec![1]);
    }
}
