//! The `[cluster]` table of a node config file.
//!
//! ```toml
//! [cluster]
//! id = "acme-prod"                 # nodes of another cluster id are refused
//! node_id = "edge-a"
//! role = "edge"                    # or "cloud"
//! listen = "0.0.0.0:7100"          # NodeService (gRPC between nodes)
//! advertise = "10.0.0.11:7100"     # optional: the address peers dial (default: listen)
//! gossip = "0.0.0.0:7101"          # membership (UDP)
//! gossip_advertise = "10.0.0.11:7101"  # optional (default: gossip)
//! seeds = ["10.0.0.21:7101"]
//! owns = ["acme/plant-a"]          # edge: the plants or lines this node hosts
//! mirrors = ["acme"]               # cloud: prefixes it mirrors (default: everything)
//! max_clock_skew_ms = 500          # forward deadlines only to peers whose clock is this close
//! gossip_keys = ["gossip.key"]     # seal gossip: the first key seals, each opens (two while rotating)
//!
//! [cluster.outbox]                 # edge
//! max_entries = 100000             # compact above this many unacknowledged entries
//!
//! [cluster.tls]                    # mutual TLS between nodes (paths relative to the file)
//! cert = "node.pem"
//! key = "node.key"
//! ca = "cluster-ca.pem"
//! ```

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use doppel_runtime::AssetPath;
use serde::Deserialize;

use crate::error::ClusterError;

/// A node's role in the cluster.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum NodeRole {
    /// Next to the machines: hosts the twins of the plants or lines it owns.
    Edge,
    /// Holds read-only mirrors of the fleet and runs fleet planners.
    Cloud,
}

impl NodeRole {
    /// The role's name in config and membership.
    pub fn as_str(self) -> &'static str {
        match self {
            NodeRole::Edge => "edge",
            NodeRole::Cloud => "cloud",
        }
    }

    /// Parses a role name.
    pub fn parse(text: &str) -> Option<Self> {
        match text {
            "edge" => Some(NodeRole::Edge),
            "cloud" => Some(NodeRole::Cloud),
            _ => None,
        }
    }
}

impl std::fmt::Display for NodeRole {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The `[cluster]` table.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClusterConfig {
    /// The cluster id: nodes with another id are refused.
    pub id: String,
    /// This node's id, unique in the cluster.
    pub node_id: String,
    /// Edge or cloud.
    pub role: NodeRole,
    /// Where NodeService listens (port 0 picks a free port).
    pub listen: SocketAddr,
    /// The NodeService address peers dial; defaults to `listen`.
    #[serde(default)]
    pub advertise: Option<SocketAddr>,
    /// Where membership gossip listens (UDP).
    pub gossip: SocketAddr,
    /// The gossip address peers use; defaults to `gossip`.
    #[serde(default)]
    pub gossip_advertise: Option<SocketAddr>,
    /// Gossip addresses of nodes to join through.
    #[serde(default)]
    pub seeds: Vec<String>,
    /// Edge: the plants or lines (asset path prefixes) whose twins this node hosts.
    #[serde(default)]
    pub owns: Vec<AssetPath>,
    /// Cloud: the asset path prefixes this node mirrors; empty mirrors everything.
    #[serde(default)]
    pub mirrors: Vec<AssetPath>,
    /// Membership timing.
    #[serde(default)]
    pub membership: MembershipSettings,
    /// Edge: the replication outbox.
    #[serde(default)]
    pub outbox: OutboxSettings,
    /// Mutual TLS between nodes.
    #[serde(default)]
    pub tls: Option<ClusterTls>,
    /// Cloud: fleet planners this node may host.
    #[serde(default)]
    pub planners: PlannerSettings,
    /// The largest clock offset between two nodes under which this node forwards a
    /// command's deadline, in milliseconds. Offsets are estimated from Hello round
    /// trips (every 10 s); a peer whose clock may be off by more is refused commands
    /// with a deadline (FAILED_PRECONDITION), since it could act on one after it
    /// passed. Default 500.
    #[serde(default = "default_max_clock_skew_ms")]
    pub max_clock_skew_ms: u64,
    /// Files of the keys gossip is sealed with (64 hexadecimal digits each, made by
    /// `doppel cluster key`): the first seals what this node sends, each opens what it
    /// receives; two only while a key is rotated. Empty: gossip travels in clear, and
    /// the node says so when it starts.
    #[serde(default)]
    pub gossip_keys: Vec<PathBuf>,
}

fn default_max_clock_skew_ms() -> u64 {
    500
}

/// Membership timing (chitchat gossip and phi-accrual failure detection).
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct MembershipSettings {
    /// Gossip round interval, in milliseconds.
    pub gossip_interval_ms: u64,
    /// Phi-accrual threshold above which a node is considered dead.
    pub phi_threshold: f64,
    /// How long a dead node is remembered before it is forgotten, in seconds.
    pub dead_grace_secs: u64,
}

impl Default for MembershipSettings {
    fn default() -> Self {
        Self {
            gossip_interval_ms: 200,
            phi_threshold: 8.0,
            dead_grace_secs: 3600,
        }
    }
}

impl MembershipSettings {
    /// The gossip interval.
    pub fn gossip_interval(&self) -> Duration {
        Duration::from_millis(self.gossip_interval_ms.max(10))
    }
}

/// The edge node's replication outbox.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct OutboxSettings {
    /// Above this many entries, the entries no cloud node has received are compacted
    /// to the latest value per channel (commands, verdicts and safety actions are
    /// always kept).
    pub max_entries: u64,
    /// Largest batch sent in one message, in bytes.
    pub max_batch_bytes: usize,
}

impl Default for OutboxSettings {
    fn default() -> Self {
        Self {
            max_entries: 100_000,
            max_batch_bytes: 1 << 20,
        }
    }
}

/// Certificates for mutual TLS between nodes.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClusterTls {
    /// This node's certificate chain (PEM).
    pub cert: PathBuf,
    /// Its private key (PEM).
    pub key: PathBuf,
    /// The cluster's certificate authority (PEM): peers must present a certificate it
    /// signed.
    pub ca: PathBuf,
    /// The name to expect in peers' certificates; defaults to the host of the
    /// address dialled.
    #[serde(default)]
    pub server_name: Option<String>,
}

/// Which fleet planners a cloud node may host (one cloud node, chosen by rendezvous
/// hashing over the live cloud nodes, runs each).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct PlannerSettings {
    /// The maintenance scheduler.
    pub maintenance: Option<toml::Table>,
    /// The energy planner.
    pub energy: Option<toml::Table>,
}

impl ClusterConfig {
    /// Resolves relative TLS and gossip key paths against `base` (the config file's
    /// directory).
    pub fn resolve_paths(&mut self, base: &Path) {
        let tls = self
            .tls
            .iter_mut()
            .flat_map(|tls| [&mut tls.cert, &mut tls.key, &mut tls.ca]);
        for path in tls.chain(self.gossip_keys.iter_mut()) {
            if path.is_relative() {
                *path = base.join(&*path);
            }
        }
    }

    /// Checks what parsing cannot.
    pub fn validate(&self) -> Result<(), ClusterError> {
        let bad = |key: &'static str, problem: String| Err(ClusterError::Config { key, problem });
        if self.id.is_empty()
            || self.id.len() > 128
            || !self.id.chars().all(|c| c.is_ascii_graphic())
        {
            return bad(
                "cluster.id",
                format!("`{}` must be 1 to 128 printable ASCII characters", self.id),
            );
        }
        if self.node_id.is_empty()
            || self.node_id.len() > 128
            || !self
                .node_id
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
        {
            return bad(
                "cluster.node_id",
                format!(
                    "`{}` must be 1 to 128 letters, digits, `-`, `_` or `.`",
                    self.node_id
                ),
            );
        }
        match self.role {
            NodeRole::Edge if self.owns.is_empty() => {
                return bad(
                    "cluster.owns",
                    "an edge node must own at least one plant or line".into(),
                );
            }
            NodeRole::Cloud if !self.owns.is_empty() => {
                return bad(
                    "cluster.owns",
                    "a cloud node owns no twins; remove cluster.owns".into(),
                );
            }
            NodeRole::Edge if !self.mirrors.is_empty() => {
                return bad(
                    "cluster.mirrors",
                    "an edge node mirrors nothing; remove cluster.mirrors".into(),
                );
            }
            _ => {}
        }
        for (i, a) in self.owns.iter().enumerate() {
            for b in &self.owns[i + 1..] {
                if covers(a, b) || covers(b, a) {
                    return bad("cluster.owns", format!("lists both `{a}` and `{b}`"));
                }
            }
        }
        if self.gossip_keys.len() > 2 {
            return bad(
                "cluster.gossip_keys",
                format!(
                    "lists {} keys: give one, or two while rotating (the first seals)",
                    self.gossip_keys.len()
                ),
            );
        }
        crate::planner::configured(&self.planners)?;
        Ok(())
    }

    /// The NodeService address peers dial.
    pub fn node_addr(&self) -> SocketAddr {
        self.advertise.unwrap_or(self.listen)
    }

    /// The gossip address peers use.
    pub fn gossip_addr(&self) -> SocketAddr {
        self.gossip_advertise.unwrap_or(self.gossip)
    }
}

/// True when `prefix` is `path` or one of its ancestors.
pub fn covers(prefix: &AssetPath, path: &AssetPath) -> bool {
    prefix_covers(prefix.as_str(), path.as_str())
}

/// True when the path prefix `prefix` is `path` or one of its ancestors (segment-wise;
/// the empty prefix covers everything).
pub fn prefix_covers(prefix: &str, path: &str) -> bool {
    prefix.is_empty()
        || path == prefix
        || (path.len() > prefix.len()
            && path.starts_with(prefix)
            && path.as_bytes()[prefix.len()] == b'/')
}
