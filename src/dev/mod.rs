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
}
