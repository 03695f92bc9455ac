//! What a connector's config reaches: which twins it reads or actuates, and which of
//! their desired values and commands it carries to the machine. A node checks at start,
//! from every connector's [`Reach`], that each desired value a safety action or a
//! command sets has a way out.

use std::collections::{HashMap, HashSet};

use doppel_runtime::AssetPath;
use doppel_runtime::twin::Actuation;

/// What a connector actuates for one twin.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AssetReach {
    /// Every desired value an actuation sets is sent (an MQTT `…/cmd` payload, a
    /// Sparkplug DCMD).
    pub every_desired: bool,
    /// Desired values written (OPC UA `writes`).
    pub desired: HashSet<String>,
    /// Commands that call a method (OPC UA `methods`).
    pub commands: HashSet<String>,
}

impl AssetReach {
    /// Whether desired value `desired`, set by command `command`, reaches the machine.
    pub fn carries(&self, desired: &str, command: &str) -> bool {
        self.every_desired || self.desired.contains(desired) || self.commands.contains(command)
    }
}

/// The twins a connector reads or actuates, and what it actuates of each.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Reach {
    /// What it does for every hosted twin (the Unified Namespace layout subscribes to
    /// every twin's topics); `None` when it does not cover all of them.
    pub every_twin: Option<AssetReach>,
    /// What it does for the twins it names.
    pub assets: HashMap<AssetPath, AssetReach>,
}

impl Reach {
    /// True when the connector reads or actuates `asset`.
    pub fn touches(&self, asset: &AssetPath) -> bool {
        self.every_twin.is_some() || self.assets.contains_key(asset)
    }

    /// Whether desired value `desired` of `asset`, set by command `command`, reaches the
    /// machine through this connector.
    pub fn carries(&self, asset: &AssetPath, desired: &str, command: &str) -> bool {
        self.every_twin
            .iter()
            .chain(self.assets.get(asset))
            .any(|reach| reach.carries(desired, command))
    }

    /// The names of the desired values of `actuation` that reach the machine through
    /// this connector.
    pub fn carried(&self, actuation: &Actuation) -> Vec<String> {
        actuation
            .values()
            .iter()
            .filter(|(desired, _)| self.carries(actuation.asset(), desired, actuation.command()))
            .map(|(desired, _)| desired.clone())
            .collect()
    }

    /// Adds what `other` reaches.
    pub fn merge(&mut self, other: Reach) {
        match (&mut self.every_twin, other.every_twin) {
            (Some(mine), Some(theirs)) => mine.absorb(theirs),
            (mine @ None, theirs) => *mine = theirs,
            (Some(_), None) => {}
        }
        for (asset, reach) in other.assets {
            self.assets.entry(asset).or_default().absorb(reach);
        }
    }
}

impl AssetReach {
    fn absorb(&mut self, other: AssetReach) {
        self.every_desired |= other.every_desired;
        self.desired.extend(other.desired);
        self.commands.extend(other.commands);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn path(raw: &str) -> AssetPath {
        AssetPath::parse(raw).unwrap()
    }

    #[test]
    fn a_write_a_method_or_a_publish_carries_a_value() {
        let press = path("a/b/press-1");
        let other = path("a/b/press-2");
        let mut reach = Reach::default();
        reach.assets.insert(
            press.clone(),
            AssetReach {
                desired: HashSet::from(["speed".to_string()]),
                commands: HashSet::from(["stop".to_string()]),
                ..AssetReach::default()
            },
        );
        assert!(reach.touches(&press) && !reach.touches(&other));
        assert!(reach.carries(&press, "speed", "set_speed"));
        assert!(reach.carries(&press, "running", "stop"));
        assert!(!reach.carries(&press, "running", "start"));
        assert!(!reach.carries(&other, "speed", "set_speed"));

        reach.merge(Reach {
            every_twin: Some(AssetReach {
                every_desired: true,
                ..AssetReach::default()
            }),
            assets: HashMap::new(),
        });
        assert!(reach.touches(&other));
        assert!(reach.carries(&other, "running", "start"));
    }
}
