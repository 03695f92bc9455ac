//! Alarms and their lifecycle, after ISA-18.2.
//!
//! An alarm is raised by a model, a governor, an input condition or the node, and
//! stays in the twin's list until it is both back to normal and acknowledged:
//!
//! - **active, unacknowledged** when raised (again, after it returned to normal; or
//!   when its severity rises);
//! - **active, acknowledged** once an operator acknowledges it;
//! - **returned to normal, unacknowledged** when its condition clears before anyone
//!   acknowledged it; acknowledging it then removes it;
//! - **normal** (removed from the list) when it clears after it was acknowledged.
//!
//! Beside that, an alarm can be **shelved** by an operator (with a reason, until an
//! instant: it then comes back, unacknowledged if still active), taken **out of
//! service** (maintenance, until returned), or **suppressed by design** while the
//! twin's run state makes it meaningless (see the type's `suppress_when`). A latched
//! trip's alarm cannot be shelved or taken out of service. Only a standing alarm
//! (active, and neither shelved, out of service nor suppressed) counts towards a
//! twin's worst severity and the plant's alarm figures.
//!
//! Responses (acknowledge, shelve, unshelve, out of service, return to service) are
//! journaled events of their own, audited and replicated; they never pass a
//! governor's setpoint review.

use std::collections::{HashMap, VecDeque};
use std::time::Duration;

use parking_lot::Mutex;
use serde::{Deserialize, Serialize};

use crate::path::AssetPath;
use crate::time::Timestamp;

/// The window of ISA-18.2's alarm rate: activations per 10 minutes.
pub const RATE_WINDOW: Duration = Duration::from_secs(600);

/// An alarm that activates this many times within [`CHATTER_WINDOW`] chatters.
pub const CHATTER_COUNT: u32 = 3;

/// The window in which repeated activations make an alarm chatter.
pub const CHATTER_WINDOW: Duration = Duration::from_secs(60);

/// Most activations a node remembers; beyond, the oldest go (and are counted).
const LOG_CAPACITY: usize = 100_000;

/// When alarms of a node's twins became active, over the last [`RATE_WINDOW`]: what
/// ISA-18.2's rate figures are computed from. Times are the node's clock when the
/// twin raised the alarm (when an operator would see it), not the reading's.
#[derive(Default)]
pub struct AlarmLog {
    recent: Mutex<VecDeque<(Timestamp, AssetPath, String)>>,
}

/// ISA-18.2 figures of the twins under a prefix.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AlarmRates {
    /// Alarm activations in the last [`RATE_WINDOW`].
    pub activations: u32,
    /// Alarms that activated [`CHATTER_COUNT`] times or more within
    /// [`CHATTER_WINDOW`] in the last [`RATE_WINDOW`]: twin, code, activations in the
    /// window.
    pub chattering: Vec<(AssetPath, String, u32)>,
}

impl AlarmLog {
    /// Records that alarm `code` of `asset` became active at `at`.
    pub fn record(&self, asset: &AssetPath, code: String, at: Timestamp) {
        let mut recent = self.recent.lock();
        Self::prune(&mut recent, at);
        if recent.len() == LOG_CAPACITY {
            recent.pop_front();
        }
        recent.push_back((at, asset.clone(), code));
    }

    fn prune(recent: &mut VecDeque<(Timestamp, AssetPath, String)>, now: Timestamp) {
        let horizon = Timestamp(now.0.saturating_sub(RATE_WINDOW.as_micros() as i64));
        while recent.front().is_some_and(|(at, _, _)| *at < horizon) {
            recent.pop_front();
        }
    }

    /// The figures of the twins at or below `prefix` (all without one) at `now`.
    pub fn rates(&self, prefix: Option<&AssetPath>, now: Timestamp) -> AlarmRates {
        let mut recent = self.recent.lock();
        Self::prune(&mut recent, now);
        let mut by_alarm: HashMap<(&AssetPath, &str), Vec<Timestamp>> = HashMap::new();
        let mut activations = 0u32;
        for (at, asset, code) in recent.iter() {
            if prefix.is_some_and(|prefix| !asset.starts_with(prefix)) {
                continue;
            }
            activations += 1;
            by_alarm
                .entry((asset, code.as_str()))
                .or_default()
                .push(*at);
        }
        let window = CHATTER_WINDOW.as_micros() as i64;
        let mut chattering: Vec<(AssetPath, String, u32)> = by_alarm
            .into_iter()
            .filter(|(_, times)| {
                // Times are in order: any CHATTER_COUNT consecutive ones within the window.
                let n = CHATTER_COUNT as usize;
                times.len() >= n && times.windows(n).any(|w| w[n - 1].0 - w[0].0 <= window)
            })
            .map(|((asset, code), times)| (asset.clone(), code.to_string(), times.len() as u32))
            .collect();
        chattering.sort();
        AlarmRates {
            activations,
            chattering,
        }
    }
}

/// Alarm severity.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    /// Worth knowing.
    Info,
    /// Needs attention now or soon.
    Warning,
    /// Needs attention now.
    Critical,
}

/// An alarm in a twin's list: raised and not yet both normal and acknowledged.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Alarm {
    /// Stable code, unique among a twin's alarms (`rul_low`, `trip:overtemp`).
    pub code: String,
    /// Severity.
    pub severity: Severity,
    /// Human message.
    pub message: String,
    /// The model or governor that raised it.
    pub raised_by: String,
    /// When it was raised (last became active).
    pub since: Timestamp,
    /// Its condition holds; false once it returned to normal unacknowledged.
    pub active: bool,
    /// Who acknowledged it, when and with what note; `None` while unacknowledged.
    pub acknowledged: Option<AlarmNote>,
    /// Shelved by an operator, until an instant.
    pub shelved: Option<Shelving>,
    /// Out of service (maintenance) until returned to service.
    pub out_of_service: Option<AlarmNote>,
    /// Suppressed by design: the twin's run state makes it meaningless.
    pub suppressed: bool,
}

/// Who did something to an alarm, when, and what they said.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AlarmNote {
    /// The principal.
    pub by: String,
    /// When.
    pub at: Timestamp,
    /// Their note or reason (may be empty).
    pub note: String,
}

/// A shelved alarm's shelving.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Shelving {
    /// Who shelved it, when, and why.
    pub note: AlarmNote,
    /// When it comes back by itself.
    pub until: Timestamp,
}

/// An operator's (or the node's) response to an alarm.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum AlarmResponse {
    /// Acknowledge it, with an optional note.
    Acknowledge(AlarmNote),
    /// Shelve it until an instant, with a reason.
    Shelve(Shelving),
    /// Unshelve it (by hand, or by the node when the shelving expired).
    Unshelve(AlarmNote),
    /// Take it out of service, with a reason.
    RemoveFromService(AlarmNote),
    /// Return it to service.
    ReturnToService(AlarmNote),
}

impl AlarmResponse {
    /// The response's name, as the audit log and the API name it.
    pub fn name(&self) -> &'static str {
        match self {
            AlarmResponse::Acknowledge(_) => "acknowledge",
            AlarmResponse::Shelve(_) => "shelve",
            AlarmResponse::Unshelve(_) => "unshelve",
            AlarmResponse::RemoveFromService(_) => "remove_from_service",
            AlarmResponse::ReturnToService(_) => "return_to_service",
        }
    }

    /// Who responded, when, and what they said.
    pub fn note(&self) -> &AlarmNote {
        match self {
            AlarmResponse::Acknowledge(note)
            | AlarmResponse::Unshelve(note)
            | AlarmResponse::RemoveFromService(note)
            | AlarmResponse::ReturnToService(note) => note,
            AlarmResponse::Shelve(shelving) => &shelving.note,
        }
    }
}

/// Why a response to an alarm was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AlarmRefusal {
    /// The twin has no alarm with that code.
    #[error("no alarm `{0}`")]
    Unknown(String),
    /// A latched trip's alarm stays in view until the trip is cleared.
    #[error("alarm `{0}` is a latched trip: it cannot be shelved or taken out of service")]
    Latched(String),
    /// The response changes nothing (already acknowledged, not shelved, …).
    #[error("alarm `{code}` is {state}")]
    NoChange {
        /// The alarm.
        code: String,
        /// Its state, in words.
        state: &'static str,
    },
    /// A shelving that ends before it starts.
    #[error("alarm `{0}`: a shelving must end in the future")]
    PastShelving(String),
}

impl Alarm {
    /// A newly raised alarm: active, unacknowledged.
    pub fn new(
        code: impl Into<String>,
        severity: Severity,
        message: impl Into<String>,
        raised_by: impl Into<String>,
        since: Timestamp,
    ) -> Self {
        Self {
            code: code.into(),
            severity,
            message: message.into(),
            raised_by: raised_by.into(),
            since,
            active: true,
            acknowledged: None,
            shelved: None,
            out_of_service: None,
            suppressed: false,
        }
    }

    /// Active, and neither shelved, out of service nor suppressed: it counts.
    pub fn is_standing(&self) -> bool {
        self.active && self.shelved.is_none() && self.out_of_service.is_none() && !self.suppressed
    }

    /// Its state in ISA-18.2 words: `unacknowledged`, `acknowledged`,
    /// `returned unacknowledged`, `shelved`, `out of service`, `suppressed`.
    pub fn state_name(&self) -> &'static str {
        if self.out_of_service.is_some() {
            "out of service"
        } else if self.shelved.is_some() {
            "shelved"
        } else if self.suppressed {
            "suppressed"
        } else if !self.active {
            "returned unacknowledged"
        } else if self.acknowledged.is_some() {
            "acknowledged"
        } else {
            "unacknowledged"
        }
    }

    /// True for the alarm of a latched trip.
    pub fn is_trip(&self) -> bool {
        self.code.starts_with("trip:")
    }
}

/// A twin's alarm list: the transitions every holder of one (the twin, a mirror)
/// applies alike. Each returns the alarm as it is now (`Some`) or `None` when it left
/// the list, wrapped in `Changed` only when something changed.
pub(crate) mod list {
    use super::{Alarm, AlarmRefusal, AlarmResponse};
    use crate::time::Timestamp;

    /// What a transition did to an alarm.
    #[derive(Debug, Clone, PartialEq)]
    pub enum Changed {
        /// The alarm, as it is now.
        Now(Box<Alarm>),
        /// The alarm left the list (normal).
        Gone,
    }

    /// Raises `alarm`: a new entry, or the existing one of the same code updated. It
    /// is unacknowledged again when it becomes active again or its severity rises.
    pub fn raise(alarms: &mut Vec<Alarm>, alarm: Alarm) -> Option<Changed> {
        let Some(existing) = alarms.iter_mut().find(|a| a.code == alarm.code) else {
            alarms.push(alarm.clone());
            return Some(Changed::Now(Box::new(alarm)));
        };
        let again = !existing.active;
        if !again && existing.severity == alarm.severity && existing.message == alarm.message {
            return None;
        }
        if again || alarm.severity > existing.severity {
            existing.acknowledged = None;
        }
        if again {
            existing.since = alarm.since;
        }
        existing.active = true;
        existing.severity = alarm.severity;
        existing.message = alarm.message;
        existing.raised_by = alarm.raised_by;
        Some(Changed::Now(Box::new(existing.clone())))
    }

    /// Its condition returned to normal: an acknowledged (or out-of-service) alarm
    /// leaves the list; an unacknowledged one stays, returned to normal.
    pub fn clear(alarms: &mut Vec<Alarm>, code: &str) -> Option<Changed> {
        let at = alarms.iter().position(|a| a.code == code && a.active)?;
        let alarm = &mut alarms[at];
        if alarm.acknowledged.is_some() || alarm.out_of_service.is_some() || alarm.suppressed {
            alarms.remove(at);
            return Some(Changed::Gone);
        }
        alarm.active = false;
        Some(Changed::Now(Box::new(alarm.clone())))
    }

    /// Applies an operator's (or the node's) response.
    pub fn respond(
        alarms: &mut Vec<Alarm>,
        code: &str,
        response: &AlarmResponse,
    ) -> Result<Changed, AlarmRefusal> {
        let at = alarms
            .iter()
            .position(|a| a.code == code)
            .ok_or_else(|| AlarmRefusal::Unknown(code.to_string()))?;
        let alarm = &mut alarms[at];
        let no_change = |alarm: &Alarm| AlarmRefusal::NoChange {
            code: code.to_string(),
            state: alarm.state_name(),
        };
        match response {
            AlarmResponse::Acknowledge(note) => {
                if alarm.acknowledged.is_some() {
                    return Err(no_change(alarm));
                }
                alarm.acknowledged = Some(note.clone());
                if !alarm.active {
                    alarms.remove(at);
                    return Ok(Changed::Gone);
                }
            }
            AlarmResponse::Shelve(shelving) => {
                if alarm.is_trip() {
                    return Err(AlarmRefusal::Latched(code.to_string()));
                }
                if shelving.until <= shelving.note.at {
                    return Err(AlarmRefusal::PastShelving(code.to_string()));
                }
                alarm.shelved = Some(shelving.clone());
            }
            AlarmResponse::Unshelve(_) => {
                if alarm.shelved.take().is_none() {
                    return Err(no_change(alarm));
                }
                // Back in view as if raised again: an operator must see it.
                if alarm.active {
                    alarm.acknowledged = None;
                }
            }
            AlarmResponse::RemoveFromService(note) => {
                if alarm.is_trip() {
                    return Err(AlarmRefusal::Latched(code.to_string()));
                }
                if alarm.out_of_service.is_some() {
                    return Err(no_change(alarm));
                }
                alarm.out_of_service = Some(note.clone());
            }
            AlarmResponse::ReturnToService(_) => {
                if alarm.out_of_service.take().is_none() {
                    return Err(no_change(alarm));
                }
                if !alarm.active && alarm.acknowledged.is_some() {
                    alarms.remove(at);
                    return Ok(Changed::Gone);
                }
            }
        }
        Ok(Changed::Now(Box::new(alarm.clone())))
    }

    /// Shelvings that ended by `now`: the codes to unshelve.
    pub fn shelving_ended(alarms: &[Alarm], now: Timestamp) -> Vec<String> {
        alarms
            .iter()
            .filter(|a| a.shelved.as_ref().is_some_and(|s| s.until <= now))
            .map(|a| a.code.clone())
            .collect()
    }

    /// When the next shelving ends, if any.
    pub fn next_shelving_end(alarms: &[Alarm]) -> Option<Timestamp> {
        alarms
            .iter()
            .filter_map(|a| a.shelved.as_ref().map(|s| s.until))
            .min()
    }
}

#[cfg(test)]
mod tests {
    use super::list::{self, Changed};
    use super::*;

    fn note(by: &str, at: i64) -> AlarmNote {
        AlarmNote {
            by: by.into(),
            at: Timestamp(at),
            note: String::new(),
        }
    }

    fn raised(code: &str) -> Vec<Alarm> {
        vec![Alarm::new(
            code,
            Severity::Warning,
            "high",
            "model",
            Timestamp(1),
        )]
    }

    #[test]
    fn an_alarm_that_clears_unacknowledged_stays_until_acknowledged() {
        let mut alarms = raised("hot");
        let Some(Changed::Now(alarm)) = list::clear(&mut alarms, "hot") else {
            panic!("stays")
        };
        assert!(!alarm.active);
        assert_eq!(alarm.state_name(), "returned unacknowledged");
        let ack = AlarmResponse::Acknowledge(note("ann", 2));
        assert_eq!(list::respond(&mut alarms, "hot", &ack), Ok(Changed::Gone));
        assert!(alarms.is_empty());
    }

    #[test]
    fn an_acknowledged_alarm_leaves_when_it_clears_and_comes_back_unacknowledged() {
        let mut alarms = raised("hot");
        let ack = AlarmResponse::Acknowledge(note("ann", 2));
        list::respond(&mut alarms, "hot", &ack).unwrap();
        assert_eq!(
            list::respond(&mut alarms, "hot", &ack),
            Err(AlarmRefusal::NoChange {
                code: "hot".into(),
                state: "acknowledged"
            })
        );
        assert_eq!(list::clear(&mut alarms, "hot"), Some(Changed::Gone));
        list::raise(
            &mut alarms,
            Alarm::new("hot", Severity::Warning, "high", "model", Timestamp(3)),
        );
        assert!(alarms[0].acknowledged.is_none());
    }

    #[test]
    fn a_rising_severity_asks_for_acknowledgement_again() {
        let mut alarms = raised("hot");
        list::respond(
            &mut alarms,
            "hot",
            &AlarmResponse::Acknowledge(note("ann", 2)),
        )
        .unwrap();
        list::raise(
            &mut alarms,
            Alarm::new("hot", Severity::Info, "warm", "model", Timestamp(3)),
        );
        assert!(
            alarms[0].acknowledged.is_some(),
            "a lower severity does not"
        );
        list::raise(
            &mut alarms,
            Alarm::new(
                "hot",
                Severity::Critical,
                "very high",
                "model",
                Timestamp(4),
            ),
        );
        assert!(alarms[0].acknowledged.is_none());
        assert_eq!(alarms[0].since, Timestamp(1), "still the same occurrence");
    }

    #[test]
    fn a_shelved_alarm_does_not_stand_and_a_trip_is_never_shelved() {
        let mut alarms = raised("hot");
        alarms.push(Alarm::new(
            "trip:overtemp",
            Severity::Critical,
            "over",
            "overtemp",
            Timestamp(1),
        ));
        let shelve = AlarmResponse::Shelve(Shelving {
            note: note("ann", 2),
            until: Timestamp(10),
        });
        list::respond(&mut alarms, "hot", &shelve).unwrap();
        assert!(!alarms[0].is_standing());
        assert_eq!(
            list::shelving_ended(&alarms, Timestamp(9)),
            Vec::<String>::new()
        );
        assert_eq!(list::shelving_ended(&alarms, Timestamp(10)), vec!["hot"]);
        assert_eq!(
            list::respond(&mut alarms, "trip:overtemp", &shelve),
            Err(AlarmRefusal::Latched("trip:overtemp".into()))
        );
        let out = AlarmResponse::RemoveFromService(note("ann", 2));
        assert!(list::respond(&mut alarms, "trip:overtemp", &out).is_err());
        list::respond(
            &mut alarms,
            "hot",
            &AlarmResponse::Unshelve(note("node", 10)),
        )
        .unwrap();
        assert!(alarms[0].is_standing());
        assert!(alarms[0].acknowledged.is_none());
    }

    #[test]
    fn a_shelving_must_end_in_the_future() {
        let mut alarms = raised("hot");
        let shelve = AlarmResponse::Shelve(Shelving {
            note: note("ann", 5),
            until: Timestamp(5),
        });
        assert_eq!(
            list::respond(&mut alarms, "hot", &shelve),
            Err(AlarmRefusal::PastShelving("hot".into()))
        );
        assert_eq!(
            list::respond(&mut alarms, "cold", &shelve),
            Err(AlarmRefusal::Unknown("cold".into()))
        );
    }
}
