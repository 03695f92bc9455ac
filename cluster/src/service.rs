//! [`NodeApi`]: the NodeService a cluster node serves to its peers. Forwarded calls are
//! answered here and never forwarded again (no loops): by this node's own twins, or on
//! a cloud node by its fleet mirrors. Replication streams from edge nodes land in the
//! mirror store.

use std::pin::Pin;
use std::sync::Arc;

use doppel_api::{Caller, Role};
use doppel_proto::v1 as pb;
use doppel_proto::v1::alarm_service_server::AlarmService;
use doppel_proto::v1::node_service_server::NodeService;
use doppel_proto::v1::twin_service_server::TwinService;
use doppel_runtime::Timestamp;
use futures_util::{Stream, StreamExt};
use tonic::{Request, Response, Status, Streaming};

use crate::router::ClusterApi;
use crate::transport::Transport;

/// The NodeService of one node.
#[derive(Clone)]
pub struct NodeApi {
    api: ClusterApi,
    transport: Transport,
}

impl NodeApi {
    /// Serves forwarded calls through `api`'s local twins and mirrors; `transport`
    /// checks that callers belong to this cluster.
    pub fn new(api: ClusterApi, transport: Transport) -> Self {
        Self { api, transport }
    }

    /// Checks the cluster id and rebuilds the client's request with its caller and
    /// the forwarding node's metadata (trace context, timeout).
    fn admit<F, T>(
        &self,
        request: Request<F>,
        split: impl FnOnce(F) -> (Option<pb::ForwardedCaller>, Option<T>),
    ) -> Result<Request<T>, Status> {
        let peer = self.transport.check(&request)?;
        if !self.api.is_ready() {
            return Err(Status::unavailable(
                "this node is starting: it answers once it has confirmed what it owns",
            ));
        }
        let (metadata, _, message) = request.into_parts();
        let (caller, inner) = split(message);
        let caller = caller.ok_or_else(|| Status::invalid_argument("caller: required"))?;
        let role = Role::parse(&caller.role).ok_or_else(|| {
            Status::invalid_argument(format!("caller.role: `{}` is not a role", caller.role))
        })?;
        if caller.principal.is_empty() || caller.principal.len() > 256 {
            return Err(Status::invalid_argument("caller.principal: 1 to 256 bytes"));
        }
        let inner = inner.ok_or_else(|| Status::invalid_argument("request: required"))?;
        tracing::debug!(peer, principal = %caller.principal, role = %role, "forwarded call");
        let mut extensions = tonic::Extensions::new();
        extensions.insert(Caller {
            name: Arc::from(caller.principal.as_str()),
            role,
        });
        Ok(Request::from_parts(metadata, extensions, inner))
    }

    fn fleet_only(&self) -> Result<&crate::fleet::FleetApi, Status> {
        self.api
            .inner
            .fleet
            .as_ref()
            .ok_or_else(|| Status::failed_precondition("this node holds no fleet mirror"))
    }
}

type ForwardedWatch =
    Pin<Box<dyn Stream<Item = Result<pb::ForwardWatchTwinsResponse, Status>> + Send>>;
type ReplicateStream = Pin<Box<dyn Stream<Item = Result<pb::ReplicateResponse, Status>> + Send>>;

#[tonic::async_trait]
impl NodeService for NodeApi {
    async fn hello(
        &self,
        request: Request<pb::HelloRequest>,
    ) -> Result<Response<pb::HelloResponse>, Status> {
        self.transport.check(&request)?;
        Ok(Response::new(pb::HelloResponse {
            node_id: self.api.inner.node_id.clone(),
            cluster_id: self.transport.cluster_id().to_string(),
            now: Some(doppel_api::convert::timestamp_to_proto(Timestamp::now())),
        }))
    }

    async fn forward_get_twin(
        &self,
        request: Request<pb::ForwardGetTwinRequest>,
    ) -> Result<Response<pb::ForwardGetTwinResponse>, Status> {
        let request = self.admit(request, |m| (m.caller, m.request))?;
        let asset = doppel_api::parse_path("asset_path", &request.get_ref().asset_path)?;
        let response = if self.api.inner.twins.entry(&asset).is_ok() {
            self.api.inner.local.get_twin(request).await?.into_inner()
        } else {
            self.fleet_only()?.get_twin(asset.as_str()).ok_or_else(|| {
                Status::not_found(format!("{asset} is not hosted or mirrored here"))
            })?
        };
        Ok(Response::new(pb::ForwardGetTwinResponse {
            response: Some(response),
        }))
    }

    async fn forward_send_command(
        &self,
        request: Request<pb::ForwardSendCommandRequest>,
    ) -> Result<Response<pb::ForwardSendCommandResponse>, Status> {
        let request = self.admit(request, |m| (m.caller, m.request))?;
        let response = self
            .api
            .inner
            .local
            .send_command(request)
            .await?
            .into_inner();
        Ok(Response::new(pb::ForwardSendCommandResponse {
            response: Some(response),
        }))
    }

    async fn forward_simulate(
        &self,
        request: Request<pb::ForwardSimulateRequest>,
    ) -> Result<Response<pb::ForwardSimulateResponse>, Status> {
        let request = self.admit(request, |m| (m.caller, m.request))?;
        let response = self.api.inner.local.simulate(request).await?.into_inner();
        Ok(Response::new(pb::ForwardSimulateResponse {
            response: Some(response),
        }))
    }

    async fn forward_recommend(
        &self,
        request: Request<pb::ForwardRecommendRequest>,
    ) -> Result<Response<pb::ForwardRecommendResponse>, Status> {
        let request = self.admit(request, |m| (m.caller, m.request))?;
        let response = self.api.inner.local.recommend(request).await?.into_inner();
        Ok(Response::new(pb::ForwardRecommendResponse {
            response: Some(response),
        }))
    }

    async fn forward_get_history(
        &self,
        request: Request<pb::ForwardGetHistoryRequest>,
    ) -> Result<Response<pb::ForwardGetHistoryResponse>, Status> {
        let request = self.admit(request, |m| (m.caller, m.request))?;
        let response = self
            .api
            .inner
            .local
            .get_history(request)
            .await?
            .into_inner();
        Ok(Response::new(pb::ForwardGetHistoryResponse {
            response: Some(response),
        }))
    }

    async fn forward_list_audit(
        &self,
        request: Request<pb::ForwardListAuditRequest>,
    ) -> Result<Response<pb::ForwardListAuditResponse>, Status> {
        let request = self.admit(request, |m| (m.caller, m.request))?;
        let response = match &self.api.inner.fleet {
            Some(fleet) => fleet.list_audit(request.get_ref())?,
            None => self.api.inner.local.list_audit(request).await?.into_inner(),
        };
        Ok(Response::new(pb::ForwardListAuditResponse {
            response: Some(response),
        }))
    }

    async fn forward_list_twins(
        &self,
        request: Request<pb::ForwardListTwinsRequest>,
    ) -> Result<Response<pb::ForwardListTwinsResponse>, Status> {
        let request = self.admit(request, |m| (m.caller, m.request))?;
        let response = match &self.api.inner.fleet {
            Some(fleet) => fleet.list_twins(request.get_ref())?,
            None => self.api.inner.local.list_twins(request).await?.into_inner(),
        };
        Ok(Response::new(pb::ForwardListTwinsResponse {
            response: Some(response),
        }))
    }

    async fn forward_list_alarms(
        &self,
        request: Request<pb::ForwardListAlarmsRequest>,
    ) -> Result<Response<pb::ForwardListAlarmsResponse>, Status> {
        let request = self.admit(request, |m| (m.caller, m.request))?;
        let response = match &self.api.inner.fleet {
            Some(fleet) => fleet.list_alarms(request.get_ref())?,
            None => self
                .api
                .inner
                .local
                .list_alarms(request)
                .await?
                .into_inner(),
        };
        Ok(Response::new(pb::ForwardListAlarmsResponse {
            response: Some(response),
        }))
    }

    async fn forward_alarm_response(
        &self,
        request: Request<pb::ForwardAlarmResponseRequest>,
    ) -> Result<Response<pb::ForwardAlarmResponseResponse>, Status> {
        use pb::forward_alarm_response_request::Response as Respond;
        let request = self.admit(request, |m| (m.caller, m.response))?;
        let (metadata, extensions, response) = request.into_parts();
        let local = &self.api.inner.local;
        // Only the owner decides: a response for a twin this node does not host is
        // refused rather than forwarded again.
        let asset = match &response {
            Respond::Acknowledge(r) => &r.asset_path,
            Respond::Shelve(r) => &r.asset_path,
            Respond::Unshelve(r) => &r.asset_path,
        };
        let asset = doppel_api::parse_path("asset_path", asset)?;
        if local.twins().entry(&asset).is_err() {
            return Err(Status::failed_precondition(format!(
                "{asset} is not hosted here"
            )));
        }
        let result = match response {
            Respond::Acknowledge(r) => {
                local
                    .acknowledge_alarm(Request::from_parts(metadata, extensions, r))
                    .await?
            }
            Respond::Shelve(r) => {
                local
                    .shelve_alarm(Request::from_parts(metadata, extensions, r))
                    .await?
            }
            Respond::Unshelve(r) => {
                local
                    .unshelve_alarm(Request::from_parts(metadata, extensions, r))
                    .await?
            }
        }
        .into_inner();
        Ok(Response::new(pb::ForwardAlarmResponseResponse {
            result: Some(result),
        }))
    }

    async fn forward_model(
        &self,
        request: Request<pb::ForwardModelRequest>,
    ) -> Result<Response<pb::ForwardModelResponse>, Status> {
        let request = self.admit(request, |m| (m.caller, m.call))?;
        let caller = request
            .extensions()
            .get::<Caller>()
            .cloned()
            .ok_or_else(|| Status::unauthenticated("missing caller"))?;
        // Answered by this node's own twins; never sent on again.
        let answer = self
            .api
            .model_step_here(&caller, request.into_inner())
            .await?;
        Ok(Response::new(pb::ForwardModelResponse {
            answer: Some(answer),
        }))
    }

    type ForwardWatchTwinsStream = ForwardedWatch;

    async fn forward_watch_twins(
        &self,
        request: Request<pb::ForwardWatchTwinsRequest>,
    ) -> Result<Response<Self::ForwardWatchTwinsStream>, Status> {
        let request = self.admit(request, |m| (m.caller, m.request))?;
        let stream = match &self.api.inner.fleet {
            Some(fleet) => fleet.watch_twins(request.get_ref())?,
            None => self
                .api
                .inner
                .local
                .watch_twins(request)
                .await?
                .into_inner(),
        };
        let stream =
            stream.map(|item| item.map(|m| pb::ForwardWatchTwinsResponse { response: Some(m) }));
        Ok(Response::new(Box::pin(stream)))
    }

    type ReplicateStream = ReplicateStream;

    async fn replicate(
        &self,
        request: Request<Streaming<pb::ReplicateRequest>>,
    ) -> Result<Response<Self::ReplicateStream>, Status> {
        let peer = self.transport.check(&request)?;
        if peer.is_empty() {
            return Err(Status::invalid_argument(
                "x-doppel-node: the calling node's id is required",
            ));
        }
        let fleet = self.fleet_only()?;
        let stream = fleet.mirror().serve_replication(peer, request.into_inner());
        Ok(Response::new(Box::pin(stream)))
    }
}
