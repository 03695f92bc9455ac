//! Passivation: twins idle for a while stop their actor and wait, encoded, until a
//! message wakes them.
//!
//! A twin is idle when it handled no reading, command or read for
//! [`PassivationSettings::idle_secs`](crate::config::PassivationSettings), nothing of
//! it waits for delivery or for a timer, and no watch covers it. The node's
//! passivation sweep looks every quarter of that time and asks idle twins to
//! passivate; a twin then writes a snapshot to the journal (when its last one is
//! behind), keeps the same bytes in its directory entry and stops its actor, but only
//! if it has handled every message sent to it: every message goes through the twin's
//! directory entry, which counts it under a lock the actor parks under.
//!
//! Any message wakes a parked twin before it is handled: the twin's line supervisor
//! starts a new actor from the parked bytes, which sweeps freshness first and then
//! takes the waiting messages in order, so a reading is still watched by the twin's
//! governors before anything else sees it. A freshness deadline of a parked twin wakes
//! it as the sweep finds it past. Twins whose governors name safety commands stay
//! awake unless [`PassivationSettings::tripping`](crate::config::PassivationSettings)
//! says otherwise.

use std::sync::Arc;

use crate::sample::SourceId;

use super::RunState;
use super::alarm::Alarm;
use super::core::TwinCore;
use super::directory::TwinEntry;
use crate::config::TwinType;

/// Passivation sweeps without a message before a twin is asked to passivate.
pub const IDLE_ROUNDS: u32 = 4;

/// A passivated twin's state.
pub struct Parked {
    /// Its snapshot, or `None` for a twin that never held anything but its initial
    /// state.
    pub(crate) snapshot: Option<Box<[u8]>>,
    /// The store holds no snapshot of it yet: it writes one when it wakes, before
    /// anything else.
    pub(crate) snapshot_due: bool,
    /// Sources of channel values that are neither stale nor bad: a lost source wakes
    /// the twin only if it fed one of them.
    pub(crate) live_sources: Box<[SourceId]>,
    /// Its alarms, so a listing reads them without waking it.
    pub(crate) alarms: Box<[Alarm]>,
    /// What a listing shows of it, likewise.
    pub(crate) summary: ParkedSummary,
}

/// What a listing shows of a parked twin besides its alarms, kept so that listing
/// never wakes it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ParkedSummary {
    /// Its version.
    pub version: u64,
    /// Its run state.
    pub run_state: RunState,
    /// Its health, 0..=1.
    pub health: f64,
}

impl ParkedSummary {
    /// A twin of `twin_type` in its initial state.
    pub(crate) fn initial(twin_type: &TwinType) -> Self {
        let running = twin_type
            .desired("running")
            .and_then(|(_, spec)| spec.initial.as_bool());
        Self {
            version: 0,
            run_state: match running {
                Some(false) => RunState::Stopped,
                _ => RunState::Running,
            },
            health: 1.0,
        }
    }
}

impl Parked {
    /// A twin of `twin_type` in its initial state, with no snapshot in the store.
    pub(crate) fn fresh(twin_type: &TwinType) -> Self {
        Self {
            snapshot: None,
            snapshot_due: true,
            live_sources: Box::new([]),
            alarms: Box::new([]),
            summary: ParkedSummary::initial(twin_type),
        }
    }

    /// A twin parked with `snapshot`, its current snapshot (already in the store or on
    /// its way there).
    pub(crate) fn new(snapshot: Vec<u8>, core: &TwinCore) -> Self {
        let mut live_sources: Vec<SourceId> = core
            .state()
            .channels
            .iter()
            .filter(|channel| channel.condition.is_none())
            .filter_map(|channel| channel.current.map(|sample| sample.source))
            .collect();
        live_sources.sort_unstable_by_key(|source| source.0);
        live_sources.dedup();
        Self {
            snapshot: Some(snapshot.into_boxed_slice()),
            snapshot_due: false,
            live_sources: live_sources.into_boxed_slice(),
            alarms: core.state().alarms.clone().into_boxed_slice(),
            summary: ParkedSummary {
                version: core.state().version,
                run_state: core.run_state(),
                health: core.state().health,
            },
        }
    }

    /// True when a value of the twin still trusted came from one of `sources`.
    pub(crate) fn fed_by(&self, sources: &[SourceId]) -> bool {
        self.live_sources
            .iter()
            .any(|source| sources.contains(source))
    }

    /// Bytes this parked state holds.
    pub fn bytes(&self) -> usize {
        self.snapshot.as_ref().map_or(0, |s| s.len())
            + self.live_sources.len() * std::mem::size_of::<SourceId>()
    }
}

/// Starts a parked twin's actor under its supervisor, or hands the parked state back
/// when it cannot (the supervisor is not running yet, or has stopped; `None` when the
/// state was lost on the way).
pub type Waker = dyn Fn(&Arc<TwinEntry>, Parked) -> Result<(), Option<Parked>> + Send + Sync;
