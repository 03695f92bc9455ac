//! API benchmark (scenario harness): SendCommand round trips over loopback gRPC with 1
//! and 64 concurrent clients, every verdict durable, and the same for a trivial unary RPC
//! (`grpc.health.v1.Health/Check`) on a bare tonic server in the same run as the baseline.
//! A third server, the floor, answers SendCommand with a fixed verdict as soon as the
//! caller is authenticated: what the same messages, the token check and tonic cost
//! before any runtime work, so the 64-client rate can be read against both.
//!
//! Doppel and the baseline go through the same harness: the servers (and Doppel's
//! runtime) run on a tokio runtime of 2 workers, the clients on a runtime of their own,
//! and the 64 clients share 4 HTTP/2 connections, each client keeping one call in
//! flight. On 2 shared cores, one connection per client cost the bare baseline about
//! a quarter of its rate (each call its own small write on its own socket), and clients
//! on the servers' 2 workers about a sixth.
//!
//! `cargo bench --bench api`. Environment:
//! - `DOPPEL_BENCH_SECS`: each phase's length (default 3);
//! - `DOPPEL_BENCH_CONNECTIONS`: HTTP/2 connections the 64 clients share (default 4);
//! - `DOPPEL_BENCH_CLIENT_WORKERS`: worker threads of the clients' runtime (default 2;
//!   0 runs the clients on the servers' runtime);
//! - `DOPPEL_BENCH_PHASES`: a comma-separated subset of
//!   `base1,cmd1,base64,cmd64,floor64,held1`;
//! - `DOPPEL_BENCH_HOLD_US`: how long the `held1` phase's server holds each call on a
//!   thread of its own before answering (default 300, about a commit with its fsync);
//! - `DOPPEL_BENCH_TRACE=<file>`: adds a single-client SendCommand phase that splits
//!   each call at the runtime's spans (`rpc`, `command`, `audit`) and writes every
//!   call's timestamps (CLOCK_MONOTONIC, ns) to `<file>`, for joining with
//!   `perf record -k mono`.
//!
//! The last line is JSON.

mod common;

use std::future::Future;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::{env_or, process_cpu_ticks, topology_toml};
use doppel::{Runtime, RuntimeSettings, Topology, TwinTypes};
use doppel_api::health::pb::health_check_response::ServingStatus;
use doppel_api::health::pb::health_client::HealthClient;
use doppel_api::health::pb::health_server::{Health, HealthServer};
use doppel_api::health::pb::{HealthCheckRequest, HealthCheckResponse};
use doppel_api::{ApiConfig, ApiServer, Authenticator, Caller, Role, TokenConfig};
use doppel_proto::v1 as pb;
use doppel_proto::v1::twin_service_client::TwinServiceClient;
use doppel_proto::v1::twin_service_server::{TwinService, TwinServiceServer};
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
const SERVER_WORKERS: usize = 2;

/// Where the servers and the clients run.
struct Harness {
    servers: tokio::runtime::Runtime,
    clients: Option<tokio::runtime::Runtime>,
}

impl Harness {
    fn new(client_workers: usize) -> Self {
        let build = |workers: usize, name: &str| {
            tokio::runtime::Builder::new_multi_thread()
                .worker_threads(workers)
                .thread_name(name)
                .enable_all()
                .build()
                .unwrap()
        };
        Self {
            servers: build(SERVER_WORKERS, "bench-server"),
            clients: (client_workers > 0).then(|| build(client_workers, "bench-client")),
        }
    }

    /// Runs `work` on the clients' runtime (a task, so it never runs on this thread),
    /// noting how busy other processes kept the machine meanwhile.
    fn run_clients<F>(&self, work: F) -> Phase
    where
        F: Future<Output = Phase> + Send + 'static,
    {
        let runtime = self.clients.as_ref().unwrap_or(&self.servers);
        let before = CpuTicks::now();
        let task = runtime.spawn(work);
        let mut phase = runtime.block_on(task).unwrap();
        phase.foreign_cpu = CpuTicks::now().foreign_share_since(&before);
        phase
    }
}

/// Jiffies from `/proc/stat` and `/proc/self/stat`: the cores are shared, and a phase
/// that other processes crowded is worth repeating.
struct CpuTicks {
    total: u64,
    busy: u64,
    own: u64,
}

impl CpuTicks {
    fn now() -> Self {
        let stat = std::fs::read_to_string("/proc/stat").unwrap_or_default();
        let cpu: Vec<u64> = stat
            .lines()
            .next()
            .unwrap_or_default()
            .split_whitespace()
            .skip(1)
            .filter_map(|n| n.parse().ok())
            .collect();
        let total: u64 = cpu.iter().take(8).sum();
        // idle and iowait
        let idle = cpu.get(3).copied().unwrap_or(0) + cpu.get(4).copied().unwrap_or(0);
        Self {
            total,
            busy: total - idle,
            own: process_cpu_ticks(),
        }
    }

    /// The share of all cores' time other processes used since `before`.
    fn foreign_share_since(&self, before: &Self) -> f64 {
        let total = self.total.saturating_sub(before.total).max(1) as f64;
        let busy = self.busy.saturating_sub(before.busy);
        let own = self.own.saturating_sub(before.own);
        busy.saturating_sub(own) as f64 / total
    }
}

/// A health service whose Check hands each call to a thread of its own that holds it
/// for a fixed time before the answer goes back, the shape of a SendCommand waiting for
/// its commit: round trip minus hold is what the gRPC path and the thread hand-offs
/// cost around a server-side wait.
struct HeldHealth {
    jobs: std::sync::mpsc::Sender<tokio::sync::oneshot::Sender<()>>,
    holds: Arc<Mutex<Vec<f64>>>,
}

impl HeldHealth {
    fn start(hold: Duration) -> Self {
        let (jobs, queue) = std::sync::mpsc::channel::<tokio::sync::oneshot::Sender<()>>();
        let holds = Arc::new(Mutex::new(Vec::new()));
        let held = holds.clone();
        std::thread::Builder::new()
            .name("bench-holder".into())
            .spawn(move || {
                while let Ok(done) = queue.recv() {
                    let started = Instant::now();
                    // Blocks like an fsync: the thread sleeps, its core may idle.
                    std::thread::sleep(hold);
                    held.lock()
                        .unwrap()
                        .push(started.elapsed().as_secs_f64() * 1e6);
                    let _ = done.send(());
                }
            })
            .unwrap();
        Self { jobs, holds }
    }
}

#[tonic::async_trait]
impl Health for HeldHealth {
    async fn check(
        &self,
        _: tonic::Request<HealthCheckRequest>,
    ) -> Result<tonic::Response<HealthCheckResponse>, tonic::Status> {
        let (done, wait) = tokio::sync::oneshot::channel();
        let stopped = || tonic::Status::unavailable("the holder thread stopped");
        self.jobs.send(done).map_err(|_| stopped())?;
        wait.await.map_err(|_| stopped())?;
        Ok(tonic::Response::new(HealthCheckResponse {
            status: ServingStatus::Serving as i32,
        }))
    }

    type WatchStream = tokio_stream::Empty<Result<HealthCheckResponse, tonic::Status>>;

    async fn watch(
        &self,
        _: tonic::Request<HealthCheckRequest>,
    ) -> Result<tonic::Response<Self::WatchStream>, tonic::Status> {
        Err(tonic::Status::unimplemented("watch"))
    }
}

/// The floor: SendCommand answered with a fixed verdict of the real response's shape
/// once the interceptor has authenticated the caller; every other call unimplemented.
struct FloorTwins;

type Answer<T> = Result<tonic::Response<T>, tonic::Status>;

#[tonic::async_trait]
impl TwinService for FloorTwins {
    async fn get_twin(&self, _: tonic::Request<pb::GetTwinRequest>) -> Answer<pb::GetTwinResponse> {
        Err(tonic::Status::unimplemented("floor"))
    }

    async fn list_twins(
        &self,
        _: tonic::Request<pb::ListTwinsRequest>,
    ) -> Answer<pb::ListTwinsResponse> {
        Err(tonic::Status::unimplemented("floor"))
    }

    async fn recommend(
        &self,
        _: tonic::Request<pb::RecommendRequest>,
    ) -> Answer<pb::RecommendResponse> {
        Err(tonic::Status::unimplemented("floor"))
    }

    type WatchTwinsStream = tokio_stream::Empty<Result<pb::WatchTwinsResponse, tonic::Status>>;

    async fn watch_twins(
        &self,
        _: tonic::Request<pb::WatchTwinsRequest>,
    ) -> Answer<Self::WatchTwinsStream> {
        Err(tonic::Status::unimplemented("floor"))
    }

    async fn send_command(
        &self,
        request: tonic::Request<SendCommandRequest>,
    ) -> Answer<pb::SendCommandResponse> {
        if request.extensions().get::<Caller>().is_none() {
            return Err(tonic::Status::unauthenticated("no caller"));
        }
        let request = request.into_inner();
        Ok(tonic::Response::new(pb::SendCommandResponse {
            command_id: "00000000-0000-4000-8000-000000000000".into(),
            verdict: Some(pb::Verdict {
                outcome: Some(pb::verdict::Outcome::Accepted(pb::Accepted {})),
            }),
            applied: request.params,
            version: 1,
            audit_seq: 1,
            ..Default::default()
        }))
    }

    async fn simulate(
        &self,
        _: tonic::Request<pb::SimulateRequest>,
    ) -> Answer<pb::SimulateResponse> {
        Err(tonic::Status::unimplemented("floor"))
    }

    async fn get_history(
        &self,
        _: tonic::Request<pb::GetHistoryRequest>,
    ) -> Answer<pb::GetHistoryResponse> {
        Err(tonic::Status::unimplemented("floor"))
    }

    async fn list_audit(
        &self,
        _: tonic::Request<pb::ListAuditRequest>,
    ) -> Answer<pb::ListAuditResponse> {
        Err(tonic::Status::unimplemented("floor"))
    }
}

/// Serves `routes` on a loopback port with TCP_NODELAY, as the API server does.
async fn serve_bare(routes: tonic::service::Routes) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr: SocketAddr = listener.local_addr().unwrap();
    tokio::spawn(
        tonic::transport::Server::builder()
            .add_routes(routes)
            .serve_with_incoming(
                tonic::transport::server::TcpIncoming::from(listener).with_nodelay(Some(true)),
            ),
    );
    format!("http://{addr}")
}

/// Latencies of every call in microseconds, sorted, and the calls per second.
async fn run_clients<F, Fut>(clients: usize, secs: f64, call: F) -> (Vec<f64>, f64)
where
    F: Fn(usize, u64) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = ()> + Send,
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

async fn channels(url: &str, count: usize) -> Arc<Vec<Channel>> {
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
    Arc::new(channels)
}

/// `clients` closed-loop clients of the bare health service over `connections`.
async fn bare_calls(url: String, clients: usize, connections: usize, secs: f64) -> Phase {
    let channels = channels(&url, connections).await;
    run_clients(clients, secs, move |client, _| {
        let channel = channels[client % channels.len()].clone();
        async move {
            HealthClient::new(channel)
                .check(HealthCheckRequest {
                    service: String::new(),
                })
                .await
                .unwrap();
        }
    })
    .await
    .into()
}

/// `clients` closed-loop SendCommand clients over `connections`, client `i` commanding
/// twin `i`.
async fn command_calls(
    url: String,
    paths: Arc<Vec<String>>,
    clients: usize,
    connections: usize,
    secs: f64,
) -> Phase {
    let channels = channels(&url, connections).await;
    run_clients(clients, secs, move |client, n| {
        let channel = channels[client % channels.len()].clone();
        let asset = paths[client % paths.len()].clone();
        async move {
            stamps::mark(stamps::Mark::Sent);
            let response = TwinServiceClient::new(channel)
                .send_command(command_request(asset, n))
                .await
                .unwrap()
                .into_inner();
            stamps::mark(stamps::Mark::Received);
            assert!(response.verdict.is_some());
        }
    })
    .await
    .into()
}

fn command_request(asset: String, n: u64) -> tonic::Request<SendCommandRequest> {
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
    request
}

/// One phase's sorted latencies (µs), rate (calls/s) and the share of the machine other
/// processes used meanwhile.
struct Phase {
    latencies: Vec<f64>,
    per_s: f64,
    foreign_cpu: f64,
}

impl From<(Vec<f64>, f64)> for Phase {
    fn from((latencies, per_s): (Vec<f64>, f64)) -> Self {
        Self {
            latencies,
            per_s,
            foreign_cpu: 0.0,
        }
    }
}

impl Phase {
    /// A phase left out by `DOPPEL_BENCH_PHASES`.
    fn skipped() -> Self {
        Self {
            latencies: Vec::new(),
            per_s: f64::NAN,
            foreign_cpu: 0.0,
        }
    }

    fn describe(&self) -> String {
        format!(
            "{:>8.0}/s p50 {:>6.0} µs p99 {:>6.0} µs (others {:>3.0} %)",
            self.per_s,
            percentile(&self.latencies, 0.5),
            percentile(&self.latencies, 0.99),
            self.foreign_cpu * 100.0,
        )
    }
}

fn main() {
    let secs = env_or("DOPPEL_BENCH_SECS", 3) as f64;
    let connections = env_or("DOPPEL_BENCH_CONNECTIONS", 4).max(1);
    let client_workers = env_or("DOPPEL_BENCH_CLIENT_WORKERS", 2);
    let selected = std::env::var("DOPPEL_BENCH_PHASES").ok();
    let wanted = |name: &str| {
        selected
            .as_deref()
            .is_none_or(|list| list.split(',').any(|n| n.trim() == name))
    };
    let hold_us = env_or("DOPPEL_BENCH_HOLD_US", 300);
    let trace_file = std::env::var("DOPPEL_BENCH_TRACE").ok();
    if trace_file.is_some() {
        stamps::install();
    }
    let harness = Harness::new(client_workers);
    let dir = tempfile::tempdir().unwrap();
    let twins_count = 64;
    let types = TwinTypes::from_toml(TYPES, "bench/types.toml").unwrap();
    let topology =
        Topology::from_toml(&topology_toml(twins_count), "bench/plant.toml", &types).unwrap();
    let paths: Arc<Vec<String>> =
        Arc::new(topology.machines().map(|m| m.path.to_string()).collect());
    let held = HeldHealth::start(Duration::from_micros(hold_us as u64));
    let holds = held.holds.clone();
    let (bare_url, held_url, floor_url, runtime, api) = harness.servers.block_on(async {
        // The baseline: a bare tonic server answering a trivial unary RPC.
        let (reporter, health) = doppel_api::health::server::health_reporter();
        reporter
            .set_service_status("", doppel_api::health::ServingStatus::Serving)
            .await;
        let bare_url = serve_bare(tonic::service::Routes::new(health)).await;
        let held_url = serve_bare(tonic::service::Routes::new(HealthServer::new(held))).await;
        let floor = tonic::service::interceptor::InterceptedService::new(
            TwinServiceServer::new(FloorTwins),
            Authenticator::new(&[TokenConfig {
                name: "bench".into(),
                token: TOKEN.into(),
                role: Role::Operator,
            }]),
        );
        let floor_url = serve_bare(tonic::service::Routes::new(floor)).await;
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
        (bare_url, held_url, floor_url, runtime, api)
    });
    let api_url = format!("http://{}", api.addr());

    let mut figures = Vec::new();
    for clients in [1usize, 64] {
        let connections = connections.min(clients);
        let base = if wanted(&format!("base{clients}")) {
            harness.run_clients(bare_calls(bare_url.clone(), clients, connections, secs))
        } else {
            Phase::skipped()
        };
        let cmd = if wanted(&format!("cmd{clients}")) {
            harness.run_clients(command_calls(
                api_url.clone(),
                paths.clone(),
                clients,
                connections,
                secs,
            ))
        } else {
            Phase::skipped()
        };
        println!(
            "{clients:>2} client(s) on {connections} connection(s): SendCommand {} | bare unary {}",
            cmd.describe(),
            base.describe(),
        );
        figures.push((cmd, base));
    }
    let floor = if wanted("floor64") {
        let phase = harness.run_clients(command_calls(
            floor_url,
            paths.clone(),
            64,
            connections.min(64),
            secs,
        ));
        println!(
            "64 clients, SendCommand answered right after authentication (the floor): {}",
            phase.describe()
        );
        phase
    } else {
        Phase::skipped()
    };
    let held = if wanted("held1") {
        holds.lock().unwrap().clear();
        let phase = harness.run_clients(bare_calls(held_url, 1, 1, secs));
        let mut hold = std::mem::take(&mut *holds.lock().unwrap());
        hold.sort_by(f64::total_cmp);
        let hold_p50 = percentile(&hold, 0.5);
        println!(
            " 1 client, server holds each call {hold_us} µs on a thread of its own: {} | hold p50 {hold_p50:.0} µs, the rest p50 {:.0} µs",
            phase.describe(),
            percentile(&phase.latencies, 0.5) - hold_p50,
        );
        (phase, hold_p50)
    } else {
        (Phase::skipped(), f64::NAN)
    };
    if let Some(file) = &trace_file {
        stamps::recording(true);
        let url = api_url.clone();
        let traced = harness.run_clients(command_calls(url, paths.clone(), 1, 1, secs));
        stamps::recording(false);
        println!("traced 1 client: SendCommand {}", traced.describe());
        stamps::report(file);
    }
    harness.servers.block_on(async {
        api.stop().await;
        runtime.shutdown().await;
    });
    let busiest = figures
        .iter()
        .flat_map(|(cmd, base)| [cmd.foreign_cpu, base.foreign_cpu])
        .fold(held.0.foreign_cpu.max(floor.foreign_cpu), f64::max);
    let (cmd1, base1) = &figures[0];
    let (cmd64, base64) = &figures[1];
    println!(
        "{{\"scenario\":\"api\",\"cmd_p50_us_1\":{},\"cmd_p99_us_1\":{},\"cmd_per_s_64\":{},\"baseline_p99_us_1\":{},\"baseline_per_s_64\":{},\"baseline_p50_us_1\":{},\"cmd_p99_us_64\":{},\"connections_64\":{connections},\"client_workers\":{client_workers},\"floor_per_s_64\":{},\"held_p50_us_1\":{},\"held_hold_p50_us\":{},\"others_cpu_max\":{busiest:.2}}}",
        json_number(percentile(&cmd1.latencies, 0.5)),
        json_number(percentile(&cmd1.latencies, 0.99)),
        json_number(cmd64.per_s),
        json_number(percentile(&base1.latencies, 0.99)),
        json_number(base64.per_s),
        json_number(percentile(&base1.latencies, 0.5)),
        json_number(percentile(&cmd64.latencies, 0.99)),
        json_number(floor.per_s),
        json_number(percentile(&held.0.latencies, 0.5)),
        json_number(held.1),
    );
}

/// A whole number, or `null` for a phase that did not run.
fn json_number(value: f64) -> String {
    if value.is_finite() {
        format!("{value:.0}")
    } else {
        "null".into()
    }
}

/// Timestamps of one SendCommand's stages, taken from the client and from the
/// runtime's tracing spans, for the traced phase only.
mod stamps {
    use std::fmt::Write as _;
    use std::sync::Mutex;
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::time::Instant;

    use tracing::span;
    use tracing_subscriber::Layer;
    use tracing_subscriber::filter::Targets;
    use tracing_subscriber::layer::{Context, SubscriberExt};
    use tracing_subscriber::registry::LookupSpan;
    use tracing_subscriber::util::SubscriberInitExt;

    use super::percentile;

    /// A stage boundary of one call, in the order a call passes them.
    #[derive(Debug, Clone, Copy, PartialEq, Eq)]
    pub enum Mark {
        /// The client starts the call.
        Sent,
        /// The `rpc` span opens: tonic has decoded and authenticated the request.
        HandlerStart,
        /// The twin actor takes the command from its mailbox (`command` span opens).
        ActorStart,
        /// The governors have decided (`audit` span opens); the journal write follows.
        Decided,
        /// The batch holding the audit record has committed (`audit` span closes).
        Durable,
        /// The handler has the outcome (its "command answered" event).
        Answered,
        /// The handler has returned (`rpc` span closes).
        HandlerDone,
        /// The client has the response.
        Received,
    }

    const ORDER: [Mark; 8] = [
        Mark::Sent,
        Mark::HandlerStart,
        Mark::ActorStart,
        Mark::Decided,
        Mark::Durable,
        Mark::Answered,
        Mark::HandlerDone,
        Mark::Received,
    ];
    const SEGMENTS: [&str; 7] = [
        "client → handler (gRPC in)",
        "handler → actor (mailbox)",
        "actor: governors, decision",
        "journal: hand-over, commit, fsync",
        "reply → handler",
        "handler → return",
        "return → client (gRPC out)",
    ];

    static RECORDING: AtomicBool = AtomicBool::new(false);
    static MARKS: Mutex<Vec<(Mark, Instant)>> = Mutex::new(Vec::new());

    /// Records `mark` now, while the traced phase runs.
    pub fn mark(mark: Mark) {
        if RECORDING.load(Ordering::Relaxed) {
            MARKS.lock().unwrap().push((mark, Instant::now()));
        }
    }

    pub fn recording(on: bool) {
        RECORDING.store(on, Ordering::SeqCst);
    }

    /// Installs the global subscriber; only Doppel's info spans and events reach it.
    pub fn install() {
        let targets = Targets::new()
            .with_target("doppel_api", tracing::Level::INFO)
            .with_target("doppel_runtime", tracing::Level::INFO);
        tracing_subscriber::registry()
            .with(StampLayer.with_filter(targets))
            .init();
    }

    struct StampLayer;

    impl<S> Layer<S> for StampLayer
    where
        S: tracing::Subscriber + for<'a> LookupSpan<'a>,
    {
        fn on_new_span(&self, attrs: &span::Attributes<'_>, _: &span::Id, _: Context<'_, S>) {
            match attrs.metadata().name() {
                "rpc" => mark(Mark::HandlerStart),
                "command" => mark(Mark::ActorStart),
                "audit" => mark(Mark::Decided),
                _ => {}
            }
        }

        fn on_close(&self, id: span::Id, ctx: Context<'_, S>) {
            match ctx.span(&id).map(|span| span.name()) {
                Some("audit") => mark(Mark::Durable),
                Some("rpc") => mark(Mark::HandlerDone),
                _ => {}
            }
        }

        fn on_event(&self, event: &tracing::Event<'_>, _: Context<'_, S>) {
            let metadata = event.metadata();
            if metadata.target().starts_with("doppel_api")
                && metadata.fields().field("replayed").is_some()
            {
                mark(Mark::Answered);
            }
        }
    }

    /// CLOCK_MONOTONIC in ns, what `perf record -k mono` stamps events with. std keeps
    /// the timespec private; its `Debug` shows it.
    fn monotonic_ns(at: Instant) -> Option<u128> {
        let text = format!("{at:?}");
        let number = |key: &str| -> Option<u128> {
            let rest = &text[text.find(key)? + key.len()..];
            rest.trim_start()
                .split(|c: char| !c.is_ascii_digit())
                .next()?
                .parse()
                .ok()
        };
        Some(number("tv_sec:")? * 1_000_000_000 + number("tv_nsec:")?)
    }

    /// Splits the recorded calls into stages, prints each stage's share of the median
    /// call and of the slowest 1 %, and writes every call's marks to `file`.
    pub fn report(file: &str) {
        let marks = std::mem::take(&mut *MARKS.lock().unwrap());
        let mut calls: Vec<[Instant; 8]> = Vec::new();
        let mut current: Vec<(Mark, Instant)> = Vec::new();
        let mut finish = |current: &mut Vec<(Mark, Instant)>| {
            let found: Option<Vec<Instant>> = ORDER
                .iter()
                .map(|wanted| current.iter().find(|(m, _)| m == wanted).map(|(_, at)| *at))
                .collect();
            if let Some(found) = found
                && found.windows(2).all(|pair| pair[0] <= pair[1])
            {
                calls.push(found.try_into().unwrap());
            }
            current.clear();
        };
        for (mark, at) in marks {
            if mark == Mark::Sent && !current.is_empty() {
                finish(&mut current);
            }
            current.push((mark, at));
        }
        finish(&mut current);
        if calls.is_empty() {
            println!("traced: no complete call recorded");
            return;
        }
        let micros = |from: Instant, to: Instant| to.duration_since(from).as_secs_f64() * 1e6;
        let totals: Vec<f64> = calls.iter().map(|c| micros(c[0], c[7])).collect();
        let mut sorted = totals.clone();
        sorted.sort_by(f64::total_cmp);
        let p50 = percentile(&sorted, 0.5);
        let p99 = percentile(&sorted, 0.99);
        // The calls around the median (45th to 55th percentile) and the slowest 1 %.
        let near_median: Vec<usize> = (0..calls.len())
            .filter(|&i| {
                totals[i] >= percentile(&sorted, 0.45) && totals[i] <= percentile(&sorted, 0.55)
            })
            .collect();
        let tail: Vec<usize> = (0..calls.len()).filter(|&i| totals[i] >= p99).collect();
        let mean = |set: &[usize], segment: usize| {
            set.iter()
                .map(|&i| micros(calls[i][segment], calls[i][segment + 1]))
                .sum::<f64>()
                / set.len() as f64
        };
        println!(
            "traced: {} calls, p50 {p50:.0} µs, p99 {p99:.0} µs; mean per stage around the median ({} calls) | slowest 1 % ({} calls) | stage p50 / p99:",
            calls.len(),
            near_median.len(),
            tail.len()
        );
        for (segment, name) in SEGMENTS.iter().enumerate() {
            let mut alone: Vec<f64> = calls
                .iter()
                .map(|c| micros(c[segment], c[segment + 1]))
                .collect();
            alone.sort_by(f64::total_cmp);
            println!(
                "  {name:<32} {:>7.0} µs | {:>7.0} µs | {:>6.0} / {:>6.0} µs",
                mean(&near_median, segment),
                mean(&tail, segment),
                percentile(&alone, 0.5),
                percentile(&alone, 0.99),
            );
        }
        let mut csv = String::from(
            "sent,handler_start,actor_start,decided,durable,answered,handler_done,received\n",
        );
        let origin = calls[0][0];
        for call in &calls {
            let row: Vec<String> = call
                .iter()
                .map(|at| {
                    monotonic_ns(*at)
                        .unwrap_or_else(|| at.duration_since(origin).as_nanos())
                        .to_string()
                })
                .collect();
            let _ = writeln!(csv, "{}", row.join(","));
        }
        std::fs::write(file, csv).unwrap();
    }
}
