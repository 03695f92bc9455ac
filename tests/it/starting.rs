//! Serving while a node starts: a twin whose actor has not started answers requests
//! UNAVAILABLE with a retry hint, keeps the readings sent to it until its governors
//! run, then applies them.

use std::time::Duration;

use doppel::kernel::Components;
use doppel::kernel::internal::{TwinActor, TwinArgs, TwinStart, TwinsInternals};
use doppel::kernel::twin::Twins;
use doppel::{Error, Topology, TwinTypes};
use doppel_api::{ApiConfig, ApiServer, Role};
use doppel_proto::v1 as pb;
use doppel_proto::v1::twin_service_client::TwinServiceClient;
use tonic::{Code, Request};

use crate::support::{self, PLANT, press, reading};

const VIEWER: &str = "starting-viewer-token-0123456789";

/// Longest any single step may take.
const STEP: Duration = Duration::from_secs(15);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_twin_not_started_yet_answers_starting_and_applies_its_readings_once_it_runs() {
    let dir = tempfile::tempdir().unwrap();
    let types = TwinTypes::from_toml(&support::types(), "tests/types.toml").unwrap();
    let topology = Topology::from_toml(PLANT, "tests/plant.toml", &types).unwrap();
    let machines: Vec<_> = topology
        .machines()
        .map(|m| (m.path.clone(), m.twin_type.clone()))
        .collect();
    let mut components = Components::new();
    doppel::model::register(&mut components);
    doppel::governor::register(&mut components);
    let data_dir = dir.path().to_path_buf();
    let recovered = tokio::task::spawn_blocking(move || {
        Twins::open(
            &data_dir,
            &types,
            &machines,
            components,
            support::settings(),
        )
    })
    .await
    .unwrap()
    .unwrap();
    let twins = recovered.twins;
    for entry in twins.directory().entries() {
        entry.mark_starting();
    }

    // The API serves already; the twin answers "starting", with a retry hint.
    let api = ApiServer::start(
        ApiConfig::new("127.0.0.1:0".parse().unwrap())
            .token("vera", VIEWER, Role::Viewer)
            .http("127.0.0.1:0".parse().unwrap()),
        twins.clone(),
    )
    .await
    .unwrap();
    let mut client = TwinServiceClient::connect(api.url()).await.unwrap();
    let mut request = Request::new(pb::GetTwinRequest {
        asset_path: press(1).to_string(),
    });
    request
        .metadata_mut()
        .insert("authorization", format!("Bearer {VIEWER}").parse().unwrap());
    let status = client.get_twin(request).await.unwrap_err();
    assert_eq!(status.code(), Code::Unavailable, "{status:?}");
    assert!(status.message().contains("starting"), "{status:?}");
    assert_eq!(
        status
            .metadata()
            .get("grpc-retry-pushback-ms")
            .and_then(|v| v.to_str().ok()),
        Some("500")
    );
    assert!(matches!(
        twins.report(&press(1)).await,
        Err(Error::Starting(_))
    ));
    // Over REST: 503 with Retry-After and a problem body.
    let http =
        doppel_testkit::http::Client::new(&format!("http://{}", api.http_addr().unwrap()), None)
            .with_token(VIEWER);
    let answer = http
        .get(&format!(
            "/api/v1/twins/{}",
            doppel_testkit::http::segment(press(1).as_str())
        ))
        .await;
    assert_eq!(answer.status, 503, "{}", answer.text());
    assert_eq!(answer.header("retry-after"), "1");
    assert_eq!(answer.json()["code"], "UNAVAILABLE");

    // A reading waits for the twin: nothing applies it before its governors run.
    let source = twins.source("starting-test").unwrap();
    let receipt = twins
        .ingest(&press(1), "vibration", reading(3.5, source, 1))
        .await
        .unwrap();
    let durable = tokio::spawn(receipt.durable());
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(!durable.is_finished(), "no twin ran to apply the reading");

    // The actors start: the reading is applied and acknowledged.
    let mut actors = Vec::new();
    for (entry, core) in twins.directory().entries().iter().zip(recovered.cores) {
        let args = TwinArgs {
            entry: entry.clone(),
            kernel: twins.kernel().clone(),
            start: TwinStart::Recovered(Box::new(core.expect("parking is off"))),
            supervisor: None,
        };
        actors.push(TwinActor::spawn(args).await.unwrap());
    }
    tokio::time::timeout(STEP, durable)
        .await
        .expect("the reading became durable once the twin ran")
        .unwrap()
        .unwrap();
    let report = twins.report(&press(1)).await.unwrap();
    assert_eq!(report.value("vibration"), Some(3.5));
    assert!(!twins.entry(&press(1)).unwrap().is_starting());

    api.stop().await;
    for actor in actors {
        actor.twin.stop();
        actor.task.await.unwrap();
    }
    let journal = twins.kernel().journal.clone();
    drop(twins);
    tokio::task::spawn_blocking(move || journal.stop())
        .await
        .unwrap();
}
