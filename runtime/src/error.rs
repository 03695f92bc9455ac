//! The kernel's error type.

use crate::config::ConfigError;
use crate::journal::StoreError;
use crate::path::AssetPath;
use crate::twin::SampleRejection;

/// Everything that can go wrong in the kernel.
#[derive(Debug, Clone, thiserror::Error)]
pub enum Error {
    /// Configuration is invalid.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// No twin has this path.
    #[error("unknown asset `{0}`")]
    UnknownAsset(AssetPath),
    /// The twin's type has no channel of this name.
    #[error("asset `{asset}` has no channel `{channel}`")]
    UnknownChannel {
        /// The twin.
        asset: AssetPath,
        /// The channel asked for.
        channel: String,
    },
    /// A sample was refused before reaching the twin.
    #[error("sample for `{asset}` rejected: {}", reason.as_str())]
    SampleRejected {
        /// The twin.
        asset: AssetPath,
        /// Why.
        reason: SampleRejection,
    },
    /// The twin's type has no command of this name.
    #[error("asset `{asset}` has no command `{command}`")]
    UnknownCommand {
        /// The twin.
        asset: AssetPath,
        /// The command asked for.
        command: String,
    },
    /// A command parameter is missing, unknown, of the wrong type or out of bounds.
    #[error("command `{command}`: parameter `{param}`: {problem}")]
    InvalidParam {
        /// The command.
        command: String,
        /// The parameter.
        param: String,
        /// What is wrong.
        problem: String,
    },
    /// The journal could not be read or written.
    #[error("journal: {0}")]
    Journal(#[from] StoreError),
    /// The twin is restarting or stopped; nothing was applied.
    #[error("twin `{0}` is unavailable")]
    Unavailable(AssetPath),
    /// The node is starting and the twin's actor has not started yet; its input waits
    /// for it, a request is worth retrying in a moment.
    #[error("twin `{0}` is starting; retry in a moment")]
    Starting(AssetPath),
    /// A response to an alarm the alarm's state refuses.
    #[error("twin `{asset}`: {refusal}")]
    AlarmRefused {
        /// The twin.
        asset: AssetPath,
        /// Why.
        refusal: crate::twin::AlarmRefusal,
    },
    /// An annotation names a safety action the twin's audit trail does not hold.
    #[error("twin `{asset}` has no safety action recorded as audit record {seq}")]
    UnknownSafetyAction {
        /// The twin.
        asset: AssetPath,
        /// The audit record's sequence number given.
        seq: u64,
    },
    /// The model registry refused a package or a deployment.
    #[error(transparent)]
    Registry(#[from] crate::model::registry::RegistryError),
    /// The runtime is shutting down.
    #[error("runtime is shutting down")]
    ShuttingDown,
    /// This node has stopped actuating its twins: another node owns them.
    #[error("twin `{asset}` is not actuated by this node: {reason}")]
    Fenced {
        /// The twin.
        asset: AssetPath,
        /// Why (the ownership conflict).
        reason: String,
    },
}
