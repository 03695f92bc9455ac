//! Deploying registered model packages to a node's twins without a restart, and taking
//! deployments back.
//!
//! A deployment is recorded in the registry first, then every running twin it selects
//! is sent the models it should now run; each swaps them in its own message handling
//! and answers once the change, its audit record and a snapshot of the twin are
//! durable. A passivated twin is not woken: it builds its models from the registry
//! when it next wakes. A twin that is restarting does the same when it starts.

use std::sync::Arc;

use tokio::sync::oneshot;

use super::actor::TwinMsg;
use super::core::{Deployed, ModelPlan, PlanOutcome};
use super::directory::TwinEntry;
use super::twins::Twins;
use crate::command::Origin;
use crate::error::Error;
use crate::journal::Store;
use crate::model::deploy::{ActiveDeployment, ShadowReport, build_packaged, choose};
use crate::model::package::Trust;
use crate::model::registry::{
    DeployMode, Deployment, DeploymentStatus, RegisteredPackage, RegistryError, Target,
};
use crate::path::AssetPath;
use crate::time::Timestamp;

/// What a deployment (or its withdrawal) did on this node.
#[derive(Debug, Clone)]
pub struct DeployOutcome {
    /// The deployment as recorded.
    pub deployment: Deployment,
    /// Twins that changed what they run, with what changed.
    pub applied: Vec<(AssetPath, PlanOutcome)>,
    /// Twins selected that already ran what it asks.
    pub unchanged: Vec<AssetPath>,
    /// Passivated twins: they run it when they wake.
    pub parked: Vec<AssetPath>,
    /// Twins that did not answer (restarting, or refused), with why; a restarting twin
    /// runs it when it starts.
    pub failed: Vec<(AssetPath, String)>,
}

/// The active deployments in a store, with their packages, in deployment order.
pub(super) fn active_deployments(store: &Store) -> Result<Vec<ActiveDeployment>, Error> {
    let mut active = Vec::new();
    for deployment in store.deployments()? {
        if deployment.status != DeploymentStatus::Active {
            continue;
        }
        let package = store
            .package(&deployment.kind, &deployment.version)?
            .ok_or_else(|| RegistryError::UnknownPackage {
                kind: deployment.kind.clone(),
                version: deployment.version.clone(),
            })?
            .package()
            .map_err(RegistryError::from)?;
        active.push(ActiveDeployment {
            deployment,
            package: Arc::new(package),
        });
    }
    Ok(active)
}

fn refused(message: impl Into<String>) -> Error {
    Error::Registry(RegistryError::Refused(message.into()))
}

impl Twins {
    /// Checks a package file against `trust` and adds it to the node's registry.
    /// Returns it and whether it is new (the same file registered again is not).
    pub fn register_package(
        &self,
        text: &str,
        trust: &Trust,
        by: &str,
    ) -> Result<(RegisteredPackage, bool), Error> {
        Ok(self
            .kernel
            .journal
            .store()
            .register_package(text, trust, by, Timestamp::now())?)
    }

    /// Every registered package.
    pub fn packages(&self) -> Result<Vec<RegisteredPackage>, Error> {
        Ok(self.kernel.journal.store().packages()?)
    }

    /// Every deployment, oldest first.
    pub fn deployments(&self) -> Result<Vec<Deployment>, Error> {
        Ok(self.kernel.journal.store().deployments()?)
    }

    /// Deploys registered package `kind` `version` as model `model` (`None`: the model
    /// of that kind, when the selected twins' types have one) of the twins `target`
    /// selects, in `mode`, on behalf of `origin`.
    pub async fn deploy(
        &self,
        kind: &str,
        version: &str,
        model: Option<&str>,
        target: Target,
        mode: DeployMode,
        origin: &Origin,
    ) -> Result<DeployOutcome, Error> {
        if mode == DeployMode::Canary {
            return Err(refused(
                "canary rollouts are not available on this node; deploy as shadow or production",
            ));
        }
        let store = self.kernel.journal.store();
        let package = store
            .package(kind, version)?
            .ok_or_else(|| RegistryError::UnknownPackage {
                kind: kind.to_string(),
                version: version.to_string(),
            })?
            .package()
            .map_err(RegistryError::from)?;
        let candidates: Vec<&Arc<TwinEntry>> = self
            .directory
            .entries()
            .iter()
            .filter(|entry| target.selects(&entry.path, &entry.twin_type.name))
            .collect();
        // The model it runs as: named, or the one model of its kind on the types.
        let name = match model {
            Some(name) => name.to_string(),
            None => {
                let mut names: Vec<&str> = candidates
                    .iter()
                    .flat_map(|entry| entry.twin_type.models.iter())
                    .filter(|spec| spec.kind == package.kind)
                    .map(|spec| spec.name.as_str())
                    .collect();
                names.sort_unstable();
                names.dedup();
                match names.as_slice() {
                    [one] => one.to_string(),
                    [] => {
                        return Err(refused(format!(
                            "no twin {target} selects has a {} model",
                            package.kind
                        )));
                    }
                    many => {
                        return Err(refused(format!(
                            "twins {target} selects have {} models {}: name the one to deploy to",
                            package.kind,
                            many.join(", ")
                        )));
                    }
                }
            }
        };
        let selected = self.selecting(&target, &name);
        if selected.is_empty() {
            return Err(refused(format!(
                "no twin {target} selects has a model `{name}`"
            )));
        }
        // The package must build on every type it reaches before anything is recorded.
        let mut checked: Vec<&str> = Vec::new();
        for entry in &selected {
            if checked.contains(&entry.twin_type.name.as_str()) {
                continue;
            }
            build_packaged(&self.kernel.components, &entry.twin_type, &name, &package)?;
            checked.push(entry.twin_type.name.as_str());
        }
        let deployment = store.add_deployment(Deployment {
            id: 0,
            kind: package.kind.clone(),
            version: package.version.clone(),
            model: name.clone(),
            target,
            mode,
            by: origin.principal.clone(),
            at: Timestamp::now(),
            status: DeploymentStatus::Active,
            withdrawn: None,
        })?;
        let mut active = self.kernel.models.get().as_ref().clone();
        active.push(ActiveDeployment {
            deployment: deployment.clone(),
            package: Arc::new(package),
        });
        self.kernel.models.set(active);
        tracing::info!(deployment = deployment.id, kind = %deployment.kind, version = %deployment.version, model = %name, target = %deployment.target, mode = %mode, by = %origin.principal, twins = selected.len(), "model deployed");
        Ok(self.apply_models(deployment, &selected, origin).await)
    }

    /// Withdraws deployment `id`: the twins it selected go back to what they would run
    /// without it. `why` is recorded with the deployment.
    pub async fn withdraw(
        &self,
        id: u64,
        why: &str,
        origin: &Origin,
    ) -> Result<DeployOutcome, Error> {
        let store = self.kernel.journal.store();
        let deployment = store.withdraw_deployment(id, &format!("{}: {why}", origin.principal))?;
        let active: Vec<ActiveDeployment> = self
            .kernel
            .models
            .get()
            .iter()
            .filter(|a| a.deployment.id != id)
            .cloned()
            .collect();
        self.kernel.models.set(active);
        let selected = self.selecting(&deployment.target, &deployment.model);
        tracing::info!(deployment = id, by = %origin.principal, why, twins = selected.len(), "model deployment withdrawn");
        Ok(self.apply_models(deployment, &selected, origin).await)
    }

    /// The twins `target` selects whose type has a model named `model`.
    fn selecting(&self, target: &Target, model: &str) -> Vec<Arc<TwinEntry>> {
        self.directory
            .entries()
            .iter()
            .filter(|entry| {
                target.selects(&entry.path, &entry.twin_type.name)
                    && entry.twin_type.models.iter().any(|m| m.name == model)
            })
            .cloned()
            .collect()
    }

    /// The shadow models of the twin at `path`, with their outputs and divergence.
    pub async fn shadows(&self, path: &AssetPath) -> Result<Vec<ShadowReport>, Error> {
        self.ask(path, TwinMsg::Shadows).await
    }

    /// Sends each twin what it should now run as `deployment.model`, then waits for
    /// their answers.
    async fn apply_models(
        &self,
        deployment: Deployment,
        selected: &[Arc<TwinEntry>],
        origin: &Origin,
    ) -> DeployOutcome {
        let mut outcome = DeployOutcome {
            deployment,
            applied: Vec::new(),
            unchanged: Vec::new(),
            parked: Vec::new(),
            failed: Vec::new(),
        };
        let model = outcome.deployment.model.clone();
        let mut waiting = Vec::new();
        for entry in selected {
            let plan = match self.plan(entry, &model) {
                Ok(plan) => plan,
                Err(error) => {
                    outcome.failed.push((entry.path.clone(), error.to_string()));
                    continue;
                }
            };
            let (reply, answer) = oneshot::channel();
            let message = TwinMsg::Models(Box::new(plan), origin.clone(), reply);
            match self.kernel.send_if(entry, message, |_| false) {
                Ok(()) => waiting.push((entry.path.clone(), answer)),
                Err(_) if entry.is_parked() => outcome.parked.push(entry.path.clone()),
                Err(unsent) => {
                    let why = if unsent.starting {
                        "starting: it runs the deployment when it starts"
                    } else {
                        "unavailable: it runs the deployment when it restarts"
                    };
                    outcome.failed.push((entry.path.clone(), why.to_string()));
                }
            }
        }
        for (path, answer) in waiting {
            match answer.await {
                Ok(Ok(changed)) if changed.changed() => outcome.applied.push((path, changed)),
                Ok(Ok(_)) => outcome.unchanged.push(path),
                Ok(Err(error)) => outcome.failed.push((path, error.to_string())),
                Err(_) => outcome
                    .failed
                    .push((path, "the twin stopped before answering".to_string())),
            }
        }
        outcome
    }

    /// What the twin `entry` should run as model `model` under the active deployments.
    fn plan(&self, entry: &TwinEntry, model: &str) -> Result<ModelPlan, Error> {
        let active = self.kernel.models.get();
        let choice = choose(&active, &entry.path, &entry.twin_type.name, model);
        let production = match &choice.production {
            Some(production) => (
                self.kernel.build_deployed(entry, model, production)?,
                Some(Deployed::from(production)),
            ),
            None => {
                let spec = entry
                    .twin_type
                    .models
                    .iter()
                    .find(|spec| spec.name == model)
                    .ok_or_else(|| refused(format!("no model `{model}` on {}", entry.path)))?;
                (
                    self.kernel.components.build_model(spec, &entry.twin_type)?,
                    None,
                )
            }
        };
        let shadow = match &choice.shadow {
            Some(shadow) => Some((
                self.kernel.build_deployed(entry, model, shadow)?,
                shadow.deployment.id,
            )),
            None => None,
        };
        Ok(ModelPlan { production, shadow })
    }
}
