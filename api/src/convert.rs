//! Conversions between the kernel's types and the `doppel.v1` messages.
//!
//! The public functions are the ones a client needs to build requests and read
//! responses: time stamps, durations and values.

use std::time::Duration;

use doppel_proto::v1 as pb;
use doppel_runtime::model::deploy::{Divergence, ShadowReport};
use doppel_runtime::model::registry::{
    CanarySpec, DeployMode, Deployment, DeploymentStatus, RegisteredPackage, RolloutState,
};
use doppel_runtime::twin::{
    Delivery, DeliveryState, RunState, TwinChange, TwinEvent, TwinReport, TwinSummary,
};
use doppel_runtime::{
    Alarm, Annotation, AnnotationOutcome, AnnotationSubject, AssetPath, AuditKind, AuditRecord,
    ChannelCondition, ModelInfo, Origin, OriginKind, Quality, Sample, Severity, Timestamp, Value,
    Verdict,
};

/// Earliest time stamp accepted: 0001-01-01T00:00:00Z, as protobuf's Timestamp allows.
const MIN_SECONDS: i64 = -62_135_596_800;
/// Latest time stamp accepted: 9999-12-31T23:59:59Z.
const MAX_SECONDS: i64 = 253_402_300_799;

/// A kernel time stamp as a protobuf Timestamp.
pub fn timestamp_to_proto(at: Timestamp) -> prost_types::Timestamp {
    let micros = at.as_micros();
    prost_types::Timestamp {
        seconds: micros.div_euclid(1_000_000),
        nanos: (micros.rem_euclid(1_000_000) * 1000) as i32,
    }
}

/// A protobuf Timestamp as a kernel time stamp (to the microsecond); `None` when it
/// is not valid (nanos outside 0..1e9, or outside years 1..=9999).
pub fn timestamp_from_proto(at: &prost_types::Timestamp) -> Option<Timestamp> {
    if !(0..1_000_000_000).contains(&at.nanos) || !(MIN_SECONDS..=MAX_SECONDS).contains(&at.seconds)
    {
        return None;
    }
    Some(Timestamp(
        at.seconds * 1_000_000 + i64::from(at.nanos / 1000),
    ))
}

/// A duration as a protobuf Duration (saturating at its range).
pub fn duration_to_proto(duration: Duration) -> prost_types::Duration {
    prost_types::Duration {
        seconds: i64::try_from(duration.as_secs()).unwrap_or(i64::MAX),
        nanos: duration.subsec_nanos() as i32,
    }
}

/// A protobuf Duration as a duration; `None` when negative or not normalized.
pub fn duration_from_proto(duration: &prost_types::Duration) -> Option<Duration> {
    if duration.seconds < 0 || !(0..1_000_000_000).contains(&duration.nanos) {
        return None;
    }
    Some(Duration::new(
        duration.seconds as u64,
        duration.nanos as u32,
    ))
}

/// A kernel value as a protobuf Value.
pub fn value_to_proto(value: Value) -> pb::Value {
    let kind = match value {
        Value::Bool(b) => pb::value::Kind::BoolValue(b),
        Value::Int(i) => pb::value::Kind::IntValue(i),
        Value::Float(f) => pb::value::Kind::FloatValue(f),
    };
    pb::Value { kind: Some(kind) }
}

/// A protobuf Value as a kernel value; `None` when no kind is set (or an unknown one
/// was sent).
pub fn value_from_proto(value: &pb::Value) -> Option<Value> {
    match value.kind? {
        pb::value::Kind::BoolValue(b) => Some(Value::Bool(b)),
        pb::value::Kind::IntValue(i) => Some(Value::Int(i)),
        pb::value::Kind::FloatValue(f) => Some(Value::Float(f)),
    }
}

/// A name and value as a protobuf NamedValue.
pub fn named_value(name: &str, value: Value) -> pb::NamedValue {
    pb::NamedValue {
        name: name.to_string(),
        value: Some(value_to_proto(value)),
    }
}

pub(crate) fn named_values(values: &[(String, Value)]) -> Vec<pb::NamedValue> {
    values.iter().map(|(n, v)| named_value(n, *v)).collect()
}

pub(crate) fn quality(quality: Quality) -> pb::Quality {
    match quality {
        Quality::Good => pb::Quality::Good,
        Quality::Uncertain => pb::Quality::Uncertain,
        Quality::Bad => pb::Quality::Bad,
        Quality::Stale => pb::Quality::Stale,
    }
}

pub(crate) fn condition(condition: &ChannelCondition) -> pb::ChannelCondition {
    pb::ChannelCondition {
        quality: quality(condition.quality) as i32,
        reason: condition.reason.clone(),
        since: Some(timestamp_to_proto(condition.since)),
    }
}

pub(crate) fn severity(severity: Severity) -> pb::Severity {
    match severity {
        Severity::Info => pb::Severity::Info,
        Severity::Warning => pb::Severity::Warning,
        Severity::Critical => pb::Severity::Critical,
    }
}

pub(crate) fn run_state(state: RunState) -> pb::RunState {
    match state {
        RunState::Running => pb::RunState::Running,
        RunState::Stopped => pb::RunState::Stopped,
        RunState::Tripped => pb::RunState::Tripped,
    }
}

pub(crate) fn origin(origin: &Origin) -> pb::Origin {
    let kind = match origin.kind {
        OriginKind::Operator => pb::OriginKind::Operator,
        OriginKind::Planner => pb::OriginKind::Planner,
        OriginKind::Automation => pb::OriginKind::Automation,
        OriginKind::Safety => pb::OriginKind::Safety,
        OriginKind::System => pb::OriginKind::System,
    };
    pb::Origin {
        kind: kind as i32,
        principal: origin.principal.clone(),
    }
}

pub(crate) fn verdict(verdict: &Verdict) -> pb::Verdict {
    let outcome = match verdict {
        Verdict::Accepted => pb::verdict::Outcome::Accepted(pb::Accepted {}),
        Verdict::Clamped { clamps } => pb::verdict::Outcome::Clamped(pb::Clamped {
            clamps: clamps
                .iter()
                .map(|c| pb::Clamp {
                    desired: c.desired.clone(),
                    requested: Some(value_to_proto(c.requested)),
                    applied: Some(value_to_proto(c.applied)),
                    governor: c.governor.clone(),
                    reason: c.reason.clone(),
                })
                .collect(),
        }),
        Verdict::Denied { governor, reason } => pb::verdict::Outcome::Denied(pb::Denied {
            governor: governor.clone(),
            reason: reason.clone(),
        }),
    };
    pb::Verdict {
        outcome: Some(outcome),
    }
}

pub(crate) fn sample(sample: &Sample) -> pb::Sample {
    pb::Sample {
        value: sample.value,
        quality: quality(sample.quality) as i32,
        source_time: Some(timestamp_to_proto(sample.source_time)),
        receive_time: Some(timestamp_to_proto(sample.receive_time)),
        seq: sample.seq,
        epoch: sample.epoch,
    }
}

pub(crate) fn model_info(model: &ModelInfo) -> pb::ModelInfo {
    pb::ModelInfo {
        name: model.name.clone(),
        version: model.version.clone(),
        confidence: model.confidence,
    }
}

/// An alarm with its lifecycle.
pub fn alarm(alarm: &Alarm) -> pb::Alarm {
    pb::Alarm {
        code: alarm.code.clone(),
        severity: severity(alarm.severity) as i32,
        message: alarm.message.clone(),
        raised_by: alarm.raised_by.clone(),
        since: Some(timestamp_to_proto(alarm.since)),
        active: alarm.active,
        acknowledged: alarm.acknowledged.as_ref().map(alarm_note),
        shelved: alarm.shelved.as_ref().map(|s| alarm_note(&s.note)),
        shelved_until: alarm.shelved.as_ref().map(|s| timestamp_to_proto(s.until)),
        out_of_service: alarm.out_of_service.as_ref().map(alarm_note),
        suppressed: alarm.suppressed,
        state: alarm.state_name().to_string(),
        explanation: None,
    }
}

/// Why an alarm was raised, as the API returns it.
pub fn explanation(explanation: &doppel_runtime::Explanation) -> pb::Explanation {
    pb::Explanation {
        source: explanation.source.clone(),
        version: explanation.version.clone(),
        confidence: explanation.confidence,
        summary: explanation.summary.clone(),
        inputs: explanation
            .inputs
            .iter()
            .map(|input| pb::ExplainedInput {
                name: input.name.clone(),
                value: input.value,
                unit: input.unit.clone(),
            })
            .collect(),
    }
}

fn alarm_note(note: &doppel_runtime::twin::AlarmNote) -> pb::AlarmNote {
    pb::AlarmNote {
        by: note.by.clone(),
        at: Some(timestamp_to_proto(note.at)),
        note: note.note.clone(),
    }
}

fn trip(trip: &doppel_runtime::twin::Trip) -> pb::Trip {
    pb::Trip {
        governor: trip.governor.clone(),
        reason: trip.reason.clone(),
        at: Some(timestamp_to_proto(trip.at)),
    }
}

/// A twin's state as the API returns it.
pub fn twin(report: &TwinReport) -> pb::Twin {
    pb::Twin {
        asset_path: report.asset.to_string(),
        twin_type: report.twin_type.clone(),
        version: report.version,
        run_state: run_state(report.run_state) as i32,
        reported: report
            .reported
            .iter()
            .map(|r| pb::ReportedValue {
                channel: r.channel.clone(),
                unit: r.unit.clone(),
                sample: r.sample.as_ref().map(sample),
                condition: r.condition.as_ref().map(condition),
            })
            .collect(),
        desired: report
            .desired
            .iter()
            .map(|(name, desired)| pb::DesiredValue {
                name: name.clone(),
                value: Some(value_to_proto(desired.value)),
                // The type's initial value was never set by anyone: no time.
                set_at: (desired.set_at > Timestamp(0)).then(|| timestamp_to_proto(desired.set_at)),
                delivery: Some(delivery(&desired.delivery)),
                agrees: desired.agrees,
            })
            .collect(),
        derived: report.derived.iter().map(derived).collect(),
        alarms: report.alarms.iter().map(alarm).collect(),
        trips: report.trips.iter().map(trip).collect(),
        health: report.health,
        models: report.models.iter().map(model_info).collect(),
        updated_at: Some(timestamp_to_proto(report.updated_at)),
        mirror: None,
        shadows: Vec::new(),
    }
}

fn derived(value: &doppel_runtime::twin::DerivedValue) -> pb::DerivedValue {
    pb::DerivedValue {
        name: value.name.to_string(),
        model: value.model.to_string(),
        value: value.value,
        confidence: value.confidence,
        // Absent until the model wrote a value.
        at: value.value.map(|_| timestamp_to_proto(value.at)),
    }
}

/// A shadow model on one twin as the API returns it.
pub fn shadow(shadow: &ShadowReport) -> pb::ShadowModel {
    pb::ShadowModel {
        deployment: shadow.deployment,
        model: shadow.model.clone(),
        version: shadow.version.clone(),
        production_version: shadow.production_version.clone(),
        values: shadow.values.iter().map(derived).collect(),
        alarms: shadow.alarms.clone(),
        divergence: Some(divergence(&shadow.divergence)),
        baseline: shadow.baseline,
    }
}

/// Divergence figures as the API returns them.
pub fn divergence(divergence: &Divergence) -> pb::Divergence {
    let compared = divergence.samples > 0;
    pb::Divergence {
        since: compared.then(|| timestamp_to_proto(divergence.since)),
        until: compared.then(|| timestamp_to_proto(divergence.until)),
        samples: divergence.samples,
        outputs: divergence
            .outputs
            .iter()
            .map(|output| pb::OutputDivergence {
                name: output.name.clone(),
                compared: output.compared,
                mean_abs: output.mean_abs(),
                max_abs: output.max_abs,
            })
            .collect(),
        shadow_only_alarms: divergence.shadow_only_alarms,
        production_only_alarms: divergence.production_only_alarms,
        informed_safety_actions: divergence.informed_safety_actions,
        twins: divergence.twins,
    }
}

/// Projected series as the API returns them, bounds included.
pub fn series(trajectory: &doppel_runtime::Trajectory) -> Vec<pb::Series> {
    trajectory
        .series
        .iter()
        .map(|(name, points)| pb::Series {
            name: name.clone(),
            points: points
                .iter()
                .map(|p| pb::TrajectoryPoint {
                    t: p.t,
                    value: p.value,
                    lower: p.lower,
                    upper: p.upper,
                })
                .collect(),
        })
        .collect()
}

/// A recommendation's candidate as the API returns it.
pub fn recommend_candidate(
    candidate: &doppel_runtime::model::recommend::Candidate,
) -> pb::RecommendCandidate {
    let (projected_by, projected_reason) = candidate.projected_action.clone().unwrap_or_default();
    let bounds = candidate.objective.and_then(|(_, bounds)| bounds);
    pb::RecommendCandidate {
        value: candidate.value,
        verdict: Some(verdict(&candidate.verdict)),
        projected_by,
        projected_reason,
        objective: candidate.objective.map(|(value, _)| value),
        objective_lower: bounds.map(|b| b.0),
        objective_upper: bounds.map(|b| b.1),
        checks: candidate
            .checks
            .iter()
            .map(|check| pb::ConstraintCheck {
                series: check.series.clone(),
                limit: check.limit,
                is_max: check.is_max,
                worst: check.worst.map(|w| w.0),
                worst_at: check.worst.map_or(0.0, |w| w.1),
                worst_bound: check.worst_bound,
                holds: check.holds,
                holds_at_bound: check.holds_at_bound,
            })
            .collect(),
        tier: u32::from(candidate.tier),
        rationale: candidate.rationale.clone(),
        series: series(&candidate.trajectory),
    }
}

/// A registered model package as the API returns it.
pub fn model_package(registered: &RegisteredPackage) -> pb::ModelPackage {
    let package = registered.package().ok();
    let metadata = package.as_ref().map(|p| &p.metadata);
    let window = metadata.and_then(|m| m.training_window.as_ref());
    pb::ModelPackage {
        kind: registered.kind.clone(),
        version: registered.version.clone(),
        compatible_with: package
            .as_ref()
            .map(|p| p.compatible_with.clone())
            .unwrap_or_default(),
        params_json: package
            .as_ref()
            .and_then(|p| serde_json::to_string(&p.params).ok())
            .unwrap_or_default(),
        assumptions: metadata.map(|m| m.assumptions.clone()).unwrap_or_default(),
        units: metadata
            .map(|m| m.units.clone().into_iter().collect())
            .unwrap_or_default(),
        training_from: window.map(|w| w.from.clone()).unwrap_or_default(),
        training_to: window.map(|w| w.to.clone()).unwrap_or_default(),
        author: metadata.map(|m| m.author.clone()).unwrap_or_default(),
        created: metadata.map(|m| m.created.clone()).unwrap_or_default(),
        signer: registered.signer.clone(),
        registered_at: Some(timestamp_to_proto(registered.registered_at)),
        registered_by: registered.registered_by.clone(),
        text: registered.text.clone(),
    }
}

/// A deployment mode as the API names it.
pub fn deploy_mode(mode: DeployMode) -> pb::DeployMode {
    match mode {
        DeployMode::Shadow => pb::DeployMode::Shadow,
        DeployMode::Canary => pb::DeployMode::Canary,
        DeployMode::Production => pb::DeployMode::Production,
    }
}

/// A canary's criteria as the API returns them.
pub fn canary_spec(spec: &CanarySpec) -> pb::CanarySpec {
    pb::CanarySpec {
        fraction: spec.fraction,
        per_line: spec.per_line,
        min_duration_secs: spec.min_duration_secs,
        max_divergence: spec.max_divergence,
        max_alarm_increase: Some(spec.max_alarm_increase),
        auto_promote: spec.auto_promote,
    }
}

/// A deployment as the API returns it.
pub fn model_deployment(deployment: &Deployment) -> pb::ModelDeployment {
    let target = &deployment.target;
    let twin_type = target.twin_type().unwrap_or_default().to_string();
    let path_prefix = target.prefix().map(ToString::to_string).unwrap_or_default();
    pb::ModelDeployment {
        id: deployment.id,
        kind: deployment.kind.clone(),
        version: deployment.version.clone(),
        model: deployment.model.clone(),
        twin_type,
        path_prefix,
        mode: deploy_mode(deployment.mode) as i32,
        by: deployment.by.clone(),
        at: Some(timestamp_to_proto(deployment.at)),
        active: deployment.status == DeploymentStatus::Active,
        withdrawn: deployment.withdrawn.clone().unwrap_or_default(),
        canary: deployment.canary.as_ref().map(canary_spec),
        rollout: deployment.rollout.as_ref().map(|rollout| pb::Rollout {
            state: match rollout.state {
                RolloutState::Running => pb::RolloutState::Running,
                RolloutState::Held => pb::RolloutState::Held,
                RolloutState::Promoted => pb::RolloutState::Promoted,
                RolloutState::RolledBack => pb::RolloutState::RolledBack,
            } as i32,
            twins: rollout.twins.iter().map(ToString::to_string).collect(),
            divergence: Some(divergence(&rollout.divergence)),
            reason: rollout.reason.clone(),
            promoted_to: rollout.promoted_to.unwrap_or(0),
            changed_at: Some(timestamp_to_proto(rollout.changed_at)),
        }),
        node_id: String::new(),
        evaluation_secs: deployment.evaluation_secs.unwrap_or(0.0),
    }
}

/// A desired value's delivery as the API returns it.
pub fn delivery(delivery: &Delivery) -> pb::Delivery {
    pb::Delivery {
        state: match delivery.state {
            DeliveryState::Initial => pb::DeliveryState::Initial,
            DeliveryState::Pending => pb::DeliveryState::Pending,
            DeliveryState::Delivered => pb::DeliveryState::Delivered,
            DeliveryState::Failed => pb::DeliveryState::Failed,
        } as i32,
        version: delivery.version,
        command_id: delivery
            .command_id
            .as_ref()
            .map(|id| id.0.clone())
            .unwrap_or_default(),
        command: delivery.command.clone(),
        safety: delivery.safety,
        deadline: delivery.deadline.map(timestamp_to_proto),
        at: (delivery.at > Timestamp(0)).then(|| timestamp_to_proto(delivery.at)),
        by: delivery.by.clone(),
        reason: delivery.reason.clone(),
    }
}

/// A twin's listing line as the API returns it.
pub fn twin_summary(report: &TwinReport) -> pb::TwinSummary {
    summary_line(
        &report.asset,
        &report.twin_type,
        report.version,
        report.run_state,
        report.health,
        &report.alarms,
    )
}

/// A listing line read without waking a parked twin, as the API returns it.
pub fn summary(summary: &TwinSummary) -> pb::TwinSummary {
    summary_line(
        &summary.asset,
        &summary.twin_type,
        summary.version,
        summary.run_state,
        summary.health,
        &summary.alarms,
    )
}

fn summary_line(
    asset: &AssetPath,
    twin_type: &str,
    version: u64,
    state: RunState,
    health: f64,
    alarms: &[Alarm],
) -> pb::TwinSummary {
    pb::TwinSummary {
        asset_path: asset.to_string(),
        twin_type: twin_type.to_string(),
        version,
        run_state: run_state(state) as i32,
        health,
        alarm_count: u32::try_from(alarms.len()).unwrap_or(u32::MAX),
        mirror: None,
        worst_severity: alarms
            .iter()
            .filter(|alarm| alarm.is_standing())
            .map(|alarm| severity(alarm.severity))
            .max()
            .unwrap_or(pb::Severity::Unspecified) as i32,
        unacknowledged: u32::try_from(
            alarms
                .iter()
                .filter(|alarm| alarm.acknowledged.is_none())
                .count(),
        )
        .unwrap_or(u32::MAX),
    }
}

/// A twin change as the watch stream sends it.
pub fn twin_change(event: &TwinEvent) -> pb::TwinChange {
    use pb::twin_change::Change;
    let change = match &event.change {
        TwinChange::Reported {
            channel,
            value,
            quality: q,
            source_time,
        } => Change::Reported(pb::ReportedChange {
            channel: channel.clone(),
            value: *value,
            quality: quality(*q) as i32,
            source_time: Some(timestamp_to_proto(*source_time)),
        }),
        TwinChange::Desired { values } => Change::Desired(pb::DesiredChange {
            values: named_values(values),
        }),
        TwinChange::AlarmRaised(raised) => Change::AlarmRaised(alarm(raised)),
        TwinChange::AlarmCleared { code } => {
            Change::AlarmCleared(pb::AlarmCleared { code: code.clone() })
        }
        TwinChange::Tripped(tripped) => Change::Tripped(trip(tripped)),
        TwinChange::TripsCleared => Change::TripsCleared(pb::TripsCleared {}),
        TwinChange::Restarted => Change::Restarted(pb::Restarted {}),
        TwinChange::Condition {
            channel,
            condition: c,
        } => Change::Condition(pb::ConditionChange {
            channel: channel.clone(),
            condition: Some(condition(c)),
        }),
        TwinChange::Delivery { values } => Change::Delivery(pb::DeliveryChange {
            values: values
                .iter()
                .map(|(name, d)| pb::NamedDelivery {
                    name: name.clone(),
                    delivery: Some(delivery(d)),
                })
                .collect(),
        }),
    };
    pb::TwinChange {
        asset_path: event.asset.to_string(),
        version: event.version,
        change: Some(change),
    }
}

/// An audit record as the API returns it.
pub fn audit_record(record: &AuditRecord) -> pb::AuditRecord {
    pb::AuditRecord {
        seq: record.seq,
        at: Some(timestamp_to_proto(record.at)),
        asset_path: record.asset.to_string(),
        kind: i32::from(audit_kind_number(record.kind)),
        command_id: record.command_id.0.clone(),
        command: record.command.clone(),
        requested: named_values(&record.requested),
        origin: Some(origin(&record.origin)),
        state_version: record.state_version,
        models: record.models.iter().map(model_info).collect(),
        verdict: Some(verdict(&record.verdict)),
        applied: named_values(&record.applied),
        reason: record.reason.clone(),
        annotation: Annotation::of(record).as_ref().map(annotation),
    }
}

/// An audit kind's number in `doppel.v1.AuditKind`.
pub fn audit_kind_number(kind: AuditKind) -> u8 {
    match kind {
        AuditKind::Command => 1,
        AuditKind::SafetyAction => 2,
        AuditKind::Delivered => 3,
        AuditKind::DeliveryFailed => 4,
        AuditKind::AlarmResponse => 5,
        AuditKind::ModelDeployment => 6,
        AuditKind::Annotation => 7,
    }
}

/// The kernel's audit kind a `doppel.v1.AuditKind` names; `None` for UNSPECIFIED or
/// an unknown number.
pub fn audit_kind_from_proto(kind: i32) -> Option<AuditKind> {
    Some(match pb::AuditKind::try_from(kind).ok()? {
        pb::AuditKind::Unspecified => return None,
        pb::AuditKind::Command => AuditKind::Command,
        pb::AuditKind::SafetyAction => AuditKind::SafetyAction,
        pb::AuditKind::Delivered => AuditKind::Delivered,
        pb::AuditKind::DeliveryFailed => AuditKind::DeliveryFailed,
        pb::AuditKind::AlarmResponse => AuditKind::AlarmResponse,
        pb::AuditKind::ModelDeployment => AuditKind::ModelDeployment,
        pb::AuditKind::Annotation => AuditKind::Annotation,
    })
}

/// An annotation as the API returns it.
pub fn annotation(annotation: &Annotation) -> pb::Annotation {
    use pb::annotation::Subject;
    pb::Annotation {
        subject: Some(match &annotation.subject {
            AnnotationSubject::Alarm(code) => Subject::AlarmCode(code.clone()),
            AnnotationSubject::SafetyAction(seq) => Subject::SafetyActionSeq(*seq),
            AnnotationSubject::Recommendation { command, params } => {
                Subject::Recommendation(pb::RecommendedCommand {
                    command: command.clone(),
                    params: named_values(params),
                })
            }
        }),
        outcome: match annotation.outcome {
            AnnotationOutcome::Confirmed => pb::AnnotationOutcome::Confirmed,
            AnnotationOutcome::FalseAlarm => pb::AnnotationOutcome::FalseAlarm,
            AnnotationOutcome::Comment => pb::AnnotationOutcome::Comment,
        } as i32,
        note: annotation.note.clone(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps_round_trip_to_the_microsecond() {
        for micros in [0i64, 1, -1, 1_795_255_200_123_456, -62_135_596_800_000_000] {
            let at = Timestamp(micros);
            let proto = timestamp_to_proto(at);
            assert!((0..1_000_000_000).contains(&proto.nanos));
            assert_eq!(timestamp_from_proto(&proto), Some(at), "{micros}");
        }
        let bad_nanos = prost_types::Timestamp {
            seconds: 0,
            nanos: 1_000_000_000,
        };
        assert_eq!(timestamp_from_proto(&bad_nanos), None);
        let negative_nanos = prost_types::Timestamp {
            seconds: 0,
            nanos: -1,
        };
        assert_eq!(timestamp_from_proto(&negative_nanos), None);
        let far = prost_types::Timestamp {
            seconds: i64::MAX,
            nanos: 0,
        };
        assert_eq!(timestamp_from_proto(&far), None);
    }

    #[test]
    fn durations_refuse_negative_values() {
        let d = Duration::from_millis(1500);
        assert_eq!(duration_from_proto(&duration_to_proto(d)), Some(d));
        let negative = prost_types::Duration {
            seconds: -1,
            nanos: 0,
        };
        assert_eq!(duration_from_proto(&negative), None);
    }

    #[test]
    fn values_round_trip_and_an_empty_value_is_none() {
        for value in [Value::Bool(true), Value::Int(-3), Value::Float(2.5)] {
            assert_eq!(value_from_proto(&value_to_proto(value)), Some(value));
        }
        assert_eq!(value_from_proto(&pb::Value { kind: None }), None);
    }
}
