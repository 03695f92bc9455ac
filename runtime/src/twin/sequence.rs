//! Which readings a twin has applied, per source and channel: exact duplicate
//! detection by (source, epoch, sequence number) in bounded memory.
//!
//! A reading is identified by its source, the source's epoch (a publisher that
//! restarts its numbering starts a new one) and its sequence number. For each
//! (source, channel) a twin keeps a [`SeqWindow`]: for the current epoch, and for the
//! one before it, the range of sequence numbers seen, `[floor, high]`, less the gaps
//! not seen yet. Within that range the answer is exact. Readings in order cost no
//! memory beyond the range; each gap costs one entry, and at most [`MAX_GAPS`] are
//! kept: past that, the oldest gap is given up and the floor rises above it. A skip
//! wider than [`MAX_GAP_SPAN`] is no gap: the floor rises to the new number. Below a
//! floor that rose, the window cannot tell, and the caller looks the reading up in the
//! channel's history (see [`TwinState::apply_sample`](super::TwinState::apply_sample)).
//!
//! Readings numbered by their own timestamp (Sparkplug metrics, JSON readings with a
//! time and no `seq`) have sparse numbers: for them the window keeps only the newest,
//! and older ones are looked up in history by time, where they are ordered.
//!
//! A third epoch replaces the older of the two a window keeps: a straggler from two
//! epochs back is taken for a new epoch.
//!
//! A sequence number more than [`MAX_SEQ_JUMP`] away from the range is taken for bad
//! input (a counter that overflowed, a sentinel such as 2^64 − 1) and refused; if the
//! next far reading lands near it, the source really moved there, and the window
//! starts over at it. One bad number never freezes a channel.

use serde::{Deserialize, Serialize};

use crate::sample::{ChannelId, SourceId};
use crate::time::Timestamp;

/// Gaps a window keeps per epoch before it gives up the oldest.
pub const MAX_GAPS: usize = 8;

/// The widest gap a window keeps: a skip wider than this is taken as a source
/// numbering more than this channel (one counter over many channels or assets), not as
/// readings overtaken in transit, and what lies below it is left to history.
pub const MAX_GAP_SPAN: u64 = 4096;

/// The largest step between sequence numbers taken as real: 2^48, about nine years of
/// microseconds, or three days of nanoseconds.
pub const MAX_SEQ_JUMP: u64 = 1 << 48;

/// The sequence numbers seen in one epoch of a (source, channel).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SeqSet {
    /// Lowest number the set answers for.
    floor: u64,
    /// Highest number seen.
    high: u64,
    /// Ranges in `(floor, high)` not seen yet, inclusive, in ascending order.
    gaps: Gaps,
    /// True while nothing below `floor` was ever seen (the set began there, and no gap
    /// was given up): a number below it is new.
    exact_below: bool,
}

/// The gaps of a [`SeqSet`]: allocated once a source skips, for every gap it may keep,
/// and a null pointer until then (a window of readings in order stays one cache
/// line). Serialized as a plain list.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
#[allow(
    clippy::box_collection,
    reason = "a thin pointer: most windows have no gaps, and a Vec would cost them 24 bytes"
)]
struct Gaps(Option<Box<Vec<(u64, u64)>>>);

impl Gaps {
    fn as_slice(&self) -> &[(u64, u64)] {
        self.0.as_deref().map_or(&[], Vec::as_slice)
    }

    fn len(&self) -> usize {
        self.as_slice().len()
    }

    fn vec(&mut self) -> &mut Vec<(u64, u64)> {
        self.0
            .get_or_insert_with(|| Box::new(Vec::with_capacity(MAX_GAPS + 1)))
    }

    fn clear(&mut self) {
        self.0 = None;
    }
}

impl Serialize for Gaps {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        self.as_slice().serialize(serializer)
    }
}

impl<'de> Deserialize<'de> for Gaps {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let gaps = Vec::<(u64, u64)>::deserialize(deserializer)?;
        Ok(Gaps((!gaps.is_empty()).then(|| Box::new(gaps))))
    }
}

/// What a window knows about a sequence number.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Known {
    /// Never seen.
    New,
    /// Seen.
    Seen,
    /// Below the range the window answers for.
    Unknown,
    /// Implausibly far from the range.
    FarOff,
}

impl SeqSet {
    fn starting_at(seq: u64) -> Self {
        Self {
            floor: seq,
            high: seq,
            gaps: Gaps::default(),
            exact_below: true,
        }
    }

    fn know(&self, seq: u64, time_numbered: bool) -> Known {
        if seq > self.high {
            if !time_numbered && seq - self.high > MAX_SEQ_JUMP {
                return Known::FarOff;
            }
            return Known::New;
        }
        if seq >= self.floor {
            // The gap starting at or before `seq`, if any, holds it when it reaches it.
            let gaps = self.gaps.as_slice();
            let at = gaps.partition_point(|(start, _)| *start <= seq);
            return match at.checked_sub(1).map(|i| gaps[i]) {
                Some((_, end)) if seq <= end => Known::New,
                _ => Known::Seen,
            };
        }
        if !self.exact_below {
            return Known::Unknown;
        }
        if !time_numbered && self.floor - seq > MAX_SEQ_JUMP {
            return Known::FarOff;
        }
        Known::New
    }

    /// Records a number [`know`](Self::know) called new.
    fn record(&mut self, seq: u64, time_numbered: bool) {
        if seq > self.high {
            if seq > self.high + 1 {
                if time_numbered || seq - self.high > MAX_GAP_SPAN {
                    // Sparse numbers: what lies below is looked up in history.
                    self.gaps.clear();
                    self.floor = seq;
                    self.exact_below = false;
                } else {
                    self.gaps.vec().push((self.high + 1, seq - 1));
                }
            }
            self.high = seq;
        } else if seq >= self.floor {
            let gaps = self.gaps.vec();
            let at = gaps.partition_point(|(start, _)| *start <= seq) - 1;
            let (start, end) = gaps[at];
            match (seq == start, seq == end) {
                (true, true) => {
                    gaps.remove(at);
                }
                (true, false) => gaps[at].0 = seq + 1,
                (false, true) => gaps[at].1 = seq - 1,
                (false, false) => {
                    gaps[at].1 = seq - 1;
                    gaps.insert(at + 1, (seq + 1, end));
                }
            }
        } else {
            if seq + 1 < self.floor && !time_numbered {
                self.gaps.vec().insert(0, (seq + 1, self.floor - 1));
            }
            self.floor = seq;
        }
        while self.gaps.len() > MAX_GAPS {
            // Give up the oldest gap: what lies below the new floor is no longer known.
            let (_, end) = self.gaps.vec().remove(0);
            self.floor = end + 1;
            self.exact_below = false;
        }
    }
}

/// How a window judged a reading.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admission {
    /// Not seen before: apply it.
    New,
    /// Seen before: a duplicate.
    Duplicate,
    /// Older than what the window remembers: look it up in history.
    Unknown,
    /// Its sequence number is implausibly far from the source's: refused.
    FarOff,
}

/// The readings seen from one source on one channel, in its current epoch and the one
/// before.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SeqWindow {
    /// The source.
    pub source: SourceId,
    /// The channel.
    pub channel: ChannelId,
    /// The source's current epoch.
    epoch: u32,
    /// What the current epoch has seen.
    seen: SeqSet,
    /// The epoch before, and what it saw.
    previous: Option<Box<(u32, SeqSet)>>,
    /// The newest source time among the source's stamped readings.
    newest: Timestamp,
    /// A far-off number refused last: a second one near it starts the window over.
    /// Boxed: rare, and the window stays small.
    candidate: Option<Box<u64>>,
}

/// The identity of a reading, as a window judges it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SeqKey {
    /// The source's epoch.
    pub epoch: u32,
    /// The sequence number.
    pub seq: u64,
    /// The source stamped the reading's time.
    pub stamped: bool,
    /// Its source time.
    pub source_time: Timestamp,
}

impl SeqKey {
    /// Numbered by its own timestamp, in microseconds: sparse numbers.
    fn time_numbered(&self) -> bool {
        self.stamped
            && self.source_time.as_micros() >= 0
            && self.seq == self.source_time.as_micros() as u64
    }
}

impl SeqWindow {
    /// A window whose first reading is `key`.
    pub fn new(source: SourceId, channel: ChannelId, key: &SeqKey) -> Self {
        Self {
            source,
            channel,
            epoch: key.epoch,
            seen: SeqSet::starting_at(key.seq),
            previous: None,
            newest: if key.stamped {
                key.source_time
            } else {
                Timestamp(i64::MIN)
            },
            candidate: None,
        }
    }

    /// A window carried over from a layout that kept only the highest number: it
    /// answers exactly from `high` up, and from history below.
    pub(crate) fn from_high(source: SourceId, channel: ChannelId, high: u64) -> Self {
        let mut seen = SeqSet::starting_at(high);
        seen.exact_below = false;
        Self {
            source,
            channel,
            epoch: 0,
            seen,
            previous: None,
            newest: Timestamp(i64::MIN),
            candidate: None,
        }
    }

    /// Judges a reading and, when it is new, records it.
    pub fn admit(&mut self, key: &SeqKey) -> Admission {
        let time_numbered = key.time_numbered();
        if key.epoch != self.epoch {
            if let Some(previous) = self.previous.as_mut().filter(|p| p.0 == key.epoch) {
                return match previous.1.know(key.seq, time_numbered) {
                    Known::New => {
                        previous.1.record(key.seq, time_numbered);
                        Admission::New
                    }
                    Known::Seen => Admission::Duplicate,
                    Known::Unknown | Known::FarOff => Admission::Unknown,
                };
            }
            if key.stamped && key.source_time < self.newest {
                // An older epoch's straggler: it does not start a new epoch.
                return Admission::Unknown;
            }
            let current = std::mem::replace(&mut self.seen, SeqSet::starting_at(key.seq));
            self.previous = Some(Box::new((self.epoch, current)));
            self.epoch = key.epoch;
            self.candidate = None;
            self.note_time(key);
            return Admission::New;
        }
        match self.seen.know(key.seq, time_numbered) {
            Known::New => {
                self.seen.record(key.seq, time_numbered);
                self.candidate = None;
                self.note_time(key);
                Admission::New
            }
            Known::Seen => Admission::Duplicate,
            Known::Unknown => match self.previous.as_mut().filter(|p| p.0 == key.epoch) {
                // The window started over within this epoch: the set before it knows.
                Some(previous) => match previous.1.know(key.seq, time_numbered) {
                    Known::New if previous.1.high >= key.seq => {
                        previous.1.record(key.seq, time_numbered);
                        Admission::New
                    }
                    Known::Seen => Admission::Duplicate,
                    _ => Admission::Unknown,
                },
                None => Admission::Unknown,
            },
            Known::FarOff => {
                // Numbers from before the window started over are the set before's.
                if let Some(previous) = self.previous.as_mut().filter(|p| p.0 == key.epoch) {
                    match previous.1.know(key.seq, time_numbered) {
                        Known::New if previous.1.high >= key.seq => {
                            previous.1.record(key.seq, time_numbered);
                            return Admission::New;
                        }
                        Known::Seen => return Admission::Duplicate,
                        _ => {}
                    }
                }
                let near = |c: u64| c.abs_diff(key.seq) <= MAX_SEQ_JUMP;
                if self.candidate.as_deref().copied().is_some_and(near) {
                    // Two readings agree: the source's numbering really moved.
                    let current = std::mem::replace(&mut self.seen, SeqSet::starting_at(key.seq));
                    self.previous = Some(Box::new((self.epoch, current)));
                    self.candidate = None;
                    self.note_time(key);
                    Admission::New
                } else {
                    self.candidate = Some(Box::new(key.seq));
                    Admission::FarOff
                }
            }
        }
    }

    fn note_time(&mut self, key: &SeqKey) {
        if key.stamped {
            self.newest = self.newest.max(key.source_time);
        }
    }

    /// Gaps kept, for memory accounting in tests.
    #[cfg(test)]
    fn gaps(&self) -> usize {
        self.seen.gaps.len() + self.previous.as_ref().map_or(0, |p| p.1.gaps.len())
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashSet;

    use proptest::prelude::*;

    use super::*;

    fn key(epoch: u32, seq: u64) -> SeqKey {
        SeqKey {
            epoch,
            seq,
            stamped: false,
            source_time: Timestamp(0),
        }
    }

    fn window(first: SeqKey) -> SeqWindow {
        SeqWindow::new(SourceId(1), ChannelId(0), &first)
    }

    #[test]
    fn readings_out_of_order_are_new_once_and_duplicates_after() {
        let mut w = window(key(0, 100));
        for seq in 1..100 {
            assert_eq!(w.admit(&key(0, seq)), Admission::New, "seq {seq}");
        }
        for seq in 1..=100 {
            assert_eq!(w.admit(&key(0, seq)), Admission::Duplicate, "seq {seq}");
        }
        assert_eq!(w.gaps(), 0, "a filled range keeps no gaps");
    }

    #[test]
    fn a_new_epoch_starts_numbering_again_and_the_previous_one_still_answers() {
        let mut w = window(key(1, 1));
        for seq in 2..=10 {
            assert_eq!(w.admit(&key(1, seq)), Admission::New);
        }
        for seq in 1..=10 {
            assert_eq!(w.admit(&key(2, seq)), Admission::New, "restarted at {seq}");
        }
        assert_eq!(
            w.admit(&key(1, 7)),
            Admission::Duplicate,
            "a late redelivery of epoch 1"
        );
        assert_eq!(w.admit(&key(2, 7)), Admission::Duplicate);
        assert_eq!(
            w.admit(&key(1, 11)),
            Admission::New,
            "epoch 1's unseen reading"
        );
    }

    #[test]
    fn a_sentinel_number_is_refused_and_the_channel_goes_on() {
        let mut w = window(key(0, 5));
        assert_eq!(w.admit(&key(0, u64::MAX)), Admission::FarOff);
        assert_eq!(w.admit(&key(0, 6)), Admission::New);
        assert_eq!(w.admit(&key(0, u64::MAX)), Admission::FarOff);
        assert_eq!(w.admit(&key(0, 7)), Admission::New);
    }

    #[test]
    fn a_numbering_that_really_moved_is_followed_after_one_refusal() {
        let mut w = window(key(0, u64::MAX - 3));
        assert_eq!(w.admit(&key(0, 1)), Admission::FarOff);
        assert_eq!(w.admit(&key(0, 2)), Admission::New, "confirmed: start over");
        assert_eq!(w.admit(&key(0, 3)), Admission::New);
        assert_eq!(w.admit(&key(0, 2)), Admission::Duplicate);
        assert_eq!(
            w.admit(&key(0, u64::MAX - 3)),
            Admission::Duplicate,
            "the set before still answers"
        );
    }

    #[test]
    fn gaps_are_bounded_and_what_falls_below_is_unknown() {
        let mut w = window(key(0, 0));
        for i in 1..=(MAX_GAPS as u64 + 10) {
            assert_eq!(w.admit(&key(0, i * 2)), Admission::New);
        }
        assert_eq!(w.gaps(), MAX_GAPS);
        assert_eq!(
            w.admit(&key(0, 1)),
            Admission::Unknown,
            "below a floor that rose"
        );
        let high = (MAX_GAPS as u64 + 10) * 2;
        assert_eq!(w.admit(&key(0, high - 1)), Admission::New, "a kept gap");
    }

    #[test]
    fn a_window_without_gaps_is_small_and_gaps_encode_as_a_list() {
        assert!(
            std::mem::size_of::<SeqWindow>() <= 72,
            "{}",
            std::mem::size_of::<SeqWindow>()
        );
        let mut w = window(key(0, 1));
        assert_eq!(w.admit(&key(0, 5)), Admission::New);
        let bytes = postcard::to_allocvec(&w).unwrap();
        let back: SeqWindow = postcard::from_bytes(&bytes).unwrap();
        assert_eq!(back, w);
        assert_eq!(w.gaps(), 1);
        let listed: Vec<(u64, u64)> = vec![(2, 4)];
        assert_eq!(
            postcard::to_allocvec(&w.seen.gaps).unwrap(),
            postcard::to_allocvec(&listed).unwrap()
        );
    }

    #[test]
    fn a_skip_wider_than_the_span_opens_no_gap() {
        let mut w = window(key(0, 10));
        assert_eq!(w.admit(&key(0, 20)), Admission::New);
        assert_eq!(w.gaps(), 1);
        let far = 20 + MAX_GAP_SPAN + 1;
        assert_eq!(w.admit(&key(0, far)), Admission::New);
        assert_eq!(w.gaps(), 0, "a source counting over many channels");
        assert_eq!(
            w.admit(&key(0, far - 1)),
            Admission::Unknown,
            "left to history"
        );
        assert_eq!(w.admit(&key(0, 15)), Admission::Unknown);
        assert_eq!(w.admit(&key(0, far)), Admission::Duplicate);
        assert_eq!(w.admit(&key(0, far + MAX_GAP_SPAN)), Admission::New);
        assert_eq!(w.gaps(), 1, "a skip within the span is a gap");
    }

    #[test]
    fn time_numbered_readings_keep_no_gaps() {
        let stamped = |micros: i64| SeqKey {
            epoch: 0,
            seq: micros as u64,
            stamped: true,
            source_time: Timestamp(micros),
        };
        let mut w = window(stamped(1_000_000));
        for i in 2..1000 {
            assert_eq!(w.admit(&stamped(i * 1_000_000)), Admission::New);
        }
        assert_eq!(w.gaps(), 0);
        assert_eq!(
            w.admit(&stamped(999_000_000)),
            Admission::Duplicate,
            "the newest"
        );
        assert_eq!(
            w.admit(&stamped(5_000_000)),
            Admission::Unknown,
            "older: history decides"
        );
        assert_eq!(
            w.admit(&stamped(i64::MAX / 2)),
            Admission::New,
            "time-numbered readings are not judged by their step"
        );
    }

    proptest! {
        /// Any order of any readings, duplicates among them, across epochs that
        /// advance (with stragglers of the epoch before, which the window keeps): each
        /// (epoch, seq) is new at most once, and a duplicate only when it was new
        /// before.
        #[test]
        fn each_reading_is_new_at_most_once(
            steps in proptest::collection::vec((0u8..10, 0u64..200), 1..400),
        ) {
            let mut epoch = 1u32;
            let mut w = window(key(epoch, steps[0].1));
            let mut applied: HashSet<(u32, u64)> = HashSet::from([(epoch, steps[0].1)]);
            for &(roll, seq) in &steps[1..] {
                let reading_epoch = match roll {
                    0 => {
                        epoch += 1;
                        epoch
                    }
                    1 if epoch > 1 => epoch - 1,
                    _ => epoch,
                };
                match w.admit(&key(reading_epoch, seq)) {
                    Admission::New => prop_assert!(applied.insert((reading_epoch, seq)), "{reading_epoch}/{seq} applied twice"),
                    Admission::Duplicate => prop_assert!(applied.contains(&(reading_epoch, seq)), "{reading_epoch}/{seq} taken for a duplicate"),
                    // Floors that rose leave older numbers to history.
                    Admission::Unknown => {}
                    Admission::FarOff => prop_assert!(false, "no number here is far off"),
                }
            }
        }

        /// Within one epoch, a permutation of a range with every number repeated is
        /// applied exactly once each, whatever the order, while gaps stay within bound.
        #[test]
        fn a_shuffled_backlog_with_redeliveries_is_applied_once(
            order in Just((0u64..300).chain(0..300).collect::<Vec<_>>()).prop_shuffle(),
        ) {
            let mut w = window(key(0, order[0]));
            let mut applied = HashSet::from([order[0]]);
            let mut unknown = HashSet::new();
            for &seq in &order[1..] {
                match w.admit(&key(0, seq)) {
                    Admission::New => prop_assert!(applied.insert(seq), "{seq} applied twice"),
                    Admission::Duplicate => prop_assert!(applied.contains(&seq), "{seq} taken for a duplicate"),
                    Admission::Unknown => {
                        unknown.insert(seq);
                    }
                    Admission::FarOff => prop_assert!(false, "{seq} is not far off"),
                }
                prop_assert!(w.gaps() <= MAX_GAPS);
            }
            for seq in 0..300 {
                prop_assert!(applied.contains(&seq) || unknown.contains(&seq), "{seq} lost");
            }
        }
    }
}
