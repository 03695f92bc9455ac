//! Governors: keep every action inside safe limits.

use crate::command::{Clamp, Command, DesiredChange};
use crate::model::Trajectory;
use crate::sample::{ChannelId, Sample};
use crate::time::Timestamp;
use crate::twin::{ChannelCondition, TwinView};
use crate::value::Value;

/// A governor a twin runs. One instance per twin; it lives inside the twin actor, so
/// a safety decision never waits on a network hop.
///
/// `review` sees every command before it changes desired state and may clamp or deny
/// it. `watch` sees every applied sample and may demand a safety action, which the
/// twin executes within the same message handling.
pub trait Governor: Send + 'static {
    /// The governor's name, unique within the twin.
    fn name(&self) -> &str;

    /// Reviews a proposed command. Clamp through [`Proposal::clamp`]; return
    /// [`Review::Deny`] to refuse. Must not change `self`: what-if simulation calls it too.
    fn review(&self, proposal: &mut Proposal<'_>, twin: &TwinView<'_>) -> Review;

    /// The commands of the twin's type this governor may demand as safety actions from
    /// [`Governor::watch`] or [`Governor::on_condition`]. A node checks at start that
    /// every desired value they set reaches the machine through a connector; a governor that demands a command it
    /// did not name here still has it executed, with an error logged.
    fn safety_commands(&self) -> Vec<String> {
        Vec::new()
    }

    /// Watches a newly applied sample (the state already includes it).
    fn watch(&mut self, sample: &Sample, twin: &TwinView<'_>) -> Option<SafetyDemand> {
        let _ = (sample, twin);
        None
    }

    /// Sees a channel come under a condition: stale (no reading for longer than its
    /// maximum age, or its source lost touch) or bad by its source's report. The state
    /// already shows it. May demand a safety action as [`Governor::watch`] does.
    fn on_condition(
        &mut self,
        channel: ChannelId,
        condition: &ChannelCondition,
        twin: &TwinView<'_>,
    ) -> Option<SafetyDemand> {
        let _ = (channel, condition, twin);
        None
    }

    /// Looks at a projection of the twin (a what-if's trajectory) and says whether it
    /// would act on it: a trip whose limit the projected channel crosses. A
    /// recommendation denies a candidate whose projection a governor would act on.
    /// Must not change `self`.
    fn review_projection(&self, trajectory: &Trajectory, twin: &TwinView<'_>) -> Option<String> {
        let _ = (trajectory, twin);
        None
    }

    /// Serializes internal state for snapshots.
    fn save(&self) -> Vec<u8> {
        Vec::new()
    }

    /// Restores internal state saved by [`Governor::save`].
    fn restore(&mut self, saved: &[u8]) -> Result<(), String> {
        let _ = saved;
        Ok(())
    }
}

/// A governor's decision on a proposal.
#[derive(Debug, Clone, PartialEq)]
pub enum Review {
    /// Let it pass (possibly clamped).
    Allow,
    /// Refuse it, with a reason.
    Deny(String),
}

/// A safety action a governor demands: run a command of the twin's type at once,
/// bypassing review, and latch a trip.
#[derive(Debug, Clone, PartialEq)]
pub struct SafetyDemand {
    /// The command to execute (e.g. `stop`).
    pub command: String,
    /// Its parameters.
    pub params: Vec<(String, Value)>,
    /// Why, for the audit log and the alarm.
    pub reason: String,
    /// Whether to latch a trip that blocks restarts until cleared.
    pub latch: bool,
}

/// A command under review, with the desired values it would write.
pub struct Proposal<'a> {
    /// The command.
    pub command: &'a Command,
    /// The desired values it would write, as requested and as clamped so far.
    pub changes: Vec<DesiredChange>,
    /// Whether the command clears latched trips when applied.
    pub clears_trips: bool,
    /// The review time.
    pub now: Timestamp,
    pub(crate) clamps: Vec<Clamp>,
    pub(crate) reviewer: &'a str,
}

impl<'a> Proposal<'a> {
    /// Creates a proposal for review.
    pub fn new(
        command: &'a Command,
        changes: Vec<DesiredChange>,
        clears_trips: bool,
        now: Timestamp,
    ) -> Self {
        Self {
            command,
            changes,
            clears_trips,
            now,
            clamps: Vec::new(),
            reviewer: "",
        }
    }

    /// The change to desired value `name`, if the command writes it.
    pub fn change(&self, name: &str) -> Option<&DesiredChange> {
        self.changes.iter().find(|c| c.name == name)
    }

    /// Replaces the value the command writes to desired `name`, recording the clamp.
    pub fn clamp(&mut self, name: &str, value: Value, reason: impl Into<String>) {
        let Some(change) = self.changes.iter_mut().find(|c| c.name == name) else {
            return;
        };
        if change.value == value {
            return;
        }
        change.value = value;
        self.clamps.push(Clamp {
            desired: name.to_string(),
            requested: change.requested,
            applied: value,
            governor: self.reviewer.to_string(),
            reason: reason.into(),
        });
    }

    /// Clamps recorded so far.
    pub fn clamps(&self) -> &[Clamp] {
        &self.clamps
    }
}
