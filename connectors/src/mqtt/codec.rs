//! The seam between an MQTT connection and a payload layout: a [`Codec`] turns inbound
//! messages into readings for twins and actuations and verdicts into outbound messages.

use std::collections::HashMap;

use doppel_runtime::twin::{Actuation, ChannelTarget, CommandVerdict, Twins};
use doppel_runtime::{AssetPath, ChannelCondition, Error, Reading, Timestamp};

use crate::drops::{DropKind, Drops};

/// A message to publish (always QoS 1).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outgoing {
    /// Full topic.
    pub topic: String,
    /// Payload bytes.
    pub payload: Vec<u8>,
    /// Whether the broker retains it.
    pub retain: bool,
    /// Published at QoS 0 (Sparkplug commands), else at QoS 1.
    pub at_most_once: bool,
}

impl Outgoing {
    /// The QoS it is published at.
    pub fn qos(&self) -> rumqttc::QoS {
        if self.at_most_once {
            rumqttc::QoS::AtMostOnce
        } else {
            rumqttc::QoS::AtLeastOnce
        }
    }
}

/// What one inbound message produced.
#[derive(Debug, Default)]
pub struct Inbound {
    /// Readings for twins, in message order.
    pub readings: Vec<(ChannelTarget, Reading)>,
    /// Conditions the messages reported for channels (a Sparkplug death), applied
    /// before the readings of the same batch.
    pub conditions: Vec<(ChannelTarget, ChannelCondition)>,
    /// Messages to publish in response (a Sparkplug rebirth request, …).
    pub replies: Vec<Outgoing>,
}

/// A payload layout on an MQTT connection.
///
/// A codec never fails: whatever it cannot use it records in `drops` and skips.
pub trait Codec: Send {
    /// The layout's name, for logs.
    fn name(&self) -> &'static str;

    /// Topic filters to subscribe to (QoS 1).
    fn filters(&self) -> Vec<String>;

    /// Whether an inbound topic belongs to this layout.
    fn claims(&self, topic: &str) -> bool;

    /// Decodes one message received at `now`, appending readings and replies to `out`.
    fn decode(
        &mut self,
        topic: &str,
        payload: &[u8],
        now: Timestamp,
        out: &mut Inbound,
        drops: &Drops,
    );

    /// The last will to register with the broker for the next connection, if the
    /// layout has one; called before every CONNECT, at `now`.
    fn last_will(&mut self, _now: Timestamp) -> Option<Outgoing> {
        None
    }

    /// Messages to publish each time the connection is (re)established.
    fn on_connected(&mut self, _out: &mut Vec<Outgoing>) {}

    /// Messages to publish before the connector disconnects on purpose (a clean
    /// DISCONNECT discards the last will, so what it would have said goes here).
    fn on_stopping(&mut self, _out: &mut Vec<Outgoing>) {}

    /// Messages that carry an actuation (accepted command or safety action) to the
    /// machine.
    fn actuation(&mut self, actuation: &Actuation, out: &mut Vec<Outgoing>);

    /// Messages that report a command's verdict.
    fn verdict(&mut self, _verdict: &CommandVerdict, _out: &mut Vec<Outgoing>) {}
}

/// Resolves asset paths and channel names to ingest targets, remembering what it has
/// resolved. Only successful lookups are remembered, so garbage cannot grow it.
pub struct Resolver {
    twins: Twins,
    known: HashMap<String, HashMap<String, ChannelTarget>>,
    remembered: usize,
}

/// The most lookups a resolver remembers before it starts over.
const RESOLVER_CAPACITY: usize = 1 << 20;

impl Resolver {
    /// A resolver over `twins`.
    pub fn new(twins: Twins) -> Self {
        Self {
            twins,
            known: HashMap::new(),
            remembered: 0,
        }
    }

    /// The twins it resolves against.
    pub fn twins(&self) -> &Twins {
        &self.twins
    }

    /// Resolves `asset`/`channel`; a failure is recorded in `drops` and returns `None`.
    pub fn resolve(&mut self, asset: &str, channel: &str, drops: &Drops) -> Option<ChannelTarget> {
        if let Some(target) = self.known.get(asset).and_then(|m| m.get(channel)) {
            return Some(*target);
        }
        let path = match AssetPath::parse(asset) {
            Ok(path) => path,
            Err(error) => {
                drops.record(DropKind::UnknownAsset, &format_args!("`{asset}`: {error}"));
                return None;
            }
        };
        match self.twins.target(&path, channel) {
            Ok(target) => {
                if self.remembered >= RESOLVER_CAPACITY {
                    self.known.clear();
                    self.remembered = 0;
                }
                self.remembered += 1;
                self.known
                    .entry(asset.to_string())
                    .or_default()
                    .insert(channel.to_string(), target);
                Some(target)
            }
            Err(Error::UnknownAsset(_)) => {
                drops.record(DropKind::UnknownAsset, &format_args!("`{asset}`"));
                None
            }
            Err(error) => {
                drops.record(DropKind::UnknownChannel, &error);
                None
            }
        }
    }

    /// Resolves a parsed path and channel without recording failures.
    pub fn target(&self, asset: &AssetPath, channel: &str) -> Option<ChannelTarget> {
        self.twins.target(asset, channel).ok()
    }
}
