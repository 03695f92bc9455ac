//! Fleet planners: logic that reads the whole fleet's mirrors and proposes commands.
//!
//! A planner runs on one cloud node at a time. Every [`Planner::interval`] the hosting
//! node hands it a [`FleetView`] (the mirror rows, sorted by asset path) and the current
//! time; the planner answers with [`PlannedCommand`]s. It only decides: the hosting node
//! routes each command to the edge node that owns the twin, with a deadline of
//! `now + valid_for`, and there the twin's governors review it like any other command
//! (they may clamp or deny it) and the audit log records the planner's
//! [`name`](Planner::name) as its origin.
//!
//! Planners are pure logic: no I/O, no clocks, no randomness. Given the same sequence
//! of fleets and times they propose the same commands.
//!
//! Two planners ship with Doppel, each configured by a table of the node config file:
//!
//! - [`MaintenanceScheduler`] (`[cluster.planners.maintenance]`): staggers maintenance
//!   windows of machines whose remaining useful life runs low, never two at once on a line.
//! - [`EnergyPlanner`] (`[cluster.planners.energy]`): keeps each plant's power draw
//!   under a cap by lowering speed setpoints, and raises them back once there is room.

pub mod energy;
mod host;
pub mod maintenance;

use std::collections::BTreeMap;
use std::time::Duration;

use doppel_runtime::twin::TwinReport;
use doppel_runtime::{AssetPath, Timestamp, Value};

use crate::config::PlannerSettings;
use crate::error::ClusterError;

pub use energy::{EnergyConfig, EnergyPlanner};
pub(crate) use host::PlannerHost;
pub use maintenance::{MaintenanceConfig, MaintenanceScheduler};

/// The fleet as a planner sees it: mirror rows, sorted by asset path.
#[derive(Debug, Clone, Default)]
pub struct FleetView {
    rows: Vec<TwinReport>,
}

impl FleetView {
    /// A view of `rows`. Rows are sorted by asset path; of two rows for one asset, the
    /// one with the higher version is kept.
    pub fn new(mut rows: Vec<TwinReport>) -> Self {
        rows.sort_by(|a, b| a.asset.cmp(&b.asset).then(b.version.cmp(&a.version)));
        rows.dedup_by(|later, kept| later.asset == kept.asset);
        Self { rows }
    }

    /// All rows, sorted by asset path.
    pub fn rows(&self) -> &[TwinReport] {
        &self.rows
    }

    /// The row of one asset.
    pub fn get(&self, asset: &AssetPath) -> Option<&TwinReport> {
        self.rows
            .binary_search_by(|row| row.asset.cmp(asset))
            .ok()
            .map(|index| &self.rows[index])
    }

    /// The rows of `prefix` and everything below it, segment-wise: `acme/plant-a`
    /// covers `acme/plant-a/line-1/press-3` but not `acme/plant-ab/…`. An empty prefix
    /// covers the whole fleet.
    pub fn under<'a>(&'a self, prefix: &str) -> impl Iterator<Item = &'a TwinReport> {
        let prefix = prefix.trim_end_matches('/');
        // Every path that starts with `prefix` as a string sorts in one contiguous run;
        // within it, `acme/plant-a-2` sorts between `acme/plant-a` and its children.
        let first = self.rows.partition_point(|row| row.asset.as_str() < prefix);
        self.rows[first..]
            .iter()
            .take_while(move |row| row.asset.as_str().starts_with(prefix))
            .filter(move |row| is_under(&row.asset, prefix))
    }

    /// The rows grouped by parent path (for a machine, its line). Assets without a
    /// parent are grouped under the empty string.
    pub fn lines(&self) -> BTreeMap<String, Vec<&TwinReport>> {
        let mut lines: BTreeMap<String, Vec<&TwinReport>> = BTreeMap::new();
        for row in &self.rows {
            lines.entry(line_of(&row.asset)).or_default().push(row);
        }
        lines
    }
}

/// True when `asset` equals `prefix` or lies below it; an empty prefix covers everything.
fn is_under(asset: &AssetPath, prefix: &str) -> bool {
    let prefix = prefix.trim_end_matches('/');
    if prefix.is_empty() {
        return true;
    }
    match asset.as_str().strip_prefix(prefix) {
        Some(rest) => rest.is_empty() || rest.starts_with('/'),
        None => false,
    }
}

/// The group an asset belongs to in [`FleetView::lines`]: its parent path.
fn line_of(asset: &AssetPath) -> String {
    asset
        .parent()
        .map(|parent| parent.as_str().to_string())
        .unwrap_or_default()
}

/// A command a planner wants sent.
#[derive(Debug, Clone, PartialEq)]
pub struct PlannedCommand {
    /// The twin to command.
    pub asset: AssetPath,
    /// The command's name, as declared by the twin's type.
    pub command: String,
    /// Its parameters.
    pub params: Vec<(String, Value)>,
    /// How long the command stays valid: routed with a deadline of now + this; if it
    /// reaches the edge later (a partition), it is rejected, never actuated late.
    pub valid_for: Duration,
    /// Why (for logs and the audit trail).
    pub reason: String,
}

/// A fleet planner: reads the fleet, proposes commands. Runs on one cloud node at a time.
pub trait Planner: Send {
    /// The planner's principal in the audit log, e.g. `maintenance-scheduler`.
    fn name(&self) -> &str;

    /// How often [`plan`](Planner::plan) runs.
    fn interval(&self) -> Duration;

    /// Reads the fleet at `now` and proposes commands.
    fn plan(&mut self, fleet: &FleetView, now: Timestamp) -> Vec<PlannedCommand>;
}

/// The planners configured in `[cluster.planners]`, in a fixed order (maintenance, then
/// energy). An error names the table and what is wrong with it.
pub fn configured(settings: &PlannerSettings) -> Result<Vec<Box<dyn Planner>>, ClusterError> {
    let refused = |table: &'static str| {
        move |source: PlannerConfigError| ClusterError::Planner { table, source }
    };
    let mut planners: Vec<Box<dyn Planner>> = Vec::new();
    if let Some(table) = &settings.maintenance {
        let scheduler = MaintenanceScheduler::from_table(table)
            .map_err(refused("[cluster.planners.maintenance]"))?;
        planners.push(Box::new(scheduler));
    }
    if let Some(table) = &settings.energy {
        let planner =
            EnergyPlanner::from_table(table).map_err(refused("[cluster.planners.energy]"))?;
        planners.push(Box::new(planner));
    }
    Ok(planners)
}

/// Why a planner's config table was refused.
#[derive(Debug, Clone, thiserror::Error)]
pub enum PlannerConfigError {
    /// The table does not have the planner's shape (an unknown key, a wrong type).
    #[error("{0}")]
    Parse(#[source] toml::de::Error),
    /// A value is out of its range or does not fit with another.
    #[error("{field} {problem}")]
    Invalid {
        /// The key (for a map entry, `key.entry`).
        field: String,
        /// What is wrong with it.
        problem: String,
    },
}

impl PlannerConfigError {
    fn invalid(field: impl Into<String>, problem: impl Into<String>) -> Self {
        Self::Invalid {
            field: field.into(),
            problem: problem.into(),
        }
    }
}

/// `at` plus a (finite, possibly negative) number of hours, saturating.
fn plus_hours(at: Timestamp, hours: f64) -> Timestamp {
    // `as` saturates, and a saturated offset still saturates when added.
    Timestamp(at.0.saturating_add((hours * 3_600_000_000.0) as i64))
}

/// Hours from `earlier` to `later`.
fn hours_between(earlier: Timestamp, later: Timestamp) -> f64 {
    later.secs_since(earlier) / 3600.0
}

/// A short UTC time for reasons: `2026-11-21T10:00:00Z`.
fn format_time(at: Timestamp) -> String {
    let full = at.to_rfc3339();
    match full.split_once('.') {
        Some((seconds, _)) => format!("{seconds}Z"),
        None => full,
    }
}

#[cfg(test)]
pub(crate) mod testing {
    //! Mirror rows built by hand.

    use doppel_runtime::twin::{DerivedValue, DesiredValue, ReportedValue, RunState, TwinReport};
    use doppel_runtime::{AssetPath, ChannelId, Quality, Sample, SourceId, Timestamp, Value};

    /// A machine's mirror row under construction.
    pub(crate) struct Row(TwinReport);

    /// A running machine with no values, last changed at `at`.
    pub(crate) fn machine(path: &str, at: Timestamp) -> Row {
        Row(TwinReport {
            asset: AssetPath::parse(path).unwrap(),
            twin_type: "press".to_string(),
            version: 1,
            run_state: RunState::Running,
            reported: Vec::new(),
            desired: Vec::new(),
            derived: Vec::new(),
            alarms: Vec::new(),
            trips: Vec::new(),
            health: 1.0,
            models: Vec::new(),
            updated_at: at,
        })
    }

    impl Row {
        /// A reported value received at the row's time.
        pub(crate) fn channel(self, name: &str, value: f64) -> Self {
            let at = self.0.updated_at;
            self.channel_at(name, value, at)
        }

        /// A reported value received at `at`.
        pub(crate) fn channel_at(mut self, name: &str, value: f64, at: Timestamp) -> Self {
            let id = ChannelId(self.0.reported.len() as u16);
            self.0.reported.push(ReportedValue {
                channel: name.to_string(),
                unit: String::new(),
                sample: Some(Sample {
                    channel: id,
                    value,
                    source_time: at,
                    receive_time: at,
                    quality: Quality::Good,
                    source: SourceId(0),
                    epoch: 0,
                    seq: 0,
                    stamped: true,
                }),
                condition: None,
            });
            self
        }

        /// A desired value.
        pub(crate) fn desired(mut self, name: &str, value: Value) -> Self {
            let set_at = self.0.updated_at;
            self.0
                .desired
                .retain(|(existing, _)| existing.as_str() != name);
            self.0.desired.push((
                name.to_string(),
                DesiredValue {
                    set_at,
                    ..DesiredValue::initial(value)
                },
            ));
            self
        }

        /// A derived value written at the row's time, with full confidence.
        pub(crate) fn derived(mut self, name: &str, value: f64) -> Self {
            self.0.derived.push(DerivedValue {
                value: Some(value),
                confidence: 1.0,
                at: self.0.updated_at,
                ..DerivedValue::empty(name, "degradation")
            });
            self
        }

        /// The run state.
        pub(crate) fn run_state(mut self, run_state: RunState) -> Self {
            self.0.run_state = run_state;
            self
        }

        /// The finished row.
        pub(crate) fn build(self) -> TwinReport {
            self.0
        }
    }
}

#[cfg(test)]
mod tests {
    use super::testing::machine;
    use super::*;

    fn paths<'a>(rows: impl Iterator<Item = &'a TwinReport>) -> Vec<&'a str> {
        rows.map(|row| row.asset.as_str()).collect()
    }

    #[test]
    fn under_is_segment_wise_and_lines_group_by_parent() {
        let now = Timestamp(0);
        let fleet = FleetView::new(
            [
                "acme/plant-a/line-1/press-2",
                "acme/plant-ab/line-1/press-1",
                "acme/plant-a/line-1/press-1",
                "acme/plant-a-2/line-1/pump-1",
                "acme/plant-a/line-2/pump-1",
                "other/plant-a/line-1/press-1",
            ]
            .iter()
            .map(|path| machine(path, now).build())
            .collect(),
        );
        assert_eq!(
            paths(fleet.under("acme/plant-a")),
            [
                "acme/plant-a/line-1/press-1",
                "acme/plant-a/line-1/press-2",
                "acme/plant-a/line-2/pump-1",
            ]
        );
        assert_eq!(
            paths(fleet.under("acme/plant-a/line-1/press-1")),
            ["acme/plant-a/line-1/press-1"]
        );
        assert_eq!(fleet.under("acme/plant").count(), 0);
        assert_eq!(fleet.under("").count(), 6);
        assert_eq!(fleet.under("acme/").count(), 5);

        let lines = fleet.lines();
        assert_eq!(lines.len(), 5);
        assert_eq!(paths(lines["acme/plant-a/line-1"].iter().copied()).len(), 2);
        let press = AssetPath::parse("acme/plant-a/line-1/press-2").unwrap();
        assert_eq!(fleet.get(&press).unwrap().asset, press);
    }

    #[test]
    fn keeps_the_newest_row_of_an_asset() {
        let now = Timestamp(0);
        let mut old = machine("acme/plant-a/line-1/press-1", now).build();
        let mut new = old.clone();
        old.version = 3;
        new.version = 7;
        let fleet = FleetView::new(vec![old, new]);
        assert_eq!(fleet.rows().len(), 1);
        assert_eq!(fleet.rows()[0].version, 7);
    }

    #[test]
    fn configured_reads_both_tables() {
        let settings: PlannerSettings = toml::from_str(
            r#"
            [maintenance]
            threshold_hours = 48.0
            [energy]
            caps = { "acme/plant-a" = 500.0 }
            "#,
        )
        .unwrap();
        let planners = configured(&settings).unwrap();
        let names: Vec<&str> = planners.iter().map(|planner| planner.name()).collect();
        assert_eq!(names, ["maintenance-scheduler", "energy-planner"]);

        let settings: PlannerSettings = toml::from_str("[energy]\ncapz = 1").unwrap();
        let error = configured(&settings).err().unwrap();
        let ClusterError::Planner { table, source } = &error else {
            panic!("not a planner error: {error}");
        };
        assert_eq!(*table, "[cluster.planners.energy]");
        assert!(matches!(source, PlannerConfigError::Parse(_)), "{source:?}");
        assert!(error.to_string().contains("capz"), "{error}");
    }
}
