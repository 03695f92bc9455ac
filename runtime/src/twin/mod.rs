//! The twin: its state, its logic and the actor that owns it.
//!
//! [`Twins`] is the handle an embedder holds; the actor, its messages and the core it
//! runs are in [`internal`](crate::internal).

pub(crate) mod actor;
pub(crate) mod directory;
pub(crate) mod logic;
mod mirror;
pub(crate) mod state;
pub(crate) mod twins;

pub use actor::CommandOutcome;
pub use logic::undelivered_code;
pub use logic::{
    Actuation, CommandVerdict, ReportedValue, RunState, TwinChange, TwinEvent, TwinReport, WhatIf,
};
pub use mirror::MirrorUpdate;
pub use state::{
    Alarm, Delivery, DeliveryOutcome, DeliveryReport, DeliveryState, DerivedValue, DesiredValue,
    SampleRejection, Severity, Trip, TwinState, TwinView,
};
pub use twins::{BatchReceipt, ChannelTarget, Subscription, Twins};
