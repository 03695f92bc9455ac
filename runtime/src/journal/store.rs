//! The node's redb file: tables, id allocation and reads.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use parking_lot::{Condvar, Mutex};
use redb::{
    Database, ReadableDatabase, ReadableTable, ReadableTableMetadata, TableDefinition, TableHandle,
    WriteTransaction,
};

use super::event::{JournalRecord, Snapshot};
use crate::audit::AuditRecord;
use crate::path::AssetPath;
use crate::sample::{ChannelId, Sample};
use crate::time::Timestamp;

/// Journal batches: batch sequence → concatenated postcard [`JournalRecord`]s.
pub(crate) const JOURNAL: TableDefinition<u64, &[u8]> = TableDefinition::new("journal");
/// Latest snapshot per twin: asset path → (batch it was written in, postcard [`Snapshot`]).
pub(crate) const SNAPSHOTS: TableDefinition<&str, (u64, &[u8])> = TableDefinition::new("snapshots");
/// Durable twin ids: asset path → id.
pub(crate) const TWINS: TableDefinition<&str, u32> = TableDefinition::new("twins");
/// Durable source ids: source name → id.
pub(crate) const SOURCES: TableDefinition<&str, u32> = TableDefinition::new("sources");
/// Audit log: sequence → (asset path, postcard [`AuditRecord`]). Records arrive in
/// sequence order, so a batch's records all land on the log's last pages.
pub(crate) const AUDIT: TableDefinition<u64, (&str, &[u8])> = TableDefinition::new("audit_log");
/// Audit records by asset: (asset path, sequence). Holds every record up to
/// `META["audit_indexed"]`; the committer adds the rest in sorted runs of a thousand or
/// more, and readers scan the log past that mark.
pub(crate) const AUDIT_INDEX: TableDefinition<(&str, u64), ()> =
    TableDefinition::new("audit_index");
/// The audit table of earlier releases, (asset path, sequence) → postcard record; moved
/// into the log and its index when a store is opened.
const LEGACY_AUDIT: TableDefinition<(&str, u64), &[u8]> = TableDefinition::new("audit");
/// Counters: name → value (next audit sequence).
pub(crate) const META: TableDefinition<&str, u64> = TableDefinition::new("meta");
/// The audit record of each command by (asset path, command id), for idempotent retries.
pub(crate) const COMMANDS: TableDefinition<(&str, &str), u64> = TableDefinition::new("commands");
/// Replication outbox: entry sequence → postcard `Vec<MirrorUpdate>` of one batch.
pub(crate) const OUTBOX: TableDefinition<u64, &[u8]> = TableDefinition::new("outbox");
/// Replication links: link name → last outbox sequence the peer acknowledged.
pub(crate) const OUTBOX_LINKS: TableDefinition<&str, u64> = TableDefinition::new("outbox_links");

/// A storage failure, with its cause.
#[derive(Debug, Clone, thiserror::Error)]
pub enum StoreError {
    /// The redb database failed.
    #[error("database: {0}")]
    Database(#[source] Arc<redb::Error>),
    /// The data directory or the write-ahead log could not be read or written.
    #[error("write-ahead log: {0}")]
    Io(#[source] Arc<std::io::Error>),
    /// A record could not be encoded, or one read back does not decode.
    #[error("encoding: {0}")]
    Encoding(#[source] postcard::Error),
    /// A batch is larger than one log frame can hold.
    #[error("journal batch of {bytes} bytes is larger than a log frame holds (4 GiB)")]
    BatchTooLarge {
        /// The batch's encoded size.
        bytes: usize,
    },
    /// A record read back is not what was written (a registry record that does not
    /// decode).
    #[error("corrupt record: {0}")]
    Corrupt(String),
    /// A frame was appended at another position than the one it was encoded for.
    #[error("journal log frame was encoded for another position")]
    FrameMisplaced,
    /// A batch already in the log did not reach the database; the store refuses
    /// writes until the node restarts and replays the log.
    #[error("the journal store failed ({0}); the node must restart")]
    Poisoned(Arc<StoreError>),
}

impl From<redb::Error> for StoreError {
    fn from(error: redb::Error) -> Self {
        Self::Database(Arc::new(error))
    }
}

macro_rules! database_errors {
    ($($kind:ty),*) => {$(
        impl From<$kind> for StoreError {
            fn from(error: $kind) -> Self {
                Self::Database(Arc::new(error.into()))
            }
        }
    )*};
}

database_errors!(
    redb::DatabaseError,
    redb::TransactionError,
    redb::TableError,
    redb::StorageError,
    redb::CommitError,
    redb::CompactionError,
    redb::SetDurabilityError
);

impl From<std::io::Error> for StoreError {
    fn from(error: std::io::Error) -> Self {
        Self::Io(Arc::new(error))
    }
}

impl From<postcard::Error> for StoreError {
    fn from(error: postcard::Error) -> Self {
        Self::Encoding(error)
    }
}

/// The node's redb database.
#[derive(Clone)]
pub struct Store {
    pub(crate) db: Arc<Database>,
    /// The journal's write-ahead log next to the redb file.
    pub(crate) wal_path: PathBuf,
    /// How far redb has caught up with the log.
    pub(crate) applied: Arc<Applied>,
}

/// The committer acknowledges a batch once its frame is in the log and applies it to
/// redb right after; reads of what commits write wait here for that gap to close, so a
/// caller always reads what it was told is durable.
#[derive(Debug, Default)]
pub(crate) struct Applied {
    /// Id of the newest frame in the log.
    logged: AtomicU64,
    /// Id of the newest frame applied to redb.
    applied: Mutex<u64>,
    advanced: Condvar,
}

impl Applied {
    fn starting_at(frame: u64) -> Self {
        Self {
            logged: AtomicU64::new(frame),
            applied: Mutex::new(frame),
            advanced: Condvar::new(),
        }
    }

    /// Frame `id` is in the log (and acknowledged from here on).
    pub(crate) fn logged(&self, id: u64) {
        self.logged.store(id, Ordering::Release);
    }

    /// Frame `id` is in redb, or never will be (the store failed); wakes waiting reads.
    pub(crate) fn applied(&self, id: u64) {
        *self.applied.lock() = id;
        self.advanced.notify_all();
    }

    /// Waits until every frame logged before this call is in redb.
    fn settle(&self) {
        let target = self.logged.load(Ordering::Acquire);
        let mut applied = self.applied.lock();
        while *applied < target {
            self.advanced.wait(&mut applied);
        }
    }
}

/// Whether `path` is `prefix` or lies below it.
fn under(path: &str, prefix: &str) -> bool {
    path.strip_prefix(prefix)
        .is_some_and(|rest| rest.is_empty() || rest.starts_with('/'))
}

/// Adds the audit records past `META["audit_indexed"]` to [`AUDIT_INDEX`] in `txn`, in
/// key order; returns the new mark.
pub(crate) fn index_audit(txn: &WriteTransaction) -> Result<u64, StoreError> {
    let mut meta = txn.open_table(META).map_err(StoreError::from)?;
    let indexed = meta
        .get("audit_indexed")
        .map_err(StoreError::from)?
        .map_or(0, |v| v.value());
    let log = txn.open_table(AUDIT).map_err(StoreError::from)?;
    let mut entries: Vec<(String, u64)> = Vec::new();
    for entry in log
        .range(indexed.saturating_add(1)..)
        .map_err(StoreError::from)?
    {
        let (seq, value) = entry.map_err(StoreError::from)?;
        entries.push((value.value().0.to_string(), seq.value()));
    }
    let Some(last) = entries.last().map(|(_, seq)| *seq) else {
        return Ok(indexed);
    };
    entries.sort_unstable();
    let mut index = txn.open_table(AUDIT_INDEX).map_err(StoreError::from)?;
    for (asset, seq) in &entries {
        index
            .insert((asset.as_str(), *seq), ())
            .map_err(StoreError::from)?;
    }
    meta.insert("audit_indexed", last)
        .map_err(StoreError::from)?;
    Ok(last)
}

/// Moves the records of the audit table of earlier releases into the log and its index.
fn migrate_legacy_audit(txn: &WriteTransaction) -> Result<(), StoreError> {
    let present = txn
        .list_tables()
        .map_err(StoreError::from)?
        .any(|table| table.name() == LEGACY_AUDIT.name());
    if !present {
        return Ok(());
    }
    {
        let legacy = txn.open_table(LEGACY_AUDIT).map_err(StoreError::from)?;
        let mut log = txn.open_table(AUDIT).map_err(StoreError::from)?;
        for entry in legacy.iter().map_err(StoreError::from)? {
            let (key, value) = entry.map_err(StoreError::from)?;
            let (asset, seq) = key.value();
            log.insert(seq, (asset, value.value()))
                .map_err(StoreError::from)?;
        }
    }
    txn.delete_table(LEGACY_AUDIT).map_err(StoreError::from)?;
    index_audit(txn)?;
    Ok(())
}

/// Memory redb may use to cache the journal's pages (its default is 1 GiB). The
/// journal is written far more than read: recovery reads every twin's snapshot once,
/// and queries read a twin's recent records. Without a bound, the pages of every
/// snapshot written at start stay cached: about a kilobyte per twin.
const CACHE_BYTES: usize = 16 << 20;

impl Store {
    /// Opens (or creates) the database at `path`, creating every table, and applies
    /// the journal batches its write-ahead log holds that the database lacks.
    pub fn open(path: &Path) -> Result<Self, StoreError> {
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent).map_err(StoreError::from)?;
        }
        let db = Database::builder()
            .set_cache_size(CACHE_BYTES)
            .create(path)
            .map_err(StoreError::from)?;
        let txn = db.begin_write().map_err(StoreError::from)?;
        {
            txn.open_table(JOURNAL).map_err(StoreError::from)?;
            txn.open_table(SNAPSHOTS).map_err(StoreError::from)?;
            txn.open_table(TWINS).map_err(StoreError::from)?;
            txn.open_table(SOURCES).map_err(StoreError::from)?;
            txn.open_table(AUDIT).map_err(StoreError::from)?;
            txn.open_table(AUDIT_INDEX).map_err(StoreError::from)?;
            txn.open_table(META).map_err(StoreError::from)?;
            txn.open_table(COMMANDS).map_err(StoreError::from)?;
            txn.open_table(OUTBOX).map_err(StoreError::from)?;
            txn.open_table(OUTBOX_LINKS).map_err(StoreError::from)?;
            txn.open_table(crate::model::registry::PACKAGES)
                .map_err(StoreError::from)?;
            txn.open_table(crate::model::registry::DEPLOYMENTS)
                .map_err(StoreError::from)?;
        }
        migrate_legacy_audit(&txn)?;
        txn.commit().map_err(StoreError::from)?;
        let wal_path = super::wal::path_for(path);
        super::wal::recover(&wal_path, &db)?;
        let applied = Arc::new(Applied::starting_at(super::wal::applied(&db)?));
        Ok(Self {
            db: Arc::new(db),
            wal_path,
            applied,
        })
    }

    /// A read transaction that sees every batch acknowledged before the call.
    pub(crate) fn read(&self) -> Result<redb::ReadTransaction, StoreError> {
        self.applied.settle();
        self.db.begin_read().map_err(StoreError::from)
    }

    /// Durable ids for `paths`, allocating new ones in one transaction.
    pub fn twin_ids(&self, paths: &[AssetPath]) -> Result<Vec<u32>, StoreError> {
        self.intern(TWINS, paths.iter().map(|p| p.as_str()))
    }

    /// The durable id of a source name, allocating one if new.
    pub fn source_id(&self, name: &str) -> Result<u32, StoreError> {
        Ok(self.intern(SOURCES, std::iter::once(name))?[0])
    }

    fn intern<'a>(
        &self,
        table: TableDefinition<&str, u32>,
        names: impl Iterator<Item = &'a str>,
    ) -> Result<Vec<u32>, StoreError> {
        let txn = self.db.begin_write().map_err(StoreError::from)?;
        let ids = {
            let mut table = txn.open_table(table).map_err(StoreError::from)?;
            let mut next = 0;
            for entry in table.iter().map_err(StoreError::from)? {
                let (_, id) = entry.map_err(StoreError::from)?;
                next = next.max(id.value() + 1);
            }
            let mut ids = Vec::new();
            for name in names {
                let existing = table
                    .get(name)
                    .map_err(StoreError::from)?
                    .map(|v| v.value());
                let id = match existing {
                    Some(id) => id,
                    None => {
                        table.insert(name, next).map_err(StoreError::from)?;
                        next += 1;
                        next - 1
                    }
                };
                ids.push(id);
            }
            ids
        };
        txn.commit().map_err(StoreError::from)?;
        Ok(ids)
    }

    /// The latest snapshot of a twin and the batch it was written in.
    pub fn snapshot(&self, path: &AssetPath) -> Result<Option<(u64, Snapshot)>, StoreError> {
        let txn = self.read()?;
        let table = txn.open_table(SNAPSHOTS).map_err(StoreError::from)?;
        let Some(entry) = table.get(path.as_str()).map_err(StoreError::from)? else {
            return Ok(None);
        };
        let (batch, bytes) = entry.value();
        let snapshot = Snapshot::decode(bytes).map_err(StoreError::from)?;
        Ok(Some((batch, snapshot)))
    }

    /// The batch of each of `paths`' latest snapshot, `None` for a twin without one,
    /// without decoding the snapshots.
    pub fn snapshot_batches<'a>(
        &self,
        paths: impl IntoIterator<Item = &'a AssetPath>,
    ) -> Result<Vec<Option<u64>>, StoreError> {
        let txn = self.read()?;
        let table = txn.open_table(SNAPSHOTS).map_err(StoreError::from)?;
        let mut batches = Vec::new();
        for path in paths {
            let found = table.get(path.as_str()).map_err(StoreError::from)?;
            batches.push(found.map(|entry| entry.value().0));
        }
        Ok(batches)
    }

    /// Calls `visit` with the latest snapshot (and the batch it was written in) of each
    /// of `paths` in turn, `None` for a twin without one, all read in one transaction:
    /// what a start does for every twin.
    pub fn snapshots<'a, E: From<StoreError>>(
        &self,
        paths: impl IntoIterator<Item = &'a AssetPath>,
        mut visit: impl FnMut(Option<(u64, Snapshot)>) -> Result<(), E>,
    ) -> Result<(), E> {
        let txn = self.read()?;
        let table = txn.open_table(SNAPSHOTS).map_err(StoreError::from)?;
        for path in paths {
            let found = match table.get(path.as_str()).map_err(StoreError::from)? {
                Some(entry) => {
                    let (batch, bytes) = entry.value();
                    Some((batch, Snapshot::decode(bytes).map_err(StoreError::from)?))
                }
                None => None,
            };
            visit(found)?;
        }
        Ok(())
    }

    /// Calls `visit` for every journal record in batches `from_batch..`, in order.
    pub fn replay(
        &self,
        from_batch: u64,
        mut visit: impl FnMut(u64, JournalRecord),
    ) -> Result<(), StoreError> {
        let txn = self.read()?;
        let table = txn.open_table(JOURNAL).map_err(StoreError::from)?;
        for entry in table.range(from_batch..).map_err(StoreError::from)? {
            let (batch, blob) = entry.map_err(StoreError::from)?;
            let batch = batch.value();
            let mut rest = blob.value();
            while !rest.is_empty() {
                let (record, tail) =
                    postcard::take_from_bytes::<JournalRecord>(rest).map_err(StoreError::from)?;
                visit(batch, record);
                rest = tail;
            }
        }
        Ok(())
    }

    /// The newest `limit` samples of one channel of twin `twin` with a source time in
    /// `[from, to]` that the journal still holds (batches not yet truncated), newest
    /// batch first. Reads at most `max_batches` batches.
    pub fn journal_samples(
        &self,
        twin: u32,
        channel: ChannelId,
        (from, to): (Timestamp, Timestamp),
        limit: usize,
        max_batches: usize,
    ) -> Result<Vec<Sample>, StoreError> {
        let txn = self.read()?;
        let table = txn.open_table(JOURNAL).map_err(StoreError::from)?;
        let mut found = Vec::new();
        for entry in table
            .range::<u64>(..)
            .map_err(StoreError::from)?
            .rev()
            .take(max_batches)
        {
            let (_, blob) = entry.map_err(StoreError::from)?;
            let mut rest = blob.value();
            let mut in_batch = Vec::new();
            while !rest.is_empty() {
                let (record, tail) =
                    postcard::take_from_bytes::<JournalRecord>(rest).map_err(StoreError::from)?;
                rest = tail;
                if let Some(sample) = record.event.sample()
                    && record.twin == twin
                    && sample.channel == channel
                    && sample.source_time >= from
                    && sample.source_time <= to
                {
                    in_batch.push(sample);
                }
            }
            found.extend(in_batch.into_iter().rev());
            if found.len() >= limit {
                break;
            }
        }
        found.truncate(limit);
        Ok(found)
    }

    /// The last committed batch sequence, if any.
    pub fn last_batch(&self) -> Result<Option<u64>, StoreError> {
        let txn = self.read()?;
        let table = txn.open_table(JOURNAL).map_err(StoreError::from)?;
        Ok(table
            .last()
            .map_err(StoreError::from)?
            .map(|(k, _)| k.value()))
    }

    /// Number of journal batches kept.
    pub fn journal_batches(&self) -> Result<u64, StoreError> {
        let txn = self.read()?;
        let table = txn.open_table(JOURNAL).map_err(StoreError::from)?;
        table.len().map_err(StoreError::from)
    }

    /// The audit record with sequence number `seq`, if the log holds it.
    pub fn audit_record(&self, seq: u64) -> Result<Option<AuditRecord>, StoreError> {
        let txn = self.read()?;
        let audit = txn.open_table(AUDIT).map_err(StoreError::from)?;
        let Some(entry) = audit.get(seq).map_err(StoreError::from)? else {
            return Ok(None);
        };
        let (_, bytes) = entry.value();
        Ok(Some(postcard::from_bytes(bytes).map_err(StoreError::from)?))
    }

    /// The audit record of the command `id` sent to `asset`, if one was recorded.
    pub fn command_record(
        &self,
        asset: &AssetPath,
        id: &str,
    ) -> Result<Option<AuditRecord>, StoreError> {
        let txn = self.read()?;
        let commands = txn.open_table(COMMANDS).map_err(StoreError::from)?;
        let Some(seq) = commands
            .get((asset.as_str(), id))
            .map_err(StoreError::from)?
            .map(|seq| seq.value())
        else {
            return Ok(None);
        };
        let audit = txn.open_table(AUDIT).map_err(StoreError::from)?;
        let Some(entry) = audit.get(seq).map_err(StoreError::from)? else {
            return Ok(None);
        };
        let (_, bytes) = entry.value();
        Ok(Some(postcard::from_bytes(bytes).map_err(StoreError::from)?))
    }

    /// A page of audit records of twins at or below `prefix` with `at` in `[from, to]`,
    /// of the given `kinds` (every kind when empty), and a sequence number above
    /// `after`: the `limit` lowest, in sequence order.
    /// Reads at most `limit` records past the cursor per twin, not the whole log.
    pub fn audit_page(
        &self,
        prefix: &AssetPath,
        (from, to): (Timestamp, Timestamp),
        kinds: &[crate::audit::AuditKind],
        after: Option<u64>,
        limit: usize,
    ) -> Result<Vec<AuditRecord>, StoreError> {
        let txn = self.read()?;
        let log = txn.open_table(AUDIT).map_err(StoreError::from)?;
        let index = txn.open_table(AUDIT_INDEX).map_err(StoreError::from)?;
        let indexed = txn
            .open_table(META)
            .map_err(StoreError::from)?
            .get("audit_indexed")
            .map_err(StoreError::from)?
            .map_or(0, |v| v.value());
        let first = after.map_or(0, |seq| seq.saturating_add(1));
        let wanted = |record: &AuditRecord| {
            record.asset.starts_with(prefix)
                && record.at >= from
                && record.at <= to
                && (kinds.is_empty() || kinds.contains(&record.kind))
        };
        let read = |seq: u64| -> Result<Option<AuditRecord>, StoreError> {
            let Some(entry) = log.get(seq).map_err(StoreError::from)? else {
                return Ok(None);
            };
            let (_, bytes) = entry.value();
            Ok(Some(postcard::from_bytes(bytes).map_err(StoreError::from)?))
        };
        let mut records = Vec::new();
        // The indexed part. Keys are (asset path, seq): visit each asset under the
        // prefix in turn, starting at the cursor, and jump to the next asset after
        // `limit` records.
        if first <= indexed {
            let mut asset: Option<String> = None;
            loop {
                let start = match &asset {
                    None => (prefix.as_str(), first),
                    Some(previous) => (previous.as_str(), u64::MAX),
                };
                let mut entries = index.range(start..).map_err(StoreError::from)?;
                let Some(entry) = entries.next() else {
                    break;
                };
                let (key, _) = entry.map_err(StoreError::from)?;
                let (path, seq) = key.value();
                let path = path.to_string();
                if !path.starts_with(prefix.as_str()) {
                    break;
                }
                if asset.as_deref() == Some(path.as_str()) && seq == u64::MAX {
                    // The one key a jump can land on again: move past it.
                    asset = Some(format!("{path}\u{0}"));
                    continue;
                }
                drop(entries);
                if under(&path, prefix.as_str()) {
                    let mut taken = 0;
                    for entry in index
                        .range((path.as_str(), first)..=(path.as_str(), indexed))
                        .map_err(StoreError::from)?
                    {
                        let (key, _) = entry.map_err(StoreError::from)?;
                        let Some(record) = read(key.value().1)? else {
                            continue;
                        };
                        if wanted(&record) {
                            records.push(record);
                            taken += 1;
                            if taken == limit {
                                break;
                            }
                        }
                    }
                }
                asset = Some(path);
            }
        }
        // The records the index does not hold yet, from the log itself.
        let mut taken = 0;
        for entry in log
            .range(first.max(indexed.saturating_add(1))..)
            .map_err(StoreError::from)?
        {
            if taken == limit {
                break;
            }
            let (_, value) = entry.map_err(StoreError::from)?;
            let (path, bytes) = value.value();
            if !under(path, prefix.as_str()) {
                continue;
            }
            let record: AuditRecord = postcard::from_bytes(bytes).map_err(StoreError::from)?;
            if wanted(&record) {
                records.push(record);
                taken += 1;
            }
        }
        records.sort_by_key(|r| r.seq);
        records.truncate(limit);
        Ok(records)
    }

    /// Audit records of twins at or below `prefix` with `at` in `[from, to]`, in
    /// sequence order, at most `limit`.
    pub fn audit(
        &self,
        prefix: &AssetPath,
        from: Timestamp,
        to: Timestamp,
        limit: usize,
    ) -> Result<Vec<AuditRecord>, StoreError> {
        self.audit_page(prefix, (from, to), &[], None, limit)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::audit::AuditKind;
    use crate::command::{CommandId, Origin, Verdict};

    fn record(asset: &str, seq: u64) -> AuditRecord {
        AuditRecord {
            seq,
            at: Timestamp(1_000 + seq as i64),
            asset: AssetPath::parse(asset).unwrap(),
            kind: AuditKind::Command,
            command_id: CommandId(format!("c{seq}")),
            command: "set_speed".into(),
            requested: Vec::new(),
            origin: Origin::operator("ann"),
            state_version: 1,
            models: Vec::new(),
            verdict: Verdict::Accepted,
            applied: Vec::new(),
            reason: String::new(),
        }
    }

    fn seqs(records: &[AuditRecord]) -> Vec<u64> {
        records.iter().map(|r| r.seq).collect()
    }

    const ALL: (Timestamp, Timestamp) = (Timestamp(i64::MIN), Timestamp(i64::MAX));

    /// A store written by a release with the single (asset, seq) audit table opens with
    /// every record in the log and the index.
    #[test]
    fn the_earlier_audit_table_moves_into_the_log_and_index() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("doppel.redb");
        {
            let db = Database::create(&path).unwrap();
            let txn = db.begin_write().unwrap();
            {
                let mut legacy = txn.open_table(LEGACY_AUDIT).unwrap();
                for (asset, seq) in [("acme/a", 1), ("acme/b", 2), ("acme/a", 3)] {
                    let bytes = postcard::to_stdvec(&record(asset, seq)).unwrap();
                    legacy.insert((asset, seq), bytes.as_slice()).unwrap();
                }
            }
            txn.commit().unwrap();
        }
        let store = Store::open(&path).unwrap();
        let a = AssetPath::parse("acme/a").unwrap();
        assert_eq!(seqs(&store.audit(&a, ALL.0, ALL.1, 10).unwrap()), [1, 3]);
        let acme = AssetPath::parse("acme").unwrap();
        assert_eq!(
            seqs(&store.audit(&acme, ALL.0, ALL.1, 10).unwrap()),
            [1, 2, 3]
        );
        let txn = store.db.begin_read().unwrap();
        let names: Vec<String> = txn
            .list_tables()
            .unwrap()
            .map(|t| t.name().to_string())
            .collect();
        assert!(!names.contains(&"audit".to_string()), "{names:?}");
        assert_eq!(
            txn.open_table(META)
                .unwrap()
                .get("audit_indexed")
                .unwrap()
                .map(|v| v.value()),
            Some(3)
        );
    }

    /// Pages read the indexed records and the log past the index as one sequence, and
    /// a prefix matches whole path segments only.
    #[test]
    fn pages_span_the_index_and_the_log_tail() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("doppel.redb")).unwrap();
        let assets = ["acme/line-1/a", "acme/line-10/b", "acme/line-1/c"];
        let write = |seqs: std::ops::Range<u64>, index: bool| {
            let txn = store.db.begin_write().unwrap();
            {
                let mut log = txn.open_table(AUDIT).unwrap();
                for seq in seqs {
                    let asset = assets[seq as usize % assets.len()];
                    let bytes = postcard::to_stdvec(&record(asset, seq)).unwrap();
                    log.insert(seq, (asset, bytes.as_slice())).unwrap();
                }
            }
            if index {
                index_audit(&txn).unwrap();
            }
            txn.commit().unwrap();
        };
        write(1..20, true);
        write(20..40, false);
        let line1 = AssetPath::parse("acme/line-1").unwrap();
        let expected: Vec<u64> = (1..40).filter(|seq| seq % 3 != 1).collect();
        assert_eq!(
            seqs(&store.audit(&line1, ALL.0, ALL.1, usize::MAX).unwrap()),
            expected
        );
        let mut paged = Vec::new();
        let mut after = None;
        loop {
            let page = store.audit_page(&line1, ALL, &[], after, 4).unwrap();
            if page.is_empty() {
                break;
            }
            after = page.last().map(|r| r.seq);
            paged.extend(seqs(&page));
        }
        assert_eq!(paged, expected);
        let window = (Timestamp(1_010), Timestamp(1_030));
        let in_window: Vec<u64> = expected
            .iter()
            .copied()
            .filter(|seq| (10..=30).contains(seq))
            .collect();
        assert_eq!(
            seqs(&store.audit_page(&line1, window, &[], None, 100).unwrap()),
            in_window
        );
    }
}
