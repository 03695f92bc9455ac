//! The mirror store on its own: de-duplication, persistence, replays of merged
//! entries, the audit log and refusals of bad replication streams.

use std::time::Duration;

use doppel_proto::v1 as proto;
use doppel_proto::v1::replicate_request::Kind;
use doppel_runtime::twin::{
    Alarm, ChannelCondition, Delivery, DeliveryState, DerivedValue, DesiredValue, MirrorUpdate,
    ReportedValue, RunState, Severity, Trip, TwinChange, TwinReport,
};
use doppel_runtime::{
    AssetPath, AuditKind, AuditRecord, ChannelId, CommandId, ModelInfo, Origin, Quality, Sample,
    SourceId, Timestamp, Value, Verdict,
};
use tokio_stream::wrappers::ReceiverStream;

use super::testing::{CLUSTER, EDGE, TestCloud};
use super::{AuditCursor, AuditHead, MirrorStore, ROWS};
use crate::replication::REPLICATION_FORMAT;
use crate::transport::Transport;

const ASSET: &str = "acme/plant-a/line-1/press-1";

fn report(asset: &str, version: u64) -> TwinReport {
    TwinReport {
        asset: AssetPath::parse(asset).unwrap(),
        twin_type: "press".into(),
        version,
        run_state: RunState::Running,
        reported: vec![ReportedValue {
            channel: "temperature".into(),
            unit: "degC".into(),
            sample: None,
            condition: None,
        }],
        desired: vec![("speed".into(), DesiredValue::initial(Value::Float(1200.0)))],
        derived: Vec::new(),
        alarms: Vec::new(),
        trips: Vec::new(),
        health: 1.0,
        models: Vec::new(),
        updated_at: Timestamp(1),
    }
}

fn reported(asset: &str, version: u64, value: f64) -> MirrorUpdate {
    let mut update = MirrorUpdate::baseline(report(asset, version));
    update.full = None;
    update.at = Timestamp(version as i64 * 1000);
    update.changes = vec![TwinChange::Reported {
        channel: "temperature".into(),
        value,
        quality: Quality::Good,
        source_time: update.at,
    }];
    update
}

fn audit_record(asset: &str, seq: u64, at: i64) -> AuditRecord {
    AuditRecord {
        seq,
        at: Timestamp(at),
        asset: AssetPath::parse(asset).unwrap(),
        kind: AuditKind::Command,
        command_id: CommandId(format!("command-{seq}")),
        command: "set_speed".into(),
        requested: vec![("rpm".into(), Value::Float(1500.0))],
        origin: Origin::operator("ada"),
        state_version: 1,
        models: Vec::new(),
        verdict: Verdict::Accepted,
        applied: vec![("speed".into(), Value::Float(1500.0))],
        reason: String::new(),
    }
}

#[test]
fn mirror_applies_each_entry_once_and_survives_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("mirror.redb");
    let store = MirrorStore::open(&path).unwrap();
    let mut command = reported(ASSET, 3, 42.0);
    command.audit.push(audit_record(ASSET, 7, 3000));
    let entries = vec![
        (1, vec![MirrorUpdate::baseline(report(ASSET, 1))]),
        (2, vec![reported(ASSET, 2, 40.0)]),
        (4, vec![command]),
    ];
    let (acked, applied, skipped) = store.apply_batch(EDGE, &entries, 4).unwrap();
    assert_eq!((acked, applied, skipped), (4, 3, 0));
    // A replay after a reconnect: everything is at or below the acknowledged sequence.
    let (acked, applied, skipped) = store.apply_batch(EDGE, &entries, 4).unwrap();
    assert_eq!((acked, applied, skipped), (4, 0, 3));
    let stats = store.stats();
    assert_eq!((stats.applied, stats.duplicates, stats.stale), (3, 3, 0));

    let row = store.get(ASSET).unwrap();
    assert_eq!(row.owner, EDGE);
    assert_eq!(row.report.version, 3);
    assert_eq!(row.report.value("temperature"), Some(42.0));
    let link = store.link(EDGE).unwrap();
    assert_eq!((link.acked, link.head, link.behind_since), (4, 4, None));
    drop(store);

    let store = MirrorStore::open(&path).unwrap();
    let row = store.get(ASSET).unwrap();
    assert_eq!((row.report.version, row.owner.as_str()), (3, EDGE));
    assert_eq!(row.report.value("temperature"), Some(42.0));
    let link = store.link(EDGE).unwrap();
    assert_eq!(link.acked, 4);
    assert!(!link.connected);
    assert!(
        link.behind_since.is_some(),
        "a disconnected edge may have moved on"
    );
    let audit = store.audit("acme", Timestamp(0), Timestamp(i64::MAX), 10);
    assert_eq!(audit.len(), 1);
    assert_eq!(audit[0].0, EDGE);
    assert_eq!(audit[0].1.seq, 7);
    // The next entry applies on top of what was persisted.
    let (acked, applied, _) = store
        .apply_batch(EDGE, &[(5, vec![reported(ASSET, 4, 43.0)])], 5)
        .unwrap();
    assert_eq!((acked, applied), (5, 1));
}

/// A report with something in every part, so a round trip through the rows as memory
/// and the file hold them covers the whole layout.
fn rich_report(asset: &str, version: u64) -> TwinReport {
    let sample = |channel: u16, value: f64, quality: Quality| Sample {
        channel: ChannelId(channel),
        value,
        source_time: Timestamp(1_700_000_000_000_000),
        receive_time: Timestamp(1_700_000_000_000_250),
        quality,
        source: SourceId(3),
        epoch: 2,
        seq: 123_456,
        stamped: true,
    };
    let mut report = report(asset, version);
    report.run_state = RunState::Tripped;
    report.reported = vec![
        ReportedValue {
            channel: "temperature".into(),
            unit: "degC".into(),
            sample: Some(sample(0, 71.25, Quality::Good)),
            condition: None,
        },
        ReportedValue {
            channel: "pressure".into(),
            unit: "bar".into(),
            sample: Some(sample(1, 3.5, Quality::Stale)),
            condition: Some(ChannelCondition {
                quality: Quality::Stale,
                reason: "no reading for 30 s (max age 30 s)".into(),
                since: Timestamp(1_500),
            }),
        },
    ];
    report.desired = vec![(
        "speed".into(),
        DesiredValue {
            value: Value::Float(1500.0),
            set_at: Timestamp(2_000),
            delivery: Delivery {
                state: DeliveryState::Delivered,
                version: version - 1,
                command_id: Some(CommandId("command-1".into())),
                command: "set_speed".into(),
                origin: Some(Origin::operator("ada")),
                safety: false,
                deadline: Some(Timestamp(9_000)),
                at: Timestamp(2_500),
                by: "opcua:plc-1".into(),
                reason: String::new(),
            },
            agrees: None,
        },
    )];
    report.derived = vec![DerivedValue {
        name: "rul_hours".into(),
        model: "bearing-wear".into(),
        value: Some(812.5),
        confidence: 0.8,
        at: Timestamp(2_800),
    }];
    report.alarms = vec![Alarm::new(
        "stale:pressure",
        Severity::Warning,
        "pressure: no reading for 30 s",
        "freshness",
        Timestamp(1_500),
    )];
    report.trips = vec![Trip {
        governor: "overtemp".into(),
        reason: "temperature above 95".into(),
        at: Timestamp(2_900),
    }];
    report.health = 0.75;
    report.models = vec![ModelInfo {
        name: "bearing-wear".into(),
        version: "1.2.0".into(),
        confidence: 0.8,
    }];
    report.updated_at = Timestamp(3_000);
    report
}

#[test]
fn mirror_row_reads_back_unchanged_after_apply_and_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("mirror.redb");
    let store = MirrorStore::open(&path).unwrap();
    // A baseline, then a change on top of it: the row is decoded, changed and encoded.
    let updates = [
        MirrorUpdate::baseline(rich_report(ASSET, 5)),
        reported(ASSET, 6, 72.5),
    ];
    let mut expected = None;
    for update in &updates {
        assert!(update.apply(&mut expected));
    }
    let expected = expected.unwrap();
    let entries: Vec<(u64, Vec<MirrorUpdate>)> = updates
        .iter()
        .zip(1..)
        .map(|(update, seq)| (seq, vec![update.clone()]))
        .collect();
    let (acked, applied, _) = store.apply_batch(EDGE, &entries, 2).unwrap();
    assert_eq!((acked, applied), (2, 2));

    let row = store.get(ASSET).unwrap();
    assert_eq!(row.report, expected);
    assert_eq!(row.owner, EDGE);
    let listed = store.list("acme/plant-a");
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0].report, expected);
    assert_eq!(listed[0].received_at, row.received_at);
    drop(store);

    // The file holds the row as it always did: postcard (owner, received_at, report).
    {
        use redb::ReadableDatabase;
        let db = redb::Database::open(&path).unwrap();
        let txn = db.begin_read().unwrap();
        let table = txn.open_table(ROWS).unwrap();
        let value = table.get(ASSET).unwrap().unwrap();
        let (owner, received_at, report): (String, Timestamp, TwinReport) =
            postcard::from_bytes(value.value()).unwrap();
        assert_eq!((owner.as_str(), received_at), (EDGE, row.received_at));
        assert_eq!(report, expected);
    }

    let store = MirrorStore::open(&path).unwrap();
    let reopened = store.get(ASSET).unwrap();
    assert_eq!(reopened.report, expected);
    assert_eq!(reopened.owner, EDGE);
    assert_eq!(reopened.received_at, row.received_at);
    // The version guard works on the loaded row: an older baseline is refused, a newer
    // change applies on top of what was loaded.
    let (_, applied, _) = store
        .apply_batch(
            EDGE,
            &[
                (3, vec![MirrorUpdate::baseline(rich_report(ASSET, 6))]),
                (4, vec![reported(ASSET, 7, 73.0)]),
            ],
            4,
        )
        .unwrap();
    assert_eq!(applied, 1);
    assert_eq!(store.stats().stale, 1);
    let mut later = Some(expected);
    assert!(reported(ASSET, 7, 73.0).apply(&mut later));
    assert_eq!(store.get(ASSET).unwrap().report, later.unwrap());
}

#[test]
fn mirror_refuses_stale_and_rowless_updates_but_keeps_their_audit() {
    let dir = tempfile::tempdir().unwrap();
    let store = MirrorStore::open(&dir.path().join("mirror.redb")).unwrap();
    // No row yet and not a baseline: the version guard refuses; its audit still lands.
    let mut update = reported(ASSET, 5, 40.0);
    update.audit.push(audit_record(ASSET, 1, 10));
    let (acked, applied, skipped) = store.apply_batch(EDGE, &[(1, vec![update])], 1).unwrap();
    assert_eq!((acked, applied, skipped), (1, 0, 0));
    assert!(store.get(ASSET).is_none());
    assert_eq!(store.stats().stale, 1);
    assert_eq!(
        store.audit(ASSET, Timestamp(0), Timestamp(100), 10).len(),
        1
    );
}

#[test]
fn mirror_replay_of_a_merged_entry_ends_with_the_same_row() {
    let dir = tempfile::tempdir().unwrap();
    let store = MirrorStore::open(&dir.path().join("mirror.redb")).unwrap();
    let trip = Trip {
        governor: "overtemp".into(),
        reason: "temperature above 95".into(),
        at: Timestamp(2000),
    };
    let mut tripped = reported(ASSET, 2, 99.0);
    tripped.changes.push(TwinChange::Tripped(trip.clone()));
    tripped.audit.push(audit_record(ASSET, 1, 2000));
    let later = reported(ASSET, 3, 97.0);
    store
        .apply_batch(
            EDGE,
            &[
                (1, vec![MirrorUpdate::baseline(report(ASSET, 1))]),
                (2, vec![tripped.clone()]),
            ],
            2,
        )
        .unwrap();
    // The edge compacted entries 2..=3 into one while entry 2 was in flight: the
    // merged entry repeats the trip and the audit record.
    let mut merged = tripped;
    merged.merge(later);
    store.apply_batch(EDGE, &[(3, vec![merged])], 3).unwrap();
    let row = store.get(ASSET).unwrap().report;
    assert_eq!(row.version, 3);
    assert_eq!(row.value("temperature"), Some(97.0));
    assert_eq!(row.trips, vec![trip]);
    assert_eq!(
        store
            .audit(ASSET, Timestamp(0), Timestamp(i64::MAX), 10)
            .len(),
        1
    );
}

#[test]
fn mirror_audit_is_ordered_by_time_and_pages_by_cursor() {
    let dir = tempfile::tempdir().unwrap();
    let store = MirrorStore::open(&dir.path().join("mirror.redb")).unwrap();
    let other = "acme/plant-a/line-10/press-9";
    let mut a = reported(ASSET, 1, 1.0);
    a.audit = vec![audit_record(ASSET, 1, 300), audit_record(ASSET, 2, 100)];
    let mut b = reported(other, 1, 1.0);
    b.audit = vec![audit_record(other, 5, 200), audit_record(other, 6, 400)];
    store.apply_batch(EDGE, &[(1, vec![a])], 1).unwrap();
    store.apply_batch("edge-b", &[(1, vec![b])], 1).unwrap();

    let all = store.audit("acme/plant-a", Timestamp(0), Timestamp(1000), 10);
    let times: Vec<i64> = all.iter().map(|(_, r)| r.at.0).collect();
    assert_eq!(times, vec![100, 200, 300, 400]);
    // Segment-wise: `line-1` does not cover `line-10`.
    let line = store.audit("acme/plant-a/line-1", Timestamp(0), Timestamp(1000), 10);
    assert_eq!(line.len(), 2);
    assert!(line.iter().all(|(owner, _)| owner == EDGE));
    // The time range is inclusive.
    assert_eq!(
        store
            .audit("acme", Timestamp(200), Timestamp(300), 10)
            .len(),
        2
    );

    let mut pages = Vec::new();
    let mut cursor: Option<AuditCursor> = None;
    loop {
        let page = store.audit_after(
            "acme",
            (Timestamp(0), Timestamp(1000)),
            &[],
            cursor.as_ref(),
            3,
        );
        let Some((owner, last)) = page.last() else {
            break;
        };
        cursor = Some(AuditCursor::of(owner, last));
        pages.push(page.iter().map(|(_, r)| r.at.0).collect::<Vec<_>>());
    }
    assert_eq!(pages, vec![vec![100, 200, 300], vec![400]]);
}

#[test]
fn mirror_reads_the_leading_fields_of_an_audit_record() {
    let record = audit_record(ASSET, 77, 123_456);
    let bytes = postcard::to_stdvec(&record).unwrap();
    let (head, _): (AuditHead, _) = postcard::take_from_bytes(&bytes).unwrap();
    assert_eq!((head.seq, head.at), (77, Timestamp(123_456)));
}

#[test]
fn mirror_lag_runs_from_the_first_unacknowledged_head() {
    let dir = tempfile::tempdir().unwrap();
    let store = MirrorStore::open(&dir.path().join("mirror.redb")).unwrap();
    assert_eq!(store.lag(EDGE), Duration::ZERO);
    let seq = 1;
    let baseline = MirrorUpdate::baseline(report(ASSET, 1));
    // The edge says it is at 10 while the mirror holds 1.
    store
        .apply_batch(EDGE, &[(seq, vec![baseline])], 10)
        .unwrap();
    let behind = store.link(EDGE).unwrap().behind_since.unwrap();
    std::thread::sleep(Duration::from_millis(5));
    assert!(store.lag(EDGE) >= Duration::from_millis(5));
    // Progress short of the first head seen keeps the older time.
    store.apply_batch(EDGE, &[(5, vec![])], 12).unwrap();
    assert_eq!(store.link(EDGE).unwrap().behind_since, Some(behind));
    // Past it, the time of the next head seen counts.
    store.apply_batch(EDGE, &[(10, vec![])], 12).unwrap();
    let later = store.link(EDGE).unwrap().behind_since.unwrap();
    assert!(later > behind);
    store.apply_batch(EDGE, &[(12, vec![])], 12).unwrap();
    assert_eq!(store.link(EDGE).unwrap().behind_since, None);
    assert_eq!(store.lag(EDGE), Duration::ZERO);
}

/// Opens a replication stream to `cloud` as `node` and sends `messages`; returns the
/// answers up to the end of the stream, and its final status.
async fn converse(
    cloud: &TestCloud,
    node: &str,
    messages: Vec<proto::ReplicateRequest>,
) -> (Vec<u64>, Option<tonic::Status>) {
    let mut client = Transport::plaintext(CLUSTER, node)
        .client(cloud.addr)
        .unwrap();
    let (requests, outgoing) = tokio::sync::mpsc::channel(16);
    for message in messages {
        requests.send(message).await.unwrap();
    }
    let call = async {
        let mut acks = Vec::new();
        let mut responses = match client.replicate(ReceiverStream::new(outgoing)).await {
            Ok(response) => response.into_inner(),
            Err(status) => return (acks, Some(status)),
        };
        loop {
            match responses.message().await {
                Ok(Some(answer)) => acks.push(answer.acked),
                Ok(None) => return (acks, None),
                Err(status) => return (acks, Some(status)),
            }
        }
    };
    let result = tokio::time::timeout(Duration::from_secs(10), call)
        .await
        .expect("the cloud node answers");
    drop(requests);
    result
}

fn hello(node: &str, format: u32, head: u64) -> proto::ReplicateRequest {
    proto::ReplicateRequest {
        kind: Some(Kind::Hello(proto::ReplicateHello {
            node_id: node.into(),
            format,
            head,
        })),
    }
}

fn batch(entries: Vec<(u64, Vec<u8>)>, head: u64) -> proto::ReplicateRequest {
    proto::ReplicateRequest {
        kind: Some(Kind::Batch(proto::OutboxBatch {
            entries: entries
                .into_iter()
                .map(|(seq, updates)| proto::OutboxEntry { seq, updates })
                .collect(),
            head,
        })),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mirror_refuses_garbage_and_changes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let cloud = TestCloud::start(
        &dir.path().join("mirror.redb"),
        "127.0.0.1:0".parse().unwrap(),
    )
    .await;
    let good = postcard::to_stdvec(&vec![MirrorUpdate::baseline(report(ASSET, 1))]).unwrap();

    // Garbage bytes in a batch (after a good entry of the same batch): nothing of the
    // batch applies and the stream ends with INVALID_ARGUMENT.
    let (acks, status) = converse(
        &cloud,
        EDGE,
        vec![
            hello(EDGE, REPLICATION_FORMAT, 2),
            batch(vec![(1, good.clone()), (2, vec![0xff; 32])], 2),
            batch(vec![(3, good.clone())], 3),
        ],
    )
    .await;
    let status = status.expect("the stream fails");
    assert_eq!(status.code(), tonic::Code::InvalidArgument, "{status:?}");
    assert!(
        status.message().contains("outbox entry 2"),
        "{}",
        status.message()
    );
    assert_eq!(acks, vec![0], "only the hello is answered");
    assert!(cloud.store.is_empty());
    assert_eq!(cloud.store.link(EDGE).unwrap().acked, 0);
    assert_eq!(cloud.store.stats().commits, 0);
    // The link is free again.
    wait_until_disconnected(&cloud).await;

    // An unknown payload format.
    let unknown = REPLICATION_FORMAT + 1;
    let (acks, status) = converse(&cloud, EDGE, vec![hello(EDGE, unknown, 1)]).await;
    let status = status.expect("the stream fails");
    assert_eq!(status.code(), tonic::Code::InvalidArgument);
    assert!(
        status.message().contains(&format!("format {unknown}")),
        "{}",
        status.message()
    );
    assert!(acks.is_empty());

    // No caller node id.
    let (_, status) = converse(&cloud, "", vec![hello("", REPLICATION_FORMAT, 1)]).await;
    assert_eq!(
        status.expect("the stream fails").code(),
        tonic::Code::InvalidArgument
    );

    // A batch before the hello.
    let (_, status) = converse(&cloud, EDGE, vec![batch(vec![(1, good.clone())], 1)]).await;
    assert_eq!(
        status.expect("the stream fails").code(),
        tonic::Code::InvalidArgument
    );

    // Entries out of order.
    let (_, status) = converse(
        &cloud,
        EDGE,
        vec![
            hello(EDGE, REPLICATION_FORMAT, 3),
            batch(vec![(3, good.clone()), (2, good.clone())], 3),
        ],
    )
    .await;
    assert_eq!(
        status.expect("the stream fails").code(),
        tonic::Code::InvalidArgument
    );
    assert!(cloud.store.is_empty());

    // A well-formed stream still works afterwards.
    let (requests, outgoing) = tokio::sync::mpsc::channel(4);
    requests
        .send(hello(EDGE, REPLICATION_FORMAT, 1))
        .await
        .unwrap();
    requests.send(batch(vec![(1, good)], 1)).await.unwrap();
    let mut client = Transport::plaintext(CLUSTER, EDGE)
        .client(cloud.addr)
        .unwrap();
    let mut responses = client
        .replicate(ReceiverStream::new(outgoing))
        .await
        .unwrap()
        .into_inner();
    let mut answers = Vec::new();
    for _ in 0..2 {
        let answer = tokio::time::timeout(Duration::from_secs(10), responses.message())
            .await
            .expect("the cloud node answers")
            .unwrap()
            .expect("the stream stays open");
        answers.push(answer.acked);
    }
    assert_eq!(answers, vec![0, 1]);
    assert_eq!(cloud.store.get(ASSET).unwrap().report.version, 1);
    drop(requests);
    cloud.stop().await;
}

async fn wait_until_disconnected(cloud: &TestCloud) {
    let store = cloud.store.clone();
    doppel_testkit::wait_until(
        "the refused stream is closed",
        Duration::from_secs(5),
        || std::future::ready(store.link(EDGE).is_some_and(|link| !link.connected)),
    )
    .await;
}

/// A burst far larger than a watch's queue, to a watcher that reads only after it:
/// the watch is not ended; the twins it fell behind on arrive as their state now,
/// each twin's versions never go back, and every twin ends at its last version.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fleet_watch_that_keeps_reading_survives_a_burst_coalesced() {
    use doppel_proto::v1::watch_twins_response::Event;
    use tokio_stream::StreamExt;

    let dir = tempfile::tempdir().unwrap();
    let store = MirrorStore::open(&dir.path().join("mirror.redb")).unwrap();
    let twins: Vec<String> = (0..50)
        .map(|n| format!("acme/plant-a/line-1/press-{n}"))
        .collect();
    let baselines: Vec<MirrorUpdate> = twins
        .iter()
        .map(|asset| MirrorUpdate::baseline(report(asset, 1)))
        .collect();
    store.apply_batch(EDGE, &[(1, baselines)], 1).unwrap();
    let fleet = crate::fleet::FleetApi::new(store.clone(), 4);
    let mut stream = fleet
        .watch_twins(&proto::WatchTwinsRequest::default())
        .unwrap();

    // 50 twins × 60 versions, in batches, while the watcher reads nothing.
    let rounds = 60u64;
    for version in 2..2 + rounds {
        let updates: Vec<MirrorUpdate> = twins
            .iter()
            .map(|asset| reported(asset, version, version as f64))
            .collect();
        store
            .apply_batch(EDGE, &[(version, updates)], version)
            .unwrap();
    }
    let last = 1 + rounds;

    let mut latest: std::collections::HashMap<String, u64> = Default::default();
    let mut coalesced = 0;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while latest.len() < twins.len() || latest.values().any(|v| *v < last) {
        let message = tokio::time::timeout_at(deadline, stream.next())
            .await
            .expect("every twin reaches its last version")
            .expect("the watch goes on")
            .expect("the watch is not ended");
        let (asset, version) = match message.event.unwrap() {
            Event::Snapshot(twin) => (twin.asset_path, twin.version),
            Event::SnapshotComplete(_) => continue,
            Event::Change(change) => (change.asset_path, change.version),
            Event::Coalesced(twin) => {
                coalesced += 1;
                (twin.asset_path, twin.version)
            }
        };
        let before = latest.insert(asset.clone(), version).unwrap_or(0);
        assert!(
            version >= before,
            "{asset}: version {version} after {before}"
        );
    }
    assert!(
        coalesced > 0,
        "the burst overran the queue and was coalesced"
    );
}
