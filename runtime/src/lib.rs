//! The Doppel kernel: twin state, the [`Model`] and [`Governor`] traits, the twin actor,
//! supervision, the redb journal and configuration.
//!
//! Higher crates build the plant tree, the standard models and governors, connectors and
//! the cluster on top of this one. Nothing here knows about networks.
//!
//! ```
//! use doppel_runtime::{AssetPath, TwinTypes};
//!
//! let types = TwinTypes::from_toml(r#"
//!     [types.pump.channels.flow]
//!     unit = "m3/h"
//!     range = [0.0, 500.0]
//! "#, "inline").unwrap();
//! let pump = types.get("pump").unwrap();
//! assert!(pump.channel("flow").is_some());
//! assert!(AssetPath::parse("acme/plant-a/line-1/pump-1").is_ok());
//! ```

#![forbid(unsafe_code)]

pub mod audit;
pub mod command;
pub mod components;
pub mod config;
mod error;
pub mod governor;
pub mod internal;
pub mod journal;
pub mod metrics;
pub mod model;
pub mod path;
pub mod progress;
pub mod sample;
pub mod supervision;
pub mod time;
pub mod twin;
pub mod value;

pub use audit::{
    Annotation, AnnotationOutcome, AnnotationSubject, AuditKind, AuditRecord, ModelInfo,
};
pub use command::{Clamp, Command, CommandId, DesiredChange, Origin, OriginKind, Verdict};
pub use components::{ActuationNeed, Components, GovernorFactory, ModelFactory};
pub use config::{ComponentSpec, ConfigError, RuntimeSettings, Topology, TwinType, TwinTypes};
pub use error::Error;
pub use governor::{Governor, Proposal, Review, SafetyDemand};
pub use model::{
    ExplainedInput, Explanation, Model, ModelOutput, Scenario, Trajectory, TrajectoryPoint,
};
pub use path::{AssetPath, PathError};
pub use sample::{ChannelId, Quality, Reading, Sample, SourceId};
pub use time::Timestamp;
pub use twin::{Alarm, ChannelCondition, SampleRejection, Severity, TwinState, TwinView};
pub use value::{Value, ValueKind};
