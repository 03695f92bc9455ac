//! `doppel dev`: a zero-setup simulated plant.
//!
//! [`config`] holds the plant's twin types and topology, scaled to the simulation
//! speed; [`sim`] the physics that feeds the twins realistic signals and faults;
//! [`view`] the refreshing terminal view of the running plant.

pub mod config;
pub mod sim;
pub mod view;

/// The simulated plant through the real twin core, with the standard models and
/// governors: the faults show up as the alarms and the trip they are designed to
/// cause, and nothing else does.
#[cfg(test)]
mod tests {
    use doppel::kernel::internal::{Effects, TwinCore};
    use doppel::kernel::twin::TwinChange;
    use doppel::kernel::{
        AssetPath, Components, Quality, Sample, SourceId, Timestamp, Topology, TwinTypes,
    };

    use super::config::{dev_plant_toml, dev_types_toml};
    use super::sim::Simulator;

    const DT: f64 = 0.1;

    /// One twin's core, run synchronously the way its actor runs it.
    struct Twin {
        core: TwinCore,
        /// The last sequence number fed.
        seq: u64,
        /// (seconds since start, alarm code) of every alarm raised.
        raised: Vec<(f64, String)>,
        /// Seconds since start of the trip, if one latched.
        tripped_at: Option<f64>,
    }

    fn twins(speed: f64) -> (Vec<(String, String)>, Vec<Twin>) {
        let types = TwinTypes::from_toml(&dev_types_toml(speed), "dev types.toml").unwrap();
        let topology = Topology::from_toml(dev_plant_toml(), "dev plant.toml", &types).unwrap();
        let mut components = Components::new();
        doppel::model::register(&mut components);
        doppel::governor::register(&mut components);
        let mut machines = Vec::new();
        let mut twins = Vec::new();
        for (id, machine) in topology.machines().enumerate() {
            let twin_type = types.get(&machine.twin_type).unwrap().clone();
            machines.push((machine.path.to_string(), machine.twin_type.clone()));
            let core = TwinCore::new(
                id as u32,
                AssetPath::parse(&machine.path.to_string()).unwrap(),
                twin_type.clone(),
                components.build_models(&twin_type).unwrap(),
                components.build_governors(&twin_type).unwrap(),
                64,
            );
            twins.push(Twin {
                core,
                seq: 0,
                raised: Vec::new(),
                tripped_at: None,
            });
        }
        (machines, twins)
    }

    impl Twin {
        /// Applies one reading through the core: models observe it, governors watch
        /// it, safety actions execute. Returns the desired values a safety action set,
        /// for the simulator to follow as the machine would.
        fn ingest(
            &mut self,
            channel: &str,
            value: f64,
            at: Timestamp,
            secs: f64,
        ) -> Vec<(String, f64)> {
            self.seq += 1;
            let sample = Sample {
                channel: self.core.twin_type().channel(channel).unwrap(),
                value,
                source_time: at,
                receive_time: at,
                quality: Quality::Good,
                source: SourceId(1),
                epoch: 0,
                seq: self.seq,
                stamped: true,
            };
            let mut fx = Effects {
                collect_changes: true,
                ..Effects::default()
            };
            self.core.apply_sample(&sample, &mut fx);
            for event in &fx.changes {
                match &event.change {
                    TwinChange::AlarmRaised(alarm) => self.raised.push((secs, alarm.code.clone())),
                    TwinChange::Tripped(_) => {
                        self.tripped_at.get_or_insert(secs);
                    }
                    _ => {}
                }
            }
            fx.safety_actuations
                .iter()
                .flat_map(|actuation| actuation.values())
                .map(|(name, value)| (name.clone(), value.as_f64()))
                .collect()
        }
    }

    /// Runs the plant for `seconds` real seconds at `speed`, the twins' safety actions
    /// fed back into the simulator.
    fn run(seed: u64, speed: f64, seconds: f64) -> (Vec<(String, String)>, Vec<Twin>) {
        let (machines, mut twins) = twins(speed);
        let mut simulator = Simulator::new(&machines, seed, speed);
        let start = Timestamp::now();
        for step in 1..=(seconds / DT).round() as usize {
            let secs = step as f64 * DT;
            let at = Timestamp(start.as_micros() + (secs * 1e6) as i64);
            let mut readings = Vec::new();
            simulator.step(DT, &mut |machine, channel, value| {
                readings.push((machine, channel, value))
            });
            for (machine, channel, value) in readings {
                for (name, value) in twins[machine].ingest(channel, value, at, secs) {
                    simulator.apply_desired(machine, &name, value);
                }
            }
        }
        (machines, twins)
    }

    fn first(twin: &Twin, code: &str) -> Option<f64> {
        twin.raised
            .iter()
            .find(|(_, c)| c == code)
            .map(|(secs, _)| *secs)
    }

    /// The faulty machines' twins, then whether every other twin stayed quiet.
    fn check(machines: &[(String, String)], twins: &[Twin]) -> (usize, usize) {
        let index = |path: &str| machines.iter().position(|(p, _)| p == path).unwrap();
        let (worn, hot) = (
            index("acme/plant-a/line-1/press-2"),
            index("acme/plant-a/line-2/press-4"),
        );
        for (machine, twin) in twins
            .iter()
            .enumerate()
            .filter(|(m, _)| *m != worn && *m != hot)
        {
            assert!(
                twin.raised.is_empty(),
                "{}: {:?}",
                machines[machine].0,
                twin.raised
            );
            assert_eq!(twin.tripped_at, None, "{}", machines[machine].0);
        }
        assert_eq!(twins[worn].tripped_at, None);
        (worn, hot)
    }

    #[test]
    fn faults_raise_their_alarms_and_trip_while_healthy_machines_stay_quiet() {
        for seed in [1, 2024] {
            let (machines, twins) = run(seed, 60.0, 30.0);
            let (worn, hot) = check(&machines, &twins);
            let (worn, hot) = (&twins[worn], &twins[hot]);

            let rul_low = first(worn, "rul_low").expect("the worn bearing raises rul_low");
            assert!(
                rul_low <= 8.0,
                "rul_low only at {rul_low} s: {:?}",
                worn.raised
            );

            let tripped = hot.tripped_at.expect("the coolant loss trips its machine");
            assert!(tripped <= 8.0, "tripped only at {tripped} s");
            let thermal =
                first(hot, "thermal:temperature").expect("the thermal model sees the coolant loss");
            assert!(
                thermal < tripped,
                "thermal warning at {thermal} s, trip at {tripped} s"
            );
            let state = hot.core.state();
            let temperature = state
                .value(hot.core.twin_type().channel("temperature").unwrap())
                .unwrap();
            assert!(
                temperature < 60.0,
                "still at {temperature} degC after the trip"
            );
        }
    }

    /// Slower and faster than the default, the same story plays out on a scaled clock.
    #[test]
    fn other_speeds_tell_the_same_story() {
        for (speed, seconds) in [(10.0, 60.0), (600.0, 10.0)] {
            let (machines, twins) = run(7, speed, seconds);
            let (worn, hot) = check(&machines, &twins);
            assert!(
                first(&twins[worn], "rul_low").is_some(),
                "speed {speed}: {:?}",
                twins[worn].raised
            );
            assert!(twins[hot].tripped_at.is_some(), "speed {speed}");
        }
    }

    /// Simulate's bounds against what the simulated plant then did. Measured on the
    /// dev plant at speed 1 (real physics) on a virtual clock of ten readings a second:
    /// after 15 minutes of warm-up, every running press is asked what a speed change
    /// to 1,500 rpm would do over the next 10 minutes (a point every 10 s), the change
    /// is made on twin and machine, and the plant runs on for those 10 minutes. A
    /// projected point counts as covered when the reading the machine sent at that
    /// instant lies within its bounds. Three seeds; temperature (thermal model) and
    /// vibration (degradation model over the anomaly model). The worn bearing's
    /// vibration grows faster than the straight line the degradation model fits, and
    /// most of the misses are its.
    #[test]
    fn projected_bounds_hold_nine_in_ten_realised_readings_over_ten_minutes() {
        use std::collections::HashMap;
        use std::time::Duration;

        use doppel::kernel::internal::Effects;
        use doppel::kernel::{Command, Origin, Value};

        const WARM_UP_SECS: f64 = 900.0;
        const HORIZON_SECS: f64 = 600.0;
        const STEP_SECS: f64 = 10.0;
        let speed = 1.0;
        let mut counts: HashMap<&str, (usize, usize)> = HashMap::new();
        for seed in [3, 11, 29] {
            let (machines, mut twins) = twins(speed);
            let mut simulator = Simulator::new(&machines, seed, speed);
            // Readings are stamped on a virtual clock that ends before now.
            let start =
                Timestamp::now().as_micros() - ((WARM_UP_SECS + HORIZON_SECS + 60.0) * 1e6) as i64;
            let mut step = 0usize;
            let mut advance = |twins: &mut Vec<Twin>, simulator: &mut Simulator| {
                step += 1;
                let secs = step as f64 * DT;
                let at = Timestamp(start + (secs * 1e6) as i64);
                let mut readings = Vec::new();
                simulator.step(DT, &mut |machine, channel, value| {
                    readings.push((machine, channel, value))
                });
                for &(machine, channel, value) in &readings {
                    for (name, value) in twins[machine].ingest(channel, value, at, secs) {
                        simulator.apply_desired(machine, &name, value);
                    }
                }
                (at, readings)
            };
            for _ in 0..(WARM_UP_SECS / DT).round() as usize {
                advance(&mut twins, &mut simulator);
            }
            let (now, _) = advance(&mut twins, &mut simulator);
            let mut asked = Vec::new();
            for (machine, (path, twin_type)) in machines.iter().enumerate() {
                let twin = &mut twins[machine];
                if twin_type != "press" || twin.tripped_at.is_some() {
                    continue;
                }
                let command = Command::new(
                    AssetPath::parse(path).unwrap(),
                    "set_speed",
                    Origin::operator("test"),
                )
                .param("rpm", Value::Float(1500.0));
                let horizon = Duration::from_secs_f64(HORIZON_SECS);
                let step = Duration::from_secs_f64(STEP_SECS);
                let what_if = twin.core.what_if(&command, horizon, step, now).unwrap();
                let mut fx = Effects::default();
                twin.core.command(&command, now, &mut fx).unwrap();
                simulator.apply_desired(machine, "speed", 1500.0);
                asked.push((machine, what_if.trajectory));
            }
            assert!(asked.len() >= 4, "running presses: {}", asked.len());
            let mut realised: HashMap<(usize, &str, i64), f64> = HashMap::new();
            for tick in 1..=(HORIZON_SECS / DT).round() as i64 {
                let (_, readings) = advance(&mut twins, &mut simulator);
                for (machine, channel, value) in readings {
                    realised.insert((machine, channel, tick), value);
                }
            }
            for (machine, trajectory) in &asked {
                for channel in ["temperature", "vibration"] {
                    for point in &trajectory.series[channel] {
                        let tick = (point.t / DT).round() as i64;
                        let (Some(lower), Some(upper), Some(value)) = (
                            point.lower,
                            point.upper,
                            realised.get(&(*machine, channel, tick)),
                        ) else {
                            continue;
                        };
                        let count = counts.entry(channel).or_default();
                        count.0 += usize::from((lower..=upper).contains(value));
                        count.1 += 1;
                    }
                }
            }
        }
        for (channel, (covered, points)) in &counts {
            let share = *covered as f64 / *points as f64;
            println!(
                "{channel}: {covered} of {points} realised readings within bounds ({:.1} %)",
                share * 100.0
            );
            assert!(*points >= 500, "{channel}: only {points} points had bounds");
            assert!(
                share >= 0.9,
                "{channel}: {covered} of {points} within bounds"
            );
        }
    }
}
