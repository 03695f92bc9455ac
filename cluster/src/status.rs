//! A node's view of its cluster for `StatusService.GetClusterStatus`, the REST API's
//! `/api/v1/cluster`, `doppel cluster status` and the console's cluster page: the
//! members it admitted, where each fleet planner runs, and its replication links.

use std::collections::HashMap;
use std::sync::Arc;

use doppel_api::ClusterView;
use doppel_api::convert::{duration_to_proto, timestamp_to_proto};
use doppel_proto::v1 as pb;
use doppel_runtime::Timestamp;
use tokio::sync::watch;

use crate::config::{ClusterConfig, NodeRole};
use crate::membership::Member;
use crate::mirror::MirrorStore;
use crate::placement;
use crate::replication::LinkStatus;

/// What a cluster node knows of its cluster, read when asked.
pub(crate) struct StatusView {
    pub(crate) cluster_id: String,
    pub(crate) node_id: String,
    pub(crate) role: NodeRole,
    pub(crate) planners: Vec<String>,
    pub(crate) members: watch::Receiver<Arc<Vec<Member>>>,
    /// An edge's links, by cloud node.
    pub(crate) links: Arc<parking_lot::Mutex<HashMap<String, LinkStatus>>>,
    /// A cloud node's mirror, which tracks each edge's stream.
    pub(crate) mirror: Option<MirrorStore>,
}

impl StatusView {
    pub(crate) fn new(
        config: &ClusterConfig,
        members: watch::Receiver<Arc<Vec<Member>>>,
        links: Arc<parking_lot::Mutex<HashMap<String, LinkStatus>>>,
        mirror: Option<MirrorStore>,
    ) -> Self {
        let planners = crate::planner::configured(&config.planners)
            .map(|planners| planners.iter().map(|p| p.name().to_string()).collect())
            .unwrap_or_default();
        Self {
            cluster_id: config.id.clone(),
            node_id: config.node_id.clone(),
            role: config.role,
            planners,
            members,
            links,
            mirror,
        }
    }
}

impl ClusterView for StatusView {
    fn cluster_status(&self) -> pb::GetClusterStatusResponse {
        let live = self.members.borrow().clone();
        let mut members: Vec<pb::ClusterMember> = live
            .iter()
            .map(|member| pb::ClusterMember {
                node_id: member.node_id.clone(),
                role: member.role.to_string(),
                address: member.node_addr.to_string(),
                live: true,
                owns: member.owns.clone(),
            })
            .collect();
        members.sort_by(|a, b| a.node_id.cmp(&b.node_id));
        let planners = self
            .planners
            .iter()
            .map(|name| pb::PlannerPlacement {
                planner: name.clone(),
                node_id: placement::planner_host(&live, name)
                    .map(|host| host.node_id.clone())
                    .unwrap_or_default(),
            })
            .collect();
        let mut links: Vec<pb::ReplicationLink> = match &self.mirror {
            Some(mirror) => mirror
                .links()
                .into_iter()
                .map(|link| pb::ReplicationLink {
                    lag: Some(duration_to_proto(mirror.lag(&link.node_id))),
                    edge_node: link.node_id,
                    cloud_node: self.node_id.clone(),
                    connected: link.connected,
                    outbox_depth: Some(link.head.saturating_sub(link.acked)),
                    last_received: link.last_received.map(timestamp_to_proto),
                })
                .collect(),
            None => self
                .links
                .lock()
                .values()
                .map(|link| pb::ReplicationLink {
                    edge_node: self.node_id.clone(),
                    cloud_node: link.peer.clone(),
                    connected: link.connected,
                    lag: None,
                    outbox_depth: Some(link.depth),
                    last_received: None,
                })
                .collect(),
        };
        links.sort_by(|a, b| (&a.edge_node, &a.cloud_node).cmp(&(&b.edge_node, &b.cloud_node)));
        pb::GetClusterStatusResponse {
            at: Some(timestamp_to_proto(Timestamp::now())),
            cluster_id: self.cluster_id.clone(),
            node_id: self.node_id.clone(),
            role: self.role.to_string(),
            members,
            planners,
            links,
        }
    }
}
