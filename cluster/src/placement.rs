//! Placement: which node hosts what, decided from the live member list alone.
//!
//! Every function here is pure over `&[Member]`, so every node that sees the same
//! membership reaches the same answer without asking anyone:
//!
//! - a twin lives on the live edge node whose longest `owns` prefix covers its asset
//!   path ([`owner_of`]);
//! - two edge nodes claiming overlapping prefixes are a conflict ([`conflicts`]); the node
//!   that started later refuses ownership ([`must_yield`]) and publishes the conflict, so
//!   the earlier node keeps serving;
//! - a fleet planner runs on the live cloud node chosen by rendezvous hashing
//!   ([`planner_host`]), so removing a cloud node only moves the planners it hosted;
//! - cloud nodes mirror the prefixes they announce ([`mirrors_of`]) and receive
//!   replication from the edges whose prefixes overlap them ([`replication_targets`]).

use std::cmp::Reverse;

use crate::config::{NodeRole, prefix_covers};
use crate::membership::Member;

/// An ownership conflict: two or more live edge nodes claim overlapping prefixes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Conflict {
    /// The contested prefix: the narrower of the two overlapping prefixes (the subtree
    /// both nodes claim).
    pub prefix: String,
    /// The node ids of the claimants, sorted.
    pub nodes: Vec<String>,
    /// A human message naming both nodes and their prefixes.
    pub message: String,
}

/// The live edge node that owns `asset`: the member whose longest `owns` prefix covers
/// the path (segment-wise, see [`prefix_covers`]). Members with a conflict set are
/// skipped. Ties (two live edges with an equally long covering prefix) go to the one
/// that started first, then to the lowest node id; such a tie is also a conflict (see
/// [`conflicts`]).
pub fn owner_of<'a>(members: &'a [Member], asset: &str) -> Option<&'a Member> {
    members
        .iter()
        .filter(|member| member.role == NodeRole::Edge && member.conflict.is_none())
        .filter_map(|member| {
            let longest_covering = member
                .owns
                .iter()
                .filter(|prefix| prefix_covers(prefix, asset))
                .map(String::len)
                .max()?;
            Some((member, longest_covering))
        })
        // Longest prefix first, then earliest start, then lowest node id.
        .min_by_key(|(member, longest_covering)| {
            (
                Reverse(*longest_covering),
                member.started_at_ms,
                member.node_id.as_str(),
            )
        })
        .map(|(member, _)| member)
}

/// Ownership conflicts among live edge members: one per pair of edge nodes and pair of
/// their `owns` prefixes that overlap (equal, or one covers the other). Members that
/// have already yielded (conflict set) are still reported: the overlap persists as long
/// as both nodes announce it.
pub fn conflicts(members: &[Member]) -> Vec<Conflict> {
    let edges: Vec<&Member> = members
        .iter()
        .filter(|member| member.role == NodeRole::Edge)
        .collect();
    let mut found = Vec::new();
    for (index, first) in edges.iter().enumerate() {
        for second in &edges[index + 1..] {
            if first.node_id == second.node_id {
                continue;
            }
            for first_prefix in &first.owns {
                for second_prefix in &second.owns {
                    if let Some(conflict) = overlap(first, first_prefix, second, second_prefix) {
                        found.push(conflict);
                    }
                }
            }
        }
    }
    found
}

/// Whether the edge node `me` must refuse ownership: `Some` when another live edge
/// member that has not yielded itself (no conflict set) overlaps one of my prefixes and
/// started before me (same start: the lower node id wins). The earlier node keeps
/// serving. When several earlier nodes overlap, the conflict names the earliest.
///
/// Because a node only ever yields to earlier starters, the decisions settle from the
/// earliest node onwards: re-evaluate whenever membership changes, and clear the
/// conflict when this returns `None` again.
pub fn must_yield(members: &[Member], me: &str) -> Option<Conflict> {
    let mine = members
        .iter()
        .find(|member| member.node_id == me && member.role == NodeRole::Edge)?;
    members
        .iter()
        .filter(|other| {
            other.role == NodeRole::Edge
                && other.node_id != me
                && other.conflict.is_none()
                && start_order(other) < start_order(mine)
        })
        .flat_map(|other| {
            mine.owns.iter().flat_map(move |my_prefix| {
                other
                    .owns
                    .iter()
                    .filter_map(move |other_prefix| overlap(mine, my_prefix, other, other_prefix))
                    .map(move |conflict| (start_order(other), conflict))
            })
        })
        .min_by(|(first, _), (second, _)| first.cmp(second))
        .map(|(_, conflict)| conflict)
}

/// Rendezvous (highest random weight) hashing: the member among `candidates` with the
/// highest hash of (`key`, node id); equal hashes go to the lowest node id. The hash is
/// fixed (FNV-1a with a final avalanche), so every node and every build agrees, and
/// removing a candidate only moves the keys it had.
pub fn rendezvous<'a>(
    key: &str,
    candidates: impl IntoIterator<Item = &'a Member>,
) -> Option<&'a Member> {
    candidates.into_iter().max_by(|first, second| {
        rendezvous_weight(key, &first.node_id)
            .cmp(&rendezvous_weight(key, &second.node_id))
            .then_with(|| second.node_id.cmp(&first.node_id))
    })
}

/// Where the fleet planner named `planner` runs: rendezvous over the live cloud members
/// without a conflict.
pub fn planner_host<'a>(members: &'a [Member], planner: &str) -> Option<&'a Member> {
    rendezvous(
        planner,
        members
            .iter()
            .filter(|member| member.role == NodeRole::Cloud && member.conflict.is_none()),
    )
}

/// The cloud members that mirror `asset`: their `mirrors` is empty (everything) or has a
/// prefix covering it.
pub fn mirrors_of<'a>(members: &'a [Member], asset: &str) -> Vec<&'a Member> {
    members
        .iter()
        .filter(|member| {
            member.role == NodeRole::Cloud
                && (member.mirrors.is_empty()
                    || member
                        .mirrors
                        .iter()
                        .any(|prefix| prefix_covers(prefix, asset)))
        })
        .collect()
}

/// The cloud members that should receive replication from the edge `edge`: those that
/// mirror everything, or whose mirrored prefixes overlap one of the edge's `owns`
/// prefixes (either covering the other).
pub fn replication_targets<'a>(members: &'a [Member], edge: &Member) -> Vec<&'a Member> {
    members
        .iter()
        .filter(|member| {
            member.role == NodeRole::Cloud
                && (member.mirrors.is_empty()
                    || member.mirrors.iter().any(|mirrored| {
                        edge.owns
                            .iter()
                            .any(|owned| prefixes_overlap(mirrored, owned))
                    }))
        })
        .collect()
}

/// True when one prefix covers the other.
fn prefixes_overlap(first: &str, second: &str) -> bool {
    prefix_covers(first, second) || prefix_covers(second, first)
}

/// Who started first: earlier start time, then lower node id.
fn start_order(member: &Member) -> (u64, &str) {
    (member.started_at_ms, member.node_id.as_str())
}

/// The conflict between `first` claiming `first_prefix` and `second` claiming
/// `second_prefix`, if the prefixes overlap.
fn overlap(
    first: &Member,
    first_prefix: &str,
    second: &Member,
    second_prefix: &str,
) -> Option<Conflict> {
    if !prefixes_overlap(first_prefix, second_prefix) {
        return None;
    }
    // The contested subtree is the narrower prefix.
    let contested = if first_prefix.len() >= second_prefix.len() {
        first_prefix
    } else {
        second_prefix
    };
    let (earlier, earlier_prefix, later, later_prefix) =
        if start_order(first) <= start_order(second) {
            (first, first_prefix, second, second_prefix)
        } else {
            (second, second_prefix, first, first_prefix)
        };
    let mut nodes = vec![first.node_id.clone(), second.node_id.clone()];
    nodes.sort();
    Some(Conflict {
        prefix: contested.to_string(),
        nodes,
        message: format!(
            "edge nodes `{}` (owns `{earlier_prefix}`) and `{}` (owns `{later_prefix}`) both claim `{contested}`; `{}` started first and keeps it",
            earlier.node_id, later.node_id, earlier.node_id
        ),
    })
}

/// The rendezvous weight of `node_id` for `key`: 64-bit FNV-1a over the key, a separator
/// byte that cannot occur in UTF-8, and the node id, then the murmur3 finalizer so that
/// node ids differing only in their last byte still spread.
fn rendezvous_weight(key: &str, node_id: &str) -> u64 {
    const FNV_OFFSET_BASIS: u64 = 0xcbf2_9ce4_8422_2325;
    const FNV_PRIME: u64 = 0x0000_0100_0000_01b3;
    let mut hash = FNV_OFFSET_BASIS;
    for byte in key
        .as_bytes()
        .iter()
        .chain(&[0xff])
        .chain(node_id.as_bytes())
    {
        hash ^= u64::from(*byte);
        hash = hash.wrapping_mul(FNV_PRIME);
    }
    hash ^= hash >> 33;
    hash = hash.wrapping_mul(0xff51_afd7_ed55_8ccd);
    hash ^= hash >> 33;
    hash = hash.wrapping_mul(0xc4ce_b9fe_1a85_ec53);
    hash ^ (hash >> 33)
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;

    fn edge(node_id: &str, started_at_ms: u64, owns: &[&str]) -> Member {
        Member {
            node_id: node_id.to_string(),
            role: NodeRole::Edge,
            node_addr: "127.0.0.1:7100".parse().unwrap(),
            api_addr: None,
            owns: owns.iter().map(|prefix| prefix.to_string()).collect(),
            mirrors: Vec::new(),
            started_at_ms,
            conflict: None,
        }
    }

    fn cloud(node_id: &str, mirrors: &[&str]) -> Member {
        Member {
            node_id: node_id.to_string(),
            role: NodeRole::Cloud,
            node_addr: "127.0.0.1:7200".parse().unwrap(),
            api_addr: None,
            owns: Vec::new(),
            mirrors: mirrors.iter().map(|prefix| prefix.to_string()).collect(),
            started_at_ms: 1,
            conflict: None,
        }
    }

    fn ids(members: &[&Member]) -> Vec<String> {
        members
            .iter()
            .map(|member| member.node_id.clone())
            .collect()
    }

    #[test]
    fn owner_is_the_longest_covering_prefix() {
        let members = [
            edge("edge-site", 1, &["acme"]),
            edge("edge-plant", 2, &["acme/plant-a"]),
            cloud("cloud-1", &[]),
        ];
        let owner = |asset| owner_of(&members, asset).map(|member| member.node_id.as_str());
        assert_eq!(owner("acme/plant-a/line-1/press"), Some("edge-plant"));
        assert_eq!(owner("acme/plant-a"), Some("edge-plant"));
        assert_eq!(owner("acme/plant-b/press"), Some("edge-site"));
        assert_eq!(owner("acme"), Some("edge-site"));
        assert_eq!(owner("globex/plant-a"), None);
    }

    #[test]
    fn prefixes_cover_whole_segments_only() {
        let members = [edge("edge-a", 1, &["acme/plant-a"])];
        assert!(owner_of(&members, "acme/plant-a/press").is_some());
        assert!(owner_of(&members, "acme/plant-ab").is_none());
        assert!(owner_of(&members, "acme/plant-ab/press").is_none());
        assert!(owner_of(&members, "acme").is_none());
    }

    #[test]
    fn owner_skips_members_with_a_conflict_and_breaks_ties_by_start() {
        let mut members = [
            edge("edge-b", 1, &["acme/plant-a"]),
            edge("edge-a", 2, &["acme/plant-a"]),
        ];
        let owner = |members: &[Member]| {
            owner_of(members, "acme/plant-a/press")
                .unwrap()
                .node_id
                .clone()
        };
        assert_eq!(owner(&members), "edge-b", "the earlier starter wins a tie");
        members[1].started_at_ms = 1;
        assert_eq!(
            owner(&members),
            "edge-a",
            "same start: the lowest node id wins"
        );
        members[1].conflict = Some("yielded".into());
        assert_eq!(
            owner(&members),
            "edge-b",
            "a member with a conflict owns nothing"
        );
    }

    #[test]
    fn conflicts_are_found_for_equal_and_nested_prefixes() {
        let members = [
            edge("edge-c", 3, &["globex"]),
            edge("edge-b", 2, &["acme/plant-a"]),
            edge("edge-a", 1, &["acme/plant-a", "acme/plant-b"]),
            edge("edge-d", 4, &["acme"]),
            cloud("cloud-1", &["acme"]),
        ];
        let mut found: Vec<(String, Vec<String>)> = conflicts(&members)
            .into_iter()
            .map(|conflict| (conflict.prefix, conflict.nodes))
            .collect();
        found.sort();
        let pair = |first: &str, second: &str| vec![first.to_string(), second.to_string()];
        assert_eq!(
            found,
            vec![
                ("acme/plant-a".to_string(), pair("edge-a", "edge-b")),
                ("acme/plant-a".to_string(), pair("edge-a", "edge-d")),
                ("acme/plant-a".to_string(), pair("edge-b", "edge-d")),
                ("acme/plant-b".to_string(), pair("edge-a", "edge-d")),
            ]
        );
        let equal = conflicts(&members[1..3]);
        assert_eq!(equal.len(), 1);
        let message = &equal[0].message;
        assert!(
            message.contains("edge-a") && message.contains("edge-b"),
            "{message}"
        );
        assert!(message.contains("acme/plant-a"), "{message}");
    }

    #[test]
    fn sibling_prefixes_do_not_conflict() {
        let members = [
            edge("edge-a", 1, &["acme/plant-a"]),
            edge("edge-b", 2, &["acme/plant-ab"]),
        ];
        assert!(conflicts(&members).is_empty());
        assert!(must_yield(&members, "edge-b").is_none());
    }

    #[test]
    fn the_later_starter_yields() {
        let members = [
            edge("edge-late", 20, &["acme/plant-a/line-1"]),
            edge("edge-early", 10, &["acme/plant-a"]),
        ];
        let conflict = must_yield(&members, "edge-late").expect("the later node yields");
        assert_eq!(conflict.prefix, "acme/plant-a/line-1");
        assert_eq!(conflict.nodes, vec!["edge-early", "edge-late"]);
        assert!(must_yield(&members, "edge-early").is_none());
        assert!(must_yield(&members, "edge-unknown").is_none());

        let same_start = [edge("edge-b", 10, &["acme"]), edge("edge-a", 10, &["acme"])];
        assert!(
            must_yield(&same_start, "edge-b").is_some(),
            "same start: the higher id yields"
        );
        assert!(must_yield(&same_start, "edge-a").is_none());
    }

    #[test]
    fn a_node_does_not_yield_to_one_that_already_yielded() {
        // edge-b yielded to edge-a over plant-a; edge-c overlaps only edge-b, which is not
        // serving, so edge-c keeps plant-b.
        let mut edge_b = edge("edge-b", 2, &["acme"]);
        edge_b.conflict = Some("yielded to edge-a".into());
        let members = [
            edge("edge-a", 1, &["acme/plant-a"]),
            edge_b,
            edge("edge-c", 3, &["acme/plant-b"]),
        ];
        assert!(must_yield(&members, "edge-c").is_none());
        assert_eq!(
            owner_of(&members, "acme/plant-b/press").map(|member| member.node_id.as_str()),
            Some("edge-c")
        );
    }

    #[test]
    fn rendezvous_is_stable_and_spreads_keys_evenly() {
        let members = [
            cloud("cloud-1", &[]),
            cloud("cloud-2", &[]),
            cloud("cloud-3", &[]),
        ];
        let keys: Vec<String> = (0..3000).map(|index| format!("planner-{index}")).collect();
        let mut per_node: HashMap<&str, usize> = HashMap::new();
        for key in &keys {
            let chosen = rendezvous(key, &members).unwrap();
            let reversed = rendezvous(key, members.iter().rev()).unwrap();
            assert_eq!(
                chosen.node_id, reversed.node_id,
                "the order of candidates does not matter"
            );
            *per_node.entry(chosen.node_id.as_str()).or_default() += 1;
        }
        assert_eq!(per_node.len(), 3);
        for (node, count) in &per_node {
            assert!(
                (800..=1200).contains(count),
                "{node} got {count} of 3000 keys"
            );
        }
        // A fixed hash: the same answer on every build and platform.
        assert_eq!(
            rendezvous_weight("maintenance", "cloud-1"),
            rendezvous_weight("maintenance", "cloud-1")
        );
        assert_ne!(
            rendezvous_weight("maintenance", "cloud-1"),
            rendezvous_weight("maintenance", "cloud-2")
        );
        assert_eq!(
            rendezvous_weight("maintenance", "cloud-1"),
            0x239d_4aec_54fc_d5cd
        );
        assert!(rendezvous("anything", &[] as &[Member]).is_none());
    }

    #[test]
    fn removing_a_node_only_moves_its_keys() {
        let members = [
            cloud("cloud-1", &[]),
            cloud("cloud-2", &[]),
            cloud("cloud-3", &[]),
        ];
        let without_second = [members[0].clone(), members[2].clone()];
        for index in 0..1000 {
            let key = format!("key-{index}");
            let before = rendezvous(&key, &members).unwrap();
            let after = rendezvous(&key, &without_second).unwrap();
            if before.node_id != "cloud-2" {
                assert_eq!(
                    before.node_id, after.node_id,
                    "{key} moved although its node stayed"
                );
            }
        }
    }

    #[test]
    fn planner_moves_when_its_host_is_removed() {
        let mut members = vec![
            cloud("cloud-1", &[]),
            cloud("cloud-2", &[]),
            cloud("cloud-3", &[]),
            edge("edge-a", 1, &["acme"]),
        ];
        let host = planner_host(&members, "maintenance")
            .unwrap()
            .node_id
            .clone();
        assert!(
            host.starts_with("cloud-"),
            "planners run on cloud nodes only"
        );
        assert_eq!(planner_host(&members, "maintenance").unwrap().node_id, host);

        members.retain(|member| member.node_id != host);
        let next = planner_host(&members, "maintenance")
            .unwrap()
            .node_id
            .clone();
        assert_ne!(next, host);
        assert!(next.starts_with("cloud-"));

        // A cloud member with a conflict does not host planners.
        for member in &mut members {
            if member.node_id == next {
                member.conflict = Some("conflict".into());
            }
        }
        let third = planner_host(&members, "maintenance")
            .unwrap()
            .node_id
            .clone();
        assert!(third != next && third != host && third.starts_with("cloud-"));

        members.retain(|member| member.role == NodeRole::Edge);
        assert!(planner_host(&members, "maintenance").is_none());
    }

    #[test]
    fn mirrors_of_covers_prefixes_and_everything() {
        let members = [
            cloud("cloud-all", &[]),
            cloud("cloud-acme", &["acme"]),
            cloud("cloud-plant-b", &["acme/plant-b"]),
            edge("edge-a", 1, &["acme/plant-a"]),
        ];
        assert_eq!(
            ids(&mirrors_of(&members, "acme/plant-a/press")),
            vec!["cloud-all", "cloud-acme"]
        );
        assert_eq!(
            ids(&mirrors_of(&members, "acme/plant-b/press")),
            vec!["cloud-all", "cloud-acme", "cloud-plant-b"]
        );
        assert_eq!(
            ids(&mirrors_of(&members, "acme/plant-bb")),
            vec!["cloud-all", "cloud-acme"]
        );
        assert_eq!(ids(&mirrors_of(&members, "globex/x")), vec!["cloud-all"]);
    }

    #[test]
    fn replication_targets_overlap_either_way() {
        let members = [
            cloud("cloud-all", &[]),
            cloud("cloud-acme", &["acme"]),
            cloud("cloud-line", &["acme/plant-a/line-1"]),
            cloud("cloud-plant-b", &["acme/plant-b"]),
            cloud("cloud-globex", &["globex"]),
            edge("edge-a", 1, &["acme/plant-a"]),
        ];
        let edge_a = &members[5];
        assert_eq!(
            ids(&replication_targets(&members, edge_a)),
            vec!["cloud-all", "cloud-acme", "cloud-line"]
        );
    }
}
