//! Where each hosted twin's actor is: a fixed table indexed by twin, updated as actors
//! (re)start, passivate and wake.
//!
//! Every message to a twin goes through its entry ([`TwinEntry::send`]), which casts
//! it under the entry's lock and counts it. That count is what makes passivation
//! safe: a twin actor parks itself only when, under the same lock, it has handled
//! every message sent to it, so nothing can be left in the mailbox of an actor that
//! stops. A message for a parked twin takes the parked state out and queues; the
//! caller asks the twin's supervisor to wake it, and the woken actor takes the queue,
//! in order, before anything sent later.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU32, Ordering};

use parking_lot::Mutex;

use super::actor::TwinMsg;
use super::mailbox::TwinRef;
use super::passivation::Parked;
use crate::config::TwinType;
use crate::path::AssetPath;
use crate::time::Timestamp;

/// Where a twin is.
enum Place {
    /// Not running: not started yet, or between lives after a crash.
    Down,
    /// Recovered, its actor not started yet (a node serving while it starts): input
    /// waits here for the actor; requests are answered "starting".
    Starting(Vec<TwinMsg>),
    /// Its actor runs.
    Running(TwinRef),
    /// Passivated: its state waits, encoded.
    Parked(Parked),
    /// Being woken: messages wait here for the actor.
    Waking(Vec<TwinMsg>),
}

/// A twin's place and the messages sent to its current actor.
struct Slot {
    place: Place,
    /// Messages cast to the running actor through the entry since it started.
    sent: u64,
}

/// What [`TwinEntry::send`] did with a message.
pub(crate) enum Sent {
    /// In the running actor's mailbox.
    Delivered,
    /// Queued for an actor that is waking.
    Queued,
    /// Queued; the twin was parked and must be woken with this state.
    Wake(Parked),
    /// Not taken: the twin is down, or parked and the message does not wake it. The
    /// message comes back.
    Refused(TwinMsg),
    /// Not taken: a request (a read, a command, a what-if) for a twin whose actor has
    /// not started yet.
    Starting(TwinMsg),
}

/// One hosted twin: identity, type and its current actor.
pub struct TwinEntry {
    /// Durable numeric id (journal records refer to it).
    pub id: u32,
    /// Position in the directory.
    pub index: usize,
    /// Asset path.
    pub path: AssetPath,
    /// Twin type.
    pub twin_type: Arc<TwinType>,
    slot: Mutex<Slot>,
    /// When one of its channels goes stale if nothing newer arrives, in microseconds
    /// (`i64::MAX`: none will); the node's freshness sweep reads it.
    stale_at: AtomicI64,
    /// Passivation sweeps since the twin last handled a message.
    idle_rounds: AtomicU32,
    /// The twin is passivated when idle.
    passivates: AtomicBool,
}

impl TwinEntry {
    /// The twin's live actor, if running.
    pub fn actor(&self) -> Option<TwinRef> {
        match &self.slot.lock().place {
            Place::Running(actor) => Some(actor.clone()),
            _ => None,
        }
    }

    /// True while the twin is passivated or waking.
    pub fn is_parked(&self) -> bool {
        matches!(self.slot.lock().place, Place::Parked(_) | Place::Waking(_))
    }

    /// Sends `message` to the twin. A running twin gets it at once; a parked one queues
    /// it and is returned for waking when `wakes` says the parked state needs the
    /// message, else the message is handed back.
    pub(crate) fn send(&self, message: TwinMsg, wakes: impl FnOnce(&Parked) -> bool) -> Sent {
        let mut slot = self.slot.lock();
        match &mut slot.place {
            Place::Running(actor) => match actor.cast(message) {
                Ok(()) => {
                    slot.sent += 1;
                    Sent::Delivered
                }
                Err(message) => Sent::Refused(*message),
            },
            Place::Waking(queue) => {
                queue.push(message);
                Sent::Queued
            }
            Place::Starting(queue) => {
                if message.is_request() {
                    return Sent::Starting(message);
                }
                queue.push(message);
                Sent::Queued
            }
            Place::Parked(parked) => {
                if !wakes(parked) {
                    return Sent::Refused(message);
                }
                let Place::Parked(parked) =
                    std::mem::replace(&mut slot.place, Place::Waking(vec![message]))
                else {
                    unreachable!("matched as parked above")
                };
                Sent::Wake(parked)
            }
            Place::Down => Sent::Refused(message),
        }
    }

    /// The twin is recovered and its actor about to start: input waits for it. A
    /// parked or running twin is left as it is.
    pub fn mark_starting(&self) {
        let mut slot = self.slot.lock();
        if matches!(slot.place, Place::Down) {
            slot.place = Place::Starting(Vec::new());
        }
    }

    /// The twin's actor did not start: it is down, and the input that waited for it
    /// is dropped (its senders learn the twin is unavailable). Returns whether it was
    /// starting.
    pub fn start_failed(&self) -> bool {
        let mut slot = self.slot.lock();
        if !matches!(slot.place, Place::Starting(_)) {
            return false;
        }
        slot.place = Place::Down;
        true
    }

    /// A parked twin's listing line and alarms, read without waking it; `None` unless
    /// it is parked.
    pub fn parked_summary(
        &self,
    ) -> Option<(super::passivation::ParkedSummary, Vec<super::alarm::Alarm>)> {
        match &self.slot.lock().place {
            Place::Parked(parked) => Some((parked.summary, parked.alarms.to_vec())),
            _ => None,
        }
    }

    /// A parked twin's alarms, read without waking it; `None` unless it is parked.
    pub fn parked_alarms(&self) -> Option<Vec<super::alarm::Alarm>> {
        match &self.slot.lock().place {
            Place::Parked(parked) => Some(parked.alarms.to_vec()),
            _ => None,
        }
    }

    /// True while the twin is being woken: its parked state is on its way to its
    /// supervisor.
    pub fn is_waking(&self) -> bool {
        matches!(self.slot.lock().place, Place::Waking(_))
    }

    /// The node stops: a twin starting or waking is down, and what waited for it is
    /// dropped (its senders learn the node is shutting down). Parked and running
    /// twins are left as they are.
    pub fn release_waiting(&self) {
        let mut slot = self.slot.lock();
        if matches!(slot.place, Place::Starting(_) | Place::Waking(_)) {
            slot.place = Place::Down;
        }
    }

    /// True while the twin waits for its first actor.
    pub fn is_starting(&self) -> bool {
        matches!(self.slot.lock().place, Place::Starting(_))
    }

    /// Parks the twin at start, before any actor ran.
    pub(crate) fn park_at_start(&self, parked: Parked) {
        self.slot.lock().place = Place::Parked(parked);
    }

    /// The actor `actor` runs the twin now: it takes the messages queued while it
    /// woke, in order, before anything sent after.
    pub(crate) fn set_running(&self, actor: TwinRef) {
        let mut slot = self.slot.lock();
        let queued = match std::mem::replace(&mut slot.place, Place::Down) {
            Place::Waking(queued) | Place::Starting(queued) => queued,
            _ => Vec::new(),
        };
        slot.sent = 0;
        for message in queued {
            if actor.cast(message).is_ok() {
                slot.sent += 1;
            }
        }
        slot.place = Place::Running(actor);
        self.idle_rounds.store(0, Ordering::Relaxed);
    }

    /// Parks the twin if `actor` runs it and has handled all `handled` messages sent
    /// to it; returns whether it did. `parked` is built only then.
    pub(crate) fn park_if_drained(
        &self,
        actor: &TwinRef,
        handled: u64,
        parked: impl FnOnce() -> Parked,
    ) -> bool {
        let mut slot = self.slot.lock();
        let runs = matches!(&slot.place, Place::Running(a) if a.same(actor));
        if !runs || slot.sent != handled {
            return false;
        }
        slot.place = Place::Parked(parked());
        true
    }

    /// A wake failed: the messages queued for the twin are dropped (their waiters
    /// learn the twin is unavailable), and the twin parks again with `parked`, or is
    /// down without it.
    pub fn wake_failed(&self, parked: Option<Parked>) {
        let mut slot = self.slot.lock();
        if matches!(slot.place, Place::Waking(_)) {
            slot.place = parked.map_or(Place::Down, Place::Parked);
        }
    }

    /// True when the twin is passivated when idle.
    pub fn passivates(&self) -> bool {
        self.passivates.load(Ordering::Relaxed)
    }

    pub(crate) fn set_passivates(&self, passivates: bool) {
        self.passivates.store(passivates, Ordering::Relaxed);
    }

    /// True while the twin's actor runs.
    pub(crate) fn is_running(&self) -> bool {
        matches!(self.slot.lock().place, Place::Running(_))
    }

    /// Counts one passivation sweep without a message; returns the count.
    pub(crate) fn idle_round(&self) -> u32 {
        self.idle_rounds.fetch_add(1, Ordering::Relaxed) + 1
    }

    /// The twin handled a message.
    pub(crate) fn touch(&self) {
        self.idle_rounds.store(0, Ordering::Relaxed);
    }

    /// When the twin next needs a freshness sweep, if ever.
    pub(crate) fn set_stale_at(&self, at: Option<Timestamp>) {
        self.stale_at
            .store(at.map_or(i64::MAX, |t| t.as_micros()), Ordering::Release);
    }

    /// Takes the twin's freshness deadline if it has passed by `now`: true once per
    /// deadline, until the twin sets the next.
    pub(crate) fn take_stale_at(&self, now: Timestamp) -> bool {
        let at = self.stale_at.load(Ordering::Acquire);
        at <= now.as_micros()
            && self
                .stale_at
                .compare_exchange(at, i64::MAX, Ordering::AcqRel, Ordering::Relaxed)
                .is_ok()
    }

    /// `actor` stopped: a twin it was running is down until restarted.
    pub(crate) fn clear_actor_if(&self, actor: &TwinRef) {
        let mut slot = self.slot.lock();
        if matches!(&slot.place, Place::Running(a) if a.same(actor)) {
            slot.place = Place::Down;
        }
    }
}

/// All twins hosted by a node.
pub struct Directory {
    entries: Vec<Arc<TwinEntry>>,
    by_path: HashMap<AssetPath, usize>,
    by_id: HashMap<u32, usize>,
}

impl Directory {
    /// A directory of `twins` (path, type, durable id).
    pub fn new(twins: Vec<(AssetPath, Arc<TwinType>, u32)>) -> Self {
        let entries: Vec<Arc<TwinEntry>> = twins
            .into_iter()
            .enumerate()
            .map(|(index, (path, twin_type, id))| {
                Arc::new(TwinEntry {
                    id,
                    index,
                    path,
                    twin_type,
                    slot: Mutex::new(Slot {
                        place: Place::Down,
                        sent: 0,
                    }),
                    stale_at: AtomicI64::new(i64::MAX),
                    idle_rounds: AtomicU32::new(0),
                    passivates: AtomicBool::new(false),
                })
            })
            .collect();
        let by_path = entries.iter().map(|e| (e.path.clone(), e.index)).collect();
        let by_id = entries.iter().map(|e| (e.id, e.index)).collect();
        Self {
            entries,
            by_path,
            by_id,
        }
    }

    /// The entry for a path.
    pub fn get(&self, path: &AssetPath) -> Option<&Arc<TwinEntry>> {
        self.entries.get(*self.by_path.get(path)?)
    }

    /// The entry at a directory index.
    pub fn at(&self, index: usize) -> Option<&Arc<TwinEntry>> {
        self.entries.get(index)
    }

    /// The entry for a durable id.
    pub fn by_id(&self, id: u32) -> Option<&Arc<TwinEntry>> {
        self.entries.get(*self.by_id.get(&id)?)
    }

    /// Every entry, in directory order.
    pub fn entries(&self) -> &[Arc<TwinEntry>] {
        &self.entries
    }

    /// Number of twins.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// True when the node hosts no twin.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}
