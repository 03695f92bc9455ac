//! Progress of long start-up phases, logged for a node with many twins.

use std::time::{Duration, Instant};

/// How often progress is logged while a phase runs.
const EVERY: Duration = Duration::from_secs(2);

/// One phase of a start (recovering, starting twins): logs how far it got every two
/// seconds, with an estimate of the seconds left, and how long it took when it took
/// longer than that.
pub struct Progress {
    what: &'static str,
    total: usize,
    started: Instant,
    last: Instant,
}

impl Progress {
    /// A phase over `total` twins.
    pub fn new(what: &'static str, total: usize) -> Self {
        let now = Instant::now();
        Self {
            what,
            total,
            started: now,
            last: now,
        }
    }

    /// `done` twins of the total are through; logs when the last line is two seconds
    /// old.
    pub fn at(&mut self, done: usize) {
        let now = Instant::now();
        if now.duration_since(self.last) < EVERY {
            return;
        }
        self.last = now;
        let elapsed = now.duration_since(self.started).as_secs_f64();
        let left = if done == 0 {
            f64::NAN
        } else {
            elapsed * (self.total.saturating_sub(done)) as f64 / done as f64
        };
        tracing::info!(
            phase = self.what,
            done,
            total = self.total,
            seconds_left = format_args!("{left:.0}"),
            "{} {done} of {} twins, about {left:.0} s left",
            self.what,
            self.total
        );
    }

    /// The phase is over: logs its duration when it was long enough to log progress.
    pub fn finish(self) {
        let elapsed = self.started.elapsed();
        if elapsed >= EVERY {
            tracing::info!(
                phase = self.what,
                total = self.total,
                seconds = format_args!("{:.1}", elapsed.as_secs_f64()),
                "{} {} twins took {:.1} s",
                self.what,
                self.total,
                elapsed.as_secs_f64()
            );
        }
    }
}
