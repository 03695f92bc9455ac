//! The kernel end to end on real redb files: samples, models, governors, commands,
//! what-if, audit, ordering and bad input.

use std::time::Duration;

use doppel::{
    AuditKind, Command, DeliveryOutcome, DeliveryReport, DeliveryState, Origin, OriginKind,
    Quality, Reading, RunState, SampleRejection, Severity, StartError, Timestamp, Value, Verdict,
};
use doppel_runtime::Error as KernelError;

use crate::support::{ingest_durable, press, reading, start, wait_until};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sample_to_state_to_derived_to_trip_to_audit() {
    let dir = tempfile::tempdir().unwrap();
    let runtime = start(dir.path()).await;
    let twins = runtime.twins().clone();
    let source = twins.source("test").unwrap();
    let mut actuations = twins.actuations();
    let press1 = press(1);

    ingest_durable(&twins, &press1, "temperature", reading(60.0, source, 1)).await;
    let report = twins.report(&press1).await.unwrap();
    assert_eq!(report.value("temperature"), Some(60.0));
    assert_eq!(report.version, 1);
    assert_eq!(report.run_state, RunState::Running);
    let steady = report
        .derived("temperature_steady_state")
        .expect("thermal model derived a steady state");
    assert!(
        (steady - (25.0 + 0.03 * 1200.0)).abs() < 1e-6,
        "steady state {steady}"
    );

    ingest_durable(&twins, &press1, "temperature", reading(121.5, source, 2)).await;
    let actuation = tokio::time::timeout(Duration::from_secs(5), actuations.recv())
        .await
        .unwrap()
        .unwrap();
    assert!(actuation.is_safety());
    assert_eq!(actuation.asset(), &press1);
    assert_eq!(actuation.command(), "stop");
    assert_eq!(
        actuation.values(),
        [("running".to_string(), Value::Bool(false))]
    );
    assert!(
        actuation.reason().contains("121.5"),
        "{}",
        actuation.reason()
    );

    let report = twins.report(&press1).await.unwrap();
    assert_eq!(report.run_state, RunState::Tripped);
    assert_eq!(report.desired("running"), Some(Value::Bool(false)));
    assert!(report.has_alarm("trip:overtemp"));
    assert_eq!(report.health, 0.0);
    assert_eq!(report.version, 3, "two samples and one safety action");

    let audit = twins
        .audit(&press1, Timestamp(0), Timestamp(i64::MAX), 100)
        .unwrap();
    assert_eq!(audit.len(), 1);
    let record = &audit[0];
    assert_eq!(record.kind, AuditKind::SafetyAction);
    assert_eq!(record.origin.kind, OriginKind::Safety);
    assert_eq!(record.origin.principal, "overtemp");
    assert_eq!(record.state_version, 2);
    assert_eq!(record.command, "stop");
    let model_names: Vec<_> = record.models.iter().map(|m| m.name.as_str()).collect();
    assert_eq!(model_names, ["ewma_anomaly", "thermal", "degradation"]);
    assert!(
        record
            .models
            .iter()
            .all(|m| !m.version.is_empty() && (0.0..=1.0).contains(&m.confidence))
    );

    // The trip survives a restart: it is durable state.
    drop(twins);
    runtime.shutdown().await;
    let runtime = start(dir.path()).await;
    let report = runtime.twins().report(&press1).await.unwrap();
    assert_eq!(report.run_state, RunState::Tripped);
    assert_eq!(report.version, 3);
    assert_eq!(report.value("temperature"), Some(121.5));
    runtime.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn commands_are_accepted_clamped_and_denied_with_reasons() {
    let dir = tempfile::tempdir().unwrap();
    let runtime = start(dir.path()).await;
    let twins = runtime.twins().clone();
    let press2 = press(2);
    let set_speed = |rpm: f64| {
        Command::new(press2.clone(), "set_speed", Origin::operator("ann"))
            .param("rpm", Value::Float(rpm))
    };

    let outcome = twins.command(set_speed(1500.0)).await.unwrap();
    assert_eq!(outcome.verdict, Verdict::Accepted);
    assert_eq!(
        outcome.applied,
        vec![("speed".to_string(), Value::Float(1500.0))]
    );

    let outcome = twins.command(set_speed(2900.0)).await.unwrap();
    let Verdict::Clamped { clamps } = &outcome.verdict else {
        panic!("{:?}", outcome.verdict)
    };
    assert_eq!(clamps[0].applied, Value::Float(2400.0));
    assert_eq!(clamps[0].governor, "envelope");
    assert!(clamps[0].reason.contains("2400"), "{}", clamps[0].reason);
    assert_eq!(
        twins.report(&press2).await.unwrap().desired("speed"),
        Some(Value::Float(2400.0))
    );

    let late = set_speed(1000.0).deadline(Timestamp::now().minus(Duration::from_secs(2)));
    let outcome = twins.command(late).await.unwrap();
    let Verdict::Denied { governor, reason } = &outcome.verdict else {
        panic!("{:?}", outcome.verdict)
    };
    assert_eq!(governor, "deadline");
    assert!(reason.contains("deadline passed"), "{reason}");

    // Automation needs two agreeing temperature sensors; they disagree.
    let source = twins.source("test").unwrap();
    ingest_durable(&twins, &press2, "temperature", reading(60.0, source, 1)).await;
    ingest_durable(&twins, &press2, "temperature_b", reading(70.0, source, 2)).await;
    let automatic = Command::new(press2.clone(), "set_speed", Origin::automation("mes"))
        .param("rpm", Value::Float(1000.0));
    let outcome = twins.command(automatic).await.unwrap();
    let Verdict::Denied { governor, reason } = &outcome.verdict else {
        panic!("{:?}", outcome.verdict)
    };
    assert_eq!(governor, "dual_sensor");
    assert!(reason.contains("temperature_b"), "{reason}");

    // Bad commands are typed errors, not verdicts.
    let unknown = Command::new(press2.clone(), "launch", Origin::operator("ann"));
    assert!(matches!(
        twins.command(unknown).await,
        Err(KernelError::UnknownCommand { .. })
    ));
    assert!(
        matches!(twins.command(set_speed(5000.0)).await, Err(KernelError::InvalidParam { ref param, .. }) if param == "rpm")
    );
    let missing = Command::new(press2.clone(), "set_speed", Origin::operator("ann"));
    assert!(matches!(
        twins.command(missing).await,
        Err(KernelError::InvalidParam { .. })
    ));
    let nowhere = Command::new(
        crate::support::path("acme/plant-a/line-9/press-9"),
        "stop",
        Origin::operator("ann"),
    );
    assert!(matches!(
        twins.command(nowhere).await,
        Err(KernelError::UnknownAsset(_))
    ));

    let audit = twins
        .audit(&press2, Timestamp(0), Timestamp(i64::MAX), 100)
        .unwrap();
    let verdicts: Vec<_> = audit.iter().map(|r| r.verdict.as_str()).collect();
    assert_eq!(verdicts, ["accepted", "clamped", "denied", "denied"]);
    assert!(audit.iter().all(|r| r.kind == AuditKind::Command));
    assert_eq!(audit[0].origin, Origin::operator("ann"));
    assert_eq!(audit[3].origin.kind, OriginKind::Automation);
    assert!(audit.windows(2).all(|w| w[0].seq < w[1].seq));
    let counters = twins.counters();
    assert_eq!(
        (
            counters.commands_accepted,
            counters.commands_clamped,
            counters.commands_denied
        ),
        (1, 1, 2)
    );
    runtime.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn trip_blocks_restart_until_reset_after_cooling() {
    let dir = tempfile::tempdir().unwrap();
    let runtime = start(dir.path()).await;
    let twins = runtime.twins().clone();
    let source = twins.source("test").unwrap();
    let press3 = press(3);
    ingest_durable(&twins, &press3, "temperature", reading(99.0, source, 1)).await;
    let start_cmd = || Command::new(press3.clone(), "start", Origin::operator("ann"));
    let reset = || Command::new(press3.clone(), "reset", Origin::operator("ann"));
    assert!(
        matches!(twins.command(start_cmd()).await.unwrap().verdict, Verdict::Denied { ref governor, .. } if governor == "overtemp")
    );
    assert!(
        matches!(
            twins.command(reset()).await.unwrap().verdict,
            Verdict::Denied { .. }
        ),
        "still hot"
    );
    ingest_durable(&twins, &press3, "temperature", reading(70.0, source, 2)).await;
    assert_eq!(
        twins.command(reset()).await.unwrap().verdict,
        Verdict::Accepted
    );
    assert_eq!(
        twins.command(start_cmd()).await.unwrap().verdict,
        Verdict::Accepted
    );
    let report = twins.report(&press3).await.unwrap();
    assert_eq!(report.run_state, RunState::Running);
    assert!(!report.has_alarm("trip:overtemp"));
    runtime.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn what_if_differs_by_setpoint_and_changes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let runtime = start(dir.path()).await;
    let twins = runtime.twins().clone();
    let source = twins.source("test").unwrap();
    let press1 = press(1);
    ingest_durable(&twins, &press1, "temperature", reading(50.0, source, 1)).await;
    let before = twins.report(&press1).await.unwrap();

    let ask = |rpm: f64| {
        let command = Command::new(press1.clone(), "set_speed", Origin::operator("ann"))
            .param("rpm", Value::Float(rpm));
        twins.what_if(command, Duration::from_secs(600), Duration::from_secs(10))
    };
    let slow = ask(600.0).await.unwrap();
    let fast = ask(2400.0).await.unwrap();
    assert_eq!(slow.verdict, Verdict::Accepted);
    let slow_end = slow.trajectory.last("temperature").unwrap();
    let fast_end = fast.trajectory.last("temperature").unwrap();
    assert!(
        (slow_end - (25.0 + 0.03 * 600.0)).abs() < 2.0,
        "slow ends at {slow_end}"
    );
    assert!(
        (fast_end - (25.0 + 0.03 * 2400.0)).abs() < 2.0,
        "fast ends at {fast_end}"
    );
    assert_eq!(slow.trajectory.series["temperature"].len(), 61);
    for (name, (low, high)) in [("temperature", (-20.0, 250.0)), ("vibration", (0.0, 50.0))] {
        if let Some(points) = slow.trajectory.series.get(name) {
            assert!(
                points.iter().all(|p| (low..=high).contains(&p.value)),
                "{name} projected outside its plausible range"
            );
        }
    }

    let clamped = ask(2900.0).await.unwrap();
    assert!(matches!(clamped.verdict, Verdict::Clamped { .. }));
    assert!(
        clamped
            .assumed
            .contains(&("speed".to_string(), Value::Float(2400.0)))
    );

    let after = twins.report(&press1).await.unwrap();
    assert_eq!(after, before, "what-if must not change the twin");
    assert!(
        twins
            .audit(&press1, Timestamp(0), Timestamp(i64::MAX), 10)
            .unwrap()
            .is_empty()
    );
    runtime.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn out_of_order_samples_keep_history_and_duplicates_apply_once() {
    let dir = tempfile::tempdir().unwrap();
    let runtime = start(dir.path()).await;
    let twins = runtime.twins().clone();
    let source = twins.source("plc-7").unwrap();
    let press1 = press(1);
    let now = Timestamp::now();
    let at = |value: f64, seq: u64, secs_ago: u64| Reading {
        value,
        source_time: now.minus(Duration::from_secs(secs_ago)),
        quality: Quality::Good,
        source,
        epoch: 0,
        seq,
        stamped: true,
    };
    ingest_durable(&twins, &press1, "vibration", at(2.0, 10, 1)).await;
    ingest_durable(&twins, &press1, "vibration", at(3.0, 9, 5)).await;
    let report = twins.report(&press1).await.unwrap();
    assert_eq!(
        report.value("vibration"),
        Some(2.0),
        "an older sample does not overwrite"
    );
    assert_eq!(report.version, 2, "but it is an accepted change (history)");
    let history = twins
        .history(&press1, "vibration", Timestamp(0), Timestamp::now())
        .await
        .unwrap();
    let values: Vec<f64> = history.iter().map(|s| s.value).collect();
    assert_eq!(values, [3.0, 2.0], "history in source-time order");

    // Redelivered: the same source and sequence again.
    ingest_durable(&twins, &press1, "vibration", at(2.0, 10, 1)).await;
    ingest_durable(&twins, &press1, "vibration", at(3.0, 9, 5)).await;
    let report = twins.report(&press1).await.unwrap();
    assert_eq!(report.version, 2);
    assert_eq!(
        twins
            .history(&press1, "vibration", Timestamp(0), Timestamp::now())
            .await
            .unwrap()
            .len(),
        2
    );
    assert_eq!(twins.counters().samples_duplicate, 2);
    assert_eq!(twins.counters().samples_late, 1);

    // Duplicates are still recognised after a restart.
    drop(twins);
    runtime.shutdown().await;
    let runtime = start(dir.path()).await;
    let twins = runtime.twins().clone();
    ingest_durable(&twins, &press1, "vibration", at(2.0, 10, 1)).await;
    assert_eq!(twins.report(&press1).await.unwrap().version, 2);
    runtime.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_is_rejected_typed_counted_and_changes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let runtime = start(dir.path()).await;
    let twins = runtime.twins().clone();
    let source = twins.source("test").unwrap();
    let press1 = press(1);
    ingest_durable(&twins, &press1, "temperature", reading(40.0, source, 1)).await;
    let before = twins.report(&press1).await.unwrap();

    let rejected = |result: Result<_, KernelError>| match result {
        Err(KernelError::SampleRejected { reason, .. }) => reason,
        Err(other) => panic!("unexpected error {other}"),
        Ok(_) => panic!("accepted bad input"),
    };
    assert_eq!(
        rejected(
            twins
                .ingest(&press1, "temperature", reading(f64::NAN, source, 2))
                .await
        ),
        SampleRejection::NotFinite
    );
    assert_eq!(
        rejected(
            twins
                .ingest(&press1, "temperature", reading(f64::INFINITY, source, 3))
                .await
        ),
        SampleRejection::NotFinite
    );
    assert_eq!(
        rejected(
            twins
                .ingest(&press1, "temperature", reading(900.0, source, 4))
                .await
        ),
        SampleRejection::OutOfRange
    );
    let mut future = reading(50.0, source, 5);
    future.source_time = Timestamp::now().plus(Duration::from_secs(86_400));
    assert_eq!(
        rejected(twins.ingest(&press1, "temperature", future).await),
        SampleRejection::InFuture
    );
    let mut ancient = reading(50.0, source, 6);
    ancient.source_time = Timestamp(0);
    assert_eq!(
        rejected(twins.ingest(&press1, "temperature", ancient).await),
        SampleRejection::TooOld
    );
    assert!(matches!(
        twins.ingest(&press1, "temprature", reading(50.0, source, 7)).await,
        Err(KernelError::UnknownChannel { ref channel, .. }) if channel == "temprature"
    ));
    let nowhere = crate::support::path("acme/plant-a/line-1/press-99");
    assert!(matches!(
        twins
            .ingest(&nowhere, "temperature", reading(50.0, source, 8))
            .await,
        Err(KernelError::UnknownAsset(_))
    ));

    twins.flush().await.unwrap();
    assert_eq!(
        twins.report(&press1).await.unwrap(),
        before,
        "state untouched"
    );
    let counters = twins.counters();
    assert_eq!(counters.rejected(SampleRejection::NotFinite), 2);
    assert_eq!(counters.rejected(SampleRejection::OutOfRange), 1);
    assert_eq!(counters.rejected(SampleRejection::InFuture), 1);
    assert_eq!(counters.rejected(SampleRejection::TooOld), 1);
    assert_eq!(counters.rejected(SampleRejection::UnknownChannel), 1);
    assert_eq!(counters.rejected(SampleRejection::UnknownAsset), 1);
    assert_eq!(counters.samples_in, 1);
    runtime.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn line_and_plant_aggregate_their_children() {
    let dir = tempfile::tempdir().unwrap();
    let runtime = start(dir.path()).await;
    let twins = runtime.twins().clone();
    let source = twins.source("test").unwrap();
    let mut seq = 0;
    for n in 1..=3 {
        for (channel, value) in [("power_kw", 10.0 * f64::from(n)), ("throughput", 5.0)] {
            seq += 1;
            ingest_durable(&twins, &press(n), channel, reading(value, source, seq)).await;
        }
    }
    wait_until("line aggregates settle", Duration::from_secs(5), || {
        let lines = runtime.lines();
        async move {
            lines[0].power_kw == 30.0 && lines[1].power_kw == 30.0 && lines[0].throughput == 10.0
        }
    })
    .await;
    wait_until("plant aggregates settle", Duration::from_secs(5), || {
        let plants = runtime.plants();
        async move { plants[0].power_kw == 60.0 && plants[0].throughput == 15.0 }
    })
    .await;
    seq += 1;
    ingest_durable(
        &twins,
        &press(3),
        "temperature",
        reading(130.0, source, seq),
    )
    .await;
    wait_until(
        "the trip shows in line and plant health",
        Duration::from_secs(5),
        || {
            let (lines, plants) = (runtime.lines(), runtime.plants());
            async move {
                lines[1].tripped == 1
                    && lines[1].worst_health == 0.0
                    && plants[0].tripped == 1
                    && lines[0].worst_health > 0.0
            }
        },
    )
    .await;
    runtime.shutdown().await;
}

#[test]
fn errors_are_clear() {
    let error = StartError::Missing("a data directory");
    assert_eq!(
        error.to_string(),
        "runtime builder: a data directory is required"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn in_flight_bound_applies_backpressure_without_deadlock() {
    let dir = tempfile::tempdir().unwrap();
    let mut settings = crate::support::settings();
    settings.journal.max_in_flight = 4;
    let runtime = crate::support::start_with(dir.path(), settings, |b| b).await;
    let twins = runtime.twins().clone();
    let source = twins.source("test").unwrap();
    let target = twins.target(&press(1), "vibration").unwrap();
    let mut receipts = Vec::new();
    for round in 0..10u64 {
        let batch: Vec<_> = (0..20)
            .map(|i| (target, reading(1.0, source, round * 20 + i + 1)))
            .collect();
        let receipt = tokio::time::timeout(Duration::from_secs(5), twins.ingest_batch(batch))
            .await
            .expect("no deadlock")
            .unwrap();
        receipts.push(receipt.receipt);
    }
    for receipt in receipts {
        receipt.durable().await.unwrap();
    }
    assert_eq!(twins.report(&press(1)).await.unwrap().version, 200);
    runtime.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_changed_twin_type_keeps_state_by_name_across_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let runtime = start(dir.path()).await;
    let twins = runtime.twins().clone();
    let source = twins.source("test").unwrap();
    let press1 = press(1);
    // After the start snapshot: a journal tail written under the original type.
    ingest_durable(&twins, &press1, "vibration", reading(3.5, source, 1)).await;
    ingest_durable(&twins, &press1, "temperature", reading(48.0, source, 2)).await;
    let set = Command::new(press1.clone(), "set_speed", Origin::operator("ann"))
        .param("rpm", Value::Float(1500.0));
    twins.command(set).await.unwrap();
    drop(twins);
    runtime.shutdown().await;

    // A new channel and a new desired value that sort first shift every index.
    let changed = crate::support::types()
        .replace(
            "[types.press.channels.temperature]",
            "[types.press.channels.ambient]\nunit = \"degC\"\nrange = [-40.0, 60.0]\n\n[types.press.channels.temperature]",
        )
        .replace(
            "[types.press.desired.speed]",
            "[types.press.desired.load_limit]\nrange = [0, 100]\ninitial = 80\n\n[types.press.desired.speed]",
        );
    for round in 0..2 {
        let runtime =
            crate::support::start_custom(dir.path(), &changed, crate::support::settings(), |b| b)
                .await;
        let report = runtime.twins().report(&press1).await.unwrap();
        assert_eq!(report.value("vibration"), Some(3.5), "round {round}");
        assert_eq!(report.value("temperature"), Some(48.0), "round {round}");
        assert_eq!(report.value("ambient"), None, "round {round}");
        assert_eq!(
            report.desired("speed"),
            Some(Value::Float(1500.0)),
            "round {round}"
        );
        assert_eq!(
            report.desired("load_limit"),
            Some(Value::Float(80.0)),
            "round {round}"
        );
        assert_eq!(
            report.desired("running"),
            Some(Value::Bool(true)),
            "round {round}"
        );
        assert_eq!(report.version, 3, "round {round}");
        runtime.shutdown().await;
    }
}

/// A command retried with the same idempotency key is applied once: the retry returns
/// the first outcome (from memory, and after a restart from the audit log) and
/// actuates nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_retried_idempotent_command_is_applied_once_across_restarts() {
    let dir = tempfile::tempdir().unwrap();
    let runtime = start(dir.path()).await;
    let twins = runtime.twins().clone();
    let mut actuations = twins.actuations();
    let command = || {
        Command::new(press(1), "set_speed", Origin::operator("ann"))
            .param("rpm", Value::Float(2600.0))
            .idempotency_key("order-4711")
    };
    let first = twins.command(command()).await.unwrap();
    assert!(!first.replayed);
    assert_eq!(first.verdict.as_str(), "clamped");
    let retry = twins.command(command()).await.unwrap();
    assert!(retry.replayed);
    assert_eq!(retry.verdict, first.verdict);
    assert_eq!(retry.applied, first.applied);
    assert_eq!(retry.version, first.version);
    assert_eq!(retry.audit_seq, first.audit_seq);
    let version = twins.report(&press(1)).await.unwrap().version;
    assert_eq!(version, first.version, "the retry changed nothing");
    // A different key is a new command.
    let other = twins
        .command(
            Command::new(press(1), "set_speed", Origin::operator("ann"))
                .param("rpm", Value::Float(1500.0))
                .idempotency_key("order-4712"),
        )
        .await
        .unwrap();
    assert!(!other.replayed);
    runtime.shutdown().await;
    drop(twins);

    let runtime = start(dir.path()).await;
    let twins = runtime.twins().clone();
    let after_restart = twins.command(command()).await.unwrap();
    assert!(after_restart.replayed);
    assert_eq!(after_restart.verdict, first.verdict);
    assert_eq!(after_restart.applied, first.applied);
    assert_eq!(after_restart.audit_seq, first.audit_seq);
    assert_eq!(after_restart.version, first.version);
    let audit = twins
        .audit(
            &press(1),
            doppel::Timestamp(0),
            doppel::Timestamp::now(),
            100,
        )
        .unwrap();
    let keyed: Vec<_> = audit
        .iter()
        .filter(|r| r.command_id.0 == "order-4711")
        .collect();
    assert_eq!(keyed.len(), 1, "one audit record for the key");
    let mut sent = 0;
    while let Ok(actuation) = actuations.try_recv() {
        if actuation.command_id().0 == "order-4711" {
            sent += 1;
        }
    }
    assert_eq!(sent, 1, "actuated once");
    runtime.shutdown().await;
}

/// A history read reaches past the twin's ring into the journal.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn history_reads_the_ring_and_then_the_journal() {
    let dir = tempfile::tempdir().unwrap();
    let runtime = start(dir.path()).await;
    let twins = runtime.twins();
    let source = twins.source("history-test").unwrap();
    let base = Timestamp::now().as_micros() - 10_000_000;
    for i in 0..100u64 {
        let mut reading = reading(i as f64, source, i + 1);
        reading.source_time = Timestamp(base + i as i64 * 1000);
        ingest_durable(twins, &press(1), "throughput", reading).await;
    }
    let all = (Timestamp(0), Timestamp::now());
    let ring = twins
        .history(&press(1), "throughput", all.0, all.1)
        .await
        .unwrap();
    assert_eq!(ring.len(), 32, "the ring holds history_capacity samples");
    let samples = twins
        .samples(&press(1), "throughput", all, 80)
        .await
        .unwrap();
    let values: Vec<f64> = samples.iter().map(|s| s.value).collect();
    let expected: Vec<f64> = (20..100).map(|i| i as f64).collect();
    assert_eq!(values, expected, "the newest 80, oldest first");
    let window = twins
        .samples(
            &press(1),
            "throughput",
            (Timestamp(base + 10_000), Timestamp(base + 19_000)),
            1000,
        )
        .await
        .unwrap();
    assert_eq!(window.len(), 10);
    assert_eq!(window[0].value, 10.0);
    runtime.shutdown().await;
}

/// Audit pages by cursor list every record once, in sequence order, for any prefix:
/// the records a stop indexed by asset and the ones written since, still only in the
/// log, alike.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn audit_pages_follow_the_sequence_across_twins() {
    let dir = tempfile::tempdir().unwrap();
    let send_rounds = |twins: doppel::Twins, rounds: std::ops::Range<u32>| async move {
        for round in rounds {
            for n in [1, 3, 2] {
                twins
                    .command(
                        Command::new(press(n), "set_speed", Origin::operator("ann"))
                            .param("rpm", Value::Float(1000.0 + f64::from(round))),
                    )
                    .await
                    .unwrap();
            }
        }
    };
    let runtime = start(dir.path()).await;
    send_rounds(runtime.twins().clone(), 0..2).await;
    // The final checkpoint indexes the first six by asset.
    runtime.shutdown().await;
    let runtime = start(dir.path()).await;
    let twins = runtime.twins();
    send_rounds(twins.clone(), 2..4).await;
    let everything = doppel::AssetPath::parse("acme").unwrap();
    let all = (Timestamp(0), Timestamp::now());
    assert_eq!(
        twins
            .audit(&everything, all.0, all.1, usize::MAX)
            .unwrap()
            .len(),
        12,
        "both runs' records"
    );
    for prefix in ["acme", "acme/plant-a/line-1", "acme/plant-a/line-2/press-3"] {
        let prefix = doppel::AssetPath::parse(prefix).unwrap();
        let expected: Vec<u64> = twins
            .audit(&prefix, all.0, all.1, usize::MAX)
            .unwrap()
            .iter()
            .map(|r| r.seq)
            .collect();
        let mut paged = Vec::new();
        let mut after = None;
        loop {
            let page = twins.audit_page(&prefix, all, &[], after, 2).unwrap();
            if page.is_empty() {
                break;
            }
            assert!(page.len() <= 2);
            after = page.last().map(|r| r.seq);
            paged.extend(page.iter().map(|r| r.seq));
        }
        assert_eq!(paged, expected, "{prefix}");
        assert!(!expected.is_empty());
    }
    runtime.shutdown().await;
}

/// An actuator's report counts only for the actuation it is about: a late report on a
/// value a newer command has set since changes nothing, a failure never undoes a
/// delivery, and what is not delivered is what an actuator is asked to send again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_delivery_report_counts_only_for_its_own_actuation() {
    let dir = tempfile::tempdir().unwrap();
    let runtime = start(dir.path()).await;
    let twins = runtime.twins().clone();
    let mut actuations = twins.actuations();
    let set_speed = |rpm: f64| {
        Command::new(press(1), "set_speed", Origin::operator("ann")).param("rpm", Value::Float(rpm))
    };
    let speed = |report: &doppel::TwinReport| {
        report
            .desired
            .iter()
            .find(|(name, _)| name == "speed")
            .map(|(_, value)| value.delivery.clone())
            .unwrap()
    };
    let report_on = |version: u64, outcome: DeliveryOutcome| DeliveryReport {
        asset: press(1),
        version,
        desired: vec!["speed".to_string()],
        by: "test-actuator".to_string(),
        outcome,
        at: Timestamp::now(),
    };

    twins.command(set_speed(1000.0)).await.unwrap();
    let first = actuations.recv().await.unwrap();
    twins.command(set_speed(1100.0)).await.unwrap();
    let second = actuations.recv().await.unwrap();
    assert!(second.version() > first.version());

    twins
        .report_delivery(report_on(first.version(), DeliveryOutcome::Delivered))
        .unwrap();
    let report = twins.report(&press(1)).await.unwrap();
    assert_eq!(
        speed(&report).state,
        DeliveryState::Pending,
        "a late report changes nothing"
    );
    let undelivered = twins.undelivered(None).await;
    assert_eq!(undelivered.len(), 1);
    assert_eq!(undelivered[0].version(), second.version());
    assert_eq!(undelivered[0].value("speed"), Some(Value::Float(1100.0)));

    twins
        .report_delivery(report_on(second.version(), DeliveryOutcome::Delivered))
        .unwrap();
    twins
        .report_delivery(report_on(
            second.version(),
            DeliveryOutcome::Failed("late failure".to_string()),
        ))
        .unwrap();
    let report = twins.report(&press(1)).await.unwrap();
    let delivered = speed(&report);
    assert_eq!(delivered.state, DeliveryState::Delivered);
    assert_eq!(delivered.by, "test-actuator");
    assert!(twins.undelivered(None).await.is_empty());
    runtime.shutdown().await;
}

/// A fenced node (another node owns its twins) refuses commands, sends no actuation
/// (a safety action changes the twin only), offers nothing for re-sending, and every
/// twin raises the critical alarm `fenced`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fenced_node_refuses_commands_and_actuates_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let runtime = start(dir.path()).await;
    let twins = runtime.twins().clone();
    let source = twins.source("test").unwrap();
    let mut actuations = twins.actuations();
    twins
        .command(
            Command::new(press(1), "set_speed", Origin::operator("ann"))
                .param("rpm", Value::Float(1000.0)),
        )
        .await
        .unwrap();
    actuations.recv().await.unwrap();
    assert_eq!(twins.undelivered(None).await.len(), 1);

    assert!(twins.fence("edge-a started first and keeps acme/plant-a"));
    assert!(!twins.fence("again"), "a fence is set once");
    wait_until(
        "every twin raises the alarm",
        Duration::from_secs(10),
        || async {
            let mut all = true;
            for n in [1, 2, 3] {
                let report = twins.report(&press(n)).await.unwrap();
                all &= report.alarms.iter().any(|a| {
                    a.code == "fenced"
                        && a.severity == Severity::Critical
                        && a.message.contains("edge-a started first")
                });
            }
            all
        },
    )
    .await;
    let refused = twins
        .command(
            Command::new(press(1), "set_speed", Origin::operator("ann"))
                .param("rpm", Value::Float(1100.0)),
        )
        .await
        .unwrap_err();
    assert!(matches!(refused, KernelError::Fenced { .. }), "{refused:?}");
    assert!(twins.undelivered(None).await.is_empty());
    for (seq, channel) in [(1, "temperature"), (2, "temperature_b")] {
        ingest_durable(&twins, &press(1), channel, reading(120.0, source, seq)).await;
    }
    let report = twins.report(&press(1)).await.unwrap();
    assert_eq!(report.run_state, RunState::Tripped, "the twin still trips");
    assert!(
        actuations.try_recv().is_err(),
        "nothing leaves a fenced node"
    );
    runtime.shutdown().await;
}

/// A restart snapshots only the twins whose journal held events after their snapshot
/// (a command, a delivery report completing it), and every twin keeps its state over
/// restarts in a row, idle ones from their older snapshots.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restart_snapshots_only_the_twins_that_moved() {
    use doppel_runtime::internal::TwinsInternals;

    let dir = tempfile::tempdir().unwrap();
    let snapshot_batch = |twins: &doppel::Twins, n: u32| {
        twins
            .kernel()
            .journal
            .store()
            .snapshot(&press(n))
            .unwrap()
            .map(|(batch, _)| batch)
    };
    let speed = |report: &doppel::TwinReport| {
        report
            .desired
            .iter()
            .find(|(name, _)| name == "speed")
            .map(|(_, value)| (value.value, value.delivery.state))
            .unwrap()
    };

    // First start: every twin is new and gets its first snapshot.
    let runtime = start(dir.path()).await;
    let twins = runtime.twins().clone();
    let mut actuations = twins.actuations();
    let (moved_before, idle_before) = (snapshot_batch(&twins, 1), snapshot_batch(&twins, 2));
    assert!(moved_before.is_some() && idle_before.is_some());
    twins
        .command(
            Command::new(press(1), "set_speed", Origin::operator("ann"))
                .param("rpm", Value::Float(1500.0)),
        )
        .await
        .unwrap();
    let actuation = actuations.recv().await.unwrap();
    twins
        .report_delivery(DeliveryReport {
            asset: press(1),
            version: actuation.version(),
            desired: vec!["speed".to_string()],
            by: "test-actuator".to_string(),
            outcome: DeliveryOutcome::Delivered,
            at: Timestamp::now(),
        })
        .unwrap();
    wait_until("the delivery is recorded", Duration::from_secs(5), || {
        let twins = twins.clone();
        async move {
            let report = twins.report(&press(1)).await.unwrap();
            speed(&report).1 == DeliveryState::Delivered
        }
    })
    .await;
    runtime.shutdown().await;
    drop(twins);

    // Second start: press-1 moved and is snapshotted again; press-2 keeps its snapshot.
    let runtime = start(dir.path()).await;
    let twins = runtime.twins().clone();
    assert_ne!(
        snapshot_batch(&twins, 1),
        moved_before,
        "press-1 snapshotted again"
    );
    assert_eq!(
        snapshot_batch(&twins, 2),
        idle_before,
        "press-2 not snapshotted again"
    );
    let moved_after = snapshot_batch(&twins, 1);
    runtime.shutdown().await;
    drop(twins);

    // Third start: nothing moved, nothing is snapshotted, and the states hold.
    let runtime = start(dir.path()).await;
    let twins = runtime.twins().clone();
    assert_eq!(snapshot_batch(&twins, 1), moved_after);
    assert_eq!(snapshot_batch(&twins, 2), idle_before);
    let report = twins.report(&press(1)).await.unwrap();
    assert_eq!(
        speed(&report),
        (Value::Float(1500.0), DeliveryState::Delivered)
    );
    let idle = twins.report(&press(2)).await.unwrap();
    assert_eq!(idle.version, 0, "press-2 never moved");
    runtime.shutdown().await;
}
