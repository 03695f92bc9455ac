//! A running twin's mailbox and the handle that reaches it.
//!
//! A twin is an actor of its own kind rather than a general-purpose one: a queue under
//! a lock, a [`Notify`] its task waits on, and a flag that closes it. An idle twin's
//! mailbox holds no allocation beyond itself (its queue is taken whole by the task and
//! freed once handled), so a node of a hundred thousand idle twins pays for state, not
//! for channels. Supervision is the line's, through [`Supervisor`].

use std::collections::VecDeque;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use parking_lot::Mutex;
use tokio::sync::Notify;

use super::actor::{TwinMsg, TwinStatus};

/// The handle of a running twin: messages cast through it are handled in order, one at
/// a time, by the twin's task. Cloning it is cheap; two handles are the same twin life
/// when [`TwinRef::same`] says so (a restarted or woken twin has a new one).
#[derive(Clone)]
pub struct TwinRef(Arc<Mailbox>);

struct Mailbox {
    queue: Mutex<VecDeque<TwinMsg>>,
    /// Open until the twin stops; read without the lock between messages.
    open: AtomicBool,
    ready: Notify,
}

impl TwinRef {
    /// An open, empty mailbox.
    pub(crate) fn new() -> Self {
        Self(Arc::new(Mailbox {
            queue: Mutex::new(VecDeque::new()),
            open: AtomicBool::new(true),
            ready: Notify::new(),
        }))
    }

    /// Queues `message`; hands it back when the twin has stopped.
    pub fn cast(&self, message: TwinMsg) -> Result<(), Box<TwinMsg>> {
        {
            let mut queue = self.0.queue.lock();
            if !self.0.open.load(Ordering::Acquire) {
                return Err(Box::new(message));
            }
            queue.push_back(message);
        }
        self.0.ready.notify_one();
        Ok(())
    }

    /// Stops the twin after the message it is handling: what waits in its mailbox is
    /// dropped (its senders learn the twin is unavailable).
    pub fn stop(&self) {
        let dropped = {
            let mut queue = self.0.queue.lock();
            self.0.open.store(false, Ordering::Release);
            std::mem::take(&mut *queue)
        };
        drop(dropped);
        self.0.ready.notify_one();
    }

    /// True until the twin stops.
    pub fn is_open(&self) -> bool {
        self.0.open.load(Ordering::Acquire)
    }

    /// True when both handles reach the same twin life.
    pub fn same(&self, other: &TwinRef) -> bool {
        Arc::ptr_eq(&self.0, &other.0)
    }

    /// Waits for messages and takes all that wait; `None` once the twin is stopped.
    pub(crate) async fn next_batch(&self) -> Option<VecDeque<TwinMsg>> {
        loop {
            {
                let mut queue = self.0.queue.lock();
                if !self.0.open.load(Ordering::Acquire) {
                    return None;
                }
                if !queue.is_empty() {
                    return Some(std::mem::take(&mut *queue));
                }
            }
            // A cast between the check and here leaves a permit: this returns at once.
            self.0.ready.notified().await;
        }
    }
}

impl std::fmt::Debug for TwinRef {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TwinRef")
            .field("open", &self.is_open())
            .finish_non_exhaustive()
    }
}

/// What a twin reports to whoever supervises it (a line): its status as it changes,
/// and its failure. One supervisor serves many twins, each known by its slot.
pub trait Supervisor: Send + Sync {
    /// The twin in `slot` has a new status.
    fn status(&self, slot: usize, status: TwinStatus);
    /// The twin life `twin` in `slot` failed while handling a message (the message
    /// panicked): it has stopped, its directory entry says it is down, and what waited
    /// in its mailbox was dropped. The supervisor decides whether to restart it.
    fn failed(&self, slot: usize, twin: TwinRef, reason: String);
}

/// A twin's supervisor and the twin's slot under it.
#[derive(Clone)]
pub struct Supervised {
    /// The supervisor.
    pub supervisor: Arc<dyn Supervisor>,
    /// The twin's slot.
    pub slot: usize,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn messages_come_in_order_and_stop_drops_the_rest() {
        let twin = TwinRef::new();
        for _ in 0..3 {
            assert!(twin.cast(TwinMsg::StatusTick).is_ok());
        }
        let batch = twin.next_batch().await.unwrap();
        assert_eq!(batch.len(), 3);
        assert_eq!(twin.0.queue.lock().capacity(), 0, "taken whole");

        // A waiting task wakes on a cast made after it checked.
        let waiter = {
            let twin = twin.clone();
            tokio::spawn(async move { twin.next_batch().await.map(|b| b.len()) })
        };
        tokio::task::yield_now().await;
        assert!(twin.cast(TwinMsg::Snapshot).is_ok());
        assert_eq!(waiter.await.unwrap(), Some(1));

        assert!(twin.cast(TwinMsg::Snapshot).is_ok());
        twin.stop();
        assert!(twin.next_batch().await.is_none());
        let refused = twin.cast(TwinMsg::Snapshot).map_err(|message| *message);
        assert!(matches!(refused, Err(TwinMsg::Snapshot)), "handed back");
        assert!(twin.same(&twin.clone()));
        assert!(!twin.same(&TwinRef::new()));
    }
}
