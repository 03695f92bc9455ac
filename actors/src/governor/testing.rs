//! The test kit's press type and helpers shared by the governor tests.

use std::sync::Arc;

use doppel_testkit::twin_types::PRESS_BASE;

use doppel_runtime::command::Clamp;
use doppel_runtime::{
    AssetPath, Command, Components, ConfigError, DesiredChange, Governor, Origin, Proposal,
    Quality, Review, Sample, SourceId, Timestamp, TwinState, TwinType, TwinTypes, TwinView, Value,
};

/// What the governor tests add to the test kit's press: an integer desired value and
/// the command that sets it.
const STROKES: &str = r#"
[types.press.desired.strokes]
type = "int"
unit = "1/min"
range = [0, 60]
initial = 20

[types.press.commands.set_strokes]
params.per_min = { type = "int", min = 0, max = 60 }
sets = { strokes = "per_min" }
"#;

/// The press type with `governors` (TOML) appended.
pub fn press(governors: &str) -> Arc<TwinType> {
    let source = format!("{PRESS_BASE}{STROKES}\n{governors}");
    let types = TwinTypes::from_toml(&source, "types.toml").unwrap();
    types.get("press").unwrap().clone()
}

/// Builds the governors of the press type declaring `governors`.
pub fn build(governors: &str) -> (Arc<TwinType>, Vec<Box<dyn Governor>>) {
    let twin_type = press(governors);
    let mut components = Components::new();
    super::register(&mut components);
    let built = match components.build_governors(&twin_type) {
        Ok(built) => built,
        Err(error) => panic!("governors do not build: {error}"),
    };
    (twin_type, built)
}

/// Builds the single governor the press type declares.
pub fn build_one(governors: &str) -> (Arc<TwinType>, Box<dyn Governor>) {
    let (twin_type, mut built) = build(governors);
    assert_eq!(built.len(), 1);
    (twin_type, built.remove(0))
}

/// The error building the governors of the press type declaring `governors`.
pub fn build_error(governors: &str) -> ConfigError {
    let twin_type = press(governors);
    let mut components = Components::new();
    super::register(&mut components);
    match components.build_governors(&twin_type) {
        Ok(_) => panic!("governors built, expected an error"),
        Err(error) => error,
    }
}

/// A fresh press twin.
pub fn state(twin_type: &TwinType) -> TwinState {
    TwinState::new(path(), twin_type, 16)
}

/// The asset path of the test press.
pub fn path() -> AssetPath {
    AssetPath::parse("acme/plant-a/line-1/press-1").unwrap()
}

/// A reading of `channel` taken at `source_time`.
pub fn sample(
    twin_type: &TwinType,
    channel: &str,
    value: f64,
    quality: Quality,
    source_time: Timestamp,
    seq: u64,
) -> Sample {
    Sample {
        channel: twin_type.channel(channel).unwrap(),
        value,
        source_time,
        receive_time: source_time,
        quality,
        source: SourceId(1),
        epoch: 0,
        seq,
        stamped: true,
    }
}

/// A change of desired value `name` to `value`.
pub fn change(twin_type: &TwinType, name: &str, value: Value) -> DesiredChange {
    let (index, _) = twin_type.desired(name).unwrap();
    DesiredChange {
        index: index as u16,
        name: name.to_string(),
        requested: value,
        value,
    }
}

/// `set_speed` to `rpm`, from an operator.
pub fn set_speed(rpm: f64) -> Command {
    Command::new(path(), "set_speed", Origin::operator("ann")).param("rpm", Value::Float(rpm))
}

/// The outcome of one review: the decision and the changes as left by the governor.
pub struct Outcome {
    /// The decision.
    pub review: Review,
    /// The changes after review.
    pub changes: Vec<DesiredChange>,
    /// Clamps recorded.
    pub clamps: Vec<Clamp>,
}

impl Outcome {
    /// The denial reason; panics when allowed.
    pub fn denied(&self) -> &str {
        match &self.review {
            Review::Deny(reason) => reason,
            Review::Allow => panic!("allowed, expected a denial"),
        }
    }

    /// The value applied to desired `name`.
    pub fn value(&self, name: &str) -> Value {
        self.changes.iter().find(|c| c.name == name).unwrap().value
    }
}

/// Reviews `command` writing `changes` at `now`.
pub fn review(
    governor: &dyn Governor,
    twin_type: &Arc<TwinType>,
    state: &TwinState,
    command: &Command,
    changes: Vec<DesiredChange>,
    clears_trips: bool,
    now: Timestamp,
) -> Outcome {
    let view = TwinView { twin_type, state };
    let mut proposal = Proposal::new(command, changes, clears_trips, now);
    let review = governor.review(&mut proposal, &view);
    Outcome {
        review,
        clamps: proposal.clamps().to_vec(),
        changes: proposal.changes,
    }
}
