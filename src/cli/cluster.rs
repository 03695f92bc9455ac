//! `doppel cluster status`: a running node's view of its cluster.
//! `doppel cluster certs`: a cluster's certificate authority and one certificate per
//! node, made with rcgen (no openssl command line), ready for `[cluster.tls]` and
//! `[api] tls`, and the key gossip is sealed with. `doppel cluster key`: a new gossip
//! key, to rotate to.

use std::fs::OpenOptions;
use std::io::Write as _;
use std::os::unix::fs::OpenOptionsExt as _;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use clap::{Args, Subcommand};
use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose,
};

/// Flags of `doppel cluster`.
#[derive(Args, Debug)]
pub struct ClusterArgs {
    /// What to do.
    #[command(subcommand)]
    command: ClusterCommand,
}

/// The subcommands of `doppel cluster`.
#[derive(Subcommand, Debug)]
enum ClusterCommand {
    /// Make the cluster's CA (once; an existing one in --out is reused) and a
    /// certificate and key for each node, valid for serverAuth and clientAuth, with
    /// the names and addresses its peers dial.
    Certs(CertsArgs),
    /// Write a new random gossip key (for `cluster.gossip_keys`), e.g. to rotate to.
    Key(KeyArgs),
    /// Show a running node's view of its cluster: members and their roles, which node
    /// runs each fleet planner, and each replication link's state, lag and outbox
    /// depth.
    Status(StatusArgs),
}

/// `doppel cluster status`.
#[derive(Args, Debug)]
#[command(after_help = "\
Examples:
  doppel cluster status --addr http://cloud-1:50051
  doppel cluster status --json

Exit status: 0 when the node answered, 1 when it could not be reached, refused the
call or is not part of a cluster, 2 when the command line is wrong.")]
struct StatusArgs {
    /// Where the node is, and how to call it.
    #[command(flatten)]
    connect: super::twin::ConnectArgs,
}

/// `doppel cluster key`.
#[derive(Args, Debug)]
#[command(after_help = "\
Rotating the key every node seals gossip with takes three rolling restarts:
  1. gossip_keys = [\"gossip.key\", \"gossip-next.key\"]   every node opens both, seals with the old
  2. gossip_keys = [\"gossip-next.key\", \"gossip.key\"]   every node seals with the new
  3. gossip_keys = [\"gossip-next.key\"]")]
struct KeyArgs {
    /// The file to write (readable by its owner only); an existing file is kept.
    #[arg(long, value_name = "FILE")]
    out: PathBuf,
}

/// `doppel cluster certs`.
#[derive(Args, Debug)]
#[command(after_help = "\
Examples:
  doppel cluster certs --out certs --node edge-a=127.0.0.1 --node edge-b=127.0.0.1 --node cloud-1=127.0.0.1
  doppel cluster certs --out certs --node edge-c=10.0.0.13,edge-c.plant.example

Writes ca.pem and ca.key (kept secret: it signs new nodes), gossip.key (kept
secret: it seals the cluster's gossip; for cluster.gossip_keys), and <node>.pem and
<node>.key for each node. An existing CA and gossip key in --out are reused. A certificate must name every address or DNS name its
peers dial: `advertise` and `gossip_advertise` hosts, or `server_name`.")]
struct CertsArgs {
    /// Where the files go (created if missing).
    #[arg(long, value_name = "DIR")]
    out: PathBuf,
    /// A node: its id, then the DNS names and IP addresses peers reach it by,
    /// comma-separated (edge-a=10.0.0.11,edge-a.plant.example). Repeat per node.
    #[arg(long = "node", value_name = "ID=HOST[,HOST…]", required = true)]
    nodes: Vec<String>,
    /// How long the node certificates are valid, in days.
    #[arg(long, value_name = "DAYS", default_value_t = 365)]
    days: u64,
}

/// How long before now a certificate becomes valid, for clocks slightly apart.
const BACKDATED: Duration = Duration::from_secs(3600);
/// How long the CA is valid: ten years.
const CA_VALIDITY: Duration = Duration::from_secs(10 * 365 * 24 * 3600);

/// Runs `doppel cluster`.
pub async fn run(args: ClusterArgs) -> Result<(), Box<dyn std::error::Error>> {
    match args.command {
        ClusterCommand::Certs(certs) => make_certs(&certs),
        ClusterCommand::Status(status) => {
            let target = status.connect.target()?;
            Ok(super::status::show_cluster(&target, status.connect.json).await?)
        }
        ClusterCommand::Key(key) => {
            if gossip_key(&key.out)? {
                println!("made {}", key.out.display());
                Ok(())
            } else {
                Err(format!("{} exists; it was kept", key.out.display()).into())
            }
        }
    }
}

/// Writes a new gossip key to `path` unless a file is there; true when it wrote one.
pub(crate) fn gossip_key(path: &Path) -> Result<bool, String> {
    if path.exists() {
        return Ok(false);
    }
    let key = doppel::cluster::seal::GossipKey::generate().map_err(|error| error.to_string())?;
    write(
        path,
        &format!(
            "# doppel gossip key: keep it secret, give it to every node of the cluster\n{key}\n"
        ),
        true,
    )?;
    Ok(true)
}

/// One node to certify.
#[derive(Debug, PartialEq)]
struct NodeNames {
    id: String,
    names: Vec<String>,
}

fn parse_node(raw: &str) -> Result<NodeNames, String> {
    let (id, hosts) = raw
        .split_once('=')
        .ok_or_else(|| format!("--node `{raw}`: expected ID=HOST[,HOST…]"))?;
    let id = id.trim();
    if id.is_empty()
        || !id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
    {
        return Err(format!(
            "--node `{raw}`: the id must be letters, digits, `-`, `_` or `.`"
        ));
    }
    let names: Vec<String> = hosts
        .split(',')
        .map(str::trim)
        .filter(|h| !h.is_empty())
        .map(str::to_string)
        .collect();
    if names.is_empty() {
        return Err(format!(
            "--node `{raw}`: name at least one address or DNS name its peers dial"
        ));
    }
    Ok(NodeNames {
        id: id.to_string(),
        names,
    })
}

fn validity(params: &mut CertificateParams, lasts: Duration) {
    let now = SystemTime::now();
    params.not_before = (now - BACKDATED).into();
    params.not_after = (now + lasts).into();
}

/// Writes `text` to `path`; `secret` files are readable by their owner only.
pub(crate) fn write(path: &Path, text: &str, secret: bool) -> Result<(), String> {
    let mut options = OpenOptions::new();
    options.write(true).create(true).truncate(true);
    if secret {
        options.mode(0o600);
    }
    options
        .open(path)
        .and_then(|mut file| file.write_all(text.as_bytes()))
        .map_err(|error| format!("{}: {error}", path.display()))
}

/// The CA in `dir`, or a new one written there.
fn certificate_authority(dir: &Path) -> Result<(String, KeyPair, bool), String> {
    let (cert_path, key_path) = (dir.join("ca.pem"), dir.join("ca.key"));
    if cert_path.exists() || key_path.exists() {
        let read = |path: &Path| {
            std::fs::read_to_string(path).map_err(|error| format!("{}: {error}", path.display()))
        };
        let key = KeyPair::from_pem(&read(&key_path)?)
            .map_err(|error| format!("{}: {error}", key_path.display()))?;
        return Ok((read(&cert_path)?, key, false));
    }
    let mut params =
        CertificateParams::new(Vec::<String>::new()).map_err(|error| format!("the CA: {error}"))?;
    params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    params
        .distinguished_name
        .push(DnType::CommonName, "doppel cluster CA");
    validity(&mut params, CA_VALIDITY);
    let key = KeyPair::generate().map_err(|error| format!("the CA's key: {error}"))?;
    let pem = params
        .self_signed(&key)
        .map_err(|error| format!("the CA: {error}"))?
        .pem();
    write(&key_path, &key.serialize_pem(), true)?;
    write(&cert_path, &pem, false)?;
    Ok((pem, key, true))
}

fn make_certs(args: &CertsArgs) -> Result<(), Box<dyn std::error::Error>> {
    let nodes = args
        .nodes
        .iter()
        .map(|raw| parse_node(raw))
        .collect::<Result<Vec<_>, _>>()?;
    if args.days == 0 {
        return Err("--days must be at least 1".into());
    }
    std::fs::create_dir_all(&args.out)
        .map_err(|error| format!("{}: {error}", args.out.display()))?;
    let (ca_pem, ca_key, made) = certificate_authority(&args.out)?;
    let issuer = Issuer::from_ca_cert_pem(&ca_pem, ca_key)
        .map_err(|error| format!("{}: {error}", args.out.join("ca.pem").display()))?;
    println!(
        "{} {}",
        if made { "made" } else { "reused" },
        args.out.join("ca.pem").display()
    );
    let key_path = args.out.join("gossip.key");
    let made = gossip_key(&key_path)?;
    println!(
        "{} {}",
        if made { "made" } else { "reused" },
        key_path.display()
    );
    for node in &nodes {
        let mut params = CertificateParams::new(node.names.clone())
            .map_err(|error| format!("--node {}: {error}", node.id))?;
        params.distinguished_name.push(DnType::CommonName, &node.id);
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = vec![
            ExtendedKeyUsagePurpose::ServerAuth,
            ExtendedKeyUsagePurpose::ClientAuth,
        ];
        validity(&mut params, Duration::from_secs(args.days * 24 * 3600));
        let key = KeyPair::generate().map_err(|error| format!("{}'s key: {error}", node.id))?;
        let certificate = params
            .signed_by(&key, &issuer)
            .map_err(|error| format!("{}: {error}", node.id))?;
        let (cert_path, key_path) = (
            args.out.join(format!("{}.pem", node.id)),
            args.out.join(format!("{}.key", node.id)),
        );
        write(&key_path, &key.serialize_pem(), true)?;
        write(&cert_path, &certificate.pem(), false)?;
        println!(
            "made {} for {} ({} days)",
            cert_path.display(),
            node.names.join(", "),
            args.days
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nodes_are_an_id_and_the_names_peers_dial() {
        assert_eq!(
            parse_node("edge-a=10.0.0.11, edge-a.plant.example").unwrap(),
            NodeNames {
                id: "edge-a".into(),
                names: vec!["10.0.0.11".into(), "edge-a.plant.example".into()],
            }
        );
        assert!(parse_node("edge-a").unwrap_err().contains("ID=HOST"));
        assert!(parse_node("edge-a=").unwrap_err().contains("at least one"));
        assert!(parse_node("edge/a=1.2.3.4").unwrap_err().contains("the id"));
    }
}
