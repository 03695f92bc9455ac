//! The write-ahead log in front of the redb file.
//!
//! A durable redb commit writes every page it touched and a header, and flushes twice
//! over; a group commit of a few commands costs a millisecond or more that way. The
//! committer instead appends each batch as one frame to this log and flushes it with a
//! single `sync_data`: the batch is durable, and acknowledged, once that returns. It then
//! applies the frame to redb in a non-durable transaction, which makes it visible to
//! reads (a read that starts after an acknowledgement waits for that, see
//! `store::Applied`). Every so often a durable redb commit (a checkpoint) makes everything applied so
//! far durable in redb itself, and the log starts over from its beginning.
//!
//! The file is preallocated (written with zeros once), so an append overwrites blocks
//! the file system already holds and `sync_data` has no size change to persist. Appends
//! write whole pages (the partial page before the frame again, zeros after it) and the
//! file's cached pages are dropped at open: the page cache never reads a page back to
//! complete a write, and never holds the log in large folios, which would make every
//! flush write a megabyte for a few hundred bytes of frame. A frame
//! is `[length u32][crc32 of length and payload u32][payload]`, little-endian, the payload
//! a postcard [`Frame`]; frames carry consecutive ids. Recovery reads frames from the
//! start while each is whole, matches its checksum and carries the id after the previous
//! one; frames a checkpoint already made durable in redb (`META["wal_applied"]`) are
//! skipped, the rest are applied again. Frames left over from before the last checkpoint
//! sit after the newest ones with lower ids, so the chain ends there.

use std::fs::{File, OpenOptions};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use redb::{Database, Durability, ReadableDatabase, WriteTransaction};
use serde::{Deserialize, Serialize};

use super::store::{AUDIT, COMMANDS, JOURNAL, META, OUTBOX, SNAPSHOTS, StoreError};

/// Bytes of a frame's header: length and checksum.
const HEADER: usize = 8;
/// Zeros written per call while preallocating.
const FILL_CHUNK: usize = 1 << 20;
/// Appends are written in whole pages of this size.
const PAGE: u64 = 4096;

/// The redb changes of one journal batch, as logged and as applied.
#[derive(Debug, Default, Serialize, Deserialize)]
pub(crate) struct Frame {
    /// Consecutive frame id, assigned on append.
    pub id: u64,
    /// The batch's journal blob under its batch sequence.
    pub journal: Option<(u64, Vec<u8>)>,
    /// Audit records: (asset path, sequence, postcard record).
    pub audit: Vec<(String, u64, Vec<u8>)>,
    /// Idempotency index entries: (asset path, command id, audit sequence).
    pub commands: Vec<(String, String, u64)>,
    /// Snapshots: (asset path, batch sequence, postcard snapshot).
    pub snapshots: Vec<(String, u64, Vec<u8>)>,
    /// The next audit sequence, when the batch wrote audit records.
    pub next_audit: Option<u64>,
    /// The batch's outbox entry: (sequence, postcard updates).
    pub outbox: Option<(u64, Vec<u8>)>,
}

impl Frame {
    /// Writes the frame's changes, and its id as the last frame applied, into `txn`.
    /// Applying a frame twice leaves the same tables as applying it once.
    pub fn apply(&self, txn: &WriteTransaction) -> Result<(), StoreError> {
        if let Some((batch, blob)) = &self.journal {
            txn.open_table(JOURNAL)
                .map_err(StoreError::from)?
                .insert(*batch, blob.as_slice())
                .map_err(StoreError::from)?;
        }
        if !self.audit.is_empty() {
            let mut audit = txn.open_table(AUDIT).map_err(StoreError::from)?;
            for (asset, seq, bytes) in &self.audit {
                audit
                    .insert(*seq, (asset.as_str(), bytes.as_slice()))
                    .map_err(StoreError::from)?;
            }
        }
        if !self.commands.is_empty() {
            let mut commands = txn.open_table(COMMANDS).map_err(StoreError::from)?;
            for (asset, id, seq) in &self.commands {
                commands
                    .insert((asset.as_str(), id.as_str()), *seq)
                    .map_err(StoreError::from)?;
            }
        }
        if !self.snapshots.is_empty() {
            let mut snapshots = txn.open_table(SNAPSHOTS).map_err(StoreError::from)?;
            for (path, batch, bytes) in &self.snapshots {
                snapshots
                    .insert(path.as_str(), (*batch, bytes.as_slice()))
                    .map_err(StoreError::from)?;
            }
        }
        let mut meta = txn.open_table(META).map_err(StoreError::from)?;
        if let Some(next) = self.next_audit {
            meta.insert("next_audit", next).map_err(StoreError::from)?;
        }
        if let Some((seq, bytes)) = &self.outbox {
            txn.open_table(OUTBOX)
                .map_err(StoreError::from)?
                .insert(*seq, bytes.as_slice())
                .map_err(StoreError::from)?;
            meta.insert("next_outbox", seq + 1)
                .map_err(StoreError::from)?;
        }
        meta.insert("wal_applied", self.id)
            .map_err(StoreError::from)?;
        Ok(())
    }
}

/// The log file next to the redb file at `db`.
pub(crate) fn path_for(db: &Path) -> PathBuf {
    db.with_extension("wal")
}

/// The id of the last frame redb holds (0 when none).
pub(crate) fn applied(db: &Database) -> Result<u64, StoreError> {
    let txn = db.begin_read().map_err(StoreError::from)?;
    let meta = txn.open_table(META).map_err(StoreError::from)?;
    Ok(meta
        .get("wal_applied")
        .map_err(StoreError::from)?
        .map_or(0, |v| v.value()))
}

/// Applies the frames of the log at `path` that redb does not hold yet, and makes them
/// durable in redb. Returns how many were applied. Reads the log only as far as its
/// chain of frames goes, not the preallocated space after it.
pub(crate) fn recover(path: &Path, db: &Database) -> Result<u64, StoreError> {
    let file = match File::open(path) {
        Ok(file) => file,
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => return Ok(0),
        Err(error) => return Err(StoreError::from(error)),
    };
    let applied = applied(db)?;
    let (frames, _) = read_frames(&file)?;
    let frames: Vec<Frame> = frames
        .into_iter()
        .filter(|frame| frame.id > applied)
        .collect();
    if frames.is_empty() {
        return Ok(0);
    }
    let mut txn = db.begin_write().map_err(StoreError::from)?;
    txn.set_durability(Durability::Immediate)
        .map_err(StoreError::from)?;
    for frame in &frames {
        frame.apply(&txn)?;
    }
    txn.commit().map_err(StoreError::from)?;
    tracing::info!(frames = frames.len(), "journal log replayed");
    Ok(frames.len() as u64)
}

/// The chain of whole frames at the start of `file`, read frame by frame, and the bytes
/// it holds (where the chain ends).
fn read_frames(file: &File) -> Result<(Vec<Frame>, u64), StoreError> {
    let length = file.metadata().map_err(StoreError::from)?.len();
    let mut frames: Vec<Frame> = Vec::new();
    let mut at: u64 = 0;
    let mut header = [0u8; HEADER];
    let mut payload = Vec::new();
    while at + HEADER as u64 <= length {
        file.read_exact_at(&mut header, at)
            .map_err(StoreError::from)?;
        let len = u32::from_le_bytes([header[0], header[1], header[2], header[3]]) as u64;
        let crc = u32::from_le_bytes([header[4], header[5], header[6], header[7]]);
        if len == 0 || at + HEADER as u64 + len > length {
            break;
        }
        payload.resize(len as usize, 0);
        file.read_exact_at(&mut payload, at + HEADER as u64)
            .map_err(StoreError::from)?;
        if checksum(&header[..4], &payload) != crc {
            break;
        }
        let Ok(frame) = postcard::from_bytes::<Frame>(&payload) else {
            break;
        };
        if let Some(previous) = frames.last()
            && frame.id != previous.id + 1
        {
            break;
        }
        frames.push(frame);
        at += HEADER as u64 + len;
    }
    Ok((frames, at))
}

/// Asks the kernel to forget the file's cached pages (all clean here), so later
/// appends start from single pages rather than the large folios reading or filling the
/// file left behind. Only a hint: without it appends are correct, just heavier.
fn drop_cached_pages(file: &File) {
    let _ = rustix::fs::fadvise(file, 0, None, rustix::fs::Advice::DontNeed);
}

fn checksum(len: &[u8], payload: &[u8]) -> u32 {
    let mut hasher = crc32fast::Hasher::new();
    hasher.update(len);
    hasher.update(payload);
    hasher.finalize()
}

/// The appending end of the log.
pub(crate) struct Wal {
    file: File,
    /// Where the next frame goes.
    offset: u64,
    /// The preallocated size.
    capacity: u64,
    next_id: u64,
    /// The bytes of the page holding `offset`, before it.
    page: Vec<u8>,
    /// The page's start and the encoded frame, then padding: the next write.
    buffer: Vec<u8>,
    /// The offset `buffer` was encoded for.
    encoded_at: Option<u64>,
}

impl Wal {
    /// Opens the log at `path` for appending from its start, preallocating `capacity`
    /// bytes; the next frame gets id `next_id`. Whatever the file held must already be
    /// in redb ([`recover`]).
    pub fn open(path: &Path, capacity: u64, next_id: u64) -> Result<Self, StoreError> {
        let created = !path.exists();
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(path)
            .map_err(StoreError::from)?;
        let length = file.metadata().map_err(StoreError::from)?.len();
        if length < capacity {
            let zeros = vec![0u8; FILL_CHUNK];
            let mut at = length;
            while at < capacity {
                let n = (capacity - at).min(FILL_CHUNK as u64) as usize;
                file.write_all_at(&zeros[..n], at)
                    .map_err(StoreError::from)?;
                at += n as u64;
            }
            file.sync_all().map_err(StoreError::from)?;
        }
        drop_cached_pages(&file);
        if created && let Some(dir) = path.parent() {
            // The new file's directory entry must be durable before any frame is.
            let dir = if dir.as_os_str().is_empty() {
                Path::new(".")
            } else {
                dir
            };
            File::open(dir)
                .and_then(|d| d.sync_all())
                .map_err(StoreError::from)?;
        }
        Ok(Self {
            file,
            offset: 0,
            capacity: capacity.max(length),
            next_id,
            page: Vec::new(),
            buffer: Vec::new(),
            encoded_at: None,
        })
    }

    /// Bytes written since the log last started over.
    pub fn used(&self) -> u64 {
        self.offset
    }

    /// Whether a frame of `payload` bytes still fits in the preallocated space.
    pub fn fits(&self, payload: usize) -> bool {
        self.offset + (HEADER + payload) as u64 <= self.capacity
    }

    /// Encodes `frame` (assigning its id) and returns its payload size.
    pub fn encode(&mut self, frame: &mut Frame) -> Result<usize, StoreError> {
        frame.id = self.next_id;
        self.buffer.clear();
        self.buffer.extend_from_slice(&self.page);
        self.buffer.resize(self.page.len() + HEADER, 0);
        self.buffer = postcard::to_extend(frame, std::mem::take(&mut self.buffer))
            .map_err(StoreError::from)?;
        self.encoded_at = Some(self.offset);
        Ok(self.buffer.len() - self.page.len() - HEADER)
    }

    /// Appends the frame last [`Wal::encode`]d and waits until it is on disk. The
    /// frame is placed where the next frame goes; when it does not fit after a
    /// [`Wal::restart`], encode it again.
    pub fn append(&mut self) -> Result<(), StoreError> {
        if self.encoded_at.take() != Some(self.offset) {
            return Err(StoreError::FrameMisplaced);
        }
        let start = self.page.len();
        let end = self.buffer.len();
        let len = u32::try_from(end - start - HEADER)
            .map_err(|_| StoreError::BatchTooLarge {
                bytes: end - start - HEADER,
            })?
            .to_le_bytes();
        let crc = checksum(&len, &self.buffer[start + HEADER..]);
        self.buffer[start..start + 4].copy_from_slice(&len);
        self.buffer[start + 4..start + HEADER].copy_from_slice(&crc.to_le_bytes());
        let page_start = self.offset - start as u64;
        self.buffer.resize(end.next_multiple_of(PAGE as usize), 0);
        self.file
            .write_all_at(&self.buffer, page_start)
            .map_err(StoreError::from)?;
        self.file.sync_data().map_err(StoreError::from)?;
        self.offset = page_start + end as u64;
        let tail = (end as u64 / PAGE * PAGE) as usize;
        self.page.clear();
        self.page.extend_from_slice(&self.buffer[tail..end]);
        self.capacity = self.capacity.max(self.offset);
        self.next_id += 1;
        Ok(())
    }

    /// Starts over from the beginning of the file: call only once redb holds every
    /// frame durably.
    pub fn restart(&mut self) {
        self.offset = 0;
        self.page.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(id: u64, batch: u64) -> Frame {
        Frame {
            id,
            journal: Some((batch, vec![batch as u8; 40])),
            audit: vec![("a/b/c".into(), batch, vec![7; 30])],
            next_audit: Some(batch + 1),
            ..Frame::default()
        }
    }

    /// The frames `read_frames` finds in a file holding `bytes`.
    fn read(bytes: &[u8]) -> Vec<Frame> {
        let file = tempfile::tempfile().unwrap();
        file.write_all_at(bytes, 0).unwrap();
        read_frames(&file).unwrap().0
    }

    fn write(wal: &mut Wal, mut frame: Frame) {
        wal.encode(&mut frame).unwrap();
        wal.append().unwrap();
    }

    #[test]
    fn a_torn_tail_ends_the_chain() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t.wal");
        let mut wal = Wal::open(&path, 1 << 16, 1).unwrap();
        for batch in 1..=3 {
            write(&mut wal, frame(0, batch));
        }
        let end = wal.used();
        let mut bytes = std::fs::read(&path).unwrap();
        assert_eq!(read(&bytes).len(), 3);
        // Half of a fourth frame, as a crash during its write leaves it.
        write(&mut wal, frame(0, 4));
        let full = std::fs::read(&path).unwrap();
        let fourth = (wal.used() - end) as usize;
        bytes[end as usize..end as usize + fourth / 2]
            .copy_from_slice(&full[end as usize..end as usize + fourth / 2]);
        let ids: Vec<u64> = read(&bytes).iter().map(|f| f.id).collect();
        assert_eq!(ids, [1, 2, 3]);
        // One flipped bit in the second frame's payload ends the chain after the first.
        let mut flipped = full.clone();
        let second = HEADER + u32::from_le_bytes(full[..4].try_into().unwrap()) as usize;
        flipped[second + HEADER + 3] ^= 0x10;
        assert_eq!(read(&flipped).len(), 1);
    }

    #[test]
    fn frames_from_before_a_restart_are_not_read_after_the_new_ones() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t.wal");
        let mut wal = Wal::open(&path, 1 << 16, 1).unwrap();
        for batch in 1..=5 {
            write(&mut wal, frame(0, batch));
        }
        let mut sixth = frame(0, 6);
        wal.encode(&mut sixth).unwrap();
        wal.restart();
        assert!(wal.append().is_err(), "encoded before the restart");
        wal.encode(&mut sixth).unwrap();
        wal.append().unwrap();
        let bytes = std::fs::read(&path).unwrap();
        let ids: Vec<u64> = read(&bytes).iter().map(|f| f.id).collect();
        assert_eq!(ids, [6]);
    }

    #[test]
    fn recovery_reads_the_frames_not_the_space_after_them() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t.wal");
        let mut wal = Wal::open(&path, 64 << 20, 1).unwrap();
        for batch in 1..=3 {
            write(&mut wal, frame(0, batch));
        }
        let file = File::open(&path).unwrap();
        let (frames, read) = read_frames(&file).unwrap();
        assert_eq!(frames.len(), 3);
        assert_eq!(read, wal.used());
        assert_eq!(file.metadata().unwrap().len(), 64 << 20);
    }

    #[test]
    fn a_frame_larger_than_the_file_grows_it() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t.wal");
        let mut wal = Wal::open(&path, 4096, 1).unwrap();
        let mut big = frame(0, 1);
        big.snapshots = vec![("a/b/c".into(), 1, vec![1; 10_000])];
        let size = wal.encode(&mut big).unwrap();
        assert!(!wal.fits(size));
        wal.append().unwrap();
        write(&mut wal, frame(0, 2));
        let bytes = std::fs::read(&path).unwrap();
        let frames = read(&bytes);
        assert_eq!(frames.len(), 2);
        assert_eq!(frames[0].snapshots[0].2.len(), 10_000);
    }

    #[test]
    fn recovery_applies_only_frames_redb_lacks() {
        let dir = tempfile::tempdir().unwrap();
        let db_path = dir.path().join("t.redb");
        let store = super::super::Store::open(&db_path).unwrap();
        let mut wal = Wal::open(&path_for(&db_path), 1 << 16, 1).unwrap();
        // Frame 1 is in redb durably already; frames 2 and 3 only in the log.
        let mut first = frame(0, 1);
        wal.encode(&mut first).unwrap();
        wal.append().unwrap();
        let txn = store.db.begin_write().unwrap();
        first.apply(&txn).unwrap();
        txn.commit().unwrap();
        write(&mut wal, frame(0, 2));
        write(&mut wal, frame(0, 3));
        assert_eq!(recover(&path_for(&db_path), &store.db).unwrap(), 2);
        assert_eq!(applied(&store.db).unwrap(), 3);
        assert_eq!(store.journal_batches().unwrap(), 3);
        assert_eq!(recover(&path_for(&db_path), &store.db).unwrap(), 0);
    }
}
