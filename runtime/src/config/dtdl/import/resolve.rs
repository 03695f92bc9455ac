//! `extends` and Components: every Interface's contents with those it inherits, the
//! Interfaces that become types, and their names.

use std::collections::{HashMap, HashSet};

use super::read::{Class, Reader};
use crate::config::dtdl::DtdlError;

/// Deepest `extends` chain DTDL v3 allows.
const MAX_EXTENDS_DEPTH: usize = 10;
/// Most Interfaces one `extends` hierarchy may hold.
const MAX_HIERARCHY: usize = 1024;

/// Every Interface's contents with those it inherits, bases first: pairs of the
/// defining Interface and the content's index in it.
pub(super) type Flat = Vec<Vec<(usize, usize)>>;

/// An Interface's place in its `extends` hierarchy.
#[derive(Clone)]
struct Lineage {
    /// The longest `extends` chain below it.
    depth: usize,
    /// Every Interface it extends, directly or not, once each, bases first, then itself.
    members: Vec<usize>,
}

impl Reader {
    /// The index of the Interface `reference` names, for Interface `from`.
    pub(super) fn index(&self, reference: &str, from: usize) -> Result<usize, DtdlError> {
        self.by_id.get(reference).copied().ok_or_else(|| {
            let interface = &self.interfaces[from];
            DtdlError::UnknownInterface {
                origin: interface.origin.clone(),
                interface: interface.id.clone(),
                reference: reference.to_string(),
            }
        })
    }

    /// Resolves `extends` and checks Components: every Interface's contents with the
    /// inherited ones, their names unique, and Components that hold no Component.
    pub(super) fn resolve(&self) -> Result<Flat, DtdlError> {
        let mut memo = HashMap::new();
        let mut flat = Vec::with_capacity(self.interfaces.len());
        for (at, interface) in self.interfaces.iter().enumerate() {
            let lineage = self.lineage(at, &mut Vec::new(), &mut memo)?;
            let mut names = HashSet::new();
            let mut contents = Vec::new();
            for &member in &lineage.members {
                for (index, content) in self.interfaces[member].contents.iter().enumerate() {
                    if !names.insert(content.name.as_str()) {
                        return Err(DtdlError::DuplicateName {
                            origin: interface.origin.clone(),
                            interface: interface.id.clone(),
                            name: content.name.clone(),
                        });
                    }
                    contents.push((member, index));
                }
            }
            flat.push(contents);
        }
        for (interface, contents) in self.interfaces.iter().zip(&flat) {
            for &(member, index) in contents {
                let content = &self.interfaces[member].contents[index];
                let Some(reference) = &content.component else {
                    continue;
                };
                let schema = self.index(reference, member)?;
                let nested = flat[schema].iter().find(|&&(inner_member, inner_index)| {
                    self.interfaces[inner_member].contents[inner_index].class == Class::Component
                });
                if let Some(&(inner_member, inner_index)) = nested {
                    return Err(DtdlError::NestedComponent {
                        interface: interface.id.clone(),
                        component: content.name.clone(),
                        inner: self.interfaces[inner_member].contents[inner_index]
                            .name
                            .clone(),
                    });
                }
            }
        }
        Ok(flat)
    }

    /// The lineage of Interface `at`; `path` holds the Interfaces being resolved below
    /// it, to find cycles.
    fn lineage(
        &self,
        at: usize,
        path: &mut Vec<usize>,
        memo: &mut HashMap<usize, Lineage>,
    ) -> Result<Lineage, DtdlError> {
        if let Some(known) = memo.get(&at) {
            return Ok(known.clone());
        }
        if let Some(start) = path.iter().position(|&step| step == at) {
            let chain = path[start..]
                .iter()
                .chain(std::iter::once(&at))
                .map(|&step| self.interfaces[step].id.as_str())
                .collect::<Vec<_>>()
                .join(" → ");
            return Err(DtdlError::ExtendsCycle { chain });
        }
        path.push(at);
        let mut depth = 0;
        let mut members = Vec::new();
        let mut seen = HashSet::new();
        for reference in &self.interfaces[at].extends {
            let base = self.index(reference, at)?;
            let inherited = self.lineage(base, path, memo)?;
            depth = depth.max(inherited.depth + 1);
            for member in inherited.members {
                if seen.insert(member) {
                    members.push(member);
                }
            }
        }
        path.pop();
        let interface = &self.interfaces[at];
        if depth > MAX_EXTENDS_DEPTH {
            return Err(DtdlError::ExtendsTooDeep {
                interface: interface.id.clone(),
            });
        }
        members.push(at);
        if members.len() > MAX_HIERARCHY {
            return Err(DtdlError::ExtendsTooMany {
                interface: interface.id.clone(),
            });
        }
        let lineage = Lineage { depth, members };
        memo.insert(at, lineage.clone());
        Ok(lineage)
    }

    /// The Interfaces that become types: at the top of their document, neither extended
    /// nor used as a Component's schema.
    pub(super) fn roots(&self) -> Vec<usize> {
        let mut used = HashSet::new();
        for interface in &self.interfaces {
            used.extend(interface.extends.iter().map(String::as_str));
            used.extend(
                interface
                    .contents
                    .iter()
                    .filter_map(|content| content.component.as_deref()),
            );
        }
        self.interfaces
            .iter()
            .enumerate()
            .filter(|(_, interface)| interface.top_level && !used.contains(interface.id.as_str()))
            .map(|(index, _)| index)
            .collect()
    }

    /// The type names of `roots`: each Interface's last DTMI segment, qualified where
    /// two would be the same.
    pub(super) fn type_names(&self, roots: &[usize]) -> Result<Vec<String>, DtdlError> {
        let mut names: Vec<String> = roots
            .iter()
            .map(|&root| self.interfaces[root].dtmi.type_name(0))
            .collect();
        for level in 1..=2 {
            let mut counts: HashMap<String, usize> = HashMap::new();
            for name in &names {
                *counts.entry(name.clone()).or_default() += 1;
            }
            for (name, &root) in names.iter_mut().zip(roots) {
                if counts[name.as_str()] > 1 {
                    *name = self.interfaces[root].dtmi.type_name(level);
                }
            }
        }
        let mut seen: HashMap<&str, usize> = HashMap::new();
        for (name, &root) in names.iter().zip(roots) {
            if let Some(first) = seen.insert(name.as_str(), root) {
                return Err(DtdlError::TypeNameCollision {
                    name: name.clone(),
                    first: self.interfaces[first].id.clone(),
                    second: self.interfaces[root].id.clone(),
                });
            }
        }
        Ok(names)
    }
}
