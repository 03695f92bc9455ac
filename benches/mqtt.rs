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
use doppel_testkit::mosquitto::Mosquitto;
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

/// What a bench client's event loop saw: publishes received (with their arrival time),
/// and acknowledgements of its own subscriptions and QoS 1 publishes.
#[derive(Debug)]
enum Seen {
    Publish(String, Instant),
    SubAck,
    PubAck,
}

/// Drives an event loop, reporting what it sees to `tx`. A connection error is printed
/// and retried: the client resumes its session and resends what was in flight.
fn drive(mut eventloop: EventLoop, tx: mpsc::UnboundedSender<Seen>) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        loop {
            let seen = match eventloop.poll().await {
                Ok(Event::Incoming(Packet::Publish(publish))) => {
                    Seen::Publish(publish.topic, Instant::now())
                }
                Ok(Event::Incoming(Packet::SubAck(_))) => Seen::SubAck,
                Ok(Event::Incoming(Packet::PubAck(_))) => Seen::PubAck,
                Ok(_) => continue,
                Err(error) => {
                    eprintln!("bench client: {error}");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            };
            if tx.send(seen).is_err() {
                return;
            }
        }
    })
}

/// Subscribes to `filter` and waits for the broker's SUBACK, so nothing published after
/// this returns is missed.
async fn subscribe(client: &AsyncClient, events: &mut mpsc::UnboundedReceiver<Seen>, filter: &str) {
    client.subscribe(filter, QoS::AtLeastOnce).await.unwrap();
    let acknowledged = tokio::time::timeout(STALL, async {
        while let Some(seen) = events.recv().await {
            if matches!(seen, Seen::SubAck) {
                return true;
            }
        }
        false
    })
    .await;
    assert!(
        acknowledged == Ok(true),
        "stalled: the broker did not acknowledge the subscription to {filter} within {STALL:?}"
    );
}

/// How long any phase may go without finishing before the bench fails saying what
/// stalled.
const STALL: Duration = Duration::from_secs(120);

/// Publishes `count` telemetry messages over the twins' stream channels, QoS 1, each
/// topic prefixed with `prefix`, and returns once the broker has acknowledged every one
/// of them (a client dropped earlier would lose what it still had queued).
async fn publish_stream(url: &str, prefix: &str, paths: &[String], count: usize, round: usize) {
    let (publisher, eventloop) = client(url, &format!("bench-publisher-{round}"));
    let (tx, mut events) = mpsc::unbounded_channel();
    let task = drive(eventloop, tx);
    let topics: Vec<String> = paths
        .iter()
        .flat_map(|p| {
            STREAM_CHANNELS
                .iter()
                .map(move |c| format!("{prefix}{p}/telemetry/{c}"))
        })
        .collect();
    let base = (round as u64) << 40;
    let mut acknowledged = 0;
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
        while let Ok(seen) = events.try_recv() {
            acknowledged += usize::from(matches!(seen, Seen::PubAck));
        }
    }
    let all_acknowledged = tokio::time::timeout(STALL, async {
        while acknowledged < count {
            match events.recv().await {
                Some(Seen::PubAck) => acknowledged += 1,
                Some(_) => {}
                None => return,
            }
        }
    })
    .await;
    assert!(
        all_acknowledged.is_ok() && acknowledged == count,
        "stalled: the broker acknowledged {acknowledged} of {count} publishes from {prefix:?} \
         within {STALL:?}"
    );
    let _ = publisher.disconnect().await;
    task.abort();
}

/// Messages per second a bare subscriber receives, from the first publish on: its
/// event loop only counts. Its stream goes under `raw/`, where the connector does not
/// listen.
async fn raw_per_s(url: &str, paths: &[String], count: usize, round: usize) -> f64 {
    let (subscriber, eventloop) = client(url, &format!("bench-raw-{round}"));
    let (tx, mut events) = mpsc::unbounded_channel();
    let task = drive(eventloop, tx);
    subscribe(&subscriber, &mut events, "raw/bench/plant/+/+/telemetry/#").await;
    let started = Instant::now();
    let url = url.to_string();
    let paths = paths.to_vec();
    let publisher =
        tokio::spawn(async move { publish_stream(&url, "raw/", &paths, count, round).await });
    let mut received = 0;
    let mut last = started;
    let finished = tokio::time::timeout(STALL, async {
        while received < count {
            match events.recv().await {
                Some(Seen::Publish(_, at)) => {
                    received += 1;
                    last = at;
                }
                Some(_) => {}
                None => return,
            }
        }
    })
    .await;
    assert!(
        finished.is_ok() && received == count,
        "stalled: the bare subscriber received {received} of {count} messages within {STALL:?}"
    );
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
            started.elapsed() < STALL,
            "stalled: Doppel acknowledged {} of {count} messages within {STALL:?}; {:?}",
            acknowledged() - before,
            connector.drops().snapshot()
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
            Err(_) => match Mosquitto::start_in_memory("the mqtt bench") {
                Some(broker) => {
                    let url = broker.url();
                    _mosquitto = Some(broker);
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
        let watch_task = drive(eventloop, tx);
        subscribe(&watcher, &mut rx, "bench/plant/+/+/cmd").await;
        let (machine, eventloop) = client(&url, "bench-machine");
        let (machine_tx, _machine_events) = mpsc::unbounded_channel();
        let machine_task = drive(eventloop, machine_tx);
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
                let seen = tokio::time::timeout(Duration::from_secs(10), rx.recv())
                    .await
                    .unwrap_or_else(|_| panic!("stalled: no trip command on {expect} within 10 s"))
                    .unwrap();
                if let Seen::Publish(topic, at) = seen
                    && topic == expect
                {
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
