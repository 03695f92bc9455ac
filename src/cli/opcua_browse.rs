//! `doppel opcua browse --config FILE [ENDPOINT]`: walk an OPC UA server's address
//! space as the node's connector would connect, and print a proposed twin type and
//! `[[opcua.asset]]` mapping for the variables and methods found.
//!
//! Standard output carries the two TOML texts, each under a comment line that says
//! which file it goes in; standard error the report: what was proposed, what was left
//! out and why, and whether a bound cut the walk.

use std::io::Write;
use std::path::PathBuf;

use clap::Args;
use doppel::connectors::opcua::{BrowseOptions, browse};
use doppel::{AssetPath, NodeConfig};

use super::opcua::pick;

/// The comment line above the proposed twin type.
const TYPES_HEADER: &str =
    "# ==== twin types: add to the node's types file (`types` in its [node] table) ====";

/// The first words of the comment line above the proposed mapping.
const MAPPING_HEADER: &str = "# ==== node config:";

/// Flags of `doppel opcua browse`.
#[derive(Args, Debug)]
pub struct BrowseArgs {
    /// The node's config file.
    #[arg(long, value_name = "FILE")]
    config: PathBuf,
    /// The `[[opcua]]` connector, by name; needed when the config has several.
    #[arg(long, value_name = "NAME")]
    connector: Option<String>,
    /// The node to walk from (`ns=2;s=Press1`); the Objects folder (`i=85`) by default.
    #[arg(long, value_name = "NODE")]
    root: Option<String>,
    /// The machine's asset path in the plant file (`acme/plant-a/line-1/press-1`).
    #[arg(long, value_name = "PATH")]
    asset: Option<AssetPath>,
    /// The proposed twin type's name; the root's browse name by default.
    #[arg(long = "type", value_name = "NAME")]
    type_name: Option<String>,
    /// How many levels below the root to walk.
    #[arg(long, value_name = "N", default_value_t = BrowseOptions::DEFAULT_MAX_DEPTH)]
    max_depth: usize,
    /// How many nodes to visit at most.
    #[arg(long, value_name = "N", default_value_t = BrowseOptions::DEFAULT_MAX_NODES)]
    max_nodes: usize,
    /// The sampling interval proposed for every channel, in milliseconds.
    #[arg(long, value_name = "MS", default_value_t = BrowseOptions::DEFAULT_SAMPLING_MS)]
    sampling_ms: u64,
    /// The server's endpoint; the connector's own by default.
    #[arg(value_name = "ENDPOINT")]
    endpoint: Option<String>,
}

/// Runs `doppel opcua browse`.
pub async fn run_browse(args: BrowseArgs) -> Result<(), Box<dyn std::error::Error>> {
    let config = NodeConfig::from_file(&args.config)?;
    let connector = pick(&config.opcua, args.connector.as_deref())?;
    let options = BrowseOptions {
        root: args.root,
        asset: args.asset,
        type_name: args.type_name,
        max_depth: args.max_depth,
        max_nodes: args.max_nodes,
        sampling_ms: args.sampling_ms,
    };
    let proposal = browse(
        connector,
        &config.node.data_dir,
        args.endpoint.as_deref(),
        &options,
    )
    .await?;
    let mut out = std::io::stdout().lock();
    writeln!(out, "{TYPES_HEADER}")?;
    write!(out, "{}", proposal.types_toml())?;
    writeln!(out)?;
    writeln!(
        out,
        "{MAPPING_HEADER} put the [[opcua.asset]] table under connector `{}`'s [[opcua]] table in {} ====",
        connector.name,
        args.config.display()
    )?;
    write!(out, "{}", proposal.mapping_toml())?;
    out.flush()?;
    eprint!("{}", proposal.report());
    Ok(())
}
