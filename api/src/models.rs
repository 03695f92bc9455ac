//! `doppel.v1.ModelService` on [`TwinApi`]: the node's model registry, and deploying
//! its packages to the twins the node hosts (see `doppel_runtime::twin::Twins::deploy`).

use doppel_proto::v1 as pb;
use doppel_proto::v1::model_service_server::ModelService;
use doppel_runtime::model::deploy::Divergence;
use doppel_runtime::model::registry::{CanarySpec, DeployMode, DeploymentStatus, Target};
use doppel_runtime::twin::{DeployOutcome, DeployRequest};
use doppel_runtime::{Annotation, AnnotationOutcome, AnnotationSubject};
use tokio::sync::SemaphorePermit;
use tonic::{Request, Response, Status};

use crate::auth::{Caller, caller};
use crate::convert;
use crate::error::{invalid, kernel_status};
use crate::service::{TwinApi, parse_path, traced_in};

/// The service's full name, for health checks and spans.
pub const MODEL_SERVICE_NAME: &str = "doppel.v1.ModelService";

/// Largest package file accepted, in bytes.
pub const MAX_PACKAGE_BYTES: usize = 256 * 1024;

/// Longest reason, kind, version or model name accepted, in characters.
const MAX_TEXT_CHARS: usize = 1_000;

/// Refuses with PERMISSION_DENIED unless an admin asks: deploying models changes what
/// informs the governors of every twin it reaches.
fn require_admin(caller: &Caller, rpc: &str) -> Result<(), Status> {
    match caller.role {
        crate::Role::Admin => Ok(()),
        role => Err(Status::permission_denied(format!(
            "{rpc} needs an admin token; `{}` is a {role}",
            caller.name
        ))),
    }
}

fn text<'a>(field: &str, value: &'a str, required: bool) -> Result<&'a str, Status> {
    if required && value.trim().is_empty() {
        return Err(invalid(field, "required"));
    }
    let chars = value.chars().count();
    if chars > MAX_TEXT_CHARS {
        return Err(invalid(
            field,
            format!("{chars} characters; at most {MAX_TEXT_CHARS}"),
        ));
    }
    Ok(value)
}

fn mode(value: i32) -> Result<DeployMode, Status> {
    match pb::DeployMode::try_from(value) {
        Ok(pb::DeployMode::Shadow) => Ok(DeployMode::Shadow),
        Ok(pb::DeployMode::Canary) => Ok(DeployMode::Canary),
        Ok(pb::DeployMode::Production) => Ok(DeployMode::Production),
        _ => Err(invalid(
            "mode",
            "DEPLOY_MODE_SHADOW, DEPLOY_MODE_CANARY or DEPLOY_MODE_PRODUCTION",
        )),
    }
}

/// The twins a deployment's `twin_type` and `path_prefix` fields select; a clear
/// INVALID_ARGUMENT when neither is given or either is malformed.
pub fn deploy_target(twin_type: &str, path_prefix: &str) -> Result<Target, Status> {
    let prefix = (!path_prefix.is_empty())
        .then(|| parse_path("path_prefix", path_prefix))
        .transpose()?;
    let twin_type = text("twin_type", twin_type, false)?;
    match (twin_type.is_empty(), prefix) {
        (false, None) => Ok(Target::Type(twin_type.to_string())),
        (true, Some(prefix)) => Ok(Target::Prefix(prefix)),
        (false, Some(prefix)) => Ok(Target::TypeUnder(twin_type.to_string(), prefix)),
        (true, None) => Err(invalid(
            "twin_type",
            "give a twin type, a path_prefix, or both",
        )),
    }
}

fn canary(spec: &pb::CanarySpec) -> Result<CanarySpec, Status> {
    let spec = CanarySpec {
        fraction: spec.fraction,
        per_line: spec.per_line.max(1),
        min_duration_secs: spec.min_duration_secs,
        max_divergence: spec.max_divergence,
        max_alarm_increase: spec.max_alarm_increase.unwrap_or(0),
        auto_promote: spec.auto_promote,
    };
    spec.check().map_err(|problem| invalid("canary", problem))?;
    Ok(spec)
}

fn deploy_response(outcome: DeployOutcome) -> pb::DeployResponse {
    pb::DeployResponse {
        deployment: Some(convert::model_deployment(&outcome.deployment)),
        applied: outcome
            .applied
            .iter()
            .map(|(path, _)| path.to_string())
            .collect(),
        unchanged: outcome.unchanged.iter().map(ToString::to_string).collect(),
        parked: outcome.parked.iter().map(ToString::to_string).collect(),
        failed: outcome
            .failed
            .iter()
            .map(|(path, reason)| pb::DeployFailure {
                asset_path: path.to_string(),
                reason: reason.clone(),
            })
            .collect(),
        nodes: Vec::new(),
    }
}

/// Refuses a `node_id` on a node outside a cluster: there is no other node to ask.
fn this_node(node_id: &str) -> Result<(), Status> {
    if node_id.is_empty() {
        Ok(())
    } else {
        Err(invalid(
            "node_id",
            format!(
                "this node is not in a cluster; it holds its own deployments only (`{node_id}` given)"
            ),
        ))
    }
}

/// The kernel's annotation from a request's, validated at the boundary (the twin
/// checks the alarm, safety action or command exists).
fn annotation(
    path: &doppel_runtime::AssetPath,
    annotation: Option<&pb::Annotation>,
    origin: &doppel_runtime::Origin,
) -> Result<Annotation, Status> {
    use pb::annotation::Subject;
    let annotation = annotation.ok_or_else(|| invalid("annotation", "required"))?;
    let outcome = match pb::AnnotationOutcome::try_from(annotation.outcome) {
        Ok(pb::AnnotationOutcome::Confirmed) => AnnotationOutcome::Confirmed,
        Ok(pb::AnnotationOutcome::FalseAlarm) => AnnotationOutcome::FalseAlarm,
        Ok(pb::AnnotationOutcome::Comment) => AnnotationOutcome::Comment,
        _ => {
            return Err(invalid(
                "annotation.outcome",
                "ANNOTATION_OUTCOME_CONFIRMED, ANNOTATION_OUTCOME_FALSE_ALARM or ANNOTATION_OUTCOME_COMMENT",
            ));
        }
    };
    let note = text(
        "annotation.note",
        annotation.note.trim(),
        outcome == AnnotationOutcome::Comment,
    )?;
    let subject = match &annotation.subject {
        Some(Subject::AlarmCode(code)) => {
            AnnotationSubject::Alarm(text("annotation.alarm_code", code, true)?.to_string())
        }
        Some(Subject::SafetyActionSeq(seq)) => AnnotationSubject::SafetyAction(*seq),
        Some(Subject::Recommendation(recommended)) => {
            let command = crate::service::build_command(
                path,
                &recommended.command,
                &recommended.params,
                origin.clone(),
            )?;
            AnnotationSubject::Recommendation {
                command: command.name.clone(),
                params: command.params.clone(),
            }
        }
        None => {
            return Err(invalid(
                "annotation",
                "name what it annotates: alarm_code, safety_action_seq or recommendation",
            ));
        }
    };
    Ok(Annotation {
        subject,
        outcome,
        note: note.to_string(),
    })
}

impl TwinApi {
    /// An admin's call: who asks (refused unless an admin), admitted, and what they ask.
    fn admin_call<R>(
        &self,
        rpc: &str,
        request: Request<R>,
    ) -> Result<(Caller, SemaphorePermit<'_>, R), Status> {
        let caller = caller(&request)?;
        require_admin(&caller, rpc)?;
        let permit = self.admit()?;
        Ok((caller, permit, request.into_inner()))
    }

    async fn register_package_call(
        &self,
        request: Request<pb::RegisterPackageRequest>,
    ) -> Result<pb::RegisterPackageResponse, Status> {
        let (caller, _permit, request) = self.admin_call("RegisterPackage", request)?;
        if request.package.len() > MAX_PACKAGE_BYTES {
            return Err(invalid(
                "package",
                format!(
                    "{} bytes; at most {MAX_PACKAGE_BYTES}",
                    request.package.len()
                ),
            ));
        }
        let (registered, new) = self
            .shared
            .twins
            .register_package(&request.package, &caller.name)
            .map_err(kernel_status)?;
        Ok(pb::RegisterPackageResponse {
            package: Some(convert::model_package(&registered)),
            new,
        })
    }

    async fn list_packages_call(
        &self,
        request: Request<pb::ListPackagesRequest>,
    ) -> Result<pb::ListPackagesResponse, Status> {
        caller(&request)?;
        let _permit = self.admit()?;
        let request = request.into_inner();
        let kind = text("kind", &request.kind, false)?;
        let packages = self.shared.twins.packages().map_err(kernel_status)?;
        Ok(pb::ListPackagesResponse {
            packages: packages
                .iter()
                .filter(|p| kind.is_empty() || p.kind == kind)
                .map(convert::model_package)
                .collect(),
        })
    }

    async fn get_package_call(
        &self,
        request: Request<pb::GetPackageRequest>,
    ) -> Result<pb::GetPackageResponse, Status> {
        caller(&request)?;
        let _permit = self.admit()?;
        let request = request.into_inner();
        let kind = text("kind", &request.kind, true)?;
        let version = text("version", &request.version, true)?;
        let twins = &self.shared.twins;
        let package = twins
            .packages()
            .map_err(kernel_status)?
            .into_iter()
            .find(|p| p.kind == kind && p.version == version)
            .ok_or_else(|| {
                Status::not_found(format!("no package {kind} {version} is registered"))
            })?;
        let deployments = twins.deployments().map_err(kernel_status)?;
        Ok(pb::GetPackageResponse {
            package: Some(convert::model_package(&package)),
            deployments: deployments
                .iter()
                .filter(|d| d.kind == kind && d.version == version)
                .map(convert::model_deployment)
                .collect(),
            unavailable: Vec::new(),
        })
    }

    async fn deploy_call(
        &self,
        request: Request<pb::DeployRequest>,
    ) -> Result<pb::DeployResponse, Status> {
        let (caller, _permit, request) = self.admin_call("Deploy", request)?;
        let mode = mode(request.mode)?;
        let canary = match (&request.canary, mode) {
            (Some(spec), DeployMode::Canary) => Some(canary(spec)?),
            (None, DeployMode::Canary) => {
                return Err(invalid("canary", "required for DEPLOY_MODE_CANARY"));
            }
            (Some(_), _) => return Err(invalid("canary", "only for DEPLOY_MODE_CANARY")),
            (None, _) => None,
        };
        let model = text("model", &request.model, false)?;
        let deploy = DeployRequest {
            kind: text("kind", &request.kind, true)?.to_string(),
            version: text("version", &request.version, true)?.to_string(),
            model: (!model.is_empty()).then(|| model.to_string()),
            target: deploy_target(&request.twin_type, &request.path_prefix)?,
            mode,
            canary,
            evaluation_secs: request.evaluation_secs,
        };
        let origin = caller.role.origin(&caller.name);
        let outcome = self
            .shared
            .twins
            .deploy(deploy, &origin)
            .await
            .map_err(kernel_status)?;
        Ok(deploy_response(outcome))
    }

    async fn withdraw_call(
        &self,
        request: Request<pb::WithdrawRequest>,
    ) -> Result<pb::DeployResponse, Status> {
        let (caller, _permit, request) = self.admin_call("Withdraw", request)?;
        this_node(&request.node_id)?;
        let reason = text("reason", &request.reason, true)?;
        let origin = caller.role.origin(&caller.name);
        let outcome = self
            .shared
            .twins
            .withdraw(request.deployment, reason, &origin)
            .await
            .map_err(kernel_status)?;
        Ok(deploy_response(outcome))
    }

    async fn decide_canary_call(
        &self,
        request: Request<pb::DecideCanaryRequest>,
    ) -> Result<pb::DeployResponse, Status> {
        let (caller, _permit, request) = self.admin_call("DecideCanary", request)?;
        this_node(&request.node_id)?;
        let reason = text("reason", &request.reason, true)?;
        let origin = caller.role.origin(&caller.name);
        let outcome = self
            .shared
            .twins
            .decide_canary(request.deployment, request.promote, reason, &origin)
            .await
            .map_err(kernel_status)?;
        Ok(deploy_response(outcome))
    }

    async fn list_deployments_call(
        &self,
        request: Request<pb::ListDeploymentsRequest>,
    ) -> Result<pb::ListDeploymentsResponse, Status> {
        caller(&request)?;
        let _permit = self.admit()?;
        let request = request.into_inner();
        let deployments = self.shared.twins.deployments().map_err(kernel_status)?;
        Ok(pb::ListDeploymentsResponse {
            deployments: deployments
                .iter()
                .filter(|d| !request.active_only || d.status == DeploymentStatus::Active)
                .map(convert::model_deployment)
                .collect(),
            unavailable: Vec::new(),
        })
    }

    async fn annotate_call(
        &self,
        request: Request<pb::AnnotateRequest>,
    ) -> Result<pb::AnnotateResponse, Status> {
        let caller = caller(&request)?;
        if !caller.role.may_command() {
            return Err(Status::permission_denied(format!(
                "Annotate needs an operator, planner or admin token; `{}` is a {}",
                caller.name, caller.role
            )));
        }
        let _permit = self.admit()?;
        let request = request.into_inner();
        let path = parse_path("asset_path", &request.asset_path)?;
        crate::service::record_asset(&path);
        let origin = caller.role.origin(&caller.name);
        let annotation = annotation(&path, request.annotation.as_ref(), &origin)?;
        let record = self
            .shared
            .twins
            .annotate(&path, annotation, origin)
            .await
            .map_err(kernel_status)?;
        Ok(pb::AnnotateResponse {
            record: Some(convert::audit_record(&record)),
        })
    }

    async fn get_divergence_call(
        &self,
        request: Request<pb::GetDivergenceRequest>,
    ) -> Result<pb::GetDivergenceResponse, Status> {
        caller(&request)?;
        let _permit = self.admit()?;
        let request = request.into_inner();
        this_node(&request.node_id)?;
        let id = request.deployment;
        let twins = &self.shared.twins;
        let deployment = twins
            .deployments()
            .map_err(kernel_status)?
            .into_iter()
            .find(|d| d.id == id)
            .ok_or_else(|| Status::not_found(format!("no deployment {id}")))?;
        let mut response = pb::GetDivergenceResponse::default();
        let mut fleet = Divergence::default();
        let mut evaluated = 0usize;
        for path in twins.running_deployment(&deployment) {
            match twins.shadows(&path).await {
                Ok(shadows) => {
                    if let Some(shadow) = shadows.iter().find(|s| s.deployment == id) {
                        fleet.merge(&shadow.divergence);
                        let covered = shadow.divergence.samples > 0
                            && (deployment.evaluation_secs)
                                .is_some_and(|w| shadow.divergence.window_secs() >= w);
                        evaluated += usize::from(covered);
                        response.twins.push(pb::TwinDivergence {
                            asset_path: path.to_string(),
                            shadow: Some(convert::shadow(shadow)),
                        });
                    }
                }
                Err(_) => response.unavailable.push(path.to_string()),
            }
        }
        if deployment.evaluation_secs.is_some() {
            response.evaluated_twins = u32::try_from(evaluated).unwrap_or(u32::MAX);
            response.evaluated = evaluated > 0
                && evaluated == response.twins.len()
                && response.unavailable.is_empty();
        }
        response.deployment = Some(convert::model_deployment(&deployment));
        response.fleet = Some(convert::divergence(&fleet));
        Ok(response)
    }
}

#[tonic::async_trait]
impl ModelService for TwinApi {
    async fn register_package(
        &self,
        request: Request<pb::RegisterPackageRequest>,
    ) -> Result<Response<pb::RegisterPackageResponse>, Status> {
        traced_in(MODEL_SERVICE_NAME, "RegisterPackage", request, |r| {
            self.register_package_call(r)
        })
        .await
    }

    async fn list_packages(
        &self,
        request: Request<pb::ListPackagesRequest>,
    ) -> Result<Response<pb::ListPackagesResponse>, Status> {
        traced_in(MODEL_SERVICE_NAME, "ListPackages", request, |r| {
            self.list_packages_call(r)
        })
        .await
    }

    async fn get_package(
        &self,
        request: Request<pb::GetPackageRequest>,
    ) -> Result<Response<pb::GetPackageResponse>, Status> {
        traced_in(MODEL_SERVICE_NAME, "GetPackage", request, |r| {
            self.get_package_call(r)
        })
        .await
    }

    async fn deploy(
        &self,
        request: Request<pb::DeployRequest>,
    ) -> Result<Response<pb::DeployResponse>, Status> {
        traced_in(MODEL_SERVICE_NAME, "Deploy", request, |r| {
            self.deploy_call(r)
        })
        .await
    }

    async fn withdraw(
        &self,
        request: Request<pb::WithdrawRequest>,
    ) -> Result<Response<pb::DeployResponse>, Status> {
        traced_in(MODEL_SERVICE_NAME, "Withdraw", request, |r| {
            self.withdraw_call(r)
        })
        .await
    }

    async fn decide_canary(
        &self,
        request: Request<pb::DecideCanaryRequest>,
    ) -> Result<Response<pb::DeployResponse>, Status> {
        traced_in(MODEL_SERVICE_NAME, "DecideCanary", request, |r| {
            self.decide_canary_call(r)
        })
        .await
    }

    async fn list_deployments(
        &self,
        request: Request<pb::ListDeploymentsRequest>,
    ) -> Result<Response<pb::ListDeploymentsResponse>, Status> {
        traced_in(MODEL_SERVICE_NAME, "ListDeployments", request, |r| {
            self.list_deployments_call(r)
        })
        .await
    }

    async fn get_divergence(
        &self,
        request: Request<pb::GetDivergenceRequest>,
    ) -> Result<Response<pb::GetDivergenceResponse>, Status> {
        traced_in(MODEL_SERVICE_NAME, "GetDivergence", request, |r| {
            self.get_divergence_call(r)
        })
        .await
    }

    async fn annotate(
        &self,
        request: Request<pb::AnnotateRequest>,
    ) -> Result<Response<pb::AnnotateResponse>, Status> {
        traced_in(MODEL_SERVICE_NAME, "Annotate", request, |r| {
            self.annotate_call(r)
        })
        .await
    }
}
