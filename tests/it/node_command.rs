//! `doppel node --config FILE` runs the shipped example node against a real broker:
//! telemetry published to the broker trips a twin and the stop goes back out.

use std::process::{Command, Stdio};

use doppel::NodeConfig;
use rumqttc::QoS;

use crate::brokers;
use crate::mqtt::{Inbox, pump};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_example_node_runs_its_connectors_from_its_config() {
    let example = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/node");
    let shipped = NodeConfig::from_file(example.join("node.toml")).unwrap();
    assert_eq!(shipped.mqtt.len(), 1);
    assert_eq!(shipped.mqtt[0].url, "mqtt://127.0.0.1:1883");

    // The same config, pointed at a broker of our own.
    let broker = brokers::embedded();
    let dir = tempfile::tempdir().unwrap();
    for file in ["types.toml", "plant.toml"] {
        std::fs::copy(example.join(file), dir.path().join(file)).unwrap();
    }
    let config = std::fs::read_to_string(example.join("node.toml"))
        .unwrap()
        .replace("mqtt://127.0.0.1:1883", &broker.url());
    std::fs::write(dir.path().join("node.toml"), config).unwrap();

    let (client, eventloop) = brokers::client(&broker.url(), "example-machine", true);
    let (rx, pump_task) = pump(eventloop);
    let mut inbox = Inbox::new(rx);
    client
        .subscribe("acme/plant-a/line-1/press-1/cmd/#", QoS::AtLeastOnce)
        .await
        .unwrap();
    client
        .subscribe("spBv1.0/STATE/#", QoS::AtLeastOnce)
        .await
        .unwrap();
    let child = Command::new(env!("CARGO_BIN_EXE_doppel"))
        .args(["node", "--duration", "8", "--config"])
        .arg(dir.path().join("node.toml"))
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // The Sparkplug host announces itself once connected.
    let state = inbox.json_on("spBv1.0/STATE/doppel-edge-1").await;
    assert_eq!(state["online"], true, "{state}");
    client
        .publish(
            "acme/plant-a/line-1/press-1/telemetry/temperature",
            QoS::AtLeastOnce,
            false,
            r#"{"v": 130.5}"#,
        )
        .await
        .unwrap();
    let stop = inbox.json_on("acme/plant-a/line-1/press-1/cmd").await;
    assert_eq!(stop["safety"], true, "{stop}");
    assert_eq!(stop["set"]["running"], false, "{stop}");
    let output = tokio::task::spawn_blocking(move || child.wait_with_output())
        .await
        .unwrap()
        .unwrap();
    pump_task.abort();
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "stdout:\n{stdout}\nstderr:\n{stderr}"
    );
    assert!(
        stdout.contains("doppel node: 3 twins, 1 MQTT and 0 OPC UA connectors"),
        "{stdout}"
    );
    assert!(stdout.contains("1 safety actions"), "{stdout}");
    assert!(dir.path().join("data/doppel.redb").is_file());
}

/// A node config with the example's twins and only an OPC UA connector that writes
/// press-2's speed (no MQTT): the press trip's `stop` sets `running`, which nothing
/// would carry to the machine.
fn opcua_only_node(dir: &std::path::Path, writes: &str, extra: &str) -> std::path::PathBuf {
    let example = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/node");
    for file in ["types.toml", "plant.toml"] {
        std::fs::copy(example.join(file), dir.join(file)).unwrap();
    }
    let port = doppel_testkit::net::free_tcp_port();
    let config = format!(
        r#"
[node]
data_dir = "data"
types = "types.toml"
plant = "plant.toml"

[[opcua]]
name = "press-line"
endpoint = "opc.tcp://127.0.0.1:{port}/"
security_policy = "None"
security_mode = "None"
allow_insecure = true

[[opcua.asset]]
path = "acme/plant-a/line-1/press-2"
writes = [ {writes} ]

{extra}
"#
    );
    let path = dir.join("node.toml");
    std::fs::write(&path, config).unwrap();
    path
}

fn run_node(config: &std::path::Path) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_doppel"))
        .args(["node", "--duration", "1", "--config"])
        .arg(config)
        .output()
        .unwrap()
}

#[test]
fn a_node_whose_trip_cannot_reach_the_machine_is_refused_at_start() {
    let dir = tempfile::tempdir().unwrap();
    let speed_only = r#"{ desired = "speed", node = "ns=2;s=Press2.Speed" }"#;
    let refused = run_node(&opcua_only_node(dir.path(), speed_only, ""));
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(!refused.status.success(), "{stderr}");
    for named in [
        "twin type `press`",
        "safety action `stop`",
        "governor `overtemp`",
        "desired value `running`",
        "acme/plant-a/line-1/press-2",
        "[[actuation.elsewhere]]",
    ] {
        assert!(stderr.contains(named), "{named} missing from: {stderr}");
    }
    assert!(
        !dir.path().join("data/doppel.redb").exists(),
        "refused before opening the journal"
    );

    // Mapped: the trip's `running` is written too. The operator commands all reach
    // the machine, so the start is quiet.
    let both =
        format!(r#"{speed_only}, {{ desired = "running", node = "ns=2;s=Press2.Running" }}"#);
    let mapped = run_node(&opcua_only_node(dir.path(), &both, ""));
    let stderr = String::from_utf8_lossy(&mapped.stderr);
    assert!(mapped.status.success(), "{stderr}");
    assert!(!stderr.contains("no connector carries"), "{stderr}");

    // Declared as actuated elsewhere: the start goes on, and says so.
    let elsewhere =
        "[[actuation.elsewhere]]\ntype = \"press\"\ndesired = \"running\"\nby = \"PLC interlock\"";
    let declared = run_node(&opcua_only_node(dir.path(), speed_only, elsewhere));
    let stdout = String::from_utf8_lossy(&declared.stdout);
    let stderr = String::from_utf8_lossy(&declared.stderr);
    assert!(declared.status.success(), "{stderr}");
    assert!(
        format!("{stdout}{stderr}").contains("PLC interlock"),
        "{stdout}{stderr}"
    );

    // An operator command that reaches nothing is a warning, not a refusal: with
    // `running` declared elsewhere and only `running` written, `set_speed` changes
    // the twin only.
    let running_only = r#"{ desired = "running", node = "ns=2;s=Press2.Running" }"#;
    let warned = run_node(&opcua_only_node(dir.path(), running_only, ""));
    let stderr = String::from_utf8_lossy(&warned.stderr);
    assert!(warned.status.success(), "{stderr}");
    assert!(
        stderr.contains("no connector carries") && stderr.contains("set_speed"),
        "{stderr}"
    );
}
