//! `doppel dev`: the simulated plant, its twins and a refreshing view of both.

use std::collections::HashMap;
use std::io::{IsTerminal, Write};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use clap::Args;
use tokio::sync::broadcast::error::TryRecvError;

use doppel::{
    AssetPath, Quality, Reading, RunState, Runtime, Timestamp, Topology, TwinChange, TwinReport,
    TwinTypes,
};
use doppel_runtime::twin::ChannelTarget;

use crate::dev::config::{dev_plant_toml, dev_types_toml};
use crate::dev::sim::Simulator;
use crate::dev::view::{LineRow, MachineRow, MachineState, PlantView, render};

/// Flags of `doppel dev`.
#[derive(Args, Debug)]
pub struct DevArgs {
    /// Where the node keeps its redb file [default: the user's data directory]/doppel/dev.
    #[arg(long, value_name = "DIR")]
    data_dir: Option<PathBuf>,
    /// Run this many seconds, then exit 0 (for scripts).
    #[arg(long, value_name = "SECS")]
    duration: Option<f64>,
    /// Simulated time factor: simulated seconds per real second.
    #[arg(long, value_name = "N", default_value_t = 60.0)]
    speed: f64,
    /// Seed of the simulator's random signals.
    #[arg(long, default_value_t = 7)]
    seed: u64,
}

/// Simulator step.
const TICK: Duration = Duration::from_millis(100);
/// View refresh on a terminal.
const REFRESH_TTY: Duration = Duration::from_millis(500);
/// View print when writing to a pipe or file.
const REFRESH_PLAIN: Duration = Duration::from_secs(2);
/// Event lines kept under the view on a terminal.
const EVENT_LINES: usize = 8;

/// Runs the dev plant until Ctrl-C or `--duration`.
pub async fn run(args: DevArgs) -> Result<(), Box<dyn std::error::Error>> {
    if !(args.speed.is_finite() && args.speed > 0.0) {
        return Err(format!("--speed must be a positive number, not {}", args.speed).into());
    }
    let tty = std::io::stdout().is_terminal();
    init_logging(tty);
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
    let runtime = Runtime::builder()
        .twin_types(types)
        .topology(topology)
        .data_dir(&data_dir)
        .start()
        .await?;
    let twins = runtime.twins().clone();
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

    let mut simulator = Simulator::new(&machines, args.seed, args.speed);
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
    let ctrl_c = tokio::signal::ctrl_c();
    tokio::pin!(ctrl_c);

    loop {
        tokio::select! {
            _ = &mut ctrl_c => break,
            _ = tick.tick() => {}
        }
        let now = Instant::now();
        if stop_at.is_some_and(|at| now >= at) {
            break;
        }
        let dt = now.duration_since(last_step).as_secs_f64();
        last_step = now;
        let source_time = Timestamp::now();
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
                        seq,
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

        loop {
            match actuations.try_recv() {
                Ok(actuation) => {
                    let Some(&machine) = index_of.get(&actuation.asset) else {
                        continue;
                    };
                    for (name, value) in &actuation.changes {
                        simulator.apply_desired(machine, name, value.as_f64());
                    }
                    if actuation.safety {
                        trips += 1;
                        push_event(
                            &mut events,
                            tty,
                            format!(
                                "{:>6.1}s  SAFETY  {}  {} by {}: {}",
                                started.elapsed().as_secs_f64(),
                                actuation.asset,
                                actuation.command,
                                actuation.origin.principal,
                                actuation.reason
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
    runtime.shutdown().await;
    Ok(())
}

fn init_logging(tty: bool) {
    let default = if tty { "error" } else { "warn" };
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .try_init();
}

fn push_event(events: &mut Vec<String>, tty: bool, line: String) {
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
            let machines = line
                .machines
                .iter()
                .flatten()
                .filter_map(|status| {
                    let report = reports.get(&status.asset)?;
                    let entry = twins.entry(&status.asset).ok()?;
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
    }
}

fn machine_row(report: &TwinReport, key_channels: &[usize]) -> MachineRow {
    let key_values = key_channels
        .iter()
        .filter_map(|&channel| report.reported.get(channel))
        .take(4)
        .filter_map(|r| {
            r.sample
                .map(|s| (r.channel.clone(), s.value, r.unit.clone()))
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
        alarms: report.alarms.iter().map(|a| a.code.clone()).collect(),
    }
}
