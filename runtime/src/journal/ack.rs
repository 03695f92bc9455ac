//! Acknowledgements: a caller learns its samples are durable through a [`Receipt`].

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use parking_lot::Mutex;
use tokio::sync::{Semaphore, oneshot};

use crate::error::Error;
use crate::path::AssetPath;

/// Shared completion state of one ingest call that may span several twins.
pub struct AckGroup {
    remaining: AtomicUsize,
    first_error: Mutex<Option<Error>>,
    done: Mutex<Option<oneshot::Sender<Result<(), Error>>>>,
}

impl AckGroup {
    /// A group expecting `parts` completions, and the receipt that resolves when all
    /// have completed.
    pub fn new(parts: usize) -> (Arc<AckGroup>, Receipt) {
        let (sender, receiver) = oneshot::channel();
        let group = Arc::new(AckGroup {
            remaining: AtomicUsize::new(parts),
            first_error: Mutex::new(None),
            done: Mutex::new(Some(sender)),
        });
        if parts == 0 {
            group.finish();
        }
        (group, Receipt { receiver })
    }

    fn complete_one(&self, result: Result<(), Error>) {
        if let Err(error) = result {
            self.first_error.lock().get_or_insert(error);
        }
        if self.remaining.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.finish();
        }
    }

    fn finish(&self) {
        let result = match self.first_error.lock().take() {
            Some(error) => Err(error),
            None => Ok(()),
        };
        if let Some(sender) = self.done.lock().take() {
            let _ = sender.send(result);
        }
    }
}

/// Resolves when every sample of an ingest call is durable (its journal batch
/// committed), or with the first error.
pub struct Receipt {
    receiver: oneshot::Receiver<Result<(), Error>>,
}

impl Receipt {
    /// Waits until the samples are durable.
    pub async fn durable(self) -> Result<(), Error> {
        self.receiver.await.unwrap_or(Err(Error::ShuttingDown))
    }
}

/// One part of an [`AckGroup`] travelling with a twin message into the journal, with
/// the in-flight permits it holds. Dropping it without completing reports the part as
/// not applied (the twin crashed or stopped before journaling it) and returns the
/// permits.
pub struct Ticket {
    group: Option<Arc<AckGroup>>,
    permits: u32,
    limiter: Option<Arc<Semaphore>>,
    asset: Option<AssetPath>,
}

impl Ticket {
    /// A ticket for one part of `group`, holding `permits` of `limiter`.
    pub fn new(
        group: Option<Arc<AckGroup>>,
        permits: u32,
        limiter: Option<Arc<Semaphore>>,
        asset: AssetPath,
    ) -> Self {
        Self {
            group,
            permits,
            limiter,
            asset: Some(asset),
        }
    }

    /// A ticket that acknowledges nothing and holds no permits.
    pub fn none() -> Self {
        Self {
            group: None,
            permits: 0,
            limiter: None,
            asset: None,
        }
    }

    /// Completes the part.
    pub fn complete(mut self, result: Result<(), Error>) {
        self.finish(result);
    }

    fn finish(&mut self, result: Result<(), Error>) {
        if let Some(limiter) = self.limiter.take() {
            limiter.add_permits(self.permits as usize);
        }
        if let Some(group) = self.group.take() {
            group.complete_one(result);
        }
    }
}

impl Drop for Ticket {
    fn drop(&mut self) {
        if self.group.is_some() || self.limiter.is_some() {
            let error = match self.asset.take() {
                Some(asset) => Error::Unavailable(asset),
                None => Error::ShuttingDown,
            };
            self.finish(Err(error));
        }
    }
}
