//! The `doppel` command: `doppel dev` runs a simulated plant on this machine;
//! `doppel node --config FILE` runs one node with its connectors (`doppel node status`
//! asks a running one what became of its input); `doppel twin …` reads
//! and commands the twins of any node through its gRPC API; `doppel opcua trust` trusts
//! an OPC UA server's certificate and `doppel opcua browse` proposes a twin type from
//! its address space; `doppel types` converts twin types from and to DTDL.

#![forbid(unsafe_code)]

mod cli;
mod dev;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// mimalloc: the runtime allocates and frees small buffers on every thread for every
/// message; glibc's allocator spent a fifth of a loaded node's CPU doing so.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Doppel: an actor runtime for industrial digital twins.
#[derive(Parser)]
#[command(name = "doppel", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run a simulated plant on this machine: nothing to install, nothing to configure.
    Dev(cli::dev::DevArgs),
    /// Run one node from a config file: its twins and the MQTT and OPC UA connectors
    /// that feed them. `doppel node status` asks a running node what its connectors
    /// received and what became of it.
    Node(cli::node::NodeArgs),
    /// Read, watch, command and question the twins of any node through its gRPC API.
    Twin(cli::twin::TwinArgs),
    /// List a node's alarms (ISA-18.2) and acknowledge, shelve or unshelve them.
    Alarm(cli::alarm::AlarmArgs),
    /// Set up a node's OPC UA connections: trust a server's certificate, or browse its
    /// address space for a proposed twin type and mapping.
    Opcua(cli::opcua::OpcUaArgs),
    /// Convert twin types from and to DTDL v3 Interfaces: `import-dtdl FILE…`,
    /// `export-dtdl TYPES_TOML`.
    Types(cli::types::TypesArgs),
    /// Set up a cluster: its certificate authority and each node's certificate; see
    /// a running node's view of its cluster.
    Cluster(cli::cluster::ClusterArgs),
    /// Model packages: make signing keys, sign a package, verify one.
    Model(cli::model::ModelArgs),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("doppel: cannot start the async runtime: {error}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async {
        match cli.command {
            Command::Dev(args) => cli::dev::run(args).await,
            Command::Types(args) => cli::types::run(args).await,
            Command::Node(args) => cli::node::run(args).await,
            Command::Twin(args) => cli::twin::run(args).await,
            Command::Alarm(args) => cli::alarm::run(args).await,
            Command::Opcua(args) => cli::opcua::run(args).await,
            Command::Cluster(args) => cli::cluster::run(args).await,
            Command::Model(args) => cli::model::run(args).await,
        }
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("doppel: {error}");
            ExitCode::from(cli::twin::exit_code(error.as_ref()))
        }
    }
}
