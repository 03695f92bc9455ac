//! Factories that build a twin type's models and governors from its configuration.

use std::collections::BTreeMap;
use std::sync::Arc;

use crate::config::{ComponentSpec, ConfigError, TwinType};
use crate::governor::Governor;
use crate::model::Model;

/// Builds a model from its declaration on a twin type.
pub type ModelFactory =
    Arc<dyn Fn(&ComponentSpec, &TwinType) -> Result<Box<dyn Model>, ConfigError> + Send + Sync>;

/// Builds a governor from its declaration on a twin type.
pub type GovernorFactory =
    Arc<dyn Fn(&ComponentSpec, &TwinType) -> Result<Box<dyn Governor>, ConfigError> + Send + Sync>;

/// The model and governor kinds a runtime knows, by the `kind` name used in config.
#[derive(Clone, Default)]
pub struct Components {
    models: BTreeMap<String, ModelFactory>,
    governors: BTreeMap<String, GovernorFactory>,
}

impl Components {
    /// An empty set.
    pub fn new() -> Self {
        Self::default()
    }

    /// Registers a model kind, replacing one of the same name.
    pub fn model<F>(&mut self, kind: impl Into<String>, factory: F) -> &mut Self
    where
        F: Fn(&ComponentSpec, &TwinType) -> Result<Box<dyn Model>, ConfigError>
            + Send
            + Sync
            + 'static,
    {
        self.models.insert(kind.into(), Arc::new(factory));
        self
    }

    /// Registers a governor kind, replacing one of the same name.
    pub fn governor<F>(&mut self, kind: impl Into<String>, factory: F) -> &mut Self
    where
        F: Fn(&ComponentSpec, &TwinType) -> Result<Box<dyn Governor>, ConfigError>
            + Send
            + Sync
            + 'static,
    {
        self.governors.insert(kind.into(), Arc::new(factory));
        self
    }

    /// Builds every model `twin_type` declares.
    pub fn build_models(&self, twin_type: &TwinType) -> Result<Vec<Box<dyn Model>>, ConfigError> {
        twin_type
            .models
            .iter()
            .map(|spec| self.build_model(spec, twin_type))
            .collect()
    }

    /// Builds one model of `twin_type` from `spec`.
    pub fn build_model(
        &self,
        spec: &ComponentSpec,
        twin_type: &TwinType,
    ) -> Result<Box<dyn Model>, ConfigError> {
        let factory = self.models.get(&spec.kind).ok_or_else(|| {
            spec.error(format!(
                "unknown model kind (known: {})",
                join_keys(&self.models)
            ))
        })?;
        factory(spec, twin_type)
    }

    /// Builds every governor `twin_type` declares, in review order.
    pub fn build_governors(
        &self,
        twin_type: &TwinType,
    ) -> Result<Vec<Box<dyn Governor>>, ConfigError> {
        twin_type
            .governors
            .iter()
            .map(|spec| {
                let factory = self.governors.get(&spec.kind).ok_or_else(|| {
                    spec.error(format!(
                        "unknown governor kind (known: {})",
                        join_keys(&self.governors)
                    ))
                })?;
                factory(spec, twin_type)
            })
            .collect()
    }
}

/// A desired value that one of a twin type's commands, or a governor's safety action,
/// sets: it must reach the machine through a connector.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ActuationNeed {
    /// The desired value.
    pub desired: String,
    /// The command that sets it.
    pub command: String,
    /// The governor whose safety action runs `command`; `None` for an operator's (or a
    /// planner's) command.
    pub safety_of: Option<String>,
}

impl Components {
    /// Every desired value `twin_type`'s safety actions set (one entry per governor,
    /// command and desired value, in governor order) followed by those its commands
    /// set. Builds the type's governors once to ask each for its
    /// [`safety_commands`](crate::Governor::safety_commands).
    pub fn actuation_needs(&self, twin_type: &TwinType) -> Result<Vec<ActuationNeed>, ConfigError> {
        let mut needs = Vec::new();
        for governor in self.build_governors(twin_type)? {
            for command in governor.safety_commands() {
                let Some(spec) = twin_type.commands.get(&command) else {
                    continue;
                };
                needs.extend(spec.sets.iter().map(|(desired, _)| ActuationNeed {
                    desired: desired.clone(),
                    command: command.clone(),
                    safety_of: Some(governor.name().to_string()),
                }));
            }
        }
        for (command, spec) in &twin_type.commands {
            needs.extend(spec.sets.iter().map(|(desired, _)| ActuationNeed {
                desired: desired.clone(),
                command: command.clone(),
                safety_of: None,
            }));
        }
        Ok(needs)
    }
}

fn join_keys<V>(map: &BTreeMap<String, V>) -> String {
    map.keys().cloned().collect::<Vec<_>>().join(", ")
}
