//! Fleet-wide reads on a cloud node, answered from its mirrors: GetTwin, ListTwins,
//! WatchTwins and ListAudit, each twin marked with its owner and the mirror's lag.

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;
use std::time::{Duration, Instant};

use doppel_api::convert::{self, timestamp_to_proto};
use doppel_api::page::{self, Listing};
use doppel_api::{page_size, parse_path, parse_prefix, time_range};
use doppel_proto::v1 as pb;
use doppel_runtime::twin::alarm::{AlarmRates, RATE_WINDOW};
use doppel_runtime::twin::{TwinChange, TwinEvent};
use doppel_runtime::{AssetPath, Timestamp};
use tokio::sync::{Semaphore, broadcast, mpsc};
use tokio_stream::wrappers::ReceiverStream;
use tonic::Status;

use crate::config::prefix_covers;
use crate::mirror::{AuditCursor, MirrorRow, MirrorStore};

/// Messages a watch queues for its watcher; beyond them it coalesces.
const WATCH_BUFFER: usize = 1024;

/// How long a watcher that is owed changes may read nothing before it is ended.
pub const STALL_LIMIT: Duration = Duration::from_secs(30);

/// Answers fleet reads from a cloud node's [`MirrorStore`].
#[derive(Clone)]
pub struct FleetApi {
    mirror: MirrorStore,
    watches: Arc<Semaphore>,
}

impl FleetApi {
    /// Reads over `mirror`, serving at most `max_watches` watches at once.
    pub fn new(mirror: MirrorStore, max_watches: usize) -> Self {
        Self {
            mirror,
            watches: Arc::new(Semaphore::new(max_watches.max(1))),
        }
    }

    /// The mirror store.
    pub fn mirror(&self) -> &MirrorStore {
        &self.mirror
    }

    /// Where a mirrored twin comes from and how far behind it may be.
    pub fn provenance(&self, row: &MirrorRow) -> pb::Mirror {
        let link = self.mirror.link(&row.owner);
        let lag = self.mirror.lag(&row.owner);
        pb::Mirror {
            owner_node: row.owner.clone(),
            received_at: Some(timestamp_to_proto(row.received_at)),
            lag: Some(prost_types::Duration {
                seconds: i64::try_from(lag.as_secs()).unwrap_or(i64::MAX),
                nanos: i32::try_from(lag.subsec_nanos()).unwrap_or(0),
            }),
            connected: link.is_some_and(|l| l.connected),
        }
    }

    /// A mirrored twin, or `None` when this node holds no mirror of it.
    pub fn get_twin(&self, asset: &str) -> Option<pb::GetTwinResponse> {
        let row = self.mirror.get(asset)?;
        let mut twin = convert::twin(&row.report);
        twin.mirror = Some(self.provenance(&row));
        Some(pb::GetTwinResponse { twin: Some(twin) })
    }

    /// A page of mirrored twins.
    pub fn list_twins(
        &self,
        request: &pb::ListTwinsRequest,
    ) -> Result<pb::ListTwinsResponse, Status> {
        let size = page_size("page_size", request.page_size)?;
        let prefix = parse_prefix("path_prefix", &request.path_prefix)?;
        let prefix = prefix.as_ref().map_or("", |p| p.as_str());
        let filters =
            page::fingerprint(&[prefix.as_bytes(), request.twin_type.as_bytes(), b"mirror"]);
        let after = if request.page_token.is_empty() {
            None
        } else {
            let cursor = page::decode(&request.page_token, Listing::Twins, filters)
                .map_err(|problem| invalid("page_token", problem))?;
            Some(
                String::from_utf8(cursor)
                    .map_err(|_| invalid("page_token", "not a page token this service issued"))?,
            )
        };
        let mut twins = Vec::new();
        let mut more = false;
        for row in self.mirror.list(prefix) {
            if after
                .as_deref()
                .is_some_and(|after| row.report.asset.as_str() <= after)
                || (!request.twin_type.is_empty() && row.report.twin_type != request.twin_type)
            {
                continue;
            }
            if twins.len() == size {
                more = true;
                break;
            }
            let mut summary = convert::twin_summary(&row.report);
            summary.mirror = Some(self.provenance(&row));
            twins.push(summary);
        }
        let next_page_token = match twins.last() {
            Some(last) if more => page::encode(Listing::Twins, filters, last.asset_path.as_bytes()),
            _ => String::new(),
        };
        Ok(pb::ListTwinsResponse {
            twins,
            next_page_token,
        })
    }

    /// A watch over mirrored twins: a snapshot of each, a marker, then every change
    /// the mirror receives. A watcher that falls behind a burst is not ended: the
    /// twins it owes are sent as their whole state now (`coalesced`), then changes
    /// follow again. Only a watcher that reads nothing for [`STALL_LIMIT`] while it
    /// is owed something is ended, with RESOURCE_EXHAUSTED.
    pub fn watch_twins(
        &self,
        request: &pb::WatchTwinsRequest,
    ) -> Result<ReceiverStream<Result<pb::WatchTwinsResponse, Status>>, Status> {
        let prefix = parse_prefix("path_prefix", &request.path_prefix)?
            .map(|p| p.as_str().to_string())
            .unwrap_or_default();
        let permit = self.watches.clone().try_acquire_owned().map_err(|_| {
            Status::resource_exhausted("this node serves no more watches at the moment")
        })?;
        // Subscribe before the snapshot, skip changes at or below it.
        let mut changes = self.mirror.subscribe();
        let rows = self.mirror.list(&prefix);
        // One slot more than a watch fills: the last is kept for its final status.
        let (sender, receiver) = mpsc::channel(WATCH_BUFFER + 1);
        let fleet = self.clone();
        tokio::spawn(async move {
            let _permit = permit;
            let mut seen: HashMap<String, u64> = HashMap::with_capacity(rows.len());
            let count = u32::try_from(rows.len()).unwrap_or(u32::MAX);
            for row in rows {
                seen.insert(row.report.asset.as_str().to_string(), row.report.version);
                let mut twin = convert::twin(&row.report);
                twin.mirror = Some(fleet.provenance(&row));
                let message = pb::WatchTwinsResponse {
                    event: Some(pb::watch_twins_response::Event::Snapshot(twin)),
                };
                if sender.send(Ok(message)).await.is_err() {
                    return;
                }
            }
            let marker = pb::WatchTwinsResponse {
                event: Some(pb::watch_twins_response::Event::SnapshotComplete(
                    pb::SnapshotComplete { twins: count },
                )),
            };
            if sender.send(Ok(marker)).await.is_err() {
                return;
            }
            let mut watch = FleetWatch {
                fleet,
                prefix,
                seen,
                sender,
                behind: BTreeSet::new(),
                relist: false,
                progress: Instant::now(),
            };
            watch.run(&mut changes).await;
        });
        Ok(ReceiverStream::new(receiver))
    }

    /// The alarms of the mirrored twins under the request's prefix, with counts. A
    /// mirror holds each alarm's latest activation only: its rate counts the alarms
    /// whose latest activation is in the last 10 minutes, and it cannot tell which
    /// alarms chatter.
    pub fn list_alarms(
        &self,
        request: &pb::ListAlarmsRequest,
    ) -> Result<pb::ListAlarmsResponse, Status> {
        let prefix = parse_prefix("path_prefix", &request.path_prefix)?;
        let prefix = prefix.as_ref().map_or("", |p| p.as_str());
        let window_start = Timestamp::now()
            .as_micros()
            .saturating_sub(i64::try_from(RATE_WINDOW.as_micros()).unwrap_or(i64::MAX));
        let mut alarms = Vec::new();
        let mut activations = 0u32;
        for row in self.mirror.list(prefix) {
            for alarm in row.report.alarms {
                if alarm.active && alarm.since.as_micros() >= window_start {
                    activations = activations.saturating_add(1);
                }
                alarms.push((row.report.asset.clone(), alarm));
            }
        }
        let rates = AlarmRates {
            activations,
            chattering: Vec::new(),
        };
        Ok(doppel_api::alarm_list_response(
            &alarms,
            &[],
            request.standing_only,
            &rates,
        ))
    }

    /// A page of replicated audit records, oldest first.
    pub fn list_audit(
        &self,
        request: &pb::ListAuditRequest,
    ) -> Result<pb::ListAuditResponse, Status> {
        let size = page_size("page_size", request.page_size)?;
        let prefix = parse_prefix("path_prefix", &request.path_prefix)?;
        let prefix = prefix.as_ref().map_or("", |p| p.as_str());
        let (from, to) = time_range(request.from.as_ref(), request.to.as_ref())?;
        let kinds = doppel_api::audit_kinds(&request.kinds)?;
        let filters = page::fingerprint(&[
            prefix.as_bytes(),
            &from.0.to_be_bytes(),
            &to.0.to_be_bytes(),
            &doppel_api::kinds_key(&kinds),
            b"mirror",
        ]);
        let after = if request.page_token.is_empty() {
            None
        } else {
            let cursor = page::decode(&request.page_token, Listing::Audit, filters)
                .map_err(|problem| invalid("page_token", problem))?;
            Some(
                decode_cursor(&cursor)
                    .ok_or_else(|| invalid("page_token", "not a page token this service issued"))?,
            )
        };
        let mut records =
            self.mirror
                .audit_after(prefix, (from, to), &kinds, after.as_ref(), size + 1);
        let more = records.len() > size;
        records.truncate(size);
        let next_page_token = match records.last() {
            Some((owner, last)) if more => page::encode(
                Listing::Audit,
                filters,
                &encode_cursor(&AuditCursor::of(owner, last)),
            ),
            _ => String::new(),
        };
        let page = records
            .iter()
            .map(|(_, record)| convert::audit_record(record))
            .collect();
        Ok(pb::ListAuditResponse {
            records: page,
            next_page_token,
        })
    }

    /// The owner of a mirrored twin, if this node mirrors it.
    pub fn owner_of(&self, asset: &AssetPath) -> Option<String> {
        self.mirror.owner(asset.as_str())
    }

    /// Checks an asset path field.
    pub fn parse_asset(field: &str, raw: &str) -> Result<AssetPath, Status> {
        parse_path(field, raw)
    }
}

type Outgoing = mpsc::Sender<Result<pb::WatchTwinsResponse, Status>>;

/// A fleet watch past its snapshot.
struct FleetWatch {
    fleet: FleetApi,
    prefix: String,
    /// The version last sent per twin.
    seen: HashMap<String, u64>,
    sender: Outgoing,
    /// Twins whose whole state is owed, in place of changes not sent.
    behind: BTreeSet<String>,
    /// The mirror's change bus overran this watch: any twin may be owed.
    relist: bool,
    /// When the watcher last took a message.
    progress: Instant,
}

impl FleetWatch {
    async fn run(&mut self, changes: &mut broadcast::Receiver<crate::mirror::MirrorChange>) {
        loop {
            let owed = self.relist || !self.behind.is_empty();
            let stall = tokio::time::Instant::from_std(self.progress + STALL_LIMIT);
            let sender = self.sender.clone();
            tokio::select! {
                // In this order: a watcher that read nothing while something was due
                // is ended even while changes keep coming, and one that reads gets
                // what it is owed before new changes are taken.
                biased;
                () = sender.closed() => return,
                _ = tokio::time::sleep_until(stall), if owed => {
                    let _ = self.sender.try_send(Err(Status::resource_exhausted(format!(
                        "the watcher read nothing for {} s while changes were due; watch again",
                        STALL_LIMIT.as_secs()
                    ))));
                    return;
                }
                // Two slots: one to use, one kept for the final status.
                permits = sender.reserve_many(2), if owed => {
                    let Ok(mut permits) = permits else {
                        return;
                    };
                    self.progress = Instant::now();
                    if let Some(permit) = permits.next() {
                        self.send_owed(permit);
                    }
                }
                received = changes.recv() => match received {
                    Ok(change) => self.on_change(&change.update),
                    Err(broadcast::error::RecvError::Lagged(missed)) => {
                        tracing::debug!(missed, "fleet watch overran: owed twins go as their state now");
                        self.relist = true;
                    }
                    Err(broadcast::error::RecvError::Closed) => {
                        let _ = self.sender.try_send(Err(Status::unavailable("the mirror closed")));
                        return;
                    }
                },
            }
        }
    }

    /// A change from the mirror: sent at once while nothing is owed and the queue has
    /// room, else its twin is owed its state.
    fn on_change(&mut self, update: &doppel_runtime::twin::MirrorUpdate) {
        let asset = update.asset.as_str();
        if !prefix_covers(&self.prefix, asset) {
            return;
        }
        if update.version <= self.seen.get(asset).copied().unwrap_or(0) {
            return;
        }
        if self.relist || !self.behind.is_empty() {
            self.behind.insert(asset.to_string());
            return;
        }
        let events: Vec<TwinChange> = if update.full.is_some() {
            vec![TwinChange::Restarted]
        } else {
            update.changes.clone()
        };
        for event in events {
            if self.sender.capacity() <= 1 {
                self.behind.insert(asset.to_string());
                return;
            }
            let message = pb::WatchTwinsResponse {
                event: Some(pb::watch_twins_response::Event::Change(
                    convert::twin_change(&TwinEvent {
                        asset: update.asset.clone(),
                        version: update.version,
                        change: event,
                    }),
                )),
            };
            if self.sender.try_send(Ok(message)).is_err() {
                self.behind.insert(asset.to_string());
                return;
            }
            self.progress = Instant::now();
        }
        self.seen.insert(asset.to_string(), update.version);
    }

    /// Sends one owed twin's state now, newer than anything sent for it.
    fn send_owed(&mut self, permit: mpsc::Permit<'_, Result<pb::WatchTwinsResponse, Status>>) {
        if std::mem::take(&mut self.relist) {
            for (asset, version) in self.fleet.mirror.versions(&self.prefix) {
                if version > self.seen.get(&asset).copied().unwrap_or(0) {
                    self.behind.insert(asset);
                }
            }
        }
        while let Some(asset) = self.behind.pop_first() {
            let Some(row) = self.fleet.mirror.get(&asset) else {
                continue;
            };
            if row.report.version <= self.seen.get(&asset).copied().unwrap_or(0) {
                continue;
            }
            self.seen.insert(asset, row.report.version);
            let mut twin = convert::twin(&row.report);
            twin.mirror = Some(self.fleet.provenance(&row));
            permit.send(Ok(pb::WatchTwinsResponse {
                event: Some(pb::watch_twins_response::Event::Coalesced(twin)),
            }));
            return;
        }
    }
}

/// A page cursor's bytes: time (8, big endian), sequence (8), owner.
fn encode_cursor(cursor: &AuditCursor) -> Vec<u8> {
    let mut bytes = Vec::with_capacity(16 + cursor.owner.len());
    bytes.extend_from_slice(&cursor.at.0.to_be_bytes());
    bytes.extend_from_slice(&cursor.seq.to_be_bytes());
    bytes.extend_from_slice(cursor.owner.as_bytes());
    bytes
}

fn decode_cursor(bytes: &[u8]) -> Option<AuditCursor> {
    let at = i64::from_be_bytes(bytes.get(..8)?.try_into().ok()?);
    let seq = u64::from_be_bytes(bytes.get(8..16)?.try_into().ok()?);
    let owner = String::from_utf8(bytes.get(16..)?.to_vec()).ok()?;
    Some(AuditCursor {
        at: Timestamp(at),
        owner,
        seq,
    })
}

fn invalid(field: &str, problem: impl std::fmt::Display) -> Status {
    Status::invalid_argument(format!("{field}: {problem}"))
}
