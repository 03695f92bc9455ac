//! Fleet-wide reads on a cloud node, answered from its mirrors: GetTwin, ListTwins,
//! WatchTwins and ListAudit, each twin marked with its owner and the mirror's lag.

use std::collections::HashMap;
use std::sync::Arc;

use doppel_api::convert::{self, timestamp_to_proto};
use doppel_api::page::{self, Listing};
use doppel_api::{page_size, parse_path, parse_prefix, time_range};
use doppel_proto::v1 as pb;
use doppel_runtime::twin::{TwinChange, TwinEvent};
use doppel_runtime::{AssetPath, Timestamp};
use tokio::sync::{Semaphore, broadcast, mpsc};
use tokio_stream::wrappers::ReceiverStream;
use tonic::Status;

use crate::config::prefix_covers;
use crate::mirror::{AuditCursor, MirrorRow, MirrorStore};

/// Messages a watch may queue before the watcher counts as stalled and is ended.
const WATCH_BUFFER: usize = 1024;

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
    /// the mirror receives. A watcher that falls too far behind is ended with
    /// RESOURCE_EXHAUSTED.
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
        let (sender, receiver) = mpsc::channel(WATCH_BUFFER);
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
            loop {
                let change = match changes.recv().await {
                    Ok(change) => change,
                    Err(broadcast::error::RecvError::Lagged(missed)) => {
                        let _ = sender
                            .send(Err(Status::resource_exhausted(format!(
                                "the watch fell {missed} changes behind; watch again"
                            ))))
                            .await;
                        return;
                    }
                    Err(broadcast::error::RecvError::Closed) => {
                        let _ = sender
                            .send(Err(Status::unavailable("the mirror closed")))
                            .await;
                        return;
                    }
                };
                let update = &change.update;
                if !prefix_covers(&prefix, update.asset.as_str()) {
                    continue;
                }
                let last = seen.entry(update.asset.as_str().to_string()).or_insert(0);
                if update.version <= *last {
                    continue;
                }
                *last = update.version;
                let events: Vec<TwinChange> = if update.full.is_some() {
                    vec![TwinChange::Restarted]
                } else {
                    update.changes.clone()
                };
                for event in events {
                    let message = pb::WatchTwinsResponse {
                        event: Some(pb::watch_twins_response::Event::Change(
                            convert::twin_change(&TwinEvent {
                                asset: update.asset.clone(),
                                version: update.version,
                                change: event,
                            }),
                        )),
                    };
                    match sender.try_send(Ok(message)) {
                        Ok(()) => {}
                        Err(mpsc::error::TrySendError::Full(_)) => {
                            let _ = sender
                                .send(Err(Status::resource_exhausted(
                                    "the watcher is not keeping up; watch again",
                                )))
                                .await;
                            return;
                        }
                        Err(mpsc::error::TrySendError::Closed(_)) => return,
                    }
                }
            }
        });
        Ok(ReceiverStream::new(receiver))
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
        let filters = page::fingerprint(&[
            prefix.as_bytes(),
            &from.0.to_be_bytes(),
            &to.0.to_be_bytes(),
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
        let mut records = self
            .mirror
            .audit_after(prefix, (from, to), after.as_ref(), size + 1);
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
        self.mirror.get(asset.as_str()).map(|row| row.owner)
    }

    /// Checks an asset path field.
    pub fn parse_asset(field: &str, raw: &str) -> Result<AssetPath, Status> {
        parse_path(field, raw)
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
