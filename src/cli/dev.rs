//! `doppel dev`: the simulated plant, its twins and a refreshing view of both.

use std::collections::HashMap;
use std::io::{IsTerminal, Write};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use std::net::SocketAddr;

use clap::Args;
use doppel::api::{ApiConfig, ApiError, ApiHandle, ApiServer, Role};
use doppel::cluster::config::prefix_covers;
use doppel::connectors::broker::EmbeddedBroker;
use doppel::connectors::mqtt::{MqttConfig, MqttConnector};
use doppel::telemetry::{LogFormat, Telemetry, TelemetryConfig};
use rumqttc::{AsyncClient, MqttOptions, QoS};
use tokio::sync::broadcast::error::TryRecvError;

use doppel::kernel::twin::ChannelTarget;
use doppel::{
    Actuation, AssetPath, DeliveryOutcome, DeliveryReport, DeliveryState, Quality, Reading,
    RunState, Runtime, RuntimeSettings, Timestamp, Topology, TwinChange, TwinReport, TwinTypes,
    Twins,
};

use crate::dev::config::{dev_model_package, dev_plant_toml, dev_types_toml};
use crate::dev::sim::Simulator;
use crate::dev::view::{InputRow, KeyValue, LineRow, MachineRow, MachineState, PlantView, render};

/// Flags of `doppel dev`.
#[derive(Args, Debug)]
pub struct DevArgs {
    /// Where the node keeps its redb file [default: the user's data directory]/doppel/dev.
    #[arg(long, value_name = "DIR")]
    pub(crate) data_dir: Option<PathBuf>,
    /// Run this many seconds, then exit 0 (for scripts).
    #[arg(long, value_name = "SECS")]
    pub(crate) duration: Option<f64>,
    /// Simulated time factor: simulated seconds per real second.
    #[arg(long, value_name = "N", default_value_t = 60.0)]
    pub(crate) speed: f64,
    /// Seed of the simulator's random signals.
    #[arg(long, default_value_t = 7)]
    pub(crate) seed: u64,
    /// Port of the embedded MQTT broker on localhost [default: 1883]; the simulator
    /// publishes its telemetry through it and the twins read it back. 0: no broker,
    /// the simulator feeds the twins directly.
    #[arg(long, value_name = "PORT")]
    pub(crate) mqtt_port: Option<u16>,
    /// Serve the gRPC API (doppel.v1.TwinService) on this address [default:
    /// 127.0.0.1:50051, skipped with a note when that port is taken]; `off`: no API.
    /// The admin token it prints is kept in the data directory's `dev-token`.
    #[arg(long, value_name = "ADDR")]
    pub(crate) grpc: Option<String>,
    /// Serve the web console and the REST/JSON API on this address, beside the gRPC
    /// API and behind its token [default: 127.0.0.1:8080, skipped with a note when
    /// that port is taken]; `off`: neither.
    #[arg(long, value_name = "ADDR")]
    pub(crate) http: Option<String>,
    /// Export traces and metrics over OTLP/gRPC to this collector (for example
    /// http://127.0.0.1:4317); off by default.
    #[arg(long, value_name = "URL", env = "DOPPEL_OTLP_ENDPOINT")]
    pub(crate) otlp_endpoint: Option<String>,
    /// How log lines on stderr are written: text (coloured only on a terminal) or json
    /// (one object per line, for log shippers).
    #[arg(long, value_name = "FORMAT", default_value = "text")]
    pub(crate) log_format: LogFormat,
    /// 3: run the plant as a local cluster on loopback, two edge nodes that split the
    /// plant's lines and one cloud node that mirrors the fleet and serves the gRPC API
    /// (its address as with `--grpc`). 1: one node.
    #[arg(long, value_name = "N", default_value_t = 1)]
    nodes: u32,
}

/// Where `doppel dev` serves the gRPC API, or the console and REST API.
#[derive(Clone, Copy)]
pub(crate) enum Listen {
    /// The default address, if free.
    Default,
    /// Not at all.
    Off,
    /// This address, or fail.
    At(SocketAddr),
}

/// The embedded broker's port unless `--mqtt-port` says otherwise.
const DEFAULT_MQTT_PORT: u16 = 1883;

/// The port the embedded broker takes: `--mqtt-port`'s (none for 0), else the default
/// one when it is free (none, with a note, when it is taken).
pub(crate) fn broker_port(mqtt_port: Option<u16>) -> Option<u16> {
    match mqtt_port {
        Some(0) => None,
        Some(port) => Some(port),
        None if std::net::TcpListener::bind(("127.0.0.1", DEFAULT_MQTT_PORT)).is_err() => {
            println!(
                "doppel dev: localhost:{DEFAULT_MQTT_PORT} is taken (another MQTT broker?); \
                 running without the embedded broker (use --mqtt-port N for another port)"
            );
            None
        }
        None => Some(DEFAULT_MQTT_PORT),
    }
}
/// The gRPC API's address unless `--grpc` says otherwise.
pub(crate) const DEFAULT_GRPC_ADDR: SocketAddr =
    SocketAddr::new(std::net::IpAddr::V4(std::net::Ipv4Addr::LOCALHOST), 50051);
/// The console's and REST API's address unless `--http` says otherwise.
pub(crate) const DEFAULT_HTTP_ADDR: SocketAddr =
    SocketAddr::new(std::net::IpAddr::V4(std::net::Ipv4Addr::LOCALHOST), 8080);

/// Reads an address flag: an address, or `off`.
pub(crate) fn listen_flag(flag: &str, raw: Option<&str>, example: &str) -> Result<Listen, String> {
    match raw {
        None => Ok(Listen::Default),
        Some("off") => Ok(Listen::Off),
        Some(raw) => raw.parse().map(Listen::At).map_err(|_| {
            format!("--{flag} must be an address such as {example}, or `off`, not `{raw}`")
        }),
    }
}
/// Simulator step.
pub(crate) const TICK: Duration = Duration::from_millis(100);
/// View refresh on a terminal.
pub(crate) const REFRESH_TTY: Duration = Duration::from_millis(500);
/// View print when writing to a pipe or file.
pub(crate) const REFRESH_PLAIN: Duration = Duration::from_secs(2);
/// Event lines kept under the view on a terminal.
const EVENT_LINES: usize = 8;

/// Runs the dev plant until Ctrl-C or `--duration`.
pub async fn run(args: DevArgs) -> Result<(), Box<dyn std::error::Error>> {
    // SIGTERM (systemd, docker stop, kill) stops as cleanly as Ctrl-C, from the start:
    // a stop that arrives while the plant starts ends it once it has started.
    let mut terminate = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    if !(args.speed.is_finite() && args.speed > 0.0) {
        return Err(format!("--speed must be a positive number, not {}", args.speed).into());
    }
    match args.nodes {
        1 => {}
        3 => return super::dev_cluster::run(args).await,
        n => return Err(format!("--nodes takes 1 or 3, not {n}").into()),
    }
    let grpc = listen_flag("grpc", args.grpc.as_deref(), "127.0.0.1:50051")?;
    let http = listen_flag("http", args.http.as_deref(), "127.0.0.1:8080")?;
    let tty = std::io::stdout().is_terminal();
    let telemetry = init_telemetry(tty, args.otlp_endpoint.clone(), args.log_format)?;
    let types = TwinTypes::from_toml(&dev_types_toml(args.speed), "dev/types.toml")?;
    let topology = Topology::from_toml(dev_plant_toml(), "dev/plant.toml", &types)?;
    let data_dir = match args.data_dir {
        Some(dir) => dir,
        None => dirs::data_local_dir()
            .or_else(dirs::home_dir)
            .unwrap_or_else(std::env::temp_dir)
            .join("doppel")
            .join("dev"),
    };
    let machines: Vec<(String, String)> = topology
        .machines()
        .map(|m| (m.path.to_string(), m.twin_type.clone()))
        .collect();
    let mut settings = RuntimeSettings::default();
    // Development: model packages are accepted unsigned (a node is told whom to trust).
    settings.models.allow_unsigned = true;
    let runtime = Runtime::builder()
        .twin_types(types)
        .topology(topology)
        .data_dir(&data_dir)
        .settings(settings)
        .start()
        .await
        .map_err(|error| undecodable_hint(error, &data_dir))?;
    let twins = runtime.twins().clone();
    let package = register_dev_package(&twins, args.speed);
    if telemetry.exporting() {
        doppel::telemetry::register_node_metrics(&twins);
    }
    let paths: Vec<AssetPath> = runtime
        .topology()
        .machines()
        .map(|m| m.path.clone())
        .collect();
    let index_of: HashMap<AssetPath, usize> = paths
        .iter()
        .cloned()
        .enumerate()
        .map(|(i, p)| (p, i))
        .collect();

    let mqtt = match broker_port(args.mqtt_port) {
        Some(port) => Some(DevMqtt::start(port, &twins).await?),
        None => None,
    };
    let api = serve_api(grpc, http, &data_dir, &twins).await?;
    let mut simulator = Simulator::new(&machines, args.seed, args.speed);
    // The simulated machines start where their twins left them on this data
    // directory: a press a trip stopped in an earlier run stays stopped.
    for (machine, path) in paths.iter().enumerate() {
        let report = twins.report(path).await?;
        for (name, desired) in &report.desired {
            if desired.set_at.0 != 0 {
                simulator.apply_desired(machine, name, desired.value.as_f64());
            }
        }
    }
    let source = twins.source("dev-simulator")?;
    // Sequence numbers continue across runs on the same data directory.
    let mut seq = (Timestamp::now().as_micros().max(0) as u64) << 8;
    let mut targets: HashMap<(usize, &'static str), Option<ChannelTarget>> = HashMap::new();
    let mut actuations = twins.actuations();
    let mut changes = twins.subscribe();

    println!(
        "doppel dev: {} machines, data in {}",
        paths.len(),
        data_dir.display()
    );
    if let Some(mqtt) = &mqtt {
        let port = mqtt.broker.port();
        println!(
            "  MQTT broker on localhost:{port}: watch with `mosquitto_sub -p {port} -t '#' -v`"
        );
    }
    if let Some((api, token)) = &api {
        println!(
            "  gRPC API on {} (admin token in {}); for `doppel twin`:",
            api.url(),
            data_dir.join(doppel::api::DEV_TOKEN_FILE).display()
        );
        println!("    export DOPPEL_ADDR={} DOPPEL_TOKEN={token}", api.url());
        if let Some(console) = api.console_url() {
            println!("  console and REST API on {console} (sign in with the same token)");
        }
    }
    if let Some(package) = package {
        println!(
            "  model package {package} registered: try `doppel model deploy {} --type press --to acme/plant-a/line-2 --mode shadow`",
            package.replace(' ', "@")
        );
    }
    for fault in simulator.faults() {
        println!("  injected fault: {fault}");
    }
    let started = Instant::now();
    let mut events: Vec<String> = Vec::new();
    let mut trips = 0usize;
    let mut rul_warnings = 0usize;
    let mut tick = tokio::time::interval(TICK);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut last_step = Instant::now();
    let mut last_view = Instant::now() - REFRESH_PLAIN;
    let refresh = if tty { REFRESH_TTY } else { REFRESH_PLAIN };
    let stop_at = args
        .duration
        .map(|secs| started + Duration::from_secs_f64(secs.max(0.0)));
    let mut mqtt_feed = mqtt.as_ref().map(|mqtt| mqtt.feed());
    let ctrl_c = tokio::signal::ctrl_c();
    tokio::pin!(ctrl_c);

    // A stop (Ctrl-C or the end of --duration) still runs one last step, so the final
    // view holds every command and safety action that happened before it.
    let mut stopping = false;
    loop {
        tokio::select! {
            _ = &mut ctrl_c, if !stopping => stopping = true,
            _ = terminate.recv(), if !stopping => stopping = true,
            _ = tick.tick() => {}
        }
        let now = Instant::now();
        stopping |= stop_at.is_some_and(|at| now >= at);
        let dt = now.duration_since(last_step).as_secs_f64();
        last_step = now;
        let source_time = Timestamp::now();
        if let Some(mqtt) = &mut mqtt_feed {
            // Through the broker, as a machine's gateway would publish it.
            let stamp = source_time.to_rfc3339();
            let mut messages = Vec::new();
            simulator.step(dt, &mut |machine, channel, value| {
                seq += 1;
                messages.push((
                    mqtt.topic(&paths[machine], channel),
                    format!(r#"{{"v":{value:.4},"ts":"{stamp}","seq":{seq}}}"#),
                ));
            });
            for (topic, payload) in messages {
                mqtt.publish(topic, payload);
            }
        } else {
            let mut batch = Vec::with_capacity(machines.len() * 8);
            simulator.step(dt, &mut |machine, channel, value| {
                let target = *targets
                    .entry((machine, channel))
                    .or_insert_with(|| twins.target(&paths[machine], channel).ok());
                if let Some(target) = target {
                    seq += 1;
                    batch.push((
                        target,
                        Reading {
                            value,
                            source_time,
                            quality: Quality::Good,
                            source,
                            epoch: 0,
                            seq,
                            stamped: true,
                        },
                    ));
                }
            });
            // The simulator feeds the same ingest path connectors use; durability is
            // awaited in the background so the physics keeps its pace.
            let receipt = twins.ingest_batch(batch).await?;
            tokio::spawn(async move {
                if let Err(error) = receipt.receipt.durable().await {
                    tracing::warn!(%error, "simulated samples not acknowledged");
                }
            });
        }

        loop {
            match actuations.try_recv() {
                Ok(actuation) => {
                    let Some(&machine) = index_of.get(actuation.asset()) else {
                        continue;
                    };
                    for (name, value) in actuation.values() {
                        simulator.apply_desired(machine, name, value.as_f64());
                    }
                    simulated_delivery(&twins, &actuation);
                    if actuation.is_safety() {
                        trips += 1;
                        push_event(
                            &mut events,
                            tty,
                            format!(
                                "{:>6.1}s  SAFETY  {}  {} by {}: {}",
                                started.elapsed().as_secs_f64(),
                                actuation.asset(),
                                actuation.command(),
                                actuation.origin().principal,
                                actuation.reason()
                            ),
                        );
                    }
                }
                Err(TryRecvError::Lagged(_)) => continue,
                Err(_) => break,
            }
        }
        loop {
            match changes.try_recv() {
                Ok(event) => {
                    if let TwinChange::AlarmRaised(alarm) = &event.change
                        && !alarm.code.starts_with("trip:")
                    {
                        if alarm.code == "rul_low" {
                            rul_warnings += 1;
                        }
                        push_event(
                            &mut events,
                            tty,
                            format!(
                                "{:>6.1}s  ALARM   {}  {} ({:?}): {}",
                                started.elapsed().as_secs_f64(),
                                event.asset,
                                alarm.code,
                                alarm.severity,
                                alarm.message
                            ),
                        );
                    }
                }
                Err(TryRecvError::Lagged(_)) => continue,
                Err(_) => break,
            }
        }

        if now.duration_since(last_view) >= refresh {
            last_view = now;
            let view = build_view(&runtime, &paths, started.elapsed().as_secs_f64()).await;
            let mut out = render(&view, tty);
            if tty {
                out.push('\n');
                for line in &events {
                    out.push_str(line);
                    out.push('\n');
                }
            }
            let mut stdout = std::io::stdout().lock();
            let _ = stdout.write_all(out.as_bytes());
            let _ = stdout.flush();
        }
        if stopping {
            break;
        }
    }

    let view = build_view(&runtime, &paths, started.elapsed().as_secs_f64()).await;
    print!("{}", render(&view, false));
    let counters = twins.counters();
    println!(
        "doppel dev: {:.1} s, {} samples applied, {} safety actions, {} RUL warnings, {} commands",
        started.elapsed().as_secs_f64(),
        counters.samples_applied,
        trips,
        rul_warnings,
        counters.commands_accepted + counters.commands_clamped + counters.commands_denied
    );
    if let Some((api, _)) = api {
        api.stop().await;
    }
    if let Some(mqtt) = mqtt {
        mqtt.stop().await;
    }
    runtime.shutdown().await;
    telemetry.shutdown();
    Ok(())
}

/// Serves the gRPC API and, beside it, the console and REST API, as `--grpc` and
/// `--http` say: a default address that is taken is skipped with a note.
pub(crate) async fn serve_api(
    grpc: Listen,
    http: Listen,
    data_dir: &std::path::Path,
    twins: &doppel::Twins,
) -> Result<Option<(ApiHandle, String)>, Box<dyn std::error::Error>> {
    let grpc_addr = match grpc {
        Listen::Off => {
            if let Listen::At(_) = http {
                println!(
                    "doppel dev: --http needs the gRPC API's token; --grpc off serves neither"
                );
            }
            return Ok(None);
        }
        Listen::At(addr) => addr,
        Listen::Default => DEFAULT_GRPC_ADDR,
    };
    let http_addr = match http {
        Listen::Off => None,
        Listen::At(addr) => Some(addr),
        // Checked before anything binds, so a taken console port never costs the API.
        Listen::Default if std::net::TcpListener::bind(DEFAULT_HTTP_ADDR).is_err() => {
            println!(
                "doppel dev: {DEFAULT_HTTP_ADDR} is taken; running without the console and \
                 REST API (use --http ADDR for another address)"
            );
            None
        }
        Listen::Default => Some(DEFAULT_HTTP_ADDR),
    };
    match start_api(grpc_addr, http_addr, data_dir, twins).await {
        Ok(api) => Ok(Some(api)),
        Err(error) => match taken(error.as_ref()) {
            Some(addr) if matches!(grpc, Listen::Default) && addr == grpc_addr => {
                println!(
                    "doppel dev: {grpc_addr} is taken (another doppel?); running without \
                     the gRPC API and the console (use --grpc ADDR for another address)"
                );
                Ok(None)
            }
            // Taken since the check above: the API goes on without the console.
            Some(addr) if matches!(http, Listen::Default) && Some(addr) == http_addr => {
                println!(
                    "doppel dev: {addr} is taken; running without the console and REST API \
                     (use --http ADDR for another address)"
                );
                Ok(Some(start_api(grpc_addr, None, data_dir, twins).await?))
            }
            _ => Err(error),
        },
    }
}

/// The address a failed start could not bind, if that is why it failed.
fn taken(error: &(dyn std::error::Error + 'static)) -> Option<SocketAddr> {
    match error.downcast_ref() {
        Some(ApiError::Bind { addr, .. }) => Some(*addr),
        _ => None,
    }
}

/// Serves the gRPC API on `addr` (and the console on `http`) for the data directory's
/// dev token (role admin).
async fn start_api(
    addr: SocketAddr,
    http: Option<SocketAddr>,
    data_dir: &std::path::Path,
    twins: &doppel::Twins,
) -> Result<(ApiHandle, String), Box<dyn std::error::Error>> {
    let token = doppel::api::load_or_create_dev_token(data_dir).map_err(|error| {
        format!(
            "cannot keep the dev token in {}: {error}",
            data_dir.display()
        )
    })?;
    let mut config = ApiConfig::new(addr).token("dev", token.clone(), Role::Admin);
    if let Some(http) = http {
        config = config.http(http);
    }
    let api = ApiServer::start(config, twins.clone()).await?;
    Ok((api, token))
}

/// The embedded broker and the simulator's own client that publishes the plant's
/// telemetry through it, as the machines' gateways would.
pub(crate) struct DevBroker {
    broker: EmbeddedBroker,
    simulator: AsyncClient,
    pump: tokio::task::JoinHandle<()>,
}

/// The broker, and the connector that reads the plant from it into the twins.
struct DevMqtt {
    broker: DevBroker,
    connector: MqttConnector,
}

/// The simulator's publishing side: topic names are built once per channel.
pub(crate) struct MqttFeed {
    client: AsyncClient,
    topics: HashMap<(AssetPath, &'static str), String>,
    dropped: u64,
}

impl DevBroker {
    /// Starts the broker on localhost:`port` and connects the simulator to it.
    pub(crate) fn start(port: u16) -> Result<Self, Box<dyn std::error::Error>> {
        let broker = EmbeddedBroker::start(SocketAddr::from(([127, 0, 0, 1], port))).map_err(
            |error| format!("{error} (is another MQTT broker running? pick another port with --mqtt-port N, or 0 for none)"),
        )?;
        let mut options =
            MqttOptions::new("doppel-dev-simulator", "127.0.0.1", broker.addr().port());
        options
            .set_keep_alive(Duration::from_secs(30))
            .set_inflight(u16::MAX);
        let (simulator, mut eventloop) = AsyncClient::new(options, 10_000);
        let pump = tokio::spawn(async move {
            loop {
                if eventloop.poll().await.is_err() {
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
            }
        });
        Ok(Self {
            broker,
            simulator,
            pump,
        })
    }

    /// The broker's `mqtt://` URL.
    pub(crate) fn url(&self) -> String {
        self.broker.url()
    }

    /// The broker's port.
    pub(crate) fn port(&self) -> u16 {
        self.broker.addr().port()
    }

    /// The simulator's publishing side.
    pub(crate) fn feed(&self) -> MqttFeed {
        MqttFeed {
            client: self.simulator.clone(),
            topics: HashMap::new(),
            dropped: 0,
        }
    }

    /// Disconnects the simulator.
    pub(crate) async fn stop(self) {
        let _ = self.simulator.disconnect().await;
        tokio::time::sleep(Duration::from_millis(50)).await;
        self.pump.abort();
    }
}

impl DevMqtt {
    async fn start(port: u16, twins: &doppel::Twins) -> Result<Self, Box<dyn std::error::Error>> {
        let broker = DevBroker::start(port)?;
        let mut config = MqttConfig::new(broker.url());
        config.name = "dev".into();
        let connector = MqttConnector::start(config, twins.clone()).await?;
        if !connector.wait_connected(Duration::from_secs(10)).await {
            return Err("the twins could not connect to the embedded MQTT broker".into());
        }
        Ok(Self { broker, connector })
    }

    fn feed(&self) -> MqttFeed {
        self.broker.feed()
    }

    async fn stop(self) {
        self.connector.stop().await;
        self.broker.stop().await;
    }
}

impl MqttFeed {
    /// The telemetry topic of `asset`'s `channel`.
    pub(crate) fn topic(&mut self, asset: &AssetPath, channel: &'static str) -> String {
        self.topics
            .entry((asset.clone(), channel))
            .or_insert_with(|| format!("{asset}/telemetry/{channel}"))
            .clone()
    }

    /// Publishes at QoS 1 without waiting; a full queue is counted and logged.
    pub(crate) fn publish(&mut self, topic: String, payload: String) {
        if self
            .client
            .try_publish(topic, QoS::AtLeastOnce, false, payload)
            .is_err()
        {
            self.dropped += 1;
            if self.dropped.is_power_of_two() {
                tracing::warn!(
                    dropped = self.dropped,
                    "simulator publishes faster than the broker takes them"
                );
            }
        }
    }
}

pub(crate) fn init_telemetry(
    tty: bool,
    otlp_endpoint: Option<String>,
    log_format: LogFormat,
) -> Result<Telemetry, Box<dyn std::error::Error>> {
    // The embedded broker logs every client that goes away as an error.
    let log_filter = if tty {
        "error,rumqttd=off"
    } else {
        "warn,rumqttd=off"
    };
    Ok(Telemetry::init(&TelemetryConfig {
        service_name: "doppel-dev".into(),
        otlp_endpoint,
        log_filter: log_filter.into(),
        log_format,
        ..TelemetryConfig::default()
    })?)
}

pub(crate) fn push_event(events: &mut Vec<String>, tty: bool, line: String) {
    if !tty {
        println!("{line}");
    }
    events.push(line);
    if events.len() > EVENT_LINES {
        events.remove(0);
    }
}

async fn build_view(runtime: &Runtime, paths: &[AssetPath], elapsed_secs: f64) -> PlantView {
    let twins = runtime.twins();
    let mut reports: HashMap<AssetPath, TwinReport> = HashMap::new();
    for path in paths {
        if let Ok(report) = twins.report(path).await {
            reports.insert(path.clone(), report);
        }
    }
    let lines = runtime
        .lines()
        .into_iter()
        .map(|line| {
            let machines = paths
                .iter()
                .filter(|path| prefix_covers(line.path.as_str(), path.as_str()))
                .filter_map(|path| {
                    let report = reports.get(path)?;
                    let entry = twins.entry(path).ok()?;
                    let keys: Vec<usize> = entry
                        .twin_type
                        .key_channels
                        .iter()
                        .map(|c| c.0 as usize)
                        .collect();
                    Some(machine_row(report, &keys))
                })
                .collect();
            LineRow {
                path: line.path.to_string(),
                throughput: line.throughput,
                power_kw: line.power_kw,
                energy_kwh: line.energy_kwh,
                worst_health: line.worst_health,
                machines,
            }
        })
        .collect();
    PlantView {
        title: runtime
            .plants()
            .iter()
            .map(|p| p.path.to_string())
            .collect::<Vec<_>>()
            .join(", "),
        elapsed_secs,
        lines,
        input: input_rows(twins),
    }
}

/// What each connector received and what became of it; without connectors, what
/// became of each source's readings (the simulator feeding the twins directly).
pub(crate) fn input_rows(twins: &Twins) -> Vec<InputRow> {
    let connectors = twins.connectors();
    if connectors.is_empty() {
        return twins
            .source_counts()
            .into_iter()
            .filter(|(_, counts)| *counts != Default::default())
            .map(|(name, counts)| InputRow {
                name,
                received: None,
                connected: None,
                applied: counts.applied,
                late: counts.late,
                duplicate: counts.duplicate,
                refused: counts.refused,
                dropped: 0,
            })
            .collect();
    }
    connectors
        .into_iter()
        .map(|connector| InputRow {
            received: Some(connector.received),
            connected: Some(connector.connected),
            applied: connector.readings.applied,
            late: connector.readings.late,
            duplicate: connector.readings.duplicate,
            refused: connector.refused_total(),
            dropped: connector.dropped_total(),
            name: connector.name,
        })
        .collect()
}

pub(crate) fn machine_row(report: &TwinReport, key_channels: &[usize]) -> MachineRow {
    let key_values = key_channels
        .iter()
        .filter_map(|&channel| report.reported.get(channel))
        .take(4)
        .filter_map(|r| {
            r.sample.map(|s| KeyValue {
                channel: r.channel.clone(),
                value: s.value,
                unit: r.unit.clone(),
                quality: s.quality,
            })
        })
        .collect();
    MachineRow {
        name: report.asset.name().to_string(),
        twin_type: report.twin_type.clone(),
        state: match report.run_state {
            RunState::Running => MachineState::Run,
            RunState::Stopped => MachineState::Stop,
            RunState::Tripped => MachineState::Trip,
        },
        key_values,
        health: report.health,
        alarms: report
            .alarms
            .iter()
            .filter(|a| a.is_standing())
            .map(|a| a.code.clone())
            .collect(),
        undelivered: report
            .desired
            .iter()
            .filter(|(_, d)| {
                matches!(
                    d.delivery.state,
                    DeliveryState::Pending | DeliveryState::Failed
                )
            })
            .map(|(name, d)| format!("{name} {}", d.delivery.state))
            .collect(),
    }
}

/// Tells the twin that the simulated machine took `actuation`: in `doppel dev` the
/// simulator is the machine, and it applies every value it is sent.
pub(crate) fn simulated_delivery(twins: &Twins, actuation: &Actuation) {
    let report = DeliveryReport {
        asset: actuation.asset().clone(),
        version: actuation.version(),
        desired: actuation.desired_names(),
        by: "simulator".to_string(),
        outcome: DeliveryOutcome::Delivered,
        at: Timestamp::now(),
    };
    if let Err(error) = twins.report_delivery(report) {
        tracing::debug!(%error, "simulated delivery not recorded");
    }
}

/// Registers the model package the dev plant ships (a second degradation version), so
/// it can be deployed without a file. Returns `KIND VERSION` when the registry holds it;
/// `None`, with a note, when it holds another package under that version (from a run
/// at another `--speed` on this data directory).
fn register_dev_package(twins: &Twins, speed: f64) -> Option<String> {
    match twins.register_package(&dev_model_package(speed), "doppel dev") {
        Ok((package, _)) => Some(format!("{} {}", package.kind, package.version)),
        Err(error) => {
            println!("  the dev model package was not registered: {error}");
            None
        }
    }
}

/// A start error, with what to do when the dev plant's data does not decode: it was
/// written by another build of doppel, and the dev plant can start afresh elsewhere.
fn undecodable_hint(
    error: doppel::StartError,
    data_dir: &std::path::Path,
) -> Box<dyn std::error::Error> {
    use doppel::kernel::journal::StoreError;
    let undecodable = matches!(
        &error,
        doppel::StartError::Kernel(doppel::Error::Journal(StoreError::Encoding(_)))
    );
    if undecodable {
        format!(
            "{error}: the dev plant's data in {} does not decode (another build of doppel may have written it); move it away, or pass --data-dir, to start the dev plant afresh",
            data_dir.display()
        )
        .into()
    } else {
        error.into()
    }
}
