//! A small press twin for the model tests: the real twin core ([`TwinCore`]) running
//! the standard models, fed readings and commands the way a twin actor feeds it.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use doppel_testkit::twin_types::PRESS_BASE;

use doppel_runtime::config::SetSource;
use doppel_runtime::internal::{Effects, TwinCore};
use doppel_runtime::journal::Snapshot;
use doppel_runtime::{
    AssetPath, Command, Components, Model, ModelOutput, Origin, Quality, Sample, Scenario,
    Severity, SourceId, Timestamp, Trajectory, TwinState, TwinType, TwinTypes, TwinView, Value,
};

/// The press type with `models` (TOML) appended.
fn press(models: &str) -> Result<Arc<TwinType>, doppel_runtime::ConfigError> {
    let types = TwinTypes::from_toml(&format!("{PRESS_BASE}\n{models}"), "types.toml")?;
    Ok(types.get("press").expect("press is declared").clone())
}

/// Builds the models `twin_type` declares with the standard kinds registered.
fn build(twin_type: &TwinType) -> Result<Vec<Box<dyn Model>>, doppel_runtime::ConfigError> {
    let mut components = Components::new();
    super::register(&mut components);
    components.build_models(twin_type)
}

/// The error building `models` on the press type fails with, as text.
pub fn build_error(models: &str) -> String {
    match press(models).and_then(|twin_type| build(&twin_type)) {
        Ok(_) => panic!("building {models} succeeded"),
        Err(error) => error.to_string(),
    }
}

/// Deterministic noise in [-0.1, 0.1] for reading `i`.
pub fn noise(i: u32) -> f64 {
    (f64::from(i) * 1.7).sin() * 0.1
}

/// What the models issued, as the probes saw it.
#[derive(Debug, Default)]
struct Issued {
    health: Vec<Option<f64>>,
    raised: usize,
    cleared: usize,
}

/// A model as the core runs it, counting what it issues: raises and clears as the
/// model calls them (so "raised on transitions only" is the model's own doing), and
/// the last health it reported.
struct Probe {
    model: Box<dyn Model>,
    index: usize,
    issued: Arc<Mutex<Issued>>,
}

impl Probe {
    fn count(&self, out: &ModelOutput) {
        let mut issued = self.issued.lock().expect("probe counts");
        issued.raised += out.raised().len();
        issued.cleared += out.cleared().len();
        if let Some(health) = out.health_value() {
            issued.health[self.index] = Some(health);
        }
    }
}

impl Model for Probe {
    fn name(&self) -> &str {
        self.model.name()
    }

    fn version(&self) -> &str {
        self.model.version()
    }

    fn outputs(&self) -> Vec<String> {
        self.model.outputs()
    }

    fn observe(&mut self, sample: &Sample, twin: &TwinView<'_>, out: &mut ModelOutput) {
        self.model.observe(sample, twin, out);
        self.count(out);
    }

    fn observe_late(&mut self, sample: &Sample, twin: &TwinView<'_>, out: &mut ModelOutput) {
        self.model.observe_late(sample, twin, out);
        self.count(out);
    }

    fn project(&self, twin: &TwinView<'_>, scenario: &Scenario, trajectory: &mut Trajectory) {
        self.model.project(twin, scenario, trajectory);
    }

    fn confidence(&self) -> f64 {
        self.model.confidence()
    }

    fn save(&self) -> Vec<u8> {
        self.model.save()
    }

    fn restore(&mut self, saved: &[u8]) -> Result<(), String> {
        self.model.restore(saved)
    }
}

/// A press twin running the models declared in its TOML on the real twin core.
pub struct Twin {
    core: TwinCore,
    issued: Arc<Mutex<Issued>>,
    /// The last health each model reported.
    pub health: Vec<Option<f64>>,
    /// How many alarm raises the models issued.
    pub raised_total: usize,
    /// How many alarm clears the models issued.
    pub cleared_total: usize,
    models_toml: String,
    seq: u64,
}

impl Twin {
    /// A twin of the press type running `models`.
    pub fn new(models: &str) -> Self {
        let twin_type = press(models).unwrap();
        let built = build(&twin_type).unwrap();
        let issued = Arc::new(Mutex::new(Issued {
            health: vec![None; built.len()],
            ..Issued::default()
        }));
        let probes: Vec<Box<dyn Model>> = built
            .into_iter()
            .enumerate()
            .map(|(index, model)| {
                Box::new(Probe {
                    model,
                    index,
                    issued: issued.clone(),
                }) as Box<dyn Model>
            })
            .collect();
        let path = AssetPath::parse("acme/plant-a/line-1/press-1").unwrap();
        let count = probes.len();
        Self {
            core: TwinCore::new(0, path, twin_type, probes, Vec::new(), 16),
            issued,
            health: vec![None; count],
            raised_total: 0,
            cleared_total: 0,
            models_toml: models.to_string(),
            seq: 0,
        }
    }

    /// The type.
    pub fn twin_type(&self) -> &Arc<TwinType> {
        self.core.twin_type()
    }

    /// The state, with derived values and alarms applied.
    pub fn state(&self) -> &TwinState {
        self.core.state()
    }

    /// The models, in declaration order.
    pub fn models(&self) -> &[Box<dyn Model>] {
        self.core.models()
    }

    /// Model `index` built afresh from the TOML, outside any twin.
    pub fn fresh_model(&self, index: usize) -> Box<dyn Model> {
        let twin_type = press(&self.models_toml).unwrap();
        build(&twin_type).unwrap().swap_remove(index)
    }

    /// A copy built afresh from the same TOML and restored from a snapshot of this
    /// one, as a twin restarts from its snapshot.
    pub fn restored(&mut self) -> Self {
        let mut copy = Self::new(&self.models_toml);
        let snapshot = self.core.snapshot().expect("the snapshot encodes");
        copy.core
            .restore(Snapshot::decode(&snapshot).expect("the snapshot decodes"))
            .expect("the snapshot restores");
        for (model, original) in copy.models().iter().zip(self.models()) {
            assert_eq!(model.save(), original.save(), "{} restored", model.name());
        }
        copy.issued.lock().expect("probe counts").health = self.health.clone();
        copy.health = self.health.clone();
        copy.seq = self.seq;
        copy
    }

    fn take_issued(&mut self) {
        let issued = self.issued.lock().expect("probe counts");
        self.health = issued.health.clone();
        self.raised_total = issued.raised;
        self.cleared_total = issued.cleared;
    }

    /// A good reading of `channel` taken at `at_secs` (source time), numbered next.
    pub fn sample(&mut self, channel: &str, value: f64, at_secs: f64) -> Sample {
        self.seq += 1;
        let time = Timestamp((at_secs * 1e6).round() as i64);
        Sample {
            channel: self
                .twin_type()
                .channel(channel)
                .expect("channel is declared"),
            value,
            source_time: time,
            receive_time: time,
            quality: Quality::Good,
            source: SourceId(1),
            epoch: 0,
            seq: self.seq,
            stamped: true,
        }
    }

    /// The twin as a model sees it.
    pub fn view(&self) -> TwinView<'_> {
        TwinView {
            twin_type: self.twin_type(),
            state: self.state(),
        }
    }

    /// Feeds a good reading of `channel` taken at `at_secs` (source time).
    pub fn feed(&mut self, channel: &str, value: f64, at_secs: f64) {
        let sample = self.sample(channel, value, at_secs);
        self.core.apply_sample(&sample, &mut Effects::default());
        self.take_issued();
    }

    /// Sets a desired value through the type's command that sets it (from a parameter,
    /// or as its fixed value), accepted at `at_secs`.
    pub fn set_desired(&mut self, name: &str, value: Value, at_secs: f64) {
        let path = self.core.path().clone();
        let command = self
            .twin_type()
            .commands
            .values()
            .find_map(|spec| {
                spec.sets.iter().find_map(|(desired, source)| match source {
                    _ if desired != name => None,
                    SetSource::Param(param) => Some(
                        Command::new(path.clone(), &spec.name, Origin::operator("test"))
                            .param(param, value),
                    ),
                    SetSource::Const(fixed) if *fixed == value => Some(Command::new(
                        path.clone(),
                        &spec.name,
                        Origin::operator("test"),
                    )),
                    SetSource::Const(_) => None,
                })
            })
            .unwrap_or_else(|| panic!("no command sets `{name}` to {value:?}"));
        let at = Timestamp((at_secs * 1e6).round() as i64);
        let (verdict, _) = self
            .core
            .command(&command, at, &mut Effects::default())
            .expect("the command is declared");
        assert!(verdict.is_applied(), "{verdict:?}");
        self.take_issued();
    }

    /// A derived value; panics when no model wrote it.
    pub fn derived(&self, name: &str) -> f64 {
        self.state()
            .derived(name)
            .unwrap_or_else(|| panic!("no derived value `{name}`"))
    }

    /// The confidence of a derived value; panics when no model wrote it.
    pub fn confidence(&self, name: &str) -> f64 {
        self.state()
            .derived
            .iter()
            .find(|d| *d.name == *name && d.value.is_some())
            .unwrap_or_else(|| panic!("no derived value `{name}`"))
            .confidence
    }

    /// The severity of an active alarm (one that returned to normal unacknowledged
    /// is not).
    pub fn alarm(&self, code: &str) -> Option<Severity> {
        self.state()
            .alarms
            .iter()
            .find(|a| a.code == code && a.active)
            .map(|a| a.severity)
    }

    /// Why active alarm `code` was raised, if its model said.
    pub fn explanation(&self, code: &str) -> Option<doppel_runtime::Explanation> {
        let explanations = self.core.explanations();
        explanations
            .into_iter()
            .find(|(c, _)| c == code)
            .map(|(_, explanation)| explanation)
    }

    /// Projects every model over `horizon_secs` in steps of `step_secs` under `desired`.
    pub fn project(
        &self,
        desired: &[(&str, Value)],
        horizon_secs: u64,
        step_secs: u64,
    ) -> Trajectory {
        let scenario = Scenario {
            start: Timestamp(0),
            horizon: Duration::from_secs(horizon_secs),
            step: Duration::from_secs(step_secs),
            desired: desired
                .iter()
                .map(|(name, value)| (name.to_string(), *value))
                .collect(),
        };
        let view = self.view();
        let mut trajectory = Trajectory::default();
        for model in self.models() {
            model.project(&view, &scenario, &mut trajectory);
        }
        trajectory
    }
}
