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
use super::core::PlanOutcome;
use super::directory::TwinEntry;
use super::twins::Twins;
use crate::command::Origin;
use crate::error::Error;
use crate::journal::Store;
use crate::model::deploy::{ActiveDeployment, Divergence, ShadowReport, build_packaged, choose};
use crate::model::registry::{
    CanarySpec, DeployMode, Deployment, DeploymentStatus, RegisteredPackage, RegistryError,
    Rollout, RolloutState, Target,
};
use crate::path::AssetPath;
use crate::time::Timestamp;

/// A deployment to make: which package, as which model, on which twins, how.
#[derive(Debug, Clone)]
pub struct DeployRequest {
    /// The package's kind.
    pub kind: String,
    /// The package's version.
    pub version: String,
    /// The model (by name on the twin type) it replaces or shadows; `None`: the one
    /// model of the package's kind on the selected twins.
    pub model: Option<String>,
    /// The twins it selects.
    pub target: Target,
    /// How it runs.
    pub mode: DeployMode,
    /// A canary's criteria (canary deployments only).
    pub canary: Option<CanarySpec>,
    /// A shadow's evaluation window in seconds of samples (shadow deployments only).
    pub evaluation_secs: Option<f64>,
}

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

/// The canary twins among `selected`: ranked by a hash of their path (FNV-1a, the
/// same on every node and every run), taken in that order up to `spec.fraction` of
/// them (at least one), never more than `spec.per_line` sharing a parent path.
pub(super) fn canary_twins(selected: &[Arc<TwinEntry>], spec: &CanarySpec) -> Vec<AssetPath> {
    let want = ((selected.len() as f64 * spec.fraction).ceil() as usize).clamp(1, selected.len());
    let mut ranked: Vec<(u64, &AssetPath)> = selected
        .iter()
        .map(|entry| (fnv1a(entry.path.as_str()), &entry.path))
        .collect();
    ranked.sort_unstable();
    let mut per_line: std::collections::HashMap<Option<AssetPath>, u32> = Default::default();
    let mut chosen = Vec::with_capacity(want);
    for (_, path) in ranked {
        if chosen.len() == want {
            break;
        }
        let line = per_line.entry(path.parent()).or_default();
        if *line < spec.per_line {
            *line += 1;
            chosen.push(path.clone());
        }
    }
    chosen.sort_unstable();
    chosen
}

/// The criterion of `spec` that the canary twins' figures break, if one does.
fn broken_criterion(spec: &CanarySpec, divergence: &Divergence) -> Option<String> {
    if divergence.informed_safety_actions > 0 {
        return Some(format!(
            "{} safety action(s) informed by the candidate that the model it replaced would not have informed",
            divergence.informed_safety_actions
        ));
    }
    let increase = divergence
        .production_only_alarms
        .saturating_sub(divergence.shadow_only_alarms);
    if increase > spec.max_alarm_increase {
        return Some(format!(
            "the candidate raised {} alarm(s) the model it replaced did not and missed {} it raised: {increase} more, over the limit of {}",
            divergence.production_only_alarms,
            divergence.shadow_only_alarms,
            spec.max_alarm_increase
        ));
    }
    let max = spec.max_divergence?;
    divergence
        .outputs
        .iter()
        .find(|output| output.mean_abs() > max)
        .map(|output| {
            format!(
                "output `{}` diverged by {:.4} on average from the model it replaced, over the limit of {max}",
                output.name,
                output.mean_abs()
            )
        })
}

/// How often canaries in force are checked against their criteria.
pub const ROLLOUT_INTERVAL: std::time::Duration = std::time::Duration::from_secs(1);

/// FNV-1a, 64 bits.
fn fnv1a(text: &str) -> u64 {
    text.bytes().fold(0xcbf2_9ce4_8422_2325, |hash, byte| {
        (hash ^ u64::from(byte)).wrapping_mul(0x0100_0000_01b3)
    })
}

fn refused(message: impl Into<String>) -> Error {
    Error::Registry(RegistryError::Refused(message.into()))
}

impl Twins {
    /// Checks a package file against the keys the node trusts
    /// ([`ModelSettings`](crate::config::ModelSettings)) and adds it to the node's
    /// registry, on behalf of `by`. Returns it and whether it is new (the same file
    /// registered again is not).
    pub fn register_package(
        &self,
        text: &str,
        by: &str,
    ) -> Result<(RegisteredPackage, bool), Error> {
        let trust = (self.kernel.settings.models.trust())
            .map_err(|message| crate::config::ConfigError::at("[models]", None, message))?;
        Ok(self
            .kernel
            .journal
            .store()
            .register_package(text, &trust, by, Timestamp::now())?)
    }

    /// Every registered package.
    pub fn packages(&self) -> Result<Vec<RegisteredPackage>, Error> {
        Ok(self.kernel.journal.store().packages()?)
    }

    /// Every deployment, oldest first.
    pub fn deployments(&self) -> Result<Vec<Deployment>, Error> {
        Ok(self.kernel.journal.store().deployments()?)
    }

    /// Deploys a registered package as `request` says, on behalf of `origin`: records
    /// the deployment, then has every running twin it selects (for a canary, every
    /// canary twin) swap what it runs, and answers once they have.
    pub async fn deploy(
        &self,
        request: DeployRequest,
        origin: &Origin,
    ) -> Result<DeployOutcome, Error> {
        let DeployRequest {
            kind,
            version,
            model,
            target,
            mode,
            canary,
            evaluation_secs,
        } = request;
        if let Some(window) = evaluation_secs {
            if mode != DeployMode::Shadow {
                return Err(refused(format!(
                    "an evaluation window is for shadow deployments; a {mode} deployment has none (a canary's is its min_duration_secs)"
                )));
            }
            if !(window.is_finite() && window > 0.0) {
                return Err(refused(format!(
                    "an evaluation window is a positive number of seconds, not {window}"
                )));
            }
        }
        match (mode, &canary) {
            (DeployMode::Canary, None) => {
                return Err(refused(
                    "a canary needs its criteria: fraction, per-line limit, window",
                ));
            }
            (DeployMode::Canary, Some(spec)) => spec.check().map_err(refused)?,
            (_, Some(_)) => return Err(refused(format!("a {mode} deployment takes no canary"))),
            (_, None) => {}
        }
        let store = self.kernel.journal.store();
        let package = store
            .package(&kind, &version)?
            .ok_or_else(|| RegistryError::UnknownPackage {
                kind: kind.clone(),
                version: version.clone(),
            })?
            .package()
            .map_err(RegistryError::from)?;
        let name = match model {
            Some(name) => name,
            None => self.model_of_kind(&target, &package.kind)?,
        };
        let mut selected = self.selecting(&target, &name);
        if selected.is_empty() {
            return Err(refused(format!(
                "no twin {target} selects has a model `{name}`"
            )));
        }
        // A package's parameters are made for one type's channels and desired values.
        let mut types: Vec<&str> = (selected.iter())
            .map(|entry| entry.twin_type.name.as_str())
            .collect();
        types.sort_unstable();
        types.dedup();
        if types.len() > 1 {
            return Err(refused(format!(
                "twins {target} selects are of types {} with a model `{name}`: name the type the package is for",
                types.join(", ")
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
        let now = Timestamp::now();
        let rollout = canary.as_ref().map(|spec| Rollout {
            state: RolloutState::Running,
            twins: canary_twins(&selected, spec),
            divergence: Divergence::default(),
            reason: String::new(),
            promoted_to: None,
            started_at: now,
            changed_at: now,
        });
        if let Some(rollout) = &rollout {
            selected.retain(|entry| rollout.twins.contains(&entry.path));
        }
        let deployment = store.add_deployment(Deployment {
            id: 0,
            kind: package.kind.clone(),
            version: package.version.clone(),
            model: name.clone(),
            target,
            mode,
            by: origin.principal.clone(),
            at: now,
            status: DeploymentStatus::Active,
            withdrawn: None,
            canary,
            rollout,
            evaluation_secs,
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

    /// The one model of kind `kind` on the twins `target` selects.
    fn model_of_kind(&self, target: &Target, kind: &str) -> Result<String, Error> {
        let mut names: Vec<&str> = (self.directory.entries().iter())
            .filter(|entry| target.selects(&entry.path, &entry.twin_type.name))
            .flat_map(|entry| entry.twin_type.models.iter())
            .filter(|spec| spec.kind == kind)
            .map(|spec| spec.name.as_str())
            .collect();
        names.sort_unstable();
        names.dedup();
        match names.as_slice() {
            [one] => Ok(one.to_string()),
            [] => Err(refused(format!(
                "no twin {target} selects has a {kind} model"
            ))),
            many => Err(refused(format!(
                "twins {target} selects have {kind} models {}: name the one to deploy to",
                many.join(", ")
            ))),
        }
    }

    /// Withdraws deployment `id`: the twins it selected go back to what they would run
    /// without it. `why` is recorded with the deployment; a canary in force is
    /// recorded as rolled back.
    pub async fn withdraw(
        &self,
        id: u64,
        why: &str,
        origin: &Origin,
    ) -> Result<DeployOutcome, Error> {
        self.end_deployment(id, why, (RolloutState::RolledBack, None), origin)
            .await
    }

    /// Ends deployment `id` with `why`; a canary's rollout in force ends in `ended`
    /// (its state, and the deployment that promoted it).
    async fn end_deployment(
        &self,
        id: u64,
        why: &str,
        ended: (RolloutState, Option<u64>),
        origin: &Origin,
    ) -> Result<DeployOutcome, Error> {
        let store = self.kernel.journal.store();
        let note = format!("{}: {why}", origin.principal);
        let now = Timestamp::now();
        let deployment = store.update_deployment(id, |deployment| {
            if deployment.status != DeploymentStatus::Active {
                return;
            }
            deployment.status = DeploymentStatus::Withdrawn;
            deployment.withdrawn = Some(note);
            if let Some(rollout) = deployment.rollout.as_mut() {
                rollout.state = ended.0;
                rollout.promoted_to = ended.1;
                rollout.reason = why.to_string();
                rollout.changed_at = now;
            }
        })?;
        let active: Vec<ActiveDeployment> = self
            .kernel
            .models
            .get()
            .iter()
            .filter(|a| a.deployment.id != id)
            .cloned()
            .collect();
        self.kernel.models.set(active);
        let mut selected = self.selecting(&deployment.target, &deployment.model);
        if let Some(rollout) = &deployment.rollout {
            selected.retain(|entry| rollout.twins.contains(&entry.path));
        }
        tracing::info!(deployment = id, by = %origin.principal, why, twins = selected.len(), "model deployment withdrawn");
        Ok(self.apply_models(deployment, &selected, origin).await)
    }

    /// Decides canary `id` for an operator: promotes it to production on every twin
    /// its deployment selects (a new production deployment of the same package), or
    /// rolls it back. Refused unless its rollout runs or is held.
    pub async fn decide_canary(
        &self,
        id: u64,
        promote: bool,
        why: &str,
        origin: &Origin,
    ) -> Result<DeployOutcome, Error> {
        let deployment = self.canary_in_force(id)?;
        if promote {
            self.promote(deployment, why, origin).await
        } else {
            self.withdraw(id, &format!("rolled back: {why}"), origin)
                .await
        }
    }

    fn canary_in_force(&self, id: u64) -> Result<Deployment, Error> {
        let deployment = (self.kernel.journal.store().deployments()?)
            .into_iter()
            .find(|d| d.id == id)
            .ok_or(RegistryError::UnknownDeployment(id))?;
        match &deployment.rollout {
            Some(rollout)
                if deployment.status == DeploymentStatus::Active && rollout.state.in_force() =>
            {
                Ok(deployment)
            }
            Some(rollout) => Err(refused(format!(
                "deployment {id}'s canary is {} already",
                rollout.state
            ))),
            None => Err(refused(format!("deployment {id} is not a canary"))),
        }
    }

    /// Promotes canary `canary`: deploys its package in production to every twin its
    /// deployment selects, then ends the canary as promoted. Its canary twins keep the
    /// candidate's state (the same version carries over).
    async fn promote(
        &self,
        canary: Deployment,
        why: &str,
        origin: &Origin,
    ) -> Result<DeployOutcome, Error> {
        let production = self
            .deploy(
                DeployRequest {
                    kind: canary.kind.clone(),
                    version: canary.version.clone(),
                    model: Some(canary.model.clone()),
                    target: canary.target.clone(),
                    mode: DeployMode::Production,
                    canary: None,
                    evaluation_secs: None,
                },
                origin,
            )
            .await?;
        let id = production.deployment.id;
        let ended = self
            .end_deployment(
                canary.id,
                &format!("promoted to production (deployment {id}): {why}"),
                (RolloutState::Promoted, Some(id)),
                origin,
            )
            .await?;
        let mut outcome = production;
        outcome.unchanged.retain(|path| {
            !ended.applied.iter().any(|(p, _)| p == path)
                && !ended.failed.iter().any(|(p, _)| p == path)
        });
        outcome.applied.extend(ended.applied);
        outcome.failed.extend(ended.failed);
        Ok(outcome)
    }

    /// Checks every canary in force against its criteria, once: gathers the figures of
    /// its canary twins (the candidate in production, the model it replaced as their
    /// baseline), records them, and rolls it back when a criterion breaks, or, once
    /// every criterion held for its window, promotes it or holds it for an operator.
    /// Returns what it did, by deployment.
    pub async fn check_rollouts(&self) -> Vec<(u64, RolloutState)> {
        let canaries: Vec<Deployment> = (self.kernel.models.get().iter())
            .map(|a| &a.deployment)
            .filter(|d| d.rollout.as_ref().is_some_and(|r| r.state.in_force()))
            .cloned()
            .collect();
        let mut decided = Vec::new();
        for canary in canaries {
            match self.check_rollout(&canary).await {
                Ok(Some(state)) => decided.push((canary.id, state)),
                Ok(None) => {}
                Err(error) => {
                    tracing::error!(deployment = canary.id, %error, "a canary rollout could not be checked");
                }
            }
        }
        decided
    }

    async fn check_rollout(&self, canary: &Deployment) -> Result<Option<RolloutState>, Error> {
        let (Some(spec), Some(rollout)) = (&canary.canary, &canary.rollout) else {
            return Ok(None);
        };
        let mut divergence = Divergence::default();
        let mut compared = 0;
        for path in &rollout.twins {
            // A passivated canary twin is not woken: it sees no samples to compare.
            let Some(entry) = self.directory.get(path) else {
                continue;
            };
            if entry.is_parked() {
                continue;
            }
            if let Ok(shadows) = self.shadows(path).await
                && let Some(baseline) = shadows
                    .iter()
                    .find(|s| s.baseline && s.deployment == canary.id)
            {
                divergence.merge(&baseline.divergence);
                compared += usize::from(baseline.divergence.samples > 0);
            }
        }
        let broken = broken_criterion(spec, &divergence);
        let now = Timestamp::now();
        let held_for = (now.0 - rollout.started_at.0).max(0) as f64 / 1e6;
        let store = self.kernel.journal.store();
        let canary_origin = Origin::automation("canary");
        if let Some(why) = broken {
            store.update_deployment(canary.id, |d| {
                if let Some(r) = d.rollout.as_mut() {
                    r.divergence = divergence;
                }
            })?;
            tracing::warn!(deployment = canary.id, why, "canary rolled back");
            self.withdraw(canary.id, &format!("rolled back: {why}"), &canary_origin)
                .await?;
            return Ok(Some(RolloutState::RolledBack));
        }
        // Due once its window passed with every canary twin compared on a sample at least.
        let due = rollout.state == RolloutState::Running
            && held_for >= spec.min_duration_secs
            && compared == rollout.twins.len();
        if due && spec.auto_promote {
            store.update_deployment(canary.id, |d| {
                if let Some(r) = d.rollout.as_mut() {
                    r.divergence = divergence;
                }
            })?;
            let why = format!("every criterion held for {held_for:.0} s");
            tracing::info!(deployment = canary.id, why, "canary promoted");
            self.promote(canary.clone(), &why, &canary_origin).await?;
            return Ok(Some(RolloutState::Promoted));
        }
        let updated = store.update_deployment(canary.id, |d| {
            if let Some(r) = d.rollout.as_mut() {
                r.divergence = divergence;
                if due {
                    r.state = RolloutState::Held;
                    r.reason = format!(
                        "every criterion held for {held_for:.0} s; waiting for an operator to promote or roll back"
                    );
                    r.changed_at = now;
                }
            }
        })?;
        self.refresh_active(updated);
        Ok(due.then_some(RolloutState::Held))
    }

    /// Puts `deployment`'s latest record in the active set.
    fn refresh_active(&self, deployment: Deployment) {
        let mut active = self.kernel.models.get().as_ref().clone();
        if let Some(slot) = active.iter_mut().find(|a| a.deployment.id == deployment.id) {
            slot.deployment = deployment;
            self.kernel.models.set(active);
        }
    }

    /// Checks canaries in force every [`ROLLOUT_INTERVAL`] until the task is aborted.
    pub fn spawn_rollout_watch(&self) -> tokio::task::JoinHandle<()> {
        let twins = self.clone();
        tokio::spawn(async move {
            let mut interval = tokio::time::interval(ROLLOUT_INTERVAL);
            interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                interval.tick().await;
                twins.check_rollouts().await;
            }
        })
    }

    /// Whether `target` selects any twin this node hosts.
    pub fn selects_any(&self, target: &Target) -> bool {
        (self.directory.entries().iter())
            .any(|entry| target.selects(&entry.path, &entry.twin_type.name))
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

    /// Whether the twin at `path` runs a shadow (or a canary's baseline) under the
    /// active deployments; read without asking the twin.
    pub fn runs_shadows(&self, path: &AssetPath) -> bool {
        let Some(entry) = self.directory.get(path) else {
            return false;
        };
        let active = self.kernel.models.get();
        !active.is_empty()
            && entry.twin_type.models.iter().any(|spec| {
                let choice = choose(&active, path, &entry.twin_type.name, &spec.name);
                choice.shadow.is_some() || choice.baseline.is_some()
            })
    }

    /// The twins hosted here that run `deployment`'s shadow or, for a canary in force,
    /// its candidate beside the baseline; in path order.
    pub fn running_deployment(&self, deployment: &Deployment) -> Vec<AssetPath> {
        if deployment.status != DeploymentStatus::Active {
            return Vec::new();
        }
        let active = self.kernel.models.get();
        let mut paths: Vec<AssetPath> = self
            .selecting(&deployment.target, &deployment.model)
            .into_iter()
            .filter(|entry| {
                let choice = choose(
                    &active,
                    &entry.path,
                    &entry.twin_type.name,
                    &deployment.model,
                );
                let id = Some(deployment.id);
                match deployment.mode {
                    DeployMode::Shadow => choice.shadow.map(|s| s.deployment.id) == id,
                    _ => {
                        choice.baseline.is_some()
                            && choice.production.map(|p| p.deployment.id) == id
                    }
                }
            })
            .map(|entry| entry.path.clone())
            .collect();
        paths.sort_unstable();
        paths
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
            let plan = match self.kernel.model_plan(entry, &model) {
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
}
