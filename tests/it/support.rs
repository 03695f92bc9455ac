//! Shared fixtures: a small plant, runtimes on temp dirs, waiting with deadlines.

use std::time::{Duration, Instant};

use doppel::{
    AssetPath, Quality, Reading, Runtime, RuntimeSettings, SourceId, Timestamp, Topology, TwinTypes,
};

/// A press type with the standard models and governors.
pub const TYPES: &str = r#"
[types.press]
description = "Hydraulic press"
key_channels = ["temperature", "vibration"]

[types.press.channels.temperature]
unit = "degC"
range = [-20.0, 250.0]

[types.press.channels.temperature_b]
unit = "degC"
range = [-20.0, 250.0]

[types.press.channels.vibration]
unit = "mm/s"
range = [0.0, 50.0]

[types.press.channels.power_kw]
unit = "kW"
range = [0.0, 500.0]

[types.press.channels.throughput]
unit = "parts/min"
range = [0.0, 200.0]

[types.press.aggregates]
throughput = "throughput"
power = "power_kw"

[types.press.desired.speed]
unit = "rpm"
range = [0, 3000]
initial = 1200

[types.press.desired.running]
type = "bool"
initial = true

[types.press.commands.set_speed]
params.rpm = { type = "float", min = 0, max = 3000, unit = "rpm" }
sets = { speed = "rpm" }

[types.press.commands.stop]
sets = { running = false }

[types.press.commands.start]
sets = { running = true }

[types.press.commands.reset]
clears_trips = true

[[types.press.models]]
kind = "ewma_anomaly"
channel = "vibration"

[[types.press.models]]
kind = "thermal"
channel = "temperature"
ambient = 25.0
gain = 0.03
load_desired = "speed"
running_desired = "running"
tau_secs = 60.0

[[types.press.models]]
kind = "degradation"
channel = "vibration"
threshold = 11.0
warn_hours = 24.0
load_desired = "speed"

[[types.press.governors]]
kind = "deadline"

[[types.press.governors]]
kind = "envelope"
desired = "speed"
min = 200
max = 2400

[[types.press.governors]]
kind = "dual_sensor"
primary = "temperature"
secondary = "temperature_b"
tolerance = 3.0

[[types.press.governors]]
kind = "trip"
name = "overtemp"
channel = "temperature"
above = 95.0
hysteresis = 10.0
blocks = ["running"]
"#;

/// Two lines: line-1 with press-1 and press-2, line-2 with press-3.
pub const PLANT: &str = r#"
[[plant]]
path = "acme/plant-a"

[[plant.line]]
name = "line-1"

[[plant.line.machine]]
name = "press-1"
type = "press"

[[plant.line.machine]]
name = "press-2"
type = "press"

[[plant.line]]
name = "line-2"

[[plant.line.machine]]
name = "press-3"
type = "press"
"#;

pub fn path(raw: &str) -> AssetPath {
    AssetPath::parse(raw).unwrap()
}

pub fn press(n: u32) -> AssetPath {
    let line = if n <= 2 { 1 } else { 2 };
    path(&format!("acme/plant-a/line-{line}/press-{n}"))
}

/// The wall-clock time `age` before now: test readings, ranges and deadlines are
/// placed relative to the clock at run time, never on a fixed date.
pub fn ago(age: Duration) -> Timestamp {
    Timestamp::now().minus(age)
}

/// Settings for tests: short batches.
pub fn settings() -> RuntimeSettings {
    let mut settings = RuntimeSettings::default();
    settings.journal.batch_interval_ms = 2;
    settings
}

pub async fn start(dir: &std::path::Path) -> Runtime {
    start_with(dir, settings(), |b| b).await
}

pub async fn start_with(
    dir: &std::path::Path,
    settings: RuntimeSettings,
    customize: impl FnOnce(doppel::RuntimeBuilder) -> doppel::RuntimeBuilder,
) -> Runtime {
    start_custom(dir, TYPES, settings, customize).await
}

pub async fn start_custom(
    dir: &std::path::Path,
    types_toml: &str,
    settings: RuntimeSettings,
    customize: impl FnOnce(doppel::RuntimeBuilder) -> doppel::RuntimeBuilder,
) -> Runtime {
    let types = TwinTypes::from_toml(types_toml, "tests/types.toml").unwrap();
    let topology = Topology::from_toml(PLANT, "tests/plant.toml", &types).unwrap();
    let builder = Runtime::builder()
        .twin_types(types)
        .topology(topology)
        .data_dir(dir)
        .settings(settings);
    customize(builder).start().await.unwrap()
}

pub fn reading(value: f64, source: SourceId, seq: u64) -> Reading {
    Reading {
        value,
        source_time: Timestamp::now(),
        quality: Quality::Good,
        source,
        seq,
    }
}

/// Ingests one reading and waits until it is durable, failing the test otherwise.
pub async fn ingest_durable(
    twins: &doppel::Twins,
    path: &AssetPath,
    channel: &str,
    reading: Reading,
) {
    twins
        .ingest(path, channel, reading)
        .await
        .unwrap_or_else(|error| panic!("{path}/{channel} refused: {error}"))
        .durable()
        .await
        .unwrap_or_else(|error| panic!("{path}/{channel} not acknowledged: {error}"));
}

/// Polls `condition` until it holds or `timeout` passes.
pub async fn wait_until<F, Fut>(what: &str, timeout: Duration, mut condition: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + timeout;
    while !condition().await {
        assert!(Instant::now() < deadline, "timed out waiting until {what}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// A model with a bug: it panics on a reading of exactly 13, to restart a twin for real.
pub struct Fragile;

impl doppel::Model for Fragile {
    fn name(&self) -> &str {
        "fragile"
    }
    fn version(&self) -> &str {
        "0.0.1"
    }
    fn outputs(&self) -> Vec<String> {
        Vec::new()
    }
    fn observe(
        &mut self,
        sample: &doppel::Sample,
        _twin: &doppel::TwinView<'_>,
        _out: &mut doppel::ModelOutput,
    ) {
        assert!(sample.value != 13.0, "fragile model cannot handle 13");
    }
    fn project(
        &self,
        _twin: &doppel::TwinView<'_>,
        _scenario: &doppel::Scenario,
        _trajectory: &mut doppel::Trajectory,
    ) {
    }
}

pub fn fragile(
    _spec: &doppel::ComponentSpec,
    _type: &doppel::TwinType,
) -> Result<Box<dyn doppel::Model>, doppel::ConfigError> {
    Ok(Box::new(Fragile))
}
