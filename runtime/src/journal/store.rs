//! The node's redb file: tables, id allocation and reads.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use redb::{Database, ReadableDatabase, ReadableTable, ReadableTableMetadata, TableDefinition};

use super::event::{JournalEvent, JournalRecord, Snapshot};
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
/// Audit log: (asset path, sequence) → postcard [`AuditRecord`].
pub(crate) const AUDIT: TableDefinition<(&str, u64), &[u8]> = TableDefinition::new("audit");
/// Counters: name → value (next audit sequence).
pub(crate) const META: TableDefinition<&str, u64> = TableDefinition::new("meta");
/// The audit record of each command by (asset path, command id), for idempotent retries.
pub(crate) const COMMANDS: TableDefinition<(&str, &str), u64> = TableDefinition::new("commands");
/// Replication outbox: entry sequence → postcard `Vec<MirrorUpdate>` of one batch.
pub(crate) const OUTBOX: TableDefinition<u64, &[u8]> = TableDefinition::new("outbox");
/// Replication links: link name → last outbox sequence the peer acknowledged.
pub(crate) const OUTBOX_LINKS: TableDefinition<&str, u64> = TableDefinition::new("outbox_links");

/// A storage failure.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{0}")]
pub struct StoreError(pub String);

impl StoreError {
    pub(crate) fn from(error: impl std::fmt::Display) -> Self {
        Self(error.to_string())
    }
}

/// The node's redb database.
#[derive(Clone)]
pub struct Store {
    pub(crate) db: Arc<Database>,
    /// The journal's write-ahead log next to the redb file.
    pub(crate) wal_path: PathBuf,
}

impl Store {
    /// Opens (or creates) the database at `path`, creating every table, and applies
    /// the journal batches its write-ahead log holds that the database lacks.
    pub fn open(path: &Path) -> Result<Self, StoreError> {
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent).map_err(StoreError::from)?;
        }
        let db = Database::create(path).map_err(StoreError::from)?;
        let txn = db.begin_write().map_err(StoreError::from)?;
        {
            txn.open_table(JOURNAL).map_err(StoreError::from)?;
            txn.open_table(SNAPSHOTS).map_err(StoreError::from)?;
            txn.open_table(TWINS).map_err(StoreError::from)?;
            txn.open_table(SOURCES).map_err(StoreError::from)?;
            txn.open_table(AUDIT).map_err(StoreError::from)?;
            txn.open_table(META).map_err(StoreError::from)?;
            txn.open_table(COMMANDS).map_err(StoreError::from)?;
            txn.open_table(OUTBOX).map_err(StoreError::from)?;
            txn.open_table(OUTBOX_LINKS).map_err(StoreError::from)?;
        }
        txn.commit().map_err(StoreError::from)?;
        let wal_path = super::wal::path_for(path);
        super::wal::recover(&wal_path, &db)?;
        Ok(Self {
            db: Arc::new(db),
            wal_path,
        })
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
        let txn = self.db.begin_read().map_err(StoreError::from)?;
        let table = txn.open_table(SNAPSHOTS).map_err(StoreError::from)?;
        let Some(entry) = table.get(path.as_str()).map_err(StoreError::from)? else {
            return Ok(None);
        };
        let (batch, bytes) = entry.value();
        let snapshot = postcard::from_bytes(bytes).map_err(StoreError::from)?;
        Ok(Some((batch, snapshot)))
    }

    /// Calls `visit` for every journal record in batches `from_batch..`, in order.
    pub fn replay(
        &self,
        from_batch: u64,
        mut visit: impl FnMut(u64, JournalRecord),
    ) -> Result<(), StoreError> {
        let txn = self.db.begin_read().map_err(StoreError::from)?;
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
        let txn = self.db.begin_read().map_err(StoreError::from)?;
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
                if let JournalEvent::Sample(sample) = record.event
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
        let txn = self.db.begin_read().map_err(StoreError::from)?;
        let table = txn.open_table(JOURNAL).map_err(StoreError::from)?;
        Ok(table
            .last()
            .map_err(StoreError::from)?
            .map(|(k, _)| k.value()))
    }

    /// Number of journal batches kept.
    pub fn journal_batches(&self) -> Result<u64, StoreError> {
        let txn = self.db.begin_read().map_err(StoreError::from)?;
        let table = txn.open_table(JOURNAL).map_err(StoreError::from)?;
        table.len().map_err(StoreError::from)
    }

    /// The audit record of the command `id` sent to `asset`, if one was recorded.
    pub fn command_record(
        &self,
        asset: &AssetPath,
        id: &str,
    ) -> Result<Option<AuditRecord>, StoreError> {
        let txn = self.db.begin_read().map_err(StoreError::from)?;
        let commands = txn.open_table(COMMANDS).map_err(StoreError::from)?;
        let Some(seq) = commands
            .get((asset.as_str(), id))
            .map_err(StoreError::from)?
            .map(|seq| seq.value())
        else {
            return Ok(None);
        };
        let audit = txn.open_table(AUDIT).map_err(StoreError::from)?;
        let Some(bytes) = audit.get((asset.as_str(), seq)).map_err(StoreError::from)? else {
            return Ok(None);
        };
        Ok(Some(
            postcard::from_bytes(bytes.value()).map_err(StoreError::from)?,
        ))
    }

    /// A page of audit records of twins at or below `prefix` with `at` in `[from, to]`
    /// and a sequence number above `after`: the `limit` lowest, in sequence order.
    /// Reads at most `limit` records past the cursor per twin, not the whole log.
    pub fn audit_page(
        &self,
        prefix: &AssetPath,
        (from, to): (Timestamp, Timestamp),
        after: Option<u64>,
        limit: usize,
    ) -> Result<Vec<AuditRecord>, StoreError> {
        let txn = self.db.begin_read().map_err(StoreError::from)?;
        let table = txn.open_table(AUDIT).map_err(StoreError::from)?;
        let first = after.map_or(0, |seq| seq.saturating_add(1));
        let mut records = Vec::new();
        // Keys are (asset path, seq): visit each asset under the prefix in turn,
        // starting at the cursor, and jump to the next asset after `limit` records.
        let mut asset: Option<String> = None;
        loop {
            let start = match &asset {
                None => (prefix.as_str(), first),
                Some(previous) => (previous.as_str(), u64::MAX),
            };
            let mut entries = table.range(start..).map_err(StoreError::from)?;
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
            let mut taken = 0;
            for entry in table
                .range((path.as_str(), first)..=(path.as_str(), u64::MAX))
                .map_err(StoreError::from)?
            {
                let (_, value) = entry.map_err(StoreError::from)?;
                let record: AuditRecord =
                    postcard::from_bytes(value.value()).map_err(StoreError::from)?;
                if !record.asset.starts_with(prefix) {
                    break;
                }
                if record.at >= from && record.at <= to {
                    records.push(record);
                    taken += 1;
                    if taken == limit {
                        break;
                    }
                }
            }
            asset = Some(path);
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
        let txn = self.db.begin_read().map_err(StoreError::from)?;
        let table = txn.open_table(AUDIT).map_err(StoreError::from)?;
        let mut records = Vec::new();
        for entry in table
            .range((prefix.as_str(), 0u64)..)
            .map_err(StoreError::from)?
        {
            let (key, value) = entry.map_err(StoreError::from)?;
            let (path, _) = key.value();
            if !path.starts_with(prefix.as_str()) {
                break;
            }
            let record: AuditRecord =
                postcard::from_bytes(value.value()).map_err(StoreError::from)?;
            if record.asset.starts_with(prefix) && record.at >= from && record.at <= to {
                records.push(record);
            }
        }
        records.sort_by_key(|r| r.seq);
        records.truncate(limit);
        Ok(records)
    }
}
