//! Where an idle twin's memory goes (scenario harness), counted by the allocator.
//!
//! The binary's allocator (mimalloc) is wrapped in one that counts live heap bytes.
//! For `DOPPEL_BENCH_TWINS` twins (default 20,000) of `examples/node`'s press type, it
//! measures, per twin:
//!
//! - **actors**: starting the node (`Runtime::start`), less the state below: each
//!   twin's actor (its task, mailbox and supervision channels), the line and plant
//!   actors' share, the status board;
//! - **state**: recovering the twins' state without starting them (`Twins::open`, on
//!   another data directory): channels, desired and derived values, models, governors,
//!   the directory entry;
//! - **history**: after one reading on every channel of every twin, the part the
//!   history rings and sequence windows added.
//!
//! Resident memory per twin (what the allocator holds from the system, as `/proc`
//! shows it, while the node starts on fresh pages) is reported beside the live heap, and so are the inline sizes of a twin's
//! core and of a sample. The baseline, in the same run, is the same measurement for 10
//! twins. The last line is JSON.

use std::fmt::Write as _;

use cap::Cap;
use doppel::{Quality, Reading, Runtime, RuntimeSettings, Timestamp, Topology, TwinTypes};
use doppel_runtime::internal::TwinCore;
use doppel_runtime::sample::Sample;
use doppel_runtime::twin::Twins;

/// The binary's allocator, counted.
#[global_allocator]
static ALLOCATOR: Cap<mimalloc::MiMalloc> = Cap::new(mimalloc::MiMalloc, usize::MAX);

const TYPES: &str = include_str!("../examples/node/types.toml");

fn plant(twins: usize) -> String {
    let mut toml = String::from("[[plant]]\npath = \"acme/plant-a\"\n");
    for line in 0..twins.div_ceil(1000) {
        let _ = write!(toml, "[[plant.line]]\nname = \"line-{line}\"\n");
        for press in 0..1000.min(twins - line * 1000) {
            let _ = write!(
                toml,
                "[[plant.line.machine]]\nname = \"press-{press}\"\ntype = \"press\"\n"
            );
        }
    }
    toml
}

/// Live heap bytes.
fn live() -> i64 {
    ALLOCATOR.allocated() as i64
}

fn rss_bytes() -> i64 {
    std::fs::read_to_string("/proc/self/statm")
        .ok()
        .and_then(|s| s.split_whitespace().nth(1)?.parse::<i64>().ok())
        .map_or(0, |pages| pages * 4096)
}

/// Bytes per twin of each part.
#[derive(Debug, Clone, Copy)]
struct PerTwin {
    state: f64,
    actors: f64,
    history: f64,
    rss: f64,
}

async fn measure(twins: usize) -> PerTwin {
    let types = TwinTypes::from_toml(TYPES, "types.toml").unwrap();
    let topology = Topology::from_toml(&plant(twins), "plant.toml", &types).unwrap();
    let machines: Vec<_> = topology
        .machines()
        .map(|m| (m.path.clone(), m.twin_type.clone()))
        .collect();
    let per = |bytes: i64| bytes as f64 / twins as f64;

    // The running node.
    let dir = tempfile::tempdir().unwrap();
    let (before, rss_before) = (live(), rss_bytes());
    let runtime = Runtime::builder()
        .twin_types(types.clone())
        .topology(topology.clone())
        .data_dir(dir.path())
        .settings(RuntimeSettings::default())
        .start()
        .await
        .unwrap();
    tokio::time::sleep(std::time::Duration::from_secs(1)).await;
    let (after, rss_after) = (live(), rss_bytes());
    let running = per(after - before);
    let rss = per(rss_after - rss_before);

    // One reading on every channel.
    let twins_handle = runtime.twins().clone();
    let source = twins_handle.source("bench").unwrap();
    let now = Timestamp::now();
    let mut seq = 0;
    for machine in topology.machines() {
        let batch: Vec<_> = [
            "temperature",
            "temperature_b",
            "vibration",
            "power_kw",
            "throughput",
        ]
        .iter()
        .map(|channel| {
            seq += 1;
            let target = twins_handle.target(&machine.path, channel).unwrap();
            (
                target,
                Reading {
                    value: 1.0,
                    source_time: now,
                    quality: Quality::Good,
                    source,
                    epoch: 0,
                    seq,
                    stamped: true,
                },
            )
        })
        .collect();
        twins_handle
            .ingest_batch(batch)
            .await
            .unwrap()
            .receipt
            .durable()
            .await
            .unwrap();
    }
    tokio::time::sleep(std::time::Duration::from_secs(1)).await;
    let history = per(live() - after);
    drop(twins_handle);
    runtime.shutdown().await;
    // State only, after the node stopped (its memory measured first, on fresh pages).
    let dir = tempfile::tempdir().unwrap();
    let before = live();
    let (path, open_types) = (dir.path().to_path_buf(), types.clone());
    let components = Runtime::builder().components().clone();
    let recovered = tokio::task::spawn_blocking(move || {
        Twins::open(
            &path,
            &open_types,
            &machines,
            components,
            RuntimeSettings::default(),
        )
        .unwrap()
    })
    .await
    .unwrap();
    let after = live();
    let state = per(after - before);
    tokio::task::spawn_blocking(move || drop(recovered))
        .await
        .unwrap();

    let actors = running - state;
    PerTwin {
        state,
        actors,
        history,
        rss,
    }
}

fn main() {
    let twins = std::env::var("DOPPEL_BENCH_TWINS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(20_000usize)
        .max(20);
    let tokio = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    tokio.block_on(async move {
        let baseline = measure(10).await;
        let large = measure(twins).await;
        for (name, m) in [("10 twins", baseline), (&*format!("{twins} twins"), large)] {
            println!(
                "{name}: per twin, state {:.0} B, actors {:.0} B, \
                 history after one reading per channel {:.0} B; resident {:.0} B",
                m.state, m.actors, m.history, m.rss
            );
        }
        println!(
            "inline sizes: TwinCore {} B, Sample {} B",
            std::mem::size_of::<TwinCore>(),
            std::mem::size_of::<Sample>()
        );
        println!(
            "{{\"scenario\":\"twin_memory\",\"twins\":{twins},\"state_bytes\":{:.0},\"actor_bytes\":{:.0},\"history_bytes\":{:.0},\"rss_bytes\":{:.0},\"baseline_state_bytes\":{:.0},\"baseline_actor_bytes\":{:.0},\"heap_ratio\":{:.2}}}",
            large.state,
            large.actors,
            large.history,
            large.rss,
            baseline.state,
            baseline.actors,
            (large.state + large.actors) / (baseline.state + baseline.actors),
        );
    });
}
