//! [`ClusterApi`]: the public `doppel.v1.TwinService` of a cluster node. It answers
//! what it can locally (its own twins; on a cloud node, its fleet mirrors) and forwards
//! the rest over NodeService to the node that can answer: commands, what-if and
//! history always go to the edge node that owns the twin, so its governors decide.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use doppel_api::{Caller, TwinApi};
use doppel_proto::v1 as pb;
use doppel_proto::v1::alarm_service_server::AlarmService;
use doppel_proto::v1::twin_service_server::TwinService;
use doppel_runtime::twin::Twins;
use doppel_runtime::{AssetPath, Timestamp};
use futures_util::StreamExt;
use parking_lot::Mutex;
use tokio::sync::{mpsc, watch};
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status};
use tracing::Instrument;

use crate::clock::Clocks;
use crate::config::{ClusterConfig, NodeRole, prefix_covers};
use crate::fleet::FleetApi;
use crate::membership::Member;
use crate::placement;
use crate::transport::{NodeClient, Transport};

/// How long a forwarded call without its own deadline may take.
const FORWARD_TIMEOUT: Duration = Duration::from_secs(10);
/// How much earlier than the caller's gRPC deadline a forwarded command's wait ends.
const GRPC_MARGIN: Duration = Duration::from_millis(50);

/// Where a call about one twin is answered.
pub(crate) enum Route {
    /// By this node's own twins.
    Local,
    /// By this node's fleet mirror.
    Mirror,
    /// By another node.
    Remote(Member),
}

/// What the router and the node service of one node share.
pub(crate) struct Inner {
    pub(crate) node_id: String,
    pub(crate) owns: Vec<String>,
    /// A cloud node's mirrored prefixes (empty: everything).
    mirrors: Vec<String>,
    pub(crate) twins: Twins,
    pub(crate) local: TwinApi,
    pub(crate) fleet: Option<FleetApi>,
    members: watch::Receiver<Arc<Vec<Member>>>,
    transport: Transport,
    /// Set once the node owns its plants (an edge has checked for conflicts).
    ready: std::sync::atomic::AtomicBool,
    clients: Mutex<HashMap<(String, std::net::SocketAddr), NodeClient>>,
    /// Peers' clock offsets, measured by admission.
    clocks: Clocks,
    /// The largest peer clock offset under which a deadline is forwarded.
    max_clock_skew: Duration,
}

/// The public TwinService of a cluster node: local answers or forwarding.
#[derive(Clone)]
pub struct ClusterApi {
    pub(crate) inner: Arc<Inner>,
}

impl ClusterApi {
    /// A router for the node `config` describes, serving `local` (its twins), and on
    /// a cloud node `fleet` (its mirrors), forwarding to the live `members` over
    /// `transport`; commands with a deadline only to members whose clock offset in
    /// `clocks` is within the config's `max_clock_skew_ms`.
    pub fn new(
        config: &ClusterConfig,
        twins: Twins,
        local: TwinApi,
        fleet: Option<FleetApi>,
        members: watch::Receiver<Arc<Vec<Member>>>,
        transport: Transport,
        clocks: Clocks,
    ) -> Self {
        let prefixes = |paths: &[AssetPath]| paths.iter().map(|p| p.as_str().to_string()).collect();
        Self {
            inner: Arc::new(Inner {
                node_id: config.node_id.clone(),
                owns: prefixes(&config.owns),
                mirrors: prefixes(&config.mirrors),
                twins,
                local,
                fleet,
                members,
                transport,
                ready: std::sync::atomic::AtomicBool::new(false),
                clients: Mutex::new(HashMap::new()),
                clocks,
                max_clock_skew: Duration::from_millis(config.max_clock_skew_ms),
            }),
        }
    }

    /// Marks the node ready: it answers forwarded calls from now on.
    pub fn set_ready(&self) {
        self.inner
            .ready
            .store(true, std::sync::atomic::Ordering::Release);
    }

    /// Whether the node answers forwarded calls yet.
    pub fn is_ready(&self) -> bool {
        self.inner.ready.load(std::sync::atomic::Ordering::Acquire)
    }

    /// The node's local TwinService (its own twins).
    pub fn local(&self) -> &TwinApi {
        &self.inner.local
    }

    pub(crate) fn members(&self) -> Arc<Vec<Member>> {
        self.inner.members.borrow().clone()
    }

    /// True when this node hosts the twin.
    fn hosts(&self, asset: &AssetPath) -> bool {
        self.inner.twins.entry(asset).is_ok()
    }

    /// Where a call about `asset` goes. `mirror_ok`: a mirror may answer (reads).
    pub(crate) fn route(&self, asset: &AssetPath, mirror_ok: bool) -> Result<Route, Status> {
        if self.hosts(asset) {
            return Ok(Route::Local);
        }
        let members = self.members();
        if let Some(fleet) = &self.inner.fleet
            && mirror_ok
            && fleet.owner_of(asset).is_some()
        {
            return Ok(Route::Mirror);
        }
        if let Some(owner) = placement::owner_of(&members, asset.as_str())
            && owner.node_id != self.inner.node_id
        {
            return Ok(Route::Remote(owner.clone()));
        }
        if mirror_ok
            && let Some(cloud) = placement::mirrors_of(&members, asset.as_str())
                .into_iter()
                .find(|m| m.node_id != self.inner.node_id)
        {
            return Ok(Route::Remote(cloud.clone()));
        }
        // Nobody live owns it: say whose it was when a mirror knows.
        if let Some(owner) = self.inner.fleet.as_ref().and_then(|f| f.owner_of(asset)) {
            return Err(Status::unavailable(format!(
                "{asset} is owned by edge node `{owner}`, which is not live (down or partitioned)"
            )));
        }
        Err(Status::not_found(format!("no live node hosts {asset}")))
    }

    /// A node that can answer for everything under `prefix`: this node when it owns
    /// the whole prefix (or mirrors the fleet), else a live cloud node.
    fn route_prefix(&self, prefix: &str) -> Result<Route, Status> {
        let mirrors_all = |mirrors: &[String]| {
            mirrors.is_empty() || mirrors.iter().any(|p| prefix_covers(p, prefix))
        };
        if self.inner.fleet.is_some() && mirrors_all(&self.inner.mirrors) {
            return Ok(Route::Mirror);
        }
        if !prefix.is_empty() && self.inner.owns.iter().any(|own| prefix_covers(own, prefix)) {
            return Ok(Route::Local);
        }
        let members = self.members();
        let cloud = members
            .iter()
            .filter(|m| m.role == NodeRole::Cloud && m.conflict.is_none())
            .filter(|m| m.node_id != self.inner.node_id)
            .find(|m| mirrors_all(&m.mirrors));
        match cloud {
            Some(cloud) => Ok(Route::Remote(cloud.clone())),
            None => Err(Status::unavailable(format!(
                "no live node can answer for all of `{prefix}` (no cloud node mirrors all of \
                 it); ask under a narrower prefix"
            ))),
        }
    }

    pub(crate) fn client(&self, member: &Member) -> Result<NodeClient, Status> {
        let key = (member.node_id.clone(), member.node_addr);
        let mut clients = self.inner.clients.lock();
        if let Some(client) = clients.get(&key) {
            return Ok(client.clone());
        }
        let client = self
            .inner
            .transport
            .client(member.node_addr)
            .map_err(|error| Status::unavailable(error.to_string()))?;
        clients.insert(key, client.clone());
        Ok(client)
    }
}

impl ClusterApi {
    /// The absolute deadline a command forwarded to `owner` carries: the earlier of the
    /// caller's `deadline` field and its gRPC deadline counted from `received` (less
    /// [`GRPC_MARGIN`]), else
    /// [`FORWARD_TIMEOUT`] after `received` (so a forwarded command is never acted on
    /// after its caller stopped waiting). DEADLINE_EXCEEDED when it has passed;
    /// FAILED_PRECONDITION when `owner`'s clock may be off by more than the cluster's
    /// bound, so the instant would mean something else there.
    fn forward_deadline(
        &self,
        request: &Request<pb::SendCommandRequest>,
        received: Timestamp,
        owner: &Member,
    ) -> Result<Timestamp, Status> {
        let given = match request.get_ref().deadline.as_ref() {
            Some(deadline) => Some(
                doppel_api::convert::timestamp_from_proto(deadline)
                    .ok_or_else(|| Status::invalid_argument("deadline: not a valid timestamp"))?,
            ),
            None => None,
        };
        // The server ends a call at its gRPC deadline with CANCELLED; ending the wait a
        // little earlier lets this node answer DEADLINE_EXCEEDED itself, and the
        // command carries that earlier instant, so the owner never acts on it after
        // the wait ended.
        let grpc = doppel_api::grpc_timeout(request.metadata())
            .map(|t| received.plus(t.saturating_sub(GRPC_MARGIN)));
        let deadline = match (given, grpc) {
            (Some(given), Some(grpc)) => given.min(grpc),
            (given, grpc) => given
                .or(grpc)
                .unwrap_or_else(|| received.plus(FORWARD_TIMEOUT)),
        };
        if deadline <= Timestamp::now() {
            return Err(Status::deadline_exceeded(format!(
                "the command's deadline passed before it was sent to `{}`; nothing was actuated",
                owner.node_id
            )));
        }
        if let Some(clock) = self.inner.clocks.get(&owner.node_id)
            && clock.worst_case() > self.inner.max_clock_skew
        {
            return Err(Status::failed_precondition(format!(
                "node `{}`'s clock is {:+.3} s off this node's (±{:.3} s), more than the cluster's max_clock_skew_ms ({}); a deadline forwarded to it could not be honoured, so the command is not sent",
                owner.node_id,
                clock.offset_us as f64 / 1e6,
                clock.uncertainty_us as f64 / 1e6,
                self.inner.max_clock_skew.as_millis()
            )));
        }
        Ok(deadline)
    }

    /// Forwards one unary call to `node` as `caller`, within `timeout`, and unwraps
    /// the node's answer.
    #[allow(clippy::too_many_arguments)]
    pub(crate) async fn forward<M, A, R, F, Fut>(
        &self,
        rpc: &'static str,
        target: &str,
        node: &Member,
        message: M,
        timeout: Duration,
        call: F,
        answer: fn(A) -> Option<R>,
    ) -> Result<Response<R>, Status>
    where
        F: FnOnce(NodeClient, Request<M>) -> Fut,
        Fut: std::future::Future<Output = Result<Response<A>, Status>>,
    {
        let span = forward_span(rpc, target, node);
        let reply = call(self.client(node)?, outgoing(message, timeout))
            .instrument(span)
            .await
            .map_err(unreachable(node))?;
        answer(reply.into_inner())
            .map(Response::new)
            .ok_or_else(missing)
    }
}

pub(crate) fn caller<T>(request: &Request<T>) -> Result<Caller, Status> {
    request
        .extensions()
        .get::<Caller>()
        .cloned()
        .ok_or_else(|| Status::unauthenticated("missing bearer token"))
}

pub(crate) fn forwarded(caller: &Caller) -> pb::ForwardedCaller {
    pb::ForwardedCaller {
        principal: caller.name.to_string(),
        role: caller.role.as_str().to_string(),
    }
}

/// A forwarded request carrying the client's trace context and a timeout.
fn outgoing<T>(message: T, timeout: Duration) -> Request<T> {
    let mut request = Request::new(message);
    request.set_timeout(timeout);
    request
}

fn forward_span(method: &'static str, asset: &str, owner: &Member) -> tracing::Span {
    tracing::info_span!("forward", rpc = method, asset, owner = %owner.node_id, addr = %owner.node_addr)
}

/// The owner's answer; UNAVAILABLE naming the owner when it cannot be reached, and
/// DEADLINE_EXCEEDED when it did not answer in time (a command's deadline passed: the
/// owner refuses it if it ever arrives, so it is never actuated late).
fn unreachable(owner: &Member) -> impl Fn(Status) -> Status + '_ {
    move |status| match status.code() {
        tonic::Code::Unavailable | tonic::Code::Unknown => Status::unavailable(format!(
            "node `{}` at {} did not answer: {}",
            owner.node_id,
            owner.node_addr,
            status.message()
        )),
        // tonic reports its own client-side timeout as CANCELLED.
        tonic::Code::Cancelled | tonic::Code::DeadlineExceeded => {
            Status::deadline_exceeded(format!(
                "node `{}` at {} did not answer in time",
                owner.node_id, owner.node_addr
            ))
        }
        _ => status,
    }
}

pub(crate) fn missing() -> Status {
    Status::internal("the owning node sent an empty answer")
}

#[tonic::async_trait]
impl TwinService for ClusterApi {
    async fn get_twin(
        &self,
        request: Request<pb::GetTwinRequest>,
    ) -> Result<Response<pb::GetTwinResponse>, Status> {
        let caller = caller(&request)?;
        let asset = doppel_api::parse_path("asset_path", &request.get_ref().asset_path)?;
        match self.route(&asset, true)? {
            Route::Local => self.inner.local.get_twin(request).await,
            Route::Mirror => self
                .inner
                .fleet
                .as_ref()
                .and_then(|fleet| fleet.get_twin(asset.as_str()))
                .map(Response::new)
                .ok_or_else(|| Status::not_found(format!("no mirror of {asset}"))),
            Route::Remote(owner) => {
                let message = pb::ForwardGetTwinRequest {
                    caller: Some(forwarded(&caller)),
                    request: Some(request.into_inner()),
                };
                self.forward(
                    "GetTwin",
                    asset.as_str(),
                    &owner,
                    message,
                    FORWARD_TIMEOUT,
                    |mut client, request| async move { client.forward_get_twin(request).await },
                    |answer| answer.response,
                )
                .await
            }
        }
    }

    async fn list_twins(
        &self,
        request: Request<pb::ListTwinsRequest>,
    ) -> Result<Response<pb::ListTwinsResponse>, Status> {
        let caller = caller(&request)?;
        let prefix = doppel_api::parse_prefix("path_prefix", &request.get_ref().path_prefix)?;
        let prefix = prefix.as_ref().map_or("", |p| p.as_str()).to_string();
        match self.route_prefix(&prefix)? {
            Route::Local => self.inner.local.list_twins(request).await,
            Route::Mirror => match &self.inner.fleet {
                Some(fleet) => fleet.list_twins(request.get_ref()).map(Response::new),
                None => Err(Status::internal("no fleet mirror on this node")),
            },
            Route::Remote(cloud) => {
                let message = pb::ForwardListTwinsRequest {
                    caller: Some(forwarded(&caller)),
                    request: Some(request.into_inner()),
                };
                self.forward(
                    "ListTwins",
                    &prefix,
                    &cloud,
                    message,
                    FORWARD_TIMEOUT,
                    |mut client, request| async move { client.forward_list_twins(request).await },
                    |answer| answer.response,
                )
                .await
            }
        }
    }

    type WatchTwinsStream = ReceiverStream<Result<pb::WatchTwinsResponse, Status>>;

    async fn watch_twins(
        &self,
        request: Request<pb::WatchTwinsRequest>,
    ) -> Result<Response<Self::WatchTwinsStream>, Status> {
        let caller = caller(&request)?;
        let prefix = doppel_api::parse_prefix("path_prefix", &request.get_ref().path_prefix)?;
        let prefix = prefix.as_ref().map_or("", |p| p.as_str()).to_string();
        match self.route_prefix(&prefix)? {
            Route::Local => self.inner.local.watch_twins(request).await,
            Route::Mirror => match &self.inner.fleet {
                Some(fleet) => fleet.watch_twins(request.get_ref()).map(Response::new),
                None => Err(Status::internal("no fleet mirror on this node")),
            },
            Route::Remote(cloud) => {
                let message = pb::ForwardWatchTwinsRequest {
                    caller: Some(forwarded(&caller)),
                    request: Some(request.into_inner()),
                };
                let mut upstream = self
                    .client(&cloud)?
                    .forward_watch_twins(Request::new(message))
                    .instrument(forward_span("WatchTwins", &prefix, &cloud))
                    .await
                    .map_err(unreachable(&cloud))?
                    .into_inner();
                let (sender, receiver) = mpsc::channel(256);
                tokio::spawn(async move {
                    while let Some(item) = upstream.next().await {
                        let item = item.and_then(|m| m.response.ok_or_else(missing));
                        let end = item.is_err();
                        if sender.send(item).await.is_err() || end {
                            return;
                        }
                    }
                    let _ = sender
                        .send(Err(Status::unavailable("the forwarded watch ended")))
                        .await;
                });
                Ok(Response::new(ReceiverStream::new(receiver)))
            }
        }
    }

    async fn send_command(
        &self,
        request: Request<pb::SendCommandRequest>,
    ) -> Result<Response<pb::SendCommandResponse>, Status> {
        let caller = caller(&request)?;
        let asset = doppel_api::parse_path("asset_path", &request.get_ref().asset_path)?;
        match self.route(&asset, false)? {
            Route::Local => self.inner.local.send_command(request).await,
            Route::Mirror => Err(Status::internal("commands are never answered by a mirror")),
            Route::Remote(owner) => {
                if !caller.role.may_command() {
                    return Err(Status::permission_denied(format!(
                        "SendCommand needs an operator, planner or admin token; `{}` is a {}",
                        caller.name, caller.role
                    )));
                }
                let received = Timestamp::now();
                let deadline = self.forward_deadline(&request, received, &owner)?;
                let mut message = request.into_inner();
                message.deadline = Some(doppel_api::convert::timestamp_to_proto(deadline));
                let message = pb::ForwardSendCommandRequest {
                    caller: Some(forwarded(&caller)),
                    request: Some(message),
                };
                // Every wait on the way, connecting to the owner included, ends at the
                // deadline; the owner refuses the command if it arrives later.
                let left = Duration::from_micros(
                    u64::try_from(deadline.0.saturating_sub(Timestamp::now().0)).unwrap_or(0),
                );
                let forwarding = self.forward(
                    "SendCommand",
                    asset.as_str(),
                    &owner,
                    message,
                    left,
                    |mut client, request| async move { client.forward_send_command(request).await },
                    |answer| answer.response,
                );
                match tokio::time::timeout(left, forwarding).await {
                    Ok(answer) => answer,
                    Err(_) => Err(Status::deadline_exceeded(format!(
                        "node `{}` at {} did not answer before the command's deadline; it refuses the command if it arrives later",
                        owner.node_id, owner.node_addr
                    ))),
                }
            }
        }
    }

    async fn simulate(
        &self,
        request: Request<pb::SimulateRequest>,
    ) -> Result<Response<pb::SimulateResponse>, Status> {
        let caller = caller(&request)?;
        let asset = doppel_api::parse_path("asset_path", &request.get_ref().asset_path)?;
        match self.route(&asset, false)? {
            Route::Local => self.inner.local.simulate(request).await,
            Route::Mirror => Err(Status::internal("what-if is never answered by a mirror")),
            Route::Remote(owner) => {
                let message = pb::ForwardSimulateRequest {
                    caller: Some(forwarded(&caller)),
                    request: Some(request.into_inner()),
                };
                self.forward(
                    "Simulate",
                    asset.as_str(),
                    &owner,
                    message,
                    FORWARD_TIMEOUT,
                    |mut client, request| async move { client.forward_simulate(request).await },
                    |answer| answer.response,
                )
                .await
            }
        }
    }

    async fn recommend(
        &self,
        request: Request<pb::RecommendRequest>,
    ) -> Result<Response<pb::RecommendResponse>, Status> {
        let caller = caller(&request)?;
        let asset = doppel_api::parse_path("asset_path", &request.get_ref().asset_path)?;
        match self.route(&asset, false)? {
            Route::Local => self.inner.local.recommend(request).await,
            Route::Mirror => Err(Status::internal(
                "recommendations are never answered by a mirror",
            )),
            Route::Remote(owner) => {
                let message = pb::ForwardRecommendRequest {
                    caller: Some(forwarded(&caller)),
                    request: Some(request.into_inner()),
                };
                self.forward(
                    "Recommend",
                    asset.as_str(),
                    &owner,
                    message,
                    FORWARD_TIMEOUT,
                    |mut client, request| async move { client.forward_recommend(request).await },
                    |answer| answer.response,
                )
                .await
            }
        }
    }

    async fn get_history(
        &self,
        request: Request<pb::GetHistoryRequest>,
    ) -> Result<Response<pb::GetHistoryResponse>, Status> {
        let caller = caller(&request)?;
        let asset = doppel_api::parse_path("asset_path", &request.get_ref().asset_path)?;
        match self.route(&asset, false)? {
            Route::Local => self.inner.local.get_history(request).await,
            Route::Mirror => Err(Status::internal("history is never answered by a mirror")),
            Route::Remote(owner) => {
                let message = pb::ForwardGetHistoryRequest {
                    caller: Some(forwarded(&caller)),
                    request: Some(request.into_inner()),
                };
                self.forward(
                    "GetHistory",
                    asset.as_str(),
                    &owner,
                    message,
                    FORWARD_TIMEOUT,
                    |mut client, request| async move { client.forward_get_history(request).await },
                    |answer| answer.response,
                )
                .await
            }
        }
    }

    async fn list_audit(
        &self,
        request: Request<pb::ListAuditRequest>,
    ) -> Result<Response<pb::ListAuditResponse>, Status> {
        let caller = caller(&request)?;
        let prefix = doppel_api::parse_prefix("path_prefix", &request.get_ref().path_prefix)?;
        let prefix = prefix.as_ref().map_or("", |p| p.as_str()).to_string();
        match self.route_prefix(&prefix)? {
            Route::Local => self.inner.local.list_audit(request).await,
            Route::Mirror => match &self.inner.fleet {
                Some(fleet) => fleet.list_audit(request.get_ref()).map(Response::new),
                None => Err(Status::internal("no fleet mirror on this node")),
            },
            Route::Remote(cloud) => {
                let message = pb::ForwardListAuditRequest {
                    caller: Some(forwarded(&caller)),
                    request: Some(request.into_inner()),
                };
                self.forward(
                    "ListAudit",
                    &prefix,
                    &cloud,
                    message,
                    FORWARD_TIMEOUT,
                    |mut client, request| async move { client.forward_list_audit(request).await },
                    |answer| answer.response,
                )
                .await
            }
        }
    }
}

/// Alarms across the cluster: listed where a node can answer for the whole prefix
/// (the twins' own edge, or a cloud node's mirror), responded to on the edge that owns
/// the twin, whichever node was asked.
#[tonic::async_trait]
impl AlarmService for ClusterApi {
    async fn list_alarms(
        &self,
        request: Request<pb::ListAlarmsRequest>,
    ) -> Result<Response<pb::ListAlarmsResponse>, Status> {
        let caller = caller(&request)?;
        let prefix = doppel_api::parse_prefix("path_prefix", &request.get_ref().path_prefix)?;
        let prefix = prefix.as_ref().map_or("", |p| p.as_str()).to_string();
        match self.route_prefix(&prefix)? {
            Route::Local => self.inner.local.list_alarms(request).await,
            Route::Mirror => match &self.inner.fleet {
                Some(fleet) => fleet.list_alarms(request.get_ref()).map(Response::new),
                None => Err(Status::internal("no fleet mirror on this node")),
            },
            Route::Remote(cloud) => {
                let message = pb::ForwardListAlarmsRequest {
                    caller: Some(forwarded(&caller)),
                    request: Some(request.into_inner()),
                };
                self.forward(
                    "ListAlarms",
                    &prefix,
                    &cloud,
                    message,
                    FORWARD_TIMEOUT,
                    |mut client, request| async move { client.forward_list_alarms(request).await },
                    |answer| answer.response,
                )
                .await
            }
        }
    }

    async fn acknowledge_alarm(
        &self,
        request: Request<pb::AcknowledgeAlarmRequest>,
    ) -> Result<Response<pb::AlarmResponseResult>, Status> {
        let asset = doppel_api::parse_path("asset_path", &request.get_ref().asset_path)?;
        if self.hosts(&asset) {
            return self.inner.local.acknowledge_alarm(request).await;
        }
        let caller = caller(&request)?;
        let response =
            pb::forward_alarm_response_request::Response::Acknowledge(request.into_inner());
        self.forward_alarm_response(&asset, &caller, response).await
    }

    async fn shelve_alarm(
        &self,
        request: Request<pb::ShelveAlarmRequest>,
    ) -> Result<Response<pb::AlarmResponseResult>, Status> {
        let asset = doppel_api::parse_path("asset_path", &request.get_ref().asset_path)?;
        if self.hosts(&asset) {
            return self.inner.local.shelve_alarm(request).await;
        }
        let caller = caller(&request)?;
        let response = pb::forward_alarm_response_request::Response::Shelve(request.into_inner());
        self.forward_alarm_response(&asset, &caller, response).await
    }

    async fn unshelve_alarm(
        &self,
        request: Request<pb::UnshelveAlarmRequest>,
    ) -> Result<Response<pb::AlarmResponseResult>, Status> {
        let asset = doppel_api::parse_path("asset_path", &request.get_ref().asset_path)?;
        if self.hosts(&asset) {
            return self.inner.local.unshelve_alarm(request).await;
        }
        let caller = caller(&request)?;
        let response = pb::forward_alarm_response_request::Response::Unshelve(request.into_inner());
        self.forward_alarm_response(&asset, &caller, response).await
    }
}

impl ClusterApi {
    /// Sends an alarm response to the edge that owns `asset`: only it decides.
    async fn forward_alarm_response(
        &self,
        asset: &AssetPath,
        caller: &Caller,
        response: pb::forward_alarm_response_request::Response,
    ) -> Result<Response<pb::AlarmResponseResult>, Status> {
        let owner = match self.route(asset, false)? {
            Route::Remote(owner) => owner,
            Route::Local | Route::Mirror => {
                return Err(Status::internal(
                    "an alarm response is decided by its owner",
                ));
            }
        };
        let message = pb::ForwardAlarmResponseRequest {
            caller: Some(forwarded(caller)),
            response: Some(response),
        };
        self.forward(
            "AlarmResponse",
            asset.as_str(),
            &owner,
            message,
            FORWARD_TIMEOUT,
            |mut client, request| async move { client.forward_alarm_response(request).await },
            |answer| answer.result,
        )
        .await
    }
}
