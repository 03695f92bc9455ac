//! Membership: who is in the cluster, over chitchat gossip with phi-accrual failure
//! detection.
//!
//! Every node publishes its announcement as chitchat key-values (role, NodeService and
//! public API addresses, the prefixes it owns or mirrors, its start time and, when it
//! found one, an ownership conflict). Chitchat's `cluster_id` keeps clusters apart: a
//! node of another cluster is answered `BadCluster` and never merged. A node's chitchat
//! id carries its start time as generation, so a restarted node is a new generation and
//! the old one simply dies.
//!
//! # Failure detection
//!
//! Chitchat's detector computes phi as the time since a node's last heartbeat divided by
//! the mean interval between its heartbeats, and declares the node dead once phi exceeds
//! [`MembershipSettings::phi_threshold`]; liveness is re-evaluated every gossip round.
//! Heartbeats are relayed by every peer, so they arrive more often than once per round
//! (about every 80 ms with 200 ms rounds on three nodes). Learned alone, that rhythm
//! would declare a node dead after well under a second of silence, and a busy edge
//! box would flap. So the mean also counts a prior of five samples of five gossip
//! intervals each over a window of the last 20 intervals: the mean never drops below
//! one gossip interval, and a node is declared dead after roughly
//! `phi_threshold × (gossip interval + 0.8 × observed interval)` of silence plus one
//! round. With the defaults (200 ms rounds, threshold 8) that is about 2 to 2.5 seconds
//! (measured: 2.3 s on loopback); during a node's first second in the cluster, while
//! the prior still dominates, it can take up to about 7 seconds.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use chitchat::transport::{Transport, UdpTransport};
use chitchat::{
    ChitchatConfig, ChitchatHandle, ChitchatId, FailureDetectorConfig, NodeState, ProtocolVersion,
    spawn_chitchat,
};
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tracing::{debug, info, warn};

use crate::config::{MembershipSettings, NodeRole};
use crate::error::ClusterError;
use crate::seal::{GossipKeys, SealCounters, SealedTransport};

/// Key of the node's role (`edge` or `cloud`).
const KEY_ROLE: &str = "role";
/// Key of the NodeService address.
const KEY_NODE_ADDR: &str = "node_addr";
/// Key of the public API address; absent when the node serves none.
const KEY_API_ADDR: &str = "api_addr";
/// Key of the owned prefixes (a JSON array of strings).
const KEY_OWNS: &str = "owns";
/// Key of the mirrored prefixes (a JSON array of strings).
const KEY_MIRRORS: &str = "mirrors";
/// Key of the start time, milliseconds since the Unix epoch.
const KEY_STARTED_AT_MS: &str = "started_at_ms";
/// Key of the ownership conflict this node found; absent when none.
const KEY_CONFLICT: &str = "conflict";

/// Heartbeat intervals the failure detector keeps per node: about two seconds of
/// history, so it adapts quickly to a slower or faster rhythm.
const SAMPLING_WINDOW_SIZE: usize = 20;
/// The detector's prior mean heartbeat interval, in gossip intervals. Chitchat weighs
/// the prior as five samples; against a window of 20 this keeps the mean at one gossip
/// interval or more (see the module docs).
const PRIOR_INTERVAL_IN_INTERVALS: u32 = 5;
/// Heartbeat gaps longer than this many gossip intervals (a partition, a paused
/// process) are not learned as normal, so one long gap does not slow detection for good.
const MAX_LEARNED_GAP_IN_INTERVALS: u32 = 25;

/// One live node as membership sees it.
#[derive(Debug, Clone, PartialEq)]
pub struct Member {
    /// The node's id, unique in the cluster.
    pub node_id: String,
    /// Edge or cloud.
    pub role: NodeRole,
    /// Where its NodeService (gRPC between nodes) listens.
    pub node_addr: SocketAddr,
    /// Where its public TwinService listens, if it serves one.
    pub api_addr: Option<SocketAddr>,
    /// Edge: the asset path prefixes (plants or lines) it owns.
    pub owns: Vec<String>,
    /// Cloud: the asset path prefixes it mirrors; empty mirrors everything.
    pub mirrors: Vec<String>,
    /// When the node started, in milliseconds since the Unix epoch.
    pub started_at_ms: u64,
    /// Set when this node found an ownership conflict (and refuses ownership).
    pub conflict: Option<String>,
}

/// What a node announces about itself.
#[derive(Debug, Clone)]
pub struct Announcement {
    /// The node's id, unique in the cluster.
    pub node_id: String,
    /// Edge or cloud.
    pub role: NodeRole,
    /// Where its NodeService listens (the address peers dial).
    pub node_addr: SocketAddr,
    /// Where its public TwinService listens, if it serves one.
    pub api_addr: Option<SocketAddr>,
    /// Edge: the asset path prefixes it owns.
    pub owns: Vec<String>,
    /// Cloud: the asset path prefixes it mirrors; empty mirrors everything.
    pub mirrors: Vec<String>,
}

/// Publishes or clears this node's ownership conflict in its gossip state, for every
/// peer (and `doppel twin members`-style listings) to see.
#[derive(Clone)]
pub struct ConflictFlag(Arc<tokio::sync::Mutex<chitchat::Chitchat>>);

impl ConflictFlag {
    /// Publishes (`Some`) or clears (`None`) the conflict.
    pub async fn set(&self, conflict: Option<String>) {
        let mut chitchat = self.0.lock().await;
        let state = chitchat.self_node_state();
        match conflict {
            Some(conflict) => state.set(KEY_CONFLICT, conflict),
            // Deleting an absent key would only log a warning.
            None if state.get(KEY_CONFLICT).is_some() => state.delete(KEY_CONFLICT),
            None => {}
        }
    }
}

/// This node's membership in the cluster: gossips its announcement and follows the live
/// members. Dropping it stops gossiping too; [`Membership::shutdown`] waits for it.
pub struct Membership {
    /// The chitchat server.
    chitchat: ChitchatHandle,
    /// The gossip address bound.
    gossip_addr: SocketAddr,
    /// The live members, kept current by `follower`.
    live: watch::Receiver<Arc<Vec<Member>>>,
    /// Maps chitchat's live nodes into `live`.
    follower: JoinHandle<()>,
    /// Gossip datagrams sealed, opened and dropped; `None` when gossip is in clear.
    sealed: Option<Arc<SealCounters>>,
}

impl Membership {
    /// Joins the cluster `cluster_id`: binds `gossip_listen` (UDP), announces
    /// `gossip_advertise` to peers, gossips with `seeds` (host:port strings).
    ///
    /// Port 0 in `gossip_listen` picks a free port; port 0 in `gossip_advertise` stands
    /// for the port picked. With `keys`, every datagram is sealed (see [`crate::seal`]);
    /// without, gossip travels in clear and a warning says so.
    pub async fn start(
        cluster_id: &str,
        me: Announcement,
        gossip_listen: SocketAddr,
        gossip_advertise: SocketAddr,
        seeds: Vec<String>,
        settings: &MembershipSettings,
        keys: Option<GossipKeys>,
    ) -> Result<Membership, ClusterError> {
        let gossip_listen = bindable_address(gossip_listen)?;
        let gossip_advertise = if gossip_advertise.port() == 0 {
            SocketAddr::new(gossip_advertise.ip(), gossip_listen.port())
        } else {
            gossip_advertise
        };
        if gossip_advertise.ip().is_unspecified() {
            warn!(
                gossip_advertise = %gossip_advertise,
                "gossip advertise address is unspecified; peers on other hosts cannot reach this node"
            );
        }

        let started_at_ms = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |since_epoch| {
                u64::try_from(since_epoch.as_millis()).unwrap_or(u64::MAX)
            });
        let myself = Member {
            node_id: me.node_id.clone(),
            role: me.role,
            node_addr: me.node_addr,
            api_addr: me.api_addr,
            owns: me.owns.clone(),
            mirrors: me.mirrors.clone(),
            started_at_ms,
            conflict: None,
        };
        let config = ChitchatConfig {
            // The start time as generation: a restarted node is a new generation.
            chitchat_id: ChitchatId::new(me.node_id.as_str(), started_at_ms, gossip_advertise),
            cluster_id: cluster_id.to_string(),
            gossip_interval: settings.gossip_interval(),
            listen_addr: gossip_listen,
            seed_nodes: seeds,
            failure_detector_config: failure_detector_config(settings),
            marked_for_deletion_grace_period: Duration::from_secs(settings.dead_grace_secs),
            catchup_callback: None,
            extra_liveness_predicate: None,
            // Every Doppel node runs chitchat 0.13, which decodes the compressed digest.
            protocol_version: ProtocolVersion::V1,
        };
        let sealed = keys.as_ref().map(|_| Arc::new(SealCounters::default()));
        let transport: Box<dyn Transport> = match (keys, &sealed) {
            (Some(keys), Some(counters)) => Box::new(SealedTransport::new(keys, counters.clone())),
            _ => {
                warn!(
                    "cluster gossip is not sealed: node ids, addresses and roles travel in clear \
                     and any host that reaches the gossip port can take part; set \
                     cluster.gossip_keys (`doppel cluster key`)"
                );
                Box::new(UdpTransport)
            }
        };
        let chitchat = spawn_chitchat(config, announcement_key_values(&myself), &*transport)
            .await
            .map_err(|error| ClusterError::Membership(error.into()))?;

        let chitchat_live = chitchat.chitchat().lock().await.live_nodes_watcher();
        let (live_sender, live) = watch::channel(Arc::new(vec![myself]));
        let follower = tokio::spawn(follow_live_nodes(chitchat_live, live_sender));
        info!(
            cluster = cluster_id,
            node = %me.node_id,
            role = %me.role,
            gossip = %gossip_listen,
            gossip_advertise = %gossip_advertise,
            sealed = sealed.is_some(),
            "joined cluster membership"
        );
        Ok(Membership {
            chitchat,
            gossip_addr: gossip_listen,
            live,
            follower,
            sealed,
        })
    }

    /// Gossip datagrams sealed, opened and dropped since the node started; `None` when
    /// gossip travels in clear.
    pub fn seal_counters(&self) -> Option<&SealCounters> {
        self.sealed.as_deref()
    }

    /// The gossip address actually bound (port 0 picks a free one).
    pub fn gossip_addr(&self) -> SocketAddr {
        self.gossip_addr
    }

    /// Live members, this node included, sorted by node id.
    pub fn live(&self) -> Arc<Vec<Member>> {
        self.live.borrow().clone()
    }

    /// Follows the live member list; changes whenever a node joins, dies or changes its
    /// announcement.
    pub fn watch(&self) -> watch::Receiver<Arc<Vec<Member>>> {
        self.live.clone()
    }

    /// Waits until `n` members are live (this node included), or the timeout passes
    /// (returns false).
    pub async fn wait_for_live(&self, n: usize, timeout: Duration) -> bool {
        let mut live = self.live.clone();
        matches!(
            tokio::time::timeout(timeout, live.wait_for(|members| members.len() >= n)).await,
            Ok(Ok(_))
        )
    }

    /// Publishes (`Some`) or clears (`None`) this node's conflict key.
    pub async fn set_conflict(&self, conflict: Option<String>) {
        self.conflict_flag().set(conflict).await;
    }

    /// A handle that publishes or clears this node's conflict key from another task.
    pub fn conflict_flag(&self) -> ConflictFlag {
        ConflictFlag(self.chitchat.chitchat())
    }

    /// Leaves: stops gossiping (peers then see this node die).
    pub async fn shutdown(self) {
        let node = self.chitchat.chitchat_id().node_id.clone();
        if let Err(error) = self.chitchat.shutdown().await {
            warn!(node = %node, error = %error, "gossip stopped with an error");
        }
        self.follower.abort();
        info!(node = %node, "left cluster membership");
    }
}

/// Maps every change of chitchat's live nodes into the member list, until chitchat stops.
async fn follow_live_nodes(
    mut chitchat_live: watch::Receiver<BTreeMap<ChitchatId, NodeState>>,
    live: watch::Sender<Arc<Vec<Member>>>,
) {
    loop {
        let members = {
            let nodes = chitchat_live.borrow_and_update();
            // Empty only before chitchat's first round: keep the self-only list.
            (!nodes.is_empty()).then(|| members_from(&nodes))
        };
        if let Some(members) = members {
            live.send_if_modified(|current| {
                if **current == members {
                    return false;
                }
                *current = Arc::new(members);
                true
            });
        }
        if chitchat_live.changed().await.is_err() {
            return;
        }
    }
}

/// The members among chitchat's live nodes, sorted by node id. Nodes whose announcement
/// is incomplete are left out; of two live generations of one node, the newer counts.
fn members_from(nodes: &BTreeMap<ChitchatId, NodeState>) -> Vec<Member> {
    let mut newest: BTreeMap<&str, (u64, Member)> = BTreeMap::new();
    for (chitchat_id, state) in nodes {
        let member = match member_from(chitchat_id, state) {
            Ok(member) => member,
            Err(reason) => {
                debug!(node = %chitchat_id.node_id, reason, "ignoring node with an incomplete announcement");
                continue;
            }
        };
        let generation = chitchat_id.generation_id;
        match newest.get(&*chitchat_id.node_id) {
            Some((known, _)) if *known >= generation => {}
            _ => {
                newest.insert(&*chitchat_id.node_id, (generation, member));
            }
        }
    }
    newest.into_values().map(|(_, member)| member).collect()
}

/// Reads one node's announcement from its key-values.
fn member_from(chitchat_id: &ChitchatId, state: &NodeState) -> Result<Member, String> {
    let required = |key: &str| state.get(key).ok_or_else(|| format!("no `{key}` key"));
    let role = required(KEY_ROLE)?;
    let role = NodeRole::parse(role).ok_or_else(|| format!("unknown role `{role}`"))?;
    let node_addr = parse_addr(KEY_NODE_ADDR, required(KEY_NODE_ADDR)?)?;
    let api_addr = match state.get(KEY_API_ADDR) {
        Some(text) => Some(parse_addr(KEY_API_ADDR, text)?),
        None => None,
    };
    let prefixes = |key: &str| -> Result<Vec<String>, String> {
        serde_json::from_str(required(key)?).map_err(|error| format!("bad `{key}`: {error}"))
    };
    let started_at_ms = required(KEY_STARTED_AT_MS)?;
    let started_at_ms = started_at_ms
        .parse()
        .map_err(|_| format!("bad `{KEY_STARTED_AT_MS}` `{started_at_ms}`"))?;
    Ok(Member {
        node_id: chitchat_id.node_id.to_string(),
        role,
        node_addr,
        api_addr,
        owns: prefixes(KEY_OWNS)?,
        mirrors: prefixes(KEY_MIRRORS)?,
        started_at_ms,
        conflict: state.get(KEY_CONFLICT).map(str::to_string),
    })
}

/// Parses the socket address under `key`.
fn parse_addr(key: &str, text: &str) -> Result<SocketAddr, String> {
    text.parse().map_err(|_| format!("bad `{key}` `{text}`"))
}

/// The key-values announcing `member`.
fn announcement_key_values(member: &Member) -> Vec<(String, String)> {
    // Serializing a list of strings cannot fail.
    let json = |prefixes: &[String]| serde_json::to_string(prefixes).unwrap_or_default();
    let mut key_values = vec![
        (KEY_ROLE.to_string(), member.role.as_str().to_string()),
        (KEY_NODE_ADDR.to_string(), member.node_addr.to_string()),
        (KEY_OWNS.to_string(), json(&member.owns)),
        (KEY_MIRRORS.to_string(), json(&member.mirrors)),
        (
            KEY_STARTED_AT_MS.to_string(),
            member.started_at_ms.to_string(),
        ),
    ];
    if let Some(api_addr) = member.api_addr {
        key_values.push((KEY_API_ADDR.to_string(), api_addr.to_string()));
    }
    key_values
}

/// Chitchat's failure detector tuned to the gossip interval (see the module docs).
fn failure_detector_config(settings: &MembershipSettings) -> FailureDetectorConfig {
    let gossip_interval = settings.gossip_interval();
    FailureDetectorConfig {
        phi_threshold: settings.phi_threshold,
        sampling_window_size: SAMPLING_WINDOW_SIZE,
        max_interval: gossip_interval * MAX_LEARNED_GAP_IN_INTERVALS,
        initial_interval: gossip_interval * PRIOR_INTERVAL_IN_INTERVALS,
        dead_node_grace_period: Duration::from_secs(settings.dead_grace_secs),
    }
}

/// `address` with a free port in place of port 0, checking that it can be bound.
///
/// Chitchat binds the socket itself and does not report the port, and peers need the
/// port in this node's chitchat id before it binds, so the port is picked here. The
/// probe socket is closed right before chitchat binds the same port.
fn bindable_address(address: SocketAddr) -> Result<SocketAddr, ClusterError> {
    let probe = std::net::UdpSocket::bind(address).map_err(|source| ClusterError::Bind {
        addr: address,
        source,
    })?;
    probe.local_addr().map_err(|source| ClusterError::Bind {
        addr: address,
        source,
    })
}

#[cfg(test)]
mod tests {
    use std::future::Future;
    use std::time::Instant;

    use super::*;

    /// Generous: a correctness bound, not a benchmark.
    const FORM_TIMEOUT: Duration = Duration::from_secs(20);

    fn localhost() -> SocketAddr {
        "127.0.0.1:0".parse().unwrap()
    }

    fn announcement(
        node_id: &str,
        role: NodeRole,
        owns: &[&str],
        mirrors: &[&str],
    ) -> Announcement {
        let node_addr = format!("127.0.0.1:{}", 7000 + node_id.len())
            .parse()
            .unwrap();
        Announcement {
            node_id: node_id.to_string(),
            role,
            node_addr,
            api_addr: (role == NodeRole::Cloud).then(|| "127.0.0.1:8080".parse().unwrap()),
            owns: owns.iter().map(|prefix| prefix.to_string()).collect(),
            mirrors: mirrors.iter().map(|prefix| prefix.to_string()).collect(),
        }
    }

    /// A small cluster of real nodes gossiping over UDP on 127.0.0.1.
    struct Sandbox {
        cluster_id: String,
        seeds: Vec<String>,
        nodes: BTreeMap<String, Membership>,
    }

    impl Sandbox {
        fn new(cluster_id: &str) -> Self {
            Self {
                cluster_id: cluster_id.to_string(),
                seeds: Vec::new(),
                nodes: BTreeMap::new(),
            }
        }

        /// Starts a node; the first node started is the seed of the others.
        async fn add(&mut self, me: Announcement) {
            let node_id = me.node_id.clone();
            let membership = start(&self.cluster_id, me, self.seeds.clone()).await;
            if self.seeds.is_empty() {
                self.seeds.push(membership.gossip_addr().to_string());
            }
            self.nodes.insert(node_id, membership);
        }

        fn node(&self, node_id: &str) -> &Membership {
            &self.nodes[node_id]
        }

        /// Waits until every node sees `n` live members.
        async fn wait_for_live(&self, n: usize) {
            for (node_id, membership) in &self.nodes {
                assert!(
                    membership.wait_for_live(n, FORM_TIMEOUT).await,
                    "{node_id} sees {:?}, not {n} members",
                    node_ids(&membership.live())
                );
            }
        }

        /// Stops a node as a crash would look to its peers.
        async fn stop(&mut self, node_id: &str) {
            self.nodes.remove(node_id).unwrap().shutdown().await;
        }

        async fn shutdown(self) {
            for (_, membership) in self.nodes {
                membership.shutdown().await;
            }
        }
    }

    async fn start(cluster_id: &str, me: Announcement, seeds: Vec<String>) -> Membership {
        start_sealed(cluster_id, me, seeds, None).await
    }

    /// Starts a node whose gossip is sealed with a key made of `key` bytes.
    async fn start_sealed(
        cluster_id: &str,
        me: Announcement,
        seeds: Vec<String>,
        key: Option<u8>,
    ) -> Membership {
        let keys = key.map(|byte| {
            GossipKeys::new(vec![crate::seal::GossipKey::from_bytes(
                &[byte; crate::seal::KEY_LEN],
            )])
            .unwrap()
        });
        Membership::start(
            cluster_id,
            me,
            localhost(),
            localhost(),
            seeds,
            &MembershipSettings::default(),
            keys,
        )
        .await
        .unwrap()
    }

    fn node_ids(members: &[Member]) -> Vec<&str> {
        members
            .iter()
            .map(|member| member.node_id.as_str())
            .collect()
    }

    /// Waits until `condition` holds for the live members seen by `membership`.
    async fn wait_for_members(
        membership: &Membership,
        timeout: Duration,
        condition: impl Fn(&[Member]) -> bool,
    ) -> bool {
        let mut live = membership.watch();
        bounded(timeout, live.wait_for(|members| condition(members))).await
    }

    async fn bounded<T, E>(timeout: Duration, future: impl Future<Output = Result<T, E>>) -> bool {
        matches!(tokio::time::timeout(timeout, future).await, Ok(Ok(_)))
    }

    #[tokio::test]
    async fn three_nodes_form_a_cluster_through_one_seed() {
        let edge_a = announcement("edge-a", NodeRole::Edge, &["acme/plant-a"], &[]);
        let edge_b = announcement(
            "edge-b",
            NodeRole::Edge,
            &["acme/plant-b", "acme/plant-c"],
            &[],
        );
        let cloud_1 = announcement("cloud-1", NodeRole::Cloud, &[], &["acme"]);
        let mut sandbox = Sandbox::new("acme-test");
        sandbox.add(edge_a.clone()).await;
        sandbox.add(edge_b.clone()).await;
        sandbox.add(cloud_1.clone()).await;
        sandbox.wait_for_live(3).await;

        let announced = |me: Announcement| Member {
            node_id: me.node_id,
            role: me.role,
            node_addr: me.node_addr,
            api_addr: me.api_addr,
            owns: me.owns,
            mirrors: me.mirrors,
            started_at_ms: 0,
            conflict: None,
        };
        let expected = vec![announced(cloud_1), announced(edge_a), announced(edge_b)];
        let mut start_times = Vec::new();
        for (node_id, membership) in &sandbox.nodes {
            let mut seen = (*membership.live()).clone();
            start_times.push(
                seen.iter()
                    .map(|member| member.started_at_ms)
                    .collect::<Vec<_>>(),
            );
            for member in &mut seen {
                member.started_at_ms = 0;
            }
            assert_eq!(
                seen, expected,
                "{node_id} sees every announcement, sorted by node id"
            );
        }
        assert!(
            start_times[0]
                .iter()
                .all(|started_at_ms| *started_at_ms > 0)
        );
        assert!(
            start_times.iter().all(|times| *times == start_times[0]),
            "every node sees the same start times: {start_times:?}"
        );
        sandbox.shutdown().await;
    }

    #[tokio::test]
    async fn a_node_of_another_cluster_never_joins() {
        let mut sandbox = Sandbox::new("acme-test");
        sandbox
            .add(announcement(
                "edge-a",
                NodeRole::Edge,
                &["acme/plant-a"],
                &[],
            ))
            .await;
        // The stranger gossips with the same seed from the start.
        let stranger = start(
            "globex-test",
            announcement("edge-stranger", NodeRole::Edge, &["acme/plant-a"], &[]),
            sandbox.seeds.clone(),
        )
        .await;
        sandbox
            .add(announcement(
                "edge-b",
                NodeRole::Edge,
                &["acme/plant-b"],
                &[],
            ))
            .await;
        sandbox
            .add(announcement("cloud-1", NodeRole::Cloud, &[], &[]))
            .await;
        sandbox.wait_for_live(3).await;

        let has_stranger = |members: &[Member]| {
            members
                .iter()
                .any(|member| member.node_id == "edge-stranger")
        };
        for (node_id, membership) in &sandbox.nodes {
            assert!(
                !has_stranger(&membership.live()),
                "{node_id} merged the stranger"
            );
        }
        // Give the stranger more rounds to get in; it must not.
        assert!(
            !wait_for_members(sandbox.node("edge-a"), Duration::from_secs(2), has_stranger).await
        );
        assert_eq!(node_ids(&stranger.live()), vec!["edge-stranger"]);
        stranger.shutdown().await;
        sandbox.shutdown().await;
    }

    #[tokio::test]
    async fn sealed_nodes_form_a_cluster_that_nodes_without_their_key_never_join() {
        let me = |id| announcement(id, NodeRole::Edge, &[], &[]);
        let seed = start_sealed("acme-test", me("edge-a"), Vec::new(), Some(7)).await;
        let seeds = vec![seed.gossip_addr().to_string()];
        let other_key = start_sealed("acme-test", me("edge-x"), seeds.clone(), Some(8)).await;
        let in_clear = start_sealed("acme-test", me("edge-y"), seeds.clone(), None).await;
        let peer = start_sealed("acme-test", me("edge-b"), seeds, Some(7)).await;
        for node in [&seed, &peer] {
            assert!(node.wait_for_live(2, FORM_TIMEOUT).await);
        }
        let strangers = |members: &[Member]| {
            members
                .iter()
                .any(|m| m.node_id == "edge-x" || m.node_id == "edge-y")
        };
        assert!(!wait_for_members(&seed, Duration::from_secs(2), strangers).await);
        assert!(!strangers(&peer.live()));
        assert_eq!(node_ids(&other_key.live()), vec!["edge-x"]);
        assert_eq!(node_ids(&in_clear.live()), vec!["edge-y"]);
        let counters = seed.seal_counters().unwrap();
        assert!(counters.opened.load(std::sync::atomic::Ordering::Relaxed) > 0);
        assert!(
            counters
                .unknown_key
                .load(std::sync::atomic::Ordering::Relaxed)
                > 0,
            "the strangers' datagrams are counted"
        );
        for node in [seed, peer, other_key, in_clear] {
            node.shutdown().await;
        }
    }

    #[tokio::test]
    async fn a_node_that_leaves_is_detected_dead() {
        let mut sandbox = Sandbox::new("acme-test");
        sandbox
            .add(announcement(
                "edge-a",
                NodeRole::Edge,
                &["acme/plant-a"],
                &[],
            ))
            .await;
        sandbox
            .add(announcement(
                "edge-b",
                NodeRole::Edge,
                &["acme/plant-b"],
                &[],
            ))
            .await;
        sandbox
            .add(announcement("cloud-1", NodeRole::Cloud, &[], &[]))
            .await;
        sandbox.wait_for_live(3).await;
        let left_at = Instant::now();
        sandbox.stop("edge-b").await;
        for node_id in ["edge-a", "cloud-1"] {
            let gone =
                wait_for_members(sandbox.node(node_id), Duration::from_secs(20), |members| {
                    node_ids(members) == ["cloud-1", "edge-a"]
                })
                .await;
            assert!(
                gone,
                "{node_id} still sees {:?}",
                node_ids(&sandbox.node(node_id).live())
            );
            eprintln!("{node_id} saw edge-b leave after {:?}", left_at.elapsed());
        }
        sandbox.shutdown().await;
    }

    #[tokio::test]
    async fn a_conflict_becomes_visible_to_peers() {
        let mut sandbox = Sandbox::new("acme-test");
        sandbox
            .add(announcement(
                "edge-a",
                NodeRole::Edge,
                &["acme/plant-a"],
                &[],
            ))
            .await;
        sandbox
            .add(announcement(
                "edge-b",
                NodeRole::Edge,
                &["acme/plant-a"],
                &[],
            ))
            .await;
        sandbox.wait_for_live(2).await;

        let conflict_of_b = |members: &[Member]| {
            members
                .iter()
                .find(|member| member.node_id == "edge-b")
                .and_then(|member| member.conflict.clone())
        };
        let message = "edge-a owns acme/plant-a".to_string();
        sandbox
            .node("edge-b")
            .set_conflict(Some(message.clone()))
            .await;
        assert!(
            wait_for_members(sandbox.node("edge-a"), FORM_TIMEOUT, |members| {
                conflict_of_b(members).as_ref() == Some(&message)
            })
            .await
        );
        // A node's own view follows its state through the same watch as its peers'.
        assert!(
            wait_for_members(sandbox.node("edge-b"), FORM_TIMEOUT, |members| {
                conflict_of_b(members).as_ref() == Some(&message)
            })
            .await
        );

        sandbox.node("edge-b").set_conflict(None).await;
        sandbox.node("edge-b").set_conflict(None).await;
        assert!(
            wait_for_members(sandbox.node("edge-a"), FORM_TIMEOUT, |members| {
                members.len() == 2 && conflict_of_b(members).is_none()
            })
            .await
        );
        sandbox.shutdown().await;
    }

    #[tokio::test]
    async fn a_node_with_an_unparsable_announcement_is_left_out() {
        let mut sandbox = Sandbox::new("acme-test");
        sandbox
            .add(announcement(
                "edge-a",
                NodeRole::Edge,
                &["acme/plant-a"],
                &[],
            ))
            .await;
        sandbox
            .add(announcement(
                "edge-b",
                NodeRole::Edge,
                &["acme/plant-b"],
                &[],
            ))
            .await;
        sandbox.wait_for_live(2).await;

        // Write the key-value as another version of Doppel might.
        let edge_b = sandbox.node("edge-b");
        edge_b
            .chitchat
            .with_chitchat(|chitchat| chitchat.self_node_state().set(KEY_ROLE, "robot"))
            .await;
        assert!(
            wait_for_members(sandbox.node("edge-a"), FORM_TIMEOUT, |members| {
                node_ids(members) == ["edge-a"]
            })
            .await,
            "edge-a still sees {:?}",
            node_ids(&sandbox.node("edge-a").live())
        );
        sandbox.shutdown().await;
    }
}
