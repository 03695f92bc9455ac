//! The twin: its state, its logic and the actor that owns it.

mod actor;
mod directory;
mod host;
mod logic;
mod mirror;
mod state;

pub use actor::{
    CommandOutcome, StatusSink, TwinActor, TwinActorState, TwinArgs, TwinMsg, TwinStart, TwinStatus,
};
pub use directory::{Directory, TwinEntry};
pub use host::{BatchReceipt, ChannelTarget, Kernel, Recovered, Subscription, Twins};
pub use logic::{
    Actuation, CommandVerdict, Effects, ReportedValue, RunState, TwinChange, TwinCore, TwinEvent,
    TwinReport, WhatIf, resolve_changes,
};
pub use mirror::MirrorUpdate;
pub use state::{
    Alarm, ChannelState, DerivedValue, DesiredValue, ReplayWindow, SampleOutcome, SampleRejection,
    Severity, Trip, TwinState, TwinView, check_sample,
};
