//! The MQTT connector against real brokers: the embedded rumqttd and Mosquitto.

use std::time::Duration;

use doppel::connectors::DropKind;
use doppel::connectors::mqtt::{MqttConfig, MqttConnector};
use doppel::{Command, Origin, Quality, Runtime, Value};
use rumqttc::{Event, EventLoop, Packet, QoS};
use serde_json::Value as Json;
use tokio::sync::mpsc;

use crate::brokers::{self, Mosquitto};
use crate::support::{self, press, wait_until};

const WAIT: Duration = Duration::from_secs(10);

async fn connect(runtime: &Runtime, url: &str) -> MqttConnector {
    let mut config = MqttConfig::new(url);
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
    let dir = tempfile::tempdir().unwrap();
    let runtime = support::start(dir.path()).await;
    let connector = connect(&runtime, url).await;
    let (client, eventloop) = brokers::client(url, "test-machine", true);
    let (rx, pump_task) = pump(eventloop);
    let mut inbox = Inbox::new(rx);
    client
        .subscribe("acme/plant-a/line-1/press-1/cmd/#", QoS::AtLeastOnce)
        .await
        .unwrap();
    let base = "acme/plant-a/line-1/press-1/telemetry";

    client
        .publish(
            format!("{base}/temperature"),
            QoS::AtLeastOnce,
            false,
            r#"{"v": 71.5, "ts": "2026-11-21T10:00:00.123Z", "q": "good", "seq": 1}"#,
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
    assert_eq!(
        sample.source_time,
        doppel::Timestamp::parse_rfc3339("2026-11-21T10:00:00.123Z").unwrap()
    );

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
    let cases: Vec<(String, Vec<u8>, DropKind)> = vec![
        (
            format!("{base}/temperature"),
            b"{\"v\": 71".to_vec(),
            DropKind::MalformedJson,
        ),
        (
            format!("{base}/temperature"),
            b"\xff\xfe".to_vec(),
            DropKind::MalformedJson,
        ),
        (
            format!("{base}/temperature"),
            br#"{"v": "hot"}"#.to_vec(),
            DropKind::WrongType,
        ),
        (
            format!("{base}/temperature"),
            br#"[1, 2]"#.to_vec(),
            DropKind::WrongType,
        ),
        (
            format!("{base}/temperature"),
            br#"{"v": 1, "seq": -4}"#.to_vec(),
            DropKind::WrongType,
        ),
        (
            "acme/plant-a/line-1/press-9/telemetry/temperature".into(),
            b"50".to_vec(),
            DropKind::UnknownAsset,
        ),
        (
            format!("{base}/colour"),
            b"50".to_vec(),
            DropKind::UnknownChannel,
        ),
        (
            format!("{base}/temperature"),
            b"1e999".to_vec(),
            DropKind::MalformedJson,
        ),
        (
            format!("{base}/temperature"),
            b"900".to_vec(),
            DropKind::OutOfRange,
        ),
        (
            format!("{base}/temperature"),
            format!(r#"{{"v": 50, "ts": "{far_future}"}}"#).into_bytes(),
            DropKind::BadTimestamp,
        ),
        (
            format!("{base}/temperature"),
            br#"{"v": 50, "ts": "1970-01-01T00:00:00Z"}"#.to_vec(),
            DropKind::BadTimestamp,
        ),
        (
            format!("{base}/temperature"),
            br#"{"v": 50, "ts": "yesterday"}"#.to_vec(),
            DropKind::BadTimestamp,
        ),
        (
            format!("{base}/temperature"),
            br#"{"v": 50, "q": "great"}"#.to_vec(),
            DropKind::BadQuality,
        ),
        (
            format!("{base}/temperature"),
            vec![b' '; 5000],
            DropKind::Oversized,
        ),
        (
            base.to_string(),
            br#"{"values": 3}"#.to_vec(),
            DropKind::MalformedJson,
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
        let expected = cases.iter().filter(|(_, _, k)| *k == kind).count() as u64;
        assert_eq!(
            drops.count(kind),
            expected,
            "{kind}: {:?}",
            drops.snapshot()
        );
    }
    let report = runtime.twins().report(&press(1)).await.unwrap();
    assert_eq!(report.value("temperature"), Some(42.0));
    assert!(report.trips.is_empty());
    pump_task.abort();
    connector.stop().await;
    runtime.shutdown().await;
}
