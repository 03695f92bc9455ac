//! What a twin publishes when it changes.

use serde::{Deserialize, Serialize};

use crate::path::AssetPath;
use crate::sample::Quality;
use crate::time::Timestamp;
use crate::twin::state::{Alarm, ChannelCondition, Delivery, Trip};
use crate::value::Value;

/// A change of a twin, published to subscribers.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum TwinChange {
    /// A channel's current value changed.
    Reported {
        /// The channel.
        channel: String,
        /// New value.
        value: f64,
        /// Its quality.
        quality: Quality,
        /// Its source time.
        source_time: Timestamp,
    },
    /// Desired values changed (command or safety action).
    Desired {
        /// New values by name.
        values: Vec<(String, Value)>,
    },
    /// An alarm was raised or changed.
    AlarmRaised(Alarm),
    /// An alarm cleared.
    AlarmCleared {
        /// Its code.
        code: String,
    },
    /// A trip latched.
    Tripped(Trip),
    /// Latched trips were cleared.
    TripsCleared,
    /// The twin restarted from durable state after a crash.
    Restarted,
    /// How far desired values got on their way to the machine.
    Delivery {
        /// Each value's delivery, by name.
        values: Vec<(String, Delivery)>,
    },
    /// A channel came under a condition (stale, or bad by its source's report); its
    /// current value keeps, with the condition's quality, until a newer reading.
    Condition {
        /// The channel.
        channel: String,
        /// The condition.
        condition: ChannelCondition,
    },
}

/// A published change with the twin and version it produced.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TwinEvent {
    /// The twin.
    pub asset: AssetPath,
    /// Its version after the change.
    pub version: u64,
    /// What changed.
    pub change: TwinChange,
}
