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
            .map(|spec| {
                let factory = self.models.get(&spec.kind).ok_or_else(|| {
                    spec.error(format!(
                        "unknown model kind (known: {})",
                        join_keys(&self.models)
                    ))
                })?;
                factory(spec, twin_type)
            })
            .collect()
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

fn join_keys<V>(map: &BTreeMap<String, V>) -> String {
    map.keys().cloned().collect::<Vec<_>>().join(", ")
}
