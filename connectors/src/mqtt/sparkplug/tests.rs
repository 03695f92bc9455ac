//! Unit and property tests of the Sparkplug codec, against real twins in a temporary
//! data directory.

use std::path::PathBuf;
use std::sync::atomic::{AtomicU32, Ordering};

use doppel_runtime::command::{Command, Origin};
use doppel_runtime::twin::Twins;
use doppel_runtime::{Components, RuntimeSettings, TwinTypes, Value};
use proptest::prelude::*;

use super::proto::payload::metric;
use super::proto::{DataType, Payload};
use super::*;

const TYPES: &str = r#"
[types.press.channels.temperature]
unit = "degC"
range = [-50.0, 250.0]

[types.press.channels.speed]
unit = "rpm"
range = [-5000.0, 5000.0]

[types.press.channels.running]
range = [0.0, 1.0]

[types.press.desired.speed_setpoint]
unit = "rpm"
range = [0, 3000]
initial = 1200

[types.press.desired.count]
type = "int"
initial = 0

[types.press.desired.running]
type = "bool"
initial = true

[types.press.commands.apply]
params.speed = { type = "float", min = 0, max = 3000 }
params.count = { type = "int", min = -10, max = 10 }
params.running = { type = "bool" }
sets = { speed_setpoint = "speed", count = "count", running = "running" }

[types.press.commands.start]
sets = { running = true }

[types.press.commands.reset]
clears_trips = true
"#;

const PRESS_1: &str = "acme/plant-a/line-1/press-1";
const PRESS_2: &str = "acme/plant-a/line-1/press-2";
const PRESS_3: &str = "acme/plant-a/line-1/press-3";

const CONFIG: &str = r#"
host_id = "doppel"

[[map]]
group = "G"
node = "N"
device = "D"
asset = "acme/plant-a/line-1/press-1"
metrics = { "Sensors/Temperature" = "temperature", "Sensors/Speed" = "speed" }
commands = { speed_setpoint = "Outputs/Speed" }

[[map]]
group = "G"
node = "N"
asset = "acme/plant-a/line-1/press-2"
metrics = { "Line/Temperature" = "temperature" }
"#;

/// A data directory removed when the test ends.
struct DataDir(PathBuf);

impl Drop for DataDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Twins of three presses in a fresh data directory.
fn twins() -> (Twins, DataDir) {
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let dir = DataDir(std::env::temp_dir().join(format!(
        "doppel-sparkplug-{}-{}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    )));
    let types = TwinTypes::from_toml(TYPES, "sparkplug-tests").unwrap();
    let machines: Vec<(AssetPath, String)> = [PRESS_1, PRESS_2, PRESS_3]
        .iter()
        .map(|path| (AssetPath::parse(path).unwrap(), "press".to_string()))
        .collect();
    let recovered = Twins::open(
        &dir.0,
        &types,
        &machines,
        Components::new(),
        RuntimeSettings::default(),
    )
    .unwrap();
    (recovered.twins, dir)
}

struct Harness {
    codec: SparkplugCodec,
    drops: Drops,
    twins: Twins,
    now: Timestamp,
    _dir: Option<DataDir>,
}

impl Harness {
    fn new() -> Self {
        Self::with_config(CONFIG)
    }

    fn with_config(config: &str) -> Self {
        let (twins, dir) = twins();
        let mut harness = Self::on(&twins, config);
        harness._dir = Some(dir);
        harness
    }

    /// A codec over twins the caller keeps (property tests share one data directory).
    fn on(twins: &Twins, config: &str) -> Self {
        let config: SparkplugConfig = toml::from_str(config).unwrap();
        let codec =
            SparkplugCodec::new(&config, Resolver::new(twins.clone()), SourceId(7)).unwrap();
        Self {
            codec,
            drops: Drops::new("sparkplug-test"),
            twins: twins.clone(),
            now: Timestamp::from_millis(1_800_000_000_000),
            _dir: None,
        }
    }

    fn send(&mut self, topic: &str, payload: &Payload) -> Inbound {
        self.send_bytes(topic, &payload.encode_to_vec())
    }

    fn send_bytes(&mut self, topic: &str, payload: &[u8]) -> Inbound {
        let mut out = Inbound::default();
        assert!(self.codec.claims(topic) || !topic.starts_with("spBv1.0/G/"));
        self.codec
            .decode(topic, payload, self.now, &mut out, &self.drops);
        out
    }

    fn target(&self, asset: &str, channel: &str) -> ChannelTarget {
        self.twins
            .target(&AssetPath::parse(asset).unwrap(), channel)
            .unwrap()
    }

    /// NBIRTH (seq 0, bdSeq 3) and DBIRTH (seq 1) defining temperature as alias 1 and
    /// speed as alias 2.
    fn born(&mut self) {
        self.send("spBv1.0/G/NBIRTH/N", &node_birth(0, 3));
        let out = self.send(
            "spBv1.0/G/DBIRTH/N/D",
            &payload(
                Some(1),
                Some(1_000),
                vec![
                    defined("Sensors/Temperature", 1, DataType::Double, double(20.5)),
                    defined("Sensors/Speed", 2, DataType::Int32, int(1200)),
                ],
            ),
        );
        assert_eq!(out.readings.len(), 2);
        assert_eq!(self.drops.total(), 0, "{:?}", self.drops.snapshot());
    }
}

fn payload(seq: Option<u64>, timestamp: Option<u64>, metrics: Vec<Metric>) -> Payload {
    Payload {
        timestamp,
        metrics,
        seq,
        ..Payload::default()
    }
}

fn node_birth(seq: u64, bd_seq: u64) -> Payload {
    payload(
        Some(seq),
        Some(1_000),
        vec![
            defined(BD_SEQ, 0, DataType::Int64, metric::Value::LongValue(bd_seq)),
            defined(
                REBIRTH,
                1,
                DataType::Boolean,
                metric::Value::BooleanValue(false),
            ),
            defined("Line/Temperature", 2, DataType::Float, float(30.0)),
        ],
    )
}

fn defined(name: &str, alias: u64, datatype: DataType, value: metric::Value) -> Metric {
    Metric {
        name: Some(name.into()),
        alias: Some(alias),
        datatype: Some(datatype as u32),
        value: Some(value),
        ..Metric::default()
    }
}

fn by_alias(alias: u64, value: metric::Value) -> Metric {
    Metric {
        alias: Some(alias),
        value: Some(value),
        ..Metric::default()
    }
}

fn double(value: f64) -> metric::Value {
    metric::Value::DoubleValue(value)
}

fn float(value: f32) -> metric::Value {
    metric::Value::FloatValue(value)
}

fn int(value: u32) -> metric::Value {
    metric::Value::IntValue(value)
}

fn is_rebirth(outgoing: &Outgoing) -> bool {
    let Ok(payload) = Payload::decode(outgoing.payload.as_slice()) else {
        return false;
    };
    outgoing.topic == "spBv1.0/G/NCMD/N"
        && !outgoing.retain
        && outgoing.at_most_once
        && payload.metrics.len() == 1
        && payload.metrics[0].name.as_deref() == Some(REBIRTH)
        && payload.metrics[0].datatype == Some(DataType::Boolean as u32)
        && payload.metrics[0].value == Some(metric::Value::BooleanValue(true))
}

#[test]
fn birth_then_data_by_alias() {
    let mut h = Harness::new();
    h.born();
    let temperature = h.target(PRESS_1, "temperature");
    let speed = h.target(PRESS_1, "speed");
    let mut temp_at = by_alias(1, double(21.25));
    temp_at.timestamp = Some(2_500);
    let out = h.send(
        "spBv1.0/G/DDATA/N/D",
        &payload(Some(2), Some(2_000), vec![temp_at, by_alias(2, int(1500))]),
    );
    assert!(out.replies.is_empty());
    assert_eq!(out.readings.len(), 2);
    let (target, reading) = out.readings[0];
    assert_eq!(target, temperature);
    assert_eq!(reading.value, 21.25);
    assert_eq!(reading.source_time, Timestamp::from_millis(2_500));
    assert_eq!(reading.seq, 2_500_000);
    assert_eq!(reading.quality, Quality::Good);
    assert_eq!(reading.source, SourceId(7));
    let (target, reading) = out.readings[1];
    assert_eq!(target, speed);
    assert_eq!(reading.value, 1500.0);
    assert_eq!(reading.source_time, Timestamp::from_millis(2_000));

    // By name, and with neither timestamp: the receive time.
    let metric = Metric {
        name: Some("Sensors/Temperature".into()),
        value: Some(double(22.0)),
        ..Metric::default()
    };
    let out = h.send("spBv1.0/G/DDATA/N/D", &payload(Some(3), None, vec![metric]));
    assert_eq!(out.readings.len(), 1);
    assert_eq!(out.readings[0].1.source_time, h.now);
    assert_eq!(out.readings[0].1.value, 22.0);

    // Node-level metrics feed the node mapping.
    let out = h.send(
        "spBv1.0/G/NDATA/N",
        &payload(Some(4), Some(3_000), vec![by_alias(2, float(31.5))]),
    );
    assert_eq!(out.readings.len(), 1);
    assert_eq!(out.readings[0].0, h.target(PRESS_2, "temperature"));
    assert_eq!(out.readings[0].1.value, 31.5);
    assert_eq!(h.drops.total(), 0, "{:?}", h.drops.snapshot());
}

#[test]
fn birth_values_are_readings_and_control_metrics_are_not() {
    let mut h = Harness::new();
    let out = h.send("spBv1.0/G/NBIRTH/N", &node_birth(0, 1));
    assert_eq!(out.readings.len(), 1);
    assert_eq!(out.readings[0].0, h.target(PRESS_2, "temperature"));
    assert_eq!(out.readings[0].1.value, 30.0);
    assert_eq!(h.drops.total(), 0);
}

#[test]
fn death_marks_stale() {
    let mut h = Harness::new();
    h.born();
    let temperature = h.target(PRESS_1, "temperature");
    h.send(
        "spBv1.0/G/DDATA/N/D",
        &payload(Some(2), Some(5_000), vec![by_alias(1, double(42.0))]),
    );
    let out = h.send(
        "spBv1.0/G/DDEATH/N/D",
        &payload(Some(3), Some(6_000), vec![]),
    );
    assert!(out.readings.is_empty(), "no value is made up");
    assert_eq!(out.conditions.len(), 2, "temperature and speed");
    let (target, condition) = out
        .conditions
        .iter()
        .find(|(target, _)| *target == temperature)
        .cloned()
        .unwrap();
    assert_eq!(target, temperature);
    assert_eq!(condition.quality, Quality::Stale);
    assert_eq!(condition.since, Timestamp::from_millis(6_000));
    assert_eq!(condition.reason, "device `G/N/D` died (DDEATH)");
    assert!(
        out.conditions
            .iter()
            .all(|(_, c)| c.quality == Quality::Stale)
    );

    // Until the next DBIRTH, the device's data is before birth.
    let out = h.send(
        "spBv1.0/G/DDATA/N/D",
        &payload(Some(4), Some(7_000), vec![by_alias(1, double(43.0))]),
    );
    assert!(out.readings.is_empty());
    assert_eq!(h.drops.count(DropKind::BeforeBirth), 1);
    assert!(out.replies.iter().any(is_rebirth));
    // A second death changes nothing.
    let out = h.send(
        "spBv1.0/G/DDEATH/N/D",
        &payload(Some(5), Some(8_000), vec![]),
    );
    assert!(out.conditions.is_empty());
}

#[test]
fn node_death_marks_node_and_devices_stale_when_bd_seq_matches() {
    let mut h = Harness::new();
    h.born();
    let death = |bd_seq| {
        payload(
            None,
            Some(1),
            vec![defined(
                BD_SEQ,
                0,
                DataType::Int64,
                metric::Value::LongValue(bd_seq),
            )],
        )
    };
    // The will of an earlier session: ignored.
    let out = h.send("spBv1.0/G/NDEATH/N", &death(2));
    assert!(out.conditions.is_empty());
    let out = h.send("spBv1.0/G/NDEATH/N", &death(3));
    let press_2 = h.target(PRESS_2, "temperature");
    assert_eq!(out.conditions.len(), 3, "{:?}", out.conditions);
    assert!(out.readings.is_empty());
    assert!(
        out.conditions
            .iter()
            .all(|(_, c)| c.quality == Quality::Stale)
    );
    assert!(out.conditions.iter().all(|(_, c)| c.since == h.now));
    let node = &out
        .conditions
        .iter()
        .find(|(t, _)| *t == press_2)
        .unwrap()
        .1;
    assert_eq!(node.reason, "edge node `G/N` died (NDEATH)");
    // Dead: node and device data wait for a birth.
    let out = h.send(
        "spBv1.0/G/NDATA/N",
        &payload(Some(2), None, vec![by_alias(2, float(1.0))]),
    );
    assert!(out.readings.is_empty());
    assert_eq!(h.drops.count(DropKind::BeforeBirth), 1);
    // A second death changes nothing.
    assert!(
        h.send("spBv1.0/G/NDEATH/N", &death(3))
            .conditions
            .is_empty()
    );
}

#[test]
fn sequence_gap_requests_one_rebirth() {
    let mut h = Harness::new();
    h.born();
    let data = |seq, value| {
        payload(
            Some(seq),
            Some(2_000 + seq),
            vec![by_alias(1, double(value))],
        )
    };
    let out = h.send("spBv1.0/G/DDATA/N/D", &data(5, 1.0));
    assert_eq!(h.drops.count(DropKind::SequenceGap), 1);
    assert_eq!(out.replies.len(), 1);
    assert!(is_rebirth(&out.replies[0]));
    assert_eq!(out.readings.len(), 1, "data after a gap is still applied");

    // In sequence again: nothing more.
    let out = h.send("spBv1.0/G/DDATA/N/D", &data(6, 2.0));
    assert!(out.replies.is_empty());
    assert_eq!(h.drops.count(DropKind::SequenceGap), 1);

    // Another gap soon after: counted, but not asked again.
    let out = h.send("spBv1.0/G/DDATA/N/D", &data(9, 3.0));
    assert_eq!(h.drops.count(DropKind::SequenceGap), 2);
    assert!(out.replies.is_empty());

    // The sequence wraps after 255.
    h.send("spBv1.0/G/NBIRTH/N", &node_birth(254, 4));
    h.send("spBv1.0/G/DBIRTH/N/D", &payload(Some(255), None, vec![]));
    let out = h.send("spBv1.0/G/DDATA/N/D", &payload(Some(0), None, vec![]));
    assert!(out.replies.is_empty());
    assert_eq!(h.drops.count(DropKind::SequenceGap), 2);

    // After an NBIRTH, a new gap is answered at once.
    let out = h.send("spBv1.0/G/DDATA/N/D", &payload(Some(7), None, vec![]));
    assert_eq!(h.drops.count(DropKind::SequenceGap), 3);
    assert!(out.replies.iter().any(is_rebirth));
}

#[test]
fn data_before_birth_requests_rebirth() {
    let mut h = Harness::new();
    let data = payload(Some(9), Some(1), vec![by_alias(1, double(1.0))]);
    let out = h.send("spBv1.0/G/DDATA/N/D", &data);
    assert!(out.readings.is_empty());
    assert_eq!(h.drops.count(DropKind::BeforeBirth), 1);
    assert_eq!(out.replies.len(), 1);
    assert!(is_rebirth(&out.replies[0]));

    let out = h.send("spBv1.0/G/NDATA/N", &data);
    assert_eq!(h.drops.count(DropKind::BeforeBirth), 2);
    assert!(out.replies.is_empty(), "asked moments ago");

    h.now = h.now.plus(REBIRTH_INTERVAL);
    let out = h.send("spBv1.0/G/DDATA/N/D", &data);
    assert_eq!(h.drops.count(DropKind::BeforeBirth), 3);
    assert!(out.replies.iter().any(is_rebirth));

    // After NBIRTH, a device without DBIRTH is still before birth.
    h.send("spBv1.0/G/NBIRTH/N", &node_birth(0, 0));
    let out = h.send("spBv1.0/G/DDATA/N/D", &payload(Some(1), None, vec![]));
    assert_eq!(h.drops.count(DropKind::BeforeBirth), 4);
    assert!(out.replies.iter().any(is_rebirth));
}

#[test]
fn garbage_is_bad_protobuf() {
    let mut h = Harness::new();
    for garbage in [
        &[0xff_u8, 0xff, 0xff][..],
        &[0x12, 0x05, 0x01],
        &[0x0f],
        &[
            0x08, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x01,
        ],
        b"{\"v\": 1}",
    ] {
        let out = h.send_bytes("spBv1.0/G/NDATA/N", garbage);
        assert!(out.readings.is_empty() && out.replies.is_empty());
    }
    assert_eq!(h.drops.count(DropKind::BadProtobuf), 5);
    assert_eq!(h.drops.total(), 5);
}

#[test]
fn unknown_sources_topics_and_metrics_are_counted() {
    let mut h = Harness::new();
    h.born();
    let empty = payload(Some(2), None, vec![]);
    h.send("spBv1.0/G/DDATA/N/Other", &empty);
    h.send("spBv1.0/G/NDATA/Other", &empty);
    h.send("spBv1.0/H/NDATA/N", &empty);
    assert_eq!(h.drops.count(DropKind::UnknownAsset), 3);
    for topic in [
        "spBv1.0/G/DDATA/N",
        "spBv1.0/G/NDATA/N/D",
        "spBv1.0/G/NFOO/N",
        "spBv1.0/G",
        "spBv1.0/G/DDATA/N/D/x",
        "spBv1.0//NDATA/N",
        "other/G/NDATA/N",
    ] {
        h.send(topic, &empty);
    }
    assert_eq!(h.drops.count(DropKind::UnknownTopic), 7);
    // Commands are for edge nodes, not for this host.
    h.send("spBv1.0/G/DCMD/N/D", &empty);
    h.send("spBv1.0/G/NCMD/N", &empty);

    let before = h.drops.total();
    let metrics = vec![
        by_alias(99, double(1.0)),
        Metric {
            name: Some("Not/Born".into()),
            value: Some(double(1.0)),
            ..Metric::default()
        },
        by_alias(1, metric::Value::StringValue("hot".into())),
        by_alias(1, double(f64::NAN)),
        by_alias(1, double(f64::INFINITY)),
        Metric {
            alias: Some(1),
            is_null: Some(true),
            ..Metric::default()
        },
    ];
    let out = h.send("spBv1.0/G/DDATA/N/D", &payload(Some(3), None, metrics));
    assert!(out.readings.is_empty());
    assert_eq!(h.drops.count(DropKind::UnknownChannel), 2);
    assert_eq!(h.drops.count(DropKind::WrongType), 1);
    assert_eq!(h.drops.count(DropKind::NotFinite), 2);
    assert_eq!(h.drops.total(), before + 5);

    // A birth metric the twin has no channel for is counted whenever it has a value.
    h.send(
        "spBv1.0/G/DBIRTH/N/D",
        &payload(
            Some(4),
            None,
            vec![defined(
                "Properties/Make",
                5,
                DataType::String,
                metric::Value::StringValue("x".into()),
            )],
        ),
    );
    assert_eq!(h.drops.count(DropKind::UnknownChannel), 3);
}

#[test]
fn integers_read_by_datatype() {
    let value = |raw, datatype: DataType| reading_value(Some(&raw), datatype as u32);
    assert_eq!(value(int(0xffff_ffff), DataType::Int8), Ok(-1.0));
    assert_eq!(value(int(0xff), DataType::Int8), Ok(-1.0));
    assert_eq!(value(int(0xff), DataType::UInt8), Ok(255.0));
    assert_eq!(value(int(0xffff_8000), DataType::Int16), Ok(-32768.0));
    assert_eq!(value(int(0xffff_fffe), DataType::Int32), Ok(-2.0));
    assert_eq!(
        value(int(0xffff_fffe), DataType::UInt32),
        Ok(4_294_967_294.0)
    );
    assert_eq!(
        value(metric::Value::LongValue(u64::MAX), DataType::Int64),
        Ok(-1.0)
    );
    assert_eq!(
        value(metric::Value::LongValue(1 << 40), DataType::UInt64),
        Ok((1u64 << 40) as f64)
    );
    assert_eq!(
        value(metric::Value::BooleanValue(true), DataType::Boolean),
        Ok(1.0)
    );
    assert_eq!(
        value(metric::Value::LongValue(1), DataType::DateTime),
        Err(DropKind::WrongType)
    );
    assert_eq!(
        value(metric::Value::BytesValue(vec![1]), DataType::Int8Array),
        Err(DropKind::WrongType)
    );
    assert_eq!(reading_value(None, 0), Err(DropKind::WrongType));
}

/// The actuation a real twin publishes for `command`.
async fn actuation_of(h: &Harness, command: Command) -> Actuation {
    let mut actuations = h.twins.actuations();
    let id = command.id.clone();
    h.twins.command(command).await.unwrap();
    loop {
        let actuation = actuations.recv().await.unwrap();
        if actuation.command_id() == &id {
            return actuation;
        }
    }
}

/// The three presses of [`TYPES`] with their actors running.
async fn running_presses(dir: &std::path::Path) -> doppel_actors::Runtime {
    let types = TwinTypes::from_toml(TYPES, "sparkplug-tests").unwrap();
    let plant = "[[plant]]\npath = \"acme/plant-a\"\n[[plant.line]]\nname = \"line-1\"\n\
        [[plant.line.machine]]\nname = \"press-1\"\ntype = \"press\"\n\
        [[plant.line.machine]]\nname = \"press-2\"\ntype = \"press\"\n\
        [[plant.line.machine]]\nname = \"press-3\"\ntype = \"press\"\n";
    let topology = doppel_runtime::Topology::from_toml(plant, "sparkplug-tests", &types).unwrap();
    doppel_actors::Runtime::builder()
        .twin_types(types)
        .topology(topology)
        .data_dir(dir)
        .start()
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn actuation_becomes_dcmd_or_ncmd() {
    let dir = tempfile::tempdir().unwrap();
    let runtime = running_presses(dir.path()).await;
    let mut h = Harness::on(runtime.twins(), CONFIG);
    let command = |asset: &str, name: &str| {
        Command::new(
            AssetPath::parse(asset).unwrap(),
            name,
            Origin::operator("test"),
        )
    };
    let applied = actuation_of(
        &h,
        command(PRESS_1, "apply")
            .param("speed", Value::Float(1500.5))
            .param("count", Value::Int(-3))
            .param("running", Value::Bool(false)),
    )
    .await;
    let start = actuation_of(&h, command(PRESS_2, "start")).await;
    let unmapped = actuation_of(&h, command(PRESS_3, "start")).await;
    let empty = actuation_of(&h, command(PRESS_1, "reset")).await;
    let before = millis(Timestamp::now());
    let mut out = Vec::new();
    h.codec.actuation(&applied, &mut out);
    assert_eq!(out.len(), 1);
    assert_eq!(out[0].topic, "spBv1.0/G/DCMD/N/D");
    assert!(!out[0].retain);
    assert!(out[0].at_most_once, "commands at QoS 0");
    let sent = Payload::decode(out[0].payload.as_slice()).unwrap();
    assert!(sent.timestamp.unwrap() >= before);
    assert_eq!(sent.seq, None);
    let metrics: Vec<(Option<&str>, Option<u32>, Option<&metric::Value>)> = sent
        .metrics
        .iter()
        .map(|m| (m.name.as_deref(), m.datatype, m.value.as_ref()))
        .collect();
    assert_eq!(
        metrics,
        vec![
            (
                Some("count"),
                Some(DataType::Int64 as u32),
                Some(&metric::Value::LongValue((-3i64) as u64))
            ),
            (
                Some("running"),
                Some(DataType::Boolean as u32),
                Some(&metric::Value::BooleanValue(false))
            ),
            (
                Some("Outputs/Speed"),
                Some(DataType::Double as u32),
                Some(&double(1500.5))
            ),
        ]
    );
    // Read back as the edge node would, the integer is -3.
    assert_eq!(
        reading_value(sent.metrics[0].value.as_ref(), DataType::Int64 as u32),
        Ok(-3.0)
    );

    out.clear();
    h.codec.actuation(&start, &mut out);
    assert_eq!(out.len(), 1);
    assert_eq!(out[0].topic, "spBv1.0/G/NCMD/N");

    out.clear();
    h.codec.actuation(&unmapped, &mut out);
    h.codec.actuation(&empty, &mut out);
    assert!(
        out.is_empty(),
        "unmapped twins and empty actuations send nothing"
    );
    runtime.shutdown().await;
}

#[test]
fn host_state_and_filters() {
    let mut h = Harness::new();
    assert_eq!(
        h.codec.filters(),
        vec![
            "spBv1.0/G/#".to_string(),
            "spBv1.0/STATE/doppel".to_string()
        ]
    );
    assert!(h.codec.claims("spBv1.0/G/NDATA/N"));
    assert!(!h.codec.claims("spBv1.0/H/NDATA/N"));
    assert!(h.codec.claims("spBv1.0/STATE/doppel"), "its own STATE");
    assert!(!h.codec.claims("spBv1.0/STATE/other"));
    assert!(!h.codec.claims("acme/plant-a/line-1/press-1/telemetry"));
    let json = |bytes: &[u8]| serde_json::from_slice::<serde_json::Value>(bytes).unwrap();

    // Each CONNECT has its own timestamp, and the online STATE repeats it.
    let now = Timestamp::now();
    let mut stamps = Vec::new();
    for _ in 0..2 {
        let will = h.codec.last_will(now).unwrap();
        let mut hello = Vec::new();
        h.codec.on_connected(&mut hello);
        assert_eq!(hello.len(), 1);
        let online = &hello[0];
        assert_eq!(will.topic, "spBv1.0/STATE/doppel");
        assert_eq!(online.topic, will.topic);
        assert!(will.retain && online.retain);
        assert!(!will.at_most_once && !online.at_most_once, "STATE at QoS 1");
        let (will, online) = (json(&will.payload), json(&online.payload));
        assert_eq!(will["online"], false);
        assert_eq!(online["online"], true);
        assert!(online["timestamp"].as_u64().unwrap() > 1_600_000_000_000);
        assert_eq!(will["timestamp"], online["timestamp"]);
        stamps.push(online["timestamp"].as_u64().unwrap());
    }
    assert!(stamps[1] > stamps[0], "a new timestamp per connection");

    // Declared offline by someone else: online again, same timestamp.
    let mut out = Inbound::default();
    let claim = format!(r#"{{"online":false,"timestamp":{}}}"#, stamps[1]);
    h.codec.decode(
        "spBv1.0/STATE/doppel",
        claim.as_bytes(),
        now,
        &mut out,
        &h.drops,
    );
    assert_eq!(out.replies.len(), 1);
    let reply = json(&out.replies[0].payload);
    assert_eq!(reply["online"], true);
    assert_eq!(reply["timestamp"].as_u64(), Some(stamps[1]));
    // Its own online STATE coming back changes nothing.
    let mut out = Inbound::default();
    let own = format!(r#"{{"online":true,"timestamp":{}}}"#, stamps[1]);
    h.codec.decode(
        "spBv1.0/STATE/doppel",
        own.as_bytes(),
        now,
        &mut out,
        &h.drops,
    );
    assert!(out.replies.is_empty());
    assert_eq!(h.drops.total(), 0);

    // A clean stop says offline.
    let mut farewell = Vec::new();
    h.codec.on_stopping(&mut farewell);
    let offline = json(&farewell[0].payload);
    assert_eq!(offline["online"], false);
    assert_eq!(offline["timestamp"].as_u64(), Some(stamps[1]));

    let mut quiet = Harness::with_config(
        "[[map]]\ngroup = \"G\"\nnode = \"N\"\nasset = \"acme/plant-a/line-1/press-1\"",
    );
    assert!(quiet.codec.last_will(now).is_none());
}

#[test]
fn config_is_validated() {
    let (twins, _dir) = twins();
    let check = |toml_text: &str| -> Result<(), SparkplugConfigError> {
        let config: SparkplugConfig = toml::from_str(toml_text).unwrap();
        SparkplugCodec::new(&config, Resolver::new(twins.clone()), SourceId(1)).map(|_| ())
    };
    let map = |extra: &str| {
        format!("[[map]]\ngroup = \"G\"\nnode = \"N\"\nasset = \"{PRESS_1}\"\n{extra}")
    };
    assert!(check(&map("")).is_ok());
    assert_eq!(check(""), Err(SparkplugConfigError::NoMappings));
    assert!(matches!(
        check(&map("device = \"a/b\"")),
        Err(SparkplugConfigError::BadId { what: "device", .. })
    ));
    assert!(matches!(
        check(&format!("host_id = \"\"\n{}", map(""))),
        Err(SparkplugConfigError::BadId { what: "host", .. })
    ));
    assert!(matches!(
        check(&map("").replace("\"G\"", "\"STATE\"")),
        Err(SparkplugConfigError::BadId { what: "group", .. })
    ));
    assert!(matches!(
        check(&map("").replace("press-1", "press-9")),
        Err(SparkplugConfigError::UnknownAsset(_))
    ));
    assert!(matches!(
        check(&map("metrics = { \"A\" = \"pressure\" }")),
        Err(SparkplugConfigError::UnknownChannel { .. })
    ));
    assert!(matches!(
        check(&map("commands = { torque = \"A\" }")),
        Err(SparkplugConfigError::UnknownDesired { .. })
    ));
    assert!(matches!(
        check(&format!("{}\n{}", map(""), map(""))),
        Err(SparkplugConfigError::DuplicateSource(_))
    ));
    assert!(matches!(
        check(&format!("{}\n{}", map(""), map("device = \"D\""))),
        Err(SparkplugConfigError::DuplicateAsset(_))
    ));
    assert!(toml::from_str::<SparkplugConfig>(&map("alias = 3")).is_err());
}

fn any_value() -> impl Strategy<Value = Option<metric::Value>> {
    prop_oneof![
        Just(None),
        any::<u32>().prop_map(|v| Some(metric::Value::IntValue(v))),
        any::<u64>().prop_map(|v| Some(metric::Value::LongValue(v))),
        any::<f32>().prop_map(|v| Some(metric::Value::FloatValue(v))),
        any::<f64>().prop_map(|v| Some(metric::Value::DoubleValue(v))),
        prop_oneof![
            Just(f64::NAN),
            Just(f64::INFINITY),
            Just(f64::NEG_INFINITY),
            Just(-0.0)
        ]
        .prop_map(|v| Some(metric::Value::DoubleValue(v))),
        any::<bool>().prop_map(|v| Some(metric::Value::BooleanValue(v))),
        ".{0,8}".prop_map(|v| Some(metric::Value::StringValue(v))),
        proptest::collection::vec(any::<u8>(), 0..8)
            .prop_map(|v| Some(metric::Value::BytesValue(v))),
        Just(Some(metric::Value::DatasetValue(Default::default()))),
        Just(Some(metric::Value::TemplateValue(Default::default()))),
    ]
}

fn any_metric() -> impl Strategy<Value = Metric> {
    (
        proptest::option::of(prop_oneof![
            Just("Sensors/Temperature".to_string()),
            Just("Sensors/Speed".to_string()),
            Just("temperature".to_string()),
            Just("running".to_string()),
            Just(BD_SEQ.to_string()),
            Just(REBIRTH.to_string()),
            ".{0,12}",
        ]),
        proptest::option::of(0u64..6),
        proptest::option::of(any::<u64>()),
        proptest::option::of(0u32..40),
        proptest::option::of(any::<bool>()),
        any_value(),
    )
        .prop_map(
            |(name, alias, timestamp, datatype, is_null, value)| Metric {
                name,
                alias,
                timestamp,
                datatype,
                is_null,
                value,
                ..Metric::default()
            },
        )
}

fn any_message() -> impl Strategy<Value = (String, Payload)> {
    let topic = prop_oneof![
        Just("spBv1.0/G/NBIRTH/N"),
        Just("spBv1.0/G/NDEATH/N"),
        Just("spBv1.0/G/NDATA/N"),
        Just("spBv1.0/G/DBIRTH/N/D"),
        Just("spBv1.0/G/DDEATH/N/D"),
        Just("spBv1.0/G/DDATA/N/D"),
        Just("spBv1.0/G/DDATA/N/X"),
        Just("spBv1.0/G/DCMD/N/D"),
    ];
    (
        topic,
        proptest::option::of(any::<u64>()),
        proptest::option::of(prop_oneof![0u64..4, any::<u64>()]),
        proptest::collection::vec(any_metric(), 0..6),
    )
        .prop_map(|(topic, timestamp, seq, metrics)| {
            (topic.to_string(), payload(seq, timestamp, metrics))
        })
}

/// Runs `test` on generated values, with one set of twins for all cases (opening a
/// data directory per case would dominate the run time).
fn property<S: Strategy>(strategy: S, test: impl Fn(&Twins, S::Value) -> Result<(), TestCaseError>)
where
    S::Value: std::fmt::Debug,
{
    let (twins, _dir) = twins();
    let mut runner = proptest::test_runner::TestRunner::new(ProptestConfig::with_cases(512));
    if let Err(error) = runner.run(&strategy, |value| test(&twins, value)) {
        panic!("{error}");
    }
}

#[test]
fn arbitrary_bytes_never_panic() {
    let topics = [
        "spBv1.0/G/NBIRTH/N",
        "spBv1.0/G/DDATA/N/D",
        "spBv1.0/G/NDEATH/N",
        "spBv1.0/G/DBIRTH/N/D",
    ];
    let messages = proptest::collection::vec(
        (
            0..topics.len(),
            proptest::collection::vec(any::<u8>(), 0..64),
        ),
        1..16,
    );
    property(messages, |twins, messages| {
        let mut h = Harness::on(twins, CONFIG);
        for (topic, bytes) in messages {
            let out = h.send_bytes(topics[topic], &bytes);
            prop_assert!(out.readings.iter().all(|(_, r)| r.value.is_finite()));
        }
        Ok(())
    });
}

#[test]
fn nonsensical_payloads_yield_only_finite_readings() {
    let cases = (
        proptest::collection::vec(any_message(), 1..24),
        0u64..10_000,
    );
    property(cases, |twins, (messages, step_ms)| {
        let mut h = Harness::on(twins, CONFIG);
        let channels: Vec<ChannelTarget> = [PRESS_1, PRESS_2]
            .iter()
            .flat_map(|asset| {
                ["temperature", "speed", "running"].map(|channel| h.target(asset, channel))
            })
            .collect();
        for (topic, message) in messages {
            h.now = h.now.plus(std::time::Duration::from_millis(step_ms));
            let out = h.send(&topic, &message);
            for (target, reading) in &out.readings {
                prop_assert!(reading.value.is_finite());
                prop_assert!(channels.contains(target));
                prop_assert_eq!(reading.seq, reading.source_time.as_micros().max(0) as u64);
            }
            prop_assert!(out.replies.len() <= 1);
            prop_assert!(out.replies.iter().all(is_rebirth));
        }
        Ok(())
    });
}
