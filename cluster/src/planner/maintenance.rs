//! The maintenance scheduler: maintenance windows for machines whose remaining useful
//! life runs low, never two at once on one line.
//!
//! ```toml
//! [cluster.planners.maintenance]
//! scope = ["acme"]                 # asset path prefixes; empty: the whole fleet
//! rul = "rul_hours"                # the derived value with remaining useful life, in hours
//! threshold_hours = 72.0           # below this a machine needs maintenance
//! release_margin = 0.1             # scheduled machines leave above threshold × 1.1
//! min_confidence = 0.5             # estimates less confident than this are not acted on
//! window_minutes = 240             # length of a maintenance window
//! lead_minutes = 0                 # a new window starts no earlier than now + this
//! worse_fraction = 0.25            # move a window when the life it was planned for shrank this much
//! command = "schedule_maintenance"
//! at_param = "at"                  # window start, Unix seconds (integer)
//! duration_param = "duration_min"  # window length, minutes (integer)
//! cancel_command = "cancel_maintenance"  # optional: sent when a future window is dropped
//! interval_secs = 60
//! valid_for_secs = 600
//! ```
//!
//! Each run reads every machine's remaining useful life (RUL) and turns it into the time
//! it runs out (`at` of the derived value + RUL), which stays put while the trend holds.
//! Machines below the threshold need a window. On each line (the machine's parent path)
//! windows are placed earliest-deadline first, each in the earliest free slot from
//! `now + lead` on, so they never overlap and the most urgent machine goes first. A
//! window that cannot start before the RUL runs out is still placed as early as
//! possible, and its command says so.
//!
//! The schedule is kept between runs. A scheduled machine keeps its window unless the
//! window has not started and the machine's life got much worse (its run-out time moved
//! earlier by more than `worse_fraction` of the life left when the window was planned,
//! or the window now starts after it). A window that has not started may also move when
//! a more urgent machine on its line could otherwise not be served in time: the line is
//! then replanned earliest-deadline first, and the replan is adopted only if fewer
//! windows (or by less) miss their run-out time. A window is dropped once it has passed,
//! when its machine leaves the fleet, or when the machine's RUL recovers above the
//! threshold by `release_margin` (after maintenance). Commands go out only for windows
//! that are new or changed.

use std::collections::BTreeMap;
use std::time::Duration;

use doppel_runtime::twin::TwinReport;
use doppel_runtime::{AssetPath, Timestamp, Value};
use serde::Deserialize;

use super::{
    FleetView, PlannedCommand, Planner, PlannerConfigError, format_time, hours_between, is_under,
    line_of, plus_hours,
};

/// The scheduler's principal in the audit log.
const NAME: &str = "maintenance-scheduler";

/// The `[cluster.planners.maintenance]` table.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MaintenanceConfig {
    /// Asset path prefixes (segment-wise) whose machines are scheduled; empty schedules
    /// the whole fleet. Default: empty.
    pub scope: Vec<String>,
    /// The derived value holding remaining useful life, in hours. Default `rul_hours`.
    pub rul: String,
    /// A machine whose RUL is below this many hours needs maintenance. Default 72.
    pub threshold_hours: f64,
    /// A scheduled machine leaves the schedule once its RUL is above
    /// `threshold_hours × (1 + release_margin)`, so a noisy estimate near the threshold
    /// does not schedule and unschedule in turn. Default 0.1.
    pub release_margin: f64,
    /// RUL estimates whose confidence is below this are not acted on. Default 0.5.
    pub min_confidence: f64,
    /// Length of a maintenance window, in minutes. Default 240.
    pub window_minutes: u64,
    /// A new window starts no earlier than this many minutes from now. Default 0.
    pub lead_minutes: u64,
    /// A window that has not started moves when the machine's run-out time moved earlier
    /// by more than this fraction of the life it had left when the window was planned.
    /// Default 0.25.
    pub worse_fraction: f64,
    /// The command that schedules a window. Default `schedule_maintenance`.
    pub command: String,
    /// The integer parameter with the window's start, in Unix seconds. Default `at`.
    pub at_param: String,
    /// The integer parameter with the window's length, in minutes. Default
    /// `duration_min`.
    pub duration_param: String,
    /// A command without parameters sent when a window that has not started is dropped
    /// because the machine recovered; none by default.
    pub cancel_command: Option<String>,
    /// How often the scheduler runs, in seconds. Default 60.
    pub interval_secs: u64,
    /// How long its commands stay valid, in seconds. Default 600.
    pub valid_for_secs: u64,
}

impl Default for MaintenanceConfig {
    fn default() -> Self {
        Self {
            scope: Vec::new(),
            rul: "rul_hours".to_string(),
            threshold_hours: 72.0,
            release_margin: 0.1,
            min_confidence: 0.5,
            window_minutes: 240,
            lead_minutes: 0,
            worse_fraction: 0.25,
            command: "schedule_maintenance".to_string(),
            at_param: "at".to_string(),
            duration_param: "duration_min".to_string(),
            cancel_command: None,
            interval_secs: 60,
            valid_for_secs: 600,
        }
    }
}

impl MaintenanceConfig {
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
        if !(self.threshold_hours.is_finite() && self.threshold_hours > 0.0) {
            return Err(PlannerConfigError::invalid(
                "threshold_hours",
                format!("must be positive, not {}", self.threshold_hours),
            ));
        }
        if !(self.release_margin.is_finite() && self.release_margin >= 0.0) {
            return Err(PlannerConfigError::invalid(
                "release_margin",
                format!("must be 0 or more, not {}", self.release_margin),
            ));
        }
        if !(0.0..=1.0).contains(&self.min_confidence) {
            return Err(PlannerConfigError::invalid(
                "min_confidence",
                format!("must lie in 0..=1, not {}", self.min_confidence),
            ));
        }
        if !(self.worse_fraction > 0.0 && self.worse_fraction <= 1.0) {
            return Err(PlannerConfigError::invalid(
                "worse_fraction",
                format!("must lie in (0, 1], not {}", self.worse_fraction),
            ));
        }
        for (field, value) in [
            ("window_minutes", self.window_minutes),
            ("interval_secs", self.interval_secs),
            ("valid_for_secs", self.valid_for_secs),
        ] {
            if value == 0 {
                return Err(PlannerConfigError::invalid(field, "must be positive"));
            }
        }
        let cancel = self.cancel_command.as_deref().unwrap_or("-");
        for (field, value) in [
            ("rul", self.rul.as_str()),
            ("command", &self.command),
            ("at_param", &self.at_param),
            ("duration_param", &self.duration_param),
            ("cancel_command", cancel),
        ] {
            if value.is_empty() {
                return Err(PlannerConfigError::invalid(field, "must not be empty"));
            }
        }
        if self.at_param == self.duration_param {
            return Err(PlannerConfigError::invalid(
                "duration_param",
                "must differ from at_param",
            ));
        }
        Ok(())
    }

    fn window(&self) -> Duration {
        Duration::from_secs(self.window_minutes.saturating_mul(60))
    }

    fn in_scope(&self, asset: &AssetPath) -> bool {
        self.scope.is_empty() || self.scope.iter().any(|prefix| is_under(asset, prefix))
    }
}

/// A scheduled maintenance window.
#[derive(Debug, Clone, PartialEq)]
struct Window {
    /// The machine's line (parent path).
    line: String,
    start: Timestamp,
    end: Timestamp,
    /// When the machine's RUL runs out, as estimated when the window was planned.
    deadline: Timestamp,
    /// When the window was planned.
    planned_at: Timestamp,
}

/// What a machine's mirror row says about its remaining life.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Life {
    /// Below the threshold: needs a window before `runs_out`.
    Low { runs_out: Timestamp },
    /// Between the threshold and the release level: no change either way.
    Near,
    /// Above the release level.
    Healthy { rul_hours: f64 },
    /// No usable estimate (none yet, or not confident enough).
    Unknown,
}

/// Why a window is placed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Cause {
    /// The machine was not scheduled.
    New,
    /// Its life got much worse than the window was planned for.
    Worse,
    /// It was scheduled; its window may move to make room for a more urgent machine.
    Kept,
}

/// A window to place on a line.
#[derive(Debug, Clone)]
struct Job {
    asset: AssetPath,
    deadline: Timestamp,
    planned_at: Timestamp,
    cause: Cause,
}

/// Plans maintenance windows so that no line has two machines in maintenance at once.
///
/// See the [module documentation](self) for the rules.
pub struct MaintenanceScheduler {
    config: MaintenanceConfig,
    schedule: BTreeMap<AssetPath, Window>,
}

impl MaintenanceScheduler {
    /// A scheduler with an empty schedule; fails when the config is invalid.
    pub fn new(config: MaintenanceConfig) -> Result<Self, PlannerConfigError> {
        config.validate()?;
        Ok(Self {
            config,
            schedule: BTreeMap::new(),
        })
    }

    /// A scheduler configured by its `[cluster.planners.maintenance]` table.
    pub fn from_table(table: &toml::Table) -> Result<Self, PlannerConfigError> {
        Self::new(MaintenanceConfig::from_table(table)?)
    }

    /// Its config.
    pub fn config(&self) -> &MaintenanceConfig {
        &self.config
    }

    /// The current schedule: (machine, window start, window end), by start time.
    pub fn schedule(&self) -> Vec<(AssetPath, Timestamp, Timestamp)> {
        let mut schedule: Vec<_> = self
            .schedule
            .iter()
            .map(|(asset, window)| (asset.clone(), window.start, window.end))
            .collect();
        schedule.sort_by(|a, b| (a.1, &a.0).cmp(&(b.1, &b.0)));
        schedule
    }

    fn life(&self, row: &TwinReport) -> Life {
        let Some(derived) = row.derived.iter().find(|d| *d.name == *self.config.rul) else {
            return Life::Unknown;
        };
        let Some(rul_hours) = derived.value else {
            return Life::Unknown;
        };
        if rul_hours.is_nan() || rul_hours < 0.0 || derived.confidence < self.config.min_confidence
        {
            return Life::Unknown;
        }
        let release = self.config.threshold_hours * (1.0 + self.config.release_margin);
        if rul_hours > release {
            Life::Healthy { rul_hours }
        } else if rul_hours >= self.config.threshold_hours {
            Life::Near
        } else {
            Life::Low {
                runs_out: plus_hours(derived.at, rul_hours),
            }
        }
    }

    /// True when a machine whose life now runs out at `runs_out` should leave `window`
    /// for a new one.
    fn got_much_worse(&self, window: &Window, runs_out: Timestamp) -> bool {
        let planned_life = window.deadline.secs_since(window.planned_at).max(0.0);
        let shrink = window.deadline.secs_since(runs_out);
        let was_on_time = window.start < window.deadline;
        shrink > self.config.worse_fraction * planned_life
            || (was_on_time && window.start >= runs_out)
    }

    fn schedule_command(
        &self,
        asset: &AssetPath,
        window: &Window,
        reason: String,
    ) -> PlannedCommand {
        PlannedCommand {
            asset: asset.clone(),
            command: self.config.command.clone(),
            params: vec![
                (
                    self.config.at_param.clone(),
                    Value::Int(window.start.0.div_euclid(1_000_000)),
                ),
                (
                    self.config.duration_param.clone(),
                    Value::Int(self.config.window_minutes.min(i64::MAX as u64) as i64),
                ),
            ],
            valid_for: Duration::from_secs(self.config.valid_for_secs),
            reason,
        }
    }

    /// The command cancelling a window no longer needed, if one is configured.
    fn cancel_command(
        &self,
        asset: &AssetPath,
        window: &Window,
        rul_hours: f64,
    ) -> Option<PlannedCommand> {
        Some(PlannedCommand {
            asset: asset.clone(),
            command: self.config.cancel_command.clone()?,
            params: Vec::new(),
            valid_for: Duration::from_secs(self.config.valid_for_secs),
            reason: format!(
                "rul recovered to {rul_hours:.1} h: maintenance window at {} no longer needed",
                format_time(window.start)
            ),
        })
    }

    fn reason(&self, window: &Window, cause: Cause, now: Timestamp) -> String {
        let life = format!(
            "rul runs out at {} (in {:.1} h)",
            format_time(window.deadline),
            hours_between(now, window.deadline).max(0.0)
        );
        let slot = format!(
            "maintenance window at {} for {} min on line {}",
            format_time(window.start),
            self.config.window_minutes,
            window.line
        );
        let mut reason = match cause {
            Cause::New => String::new(),
            Cause::Worse => "rul got worse; ".to_string(),
            Cause::Kept => "moved to make room for a more urgent machine; ".to_string(),
        };
        if window.start < window.deadline {
            reason.push_str(&format!("{life}: {slot}"));
        } else {
            reason.push_str(&format!(
                "{life}, before any free slot on its line: {slot}, the earliest possible"
            ));
        }
        reason
    }
}

/// `at` rounded up to a whole second.
fn ceil_to_second(at: Timestamp) -> Timestamp {
    let seconds = at.0.div_euclid(1_000_000) + i64::from(at.0.rem_euclid(1_000_000) != 0);
    Timestamp(seconds.saturating_mul(1_000_000))
}

/// The earliest start from `earliest` on where a window of `length` overlaps none of
/// `busy` (sorted by start).
fn earliest_gap(
    busy: &[(Timestamp, Timestamp)],
    earliest: Timestamp,
    length: Duration,
) -> Timestamp {
    let mut start = earliest;
    for &(busy_start, busy_end) in busy {
        if start.plus(length) <= busy_start {
            break;
        }
        if busy_end > start {
            start = busy_end;
        }
    }
    start
}

/// Places `jobs` earliest-deadline first around the `busy` windows; returns each job's
/// start, in the order of `jobs`.
fn place(
    busy: &[(Timestamp, Timestamp)],
    jobs: &[Job],
    earliest: Timestamp,
    length: Duration,
) -> Vec<Timestamp> {
    let mut busy = busy.to_vec();
    busy.sort();
    let mut order: Vec<usize> = (0..jobs.len()).collect();
    order.sort_by(|&a, &b| {
        (jobs[a].deadline, &jobs[a].asset).cmp(&(jobs[b].deadline, &jobs[b].asset))
    });
    let mut starts = vec![earliest; jobs.len()];
    for index in order {
        let start = earliest_gap(&busy, earliest, length);
        starts[index] = start;
        let position = busy.partition_point(|&(busy_start, _)| busy_start <= start);
        busy.insert(position, (start, start.plus(length)));
    }
    starts
}

/// The windows of one line after a run.
struct LinePlan {
    /// Windows that stay where they were.
    stays: Vec<(AssetPath, Window)>,
    /// Jobs placed in this run, with their starts.
    placed: Vec<(Job, Timestamp)>,
}

/// Places a line's `jobs` around its `kept` windows. Kept windows that have not started move only when that
/// leaves fewer windows missing their run-out time, or misses by less.
fn place_line(
    kept: Vec<(AssetPath, Window)>,
    jobs: Vec<Job>,
    now: Timestamp,
    earliest: Timestamp,
    length: Duration,
) -> LinePlan {
    let busy: Vec<_> = kept.iter().map(|(_, w)| (w.start, w.end)).collect();
    let starts = place(&busy, &jobs, earliest, length);
    let (in_progress, movable): (Vec<_>, Vec<_>) =
        kept.iter().partition(|(_, window)| window.start <= now);
    if lateness(&jobs, &starts).0 == 0 || movable.is_empty() {
        return LinePlan {
            stays: kept,
            placed: jobs.into_iter().zip(starts).collect(),
        };
    }

    let mut all_jobs = jobs.clone();
    all_jobs.extend(movable.iter().map(|(asset, window)| Job {
        asset: asset.clone(),
        deadline: window.deadline,
        planned_at: window.planned_at,
        cause: Cause::Kept,
    }));
    let mut current = starts.clone();
    current.extend(movable.iter().map(|(_, window)| window.start));
    let busy: Vec<_> = in_progress.iter().map(|(_, w)| (w.start, w.end)).collect();
    let replanned = place(&busy, &all_jobs, earliest, length);
    if lateness(&all_jobs, &replanned) < lateness(&all_jobs, &current) {
        LinePlan {
            stays: in_progress.into_iter().cloned().collect(),
            placed: all_jobs.into_iter().zip(replanned).collect(),
        }
    } else {
        LinePlan {
            stays: kept,
            placed: jobs.into_iter().zip(starts).collect(),
        }
    }
}

/// How badly a placement misses run-out times: (windows late, total lateness in µs).
fn lateness(jobs: &[Job], starts: &[Timestamp]) -> (usize, i128) {
    jobs.iter()
        .zip(starts)
        .filter(|(job, start)| **start >= job.deadline)
        .fold((0, 0), |(count, total), (job, start)| {
            (
                count + 1,
                total + i128::from(start.0) - i128::from(job.deadline.0),
            )
        })
}

impl Planner for MaintenanceScheduler {
    fn name(&self) -> &str {
        NAME
    }

    fn interval(&self) -> Duration {
        Duration::from_secs(self.config.interval_secs)
    }

    fn plan(&mut self, fleet: &FleetView, now: Timestamp) -> Vec<PlannedCommand> {
        let length = self.config.window();
        // Whole seconds: the start is sent as Unix seconds.
        let earliest = ceil_to_second(now.plus(Duration::from_secs(
            self.config.lead_minutes.saturating_mul(60),
        )));
        let lives: BTreeMap<&AssetPath, (Life, String)> = fleet
            .rows()
            .iter()
            .filter(|row| self.config.in_scope(&row.asset))
            .map(|row| (&row.asset, (self.life(row), line_of(&row.asset))))
            .collect();

        let mut commands = Vec::new();
        let previous = std::mem::take(&mut self.schedule);
        // Per line: windows that stay where they are, and windows to place.
        let mut fixed: BTreeMap<String, Vec<(AssetPath, Window)>> = BTreeMap::new();
        let mut jobs: BTreeMap<String, Vec<Job>> = BTreeMap::new();

        for (asset, window) in &previous {
            if window.end <= now {
                continue;
            }
            let Some((life, line)) = lives.get(asset) else {
                // Gone from the fleet (or the scope): nobody left to tell.
                continue;
            };
            let started = window.start <= now;
            match *life {
                Life::Healthy { rul_hours } => {
                    if !started && let Some(cancel) = self.cancel_command(asset, window, rul_hours)
                    {
                        commands.push(cancel);
                    }
                }
                Life::Low { runs_out } if !started && self.got_much_worse(window, runs_out) => {
                    jobs.entry(line.clone()).or_default().push(Job {
                        asset: asset.clone(),
                        deadline: runs_out,
                        planned_at: now,
                        cause: Cause::Worse,
                    });
                }
                Life::Low { .. } | Life::Near | Life::Unknown => {
                    fixed
                        .entry(window.line.clone())
                        .or_default()
                        .push((asset.clone(), window.clone()));
                }
            }
        }
        for (asset, (life, line)) in &lives {
            let has_window = previous.get(*asset).is_some_and(|window| window.end > now);
            if let (Life::Low { runs_out }, false) = (life, has_window) {
                jobs.entry(line.clone()).or_default().push(Job {
                    asset: (*asset).clone(),
                    deadline: *runs_out,
                    planned_at: now,
                    cause: Cause::New,
                });
            }
        }

        let mut placed: Vec<(Job, Window)> = Vec::new();
        for (line, line_jobs) in jobs {
            let kept = fixed.remove(&line).unwrap_or_default();
            let plan = place_line(kept, line_jobs, now, earliest, length);
            self.schedule.extend(plan.stays);
            for (job, start) in plan.placed {
                let window = Window {
                    line: line.clone(),
                    start,
                    end: start.plus(length),
                    deadline: job.deadline,
                    planned_at: job.planned_at,
                };
                placed.push((job, window));
            }
        }
        self.schedule.extend(fixed.into_values().flatten());

        placed.sort_by(|(a, wa), (b, wb)| (wa.start, &a.asset).cmp(&(wb.start, &b.asset)));
        for (job, window) in placed {
            let unchanged = previous
                .get(&job.asset)
                .is_some_and(|old| (old.start, old.end) == (window.start, window.end));
            if !unchanged {
                let reason = self.reason(&window, job.cause, now);
                commands.push(self.schedule_command(&job.asset, &window, reason));
            }
            self.schedule.insert(job.asset, window);
        }
        debug_assert!(no_overlap_on_a_line(&self.schedule));
        commands
    }
}

/// True when no two windows of one line overlap.
fn no_overlap_on_a_line(schedule: &BTreeMap<AssetPath, Window>) -> bool {
    let mut by_line: BTreeMap<&str, Vec<(Timestamp, Timestamp)>> = BTreeMap::new();
    for window in schedule.values() {
        by_line
            .entry(&window.line)
            .or_default()
            .push((window.start, window.end));
    }
    by_line.into_values().all(|mut windows| {
        windows.sort();
        windows.windows(2).all(|pair| pair[0].1 <= pair[1].0)
    })
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

    fn at(hours: f64) -> Timestamp {
        plus_hours(*T0, hours)
    }

    fn path(text: &str) -> AssetPath {
        AssetPath::parse(text).unwrap()
    }

    /// A fleet whose machines report `rul` hours, estimated at `estimated`.
    fn fleet(machines: &[(&str, f64)], estimated: Timestamp) -> FleetView {
        FleetView::new(
            machines
                .iter()
                .map(|(path, rul)| machine(path, estimated).derived("rul_hours", *rul).build())
                .collect(),
        )
    }

    fn scheduler() -> MaintenanceScheduler {
        MaintenanceScheduler::new(MaintenanceConfig::default()).unwrap()
    }

    fn assets(commands: &[PlannedCommand]) -> Vec<&str> {
        commands.iter().map(|c| c.asset.as_str()).collect()
    }

    fn param(command: &PlannedCommand, name: &str) -> Value {
        command.params.iter().find(|(n, _)| n == name).unwrap().1
    }

    fn assert_no_overlap(schedule: &[(AssetPath, Timestamp, Timestamp)]) {
        for (i, (a, a_start, a_end)) in schedule.iter().enumerate() {
            for (b, b_start, b_end) in &schedule[i + 1..] {
                if a.parent() == b.parent() {
                    assert!(
                        a_end <= b_start || b_end <= a_start,
                        "{a} and {b} overlap on one line"
                    );
                }
            }
        }
    }

    const LINE: [(&str, f64); 5] = [
        ("acme/plant-a/line-1/press-1", 60.0),
        ("acme/plant-a/line-1/press-2", 10.0),
        ("acme/plant-a/line-1/press-3", 30.0),
        ("acme/plant-a/line-1/press-4", 50.0),
        ("acme/plant-a/line-1/press-5", 20.0),
    ];

    #[test]
    fn staggers_a_line_most_urgent_first() {
        let mut scheduler = scheduler();
        let commands = scheduler.plan(&fleet(&LINE, *T0), *T0);
        assert_eq!(
            assets(&commands),
            [
                "acme/plant-a/line-1/press-2",
                "acme/plant-a/line-1/press-5",
                "acme/plant-a/line-1/press-3",
                "acme/plant-a/line-1/press-4",
                "acme/plant-a/line-1/press-1",
            ]
        );
        let schedule = scheduler.schedule();
        assert_eq!(schedule.len(), 5);
        assert_no_overlap(&schedule);
        for (index, (command, (asset, start, end))) in commands.iter().zip(&schedule).enumerate() {
            assert_eq!(&command.asset, asset);
            assert_eq!(*start, at(4.0 * index as f64));
            assert_eq!(*end, at(4.0 * (index + 1) as f64));
            assert_eq!(command.command, "schedule_maintenance");
            assert_eq!(param(command, "at"), Value::Int(start.0 / 1_000_000));
            assert_eq!(param(command, "duration_min"), Value::Int(240));
            assert_eq!(command.valid_for, Duration::from_secs(600));
            assert!(
                command.reason.contains("line acme/plant-a/line-1"),
                "{}",
                command.reason
            );
        }
    }

    #[test]
    fn lines_are_independent_and_healthy_machines_are_left_alone() {
        let mut scheduler = scheduler();
        let commands = scheduler.plan(
            &fleet(
                &[
                    ("acme/plant-a/line-1/press-1", 30.0),
                    ("acme/plant-a/line-1/press-2", 500.0),
                    ("acme/plant-a/line-2/pump-1", 20.0),
                    ("acme/plant-b/line-1/press-1", 40.0),
                    ("acme/plant-b/line-1/press-2", 75.0),
                ],
                *T0,
            ),
            *T0,
        );
        assert_eq!(commands.len(), 3);
        // Different lines: all three start at once.
        assert!(
            scheduler
                .schedule()
                .iter()
                .all(|(_, start, _)| *start == *T0)
        );
    }

    #[test]
    fn a_rerun_without_changes_sends_nothing() {
        let mut scheduler = scheduler();
        let first = scheduler.plan(&fleet(&LINE, *T0), *T0);
        assert_eq!(first.len(), 5);
        let schedule = scheduler.schedule();
        // Later runs, with the estimates moving on as time passes (same run-out times).
        for minutes in [1.0, 30.0, 90.0] {
            let now = at(minutes / 60.0);
            let lines: Vec<(&str, f64)> = LINE
                .iter()
                .map(|(path, rul)| (*path, rul - minutes / 60.0))
                .collect();
            assert!(scheduler.plan(&fleet(&lines, now), now).is_empty());
            assert_eq!(scheduler.schedule(), schedule);
        }
    }

    #[test]
    fn a_recovered_machine_leaves_the_schedule() {
        let mut scheduler = scheduler();
        scheduler.plan(&fleet(&LINE, *T0), *T0);
        // press-2 is being maintained in the first window; its estimate recovers.
        let now = at(3.0);
        let mut recovered: Vec<(&str, f64)> = LINE.iter().map(|(p, rul)| (*p, rul - 3.0)).collect();
        recovered[1].1 = 5000.0;
        let commands = scheduler.plan(&fleet(&recovered, now), now);
        assert!(commands.is_empty(), "{commands:?}");
        let scheduled: Vec<String> = scheduler
            .schedule()
            .iter()
            .map(|(asset, _, _)| asset.name().to_string())
            .collect();
        assert_eq!(scheduled, ["press-5", "press-3", "press-4", "press-1"]);

        // With a cancel command, a future window of a recovered machine is cancelled.
        let config = MaintenanceConfig {
            cancel_command: Some("cancel_maintenance".to_string()),
            ..MaintenanceConfig::default()
        };
        let mut scheduler = MaintenanceScheduler::new(config).unwrap();
        scheduler.plan(&fleet(&LINE, *T0), *T0);
        let mut recovered = LINE.to_vec();
        recovered[0].1 = 5000.0;
        let commands = scheduler.plan(&fleet(&recovered, *T0), at(0.5));
        assert_eq!(assets(&commands), ["acme/plant-a/line-1/press-1"]);
        assert_eq!(commands[0].command, "cancel_maintenance");
        assert_eq!(scheduler.schedule().len(), 4);
    }

    #[test]
    fn a_passed_window_is_dropped_and_a_machine_still_low_gets_a_new_one() {
        let mut scheduler = scheduler();
        scheduler.plan(&fleet(&[("acme/plant-a/line-1/press-1", 30.0)], *T0), *T0);
        let now = at(4.5);
        assert!(scheduler.plan(&FleetView::default(), now).is_empty());
        assert!(scheduler.schedule().is_empty());

        let mut scheduler = MaintenanceScheduler::new(MaintenanceConfig::default()).unwrap();
        scheduler.plan(&fleet(&[("acme/plant-a/line-1/press-1", 30.0)], *T0), *T0);
        let commands = scheduler.plan(&fleet(&[("acme/plant-a/line-1/press-1", 25.5)], now), now);
        assert_eq!(commands.len(), 1);
        assert_eq!(scheduler.schedule()[0].1, now);
    }

    #[test]
    fn says_so_when_a_window_cannot_start_before_the_rul_runs_out() {
        let mut scheduler = scheduler();
        let commands = scheduler.plan(
            &fleet(
                &[
                    ("acme/plant-a/line-1/press-1", 1.0),
                    ("acme/plant-a/line-1/press-2", 2.0),
                ],
                *T0,
            ),
            *T0,
        );
        assert_eq!(commands.len(), 2);
        assert!(
            !commands[0].reason.contains("earliest possible"),
            "{}",
            commands[0].reason
        );
        assert!(
            commands[1].reason.contains("earliest possible"),
            "{}",
            commands[1].reason
        );
        assert_eq!(param(&commands[1], "at"), Value::Int(at(4.0).0 / 1_000_000));
    }

    #[test]
    fn a_machine_that_got_much_worse_moves_ahead_of_less_urgent_windows() {
        let mut scheduler = scheduler();
        scheduler.plan(&fleet(&LINE, *T0), *T0);
        // An hour later press-1 (planned last, at +16 h) will fail in 5 hours.
        let now = at(1.0);
        let mut worse: Vec<(&str, f64)> = LINE.iter().map(|(p, rul)| (*p, rul - 1.0)).collect();
        worse[0].1 = 5.0;
        let commands = scheduler.plan(&fleet(&worse, now), now);
        // press-2's window is in progress and stays; press-1 follows it, the rest move on.
        assert_eq!(
            assets(&commands),
            [
                "acme/plant-a/line-1/press-1",
                "acme/plant-a/line-1/press-5",
                "acme/plant-a/line-1/press-3",
                "acme/plant-a/line-1/press-4",
            ]
        );
        assert!(
            commands[0].reason.starts_with("rul got worse"),
            "{}",
            commands[0].reason
        );
        assert!(
            commands[1].reason.starts_with("moved"),
            "{}",
            commands[1].reason
        );
        let schedule = scheduler.schedule();
        assert_no_overlap(&schedule);
        assert_eq!(
            schedule[0],
            (path("acme/plant-a/line-1/press-2"), *T0, at(4.0))
        );
        assert_eq!(
            schedule[1],
            (path("acme/plant-a/line-1/press-1"), at(4.0), at(8.0))
        );

        // Noise that does not make a machine much worse moves nothing.
        let mut noisy: Vec<(&str, f64)> = worse.iter().map(|(p, rul)| (*p, rul - 1.0)).collect();
        noisy[3].1 -= 2.0;
        assert!(scheduler.plan(&fleet(&noisy, now), now).is_empty());
    }

    #[test]
    fn uncertain_estimates_are_not_acted_on() {
        let mut scheduler = scheduler();
        let mut row = machine("acme/plant-a/line-1/press-1", *T0)
            .derived("rul_hours", 10.0)
            .build();
        row.derived[0].confidence = 0.2;
        assert!(scheduler.plan(&FleetView::new(vec![row]), *T0).is_empty());
    }

    #[test]
    fn reads_its_table_and_refuses_unknown_fields() {
        let table: toml::Table = toml::from_str(
            r#"
            threshold_hours = 48.0
            window_minutes = 120
            command = "plan_service"
            "#,
        )
        .unwrap();
        let scheduler = MaintenanceScheduler::from_table(&table).unwrap();
        assert_eq!(scheduler.config().threshold_hours, 48.0);
        assert_eq!(scheduler.config().window_minutes, 120);
        assert_eq!(scheduler.config().rul, "rul_hours");
        assert_eq!(scheduler.interval(), Duration::from_secs(60));

        let table: toml::Table = toml::from_str("threshold = 48.0").unwrap();
        assert!(MaintenanceScheduler::from_table(&table).is_err());
        let table: toml::Table = toml::from_str("window_minutes = 0").unwrap();
        assert!(MaintenanceScheduler::from_table(&table).is_err());
    }
}
