//! Property: whatever the commands and the governors' settings, every value that leaves
//! a twin through an actuator — an MQTT `…/cmd` payload, a Sparkplug DCMD metric, an
//! OPC UA method argument — is the value the governors applied, inside every
//! governor's limits. Real twins (the standard `envelope`, `rate_limit` and `deadline`
//! governors) in a temporary data directory; the codecs and the OPC UA plan as the
//! connectors run them.

use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use doppel_runtime::command::{Command, Origin};
use doppel_runtime::twin::{Actuation, Twins};
use doppel_runtime::{AssetPath, Timestamp, Topology, TwinTypes, Value};
use opcua::types::Variant;
use proptest::prelude::*;
use prost::Message;

use crate::mqtt::sparkplug::proto::Payload;
use crate::mqtt::sparkplug::proto::payload::metric;
use crate::mqtt::{
    Codec, Resolver, SparkplugCodec, SparkplugConfig, UnsCodec, UnsConfig, UnsSources,
};
use crate::opcua::OpcUaConfig;
use crate::opcua::connector::method_arguments;
use crate::opcua::plan::Plan;

const PRESS: &str = "acme/plant-a/line-1/press-1";
const INITIAL_RPM: f64 = 1200.0;

/// Governor settings drawn for one case.
#[derive(Debug, Clone)]
struct Limits {
    min: f64,
    max: f64,
    max_step: f64,
    envelope_first: bool,
}

impl Limits {
    fn types(&self) -> String {
        let envelope = format!(
            "[[types.press.governors]]\nkind = \"envelope\"\ndesired = \"speed\"\nmin = {:.3}\nmax = {:.3}\n",
            self.min, self.max
        );
        let rate = format!(
            "[[types.press.governors]]\nkind = \"rate_limit\"\ndesired = \"speed\"\nmax_per_sec = 1e12\nmax_step = {:.3}\n",
            self.max_step
        );
        let (first, second) = if self.envelope_first {
            (envelope, rate)
        } else {
            (rate, envelope)
        };
        format!(
            r#"
[types.press.channels.temperature]
unit = "degC"
range = [-20.0, 250.0]

[types.press.desired.speed]
unit = "rpm"
range = [0, 3000]
initial = {INITIAL_RPM}

[types.press.commands.set_speed]
params.rpm = {{ type = "float", min = 0, max = 3000, unit = "rpm" }}
sets = {{ speed = "rpm" }}

[[types.press.governors]]
kind = "deadline"

{first}
{second}
"#
        )
    }

    /// The limits rounded as written into the config.
    fn as_written(&self) -> (f64, f64, f64) {
        let round = |v: f64| format!("{v:.3}").parse::<f64>().unwrap();
        (round(self.min), round(self.max), round(self.max_step))
    }
}

fn limits() -> impl Strategy<Value = Limits> {
    // The envelope holds the initial value, so every step starts inside it.
    (
        0.0..INITIAL_RPM,
        INITIAL_RPM..3000.0,
        1.0..2000.0,
        any::<bool>(),
    )
        .prop_map(|(min, max, max_step, envelope_first)| Limits {
            min,
            max,
            max_step,
            envelope_first,
        })
}

/// A command drawn for one case: the speed asked for, and whether its deadline has
/// already passed.
fn commands() -> impl Strategy<Value = Vec<(f64, bool)>> {
    prop::collection::vec((0.0..3000.0f64, prop::bool::weighted(0.2)), 1..12)
}

/// Every way out of the twin, built as the connectors build it.
struct Actuators {
    uns: UnsCodec,
    sparkplug: SparkplugCodec,
    opcua: Plan,
}

impl Actuators {
    fn new(twins: &Twins) -> Self {
        let source = |name: &str| twins.source(name).unwrap();
        let uns = UnsCodec::new(
            UnsConfig::default(),
            Resolver::new(twins.clone()),
            UnsSources {
                explicit: source("uns"),
                timestamped: source("uns/ts"),
                arrival: source("uns/arrival"),
            },
        );
        let sparkplug: SparkplugConfig = toml::from_str(&format!(
            "[[map]]\ngroup = \"G\"\nnode = \"N\"\ndevice = \"D\"\nasset = \"{PRESS}\"\ncommands = {{ speed = \"Outputs/Speed\" }}\n"
        ))
        .unwrap();
        let sparkplug = SparkplugCodec::new(
            &sparkplug,
            Resolver::new(twins.clone()),
            source("sparkplug"),
        )
        .unwrap();
        let opcua = OpcUaConfig::from_toml(&format!(
            r#"
            [[opcua]]
            name = "plc"
            endpoint = "opc.tcp://127.0.0.1:4840/"
            [[opcua.asset]]
            path = "{PRESS}"
            writes = [ {{ desired = "speed", node = "ns=2;s=Speed" }} ]
            methods = [ {{ command = "set_speed", object = "ns=2;s=Press", method = "ns=2;s=Ramp", args = [{{ param = "rpm", type = "Double" }}] }} ]
            "#
        ))
        .unwrap()
        .remove(0);
        let opcua = Plan::resolve(&opcua, twins).unwrap();
        Self {
            uns,
            sparkplug,
            opcua,
        }
    }

    /// The speed each actuator sends for `actuation`.
    fn speeds(&mut self, actuation: &Actuation) -> Vec<(&'static str, f64)> {
        let mut speeds = Vec::new();
        let mut out = Vec::new();
        self.uns.actuation(actuation, &mut out);
        for message in out.drain(..) {
            let body: serde_json::Value = serde_json::from_slice(&message.payload).unwrap();
            assert!(body.get("params").is_none(), "{body}");
            assert!(body["set"]["speed"].is_number(), "{body}");
            // serde_json's default float parsing may be one ulp off; read the number's
            // text with the standard library's correctly rounded parser.
            let text = std::str::from_utf8(&message.payload).unwrap();
            let number = text.split("\"speed\":").nth(1).unwrap();
            let end = number.find([',', '}']).unwrap();
            speeds.push(("mqtt", number[..end].parse::<f64>().unwrap()));
        }
        self.sparkplug.actuation(actuation, &mut out);
        for message in out.drain(..) {
            let payload = Payload::decode(message.payload.as_slice()).unwrap();
            for m in payload.metrics {
                if let Some(metric::Value::DoubleValue(speed)) = m.value {
                    speeds.push(("sparkplug", speed));
                }
            }
        }
        let asset = &self.opcua.assets[actuation.asset()];
        if let Some(speed) = actuation.value("speed")
            && asset.writes.contains_key("speed")
        {
            speeds.push(("opcua write", speed.as_f64()));
        }
        let method = &asset.methods[actuation.command()];
        for argument in method_arguments(actuation, method).unwrap() {
            match argument {
                Variant::Double(speed) => speeds.push(("opcua method", speed)),
                other => panic!("unexpected argument {other:?}"),
            }
        }
        speeds
    }
}

/// Runs one case: every command of `commands` against a fresh twin governed by `limits`.
fn run(limits: &Limits, commands: &[(f64, bool)]) -> Result<(), TestCaseError> {
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let dir = tempfile::Builder::new()
        .prefix(&format!(
            "doppel-governed-{}-",
            NEXT.fetch_add(1, Ordering::Relaxed)
        ))
        .tempdir()
        .unwrap();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let types = TwinTypes::from_toml(&limits.types(), "governed").unwrap();
        let plant = "[[plant]]\npath = \"acme/plant-a\"\n[[plant.line]]\nname = \"line-1\"\n\
            [[plant.line.machine]]\nname = \"press-1\"\ntype = \"press\"\n";
        let topology = Topology::from_toml(plant, "governed", &types).unwrap();
        let node = doppel_actors::Runtime::builder()
            .twin_types(types)
            .topology(topology)
            .data_dir(dir.path())
            .start()
            .await
            .unwrap();
        let press = AssetPath::parse(PRESS).unwrap();
        let twins = node.twins().clone();
        let mut actuators = Actuators::new(&twins);
        let mut bus = twins.actuations();
        let (min, max, max_step) = limits.as_written();
        let mut previous = INITIAL_RPM;
        for &(rpm, late) in commands {
            let mut command = Command::new(press.clone(), "set_speed", Origin::operator("prop"))
                .param("rpm", Value::Float(rpm));
            if late {
                command = command.deadline(Timestamp::now().minus(Duration::from_secs(1)));
            }
            let id = command.id.clone();
            let outcome = twins.command(command).await.unwrap();
            if late {
                prop_assert!(!outcome.verdict.is_applied(), "{:?}", outcome.verdict);
                continue;
            }
            let actuation = loop {
                let actuation = tokio::time::timeout(Duration::from_secs(10), bus.recv())
                    .await
                    .expect("an applied command is actuated")
                    .unwrap();
                if actuation.command_id() == &id {
                    break actuation;
                }
            };
            let governed = actuation.value("speed").unwrap().as_f64();
            prop_assert_eq!(
                outcome.applied.clone(),
                vec![("speed".to_string(), Value::Float(governed))]
            );
            prop_assert!(
                (min - 1e-9..=max + 1e-9).contains(&governed),
                "{governed} outside the envelope {min}..={max}"
            );
            prop_assert!(
                (governed - previous).abs() <= max_step + 1e-9,
                "step {previous} -> {governed} beyond {max_step}"
            );
            let speeds = actuators.speeds(&actuation);
            prop_assert_eq!(speeds.len(), 4, "{:?}", speeds);
            for (actuator, speed) in speeds {
                prop_assert_eq!(speed, governed, "{}", actuator);
            }
            previous = governed;
        }
        // A late command leaves nothing on the bus.
        prop_assert!(bus.try_recv().is_err());
        node.shutdown().await;
        Ok(())
    })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 32, ..ProptestConfig::default() })]

    #[test]
    fn only_governed_values_leave_the_twin(limits in limits(), commands in commands()) {
        run(&limits, &commands)?;
    }
}
