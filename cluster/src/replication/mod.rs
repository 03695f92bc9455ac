//! The edge side of replication: this node's outbox, streamed to cloud nodes.
//!
//! The journal writes every change of a replicating node's twins to the outbox in the
//! same transaction as the change ([`doppel_runtime::twin::MirrorUpdate`]); the twins
//! never wait for a link. A [`ReplicationLink`] streams the outbox to one cloud node
//! and keeps it there; an [`OutboxKeeper`] keeps the outbox bounded while a cloud node
//! is out of reach.
//!
//! How a link behaves:
//! - **Resume point.** The cloud node is authoritative about what it holds: after the
//!   hello it answers with the last sequence it holds durably, and the link sends every
//!   entry after it. If the edge's own record of that acknowledgement is behind (it is
//!   written without fsync, so a crash can lose it), the cloud's answer wins and is
//!   recorded. If it is ahead, the cloud lost its store: the link resends whatever the
//!   outbox still holds after the cloud's answer and writes a baseline of every twin
//!   ([`Twins::resync`]), so the mirror rows become whole again.
//! - **Pipelining.** Batches of up to `max_batch_bytes` go out without waiting for the
//!   previous acknowledgement, up to [`WINDOW_BATCHES`] batches' worth of bytes in
//!   flight. Each acknowledgement is recorded in the outbox (which trims what every
//!   link has acknowledged) by a separate task, coalesced.
//! - **Prefix filtering.** A link started with prefixes sends only the updates of twins
//!   at or below one of them. Every entry still advances the sequence: an entry left
//!   empty is dropped when a later entry of the same batch follows it (the cloud's
//!   acknowledgement of the later one covers it) and sent with no updates when it is
//!   the batch's last, so the cloud acknowledges it and the outbox can trim it.
//! - **Compaction.** The [`OutboxKeeper`] compacts entries no link has acknowledged
//!   into one entry per twin under the newest merged sequence. A merged entry may
//!   repeat updates a link already sent but the cloud had not yet acknowledged; the
//!   mirror makes that replay harmless (see [`crate::mirror`]).
//! - **Failures.** Any error or disconnect marks the link disconnected; it reconnects
//!   after a back-off of 100 ms doubling to 5 s, with jitter, and resumes after what the
//!   cloud holds. Connects and disconnects are logged once per change of state.

#[cfg(test)]
mod tests;

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use doppel_proto::v1::{self as proto, ReplicateRequest, replicate_request::Kind};
use doppel_runtime::internal::TwinsInternals;
use doppel_runtime::journal::{Store, StoreError};
use doppel_runtime::twin::{MirrorUpdate, Twins};
use parking_lot::Mutex;
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;
use tokio_stream::wrappers::ReceiverStream;
use tracing::Instrument;

use crate::config::{OutboxSettings, prefix_covers};
use crate::transport::{NodeClient, Transport};

/// The payload format of outbox entries on a replication stream: postcard-encoded
/// `Vec<MirrorUpdate>`.
pub const REPLICATION_FORMAT: u32 = 4;

/// Batches' worth of bytes a link keeps in flight without an acknowledgement.
pub const WINDOW_BATCHES: usize = 4;

/// First reconnect delay.
const FIRST_BACKOFF: Duration = Duration::from_millis(100);
/// Longest reconnect delay.
const MAX_BACKOFF: Duration = Duration::from_secs(5);
/// How long the cloud node has to answer the hello.
const HELLO_TIMEOUT: Duration = Duration::from_secs(10);
/// Most entries in one batch.
const BATCH_ENTRIES: usize = 4096;
/// Most batches in flight, whatever their size.
const MAX_IN_FLIGHT_BATCHES: usize = 256;
/// Requests queued for the gRPC stream.
const OUTGOING_MESSAGES: usize = 4;
/// How often the keeper looks at the outbox by default.
pub const KEEPER_INTERVAL: Duration = Duration::from_secs(2);

/// A replication link's state, for status pages and metrics.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LinkStatus {
    /// The cloud node's id (also the link's name in the outbox).
    pub peer: String,
    /// True while a stream is open and the cloud answered its hello.
    pub connected: bool,
    /// The last sequence the cloud node acknowledged.
    pub acked: u64,
    /// The newest outbox sequence.
    pub head: u64,
    /// `head - acked`: sequences the cloud node does not hold yet.
    pub depth: u64,
    /// Why the last connection attempt or stream failed.
    pub last_error: Option<String>,
    /// Outbox entries sent (resent ones included).
    pub sent_entries: u64,
    /// Connections made after the first one.
    pub reconnects: u64,
}

/// Streams this edge node's outbox to one cloud node and keeps it there.
pub struct ReplicationLink {
    status: Arc<Mutex<LinkStatus>>,
    head: watch::Receiver<u64>,
    stop: watch::Sender<bool>,
    task: JoinHandle<()>,
    ack_writer: JoinHandle<()>,
}

impl ReplicationLink {
    /// Starts replicating to the cloud node `peer_id` at `addr`; the link's name in the
    /// outbox is `peer_id`. Only updates of twins at or below one of `prefixes` are sent
    /// (empty: all). Must be called inside a Tokio runtime.
    pub fn start(
        twins: Twins,
        transport: Transport,
        peer_id: String,
        addr: SocketAddr,
        prefixes: Vec<String>,
        settings: OutboxSettings,
    ) -> ReplicationLink {
        let status = Arc::new(Mutex::new(LinkStatus {
            peer: peer_id.clone(),
            connected: false,
            acked: 0,
            head: 0,
            depth: 0,
            last_error: None,
            sent_entries: 0,
            reconnects: 0,
        }));
        let (stop, stop_rx) = watch::channel(false);
        let (acks, acks_rx) = watch::channel(0);
        let head = twins.outbox_head();
        let span = tracing::info_span!("replication", peer = %peer_id);
        let ack_writer = tokio::spawn(
            write_acks(twins.store().clone(), peer_id.clone(), acks_rx).instrument(span.clone()),
        );
        let worker = Worker {
            twins,
            transport,
            peer: peer_id,
            addr,
            prefixes: prefixes.into(),
            settings,
            status: status.clone(),
            stop: stop_rx,
            head: head.clone(),
            acks,
            resynced_at: None,
            connections: 0,
        };
        let task = tokio::spawn(worker.run().instrument(span));
        ReplicationLink {
            status,
            head,
            stop,
            task,
            ack_writer,
        }
    }

    /// The link's state now.
    pub fn status(&self) -> LinkStatus {
        let mut status = self.status.lock().clone();
        status.head = *self.head.borrow();
        status.depth = status.head.saturating_sub(status.acked);
        status
    }

    /// Closes the stream and stops the link; its position stays in the outbox.
    pub async fn stop(self) {
        let _ = self.stop.send(true);
        let _ = self.task.await;
        let _ = self.ack_writer.await;
    }
}

/// How a session ended.
enum SessionEnd {
    Stopped,
    Failed {
        reason: String,
        /// The cloud node had answered the hello.
        connected: bool,
    },
}

fn failed(reason: impl Into<String>, connected: bool) -> SessionEnd {
    SessionEnd::Failed {
        reason: reason.into(),
        connected,
    }
}

/// A batch read from the outbox, ready to send.
struct Prepared {
    request: ReplicateRequest,
    last_seq: u64,
    bytes: usize,
    entries: usize,
}

struct Worker {
    twins: Twins,
    transport: Transport,
    peer: String,
    addr: SocketAddr,
    prefixes: Arc<[String]>,
    settings: OutboxSettings,
    status: Arc<Mutex<LinkStatus>>,
    stop: watch::Receiver<bool>,
    head: watch::Receiver<u64>,
    /// The latest acknowledgement, for the task that records it in the outbox.
    acks: watch::Sender<u64>,
    /// The cloud's answer when the link last wrote baselines for it.
    resynced_at: Option<u64>,
    connections: u64,
}

async fn stopped(stop: &mut watch::Receiver<bool>) {
    // A dropped link handle stops the link too.
    let _ = stop.wait_for(|stop| *stop).await;
}

impl Worker {
    async fn run(mut self) {
        let mut client: Option<NodeClient> = None;
        let mut backoff = FIRST_BACKOFF;
        let mut reported_unreachable = false;
        loop {
            let mut stop = self.stop.clone();
            let end = tokio::select! {
                biased;
                _ = stopped(&mut stop) => SessionEnd::Stopped,
                end = self.session(&mut client) => end,
            };
            let SessionEnd::Failed { reason, connected } = end else {
                break;
            };
            {
                let mut status = self.status.lock();
                status.connected = false;
                status.last_error = Some(reason.clone());
            }
            if connected {
                tracing::warn!(error = %reason, "disconnected from the cloud node; reconnecting");
                backoff = FIRST_BACKOFF;
                reported_unreachable = true;
            } else if !reported_unreachable {
                tracing::warn!(error = %reason, "cannot reach the cloud node; retrying with back-off");
                reported_unreachable = true;
            } else {
                tracing::debug!(error = %reason, "cloud node still unreachable");
            }
            let delay = backoff.mul_f64(rand::random_range(0.5..=1.0));
            tokio::select! {
                biased;
                _ = stopped(&mut stop) => break,
                _ = tokio::time::sleep(delay) => {}
            }
            backoff = (backoff * 2).min(MAX_BACKOFF);
        }
        self.status.lock().connected = false;
        tracing::debug!("replication link stopped");
    }

    /// Runs a blocking outbox operation off the async workers.
    async fn blocking<T: Send + 'static>(
        &self,
        operation: impl FnOnce(&Store) -> Result<T, StoreError> + Send + 'static,
    ) -> Result<T, String> {
        let store = self.twins.store().clone();
        match tokio::task::spawn_blocking(move || operation(&store)).await {
            Ok(result) => result.map_err(|error| format!("outbox: {error}")),
            Err(_) => Err("outbox: the blocking task failed".into()),
        }
    }

    /// One stream: hello, resume, then send and acknowledge until something fails.
    async fn session(&mut self, client: &mut Option<NodeClient>) -> SessionEnd {
        let peer = self.peer.clone();
        let local_acked = match self
            .blocking(move |store| {
                store.outbox_register(&peer)?;
                store.outbox_acked(&peer)
            })
            .await
        {
            Ok(acked) => acked,
            Err(reason) => return failed(reason, false),
        };
        {
            // Until the cloud answers, what this node recorded is the best estimate.
            let mut status = self.status.lock();
            status.acked = status.acked.max(local_acked);
        }
        let client = match client {
            Some(client) => client,
            None => match self.transport.client(self.addr) {
                Ok(made) => client.insert(made),
                Err(error) => return failed(error.to_string(), false),
            },
        };
        let head = *self.head.borrow();
        let (requests, outgoing) = mpsc::channel(OUTGOING_MESSAGES);
        let hello = ReplicateRequest {
            kind: Some(Kind::Hello(proto::ReplicateHello {
                node_id: self.transport.node_id().to_string(),
                format: REPLICATION_FORMAT,
                head,
            })),
        };
        if requests.try_send(hello).is_err() {
            return failed("cannot queue the hello", false);
        }
        let response = match tokio::time::timeout(
            HELLO_TIMEOUT,
            client.replicate(ReceiverStream::new(outgoing)),
        )
        .await
        {
            Ok(Ok(response)) => response,
            Ok(Err(status)) => return failed(describe(&status), false),
            Err(_) => return failed("the cloud node did not answer in time", false),
        };
        let mut acks = response.into_inner();
        let cloud_acked = match tokio::time::timeout(HELLO_TIMEOUT, acks.message()).await {
            Ok(Ok(Some(answer))) => answer.acked,
            Ok(Ok(None)) => {
                return failed(
                    "the cloud node closed the stream before answering the hello",
                    false,
                );
            }
            Ok(Err(status)) => return failed(describe(&status), false),
            Err(_) => return failed("the cloud node did not answer the hello in time", false),
        };

        self.connections += 1;
        {
            let mut status = self.status.lock();
            status.connected = true;
            status.acked = cloud_acked;
            status.last_error = None;
            status.reconnects = self.connections - 1;
        }
        tracing::info!(
            acked = cloud_acked,
            local_acked,
            head,
            "connected to the cloud node"
        );
        if cloud_acked < local_acked && self.resynced_at.is_none_or(|at| cloud_acked < at) {
            tracing::warn!(
                acked = cloud_acked,
                local_acked,
                "the cloud node holds less than it acknowledged (it lost its store?): resending what the outbox holds and a baseline of every twin"
            );
            // The baselines reach the outbox like any change; no need to wait here.
            drop(self.twins.resync());
            self.resynced_at = Some(cloud_acked);
        }
        self.acks.send_if_modified(|acked| {
            let advanced = cloud_acked > *acked;
            *acked = (*acked).max(cloud_acked);
            advanced
        });

        let window = self
            .settings
            .max_batch_bytes
            .max(1)
            .saturating_mul(WINDOW_BATCHES);
        let mut cursor = cloud_acked;
        let mut acked = cloud_acked;
        let mut in_flight: VecDeque<(u64, usize)> = VecDeque::new();
        let mut in_flight_bytes = 0usize;
        let mut reading: Option<JoinHandle<Result<Prepared, StoreError>>> = None;
        let mut ready: Option<Prepared> = None;
        let mut head_open = true;
        loop {
            let head = *self.head.borrow_and_update();
            if reading.is_none()
                && ready.is_none()
                && cursor < head
                && in_flight_bytes < window
                && in_flight.len() < MAX_IN_FLIGHT_BATCHES
            {
                let store = self.twins.store().clone();
                let prefixes = self.prefixes.clone();
                let max_bytes = self.settings.max_batch_bytes.max(1);
                reading = Some(tokio::task::spawn_blocking(move || {
                    read_batch(&store, cursor, head, max_bytes, &prefixes)
                }));
            }
            let idle = reading.is_none() && ready.is_none() && cursor >= head;
            tokio::select! {
                message = acks.message() => match message {
                    Ok(Some(answer)) => {
                        if answer.acked > acked {
                            acked = answer.acked;
                            cursor = cursor.max(acked);
                            self.status.lock().acked = acked;
                            self.acks.send_replace(acked);
                        }
                        while in_flight.front().is_some_and(|&(last, _)| last <= acked) {
                            if let Some((_, bytes)) = in_flight.pop_front() {
                                in_flight_bytes -= bytes;
                            }
                        }
                    }
                    Ok(None) => return failed("the cloud node ended the stream", true),
                    Err(status) => return failed(describe(&status), true),
                },
                permit = requests.reserve(), if ready.is_some() => {
                    let Ok(permit) = permit else {
                        return failed("the request stream closed", true);
                    };
                    if let Some(batch) = ready.take() {
                        in_flight.push_back((batch.last_seq, batch.bytes));
                        in_flight_bytes += batch.bytes;
                        self.status.lock().sent_entries += batch.entries as u64;
                        permit.send(batch.request);
                    }
                }
                done = async { reading.as_mut().expect("guarded by the branch condition").await }, if reading.is_some() => {
                    reading = None;
                    match done {
                        Ok(Ok(batch)) => {
                            cursor = cursor.max(batch.last_seq);
                            ready = Some(batch);
                        }
                        Ok(Err(error)) => return failed(format!("outbox: {error}"), true),
                        Err(_) => return failed("outbox: the read task failed", true),
                    }
                }
                changed = self.head.changed(), if idle && head_open => {
                    // A closed journal writes nothing more: keep serving acks until stopped.
                    head_open = changed.is_ok();
                }
            }
        }
    }
}

/// Reads the entries after `after` (at most `max_bytes`, at least one) and keeps the
/// updates under `prefixes`. With nothing after `after` although the head is past
/// it (the entries were trimmed), it sends an empty entry at `head`, so the cloud's
/// acknowledgement catches up.
fn read_batch(
    store: &Store,
    after: u64,
    head: u64,
    max_bytes: usize,
    prefixes: &[String],
) -> Result<Prepared, StoreError> {
    let entries = store.outbox_read(after, BATCH_ENTRIES, max_bytes)?;
    let count = entries.len();
    let mut sent = Vec::with_capacity(count.max(1));
    let mut bytes = 0;
    let Some(last_seq) = entries.last().map(|entry| entry.seq) else {
        sent.push(proto::OutboxEntry {
            seq: head,
            updates: empty_updates(),
        });
        return Ok(prepared(sent, head, head, 1, 1));
    };
    for entry in entries {
        let updates = if prefixes.is_empty() {
            Some(entry.bytes)
        } else {
            keep_covered(entry.seq, entry.bytes, prefixes)
        };
        match updates {
            Some(updates) => {
                bytes += updates.len();
                sent.push(proto::OutboxEntry {
                    seq: entry.seq,
                    updates,
                });
            }
            // The cloud's acknowledgement of a later entry covers this one.
            None if entry.seq != last_seq => {}
            None => {
                bytes += 1;
                sent.push(proto::OutboxEntry {
                    seq: entry.seq,
                    updates: empty_updates(),
                });
            }
        }
    }
    Ok(prepared(sent, last_seq, head, bytes, count))
}

fn prepared(
    entries: Vec<proto::OutboxEntry>,
    last_seq: u64,
    head: u64,
    bytes: usize,
    count: usize,
) -> Prepared {
    Prepared {
        request: ReplicateRequest {
            kind: Some(Kind::Batch(proto::OutboxBatch { entries, head })),
        },
        last_seq,
        bytes,
        entries: count,
    }
}

fn empty_updates() -> Vec<u8> {
    postcard::to_stdvec(&Vec::<MirrorUpdate>::new()).unwrap_or_else(|_| vec![0])
}

/// The entry's updates of twins under `prefixes`, re-encoded when some were dropped;
/// `None` when none is left.
fn keep_covered(seq: u64, bytes: Vec<u8>, prefixes: &[String]) -> Option<Vec<u8>> {
    let mut updates = match doppel_runtime::journal::decode_updates(&bytes) {
        Ok(updates) => updates,
        Err(error) => {
            // Written by this node's own journal: only a bug gets here. Sending it
            // would stop the link for good, so it is left out.
            tracing::error!(seq, %error, "an outbox entry does not decode; it is not replicated");
            return None;
        }
    };
    let before = updates.len();
    updates.retain(|update| {
        prefixes
            .iter()
            .any(|prefix| prefix_covers(prefix, update.asset.as_str()))
    });
    if updates.is_empty() {
        None
    } else if updates.len() == before {
        Some(bytes)
    } else {
        postcard::to_stdvec(&updates).ok()
    }
}

fn describe(status: &tonic::Status) -> String {
    format!("{:?}: {}", status.code(), status.message())
}

/// Least spacing of acknowledgement writes: each is a redb transaction that competes
/// with the journal's commits, and one lost in a crash only makes the cloud skip a few
/// replayed entries.
const ACK_SPACING: std::time::Duration = std::time::Duration::from_millis(50);

/// Records acknowledgements in the outbox, one write at a time, always the latest,
/// at most one every [`ACK_SPACING`].
async fn write_acks(store: Store, peer: String, mut acks: watch::Receiver<u64>) {
    let mut written = 0;
    let mut failing = false;
    while acks.changed().await.is_ok() {
        let seq = *acks.borrow_and_update();
        if seq <= written {
            continue;
        }
        let (store, peer) = (store.clone(), peer.clone());
        match tokio::task::spawn_blocking(move || store.outbox_ack(&peer, seq)).await {
            Ok(Ok(())) => {
                written = seq;
                failing = false;
                tokio::time::sleep(ACK_SPACING).await;
            }
            Ok(Err(error)) => {
                // The next acknowledgement retries; the cloud de-duplicates replays.
                if !failing {
                    tracing::warn!(%error, seq, "cannot record an acknowledgement in the outbox");
                }
                failing = true;
            }
            Err(_) => return,
        }
    }
}

/// What the outbox holds, as the keeper last saw it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct OutboxStatus {
    /// Entries in the outbox.
    pub entries: u64,
    /// The newest sequence.
    pub head: u64,
    /// The lowest sequence a link acknowledged (0 without links).
    pub low_acked: u64,
    /// `head - low_acked`: sequences some cloud node does not hold yet.
    pub depth: u64,
    /// Compactions done.
    pub compactions: u64,
    /// Entries merged by them.
    pub compacted_entries: u64,
    /// Why the last look at the outbox failed.
    pub last_error: Option<String>,
}

/// Keeps the outbox bounded: every few seconds, compacts it down when it holds more
/// than `max_entries` (the latest value per channel and every audit record survive)
/// and reports its depth. One per edge node, beside its [`ReplicationLink`]s.
pub struct OutboxKeeper {
    status: Arc<Mutex<OutboxStatus>>,
    stop: watch::Sender<bool>,
    task: JoinHandle<()>,
}

impl OutboxKeeper {
    /// Starts keeping the outbox of `twins`, every [`KEEPER_INTERVAL`].
    pub fn start(twins: Twins, settings: OutboxSettings) -> OutboxKeeper {
        Self::start_with_interval(twins, settings, KEEPER_INTERVAL)
    }

    /// Starts keeping the outbox of `twins`, looking at it at once and then every
    /// `interval`.
    pub fn start_with_interval(
        twins: Twins,
        settings: OutboxSettings,
        interval: Duration,
    ) -> OutboxKeeper {
        let status = Arc::new(Mutex::new(OutboxStatus::default()));
        let (stop, mut stop_rx) = watch::channel(false);
        let shared = status.clone();
        let store = twins.store().clone();
        let task = tokio::spawn(
            async move {
                let mut ticks = tokio::time::interval(interval.max(Duration::from_millis(10)));
                ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
                loop {
                    tokio::select! {
                        biased;
                        _ = stopped(&mut stop_rx) => break,
                        _ = ticks.tick() => {}
                    }
                    let store = store.clone();
                    let max_entries = settings.max_entries;
                    let looked = tokio::task::spawn_blocking(move || {
                        let compaction = store.outbox_compact(max_entries)?;
                        let links = store.outbox_links()?;
                        Ok::<_, StoreError>((
                            compaction,
                            store.outbox_len()?,
                            store.outbox_head()?,
                            links.iter().map(|(_, acked)| *acked).min().unwrap_or(0),
                        ))
                    })
                    .await;
                    let mut status = shared.lock();
                    match looked {
                        Ok(Ok((compaction, entries, head, low_acked))) => {
                            if compaction.entries > 0 {
                                tracing::info!(
                                    entries = compaction.entries,
                                    updates_before = compaction.updates_before,
                                    updates_after = compaction.updates_after,
                                    "compacted the replication outbox"
                                );
                                status.compactions += 1;
                                status.compacted_entries += compaction.entries;
                            }
                            status.entries = entries;
                            status.head = head;
                            status.low_acked = low_acked;
                            status.depth = head.saturating_sub(low_acked);
                            status.last_error = None;
                        }
                        Ok(Err(error)) => {
                            if status.last_error.is_none() {
                                tracing::warn!(%error, "cannot keep the replication outbox");
                            }
                            status.last_error = Some(error.to_string());
                        }
                        Err(_) => break,
                    }
                }
            }
            .instrument(tracing::info_span!("outbox_keeper")),
        );
        OutboxKeeper { status, stop, task }
    }

    /// The outbox as last seen.
    pub fn status(&self) -> OutboxStatus {
        self.status.lock().clone()
    }

    /// Stops keeping the outbox.
    pub async fn stop(self) {
        let _ = self.stop.send(true);
        let _ = self.task.await;
    }
}
