//! Counters a node keeps, and rate-limited logging of dropped input.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock, Weak};
use std::time::{Duration, Instant};

use serde::Serialize;

use crate::twin::SampleRejection;

/// Live counters of one node.
#[derive(Debug, Default)]
pub struct Counters {
    /// Samples handed to twins.
    pub samples_in: AtomicU64,
    /// Samples that became a channel's current value.
    pub samples_applied: AtomicU64,
    /// Late samples kept in history only (older than the current value).
    pub samples_late: AtomicU64,
    /// Duplicates ignored.
    pub samples_duplicate: AtomicU64,
    rejected: [AtomicU64; SampleRejection::ALL.len()],
    /// Channels that came under a condition: stale, or bad by their source's report.
    pub conditions: AtomicU64,
    /// Commands accepted as asked.
    pub commands_accepted: AtomicU64,
    /// Commands clamped.
    pub commands_clamped: AtomicU64,
    /// Commands denied.
    pub commands_denied: AtomicU64,
    /// Safety actions executed.
    pub safety_actions: AtomicU64,
    /// Twin actor restarts.
    pub restarts: AtomicU64,
    /// Twins passivated.
    pub passivated: AtomicU64,
    /// Passivated twins woken by a message.
    pub woken: AtomicU64,
    /// Per reason: when it was last logged.
    last_logged: [LogGate; SampleRejection::ALL.len()],
    /// When a duplicate was last logged.
    duplicate_logged: LogGate,
    /// Registered sources' names by id.
    source_names: parking_lot::RwLock<Vec<(u32, String)>>,
    /// What the twins made of each source's readings, indexed by source id (ids are
    /// small and dense: a node's data directory numbers them from 0).
    source_tallies: SourceTallies,
    /// The connectors feeding this node's twins, for their status.
    connectors: ConnectorRegistry,
}

/// Something that feeds twins and can say what it received and what became of it:
/// a connector. Registered with [`Counters::register_connector`].
pub trait ConnectorReport: Send + Sync {
    /// The connector's status now; `sources` are the twins' per-source tallies.
    fn status(&self, sources: &[(String, SourceCounts)]) -> ConnectorStatus;
}

/// Everything one connector received and what became of it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ConnectorStatus {
    /// `mqtt:<name>` or `opcua:<name>`.
    pub name: String,
    /// `mqtt` or `opcua`.
    pub kind: &'static str,
    /// Whether the broker connection or server session is up.
    pub connected: bool,
    /// Messages (MQTT) or data-change values (OPC UA) received.
    pub received: u64,
    /// What the twins did with the readings it decoded: the tallies of every source
    /// the connector feeds (named `<name>` or `<name>/…`).
    pub readings: SourceCounts,
    /// Readings the twins refused, by reason (non-zero only).
    pub refused: Vec<(SampleRejection, u64)>,
    /// Messages or values dropped before any twin saw them, by kind, snake_case
    /// (non-zero only).
    pub dropped: Vec<(&'static str, u64)>,
}

impl ConnectorStatus {
    /// Sums the tallies of the sources the connector `name` feeds: `name` itself and
    /// any `name/…`.
    pub fn readings_of(name: &str, sources: &[(String, SourceCounts)]) -> SourceCounts {
        let mut readings = SourceCounts::default();
        let fed = sources.iter().filter(|(source, _)| {
            source
                .strip_prefix(name)
                .is_some_and(|rest| rest.is_empty() || rest.starts_with('/'))
        });
        for (_, counts) in fed {
            readings.applied += counts.applied;
            readings.late += counts.late;
            readings.duplicate += counts.duplicate;
            readings.refused += counts.refused;
        }
        readings
    }

    /// Readings refused, for any reason.
    pub fn refused_total(&self) -> u64 {
        self.refused.iter().map(|(_, n)| n).sum()
    }

    /// Messages or values dropped, of any kind.
    pub fn dropped_total(&self) -> u64 {
        self.dropped.iter().map(|(_, n)| n).sum()
    }
}

/// Registered connectors, held weakly: a connector that stopped and was dropped
/// leaves the list at the next read.
#[derive(Default)]
struct ConnectorRegistry(parking_lot::Mutex<Vec<Weak<dyn ConnectorReport>>>);

impl std::fmt::Debug for ConnectorRegistry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ConnectorRegistry")
            .field("connectors", &self.0.lock().len())
            .finish()
    }
}

/// The tallies of the first [`MAX_COUNTED_SOURCES`] source ids, lock-free.
#[derive(Debug)]
struct SourceTallies(Box<[SourceTally]>);

impl Default for SourceTallies {
    fn default() -> Self {
        Self(
            (0..MAX_COUNTED_SOURCES)
                .map(|_| SourceTally::default())
                .collect(),
        )
    }
}

/// How many sources are counted by name; readings of sources numbered beyond are
/// still counted in the node's totals.
pub const MAX_COUNTED_SOURCES: usize = 256;

/// What the twins made of one source's readings, live.
#[derive(Debug, Default)]
struct SourceTally {
    applied: AtomicU64,
    late: AtomicU64,
    duplicate: AtomicU64,
    refused: AtomicU64,
}

/// What the twins made of one source's readings: applied as current, kept as late,
/// ignored as duplicates, refused (at the boundary or by the twin).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct SourceCounts {
    /// Became a channel's current value.
    pub applied: u64,
    /// Kept in history as late.
    pub late: u64,
    /// Ignored as readings applied before (renewals included).
    pub duplicate: u64,
    /// Refused, for any reason.
    pub refused: u64,
}

/// A fixed instant the rate limiter measures from.
fn epoch() -> Instant {
    static EPOCH: OnceLock<Instant> = OnceLock::new();
    *EPOCH.get_or_init(Instant::now)
}

/// A copy of the counters at one moment.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct CounterSnapshot {
    /// Samples handed to twins.
    pub samples_in: u64,
    /// Samples that became a channel's current value.
    pub samples_applied: u64,
    /// Late samples kept in history only.
    pub samples_late: u64,
    /// Duplicates ignored.
    pub samples_duplicate: u64,
    /// Rejected samples by reason.
    pub rejected: Vec<(&'static str, u64)>,
    /// Channels that came under a condition.
    pub conditions: u64,
    /// Commands accepted.
    pub commands_accepted: u64,
    /// Commands clamped.
    pub commands_clamped: u64,
    /// Commands denied.
    pub commands_denied: u64,
    /// Safety actions.
    pub safety_actions: u64,
    /// Twin restarts.
    pub restarts: u64,
    /// Twins passivated.
    pub passivated: u64,
    /// Passivated twins woken by a message.
    pub woken: u64,
}

impl CounterSnapshot {
    /// Rejections of one kind.
    pub fn rejected(&self, kind: SampleRejection) -> u64 {
        self.rejected
            .iter()
            .find(|(name, _)| *name == kind.as_str())
            .map_or(0, |(_, count)| *count)
    }

    /// All rejections.
    pub fn rejected_total(&self) -> u64 {
        self.rejected.iter().map(|(_, count)| count).sum()
    }
}

/// How often a kind of dropped input is logged.
const LOG_EVERY: Duration = Duration::from_secs(60);

/// Lets one log line of a kind through per minute, lock-free: a flood of bad input
/// costs one atomic read per drop.
#[derive(Debug, Default)]
pub struct LogGate {
    /// Milliseconds since [`epoch`] at the last line let through, plus one (0: never).
    last: AtomicU64,
}

impl LogGate {
    /// True (and the gate closes for a minute) when a line may be logged now.
    pub fn due(&self) -> bool {
        let now = epoch().elapsed().as_millis() as u64 + 1;
        let previous = self.last.load(Ordering::Relaxed);
        let due = previous == 0 || now.saturating_sub(previous) >= LOG_EVERY.as_millis() as u64;
        due && self
            .last
            .compare_exchange(previous, now, Ordering::Relaxed, Ordering::Relaxed)
            .is_ok()
    }
}

impl Counters {
    /// Counts a rejected sample and logs it, at most once per kind per minute.
    pub fn reject(&self, kind: SampleRejection, detail: &dyn std::fmt::Display) {
        let index = SampleRejection::ALL
            .iter()
            .position(|k| *k == kind)
            .unwrap_or(0);
        let total = self.rejected[index].fetch_add(1, Ordering::Relaxed) + 1;
        // Lock-free: a flood of bad input costs one atomic read per rejection.
        if self.last_logged[index].due() {
            tracing::warn!(reason = kind.as_str(), total, %detail, "sample rejected (logged once per minute per reason)");
        }
    }

    /// Counts duplicates of readings applied before, and logs one of them at most once
    /// a minute (at debug level: a broker redelivering after a reconnect makes them).
    pub fn duplicates(&self, count: u64, example: &dyn std::fmt::Display) {
        let total = self.samples_duplicate.fetch_add(count, Ordering::Relaxed) + count;
        if self.duplicate_logged.due() {
            tracing::debug!(total, %example, "duplicate readings ignored (logged once per minute)");
        }
    }

    /// Names a source, so its readings are counted under it.
    pub fn register_source(&self, id: u32, name: &str) {
        let mut names = self.source_names.write();
        if !names.iter().any(|(known, _)| *known == id) {
            names.push((id, name.to_string()));
        }
    }

    /// Counts what became of readings of source `id`.
    pub fn tally(&self, id: u32, counts: SourceCounts) {
        let Some(tally) = self.source_tallies.0.get(id as usize) else {
            return;
        };
        let add = |counter: &AtomicU64, n: u64| {
            if n > 0 {
                counter.fetch_add(n, Ordering::Relaxed);
            }
        };
        add(&tally.applied, counts.applied);
        add(&tally.late, counts.late);
        add(&tally.duplicate, counts.duplicate);
        add(&tally.refused, counts.refused);
    }

    /// What the twins made of each registered source's readings, by source name.
    pub fn sources(&self) -> Vec<(String, SourceCounts)> {
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        self.source_names
            .read()
            .iter()
            .filter_map(|(id, name)| {
                let tally = self.source_tallies.0.get(*id as usize)?;
                let counts = SourceCounts {
                    applied: get(&tally.applied),
                    late: get(&tally.late),
                    duplicate: get(&tally.duplicate),
                    refused: get(&tally.refused),
                };
                Some((name.clone(), counts))
            })
            .collect()
    }

    /// Registers a connector for [`Counters::connectors`]. It is held weakly: it leaves
    /// the list once its last strong reference is gone.
    pub fn register_connector(&self, connector: &Arc<dyn ConnectorReport>) {
        self.connectors.0.lock().push(Arc::downgrade(connector));
    }

    /// The status of every live registered connector, in registration order.
    pub fn connectors(&self) -> Vec<ConnectorStatus> {
        let live: Vec<Arc<dyn ConnectorReport>> = {
            let mut registered = self.connectors.0.lock();
            registered.retain(|connector| connector.strong_count() > 0);
            registered.iter().filter_map(Weak::upgrade).collect()
        };
        if live.is_empty() {
            return Vec::new();
        }
        let sources = self.sources();
        live.iter()
            .map(|connector| connector.status(&sources))
            .collect()
    }

    /// Reads every counter.
    pub fn snapshot(&self) -> CounterSnapshot {
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        CounterSnapshot {
            samples_in: get(&self.samples_in),
            samples_applied: get(&self.samples_applied),
            samples_late: get(&self.samples_late),
            samples_duplicate: get(&self.samples_duplicate),
            rejected: SampleRejection::ALL
                .iter()
                .zip(&self.rejected)
                .map(|(kind, count)| (kind.as_str(), get(count)))
                .collect(),
            conditions: get(&self.conditions),
            commands_accepted: get(&self.commands_accepted),
            commands_clamped: get(&self.commands_clamped),
            commands_denied: get(&self.commands_denied),
            safety_actions: get(&self.safety_actions),
            restarts: get(&self.restarts),
            passivated: get(&self.passivated),
            woken: get(&self.woken),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_every_rejection_and_logs_once_per_window() {
        let counters = Counters::default();
        for _ in 0..1000 {
            counters.reject(SampleRejection::NotFinite, &"NaN");
        }
        counters.reject(SampleRejection::OutOfRange, &"900");
        let snapshot = counters.snapshot();
        assert_eq!(snapshot.rejected(SampleRejection::NotFinite), 1000);
        assert_eq!(snapshot.rejected(SampleRejection::OutOfRange), 1);
        assert_eq!(snapshot.rejected_total(), 1001);
        counters.reject(SampleRejection::NotFinite, &"NaN");
        assert!(
            !counters.last_logged[2].due(),
            "logged once, and not again within the minute"
        );
    }
}
