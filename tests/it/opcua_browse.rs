//! `doppel opcua browse` against the in-process OPC UA server: it proposes a twin type
//! and mapping with the server's units and ranges, lists what it leaves out, and the
//! proposal, used as it is, makes a node's twin follow the server's values and its
//! commands reach the server.

use std::time::Duration;

use doppel::connectors::opcua::OpcUaConfig;
use doppel::{Command, Node, Origin, TwinTypes, Value, Verdict};
use opcua::server::address_space::VariableBuilder;
use opcua::types::{
    DataTypeId, DataValue, EUInformation, LocalizedText, Range, VariableTypeId, Variant,
};

use crate::opcua::{Plc, doppel};
use crate::support::{self, wait_until};

const WAIT: Duration = Duration::from_secs(10);

/// The start of the comment line above the mapping in the output.
const MAPPING_HEADER: &str = "# ==== node config:";

/// press-1 alone, of whatever type `browse --type press` proposes.
const PLANT: &str = r#"
[[plant]]
path = "acme/plant-a"

[[plant.line]]
name = "line-1"

[[plant.line.machine]]
name = "press-1"
type = "press"
"#;

/// The `[node]` table of both configs: the browse and the node share their data
/// directory, so the node's connector finds the server certificate the browse trusted.
const NODE_SECTION: &str =
    "[node]\ndata_dir = \"data\"\ntypes = \"types.toml\"\nplant = \"plant.toml\"\n";

/// Gives press-1's temperature an `EURange` and `EngineeringUnits`, and its speed an
/// `EURange`, as an AnalogItem has them.
fn add_engineering_properties(plc: &Plc) {
    let mut space = plc.manager.address_space().write();
    let properties: [(&str, Range, Option<&str>); 2] = [
        (
            "Press1.Temperature",
            Range {
                low: -20.0,
                high: 250.0,
            },
            Some("°C"),
        ),
        (
            "Press1.Speed",
            Range {
                low: 0.0,
                high: 3000.0,
            },
            None,
        ),
    ];
    for (variable, range, unit) in properties {
        let owner = plc.node(variable);
        let inserted = VariableBuilder::new(
            &plc.node(&format!("{variable}.EURange")),
            "EURange",
            "EURange",
        )
        .property_of(owner.clone())
        .has_type_definition(VariableTypeId::PropertyType)
        .data_type(DataTypeId::Range)
        .value(range)
        .insert(&mut *space);
        assert!(inserted, "{variable}.EURange inserted");
        if let Some(unit) = unit {
            let units = EUInformation {
                namespace_uri: "http://www.opcfoundation.org/UA/units/un/cefact".into(),
                unit_id: 4_408_652,
                display_name: LocalizedText::new("", unit),
                description: LocalizedText::new("", "degree Celsius"),
            };
            let inserted = VariableBuilder::new(
                &plc.node(&format!("{variable}.EngineeringUnits")),
                "EngineeringUnits",
                "EngineeringUnits",
            )
            .property_of(owner)
            .has_type_definition(VariableTypeId::PropertyType)
            .data_type(DataTypeId::EUInformation)
            .value(units)
            .insert(&mut *space);
            assert!(inserted, "{variable}.EngineeringUnits inserted");
        }
    }
}

/// Browsing press-1 over a signed and encrypted session proposes its numeric
/// variables as channels with the server's units and ranges, its writable ones as
/// desired values with commands, its methods as commands, and lists the mode text as
/// left out. A node started from that proposal, unchanged, follows the server's
/// temperature, writes the speed and calls the methods.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_browsed_proposal_used_as_is_makes_the_twin_follow_the_server() {
    tokio::time::timeout(Duration::from_secs(120), async {
        let dir = tempfile::tempdir().unwrap();
        let plc = Plc::start(&dir.path().join("server-pki"), 0, false, true).await;
        add_engineering_properties(&plc);
        let browse_config = dir.path().join("browse.toml");
        std::fs::write(
            &browse_config,
            format!(
                "{NODE_SECTION}\n[[opcua]]\nname = \"press-line\"\nendpoint = \"{}\"\ntrust_server_certificate = true\nreconnect = {{ initial_ms = 100, max_ms = 400 }}\npublishing_ms = 50\nkeep_alive_ms = 1000\n",
                plc.endpoint()
            ),
        )
        .unwrap();

        let output = doppel(vec![
            "opcua".into(),
            "browse".into(),
            "--config".into(),
            browse_config.into(),
            "--root".into(),
            "ns=2;s=Press1".into(),
            "--asset".into(),
            "acme/plant-a/line-1/press-1".into(),
            "--type".into(),
            "press".into(),
        ])
        .await;
        let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
        let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
        assert!(
            output.status.success(),
            "stdout:\n{stdout}\nstderr:\n{stderr}"
        );
        assert!(
            stdout.contains(
                "[types.press.channels.temperature]\nunit = \"°C\"\nrange = [-20.0, 250.0]"
            ),
            "the temperature's unit and range come from its properties:\n{stdout}"
        );
        assert!(
            stdout.contains("[types.press.channels.speed]\nunit = \"\"\nrange = [0.0, 3000.0]"),
            "{stdout}"
        );
        assert!(
            stderr.contains(
                "ns=2;s=Press1.Mode (Press1.Mode): data type String is not a number or Boolean"
            ),
            "the mode text is listed as left out:\n{stderr}"
        );
        assert!(stdout.contains("#   ns=2;s=Press1.Mode"), "{stdout}");
        assert!(stderr.contains("the walk is complete"), "{stderr}");

        let (types_text, mapping_text) = stdout
            .split_once(MAPPING_HEADER)
            .expect("the output has a mapping section");
        let mapping_text = mapping_text
            .split_once('\n')
            .map_or("", |(_, rest)| rest);
        let types = TwinTypes::from_toml(types_text, "proposed types").unwrap();
        let press = types.get("press").expect("the type is named by --type");
        for channel in ["temperature", "vibration", "speed", "running"] {
            assert!(press.channel(channel).is_some(), "channel {channel}");
        }
        assert!(press.channel("mode").is_none());
        assert_eq!(
            press.commands.keys().map(String::as_str).collect::<Vec<_>>(),
            ["ramp", "set_running", "set_speed", "stop"]
        );
        let mapped = OpcUaConfig::from_toml(mapping_text).unwrap().remove(0);
        assert_eq!(mapped.name, "press-line");
        assert_eq!(mapped.assets[0].path, support::press(1));

        std::fs::write(dir.path().join("types.toml"), types_text).unwrap();
        std::fs::write(dir.path().join("plant.toml"), PLANT).unwrap();
        let node_config = dir.path().join("node.toml");
        std::fs::write(&node_config, format!("{NODE_SECTION}\n{mapping_text}")).unwrap();
        let node = Node::start_file(node_config).await.unwrap();
        assert_eq!(
            node.wait_connected(WAIT).await,
            Vec::<String>::new(),
            "the proposed connector connects"
        );
        let twins = node.twins().clone();
        let press_1 = support::press(1);
        let temperature = || async {
            twins
                .report(&press_1)
                .await
                .ok()
                .and_then(|report| report.value("temperature"))
        };
        wait_until("the twin has the server's temperature", WAIT, || async {
            temperature().await == Some(20.0)
        })
        .await;
        plc.set("Press1.Temperature", DataValue::new_now(71.5));
        wait_until("the twin follows the server's temperature", WAIT, || async {
            temperature().await == Some(71.5)
        })
        .await;

        let commands = [
            Command::new(press_1.clone(), "set_speed", Origin::operator("ann"))
                .param("value", Value::Float(1500.0)),
            Command::new(press_1.clone(), "ramp", Origin::operator("ann"))
                .param("rpm", Value::Float(900.0)),
            Command::new(press_1.clone(), "stop", Origin::operator("ann")),
        ];
        for command in commands {
            let outcome = twins.command(command).await.unwrap();
            assert_eq!(outcome.verdict, Verdict::Accepted);
        }
        wait_until("the speed is written to the server", WAIT, || async {
            plc.value("Press1.Speed") == Some(Variant::Double(1500.0))
        })
        .await;
        wait_until("both methods are called", WAIT, || {
            let calls = plc.calls();
            std::future::ready(
                calls.contains(&("Press1.Ramp".to_string(), vec![Variant::Float(900.0)]))
                    && calls.iter().any(|(method, _)| method == "Press1.Stop"),
            )
        })
        .await;

        node.stop().await;
        plc.stop().await;
    })
    .await
    .expect("test finished in time");
}
