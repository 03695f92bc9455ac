//! Where each hosted twin's actor is: a fixed table indexed by twin, updated as actors
//! (re)start.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};

use parking_lot::RwLock;
use ractor::ActorRef;

use super::actor::TwinMsg;
use crate::config::TwinType;
use crate::path::AssetPath;
use crate::time::Timestamp;

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
    actor: RwLock<Option<ActorRef<TwinMsg>>>,
    /// When one of its channels goes stale if nothing newer arrives, in microseconds
    /// (`i64::MAX`: none will); the node's freshness sweep reads it.
    stale_at: AtomicI64,
}

impl TwinEntry {
    /// The twin's live actor, if running.
    pub fn actor(&self) -> Option<ActorRef<TwinMsg>> {
        self.actor.read().clone()
    }

    pub(crate) fn set_actor(&self, actor: Option<ActorRef<TwinMsg>>) {
        *self.actor.write() = actor;
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

    pub(crate) fn clear_actor_if(&self, actor: &ActorRef<TwinMsg>) {
        let mut slot = self.actor.write();
        if slot.as_ref().is_some_and(|a| a.get_id() == actor.get_id()) {
            *slot = None;
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
                    actor: RwLock::new(None),
                    stale_at: AtomicI64::new(i64::MAX),
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
