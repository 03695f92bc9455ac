//! One `WatchTwins` stream: a snapshot of every matching twin, a marker, then every
//! change in order.
//!
//! The watcher subscribes to the node's changes before it reads the snapshot, then
//! drops changes the snapshot already contains (version at or below the snapshot's).
//! Messages reach the client through a bounded queue with one slot always kept free
//! for the final status. A burst never ends a watch whose client keeps reading: when
//! the queue is full, or the node's change bus overran the watcher, the twins it fell
//! behind on are owed and sent as their whole state now (`coalesced`), at a version at
//! or above everything sent for them before; changes follow again once nothing is
//! owed. Only a client that reads nothing for the stall limit while something is owed
//! is ended, with RESOURCE_EXHAUSTED. Twins never wait for a watcher.

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;
use std::time::{Duration, Instant};

use doppel_proto::v1 as pb;
use doppel_runtime::twin::{Subscription, TwinChange, TwinEvent, TwinReport};
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

/// A watch past its snapshot.
struct Past {
    /// Per twin, the version of the whole state last sent (snapshot or coalesced):
    /// changes at or below it are in it.
    covered: HashMap<AssetPath, u64>,
    /// Twins owed their whole state, in place of changes not sent.
    owed: BTreeSet<AssetPath>,
    /// The change bus overran this watch: any twin may be owed.
    relist: bool,
    /// When the client last took a message.
    progress: Instant,
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
        let mut past = Past {
            covered: snapshot_versions,
            owed: BTreeSet::new(),
            relist: false,
            progress: Instant::now(),
        };
        let stall = Duration::from_millis(self.shared.limits.watch_stall_ms);
        loop {
            let behind = past.relist || !past.owed.is_empty();
            let outgoing = self.outgoing.clone();
            let stalled = tokio::time::Instant::from_std(past.progress + stall);
            tokio::select! {
                biased;
                _ = closing.changed() => {
                    self.finish(Status::unavailable("the server is shutting down"));
                    return Err("server stopping");
                }
                () = outgoing.closed() => return Ok(()),
                // A client that read nothing while something was due is ended, even
                // while changes keep coming; one that reads gets what it is owed
                // before new changes are taken.
                _ = tokio::time::sleep_until(stalled), if behind => {
                    tracing::info!(stall_ms = self.shared.limits.watch_stall_ms, "watcher too slow: its client read nothing while changes were due");
                    self.finish(too_slow());
                    return Err("queue full");
                }
                // Two slots: one to use, one kept for the final status.
                permits = outgoing.reserve_many(2), if behind => {
                    let Ok(mut permits) = permits else {
                        return Ok(());
                    };
                    past.progress = Instant::now();
                    if std::mem::take(&mut past.relist) {
                        past.owed.extend(
                            self.shared
                                .under(self.prefix.as_ref(), None)
                                .map(|e| e.path.clone()),
                        );
                    }
                    let Some(path) = past.owed.pop_first() else {
                        continue;
                    };
                    // A twin between lives announces its restart; nothing to send now.
                    if let Ok(report) = self.shared.twins.report(&path).await
                        && let Some(permit) = permits.next()
                    {
                        past.covered.insert(path, report.version);
                        permit.send(Ok(pb::WatchTwinsResponse {
                            event: Some(pb::watch_twins_response::Event::Coalesced(
                                convert::twin(&report),
                            )),
                        }));
                    }
                }
                received = changes.recv() => match received {
                    Ok(event) => self.on_change(event, &mut past),
                    Err(RecvError::Lagged(missed)) => {
                        tracing::info!(missed, "watcher behind the change bus: the twins it missed go as their state now");
                        past.relist = true;
                    }
                    Err(RecvError::Closed) => {
                        self.finish(Status::unavailable("the node is shutting down"));
                        return Err("node stopping");
                    }
                },
            }
        }
    }

    /// A change from the node: sent at once while nothing is owed and the queue has
    /// room; else its twin is owed its whole state.
    fn on_change(&self, event: TwinEvent, past: &mut Past) {
        if self
            .prefix
            .as_ref()
            .is_some_and(|prefix| !event.asset.starts_with(prefix))
        {
            return;
        }
        if matches!(event.change, TwinChange::Restarted) {
            // A restarted twin's version may step back to its durable state: from
            // here on every change of it is new.
            past.covered.remove(&event.asset);
        } else if let Some(&covered) = past.covered.get(&event.asset) {
            if event.version <= covered {
                return;
            }
            past.covered.remove(&event.asset);
        }
        if past.relist || !past.owed.is_empty() || self.outgoing.capacity() <= 1 {
            past.owed.insert(event.asset);
            return;
        }
        let change = pb::watch_twins_response::Event::Change(convert::twin_change(&event));
        let message = pb::WatchTwinsResponse {
            event: Some(change),
        };
        match self.outgoing.try_send(Ok(message)) {
            Ok(()) => past.progress = Instant::now(),
            Err(_) => {
                past.owed.insert(event.asset);
            }
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
