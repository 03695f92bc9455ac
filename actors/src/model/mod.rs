//! Standard models: the kinds a twin type declares under `[[types.<t>.models]]`.
//!
//! | kind           | what it does                                                        |
//! |----------------|---------------------------------------------------------------------|
//! | `ewma_anomaly` | scores each reading against the channel's moving mean and variance   |
//! | `degradation`  | fits the trend of a wear signal and estimates remaining useful life  |
//! | `thermal`      | runs a first-order thermal model and watches the measured residual   |
//!
//! What they share:
//!
//! - Parameters are read with [`ComponentSpec::params`] and checked against the twin type
//!   when the type is loaded, so a typo fails at startup, not at the first sample.
//! - A model only looks at samples of its own channel. Samples of `bad` quality and
//!   samples older than the last one it used (stale, kept in history only) are skipped
//!   without touching state or outputs.
//! - Time is the samples' source time, never the wall clock, so replaying the journal
//!   over restored state gives the same outputs.
//! - In the steady state `observe` does not allocate: buffers reach their working size
//!   within the first window and are reused, and alarms are raised and cleared only on
//!   transitions.
//! - Internal state is saved with `postcard`.

mod degradation;
mod ewma;
mod thermal;

#[cfg(test)]
mod testing;

use serde::Serialize;
use serde::de::DeserializeOwned;

use doppel_runtime::{ChannelId, ComponentSpec, Components, ConfigError, TwinType, ValueKind};

pub use degradation::Degradation;
pub use ewma::EwmaAnomaly;
pub use thermal::Thermal;

/// Registers every standard model kind.
pub fn register(components: &mut Components) {
    components
        .model(EwmaAnomaly::KIND, |spec, twin_type| {
            Ok(Box::new(EwmaAnomaly::from_spec(spec, twin_type)?))
        })
        .model(Degradation::KIND, |spec, twin_type| {
            Ok(Box::new(Degradation::from_spec(spec, twin_type)?))
        })
        .model(Thermal::KIND, |spec, twin_type| {
            Ok(Box::new(Thermal::from_spec(spec, twin_type)?))
        });
}

/// Looks up a channel the component refers to.
fn existing_channel(
    spec: &ComponentSpec,
    twin_type: &TwinType,
    name: &str,
) -> Result<ChannelId, ConfigError> {
    twin_type
        .channel(name)
        .ok_or_else(|| spec.error(format!("unknown channel `{name}`")))
}

/// Checks that a desired value the component refers to exists and is a number (float
/// or integer) when `numeric`, a bool otherwise.
fn existing_desired(
    spec: &ComponentSpec,
    twin_type: &TwinType,
    name: &str,
    numeric: bool,
) -> Result<(), ConfigError> {
    let Some((_, desired)) = twin_type.desired(name) else {
        return Err(spec.error(format!("unknown desired value `{name}`")));
    };
    match (numeric, desired.kind) {
        (true, ValueKind::Bool) => {
            Err(spec.error(format!("desired value `{name}` is a bool, not a number")))
        }
        (false, ValueKind::Float | ValueKind::Int) => {
            Err(spec.error(format!("desired value `{name}` is a number, not a bool")))
        }
        _ => Ok(()),
    }
}

/// Fails with `message` located at the component unless `condition` holds.
fn ensure(
    spec: &ComponentSpec,
    condition: bool,
    message: impl std::fmt::Display,
) -> Result<(), ConfigError> {
    if condition {
        Ok(())
    } else {
        Err(spec.error(message))
    }
}

/// Checks a derived value name: not empty, and not the name of a channel, so projected
/// series of channels and outputs never collide.
fn check_output_name(
    spec: &ComponentSpec,
    twin_type: &TwinType,
    name: &str,
) -> Result<(), ConfigError> {
    ensure(spec, !name.trim().is_empty(), "output name is empty")?;
    ensure(
        spec,
        twin_type.channel(name).is_none(),
        format_args!("output `{name}` has the name of a channel"),
    )
}

/// Encodes a model's internal state for a snapshot.
fn save_state<T: Serialize>(state: &T) -> Vec<u8> {
    // Plain structs of numbers, options and sequences always serialize.
    postcard::to_stdvec(state).expect("model state serializes")
}

/// Decodes state written by [`save_state`]; trailing bytes are an error.
fn restore_state<T: DeserializeOwned>(kind: &str, saved: &[u8]) -> Result<T, String> {
    let (state, rest) = postcard::take_from_bytes(saved)
        .map_err(|error| format!("cannot decode {kind} state: {error}"))?;
    if !rest.is_empty() {
        return Err(format!(
            "cannot decode {kind} state: {} trailing bytes",
            rest.len()
        ));
    }
    Ok(state)
}

/// A measured value for a message, with its unit (`1.373 mm/s`): four significant
/// digits, without float noise or trailing zeros.
pub(crate) fn measured(value: f64, unit: &str) -> String {
    const DIGITS: i32 = 4;
    let number = if !value.is_finite() {
        format!("{value}")
    } else if value == 0.0 {
        "0".to_string()
    } else {
        let magnitude = value.abs().log10().floor() as i32;
        let decimals = (DIGITS - 1 - magnitude).max(0) as usize;
        let text = format!("{value:.decimals$}");
        let text = if text.contains('.') {
            text.trim_end_matches('0').trim_end_matches('.').to_string()
        } else {
            text
        };
        if text == "-0" { "0".to_string() } else { text }
    };
    if unit.is_empty() {
        number
    } else {
        format!("{number} {unit}")
    }
}

/// Seconds to whole microseconds, saturating; callers pass checked, finite values.
fn secs_to_micros(secs: f64) -> i64 {
    (secs * 1e6).round() as i64
}

/// Microseconds to seconds.
fn micros_to_secs(micros: i64) -> f64 {
    micros as f64 / 1e6
}

#[cfg(test)]
mod tests {
    use super::measured;

    #[test]
    fn measured_values_read_with_four_significant_digits_and_their_unit() {
        assert_eq!(measured(1.3727379046092532, "mm/s"), "1.373 mm/s");
        assert_eq!(measured(0.1 + 0.2, "mm/s"), "0.3 mm/s");
        assert_eq!(measured(150.0, "degC"), "150 degC");
        assert_eq!(measured(130.26, "degC"), "130.3 degC");
        assert_eq!(measured(12345.6, "rpm"), "12346 rpm");
        assert_eq!(measured(0.000123456, ""), "0.0001235");
        assert_eq!(measured(-0.00001, "bar"), "-0.00001 bar");
        assert_eq!(measured(0.0, "bar"), "0 bar");
        assert_eq!(measured(f64::NAN, ""), "NaN");
    }
}
