//! Edge to cloud, for real: an edge runtime with its redb outbox, a replication link
//! over gRPC on loopback, and a cloud node's mirror store in its own redb file.
//!
//! A mirror row equals the edge's `Twins::report` except for what a mirror cannot
//! know: a channel's unit when its first value came after the baseline, a sample's
//! receive time, source and source sequence, models' versions and confidence (only
//! baselines carry them), a desired value's `set_at` (the mirror stamps the change's
//! time), `updated_at`, and a derived value's confidence and time when only they moved
//! (the edge replicates a derived value when its value moves). The tests compare
//! everything else.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use doppel_actors::Runtime;
use doppel_runtime::internal::TwinsInternals;
use doppel_runtime::twin::{ChannelTarget, TwinReport, Twins};
use doppel_runtime::{AssetPath, AuditKind, Command, Origin, Timestamp, Value, Verdict};
use doppel_testkit::wait_until;

use super::{OutboxKeeper, ReplicationLink};
use crate::config::OutboxSettings;
use crate::mirror::MirrorStore;
use crate::mirror::testing::{CLOUD, CLUSTER, EDGE, TestCloud, press, reading, start_edge};
use crate::transport::Transport;

const WAIT: Duration = Duration::from_secs(30);

fn any_port() -> SocketAddr {
    "127.0.0.1:0".parse().unwrap()
}

fn start_link(twins: &Twins, addr: SocketAddr, prefixes: &[&str]) -> ReplicationLink {
    ReplicationLink::start(
        twins.clone(),
        Transport::plaintext(CLUSTER, EDGE),
        CLOUD.into(),
        addr,
        prefixes.iter().map(|p| p.to_string()).collect(),
        OutboxSettings::default(),
    )
}

fn presses() -> Vec<AssetPath> {
    (1..=3).map(press).collect()
}

/// Ingests `rounds` rounds of one vibration and one temperature reading per press,
/// one round per call (one twin message, so one mirror update, per press and round),
/// and waits until all are durable.
async fn ingest_rounds(twins: &Twins, rounds: u64, first_seq: u64) -> u64 {
    let targets: Vec<(ChannelTarget, ChannelTarget)> = presses()
        .iter()
        .map(|path| {
            (
                twins.target(path, "vibration").unwrap(),
                twins.target(path, "temperature").unwrap(),
            )
        })
        .collect();
    let mut seq = first_seq;
    let mut receipts = Vec::new();
    for round in 0..rounds {
        let mut readings = Vec::new();
        for (vibration, temperature) in &targets {
            seq += 1;
            readings.push((*vibration, reading(2.0 + (round % 50) as f64 * 0.1, seq)));
            readings.push((*temperature, reading(40.0 + (round % 30) as f64, seq)));
        }
        let batch = twins.ingest_batch(readings).await.unwrap();
        assert!(batch.rejected.is_empty(), "{:?}", batch.rejected);
        receipts.push(batch.receipt);
    }
    for receipt in receipts {
        receipt.durable().await.unwrap();
    }
    seq
}

/// Latches the overtemp trip of press-1 (a safety action) and sends a clamped command.
async fn trip_and_command(twins: &Twins, seq: u64) -> Command {
    twins
        .ingest(&press(1), "temperature", reading(99.0, seq))
        .await
        .unwrap()
        .durable()
        .await
        .unwrap();
    let command = Command::new(press(2), "set_speed", Origin::operator("ada"))
        .param("rpm", Value::Float(2600.0));
    let outcome = twins.command(command.clone()).await.unwrap();
    assert!(
        matches!(outcome.verdict, Verdict::Clamped { .. }),
        "{:?}",
        outcome.verdict
    );
    command
}

/// Waits until the mirror holds every press at the edge's version.
async fn wait_converged(twins: &Twins, mirror: &MirrorStore) {
    twins.flush().await.unwrap();
    wait_until("the mirror converges", WAIT, || async {
        for path in presses() {
            let edge = twins.report(&path).await.unwrap();
            if mirror.get(path.as_str()).map(|row| row.report.version) != Some(edge.version) {
                return false;
            }
        }
        true
    })
    .await;
}

/// Asserts that every mirror row equals its twin (as far as a mirror can know).
async fn assert_mirrors(twins: &Twins, mirror: &MirrorStore) {
    for path in presses() {
        let edge = twins.report(&path).await.unwrap();
        let row = mirror.get(path.as_str()).expect("a mirror row");
        assert_eq!(row.owner, EDGE);
        assert_same(&edge, &row.report);
    }
}

fn assert_same(edge: &TwinReport, mirror: &TwinReport) {
    let path = &edge.asset;
    assert_eq!(mirror.asset, edge.asset);
    assert_eq!(mirror.version, edge.version, "{path} version");
    assert_eq!(mirror.run_state, edge.run_state, "{path} run state");
    assert_eq!(
        mirror.health.to_bits(),
        edge.health.to_bits(),
        "{path} health"
    );
    for value in &edge.reported {
        let Some(sample) = &value.sample else {
            continue;
        };
        let mirrored = mirror
            .reported
            .iter()
            .find(|r| r.channel == value.channel)
            .and_then(|r| r.sample.as_ref())
            .unwrap_or_else(|| panic!("{path} {} is mirrored", value.channel));
        assert_eq!(
            (mirrored.value, mirrored.quality, mirrored.source_time),
            (sample.value, sample.quality, sample.source_time),
            "{path} {}",
            value.channel
        );
    }
    let values = |report: &TwinReport| -> Vec<(String, Value)> {
        report
            .desired
            .iter()
            .map(|(name, d)| (name.clone(), d.value))
            .collect()
    };
    assert_eq!(values(mirror), values(edge), "{path} desired");
    let derived = |report: &TwinReport| -> Vec<(String, Option<u64>)> {
        report
            .derived
            .iter()
            .map(|d| (d.name.to_string(), d.value.map(f64::to_bits)))
            .collect()
    };
    assert_eq!(derived(mirror), derived(edge), "{path} derived");
    assert_eq!(mirror.alarms, edge.alarms, "{path} alarms");
    assert_eq!(mirror.trips, edge.trips, "{path} trips");
}

/// Every audit record of the edge, as (seq, kind), sorted.
fn edge_audit(twins: &Twins) -> Vec<(u64, AuditKind)> {
    let mut records: Vec<(u64, AuditKind)> = twins
        .audit(
            &AssetPath::parse("acme").unwrap(),
            Timestamp(0),
            Timestamp(i64::MAX),
            100_000,
        )
        .unwrap()
        .into_iter()
        .map(|r| (r.seq, r.kind))
        .collect();
    records.sort_by_key(|(seq, _)| *seq);
    records
}

fn mirror_audit(mirror: &MirrorStore) -> Vec<(u64, AuditKind)> {
    let mut records: Vec<(u64, AuditKind)> = mirror
        .audit("acme", Timestamp(0), Timestamp(i64::MAX), 100_000)
        .into_iter()
        .map(|(owner, r)| {
            assert_eq!(owner, EDGE);
            (r.seq, r.kind)
        })
        .collect();
    records.sort_by_key(|(seq, _)| *seq);
    records
}

/// Mirror updates and twin changes in the outbox entries after `after`.
fn outbox_updates(twins: &Twins, after: u64) -> (u64, u64) {
    let mut updates = 0;
    let mut changes = 0;
    for entry in twins
        .store()
        .outbox_read(after, usize::MAX, usize::MAX)
        .unwrap()
    {
        for update in entry.updates().unwrap() {
            updates += 1;
            changes += update.changes.len() as u64;
        }
    }
    (updates, changes)
}

async fn wait_connected(link: &ReplicationLink, connected: bool) {
    wait_until(
        if connected {
            "the link connects"
        } else {
            "the link disconnects"
        },
        WAIT,
        || std::future::ready(link.status().connected == connected),
    )
    .await;
}

async fn wait_caught_up(link: &ReplicationLink) {
    wait_until("the link catches up", WAIT, || {
        let status = link.status();
        std::future::ready(status.connected && status.depth == 0)
    })
    .await;
}

async fn shutdown(link: ReplicationLink, cloud: TestCloud, runtime: Runtime) {
    link.stop().await;
    cloud.stop().await;
    runtime.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replication_mirror_row_equals_the_edge_twin() {
    let dir = tempfile::tempdir().unwrap();
    let runtime = start_edge(&dir.path().join("edge")).await;
    let twins = runtime.twins().clone();
    twins.resync().durable().await.unwrap();
    let cloud = TestCloud::start(&dir.path().join("mirror.redb"), any_port()).await;
    let link = start_link(&twins, cloud.addr, &[]);

    let seq = ingest_rounds(&twins, 200, 0).await;
    let command = trip_and_command(&twins, seq + 1).await;
    wait_converged(&twins, &cloud.store).await;
    assert_mirrors(&twins, &cloud.store).await;
    let tripped = cloud.store.get(press(1).as_str()).unwrap().report;
    assert!(!tripped.trips.is_empty(), "the trip is mirrored");
    let clamped = cloud.store.get(press(2).as_str()).unwrap().report;
    assert_eq!(clamped.desired("speed"), Some(Value::Float(2400.0)));

    // The command's audit record arrives with its verdict, and the safety action's.
    let mirrored = cloud.store.audit(
        "acme/plant-a/line-1",
        Timestamp(0),
        Timestamp(i64::MAX),
        100,
    );
    let record = mirrored
        .iter()
        .map(|(_, record)| record)
        .find(|record| record.command_id == command.id)
        .expect("the command's audit record is mirrored");
    assert_eq!(record.asset, press(2));
    assert!(matches!(record.verdict, Verdict::Clamped { .. }));
    assert!(
        mirrored
            .iter()
            .any(|(_, r)| r.kind == AuditKind::SafetyAction && r.asset == press(1))
    );
    assert_eq!(mirror_audit(&cloud.store), edge_audit(&twins));

    wait_caught_up(&link).await;
    let status = link.status();
    assert_eq!((status.peer.as_str(), status.reconnects), (CLOUD, 0));
    let state = cloud.store.link(EDGE).unwrap();
    assert!(state.connected);
    assert_eq!(state.acked, status.acked);
    assert_eq!(cloud.store.lag(EDGE), Duration::ZERO);
    shutdown(link, cloud, runtime).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replication_survives_a_cloud_restart_and_applies_each_update_once() {
    let dir = tempfile::tempdir().unwrap();
    let runtime = start_edge(&dir.path().join("edge")).await;
    let twins = runtime.twins().clone();
    // A second link that never acknowledges keeps every entry, to count them.
    twins.store().outbox_register("witness").unwrap();
    let start_head = twins.store().outbox_head().unwrap();
    twins.resync().durable().await.unwrap();
    let mirror_path = dir.path().join("mirror.redb");
    let cloud = TestCloud::start(&mirror_path, any_port()).await;
    let addr = cloud.addr;
    let link = start_link(&twins, addr, &[]);

    let seq = ingest_rounds(&twins, 300, 0).await;
    wait_converged(&twins, &cloud.store).await;
    let before_restart = cloud.store.stats();
    cloud.stop().await;
    wait_connected(&link, false).await;

    // The edge keeps working while its cloud node is away.
    let head_at_stop = twins.store().outbox_head().unwrap();
    let seq = ingest_rounds(&twins, 3000, seq).await;
    trip_and_command(&twins, seq + 1).await;
    twins.flush().await.unwrap();
    let (backlog_updates, backlog_changes) = outbox_updates(&twins, head_at_stop);
    assert!(link.status().depth > 0);

    let cloud = TestCloud::start(&mirror_path, addr).await;
    wait_connected(&link, true).await;
    let restarted = Instant::now();
    wait_converged(&twins, &cloud.store).await;
    let caught_up = restarted.elapsed();
    wait_caught_up(&link).await;
    assert_mirrors(&twins, &cloud.store).await;
    assert_eq!(mirror_audit(&cloud.store), edge_audit(&twins));

    // Every update in the outbox was applied or refused by the version guard exactly
    // once over both runs of the cloud node; replays were skipped as duplicates.
    let (total, _) = outbox_updates(&twins, start_head);
    let after_restart = cloud.store.stats();
    let applied = before_restart.applied + after_restart.applied;
    let stale = before_restart.stale + after_restart.stale;
    assert_eq!(
        applied + stale,
        total,
        "{before_restart:?} {after_restart:?}"
    );
    // The baselines of the resync met no row; everything after it applied.
    assert_eq!(stale, 0, "{before_restart:?} {after_restart:?}");
    let status = link.status();
    assert!(status.reconnects >= 1, "{status:?}");
    eprintln!(
        "replicated a backlog of {backlog_updates} updates ({backlog_changes} changes) in {caught_up:?} after reconnecting: {:.0} updates/s, {:.0} changes/s; duplicates skipped: {}, commits: {}",
        backlog_updates as f64 / caught_up.as_secs_f64(),
        backlog_changes as f64 / caught_up.as_secs_f64(),
        after_restart.duplicates,
        after_restart.commits,
    );
    shutdown(link, cloud, runtime).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replication_refills_a_cloud_that_lost_its_store() {
    let dir = tempfile::tempdir().unwrap();
    let runtime = start_edge(&dir.path().join("edge")).await;
    let twins = runtime.twins().clone();
    twins.resync().durable().await.unwrap();
    let cloud = TestCloud::start(&dir.path().join("mirror.redb"), any_port()).await;
    let addr = cloud.addr;
    let link = start_link(&twins, addr, &[]);
    let seq = ingest_rounds(&twins, 100, 0).await;
    wait_converged(&twins, &cloud.store).await;
    wait_caught_up(&link).await;
    cloud.stop().await;
    wait_connected(&link, false).await;

    // While it is away, the outbox holds what the lost store never received.
    let seq = ingest_rounds(&twins, 50, seq).await;
    let command = trip_and_command(&twins, seq + 1).await;
    twins.flush().await.unwrap();
    assert!(twins.store().outbox_len().unwrap() > 0);

    // It comes back with an empty store: it answers 0, below what the edge recorded.
    let cloud = TestCloud::start(&dir.path().join("mirror-new.redb"), addr).await;
    wait_converged(&twins, &cloud.store).await;
    wait_caught_up(&link).await;
    assert_mirrors(&twins, &cloud.store).await;
    // What the outbox still held was resent: the command's audit record arrives.
    let audit = cloud
        .store
        .audit("acme", Timestamp(0), Timestamp(i64::MAX), 1000);
    assert!(audit.iter().any(|(_, r)| r.command_id == command.id));
    // The deltas it held met no row; the baselines made the rows whole.
    assert!(cloud.store.stats().stale > 0);
    shutdown(link, cloud, runtime).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replication_compaction_while_disconnected_keeps_latest_values_and_audit() {
    let dir = tempfile::tempdir().unwrap();
    let runtime = start_edge(&dir.path().join("edge")).await;
    let twins = runtime.twins().clone();
    twins.resync().durable().await.unwrap();
    let settings = OutboxSettings {
        max_entries: 5,
        ..OutboxSettings::default()
    };
    let keeper =
        OutboxKeeper::start_with_interval(twins.clone(), settings, Duration::from_millis(50));
    let mirror_path = dir.path().join("mirror.redb");
    let cloud = TestCloud::start(&mirror_path, any_port()).await;
    let addr = cloud.addr;
    let link = start_link(&twins, addr, &[]);
    let seq = ingest_rounds(&twins, 50, 0).await;
    wait_converged(&twins, &cloud.store).await;
    cloud.stop().await;
    wait_connected(&link, false).await;

    // Commands, a trip, a reset and many samples while disconnected.
    let mut seq = ingest_rounds(&twins, 200, seq).await;
    let compactions_before = keeper.status().compactions;
    for rpm in [500.0, 900.0, 2600.0] {
        let command = Command::new(press(3), "set_speed", Origin::operator("ada"))
            .param("rpm", Value::Float(rpm));
        twins.command(command).await.unwrap();
        seq = ingest_rounds(&twins, 50, seq).await;
    }
    trip_and_command(&twins, seq + 1).await;
    // Cooled down, the trip may be reset, and latch again.
    let seq = ingest_rounds(&twins, 50, seq + 1).await;
    let reset = Command::new(press(1), "reset", Origin::operator("ada"));
    let outcome = twins.command(reset).await.unwrap();
    assert!(outcome.verdict.is_applied(), "{:?}", outcome.verdict);
    let seq = ingest_rounds(&twins, 100, seq).await;
    twins
        .ingest(&press(1), "temperature", reading(99.0, seq + 1))
        .await
        .unwrap()
        .durable()
        .await
        .unwrap();
    twins.flush().await.unwrap();
    wait_until("the keeper compacts the outbox", WAIT, || {
        let status = keeper.status();
        std::future::ready(status.compactions > compactions_before && status.entries <= 10)
    })
    .await;
    assert!(keeper.status().depth > 0);

    let cloud = TestCloud::start(&mirror_path, addr).await;
    wait_converged(&twins, &cloud.store).await;
    wait_caught_up(&link).await;
    assert_mirrors(&twins, &cloud.store).await;
    assert_eq!(
        cloud
            .store
            .get(press(3).as_str())
            .unwrap()
            .report
            .desired("speed"),
        Some(Value::Float(2400.0))
    );
    // Every audit record survived the compaction: commands, verdicts, safety actions.
    let audit = mirror_audit(&cloud.store);
    assert_eq!(audit, edge_audit(&twins));
    assert!(
        audit
            .iter()
            .filter(|(_, kind)| *kind == AuditKind::SafetyAction)
            .count()
            >= 2
    );
    wait_until("the keeper sees the outbox drained", WAIT, || {
        std::future::ready(keeper.status().depth == 0)
    })
    .await;
    keeper.stop().await;
    shutdown(link, cloud, runtime).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replication_sends_only_the_prefixes_of_the_link() {
    let dir = tempfile::tempdir().unwrap();
    let runtime = start_edge(&dir.path().join("edge")).await;
    let twins = runtime.twins().clone();
    twins.resync().durable().await.unwrap();
    let cloud = TestCloud::start(&dir.path().join("mirror.redb"), any_port()).await;
    let link = start_link(&twins, cloud.addr, &["acme/plant-a/line-2"]);
    ingest_rounds(&twins, 50, 0).await;
    twins.flush().await.unwrap();
    // The newest entries hold nothing for line-2 (press-1 only): the link still
    // catches up to the head, and the outbox is trimmed.
    let seq = 10_000;
    for n in 0..20 {
        twins
            .ingest(&press(1), "vibration", reading(3.0, seq + n))
            .await
            .unwrap()
            .durable()
            .await
            .unwrap();
    }
    let head = twins.store().outbox_head().unwrap();
    wait_until("the link acknowledges the head", WAIT, || {
        std::future::ready(link.status().acked >= head)
    })
    .await;
    let edge = twins.report(&press(3)).await.unwrap();
    assert_same(&edge, &cloud.store.get(press(3).as_str()).unwrap().report);
    assert_eq!(cloud.store.list("").len(), 1);
    assert_eq!(cloud.store.list("acme/plant-a/line-2").len(), 1);
    assert!(cloud.store.list("acme/plant-a/line-1").is_empty());
    wait_until("the outbox is trimmed", WAIT, || {
        std::future::ready(twins.store().outbox_len().unwrap() == 0)
    })
    .await;
    shutdown(link, cloud, runtime).await;
}
