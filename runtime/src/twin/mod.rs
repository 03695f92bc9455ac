//! The twin: its state and the actor that owns it.

mod actor;
mod state;

pub use actor::*;
pub use state::{
    Alarm, ChannelState, DerivedValue, DesiredValue, ReplayWindow, SampleOutcome, SampleRejection,
    Severity, Trip, TwinState, TwinView, check_sample,
};
