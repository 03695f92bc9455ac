//! `doppel.v1.AlarmService` on [`TwinApi`]: the alarms of the twins this node hosts,
//! and responses to them (ISA-18.2; see `doppel_runtime::twin::alarm`).

use std::time::Duration;

use doppel_proto::v1 as pb;
use doppel_proto::v1::alarm_service_server::AlarmService;
use doppel_runtime::twin::alarm::AlarmRates;
use doppel_runtime::twin::{AlarmNote, AlarmOutcome, AlarmResponse, Shelving};
use doppel_runtime::{Alarm, AssetPath, Timestamp};
use tonic::{Request, Response, Status};

use crate::auth::{Caller, caller};
use crate::convert;
use crate::error::kernel_status;
use crate::service::{TwinApi, parse_path, parse_prefix, traced_in};

/// The service's full name, for health checks and spans.
pub const ALARM_SERVICE_NAME: &str = "doppel.v1.AlarmService";

/// The longest a shelving may last.
pub const MAX_SHELVING: Duration = Duration::from_secs(7 * 24 * 3600);

/// Longest note or reason accepted, in characters.
const MAX_NOTE_CHARS: usize = 1_000;

/// Longest alarm code accepted, in characters.
const MAX_CODE_CHARS: usize = 200;

/// Refuses with PERMISSION_DENIED unless an operator or admin asks: alarms are
/// acknowledged by people, not by automation.
fn require_responder(caller: &Caller, rpc: &str) -> Result<(), Status> {
    match caller.role {
        crate::Role::Operator | crate::Role::Admin => Ok(()),
        role => Err(Status::permission_denied(format!(
            "{rpc} needs an operator or admin token; `{}` is a {role}",
            caller.name
        ))),
    }
}

fn text(field: &str, value: &str, required: bool) -> Result<String, Status> {
    let chars = value.chars().count();
    if required && value.trim().is_empty() {
        return Err(Status::invalid_argument(format!("{field}: required")));
    }
    if chars > MAX_NOTE_CHARS {
        return Err(Status::invalid_argument(format!(
            "{field}: {chars} characters; at most {MAX_NOTE_CHARS}"
        )));
    }
    Ok(value.to_string())
}

fn code(value: &str) -> Result<&str, Status> {
    let chars = value.chars().count();
    if chars == 0 || chars > MAX_CODE_CHARS {
        return Err(Status::invalid_argument(format!(
            "code: {chars} characters; use 1 to {MAX_CODE_CHARS}"
        )));
    }
    Ok(value)
}

fn result(outcome: AlarmOutcome) -> pb::AlarmResponseResult {
    pb::AlarmResponseResult {
        alarm: outcome.alarm.as_ref().map(convert::alarm),
        version: outcome.version,
        audit_seq: outcome.audit_seq.unwrap_or(0),
    }
}

impl TwinApi {
    async fn list_alarms_call(
        &self,
        request: Request<pb::ListAlarmsRequest>,
    ) -> Result<pb::ListAlarmsResponse, Status> {
        caller(&request)?;
        let _permit = self.admit()?;
        let request = request.into_inner();
        let prefix = parse_prefix("path_prefix", &request.path_prefix)?;
        let listed = self.shared.twins.alarms(prefix.as_ref()).await;
        let rates = self.shared.twins.alarm_rates(prefix.as_ref());
        Ok(list_response(
            &listed.alarms,
            &listed.unavailable,
            request.standing_only,
            &rates,
        ))
    }

    /// One response call: the caller must be a person (operator or admin); `parse`
    /// turns the request into the twin, the alarm's code and the response.
    async fn respond_call<R>(
        &self,
        rpc: &str,
        request: Request<R>,
        parse: impl FnOnce(AlarmNoteFor, R) -> Result<(String, String, AlarmResponse), Status>,
    ) -> Result<pb::AlarmResponseResult, Status> {
        let caller = caller(&request)?;
        require_responder(&caller, rpc)?;
        let _permit = self.admit()?;
        let (asset_path, alarm_code, response) =
            parse(AlarmNoteFor(&caller), request.into_inner())?;
        let path = parse_path("asset_path", &asset_path)?;
        let alarm_code = code(&alarm_code)?;
        let origin = caller.role.origin(&caller.name);
        let outcome = self
            .shared
            .twins
            .respond_to_alarm(&path, alarm_code, response, origin)
            .await
            .map_err(kernel_status)?;
        Ok(result(outcome))
    }

    async fn acknowledge_alarm_call(
        &self,
        request: Request<pb::AcknowledgeAlarmRequest>,
    ) -> Result<pb::AlarmResponseResult, Status> {
        self.respond_call("AcknowledgeAlarm", request, |by, request| {
            let note = by.note(text("note", &request.note, false)?);
            let response = AlarmResponse::Acknowledge(note);
            Ok((request.asset_path, request.code, response))
        })
        .await
    }

    async fn shelve_alarm_call(
        &self,
        request: Request<pb::ShelveAlarmRequest>,
    ) -> Result<pb::AlarmResponseResult, Status> {
        self.respond_call("ShelveAlarm", request, |by, request| {
            let note = by.note(text("reason", &request.reason, true)?);
            let duration = request
                .duration
                .and_then(|d| Duration::try_from(d).ok())
                .filter(|d| !d.is_zero() && *d <= MAX_SHELVING)
                .ok_or_else(|| {
                    Status::invalid_argument(format!(
                        "duration: more than zero and at most {} days",
                        MAX_SHELVING.as_secs() / 86_400
                    ))
                })?;
            let until = note.at.plus(duration);
            let response = AlarmResponse::Shelve(Shelving { note, until });
            Ok((request.asset_path, request.code, response))
        })
        .await
    }

    async fn unshelve_alarm_call(
        &self,
        request: Request<pb::UnshelveAlarmRequest>,
    ) -> Result<pb::AlarmResponseResult, Status> {
        self.respond_call("UnshelveAlarm", request, |by, request| {
            let note = by.note(text("note", &request.note, false)?);
            let response = AlarmResponse::Unshelve(note);
            Ok((request.asset_path, request.code, response))
        })
        .await
    }
}

/// Notes signed by the caller of a response, stamped now.
struct AlarmNoteFor<'a>(&'a Caller);

impl AlarmNoteFor<'_> {
    fn note(&self, note: String) -> AlarmNote {
        AlarmNote {
            by: self.0.name.to_string(),
            at: Timestamp::now(),
            note,
        }
    }
}

#[tonic::async_trait]
impl AlarmService for TwinApi {
    async fn list_alarms(
        &self,
        request: Request<pb::ListAlarmsRequest>,
    ) -> Result<Response<pb::ListAlarmsResponse>, Status> {
        traced_in(ALARM_SERVICE_NAME, "ListAlarms", request, |r| {
            self.list_alarms_call(r)
        })
        .await
    }

    async fn acknowledge_alarm(
        &self,
        request: Request<pb::AcknowledgeAlarmRequest>,
    ) -> Result<Response<pb::AlarmResponseResult>, Status> {
        traced_in(ALARM_SERVICE_NAME, "AcknowledgeAlarm", request, |r| {
            self.acknowledge_alarm_call(r)
        })
        .await
    }

    async fn shelve_alarm(
        &self,
        request: Request<pb::ShelveAlarmRequest>,
    ) -> Result<Response<pb::AlarmResponseResult>, Status> {
        traced_in(ALARM_SERVICE_NAME, "ShelveAlarm", request, |r| {
            self.shelve_alarm_call(r)
        })
        .await
    }

    async fn unshelve_alarm(
        &self,
        request: Request<pb::UnshelveAlarmRequest>,
    ) -> Result<Response<pb::AlarmResponseResult>, Status> {
        traced_in(ALARM_SERVICE_NAME, "UnshelveAlarm", request, |r| {
            self.unshelve_alarm_call(r)
        })
        .await
    }
}

/// A ListAlarms answer: `alarms` with their twins (only the standing ones when
/// `standing_only`), counts over all of them, and the rate figures `rates`.
pub fn list_response(
    alarms: &[(AssetPath, Alarm)],
    unavailable: &[AssetPath],
    standing_only: bool,
    rates: &AlarmRates,
) -> pb::ListAlarmsResponse {
    let mut counts = pb::AlarmCounts::default();
    for (_, alarm) in alarms {
        counts.standing += u32::from(alarm.is_standing());
        counts.unacknowledged += u32::from(alarm.acknowledged.is_none());
        counts.shelved += u32::from(alarm.shelved.is_some());
        counts.out_of_service += u32::from(alarm.out_of_service.is_some());
        counts.suppressed += u32::from(alarm.suppressed);
    }
    pb::ListAlarmsResponse {
        alarms: alarms
            .iter()
            .filter(|(_, alarm)| !standing_only || alarm.is_standing())
            .map(|(path, alarm)| pb::TwinAlarm {
                asset_path: path.to_string(),
                alarm: Some(convert::alarm(alarm)),
            })
            .collect(),
        unavailable: unavailable.iter().map(ToString::to_string).collect(),
        counts: Some(counts),
        activations_10_min: rates.activations,
        chattering: rates
            .chattering
            .iter()
            .map(|(asset, code, activations)| pb::ChatteringAlarm {
                asset_path: asset.to_string(),
                code: code.clone(),
                activations: *activations,
            })
            .collect(),
    }
}
