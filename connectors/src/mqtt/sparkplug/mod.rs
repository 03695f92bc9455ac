//! The Sparkplug B 3.0 layout: Doppel as a Sparkplug host application.
//!
//! The codec subscribes to `spBv1.0/<group>/#` for every configured group and follows
//! each mapped edge node's session:
//!
//! - **Births.** NBIRTH starts a session (and forgets every device of the node until
//!   it publishes DBIRTH again); NBIRTH and DBIRTH define each metric's name, alias and
//!   datatype. Their values are readings like any data.
//! - **Data.** NDATA and DDATA metrics, by alias or by name, become readings: numbers
//!   and booleans (1 for true) as floats; text, bytes, date-times, arrays, data sets and
//!   templates are dropped as the wrong type, NaN and infinities as not finite, and
//!   null metrics are skipped. A metric alias or name the birth did not define is an
//!   unknown channel.
//! - **Time and de-duplication.** A reading's source time is the metric's timestamp,
//!   else the payload's, else the time the message was received. Its sequence number is
//!   its source time in microseconds, so a message the broker delivers twice lands
//!   once. Historical metrics (`is_historical`, store-and-forward data an edge node
//!   sends after it reconnects) are readings like the others: older than a channel's
//!   current value, they go into its history and journal as late readings.
//! - **Deaths.** NDEATH (when its `bdSeq` matches the NBIRTH's, if both carry one) and
//!   DDEATH mark the channels the node or device fed stale, as the specification asks
//!   of a host: their values stay, with quality stale, from the death's time — the
//!   receive time for NDEATH, whose payload is a last will written when the node
//!   connected; the payload timestamp (else the receive time) for DDEATH — until the
//!   next reading. Until the next birth, that node's or device's messages are dropped
//!   as before birth.
//! - **Sequence.** Every message of a node and its devices except NDEATH carries the
//!   next `seq` (0 to 255, wrapping; NBIRTH sets it). A jump is counted once as a
//!   sequence gap and answered with a rebirth request (NCMD `Node Control/Rebirth`);
//!   the data after the gap is still applied. Messages before any birth are dropped as
//!   before birth and also answered with a rebirth request. Requests to one node are
//!   sent at most once per [`REBIRTH_INTERVAL`] until its next NBIRTH.
//! - **Commands.** An actuation of a mapped twin goes out as DCMD (device mappings) or
//!   NCMD (node mappings), one metric per desired value: floats as Double, integers as
//!   Int64, booleans as Boolean. Commands carry no `seq`. Verdicts are not published.
//! - **Host state.** With a `host_id`, every CONNECT carries a last will saying
//!   `{"online":false,"timestamp":T}` on the retained `spBv1.0/STATE/<host_id>`, with a
//!   new `T` for each connection, and once connected the host publishes
//!   `{"online":true,"timestamp":T}` there with the same `T`. On a clean stop it
//!   publishes `online: false` itself (a clean DISCONNECT discards the will). It
//!   subscribes to its own STATE topic and, whenever it reads `online: false` there
//!   while connected, publishes `online: true` again. STATE goes out at QoS 1,
//!   retained; NCMD and DCMD (commands and rebirth requests) at QoS 0, not retained,
//!   as the specification asks.
//!
//! Messages of unmapped nodes and devices are dropped as unknown assets, payloads that
//! are not protobuf as bad protobuf. No input makes the codec panic, and its memory is
//! bounded by the configuration and the size of the latest births.

mod config;
mod metric;
#[cfg(test)]
mod tests;

pub mod proto {
    //! The Sparkplug B payload types, generated from `proto/sparkplug_b.proto`.
    #![allow(missing_docs, clippy::all)]
    include!(concat!(env!("OUT_DIR"), "/sparkplug_b.rs"));

    /// Encodes and decodes the payload types (`encode_to_vec`, `decode`).
    pub use prost::Message;
}

pub use config::{SparkplugConfig, SparkplugConfigError, SparkplugMapping};

use std::collections::{HashMap, HashSet};
use std::fmt;
use std::time::Duration;

use doppel_runtime::twin::{Actuation, ChannelTarget};
use doppel_runtime::{AssetPath, ChannelCondition, Quality, Reading, SourceId, Timestamp};
use prost::Message;

use self::metric::{bd_seq, command_metric, from_millis, host_state, millis, reading_value};
use self::proto::Payload;
use self::proto::payload::Metric;
use super::{Codec, Inbound, Outgoing, Resolver};
use crate::drops::{DropKind, Drops};

/// The first topic level of every Sparkplug B topic.
pub const NAMESPACE: &str = "spBv1.0";

/// The shortest time between two rebirth requests to one edge node.
pub const REBIRTH_INTERVAL: Duration = Duration::from_secs(5);

/// The birth and death certificate metric that ties an NDEATH to its NBIRTH.
const BD_SEQ: &str = "bdSeq";

/// The node control metric that asks an edge node to publish its births again.
const REBIRTH: &str = "Node Control/Rebirth";

/// Sparkplug's own metrics, which are never channel data.
fn is_reserved(name: &str) -> bool {
    name == BD_SEQ || name.starts_with("Node Control/") || name.starts_with("Device Control/")
}

/// The Sparkplug B 3.0 [`Codec`]: reads births, data and deaths of mapped edge nodes
/// and devices into twins, and sends actuations as NCMD/DCMD.
pub struct SparkplugCodec {
    source: SourceId,
    resolver: Resolver,
    /// The STATE topic and the timestamp of the current (or next) connection's birth,
    /// with a `host_id`.
    host: Option<(String, u64)>,
    /// Mapped edge nodes by group id and node id.
    groups: HashMap<String, HashMap<String, EdgeNode>>,
    /// Where the commands of each mapped twin go.
    routes: HashMap<AssetPath, Route>,
}

/// The destination of one twin's commands.
struct Route {
    topic: String,
    /// Desired value name to metric name, where they differ.
    metrics: HashMap<String, String>,
}

/// One edge node: its session and its mapped feeds.
struct EdgeNode {
    /// `group/node`, for drop details.
    label: String,
    /// Where rebirth requests go.
    rebirth_topic: String,
    /// The node's own metrics, when a mapping takes them.
    own: Option<Feed>,
    /// Mapped devices by device id.
    devices: HashMap<String, Feed>,
    /// The current session; `None` before the first NBIRTH and after NDEATH.
    session: Option<Session>,
    /// When a rebirth was last requested, since the last NBIRTH.
    rebirth_requested_at: Option<Timestamp>,
}

/// What an NBIRTH established.
struct Session {
    /// The birth certificate's `bdSeq`, to match the NDEATH against.
    bd_seq: Option<u64>,
    /// The last `seq` seen.
    seq: Option<u64>,
}

/// A mapped edge node or device: where its metrics go and what its birth defined.
struct Feed {
    /// `group/node` or `group/node/device`, for drop details.
    label: String,
    asset: AssetPath,
    /// Metric name to channel name, where they differ.
    channels: HashMap<String, String>,
    /// Whether a birth is in force.
    born: bool,
    /// The metrics the birth defined.
    defined: Vec<Defined>,
    by_alias: HashMap<u64, usize>,
    by_name: HashMap<String, usize>,
    /// The channels this feed delivered readings to.
    fed: HashSet<ChannelTarget>,
}

/// A metric as its birth defined it.
struct Defined {
    name: String,
    datatype: u32,
    /// The channel it feeds; `None` when the twin has none for it.
    target: Option<ChannelTarget>,
    /// A Sparkplug control metric (`bdSeq`, `Node Control/…`): never data.
    reserved: bool,
}

/// What a metric in a data message is called, for drop details.
struct MetricLabel<'a>(&'a Metric);

impl fmt::Display for MetricLabel<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (&self.0.name, self.0.alias) {
            (Some(name), _) => write!(f, "`{name}`"),
            (None, Some(alias)) => write!(f, "alias {alias}"),
            (None, None) => f.write_str("without name or alias"),
        }
    }
}

/// What a decode needs besides the feed it changes.
struct Context<'a> {
    resolver: &'a Resolver,
    source: SourceId,
    now: Timestamp,
    drops: &'a Drops,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    NodeBirth,
    NodeDeath,
    NodeData,
    NodeCommand,
    DeviceBirth,
    DeviceDeath,
    DeviceData,
    DeviceCommand,
}

impl Kind {
    fn parse(level: &str) -> Option<Self> {
        Some(match level {
            "NBIRTH" => Kind::NodeBirth,
            "NDEATH" => Kind::NodeDeath,
            "NDATA" => Kind::NodeData,
            "NCMD" => Kind::NodeCommand,
            "DBIRTH" => Kind::DeviceBirth,
            "DDEATH" => Kind::DeviceDeath,
            "DDATA" => Kind::DeviceData,
            "DCMD" => Kind::DeviceCommand,
            _ => return None,
        })
    }

    /// The topic level that names the kind.
    fn as_str(self) -> &'static str {
        match self {
            Kind::NodeBirth => "NBIRTH",
            Kind::NodeDeath => "NDEATH",
            Kind::NodeData => "NDATA",
            Kind::NodeCommand => "NCMD",
            Kind::DeviceBirth => "DBIRTH",
            Kind::DeviceDeath => "DDEATH",
            Kind::DeviceData => "DDATA",
            Kind::DeviceCommand => "DCMD",
        }
    }

    fn is_device(self) -> bool {
        matches!(
            self,
            Kind::DeviceBirth | Kind::DeviceDeath | Kind::DeviceData | Kind::DeviceCommand
        )
    }
}

/// A parsed `spBv1.0/<group>/<kind>/<node>[/<device>]` topic.
struct Topic<'a> {
    group: &'a str,
    kind: Kind,
    node: &'a str,
    device: Option<&'a str>,
}

impl<'a> Topic<'a> {
    fn parse(topic: &'a str) -> Option<Self> {
        let mut levels = topic.split('/');
        if levels.next()? != NAMESPACE {
            return None;
        }
        let group = levels.next()?;
        let kind = Kind::parse(levels.next()?)?;
        let node = levels.next()?;
        let device = levels.next();
        if levels.next().is_some()
            || kind.is_device() != device.is_some()
            || group.is_empty()
            || node.is_empty()
            || device == Some("")
        {
            return None;
        }
        Some(Self {
            group,
            kind,
            node,
            device,
        })
    }
}

impl SparkplugCodec {
    /// A codec for `config`, delivering readings as `source`. Fails when the
    /// configuration names ids that are not single topic levels, assets the node does
    /// not host, channels or desired values their types lack, or the same edge node,
    /// device or twin twice.
    pub fn new(
        config: &SparkplugConfig,
        resolver: Resolver,
        source: SourceId,
    ) -> Result<Self, SparkplugConfigError> {
        config.validate(&resolver)?;
        let host = config
            .host_id
            .as_ref()
            .map(|host_id| (format!("{NAMESPACE}/STATE/{host_id}"), 0));
        let mut groups: HashMap<String, HashMap<String, EdgeNode>> = HashMap::new();
        let mut routes = HashMap::new();
        for mapping in &config.map {
            let node = groups
                .entry(mapping.group.clone())
                .or_default()
                .entry(mapping.node.clone())
                .or_insert_with(|| EdgeNode {
                    label: format!("{}/{}", mapping.group, mapping.node),
                    rebirth_topic: format!("{NAMESPACE}/{}/NCMD/{}", mapping.group, mapping.node),
                    own: None,
                    devices: HashMap::new(),
                    session: None,
                    rebirth_requested_at: None,
                });
            let feed = Feed::new(mapping);
            let topic = match &mapping.device {
                Some(device) => {
                    node.devices.insert(device.clone(), feed);
                    format!(
                        "{NAMESPACE}/{}/DCMD/{}/{device}",
                        mapping.group, mapping.node
                    )
                }
                None => {
                    node.own = Some(feed);
                    node.rebirth_topic.clone()
                }
            };
            let metrics = mapping
                .commands
                .iter()
                .filter(|(desired, metric)| desired != metric)
                .map(|(desired, metric)| (desired.clone(), metric.clone()))
                .collect();
            routes.insert(mapping.asset.clone(), Route { topic, metrics });
        }
        Ok(Self {
            source,
            resolver,
            host,
            groups,
            routes,
        })
    }
}

impl Codec for SparkplugCodec {
    fn name(&self) -> &'static str {
        "sparkplug"
    }

    fn filters(&self) -> Vec<String> {
        let mut filters: Vec<String> = self
            .groups
            .keys()
            .map(|group| format!("{NAMESPACE}/{group}/#"))
            .collect();
        filters.sort();
        // Its own STATE, so it can answer anyone who declares it offline.
        filters.extend(self.host.as_ref().map(|(topic, _)| topic.clone()));
        filters
    }

    fn claims(&self, topic: &str) -> bool {
        if self.host.as_ref().is_some_and(|(own, _)| own == topic) {
            return true;
        }
        topic
            .strip_prefix(NAMESPACE)
            .and_then(|rest| rest.strip_prefix('/'))
            .and_then(|rest| rest.split('/').next())
            .is_some_and(|group| self.groups.contains_key(group))
    }

    fn decode(
        &mut self,
        topic: &str,
        payload: &[u8],
        now: Timestamp,
        out: &mut Inbound,
        drops: &Drops,
    ) {
        if let Some((own, born)) = &self.host
            && own == topic
        {
            // Someone (or a will of an earlier connection) says this host is offline
            // while it is connected: it says otherwise at once.
            let offline = serde_json::from_slice::<serde_json::Value>(payload)
                .is_ok_and(|state| state["online"] == serde_json::Value::Bool(false));
            if offline {
                tracing::warn!(
                    topic,
                    "this host's STATE was set offline by another publisher; asserting online"
                );
                out.replies.push(Outgoing {
                    topic: own.clone(),
                    payload: host_state(true, *born),
                    retain: true,
                    at_most_once: false,
                });
            }
            return;
        }
        let Some(parsed) = Topic::parse(topic) else {
            drops.record(DropKind::UnknownTopic, &format_args!("`{topic}`"));
            return;
        };
        // Commands are for edge nodes; the ones this host sends come back here too.
        if matches!(parsed.kind, Kind::NodeCommand | Kind::DeviceCommand) {
            return;
        }
        let Some(node) = self
            .groups
            .get_mut(parsed.group)
            .and_then(|nodes| nodes.get_mut(parsed.node))
        else {
            drops.record(
                DropKind::UnknownAsset,
                &format_args!("edge node `{}/{}`", parsed.group, parsed.node),
            );
            return;
        };
        let payload = match Payload::decode(payload) {
            Ok(payload) => payload,
            Err(error) => {
                drops.record(DropKind::BadProtobuf, &format_args!("`{topic}`: {error}"));
                return;
            }
        };
        let context = Context {
            resolver: &self.resolver,
            source: self.source,
            now,
            drops,
        };
        node.receive(parsed.kind, parsed.device, &payload, &context, out);
    }

    /// The STATE `online: false` for the next CONNECT, with a new timestamp that the
    /// connection's `online: true` repeats, as Sparkplug 3.0 asks.
    fn last_will(&mut self, now: Timestamp) -> Option<Outgoing> {
        let (topic, born) = self.host.as_mut()?;
        // Strictly newer than the last one, even within a millisecond.
        *born = millis(now).max(*born + 1);
        Some(Outgoing {
            topic: topic.clone(),
            payload: host_state(false, *born),
            retain: true,
            at_most_once: false,
        })
    }

    fn on_connected(&mut self, out: &mut Vec<Outgoing>) {
        if let Some((topic, born)) = &self.host {
            out.push(Outgoing {
                topic: topic.clone(),
                payload: host_state(true, *born),
                retain: true,
                at_most_once: false,
            });
        }
    }

    fn on_stopping(&mut self, out: &mut Vec<Outgoing>) {
        if let Some((topic, born)) = &self.host {
            out.push(Outgoing {
                topic: topic.clone(),
                payload: host_state(false, *born),
                retain: true,
                at_most_once: false,
            });
        }
    }

    fn actuation(&mut self, actuation: &Actuation, out: &mut Vec<Outgoing>) {
        let Some(route) = self.routes.get(actuation.asset()) else {
            return;
        };
        if actuation.values().is_empty() {
            return;
        }
        let at = millis(Timestamp::now());
        let metrics = actuation
            .values()
            .iter()
            .map(|(desired, value)| {
                let name = route.metrics.get(desired).unwrap_or(desired);
                command_metric(name, *value, at)
            })
            .collect();
        let payload = Payload {
            timestamp: Some(at),
            metrics,
            ..Payload::default()
        };
        out.push(Outgoing {
            topic: route.topic.clone(),
            payload: payload.encode_to_vec(),
            retain: false,
            at_most_once: true,
        });
    }
}

impl EdgeNode {
    fn receive(
        &mut self,
        kind: Kind,
        device: Option<&str>,
        payload: &Payload,
        context: &Context<'_>,
        out: &mut Inbound,
    ) {
        match kind {
            Kind::NodeBirth => return self.birth(payload, context, out),
            Kind::NodeDeath => return self.death(payload, context, out),
            _ => {}
        }
        let Some(session) = &mut self.session else {
            context.drops.record(
                DropKind::BeforeBirth,
                &format_args!("{}: {} before NBIRTH", self.label, kind.as_str()),
            );
            return self.request_rebirth(context.now, out);
        };
        let mut rebirth = false;
        if let Some(expected) = session.advance(payload.seq) {
            context.drops.record(
                DropKind::SequenceGap,
                &format_args!(
                    "{}: seq {} where {expected} was due",
                    self.label,
                    payload.seq.unwrap_or_default()
                ),
            );
            rebirth = true;
        }
        let feed = match device {
            None => self.own.as_mut(),
            Some(device) => self.devices.get_mut(device),
        };
        match feed {
            None => match device {
                Some(device) => context.drops.record(
                    DropKind::UnknownAsset,
                    &format_args!("device `{}/{device}`", self.label),
                ),
                None => context.drops.record(
                    DropKind::UnknownAsset,
                    &format_args!("edge node `{}` (only its devices are mapped)", self.label),
                ),
            },
            Some(feed) => match kind {
                Kind::DeviceBirth => feed.birth(payload, context, out),
                Kind::DeviceDeath => {
                    let at = payload.timestamp.map_or(context.now, from_millis);
                    let reason = format!("device `{}` died (DDEATH)", feed.label);
                    feed.die(at, &reason, out);
                }
                _ if !feed.born => {
                    context.drops.record(
                        DropKind::BeforeBirth,
                        &format_args!("{}: {} before its birth", feed.label, kind.as_str()),
                    );
                    rebirth = true;
                }
                _ => feed.data(payload, context, out),
            },
        }
        if rebirth {
            self.request_rebirth(context.now, out);
        }
    }

    fn birth(&mut self, payload: &Payload, context: &Context<'_>, out: &mut Inbound) {
        self.session = Some(Session {
            bd_seq: bd_seq(&payload.metrics),
            seq: payload.seq,
        });
        self.rebirth_requested_at = None;
        for device in self.devices.values_mut() {
            device.forget();
        }
        if let Some(own) = &mut self.own {
            own.birth(payload, context, out);
        }
    }

    fn death(&mut self, payload: &Payload, context: &Context<'_>, out: &mut Inbound) {
        let Some(session) = &self.session else {
            return;
        };
        if let (Some(born), Some(died)) = (session.bd_seq, bd_seq(&payload.metrics))
            && born != died
        {
            // The will of an earlier connection, delivered late.
            tracing::debug!(node = %self.label, born, died, "NDEATH of an earlier session ignored");
            return;
        }
        self.session = None;
        let reason = format!("edge node `{}` died (NDEATH)", self.label);
        if let Some(own) = &mut self.own {
            own.die(context.now, &reason, out);
        }
        for device in self.devices.values_mut() {
            device.die(context.now, &reason, out);
        }
    }

    /// Asks the node to publish its births again, unless that was asked recently.
    fn request_rebirth(&mut self, now: Timestamp, out: &mut Inbound) {
        let interval = REBIRTH_INTERVAL.as_micros() as u64;
        if let Some(at) = self.rebirth_requested_at
            && now.as_micros().abs_diff(at.as_micros()) < interval
        {
            return;
        }
        self.rebirth_requested_at = Some(now);
        out.replies.push(Outgoing {
            topic: self.rebirth_topic.clone(),
            payload: metric::rebirth_request(now),
            retain: false,
            at_most_once: true,
        });
    }
}

impl Session {
    /// Records `seq`; returns the number that was due when it is not the next one.
    fn advance(&mut self, seq: Option<u64>) -> Option<u64> {
        let seq = seq?;
        let due = self.seq.map(|last| (last % 256 + 1) % 256);
        self.seq = Some(seq);
        due.filter(|due| *due != seq)
    }
}

impl Feed {
    fn new(mapping: &SparkplugMapping) -> Self {
        Self {
            label: mapping.source_name(),
            asset: mapping.asset.clone(),
            channels: mapping
                .metrics
                .iter()
                .filter(|(metric, channel)| metric != channel)
                .map(|(metric, channel)| (metric.clone(), channel.clone()))
                .collect(),
            born: false,
            defined: Vec::new(),
            by_alias: HashMap::new(),
            by_name: HashMap::new(),
            fed: HashSet::new(),
        }
    }

    /// Drops what the last birth defined.
    fn forget(&mut self) {
        self.born = false;
        self.defined.clear();
        self.by_alias.clear();
        self.by_name.clear();
    }

    fn birth(&mut self, payload: &Payload, context: &Context<'_>, out: &mut Inbound) {
        self.forget();
        self.born = true;
        for metric in &payload.metrics {
            let Some(name) = metric.name.as_deref() else {
                context.drops.record(
                    DropKind::UnknownChannel,
                    &format_args!("{}: birth metric without a name", self.label),
                );
                continue;
            };
            let reserved = is_reserved(name);
            let target = if reserved {
                None
            } else {
                let channel = self.channels.get(name).map_or(name, String::as_str);
                context.resolver.target(&self.asset, channel)
            };
            let index = self.defined.len();
            self.defined.push(Defined {
                name: name.to_string(),
                datatype: metric.datatype.unwrap_or_default(),
                target,
                reserved,
            });
            self.by_name.insert(name.to_string(), index);
            if let Some(alias) = metric.alias {
                self.by_alias.insert(alias, index);
            }
            self.apply(index, metric, payload.timestamp, context, out);
        }
    }

    fn data(&mut self, payload: &Payload, context: &Context<'_>, out: &mut Inbound) {
        for metric in &payload.metrics {
            let index = match (metric.alias, metric.name.as_deref()) {
                (Some(alias), _) => self.by_alias.get(&alias),
                (None, Some(name)) => self.by_name.get(name),
                (None, None) => None,
            };
            let Some(&index) = index else {
                context.drops.record(
                    DropKind::UnknownChannel,
                    &format_args!(
                        "{}: metric {} is not in the birth certificate",
                        self.label,
                        MetricLabel(metric)
                    ),
                );
                continue;
            };
            self.apply(index, metric, payload.timestamp, context, out);
        }
    }

    /// Turns one metric into a reading of the channel its birth definition feeds.
    fn apply(
        &mut self,
        index: usize,
        metric: &Metric,
        payload_time: Option<u64>,
        context: &Context<'_>,
        out: &mut Inbound,
    ) {
        let Some(defined) = self.defined.get(index) else {
            return;
        };
        if defined.reserved || metric.is_null == Some(true) {
            return;
        }
        let Some(target) = defined.target else {
            context.drops.record(
                DropKind::UnknownChannel,
                &format_args!(
                    "{}: `{}` has no channel `{}`",
                    self.label, self.asset, defined.name
                ),
            );
            return;
        };
        let datatype = metric
            .datatype
            .filter(|datatype| *datatype != 0)
            .unwrap_or(defined.datatype);
        let value = match reading_value(metric.value.as_ref(), datatype) {
            Ok(value) => value,
            Err(kind) => {
                context.drops.record(
                    kind,
                    &format_args!("{}: metric `{}`", self.label, defined.name),
                );
                return;
            }
        };
        let stamped = metric.timestamp.or(payload_time);
        let source_time = stamped.map_or(context.now, from_millis);
        self.fed.insert(target);
        out.readings.push((
            target,
            reading(
                value,
                (source_time, stamped.is_some()),
                Quality::Good,
                context.source,
            ),
        ));
    }

    /// Ends the birth: every channel this feed delivered goes stale as of `at`, for
    /// `reason`.
    fn die(&mut self, at: Timestamp, reason: &str, out: &mut Inbound) {
        if !self.born {
            return;
        }
        self.forget();
        let mut marked: Vec<ChannelTarget> = self.fed.iter().copied().collect();
        marked.sort_by_key(|target| (target.twin, target.channel));
        out.conditions.extend(marked.into_iter().map(|target| {
            let condition = ChannelCondition {
                quality: Quality::Stale,
                reason: reason.to_string(),
                since: at,
            };
            (target, condition)
        }));
    }
}

/// A reading whose sequence number is its source time in microseconds, and whether
/// the edge node stamped that time (else it is the time the message was received).
fn reading(
    value: f64,
    (source_time, stamped): (Timestamp, bool),
    quality: Quality,
    source: SourceId,
) -> Reading {
    Reading {
        value,
        source_time,
        quality,
        source,
        epoch: 0,
        seq: source_time.as_micros().max(0) as u64,
        stamped,
    }
}
