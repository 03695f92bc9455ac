//! Lost connector input: what a connector dropped (counted per kind) and what the twins
//! refused (counted per reason), each logged at most once per kind per minute.

use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};

use doppel_runtime::metrics::{ConnectorStatus, LogGate, SourceCounts};
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
}

impl DropKind {
    /// Every kind, in counter order.
    pub const ALL: [DropKind; 13] = [
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

const KINDS: usize = DropKind::ALL.len();
const REASONS: usize = SampleRejection::ALL.len();

/// Drop and refusal counters of one connector. Lock-free: a flood of bad input costs
/// two atomic operations per drop.
#[derive(Debug)]
pub struct Drops {
    connector: String,
    counts: [AtomicU64; KINDS],
    last_logged: [LogGate; KINDS],
    refusals: [AtomicU64; REASONS],
    last_refusal_logged: [LogGate; REASONS],
}

impl Drops {
    /// Counters for the connector named `connector` (used in log lines).
    pub fn new(connector: impl Into<String>) -> Self {
        Self {
            connector: connector.into(),
            counts: Default::default(),
            last_logged: Default::default(),
            refusals: Default::default(),
            last_refusal_logged: Default::default(),
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

    /// These counters while decoding a message from `topic`.
    pub fn scoped<'a>(&'a self, topic: &'a str) -> Scoped<'a> {
        Scoped { drops: self, topic }
    }

    /// Counts one reading its twin refused and logs it unless a refusal for this reason
    /// was logged in the last minute. `detail` names the asset, channel and value.
    pub fn refuse(&self, reason: SampleRejection, detail: &dyn fmt::Display) {
        let index = rejection_index(reason);
        let total = self.refusals[index].fetch_add(1, Ordering::Relaxed) + 1;
        if self.last_refusal_logged[index].due() {
            tracing::warn!(
                connector = %self.connector,
                reason = reason.as_str(),
                total,
                %detail,
                "reading refused by its twin (logged once per minute per reason)"
            );
        }
    }

    /// Readings refused for one reason so far.
    pub fn refused(&self, reason: SampleRejection) -> u64 {
        self.refusals[rejection_index(reason)].load(Ordering::Relaxed)
    }

    /// Non-zero refusal counts by reason.
    pub fn refusals(&self) -> Vec<(SampleRejection, u64)> {
        SampleRejection::ALL
            .iter()
            .map(|reason| (*reason, self.refused(*reason)))
            .filter(|(_, count)| *count > 0)
            .collect()
    }

    /// The status of this connector: it is `kind` (`mqtt`, `opcua`), `connected` or
    /// not, and `received` messages or values; what its twins made of its readings is
    /// read from their per-source tallies `sources`.
    pub fn status(
        &self,
        kind: &'static str,
        connected: bool,
        received: u64,
        sources: &[(String, SourceCounts)],
    ) -> ConnectorStatus {
        ConnectorStatus {
            name: self.connector.clone(),
            kind,
            connected,
            received,
            readings: ConnectorStatus::readings_of(&self.connector, sources),
            refused: self.refusals(),
            dropped: self
                .snapshot()
                .into_iter()
                .map(|(kind, count)| (kind.as_str(), count))
                .collect(),
        }
    }

    /// Drops of one kind so far.
    pub fn count(&self, kind: DropKind) -> u64 {
        self.counts[kind.index()].load(Ordering::Relaxed)
    }

    /// Everything lost so far: every drop and every refusal.
    pub fn total(&self) -> u64 {
        self.counts
            .iter()
            .chain(&self.refusals)
            .map(|c| c.load(Ordering::Relaxed))
            .sum()
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

/// A connector's drop counters while it decodes one message from `topic`: each drop's
/// log line names the topic.
pub struct Scoped<'a> {
    drops: &'a Drops,
    topic: &'a str,
}

impl Scoped<'_> {
    /// Counts one drop, as [`Drops::record`], naming the topic in the log line.
    pub fn record(&self, kind: DropKind, detail: &dyn fmt::Display) {
        self.drops
            .record(kind, &format_args!("`{}`: {detail}", self.topic));
    }
}

fn rejection_index(reason: SampleRejection) -> usize {
    SampleRejection::ALL
        .iter()
        .position(|r| *r == reason)
        .unwrap_or(0)
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

    #[test]
    fn refusals_are_counted_per_reason_apart_from_drops() {
        let drops = Drops::new("test");
        drops.refuse(SampleRejection::OutOfRange, &"press-1 temperature = 900");
        drops.refuse(SampleRejection::OutOfRange, &"press-1 temperature = 901");
        drops.refuse(SampleRejection::SeqJump, &"press-1 temperature = 50");
        drops.record(DropKind::UnknownTopic, &"`x`");
        assert_eq!(drops.refused(SampleRejection::OutOfRange), 2);
        assert_eq!(drops.count(DropKind::OutOfRange), 0);
        assert_eq!(
            drops.refusals(),
            vec![
                (SampleRejection::OutOfRange, 2),
                (SampleRejection::SeqJump, 1)
            ]
        );
        assert_eq!(drops.snapshot(), vec![(DropKind::UnknownTopic, 1)]);
        assert_eq!(drops.total(), 4);
    }

    #[test]
    fn a_connector_status_sums_the_sources_it_feeds() {
        let drops = Drops::new("mqtt:plant");
        drops.refuse(SampleRejection::InFuture, &"x");
        let counts = |applied| SourceCounts {
            applied,
            late: 1,
            duplicate: 2,
            refused: 0,
        };
        let sources = vec![
            ("mqtt:plant".to_string(), counts(10)),
            ("mqtt:plant/ts".to_string(), counts(5)),
            ("mqtt:plant2".to_string(), counts(100)),
            ("opcua:plant".to_string(), counts(1000)),
        ];
        let status = drops.status("mqtt", true, 20, &sources);
        assert_eq!(status.readings.applied, 15);
        assert_eq!(status.readings.late, 2);
        assert_eq!(status.readings.duplicate, 4);
        assert_eq!(status.refused, vec![(SampleRejection::InFuture, 1)]);
        assert_eq!(status.refused_total(), 1);
        assert_eq!(status.dropped_total(), 0);
    }
}
