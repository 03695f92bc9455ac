//! `ewma_anomaly`: scores each reading of a channel against the channel's exponentially
//! weighted moving mean and variance.
//!
//! ```toml
//! [[types.press.models]]
//! kind = "ewma_anomaly"
//! channel = "vibration"   # required
//! alpha = 0.05            # weight of the newest reading, 0 < alpha <= 1
//! warn_z = 3.0            # z-score that raises a warning
//! critical_z = 6.0        # z-score that raises a critical alarm
//! warmup = 30             # readings before alarms and health count
//! output = "vibration_anomaly"
//! ```
//!
//! Each reading is scored against the statistics of the readings before it,
//! `z = |x - mean| / std`, then folded into them. The z-score is derived value `output`
//! with confidence `min(1, n / warmup)`. After warmup the alarm `anomaly:<channel>` is a
//! warning from `warn_z`, critical from `critical_z`, and clears below `warn_z`; health is
//! `1 - z / (2 critical_z)`, and 1 during warmup.
//!
//! A projection holds the channel at its mean and the z-score at 0, unless a model that
//! knows the channel's dynamics (`degradation`, `thermal`) projects the channel too.
//! After warmup the projected channel carries bounds two standard deviations (of the
//! channel about its moving mean) either side.

use serde::{Deserialize, Serialize};

use doppel_runtime::{
    ChannelId, ComponentSpec, ConfigError, ExplainedInput, Model, ModelOutput, Quality, Sample,
    Scenario, Severity, Trajectory, TrajectoryPoint, TwinType, TwinView,
};

use super::{check_output_name, ensure, existing_channel, restore_state, save_state};

const VERSION: &str = "1.0.0";

/// The standard deviation never counts as smaller than this fraction of the channel's
/// declared range, so a perfectly constant signal does not turn its first tiny change
/// into an infinite z-score.
const MIN_STD_FRACTION_OF_RANGE: f64 = 1e-6;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Config {
    channel: String,
    #[serde(default = "default_alpha")]
    alpha: f64,
    #[serde(default = "default_warn_z")]
    warn_z: f64,
    #[serde(default = "default_critical_z")]
    critical_z: f64,
    #[serde(default = "default_warmup")]
    warmup: u32,
    output: Option<String>,
}

fn default_alpha() -> f64 {
    0.05
}

fn default_warn_z() -> f64 {
    3.0
}

fn default_critical_z() -> f64 {
    6.0
}

fn default_warmup() -> u32 {
    30
}

/// What survives a snapshot.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
struct State {
    /// Readings folded into the statistics.
    count: u64,
    /// Exponentially weighted mean.
    mean: f64,
    /// Exponentially weighted variance.
    variance: f64,
    /// Source time (µs) of the last reading used.
    last_time: Option<i64>,
    /// The last z-score.
    z: f64,
    /// The severity of the alarm this model holds raised, if any.
    alarm: Option<Severity>,
}

/// The `ewma_anomaly` model: an exponentially weighted z-score of one channel.
pub struct EwmaAnomaly {
    name: String,
    channel: ChannelId,
    channel_name: String,
    /// The channel's unit, for messages.
    unit: String,
    output: String,
    alarm_code: String,
    alpha: f64,
    warn_z: f64,
    critical_z: f64,
    warmup: u32,
    min_std: f64,
    state: State,
}

impl EwmaAnomaly {
    /// The kind name used in configuration.
    pub const KIND: &'static str = "ewma_anomaly";

    /// Builds the model from its declaration, checking it against `twin_type`.
    pub fn from_spec(spec: &ComponentSpec, twin_type: &TwinType) -> Result<Self, ConfigError> {
        let config: Config = spec.params()?;
        let channel = existing_channel(spec, twin_type, &config.channel)?;
        ensure(
            spec,
            config.alpha > 0.0 && config.alpha <= 1.0,
            format_args!("alpha must be in (0, 1], got {}", config.alpha),
        )?;
        ensure(
            spec,
            config.warn_z.is_finite() && config.warn_z > 0.0,
            format_args!("warn_z must be a positive number, got {}", config.warn_z),
        )?;
        ensure(
            spec,
            config.critical_z.is_finite() && config.critical_z >= config.warn_z,
            format_args!(
                "critical_z must be at least warn_z ({}), got {}",
                config.warn_z, config.critical_z
            ),
        )?;
        ensure(spec, config.warmup >= 1, "warmup must be at least 1 sample")?;
        let output = config
            .output
            .unwrap_or_else(|| format!("{}_anomaly", config.channel));
        check_output_name(spec, twin_type, &output)?;
        let spec_of = twin_type.channel_spec(channel);
        let range = spec_of.map(|c| c.range.1 - c.range.0).unwrap_or(1.0);
        let unit = spec_of.map(|c| c.unit.clone()).unwrap_or_default();
        Ok(Self {
            name: spec.name.clone(),
            channel,
            alarm_code: format!("anomaly:{}", config.channel),
            channel_name: config.channel,
            unit,
            output,
            alpha: config.alpha,
            warn_z: config.warn_z,
            critical_z: config.critical_z,
            warmup: config.warmup,
            min_std: (range * MIN_STD_FRACTION_OF_RANGE).max(f64::MIN_POSITIVE),
            state: State::default(),
        })
    }

    /// Readings behind the statistics the last z-score was measured against.
    fn basis(&self) -> u64 {
        self.state.count.saturating_sub(1)
    }

    /// True once the statistics rest on `warmup` readings.
    fn warmed_up(&self) -> bool {
        self.basis() >= u64::from(self.warmup)
    }

    /// Scores `value` against the statistics so far, then folds it in.
    fn fold(&mut self, value: f64) -> f64 {
        let state = &mut self.state;
        let z = if state.count == 0 {
            state.mean = value;
            state.variance = 0.0;
            0.0
        } else {
            let deviation = value - state.mean;
            let std = state.variance.max(0.0).sqrt().max(self.min_std);
            let z = deviation.abs() / std;
            // West's incremental update of the weighted mean and variance.
            let increment = self.alpha * deviation;
            state.mean += increment;
            state.variance = (1.0 - self.alpha) * (state.variance + deviation * increment);
            z
        };
        state.count = state.count.saturating_add(1);
        state.z = z;
        z
    }

    fn severity_for(&self, z: f64) -> Option<Severity> {
        if z >= self.critical_z {
            Some(Severity::Critical)
        } else if z >= self.warn_z {
            Some(Severity::Warning)
        } else {
            None
        }
    }
}

impl Model for EwmaAnomaly {
    fn name(&self) -> &str {
        &self.name
    }

    fn version(&self) -> &str {
        VERSION
    }

    fn outputs(&self) -> Vec<String> {
        vec![self.output.clone()]
    }

    fn observe(&mut self, sample: &Sample, _twin: &TwinView<'_>, out: &mut ModelOutput) {
        if sample.channel != self.channel
            || sample.quality == Quality::Bad
            || !sample.value.is_finite()
        {
            return;
        }
        let time = sample.source_time.as_micros();
        if self.state.last_time.is_some_and(|last| time < last) {
            return;
        }
        self.state.last_time = Some(time);

        let mean_before = self.state.mean;
        let spread_before = self.state.variance.sqrt();
        let z = self.fold(sample.value);
        out.set(0, z, self.confidence());

        if !self.warmed_up() {
            out.health(1.0);
            return;
        }
        let severity = self.severity_for(z);
        if severity != self.state.alarm {
            if severity.is_some() {
                let unit = &self.unit;
                let inputs = vec![
                    ExplainedInput::new(self.channel_name.clone(), sample.value, unit.clone()),
                    ExplainedInput::new("moving mean", mean_before, unit.clone()),
                    ExplainedInput::new("moving standard deviation", spread_before, unit.clone()),
                    ExplainedInput::new("z-score", z, ""),
                ];
                let direction = if sample.value > mean_before {
                    "above"
                } else {
                    "below"
                };
                out.explain(
                    self.alarm_code.clone(),
                    format!(
                        "{} reads {z:.1} standard deviations {direction} what it has lately: a change the model has not seen, not a diagnosis",
                        self.channel_name
                    ),
                    inputs,
                );
            }
            match severity {
                Some(severity) => out.raise(
                    self.alarm_code.clone(),
                    severity,
                    format!(
                        "{} reads {} ({z:.1} standard deviations from its moving mean {})",
                        self.channel_name,
                        super::measured(sample.value, &self.unit),
                        super::measured(mean_before, &self.unit)
                    ),
                ),
                None => out.clear(self.alarm_code.clone()),
            }
            self.state.alarm = severity;
        }
        out.health(1.0 - z / (2.0 * self.critical_z));
    }

    fn project(&self, _twin: &TwinView<'_>, scenario: &Scenario, trajectory: &mut Trajectory) {
        if self.state.count == 0 {
            return;
        }
        // With no anomaly in a what-if, the best guess for the channel is its mean. A model
        // that knows how the channel responds to the scenario (`degradation`, `thermal`)
        // projects it better: the mean only fills in when none did so before, and those
        // models replace it when they come after.
        let project_channel = !trajectory.series.contains_key(&self.channel_name);
        // Bounds once warmed up: the channel's own spread about its mean.
        let spread = (self.basis() >= u64::from(self.warmup)).then(|| self.state.variance.sqrt());
        for t in scenario.times() {
            if project_channel {
                let point = match spread {
                    Some(spread) => TrajectoryPoint::with_error(t, self.state.mean, spread),
                    None => TrajectoryPoint::new(t, self.state.mean),
                };
                trajectory.push_point(&self.channel_name, point);
            }
            trajectory.push(&self.output, t, 0.0);
        }
    }

    fn confidence(&self) -> f64 {
        if self.state.count == 0 {
            return 0.0;
        }
        (self.basis() as f64 / f64::from(self.warmup)).min(1.0)
    }

    fn save(&self) -> Vec<u8> {
        save_state(&self.state)
    }

    fn restore(&mut self, saved: &[u8]) -> Result<(), String> {
        let state: State = restore_state(Self::KIND, saved)?;
        if !(state.mean.is_finite() && state.variance.is_finite() && state.variance >= 0.0) {
            return Err(format!("{} state holds non-finite statistics", Self::KIND));
        }
        self.state = state;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use doppel_runtime::Value;

    use super::*;
    use crate::model::testing::{Twin, build_error, noise};

    const MODEL: &str = r#"
[[types.press.models]]
kind = "ewma_anomaly"
channel = "vibration"
"#;

    /// A twin fed 100 noisy vibration readings around 5 mm/s, one per second.
    fn warmed_up() -> Twin {
        let mut twin = Twin::new(MODEL);
        for i in 0..100 {
            twin.feed("vibration", 5.0 + noise(i), f64::from(i));
        }
        twin
    }

    #[test]
    fn z_rises_and_alarms_on_a_spike_after_warmup() {
        let mut twin = warmed_up();
        let quiet = twin.derived("vibration_anomaly");
        assert!(quiet < 3.0, "z on noise {quiet}");
        assert_eq!(twin.confidence("vibration_anomaly"), 1.0);
        assert_eq!(twin.alarm("anomaly:vibration"), None);
        assert!(twin.health[0].unwrap() > 0.7);

        twin.feed("vibration", 9.0, 100.0);
        let spike = twin.derived("vibration_anomaly");
        assert!(spike > 6.0, "z on spike {spike}");
        assert_eq!(twin.alarm("anomaly:vibration"), Some(Severity::Critical));
        assert!(twin.health[0].unwrap() < 0.5);
        let message = &twin.state().alarms[0].message;
        assert!(
            message.starts_with("vibration reads 9 mm/s (") && message.ends_with(" mm/s)"),
            "{message}"
        );

        for i in 101..200 {
            twin.feed("vibration", 5.0 + noise(i), f64::from(i));
        }
        assert_eq!(twin.alarm("anomaly:vibration"), None);
        assert_eq!(twin.raised_total, 1, "raised once, on the transition");
        assert_eq!(twin.cleared_total, 1);
    }

    #[test]
    fn no_alarm_during_warmup() {
        let mut twin = Twin::new(MODEL);
        for i in 0..10 {
            twin.feed("vibration", 5.0 + noise(i), f64::from(i));
        }
        assert!(twin.confidence("vibration_anomaly") < 0.5);
        twin.feed("vibration", 50.0, 10.0);
        assert!(twin.derived("vibration_anomaly") > 6.0);
        assert_eq!(twin.alarm("anomaly:vibration"), None);
        assert_eq!(twin.health[0], Some(1.0));
    }

    #[test]
    fn ignores_other_channels_and_stale_readings() {
        let mut twin = warmed_up();
        let before = twin.models()[0].save();
        twin.feed("temperature", 150.0, 200.0);
        twin.feed("vibration", 80.0, 50.0);
        assert_eq!(twin.models()[0].save(), before);
        // The twin hands a late reading to `observe_late`; the model also skips one
        // handed to `observe` directly.
        let mut model = twin.fresh_model(0);
        model.restore(&before).unwrap();
        let old = twin.sample("vibration", 80.0, 50.0);
        model.observe(&old, &twin.view(), &mut ModelOutput::default());
        assert_eq!(model.save(), before);
    }

    #[test]
    fn projects_the_mean() {
        let twin = warmed_up();
        let trajectory = twin.project(&[("speed", Value::Float(2400.0))], 600, 60);
        let series = &trajectory.series["vibration"];
        assert_eq!(series.len(), 11);
        assert!((series[5].value - 5.0).abs() < 0.2);
        assert_eq!(trajectory.last("vibration_anomaly"), Some(0.0));
    }

    #[test]
    fn save_and_restore_round_trip() {
        let mut twin = warmed_up();
        let mut restored = twin.restored();
        for (i, value) in [(100, 5.05), (101, 8.0), (102, 5.0)] {
            twin.feed("vibration", value, f64::from(i));
            restored.feed("vibration", value, f64::from(i));
            assert_eq!(twin.state().derived, restored.state().derived);
            assert_eq!(twin.state().alarms, restored.state().alarms);
        }
        assert!(restored.fresh_model(0).restore(&[1, 2]).is_err());
    }

    #[test]
    fn config_errors_name_the_component() {
        let error = build_error(&MODEL.replace("\"vibration\"", "\"vibraton\""));
        assert!(
            error.contains("ewma_anomaly `ewma_anomaly`: unknown channel `vibraton`"),
            "{error}"
        );

        let error =
            build_error("[[types.press.models]]\nkind = \"ewma_anomaly\"\nname = \"vib\"\n");
        assert!(
            error.contains("ewma_anomaly `vib`: missing field `channel`"),
            "{error}"
        );

        let error = build_error(&format!("{MODEL}alpha = 1.5\n"));
        assert!(error.contains("alpha must be in (0, 1]"), "{error}");

        let error = build_error(&format!("{MODEL}warn_z = 8.0\n"));
        assert!(
            error.contains("critical_z must be at least warn_z"),
            "{error}"
        );

        let error = build_error(&format!("{MODEL}alhpa = 0.1\n"));
        assert!(error.contains("unknown field `alhpa`"), "{error}");
    }
}
