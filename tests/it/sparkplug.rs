//! The Sparkplug B layout end to end: a test edge node on the embedded broker feeds a
//! twin through the MQTT connector and receives the host's rebirth requests and
//! commands; against Mosquitto, the host's STATE and command QoS follow Sparkplug 3.0.

use std::time::Duration;

use doppel::connectors::DropKind;
use doppel::connectors::mqtt::sparkplug::proto::payload::{Metric, metric};
use doppel::connectors::mqtt::sparkplug::proto::{DataType, Message, Payload};
use doppel::connectors::mqtt::{MqttConfig, MqttConnector};
use doppel::{Command, Origin, Quality, Runtime, Timestamp, Value};
use rumqttc::{AsyncClient, QoS};
use serde_json::Value as Json;

use crate::brokers;
use crate::mqtt::{Inbox, pump};
use crate::support::{self, press, wait_until};

const WAIT: Duration = Duration::from_secs(10);

const NCMD: &str = "spBv1.0/Plant/NCMD/Edge1";
const DCMD: &str = "spBv1.0/Plant/DCMD/Edge1/Press1";
const STATE: &str = "spBv1.0/STATE/doppel-test";

/// A connector reading Sparkplug beside the Unified Namespace layout (on by default).
fn config(url: &str) -> MqttConfig {
    toml::from_str(&format!(
        r#"
        name = "sparkplug"
        url = "{url}"

        [sparkplug]
        host_id = "doppel-test"

        [[sparkplug.map]]
        group = "Plant"
        node = "Edge1"
        device = "Press1"
        asset = "acme/plant-a/line-1/press-1"
        metrics = {{ "Sensors/Temperature" = "temperature", "Sensors/Vibration" = "vibration" }}
        commands = {{ speed = "Outputs/Speed" }}
        "#
    ))
    .unwrap()
}

/// A Sparkplug edge node with one device, publishing with the generated types.
struct EdgeNode {
    client: AsyncClient,
}

impl EdgeNode {
    async fn publish(&self, kind: &str, seq: u64, metrics: Vec<Metric>) {
        let topic = match kind {
            "NBIRTH" | "NDATA" | "NDEATH" => format!("spBv1.0/Plant/{kind}/Edge1"),
            _ => format!("spBv1.0/Plant/{kind}/Edge1/Press1"),
        };
        let payload = Payload {
            timestamp: Some(now_ms()),
            metrics,
            seq: Some(seq),
            ..Payload::default()
        };
        self.client
            .publish(topic, QoS::AtLeastOnce, false, payload.encode_to_vec())
            .await
            .unwrap();
    }

    async fn device_birth(&self, seq: u64, temperature: f64) {
        self.publish(
            "DBIRTH",
            seq,
            vec![
                Metric {
                    name: Some("Sensors/Temperature".into()),
                    ..measurement(1, temperature)
                },
                Metric {
                    name: Some("Sensors/Vibration".into()),
                    datatype: Some(DataType::Float as u32),
                    value: Some(metric::Value::FloatValue(2.0)),
                    ..measurement(2, 0.0)
                },
            ],
        )
        .await;
    }
}

fn now_ms() -> u64 {
    (Timestamp::now().as_micros() / 1000) as u64
}

/// A double-valued metric by alias, stamped now.
fn measurement(alias: u64, value: f64) -> Metric {
    Metric {
        alias: Some(alias),
        timestamp: Some(now_ms()),
        datatype: Some(DataType::Double as u32),
        value: Some(metric::Value::DoubleValue(value)),
        ..Metric::default()
    }
}

/// The temperature's current value and quality.
async fn temperature(runtime: &Runtime) -> Option<(f64, Quality)> {
    let report = runtime.twins().report(&press(1)).await.ok()?;
    let sample = report
        .reported
        .iter()
        .find(|r| r.channel == "temperature")?
        .sample?;
    Some((sample.value, sample.quality))
}

async fn wait_temperature(runtime: &Runtime, what: &str, expected: (f64, Quality)) {
    wait_until(what, WAIT, || async {
        temperature(runtime).await == Some(expected)
    })
    .await;
}

async fn edge_node_session(url: &str) {
    let dir = tempfile::tempdir().unwrap();
    let runtime = support::start(dir.path()).await;
    let connector = MqttConnector::start(config(url), runtime.twins().clone())
        .await
        .unwrap();
    assert!(
        connector.wait_connected(WAIT).await,
        "connector did not connect"
    );

    let (client, eventloop) = brokers::client(url, "edge-1", true);
    let (rx, pump_task) = pump(eventloop);
    let mut inbox = Inbox::new(rx);
    for filter in [STATE, NCMD, DCMD] {
        client.subscribe(filter, QoS::AtLeastOnce).await.unwrap();
    }
    // The host's retained STATE also shows its subscriptions are in place: the
    // connector subscribes before it publishes STATE on the same connection.
    let state: Json = serde_json::from_slice(&inbox.next_on(STATE).await).unwrap();
    assert_eq!(state["online"], Json::Bool(true), "{state}");
    assert!(state["timestamp"].as_u64().is_some(), "{state}");
    let edge = EdgeNode { client };

    // Births, then data by alias.
    edge.publish(
        "NBIRTH",
        0,
        vec![
            Metric {
                name: Some("bdSeq".into()),
                datatype: Some(DataType::Int64 as u32),
                value: Some(metric::Value::LongValue(0)),
                ..Metric::default()
            },
            Metric {
                name: Some("Node Control/Rebirth".into()),
                datatype: Some(DataType::Boolean as u32),
                value: Some(metric::Value::BooleanValue(false)),
                ..Metric::default()
            },
        ],
    )
    .await;
    edge.device_birth(1, 50.0).await;
    wait_temperature(&runtime, "the DBIRTH value arrives", (50.0, Quality::Good)).await;
    edge.publish("DDATA", 2, vec![measurement(1, 55.5)]).await;
    wait_temperature(&runtime, "the DDATA value arrives", (55.5, Quality::Good)).await;

    // DDEATH: the last value stays, with quality stale, and an alarm says why.
    edge.publish("DDEATH", 3, Vec::new()).await;
    wait_temperature(&runtime, "DDEATH marks it stale", (55.5, Quality::Stale)).await;
    let report = runtime.twins().report(&press(1)).await.unwrap();
    let stale = report
        .alarms
        .iter()
        .find(|a| a.code == "stale:temperature")
        .expect("a stale alarm");
    assert!(stale.message.contains("DDEATH"), "{}", stale.message);

    // A new DBIRTH brings it back.
    edge.device_birth(4, 60.0).await;
    wait_temperature(&runtime, "the rebirth value arrives", (60.0, Quality::Good)).await;

    // A skipped seq (5 and 6 never sent): the data still applies, and the edge node
    // is asked for a rebirth.
    edge.publish("DDATA", 7, vec![measurement(1, 61.0)]).await;
    let request = Payload::decode(inbox.next_on(NCMD).await.as_slice()).unwrap();
    assert_eq!(request.metrics.len(), 1, "{request:?}");
    let rebirth = &request.metrics[0];
    assert_eq!(rebirth.name.as_deref(), Some("Node Control/Rebirth"));
    assert_eq!(rebirth.datatype, Some(DataType::Boolean as u32));
    assert_eq!(rebirth.value, Some(metric::Value::BooleanValue(true)));
    wait_temperature(
        &runtime,
        "data after the gap applies",
        (61.0, Quality::Good),
    )
    .await;

    // Store-and-forward data an edge node sends after a reconnect: historical, ten
    // minutes old. It goes into history at its own time; the current value stays.
    let ten_minutes_ago = now_ms() - 600_000;
    edge.publish(
        "DDATA",
        8,
        vec![Metric {
            timestamp: Some(ten_minutes_ago),
            is_historical: Some(true),
            ..measurement(1, 42.0)
        }],
    )
    .await;
    wait_until("the historical value is in history", WAIT, || async {
        let window = (
            support::ago(Duration::from_secs(660)),
            support::ago(Duration::from_secs(540)),
        );
        runtime
            .twins()
            .samples(&press(1), "temperature", window, 10)
            .await
            .unwrap()
            .iter()
            .any(|sample| sample.value == 42.0)
    })
    .await;
    assert_eq!(temperature(&runtime).await, Some((61.0, Quality::Good)));
    assert_eq!(runtime.twins().counters().samples_late, 1);

    // A clamped command reaches the device as DCMD with the value the envelope
    // allowed (2400), never the 2900 asked for.
    let outcome = runtime
        .twins()
        .command(
            Command::new(press(1), "set_speed", Origin::operator("ann"))
                .param("rpm", Value::Float(2900.0)),
        )
        .await
        .unwrap();
    assert_eq!(outcome.verdict.as_str(), "clamped");
    let speed = loop {
        // Safety actions of the twin's governors may come first; look for the command.
        let command = Payload::decode(inbox.next_on(DCMD).await.as_slice()).unwrap();
        if let Some(metric) = command
            .metrics
            .iter()
            .find(|m| m.name.as_deref() == Some("Outputs/Speed"))
        {
            break metric.clone();
        }
    };
    assert_eq!(speed.datatype, Some(DataType::Double as u32));
    assert_eq!(speed.value, Some(metric::Value::DoubleValue(2400.0)));

    let drops = connector.drops();
    assert_eq!(drops.count(DropKind::SequenceGap), 1);
    assert_eq!(drops.total(), 1, "{:?}", drops.snapshot());
    pump_task.abort();
    connector.stop().await;
    runtime.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sparkplug_edge_node_feeds_a_twin_and_receives_rebirth_requests_and_commands() {
    let broker = brokers::embedded();
    tokio::time::timeout(Duration::from_secs(60), edge_node_session(&broker.url()))
        .await
        .expect("the Sparkplug session did not finish within a minute");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sparkplug_mapping_of_an_unknown_twin_refuses_to_start() {
    let dir = tempfile::tempdir().unwrap();
    let runtime = support::start(dir.path()).await;
    let mut config = config("mqtt://127.0.0.1:1");
    if let Some(sparkplug) = &mut config.sparkplug {
        sparkplug.map[0].asset = doppel::AssetPath::parse("acme/plant-a/line-1/press-9").unwrap();
    }
    let error = tokio::time::timeout(WAIT, MqttConnector::start(config, runtime.twins().clone()))
        .await
        .expect("start did not return")
        .err()
        .expect("the connector started with an unknown twin");
    assert!(error.to_string().contains("unknown asset"), "{error}");
    runtime.shutdown().await;
}

/// What a watcher received: topic, payload and the QoS it arrived at.
type Received = tokio::sync::mpsc::UnboundedReceiver<(String, Vec<u8>, QoS)>;

/// A client that records what it receives with the QoS it arrived at.
fn watch_with_qos(mut eventloop: rumqttc::EventLoop) -> (Received, tokio::task::JoinHandle<()>) {
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    let task = tokio::spawn(async move {
        loop {
            match eventloop.poll().await {
                Ok(rumqttc::Event::Incoming(rumqttc::Packet::Publish(p))) => {
                    let _ = tx.send((p.topic.clone(), p.payload.to_vec(), p.qos));
                }
                Ok(_) => {}
                Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
            }
        }
    });
    (rx, task)
}

/// The next STATE this watcher reads that `accept`s, as JSON.
async fn next_state(rx: &mut Received, what: &str, accept: impl Fn(&Json) -> bool) -> Json {
    tokio::time::timeout(WAIT * 2, async {
        loop {
            let (topic, payload, _) = rx.recv().await.expect("watcher closed");
            if topic == STATE {
                let state: Json = serde_json::from_slice(&payload).unwrap();
                if accept(&state) {
                    return state;
                }
            }
        }
    })
    .await
    .unwrap_or_else(|_| panic!("no STATE: {what}"))
}

/// Sparkplug 3.0 host rules against Mosquitto: STATE online with the timestamp of
/// each CONNECT's will, re-asserted when someone else declares the host offline,
/// offline on a clean stop; commands at QoS 0.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_host_state_and_command_qos_follow_sparkplug_3() {
    let Some(mut broker) =
        brokers::Mosquitto::start("the_host_state_and_command_qos_follow_sparkplug_3")
    else {
        return;
    };
    let url = broker.url();
    let dir = tempfile::tempdir().unwrap();
    let runtime = support::start(dir.path()).await;
    let connector = MqttConnector::start(config(&url), runtime.twins().clone())
        .await
        .unwrap();
    assert!(connector.wait_connected(WAIT).await);
    // A persistent session: its subscriptions survive the broker's restart.
    let (watcher, eventloop) = brokers::client(&url, "sparkplug-watcher", false);
    let (mut rx, watch_task) = watch_with_qos(eventloop);
    for filter in [STATE, DCMD] {
        watcher.subscribe(filter, QoS::AtLeastOnce).await.unwrap();
    }
    let first = next_state(&mut rx, "online", |s| s["online"] == Json::Bool(true)).await;
    let born = first["timestamp"].as_u64().unwrap();

    // Someone declares the host offline: it says otherwise at once.
    let offline = format!(r#"{{"online":false,"timestamp":{born}}}"#);
    watcher
        .publish(STATE, QoS::AtLeastOnce, true, offline)
        .await
        .unwrap();
    next_state(&mut rx, "the offline claim", |s| {
        s["online"] == Json::Bool(false)
    })
    .await;
    let again = next_state(&mut rx, "re-asserted", |s| s["online"] == Json::Bool(true)).await;
    assert_eq!(again["timestamp"].as_u64(), Some(born));

    // A new connection, a new timestamp.
    broker.restart();
    let renewed = next_state(&mut rx, "online after a reconnect", |s| {
        s["online"] == Json::Bool(true) && s["timestamp"].as_u64().is_some_and(|t| t > born)
    })
    .await;
    let reborn = renewed["timestamp"].as_u64().unwrap();
    assert!(connector.wait_connected(WAIT).await);

    // Commands go out at QoS 0.
    runtime
        .twins()
        .command(
            Command::new(press(1), "set_speed", Origin::operator("ann"))
                .param("rpm", Value::Float(1500.0)),
        )
        .await
        .unwrap();
    let qos = tokio::time::timeout(WAIT, async {
        loop {
            let (topic, _, qos) = rx.recv().await.unwrap();
            if topic == DCMD {
                return qos;
            }
        }
    })
    .await
    .expect("a DCMD");
    assert_eq!(qos, QoS::AtMostOnce);

    // A clean stop says offline, with the connection's timestamp.
    connector.stop().await;
    let last = next_state(&mut rx, "offline on stop", |s| {
        s["online"] == Json::Bool(false)
    })
    .await;
    assert_eq!(last["timestamp"].as_u64(), Some(reborn));
    watch_task.abort();
    runtime.shutdown().await;
}
