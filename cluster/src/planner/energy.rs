//! The energy planner: keeps plants' power draw under a cap by lowering speed setpoints,
//! and raises them back once there is room.
//!
//! ```toml
//! [cluster.planners.energy]
//! caps = { "acme/plant-a" = 500.0 }   # kW per asset path prefix (plant, or line)
//! power_channel = "power_kw"          # reported power, kW
//! speed_desired = "speed"             # the speed setpoint
//! speed_channel = "speed"             # measured speed, if the type reports one ("" for none)
//! command = "set_speed"
//! param = "rpm"
//! min_speed = 400.0                   # never lower a setpoint below this…
//! min_speed_fraction = 0.0            # …nor below this fraction of its speed before lowering
//! target = 0.95                       # lower (and raise) to this fraction of the cap
//! raise_below = 0.9                   # raise only while under this fraction of the cap
//! min_change = 1.0                    # smallest setpoint change worth a command
//! max_age_secs = 30.0                 # older power readings are ignored
//! settle_secs = 30.0                  # how long a command counts as in flight
//! interval_secs = 10
//! valid_for_secs = 30
//! ```
//!
//! A plant's draw is the sum of the power readings of its running machines. Stopped and
//! tripped machines draw nothing and are never commanded; a running machine whose
//! reading is missing, bad or older than `max_age_secs` is unknown: left out of the sum
//! and never commanded.
//!
//! Power is taken to scale linearly with speed, so a machine's draw at setpoint `s` is
//! `power × s / speed`, where `speed` is its measured speed when it reports a fresh one
//! and its current setpoint otherwise. The planner works on this predicted draw: a
//! setpoint it commanded less than `settle_secs` ago counts as already in force, so a
//! command still in flight (or a machine still ramping) is neither sent again nor
//! compensated twice.
//!
//! When a capped prefix's predicted draw is above its cap, the planner lowers setpoints
//! until the prediction is `target` × cap. The cut is taken from the machines with the
//! most slack (kW they would shed going down to their floor) first: the planner lowers
//! the largest slacks to a common level, so the machines with the most slack give the
//! most and the smallest may give nothing. If even every machine at its floor stays over
//! the cap, every machine goes to its floor and the reason says so.
//!
//! Raising has hysteresis: only while a prefix's draw is under `raise_below` × cap and
//! none of its running machines is unknown, the planner raises the machines it lowered
//! back toward the setpoint they had before it lowered them (never above), up to
//! `target` × cap. A setpoint someone else raises past that original speed is theirs:
//! the planner forgets it. Caps may nest (a plant and one of its lines): lowering
//! serves the deepest prefix first, and a machine is raised only within the room of
//! every cap that covers it.

use std::collections::BTreeMap;
use std::time::Duration;

use doppel_runtime::sample::Quality;
use doppel_runtime::twin::{RunState, TwinReport};
use doppel_runtime::{AssetPath, Timestamp, Value};
use serde::Deserialize;

use super::{FleetView, PlannedCommand, Planner, PlannerConfigError, is_under};

/// The planner's principal in the audit log.
const NAME: &str = "energy-planner";

/// The `[cluster.planners.energy]` table.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct EnergyConfig {
    /// Power caps in kW, by asset path prefix (a plant such as `acme/plant-a`, or a
    /// line). Default: none.
    pub caps: BTreeMap<String, f64>,
    /// The reported channel with a machine's power draw, in kW. Default `power_kw`.
    pub power_channel: String,
    /// The desired value with the speed setpoint. Default `speed`.
    pub speed_desired: String,
    /// The reported channel with the measured speed, used to scale power when present
    /// and fresh; empty for none. Default `speed`.
    pub speed_channel: String,
    /// The command that sets the speed. Default `set_speed`.
    pub command: String,
    /// Its parameter with the new setpoint (a float). Default `rpm`.
    pub param: String,
    /// The lowest setpoint the planner commands, in the setpoint's unit. Default 400.
    pub min_speed: f64,
    /// The planner also keeps each setpoint at or above this fraction of the setpoint
    /// it had before the planner lowered it. Default 0 (only `min_speed` counts).
    pub min_speed_fraction: f64,
    /// Lowering and raising aim at this fraction of the cap. Default 0.95.
    pub target: f64,
    /// Lowered machines are raised only while the draw is under this fraction of the
    /// cap. Default 0.9.
    pub raise_below: f64,
    /// The smallest setpoint change worth a command when raising, and the tolerance
    /// when comparing setpoints. Default 1.
    pub min_change: f64,
    /// Power (and speed) readings older than this many seconds are ignored. Default 30.
    pub max_age_secs: f64,
    /// A setpoint the planner commanded counts as in force for this many seconds, even
    /// while the mirror still shows the old one. Default 30.
    pub settle_secs: f64,
    /// How often the planner runs, in seconds. Default 10.
    pub interval_secs: u64,
    /// How long its commands stay valid, in seconds. Default 30.
    pub valid_for_secs: u64,
}

impl Default for EnergyConfig {
    fn default() -> Self {
        Self {
            caps: BTreeMap::new(),
            power_channel: "power_kw".to_string(),
            speed_desired: "speed".to_string(),
            speed_channel: "speed".to_string(),
            command: "set_speed".to_string(),
            param: "rpm".to_string(),
            min_speed: 400.0,
            min_speed_fraction: 0.0,
            target: 0.95,
            raise_below: 0.9,
            min_change: 1.0,
            max_age_secs: 30.0,
            settle_secs: 30.0,
            interval_secs: 10,
            valid_for_secs: 30,
        }
    }
}

impl EnergyConfig {
    /// Reads the config from its TOML table.
    pub fn from_table(table: &toml::Table) -> Result<Self, PlannerConfigError> {
        let config: Self = table
            .clone()
            .try_into()
            .map_err(PlannerConfigError::Parse)?;
        config.validate()?;
        Ok(config)
    }

    /// Checks that the values make sense together.
    pub fn validate(&self) -> Result<(), PlannerConfigError> {
        for (prefix, cap) in &self.caps {
            AssetPath::parse(prefix).map_err(|error| {
                PlannerConfigError::invalid(format!("caps.{prefix}"), error.to_string())
            })?;
            if !(cap.is_finite() && *cap > 0.0) {
                return Err(PlannerConfigError::invalid(
                    format!("caps.{prefix}"),
                    format!("the cap must be positive, not {cap}"),
                ));
            }
        }
        if !(self.min_speed.is_finite() && self.min_speed >= 0.0) {
            return Err(PlannerConfigError::invalid(
                "min_speed",
                format!("must be 0 or more, not {}", self.min_speed),
            ));
        }
        if !(0.0..1.0).contains(&self.min_speed_fraction) {
            return Err(PlannerConfigError::invalid(
                "min_speed_fraction",
                format!("must lie in 0..1, not {}", self.min_speed_fraction),
            ));
        }
        if !(self.raise_below > 0.0 && self.raise_below < self.target && self.target <= 1.0) {
            return Err(PlannerConfigError::invalid(
                "raise_below",
                format!(
                    "need 0 < raise_below < target <= 1, not raise_below = {} and target = {}",
                    self.raise_below, self.target
                ),
            ));
        }
        for (field, value) in [
            ("min_change", self.min_change),
            ("max_age_secs", self.max_age_secs),
            ("settle_secs", self.settle_secs),
        ] {
            if !(value.is_finite() && value >= 0.0) {
                return Err(PlannerConfigError::invalid(
                    field,
                    format!("must be 0 or more, not {value}"),
                ));
            }
        }
        if self.max_age_secs == 0.0 {
            return Err(PlannerConfigError::invalid(
                "max_age_secs",
                "must be positive",
            ));
        }
        for (field, value) in [
            ("interval_secs", self.interval_secs),
            ("valid_for_secs", self.valid_for_secs),
        ] {
            if value == 0 {
                return Err(PlannerConfigError::invalid(field, "must be positive"));
            }
        }
        for (field, value) in [
            ("power_channel", &self.power_channel),
            ("speed_desired", &self.speed_desired),
            ("command", &self.command),
            ("param", &self.param),
        ] {
            if value.is_empty() {
                return Err(PlannerConfigError::invalid(field, "must not be empty"));
            }
        }
        Ok(())
    }
}

/// What the planner remembers of a machine between runs.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
struct Memory {
    /// The setpoint before the planner first lowered it; `None` when not lowered.
    original: Option<f64>,
    /// The last setpoint the planner commanded, and when.
    commanded: Option<(f64, Timestamp)>,
}

/// A machine's state in one run.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Machine {
    /// Stopped or tripped: draws nothing, never commanded.
    Idle,
    /// Running without a fresh power reading: left out, never commanded.
    Unknown,
    /// Running with a fresh power reading.
    Known(Load),
}

/// A running machine's draw and, if the planner can change it, its speed.
#[derive(Debug, Clone, Copy, PartialEq)]
struct Load {
    /// The power reading, kW.
    power: f64,
    speed: Option<Speed>,
}

/// A machine's speed as the planner controls it.
#[derive(Debug, Clone, Copy, PartialEq)]
struct Speed {
    /// The setpoint in force (with this run's decisions applied).
    setpoint: f64,
    /// kW per unit of speed.
    kw_per_unit: f64,
    /// The setpoint before the planner lowered it (the current one when not lowered).
    original: f64,
    /// The lowest setpoint the planner may command.
    floor: f64,
}

impl Load {
    /// The predicted draw once the setpoint in force is reached, kW.
    fn predicted(&self) -> f64 {
        match self.speed {
            Some(speed) => speed.kw_per_unit * speed.setpoint,
            None => self.power,
        }
    }
}

/// A setpoint change decided in this run.
#[derive(Debug, Clone)]
struct Change {
    from: f64,
    to: f64,
    reason: String,
}

/// Keeps capped plants' power draw under their caps by adjusting speed setpoints.
///
/// See the [module documentation](self) for the rules.
pub struct EnergyPlanner {
    config: EnergyConfig,
    /// Caps by prefix, deepest prefix first.
    caps: Vec<(String, f64)>,
    memory: BTreeMap<AssetPath, Memory>,
}

impl EnergyPlanner {
    /// A planner with nothing lowered yet; fails when the config is invalid.
    pub fn new(config: EnergyConfig) -> Result<Self, PlannerConfigError> {
        config.validate()?;
        let mut caps: Vec<(String, f64)> = config
            .caps
            .iter()
            .map(|(prefix, cap)| (prefix.trim_end_matches('/').to_string(), *cap))
            .collect();
        caps.sort_by(|(a, _), (b, _)| {
            let depth = |prefix: &str| prefix.split('/').count();
            depth(b).cmp(&depth(a)).then_with(|| a.cmp(b))
        });
        Ok(Self {
            config,
            caps,
            memory: BTreeMap::new(),
        })
    }

    /// A planner configured by its `[cluster.planners.energy]` table.
    pub fn from_table(table: &toml::Table) -> Result<Self, PlannerConfigError> {
        Self::new(EnergyConfig::from_table(table)?)
    }

    /// Its config.
    pub fn config(&self) -> &EnergyConfig {
        &self.config
    }

    /// The machines the planner has lowered, with the setpoint each had before.
    pub fn lowered(&self) -> Vec<(AssetPath, f64)> {
        self.memory
            .iter()
            .filter_map(|(asset, memory)| Some((asset.clone(), memory.original?)))
            .collect()
    }

    /// A reported value that is fresh and usable at `now`.
    fn fresh(&self, row: &TwinReport, channel: &str, now: Timestamp) -> Option<f64> {
        let sample = row.reported.iter().find(|r| r.channel == channel)?.sample?;
        let fresh = now.secs_since(sample.receive_time) <= self.config.max_age_secs;
        (fresh && sample.quality != Quality::Bad && sample.value.is_finite())
            .then_some(sample.value)
    }

    /// The setpoint the planner commanded less than `settle_secs` ago, if any.
    fn in_flight(&self, asset: &AssetPath, now: Timestamp) -> Option<f64> {
        let (setpoint, at) = self.memory.get(asset)?.commanded?;
        (now.secs_since(at) < self.config.settle_secs).then_some(setpoint)
    }

    /// Forgets machines that left the fleet, and lowered setpoints that are back at
    /// (or someone raised past) their original.
    fn forget(&mut self, fleet: &FleetView, now: Timestamp) {
        let settled: Vec<(AssetPath, Option<f64>)> = self
            .memory
            .keys()
            .map(|asset| {
                let desired = fleet
                    .get(asset)
                    .and_then(|row| row.desired(&self.config.speed_desired))
                    .map(|value| value.as_f64());
                let settled = self.in_flight(asset, now).is_none();
                (asset.clone(), desired.filter(|_| settled))
            })
            .collect();
        for (asset, desired) in settled {
            if fleet.get(&asset).is_none() {
                self.memory.remove(&asset);
                continue;
            }
            let Some(memory) = self.memory.get_mut(&asset) else {
                continue;
            };
            if let (Some(original), Some(desired)) = (memory.original, desired)
                && desired >= original - self.config.min_change
            {
                memory.original = None;
            }
            if memory
                .commanded
                .is_some_and(|(_, at)| now.secs_since(at) >= self.config.settle_secs)
            {
                memory.commanded = None;
            }
            if *memory == Memory::default() {
                self.memory.remove(&asset);
            }
        }
    }

    fn machine(&self, row: &TwinReport, now: Timestamp) -> Option<Machine> {
        let has_power = row
            .reported
            .iter()
            .any(|r| r.channel == self.config.power_channel);
        if !has_power {
            // Not a machine whose draw this planner knows about (a sensor twin, say).
            return None;
        }
        if row.run_state != RunState::Running {
            return Some(Machine::Idle);
        }
        let Some(power) = self.fresh(row, &self.config.power_channel, now) else {
            return Some(Machine::Unknown);
        };
        let power = power.max(0.0);
        let desired = row
            .desired(&self.config.speed_desired)
            .map(|value| value.as_f64())
            .filter(|desired| desired.is_finite());
        let Some(desired) = desired else {
            return Some(Machine::Known(Load { power, speed: None }));
        };
        let measured = match self.config.speed_channel.as_str() {
            "" => None,
            channel => self.fresh(row, channel, now).filter(|speed| *speed > 0.0),
        };
        let basis = measured.unwrap_or(desired);
        if basis <= 0.0 {
            return Some(Machine::Known(Load { power, speed: None }));
        }
        let setpoint = self.in_flight(&row.asset, now).unwrap_or(desired);
        let original = self
            .memory
            .get(&row.asset)
            .and_then(|memory| memory.original)
            .unwrap_or(setpoint);
        let floor = self
            .config
            .min_speed
            .max(self.config.min_speed_fraction * original);
        Some(Machine::Known(Load {
            power,
            speed: Some(Speed {
                setpoint,
                kw_per_unit: power / basis,
                original,
                floor,
            }),
        }))
    }

    /// Lowers setpoints under `prefix` until their predicted draw meets the cap.
    fn lower(
        &self,
        prefix: &str,
        cap: f64,
        machines: &mut BTreeMap<AssetPath, Machine>,
        changes: &mut BTreeMap<AssetPath, Change>,
    ) {
        let (total, unknown) = draw(machines, prefix);
        if total <= cap {
            return;
        }
        let goal = cap * self.config.target;
        let mut slacks: Vec<(AssetPath, f64)> = machines
            .iter()
            .filter(|(asset, _)| is_under(asset, prefix))
            .filter_map(|(asset, machine)| match machine {
                Machine::Known(Load {
                    speed: Some(speed), ..
                }) if speed.setpoint > speed.floor => Some((
                    asset.clone(),
                    speed.kw_per_unit * (speed.setpoint - speed.floor),
                )),
                _ => None,
            })
            .collect();
        let need = total - goal;
        let available: f64 = slacks.iter().map(|(_, slack)| slack).sum();
        let reaches = available >= need;
        let mut reason = format!("{prefix} draws {total:.1} kW, over its cap of {cap:.1} kW: ",);
        if reaches {
            reason.push_str(&format!("lowering to {goal:.1} kW"));
        } else {
            reason.push_str(&format!(
                "even with every machine at its floor it would draw {:.1} kW, so every \
                 machine goes to its floor",
                total - available
            ));
        }
        if unknown > 0 {
            reason.push_str(&format!(
                " ({unknown} running machine(s) without a fresh power reading left out)"
            ));
        }
        let level = if reaches {
            cut_level(&mut slacks, need)
        } else {
            0.0
        };

        for (asset, slack) in slacks {
            if slack <= level {
                continue;
            }
            let Some(Machine::Known(Load {
                speed: Some(speed), ..
            })) = machines.get_mut(&asset)
            else {
                continue;
            };
            let cut_kw = if reaches { slack - level } else { slack };
            // Rounded down so the prediction never ends above the goal.
            let to = round_down(speed.setpoint - cut_kw / speed.kw_per_unit).max(speed.floor);
            if to >= speed.setpoint {
                continue;
            }
            let from = speed.setpoint;
            speed.setpoint = to;
            changes
                .entry(asset)
                .and_modify(|change| {
                    change.to = to;
                    change.reason.clone_from(&reason);
                })
                .or_insert_with(|| Change {
                    from,
                    to,
                    reason: reason.clone(),
                });
        }
    }

    /// Raises setpoints the planner lowered, within the room every covering cap has.
    fn raise(
        &self,
        machines: &mut BTreeMap<AssetPath, Machine>,
        changes: &mut BTreeMap<AssetPath, Change>,
    ) {
        // Room (kW) under each cap: none unless comfortably under it with nothing unknown.
        let mut room: Vec<f64> = Vec::with_capacity(self.caps.len());
        let mut draws: Vec<f64> = Vec::with_capacity(self.caps.len());
        for (prefix, cap) in &self.caps {
            let (total, unknown) = draw(machines, prefix);
            let comfortable = unknown == 0 && total < cap * self.config.raise_below;
            room.push(if comfortable {
                cap * self.config.target - total
            } else {
                0.0
            });
            draws.push(total);
        }

        let mut candidates: Vec<(AssetPath, f64)> = machines
            .iter()
            .filter(|(asset, _)| !changes.contains_key(*asset))
            .filter(|(asset, _)| {
                self.memory
                    .get(*asset)
                    .is_some_and(|m| m.original.is_some())
            })
            .filter_map(|(asset, machine)| match machine {
                Machine::Known(Load {
                    speed: Some(speed), ..
                }) if speed.original > speed.setpoint + self.config.min_change => Some((
                    asset.clone(),
                    speed.kw_per_unit * (speed.original - speed.setpoint),
                )),
                _ => None,
            })
            .collect();
        candidates.sort_by(|(a, withheld_a), (b, withheld_b)| {
            withheld_b.total_cmp(withheld_a).then_with(|| a.cmp(b))
        });

        for (asset, withheld) in candidates {
            let covering: Vec<usize> = (0..self.caps.len())
                .filter(|&index| is_under(&asset, &self.caps[index].0))
                .collect();
            let allowed = covering
                .iter()
                .map(|&index| room[index])
                .fold(f64::INFINITY, f64::min);
            let Some(Machine::Known(Load {
                speed: Some(speed), ..
            })) = machines.get_mut(&asset)
            else {
                continue;
            };
            let to = if allowed >= withheld {
                speed.original
            } else {
                round_down(speed.setpoint + allowed.max(0.0) / speed.kw_per_unit)
                    .min(speed.original)
            };
            if to - speed.setpoint < self.config.min_change {
                continue;
            }
            let added = speed.kw_per_unit * (to - speed.setpoint);
            for &index in &covering {
                room[index] -= added;
            }
            let reason = match covering.first() {
                Some(&index) => {
                    let (prefix, cap) = &self.caps[index];
                    format!(
                        "{prefix} draws {:.1} kW, comfortably under its cap of {cap:.1} kW: \
                         raising back toward {:.1}",
                        draws[index], speed.original
                    )
                }
                None => format!("no cap covers it any more: back to {:.1}", speed.original),
            };
            changes.insert(
                asset,
                Change {
                    from: speed.setpoint,
                    to,
                    reason,
                },
            );
            speed.setpoint = to;
        }
    }
}

/// Predicted draw of the running machines under `prefix` (kW), and how many running
/// machines there are unknown.
fn draw(machines: &BTreeMap<AssetPath, Machine>, prefix: &str) -> (f64, usize) {
    machines
        .iter()
        .filter(|(asset, _)| is_under(asset, prefix))
        .fold((0.0, 0), |(total, unknown), (_, machine)| match machine {
            Machine::Idle => (total, unknown),
            Machine::Unknown => (total, unknown + 1),
            Machine::Known(load) => (total + load.predicted(), unknown),
        })
}

/// The level to which the largest slacks are cut so that together they shed `need`:
/// every slack above the level gives down to it. `slacks` must hold at least `need`.
fn cut_level(slacks: &mut [(AssetPath, f64)], need: f64) -> f64 {
    slacks.sort_by(|(a, slack_a), (b, slack_b)| slack_b.total_cmp(slack_a).then_with(|| a.cmp(b)));
    let mut sum = 0.0;
    for (count, (_, slack)) in slacks.iter().enumerate() {
        sum += slack;
        let level = (sum - need) / (count + 1) as f64;
        let next = slacks.get(count + 1).map_or(0.0, |(_, next)| *next);
        if level >= next {
            return level.max(0.0);
        }
    }
    0.0
}

/// `value` rounded down to a tenth.
fn round_down(value: f64) -> f64 {
    (value * 10.0).floor() / 10.0
}

impl Planner for EnergyPlanner {
    fn name(&self) -> &str {
        NAME
    }

    fn interval(&self) -> Duration {
        Duration::from_secs(self.config.interval_secs)
    }

    fn plan(&mut self, fleet: &FleetView, now: Timestamp) -> Vec<PlannedCommand> {
        self.forget(fleet, now);
        let mut machines: BTreeMap<AssetPath, Machine> = fleet
            .rows()
            .iter()
            .filter(|row| {
                self.caps
                    .iter()
                    .any(|(prefix, _)| is_under(&row.asset, prefix))
                    || self.memory.contains_key(&row.asset)
            })
            .filter_map(|row| Some((row.asset.clone(), self.machine(row, now)?)))
            .collect();

        let mut changes = BTreeMap::new();
        for (prefix, cap) in &self.caps {
            self.lower(prefix, *cap, &mut machines, &mut changes);
        }
        self.raise(&mut machines, &mut changes);

        let mut commands = Vec::with_capacity(changes.len());
        for (asset, change) in changes {
            let Some(Machine::Known(Load {
                speed: Some(speed), ..
            })) = machines.get(&asset)
            else {
                continue;
            };
            let restored = change.to >= speed.original - self.config.min_change;
            let memory = self.memory.entry(asset.clone()).or_default();
            memory.original = (!restored).then_some(speed.original);
            memory.commanded = Some((change.to, now));
            commands.push(PlannedCommand {
                asset,
                command: self.config.command.clone(),
                params: vec![(self.config.param.clone(), Value::Float(change.to))],
                valid_for: Duration::from_secs(self.config.valid_for_secs),
                reason: format!(
                    "{}; {} {:.1} -> {:.1} (floor {:.1})",
                    change.reason, self.config.speed_desired, change.from, change.to, speed.floor
                ),
            });
        }
        commands
    }
}

#[cfg(test)]
mod tests {
    use super::super::testing::machine;
    use super::*;

    /// The time the tests plan at: the clock, in whole seconds (windows start on a
    /// second), when the first test asks.
    static T0: std::sync::LazyLock<Timestamp> = std::sync::LazyLock::new(|| {
        Timestamp(doppel_testkit::clock::now_micros() / 1_000_000 * 1_000_000)
    });

    fn at(secs: u64) -> Timestamp {
        T0.plus(Duration::from_secs(secs))
    }

    /// A running machine drawing `power` kW at setpoint `speed`, read at `now`.
    fn running(path: &str, power: f64, speed: f64, now: Timestamp) -> TwinReport {
        machine(path, now)
            .channel("power_kw", power)
            .desired("speed", Value::Float(speed))
            .desired("running", Value::Bool(true))
            .build()
    }

    fn planner(cap: f64) -> EnergyPlanner {
        let config = EnergyConfig {
            caps: BTreeMap::from([("acme/plant-a".to_string(), cap)]),
            ..EnergyConfig::default()
        };
        EnergyPlanner::new(config).unwrap()
    }

    fn setpoint(command: &PlannedCommand) -> f64 {
        assert_eq!(command.command, "set_speed");
        assert_eq!(command.params.len(), 1);
        assert_eq!(command.params[0].0, "rpm");
        command.params[0].1.as_f64()
    }

    /// The fleet as the mirror shows it once `commands` took effect: setpoints changed
    /// and power scaled with them.
    fn after(rows: &[TwinReport], commands: &[PlannedCommand], now: Timestamp) -> Vec<TwinReport> {
        rows.iter()
            .map(|row| {
                let speed = row.desired("speed").unwrap().as_f64();
                let power = row.value("power_kw").unwrap();
                let new_speed = commands
                    .iter()
                    .find(|c| c.asset == row.asset)
                    .map_or(speed, setpoint);
                let mut next = machine(row.asset.as_str(), now)
                    .channel("power_kw", power * new_speed / speed)
                    .desired("speed", Value::Float(new_speed))
                    .build();
                next.run_state = row.run_state;
                next
            })
            .collect()
    }

    /// Predicted draw of plant-a's running machines once `commands` take effect.
    fn predicted(rows: &[TwinReport], commands: &[PlannedCommand]) -> f64 {
        after(rows, commands, *T0)
            .iter()
            .filter(|row| row.run_state == RunState::Running)
            .filter(|row| is_under(&row.asset, "acme/plant-a"))
            .map(|row| row.value("power_kw").unwrap())
            .sum()
    }

    fn plant(now: Timestamp) -> Vec<TwinReport> {
        vec![
            running("acme/plant-a/line-1/press-1", 150.0, 1200.0, now),
            running("acme/plant-a/line-1/press-2", 140.0, 1200.0, now),
            running("acme/plant-a/line-1/press-3", 110.0, 1200.0, now),
            running("acme/plant-a/line-2/pump-1", 150.0, 1480.0, now),
            running("acme/plant-a/line-2/pump-2", 55.0, 500.0, now),
            // Another plant: not capped.
            running("acme/plant-b/line-1/press-1", 900.0, 1200.0, now),
        ]
    }

    #[test]
    fn over_the_cap_lowers_speeds_until_the_prediction_is_under_it() {
        let mut planner = planner(500.0);
        let rows = plant(*T0);
        let commands = planner.plan(&FleetView::new(rows.clone()), *T0);
        // 605 kW over a 500 kW cap: 121.25 kW to shed (down to 475 kW).
        let total = predicted(&rows, &commands);
        assert!(total <= 500.0, "{total}");
        assert!(total >= 474.0, "cut far more than needed: {total}");
        assert!(
            commands
                .iter()
                .all(|c| !c.asset.as_str().contains("plant-b"))
        );
        let speeds: BTreeMap<&str, f64> = commands
            .iter()
            .map(|c| (c.asset.name(), setpoint(c)))
            .collect();
        assert!(speeds.values().all(|speed| *speed >= 400.0));
        // The most slack gives the most; pump-2 (little slack) is left alone.
        assert!(!speeds.contains_key("pump-2"), "{speeds:?}");
        let shed = |name: &str, power: f64, speed: f64| power * (1.0 - speeds[name] / speed);
        assert!(shed("press-1", 150.0, 1200.0) >= shed("press-3", 110.0, 1200.0));
        assert!(
            commands[0].reason.contains("over its cap of 500.0 kW"),
            "{}",
            commands[0].reason
        );
        assert_eq!(commands[0].valid_for, Duration::from_secs(30));
        assert_eq!(planner.lowered().len(), commands.len());

        // The commands are in flight: asking again sends nothing more.
        assert!(
            planner
                .plan(&FleetView::new(rows.clone()), at(5))
                .is_empty()
        );
        // Once applied, the plant sits inside the hysteresis band: nothing to do.
        let applied = after(&rows, &commands, at(40));
        assert!(planner.plan(&FleetView::new(applied), at(40)).is_empty());
    }

    #[test]
    fn lowers_everyone_to_the_floor_when_even_floors_cannot_meet_the_cap() {
        let config = EnergyConfig {
            caps: BTreeMap::from([("acme/plant-a".to_string(), 150.0)]),
            min_speed_fraction: 0.5,
            ..EnergyConfig::default()
        };
        let mut planner = EnergyPlanner::new(config).unwrap();
        let rows = vec![
            running("acme/plant-a/line-1/press-1", 120.0, 1200.0, *T0),
            running("acme/plant-a/line-1/press-2", 110.0, 1000.0, *T0),
            running("acme/plant-a/line-1/press-3", 40.0, 450.0, *T0),
            running("acme/plant-a/line-1/press-4", 30.0, 300.0, *T0),
        ];
        let commands = planner.plan(&FleetView::new(rows.clone()), *T0);
        let speeds: Vec<(&str, f64)> = commands
            .iter()
            .map(|c| (c.asset.name(), setpoint(c)))
            .collect();
        // Floors: half the speed before lowering, and never under 400.
        assert_eq!(
            speeds,
            [("press-1", 600.0), ("press-2", 500.0), ("press-3", 400.0)]
        );
        for command in &commands {
            assert!(
                command.reason.contains("every machine goes to its floor"),
                "{}",
                command.reason
            );
        }
        // Nothing more to take: the next run (after settling) sends nothing.
        let applied = after(&rows, &commands, at(40));
        assert!(planner.plan(&FleetView::new(applied), at(40)).is_empty());
    }

    #[test]
    fn never_commands_stopped_tripped_or_stale_machines() {
        let mut planner = planner(500.0);
        let idle = |path: &str, run_state: RunState| {
            machine(path, *T0)
                .channel("power_kw", 200.0)
                .desired("speed", Value::Float(1200.0))
                .run_state(run_state)
                .build()
        };
        let mut rows = vec![
            running("acme/plant-a/line-1/press-1", 200.0, 1200.0, *T0),
            idle("acme/plant-a/line-1/press-2", RunState::Stopped),
            idle("acme/plant-a/line-1/press-3", RunState::Tripped),
        ];
        // A stale reading, a minute old: left out of the sum and never commanded.
        rows.push(
            machine("acme/plant-a/line-2/pump-1", *T0)
                .channel_at("power_kw", 300.0, T0.minus(Duration::from_secs(60)))
                .desired("speed", Value::Float(1480.0))
                .build(),
        );
        // Under the cap as far as anyone knows: nothing to do.
        assert!(planner.plan(&FleetView::new(rows.clone()), *T0).is_empty());

        // Over the cap: only running machines with a fresh reading are lowered.
        rows.push(running("acme/plant-a/line-2/pump-2", 400.0, 1480.0, *T0));
        rows[0] = running("acme/plant-a/line-1/press-1", 350.0, 1200.0, *T0);
        let commands = planner.plan(&FleetView::new(rows.clone()), *T0);
        let names: Vec<&str> = commands.iter().map(|c| c.asset.name()).collect();
        assert_eq!(names, ["press-1", "pump-2"]);
        assert!(
            commands[0]
                .reason
                .contains("1 running machine(s) without a fresh power reading"),
            "{}",
            commands[0].reason
        );
        let fresh = [rows[0].clone(), rows[4].clone()];
        assert!(predicted(&fresh, &commands) <= 500.0);
    }

    #[test]
    fn raises_back_with_hysteresis_never_above_the_original_speed() {
        let mut planner = planner(500.0);
        let rows = plant(*T0);
        let lowered = planner.plan(&FleetView::new(rows.clone()), *T0);
        assert!(!lowered.is_empty());
        let originals: BTreeMap<AssetPath, f64> = rows
            .iter()
            .map(|row| (row.asset.clone(), row.desired("speed").unwrap().as_f64()))
            .collect();

        // press-3 stops: the plant draws ~377 kW, under 90 % of its cap. A stale reading
        // holds raising off.
        let mut rows = after(&rows, &lowered, at(40));
        rows[2].run_state = RunState::Stopped;
        let mut stale = rows.clone();
        stale.push(
            machine("acme/plant-a/line-3/press-9", *T0)
                .channel_at("power_kw", 10.0, *T0)
                .build(),
        );
        assert!(planner.plan(&FleetView::new(stale), at(40)).is_empty());

        // Without it, lowered machines are raised back as far as the room allows.
        let raised = planner.plan(&FleetView::new(rows.clone()), at(40));
        assert!(!raised.is_empty());
        for command in &raised {
            assert!(
                setpoint(command) <= originals[&command.asset],
                "{command:?}"
            );
            assert!(
                command.reason.contains("raising back"),
                "{}",
                command.reason
            );
            assert_ne!(command.asset.name(), "press-3", "stopped");
        }
        assert!(
            raised.iter().any(|c| setpoint(c) < originals[&c.asset]),
            "not all the way back: {raised:?}"
        );
        let total = predicted(&rows, &raised);
        assert!(total <= 500.0 * 0.95 + 0.01, "{total}");

        // Everything else stops but press-2: it goes back exactly to where it was.
        let mut rows = after(&rows, &raised, at(80));
        for row in rows.iter_mut().filter(|row| row.asset.name() != "press-2") {
            row.run_state = RunState::Stopped;
        }
        let restored = planner.plan(&FleetView::new(rows.clone()), at(80));
        let names: Vec<&str> = restored.iter().map(|c| c.asset.name()).collect();
        assert_eq!(names, ["press-2"]);
        assert_eq!(setpoint(&restored[0]), 1200.0);
        let rows = after(&rows, &restored, at(120));
        assert!(planner.plan(&FleetView::new(rows), at(120)).is_empty());
        let still_lowered: Vec<String> = planner
            .lowered()
            .iter()
            .map(|(asset, _)| asset.name().to_string())
            .collect();
        assert_eq!(still_lowered, ["press-3"]);
    }

    #[test]
    fn a_setpoint_raised_past_its_original_by_someone_else_is_forgotten() {
        let mut planner = planner(500.0);
        let rows = plant(*T0);
        let lowered = planner.plan(&FleetView::new(rows.clone()), *T0);
        let mut rows = after(&rows, &lowered, at(40));
        let first = lowered[0].asset.clone();
        let row = rows.iter_mut().find(|row| row.asset == first).unwrap();
        row.desired[0].1.value = Value::Float(1500.0);
        planner.plan(&FleetView::new(rows), at(40));
        assert!(planner.lowered().iter().all(|(asset, _)| *asset != first));
    }

    #[test]
    fn cut_level_takes_from_the_largest_slacks_first() {
        let a = AssetPath::parse("a").unwrap();
        let b = AssetPath::parse("b").unwrap();
        let c = AssetPath::parse("c").unwrap();
        let mut slacks = vec![(a.clone(), 100.0), (b.clone(), 40.0), (c.clone(), 10.0)];
        // 30 kW: all from a (down to 70).
        assert_eq!(cut_level(&mut slacks, 30.0), 70.0);
        // 100 kW: a and b down to 20 each.
        assert_eq!(cut_level(&mut slacks, 100.0), 20.0);
        // All of it.
        assert_eq!(cut_level(&mut slacks, 150.0), 0.0);
    }

    #[test]
    fn reads_its_table_and_refuses_bad_values() {
        let table: toml::Table = toml::from_str(
            r#"
            caps = { "acme/plant-a" = 500.0, "acme/plant-b" = 250.0 }
            min_speed = 300.0
            param = "speed_rpm"
            "#,
        )
        .unwrap();
        let planner = EnergyPlanner::from_table(&table).unwrap();
        assert_eq!(planner.config().caps.len(), 2);
        assert_eq!(planner.config().min_speed, 300.0);
        assert_eq!(planner.config().command, "set_speed");
        assert_eq!(planner.interval(), Duration::from_secs(10));

        for bad in [
            "cap = { \"acme/plant-a\" = 500.0 }",
            "caps = { \"acme/plant-a\" = -5.0 }",
            "caps = { \"acme plant\" = 5.0 }",
            "raise_below = 0.97",
            "target = 1.2",
        ] {
            let table: toml::Table = toml::from_str(bad).unwrap();
            assert!(EnergyPlanner::from_table(&table).is_err(), "{bad}");
        }
    }
}
