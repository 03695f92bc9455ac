//! Samples: one telemetry reading with its provenance.

use serde::{Deserialize, Serialize};

use crate::time::Timestamp;

/// Data quality of a reading, as in OPC UA.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum Quality {
    /// The value is trustworthy.
    #[default]
    Good,
    /// The value may be inaccurate (sensor calibrating, substituted value, …).
    Uncertain,
    /// The value is not usable (sensor failure, lost connection, …).
    Bad,
    /// The value was read, but nothing newer has arrived for longer than its channel
    /// allows, or the source that delivered it lost touch: the machine may have moved
    /// on since. Set by the twin (a source may report it too).
    Stale,
}

impl Quality {
    /// A short lowercase name (`good`, `uncertain`, `bad`, `stale`).
    pub fn as_str(self) -> &'static str {
        match self {
            Quality::Good => "good",
            Quality::Uncertain => "uncertain",
            Quality::Bad => "bad",
            Quality::Stale => "stale",
        }
    }

    /// True for a value models and governors may act on: good or uncertain.
    pub fn is_usable(self) -> bool {
        matches!(self, Quality::Good | Quality::Uncertain)
    }
}

/// Index of a channel within its twin type.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct ChannelId(pub u16);

/// A registered data source (a connector, a simulator, a gateway), interned to a number
/// that is stable for the life of the node's data directory.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct SourceId(pub u32);

/// A reading as a source delivers it, before it is bound to a twin and channel.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Reading {
    /// The measured value.
    pub value: f64,
    /// When the source measured it.
    pub source_time: Timestamp,
    /// Data quality reported by the source.
    pub quality: Quality,
    /// The source that delivered it.
    pub source: SourceId,
    /// The source's epoch: a source that restarts its numbering starts a new one.
    pub epoch: u32,
    /// The source's sequence number; `(source, epoch, seq)` identifies the reading.
    pub seq: u64,
    /// True when the source stamped `source_time`; false when the connector stood in
    /// with the time it received the reading.
    pub stamped: bool,
}

/// A reading bound to a channel of a twin, stamped with the time it was received.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Sample {
    /// The channel within the twin's type.
    pub channel: ChannelId,
    /// The measured value.
    pub value: f64,
    /// When the source measured it.
    pub source_time: Timestamp,
    /// When this node received it.
    pub receive_time: Timestamp,
    /// Data quality reported by the source.
    pub quality: Quality,
    /// The source that delivered it.
    pub source: SourceId,
    /// The source's epoch.
    pub epoch: u32,
    /// The source's sequence number.
    pub seq: u64,
    /// True when the source stamped `source_time`.
    pub stamped: bool,
}

impl Sample {
    /// Binds a reading to a channel, received at `receive_time`.
    pub fn new(channel: ChannelId, reading: Reading, receive_time: Timestamp) -> Self {
        Self {
            channel,
            value: reading.value,
            source_time: reading.source_time,
            receive_time,
            quality: reading.quality,
            source: reading.source,
            epoch: reading.epoch,
            seq: reading.seq,
            stamped: reading.stamped,
        }
    }
}
