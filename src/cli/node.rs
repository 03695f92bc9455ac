//! `doppel node --config FILE`: one node with the connectors its config names;
//! `doppel node status`: what a running node's connectors received and what became of
//! it.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use clap::{Args, Subcommand};
use doppel::cluster::Cluster;
use doppel::telemetry::{LogFormat, Telemetry, TelemetryConfig};
use doppel::{Node, NodeConfig};

/// Flags of `doppel node`.
#[derive(Args, Debug)]
#[command(args_conflicts_with_subcommands = true, subcommand_negates_reqs = true)]
pub struct NodeArgs {
    /// Ask a running node instead of running one.
    #[command(subcommand)]
    command: Option<NodeCommand>,
    /// The node's config file (twin types, plant, data directory, connectors).
    #[arg(long, value_name = "FILE", required = true)]
    config: Option<PathBuf>,
    /// Run this many seconds, then stop cleanly (for scripts).
    #[arg(long, value_name = "SECS")]
    duration: Option<f64>,
    /// Export traces and metrics over OTLP/gRPC to this collector (for example
    /// http://127.0.0.1:4317); off by default.
    #[arg(long, value_name = "URL", env = "DOPPEL_OTLP_ENDPOINT")]
    otlp_endpoint: Option<String>,
    /// How log lines on stderr are written: text (coloured only on a terminal) or json
    /// (one object per line, for log shippers).
    #[arg(long, value_name = "FORMAT", default_value = "text")]
    log_format: LogFormat,
}

/// The subcommands of `doppel node`.
#[derive(Subcommand, Debug)]
enum NodeCommand {
    /// Every reading accounted for: per connector, messages received, readings applied,
    /// kept as late, ignored as duplicates, refused by the twins (by reason) and input
    /// dropped (by kind); per data source, what the twins made of its readings.
    Status(StatusArgs),
}

/// `doppel node status`.
#[derive(Args, Debug)]
#[command(after_help = "\
Examples:
  doppel node status
  doppel node status --addr http://edge-1:50051 --json

Exit status: 0 when the node answered, 1 when it could not be reached or refused
the call, 2 when the command line is wrong.")]
struct StatusArgs {
    /// Where the node is, and how to call it.
    #[command(flatten)]
    connect: super::twin::ConnectArgs,
}

/// How often the node prints its counters.
const REPORT_EVERY: Duration = Duration::from_secs(10);

/// Runs the node until Ctrl-C, SIGTERM or `--duration`; or, for `doppel node status`,
/// asks a running node.
pub async fn run(args: NodeArgs) -> Result<(), Box<dyn std::error::Error>> {
    let config_path = match (args.command, args.config) {
        (Some(NodeCommand::Status(status)), _) => {
            let target = status.connect.target()?;
            return Ok(super::status::show(&target, status.connect.json).await?);
        }
        (None, Some(config)) => config,
        (None, None) => return Err("doppel node: --config FILE is required".into()),
    };
    let telemetry = Telemetry::init(&TelemetryConfig {
        service_name: "doppel-node".into(),
        otlp_endpoint: args.otlp_endpoint.clone(),
        log_filter: "info,rumqttd=off".into(),
        log_format: args.log_format,
        ..TelemetryConfig::default()
    })?;
    let config = NodeConfig::from_file(&config_path)?;
    let node = Node::start(config).await?;
    if let Some(cluster) = node.cluster() {
        let result = run_cluster_node(&node, cluster, args.duration, &telemetry).await;
        node.stop().await;
        telemetry.shutdown();
        return result;
    }
    let twins = node.twins().clone();
    if telemetry.exporting() {
        doppel::telemetry::register_node_metrics(&twins);
    }
    println!(
        "doppel node: {} twins, {} MQTT and {} OPC UA connectors",
        twins.len(),
        node.mqtt().len(),
        node.opcua().len()
    );
    if let Some(api) = node.api() {
        println!("  gRPC API (doppel.v1.TwinService) on {}", api.url());
    }
    let started = Instant::now();
    let stop_at = args
        .duration
        .map(|secs| tokio::time::Instant::now() + Duration::from_secs_f64(secs.max(0.0)));
    let mut terminate = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    let mut report = tokio::time::interval(REPORT_EVERY);
    report.tick().await;
    loop {
        let until_stop = async {
            match stop_at {
                Some(at) => tokio::time::sleep_until(at).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            _ = tokio::signal::ctrl_c() => break,
            _ = terminate.recv() => break,
            _ = until_stop => break,
            _ = report.tick() => {
                let counters = twins.counters();
                let dropped = node.dropped();
                tracing::info!(
                    samples_applied = counters.samples_applied,
                    safety_actions = counters.safety_actions,
                    dropped,
                    "node running"
                );
            }
        }
    }
    let counters = twins.counters();
    node.stop().await;
    telemetry.shutdown();
    println!(
        "doppel node: stopped after {:.1} s, {} samples applied, {} safety actions",
        started.elapsed().as_secs_f64(),
        counters.samples_applied,
        counters.safety_actions
    );
    Ok(())
}

/// Runs a cluster node until Ctrl-C, SIGTERM or `duration`, printing membership as
/// it changes.
async fn run_cluster_node(
    node: &Node,
    cluster: &Cluster,
    duration: Option<f64>,
    telemetry: &Telemetry,
) -> Result<(), Box<dyn std::error::Error>> {
    let config = cluster.config();
    let twins = node.twins().clone();
    if telemetry.exporting() {
        doppel::telemetry::register_node_metrics(&twins);
        cluster.register_metrics();
    }
    println!(
        "doppel node {} ({}) of cluster {}: {} twins, NodeService on {}, gossip on {}",
        config.node_id,
        config.role,
        config.id,
        twins.len(),
        cluster.node_addr(),
        cluster.membership().gossip_addr()
    );
    if let Some(api) = node.api() {
        println!("  gRPC API (doppel.v1.TwinService) on {}", api.url());
    }
    let stop_at =
        duration.map(|secs| tokio::time::Instant::now() + Duration::from_secs_f64(secs.max(0.0)));
    let mut terminate = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    let mut members = cluster.members();
    let mut shown = String::new();
    let mut planners = Vec::new();
    let mut fenced = false;
    let mut tick = tokio::time::interval(Duration::from_millis(250));
    loop {
        let live = members.borrow_and_update().clone();
        let names: Vec<String> = live
            .iter()
            .map(|m| match &m.conflict {
                // It yielded its plants to a node that started earlier.
                Some(_) => format!("{}({}, yielded)", m.node_id, m.role),
                None => format!("{}({})", m.node_id, m.role),
            })
            .collect();
        let line = format!("{} live: {}", live.len(), names.join(" "));
        if line != shown {
            println!("members: {line}");
            shown = line;
        }
        if let Some(reason) = twins.fenced()
            && !fenced
        {
            println!("FENCED: this node no longer actuates its twins: {reason}");
            fenced = true;
        }
        let running = cluster.running_planners();
        if running != planners {
            println!("planners here: [{}]", running.join(", "));
            planners = running;
        }
        let until_stop = async {
            match stop_at {
                Some(at) => tokio::time::sleep_until(at).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            _ = tokio::signal::ctrl_c() => break,
            _ = terminate.recv() => break,
            _ = until_stop => break,
            _ = members.changed() => {}
            _ = tick.tick() => {}
        }
    }
    Ok(())
}
