//! Embedding Doppel in your own binary, with your own model and governor.
//!
//! Run it with `cargo run --example embed`. It starts a runtime on a temporary data
//! directory with one line of two pumps, feeds them readings, asks a what-if question,
//! sends commands through the governors and prints what happened.

use std::time::Duration;

use doppel::{
    AssetPath, Command, ComponentSpec, ConfigError, Governor, Model, ModelOutput, Origin, Proposal,
    Quality, Reading, Review, Runtime, Sample, Scenario, Timestamp, Topology, Trajectory, TwinType,
    TwinTypes, TwinView, Value,
};

/// A model of our own: specific energy, kWh per cubic metre pumped, from the power and
/// flow readings. It projects the figure under a hypothetical flow setpoint, assuming
/// power rises with the cube of flow (pump affinity laws).
struct SpecificEnergy {
    power: doppel::ChannelId,
    flow: doppel::ChannelId,
}

impl Model for SpecificEnergy {
    fn name(&self) -> &str {
        "specific_energy"
    }

    fn version(&self) -> &str {
        "1.0.0"
    }

    fn outputs(&self) -> Vec<String> {
        vec!["kwh_per_m3".to_string()]
    }

    fn observe(&mut self, _sample: &Sample, twin: &TwinView<'_>, out: &mut ModelOutput) {
        let (Some(power), Some(flow)) = (twin.state.value(self.power), twin.state.value(self.flow))
        else {
            return;
        };
        if flow > 1.0 {
            out.set(0, power / flow, 0.9);
        }
    }

    fn project(&self, twin: &TwinView<'_>, scenario: &Scenario, trajectory: &mut Trajectory) {
        let (Some(power), Some(flow)) = (twin.state.value(self.power), twin.state.value(self.flow))
        else {
            return;
        };
        let target = scenario
            .desired("flow_setpoint")
            .map_or(flow, |v| v.as_f64());
        if flow <= 1.0 || target <= 1.0 {
            return;
        }
        let projected_power = power * (target / flow).powi(3);
        for t in scenario.times() {
            trajectory.push("kwh_per_m3", t, projected_power / target);
        }
    }
}

fn specific_energy(
    _spec: &ComponentSpec,
    twin_type: &TwinType,
) -> Result<Box<dyn Model>, ConfigError> {
    let channel = |name: &str| {
        twin_type.channel(name).ok_or_else(|| {
            ConfigError::at(
                "embed",
                None,
                format!("type `{}` needs a `{name}` channel", twin_type.name),
            )
        })
    };
    Ok(Box::new(SpecificEnergy {
        power: channel("power_kw")?,
        flow: channel("flow")?,
    }))
}

/// A governor of our own: night shift runs with a reduced crew, so planners may not
/// raise flow above a night limit between 22:00 and 06:00 UTC. Operators on site can.
struct NightLimit {
    limit: f64,
}

impl Governor for NightLimit {
    fn name(&self) -> &str {
        "night_limit"
    }

    fn review(&self, proposal: &mut Proposal<'_>, _twin: &TwinView<'_>) -> Review {
        let hour = (proposal.now.as_micros() / 3_600_000_000).rem_euclid(24);
        let night = !(6..22).contains(&hour);
        let Some(change) = proposal.change("flow_setpoint") else {
            return Review::Allow;
        };
        if night
            && proposal.command.origin.kind.is_automatic()
            && change.value.as_f64() > self.limit
        {
            let limit = Value::Float(self.limit);
            proposal.clamp(
                "flow_setpoint",
                limit,
                format!("night shift: planners may set at most {} m3/h", self.limit),
            );
        }
        Review::Allow
    }
}

const TYPES: &str = r#"
[types.pump]
description = "Centrifugal pump"

[types.pump.channels.flow]
unit = "m3/h"
range = [0.0, 400.0]

[types.pump.channels.power_kw]
unit = "kW"
range = [0.0, 200.0]

[types.pump.channels.temperature]
unit = "degC"
range = [-20.0, 150.0]

[types.pump.desired.flow_setpoint]
unit = "m3/h"
range = [0, 300]
initial = 150

[types.pump.desired.running]
type = "bool"
initial = true

[types.pump.commands.set_flow]
params.flow = { type = "float", min = 0, max = 400, unit = "m3/h" }
sets = { flow_setpoint = "flow" }

[types.pump.commands.stop]
sets = { running = false }

[[types.pump.models]]
kind = "specific_energy"

[[types.pump.models]]
kind = "ewma_anomaly"
channel = "flow"

[[types.pump.governors]]
kind = "envelope"
desired = "flow_setpoint"
min = 20
max = 250

[[types.pump.governors]]
kind = "night_limit"
night_limit = 120.0

[[types.pump.governors]]
kind = "trip"
channel = "temperature"
above = 90.0
"#;

const PLANT: &str = r#"
[[plant]]
path = "acme/waterworks"

[[plant.line]]
name = "intake"

[[plant.line.machine]]
name = "pump-1"
type = "pump"

[[plant.line.machine]]
name = "pump-2"
type = "pump"
"#;

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let data_dir = tempfile_dir()?;
    let types = TwinTypes::from_toml(TYPES, "embed types")?;
    let topology = Topology::from_toml(PLANT, "embed plant", &types)?;
    let runtime = Runtime::builder()
        .twin_types(types)
        .topology(topology)
        .data_dir(&data_dir)
        .model("specific_energy", specific_energy)
        .governor("night_limit", |spec, _type| {
            #[derive(serde::Deserialize)]
            struct Params {
                night_limit: f64,
            }
            let params: Params = spec.params()?;
            Ok(Box::new(NightLimit {
                limit: params.night_limit,
            }))
        })
        .start()
        .await?;
    let twins = runtime.twins().clone();
    let pump = AssetPath::parse("acme/waterworks/intake/pump-1")?;
    let source = twins.source("embed-example")?;

    // Feed readings; each receipt resolves once the sample is on disk.
    for (seq, (channel, value)) in [("flow", 150.0), ("power_kw", 45.0), ("temperature", 41.0)]
        .into_iter()
        .enumerate()
    {
        let reading = Reading {
            value,
            source_time: Timestamp::now(),
            quality: Quality::Good,
            source,
            epoch: 0,
            seq: seq as u64 + 1,
            stamped: true,
        };
        twins
            .ingest(&pump, channel, reading)
            .await?
            .durable()
            .await?;
    }
    let report = twins.report(&pump).await?;
    println!(
        "{pump}: version {}, {:.3} kWh/m3",
        report.version,
        report.derived("kwh_per_m3").unwrap_or(f64::NAN)
    );

    // What if a planner raised the flow to 200 m3/h? Nothing is actuated.
    let raise = Command::new(pump.clone(), "set_flow", Origin::planner("energy-planner"))
        .param("flow", Value::Float(200.0));
    let what_if = twins
        .what_if(
            raise.clone(),
            Duration::from_secs(600),
            Duration::from_secs(60),
        )
        .await?;
    println!(
        "what-if: {} → {:.3} kWh/m3",
        what_if.verdict,
        what_if.trajectory.last("kwh_per_m3").unwrap_or(f64::NAN)
    );

    // Commands pass every governor; the verdict comes back once it is durable.
    for command in [
        raise,
        Command::new(pump.clone(), "set_flow", Origin::operator("ann"))
            .param("flow", Value::Float(320.0)),
    ] {
        let outcome = twins.command(command).await?;
        println!("command → {}", outcome.verdict);
    }

    // A hot bearing trips the pump from inside its own actor.
    let mut actuations = twins.actuations();
    let hot = Reading {
        value: 97.5,
        source_time: Timestamp::now(),
        quality: Quality::Good,
        source,
        epoch: 0,
        seq: 10,
        stamped: true,
    };
    twins
        .ingest(&pump, "temperature", hot)
        .await?
        .durable()
        .await?;
    let actuation = actuations.recv().await?;
    println!(
        "safety action: {} {} ({})",
        actuation.asset(),
        actuation.command(),
        actuation.reason()
    );

    for record in twins.audit(&pump, Timestamp(0), Timestamp::now(), 10)? {
        println!(
            "audit #{}: {} by {} → {}",
            record.seq, record.command, record.origin.principal, record.verdict
        );
    }
    drop(twins);
    runtime.shutdown().await;
    std::fs::remove_dir_all(&data_dir)?;
    Ok(())
}

fn tempfile_dir() -> std::io::Result<std::path::PathBuf> {
    let dir = std::env::temp_dir().join(format!("doppel-embed-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    Ok(dir)
}
