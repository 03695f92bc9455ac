//! The actors crate's error type.

/// Everything that can go wrong building or running the actor tree.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A kernel error (configuration, journal, unknown asset, …).
    #[error(transparent)]
    Runtime(#[from] doppel_runtime::Error),
    /// Configuration is invalid.
    #[error(transparent)]
    Config(#[from] doppel_runtime::ConfigError),
    /// An actor could not be started.
    #[error("cannot start actor: {0}")]
    Spawn(String),
    /// The builder lacks something it needs.
    #[error("runtime builder: {0}")]
    Builder(String),
}
