//! Deployed models: building a model from a registered package, and which deployment
//! runs on which twin.
//!
//! For each model a twin type declares, a twin runs in production the package of the
//! latest active `production` deployment that selects it (or, where a `canary`
//! deployment selects the twin, the latest of those), else the model the type builds;
//! and beside it, as a shadow, the package of the latest active `shadow` deployment
//! that selects it, if any.

use std::sync::Arc;

use parking_lot::RwLock;

use super::package::ModelPackage;
use super::registry::{DeployMode, Deployment};
use super::{Model, ModelOutput, Scenario, Trajectory};
use crate::components::Components;
use crate::config::{ComponentSpec, ConfigError, TwinType};
use crate::path::AssetPath;
use crate::sample::Sample;
use crate::twin::TwinView;

/// A model built from a package: the package's version, the kind's behaviour.
pub struct Packaged {
    inner: Box<dyn Model>,
    version: String,
}

impl Packaged {
    /// Wraps `inner`, reporting `version`.
    pub fn new(inner: Box<dyn Model>, version: impl Into<String>) -> Self {
        Self {
            inner,
            version: version.into(),
        }
    }
}

impl Model for Packaged {
    fn name(&self) -> &str {
        self.inner.name()
    }

    fn version(&self) -> &str {
        &self.version
    }

    fn outputs(&self) -> Vec<String> {
        self.inner.outputs()
    }

    fn observe(&mut self, sample: &Sample, twin: &TwinView<'_>, out: &mut ModelOutput) {
        self.inner.observe(sample, twin, out);
    }

    fn observe_late(&mut self, sample: &Sample, twin: &TwinView<'_>, out: &mut ModelOutput) {
        self.inner.observe_late(sample, twin, out);
    }

    fn project(&self, twin: &TwinView<'_>, scenario: &Scenario, trajectory: &mut Trajectory) {
        self.inner.project(twin, scenario, trajectory);
    }

    fn confidence(&self) -> f64 {
        self.inner.confidence()
    }

    fn save(&self) -> Vec<u8> {
        self.inner.save()
    }

    fn restore(&mut self, saved: &[u8]) -> Result<(), String> {
        self.inner.restore(saved)
    }
}

/// Builds `package` as the model `name` of `twin_type`, in place of (or beside) the one
/// the type declares under that name: same kind, same alarm suppression, the package's
/// parameters and version.
pub fn build_packaged(
    components: &Components,
    twin_type: &TwinType,
    name: &str,
    package: &ModelPackage,
) -> Result<Box<dyn Model>, ConfigError> {
    let origin = format!("model package {} {}", package.kind, package.version);
    let declared = twin_type
        .models
        .iter()
        .find(|spec| spec.name == name)
        .ok_or_else(|| {
            ConfigError::at(
                &origin,
                None,
                format!("type `{}` has no model `{name}`", twin_type.name),
            )
        })?;
    if declared.kind != package.kind {
        return Err(ConfigError::at(
            &origin,
            None,
            format!(
                "model `{name}` of type `{}` is a {}, not a {}",
                twin_type.name, declared.kind, package.kind
            ),
        ));
    }
    let spec = ComponentSpec {
        kind: package.kind.clone(),
        name: name.to_string(),
        suppress_when: declared.suppress_when.clone(),
        params: package.params.clone(),
        origin,
        line: None,
    };
    let model = components.build_model(&spec, twin_type)?;
    Ok(Box::new(Packaged::new(model, package.version.clone())))
}

/// An active deployment with its package.
#[derive(Debug, Clone)]
pub struct ActiveDeployment {
    /// The deployment.
    pub deployment: Deployment,
    /// Its package.
    pub package: Arc<ModelPackage>,
}

/// What runs as one model of one twin, by deployment.
#[derive(Debug, Clone, Default)]
pub struct ModelChoice {
    /// The deployment whose package runs in production (`None`: the type's model).
    pub production: Option<ActiveDeployment>,
    /// The deployment whose package runs as a shadow beside it.
    pub shadow: Option<ActiveDeployment>,
    /// On a canary twin (production is a canary's candidate): what would run in
    /// production without the canary (`Some(None)`: the type's model). It runs as the
    /// canary's baseline shadow, in place of any shadow deployment.
    pub baseline: Option<Option<ActiveDeployment>>,
}

/// The node's active deployments, read whenever a twin's models are built.
#[derive(Default)]
pub struct ActiveModels {
    active: RwLock<Arc<Vec<ActiveDeployment>>>,
}

impl ActiveModels {
    /// Replaces the active set.
    pub fn set(&self, active: Vec<ActiveDeployment>) {
        *self.active.write() = Arc::new(active);
    }

    /// The active set.
    pub fn get(&self) -> Arc<Vec<ActiveDeployment>> {
        self.active.read().clone()
    }

    /// What runs as model `model` of the twin at `path` (of type `twin_type`).
    pub fn choose(&self, path: &AssetPath, twin_type: &str, model: &str) -> ModelChoice {
        choose(&self.active.read(), path, twin_type, model)
    }
}

/// What runs as model `model` of the twin at `path`, given the active deployments in
/// deployment order.
pub fn choose(
    active: &[ActiveDeployment],
    path: &AssetPath,
    twin_type: &str,
    model: &str,
) -> ModelChoice {
    let latest = |modes: &[DeployMode]| {
        active
            .iter()
            .rev()
            .find(|a| {
                modes.contains(&a.deployment.mode) && a.deployment.applies(path, twin_type, model)
            })
            .cloned()
    };
    match latest(&[DeployMode::Canary]) {
        Some(canary) => ModelChoice {
            production: Some(canary),
            shadow: None,
            baseline: Some(latest(&[DeployMode::Production])),
        },
        None => ModelChoice {
            production: latest(&[DeployMode::Production]),
            shadow: latest(&[DeployMode::Shadow]),
            baseline: None,
        },
    }
}

/// How far a shadow's values were from production's on one output.
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct OutputDivergence {
    /// The output's name.
    pub name: String,
    /// Samples on which both had a value to compare.
    pub compared: u64,
    /// Sum of |shadow − production|.
    pub sum_abs: f64,
    /// Largest |shadow − production|.
    pub max_abs: f64,
}

impl OutputDivergence {
    /// Mean |shadow − production| (0 before anything was compared).
    pub fn mean_abs(&self) -> f64 {
        if self.compared == 0 {
            0.0
        } else {
            self.sum_abs / self.compared as f64
        }
    }
}

/// How a shadow and production differed since the shadow started.
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Divergence {
    /// The first sample compared (source time).
    pub since: crate::time::Timestamp,
    /// The latest sample compared (source time).
    pub until: crate::time::Timestamp,
    /// Samples both ran on.
    pub samples: u64,
    /// Per output.
    pub outputs: Vec<OutputDivergence>,
    /// Alarms the shadow raised while production's stayed clear.
    pub shadow_only_alarms: u64,
    /// Alarms production raised while the shadow's stayed clear.
    pub production_only_alarms: u64,
    /// Safety actions a governor demanded from production's outputs that, from the
    /// state it saved before the sample, it did not demand from the shadow's (kept on
    /// canary twins, where production is the candidate and the shadow the model it
    /// replaced).
    #[serde(default)]
    pub informed_safety_actions: u64,
    /// Twins summed (1 for one twin's figures).
    #[serde(default)]
    pub twins: u32,
}

impl Divergence {
    /// Records one comparison on output `name`.
    pub fn compare(&mut self, name: &str, shadow: f64, production: f64) {
        let difference = (shadow - production).abs();
        if !difference.is_finite() {
            return;
        }
        let output = match self.outputs.iter_mut().position(|o| o.name == name) {
            Some(index) => &mut self.outputs[index],
            None => {
                self.outputs.push(OutputDivergence {
                    name: name.to_string(),
                    ..OutputDivergence::default()
                });
                self.outputs.last_mut().expect("just pushed")
            }
        };
        output.compared += 1;
        output.sum_abs += difference;
        output.max_abs = output.max_abs.max(difference);
    }

    /// Seconds of samples compared.
    pub fn window_secs(&self) -> f64 {
        (self.until.0 - self.since.0).max(0) as f64 / 1e6
    }

    /// Adds another twin's figures (a fleet's total).
    pub fn merge(&mut self, other: &Divergence) {
        if self.samples == 0 || (other.samples > 0 && other.since < self.since) {
            self.since = other.since;
        }
        self.until = self.until.max(other.until);
        self.samples += other.samples;
        self.twins += other.twins.max(1);
        self.informed_safety_actions += other.informed_safety_actions;
        self.shadow_only_alarms += other.shadow_only_alarms;
        self.production_only_alarms += other.production_only_alarms;
        for output in &other.outputs {
            match self.outputs.iter_mut().find(|o| o.name == output.name) {
                Some(mine) => {
                    mine.compared += output.compared;
                    mine.sum_abs += output.sum_abs;
                    mine.max_abs = mine.max_abs.max(output.max_abs);
                }
                None => self.outputs.push(output.clone()),
            }
        }
    }
}

/// A shadow model as a twin reports it.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct ShadowReport {
    /// The shadow's deployment.
    pub deployment: u64,
    /// The production model it runs beside.
    pub model: String,
    /// The shadow's version.
    pub version: String,
    /// The production model's version.
    pub production_version: String,
    /// Its outputs, kept apart from the twin's derived values.
    pub values: Vec<crate::twin::DerivedValue>,
    /// Codes of the alarms it holds raised (never raised on the twin).
    pub alarms: Vec<String>,
    /// How it differed from production.
    pub divergence: Divergence,
    /// On a canary twin: this is the model the candidate replaced, kept running to
    /// measure the candidate against.
    #[serde(default)]
    pub baseline: bool,
}

/// Which model saved a state in a snapshot: its version, and the deployment it came
/// from (`None`: the twin type's own model).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct SavedVersion {
    /// The model's name.
    pub model: String,
    /// Its version.
    pub version: String,
    /// The deployment that put it there.
    pub deployment: Option<u64>,
}

/// A shadow's saved state in a snapshot.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct SavedShadow {
    /// The shadow's deployment.
    pub deployment: u64,
    /// The production model it runs beside.
    pub model: String,
    /// The shadow's version.
    pub version: String,
    /// The model's own saved state.
    pub state: Vec<u8>,
    /// Its outputs.
    pub values: Vec<crate::twin::DerivedValue>,
    /// Alarms it holds raised.
    pub alarms: Vec<String>,
    /// Its divergence so far.
    pub divergence: Divergence,
    /// A canary's baseline (see [`ShadowReport::baseline`]).
    #[serde(default)]
    pub baseline: bool,
}
