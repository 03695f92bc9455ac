//! Recommendations: candidate commands projected, checked and ranked against a twin
//! type's declared objective.
//!
//! ```toml
//! [types.press.recommend]
//! command = "set_speed"            # the command the candidates are
//! param = "rpm"                    # the parameter they differ in
//! values = [600, 900, 1200, 1500]  # the grid
//! horizon_secs = 600.0             # how far each is projected
//! maximize = "rpm"                 # the parameter, or a projected series (its mean)
//! constraints = [
//!     { series = "temperature", max = 90.0 },
//!     { series = "rul_hours", min = 24.0 },
//! ]
//! ```
//!
//! Each candidate runs through what-if: the governors' review of it now, and the
//! models' projection under the desired values it would leave. A governor that would
//! act on the projection (a trip whose limit the projected channel crosses) denies it as
//! well. Each constraint is checked on the projected series' worst point, and again on
//! that point's bound where the model gave one (the upper bound against a `max`, the
//! lower against a `min`). Candidates rank by tier, then by the objective: allowed with
//! every constraint holding at its bounds; holding at the projected values only;
//! breaking a constraint; denied.

use serde::Deserialize;

use crate::command::Verdict;
use crate::model::{Trajectory, TrajectoryPoint};

/// What a recommendation seeks, declared on a twin type.
#[derive(Debug, Clone, PartialEq)]
pub struct RecommendSpec {
    /// The command every candidate is.
    pub command: String,
    /// The parameter candidates differ in.
    pub param: String,
    /// The values tried.
    pub values: Vec<f64>,
    /// How far each candidate is projected, in seconds.
    pub horizon_secs: f64,
    /// What is maximized or minimized.
    pub objective: Objective,
    /// What must hold over the horizon.
    pub constraints: Vec<Constraint>,
}

/// The quantity a recommendation seeks to raise or lower.
#[derive(Debug, Clone, PartialEq)]
pub struct Objective {
    /// Maximize (true) or minimize.
    pub maximize: bool,
    /// The candidate's parameter (its name), or a projected series (its mean over the
    /// horizon).
    pub of: String,
}

/// A limit a projected series must respect over the horizon.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Constraint {
    /// The projected series.
    pub series: String,
    /// Its largest allowed value.
    pub max: Option<f64>,
    /// Its smallest allowed value.
    pub min: Option<f64>,
}

/// The `[types.<type>.recommend]` table as written.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawRecommend {
    command: String,
    param: String,
    values: Vec<f64>,
    #[serde(default = "default_horizon")]
    horizon_secs: f64,
    maximize: Option<String>,
    minimize: Option<String>,
    #[serde(default)]
    constraints: Vec<Constraint>,
}

fn default_horizon() -> f64 {
    600.0
}

/// Most candidates one recommendation evaluates.
pub const MAX_CANDIDATES: usize = 64;

impl RawRecommend {
    /// Checks the table against nothing but itself; the type checks the command.
    pub(crate) fn into_spec(self) -> Result<RecommendSpec, String> {
        let objective = match (self.maximize, self.minimize) {
            (Some(of), None) => Objective { maximize: true, of },
            (None, Some(of)) => Objective {
                maximize: false,
                of,
            },
            _ => return Err("give one of `maximize` or `minimize`".into()),
        };
        let spec = RecommendSpec {
            command: self.command,
            param: self.param,
            values: self.values,
            horizon_secs: self.horizon_secs,
            objective,
            constraints: self.constraints,
        };
        spec.check()?;
        Ok(spec)
    }
}

impl RecommendSpec {
    /// Checks the grid, horizon and constraints make sense.
    pub fn check(&self) -> Result<(), String> {
        if self.values.is_empty() || self.values.len() > MAX_CANDIDATES {
            return Err(format!(
                "{} candidate values; give 1 to {MAX_CANDIDATES}",
                self.values.len()
            ));
        }
        if let Some(bad) = self.values.iter().find(|v| !v.is_finite()) {
            return Err(format!("candidate value {bad} is not a number"));
        }
        if !(self.horizon_secs.is_finite() && self.horizon_secs >= 1.0) {
            return Err(format!(
                "horizon_secs {} is not a number of seconds, 1 or more",
                self.horizon_secs
            ));
        }
        for constraint in &self.constraints {
            let limits = [constraint.max, constraint.min];
            if limits.iter().all(Option::is_none) {
                return Err(format!(
                    "constraint on `{}` gives neither max nor min",
                    constraint.series
                ));
            }
            if limits.iter().flatten().any(|v| !v.is_finite()) {
                return Err(format!(
                    "constraint on `{}` has a limit that is not a number",
                    constraint.series
                ));
            }
        }
        Ok(())
    }

    /// The objective in words (`maximize rpm`, `minimize mean temperature`).
    pub fn objective_text(&self) -> String {
        let verb = if self.objective.maximize {
            "maximize"
        } else {
            "minimize"
        };
        if self.objective.of == self.param {
            format!("{verb} {}", self.param)
        } else {
            format!("{verb} mean {}", self.objective.of)
        }
    }
}

/// How one constraint fared for one candidate.
#[derive(Debug, Clone, PartialEq)]
pub struct ConstraintCheck {
    /// The series.
    pub series: String,
    /// The limit checked, and whether it is a maximum.
    pub limit: f64,
    /// True for a maximum.
    pub is_max: bool,
    /// The series' worst projected value (largest against a max, smallest against a
    /// min), and when (seconds from now); `None` when the series was not projected.
    pub worst: Option<(f64, f64)>,
    /// The worst point's bound on the unsafe side, when the model gave one.
    pub worst_bound: Option<f64>,
    /// The projected values respect the limit.
    pub holds: bool,
    /// The bounds respect it too (the same as `holds` without bounds).
    pub holds_at_bound: bool,
}

/// One candidate, evaluated.
#[derive(Debug, Clone, PartialEq)]
pub struct Candidate {
    /// Its parameter value.
    pub value: f64,
    /// The governors' review of it now.
    pub verdict: Verdict,
    /// A governor that would act on its projection, with why.
    pub projected_action: Option<(String, String)>,
    /// The objective's value, with its bounds when the series has them.
    pub objective: Option<(f64, Option<(f64, f64)>)>,
    /// Each constraint.
    pub checks: Vec<ConstraintCheck>,
    /// Its tier: 0 allowed and holding at the bounds, 1 holding at the projected
    /// values, 2 breaking a constraint, 3 denied (now or by its projection).
    pub tier: u8,
    /// Why it ranks where it does, in one sentence.
    pub rationale: String,
    /// The projection.
    pub trajectory: Trajectory,
}

/// A ranked recommendation.
#[derive(Debug, Clone, PartialEq)]
pub struct Recommendation {
    /// The objective in words.
    pub objective: String,
    /// The command every candidate is.
    pub command: String,
    /// The parameter they differ in.
    pub param: String,
    /// The candidates, best first.
    pub candidates: Vec<Candidate>,
}

impl Candidate {
    /// Whether it is allowed (not denied now, no governor acting on its projection).
    pub fn allowed(&self) -> bool {
        self.verdict.is_applied() && self.projected_action.is_none()
    }
}

/// Evaluates one candidate's projection: objective, constraints, tier and rationale.
/// `applied` is the parameter value the command would apply (after clamps).
pub fn evaluate(
    spec: &RecommendSpec,
    value: f64,
    applied: f64,
    verdict: Verdict,
    projected_action: Option<(String, String)>,
    trajectory: Trajectory,
) -> Candidate {
    let allowed = verdict.is_applied() && projected_action.is_none();
    // A denied candidate changes nothing: it has no objective of its own.
    let objective = if !allowed {
        None
    } else if spec.objective.of == spec.param {
        Some((applied, None))
    } else {
        trajectory
            .series
            .get(&spec.objective.of)
            .and_then(|points| mean(points))
    };
    let checks: Vec<ConstraintCheck> = spec
        .constraints
        .iter()
        .flat_map(|c| {
            let series = trajectory.series.get(&c.series).map(Vec::as_slice);
            let max = c.max.map(|limit| check(&c.series, series, limit, true));
            let min = c.min.map(|limit| check(&c.series, series, limit, false));
            max.into_iter().chain(min)
        })
        .collect();
    let tier = if !allowed {
        3
    } else if checks.iter().any(|c| !c.holds) {
        2
    } else if checks.iter().any(|c| !c.holds_at_bound) {
        1
    } else {
        0
    };
    let rationale = rationale(spec, applied, &verdict, &projected_action, &checks, tier);
    Candidate {
        value,
        verdict,
        projected_action,
        objective,
        checks,
        tier,
        rationale,
        trajectory,
    }
}

/// Ranks candidates: by tier, then the objective (best first), then the value.
pub fn rank(spec: &RecommendSpec, candidates: &mut [Candidate]) {
    let score = |c: &Candidate| {
        let value = c.objective.map_or(f64::NEG_INFINITY, |(v, _)| {
            if spec.objective.maximize { v } else { -v }
        });
        if value.is_nan() {
            f64::NEG_INFINITY
        } else {
            value
        }
    };
    candidates.sort_by(|a, b| {
        a.tier
            .cmp(&b.tier)
            .then(score(b).total_cmp(&score(a)))
            .then(a.value.total_cmp(&b.value))
    });
}

/// The mean of a series, with the means of its bounds when every point has them.
fn mean(points: &[TrajectoryPoint]) -> Option<(f64, Option<(f64, f64)>)> {
    if points.is_empty() {
        return None;
    }
    let n = points.len() as f64;
    let value = points.iter().map(|p| p.value).sum::<f64>() / n;
    let bounds = points
        .iter()
        .map(|p| p.lower.zip(p.upper))
        .collect::<Option<Vec<_>>>()
        .map(|bounds| {
            let lower = bounds.iter().map(|b| b.0).sum::<f64>() / n;
            let upper = bounds.iter().map(|b| b.1).sum::<f64>() / n;
            (lower, upper)
        });
    Some((value, bounds))
}

fn check(
    series: &str,
    points: Option<&[TrajectoryPoint]>,
    limit: f64,
    is_max: bool,
) -> ConstraintCheck {
    let worse = |a: f64, b: f64| if is_max { a > b } else { a < b };
    let worst = points.and_then(|points| {
        points
            .iter()
            .copied()
            .reduce(|w, p| if worse(p.value, w.value) { p } else { w })
    });
    let worst_bound = points.and_then(|points| {
        points
            .iter()
            .filter_map(|p| if is_max { p.upper } else { p.lower })
            .reduce(|w, b| if worse(b, w) { b } else { w })
    });
    let respects = |v: f64| if is_max { v <= limit } else { v >= limit };
    // A series nobody projected cannot be shown to hold.
    let holds = worst.is_some_and(|w| respects(w.value));
    ConstraintCheck {
        series: series.to_string(),
        limit,
        is_max,
        worst: worst.map(|w| (w.value, w.t)),
        worst_bound,
        holds,
        holds_at_bound: holds && worst_bound.is_none_or(respects),
    }
}

fn rationale(
    spec: &RecommendSpec,
    applied: f64,
    verdict: &Verdict,
    projected_action: &Option<(String, String)>,
    checks: &[ConstraintCheck],
    tier: u8,
) -> String {
    if let Verdict::Denied { governor, reason } = verdict {
        return format!("denied now by {governor}: {reason}");
    }
    if let Some((governor, reason)) = projected_action {
        return format!("{governor} would act on its projection: {reason}");
    }
    let mut parts: Vec<String> = Vec::new();
    if let Verdict::Clamped { .. } = verdict {
        parts.push(format!("clamped to {} {}", number(applied), spec.param));
    }
    for check in checks {
        let relation = if check.is_max { "≤" } else { "≥" };
        let Some((worst, at)) = check.worst else {
            parts.push(format!("{} not projected", check.series));
            continue;
        };
        let extreme = if check.is_max { "peaks at" } else { "falls to" };
        let bound = check
            .worst_bound
            .map(|b| format!(" (bound {})", number(b)))
            .unwrap_or_default();
        let verdict = match (check.holds, check.holds_at_bound) {
            (true, true) => "holds",
            (true, false) => "holds, but not at its bound",
            _ => "breaks",
        };
        parts.push(format!(
            "{} {extreme} {}{bound} at +{} s: {relation} {} {verdict}",
            check.series,
            number(worst),
            number(at),
            number(check.limit)
        ));
    }
    let lead = match tier {
        0 => "allowed, every constraint holds with its bounds",
        1 => "allowed, every constraint holds at the projected values",
        _ => "allowed now, but a constraint breaks",
    };
    if parts.is_empty() {
        lead.to_string()
    } else {
        format!("{lead}: {}", parts.join("; "))
    }
}

/// A number for a sentence: four significant digits, no float noise.
fn number(value: f64) -> String {
    if value == 0.0 || !value.is_finite() {
        return format!("{value}");
    }
    let digits = 3 - value.abs().log10().floor() as i32;
    let rounded = if digits > 0 {
        format!("{value:.*}", digits as usize)
    } else {
        format!("{value:.0}")
    };
    if rounded.contains('.') {
        rounded
            .trim_end_matches('0')
            .trim_end_matches('.')
            .to_string()
    } else {
        rounded
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec() -> RecommendSpec {
        RawRecommend {
            command: "set_speed".into(),
            param: "rpm".into(),
            values: vec![600.0, 1200.0, 1800.0],
            horizon_secs: 600.0,
            maximize: Some("rpm".into()),
            minimize: None,
            constraints: vec![Constraint {
                series: "temperature".into(),
                max: Some(90.0),
                min: None,
            }],
        }
        .into_spec()
        .unwrap()
    }

    fn projection(peak: f64, spread: f64) -> Trajectory {
        let mut trajectory = Trajectory::default();
        for (t, value) in [(0.0, 60.0), (300.0, peak)] {
            trajectory.push_point("temperature", TrajectoryPoint::with_error(t, value, spread));
        }
        trajectory
    }

    #[test]
    fn candidates_rank_by_tier_then_objective() {
        let spec = spec();
        let mut candidates = vec![
            evaluate(
                &spec,
                600.0,
                600.0,
                Verdict::Accepted,
                None,
                projection(70.0, 1.0),
            ),
            evaluate(
                &spec,
                1200.0,
                1200.0,
                Verdict::Accepted,
                None,
                projection(89.0, 1.0),
            ),
            evaluate(
                &spec,
                1800.0,
                1800.0,
                Verdict::Accepted,
                None,
                projection(96.0, 1.0),
            ),
            evaluate(
                &spec,
                2400.0,
                2400.0,
                Verdict::Accepted,
                Some(("overtemp".into(), "projected 101 degC".into())),
                projection(101.0, 1.0),
            ),
        ];
        rank(&spec, &mut candidates);
        let order: Vec<(f64, u8)> = candidates.iter().map(|c| (c.value, c.tier)).collect();
        // 1200 holds at its value (89) but not at its bound (91): below 600's tier.
        assert_eq!(
            order,
            vec![(600.0, 0), (1200.0, 1), (1800.0, 2), (2400.0, 3)]
        );
        assert!(
            candidates[0]
                .rationale
                .contains("temperature peaks at 70 (bound 72)"),
            "{}",
            candidates[0].rationale
        );
        assert!(candidates[3].rationale.starts_with("overtemp would act"));
        assert!(!candidates[3].allowed());
    }

    #[test]
    fn a_declaration_needs_one_objective_and_sensible_numbers() {
        let raw = |maximize: Option<&str>, minimize: Option<&str>, values: Vec<f64>| RawRecommend {
            command: "set_speed".into(),
            param: "rpm".into(),
            values,
            horizon_secs: 600.0,
            maximize: maximize.map(Into::into),
            minimize: minimize.map(Into::into),
            constraints: Vec::new(),
        };
        assert!(raw(None, None, vec![1.0]).into_spec().is_err());
        assert!(
            raw(Some("rpm"), Some("rpm"), vec![1.0])
                .into_spec()
                .is_err()
        );
        assert!(raw(Some("rpm"), None, vec![]).into_spec().is_err());
        assert!(raw(Some("rpm"), None, vec![f64::NAN]).into_spec().is_err());
        assert_eq!(
            raw(None, Some("temperature"), vec![1.0])
                .into_spec()
                .unwrap()
                .objective_text(),
            "minimize mean temperature"
        );
    }
}
