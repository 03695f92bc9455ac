//! The test plant: one press twin type and a small plant of three presses, as TOML.
//!
//! Tests that exercise one kind of component take [`PRESS_BASE`] and append their
//! own `[[types.press.models]]` or `[[types.press.governors]]`; the rest take
//! [`press`], the press with its standard models and governors.

/// The press's channels, aggregates, desired values and commands, with no models and
/// no governors.
pub const PRESS_BASE: &str = r#"
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
"#;

/// The press's standard models: anomaly score on vibration, a thermal model of
/// temperature under load, and remaining useful life from vibration.
pub const PRESS_MODELS: &str = r#"
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
"#;

/// The press's standard governors: command deadlines, a speed envelope of 200–2400
/// rpm, agreement of the two temperature sensors within 3 degC, and an over-temperature
/// trip above 95 degC that stops the press.
pub const PRESS_GOVERNORS: &str = r#"
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

/// The press with its standard models and governors.
pub fn press() -> String {
    format!("{PRESS_BASE}{PRESS_MODELS}{PRESS_GOVERNORS}")
}

/// The same twin types under another type name: `renamed(&press(), "machine")`.
pub fn renamed(types: &str, name: &str) -> String {
    types.replace("types.press", &format!("types.{name}"))
}

/// Two lines of presses: line-1 with press-1 and press-2, line-2 with press-3.
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

/// The asset path of press `n` of [`PLANT`].
pub fn press_path(n: u32) -> String {
    let line = if n <= 2 { 1 } else { 2 };
    format!("acme/plant-a/line-{line}/press-{n}")
}
