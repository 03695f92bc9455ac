//! Model deployments across a cluster of real `doppel node` processes: a package
//! registered on the cloud node (the fleet's registry) and deployed there runs on the
//! twins of two edge nodes, each of which checks the signature with its own trusted
//! keys; the cloud lists every edge's deployments, withdraws one on the edge that holds
//! it, and the audit records replicate to its mirror.

use std::time::Duration;

use doppel::kernel::model::package::{PackageFile, hex_encode, signing_key};
use doppel_proto::v1 as pb;
use doppel_testkit::eventually;
use tonic::Code;

use crate::sandbox::{ModelClient, Sandbox};
use crate::support::{self, press};

const FORMED: Duration = Duration::from_secs(60);
const STEP: Duration = Duration::from_secs(30);

fn shadow_to_presses() -> pb::DeployRequest {
    pb::DeployRequest {
        kind: "degradation".into(),
        version: "1.2.0".into(),
        twin_type: "press".into(),
        mode: pb::DeployMode::Shadow as i32,
        ..Default::default()
    }
}

async fn packages(models: &mut ModelClient) -> Vec<String> {
    (models
        .list_packages(pb::ListPackagesRequest::default())
        .await)
        .unwrap()
        .into_inner()
        .packages
        .iter()
        .map(|p| format!("{}@{}", p.kind, p.version))
        .collect()
}

/// The shadow versions press `n` runs, read through `client`.
async fn shadows(client: &mut crate::sandbox::Client, n: u32) -> Vec<String> {
    let twin = client
        .get_twin(pb::GetTwinRequest {
            asset_path: press(n).to_string(),
        })
        .await
        .unwrap()
        .into_inner()
        .twin
        .unwrap();
    twin.shadows.iter().map(|s| s.version.clone()).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deployment_made_on_a_cloud_node_runs_on_the_twins_of_two_edges() {
    // The fleet's key, which every node trusts, and a vendor's, which edge-b does not.
    let key = signing_key(&"31".repeat(32)).unwrap();
    let vendor = signing_key(&"32".repeat(32)).unwrap();
    let public = |seed: &[u8]| format!("\"{}\"", hex_encode(seed));
    let (fleet_key, vendor_key) = (
        public(key.verifying_key().as_bytes()),
        public(vendor.verifying_key().as_bytes()),
    );
    let trusting = |keys: &[&String]| {
        format!(
            "[models]\ntrusted_keys = [{}]\n",
            (keys.iter().map(|k| k.as_str()).collect::<Vec<_>>()).join(", ")
        )
    };
    let mut sandbox = Sandbox::new("acme-model-fleet");
    sandbox.add_cloud_with("cloud-1", &trusting(&[&fleet_key, &vendor_key]));
    sandbox.add_edge(
        "edge-a",
        &["acme/plant-a/line-1"],
        &trusting(&[&fleet_key, &vendor_key]),
    );
    sandbox.add_edge("edge-b", &["acme/plant-a/line-2"], &trusting(&[&fleet_key]));
    sandbox.wait_live(3, FORMED).await;
    let mut cloud = sandbox.models("cloud-1").await;
    let mut edge_b = sandbox.models("edge-b").await;
    let twins = sandbox.client("cloud-1").await;
    // Both edges answer forwarded calls.
    for n in [1, 3] {
        eventually("the cloud reaches the edge", FORMED, || {
            let mut twins = twins.clone();
            async move {
                let request = pb::GetTwinRequest {
                    asset_path: press(n).to_string(),
                };
                twins.get_twin(request).await.ok()
            }
        })
        .await;
    }

    // A package the cloud has not registered is not sent anywhere.
    let error = cloud.deploy(shadow_to_presses()).await.unwrap_err();
    assert_eq!(error.code(), Code::NotFound, "{error:?}");

    // The fleet's registry is the cloud's; edges receive a package with a deployment.
    let signed = PackageFile::parse(&support::degradation_package("1.2.0"))
        .unwrap()
        .sign(&key);
    let registered = cloud
        .register_package(pb::RegisterPackageRequest {
            package: signed.clone(),
        })
        .await
        .unwrap()
        .into_inner();
    assert!(registered.new);
    assert!(packages(&mut edge_b).await.is_empty());

    // Deployed on the cloud: each edge deploys to its own twins, and says so.
    let deployed = cloud
        .deploy(shadow_to_presses())
        .await
        .unwrap()
        .into_inner();
    assert!(deployed.deployment.is_none(), "{deployed:?}");
    let mut nodes: Vec<(String, u32, String)> = (deployed.nodes.iter())
        .map(|n| (n.node_id.clone(), n.applied, n.error.clone()))
        .collect();
    nodes.sort();
    assert_eq!(
        nodes,
        [
            ("edge-a".to_string(), 2, String::new()),
            ("edge-b".to_string(), 1, String::new())
        ],
        "{deployed:?}"
    );
    let mut applied = deployed.applied.clone();
    applied.sort();
    assert_eq!(
        applied,
        [press(1), press(2), press(3)].map(|p| p.to_string()),
        "{deployed:?}"
    );
    assert!(deployed.failed.is_empty(), "{deployed:?}");
    assert!(
        packages(&mut edge_b)
            .await
            .contains(&"degradation@1.2.0".to_string())
    );

    // The shadow runs on twins of both edges (read on each: mirrors keep production's
    // state only).
    let mut on_a = sandbox.client("edge-a").await;
    let mut on_b = sandbox.client("edge-b").await;
    assert_eq!(shadows(&mut on_a, 1).await, ["1.2.0"]);
    assert_eq!(shadows(&mut on_b, 3).await, ["1.2.0"]);

    // The cloud lists every edge's deployment, each with the node that holds it.
    let listed = cloud
        .list_deployments(pb::ListDeploymentsRequest::default())
        .await
        .unwrap()
        .into_inner();
    assert!(listed.unavailable.is_empty(), "{listed:?}");
    let mut held: Vec<(String, u64, bool)> = (listed.deployments.iter())
        .map(|d| (d.node_id.clone(), d.id, d.active))
        .collect();
    held.sort();
    assert_eq!(
        held,
        [
            ("edge-a".to_string(), 1, true),
            ("edge-b".to_string(), 1, true)
        ]
    );

    // The package's page on the cloud lists its deployments on every edge.
    let shown = cloud
        .get_package(pb::GetPackageRequest {
            kind: "degradation".into(),
            version: "1.2.0".into(),
        })
        .await
        .unwrap()
        .into_inner();
    let mut on: Vec<String> = shown
        .deployments
        .iter()
        .map(|d| d.node_id.clone())
        .collect();
    on.sort();
    assert_eq!(on, ["edge-a", "edge-b"], "{shown:?}");

    // Deployment 1 is ambiguous across the fleet: the cloud asks the node named.
    let divergence = cloud
        .get_divergence(pb::GetDivergenceRequest {
            deployment: 1,
            node_id: "edge-a".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(divergence.twins.len(), 2, "{divergence:?}");
    assert_eq!(divergence.deployment.unwrap().node_id, "edge-a");
    let withdrawn = cloud
        .withdraw(pb::WithdrawRequest {
            deployment: 1,
            reason: "line-2 keeps 1.0.0 alone".into(),
            node_id: "edge-b".into(),
        })
        .await
        .unwrap()
        .into_inner();
    let record = withdrawn.deployment.unwrap();
    assert_eq!((record.node_id.as_str(), record.active), ("edge-b", false));
    assert!(shadows(&mut on_b, 3).await.is_empty());
    assert_eq!(shadows(&mut on_a, 1).await, ["1.2.0"]);
    let error = cloud
        .withdraw(pb::WithdrawRequest {
            deployment: 1,
            reason: "typo".into(),
            node_id: "edge-z".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(error.code(), Code::Unavailable, "{error:?}");

    // Each step is in the twins' audit trail, replicated to the cloud's mirror.
    eventually(
        "the deployment steps reach the cloud's mirror",
        STEP,
        || {
            let mut twins = twins.clone();
            async move {
                let audit = twins
                    .list_audit(pb::ListAuditRequest {
                        path_prefix: "acme/plant-a".into(),
                        ..Default::default()
                    })
                    .await
                    .ok()?
                    .into_inner();
                let steps: Vec<&str> = (audit.records.iter())
                    .filter(|r| r.kind == pb::AuditKind::ModelDeployment as i32)
                    .map(|r| r.asset_path.as_str())
                    .collect();
                let deployed_everywhere = [1, 2, 3]
                    .iter()
                    .all(|&n| steps.contains(&press(n).as_str()));
                let withdrawn = steps.iter().filter(|p| **p == press(3).as_str()).count() == 2;
                (deployed_everywhere && withdrawn).then_some(())
            }
        },
    )
    .await;

    // An operator's annotation sent to the cloud is recorded by the owning edge and
    // replicates back: the cloud's mirror lists it apart from the rest of the trail.
    let annotated = cloud
        .annotate(pb::AnnotateRequest {
            asset_path: press(3).to_string(),
            annotation: Some(pb::Annotation {
                subject: Some(pb::annotation::Subject::Recommendation(
                    pb::RecommendedCommand {
                        command: "stop".into(),
                        params: Vec::new(),
                    },
                )),
                outcome: pb::AnnotationOutcome::Confirmed as i32,
                note: String::new(),
            }),
        })
        .await
        .unwrap()
        .into_inner()
        .record
        .unwrap();
    eventually("the annotation reaches the cloud's mirror", STEP, || {
        let mut twins = twins.clone();
        async move {
            let request = pb::ListAuditRequest {
                path_prefix: "acme/plant-a".into(),
                kinds: vec![pb::AuditKind::Annotation as i32],
                ..Default::default()
            };
            let audit = twins.list_audit(request).await.ok()?.into_inner();
            (audit.records.len() == 1 && audit.records[0].seq == annotated.seq).then_some(())
        }
    })
    .await;

    // A package signed by a key edge-b does not trust: edge-a deploys it, edge-b
    // refuses it under its own keys, and the cloud says which did what.
    let vendor_package = PackageFile::parse(&support::degradation_package("1.3.0"))
        .unwrap()
        .sign(&vendor);
    cloud
        .register_package(pb::RegisterPackageRequest {
            package: vendor_package,
        })
        .await
        .unwrap();
    let mut request = shadow_to_presses();
    request.version = "1.3.0".into();
    request.mode = pb::DeployMode::Production as i32;
    let partial = cloud.deploy(request).await.unwrap().into_inner();
    let by_node = |id: &str| partial.nodes.iter().find(|n| n.node_id == id).unwrap();
    assert_eq!(by_node("edge-a").applied, 2, "{partial:?}");
    let refused = by_node("edge-b");
    assert!(refused.deployment.is_none(), "{partial:?}");
    assert!(refused.error.contains("trust"), "{partial:?}");
    assert!(
        !packages(&mut edge_b)
            .await
            .contains(&"degradation@1.3.0".to_string())
    );
}
