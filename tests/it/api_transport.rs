//! The API at the transport level: TLS with a self-signed certificate, raw bytes that
//! no well-behaved client would send (invalid UTF-8, garbage, unknown fields), and the
//! tracing span of every call.

use std::collections::HashMap;
use std::time::Duration;

use doppel_actors::Runtime;
use doppel_api::{ApiConfig, ApiError, ApiHandle, ApiServer, Role};
use doppel_proto::v1 as pb;
use doppel_proto::v1::twin_service_client::TwinServiceClient;
use doppel_runtime::{Topology, TwinTypes};
use doppel_testkit::twin_types;
use prost::bytes::{Buf, BufMut};
use tonic::codec::{Codec, DecodeBuf, Decoder, EncodeBuf, Encoder};
use tonic::codegen::http::uri::PathAndQuery;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint};
use tonic::{Code, Request, Status};

const TOKEN: &str = "transport-test-token-0123";

async fn runtime(dir: &std::path::Path) -> Runtime {
    let types = TwinTypes::from_toml(&twin_types::press(), "types.toml").unwrap();
    let topology = Topology::from_toml(twin_types::PLANT, "plant.toml", &types).unwrap();
    Runtime::builder()
        .twin_types(types)
        .topology(topology)
        .data_dir(dir)
        .start()
        .await
        .unwrap()
}

fn config() -> ApiConfig {
    ApiConfig::new("127.0.0.1:0".parse().unwrap()).token("ops", TOKEN, Role::Operator)
}

fn authed<T>(message: T) -> Request<T> {
    let mut request = Request::new(message);
    request
        .metadata_mut()
        .insert("authorization", format!("Bearer {TOKEN}").parse().unwrap());
    request
}

fn get_press() -> pb::GetTwinRequest {
    pb::GetTwinRequest {
        asset_path: "acme/plant-a/line-1/press-1".into(),
    }
}

async fn within<T>(future: impl std::future::Future<Output = T>) -> T {
    tokio::time::timeout(Duration::from_secs(15), future)
        .await
        .expect("answered in time")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serves_over_tls_with_a_self_signed_certificate() {
    let dir = tempfile::tempdir().unwrap();
    let runtime = runtime(&dir.path().join("data")).await;
    let certified = doppel_testkit::tls::self_signed(&["localhost"]);
    let cert_pem = certified.certificate_pem.clone();
    let (cert, key) = certified.write(dir.path(), "api");

    let api = ApiServer::start(config().tls(&cert, &key), runtime.twins().clone())
        .await
        .unwrap();
    assert!(api.is_tls());
    assert!(api.url().starts_with("https://127.0.0.1:"), "{}", api.url());
    let tls = ClientTlsConfig::new()
        .ca_certificate(Certificate::from_pem(&cert_pem))
        .domain_name("localhost");
    let channel = within(
        Endpoint::from_shared(api.url())
            .unwrap()
            .tls_config(tls)
            .unwrap()
            .connect(),
    )
    .await
    .unwrap();
    let mut client = TwinServiceClient::new(channel);
    let twin = within(client.get_twin(authed(get_press())))
        .await
        .unwrap()
        .into_inner()
        .twin
        .unwrap();
    assert_eq!(twin.asset_path, "acme/plant-a/line-1/press-1");
    let refused = within(client.get_twin(Request::new(get_press())))
        .await
        .unwrap_err();
    assert_eq!(refused.code(), Code::Unauthenticated);

    // A client that does not trust the certificate, or speaks plain HTTP/2, gets nowhere.
    let untrusting = Endpoint::from_shared(api.url())
        .unwrap()
        .tls_config(ClientTlsConfig::new().domain_name("localhost"))
        .unwrap()
        .connect_timeout(Duration::from_secs(5))
        .connect()
        .await;
    if let Ok(channel) = untrusting {
        let mut client = TwinServiceClient::new(channel);
        assert!(within(client.get_twin(authed(get_press()))).await.is_err());
    }
    let plain = format!("http://{}", api.addr());
    if let Ok(channel) = Endpoint::from_shared(plain)
        .unwrap()
        .connect_timeout(Duration::from_secs(5))
        .connect()
        .await
    {
        let mut client = TwinServiceClient::new(channel);
        assert!(within(client.get_twin(authed(get_press()))).await.is_err());
    }
    within(api.stop()).await;

    // Missing or unreadable certificates are refused at start, naming the file.
    let missing = ApiServer::start(
        config().tls(dir.path().join("nope.pem"), &key),
        runtime.twins().clone(),
    )
    .await
    .err()
    .unwrap();
    assert!(matches!(missing, ApiError::ReadFile { .. }), "{missing}");
    assert!(missing.to_string().contains("nope.pem"), "{missing}");
    std::fs::write(dir.path().join("junk.pem"), "not a certificate").unwrap();
    let junk = ApiServer::start(
        config().tls(dir.path().join("junk.pem"), &key),
        runtime.twins().clone(),
    )
    .await;
    assert!(junk.is_err());
    runtime.shutdown().await;
}

/// Sends and receives message bodies as raw bytes.
#[derive(Debug, Clone, Default)]
struct Raw;

impl Codec for Raw {
    type Encode = Vec<u8>;
    type Decode = Vec<u8>;
    type Encoder = Raw;
    type Decoder = Raw;

    fn encoder(&mut self) -> Self::Encoder {
        Raw
    }

    fn decoder(&mut self) -> Self::Decoder {
        Raw
    }
}

impl Encoder for Raw {
    type Item = Vec<u8>;
    type Error = Status;

    fn encode(&mut self, item: Vec<u8>, dst: &mut EncodeBuf<'_>) -> Result<(), Status> {
        dst.put_slice(&item);
        Ok(())
    }
}

impl Decoder for Raw {
    type Item = Vec<u8>;
    type Error = Status;

    fn decode(&mut self, src: &mut DecodeBuf<'_>) -> Result<Option<Vec<u8>>, Status> {
        let mut bytes = vec![0; src.remaining()];
        src.copy_to_slice(&mut bytes);
        Ok(Some(bytes))
    }
}

async fn raw_call(
    channel: &Channel,
    method: &'static str,
    body: Vec<u8>,
) -> Result<Vec<u8>, Status> {
    let mut grpc = tonic::client::Grpc::new(channel.clone());
    grpc.ready()
        .await
        .map_err(|error| Status::unavailable(error.to_string()))?;
    let path = PathAndQuery::from_static(method);
    within(grpc.unary(authed(body), path, Raw))
        .await
        .map(|response| response.into_inner())
}

/// A length-delimited protobuf field.
fn field(number: u8, bytes: &[u8]) -> Vec<u8> {
    let mut out = vec![(number << 3) | 2];
    let mut length = bytes.len();
    loop {
        let byte = (length & 0x7f) as u8;
        length >>= 7;
        if length == 0 {
            out.push(byte);
            break;
        }
        out.push(byte | 0x80);
    }
    out.extend_from_slice(bytes);
    out
}

async fn serve_plain(dir: &std::path::Path) -> (Runtime, ApiHandle, Channel) {
    let runtime = runtime(dir).await;
    let api = ApiServer::start(config(), runtime.twins().clone())
        .await
        .unwrap();
    let channel = Endpoint::from_shared(api.url())
        .unwrap()
        .connect()
        .await
        .unwrap();
    (runtime, api, channel)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn raw_malformed_messages_are_refused_and_the_node_keeps_serving() {
    let dir = tempfile::tempdir().unwrap();
    let (runtime, api, channel) = serve_plain(dir.path()).await;
    const GET: &str = "/doppel.v1.TwinService/GetTwin";
    const SEND: &str = "/doppel.v1.TwinService/SendCommand";
    const LIST: &str = "/doppel.v1.TwinService/ListTwins";

    // The raw codec itself works: a well-formed request answers.
    let valid = field(1, b"acme/plant-a/line-1/press-1");
    let answer = raw_call(&channel, GET, valid).await.unwrap();
    let decoded: pb::GetTwinResponse = prost::Message::decode(answer.as_slice()).unwrap();
    assert_eq!(decoded.twin.unwrap().twin_type, "press");

    // Invalid UTF-8 in the asset path: refused by the decoder, never reaches a twin.
    for path in [
        &b"acme/plant-a/\xff\xfe/press-1"[..],
        b"\xc3\x28",
        b"acme/\xed\xa0\x80",
    ] {
        let status = raw_call(&channel, GET, field(1, path)).await.unwrap_err();
        assert!(
            matches!(status.code(), Code::InvalidArgument | Code::Internal),
            "{status:?}"
        );
    }
    let mut command = field(1, b"acme/plant-a/line-1/press-1");
    command.extend(field(2, b"set_\xffspeed"));
    let status = raw_call(&channel, SEND, command).await.unwrap_err();
    assert!(
        matches!(status.code(), Code::InvalidArgument | Code::Internal),
        "{status:?}"
    );

    // Bytes that are not protobuf at all, and a length running past the end.
    for garbage in [
        vec![0xff; 64],
        vec![0x0a, 0xff, 0xff, 0xff, 0xff, 0x0f, b'a'],
        vec![0x0a],
    ] {
        let status = raw_call(&channel, GET, garbage).await.unwrap_err();
        assert_ne!(status.code(), Code::Ok);
    }

    // Unknown fields are skipped; a value of an unknown kind arrives empty and is
    // refused by name; an out-of-range wire value for page_size is a negative size.
    let mut unknown_fields = field(1, b"acme/plant-a/line-1/press-1");
    unknown_fields.extend(field(15, b"from the future"));
    raw_call(&channel, GET, unknown_fields).await.unwrap();
    let value_of_unknown_kind = [9 << 3, 5];
    let mut param = field(1, b"rpm");
    param.extend(field(2, &value_of_unknown_kind));
    let mut command = field(1, b"acme/plant-a/line-1/press-1");
    command.extend(field(2, b"set_speed"));
    command.extend(field(3, &param));
    let status = raw_call(&channel, SEND, command).await.unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument, "{status:?}");
    assert!(
        status.message().starts_with("params[0].value: "),
        "{status:?}"
    );
    let mut list = vec![3 << 3];
    list.extend([0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01]);
    let status = raw_call(&channel, LIST, list).await.unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument, "{status:?}");
    assert!(status.message().starts_with("page_size: "), "{status:?}");

    // An unknown method is UNIMPLEMENTED, and the node still answers.
    let status = raw_call(&channel, "/doppel.v1.TwinService/Explode", Vec::new())
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::Unimplemented);
    let mut client = TwinServiceClient::new(channel);
    let twin = within(client.get_twin(authed(get_press())))
        .await
        .unwrap()
        .into_inner()
        .twin
        .unwrap();
    assert_eq!(twin.version, 0, "nothing malformed changed the twin");
    within(api.stop()).await;
    runtime.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_taken_port_is_a_bind_error() {
    let dir = tempfile::tempdir().unwrap();
    let (runtime, api, _channel) = serve_plain(dir.path()).await;
    let mut taken = config();
    taken.listen = api.addr();
    let error = ApiServer::start(taken, runtime.twins().clone())
        .await
        .err()
        .unwrap();
    assert!(matches!(error, ApiError::Bind { .. }), "{error}");
    within(api.stop()).await;
    runtime.shutdown().await;
}

/// Records the fields of every `rpc` span, as they are set.
#[derive(Clone, Default)]
struct RpcSpans(std::sync::Arc<std::sync::Mutex<HashMap<u64, HashMap<String, String>>>>);

struct Fields<'a>(&'a mut HashMap<String, String>);

impl tracing::field::Visit for Fields<'_> {
    fn record_debug(&mut self, field: &tracing::field::Field, value: &dyn std::fmt::Debug) {
        self.0.insert(
            field.name().to_string(),
            format!("{value:?}").trim_matches('"').to_string(),
        );
    }
}

impl<S: tracing::Subscriber> tracing_subscriber::Layer<S> for RpcSpans {
    fn on_new_span(
        &self,
        attrs: &tracing::span::Attributes<'_>,
        id: &tracing::span::Id,
        _ctx: tracing_subscriber::layer::Context<'_, S>,
    ) {
        if attrs.metadata().name() == "rpc" {
            let mut fields = HashMap::new();
            attrs.record(&mut Fields(&mut fields));
            self.0.lock().unwrap().insert(id.into_u64(), fields);
        }
    }

    fn on_record(
        &self,
        id: &tracing::span::Id,
        values: &tracing::span::Record<'_>,
        _ctx: tracing_subscriber::layer::Context<'_, S>,
    ) {
        if let Some(fields) = self.0.lock().unwrap().get_mut(&id.into_u64()) {
            values.record(&mut Fields(fields));
        }
    }
}

/// The spans of every call, observed in a process of its own (this test binary, running
/// only [`spans_in_a_process_of_its_own`]): tracing caches per call site whether
/// anyone listens, and other tests starting and dropping their own subscribers on
/// other threads can make a scoped subscriber miss spans.
#[test]
fn every_call_runs_in_a_span_with_method_asset_and_command_id() {
    let child = std::process::Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "api_transport::spans_in_a_process_of_its_own",
            "--ignored",
            "--test-threads=1",
        ])
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let output = doppel_testkit::process::wait_for_exit(child, Duration::from_secs(300));
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success() && stdout.contains("1 passed"),
        "the span test failed or did not run in its own process ({}):\n{stdout}\n{stderr}",
        output.status
    );
}

/// The span test itself, started by
/// [`every_call_runs_in_a_span_with_method_asset_and_command_id`].
#[tokio::test(flavor = "current_thread")]
#[ignore = "run in a process of its own by every_call_runs_in_a_span_with_method_asset_and_command_id"]
async fn spans_in_a_process_of_its_own() {
    use tracing_subscriber::layer::SubscriberExt;

    let spans = RpcSpans::default();
    // Server and client tasks all run on this test's one thread, so a thread-local
    // subscriber sees every span.
    let _subscriber =
        tracing::subscriber::set_default(tracing_subscriber::registry().with(spans.clone()));
    let dir = tempfile::tempdir().unwrap();
    let (runtime, api, channel) = serve_plain(dir.path()).await;
    let mut client = TwinServiceClient::new(channel);
    within(client.get_twin(authed(get_press()))).await.unwrap();
    let mut command = pb::SendCommandRequest {
        asset_path: "acme/plant-a/line-1/press-1".into(),
        command: "set_speed".into(),
        params: vec![doppel_api::convert::named_value(
            "rpm",
            doppel_runtime::Value::Float(1000.0),
        )],
        ..Default::default()
    };
    command.idempotency_key = "traced-1".into();
    within(client.send_command(authed(command))).await.unwrap();
    let missing = pb::GetTwinRequest {
        asset_path: "acme/nowhere".into(),
    };
    within(client.get_twin(authed(missing))).await.unwrap_err();
    within(api.stop()).await;
    runtime.shutdown().await;

    let recorded: Vec<HashMap<String, String>> =
        spans.0.lock().unwrap().values().cloned().collect();
    let find = |method: &str, asset: &str| {
        recorded
            .iter()
            .find(|f| {
                f.get("rpc.method").map(String::as_str) == Some(method)
                    && f.get("asset").map(String::as_str) == Some(asset)
            })
            .unwrap_or_else(|| panic!("no {method} span for {asset}: {recorded:?}"))
            .clone()
    };
    let get = find("GetTwin", "acme/plant-a/line-1/press-1");
    assert_eq!(get["rpc.service"], "doppel.v1.TwinService");
    assert_eq!(get["grpc.code"], "0");
    let send = find("SendCommand", "acme/plant-a/line-1/press-1");
    assert_eq!(send["command_id"], "traced-1");
    assert_eq!(send["otel.name"], "doppel.v1.TwinService/SendCommand");
    let refused = find("GetTwin", "acme/nowhere");
    assert_eq!(refused["grpc.code"], (Code::NotFound as i32).to_string());
}
