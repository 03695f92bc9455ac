//! What connectors share to follow an actuation to the machine: the resend policy, the
//! guard that keeps an older actuation from overtaking a newer one, and the report
//! back to the twin.

use std::collections::HashMap;

use doppel_runtime::twin::{Actuation, DeliveryOutcome, DeliveryReport, Twins};
use doppel_runtime::{AssetPath, Timestamp};
use serde::Deserialize;

/// What a connector does, when its connection comes back, with desired values that
/// did not reach the machine while it was down.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Resend {
    /// Send each value's latest desired value again (never one past its command's
    /// deadline), safety actions first. Values the machine reports back differently
    /// since their delivery are sent again too.
    #[default]
    Latest,
    /// Send nothing again: a value that could not be sent fails at once.
    Never,
}

/// The newest actuation sent per (twin, desired value), and in which connection: an
/// actuation older than one already sent is never sent after it, and one connection
/// sends an actuation once.
#[derive(Debug, Default)]
pub(crate) struct SentGuard {
    connection: u64,
    newest: HashMap<(AssetPath, String), (u64, u64)>,
}

impl SentGuard {
    /// A new connection: what the last one sent may be sent again.
    pub(crate) fn reconnected(&mut self) {
        self.connection += 1;
    }

    /// The names of the values of `actuation` to send now, recorded as sent: those no
    /// newer actuation has sent, and that this connection has not sent yet.
    pub(crate) fn admit(&mut self, actuation: &Actuation) -> Vec<String> {
        let version = actuation.version();
        let mut admitted = Vec::new();
        for (name, _) in actuation.values() {
            let key = (actuation.asset().clone(), name.clone());
            let fresh = match self.newest.get(&key) {
                Some(&(sent, connection)) => {
                    version > sent || (version == sent && connection != self.connection)
                }
                None => true,
            };
            if fresh {
                self.newest.insert(key, (version, self.connection));
                admitted.push(name.clone());
            }
        }
        admitted
    }
}

/// Tells the twins how actuations fared at one actuator; a twin that cannot be told
/// (it is restarting) is logged.
#[derive(Clone)]
pub(crate) struct Reporter {
    twins: Twins,
    by: String,
}

impl Reporter {
    /// Reports for actuator `by` (`opcua:plc-1`, `mqtt:plant`).
    pub(crate) fn new(twins: Twins, by: String) -> Self {
        Self { twins, by }
    }

    /// The values `desired` of actuation `version` of `asset` reached the machine.
    pub(crate) fn delivered(&self, asset: &AssetPath, version: u64, desired: Vec<String>) {
        self.report(asset, version, desired, DeliveryOutcome::Delivered);
    }

    /// The values `desired` of `actuation` did not reach the machine, for `reason`.
    pub(crate) fn failed(&self, actuation: &Actuation, desired: Vec<String>, reason: &str) {
        self.report(
            actuation.asset(),
            actuation.version(),
            desired,
            DeliveryOutcome::Failed(reason.to_string()),
        );
    }

    fn report(
        &self,
        asset: &AssetPath,
        version: u64,
        desired: Vec<String>,
        outcome: DeliveryOutcome,
    ) {
        if desired.is_empty() {
            return;
        }
        let report = DeliveryReport {
            asset: asset.clone(),
            version,
            desired,
            by: self.by.clone(),
            outcome,
            at: Timestamp::now(),
        };
        if let Err(error) = self.twins.report_delivery(report) {
            tracing::warn!(%asset, version, %error, "delivery outcome not recorded");
        }
    }
}

/// True when `actuation`'s command deadline has passed.
pub(crate) fn past_deadline(actuation: &Actuation) -> bool {
    actuation
        .deadline()
        .is_some_and(|deadline| deadline < Timestamp::now())
}
