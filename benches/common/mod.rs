//! Pieces the scenario benchmarks share.

use std::fmt::Write as _;

#[allow(
    dead_code,
    reason = "every bench includes this module; not all of them host the machine type"
)]
pub mod machine;

/// The allocator the `doppel` binary runs with, so the benchmarks measure what it ships.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// CPU time this process has used, threads that ended included, in clock ticks
/// (1/100 s): utime and stime of `/proc/self/stat`, fields 14 and 15 of the line.
#[allow(
    dead_code,
    reason = "every bench includes this module; not all of them measure CPU"
)]
pub fn process_cpu_ticks() -> u64 {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    let fields: Vec<u64> = stat
        .rsplit_once(')')
        .map_or("", |(_, rest)| rest)
        .split_whitespace()
        .map(|n| n.parse().unwrap_or(0))
        .collect();
    fields.get(11).copied().unwrap_or(0) + fields.get(12).copied().unwrap_or(0)
}

/// A good reading of `value` from `source`, measured now, with sequence number `seq`.
#[allow(
    dead_code,
    reason = "every bench includes this module; not all of them ingest"
)]
pub fn reading(value: f64, source: doppel::SourceId, seq: u64) -> doppel::Reading {
    doppel::Reading {
        value,
        source_time: doppel::Timestamp::now(),
        quality: doppel::Quality::Good,
        source,
        epoch: 0,
        seq,
        stamped: true,
    }
}

/// A number from the environment, or `default`.
pub fn env_or(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// A plant `bench/plant` of `twins` machines of type `machine`, 100 to a line.
#[allow(
    dead_code,
    reason = "every bench includes this module; not all of them host twins"
)]
pub fn topology_toml(twins: usize) -> String {
    let mut toml = String::from("[[plant]]\npath = \"bench/plant\"\n");
    let per_line = 100;
    for line in 0..twins.div_ceil(per_line) {
        let _ = write!(toml, "[[plant.line]]\nname = \"line-{line}\"\n");
        for machine in 0..per_line.min(twins - line * per_line) {
            let _ = write!(
                toml,
                "[[plant.line.machine]]\nname = \"m-{machine}\"\ntype = \"machine\"\n"
            );
        }
    }
    toml
}
