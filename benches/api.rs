//! API benchmark (scenario harness): SendCommand round trips over loopback gRPC with 1
//! and 64 concurrent clients (each its own connection), every verdict durable, and
//! the same for a trivial unary RPC (`grpc.health.v1.Health/Check`) on a bare tonic
//! server in the same run as the baseline.
//!
//! `cargo bench --bench api`; `DOPPEL_BENCH_SECS` sets each phase's length (default 3).
//! The last line is JSON.

mod common;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{env_or, topology_toml};
use doppel::{Runtime, RuntimeSettings, Topology, TwinTypes};
use doppel_api::health::pb::HealthCheckRequest;
use doppel_api::health::pb::health_client::HealthClient;
use doppel_api::{ApiConfig, ApiServer, Role};
use doppel_proto::v1::twin_service_client::TwinServiceClient;
use doppel_proto::v1::{NamedValue, SendCommandRequest, Value, value};
use tonic::transport::Channel;

const TYPES: &str = r#"
[types.machine]
description = "benchmark machine"
[types.machine.channels.temperature]
unit = "degC"
range = [-50.0, 1000.0]
[types.machine.desired.speed]
unit = "rpm"
range = [0, 3000]
initial = 1200
[types.machine.commands.set_speed]
params.rpm = { type = "float", min = 0, max = 3000 }
sets = { speed = "rpm" }
[[types.machine.governors]]
kind = "envelope"
desired = "speed"
min = 200
max = 2400
"#;

const TOKEN: &str = "bench-operator-token-0123456789";

/// Latencies of one client's calls, in microseconds, and how many it made.
async fn run_clients<F, Fut>(clients: usize, secs: f64, call: F) -> (Vec<f64>, f64)
where
    F: Fn(usize, u64) -> Fut + Send + Sync + 'static,
    Fut: std::future::Future<Output = ()> + Send,
{
    let call = Arc::new(call);
    let started = Instant::now();
    let until = started + Duration::from_secs_f64(secs);
    let mut tasks = Vec::new();
    for client in 0..clients {
        let call = call.clone();
        tasks.push(tokio::spawn(async move {
            let mut latencies = Vec::new();
            let mut n = 0u64;
            while Instant::now() < until {
                let sent = Instant::now();
                call(client, n).await;
                latencies.push(sent.elapsed().as_secs_f64() * 1e6);
                n += 1;
            }
            latencies
        }));
    }
    let mut all = Vec::new();
    for task in tasks {
        all.extend(task.await.unwrap());
    }
    let elapsed = started.elapsed().as_secs_f64();
    let rate = all.len() as f64 / elapsed;
    all.sort_by(f64::total_cmp);
    (all, rate)
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
}

async fn channels(url: &str, count: usize) -> Vec<Channel> {
    let mut channels = Vec::new();
    for _ in 0..count {
        channels.push(
            Channel::from_shared(url.to_string())
                .unwrap()
                .connect()
                .await
                .unwrap(),
        );
    }
    channels
}

fn main() {
    let secs = env_or("DOPPEL_BENCH_SECS", 3) as f64;
    let tokio = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    tokio.block_on(async move {
        // The baseline: a bare tonic server answering a trivial unary RPC.
        let (reporter, health) = doppel_api::health::server::health_reporter();
        reporter
            .set_service_status("", doppel_api::health::ServingStatus::Serving)
            .await;
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let bare: SocketAddr = listener.local_addr().unwrap();
        tokio::spawn(
            tonic::transport::Server::builder()
                .add_service(health)
                .serve_with_incoming(
                    tonic::transport::server::TcpIncoming::from(listener).with_nodelay(Some(true)),
                ),
        );
        let bare_url = format!("http://{bare}");

        let dir = tempfile::tempdir().unwrap();
        let twins_count = 64;
        let types = TwinTypes::from_toml(TYPES, "bench/types.toml").unwrap();
        let topology =
            Topology::from_toml(&topology_toml(twins_count), "bench/plant.toml", &types).unwrap();
        let paths: Arc<Vec<String>> =
            Arc::new(topology.machines().map(|m| m.path.to_string()).collect());
        let runtime = Runtime::builder()
            .twin_types(types)
            .topology(topology)
            .data_dir(dir.path())
            .settings(RuntimeSettings::default())
            .start()
            .await
            .unwrap();
        let config = ApiConfig::new(SocketAddr::from(([127, 0, 0, 1], 0))).token(
            "bench",
            TOKEN,
            Role::Operator,
        );
        let api = ApiServer::start(config, runtime.twins().clone())
            .await
            .unwrap();
        let api_url = format!("http://{}", api.addr());

        let mut figures = Vec::new();
        for clients in [1usize, 64] {
            let health_channels = Arc::new(channels(&bare_url, clients).await);
            let (base, base_rate) = run_clients(clients, secs, move |client, _| {
                let channel = health_channels[client].clone();
                async move {
                    HealthClient::new(channel)
                        .check(HealthCheckRequest { service: String::new() })
                        .await
                        .unwrap();
                }
            })
            .await;
            let api_channels = Arc::new(channels(&api_url, clients).await);
            let targets = paths.clone();
            let (cmd, cmd_rate) = run_clients(clients, secs, move |client, n| {
                let channel = api_channels[client].clone();
                let asset = targets[client % targets.len()].clone();
                async move {
                    let mut request = tonic::Request::new(SendCommandRequest {
                        asset_path: asset,
                        command: "set_speed".into(),
                        params: vec![NamedValue {
                            name: "rpm".into(),
                            value: Some(Value {
                                kind: Some(value::Kind::FloatValue(1000.0 + (n % 500) as f64)),
                            }),
                        }],
                        ..Default::default()
                    });
                    request
                        .metadata_mut()
                        .insert("authorization", format!("Bearer {TOKEN}").parse().unwrap());
                    let response = TwinServiceClient::new(channel)
                        .send_command(request)
                        .await
                        .unwrap()
                        .into_inner();
                    assert!(response.verdict.is_some());
                }
            })
            .await;
            println!(
                "{clients:>2} client(s): SendCommand {cmd_rate:>8.0}/s p50 {:>6.0} µs p99 {:>6.0} µs | bare unary {base_rate:>8.0}/s p50 {:>6.0} µs p99 {:>6.0} µs",
                percentile(&cmd, 0.5),
                percentile(&cmd, 0.99),
                percentile(&base, 0.5),
                percentile(&base, 0.99),
            );
            figures.push((cmd, cmd_rate, base, base_rate));
        }
        api.stop().await;
        runtime.shutdown().await;
        let (cmd1, _, base1, _) = &figures[0];
        let (_, cmd64_rate, _, base64_rate) = &figures[1];
        println!(
            "{{\"scenario\":\"api\",\"cmd_p50_us_1\":{:.0},\"cmd_p99_us_1\":{:.0},\"cmd_per_s_64\":{cmd64_rate:.0},\"baseline_p99_us_1\":{:.0},\"baseline_per_s_64\":{base64_rate:.0}}}",
            percentile(cmd1, 0.5),
            percentile(cmd1, 0.99),
            percentile(base1, 0.99),
        );
    });
}
