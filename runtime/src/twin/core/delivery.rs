//! How desired values reach the machine: delivery state, deadlines, re-sending.

use std::time::Duration;

use super::{Effects, TwinCore};
use crate::audit::{AuditKind, AuditRecord};
use crate::command::{CommandId, Origin, OriginKind, Verdict};
use crate::journal::JournalEvent;
use crate::time::Timestamp;
use crate::twin::actuation::Actuation;
use crate::twin::change::{TwinChange, TwinEvent};
use crate::twin::state::{
    Alarm, Delivery, DeliveryOutcome, DeliveryReport, DeliveryState, DesiredValue, Severity,
    TwinState,
};
use crate::value::Value;

impl TwinCore {
    /// Sets desired values, each pending delivery as `delivery`; returns the deliveries
    /// by name.
    pub(super) fn set_desired(
        &mut self,
        changes: &[(String, Value)],
        at: Timestamp,
        delivery: &Delivery,
    ) -> Vec<(String, Delivery)> {
        let mut deliveries = Vec::with_capacity(changes.len());
        for (name, value) in changes {
            if let Some((index, _)) = self.twin_type.desired(name) {
                self.state.desired[index] = DesiredValue {
                    value: *value,
                    set_at: at,
                    delivery: delivery.clone(),
                    agrees: None,
                };
                // A new value supersedes the one that could not be delivered.
                let _ = self.state.clear_alarm(&undelivered_code(name));
                deliveries.push((name.clone(), delivery.clone()));
            }
        }
        deliveries
    }

    /// Sets the delivery of the named desired values that `delivery`'s version set, and
    /// raises or clears their safety alarm; returns what changed.
    pub(super) fn set_delivery(
        &mut self,
        desired: &[String],
        delivery: &Delivery,
    ) -> Vec<(String, Delivery)> {
        let mut changed = Vec::new();
        for name in desired {
            let Some((index, _)) = self.twin_type.desired(name) else {
                continue;
            };
            let slot = &mut self.state.desired[index];
            if slot.delivery.version != delivery.version || slot.delivery == *delivery {
                continue;
            }
            slot.delivery = delivery.clone();
            let code = undelivered_code(name);
            if delivery.safety && delivery.state == DeliveryState::Failed {
                let _ = self.raise_alarm(Alarm::new(
                    code,
                    Severity::Critical,
                    format!(
                        "safety action `{}` did not reach the machine: {} ({})",
                        delivery.command, delivery.reason, name
                    ),
                    delivery
                        .origin
                        .as_ref()
                        .map(|o| o.principal.clone())
                        .unwrap_or_default(),
                    delivery.at,
                ));
            } else {
                let _ = self.state.clear_alarm(&code);
            }
            changed.push((name.clone(), delivery.clone()));
        }
        changed
    }

    /// Records an actuator's report: a pending or failed value becomes delivered; a
    /// pending one becomes failed. A report about a value set since by a newer
    /// actuation changes nothing. Journaled, audited and published; true when it
    /// changed the state.
    pub fn apply_delivery(&mut self, report: &DeliveryReport, fx: &mut Effects) -> bool {
        let mut by_version: Option<Delivery> = None;
        let mut desired = Vec::new();
        let mut values = Vec::new();
        for name in &report.desired {
            let Some((index, _)) = self.twin_type.desired(name) else {
                continue;
            };
            let slot = &self.state.desired[index];
            let current = &slot.delivery;
            let applies = current.version == report.version
                && match report.outcome {
                    DeliveryOutcome::Delivered => matches!(
                        current.state,
                        DeliveryState::Pending | DeliveryState::Failed
                    ),
                    DeliveryOutcome::Failed(_) => current.state == DeliveryState::Pending,
                };
            if !applies {
                continue;
            }
            if by_version.is_none() {
                let mut next = current.clone();
                match &report.outcome {
                    DeliveryOutcome::Delivered => {
                        next.state = DeliveryState::Delivered;
                        next.reason.clear();
                    }
                    DeliveryOutcome::Failed(reason) => {
                        next.state = DeliveryState::Failed;
                        next.reason.clone_from(reason);
                    }
                }
                next.at = report.at;
                next.by.clone_from(&report.by);
                by_version = Some(next);
            }
            desired.push(name.clone());
            values.push((name.clone(), slot.value));
        }
        let Some(delivery) = by_version else {
            return false;
        };
        self.record_delivery(desired, values, delivery, fx);
        true
    }

    /// Gives up on pending values whose deadline passed, and on safety values no
    /// actuator confirmed within `safety_bound` (raising their critical alarm).
    pub fn expire_deliveries(&mut self, now: Timestamp, safety_bound: Duration, fx: &mut Effects) {
        let bound_us = safety_bound.as_micros() as i64;
        let mut expired = Vec::new();
        for (spec, slot) in self.twin_type.desired.iter().zip(&self.state.desired) {
            let delivery = &slot.delivery;
            if delivery.state != DeliveryState::Pending {
                continue;
            }
            let reason = if delivery.deadline.is_some_and(|deadline| deadline < now) {
                "its deadline passed before an actuator confirmed it; it is not sent".to_string()
            } else if delivery.safety && now.0 - delivery.at.0 >= bound_us {
                format!(
                    "no actuator confirmed it within {} ms",
                    safety_bound.as_millis()
                )
            } else {
                continue;
            };
            let mut next = delivery.clone();
            next.state = DeliveryState::Failed;
            next.at = now;
            next.by = "twin".to_string();
            next.reason = reason;
            expired.push((spec.name.clone(), slot.value, next));
        }
        for (name, value, delivery) in expired {
            self.record_delivery(vec![name.clone()], vec![(name, value)], delivery, fx);
        }
    }

    pub(super) fn record_delivery(
        &mut self,
        desired: Vec<String>,
        values: Vec<(String, Value)>,
        delivery: Delivery,
        fx: &mut Effects,
    ) {
        let alarm_of = |state: &TwinState, name: &str| {
            let code = undelivered_code(name);
            state.alarms.iter().find(|a| a.code == code).cloned()
        };
        let before: Vec<(String, Option<Alarm>)> = desired
            .iter()
            .map(|name| (name.clone(), alarm_of(&self.state, name)))
            .collect();
        let changed = self.set_delivery(&desired, &delivery);
        self.bump(delivery.at);
        fx.record(
            self.id,
            self.state.version,
            JournalEvent::Delivery {
                desired,
                delivery: delivery.clone(),
            },
        );
        let failed = delivery.state == DeliveryState::Failed;
        fx.audit.push(AuditRecord {
            seq: 0,
            at: delivery.at,
            asset: self.state.path.clone(),
            kind: if failed {
                AuditKind::DeliveryFailed
            } else {
                AuditKind::Delivered
            },
            command_id: delivery
                .command_id
                .clone()
                .unwrap_or_else(|| CommandId(String::new())),
            command: delivery.command.clone(),
            requested: Vec::new(),
            origin: Origin {
                kind: OriginKind::System,
                principal: delivery.by.clone(),
            },
            state_version: delivery.version,
            models: Vec::new(),
            verdict: Verdict::Accepted,
            applied: values,
            reason: if failed {
                delivery.reason.clone()
            } else {
                format!("delivered by {}", delivery.by)
            },
        });
        if failed && delivery.safety {
            fx.urgent = true;
            tracing::error!(asset = %self.state.path, command = %delivery.command, by = %delivery.by, reason = %delivery.reason, "safety action not delivered to the machine");
        }
        if fx.collect_changes {
            let version = self.state.version;
            let asset = self.state.path.clone();
            fx.changes.push(TwinEvent {
                asset: asset.clone(),
                version,
                change: TwinChange::Delivery {
                    values: changed.clone(),
                },
            });
            for (name, before) in before {
                let change = match (before, alarm_of(&self.state, &name)) {
                    (before, Some(now)) if before.as_ref() != Some(&now) => {
                        TwinChange::AlarmRaised(now)
                    }
                    (Some(_), None) => TwinChange::AlarmCleared {
                        code: undelivered_code(&name),
                    },
                    _ => continue,
                };
                fx.changes.push(TwinEvent {
                    asset: asset.clone(),
                    version,
                    change,
                });
            }
        }
    }

    /// When the next pending value reaches its deadline or its safety bound, if any is
    /// pending.
    pub fn next_delivery_check(&self, safety_bound: Duration) -> Option<Timestamp> {
        let bound_us = safety_bound.as_micros() as i64;
        self.state
            .desired
            .iter()
            .map(|slot| &slot.delivery)
            .filter(|delivery| delivery.state == DeliveryState::Pending)
            .filter_map(|delivery| {
                let safety = delivery
                    .safety
                    .then(|| Timestamp(delivery.at.0.saturating_add(bound_us)));
                match (delivery.deadline, safety) {
                    (Some(a), Some(b)) => Some(a.min(b)),
                    (a, b) => a.or(b),
                }
            })
            .min()
    }

    /// What an actuator should send again now: the values still pending or failed and
    /// not past their deadline, and delivered values the machine reports back
    /// differently (since their delivery, beyond the tolerance), grouped by the
    /// actuation that set them, safety actions first.
    pub fn undelivered(&self, now: Timestamp) -> Vec<Actuation> {
        let mut actuations: Vec<Actuation> = Vec::new();
        for (spec, slot) in self.twin_type.desired.iter().zip(&self.state.desired) {
            let delivery = &slot.delivery;
            let disagrees = delivery.state == DeliveryState::Delivered
                && spec.reported.is_some_and(|channel| {
                    self.state.current(channel).is_some_and(|sample| {
                        sample.source_time > delivery.at && !spec.agrees(slot.value, sample.value)
                    })
                });
            if !(delivery.resendable(now) || disagrees) {
                continue;
            }
            match actuations
                .iter_mut()
                .find(|a| a.version == delivery.version)
            {
                Some(actuation) => actuation.values.push((spec.name.clone(), slot.value)),
                None => actuations.push(Actuation {
                    asset: self.state.path.clone(),
                    version: delivery.version,
                    command_id: delivery
                        .command_id
                        .clone()
                        .unwrap_or_else(|| CommandId(format!("v{}", delivery.version))),
                    command: delivery.command.clone(),
                    values: vec![(spec.name.clone(), slot.value)],
                    origin: delivery.origin.clone().unwrap_or(Origin {
                        kind: OriginKind::System,
                        principal: "twin".to_string(),
                    }),
                    safety: delivery.safety,
                    reason: String::new(),
                    at: slot.set_at,
                    deadline: delivery.deadline,
                }),
            }
        }
        actuations.sort_by_key(|a| (!a.safety, a.version));
        actuations
    }
}

/// The code of the critical alarm a safety value that did not reach the machine raises.
pub fn undelivered_code(desired: &str) -> String {
    format!("undelivered:{desired}")
}
