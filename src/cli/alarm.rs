//! `doppel alarm list|ack|shelve|unshelve`: a node's alarms and responses to them,
//! through its gRPC API (`doppel.v1.AlarmService`).

use clap::{Args, Subcommand};
use doppel::proto::v1::{
    AcknowledgeAlarmRequest, AlarmResponseResult, ListAlarmsRequest, ListAlarmsResponse,
    ShelveAlarmRequest, UnshelveAlarmRequest,
};

use super::twin::input::parse_duration;
use super::twin::json::Json;
use super::twin::render::{clean, severity_word, time_from_parts, time_text};
use super::twin::session::Session;
use super::twin::table::{Align, Table};
use super::twin::{ConnectArgs, Failure, emit, emit_json};

/// `doppel alarm`.
#[derive(Args, Debug)]
#[command(after_help = "\
Examples:
  doppel alarm list acme/plant-a --standing
  doppel alarm ack acme/plant-a/line-1/press-4 anomaly:vibration --note \"bearing checked\"
  doppel alarm shelve acme/plant-a/line-1/press-4 stale:vibration --for 2h --reason \"sensor swap\"
  doppel alarm unshelve acme/plant-a/line-1/press-4 stale:vibration

Exit status: 0 when the node answered, 1 when it could not be reached or refused
the call (an unknown alarm, a latched trip shelved, a viewer token), 2 when the
command line is wrong.")]
pub struct AlarmArgs {
    /// Where the node is, and how to call it.
    #[command(flatten)]
    connect: ConnectArgs,
    #[command(subcommand)]
    command: AlarmCommand,
}

#[derive(Subcommand, Debug)]
enum AlarmCommand {
    /// The alarms of the twins at or below a path (all without one), with their
    /// ISA-18.2 state, and counts.
    List {
        /// An asset path prefix.
        prefix: Option<String>,
        /// Only standing alarms: active, and neither shelved, out of service nor
        /// suppressed.
        #[arg(long)]
        standing: bool,
    },
    /// Acknowledge an alarm (operator or admin token).
    Ack {
        /// The twin.
        asset: String,
        /// The alarm's code.
        code: String,
        /// A note for the audit log.
        #[arg(long, default_value = "")]
        note: String,
    },
    /// Shelve an alarm for a while; it comes back by itself, unacknowledged if still
    /// active. A latched trip cannot be shelved.
    Shelve {
        /// The twin.
        asset: String,
        /// The alarm's code.
        code: String,
        /// Why (required).
        #[arg(long)]
        reason: String,
        /// For how long (90s, 30m, 2h, 1d; at most 7d).
        #[arg(long = "for", value_name = "DURATION")]
        duration: String,
    },
    /// Unshelve a shelved alarm now.
    Unshelve {
        /// The twin.
        asset: String,
        /// The alarm's code.
        code: String,
        /// A note for the audit log.
        #[arg(long, default_value = "")]
        note: String,
    },
}

/// Runs `doppel alarm …`.
pub async fn run(args: AlarmArgs) -> Result<(), Box<dyn std::error::Error>> {
    let target = args.connect.target()?;
    let json = args.connect.json;
    let session = Session::connect(&target).await?;
    match args.command {
        AlarmCommand::List { prefix, standing } => {
            let request = ListAlarmsRequest {
                path_prefix: prefix.unwrap_or_default(),
                standing_only: standing,
            };
            let listed = session
                .alarm_unary(request, |mut client, request| async move {
                    client.list_alarms(request).await
                })
                .await
                .map_err(|status| Failure::rpc("alarm list", &status))?;
            if json {
                for line in list_json(&listed) {
                    emit_json(&line)?;
                }
            } else {
                emit(&list_text(&listed))?;
            }
        }
        AlarmCommand::Ack { asset, code, note } => {
            let request = AcknowledgeAlarmRequest {
                asset_path: asset.clone(),
                code: code.clone(),
                note,
            };
            let result = session
                .alarm_unary(request, |mut client, request| async move {
                    client.acknowledge_alarm(request).await
                })
                .await
                .map_err(|status| Failure::rpc(format!("alarm ack {asset} {code}"), &status))?;
            show_result(&asset, &code, &result, json)?;
        }
        AlarmCommand::Shelve {
            asset,
            code,
            reason,
            duration,
        } => {
            let duration = parse_duration("--for", &duration)?;
            let request = ShelveAlarmRequest {
                asset_path: asset.clone(),
                code: code.clone(),
                reason,
                duration: Some(doppel::api::convert::duration_to_proto(duration)),
            };
            let result = session
                .alarm_unary(request, |mut client, request| async move {
                    client.shelve_alarm(request).await
                })
                .await
                .map_err(|status| Failure::rpc(format!("alarm shelve {asset} {code}"), &status))?;
            show_result(&asset, &code, &result, json)?;
        }
        AlarmCommand::Unshelve { asset, code, note } => {
            let request = UnshelveAlarmRequest {
                asset_path: asset.clone(),
                code: code.clone(),
                note,
            };
            let result = session
                .alarm_unary(request, |mut client, request| async move {
                    client.unshelve_alarm(request).await
                })
                .await
                .map_err(|status| {
                    Failure::rpc(format!("alarm unshelve {asset} {code}"), &status)
                })?;
            show_result(&asset, &code, &result, json)?;
        }
    }
    Ok(())
}

fn show_result(
    asset: &str,
    code: &str,
    result: &AlarmResponseResult,
    json: bool,
) -> Result<(), Failure> {
    let state = result
        .alarm
        .as_ref()
        .map_or("normal (left the list)".to_string(), |a| clean(&a.state));
    if json {
        emit_json(
            &Json::object()
                .with("asset_path", asset)
                .with("code", code)
                .with("state", state.as_str())
                .with("version", result.version)
                .with("audit_seq", result.audit_seq),
        )
    } else {
        emit(&format!(
            "{} {}: {state} (audit #{})\n",
            clean(asset),
            clean(code),
            result.audit_seq
        ))
    }
}

/// The alarms as aligned text: counts, then a row per alarm.
pub fn list_text(listed: &ListAlarmsResponse) -> String {
    let counts = listed.counts.unwrap_or_default();
    let mut out = format!(
        "{} standing, {} unacknowledged, {} shelved, {} out of service, {} suppressed\n",
        counts.standing,
        counts.unacknowledged,
        counts.shelved,
        counts.out_of_service,
        counts.suppressed
    );
    out.push_str(&format!(
        "{} activations in the last 10 min",
        listed.activations_10_min
    ));
    if listed.chattering.is_empty() {
        out.push('\n');
    } else {
        let chattering: Vec<String> = listed
            .chattering
            .iter()
            .map(|c| {
                format!(
                    "{} {} ({})",
                    clean(&c.asset_path),
                    clean(&c.code),
                    c.activations
                )
            })
            .collect();
        out.push_str(&format!("; chattering: {}\n", chattering.join(", ")));
    }
    if !listed.unavailable.is_empty() {
        out.push_str(&format!(
            "{} twins did not answer (starting or restarting)\n",
            listed.unavailable.len()
        ));
    }
    if listed.alarms.is_empty() {
        return out;
    }
    let mut table = Table::new(&[
        ("TWIN", Align::Left),
        ("ALARM", Align::Left),
        ("SEVERITY", Align::Left),
        ("STATE", Align::Left),
        ("SINCE", Align::Left),
        ("MESSAGE", Align::Left),
    ]);
    for entry in &listed.alarms {
        let Some(alarm) = &entry.alarm else {
            continue;
        };
        let since = alarm
            .since
            .as_ref()
            .map(|t| time_from_parts(t.seconds, t.nanos));
        table.row(vec![
            clean(&entry.asset_path),
            clean(&alarm.code),
            severity_word(alarm.severity),
            clean(&alarm.state),
            time_text(since),
            clean(&alarm.message),
        ]);
    }
    out.push('\n');
    out.push_str(&table.render());
    out
}

/// One JSON object per alarm.
pub fn list_json(listed: &ListAlarmsResponse) -> Vec<Json> {
    listed
        .alarms
        .iter()
        .filter_map(|entry| {
            let alarm = entry.alarm.as_ref()?;
            Some(
                Json::object()
                    .with("asset_path", &entry.asset_path)
                    .with("code", &alarm.code)
                    .with("severity", severity_word(alarm.severity))
                    .with("state", &alarm.state)
                    .with("active", alarm.active)
                    .with("message", &alarm.message)
                    .with("raised_by", &alarm.raised_by),
            )
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use doppel::proto::v1::{Alarm, AlarmCounts, ChatteringAlarm, TwinAlarm};

    use super::*;

    #[test]
    fn alarms_for_people() {
        let listed = ListAlarmsResponse {
            alarms: vec![TwinAlarm {
                asset_path: "acme/plant-a/line-1/press-4".into(),
                alarm: Some(Alarm {
                    code: "trip:overtemp".into(),
                    severity: doppel::proto::v1::Severity::Critical as i32,
                    message: "temperature 120 degC above trip limit 95 degC".into(),
                    raised_by: "overtemp".into(),
                    active: true,
                    state: "unacknowledged".into(),
                    ..Default::default()
                }),
            }],
            unavailable: Vec::new(),
            counts: Some(AlarmCounts {
                standing: 1,
                unacknowledged: 1,
                ..Default::default()
            }),
            activations_10_min: 4,
            chattering: vec![ChatteringAlarm {
                asset_path: "acme/plant-a/line-1/press-2".into(),
                code: "stale:vibration".into(),
                activations: 3,
            }],
        };
        let text = list_text(&listed);
        assert!(
            text.starts_with("1 standing, 1 unacknowledged, 0 shelved"),
            "{text}"
        );
        assert!(
            text.contains(
                "4 activations in the last 10 min; chattering: acme/plant-a/line-1/press-2 stale:vibration (3)\n"
            ),
            "{text}"
        );
        assert!(text.contains("trip:overtemp"), "{text}");
        assert!(text.contains("critical"), "{text}");
        assert!(text.contains("unacknowledged  "), "{text}");
    }
}
