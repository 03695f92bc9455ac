//! The Unified Namespace JSON layout.
//!
//! Telemetry for one channel arrives on `<prefix><asset path>/telemetry/<channel>`:
//!
//! ```json
//! {"v": 71.3, "ts": "2026-11-21T10:00:00.123Z", "q": "good", "seq": 1842}
//! ```
//!
//! or as a bare number or boolean (`71.3`, `true`). Several channels of one asset
//! arrive together on `<prefix><asset path>/telemetry`:
//!
//! ```json
//! {"ts": "2026-11-21T10:00:00.123Z", "values": {"temperature": 71.3, "vibration": {"v": 2.1, "q": "uncertain"}}}
//! ```
//!
//! where each channel takes the message's `ts`, `q` and `seq` unless it has its own.
//!
//! Defaults: `ts` is the time the connector received the message; `q` is `good`;
//! `seq`, which the twin uses to recognise a redelivered reading, is the timestamp in
//! microseconds when `ts` is given, and otherwise a number the connector increases
//! with every reading; `epoch` is 0. A reading redelivered by the broker is therefore
//! recognised only when it carries `seq` or `ts`. The three kinds of sequence number
//! are kept apart (each is its own data source, see [`UnsSources`]), so a publisher
//! without `seq` is never mistaken for a replay of one that numbers its readings.
//!
//! A publisher that numbers its readings and restarts its numbering (from 1 after a
//! reboot) declares a new `epoch` with it — a boot counter, a boot time, any number or
//! text that differs from the last one: the twin takes a reading for a duplicate only
//! when the same (epoch, `seq`) was applied. Without a new epoch, readings whose
//! numbers were applied before the restart are counted as duplicates and ignored.
//!
//! Booleans read as 1 and 0. Timestamps are RFC 3339 text or integer milliseconds
//! since the epoch.
//!
//! Accepted commands and safety actions go to `<prefix><asset path>/cmd` and every
//! command's verdict to `<prefix><asset path>/cmd/result`, both as JSON.

use doppel_runtime::path::MAX_PATH_DEPTH;
use doppel_runtime::twin::{Actuation, CommandVerdict};
use doppel_runtime::{Quality, Reading, SourceId, Timestamp, Value};
use serde_json::{Map, Value as Json, json};

use super::codec::{Codec, Inbound, Outgoing, Resolver};
use super::config::UnsConfig;
use crate::drops::{DropKind, Drops, Scoped};

/// The data sources of a connection's readings, one per kind of sequence number: the
/// twins de-duplicate per source and channel, and the kinds count differently.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UnsSources {
    /// Readings that carry `seq`.
    pub explicit: SourceId,
    /// Readings numbered by their `ts`.
    pub timestamped: SourceId,
    /// Readings numbered by the connector as they arrive.
    pub arrival: SourceId,
}

/// The Unified Namespace JSON layout on one connection.
pub struct UnsCodec {
    config: UnsConfig,
    resolver: Resolver,
    sources: UnsSources,
    /// The last sequence number given to a reading without `seq` or `ts`.
    counter: u64,
}

/// A reading's fields before it is bound to a channel.
#[derive(Debug, Clone, Copy, PartialEq)]
struct Fields {
    value: Option<f64>,
    time: Option<Timestamp>,
    quality: Option<Quality>,
    seq: Option<u64>,
    epoch: Option<u32>,
}

impl UnsCodec {
    /// The layout for `config`, resolving assets through `resolver`; readings carry
    /// one of `sources`.
    pub fn new(config: UnsConfig, resolver: Resolver, sources: UnsSources) -> Self {
        Self {
            config,
            resolver,
            sources,
            counter: 0,
        }
    }

    /// Splits a topic into asset path and channel (`None` for the batch form).
    fn split<'t>(&self, topic: &'t str) -> Option<(&'t str, Option<&'t str>)> {
        let rest = topic.strip_prefix(self.config.prefix.as_str())?;
        let telemetry = self.config.telemetry.as_str();
        if let Some(asset) = rest
            .strip_suffix(telemetry)
            .and_then(|head| head.strip_suffix('/'))
        {
            return Some((asset, None));
        }
        let (head, channel) = rest.rsplit_once('/')?;
        let asset = head.strip_suffix(telemetry)?.strip_suffix('/')?;
        Some((asset, Some(channel)))
    }

    fn fields(&self, json: &Json, drops: &Scoped<'_>) -> Option<Fields> {
        match json {
            Json::Number(_) | Json::Bool(_) => Some(Fields {
                value: Some(number(json, drops)?),
                time: None,
                quality: None,
                seq: None,
                epoch: None,
            }),
            Json::Object(object) => self.object_fields(object, drops),
            other => {
                drops.record(DropKind::WrongType, &format_args!("payload {other}"));
                None
            }
        }
    }

    fn object_fields(&self, object: &Map<String, Json>, drops: &Scoped<'_>) -> Option<Fields> {
        let names = &self.config.fields;
        let value = match object.get(&names.value) {
            Some(value) => Some(number(value, drops)?),
            None => None,
        };
        let time = match object.get(&names.timestamp) {
            Some(ts) => Some(timestamp(ts, drops)?),
            None => None,
        };
        let quality = match object.get(&names.quality) {
            Some(q) => Some(quality(q, drops)?),
            None => None,
        };
        let seq = match object.get(&names.seq) {
            Some(Json::Number(n)) if n.as_u64().is_some() => n.as_u64(),
            Some(other) => {
                drops.record(DropKind::WrongType, &format_args!("seq {other}"));
                return None;
            }
            None => None,
        };
        let epoch = match object.get(&names.epoch) {
            Some(json) => Some(epoch(json, drops)?),
            None => None,
        };
        Some(Fields {
            value,
            time,
            quality,
            seq,
            epoch,
        })
    }

    fn reading(&mut self, fields: Fields, defaults: &Fields, now: Timestamp) -> Option<Reading> {
        let value = fields.value?;
        let given_time = fields.time.or(defaults.time);
        let (source, seq) = match fields.seq.or(defaults.seq) {
            Some(seq) => (self.sources.explicit, seq),
            None => match given_time {
                Some(time) => (self.sources.timestamped, time.as_micros().max(0) as u64),
                None => {
                    self.counter = (self.counter + 1).max(now.as_micros().max(0) as u64);
                    (self.sources.arrival, self.counter)
                }
            },
        };
        Some(Reading {
            value,
            source_time: given_time.unwrap_or(now),
            quality: fields.quality.or(defaults.quality).unwrap_or_default(),
            source,
            epoch: fields.epoch.or(defaults.epoch).unwrap_or(0),
            seq,
            stamped: given_time.is_some(),
        })
    }

    fn json_topic(&self, asset: &str, suffix: &str) -> String {
        format!(
            "{}{asset}/{}{suffix}",
            self.config.prefix, self.config.commands
        )
    }
}

fn number(json: &Json, drops: &Scoped<'_>) -> Option<f64> {
    match json {
        Json::Number(n) => match n.as_f64() {
            Some(v) if v.is_finite() => Some(v),
            _ => {
                drops.record(DropKind::NotFinite, &format_args!("value {n}"));
                None
            }
        },
        Json::Bool(b) => Some(f64::from(u8::from(*b))),
        other => {
            drops.record(DropKind::WrongType, &format_args!("value {other}"));
            None
        }
    }
}

fn timestamp(json: &Json, drops: &Scoped<'_>) -> Option<Timestamp> {
    let parsed = match json {
        Json::String(text) => Timestamp::parse_rfc3339(text),
        Json::Number(n) => n
            .as_i64()
            .filter(|ms| ms.unsigned_abs() < 1 << 53)
            .map(Timestamp::from_millis),
        _ => None,
    };
    if parsed.is_none() {
        drops.record(DropKind::BadTimestamp, &format_args!("timestamp {json}"));
    }
    parsed
}

/// A publisher's epoch: a number (folded to 32 bits) or text (hashed with FNV-1a).
/// Epochs are only compared for equality.
fn epoch(json: &Json, drops: &Scoped<'_>) -> Option<u32> {
    match json {
        Json::Number(n) if n.as_u64().is_some() => {
            let n = n.as_u64().unwrap_or(0);
            Some((n ^ (n >> 32)) as u32)
        }
        Json::String(text) => Some(text.bytes().fold(0x811c_9dc5_u32, |hash, byte| {
            (hash ^ u32::from(byte)).wrapping_mul(0x0100_0193)
        })),
        other => {
            drops.record(DropKind::WrongType, &format_args!("epoch {other}"));
            None
        }
    }
}

fn quality(json: &Json, drops: &Scoped<'_>) -> Option<Quality> {
    let parsed = match json {
        Json::String(text) if text.eq_ignore_ascii_case("good") => Some(Quality::Good),
        Json::String(text) if text.eq_ignore_ascii_case("uncertain") => Some(Quality::Uncertain),
        Json::String(text) if text.eq_ignore_ascii_case("bad") => Some(Quality::Bad),
        _ => None,
    };
    if parsed.is_none() {
        drops.record(DropKind::BadQuality, &format_args!("quality {json}"));
    }
    parsed
}

fn values_json(values: &[(String, Value)]) -> Json {
    Json::Object(
        values
            .iter()
            .map(|(name, value)| {
                (
                    name.clone(),
                    serde_json::to_value(value).unwrap_or(Json::Null),
                )
            })
            .collect(),
    )
}

impl Codec for UnsCodec {
    fn name(&self) -> &'static str {
        "uns"
    }

    /// Telemetry at every depth an asset path can have under the connector's scope (by
    /// default everywhere), not only the hosted twins' depths: a topic for an asset
    /// this node does not know is received and counted as an unknown asset rather than
    /// never seen.
    fn filters(&self) -> Vec<String> {
        let (prefix, telemetry) = (&self.config.prefix, &self.config.telemetry);
        if self.config.scope.is_empty() {
            return (1..=MAX_PATH_DEPTH)
                .map(|depth| format!("{prefix}{}{telemetry}/#", "+/".repeat(depth)))
                .collect();
        }
        self.config
            .scope
            .iter()
            .flat_map(|scope| {
                let depth = scope.as_str().split('/').count();
                let below = MAX_PATH_DEPTH.saturating_sub(depth);
                (0..=below).map(move |depth| {
                    format!("{prefix}{scope}/{}{telemetry}/#", "+/".repeat(depth))
                })
            })
            .collect()
    }

    fn claims(&self, topic: &str) -> bool {
        self.split(topic).is_some()
    }

    fn decode(
        &mut self,
        topic: &str,
        payload: &[u8],
        now: Timestamp,
        out: &mut Inbound,
        drops: &Drops,
    ) {
        let Some((asset, channel)) = self.split(topic) else {
            drops.record(DropKind::UnknownTopic, &format_args!("`{topic}`"));
            return;
        };
        let json: Json = match serde_json::from_slice(payload) {
            Ok(json) => json,
            Err(error) => {
                drops.record(DropKind::MalformedJson, &format_args!("`{topic}`: {error}"));
                return;
            }
        };
        match channel {
            Some(channel) => {
                let Some(fields) = self.fields(&json, &drops.scoped(topic)) else {
                    return;
                };
                if fields.value.is_none() {
                    drops.record(
                        DropKind::MalformedJson,
                        &format_args!("`{topic}`: no `{}` field", self.config.fields.value),
                    );
                    return;
                }
                let Some(target) = self.resolver.resolve(asset, channel, drops) else {
                    return;
                };
                let none = Fields {
                    value: None,
                    time: None,
                    quality: None,
                    seq: None,
                    epoch: None,
                };
                if let Some(reading) = self.reading(fields, &none, now) {
                    out.readings.push((target, reading));
                }
            }
            None => {
                let Json::Object(object) = &json else {
                    drops.record(
                        DropKind::WrongType,
                        &format_args!("`{topic}`: not an object"),
                    );
                    return;
                };
                let Some(defaults) = self.object_fields(object, &drops.scoped(topic)) else {
                    return;
                };
                let Some(Json::Object(values)) = object.get(&self.config.fields.values) else {
                    drops.record(
                        DropKind::MalformedJson,
                        &format_args!("`{topic}`: no `{}` object", self.config.fields.values),
                    );
                    return;
                };
                for (channel, value) in values {
                    let Some(fields) = self.fields(value, &drops.scoped(topic)) else {
                        continue;
                    };
                    if fields.value.is_none() {
                        drops.record(
                            DropKind::MalformedJson,
                            &format_args!("`{topic}` channel `{channel}`: no value"),
                        );
                        continue;
                    }
                    let Some(target) = self.resolver.resolve(asset, channel, drops) else {
                        continue;
                    };
                    if let Some(reading) = self.reading(fields, &defaults, now) {
                        out.readings.push((target, reading));
                    }
                }
            }
        }
    }

    fn actuation(&mut self, actuation: &Actuation, out: &mut Vec<Outgoing>) {
        if !self.config.publish_commands {
            return;
        }
        let mut body = json!({
            "id": actuation.command_id().0,
            "command": actuation.command(),
            "set": values_json(actuation.values()),
            "safety": actuation.is_safety(),
            "origin": actuation.origin(),
            "ts": actuation.at().to_rfc3339(),
        });
        if let Some(deadline) = actuation.deadline() {
            body["deadline"] = Json::String(deadline.to_rfc3339());
        }
        if actuation.is_safety() {
            body["reason"] = Json::String(actuation.reason().to_string());
        }
        out.push(Outgoing {
            topic: self.json_topic(actuation.asset().as_str(), ""),
            payload: body.to_string().into_bytes(),
            retain: false,
            at_most_once: false,
        });
    }

    fn verdict(&mut self, verdict: &CommandVerdict, out: &mut Vec<Outgoing>) {
        if !self.config.publish_commands {
            return;
        }
        let mut body = json!({
            "id": verdict.command_id.0,
            "command": verdict.command,
            "verdict": verdict.verdict.as_str(),
            "applied": values_json(&verdict.applied),
            "origin": verdict.origin,
            "version": verdict.version,
            "ts": verdict.at.to_rfc3339(),
        });
        // Clamps or the denial's governor and reason, beside the verdict.
        if let Ok(Json::Object(detail)) = serde_json::to_value(&verdict.verdict)
            && let Some((_, Json::Object(inner))) = detail.into_iter().next()
        {
            for (key, value) in inner {
                body[key] = value;
            }
        }
        out.push(Outgoing {
            topic: self.json_topic(verdict.asset.as_str(), "/result"),
            payload: body.to_string().into_bytes(),
            retain: false,
            at_most_once: false,
        });
    }
}

#[cfg(test)]
mod tests {
    use doppel_runtime::{AssetPath, Components, RuntimeSettings, TwinTypes};
    use proptest::prelude::*;

    use super::*;

    const TYPES: &str = r#"
[types.press.channels.temperature]
unit = "degC"
range = [-50.0, 250.0]
[types.press.channels.vibration]
unit = "mm/s"
range = [0.0, 50.0]
"#;

    const TOPIC: &str = "acme/plant-a/line-1/press-1/telemetry/temperature";
    const BATCH: &str = "acme/plant-a/line-1/press-1/telemetry";

    struct Harness {
        codec: UnsCodec,
        drops: Drops,
        _dir: tempfile::TempDir,
    }

    fn sources() -> UnsSources {
        UnsSources {
            explicit: SourceId(1),
            timestamped: SourceId(2),
            arrival: SourceId(3),
        }
    }

    fn harness(config: UnsConfig) -> Harness {
        let dir = tempfile::tempdir().unwrap();
        let types = TwinTypes::from_toml(TYPES, "uns-tests").unwrap();
        let machines = vec![(
            AssetPath::parse("acme/plant-a/line-1/press-1").unwrap(),
            "press".to_string(),
        )];
        let recovered = Twins::open(
            dir.path(),
            &types,
            &machines,
            Components::new(),
            RuntimeSettings::default(),
        )
        .unwrap();
        Harness {
            codec: UnsCodec::new(config, Resolver::new(recovered.twins), sources()),
            drops: Drops::new("test"),
            _dir: dir,
        }
    }

    use doppel_runtime::twin::Twins;

    impl Harness {
        fn decode(&mut self, topic: &str, payload: &[u8]) -> Vec<Reading> {
            let mut out = Inbound::default();
            self.codec
                .decode(topic, payload, Timestamp(5_000_000), &mut out, &self.drops);
            out.readings.into_iter().map(|(_, r)| r).collect()
        }
    }

    #[test]
    fn reads_every_form_with_documented_defaults() {
        let mut h = harness(UnsConfig::default());
        let full = h.decode(
            TOPIC,
            br#"{"v": 71.3, "ts": "2026-11-21T10:00:00.123Z", "q": "uncertain", "seq": 1842}"#,
        );
        assert_eq!(full.len(), 1);
        assert_eq!(full[0].value, 71.3);
        assert_eq!(full[0].quality, Quality::Uncertain);
        assert_eq!((full[0].source, full[0].seq), (SourceId(1), 1842));
        assert_eq!(
            full[0].source_time,
            Timestamp::parse_rfc3339("2026-11-21T10:00:00.123Z").unwrap()
        );
        let timed = h.decode(TOPIC, br#"{"v": 1, "ts": 1700000000000}"#);
        assert_eq!(timed[0].source, SourceId(2));
        assert_eq!(timed[0].seq, 1_700_000_000_000_000);
        let bare = h.decode(TOPIC, b"true");
        assert_eq!(bare[0].value, 1.0);
        assert_eq!(bare[0].quality, Quality::Good);
        assert_eq!(bare[0].source_time, Timestamp(5_000_000));
        let again = h.decode(TOPIC, b"2");
        assert_eq!(bare[0].source, SourceId(3));
        assert!(again[0].seq > bare[0].seq, "arrival numbers increase");
        let batch = h.decode(
            BATCH,
            br#"{"seq": 9, "q": "bad", "values": {"temperature": 50, "vibration": {"v": 2, "q": "good", "seq": 10}}}"#,
        );
        assert_eq!(batch.len(), 2);
        assert_eq!((batch[0].seq, batch[0].quality), (9, Quality::Bad));
        assert_eq!((batch[1].seq, batch[1].quality), (10, Quality::Good));
        assert_eq!(h.drops.total(), 0);
    }

    #[test]
    fn field_names_and_prefix_are_configurable() {
        let mut config = UnsConfig {
            prefix: "uns/".into(),
            telemetry: "data".into(),
            ..UnsConfig::default()
        };
        config.fields.value = "value".into();
        config.fields.seq = "n".into();
        let mut h = harness(config);
        let readings = h.decode(
            "uns/acme/plant-a/line-1/press-1/data/temperature",
            br#"{"value": 3.5, "n": 4}"#,
        );
        assert_eq!((readings[0].value, readings[0].seq), (3.5, 4));
        assert!(h.decode(TOPIC, b"1").is_empty());
        assert_eq!(h.drops.count(DropKind::UnknownTopic), 1);
        let filters = h.codec.filters();
        assert_eq!(filters.len(), MAX_PATH_DEPTH);
        assert_eq!(filters[0], "uns/+/data/#");
        assert_eq!(filters[3], "uns/+/+/+/+/data/#");
    }

    #[test]
    fn a_scoped_connector_subscribes_only_below_its_prefixes() {
        let config = UnsConfig {
            scope: vec![
                AssetPath::parse("acme/plant-a/line-1").unwrap(),
                AssetPath::parse("acme/plant-b").unwrap(),
            ],
            ..UnsConfig::default()
        };
        let filters = harness(config).codec.filters();
        assert_eq!(filters[0], "acme/plant-a/line-1/telemetry/#");
        assert_eq!(filters[1], "acme/plant-a/line-1/+/telemetry/#");
        assert!(filters.contains(&"acme/plant-b/+/+/telemetry/#".to_string()));
        assert_eq!(
            filters.len(),
            (MAX_PATH_DEPTH - 3 + 1) + (MAX_PATH_DEPTH - 2 + 1)
        );
        assert!(
            filters
                .iter()
                .all(|f| f.starts_with("acme/plant-a/line-1/") || f.starts_with("acme/plant-b/"))
        );
    }

    #[test]
    fn actuations_and_verdicts_are_json_on_the_command_topics() {
        let mut h = harness(UnsConfig::default());
        let asset = AssetPath::parse("acme/plant-a/line-1/press-1").unwrap();
        let mut out = Vec::new();
        h.codec.verdict(
            &CommandVerdict {
                asset: asset.clone(),
                command_id: doppel_runtime::CommandId("c-1".into()),
                command: "set_speed".into(),
                origin: doppel_runtime::Origin::operator("ann"),
                verdict: doppel_runtime::Verdict::Denied {
                    governor: "envelope".into(),
                    reason: "too fast".into(),
                },
                applied: Vec::new(),
                version: 7,
                at: Timestamp(0),
            },
            &mut out,
        );
        assert_eq!(out[0].topic, "acme/plant-a/line-1/press-1/cmd/result");
        let body: Json = serde_json::from_slice(&out[0].payload).unwrap();
        assert_eq!(body["verdict"], "denied");
        assert_eq!(body["governor"], "envelope");
        assert_eq!(body["reason"], "too fast");
        assert_eq!(body["ts"], "1970-01-01T00:00:00.000000Z");
    }

    proptest! {
        #[test]
        fn any_bytes_on_any_topic_never_panic(
            topic in "[a-z0-9/+#-]{0,60}",
            payload in proptest::collection::vec(any::<u8>(), 0..256),
        ) {
            let mut h = harness(UnsConfig::default());
            for readings in [h.decode(&topic, &payload), h.decode(TOPIC, &payload), h.decode(BATCH, &payload)] {
                for reading in readings {
                    prop_assert!(reading.value.is_finite());
                }
            }
        }

        #[test]
        fn json_shaped_noise_yields_finite_readings_or_counted_drops(
            payload in r#"\{("(v|ts|q|seq|values|temperature)": ?(-?[0-9]{1,30}(\.[0-9]{0,5})?(e[0-9]{1,4})?|"[a-z0-9:.T-]{0,30}"|true|null|\[\]|\{\}),? ?){0,6}\}"#,
        ) {
            let mut h = harness(UnsConfig::default());
            let single = h.decode(TOPIC, payload.as_bytes());
            prop_assert!(single.len() <= 1);
            let batch = h.decode(BATCH, payload.as_bytes());
            for reading in single.iter().chain(&batch) {
                prop_assert!(reading.value.is_finite());
            }
            let produced = (single.len() + batch.len()) as u64;
            prop_assert!(produced + h.drops.total() >= 1, "every message is either read or counted");
        }
    }
}
