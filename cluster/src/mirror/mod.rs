//! The cloud side of replication: compact, read-only mirrors of the fleet's twins.
//!
//! A cloud node keeps one [`MirrorRow`] per replicated twin — the twin's [`TwinReport`]
//! as last replicated, not an actor — in memory and in its own redb file, together
//! with each edge node's acknowledged outbox sequence and the audit records the edges
//! replicated (commands, verdicts, safety actions).
//!
//! In memory a row is held compactly, about its encoded size rather than several
//! times that decoded, so that a million twins fit in a cloud node: the postcard
//! encoding of its [`TwinReport`] (the very bytes the file holds after the owner and
//! time), the report's version for the version guard, the owner interned (one
//! `Arc<str>` per edge node, shared by all its rows) and the time the row was
//! received. [`MirrorStore::get`] and [`MirrorStore::list`] decode on read, under the
//! table's read lock, so a list is still one consistent snapshot. A group commit
//! decodes a row only for an update that passes the version guard and is not a
//! baseline (a baseline replaces the row whole), and encodes each changed row once, for
//! the file and for memory.
//!
//! What a mirror guarantees:
//! - **Acknowledged means on disk.** The sequence acknowledged to an edge is committed
//!   (`Durability::Immediate`) in the same transaction as the rows and audit records of
//!   every entry at or below it.
//! - **Each entry once.** An entry at or below the edge's acknowledged sequence is
//!   skipped, so the replay after a reconnect applies nothing twice. Inside an entry,
//!   every update is version-guarded ([`MirrorUpdate::apply`]).
//! - **Replaying a compacted entry is harmless.** An edge may compact its outbox while a
//!   batch is in flight, so a merged entry can repeat changes the mirror already holds:
//!   latest values overwrite, audit records are keyed by (asset, owner, seq) and a
//!   latched trip is kept once, so the row ends the same.
//! - **Group commit.** One writer thread applies every batch that arrived, from every
//!   edge, while the previous commit ran, in one transaction; a batch that arrives
//!   alone waits up to 5 ms for company.
//!
//! The mirror file holds three tables: `mirror_rows` (asset → postcard `(owner,
//! received_at, TwinReport)`), `mirror_links` (edge node id → acknowledged sequence)
//! and `mirror_audit` ((asset, owner, seq) → postcard [`AuditRecord`]).

mod serve;
#[cfg(test)]
pub(crate) mod testing;
#[cfg(test)]
mod tests;

use std::collections::{BTreeMap, BinaryHeap, HashMap, HashSet, VecDeque};
use std::ops::Bound;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use doppel_runtime::journal::StoreError;
use doppel_runtime::twin::{MirrorUpdate, Trip, TwinReport};
use doppel_runtime::{AuditKind, AuditRecord, Timestamp};
use parking_lot::{Mutex, MutexGuard, RwLock};
use redb::{Database, Durability, ReadableDatabase, ReadableTable, TableDefinition};
use serde::Deserialize;
use tokio::sync::{broadcast, mpsc, oneshot};

use crate::config::prefix_covers;
use crate::error::ClusterError;

pub use serve::ReplicationStream;

/// Mirror rows: asset path → postcard `(owner, received_at, TwinReport)`.
const ROWS: TableDefinition<&str, &[u8]> = TableDefinition::new("mirror_rows");
/// Replication links: edge node id → last outbox sequence held durably.
const LINKS: TableDefinition<&str, u64> = TableDefinition::new("mirror_links");
/// Replicated audit records: (asset path, owner node, audit seq) → postcard record.
const AUDIT: TableDefinition<(&str, &str, u64), &[u8]> = TableDefinition::new("mirror_audit");

/// Capacity of the change broadcast; slower watchers lag.
const CHANGE_CAPACITY: usize = 16_384;
/// Batches waiting for the writer, over all streams; a full queue slows the streams.
const JOB_QUEUE: usize = 256;
/// Most batches one transaction takes.
const GROUP_JOBS: usize = 128;
/// Most encoded bytes one transaction takes (a single batch may exceed it).
const GROUP_BYTES: usize = 16 << 20;
/// When a batch finds no other waiting, how long the writer waits for more before it
/// commits: a trickle of small batches (one per command) then costs one durable commit
/// per window rather than one each, and leaves the disk to the node's own journal.
const GROUP_WINDOW: Duration = Duration::from_millis(5);
/// Head sequences remembered per link to date how far behind it is.
const BEHIND_MARKS: usize = 64;
/// Memory redb may use to cache the mirror file's pages (its default is 1 GiB). Rows
/// are read from memory, never from the file, after the open, so a small cache serves
/// the writes and the audit reads; a large one would mostly hold row pages again.
const CACHE_BYTES: usize = 128 << 20;

/// A mirror row: the twin's state as last replicated, and where it came from.
#[derive(Debug, Clone)]
pub struct MirrorRow {
    /// The twin's state as the mirror knows it.
    pub report: TwinReport,
    /// The edge node whose update last changed the row.
    pub owner: String,
    /// When this node committed that update.
    pub received_at: Timestamp,
}

/// A mirrored change, for watchers.
#[derive(Debug, Clone)]
pub struct MirrorChange {
    /// The edge node it came from.
    pub owner: String,
    /// The update, as applied to the row.
    pub update: Arc<MirrorUpdate>,
}

/// Per edge node: replication progress.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LinkState {
    /// The edge node.
    pub node_id: String,
    /// The last outbox sequence this node holds durably.
    pub acked: u64,
    /// The edge's newest sequence, as it last said.
    pub head: u64,
    /// True while a replication stream from the edge is open.
    pub connected: bool,
    /// When the last batch from the edge was committed.
    pub last_received: Option<Timestamp>,
    /// Since when the mirror has been behind: the moment it first learnt of an entry it
    /// still does not hold, or, while disconnected, the disconnection (a disconnected
    /// edge may have changed since). `None` when caught up.
    pub behind_since: Option<Timestamp>,
}

/// Counters of a mirror store since it opened.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct MirrorStats {
    /// Updates that changed a row.
    pub applied: u64,
    /// Updates of new entries the version guard refused: the row already held them,
    /// or there is no row yet and the update is not a baseline.
    pub stale: u64,
    /// Updates of entries at or below their link's acknowledged sequence (replays),
    /// skipped.
    pub duplicates: u64,
    /// Batches committed.
    pub batches: u64,
    /// Write transactions committed.
    pub commits: u64,
    /// Audit records written (a replayed record overwrites itself).
    pub audit_records: u64,
}

/// A position in the mirror's audit log, which is ordered by (time, edge node,
/// sequence): pass the cursor of the last record of a page to read the next one.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct AuditCursor {
    /// The record's time.
    pub at: Timestamp,
    /// The edge node that wrote it.
    pub owner: String,
    /// Its sequence number on that node.
    pub seq: u64,
}

impl AuditCursor {
    /// The cursor of a record from `owner`.
    pub fn of(owner: &str, record: &AuditRecord) -> Self {
        Self {
            at: record.at,
            owner: owner.to_string(),
            seq: record.seq,
        }
    }
}

/// The cloud node's read-only mirrors of the fleet: a compact state table (one
/// [`TwinReport`] per twin, held encoded, not one actor per twin), kept in memory and
/// persisted in the cloud node's own redb file, with each edge node's acknowledged
/// sequence.
///
/// Cheap to clone. The file closes when the last clone (and every replication stream
/// it serves) is gone.
#[derive(Clone)]
pub struct MirrorStore {
    inner: Arc<Inner>,
}

/// Owns the writer thread: dropping the last handle closes its queue and joins it.
struct Inner {
    shared: Arc<Shared>,
    jobs: Option<mpsc::Sender<Job>>,
    writer: Option<std::thread::JoinHandle<()>>,
}

impl Drop for Inner {
    fn drop(&mut self) {
        self.jobs = None;
        if let Some(writer) = self.writer.take() {
            // The writer finishes the group it holds (at most one commit) and exits.
            let _ = writer.join();
        }
    }
}

struct Shared {
    db: Database,
    rows: RwLock<Rows>,
    /// The owners of the rows, one shared copy each. Only grows (edge nodes are few).
    owners: Mutex<Owners>,
    links: Mutex<BTreeMap<String, Link>>,
    changes: broadcast::Sender<MirrorChange>,
    counters: Counters,
    /// Serializes everything that writes: group commits, `apply_batch`, link resets.
    write_lock: Mutex<()>,
    next_stream: AtomicU64,
}

#[derive(Default)]
struct Counters {
    applied: AtomicU64,
    stale: AtomicU64,
    duplicates: AtomicU64,
    batches: AtomicU64,
    commits: AtomicU64,
    audit_records: AtomicU64,
}

/// A link as the store tracks it.
struct Link {
    acked: u64,
    head: u64,
    /// The replication stream currently serving the link; batches of any other are
    /// refused.
    stream: Option<u64>,
    last_received: Option<Timestamp>,
    disconnected_at: Option<Timestamp>,
    /// Head sequences above `acked`, each with when it was first seen, oldest first.
    behind: VecDeque<(u64, Timestamp)>,
}

impl Link {
    fn new(acked: u64, disconnected_at: Option<Timestamp>) -> Self {
        Self {
            acked,
            head: acked,
            stream: None,
            last_received: None,
            disconnected_at,
            behind: VecDeque::new(),
        }
    }

    fn state(&self, node_id: &str) -> LinkState {
        let pending = self.behind.front().map(|&(_, since)| since);
        let offline = if self.stream.is_some() {
            None
        } else {
            self.disconnected_at
        };
        let behind_since = match (pending, offline) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        LinkState {
            node_id: node_id.to_string(),
            acked: self.acked,
            head: self.head,
            connected: self.stream.is_some(),
            last_received: self.last_received,
            behind_since,
        }
    }

    /// Records the edge's head, first seen at `since`.
    fn note_head(&mut self, head: u64, since: Timestamp) {
        self.head = self.head.max(head);
        if head <= self.acked || self.behind.back().is_some_and(|&(seen, _)| seen >= head) {
            return;
        }
        if self.behind.len() >= BEHIND_MARKS {
            // Keep the older time for the newer head: the lag is overstated, never hidden.
            if let Some(back) = self.behind.back_mut() {
                back.0 = head;
            }
        } else {
            self.behind.push_back((head, since));
        }
    }

    /// Forgets the heads the acknowledged sequence has reached.
    fn settle(&mut self) {
        while self
            .behind
            .front()
            .is_some_and(|&(head, _)| head <= self.acked)
        {
            self.behind.pop_front();
        }
    }
}

/// One batch from a replication stream, waiting for the writer.
struct Job {
    node: String,
    stream: u64,
    entries: Vec<(u64, Vec<u8>)>,
    head: u64,
    /// The acknowledged sequence once the batch is durable, or why it was refused.
    reply: oneshot::Sender<Result<u64, tonic::Status>>,
}

impl Job {
    fn bytes(&self) -> usize {
        self.entries.iter().map(|(_, bytes)| bytes.len()).sum()
    }
}

/// A batch's entries, decoded: (sequence, updates).
type Entries = Vec<(u64, Vec<MirrorUpdate>)>;

/// A key of the audit table: (asset path, owner node, audit seq).
type AuditKey<'a> = (&'a str, &'a str, u64);

/// One batch, decoded, for [`Shared::commit_locked`].
struct Batch<'a> {
    node: &'a str,
    entries: &'a [(u64, Vec<MirrorUpdate>)],
    head: u64,
}

/// What committing one batch did.
#[derive(Debug, Clone, Copy, Default)]
struct BatchOutcome {
    acked: u64,
    applied: usize,
    skipped: usize,
}

/// The mirror rows in memory, by asset path.
type Rows = BTreeMap<Box<str>, StoredRow>;

/// Edge node ids, one shared copy each, for the rows' owners.
type Owners = HashSet<Arc<str>>;

/// A row as memory holds it: the report postcard-encoded (decoded on read), with what
/// the hot paths need without decoding it.
struct StoredRow {
    /// The postcard encoding of the row's [`TwinReport`].
    report: Box<[u8]>,
    /// The report's version, for the version guard.
    version: u64,
    /// The edge node whose update last changed the row, interned.
    owner: Arc<str>,
    /// When this node committed that update.
    received_at: Timestamp,
}

impl StoredRow {
    /// The row's report, decoded; a row that does not decode (never one this store
    /// encoded) is logged and taken as absent.
    fn decode_report(&self, asset: &str) -> Option<TwinReport> {
        match postcard::from_bytes(&self.report) {
            Ok(report) => Some(report),
            Err(error) => {
                tracing::error!(
                    asset,
                    %error,
                    "a mirror row held in memory does not decode; it is skipped until its owner sends the twin again"
                );
                None
            }
        }
    }

    /// The row as callers see it.
    fn decode(&self, asset: &str) -> Option<MirrorRow> {
        Some(MirrorRow {
            report: self.decode_report(asset)?,
            owner: self.owner.to_string(),
            received_at: self.received_at,
        })
    }
}

/// A row as a link reset writes it: asset, file value, the report's encoding.
type ResetRow = (Box<str>, Vec<u8>, Box<[u8]>);

/// A row while a group is applied.
struct WorkRow<'a> {
    state: WorkState,
    /// The node whose update changed it in this group.
    owner: Option<&'a str>,
}

/// What a group holds of a row.
#[allow(
    clippy::large_enum_variant,
    reason = "one per row a group changes, for the group's length"
)]
enum WorkState {
    /// The row in memory, of this version, not decoded: no update of the group has
    /// passed its version guard yet.
    Held(u64),
    /// The row as the group leaves it so far (`None`: there is no row).
    Open(Option<TwinReport>),
}

impl WorkRow<'_> {
    /// Applies `update` to the row ([`MirrorUpdate::apply`]), decoding the row in
    /// memory only when the update passes the version guard and is not a baseline (a
    /// baseline replaces the row whole). Returns whether the row changed.
    fn apply(&mut self, update: &MirrorUpdate, rows: &Rows) -> bool {
        if let WorkState::Held(version) = self.state {
            // The guard of `MirrorUpdate::apply`, on the version memory keeps.
            if version >= update.version {
                return false;
            }
            let held = if update.full.is_some() {
                None
            } else {
                let asset = update.asset.as_str();
                rows.get(asset).and_then(|row| row.decode_report(asset))
            };
            self.state = WorkState::Open(held);
        }
        let WorkState::Open(report) = &mut self.state else {
            return false;
        };
        if !update.apply(report) {
            return false;
        }
        if let Some(report) = report {
            keep_trips_once(&mut report.trips);
        }
        true
    }
}

/// A changed row, encoded once: for the file and for memory.
struct EncodedRow<'a> {
    asset: &'a str,
    owner: &'a str,
    /// The `mirror_rows` value: postcard `(owner, received_at, TwinReport)`.
    bytes: Vec<u8>,
    /// The report's own encoding, as memory holds it.
    report: Box<[u8]>,
    version: u64,
}

/// The leading fields of an encoded [`AuditRecord`], read without decoding the rest.
#[derive(Deserialize)]
struct AuditHead<'a> {
    seq: u64,
    at: Timestamp,
    _asset: &'a str,
    kind: AuditKind,
}

fn store_error(error: impl Into<StoreError>) -> ClusterError {
    ClusterError::Store(error.into())
}

impl MirrorStore {
    /// Opens (or creates) the mirror file at `path` and loads its rows and link
    /// positions. Every link starts disconnected.
    pub fn open(path: &Path) -> Result<MirrorStore, ClusterError> {
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent).map_err(|source| ClusterError::ReadFile {
                path: parent.to_path_buf(),
                source,
            })?;
        }
        let db = Database::builder()
            .set_cache_size(CACHE_BYTES)
            .create(path)
            .map_err(store_error)?;
        let txn = db.begin_write().map_err(store_error)?;
        {
            txn.open_table(ROWS).map_err(store_error)?;
            txn.open_table(LINKS).map_err(store_error)?;
            txn.open_table(AUDIT).map_err(store_error)?;
        }
        txn.commit().map_err(store_error)?;

        let opened_at = Timestamp::now();
        // In the table's order, which is the map's: collected, they build full nodes.
        let mut loaded: Vec<(Box<str>, StoredRow)> = Vec::new();
        let mut owners = Owners::new();
        let mut links = BTreeMap::new();
        {
            let txn = db.begin_read().map_err(store_error)?;
            let table = txn.open_table(ROWS).map_err(store_error)?;
            for entry in table.iter().map_err(store_error)? {
                let (asset, bytes) = entry.map_err(store_error)?;
                let (owner, received_at, version, report) = match load_row(bytes.value()) {
                    Ok(row) => row,
                    Err(error) => {
                        // A row of an earlier layout: the owner's next baseline (every
                        // replicating edge sends one when it starts) brings it back.
                        tracing::warn!(asset = asset.value(), %error, "a mirror row of an earlier layout is dropped until its owner sends the twin again");
                        continue;
                    }
                };
                loaded.push((
                    asset.value().into(),
                    StoredRow {
                        report: report.into(),
                        version,
                        owner: intern(&mut owners, owner),
                        received_at,
                    },
                ));
            }
            let table = txn.open_table(LINKS).map_err(store_error)?;
            for entry in table.iter().map_err(store_error)? {
                let (node, acked) = entry.map_err(store_error)?;
                links.insert(
                    node.value().to_string(),
                    Link::new(acked.value(), Some(opened_at)),
                );
            }
        }
        let rows: Rows = loaded.into_iter().collect();
        let (changes, _) = broadcast::channel(CHANGE_CAPACITY);
        let shared = Arc::new(Shared {
            db,
            rows: RwLock::new(rows),
            owners: Mutex::new(owners),
            links: Mutex::new(links),
            changes,
            counters: Counters::default(),
            write_lock: Mutex::new(()),
            next_stream: AtomicU64::new(1),
        });
        let (jobs, queue) = mpsc::channel(JOB_QUEUE);
        let writer = std::thread::Builder::new()
            .name("doppel-mirror-writer".into())
            .spawn({
                let shared = shared.clone();
                move || shared.write_loop(queue)
            })
            .map_err(|source| ClusterError::Thread {
                name: "doppel-mirror-writer",
                source,
            })?;
        Ok(MirrorStore {
            inner: Arc::new(Inner {
                shared,
                jobs: Some(jobs),
                writer: Some(writer),
            }),
        })
    }

    fn shared(&self) -> &Shared {
        &self.inner.shared
    }

    /// The mirror row of a twin.
    pub fn get(&self, asset: &str) -> Option<MirrorRow> {
        self.shared().rows.read().get(asset)?.decode(asset)
    }

    /// The edge node that owns a mirrored twin, without decoding its row.
    pub fn owner(&self, asset: &str) -> Option<String> {
        Some(self.shared().rows.read().get(asset)?.owner.to_string())
    }

    /// The version of each row at or below `prefix`, without decoding the rows.
    pub fn versions(&self, prefix: &str) -> Vec<(String, u64)> {
        self.shared()
            .rows
            .read()
            .range::<str, _>((Bound::Included(prefix), Bound::Unbounded))
            .take_while(|(asset, _)| asset.starts_with(prefix))
            .filter(|(asset, _)| prefix_covers(prefix, asset))
            .map(|(asset, row)| (asset.to_string(), row.version))
            .collect()
    }

    /// The rows at or below `prefix` (segment-wise; the empty prefix lists every row),
    /// sorted by asset path.
    pub fn list(&self, prefix: &str) -> Vec<MirrorRow> {
        self.shared()
            .rows
            .read()
            .range::<str, _>((Bound::Included(prefix), Bound::Unbounded))
            .take_while(|(asset, _)| asset.starts_with(prefix))
            .filter(|(asset, _)| prefix_covers(prefix, asset))
            .filter_map(|(asset, row)| row.decode(asset))
            .collect()
    }

    /// Number of rows.
    pub fn len(&self) -> usize {
        self.shared().rows.read().len()
    }

    /// True when the mirror holds no row.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Every edge node that replicated here, by node id.
    pub fn links(&self) -> Vec<LinkState> {
        self.shared()
            .links
            .lock()
            .iter()
            .map(|(node, link)| link.state(node))
            .collect()
    }

    /// One edge node's replication progress.
    pub fn link(&self, node_id: &str) -> Option<LinkState> {
        self.shared()
            .links
            .lock()
            .get(node_id)
            .map(|link| link.state(node_id))
    }

    /// The lag of a row's owner link: zero when caught up (or for a node that never
    /// replicated here), else now - `behind_since`.
    pub fn lag(&self, owner: &str) -> Duration {
        let Some(since) = self.link(owner).and_then(|link| link.behind_since) else {
            return Duration::ZERO;
        };
        let micros = Timestamp::now()
            .as_micros()
            .saturating_sub(since.as_micros());
        Duration::from_micros(u64::try_from(micros).unwrap_or(0))
    }

    /// Subscribes to mirrored changes, each sent once it is durable. A watcher that
    /// falls more than the buffer behind gets `Lagged` and skips ahead.
    pub fn subscribe(&self) -> broadcast::Receiver<MirrorChange> {
        self.shared().changes.subscribe()
    }

    /// Counters since the store opened.
    pub fn stats(&self) -> MirrorStats {
        let c = &self.shared().counters;
        MirrorStats {
            applied: c.applied.load(Ordering::Relaxed),
            stale: c.stale.load(Ordering::Relaxed),
            duplicates: c.duplicates.load(Ordering::Relaxed),
            batches: c.batches.load(Ordering::Relaxed),
            commits: c.commits.load(Ordering::Relaxed),
            audit_records: c.audit_records.load(Ordering::Relaxed),
        }
    }

    /// Audit records replicated from the edges (commands, verdicts, safety actions) at
    /// or below `prefix` with a time in `[from, to]`, oldest first, at most `limit`,
    /// each with the edge node it came from. Reads the store: call it off the async
    /// workers for large prefixes.
    pub fn audit(
        &self,
        prefix: &str,
        from: Timestamp,
        to: Timestamp,
        limit: usize,
    ) -> Vec<(String, AuditRecord)> {
        self.audit_after(prefix, (from, to), &[], None, limit)
    }

    /// Like [`MirrorStore::audit`], of the given `kinds` (every kind when empty), after
    /// a cursor: the records that follow `after` in (time, edge node, sequence) order.
    /// Pass the cursor of the last record of a page
    /// ([`AuditCursor::of`]) to read the next page.
    pub fn audit_after(
        &self,
        prefix: &str,
        (from, to): (Timestamp, Timestamp),
        kinds: &[AuditKind],
        after: Option<&AuditCursor>,
        limit: usize,
    ) -> Vec<(String, AuditRecord)> {
        if limit == 0 {
            return Vec::new();
        }
        match self
            .shared()
            .audit_page(prefix, (from, to), kinds, after, limit)
        {
            Ok(records) => records,
            Err(error) => {
                tracing::warn!(%error, prefix, "cannot read the mirror's audit log");
                Vec::new()
            }
        }
    }

    /// Applies one batch from edge `node_id` durably: entries with seq <= the link's
    /// acknowledged sequence are skipped (de-duplication); the rest are applied to the
    /// rows ([`MirrorUpdate::apply`]) and, in one write transaction with
    /// `Durability::Immediate`, the changed rows, the audit records and the new
    /// acknowledged sequence are written; only then is it returned. `head` is the
    /// edge's newest sequence, for lag. Returns (acked, updates applied, updates
    /// skipped as duplicates). Blocks on the disk: call it off the async workers.
    pub fn apply_batch(
        &self,
        node_id: &str,
        entries: &[(u64, Vec<MirrorUpdate>)],
        head: u64,
    ) -> Result<(u64, usize, usize), ClusterError> {
        let shared = self.shared();
        let guard = shared.write_lock.lock();
        let outcomes = shared.commit_locked(
            &guard,
            &[Batch {
                node: node_id,
                entries,
                head,
            }],
        )?;
        let outcome = outcomes.first().copied().unwrap_or_default();
        Ok((outcome.acked, outcome.applied, outcome.skipped))
    }

    /// Queues a batch for the writer; fails once the store is closing.
    async fn submit(&self, job: Job) -> Result<(), ()> {
        match &self.inner.jobs {
            Some(jobs) => jobs.send(job).await.map_err(|_| ()),
            None => Err(()),
        }
    }
}

impl Shared {
    /// The writer thread: takes every batch that queued up while it committed and
    /// commits them together.
    fn write_loop(&self, mut queue: mpsc::Receiver<Job>) {
        while let Some(first) = queue.blocking_recv() {
            if queue.is_empty() {
                std::thread::sleep(GROUP_WINDOW);
            }
            let mut bytes = first.bytes();
            let mut group = vec![first];
            while group.len() < GROUP_JOBS && bytes < GROUP_BYTES {
                match queue.try_recv() {
                    Ok(job) => {
                        bytes += job.bytes();
                        group.push(job);
                    }
                    Err(_) => break,
                }
            }
            self.write_group(group);
        }
    }

    fn write_group(&self, group: Vec<Job>) {
        // Held from the stream check to the commit, so a link reset (which also takes
        // it) never interleaves with a group of the stream it replaces.
        let guard = self.write_lock.lock();
        let mut accepted: Vec<(Job, Entries)> = Vec::with_capacity(group.len());
        for job in group {
            if !self.is_current(&job.node, job.stream) {
                let _ = job.reply.send(Err(tonic::Status::aborted(
                    "this replication stream was closed or replaced by a newer one; reconnect",
                )));
                continue;
            }
            match decode_entries(&job.entries) {
                Ok(entries) => accepted.push((job, entries)),
                Err(message) => {
                    // Later batches of the stream must not apply past the refused one.
                    self.close_stream(&job.node, job.stream);
                    tracing::warn!(node = %job.node, %message, "refused a replication batch");
                    let _ = job
                        .reply
                        .send(Err(tonic::Status::invalid_argument(message)));
                }
            }
        }
        if accepted.is_empty() {
            return;
        }
        let batches: Vec<Batch<'_>> = accepted
            .iter()
            .map(|(job, entries)| Batch {
                node: &job.node,
                entries,
                head: job.head,
            })
            .collect();
        let result = self.commit_locked(&guard, &batches);
        drop(batches);
        if result.is_err() {
            // Batches queued behind the failed ones must not apply past the gap: the
            // edges reconnect and resend from what is durable.
            for (job, _) in &accepted {
                self.close_stream(&job.node, job.stream);
            }
        }
        drop(guard);
        match result {
            Ok(outcomes) => {
                for ((job, _), outcome) in accepted.into_iter().zip(outcomes) {
                    let _ = job.reply.send(Ok(outcome.acked));
                }
            }
            Err(error) => {
                tracing::error!(%error, "a mirror commit failed; the edges will resend");
                for (job, _) in accepted {
                    let _ = job.reply.send(Err(tonic::Status::unavailable(format!(
                        "the mirror store failed: {error}"
                    ))));
                }
            }
        }
    }

    fn is_current(&self, node: &str, stream: u64) -> bool {
        self.links
            .lock()
            .get(node)
            .is_some_and(|link| link.stream == Some(stream))
    }

    /// Applies batches in order and commits them in one transaction; memory changes
    /// only once the commit succeeded. The caller holds the write lock.
    fn commit_locked(
        &self,
        _writing: &MutexGuard<'_, ()>,
        batches: &[Batch<'_>],
    ) -> Result<Vec<BatchOutcome>, ClusterError> {
        let now = Timestamp::now();
        let watched = self.changes.receiver_count() > 0;
        // Node → (acknowledged before, acknowledged after this group).
        let mut acked: HashMap<&str, (u64, u64)> = HashMap::new();
        {
            let links = self.links.lock();
            for batch in batches {
                acked.entry(batch.node).or_insert_with(|| {
                    let seq = links.get(batch.node).map_or(0, |link| link.acked);
                    (seq, seq)
                });
            }
        }
        let mut work: HashMap<&str, WorkRow<'_>> = HashMap::new();
        let mut audit: Vec<(AuditKey<'_>, Vec<u8>)> = Vec::new();
        let mut changes: Vec<MirrorChange> = Vec::new();
        let mut outcomes = Vec::with_capacity(batches.len());
        let (mut applied, mut stale, mut duplicates) = (0u64, 0u64, 0u64);
        {
            let rows = self.rows.read();
            for batch in batches {
                let link = acked.entry(batch.node).or_insert((0, 0));
                let mut outcome = BatchOutcome::default();
                for (seq, updates) in batch.entries {
                    if *seq <= link.1 {
                        outcome.skipped += updates.len();
                        continue;
                    }
                    link.1 = *seq;
                    for update in updates {
                        let row = work
                            .entry(update.asset.as_str())
                            .or_insert_with(|| WorkRow {
                                state: match rows.get(update.asset.as_str()) {
                                    Some(held) => WorkState::Held(held.version),
                                    None => WorkState::Open(None),
                                },
                                owner: None,
                            });
                        if row.apply(update, &rows) {
                            row.owner = Some(batch.node);
                            outcome.applied += 1;
                            if watched {
                                changes.push(MirrorChange {
                                    owner: batch.node.to_string(),
                                    update: Arc::new(update.clone()),
                                });
                            }
                        } else {
                            stale += 1;
                        }
                        for record in &update.audit {
                            let bytes = postcard::to_stdvec(record).map_err(store_error)?;
                            audit.push(((record.asset.as_str(), batch.node, record.seq), bytes));
                        }
                    }
                }
                outcome.acked = link.1;
                applied += outcome.applied as u64;
                duplicates += outcome.skipped as u64;
                outcomes.push(outcome);
            }
        }
        // Each changed row, encoded once; the decoded rows go before the commit.
        let mut encoded: Vec<EncodedRow<'_>> = Vec::with_capacity(work.len());
        for (asset, row) in work {
            if let (WorkState::Open(Some(report)), Some(owner)) = (&row.state, row.owner) {
                let (bytes, report_bytes) = encode_row(owner, now, report)?;
                encoded.push(EncodedRow {
                    asset,
                    owner,
                    bytes,
                    report: report_bytes,
                    version: report.version,
                });
            }
        }
        let advanced: Vec<(&str, u64)> = acked
            .iter()
            .filter(|(_, (before, after))| after > before)
            .map(|(node, (_, after))| (*node, *after))
            .collect();
        if !encoded.is_empty() || !audit.is_empty() || !advanced.is_empty() {
            let mut txn = self.db.begin_write().map_err(store_error)?;
            txn.set_durability(Durability::Immediate)
                .map_err(store_error)?;
            {
                let mut table = txn.open_table(ROWS).map_err(store_error)?;
                for row in &encoded {
                    table
                        .insert(row.asset, row.bytes.as_slice())
                        .map_err(store_error)?;
                }
                let mut table = txn.open_table(AUDIT).map_err(store_error)?;
                for (key, bytes) in &audit {
                    table.insert(*key, bytes.as_slice()).map_err(store_error)?;
                }
                let mut table = txn.open_table(LINKS).map_err(store_error)?;
                for (node, seq) in &advanced {
                    table.insert(*node, *seq).map_err(store_error)?;
                }
            }
            txn.commit().map_err(store_error)?;
            self.counters.commits.fetch_add(1, Ordering::Relaxed);
        }

        let fresh: Vec<(&str, StoredRow)> = {
            let mut owners = self.owners.lock();
            encoded
                .into_iter()
                .map(|row| {
                    let stored = StoredRow {
                        report: row.report,
                        version: row.version,
                        owner: intern(&mut owners, row.owner),
                        received_at: now,
                    };
                    (row.asset, stored)
                })
                .collect()
        };
        {
            let mut rows = self.rows.write();
            for (asset, row) in fresh {
                if let Some(slot) = rows.get_mut(asset) {
                    *slot = row;
                } else {
                    rows.insert(asset.into(), row);
                }
            }
        }
        {
            let mut links = self.links.lock();
            for batch in batches {
                let link = links
                    .entry(batch.node.to_string())
                    .or_insert_with(|| Link::new(0, None));
                link.acked = link
                    .acked
                    .max(acked.get(batch.node).map_or(0, |&(_, after)| after));
                link.last_received = Some(now);
                link.note_head(batch.head, now);
                link.settle();
            }
        }
        let counters = &self.counters;
        counters.applied.fetch_add(applied, Ordering::Relaxed);
        counters.stale.fetch_add(stale, Ordering::Relaxed);
        counters.duplicates.fetch_add(duplicates, Ordering::Relaxed);
        counters
            .batches
            .fetch_add(batches.len() as u64, Ordering::Relaxed);
        counters
            .audit_records
            .fetch_add(audit.len() as u64, Ordering::Relaxed);
        for change in changes {
            let _ = self.changes.send(change);
        }
        Ok(outcomes)
    }

    /// Registers a replication stream from `node` whose edge is at `head`; it replaces
    /// any earlier stream of that node. Returns the stream's id and the sequence the
    /// edge resumes after.
    fn open_stream(&self, node: &str, head: u64) -> Result<(u64, u64), ClusterError> {
        let stream = self.next_stream.fetch_add(1, Ordering::Relaxed);
        let acked = {
            let mut links = self.links.lock();
            let link = links
                .entry(node.to_string())
                .or_insert_with(|| Link::new(0, None));
            // From here on, batches of an older stream are refused.
            link.stream = Some(stream);
            link.acked
        };
        if head < acked {
            // An edge's sequence only grows, durably: one below what it had delivered
            // means it lost its store and started over.
            tracing::warn!(
                node,
                head,
                acked,
                "the edge node's outbox restarted below what the mirror holds; accepting its new sequence"
            );
            self.reset_link(node)?;
        }
        let now = Timestamp::now();
        let mut links = self.links.lock();
        let link = links
            .entry(node.to_string())
            .or_insert_with(|| Link::new(0, None));
        if link.stream != Some(stream) {
            return Err(ClusterError::StreamReplaced {
                node: node.to_string(),
            });
        }
        // What the edge gathered while away may date from the disconnection.
        let since = link.disconnected_at.take().unwrap_or(now);
        link.note_head(head, since);
        link.settle();
        Ok((stream, link.acked))
    }

    /// Ends a stream: its link is disconnected unless a newer stream replaced it.
    fn close_stream(&self, node: &str, stream: u64) {
        if let Some(link) = self.links.lock().get_mut(node)
            && link.stream == Some(stream)
        {
            link.stream = None;
            link.disconnected_at = Some(Timestamp::now());
        }
    }

    /// Starts a link over at sequence 0, and lets the edge's new versions through the
    /// version guard of the rows it owns (they keep their content until overwritten).
    fn reset_link(&self, node: &str) -> Result<(), ClusterError> {
        let _writing = self.write_lock.lock();
        let now = Timestamp::now();
        // The node's rows at version 0: (asset, file value, report's encoding).
        let mut owned: Vec<ResetRow> = Vec::new();
        {
            // Only writers change the rows, and this one holds the write lock.
            let rows = self.rows.read();
            for (asset, row) in rows.iter().filter(|(_, row)| &*row.owner == node) {
                let Some(mut report) = row.decode_report(asset) else {
                    continue;
                };
                report.version = 0;
                let (bytes, report_bytes) = encode_row(node, now, &report)?;
                owned.push((asset.clone(), bytes, report_bytes));
            }
        }
        let txn = self.db.begin_write().map_err(store_error)?;
        {
            let mut table = txn.open_table(ROWS).map_err(store_error)?;
            for (asset, bytes, _) in &owned {
                table
                    .insert(&**asset, bytes.as_slice())
                    .map_err(store_error)?;
            }
            let mut table = txn.open_table(LINKS).map_err(store_error)?;
            table.insert(node, 0).map_err(store_error)?;
        }
        txn.commit().map_err(store_error)?;
        {
            let mut rows = self.rows.write();
            for (asset, _, report) in owned {
                if let Some(row) = rows.get_mut(&*asset) {
                    row.report = report;
                    row.version = 0;
                    row.received_at = now;
                }
            }
        }
        if let Some(link) = self.links.lock().get_mut(node) {
            link.acked = 0;
            link.head = 0;
            link.behind.clear();
        }
        Ok(())
    }

    fn audit_page(
        &self,
        prefix: &str,
        (from, to): (Timestamp, Timestamp),
        kinds: &[AuditKind],
        after: Option<&AuditCursor>,
        limit: usize,
    ) -> Result<Vec<(String, AuditRecord)>, ClusterError> {
        let txn = self.db.begin_read().map_err(store_error)?;
        let table = txn.open_table(AUDIT).map_err(store_error)?;
        // The `limit` earliest matching records, kept in a max-heap.
        let mut earliest: BinaryHeap<(AuditCursor, Vec<u8>)> = BinaryHeap::new();
        for entry in table.range((prefix, "", 0)..).map_err(store_error)? {
            let (key, value) = entry.map_err(store_error)?;
            let (asset, owner, seq) = key.value();
            if !asset.starts_with(prefix) {
                break;
            }
            if !prefix_covers(prefix, asset) {
                continue;
            }
            let (head, _): (AuditHead, _) =
                postcard::take_from_bytes(value.value()).map_err(store_error)?;
            debug_assert_eq!(head.seq, seq);
            if head.at < from || head.at > to || !(kinds.is_empty() || kinds.contains(&head.kind)) {
                continue;
            }
            let cursor = AuditCursor {
                at: head.at,
                owner: owner.to_string(),
                seq,
            };
            if after.is_some_and(|after| cursor <= *after) {
                continue;
            }
            if earliest.len() >= limit {
                if earliest.peek().is_some_and(|(latest, _)| cursor >= *latest) {
                    continue;
                }
                earliest.pop();
            }
            earliest.push((cursor, value.value().to_vec()));
        }
        earliest
            .into_sorted_vec()
            .into_iter()
            .map(|(cursor, bytes)| {
                let record: AuditRecord = postcard::from_bytes(&bytes).map_err(store_error)?;
                Ok((cursor.owner, record))
            })
            .collect()
    }
}

/// Decodes a batch's entries, or says which one does not decode.
fn decode_entries(entries: &[(u64, Vec<u8>)]) -> Result<Entries, String> {
    entries
        .iter()
        .map(|(seq, bytes)| {
            doppel_runtime::journal::decode_updates(bytes)
                .map(|updates| (*seq, updates))
                .map_err(|error| {
                    format!("outbox entry {seq} does not hold mirror updates in format 1: {error}")
                })
        })
        .collect()
}

/// Encodes a row as the `mirror_rows` table holds it, postcard `(owner, received_at,
/// report)`: the encoding of `(owner, received_at)` followed by the report's. Returns
/// those bytes and, copied out of them, the report's own encoding (what memory holds),
/// so the report is encoded once.
fn encode_row(
    owner: &str,
    received_at: Timestamp,
    report: &TwinReport,
) -> Result<(Vec<u8>, Box<[u8]>), ClusterError> {
    let head = postcard::to_stdvec(&(owner, received_at)).map_err(store_error)?;
    let report_at = head.len();
    let bytes = postcard::to_extend(report, head).map_err(store_error)?;
    let report: Box<[u8]> = bytes.get(report_at..).unwrap_or_default().into();
    Ok((bytes, report))
}

/// Reads a value of the `mirror_rows` table: (owner, received_at, the report's version,
/// the report's encoding as the file holds it). The report is decoded once, to check
/// the row is of this layout.
fn load_row(bytes: &[u8]) -> Result<(&str, Timestamp, u64, &[u8]), postcard::Error> {
    let ((owner, received_at), rest): ((&str, Timestamp), _) = postcard::take_from_bytes(bytes)?;
    let (report, tail): (TwinReport, _) = postcard::take_from_bytes(rest)?;
    // What the report took of the bytes (an earlier writer never left any after it).
    let encoded = rest
        .get(..rest.len().saturating_sub(tail.len()))
        .unwrap_or(rest);
    Ok((owner, received_at, report.version, encoded))
}

/// The shared copy of an owner's node id, made on first sight.
fn intern(owners: &mut Owners, owner: &str) -> Arc<str> {
    if let Some(known) = owners.get(owner) {
        return Arc::clone(known);
    }
    let owner: Arc<str> = Arc::from(owner);
    owners.insert(Arc::clone(&owner));
    owner
}

/// A replayed compacted entry may latch a trip the row already holds: keep one of each.
fn keep_trips_once(trips: &mut Vec<Trip>) {
    let mut index = 1;
    while index < trips.len() {
        if trips[..index].contains(&trips[index]) {
            trips.remove(index);
        } else {
            index += 1;
        }
    }
}
