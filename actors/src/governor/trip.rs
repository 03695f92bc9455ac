//! `trip`: trips the machine when a channel crosses a limit, and keeps it tripped.
//!
//! ```toml
//! [[types.press.governors]]
//! kind = "trip"
//! name = "overtemp"
//! channel = "temperature"
//! above = 120.0                  # and/or below = …
//! action = "stop"                # a command of the type; default "stop"
//! action_params = {}             # its parameters, if it takes any
//! hysteresis = 5.0               # reset needs temperature <= 115; default 0
//! blocks = ["running"]           # desired values frozen while tripped
//! min_quality = "good"           # or "uncertain": readings that may trip
//! on_stale = "hold"              # or "trip": when the channel goes stale or bad
//! ```
//!
//! A stale or bad channel never clears a latched trip. With `on_stale = "hold"` the
//! governor keeps its state while its channel cannot be trusted (no new trip, no
//! reset); with `on_stale = "trip"` losing the channel trips the machine as a reading
//! beyond the limit would.

use std::collections::BTreeMap;

use doppel_runtime::{
    ChannelCondition, ChannelId, ComponentSpec, ConfigError, Governor, Proposal, Quality, Review,
    SafetyDemand, Sample, Trajectory, TwinType, TwinView, Value,
};
use serde::Deserialize;

use super::{
    existing_channel, existing_desired, finite, non_negative, number, quantity, reading_against,
};

/// The worst reading quality a trip governor acts on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum MinQuality {
    /// Only good readings.
    #[default]
    Good,
    /// Good and uncertain readings.
    Uncertain,
}

impl MinQuality {
    fn admits(self, quality: Quality) -> bool {
        match self {
            MinQuality::Good => quality == Quality::Good,
            MinQuality::Uncertain => quality.is_usable(),
        }
    }
}

/// What a trip governor does when its channel goes stale or bad.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum OnStale {
    /// Keep the current state: no trip, and a latched trip stays latched.
    #[default]
    Hold,
    /// Trip the machine.
    Trip,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct TripConfig {
    channel: String,
    above: Option<f64>,
    below: Option<f64>,
    #[serde(default = "default_action")]
    action: String,
    #[serde(default)]
    action_params: BTreeMap<String, Value>,
    #[serde(default)]
    hysteresis: f64,
    #[serde(default)]
    blocks: Vec<String>,
    #[serde(default)]
    min_quality: MinQuality,
    #[serde(default)]
    on_stale: OnStale,
}

fn default_action() -> String {
    "stop".to_string()
}

/// Trips when channel `channel` reads above `above` or below `below`: demands the
/// `action` command at once and latches a trip.
///
/// While its trip is latched it denies
/// - a command that clears trips while the channel is still beyond its limit less
///   `hysteresis` (or has no usable reading to show otherwise), and
/// - any other command that changes a desired value listed in `blocks`.
///
/// It keeps no state of its own: the latch lives in the twin's state (`trips`), so it
/// survives restarts and replays with the journal.
#[derive(Debug, Clone)]
pub struct TripGovernor {
    name: String,
    channel_name: String,
    channel: ChannelId,
    unit: String,
    above: Option<f64>,
    below: Option<f64>,
    action: String,
    action_params: Vec<(String, Value)>,
    hysteresis: f64,
    blocks: Vec<String>,
    min_quality: MinQuality,
    on_stale: OnStale,
}

impl TripGovernor {
    /// The kind name used in configuration.
    pub const KIND: &'static str = "trip";

    /// Builds the governor from its declaration, checked against `twin_type`.
    pub fn from_spec(spec: &ComponentSpec, twin_type: &TwinType) -> Result<Self, ConfigError> {
        let config: TripConfig = spec.params()?;
        let (channel, channel_spec) = existing_channel(spec, twin_type, &config.channel)?;
        let above = config
            .above
            .map(|above| finite(spec, "above", above))
            .transpose()?;
        let below = config
            .below
            .map(|below| finite(spec, "below", below))
            .transpose()?;
        let hysteresis = non_negative(spec, "hysteresis", config.hysteresis)?;
        match (below, above) {
            (None, None) => return Err(spec.error("set `above`, `below` or both")),
            (Some(below), Some(above)) if below + hysteresis >= above - hysteresis => {
                return Err(spec.error(format!(
                    "`below` {below} and `above` {above} leave no band to reset in with hysteresis {hysteresis}"
                )));
            }
            _ => {}
        }
        let action_params = action_params(spec, twin_type, &config.action, config.action_params)?;
        for name in &config.blocks {
            existing_desired(spec, twin_type, name)?;
        }
        Ok(Self {
            name: spec.name.clone(),
            channel_name: config.channel,
            channel,
            unit: channel_spec.unit.clone(),
            above,
            below,
            action: config.action,
            action_params,
            hysteresis,
            blocks: config.blocks,
            min_quality: config.min_quality,
            on_stale: config.on_stale,
        })
    }

    /// Why `value` is beyond a trip limit; `None` inside them.
    fn tripped_by(&self, value: f64) -> Option<String> {
        if let Some(above) = self.above
            && value > above
        {
            let shown = reading_against(value, above, &self.unit);
            let limit = quantity(above, &self.unit);
            return Some(format!(
                "{} {shown} above trip limit {limit}",
                self.channel_name
            ));
        }
        if let Some(below) = self.below
            && value < below
        {
            let shown = reading_against(value, below, &self.unit);
            let limit = quantity(below, &self.unit);
            return Some(format!(
                "{} {shown} below trip limit {limit}",
                self.channel_name
            ));
        }
        None
    }

    /// Why `value` is still too far beyond a limit to clear the trip; `None` once it is
    /// back inside the limits less hysteresis.
    fn still_tripped(&self, value: f64) -> Option<String> {
        let (side, limit, reset) = match (self.above, self.below) {
            (Some(above), _) if value > above - self.hysteresis => {
                ("above", above, above - self.hysteresis)
            }
            (_, Some(below)) if value < below + self.hysteresis => {
                ("below", below, below + self.hysteresis)
            }
            _ => return None,
        };
        let shown = reading_against(value, reset, &self.unit);
        let limit = quantity(limit, &self.unit);
        if self.hysteresis > 0.0 {
            Some(format!(
                "{} {shown} still {side} reset level {} (trip limit {limit}, hysteresis {})",
                self.channel_name,
                quantity(reset, &self.unit),
                quantity(self.hysteresis, &self.unit)
            ))
        } else {
            Some(format!(
                "{} {shown} still {side} trip limit {limit}",
                self.channel_name
            ))
        }
    }

    /// Why the channel's current state forbids clearing the trip.
    fn forbids_reset(&self, twin: &TwinView<'_>) -> Option<String> {
        let Some(sample) = twin.state.current(self.channel) else {
            return Some(format!(
                "cannot clear trip: {} has no reading",
                self.channel_name
            ));
        };
        if !self.min_quality.admits(sample.quality) {
            return Some(format!(
                "cannot clear trip: {} reading is {}",
                self.channel_name,
                sample.quality.as_str()
            ));
        }
        self.still_tripped(sample.value)
    }
}

/// Checks `action` against the type's commands and types its parameters.
fn action_params(
    spec: &ComponentSpec,
    twin_type: &TwinType,
    action: &str,
    given: BTreeMap<String, Value>,
) -> Result<Vec<(String, Value)>, ConfigError> {
    let Some(command) = twin_type.commands.get(action) else {
        return Err(spec.error(format!(
            "action: type `{}` has no command `{action}`",
            twin_type.name
        )));
    };
    if let Some(unknown) = given
        .keys()
        .find(|name| !command.params.iter().any(|p| &p.name == *name))
    {
        return Err(spec.error(format!(
            "action_params: command `{action}` has no parameter `{unknown}`"
        )));
    }
    let mut params = Vec::with_capacity(command.params.len());
    for param in &command.params {
        let Some(value) = given.get(&param.name) else {
            return Err(spec.error(format!(
                "action_params: command `{action}` needs parameter `{}`",
                param.name
            )));
        };
        let Some(typed) = value.coerce(param.kind) else {
            return Err(spec.error(format!(
                "action_params: `{}` = {value} is not a {:?}",
                param.name, param.kind
            )));
        };
        if let Some((low, high)) = param.range
            && !(low..=high).contains(&typed.as_f64())
        {
            return Err(spec.error(format!(
                "action_params: `{}` = {value} is outside {}..={}",
                param.name,
                number(low),
                number(high)
            )));
        }
        params.push((param.name.clone(), typed));
    }
    Ok(params)
}

impl Governor for TripGovernor {
    fn name(&self) -> &str {
        &self.name
    }

    fn review(&self, proposal: &mut Proposal<'_>, twin: &TwinView<'_>) -> Review {
        let Some(trip) = twin.state.trips.iter().find(|t| t.governor == self.name) else {
            return Review::Allow;
        };
        if proposal.clears_trips {
            return match self.forbids_reset(twin) {
                Some(reason) => Review::Deny(reason),
                None => Review::Allow,
            };
        }
        let blocked = proposal.changes.iter().find(|change| {
            self.blocks.contains(&change.name)
                && twin
                    .desired(&change.name)
                    .is_some_and(|current| current.value.as_f64() != change.value.as_f64())
        });
        match blocked {
            Some(change) => Review::Deny(format!(
                "{} is blocked while trip `{}` is latched ({})",
                change.name, self.name, trip.reason
            )),
            None => Review::Allow,
        }
    }

    /// Checks every sample of the channel, even one that arrives late: a reading beyond
    /// the limit is evidence of a fault whenever it was taken.
    fn safety_commands(&self) -> Vec<String> {
        vec![self.action.clone()]
    }

    fn watch(&mut self, sample: &Sample, twin: &TwinView<'_>) -> Option<SafetyDemand> {
        if sample.channel != self.channel || !self.min_quality.admits(sample.quality) {
            return None;
        }
        let reason = self.tripped_by(sample.value)?;
        if twin.state.trips.iter().any(|t| t.governor == self.name) {
            return None;
        }
        Some(SafetyDemand {
            command: self.action.clone(),
            params: self.action_params.clone(),
            reason,
            latch: true,
        })
    }

    /// A projection whose channel crosses a limit would trip the machine: the first
    /// such point, with when.
    fn review_projection(&self, trajectory: &Trajectory, twin: &TwinView<'_>) -> Option<String> {
        if twin.state.trips.iter().any(|t| t.governor == self.name) {
            return None;
        }
        let points = trajectory.series.get(&self.channel_name)?;
        points.iter().find_map(|point| {
            self.tripped_by(point.value)
                .map(|reason| format!("projected {reason} at +{:.0} s", point.t))
        })
    }

    fn on_condition(
        &mut self,
        channel: ChannelId,
        condition: &ChannelCondition,
        twin: &TwinView<'_>,
    ) -> Option<SafetyDemand> {
        if channel != self.channel
            || self.on_stale != OnStale::Trip
            || twin.state.trips.iter().any(|t| t.governor == self.name)
        {
            return None;
        }
        Some(SafetyDemand {
            command: self.action.clone(),
            params: self.action_params.clone(),
            reason: format!(
                "{} is {}: {}",
                self.channel_name,
                condition.quality.as_str(),
                condition.reason
            ),
            latch: true,
        })
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use doppel_runtime::twin::Trip;
    use doppel_runtime::{Command, Origin, Timestamp, TwinState};

    use super::*;
    use crate::governor::testing::{build_error, build_one, change, path, review, sample, state};

    const OVERTEMP: &str = r#"
[[types.press.governors]]
kind = "trip"
name = "overtemp"
channel = "temperature"
above = 120.0
hysteresis = 5.0
blocks = ["running"]
"#;

    fn watch(
        governor: &mut dyn Governor,
        twin_type: &Arc<TwinType>,
        state: &TwinState,
        sample: &Sample,
    ) -> Option<SafetyDemand> {
        governor.watch(sample, &TwinView { twin_type, state })
    }

    fn latch(state: &mut TwinState, demand: &SafetyDemand, governor: &str) {
        state.trips.push(Trip {
            governor: governor.to_string(),
            reason: demand.reason.clone(),
            at: Timestamp::now(),
        });
    }

    #[test]
    fn trips_once_and_not_again_while_latched() {
        let (twin_type, mut governor) = build_one(OVERTEMP);
        let mut state = state(&twin_type);
        let now = Timestamp::now();

        let warm = sample(&twin_type, "temperature", 119.0, Quality::Good, now, 1);
        state.apply_sample(&warm);
        assert_eq!(watch(&mut *governor, &twin_type, &state, &warm), None);

        let exactly = sample(&twin_type, "temperature", 120.0, Quality::Good, now, 2);
        state.apply_sample(&exactly);
        assert_eq!(
            watch(&mut *governor, &twin_type, &state, &exactly),
            None,
            "the limit itself does not trip"
        );

        let hot = sample(&twin_type, "temperature", 121.3, Quality::Good, now, 3);
        state.apply_sample(&hot);
        let demand = watch(&mut *governor, &twin_type, &state, &hot).expect("trips");
        assert_eq!(
            demand,
            SafetyDemand {
                command: "stop".to_string(),
                params: Vec::new(),
                reason: "temperature 121.3 degC above trip limit 120 degC".to_string(),
                latch: true,
            }
        );

        latch(&mut state, &demand, "overtemp");
        let hotter = sample(&twin_type, "temperature", 150.0, Quality::Good, now, 4);
        state.apply_sample(&hotter);
        assert_eq!(watch(&mut *governor, &twin_type, &state, &hotter), None);

        // Another governor's trip does not count as this one's latch.
        state.trips.clear();
        state.trips.push(Trip {
            governor: "other".to_string(),
            reason: String::new(),
            at: now,
        });
        assert!(watch(&mut *governor, &twin_type, &state, &hotter).is_some());
    }

    #[test]
    fn ignores_other_channels_and_readings_below_min_quality() {
        let (twin_type, mut governor) = build_one(OVERTEMP);
        let mut state = state(&twin_type);
        let now = Timestamp::now();

        let other = sample(&twin_type, "temperature_b", 180.0, Quality::Good, now, 1);
        state.apply_sample(&other);
        assert_eq!(watch(&mut *governor, &twin_type, &state, &other), None);

        let uncertain = sample(&twin_type, "temperature", 180.0, Quality::Uncertain, now, 2);
        state.apply_sample(&uncertain);
        assert_eq!(watch(&mut *governor, &twin_type, &state, &uncertain), None);

        let (twin_type, mut governor) =
            build_one(&format!("{OVERTEMP}min_quality = \"uncertain\"\n"));
        assert!(watch(&mut *governor, &twin_type, &state, &uncertain).is_some());
        let bad = sample(&twin_type, "temperature", 180.0, Quality::Bad, now, 3);
        assert_eq!(watch(&mut *governor, &twin_type, &state, &bad), None);
    }

    #[test]
    fn trips_below_a_low_limit_with_a_configured_action() {
        let (twin_type, mut governor) = build_one(
            r#"
[[types.press.governors]]
kind = "trip"
channel = "temperature"
below = 5
action = "set_speed"
action_params = { rpm = 0 }
"#,
        );
        let mut state = state(&twin_type);
        let cold = sample(
            &twin_type,
            "temperature",
            -2.5,
            Quality::Good,
            Timestamp::now(),
            1,
        );
        state.apply_sample(&cold);
        let demand = watch(&mut *governor, &twin_type, &state, &cold).expect("trips");
        assert_eq!(demand.command, "set_speed");
        assert_eq!(demand.params, vec![("rpm".to_string(), Value::Float(0.0))]);
        assert_eq!(
            demand.reason,
            "temperature -2.5 degC below trip limit 5 degC"
        );
    }

    #[test]
    fn reset_is_denied_while_hot_and_allowed_once_cooled() {
        let (twin_type, mut governor) = build_one(OVERTEMP);
        let mut state = state(&twin_type);
        let now = Timestamp::now();
        let reset = Command::new(path(), "reset", Origin::operator("ann"));

        let hot = sample(&twin_type, "temperature", 121.3, Quality::Good, now, 1);
        state.apply_sample(&hot);
        let demand = watch(&mut *governor, &twin_type, &state, &hot).unwrap();
        latch(&mut state, &demand, "overtemp");

        let outcome = review(
            &*governor,
            &twin_type,
            &state,
            &reset,
            Vec::new(),
            true,
            now,
        );
        assert_eq!(
            outcome.denied(),
            "temperature 121.3 degC still above reset level 115 degC (trip limit 120 degC, hysteresis 5 degC)"
        );

        // Below the limit but inside the hysteresis band: still denied.
        state.apply_sample(&sample(
            &twin_type,
            "temperature",
            118.0,
            Quality::Good,
            now,
            2,
        ));
        let outcome = review(
            &*governor,
            &twin_type,
            &state,
            &reset,
            Vec::new(),
            true,
            now,
        );
        assert!(
            outcome
                .denied()
                .starts_with("temperature 118 degC still above reset level 115 degC")
        );

        // A cool reading of bad quality proves nothing.
        state.apply_sample(&sample(
            &twin_type,
            "temperature",
            90.0,
            Quality::Bad,
            now,
            3,
        ));
        let outcome = review(
            &*governor,
            &twin_type,
            &state,
            &reset,
            Vec::new(),
            true,
            now,
        );
        assert_eq!(
            outcome.denied(),
            "cannot clear trip: temperature reading is bad"
        );

        state.apply_sample(&sample(
            &twin_type,
            "temperature",
            114.0,
            Quality::Good,
            now,
            4,
        ));
        let outcome = review(
            &*governor,
            &twin_type,
            &state,
            &reset,
            Vec::new(),
            true,
            now,
        );
        assert_eq!(outcome.review, Review::Allow);
    }

    fn stale(reason: &str) -> ChannelCondition {
        ChannelCondition {
            quality: Quality::Stale,
            reason: reason.to_string(),
            since: Timestamp::now(),
        }
    }

    #[test]
    fn a_stale_channel_holds_by_default_and_trips_when_asked() {
        let (twin_type, mut governor) = build_one(OVERTEMP);
        let mut state = state(&twin_type);
        let warm = sample(
            &twin_type,
            "temperature",
            90.0,
            Quality::Good,
            Timestamp::now(),
            1,
        );
        state.apply_sample(&warm);
        let temperature = twin_type.channel("temperature").unwrap();
        let condition = stale("no reading for 31 s (max age 30 s)");
        assert!(state.set_condition(temperature, condition.clone()));
        let view = TwinView {
            twin_type: &twin_type,
            state: &state,
        };
        assert_eq!(
            governor.on_condition(temperature, &condition, &view),
            None,
            "hold: losing the reading is not a reason to trip"
        );

        let (twin_type, mut governor) = build_one(&format!("{OVERTEMP}on_stale = \"trip\"\n"));
        let view = TwinView {
            twin_type: &twin_type,
            state: &state,
        };
        let other = twin_type.channel("vibration").unwrap();
        assert_eq!(governor.on_condition(other, &condition, &view), None);
        let demand = governor
            .on_condition(temperature, &condition, &view)
            .expect("trips");
        assert_eq!(demand.command, "stop");
        assert!(demand.latch);
        assert_eq!(
            demand.reason,
            "temperature is stale: no reading for 31 s (max age 30 s)"
        );
    }

    #[test]
    fn reset_is_denied_while_the_channel_is_stale() {
        let (twin_type, governor) = build_one(&format!("{OVERTEMP}min_quality = \"uncertain\"\n"));
        let mut state = state(&twin_type);
        let cool = sample(
            &twin_type,
            "temperature",
            60.0,
            Quality::Good,
            Timestamp::now(),
            1,
        );
        state.apply_sample(&cool);
        let temperature = twin_type.channel("temperature").unwrap();
        assert!(state.set_condition(temperature, stale("broker lost")));
        state.trips.push(Trip {
            governor: "overtemp".to_string(),
            reason: "test".to_string(),
            at: Timestamp::now(),
        });
        let reset = Command::new(path(), "reset", Origin::operator("ann"));
        let outcome = review(
            &*governor,
            &twin_type,
            &state,
            &reset,
            Vec::new(),
            true,
            Timestamp::now(),
        );
        assert_eq!(
            outcome.denied(),
            "cannot clear trip: temperature reading is stale"
        );
    }

    #[test]
    fn reset_without_a_reading_is_denied() {
        let (twin_type, governor) = build_one(OVERTEMP);
        let mut state = state(&twin_type);
        state.trips.push(Trip {
            governor: "overtemp".to_string(),
            reason: "test".to_string(),
            at: Timestamp::now(),
        });
        let reset = Command::new(path(), "reset", Origin::operator("ann"));
        let outcome = review(
            &*governor,
            &twin_type,
            &state,
            &reset,
            Vec::new(),
            true,
            Timestamp::now(),
        );
        assert_eq!(
            outcome.denied(),
            "cannot clear trip: temperature has no reading"
        );
    }

    #[test]
    fn blocked_values_stay_frozen_while_latched() {
        let (twin_type, mut governor) = build_one(OVERTEMP);
        let mut state = state(&twin_type);
        let now = Timestamp::now();
        let start = Command::new(path(), "start", Origin::operator("ann"));
        let stop = Command::new(path(), "stop", Origin::operator("ann"));

        // Not latched: anything goes.
        let outcome = review(
            &*governor,
            &twin_type,
            &state,
            &start,
            vec![change(&twin_type, "running", Value::Bool(true))],
            false,
            now,
        );
        assert_eq!(outcome.review, Review::Allow);

        let hot = sample(&twin_type, "temperature", 130.0, Quality::Good, now, 1);
        state.apply_sample(&hot);
        let demand = watch(&mut *governor, &twin_type, &state, &hot).unwrap();
        latch(&mut state, &demand, "overtemp");
        let (running, _) = twin_type.desired("running").unwrap();
        state.desired[running].value = Value::Bool(false);

        let outcome = review(
            &*governor,
            &twin_type,
            &state,
            &start,
            vec![change(&twin_type, "running", Value::Bool(true))],
            false,
            now,
        );
        assert_eq!(
            outcome.denied(),
            "running is blocked while trip `overtemp` is latched (temperature 130 degC above trip limit 120 degC)"
        );

        // Writing the value it already has, or an unblocked value, passes.
        let outcome = review(
            &*governor,
            &twin_type,
            &state,
            &stop,
            vec![change(&twin_type, "running", Value::Bool(false))],
            false,
            now,
        );
        assert_eq!(outcome.review, Review::Allow);
        let speed = Command::new(path(), "set_speed", Origin::operator("ann"))
            .param("rpm", Value::Float(0.0));
        let outcome = review(
            &*governor,
            &twin_type,
            &state,
            &speed,
            vec![change(&twin_type, "speed", Value::Float(0.0))],
            false,
            now,
        );
        assert_eq!(outcome.review, Review::Allow);

        // A command that clears trips may restart once cooled.
        state.apply_sample(&sample(
            &twin_type,
            "temperature",
            100.0,
            Quality::Good,
            now,
            2,
        ));
        let outcome = review(
            &*governor,
            &twin_type,
            &state,
            &start,
            vec![change(&twin_type, "running", Value::Bool(true))],
            true,
            now,
        );
        assert_eq!(outcome.review, Review::Allow);
    }

    #[test]
    fn config_errors_name_the_component() {
        let channel = build_error(&OVERTEMP.replace("\"temperature\"", "\"temprature\""));
        assert!(
            channel
                .to_string()
                .contains("trip `overtemp`: type `press` has no channel `temprature`"),
            "{channel}"
        );

        let no_limit = build_error(&OVERTEMP.replace("above = 120.0\n", ""));
        assert!(
            no_limit
                .to_string()
                .contains("trip `overtemp`: set `above`, `below` or both"),
            "{no_limit}"
        );

        let action = build_error(&format!("{OVERTEMP}action = \"halt\"\n"));
        assert!(
            action
                .to_string()
                .contains("action: type `press` has no command `halt`"),
            "{action}"
        );

        let missing_param = build_error(&format!("{OVERTEMP}action = \"set_speed\"\n"));
        assert!(
            missing_param
                .to_string()
                .contains("command `set_speed` needs parameter `rpm`"),
            "{missing_param}"
        );

        let unknown_param = build_error(&format!("{OVERTEMP}action_params = {{ force = 1 }}\n"));
        assert!(
            unknown_param
                .to_string()
                .contains("command `stop` has no parameter `force`"),
            "{unknown_param}"
        );

        let out_of_range = build_error(&format!(
            "{OVERTEMP}action = \"set_speed\"\naction_params = {{ rpm = 5000 }}\n"
        ));
        assert!(
            out_of_range
                .to_string()
                .contains("`rpm` = 5000 is outside 0..=3000"),
            "{out_of_range}"
        );

        let wrong_type = build_error(&format!(
            "{OVERTEMP}action = \"set_speed\"\naction_params = {{ rpm = true }}\n"
        ));
        assert!(
            wrong_type
                .to_string()
                .contains("`rpm` = true is not a Float"),
            "{wrong_type}"
        );

        let blocks = build_error(&OVERTEMP.replace("[\"running\"]", "[\"runing\"]"));
        assert!(
            blocks.to_string().contains("has no desired value `runing`"),
            "{blocks}"
        );

        let band = build_error(&format!("{OVERTEMP}below = 112.0\n"));
        assert!(
            band.to_string().contains("leave no band to reset in"),
            "{band}"
        );

        let hysteresis = build_error(&OVERTEMP.replace("hysteresis = 5.0", "hysteresis = -1.0"));
        assert!(
            hysteresis
                .to_string()
                .contains("`hysteresis` must be a number, 0 or above"),
            "{hysteresis}"
        );

        let quality = build_error(&format!("{OVERTEMP}min_quality = \"bad\"\n"));
        assert!(
            quality.to_string().contains("unknown variant `bad`"),
            "{quality}"
        );
    }
}
