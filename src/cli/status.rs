//! `doppel node status`: what a running node's connectors received and what became
//! of it, through its gRPC API (`doppel.v1.StatusService`).

use doppel::proto::v1::{Count, GetNodeStatusRequest, GetNodeStatusResponse, ReadingCounts};

use super::twin::json::Json;
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
