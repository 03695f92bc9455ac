//! The model registry: every package a node has accepted and every deployment of one,
//! kept in the node's redb file.
//!
//! A package is registered once per kind and version: registering the same file again
//! is a no-op, and a different package under a kind and version already held is
//! refused, so a version names one set of parameters for good. Deployments are never
//! deleted: a withdrawn one stays, marked, so the registry answers which model ran on
//! which twins when.

use std::fmt;

use redb::{ReadableDatabase, ReadableTable, TableDefinition};
use serde::{Deserialize, Serialize};

use super::package::{ModelPackage, PackageError, PackageFile, Signer, Trust};
use crate::journal::{Store, StoreError};
use crate::path::AssetPath;
use crate::time::Timestamp;

/// Registered packages: (kind, version) → JSON [`RegisteredPackage`].
pub(crate) const PACKAGES: TableDefinition<(&str, &str), &[u8]> =
    TableDefinition::new("model_packages");
/// Deployments: id → JSON [`Deployment`].
pub(crate) const DEPLOYMENTS: TableDefinition<u64, &[u8]> =
    TableDefinition::new("model_deployments");

/// A package the registry holds.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RegisteredPackage {
    /// The model kind.
    pub kind: String,
    /// Its version.
    pub version: String,
    /// The signer's public key (hex); empty for a package accepted unsigned.
    pub signer: String,
    /// When this node accepted it.
    pub registered_at: Timestamp,
    /// Who registered it.
    pub registered_by: String,
    /// The package file as received, signature included.
    pub text: String,
}

impl RegisteredPackage {
    /// The package it holds.
    pub fn package(&self) -> Result<ModelPackage, PackageError> {
        PackageFile::parse(&self.text).map(|file| file.package().clone())
    }
}

/// How a deployment runs its package.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DeployMode {
    /// Beside the production model, on the same samples, its outputs kept apart: it
    /// never raises alarms, informs governors or acts.
    Shadow,
    /// In production on a deterministic part of the selected twins.
    Canary,
    /// In production on every selected twin.
    Production,
}

impl DeployMode {
    /// The mode's name (`shadow`, `canary`, `production`).
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Shadow => "shadow",
            Self::Canary => "canary",
            Self::Production => "production",
        }
    }
}

impl fmt::Display for DeployMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for DeployMode {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, String> {
        match text {
            "shadow" => Ok(Self::Shadow),
            "canary" => Ok(Self::Canary),
            "production" => Ok(Self::Production),
            other => Err(format!(
                "unknown mode `{other}`: shadow, canary or production"
            )),
        }
    }
}

/// Which twins a deployment selects.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Target {
    /// Every twin of a type.
    Type(String),
    /// Every twin at or below a path.
    Prefix(AssetPath),
    /// Every twin of a type at or below a path.
    TypeUnder(String, AssetPath),
}

impl Target {
    /// Whether the twin at `path`, of type `twin_type`, is selected.
    pub fn selects(&self, path: &AssetPath, twin_type: &str) -> bool {
        match self {
            Self::Type(name) => name == twin_type,
            Self::Prefix(prefix) => path.starts_with(prefix),
            Self::TypeUnder(name, prefix) => name == twin_type && path.starts_with(prefix),
        }
    }

    /// The twin type it names, if it names one.
    pub fn twin_type(&self) -> Option<&str> {
        match self {
            Self::Type(name) | Self::TypeUnder(name, _) => Some(name),
            Self::Prefix(_) => None,
        }
    }

    /// The path prefix it names, if it names one.
    pub fn prefix(&self) -> Option<&AssetPath> {
        match self {
            Self::Prefix(prefix) | Self::TypeUnder(_, prefix) => Some(prefix),
            Self::Type(_) => None,
        }
    }
}

impl fmt::Display for Target {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Type(name) => write!(f, "type {name}"),
            Self::Prefix(prefix) => write!(f, "{prefix}"),
            Self::TypeUnder(name, prefix) => write!(f, "type {name} under {prefix}"),
        }
    }
}

/// Whether a deployment is in force.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DeploymentStatus {
    /// In force on the twins it selects (unless a later one overrides it).
    Active,
    /// Taken back: its twins run what they ran without it.
    Withdrawn,
}

/// A package deployed to a selection of twins.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Deployment {
    /// The node-wide id, in deployment order.
    pub id: u64,
    /// The package's kind.
    pub kind: String,
    /// The package's version.
    pub version: String,
    /// The model (by name on the twin type) the package replaces or shadows.
    pub model: String,
    /// The twins it selects.
    pub target: Target,
    /// How it runs.
    pub mode: DeployMode,
    /// Who deployed it.
    pub by: String,
    /// When.
    pub at: Timestamp,
    /// Whether it is in force.
    pub status: DeploymentStatus,
    /// Why it was withdrawn, and by whom.
    #[serde(default)]
    pub withdrawn: Option<String>,
    /// What a canary is tried on and must show (canary deployments only).
    #[serde(default)]
    pub canary: Option<CanarySpec>,
    /// Where a canary rollout stands (canary deployments only).
    #[serde(default)]
    pub rollout: Option<Rollout>,
    /// How long, in seconds of samples, a shadow must run beside production on each
    /// twin before its figures count as evaluated (at least one production cycle);
    /// shadow deployments only.
    #[serde(default)]
    pub evaluation_secs: Option<f64>,
}

/// What a canary is tried on and what it must show before it is promoted.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CanarySpec {
    /// The fraction of the selected twins that run the candidate, in (0, 1].
    pub fraction: f64,
    /// At most this many canary twins per line (machines sharing a parent path).
    pub per_line: u32,
    /// How long every criterion must hold before the canary succeeds, in seconds.
    pub min_duration_secs: f64,
    /// Largest mean |candidate − replaced| allowed on any output over the canary twins.
    pub max_divergence: Option<f64>,
    /// Largest number of alarms the candidate raised that the model it replaced did
    /// not, less the reverse, over the canary twins.
    pub max_alarm_increase: u64,
    /// Promote by itself when the window passes with every criterion held; otherwise
    /// hold for an operator.
    pub auto_promote: bool,
}

impl CanarySpec {
    /// Checks the numbers make sense.
    pub fn check(&self) -> Result<(), String> {
        if !(self.fraction > 0.0 && self.fraction <= 1.0) {
            return Err(format!(
                "canary fraction {} is not in (0, 1]",
                self.fraction
            ));
        }
        if !(self.min_duration_secs.is_finite() && self.min_duration_secs >= 0.0) {
            return Err(format!(
                "canary min_duration_secs {} is not a number of seconds, 0 or more",
                self.min_duration_secs
            ));
        }
        if let Some(max) = self.max_divergence
            && !(max.is_finite() && max >= 0.0)
        {
            return Err(format!(
                "canary max_divergence {max} is not a number, 0 or more"
            ));
        }
        if self.per_line == 0 {
            return Err("canary per_line must be 1 or more".into());
        }
        Ok(())
    }
}

/// Where a canary rollout stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RolloutState {
    /// On its canary twins; its criteria are checked.
    Running,
    /// Every criterion held for the window; waiting for an operator to decide.
    Held,
    /// Promoted: a production deployment of the same package replaced it.
    Promoted,
    /// Rolled back, by a broken criterion or an operator.
    RolledBack,
}

impl RolloutState {
    /// The state's name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Running => "running",
            Self::Held => "held",
            Self::Promoted => "promoted",
            Self::RolledBack => "rolled_back",
        }
    }

    /// Whether the candidate still runs on its canary twins.
    pub fn in_force(self) -> bool {
        matches!(self, Self::Running | Self::Held)
    }
}

impl fmt::Display for RolloutState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A canary rollout: which twins run the candidate, and how it has done.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Rollout {
    /// Where it stands.
    pub state: RolloutState,
    /// The twins that run the candidate, chosen when it was deployed.
    pub twins: Vec<AssetPath>,
    /// The latest figures over the canary twins: the candidate as production, the
    /// model it replaced as the shadow.
    pub divergence: super::deploy::Divergence,
    /// Why it ended or what holds it; empty while running.
    pub reason: String,
    /// The production deployment that promoted it.
    pub promoted_to: Option<u64>,
    /// When it started.
    pub started_at: Timestamp,
    /// When its state last changed.
    pub changed_at: Timestamp,
}

impl Deployment {
    /// Whether it is in force and applies to `model` on the twin at `path`: a canary
    /// only on its canary twins, while its rollout runs or is held.
    pub fn applies(&self, path: &AssetPath, twin_type: &str, model: &str) -> bool {
        self.status == DeploymentStatus::Active
            && self.model == model
            && self.target.selects(path, twin_type)
            && (self.mode != DeployMode::Canary
                || self
                    .rollout
                    .as_ref()
                    .is_some_and(|r| r.state.in_force() && r.twins.contains(path)))
    }
}

/// Why the registry refused something.
#[derive(Debug, Clone, thiserror::Error)]
pub enum RegistryError {
    /// The package is malformed, unsigned, untrusted or tampered with.
    #[error(transparent)]
    Package(#[from] PackageError),
    /// Another package is registered under the same kind and version.
    #[error(
        "another package is registered as {kind} {version}: a version names one package for good; give this one a new version"
    )]
    Conflict {
        /// The kind.
        kind: String,
        /// The version.
        version: String,
    },
    /// No package of this kind and version is registered.
    #[error("no package {kind} {version} is registered")]
    UnknownPackage {
        /// The kind.
        kind: String,
        /// The version.
        version: String,
    },
    /// A deployment that cannot be made as asked (it selects no twin, its package does
    /// not build for a type it selects, …).
    #[error("deployment refused: {0}")]
    Refused(String),
    /// No deployment has this id.
    #[error("no deployment {0}")]
    UnknownDeployment(u64),
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

fn encode<T: Serialize>(value: &T) -> Vec<u8> {
    // Plain structs of strings, numbers and enums always serialize.
    serde_json::to_vec(value).expect("registry records serialize")
}

fn decode<T: serde::de::DeserializeOwned>(bytes: &[u8]) -> Result<T, StoreError> {
    serde_json::from_slice(bytes)
        .map_err(|error| StoreError::Corrupt(format!("model registry record: {error}")))
}

impl Store {
    /// Checks a package file against `trust` and registers it. Returns the registered
    /// package and whether it is new (`false`: this very file was registered before).
    pub fn register_package(
        &self,
        text: &str,
        trust: &Trust,
        by: &str,
        at: Timestamp,
    ) -> Result<(RegisteredPackage, bool), RegistryError> {
        let file = PackageFile::parse(text)?;
        let signer = match file.verify(trust)? {
            Signer::Key(key) => key,
            Signer::Unsigned => String::new(),
        };
        let package = file.package();
        let txn = self.db.begin_write().map_err(StoreError::from)?;
        let registered = {
            let mut table = txn.open_table(PACKAGES).map_err(StoreError::from)?;
            let key = (package.kind.as_str(), package.version.as_str());
            if let Some(existing) = table.get(key).map_err(StoreError::from)? {
                let existing: RegisteredPackage = decode(existing.value())?;
                let same = existing
                    .package()
                    .is_ok_and(|held| held == *package && existing.signer == signer);
                return if same {
                    Ok((existing, false))
                } else {
                    Err(RegistryError::Conflict {
                        kind: package.kind.clone(),
                        version: package.version.clone(),
                    })
                };
            }
            let registered = RegisteredPackage {
                kind: package.kind.clone(),
                version: package.version.clone(),
                signer,
                registered_at: at,
                registered_by: by.to_string(),
                text: text.to_string(),
            };
            table
                .insert(key, encode(&registered).as_slice())
                .map_err(StoreError::from)?;
            registered
        };
        txn.commit().map_err(StoreError::from)?;
        Ok((registered, true))
    }

    /// Every registered package, by kind then version.
    pub fn packages(&self) -> Result<Vec<RegisteredPackage>, StoreError> {
        let txn = self.db.begin_read().map_err(StoreError::from)?;
        let table = txn.open_table(PACKAGES).map_err(StoreError::from)?;
        let mut packages = Vec::new();
        for entry in table.iter().map_err(StoreError::from)? {
            let (_, value) = entry.map_err(StoreError::from)?;
            packages.push(decode(value.value())?);
        }
        Ok(packages)
    }

    /// The package registered as `kind` `version`.
    pub fn package(
        &self,
        kind: &str,
        version: &str,
    ) -> Result<Option<RegisteredPackage>, StoreError> {
        let txn = self.db.begin_read().map_err(StoreError::from)?;
        let table = txn.open_table(PACKAGES).map_err(StoreError::from)?;
        let value = table.get((kind, version)).map_err(StoreError::from)?;
        value.map(|value| decode(value.value())).transpose()
    }

    /// Records a deployment of a registered package, giving it the next id.
    /// `deployment.id` is ignored.
    pub fn add_deployment(&self, mut deployment: Deployment) -> Result<Deployment, RegistryError> {
        let txn = self.db.begin_write().map_err(StoreError::from)?;
        {
            let packages = txn.open_table(PACKAGES).map_err(StoreError::from)?;
            let key = (deployment.kind.as_str(), deployment.version.as_str());
            if packages.get(key).map_err(StoreError::from)?.is_none() {
                return Err(RegistryError::UnknownPackage {
                    kind: deployment.kind,
                    version: deployment.version,
                });
            }
            let mut table = txn.open_table(DEPLOYMENTS).map_err(StoreError::from)?;
            let last = table
                .last()
                .map_err(StoreError::from)?
                .map(|(id, _)| id.value());
            deployment.id = last.unwrap_or(0) + 1;
            table
                .insert(deployment.id, encode(&deployment).as_slice())
                .map_err(StoreError::from)?;
        }
        txn.commit().map_err(StoreError::from)?;
        Ok(deployment)
    }

    /// Withdraws deployment `id` (a no-op when it is withdrawn already) and returns it.
    pub fn withdraw_deployment(&self, id: u64, why: &str) -> Result<Deployment, RegistryError> {
        self.update_deployment(id, |deployment| {
            if deployment.status == DeploymentStatus::Active {
                deployment.status = DeploymentStatus::Withdrawn;
                deployment.withdrawn = Some(why.to_string());
            }
        })
    }

    /// Changes deployment `id` with `change` in one transaction and returns it.
    pub fn update_deployment(
        &self,
        id: u64,
        change: impl FnOnce(&mut Deployment),
    ) -> Result<Deployment, RegistryError> {
        let txn = self.db.begin_write().map_err(StoreError::from)?;
        let deployment = {
            let mut table = txn.open_table(DEPLOYMENTS).map_err(StoreError::from)?;
            let mut deployment: Deployment = match table.get(id).map_err(StoreError::from)? {
                Some(value) => decode(value.value())?,
                None => return Err(RegistryError::UnknownDeployment(id)),
            };
            change(&mut deployment);
            deployment.id = id;
            table
                .insert(id, encode(&deployment).as_slice())
                .map_err(StoreError::from)?;
            deployment
        };
        txn.commit().map_err(StoreError::from)?;
        Ok(deployment)
    }

    /// Every deployment, oldest first.
    pub fn deployments(&self) -> Result<Vec<Deployment>, StoreError> {
        let txn = self.db.begin_read().map_err(StoreError::from)?;
        let table = txn.open_table(DEPLOYMENTS).map_err(StoreError::from)?;
        let mut deployments = Vec::new();
        for entry in table.iter().map_err(StoreError::from)? {
            let (_, value) = entry.map_err(StoreError::from)?;
            deployments.push(decode(value.value())?);
        }
        Ok(deployments)
    }
}

#[cfg(test)]
mod tests {
    use ed25519_dalek::SigningKey;

    use super::*;

    const PACKAGE: &str = r#"
[package]
kind = "degradation"
version = "1.1.0"
params = { channel = "vibration", threshold = 11.0 }

[package.metadata]
author = "ann"
created = "2026-11-30T12:00:00Z"
"#;

    fn trust(key: &SigningKey) -> Trust {
        Trust {
            keys: vec![key.verifying_key()],
            allow_unsigned: false,
        }
    }

    fn deployment(mode: DeployMode, target: Target) -> Deployment {
        Deployment {
            id: 0,
            kind: "degradation".into(),
            version: "1.1.0".into(),
            model: "wear".into(),
            target,
            mode,
            by: "ann".into(),
            at: Timestamp::now(),
            status: DeploymentStatus::Active,
            withdrawn: None,
            canary: None,
            rollout: None,
            evaluation_secs: None,
        }
    }

    #[test]
    fn packages_and_deployments_are_kept_across_a_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("node.redb");
        let key = SigningKey::from_bytes(&[5; 32]);
        let signed = PackageFile::parse(PACKAGE).unwrap().sign(&key);
        {
            let store = Store::open(&path).unwrap();
            let (package, new) = store
                .register_package(&signed, &trust(&key), "ann", Timestamp::now())
                .unwrap();
            assert!(new);
            assert_eq!(package.version, "1.1.0");
            // The same file again is no news; another package under its version is
            // refused.
            let (_, again) = store
                .register_package(&signed, &trust(&key), "bob", Timestamp::now())
                .unwrap();
            assert!(!again);
            let changed = PackageFile::parse(&PACKAGE.replace("11.0", "12.0"))
                .unwrap()
                .sign(&key);
            assert!(matches!(
                store.register_package(&changed, &trust(&key), "bob", Timestamp::now()),
                Err(RegistryError::Conflict { .. })
            ));
            let line = AssetPath::parse("acme/plant-a/line-1").unwrap();
            let first = store
                .add_deployment(deployment(DeployMode::Shadow, Target::Prefix(line)))
                .unwrap();
            let second = store
                .add_deployment(deployment(
                    DeployMode::Production,
                    Target::Type("press".into()),
                ))
                .unwrap();
            assert_eq!((first.id, second.id), (1, 2));
            store.withdraw_deployment(1, "ann: done").unwrap();
            let mut unknown = deployment(DeployMode::Shadow, Target::Type("press".into()));
            unknown.version = "9".into();
            assert!(matches!(
                store.add_deployment(unknown),
                Err(RegistryError::UnknownPackage { .. })
            ));
        }
        let store = Store::open(&path).unwrap();
        let packages = store.packages().unwrap();
        assert_eq!(packages.len(), 1);
        assert_eq!(packages[0].registered_by, "ann");
        assert_eq!(packages[0].signer, hex(&key));
        assert_eq!(
            store.package("degradation", "1.1.0").unwrap().unwrap().text,
            signed
        );
        let deployments = store.deployments().unwrap();
        assert_eq!(deployments.len(), 2);
        assert_eq!(deployments[0].status, DeploymentStatus::Withdrawn);
        assert_eq!(deployments[0].withdrawn.as_deref(), Some("ann: done"));
        assert_eq!(deployments[1].status, DeploymentStatus::Active);
        let press = AssetPath::parse("acme/plant-a/line-2/press-1").unwrap();
        assert!(deployments[1].applies(&press, "press", "wear"));
        assert!(!deployments[1].applies(&press, "pump", "wear"));
        assert!(!deployments[1].applies(&press, "press", "thermal"));
    }

    #[test]
    fn an_untrusted_package_is_not_registered() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("node.redb")).unwrap();
        let signed = PackageFile::parse(PACKAGE)
            .unwrap()
            .sign(&SigningKey::from_bytes(&[1; 32]));
        let other = SigningKey::from_bytes(&[2; 32]);
        assert!(matches!(
            store.register_package(&signed, &trust(&other), "ann", Timestamp::now()),
            Err(RegistryError::Package(PackageError::Untrusted { .. }))
        ));
        assert!(matches!(
            store.register_package(PACKAGE, &trust(&other), "ann", Timestamp::now()),
            Err(RegistryError::Package(PackageError::Unsigned))
        ));
        assert!(store.packages().unwrap().is_empty());
    }

    fn hex(key: &SigningKey) -> String {
        super::super::package::hex_encode(key.verifying_key().as_bytes())
    }
}
