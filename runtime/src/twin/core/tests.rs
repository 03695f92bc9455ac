//! The core on its own: synchronous, a real twin type, no actor and no journal file.

use std::collections::HashSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use proptest::prelude::*;

use super::{Effects, TwinCore};
use crate::config::{TwinType, TwinTypes};
use crate::journal::{JournalRecord, Snapshot};
use crate::model::{Model, ModelOutput, Scenario, Trajectory};
use crate::path::AssetPath;
use crate::sample::{ChannelId, Quality, Sample, SourceId};
use crate::time::Timestamp;
use crate::twin::state::{SampleOutcome, SampleRejection, TwinView};

const TYPES: &str = r#"
[types.pump.channels.pressure]
unit = "bar"
range = [0.0, 100.0]
[types.pump.channels.flow]
unit = "m3/h"
range = [0.0, 500.0]
"#;

const HISTORY: usize = 32;

fn pump() -> Arc<TwinType> {
    TwinTypes::from_toml(TYPES, "tests.toml")
        .unwrap()
        .get("pump")
        .unwrap()
        .clone()
}

/// Counts the samples a model was shown, current and late.
struct Witness {
    current: Arc<AtomicUsize>,
    late: Arc<AtomicUsize>,
}

impl Model for Witness {
    fn name(&self) -> &str {
        "witness"
    }
    fn version(&self) -> &str {
        "1"
    }
    fn outputs(&self) -> Vec<String> {
        Vec::new()
    }
    fn observe(&mut self, _: &Sample, _: &TwinView<'_>, _: &mut ModelOutput) {
        self.current.fetch_add(1, Ordering::Relaxed);
    }
    fn observe_late(&mut self, _: &Sample, _: &TwinView<'_>, _: &mut ModelOutput) {
        self.late.fetch_add(1, Ordering::Relaxed);
    }
    fn project(&self, _: &TwinView<'_>, _: &Scenario, _: &mut Trajectory) {}
}

fn core() -> TwinCore {
    core_with_history(HISTORY)
}

fn core_with_history(capacity: usize) -> TwinCore {
    TwinCore::new(
        7,
        AssetPath::parse("acme/plant-a/line-1/pump-1").unwrap(),
        pump(),
        Vec::new(),
        Vec::new(),
        capacity,
    )
}

/// Channels are numbered in name order.
const FLOW: ChannelId = ChannelId(0);
const PRESSURE: ChannelId = ChannelId(1);

/// A stamped reading of `pressure`, measured `secs` seconds after a base time, from
/// source 1.
fn at(secs: i64, epoch: u32, seq: u64) -> Sample {
    let base = 1_000_000_000_000_000;
    Sample {
        channel: PRESSURE,
        value: 1.0 + secs as f64 / 1000.0,
        source_time: Timestamp(base + secs * 1_000_000),
        receive_time: Timestamp(base + 10_000_000_000),
        quality: Quality::Good,
        source: SourceId(1),
        epoch,
        seq,
        stamped: true,
    }
}

fn unstamped(seq: u64) -> Sample {
    Sample {
        stamped: false,
        ..at(seq as i64, 0, seq)
    }
}

fn apply(core: &mut TwinCore, sample: Sample) -> (SampleOutcome, Effects) {
    let mut fx = Effects::default();
    let outcome = core.apply_sample(&sample, &mut fx);
    (outcome, fx)
}

fn current(core: &TwinCore) -> Sample {
    core.state().current(PRESSURE).copied().unwrap()
}

#[test]
fn a_late_reading_goes_to_history_and_the_journal_and_not_current() {
    let current_calls = Arc::new(AtomicUsize::new(0));
    let late_calls = Arc::new(AtomicUsize::new(0));
    let mut core = TwinCore::new(
        7,
        AssetPath::parse("acme/plant-a/line-1/pump-1").unwrap(),
        pump(),
        vec![Box::new(Witness {
            current: current_calls.clone(),
            late: late_calls.clone(),
        })],
        Vec::new(),
        HISTORY,
    );
    assert_eq!(apply(&mut core, at(10, 0, 2)).0, SampleOutcome::Applied);
    let (outcome, fx) = apply(&mut core, at(9, 0, 1));
    assert_eq!(outcome, SampleOutcome::Late);
    assert_eq!((fx.events, fx.late), (1, 1), "journaled, counted late");
    assert_eq!(current(&core).seq, 2, "the newer reading stays current");
    let history = core.history(PRESSURE, Timestamp(i64::MIN), Timestamp(i64::MAX));
    assert_eq!(
        history.iter().map(|s| s.seq).collect::<Vec<_>>(),
        vec![1, 2],
        "history in source-time order"
    );
    assert_eq!(current_calls.load(Ordering::Relaxed), 1);
    assert_eq!(
        late_calls.load(Ordering::Relaxed),
        1,
        "the model is told it is late"
    );
    assert_eq!(core.state().version, 2);
}

#[test]
fn a_redelivered_reading_changes_nothing_and_journals_nothing() {
    let mut core = core();
    apply(&mut core, at(1, 0, 1));
    apply(&mut core, at(2, 0, 2));
    for sample in [at(1, 0, 1), at(2, 0, 2)] {
        let (outcome, fx) = apply(&mut core, sample);
        assert_eq!(outcome, SampleOutcome::Duplicate);
        assert_eq!((fx.events, fx.duplicates), (0, 1));
    }
    assert_eq!(core.state().version, 2);
}

#[test]
fn a_publisher_that_declares_a_new_epoch_is_applied_from_1_again() {
    let mut core = core();
    for seq in 1..=10 {
        assert_eq!(
            apply(&mut core, at(seq as i64, 1, seq)).0,
            SampleOutcome::Applied
        );
    }
    for seq in 1..=10 {
        let outcome = apply(&mut core, at(100 + seq as i64, 2, seq)).0;
        assert_eq!(outcome, SampleOutcome::Applied, "epoch 2 seq {seq}");
    }
    assert_eq!(current(&core).epoch, 2);
    assert_eq!(
        apply(&mut core, at(5, 1, 5)).0,
        SampleOutcome::Duplicate,
        "a redelivery from before the restart"
    );
}

#[test]
fn a_sentinel_sequence_number_is_refused_and_the_channel_goes_on() {
    let mut core = core();
    apply(&mut core, unstamped(5));
    let (outcome, fx) = apply(&mut core, unstamped(u64::MAX));
    assert_eq!(outcome, SampleOutcome::Refused(SampleRejection::SeqJump));
    assert_eq!(fx.refused.len(), 1);
    assert_eq!(fx.events, 0);
    assert_eq!(apply(&mut core, unstamped(6)).0, SampleOutcome::Applied);
    assert_eq!(current(&core).seq, 6);
}

#[test]
fn a_hundred_then_one_to_ninety_nine_are_all_kept() {
    let mut core = core();
    let mut journaled = 0;
    let (outcome, fx) = apply(&mut core, at(100, 0, 100));
    assert_eq!(outcome, SampleOutcome::Applied);
    journaled += fx.events;
    for seq in 1..100 {
        let (outcome, fx) = apply(&mut core, at(seq as i64, 0, seq));
        assert_eq!(outcome, SampleOutcome::Late, "seq {seq}");
        journaled += fx.events;
    }
    assert_eq!(journaled, 100, "every reading is in the journal");
    assert_eq!(current(&core).seq, 100);
    for seq in 1..=100 {
        assert_eq!(
            apply(&mut core, at(seq as i64, 0, seq)).0,
            SampleOutcome::Duplicate
        );
    }
}

#[test]
fn an_unstamped_reading_older_than_the_twin_remembers_is_refused_as_unverifiable() {
    let mut core = core();
    // Numbers shared with other channels leave a gap per reading; past the bound the
    // oldest are given up, and history holds only the newest readings.
    for i in 1..=200 {
        apply(&mut core, unstamped(i * 3));
    }
    let (outcome, fx) = apply(&mut core, unstamped(4));
    assert_eq!(
        outcome,
        SampleOutcome::Refused(SampleRejection::Unverifiable)
    );
    assert_eq!(fx.events, 0);
    assert_eq!(
        apply(&mut core, unstamped(3)).0,
        SampleOutcome::Refused(SampleRejection::Unverifiable),
        "an old redelivery is never applied twice"
    );
    assert_eq!(
        apply(&mut core, unstamped(599)).0,
        SampleOutcome::Late,
        "a recent gap is still known (and late by its time)"
    );
    assert_eq!(apply(&mut core, unstamped(597)).0, SampleOutcome::Duplicate);
}

#[test]
fn a_restored_twin_still_knows_what_it_applied() {
    let mut core = core();
    let mut records = Vec::new();
    for seq in [5, 1, 3, 9, 2] {
        let mut fx = Effects::default();
        core.apply_sample(&at(seq as i64, 0, seq), &mut fx);
        records.extend_from_slice(&fx.records);
    }
    let bytes = core.snapshot().unwrap();
    let mut restored = self::core();
    restored.restore(Snapshot::decode(&bytes).unwrap()).unwrap();
    for seq in [1, 2, 3, 5, 9] {
        assert_eq!(
            apply(&mut restored, at(seq as i64, 0, seq)).0,
            SampleOutcome::Duplicate
        );
    }
    assert_eq!(apply(&mut restored, at(4, 0, 4)).0, SampleOutcome::Late);

    let mut replayed = self::core();
    let mut rest = records.as_slice();
    while !rest.is_empty() {
        let (record, tail) = postcard::take_from_bytes::<JournalRecord>(rest).unwrap();
        replayed.replay(&record);
        rest = tail;
    }
    assert_eq!(replayed.state().version, 5);
    assert_eq!(current(&replayed).seq, 9);
    assert_eq!(
        apply(&mut replayed, at(3, 0, 3)).0,
        SampleOutcome::Duplicate
    );
}

/// Replays journal records from `bytes` into `core`.
fn replay_all(core: &mut TwinCore, bytes: &[u8]) {
    let mut rest = bytes;
    while !rest.is_empty() {
        let (record, tail) = postcard::take_from_bytes::<JournalRecord>(rest).unwrap();
        core.replay(&record);
        rest = tail;
    }
}

fn alarm_codes(core: &TwinCore) -> Vec<&str> {
    core.state()
        .alarms
        .iter()
        .map(|a| a.code.as_str())
        .collect()
}

#[test]
fn a_channel_past_its_max_age_goes_stale_and_the_next_reading_lifts_it() {
    let mut core = core();
    let reading = at(0, 0, 1);
    let received = reading.receive_time;
    apply(&mut core, reading);
    let max_age = Duration::from_secs(30);
    let mut fx = Effects::default();
    let due = core.sweep(received.plus(Duration::from_secs(10)), max_age, &mut fx);
    assert_eq!(
        due,
        Some(received.plus(max_age)),
        "watched from its arrival"
    );
    assert_eq!(fx.events, 0);

    let later = received.plus(Duration::from_secs(31));
    let due = core.sweep(later, max_age, &mut fx);
    assert_eq!(due, None, "nothing left to watch");
    assert_eq!((fx.events, fx.conditions), (1, 1));
    assert_eq!(current(&core).quality, Quality::Stale);
    assert_eq!(current(&core).value, reading.value, "the value is kept");
    let condition = core.state().condition(PRESSURE).unwrap();
    assert_eq!(condition.reason, "no reading for 31 s (max age 30 s)");
    assert_eq!(alarm_codes(&core), vec!["stale:pressure"]);
    let version = core.state().version;
    core.sweep(later.plus(Duration::from_secs(60)), max_age, &mut fx);
    assert_eq!(core.state().version, version, "stale once, not again");
    assert!(
        core.report().reported[PRESSURE.0 as usize]
            .condition
            .is_some()
    );

    // The journal carries the condition: a replay ends in the same place.
    let mut replayed = self::core();
    let mut all = Effects::default();
    let mut fresh = self::core();
    fresh.apply_sample(&reading, &mut all);
    all.records.extend_from_slice(&fx.records);
    replay_all(&mut replayed, &all.records);
    assert_eq!(current(&replayed).quality, Quality::Stale);
    assert_eq!(alarm_codes(&replayed), vec!["stale:pressure"]);

    let (outcome, fx) = apply(&mut core, at(40, 0, 2));
    assert_eq!(outcome, SampleOutcome::Applied);
    assert_eq!(current(&core).quality, Quality::Good);
    assert!(core.state().condition(PRESSURE).is_none());
    assert!(
        core.state().alarms.iter().all(|a| !a.active),
        "the alarm clears with it (returned to normal, unacknowledged)"
    );
    assert!(core.freshness_changed(), "its clock runs again");
    replay_all(&mut replayed, &fx.records);
    assert!(replayed.state().alarms.iter().all(|a| !a.active));
    assert_eq!(current(&replayed).quality, Quality::Good);
}

#[test]
fn a_late_reading_does_not_lift_staleness_and_zero_never_goes_stale() {
    let mut core = core();
    let reading = at(10, 0, 10);
    apply(&mut core, reading);
    let mut fx = Effects::default();
    let later = reading.receive_time.plus(Duration::from_secs(120));
    assert_eq!(core.sweep(later, Duration::ZERO, &mut fx), None);
    assert_eq!(fx.events, 0, "max age 0: never stale");
    core.sweep(later, Duration::from_secs(60), &mut fx);
    assert_eq!(current(&core).quality, Quality::Stale);
    assert_eq!(apply(&mut core, at(5, 0, 5)).0, SampleOutcome::Late);
    assert_eq!(current(&core).quality, Quality::Stale);
}

#[test]
fn a_lost_source_stales_only_the_channels_it_fed() {
    let mut core = core();
    apply(&mut core, at(0, 0, 1));
    let flow = Sample {
        channel: FLOW,
        source: SourceId(2),
        value: 40.0,
        ..at(0, 0, 1)
    };
    apply(&mut core, flow);
    let mut fx = Effects {
        collect_changes: true,
        ..Effects::default()
    };
    core.sources_lost(
        &[SourceId(2)],
        "mqtt `plant` lost its broker",
        Timestamp::now(),
        &mut fx,
    );
    assert_eq!(current(&core).quality, Quality::Good);
    let flow_now = core.state().current(FLOW).unwrap();
    assert_eq!(flow_now.quality, Quality::Stale);
    assert_eq!(
        core.state().condition(FLOW).unwrap().reason,
        "mqtt `plant` lost its broker"
    );
    let kinds: Vec<&str> = fx
        .changes
        .iter()
        .map(|c| match &c.change {
            crate::twin::TwinChange::Condition { .. } => "condition",
            crate::twin::TwinChange::AlarmRaised(_) => "alarm",
            _ => "other",
        })
        .collect();
    assert_eq!(kinds, vec!["condition", "alarm"]);

    // The source is back and delivers the same reading again: fresh, not a duplicate.
    let (outcome, fx) = apply(&mut core, flow);
    assert_eq!(outcome, SampleOutcome::Renewed);
    assert_eq!(fx.events, 1, "journaled, so a replay renews it too");
    assert_eq!(core.state().current(FLOW).unwrap().quality, Quality::Good);
    assert!(core.state().alarms.iter().all(|a| !a.active));
    assert_eq!(apply(&mut core, flow).0, SampleOutcome::Duplicate);
}

#[test]
fn a_reported_failure_marks_the_channel_bad_until_a_reading_measured_after_it() {
    let mut core = core();
    apply(&mut core, at(0, 0, 1));
    let failed_at = at(20, 0, 0).source_time;
    let failure = crate::twin::ChannelCondition {
        quality: Quality::Bad,
        reason: "BadSensorFailure".to_string(),
        since: failed_at,
    };
    let mut fx = Effects::default();
    assert!(core.mark(PRESSURE, failure.clone(), Timestamp::now(), &mut fx));
    assert!(
        !core.mark(PRESSURE, failure, Timestamp::now(), &mut fx),
        "once"
    );
    assert_eq!(current(&core).quality, Quality::Bad);
    assert_eq!(alarm_codes(&core), vec!["bad:pressure"]);
    let bytes = core.snapshot().unwrap();

    // Measured before the failure: history, not current.
    assert_eq!(apply(&mut core, at(10, 0, 2)).0, SampleOutcome::Late);
    assert_eq!(current(&core).quality, Quality::Bad);
    // Staleness does not hide a failure.
    core.sweep(
        Timestamp::now().plus(Duration::from_secs(3600)),
        Duration::from_secs(1),
        &mut fx,
    );
    assert_eq!(
        core.state().condition(PRESSURE).unwrap().quality,
        Quality::Bad
    );
    assert_eq!(apply(&mut core, at(30, 0, 3)).0, SampleOutcome::Applied);
    assert_eq!(current(&core).quality, Quality::Good);
    assert!(core.state().alarms.iter().all(|a| !a.active));

    // A snapshot keeps the condition.
    let mut restored = self::core();
    restored.restore(Snapshot::decode(&bytes).unwrap()).unwrap();
    let condition = restored.state().condition(PRESSURE).unwrap();
    assert_eq!(condition.reason, "BadSensorFailure");
    assert_eq!(current(&restored).quality, Quality::Bad);
}

/// Feeds `arrivals` to a fresh core with history `capacity`; checks each distinct
/// reading is kept once, the newest is current, and a replay of the journal rebuilds
/// the same state.
fn kept_once(arrivals: &[u64], capacity: usize) -> Result<(), TestCaseError> {
    let mut core = core_with_history(capacity);
    let mut kept = HashSet::new();
    let mut records = Vec::new();
    for seq in arrivals {
        let mut fx = Effects::default();
        match core.apply_sample(&at(*seq as i64, 0, *seq), &mut fx) {
            SampleOutcome::Applied | SampleOutcome::Late => {
                prop_assert!(kept.insert(*seq), "{seq} kept twice");
            }
            SampleOutcome::Duplicate => prop_assert!(kept.contains(seq), "{seq} lost"),
            SampleOutcome::Refused(reason) => prop_assert!(false, "{seq} refused: {reason:?}"),
            SampleOutcome::Renewed => prop_assert!(false, "{seq} renewed: nothing went stale"),
        }
        records.extend_from_slice(&fx.records);
    }
    let distinct: HashSet<u64> = arrivals.iter().copied().collect();
    prop_assert_eq!(kept, distinct.clone());
    let newest = distinct.iter().max().copied().unwrap_or(0);
    prop_assert_eq!(current(&core).seq, newest);
    prop_assert_eq!(core.state().version, distinct.len() as u64);

    let mut replayed = core_with_history(capacity);
    let mut rest = records.as_slice();
    while !rest.is_empty() {
        let (record, tail) = postcard::take_from_bytes::<JournalRecord>(rest).unwrap();
        replayed.replay(&record);
        rest = tail;
    }
    prop_assert_eq!(current(&replayed), current(&core));
    prop_assert_eq!(
        replayed.history(PRESSURE, Timestamp(i64::MIN), Timestamp(i64::MAX)),
        core.history(PRESSURE, Timestamp(i64::MIN), Timestamp(i64::MAX))
    );
    Ok(())
}

proptest! {
    /// Readings in any order, each delivered up to three times, with memory enough to
    /// hold them: each is kept exactly once.
    #[test]
    fn every_reading_is_kept_once_whatever_the_order(
        arrivals in proptest::collection::vec(1u64..=150, 1..450).prop_shuffle(),
    ) {
        kept_once(&arrivals, 512)?;
    }

    /// A backlog reordered the way reconnects reorder it (a few runs of readings
    /// overtaking one another), with redeliveries anywhere, at the default history
    /// size: each reading is kept exactly once.
    #[test]
    fn a_reordered_backlog_with_redeliveries_is_kept_once(
        cuts in proptest::collection::btree_set(1u64..300, 0..6),
        order in Just(()).prop_perturb(|_, mut rng| rng.random::<u64>()),
        repeats in proptest::collection::vec((1u64..=300, 0usize..900), 0..200),
    ) {
        let mut bounds: Vec<u64> = std::iter::once(1).chain(cuts).chain(std::iter::once(301)).collect();
        bounds.dedup();
        let mut runs: Vec<Vec<u64>> = bounds.windows(2).map(|w| (w[0]..w[1]).collect()).collect();
        // A deterministic shuffle of the runs from the drawn seed.
        let mut seed = order;
        for i in (1..runs.len()).rev() {
            seed = seed.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1);
            runs.swap(i, (seed >> 33) as usize % (i + 1));
        }
        let mut arrivals: Vec<u64> = runs.concat();
        for (seq, at) in repeats {
            // A redelivery comes after the reading itself.
            let first = arrivals.iter().position(|s| *s == seq).unwrap_or(0);
            let at = (first + 1 + at).min(arrivals.len());
            arrivals.insert(at, seq);
        }
        kept_once(&arrivals, HISTORY)?;
    }
}

/// One step of a freshness script: a reading on a channel, a sweep, or the source
/// losing touch, each after the clock advanced.
#[derive(Debug, Clone)]
enum Step {
    Read(u16),
    Sweep,
    Lose,
}

fn step() -> impl Strategy<Value = (Step, u32)> {
    (
        prop_oneof![
            (0u16..2).prop_map(Step::Read),
            Just(Step::Sweep),
            Just(Step::Lose)
        ],
        0u32..4_000,
    )
}

proptest! {
    /// Whatever the timing of readings, sweeps and losses: after a sweep, a channel is
    /// stale exactly when it has a value and either nothing newer arrived for its
    /// maximum age or its source was lost since; a reading makes it fresh; a replay of
    /// the journal ends under the same conditions and alarms.
    #[test]
    fn a_channel_is_stale_exactly_when_it_should_be(
        script in proptest::collection::vec(step(), 1..80),
    ) {
        let max_age = Duration::from_secs(5);
        let mut core = core();
        let mut records = Vec::new();
        let mut now = Timestamp(1_000_000_000_000_000);
        let mut seq = 0;
        // Per channel: when its current reading arrived, and whether the source was
        // lost since.
        let mut model: [Option<(Timestamp, bool)>; 2] = [None, None];
        for (step, advance_ms) in script {
            now = now.plus(Duration::from_millis(u64::from(advance_ms)));
            let mut fx = Effects::default();
            match step {
                Step::Read(channel) => {
                    seq += 1;
                    let sample = Sample {
                        channel: ChannelId(channel),
                        value: 1.0,
                        source_time: now,
                        receive_time: now,
                        quality: Quality::Good,
                        source: SourceId(1),
                        epoch: 0,
                        seq,
                        stamped: true,
                    };
                    prop_assert_eq!(core.apply_sample(&sample, &mut fx), SampleOutcome::Applied);
                    model[channel as usize] = Some((now, false));
                }
                Step::Sweep => {
                    core.sweep(now, max_age, &mut fx);
                }
                Step::Lose => {
                    core.sources_lost(&[SourceId(1)], "lost", now, &mut fx);
                    for slot in model.iter_mut().flatten() {
                        slot.1 = true;
                    }
                }
            }
            records.extend_from_slice(&fx.records);
            for (index, slot) in model.iter().enumerate() {
                let channel = ChannelId(index as u16);
                let stale = core.state().condition(channel).is_some();
                let alarmed = core.state().alarms.iter().any(|a| a.code.starts_with("stale:"));
                match (slot, &step) {
                    (None, _) => prop_assert!(!stale),
                    (Some((_, true)), _) => prop_assert!(stale, "lost, so stale"),
                    (Some((at, false)), Step::Sweep) => {
                        prop_assert_eq!(stale, now.as_micros() - at.as_micros() >= max_age.as_micros() as i64);
                    }
                    (Some((at, false)), _) if stale => {
                        prop_assert!(now.as_micros() - at.as_micros() >= max_age.as_micros() as i64);
                    }
                    _ => {}
                }
                if stale {
                    prop_assert!(alarmed);
                }
            }
        }
        let mut replayed = self::core();
        replay_all(&mut replayed, &records);
        for index in 0..2 {
            let channel = ChannelId(index);
            prop_assert_eq!(replayed.state().condition(channel), core.state().condition(channel));
        }
        prop_assert_eq!(&replayed.state().alarms, &core.state().alarms);
    }
}

#[test]
fn a_full_history_ring_turns_over_in_place_and_keeps_late_readings_in_order() {
    let capacity = 8;
    let mut core = core_with_history(capacity);
    for seq in 1..=40 {
        apply(&mut core, at(seq as i64 * 10, 0, seq));
    }
    let seqs = |core: &TwinCore| {
        core.history(PRESSURE, Timestamp(i64::MIN), Timestamp(i64::MAX))
            .iter()
            .map(|s| s.seq)
            .collect::<Vec<_>>()
    };
    assert_eq!(seqs(&core), (33..=40).collect::<Vec<_>>(), "the newest 8");
    let ring = &core.state().channels[PRESSURE.0 as usize].history;
    assert_eq!(ring.capacity(), capacity, "never grown past its capacity");

    // A late reading between two it holds takes its place in order; the oldest goes.
    let (outcome, _) = apply(&mut core, at(355, 0, 41));
    assert_eq!(outcome, SampleOutcome::Late);
    assert_eq!(seqs(&core), vec![34, 35, 41, 36, 37, 38, 39, 40]);
    // One older than all it holds is journaled, not kept.
    let (outcome, fx) = apply(&mut core, at(5, 0, 42));
    assert_eq!((outcome, fx.events), (SampleOutcome::Late, 1));
    assert_eq!(seqs(&core), vec![34, 35, 41, 36, 37, 38, 39, 40]);
    assert_eq!(
        core.state().channels[PRESSURE.0 as usize]
            .history
            .capacity(),
        capacity
    );
}
