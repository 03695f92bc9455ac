//! The MQTT connector against real brokers: the embedded rumqttd and Mosquitto.

use std::time::Duration;

use doppel::connectors::DropKind;
use doppel::connectors::mqtt::{MqttConfig, MqttConnector};
use doppel::{Command, Delivery, DeliveryState, Origin, Quality, Runtime, SampleRejection, Value};
use rumqttc::{Event, EventLoop, Packet, QoS};
use serde_json::Value as Json;
use tokio::sync::mpsc;

use crate::brokers::{self, Mosquitto};
use crate::support::{self, press, wait_until};

const WAIT: Duration = Duration::from_secs(10);

async fn connect(runtime: &Runtime, url: &str) -> MqttConnector {
    connect_with(runtime, MqttConfig::new(url)).await
}

async fn connect_with(runtime: &Runtime, mut config: MqttConfig) -> MqttConnector {
    config.max_payload = 4096;
    let connector = MqttConnector::start(config, runtime.twins().clone())
        .await
        .unwrap();
    assert!(
        connector.wait_connected(WAIT).await,
        "connector did not connect"
    );
    connector
}

/// Drives a test client's event loop, forwarding publishes to a channel.
pub fn pump(
    mut eventloop: EventLoop,
) -> (
    mpsc::UnboundedReceiver<(String, Vec<u8>)>,
    tokio::task::JoinHandle<()>,
) {
    let (tx, rx) = mpsc::unbounded_channel();
    let task = tokio::spawn(async move {
        loop {
            match eventloop.poll().await {
                Ok(Event::Incoming(Packet::Publish(p))) => {
                    let _ = tx.send((p.topic.clone(), p.payload.to_vec()));
                }
                Ok(_) => {}
                Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
            }
        }
    });
    (rx, task)
}

/// Messages a test client received, searched by topic in arrival order.
pub struct Inbox {
    rx: mpsc::UnboundedReceiver<(String, Vec<u8>)>,
    unread: Vec<(String, Vec<u8>)>,
}

impl Inbox {
    pub fn new(rx: mpsc::UnboundedReceiver<(String, Vec<u8>)>) -> Self {
        Self {
            rx,
            unread: Vec::new(),
        }
    }

    /// The first unread message on `topic`, waiting for it if needed.
    pub async fn next_on(&mut self, topic: &str) -> Vec<u8> {
        if let Some(i) = self.unread.iter().position(|(t, _)| t == topic) {
            return self.unread.remove(i).1;
        }
        tokio::time::timeout(WAIT, async {
            loop {
                let (t, payload) = self.rx.recv().await.expect("client closed");
                if t == topic {
                    return payload;
                }
                self.unread.push((t, payload));
            }
        })
        .await
        .unwrap_or_else(|_| panic!("nothing published on {topic}"))
    }

    /// Like [`Inbox::next_on`], parsed as JSON.
    pub async fn json_on(&mut self, topic: &str) -> Json {
        serde_json::from_slice(&self.next_on(topic).await).unwrap()
    }
}

async fn value_of(runtime: &Runtime, channel: &str) -> Option<f64> {
    runtime
        .twins()
        .report(&press(1))
        .await
        .unwrap()
        .value(channel)
}

/// Telemetry changes the twin; a trip publishes a safety command on `…/cmd`; a
/// command's verdict is published on `…/cmd/result`.
async fn round_trip(url: &str) {
    round_trip_with(MqttConfig::new(url), url).await;
}

/// Telemetry in and a command's verdict and actuation out through a connector with
/// `config`, the machine's side a plain client of the broker at `url`.
pub async fn round_trip_with(config: MqttConfig, url: &str) {
    let dir = tempfile::tempdir().unwrap();
    let runtime = support::start(dir.path()).await;
    let connector = connect_with(&runtime, config).await;
    let (client, eventloop) = brokers::client(url, "test-machine", true);
    let (rx, pump_task) = pump(eventloop);
    let mut inbox = Inbox::new(rx);
    client
        .subscribe("acme/plant-a/line-1/press-1/cmd/#", QoS::AtLeastOnce)
        .await
        .unwrap();
    let base = "acme/plant-a/line-1/press-1/telemetry";

    // Stamped a little in the past, relative to now: well inside the age the twin
    // accepts on any day the test runs.
    let source_time = support::ago(Duration::from_secs(90));
    client
        .publish(
            format!("{base}/temperature"),
            QoS::AtLeastOnce,
            false,
            format!(
                r#"{{"v": 71.5, "ts": "{}", "q": "good", "seq": 1}}"#,
                source_time.to_rfc3339()
            ),
        )
        .await
        .unwrap();
    wait_until("the twin follows the telemetry", WAIT, || async {
        value_of(&runtime, "temperature").await == Some(71.5)
    })
    .await;
    let report = runtime.twins().report(&press(1)).await.unwrap();
    let sample = report
        .reported
        .iter()
        .find(|r| r.channel == "temperature")
        .and_then(|r| r.sample)
        .unwrap();
    assert_eq!(sample.source_time, source_time);

    // The batch form, with a bare number and an object with its own quality.
    client
        .publish(
            base,
            QoS::AtLeastOnce,
            false,
            r#"{"values": {"vibration": 2.5, "temperature_b": {"v": 71.0, "q": "uncertain"}}}"#,
        )
        .await
        .unwrap();
    wait_until("the batch reaches the twin", WAIT, || async {
        value_of(&runtime, "vibration").await == Some(2.5)
            && value_of(&runtime, "temperature_b").await == Some(71.0)
    })
    .await;
    let report = runtime.twins().report(&press(1)).await.unwrap();
    let quality = report
        .reported
        .iter()
        .find(|r| r.channel == "temperature_b")
        .and_then(|r| r.sample)
        .unwrap()
        .quality;
    assert_eq!(quality, Quality::Uncertain);

    // Over-temperature: the trip governor stops the press and the stop goes out.
    client
        .publish(
            format!("{base}/temperature"),
            QoS::AtLeastOnce,
            false,
            "120.0",
        )
        .await
        .unwrap();
    let command = inbox.json_on("acme/plant-a/line-1/press-1/cmd").await;
    assert_eq!(command["safety"], Json::Bool(true), "{command}");
    assert_eq!(command["set"]["running"], Json::Bool(false), "{command}");

    // An operator's command: its verdict and the actuation are published.
    let outcome = runtime
        .twins()
        .command(
            Command::new(press(1), "set_speed", Origin::operator("ann"))
                .param("rpm", Value::Float(2900.0)),
        )
        .await
        .unwrap();
    assert_eq!(outcome.verdict.as_str(), "clamped");
    let result = inbox
        .json_on("acme/plant-a/line-1/press-1/cmd/result")
        .await;
    assert_eq!(result["verdict"], "clamped", "{result}");
    assert_eq!(result["applied"]["speed"], Json::from(2400.0), "{result}");
    assert_eq!(result["origin"]["principal"], "ann", "{result}");
    let actuation = inbox.json_on("acme/plant-a/line-1/press-1/cmd").await;
    assert_eq!(actuation["command"], "set_speed", "{actuation}");
    assert_eq!(actuation["set"]["speed"], Json::from(2400.0), "{actuation}");
    // Only the governed value leaves the twin: no requested parameters, no 2900.
    let carried: Vec<&Json> = actuation
        .as_object()
        .unwrap()
        .values()
        .chain(actuation["set"].as_object().unwrap().values())
        .collect();
    assert!(
        actuation.get("params").is_none() && !carried.contains(&&Json::from(2900.0)),
        "only the governed value leaves the twin: {actuation}"
    );

    assert_eq!(
        connector.drops().total(),
        0,
        "{:?}",
        connector.drops().snapshot()
    );
    pump_task.abort();
    connector.stop().await;
    runtime.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn telemetry_commands_and_verdicts_over_the_embedded_broker() {
    let broker = brokers::embedded();
    round_trip(&broker.url()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn telemetry_commands_and_verdicts_over_mosquitto() {
    let Some(broker) = Mosquitto::start("telemetry_commands_and_verdicts_over_mosquitto") else {
        return;
    };
    round_trip(&broker.url()).await;
}

/// How a bad message is lost: dropped by the connector, or refused by the twin.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Lost {
    Dropped(DropKind),
    Refused(SampleRejection),
}

/// Every kind of bad input is counted and dropped; the twin keeps its state.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_is_counted_per_kind_and_never_changes_a_twin() {
    let broker = brokers::embedded();
    let dir = tempfile::tempdir().unwrap();
    let runtime = support::start(dir.path()).await;
    let connector = connect(&runtime, &broker.url()).await;
    let (client, eventloop) = brokers::client(&broker.url(), "bad-publisher", true);
    let (_rx, pump_task) = pump(eventloop);
    let base = "acme/plant-a/line-1/press-1/telemetry";
    let far_future = "2999-01-01T00:00:00Z";
    let cases: Vec<(String, Vec<u8>, Lost)> = vec![
        (
            format!("{base}/temperature"),
            b"{\"v\": 71".to_vec(),
            Lost::Dropped(DropKind::MalformedJson),
        ),
        (
            format!("{base}/temperature"),
            b"\xff\xfe".to_vec(),
            Lost::Dropped(DropKind::MalformedJson),
        ),
        (
            format!("{base}/temperature"),
            br#"{"v": "hot"}"#.to_vec(),
            Lost::Dropped(DropKind::WrongType),
        ),
        (
            format!("{base}/temperature"),
            br#"[1, 2]"#.to_vec(),
            Lost::Dropped(DropKind::WrongType),
        ),
        (
            format!("{base}/temperature"),
            br#"{"v": 1, "seq": -4}"#.to_vec(),
            Lost::Dropped(DropKind::WrongType),
        ),
        (
            "acme/plant-a/line-1/press-9/telemetry/temperature".into(),
            b"50".to_vec(),
            Lost::Dropped(DropKind::UnknownAsset),
        ),
        (
            format!("{base}/colour"),
            b"50".to_vec(),
            Lost::Dropped(DropKind::UnknownChannel),
        ),
        (
            format!("{base}/temperature"),
            b"1e999".to_vec(),
            Lost::Dropped(DropKind::MalformedJson),
        ),
        (
            format!("{base}/temperature"),
            b"900".to_vec(),
            Lost::Refused(SampleRejection::OutOfRange),
        ),
        (
            format!("{base}/temperature"),
            format!(r#"{{"v": 50, "ts": "{far_future}"}}"#).into_bytes(),
            Lost::Refused(SampleRejection::InFuture),
        ),
        (
            format!("{base}/temperature"),
            br#"{"v": 50, "ts": "1970-01-01T00:00:00Z"}"#.to_vec(),
            Lost::Refused(SampleRejection::TooOld),
        ),
        (
            format!("{base}/temperature"),
            br#"{"v": 50, "ts": "yesterday"}"#.to_vec(),
            Lost::Dropped(DropKind::BadTimestamp),
        ),
        (
            format!("{base}/temperature"),
            br#"{"v": 50, "q": "great"}"#.to_vec(),
            Lost::Dropped(DropKind::BadQuality),
        ),
        (
            format!("{base}/temperature"),
            vec![b' '; 5000],
            Lost::Dropped(DropKind::Oversized),
        ),
        (
            base.to_string(),
            br#"{"values": 3}"#.to_vec(),
            Lost::Dropped(DropKind::MalformedJson),
        ),
    ];
    for (topic, payload, _) in &cases {
        client
            .publish(topic.clone(), QoS::AtLeastOnce, false, payload.clone())
            .await
            .unwrap();
    }
    // A good reading after the bad ones proves they were all processed.
    client
        .publish(
            format!("{base}/temperature"),
            QoS::AtLeastOnce,
            false,
            "42.0",
        )
        .await
        .unwrap();
    wait_until("the good reading arrives", WAIT, || async {
        value_of(&runtime, "temperature").await == Some(42.0)
    })
    .await;
    let drops = connector.drops();
    for kind in DropKind::ALL {
        let expected = cases
            .iter()
            .filter(|(_, _, lost)| *lost == Lost::Dropped(kind))
            .count() as u64;
        assert_eq!(
            drops.count(kind),
            expected,
            "{kind}: {:?}",
            drops.snapshot()
        );
    }
    for reason in SampleRejection::ALL {
        let expected = cases
            .iter()
            .filter(|(_, _, lost)| *lost == Lost::Refused(reason))
            .count() as u64;
        assert_eq!(
            drops.refused(reason),
            expected,
            "{reason:?}: {:?}",
            drops.refusals()
        );
    }
    let report = runtime.twins().report(&press(1)).await.unwrap();
    assert_eq!(report.value("temperature"), Some(42.0));
    assert!(report.trips.is_empty());
    pump_task.abort();
    connector.stop().await;
    runtime.shutdown().await;
}

/// Publishes `count` readings of `throughput` with sequence numbers `first..`.
async fn publish_readings(client: &rumqttc::AsyncClient, first: u64, count: u64) {
    for seq in first..first + count {
        client
            .publish(
                "acme/plant-a/line-1/press-1/telemetry/throughput",
                QoS::AtLeastOnce,
                false,
                format!(r#"{{"v": {}, "seq": {seq}}}"#, seq % 150),
            )
            .await
            .unwrap();
    }
}

/// The broker restarts mid-stream: every QoS 1 message published before and after
/// the restart ends in the twin exactly once, without restarting Doppel.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn broker_restart_mid_stream_loses_and_duplicates_nothing() {
    let Some(mut broker) =
        Mosquitto::start("broker_restart_mid_stream_loses_and_duplicates_nothing")
    else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let runtime = support::start(dir.path()).await;
    let mut config = MqttConfig::new(broker.url());
    config.reconnect_max_ms = 500;
    let connector = MqttConnector::start(config, runtime.twins().clone())
        .await
        .unwrap();
    assert!(connector.wait_connected(WAIT).await);
    let (client, eventloop) = brokers::client(&broker.url(), "restart-publisher", false);
    let (_rx, pump_task) = pump(eventloop);
    const HALF: u64 = 3000;
    publish_readings(&client, 1, HALF).await;
    wait_until("part of the stream arrives", WAIT, || async {
        runtime.twins().counters().samples_applied > 100
    })
    .await;
    tokio::task::block_in_place(|| broker.restart());
    publish_readings(&client, HALF + 1, HALF).await;
    wait_until(
        "every message is applied",
        Duration::from_secs(60),
        || async { runtime.twins().counters().samples_applied >= 2 * HALF },
    )
    .await;
    // Let redeliveries, if any are still under way, arrive.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let counters = runtime.twins().counters();
    assert_eq!(counters.samples_applied, 2 * HALF, "{counters:?}");
    assert_eq!(counters.samples_late, 0, "{counters:?}");
    assert!(
        connector
            .stats()
            .connections
            .load(std::sync::atomic::Ordering::Relaxed)
            >= 2
    );
    assert_eq!(
        runtime
            .twins()
            .report(&press(1))
            .await
            .unwrap()
            .value("throughput"),
        Some(((2 * HALF) % 150) as f64)
    );
    eprintln!(
        "broker restart: {} applied, {} redelivered duplicates ignored",
        counters.samples_applied, counters.samples_duplicate
    );
    pump_task.abort();
    connector.stop().await;
    runtime.shutdown().await;
    drop(broker);
}

/// press-1's speed delivery as the twin holds it.
async fn speed_delivery(runtime: &Runtime) -> Delivery {
    let report = runtime.twins().report(&press(1)).await.unwrap();
    report
        .desired
        .into_iter()
        .find(|(name, _)| name == "speed")
        .map(|(_, value)| value.delivery)
        .unwrap()
}

/// The `set.speed` of every command message received so far on press-1's command
/// topic, in order.
fn speeds_published(inbox: &mut Inbox) -> Vec<f64> {
    while let Ok(message) = inbox.rx.try_recv() {
        inbox.unread.push(message);
    }
    inbox
        .unread
        .iter()
        .filter(|(topic, _)| topic == "acme/plant-a/line-1/press-1/cmd")
        .filter_map(|(_, payload)| {
            let body: Json = serde_json::from_slice(payload).ok()?;
            body["set"]["speed"].as_f64()
        })
        .collect()
}

/// The broker acknowledges a command's publish: the twin shows it delivered by the
/// connector. While the broker is down a command stays pending; when the broker is
/// back it goes out exactly once and is delivered.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_command_while_the_broker_is_down_is_published_once_when_it_is_back() {
    let Some(mut broker) =
        Mosquitto::start("a_command_while_the_broker_is_down_is_published_once_when_it_is_back")
    else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let runtime = support::start(dir.path()).await;
    let mut config = MqttConfig::new(broker.url());
    config.reconnect_max_ms = 300;
    let connector = MqttConnector::start(config, runtime.twins().clone())
        .await
        .unwrap();
    assert!(connector.wait_connected(WAIT).await);
    // A machine with a persistent session: what is published while it is away waits
    // for it at the broker.
    let (client, eventloop) = brokers::client(&broker.url(), "press-1-machine", false);
    let (rx, pump_task) = pump(eventloop);
    let mut inbox = Inbox::new(rx);
    client
        .subscribe("acme/plant-a/line-1/press-1/cmd", QoS::AtLeastOnce)
        .await
        .unwrap();
    let send = |rpm: f64| {
        let twins = runtime.twins().clone();
        async move {
            twins
                .command(
                    Command::new(press(1), "set_speed", Origin::operator("ann"))
                        .param("rpm", Value::Float(rpm)),
                )
                .await
                .unwrap()
        }
    };
    // The machine's subscription is in place before the first command goes out.
    tokio::time::timeout(WAIT, async {
        loop {
            send(1100.0).await;
            tokio::time::sleep(Duration::from_millis(100)).await;
            if speeds_published(&mut inbox).contains(&1100.0) {
                break;
            }
        }
    })
    .await
    .expect("the command connection publishes to the machine");
    wait_until("the PUBACK marks it delivered", WAIT, || async {
        speed_delivery(&runtime).await.state == DeliveryState::Delivered
    })
    .await;
    assert_eq!(speed_delivery(&runtime).await.by, "mqtt:mqtt");
    let before = speeds_published(&mut inbox).len();

    tokio::task::block_in_place(|| broker.stop());
    wait_until("the connector notices", WAIT, || async {
        !connector.is_connected()
    })
    .await;
    send(1150.0).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(
        speed_delivery(&runtime).await.state,
        DeliveryState::Pending,
        "not delivered while the broker is down"
    );

    tokio::task::block_in_place(|| broker.restart());
    wait_until(
        "delivered once the broker is back",
        Duration::from_secs(30),
        || async { speed_delivery(&runtime).await.state == DeliveryState::Delivered },
    )
    .await;
    tokio::time::timeout(WAIT, async {
        while !speeds_published(&mut inbox).contains(&1150.0) {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await
    .expect("the machine receives it");
    // Let a duplicate, if any, arrive.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let after: Vec<f64> = speeds_published(&mut inbox)[before..].to_vec();
    assert_eq!(after, vec![1150.0], "published exactly once");

    pump_task.abort();
    connector.stop().await;
    runtime.shutdown().await;
    drop(broker);
}

fn resident_bytes() -> u64 {
    let statm = std::fs::read_to_string("/proc/self/statm").unwrap();
    let pages: u64 = statm.split_whitespace().nth(1).unwrap().parse().unwrap();
    pages * 4096
}

/// Where the flood test tells its own process which broker to use.
const FLOOD_BROKER_ENV: &str = "DOPPEL_TEST_FLOOD_BROKER";

/// 100,000 malformed messages mixed with valid ones: every valid one applied, every
/// bad one counted, memory flat. The flood runs in a process of its own (this test
/// binary, running only [`flood_in_a_process_of_its_own`]), so that the resident
/// memory it measures is the connector's and the twins', not that of the other tests
/// running beside it.
#[test]
fn a_flood_of_malformed_messages_is_counted_and_valid_ones_applied() {
    let Some(broker) =
        Mosquitto::start("a_flood_of_malformed_messages_is_counted_and_valid_ones_applied")
    else {
        return;
    };
    let child = std::process::Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "mqtt::flood_in_a_process_of_its_own",
            "--ignored",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(FLOOD_BROKER_ENV, broker.url())
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let output = support::wait_for_exit(child, Duration::from_secs(600));
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "the flood failed in its own process ({}):\n{stdout}\n{stderr}",
        output.status
    );
    assert!(
        stdout.contains("1 passed"),
        "the flood did not run in its own process:\n{stdout}\n{stderr}"
    );
    eprint!("{stderr}");
}

/// The flood itself, started by
/// [`a_flood_of_malformed_messages_is_counted_and_valid_ones_applied`] in a process of
/// its own; run alone, it starts its own broker.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "run in a process of its own by a_flood_of_malformed_messages_is_counted_and_valid_ones_applied"]
async fn flood_in_a_process_of_its_own() {
    let mut own_broker = None;
    let url = match std::env::var(FLOOD_BROKER_ENV) {
        Ok(url) => url,
        Err(_) => {
            let Some(broker) = Mosquitto::start("flood_in_a_process_of_its_own") else {
                return;
            };
            own_broker.insert(broker).url()
        }
    };
    let dir = tempfile::tempdir().unwrap();
    let runtime = support::start(dir.path()).await;
    let connector = connect(&runtime, &url).await;
    let (client, eventloop) = brokers::client(&url, "flood", false);
    let (_rx, pump_task) = pump(eventloop);
    let base = "acme/plant-a/line-1/press-1/telemetry";
    let bad: [(String, Vec<u8>); 8] = [
        (format!("{base}/throughput"), b"{\"v\": ".to_vec()),
        (format!("{base}/throughput"), br#"{"v": "fast"}"#.to_vec()),
        (format!("{base}/throughput"), br#"{"v": null}"#.to_vec()),
        (
            "acme/plant-a/line-7/press-1/telemetry/throughput".into(),
            b"1".to_vec(),
        ),
        (format!("{base}/smell"), b"1".to_vec()),
        (format!("{base}/throughput"), b"-5".to_vec()),
        (
            format!("{base}/throughput"),
            br#"{"v": 1, "ts": 99999999999999}"#.to_vec(),
        ),
        (format!("{base}/throughput"), vec![0xde, 0xad, 0xbe, 0xef]),
    ];
    const BAD: u64 = 100_000;
    const ROUNDS: u64 = 4;
    const EVERY: u64 = 40;
    let mut valid = 0u64;
    let mut i = 0u64;
    let mut resident = Vec::new();
    for round in 1..=ROUNDS {
        let mut sent_bad = 0u64;
        while sent_bad < BAD / ROUNDS {
            i += 1;
            if i.is_multiple_of(EVERY) {
                valid += 1;
                let payload = format!(r#"{{"v": {}, "seq": {valid}}}"#, valid % 150);
                client
                    .publish(
                        format!("{base}/throughput"),
                        QoS::AtLeastOnce,
                        false,
                        payload,
                    )
                    .await
                    .unwrap();
            } else {
                let (topic, payload) = &bad[(i % bad.len() as u64) as usize];
                client
                    .publish(topic.clone(), QoS::AtLeastOnce, false, payload.clone())
                    .await
                    .unwrap();
                sent_bad += 1;
            }
        }
        let deadline = std::time::Instant::now() + Duration::from_secs(120);
        while connector.drops().total() < round * BAD / ROUNDS
            || runtime.twins().counters().samples_applied < valid
        {
            let stats = connector.stats();
            assert!(
                std::time::Instant::now() < deadline,
                "round {round} not processed: {} dropped of {}, {} of {valid} applied, \
                 {} received, {} acknowledged, {} connections",
                connector.drops().total(),
                round * BAD / ROUNDS,
                runtime.twins().counters().samples_applied,
                stats.received.load(std::sync::atomic::Ordering::Relaxed),
                stats
                    .acknowledged
                    .load(std::sync::atomic::Ordering::Relaxed),
                stats.connections.load(std::sync::atomic::Ordering::Relaxed),
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        resident.push(resident_bytes());
    }
    let counters = runtime.twins().counters();
    assert_eq!(
        connector.drops().total(),
        BAD,
        "{:?}",
        connector.drops().snapshot()
    );
    assert_eq!(counters.samples_applied, valid, "{counters:?}");
    assert_eq!(
        runtime
            .twins()
            .report(&press(1))
            .await
            .unwrap()
            .value("throughput"),
        Some((valid % 150) as f64)
    );
    let megabytes: Vec<u64> = resident.iter().map(|bytes| bytes >> 20).collect();
    eprintln!("flood: {BAD} bad, {valid} valid; resident MB after each quarter: {megabytes:?}");
    // This process runs the flood alone; a leak per message would show as tens of
    // megabytes over 50,000 messages.
    let growth = resident[3].saturating_sub(resident[1]);
    assert!(
        growth < 12 << 20,
        "memory grew by {} MB over the last 50,000 bad messages",
        growth >> 20
    );
    pump_task.abort();
    connector.stop().await;
    runtime.shutdown().await;
}
