//! The group-committing writer thread.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use redb::{Durability, ReadableDatabase};
use tokio::sync::oneshot;

use super::ack::Ticket;
use super::store::{JOURNAL, META, Store, StoreError, index_audit};
use super::wal::{self, Frame, Wal};
use crate::audit::AuditKind;
use crate::audit::AuditRecord;
use crate::config::JournalSettings;
use crate::error::Error;
use crate::path::AssetPath;
use crate::twin::MirrorUpdate;

/// Called after the write's batch commits (or fails), with the sequence numbers
/// assigned to its audit records.
pub type Reply = Box<dyn FnOnce(Result<Vec<u64>, Error>) + Send>;

/// What to do once a write is durable.
pub enum Completion {
    /// Nothing beyond completing the ticket.
    None,
    /// Run this callback (reply to a command, publish its actuation).
    Reply(Reply),
}

/// Longest command id the idempotency index keeps (longer ids are never retried by key).
const MAX_INDEXED_ID: usize = 256;

/// Everything one twin message produced, handed to the journal as a unit.
pub struct JournalWrite {
    /// The twin's durable id.
    pub twin: u32,
    /// Encoded [`super::JournalRecord`]s, concatenated.
    pub records: Vec<u8>,
    /// How many records `records` holds.
    pub events: u32,
    /// Audit records to append (their `seq` is assigned at commit).
    pub audit: Vec<AuditRecord>,
    /// A snapshot covering every record of this and earlier writes of the twin.
    pub snapshot: Option<(AssetPath, Vec<u8>)>,
    /// Acknowledges the ingest call once durable.
    pub ticket: Ticket,
    /// Runs once durable.
    pub completion: Completion,
    /// Commit as soon as possible (safety actions) rather than at the batch interval.
    pub urgent: bool,
    /// The change as replicated to mirrors; its audit records are filled in at commit.
    pub mirror: Option<Box<MirrorUpdate>>,
    /// Index this write's command audit records by (asset, command id), for retries
    /// by idempotency key. Commands without a key are never looked up, and their
    /// random ids would scatter index pages over every commit.
    pub index_commands: bool,
}

impl JournalWrite {
    /// A write of a twin's snapshot alone.
    pub fn snapshot(twin: u32, path: AssetPath, snapshot: Vec<u8>) -> Self {
        Self {
            twin,
            records: Vec::new(),
            events: 0,
            audit: Vec::new(),
            snapshot: Some((path, snapshot)),
            ticket: Ticket::none(),
            completion: Completion::None,
            urgent: false,
            mirror: None,
            index_commands: false,
        }
    }
}

enum Message {
    Write(JournalWrite),
    Flush(oneshot::Sender<()>),
    Stop,
}

/// Counters the committer keeps.
#[derive(Debug, Default)]
pub struct JournalStats {
    /// Batches committed.
    pub batches: AtomicU64,
    /// Events committed.
    pub events: AtomicU64,
    /// Failed commits.
    pub failures: AtomicU64,
    /// Journal batches deleted after snapshots made them unnecessary.
    pub truncated: AtomicU64,
    /// Durable redb commits that let the write-ahead log start over.
    pub checkpoints: AtomicU64,
}

type SnapshotRequester = Arc<Mutex<Option<Box<dyn Fn(u32) + Send>>>>;

/// Handle to the node's journal: hand it writes, wait for durability, read it back.
#[derive(Clone)]
pub struct Journal {
    sender: mpsc::Sender<Message>,
    store: Store,
    stats: Arc<JournalStats>,
    thread: Arc<Mutex<Option<std::thread::JoinHandle<()>>>>,
    snapshot_requester: SnapshotRequester,
    outbox: tokio::sync::watch::Receiver<u64>,
}

impl Journal {
    /// Starts the committer over `store`.
    pub fn start(store: Store, settings: &JournalSettings) -> Result<Self, StoreError> {
        let (sender, receiver) = mpsc::channel();
        let stats = Arc::new(JournalStats::default());
        let next_batch = store.last_batch()?.map_or(1, |b| b + 1);
        let (next_audit, audit_indexed) = {
            let txn = store.db.begin_read().map_err(StoreError::from)?;
            let table = txn.open_table(META).map_err(StoreError::from)?;
            let counter = |name: &str| -> Result<Option<u64>, StoreError> {
                Ok(table
                    .get(name)
                    .map_err(StoreError::from)?
                    .map(|v| v.value()))
            };
            (
                counter("next_audit")?.unwrap_or(1),
                counter("audit_indexed")?.unwrap_or(0),
            )
        };
        let snapshot_requester = SnapshotRequester::default();
        let next_outbox = store.outbox_head()? + 1;
        let (outbox_head, outbox) = tokio::sync::watch::channel(next_outbox - 1);
        let wal = Wal::open(
            &store.wal_path,
            settings.wal_bytes.max(1 << 16),
            wal::applied(&store.db)? + 1,
        )?;
        let mut committer = Committer {
            wal,
            wal_bytes: settings.wal_bytes.max(1 << 16),
            checkpoint_every: settings.checkpoint_interval(),
            last_checkpoint: Instant::now(),
            unsaved: false,
            audit_indexed,
            poisoned: None,
            next_outbox,
            outbox_head,
            receiver,
            store: store.clone(),
            interval: settings.batch_interval(),
            max_events: settings.batch_max_events.max(1),
            next_batch,
            next_audit,
            dirty: HashMap::new(),
            requested: HashMap::new(),
            stats: stats.clone(),
            snapshot_requester: snapshot_requester.clone(),
        };
        let thread = std::thread::Builder::new()
            .name("doppel-journal".into())
            .spawn(move || committer.run())
            .map_err(StoreError::from)?;
        Ok(Self {
            sender,
            store,
            stats,
            thread: Arc::new(Mutex::new(Some(thread))),
            snapshot_requester,
            outbox,
        })
    }

    /// Hands a write to the committer. When the journal has stopped, the write fails
    /// at once: its ticket and reply report [`Error::ShuttingDown`].
    pub fn write(&self, write: JournalWrite) {
        if let Err(mpsc::SendError(Message::Write(write))) = self.sender.send(Message::Write(write))
        {
            write.ticket.complete(Err(Error::ShuttingDown));
            if let Completion::Reply(reply) = write.completion {
                reply(Err(Error::ShuttingDown));
            }
        }
    }

    /// Waits until every write handed over before this call has committed.
    pub async fn flush(&self) -> Result<(), Error> {
        let (done, wait) = oneshot::channel();
        self.sender
            .send(Message::Flush(done))
            .map_err(|_| Error::ShuttingDown)?;
        wait.await.map_err(|_| Error::ShuttingDown)
    }

    /// Blocking variant of [`Journal::flush`], for threads outside the async runtime.
    pub fn flush_blocking(&self) -> Result<(), Error> {
        let (done, wait) = oneshot::channel();
        self.sender
            .send(Message::Flush(done))
            .map_err(|_| Error::ShuttingDown)?;
        wait.blocking_recv().map_err(|_| Error::ShuttingDown)
    }

    /// The underlying store, for reads.
    pub fn store(&self) -> &Store {
        &self.store
    }

    /// Follows the sequence number of the newest outbox entry readable from the store:
    /// it moves once the entry's batch is applied to redb, just after it is acknowledged.
    pub fn outbox_head(&self) -> tokio::sync::watch::Receiver<u64> {
        self.outbox.clone()
    }

    /// Committer counters.
    pub fn stats(&self) -> &JournalStats {
        &self.stats
    }

    /// Registers who to ask for a snapshot of a twin whose unsnapshotted journal tail
    /// keeps old batches alive.
    pub fn on_snapshot_needed(&self, request: impl Fn(u32) + Send + 'static) {
        *self.snapshot_requester.lock() = Some(Box::new(request));
    }

    /// Stops the committer after it has committed everything handed over so far;
    /// later writes fail with [`Error::ShuttingDown`]. Blocks until the thread ends.
    pub fn stop(&self) {
        // The requester may hold handles to twins that hold this journal.
        self.snapshot_requester.lock().take();
        let _ = self.sender.send(Message::Stop);
        if let Some(thread) = self.thread.lock().take() {
            let _ = thread.join();
        }
    }
}

/// A twin whose first unsnapshotted batch lies further back than this many batches is
/// asked for a snapshot, so journal truncation can progress.
const SNAPSHOT_LAG_BATCHES: u64 = 512;
/// Truncate the journal every this many batches.
const TRUNCATE_EVERY: u64 = 64;
/// Index the audit log by asset once this many records are not indexed yet.
const INDEX_EVERY: u64 = 1024;

struct Committer {
    receiver: mpsc::Receiver<Message>,
    /// The write-ahead log every batch is acknowledged from.
    wal: Wal,
    /// The log's preallocated size; a checkpoint starts it over at half.
    wal_bytes: u64,
    checkpoint_every: Duration,
    last_checkpoint: Instant,
    /// Whether batches were applied to redb since the last checkpoint.
    unsaved: bool,
    /// The by-asset index holds every audit record up to this sequence.
    audit_indexed: u64,
    /// Why the store refuses writes, after a logged batch failed to apply.
    poisoned: Option<Arc<StoreError>>,
    store: Store,
    interval: Duration,
    max_events: usize,
    next_batch: u64,
    next_audit: u64,
    next_outbox: u64,
    outbox_head: tokio::sync::watch::Sender<u64>,
    /// Twin → first batch holding a record not covered by a snapshot.
    dirty: HashMap<u32, u64>,
    /// Twin → batch at which a snapshot was last requested.
    requested: HashMap<u32, u64>,
    stats: Arc<JournalStats>,
    snapshot_requester: SnapshotRequester,
}

#[derive(Default)]
struct Batch {
    writes: Vec<JournalWrite>,
    flushes: Vec<oneshot::Sender<()>>,
    events: usize,
    urgent: bool,
    stop: bool,
}

impl Committer {
    fn run(&mut self) {
        let mut stopping = false;
        while !stopping {
            let first = match self.receiver.recv_timeout(self.checkpoint_every) {
                Ok(first) => first,
                Err(mpsc::RecvTimeoutError::Timeout) => {
                    self.checkpoint_if_due();
                    continue;
                }
                Err(mpsc::RecvTimeoutError::Disconnected) => break,
            };
            let mut batch = Batch::default();
            let deadline = Instant::now() + self.interval;
            let mut open = Self::add(&mut batch, first);
            while open && batch.events < self.max_events {
                if batch.urgent {
                    // Commit now, together with whatever is already waiting: writes
                    // that arrive during this commit form the next batch.
                    match self.receiver.try_recv() {
                        Ok(message) => {
                            open = Self::add(&mut batch, message);
                            continue;
                        }
                        Err(_) => break,
                    }
                }
                let now = Instant::now();
                if now >= deadline {
                    break;
                }
                match self.receiver.recv_timeout(deadline - now) {
                    Ok(message) => open = Self::add(&mut batch, message),
                    Err(_) => break,
                }
            }
            stopping = batch.stop;
            self.commit(batch);
        }
        if self.unsaved
            && let Err(error) = self.checkpoint()
        {
            tracing::warn!(%error, "final journal checkpoint failed");
        }
    }

    /// Adds a message; false when the batch must close now (a flush or stop).
    fn add(batch: &mut Batch, message: Message) -> bool {
        match message {
            Message::Write(write) => {
                batch.events += write.events as usize;
                batch.urgent |= write.urgent;
                batch.writes.push(write);
                true
            }
            Message::Flush(done) => {
                batch.flushes.push(done);
                false
            }
            Message::Stop => {
                batch.stop = true;
                false
            }
        }
    }

    fn commit(&mut self, mut batch: Batch) {
        let needs_txn = batch.writes.iter().any(|w| {
            !w.records.is_empty()
                || !w.audit.is_empty()
                || w.snapshot.is_some()
                || w.mirror.is_some()
        });
        let mut audit_seqs: Vec<Vec<u64>> = Vec::with_capacity(batch.writes.len());
        let logged = if needs_txn {
            self.write_batch(&mut batch, &mut audit_seqs).map(Some)
        } else {
            audit_seqs.resize(batch.writes.len(), Vec::new());
            Ok(None)
        };
        let result = logged.as_ref().map(|_| ()).map_err(Clone::clone);
        match &result {
            Ok(()) => {
                self.stats
                    .batches
                    .fetch_add(u64::from(needs_txn), Ordering::Relaxed);
                self.stats
                    .events
                    .fetch_add(batch.events as u64, Ordering::Relaxed);
            }
            Err(error) => {
                self.stats.failures.fetch_add(1, Ordering::Relaxed);
                tracing::error!(%error, writes = batch.writes.len(), "journal commit failed");
            }
        }
        // The batch is durable in the log: answer first, then bring redb up to date
        // (reads that need this batch wait for that, see `Applied`).
        for (write, seqs) in batch.writes.into_iter().zip(audit_seqs) {
            let outcome = result.clone().map_err(Error::Journal);
            write.ticket.complete(outcome.clone());
            if let Completion::Reply(reply) = write.completion {
                reply(outcome.map(|()| seqs));
            }
        }
        if let Ok(Some(frame)) = &logged {
            self.apply_logged(frame);
        }
        for done in batch.flushes {
            let _ = done.send(());
        }
        if needs_txn && result.is_ok() {
            self.maintain();
        }
    }

    /// Encodes the batch as a frame and appends it to the log: durable on return.
    fn write_batch(
        &mut self,
        batch: &mut Batch,
        audit_seqs: &mut Vec<Vec<u64>>,
    ) -> Result<Frame, StoreError> {
        if let Some(reason) = &self.poisoned {
            return Err(StoreError::Poisoned(reason.clone()));
        }
        let batch_seq = self.next_batch;
        let mut next_audit = self.next_audit;
        let mut mirrored: Vec<MirrorUpdate> = Vec::new();
        let mut frame = Frame::default();
        let size: usize = batch.writes.iter().map(|w| w.records.len()).sum();
        if size > 0 {
            let mut blob = Vec::with_capacity(size);
            for write in &batch.writes {
                blob.extend_from_slice(&write.records);
            }
            frame.journal = Some((batch_seq, blob));
        }
        for write in &mut batch.writes {
            let mut seqs = Vec::with_capacity(write.audit.len());
            for record in &mut write.audit {
                record.seq = next_audit;
                let bytes = postcard::to_stdvec(&*record).map_err(StoreError::from)?;
                let asset = record.asset.as_str().to_string();
                if write.index_commands
                    && record.kind == AuditKind::Command
                    && record.command_id.0.len() <= MAX_INDEXED_ID
                {
                    frame
                        .commands
                        .push((asset.clone(), record.command_id.0.clone(), next_audit));
                }
                frame.audit.push((asset, next_audit, bytes));
                seqs.push(next_audit);
                next_audit += 1;
            }
            if let Some(mut update) = write.mirror.take() {
                update.audit = write.audit.clone();
                mirrored.push(*update);
            }
            audit_seqs.push(seqs);
            if let Some((path, bytes)) = &mut write.snapshot {
                frame
                    .snapshots
                    .push((path.as_str().to_string(), batch_seq, std::mem::take(bytes)));
            }
        }
        if next_audit != self.next_audit {
            frame.next_audit = Some(next_audit);
        }
        if !mirrored.is_empty() {
            let bytes = postcard::to_stdvec(&mirrored).map_err(StoreError::from)?;
            frame.outbox = Some((self.next_outbox, bytes));
        }
        let size = self.wal.encode(&mut frame)?;
        if !self.wal.fits(size) && self.wal.used() > 0 {
            self.checkpoint()?;
            self.wal.encode(&mut frame)?;
        }
        self.wal.append()?;
        // Durable from here on: whatever happens next, the batch is acknowledged.
        self.store.applied.logged(frame.id);
        self.next_batch += 1;
        self.next_audit = next_audit;
        if !mirrored.is_empty() {
            self.next_outbox += 1;
        }
        for write in &batch.writes {
            if write.snapshot.is_some() {
                self.dirty.remove(&write.twin);
                self.requested.remove(&write.twin);
            } else if !write.records.is_empty() {
                self.dirty.entry(write.twin).or_insert(batch_seq);
            }
        }
        Ok(frame)
    }

    /// Applies a logged frame to redb and tells reads and the replication link.
    fn apply_logged(&mut self, frame: &Frame) {
        if let Err(error) = self.apply(frame) {
            // redb and the log disagree now: refuse further writes rather than build on
            // a store that lacks this batch. The log replays it at the next open.
            tracing::error!(%error, "applying a logged journal batch to the store failed");
            self.poisoned = Some(Arc::new(error));
        }
        self.unsaved = true;
        self.store.applied.applied(frame.id);
        if let Some((seq, _)) = &frame.outbox {
            self.outbox_head.send_replace(*seq);
        }
    }

    /// Writes a logged frame into redb without flushing: visible to reads at once,
    /// durable in redb at the next checkpoint.
    fn apply(&self, frame: &Frame) -> Result<(), StoreError> {
        let mut txn = self.store.db.begin_write().map_err(StoreError::from)?;
        txn.set_durability(Durability::None)
            .map_err(StoreError::from)?;
        frame.apply(&txn)?;
        txn.commit().map_err(StoreError::from)
    }

    /// Makes everything applied so far durable in redb, so the log can start over.
    fn checkpoint(&mut self) -> Result<(), StoreError> {
        if self.poisoned.is_some() {
            return Ok(());
        }
        let txn = self.store.db.begin_write().map_err(StoreError::from)?;
        let indexed = index_audit(&txn)?;
        // A durable commit makes every non-durable commit before it durable as well.
        txn.commit().map_err(StoreError::from)?;
        self.audit_indexed = indexed;
        self.wal.restart();
        self.unsaved = false;
        self.last_checkpoint = Instant::now();
        self.stats.checkpoints.fetch_add(1, Ordering::Relaxed);
        Ok(())
    }

    /// Checkpoints when the interval has passed since the last one, or when the log is
    /// half full.
    fn checkpoint_if_due(&mut self) {
        if !self.unsaved {
            return;
        }
        let due = self.last_checkpoint.elapsed() >= self.checkpoint_every
            || self.wal.used() >= self.wal_bytes / 2;
        if due && let Err(error) = self.checkpoint() {
            tracing::warn!(%error, "journal checkpoint failed");
        }
    }

    /// Deletes journal batches every twin has snapshotted past, and asks twins that
    /// hold truncation back for a snapshot.
    fn maintain(&mut self) {
        self.checkpoint_if_due();
        let unindexed = self.next_audit.saturating_sub(self.audit_indexed + 1);
        if unindexed >= INDEX_EVERY
            && let Err(error) = self.index_audit()
        {
            tracing::warn!(%error, "indexing the audit log failed");
        }
        let current = self.next_batch;
        if !current.is_multiple_of(TRUNCATE_EVERY) {
            return;
        }
        let low = self.dirty.values().copied().min().unwrap_or(current);
        if low > 1 {
            match self.truncate_before(low) {
                Ok(count) => {
                    self.stats.truncated.fetch_add(count, Ordering::Relaxed);
                }
                Err(error) => tracing::warn!(%error, "journal truncation failed"),
            }
        }
        let requester = self.snapshot_requester.lock();
        if let Some(request) = requester.as_ref() {
            for (&twin, &first) in &self.dirty {
                let asked = self.requested.get(&twin).copied().unwrap_or(0);
                if current.saturating_sub(first) > SNAPSHOT_LAG_BATCHES
                    && current.saturating_sub(asked) > SNAPSHOT_LAG_BATCHES
                {
                    request(twin);
                    self.requested.insert(twin, current);
                }
            }
        }
    }

    /// Adds the audit records applied since the last run to the by-asset index, in one
    /// sorted run: each asset's index page is rewritten once per run, not once per
    /// batch. Durable at the next checkpoint.
    fn index_audit(&mut self) -> Result<(), StoreError> {
        if self.poisoned.is_some() {
            return Ok(());
        }
        let mut txn = self.store.db.begin_write().map_err(StoreError::from)?;
        txn.set_durability(Durability::None)
            .map_err(StoreError::from)?;
        let indexed = index_audit(&txn)?;
        txn.commit().map_err(StoreError::from)?;
        self.audit_indexed = indexed;
        Ok(())
    }

    fn truncate_before(&self, low: u64) -> Result<u64, StoreError> {
        let mut txn = self.store.db.begin_write().map_err(StoreError::from)?;
        // Durable at the next checkpoint; until then a crash only keeps old batches.
        txn.set_durability(Durability::None)
            .map_err(StoreError::from)?;
        let mut deleted = 0;
        {
            let mut journal = txn.open_table(JOURNAL).map_err(StoreError::from)?;
            journal
                .retain_in(..low, |_, _| {
                    deleted += 1;
                    false
                })
                .map_err(StoreError::from)?;
        }
        txn.commit().map_err(StoreError::from)?;
        Ok(deleted)
    }
}
