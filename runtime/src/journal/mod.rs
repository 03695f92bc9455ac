//! Durability: one redb file per node holding every twin's journal and snapshots and
//! the audit log, written by a single group-committing thread through a write-ahead log.
//!
//! Twins hand their accepted events to the [`Journal`]; the committer thread batches
//! writes from all twins every `batch_interval_ms` or `batch_max_events`, whichever comes
//! first, appends the batch to the write-ahead log and flushes it (`sync_data`), and only
//! then completes the writes' [`Ticket`]s and replies: acknowledged means on disk. The
//! batch is applied to redb right after; a store read waits for that when it starts
//! after an acknowledgement. A periodic durable redb commit (a checkpoint) lets the log
//! start over.

mod ack;
mod committer;
mod event;
mod outbox;
mod store;
mod wal;

pub use ack::{AckGroup, Receipt, Ticket};
pub use committer::{Completion, Journal, JournalWrite};
pub(crate) use event::SNAPSHOT_FORMAT;
pub use event::{JournalEvent, JournalRecord, LegacySample, Snapshot};
pub use outbox::{OutboxCompaction, OutboxEntry, decode_updates};
pub use store::{Store, StoreError};
