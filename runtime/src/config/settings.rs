//! Runtime settings: journal batching, snapshots, supervision.

use std::time::Duration;

use serde::{Deserialize, Serialize};

/// How the journal batches and snapshots.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct JournalSettings {
    /// Longest a journal event waits before its batch commits, in milliseconds.
    pub batch_interval_ms: u64,
    /// A batch commits as soon as it holds this many events.
    pub batch_max_events: usize,
    /// A twin writes a snapshot after this many journaled events.
    pub snapshot_every: u64,
    /// Upper bound on samples accepted but not yet durable; ingest waits beyond it.
    pub max_in_flight: usize,
    /// Longest time, in milliseconds, between durable redb commits (checkpoints); batches
    /// in between are durable in the write-ahead log and replayed from it after a crash.
    pub checkpoint_interval_ms: u64,
    /// Preallocated size of the write-ahead log in bytes; a checkpoint also happens when
    /// it is half full.
    pub wal_bytes: u64,
}

impl Default for JournalSettings {
    fn default() -> Self {
        Self {
            batch_interval_ms: 5,
            batch_max_events: 20_000,
            snapshot_every: 4_096,
            max_in_flight: 1_000_000,
            checkpoint_interval_ms: 1_000,
            wal_bytes: 8 << 20,
        }
    }
}

impl JournalSettings {
    /// The batch interval as a duration.
    pub fn batch_interval(&self) -> Duration {
        Duration::from_millis(self.batch_interval_ms.max(1))
    }

    /// The checkpoint interval as a duration.
    pub fn checkpoint_interval(&self) -> Duration {
        Duration::from_millis(self.checkpoint_interval_ms.max(1))
    }
}

/// OTP-style restart intensity: more than `max_restarts` within `within_secs` escalates.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SupervisionSettings {
    /// Restarts a supervisor allows within the window before it gives up and escalates.
    pub max_restarts: u32,
    /// The window, in seconds.
    pub within_secs: u64,
}

impl Default for SupervisionSettings {
    fn default() -> Self {
        Self {
            max_restarts: 3,
            within_secs: 5,
        }
    }
}

impl SupervisionSettings {
    /// The restart window as a duration.
    pub fn window(&self) -> Duration {
        Duration::from_secs(self.within_secs)
    }
}

/// How the twin follows its desired values to the machine.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DeliverySettings {
    /// A safety action no actuator confirmed within this many milliseconds is failed,
    /// and raises a critical alarm on its twin.
    pub safety_bound_ms: u64,
}

impl Default for DeliverySettings {
    fn default() -> Self {
        Self {
            safety_bound_ms: 2_000,
        }
    }
}

impl DeliverySettings {
    /// The safety bound as a duration.
    pub fn safety_bound(&self) -> Duration {
        Duration::from_millis(self.safety_bound_ms.max(1))
    }
}

/// When idle twins are passivated: their actor stops and their state waits, encoded,
/// until the next message for them wakes them.
///
/// ```toml
/// [settings.passivation]
/// idle_secs = 600     # 0: never passivate
/// tripping = false    # also passivate twins whose governors demand safety actions
/// ```
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct PassivationSettings {
    /// A twin that handled no message for this many seconds, has nothing waiting for
    /// delivery or for a timer, and is under no watch, is passivated. 0: never.
    #[serde(deserialize_with = "seconds")]
    pub idle_secs: f64,
    /// Also passivate twins whose governors name safety commands (trips, interlocks).
    /// Off by default: a reading to a passivated twin is still watched by its governors
    /// before anything else, but it waits for the twin to wake first.
    pub tripping: bool,
}

impl Default for PassivationSettings {
    fn default() -> Self {
        Self {
            idle_secs: 600.0,
            tripping: false,
        }
    }
}

impl PassivationSettings {
    /// The idle time after which a twin is passivated; `None` when passivation is off.
    pub fn idle(&self) -> Option<Duration> {
        Duration::try_from_secs_f64(self.idle_secs)
            .ok()
            .filter(|idle| !idle.is_zero())
    }
}

/// All runtime settings of one node.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RuntimeSettings {
    /// Journal batching and snapshots.
    pub journal: JournalSettings,
    /// Restart intensity of line and plant supervisors.
    pub supervision: SupervisionSettings,
    /// Delivery of desired values to machines.
    pub delivery: DeliverySettings,
    /// Samples kept per channel in a twin's history ring.
    pub history_capacity: usize,
    /// Largest accepted distance of a source timestamp into the future, in seconds.
    pub max_future_skew_secs: u64,
    /// Largest accepted age of a source timestamp, in seconds.
    pub max_sample_age_secs: u64,
    /// How long a channel's value stays fresh without a newer reading, in seconds,
    /// unless its type sets `max_age_secs`; past it the channel is stale. 0: never.
    /// A config file with a negative or non-finite value is refused.
    #[serde(deserialize_with = "seconds")]
    pub max_age_secs: f64,
    /// Write a [`crate::twin::MirrorUpdate`] for every change to the outbox, in the
    /// journal's transactions, for replication to mirrors (cluster edge nodes).
    pub replicate: bool,
    /// When idle twins are passivated.
    pub passivation: PassivationSettings,
    /// Which model packages the node accepts. Set from a node config's `[models]`
    /// table, not from `[settings]`.
    #[serde(skip)]
    pub models: ModelSettings,
}

/// Which model packages a node accepts into its registry.
///
/// ```toml
/// [models]
/// trusted_keys = ["3b6a27bcceb6a42d62a3a8d02a6f0d73653215771de243a63ac048a18b59da29"]
/// allow_unsigned = false   # true only for development
/// ```
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ModelSettings {
    /// Ed25519 public keys, 64 hex digits each (the `.pub` file `doppel model keygen`
    /// writes), whose signed packages the node accepts.
    pub trusted_keys: Vec<String>,
    /// Accept packages without a signature. `doppel dev` does; a node should not.
    pub allow_unsigned: bool,
}

impl ModelSettings {
    /// The trust these settings declare; an error names the first key that is not
    /// an Ed25519 public key.
    pub fn trust(&self) -> Result<crate::model::package::Trust, String> {
        let keys = self
            .trusted_keys
            .iter()
            .enumerate()
            .map(|(i, key)| {
                crate::model::package::public_key(key)
                    .map_err(|problem| format!("models.trusted_keys[{i}]: {problem}"))
            })
            .collect::<Result<_, _>>()?;
        Ok(crate::model::package::Trust {
            keys,
            allow_unsigned: self.allow_unsigned,
        })
    }
}

/// A number of seconds, 0 or more.
fn seconds<'de, D: serde::Deserializer<'de>>(deserializer: D) -> Result<f64, D::Error> {
    let secs = f64::deserialize(deserializer)?;
    if Duration::try_from_secs_f64(secs).is_err() {
        return Err(serde::de::Error::custom(format!(
            "{secs} is not a number of seconds, 0 or more (0: never stale)"
        )));
    }
    Ok(secs)
}

impl RuntimeSettings {
    /// The default maximum age of a channel's value; zero (never stale) when
    /// `max_age_secs` is zero, negative or not a number.
    pub fn max_age(&self) -> Duration {
        Duration::try_from_secs_f64(self.max_age_secs).unwrap_or(Duration::ZERO)
    }
}

impl Default for RuntimeSettings {
    fn default() -> Self {
        Self {
            journal: JournalSettings::default(),
            supervision: SupervisionSettings::default(),
            delivery: DeliverySettings::default(),
            history_capacity: 32,
            max_future_skew_secs: 300,
            max_sample_age_secs: 7 * 24 * 3600,
            max_age_secs: 60.0,
            replicate: false,
            passivation: PassivationSettings::default(),
            models: ModelSettings::default(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_maximum_age_is_seconds_zero_or_more() {
        let settings: RuntimeSettings = toml::from_str("max_age_secs = 2.5").unwrap();
        assert_eq!(settings.max_age(), Duration::from_millis(2500));
        let never: RuntimeSettings = toml::from_str("max_age_secs = 0").unwrap();
        assert_eq!(never.max_age(), Duration::ZERO);
        for bad in [
            "max_age_secs = -5",
            "max_age_secs = nan",
            "max_age_secs = inf",
        ] {
            let error = toml::from_str::<RuntimeSettings>(bad).unwrap_err();
            assert!(
                error.to_string().contains("is not a number of seconds"),
                "{bad}: {error}"
            );
        }
    }
}
