//! A twin's state: reported, desired and derived values, alarms, trips, health, version.

use std::collections::VecDeque;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use super::alarm::list::{self, Changed};
pub use super::alarm::{Alarm, Severity};
use super::change::TwinChange;
use super::sequence::{Admission, SeqKey, SeqWindow};
use crate::command::{CommandId, Origin};
use crate::config::TwinType;
use crate::path::AssetPath;
use crate::sample::{ChannelId, Quality, Sample};
use crate::time::Timestamp;
use crate::value::Value;

/// The latest value and recent history of one channel.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct ChannelState {
    /// The sample with the newest source time, if any arrived. While the channel is
    /// under a condition, its quality is the condition's.
    pub current: Option<Sample>,
    /// Recent samples in source-time order, oldest first, bounded.
    pub history: VecDeque<Sample>,
    /// Why the current value cannot be trusted now, until a newer reading arrives.
    /// Kept in snapshots beside the state (see `Snapshot::conditions`).
    #[serde(skip)]
    pub condition: Option<Box<ChannelCondition>>,
    /// Where in [`TwinState::windows`] the window of the source that fed this channel
    /// last is: a hint, checked before use, so a reading finds its window without a
    /// search.
    #[serde(skip)]
    pub window: u32,
}

/// Why a channel's current value cannot be trusted, though no reading says so: it is
/// older than the channel allows, its source lost touch, or its source reported a
/// failure without a value (an OPC UA Bad status).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ChannelCondition {
    /// [`Quality::Stale`] or [`Quality::Bad`].
    pub quality: Quality,
    /// Why, in words: `no reading for 30 s (max age 30 s)`, `BadSensorFailure`, …
    pub reason: String,
    /// When it began: the node's clock for staleness, the source's for a reported
    /// failure.
    pub since: Timestamp,
}

impl ChannelCondition {
    /// The code of the alarm the condition raises on `channel`: `stale:<channel>` or
    /// `bad:<channel>`.
    pub fn alarm_code(quality: Quality, channel: &str) -> String {
        format!("{}:{channel}", quality.as_str())
    }
}

impl ChannelState {
    /// True when history holds the same reading: the same (source, epoch, seq), and
    /// for a stamped reading the same source time.
    fn holds(&self, sample: &Sample) -> bool {
        let same = |s: &Sample| {
            s.source == sample.source
                && s.epoch == sample.epoch
                && s.seq == sample.seq
                && s.stamped == sample.stamped
        };
        if sample.stamped {
            let start = self
                .history
                .partition_point(|s| s.source_time < sample.source_time);
            self.history
                .range(start..)
                .take_while(|s| s.source_time == sample.source_time)
                .any(same)
        } else {
            self.history.iter().any(same)
        }
    }
}

/// A desired value, when it was last set, and whether it reached the machine.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DesiredValue {
    /// The value the twin asks the machine to hold.
    pub value: Value,
    /// When it was last set.
    pub set_at: Timestamp,
    /// How far the value got on its way to the machine.
    pub delivery: Delivery,
    /// In a report, for a value the machine reports back on a channel: whether the
    /// channel's current reading agrees with it within the type's tolerance. Not kept
    /// in the state.
    #[serde(skip)]
    pub agrees: Option<bool>,
}

impl DesiredValue {
    /// A desired value holding the type's initial value: nothing was sent.
    pub fn initial(value: Value) -> Self {
        Self {
            value,
            set_at: Timestamp(0),
            delivery: Delivery::default(),
            agrees: None,
        }
    }
}

/// Where a desired value stands on its way to the machine.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DeliveryState {
    /// It holds the type's initial value; nothing was sent.
    #[default]
    Initial,
    /// Decided, and not yet confirmed by an actuator.
    Pending,
    /// An actuator confirmed it: the server accepted the write or call, or the broker
    /// acknowledged the publish.
    Delivered,
    /// It did not reach the machine: refused, undeliverable in time, or past its deadline.
    Failed,
}

impl DeliveryState {
    /// A short lowercase name.
    pub fn as_str(self) -> &'static str {
        match self {
            DeliveryState::Initial => "initial",
            DeliveryState::Pending => "pending",
            DeliveryState::Delivered => "delivered",
            DeliveryState::Failed => "failed",
        }
    }
}

impl std::fmt::Display for DeliveryState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The delivery of a desired value: which actuation set it, and how far it got.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct Delivery {
    /// Where it stands.
    pub state: DeliveryState,
    /// The twin's version whose command or safety action set the value: the identity an
    /// actuator reports an outcome against.
    pub version: u64,
    /// The command that set it (absent for safety actions and the initial value).
    pub command_id: Option<CommandId>,
    /// The command's name (for a safety action, the command its governor demanded).
    pub command: String,
    /// Who asked.
    pub origin: Option<Origin>,
    /// True when a governor's safety action set it.
    pub safety: bool,
    /// The command's absolute deadline: past it the value is never sent.
    pub deadline: Option<Timestamp>,
    /// When the state was last set: decided, confirmed or given up.
    pub at: Timestamp,
    /// The actuator that confirmed it or reported the failure (`opcua:plc-1`).
    pub by: String,
    /// Why it failed.
    pub reason: String,
}

impl Delivery {
    /// True while it may still be sent: pending or failed, and not past its deadline.
    pub fn resendable(&self, now: Timestamp) -> bool {
        matches!(self.state, DeliveryState::Pending | DeliveryState::Failed)
            && self.deadline.is_none_or(|deadline| now <= deadline)
    }
}

/// What an actuator reports about one actuation.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum DeliveryOutcome {
    /// The machine's server accepted it, or the broker acknowledged it.
    Delivered,
    /// It did not reach the machine, and why.
    Failed(String),
}

/// An actuator's report of how one actuation fared, for the desired values it carried.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DeliveryReport {
    /// The twin.
    pub asset: AssetPath,
    /// The actuation's version ([`Delivery::version`]).
    pub version: u64,
    /// The desired values the report covers.
    pub desired: Vec<String>,
    /// The actuator (`opcua:plc-1`, `mqtt:plant`).
    pub by: String,
    /// What happened.
    pub outcome: DeliveryOutcome,
    /// When.
    pub at: Timestamp,
}

/// A value a model derived, with its confidence.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DerivedValue {
    /// Name, unique within the twin.
    pub name: Arc<str>,
    /// The model that writes it.
    pub model: Arc<str>,
    /// Latest value, once the model produced one.
    pub value: Option<f64>,
    /// The model's confidence in it, 0..=1.
    pub confidence: f64,
    /// When it was last written.
    pub at: Timestamp,
}

impl DerivedValue {
    /// An output of `model` named `name` that holds no value yet. Its names are the
    /// node's one copy of each, shared by every twin whose models write it.
    pub fn empty(name: &str, model: &str) -> Self {
        Self {
            name: shared_name(name),
            model: shared_name(model),
            value: None,
            confidence: 0.0,
            at: Timestamp(0),
        }
    }
}

/// The node's one copy of a derived value's or model's name.
fn shared_name(name: &str) -> Arc<str> {
    static NAMES: std::sync::LazyLock<parking_lot::Mutex<std::collections::HashSet<Arc<str>>>> =
        std::sync::LazyLock::new(Default::default);
    let mut names = NAMES.lock();
    if let Some(shared) = names.get(name) {
        return shared.clone();
    }
    let shared: Arc<str> = Arc::from(name);
    names.insert(shared.clone());
    shared
}

/// A latched safety trip: set by a governor's safety action, cleared by a command
/// declared with `clears_trips`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Trip {
    /// The governor that tripped.
    pub governor: String,
    /// Why.
    pub reason: String,
    /// When.
    pub at: Timestamp,
}

/// What applying a sample did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum SampleOutcome {
    /// It became the channel's current value.
    Applied,
    /// It is older than the current value: kept in history and the journal at its
    /// source time, not current.
    Late,
    /// The same (source, epoch, seq) was applied before: ignored.
    Duplicate,
    /// The channel's current reading again, while the channel was stale: its source
    /// is back and still reports it (an OPC UA server's value on a new subscription, a
    /// retained MQTT message). The channel is fresh again from its arrival; models and
    /// governors have seen the reading already.
    Renewed,
    /// Refused as bad input (see [`SampleRejection::SeqJump`] and
    /// [`SampleRejection::Unverifiable`]).
    Refused(SampleRejection),
}

/// The full state of one twin.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TwinState {
    /// The twin's asset path.
    pub path: AssetPath,
    /// Grows by one with every accepted change (journaled event).
    pub version: u64,
    /// Reported values per channel, indexed by [`ChannelId`].
    pub channels: Vec<ChannelState>,
    /// Desired values, indexed like the type's `desired`.
    pub desired: Vec<DesiredValue>,
    /// Values written by models.
    pub derived: Vec<DerivedValue>,
    /// Active alarms.
    pub alarms: Vec<Alarm>,
    /// Latched trips.
    pub trips: Vec<Trip>,
    /// Overall health, 0 (failed or tripped) ..= 1 (as new).
    pub health: f64,
    /// Last time anything changed.
    pub updated_at: Timestamp,
    /// The readings applied, per (source, channel) (see [`SeqWindow`]).
    pub windows: Vec<SeqWindow>,
    /// History ring capacity per channel.
    pub history_capacity: u32,
}

impl TwinState {
    /// The initial state of a twin of `twin_type`.
    pub fn new(path: AssetPath, twin_type: &TwinType, history_capacity: usize) -> Self {
        let now = Timestamp::now();
        Self {
            path,
            version: 0,
            channels: vec![ChannelState::default(); twin_type.channels.len()],
            desired: twin_type
                .desired
                .iter()
                .map(|d| DesiredValue::initial(d.initial))
                .collect(),
            derived: Vec::new(),
            alarms: Vec::new(),
            trips: Vec::new(),
            health: 1.0,
            updated_at: now,
            windows: Vec::new(),
            history_capacity: history_capacity.max(1) as u32,
        }
    }

    /// Applies an already validated sample: a duplicate of a reading applied before is
    /// ignored; one older than the channel's current value goes into history only.
    /// Does not bump the version; the caller journals what was not ignored and bumps it.
    pub fn apply_sample(&mut self, sample: &Sample) -> SampleOutcome {
        let channel_index = sample.channel.0 as usize;
        debug_assert!(channel_index < self.channels.len());
        match self.admit(sample) {
            Admission::New => {}
            Admission::Duplicate => return self.renew(sample),
            Admission::FarOff => return SampleOutcome::Refused(SampleRejection::SeqJump),
            Admission::Unknown => {
                if self.channels[channel_index].holds(sample) {
                    return self.renew(sample);
                }
                if !sample.stamped {
                    // Its time is when it arrived, not when it was measured: history
                    // cannot tell whether it is a redelivery.
                    return SampleOutcome::Refused(SampleRejection::Unverifiable);
                }
            }
        }
        let capacity = self.history_capacity as usize;
        let channel = &mut self.channels[channel_index];
        while channel.history.len() > capacity {
            channel.history.pop_front();
        }
        let newest = channel.history.back().map(|s| s.source_time);
        let at = match newest {
            Some(newest) if sample.source_time < newest => channel
                .history
                .partition_point(|s| s.source_time <= sample.source_time),
            _ => channel.history.len(),
        };
        if channel.history.len() < capacity {
            channel.history.insert(at, *sample);
        } else if at > 0 {
            // Full: the oldest makes room first, so the ring never grows past its
            // capacity. A reading older than all it holds is not kept.
            channel.history.pop_front();
            channel.history.insert(at - 1, *sample);
        }
        // A failure the source reported stands against readings measured before it.
        let reported_failure = channel
            .condition
            .as_ref()
            .is_some_and(|c| c.quality == Quality::Bad && sample.source_time < c.since);
        let is_newer = channel
            .current
            .is_none_or(|current| sample.source_time >= current.source_time);
        if is_newer && !reported_failure {
            channel.current = Some(*sample);
            channel.condition = None;
            SampleOutcome::Applied
        } else {
            SampleOutcome::Late
        }
    }

    /// A reading applied before: renews a stale channel whose current reading it is,
    /// else a duplicate.
    fn renew(&mut self, sample: &Sample) -> SampleOutcome {
        let channel = &mut self.channels[sample.channel.0 as usize];
        let stale = channel
            .condition
            .as_ref()
            .is_some_and(|c| c.quality == Quality::Stale);
        let current = channel.current.is_some_and(|c| {
            c.source == sample.source
                && c.epoch == sample.epoch
                && c.seq == sample.seq
                && c.stamped == sample.stamped
                && c.source_time == sample.source_time
        });
        if stale && current {
            channel.current = Some(*sample);
            channel.condition = None;
            SampleOutcome::Renewed
        } else {
            SampleOutcome::Duplicate
        }
    }

    fn admit(&mut self, sample: &Sample) -> Admission {
        let key = SeqKey {
            epoch: sample.epoch,
            seq: sample.seq,
            stamped: sample.stamped,
            source_time: sample.source_time,
        };
        let channel = sample.channel.0 as usize;
        let fits = |w: &SeqWindow| w.source == sample.source && w.channel == sample.channel;
        let hint = self.channels[channel].window as usize;
        let found = match self.windows.get(hint) {
            Some(window) if fits(window) => Some(hint),
            _ => self.windows.iter().position(fits),
        };
        match found {
            Some(index) => {
                self.channels[channel].window = index as u32;
                self.windows[index].admit(&key)
            }
            None => {
                if self.windows.capacity() == 0 {
                    // A source usually feeds every channel of the twin.
                    self.windows.reserve_exact(self.channels.len());
                }
                self.channels[channel].window = self.windows.len() as u32;
                self.windows
                    .push(SeqWindow::new(sample.source, sample.channel, &key));
                Admission::New
            }
        }
    }

    /// Puts a channel under `condition`; its current value stays, with the condition's
    /// quality. Returns false and changes nothing when the condition adds nothing: the
    /// channel is already under the same condition, staleness of a channel with no
    /// value or with a bad one, or a failure reported before the current reading.
    pub fn set_condition(&mut self, channel: ChannelId, condition: ChannelCondition) -> bool {
        let Some(state) = self.channels.get_mut(channel.0 as usize) else {
            return false;
        };
        let current = state.current.map(|c| (c.quality, c.source_time));
        let held = state.condition.as_ref();
        let adds = match condition.quality {
            Quality::Stale => {
                held.is_none() && current.is_some_and(|(quality, _)| quality != Quality::Bad)
            }
            Quality::Bad => {
                held.is_none_or(|c| c.quality != Quality::Bad || c.reason != condition.reason)
                    && current.is_none_or(|(_, time)| time <= condition.since)
            }
            Quality::Good | Quality::Uncertain => false,
        };
        if !adds {
            return false;
        }
        if let Some(current) = &mut state.current {
            current.quality = condition.quality;
        }
        state.condition = Some(Box::new(condition));
        true
    }

    /// The condition a channel is under, if any.
    pub fn condition(&self, channel: ChannelId) -> Option<&ChannelCondition> {
        self.channels.get(channel.0 as usize)?.condition.as_deref()
    }

    /// The current value of a channel.
    pub fn value(&self, channel: ChannelId) -> Option<f64> {
        self.channels
            .get(channel.0 as usize)?
            .current
            .map(|s| s.value)
    }

    /// The current sample of a channel.
    pub fn current(&self, channel: ChannelId) -> Option<&Sample> {
        self.channels.get(channel.0 as usize)?.current.as_ref()
    }

    /// A derived value by name.
    pub fn derived(&self, name: &str) -> Option<f64> {
        self.derived.iter().find(|d| *d.name == *name)?.value
    }

    /// True when a trip is latched.
    pub fn is_tripped(&self) -> bool {
        !self.trips.is_empty()
    }

    /// Raises an alarm, or updates the one with the same code (see
    /// [`alarm`](super::alarm)); the change to publish when it changed.
    pub fn raise_alarm(&mut self, alarm: Alarm) -> Option<TwinChange> {
        list::raise(&mut self.alarms, alarm).map(|changed| alarm_change(&changed, ""))
    }

    /// An alarm's condition returned to normal: acknowledged, it leaves the list;
    /// unacknowledged, it stays until acknowledged. The change to publish, if any.
    pub fn clear_alarm(&mut self, code: &str) -> Option<TwinChange> {
        list::clear(&mut self.alarms, code).map(|changed| alarm_change(&changed, code))
    }

    /// The worst severity of the standing alarms (active, and neither shelved, out
    /// of service nor suppressed).
    pub fn worst_severity(&self) -> Option<Severity> {
        self.alarms
            .iter()
            .filter(|a| a.is_standing())
            .map(|a| a.severity)
            .max()
    }
}

/// The change that tells subscribers and mirrors what a transition did to alarm
/// `code`: its state now, or that it left the list.
pub(crate) fn alarm_change(changed: &Changed, code: &str) -> TwinChange {
    match changed {
        Changed::Now(alarm) => TwinChange::AlarmRaised((**alarm).clone()),
        Changed::Gone => TwinChange::AlarmCleared {
            code: code.to_string(),
        },
    }
}

/// Checks a reading against its channel before it reaches a twin.
pub fn check_sample(
    twin_type: &TwinType,
    sample: &Sample,
    max_future_skew_us: i64,
    max_age_us: i64,
) -> Result<(), SampleRejection> {
    let Some(spec) = twin_type.channel_spec(sample.channel) else {
        return Err(SampleRejection::UnknownChannel);
    };
    if !sample.value.is_finite() {
        return Err(SampleRejection::NotFinite);
    }
    if sample.value < spec.range.0 || sample.value > spec.range.1 {
        return Err(SampleRejection::OutOfRange);
    }
    let skew = sample.source_time.0 - sample.receive_time.0;
    if skew > max_future_skew_us {
        return Err(SampleRejection::InFuture);
    }
    if -skew > max_age_us {
        return Err(SampleRejection::TooOld);
    }
    Ok(())
}

/// Why a sample was refused before reaching a twin; also the counter key.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum SampleRejection {
    /// No twin has that path.
    UnknownAsset,
    /// The twin's type has no such channel.
    UnknownChannel,
    /// NaN or infinite.
    NotFinite,
    /// Outside the channel's plausible range.
    OutOfRange,
    /// Source time too far in the future.
    InFuture,
    /// Source time too far in the past.
    TooOld,
    /// The sequence number is implausibly far from the source's
    /// ([`MAX_SEQ_JUMP`](super::sequence::MAX_SEQ_JUMP)).
    SeqJump,
    /// Older than what the twin remembers of its source, and without a source
    /// timestamp: it cannot be told apart from a reading applied before.
    Unverifiable,
}

impl SampleRejection {
    /// Every kind, for counters.
    pub const ALL: [SampleRejection; 8] = [
        SampleRejection::UnknownAsset,
        SampleRejection::UnknownChannel,
        SampleRejection::NotFinite,
        SampleRejection::OutOfRange,
        SampleRejection::InFuture,
        SampleRejection::TooOld,
        SampleRejection::SeqJump,
        SampleRejection::Unverifiable,
    ];

    /// A short snake_case name.
    pub fn as_str(self) -> &'static str {
        match self {
            SampleRejection::UnknownAsset => "unknown_asset",
            SampleRejection::UnknownChannel => "unknown_channel",
            SampleRejection::NotFinite => "not_finite",
            SampleRejection::OutOfRange => "out_of_range",
            SampleRejection::InFuture => "in_future",
            SampleRejection::TooOld => "too_old",
            SampleRejection::SeqJump => "seq_jump",
            SampleRejection::Unverifiable => "unverifiable",
        }
    }
}

/// Read-only view of a twin handed to models and governors.
#[derive(Clone, Copy)]
pub struct TwinView<'a> {
    /// The twin's type.
    pub twin_type: &'a Arc<TwinType>,
    /// The twin's state.
    pub state: &'a TwinState,
}

impl<'a> TwinView<'a> {
    /// The asset path.
    pub fn path(&self) -> &AssetPath {
        &self.state.path
    }

    /// The current value of a channel by name.
    pub fn value(&self, channel: &str) -> Option<f64> {
        self.state.value(self.twin_type.channel(channel)?)
    }

    /// The current sample of a channel by name.
    pub fn current(&self, channel: &str) -> Option<&'a Sample> {
        self.state.current(self.twin_type.channel(channel)?)
    }

    /// The quality of a channel's current value.
    pub fn quality(&self, channel: &str) -> Option<Quality> {
        self.current(channel).map(|s| s.quality)
    }

    /// A desired value by name.
    pub fn desired(&self, name: &str) -> Option<&'a DesiredValue> {
        let (index, _) = self.twin_type.desired(name)?;
        self.state.desired.get(index)
    }

    /// A derived value by name.
    pub fn derived(&self, name: &str) -> Option<f64> {
        self.state.derived(name)
    }
}
