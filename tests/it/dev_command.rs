//! `doppel dev` runs from a fresh checkout: it shows the plant, a trip and an RUL
//! warning within ten seconds at the default speed, and speaks MQTT: its embedded
//! broker carries the plant's telemetry, and a reading published to it changes a twin.

use std::process::{Command, Stdio};
use std::time::Duration;

use rumqttc::QoS;

use crate::brokers;
use crate::mqtt::{Inbox, pump};
use crate::support;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn doppel_dev_shows_the_plant_a_trip_and_an_rul_warning_and_speaks_mqtt() {
    // Without --grpc it takes the default API port, as the cluster example does.
    let _ports = support::DEFAULT_PORTS.lock().await;
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

/// How long a local cluster may take to answer on a busy machine. The run ends as soon
/// as the test has seen what it waits for: it is interrupted, as a user would.
const CLUSTER_LIMIT: Duration = Duration::from_secs(90);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn doppel_dev_nodes_3_runs_a_local_cluster_that_forwards_commands_to_the_edges() {
    let dir = tempfile::tempdir().unwrap();
    let grpc = format!("127.0.0.1:{}", brokers::free_port());
    let mqtt_port = brokers::free_port();
    let mut child = Command::new(env!("CARGO_BIN_EXE_doppel"))
        .args([
            "dev",
            "--nodes",
            "3",
            "--duration",
            &(CLUSTER_LIMIT.as_secs() + 30).to_string(),
            "--grpc",
            &grpc,
            "--mqtt-port",
            &mqtt_port.to_string(),
            "--data-dir",
        ])
        .arg(dir.path())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let pid = child.id();
    let deadline = std::time::Instant::now() + CLUSTER_LIMIT;
    // Its output as it comes: commands go out once it says how to reach it, when
    // the cluster has formed and the simulator follows the edges' actuations.
    let lines = std::sync::Arc::new(parking_lot::Mutex::new(Vec::<String>::new()));
    let reader = {
        let lines = lines.clone();
        let stdout = child.stdout.take().unwrap();
        std::thread::spawn(move || {
            use std::io::BufRead;
            for line in std::io::BufReader::new(stdout)
                .lines()
                .map_while(Result::ok)
            {
                lines.lock().push(line);
            }
        })
    };
    while !lines
        .lock()
        .iter()
        .any(|line| line.contains("export DOPPEL_ADDR"))
    {
        assert!(
            std::time::Instant::now() < deadline,
            "doppel dev --nodes 3 did not say how to reach it:\n{}",
            lines.lock().join("\n")
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // The plant's broker, as `mosquitto_sub -t '#'` would watch it: the simulator's
    // telemetry, and the commands the edge that owns line-2 sends through it.
    let (client, eventloop) = brokers::client(
        &format!("mqtt://127.0.0.1:{mqtt_port}"),
        "dev-watcher",
        true,
    );
    let (rx, pump_task) = pump(eventloop);
    let mut inbox = Inbox::new(rx);
    client
        .subscribe("acme/plant-a/line-2/press-5/#", QoS::AtMostOnce)
        .await
        .unwrap();
    let telemetry = inbox
        .json_on("acme/plant-a/line-2/press-5/telemetry/temperature")
        .await;
    assert!(telemetry["v"].is_number(), "{telemetry}");
    let token_file = dir.path().join(doppel_api::DEV_TOKEN_FILE);
    let cli = |args: &[&str]| {
        let token = std::fs::read_to_string(&token_file).unwrap_or_default();
        Command::new(env!("CARGO_BIN_EXE_doppel"))
            .arg("twin")
            .args(args)
            .env("DOPPEL_ADDR", format!("http://{grpc}"))
            .env("DOPPEL_TOKEN", token.trim())
            .output()
            .unwrap()
    };
    // Through the cloud node, to the edge that owns line-2.
    let command = loop {
        let output = cli(&[
            "command",
            "acme/plant-a/line-2/press-5",
            "set_speed",
            "rpm=1100",
        ]);
        if output.status.success() {
            break output;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the cluster's API never answered: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let text = String::from_utf8_lossy(&command.stdout);
    assert!(text.starts_with("accepted"), "{text}");
    let sent = inbox.json_on("acme/plant-a/line-2/press-5/cmd").await;
    assert_eq!(sent["command"], "set_speed", "{sent}");
    assert!(sent["set"]["speed"].to_string().contains("1100"), "{sent}");
    // The cloud answers reads from its mirror of the edge (the owner answers until
    // the mirror has the twin), and in time mirrors all ten twins.
    loop {
        let output = cli(&["get", "--json", "acme/plant-a/line-2/press-5"]);
        let twin = String::from_utf8_lossy(&output.stdout).to_string();
        if twin.contains(r#""owner_node":"edge-2""#)
            && twin.contains(r#"{"name":"speed","value":1100"#)
        {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "{twin}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let output = cli(&["list", "--json", "--all", "acme/plant-a"]);
    let listed = String::from_utf8_lossy(&output.stdout).to_string();
    let paths: Vec<String> = listed
        .lines()
        .filter_map(|line| {
            let json: serde_json::Value = serde_json::from_str(line).ok()?;
            Some(json["asset_path"].as_str()?.to_string())
        })
        .collect();
    assert_eq!(paths.len(), 10, "{listed}");
    for path in &paths {
        loop {
            let output = cli(&["get", "--json", path]);
            let twin = String::from_utf8_lossy(&output.stdout).to_string();
            if twin.contains(r#""owner_node":"edge-"#) {
                break;
            }
            assert!(std::time::Instant::now() < deadline, "not mirrored: {twin}");
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
    // Stopped as a service manager stops it: SIGTERM ends it cleanly.
    support::signal(pid, "TERM");
    let output = tokio::task::spawn_blocking(move || support::wait_for_exit(child, CLUSTER_LIMIT))
        .await
        .unwrap();
    reader.join().unwrap();
    pump_task.abort();
    let stdout = lines.lock().join("\n");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{stdout}\n{stderr}");
    assert!(
        stdout.contains(&format!("MQTT broker on localhost:{mqtt_port}")),
        "{stdout}"
    );
    // Each edge subscribes to the lines it owns only: nothing of the other edge's
    // lines reaches it as an unknown asset.
    assert!(!stderr.contains("unknown_asset"), "{stderr}");
    let applied: u64 = stdout
        .lines()
        .last()
        .and_then(|line| line.split(" samples applied").next())
        .and_then(|head| head.rsplit(' ').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or(0);
    assert!(
        applied > 0,
        "no telemetry came through the broker:\n{stdout}"
    );
    for edge in ["edge-1", "edge-2"] {
        let config =
            std::fs::read_to_string(dir.path().join("cluster").join(format!("{edge}.toml")))
                .unwrap();
        assert!(
            config.contains(&format!("mqtt://127.0.0.1:{mqtt_port}")),
            "{config}"
        );
    }
    assert!(stdout.contains("a local cluster of 3 nodes"), "{stdout}");
    assert!(
        stdout.contains("edge-1 (edge): owns acme/plant-a/line-1"),
        "{stdout}"
    );
    assert!(
        stdout.contains("COMMAND acme/plant-a/line-2/press-5  set_speed by dev"),
        "{stdout}"
    );
    assert!(
        stdout.contains("10 twins mirrored in the cloud"),
        "{stdout}"
    );
}

/// `--grpc off` runs the local cluster with no API on any node; SIGTERM stops it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn doppel_dev_nodes_3_runs_without_an_api_when_asked() {
    let dir = tempfile::tempdir().unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_doppel"))
        .args([
            "dev",
            "--nodes",
            "3",
            "--grpc",
            "off",
            "--mqtt-port",
            "0",
            "--duration",
            &(CLUSTER_LIMIT.as_secs() + 30).to_string(),
            "--data-dir",
        ])
        .arg(dir.path())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let pid = child.id();
    let stdout = child.stdout.take().unwrap();
    let (seen, banner) = std::sync::mpsc::channel();
    let reader = std::thread::spawn(move || {
        use std::io::BufRead;
        let mut lines = Vec::new();
        for line in std::io::BufReader::new(stdout)
            .lines()
            .map_while(Result::ok)
        {
            if line.contains("injected fault") {
                let _ = seen.send(());
            }
            lines.push(line);
        }
        lines
    });
    let formed = tokio::task::spawn_blocking(move || banner.recv_timeout(CLUSTER_LIMIT))
        .await
        .unwrap();
    support::signal(pid, "TERM");
    let output = tokio::task::spawn_blocking(move || support::wait_for_exit(child, CLUSTER_LIMIT))
        .await
        .unwrap();
    let stdout = reader.join().unwrap().join("\n");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        formed.is_ok(),
        "the cluster never formed:\n{stdout}\n{stderr}"
    );
    assert!(output.status.success(), "{stdout}\n{stderr}");
    assert!(stdout.contains("a local cluster of 3 nodes"), "{stdout}");
    assert!(!stdout.contains("API on"), "{stdout}");
    for node in ["cloud-1", "edge-1", "edge-2"] {
        let config =
            std::fs::read_to_string(dir.path().join("cluster").join(format!("{node}.toml")))
                .unwrap();
        assert!(!config.contains("[api]"), "{node}: {config}");
    }
}
