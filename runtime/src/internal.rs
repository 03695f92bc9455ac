//! The kernel's moving parts, for Doppel's own crates (the actor tree, the connectors,
//! the cluster): the twin actor and its messages, the core it runs, the directory of
//! hosted twins, the kernel they share, and [`TwinsInternals`], the way into a
//! [`Twins`](crate::twin::Twins) handle beyond its public methods.
//!
//! Not part of the embedding API: an application holds a `Twins` (or the actors
//! crate's `Runtime`) and never needs these. They change when the kernel does.

pub use crate::twin::actor::{
    StartError, TwinActor, TwinActorState, TwinArgs, TwinHandle, TwinMsg, TwinStart, TwinStatus,
};
pub use crate::twin::core::{Effects, TwinCore, resolve_changes};
pub use crate::twin::directory::{Directory, TwinEntry};
pub use crate::twin::mailbox::{Supervised, Supervisor, TwinRef};
pub use crate::twin::passivation::{Parked, Waker};
pub use crate::twin::state::{ChannelState, check_sample};
pub use crate::twin::twins::{Kernel, Recovered, TwinsInternals, Unsent};
