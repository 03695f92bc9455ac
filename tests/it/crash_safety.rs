//! Crash safety with a real process: a child ingests and reports what was
//! acknowledged; the test kills it with SIGKILL at a random moment, reopens the same
//! data directory and checks every acknowledged sample is there, applied once.

use std::sync::mpsc;
use std::time::{Duration, Instant};

use rand::Rng;

use doppel::{RuntimeSettings, Timestamp};

use crate::support::{ChildTest, press, reading, start_with};

const CHILD_ENV: &str = "DOPPEL_CRASH_CHILD_DIR";
const CHANNELS: [&str; 2] = ["vibration", "power_kw"];

fn crash_settings() -> RuntimeSettings {
    let mut settings = RuntimeSettings::default();
    settings.journal.batch_interval_ms = 3;
    // Keep every sample in history so the test can check each one; snapshots stay
    // frequent so recovery exercises snapshot + journal tail.
    settings.history_capacity = 1_000_000;
    settings.journal.snapshot_every = 500;
    settings
}

/// Sample `seq` of the child goes to twin `1 + seq % 3`, channel by `seq % 2`, with
/// value derived from `seq`, so the verifier knows where every acknowledged one lives.
fn placement(seq: u64) -> (u32, &'static str, f64) {
    (
        1 + (seq % 3) as u32,
        CHANNELS[(seq % 2) as usize],
        (seq % 40) as f64 + 0.5,
    )
}

/// The child: runs only when the parent test starts it with `CHILD_ENV` set.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "runs as the child process of kill_minus_nine_loses_no_acknowledged_sample"]
async fn crash_child_ingests_until_killed() {
    let Ok(dir) = std::env::var(CHILD_ENV) else {
        return;
    };
    let runtime = start_with(std::path::Path::new(&dir), crash_settings(), |b| b).await;
    let twins = runtime.twins().clone();
    let source = twins.source("crash-child").unwrap();
    let first: u64 = std::env::var("DOPPEL_CRASH_CHILD_FIRST")
        .unwrap()
        .parse()
        .unwrap();
    let mut seq = first;
    let mut pending = std::collections::VecDeque::new();
    loop {
        // Several batches in flight at once, acknowledged in order.
        let from = seq;
        let mut batch = Vec::new();
        for _ in 0..20 {
            let (n, channel, value) = placement(seq);
            batch.push((
                twins.target(&press(n), channel).unwrap(),
                reading(value, source, seq),
            ));
            seq += 1;
        }
        let receipt = twins.ingest_batch(batch).await.unwrap();
        pending.push_back((from, seq - 1, receipt.receipt));
        if pending.len() >= 8 {
            let (from, to, receipt) = pending.pop_front().unwrap();
            receipt.durable().await.unwrap();
            println!("ACK {from} {to}");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_minus_nine_loses_no_acknowledged_sample() {
    let dir = tempfile::tempdir().unwrap();
    let mut rng = rand::rng();
    let mut next_seq = 1u64;
    let mut acked: Vec<(u64, u64)> = Vec::new();
    for round in 0..3 {
        let kill_after = Duration::from_millis(rng.random_range(300..1500));
        let mut child = ChildTest::start(
            "crash_safety::crash_child_ingests_until_killed",
            &[
                (CHILD_ENV, dir.path().display().to_string()),
                ("DOPPEL_CRASH_CHILD_FIRST", next_seq.to_string()),
            ],
        );
        // Wait for the first acknowledgement, then let it run a random while.
        let started = Instant::now();
        let mut round_acked = Vec::new();
        let mut killed_at = None;
        loop {
            match child.lines.recv_timeout(Duration::from_millis(20)) {
                Ok(line) => {
                    if let Some(rest) = line.strip_prefix("ACK ") {
                        let mut parts = rest.split(' ').map(|p| p.parse::<u64>().unwrap());
                        round_acked.push((parts.next().unwrap(), parts.next().unwrap()));
                    }
                }
                Err(mpsc::RecvTimeoutError::Timeout) => {}
                Err(mpsc::RecvTimeoutError::Disconnected) => break,
            }
            if killed_at.is_none() && !round_acked.is_empty() && started.elapsed() >= kill_after {
                child.child.kill().unwrap();
                killed_at = Some(round_acked.len());
            }
            assert!(
                started.elapsed() < Duration::from_secs(60),
                "child never acknowledged anything"
            );
        }
        child.wait();
        // Only acknowledgements read before the kill count; the rest raced with it.
        let counted = killed_at.expect("the child was killed");
        assert!(
            counted > 0,
            "round {round}: nothing acknowledged before the kill"
        );
        acked.extend(&round_acked[..counted]);
        let highest_sent = round_acked.last().map_or(next_seq, |(_, to)| *to);
        // The next round continues the sequence far above anything sent this round.
        next_seq = highest_sent + 10_000;

        let runtime = start_with(dir.path(), crash_settings(), |b| b).await;
        let twins = runtime.twins().clone();
        let mut seen = std::collections::HashMap::new();
        for n in 1..=3 {
            for channel in CHANNELS {
                for sample in twins
                    .history(&press(n), channel, Timestamp(0), Timestamp(i64::MAX))
                    .await
                    .unwrap()
                {
                    *seen.entry(sample.seq).or_insert(0u32) += 1;
                    let (expected_n, expected_channel, value) = placement(sample.seq);
                    assert_eq!(
                        (expected_n, expected_channel, value),
                        (n, channel, sample.value),
                        "sample {} misplaced",
                        sample.seq
                    );
                }
            }
        }
        assert!(
            seen.values().all(|&count| count == 1),
            "round {round}: a sample was applied twice"
        );
        for &(from, to) in &acked {
            for seq in from..=to {
                assert!(
                    seen.contains_key(&seq),
                    "round {round}: acknowledged sample {seq} lost (killed after {kill_after:?})"
                );
            }
        }
        let versions: u64 = futures_sum(&twins).await;
        assert_eq!(
            versions,
            seen.len() as u64,
            "round {round}: versions count every applied sample once"
        );
        eprintln!(
            "crash round {round}: killed after {kill_after:?}, {} samples acknowledged, {} recovered",
            acked.iter().map(|(f, t)| t - f + 1).sum::<u64>(),
            seen.len()
        );
        drop(twins);
        runtime.shutdown().await;
    }
}

async fn futures_sum(twins: &doppel::Twins) -> u64 {
    let mut total = 0;
    for n in 1..=3 {
        total += twins.report(&press(n)).await.unwrap().version;
    }
    total
}
