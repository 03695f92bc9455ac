//! `doppel.v1.StatusService` on [`TwinApi`]: what the node did with its input.

use doppel_proto::v1 as pb;
use doppel_proto::v1::status_service_server::StatusService;
use doppel_runtime::Timestamp;
use doppel_runtime::metrics::{ConnectorStatus, SourceCounts};
use tonic::{Request, Response, Status};

use crate::auth::caller;
use crate::convert::timestamp_to_proto;
use crate::service::{TwinApi, traced_in};

/// A node's view of its cluster, for `StatusService.GetClusterStatus` and the REST
/// API's `/api/v1/cluster` (see [`TwinApi::set_cluster_view`]).
pub trait ClusterView: Send + Sync + 'static {
    /// The cluster as this node sees it now.
    fn cluster_status(&self) -> pb::GetClusterStatusResponse;
}

/// The service's full name, for health checks and spans.
pub const STATUS_SERVICE_NAME: &str = "doppel.v1.StatusService";

fn counts(counts: SourceCounts) -> pb::ReadingCounts {
    pb::ReadingCounts {
        applied: counts.applied,
        late: counts.late,
        duplicate: counts.duplicate,
        refused: counts.refused,
    }
}

fn by_reason<'a>(counts: impl IntoIterator<Item = (&'a str, u64)>) -> Vec<pb::Count> {
    counts
        .into_iter()
        .map(|(reason, count)| pb::Count {
            reason: reason.to_string(),
            count,
        })
        .collect()
}

/// A connector's status as the API sends it.
fn connector_to_proto(status: &ConnectorStatus) -> pb::ConnectorStatus {
    pb::ConnectorStatus {
        name: status.name.clone(),
        kind: status.kind.to_string(),
        connected: status.connected,
        received: status.received,
        readings: Some(counts(status.readings)),
        refused: by_reason(
            status
                .refused
                .iter()
                .map(|(reason, count)| (reason.as_str(), *count)),
        ),
        dropped: by_reason(status.dropped.iter().copied()),
    }
}

impl TwinApi {
    async fn get_node_status_call(
        &self,
        request: Request<pb::GetNodeStatusRequest>,
    ) -> Result<pb::GetNodeStatusResponse, Status> {
        caller(&request)?;
        let _permit = self.admit()?;
        let twins = &self.shared.twins;
        let totals = twins.counters();
        let readings = SourceCounts {
            applied: totals.samples_applied,
            late: totals.samples_late,
            duplicate: totals.samples_duplicate,
            refused: totals.rejected_total(),
        };
        Ok(pb::GetNodeStatusResponse {
            at: Some(timestamp_to_proto(Timestamp::now())),
            twins: twins.len() as u64,
            connectors: twins.connectors().iter().map(connector_to_proto).collect(),
            sources: twins
                .source_counts()
                .into_iter()
                .map(|(name, readings)| pb::SourceStatus {
                    name,
                    readings: Some(counts(readings)),
                })
                .collect(),
            readings: Some(counts(readings)),
            supervision: twins
                .supervision()
                .into_iter()
                .map(|record| pb::SupervisionRecord {
                    at: Some(timestamp_to_proto(record.at)),
                    supervisor: record.supervisor.to_string(),
                    child: record
                        .child
                        .map(|child| child.to_string())
                        .unwrap_or_default(),
                    reason: record.reason,
                })
                .collect(),
        })
    }
}

#[tonic::async_trait]
impl StatusService for TwinApi {
    async fn get_node_status(
        &self,
        request: Request<pb::GetNodeStatusRequest>,
    ) -> Result<Response<pb::GetNodeStatusResponse>, Status> {
        traced_in(STATUS_SERVICE_NAME, "GetNodeStatus", request, |r| {
            self.get_node_status_call(r)
        })
        .await
    }

    async fn get_cluster_status(
        &self,
        request: Request<pb::GetClusterStatusRequest>,
    ) -> Result<Response<pb::GetClusterStatusResponse>, Status> {
        traced_in(
            STATUS_SERVICE_NAME,
            "GetClusterStatus",
            request,
            |r| async move {
                caller(&r)?;
                match self.shared.cluster.get() {
                    Some(view) => Ok(view.cluster_status()),
                    None => Err(Status::not_found("this node is not part of a cluster")),
                }
            },
        )
        .await
    }
}
