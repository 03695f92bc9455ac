//! `doppel dev --nodes 3`: the simulated plant as a local cluster on loopback. Two
//! edge nodes split the plant's lines and host their twins; one cloud node mirrors the
//! fleet and serves the gRPC API. The view shows the fleet as the cloud's mirror sees
//! it; commands sent to the cloud are forwarded to the edge that owns the twin.
//!
//! The three nodes run in this process from config files written to the data
//! directory (`cluster/*.toml`), the same files `doppel node --config` would run. With
//! the embedded broker (`--mqtt-port`, 1883 by default), the simulator publishes the
//! plant's telemetry through it and each edge reads the lines it owns from it, as
//! edges sharing a plant broker do.

use std::collections::HashMap;
use std::io::{IsTerminal, Write};
use std::net::{SocketAddr, TcpListener, UdpSocket};
use std::path::Path;
use std::time::{Duration, Instant};

use doppel::Node;
use doppel::cluster::NodeRole;
use doppel::cluster::config::prefix_covers;
use doppel::cluster::mirror::MirrorStore;
use doppel::{
    AssetPath, ChannelTarget, Quality, Reading, Timestamp, Topology, TwinReport, TwinTypes,
};
use tokio::sync::broadcast::error::TryRecvError;

use super::dev::{
    DEFAULT_GRPC_ADDR, DEFAULT_HTTP_ADDR, DevArgs, DevBroker, Listen, REFRESH_PLAIN, REFRESH_TTY,
    TICK, broker_port, init_telemetry, listen_flag, machine_row, push_event, simulated_delivery,
};
use crate::dev::config::{dev_plant_toml, dev_types_toml};
use crate::dev::sim::Simulator;
use crate::dev::view::{LineRow, PlantView, render};

/// The cluster id of the local dev cluster.
const CLUSTER_ID: &str = "doppel-dev";

/// A free loopback port for `kind` ("tcp" or "udp").
fn free_port(udp: bool) -> std::io::Result<u16> {
    if udp {
        Ok(UdpSocket::bind("127.0.0.1:0")?.local_addr()?.port())
    } else {
        Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
    }
}

/// Writes one node's config file.
#[allow(clippy::too_many_arguments)]
fn write_config(
    dir: &Path,
    id: &str,
    role: &str,
    api: Option<SocketAddr>,
    http: Option<SocketAddr>,
    gossip: u16,
    seed: u16,
    owns: &[String],
    token: &str,
    mqtt: Option<&str>,
) -> std::io::Result<std::path::PathBuf> {
    let plant = if role == "edge" {
        "plant = \"plant.toml\"\n"
    } else {
        ""
    };
    let owns = if owns.is_empty() {
        String::new()
    } else {
        let quoted: Vec<String> = owns.iter().map(|o| format!("\"{o}\"")).collect();
        format!("owns = [{}]\n", quoted.join(", "))
    };
    let mut api = match api {
        Some(api) => format!(
            "[api]\nlisten = \"{api}\"\ntokens = [{{ name = \"dev\", token = \"{token}\", role = \"admin\" }}]\n"
        ),
        None => String::new(),
    };
    if let (false, Some(http)) = (api.is_empty(), http) {
        api.push_str(&format!("[api.http]\nlisten = \"{http}\"\n"));
    }
    // The plant's broker: the edge reads the telemetry of the lines it owns from it
    // and sends their commands through it.
    let mqtt = match mqtt {
        Some(url) => format!(
            "[[mqtt]]\nname = \"plant-broker\"\nurl = \"{url}\"\nclient_id = \"doppel-dev-{id}\"\n"
        ),
        None => String::new(),
    };
    let text = format!(
        r#"# A node of the `doppel dev --nodes 3` cluster, written by doppel dev.
[node]
data_dir = "{id}"
types = "types.toml"
{plant}
{api}
{mqtt}
# Development: model packages are accepted unsigned.
[models]
allow_unsigned = true

[cluster]
id = "{CLUSTER_ID}"
node_id = "{id}"
role = "{role}"
listen = "127.0.0.1:0"
gossip = "127.0.0.1:{gossip}"
seeds = ["127.0.0.1:{seed}"]
gossip_keys = ["gossip.key"]
{owns}"#
    );
    let path = dir.join(format!("{id}.toml"));
    std::fs::write(&path, text)?;
    Ok(path)
}

/// Runs the dev plant as a three-node cluster until Ctrl-C or `--duration`.
pub async fn run(args: DevArgs) -> Result<(), Box<dyn std::error::Error>> {
    // SIGTERM (systemd, docker stop, kill) stops as cleanly as Ctrl-C, from the start:
    // a stop that arrives while the plant starts ends it once it has started.
    let mut terminate = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    let tty = std::io::stdout().is_terminal();
    let telemetry = init_telemetry(tty, args.otlp_endpoint.clone(), args.log_format)?;
    let types_toml = dev_types_toml(args.speed);
    let types = TwinTypes::from_toml(&types_toml, "dev/types.toml")?;
    let topology = Topology::from_toml(dev_plant_toml(), "dev/plant.toml", &types)?;
    let data_dir = match &args.data_dir {
        Some(dir) => dir.clone(),
        None => dirs::data_local_dir()
            .or_else(dirs::home_dir)
            .unwrap_or_else(std::env::temp_dir)
            .join("doppel")
            .join("dev"),
    };
    let dir = data_dir.join("cluster");
    std::fs::create_dir_all(&dir)?;
    std::fs::write(dir.join("types.toml"), &types_toml)?;
    std::fs::write(dir.join("plant.toml"), dev_plant_toml())?;
    crate::cli::cluster::gossip_key(&dir.join("gossip.key"))?;
    let token = doppel::api::load_or_create_dev_token(&data_dir).map_err(|error| {
        format!(
            "cannot keep the dev token in {}: {error}",
            data_dir.display()
        )
    })?;

    // Lines alternate between the two edges.
    let lines: Vec<String> = topology
        .plants
        .iter()
        .flat_map(|plant| plant.lines.iter().map(|line| line.path.to_string()))
        .collect();
    let owns: [Vec<String>; 2] = [
        lines.iter().step_by(2).cloned().collect(),
        lines.iter().skip(1).step_by(2).cloned().collect(),
    ];
    let cloud_api = match args.grpc.as_deref() {
        None => Some(DEFAULT_GRPC_ADDR),
        Some("off") => None,
        Some(raw) => Some(raw.parse().map_err(|_| {
            format!("--grpc must be an address such as 127.0.0.1:50051, or off; not `{raw}`")
        })?),
    };
    // The cloud node serves the console (and its cluster page) beside its API.
    let cloud_http = match (
        cloud_api,
        listen_flag("http", args.http.as_deref(), "127.0.0.1:8080")?,
    ) {
        (None, _) | (_, Listen::Off) => None,
        (Some(_), Listen::At(addr)) => Some(addr),
        (Some(_), Listen::Default) => {
            if std::net::TcpListener::bind(DEFAULT_HTTP_ADDR).is_ok() {
                Some(DEFAULT_HTTP_ADDR)
            } else {
                println!(
                    "doppel dev: {DEFAULT_HTTP_ADDR} is taken; running without the console \
                     (use --http ADDR for another address)"
                );
                None
            }
        }
    };
    let broker = broker_port(args.mqtt_port)
        .map(DevBroker::start)
        .transpose()?;
    let mqtt_url = broker.as_ref().map(DevBroker::url);
    let seed = free_port(true)?;
    let cloud_config = write_config(
        &dir,
        "cloud-1",
        "cloud",
        cloud_api,
        cloud_http,
        seed,
        seed,
        &[],
        &token,
        None,
    )?;
    let mut configs = vec![cloud_config];
    for (index, owned) in owns.iter().enumerate() {
        // `--grpc off`: no node serves the API.
        let api: Option<SocketAddr> = match cloud_api {
            Some(_) => Some(format!("127.0.0.1:{}", free_port(false)?).parse()?),
            None => None,
        };
        let id = format!("edge-{}", index + 1);
        configs.push(write_config(
            &dir,
            &id,
            "edge",
            api,
            None,
            free_port(true)?,
            seed,
            owned,
            &token,
            mqtt_url.as_deref(),
        )?);
    }
    let mut nodes = Vec::new();
    let mut actuations = Vec::new();
    for config in &configs {
        let node = Node::start_file(config).await.map_err(|error| {
            format!(
                "{}: {error}{}",
                config.display(),
                if error.to_string().contains("cannot listen") {
                    " (is another doppel running? pick another address with --grpc ADDR)"
                } else {
                    ""
                }
            )
        })?;
        // Right after the node starts, before the cluster forms and the banner says
        // where to send commands: those arriving before the simulator's first step
        // still reach the simulated machines. (The edge serves a few instants
        // before this line; an actuation in that window does not reach them.)
        if node.cluster().map(|c| c.config().role) == Some(NodeRole::Edge) {
            actuations.push((node.twins().clone(), node.twins().actuations()));
        }
        nodes.push(node);
    }
    let (cloud, edges) = nodes.split_first().ok_or("no cloud node")?;
    let cloud_part = cloud
        .cluster()
        .ok_or("the cloud node's config has no [cluster] table")?;
    let mut members = cloud_part.members();
    let formed = tokio::time::timeout(Duration::from_secs(20), async {
        while members.borrow_and_update().len() < 3 {
            if members.changed().await.is_err() {
                break;
            }
        }
    })
    .await;
    if formed.is_err() {
        return Err("the local cluster did not form within 20 s".into());
    }

    let machines: Vec<(String, String)> = topology
        .machines()
        .map(|m| (m.path.to_string(), m.twin_type.clone()))
        .collect();
    let paths: Vec<AssetPath> = topology.machines().map(|m| m.path.clone()).collect();
    let host_of: Vec<usize> = paths
        .iter()
        .map(|path| {
            edges
                .iter()
                .position(|edge| edge.twins().entry(path).is_ok())
                .unwrap_or(0)
        })
        .collect();
    let index_of: HashMap<AssetPath, usize> = paths
        .iter()
        .cloned()
        .enumerate()
        .map(|(i, p)| (p, i))
        .collect();

    println!(
        "doppel dev: a local cluster of 3 nodes, {} machines, configs and data in {}",
        paths.len(),
        dir.display()
    );
    for edge in edges {
        let owned: Vec<String> = edge
            .cluster()
            .map(|c| c.config().owns.iter().map(|p| p.to_string()).collect())
            .unwrap_or_default();
        let api = edge
            .api()
            .map(|api| format!("; API on {}", api.url()))
            .unwrap_or_default();
        println!("  {} (edge): owns {}{api}", node_id(edge), owned.join(", "),);
    }
    if let Some(broker) = &broker {
        let port = broker.port();
        println!(
            "  MQTT broker on localhost:{port}, the edges read their lines from it: watch with `mosquitto_sub -p {port} -t '#' -v`"
        );
    }
    if let Some(api) = cloud.api() {
        println!(
            "  cloud-1 (cloud): mirrors the fleet; API on {}. Watch the fleet and command any twin through it:",
            api.url()
        );
        println!("    export DOPPEL_ADDR={} DOPPEL_TOKEN={token}", api.url());
        println!("    doppel twin watch acme");
        println!("    doppel twin command {} set_speed rpm=1000", paths[0]);
        if let Some(console) = api.console_url() {
            println!("  console on {console}, with the cluster's members and links (same token)");
        }
    }

    let mut simulator = Simulator::new(&machines, args.seed, args.speed);
    for fault in simulator.faults() {
        println!("  injected fault: {fault}");
    }
    let edge_twins: Vec<doppel::Twins> = edges.iter().map(|edge| edge.twins().clone()).collect();
    let sources = edge_twins
        .iter()
        .map(|twins| twins.source("dev-simulator"))
        .collect::<Result<Vec<_>, _>>()?;
    let mut seq = (Timestamp::now().as_micros().max(0) as u64) << 8;
    let mut targets: HashMap<(usize, &'static str), Option<ChannelTarget>> = HashMap::new();
    let started = Instant::now();
    let mut events: Vec<String> = Vec::new();
    let mut trips = 0usize;
    let mut tick = tokio::time::interval(TICK);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut last_step = Instant::now();
    let mut last_view = Instant::now() - REFRESH_PLAIN;
    let refresh = if tty { REFRESH_TTY } else { REFRESH_PLAIN };
    let stop_at = args
        .duration
        .map(|secs| started + Duration::from_secs_f64(secs.max(0.0)));
    let mut mqtt_feed = broker.as_ref().map(DevBroker::feed);
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
        if let Some(feed) = &mut mqtt_feed {
            // Through the plant's broker, as the machines' gateways would publish it.
            let stamp = source_time.to_rfc3339();
            let mut messages = Vec::new();
            simulator.step(dt, &mut |machine, channel, value| {
                seq += 1;
                messages.push((
                    feed.topic(&paths[machine], channel),
                    format!(r#"{{"v":{value:.4},"ts":"{stamp}","seq":{seq}}}"#),
                ));
            });
            for (topic, payload) in messages {
                feed.publish(topic, payload);
            }
        } else {
            let mut batches: Vec<Vec<(ChannelTarget, Reading)>> = vec![Vec::new(); edges.len()];
            simulator.step(dt, &mut |machine, channel, value| {
                let host = host_of[machine];
                let target = *targets
                    .entry((machine, channel))
                    .or_insert_with(|| edge_twins[host].target(&paths[machine], channel).ok());
                if let Some(target) = target {
                    seq += 1;
                    batches[host].push((
                        target,
                        Reading {
                            value,
                            source_time,
                            quality: Quality::Good,
                            source: sources[host],
                            epoch: 0,
                            seq,
                            stamped: true,
                        },
                    ));
                }
            });
            for (host, batch) in batches.into_iter().enumerate() {
                let receipt = edge_twins[host].ingest_batch(batch).await?;
                tokio::spawn(async move {
                    if let Err(error) = receipt.receipt.durable().await {
                        tracing::warn!(%error, "simulated samples not acknowledged");
                    }
                });
            }
        }
        for (twins, receiver) in &mut actuations {
            loop {
                match receiver.try_recv() {
                    Ok(actuation) => {
                        let Some(&machine) = index_of.get(actuation.asset()) else {
                            continue;
                        };
                        for (name, value) in actuation.values() {
                            simulator.apply_desired(machine, name, value.as_f64());
                        }
                        simulated_delivery(twins, &actuation);
                        let what = if actuation.is_safety() {
                            "SAFETY "
                        } else {
                            "COMMAND"
                        };
                        if actuation.is_safety() {
                            trips += 1;
                        }
                        push_event(
                            &mut events,
                            tty,
                            format!(
                                "{:>6.1}s  {what} {}  {} by {}{}",
                                started.elapsed().as_secs_f64(),
                                actuation.asset(),
                                actuation.command(),
                                actuation.origin().principal,
                                if actuation.reason().is_empty() {
                                    String::new()
                                } else {
                                    format!(": {}", actuation.reason())
                                }
                            ),
                        );
                    }
                    Err(TryRecvError::Lagged(_)) => continue,
                    Err(_) => break,
                }
            }
        }
        if now.duration_since(last_view) >= refresh {
            last_view = now;
            let view = fleet_view(
                cloud_part.mirror(),
                edges,
                &paths,
                started.elapsed().as_secs_f64(),
            );
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
    let view = fleet_view(
        cloud_part.mirror(),
        edges,
        &paths,
        started.elapsed().as_secs_f64(),
    );
    print!("{}", render(&view, false));
    let mirrored = cloud_part.mirror().map_or(0, |m| m.len());
    let applied: u64 = edge_twins
        .iter()
        .map(|t| t.counters().samples_applied)
        .sum();
    println!(
        "doppel dev: {:.1} s, {} samples applied on the edges, {} twins mirrored in the cloud, {} safety actions",
        started.elapsed().as_secs_f64(),
        applied,
        mirrored,
        trips
    );
    for node in nodes {
        node.stop().await;
    }
    if let Some(broker) = broker {
        broker.stop().await;
    }
    telemetry.shutdown();
    Ok(())
}

/// A node's id in its cluster.
fn node_id(node: &Node) -> &str {
    node.cluster()
        .map(|c| c.config().node_id.as_str())
        .unwrap_or_default()
}

/// The plant as the cloud's mirror sees it, with line figures from the edges.
fn fleet_view(
    mirror: Option<&MirrorStore>,
    edges: &[Node],
    paths: &[AssetPath],
    elapsed_secs: f64,
) -> PlantView {
    let rows: HashMap<String, TwinReport> = mirror
        .map(|mirror| {
            mirror
                .list("")
                .into_iter()
                .map(|row| (row.report.asset.to_string(), row.report))
                .collect()
        })
        .unwrap_or_default();
    let mut lines = Vec::new();
    let mut worst_lag = Duration::ZERO;
    for edge in edges {
        if let Some(mirror) = mirror {
            worst_lag = worst_lag.max(mirror.lag(node_id(edge)));
        }
        let twins = edge.twins();
        for line in edge.runtime().lines() {
            let machines = paths
                .iter()
                .filter(|path| prefix_covers(line.path.as_str(), path.as_str()))
                .filter_map(|path| {
                    let report = rows.get(path.as_str())?;
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
            lines.push(LineRow {
                path: format!("{} @{}", line.path, node_id(edge)),
                throughput: line.throughput,
                power_kw: line.power_kw,
                energy_kwh: line.energy_kwh,
                worst_health: line.worst_health,
                machines,
            });
        }
    }
    lines.sort_by(|a, b| a.path.cmp(&b.path));
    PlantView {
        title: format!(
            "fleet as mirrored on cloud-1 ({} twins, lag {} ms)",
            rows.len(),
            worst_lag.as_millis()
        ),
        elapsed_secs,
        lines,
        input: edges
            .iter()
            .flat_map(|edge| super::dev::input_rows(edge.twins()))
            .collect(),
    }
}
