//! Aggregates published by line and plant actors, readable without messaging them.

use std::collections::BTreeMap;

use parking_lot::RwLock;
use serde::{Deserialize, Serialize};
use tokio::sync::broadcast;

use doppel_runtime::internal::TwinStatus;
use doppel_runtime::supervision::{SupervisionLog, SupervisionRecord};
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
    /// Machines on the line.
    pub machines: usize,
    /// Machines that reported a status.
    pub reporting: usize,
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
            machines,
            reporting: 0,
            at: Timestamp(0),
        }
    }
}

/// Healths held by a set of children, for the lowest in O(log n) as they change.
#[derive(Debug, Default, Clone)]
struct Healths(BTreeMap<u64, usize>);

impl Healths {
    /// Health as an ordered key: health is never negative, where the bits of an `f64`
    /// order as its value.
    fn key(health: f64) -> u64 {
        health.max(0.0).to_bits()
    }

    fn add(&mut self, health: f64) {
        *self.0.entry(Self::key(health)).or_default() += 1;
    }

    fn remove(&mut self, health: f64) {
        let key = Self::key(health);
        if let Some(count) = self.0.get_mut(&key) {
            *count -= 1;
            if *count == 0 {
                self.0.remove(&key);
            }
        }
    }

    /// The lowest health, capped at 1 (1 when none).
    fn worst(&self) -> f64 {
        self.0
            .keys()
            .next()
            .map_or(1.0, |&bits| f64::from_bits(bits).min(1.0))
    }
}

/// A line's aggregates kept by its actor: each machine's status updates the figures
/// by its difference from the machine's last one, never by a pass over the line. Sums
/// are recomputed exactly once per as many updates as the line has machines, so
/// rounding cannot drift (amortized O(1) per update).
#[derive(Debug, Clone)]
pub struct LineAggregate {
    machines: Vec<Option<TwinStatus>>,
    healths: Healths,
    since_exact: usize,
    status: LineStatus,
}

impl LineAggregate {
    /// The aggregates of a line of `machines` machines, none reported yet.
    pub fn new(path: AssetPath, machines: usize) -> Self {
        Self {
            machines: vec![None; machines],
            healths: Healths::default(),
            since_exact: 0,
            status: LineStatus::new(path, machines),
        }
    }

    /// The figures as they stand.
    pub fn status(&self) -> &LineStatus {
        &self.status
    }

    /// Folds in a machine's status (at position `slot`), integrating energy.
    pub fn update(&mut self, slot: usize, status: TwinStatus) {
        let Some(entry) = self.machines.get_mut(slot) else {
            return;
        };
        let line = &mut self.status;
        let now = status.at.max(line.at);
        if line.at.0 > 0 {
            let hours = (now.0 - line.at.0).max(0) as f64 / 3.6e9;
            line.energy_kwh += line.power_kw * hours;
        }
        line.at = now;
        if let Some(old) = entry.take() {
            Self::count(line, &mut self.healths, &old, -1.0);
        } else {
            line.reporting += 1;
        }
        Self::count(line, &mut self.healths, &status, 1.0);
        *entry = Some(status);
        self.since_exact += 1;
        if self.since_exact >= self.machines.len().max(1) {
            self.recompute();
        }
        self.status.worst_health = self.healths.worst();
    }

    /// Adds (`sign` 1) or takes away (`sign` -1) one machine's part.
    fn count(line: &mut LineStatus, healths: &mut Healths, machine: &TwinStatus, sign: f64) {
        line.throughput += sign * machine.throughput.unwrap_or(0.0);
        line.power_kw += sign * machine.power_kw.unwrap_or(0.0);
        let counter = match machine.run_state {
            RunState::Running => &mut line.running,
            RunState::Stopped => &mut line.stopped,
            RunState::Tripped => &mut line.tripped,
        };
        if sign > 0.0 {
            *counter += 1;
        } else {
            *counter = counter.saturating_sub(1);
        }
        if sign > 0.0 {
            healths.add(machine.health);
        } else {
            healths.remove(machine.health);
        }
    }

    /// The sums again from every machine's latest status.
    fn recompute(&mut self) {
        let present = || self.machines.iter().flatten();
        self.status.throughput = present().filter_map(|m| m.throughput).sum();
        self.status.power_kw = present().filter_map(|m| m.power_kw).sum();
        self.since_exact = 0;
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

/// A plant's aggregates kept by its actor, updated by each line's difference from its
/// last figures, never by a pass over the plant.
#[derive(Debug, Clone)]
pub struct PlantAggregate {
    lines: Vec<Option<LineStatus>>,
    healths: Healths,
    since_exact: usize,
    status: PlantStatus,
}

impl PlantAggregate {
    /// The aggregates of a plant of `lines` lines, none reported yet.
    pub fn new(path: AssetPath, lines: usize) -> Self {
        Self {
            lines: vec![None; lines],
            healths: Healths::default(),
            since_exact: 0,
            status: PlantStatus {
                path,
                throughput: 0.0,
                power_kw: 0.0,
                energy_kwh: 0.0,
                worst_health: 1.0,
                tripped: 0,
                at: Timestamp(0),
            },
        }
    }

    /// The figures as they stand.
    pub fn status(&self) -> &PlantStatus {
        &self.status
    }

    /// Folds in a line's figures (at position `slot`).
    pub fn update(&mut self, slot: usize, line: LineStatus) {
        let Some(entry) = self.lines.get_mut(slot) else {
            return;
        };
        let plant = &mut self.status;
        if let Some(old) = entry.take() {
            plant.throughput -= old.throughput;
            plant.power_kw -= old.power_kw;
            plant.energy_kwh -= old.energy_kwh;
            plant.tripped = plant.tripped.saturating_sub(old.tripped);
            self.healths.remove(old.worst_health);
        }
        plant.throughput += line.throughput;
        plant.power_kw += line.power_kw;
        plant.energy_kwh += line.energy_kwh;
        plant.tripped += line.tripped;
        plant.at = plant.at.max(line.at);
        self.healths.add(line.worst_health);
        *entry = Some(line);
        self.since_exact += 1;
        if self.since_exact >= self.lines.len().max(1) {
            let present = || self.lines.iter().flatten();
            self.status.throughput = present().map(|l| l.throughput).sum();
            self.status.power_kw = present().map(|l| l.power_kw).sum();
            self.status.energy_kwh = present().map(|l| l.energy_kwh).sum();
            self.since_exact = 0;
        }
        self.status.worst_health = self.healths.worst();
    }
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
    log: SupervisionLog,
}

impl StatusBoard {
    /// A board for these plants and lines (lines as (plant index, line status)) that
    /// also keeps every supervision event in `log`, for the node's status.
    pub fn new(plants: Vec<PlantStatus>, lines: Vec<LineStatus>, log: SupervisionLog) -> Self {
        Self {
            lines: RwLock::new(lines),
            plants: RwLock::new(plants),
            events: broadcast::channel(1024).0,
            log,
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
        let record = match &event {
            SupervisorEvent::Restarted {
                supervisor,
                child,
                reason,
            } => SupervisionRecord {
                at: Timestamp::now(),
                supervisor: supervisor.clone(),
                child: Some(child.clone()),
                reason: reason.clone(),
            },
            SupervisorEvent::Escalated { supervisor, reason } => SupervisionRecord {
                at: Timestamp::now(),
                supervisor: supervisor.clone(),
                child: None,
                reason: reason.clone(),
            },
        };
        self.log.record(record);
        let _ = self.events.send(event);
    }

    pub(crate) fn set_line(&self, index: usize, status: &LineStatus) {
        if let Some(slot) = self.lines.write().get_mut(index) {
            slot.clone_from(status);
        }
    }

    pub(crate) fn set_plant(&self, index: usize, status: &PlantStatus) {
        if let Some(slot) = self.plants.write().get_mut(index) {
            slot.clone_from(status);
        }
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    fn status(
        index: usize,
        run: u8,
        health: f64,
        throughput: Option<f64>,
        power: Option<f64>,
        at: i64,
    ) -> TwinStatus {
        TwinStatus {
            index,
            asset: AssetPath::parse(&format!("acme/plant-a/line-1/m-{index}")).unwrap(),
            run_state: match run % 3 {
                0 => RunState::Running,
                1 => RunState::Stopped,
                _ => RunState::Tripped,
            },
            health,
            throughput,
            power_kw: power,
            worst_alarm: None,
            at: Timestamp(at),
        }
    }

    /// The figures from scratch: what the aggregates must equal.
    fn from_scratch(latest: &[Option<TwinStatus>]) -> (f64, f64, f64, [usize; 3], usize) {
        let present = || latest.iter().flatten();
        let count = |state| present().filter(|m| m.run_state == state).count();
        (
            present().filter_map(|m| m.throughput).sum(),
            present().filter_map(|m| m.power_kw).sum(),
            present().map(|m| m.health).fold(1.0, f64::min),
            [
                count(RunState::Running),
                count(RunState::Stopped),
                count(RunState::Tripped),
            ],
            present().count(),
        )
    }

    fn close(a: f64, b: f64) -> bool {
        (a - b).abs() <= 1e-9 * (1.0 + a.abs().max(b.abs()))
    }

    proptest! {
        #[test]
        fn line_and_plant_aggregates_equal_a_recomputation_after_any_changes(
            updates in prop::collection::vec(
                (0usize..12, 0u8..3, 0.0f64..1.0, prop::option::of(0.0f64..500.0), prop::option::of(0.0f64..90.0)),
                1..200,
            ),
        ) {
            let path = AssetPath::parse("acme/plant-a/line-1").unwrap();
            let mut line = LineAggregate::new(path.clone(), 12);
            let mut plant = PlantAggregate::new(AssetPath::parse("acme/plant-a").unwrap(), 3);
            let mut latest: Vec<Option<TwinStatus>> = vec![None; 12];
            let mut lines: Vec<Option<LineStatus>> = vec![None; 3];
            for (step, (slot, run, health, throughput, power)) in updates.into_iter().enumerate() {
                let update = status(slot, run, health, throughput, power, 1 + step as i64);
                latest[slot] = Some(update.clone());
                line.update(slot, update);
                let (throughput, power, worst, [running, stopped, tripped], reporting) = from_scratch(&latest);
                let figures = line.status();
                prop_assert!(close(figures.throughput, throughput), "{} vs {throughput}", figures.throughput);
                prop_assert!(close(figures.power_kw, power), "{} vs {power}", figures.power_kw);
                prop_assert_eq!(figures.worst_health, worst);
                prop_assert_eq!((figures.running, figures.stopped, figures.tripped), (running, stopped, tripped));
                prop_assert_eq!(figures.reporting, reporting);

                // The plant, fed this line's figures in a slot that changes with the step.
                let line_slot = step % 3;
                lines[line_slot] = Some(figures.clone());
                plant.update(line_slot, figures.clone());
                let present = || lines.iter().flatten();
                let totals = plant.status();
                prop_assert!(close(totals.throughput, present().map(|l| l.throughput).sum()));
                prop_assert!(close(totals.power_kw, present().map(|l| l.power_kw).sum()));
                prop_assert!(close(totals.energy_kwh, present().map(|l| l.energy_kwh).sum()));
                prop_assert_eq!(totals.tripped, present().map(|l| l.tripped).sum::<usize>());
                prop_assert_eq!(totals.worst_health, present().map(|l| l.worst_health).fold(1.0, f64::min));
            }
        }
    }

    #[test]
    fn energy_integrates_the_line_power_over_time() {
        let path = AssetPath::parse("acme/plant-a/line-1").unwrap();
        let mut line = LineAggregate::new(path, 2);
        let hour = 3_600_000_000;
        line.update(0, status(0, 0, 1.0, None, Some(10.0), hour));
        line.update(1, status(1, 0, 1.0, None, Some(5.0), 2 * hour));
        line.update(1, status(1, 0, 1.0, None, Some(5.0), 3 * hour));
        // 10 kW for the first hour, then 15 kW for one more.
        assert!(
            close(line.status().energy_kwh, 25.0),
            "{}",
            line.status().energy_kwh
        );
    }
}
