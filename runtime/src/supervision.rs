//! OTP-style restart intensity: a supervisor restarts failed children, but more than
//! `max_restarts` within `within` means restarting does not help, and it escalates.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;

use crate::config::SupervisionSettings;
use crate::path::AssetPath;
use crate::time::Timestamp;

/// How many supervision records a node keeps for its API.
pub const RECENT_RECORDS: usize = 256;

/// Something a supervisor did, as the node's status reports it.
#[derive(Debug, Clone, PartialEq)]
pub struct SupervisionRecord {
    /// When.
    pub at: Timestamp,
    /// The supervisor (a line or a plant).
    pub supervisor: AssetPath,
    /// The child it restarted; `None` when it gave up and escalated.
    pub child: Option<AssetPath>,
    /// Why: the crash, or why restarting no longer helps.
    pub reason: String,
}

/// The node's most recent supervision records, oldest first (at most
/// [`RECENT_RECORDS`]). Cheap to clone; clones share the records.
#[derive(Debug, Clone, Default)]
pub struct SupervisionLog {
    records: Arc<parking_lot::Mutex<VecDeque<SupervisionRecord>>>,
}

impl SupervisionLog {
    /// Keeps `record`, dropping the oldest beyond [`RECENT_RECORDS`].
    pub fn record(&self, record: SupervisionRecord) {
        let mut records = self.records.lock();
        if records.len() == RECENT_RECORDS {
            records.pop_front();
        }
        records.push_back(record);
    }

    /// The records kept, oldest first.
    pub fn recent(&self) -> Vec<SupervisionRecord> {
        self.records.lock().iter().cloned().collect()
    }
}

/// Counts restarts in a sliding window.
#[derive(Debug, Clone)]
pub struct RestartIntensity {
    max_restarts: u32,
    within: Duration,
    restarts: VecDeque<Instant>,
}

impl RestartIntensity {
    /// A counter for `settings`.
    pub fn new(settings: &SupervisionSettings) -> Self {
        Self {
            max_restarts: settings.max_restarts,
            within: settings.window(),
            restarts: VecDeque::new(),
        }
    }

    /// Records a restart now; false when this restart exceeds the intensity and the
    /// supervisor must escalate instead.
    pub fn record(&mut self) -> bool {
        let now = Instant::now();
        while self
            .restarts
            .front()
            .is_some_and(|&at| now.duration_since(at) > self.within)
        {
            self.restarts.pop_front();
        }
        self.restarts.push_back(now);
        self.restarts.len() as u32 <= self.max_restarts
    }

    /// Restarts within the current window.
    pub fn recent(&self) -> u32 {
        self.restarts.len() as u32
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn escalates_beyond_n_in_t_and_forgets_old_restarts() {
        let mut intensity = RestartIntensity::new(&SupervisionSettings {
            max_restarts: 2,
            within_secs: 10,
        });
        assert!(intensity.record());
        assert!(intensity.record());
        assert!(!intensity.record(), "third restart within 10 s escalates");
        tokio::time::advance(Duration::from_secs(11)).await;
        assert!(intensity.record(), "old restarts fall out of the window");
        assert_eq!(intensity.recent(), 1);
    }
}
