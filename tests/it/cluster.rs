//! The cluster with real `doppel node` processes on loopback: membership, forwarding
//! of commands and reads to the owning edge, cloud mirrors, fleet planners and their
//! failover, and refusal of nodes from another cluster.

use std::time::{Duration, Instant};

use doppel::{Timestamp, Value};
use doppel_api::convert::{named_value, timestamp_to_proto, value_from_proto};
use doppel_proto::v1 as pb;
use doppel_testkit::relay::UdpRelay;
use doppel_testkit::{eventually, wait_until};
use pb::verdict::Outcome;
use pb::watch_twins_response::Event;
use rumqttc::QoS;

use crate::brokers;
use crate::sandbox::{PLANNER_TOKEN, Sandbox};
use crate::support::press;

const FORMED: Duration = Duration::from_secs(60);

fn set_speed(n: u32, rpm: f64) -> pb::SendCommandRequest {
    pb::SendCommandRequest {
        asset_path: press(n).to_string(),
        command: "set_speed".into(),
        params: vec![named_value("rpm", Value::Float(rpm))],
        ..Default::default()
    }
}

fn outcome(verdict: Option<pb::Verdict>) -> Outcome {
    verdict.and_then(|v| v.outcome).expect("a verdict")
}

fn desired(twin: &pb::Twin, name: &str) -> Option<Value> {
    twin.desired
        .iter()
        .find(|d| d.name == name)
        .and_then(|d| d.value.as_ref())
        .and_then(value_from_proto)
}

/// An MQTT connector for an edge node's config, reading the test broker's UNS topics.
fn mqtt(url: &str, id: &str) -> String {
    format!(
        r#"[[mqtt]]
name = "plant"
url = "{url}"
client_id = "{id}"

[mqtt.uns]
prefix = ""
"#
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn commands_sent_to_any_node_are_decided_by_the_owning_edge_and_mirrored() {
    let mut sandbox = Sandbox::new("acme-test");
    sandbox.add_cloud("cloud-1", "");
    sandbox.add_edge("edge-a", &["acme/plant-a/line-1"], "");
    sandbox.add_edge("edge-b", &["acme/plant-a/line-2"], "");
    sandbox.add_cloud("cloud-2", "");
    sandbox.wait_live(4, FORMED).await;

    // A cloud node forwards to edge-a, whose governors accept.
    let mut cloud1 = sandbox.client("cloud-1").await;
    let accepted = cloud1
        .send_command(set_speed(1, 1500.0))
        .await
        .unwrap()
        .into_inner();
    assert!(matches!(outcome(accepted.verdict), Outcome::Accepted(_)));

    // A planner token at the other cloud node: edge-b's governors decide. An automatic
    // change needs two agreeing temperature sensors, and press-3 has none yet.
    let mut planner = sandbox.client_with("cloud-2", PLANNER_TOKEN).await;
    let mut request = set_speed(3, 1000.0);
    request.deadline = Some(timestamp_to_proto(Timestamp(
        Timestamp::now().0 + 10_000_000,
    )));
    let denied = planner.send_command(request).await.unwrap().into_inner();
    let Outcome::Denied(denial) = outcome(denied.verdict.clone()) else {
        panic!("edge-b did not deny: {denied:?}");
    };
    assert_eq!(denial.governor, "dual_sensor");
    let origin = denied.origin.unwrap();
    assert_eq!(origin.principal, "fleet-script");
    assert_eq!(origin.kind, pb::OriginKind::Planner as i32);

    // An operator's over-envelope command: clamped there.
    let mut cloud2 = sandbox.client("cloud-2").await;
    let clamped = cloud2
        .send_command(set_speed(3, 2900.0))
        .await
        .unwrap()
        .into_inner();
    let Outcome::Clamped(clamp) = outcome(clamped.verdict.clone()) else {
        panic!("edge-b did not clamp 2900 rpm: {clamped:?}");
    };
    assert_eq!(clamp.clamps[0].governor, "envelope");

    // An edge forwards to the other edge: the owner answers, not a mirror.
    let mut edge_a = sandbox.client("edge-a").await;
    let press3 = edge_a
        .get_twin(pb::GetTwinRequest {
            asset_path: press(3).to_string(),
        })
        .await
        .unwrap()
        .into_inner()
        .twin
        .unwrap();
    assert_eq!(desired(&press3, "speed"), Some(Value::Float(2400.0)));
    assert!(press3.mirror.is_none(), "the owner answered");

    // Both clouds mirror the fleet, marked with owner and lag.
    for cloud in ["cloud-1", "cloud-2"] {
        let mut client = sandbox.client(cloud).await;
        let twin = eventually("the mirror converges", Duration::from_secs(20), || {
            let mut client = client.clone();
            async move {
                let twin = client
                    .get_twin(pb::GetTwinRequest {
                        asset_path: press(3).to_string(),
                    })
                    .await
                    .ok()?
                    .into_inner()
                    .twin?;
                (desired(&twin, "speed") == Some(Value::Float(2400.0))).then_some(twin)
            }
        })
        .await;
        let mirror = twin.mirror.expect("answered from the mirror");
        assert_eq!(mirror.owner_node, "edge-b");
        assert!(mirror.connected);
        let listed = client
            .list_twins(pb::ListTwinsRequest::default())
            .await
            .unwrap()
            .into_inner();
        let paths: Vec<_> = listed.twins.iter().map(|t| t.asset_path.clone()).collect();
        assert_eq!(paths, [press(1), press(2), press(3)].map(|p| p.to_string()));
        // Both audit records were replicated, the planner's denial with its origin.
        let audit = client
            .list_audit(pb::ListAuditRequest {
                path_prefix: press(3).to_string(),
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner();
        assert_eq!(audit.records.len(), 2, "{:?}", audit.records);
        let planned = &audit.records[0];
        assert_eq!(planned.origin.as_ref().unwrap().principal, "fleet-script");
        assert_eq!(
            planned.origin.as_ref().unwrap().kind,
            pb::OriginKind::Planner as i32
        );
        assert!(matches!(
            planned.verdict.as_ref().and_then(|v| v.outcome.clone()),
            Some(Outcome::Denied(_))
        ));
    }

    // An edge lists and watches the fleet through a cloud node.
    let listed = edge_a
        .list_twins(pb::ListTwinsRequest::default())
        .await
        .unwrap()
        .into_inner();
    assert_eq!(listed.twins.len(), 3);
    let mut watch = edge_a
        .watch_twins(pb::WatchTwinsRequest::default())
        .await
        .unwrap()
        .into_inner();
    let mut snapshot = Vec::new();
    loop {
        let message = tokio::time::timeout(Duration::from_secs(10), watch.message())
            .await
            .unwrap()
            .unwrap()
            .unwrap();
        match message.event.unwrap() {
            Event::Snapshot(twin) => snapshot.push(twin.asset_path),
            Event::SnapshotComplete(done) => {
                assert_eq!(done.twins, 3);
                break;
            }
            Event::Change(change) => panic!("a change before the snapshot ended: {change:?}"),
            Event::Coalesced(twin) => panic!("coalesced before the snapshot ended: {twin:?}"),
        }
    }
    assert_eq!(snapshot.len(), 3);
    // A change on edge-b reaches the watcher on edge-a, through the cloud's mirror.
    cloud1.send_command(set_speed(3, 2000.0)).await.unwrap();
    let change = tokio::time::timeout(Duration::from_secs(20), async {
        loop {
            let message = watch.message().await.unwrap().unwrap();
            if let Some(Event::Change(change)) = message.event
                && change.asset_path == press(3).to_string()
            {
                return change;
            }
        }
    })
    .await
    .expect("the change arrives");
    assert!(change.version > press3.version);

    // A command for an asset nobody owns.
    let error = cloud1
        .send_command(pb::SendCommandRequest {
            asset_path: "acme/plant-z/line-9/press-9".into(),
            command: "stop".into(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(error.code(), tonic::Code::NotFound, "{error:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fleet_planner_is_clamped_at_the_edge_and_moves_when_its_cloud_node_dies() {
    let broker = brokers::embedded();
    let url = broker.url();
    let planners = r#"
[cluster.planners.energy]
caps = { "acme/plant-a" = 10.0 }
min_speed = 100.0
interval_secs = 1
max_age_secs = 600.0
"#;
    let mut sandbox = Sandbox::new("acme-planners");
    sandbox.add_cloud("cloud-1", planners);
    sandbox.add_edge("edge-a", &["acme/plant-a/line-1"], &mqtt(&url, "edge-a"));
    sandbox.add_edge("edge-b", &["acme/plant-a/line-2"], &mqtt(&url, "edge-b"));
    sandbox.add_cloud("cloud-2", planners);
    sandbox.wait_live(4, FORMED).await;

    let (publisher, eventloop) = brokers::client(&url, "machines", true);
    let (_rx, pump_task) = crate::mqtt::pump(eventloop);
    // Power above the cap; two agreeing temperature sensors, so automatic commands
    // are allowed.
    for n in [1, 2, 3] {
        for (channel, value) in [
            ("temperature", 50.0),
            ("temperature_b", 50.5),
            ("power_kw", 200.0),
        ] {
            publisher
                .publish(
                    format!("{}/telemetry/{channel}", press(n)),
                    QoS::AtLeastOnce,
                    false,
                    format!(r#"{{"v": {value}}}"#),
                )
                .await
                .unwrap();
        }
    }

    // The planner wants 100 rpm to meet a 10 kW cap; the edges' envelope says 200.
    let mut cloud1 = sandbox.client("cloud-1").await;
    for n in [1, 3] {
        let twin = eventually(
            "the planner lowers the speed",
            Duration::from_secs(30),
            || {
                let mut client = cloud1.clone();
                async move {
                    let twin = client
                        .get_twin(pb::GetTwinRequest {
                            asset_path: press(n).to_string(),
                        })
                        .await
                        .ok()?
                        .into_inner()
                        .twin?;
                    // Answered from the cloud's mirror (a twin not mirrored yet is
                    // asked of its owner, without provenance).
                    (desired(&twin, "speed") == Some(Value::Float(200.0)) && twin.mirror.is_some())
                        .then_some(twin)
                }
            },
        )
        .await;
        assert_eq!(
            twin.mirror.unwrap().owner_node,
            if n == 1 { "edge-a" } else { "edge-b" }
        );
        let audit = cloud1
            .list_audit(pb::ListAuditRequest {
                path_prefix: press(n).to_string(),
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner();
        let record = audit
            .records
            .iter()
            .find(|r| {
                r.origin
                    .as_ref()
                    .is_some_and(|o| o.principal == "energy-planner")
            })
            .expect("the planner's command is audited");
        assert_eq!(
            record.origin.as_ref().unwrap().kind,
            pb::OriginKind::Planner as i32
        );
        assert!(matches!(
            record.verdict.as_ref().and_then(|v| v.outcome.clone()),
            Some(Outcome::Clamped(_))
        ));
    }

    // Exactly one cloud node runs the planner; kill it and the other takes over.
    let host = eventually(
        "one cloud node hosts the planner",
        Duration::from_secs(10),
        || {
            let hosts: Vec<&str> = ["cloud-1", "cloud-2"]
                .into_iter()
                .filter(|id| sandbox.node(id).planners().contains("energy-planner"))
                .collect();
            let host = (hosts.len() == 1).then(|| hosts[0].to_string());
            async move { host }
        },
    )
    .await;
    let other = if host == "cloud-1" {
        "cloud-2"
    } else {
        "cloud-1"
    };

    // The cluster is visible through the API: REST on the cloud node, and the CLI.
    let rest = doppel_testkit::http::Client::new(
        &format!("http://{}", sandbox.node("cloud-1").http),
        None,
    )
    .with_token(crate::sandbox::ADMIN_TOKEN);
    let status = eventually("both edges' links", Duration::from_secs(30), || {
        let rest = rest.clone();
        async move {
            let answer = rest.get("/api/v1/cluster").await;
            let body = answer.json();
            (answer.status == 200 && body["links"].as_array().is_some_and(|l| l.len() == 2))
                .then_some(body)
        }
    })
    .await;
    assert_eq!(status["nodeId"], "cloud-1");
    assert_eq!(status["role"], "cloud");
    let members: Vec<&str> = status["members"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["nodeId"].as_str().unwrap())
        .collect();
    assert_eq!(members, ["cloud-1", "cloud-2", "edge-a", "edge-b"]);
    assert_eq!(status["planners"][0]["planner"], "energy-planner");
    assert_eq!(status["planners"][0]["nodeId"], host.as_str());
    for link in status["links"].as_array().unwrap() {
        assert_eq!(link["cloudNode"], "cloud-1");
        assert_eq!(link["connected"], true, "{link}");
        assert!(
            link["lag"].is_string() && link["outboxDepth"].is_string(),
            "{link}"
        );
    }
    let document = rest
        .without_token()
        .get("/api/v1/openapi.json")
        .await
        .json();
    crate::http::validate_against_document(
        &document,
        &[
            serde_json::json!({"path": "/api/v1/cluster", "method": "get", "status": 200, "body": status}),
        ],
        &[],
    );
    // Every cloud node places the planner alike; ask the other one with the CLI.
    let cli = std::process::Command::new(env!("CARGO_BIN_EXE_doppel"))
        .args(["cluster", "status", "--json", "--addr"])
        .arg(format!("http://{}", sandbox.node("cloud-2").api))
        .env("DOPPEL_TOKEN", crate::sandbox::ADMIN_TOKEN)
        .output()
        .unwrap();
    assert!(
        cli.status.success(),
        "{}",
        String::from_utf8_lossy(&cli.stderr)
    );
    let cloud2: serde_json::Value = serde_json::from_slice(&cli.stdout).unwrap();
    assert_eq!(cloud2["node_id"], "cloud-2");
    assert_eq!(cloud2["planners"][0]["node_id"], host.as_str());
    // An edge sees its links to every cloud node, with its outbox depth.
    let edge =
        doppel_testkit::http::Client::new(&format!("http://{}", sandbox.node("edge-a").http), None)
            .with_token(crate::sandbox::ADMIN_TOKEN);
    let edge_status = eventually("the edge's links", Duration::from_secs(30), || {
        let edge = edge.clone();
        async move {
            let body = edge.get("/api/v1/cluster").await.json();
            (body["links"].as_array().is_some_and(|l| l.len() == 2)).then_some(body)
        }
    })
    .await;
    let clouds: Vec<&str> = edge_status["links"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l["cloudNode"].as_str().unwrap())
        .collect();
    assert_eq!(
        clouds,
        ["cloud-1", "cloud-2"],
        "an edge streams to every cloud node"
    );
    assert!(edge_status["links"][0]["outboxDepth"].is_string());

    // Alarms across the cluster: press-2 (edge-a) trips; a cloud node lists the trip
    // from its mirror, an operator acknowledges it there and the response is decided
    // on edge-a; shelving the latched trip through edge-b is refused by edge-a.
    for (channel, value) in [("temperature", 120.0), ("temperature_b", 120.0)] {
        publisher
            .publish(
                format!("{}/telemetry/{channel}", press(2)),
                QoS::AtLeastOnce,
                false,
                format!(r#"{{"v": {value}}}"#),
            )
            .await
            .unwrap();
    }
    let trip = "trip:overtemp";
    let listed = eventually("the cloud lists the trip", Duration::from_secs(30), || {
        let rest = rest.clone();
        async move {
            let body = rest.get("/api/v1/alarms?pathPrefix=acme").await.json();
            body["alarms"]
                .as_array()?
                .iter()
                .any(|a| a["assetPath"] == press(2).as_str() && a["alarm"]["code"] == trip)
                .then_some(body)
        }
    })
    .await;
    assert!(
        listed["counts"]["unacknowledged"].as_u64().unwrap() >= 1,
        "{listed}"
    );
    let segment = doppel_testkit::http::segment;
    let acknowledged = rest
        .post(
            &format!(
                "/api/v1/twins/{}/alarms/{}/acknowledge",
                segment(press(2).as_str()),
                segment(trip)
            ),
            &serde_json::json!({"note": "seen from the cloud"}),
        )
        .await;
    assert_eq!(acknowledged.status, 200, "{}", acknowledged.text());
    assert_eq!(acknowledged.json()["alarm"]["acknowledged"]["by"], "admin");
    let edge_b =
        doppel_testkit::http::Client::new(&format!("http://{}", sandbox.node("edge-b").http), None)
            .with_token(crate::sandbox::ADMIN_TOKEN);
    let shelved = edge_b
        .post(
            &format!(
                "/api/v1/twins/{}/alarms/{}/shelve",
                segment(press(2).as_str()),
                segment(trip)
            ),
            &serde_json::json!({"reason": "nuisance", "duration": "60s"}),
        )
        .await;
    assert_eq!(shelved.status, 400, "{}", shelved.text());
    assert_eq!(shelved.json()["code"], "FAILED_PRECONDITION");
    let cloud2_rest = doppel_testkit::http::Client::new(
        &format!("http://{}", sandbox.node("cloud-2").http),
        None,
    )
    .with_token(crate::sandbox::ADMIN_TOKEN);
    eventually(
        "the other mirror shows it acknowledged",
        Duration::from_secs(30),
        || {
            let rest = cloud2_rest.clone();
            async move {
                let body = rest
                    .get("/api/v1/alarms?pathPrefix=acme/plant-a/line-1")
                    .await
                    .json();
                body["alarms"]
                    .as_array()?
                    .iter()
                    .any(|a| a["alarm"]["code"] == trip && a["alarm"]["state"] == "acknowledged")
                    .then_some(())
            }
        },
    )
    .await;

    let killed = Instant::now();
    sandbox.kill(&host);
    eventually("the planner moves", Duration::from_secs(30), || {
        let moved = sandbox.node(other).planners().contains("energy-planner");
        async move { moved.then_some(()) }
    })
    .await;
    println!(
        "planner moved from {host} to {other} in {:?}",
        killed.elapsed()
    );
    pump_task.abort();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_of_another_cluster_never_joins() {
    let mut sandbox = Sandbox::new("acme-one");
    sandbox.add_cloud("cloud-1", "");
    sandbox.add_edge("edge-a", &["acme/plant-a"], "");
    sandbox.wait_live(2, FORMED).await;
    sandbox.add_foreign("intruder", "acme-two");
    // Give gossip time to (not) merge.
    tokio::time::sleep(Duration::from_secs(5)).await;
    for id in ["cloud-1", "edge-a"] {
        assert_eq!(sandbox.node(id).live(), 2, "{}", sandbox.node(id).output());
    }
    let mut intruder = sandbox.client("intruder").await;
    assert_eq!(
        sandbox.node("intruder").live(),
        1,
        "{}",
        sandbox.node("intruder").output()
    );
    let error = intruder
        .get_twin(pb::GetTwinRequest {
            asset_path: press(1).to_string(),
        })
        .await
        .unwrap_err();
    assert_eq!(error.code(), tonic::Code::NotFound, "{error:?}");
}

async fn twin_of(client: &mut crate::sandbox::Client, n: u32) -> Option<pb::Twin> {
    client
        .get_twin(pb::GetTwinRequest {
            asset_path: press(n).to_string(),
        })
        .await
        .ok()?
        .into_inner()
        .twin
}

async fn audit_of(client: &mut crate::sandbox::Client, prefix: &str) -> Vec<pb::AuditRecord> {
    let mut records = Vec::new();
    let mut page_token = String::new();
    loop {
        let page = client
            .list_audit(pb::ListAuditRequest {
                path_prefix: prefix.to_string(),
                page_size: 1000,
                page_token,
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner();
        records.extend(page.records);
        if page.next_page_token.is_empty() {
            return records;
        }
        page_token = page.next_page_token;
    }
}

/// The state a mirror must agree on with the owner.
fn state(twin: &pb::Twin) -> String {
    let reported: Vec<_> = twin
        .reported
        .iter()
        .map(|r| (r.channel.clone(), r.sample.as_ref().map(|s| s.value)))
        .collect();
    let desired: Vec<_> = twin
        .desired
        .iter()
        .map(|d| (d.name.clone(), d.value.as_ref().and_then(value_from_proto)))
        .collect();
    let alarms: Vec<_> = twin.alarms.iter().map(|a| a.code.clone()).collect();
    format!(
        "v{} {:?} {:?} {:?} {:?} trips {} run {}",
        twin.version,
        reported,
        desired,
        alarms,
        twin.derived
            .iter()
            .map(|d| (&d.name, d.value))
            .collect::<Vec<_>>(),
        twin.trips.len(),
        twin.run_state
    )
}

/// Waits until the cloud's mirror of every press equals the edge's own state.
async fn converged(sandbox: &Sandbox, edge: &str, cloud: &str, timeout: Duration) {
    let mut edge = sandbox.client(edge).await;
    let mut cloud = sandbox.client(cloud).await;
    let start = Instant::now();
    loop {
        let mut differences = Vec::new();
        for n in [1, 2, 3] {
            let owner = twin_of(&mut edge, n).await.map(|t| state(&t));
            let mirror = twin_of(&mut cloud, n).await.map(|t| state(&t));
            if owner != mirror {
                differences.push(format!("press-{n}\n  edge  {owner:?}\n  cloud {mirror:?}"));
            }
        }
        if differences.is_empty() {
            return;
        }
        assert!(
            start.elapsed() < timeout,
            "the mirror did not converge in {timeout:?}:\n{}",
            differences.join("\n")
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_partitioned_edge_keeps_tripping_and_its_mirror_converges_exactly_once() {
    let broker = brokers::embedded();
    let url = broker.url();
    let mut sandbox = Sandbox::new("acme-partition");
    let cloud_proxy = sandbox.add_cloud_behind_proxy("cloud-1", "").await;
    let edge_proxy = sandbox
        .add_edge_behind_proxy("edge-a", &["acme/plant-a"], &mqtt(&url, "edge-a"))
        .await;
    sandbox.wait_live(2, FORMED).await;
    let (publisher, eventloop) = brokers::client(&url, "machines", true);
    let (_rx, pump_task) = crate::mqtt::pump(eventloop);
    let publish = |n: u32, channel: &'static str, value: f64, seq: u64| {
        let publisher = publisher.clone();
        async move {
            publisher
                .publish(
                    format!("{}/telemetry/{channel}", press(n)),
                    QoS::AtLeastOnce,
                    false,
                    format!(r#"{{"v": {value}, "seq": {seq}}}"#),
                )
                .await
                .unwrap();
        }
    };
    for seq in 1..=20 {
        for n in [1, 2, 3] {
            publish(n, "vibration", 2.0 + seq as f64 * 0.01, seq).await;
        }
    }
    converged(&sandbox, "edge-a", "cloud-1", Duration::from_secs(30)).await;

    // Partition edge ↔ cloud (both directions of node-to-node traffic).
    cloud_proxy.partition();
    edge_proxy.partition();
    let mut edge = sandbox.client("edge-a").await;
    publish(1, "temperature", 130.0, 1).await;
    publish(1, "temperature_b", 130.5, 1).await;
    let tripped = eventually(
        "the edge trips during the partition",
        Duration::from_secs(10),
        || {
            let mut edge = edge.clone();
            async move {
                let twin = twin_of(&mut edge, 1).await?;
                (twin.run_state == pb::RunState::Tripped as i32).then_some(twin)
            }
        },
    )
    .await;
    assert!(!tripped.trips.is_empty());
    for seq in 21..=300 {
        for n in [2, 3] {
            publish(n, "vibration", 2.0 + seq as f64 * 0.01, seq).await;
        }
    }
    // A command through the cloud cannot reach the edge before its deadline.
    let mut cloud = sandbox.client("cloud-1").await;
    let mut late = set_speed(2, 1700.0);
    late.deadline = Some(timestamp_to_proto(Timestamp(
        Timestamp::now().0 + 1_500_000,
    )));
    let error = cloud.send_command(late).await.unwrap_err();
    assert_eq!(error.code(), tonic::Code::DeadlineExceeded, "{error:?}");
    let mirror = twin_of(&mut cloud, 1).await.unwrap();
    assert!(mirror.trips.is_empty(), "the mirror cannot know yet");

    // Heal: the backlog drains, the mirror equals the edge, nothing twice.
    tokio::time::sleep(Duration::from_secs(1)).await;
    cloud_proxy.heal();
    edge_proxy.heal();
    converged(&sandbox, "edge-a", "cloud-1", Duration::from_secs(60)).await;
    let edge_audit = audit_of(&mut edge, "acme/plant-a").await;
    let cloud_audit = audit_of(&mut cloud, "acme/plant-a").await;
    let key = |r: &pb::AuditRecord| (r.asset_path.clone(), r.seq);
    let mut edge_keys: Vec<_> = edge_audit.iter().map(key).collect();
    let mut cloud_keys: Vec<_> = cloud_audit.iter().map(key).collect();
    edge_keys.sort();
    cloud_keys.sort();
    assert_eq!(edge_keys, cloud_keys, "every audit record exactly once");
    assert!(
        cloud_audit
            .iter()
            .any(|r| r.kind == pb::AuditKind::SafetyAction as i32)
    );
    // The late command was never actuated: if it reached the edge at all, it was
    // refused there for its deadline.
    let press2 = twin_of(&mut edge, 2).await.unwrap();
    assert_ne!(desired(&press2, "speed"), Some(Value::Float(1700.0)));
    for record in edge_audit
        .iter()
        .filter(|r| r.asset_path == press(2).to_string())
    {
        assert!(
            matches!(
                record.verdict.as_ref().and_then(|v| v.outcome.clone()),
                Some(Outcome::Denied(_))
            ),
            "{record:?}"
        );
    }
    pump_task.abort();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_edge_killed_mid_replication_loses_and_repeats_nothing() {
    let broker = brokers::embedded();
    let url = broker.url();
    let mut sandbox = Sandbox::new("acme-kill");
    sandbox.add_cloud("cloud-1", "");
    sandbox.add_edge("edge-a", &["acme/plant-a"], &mqtt(&url, "edge-a"));
    sandbox.wait_live(2, FORMED).await;
    let mut edge = sandbox.client("edge-a").await;
    let (publisher, eventloop) = brokers::client(&url, "machines", true);
    let (_rx, pump_task) = crate::mqtt::pump(eventloop);

    // Readings and commands stream in; the edge is killed in the middle of it.
    let mut seq = 0;
    let mut commands = 0;
    for round in 0..3 {
        for _ in 0..400 {
            seq += 1;
            for n in [1, 2, 3] {
                publisher
                    .publish(
                        format!("{}/telemetry/vibration", press(n)),
                        QoS::AtLeastOnce,
                        false,
                        format!(
                            r#"{{"v": {}, "seq": {seq}}}"#,
                            2.0 + (seq % 50) as f64 * 0.01
                        ),
                    )
                    .await
                    .unwrap();
            }
        }
        if round < 2 {
            for n in [1, 2, 3] {
                let rpm = 1000.0 + f64::from(round * 10 + n);
                edge.send_command(set_speed(n, rpm)).await.unwrap();
                commands += 1;
            }
        }
        if round == 1 {
            sandbox.kill("edge-a");
            sandbox.restart("edge-a");
            sandbox.wait_live(2, FORMED).await;
            edge = sandbox.client("edge-a").await;
        }
    }
    converged(&sandbox, "edge-a", "cloud-1", Duration::from_secs(60)).await;
    let mut cloud = sandbox.client("cloud-1").await;
    let edge_audit = audit_of(&mut edge, "acme/plant-a").await;
    let cloud_audit = audit_of(&mut cloud, "acme/plant-a").await;
    let commands_audited = edge_audit
        .iter()
        .filter(|r| r.kind == pb::AuditKind::Command as i32)
        .count();
    assert_eq!(commands_audited, commands, "{edge_audit:?}");
    let key = |r: &pb::AuditRecord| (r.asset_path.clone(), r.seq);
    let mut edge_keys: Vec<_> = edge_audit.iter().map(key).collect();
    let mut cloud_keys: Vec<_> = cloud_audit.iter().map(key).collect();
    edge_keys.sort();
    cloud_keys.sort();
    assert_eq!(
        edge_keys, cloud_keys,
        "every acknowledged command exactly once"
    );
    pump_task.abort();
}

/// Starts cloud-1 and edge-a (owning plant-a), waits until both are members, and shows
/// the cloud forwards a command the edge accepts; returns the cloud's client.
async fn cloud_and_edge_forwarding(sandbox: &mut Sandbox) -> crate::sandbox::Client {
    sandbox.add_cloud("cloud-1", "");
    sandbox.add_edge("edge-a", &["acme/plant-a"], "");
    sandbox.wait_live(2, FORMED).await;
    let mut cloud = sandbox.client("cloud-1").await;
    let accepted = cloud
        .send_command(set_speed(2, 1300.0))
        .await
        .unwrap()
        .into_inner();
    assert!(matches!(outcome(accepted.verdict), Outcome::Accepted(_)));
    cloud
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_mutual_tls_a_node_without_a_trusted_certificate_is_refused() {
    let mut sandbox = Sandbox::new("acme-tls").with_tls();
    let mut cloud = cloud_and_edge_forwarding(&mut sandbox).await;

    // Same cluster id, same gossip, a certificate from another CA.
    sandbox.add_untrusted("rogue");
    tokio::time::sleep(Duration::from_secs(5)).await;
    for id in ["cloud-1", "edge-a"] {
        assert_eq!(sandbox.node(id).live(), 2, "{}", sandbox.node(id).output());
    }
    assert_eq!(
        sandbox.node("rogue").live(),
        1,
        "{}",
        sandbox.node("rogue").output()
    );
    assert!(
        sandbox
            .node("edge-a")
            .output()
            .contains("not admitting a peer"),
        "{}",
        sandbox.node("edge-a").output()
    );
    // The rogue cannot reach the edge's twins.
    let mut rogue = sandbox.client("rogue").await;
    let error = rogue.send_command(set_speed(2, 2000.0)).await.unwrap_err();
    assert_eq!(error.code(), tonic::Code::NotFound, "{error:?}");
    let press2 = twin_of(&mut cloud, 2).await.unwrap();
    assert_ne!(desired(&press2, "speed"), Some(Value::Float(2000.0)));
}

/// The certificates `doppel cluster certs` makes form a cluster with mutual TLS as
/// made: one CA, made once and reused for each node added later, keys kept private.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn certificates_from_doppel_cluster_certs_form_a_cluster() {
    use std::os::unix::fs::PermissionsExt as _;

    let mut sandbox = Sandbox::new("acme-certs").with_certs_command();
    cloud_and_edge_forwarding(&mut sandbox).await;
    let certs = sandbox.dir().join("certs");
    for key in ["ca.key", "cloud-1.key", "edge-a.key"] {
        let mode = std::fs::metadata(certs.join(key))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o077, 0, "{key} is readable by others: {mode:o}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_edge_claiming_an_owned_line_refuses_to_start() {
    let mut sandbox = Sandbox::new("acme-claims");
    sandbox.add_cloud("cloud-1", "");
    sandbox.add_edge("edge-a", &["acme/plant-a"], "");
    sandbox.wait_live(2, FORMED).await;
    // edge-late's broker connection would announce it as a Sparkplug host the moment it
    // connected: it must never connect, since its claim fails.
    let broker = brokers::embedded();
    let url = broker.url();
    let (watcher, eventloop) = brokers::client(&url, "claims-watcher", true);
    let (mut received, pump_task) = crate::mqtt::pump(eventloop);
    watcher
        .subscribe("spBv1.0/STATE/#", QoS::AtLeastOnce)
        .await
        .unwrap();
    watcher.subscribe("marker", QoS::AtLeastOnce).await.unwrap();
    let connector = format!(
        "{}\n[mqtt.sparkplug]\nhost_id = \"edge-late\"\n",
        mqtt(&url, "edge-late")
    );
    sandbox.add_edge("edge-late", &["acme/plant-a/line-2"], &connector);
    let start = Instant::now();
    while sandbox.node_mut("edge-late").running() {
        assert!(
            start.elapsed() < FORMED,
            "edge-late kept running:\n{}",
            sandbox.node("edge-late").output()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let output = sandbox.node("edge-late").output();
    assert!(output.contains("ownership conflict"), "{output}");
    assert!(output.contains("edge-a"), "{output}");
    // Everything the broker had for the watcher before the marker has arrived.
    watcher
        .publish("marker", QoS::AtLeastOnce, false, "after edge-late")
        .await
        .unwrap();
    let mut seen = Vec::new();
    loop {
        let (topic, _) = tokio::time::timeout(Duration::from_secs(20), received.recv())
            .await
            .expect("the marker comes back")
            .unwrap();
        if topic == "marker" {
            break;
        }
        seen.push(topic);
    }
    assert!(
        seen.is_empty(),
        "edge-late connected to the broker before its claim failed: {seen:?}"
    );
    pump_task.abort();
    // The first owner keeps serving, and says what happened.
    let mut cloud = sandbox.client("cloud-1").await;
    let accepted = cloud
        .send_command(set_speed(3, 1250.0))
        .await
        .unwrap()
        .into_inner();
    assert!(matches!(outcome(accepted.verdict), Outcome::Accepted(_)));
    assert!(
        sandbox
            .node("edge-a")
            .output()
            .contains("claims this node's plants"),
        "{}",
        sandbox.node("edge-a").output()
    );
}

/// Waits until `node`'s output has a line containing `text`.
async fn output_shows(sandbox: &Sandbox, node: &str, text: &str, timeout: Duration) {
    let start = Instant::now();
    while !sandbox.node(node).output().contains(text) {
        assert!(
            start.elapsed() < timeout,
            "{node} never said `{text}`:\n{}",
            sandbox.node(node).output()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The `set.speed` of the command messages received on `topic` so far.
fn speeds_on(
    received: &mut tokio::sync::mpsc::UnboundedReceiver<(String, Vec<u8>)>,
    seen: &mut Vec<(String, f64)>,
) {
    while let Ok((topic, payload)) = received.try_recv() {
        if let Ok(body) = serde_json::from_slice::<serde_json::Value>(&payload)
            && let Some(speed) = body["set"]["speed"].as_f64()
        {
            seen.push((topic, speed));
        }
    }
}

/// Two edge nodes claim line-2 without seeing each other: the first is stalled
/// (SIGSTOP) while the second starts, a partition as far as gossip can tell. Once the
/// partition heals, the node that started later yields: it stops actuating (neither a
/// command nor its own trip leaves it), says so, raises the critical `fenced` alarm on
/// its twins, and shows as yielded in membership; commands go to the first owner.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_a_healed_partition_the_later_owner_stops_actuating() {
    let broker = brokers::embedded();
    let url = broker.url();
    let under = |id: &str, prefix: &str| {
        mqtt(&url, id).replace("prefix = \"\"", &format!("prefix = \"{prefix}/\""))
    };
    let (watcher, eventloop) = brokers::client(&url, "fence-watcher", true);
    let (mut received, pump_task) = crate::mqtt::pump(eventloop);
    for topic in [
        "a/acme/plant-a/line-2/press-3/cmd",
        "b/acme/plant-a/line-2/press-3/cmd",
    ] {
        watcher.subscribe(topic, QoS::AtLeastOnce).await.unwrap();
    }
    let mut sandbox = Sandbox::new("acme-healed");
    sandbox.add_cloud("cloud-1", "");
    sandbox.add_edge("edge-a", &["acme/plant-a/line-2"], &under("edge-a", "a"));
    sandbox.wait_live(2, FORMED).await;

    sandbox.pause("edge-a");
    let start = Instant::now();
    while sandbox.node("cloud-1").live() != 1 {
        assert!(start.elapsed() < FORMED, "cloud-1 never lost edge-a");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    sandbox.add_edge("edge-b", &["acme/plant-a/line-2"], &under("edge-b", "b"));
    output_shows(&sandbox, "edge-b", "members: 2 live", FORMED).await;
    let mut edge_b = sandbox.client("edge-b").await;
    let accepted = edge_b
        .send_command(set_speed(3, 1400.0))
        .await
        .unwrap()
        .into_inner();
    assert!(matches!(outcome(accepted.verdict), Outcome::Accepted(_)));
    let mut seen = Vec::new();
    let start = Instant::now();
    while !seen.contains(&("b/acme/plant-a/line-2/press-3/cmd".to_string(), 1400.0)) {
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "edge-b never actuated: {seen:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
        speeds_on(&mut received, &mut seen);
    }

    sandbox.resume("edge-a");
    output_shows(&sandbox, "edge-b", "FENCED", FORMED).await;
    output_shows(&sandbox, "cloud-1", "edge-b(edge, yielded)", FORMED).await;
    output_shows(
        &sandbox,
        "edge-b",
        "replication stopped: this node no longer owns its twins",
        Duration::from_secs(20),
    )
    .await;
    // The trip of edge-b's press-3 changes its twin but sends nothing.
    for channel in ["temperature", "temperature_b"] {
        watcher
            .publish(
                format!("b/acme/plant-a/line-2/press-3/telemetry/{channel}"),
                QoS::AtLeastOnce,
                false,
                r#"{"v": 120.0}"#,
            )
            .await
            .unwrap();
    }
    output_shows(
        &sandbox,
        "edge-b",
        "safety action held back",
        Duration::from_secs(20),
    )
    .await;
    // Commands now go to the first owner, whichever node receives them.
    let mut cloud = sandbox.client("cloud-1").await;
    let start = Instant::now();
    loop {
        let sent = cloud.send_command(set_speed(3, 1500.0)).await;
        if sent.is_ok() {
            break;
        }
        assert!(
            start.elapsed() < FORMED,
            "edge-a never served again: {sent:?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let start = Instant::now();
    while !seen.contains(&("a/acme/plant-a/line-2/press-3/cmd".to_string(), 1500.0)) {
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "edge-a never actuated: {seen:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
        speeds_on(&mut received, &mut seen);
    }
    let output = sandbox.node("edge-b").output();
    assert!(
        output.contains("each raises the critical alarm `fenced`"),
        "{output}"
    );
    // Give anything edge-b might still send time to arrive.
    tokio::time::sleep(Duration::from_secs(1)).await;
    speeds_on(&mut received, &mut seen);
    let from_b: Vec<_> = seen
        .iter()
        .filter(|(topic, _)| topic.starts_with("b/"))
        .collect();
    assert_eq!(
        from_b.len(),
        1,
        "edge-b actuated after it yielded: {seen:?}"
    );
    pump_task.abort();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mirrors_partitioned_over_two_cloud_nodes_each_answer_for_their_part() {
    let mut sandbox = Sandbox::new("acme-partitioned-mirrors");
    sandbox.add_cloud("cloud-1", "mirrors = [\"acme/plant-a/line-1\"]\n");
    sandbox.add_cloud("cloud-2", "mirrors = [\"acme/plant-a/line-2\"]\n");
    sandbox.add_edge("edge-a", &["acme/plant-a"], "");
    sandbox.wait_live(3, FORMED).await;
    let mut cloud1 = sandbox.client("cloud-1").await;
    for n in [1, 3] {
        cloud1.send_command(set_speed(n, 1300.0)).await.unwrap();
    }
    let list = |prefix: &'static str| {
        let mut client = cloud1.clone();
        async move {
            client
                .list_twins(pb::ListTwinsRequest {
                    path_prefix: prefix.into(),
                    ..Default::default()
                })
                .await
                .map(|r| r.into_inner().twins)
        }
    };
    // Its own part from its mirror; the other part from the other cloud's mirror.
    let line1 = eventually(
        "cloud-1 mirrors line-1",
        Duration::from_secs(20),
        || async {
            list("acme/plant-a/line-1")
                .await
                .ok()
                .filter(|t| t.len() == 2)
        },
    )
    .await;
    assert!(line1.iter().all(|t| t.mirror.is_some()));
    let line2 = eventually(
        "cloud-2 mirrors line-2",
        Duration::from_secs(20),
        || async {
            list("acme/plant-a/line-2")
                .await
                .ok()
                .filter(|t| t.len() == 1)
        },
    )
    .await;
    assert_eq!(line2[0].asset_path, press(3).to_string());
    assert_eq!(line2[0].mirror.as_ref().unwrap().owner_node, "edge-a");
    // A twin outside its part is read from the owner, not mirrored here.
    let press3 = twin_of(&mut cloud1.clone(), 3).await.unwrap();
    assert!(press3.mirror.is_none());
    assert_eq!(desired(&press3, "speed"), Some(Value::Float(1300.0)));
    // No single node mirrors the whole plant.
    let error = list("acme/plant-a").await.unwrap_err();
    assert_eq!(error.code(), tonic::Code::Unavailable, "{error:?}");
}

/// A command with only a gRPC deadline, forwarded by a cloud node to an edge that is
/// stalled (SIGSTOP): the caller's answer comes at the deadline, whether the cloud node
/// had a connection to the edge open or had to open one, and when the edge runs again
/// it never actuates the command.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_command_forwarded_to_a_stalled_edge_is_never_actuated_after_its_deadline() {
    const DEADLINE: Duration = Duration::from_secs(2);
    // The stall must not make the edge look dead to the clouds within the test.
    let patient = "membership = { phi_threshold = 40.0 }";
    let mut sandbox = Sandbox::new("acme-deadline");
    sandbox.add_cloud("cloud-1", patient);
    sandbox.add_cloud("cloud-2", patient);
    sandbox.add_edge("edge-a", &["acme/plant-a/line-1"], "");
    sandbox.wait_live(3, FORMED).await;

    // cloud-1 has forwarded to edge-a before: its connection is open. cloud-2 never
    // has (admission's Hello uses a connection of its own).
    let mut open = sandbox.client("cloud-1").await;
    let mut fresh = sandbox.client("cloud-2").await;
    let warm = open.send_command(set_speed(1, 1500.0)).await.unwrap();
    assert!(matches!(
        outcome(warm.into_inner().verdict),
        Outcome::Accepted(_)
    ));

    sandbox.pause("edge-a");
    let late = |mut client: crate::sandbox::Client, rpm: f64| async move {
        let mut request = tonic::Request::new(set_speed(1, rpm));
        request.set_timeout(DEADLINE);
        let sent = Instant::now();
        let answer = client.send_command(request).await;
        (answer, sent.elapsed())
    };
    let ((over_open, open_took), (over_fresh, fresh_took)) =
        tokio::join!(late(open.clone(), 1700.0), late(fresh.clone(), 1900.0));
    sandbox.resume("edge-a");
    for (answer, took, how) in [
        (over_open, open_took, "an open connection"),
        (over_fresh, fresh_took, "a new connection"),
    ] {
        let status = answer.expect_err("a stalled edge cannot have answered");
        assert_eq!(
            status.code(),
            tonic::Code::DeadlineExceeded,
            "over {how}: {status:?}"
        );
        assert!(
            took < DEADLINE + Duration::from_millis(1500),
            "over {how} the answer came {took:?} after sending, past the {DEADLINE:?} deadline"
        );
    }

    // Running again, the edge takes later commands over both connections; the late
    // ones, if they reach it at all, are refused.
    for (client, rpm) in [(&mut open, 1000.0), (&mut fresh, 1100.0)] {
        let answer = eventually("the resumed edge answers", FORMED, || {
            let mut client = client.clone();
            async move { client.send_command(set_speed(1, rpm)).await.ok() }
        })
        .await;
        assert!(matches!(
            outcome(answer.into_inner().verdict),
            Outcome::Accepted(_)
        ));
    }
    let mut edge = sandbox.client("edge-a").await;
    let twin = twin_of(&mut edge, 1).await.unwrap();
    assert_eq!(desired(&twin, "speed"), Some(Value::Float(1100.0)));
    let applied: Vec<f64> = audit_of(&mut edge, "acme/plant-a/line-1/press-1")
        .await
        .iter()
        .filter(|record| record.command == "set_speed")
        .flat_map(|record| record.applied.iter())
        .filter_map(|value| value.value.as_ref().and_then(value_from_proto))
        .map(|value| value.as_f64())
        .collect();
    assert_eq!(
        applied,
        vec![1500.0, 1000.0, 1100.0],
        "the commands past their deadline were never applied"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sealed_gossip_shuts_out_nodes_without_the_key_and_says_nothing_in_clear() {
    let mut sandbox = Sandbox::new("acme-sealed");
    sandbox.with_gossip_keys(&["gossip.key"]);
    sandbox.add_cloud("cloud-1", "");
    // edge-a joins through a relay in front of the seed that keeps every datagram.
    let seed = sandbox.seed().unwrap();
    let relay = UdpRelay::start(seed).await;
    sandbox.seed_through(relay.addr);
    sandbox.add_edge("edge-a", &["acme/plant-a"], "");
    sandbox.seed_through(seed);
    sandbox.wait_live(2, FORMED).await;

    // Two strangers of the same cluster id seed from cloud-1: one with another key,
    // one gossiping in clear.
    sandbox.with_gossip_keys(&["another.key"]);
    sandbox.add_cloud("stranger-keyed", "");
    sandbox.with_gossip_keys(&[]);
    sandbox.add_cloud("stranger-clear", "");
    wait_until(
        "the strangers gossip and cloud-1 drops what they send",
        Duration::from_secs(30),
        || {
            std::future::ready(
                ["stranger-keyed", "stranger-clear"].iter().all(|id| {
                    sandbox
                        .node(id)
                        .output()
                        .contains("joined cluster membership")
                }) && sandbox
                    .node("cloud-1")
                    .output()
                    .contains("gossip datagram dropped"),
            )
        },
    )
    .await;
    // Give gossip rounds to (not) merge them.
    tokio::time::sleep(Duration::from_secs(3)).await;
    for id in ["cloud-1", "edge-a"] {
        assert_eq!(sandbox.node(id).live(), 2, "{}", sandbox.node(id).output());
    }
    for id in ["stranger-keyed", "stranger-clear"] {
        assert_eq!(sandbox.node(id).live(), 1, "{}", sandbox.node(id).output());
    }
    assert!(
        sandbox
            .node("stranger-clear")
            .output()
            .contains("cluster gossip is not sealed")
    );

    // What went over the wire between edge-a and the seed names nothing.
    let datagrams = relay.datagrams();
    assert!(
        datagrams.len() >= 2,
        "{} datagrams relayed",
        datagrams.len()
    );
    let mut needles: Vec<Vec<u8>> = [
        "cloud-1",
        "edge-a",
        "acme-sealed",
        "acme/plant-a",
        "127.0.0.1",
    ]
    .iter()
    .map(|text| text.as_bytes().to_vec())
    .collect();
    for id in ["cloud-1", "edge-a"] {
        let node = sandbox.node(id);
        needles.push(node.api.to_string().into_bytes());
        needles.push(node.api.port().to_string().into_bytes());
    }
    needles.push(seed.to_string().into_bytes());
    let mut binary_seed = vec![127, 0, 0, 1];
    binary_seed.extend_from_slice(&seed.port().to_be_bytes());
    needles.push(binary_seed);
    for datagram in &datagrams {
        for needle in &needles {
            assert!(
                !datagram
                    .windows(needle.len())
                    .any(|w| w == needle.as_slice()),
                "a gossip datagram holds {:?} in clear",
                String::from_utf8_lossy(needle)
            );
        }
    }

    // Sealed, a node that dies is still found dead within the failure-detection bound
    // (about 2.5 s with the default settings; the bound allows for a busy machine).
    sandbox.kill("edge-a");
    let killed = Instant::now();
    wait_until("cloud-1 finds edge-a dead", Duration::from_secs(15), || {
        std::future::ready(sandbox.node("cloud-1").live() == 1)
    })
    .await;
    println!("sealed gossip: edge-a found dead in {:?}", killed.elapsed());
}

/// What a fleet watcher knows of one twin: its version and vibration reading.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
struct Watched {
    version: u64,
    vibration: Option<f64>,
}

fn watched(twin: &pb::Twin) -> Watched {
    Watched {
        version: twin.version,
        vibration: twin
            .reported
            .iter()
            .find(|r| r.channel == "vibration")
            .and_then(|r| r.sample.as_ref().map(|s| s.value)),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fleet_watch_that_keeps_reading_survives_an_edge_backlog_and_ends_at_the_mirror() {
    let broker = brokers::embedded();
    let url = broker.url();
    let mut sandbox = Sandbox::new("acme-backlog");
    let cloud_proxy = sandbox.add_cloud_behind_proxy("cloud-1", "").await;
    let edge_proxy = sandbox
        .add_edge_behind_proxy("edge-a", &["acme/plant-a"], &mqtt(&url, "edge-a"))
        .await;
    sandbox.wait_live(2, FORMED).await;
    let (publisher, eventloop) = brokers::client(&url, "machines", true);
    let (_rx, pump_task) = crate::mqtt::pump(eventloop);
    let publish = |n: u32, value: f64, seq: u64| {
        let publisher = publisher.clone();
        async move {
            publisher
                .publish(
                    format!("{}/telemetry/vibration", press(n)),
                    QoS::AtLeastOnce,
                    false,
                    format!(r#"{{"v": {value}, "seq": {seq}}}"#),
                )
                .await
                .unwrap();
        }
    };
    for n in [1, 2, 3] {
        publish(n, 2.0, 1).await;
    }
    converged(&sandbox, "edge-a", "cloud-1", Duration::from_secs(30)).await;

    // A fleet watch on the cloud node that reads as fast as it can.
    let mut cloud = sandbox.client("cloud-1").await;
    let mut stream = cloud
        .watch_twins(pb::WatchTwinsRequest::default())
        .await
        .unwrap()
        .into_inner();
    let state = std::sync::Arc::new(parking_lot::Mutex::new(std::collections::BTreeMap::<
        String,
        Watched,
    >::new()));
    let coalesced = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
    let reader = {
        let state = state.clone();
        let coalesced = coalesced.clone();
        tokio::spawn(async move {
            loop {
                let message = match stream.message().await {
                    Ok(Some(message)) => message,
                    Ok(None) => return "the stream ended".to_string(),
                    Err(status) => return format!("the stream was ended: {status:?}"),
                };
                let mut state = state.lock();
                match message.event {
                    Some(Event::Snapshot(twin)) => {
                        state.insert(twin.asset_path.clone(), watched(&twin));
                    }
                    Some(Event::Coalesced(twin)) => {
                        coalesced.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                        let entry = state.entry(twin.asset_path.clone()).or_default();
                        assert!(twin.version >= entry.version, "versions never go back");
                        *entry = watched(&twin);
                    }
                    Some(Event::Change(change)) => {
                        let entry = state.entry(change.asset_path.clone()).or_default();
                        // One message may change several things under one version.
                        assert!(
                            change.version >= entry.version,
                            "versions never go back: {} after {}",
                            change.version,
                            entry.version
                        );
                        entry.version = change.version;
                        if let Some(pb::twin_change::Change::Reported(reported)) = change.change
                            && reported.channel == "vibration"
                        {
                            entry.vibration = Some(reported.value);
                        }
                    }
                    _ => {}
                }
            }
        })
    };

    // Partitioned, the edge takes thousands of readings, is killed and restarted with
    // its backlog in the outbox; healed, the backlog reaches the cloud in a burst.
    cloud_proxy.partition();
    edge_proxy.partition();
    let backlog: u64 = 1500;
    for seq in 2..=backlog {
        for n in [1, 2, 3] {
            publish(n, 2.0 + (seq % 97) as f64 * 0.01, seq).await;
        }
    }
    let mut edge = sandbox.client("edge-a").await;
    eventually(
        "the edge applied the backlog",
        Duration::from_secs(60),
        || {
            let mut edge = edge.clone();
            async move {
                let twin = twin_of(&mut edge, 3).await?;
                (twin.reported.iter().any(|r| {
                    r.channel == "vibration" && r.sample.as_ref().is_some_and(|s| s.seq == backlog)
                }))
                .then_some(())
            }
        },
    )
    .await;
    sandbox.kill("edge-a");
    sandbox.restart("edge-a");
    edge = sandbox.client("edge-a").await;
    eventually("the edge serves again", Duration::from_secs(60), || {
        let mut edge = edge.clone();
        async move { twin_of(&mut edge, 1).await.map(|_| ()) }
    })
    .await;
    cloud_proxy.heal();
    edge_proxy.heal();
    converged(&sandbox, "edge-a", "cloud-1", Duration::from_secs(120)).await;

    // The watcher was never ended and holds what the mirror holds.
    let mut differences = String::new();
    let agreed = tokio::time::timeout(Duration::from_secs(30), async {
        loop {
            assert!(!reader.is_finished(), "the watch ended");
            differences.clear();
            for n in [1, 2, 3] {
                let mirror = watched(&twin_of(&mut cloud, n).await.unwrap());
                let seen = state.lock().get(&press(n).to_string()).copied();
                if seen != Some(mirror) {
                    differences
                        .push_str(&format!("press-{n}: watch {seen:?}, mirror {mirror:?}\n"));
                }
            }
            if differences.is_empty() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    })
    .await;
    assert!(
        agreed.is_ok(),
        "the watch did not reach the mirror:\n{differences}"
    );
    assert!(!reader.is_finished(), "the watch ended");
    println!(
        "the fleet watch took a backlog of {} readings, {} coalesced states",
        3 * (backlog - 1),
        coalesced.load(std::sync::atomic::Ordering::Relaxed)
    );
    reader.abort();
    pump_task.abort();
}
