//! What the journal holds: per-twin events and snapshots.

use serde::{Deserialize, Serialize};

use crate::command::{CommandId, Origin, Verdict};
use crate::sample::Sample;
use crate::time::Timestamp;
use crate::twin::TwinState;
use crate::value::Value;

/// One accepted change of a twin.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum JournalEvent {
    /// A sample was applied (or kept in history as stale).
    Sample(Sample),
    /// A command was applied; `changes` are the desired values written (by name).
    Command {
        /// The command's id.
        id: CommandId,
        /// The command's name.
        name: String,
        /// Who asked.
        origin: Origin,
        /// The verdict (accepted or clamped).
        verdict: Verdict,
        /// Desired values written, after clamping.
        changes: Vec<(String, Value)>,
        /// Whether it cleared latched trips.
        clears_trips: bool,
        /// When it was applied.
        at: Timestamp,
    },
    /// A governor's safety action was executed.
    Safety {
        /// The governor.
        governor: String,
        /// Its reason.
        reason: String,
        /// The command executed.
        command: String,
        /// Desired values written.
        changes: Vec<(String, Value)>,
        /// Whether a trip was latched.
        latch: bool,
        /// When.
        at: Timestamp,
    },
}

/// A journal entry: the twin it belongs to, the version it produced and the event.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct JournalRecord {
    /// The twin's durable numeric id.
    pub twin: u32,
    /// The twin's version after this event.
    pub version: u64,
    /// The event.
    pub event: JournalEvent,
}

/// A twin's state at a version, with its models' and governors' saved state, and the
/// channel and desired value names its indices referred to (so a changed type can be
/// remapped by name).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Snapshot {
    /// The twin state.
    pub state: TwinState,
    /// The channel names, indexed by channel id, when the snapshot was taken.
    pub channel_names: Vec<String>,
    /// The desired value names, in the order of `state.desired`.
    pub desired_names: Vec<String>,
    /// Saved model state by model name.
    pub models: Vec<(String, Vec<u8>)>,
    /// Saved governor state by governor name.
    pub governors: Vec<(String, Vec<u8>)>,
}
