//! Doppel's edge connectors: plant data in over MQTT (Unified Namespace JSON and
//! Sparkplug B) and OPC UA, commands and safety actions back out the same way.
//!
//! Every connector validates at the boundary: bad input is counted per [`DropKind`],
//! logged at most once per kind per minute, and dropped; it never reaches a twin.
//! Readings a twin refuses are counted per reason. A connector's [`ConnectorStatus`]
//! accounts for everything it received.

#[cfg(feature = "broker")]
pub mod broker;
pub mod delivery;
pub mod drops;
pub mod mqtt;
pub mod opcua;
pub mod reach;

#[cfg(test)]
mod governed;

pub use delivery::Resend;
pub use doppel_runtime::metrics::ConnectorStatus;
pub use drops::{DropKind, Drops};
pub use reach::{AssetReach, Reach};
