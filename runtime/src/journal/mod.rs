//! Durability: one redb file per node holding every twin's journal and snapshots and
//! the audit log, written by a single group-committing thread.
//!
//! Twins hand their accepted events to the [`Journal`]; the committer thread batches
//! writes from all twins into one write transaction every `batch_interval_ms` or
//! `batch_max_events`, whichever comes first, and only after that transaction commits
//! (fsync) completes the writes' [`Ticket`]s and replies. Acknowledged means on disk.

mod ack;
mod committer;
mod event;
mod outbox;
mod store;

pub use ack::{AckGroup, Receipt, Ticket};
pub use committer::{Completion, Journal, JournalWrite};
pub use event::{JournalEvent, JournalRecord, Snapshot};
pub use outbox::{OutboxCompaction, OutboxEntry, decode_updates};
pub use store::{Store, StoreError};
