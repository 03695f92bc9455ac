//! `doppel.v1.ModelService` across a cluster. Deployments live on the edge nodes that
//! host the twins: a node asked to deploy (typically a cloud node, holding the fleet's
//! registry) sends the package file to every live edge node whose twins the target may
//! select, and each registers it under the keys it trusts itself before deploying it
//! to its own twins. A cloud node lists every live edge's deployments; a withdrawal, a
//! canary decision or a divergence read goes to the node its `node_id` names.

use std::time::Duration;

use doppel_api::Caller;
use doppel_proto::v1 as pb;
use doppel_proto::v1::model_service_server::ModelService;
use doppel_runtime::model::registry::Target;
use futures_util::future::join_all;
use pb::forward_model_request::Call;
use pb::forward_model_response::Answer;
use tonic::{Request, Response, Status};

use crate::config::{NodeRole, prefix_covers};
use crate::membership::Member;
use crate::router::{ClusterApi, Route, caller, forwarded, missing};

/// How long an edge node may take to deploy to its twins and answer.
const DEPLOY_TIMEOUT: Duration = Duration::from_secs(60);
/// How long an edge node may take to answer a read.
const READ_TIMEOUT: Duration = Duration::from_secs(10);

/// A request carrying `caller`, as the local service expects it.
fn as_caller<T>(caller: &Caller, message: T) -> Request<T> {
    let mut request = Request::new(message);
    request.extensions_mut().insert(caller.clone());
    request
}

/// Sets the node that holds the deployment in a step's answer.
fn held_by(mut response: pb::DeployResponse, node_id: &str) -> pb::DeployResponse {
    if let Some(deployment) = response.deployment.as_mut() {
        deployment.node_id = node_id.to_string();
    }
    response
}

/// Whether edge `member` owns twins `target` may select.
fn may_host(member: &Member, target: &Target) -> bool {
    match target.prefix() {
        None => true,
        Some(prefix) => member
            .owns
            .iter()
            .any(|own| prefix_covers(own, prefix.as_str()) || prefix_covers(prefix.as_str(), own)),
    }
}

impl ClusterApi {
    /// The live edge nodes other than this one whose twins `target` may select.
    fn edges_for(&self, target: &Target) -> Vec<Member> {
        (self.members().iter())
            .filter(|m| m.role == NodeRole::Edge && m.conflict.is_none())
            .filter(|m| m.node_id != self.inner.node_id && may_host(m, target))
            .cloned()
            .collect()
    }

    /// Edge nodes this node's fleet mirror says own twins `target` selects, that are
    /// not live: a deployment cannot reach them now. Reads every mirrored row under
    /// the target, off the async workers.
    async fn absent_owners(&self, target: &Target, live: &[Member]) -> Result<Vec<String>, Status> {
        let Some(fleet) = self.inner.fleet.clone() else {
            return Ok(Vec::new());
        };
        let target = target.clone();
        let mut known: Vec<String> = live.iter().map(|m| m.node_id.clone()).collect();
        known.push(self.inner.node_id.clone());
        tokio::task::spawn_blocking(move || {
            let prefix = target.prefix().map_or("", |p| p.as_str());
            let mut owners: Vec<String> = (fleet.mirror().list(prefix).into_iter())
                .filter(|row| target.selects(&row.report.asset, &row.report.twin_type))
                .map(|row| row.owner)
                .filter(|owner| !known.contains(owner))
                .collect();
            owners.sort_unstable();
            owners.dedup();
            owners
        })
        .await
        .map_err(|_| Status::internal("reading the fleet mirror failed"))
    }

    /// The live node `node_id` names; `None` for this node (or none named).
    fn model_node(&self, node_id: &str) -> Result<Option<Member>, Status> {
        if node_id.is_empty() || node_id == self.inner.node_id {
            return Ok(None);
        }
        (self.members().iter())
            .find(|m| m.node_id == node_id)
            .cloned()
            .map(Some)
            .ok_or_else(|| {
                Status::unavailable(format!(
                    "node `{node_id}` is not live (down, partitioned or unknown); its deployments are read and changed on it"
                ))
            })
    }

    /// Sends one ModelService step to `node` as `caller`.
    async fn forward_model(
        &self,
        node: &Member,
        caller: &Caller,
        call: Call,
        timeout: Duration,
    ) -> Result<Answer, Status> {
        let message = pb::ForwardModelRequest {
            caller: Some(forwarded(caller)),
            call: Some(call),
        };
        self.forward(
            "Model",
            "",
            node,
            message,
            timeout,
            |mut client, request| async move { client.forward_model(request).await },
            |answer| answer.answer,
        )
        .await
        .map(Response::into_inner)
    }

    /// A deploy, withdraw or decide step on the node `node_id` names.
    async fn step_on(
        &self,
        node_id: &str,
        caller: &Caller,
        call: Call,
    ) -> Result<Response<pb::DeployResponse>, Status> {
        let node = self.model_node(node_id)?;
        let Some(node) = node else {
            let local = &self.inner.local;
            let response = match call {
                Call::Withdraw(r) => local.withdraw(as_caller(caller, r)).await?,
                Call::DecideCanary(r) => local.decide_canary(as_caller(caller, r)).await?,
                _ => return Err(Status::internal("not a deployment step")),
            };
            return Ok(Response::new(held_by(
                response.into_inner(),
                &self.inner.node_id,
            )));
        };
        match self
            .forward_model(&node, caller, call, DEPLOY_TIMEOUT)
            .await?
        {
            Answer::Deployed(response) => Ok(Response::new(held_by(response, &node.node_id))),
            _ => Err(missing()),
        }
    }

    /// Deploys to this node's own twins, as a step sent by another node: registers
    /// `package` under this node's trust, then deploys, unless none of its twins is
    /// selected (an empty answer).
    pub(crate) async fn deploy_here(
        &self,
        caller: &Caller,
        package: String,
        request: pb::DeployRequest,
    ) -> Result<pb::DeployResponse, Status> {
        let target = doppel_api::deploy_target(&request.twin_type, &request.path_prefix)?;
        if !self.inner.twins.selects_any(&target) {
            return Ok(pb::DeployResponse::default());
        }
        let local = &self.inner.local;
        local
            .register_package(as_caller(caller, pb::RegisterPackageRequest { package }))
            .await?;
        let response = local.deploy(as_caller(caller, request)).await?;
        Ok(held_by(response.into_inner(), &self.inner.node_id))
    }

    /// A read or step other nodes send this one, answered by its own twins.
    pub(crate) async fn model_step_here(
        &self,
        caller: &Caller,
        call: Call,
    ) -> Result<Answer, Status> {
        let local = &self.inner.local;
        let node_id = &self.inner.node_id;
        Ok(match call {
            Call::Deploy(deploy) => {
                let request = deploy
                    .request
                    .ok_or_else(|| Status::invalid_argument("deploy.request: required"))?;
                Answer::Deployed(self.deploy_here(caller, deploy.package, request).await?)
            }
            Call::Withdraw(mut r) => {
                r.node_id.clear();
                let response = local.withdraw(as_caller(caller, r)).await?;
                Answer::Deployed(held_by(response.into_inner(), node_id))
            }
            Call::DecideCanary(mut r) => {
                r.node_id.clear();
                let response = local.decide_canary(as_caller(caller, r)).await?;
                Answer::Deployed(held_by(response.into_inner(), node_id))
            }
            Call::ListDeployments(r) => {
                let mut response = local.list_deployments(as_caller(caller, r)).await?;
                for deployment in &mut response.get_mut().deployments {
                    deployment.node_id = node_id.clone();
                }
                Answer::Deployments(response.into_inner())
            }
            Call::Annotate(r) => {
                Answer::Annotated(local.annotate(as_caller(caller, r)).await?.into_inner())
            }
            Call::GetDivergence(mut r) => {
                r.node_id.clear();
                let mut response = local.get_divergence(as_caller(caller, r)).await?;
                if let Some(deployment) = response.get_mut().deployment.as_mut() {
                    deployment.node_id = node_id.clone();
                }
                Answer::Divergence(response.into_inner())
            }
        })
    }

    /// This node's deployments and, on a cloud node, every live edge's, each with the
    /// node that holds it; edges that did not answer are named apart.
    async fn fleet_deployments(
        &self,
        caller: &Caller,
        request: pb::ListDeploymentsRequest,
    ) -> Result<pb::ListDeploymentsResponse, Status> {
        let Answer::Deployments(mut listed) = self
            .model_step_here(caller, Call::ListDeployments(request))
            .await?
        else {
            return Err(missing());
        };
        if self.inner.fleet.is_none() {
            return Ok(listed);
        }
        let edges: Vec<Member> = (self.members().iter())
            .filter(|m| m.role == NodeRole::Edge && m.node_id != self.inner.node_id)
            .cloned()
            .collect();
        let answers = join_all(edges.iter().map(|edge| async move {
            let call = Call::ListDeployments(request);
            (
                edge,
                self.forward_model(edge, caller, call, READ_TIMEOUT).await,
            )
        }))
        .await;
        for (edge, answer) in answers {
            match answer {
                Ok(Answer::Deployments(mut theirs)) => {
                    for deployment in &mut theirs.deployments {
                        deployment.node_id = edge.node_id.clone();
                    }
                    listed.deployments.extend(theirs.deployments);
                }
                Ok(_) | Err(_) => {
                    tracing::warn!(node = %edge.node_id, "an edge node did not list its deployments");
                    listed.unavailable.push(edge.node_id.clone());
                }
            }
        }
        Ok(listed)
    }

    /// Sends a deployment with its package file to this node (when it hosts twins the
    /// target selects) and to every live edge node that may, and gathers what each did.
    async fn deploy_fleet(
        &self,
        caller: Caller,
        request: pb::DeployRequest,
        target: Target,
        edges: Vec<Member>,
        absent: Vec<String>,
    ) -> Result<pb::DeployResponse, Status> {
        if caller.role != doppel_api::Role::Admin {
            return Err(Status::permission_denied(format!(
                "Deploy needs an admin token; `{}` is a {}",
                caller.name, caller.role
            )));
        }
        let packages = self
            .inner
            .twins
            .packages()
            .map_err(|error| Status::internal(error.to_string()))?;
        let package = packages
            .into_iter()
            .find(|p| p.kind == request.kind && p.version == request.version)
            .ok_or_else(|| {
                Status::not_found(format!(
                    "no package {} {} is registered on node `{}`: register it here, and this node sends it to each edge node with the deployment",
                    request.kind, request.version, self.inner.node_id
                ))
            })?;
        let here = async {
            if self.inner.twins.selects_any(&target) {
                let answer = self
                    .deploy_here(&caller, package.text.clone(), request.clone())
                    .await;
                Some((self.inner.node_id.clone(), answer))
            } else {
                None
            }
        };
        let there = join_all(edges.iter().map(|edge| {
            let call = Call::Deploy(pb::ForwardDeploy {
                package: package.text.clone(),
                request: Some(request.clone()),
            });
            let caller = &caller;
            async move {
                let answer = match self.forward_model(edge, caller, call, DEPLOY_TIMEOUT).await {
                    Ok(Answer::Deployed(response)) => Ok(response),
                    Ok(_) => Err(missing()),
                    Err(status) => Err(status),
                };
                (edge.node_id.clone(), answer)
            }
        }));
        let (here, there) = tokio::join!(here, there);
        let mut merged = pb::DeployResponse::default();
        let mut refusals: Vec<Status> = Vec::new();
        for (node_id, answer) in here.into_iter().chain(there) {
            match answer {
                Ok(response) if response.deployment.is_none() => {}
                Ok(response) => {
                    merged.nodes.push(pb::NodeDeployment {
                        node_id,
                        deployment: response.deployment,
                        applied: u32::try_from(response.applied.len()).unwrap_or(u32::MAX),
                        error: String::new(),
                    });
                    merged.applied.extend(response.applied);
                    merged.unchanged.extend(response.unchanged);
                    merged.parked.extend(response.parked);
                    merged.failed.extend(response.failed);
                }
                Err(status) => {
                    tracing::warn!(node = %node_id, kind = %request.kind, version = %request.version, error = %status.message(), "deployment refused or not answered by a node");
                    merged.nodes.push(pb::NodeDeployment {
                        node_id,
                        deployment: None,
                        applied: 0,
                        error: status.message().to_string(),
                    });
                    refusals.push(status);
                }
            }
        }
        for owner in absent {
            tracing::warn!(node = %owner, kind = %request.kind, version = %request.version, "deployment not sent: the edge node owning selected twins is not live");
            merged.nodes.push(pb::NodeDeployment {
                node_id: owner,
                deployment: None,
                applied: 0,
                error: "not live (down or partitioned): not deployed there; deploy again once it is back"
                    .to_string(),
            });
        }
        let deployed = merged.nodes.iter().any(|n| n.deployment.is_some());
        if !deployed {
            return Err(match refusals.len() {
                1 => refusals.remove(0),
                0 => Status::failed_precondition(format!(
                    "no live node hosts twins {target} selects"
                )),
                _ => Status::failed_precondition(
                    (merged.nodes.iter())
                        .map(|n| format!("{}: {}", n.node_id, n.error))
                        .collect::<Vec<_>>()
                        .join("; "),
                ),
            });
        }
        Ok(merged)
    }
}

#[tonic::async_trait]
impl ModelService for ClusterApi {
    async fn register_package(
        &self,
        request: Request<pb::RegisterPackageRequest>,
    ) -> Result<Response<pb::RegisterPackageResponse>, Status> {
        self.inner.local.register_package(request).await
    }

    async fn list_packages(
        &self,
        request: Request<pb::ListPackagesRequest>,
    ) -> Result<Response<pb::ListPackagesResponse>, Status> {
        self.inner.local.list_packages(request).await
    }

    async fn get_package(
        &self,
        request: Request<pb::GetPackageRequest>,
    ) -> Result<Response<pb::GetPackageResponse>, Status> {
        let caller = caller(&request)?;
        let mut response = self.inner.local.get_package(request).await?;
        // A cloud node answers for the fleet: the package's deployments on every edge.
        if self.inner.fleet.is_some() {
            let found = response.get_mut();
            let package = found.package.clone().unwrap_or_default();
            let listed = self
                .fleet_deployments(&caller, pb::ListDeploymentsRequest::default())
                .await?;
            found.deployments = (listed.deployments.into_iter())
                .filter(|d| d.kind == package.kind && d.version == package.version)
                .collect();
            found.unavailable = listed.unavailable;
        }
        Ok(response)
    }

    async fn deploy(
        &self,
        request: Request<pb::DeployRequest>,
    ) -> Result<Response<pb::DeployResponse>, Status> {
        let message = request.get_ref();
        let target = doppel_api::deploy_target(&message.twin_type, &message.path_prefix)?;
        let edges = self.edges_for(&target);
        let absent = self.absent_owners(&target, &edges).await?;
        if edges.is_empty() && absent.is_empty() {
            let response = self.inner.local.deploy(request).await?;
            return Ok(Response::new(held_by(
                response.into_inner(),
                &self.inner.node_id,
            )));
        }
        let caller = caller(&request)?;
        let span = tracing::info_span!("deploy_fleet", kind = %message.kind, version = %message.version, target = %target, edges = edges.len());
        let response = tracing::Instrument::instrument(
            self.deploy_fleet(caller, request.into_inner(), target, edges, absent),
            span,
        )
        .await?;
        Ok(Response::new(response))
    }

    async fn withdraw(
        &self,
        request: Request<pb::WithdrawRequest>,
    ) -> Result<Response<pb::DeployResponse>, Status> {
        let caller = caller(&request)?;
        let mut message = request.into_inner();
        let node_id = std::mem::take(&mut message.node_id);
        self.step_on(&node_id, &caller, Call::Withdraw(message))
            .await
    }

    async fn decide_canary(
        &self,
        request: Request<pb::DecideCanaryRequest>,
    ) -> Result<Response<pb::DeployResponse>, Status> {
        let caller = caller(&request)?;
        let mut message = request.into_inner();
        let node_id = std::mem::take(&mut message.node_id);
        self.step_on(&node_id, &caller, Call::DecideCanary(message))
            .await
    }

    async fn list_deployments(
        &self,
        request: Request<pb::ListDeploymentsRequest>,
    ) -> Result<Response<pb::ListDeploymentsResponse>, Status> {
        let caller = caller(&request)?;
        let listed = self
            .fleet_deployments(&caller, request.into_inner())
            .await?;
        Ok(Response::new(listed))
    }

    async fn get_divergence(
        &self,
        request: Request<pb::GetDivergenceRequest>,
    ) -> Result<Response<pb::GetDivergenceResponse>, Status> {
        let caller = caller(&request)?;
        let mut message = request.into_inner();
        let node_id = std::mem::take(&mut message.node_id);
        let call = Call::GetDivergence(message);
        let answer = match self.model_node(&node_id)? {
            None => self.model_step_here(&caller, call).await?,
            Some(node) => {
                self.forward_model(&node, &caller, call, READ_TIMEOUT)
                    .await?
            }
        };
        match answer {
            Answer::Divergence(mut response) => {
                if let Some(deployment) = response.deployment.as_mut()
                    && deployment.node_id.is_empty()
                {
                    deployment.node_id = node_id;
                }
                Ok(Response::new(response))
            }
            _ => Err(missing()),
        }
    }

    async fn annotate(
        &self,
        request: Request<pb::AnnotateRequest>,
    ) -> Result<Response<pb::AnnotateResponse>, Status> {
        let asset = doppel_api::parse_path("asset_path", &request.get_ref().asset_path)?;
        match self.route(&asset, false)? {
            Route::Local => self.inner.local.annotate(request).await,
            Route::Mirror => Err(Status::internal(
                "an annotation is recorded by the twin's owner, never by a mirror",
            )),
            Route::Remote(owner) => {
                let caller = caller(&request)?;
                let call = Call::Annotate(request.into_inner());
                match self
                    .forward_model(&owner, &caller, call, READ_TIMEOUT)
                    .await?
                {
                    Answer::Annotated(response) => Ok(Response::new(response)),
                    _ => Err(missing()),
                }
            }
        }
    }
}
