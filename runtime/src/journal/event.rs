//! What the journal holds: per-twin events and snapshots.

use serde::{Deserialize, Serialize};

use crate::command::{CommandId, Origin, Verdict};
use crate::sample::{ChannelId, Quality, Sample, SourceId};
use crate::time::Timestamp;
use crate::twin::{ChannelCondition, Delivery, TwinState};
use crate::value::Value;

/// One accepted change of a twin.
///
/// The variants' order is their encoding: new ones go last.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum JournalEvent {
    /// A sample as journaled before readings carried their epoch; only read, never
    /// written (see [`JournalEvent::sample`]).
    LegacySample(LegacySample),
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
    /// A sample was applied, as the channel's current value or, when late, into history.
    Sample(Sample),
    /// A channel came under a condition: stale, or bad by its source's report.
    Condition {
        /// The channel.
        channel: ChannelId,
        /// The condition.
        condition: ChannelCondition,
    },
    /// Someone responded to an alarm (acknowledged, shelved, …), or the node ended a
    /// shelving.
    AlarmResponse {
        /// The alarm's code.
        code: String,
        /// The response, with who and when.
        response: crate::twin::AlarmResponse,
    },
}

impl JournalEvent {
    /// The sample the event applied, in either layout.
    pub fn sample(&self) -> Option<Sample> {
        match self {
            JournalEvent::Sample(sample) => Some(*sample),
            JournalEvent::LegacySample(old) => Some((*old).into()),
            _ => None,
        }
    }
}

/// A sample in the layout journaled before readings carried their epoch and whether
/// their source stamped them.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct LegacySample {
    channel: ChannelId,
    value: f64,
    source_time: Timestamp,
    receive_time: Timestamp,
    quality: Quality,
    source: SourceId,
    seq: u64,
}

impl From<LegacySample> for Sample {
    /// Epoch 0, and stamped: history is searched for it by its source time.
    fn from(old: LegacySample) -> Self {
        Sample {
            channel: old.channel,
            value: old.value,
            source_time: old.source_time,
            receive_time: old.receive_time,
            quality: old.quality,
            source: old.source,
            epoch: 0,
            seq: old.seq,
            stamped: true,
        }
    }
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
    /// The conditions channels were under, by channel id.
    pub conditions: Vec<(ChannelId, ChannelCondition)>,
    /// The version and provenance of each model whose state is in `models` (empty in
    /// snapshots written before models were deployed from packages).
    pub model_versions: Vec<crate::model::deploy::SavedVersion>,
    /// Shadow models running beside production models.
    pub shadows: Vec<crate::model::deploy::SavedShadow>,
    /// Why the models' active alarms were raised, by alarm code.
    pub explanations: Vec<(String, crate::model::Explanation)>,
}

/// The bytes a snapshot's encoding starts with: a zero (no unversioned snapshot
/// starts with one: its first field is a non-empty asset path) and the layout's
/// version.
pub(crate) const SNAPSHOT_FORMAT: [u8; 2] = [0, 6];

/// The prefix of version 5, before models carried their versions and shadows.
const SNAPSHOT_FORMAT_V5: [u8; 2] = [0, 5];

/// The prefix of version 4, before alarms kept their lifecycle.
const SNAPSHOT_FORMAT_V4: [u8; 2] = [0, 4];

/// The prefix of version 3, before channel conditions were kept.
const SNAPSHOT_FORMAT_V3: [u8; 2] = [0, 3];

impl Snapshot {
    /// Decodes a snapshot, including ones written in earlier layouts: before models
    /// carried their versions (version 5), before alarms kept their lifecycle
    /// (version 4), before channel
    /// conditions were kept (version 3), before readings carried their epoch (version
    /// 2, unversioned), and before desired values carried their delivery (version 1;
    /// those values read as delivered: the twin sent them before delivery was tracked).
    pub fn decode(bytes: &[u8]) -> Result<Self, postcard::Error> {
        if let Some(body) = bytes.strip_prefix(&SNAPSHOT_FORMAT) {
            return postcard::from_bytes::<Snapshot>(body);
        }
        if let Some(body) = bytes.strip_prefix(&SNAPSHOT_FORMAT_V5) {
            return postcard::from_bytes::<legacy::SnapshotV5>(body).map(Into::into);
        }
        if let Some(body) = bytes.strip_prefix(&SNAPSHOT_FORMAT_V4) {
            return postcard::from_bytes::<legacy::SnapshotV4>(body).map(Into::into);
        }
        if let Some(body) = bytes.strip_prefix(&SNAPSHOT_FORMAT_V3) {
            return postcard::from_bytes::<legacy::SnapshotV3>(body).map(Into::into);
        }
        match postcard::from_bytes::<legacy::SnapshotV2>(bytes) {
            Ok(old) => Ok(old.into()),
            Err(error) => match postcard::from_bytes::<legacy::SnapshotV1>(bytes) {
                Ok(old) => Ok(old.into()),
                Err(_) => Err(error),
            },
        }
    }

    /// Encodes a snapshot in the current layout.
    pub fn encode(&self) -> Result<Vec<u8>, postcard::Error> {
        postcard::to_extend(self, SNAPSHOT_FORMAT.to_vec())
    }
}

/// Snapshot layouts of earlier versions.
mod legacy {
    use std::collections::VecDeque;

    use serde::Deserialize;

    use super::LegacySample;
    use crate::path::AssetPath;
    use crate::sample::{ChannelId, SourceId};
    use crate::time::Timestamp;
    use crate::twin::SeqWindow;
    use crate::twin::state::ChannelState;
    use crate::twin::{
        Alarm, Delivery, DeliveryState, DerivedValue, DesiredValue, Trip, TwinState,
    };
    use crate::value::Value;

    /// A channel before readings carried their epoch.
    #[derive(Deserialize)]
    #[cfg_attr(test, derive(serde::Serialize))]
    pub(super) struct Channel {
        pub(super) current: Option<LegacySample>,
        pub(super) history: VecDeque<LegacySample>,
    }

    impl From<Channel> for ChannelState {
        fn from(old: Channel) -> Self {
            ChannelState {
                current: old.current.map(Into::into),
                history: old.history.into_iter().map(Into::into).collect(),
                condition: None,
                window: 0,
            }
        }
    }

    /// The 64-wide anti-replay window that came before [`SeqWindow`].
    #[derive(Deserialize)]
    #[cfg_attr(test, derive(serde::Serialize))]
    pub(super) struct ReplayWindow {
        pub(super) source: SourceId,
        pub(super) channel: ChannelId,
        pub(super) high: u64,
        /// Read to keep the layout; below `high` the new window asks history.
        pub(super) _below: u64,
    }

    impl From<ReplayWindow> for SeqWindow {
        fn from(old: ReplayWindow) -> Self {
            SeqWindow::from_high(old.source, old.channel, old.high)
        }
    }

    /// An alarm before it kept its lifecycle (acknowledgement, shelving, service).
    #[derive(Deserialize)]
    #[cfg_attr(test, derive(serde::Serialize))]
    pub(super) struct AlarmV4 {
        pub(super) code: String,
        pub(super) severity: crate::twin::Severity,
        pub(super) message: String,
        pub(super) raised_by: String,
        pub(super) since: Timestamp,
    }

    impl From<AlarmV4> for Alarm {
        fn from(old: AlarmV4) -> Self {
            Alarm::new(
                old.code,
                old.severity,
                old.message,
                old.raised_by,
                old.since,
            )
        }
    }

    /// The state of version 4: alarms without their lifecycle.
    #[derive(Deserialize)]
    #[cfg_attr(test, derive(serde::Serialize))]
    pub(super) struct StateV4 {
        pub(super) path: AssetPath,
        pub(super) version: u64,
        pub(super) channels: Vec<ChannelState>,
        pub(super) desired: Vec<DesiredValue>,
        pub(super) derived: Vec<DerivedValue>,
        pub(super) alarms: Vec<AlarmV4>,
        pub(super) trips: Vec<Trip>,
        pub(super) health: f64,
        pub(super) updated_at: Timestamp,
        pub(super) windows: Vec<SeqWindow>,
        pub(super) history_capacity: u32,
    }

    impl From<StateV4> for TwinState {
        fn from(old: StateV4) -> Self {
            TwinState {
                path: old.path,
                version: old.version,
                channels: old.channels,
                desired: old.desired,
                derived: old.derived,
                alarms: old.alarms.into_iter().map(Into::into).collect(),
                trips: old.trips,
                health: old.health,
                updated_at: old.updated_at,
                windows: old.windows,
                history_capacity: old.history_capacity,
            }
        }
    }

    /// Version 5: alarms with their lifecycle, models without their versions.
    #[derive(Deserialize)]
    #[cfg_attr(test, derive(serde::Serialize))]
    pub(super) struct SnapshotV5 {
        pub(super) state: TwinState,
        pub(super) channel_names: Vec<String>,
        pub(super) desired_names: Vec<String>,
        pub(super) models: Vec<(String, Vec<u8>)>,
        pub(super) governors: Vec<(String, Vec<u8>)>,
        pub(super) conditions: Vec<(ChannelId, crate::twin::ChannelCondition)>,
    }

    impl From<SnapshotV5> for super::Snapshot {
        fn from(old: SnapshotV5) -> Self {
            super::Snapshot {
                state: old.state,
                channel_names: old.channel_names,
                desired_names: old.desired_names,
                models: old.models,
                governors: old.governors,
                conditions: old.conditions,
                model_versions: Vec::new(),
                shadows: Vec::new(),
                explanations: Vec::new(),
            }
        }
    }

    /// Version 4: channel conditions, alarms without their lifecycle.
    #[derive(Deserialize)]
    #[cfg_attr(test, derive(serde::Serialize))]
    pub(super) struct SnapshotV4 {
        pub(super) state: StateV4,
        pub(super) channel_names: Vec<String>,
        pub(super) desired_names: Vec<String>,
        pub(super) models: Vec<(String, Vec<u8>)>,
        pub(super) governors: Vec<(String, Vec<u8>)>,
        pub(super) conditions: Vec<(ChannelId, crate::twin::ChannelCondition)>,
    }

    impl From<SnapshotV4> for super::Snapshot {
        fn from(old: SnapshotV4) -> Self {
            super::Snapshot {
                state: old.state.into(),
                channel_names: old.channel_names,
                desired_names: old.desired_names,
                models: old.models,
                governors: old.governors,
                conditions: old.conditions,
                model_versions: Vec::new(),
                shadows: Vec::new(),
                explanations: Vec::new(),
            }
        }
    }

    /// Version 3: samples with epochs, no channel conditions.
    #[derive(Deserialize)]
    #[cfg_attr(test, derive(serde::Serialize))]
    pub(super) struct SnapshotV3 {
        pub(super) state: StateV4,
        pub(super) channel_names: Vec<String>,
        pub(super) desired_names: Vec<String>,
        pub(super) models: Vec<(String, Vec<u8>)>,
        pub(super) governors: Vec<(String, Vec<u8>)>,
    }

    impl From<SnapshotV3> for super::Snapshot {
        fn from(old: SnapshotV3) -> Self {
            super::Snapshot {
                state: old.state.into(),
                channel_names: old.channel_names,
                desired_names: old.desired_names,
                models: old.models,
                governors: old.governors,
                conditions: Vec::new(),
                model_versions: Vec::new(),
                shadows: Vec::new(),
                explanations: Vec::new(),
            }
        }
    }

    /// Version 2: desired values with their delivery, samples without epochs.
    #[derive(Deserialize)]
    #[cfg_attr(test, derive(serde::Serialize))]
    pub(super) struct StateV2 {
        pub(super) path: AssetPath,
        pub(super) version: u64,
        pub(super) channels: Vec<Channel>,
        pub(super) desired: Vec<DesiredValue>,
        pub(super) derived: Vec<DerivedValue>,
        pub(super) alarms: Vec<AlarmV4>,
        pub(super) trips: Vec<Trip>,
        pub(super) health: f64,
        pub(super) updated_at: Timestamp,
        pub(super) windows: Vec<ReplayWindow>,
        pub(super) history_capacity: u32,
    }

    #[derive(Deserialize)]
    #[cfg_attr(test, derive(serde::Serialize))]
    pub(super) struct SnapshotV2 {
        pub(super) state: StateV2,
        pub(super) channel_names: Vec<String>,
        pub(super) desired_names: Vec<String>,
        pub(super) models: Vec<(String, Vec<u8>)>,
        pub(super) governors: Vec<(String, Vec<u8>)>,
    }

    impl From<SnapshotV2> for super::Snapshot {
        fn from(old: SnapshotV2) -> Self {
            let state = old.state;
            super::Snapshot {
                state: TwinState {
                    path: state.path,
                    version: state.version,
                    channels: state.channels.into_iter().map(Into::into).collect(),
                    desired: state.desired,
                    derived: state.derived,
                    alarms: state.alarms.into_iter().map(Into::into).collect(),
                    trips: state.trips,
                    health: state.health,
                    updated_at: state.updated_at,
                    windows: state.windows.into_iter().map(Into::into).collect(),
                    history_capacity: state.history_capacity,
                },
                channel_names: old.channel_names,
                desired_names: old.desired_names,
                models: old.models,
                governors: old.governors,
                conditions: Vec::new(),
                model_versions: Vec::new(),
                shadows: Vec::new(),
                explanations: Vec::new(),
            }
        }
    }

    /// Version 1: desired values without their delivery.
    #[derive(Deserialize)]
    #[cfg_attr(test, derive(serde::Serialize))]
    pub(super) struct Desired {
        pub(super) value: Value,
        pub(super) set_at: Timestamp,
    }

    #[derive(Deserialize)]
    #[cfg_attr(test, derive(serde::Serialize))]
    pub(super) struct StateV1 {
        pub(super) path: AssetPath,
        pub(super) version: u64,
        pub(super) channels: Vec<Channel>,
        pub(super) desired: Vec<Desired>,
        pub(super) derived: Vec<DerivedValue>,
        pub(super) alarms: Vec<AlarmV4>,
        pub(super) trips: Vec<Trip>,
        pub(super) health: f64,
        pub(super) updated_at: Timestamp,
        pub(super) windows: Vec<ReplayWindow>,
        pub(super) history_capacity: u32,
    }

    #[derive(Deserialize)]
    #[cfg_attr(test, derive(serde::Serialize))]
    pub(super) struct SnapshotV1 {
        pub(super) state: StateV1,
        pub(super) channel_names: Vec<String>,
        pub(super) desired_names: Vec<String>,
        pub(super) models: Vec<(String, Vec<u8>)>,
        pub(super) governors: Vec<(String, Vec<u8>)>,
    }

    impl From<SnapshotV1> for super::Snapshot {
        fn from(old: SnapshotV1) -> Self {
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
            SnapshotV2 {
                state: StateV2 {
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
            .into()
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
        let old = legacy::SnapshotV1 {
            state: legacy::StateV1 {
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

        let again = snapshot.encode().unwrap();
        let current = Snapshot::decode(&again).unwrap();
        assert_eq!(current.state.desired, snapshot.state.desired);
    }

    /// A snapshot written before alarms kept their lifecycle loads its alarms as
    /// active and unacknowledged: nobody has acknowledged them in the new sense.
    #[test]
    fn a_snapshot_from_before_the_alarm_lifecycle_loads() {
        let at = Timestamp::now();
        let old = legacy::SnapshotV4 {
            state: legacy::StateV4 {
                path: AssetPath::parse("acme/plant-a/line-1/press-1").unwrap(),
                version: 3,
                channels: Vec::new(),
                desired: Vec::new(),
                derived: Vec::new(),
                alarms: vec![legacy::AlarmV4 {
                    code: "trip:overtemp".into(),
                    severity: crate::twin::Severity::Critical,
                    message: "temperature 120 above 95".into(),
                    raised_by: "overtemp".into(),
                    since: at,
                }],
                trips: Vec::new(),
                health: 0.0,
                updated_at: at,
                windows: Vec::new(),
                history_capacity: 32,
            },
            channel_names: Vec::new(),
            desired_names: Vec::new(),
            models: Vec::new(),
            governors: Vec::new(),
            conditions: Vec::new(),
        };
        let mut bytes = SNAPSHOT_FORMAT_V4.to_vec();
        bytes.extend(postcard::to_stdvec(&old).unwrap());
        let snapshot = Snapshot::decode(&bytes).unwrap();
        let alarm = &snapshot.state.alarms[0];
        assert_eq!(alarm.code, "trip:overtemp");
        assert!(alarm.active && alarm.acknowledged.is_none() && alarm.is_standing());
        assert_eq!(alarm.since, at);
    }

    /// A snapshot and a journal record written before readings carried their epoch
    /// load: samples read as epoch 0, stamped, and the old window answers from its
    /// highest number up.
    #[test]
    fn a_snapshot_and_journal_from_before_epochs_load() {
        use crate::sample::{ChannelId, Quality, SourceId};
        let at = Timestamp::now();
        let old_sample = LegacySample {
            channel: ChannelId(0),
            value: 71.5,
            source_time: at,
            receive_time: at,
            quality: Quality::Good,
            source: SourceId(3),
            seq: 42,
        };
        let old = legacy::SnapshotV2 {
            state: legacy::StateV2 {
                path: AssetPath::parse("acme/plant-a/line-1/press-1").unwrap(),
                version: 9,
                channels: vec![legacy::Channel {
                    current: Some(old_sample),
                    history: [old_sample].into(),
                }],
                desired: Vec::new(),
                derived: Vec::new(),
                alarms: Vec::new(),
                trips: Vec::new(),
                health: 1.0,
                updated_at: at,
                windows: vec![legacy::ReplayWindow {
                    source: SourceId(3),
                    channel: ChannelId(0),
                    high: 42,
                    _below: 0,
                }],
                history_capacity: 32,
            },
            channel_names: vec!["temperature".into()],
            desired_names: Vec::new(),
            models: Vec::new(),
            governors: Vec::new(),
        };
        let snapshot = Snapshot::decode(&postcard::to_stdvec(&old).unwrap()).unwrap();
        let current = snapshot.state.channels[0].current.unwrap();
        assert_eq!((current.seq, current.epoch, current.stamped), (42, 0, true));
        assert_eq!(current.value, 71.5);
        assert_eq!(snapshot.state.windows.len(), 1);
        let again = Snapshot::decode(&snapshot.encode().unwrap()).unwrap();
        assert_eq!(again.state.channels[0].current, Some(current));

        // A journal record of the old layout is variant 0 with the old sample's fields.
        let record = JournalRecord {
            twin: 0,
            version: 10,
            event: JournalEvent::LegacySample(old_sample),
        };
        let bytes = postcard::to_stdvec(&record).unwrap();
        let decoded: JournalRecord = postcard::from_bytes(&bytes).unwrap();
        assert_eq!(decoded.event.sample(), Some(current));
    }
}
