//! `degradation`: remaining useful life from a rising wear signal (vibration, bearing
//! temperature, filter pressure drop, …).
//!
//! ```toml
//! [[types.press.models]]
//! kind = "degradation"
//! channel = "vibration"      # the wear signal, required
//! threshold = 12.0           # the level at which the asset counts as failed, required
//! warn_hours = 24.0          # `rul_low` warning below this many hours
//! critical_hours = 4.0       # `rul_low` critical below this many hours
//! window = 120.0             # seconds of source time the fit looks back over
//! min_points = 10            # points before alarms count
//! min_interval_secs = 0.0    # keep at most one point per this much source time
//! max_hours = 100000.0       # the estimate when the signal does not rise
//! load_desired = "speed"     # optional: the desired value that sets the load
//! load_exponent = 1.0        # wear rate grows with (load ratio)^load_exponent
//! level_exponent = 0.0       # the signal itself grows with (load ratio)^level_exponent
//! output = "rul_hours"
//! ```
//!
//! The model keeps the points (source time, value) of the last `window` seconds of source
//! time, at most one per `min_interval_secs`, and fits a straight line by least squares.
//! So that memory and the cost of a fit stay bounded whatever the sample rate, it also
//! keeps at most one point per `window / 4096`: a fast signal is thinned, never cut
//! short. Remaining useful life is the time the fitted line needs to reach `threshold`:
//! `(threshold - fitted now) / slope`, capped at `max_hours`, and 0 once the fitted value
//! is at or above `threshold`. Outputs are the remaining life in hours and the slope per
//! hour (`<channel>_trend_per_hour`), both with confidence
//! `R² × min(1, n / min_points)` (0 below 3 points).
//!
//! The estimate is trusted once it rests on `min_points` points with confidence at least
//! 0.5. A trusted estimate below `warn_hours` raises `rul_low` (a warning, critical below
//! `critical_hours`); the alarm clears only when the estimate is back above `warn_hours`
//! by 10 %, and steps down from critical likewise, so a noisy estimate near a limit does
//! not flap. Health is `rul / warn_hours` while a trusted estimate is below `warn_hours`,
//! otherwise 1: the wear level alone says nothing without a healthy baseline.
//!
//! A projection extends the fitted line from its current value; its `<channel>` series
//! replaces one an earlier model (such as `ewma_anomaly`) projected for the same channel.
//! With `load_desired` set, the slope is scaled by
//! `(scenario load / current load)^load_exponent`, so running faster wears faster; a
//! scenario load of 0 stops the wear. A signal whose level follows the load as well
//! (vibration velocity grows with speed: `level_exponent = 1`) is projected scaled by
//! `(scenario load / current load)^level_exponent`. Without a usable current load
//! (absent or not positive) neither is scaled.
//!
//! A projected point of the signal carries bounds two standard errors either side: the
//! prediction interval of the fitted line at that time (the points' scatter about the
//! line and the line's own uncertainty), scaled with the level.

use std::collections::VecDeque;

use serde::{Deserialize, Serialize};

use doppel_runtime::{
    ChannelId, ComponentSpec, ConfigError, ExplainedInput, Model, ModelOutput, Quality, Sample,
    Scenario, Severity, Trajectory, TrajectoryPoint, TwinType, TwinView,
};

use super::{
    check_output_name, ensure, existing_channel, existing_desired, micros_to_secs, restore_state,
    save_state, secs_to_micros,
};

const VERSION: &str = "1.0.0";

/// An alarm clears (or steps down) only once the estimate is this factor above its limit.
const HYSTERESIS: f64 = 1.1;

/// Most points a window holds; faster samples are thinned to keep within it.
const MAX_POINTS: i64 = 4096;

/// Longest window accepted, in seconds (about 30 years): keeps microsecond arithmetic far
/// from overflow.
const MAX_WINDOW_SECS: f64 = 1e9;

/// Confidence an estimate needs before it may raise `rul_low`.
const TRUSTED_CONFIDENCE: f64 = 0.5;

const ALARM_CODE: &str = "rul_low";

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Config {
    channel: String,
    threshold: f64,
    #[serde(default = "default_warn_hours")]
    warn_hours: f64,
    #[serde(default = "default_critical_hours")]
    critical_hours: f64,
    #[serde(default = "default_window")]
    window: f64,
    #[serde(default = "default_min_points")]
    min_points: usize,
    #[serde(default)]
    min_interval_secs: f64,
    #[serde(default = "default_max_hours")]
    max_hours: f64,
    load_desired: Option<String>,
    #[serde(default = "default_load_exponent")]
    load_exponent: f64,
    #[serde(default)]
    level_exponent: f64,
    output: Option<String>,
}

fn default_warn_hours() -> f64 {
    24.0
}

fn default_critical_hours() -> f64 {
    4.0
}

fn default_window() -> f64 {
    120.0
}

fn default_min_points() -> usize {
    10
}

fn default_max_hours() -> f64 {
    100_000.0
}

fn default_load_exponent() -> f64 {
    1.0
}

/// What survives a snapshot; the fit is recomputed from the points.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
struct Saved {
    /// Kept points, oldest first: (source time µs, value).
    points: Vec<(i64, f64)>,
    /// Source time (µs) of the last reading used.
    last_time: Option<i64>,
    /// The severity of the alarm this model holds raised, if any.
    alarm: Option<Severity>,
}

/// A least-squares line through the kept points.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
struct Fit {
    /// Points the line was fitted to.
    count: usize,
    /// Source time (µs) of the oldest point; the line's time axis starts there.
    origin: i64,
    /// Value at `origin`.
    intercept: f64,
    /// Change per second.
    slope_per_sec: f64,
    /// Coefficient of determination, 0..=1.
    r_squared: f64,
    /// Mean point time, seconds after `origin`.
    mean_t: f64,
    /// Sum of squared time deviations from `mean_t`.
    sxx: f64,
    /// Variance of the points about the line (residual sum of squares / (n − 2)).
    residual_var: f64,
}

impl Fit {
    /// Fits `points`. Time is taken relative to the oldest point so that epoch-sized
    /// times do not swamp the sums. Two passes (means, then deviations) keep it stable.
    fn of(points: &VecDeque<(i64, f64)>) -> Fit {
        let Some(&(origin, first_value)) = points.front() else {
            return Fit::default();
        };
        let count = points.len();
        if count == 1 {
            return Fit {
                count,
                origin,
                intercept: first_value,
                ..Fit::default()
            };
        }
        let n = count as f64;
        let (sum_t, sum_v) = points.iter().fold((0.0, 0.0), |(st, sv), &(t, v)| {
            (st + micros_to_secs(t - origin), sv + v)
        });
        let (mean_t, mean_v) = (sum_t / n, sum_v / n);
        let (mut sxx, mut sxy, mut syy) = (0.0, 0.0, 0.0);
        for &(t, v) in points {
            let dt = micros_to_secs(t - origin) - mean_t;
            let dv = v - mean_v;
            sxx += dt * dt;
            sxy += dt * dv;
            syy += dv * dv;
        }
        if sxx <= 0.0 {
            // Every point at the same instant: no trend can be told.
            return Fit {
                count,
                origin,
                intercept: mean_v,
                ..Fit::default()
            };
        }
        let slope_per_sec = sxy / sxx;
        // A perfectly flat signal is perfectly explained by a flat line.
        let r_squared = if syy <= f64::EPSILON * mean_v.abs().max(1.0) {
            1.0
        } else {
            (sxy * sxy / (sxx * syy)).clamp(0.0, 1.0)
        };
        let residual_var = if count > 2 {
            ((syy - sxy * slope_per_sec) / (n - 2.0)).max(0.0)
        } else {
            f64::NAN
        };
        Fit {
            count,
            origin,
            intercept: mean_v - slope_per_sec * mean_t,
            slope_per_sec,
            r_squared,
            mean_t,
            sxx,
            residual_var,
        }
    }

    /// The standard error of a new reading at `secs` seconds after `origin`, from the
    /// line (a regression's prediction interval): NaN below three points.
    fn prediction_error(&self, secs: f64) -> f64 {
        let n = self.count as f64;
        let leverage = 1.0 / n + (secs - self.mean_t).powi(2) / self.sxx;
        (self.residual_var * (1.0 + leverage)).sqrt()
    }

    /// The fitted value at source time `time` (µs).
    fn value_at(&self, time: i64) -> f64 {
        self.intercept + self.slope_per_sec * micros_to_secs(time - self.origin)
    }
}

/// A duration in hours, written in minutes below an hour for readable alarm messages.
struct Hours(f64);

impl std::fmt::Display for Hours {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.0 >= 1.0 {
            write!(f, "{:.1} h", self.0)
        } else {
            write!(f, "{:.1} min", self.0 * 60.0)
        }
    }
}

/// The `degradation` model: remaining useful life from the trend of a wear signal.
pub struct Degradation {
    name: String,
    channel: ChannelId,
    channel_name: String,
    /// The channel's unit, for messages.
    unit: String,
    output: String,
    trend_output: String,
    threshold: f64,
    warn_hours: f64,
    critical_hours: f64,
    /// Points older than this (µs of source time) behind the newest are dropped.
    window_micros: i64,
    min_points: usize,
    /// Least source time (µs) between kept points: `min_interval_secs`, or the thinning
    /// that keeps the window within [`MAX_POINTS`] if that is longer.
    interval_micros: i64,
    max_hours: f64,
    load_desired: Option<String>,
    load_exponent: f64,
    level_exponent: f64,
    points: VecDeque<(i64, f64)>,
    fit: Fit,
    last_time: Option<i64>,
    alarm: Option<Severity>,
}

impl Degradation {
    /// The kind name used in configuration.
    pub const KIND: &'static str = "degradation";

    /// Builds the model from its declaration, checking it against `twin_type`.
    pub fn from_spec(spec: &ComponentSpec, twin_type: &TwinType) -> Result<Self, ConfigError> {
        let config: Config = spec.params()?;
        let channel = existing_channel(spec, twin_type, &config.channel)?;
        if let Some(channel_spec) = twin_type.channel_spec(channel) {
            let (low, high) = channel_spec.range;
            ensure(
                spec,
                config.threshold.is_finite() && config.threshold >= low && config.threshold <= high,
                format_args!(
                    "threshold {} is outside the range [{low}, {high}] of channel `{}`",
                    config.threshold, config.channel
                ),
            )?;
        }
        ensure(
            spec,
            config.warn_hours.is_finite() && config.warn_hours > 0.0,
            format_args!(
                "warn_hours must be a positive number, got {}",
                config.warn_hours
            ),
        )?;
        ensure(
            spec,
            config.critical_hours.is_finite()
                && config.critical_hours > 0.0
                && config.critical_hours <= config.warn_hours,
            format_args!(
                "critical_hours must be positive and at most warn_hours ({}), got {}",
                config.warn_hours, config.critical_hours
            ),
        )?;
        ensure(
            spec,
            config.max_hours.is_finite() && config.max_hours >= config.warn_hours * HYSTERESIS,
            format_args!(
                "max_hours must be at least warn_hours plus 10 % ({}), got {}",
                config.warn_hours * HYSTERESIS,
                config.max_hours
            ),
        )?;
        ensure(
            spec,
            config.window.is_finite() && config.window > 0.0 && config.window <= MAX_WINDOW_SECS,
            format_args!(
                "window must be a positive number of seconds up to {MAX_WINDOW_SECS:e}, got {}",
                config.window
            ),
        )?;
        ensure(
            spec,
            (3..=MAX_POINTS as usize).contains(&config.min_points),
            format_args!(
                "min_points must be 3 to {MAX_POINTS}, got {}",
                config.min_points
            ),
        )?;
        ensure(
            spec,
            config.min_interval_secs.is_finite() && config.min_interval_secs >= 0.0,
            format_args!(
                "min_interval_secs must be zero or more, got {}",
                config.min_interval_secs
            ),
        )?;
        // Otherwise the window could never hold `min_points` points and never alarm.
        let span_secs = config.min_interval_secs * (config.min_points - 1) as f64;
        ensure(
            spec,
            span_secs < config.window,
            format_args!(
                "window ({} s) must be longer than min_points - 1 intervals of min_interval_secs ({span_secs} s)",
                config.window
            ),
        )?;
        if let Some(load_desired) = &config.load_desired {
            existing_desired(spec, twin_type, load_desired, true)?;
        }
        for (name, exponent) in [
            ("load_exponent", config.load_exponent),
            ("level_exponent", config.level_exponent),
        ] {
            ensure(
                spec,
                exponent.is_finite() && exponent >= 0.0,
                format_args!("{name} must be zero or more, got {exponent}"),
            )?;
        }
        let window_micros = secs_to_micros(config.window).max(1);
        let output = config.output.unwrap_or_else(|| "rul_hours".to_string());
        let trend_output = format!("{}_trend_per_hour", config.channel);
        check_output_name(spec, twin_type, &output)?;
        check_output_name(spec, twin_type, &trend_output)?;
        ensure(
            spec,
            output != trend_output,
            format_args!("output `{output}` is also the name of the trend output"),
        )?;
        Ok(Self {
            name: spec.name.clone(),
            channel,
            unit: twin_type
                .channel_spec(channel)
                .map(|c| c.unit.clone())
                .unwrap_or_default(),
            channel_name: config.channel,
            output,
            trend_output,
            threshold: config.threshold,
            warn_hours: config.warn_hours,
            critical_hours: config.critical_hours,
            window_micros,
            min_points: config.min_points,
            interval_micros: secs_to_micros(config.min_interval_secs)
                .max(window_micros / MAX_POINTS),
            max_hours: config.max_hours,
            load_desired: config.load_desired,
            load_exponent: config.load_exponent,
            level_exponent: config.level_exponent,
            // Grows to the window's size over the first window, then stays.
            points: VecDeque::with_capacity(config.min_points),
            fit: Fit::default(),
            last_time: None,
            alarm: None,
        })
    }

    /// Hours until a signal at `value`, rising by `slope_per_hour`, reaches the threshold.
    fn rul_hours(&self, value: f64, slope_per_hour: f64) -> f64 {
        if value >= self.threshold {
            return 0.0;
        }
        if slope_per_hour <= 0.0 {
            return self.max_hours;
        }
        ((self.threshold - value) / slope_per_hour).clamp(0.0, self.max_hours)
    }

    /// Drops points that fell out of the window behind the newest one.
    fn forget_old_points(&mut self) {
        let Some(&(newest, _)) = self.points.back() else {
            return;
        };
        let oldest_kept = newest.saturating_sub(self.window_micros);
        while self
            .points
            .front()
            .is_some_and(|&(time, _)| time <= oldest_kept)
        {
            self.points.pop_front();
        }
        // Thinning keeps a window within MAX_POINTS; this only bites on restored points
        // saved under a different configuration.
        while self.points.len() > MAX_POINTS as usize {
            self.points.pop_front();
        }
        debug_assert!(!self.points.is_empty());
    }

    /// True when the estimate may raise an alarm and lower health.
    fn trusted(&self) -> bool {
        self.points.len() >= self.min_points && self.confidence() >= TRUSTED_CONFIDENCE
    }

    /// The alarm severity after an estimate of `rul` hours, given the current one.
    fn next_alarm(&self, rul: f64) -> Option<Severity> {
        let trusted = self.trusted();
        let escalate = trusted && rul < self.critical_hours;
        match self.alarm {
            None if escalate => Some(Severity::Critical),
            None if trusted && rul < self.warn_hours => Some(Severity::Warning),
            None => None,
            Some(_) if rul >= self.warn_hours * HYSTERESIS => None,
            Some(_) if escalate => Some(Severity::Critical),
            Some(Severity::Critical) if rul < self.critical_hours * HYSTERESIS => {
                Some(Severity::Critical)
            }
            Some(_) => Some(Severity::Warning),
        }
    }

    /// How much faster the signal rises under the scenario's load than under the current.
    /// The scenario's load over the current one, when both are usable.
    fn load_ratio(&self, twin: &TwinView<'_>, scenario: &Scenario) -> Option<f64> {
        let load_desired = self.load_desired.as_ref()?;
        let current = twin.desired(load_desired).map(|d| d.value.as_f64());
        let planned = scenario.desired(load_desired).map(|v| v.as_f64());
        match (current, planned) {
            (Some(current), Some(planned))
                if current > 0.0
                    && current.is_finite()
                    && planned >= 0.0
                    && planned.is_finite() =>
            {
                Some(planned / current)
            }
            _ => None,
        }
    }
}

impl Model for Degradation {
    fn name(&self) -> &str {
        &self.name
    }

    fn version(&self) -> &str {
        VERSION
    }

    fn outputs(&self) -> Vec<String> {
        vec![self.output.clone(), self.trend_output.clone()]
    }

    fn observe(&mut self, sample: &Sample, _twin: &TwinView<'_>, out: &mut ModelOutput) {
        if sample.channel != self.channel
            || sample.quality == Quality::Bad
            || !sample.value.is_finite()
        {
            return;
        }
        let time = sample.source_time.as_micros();
        if self.last_time.is_some_and(|last| time < last) {
            return;
        }
        self.last_time = Some(time);

        let keep = self
            .points
            .back()
            .is_none_or(|&(last_kept, _)| time - last_kept >= self.interval_micros);
        if keep {
            self.points.push_back((time, sample.value));
            self.forget_old_points();
            self.fit = Fit::of(&self.points);
        }

        let slope_per_hour = self.fit.slope_per_sec * 3600.0;
        let rul = self.rul_hours(self.fit.value_at(time), slope_per_hour);
        let confidence = self.confidence();
        out.set(0, rul, confidence);
        out.set(1, slope_per_hour, confidence);

        let alarm = self.next_alarm(rul);
        if alarm != self.alarm {
            if alarm.is_some() {
                let now = self.fit.value_at(time);
                let unit = &self.unit;
                out.explain(
                    ALARM_CODE,
                    format!(
                        "the {} trend fitted over {} points (R² {:.2}) reaches {} in about {}: wear, if the trend holds",
                        self.channel_name,
                        self.fit.count,
                        self.fit.r_squared,
                        super::measured(self.threshold, unit),
                        Hours(rul)
                    ),
                    vec![
                        ExplainedInput::new(format!("fitted {}", self.channel_name), now, unit.clone()),
                        ExplainedInput::new("trend per hour", slope_per_hour, unit.clone()),
                        ExplainedInput::new("failure threshold", self.threshold, unit.clone()),
                        ExplainedInput::new("remaining useful life", rul, "h"),
                    ],
                );
            }
            match alarm {
                Some(severity) => out.raise(
                    ALARM_CODE,
                    severity,
                    format!(
                        "{} reaches {} in about {} at its current trend of {}/h",
                        self.channel_name,
                        super::measured(self.threshold, &self.unit),
                        Hours(rul),
                        super::measured(slope_per_hour, &self.unit)
                    ),
                ),
                None => out.clear(ALARM_CODE),
            }
            self.alarm = alarm;
        }
        let health = if self.trusted() && rul < self.warn_hours {
            rul / self.warn_hours
        } else {
            1.0
        };
        out.health(health);
    }

    fn project(&self, twin: &TwinView<'_>, scenario: &Scenario, trajectory: &mut Trajectory) {
        let Some(last_time) = self.last_time else {
            return;
        };
        if self.fit.count == 0 {
            return;
        }
        let ratio = self.load_ratio(twin, scenario);
        let wear_factor = ratio.map_or(1.0, |r| r.powf(self.load_exponent));
        let level = ratio.map_or(1.0, |r| r.powf(self.level_exponent));
        let start = self.fit.value_at(last_time);
        let slope_per_sec = self.fit.slope_per_sec * wear_factor;
        let now = micros_to_secs(last_time - self.fit.origin);
        let mut wear_series = Vec::new();
        for t in scenario.times() {
            let wear = level * (start + slope_per_sec * t);
            if wear.is_finite() {
                let error = level * self.fit.prediction_error(now + t);
                wear_series.push(TrajectoryPoint::with_error(t, wear, error));
            }
            trajectory.push(
                &self.output,
                t,
                self.rul_hours(wear, level * slope_per_sec * 3600.0),
            );
        }
        // The trend under the scenario's load says more than a model that only knows the
        // channel's mean (`ewma_anomaly`), so it replaces any series projected before.
        trajectory
            .series
            .insert(self.channel_name.clone(), wear_series);
    }

    fn confidence(&self) -> f64 {
        let count = self.fit.count;
        if count < 3 {
            return 0.0;
        }
        self.fit.r_squared * (count as f64 / self.min_points as f64).min(1.0)
    }

    fn save(&self) -> Vec<u8> {
        save_state(&Saved {
            points: self.points.iter().copied().collect(),
            last_time: self.last_time,
            alarm: self.alarm,
        })
    }

    fn restore(&mut self, saved: &[u8]) -> Result<(), String> {
        let saved: Saved = restore_state(Self::KIND, saved)?;
        if saved.points.iter().any(|&(_, v)| !v.is_finite()) {
            return Err(format!("{} state holds non-finite points", Self::KIND));
        }
        if saved.points.windows(2).any(|pair| pair[1].0 < pair[0].0) {
            return Err(format!(
                "{} state holds points out of time order",
                Self::KIND
            ));
        }
        if let (Some(last_time), Some(&(newest, _))) = (saved.last_time, saved.points.last())
            && newest > last_time
        {
            return Err(format!(
                "{} state holds points newer than its last reading",
                Self::KIND
            ));
        }
        self.points.clear();
        self.points.extend(saved.points);
        // A window shrunk since the snapshot keeps the newest points.
        self.forget_old_points();
        self.fit = Fit::of(&self.points);
        self.last_time = saved.last_time;
        self.alarm = saved.alarm;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use doppel_runtime::Value;

    use super::*;
    use crate::model::testing::{Twin, build_error, noise};

    /// Fits over the last 20 hours: 120 readings, one every ten minutes.
    const MODEL: &str = r#"
[[types.press.models]]
kind = "degradation"
channel = "vibration"
threshold = 10
window = 72000
load_desired = "speed"
"#;

    const STEP_SECS: u32 = 600;

    /// Vibration rising from 2 mm/s by 0.1 mm/s per hour, with a little noise.
    fn vibration(i: u32) -> f64 {
        let hours = f64::from(i * STEP_SECS) / 3600.0;
        2.0 + 0.1 * hours + noise(i)
    }

    /// Feeds readings `from..to`, one every ten minutes.
    fn feed(twin: &mut Twin, from: u32, to: u32) {
        for i in from..to {
            twin.feed("vibration", vibration(i), f64::from(i * STEP_SECS));
        }
    }

    /// Index of the reading at `hours`.
    fn at(hours: u32) -> u32 {
        hours * 3600 / STEP_SECS
    }

    /// When a projected series first reaches `level`, in seconds.
    fn first_reaching(trajectory: &Trajectory, series: &str, level: f64) -> Option<f64> {
        trajectory.series[series]
            .iter()
            .find(|p| p.value >= level)
            .map(|p| p.t)
    }

    #[test]
    fn rul_falls_as_the_signal_rises_and_warns() {
        let mut twin = Twin::new(MODEL);
        feed(&mut twin, 0, at(10));
        let rul_10h = twin.derived("rul_hours");
        let trend = twin.derived("vibration_trend_per_hour");
        assert!((trend - 0.1).abs() < 0.01, "trend {trend}");
        assert!(twin.confidence("rul_hours") > 0.9);
        feed(&mut twin, at(10), at(30));
        let rul_30h = twin.derived("rul_hours");
        feed(&mut twin, at(30), at(50));
        let rul_50h = twin.derived("rul_hours");
        assert!(
            rul_10h > rul_30h && rul_30h > rul_50h,
            "{rul_10h} {rul_30h} {rul_50h}"
        );
        assert!((rul_50h - 30.0).abs() < 2.0, "rul at 50 h {rul_50h}");
        assert_eq!(twin.alarm("rul_low"), None);
        assert_eq!(twin.health[0], Some(1.0));

        feed(&mut twin, at(50), at(60));
        assert_eq!(twin.alarm("rul_low"), Some(Severity::Warning));
        let health = twin.health[0].unwrap();
        assert!(health < 1.0 && health > 0.5, "health {health}");

        feed(&mut twin, at(60), at(79));
        assert_eq!(twin.alarm("rul_low"), Some(Severity::Critical));
        assert_eq!(twin.raised_total, 2, "raised on transitions only");

        // After a repair the signal is flat again; the alarm clears once the window
        // forgets the old trend.
        for i in at(79)..at(120) {
            twin.feed("vibration", 2.0 + noise(i), f64::from(i * STEP_SECS));
        }
        assert_eq!(twin.alarm("rul_low"), None);
        assert_eq!(twin.cleared_total, 1);
    }

    #[test]
    fn a_higher_load_reaches_the_threshold_sooner() {
        let mut twin = Twin::new(MODEL);
        feed(&mut twin, 0, at(50));
        let horizon = 100 * 3600;
        let same = twin.project(&[("speed", Value::Float(1200.0))], horizon, 600);
        let faster = twin.project(&[("speed", Value::Float(2400.0))], horizon, 600);
        let stopped = twin.project(&[("speed", Value::Float(0.0))], horizon, 600);

        let same_at = first_reaching(&same, "vibration", 10.0).unwrap();
        let faster_at = first_reaching(&faster, "vibration", 10.0).unwrap();
        assert!(faster_at < same_at, "{faster_at} vs {same_at}");
        assert!((same_at / 3600.0 - 30.0).abs() < 2.0, "{same_at}");
        assert!((faster_at / 3600.0 - 15.0).abs() < 1.5, "{faster_at}");
        assert_eq!(first_reaching(&stopped, "vibration", 10.0), None);

        let rul_now = same.series["rul_hours"][0].value;
        let rul_faster = faster.series["rul_hours"][0].value;
        assert!(
            (rul_now - 2.0 * rul_faster).abs() < 1e-6,
            "{rul_now} {rul_faster}"
        );
        assert_eq!(same.last("rul_hours"), Some(0.0));
    }

    #[test]
    fn a_signal_that_follows_the_load_is_projected_at_the_new_load_within_bounds() {
        let mut twin = Twin::new(&format!("{MODEL}level_exponent = 1.0\n"));
        feed(&mut twin, 0, at(50));
        let same = twin.project(&[("speed", Value::Float(1200.0))], 3600, 600);
        let faster = twin.project(&[("speed", Value::Float(2400.0))], 3600, 600);
        let (now, doubled) = (&same.series["vibration"][0], &faster.series["vibration"][0]);
        assert!(
            (doubled.value - 2.0 * now.value).abs() < 1e-9,
            "{now:?} {doubled:?}"
        );
        for point in same.series["vibration"]
            .iter()
            .chain(&faster.series["vibration"])
        {
            let (lower, upper) = (point.lower.unwrap(), point.upper.unwrap());
            assert!(lower < point.value && point.value < upper, "{point:?}");
        }
        // The line is less certain the further it reaches.
        let width = |p: &TrajectoryPoint| p.upper.unwrap() - p.lower.unwrap();
        let points = &same.series["vibration"];
        assert!(width(&points[points.len() - 1]) > width(&points[0]));
        // Without the exponent the level stays where it is.
        let mut plain = Twin::new(MODEL);
        feed(&mut plain, 0, at(50));
        let faster = plain.project(&[("speed", Value::Float(2400.0))], 3600, 600);
        assert!((faster.series["vibration"][0].value - now.value).abs() < 1e-9);
    }

    #[test]
    fn keeps_one_point_per_min_interval_within_the_window() {
        // Eight hours hold eight hourly points: one exactly eight hours old is dropped.
        let mut twin = Twin::new(&format!(
            "{}min_interval_secs = 3600\nmin_points = 4\n",
            MODEL.replace("window = 72000", "window = 28800.0")
        ));
        feed(&mut twin, 0, at(20));
        let saved: Saved = postcard::from_bytes(&twin.models()[0].save()).unwrap();
        assert_eq!(saved.points.len(), 8);
        assert!(
            saved
                .points
                .windows(2)
                .all(|p| p[1].0 - p[0].0 == 3_600_000_000)
        );
        assert_eq!(
            saved.last_time,
            Some(i64::from((at(20) - 1) * STEP_SECS) * 1_000_000)
        );
    }

    #[test]
    fn flat_signal_gives_max_hours() {
        let mut twin = Twin::new(MODEL);
        for i in 0..50 {
            twin.feed("vibration", 3.0, f64::from(i * 60));
        }
        assert_eq!(twin.derived("rul_hours"), 100_000.0);
        assert_eq!(twin.derived("vibration_trend_per_hour"), 0.0);
        assert_eq!(twin.confidence("rul_hours"), 1.0);
    }

    #[test]
    fn save_and_restore_round_trip() {
        let mut twin = Twin::new(MODEL);
        feed(&mut twin, 0, at(58));
        let mut restored = twin.restored();
        for i in at(58)..at(62) {
            let (value, time) = (vibration(i), f64::from(i * STEP_SECS));
            twin.feed("vibration", value, time);
            restored.feed("vibration", value, time);
            assert_eq!(twin.state().derived, restored.state().derived);
            assert_eq!(twin.state().alarms, restored.state().alarms);
        }
        assert_eq!(twin.models()[0].save(), restored.models()[0].save());
        assert!(restored.fresh_model(0).restore(b"garbage").is_err());
    }

    #[test]
    fn config_errors_name_the_component() {
        let error = build_error(
            "[[types.press.models]]\nkind = \"degradation\"\nchannel = \"vibration\"\n",
        );
        assert!(
            error.contains("degradation `degradation`: missing field `threshold`"),
            "{error}"
        );

        let error = build_error(&MODEL.replace("\"vibration\"", "\"vibraton\""));
        assert!(
            error.contains("degradation `degradation`: unknown channel `vibraton`"),
            "{error}"
        );

        let error =
            build_error(&format!("{MODEL}name = \"bearing\"\n").replace("\"speed\"", "\"sped\""));
        assert!(
            error.contains("degradation `bearing`: unknown desired value `sped`"),
            "{error}"
        );

        let error = build_error(&MODEL.replace("\"speed\"", "\"running\""));
        assert!(
            error.contains("desired value `running` is a bool"),
            "{error}"
        );

        let error = build_error(&MODEL.replace("threshold = 10", "threshold = 500"));
        assert!(
            error.contains("threshold 500 is outside the range [0, 50]"),
            "{error}"
        );

        let error = build_error(&format!("{MODEL}critical_hours = 48\n"));
        assert!(
            error.contains("critical_hours must be positive and at most warn_hours"),
            "{error}"
        );

        let error = build_error(&MODEL.replace("window = 72000", "window = 0"));
        assert!(
            error.contains("window must be a positive number of seconds"),
            "{error}"
        );

        let error = build_error(&format!("{MODEL}min_interval_secs = 10000\n"));
        assert!(
            error.contains("window (72000 s) must be longer than min_points - 1 intervals"),
            "{error}"
        );

        let error = build_error(&format!("{MODEL}min_points = 2\n"));
        assert!(error.contains("min_points must be 3 to 4096"), "{error}");
    }

    #[test]
    fn the_window_forgets_by_source_time_and_thins_fast_signals() {
        // One second of window fed every 100 µs: thinned to one point per 1 s / 4096.
        let mut twin = Twin::new(&MODEL.replace("window = 72000", "window = 1"));
        for i in 0..20_000 {
            twin.feed("vibration", 2.0 + noise(i), f64::from(i) * 1e-4);
        }
        let saved: Saved = postcard::from_bytes(&twin.models()[0].save()).unwrap();
        let (first, last) = (saved.points[0].0, saved.points.last().unwrap().0);
        assert!(saved.points.len() <= 4096, "{} points", saved.points.len());
        assert!(saved.points.len() > 3000, "{} points", saved.points.len());
        assert!(
            last - first < 1_000_000 && last - first > 999_000,
            "{first}..{last}"
        );
    }

    #[test]
    fn dev_plant_parameters_at_100_ms() {
        // `doppel dev` runs physics 60 times faster, with readings every 100 ms.
        let model = r#"
[[types.press.models]]
kind = "degradation"
channel = "vibration"
threshold = 11.0
warn_hours = 0.1
critical_hours = 0.02
window = 60
min_points = 10
load_desired = "speed"
"#;
        let mut twin = Twin::new(model);
        // Rising 0.02 mm/s per second from 2 mm/s: 11 mm/s at 450 s.
        let vibration = |i: u32| 2.0 + 0.002 * f64::from(i) + noise(i) * 0.1;
        let feed = |twin: &mut Twin, from: u32, to: u32| {
            for i in from..to {
                twin.feed("vibration", vibration(i), f64::from(i) * 0.1);
            }
        };
        feed(&mut twin, 0, 600);
        let rul = twin.derived("rul_hours") * 3600.0;
        assert!((rul - 390.0).abs() < 5.0, "RUL {rul} s at 60 s");
        assert_eq!(twin.alarm("rul_low"), None);
        feed(&mut twin, 600, 1000);
        assert_eq!(twin.alarm("rul_low"), Some(Severity::Warning));
        feed(&mut twin, 1000, 4000);
        assert_eq!(twin.alarm("rul_low"), Some(Severity::Critical));
        let message = &twin.state().alarms[0].message;
        assert!(message.contains(" min at its current trend"), "{message}");

        // As `src/dev/types.toml` writes it at 60×: a float window in seconds.
        let template = model
            .replace("window = 60", "window = 20.0")
            .replace("min_points = 10", "min_points = 30")
            .replace("warn_hours = 0.1", "warn_hours = 0.03333333333333333")
            .replace(
                "critical_hours = 0.02",
                "critical_hours = 0.008333333333333333",
            );
        let mut twin = Twin::new(&template);
        feed(&mut twin, 0, 400);
        assert!(twin.confidence("rul_hours") > 0.9);
    }

    #[test]
    fn the_trend_replaces_the_mean_an_anomaly_model_projects() {
        let mut twin = Twin::new(&format!(
            "[[types.press.models]]\nkind = \"ewma_anomaly\"\nchannel = \"vibration\"\n{MODEL}"
        ));
        feed(&mut twin, 0, at(50));
        let trajectory = twin.project(&[("speed", Value::Float(1200.0))], 3600, 600);
        let series = &trajectory.series["vibration"];
        assert_eq!(series.len(), 7, "one point per step, not one per model");
        assert!(series.windows(2).all(|p| p[1].t > p[0].t));
        assert!(series.windows(2).all(|p| p[1].value > p[0].value));
        assert_eq!(trajectory.last("vibration_anomaly"), Some(0.0));
    }
}
