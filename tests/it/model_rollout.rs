//! `doppel.v1.ModelService` over loopback with a real tonic client, real twins and a
//! real redb file: packages refused or registered by role and signature, a shadow on
//! one line seen in GetTwin and summed in GetDivergence, a canary a bad package breaks
//! rolled back by itself and audited, and a compatible one promoted with its state.

use std::time::Duration;

use doppel::kernel::model::package::{PackageFile, hex_encode, signing_key};
use doppel::kernel::{AuditKind, SourceId};
use doppel::{AssetPath, Twins};
use doppel_api::{ApiConfig, ApiHandle, ApiServer, Role};
use doppel_proto::v1 as pb;
use doppel_proto::v1::model_service_client::ModelServiceClient;
use doppel_proto::v1::twin_service_client::TwinServiceClient;
use tonic::Code;
use tonic::transport::{Channel, Endpoint};

use crate::support::{self, authed, press, reading};

const VIEWER: &str = "viewer-token-0123456789";
const ADMIN: &str = "admin-token-0123456789";

/// `n` days.
fn days(n: u64) -> Duration {
    Duration::from_secs(n * 86_400)
}

/// A training window: the half-year before last month, by the clock at run time.
fn window() -> (String, String) {
    (
        support::rfc3339_ago(days(210)),
        support::rfc3339_ago(days(30)),
    )
}

/// The press's degradation model as its type declares it, as version 1.2.0, fitted on
/// `window`: it says it takes over 1.0.0's state.
fn compatible(window: &(String, String)) -> String {
    format!(
        r#"
[package]
kind = "degradation"
version = "1.2.0"
params = {{ channel = "vibration", threshold = 11.0, warn_hours = 24.0, load_desired = "speed" }}
compatible_with = ["1.0.0"]

[package.metadata]
assumptions = ["bearing wear dominates vibration growth"]
units = {{ vibration = "mm/s", rul_hours = "h" }}
training_window = {{ from = "{}", to = "{}" }}
author = "ann"
created = "{}"
"#,
        window.0,
        window.1,
        support::rfc3339_ago(days(1))
    )
}

/// A bad fit: the failure threshold at 2 mm/s, so any running press is worn out.
fn bad() -> String {
    format!(
        r#"
[package]
kind = "degradation"
version = "9.0.0"
params = {{ channel = "vibration", threshold = 2.0, warn_hours = 24.0 }}

[package.metadata]
author = "bob"
created = "{}"
"#,
        support::rfc3339_ago(days(1))
    )
}

/// Longest any single step may take.
const STEP: Duration = Duration::from_secs(20);

struct Served {
    _dir: tempfile::TempDir,
    runtime: doppel::Runtime,
    api: ApiHandle,
    models: ModelServiceClient<Channel>,
    twins: TwinServiceClient<Channel>,
}

async fn serve(trusted: &str) -> Served {
    let dir = tempfile::tempdir().unwrap();
    let mut settings = support::settings();
    settings.models.trusted_keys = vec![trusted.to_string()];
    let runtime = support::start_with(dir.path(), settings, |b| b).await;
    let config = ApiConfig::new("127.0.0.1:0".parse().unwrap())
        .token("vera", VIEWER, Role::Viewer)
        .token("root", ADMIN, Role::Admin);
    let api = ApiServer::start(config, runtime.twins().clone())
        .await
        .unwrap();
    let channel = Endpoint::from_shared(api.url())
        .unwrap()
        .connect_timeout(Duration::from_secs(5))
        .connect()
        .await
        .unwrap();
    Served {
        _dir: dir,
        runtime,
        api,
        models: ModelServiceClient::new(channel.clone()),
        twins: TwinServiceClient::new(channel),
    }
}

/// Feeds `count` vibration readings of `value` to each twin, durably: a flat signal, so
/// the fitted trend is level.
async fn vibrate(twins: &Twins, paths: &[AssetPath], value: f64, from_seq: u64, count: u64) {
    for seq in from_seq..from_seq + count {
        for path in paths {
            let reading = reading(value, SourceId(1), seq);
            support::ingest_durable(twins, path, "vibration", reading).await;
        }
    }
}

fn canary(max_divergence: f64, window_secs: f64, auto_promote: bool) -> pb::CanarySpec {
    pb::CanarySpec {
        fraction: 0.5,
        per_line: 1,
        min_duration_secs: window_secs,
        max_divergence: Some(max_divergence),
        max_alarm_increase: Some(0),
        auto_promote,
    }
}

fn deploy(
    version: &str,
    mode: pb::DeployMode,
    canary: Option<pb::CanarySpec>,
) -> pb::DeployRequest {
    pb::DeployRequest {
        kind: "degradation".into(),
        version: version.into(),
        twin_type: "press".into(),
        path_prefix: String::new(),
        mode: mode as i32,
        model: String::new(),
        canary,
        evaluation_secs: None,
    }
}

/// Waits until deployment `id`'s rollout is in `state`, polling ListDeployments.
async fn rollout_reaches(
    models: &mut ModelServiceClient<Channel>,
    id: u64,
    state: pb::RolloutState,
) -> pb::ModelDeployment {
    let deadline = tokio::time::Instant::now() + STEP;
    loop {
        let listed = models
            .list_deployments(authed(VIEWER, pb::ListDeploymentsRequest::default()))
            .await
            .unwrap()
            .into_inner();
        let deployment = listed
            .deployments
            .into_iter()
            .find(|d| d.id == id)
            .expect("the deployment is listed");
        let rollout = deployment.rollout.clone().expect("a canary has a rollout");
        if rollout.state == state as i32 {
            return deployment;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "deployment {id} did not reach {state:?}: {deployment:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn degradation_version(twins: &Twins, path: &AssetPath) -> String {
    let report = twins.report(path).await.unwrap();
    let model = report.models.into_iter().find(|m| m.name == "degradation");
    model.expect("a press has a degradation model").version
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn packages_are_registered_by_admins_and_shadows_are_seen_apart() {
    let key = signing_key(&"17".repeat(32)).unwrap();
    let mut served = serve(&hex_encode(key.verifying_key().as_bytes())).await;
    let window = window();
    let unsigned = compatible(&window);
    let signed = PackageFile::parse(&unsigned).unwrap().sign(&key);

    let denied = served
        .models
        .register_package(authed(
            VIEWER,
            pb::RegisterPackageRequest {
                package: signed.clone(),
            },
        ))
        .await
        .unwrap_err();
    assert_eq!(denied.code(), Code::PermissionDenied, "{denied:?}");
    for (package, says) in [
        (unsigned, "not signed"),
        (
            signed.replace("threshold = 11.0", "threshold = 12.0"),
            "changed after signing",
        ),
        (
            PackageFile::parse(&bad())
                .unwrap()
                .sign(&signing_key(&"99".repeat(32)).unwrap()),
            "not trusted",
        ),
        ("[package]\nkind = 3".to_string(), "not a model package"),
    ] {
        let refused = served
            .models
            .register_package(authed(ADMIN, pb::RegisterPackageRequest { package }))
            .await
            .unwrap_err();
        assert_eq!(refused.code(), Code::InvalidArgument, "{refused:?}");
        assert!(refused.message().contains(says), "{refused:?}");
    }
    let registered = served
        .models
        .register_package(authed(
            ADMIN,
            pb::RegisterPackageRequest { package: signed },
        ))
        .await
        .unwrap()
        .into_inner();
    assert!(registered.new);
    let package = registered.package.unwrap();
    assert_eq!(package.signer, hex_encode(key.verifying_key().as_bytes()));
    assert_eq!(package.training_from, window.0);
    assert_eq!(package.units["rul_hours"], "h");

    // A shadow on line 1: its outputs beside the twin's, its figures summed.
    let mut request = deploy("1.2.0", pb::DeployMode::Shadow, None);
    request.twin_type.clear();
    request.path_prefix = "acme/plant-a/line-1".into();
    // An evaluation window is a shadow's: a production deployment declaring one is
    // refused. This shadow's is a millisecond of samples, which four readings cover.
    let mut production = request.clone();
    production.mode = pb::DeployMode::Production as i32;
    production.evaluation_secs = Some(3600.0);
    let refused = served
        .models
        .deploy(authed(ADMIN, production))
        .await
        .unwrap_err();
    assert!(
        refused.message().contains("evaluation window"),
        "{refused:?}"
    );
    request.evaluation_secs = Some(0.001);
    let shadow = served
        .models
        .deploy(authed(ADMIN, request))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(shadow.applied.len(), 2, "{shadow:?}");
    let id = shadow.deployment.unwrap().id;
    let twins = served.runtime.twins().clone();
    vibrate(&twins, &[press(1), press(2), press(3)], 3.0, 1, 4).await;
    let twin = served
        .twins
        .get_twin(authed(
            VIEWER,
            pb::GetTwinRequest {
                asset_path: press(1).to_string(),
            },
        ))
        .await
        .unwrap()
        .into_inner()
        .twin
        .unwrap();
    assert_eq!(twin.shadows.len(), 1, "{twin:?}");
    let seen = &twin.shadows[0];
    assert_eq!((seen.deployment, seen.version.as_str()), (id, "1.2.0"));
    assert!(!seen.baseline);
    assert!(
        seen.values
            .iter()
            .any(|v| v.name == "rul_hours" && v.value.is_some())
    );
    // Its outputs are not the twin's: the twin's degradation model is still 1.0.0.
    assert!(
        twin.models
            .iter()
            .any(|m| m.name == "degradation" && m.version == "1.0.0")
    );
    let divergence = served
        .models
        .get_divergence(authed(
            VIEWER,
            pb::GetDivergenceRequest {
                deployment: id,
                ..Default::default()
            },
        ))
        .await
        .unwrap()
        .into_inner();
    let fleet = divergence.fleet.unwrap();
    assert_eq!((fleet.twins, fleet.samples), (2, 8), "{fleet:?}");
    assert_eq!(divergence.twins.len(), 2);
    assert_eq!(divergence.deployment.unwrap().evaluation_secs, 0.001);
    assert_eq!(
        (divergence.evaluated_twins, divergence.evaluated),
        (2, true),
        "{fleet:?}"
    );
    let press3 = served
        .twins
        .get_twin(authed(
            VIEWER,
            pb::GetTwinRequest {
                asset_path: press(3).to_string(),
            },
        ))
        .await
        .unwrap()
        .into_inner()
        .twin
        .unwrap();
    assert!(press3.shadows.is_empty(), "line 2 runs no shadow");

    let unknown = served
        .models
        .withdraw(authed(
            ADMIN,
            pb::WithdrawRequest {
                deployment: 999,
                reason: "typo".into(),
                ..Default::default()
            },
        ))
        .await
        .unwrap_err();
    assert_eq!(unknown.code(), Code::NotFound, "{unknown:?}");
    served.api.stop().await;
    served.runtime.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_canary_that_breaks_a_criterion_rolls_back_and_one_that_holds_is_promoted() {
    let key = signing_key(&"23".repeat(32)).unwrap();
    let mut served = serve(&hex_encode(key.verifying_key().as_bytes())).await;
    for package in [bad(), compatible(&window())] {
        let package = PackageFile::parse(&package).unwrap().sign(&key);
        served
            .models
            .register_package(authed(ADMIN, pb::RegisterPackageRequest { package }))
            .await
            .unwrap();
    }
    let twins = served.runtime.twins().clone();
    let all = [press(1), press(2), press(3)];
    vibrate(&twins, &all, 3.0, 1, 3).await;

    // The bad package as a canary on half the presses, one per line at most.
    let request = deploy(
        "9.0.0",
        pb::DeployMode::Canary,
        Some(canary(1.0, 600.0, true)),
    );
    let bad = served
        .models
        .deploy(authed(ADMIN, request))
        .await
        .unwrap()
        .into_inner();
    let deployment = bad.deployment.clone().unwrap();
    let canaries: Vec<AssetPath> = (deployment.rollout.as_ref().unwrap().twins.iter())
        .map(|p| AssetPath::parse(p).unwrap())
        .collect();
    assert_eq!(
        canaries.len(),
        2,
        "ceil(3 × 0.5), one per line: {canaries:?}"
    );
    assert_ne!(canaries[0].parent(), canaries[1].parent());
    assert_eq!(bad.applied.len(), 2, "{bad:?}");
    for path in &canaries {
        assert_eq!(degradation_version(&twins, path).await, "9.0.0");
    }
    // Readings: the candidate calls every press worn out, the model it replaced does
    // not; the divergence criterion breaks and the canary rolls back by itself.
    vibrate(&twins, &canaries, 3.0, 10, 3).await;
    let rolled_back = rollout_reaches(
        &mut served.models,
        deployment.id,
        pb::RolloutState::RolledBack,
    )
    .await;
    let rollout = rolled_back.rollout.unwrap();
    assert!(rollout.reason.contains("rul_hours"), "{rollout:?}");
    assert!(!rolled_back.active);
    for path in &canaries {
        assert_eq!(degradation_version(&twins, path).await, "1.0.0");
        let audit = twins
            .audit(
                path,
                doppel::Timestamp(i64::MIN),
                doppel::Timestamp(i64::MAX),
                100,
            )
            .unwrap();
        let rollback = audit
            .iter()
            .rev()
            .find(|r| r.kind == AuditKind::ModelDeployment)
            .expect("the rollback is audited");
        assert_eq!(rollback.origin.principal, "canary");
    }

    // The compatible package: it holds every criterion for its window and is promoted
    // to production on every press, the canary twins keeping its state.
    let request = deploy(
        "1.2.0",
        pb::DeployMode::Canary,
        Some(canary(1.0, 1.0, true)),
    );
    let good = served
        .models
        .deploy(authed(ADMIN, request))
        .await
        .unwrap()
        .into_inner();
    let id = good.deployment.unwrap().id;
    vibrate(&twins, &all, 3.0, 20, 3).await;
    let promoted = rollout_reaches(&mut served.models, id, pb::RolloutState::Promoted).await;
    let rollout = promoted.rollout.unwrap();
    assert!(rollout.promoted_to > id, "{rollout:?}");
    let divergence = rollout.divergence.unwrap();
    assert!(divergence.samples > 0, "{divergence:?}");
    for output in &divergence.outputs {
        assert_eq!(
            output.max_abs, 0.0,
            "a compatible upgrade carries state: {output:?}"
        );
    }
    for path in &all {
        assert_eq!(degradation_version(&twins, path).await, "1.2.0");
    }
    let listed = served
        .models
        .list_deployments(authed(
            VIEWER,
            pb::ListDeploymentsRequest { active_only: true },
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(listed.deployments.len(), 1, "{listed:?}");
    assert_eq!(listed.deployments[0].id, rollout.promoted_to);
    assert_eq!(
        listed.deployments[0].mode,
        pb::DeployMode::Production as i32
    );
    served.api.stop().await;
    served.runtime.shutdown().await;
}
