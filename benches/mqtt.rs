//! MQTT benchmark (scenario harness), on one broker in one run:
//!
//! - the rate a bare rumqttc subscriber receives a stream of QoS 1 telemetry,
//! - the rate Doppel applies the same stream to twins durably (every message
//!   acknowledged to the broker after its journal batch committed), and their ratio,
//! - p50/p99 of telemetry published → trip command received by a subscriber.
//!
//! `cargo bench --bench mqtt`. The broker is `DOPPEL_BENCH_BROKER` when set (a URL),
//! else a Mosquitto started on a free loopback port when one is installed (with no
//! limit on messages in flight, as a node's broker should be configured), else the
//! embedded rumqttd. rumqttd keeps at most 100 unacknowledged messages in flight per
//! subscriber, and Doppel acknowledges only after the journal commit, so on rumqttd
//! durable intake is capped near 100 messages per commit. `DOPPEL_BENCH_MESSAGES`,
//! `DOPPEL_BENCH_TWINS` and `DOPPEL_BENCH_TRIPS` scale it. The last line is JSON.

mod common;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use common::{env_or, topology_toml};
use doppel::connectors::broker::EmbeddedBroker;
use doppel::connectors::mqtt::{MqttConfig, MqttConnector};
use doppel::{Runtime, RuntimeSettings, Topology, TwinTypes};
use rumqttc::{AsyncClient, Event, EventLoop, MqttOptions, Packet, QoS};
use tokio::sync::mpsc;

const TYPES: &str = r#"
[types.machine]
description = "benchmark machine"
[types.machine.channels.temperature]
unit = "degC"
range = [-50.0, 1000.0]
[types.machine.channels.flow]
unit = "l/min"
range = [0.0, 1000.0]
[types.machine.channels.pressure]
unit = "bar"
range = [0.0, 1000.0]
[types.machine.channels.power_kw]
unit = "kW"
range = [0.0, 1000.0]
[types.machine.channels.speed]
unit = "rpm"
range = [0.0, 5000.0]
[types.machine.desired.running]
type = "bool"
initial = true
[types.machine.commands.stop]
sets = { running = false }
[[types.machine.governors]]
kind = "trip"
channel = "temperature"
above = 500.0
blocks = ["running"]
"#;

const STREAM_CHANNELS: [&str; 4] = ["flow", "pressure", "power_kw", "speed"];

fn client(url: &str, id: &str) -> (AsyncClient, EventLoop) {
    let rest = url.trim_start_matches("mqtt://");
    let (host, port) = rest.rsplit_once(':').unwrap();
    let mut options = MqttOptions::new(id, host, port.parse().unwrap());
    options
        .set_keep_alive(Duration::from_secs(30))
        .set_inflight(u16::MAX)
        .set_max_packet_size(1 << 20, 1 << 20);
    AsyncClient::new(options, 10_000)
}

/// Drives an event loop; every received publish goes to `tx` with its arrival time.
fn drive(
    mut eventloop: EventLoop,
    tx: Option<mpsc::UnboundedSender<(String, Instant)>>,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        loop {
            match eventloop.poll().await {
                Ok(Event::Incoming(Packet::Publish(publish))) => {
                    if let Some(tx) = &tx {
                        let _ = tx.send((publish.topic, Instant::now()));
                    }
                }
                Ok(_) => {}
                Err(error) => {
                    eprintln!("bench client: {error}");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            }
        }
    })
}

/// Publishes `count` telemetry messages over the twins' stream channels, QoS 1, each
/// topic prefixed with `prefix`.
async fn publish_stream(url: &str, prefix: &str, paths: &[String], count: usize, round: usize) {
    let (publisher, eventloop) = client(url, &format!("bench-publisher-{round}"));
    let task = drive(eventloop, None);
    let topics: Vec<String> = paths
        .iter()
        .flat_map(|p| {
            STREAM_CHANNELS
                .iter()
                .map(move |c| format!("{prefix}{p}/telemetry/{c}"))
        })
        .collect();
    let base = (round as u64) << 40;
    for i in 0..count {
        let payload = format!(r#"{{"v":{}.5,"seq":{}}}"#, i % 900, base + i as u64);
        publisher
            .publish(
                topics[i % topics.len()].clone(),
                QoS::AtLeastOnce,
                false,
                payload,
            )
            .await
            .unwrap();
    }
    // Let the publisher's last acknowledgements arrive before the client goes.
    tokio::time::sleep(Duration::from_millis(200)).await;
    task.abort();
}

/// Messages per second a bare subscriber receives, from the first publish on: its
/// event loop only counts. Its stream goes under `raw/`, where the connector does not
/// listen.
async fn raw_per_s(url: &str, paths: &[String], count: usize, round: usize) -> f64 {
    let (subscriber, mut eventloop) = client(url, &format!("bench-raw-{round}"));
    let (done_tx, done_rx) = tokio::sync::oneshot::channel();
    let task = tokio::spawn(async move {
        let mut received = 0;
        let mut done = Some(done_tx);
        loop {
            match eventloop.poll().await {
                Ok(Event::Incoming(Packet::Publish(_))) => {
                    received += 1;
                    if received == count
                        && let Some(done) = done.take()
                    {
                        let _ = done.send(Instant::now());
                    }
                }
                Ok(_) => {}
                Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
            }
        }
    });
    subscriber
        .subscribe("raw/bench/plant/+/+/telemetry/#", QoS::AtLeastOnce)
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    let started = Instant::now();
    let url = url.to_string();
    let paths = paths.to_vec();
    let publisher =
        tokio::spawn(async move { publish_stream(&url, "raw/", &paths, count, round).await });
    let last = tokio::time::timeout(Duration::from_secs(120), done_rx)
        .await
        .expect("raw subscriber stalled")
        .unwrap();
    publisher.await.unwrap();
    let _ = subscriber.disconnect().await;
    task.abort();
    count as f64 / last.duration_since(started).as_secs_f64()
}

/// Messages per second Doppel applies durably (acknowledged after commit).
async fn doppel_per_s(
    url: &str,
    connector: &MqttConnector,
    runtime: &Runtime,
    paths: &[String],
    count: usize,
    round: usize,
) -> f64 {
    let stats = connector.stats();
    let acknowledged = || {
        stats
            .acknowledged
            .load(std::sync::atomic::Ordering::Relaxed)
    };
    let applied_before = runtime.twins().counters().samples_applied;
    let before = acknowledged();
    let started = Instant::now();
    let url = url.to_string();
    let paths = paths.to_vec();
    let publisher =
        tokio::spawn(async move { publish_stream(&url, "", &paths, count, round).await });
    while acknowledged() < before + count as u64 {
        assert!(
            started.elapsed() < Duration::from_secs(120),
            "doppel stalled"
        );
        tokio::time::sleep(Duration::from_micros(500)).await;
    }
    let elapsed = started.elapsed();
    publisher.await.unwrap();
    let applied = runtime.twins().counters().samples_applied - applied_before;
    let counters = runtime.twins().counters();
    assert_eq!(
        applied,
        count as u64,
        "every message applied once: {counters:?} {:?}",
        connector.drops().snapshot()
    );
    count as f64 / elapsed.as_secs_f64()
}

/// A Mosquitto child process, killed when dropped, and its config directory.
struct Mosquitto {
    child: std::process::Child,
    _dir: tempfile::TempDir,
}

impl Drop for Mosquitto {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Starts Mosquitto on a free loopback port if it is installed.
fn start_mosquitto() -> Option<(Mosquitto, String)> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    let binary = std::env::split_paths(&path)
        .chain([std::path::PathBuf::from("/usr/sbin")])
        .map(|dir| dir.join("mosquitto"))
        .find(|candidate| candidate.is_file())?;
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .ok()?
        .local_addr()
        .ok()?
        .port();
    let dir = tempfile::tempdir().ok()?;
    let config = dir.path().join("mosquitto.conf");
    std::fs::write(
        &config,
        format!(
            "listener {port} 127.0.0.1\nallow_anonymous true\nmax_inflight_messages 0\nmax_queued_messages 0\n"
        ),
    )
    .ok()?;
    let child = std::process::Command::new(binary)
        .arg("-c")
        .arg(&config)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .ok()?;
    let guard = Mosquitto { child, _dir: dir };
    let deadline = Instant::now() + Duration::from_secs(5);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        if Instant::now() > deadline {
            return None;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    Some((guard, format!("mqtt://127.0.0.1:{port}")))
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
}

fn main() {
    let messages = env_or("DOPPEL_BENCH_MESSAGES", 200_000);
    let twins = env_or("DOPPEL_BENCH_TWINS", 500);
    let trips = env_or("DOPPEL_BENCH_TRIPS", 400).min(twins);
    let tokio = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    tokio.block_on(async move {
        let mut _mosquitto = None;
        let (url, broker_name) = match std::env::var("DOPPEL_BENCH_BROKER") {
            Ok(url) => (url.clone(), url),
            Err(_) => match start_mosquitto() {
                Some((guard, url)) => {
                    _mosquitto = Some(guard);
                    (url, "mosquitto (max_inflight_messages 0)".to_string())
                }
                None => {
                    let broker =
                        EmbeddedBroker::start(SocketAddr::from(([127, 0, 0, 1], 0))).unwrap();
                    (broker.url(), "embedded rumqttd (100 in flight per subscriber)".to_string())
                }
            },
        };
        let dir = tempfile::tempdir().unwrap();
        let types = TwinTypes::from_toml(TYPES, "bench/types.toml").unwrap();
        let topology =
            Topology::from_toml(&topology_toml(twins), "bench/plant.toml", &types).unwrap();
        let paths: Vec<String> = topology.machines().map(|m| m.path.to_string()).collect();
        let runtime = Runtime::builder()
            .twin_types(types)
            .topology(topology)
            .data_dir(dir.path())
            .settings(RuntimeSettings::default())
            .start()
            .await
            .unwrap();
        let mut config = MqttConfig::new(&url);
        config.name = "bench".into();
        let connector = MqttConnector::start(config, runtime.twins().clone())
            .await
            .unwrap();
        assert!(connector.wait_connected(Duration::from_secs(10)).await);
        println!("broker: {broker_name}; {twins} twins, {messages} QoS 1 messages per round");

        // Alternate rounds so both see the same machine conditions; keep the best of each.
        let mut raw = 0f64;
        let mut doppel = 0f64;
        for round in 0..3 {
            let r = raw_per_s(&url, &paths, messages, round * 2).await;
            let d = doppel_per_s(&url, &connector, &runtime, &paths, messages, round * 2 + 1).await;
            println!("round {round}: raw subscriber {r:.0}/s, doppel durable {d:.0}/s");
            raw = raw.max(r);
            doppel = doppel.max(d);
        }

        // Telemetry published → trip command received, one twin at a time.
        let (watcher, eventloop) = client(&url, "bench-watcher");
        let (tx, mut rx) = mpsc::unbounded_channel();
        let watch_task = drive(eventloop, Some(tx));
        watcher
            .subscribe("bench/plant/+/+/cmd", QoS::AtLeastOnce)
            .await
            .unwrap();
        let (machine, eventloop) = client(&url, "bench-machine");
        let machine_task = drive(eventloop, None);
        tokio::time::sleep(Duration::from_millis(300)).await;
        let mut latencies = Vec::with_capacity(trips);
        for path in paths.iter().take(trips) {
            let topic = format!("{path}/telemetry/temperature");
            let expect = format!("{path}/cmd");
            let sent = Instant::now();
            machine
                .publish(topic, QoS::AtLeastOnce, false, r#"{"v": 612.0}"#)
                .await
                .unwrap();
            loop {
                let (topic, at) = tokio::time::timeout(Duration::from_secs(10), rx.recv())
                    .await
                    .expect("no trip command")
                    .unwrap();
                if topic == expect {
                    latencies.push(at.duration_since(sent).as_secs_f64() * 1e6);
                    break;
                }
            }
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        latencies.sort_by(f64::total_cmp);
        let p50 = percentile(&latencies, 0.50);
        let p99 = percentile(&latencies, 0.99);
        println!(
            "trip: {} trips, published → command received p50 {p50:.0} µs, p99 {p99:.0} µs",
            latencies.len()
        );
        watch_task.abort();
        machine_task.abort();
        connector.stop().await;
        runtime.shutdown().await;
        println!(
            "{{\"scenario\":\"mqtt\",\"raw_per_s\":{raw:.0},\"doppel_per_s\":{doppel:.0},\"ratio\":{:.3},\"trip_p50_us\":{p50:.0},\"trip_p99_us\":{p99:.0}}}",
            doppel / raw
        );
    });
}
