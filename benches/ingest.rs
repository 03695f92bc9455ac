//! Ingest benchmark (scenario harness): durable samples/s into 10,000 twins of 20
//! channels with journaling on, p99 sample→trip latency, memory per idle twin, and two
//! baselines measured in the same run: ractor casts to one actor and a raw tokio mpsc.
//! Then the same ingest with a shadow model deployed beside each twin's anomaly model,
//! between two runs without it (the mean of those is its baseline): the cost of a
//! shadow per sample.
//!
//! `cargo bench --bench ingest`; `DOPPEL_BENCH_TWINS`, `DOPPEL_BENCH_SAMPLES` and
//! `DOPPEL_BENCH_TRIPS` scale it down or up, `DOPPEL_BENCH_WORKERS` sets the tokio worker
//! threads (default 2). The last line is JSON.

mod common;

use std::collections::VecDeque;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use common::machine::{CHANNELS, types_toml};
use common::{env_or, topology_toml};
use doppel::kernel::Origin;
use doppel::kernel::internal::TwinsInternals;
use doppel::kernel::model::registry::{DeployMode, Target};
use doppel::kernel::twin::DeployRequest;
use doppel::{Quality, Reading, Runtime, RuntimeSettings, Timestamp, Topology, TwinTypes};
use ractor::{Actor, ActorProcessingErr, ActorRef};

fn rss_bytes() -> u64 {
    std::fs::read_to_string("/proc/self/statm")
        .ok()
        .and_then(|s| s.split_whitespace().nth(1)?.parse::<u64>().ok())
        .map_or(0, |pages| pages * 4096)
}

struct Counter;

impl Actor for Counter {
    type Msg = u64;
    type State = Arc<AtomicU64>;
    type Arguments = Arc<AtomicU64>;
    async fn pre_start(
        &self,
        _: ActorRef<u64>,
        count: Arc<AtomicU64>,
    ) -> Result<Arc<AtomicU64>, ActorProcessingErr> {
        Ok(count)
    }
    async fn handle(
        &self,
        _: ActorRef<u64>,
        message: u64,
        count: &mut Arc<AtomicU64>,
    ) -> Result<(), ActorProcessingErr> {
        count.fetch_add(message, Ordering::Relaxed);
        Ok(())
    }
}

async fn ractor_cast_per_s(messages: u64) -> f64 {
    let count = Arc::new(AtomicU64::new(0));
    let (actor, handle) = Actor::spawn(None, Counter, count.clone()).await.unwrap();
    let started = Instant::now();
    for _ in 0..messages {
        actor.cast(1).unwrap();
    }
    while count.load(Ordering::Relaxed) < messages {
        tokio::task::yield_now().await;
    }
    let rate = messages as f64 / started.elapsed().as_secs_f64();
    actor.stop(None);
    let _ = handle.await;
    rate
}

async fn mpsc_per_s(messages: u64) -> f64 {
    let (sender, mut receiver) = tokio::sync::mpsc::unbounded_channel::<u64>();
    let consumer = tokio::spawn(async move {
        let mut total = 0;
        while let Some(value) = receiver.recv().await {
            total += value;
            if total == messages {
                break;
            }
        }
    });
    let started = Instant::now();
    for _ in 0..messages {
        sender.send(1).unwrap();
    }
    consumer.await.unwrap();
    messages as f64 / started.elapsed().as_secs_f64()
}

/// Ingests one tripping sample and waits for the safety actuation it causes.
async fn trip_latency_us(
    twins: &doppel::Twins,
    actuations: &mut tokio::sync::broadcast::Receiver<doppel::Actuation>,
    target: doppel_runtime::twin::ChannelTarget,
    asset: &doppel::AssetPath,
    source: doppel::SourceId,
    seq: u64,
) -> f64 {
    let reading = common::reading(900.0, source, seq);
    let sent = Instant::now();
    let _receipt = twins.ingest_batch([(target, reading)]).await.unwrap();
    loop {
        let actuation = actuations.recv().await.unwrap();
        if actuation.asset() == asset {
            break;
        }
    }
    sent.elapsed().as_secs_f64() * 1e6
}

/// A second version of the machines' anomaly model, for the shadow phase, made now.
fn shadow_package() -> String {
    let created = doppel::api::convert::timestamp_to_proto(Timestamp::now());
    format!(
        r#"
[package]
kind = "ewma_anomaly"
version = "2.0.0"
params = {{ channel = "ch00", alpha = 0.2 }}

[package.metadata]
author = "bench"
created = "{created}"
"#
    )
}

/// Durable ingest: one message of 20 channels per twin, round robin, a bounded number
/// of receipts outstanding, until every sample is durable. Returns samples/s.
async fn durable_ingest(
    twins: &doppel::Twins,
    targets: &[Vec<doppel_runtime::twin::ChannelTarget>],
    source: doppel::SourceId,
    messages: usize,
    seq: &mut u64,
) -> f64 {
    let started = Instant::now();
    let mut outstanding = VecDeque::new();
    for message in 0..messages {
        let twin = message % targets.len();
        let now = Timestamp::now();
        let batch = targets[twin].iter().enumerate().map(|(c, target)| {
            *seq += 1;
            let value = ((*seq % 97) as f64) - 48.0 + c as f64;
            (
                *target,
                Reading {
                    value,
                    source_time: now,
                    quality: Quality::Good,
                    source,
                    epoch: 0,
                    seq: *seq,
                    stamped: true,
                },
            )
        });
        let receipt = twins.ingest_batch(batch.collect::<Vec<_>>()).await.unwrap();
        outstanding.push_back(receipt.receipt);
        if outstanding.len() > 4096 {
            outstanding.pop_front().unwrap().durable().await.unwrap();
        }
    }
    for receipt in outstanding {
        receipt.durable().await.unwrap();
    }
    (messages * CHANNELS) as f64 / started.elapsed().as_secs_f64()
}

/// Rounds of ingest with a shadow, each between two without.
const SHADOW_ROUNDS: usize = 3;

fn median(values: &mut [f64]) -> f64 {
    values.sort_by(f64::total_cmp);
    values[values.len() / 2]
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
}

fn main() {
    let twins_count = env_or("DOPPEL_BENCH_TWINS", 10_000);
    let total_samples = env_or("DOPPEL_BENCH_SAMPLES", 4_000_000);
    let trips = env_or("DOPPEL_BENCH_TRIPS", 2_000).min(twins_count / 2);
    // Tokio worker threads (default 2, one per core here).
    let workers = env_or("DOPPEL_BENCH_WORKERS", 2);
    let tokio = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(workers)
        .enable_all()
        .build()
        .unwrap();
    tokio.block_on(async move {
        let baseline_messages = 4_000_000;
        let mpsc = mpsc_per_s(baseline_messages).await;
        let cast = ractor_cast_per_s(baseline_messages).await;
        println!("baseline: tokio mpsc {mpsc:.0}/s, ractor cast to one actor {cast:.0}/s");

        let dir = tempfile::tempdir().unwrap();
        let types = TwinTypes::from_toml(&types_toml(), "bench/types.toml").unwrap();
        let topology = Topology::from_toml(&topology_toml(twins_count), "bench/plant.toml", &types).unwrap();
        let paths: Vec<_> = topology.machines().map(|m| m.path.clone()).collect();
        let rss_before = rss_bytes();
        let started = Instant::now();
        let runtime = Runtime::builder()
            .twin_types(types)
            .topology(topology)
            .data_dir(dir.path())
            .settings({
                let mut settings = RuntimeSettings::default();
                settings.models.allow_unsigned = true;
                settings
            })
            .start()
            .await
            .unwrap();
        let rss_per_twin = rss_bytes().saturating_sub(rss_before) / twins_count as u64;
        println!("{twins_count} twins of {CHANNELS} channels started in {:.2} s, {rss_per_twin} B RSS per idle twin", started.elapsed().as_secs_f64());

        let twins = runtime.twins().clone();
        let source = twins.source("bench").unwrap();
        let targets: Vec<Vec<_>> = paths
            .iter()
            .map(|p| (0..CHANNELS).map(|c| twins.target(p, &format!("ch{c:02}")).unwrap()).collect())
            .collect();

        let messages = total_samples / CHANNELS;
        let mut seq = 0u64;
        let started = Instant::now();
        let samples_per_s = durable_ingest(&twins, &targets, source, messages, &mut seq).await;
        let elapsed = started.elapsed().as_secs_f64();
        let applied = twins.counters().samples_applied;
        let stats = twins.kernel().journal.stats();
        println!(
            "ingest: {} samples durable in {elapsed:.2} s = {samples_per_s:.0}/s ({applied} applied, {} batches, {} truncated)",
            messages * CHANNELS,
            stats.batches.load(Ordering::Relaxed),
            stats.truncated.load(Ordering::Relaxed),
        );

        // Sample → trip: one tripping sample at a time, timed until the safety
        // actuation reaches a subscriber. First as isolated events (spaced so the
        // previous trip's urgent audit commit is done), then while another task keeps
        // ingesting into the other twins.
        let mut actuations = twins.actuations();
        let trip_channel = 1;
        let half = trips / 2;
        let mut isolated = Vec::with_capacity(half);
        for twin in 0..half {
            seq += 1;
            isolated.push(trip_latency_us(&twins, &mut actuations, targets[twin][trip_channel], &paths[twin], source, seq).await);
            tokio::time::sleep(std::time::Duration::from_millis(3)).await;
        }
        let background = {
            let twins = twins.clone();
            let targets: Vec<_> = targets[trips..].iter().map(|t| t[0]).collect();
            tokio::spawn(async move {
                let mut seq = 1u64 << 40;
                let mut outstanding = VecDeque::new();
                loop {
                    for target in &targets {
                        seq += 1;
                        let reading = Reading { value: 1.0, source_time: Timestamp::now(), quality: Quality::Good, source, epoch: 0, seq, stamped: true };
                        let receipt = twins.ingest_batch([(*target, reading)]).await.unwrap();
                        outstanding.push_back(receipt.receipt);
                        if outstanding.len() > 256 {
                            let _ = outstanding.pop_front().unwrap().durable().await;
                        }
                        tokio::task::yield_now().await;
                    }
                }
            })
        };
        let mut loaded = Vec::with_capacity(trips - half);
        for twin in half..trips {
            seq += 1;
            loaded.push(trip_latency_us(&twins, &mut actuations, targets[twin][trip_channel], &paths[twin], source, seq).await);
            tokio::time::sleep(std::time::Duration::from_millis(3)).await;
        }
        background.abort();
        isolated.sort_by(f64::total_cmp);
        loaded.sort_by(f64::total_cmp);
        let p50 = percentile(&isolated, 0.5);
        let p99 = percentile(&isolated, 0.99);
        let p99_loaded = percentile(&loaded, 0.99);
        println!("sample→trip, {half} isolated trips: p50 {p50:.1} µs, p99 {p99:.1} µs");
        println!(
            "sample→trip, {} trips during background ingest: p50 {:.1} µs, p99 {p99_loaded:.1} µs",
            trips - half,
            percentile(&loaded, 0.5)
        );
        println!(
            "ratios: durable samples/s is {:.2} × ractor casts/s and {:.2} × mpsc/s",
            samples_per_s / cast,
            samples_per_s / mpsc
        );

        // A shadow beside every twin's anomaly model: ingest without it and with it,
        // alternately (without, with, without, with, without); the medians compare.
        let registered = twins.register_package(&shadow_package(), "bench").unwrap().0;
        let bench = Origin::operator("bench");
        let mut without = vec![durable_ingest(&twins, &targets, source, messages, &mut seq).await];
        let mut with = Vec::new();
        let mut deploy_secs = 0.0;
        for _ in 0..SHADOW_ROUNDS {
            let started = Instant::now();
            let request = DeployRequest {
                kind: registered.kind.clone(),
                version: registered.version.clone(),
                model: None,
                target: Target::Type("machine".into()),
                mode: DeployMode::Shadow,
                canary: None,
                evaluation_secs: None,
            };
            let deployed = twins.deploy(request, &bench).await.unwrap();
            deploy_secs = started.elapsed().as_secs_f64();
            assert_eq!(deployed.applied.len(), twins_count, "{:?}", deployed.failed);
            with.push(durable_ingest(&twins, &targets, source, messages, &mut seq).await);
            twins.withdraw(deployed.deployment.id, "next round", &bench).await.unwrap();
            without.push(durable_ingest(&twins, &targets, source, messages, &mut seq).await);
        }
        println!("shadow deployed to {twins_count} twins in {deploy_secs:.2} s");
        println!("ingest with a shadow per twin: {with:.0?}/s; without, same run: {without:.0?}/s");
        let (with_shadow, without) = (median(&mut with), median(&mut without));
        let shadow_ns = 1e9 / with_shadow - 1e9 / without;
        println!(
            "medians: {with_shadow:.0}/s with a shadow, {without:.0}/s without; ratio {:.2}, {shadow_ns:.0} ns more per sample",
            with_shadow / without
        );
        drop(twins);
        runtime.shutdown().await;
        println!(
            "{{\"scenario\":\"ingest\",\"twins\":{twins_count},\"samples_per_s\":{samples_per_s:.0},\"ractor_cast_per_s\":{cast:.0},\"mpsc_per_s\":{mpsc:.0},\"p99_sample_to_trip_us\":{p99:.1},\"p99_sample_to_trip_under_load_us\":{p99_loaded:.1},\"rss_bytes_per_twin\":{rss_per_twin},\"samples_per_s_with_shadow\":{with_shadow:.0},\"samples_per_s_without_shadow\":{without:.0},\"shadow_ratio\":{:.3},\"shadow_ns_per_sample\":{shadow_ns:.0},\"shadow_deploy_s\":{deploy_secs:.3}}}",
            with_shadow / without
        );
    });
}
