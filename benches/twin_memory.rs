//! Where an idle twin's memory goes (scenario harness), counted by the allocator.
//!
//! The binary's allocator (mimalloc) is wrapped in one that counts live heap bytes.
//! For `DOPPEL_BENCH_TWINS` twins (default 20,000) of each of two types — the
//! benchmark machine of 20 channels (`benches/common/machine.rs`, the ingest
//! benchmark's) and `examples/node`'s press of 5 — it measures, per twin:
//!
//! - the twin's parts, each built on its own in this process: its **state** (channels,
//!   desired values, path), its **models**, its **governors**, the rest of its **core**
//!   (derived values, model bookkeeping), and the core's **inline** size;
//! - **one reading** per channel: what applying it added (current values, history,
//!   sequence windows, model state), and **full history**: what twice as many readings
//!   as the node's default history capacity added on top (every channel's ring full
//!   and turned over);
//! - the **node**: the live heap of a node of those twins once idle (`Runtime::start`,
//!   then 5 s idle), less that of a node of 10, per twin more, less the cores above:
//!   each twin's actor (its task and mailbox), its directory entry, its line's
//!   supervision, its share of the journal's cache;
//! - **resident**: the same difference of what the two processes hold from the system
//!   (`/proc`): what it holds beyond the live heap is the allocator's overhead.
//!
//! Each node runs in a process of its own (this binary, told which by
//! `DOPPEL_TWIN_MEMORY_NODE`), so neither reuses pages the other freed.
//!
//! The baseline, in the same run, is the heap of a bare ractor actor (unit state) per
//! twin, spawned the same number of times: `actor_ratio` is the node's per-twin cost
//! beyond the core over it. The last line is JSON (the machine's figures, and the
//! press's with a `press_` prefix).

#[path = "common/machine.rs"]
mod machine;

use std::fmt::Write as _;

use cap::Cap;
use doppel::{AssetPath, Runtime, RuntimeSettings, Timestamp, Topology, TwinTypes};
use doppel_runtime::internal::{Effects, TwinCore};
use doppel_runtime::sample::{ChannelId, Quality, Sample, SourceId};
use doppel_runtime::twin::TwinState;
use ractor::{Actor, ActorProcessingErr, ActorRef};

/// The binary's allocator, counted.
#[global_allocator]
static ALLOCATOR: Cap<mimalloc::MiMalloc> = Cap::new(mimalloc::MiMalloc, usize::MAX);

const PRESS_TYPES: &str = include_str!("../examples/node/types.toml");

/// A plant of `twins` machines of `twin_type`, 1,000 to a line.
fn plant(twin_type: &str, twins: usize) -> String {
    let mut toml = String::from("[[plant]]\npath = \"acme/plant-a\"\n");
    for line in 0..twins.div_ceil(1000) {
        let _ = write!(toml, "[[plant.line]]\nname = \"line-{line}\"\n");
        for machine in 0..1000.min(twins - line * 1000) {
            let _ = write!(
                toml,
                "[[plant.line.machine]]\nname = \"m-{machine}\"\ntype = \"{twin_type}\"\n"
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
#[derive(Debug, Clone, Copy, Default)]
struct PerTwin {
    state: f64,
    models: f64,
    governors: f64,
    core: f64,
    inline: f64,
    reading: f64,
    full_history: f64,
    node: f64,
    rss: f64,
}

impl PerTwin {
    /// Live heap of an idle twin: its core and its share of the node.
    fn idle(&self) -> f64 {
        self.state + self.models + self.governors + self.core + self.inline + self.node
    }
}

/// The heap each of `n` values that `build` makes holds beyond its own size.
fn heap_of<T>(n: usize, build: impl FnMut(usize) -> T) -> f64 {
    let before = live();
    let values: Vec<T> = (0..n).map(build).collect();
    let held = (live() - before) as f64 / n as f64 - std::mem::size_of::<T>() as f64;
    drop(values);
    held
}

/// The twin's parts, built on their own: `n` cores of `twin_type`.
fn parts(types: &TwinTypes, twin_type: &str, n: usize, per: impl Fn(i64) -> f64) -> PerTwin {
    let components = Runtime::builder().components().clone();
    let twin_type = types.get(twin_type).unwrap().clone();
    let capacity = RuntimeSettings::default().history_capacity;
    let paths: Vec<AssetPath> = (0..n)
        .map(|i| {
            AssetPath::parse(&format!("acme/plant-a/line-{}/m-{}", i / 1000, i % 1000)).unwrap()
        })
        .collect();
    let mut m = PerTwin {
        state: heap_of(n, |i| {
            TwinState::new(paths[i].clone(), &twin_type, capacity)
        }),
        models: heap_of(n, |_| components.build_models(&twin_type).unwrap()),
        governors: heap_of(n, |_| components.build_governors(&twin_type).unwrap()),
        ..PerTwin::default()
    };

    let before = live();
    let mut cores: Vec<TwinCore> = paths
        .iter()
        .enumerate()
        .map(|(id, path)| {
            TwinCore::new(
                id as u32,
                path.clone(),
                twin_type.clone(),
                components.build_models(&twin_type).unwrap(),
                components.build_governors(&twin_type).unwrap(),
                capacity,
            )
        })
        .collect();
    m.inline = std::mem::size_of::<TwinCore>() as f64;
    m.core = per(live() - before) - m.inline - m.state - m.models - m.governors;

    // Readings of one source, a second apart, oldest first.
    let channels = twin_type.channels.len();
    let start = Timestamp::now().as_micros() - 2 * capacity as i64 * 1_000_000;
    let feed = |cores: &mut [TwinCore], round: usize| {
        for core in cores.iter_mut() {
            let mut fx = Effects::default();
            for channel in 0..channels {
                let at = Timestamp(start + round as i64 * 1_000_000);
                let sample = Sample {
                    channel: ChannelId(channel as u16),
                    value: 1.0 + round as f64 * 0.01,
                    source_time: at,
                    receive_time: at,
                    quality: Quality::Good,
                    source: SourceId(1),
                    epoch: 0,
                    seq: (round * channels + channel + 1) as u64,
                    stamped: true,
                };
                core.apply_sample(&sample, &mut fx);
            }
        }
    };
    let before = live();
    feed(&mut cores, 0);
    m.reading = per(live() - before);
    // Twice the capacity: the rings are full and have turned over.
    let before = live();
    for round in 1..2 * capacity {
        feed(&mut cores, round);
    }
    m.full_history = per(live() - before);
    drop(cores);
    m
}

/// The environment variable that makes this binary measure one node and print its
/// live heap and resident bytes: `<type>:<twins>`.
const CHILD: &str = "DOPPEL_TWIN_MEMORY_NODE";

/// How long a node idles before it is measured, as the scale benchmark's does.
const IDLE: std::time::Duration = std::time::Duration::from_secs(5);

/// In a process of its own (this binary again), a node of `twins` twins of
/// `twin_type`, idle for a second: (live heap, resident) bytes of the whole process.
fn node(twin_type: &str, twins: usize) -> (i64, i64) {
    let output = std::process::Command::new(std::env::current_exe().unwrap())
        .env(CHILD, format!("{twin_type}:{twins}"))
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&output.stdout);
    let figures: Vec<i64> = text
        .lines()
        .last()
        .unwrap_or_default()
        .split_whitespace()
        .filter_map(|n| n.parse().ok())
        .collect();
    assert!(
        figures.len() == 2,
        "the node of {twins} {twin_type}s did not report: {text}{}",
        String::from_utf8_lossy(&output.stderr)
    );
    (figures[0], figures[1])
}

/// The child's side of [`node`].
async fn run_node(twin_type: &str, twins: usize) {
    let types = types_of(twin_type);
    let topology = Topology::from_toml(&plant(twin_type, twins), "plant.toml", &types).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let runtime = Runtime::builder()
        .twin_types(types)
        .topology(topology)
        .data_dir(dir.path())
        .settings(RuntimeSettings::default())
        .start()
        .await
        .unwrap();
    tokio::time::sleep(IDLE).await;
    println!("{} {}", live(), rss_bytes());
    runtime.shutdown().await;
}

fn types_of(twin_type: &str) -> TwinTypes {
    let toml = match twin_type {
        "machine" => machine::types_toml(),
        _ => PRESS_TYPES.to_string(),
    };
    TwinTypes::from_toml(&toml, "types.toml").unwrap()
}

/// The parts of `twins` twins of `twin_type`, then a node of them against one of 10.
async fn measure(twin_type: &str, twins: usize) -> PerTwin {
    let types = types_of(twin_type);
    let per = move |bytes: i64| bytes as f64 / twins as f64;
    let mut m = {
        let twin_type = twin_type.to_string();
        tokio::task::spawn_blocking(move || parts(&types, &twin_type, twins, per))
            .await
            .unwrap()
    };
    let (small_live, small_rss) = node(twin_type, 10);
    let (large_live, large_rss) = node(twin_type, twins);
    let extra = (twins - 10) as f64;
    m.node = (large_live - small_live) as f64 / extra
        - (m.state + m.models + m.governors + m.core + m.inline);
    m.rss = (large_rss - small_rss) as f64 / extra;
    m
}

/// A ractor actor with nothing in it.
struct Bare;

impl Actor for Bare {
    type Msg = ();
    type State = ();
    type Arguments = ();

    async fn pre_start(&self, _: ActorRef<()>, _: ()) -> Result<(), ActorProcessingErr> {
        Ok(())
    }
}

/// Live heap per bare ractor actor, for `n` of them.
async fn bare_actor(n: usize) -> f64 {
    let before = live();
    let mut actors = Vec::with_capacity(n);
    for _ in 0..n {
        actors.push(Actor::spawn(None, Bare, ()).await.unwrap());
    }
    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    let per = (live() - before) as f64 / n as f64 - std::mem::size_of_val(&actors[0]) as f64;
    for (actor, handle) in actors {
        actor.stop(None);
        let _ = handle.await;
    }
    per
}

impl PerTwin {
    /// Each figure with its JSON key.
    fn fields(&self) -> [(&'static str, f64); 10] {
        [
            ("state_bytes", self.state),
            ("model_bytes", self.models),
            ("governor_bytes", self.governors),
            ("core_bytes", self.core),
            ("inline_bytes", self.inline),
            ("node_bytes", self.node),
            ("idle_bytes", self.idle()),
            ("rss_bytes", self.rss),
            ("reading_bytes", self.reading),
            ("full_history_bytes", self.full_history),
        ]
    }

    fn print(&self, name: &str) {
        println!(
            "{name}: per twin, state {:.0} B, models {:.0} B, governors {:.0} B, core {:.0} B, \
             inline {:.0} B, node (actor, mailbox, entry, supervision) {:.0} B: idle {:.0} B live, \
             {:.0} B resident (allocator overhead {:.0} B); one reading per channel +{:.0} B, \
             full history rings +{:.0} B",
            self.state,
            self.models,
            self.governors,
            self.core,
            self.inline,
            self.node,
            self.idle(),
            self.rss,
            self.rss - self.idle(),
            self.reading,
            self.full_history,
        );
    }

    /// The figures as JSON members, keys prefixed with `prefix`.
    fn json(&self, prefix: &str) -> String {
        self.fields()
            .iter()
            .map(|(key, value)| format!("\"{prefix}{key}\":{value:.0}"))
            .collect::<Vec<_>>()
            .join(",")
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
        if let Ok(child) = std::env::var(CHILD) {
            let (twin_type, count) = child.split_once(':').unwrap();
            run_node(twin_type, count.parse().unwrap()).await;
            return;
        }
        let baseline = bare_actor(twins).await;
        let machine = measure("machine", twins).await;
        let press = measure("press", twins).await;
        machine.print(&format!("{twins} twins of {} channels", machine::CHANNELS));
        press.print(&format!("{twins} presses of 5 channels"));
        println!(
            "baseline: a bare ractor actor {baseline:.0} B; inline sizes: Sample {} B",
            std::mem::size_of::<Sample>()
        );
        println!(
            "{{\"scenario\":\"twin_memory\",\"twins\":{twins},{},{},\"baseline_actor_bytes\":{baseline:.0},\"actor_ratio\":{:.2}}}",
            machine.json(""),
            press.json("press_"),
            machine.node / baseline,
        );
    });
}
