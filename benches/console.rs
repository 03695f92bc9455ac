//! Console benchmark (scenario harness): one node fans twin changes out over
//! server-sent events (`GET /api/v1/watch`) to 1, 100 and 1,000 subscribers, and, in
//! the same run as the baseline, over gRPC `WatchTwins` to as many. For each: changes
//! delivered per second (summed over subscribers) and the p99 time from a reading's
//! source time to the subscriber holding its change event.
//!
//! The node (runtime and API) runs on a tokio runtime of 2 workers, the subscribers on
//! a runtime of their own; every subscriber has its own connection (HTTP/1.1 for SSE,
//! HTTP/2 for gRPC), as browsers and separate clients would. A generator ingests
//! readings round-robin over 64 twins at a fixed rate, each stamped with the wall
//! clock; every subscriber watches all of them, so each reading is one change per
//! subscriber. A subscriber that falls behind gets `coalesced` states instead of
//! changes, as the watch is built to: those are counted apart and not as changes.
//!
//! `cargo bench --bench console`. Environment:
//! - `DOPPEL_BENCH_SECS`: each phase's length (default 5);
//! - `DOPPEL_BENCH_RATE`: readings per second offered (default 200);
//! - `DOPPEL_BENCH_SUBSCRIBERS`: comma-separated subscriber counts (default 1,100,1000).
//!
//! The last line is JSON.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use common::{env_or, topology_toml};
use doppel::{Runtime, RuntimeSettings, Timestamp, Topology, TwinTypes};
use doppel_api::{ApiConfig, ApiHandle, ApiLimits, ApiServer, Role};
use doppel_proto::v1 as pb;
use doppel_proto::v1::twin_service_client::TwinServiceClient;
use doppel_testkit::http::Client;
use parking_lot::Mutex;

const TYPES: &str = r#"
[types.machine]
description = "benchmark machine"
[types.machine.channels.temperature]
unit = "degC"
range = [-50.0, 1000.0]
max_age_secs = 0
"#;

const TOKEN: &str = "bench-viewer-token-0123456789";
const TWINS: usize = 64;

/// What one phase measured.
#[derive(Debug, Default, Clone, Copy)]
struct Measured {
    /// Subscribers whose watch never opened.
    failed: u64,
    changes_per_s: f64,
    coalesced: u64,
    p50_ms: f64,
    p99_ms: f64,
}

/// What the subscribers of a phase share.
#[derive(Default)]
struct Tally {
    changes: AtomicU64,
    coalesced: AtomicU64,
    ready: AtomicU64,
    /// Subscribers that could not open their watch after every retry.
    failed: AtomicU64,
    latencies_us: Mutex<Vec<u64>>,
}

impl Tally {
    /// Counts a change whose reading was measured at `source_micros`.
    fn change(&self, source_micros: i64, counting: bool, local: &mut Vec<u64>) {
        if counting {
            self.changes.fetch_add(1, Ordering::Relaxed);
            let age = Timestamp::now().as_micros().saturating_sub(source_micros);
            local.push(u64::try_from(age).unwrap_or(0));
        }
    }
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Kind {
    Sse,
    Grpc,
}

/// The micros of a `sourceTime` inside a change event's JSON, found without parsing
/// the whole event.
fn sse_source_micros(data: &str) -> Option<i64> {
    let start = data.find("\"sourceTime\":\"")? + "\"sourceTime\":\"".len();
    let end = start + data[start..].find('"')?;
    let at: prost_types::Timestamp = data[start..end].parse().ok()?;
    Some(at.seconds * 1_000_000 + i64::from(at.nanos) / 1000)
}

/// Tries `open` a few times: a thousand connections at once can overflow the
/// listener's backlog on a small machine.
async fn opened<T, E, F, Fut>(tally: &Tally, mut open: F) -> Option<T>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, E>>,
{
    for attempt in 0..20u64 {
        if let Ok(opened) = open().await {
            return Some(opened);
        }
        tokio::time::sleep(Duration::from_millis(50 * (attempt + 1))).await;
    }
    tally.failed.fetch_add(1, Ordering::Relaxed);
    None
}

async fn sse_subscriber(base: String, tally: Arc<Tally>, counting: Arc<AtomicBool>) {
    let client = Client::new(&base, None).with_token(TOKEN);
    let Some(mut events) = opened(&tally, || client.events("/api/v1/watch")).await else {
        return;
    };
    let mut local = Vec::new();
    while let Some(event) = events.next().await {
        match event.name.as_str() {
            "snapshotComplete" => {
                tally.ready.fetch_add(1, Ordering::Relaxed);
            }
            "change" => {
                if let Some(at) = sse_source_micros(&event.data) {
                    tally.change(at, counting.load(Ordering::Relaxed), &mut local);
                }
            }
            "coalesced" if counting.load(Ordering::Relaxed) => {
                tally.coalesced.fetch_add(1, Ordering::Relaxed);
            }
            _ => {}
        }
        if local.len() >= 256 {
            tally.latencies_us.lock().append(&mut local);
        }
    }
    tally.latencies_us.lock().append(&mut local);
}

async fn grpc_subscriber(url: String, tally: Arc<Tally>, counting: Arc<AtomicBool>) {
    let open = || {
        let url = url.clone();
        async move {
            let mut client = TwinServiceClient::connect(url)
                .await
                .map_err(|e| e.to_string())?;
            let mut request = tonic::Request::new(pb::WatchTwinsRequest::default());
            request
                .metadata_mut()
                .insert("authorization", format!("Bearer {TOKEN}").parse().unwrap());
            client
                .watch_twins(request)
                .await
                .map(tonic::Response::into_inner)
                .map_err(|e| e.to_string())
        }
    };
    let Some(mut stream) = opened(&tally, open).await else {
        return;
    };
    let mut local = Vec::new();
    use pb::watch_twins_response::Event;
    while let Ok(Some(message)) = stream.message().await {
        match message.event {
            Some(Event::SnapshotComplete(_)) => {
                tally.ready.fetch_add(1, Ordering::Relaxed);
            }
            Some(Event::Change(change)) => {
                if let Some(pb::twin_change::Change::Reported(reported)) = change.change
                    && let Some(at) = reported.source_time
                {
                    let micros = at.seconds * 1_000_000 + i64::from(at.nanos) / 1000;
                    tally.change(micros, counting.load(Ordering::Relaxed), &mut local);
                }
            }
            Some(Event::Coalesced(_)) if counting.load(Ordering::Relaxed) => {
                tally.coalesced.fetch_add(1, Ordering::Relaxed);
            }
            _ => {}
        }
        if local.len() >= 256 {
            tally.latencies_us.lock().append(&mut local);
        }
    }
    tally.latencies_us.lock().append(&mut local);
}

fn percentile(sorted: &[u64], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let index = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[index.min(sorted.len() - 1)] as f64 / 1000.0
}

#[allow(clippy::too_many_arguments)]
fn phase(
    kind: Kind,
    subscribers: usize,
    secs: f64,
    rate: usize,
    servers: &tokio::runtime::Runtime,
    clients: &tokio::runtime::Runtime,
    runtime: &Runtime,
    api: &ApiHandle,
) -> Measured {
    let tally = Arc::new(Tally::default());
    let counting = Arc::new(AtomicBool::new(false));
    let http_base = format!("http://{}", api.http_addr().unwrap());
    let grpc_url = api.url();
    let tasks: Vec<_> = (0..subscribers)
        .map(|_| {
            let tally = tally.clone();
            let counting = counting.clone();
            match kind {
                Kind::Sse => clients.spawn(sse_subscriber(http_base.clone(), tally, counting)),
                Kind::Grpc => clients.spawn(grpc_subscriber(grpc_url.clone(), tally, counting)),
            }
        })
        .collect();
    let opened_at = Instant::now();
    let settled =
        || (tally.ready.load(Ordering::Relaxed) + tally.failed.load(Ordering::Relaxed)) as usize;
    while settled() < subscribers {
        assert!(
            opened_at.elapsed() < Duration::from_secs(180),
            "{kind:?}: only {} of {subscribers} subscribers got their snapshot",
            tally.ready.load(Ordering::Relaxed)
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    // The generator: readings round-robin over the twins at `rate`, each stamped now.
    let twins = runtime.twins().clone();
    counting.store(true, Ordering::Relaxed);
    let started = Instant::now();
    servers.block_on(async {
        let source = twins.source("console-bench").unwrap();
        let paths: Vec<_> = twins.paths().cloned().collect();
        let targets: Vec<_> = paths
            .iter()
            .map(|path| twins.target(path, "temperature").unwrap())
            .collect();
        let every = Duration::from_secs_f64(1.0 / rate as f64);
        let mut next = tokio::time::Instant::now();
        let mut seq = (Timestamp::now().as_micros().max(0) as u64) << 4;
        let end = started + Duration::from_secs_f64(secs);
        let mut i = 0usize;
        while Instant::now() < end {
            seq += 1;
            let reading = common::reading(20.0 + (seq % 500) as f64, source, seq);
            let _ = twins
                .ingest_batch(std::iter::once((targets[i % targets.len()], reading)))
                .await;
            i += 1;
            next += every;
            tokio::time::sleep_until(next).await;
        }
    });
    let elapsed = started.elapsed().as_secs_f64();
    // What is still on its way arrives within a moment; it counts, its latency too.
    std::thread::sleep(Duration::from_millis(500));
    counting.store(false, Ordering::Relaxed);
    let changes = tally.changes.load(Ordering::Relaxed);
    for task in tasks {
        task.abort();
    }
    // Every watch ends on the server before the next phase.
    let closing = Instant::now();
    while api.open_watches() > 0 && closing.elapsed() < Duration::from_secs(30) {
        std::thread::sleep(Duration::from_millis(20));
    }
    let mut latencies = std::mem::take(&mut *tally.latencies_us.lock());
    latencies.sort_unstable();
    Measured {
        failed: tally.failed.load(Ordering::Relaxed),
        changes_per_s: changes as f64 / elapsed,
        coalesced: tally.coalesced.load(Ordering::Relaxed),
        p50_ms: percentile(&latencies, 0.50),
        p99_ms: percentile(&latencies, 0.99),
    }
}

fn main() {
    let secs = env_or("DOPPEL_BENCH_SECS", 5) as f64;
    let rate = env_or("DOPPEL_BENCH_RATE", 200).max(1);
    let counts: Vec<usize> = std::env::var("DOPPEL_BENCH_SUBSCRIBERS")
        .ok()
        .map(|list| {
            list.split(',')
                .filter_map(|n| n.trim().parse().ok())
                .collect()
        })
        .unwrap_or_else(|| vec![1, 100, 1000]);
    let servers = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let clients = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let (runtime, api) = servers.block_on(async {
        let types = TwinTypes::from_toml(TYPES, "bench/types.toml").unwrap();
        let topology =
            Topology::from_toml(&topology_toml(TWINS), "bench/plant.toml", &types).unwrap();
        let runtime = Runtime::builder()
            .twin_types(types)
            .topology(topology)
            .data_dir(dir.path())
            .settings(RuntimeSettings::default())
            .start()
            .await
            .unwrap();
        let limits = ApiLimits {
            max_watches: 5000,
            ..ApiLimits::default()
        };
        let mut config = ApiConfig::new("127.0.0.1:0".parse().unwrap())
            .token("bench", TOKEN, Role::Viewer)
            .http("127.0.0.1:0".parse().unwrap());
        config.limits = limits;
        let api = ApiServer::start(config, runtime.twins().clone())
            .await
            .unwrap();
        (runtime, api)
    });
    let mut fields = vec![("scenario".to_string(), "\"console\"".to_string())];
    let mut results = Vec::new();
    for &n in &counts {
        // The baseline first, then the same fan-out over SSE.
        for kind in [Kind::Grpc, Kind::Sse] {
            let measured = phase(kind, n, secs, rate, &servers, &clients, &runtime, &api);
            println!(
                "{kind:?} x{n}: {:.0} changes/s delivered ({} coalesced, {} watches never opened), p50 {:.1} ms, p99 {:.1} ms",
                measured.changes_per_s,
                measured.coalesced,
                measured.failed,
                measured.p50_ms,
                measured.p99_ms
            );
            results.push((kind, n, measured));
        }
    }
    for (kind, n, measured) in &results {
        let prefix = match kind {
            Kind::Sse => "sse",
            Kind::Grpc => "grpc_watch",
        };
        fields.push((
            format!("{prefix}_per_s_{n}"),
            format!("{:.0}", measured.changes_per_s),
        ));
        fields.push((
            format!("{prefix}_p99_ms_{n}"),
            format!("{:.1}", measured.p99_ms),
        ));
        fields.push((
            format!("{prefix}_coalesced_{n}"),
            measured.coalesced.to_string(),
        ));
        fields.push((
            format!("{prefix}_unopened_{n}"),
            measured.failed.to_string(),
        ));
    }
    for &n in &counts {
        let of = |k: Kind| {
            results
                .iter()
                .find(|(kind, count, _)| *kind == k && *count == n)
                .map(|(_, _, m)| m.changes_per_s)
                .unwrap_or(0.0)
        };
        let ratio = if of(Kind::Grpc) > 0.0 {
            of(Kind::Sse) / of(Kind::Grpc)
        } else {
            0.0
        };
        fields.push((format!("sse_to_grpc_ratio_{n}"), format!("{ratio:.2}")));
    }
    fields.push(("offered_readings_per_s".into(), rate.to_string()));
    fields.push(("secs".into(), format!("{secs}")));
    servers.block_on(async {
        api.stop().await;
        runtime.shutdown().await;
    });
    let body: Vec<String> = fields
        .iter()
        .map(|(key, value)| format!("\"{key}\":{value}"))
        .collect();
    println!("{{{}}}", body.join(","));
}
