//! The plant topology: plants → lines → machines, each machine of a twin type.

use std::collections::{BTreeMap, HashSet};
use std::path::Path;

use serde::Deserialize;
use toml::Spanned;

use super::{ConfigError, TwinTypes, line_of, read_file};
use crate::path::AssetPath;

/// One machine: a twin of a declared type.
#[derive(Debug, Clone)]
pub struct MachineSpec {
    /// The machine's asset path (`<line path>/<name>`).
    pub path: AssetPath,
    /// Name of its twin type.
    pub twin_type: String,
    /// Per-machine properties, merged over the type's.
    pub properties: BTreeMap<String, toml::Value>,
}

/// A production line and its machines.
#[derive(Debug, Clone)]
pub struct LineSpec {
    /// The line's asset path (`<plant path>/<name>`).
    pub path: AssetPath,
    /// Its machines.
    pub machines: Vec<MachineSpec>,
}

/// A plant and its lines.
#[derive(Debug, Clone)]
pub struct PlantSpec {
    /// The plant's asset path (e.g. `acme/plant-a`).
    pub path: AssetPath,
    /// Its lines.
    pub lines: Vec<LineSpec>,
}

/// The plant topology of a node.
#[derive(Debug, Clone, Default)]
pub struct Topology {
    /// Plants, in declaration order.
    pub plants: Vec<PlantSpec>,
}

impl Topology {
    /// Keeps only the machines `keep` is true for, and the lines and plants that still
    /// have machines (a cluster edge node keeps the plants or lines it owns).
    pub fn retain_machines(&mut self, keep: impl Fn(&AssetPath) -> bool) {
        for plant in &mut self.plants {
            for line in &mut plant.lines {
                line.machines.retain(|machine| keep(&machine.path));
            }
            plant.lines.retain(|line| !line.machines.is_empty());
        }
        self.plants.retain(|plant| !plant.lines.is_empty());
    }

    /// Loads a topology from a TOML file and checks it against `types`.
    pub fn from_file(path: impl AsRef<Path>, types: &TwinTypes) -> Result<Self, ConfigError> {
        let (origin, source) = read_file(path.as_ref())?;
        Self::from_toml(&source, &origin, types)
    }

    /// Parses a topology from TOML text and checks it against `types`.
    pub fn from_toml(source: &str, origin: &str, types: &TwinTypes) -> Result<Self, ConfigError> {
        let raw: RawTopology =
            toml::from_str(source).map_err(|e| ConfigError::from_toml(origin, source, &e))?;
        // The line of a table, for an error message: counted only for an error, so a
        // large plant file parses in one pass.
        let at = |offset: usize, message: String| {
            ConfigError::at(origin, Some(line_of(source, offset)), message)
        };
        let mut seen = HashSet::new();
        let mut plants = Vec::new();
        for raw_plant in raw.plants {
            let plant_at = raw_plant.span().start;
            let raw_plant = raw_plant.into_inner();
            let plant_path = AssetPath::parse(&raw_plant.path)
                .map_err(|e| at(plant_at, format!("plant `{}`: {e}", raw_plant.path)))?;
            let mut lines = Vec::new();
            for raw_line in raw_plant.lines {
                let line_at = raw_line.span().start;
                let raw_line = raw_line.into_inner();
                let line_path = plant_path
                    .join(&raw_line.name)
                    .map_err(|e| at(line_at, format!("line `{}`: {e}", raw_line.name)))?;
                let mut machines = Vec::with_capacity(raw_line.machines.len());
                for raw_machine in raw_line.machines {
                    let machine_at = raw_machine.span().start;
                    let raw_machine = raw_machine.into_inner();
                    let path = line_path.join(&raw_machine.name).map_err(|e| {
                        at(machine_at, format!("machine `{}`: {e}", raw_machine.name))
                    })?;
                    if types.get(&raw_machine.twin_type).is_none() {
                        return Err(at(
                            machine_at,
                            format!(
                                "machine `{path}` has unknown type `{}`",
                                raw_machine.twin_type
                            ),
                        ));
                    }
                    if !seen.insert(path.clone()) {
                        return Err(at(
                            machine_at,
                            format!("machine `{path}` is declared twice"),
                        ));
                    }
                    machines.push(MachineSpec {
                        path,
                        twin_type: raw_machine.twin_type,
                        properties: raw_machine.properties,
                    });
                }
                if !seen.insert(line_path.clone()) {
                    return Err(at(line_at, format!("line `{line_path}` is declared twice")));
                }
                lines.push(LineSpec {
                    path: line_path,
                    machines,
                });
            }
            if !seen.insert(plant_path.clone()) {
                return Err(at(
                    plant_at,
                    format!("plant `{plant_path}` is declared twice"),
                ));
            }
            plants.push(PlantSpec {
                path: plant_path,
                lines,
            });
        }
        Ok(Self { plants })
    }

    /// Every machine, in declaration order.
    pub fn machines(&self) -> impl Iterator<Item = &MachineSpec> {
        self.plants
            .iter()
            .flat_map(|p| p.lines.iter())
            .flat_map(|l| l.machines.iter())
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawTopology {
    #[serde(default, rename = "plant")]
    plants: Vec<Spanned<RawPlant>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawPlant {
    path: String,
    #[serde(default, rename = "line")]
    lines: Vec<Spanned<RawLine>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawLine {
    name: String,
    #[serde(default, rename = "machine")]
    machines: Vec<Spanned<RawMachine>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawMachine {
    name: String,
    #[serde(rename = "type")]
    twin_type: String,
    #[serde(default)]
    properties: BTreeMap<String, toml::Value>,
}

#[cfg(test)]
mod tests {
    use super::*;

    const TYPES: &str = r#"
[types.pump.channels.flow]
range = [0.0, 100.0]
"#;

    /// A plant of `lines` lines of `per_line` pumps, the last one of type `last`.
    fn plant(lines: usize, per_line: usize, last: &str) -> String {
        let mut toml = String::from("[[plant]]\npath = \"acme/plant-a\"\n");
        for line in 0..lines {
            toml.push_str(&format!("[[plant.line]]\nname = \"line-{line}\"\n"));
            for machine in 0..per_line {
                let kind = if line + 1 == lines && machine + 1 == per_line {
                    last
                } else {
                    "pump"
                };
                toml.push_str(&format!(
                    "[[plant.line.machine]]\nname = \"pump-{machine}\"\ntype = \"{kind}\"\n"
                ));
            }
        }
        toml
    }

    #[test]
    fn locating_costs_nothing_for_a_valid_plant_and_one_pass_for_an_error() {
        let types = TwinTypes::from_toml(TYPES, "types.toml").unwrap();
        for (lines, per_line) in [(10, 100), (4, 1_000), (40, 1_000)] {
            let scanned = |source: &str| {
                super::super::SCANNED.with(|s| s.set(0));
                let result = Topology::from_toml(source, "plant.toml", &types);
                (result, super::super::SCANNED.with(|s| s.get()))
            };
            let valid = plant(lines, per_line, "pump");
            let (topology, bytes) = scanned(&valid);
            assert_eq!(topology.unwrap().machines().count(), lines * per_line);
            assert_eq!(bytes, 0, "a valid plant locates nothing");
            let broken = plant(lines, per_line, "pmup");
            let (error, bytes) = scanned(&broken);
            let error = error.unwrap_err();
            assert_eq!(error.line, Some(broken.lines().count() - 2), "{error}");
            assert!(
                bytes <= broken.len(),
                "{bytes} bytes scanned for one error in {}",
                broken.len()
            );
        }
    }

    #[test]
    fn builds_paths_and_locates_errors() {
        let types = TwinTypes::from_toml(TYPES, "types.toml").unwrap();
        let source = r#"
[[plant]]
path = "acme/plant-a"

[[plant.line]]
name = "line-1"

[[plant.line.machine]]
name = "pump-1"
type = "pump"

[[plant.line.machine]]
name = "pump-2"
type = "pmup"
"#;
        let error = Topology::from_toml(source, "plant.toml", &types).unwrap_err();
        assert_eq!(error.line, Some(12), "{error}");
        assert!(error.to_string().contains("unknown type `pmup`"), "{error}");

        let topology =
            Topology::from_toml(&source.replace("pmup", "pump"), "plant.toml", &types).unwrap();
        let paths: Vec<_> = topology.machines().map(|m| m.path.to_string()).collect();
        assert_eq!(
            paths,
            ["acme/plant-a/line-1/pump-1", "acme/plant-a/line-1/pump-2"]
        );

        let error = Topology::from_toml(&source.replace("pump-2", "pump 2"), "plant.toml", &types)
            .unwrap_err();
        assert!(
            error
                .to_string()
                .contains("plant.toml:12: machine `pump 2`"),
            "{error}"
        );
    }
}
