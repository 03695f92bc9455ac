//! Passivation: idle twins stop their actor and wake for the next message, with their
//! governors first; a kill -9 while twins are parked loses nothing acknowledged.

use std::sync::mpsc;
use std::time::{Duration, Instant};

use doppel::{Command, Origin, Runtime, RuntimeSettings, Timestamp, Value, Verdict};
use doppel_testkit::twin_types::{PRESS_BASE, PRESS_MODELS};

use crate::support::{
    ChildTest, ingest_durable, press, reading, start_custom, start_with, wait_until,
};

const CHILD_ENV: &str = "DOPPEL_PASSIVATION_CHILD_DIR";

/// Passivation on for every twin, trips included, with an idle time long enough
/// that only the rounds a test runs itself ([`doppel::Twins::passivate_idle`]) count.
fn manual_settings() -> RuntimeSettings {
    let mut settings = crate::support::settings();
    settings.passivation.idle_secs = 3_600.0;
    settings.passivation.tripping = true;
    settings
}

/// Runs passivation rounds until `n` is parked.
async fn park(runtime: &Runtime, n: u32) {
    let twins = runtime.twins();
    let entry = twins.entry(&press(n)).unwrap().clone();
    wait_until(
        &format!("press-{n} parked"),
        Duration::from_secs(10),
        || {
            twins.passivate_idle();
            let parked = entry.is_parked();
            async move { parked }
        },
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reading_to_a_passivated_twin_that_crosses_a_trip_limit_trips_it() {
    let dir = tempfile::tempdir().unwrap();
    let runtime = start_with(dir.path(), manual_settings(), |b| b).await;
    let twins = runtime.twins().clone();
    let source = twins.source("passivation-test").unwrap();
    ingest_durable(&twins, &press(1), "temperature", reading(60.0, source, 1)).await;
    ingest_durable(&twins, &press(1), "temperature_b", reading(60.0, source, 2)).await;
    let before = twins.report(&press(1)).await.unwrap();
    park(&runtime, 1).await;
    assert!(twins.counters().passivated >= 1);

    let mut actuations = twins.actuations();
    ingest_durable(&twins, &press(1), "temperature", reading(120.0, source, 3)).await;
    let actuation = tokio::time::timeout(Duration::from_secs(10), actuations.recv())
        .await
        .expect("the trip's actuation goes out")
        .unwrap();
    assert!(actuation.is_safety(), "a safety action: {actuation:?}");
    assert_eq!(actuation.asset(), &press(1));
    assert_eq!(actuation.command(), "stop");

    let after = twins.report(&press(1)).await.unwrap();
    assert!(
        after.trips.iter().any(|trip| trip.governor == "overtemp"),
        "the trip is latched: {:?}",
        after.trips
    );
    assert!(
        after.version > before.version,
        "the woken twin went on from its parked state"
    );
    assert_eq!(after.value("temperature"), Some(120.0));
    assert_eq!(after.value("temperature_b"), Some(60.0));
    assert!(twins.counters().woken >= 1);
    drop(twins);
    runtime.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_passivated_twin_answers_reads_and_commands_as_before() {
    let dir = tempfile::tempdir().unwrap();
    let runtime = start_with(dir.path(), manual_settings(), |b| b).await;
    let twins = runtime.twins().clone();
    let source = twins.source("passivation-test").unwrap();
    ingest_durable(&twins, &press(2), "vibration", reading(2.5, source, 1)).await;
    let before = twins.report(&press(2)).await.unwrap();
    park(&runtime, 2).await;

    // A listing reads a parked twin without waking it.
    let line = twins.summary(&press(2)).await.unwrap();
    assert_eq!(line.version, before.version);
    assert_eq!(line.run_state, before.run_state);
    assert_eq!(line.health, before.health);
    assert_eq!(line.alarms, before.alarms);
    assert!(
        twins.entry(&press(2)).unwrap().is_parked(),
        "the listing woke it"
    );

    let woken = twins.report(&press(2)).await.unwrap();
    assert_eq!(woken.version, before.version);
    assert_eq!(woken.reported, before.reported);
    assert_eq!(woken.desired, before.desired);

    // The envelope governor still reviews a command to a parked twin.
    park(&runtime, 2).await;
    let command = Command::new(press(2), "set_speed", Origin::operator("ann"))
        .param("rpm", Value::Float(2_900.0));
    let outcome = twins.command(command).await.unwrap();
    assert!(
        matches!(outcome.verdict, Verdict::Clamped { .. }),
        "clamped by the envelope: {:?}",
        outcome.verdict
    );
    assert_eq!(
        outcome.applied,
        vec![("speed".to_string(), Value::Float(2_400.0))]
    );
    drop(twins);
    runtime.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watched_and_tripping_twins_stay_awake() {
    let dir = tempfile::tempdir().unwrap();
    // Without `tripping`, the press (which has an over-temperature trip) stays awake.
    let mut settings = manual_settings();
    settings.passivation.tripping = false;
    let runtime = start_with(dir.path(), settings, |b| b).await;
    let twins = runtime.twins().clone();
    for _ in 0..10 {
        assert_eq!(twins.passivate_idle(), 0);
    }
    assert!(!twins.entry(&press(1)).unwrap().passivates());
    assert!(!twins.entry(&press(1)).unwrap().is_parked());
    drop(twins);
    runtime.shutdown().await;

    // A press without governors passivates, unless a watch covers it.
    let dir = tempfile::tempdir().unwrap();
    let untripped = format!("{PRESS_BASE}{PRESS_MODELS}");
    let runtime = start_custom(dir.path(), &untripped, manual_settings(), |b| b).await;
    let twins = runtime.twins().clone();
    let line_1 = press(1).parent().unwrap();
    let watch = twins.watch(Some(&line_1));
    // As the API's watch does: every twin it covers is read (and woken) first.
    for n in [1, 2] {
        twins.report(&press(n)).await.unwrap();
    }
    park(&runtime, 3).await;
    for _ in 0..10 {
        twins.passivate_idle();
    }
    for n in [1, 2] {
        assert!(
            !twins.entry(&press(n)).unwrap().is_parked(),
            "press-{n} is watched"
        );
    }
    drop(watch);
    park(&runtime, 1).await;
    park(&runtime, 2).await;
    drop(twins);
    runtime.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn twins_idle_at_a_restart_start_parked_and_wake_with_their_state() {
    let dir = tempfile::tempdir().unwrap();
    let mut before = Vec::new();
    {
        let runtime = start_with(dir.path(), manual_settings(), |b| b).await;
        let twins = runtime.twins().clone();
        let source = twins.source("passivation-test").unwrap();
        for n in 1..=3 {
            ingest_durable(
                &twins,
                &press(n),
                "power_kw",
                reading(10.0 * f64::from(n), source, u64::from(n)),
            )
            .await;
            before.push(twins.report(&press(n)).await.unwrap());
        }
        drop(twins);
        runtime.shutdown().await;
    }
    let runtime = start_with(dir.path(), manual_settings(), |b| b).await;
    let twins = runtime.twins().clone();
    for n in 1..=3 {
        assert!(
            twins.entry(&press(n)).unwrap().is_parked(),
            "press-{n} starts parked"
        );
    }
    for (n, before) in (1..=3).zip(&before) {
        let report = twins.report(&press(n)).await.unwrap();
        assert_eq!(report.version, before.version);
        assert_eq!(report.value("power_kw"), Some(10.0 * f64::from(n)));
    }
    drop(twins);
    runtime.shutdown().await;
}

/// Passivation after 50 ms of idleness, trips included; every sample kept in history.
fn crash_settings() -> RuntimeSettings {
    let mut settings = RuntimeSettings::default();
    settings.journal.batch_interval_ms = 3;
    settings.history_capacity = 1_000_000;
    settings.passivation.idle_secs = 0.05;
    settings.passivation.tripping = true;
    settings
}

/// The child: runs only when the parent test starts it with `CHILD_ENV` set. It
/// feeds one press at a time, in bursts with pauses, so the others passivate.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "runs as the child process of a_kill_minus_9_while_twins_are_passivated_loses_nothing_acknowledged"]
async fn passivation_child_ingests_until_killed() {
    let Ok(dir) = std::env::var(CHILD_ENV) else {
        return;
    };
    let runtime = start_with(std::path::Path::new(&dir), crash_settings(), |b| b).await;
    let twins = runtime.twins().clone();
    let source = twins.source("passivation-child").unwrap();
    let mut seq: u64 = std::env::var("DOPPEL_PASSIVATION_CHILD_FIRST")
        .unwrap()
        .parse()
        .unwrap();
    loop {
        let n = 1 + (seq / 10 % 3) as u32;
        let value = (seq % 40) as f64 + 0.5;
        twins
            .ingest(&press(n), "power_kw", reading(value, source, seq))
            .await
            .unwrap()
            .durable()
            .await
            .unwrap();
        println!("ACK {seq} {}", twins.counters().passivated);
        seq += 1;
        if seq.is_multiple_of(10) {
            tokio::time::sleep(Duration::from_millis(150)).await;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_kill_minus_9_while_twins_are_passivated_loses_nothing_acknowledged() {
    let dir = tempfile::tempdir().unwrap();
    let mut acked: Vec<u64> = Vec::new();
    let mut next_seq = 1u64;
    for round in 0..2 {
        let mut child = ChildTest::start(
            "passivation::passivation_child_ingests_until_killed",
            &[
                (CHILD_ENV, dir.path().display().to_string()),
                ("DOPPEL_PASSIVATION_CHILD_FIRST", next_seq.to_string()),
            ],
        );
        let started = Instant::now();
        let mut round_acked = Vec::new();
        let mut killed = false;
        loop {
            match child.lines.recv_timeout(Duration::from_millis(20)) {
                Ok(line) => {
                    if let Some(rest) = line.strip_prefix("ACK ") {
                        let mut parts = rest.split(' ').map(|p| p.parse::<u64>().unwrap());
                        let seq = parts.next().unwrap();
                        let passivated = parts.next().unwrap();
                        if !killed {
                            round_acked.push(seq);
                        }
                        // Killed once twins have been parked and woken several times.
                        if !killed && passivated >= 6 && round_acked.len() >= 40 {
                            child.child.kill().unwrap();
                            killed = true;
                        }
                    }
                }
                Err(mpsc::RecvTimeoutError::Timeout) => {}
                Err(mpsc::RecvTimeoutError::Disconnected) => break,
            }
            assert!(
                started.elapsed() < Duration::from_secs(90),
                "round {round}: the child never passivated enough twins"
            );
        }
        child.wait();
        assert!(
            killed,
            "round {round}: the child ended before it was killed"
        );
        next_seq = round_acked.last().copied().unwrap_or(next_seq) + 10_000;
        acked.extend(round_acked);

        let runtime = start_with(dir.path(), crash_settings(), |b| b).await;
        let twins = runtime.twins().clone();
        let mut seen = std::collections::HashMap::new();
        for n in 1..=3 {
            for sample in twins
                .history(&press(n), "power_kw", Timestamp(0), Timestamp(i64::MAX))
                .await
                .unwrap()
            {
                *seen.entry(sample.seq).or_insert(0u32) += 1;
                assert_eq!(
                    (
                        1 + (sample.seq / 10 % 3) as u32,
                        (sample.seq % 40) as f64 + 0.5
                    ),
                    (n, sample.value),
                    "sample {} misplaced",
                    sample.seq
                );
            }
        }
        assert!(
            seen.values().all(|&count| count == 1),
            "round {round}: a sample was applied twice"
        );
        for seq in &acked {
            assert!(
                seen.contains_key(seq),
                "round {round}: acknowledged sample {seq} lost"
            );
        }
        drop(twins);
        runtime.shutdown().await;
    }
}
