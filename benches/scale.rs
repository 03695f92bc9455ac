//! Scale benchmark (scenario harness): how a `doppel node` process with many twins
//! starts, recovers from kill -9 and idles.
//!
//! Each round writes a node config with `examples/node`'s press type and a plant of
//! lines of `DOPPEL_BENCH_PER_LINE` presses (default 1,000), starts the real `doppel`
//! binary and measures:
//!
//! - **start**: from spawning the process (config parse included) until the last
//!   press of the plant answers `GetTwin` (twins start in plant order);
//! - **recover**: the same after `DOPPEL_BENCH_COMMANDS` accepted commands (default
//!   2,000, spread over the twins, so journal tails are replayed) and a kill -9;
//! - **rss per idle twin**: resident memory once the node has idled 5 s, less that of
//!   the baseline node, divided by the twins;
//! - **peak**: the process's high-water mark of resident memory (`VmHWM`).
//!
//! Then, each in a process of its own (`scale_parts`): a node of
//! `DOPPEL_BENCH_PASSIVATED` (default 1,000,000) passivated presses — start until the
//! last answers, resident memory, and the p99 latency of a reading that wakes a parked
//! twin, beside the same readings to the same twins awake — and a cloud node's mirror
//! table of `DOPPEL_BENCH_MIRRORS` (default 1,000,000) presses. 0 skips either.
//!
//! The baseline, measured in the same run, is the same node with 10 twins: its start
//! and recover times, and its resident memory. `DOPPEL_BENCH_TWINS` lists the sizes
//! measured (default `10000,100000`); `start_ratio_<size>` is a size's start time over
//! the baseline's, and `rss_bytes_per_twin` is the largest size's. The last line is
//! JSON, with keys per size (`start_s_100k`, `recover_s_100k`, `peak_mb_100k`, …).

mod common;
mod scale_parts;

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::env_or;
use doppel_proto::v1 as pb;
use doppel_proto::v1::twin_service_client::TwinServiceClient;
use tonic::transport::Channel;

/// The press type every twin has.
const TYPES: &str = include_str!("../examples/node/types.toml");
/// The API token of the bench node.
const TOKEN: &str = "scale-bench-operator-token-0123456789";
/// The longest a start may take before the bench gives up.
const START_LIMIT: Duration = Duration::from_secs(900);

/// A plant of `twins` presses, `per_line` to a line.
fn plant(twins: usize, per_line: usize) -> String {
    let mut toml = String::with_capacity(twins * 64);
    toml.push_str("[[plant]]\npath = \"acme/plant-a\"\n");
    for line in 0..twins.div_ceil(per_line) {
        toml.push_str(&format!("[[plant.line]]\nname = \"line-{line}\"\n"));
        for press in 0..per_line.min(twins - line * per_line) {
            toml.push_str(&format!(
                "[[plant.line.machine]]\nname = \"press-{press}\"\ntype = \"press\"\n"
            ));
        }
    }
    toml
}

/// The asset path of the `n`th press.
fn press(n: usize, per_line: usize) -> String {
    format!("acme/plant-a/line-{}/press-{}", n / per_line, n % per_line)
}

/// A node directory with its config; returns the config file and the API address.
fn write_node(dir: &Path, twins: usize, per_line: usize) -> (std::path::PathBuf, String) {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    std::fs::write(dir.join("types.toml"), TYPES).unwrap();
    std::fs::write(dir.join("plant.toml"), plant(twins, per_line)).unwrap();
    let config = dir.join("node.toml");
    std::fs::write(
        &config,
        format!(
            "[node]\ndata_dir = \"data\"\ntypes = \"types.toml\"\nplant = \"plant.toml\"\n\n\
             [api]\nlisten = \"127.0.0.1:{port}\"\n\
             tokens = [{{ name = \"bench\", token = \"{TOKEN}\", role = \"operator\" }}]\n"
        ),
    )
    .unwrap();
    (config, format!("http://127.0.0.1:{port}"))
}

fn spawn(config: &Path) -> Child {
    Command::new(env!("CARGO_BIN_EXE_doppel"))
        .args(["node", "--config"])
        .arg(config)
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap()
}

/// A field of `/proc/<pid>/status` in kB (`VmRSS`, `VmHWM`).
fn status_kb(pid: u32, field: &str) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find_map(|line| line.strip_prefix(field)?.strip_prefix(':'))
        .and_then(|rest| rest.split_whitespace().next()?.parse().ok())
        .unwrap_or(0)
}

async fn client(url: &str) -> Option<TwinServiceClient<Channel>> {
    TwinServiceClient::connect(url.to_string()).await.ok()
}

fn authorized<T>(message: T) -> tonic::Request<T> {
    let mut request = tonic::Request::new(message);
    request
        .metadata_mut()
        .insert("authorization", format!("Bearer {TOKEN}").parse().unwrap());
    request
}

/// Waits until `asset` answers GetTwin; returns the time since `since`.
async fn serving(child: &mut Child, url: &str, asset: &str, since: Instant) -> Duration {
    loop {
        assert!(
            child.try_wait().unwrap().is_none(),
            "doppel node exited while starting"
        );
        assert!(since.elapsed() < START_LIMIT, "{asset} did not answer");
        if let Some(mut client) = client(url).await {
            let answer = client
                .get_twin(authorized(pb::GetTwinRequest {
                    asset_path: asset.to_string(),
                }))
                .await;
            if answer.is_ok() {
                return since.elapsed();
            }
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Sends `count` accepted commands spread over the twins.
async fn command(url: &str, twins: usize, per_line: usize, count: usize) {
    let mut client = client(url).await.expect("the node serves");
    for i in 0..count {
        let asset = press((i * 7919) % twins, per_line);
        let verdict = client
            .send_command(authorized(pb::SendCommandRequest {
                asset_path: asset,
                command: "set_speed".into(),
                params: vec![pb::NamedValue {
                    name: "rpm".into(),
                    value: Some(pb::Value {
                        kind: Some(pb::value::Kind::FloatValue(1000.0 + (i % 100) as f64)),
                    }),
                }],
                ..Default::default()
            }))
            .await;
        assert!(verdict.is_ok(), "{verdict:?}");
    }
}

/// What one node measured.
struct Measured {
    start: Duration,
    recover: Duration,
    idle_rss_kb: u64,
    peak_kb: u64,
}

async fn measure(twins: usize, per_line: usize, commands: usize) -> Measured {
    let dir = tempfile::tempdir().unwrap();
    let (config, url) = write_node(dir.path(), twins, per_line);
    let last = press(twins - 1, per_line);

    let started = Instant::now();
    let mut node = spawn(&config);
    let start = serving(&mut node, &url, &last, started).await;
    tokio::time::sleep(Duration::from_secs(5)).await;
    let idle_rss_kb = status_kb(node.id(), "VmRSS");
    let peak_kb = status_kb(node.id(), "VmHWM");
    command(&url, twins, per_line, commands).await;
    node.kill().unwrap();
    node.wait().unwrap();

    let restarted = Instant::now();
    let mut node = spawn(&config);
    let recover = serving(&mut node, &url, &last, restarted).await;
    node.kill().unwrap();
    node.wait().unwrap();
    Measured {
        start,
        recover,
        idle_rss_kb,
        peak_kb,
    }
}

/// `10k` for 10,000, `100k` for 100,000, `1m` for 1,000,000, else the number.
fn size_key(twins: usize) -> String {
    match twins {
        n if n >= 1_000_000 && n.is_multiple_of(1_000_000) => format!("{}m", n / 1_000_000),
        n if n >= 1_000 && n.is_multiple_of(1_000) => format!("{}k", n / 1_000),
        n => n.to_string(),
    }
}

fn main() {
    if scale_parts::child() {
        return;
    }
    let sizes: Vec<usize> = std::env::var("DOPPEL_BENCH_TWINS")
        .unwrap_or_else(|_| "10000,100000".to_string())
        .split(',')
        .filter_map(|n| n.trim().parse().ok())
        .map(|n: usize| n.max(20))
        .collect();
    let per_line = env_or("DOPPEL_BENCH_PER_LINE", 1_000).max(1);
    let commands = env_or("DOPPEL_BENCH_COMMANDS", 2_000);
    let tokio = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    tokio.block_on(async move {
        let baseline = measure(10, per_line, 100).await;
        println!(
            "baseline, 10 twins: start {:.2} s, recover {:.2} s, idle {} MiB",
            baseline.start.as_secs_f64(),
            baseline.recover.as_secs_f64(),
            baseline.idle_rss_kb / 1024
        );
        let mut json = String::from("{\"scenario\":\"scale\"");
        let mut per_twin = 0;
        for &twins in &sizes {
            let large = measure(twins, per_line, commands).await;
            per_twin =
                large.idle_rss_kb.saturating_sub(baseline.idle_rss_kb) * 1024 / twins as u64;
            println!(
                "{twins} twins in lines of {per_line}: start {:.2} s, recover {:.2} s after {commands} commands and kill -9, \
                 {per_twin} B RSS per idle twin, peak {} MiB (idle {} MiB)",
                large.start.as_secs_f64(),
                large.recover.as_secs_f64(),
                large.peak_kb / 1024,
                large.idle_rss_kb / 1024
            );
            let key = size_key(twins);
            json.push_str(&format!(
                ",\"start_s_{key}\":{:.2},\"recover_s_{key}\":{:.2},\"peak_mb_{key}\":{},\"idle_mb_{key}\":{},\"start_ratio_{key}\":{:.1}",
                large.start.as_secs_f64(),
                large.recover.as_secs_f64(),
                large.peak_kb / 1024,
                large.idle_rss_kb / 1024,
                large.start.as_secs_f64() / baseline.start.as_secs_f64(),
            ));
        }
        let passivated = env_or("DOPPEL_BENCH_PASSIVATED", 1_000_000);
        if passivated > 0 {
            let part = scale_parts::run("passivated", passivated, per_line);
            let key = size_key(passivated);
            json.push_str(&format!(
                ",\"start_s_{key}_passivated\":{},\"rss_mb_{key}_passivated\":{},\"peak_mb_{key}_passivated\":{},\"reactivate_p99_us\":{},\"awake_p99_us\":{},\"reactivate_ratio\":{:.2}",
                part["start_s"],
                part["rss_mb"],
                part["peak_mb"],
                part["reactivate_p99_us"],
                part["awake_p99_us"],
                part["reactivate_p99_us"].as_f64().unwrap_or(0.0)
                    / part["awake_p99_us"].as_f64().unwrap_or(1.0).max(1.0),
            ));
        }
        let mirrors = env_or("DOPPEL_BENCH_MIRRORS", 1_000_000);
        if mirrors > 0 {
            let part = scale_parts::run("mirrors", mirrors, per_line);
            let key = size_key(mirrors);
            json.push_str(&format!(
                ",\"mirrors_mb_{key}\":{},\"mirror_bytes_per_row\":{},\"mirrors_baseline_mb\":{}",
                part["mirrors_mb"], part["bytes_per_row"], part["before_mb"],
            ));
        }
        json.push_str(&format!(
            ",\"rss_bytes_per_twin\":{per_twin},\"per_line\":{per_line},\"baseline_start_s\":{:.2},\"baseline_recover_s\":{:.2}}}",
            baseline.start.as_secs_f64(),
            baseline.recover.as_secs_f64(),
        ));
        println!("{json}");
    });
}
