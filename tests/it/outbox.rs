//! The replication outbox on a real redb file: every durable change of a replicating
//! node is in the outbox, committed with its journal batch, and replaying the outbox
//! rebuilds each twin's state; compaction keeps latest values and every audit record.

use std::time::Duration;

use doppel::{AuditKind, Command, Origin, Value};
use doppel_runtime::internal::TwinsInternals;
use doppel_runtime::journal::decode_updates;
use doppel_runtime::twin::{MirrorUpdate, TwinReport};

use crate::support::{ingest_durable, press, reading, settings, start_with};

fn replicating() -> doppel::RuntimeSettings {
    let mut settings = settings();
    settings.replicate = true;
    settings
}

/// Every update in the outbox after `after`, in order.
pub(crate) fn outbox_updates(twins: &doppel::Twins, after: u64) -> Vec<MirrorUpdate> {
    let entries = twins
        .store()
        .outbox_read(after, usize::MAX, usize::MAX)
        .unwrap();
    entries
        .iter()
        .flat_map(|entry| decode_updates(&entry.bytes).unwrap())
        .collect()
}

/// What a mirror can know of a report: everything but model infos and units.
fn comparable(report: &TwinReport) -> String {
    format!(
        "v{} reported {:?} desired {:?} derived {:?} alarms {:?} trips {} {:?} health {}",
        report.version,
        report
            .reported
            .iter()
            .map(|r| (&r.channel, r.sample.map(|s| s.value)))
            .collect::<Vec<_>>(),
        report
            .desired
            .iter()
            .map(|(n, d)| (n, d.value))
            .collect::<Vec<_>>(),
        report
            .derived
            .iter()
            .map(|d| (&d.name, d.value))
            .collect::<Vec<_>>(),
        report.alarms.iter().map(|a| &a.code).collect::<Vec<_>>(),
        report.trips.len(),
        report.run_state,
        report.health,
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn outbox_replays_to_the_twins_state_and_compacts_without_losing_audit() {
    let dir = tempfile::tempdir().unwrap();
    let runtime = start_with(dir.path(), replicating(), |b| b).await;
    let twins = runtime.twins().clone();
    twins.resync().durable().await.unwrap();
    let source = twins.source("test").unwrap();
    let press1 = press(1);
    let press3 = press(3);
    for seq in 1..=40 {
        ingest_durable(
            &twins,
            &press1,
            "temperature",
            reading(50.0 + seq as f64 * 0.1, source, seq),
        )
        .await;
        ingest_durable(&twins, &press3, "vibration", reading(2.0, source, seq)).await;
    }
    let command = Command::new(press1.clone(), "set_speed", Origin::operator("ann"))
        .param("rpm", Value::Float(1500.0));
    twins.command(command).await.unwrap();
    // A trip: a safety action and its audit record.
    ingest_durable(&twins, &press3, "temperature", reading(130.0, source, 41)).await;
    tokio::time::timeout(Duration::from_secs(5), async {
        while twins.report(&press3).await.unwrap().trips.is_empty() {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    })
    .await
    .unwrap();
    twins.flush().await.unwrap();

    let head = *twins.outbox_head().borrow();
    assert_eq!(head, twins.store().outbox_head().unwrap());
    let updates = outbox_updates(&twins, 0);
    for path in [&press1, &press3, &press(2)] {
        let mut row = None;
        for update in updates.iter().filter(|u| &u.asset == path) {
            update.apply(&mut row);
        }
        let row = row.unwrap_or_else(|| panic!("{path} has no baseline in the outbox"));
        let report = twins.report(path).await.unwrap();
        assert_eq!(comparable(&row), comparable(&report), "{path}");
    }
    let audit: Vec<_> = updates.iter().flat_map(|u| u.audit.iter()).collect();
    assert_eq!(audit.len(), 2, "one command, one safety action");
    assert!(
        audit
            .iter()
            .any(|a| a.kind == AuditKind::Command && a.seq > 0)
    );
    assert!(
        audit
            .iter()
            .any(|a| a.kind == AuditKind::SafetyAction && a.seq > 0)
    );

    // Compaction leaves the newest entry, merges the rest per twin, keeps all audit.
    let before = twins.store().outbox_len().unwrap();
    assert!(before > 10, "{before} entries");
    let done = twins.store().outbox_compact(2).unwrap();
    assert_eq!(done.entries, before - 1);
    assert_eq!(twins.store().outbox_len().unwrap(), 2);
    assert!(done.updates_after <= 3, "{done:?}");
    let compacted = outbox_updates(&twins, 0);
    assert_eq!(compacted.iter().map(|u| u.audit.len()).sum::<usize>(), 2);
    for path in [&press1, &press3] {
        let mut row = None;
        for update in compacted.iter().filter(|u| &u.asset == path) {
            update.apply(&mut row);
        }
        let report = twins.report(path).await.unwrap();
        assert_eq!(
            comparable(&row.unwrap()),
            comparable(&report),
            "{path} after compaction"
        );
    }

    // A link's acknowledgement trims what every link has.
    twins.store().outbox_register("cloud-1").unwrap();
    twins.store().outbox_ack("cloud-1", head).unwrap();
    assert_eq!(twins.store().outbox_len().unwrap(), 0);
    assert_eq!(twins.store().outbox_acked("cloud-1").unwrap(), head);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_that_does_not_replicate_writes_no_outbox() {
    let dir = tempfile::tempdir().unwrap();
    let runtime = start_with(dir.path(), settings(), |b| b).await;
    let twins = runtime.twins().clone();
    let source = twins.source("test").unwrap();
    ingest_durable(&twins, &press(1), "temperature", reading(50.0, source, 1)).await;
    assert_eq!(twins.store().outbox_len().unwrap(), 0);
    assert_eq!(twins.store().outbox_head().unwrap(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_outbox_sequence_survives_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let first = {
        let runtime = start_with(dir.path(), replicating(), |b| b).await;
        let twins = runtime.twins().clone();
        let source = twins.source("test").unwrap();
        ingest_durable(&twins, &press(1), "temperature", reading(50.0, source, 1)).await;
        let head = twins.store().outbox_head().unwrap();
        drop(twins);
        runtime.shutdown().await;
        head
    };
    assert!(first > 0);
    let runtime = start_with(dir.path(), replicating(), |b| b).await;
    let twins = runtime.twins().clone();
    let source = twins.source("test").unwrap();
    ingest_durable(&twins, &press(1), "temperature", reading(51.0, source, 2)).await;
    assert!(twins.store().outbox_head().unwrap() > first);
    let updates = outbox_updates(&twins, first);
    assert!(
        updates
            .iter()
            .any(|u| u.asset == press(1) && u.full.is_none())
    );
}
