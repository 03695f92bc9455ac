//! OpenTelemetry across hops: a real OTLP receiver (the collector's TraceService and
//! MetricsService over tonic) receives the trace of a command sent by a client with W3C
//! trace context, covering client → SendCommand → twin command → governors → audit.

use std::net::SocketAddr;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use doppel_proto::v1::twin_service_client::TwinServiceClient;
use doppel_proto::v1::{NamedValue, SendCommandRequest, Value, value};
use opentelemetry_proto::tonic::collector::metrics::v1::metrics_service_server::{
    MetricsService, MetricsServiceServer,
};
use opentelemetry_proto::tonic::collector::metrics::v1::{
    ExportMetricsServiceRequest, ExportMetricsServiceResponse,
};
use opentelemetry_proto::tonic::collector::trace::v1::trace_service_server::{
    TraceService, TraceServiceServer,
};
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use opentelemetry_proto::tonic::trace::v1::Span;
use parking_lot::Mutex;

use crate::brokers::free_port;

/// What the receiver got.
#[derive(Default)]
struct Received {
    spans: Vec<Span>,
    metrics: Vec<String>,
}

#[derive(Clone, Default)]
struct Receiver(Arc<Mutex<Received>>);

#[tonic::async_trait]
impl TraceService for Receiver {
    async fn export(
        &self,
        request: tonic::Request<ExportTraceServiceRequest>,
    ) -> Result<tonic::Response<ExportTraceServiceResponse>, tonic::Status> {
        let mut received = self.0.lock();
        for resource in request.into_inner().resource_spans {
            for scope in resource.scope_spans {
                received.spans.extend(scope.spans);
            }
        }
        Ok(tonic::Response::new(ExportTraceServiceResponse::default()))
    }
}

#[tonic::async_trait]
impl MetricsService for Receiver {
    async fn export(
        &self,
        request: tonic::Request<ExportMetricsServiceRequest>,
    ) -> Result<tonic::Response<ExportMetricsServiceResponse>, tonic::Status> {
        let mut received = self.0.lock();
        for resource in request.into_inner().resource_metrics {
            for scope in resource.scope_metrics {
                received
                    .metrics
                    .extend(scope.metrics.into_iter().map(|m| m.name));
            }
        }
        Ok(tonic::Response::new(ExportMetricsServiceResponse::default()))
    }
}

fn attribute(span: &Span, key: &str) -> Option<String> {
    span.attributes.iter().find(|a| a.key == key).and_then(|a| {
        use opentelemetry_proto::tonic::common::v1::any_value::Value as Any;
        match a.value.as_ref()?.value.as_ref()? {
            Any::StringValue(s) => Some(s.clone()),
            Any::IntValue(i) => Some(i.to_string()),
            other => Some(format!("{other:?}")),
        }
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_command_trace_reaches_an_otlp_receiver_across_hops() {
    let receiver = Receiver::default();
    let collector_addr = SocketAddr::from(([127, 0, 0, 1], free_port()));
    let serving = receiver.clone();
    let collector = tokio::spawn(async move {
        tonic::transport::Server::builder()
            .add_service(TraceServiceServer::new(serving.clone()))
            .add_service(MetricsServiceServer::new(serving))
            .serve(collector_addr)
            .await
    });

    let dir = tempfile::tempdir().unwrap();
    let grpc = SocketAddr::from(([127, 0, 0, 1], free_port()));
    let mut node = Command::new(env!("CARGO_BIN_EXE_doppel"))
        .args(["dev", "--mqtt-port", "0", "--duration", "60", "--grpc"])
        .arg(grpc.to_string())
        .arg("--otlp-endpoint")
        .arg(format!("http://{collector_addr}"))
        .arg("--data-dir")
        .arg(dir.path())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    let token = loop {
        if let Ok(token) = std::fs::read_to_string(dir.path().join("dev-token"))
            && std::net::TcpStream::connect(grpc).is_ok()
        {
            break token.trim().to_string();
        }
        assert!(Instant::now() < deadline, "the node did not come up");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };

    // The client's own span: a W3C traceparent with a trace id of our choosing.
    let trace_id = "4bf92f3577b34da6a3ce929d0e0e4736";
    let client_span = "00f067aa0ba902b7";
    let mut client = TwinServiceClient::connect(format!("http://{grpc}"))
        .await
        .unwrap();
    let mut request = tonic::Request::new(SendCommandRequest {
        asset_path: "acme/plant-a/line-1/press-1".into(),
        command: "set_speed".into(),
        params: vec![NamedValue {
            name: "rpm".into(),
            value: Some(Value {
                kind: Some(value::Kind::FloatValue(1100.0)),
            }),
        }],
        ..Default::default()
    });
    request
        .metadata_mut()
        .insert("authorization", format!("Bearer {token}").parse().unwrap());
    request.metadata_mut().insert(
        "traceparent",
        format!("00-{trace_id}-{client_span}-01").parse().unwrap(),
    );
    let response = client.send_command(request).await.unwrap().into_inner();
    assert!(response.verdict.is_some());

    let wanted = hex_id(trace_id);
    let deadline = Instant::now() + Duration::from_secs(30);
    let spans = loop {
        let spans: Vec<Span> = receiver
            .0
            .lock()
            .spans
            .iter()
            .filter(|s| s.trace_id == wanted)
            .cloned()
            .collect();
        let names: Vec<&str> = spans.iter().map(|s| s.name.as_str()).collect();
        if ["command", "governor", "audit"]
            .iter()
            .all(|n| names.contains(n))
            && spans
                .iter()
                .any(|s| s.parent_span_id == hex_id(client_span))
        {
            break spans;
        }
        assert!(
            Instant::now() < deadline,
            "the trace did not arrive complete; spans of the trace: {names:?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let by_id = |id: &[u8]| spans.iter().find(|s| s.span_id == id);
    // The server's RPC span is the child of the client's span …
    let rpc = spans
        .iter()
        .find(|s| s.parent_span_id == hex_id(client_span))
        .unwrap();
    assert!(
        rpc.name.contains("SendCommand")
            || attribute(rpc, "rpc.method").as_deref() == Some("SendCommand"),
        "{}",
        rpc.name
    );
    // … the twin's command span descends from it across the mailbox …
    let command = spans.iter().find(|s| s.name == "command").unwrap();
    let mut ancestor = by_id(&command.parent_span_id);
    let mut reached_rpc = false;
    while let Some(span) = ancestor {
        if span.span_id == rpc.span_id {
            reached_rpc = true;
            break;
        }
        ancestor = by_id(&span.parent_span_id);
    }
    assert!(
        reached_rpc,
        "the command span does not descend from the RPC span"
    );
    assert_eq!(
        attribute(command, "asset").as_deref(),
        Some("acme/plant-a/line-1/press-1")
    );
    // … and the governors and the audit commit are its children.
    for name in ["governor", "audit"] {
        let child = spans.iter().find(|s| s.name == name).unwrap();
        assert_eq!(child.parent_span_id, command.span_id, "{name}");
    }

    let deadline = Instant::now() + Duration::from_secs(30);
    while !receiver
        .0
        .lock()
        .metrics
        .iter()
        .any(|m| m == "doppel.commands")
    {
        assert!(Instant::now() < deadline, "no metrics arrived");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let _ = node.kill();
    let _ = node.wait();
    collector.abort();
}

fn hex_id(hex: &str) -> Vec<u8> {
    (0..hex.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&hex[i..i + 2], 16).unwrap())
        .collect()
}
