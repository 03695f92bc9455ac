//! Clock offsets between nodes, estimated from Hello round trips.
//!
//! A command's deadline is an instant on the wall clock of the node that first received
//! it; the owner compares it with its own clock. A forwarding node therefore estimates
//! each peer's offset (peer clock − own clock) as `T − (t0 + t1) / 2` from the peer's
//! answer time `T` and its own send and receive times `t0`, `t1`; the estimate is off by
//! at most half the round trip. A deadline is forwarded only to a peer whose worst-case
//! offset (|offset| + half the round trip) is within the cluster's
//! `max_clock_skew_ms`.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use doppel_runtime::Timestamp;
use parking_lot::Mutex;

/// One estimate of a peer's clock.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClockReading {
    /// Peer clock minus this node's clock, in microseconds.
    pub offset_us: i64,
    /// Half the round trip of the measurement, in microseconds: the offset's error bound.
    pub uncertainty_us: u64,
    /// When it was measured (this node's clock).
    pub at: Timestamp,
}

impl ClockReading {
    /// The estimate from a call sent at `sent`, answered by the peer at `peer` and
    /// received at `received`.
    pub fn measure(sent: Timestamp, peer: Timestamp, received: Timestamp) -> Self {
        let midpoint = sent.0 + (received.0 - sent.0) / 2;
        Self {
            offset_us: peer.0 - midpoint,
            uncertainty_us: u64::try_from((received.0 - sent.0).max(0) / 2).unwrap_or(0),
            at: received,
        }
    }

    /// The largest the true offset can be, in either direction.
    pub fn worst_case(&self) -> Duration {
        Duration::from_micros(self.offset_us.unsigned_abs() + self.uncertainty_us)
    }
}

/// The latest clock reading of each peer, shared by admission (which measures) and
/// the router (which checks before forwarding a deadline).
#[derive(Debug, Clone, Default)]
pub struct Clocks {
    readings: Arc<Mutex<HashMap<String, ClockReading>>>,
}

impl Clocks {
    /// Records `node`'s latest reading; logs when its offset crosses `bound`.
    pub fn record(&self, node: &str, reading: ClockReading, bound: Duration) {
        let previous = self.readings.lock().insert(node.to_string(), reading);
        let beyond = reading.worst_case() > bound;
        let was_beyond = previous.is_some_and(|p| p.worst_case() > bound);
        if beyond && !was_beyond {
            tracing::warn!(
                peer = node,
                offset_ms = reading.offset_us as f64 / 1e3,
                uncertainty_ms = reading.uncertainty_us as f64 / 1e3,
                bound_ms = bound.as_millis() as u64,
                "peer clock is off by more than the cluster's bound; commands with deadlines are not forwarded to it"
            );
        } else if was_beyond && !beyond {
            tracing::info!(
                peer = node,
                offset_ms = reading.offset_us as f64 / 1e3,
                "peer clock is back within the cluster's bound"
            );
        }
    }

    /// `node`'s latest reading.
    pub fn get(&self, node: &str) -> Option<ClockReading> {
        self.readings.lock().get(node).copied()
    }

    /// Forgets nodes no longer in `live`.
    pub fn retain(&self, live: impl Fn(&str) -> bool) {
        self.readings.lock().retain(|node, _| live(node));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_offset_is_taken_at_the_midpoint_of_the_round_trip() {
        let sent = Timestamp(1_000_000);
        let received = Timestamp(1_004_000);
        // The peer's clock is 250 ms ahead: at our midpoint (1.002 s) it read 1.252 s.
        let reading = ClockReading::measure(sent, Timestamp(1_252_000), received);
        assert_eq!(reading.offset_us, 250_000);
        assert_eq!(reading.uncertainty_us, 2_000);
        assert_eq!(reading.worst_case(), Duration::from_micros(252_000));
        let behind = ClockReading::measure(sent, Timestamp(702_000), received);
        assert_eq!(behind.offset_us, -300_000);
        assert_eq!(behind.worst_case(), Duration::from_micros(302_000));
    }

    #[test]
    fn readings_are_kept_per_peer() {
        let clocks = Clocks::default();
        let bound = Duration::from_millis(500);
        let reading = ClockReading::measure(Timestamp(0), Timestamp(900_000), Timestamp(10));
        clocks.record("edge-a", reading, bound);
        assert_eq!(clocks.get("edge-a"), Some(reading));
        assert!(clocks.get("edge-b").is_none());
        clocks.retain(|node| node != "edge-a");
        assert!(clocks.get("edge-a").is_none());
    }
}
