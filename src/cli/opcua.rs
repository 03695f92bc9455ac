//! `doppel opcua trust --config FILE [ENDPOINT]`: trust an OPC UA server in one step.
//! `doppel opcua browse --config FILE [ENDPOINT]`: propose a twin type and mapping from
//! its address space.

use std::io::{BufRead, IsTerminal, Write};
use std::path::PathBuf;

use clap::{Args, Subcommand};
use doppel::NodeConfig;
use doppel::connectors::opcua::{OpcUaConfig, server_certificate, trust};

/// Flags of `doppel opcua`.
#[derive(Args, Debug)]
pub struct OpcUaArgs {
    #[command(subcommand)]
    command: OpcUaCommand,
}

#[derive(Subcommand, Debug)]
enum OpcUaCommand {
    /// Fetch the certificate an OPC UA server presents, show its thumbprint and the
    /// security it offers, and (once confirmed) file it under the connector's trusted
    /// certificates, taking it out of `rejected/`.
    Trust(TrustArgs),
    /// Walk an OPC UA server's address space and print a proposed twin type and
    /// `[[opcua.asset]]` mapping for the variables and methods found, with units and
    /// ranges from the server's EngineeringUnits and EURange.
    Browse(super::opcua_browse::BrowseArgs),
}

/// Flags of `doppel opcua trust`.
#[derive(Args, Debug)]
struct TrustArgs {
    /// The node's config file.
    #[arg(long, value_name = "FILE")]
    config: PathBuf,
    /// The `[[opcua]]` connector, by name; needed when the config has several.
    #[arg(long, value_name = "NAME")]
    connector: Option<String>,
    /// Trust without asking (for scripts): check the thumbprint another way first.
    #[arg(long)]
    yes: bool,
    /// The server's endpoint; the connector's own by default.
    #[arg(value_name = "ENDPOINT")]
    endpoint: Option<String>,
}

/// Runs `doppel opcua …`.
pub async fn run(args: OpcUaArgs) -> Result<(), Box<dyn std::error::Error>> {
    match args.command {
        OpcUaCommand::Trust(args) => run_trust(args).await,
        OpcUaCommand::Browse(args) => super::opcua_browse::run_browse(args).await,
    }
}

async fn run_trust(args: TrustArgs) -> Result<(), Box<dyn std::error::Error>> {
    let config = NodeConfig::from_file(&args.config)?;
    let connector = pick(&config.opcua, args.connector.as_deref())?;
    let data_dir = &config.node.data_dir;
    let certificate = server_certificate(connector, data_dir, args.endpoint.as_deref()).await?;
    println!("server       {}", certificate.endpoint);
    println!("certificate  {}", certificate.common_name);
    println!("thumbprint   {}", certificate.thumbprint);
    println!("valid until  {}", certificate.not_after);
    println!("offers       {}", certificate.offered.join(", "));
    if !args.yes {
        if !std::io::stdin().is_terminal() {
            return Err("not trusted: check the thumbprint with the server's administrator, then run again with --yes".into());
        }
        print!("Is this the server's thumbprint (ask its administrator)? Trust it [y/N]: ");
        std::io::stdout().flush()?;
        let mut answer = String::new();
        std::io::stdin().lock().read_line(&mut answer)?;
        if !matches!(answer.trim(), "y" | "Y" | "yes") {
            return Err("not trusted".into());
        }
    }
    let trusted = trust(connector, data_dir, &certificate)?;
    println!("trusted      {}", trusted.file.display());
    for removed in &trusted.removed_from_rejected {
        println!("removed      {}", removed.display());
    }
    println!(
        "The connector `{}` accepts this server from its next connection attempt.",
        connector.name
    );
    Ok(())
}

/// The connector `name` names, or the only one.
pub(super) fn pick<'a>(
    connectors: &'a [OpcUaConfig],
    name: Option<&str>,
) -> Result<&'a OpcUaConfig, Box<dyn std::error::Error>> {
    let names = || {
        connectors
            .iter()
            .map(|c| c.name.as_str())
            .collect::<Vec<_>>()
            .join(", ")
    };
    match (name, connectors) {
        (_, []) => Err("the config has no [[opcua]] connector".into()),
        (None, [only]) => Ok(only),
        (None, _) => Err(format!(
            "the config has several [[opcua]] connectors ({}): name one with --connector",
            names()
        )
        .into()),
        (Some(name), _) => connectors.iter().find(|c| c.name == name).ok_or_else(|| {
            format!(
                "no [[opcua]] connector `{name}` (the config has: {})",
                names()
            )
            .into()
        }),
    }
}
