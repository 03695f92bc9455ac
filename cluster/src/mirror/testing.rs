//! Test fixtures for replication: a cloud node serving a mirror store over gRPC on a
//! loopback port, and an edge runtime that replicates.

use std::net::SocketAddr;
use std::path::Path;
use std::pin::Pin;
use std::time::{Duration, Instant};

use doppel_actors::Runtime;
use doppel_proto::v1 as proto;
use doppel_proto::v1::node_service_server::{NodeService, NodeServiceServer};
use doppel_runtime::{
    AssetPath, Quality, Reading, RuntimeSettings, SourceId, Timestamp, Topology, TwinTypes,
};
use doppel_testkit::twin_types;
use futures_util::stream::{Stream, StreamExt};
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio_stream::wrappers::TcpListenerStream;
use tonic::{Request, Response, Status};

use super::MirrorStore;
use crate::transport::Transport;

/// The cluster id every test node shares.
pub(crate) const CLUSTER: &str = "test-cluster";
/// The edge node's id.
pub(crate) const EDGE: &str = "edge-a";
/// The cloud node's id.
pub(crate) const CLOUD: &str = "cloud-1";

/// The asset path of press `n` of the test plant.
pub(crate) fn press(n: u32) -> AssetPath {
    AssetPath::parse(&twin_types::press_path(n)).unwrap()
}

/// A reading taken now.
pub(crate) fn reading(value: f64, seq: u64) -> Reading {
    Reading {
        value,
        source_time: Timestamp::now(),
        quality: Quality::Good,
        source: SourceId(1),
        epoch: 0,
        seq,
        stamped: true,
    }
}

/// Starts an edge runtime that replicates, on `dir`.
pub(crate) async fn start_edge(dir: &Path) -> Runtime {
    let types = TwinTypes::from_toml(&twin_types::press(), "test/types.toml").unwrap();
    let topology = Topology::from_toml(twin_types::PLANT, "test/plant.toml", &types).unwrap();
    let mut settings = RuntimeSettings {
        replicate: true,
        ..Default::default()
    };
    settings.journal.batch_interval_ms = 2;
    // No actuator serves this edge: a safety action's delivery must not fail (a change
    // of its own, replicated) in the middle of a test that counts updates.
    settings.delivery.safety_bound_ms = 3_600_000;
    Runtime::builder()
        .twin_types(types)
        .topology(topology)
        .data_dir(dir)
        .settings(settings)
        .start()
        .await
        .unwrap()
}

/// A cloud node: a mirror store behind a NodeService that only replicates, on a
/// loopback port.
pub(crate) struct TestCloud {
    pub(crate) store: MirrorStore,
    pub(crate) addr: SocketAddr,
    kill: watch::Sender<bool>,
    server: JoinHandle<()>,
}

impl TestCloud {
    /// Opens the mirror file at `path` and serves it on `addr` (port 0: any). Retries
    /// while a stopped cloud still holds the file or the port.
    pub(crate) async fn start(path: &Path, addr: SocketAddr) -> TestCloud {
        let deadline = Instant::now() + Duration::from_secs(10);
        let store = loop {
            match MirrorStore::open(path) {
                Ok(store) => break store,
                Err(error) => {
                    assert!(
                        Instant::now() < deadline,
                        "cannot open the mirror store: {error}"
                    );
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
            }
        };
        let listener = loop {
            match tokio::net::TcpListener::bind(addr).await {
                Ok(listener) => break listener,
                Err(error) => {
                    assert!(Instant::now() < deadline, "cannot bind {addr}: {error}");
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
            }
        };
        let addr = listener.local_addr().unwrap();
        let (kill, killed) = watch::channel(false);
        let node = TestNode {
            store: store.clone(),
            transport: Transport::plaintext(CLUSTER, CLOUD),
            kill: killed.clone(),
        };
        let transport = Transport::plaintext(CLUSTER, CLOUD);
        let mut shutdown = killed;
        let server = tokio::spawn(async move {
            let service = NodeServiceServer::new(node)
                .max_decoding_message_size(64 << 20)
                .max_encoding_message_size(64 << 20);
            let _ = transport
                .server()
                .unwrap()
                .add_service(service)
                .serve_with_incoming_shutdown(TcpListenerStream::new(listener), async move {
                    let _ = shutdown.wait_for(|killed| *killed).await;
                })
                .await;
        });
        TestCloud {
            store,
            addr,
            kill,
            server,
        }
    }

    /// Ends every stream, closes the port and lets go of the store.
    pub(crate) async fn stop(self) {
        let _ = self.kill.send(true);
        tokio::time::timeout(Duration::from_secs(10), self.server)
            .await
            .expect("the cloud server stops")
            .unwrap();
    }
}

#[derive(Clone)]
struct TestNode {
    store: MirrorStore,
    transport: Transport,
    kill: watch::Receiver<bool>,
}

type Responses = Pin<Box<dyn Stream<Item = Result<proto::ReplicateResponse, Status>> + Send>>;

fn not_here<T>() -> Result<Response<T>, Status> {
    Err(Status::unimplemented("this test node only replicates"))
}

#[tonic::async_trait]
impl NodeService for TestNode {
    async fn hello(
        &self,
        _request: Request<proto::HelloRequest>,
    ) -> Result<Response<proto::HelloResponse>, Status> {
        not_here()
    }

    async fn forward_get_twin(
        &self,
        _request: Request<proto::ForwardGetTwinRequest>,
    ) -> Result<Response<proto::ForwardGetTwinResponse>, Status> {
        not_here()
    }

    async fn forward_send_command(
        &self,
        _request: Request<proto::ForwardSendCommandRequest>,
    ) -> Result<Response<proto::ForwardSendCommandResponse>, Status> {
        not_here()
    }

    async fn forward_simulate(
        &self,
        _request: Request<proto::ForwardSimulateRequest>,
    ) -> Result<Response<proto::ForwardSimulateResponse>, Status> {
        not_here()
    }

    async fn forward_recommend(
        &self,
        _request: Request<proto::ForwardRecommendRequest>,
    ) -> Result<Response<proto::ForwardRecommendResponse>, Status> {
        not_here()
    }

    async fn forward_get_history(
        &self,
        _request: Request<proto::ForwardGetHistoryRequest>,
    ) -> Result<Response<proto::ForwardGetHistoryResponse>, Status> {
        not_here()
    }

    async fn forward_list_audit(
        &self,
        _request: Request<proto::ForwardListAuditRequest>,
    ) -> Result<Response<proto::ForwardListAuditResponse>, Status> {
        not_here()
    }

    async fn forward_list_twins(
        &self,
        _request: Request<proto::ForwardListTwinsRequest>,
    ) -> Result<Response<proto::ForwardListTwinsResponse>, Status> {
        not_here()
    }

    async fn forward_list_alarms(
        &self,
        _request: Request<proto::ForwardListAlarmsRequest>,
    ) -> Result<Response<proto::ForwardListAlarmsResponse>, Status> {
        not_here()
    }

    async fn forward_alarm_response(
        &self,
        _request: Request<proto::ForwardAlarmResponseRequest>,
    ) -> Result<Response<proto::ForwardAlarmResponseResponse>, Status> {
        not_here()
    }

    async fn forward_model(
        &self,
        _request: Request<proto::ForwardModelRequest>,
    ) -> Result<Response<proto::ForwardModelResponse>, Status> {
        not_here()
    }

    type ForwardWatchTwinsStream =
        Pin<Box<dyn Stream<Item = Result<proto::ForwardWatchTwinsResponse, Status>> + Send>>;

    async fn forward_watch_twins(
        &self,
        _request: Request<proto::ForwardWatchTwinsRequest>,
    ) -> Result<Response<Self::ForwardWatchTwinsStream>, Status> {
        not_here()
    }

    type ReplicateStream = Responses;

    async fn replicate(
        &self,
        request: Request<tonic::Streaming<proto::ReplicateRequest>>,
    ) -> Result<Response<Self::ReplicateStream>, Status> {
        let caller = self.transport.check(&request)?;
        let responses = self.store.serve_replication(caller, request.into_inner());
        let mut kill = self.kill.clone();
        let killed = async move {
            let _ = kill.wait_for(|killed| *killed).await;
        };
        Ok(Response::new(Box::pin(responses.take_until(killed))))
    }
}
