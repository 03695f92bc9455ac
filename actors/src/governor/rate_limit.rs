//! `rate_limit`: limits how fast a desired value may change.
//!
//! ```toml
//! [[types.press.governors]]
//! kind = "rate_limit"
//! desired = "speed"
//! max_per_sec = 100.0   # units per second, above 0
//! max_step = 500.0      # optional cap on one change, whatever the time since the last
//! ```

use doppel_runtime::{
    ComponentSpec, ConfigError, Governor, Proposal, Review, Timestamp, TwinType, TwinView, Value,
    ValueKind,
};
use serde::Deserialize;

use super::{numeric_desired, positive, quantity, seconds};

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RateLimitConfig {
    desired: String,
    max_per_sec: f64,
    max_step: Option<f64>,
}

/// Limits how far a command may move desired value `desired` from its current value:
/// at most `max_per_sec` times the seconds since it was last set, and at most
/// `max_step` in one command when given. A larger change is clamped to the allowed one.
///
/// A value that was never set (still at its initial value) is not limited by time, only
/// by `max_step`.
#[derive(Debug, Clone)]
pub struct RateLimitGovernor {
    name: String,
    desired: String,
    unit: String,
    max_per_sec: f64,
    max_step: Option<f64>,
}

impl RateLimitGovernor {
    /// The kind name used in configuration.
    pub const KIND: &'static str = "rate_limit";

    /// Builds the governor from its declaration, checked against `twin_type`.
    pub fn from_spec(spec: &ComponentSpec, twin_type: &TwinType) -> Result<Self, ConfigError> {
        let config: RateLimitConfig = spec.params()?;
        let desired = numeric_desired(spec, twin_type, &config.desired)?;
        let max_per_sec = positive(spec, "max_per_sec", config.max_per_sec)?;
        let max_step = config
            .max_step
            .map(|step| positive(spec, "max_step", step))
            .transpose()?;
        Ok(Self {
            name: spec.name.clone(),
            desired: config.desired,
            unit: desired.unit.clone(),
            max_per_sec,
            max_step,
        })
    }

    /// The largest change allowed now, and why it is that large.
    fn allowance(&self, set_at: Timestamp, now: Timestamp) -> (f64, String) {
        let by_time = if set_at == Timestamp(0) {
            f64::INFINITY
        } else {
            // A last-set time in the future (clock step) allows no change until it passes.
            self.max_per_sec * now.secs_since(set_at).max(0.0)
        };
        let rate = format!("{}/s", quantity(self.max_per_sec, &self.unit));
        match self.max_step {
            Some(step) if step < by_time => {
                (step, format!("max step {}", quantity(step, &self.unit)))
            }
            _ if set_at == Timestamp(0) => (f64::INFINITY, rate),
            _ => {
                let since = seconds(now.secs_since(set_at).max(0.0));
                (by_time, format!("{rate}, last set {since} ago"))
            }
        }
    }
}

impl Governor for RateLimitGovernor {
    fn name(&self) -> &str {
        &self.name
    }

    fn review(&self, proposal: &mut Proposal<'_>, twin: &TwinView<'_>) -> Review {
        let Some(change) = proposal.change(&self.desired) else {
            return Review::Allow;
        };
        let Some(current) = twin.desired(&self.desired) else {
            return Review::Allow;
        };
        let kind = change.value.kind();
        let requested = change.value.as_f64();
        if !requested.is_finite() {
            return Review::Deny(format!(
                "{} {requested} is not a finite number",
                self.desired
            ));
        }
        let from = current.value.as_f64();
        let (allowed, why) = self.allowance(current.set_at, proposal.now);
        let step = requested - from;
        if step.abs() <= allowed {
            return Review::Allow;
        }
        // An integer moves by a whole number of units, never past the allowance.
        let allowed_step = match kind {
            ValueKind::Int => allowed.floor(),
            _ => allowed,
        };
        let target = from + allowed_step.copysign(step);
        let reason = format!(
            "{} may change by at most {} now ({why})",
            self.desired,
            quantity(allowed, &self.unit),
        );
        let desired = self.desired.clone();
        proposal.clamp(&desired, Value::from_f64(kind, target), reason);
        Review::Allow
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use doppel_runtime::twin::DesiredValue;
    use doppel_runtime::{Command, Origin, Timestamp};

    use super::*;
    use crate::governor::testing::{
        build_error, build_one, change, path, review, set_speed, state,
    };

    const SPEED_RATE: &str = r#"
[[types.press.governors]]
kind = "rate_limit"
desired = "speed"
max_per_sec = 100
"#;

    #[test]
    fn clamps_to_the_change_allowed_since_last_set() {
        let (twin_type, governor) = build_one(SPEED_RATE);
        let mut state = state(&twin_type);
        let now = Timestamp::now();
        let (speed, _) = twin_type.desired("speed").unwrap();
        state.desired[speed] = DesiredValue {
            set_at: now.minus(Duration::from_millis(500)),
            ..DesiredValue::initial(Value::Float(1200.0))
        };

        let command = set_speed(2000.0);
        let up = vec![change(&twin_type, "speed", Value::Float(2000.0))];
        let outcome = review(&*governor, &twin_type, &state, &command, up, false, now);
        assert_eq!(outcome.review, Review::Allow);
        assert_eq!(outcome.value("speed"), Value::Float(1250.0));
        assert_eq!(
            outcome.clamps[0].reason,
            "speed may change by at most 50 rpm now (100 rpm/s, last set 0.5 s ago)"
        );

        let command = set_speed(0.0);
        let down = vec![change(&twin_type, "speed", Value::Float(0.0))];
        let outcome = review(&*governor, &twin_type, &state, &command, down, false, now);
        assert_eq!(outcome.value("speed"), Value::Float(1150.0));

        let command = set_speed(1230.0);
        let small = vec![change(&twin_type, "speed", Value::Float(1230.0))];
        let outcome = review(&*governor, &twin_type, &state, &command, small, false, now);
        assert_eq!(outcome.review, Review::Allow);
        assert!(outcome.clamps.is_empty());
    }

    #[test]
    fn a_value_never_set_is_limited_only_by_max_step() {
        let (twin_type, governor) = build_one(SPEED_RATE);
        let state = state(&twin_type);
        let command = set_speed(3000.0);
        let changes = vec![change(&twin_type, "speed", Value::Float(3000.0))];
        let outcome = review(
            &*governor,
            &twin_type,
            &state,
            &command,
            changes,
            false,
            Timestamp::now(),
        );
        assert!(outcome.clamps.is_empty());
        assert_eq!(outcome.value("speed"), Value::Float(3000.0));

        let (twin_type, governor) = build_one(&format!("{SPEED_RATE}max_step = 500.0\n"));
        let changes = vec![change(&twin_type, "speed", Value::Float(3000.0))];
        let outcome = review(
            &*governor,
            &twin_type,
            &state,
            &command,
            changes,
            false,
            Timestamp::now(),
        );
        assert_eq!(outcome.value("speed"), Value::Float(1700.0));
        assert_eq!(
            outcome.clamps[0].reason,
            "speed may change by at most 500 rpm now (max step 500 rpm)"
        );
    }

    #[test]
    fn max_step_caps_a_long_wait() {
        let (twin_type, governor) = build_one(&format!("{SPEED_RATE}max_step = 300\n"));
        let mut state = state(&twin_type);
        let now = Timestamp::now();
        let (speed, _) = twin_type.desired("speed").unwrap();
        state.desired[speed].set_at = now.minus(Duration::from_secs(3600));
        let command = set_speed(100.0);
        let changes = vec![change(&twin_type, "speed", Value::Float(100.0))];
        let outcome = review(
            &*governor, &twin_type, &state, &command, changes, false, now,
        );
        assert_eq!(outcome.value("speed"), Value::Float(900.0));
    }

    #[test]
    fn integer_values_move_by_whole_units() {
        let (twin_type, governor) = build_one(
            "[[types.press.governors]]\nkind = \"rate_limit\"\ndesired = \"strokes\"\nmax_per_sec = 3\n",
        );
        let mut state = state(&twin_type);
        let now = Timestamp::now();
        let (index, _) = twin_type.desired("strokes").unwrap();
        state.desired[index].set_at = now.minus(Duration::from_millis(1500));
        let command = Command::new(path(), "set_strokes", Origin::operator("ann"))
            .param("per_min", Value::Int(40));
        let changes = vec![change(&twin_type, "strokes", Value::Int(40))];
        let outcome = review(
            &*governor, &twin_type, &state, &command, changes, false, now,
        );
        assert_eq!(outcome.value("strokes"), Value::Int(24));
    }

    #[test]
    fn config_errors_name_the_component() {
        let zero = build_error(&SPEED_RATE.replace("max_per_sec = 100", "max_per_sec = 0"));
        assert!(
            zero.to_string()
                .contains("rate_limit `rate_limit`: `max_per_sec` must be a number above 0, not 0"),
            "{zero}"
        );
        let step = build_error(&format!("{SPEED_RATE}max_step = -5\n"));
        assert!(
            step.to_string()
                .contains("`max_step` must be a number above 0"),
            "{step}"
        );
        let missing =
            build_error("[[types.press.governors]]\nkind = \"rate_limit\"\ndesired = \"speed\"\n");
        assert!(
            missing.to_string().contains("missing field `max_per_sec`"),
            "{missing}"
        );
        let unknown = build_error(&SPEED_RATE.replace("\"speed\"", "\"torque\""));
        assert!(
            unknown
                .to_string()
                .contains("has no desired value `torque`"),
            "{unknown}"
        );
    }
}
