//! OTP-style restart intensity: a supervisor restarts failed children, but more than
//! `max_restarts` within `within` means restarting does not help, and it escalates.

use std::collections::VecDeque;
use std::time::Duration;

use tokio::time::Instant;

use crate::config::SupervisionSettings;

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
