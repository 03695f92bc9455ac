//! `doppel dev` runs from a fresh checkout: it shows the plant, a trip and an RUL
//! warning within ten seconds at the default speed, and speaks MQTT: its embedded
//! broker carries the plant's telemetry, and a reading published to it changes a twin.

use std::process::{Command, Stdio};
use std::time::Duration;

use rumqttc::QoS;

use crate::brokers;
use crate::mqtt::{Inbox, pump};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn doppel_dev_shows_the_plant_a_trip_and_an_rul_warning_and_speaks_mqtt() {
    let dir = tempfile::tempdir().unwrap();
    let port = brokers::free_port();
    let child = Command::new(env!("CARGO_BIN_EXE_doppel"))
        .args([
            "dev",
            "--duration",
            "10",
            "--mqtt-port",
            &port.to_string(),
            "--data-dir",
        ])
        .arg(dir.path())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let url = format!("mqtt://127.0.0.1:{port}");
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(
            std::time::Instant::now() < deadline,
            "the dev broker did not come up"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let (client, eventloop) = brokers::client(&url, "dev-watcher", true);
    let (rx, pump_task) = pump(eventloop);
    let mut inbox = Inbox::new(rx);
    client
        .subscribe("acme/plant-a/line-1/press-1/telemetry/#", QoS::AtMostOnce)
        .await
        .unwrap();
    let telemetry = inbox
        .json_on("acme/plant-a/line-1/press-1/telemetry/temperature")
        .await;
    assert!(telemetry["v"].is_number(), "{telemetry}");
    // press-1 has no injected fault: only this reading can trip it.
    client
        .publish(
            "acme/plant-a/line-1/press-1/telemetry/temperature",
            QoS::AtLeastOnce,
            false,
            r#"{"v": 150}"#,
        )
        .await
        .unwrap();
    let output = tokio::task::spawn_blocking(move || child.wait_with_output())
        .await
        .unwrap()
        .unwrap();
    pump_task.abort();
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "doppel dev failed\nstdout:\n{stdout}\nstderr:\n{stderr}"
    );
    assert!(stdout.contains("acme/plant-a/line-1"), "{stdout}");
    assert!(stdout.contains("acme/plant-a/line-2"), "{stdout}");
    assert!(
        stdout.contains("SAFETY  acme/plant-a/line-1/press-1  stop by trip: temperature 150"),
        "the published reading did not trip press-1:\n{stdout}"
    );
    assert!(
        stdout.contains("SAFETY  acme/plant-a/line-2/press-4"),
        "the injected coolant loss did not trip press-4:\n{stdout}"
    );
    assert!(
        stdout.contains("TRIP"),
        "no tripped machine shown:\n{stdout}"
    );
    assert!(stdout.contains("rul_low"), "no RUL warning:\n{stdout}");
    assert!(
        stdout
            .lines()
            .last()
            .unwrap_or_default()
            .starts_with("doppel dev:"),
        "{stdout}"
    );
}
