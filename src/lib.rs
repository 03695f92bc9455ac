//! Doppel: an actor runtime for industrial digital twins.
//!
//! Every asset is an actor holding its twin's state, the models that explain and
//! project it, and the governors that keep every action inside safe limits. This
//! crate is the facade: it re-exports the kernel ([`kernel`]), the actor tree
//! ([`Runtime`]), the edge connectors ([`connectors`]: MQTT, OPC UA), the public API
//! ([`api`]), the cluster ([`cluster`]) and the node that composes them from a config
//! file ([`Node`]), and ships the `doppel` binary, which imports through this crate like
//! any application would.
//!
//! Every [`Twins`] method answers with [`Error`]; starting a [`Runtime`] can fail with
//! [`StartError`], starting a [`Node`] with [`NodeError`].
//!
//! ```no_run
//! # async fn run() -> Result<(), Box<dyn std::error::Error>> {
//! use doppel::{AssetPath, Command, Origin, Quality, Reading, Runtime, Timestamp, Topology, TwinTypes, Value};
//!
//! let types = TwinTypes::from_file("types.toml")?;
//! let topology = Topology::from_file("plant.toml", &types)?;
//! let runtime = Runtime::builder()
//!     .twin_types(types)
//!     .topology(topology)
//!     .data_dir("/var/lib/doppel")
//!     .start()
//!     .await?;
//! let twins = runtime.twins();
//! let press = AssetPath::parse("acme/plant-a/line-1/press-1")?;
//! let source = twins.source("my-gateway")?;
//! let reading = Reading { value: 71.3, source_time: Timestamp::now(), quality: Quality::Good, source, epoch: 0, seq: 1, stamped: true };
//! twins.ingest(&press, "temperature", reading).await?.durable().await?;
//! let outcome = twins
//!     .command(Command::new(press, "set_speed", Origin::operator("ann")).param("rpm", Value::Float(1200.0)))
//!     .await?;
//! println!("{}", outcome.verdict);
//! runtime.shutdown().await;
//! # Ok(()) }
//! ```

#![forbid(unsafe_code)]

pub use doppel_api as api;
pub use doppel_cluster as cluster;
pub use doppel_connectors as connectors;
pub use doppel_node as node;
pub use doppel_proto as proto;
pub use doppel_telemetry as telemetry;

pub use doppel_actors::plant::{LineStatus, PlantStatus, SupervisorEvent};
pub use doppel_actors::{Runtime, RuntimeBuilder, StartError, governor, model};
pub use doppel_node::{Node, NodeConfig, NodeError};
pub use doppel_runtime::config::{self, RuntimeSettings, Topology, TwinType, TwinTypes};
pub use doppel_runtime::twin::{
    Actuation, AlarmList, AlarmNote, AlarmOutcome, AlarmRefusal, AlarmResponse, ChannelTarget,
    CommandOutcome, Delivery, DeliveryOutcome, DeliveryReport, DeliveryState, ReportedValue,
    RunState, Shelving, TwinChange, TwinEvent, TwinReport, Twins, WhatIf,
};
pub use doppel_runtime::{
    Alarm, AssetPath, AuditKind, AuditRecord, ChannelCondition, ChannelId, Clamp, Command,
    CommandId, ComponentSpec, ConfigError, Error, Governor, Model, ModelInfo, ModelOutput, Origin,
    OriginKind, Proposal, Quality, Reading, Review, SafetyDemand, Sample, SampleRejection,
    Scenario, Severity, SourceId, Timestamp, Trajectory, TwinState, TwinView, Value, Verdict,
};

/// The kernel crate, for everything not re-exported here.
pub use doppel_runtime as kernel;
