//! Every answer of a node twice: as text for a person (aligned tables, times in UTC to
//! the millisecond, health as a percentage) and as JSON for a script (snake_case
//! field names as in the proto, enums as lowercase words, times as RFC 3339 strings
//! to the microsecond, values as bare JSON booleans and numbers).
//!
//! Text from the node (names, alarm messages, reasons) is shown with control
//! characters escaped, so a hostile node cannot drive the terminal.

use std::fmt::Write as _;
use std::time::Duration;

use doppel::kernel::Timestamp;
use doppel::proto::v1::{
    AuditKind, AuditRecord, ChannelCondition, Delivery, DeliveryState, ModelInfo, NamedValue,
    Origin, OriginKind, Quality, RecommendCandidate, RecommendResponse, RunState, Sample,
    SendCommandResponse, Severity, SimulateResponse, Twin, TwinChange, TwinSummary, Value, Verdict,
    twin_change, value, verdict,
};

use super::json::Json;
use super::table::{Align, Table};

/// The [`Timestamp`] of an optional `google.protobuf.Timestamp` field, whose prost
/// type this crate does not name.
macro_rules! time_of {
    ($field:expr) => {
        $field.as_ref().map(|t| time_from_parts(t.seconds, t.nanos))
    };
}

/// The time of a `google.protobuf.Timestamp`'s parts, saturating far outside the
/// years anyone means.
pub fn time_from_parts(seconds: i64, nanos: i32) -> Timestamp {
    Timestamp(
        seconds
            .saturating_mul(1_000_000)
            .saturating_add(i64::from(nanos) / 1_000),
    )
}

/// Text from the node, with control characters escaped (`\n`, `\u{1b}`).
pub fn clean(text: &str) -> String {
    if !text.chars().any(char::is_control) {
        return text.to_string();
    }
    text.chars()
        .map(|c| {
            if c.is_control() {
                c.escape_default().to_string()
            } else {
                c.to_string()
            }
        })
        .collect()
}

/// An enum's word, or `unknown(N)` for a value this CLI does not know.
fn word(known: Option<&'static str>, raw: i32) -> String {
    match known {
        Some(word) => word.to_string(),
        None => format!("unknown({raw})"),
    }
}

/// A run state in words.
pub fn run_state_word(raw: i32) -> String {
    let known = RunState::try_from(raw).ok().map(|state| match state {
        RunState::Unspecified => "unspecified",
        RunState::Running => "running",
        RunState::Stopped => "stopped",
        RunState::Tripped => "tripped",
    });
    word(known, raw)
}

/// A quality in words.
pub fn quality_word(raw: i32) -> String {
    let known = Quality::try_from(raw).ok().map(|quality| match quality {
        Quality::Unspecified => "unspecified",
        Quality::Good => "good",
        Quality::Uncertain => "uncertain",
        Quality::Bad => "bad",
        Quality::Stale => "stale",
    });
    word(known, raw)
}

/// A severity in words.
pub fn severity_word(raw: i32) -> String {
    let known = Severity::try_from(raw).ok().map(|severity| match severity {
        Severity::Unspecified => "unspecified",
        Severity::Info => "info",
        Severity::Warning => "warning",
        Severity::Critical => "critical",
    });
    word(known, raw)
}

/// An origin kind in words.
pub fn origin_kind_word(raw: i32) -> String {
    let known = OriginKind::try_from(raw).ok().map(|kind| match kind {
        OriginKind::Unspecified => "unspecified",
        OriginKind::Operator => "operator",
        OriginKind::Planner => "planner",
        OriginKind::Automation => "automation",
        OriginKind::Safety => "safety",
        OriginKind::System => "system",
    });
    word(known, raw)
}

/// An audit kind in words.
pub fn audit_kind_word(raw: i32) -> String {
    let known = AuditKind::try_from(raw).ok().map(|kind| match kind {
        AuditKind::Unspecified => "unspecified",
        AuditKind::Command => "command",
        AuditKind::SafetyAction => "safety_action",
        AuditKind::Delivered => "delivered",
        AuditKind::DeliveryFailed => "delivery_failed",
        AuditKind::AlarmResponse => "alarm_response",
        AuditKind::ModelDeployment => "model_deployment",
        AuditKind::Annotation => "annotation",
    });
    word(known, raw)
}

/// A delivery state in words.
pub fn delivery_word(raw: i32) -> String {
    let known = DeliveryState::try_from(raw).ok().map(|state| match state {
        DeliveryState::Unspecified => "unspecified",
        DeliveryState::Initial => "initial",
        DeliveryState::Pending => "pending",
        DeliveryState::Delivered => "delivered",
        DeliveryState::Failed => "failed",
    });
    word(known, raw)
}

/// A desired value's delivery for a person: `delivered 10:00:01.250 by opcua:plc-1`,
/// `pending (safety)`, `failed: <reason>`.
fn delivery_text(delivery: Option<&Delivery>) -> String {
    let Some(delivery) = delivery else {
        return "-".to_string();
    };
    let mut text = delivery_word(delivery.state);
    if delivery.state == DeliveryState::Delivered as i32 {
        let _ = write!(
            text,
            " {} by {}",
            time_text(time_of!(delivery.at)),
            clean(&delivery.by)
        );
    }
    if delivery.safety {
        text.push_str(" (safety)");
    }
    if delivery.state == DeliveryState::Failed as i32 {
        let _ = write!(text, ": {}", clean(&delivery.reason));
    }
    text
}

fn delivery_json(delivery: Option<&Delivery>) -> Json {
    let Some(delivery) = delivery else {
        return Json::Null;
    };
    Json::object()
        .with("state", delivery_word(delivery.state))
        .with("version", delivery.version)
        .with("command_id", &delivery.command_id)
        .with("command", &delivery.command)
        .with("safety", delivery.safety)
        .with("deadline", time_json(time_of!(delivery.deadline)))
        .with("at", time_json(time_of!(delivery.at)))
        .with("by", &delivery.by)
        .with("reason", &delivery.reason)
}

/// A number for a person: whole numbers without decimals, others to three decimals
/// without trailing zeros, tiny ones in scientific notation.
pub fn number_text(number: f64) -> String {
    if !number.is_finite() {
        return format!("{number}");
    }
    if number.fract() == 0.0 && number.abs() < 1e15 {
        return format!("{number:.0}");
    }
    if number.abs() < 0.001 {
        return format!("{number:.2e}");
    }
    let text = format!("{number:.3}");
    text.trim_end_matches('0').trim_end_matches('.').to_string()
}

/// A fraction 0..1 as a whole percentage.
pub fn percent_text(fraction: f64) -> String {
    if fraction.is_finite() {
        format!("{:.0}%", fraction * 100.0)
    } else {
        format!("{fraction}")
    }
}

/// A time for a person: RFC 3339 in UTC to the millisecond; `-` when absent.
pub fn time_text(time: Option<Timestamp>) -> String {
    let Some(time) = time else {
        return "-".to_string();
    };
    let text = time.to_rfc3339();
    match text.rfind('.') {
        Some(dot) if text.len() >= dot + 4 => format!("{}Z", &text[..dot + 4]),
        _ => text,
    }
}

/// A time for a script: RFC 3339 to the microsecond, or `null`.
pub fn time_json(time: Option<Timestamp>) -> Json {
    time.map_or(Json::Null, |time| Json::Str(time.to_rfc3339()))
}

/// A duration for a person: `0s`, `250ms`, `45s`, `1.5s`, `10m`, `1h30m`, `2d3h`.
pub fn duration_text(duration: Duration) -> String {
    let total_ms = duration.as_millis();
    if total_ms == 0 {
        return "0s".to_string();
    }
    if total_ms < 1000 {
        return format!("{total_ms}ms");
    }
    let whole_secs = duration.as_secs();
    let mut text = String::new();
    for (count, unit) in [
        (whole_secs / 86_400, "d"),
        (whole_secs % 86_400 / 3600, "h"),
        (whole_secs % 3600 / 60, "m"),
    ] {
        if count > 0 {
            let _ = write!(text, "{count}{unit}");
        }
    }
    let secs = whole_secs % 60;
    let millis = duration.subsec_millis();
    if millis > 0 {
        let _ = write!(
            text,
            "{}s",
            number_text(secs as f64 + f64::from(millis) / 1000.0)
        );
    } else if secs > 0 || text.is_empty() {
        let _ = write!(text, "{secs}s");
    }
    text
}

/// Seconds from now as `+0s`, `+10s`, `+1m30s`; negative ones as `-10s`.
pub fn offset_text(secs: f64) -> String {
    if !secs.is_finite() {
        return format!("{secs}");
    }
    let sign = if secs < 0.0 { "-" } else { "+" };
    let magnitude = secs.abs().min(100.0 * 365.0 * 86_400.0);
    format!(
        "{sign}{}",
        duration_text(Duration::from_secs_f64(magnitude))
    )
}

/// A typed value for a person; `-` when absent.
pub fn value_text(value: Option<&Value>) -> String {
    match value.and_then(|v| v.kind) {
        Some(value::Kind::BoolValue(b)) => b.to_string(),
        Some(value::Kind::IntValue(i)) => i.to_string(),
        Some(value::Kind::FloatValue(f)) => number_text(f),
        None => "-".to_string(),
    }
}

/// A typed value for a script: a bare boolean or number, or `null`.
pub fn value_json(value: Option<&Value>) -> Json {
    match value.and_then(|v| v.kind) {
        Some(value::Kind::BoolValue(b)) => Json::Bool(b),
        Some(value::Kind::IntValue(i)) => Json::Int(i),
        Some(value::Kind::FloatValue(f)) => Json::Float(f),
        None => Json::Null,
    }
}

/// Named values for a person: `speed=2400 running=true`; `-` when there are none.
pub fn named_text(values: &[NamedValue]) -> String {
    if values.is_empty() {
        return "-".to_string();
    }
    values
        .iter()
        .map(|v| format!("{}={}", clean(&v.name), value_text(v.value.as_ref())))
        .collect::<Vec<_>>()
        .join(" ")
}

/// Named values for a script: an object from name to value.
pub fn named_json(values: &[NamedValue]) -> Json {
    Json::Object(
        values
            .iter()
            .map(|v| (v.name.clone(), value_json(v.value.as_ref())))
            .collect(),
    )
}

/// An origin for a person: `operator:ann`.
pub fn origin_text(origin: Option<&Origin>) -> String {
    match origin {
        Some(origin) if origin.principal.is_empty() => origin_kind_word(origin.kind),
        Some(origin) => format!(
            "{}:{}",
            origin_kind_word(origin.kind),
            clean(&origin.principal)
        ),
        None => "-".to_string(),
    }
}

/// An origin for a script.
pub fn origin_json(origin: Option<&Origin>) -> Json {
    match origin {
        Some(origin) => Json::object()
            .with("kind", origin_kind_word(origin.kind))
            .with("principal", &origin.principal),
        None => Json::Null,
    }
}

/// Models for a person: `thermal 1.0 (95%), degradation 1.0 (50%)`.
pub fn models_text(models: &[ModelInfo]) -> String {
    if models.is_empty() {
        return "-".to_string();
    }
    models
        .iter()
        .map(|m| {
            format!(
                "{} {} ({})",
                clean(&m.name),
                clean(&m.version),
                percent_text(m.confidence)
            )
        })
        .collect::<Vec<_>>()
        .join(", ")
}

/// Models for a script.
pub fn models_json(models: &[ModelInfo]) -> Json {
    Json::Array(
        models
            .iter()
            .map(|m| {
                Json::object()
                    .with("name", &m.name)
                    .with("version", &m.version)
                    .with("confidence", m.confidence)
            })
            .collect(),
    )
}

/// A verdict for a person: `accepted`, `clamped: speed 3000 → 2400 (envelope: above
/// the envelope)`, `denied (trip: temperature above 95)`.
pub fn verdict_text(verdict: Option<&Verdict>) -> String {
    match verdict.and_then(|v| v.outcome.as_ref()) {
        Some(verdict::Outcome::Accepted(_)) => "accepted".to_string(),
        Some(verdict::Outcome::Clamped(clamped)) => {
            let clamps: Vec<String> = clamped
                .clamps
                .iter()
                .map(|clamp| {
                    let mut text = format!(
                        "{} {} → {} ({}",
                        clean(&clamp.desired),
                        value_text(clamp.requested.as_ref()),
                        value_text(clamp.applied.as_ref()),
                        clean(&clamp.governor)
                    );
                    if !clamp.reason.is_empty() {
                        let _ = write!(text, ": {}", clean(&clamp.reason));
                    }
                    text.push(')');
                    text
                })
                .collect();
            if clamps.is_empty() {
                "clamped".to_string()
            } else {
                format!("clamped: {}", clamps.join("; "))
            }
        }
        Some(verdict::Outcome::Denied(denied)) => {
            format!(
                "denied ({}: {})",
                clean(&denied.governor),
                clean(&denied.reason)
            )
        }
        None => "no verdict".to_string(),
    }
}

/// A verdict for a script: `{"outcome": "accepted" | "clamped" | "denied", …}` with
/// the clamps, or the denying governor and its reason.
pub fn verdict_json(verdict: Option<&Verdict>) -> Json {
    match verdict.and_then(|v| v.outcome.as_ref()) {
        Some(verdict::Outcome::Accepted(_)) => Json::object().with("outcome", "accepted"),
        Some(verdict::Outcome::Clamped(clamped)) => Json::object().with("outcome", "clamped").with(
            "clamps",
            Json::Array(
                clamped
                    .clamps
                    .iter()
                    .map(|clamp| {
                        Json::object()
                            .with("desired", &clamp.desired)
                            .with("requested", value_json(clamp.requested.as_ref()))
                            .with("applied", value_json(clamp.applied.as_ref()))
                            .with("governor", &clamp.governor)
                            .with("reason", &clamp.reason)
                    })
                    .collect(),
            ),
        ),
        Some(verdict::Outcome::Denied(denied)) => Json::object()
            .with("outcome", "denied")
            .with("governor", &denied.governor)
            .with("reason", &denied.reason),
        None => Json::Null,
    }
}

/// The columns of a twin listing.
const TWIN_COLUMNS: &[(&str, Align)] = &[
    ("PATH", Align::Left),
    ("TYPE", Align::Left),
    ("STATE", Align::Left),
    ("HEALTH", Align::Right),
    ("ALARMS", Align::Right),
    ("VERSION", Align::Right),
];

/// A twin listing for a person.
pub fn twins_table(twins: &[TwinSummary]) -> String {
    let mut table = Table::new(TWIN_COLUMNS);
    for twin in twins {
        table.row(vec![
            clean(&twin.asset_path),
            clean(&twin.twin_type),
            run_state_word(twin.run_state),
            percent_text(twin.health),
            twin.alarm_count.to_string(),
            twin.version.to_string(),
        ]);
    }
    table.render()
}

/// One line of a twin listing for a script.
pub fn twin_summary_json(twin: &TwinSummary) -> Json {
    Json::object()
        .with("asset_path", &twin.asset_path)
        .with("twin_type", &twin.twin_type)
        .with("version", twin.version)
        .with("run_state", run_state_word(twin.run_state))
        .with("health", twin.health)
        .with("alarm_count", twin.alarm_count)
}

/// The listing line of a full twin.
pub fn summary_of(twin: &Twin) -> TwinSummary {
    TwinSummary {
        asset_path: twin.asset_path.clone(),
        twin_type: twin.twin_type.clone(),
        version: twin.version,
        run_state: twin.run_state,
        health: twin.health,
        alarm_count: u32::try_from(twin.alarms.len()).unwrap_or(u32::MAX),
        mirror: twin.mirror.clone(),
        worst_severity: twin
            .alarms
            .iter()
            .filter(|alarm| {
                alarm.active
                    && alarm.shelved.is_none()
                    && alarm.out_of_service.is_none()
                    && !alarm.suppressed
            })
            .map(|alarm| alarm.severity)
            .max()
            .unwrap_or_default(),
        unacknowledged: u32::try_from(
            twin.alarms
                .iter()
                .filter(|alarm| alarm.acknowledged.is_none())
                .count(),
        )
        .unwrap_or(u32::MAX),
    }
}

/// A twin for a person: a header block, then a table per non-empty section.
pub fn twin_text(twin: &Twin) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "{}", clean(&twin.asset_path));
    let active = twin.alarms.iter().filter(|a| a.active).count();
    let alarms = match (twin.alarms.len(), active) {
        (0, _) => "none".to_string(),
        (all, active) if all == active => format!("{active} active"),
        (all, active) => format!("{active} active, {} returned unacknowledged", all - active),
    };
    let trips = match twin.trips.len() {
        0 => "none".to_string(),
        n => format!("{n} latched"),
    };
    for (name, value) in [
        ("type", clean(&twin.twin_type)),
        ("state", run_state_word(twin.run_state)),
        ("health", percent_text(twin.health)),
        ("alarms", alarms),
        ("trips", trips),
        ("version", twin.version.to_string()),
        ("updated", time_text(time_of!(twin.updated_at))),
        ("models", models_text(&twin.models)),
    ] {
        let _ = writeln!(out, "  {name:<8} {value}");
    }
    if let Some(mirror) = &twin.mirror {
        let _ = writeln!(out, "  {:<8} {}", "mirror", mirror_text(mirror));
    }

    if !twin.reported.is_empty() {
        let mut table = Table::new(&[
            ("REPORTED", Align::Left),
            ("VALUE", Align::Right),
            ("UNIT", Align::Left),
            ("QUALITY", Align::Left),
            ("SOURCE TIME", Align::Left),
        ]);
        for reported in &twin.reported {
            let (value, mut quality, at) = match &reported.sample {
                Some(sample) => (
                    number_text(sample.value),
                    quality_word(sample.quality),
                    time_text(time_of!(sample.source_time)),
                ),
                None => ("-".to_string(), "-".to_string(), "-".to_string()),
            };
            if let Some(condition) = &reported.condition {
                quality = format!(
                    "{}: {}",
                    quality_word(condition.quality),
                    clean(&condition.reason)
                );
            }
            table.row(vec![
                clean(&reported.channel),
                value,
                clean(&reported.unit),
                quality,
                at,
            ]);
        }
        out.push('\n');
        out.push_str(&table.render());
    }
    if !twin.desired.is_empty() {
        let mut table = Table::new(&[
            ("DESIRED", Align::Left),
            ("VALUE", Align::Right),
            ("SET AT", Align::Left),
            ("DELIVERY", Align::Left),
            ("MACHINE", Align::Left),
        ]);
        for desired in &twin.desired {
            table.row(vec![
                clean(&desired.name),
                value_text(desired.value.as_ref()),
                time_text(time_of!(desired.set_at)),
                delivery_text(desired.delivery.as_ref()),
                match desired.agrees {
                    Some(true) => "agrees".to_string(),
                    Some(false) => "DISAGREES".to_string(),
                    None => "-".to_string(),
                },
            ]);
        }
        out.push('\n');
        out.push_str(&table.render());
    }
    if !twin.derived.is_empty() {
        let mut table = Table::new(&[
            ("DERIVED", Align::Left),
            ("VALUE", Align::Right),
            ("CONFIDENCE", Align::Right),
            ("MODEL", Align::Left),
            ("AT", Align::Left),
        ]);
        for derived in &twin.derived {
            table.row(vec![
                clean(&derived.name),
                derived.value.map_or("-".to_string(), number_text),
                percent_text(derived.confidence),
                clean(&derived.model),
                time_text(time_of!(derived.at)),
            ]);
        }
        out.push('\n');
        out.push_str(&table.render());
    }
    if !twin.shadows.is_empty() {
        let mut table = Table::new(&[
            ("SHADOW OUTPUT", Align::Left),
            ("VALUE", Align::Right),
            ("PRODUCTION", Align::Right),
            ("MEAN |Δ|", Align::Right),
            ("MODEL", Align::Left),
            ("DEPLOYMENT", Align::Left),
        ]);
        for shadow in &twin.shadows {
            let role = if shadow.baseline {
                "canary baseline"
            } else {
                "shadow"
            };
            for value in &shadow.values {
                let production = twin
                    .derived
                    .iter()
                    .find(|d| d.model == shadow.model && d.name == value.name)
                    .and_then(|d| d.value);
                let mean = (shadow.divergence.as_ref())
                    .and_then(|d| d.outputs.iter().find(|o| o.name == value.name))
                    .map_or("-".to_string(), |o| number_text(o.mean_abs));
                table.row(vec![
                    clean(&value.name),
                    value.value.map_or("-".to_string(), number_text),
                    production.map_or("-".to_string(), number_text),
                    mean,
                    format!("{} {}", clean(&shadow.model), clean(&shadow.version)),
                    format!("{} ({role})", shadow.deployment),
                ]);
            }
        }
        out.push('\n');
        out.push_str(&table.render());
    }
    if !twin.alarms.is_empty() {
        let mut table = Table::new(&[
            ("ALARM", Align::Left),
            ("SEVERITY", Align::Left),
            ("STATE", Align::Left),
            ("MESSAGE", Align::Left),
            ("RAISED BY", Align::Left),
            ("SINCE", Align::Left),
        ]);
        for alarm in &twin.alarms {
            table.row(vec![
                clean(&alarm.code),
                severity_word(alarm.severity),
                clean(&alarm.state),
                clean(&alarm.message),
                clean(&alarm.raised_by),
                time_text(time_of!(alarm.since)),
            ]);
        }
        out.push('\n');
        out.push_str(&table.render());
        for alarm in &twin.alarms {
            if let Some(explanation) = &alarm.explanation {
                out.push_str(&explanation_text(&alarm.code, explanation));
            }
        }
    }
    if !twin.trips.is_empty() {
        let mut table = Table::new(&[
            ("TRIP", Align::Left),
            ("REASON", Align::Left),
            ("AT", Align::Left),
        ]);
        for trip in &twin.trips {
            table.row(vec![
                clean(&trip.governor),
                clean(&trip.reason),
                time_text(time_of!(trip.at)),
            ]);
        }
        out.push('\n');
        out.push_str(&table.render());
    }
    out
}

/// Why an alarm was raised, for a person: one line, then its inputs.
fn explanation_text(code: &str, explanation: &doppel::proto::v1::Explanation) -> String {
    let inputs: Vec<String> = explanation
        .inputs
        .iter()
        .map(|input| {
            let unit = if input.unit.is_empty() {
                String::new()
            } else {
                format!(" {}", clean(&input.unit))
            };
            format!("{} {}{unit}", clean(&input.name), number_text(input.value))
        })
        .collect();
    format!(
        "why {}: {} ({} {}, confidence {})\n    from {}\n",
        clean(code),
        clean(&explanation.summary),
        clean(&explanation.source),
        clean(&explanation.version),
        percent_text(explanation.confidence),
        inputs.join(", ")
    )
}

/// Why an alarm was raised, for a script.
fn explanation_json(explanation: &doppel::proto::v1::Explanation) -> Json {
    Json::object()
        .with("source", &explanation.source)
        .with("version", &explanation.version)
        .with("confidence", explanation.confidence)
        .with("summary", &explanation.summary)
        .with(
            "inputs",
            Json::Array(
                explanation
                    .inputs
                    .iter()
                    .map(|input| {
                        Json::object()
                            .with("name", &input.name)
                            .with("value", input.value)
                            .with("unit", &input.unit)
                    })
                    .collect(),
            ),
        )
}

/// Where a mirrored twin comes from: owner, lag, link state.
fn mirror_text(mirror: &doppel::proto::v1::Mirror) -> String {
    let lag = mirror
        .lag
        .as_ref()
        .map(|lag| {
            Duration::from_secs(u64::try_from(lag.seconds).unwrap_or(0))
                + Duration::from_nanos(u64::try_from(lag.nanos).unwrap_or(0))
        })
        .unwrap_or_default();
    format!(
        "of edge node {}, lag {}, link {}",
        clean(&mirror.owner_node),
        duration_text(lag),
        if mirror.connected { "up" } else { "down" }
    )
}

/// A twin for a script.
pub fn twin_json(twin: &Twin) -> Json {
    Json::object()
        .with("asset_path", &twin.asset_path)
        .with("twin_type", &twin.twin_type)
        .with("version", twin.version)
        .with("run_state", run_state_word(twin.run_state))
        .with("health", twin.health)
        .with("updated_at", time_json(time_of!(twin.updated_at)))
        .with(
            "mirror",
            match &twin.mirror {
                Some(mirror) => Json::object()
                    .with("owner_node", &mirror.owner_node)
                    .with(
                        "lag_ms",
                        mirror.lag.as_ref().map_or(0, |lag| {
                            lag.seconds.saturating_mul(1000) + i64::from(lag.nanos / 1_000_000)
                        }),
                    )
                    .with("connected", mirror.connected),
                None => Json::Null,
            },
        )
        .with(
            "reported",
            Json::Array(
                twin.reported
                    .iter()
                    .map(|reported| {
                        let object = Json::object()
                            .with("channel", &reported.channel)
                            .with("unit", &reported.unit)
                            .with("condition", condition_json(reported.condition.as_ref()));
                        match &reported.sample {
                            Some(sample) => object
                                .with("value", sample.value)
                                .with("quality", quality_word(sample.quality))
                                .with("source_time", time_json(time_of!(sample.source_time)))
                                .with("receive_time", time_json(time_of!(sample.receive_time)))
                                .with("seq", sample.seq),
                            None => object
                                .with("value", Json::Null)
                                .with("quality", Json::Null)
                                .with("source_time", Json::Null)
                                .with("receive_time", Json::Null)
                                .with("seq", Json::Null),
                        }
                    })
                    .collect(),
            ),
        )
        .with(
            "desired",
            Json::Array(
                twin.desired
                    .iter()
                    .map(|desired| {
                        Json::object()
                            .with("name", &desired.name)
                            .with("value", value_json(desired.value.as_ref()))
                            .with("set_at", time_json(time_of!(desired.set_at)))
                            .with("delivery", delivery_json(desired.delivery.as_ref()))
                            .with("agrees", desired.agrees.map_or(Json::Null, Json::from))
                    })
                    .collect(),
            ),
        )
        .with(
            "derived",
            Json::Array(
                twin.derived
                    .iter()
                    .map(|derived| {
                        Json::object()
                            .with("name", &derived.name)
                            .with("model", &derived.model)
                            .with("value", derived.value.map_or(Json::Null, Json::Float))
                            .with("confidence", derived.confidence)
                            .with("at", time_json(time_of!(derived.at)))
                    })
                    .collect(),
            ),
        )
        .with(
            "alarms",
            Json::Array(
                twin.alarms
                    .iter()
                    .map(|alarm| {
                        Json::object()
                            .with("code", &alarm.code)
                            .with("severity", severity_word(alarm.severity))
                            .with("state", &alarm.state)
                            .with("message", &alarm.message)
                            .with("raised_by", &alarm.raised_by)
                            .with("since", time_json(time_of!(alarm.since)))
                            .with(
                                "explanation",
                                alarm
                                    .explanation
                                    .as_ref()
                                    .map_or(Json::Null, explanation_json),
                            )
                    })
                    .collect(),
            ),
        )
        .with(
            "trips",
            Json::Array(
                twin.trips
                    .iter()
                    .map(|trip| {
                        Json::object()
                            .with("governor", &trip.governor)
                            .with("reason", &trip.reason)
                            .with("at", time_json(time_of!(trip.at)))
                    })
                    .collect(),
            ),
        )
        .with("models", models_json(&twin.models))
        .with(
            "shadows",
            Json::Array(twin.shadows.iter().map(shadow_json).collect()),
        )
}

/// A shadow model for a script: its deployment, version and outputs, the alarms it
/// would have raised and its divergence.
pub fn shadow_json(shadow: &doppel::proto::v1::ShadowModel) -> Json {
    Json::object()
        .with("deployment", shadow.deployment)
        .with("model", &shadow.model)
        .with("version", &shadow.version)
        .with("production_version", &shadow.production_version)
        .with("baseline", shadow.baseline)
        .with(
            "values",
            Json::Array(
                shadow
                    .values
                    .iter()
                    .map(|value| {
                        Json::object()
                            .with("name", &value.name)
                            .with("value", value.value.map_or(Json::Null, Json::Float))
                            .with("confidence", value.confidence)
                    })
                    .collect(),
            ),
        )
        .with(
            "alarms",
            Json::Array(
                shadow
                    .alarms
                    .iter()
                    .map(|a| Json::from(a.as_str()))
                    .collect(),
            ),
        )
        .with("divergence", divergence_json(shadow.divergence.as_ref()))
}

/// Divergence figures for a script.
pub fn divergence_json(divergence: Option<&doppel::proto::v1::Divergence>) -> Json {
    let Some(divergence) = divergence else {
        return Json::Null;
    };
    Json::object()
        .with("twins", divergence.twins)
        .with("samples", divergence.samples)
        .with(
            "outputs",
            Json::Array(
                divergence
                    .outputs
                    .iter()
                    .map(|output| {
                        Json::object()
                            .with("name", &output.name)
                            .with("compared", output.compared)
                            .with("mean_abs", output.mean_abs)
                            .with("max_abs", output.max_abs)
                    })
                    .collect(),
            ),
        )
        .with("shadow_only_alarms", divergence.shadow_only_alarms)
        .with("production_only_alarms", divergence.production_only_alarms)
        .with(
            "informed_safety_actions",
            divergence.informed_safety_actions,
        )
}

/// A channel's condition for a script: `{"quality", "reason", "since"}`, or null.
fn condition_json(condition: Option<&ChannelCondition>) -> Json {
    match condition {
        Some(condition) => Json::object()
            .with("quality", quality_word(condition.quality))
            .with("reason", &condition.reason)
            .with("since", time_json(time_of!(condition.since))),
        None => Json::Null,
    }
}

/// What a change did, for a person: `temperature 55.2`, `desired speed=2400`,
/// `alarm raised warning rul_low: …`.
fn change_description(change: &TwinChange) -> String {
    match &change.change {
        Some(twin_change::Change::Reported(reported)) => {
            let mut text = format!(
                "{} {}",
                clean(&reported.channel),
                number_text(reported.value)
            );
            if reported.quality != Quality::Good as i32 {
                let _ = write!(text, " ({})", quality_word(reported.quality));
            }
            text
        }
        Some(twin_change::Change::Desired(desired)) => {
            format!("desired {}", named_text(&desired.values))
        }
        Some(twin_change::Change::AlarmRaised(alarm)) => format!(
            "alarm raised {} {}: {} (by {})",
            severity_word(alarm.severity),
            clean(&alarm.code),
            clean(&alarm.message),
            clean(&alarm.raised_by)
        ),
        Some(twin_change::Change::AlarmCleared(cleared)) => {
            format!("alarm cleared {}", clean(&cleared.code))
        }
        Some(twin_change::Change::Tripped(trip)) => format!(
            "TRIPPED by {}: {}",
            clean(&trip.governor),
            clean(&trip.reason)
        ),
        Some(twin_change::Change::Condition(change)) => match &change.condition {
            Some(condition) => format!(
                "{} {}: {}",
                clean(&change.channel),
                quality_word(condition.quality),
                clean(&condition.reason)
            ),
            None => format!("{} condition", clean(&change.channel)),
        },
        Some(twin_change::Change::TripsCleared(_)) => "trips cleared".to_string(),
        Some(twin_change::Change::Restarted(_)) => "restarted from durable state".to_string(),
        Some(twin_change::Change::Delivery(change)) => {
            let parts: Vec<String> = change
                .values
                .iter()
                .map(|named| {
                    format!(
                        "{} {}",
                        clean(&named.name),
                        delivery_text(named.delivery.as_ref())
                    )
                })
                .collect();
            format!("delivery {}", parts.join(", "))
        }
        None => "changed".to_string(),
    }
}

/// One change of a watch for a person: `<time received>  <path>  v<version>  <what>`,
/// the path padded to `path_width`.
pub fn change_line(change: &TwinChange, received: Timestamp, path_width: usize) -> String {
    format!(
        "{}  {:<path_width$}  v{:<6}  {}",
        time_text(Some(received)),
        clean(&change.asset_path),
        change.version,
        change_description(change)
    )
}

/// One change of a watch for a script: `{"event": "change", "asset_path", "version",
/// "kind": …, …}` with the kind's own fields.
pub fn change_json(change: &TwinChange) -> Json {
    let object = Json::object()
        .with("event", "change")
        .with("asset_path", &change.asset_path)
        .with("version", change.version);
    match &change.change {
        Some(twin_change::Change::Reported(reported)) => object
            .with("kind", "reported")
            .with("channel", &reported.channel)
            .with("value", reported.value)
            .with("quality", quality_word(reported.quality))
            .with("source_time", time_json(time_of!(reported.source_time))),
        Some(twin_change::Change::Desired(desired)) => object
            .with("kind", "desired")
            .with("values", named_json(&desired.values)),
        Some(twin_change::Change::AlarmRaised(alarm)) => object
            .with("kind", "alarm_raised")
            .with("code", &alarm.code)
            .with("severity", severity_word(alarm.severity))
            .with("message", &alarm.message)
            .with("raised_by", &alarm.raised_by)
            .with("since", time_json(time_of!(alarm.since))),
        Some(twin_change::Change::AlarmCleared(cleared)) => object
            .with("kind", "alarm_cleared")
            .with("code", &cleared.code),
        Some(twin_change::Change::Tripped(trip)) => object
            .with("kind", "tripped")
            .with("governor", &trip.governor)
            .with("reason", &trip.reason)
            .with("at", time_json(time_of!(trip.at))),
        Some(twin_change::Change::Condition(change)) => object
            .with("kind", "condition")
            .with("channel", &change.channel)
            .with("condition", condition_json(change.condition.as_ref())),
        Some(twin_change::Change::TripsCleared(_)) => object.with("kind", "trips_cleared"),
        Some(twin_change::Change::Restarted(_)) => object.with("kind", "restarted"),
        Some(twin_change::Change::Delivery(change)) => object.with("kind", "delivery").with(
            "values",
            Json::Array(
                change
                    .values
                    .iter()
                    .map(|named| {
                        Json::object()
                            .with("name", &named.name)
                            .with("delivery", delivery_json(named.delivery.as_ref()))
                    })
                    .collect(),
            ),
        ),
        None => object.with("kind", "unknown"),
    }
}

/// A command's outcome for a person: the verdict, what was applied, and the record.
pub fn command_text(response: &SendCommandResponse) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "{}", verdict_text(response.verdict.as_ref()));
    if !response.applied.is_empty() {
        let _ = writeln!(out, "  applied  {}", named_text(&response.applied));
    }
    let _ = writeln!(out, "  command  {}", clean(&response.command_id));
    let _ = writeln!(out, "  origin   {}", origin_text(response.origin.as_ref()));
    let _ = writeln!(out, "  version  {}", response.version);
    let _ = writeln!(out, "  audit    #{}", response.audit_seq);
    if response.replayed {
        let _ = writeln!(
            out,
            "  replayed: the outcome of an earlier request with this idempotency key; nothing was actuated again"
        );
    }
    out
}

/// A command's outcome for a script.
pub fn command_json(response: &SendCommandResponse) -> Json {
    Json::object()
        .with("command_id", &response.command_id)
        .with("verdict", verdict_json(response.verdict.as_ref()))
        .with("applied", named_json(&response.applied))
        .with("version", response.version)
        .with("audit_seq", response.audit_seq)
        .with("replayed", response.replayed)
        .with("origin", origin_json(response.origin.as_ref()))
}

/// A what-if answer for a person: the verdict, the assumptions, and one table row per
/// projected instant with a column per series.
pub fn simulation_text(response: &SimulateResponse) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "verdict  {}", verdict_text(response.verdict.as_ref()));
    let _ = writeln!(out, "assumes  {}", named_text(&response.assumed));
    let _ = writeln!(out, "models   {}", models_text(&response.models));
    if response.series.is_empty() {
        let _ = writeln!(out, "\nno projection: the twin's models project nothing");
        return out;
    }
    // Series may sample different instants: rows are the union, keyed to the
    // millisecond.
    let key = |t: f64| (t * 1000.0).round() as i64;
    let mut instants: Vec<(i64, f64)> = response
        .series
        .iter()
        .flat_map(|series| series.points.iter().map(|p| (key(p.t), p.t)))
        .filter(|(_, t)| t.is_finite())
        .collect();
    instants.sort_by_key(|(k, _)| *k);
    instants.dedup_by_key(|(k, _)| *k);
    let mut columns: Vec<(String, Align)> = vec![("T".to_string(), Align::Right)];
    columns.extend(
        response
            .series
            .iter()
            .map(|series| (clean(&series.name), Align::Right)),
    );
    let column_refs: Vec<(&str, Align)> = columns.iter().map(|(n, a)| (n.as_str(), *a)).collect();
    let mut table = Table::new(&column_refs);
    for (k, t) in instants {
        let mut row = vec![offset_text(t)];
        for series in &response.series {
            row.push(series.points.iter().find(|p| key(p.t) == k).map_or(
                String::new(),
                |p| match (p.lower, p.upper) {
                    (Some(lower), Some(upper)) => format!(
                        "{} ({} to {})",
                        number_text(p.value),
                        number_text(lower),
                        number_text(upper)
                    ),
                    _ => number_text(p.value),
                },
            ));
        }
        table.row(row);
    }
    out.push('\n');
    out.push_str(&table.render());
    out
}

/// A what-if answer for a script: the verdict, the assumptions, the models and every
/// series as `{"name", "points": [{"t", "value", "lower", "upper"}]}` (bounds when the
/// model gave them).
pub fn simulation_json(response: &SimulateResponse) -> Json {
    Json::object()
        .with("verdict", verdict_json(response.verdict.as_ref()))
        .with("assumed", named_json(&response.assumed))
        .with(
            "series",
            Json::Array(
                response
                    .series
                    .iter()
                    .map(|series| {
                        Json::object().with("name", &series.name).with(
                            "points",
                            Json::Array(
                                series
                                    .points
                                    .iter()
                                    .map(|p| {
                                        let point =
                                            Json::object().with("t", p.t).with("value", p.value);
                                        match (p.lower, p.upper) {
                                            (Some(lower), Some(upper)) => {
                                                point.with("lower", lower).with("upper", upper)
                                            }
                                            _ => point,
                                        }
                                    })
                                    .collect(),
                            ),
                        )
                    })
                    .collect(),
            ),
        )
        .with("models", models_json(&response.models))
}

/// A recommendation for a person: the objective, then the candidates best first with
/// their verdict, objective and why.
pub fn recommendation_text(response: &RecommendResponse) -> String {
    let mut out = format!("objective  {}\n", clean(&response.objective));
    if !response.models.is_empty() {
        let _ = writeln!(out, "models     {}", models_text(&response.models));
    }
    let mut table = Table::new(&[
        ("RANK", Align::Right),
        ("VALUE", Align::Right),
        ("VERDICT", Align::Left),
        ("OBJECTIVE", Align::Right),
        ("WHY", Align::Left),
    ]);
    for (rank, candidate) in response.candidates.iter().enumerate() {
        let verdict = if candidate.projected_by.is_empty() {
            verdict_word(candidate.verdict.as_ref())
        } else {
            format!("DENIED by {} (projected)", clean(&candidate.projected_by))
        };
        let objective = match (
            candidate.objective,
            candidate.objective_lower,
            candidate.objective_upper,
        ) {
            (Some(value), Some(lower), Some(upper)) => format!(
                "{} ({} to {})",
                number_text(value),
                number_text(lower),
                number_text(upper)
            ),
            (Some(value), _, _) => number_text(value),
            (None, _, _) => "-".to_string(),
        };
        table.row(vec![
            (rank + 1).to_string(),
            number_text(candidate.value),
            verdict,
            objective,
            clean(&candidate.rationale),
        ]);
    }
    out.push('\n');
    out.push_str(&table.render());
    out
}

/// The verdict's one word, upper case when denied.
fn verdict_word(verdict: Option<&Verdict>) -> String {
    match verdict.and_then(|v| v.outcome.as_ref()) {
        Some(verdict::Outcome::Denied(denied)) => format!("DENIED by {}", clean(&denied.governor)),
        Some(verdict::Outcome::Clamped(_)) => "clamped".to_string(),
        Some(verdict::Outcome::Accepted(_)) => "accepted".to_string(),
        None => "-".to_string(),
    }
}

/// One candidate for a script.
pub fn candidate_json(candidate: &RecommendCandidate) -> Json {
    let optional = |v: Option<f64>| v.map_or(Json::Null, Json::Float);
    Json::object()
        .with("value", candidate.value)
        .with("tier", candidate.tier)
        .with("verdict", verdict_json(candidate.verdict.as_ref()))
        .with("projected_by", &candidate.projected_by)
        .with("projected_reason", &candidate.projected_reason)
        .with("objective", optional(candidate.objective))
        .with("objective_lower", optional(candidate.objective_lower))
        .with("objective_upper", optional(candidate.objective_upper))
        .with(
            "checks",
            Json::Array(
                candidate
                    .checks
                    .iter()
                    .map(|check| {
                        Json::object()
                            .with("series", &check.series)
                            .with("limit", check.limit)
                            .with("is_max", check.is_max)
                            .with("worst", optional(check.worst))
                            .with("worst_at", check.worst_at)
                            .with("worst_bound", optional(check.worst_bound))
                            .with("holds", check.holds)
                            .with("holds_at_bound", check.holds_at_bound)
                    })
                    .collect(),
            ),
        )
        .with("rationale", &candidate.rationale)
}

/// A channel's samples for a person.
pub fn samples_table(samples: &[Sample]) -> String {
    let mut table = Table::new(&[
        ("SOURCE TIME", Align::Left),
        ("VALUE", Align::Right),
        ("QUALITY", Align::Left),
        ("SEQ", Align::Right),
        ("RECEIVED", Align::Left),
    ]);
    for sample in samples {
        table.row(vec![
            time_text(time_of!(sample.source_time)),
            number_text(sample.value),
            quality_word(sample.quality),
            sample.seq.to_string(),
            time_text(time_of!(sample.receive_time)),
        ]);
    }
    table.render()
}

/// One sample for a script.
pub fn sample_json(sample: &Sample) -> Json {
    Json::object()
        .with("source_time", time_json(time_of!(sample.source_time)))
        .with("value", sample.value)
        .with("quality", quality_word(sample.quality))
        .with("seq", sample.seq)
        .with("receive_time", time_json(time_of!(sample.receive_time)))
}

/// Audit records for a person.
pub fn audit_table(records: &[AuditRecord]) -> String {
    let mut table = Table::new(&[
        ("SEQ", Align::Right),
        ("AT", Align::Left),
        ("ASSET", Align::Left),
        ("KIND", Align::Left),
        ("COMMAND", Align::Left),
        ("PARAMS", Align::Left),
        ("ORIGIN", Align::Left),
        ("VERDICT", Align::Left),
    ]);
    for record in records {
        let safety_action = AuditKind::try_from(record.kind) == Ok(AuditKind::SafetyAction);
        let mut verdict = verdict_text(record.verdict.as_ref());
        // A command's reason repeats its verdict's; a safety action's is its only one.
        if safety_action && !record.reason.is_empty() {
            let _ = write!(verdict, " · {}", clean(&record.reason));
        }
        let kind = if safety_action {
            "safety".to_string()
        } else {
            audit_kind_word(record.kind)
        };
        table.row(vec![
            record.seq.to_string(),
            time_text(time_of!(record.at)),
            clean(&record.asset_path),
            kind,
            clean(&record.command),
            named_text(&record.requested),
            origin_text(record.origin.as_ref()),
            verdict,
        ]);
    }
    table.render()
}

/// One audit record for a script.
pub fn audit_json(record: &AuditRecord) -> Json {
    Json::object()
        .with("seq", record.seq)
        .with("at", time_json(time_of!(record.at)))
        .with("asset_path", &record.asset_path)
        .with("kind", audit_kind_word(record.kind))
        .with("command_id", &record.command_id)
        .with("command", &record.command)
        .with("requested", named_json(&record.requested))
        .with("origin", origin_json(record.origin.as_ref()))
        .with("state_version", record.state_version)
        .with("models", models_json(&record.models))
        .with("verdict", verdict_json(record.verdict.as_ref()))
        .with("applied", named_json(&record.applied))
        .with("reason", &record.reason)
}

#[cfg(test)]
mod tests {
    use doppel::proto::v1::{
        Accepted, Alarm, Clamp, Clamped, Denied, DerivedValue, DesiredChange, DesiredValue,
        ReportedChange, ReportedValue, Series, TrajectoryPoint, Trip,
    };

    use super::*;

    fn float(f: f64) -> Option<Value> {
        Some(Value {
            kind: Some(value::Kind::FloatValue(f)),
        })
    }

    fn named(name: &str, value: Option<Value>) -> NamedValue {
        NamedValue {
            name: name.to_string(),
            value,
        }
    }

    fn at(text: &str) -> Timestamp {
        Timestamp::parse_rfc3339(text).unwrap()
    }

    fn clamped() -> Verdict {
        Verdict {
            outcome: Some(verdict::Outcome::Clamped(Clamped {
                clamps: vec![Clamp {
                    desired: "speed".into(),
                    requested: float(3000.0),
                    applied: float(2400.0),
                    governor: "envelope".into(),
                    reason: "above 2400".into(),
                }],
            })),
        }
    }

    #[test]
    fn numbers_times_and_durations_read_well() {
        assert_eq!(number_text(1200.0), "1200");
        assert_eq!(number_text(55.23456), "55.235");
        assert_eq!(number_text(0.5), "0.5");
        assert_eq!(number_text(-2.25), "-2.25");
        assert_eq!(number_text(0.0001234), "1.23e-4");
        assert_eq!(number_text(f64::NAN), "NaN");
        assert_eq!(percent_text(0.974), "97%");
        assert_eq!(
            time_text(Some(at("2026-11-21T10:00:00.123456Z"))),
            "2026-11-21T10:00:00.123Z"
        );
        assert_eq!(time_text(None), "-");
        assert_eq!(
            time_json(Some(at("2026-11-21T10:00:00Z"))),
            Json::Str("2026-11-21T10:00:00.000000Z".into())
        );
        assert_eq!(duration_text(Duration::from_millis(250)), "250ms");
        assert_eq!(duration_text(Duration::from_secs(45)), "45s");
        assert_eq!(duration_text(Duration::from_secs(600)), "10m");
        assert_eq!(duration_text(Duration::from_secs(5400)), "1h30m");
        assert_eq!(
            duration_text(Duration::from_secs(2 * 86_400 + 3 * 3600)),
            "2d3h"
        );
        assert_eq!(duration_text(Duration::from_millis(1500)), "1.5s");
        assert_eq!(duration_text(Duration::from_secs(61)), "1m1s");
        assert_eq!(offset_text(0.0), "+0s");
        assert_eq!(offset_text(10.0), "+10s");
        assert_eq!(offset_text(90.0), "+1m30s");
        assert_eq!(offset_text(-10.0), "-10s");
        assert_eq!(offset_text(f64::INFINITY), "inf");
        assert_eq!(offset_text(1e300), "+36500d");
    }

    #[test]
    fn extreme_times_from_a_node_do_not_panic() {
        for (seconds, nanos) in [(i64::MAX, i32::MAX), (i64::MIN, i32::MIN), (0, -1)] {
            let time = time_from_parts(seconds, nanos);
            let _ = time_text(Some(time));
            let _ = time_json(Some(time)).to_string();
        }
    }

    #[test]
    fn enums_read_as_words_and_unknown_values_survive() {
        assert_eq!(run_state_word(RunState::Tripped as i32), "tripped");
        assert_eq!(run_state_word(42), "unknown(42)");
        assert_eq!(quality_word(Quality::Uncertain as i32), "uncertain");
        assert_eq!(severity_word(Severity::Critical as i32), "critical");
        assert_eq!(origin_kind_word(OriginKind::Planner as i32), "planner");
        assert_eq!(
            audit_kind_word(AuditKind::SafetyAction as i32),
            "safety_action"
        );
        assert_eq!(audit_kind_word(-1), "unknown(-1)");
    }

    #[test]
    fn node_text_cannot_drive_the_terminal() {
        assert_eq!(clean("press-3"), "press-3");
        assert_eq!(clean("a\u{1b}[2Jb\nc"), "a\\u{1b}[2Jb\\nc");
    }

    #[test]
    fn verdicts_read_as_accepted_clamped_or_denied() {
        let accepted = Verdict {
            outcome: Some(verdict::Outcome::Accepted(Accepted {})),
        };
        assert_eq!(verdict_text(Some(&accepted)), "accepted");
        assert_eq!(
            verdict_json(Some(&accepted)).to_string(),
            r#"{"outcome":"accepted"}"#
        );
        assert_eq!(
            verdict_text(Some(&clamped())),
            "clamped: speed 3000 → 2400 (envelope: above 2400)"
        );
        assert_eq!(
            verdict_json(Some(&clamped())).to_string(),
            r#"{"outcome":"clamped","clamps":[{"desired":"speed","requested":3000.0,"applied":2400.0,"governor":"envelope","reason":"above 2400"}]}"#
        );
        let denied = Verdict {
            outcome: Some(verdict::Outcome::Denied(Denied {
                governor: "trip".into(),
                reason: "tripped: temperature 120 above 95".into(),
            })),
        };
        assert_eq!(
            verdict_text(Some(&denied)),
            "denied (trip: tripped: temperature 120 above 95)"
        );
        assert_eq!(verdict_text(None), "no verdict");
        assert_eq!(verdict_json(None), Json::Null);
    }

    #[test]
    fn command_outcomes_for_people_and_scripts() {
        let response = SendCommandResponse {
            command_id: "c-17".into(),
            verdict: Some(clamped()),
            applied: vec![named("speed", float(2400.0))],
            version: 57,
            audit_seq: 12,
            replayed: true,
            origin: Some(Origin {
                kind: OriginKind::Operator as i32,
                principal: "dev".into(),
            }),
        };
        let text = command_text(&response);
        assert!(
            text.starts_with("clamped: speed 3000 → 2400 (envelope: above 2400)\n"),
            "{text}"
        );
        assert!(text.contains("  applied  speed=2400\n"), "{text}");
        assert!(text.contains("  origin   operator:dev\n"), "{text}");
        assert!(text.contains("  audit    #12\n"), "{text}");
        assert!(text.contains("replayed"), "{text}");
        assert_eq!(
            command_json(&response).to_string(),
            r#"{"command_id":"c-17","verdict":{"outcome":"clamped","clamps":[{"desired":"speed","requested":3000.0,"applied":2400.0,"governor":"envelope","reason":"above 2400"}]},"applied":{"speed":2400.0},"version":57,"audit_seq":12,"replayed":true,"origin":{"kind":"operator","principal":"dev"}}"#
        );
    }

    fn twin() -> Twin {
        let mut sample = Sample {
            value: 55.25,
            quality: Quality::Good as i32,
            epoch: 0,
            seq: 9,
            ..Default::default()
        };
        let t = at("2026-11-21T10:00:00.5Z");
        sample.source_time = Some(Default::default());
        if let Some(slot) = sample.source_time.as_mut() {
            slot.seconds = t.as_micros() / 1_000_000;
            slot.nanos = 500_000_000;
        }
        Twin {
            shadows: Vec::new(),
            asset_path: "acme/plant-a/line-1/press-3".into(),
            twin_type: "press".into(),
            version: 41,
            run_state: RunState::Running as i32,
            reported: vec![
                ReportedValue {
                    channel: "temperature".into(),
                    unit: "degC".into(),
                    sample: Some(sample),
                    condition: None,
                },
                ReportedValue {
                    channel: "vibration".into(),
                    unit: "mm/s".into(),
                    sample: None,
                    condition: None,
                },
            ],
            desired: vec![DesiredValue {
                name: "speed".into(),
                value: float(1200.0),
                set_at: None,
                delivery: None,
                agrees: None,
            }],
            derived: vec![DerivedValue {
                name: "rul_hours".into(),
                model: "degradation".into(),
                value: None,
                confidence: 0.5,
                at: None,
            }],
            alarms: vec![Alarm {
                code: "rul_low".into(),
                severity: Severity::Warning as i32,
                message: "remaining life 1.5 h".into(),
                raised_by: "degradation".into(),
                since: None,
                active: true,
                state: "unacknowledged".into(),
                ..Default::default()
            }],
            trips: vec![],
            health: 0.9,
            models: vec![ModelInfo {
                name: "thermal".into(),
                version: "1".into(),
                confidence: 0.95,
            }],
            updated_at: None,
            mirror: None,
        }
    }

    #[test]
    fn a_stale_channel_shows_its_condition() {
        let mut stale = twin();
        stale.reported[0].condition = Some(ChannelCondition {
            quality: Quality::Stale as i32,
            reason: "no reading for 31 s (max age 30 s)".into(),
            since: None,
        });
        let text = twin_text(&stale);
        assert!(
            text.contains("stale: no reading for 31 s (max age 30 s)"),
            "{text}"
        );
        let json = twin_json(&stale).to_string();
        assert!(
            json.contains(r#""condition":{"quality":"stale","reason":"no reading for 31 s (max age 30 s)","since":null}"#),
            "{json}"
        );
    }

    #[test]
    fn a_twin_for_people() {
        let text = twin_text(&twin());
        assert!(
            text.starts_with("acme/plant-a/line-1/press-3\n  type     press\n"),
            "{text}"
        );
        assert!(text.contains("  state    running\n"), "{text}");
        assert!(text.contains("  health   90%\n"), "{text}");
        assert!(text.contains("  alarms   1 active\n"), "{text}");
        assert!(text.contains("  trips    none\n"), "{text}");
        assert!(text.contains("  models   thermal 1 (95%)\n"), "{text}");
        assert!(
            text.contains("temperature  55.25  degC  good     2026-11-21T10:00:00.500Z\n"),
            "{text}"
        );
        assert!(
            text.contains("vibration        -  mm/s  -        -\n"),
            "{text}"
        );
        assert!(
            text.contains("speed     1200  -       -         -\n"),
            "{text}"
        );
        assert!(
            text.contains("rul_low  warning   unacknowledged  remaining life 1.5 h"),
            "{text}"
        );
        assert!(!text.contains("TRIP "), "{text}");
    }

    #[test]
    fn deliveries_in_words() {
        let mut delivered = Delivery {
            state: DeliveryState::Delivered as i32,
            at: Some(Default::default()),
            by: "opcua:plc-1".into(),
            ..Delivery::default()
        };
        if let Some(slot) = delivered.at.as_mut() {
            slot.seconds = 1_700_000_000;
            slot.nanos = 250_000_000;
        }
        assert_eq!(
            delivery_text(Some(&delivered)),
            "delivered 2023-11-14T22:13:20.250Z by opcua:plc-1"
        );
        let failed = Delivery {
            state: DeliveryState::Failed as i32,
            safety: true,
            reason: "no actuator confirmed it within 2000 ms".into(),
            ..Delivery::default()
        };
        assert_eq!(
            delivery_text(Some(&failed)),
            "failed (safety): no actuator confirmed it within 2000 ms"
        );
        assert_eq!(delivery_word(99), "unknown(99)");
        assert_eq!(delivery_text(None), "-");
    }

    #[test]
    fn a_twin_for_scripts() {
        let json = twin_json(&twin()).to_string();
        assert!(
            json.starts_with(r#"{"asset_path":"acme/plant-a/line-1/press-3","twin_type":"press","version":41,"run_state":"running","health":0.9,"updated_at":null,"mirror":null,"reported":[{"channel":"temperature","unit":"degC","condition":null,"value":55.25,"quality":"good","source_time":"2026-11-21T10:00:00.500000Z","receive_time":null,"seq":9},{"channel":"vibration","unit":"mm/s","condition":null,"value":null"#),
            "{json}"
        );
        assert!(
            json.contains(
                r#""desired":[{"name":"speed","value":1200.0,"set_at":null,"delivery":null,"agrees":null}]"#
            ),
            "{json}"
        );
        assert!(
            json.contains(r#""alarms":[{"code":"rul_low","severity":"warning""#),
            "{json}"
        );
        assert!(
            json.ends_with(
                r#""trips":[],"models":[{"name":"thermal","version":"1","confidence":0.95}],"shadows":[]}"#
            ),
            "{json}"
        );
    }

    #[test]
    fn listings_align() {
        let summary = summary_of(&twin());
        assert_eq!(summary.alarm_count, 1);
        assert_eq!(
            twins_table(std::slice::from_ref(&summary)),
            "PATH                         TYPE   STATE    HEALTH  ALARMS  VERSION\n\
             acme/plant-a/line-1/press-3  press  running     90%       1       41\n"
        );
        assert_eq!(
            twin_summary_json(&summary).to_string(),
            r#"{"asset_path":"acme/plant-a/line-1/press-3","twin_type":"press","version":41,"run_state":"running","health":0.9,"alarm_count":1}"#
        );
    }

    #[test]
    fn changes_read_as_one_line_each() {
        let received = at("2026-11-21T10:00:01Z");
        let mut change = TwinChange {
            asset_path: "acme/p/press-1".into(),
            version: 7,
            change: Some(twin_change::Change::Reported(ReportedChange {
                channel: "temperature".into(),
                value: 71.5,
                quality: Quality::Uncertain as i32,
                source_time: None,
            })),
        };
        assert_eq!(
            change_line(&change, received, 16),
            "2026-11-21T10:00:01.000Z  acme/p/press-1    v7       temperature 71.5 (uncertain)"
        );
        assert_eq!(
            change_json(&change).to_string(),
            r#"{"event":"change","asset_path":"acme/p/press-1","version":7,"kind":"reported","channel":"temperature","value":71.5,"quality":"uncertain","source_time":null}"#
        );
        change.change = Some(twin_change::Change::Desired(DesiredChange {
            values: vec![named("speed", float(2400.0))],
        }));
        assert!(change_line(&change, received, 0).ends_with("desired speed=2400"));
        change.change = Some(twin_change::Change::Tripped(Trip {
            governor: "trip".into(),
            reason: "temperature 150 above 95".into(),
            at: None,
        }));
        assert!(
            change_line(&change, received, 0)
                .ends_with("TRIPPED by trip: temperature 150 above 95")
        );
        assert!(
            change_json(&change)
                .to_string()
                .contains(r#""kind":"tripped""#)
        );
        change.change = None;
        assert!(
            change_json(&change)
                .to_string()
                .contains(r#""kind":"unknown""#)
        );
    }

    #[test]
    fn simulations_show_the_verdict_and_a_table_of_the_projection() {
        let response = SimulateResponse {
            verdict: Some(clamped()),
            assumed: vec![named("speed", float(2400.0))],
            series: vec![
                Series {
                    name: "temperature".into(),
                    points: vec![
                        TrajectoryPoint {
                            t: 0.0,
                            value: 55.0,
                            ..Default::default()
                        },
                        TrajectoryPoint {
                            t: 10.0,
                            value: 60.125,
                            lower: Some(58.0),
                            upper: Some(62.25),
                        },
                    ],
                },
                Series {
                    name: "rul_hours".into(),
                    points: vec![TrajectoryPoint {
                        t: 10.0,
                        value: 120.0,
                        ..Default::default()
                    }],
                },
            ],
            models: vec![],
        };
        let text = simulation_text(&response);
        assert!(
            text.starts_with("verdict  clamped: speed 3000 → 2400"),
            "{text}"
        );
        assert!(text.contains("assumes  speed=2400\n"), "{text}");
        assert!(
            text.ends_with(
                "   T           temperature  rul_hours\n\
                 \x20+0s                    55\n\
                 +10s  60.125 (58 to 62.25)        120\n"
            ),
            "{text}"
        );
        let json = simulation_json(&response).to_string();
        assert!(
            json.contains(r#""series":[{"name":"temperature","points":[{"t":0.0,"value":55.0},{"t":10.0,"value":60.125,"lower":58.0,"upper":62.25}]}"#),
            "{json}"
        );
        let empty = SimulateResponse::default();
        assert!(simulation_text(&empty).contains("no projection"));
    }

    #[test]
    fn history_and_audit_tables() {
        let sample = Sample {
            value: 1.5,
            quality: Quality::Good as i32,
            epoch: 0,
            seq: 3,
            ..Default::default()
        };
        let table = samples_table(&[sample]);
        assert_eq!(
            table,
            "SOURCE TIME  VALUE  QUALITY  SEQ  RECEIVED\n\
             -              1.5  good       3  -\n"
        );
        assert_eq!(
            sample_json(&sample).to_string(),
            r#"{"source_time":null,"value":1.5,"quality":"good","seq":3,"receive_time":null}"#
        );
        let record = AuditRecord {
            seq: 4,
            asset_path: "acme/p/press-1".into(),
            kind: AuditKind::SafetyAction as i32,
            command: "stop".into(),
            verdict: Some(Verdict {
                outcome: Some(verdict::Outcome::Accepted(Accepted {})),
            }),
            origin: Some(Origin {
                kind: OriginKind::Safety as i32,
                principal: "trip".into(),
            }),
            reason: "temperature 150 above 95".into(),
            ..Default::default()
        };
        let table = audit_table(std::slice::from_ref(&record));
        assert!(
            table.ends_with(
                "4  -   acme/p/press-1  safety  stop     -       safety:trip  accepted · temperature 150 above 95\n"
            ),
            "{table}"
        );
        let json = audit_json(&record).to_string();
        assert!(json.contains(r#""kind":"safety_action""#), "{json}");
        assert!(
            json.contains(r#""verdict":{"outcome":"accepted"}"#),
            "{json}"
        );
    }
}
