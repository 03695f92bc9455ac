//! The twin: its state, its logic and the actor that owns it.
//!
//! [`Twins`] is the handle an embedder holds; the actor, its messages and the core it
//! runs are in [`internal`](crate::internal).

pub(crate) mod actor;
mod actuation;
pub mod alarm;
mod change;
pub(crate) mod core;
mod deploy;
pub(crate) mod directory;
pub(crate) mod mailbox;
mod mirror;
pub mod passivation;
mod report;
pub(crate) mod sequence;
pub(crate) mod state;
pub(crate) mod twins;

pub use actor::{AlarmOutcome, CommandOutcome};
pub use actuation::{Actuation, CommandVerdict};
pub use alarm::{AlarmNote, AlarmRates, AlarmRefusal, AlarmResponse, Shelving};
pub use change::{TwinChange, TwinEvent};
pub use core::{CONDITION_ALARM_SOURCE, Deployed, ModelSwap, PlanOutcome, undelivered_code};
pub use deploy::{DeployOutcome, DeployRequest, ROLLOUT_INTERVAL};
pub use mirror::MirrorUpdate;
pub use report::{ReportedValue, RunState, TwinReport, TwinSummary, WhatIf};
pub use sequence::{MAX_GAPS, MAX_SEQ_JUMP, SeqWindow};
pub use state::SampleOutcome;
pub use state::{
    Alarm, ChannelCondition, Delivery, DeliveryOutcome, DeliveryReport, DeliveryState,
    DerivedValue, DesiredValue, SampleRejection, Severity, Trip, TwinState, TwinView,
};
pub use twins::{AlarmList, BatchReceipt, ChannelTarget, FRESHNESS_INTERVAL, Subscription, Twins};
