//! Operators annotate outcomes through the real gRPC API over loopback, on real twins
//! and a real redb file: a false alarm, a safety action confirmed, a recommendation
//! that worked; each is an audit record with the models concerned, refused clearly
//! when it names nothing the twin holds, and exported as labels by `doppel model
//! annotations --json`.

use std::process::Command as Process;

use doppel::kernel::SourceId;
use doppel_api::{ApiConfig, ApiServer, Role};
use doppel_proto::v1 as pb;
use doppel_proto::v1::model_service_client::ModelServiceClient;
use doppel_proto::v1::twin_service_client::TwinServiceClient;
use pb::annotation::Subject;
use tonic::Code;
use tonic::transport::Endpoint;

use crate::support::{self, authed, ingest_durable, press, reading};

const VIEWER: &str = "viewer-token-0123456789";
const OPERATOR: &str = "operator-token-0123456789";

fn annotate(
    path: &str,
    subject: Subject,
    outcome: pb::AnnotationOutcome,
    note: &str,
) -> pb::AnnotateRequest {
    pb::AnnotateRequest {
        asset_path: path.to_string(),
        annotation: Some(pb::Annotation {
            subject: Some(subject),
            outcome: outcome as i32,
            note: note.to_string(),
        }),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn operators_annotate_alarms_safety_actions_and_recommendations_as_labels() {
    let dir = tempfile::tempdir().unwrap();
    let runtime = support::start(dir.path()).await;
    let twins = runtime.twins().clone();
    let source = SourceId(1);
    // press-2: a steady vibration, then a jump the anomaly model raises an alarm on.
    let vibrating = press(2);
    for seq in 1..=40u64 {
        let value = 2.0 + (seq % 3) as f64 * 0.05;
        ingest_durable(&twins, &vibrating, "vibration", reading(value, source, seq)).await;
    }
    ingest_durable(&twins, &vibrating, "vibration", reading(9.0, source, 41)).await;
    // press-3: over temperature, so the trip governor stops it: a safety action.
    let hot = press(3);
    ingest_durable(&twins, &hot, "temperature", reading(99.0, source, 1)).await;
    let action = twins
        .audit(&hot, doppel::Timestamp(0), doppel::Timestamp::now(), 10)
        .unwrap()
        .into_iter()
        .find(|r| r.kind == doppel::kernel::AuditKind::SafetyAction)
        .expect("the trip stopped the press");

    let config = ApiConfig::new("127.0.0.1:0".parse().unwrap())
        .token("vera", VIEWER, Role::Viewer)
        .token("olga", OPERATOR, Role::Operator);
    let api = ApiServer::start(config, twins.clone()).await.unwrap();
    let channel = Endpoint::from_shared(api.url())
        .unwrap()
        .connect()
        .await
        .unwrap();
    let mut models = ModelServiceClient::new(channel.clone());
    let mut client = TwinServiceClient::new(channel);

    // A false alarm, with the model that raised it and its version.
    let record = models
        .annotate(authed(
            OPERATOR,
            annotate(
                vibrating.as_str(),
                Subject::AlarmCode("anomaly:vibration".into()),
                pb::AnnotationOutcome::FalseAlarm,
                "sensor knocked during maintenance",
            ),
        ))
        .await
        .unwrap()
        .into_inner()
        .record
        .unwrap();
    assert_eq!(record.kind, pb::AuditKind::Annotation as i32);
    assert!(record.seq > 0);
    assert_eq!(record.origin.as_ref().unwrap().principal, "olga");
    let concerned: Vec<&str> = record.models.iter().map(|m| m.name.as_str()).collect();
    assert_eq!(concerned, ["ewma_anomaly"], "{record:?}");
    assert!(!record.models[0].version.is_empty());
    let annotation = record.annotation.unwrap();
    assert_eq!(annotation.outcome, pb::AnnotationOutcome::FalseAlarm as i32);
    assert_eq!(annotation.note, "sensor knocked during maintenance");

    // A safety action confirmed: the label carries the action's command id.
    let confirmed = models
        .annotate(authed(
            OPERATOR,
            annotate(
                hot.as_str(),
                Subject::SafetyActionSeq(action.seq),
                pb::AnnotationOutcome::Confirmed,
                "",
            ),
        ))
        .await
        .unwrap()
        .into_inner()
        .record
        .unwrap();
    assert_eq!(confirmed.command_id, action.command_id.0);

    // A recommendation that worked, with its parameters.
    let rpm = pb::NamedValue {
        name: "rpm".into(),
        value: Some(doppel_api::convert::value_to_proto(doppel::Value::Float(
            2100.0,
        ))),
    };
    let recommendation = Subject::Recommendation(pb::RecommendedCommand {
        command: "set_speed".into(),
        params: vec![rpm.clone()],
    });
    let worked = models
        .annotate(authed(
            OPERATOR,
            annotate(
                hot.as_str(),
                recommendation.clone(),
                pb::AnnotationOutcome::Comment,
                "cooled within the shift at 2100 rpm",
            ),
        ))
        .await
        .unwrap()
        .into_inner()
        .record
        .unwrap();
    assert_eq!(worked.requested, [rpm]);
    assert!(
        worked.models.iter().any(|m| m.name == "thermal"),
        "{worked:?}"
    );

    // Refusals: clear, typed, and nothing recorded.
    let refused = [
        (
            VIEWER,
            annotate(
                hot.as_str(),
                recommendation.clone(),
                pb::AnnotationOutcome::Confirmed,
                "",
            ),
            Code::PermissionDenied,
        ),
        (
            OPERATOR,
            annotate(
                hot.as_str(),
                Subject::AlarmCode("no-such-alarm".into()),
                pb::AnnotationOutcome::Confirmed,
                "",
            ),
            Code::NotFound,
        ),
        (
            OPERATOR,
            // press-2's alarm record is not press-3's safety action.
            annotate(
                vibrating.as_str(),
                Subject::SafetyActionSeq(action.seq),
                pb::AnnotationOutcome::Confirmed,
                "",
            ),
            Code::NotFound,
        ),
        (
            OPERATOR,
            annotate(
                hot.as_str(),
                recommendation.clone(),
                pb::AnnotationOutcome::Comment,
                " ",
            ),
            Code::InvalidArgument,
        ),
        (
            OPERATOR,
            annotate(
                hot.as_str(),
                Subject::Recommendation(pb::RecommendedCommand {
                    command: "launch".into(),
                    params: Vec::new(),
                }),
                pb::AnnotationOutcome::Confirmed,
                "",
            ),
            Code::NotFound,
        ),
        (
            OPERATOR,
            annotate(
                hot.as_str(),
                recommendation.clone(),
                pb::AnnotationOutcome::Unspecified,
                "",
            ),
            Code::InvalidArgument,
        ),
        (
            OPERATOR,
            // A speed the command does not take.
            annotate(
                hot.as_str(),
                Subject::Recommendation(pb::RecommendedCommand {
                    command: "set_speed".into(),
                    params: vec![pb::NamedValue {
                        name: "rpm".into(),
                        value: Some(doppel_api::convert::value_to_proto(doppel::Value::Float(
                            1e9,
                        ))),
                    }],
                }),
                pb::AnnotationOutcome::Confirmed,
                "",
            ),
            Code::InvalidArgument,
        ),
        (
            OPERATOR,
            annotate(
                "acme/nowhere/x/y",
                recommendation,
                pb::AnnotationOutcome::Confirmed,
                "",
            ),
            Code::NotFound,
        ),
    ];
    for (token, request, code) in refused {
        let error = models.annotate(authed(token, request)).await.unwrap_err();
        assert_eq!(error.code(), code, "{error:?}");
    }

    // Listed apart from the rest of the audit trail, in the order made.
    let listed = client
        .list_audit(authed(
            VIEWER,
            pb::ListAuditRequest {
                kinds: vec![pb::AuditKind::Annotation as i32],
                page_size: 2,
                ..Default::default()
            },
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(listed.records.len(), 2);
    assert!(!listed.next_page_token.is_empty());
    let rest = client
        .list_audit(authed(
            VIEWER,
            pb::ListAuditRequest {
                kinds: vec![pb::AuditKind::Annotation as i32],
                page_size: 2,
                page_token: listed.next_page_token,
                ..Default::default()
            },
        ))
        .await
        .unwrap()
        .into_inner();
    let seqs: Vec<u64> = listed
        .records
        .iter()
        .chain(&rest.records)
        .map(|r| r.seq)
        .collect();
    assert_eq!(seqs, [record.seq, confirmed.seq, worked.seq]);
    assert!(rest.next_page_token.is_empty());

    // Exported as labels, one JSON object per line.
    let output = Process::new(env!("CARGO_BIN_EXE_doppel"))
        .args(["model", "--addr", &api.url(), "--json", "annotations"])
        .env("DOPPEL_TOKEN", VIEWER)
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let labels: Vec<serde_json::Value> = String::from_utf8(output.stdout)
        .unwrap()
        .lines()
        .map(|line| serde_json::from_str(line).unwrap())
        .collect();
    assert_eq!(labels.len(), 3, "{labels:#?}");
    assert_eq!(labels[0]["subject"], "alarm");
    assert_eq!(labels[0]["ref"], "anomaly:vibration");
    assert_eq!(labels[0]["outcome"], "false_alarm");
    assert_eq!(labels[0]["by"], "olga");
    assert_eq!(labels[0]["models"][0]["name"], "ewma_anomaly");
    assert_eq!(labels[1]["subject"], "safety_action");
    assert_eq!(labels[1]["ref"], action.seq);
    assert_eq!(labels[2]["recommendation"]["command"], "set_speed");
    assert_eq!(labels[2]["note"], "cooled within the shift at 2100 rpm");

    api.stop().await;
    runtime.shutdown().await;
}
