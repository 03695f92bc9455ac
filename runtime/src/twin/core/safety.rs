//! Governors' safety actions, and the alarms the runtime raises itself.

use super::{Effects, TwinCore, resolve_changes};
use crate::audit::{AuditKind, AuditRecord};
use crate::command::{Command, CommandId, Origin, OriginKind, Verdict};
use crate::governor::SafetyDemand;
use crate::journal::JournalEvent;
use crate::time::Timestamp;
use crate::twin::actuation::Actuation;
use crate::twin::change::{TwinChange, TwinEvent};
use crate::twin::state::{Alarm, Delivery, DeliveryState, Severity, Trip};
use crate::value::Value;

impl TwinCore {
    pub(super) fn execute_safety(
        &mut self,
        governor: usize,
        demand: &SafetyDemand,
        at: Timestamp,
        fx: &mut Effects,
    ) {
        let governor_name = self.governors[governor].name().to_string();
        if !self.governors[governor]
            .safety_commands()
            .contains(&demand.command)
        {
            tracing::error!(asset = %self.state.path, governor = %governor_name, command = %demand.command, "safety action demands a command its governor does not declare in `safety_commands`; the node's start check did not cover it");
        }
        let Some(spec) = self.twin_type.commands.get(&demand.command).cloned() else {
            tracing::error!(asset = %self.state.path, governor = %governor_name, command = %demand.command, "safety action names an unknown command");
            return;
        };
        let command = Command {
            id: CommandId::random(),
            asset: self.state.path.clone(),
            name: demand.command.clone(),
            params: demand.params.clone(),
            origin: Origin {
                kind: OriginKind::Safety,
                principal: governor_name.clone(),
            },
            issued_at: at,
            deadline: None,
            idempotent: false,
        };
        let changes = match resolve_changes(&self.twin_type, &spec, &command) {
            Ok(changes) => changes,
            Err(error) => {
                tracing::error!(asset = %self.state.path, governor = %governor_name, %error, "safety action has invalid parameters");
                return;
            }
        };
        let applied: Vec<(String, Value)> =
            changes.iter().map(|c| (c.name.clone(), c.value)).collect();
        let state_version = self.state.version;
        self.apply_safety(
            &governor_name,
            &demand.reason,
            &demand.command,
            &applied,
            demand.latch,
            at,
            Some(fx),
        );
        fx.record(
            self.id,
            self.state.version,
            JournalEvent::Safety {
                governor: governor_name.clone(),
                reason: demand.reason.clone(),
                command: demand.command.clone(),
                changes: applied.clone(),
                latch: demand.latch,
                at,
            },
        );
        fx.audit.push(AuditRecord {
            seq: 0,
            at,
            asset: self.state.path.clone(),
            kind: AuditKind::SafetyAction,
            command_id: command.id.clone(),
            command: command.name.clone(),
            requested: command.params.clone(),
            origin: command.origin.clone(),
            state_version,
            models: self.model_infos(),
            verdict: Verdict::Accepted,
            applied: applied.clone(),
            reason: demand.reason.clone(),
        });
        fx.safety_actuations.push(Actuation {
            asset: self.state.path.clone(),
            version: self.state.version,
            command_id: command.id,
            command: command.name,
            values: applied,
            origin: command.origin,
            safety: true,
            reason: demand.reason.clone(),
            at,
            deadline: None,
        });
        fx.urgent = true;
        tracing::warn!(asset = %self.state.path, governor = %governor_name, reason = %demand.reason, "safety action");
    }

    #[allow(clippy::too_many_arguments)]
    pub(super) fn apply_safety(
        &mut self,
        governor: &str,
        reason: &str,
        command: &str,
        changes: &[(String, Value)],
        latch: bool,
        at: Timestamp,
        fx: Option<&mut Effects>,
    ) {
        let delivery = Delivery {
            state: DeliveryState::Pending,
            version: self.state.version + 1,
            command_id: None,
            command: command.to_string(),
            origin: Some(Origin {
                kind: OriginKind::Safety,
                principal: governor.to_string(),
            }),
            safety: true,
            deadline: None,
            at,
            by: String::new(),
            reason: String::new(),
        };
        let deliveries = self.set_desired(changes, at, &delivery);
        let mut published = Vec::new();
        if latch {
            let trip = Trip {
                governor: governor.to_string(),
                reason: reason.to_string(),
                at,
            };
            self.state.trips.push(trip.clone());
            let alarm = Alarm::new(
                format!("trip:{governor}"),
                Severity::Critical,
                reason,
                governor,
                at,
            );
            published.push(TwinChange::Tripped(trip));
            published.extend(self.raise_alarm(alarm));
        }
        self.bump(at);
        self.update_health();
        published.extend(self.suppress_by_design());
        if let Some(fx) = fx
            && fx.collect_changes
        {
            published.insert(
                0,
                TwinChange::Desired {
                    values: changes.to_vec(),
                },
            );
            published.insert(1, TwinChange::Delivery { values: deliveries });
            self.publish(published, fx);
        }
    }

    /// Raises a critical alarm the runtime itself owns (code `code`), published to
    /// watchers; true when it was not raised already. Not journaled: the condition is
    /// the node's, and raised again by the node after a restart if it persists.
    pub fn raise_system_alarm(
        &mut self,
        code: &str,
        message: &str,
        at: Timestamp,
        fx: &mut Effects,
    ) -> bool {
        let alarm = Alarm::new(code, Severity::Critical, message, "node", at);
        let Some(change) = self.raise_alarm(alarm) else {
            return false;
        };
        if fx.collect_changes {
            fx.changes.push(TwinEvent {
                asset: self.state.path.clone(),
                version: self.state.version,
                change,
            });
        }
        true
    }
}
