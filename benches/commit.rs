//! Commit benchmark (scenario harness): what one durable commit costs on this machine's
//! disk, the floor under every acknowledged command.
//!
//! For each directory (a temp dir under `/tmp` and one under `target/`, in case they
//! sit on different file systems), each phase runs for `DOPPEL_BENCH_SECS` seconds
//! (default 3), one thread back to back unless said otherwise:
//! - `sync`: a 4 KiB overwrite of a preallocated file, then `File::sync_data`;
//! - `sync4c`: a 16 KiB write continuing where the last one ended (a log append of a
//!   64-command group commit), then `File::sync_data`;
//! - `sync10`: ten 4 KiB overwrites at spread offsets, then `File::sync_data`: what a
//!   small redb commit writes (its header and nine pages);
//! - `immediate`: a redb write transaction shaped like the journal committer's for one
//!   command (the journal blob, the audit record keyed by asset and sequence, the
//!   idempotency index entry under the command's random id, the audit counter),
//!   committed with `Durability::Immediate`;
//! - `immediate_seqkey`: the same with the audit record keyed by sequence alone and no
//!   index entry;
//! - `none`: the same as `immediate` with `Durability::None`;
//! - `batch64`: 64 such commands for 64 different twins in one `Immediate` transaction,
//!   what a group commit for 64 waiting clients writes;
//! - `batch64_noindex`: the same without idempotency index entries (commands sent
//!   without an idempotency key);
//! - `batch64_seqkey`: the same with audit records keyed by sequence alone;
//! - `batch64_none`: `batch64_noindex` committed with `Durability::None`: the page work
//!   of a group commit without its fsync;
//! - `journal`: Doppel's committer thread, one urgent [`JournalWrite`] at a time handed
//!   over and waited for, as a twin does for each command;
//! - `journal64`: the same from 64 threads at once, each its own twin.
//!
//! `cargo bench --bench commit`; `DOPPEL_BENCH_PHASES` (comma-separated names) runs only
//! those phases, e.g. to trace one. The last line is JSON.

use std::fs::File;
use std::io::{Seek, SeekFrom, Write};
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use doppel_runtime::config::JournalSettings;
use doppel_runtime::journal::{Completion, Journal, JournalWrite, Store, Ticket};
use doppel_runtime::{
    AssetPath, AuditKind, AuditRecord, CommandId, Origin, Timestamp, Value, Verdict,
};
use redb::{Database, Durability, TableDefinition};

const JOURNAL: TableDefinition<u64, &[u8]> = TableDefinition::new("journal");
const AUDIT: TableDefinition<(&str, u64), &[u8]> = TableDefinition::new("audit");
const AUDIT_BY_SEQ: TableDefinition<u64, &[u8]> = TableDefinition::new("audit_by_seq");
const COMMANDS: TableDefinition<(&str, &str), u64> = TableDefinition::new("commands");
const META: TableDefinition<&str, u64> = TableDefinition::new("meta");

/// About the size of one command's postcard-encoded audit record.
const RECORD_BYTES: usize = 160;
/// About the size of one command's encoded journal records.
const JOURNAL_BYTES: usize = 48;

fn bench_secs() -> f64 {
    std::env::var("DOPPEL_BENCH_SECS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(3.0)
}

fn asset(twin: u64) -> String {
    format!("bench/plant/line-0/m-{twin}")
}

/// Latencies of one phase in microseconds, sorted, the rate it ran at, and how much
/// other processes wrote to the disks meanwhile (MB/s): the disk is shared, and fsync
/// latency depends on what else is queued.
struct Phase {
    latencies: Vec<f64>,
    per_s: f64,
    foreign_mb_per_s: f64,
}

/// Bytes written to all block devices, and by this process.
fn written_bytes() -> (u64, u64) {
    let disks = std::fs::read_to_string("/proc/diskstats").unwrap_or_default();
    let all: u64 = disks
        .lines()
        .filter_map(|line| {
            let fields: Vec<&str> = line.split_whitespace().collect();
            let name = fields.get(2)?;
            // Whole disks only (a partition's writes are its disk's too).
            let whole = Path::new("/sys/block").join(name).exists()
                && !name.starts_with("loop")
                && !name.starts_with("ram");
            let sectors: u64 = fields.get(9)?.parse().ok()?;
            whole.then_some(sectors * 512)
        })
        .sum();
    let io = std::fs::read_to_string("/proc/self/io").unwrap_or_default();
    let own = io
        .lines()
        .find_map(|line| line.strip_prefix("write_bytes:"))
        .and_then(|n| n.trim().parse().ok())
        .unwrap_or(0);
    (all, own)
}

impl Phase {
    fn percentile(&self, p: f64) -> f64 {
        if self.latencies.is_empty() {
            return f64::NAN;
        }
        self.latencies[((self.latencies.len() as f64 - 1.0) * p).round() as usize]
    }
}

/// Runs `step` back to back for `secs`, timing each call.
fn run(secs: f64, mut step: impl FnMut(u64)) -> Phase {
    // A few untimed steps so file growth and first-touch costs stay out of the figures.
    for n in 0..32 {
        step(n);
    }
    let mut latencies = Vec::new();
    let mut n = 32;
    timed(|| {
        let until = Instant::now() + Duration::from_secs_f64(secs);
        while Instant::now() < until {
            let sent = Instant::now();
            step(n);
            latencies.push(sent.elapsed().as_secs_f64() * 1e6);
            n += 1;
        }
        latencies
    })
}

/// Runs `step` back to back on `threads` threads for `secs`, timing each call.
fn run_parallel(threads: usize, secs: f64, step: impl Fn(usize, u64) + Sync) -> Phase {
    timed(|| {
        let until = Instant::now() + Duration::from_secs_f64(secs);
        let all = Mutex::new(Vec::new());
        std::thread::scope(|scope| {
            for thread in 0..threads {
                let (step, all) = (&step, &all);
                scope.spawn(move || {
                    let mut latencies = Vec::new();
                    let mut n = 0;
                    while Instant::now() < until {
                        let sent = Instant::now();
                        step(thread, n);
                        latencies.push(sent.elapsed().as_secs_f64() * 1e6);
                        n += 1;
                    }
                    all.lock().unwrap().extend(latencies);
                });
            }
        });
        all.into_inner().unwrap()
    })
}

/// Runs `work`, which returns latencies, and notes the rate and the disk's other writes.
fn timed(work: impl FnOnce() -> Vec<f64>) -> Phase {
    let written_before = written_bytes();
    let started = Instant::now();
    let mut latencies = work();
    let elapsed = started.elapsed().as_secs_f64();
    let written_after = written_bytes();
    let foreign = (written_after.0.saturating_sub(written_before.0))
        .saturating_sub(written_after.1.saturating_sub(written_before.1));
    let per_s = latencies.len() as f64 / elapsed;
    latencies.sort_by(f64::total_cmp);
    Phase {
        latencies,
        per_s,
        foreign_mb_per_s: foreign as f64 / elapsed / 1e6,
    }
}

/// `pages` 4 KiB overwrites of a preallocated file, at spread offsets or as one
/// contiguous write, then one `sync_data`.
fn sync_phase(dir: &Path, pages: u64, contiguous: bool, secs: f64) -> Phase {
    let path = dir.join(format!("raw{pages}{contiguous}.bin"));
    let mut file = File::create(&path).unwrap();
    // Preallocated and synced, as redb's file is: the timed writes overwrite, so
    // `sync_data` has no size change to persist.
    file.write_all(&vec![0u8; 1 << 20]).unwrap();
    file.sync_all().unwrap();
    file.seek(SeekFrom::Start(0)).unwrap();
    let page = vec![0xA5u8; 4096];
    let run_of_pages = vec![0xA5u8; 4096 * pages as usize];
    run(secs, |n| {
        if contiguous {
            // Appends to a log that wraps around the file.
            let slot = (n * pages) % (256 - 256 % pages);
            file.write_all_at(&run_of_pages, slot * 4096).unwrap();
            file.sync_data().unwrap();
            return;
        }
        for k in 0..pages {
            // A stride coprime to 256 spreads the pages over the file.
            let slot = (n * pages + k) * 37 % 256;
            file.write_all_at(&page, slot * 4096).unwrap();
        }
        file.sync_data().unwrap();
    })
}

/// How the audit records of a redb phase are laid out.
#[derive(Clone, Copy)]
enum Layout {
    /// As the committer writes them: keyed by (asset, sequence), each indexed under
    /// (asset, command id).
    Current,
    /// Keyed by (asset, sequence), no index entry.
    NoIndex,
    /// Keyed by sequence alone, no index entry.
    SeqKeyed,
}

/// Commits transactions of `commands` commands spread over as many twins, laid out as
/// `layout`, with `durability`.
fn redb_phase(
    dir: &Path,
    name: &str,
    durability: Durability,
    commands: u64,
    layout: Layout,
    secs: f64,
) -> Phase {
    let db = Database::create(dir.join(name)).unwrap();
    let assets: Vec<String> = (0..commands).map(asset).collect();
    let record = vec![0x5Au8; RECORD_BYTES];
    let blob = vec![0x3Cu8; JOURNAL_BYTES * commands as usize];
    let mut seq = 0u64;
    run(secs, |batch| {
        let mut txn = db.begin_write().unwrap();
        txn.set_durability(durability).unwrap();
        {
            txn.open_table(JOURNAL)
                .unwrap()
                .insert(batch, blob.as_slice())
                .unwrap();
            let mut audit = txn.open_table(AUDIT).unwrap();
            let mut by_seq = txn.open_table(AUDIT_BY_SEQ).unwrap();
            let mut index = txn.open_table(COMMANDS).unwrap();
            for asset in &assets {
                seq += 1;
                match layout {
                    Layout::Current => {
                        audit
                            .insert((asset.as_str(), seq), record.as_slice())
                            .unwrap();
                        let id = CommandId::random();
                        index.insert((asset.as_str(), id.0.as_str()), seq).unwrap();
                    }
                    Layout::NoIndex => {
                        audit
                            .insert((asset.as_str(), seq), record.as_slice())
                            .unwrap();
                    }
                    Layout::SeqKeyed => {
                        by_seq.insert(seq, record.as_slice()).unwrap();
                    }
                }
            }
            txn.open_table(META)
                .unwrap()
                .insert("next_audit", seq + 1)
                .unwrap();
        }
        txn.commit().unwrap();
    })
}

/// One command's journal write for `twin`, replying on `done` once durable.
fn command_write(twin: u64, n: u64, done: std::sync::mpsc::SyncSender<bool>) -> JournalWrite {
    let speed = Value::Float(1000.0 + (n % 500) as f64);
    JournalWrite {
        twin: twin as u32,
        // Stands in for the encoded desired-value change the twin journals.
        records: vec![0x3Cu8; JOURNAL_BYTES],
        events: 1,
        audit: vec![AuditRecord {
            seq: 0,
            at: Timestamp::now(),
            asset: AssetPath::parse(&asset(twin)).unwrap(),
            kind: AuditKind::Command,
            command_id: CommandId::random(),
            command: "set_speed".into(),
            requested: vec![("rpm".into(), speed)],
            origin: Origin::operator("bench"),
            state_version: n,
            models: Vec::new(),
            verdict: Verdict::Accepted,
            applied: vec![("speed".into(), speed)],
            reason: String::new(),
        }],
        snapshot: None,
        ticket: Ticket::none(),
        completion: Completion::Reply(Box::new(move |result| {
            let _ = done.send(result.is_ok());
        })),
        urgent: true,
        mirror: None,
        // As for a command sent without an idempotency key.
        index_commands: false,
    }
}

/// Commands from `clients` threads through Doppel's committer, each waiting for its
/// write to be durable before the next.
fn journal_phase(dir: &Path, name: &str, clients: usize, secs: f64) -> Phase {
    let store = Store::open(&dir.join(name)).unwrap();
    let journal = Journal::start(store, &JournalSettings::default()).unwrap();
    let call = |twin: usize, n: u64| {
        let (done, wait) = std::sync::mpsc::sync_channel(1);
        journal.write(command_write(twin as u64, n, done));
        assert!(wait.recv().unwrap(), "journal commit failed");
    };
    let phase = if clients == 1 {
        run(secs, |n| call(0, n))
    } else {
        run_parallel(clients, secs, call)
    };
    journal.stop();
    phase
}

/// A named phase, run on demand.
type Runner<'a> = Box<dyn Fn() -> Phase + 'a>;

fn main() {
    let secs = bench_secs();
    let target = Path::new(env!("CARGO_MANIFEST_DIR")).join("target");
    let places = [
        ("tmp", tempfile::tempdir_in("/tmp").unwrap()),
        ("target", tempfile::tempdir_in(&target).unwrap()),
    ];
    let selected = std::env::var("DOPPEL_BENCH_PHASES").ok();
    let wanted = |name: &str| {
        selected
            .as_deref()
            .is_none_or(|list| list.split(',').any(|n| n.trim() == name))
    };
    let mut json = String::from("{\"scenario\":\"commit\"");
    for (place, dir) in &places {
        let dir = dir.path();
        let immediate = Durability::Immediate;
        let runners: [(&str, Runner<'_>); 12] = [
            ("sync", Box::new(|| sync_phase(dir, 1, false, secs))),
            ("sync4c", Box::new(|| sync_phase(dir, 4, true, secs))),
            ("sync10", Box::new(|| sync_phase(dir, 10, false, secs))),
            (
                "immediate",
                Box::new(|| redb_phase(dir, "imm.redb", immediate, 1, Layout::Current, secs)),
            ),
            (
                "immediate_seqkey",
                Box::new(|| redb_phase(dir, "imms.redb", immediate, 1, Layout::SeqKeyed, secs)),
            ),
            (
                "none",
                Box::new(|| {
                    redb_phase(dir, "none.redb", Durability::None, 1, Layout::Current, secs)
                }),
            ),
            (
                "batch64",
                Box::new(|| redb_phase(dir, "b64.redb", immediate, 64, Layout::Current, secs)),
            ),
            (
                "batch64_noindex",
                Box::new(|| redb_phase(dir, "b64n.redb", immediate, 64, Layout::NoIndex, secs)),
            ),
            (
                "batch64_seqkey",
                Box::new(|| redb_phase(dir, "b64s.redb", immediate, 64, Layout::SeqKeyed, secs)),
            ),
            (
                "batch64_none",
                Box::new(|| {
                    redb_phase(
                        dir,
                        "b64x.redb",
                        Durability::None,
                        64,
                        Layout::NoIndex,
                        secs,
                    )
                }),
            ),
            (
                "journal",
                Box::new(|| journal_phase(dir, "j1.redb", 1, secs)),
            ),
            (
                "journal64",
                Box::new(|| journal_phase(dir, "j64.redb", 64, secs)),
            ),
        ];
        for (name, runner) in &runners {
            if !wanted(name) {
                continue;
            }
            let phase = runner();
            let (p50, p99, p999) = (
                phase.percentile(0.5),
                phase.percentile(0.99),
                phase.percentile(0.999),
            );
            println!(
                "{place:>6} {name:>11}: {:>8.0}/s p50 {p50:>6.0} µs p99 {p99:>6.0} µs p99.9 {p999:>6.0} µs max {:>6.0} µs (others wrote {:>4.0} MB/s)",
                phase.per_s,
                phase.latencies.last().copied().unwrap_or(f64::NAN),
                phase.foreign_mb_per_s,
            );
            json.push_str(&format!(
                ",\"{place}_{name}_p50_us\":{p50:.0},\"{place}_{name}_p99_us\":{p99:.0},\"{place}_{name}_p999_us\":{p999:.0},\"{place}_{name}_per_s\":{:.0}",
                phase.per_s
            ));
        }
    }
    json.push('}');
    println!("{json}");
}
