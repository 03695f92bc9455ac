//! `thermal`: a first-order thermal model of a machine heated by its load.
//!
//! ```toml
//! [[types.press.models]]
//! kind = "thermal"
//! channel = "temperature"     # measured temperature in °C, required
//! ambient = 25.0              # °C
//! gain = 0.02                 # °C of steady-state rise per unit of load, required
//! load_desired = "speed"      # the desired value that sets the load, required
//! running_desired = "running" # optional bool desired value; false means no load
//! tau_secs = 600.0            # thermal time constant
//! residual_warn = 15.0        # °C above the model that counts as overheating
//! secondary = "temperature_b" # optional: a second sensor of the same temperature
//! output = "temperature"      # prefix of the derived values
//! ```
//!
//! At load `L` the machine settles at `T_ss = ambient + gain × L`. Between readings the
//! model integrates its expected temperature exactly,
//! `T_exp(t + dt) = T_ss + (T_exp(t) - T_ss) × exp(-dt / tau)`, starting from the first
//! reading. The load is piecewise constant: when the load (or running) desired value was
//! set between two readings, the old steady state holds until the moment it was set
//! (`set_at`, journaled with the command) and the new one after. It writes
//! `<output>_steady_state` (`T_ss` in force at the reading) and `<output>_residual`
//! (measured - expected), with confidence `exp(-|residual| / residual_warn)`.
//!
//! A residual above `residual_warn` for three readings in a row (a cooling fault, a
//! dragging brake) raises the warning `thermal:<channel>`; it clears once the residual is
//! below half of `residual_warn`. The alarm's explanation gives the reading, the
//! expected temperature, the steady state and the load it assumes; with a `secondary`
//! sensor it also says whether the two disagree (the second sensor reads what the model
//! expects: drift of the first sensor rather than a change in the process) or agree (a
//! change in the process). Health is `1 - residual / (2 residual_warn)` for a
//! positive residual and 1 otherwise: running cooler than the model is not wear.
//!
//! A projection starts from the current measured temperature and heads exponentially for
//! the steady state under the scenario's load (0 when the scenario's `running_desired`
//! is false); desired values the scenario leaves out keep their current values. Its
//! `<channel>` series replaces one an earlier model (such as `ewma_anomaly`) projected.
//! Once 30 readings were compared, each projected temperature carries bounds two
//! standard errors either side: the root mean square of the residuals (an exponentially
//! weighted mean of their squares, which takes in noise and every load the model does
//! not see), widened while the reading the projection starts from still weighs
//! (`× sqrt(1 + exp(-2t / tau))`).

use serde::{Deserialize, Serialize};

use doppel_runtime::{
    ChannelId, ComponentSpec, ConfigError, ExplainedInput, Model, ModelOutput, Quality, Sample,
    Scenario, Severity, Timestamp, Trajectory, TrajectoryPoint, TwinType, TwinView, Value,
};

use super::{
    check_output_name, ensure, existing_channel, existing_desired, micros_to_secs, restore_state,
    save_state,
};

const VERSION: &str = "1.0.0";

/// Readings in a row above `residual_warn` that raise the alarm.
const READINGS_TO_ALARM: u32 = 3;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Config {
    channel: String,
    #[serde(default = "default_ambient")]
    ambient: f64,
    gain: f64,
    load_desired: String,
    running_desired: Option<String>,
    #[serde(default = "default_tau_secs")]
    tau_secs: f64,
    #[serde(default = "default_residual_warn")]
    residual_warn: f64,
    secondary: Option<String>,
    output: Option<String>,
}

fn default_ambient() -> f64 {
    25.0
}

fn default_tau_secs() -> f64 {
    600.0
}

fn default_residual_warn() -> f64 {
    15.0
}

/// What survives a snapshot.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
struct State {
    /// Expected temperature at `last_time`, once a reading arrived.
    expected: Option<f64>,
    /// The steady state in force at `last_time`.
    steady_state: f64,
    /// Source time (µs) of the last reading used.
    last_time: Option<i64>,
    /// The last reading used.
    measured: f64,
    /// The last residual, measured - expected.
    residual: f64,
    /// Readings in a row with the residual above `residual_warn`.
    readings_over: u32,
    /// True while this model holds its alarm raised.
    alarm_active: bool,
    /// Exponentially weighted mean of the squared residual: how far readings fall
    /// from the open-loop expectation, noise and unmodelled load together.
    residual_ms: f64,
    /// Residuals folded into `residual_ms` (saturating).
    residuals: u32,
}

/// The state as saved before it kept residual statistics.
#[derive(Debug, Clone, Copy, Deserialize)]
struct StateV1 {
    expected: Option<f64>,
    steady_state: f64,
    last_time: Option<i64>,
    measured: f64,
    residual: f64,
    readings_over: u32,
    alarm_active: bool,
}

impl From<StateV1> for State {
    fn from(old: StateV1) -> Self {
        Self {
            expected: old.expected,
            steady_state: old.steady_state,
            last_time: old.last_time,
            measured: old.measured,
            residual: old.residual,
            readings_over: old.readings_over,
            alarm_active: old.alarm_active,
            residual_ms: 0.0,
            residuals: 0,
        }
    }
}

/// Weight of each new squared residual in `residual_ms`.
const RESIDUAL_WEIGHT: f64 = 0.01;
/// Residuals before a projection carries bounds.
const RESIDUALS_FOR_BOUNDS: u32 = 30;

/// The `thermal` model: a first-order response of temperature to load.
pub struct Thermal {
    name: String,
    channel: ChannelId,
    channel_name: String,
    /// The channel's unit, for messages.
    unit: String,
    steady_state_output: String,
    residual_output: String,
    alarm_code: String,
    ambient: f64,
    gain: f64,
    load_desired: String,
    running_desired: Option<String>,
    tau_secs: f64,
    residual_warn: f64,
    /// A second sensor of the same temperature, for explanations.
    secondary: Option<(ChannelId, String)>,
    state: State,
}

impl Thermal {
    /// The kind name used in configuration.
    pub const KIND: &'static str = "thermal";

    /// Builds the model from its declaration, checking it against `twin_type`.
    pub fn from_spec(spec: &ComponentSpec, twin_type: &TwinType) -> Result<Self, ConfigError> {
        let config: Config = spec.params()?;
        let channel = existing_channel(spec, twin_type, &config.channel)?;
        existing_desired(spec, twin_type, &config.load_desired, true)?;
        if let Some(running_desired) = &config.running_desired {
            existing_desired(spec, twin_type, running_desired, false)?;
        }
        ensure(
            spec,
            config.ambient.is_finite() && (-100.0..=1000.0).contains(&config.ambient),
            format_args!(
                "ambient must be between -100 and 1000 °C, got {}",
                config.ambient
            ),
        )?;
        ensure(
            spec,
            config.gain.is_finite(),
            format_args!("gain must be a finite number, got {}", config.gain),
        )?;
        ensure(
            spec,
            config.tau_secs.is_finite() && config.tau_secs > 0.0,
            format_args!(
                "tau_secs must be a positive number, got {}",
                config.tau_secs
            ),
        )?;
        ensure(
            spec,
            config.residual_warn.is_finite() && config.residual_warn > 0.0,
            format_args!(
                "residual_warn must be a positive number, got {}",
                config.residual_warn
            ),
        )?;
        let secondary = match &config.secondary {
            Some(name) => Some((existing_channel(spec, twin_type, name)?, name.clone())),
            None => None,
        };
        let prefix = config.output.unwrap_or_else(|| config.channel.clone());
        let steady_state_output = format!("{prefix}_steady_state");
        let residual_output = format!("{prefix}_residual");
        check_output_name(spec, twin_type, &steady_state_output)?;
        check_output_name(spec, twin_type, &residual_output)?;
        Ok(Self {
            name: spec.name.clone(),
            channel,
            alarm_code: format!("thermal:{}", config.channel),
            unit: twin_type
                .channel_spec(channel)
                .map(|c| c.unit.clone())
                .unwrap_or_default(),
            channel_name: config.channel,
            steady_state_output,
            residual_output,
            ambient: config.ambient,
            gain: config.gain,
            load_desired: config.load_desired,
            running_desired: config.running_desired,
            tau_secs: config.tau_secs,
            residual_warn: config.residual_warn,
            secondary,
            state: State::default(),
        })
    }

    /// Why the overheating alarm is raised: the reading against the expectation, the
    /// load it assumes, and what a second sensor says.
    fn explain(
        &self,
        measured: f64,
        expected: f64,
        steady_state: f64,
        twin: &TwinView<'_>,
        out: &mut ModelOutput,
    ) {
        let (load, _, _) = self.current(twin);
        let mut inputs = vec![
            ExplainedInput::new(self.channel_name.clone(), measured, self.unit.clone()),
            ExplainedInput::new(
                format!("expected {}", self.channel_name),
                expected,
                self.unit.clone(),
            ),
            ExplainedInput::new("steady state", steady_state, self.unit.clone()),
        ];
        if let Some(load) = load {
            inputs.push(ExplainedInput::new(
                self.load_desired.clone(),
                load.as_f64(),
                "",
            ));
        }
        let above = super::measured(measured - expected, &self.unit);
        let mut summary = format!(
            "{} reads {above} above what the model expects at this load: heat the load does not explain",
            self.channel_name
        );
        if let Some((channel, name)) = &self.secondary
            && let Some(second) = twin.state.value(*channel)
        {
            inputs.push(ExplainedInput::new(name.clone(), second, self.unit.clone()));
            let tolerance = self.residual_warn / 2.0;
            summary = if (second - expected).abs() <= tolerance {
                format!(
                    "{} reads {above} above what the model expects while {name} reads {} as expected: drift of {} rather than a change in the process",
                    self.channel_name,
                    super::measured(second, &self.unit),
                    self.channel_name
                )
            } else if (second - measured).abs() <= tolerance {
                format!(
                    "{} and {name} both read about {above} above what the model expects at this load: a change in the process (cooling, friction), not a sensor",
                    self.channel_name
                )
            } else {
                format!(
                    "{} reads {above} above what the model expects and {name} reads {}: the sensors disagree with each other and with the model",
                    self.channel_name,
                    super::measured(second, &self.unit)
                )
            };
        }
        out.explain(self.alarm_code.clone(), summary, inputs);
    }

    /// The temperature the machine settles at under `load` and `running`.
    fn steady_state(&self, load: Option<Value>, running: Option<Value>) -> f64 {
        let stopped = running.is_some_and(|r| r.as_f64() == 0.0);
        let load = if stopped {
            0.0
        } else {
            load.map_or(0.0, |v| v.as_f64())
        };
        self.ambient + self.gain * load
    }

    /// The current load and running state of the twin, and when the later of them was
    /// set.
    fn current(&self, twin: &TwinView<'_>) -> (Option<Value>, Option<Value>, Timestamp) {
        let load = twin.desired(&self.load_desired);
        let running = self
            .running_desired
            .as_deref()
            .and_then(|name| twin.desired(name));
        let set_at = load
            .iter()
            .chain(&running)
            .map(|d| d.set_at)
            .max()
            .unwrap_or(Timestamp(0));
        (load.map(|d| d.value), running.map(|d| d.value), set_at)
    }

    /// The temperature `dt_secs` after `from`, heading for `steady_state`.
    fn relax(&self, from: f64, steady_state: f64, dt_secs: f64) -> f64 {
        steady_state + (from - steady_state) * (-dt_secs / self.tau_secs).exp()
    }

    fn health(&self) -> f64 {
        1.0 - self.state.residual.max(0.0) / (2.0 * self.residual_warn)
    }
}

impl Model for Thermal {
    fn name(&self) -> &str {
        &self.name
    }

    fn version(&self) -> &str {
        VERSION
    }

    fn outputs(&self) -> Vec<String> {
        vec![
            self.steady_state_output.clone(),
            self.residual_output.clone(),
        ]
    }

    fn observe(&mut self, sample: &Sample, twin: &TwinView<'_>, out: &mut ModelOutput) {
        if sample.channel != self.channel
            || sample.quality == Quality::Bad
            || !sample.value.is_finite()
        {
            return;
        }
        let time = sample.source_time.as_micros();
        let (load, running, set_at) = self.current(twin);
        let target = self.steady_state(load, running);
        let (expected, steady_state) = match (self.state.expected, self.state.last_time) {
            (Some(_), Some(last)) if time < last => return,
            (Some(expected), Some(last)) => {
                // The old steady state held until the load was set; a command accepted
                // after this reading was taken is not in force yet.
                let previous = self.state.steady_state;
                let switch = set_at.as_micros().clamp(last, time);
                let at_switch = self.relax(expected, previous, micros_to_secs(switch - last));
                let in_force = if set_at.as_micros() > time {
                    previous
                } else {
                    target
                };
                let now = self.relax(at_switch, in_force, micros_to_secs(time - switch));
                (now, in_force)
            }
            _ => (sample.value, target),
        };
        let residual = sample.value - expected;
        let residuals = self.state.residuals.saturating_add(1);
        // The first residuals weigh more, so the mean settles fast and then forgets slowly.
        let weight = (1.0 / f64::from(residuals)).max(RESIDUAL_WEIGHT);
        let residual_ms =
            self.state.residual_ms + weight * (residual * residual - self.state.residual_ms);
        self.state = State {
            expected: Some(expected),
            steady_state,
            last_time: Some(time),
            measured: sample.value,
            residual,
            readings_over: if residual > self.residual_warn {
                self.state.readings_over.saturating_add(1)
            } else {
                0
            },
            alarm_active: self.state.alarm_active,
            residual_ms,
            residuals,
        };

        let confidence = self.confidence();
        out.set(0, steady_state, confidence);
        out.set(1, residual, confidence);

        if !self.state.alarm_active && self.state.readings_over >= READINGS_TO_ALARM {
            self.explain(sample.value, expected, steady_state, twin, out);
            out.raise(
                self.alarm_code.clone(),
                Severity::Warning,
                format!(
                    "{} reads {}, {} above the {} the thermal model expects",
                    self.channel_name,
                    super::measured(sample.value, &self.unit),
                    super::measured(residual, &self.unit),
                    super::measured(expected, &self.unit)
                ),
            );
            self.state.alarm_active = true;
        } else if self.state.alarm_active && residual < self.residual_warn / 2.0 {
            out.clear(self.alarm_code.clone());
            self.state.alarm_active = false;
        }
        out.health(self.health());
    }

    fn project(&self, twin: &TwinView<'_>, scenario: &Scenario, trajectory: &mut Trajectory) {
        let start = match self.state.expected {
            Some(_) => self.state.measured,
            None => match twin.value(&self.channel_name) {
                Some(value) => value,
                None => return,
            },
        };
        let (current_load, current_running, _) = self.current(twin);
        let load = scenario.desired(&self.load_desired).or(current_load);
        let running = match &self.running_desired {
            Some(name) => scenario.desired(name).or(current_running),
            None => None,
        };
        let steady_state = self.steady_state(load, running);
        // Bounds from the residuals: the open-loop expectation's error, plus the error
        // of the reading the projection starts from while it still weighs.
        let rms =
            (self.state.residuals >= RESIDUALS_FOR_BOUNDS).then(|| self.state.residual_ms.sqrt());
        let mut temperatures = Vec::new();
        for t in scenario.times() {
            let temperature = self.relax(start, steady_state, t);
            if temperature.is_finite() {
                temperatures.push(match rms {
                    Some(rms) => {
                        let fading = (-2.0 * t / self.tau_secs).exp();
                        TrajectoryPoint::with_error(t, temperature, rms * (1.0 + fading).sqrt())
                    }
                    None => TrajectoryPoint::new(t, temperature),
                });
            }
            trajectory.push(&self.steady_state_output, t, steady_state);
        }
        // The response to the scenario's load says more than a model that only knows the
        // channel's mean (`ewma_anomaly`), so it replaces any series projected before.
        trajectory
            .series
            .insert(self.channel_name.clone(), temperatures);
    }

    fn confidence(&self) -> f64 {
        if self.state.expected.is_none() {
            return 0.0;
        }
        (-self.state.residual.abs() / self.residual_warn).exp()
    }

    fn save(&self) -> Vec<u8> {
        save_state(&self.state)
    }

    fn restore(&mut self, saved: &[u8]) -> Result<(), String> {
        let state: State = restore_state(Self::KIND, saved).or_else(|error| {
            restore_state::<StateV1>(Self::KIND, saved)
                .map(State::from)
                .map_err(|_| error)
        })?;
        let finite = state.expected.is_none_or(f64::is_finite)
            && state.steady_state.is_finite()
            && state.residual.is_finite()
            && state.measured.is_finite();
        if !finite {
            return Err(format!(
                "{} state holds non-finite temperatures",
                Self::KIND
            ));
        }
        if !(state.residual_ms.is_finite() && state.residual_ms >= 0.0) {
            return Err(format!(
                "{} state holds a residual mean square that is not a number, 0 or more",
                Self::KIND
            ));
        }
        self.state = state;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::testing::{Twin, build_error, noise};

    const MODEL: &str = r#"
[[types.press.models]]
kind = "thermal"
channel = "temperature"
gain = 0.02
load_desired = "speed"
running_desired = "running"
"#;

    const STEP_SECS: u32 = 10;

    /// The temperature a healthy press has `secs` after starting cold at 1200 rpm:
    /// ambient 25 °C heading for 25 + 0.02 × 1200 = 49 °C with tau 600 s.
    fn healthy(secs: f64) -> f64 {
        49.0 - 24.0 * (-secs / 600.0).exp()
    }

    /// A twin fed half an hour of healthy readings.
    fn warm() -> Twin {
        let mut twin = Twin::new(MODEL);
        for i in 0..180 {
            let secs = f64::from(i * STEP_SECS);
            twin.feed("temperature", healthy(secs) + noise(i), secs);
        }
        twin
    }

    #[test]
    fn tracks_a_healthy_machine() {
        let twin = warm();
        assert_eq!(twin.derived("temperature_steady_state"), 49.0);
        let residual = twin.derived("temperature_residual");
        assert!(residual.abs() < 0.3, "residual {residual}");
        assert!(twin.confidence("temperature_residual") > 0.95);
        assert_eq!(twin.alarm("thermal:temperature"), None);
        assert!(twin.health[0].unwrap() > 0.98);
    }

    #[test]
    fn alarms_on_overheating_and_clears_after() {
        let mut twin = warm();
        // A cooling fault: the press heats 0.1 °C per second beyond the model.
        let mut raised_after = None;
        for i in 180..240 {
            let secs = f64::from(i * STEP_SECS);
            let excess = (secs - 1800.0) * 0.1;
            twin.feed("temperature", healthy(secs) + excess, secs);
            if raised_after.is_none() && twin.alarm("thermal:temperature").is_some() {
                raised_after = Some(excess);
            }
        }
        let raised_after = raised_after.expect("alarm raised");
        assert!(
            raised_after > 15.0 && raised_after < 20.0,
            "raised at {raised_after} °C over"
        );
        assert_eq!(twin.alarm("thermal:temperature"), Some(Severity::Warning));
        assert!(twin.confidence("temperature_residual") < 0.1);
        assert!(twin.health[0].unwrap() < 0.5);

        // Fixed: back to the model's temperature.
        assert!(twin.derived("temperature_residual") > 15.0);
        for i in 240..245 {
            let secs = f64::from(i * STEP_SECS);
            twin.feed("temperature", healthy(secs), secs);
        }
        assert_eq!(twin.alarm("thermal:temperature"), None);
        assert_eq!((twin.raised_total, twin.cleared_total), (1, 1));
    }

    #[test]
    fn two_readings_over_do_not_alarm() {
        let mut twin = warm();
        for (i, excess) in [(180, 20.0), (181, 20.0), (182, 0.0), (183, 20.0)] {
            let secs = f64::from(i * STEP_SECS);
            twin.feed("temperature", healthy(secs) + excess, secs);
        }
        assert_eq!(twin.alarm("thermal:temperature"), None);
    }

    #[test]
    fn follows_a_setpoint_change() {
        let mut twin = warm();
        twin.set_desired("speed", Value::Float(2400.0), 1790.0);
        // Now heading for 73 °C from where it was.
        let from = healthy(1790.0);
        for i in 180..360 {
            let secs = f64::from(i * STEP_SECS);
            let temperature = 73.0 + (from - 73.0) * (-(secs - 1790.0) / 600.0).exp();
            twin.feed("temperature", temperature, secs);
        }
        assert_eq!(twin.derived("temperature_steady_state"), 73.0);
        let residual = twin.derived("temperature_residual");
        assert!(residual.abs() < 0.5, "residual {residual}");

        twin.set_desired("running", Value::Bool(false), 3590.0);
        twin.feed("temperature", 60.0, 3600.0);
        assert_eq!(twin.derived("temperature_steady_state"), 25.0);
    }

    #[test]
    fn integrates_exactly_across_a_setpoint_change_between_readings() {
        let mut twin = warm();
        // The last reading was at 1790 s; the command lands at 1795 s.
        twin.set_desired("speed", Value::Float(2400.0), 1795.0);
        let at_switch = healthy(1795.0);
        let truth = |secs: f64| 73.0 + (at_switch - 73.0) * (-(secs - 1795.0) / 600.0).exp();
        for secs in [1800.0, 1810.0, 1900.0] {
            twin.feed("temperature", truth(secs), secs);
            let residual = twin.derived("temperature_residual");
            assert!(residual.abs() < 1e-6, "residual {residual} at {secs} s");
        }
        assert_eq!(twin.derived("temperature_steady_state"), 73.0);
    }

    #[test]
    fn a_command_accepted_after_a_reading_is_not_yet_in_force_for_it() {
        let mut twin = warm();
        // Taken at 1800 s, the reading arrives after a command accepted at 1802 s.
        twin.set_desired("speed", Value::Float(2400.0), 1802.0);
        twin.feed("temperature", healthy(1800.0), 1800.0);
        assert_eq!(twin.derived("temperature_steady_state"), 49.0);
        assert!(twin.derived("temperature_residual").abs() < 1e-6);

        let at_1810 = 73.0 + (healthy(1802.0) - 73.0) * (-8.0 / 600.0_f64).exp();
        twin.feed("temperature", at_1810, 1810.0);
        assert_eq!(twin.derived("temperature_steady_state"), 73.0);
        assert!(twin.derived("temperature_residual").abs() < 1e-6);
    }

    #[test]
    fn dev_plant_parameters_at_100_ms() {
        // `doppel dev` runs physics 60 times faster: tau of 5 s, readings every 100 ms.
        let mut twin = Twin::new(
            r#"
[[types.press.models]]
kind = "thermal"
channel = "temperature"
ambient = 25.0
gain = 0.03
load_desired = "speed"
running_desired = "running"
tau_secs = 5.0
residual_warn = 15.0
"#,
        );
        // 25 + 0.03 × 1200 = 61 °C.
        let truth = |secs: f64| 61.0 - 36.0 * (-secs / 5.0).exp();
        for i in 0..300 {
            let secs = f64::from(i) * 0.1;
            twin.feed("temperature", truth(secs) + noise(i), secs);
        }
        let residual = twin.derived("temperature_residual");
        assert!(residual.abs() < 0.2, "residual {residual}");
        assert_eq!(twin.alarm("thermal:temperature"), None);

        // The coolant fails: 1 °C per second beyond the model trips the alarm in ~15 s.
        for i in 300..500 {
            let secs = f64::from(i) * 0.1;
            twin.feed("temperature", truth(secs) + (secs - 30.0), secs);
        }
        assert_eq!(twin.alarm("thermal:temperature"), Some(Severity::Warning));

        let slow = twin.project(&[("speed", Value::Float(600.0))], 60, 1);
        let fast = twin.project(&[("speed", Value::Float(2400.0))], 60, 1);
        assert!((slow.last("temperature").unwrap() - 43.0).abs() < 0.01);
        assert!((fast.last("temperature").unwrap() - 97.0).abs() < 0.01);
    }

    #[test]
    fn projections_follow_the_hypothetical_setpoint() {
        let twin = warm();
        let slow = twin.project(&[("speed", Value::Float(600.0))], 3600 * 2, 60);
        let fast = twin.project(&[("speed", Value::Float(2400.0))], 3600 * 2, 60);
        let stopped = twin.project(
            &[
                ("speed", Value::Float(2400.0)),
                ("running", Value::Bool(false)),
            ],
            3600 * 2,
            60,
        );
        let now = twin
            .state()
            .value(twin.twin_type().channel("temperature").unwrap())
            .unwrap();
        assert_eq!(slow.series["temperature"][0].value, now);
        assert_eq!(fast.series["temperature"][0].value, now);
        assert_ne!(slow.series["temperature"], fast.series["temperature"]);

        // 600 rpm settles at 37 °C, 2400 rpm at 73 °C, stopped at ambient.
        let slow_end = slow.last("temperature").unwrap();
        let fast_end = fast.last("temperature").unwrap();
        assert!((slow_end - 37.0).abs() < 0.1, "{slow_end}");
        assert!((fast_end - 73.0).abs() < 0.1, "{fast_end}");
        assert!((stopped.last("temperature").unwrap() - 25.0).abs() < 0.1);
        assert_eq!(fast.last("temperature_steady_state"), Some(73.0));
        // Monotone approach: cooling towards 37, heating towards 73.
        assert!(
            slow.series["temperature"]
                .windows(2)
                .all(|p| p[1].value <= p[0].value)
        );
        assert!(
            fast.series["temperature"]
                .windows(2)
                .all(|p| p[1].value >= p[0].value)
        );
    }

    #[test]
    fn save_and_restore_round_trip() {
        let mut twin = warm();
        let mut restored = twin.restored();
        for i in 180..190 {
            let secs = f64::from(i * STEP_SECS);
            let value = healthy(secs) + f64::from(i - 180) * 4.0;
            twin.feed("temperature", value, secs);
            restored.feed("temperature", value, secs);
            assert_eq!(twin.state().derived, restored.state().derived);
            assert_eq!(twin.state().alarms, restored.state().alarms);
        }
        assert!(twin.alarm("thermal:temperature").is_some());
        assert!(restored.fresh_model(0).restore(&[]).is_err());
    }

    #[test]
    fn an_alarm_says_whether_a_second_sensor_points_to_drift_or_to_the_process() {
        let model = format!("{MODEL}secondary = \"temperature_b\"\n");
        for (drift, says) in [
            (
                true,
                "drift of temperature rather than a change in the process",
            ),
            (false, "a change in the process"),
        ] {
            let mut twin = Twin::new(&model);
            for i in 0..240 {
                let secs = f64::from(i * STEP_SECS);
                let excess = ((secs - 1800.0) * 0.1).max(0.0);
                twin.feed(
                    "temperature_b",
                    healthy(secs) + if drift { 0.0 } else { excess },
                    secs,
                );
                twin.feed("temperature", healthy(secs) + excess, secs);
            }
            let explanation = twin.explanation("thermal:temperature").expect("explained");
            assert!(
                explanation.summary.contains(says),
                "{}",
                explanation.summary
            );
            assert_eq!(
                (explanation.source.as_str(), explanation.version.as_str()),
                ("thermal", "1.0.0")
            );
            let names: Vec<&str> = explanation.inputs.iter().map(|i| i.name.as_str()).collect();
            assert_eq!(
                names,
                [
                    "temperature",
                    "expected temperature",
                    "steady state",
                    "speed",
                    "temperature_b"
                ]
            );
        }
        // Without a second sensor it says what it knows.
        let mut twin = warm();
        for i in 180..240 {
            let secs = f64::from(i * STEP_SECS);
            twin.feed("temperature", healthy(secs) + (secs - 1800.0) * 0.1, secs);
        }
        let explanation = twin.explanation("thermal:temperature").unwrap();
        assert!(
            explanation
                .summary
                .contains("heat the load does not explain"),
            "{}",
            explanation.summary
        );
    }

    #[test]
    fn projections_carry_bounds_from_the_residuals() {
        let twin = warm();
        let trajectory = twin.project(&[("speed", Value::Float(1800.0))], 600, 60);
        for point in &trajectory.series["temperature"] {
            let (lower, upper) = (point.lower.unwrap(), point.upper.unwrap());
            assert!(lower < point.value && point.value < upper, "{point:?}");
            // The noise is a few tenths of a degree: so are the bounds.
            assert!(upper - lower < 3.0, "{point:?}");
        }
        let fresh = Twin::new(MODEL);
        assert!(fresh.project(&[], 60, 60).series.is_empty());
    }

    #[test]
    fn state_saved_before_residual_statistics_restores() {
        let twin = warm();
        let mut model = twin.fresh_model(0);
        // The layout before `residual_ms` and `residuals`: expected, steady state, last
        // time, measured, residual, readings over, alarm active.
        let old =
            postcard::to_stdvec(&(Some(49.0), 49.0, Some(1_000_i64), 49.2, 0.2, 0_u32, false))
                .unwrap();
        model.restore(&old).unwrap();
        let restored: State = restore_state("thermal", &model.save()).unwrap();
        assert_eq!((restored.expected, restored.residuals), (Some(49.0), 0));
    }

    #[test]
    fn config_errors_name_the_component() {
        let error = build_error(&MODEL.replace("gain = 0.02\n", ""));
        assert!(
            error.contains("thermal `thermal`: missing field `gain`"),
            "{error}"
        );

        let error = build_error(&MODEL.replace("\"temperature\"", "\"temprature\""));
        assert!(
            error.contains("thermal `thermal`: unknown channel `temprature`"),
            "{error}"
        );

        let error =
            build_error(&format!("{MODEL}name = \"oil\"\n").replace("\"running\"", "\"speed\""));
        assert!(
            error.contains("thermal `oil`: desired value `speed` is a number, not a bool"),
            "{error}"
        );

        let error = build_error(&format!("{MODEL}tau_secs = 0\n"));
        assert!(
            error.contains("tau_secs must be a positive number"),
            "{error}"
        );
    }
}
