//! `doppel node status`: what a running node's connectors received and what became
//! of it; `doppel cluster status`: the node's view of its cluster. Both through its
//! gRPC API (`doppel.v1.StatusService`).

use doppel::proto::v1::{
    Count, GetClusterStatusRequest, GetClusterStatusResponse, GetNodeStatusRequest,
    GetNodeStatusResponse, ReadingCounts, ReplicationLink,
};

use super::twin::json::Json;
use super::twin::render::{clean, duration_text, time_from_parts, time_json, time_text};
use super::twin::session::{Session, Target};
use super::twin::table::{Align, Table};
use super::twin::{Failure, emit, emit_json};

/// Asks the node at `target` for its status and prints it.
pub async fn show(target: &Target, json: bool) -> Result<(), Failure> {
    let session = Session::connect(target).await?;
    let status = session
        .status_unary(GetNodeStatusRequest {}, |mut client, request| async move {
            client.get_node_status(request).await
        })
        .await
        .map_err(|status| Failure::rpc("node status", &status))?;
    if json {
        emit_json(&status_json(&status))
    } else {
        emit(&status_text(&status))
    }
}

fn readings(counts: Option<&ReadingCounts>) -> ReadingCounts {
    counts.cloned().unwrap_or_default()
}

fn counts_text(counts: &[Count]) -> String {
    counts
        .iter()
        .map(|count| format!("{} {}", count.reason, count.count))
        .collect::<Vec<_>>()
        .join(", ")
}

fn total(counts: &[Count]) -> u64 {
    counts.iter().map(|count| count.count).sum()
}

/// The status as aligned text: the node's totals, a row per connector (with what it
/// refused and dropped, by reason, beneath), and a row per data source.
pub fn status_text(status: &GetNodeStatusResponse) -> String {
    let node = readings(status.readings.as_ref());
    let mut out = format!(
        "{} twins; readings applied {}, late {}, duplicate {}, refused {}\n",
        status.twins, node.applied, node.late, node.duplicate, node.refused
    );
    out.push('\n');
    if status.connectors.is_empty() {
        out.push_str("no connectors\n");
    } else {
        let mut table = Table::new(&[
            ("CONNECTOR", Align::Left),
            ("STATE", Align::Left),
            ("RECEIVED", Align::Right),
            ("APPLIED", Align::Right),
            ("LATE", Align::Right),
            ("DUPLICATE", Align::Right),
            ("REFUSED", Align::Right),
            ("DROPPED", Align::Right),
        ]);
        for connector in &status.connectors {
            let counts = readings(connector.readings.as_ref());
            table.row(vec![
                connector.name.clone(),
                if connector.connected {
                    "connected"
                } else {
                    "disconnected"
                }
                .to_string(),
                connector.received.to_string(),
                counts.applied.to_string(),
                counts.late.to_string(),
                counts.duplicate.to_string(),
                total(&connector.refused).to_string(),
                total(&connector.dropped).to_string(),
            ]);
        }
        out.push_str(&table.render());
        for connector in &status.connectors {
            if !connector.refused.is_empty() {
                out.push_str(&format!(
                    "{} refused: {}\n",
                    connector.name,
                    counts_text(&connector.refused)
                ));
            }
            if !connector.dropped.is_empty() {
                out.push_str(&format!(
                    "{} dropped: {}\n",
                    connector.name,
                    counts_text(&connector.dropped)
                ));
            }
        }
    }
    if !status.sources.is_empty() {
        out.push('\n');
        let mut table = Table::new(&[
            ("SOURCE", Align::Left),
            ("APPLIED", Align::Right),
            ("LATE", Align::Right),
            ("DUPLICATE", Align::Right),
            ("REFUSED", Align::Right),
        ]);
        for source in &status.sources {
            let counts = readings(source.readings.as_ref());
            table.row(vec![
                source.name.clone(),
                counts.applied.to_string(),
                counts.late.to_string(),
                counts.duplicate.to_string(),
                counts.refused.to_string(),
            ]);
        }
        out.push_str(&table.render());
    }
    if !status.supervision.is_empty() {
        out.push('\n');
        let mut table = Table::new(&[
            ("AT", Align::Left),
            ("SUPERVISOR", Align::Left),
            ("ACTION", Align::Left),
            ("WHY", Align::Left),
        ]);
        for record in &status.supervision {
            table.row(vec![
                time_text(
                    record
                        .at
                        .as_ref()
                        .map(|at| time_from_parts(at.seconds, at.nanos)),
                ),
                clean(&record.supervisor),
                if record.child.is_empty() {
                    "escalated".to_string()
                } else {
                    format!("restarted {}", clean(&record.child))
                },
                clean(&record.reason),
            ]);
        }
        out.push_str(&table.render());
    }
    out
}

fn readings_json(counts: Option<&ReadingCounts>) -> Json {
    let counts = readings(counts);
    Json::object()
        .with("applied", counts.applied)
        .with("late", counts.late)
        .with("duplicate", counts.duplicate)
        .with("refused", counts.refused)
}

fn counts_json(counts: &[Count]) -> Json {
    Json::Object(
        counts
            .iter()
            .map(|count| (count.reason.clone(), Json::UInt(count.count)))
            .collect(),
    )
}

/// The status as one JSON object.
pub fn status_json(status: &GetNodeStatusResponse) -> Json {
    Json::object()
        .with("twins", status.twins)
        .with("readings", readings_json(status.readings.as_ref()))
        .with(
            "connectors",
            Json::Array(
                status
                    .connectors
                    .iter()
                    .map(|connector| {
                        Json::object()
                            .with("name", connector.name.as_str())
                            .with("kind", connector.kind.as_str())
                            .with("connected", connector.connected)
                            .with("received", connector.received)
                            .with("readings", readings_json(connector.readings.as_ref()))
                            .with("refused", counts_json(&connector.refused))
                            .with("dropped", counts_json(&connector.dropped))
                    })
                    .collect(),
            ),
        )
        .with(
            "sources",
            Json::Array(
                status
                    .sources
                    .iter()
                    .map(|source| {
                        Json::object()
                            .with("name", source.name.as_str())
                            .with("readings", readings_json(source.readings.as_ref()))
                    })
                    .collect(),
            ),
        )
}

/// Asks the node at `target` for its view of its cluster and prints it.
pub async fn show_cluster(target: &Target, json: bool) -> Result<(), Failure> {
    let session = Session::connect(target).await?;
    let status = session
        .status_unary(
            GetClusterStatusRequest {},
            |mut client, request| async move { client.get_cluster_status(request).await },
        )
        .await
        .map_err(|status| Failure::rpc("cluster status", &status))?;
    if json {
        emit_json(&cluster_json(&status))
    } else {
        emit(&cluster_text(&status))
    }
}

fn lag_of(link: &ReplicationLink) -> Option<std::time::Duration> {
    link.lag
        .as_ref()
        .and_then(doppel::api::convert::duration_from_proto)
}

fn received_of(link: &ReplicationLink) -> Option<doppel::kernel::Timestamp> {
    link.last_received
        .as_ref()
        .map(|at| time_from_parts(at.seconds, at.nanos))
}

/// The cluster as aligned text: members, planners, replication links.
pub fn cluster_text(status: &GetClusterStatusResponse) -> String {
    let mut out = format!(
        "cluster {}, as {} ({}) sees it\n\n",
        clean(&status.cluster_id),
        clean(&status.node_id),
        clean(&status.role)
    );
    let mut members = Table::new(&[
        ("NODE", Align::Left),
        ("ROLE", Align::Left),
        ("ADDRESS", Align::Left),
        ("STATE", Align::Left),
        ("OWNS", Align::Left),
    ]);
    for member in &status.members {
        members.row(vec![
            clean(&member.node_id),
            clean(&member.role),
            clean(&member.address),
            if member.live { "live" } else { "dead" }.to_string(),
            member
                .owns
                .iter()
                .map(|own| clean(own))
                .collect::<Vec<_>>()
                .join(", "),
        ]);
    }
    out.push_str(&members.render());
    if !status.planners.is_empty() {
        out.push('\n');
        let mut planners = Table::new(&[("PLANNER", Align::Left), ("RUNS ON", Align::Left)]);
        for planner in &status.planners {
            planners.row(vec![
                clean(&planner.planner),
                if planner.node_id.is_empty() {
                    "(no live cloud node)".to_string()
                } else {
                    clean(&planner.node_id)
                },
            ]);
        }
        out.push_str(&planners.render());
    }
    out.push('\n');
    if status.links.is_empty() {
        out.push_str("no replication links\n");
    } else {
        let mut links = Table::new(&[
            ("EDGE", Align::Left),
            ("CLOUD", Align::Left),
            ("LINK", Align::Left),
            ("LAG", Align::Right),
            ("OUTBOX", Align::Right),
            ("LAST RECEIVED", Align::Left),
        ]);
        for link in &status.links {
            links.row(vec![
                clean(&link.edge_node),
                clean(&link.cloud_node),
                if link.connected {
                    "connected"
                } else {
                    "disconnected"
                }
                .to_string(),
                lag_of(link).map_or("-".to_string(), duration_text),
                link.outbox_depth.map_or("-".to_string(), |d| d.to_string()),
                time_text(received_of(link)),
            ]);
        }
        out.push_str(&links.render());
    }
    out
}

/// The cluster as one JSON object.
pub fn cluster_json(status: &GetClusterStatusResponse) -> Json {
    Json::object()
        .with("cluster_id", &status.cluster_id)
        .with("node_id", &status.node_id)
        .with("role", &status.role)
        .with(
            "members",
            Json::Array(
                status
                    .members
                    .iter()
                    .map(|member| {
                        Json::object()
                            .with("node_id", &member.node_id)
                            .with("role", &member.role)
                            .with("address", &member.address)
                            .with("live", member.live)
                            .with(
                                "owns",
                                Json::Array(member.owns.iter().map(Json::from).collect()),
                            )
                    })
                    .collect(),
            ),
        )
        .with(
            "planners",
            Json::Array(
                status
                    .planners
                    .iter()
                    .map(|planner| {
                        Json::object()
                            .with("planner", &planner.planner)
                            .with("node_id", &planner.node_id)
                    })
                    .collect(),
            ),
        )
        .with(
            "links",
            Json::Array(
                status
                    .links
                    .iter()
                    .map(|link| {
                        Json::object()
                            .with("edge_node", &link.edge_node)
                            .with("cloud_node", &link.cloud_node)
                            .with("connected", link.connected)
                            .with(
                                "lag_ms",
                                lag_of(link).map_or(Json::Null, |lag| {
                                    Json::UInt(u64::try_from(lag.as_millis()).unwrap_or(u64::MAX))
                                }),
                            )
                            .with(
                                "outbox_depth",
                                link.outbox_depth.map_or(Json::Null, Json::UInt),
                            )
                            .with("last_received", time_json(received_of(link)))
                    })
                    .collect(),
            ),
        )
}

#[cfg(test)]
mod tests {
    use doppel::proto::v1::{ConnectorStatus, SourceStatus};

    use super::*;

    fn counts(applied: u64) -> Option<ReadingCounts> {
        Some(ReadingCounts {
            applied,
            late: 2,
            duplicate: 3,
            refused: 1,
        })
    }

    fn status() -> GetNodeStatusResponse {
        GetNodeStatusResponse {
            at: None,
            supervision: Vec::new(),
            twins: 4,
            connectors: vec![ConnectorStatus {
                name: "mqtt:plant".into(),
                kind: "mqtt".into(),
                connected: true,
                received: 120,
                readings: counts(100),
                refused: vec![Count {
                    reason: "out_of_range".into(),
                    count: 1,
                }],
                dropped: vec![
                    Count {
                        reason: "malformed_json".into(),
                        count: 7,
                    },
                    Count {
                        reason: "unknown_asset".into(),
                        count: 2,
                    },
                ],
            }],
            sources: vec![SourceStatus {
                name: "mqtt:plant".into(),
                readings: counts(100),
            }],
            readings: counts(100),
        }
    }

    #[test]
    fn the_text_gives_each_connector_a_row_and_its_reasons_beneath() {
        let text = status_text(&status());
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(
            lines[0],
            "4 twins; readings applied 100, late 2, duplicate 3, refused 1"
        );
        assert!(lines[2].starts_with("CONNECTOR   STATE"), "{text}");
        let row: Vec<&str> = lines[3].split_whitespace().collect();
        assert_eq!(
            row,
            ["mqtt:plant", "connected", "120", "100", "2", "3", "1", "9"]
        );
        assert_eq!(lines[4], "mqtt:plant refused: out_of_range 1");
        assert_eq!(
            lines[5],
            "mqtt:plant dropped: malformed_json 7, unknown_asset 2"
        );
        assert!(lines[7].starts_with("SOURCE"), "{text}");
    }

    #[test]
    fn the_json_names_every_count() {
        let json = status_json(&status()).to_string();
        assert!(
            json.contains(r#""dropped":{"malformed_json":7,"unknown_asset":2}"#),
            "{json}"
        );
        assert!(json.contains(r#""refused":{"out_of_range":1}"#), "{json}");
        assert!(json.contains(r#""received":120"#), "{json}");
    }
}
