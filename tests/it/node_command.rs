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
