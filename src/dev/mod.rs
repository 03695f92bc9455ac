//! `doppel dev`: a zero-setup simulated plant.
//!
//! [`config`] holds the plant's twin types and topology, scaled to the simulation
//! speed; [`sim`] the physics that feeds the twins realistic signals and faults;
//! [`view`] the refreshing terminal view of the running plant.

pub mod config;
pub mod sim;
pub mod view;

/// The simulated plant through the real standard models and governors: the faults show
/// up as the alarms and the trip they are designed to cause, and nothing else does.
#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use doppel::kernel::config::SetSource;
    use doppel::kernel::twin::Trip;
    use doppel::kernel::{
        Alarm, AssetPath, Components, Governor, Model, ModelOutput, Quality, Sample, SourceId,
        Timestamp, Topology, TwinState, TwinType, TwinTypes, TwinView,
    };

    use super::config::{dev_plant_toml, dev_types_toml};
    use super::sim::Simulator;

    const DT: f64 = 0.1;

    /// One twin, run synchronously the way the twin actor runs it.
    struct Twin {
        twin_type: Arc<TwinType>,
        state: TwinState,
        models: Vec<Box<dyn Model>>,
        governors: Vec<Box<dyn Governor>>,
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
        for machine in topology.machines() {
            let twin_type = types.get(&machine.twin_type).unwrap().clone();
            machines.push((machine.path.to_string(), machine.twin_type.clone()));
            twins.push(Twin {
                state: TwinState::new(
                    AssetPath::parse(&machine.path.to_string()).unwrap(),
                    &twin_type,
                    64,
                ),
                models: components.build_models(&twin_type).unwrap(),
                governors: components.build_governors(&twin_type).unwrap(),
                twin_type,
                raised: Vec::new(),
                tripped_at: None,
            });
        }
        (machines, twins)
    }

    impl Twin {
        /// Applies one reading: models observe it, governors watch it. Returns the desired
        /// values a safety action set, for the simulator to follow.
        fn ingest(
            &mut self,
            channel: &str,
            value: f64,
            at: Timestamp,
            seq: u64,
            secs: f64,
        ) -> Vec<(String, f64)> {
            let sample = Sample {
                channel: self.twin_type.channel(channel).unwrap(),
                value,
                source_time: at,
                receive_time: at,
                quality: Quality::Good,
                source: SourceId(1),
                epoch: 0,
                seq,
                stamped: true,
            };
            self.state.apply_sample(&sample);
            let mut output = ModelOutput::default();
            for model in &mut self.models {
                output.reset();
                model.observe(
                    &sample,
                    &TwinView {
                        twin_type: &self.twin_type,
                        state: &self.state,
                    },
                    &mut output,
                );
                for (code, severity, message) in output.raised() {
                    self.raised.push((secs, code.clone()));
                    self.state.raise_alarm(Alarm {
                        code: code.clone(),
                        severity: *severity,
                        message: message.clone(),
                        raised_by: model.name().to_string(),
                        since: at,
                    });
                }
                for code in output.cleared() {
                    self.state.clear_alarm(code);
                }
            }
            let mut actions = Vec::new();
            for governor in &mut self.governors {
                let view = TwinView {
                    twin_type: &self.twin_type,
                    state: &self.state,
                };
                let Some(demand) = governor.watch(&sample, &view) else {
                    continue;
                };
                let command = &self.twin_type.commands[&demand.command];
                for (name, source) in &command.sets {
                    let SetSource::Const(value) = source else {
                        continue;
                    };
                    let (index, _) = self.twin_type.desired(name).unwrap();
                    self.state.desired[index].value = *value;
                    self.state.desired[index].set_at = at;
                    actions.push((name.clone(), value.as_f64()));
                }
                if demand.latch {
                    self.state.trips.push(Trip {
                        governor: governor.name().to_string(),
                        reason: demand.reason.clone(),
                        at,
                    });
                    self.tripped_at.get_or_insert(secs);
                }
            }
            actions
        }
    }

    /// Runs the plant for `seconds` real seconds at `speed`, the twins' safety actions
    /// fed back into the simulator.
    fn run(seed: u64, speed: f64, seconds: f64) -> (Vec<(String, String)>, Vec<Twin>) {
        let (machines, mut twins) = twins(speed);
        let mut simulator = Simulator::new(&machines, seed, speed);
        let start = Timestamp::now();
        let mut seq = 0;
        for step in 1..=(seconds / DT).round() as usize {
            let secs = step as f64 * DT;
            let at = Timestamp(start.as_micros() + (secs * 1e6) as i64);
            let mut readings = Vec::new();
            simulator.step(DT, &mut |machine, channel, value| {
                readings.push((machine, channel, value))
            });
            for (machine, channel, value) in readings {
                seq += 1;
                for (name, value) in twins[machine].ingest(channel, value, at, seq, secs) {
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
            let temperature = hot
                .state
                .value(hot.twin_type.channel("temperature").unwrap())
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
