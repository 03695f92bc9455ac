//! Aggregates published by line and plant actors, readable without messaging them.

use parking_lot::RwLock;
use serde::{Deserialize, Serialize};
use tokio::sync::broadcast;

use doppel_runtime::internal::TwinStatus;
use doppel_runtime::twin::RunState;
use doppel_runtime::{AssetPath, Timestamp};

/// A line's aggregates.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LineStatus {
    /// The line.
    pub path: AssetPath,
    /// Sum of the machines' throughput.
    pub throughput: f64,
    /// Sum of the machines' power, kW.
    pub power_kw: f64,
    /// Energy used since the line started, kWh (power integrated over time).
    pub energy_kwh: f64,
    /// The lowest machine health.
    pub worst_health: f64,
    /// Machines running.
    pub running: usize,
    /// Machines stopped by command.
    pub stopped: usize,
    /// Machines stopped by a trip.
    pub tripped: usize,
    /// Latest status of each machine, in topology order.
    pub machines: Vec<Option<TwinStatus>>,
    /// When last updated.
    pub at: Timestamp,
}

impl LineStatus {
    /// An empty status for a line of `machines` machines.
    pub fn new(path: AssetPath, machines: usize) -> Self {
        Self {
            path,
            throughput: 0.0,
            power_kw: 0.0,
            energy_kwh: 0.0,
            worst_health: 1.0,
            running: 0,
            stopped: 0,
            tripped: 0,
            machines: vec![None; machines],
            at: Timestamp(0),
        }
    }

    /// Folds in a machine's status (at position `slot`), integrating energy.
    pub fn update(&mut self, slot: usize, status: TwinStatus) {
        let Some(entry) = self.machines.get_mut(slot) else {
            return;
        };
        let now = status.at.max(self.at);
        if self.at.0 > 0 {
            let hours = (now.0 - self.at.0).max(0) as f64 / 3.6e9;
            self.energy_kwh += self.power_kw * hours;
        }
        *entry = Some(status);
        self.at = now;
        self.recompute();
    }

    fn recompute(&mut self) {
        let present = || self.machines.iter().flatten();
        self.throughput = present().filter_map(|m| m.throughput).sum();
        self.power_kw = present().filter_map(|m| m.power_kw).sum();
        self.worst_health = present().map(|m| m.health).fold(1.0, f64::min);
        self.running = present()
            .filter(|m| m.run_state == RunState::Running)
            .count();
        self.stopped = present()
            .filter(|m| m.run_state == RunState::Stopped)
            .count();
        self.tripped = present()
            .filter(|m| m.run_state == RunState::Tripped)
            .count();
    }
}

/// A plant's aggregates.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PlantStatus {
    /// The plant.
    pub path: AssetPath,
    /// Sum of the lines' throughput.
    pub throughput: f64,
    /// Sum of the lines' power, kW.
    pub power_kw: f64,
    /// Sum of the lines' energy, kWh.
    pub energy_kwh: f64,
    /// The lowest line health.
    pub worst_health: f64,
    /// Machines tripped across lines.
    pub tripped: usize,
    /// When last updated.
    pub at: Timestamp,
}

/// Something a supervisor did.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum SupervisorEvent {
    /// A child crashed and was restarted from durable state.
    Restarted {
        /// The supervisor.
        supervisor: AssetPath,
        /// The child.
        child: AssetPath,
        /// Why it crashed.
        reason: String,
    },
    /// A supervisor exceeded its restart intensity and failed, handing the problem
    /// to its own supervisor.
    Escalated {
        /// The supervisor that gave up.
        supervisor: AssetPath,
        /// Why.
        reason: String,
    },
}

/// The node's aggregates and supervision events.
pub struct StatusBoard {
    lines: RwLock<Vec<LineStatus>>,
    plants: RwLock<Vec<PlantStatus>>,
    events: broadcast::Sender<SupervisorEvent>,
}

impl StatusBoard {
    /// A board for these plants and lines (lines as (plant index, line status)).
    pub fn new(plants: Vec<PlantStatus>, lines: Vec<LineStatus>) -> Self {
        Self {
            lines: RwLock::new(lines),
            plants: RwLock::new(plants),
            events: broadcast::channel(1024).0,
        }
    }

    /// Every line's status.
    pub fn lines(&self) -> Vec<LineStatus> {
        self.lines.read().clone()
    }

    /// Every plant's status.
    pub fn plants(&self) -> Vec<PlantStatus> {
        self.plants.read().clone()
    }

    /// Subscribes to supervision events.
    pub fn events(&self) -> broadcast::Receiver<SupervisorEvent> {
        self.events.subscribe()
    }

    pub(crate) fn publish(&self, event: SupervisorEvent) {
        let _ = self.events.send(event);
    }

    pub(crate) fn set_line(&self, index: usize, status: LineStatus) {
        if let Some(slot) = self.lines.write().get_mut(index) {
            *slot = status;
        }
    }

    pub(crate) fn set_plant(&self, index: usize, status: PlantStatus) {
        if let Some(slot) = self.plants.write().get_mut(index) {
            *slot = status;
        }
    }
}
