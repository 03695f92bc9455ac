//! Input a twin can trust, through a real broker: readings keep their identity
//! (source, epoch, seq), late readings reach history without overwriting newer values,
//! and bad sequence numbers are refused and counted while the channel goes on; no
//! message, however large, stops intake; a channel that falls silent, or whose
//! source loses touch, goes stale until its next reading.

use std::sync::atomic::Ordering;
use std::time::Duration;

use doppel::connectors::DropKind;
use doppel::connectors::mqtt::{MqttConfig, MqttConnector};
use doppel::{
    ChannelCondition, Quality, RunState, Runtime, SampleRejection, Timestamp, TwinChange,
};
use rumqttc::{AsyncClient, QoS};

use crate::brokers::{self, Mosquitto};
use crate::mqtt::pump;
use crate::support::{self, press, reading, wait_until};

const WAIT: Duration = Duration::from_secs(10);
const TOPIC: &str = "acme/plant-a/line-1/press-1/telemetry";

/// Publishes one JSON reading on `channel` and waits until the twin has taken it in:
/// applied, kept late, ignored as a duplicate or refused.
async fn send(runtime: &Runtime, client: &AsyncClient, channel: &str, body: String) {
    let before = runtime.twins().counters().samples_in;
    client
        .publish(format!("{TOPIC}/{channel}"), QoS::AtLeastOnce, false, body)
        .await
        .unwrap();
    wait_until("the reading reaches the twin", WAIT, || async {
        runtime.twins().counters().samples_in > before
    })
    .await;
}

fn rfc3339(at: Timestamp) -> String {
    at.to_rfc3339()
}

/// Every reading of `channel` in the last hour, from history and journal, oldest first.
async fn history(runtime: &Runtime, channel: &str) -> Vec<doppel::Sample> {
    let window = (support::ago(Duration::from_secs(3600)), Timestamp::now());
    runtime
        .twins()
        .samples(&press(1), channel, window, 10_000)
        .await
        .unwrap()
}

async fn current(runtime: &Runtime, channel: &str) -> Option<f64> {
    runtime
        .twins()
        .report(&press(1))
        .await
        .unwrap()
        .value(channel)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readings_keep_their_identity_through_a_real_broker() {
    let Some(broker) = Mosquitto::start("readings_keep_their_identity_through_a_real_broker")
    else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let runtime = support::start(dir.path()).await;
    let connector = MqttConnector::start(MqttConfig::new(broker.url()), runtime.twins().clone())
        .await
        .unwrap();
    assert!(connector.wait_connected(WAIT).await);
    let (client, eventloop) = brokers::client(&broker.url(), "identity-publisher", true);
    let (_rx, pump_task) = pump(eventloop);
    let base = support::ago(Duration::from_secs(600));
    let time = |secs: i64| Timestamp(base.as_micros() + secs * 1_000_000);

    // A publisher numbers 1..10, restarts, and numbers 1..10 again under a new epoch:
    // all twenty are applied, and a redelivery from before the restart is not.
    for (epoch, offset) in [(1, 0), (2, 100)] {
        for seq in 1..=10 {
            let body = format!(
                r#"{{"v": {}, "seq": {seq}, "epoch": {epoch}, "ts": "{}"}}"#,
                offset + seq,
                rfc3339(time(offset + seq))
            );
            send(&runtime, &client, "throughput", body).await;
        }
    }
    let counters = runtime.twins().counters();
    assert_eq!(counters.samples_applied, 20, "{counters:?}");
    assert_eq!(current(&runtime, "throughput").await, Some(110.0));
    let redelivered = format!(
        r#"{{"v": 5, "seq": 5, "epoch": 1, "ts": "{}"}}"#,
        rfc3339(time(5))
    );
    send(&runtime, &client, "throughput", redelivered).await;
    assert_eq!(runtime.twins().counters().samples_duplicate, 1);

    // seq 2^64 − 1 is refused and counted; the channel goes on.
    let sentinel = format!(r#"{{"v": 1, "seq": {}, "epoch": 2}}"#, u64::MAX);
    send(&runtime, &client, "throughput", sentinel).await;
    assert_eq!(
        runtime
            .twins()
            .counters()
            .rejected(SampleRejection::SeqJump),
        1
    );
    let next = format!(
        r#"{{"v": 111, "seq": 11, "epoch": 2, "ts": "{}"}}"#,
        rfc3339(time(111))
    );
    send(&runtime, &client, "throughput", next).await;
    assert_eq!(current(&runtime, "throughput").await, Some(111.0));

    // A reading with only `ts`, arriving a second late: in history, not current.
    let now = Timestamp::now();
    let on_time = format!(r#"{{"v": 30, "ts": "{}"}}"#, rfc3339(now));
    send(&runtime, &client, "power_kw", on_time).await;
    let late = format!(
        r#"{{"v": 29, "ts": "{}"}}"#,
        rfc3339(Timestamp(now.as_micros() - 1_000_000))
    );
    send(&runtime, &client, "power_kw", late).await;
    assert_eq!(current(&runtime, "power_kw").await, Some(30.0));
    let kept: Vec<f64> = history(&runtime, "power_kw")
        .await
        .iter()
        .map(|s| s.value)
        .collect();
    assert_eq!(
        kept,
        vec![29.0, 30.0],
        "the late reading is in history, in time order"
    );

    // seq 100, then 1..99: every one of them in history.
    for seq in std::iter::once(100).chain(1..100) {
        let body = format!(
            r#"{{"v": {}, "seq": {seq}, "epoch": 3, "ts": "{}"}}"#,
            seq % 50,
            rfc3339(time(200 + seq as i64))
        );
        send(&runtime, &client, "vibration", body).await;
    }
    let vibration = history(&runtime, "vibration").await;
    let mut seqs: Vec<u64> = vibration.iter().map(|s| s.seq).collect();
    seqs.sort_unstable();
    assert_eq!(seqs, (1..=100).collect::<Vec<_>>());
    assert_eq!(
        current(&runtime, "vibration").await,
        Some(0.0),
        "seq 100 stays current"
    );

    let counters = runtime.twins().counters();
    assert_eq!(counters.samples_late, 1 + 99, "{counters:?}");
    assert_eq!(counters.rejected_total(), 1, "{counters:?}");
    // Accounted per source: the connector's numbered readings and its time-stamped ones.
    let by_source = runtime.twins().source_counts();
    let of = |name: &str| {
        by_source
            .iter()
            .find(|(source, _)| source == name)
            .map(|(_, counts)| *counts)
            .unwrap_or_else(|| panic!("no source {name}: {by_source:?}"))
    };
    let numbered = of("mqtt:mqtt");
    assert_eq!(
        (
            numbered.applied,
            numbered.late,
            numbered.duplicate,
            numbered.refused
        ),
        (22, 99, 1, 1),
        "{numbered:?}"
    );
    let stamped = of("mqtt:mqtt/ts");
    assert_eq!((stamped.applied, stamped.late), (1, 1), "{stamped:?}");
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

/// A publisher that can send packets of any size MQTT allows.
fn large_publisher(url: &str) -> (AsyncClient, rumqttc::EventLoop) {
    let port: u16 = url.rsplit(':').next().unwrap().parse().unwrap();
    let mut options = rumqttc::MqttOptions::new("large-publisher", "127.0.0.1", port);
    options
        .set_keep_alive(Duration::from_secs(10))
        .set_max_packet_size(64 << 20, 64 << 20);
    AsyncClient::new(options, 100)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_oversized_message_is_dropped_once_and_intake_goes_on() {
    let Some(broker) = Mosquitto::start("an_oversized_message_is_dropped_once_and_intake_goes_on")
    else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let runtime = support::start(dir.path()).await;
    let config = MqttConfig::new(broker.url());
    let connector = MqttConnector::start(config.clone(), runtime.twins().clone())
        .await
        .unwrap();
    assert!(connector.wait_connected(WAIT).await);
    let (client, eventloop) = large_publisher(&broker.url());
    let (_rx, pump_task) = pump(eventloop);

    // 17 MiB at QoS 1, then five ordinary readings behind it.
    let huge = vec![b'7'; 17 << 20];
    client
        .publish(
            format!("{TOPIC}/temperature"),
            QoS::AtLeastOnce,
            false,
            huge,
        )
        .await
        .unwrap();
    for seq in 1..=5 {
        let body = format!(r#"{{"v": {seq}, "seq": {seq}, "epoch": 1}}"#);
        client
            .publish(format!("{TOPIC}/throughput"), QoS::AtLeastOnce, false, body)
            .await
            .unwrap();
    }
    wait_until("the readings behind it are applied", WAIT * 3, || async {
        current(&runtime, "throughput").await == Some(5.0)
    })
    .await;
    let drops = connector.drops();
    assert_eq!(
        drops.count(DropKind::Oversized),
        1,
        "{:?}",
        drops.snapshot()
    );
    assert_eq!(drops.total(), 1, "{:?}", drops.snapshot());
    let connections = connector.stats().connections.load(Ordering::Relaxed);
    assert_eq!(connections, 1, "the connection held");
    assert_eq!(runtime.twins().counters().samples_applied, 5);
    wait_until("all six are acknowledged", WAIT, || async {
        connector.stats().acknowledged.load(Ordering::Relaxed) == 6
    })
    .await;
    connector.stop().await;

    // The same session again: the broker has nothing left to redeliver.
    let connector = MqttConnector::start(config, runtime.twins().clone())
        .await
        .unwrap();
    assert!(connector.wait_connected(WAIT).await);
    let body = r#"{"v": 6, "seq": 6, "epoch": 1}"#;
    client
        .publish(format!("{TOPIC}/throughput"), QoS::AtLeastOnce, false, body)
        .await
        .unwrap();
    wait_until("the next reading is applied", WAIT, || async {
        current(&runtime, "throughput").await == Some(6.0)
    })
    .await;
    assert_eq!(
        connector.drops().total(),
        0,
        "{:?}",
        connector.drops().snapshot()
    );
    assert_eq!(runtime.twins().counters().samples_duplicate, 0);
    pump_task.abort();
    connector.stop().await;
    runtime.shutdown().await;
}

/// The condition a channel of press-1 is under, if any.
async fn condition(runtime: &Runtime, channel: &str) -> Option<ChannelCondition> {
    runtime
        .twins()
        .report(&press(1))
        .await
        .unwrap()
        .reported
        .into_iter()
        .find(|r| r.channel == channel)
        .and_then(|r| r.condition)
}

async fn alarms(runtime: &Runtime) -> Vec<String> {
    let report = runtime.twins().report(&press(1)).await.unwrap();
    // Active alarms: one that returned to normal unacknowledged stays listed.
    report
        .alarms
        .into_iter()
        .filter(|a| a.active)
        .map(|a| a.code)
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_silent_channel_goes_stale_raises_an_alarm_and_trips_when_asked() {
    let dir = tempfile::tempdir().unwrap();
    // Only temperature has a maximum age; its trip governor trips when it goes stale.
    let types = support::types()
        .replace(
            "[types.press.channels.temperature]\n",
            "[types.press.channels.temperature]\nmax_age_secs = 0.5\n",
        )
        .replace(
            "blocks = [\"running\"]\n",
            "blocks = [\"running\"]\non_stale = \"trip\"\n",
        );
    let mut settings = support::settings();
    settings.max_age_secs = 0.0;
    let runtime = support::start_custom(dir.path(), &types, settings, |b| b).await;
    let twins = runtime.twins().clone();
    let mut changes = twins.subscribe();
    let source = twins.source("test").unwrap();
    support::ingest_durable(&twins, &press(1), "temperature", reading(60.0, source, 1)).await;
    support::ingest_durable(&twins, &press(1), "vibration", reading(2.0, source, 1)).await;

    wait_until("temperature goes stale", WAIT, || async {
        condition(&runtime, "temperature")
            .await
            .is_some_and(|c| c.quality == Quality::Stale)
    })
    .await;
    let stale = condition(&runtime, "temperature").await.unwrap();
    assert!(
        stale.reason.starts_with("no reading for"),
        "{}",
        stale.reason
    );
    assert!(
        stale.reason.ends_with("(max age 0.5 s)"),
        "{}",
        stale.reason
    );
    let report = twins.report(&press(1)).await.unwrap();
    assert_eq!(report.run_state, RunState::Tripped, "on_stale = trip");
    assert!(
        report.trips[0]
            .reason
            .starts_with("temperature is stale: no reading for"),
        "{:?}",
        report.trips
    );
    assert!(
        alarms(&runtime)
            .await
            .contains(&"stale:temperature".to_string())
    );
    let sample = report.reported.iter().find(|r| r.channel == "temperature");
    let sample = sample.unwrap().sample.unwrap();
    assert_eq!((sample.value, sample.quality), (60.0, Quality::Stale));
    assert_eq!(
        condition(&runtime, "vibration").await,
        None,
        "max age 0: never"
    );

    // Watchers saw the condition as a change of its own.
    let mut saw_condition = false;
    while let Ok(Ok(event)) = tokio::time::timeout(Duration::from_millis(100), changes.recv()).await
    {
        if let TwinChange::Condition { channel, condition } = &event.change {
            saw_condition |= channel == "temperature" && condition.quality == Quality::Stale;
        }
    }
    assert!(saw_condition);
    assert!(twins.counters().conditions >= 1);

    // The next reading lifts it and clears the alarm; the trip stays latched.
    support::ingest_durable(&twins, &press(1), "temperature", reading(61.0, source, 2)).await;
    assert_eq!(condition(&runtime, "temperature").await, None);
    assert!(
        !alarms(&runtime)
            .await
            .contains(&"stale:temperature".to_string())
    );
    let report = twins.report(&press(1)).await.unwrap();
    assert_eq!(report.run_state, RunState::Tripped);
    runtime.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lost_broker_stales_what_it_fed_until_readings_return() {
    let Some(mut broker) =
        Mosquitto::start("a_lost_broker_stales_what_it_fed_until_readings_return")
    else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let mut settings = support::settings();
    settings.max_age_secs = 0.0;
    let runtime = support::start_with(dir.path(), settings, |b| b).await;
    let connector = MqttConnector::start(MqttConfig::new(broker.url()), runtime.twins().clone())
        .await
        .unwrap();
    assert!(connector.wait_connected(WAIT).await);
    let (client, eventloop) = brokers::client(&broker.url(), "stale-publisher", true);
    let (_rx, pump_task) = pump(eventloop);
    let body = format!(r#"{{"v": 55, "ts": "{}"}}"#, rfc3339(Timestamp::now()));
    send(&runtime, &client, "temperature", body).await;
    assert_eq!(condition(&runtime, "temperature").await, None);

    broker.stop();
    wait_until("the broker's channels go stale", WAIT, || async {
        condition(&runtime, "temperature").await.is_some_and(|c| {
            c.quality == Quality::Stale && c.reason == "mqtt `mqtt` lost its broker"
        })
    })
    .await;
    assert_eq!(current(&runtime, "temperature").await, Some(55.0), "kept");
    assert!(
        alarms(&runtime)
            .await
            .contains(&"stale:temperature".to_string())
    );

    broker.restart();
    assert!(connector.wait_connected(WAIT * 2).await);
    let body = format!(r#"{{"v": 56, "ts": "{}"}}"#, rfc3339(Timestamp::now()));
    wait_until("a new reading makes it fresh", WAIT * 2, || async {
        // The publisher reconnects on its own; publish until the twin has it.
        let _ = client
            .publish(
                format!("{TOPIC}/temperature"),
                QoS::AtLeastOnce,
                false,
                body.clone(),
            )
            .await;
        tokio::time::sleep(Duration::from_millis(100)).await;
        current(&runtime, "temperature").await == Some(56.0)
    })
    .await;
    assert_eq!(condition(&runtime, "temperature").await, None);
    assert!(
        !alarms(&runtime)
            .await
            .contains(&"stale:temperature".to_string())
    );
    pump_task.abort();
    connector.stop().await;
    runtime.shutdown().await;
}

/// A publisher whose reconnect reorders its backlog (as a stock paho client's can):
/// 5,000 numbered, time-stamped readings, in each block of 100 the first 20 sent after
/// the rest, with the broker restarted midway. Every reading is taken exactly once: as current or
/// as late, never lost, never twice.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reordered_backlog_through_a_broker_restart_is_kept_exactly_once() {
    let Some(mut broker) =
        Mosquitto::start("a_reordered_backlog_through_a_broker_restart_is_kept_exactly_once")
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
    let (client, eventloop) = brokers::client(&broker.url(), "reordering-publisher", false);
    let (_rx, pump_task) = pump(eventloop);
    const TOTAL: u64 = 5000;
    const BLOCK: u64 = 100;
    let base = support::ago(Duration::from_secs(1800));
    // In each block of 100, the first 20 (a reconnecting client's unacknowledged
    // backlog) are overtaken by the 80 published after them.
    let order: Vec<u64> = (0..TOTAL)
        .map(|i| (i / BLOCK) * BLOCK + (i % BLOCK + 20) % BLOCK + 1)
        .collect();
    for (sent, seq) in order.iter().enumerate() {
        if sent as u64 == TOTAL / 2 {
            wait_until("half the stream arrives", WAIT * 3, || async {
                runtime.twins().counters().samples_in > 100
            })
            .await;
            tokio::task::block_in_place(|| broker.restart());
        }
        let at = Timestamp(base.as_micros() + *seq as i64 * 1000);
        let body = format!(
            r#"{{"v": {}, "seq": {seq}, "epoch": 7, "ts": "{}"}}"#,
            seq % 150,
            rfc3339(at)
        );
        client
            .publish(format!("{TOPIC}/throughput"), QoS::AtLeastOnce, false, body)
            .await
            .unwrap();
    }
    wait_until(
        "every reading is taken",
        Duration::from_secs(90),
        || async {
            let counters = runtime.twins().counters();
            counters.samples_applied + counters.samples_late >= TOTAL
        },
    )
    .await;
    // Let redeliveries still under way arrive.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let counters = runtime.twins().counters();
    assert_eq!(
        counters.samples_applied + counters.samples_late,
        TOTAL,
        "{counters:?}"
    );
    assert_eq!(counters.rejected_total(), 0, "{counters:?}");
    let mut seqs: Vec<u64> = history(&runtime, "throughput")
        .await
        .iter()
        .map(|s| s.seq)
        .collect();
    // History reads reach back a bounded number of journal batches: what they find
    // is each reading once.
    let found = seqs.len();
    seqs.sort_unstable();
    seqs.dedup();
    assert_eq!(seqs.len(), found, "a reading twice in history");
    assert!(seqs.iter().all(|seq| (1..=TOTAL).contains(seq)));
    assert_eq!(
        current(&runtime, "throughput").await,
        Some((TOTAL % 150) as f64),
        "the newest is current"
    );
    eprintln!(
        "reordered backlog: {} current, {} late, {} redelivered duplicates ignored",
        counters.samples_applied, counters.samples_late, counters.samples_duplicate
    );
    pump_task.abort();
    connector.stop().await;
    runtime.shutdown().await;
}

/// Every reading accounted for, as an operator sees it: what a connector received,
/// what its twins applied, kept late, ignored as duplicates or refused (by reason), and
/// what it dropped (by kind), through `doppel.v1.StatusService` and `doppel node status`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn drop_and_refusal_counts_through_the_api_and_the_cli() {
    use doppel::api::{ApiConfig, ApiServer, Role};
    use doppel::proto::v1 as pb;
    use doppel::proto::v1::status_service_client::StatusServiceClient;

    const TOKEN: &str = "status-viewer-token-0123";
    let broker = brokers::embedded();
    let dir = tempfile::tempdir().unwrap();
    let runtime = support::start(dir.path()).await;
    let connector = MqttConnector::start(MqttConfig::new(broker.url()), runtime.twins().clone())
        .await
        .unwrap();
    assert!(connector.wait_connected(WAIT).await);
    let api = ApiServer::start(
        ApiConfig::new("127.0.0.1:0".parse().unwrap()).token("viv", TOKEN, Role::Viewer),
        runtime.twins().clone(),
    )
    .await
    .unwrap();
    let (client, eventloop) = brokers::client(&broker.url(), "status-publisher", true);
    let (_rx, pump_task) = pump(eventloop);
    let now = Timestamp::now();
    let stamp = |secs: i64| rfc3339(Timestamp(now.as_micros() - secs * 1_000_000));
    let messages: Vec<(String, String)> = vec![
        // Applied, then one reading of them again: a duplicate.
        (
            format!("{TOPIC}/temperature"),
            r#"{"v": 40, "seq": 1}"#.into(),
        ),
        (
            format!("{TOPIC}/temperature"),
            r#"{"v": 41, "seq": 2}"#.into(),
        ),
        (
            format!("{TOPIC}/temperature"),
            r#"{"v": 41, "seq": 2}"#.into(),
        ),
        // Stamped: one current, one a second older (late).
        (
            format!("{TOPIC}/power_kw"),
            format!(r#"{{"v": 30, "ts": "{}"}}"#, stamp(0)),
        ),
        (
            format!("{TOPIC}/power_kw"),
            format!(r#"{{"v": 29, "ts": "{}"}}"#, stamp(1)),
        ),
        // Refused by the twin: out of the channel's range.
        (
            format!("{TOPIC}/temperature"),
            r#"{"v": 900, "seq": 3}"#.into(),
        ),
        // Dropped by the connector: not JSON; an asset no twin has, at a depth no
        // hosted twin has (never subscribed to before); a channel the type lacks.
        (format!("{TOPIC}/temperature"), r#"{"v": "#.into()),
        ("acme/plant-a/telemetry/temperature".into(), "50".into()),
        (
            "acme/plant-a/line-1/press-1/spare/part/telemetry/temperature".into(),
            "50".into(),
        ),
        (format!("{TOPIC}/colour"), "3".into()),
        // And a last applied reading, to know when the others were taken.
        (
            format!("{TOPIC}/temperature"),
            r#"{"v": 42, "seq": 4}"#.into(),
        ),
    ];
    for (topic, body) in &messages {
        client
            .publish(topic.clone(), QoS::AtLeastOnce, false, body.clone())
            .await
            .unwrap();
    }
    wait_until("the last reading is applied", WAIT, || async {
        current(&runtime, "temperature").await == Some(42.0)
    })
    .await;

    let channel = tonic::transport::Endpoint::from_shared(api.url())
        .unwrap()
        .connect()
        .await
        .unwrap();
    let mut status_client = StatusServiceClient::new(channel);
    let unauthenticated = status_client
        .get_node_status(pb::GetNodeStatusRequest {})
        .await
        .unwrap_err();
    assert_eq!(unauthenticated.code(), tonic::Code::Unauthenticated);
    let mut request = tonic::Request::new(pb::GetNodeStatusRequest {});
    request
        .metadata_mut()
        .insert("authorization", format!("Bearer {TOKEN}").parse().unwrap());
    let status = status_client
        .get_node_status(request)
        .await
        .unwrap()
        .into_inner();
    assert_eq!(status.connectors.len(), 1, "{status:?}");
    let mqtt = &status.connectors[0];
    assert_eq!(
        (mqtt.name.as_str(), mqtt.kind.as_str()),
        ("mqtt:mqtt", "mqtt")
    );
    assert!(mqtt.connected);
    assert_eq!(mqtt.received, messages.len() as u64, "{mqtt:?}");
    let readings = mqtt.readings.unwrap();
    assert_eq!(
        (readings.applied, readings.late, readings.duplicate),
        (4, 1, 1),
        "{mqtt:?}"
    );
    let counts = |counts: &[pb::Count]| -> Vec<(String, u64)> {
        counts.iter().map(|c| (c.reason.clone(), c.count)).collect()
    };
    assert_eq!(counts(&mqtt.refused), vec![("out_of_range".to_string(), 1)]);
    assert_eq!(
        counts(&mqtt.dropped),
        vec![
            ("malformed_json".to_string(), 1),
            ("unknown_asset".to_string(), 2),
            ("unknown_channel".to_string(), 1),
        ]
    );
    assert_eq!(status.twins, runtime.twins().len() as u64);
    let sources: Vec<&str> = status.sources.iter().map(|s| s.name.as_str()).collect();
    assert!(sources.contains(&"mqtt:mqtt/ts"), "{sources:?}");

    // The same figures from the command line, as JSON and as text.
    let env = [
        ("DOPPEL_ADDR", api.url()),
        ("DOPPEL_TOKEN", TOKEN.to_string()),
    ];
    let cli = |args: &'static [&'static str]| {
        let env = env.clone();
        tokio::task::spawn_blocking(move || {
            let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
            crate::cli_twin::run_doppel(args, &env)
        })
    };
    let json = cli(&["node", "status", "--json"]).await.unwrap();
    assert_eq!(json.code, 0, "{}\n{}", json.stdout, json.stderr);
    let json: serde_json::Value = serde_json::from_str(json.stdout.trim()).unwrap();
    let shown = &json["connectors"][0];
    assert_eq!(shown["name"], "mqtt:mqtt", "{json}");
    assert_eq!(shown["received"], messages.len() as u64, "{json}");
    assert_eq!(shown["readings"]["applied"], 4, "{json}");
    assert_eq!(shown["readings"]["late"], 1, "{json}");
    assert_eq!(shown["readings"]["duplicate"], 1, "{json}");
    assert_eq!(shown["refused"]["out_of_range"], 1, "{json}");
    assert_eq!(shown["dropped"]["malformed_json"], 1, "{json}");
    assert_eq!(shown["dropped"]["unknown_asset"], 2, "{json}");
    let text = cli(&["node", "status"]).await.unwrap();
    assert_eq!(text.code, 0, "{}\n{}", text.stdout, text.stderr);
    let row: Vec<&str> = text
        .stdout
        .lines()
        .find(|line| line.starts_with("mqtt:mqtt "))
        .unwrap_or_else(|| panic!("no row for the connector:\n{}", text.stdout))
        .split_whitespace()
        .collect();
    assert_eq!(
        row,
        ["mqtt:mqtt", "connected", "11", "4", "1", "1", "1", "4"],
        "{}",
        text.stdout
    );
    assert!(
        text.stdout
            .contains("mqtt:mqtt dropped: malformed_json 1, unknown_asset 2, unknown_channel 1"),
        "{}",
        text.stdout
    );
    let denied = cli(&["node", "status", "--token", "not-the-token-at-all"])
        .await
        .unwrap();
    assert_eq!(denied.code, 1, "{}\n{}", denied.stdout, denied.stderr);
    assert!(
        denied.stderr.starts_with("doppel: node status: "),
        "{}",
        denied.stderr
    );

    pump_task.abort();
    api.stop().await;
    connector.stop().await;
    runtime.shutdown().await;
}
