//! One `WatchTwins` stream: a snapshot of every matching twin, a marker, then every
//! change in order.
//!
//! The watcher subscribes to the node's changes before it reads the snapshot, then
//! drops changes the snapshot already contains (version at or below the snapshot's).
//! Messages reach the client through a bounded queue with one slot always kept free
//! for the final status. A watcher whose client leaves the queue full for longer than
//! the stall limit, or that falls behind the node's change bus, is ended with
//! RESOURCE_EXHAUSTED. Twins never wait for a watcher: the bus drops what a lagging
//! subscriber has not read.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use doppel_proto::v1 as pb;
use doppel_runtime::twin::{Subscription, TwinChange, TwinReport};
use doppel_runtime::{AssetPath, Error as KernelError};
use tokio::sync::OwnedSemaphorePermit;
use tokio::sync::broadcast::error::RecvError;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::Status;
use tracing::Instrument;

use crate::convert;
use crate::error::kernel_status;
use crate::service::Shared;

type Outgoing = mpsc::Sender<Result<pb::WatchTwinsResponse, Status>>;

/// How long a snapshot retries a twin that is restarting.
const RESTART_WAIT: Duration = Duration::from_secs(2);
/// How long a snapshot waits for a twin of a node that is starting.
const STARTING_WAIT: Duration = Duration::from_secs(60);

/// Starts a watch of the twins at or below `prefix` (all without one). The change
/// subscription is taken here, before the snapshot is read.
pub(crate) fn start(
    shared: Arc<Shared>,
    prefix: Option<AssetPath>,
    permit: OwnedSemaphorePermit,
) -> ReceiverStream<Result<pb::WatchTwinsResponse, Status>> {
    let (outgoing, stream) = mpsc::channel(shared.limits.watch_buffer + 1);
    let changes = shared.twins.watch(prefix.as_ref());
    let span = tracing::info_span!("watch", prefix = prefix.as_ref().map_or("", |p| p.as_str()));
    tokio::spawn(
        async move {
            let outcome = Watcher {
                shared,
                prefix,
                outgoing,
            }
            .run(changes)
            .await;
            if let Err(reason) = outcome {
                tracing::debug!(reason, "watch ended");
            }
            drop(permit);
        }
        .instrument(span),
    );
    ReceiverStream::new(stream)
}

struct Watcher {
    shared: Arc<Shared>,
    prefix: Option<AssetPath>,
    outgoing: Outgoing,
}

impl Watcher {
    async fn run(self, mut changes: Subscription) -> Result<(), &'static str> {
        let mut closing = self.shared.closing.subscribe();
        if *closing.borrow_and_update() {
            self.finish(Status::unavailable("the server is shutting down"));
            return Err("server stopping");
        }
        let entries: Vec<AssetPath> = self
            .shared
            .under(self.prefix.as_ref(), None)
            .map(|e| e.path.clone())
            .collect();
        let mut snapshot_versions: HashMap<AssetPath, u64> = HashMap::with_capacity(entries.len());
        for path in &entries {
            let report = match self.report(path).await {
                Ok(report) => report,
                Err(status) => {
                    self.finish(status);
                    return Err("snapshot failed");
                }
            };
            snapshot_versions.insert(path.clone(), report.version);
            let message = pb::watch_twins_response::Event::Snapshot(convert::twin(&report));
            self.send(message, &mut closing).await?;
        }
        let complete = pb::watch_twins_response::Event::SnapshotComplete(pb::SnapshotComplete {
            twins: u32::try_from(entries.len()).unwrap_or(u32::MAX),
        });
        self.send(complete, &mut closing).await?;
        loop {
            let received = tokio::select! {
                biased;
                _ = closing.changed() => {
                    self.finish(Status::unavailable("the server is shutting down"));
                    return Err("server stopping");
                }
                _ = self.outgoing.closed() => return Ok(()),
                received = changes.recv() => received,
            };
            let event = match received {
                Ok(event) => event,
                Err(RecvError::Lagged(missed)) => {
                    tracing::info!(missed, "watcher too slow: changes overran its buffer");
                    self.finish(too_slow());
                    return Err("lagged");
                }
                Err(RecvError::Closed) => {
                    self.finish(Status::unavailable("the node is shutting down"));
                    return Err("node stopping");
                }
            };
            if self
                .prefix
                .as_ref()
                .is_some_and(|prefix| !event.asset.starts_with(prefix))
            {
                continue;
            }
            if matches!(event.change, TwinChange::Restarted) {
                // A restarted twin's version may step back to its durable state: from
                // here on every change of it is new.
                snapshot_versions.remove(&event.asset);
            } else if let Some(&seen) = snapshot_versions.get(&event.asset) {
                if event.version <= seen {
                    continue;
                }
                snapshot_versions.remove(&event.asset);
            }
            let change = pb::watch_twins_response::Event::Change(convert::twin_change(&event));
            self.send(change, &mut closing).await?;
        }
    }

    /// A twin's state for the snapshot, waiting briefly if it is restarting, and
    /// while the node starts it.
    async fn report(&self, path: &AssetPath) -> Result<TwinReport, Status> {
        let started = Instant::now();
        loop {
            match self.shared.twins.report(path).await {
                Ok(report) => return Ok(report),
                Err(KernelError::Unavailable(_)) if started.elapsed() < RESTART_WAIT => {
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
                Err(KernelError::Starting(_)) if started.elapsed() < STARTING_WAIT => {
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
                Err(error) => return Err(kernel_status(error)),
            }
        }
    }

    /// Queues a message, keeping one slot free for the final status. With the queue
    /// full it waits for the client up to the stall limit.
    async fn send(
        &self,
        event: pb::watch_twins_response::Event,
        closing: &mut tokio::sync::watch::Receiver<bool>,
    ) -> Result<(), &'static str> {
        let message = pb::WatchTwinsResponse { event: Some(event) };
        if self.outgoing.capacity() > 1 {
            // The only sender, with room: this cannot fail for want of space.
            return self
                .outgoing
                .try_send(Ok(message))
                .map_err(|_| "client gone");
        }
        let stall = Duration::from_millis(self.shared.limits.watch_stall_ms);
        tokio::select! {
            biased;
            _ = closing.changed() => {
                self.finish(Status::unavailable("the server is shutting down"));
                Err("server stopping")
            }
            permits = self.outgoing.reserve_many(2) => match permits {
                Ok(mut permits) => {
                    if let Some(permit) = permits.next() {
                        permit.send(Ok(message));
                    }
                    Ok(())
                }
                Err(_) => Err("client gone"),
            },
            _ = tokio::time::sleep(stall) => {
                tracing::info!(stall_ms = self.shared.limits.watch_stall_ms, "watcher too slow: its client left the queue full");
                self.finish(too_slow());
                Err("queue full")
            }
        }
    }

    /// Ends the stream with `status` (the free slot always takes it).
    fn finish(&self, status: Status) {
        let _ = self.outgoing.try_send(Err(status));
    }
}

fn too_slow() -> Status {
    Status::resource_exhausted(
        "watcher too slow: it fell too far behind the twins' changes; watch again to resume from a new snapshot",
    )
}
