//! Cluster benchmark (scenario harness): one edge node hosting 1,000 press twins and one
//! cloud node mirroring them, both in this process, each with its own redb file in a
//! temp dir, talking real gRPC and gossip over loopback. Everything runs on one Tokio
//! runtime of two workers (one per core here), so the edge, the link and the mirror
//! share the machine's two cores.
//!
//! **A change** is one applied sample: a reading that became a channel's current value
//! on the edge. Every ingest message carries one reading of each of the twin type's
//! five channels for one twin, so each twin message produces exactly one mirror update
//! holding five reported changes. The mirror counts updates ([`MirrorStats::applied`]);
//! changes are that count × 5. The bench checks the premises: every sample the edge
//! took was applied (none stale or duplicate), the outbox was never compacted, and once
//! drained the mirror applied exactly one update per message the edge took.
//!
//! 1. **replicated_per_s**: the edge ingests as fast as it takes readings (batches of
//!    100 twins, a bounded number of receipts outstanding) while the link is up; after
//!    a warm-up, the changes committed (`Durability::Immediate`) to the cloud's mirror
//!    over a fixed window, per second. Baseline in the same run, before the cluster
//!    starts: the same node and workload with replication off (a plain node, no
//!    outbox), its durable ingest rate over the same window.
//! 2. **drain_vs_live**: the edge ingests at a paced live rate; the cloud's NodeService
//!    is reached through a TCP proxy that stops moving bytes (a WAN that drops every
//!    packet, shorter than the HTTP/2 keep-alive timeout, so the stream survives) for a
//!    few seconds while the edge keeps ingesting. Just before the heal, the backlog is
//!    counted exactly in the edge's outbox: the reported changes of every entry after
//!    what the mirror holds durably, up to the outbox head. Drain time runs from the
//!    heal until the mirror holds that head durably. drain_vs_live = (backlog / drain
//!    time) / live rate.
//! 3. **fwd / direct**: one client, sequential `set_speed` commands (operator token,
//!    inside the envelope, so accepted) interleaved: one to the cloud's public API,
//!    which forwards it to the edge whose governors decide and whose journal makes the
//!    verdict durable, one to the edge's own API as the baseline; no ingest meanwhile.
//!    To show where the time goes, the same rounds also time the command decided in
//!    process on the edge (`Twins::command`: mailbox, governors, durable commit) and a
//!    gRPC health check on the edge's API (the transport's floor).
//!
//! Beside each rate, the CPU the whole process spent per change (or per durable
//! verdict), split into the edge's journal committer, the cloud's mirror writer and
//! the rest (Tokio workers: twin and line actors, gRPC, the link), read from `/proc`:
//! on two shared cores the rates follow the CPU cost, and the split says whose it is.
//!
//! `cargo bench --bench cluster`; `DOPPEL_BENCH_TWINS` (1000), `DOPPEL_BENCH_SECS`
//! (measuring window, 10), `DOPPEL_BENCH_LIVE` (live changes/s, 20000),
//! `DOPPEL_BENCH_PARTITION_SECS` (4), `DOPPEL_BENCH_COMMANDS` (3000 of each kind) and
//! `DOPPEL_BENCH_OUTSTANDING` (ingest calls of 500 readings awaiting durability, 128)
//! scale it. The last line is JSON.

mod common;

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use common::{env_or, process_cpu_ticks, topology_toml};
use doppel::cluster::mirror::{MirrorStats, MirrorStore};
use doppel::kernel::internal::TwinsInternals;
use doppel::{
    AssetPath, Command, Node, NodeConfig, Origin, Quality, Reading, SourceId, Timestamp,
    TwinChange, Twins, Verdict,
};
use doppel_api::health::pb::HealthCheckRequest;
use doppel_api::health::pb::health_client::HealthClient;
use doppel_proto::v1::twin_service_client::TwinServiceClient;
use doppel_proto::v1::verdict::Outcome;
use doppel_proto::v1::{NamedValue, SendCommandRequest, Value, value};
use doppel_runtime::journal::Receipt;
use doppel_runtime::twin::ChannelTarget;
use doppel_testkit::net::{free_tcp_port, free_udp_port};
use doppel_testkit::proxy::PartitionProxy;
use doppel_testkit::{twin_types, wait_until};
use tonic::transport::Channel;

/// The press type's channels, one reading of each per ingest message.
const CHANNELS: [&str; 5] = [
    "temperature",
    "temperature_b",
    "vibration",
    "power_kw",
    "throughput",
];

/// The test press with its standard models and governors, named `machine` for the
/// shared plant generator.
fn types() -> String {
    twin_types::renamed(&twin_types::press(), "machine")
}

const TOKEN: &str = "bench-operator-token-0123456789";
const CLUSTER_ID: &str = "bench-cluster";
const EDGE_ID: &str = "edge-1";
const CLOUD_ID: &str = "cloud-1";

/// Twins per ingest call.
const BATCH_TWINS: usize = 100;
/// Warm-up before a measuring window.
const WARM_UP: Duration = Duration::from_secs(3);
/// Live ingest before the partition, to start it from a caught-up mirror.
const STEADY: Duration = Duration::from_secs(2);
/// Commands of each kind sent before the timed ones.
const WARM_UP_COMMANDS: usize = 200;

/// What the load generator shares with the measuring task.
#[derive(Default)]
struct Progress {
    /// Ingest messages (one twin's five readings) handed to the edge.
    messages: AtomicU64,
    /// Samples whose receipts resolved durable.
    durable_samples: AtomicU64,
    stop: AtomicBool,
}

/// Resolved ingest targets of every twin, and a sequence that only grows.
#[derive(Clone)]
struct Load {
    twins: Twins,
    targets: Arc<Vec<[ChannelTarget; CHANNELS.len()]>>,
    source: SourceId,
    seq: Arc<AtomicU64>,
}

impl Load {
    fn new(twins: &Twins, paths: &[AssetPath]) -> Self {
        let targets = paths
            .iter()
            .map(|path| CHANNELS.map(|channel| twins.target(path, channel).unwrap()))
            .collect();
        Self {
            twins: twins.clone(),
            targets: Arc::new(targets),
            source: twins.source("bench").unwrap(),
            seq: Arc::new(AtomicU64::new(1)),
        }
    }

    /// One ingest call of `messages` messages from twin `first` on (round robin);
    /// returns its receipt and sample count.
    async fn ingest(&self, first: usize, messages: usize) -> (Receipt, u64) {
        let now = Timestamp::now();
        let mut readings = Vec::with_capacity(messages * CHANNELS.len());
        let seq = self
            .seq
            .fetch_add((messages * CHANNELS.len()) as u64, Ordering::Relaxed);
        for message in 0..messages {
            let twin = (first + message) % self.targets.len();
            for (channel, target) in self.targets[twin].iter().enumerate() {
                let seq = seq + (message * CHANNELS.len() + channel) as u64;
                let wobble = (seq % 17) as f64 / 17.0;
                let value = match channel {
                    0 => 50.0 + wobble,
                    1 => 50.3 + wobble,
                    2 => 2.0 + wobble * 0.2,
                    3 => 120.0 + wobble * 10.0,
                    _ => 70.0 + wobble * 5.0,
                };
                readings.push((
                    *target,
                    Reading {
                        value,
                        source_time: now,
                        quality: Quality::Good,
                        source: self.source,
                        epoch: 0,
                        seq,
                        stamped: true,
                    },
                ));
            }
        }
        let batch = self.twins.ingest_batch(readings).await.unwrap();
        assert!(batch.rejected.is_empty(), "{:?}", batch.rejected);
        (batch.receipt, batch.accepted as u64)
    }

    /// Ingests until `progress.stop`: as fast as the edge takes it, or paced at
    /// `rate` changes per second. Returns once every receipt resolved.
    async fn drive(self, rate: Option<f64>, progress: Arc<Progress>) {
        // Ingest calls whose receipts may be outstanding.
        let max_outstanding = env_or("DOPPEL_BENCH_OUTSTANDING", 128);
        let mut outstanding: VecDeque<(Receipt, u64)> = VecDeque::new();
        let mut cursor = 0usize;
        let started = Instant::now();
        let mut sent_samples = 0u64;
        let mut tick = tokio::time::interval(Duration::from_millis(5));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        while !progress.stop.load(Ordering::Relaxed) {
            let messages = match rate {
                None => BATCH_TWINS,
                Some(rate) => {
                    tick.tick().await;
                    let due = (rate * started.elapsed().as_secs_f64()) as u64;
                    let messages =
                        (due.saturating_sub(sent_samples) / CHANNELS.len() as u64) as usize;
                    if messages == 0 {
                        continue;
                    }
                    messages.min(self.targets.len())
                }
            };
            let mut left = messages;
            while left > 0 {
                let take = left.min(BATCH_TWINS);
                let (receipt, samples) = self.ingest(cursor, take).await;
                cursor = (cursor + take) % self.targets.len();
                sent_samples += samples;
                left -= take;
                progress.messages.fetch_add(take as u64, Ordering::Relaxed);
                outstanding.push_back((receipt, samples));
                while outstanding.len() > max_outstanding {
                    let (receipt, samples) = outstanding.pop_front().unwrap();
                    receipt.durable().await.unwrap();
                    progress
                        .durable_samples
                        .fetch_add(samples, Ordering::Relaxed);
                }
            }
        }
        for (receipt, samples) in outstanding {
            receipt.durable().await.unwrap();
            progress
                .durable_samples
                .fetch_add(samples, Ordering::Relaxed);
        }
    }
}

/// Starts `load` in a task; the handle stops it.
fn start_load(load: &Load, rate: Option<f64>) -> (Arc<Progress>, tokio::task::JoinHandle<()>) {
    let progress = Arc::new(Progress::default());
    let task = tokio::spawn(load.clone().drive(rate, progress.clone()));
    (progress, task)
}

async fn stop_load(progress: &Progress, task: tokio::task::JoinHandle<()>) {
    progress.stop.store(true, Ordering::Relaxed);
    task.await.unwrap();
}

/// CPU time this process used, in seconds: in all, and by the journal committers
/// (the edge's; the cloud node's own runtime hosts no twins and its committer idles)
/// and the cloud's mirror writer, threads of their own.
#[derive(Debug, Clone, Copy, Default)]
struct Cpu {
    total: f64,
    journal: f64,
    mirror_writer: f64,
}

impl Cpu {
    /// Now. The process total comes from `/proc/self/stat` (clock ticks of 1/100 s,
    /// threads that ended included), the threads' from their `schedstat` (ns).
    fn now() -> Self {
        let mut cpu = Cpu {
            total: process_cpu_ticks() as f64 / 100.0,
            ..Cpu::default()
        };
        for task in std::fs::read_dir("/proc/self/task")
            .into_iter()
            .flatten()
            .flatten()
        {
            let comm = std::fs::read_to_string(task.path().join("comm")).unwrap_or_default();
            let slot = match comm.trim() {
                "doppel-journal" => &mut cpu.journal,
                // Thread names are cut at 15 bytes.
                "doppel-mirror-w" => &mut cpu.mirror_writer,
                _ => continue,
            };
            let ns = std::fs::read_to_string(task.path().join("schedstat"))
                .ok()
                .and_then(|s| s.split_whitespace().next()?.parse::<f64>().ok())
                .unwrap_or(0.0);
            *slot += ns / 1e9;
        }
        cpu
    }

    fn since(self, before: Cpu) -> Cpu {
        Cpu {
            total: self.total - before.total,
            journal: self.journal - before.journal,
            mirror_writer: self.mirror_writer - before.mirror_writer,
        }
    }
}

/// What one measuring window saw.
struct Window {
    /// Samples durable at the edge per second.
    edge_per_s: f64,
    /// Changes durable in the mirror per second, when there is one.
    mirror_per_s: Option<f64>,
    /// CPU used during the window, per change durable at the edge, in µs.
    cpu_us_per_change: Cpu,
    /// The whole run's counters (warm-up included).
    progress: Arc<Progress>,
}

/// Runs a full-speed load for a warm-up and a window.
async fn full_speed(load: &Load, window: Duration, mirror: Option<&MirrorStore>) -> Window {
    let (progress, task) = start_load(load, None);
    tokio::time::sleep(WARM_UP).await;
    let edge_before = progress.durable_samples.load(Ordering::Relaxed);
    let mirror_before = mirror.map(|m| m.stats().applied);
    let cpu_before = Cpu::now();
    let started = Instant::now();
    tokio::time::sleep(window).await;
    let elapsed = started.elapsed().as_secs_f64();
    let cpu = Cpu::now().since(cpu_before);
    let changes = (progress.durable_samples.load(Ordering::Relaxed) - edge_before) as f64;
    let mirror_per_s = mirror
        .zip(mirror_before)
        .map(|(m, before)| ((m.stats().applied - before) * CHANNELS.len() as u64) as f64 / elapsed);
    stop_load(&progress, task).await;
    let per_change = |seconds: f64| seconds * 1e6 / changes.max(1.0);
    Window {
        edge_per_s: changes / elapsed,
        mirror_per_s,
        cpu_us_per_change: Cpu {
            total: per_change(cpu.total),
            journal: per_change(cpu.journal),
            mirror_writer: per_change(cpu.mirror_writer),
        },
        progress,
    }
}

/// Writes a node config file; `cluster` is its `[cluster]` table's body, if any.
fn write_config(dir: &Path, name: &str, plant: bool, cluster: Option<&str>) -> PathBuf {
    let plant = if plant {
        "plant = \"plant.toml\"\n"
    } else {
        ""
    };
    let cluster = cluster
        .map(|body| format!("[cluster]\nid = \"{CLUSTER_ID}\"\n{body}"))
        .unwrap_or_default();
    let text = format!(
        r#"[node]
data_dir = "data-{name}"
types = "types.toml"
{plant}
[api]
listen = "127.0.0.1:0"
tokens = [{{ name = "bench", token = "{TOKEN}", role = "operator" }}]

{cluster}"#
    );
    let path = dir.join(format!("{name}.toml"));
    std::fs::write(&path, text).unwrap();
    path
}

/// The updates and reported changes of the edge's outbox entries in `(after, head]`.
fn outbox_backlog(twins: &Twins, after: u64, head: u64) -> (u64, u64) {
    let store = twins.store();
    let (mut cursor, mut updates, mut changes) = (after, 0u64, 0u64);
    while cursor < head {
        let entries = store.outbox_read(cursor, 4096, 16 << 20).unwrap();
        if entries.is_empty() {
            break;
        }
        for entry in entries {
            if entry.seq > head {
                return (updates, changes);
            }
            for update in entry.updates().unwrap() {
                updates += 1;
                changes += update
                    .changes
                    .iter()
                    .filter(|c| matches!(c, TwinChange::Reported { .. }))
                    .count() as u64;
            }
            cursor = entry.seq;
        }
    }
    (updates, changes)
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
}

type Client = TwinServiceClient<Channel>;

async fn client(url: String) -> Client {
    TwinServiceClient::new(Channel::from_shared(url).unwrap().connect().await.unwrap())
}

/// One `set_speed` round trip; its latency in microseconds.
async fn set_speed(client: &mut Client, asset: &AssetPath, rpm: f64) -> f64 {
    let mut request = tonic::Request::new(SendCommandRequest {
        asset_path: asset.to_string(),
        command: "set_speed".into(),
        params: vec![NamedValue {
            name: "rpm".into(),
            value: Some(Value {
                kind: Some(value::Kind::FloatValue(rpm)),
            }),
        }],
        ..Default::default()
    });
    request
        .metadata_mut()
        .insert("authorization", format!("Bearer {TOKEN}").parse().unwrap());
    let sent = Instant::now();
    let response = client.send_command(request).await.unwrap().into_inner();
    let latency = sent.elapsed().as_secs_f64() * 1e6;
    let outcome = response.verdict.and_then(|v| v.outcome);
    assert!(
        matches!(outcome, Some(Outcome::Accepted(_))),
        "{asset}: {outcome:?}"
    );
    latency
}

/// One `set_speed` decided in process on the edge, without gRPC; its latency in µs.
async fn set_speed_in_process(twins: &Twins, asset: &AssetPath, rpm: f64) -> f64 {
    let mut command = Command::new(asset.clone(), "set_speed", Origin::operator("bench"));
    command.params = vec![("rpm".into(), doppel::Value::Float(rpm))];
    let sent = Instant::now();
    let outcome = twins.command(command).await.unwrap();
    let latency = sent.elapsed().as_secs_f64() * 1e6;
    assert!(
        matches!(outcome.verdict, Verdict::Accepted),
        "{asset}: {:?}",
        outcome.verdict
    );
    latency
}

/// Sequential round trips, interleaved so that each kind sees the same conditions: a
/// command decided in process on the edge, a gRPC health check on the edge's API, a
/// command sent to the edge's API, one sent to the cloud's (forwarded to the edge).
/// Each kind's latencies in µs, sorted, after a warm-up.
async fn round_trips(
    twins: &Twins,
    edge_url: String,
    cloud_url: String,
    paths: &[AssetPath],
    count: usize,
) -> [Vec<f64>; 4] {
    let mut health = HealthClient::new(
        Channel::from_shared(edge_url.clone())
            .unwrap()
            .connect()
            .await
            .unwrap(),
    );
    let mut direct = client(edge_url).await;
    let mut forwarded = client(cloud_url).await;
    let mut latencies: [Vec<f64>; 4] = Default::default();
    for i in 0..WARM_UP_COMMANDS + count {
        let asset = &paths[i % paths.len()];
        let rpm = 1000.0 + (i % 500) as f64;
        let kernel = set_speed_in_process(twins, asset, rpm).await;
        let sent = Instant::now();
        health
            .check(HealthCheckRequest {
                service: String::new(),
            })
            .await
            .unwrap();
        let floor = sent.elapsed().as_secs_f64() * 1e6;
        let d = set_speed(&mut direct, asset, rpm + 1.0).await;
        let f = set_speed(&mut forwarded, asset, rpm + 2.0).await;
        if i >= WARM_UP_COMMANDS {
            for (kind, latency) in [kernel, floor, d, f].into_iter().enumerate() {
                latencies[kind].push(latency);
            }
        }
    }
    for kind in &mut latencies {
        kind.sort_by(f64::total_cmp);
    }
    latencies
}

/// The mirror holds everything the edge's outbox held at `head`.
fn holds(mirror: &MirrorStore, head: u64) -> bool {
    mirror.link(EDGE_ID).is_some_and(|link| link.acked >= head)
}

/// The edge and cloud nodes, the proxy in front of the cloud's NodeService, and what
/// the phases look at.
struct Cluster {
    edge: Node,
    cloud: Node,
    proxy: PartitionProxy,
    mirror: MirrorStore,
    edge_twins: Twins,
    /// The edge's newest outbox sequence.
    head: tokio::sync::watch::Receiver<u64>,
}

impl Cluster {
    /// Starts the cloud node behind a proxy, then the edge owning the whole plant, and
    /// waits until the mirror holds every twin.
    async fn start(dir: &Path, twins_count: usize) -> Cluster {
        let cloud_listen: SocketAddr = format!("127.0.0.1:{}", free_tcp_port()).parse().unwrap();
        let proxy = PartitionProxy::start(cloud_listen).await;
        let cloud_gossip = free_udp_port();
        let cloud_config = write_config(
            dir,
            CLOUD_ID,
            false,
            Some(&format!(
                "node_id = \"{CLOUD_ID}\"\nrole = \"cloud\"\nlisten = \"{cloud_listen}\"\n\
                 advertise = \"{}\"\ngossip = \"127.0.0.1:{cloud_gossip}\"\nseeds = []\n",
                proxy.addr
            )),
        );
        let edge_config = write_config(
            dir,
            EDGE_ID,
            true,
            Some(&format!(
                "node_id = \"{EDGE_ID}\"\nrole = \"edge\"\nlisten = \"127.0.0.1:0\"\n\
                 gossip = \"127.0.0.1:{}\"\nseeds = [\"127.0.0.1:{cloud_gossip}\"]\n\
                 owns = [\"bench/plant\"]\n",
                free_udp_port()
            )),
        );
        let cloud = Node::start_file(&cloud_config).await.unwrap();
        let edge = Node::start_file(&edge_config).await.unwrap();
        let mirror = cloud.cluster().unwrap().mirror().unwrap().clone();
        let edge_twins = edge.twins().clone();
        let head = edge_twins.outbox_head();
        wait_until(
            "the cloud mirrors every twin",
            Duration::from_secs(60),
            || std::future::ready(mirror.len() == twins_count && holds(&mirror, *head.borrow())),
        )
        .await;
        Cluster {
            edge,
            cloud,
            proxy,
            mirror,
            edge_twins,
            head,
        }
    }

    fn head(&self) -> u64 {
        *self.head.borrow()
    }

    fn acked(&self) -> u64 {
        self.mirror.link(EDGE_ID).map_or(0, |link| link.acked)
    }

    async fn stop(self) {
        self.edge.stop().await;
        self.cloud.stop().await;
        drop(self.proxy);
    }
}

/// Phase 1: full speed with the link up, compared with `baseline`. Checks the premises
/// of the change count once the mirror caught up.
async fn replicate_at_full_speed(
    cluster: &Cluster,
    load: &Load,
    window: Duration,
    baseline: &Window,
) -> Window {
    let counters_before = cluster.edge_twins.counters();
    let stats_before: MirrorStats = cluster.mirror.stats();
    let measured = full_speed(load, window, Some(&cluster.mirror)).await;
    let replicated_per_s = measured.mirror_per_s.unwrap_or(0.0);
    let (cpu, baseline_cpu) = (measured.cpu_us_per_change, baseline.cpu_us_per_change);
    println!(
        "replication at full speed: {replicated_per_s:.0} changes/s durable in the mirror ({:.0} updates/s) \
         while the edge took {:.0}/s; {:.2} × the edge alone",
        replicated_per_s / CHANNELS.len() as f64,
        measured.edge_per_s,
        replicated_per_s / baseline.edge_per_s
    );
    println!(
        "  CPU {:.2} µs/change vs {:.2} without replication: edge journal thread {:.2} (vs {:.2}), \
         cloud mirror writer {:.2}, Tokio workers and the rest {:.2} (vs {:.2})",
        cpu.total,
        baseline_cpu.total,
        cpu.journal,
        baseline_cpu.journal,
        cpu.mirror_writer,
        cpu.total - cpu.journal - cpu.mirror_writer,
        baseline_cpu.total - baseline_cpu.journal,
    );
    // The head moves once a logged batch is also in redb, just after its callers
    // were answered: wait for the last ones.
    cluster.edge_twins.flush().await.unwrap();
    let head_at_stop = cluster.head();
    let behind = head_at_stop - cluster.acked();
    let stopped = Instant::now();
    wait_until("the mirror catches up", Duration::from_secs(120), || {
        std::future::ready(holds(&cluster.mirror, head_at_stop))
    })
    .await;
    let catch_up = stopped.elapsed().as_secs_f64();
    let counters = cluster.edge_twins.counters();
    let stats = cluster.mirror.stats();
    let messages = measured.progress.messages.load(Ordering::Relaxed);
    let mirrored_updates = stats.applied - stats_before.applied;
    let compactions = cluster
        .edge
        .cluster()
        .and_then(|c| c.outbox())
        .map_or(0, |o| o.compactions);
    println!(
        "  at the stop the mirror was {behind} outbox entries behind, caught up in {catch_up:.2} s; \
         {messages} messages → {mirrored_updates} mirror updates ({} stale, {} duplicates, {} commits), \
         {compactions} compactions",
        stats.stale - stats_before.stale,
        stats.duplicates - stats_before.duplicates,
        stats.commits - stats_before.commits,
    );
    assert_eq!(
        counters.samples_in - counters_before.samples_in,
        counters.samples_applied - counters_before.samples_applied,
        "every sample applied"
    );
    assert_eq!(messages, mirrored_updates, "one mirror update per message");
    assert_eq!(compactions, 0, "the outbox was never compacted");
    measured
}

/// What phase 2 saw.
struct Drain {
    live_per_s: f64,
    /// Reported changes the mirror lacked at the heal.
    backlog: u64,
    /// From the heal until the mirror held the backlog, in seconds.
    drain_secs: f64,
}

/// Phase 2: live rate, partition, heal, drain.
async fn partition_and_drain(
    cluster: &Cluster,
    load: &Load,
    live_rate: f64,
    partition: Duration,
) -> Drain {
    let (progress, task) = start_load(load, Some(live_rate));
    tokio::time::sleep(STEADY).await;
    let live_started = Instant::now();
    let live_before = progress.messages.load(Ordering::Relaxed);
    cluster.proxy.partition();
    tokio::time::sleep(partition).await;
    let live_per_s = ((progress.messages.load(Ordering::Relaxed) - live_before)
        * CHANNELS.len() as u64) as f64
        / live_started.elapsed().as_secs_f64();
    let (acked_at_heal, head_at_heal) = (cluster.acked(), cluster.head());
    let (backlog_updates, backlog) = {
        let twins = cluster.edge_twins.clone();
        tokio::task::spawn_blocking(move || outbox_backlog(&twins, acked_at_heal, head_at_heal))
            .await
            .unwrap()
    };
    cluster.proxy.heal();
    let healed = Instant::now();
    wait_until("the backlog drains", Duration::from_secs(120), || {
        std::future::ready(holds(&cluster.mirror, head_at_heal))
    })
    .await;
    let drain_secs = healed.elapsed().as_secs_f64();
    wait_until(
        "the mirror catches up with live",
        Duration::from_secs(120),
        || std::future::ready(holds(&cluster.mirror, cluster.head())),
    )
    .await;
    let caught_up = healed.elapsed().as_secs_f64();
    stop_load(&progress, task).await;
    println!(
        "partition of {:.0} s at {live_per_s:.0} changes/s: backlog {backlog} changes ({backlog_updates} updates, \
         {} outbox entries) drained in {:.0} ms = {:.0}/s, {:.1} × live; caught up with live after {:.0} ms",
        partition.as_secs_f64(),
        head_at_heal - acked_at_heal,
        drain_secs * 1e3,
        backlog as f64 / drain_secs,
        backlog as f64 / drain_secs / live_per_s,
        caught_up * 1e3
    );
    Drain {
        live_per_s,
        backlog,
        drain_secs,
    }
}

/// What phase 3 saw: sorted latencies in µs.
struct Commands {
    in_process: Vec<f64>,
    health: Vec<f64>,
    direct: Vec<f64>,
    forwarded: Vec<f64>,
}

/// Phase 3: commands forwarded by the cloud vs. sent to the edge directly, with the
/// CPU each durable verdict costs.
async fn command_latencies(cluster: &Cluster, paths: &[AssetPath], count: usize) -> Commands {
    let cpu_before = Cpu::now();
    let [in_process, health, direct, forwarded] = round_trips(
        &cluster.edge_twins,
        cluster.edge.api().unwrap().url(),
        cluster.cloud.api().unwrap().url(),
        paths,
        count,
    )
    .await;
    let cpu = Cpu::now().since(cpu_before);
    // Each round decides three commands on the edge: in process, direct, forwarded.
    let verdicts = (3 * (WARM_UP_COMMANDS + count)) as f64;
    println!(
        "SendCommand, {count} of each, one client: forwarded by {CLOUD_ID} p50 {:.0} µs p99 {:.0} µs | \
         direct to {EDGE_ID} p50 {:.0} µs p99 {:.0} µs",
        percentile(&forwarded, 0.5),
        percentile(&forwarded, 0.99),
        percentile(&direct, 0.5),
        percentile(&direct, 0.99),
    );
    for (what, latencies) in [
        (
            "in-process Twins::command on the edge (durable verdict)",
            &in_process,
        ),
        (
            "gRPC health check on the edge's API (transport floor)",
            &health,
        ),
    ] {
        println!(
            "  {what}: p50 {:.0} µs p90 {:.0} µs p99 {:.0} µs",
            percentile(latencies, 0.5),
            percentile(latencies, 0.9),
            percentile(latencies, 0.99)
        );
    }
    println!(
        "  CPU per durable verdict (its replication included) {:.0} µs: edge journal thread {:.0}, \
         cloud mirror writer {:.0}, Tokio workers and the rest {:.0}",
        cpu.total * 1e6 / verdicts,
        cpu.journal * 1e6 / verdicts,
        cpu.mirror_writer * 1e6 / verdicts,
        (cpu.total - cpu.journal - cpu.mirror_writer) * 1e6 / verdicts,
    );
    Commands {
        in_process,
        health,
        direct,
        forwarded,
    }
}

fn main() {
    let twins_count = env_or("DOPPEL_BENCH_TWINS", 1_000);
    let window = Duration::from_secs(env_or("DOPPEL_BENCH_SECS", 10) as u64);
    let live_rate = env_or("DOPPEL_BENCH_LIVE", 20_000) as f64;
    let partition = Duration::from_secs(env_or("DOPPEL_BENCH_PARTITION_SECS", 4) as u64);
    let commands = env_or("DOPPEL_BENCH_COMMANDS", 3_000);
    let tokio = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    tokio.block_on(async move {
        let dir = tempfile::tempdir().unwrap();
        let types_toml = types();
        let types = doppel::TwinTypes::from_toml(&types_toml, "bench/types.toml").unwrap();
        let plant = topology_toml(twins_count);
        let topology = doppel::Topology::from_toml(&plant, "bench/plant.toml", &types).unwrap();
        let paths: Vec<AssetPath> = topology.machines().map(|m| m.path.clone()).collect();
        std::fs::write(dir.path().join("types.toml"), &types_toml).unwrap();
        std::fs::write(dir.path().join("plant.toml"), &plant).unwrap();

        // Baseline: the same node and workload, replication off.
        let config = write_config(dir.path(), "baseline", true, None);
        let node = Node::start(NodeConfig::from_file(&config).unwrap())
            .await
            .unwrap();
        let baseline = full_speed(&Load::new(node.runtime().twins(), &paths), window, None).await;
        node.stop().await;
        let baseline_cpu = baseline.cpu_us_per_change;
        println!(
            "baseline: {twins_count} twins, replication off: {:.0} durable changes/s at the edge, \
             CPU {:.2} µs/change (journal thread {:.2})",
            baseline.edge_per_s, baseline_cpu.total, baseline_cpu.journal
        );

        let started = Instant::now();
        let cluster = Cluster::start(dir.path(), twins_count).await;
        println!(
            "cluster: {EDGE_ID} ({twins_count} twins) → {CLOUD_ID} through a stall proxy, mirrored in {:.1} s",
            started.elapsed().as_secs_f64()
        );
        let load = Load::new(&cluster.edge_twins, &paths);

        let replicating = replicate_at_full_speed(&cluster, &load, window, &baseline).await;
        let replicated_per_s = replicating.mirror_per_s.unwrap_or(0.0);
        let cpu = replicating.cpu_us_per_change;

        let drain = partition_and_drain(&cluster, &load, live_rate, partition).await;
        let drain_vs_live = drain.backlog as f64 / drain.drain_secs / drain.live_per_s;
        let reconnects = cluster
            .edge
            .cluster()
            .map(|c| c.links())
            .unwrap_or_default()
            .get(CLOUD_ID)
            .map_or(0, |link| link.reconnects);

        let calls = command_latencies(&cluster, &paths, commands).await;
        cluster.stop().await;

        let p = percentile;
        println!(
            "{{\"scenario\":\"cluster\",\"replicated_per_s\":{replicated_per_s:.0},\
             \"drain_vs_live\":{drain_vs_live:.2},\"fwd_p99_us\":{:.0},\"direct_p99_us\":{:.0},\
             \"fwd_p50_us\":{:.0},\"direct_p50_us\":{:.0},\"in_process_cmd_p50_us\":{:.0},\
             \"in_process_cmd_p99_us\":{:.0},\"health_p50_us\":{:.0},\"health_p99_us\":{:.0},\
             \"edge_ingest_per_s_replicating\":{:.0},\"baseline_ingest_per_s\":{:.0},\
             \"replicated_vs_baseline\":{:.3},\"cpu_us_per_change_replicating\":{:.2},\
             \"cpu_us_per_change_baseline\":{:.2},\"mirror_writer_us_per_change\":{:.2},\
             \"live_per_s\":{:.0},\"backlog_changes\":{},\"drain_ms\":{:.0},\"link_reconnects\":{reconnects},\"twins\":{twins_count}}}",
            p(&calls.forwarded, 0.99),
            p(&calls.direct, 0.99),
            p(&calls.forwarded, 0.5),
            p(&calls.direct, 0.5),
            p(&calls.in_process, 0.5),
            p(&calls.in_process, 0.99),
            p(&calls.health, 0.5),
            p(&calls.health, 0.99),
            replicating.edge_per_s,
            baseline.edge_per_s,
            replicated_per_s / baseline.edge_per_s,
            cpu.total,
            baseline_cpu.total,
            cpu.mirror_writer,
            drain.live_per_s,
            drain.backlog,
            drain.drain_secs * 1e3,
        );
    });
}
