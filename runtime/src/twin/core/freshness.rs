//! Freshness: channels whose value can no longer be trusted though no reading says so.
//!
//! A channel goes stale when nothing newer arrived for longer than its maximum age, or
//! when the source that delivered its value lost touch; it goes bad when its source
//! reports a failure without a value. Either is a condition: journaled, shown with the
//! channel, raising an alarm, and offered to governors. The next reading lifts it.

use std::time::Duration;

use super::{Effects, TwinCore};
use crate::journal::JournalEvent;
use crate::sample::{ChannelId, Quality, SourceId};
use crate::time::Timestamp;
use crate::twin::change::{TwinChange, TwinEvent};
use crate::twin::state::{Alarm, ChannelCondition, Severity};

/// Who raises the alarm of a channel condition.
pub const CONDITION_ALARM_SOURCE: &str = "input";

impl TwinCore {
    /// Marks every channel whose current value was received longer ago than its maximum
    /// age (the type's `max_age_secs`, else `default_max_age`; zero never) as stale,
    /// and returns when the next channel would go stale if nothing arrives, if any.
    pub fn sweep(
        &mut self,
        now: Timestamp,
        default_max_age: Duration,
        fx: &mut Effects,
    ) -> Option<Timestamp> {
        self.freshness_changed = false;
        let mut next: Option<Timestamp> = None;
        for index in 0..self.twin_type.channels.len() {
            let max_age = self.twin_type.channels[index]
                .max_age
                .unwrap_or(default_max_age);
            if max_age.is_zero() {
                continue;
            }
            let channel = &self.state.channels[index];
            let Some(current) = channel.current else {
                continue;
            };
            if channel.condition.is_some() || current.quality == Quality::Bad {
                continue;
            }
            let due = current.receive_time.plus(max_age);
            if due > now {
                next = Some(next.map_or(due, |next| next.min(due)));
                continue;
            }
            let reason = format!(
                "no reading for {} (max age {})",
                span(now.secs_since(current.receive_time)),
                span(max_age.as_secs_f64())
            );
            let condition = ChannelCondition {
                quality: Quality::Stale,
                reason,
                since: now,
            };
            self.mark(ChannelId(index as u16), condition, now, fx);
        }
        next
    }

    /// When the first channel whose value is still trusted goes stale if nothing
    /// arrives (possibly already past), if any. Changes nothing: a sweep at or after
    /// that instant has work to do, one before it has none.
    pub fn stale_due(&self, default_max_age: Duration) -> Option<Timestamp> {
        let mut first: Option<Timestamp> = None;
        for (spec, channel) in self.twin_type.channels.iter().zip(&self.state.channels) {
            let max_age = spec.max_age.unwrap_or(default_max_age);
            let Some(current) = channel.current else {
                continue;
            };
            if max_age.is_zero() || channel.condition.is_some() || current.quality == Quality::Bad {
                continue;
            }
            let due = current.receive_time.plus(max_age);
            first = Some(first.map_or(due, |first| first.min(due)));
        }
        first
    }

    /// Marks every channel whose current value came from one of `sources` as stale,
    /// for `reason` (the source lost its session, subscription or broker).
    pub fn sources_lost(
        &mut self,
        sources: &[SourceId],
        reason: &str,
        now: Timestamp,
        fx: &mut Effects,
    ) {
        for index in 0..self.state.channels.len() {
            let fed = self.state.channels[index]
                .current
                .is_some_and(|c| sources.contains(&c.source));
            if fed {
                let condition = ChannelCondition {
                    quality: Quality::Stale,
                    reason: reason.to_string(),
                    since: now,
                };
                self.mark(ChannelId(index as u16), condition, now, fx);
            }
        }
    }

    /// Puts `channel` under `condition`: journals it, publishes it, raises its alarm and
    /// lets governors act on it. Returns false when it changed nothing (see
    /// [`TwinState::set_condition`](crate::TwinState::set_condition)).
    pub fn mark(
        &mut self,
        channel: ChannelId,
        condition: ChannelCondition,
        now: Timestamp,
        fx: &mut Effects,
    ) -> bool {
        if !self.state.set_condition(channel, condition.clone()) {
            return false;
        }
        self.bump(now);
        fx.conditions += 1;
        fx.record(
            self.id,
            self.state.version,
            JournalEvent::Condition {
                channel,
                condition: condition.clone(),
            },
        );
        if fx.collect_changes {
            fx.changes.push(TwinEvent {
                asset: self.state.path.clone(),
                version: self.state.version,
                change: TwinChange::Condition {
                    channel: self.channel_name(channel),
                    condition: condition.clone(),
                },
            });
        }
        self.raise_condition_alarm(channel, &condition, Some(fx));
        self.ask_governors(now, fx, |governor, view| {
            governor.on_condition(channel, &condition, view)
        });
        true
    }

    /// Re-applies a journaled condition during recovery (governors' safety actions are
    /// journaled events of their own).
    pub(super) fn replay_condition(&mut self, channel: ChannelId, condition: &ChannelCondition) {
        if self.state.set_condition(channel, condition.clone()) {
            self.state.updated_at = self.state.updated_at.max(condition.since);
            self.raise_condition_alarm(channel, condition, None);
        }
    }

    /// Raises the alarm of a channel's condition, replacing one of the other quality.
    fn raise_condition_alarm(
        &mut self,
        channel: ChannelId,
        condition: &ChannelCondition,
        mut fx: Option<&mut Effects>,
    ) {
        let name = self.channel_name(channel);
        for quality in [Quality::Stale, Quality::Bad] {
            if quality != condition.quality {
                self.clear_alarm(
                    &ChannelCondition::alarm_code(quality, &name),
                    fx.as_deref_mut(),
                );
            }
        }
        let alarm = Alarm::new(
            ChannelCondition::alarm_code(condition.quality, &name),
            Severity::Warning,
            format!(
                "{name} is {}: {}",
                condition.quality.as_str(),
                condition.reason
            ),
            CONDITION_ALARM_SOURCE,
            condition.since,
        );
        if let Some(change) = self.raise_alarm(alarm)
            && let Some(fx) = fx
            && fx.collect_changes
        {
            fx.changes.push(TwinEvent {
                asset: self.state.path.clone(),
                version: self.state.version,
                change,
            });
        }
    }

    /// Clears the alarm of a condition a reading lifted.
    pub(super) fn condition_lifted(
        &mut self,
        channel: ChannelId,
        quality: Quality,
        fx: Option<&mut Effects>,
    ) {
        let code = ChannelCondition::alarm_code(quality, &self.channel_name(channel));
        self.clear_alarm(&code, fx);
    }

    fn clear_alarm(&mut self, code: &str, fx: Option<&mut Effects>) {
        if let Some(change) = self.state.clear_alarm(code)
            && let Some(fx) = fx
            && fx.collect_changes
        {
            fx.changes.push(TwinEvent {
                asset: self.state.path.clone(),
                version: self.state.version,
                change,
            });
        }
    }

    /// True when a reading started or resumed a channel's clock since the last
    /// [`sweep`](Self::sweep): the next sweep may be due earlier than announced.
    pub fn freshness_changed(&self) -> bool {
        self.freshness_changed
    }
}

/// Seconds as people read them: `0.8 s`, `31 s`, `5 min 3 s`.
fn span(secs: f64) -> String {
    if secs < 10.0 {
        format!("{secs:.1} s")
    } else if secs < 120.0 {
        format!("{} s", secs.round())
    } else {
        let whole = secs.round() as u64;
        format!("{} min {} s", whole / 60, whole % 60)
    }
}

#[cfg(test)]
mod tests {
    use super::span;

    #[test]
    fn spans_read_as_people_say_them() {
        assert_eq!(span(0.84), "0.8 s");
        assert_eq!(span(31.2), "31 s");
        assert_eq!(span(303.0), "5 min 3 s");
    }
}
