//! Recommend over loopback with a real tonic client and through `doppel twin
//! recommend`: a press heating towards its trip gets a lower speed ranked first and
//! the speeds whose projection crosses the trip marked denied by the trip governor.
//! And the why of an alarm: GetTwin carries the model's explanation with its inputs.

use std::time::Duration;

use doppel::kernel::{Command, Origin, SourceId};
use doppel::{Quality, Reading, Timestamp, Value};
use doppel_api::{ApiConfig, ApiServer, Role};
use doppel_proto::v1 as pb;
use doppel_proto::v1::twin_service_client::TwinServiceClient;
use tonic::transport::Endpoint;

use crate::support::{self, authed, press};

const VIEWER: &str = "viewer-token-0123456789";

/// The test press (thermal gain 0.03 over 25 degC ambient, tau 60 s; overtemp trip
/// above 95 degC; speed envelope 200 to 2400 rpm) with a declared objective: as fast
/// as the temperature allows.
fn types() -> String {
    format!(
        "{}{}",
        support::types(),
        r#"
[types.press.recommend]
command = "set_speed"
param = "rpm"
values = [1200, 1500, 1800, 2100, 2400, 2700]
horizon_secs = 600.0
maximize = "rpm"
constraints = [{ series = "temperature", max = 94.0 }]
"#
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_overheating_press_is_told_to_slow_down_and_why() {
    let dir = tempfile::tempdir().unwrap();
    let runtime = support::start_custom(dir.path(), &types(), support::settings(), |b| b).await;
    let twins = runtime.twins().clone();
    let path = press(1);
    // Run it at the envelope's top: 2400 rpm settles at 97 degC, above the trip.
    let command = Command::new(path.clone(), "set_speed", Origin::operator("olga"))
        .param("rpm", Value::Float(2400.0));
    let outcome = twins.command(command).await.unwrap();
    assert!(outcome.verdict.is_applied(), "{:?}", outcome.verdict);
    // Forty readings two seconds apart, after the command, as the press heats from
    // 80 degC towards 97 along its time constant: 92.4 degC at the last.
    let start = Timestamp::now().as_micros() + 1_000_000;
    for i in 0..40u64 {
        let secs = i as f64 * 2.0;
        let value = 97.0 - 17.0 * (-secs / 60.0).exp();
        let at = Timestamp(start + (secs * 1e6) as i64);
        for channel in ["temperature", "temperature_b"] {
            let reading = Reading {
                value,
                source_time: at,
                quality: Quality::Good,
                source: SourceId(1),
                epoch: 0,
                seq: i + 1,
                stamped: true,
            };
            support::ingest_durable(&twins, &path, channel, reading).await;
        }
    }
    assert!(
        twins.report(&path).await.unwrap().trips.is_empty(),
        "not tripped yet"
    );

    let config = ApiConfig::new("127.0.0.1:0".parse().unwrap()).token("vera", VIEWER, Role::Viewer);
    let api = ApiServer::start(config, twins.clone()).await.unwrap();
    let channel = Endpoint::from_shared(api.url())
        .unwrap()
        .connect_timeout(Duration::from_secs(5))
        .connect()
        .await
        .unwrap();
    let mut client = TwinServiceClient::new(channel);
    let request = pb::RecommendRequest {
        asset_path: path.to_string(),
        ..Default::default()
    };
    let response = client
        .recommend(authed(VIEWER, request))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(response.objective, "maximize rpm");
    let order: Vec<(f64, u32, &str)> = response
        .candidates
        .iter()
        .map(|c| (c.value, c.tier, c.projected_by.as_str()))
        .collect();
    // The fastest speed that stays below the trip comes first, lower than the speed
    // the press runs at; 2400 (and 2700, clamped to it) would trip it.
    let best = &response.candidates[0];
    assert_eq!(best.value, 2100.0, "{order:?}");
    assert!(best.tier <= 1, "{order:?}");
    assert!(
        best.rationale.contains("temperature peaks at"),
        "{}",
        best.rationale
    );
    let check = &best.checks[0];
    assert!(check.holds && check.worst.unwrap() <= 94.0, "{check:?}");
    assert!(
        check.worst_bound.is_some(),
        "the thermal model gives bounds: {check:?}"
    );
    for denied in [2400.0, 2700.0] {
        let candidate = response
            .candidates
            .iter()
            .find(|c| c.value == denied)
            .unwrap();
        assert_eq!(candidate.tier, 3, "{order:?}");
        assert_eq!(candidate.projected_by, "overtemp", "{order:?}");
        assert!(
            candidate.projected_reason.contains("above trip limit"),
            "{}",
            candidate.projected_reason
        );
    }
    let clamped = response
        .candidates
        .iter()
        .find(|c| c.value == 2700.0)
        .unwrap();
    assert!(
        matches!(
            clamped.verdict.as_ref().and_then(|v| v.outcome.as_ref()),
            Some(pb::verdict::Outcome::Clamped(_))
        ),
        "{clamped:?}"
    );
    assert_eq!(
        &order[..4].iter().map(|o| o.0).collect::<Vec<_>>(),
        &[2100.0, 1800.0, 1500.0, 1200.0]
    );

    // The same through the CLI, for a person.
    let url = api.url();
    let run = tokio::task::spawn_blocking(move || {
        crate::cli_twin::run_doppel(
            &["twin", "recommend", "acme/plant-a/line-1/press-1"],
            &[("DOPPEL_ADDR", url.as_str()), ("DOPPEL_TOKEN", VIEWER)],
        )
    })
    .await
    .unwrap();
    assert_eq!(run.code, 0, "{}", run.stderr);
    let first = run
        .stdout
        .lines()
        .find(|l| l.trim_start().starts_with("1 "))
        .unwrap();
    assert!(first.contains("2100"), "{}", run.stdout);
    assert!(
        run.stdout.contains("DENIED by overtemp (projected)"),
        "{}",
        run.stdout
    );

    // A grid that is not numbers: a clear error.
    let bad = client
        .recommend(authed(
            VIEWER,
            pb::RecommendRequest {
                asset_path: path.to_string(),
                command: "set_speed".into(),
                param: "rpm".into(),
                values: vec![f64::NAN],
            },
        ))
        .await
        .unwrap_err();
    assert_eq!(bad.code(), tonic::Code::InvalidArgument, "{bad:?}");
    api.stop().await;
    runtime.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_alarm_says_why_with_the_model_and_its_inputs() {
    let dir = tempfile::tempdir().unwrap();
    let runtime = support::start(dir.path()).await;
    let twins = runtime.twins().clone();
    let path = press(2);
    // A steady vibration, then a jump the anomaly model has not seen.
    for seq in 1..=40u64 {
        let value = 2.0 + (seq % 3) as f64 * 0.05;
        support::ingest_durable(
            &twins,
            &path,
            "vibration",
            support::reading(value, SourceId(1), seq),
        )
        .await;
    }
    support::ingest_durable(
        &twins,
        &path,
        "vibration",
        support::reading(9.0, SourceId(1), 41),
    )
    .await;

    let config = ApiConfig::new("127.0.0.1:0".parse().unwrap()).token("vera", VIEWER, Role::Viewer);
    let api = ApiServer::start(config, twins.clone()).await.unwrap();
    let channel = Endpoint::from_shared(api.url())
        .unwrap()
        .connect()
        .await
        .unwrap();
    let mut client = TwinServiceClient::new(channel);
    let twin = client
        .get_twin(authed(
            VIEWER,
            pb::GetTwinRequest {
                asset_path: path.to_string(),
            },
        ))
        .await
        .unwrap()
        .into_inner()
        .twin
        .unwrap();
    let alarm = twin
        .alarms
        .iter()
        .find(|a| a.code == "anomaly:vibration")
        .expect("the jump raises an anomaly");
    let explanation = alarm.explanation.as_ref().expect("it says why");
    assert_eq!(explanation.source, "ewma_anomaly");
    assert!(!explanation.version.is_empty());
    assert!(
        explanation.summary.contains("standard deviations above"),
        "{}",
        explanation.summary
    );
    let inputs: Vec<(&str, f64)> = explanation
        .inputs
        .iter()
        .map(|i| (i.name.as_str(), i.value))
        .collect();
    assert_eq!(inputs[0], ("vibration", 9.0), "{inputs:?}");
    assert_eq!(explanation.inputs[0].unit, "mm/s");
    assert!(
        inputs.iter().any(|(name, _)| *name == "moving mean"),
        "{inputs:?}"
    );
    api.stop().await;
    runtime.shutdown().await;
}
