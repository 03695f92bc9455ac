//! The supervision tree that mirrors the plant: plant → line → machine.
//!
//! Machine twins are [`doppel_runtime::internal::TwinActor`]s. A [`LineActor`] supervises
//! the machines of one line and a [`PlantActor`] the lines of one plant. Each keeps
//! aggregates (throughput, power, energy, worst health) from its children's status
//! updates and publishes them on the [`StatusBoard`].

mod board;
mod line;
#[allow(clippy::module_inception)]
mod plant;

pub use board::{
    LineAggregate, LineStatus, PlantAggregate, PlantStatus, StatusBoard, SupervisorEvent,
};
pub use line::{LineActor, LineArgs, LineHomes, LineMsg, LineState};
pub use plant::{PlantActor, PlantArgs, PlantLine, PlantMsg, PlantState};
