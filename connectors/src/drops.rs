//! Dropped connector input: counted per kind, logged at most once per kind per minute.

use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};

use doppel_runtime::metrics::LogGate;
use doppel_runtime::twin::SampleRejection;
use serde::Serialize;

/// Why a connector dropped a message or a value in it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum DropKind {
    /// The payload is larger than the configured limit.
    Oversized,
    /// The payload is not valid JSON or not the expected JSON shape.
    MalformedJson,
    /// A value has the wrong type (a string where a number belongs, a structure, …).
    WrongType,
    /// The topic does not match any layout the connector reads.
    UnknownTopic,
    /// No twin has the asset path.
    UnknownAsset,
    /// The twin's type has no such channel, or no channel is mapped to the metric or node.
    UnknownChannel,
    /// NaN or infinite.
    NotFinite,
    /// Outside the channel's plausible range.
    OutOfRange,
    /// The timestamp is unreadable, or too far in the future or the past.
    BadTimestamp,
    /// A quality the connector does not know.
    BadQuality,
    /// A Sparkplug message before the birth certificate that defines its metrics.
    BeforeBirth,
    /// A payload that is not valid protobuf.
    BadProtobuf,
    /// A Sparkplug sequence number out of order (a rebirth is requested).
    SequenceGap,
    /// A reading's sequence number is implausible, or the reading cannot be told apart
    /// from one applied before (refused by its twin).
    BadSequence,
}

impl DropKind {
    /// Every kind, in counter order.
    pub const ALL: [DropKind; 14] = [
        DropKind::Oversized,
        DropKind::MalformedJson,
        DropKind::WrongType,
        DropKind::UnknownTopic,
        DropKind::UnknownAsset,
        DropKind::UnknownChannel,
        DropKind::NotFinite,
        DropKind::OutOfRange,
        DropKind::BadTimestamp,
        DropKind::BadQuality,
        DropKind::BeforeBirth,
        DropKind::BadProtobuf,
        DropKind::SequenceGap,
        DropKind::BadSequence,
    ];

    /// A short snake_case name.
    pub fn as_str(self) -> &'static str {
        match self {
            DropKind::Oversized => "oversized",
            DropKind::MalformedJson => "malformed_json",
            DropKind::WrongType => "wrong_type",
            DropKind::UnknownTopic => "unknown_topic",
            DropKind::UnknownAsset => "unknown_asset",
            DropKind::UnknownChannel => "unknown_channel",
            DropKind::NotFinite => "not_finite",
            DropKind::OutOfRange => "out_of_range",
            DropKind::BadTimestamp => "bad_timestamp",
            DropKind::BadQuality => "bad_quality",
            DropKind::BeforeBirth => "before_birth",
            DropKind::BadProtobuf => "bad_protobuf",
            DropKind::SequenceGap => "sequence_gap",
            DropKind::BadSequence => "bad_sequence",
        }
    }

    fn index(self) -> usize {
        DropKind::ALL.iter().position(|k| *k == self).unwrap_or(0)
    }
}

impl fmt::Display for DropKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl From<SampleRejection> for DropKind {
    fn from(rejection: SampleRejection) -> Self {
        match rejection {
            SampleRejection::UnknownAsset => DropKind::UnknownAsset,
            SampleRejection::UnknownChannel => DropKind::UnknownChannel,
            SampleRejection::NotFinite => DropKind::NotFinite,
            SampleRejection::OutOfRange => DropKind::OutOfRange,
            SampleRejection::InFuture | SampleRejection::TooOld => DropKind::BadTimestamp,
            SampleRejection::SeqJump | SampleRejection::Unverifiable => DropKind::BadSequence,
        }
    }
}

const KINDS: usize = DropKind::ALL.len();

/// Drop counters of one connector. Lock-free: a flood of bad input costs two atomic
/// operations per drop.
#[derive(Debug)]
pub struct Drops {
    connector: String,
    counts: [AtomicU64; KINDS],
    last_logged: [LogGate; KINDS],
}

impl Drops {
    /// Counters for the connector named `connector` (used in log lines).
    pub fn new(connector: impl Into<String>) -> Self {
        Self {
            connector: connector.into(),
            counts: Default::default(),
            last_logged: Default::default(),
        }
    }

    /// Counts one drop and logs it unless this kind was logged in the last minute.
    pub fn record(&self, kind: DropKind, detail: &dyn fmt::Display) {
        let index = kind.index();
        let total = self.counts[index].fetch_add(1, Ordering::Relaxed) + 1;
        if self.last_logged[index].due() {
            tracing::warn!(
                connector = %self.connector,
                kind = kind.as_str(),
                total,
                %detail,
                "input dropped (logged once per minute per kind)"
            );
        }
    }

    /// Drops of one kind so far.
    pub fn count(&self, kind: DropKind) -> u64 {
        self.counts[kind.index()].load(Ordering::Relaxed)
    }

    /// Every drop so far.
    pub fn total(&self) -> u64 {
        self.counts.iter().map(|c| c.load(Ordering::Relaxed)).sum()
    }

    /// Non-zero counts by kind.
    pub fn snapshot(&self) -> Vec<(DropKind, u64)> {
        DropKind::ALL
            .iter()
            .map(|kind| (*kind, self.count(*kind)))
            .filter(|(_, count)| *count > 0)
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_per_kind_and_logs_once_per_minute() {
        let drops = Drops::new("test");
        for _ in 0..500 {
            drops.record(DropKind::MalformedJson, &"{");
        }
        drops.record(DropKind::Oversized, &"2 MB");
        assert_eq!(drops.count(DropKind::MalformedJson), 500);
        assert_eq!(drops.count(DropKind::Oversized), 1);
        assert_eq!(drops.total(), 501);
        drops.record(DropKind::MalformedJson, &"{");
        assert!(
            !drops.last_logged[DropKind::MalformedJson.index()].due(),
            "logged once, and not again within the minute"
        );
        assert_eq!(
            drops.snapshot(),
            vec![(DropKind::Oversized, 1), (DropKind::MalformedJson, 501)]
        );
    }
}
