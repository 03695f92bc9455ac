//! `dual_sensor`: no automatic change unless two sensors agree.
//!
//! ```toml
//! [[types.press.governors]]
//! kind = "dual_sensor"
//! primary = "temperature"
//! secondary = "temperature_b"
//! tolerance = 2.0             # absolute, in the channels' unit
//! max_age_secs = 10.0         # default 10
//! applies_to = ["speed"]      # desired values guarded; default all
//! ```

use doppel_runtime::{
    ComponentSpec, ConfigError, Governor, Proposal, Quality, Review, TwinType, TwinView,
};
use serde::Deserialize;

use super::{existing_channel, existing_desired, non_negative, positive, quantity, seconds};

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct DualSensorConfig {
    primary: String,
    secondary: String,
    tolerance: f64,
    #[serde(default = "default_max_age_secs")]
    max_age_secs: f64,
    applies_to: Option<Vec<String>>,
}

fn default_max_age_secs() -> f64 {
    10.0
}

/// Dual-sensor corroboration: a planner or automation (an origin for which
/// [`OriginKind::is_automatic`](doppel_runtime::OriginKind::is_automatic) holds) may
/// change a guarded desired value only while the `primary` and `secondary` channels
/// both have a fresh, good reading and agree within `tolerance`.
///
/// Commands from operators (and safety or system commands) pass: a person deciding is
/// the corroboration, and a stop must never wait for a sensor.
#[derive(Debug, Clone)]
pub struct DualSensorGovernor {
    name: String,
    primary: String,
    secondary: String,
    unit: String,
    tolerance: f64,
    max_age_secs: f64,
    /// Guarded desired values; `None` guards all.
    applies_to: Option<Vec<String>>,
}

impl DualSensorGovernor {
    /// The kind name used in configuration.
    pub const KIND: &'static str = "dual_sensor";

    /// Builds the governor from its declaration, checked against `twin_type`.
    pub fn from_spec(spec: &ComponentSpec, twin_type: &TwinType) -> Result<Self, ConfigError> {
        let config: DualSensorConfig = spec.params()?;
        let (_, primary) = existing_channel(spec, twin_type, &config.primary)?;
        let (_, secondary) = existing_channel(spec, twin_type, &config.secondary)?;
        if config.primary == config.secondary {
            return Err(spec.error("`primary` and `secondary` must be two different channels"));
        }
        if primary.unit != secondary.unit {
            return Err(spec.error(format!(
                "channels `{}` ({}) and `{}` ({}) do not share a unit",
                config.primary, primary.unit, config.secondary, secondary.unit
            )));
        }
        let tolerance = non_negative(spec, "tolerance", config.tolerance)?;
        let max_age_secs = positive(spec, "max_age_secs", config.max_age_secs)?;
        if let Some(applies_to) = &config.applies_to {
            if applies_to.is_empty() {
                return Err(
                    spec.error("`applies_to` is empty; leave it out to guard every desired value")
                );
            }
            for name in applies_to {
                existing_desired(spec, twin_type, name)?;
            }
        }
        Ok(Self {
            name: spec.name.clone(),
            unit: primary.unit.clone(),
            primary: config.primary,
            secondary: config.secondary,
            tolerance,
            max_age_secs,
            applies_to: config.applies_to,
        })
    }

    fn guards(&self, desired: &str) -> bool {
        self.applies_to
            .as_ref()
            .is_none_or(|names| names.iter().any(|name| name == desired))
    }

    /// The usable value of `channel`, or why it is not usable.
    fn reading(
        &self,
        channel: &str,
        proposal: &Proposal<'_>,
        twin: &TwinView<'_>,
    ) -> Result<f64, String> {
        let Some(sample) = twin.current(channel) else {
            return Err(format!("{channel} has no reading"));
        };
        if sample.quality != Quality::Good {
            return Err(format!("{channel} reading is {}", sample.quality.as_str()));
        }
        let age_secs = proposal.now.secs_since(sample.source_time);
        if age_secs > self.max_age_secs {
            return Err(format!(
                "{channel} reading is {} old (max {})",
                seconds(age_secs),
                seconds(self.max_age_secs)
            ));
        }
        Ok(sample.value)
    }

    fn corroborate(&self, proposal: &Proposal<'_>, twin: &TwinView<'_>) -> Result<(), String> {
        let primary = self.reading(&self.primary, proposal, twin)?;
        let secondary = self.reading(&self.secondary, proposal, twin)?;
        let difference = (primary - secondary).abs();
        if difference > self.tolerance {
            return Err(format!(
                "{} {} and {} {} differ by {} (tolerance {})",
                self.primary,
                quantity(primary, &self.unit),
                self.secondary,
                quantity(secondary, &self.unit),
                quantity(difference, &self.unit),
                quantity(self.tolerance, &self.unit)
            ));
        }
        Ok(())
    }
}

impl Governor for DualSensorGovernor {
    fn name(&self) -> &str {
        &self.name
    }

    fn review(&self, proposal: &mut Proposal<'_>, twin: &TwinView<'_>) -> Review {
        if !proposal.command.origin.kind.is_automatic() {
            return Review::Allow;
        }
        let Some(guarded) = proposal.changes.iter().find(|c| self.guards(&c.name)) else {
            return Review::Allow;
        };
        match self.corroborate(proposal, twin) {
            Ok(()) => Review::Allow,
            Err(why) => Review::Deny(format!(
                "automatic change of {} needs two agreeing sensors: {why}",
                guarded.name
            )),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use doppel_runtime::{Command, Origin, Timestamp, Value};

    use super::*;
    use crate::governor::testing::{build_error, build_one, change, path, review, sample, state};

    const CORROBORATE: &str = r#"
[[types.press.governors]]
kind = "dual_sensor"
name = "temperature_pair"
primary = "temperature"
secondary = "temperature_b"
tolerance = 2.0
applies_to = ["speed"]
"#;

    fn automatic_speed(rpm: f64) -> Command {
        Command::new(path(), "set_speed", Origin::automation("mes")).param("rpm", Value::Float(rpm))
    }

    #[test]
    fn automation_passes_while_sensors_agree() {
        let (twin_type, governor) = build_one(CORROBORATE);
        let mut state = state(&twin_type);
        let now = Timestamp::now();
        state.apply_sample(&sample(
            &twin_type,
            "temperature",
            80.0,
            Quality::Good,
            now,
            1,
        ));
        state.apply_sample(&sample(
            &twin_type,
            "temperature_b",
            81.5,
            Quality::Good,
            now,
            2,
        ));

        let command = automatic_speed(1500.0);
        let changes = vec![change(&twin_type, "speed", Value::Float(1500.0))];
        let outcome = review(
            &*governor, &twin_type, &state, &command, changes, false, now,
        );
        assert_eq!(outcome.review, Review::Allow);
    }

    #[test]
    fn automation_is_denied_when_sensors_disagree_and_an_operator_is_not() {
        let (twin_type, governor) = build_one(CORROBORATE);
        let mut state = state(&twin_type);
        let now = Timestamp::now();
        state.apply_sample(&sample(
            &twin_type,
            "temperature",
            80.0,
            Quality::Good,
            now,
            1,
        ));
        state.apply_sample(&sample(
            &twin_type,
            "temperature_b",
            85.0,
            Quality::Good,
            now,
            2,
        ));

        let command = automatic_speed(1500.0);
        let changes = vec![change(&twin_type, "speed", Value::Float(1500.0))];
        let outcome = review(
            &*governor,
            &twin_type,
            &state,
            &command,
            changes.clone(),
            false,
            now,
        );
        assert_eq!(
            outcome.denied(),
            "automatic change of speed needs two agreeing sensors: \
             temperature 80 degC and temperature_b 85 degC differ by 5 degC (tolerance 2 degC)"
        );

        let planner = Command::new(path(), "set_speed", Origin::planner("fleet"))
            .param("rpm", Value::Float(1500.0));
        let outcome = review(
            &*governor,
            &twin_type,
            &state,
            &planner,
            changes.clone(),
            false,
            now,
        );
        assert!(outcome.denied().contains("differ by 5 degC"));

        let operator = Command::new(path(), "set_speed", Origin::operator("ann"))
            .param("rpm", Value::Float(1500.0));
        let outcome = review(
            &*governor, &twin_type, &state, &operator, changes, false, now,
        );
        assert_eq!(outcome.review, Review::Allow);
    }

    #[test]
    fn automation_is_denied_on_missing_bad_or_stale_readings() {
        let (twin_type, governor) = build_one(CORROBORATE);
        let mut state = state(&twin_type);
        let now = Timestamp::now();
        let command = automatic_speed(1500.0);
        let changes = vec![change(&twin_type, "speed", Value::Float(1500.0))];

        let outcome = review(
            &*governor,
            &twin_type,
            &state,
            &command,
            changes.clone(),
            false,
            now,
        );
        assert!(
            outcome.denied().ends_with(": temperature has no reading"),
            "{}",
            outcome.denied()
        );

        state.apply_sample(&sample(
            &twin_type,
            "temperature",
            80.0,
            Quality::Good,
            now,
            1,
        ));
        state.apply_sample(&sample(
            &twin_type,
            "temperature_b",
            80.0,
            Quality::Uncertain,
            now,
            2,
        ));
        let outcome = review(
            &*governor,
            &twin_type,
            &state,
            &command,
            changes.clone(),
            false,
            now,
        );
        assert!(
            outcome
                .denied()
                .ends_with(": temperature_b reading is uncertain"),
            "{}",
            outcome.denied()
        );

        state.apply_sample(&sample(
            &twin_type,
            "temperature_b",
            80.0,
            Quality::Good,
            now,
            3,
        ));
        let later = now.plus(Duration::from_millis(12_500));
        let outcome = review(
            &*governor,
            &twin_type,
            &state,
            &command,
            changes.clone(),
            false,
            later,
        );
        assert!(
            outcome
                .denied()
                .ends_with(": temperature reading is 12.5 s old (max 10 s)"),
            "{}",
            outcome.denied()
        );

        let outcome = review(
            &*governor,
            &twin_type,
            &state,
            &command,
            changes.clone(),
            false,
            now,
        );
        assert_eq!(outcome.review, Review::Allow);

        // A sensor whose source lost touch never corroborates, however recent its value.
        let stale = doppel_runtime::ChannelCondition {
            quality: Quality::Stale,
            reason: "mqtt `plant` lost its broker".to_string(),
            since: now,
        };
        assert!(state.set_condition(twin_type.channel("temperature_b").unwrap(), stale));
        let outcome = review(
            &*governor, &twin_type, &state, &command, changes, false, now,
        );
        assert!(
            outcome
                .denied()
                .ends_with(": temperature_b reading is stale"),
            "{}",
            outcome.denied()
        );
    }

    #[test]
    fn only_guarded_desired_values_need_corroboration() {
        let (twin_type, governor) = build_one(CORROBORATE);
        let state = state(&twin_type);
        let stop = Command::new(path(), "stop", Origin::automation("mes"));
        let changes = vec![change(&twin_type, "running", Value::Bool(false))];
        let outcome = review(
            &*governor,
            &twin_type,
            &state,
            &stop,
            changes.clone(),
            false,
            Timestamp::now(),
        );
        assert_eq!(outcome.review, Review::Allow);

        let (twin_type, governor) =
            build_one(&CORROBORATE.replace("applies_to = [\"speed\"]\n", ""));
        let outcome = review(
            &*governor,
            &twin_type,
            &state,
            &stop,
            changes,
            false,
            Timestamp::now(),
        );
        assert!(
            outcome
                .denied()
                .starts_with("automatic change of running needs two agreeing sensors")
        );
    }

    #[test]
    fn config_errors_name_the_component() {
        let channel = build_error(&CORROBORATE.replace("\"temperature_b\"", "\"temperature_c\""));
        assert!(
            channel.to_string().contains(
                "dual_sensor `temperature_pair`: type `press` has no channel `temperature_c`"
            ),
            "{channel}"
        );
        let units = build_error(&CORROBORATE.replace("\"temperature_b\"", "\"vibration\""));
        assert!(units.to_string().contains("do not share a unit"), "{units}");
        let same = build_error(&CORROBORATE.replace("\"temperature_b\"", "\"temperature\""));
        assert!(
            same.to_string().contains("two different channels"),
            "{same}"
        );
        let desired = build_error(&CORROBORATE.replace("[\"speed\"]", "[\"sped\"]"));
        assert!(
            desired.to_string().contains("has no desired value `sped`"),
            "{desired}"
        );
        let tolerance = build_error(&CORROBORATE.replace("tolerance = 2.0", "tolerance = -1"));
        assert!(
            tolerance
                .to_string()
                .contains("`tolerance` must be a number, 0 or above"),
            "{tolerance}"
        );
        let age = build_error(&format!("{CORROBORATE}max_age_secs = 0\n"));
        assert!(
            age.to_string()
                .contains("`max_age_secs` must be a number above 0"),
            "{age}"
        );
    }
}
