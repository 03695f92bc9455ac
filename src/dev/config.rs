//! The twin types and topology of the `doppel dev` plant, embedded in the binary.
//!
//! Timestamps stay real wall-clock time while the simulated physics runs `speed` times
//! faster, so every time-based parameter of the twin types is scaled: a time constant
//! of 300 simulated seconds becomes `300 / speed` real seconds, a rate of 10 rpm per
//! simulated second becomes `10 * speed` rpm per real second.

/// The twin types, with `{{NAME}}` placeholders for the speed-scaled parameters.
const TYPES_TEMPLATE: &str = include_str!("types.toml");

/// The plant topology.
const PLANT: &str = include_str!("plant.toml");

/// A second version of the presses' degradation model, with the same placeholders.
const DEGRADATION_PACKAGE_TEMPLATE: &str = include_str!("degradation-1.1.0.toml");

/// Thermal time constant of a press, in simulated seconds.
const TAU_PRESS_SIM_SECS: f64 = 300.0;
/// Thermal time constant of a pump motor, in simulated seconds.
const TAU_PUMP_SIM_SECS: f64 = 240.0;
/// Remaining useful life below which the degradation model warns, in simulated hours.
const RUL_WARN_SIM_HOURS: f64 = 2.0;
/// Remaining useful life below which the degradation model goes critical, in simulated
/// hours.
const RUL_CRITICAL_SIM_HOURS: f64 = 0.5;
/// History the degradation model fits its trend over, in simulated seconds.
const RUL_WINDOW_SIM_SECS: f64 = 1200.0;
/// Shortest real window: it must hold the model's `min_points` (40) readings at the
/// simulator's 10 readings per second even at high speeds.
const RUL_WINDOW_MIN_REAL_SECS: f64 = 6.0;
/// How far a recommendation projects, in simulated seconds.
const RECOMMEND_HORIZON_SIM_SECS: f64 = 600.0;
/// Fastest allowed speed change, in rpm per simulated second.
const SPEED_RATE_SIM_RPM_PER_SEC: f64 = 10.0;

/// The twin types of the dev plant for a simulation running `speed` times faster than
/// real time. A speed that is not a positive finite number is taken as 1 (real time).
pub fn dev_types_toml(speed: f64) -> String {
    fill(TYPES_TEMPLATE, speed)
}

/// The model package the dev plant ships beside its types (degradation 1.1.0), unsigned,
/// for a simulation running `speed` times faster than real time.
pub fn dev_model_package(speed: f64) -> String {
    fill(DEGRADATION_PACKAGE_TEMPLATE, speed)
}

/// `template` with its `{{NAME}}` placeholders filled for `speed` (not a positive finite
/// number: 1, real time).
fn fill(template: &str, speed: f64) -> String {
    let speed = if speed.is_finite() && speed > 0.0 {
        speed
    } else {
        1.0
    };
    let window = (RUL_WINDOW_SIM_SECS / speed).max(RUL_WINDOW_MIN_REAL_SECS);
    let substitutions = [
        ("{{TAU_PRESS}}", TAU_PRESS_SIM_SECS / speed),
        ("{{TAU_PUMP}}", TAU_PUMP_SIM_SECS / speed),
        ("{{RUL_WARN_HOURS}}", RUL_WARN_SIM_HOURS / speed),
        ("{{RUL_CRITICAL_HOURS}}", RUL_CRITICAL_SIM_HOURS / speed),
        ("{{RUL_WINDOW_SECS}}", window),
        ("{{RUL_WINDOW_2X_SECS}}", 2.0 * window),
        (
            "{{RECOMMEND_HORIZON_SECS}}",
            (RECOMMEND_HORIZON_SIM_SECS / speed).max(1.0),
        ),
        ("{{SPEED_RATE_PER_SEC}}", SPEED_RATE_SIM_RPM_PER_SEC * speed),
    ];
    let mut text = template.to_string();
    for (placeholder, value) in substitutions {
        // `{:?}` always writes a TOML float (`5.0`, `0.000556`, `1e-5`), never an integer.
        text = text.replace(placeholder, &format!("{value:?}"));
    }
    debug_assert!(
        !text.contains("{{"),
        "a dev template has a placeholder config.rs does not fill"
    );
    text
}

/// The topology of the dev plant: `acme/plant-a`, two lines of five machines.
pub fn dev_plant_toml() -> &'static str {
    PLANT
}

#[cfg(test)]
mod tests {
    use doppel::kernel::{Topology, TwinTypes};

    use super::*;

    #[test]
    fn types_and_plant_parse_at_every_speed() {
        for speed in [1.0, 60.0, 600.0, 3600.0] {
            let source = dev_types_toml(speed);
            assert!(
                !source.contains("{{"),
                "unfilled placeholder at speed {speed}"
            );
            let types = TwinTypes::from_toml(&source, "dev types.toml").unwrap();
            assert_eq!(types.len(), 2);
            let topology = Topology::from_toml(dev_plant_toml(), "dev plant.toml", &types).unwrap();
            let paths: Vec<String> = topology.machines().map(|m| m.path.to_string()).collect();
            assert_eq!(paths.len(), 10);
            assert_eq!(paths[0], "acme/plant-a/line-1/press-1");
            assert_eq!(paths[9], "acme/plant-a/line-2/pump-4");
        }
    }

    #[test]
    fn the_model_package_builds_for_the_presses_at_every_speed() {
        use doppel::kernel::model::deploy::build_packaged;
        use doppel::kernel::model::package::{PackageFile, Signer, Trust};

        let builder = doppel::Runtime::builder();
        for speed in [1.0, 60.0, 600.0, 3600.0] {
            let file = PackageFile::parse(&dev_model_package(speed)).unwrap();
            let trust = Trust {
                keys: Vec::new(),
                allow_unsigned: true,
            };
            assert_eq!(file.verify(&trust).unwrap(), Signer::Unsigned);
            let package = file.package();
            assert_eq!(
                (package.kind.as_str(), package.version.as_str()),
                ("degradation", "1.1.0")
            );
            let window = package.params["window"].as_float().unwrap();
            let types = TwinTypes::from_toml(&dev_types_toml(speed), "dev types.toml").unwrap();
            let press = types.get("press").unwrap();
            let spec = press
                .models
                .iter()
                .find(|m| m.kind == "degradation")
                .unwrap();
            assert_eq!(window, 2.0 * spec.params["window"].as_float().unwrap());
            build_packaged(builder.components(), press, &spec.name, package).unwrap();
        }
    }

    #[test]
    fn time_parameters_scale_with_speed() {
        let types = TwinTypes::from_toml(&dev_types_toml(60.0), "dev types.toml").unwrap();
        let press = types.get("press").unwrap();
        let param = |kind: &str, name: &str| {
            let spec = press
                .models
                .iter()
                .chain(&press.governors)
                .find(|c| c.kind == kind)
                .unwrap();
            spec.params[name].as_float().unwrap()
        };
        assert!((param("thermal", "tau_secs") - 5.0).abs() < 1e-9);
        assert!((param("degradation", "warn_hours") - 2.0 / 60.0).abs() < 1e-12);
        assert!((param("degradation", "critical_hours") - 0.5 / 60.0).abs() < 1e-12);
        assert!((param("degradation", "window") - 20.0).abs() < 1e-9);
        assert!((param("rate_limit", "max_per_sec") - 600.0).abs() < 1e-9);
        assert!(press.commands["reset"].clears_trips);

        let fast = TwinTypes::from_toml(&dev_types_toml(600.0), "dev types.toml").unwrap();
        let degradation = fast
            .get("pump")
            .unwrap()
            .models
            .iter()
            .find(|c| c.kind == "degradation")
            .unwrap();
        assert_eq!(
            degradation.params["window"].as_float(),
            Some(6.0),
            "the window holds min_points"
        );

        let real_time = TwinTypes::from_toml(&dev_types_toml(f64::NAN), "dev types.toml").unwrap();
        let thermal = real_time
            .get("press")
            .unwrap()
            .models
            .iter()
            .find(|c| c.kind == "thermal")
            .unwrap();
        assert_eq!(thermal.params["tau_secs"].as_float(), Some(300.0));
    }
}
