//! What the journal holds: per-twin events and snapshots.

use serde::{Deserialize, Serialize};

use crate::command::{CommandId, Origin, Verdict};
use crate::sample::Sample;
use crate::time::Timestamp;
use crate::twin::{Delivery, TwinState};
use crate::value::Value;

/// One accepted change of a twin.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum JournalEvent {
    /// A sample was applied (or kept in history as stale).
    Sample(Sample),
    /// A command was applied; `changes` are the desired values written (by name).
    Command {
        /// The command's id.
        id: CommandId,
        /// The command's name.
        name: String,
        /// Who asked.
        origin: Origin,
        /// The verdict (accepted or clamped).
        verdict: Verdict,
        /// Desired values written, after clamping.
        changes: Vec<(String, Value)>,
        /// Whether it cleared latched trips.
        clears_trips: bool,
        /// When it was applied.
        at: Timestamp,
    },
    /// A governor's safety action was executed.
    Safety {
        /// The governor.
        governor: String,
        /// Its reason.
        reason: String,
        /// The command executed.
        command: String,
        /// Desired values written.
        changes: Vec<(String, Value)>,
        /// Whether a trip was latched.
        latch: bool,
        /// When.
        at: Timestamp,
    },
    /// How far desired values got on their way to the machine: an actuator's report,
    /// a deadline or safety bound that passed, or (as an annex of the command event of
    /// the same version) a command's deadline.
    Delivery {
        /// The desired values, by name.
        desired: Vec<String>,
        /// Their delivery now.
        delivery: Delivery,
    },
}

/// A journal entry: the twin it belongs to, the version it produced and the event.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct JournalRecord {
    /// The twin's durable numeric id.
    pub twin: u32,
    /// The twin's version after this event.
    pub version: u64,
    /// The event.
    pub event: JournalEvent,
}

/// A twin's state at a version, with its models' and governors' saved state, and the
/// channel and desired value names its indices referred to (so a changed type can be
/// remapped by name).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Snapshot {
    /// The twin state.
    pub state: TwinState,
    /// The channel names, indexed by channel id, when the snapshot was taken.
    pub channel_names: Vec<String>,
    /// The desired value names, in the order of `state.desired`.
    pub desired_names: Vec<String>,
    /// Saved model state by model name.
    pub models: Vec<(String, Vec<u8>)>,
    /// Saved governor state by governor name.
    pub governors: Vec<(String, Vec<u8>)>,
}

impl Snapshot {
    /// Decodes a snapshot, including one written before desired values carried their
    /// delivery (those values read as delivered: the twin sent them before this
    /// version tracked delivery).
    pub fn decode(bytes: &[u8]) -> Result<Self, postcard::Error> {
        match postcard::from_bytes::<Snapshot>(bytes) {
            Ok(snapshot) => Ok(snapshot),
            Err(error) => match postcard::from_bytes::<legacy::Snapshot>(bytes) {
                Ok(old) => Ok(old.into()),
                Err(_) => Err(error),
            },
        }
    }
}

/// The snapshot layout before desired values carried their delivery.
mod legacy {
    use serde::Deserialize;

    use crate::path::AssetPath;
    use crate::time::Timestamp;
    use crate::twin::state::{ChannelState, ReplayWindow};
    use crate::twin::{
        Alarm, Delivery, DeliveryState, DerivedValue, DesiredValue, Trip, TwinState,
    };
    use crate::value::Value;

    #[derive(Deserialize)]
    #[cfg_attr(test, derive(serde::Serialize))]
    pub(super) struct Desired {
        pub(super) value: Value,
        pub(super) set_at: Timestamp,
    }

    #[derive(Deserialize)]
    #[cfg_attr(test, derive(serde::Serialize))]
    pub(super) struct State {
        pub(super) path: AssetPath,
        pub(super) version: u64,
        pub(super) channels: Vec<ChannelState>,
        pub(super) desired: Vec<Desired>,
        pub(super) derived: Vec<DerivedValue>,
        pub(super) alarms: Vec<Alarm>,
        pub(super) trips: Vec<Trip>,
        pub(super) health: f64,
        pub(super) updated_at: Timestamp,
        pub(super) windows: Vec<ReplayWindow>,
        pub(super) history_capacity: u32,
    }

    #[derive(Deserialize)]
    #[cfg_attr(test, derive(serde::Serialize))]
    pub(super) struct Snapshot {
        pub(super) state: State,
        pub(super) channel_names: Vec<String>,
        pub(super) desired_names: Vec<String>,
        pub(super) models: Vec<(String, Vec<u8>)>,
        pub(super) governors: Vec<(String, Vec<u8>)>,
    }

    impl From<Snapshot> for super::Snapshot {
        fn from(old: Snapshot) -> Self {
            let state = old.state;
            let desired = state
                .desired
                .into_iter()
                .map(|d| {
                    let mut value = DesiredValue::initial(d.value);
                    value.set_at = d.set_at;
                    if d.set_at.0 != 0 {
                        value.delivery = Delivery {
                            state: DeliveryState::Delivered,
                            at: d.set_at,
                            ..Delivery::default()
                        };
                    }
                    value
                })
                .collect();
            super::Snapshot {
                state: TwinState {
                    path: state.path,
                    version: state.version,
                    channels: state.channels,
                    desired,
                    derived: state.derived,
                    alarms: state.alarms,
                    trips: state.trips,
                    health: state.health,
                    updated_at: state.updated_at,
                    windows: state.windows,
                    history_capacity: state.history_capacity,
                },
                channel_names: old.channel_names,
                desired_names: old.desired_names,
                models: old.models,
                governors: old.governors,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::path::AssetPath;
    use crate::twin::DeliveryState;
    use crate::value::Value;

    /// A snapshot written before desired values carried their delivery loads: a value
    /// a command set reads as delivered, the initial value as initial.
    #[test]
    fn a_snapshot_from_before_delivery_tracking_loads() {
        let set_at = Timestamp::now();
        let old = legacy::Snapshot {
            state: legacy::State {
                path: AssetPath::parse("acme/plant-a/line-1/press-1").unwrap(),
                version: 7,
                channels: Vec::new(),
                desired: vec![
                    legacy::Desired {
                        value: Value::Float(1300.0),
                        set_at,
                    },
                    legacy::Desired {
                        value: Value::Bool(true),
                        set_at: Timestamp(0),
                    },
                ],
                derived: Vec::new(),
                alarms: Vec::new(),
                trips: Vec::new(),
                health: 1.0,
                updated_at: set_at,
                windows: Vec::new(),
                history_capacity: 32,
            },
            channel_names: Vec::new(),
            desired_names: vec!["speed".into(), "running".into()],
            models: Vec::new(),
            governors: Vec::new(),
        };
        let bytes = postcard::to_stdvec(&old).unwrap();
        let snapshot = Snapshot::decode(&bytes).unwrap();
        let desired = &snapshot.state.desired;
        assert_eq!(desired[0].value, Value::Float(1300.0));
        assert_eq!(desired[0].delivery.state, DeliveryState::Delivered);
        assert_eq!(desired[0].delivery.at, set_at);
        assert_eq!(desired[1].delivery.state, DeliveryState::Initial);
        assert_eq!(snapshot.state.version, 7);

        let again = postcard::to_stdvec(&snapshot).unwrap();
        let current = Snapshot::decode(&again).unwrap();
        assert_eq!(current.state.desired, snapshot.state.desired);
    }
}
