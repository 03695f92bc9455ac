//! Standard governors: the safety rules a twin type declares under `[[types.<t>.governors]]`.
//!
//! | kind         | what it does                                                          |
//! |--------------|-----------------------------------------------------------------------|
//! | `envelope`   | keeps a desired value inside `[min, max]` (clamp or deny)             |
//! | `rate_limit` | limits how fast a desired value may change                            |
//! | `dual_sensor`| lets automatic changes through only while two sensors agree           |
//! | `trip`       | trips the machine when a channel crosses a limit; blocks restarts     |
//! | `deadline`   | refuses commands whose deadline passed or that are too old            |
//!
//! Every kind reads its parameters with [`ComponentSpec::params`] and checks them against
//! the twin type when the type is loaded, so a typo fails at startup, not at the first
//! command.

mod deadline;
mod dual_sensor;
mod envelope;
mod rate_limit;
mod trip;

#[cfg(test)]
mod testing;

use doppel_runtime::config::{ChannelSpec, DesiredSpec};
use doppel_runtime::{ChannelId, ComponentSpec, Components, ConfigError, TwinType, ValueKind};

pub use deadline::DeadlineGovernor;
pub use dual_sensor::DualSensorGovernor;
pub use envelope::EnvelopeGovernor;
pub use rate_limit::RateLimitGovernor;
pub use trip::TripGovernor;

/// Registers every standard governor kind.
pub fn register(components: &mut Components) {
    components
        .governor(EnvelopeGovernor::KIND, |spec, twin_type| {
            Ok(Box::new(EnvelopeGovernor::from_spec(spec, twin_type)?))
        })
        .governor(RateLimitGovernor::KIND, |spec, twin_type| {
            Ok(Box::new(RateLimitGovernor::from_spec(spec, twin_type)?))
        })
        .governor(DualSensorGovernor::KIND, |spec, twin_type| {
            Ok(Box::new(DualSensorGovernor::from_spec(spec, twin_type)?))
        })
        .governor(TripGovernor::KIND, |spec, twin_type| {
            Ok(Box::new(TripGovernor::from_spec(spec, twin_type)?))
        })
        .governor(DeadlineGovernor::KIND, |spec, twin_type| {
            Ok(Box::new(DeadlineGovernor::from_spec(spec, twin_type)?))
        });
}

/// Looks up a numeric (float or integer) desired value the component refers to.
fn numeric_desired<'a>(
    spec: &ComponentSpec,
    twin_type: &'a TwinType,
    name: &str,
) -> Result<&'a DesiredSpec, ConfigError> {
    let desired = existing_desired(spec, twin_type, name)?;
    if desired.kind == ValueKind::Bool {
        return Err(spec.error(format!("desired value `{name}` is a bool, not a number")));
    }
    Ok(desired)
}

/// Looks up a desired value the component refers to.
fn existing_desired<'a>(
    spec: &ComponentSpec,
    twin_type: &'a TwinType,
    name: &str,
) -> Result<&'a DesiredSpec, ConfigError> {
    twin_type
        .desired(name)
        .map(|(_, desired)| desired)
        .ok_or_else(|| {
            spec.error(format!(
                "type `{}` has no desired value `{name}`",
                twin_type.name
            ))
        })
}

/// Looks up a channel the component refers to.
fn existing_channel<'a>(
    spec: &ComponentSpec,
    twin_type: &'a TwinType,
    name: &str,
) -> Result<(ChannelId, &'a ChannelSpec), ConfigError> {
    twin_type
        .channel(name)
        .and_then(|id| Some((id, twin_type.channel_spec(id)?)))
        .ok_or_else(|| spec.error(format!("type `{}` has no channel `{name}`", twin_type.name)))
}

/// Checks that a parameter is a finite number.
fn finite(spec: &ComponentSpec, param: &str, value: f64) -> Result<f64, ConfigError> {
    if !value.is_finite() {
        return Err(spec.error(format!("`{param}` must be a finite number")));
    }
    Ok(value)
}

/// Checks that a parameter is a finite number above zero.
fn positive(spec: &ComponentSpec, param: &str, value: f64) -> Result<f64, ConfigError> {
    if !(value.is_finite() && value > 0.0) {
        return Err(spec.error(format!("`{param}` must be a number above 0, not {value}")));
    }
    Ok(value)
}

/// Checks that a parameter is a finite number, zero or above.
fn non_negative(spec: &ComponentSpec, param: &str, value: f64) -> Result<f64, ConfigError> {
    if !(value.is_finite() && value >= 0.0) {
        return Err(spec.error(format!(
            "`{param}` must be a number, 0 or above, not {value}"
        )));
    }
    Ok(value)
}

/// Formats a number for a reason: without float noise (`0.30000000000000004`) or
/// trailing zeros.
fn number(value: f64) -> String {
    if !value.is_finite() || value.abs() >= 1e12 {
        return format!("{value}");
    }
    let rounded = (value * 1e6).round() / 1e6;
    // Avoid "-0".
    let rounded = if rounded == 0.0 { 0.0 } else { rounded };
    format!("{rounded}")
}

/// Formats a number with its unit (`3200 rpm`), or bare when the unit is empty.
fn quantity(value: f64, unit: &str) -> String {
    if unit.is_empty() {
        number(value)
    } else {
        format!("{} {unit}", number(value))
    }
}

/// A reading shown beside a limit: four significant digits with its unit, or every
/// digit when four would read as the limit itself (`95.004` against `95`).
fn reading_against(value: f64, limit: f64, unit: &str) -> String {
    let shown = crate::model::measured(value, unit);
    if shown == quantity(limit, unit) {
        quantity(value, unit)
    } else {
        shown
    }
}

/// Formats a duration in seconds (`1.2 s`), to the millisecond.
fn seconds(secs: f64) -> String {
    let rounded = (secs * 1e3).round() / 1e3;
    format!("{} s", number(rounded))
}

#[cfg(test)]
mod tests {

    #[test]
    fn readings_beside_a_limit_show_four_digits_unless_that_reads_as_the_limit() {
        assert_eq!(
            super::reading_against(95.230272, 95.0, "degC"),
            "95.23 degC"
        );
        assert_eq!(
            super::reading_against(95.0004, 95.0, "degC"),
            "95.0004 degC"
        );
    }

    use super::*;

    #[test]
    fn numbers_read_cleanly() {
        assert_eq!(number(3200.0), "3200");
        assert_eq!(number(0.1 + 0.2), "0.3");
        assert_eq!(number(-0.0000001), "0");
        assert_eq!(quantity(121.3, "degC"), "121.3 degC");
        assert_eq!(quantity(5.0, ""), "5");
        assert_eq!(seconds(1.2004), "1.2 s");
    }

    #[test]
    fn registers_every_kind() {
        let governors = testing::build(
            r#"
            [[types.press.governors]]
            kind = "envelope"
            desired = "speed"
            max = 2400.0

            [[types.press.governors]]
            kind = "rate_limit"
            desired = "speed"
            max_per_sec = 100.0

            [[types.press.governors]]
            kind = "dual_sensor"
            primary = "temperature"
            secondary = "temperature_b"
            tolerance = 2.0

            [[types.press.governors]]
            kind = "trip"
            channel = "temperature"
            above = 120.0

            [[types.press.governors]]
            kind = "deadline"
            "#,
        )
        .1;
        let names: Vec<&str> = governors.iter().map(|g| g.name()).collect();
        assert_eq!(
            names,
            ["envelope", "rate_limit", "dual_sensor", "trip", "deadline"]
        );
    }

    #[test]
    fn unknown_kind_lists_the_standard_ones() {
        let error = testing::build_error(
            r#"
            [[types.press.governors]]
            kind = "envelop"
            desired = "speed"
            "#,
        );
        let message = error.to_string();
        assert!(message.contains("envelop `envelop`"), "{message}");
        assert!(
            message.contains("deadline, dual_sensor, envelope, rate_limit, trip"),
            "{message}"
        );
    }
}
