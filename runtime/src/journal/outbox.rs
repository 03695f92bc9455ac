//! The replication outbox: mirror updates waiting for their peers' acknowledgement.
//!
//! The committer appends one entry per journal batch that produced mirror updates, in
//! the batch's own transaction, under a node-wide sequence number that only grows
//! (`META["next_outbox"]`). Each replication link records the last sequence its peer
//! acknowledged; entries every link has acknowledged are trimmed. When the outbox holds
//! more entries than allowed, the entries no link has seen are compacted into one
//! ([`MirrorUpdate::merge`] per twin): the latest value per channel survives, and every
//! audit record (commands, verdicts, safety actions) is kept.

use std::collections::HashMap;

use redb::{Durability, ReadableTable, ReadableTableMetadata};

use super::store::{META, OUTBOX, OUTBOX_LINKS, Store, StoreError};
use crate::twin::MirrorUpdate;

/// One outbox entry: its sequence number and its encoded updates.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutboxEntry {
    /// The entry's sequence number.
    pub seq: u64,
    /// Postcard-encoded `Vec<MirrorUpdate>`.
    pub bytes: Vec<u8>,
}

impl OutboxEntry {
    /// Decodes the entry's updates.
    pub fn updates(&self) -> Result<Vec<MirrorUpdate>, StoreError> {
        decode_updates(&self.bytes)
    }
}

/// Decodes an outbox entry's bytes.
pub fn decode_updates(bytes: &[u8]) -> Result<Vec<MirrorUpdate>, StoreError> {
    postcard::from_bytes(bytes).map_err(StoreError::from)
}

/// What a compaction did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct OutboxCompaction {
    /// Entries merged.
    pub entries: u64,
    /// Updates they held.
    pub updates_before: u64,
    /// Updates left after merging per twin.
    pub updates_after: u64,
}

impl Store {
    /// The sequence number of the newest outbox entry (0 when none was ever written).
    pub fn outbox_head(&self) -> Result<u64, StoreError> {
        let txn = self.read()?;
        let meta = txn.open_table(META).map_err(StoreError::from)?;
        Ok(meta
            .get("next_outbox")
            .map_err(StoreError::from)?
            .map_or(0, |v| v.value().saturating_sub(1)))
    }

    /// Number of entries in the outbox.
    pub fn outbox_len(&self) -> Result<u64, StoreError> {
        let txn = self.read()?;
        let table = txn.open_table(OUTBOX).map_err(StoreError::from)?;
        table.len().map_err(StoreError::from)
    }

    /// Entries after `after`, oldest first, at most `max_entries` and stopping once
    /// `max_bytes` are exceeded (at least one entry is returned when any exists).
    pub fn outbox_read(
        &self,
        after: u64,
        max_entries: usize,
        max_bytes: usize,
    ) -> Result<Vec<OutboxEntry>, StoreError> {
        let txn = self.read()?;
        let table = txn.open_table(OUTBOX).map_err(StoreError::from)?;
        let mut entries = Vec::new();
        let mut bytes = 0;
        for entry in table
            .range(after.saturating_add(1)..)
            .map_err(StoreError::from)?
        {
            let (seq, value) = entry.map_err(StoreError::from)?;
            bytes += value.value().len();
            entries.push(OutboxEntry {
                seq: seq.value(),
                bytes: value.value().to_vec(),
            });
            if entries.len() >= max_entries || bytes >= max_bytes {
                break;
            }
        }
        Ok(entries)
    }

    /// The last sequence the peer of `link` acknowledged (0 for a new link).
    pub fn outbox_acked(&self, link: &str) -> Result<u64, StoreError> {
        let txn = self.read()?;
        let table = txn.open_table(OUTBOX_LINKS).map_err(StoreError::from)?;
        Ok(table
            .get(link)
            .map_err(StoreError::from)?
            .map_or(0, |v| v.value()))
    }

    /// Every link and the last sequence its peer acknowledged.
    pub fn outbox_links(&self) -> Result<Vec<(String, u64)>, StoreError> {
        let txn = self.read()?;
        let table = txn.open_table(OUTBOX_LINKS).map_err(StoreError::from)?;
        let mut links = Vec::new();
        for entry in table.iter().map_err(StoreError::from)? {
            let (name, seq) = entry.map_err(StoreError::from)?;
            links.push((name.value().to_string(), seq.value()));
        }
        Ok(links)
    }

    /// Registers a link (acknowledged nothing yet) if it is new.
    pub fn outbox_register(&self, link: &str) -> Result<(), StoreError> {
        let txn = self.db.begin_write().map_err(StoreError::from)?;
        {
            let mut table = txn.open_table(OUTBOX_LINKS).map_err(StoreError::from)?;
            if table.get(link).map_err(StoreError::from)?.is_none() {
                table.insert(link, 0).map_err(StoreError::from)?;
            }
        }
        txn.commit().map_err(StoreError::from)
    }

    /// Records that the peer of `link` acknowledged everything up to `seq`, and trims
    /// entries every link has acknowledged. The acknowledgement is made durable by the
    /// journal's next checkpoint: losing it in a crash only replays entries the peer
    /// de-duplicates.
    pub fn outbox_ack(&self, link: &str, seq: u64) -> Result<(), StoreError> {
        let mut txn = self.db.begin_write().map_err(StoreError::from)?;
        txn.set_durability(Durability::None)
            .map_err(StoreError::from)?;
        {
            let mut links = txn.open_table(OUTBOX_LINKS).map_err(StoreError::from)?;
            let previous = links
                .get(link)
                .map_err(StoreError::from)?
                .map_or(0, |v| v.value());
            if seq > previous {
                links.insert(link, seq).map_err(StoreError::from)?;
            }
            let mut low = u64::MAX;
            for entry in links.iter().map_err(StoreError::from)? {
                let (_, acked) = entry.map_err(StoreError::from)?;
                low = low.min(acked.value());
            }
            let mut outbox = txn.open_table(OUTBOX).map_err(StoreError::from)?;
            if low != u64::MAX {
                outbox
                    .retain_in(..=low, |_, _| false)
                    .map_err(StoreError::from)?;
            }
        }
        txn.commit().map_err(StoreError::from)
    }

    /// Removes a link for good (a peer that left the cluster); entries only it held
    /// back are trimmed at the next acknowledgement.
    pub fn outbox_forget(&self, link: &str) -> Result<(), StoreError> {
        let txn = self.db.begin_write().map_err(StoreError::from)?;
        {
            let mut links = txn.open_table(OUTBOX_LINKS).map_err(StoreError::from)?;
            links.remove(link).map_err(StoreError::from)?;
        }
        txn.commit().map_err(StoreError::from)
    }

    /// When the outbox holds more than `max_entries`, merges the entries no link has
    /// acknowledged any part of (all but the newest) into one entry per twin update,
    /// keyed by the newest merged sequence. A link that acknowledged nothing of the
    /// merged range receives the merged entry instead; one that acknowledged all of it
    /// is not affected.
    pub fn outbox_compact(&self, max_entries: u64) -> Result<OutboxCompaction, StoreError> {
        let txn = self.db.begin_write().map_err(StoreError::from)?;
        let mut done = OutboxCompaction::default();
        {
            let mut outbox = txn.open_table(OUTBOX).map_err(StoreError::from)?;
            if outbox.len().map_err(StoreError::from)? <= max_entries {
                drop(outbox);
                txn.abort().map_err(StoreError::from)?;
                return Ok(done);
            }
            let links = txn.open_table(OUTBOX_LINKS).map_err(StoreError::from)?;
            let mut high_ack = 0;
            for entry in links.iter().map_err(StoreError::from)? {
                let (_, acked) = entry.map_err(StoreError::from)?;
                high_ack = high_ack.max(acked.value());
            }
            let Some(last) = outbox
                .last()
                .map_err(StoreError::from)?
                .map(|(k, _)| k.value())
            else {
                return Ok(done);
            };
            // Merge (high_ack, last): the newest entry stays as it is.
            let mut merged: Vec<MirrorUpdate> = Vec::new();
            let mut index: HashMap<String, usize> = HashMap::new();
            let mut keys = Vec::new();
            for entry in outbox
                .range(high_ack.saturating_add(1)..last)
                .map_err(StoreError::from)?
            {
                let (seq, bytes) = entry.map_err(StoreError::from)?;
                keys.push(seq.value());
                for update in decode_updates(bytes.value())? {
                    done.updates_before += 1;
                    match index.get(update.asset.as_str()) {
                        Some(&at) => merged[at].merge(update),
                        None => {
                            index.insert(update.asset.as_str().to_string(), merged.len());
                            merged.push(update);
                        }
                    }
                }
            }
            if keys.len() < 2 {
                return Ok(done);
            }
            let newest = *keys.last().unwrap_or(&last);
            for key in &keys {
                outbox.remove(*key).map_err(StoreError::from)?;
            }
            let bytes = postcard::to_stdvec(&merged).map_err(StoreError::from)?;
            outbox
                .insert(newest, bytes.as_slice())
                .map_err(StoreError::from)?;
            done.entries = keys.len() as u64;
            done.updates_after = merged.len() as u64;
        }
        txn.commit().map_err(StoreError::from)?;
        Ok(done)
    }
}
