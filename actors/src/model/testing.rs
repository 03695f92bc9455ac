//! A small press twin that feeds samples through the standard models and applies their
//! outputs to its state the way a twin actor does, for the model tests.

use std::sync::Arc;
use std::time::Duration;

use doppel_testkit::twin_types::PRESS_BASE;

use doppel_runtime::twin::{DerivedValue, DesiredValue};
use doppel_runtime::{
    Alarm, AssetPath, Components, Model, ModelOutput, Quality, Sample, Scenario, Severity,
    SourceId, Timestamp, Trajectory, TwinState, TwinType, TwinTypes, TwinView, Value,
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

/// A press twin running the models declared in its TOML.
pub struct Twin {
    /// The type.
    pub twin_type: Arc<TwinType>,
    /// The state, with derived values and alarms applied.
    pub state: TwinState,
    /// The models, in declaration order.
    pub models: Vec<Box<dyn Model>>,
    /// The last health each model reported.
    pub health: Vec<Option<f64>>,
    /// How many alarm raises the models issued.
    pub raised_total: usize,
    /// How many alarm clears the models issued.
    pub cleared_total: usize,
    models_toml: String,
    output: ModelOutput,
    seq: u64,
}

impl Twin {
    /// A twin of the press type running `models`.
    pub fn new(models: &str) -> Self {
        let twin_type = press(models).unwrap();
        let built = build(&twin_type).unwrap();
        let path = AssetPath::parse("acme/plant-a/line-1/press-1").unwrap();
        Self {
            state: TwinState::new(path, &twin_type, 16),
            health: vec![None; built.len()],
            models: built,
            twin_type,
            raised_total: 0,
            cleared_total: 0,
            models_toml: models.to_string(),
            output: ModelOutput::default(),
            seq: 0,
        }
    }

    /// A copy built afresh from the same TOML, with every model restored from a save of
    /// this one's and the same twin state.
    pub fn restored(&self) -> Self {
        let mut copy = Self::new(&self.models_toml);
        for (model, original) in copy.models.iter_mut().zip(&self.models) {
            model.restore(&original.save()).unwrap();
        }
        copy.state = self.state.clone();
        copy.health = self.health.clone();
        copy.seq = self.seq;
        copy
    }

    /// Feeds a good reading of `channel` taken at `at_secs` (source time).
    pub fn feed(&mut self, channel: &str, value: f64, at_secs: f64) {
        self.seq += 1;
        let time = Timestamp((at_secs * 1e6).round() as i64);
        let sample = Sample {
            channel: self
                .twin_type
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
        };
        self.state.apply_sample(&sample);
        for index in 0..self.models.len() {
            self.output.reset();
            let view = TwinView {
                twin_type: &self.twin_type,
                state: &self.state,
            };
            self.models[index].observe(&sample, &view, &mut self.output);
            self.apply(index, time);
        }
    }

    fn apply(&mut self, index: usize, at: Timestamp) {
        let model = &self.models[index];
        let names = model.outputs();
        for &(slot, value, confidence) in self.output.values() {
            let name = &names[usize::from(slot)];
            match self.state.derived.iter_mut().find(|d| &d.name == name) {
                Some(derived) => {
                    derived.value = Some(value);
                    derived.confidence = confidence;
                    derived.at = at;
                }
                None => self.state.derived.push(DerivedValue {
                    name: name.clone(),
                    model: model.name().to_string(),
                    value: Some(value),
                    confidence,
                    at,
                }),
            }
        }
        for (code, severity, message) in self.output.raised() {
            self.raised_total += 1;
            self.state.raise_alarm(Alarm {
                code: code.clone(),
                severity: *severity,
                message: message.clone(),
                raised_by: model.name().to_string(),
                since: at,
            });
        }
        for code in self.output.cleared() {
            self.cleared_total += 1;
            self.state.clear_alarm(code);
        }
        if let Some(health) = self.output.health_value() {
            self.health[index] = Some(health);
        }
    }

    /// Sets a desired value, as a command accepted at `at_secs` would.
    pub fn set_desired(&mut self, name: &str, value: Value, at_secs: f64) {
        let (index, _) = self
            .twin_type
            .desired(name)
            .expect("desired value is declared");
        self.state.desired[index] = DesiredValue {
            set_at: Timestamp((at_secs * 1e6).round() as i64),
            ..DesiredValue::initial(value)
        };
    }

    /// A derived value; panics when no model wrote it.
    pub fn derived(&self, name: &str) -> f64 {
        self.state
            .derived(name)
            .unwrap_or_else(|| panic!("no derived value `{name}`"))
    }

    /// The confidence of a derived value; panics when no model wrote it.
    pub fn confidence(&self, name: &str) -> f64 {
        self.state
            .derived
            .iter()
            .find(|d| d.name == name)
            .unwrap_or_else(|| panic!("no derived value `{name}`"))
            .confidence
    }

    /// The severity of an active alarm.
    pub fn alarm(&self, code: &str) -> Option<Severity> {
        self.state
            .alarms
            .iter()
            .find(|a| a.code == code)
            .map(|a| a.severity)
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
        let view = TwinView {
            twin_type: &self.twin_type,
            state: &self.state,
        };
        let mut trajectory = Trajectory::default();
        for model in &self.models {
            model.project(&view, &scenario, &mut trajectory);
        }
        trajectory
    }
}
