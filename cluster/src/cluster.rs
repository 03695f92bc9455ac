//! [`Cluster`]: a node's part in its cluster.
//!
//! An edge node hosts the twins of the plants or lines it owns, writes their changes
//! to its outbox and streams them to the cloud nodes that mirror them. A cloud node
//! holds fleet mirrors and hosts the fleet planners rendezvous hashing gives it. Both
//! join membership, serve NodeService to their peers and, when configured, the public
//! TwinService through a router that forwards what they cannot answer. The node itself
//! (its runtime, connectors and config file) is composed by doppel-node.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use doppel_api::{ApiConfig, ApiHandle, ApiServer, BoundApi, TwinApi};
use doppel_proto::v1::node_service_server::NodeServiceServer;
use doppel_runtime::Timestamp;
use doppel_runtime::internal::TwinsInternals;
use doppel_runtime::twin::Twins;
use tokio::sync::{oneshot, watch};
use tokio::task::JoinHandle;
use tonic::transport::server::TcpIncoming;

use crate::clock::{ClockReading, Clocks};
use crate::config::{ClusterConfig, NodeRole};
use crate::error::ClusterError;
use crate::fleet::FleetApi;
use crate::membership::{Announcement, Member, Membership};
use crate::mirror::MirrorStore;
use crate::placement;
use crate::planner::PlannerHost;
use crate::replication::{LinkStatus, OutboxKeeper, OutboxStatus, ReplicationLink};
use crate::router::ClusterApi;
use crate::seal::GossipKeys;
use crate::service::NodeApi;
use crate::transport::Transport;

/// How long a starting edge node listens to gossip before it decides it owns its
/// plants (another live owner found in this time makes it refuse to start).
const SETTLE: Duration = Duration::from_secs(2);
/// Most watches a cloud node's mirror serves at once.
const MAX_MIRROR_WATCHES: usize = 10_000;

/// A node's part in its cluster, running.
pub struct Cluster {
    config: ClusterConfig,
    twins: Twins,
    membership: Membership,
    router: ClusterApi,
    api: Option<ApiHandle>,
    node_addr: SocketAddr,
    node_server: (oneshot::Sender<()>, JoinHandle<()>),
    mirror: Option<MirrorStore>,
    links: Option<(watch::Sender<bool>, JoinHandle<Vec<ReplicationLink>>)>,
    link_status: Arc<parking_lot::Mutex<HashMap<String, LinkStatus>>>,
    planners: Option<PlannerHost>,
    members: watch::Receiver<Arc<Vec<Member>>>,
    keeper: Option<OutboxKeeper>,
    tasks: Vec<JoinHandle<()>>,
}

impl Cluster {
    /// Joins the cluster with the twins this node hosts (an edge node's owned plants or
    /// lines; none on a cloud node): NodeService, membership, admission, the ownership
    /// claim, then replication (edge) or mirrors and planners (cloud), and the public
    /// API when `api` is set. TLS paths in `api` must already be resolved; the mirror
    /// store lives in `data_dir`.
    pub async fn start(
        config: ClusterConfig,
        twins: Twins,
        api: Option<ApiConfig>,
        data_dir: &Path,
    ) -> Result<Self, ClusterError> {
        config.validate()?;
        let transport = Transport::new(&config)?;
        let gossip_keys = match config.gossip_keys.as_slice() {
            [] => None,
            paths => Some(GossipKeys::from_files(paths)?),
        };
        let edge = config.role == NodeRole::Edge;
        let limits = api.as_ref().map(|a| a.limits.clone()).unwrap_or_default();
        // Every address bound before gossip names this node: a node that cannot serve
        // fails before its peers learn of it.
        let bound_api = match api {
            Some(api) => Some(ApiServer::bind(api).await?),
            None => None,
        };
        tracing::info!(
            node = %config.node_id,
            role = %config.role,
            twins = twins.directory().len(),
            tls = transport.is_tls(),
            "starting cluster node"
        );

        let mirror = if edge {
            None
        } else {
            Some(MirrorStore::open(&data_dir.join("mirror.redb"))?)
        };
        let fleet = mirror
            .as_ref()
            .map(|mirror| FleetApi::new(mirror.clone(), MAX_MIRROR_WATCHES));
        let local = TwinApi::new(twins.clone(), limits);
        // Peers gossip names are admitted once they answer Hello over the cluster's
        // transport; the router, links and planners see admitted members only.
        let (members_tx, members_rx) = watch::channel(Arc::new(Vec::<Member>::new()));
        let clocks = Clocks::default();
        let router = ClusterApi::new(
            &config,
            twins.clone(),
            local.clone(),
            fleet,
            members_rx.clone(),
            transport.clone(),
            clocks.clone(),
        );

        // NodeService first: peers can reach this node as soon as gossip names it.
        let listener = tokio::net::TcpListener::bind(config.listen)
            .await
            .map_err(|source| ClusterError::Bind {
                addr: config.listen,
                source,
            })?;
        let bound = listener.local_addr().map_err(|source| ClusterError::Bind {
            addr: config.listen,
            source,
        })?;
        let node_addr = match config.advertise {
            Some(addr) => addr,
            None if config.listen.port() == 0 => bound,
            None => config.listen,
        };
        let node_service = NodeServiceServer::new(NodeApi::new(router.clone(), transport.clone()))
            .max_decoding_message_size(64 << 20)
            .max_encoding_message_size(64 << 20);
        let (stop_server, stopped) = oneshot::channel::<()>();
        let server = transport.server()?.add_service(node_service);
        let incoming = TcpIncoming::from(listener).with_nodelay(Some(true));
        let server_task = tokio::spawn(async move {
            let signal = async {
                let _ = stopped.await;
            };
            if let Err(error) = server.serve_with_incoming_shutdown(incoming, signal).await {
                tracing::error!(%error, "NodeService stopped");
            }
        });

        let announcement = Announcement {
            node_id: config.node_id.clone(),
            role: config.role,
            node_addr,
            api_addr: bound_api.as_ref().map(BoundApi::addr),
            owns: config.owns.iter().map(|p| p.as_str().to_string()).collect(),
            mirrors: config
                .mirrors
                .iter()
                .map(|p| p.as_str().to_string())
                .collect(),
        };
        let membership = Membership::start(
            &config.id,
            announcement,
            config.gossip,
            config.gossip_advertise.unwrap_or(config.gossip),
            config.seeds.clone(),
            &config.membership,
            gossip_keys,
        )
        .await?;
        let admission = tokio::spawn(admit(
            membership.watch(),
            members_tx,
            transport.clone(),
            config.node_id.clone(),
            (clocks, Duration::from_millis(config.max_clock_skew_ms)),
        ));

        let mut node = Cluster {
            config,
            twins: twins.clone(),
            membership,
            router,
            api: None,
            node_addr,
            node_server: (stop_server, server_task),
            mirror,
            links: None,
            link_status: Arc::default(),
            planners: None,
            members: members_rx,
            keeper: None,
            tasks: vec![admission],
        };
        if edge && let Err(error) = node.claim().await {
            node.stop().await;
            return Err(error);
        }
        // Owner of its plants (or a cloud node): forwarded calls and the public API
        // are answered from now on.
        node.router.set_ready();
        if let Some(bound_api) = bound_api {
            local.set_cluster_view(Arc::new(crate::status::StatusView::new(
                &node.config,
                node.members.clone(),
                node.link_status.clone(),
                node.mirror.clone(),
            )));
            match bound_api.serve(local, node.router.clone()).await {
                Ok(api) => node.api = Some(api),
                Err(error) => {
                    node.stop().await;
                    return Err(error.into());
                }
            }
        }
        if edge {
            twins.resync().durable().await?;
            node.keeper = Some(OutboxKeeper::start(
                twins.clone(),
                node.config.outbox.clone(),
            ));
            node.start_links(transport);
        } else {
            node.planners = Some(PlannerHost::start(
                &node.config,
                node.router.clone(),
                node.mirror.clone(),
                node.members.clone(),
            )?);
        }
        Ok(node)
    }

    /// Listens to gossip for a moment, then refuses to start if another live edge
    /// node that started earlier claims one of this node's plants or lines; keeps
    /// watching afterwards and reports later conflicts in membership.
    async fn claim(&mut self) -> Result<(), ClusterError> {
        tokio::time::sleep(SETTLE).await;
        let me = self.config.node_id.clone();
        let admitted = self.members.borrow().clone();
        if let Some(conflict) = placement::must_yield(&admitted, &me) {
            tracing::error!(conflict = %conflict.message, "refusing to own twins another live edge node owns");
            self.membership
                .set_conflict(Some(conflict.message.clone()))
                .await;
            // Let peers see the conflict before this node leaves.
            tokio::time::sleep(self.config.membership.gossip_interval() * 5).await;
            return Err(ClusterError::Conflict(conflict));
        }
        let mut watcher = self.members.clone();
        let name = me.clone();
        let flag = self.membership.conflict_flag();
        let twins = self.twins.clone();
        self.tasks.push(tokio::spawn(async move {
            let mut reported: Vec<String> = Vec::new();
            while watcher.changed().await.is_ok() {
                let members = watcher.borrow_and_update().clone();
                // A node that started earlier claims this node's plants (they could not
                // see each other when this node started: a partition that has healed).
                // It keeps them; this node stops actuating, for as long as it runs.
                if twins.fenced().is_none()
                    && let Some(conflict) = placement::must_yield(&members, &name)
                {
                    flag.set(Some(conflict.message.clone())).await;
                    twins.fence(&format!("ownership conflict: {}", conflict.message));
                }
                let found: Vec<String> = placement::conflicts(&members)
                    .into_iter()
                    .filter(|c| c.nodes.contains(&name))
                    .map(|c| c.message)
                    .collect();
                for message in &found {
                    if !reported.contains(message) {
                        tracing::error!(conflict = %message, "another edge node claims this node's plants");
                    }
                }
                reported = found;
            }
        }));
        Ok(())
    }

    /// Keeps one replication link per cloud node that mirrors this edge's twins.
    fn start_links(&mut self, transport: Transport) {
        let (stop, mut stopping) = watch::channel(false);
        let mut members = self.members.clone();
        let twins = self.twins.clone();
        let settings = self.config.outbox.clone();
        let me = self.config.node_id.clone();
        let status = self.link_status.clone();
        let task = tokio::spawn(async move {
            let mut links: HashMap<String, (SocketAddr, ReplicationLink)> = HashMap::new();
            let mut refresh = tokio::time::interval(Duration::from_millis(500));
            loop {
                let live = members.borrow_and_update().clone();
                if twins.fenced().is_some() {
                    // Another edge owns these twins: its changes are what mirrors
                    // hold, so this node's stop going out.
                    for (cloud, (_, link)) in links.drain() {
                        tracing::warn!(%cloud, "replication stopped: this node no longer owns its twins");
                        link.stop().await;
                    }
                } else if let Some(this) = live.iter().find(|m| m.node_id == me) {
                    for cloud in placement::replication_targets(&live, this) {
                        let current = links.get(&cloud.node_id).map(|(addr, _)| *addr);
                        if current == Some(cloud.node_addr) {
                            continue;
                        }
                        if let Some((_, old)) = links.remove(&cloud.node_id) {
                            old.stop().await;
                        }
                        tracing::info!(cloud = %cloud.node_id, addr = %cloud.node_addr, "replicating to cloud node");
                        let link = ReplicationLink::start(
                            twins.clone(),
                            transport.clone(),
                            cloud.node_id.clone(),
                            cloud.node_addr,
                            cloud.mirrors.clone(),
                            settings.clone(),
                        );
                        links.insert(cloud.node_id.clone(), (cloud.node_addr, link));
                    }
                }
                {
                    let mut status = status.lock();
                    status.retain(|peer, _| links.contains_key(peer));
                    for (peer, (_, link)) in &links {
                        status.insert(peer.clone(), link.status());
                    }
                }
                tokio::select! {
                    changed = members.changed() => if changed.is_err() { break },
                    _ = refresh.tick() => {}
                    _ = stopping.changed() => break,
                }
            }
            links.into_values().map(|(_, link)| link).collect()
        });
        self.links = Some((stop, task));
    }

    /// The node's config.
    pub fn config(&self) -> &ClusterConfig {
        &self.config
    }

    /// The twins this node hosts.
    pub fn twins(&self) -> &Twins {
        &self.twins
    }

    /// Membership (gossip).
    pub fn membership(&self) -> &Membership {
        &self.membership
    }

    /// The live members this node admitted: gossip named them and they answered
    /// Hello over the cluster's transport (mutual TLS when configured) with the id
    /// gossip announced. This node is always among them.
    pub fn members(&self) -> watch::Receiver<Arc<Vec<Member>>> {
        self.members.clone()
    }

    /// The public TwinService router.
    pub fn router(&self) -> &ClusterApi {
        &self.router
    }

    /// The public API server, when configured.
    pub fn api(&self) -> Option<&ApiHandle> {
        self.api.as_ref()
    }

    /// The NodeService address peers dial.
    pub fn node_addr(&self) -> SocketAddr {
        self.node_addr
    }

    /// A cloud node's mirror store.
    pub fn mirror(&self) -> Option<&MirrorStore> {
        self.mirror.as_ref()
    }

    /// An edge node's replication links, by cloud node.
    pub fn links(&self) -> HashMap<String, LinkStatus> {
        self.link_status.lock().clone()
    }

    /// An edge node's outbox: entries, depth (entries some cloud node has not
    /// acknowledged), compactions.
    pub fn outbox(&self) -> Option<OutboxStatus> {
        self.keeper.as_ref().map(OutboxKeeper::status)
    }

    /// Exports the cluster's figures as OpenTelemetry gauges: an edge's outbox depth
    /// per link (entries its cloud node has not acknowledged) and its entries; a cloud
    /// node's replication lag and acknowledged sequence per edge node.
    pub fn register_metrics(&self) {
        let store = self.twins.store().clone();
        if self.config.role == NodeRole::Edge {
            let outbox = store.clone();
            doppel_telemetry::register_gauge(
                "doppel.outbox.depth",
                "outbox entries a cloud node has not acknowledged, per link",
                move || {
                    let head = outbox.outbox_head().unwrap_or(0);
                    outbox
                        .outbox_links()
                        .unwrap_or_default()
                        .into_iter()
                        .map(|(link, acked)| (head.saturating_sub(acked), vec![("link", link)]))
                        .collect()
                },
            );
            doppel_telemetry::register_gauge(
                "doppel.outbox.entries",
                "entries kept in the outbox",
                move || vec![(store.outbox_len().unwrap_or(0), Vec::new())],
            );
        }
        if let Some(mirror) = self.mirror.clone() {
            let lag = mirror.clone();
            doppel_telemetry::register_gauge(
                "doppel.replication.lag_ms",
                "how far each edge node's replication is behind, in milliseconds",
                move || {
                    lag.links()
                        .into_iter()
                        .map(|link| {
                            let behind = lag.lag(&link.node_id).as_millis();
                            (
                                u64::try_from(behind).unwrap_or(u64::MAX),
                                vec![("edge", link.node_id)],
                            )
                        })
                        .collect()
                },
            );
            doppel_telemetry::register_gauge(
                "doppel.replication.acked",
                "the last outbox sequence of each edge node durable in this mirror",
                move || {
                    mirror
                        .links()
                        .into_iter()
                        .map(|link| (link.acked, vec![("edge", link.node_id)]))
                        .collect()
                },
            );
        }
    }

    /// The planners this (cloud) node runs now.
    pub fn running_planners(&self) -> Vec<String> {
        self.planners
            .as_ref()
            .map(PlannerHost::running)
            .unwrap_or_default()
    }

    /// Stops the cluster's part of the node: API, planners, links, membership and
    /// NodeService. The twins keep running until their runtime stops.
    pub async fn stop(self) {
        if let Some(api) = self.api {
            api.stop().await;
        }
        if let Some(planners) = self.planners {
            planners.stop().await;
        }
        if let Some(keeper) = self.keeper {
            keeper.stop().await;
        }
        if let Some((stop, task)) = self.links {
            let _ = stop.send(true);
            if let Ok(links) = task.await {
                for link in links {
                    link.stop().await;
                }
            }
        }
        for task in self.tasks {
            task.abort();
        }
        self.membership.shutdown().await;
        let (stop, task) = self.node_server;
        let _ = stop.send(());
        let _ = tokio::time::timeout(Duration::from_secs(5), task).await;
    }
}

/// How long a peer has to answer Hello.
const HELLO_TIMEOUT: Duration = Duration::from_secs(2);
/// How often a peer that failed Hello is asked again.
const HELLO_RETRY: Duration = Duration::from_secs(2);
/// How often admitted peers are asked Hello again, to measure their clocks.
const CLOCK_EVERY: Duration = Duration::from_secs(10);

/// Publishes the gossip members that answer Hello over `transport` with the node id
/// gossip announced (and this node itself). Every Hello also measures the peer's clock
/// offset into `clocks`; admitted peers are asked again every [`CLOCK_EVERY`].
async fn admit(
    mut gossip: watch::Receiver<Arc<Vec<Member>>>,
    admitted: watch::Sender<Arc<Vec<Member>>>,
    transport: Transport,
    me: String,
    (clocks, skew_bound): (Clocks, Duration),
) {
    // (node id, address, start time) → admitted?
    let mut verdicts: HashMap<(String, SocketAddr, u64), bool> = HashMap::new();
    let mut retry = tokio::time::interval(HELLO_RETRY);
    let mut clocks_due = tokio::time::Instant::now() + CLOCK_EVERY;
    loop {
        let live = gossip.borrow_and_update().clone();
        let measure_all = tokio::time::Instant::now() >= clocks_due;
        if measure_all {
            clocks_due = tokio::time::Instant::now() + CLOCK_EVERY;
        }
        let asked: Vec<&Member> = live
            .iter()
            .filter(|m| m.node_id != me)
            .filter(|m| measure_all || !verdicts.get(&key(m)).copied().unwrap_or(false))
            .collect();
        let probes = asked.iter().map(|m| hello(&transport, &me, m));
        for (member, result) in asked
            .iter()
            .zip(futures_util::future::join_all(probes).await)
        {
            let known = verdicts.get(&key(member)).copied();
            let ok = match result {
                Ok(reading) => {
                    clocks.record(&member.node_id, reading, skew_bound);
                    true
                }
                // An admitted peer that misses one clock measurement stays admitted:
                // failure detection is gossip's.
                Err(_) if known == Some(true) => true,
                Err(reason) => {
                    if known.is_none() {
                        tracing::warn!(peer = %member.node_id, addr = %member.node_addr, %reason, "not admitting a peer gossip announced");
                    }
                    false
                }
            };
            verdicts.insert(key(member), ok);
        }
        verdicts.retain(|k, _| live.iter().any(|m| key(m) == *k));
        clocks.retain(|node| live.iter().any(|m| m.node_id == node));
        let members: Vec<Member> = live
            .iter()
            .filter(|m| m.node_id == me || verdicts.get(&key(m)).copied().unwrap_or(false))
            .cloned()
            .collect();
        admitted.send_if_modified(|current| {
            if **current == members {
                false
            } else {
                *current = Arc::new(members);
                true
            }
        });
        tokio::select! {
            changed = gossip.changed() => if changed.is_err() { return },
            _ = retry.tick() => {}
        }
    }
}

fn key(member: &Member) -> (String, SocketAddr, u64) {
    (
        member.node_id.clone(),
        member.node_addr,
        member.started_at_ms,
    )
}

async fn hello(transport: &Transport, me: &str, member: &Member) -> Result<ClockReading, String> {
    let mut client = transport
        .client(member.node_addr)
        .map_err(|error| error.to_string())?;
    let mut request = tonic::Request::new(doppel_proto::v1::HelloRequest {
        node_id: me.to_string(),
    });
    request.set_timeout(HELLO_TIMEOUT);
    let sent = Timestamp::now();
    let answer = tokio::time::timeout(HELLO_TIMEOUT, client.hello(request))
        .await
        .map_err(|_| "no answer".to_string())?
        .map_err(|status| format!("{}: {}", status.code(), status.message()))?
        .into_inner();
    if answer.node_id != member.node_id || answer.cluster_id != transport.cluster_id() {
        return Err(format!(
            "answered as node `{}` of cluster `{}`",
            answer.node_id, answer.cluster_id
        ));
    }
    let received = Timestamp::now();
    let peer = answer
        .now
        .as_ref()
        .and_then(doppel_api::convert::timestamp_from_proto)
        .ok_or_else(|| "answered without its clock".to_string())?;
    Ok(ClockReading::measure(sent, peer, received))
}
