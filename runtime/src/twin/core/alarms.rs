//! Responses to alarms: acknowledge, shelve, unshelve, out of service, return to
//! service (see [`alarm`](crate::twin::alarm)). Each is a journaled event of its own
//! and an audit record; none passes a governor's setpoint review.

use super::{Effects, TwinCore};
use crate::audit::{Annotation, AnnotationSubject, AuditKind, AuditRecord};
use crate::command::{CommandId, Origin, Verdict};
use crate::error::Error;
use crate::journal::JournalEvent;
use crate::time::Timestamp;
use crate::twin::alarm::list::{self, Changed};
use crate::twin::alarm::{Alarm, AlarmNote, AlarmResponse};
use crate::twin::change::{TwinChange, TwinEvent};
use crate::twin::state::alarm_change;

/// Who unshelves an alarm whose shelving ended.
pub const SHELVING_ENDED_BY: &str = "node";

impl TwinCore {
    /// Applies `response` to alarm `code` on behalf of `origin`: journaled, audited and
    /// published. Returns the alarm as it is now, `None` when it left the list (it was
    /// back to normal and is now acknowledged). A response the alarm's state refuses
    /// (a latched trip cannot be shelved, an acknowledged alarm is not acknowledged
    /// again) changes nothing and is neither journaled nor audited.
    pub fn respond_to_alarm(
        &mut self,
        code: &str,
        response: AlarmResponse,
        origin: &Origin,
        fx: &mut Effects,
    ) -> Result<Option<Alarm>, Error> {
        let changed =
            list::respond(&mut self.state.alarms, code, &response).map_err(|refusal| {
                Error::AlarmRefused {
                    asset: self.state.path.clone(),
                    refusal,
                }
            })?;
        let at = response.note().at;
        let state_version = self.state.version;
        self.bump(at);
        let note = &response.note().note;
        fx.audit.push(AuditRecord {
            seq: 0,
            at,
            asset: self.state.path.clone(),
            kind: AuditKind::AlarmResponse,
            command_id: CommandId::random(),
            command: response.name().to_string(),
            requested: Vec::new(),
            origin: origin.clone(),
            state_version,
            models: Vec::new(),
            verdict: Verdict::Accepted,
            applied: Vec::new(),
            reason: match &response {
                AlarmResponse::Shelve(shelving) if note.is_empty() => {
                    format!("alarm `{code}` until {}", shelving.until)
                }
                AlarmResponse::Shelve(shelving) => {
                    format!("alarm `{code}` until {}: {note}", shelving.until)
                }
                _ if note.is_empty() => format!("alarm `{code}`"),
                _ => format!("alarm `{code}`: {note}"),
            },
        });
        fx.record(
            self.id,
            self.state.version,
            JournalEvent::AlarmResponse {
                code: code.to_string(),
                response,
            },
        );
        if fx.collect_changes {
            fx.changes.push(TwinEvent {
                asset: self.state.path.clone(),
                version: self.state.version,
                change: alarm_change(&changed, code),
            });
        }
        Ok(match changed {
            Changed::Now(alarm) => Some(*alarm),
            Changed::Gone => None,
        })
    }

    /// Records `annotation` by `origin` at `at` as an audit record, with the models
    /// concerned: for an alarm in the twin's list, the model that raised it; for a
    /// safety action, those its record (`action`, read by the caller) names, and its
    /// command id; for a recommendation of one of the type's commands, the twin's
    /// models now. Changes nothing else; the record is returned.
    pub fn annotate(
        &mut self,
        annotation: &Annotation,
        action: Option<&AuditRecord>,
        origin: &Origin,
        at: Timestamp,
        fx: &mut Effects,
    ) -> Result<AuditRecord, Error> {
        let asset = self.state.path.clone();
        let (command_id, models, requested) = match (&annotation.subject, action) {
            (AnnotationSubject::Alarm(code), _) => {
                let alarm = (self.state.alarms.iter())
                    .find(|alarm| alarm.code == *code)
                    .ok_or_else(|| Error::AlarmRefused {
                        asset: asset.clone(),
                        refusal: crate::twin::AlarmRefusal::Unknown(code.clone()),
                    })?;
                let models = (self.model_infos().into_iter())
                    .filter(|model| model.name == alarm.raised_by)
                    .collect();
                (CommandId::random(), models, Vec::new())
            }
            (AnnotationSubject::SafetyAction(seq), action) => {
                let action = action
                    .filter(|r| r.asset == asset && r.kind == AuditKind::SafetyAction)
                    .ok_or(Error::UnknownSafetyAction {
                        asset: asset.clone(),
                        seq: *seq,
                    })?;
                (action.command_id.clone(), action.models.clone(), Vec::new())
            }
            (AnnotationSubject::Recommendation { command, params }, _) => {
                let Some(spec) = self.twin_type.commands.get(command) else {
                    return Err(Error::UnknownCommand {
                        asset,
                        command: command.clone(),
                    });
                };
                // The parameters must be ones the command takes, as it takes them.
                let mut probe =
                    crate::command::Command::new(asset.clone(), command, origin.clone());
                for (name, value) in params {
                    probe = probe.param(name.clone(), *value);
                }
                super::commands::resolve_changes(&self.twin_type, spec, &probe)?;
                (CommandId::random(), self.model_infos(), params.clone())
            }
        };
        let record = AuditRecord {
            seq: 0,
            at,
            asset,
            kind: AuditKind::Annotation,
            command_id,
            command: annotation.command(),
            requested,
            origin: origin.clone(),
            state_version: self.state.version,
            models,
            verdict: Verdict::Accepted,
            applied: Vec::new(),
            reason: annotation.reason(),
        };
        fx.audit.push(record.clone());
        Ok(record)
    }

    /// Unshelves every alarm whose shelving ended by `now`, as the node: an alarm
    /// still active comes back unacknowledged. Returns how many.
    pub fn end_shelvings(&mut self, now: Timestamp, fx: &mut Effects) -> usize {
        let ended = list::shelving_ended(&self.state.alarms, now);
        let origin = Origin::automation(SHELVING_ENDED_BY);
        for code in &ended {
            let response = AlarmResponse::Unshelve(AlarmNote {
                by: SHELVING_ENDED_BY.to_string(),
                at: now,
                note: "shelving ended".to_string(),
            });
            if let Err(error) = self.respond_to_alarm(code, response, &origin, fx) {
                tracing::warn!(asset = %self.state.path, %error, "an ended shelving was not lifted");
            }
        }
        ended.len()
    }

    /// When the next shelving ends, if an alarm is shelved.
    pub fn next_shelving_end(&self) -> Option<Timestamp> {
        list::next_shelving_end(&self.state.alarms)
    }

    /// Marks each model alarm suppressed or not by design, as its model's
    /// `suppress_when` names the twin's run state; returns the alarms that changed, as
    /// changes to publish. A pure function of the state: recovery recomputes it.
    pub(super) fn suppress_by_design(&mut self) -> Vec<TwinChange> {
        let designed = self
            .twin_type
            .models
            .iter()
            .any(|m| !m.suppress_when.is_empty());
        if !designed {
            return Vec::new();
        }
        let twin_type = self.twin_type.clone();
        let run_state = self.run_state();
        let mut changed = Vec::new();
        for alarm in &mut self.state.alarms {
            let suppressed = twin_type
                .models
                .iter()
                .find(|model| model.name == alarm.raised_by)
                .is_some_and(|model| model.suppress_when.contains(&run_state));
            if alarm.suppressed != suppressed {
                alarm.suppressed = suppressed;
                changed.push(TwinChange::AlarmRaised(alarm.clone()));
            }
        }
        changed
    }

    /// Raises an alarm (see [`TwinState::raise_alarm`](crate::TwinState::raise_alarm)),
    /// noting it when it becomes active.
    pub(super) fn raise_alarm(&mut self, alarm: Alarm) -> Option<TwinChange> {
        let was_active = self
            .state
            .alarms
            .iter()
            .any(|a| a.code == alarm.code && a.active);
        let code = alarm.code.clone();
        let change = self.state.raise_alarm(alarm);
        if change.is_some() && !was_active {
            self.activations.push(code);
        }
        change
    }

    /// Codes of the alarms that became active since the last call.
    pub fn take_activations(&mut self) -> Vec<String> {
        std::mem::take(&mut self.activations)
    }

    /// Re-applies a journaled response during recovery.
    pub(super) fn replay_alarm_response(&mut self, code: &str, response: &AlarmResponse) {
        if let Err(refusal) = list::respond(&mut self.state.alarms, code, response) {
            // The journal holds only responses that were applied; the alarm they
            // answered is rebuilt by the events before them.
            tracing::debug!(asset = %self.state.path, %refusal, "a journaled alarm response found nothing to change");
        }
        self.state.updated_at = self.state.updated_at.max(response.note().at);
    }
}
