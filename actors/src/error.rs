//! Why the runtime did not start.

/// Why [`RuntimeBuilder::start`](crate::RuntimeBuilder::start) failed.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// The kernel refused: the data directory, the journal, recovery.
    #[error(transparent)]
    Kernel(#[from] doppel_runtime::Error),
    /// Configuration is invalid.
    #[error(transparent)]
    Config(#[from] doppel_runtime::ConfigError),
    /// Recovering the twins did not finish (its task panicked or was cancelled).
    #[error("recovering the twins did not finish: {0}")]
    Recovery(#[from] tokio::task::JoinError),
    /// An actor of the supervision tree could not be started.
    #[error("cannot start actor: {0}")]
    Spawn(#[from] ractor::SpawnErr),
    /// The builder lacks something it needs.
    #[error("runtime builder: {0} is required")]
    Missing(&'static str),
}
