//! `envelope`: keeps a desired value inside an operating envelope.
//!
//! ```toml
//! [[types.press.governors]]
//! kind = "envelope"
//! desired = "speed"
//! min = 200.0       # at least one of min and max
//! max = 2400.0
//! mode = "clamp"    # or "deny"; default "clamp"
//! ```

use doppel_runtime::{
    ComponentSpec, ConfigError, Governor, Proposal, Review, TwinType, TwinView, Value, ValueKind,
};
use serde::Deserialize;

use super::{finite, numeric_desired, quantity};

/// What an envelope does with a value outside it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum EnvelopeMode {
    /// Replace the value with the nearest bound.
    #[default]
    Clamp,
    /// Refuse the command.
    Deny,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct EnvelopeConfig {
    desired: String,
    min: Option<f64>,
    max: Option<f64>,
    #[serde(default)]
    mode: EnvelopeMode,
}

/// Keeps desired value `desired` inside `[min, max]`, clamping to the nearest bound or
/// denying the command.
///
/// A value that is not a finite number is always denied: there is no bound to clamp it
/// to that would mean what the requester meant.
#[derive(Debug, Clone)]
pub struct EnvelopeGovernor {
    name: String,
    desired: String,
    unit: String,
    min: Option<f64>,
    max: Option<f64>,
    mode: EnvelopeMode,
}

impl EnvelopeGovernor {
    /// The kind name used in configuration.
    pub const KIND: &'static str = "envelope";

    /// Builds the governor from its declaration, checked against `twin_type`.
    pub fn from_spec(spec: &ComponentSpec, twin_type: &TwinType) -> Result<Self, ConfigError> {
        let config: EnvelopeConfig = spec.params()?;
        let desired = numeric_desired(spec, twin_type, &config.desired)?;
        let min = config.min.map(|min| finite(spec, "min", min)).transpose()?;
        let max = config.max.map(|max| finite(spec, "max", max)).transpose()?;
        match (min, max) {
            (None, None) => return Err(spec.error("set `min`, `max` or both")),
            (Some(min), Some(max)) if min > max => {
                return Err(spec.error(format!("`min` {min} is above `max` {max}")));
            }
            _ => {}
        }
        Ok(Self {
            name: spec.name.clone(),
            desired: config.desired,
            unit: desired.unit.clone(),
            min,
            max,
            mode: config.mode,
        })
    }

    /// The bound a value violates, with a reason; `None` inside the envelope.
    fn violation(&self, value: f64) -> Option<(f64, String)> {
        let shown = quantity(value, &self.unit);
        if let Some(max) = self.max
            && value > max
        {
            let reason = format!(
                "{} {shown} above envelope max {}",
                self.desired,
                quantity(max, &self.unit)
            );
            return Some((max, reason));
        }
        if let Some(min) = self.min
            && value < min
        {
            let reason = format!(
                "{} {shown} below envelope min {}",
                self.desired,
                quantity(min, &self.unit)
            );
            return Some((min, reason));
        }
        None
    }
}

impl Governor for EnvelopeGovernor {
    fn name(&self) -> &str {
        &self.name
    }

    fn review(&self, proposal: &mut Proposal<'_>, _twin: &TwinView<'_>) -> Review {
        let Some(change) = proposal.change(&self.desired) else {
            return Review::Allow;
        };
        let kind = change.value.kind();
        let value = change.value.as_f64();
        if !value.is_finite() {
            return Review::Deny(format!("{} {value} is not a finite number", self.desired));
        }
        let Some((bound, reason)) = self.violation(value) else {
            return Review::Allow;
        };
        match self.mode {
            EnvelopeMode::Deny => Review::Deny(reason),
            EnvelopeMode::Clamp => {
                // An integer must land inside the envelope, not be rounded past a
                // fractional bound.
                let inside = match (kind, Some(bound) == self.max) {
                    (ValueKind::Int, true) => bound.floor(),
                    (ValueKind::Int, false) => bound.ceil(),
                    _ => bound,
                };
                let desired = self.desired.clone();
                proposal.clamp(&desired, Value::from_f64(kind, inside), reason);
                Review::Allow
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use doppel_runtime::{Command, Origin, Timestamp};

    use super::*;
    use crate::governor::testing::{
        build_error, build_one, change, path, review, set_speed, state,
    };

    const SPEED_ENVELOPE: &str = r#"
[[types.press.governors]]
kind = "envelope"
name = "speed_envelope"
desired = "speed"
min = 200.0
max = 2400
"#;

    #[test]
    fn clamps_a_value_above_max_to_max() {
        let (twin_type, governor) = build_one(SPEED_ENVELOPE);
        let state = state(&twin_type);
        let command = set_speed(3200.0);
        let changes = vec![change(&twin_type, "speed", Value::Float(3200.0))];
        let outcome = review(
            &*governor,
            &twin_type,
            &state,
            &command,
            changes,
            false,
            Timestamp::now(),
        );

        assert_eq!(outcome.review, Review::Allow);
        assert_eq!(outcome.value("speed"), Value::Float(2400.0));
        assert_eq!(outcome.clamps.len(), 1);
        assert_eq!(outcome.clamps[0].requested, Value::Float(3200.0));
        assert_eq!(outcome.clamps[0].applied, Value::Float(2400.0));
        assert_eq!(
            outcome.clamps[0].reason,
            "speed 3200 rpm above envelope max 2400 rpm"
        );
    }

    #[test]
    fn clamps_a_value_below_min_to_min() {
        let (twin_type, governor) = build_one(SPEED_ENVELOPE);
        let state = state(&twin_type);
        let command = set_speed(50.0);
        let changes = vec![change(&twin_type, "speed", Value::Float(50.0))];
        let outcome = review(
            &*governor,
            &twin_type,
            &state,
            &command,
            changes,
            false,
            Timestamp::now(),
        );

        assert_eq!(outcome.review, Review::Allow);
        assert_eq!(outcome.value("speed"), Value::Float(200.0));
        assert_eq!(
            outcome.clamps[0].reason,
            "speed 50 rpm below envelope min 200 rpm"
        );
    }

    #[test]
    fn accepts_a_value_inside_and_commands_that_do_not_write_it() {
        let (twin_type, governor) = build_one(SPEED_ENVELOPE);
        let state = state(&twin_type);
        let command = set_speed(2400.0);
        let changes = vec![change(&twin_type, "speed", Value::Float(2400.0))];
        let outcome = review(
            &*governor,
            &twin_type,
            &state,
            &command,
            changes,
            false,
            Timestamp::now(),
        );
        assert_eq!(outcome.review, Review::Allow);
        assert!(outcome.clamps.is_empty());

        let stop = Command::new(path(), "stop", Origin::operator("ann"));
        let changes = vec![change(&twin_type, "running", Value::Bool(false))];
        let outcome = review(
            &*governor,
            &twin_type,
            &state,
            &stop,
            changes,
            false,
            Timestamp::now(),
        );
        assert_eq!(outcome.review, Review::Allow);
        assert!(outcome.clamps.is_empty());
    }

    #[test]
    fn deny_mode_refuses_instead_of_clamping() {
        let (twin_type, governor) = build_one(&format!("{SPEED_ENVELOPE}mode = \"deny\"\n"));
        let state = state(&twin_type);
        let command = set_speed(3200.0);
        let changes = vec![change(&twin_type, "speed", Value::Float(3200.0))];
        let outcome = review(
            &*governor,
            &twin_type,
            &state,
            &command,
            changes,
            false,
            Timestamp::now(),
        );

        assert_eq!(
            outcome.denied(),
            "speed 3200 rpm above envelope max 2400 rpm"
        );
        assert_eq!(outcome.value("speed"), Value::Float(3200.0));
        assert!(outcome.clamps.is_empty());
    }

    #[test]
    fn integer_values_stay_integers_inside_fractional_bounds() {
        let (twin_type, governor) = build_one(
            r#"
[[types.press.governors]]
kind = "envelope"
desired = "strokes"
max = 40.5
"#,
        );
        let state = state(&twin_type);
        let command = Command::new(path(), "set_strokes", Origin::operator("ann"))
            .param("per_min", Value::Int(55));
        let changes = vec![change(&twin_type, "strokes", Value::Int(55))];
        let outcome = review(
            &*governor,
            &twin_type,
            &state,
            &command,
            changes,
            false,
            Timestamp::now(),
        );

        assert_eq!(outcome.value("strokes"), Value::Int(40));
        assert_eq!(
            outcome.clamps[0].reason,
            "strokes 55 1/min above envelope max 40.5 1/min"
        );
    }

    #[test]
    fn non_finite_values_are_denied() {
        let (twin_type, governor) = build_one(SPEED_ENVELOPE);
        let state = state(&twin_type);
        let command = set_speed(f64::NAN);
        let changes = vec![change(&twin_type, "speed", Value::Float(f64::NAN))];
        let outcome = review(
            &*governor,
            &twin_type,
            &state,
            &command,
            changes,
            false,
            Timestamp::now(),
        );
        assert_eq!(outcome.denied(), "speed NaN is not a finite number");
    }

    #[test]
    fn config_errors_name_the_component() {
        let unknown =
            build_error(&SPEED_ENVELOPE.replace("desired = \"speed\"", "desired = \"sped\""));
        assert!(
            unknown
                .to_string()
                .contains("envelope `speed_envelope`: type `press` has no desired value `sped`"),
            "{unknown}"
        );
        assert_eq!(unknown.origin, "types.toml (type `press`)");
        assert!(unknown.line.is_some());

        let no_bounds =
            build_error("[[types.press.governors]]\nkind = \"envelope\"\ndesired = \"speed\"\n");
        assert!(
            no_bounds
                .to_string()
                .ends_with("envelope `envelope`: set `min`, `max` or both"),
            "{no_bounds}"
        );

        let inverted = build_error(&SPEED_ENVELOPE.replace("min = 200.0", "min = 2500.0"));
        assert!(
            inverted
                .to_string()
                .contains("`min` 2500 is above `max` 2400"),
            "{inverted}"
        );

        let boolean = build_error(
            "[[types.press.governors]]\nkind = \"envelope\"\ndesired = \"running\"\nmax = 1\n",
        );
        assert!(
            boolean
                .to_string()
                .contains("desired value `running` is a bool, not a number"),
            "{boolean}"
        );

        let typo = build_error(&format!("{SPEED_ENVELOPE}mdoe = \"deny\"\n"));
        assert!(
            typo.to_string()
                .contains("envelope `speed_envelope`: unknown field `mdoe`"),
            "{typo}"
        );

        let bad_mode = build_error(&format!("{SPEED_ENVELOPE}mode = \"warn\"\n"));
        assert!(
            bad_mode.to_string().contains("unknown variant `warn`"),
            "{bad_mode}"
        );
    }
}
