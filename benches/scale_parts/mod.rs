//! The parts of the scale benchmark that run in a process of their own, so each
//! measures its own resident memory: a node of a million passivated twins (start,
//! memory, the latency of a reading that wakes a twin), and a cloud node's mirror
//! table of a million twins. The parent re-runs this binary with `DOPPEL_SCALE_PART`
//! set; the child prints one JSON line last.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use doppel::kernel::twin::MirrorUpdate;
use doppel::{Runtime, RuntimeSettings, Topology, TwinTypes};

use super::common::reading;
use super::{TYPES, plant, press};

/// The environment variable that makes this binary run one part.
pub const PART_ENV: &str = "DOPPEL_SCALE_PART";

/// Twins a part works with.
const TWINS_ENV: &str = "DOPPEL_SCALE_PART_TWINS";

/// Readings sent to woken twins (and again, as the baseline, to the same twins awake).
const WAKES: usize = 2_000;

/// Runs part `name` with `twins` in a child process; returns its JSON line.
pub fn run(name: &str, twins: usize, per_line: usize) -> serde_json::Value {
    let output = Command::new(std::env::current_exe().unwrap())
        .env(PART_ENV, name)
        .env(TWINS_ENV, twins.to_string())
        .env("DOPPEL_BENCH_PER_LINE", per_line.to_string())
        .stderr(Stdio::inherit())
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    for line in stdout.lines().filter(|line| !line.starts_with('{')) {
        println!("  {line}");
    }
    assert!(output.status.success(), "part {name} failed");
    let last = stdout
        .lines()
        .last()
        .expect("the part printed its JSON line");
    serde_json::from_str(last).unwrap()
}

/// Runs the part this process was started for, if any; true when it did.
pub fn child() -> bool {
    let Ok(part) = std::env::var(PART_ENV) else {
        return false;
    };
    let twins: usize = std::env::var(TWINS_ENV).unwrap().parse().unwrap();
    let per_line = super::env_or("DOPPEL_BENCH_PER_LINE", 1_000).max(1);
    let tokio = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let json = match part.as_str() {
        "passivated" => tokio.block_on(passivated(twins, per_line)),
        "mirrors" => tokio.block_on(mirrors(twins, per_line)),
        other => panic!("no part {other}"),
    };
    println!("{json}");
    true
}

/// A field of this process's `/proc/self/status` in kB (`VmRSS`, `VmHWM`).
fn own_kb(field: &str) -> u64 {
    super::status_kb(std::process::id(), field)
}

/// The `q` quantile of `samples`, in microseconds.
fn quantile_us(samples: &mut [Duration], q: f64) -> u128 {
    samples.sort_unstable();
    let at = ((samples.len() as f64 * q).ceil() as usize).clamp(1, samples.len()) - 1;
    samples[at].as_micros()
}

fn settings() -> RuntimeSettings {
    let mut settings = RuntimeSettings::default();
    // Every press has an over-temperature trip; this node passivates them too. The
    // idle time stays at its default: nothing passivates again while this measures.
    settings.passivation.tripping = true;
    settings
}

async fn start(dir: &std::path::Path, twins: usize, per_line: usize) -> Runtime {
    let types = TwinTypes::from_toml(TYPES, "types.toml").unwrap();
    let topology = Topology::from_toml(&plant(twins, per_line), "plant.toml", &types).unwrap();
    Runtime::builder()
        .twin_types(types)
        .topology(topology)
        .data_dir(dir)
        .settings(settings())
        .start()
        .await
        .unwrap()
}

/// A node of `twins` passivated presses: start until the last press answers, resident
/// memory once idle, and the latency of a reading from ingest until its twin has
/// applied it, to parked twins and then (the baseline) to the same twins awake.
async fn passivated(twins: usize, per_line: usize) -> String {
    let dir = tempfile::tempdir().unwrap();
    let before_kb = own_kb("VmRSS");
    let started = Instant::now();
    let runtime = start(dir.path(), twins, per_line).await;
    let handle = runtime.twins().clone();
    let last = doppel::AssetPath::parse(&press(twins - 1, per_line)).unwrap();
    handle.report(&last).await.unwrap();
    let start = started.elapsed();
    tokio::time::sleep(Duration::from_secs(5)).await;
    let rss_kb = own_kb("VmRSS");
    let peak_kb = own_kb("VmHWM");

    let source = handle.source("scale-bench").unwrap();
    let mut changes = handle.subscribe();
    let chosen: Vec<doppel::AssetPath> = (0..WAKES.min(twins / 2))
        .map(|i| doppel::AssetPath::parse(&press((i * 7_919 + 13) % twins, per_line)).unwrap())
        .collect();
    let mut latencies = [Vec::new(), Vec::new()];
    for (round, latencies) in latencies.iter_mut().enumerate() {
        for (i, path) in chosen.iter().enumerate() {
            let parked = handle.entry(path).unwrap().is_parked();
            assert_eq!(parked, round == 0, "{path}: parked in the first round only");
            let seq = (round * WAKES + i + 1) as u64;
            let sent = Instant::now();
            let receipt = handle
                .ingest(path, "vibration", reading(2.0 + round as f64, source, seq))
                .await
                .unwrap();
            loop {
                match changes.recv().await {
                    Ok(event) if event.asset == *path => break,
                    Ok(_) | Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => {}
                    Err(error) => panic!("{error}"),
                }
            }
            latencies.push(sent.elapsed());
            receipt.durable().await.unwrap();
        }
    }
    let counters = handle.counters();
    let [mut woken, mut awake] = latencies;
    let reactivate_p99 = quantile_us(&mut woken, 0.99);
    let awake_p99 = quantile_us(&mut awake, 0.99);
    println!(
        "{twins} passivated twins: start {:.2} s, resident {} MiB (process before start {} MiB, peak {} MiB); \
         a reading to a parked twin p50 {} us p99 {reactivate_p99} us, to the same twins awake p50 {} us p99 {awake_p99} us; \
         {} woken",
        start.as_secs_f64(),
        rss_kb / 1024,
        before_kb / 1024,
        peak_kb / 1024,
        quantile_us(&mut woken, 0.5),
        quantile_us(&mut awake, 0.5),
        counters.woken,
    );
    drop(changes);
    drop(handle);
    runtime.shutdown().await;
    format!(
        "{{\"start_s\":{:.2},\"rss_mb\":{},\"peak_mb\":{},\"reactivate_p99_us\":{reactivate_p99},\"awake_p99_us\":{awake_p99}}}",
        start.as_secs_f64(),
        rss_kb / 1024,
        peak_kb / 1024,
    )
}

/// A cloud node's mirror table of `twins` presses, each row a press's whole state
/// (every channel reported), applied in durable batches of 1,000: resident memory
/// over the process's before the table opened.
async fn mirrors(twins: usize, per_line: usize) -> String {
    let dir = tempfile::tempdir().unwrap();
    let template = {
        let runtime = start(&dir.path().join("edge"), 1, per_line).await;
        let handle = runtime.twins().clone();
        let path = doppel::AssetPath::parse(&press(0, per_line)).unwrap();
        let source = handle.source("scale-bench").unwrap();
        for (seq, channel) in [
            "temperature",
            "temperature_b",
            "vibration",
            "power_kw",
            "throughput",
        ]
        .into_iter()
        .enumerate()
        {
            handle
                .ingest(&path, channel, reading(40.0, source, seq as u64 + 1))
                .await
                .unwrap()
                .durable()
                .await
                .unwrap();
        }
        let report = handle.report(&path).await.unwrap();
        drop(handle);
        runtime.shutdown().await;
        report
    };
    let before_kb = own_kb("VmRSS");
    let store =
        doppel::cluster::mirror::MirrorStore::open(&dir.path().join("mirror.redb")).unwrap();
    let started = Instant::now();
    let store = tokio::task::spawn_blocking(move || {
        for (chunk, first) in (0..twins).step_by(1_000).enumerate() {
            let updates: Vec<MirrorUpdate> = (first..(first + 1_000).min(twins))
                .map(|n| {
                    let mut report = template.clone();
                    report.asset = doppel::AssetPath::parse(&press(n, per_line)).unwrap();
                    report.version = 1;
                    MirrorUpdate::baseline(report)
                })
                .collect();
            let seq = chunk as u64 + 1;
            store.apply_batch("edge-a", &[(seq, updates)], seq).unwrap();
        }
        store
    })
    .await
    .unwrap();
    let applied = started.elapsed();
    let rows = store.len();
    assert_eq!(rows, twins, "every twin has its row");
    let rss_kb = own_kb("VmRSS");
    let table_kb = rss_kb.saturating_sub(before_kb);
    println!(
        "{rows} mirror rows: {} MiB resident over the {} MiB before ({} B per row), applied in {:.1} s",
        table_kb / 1024,
        before_kb / 1024,
        table_kb * 1024 / rows as u64,
        applied.as_secs_f64()
    );
    drop(store);
    format!(
        "{{\"mirrors_mb\":{},\"rss_mb\":{},\"before_mb\":{},\"bytes_per_row\":{}}}",
        table_kb / 1024,
        rss_kb / 1024,
        before_kb / 1024,
        table_kb * 1024 / rows as u64
    )
}
