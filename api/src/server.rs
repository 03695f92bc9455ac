//! [`ApiServer`]: serves TwinService with health checking and reflection.

use std::net::SocketAddr;
use std::time::Duration;

use doppel_proto::v1::alarm_service_server::{AlarmService, AlarmServiceServer};
use doppel_proto::v1::model_service_server::{ModelService, ModelServiceServer};
use doppel_proto::v1::status_service_server::StatusServiceServer;
use doppel_proto::v1::twin_service_server::{TwinService, TwinServiceServer};
use doppel_runtime::twin::Twins;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tonic::codec::CompressionEncoding;
use tonic::codegen::http;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::server::TcpIncoming;
use tonic::transport::{Identity, Server, ServerTlsConfig};
use tonic_health::ServingStatus;
use tonic_health::server::HealthReporter;
use tower::util::MapResponseLayer;

use crate::alarms::ALARM_SERVICE_NAME;
use crate::auth::Authenticator;
use crate::config::ApiConfig;
use crate::error::ApiError;
use crate::models::MODEL_SERVICE_NAME;
use crate::service::TwinApi;
use crate::status::STATUS_SERVICE_NAME;

/// The name health checks use for the twin service.
pub const SERVICE_NAME: &str = "doppel.v1.TwinService";
/// Every public service, for health checks.
const SERVICES: [&str; 4] = [
    SERVICE_NAME,
    STATUS_SERVICE_NAME,
    ALARM_SERVICE_NAME,
    MODEL_SERVICE_NAME,
];
/// How long `stop` lets calls in progress finish before it closes connections.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(5);

/// Serves a node's twins over gRPC: `doppel.v1.TwinService` behind bearer tokens,
/// `grpc.health.v1.Health` and server reflection (v1) without.
///
/// ```no_run
/// # async fn serve(runtime: doppel_actors::Runtime) -> Result<(), Box<dyn std::error::Error>> {
/// use doppel_api::{ApiConfig, ApiServer, Role};
///
/// let config = ApiConfig::new("127.0.0.1:50051".parse()?)
///     .token("ann", "a-long-random-secret-token", Role::Operator);
/// let api = ApiServer::start(config, runtime.twins().clone()).await?;
/// println!("serving on {}", api.addr());
/// // …
/// api.stop().await;
/// # Ok(()) }
/// ```
pub struct ApiServer;

/// A running API server. Dropping it leaves the server running until the process
/// ends; [`ApiHandle::stop`] stops it.
pub struct ApiHandle {
    addr: SocketAddr,
    tls: bool,
    api: TwinApi,
    health: HealthReporter,
    http: Option<crate::http::HttpServing>,
    shutdown: Option<oneshot::Sender<()>>,
    task: JoinHandle<()>,
}

impl ApiServer {
    /// Checks `config`, binds its address (port 0 picks a free port) and serves until
    /// [`ApiHandle::stop`]. TLS certificate paths are used as given.
    pub async fn start(config: ApiConfig, twins: Twins) -> Result<ApiHandle, ApiError> {
        let api = TwinApi::new(twins, config.limits.clone());
        Self::serve(config, api.clone(), api).await
    }

    /// Like [`ApiServer::start`], but serves `service` as `doppel.v1.TwinService` and
    /// `doppel.v1.AlarmService` and `doppel.v1.ModelService` behind the same tokens, health checking and
    /// reflection: a cluster node serves a router that answers through its local `api`
    /// or forwards to the owning node. `api` is the node's own service, whose watches
    /// [`ApiHandle::stop`] ends and which answers `doppel.v1.StatusService`.
    pub async fn serve<S>(
        config: ApiConfig,
        api: TwinApi,
        service: S,
    ) -> Result<ApiHandle, ApiError>
    where
        S: TwinService + AlarmService + ModelService,
    {
        Self::bind(config).await?.serve(api, service).await
    }

    /// Checks `config`, reads its TLS identity and binds its addresses (the console's
    /// first: when it is taken, the gRPC port was never bound), without serving yet.
    /// A node that has more to do before it serves (a cluster node joins its cluster)
    /// binds first, so that it fails before anyone learns of it when an address is
    /// taken; connections made in between wait in the listen queue.
    pub async fn bind(config: ApiConfig) -> Result<BoundApi, ApiError> {
        config.validate()?;
        let identity = match &config.tls {
            Some(tls) => {
                let read = |path: &std::path::Path| {
                    std::fs::read(path).map_err(|source| ApiError::ReadFile {
                        path: path.to_path_buf(),
                        source,
                    })
                };
                Some(Identity::from_pem(read(&tls.cert)?, read(&tls.key)?))
            }
            None => None,
        };
        let http = match &config.http {
            Some(http) => Some(crate::http::bind(http).await?),
            None => None,
        };
        let listener = tokio::net::TcpListener::bind(config.listen)
            .await
            .map_err(|source| ApiError::Bind {
                addr: config.listen,
                source,
            })?;
        let addr = listener.local_addr().map_err(|source| ApiError::Bind {
            addr: config.listen,
            source,
        })?;
        Ok(BoundApi {
            config,
            identity,
            listener,
            http,
            addr,
        })
    }
}

/// An API whose addresses are bound and whose config is checked, not serving yet
/// ([`ApiServer::bind`]).
pub struct BoundApi {
    config: ApiConfig,
    identity: Option<Identity>,
    listener: tokio::net::TcpListener,
    http: Option<tokio::net::TcpListener>,
    addr: SocketAddr,
}

impl BoundApi {
    /// The gRPC address bound.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Serves `service` and `api` as [`ApiServer::serve`] does, on the bound addresses.
    pub async fn serve<S>(self, api: TwinApi, service: S) -> Result<ApiHandle, ApiError>
    where
        S: TwinService + AlarmService + ModelService,
    {
        let BoundApi {
            config,
            identity,
            listener,
            http: http_listener,
            addr,
        } = self;
        if config.tokens.is_empty() {
            tracing::warn!(
                "the API has no tokens configured: every TwinService call will be refused"
            );
        }
        let mut server = Server::builder()
            .max_concurrent_streams(config.limits.max_streams_per_connection)
            .http2_keepalive_interval(Some(Duration::from_secs(30)))
            .http2_keepalive_timeout(Some(Duration::from_secs(20)));
        if let Some(identity) = identity {
            server = server
                .tls_config(ServerTlsConfig::new().identity(identity))
                .map_err(|error| ApiError::Transport(format!("tls: {}", error_chain(&error))))?;
        }
        // Each public service: the size limit, gzip and zstd both ways, the tokens.
        macro_rules! public {
            ($server:expr) => {
                InterceptedService::new(
                    $server
                        .max_decoding_message_size(config.limits.max_request_bytes)
                        .accept_compressed(CompressionEncoding::Gzip)
                        .accept_compressed(CompressionEncoding::Zstd)
                        .send_compressed(CompressionEncoding::Gzip)
                        .send_compressed(CompressionEncoding::Zstd),
                    Authenticator::new(&config.tokens),
                )
            };
        }
        let service = std::sync::Arc::new(service);
        let twin_service = public!(TwinServiceServer::from_arc(service.clone()));
        let status_service = public!(StatusServiceServer::new(api.clone()));
        let alarm_service = public!(AlarmServiceServer::from_arc(service.clone()));
        // A cluster node's router sends deployments on to the edges that host the twins.
        let model_service = public!(ModelServiceServer::from_arc(service.clone()));
        let (health, health_service) = tonic_health::server::health_reporter();
        for name in SERVICES {
            health
                .set_service_status(name, ServingStatus::Serving)
                .await;
        }
        // Reflection in both versions: grpcurl before 1.8.8, grpcio-reflection and
        // some GUI clients only speak v1alpha.
        let reflection = || {
            tonic_reflection::server::Builder::configure()
                .register_encoded_file_descriptor_set(doppel_proto::FILE_DESCRIPTOR_SET)
                .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        };
        let reflection_failed = |error| ApiError::Transport(format!("reflection: {error}"));
        let reflection_v1 = reflection().build_v1().map_err(reflection_failed)?;
        let reflection_v1alpha = reflection().build_v1alpha().map_err(reflection_failed)?;
        let incoming = TcpIncoming::from(listener).with_nodelay(Some(true));
        let http = match (&config.http, http_listener) {
            (Some(http), Some(listener)) => {
                Some(crate::http::serve(listener, http, &config, api.clone(), service).await?)
            }
            _ => None,
        };
        let (shutdown, stopped) = oneshot::channel::<()>();
        let router = server
            .layer(MapResponseLayer::new(
                oversized_is_resource_exhausted as fn(_) -> _,
            ))
            .add_service(health_service)
            .add_service(reflection_v1)
            .add_service(reflection_v1alpha)
            .add_service(twin_service)
            .add_service(status_service)
            .add_service(alarm_service)
            .add_service(model_service);
        let task = tokio::spawn(async move {
            let signal = async {
                let _ = stopped.await;
            };
            if let Err(error) = router.serve_with_incoming_shutdown(incoming, signal).await {
                tracing::error!(error = %error_chain(&error), "the API server failed");
            }
        });
        let tls = config.tls.is_some();
        tracing::info!(%addr, tls, tokens = config.tokens.len(), "serving doppel.v1.TwinService");
        Ok(ApiHandle {
            addr,
            tls,
            api,
            health,
            http,
            shutdown: Some(shutdown),
            task,
        })
    }
}

/// A request over the size limit is refused with `RESOURCE_EXHAUSTED`, as gRPC's status
/// code table says, where tonic answers `OUT_OF_RANGE`. The refusal is a trailers-only
/// response, so its status is in the headers.
fn oversized_is_resource_exhausted(
    mut response: http::Response<tonic::body::Body>,
) -> http::Response<tonic::body::Body> {
    let headers = response.headers_mut();
    let out_of_range = headers
        .get("grpc-status")
        .is_some_and(|status| status == "11");
    let oversized = headers
        .get("grpc-message")
        .and_then(|message| message.to_str().ok())
        .is_some_and(|message| message.contains("message%20length%20too%20large"));
    if out_of_range && oversized {
        headers.insert("grpc-status", http::HeaderValue::from_static("8"));
    }
    response
}

impl ApiHandle {
    /// The address the server listens on.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// True when the server speaks TLS.
    pub fn is_tls(&self) -> bool {
        self.tls
    }

    /// The URL clients connect to (`http://…` or `https://…`); an unspecified listen
    /// address (`0.0.0.0`, `::`) is shown as loopback.
    pub fn url(&self) -> String {
        url_of(self.addr, self.tls)
    }

    /// The address of the REST API and the console, when `[api.http]` is configured.
    pub fn http_addr(&self) -> Option<SocketAddr> {
        self.http.as_ref().map(crate::http::HttpServing::addr)
    }

    /// The console's URL (`http://…/` or `https://…/`), when `[api.http]` is configured.
    pub fn console_url(&self) -> Option<String> {
        self.http_addr()
            .map(|addr| format!("{}/", url_of(addr, self.tls)))
    }

    /// Number of `WatchTwins` streams open now.
    pub fn open_watches(&self) -> usize {
        self.api.open_watches()
    }

    /// Stops the server: health turns NOT_SERVING, watches end with UNAVAILABLE, the
    /// listener closes, and calls in progress get a few seconds to finish.
    pub async fn stop(mut self) {
        for name in SERVICES {
            self.health
                .set_service_status(name, ServingStatus::NotServing)
                .await;
        }
        self.api.close_watches();
        if let Some(http) = self.http.take() {
            http.stop(DRAIN_TIMEOUT).await;
        }
        if let Some(shutdown) = self.shutdown.take() {
            let _ = shutdown.send(());
        }
        if tokio::time::timeout(DRAIN_TIMEOUT, &mut self.task)
            .await
            .is_err()
        {
            tracing::warn!("API calls still running after the drain timeout; closing them");
            self.task.abort();
            let _ = (&mut self.task).await;
        }
        tracing::info!(addr = %self.addr, "API server stopped");
    }
}

/// The URL of `addr`; an unspecified address (`0.0.0.0`, `::`) is shown as loopback.
fn url_of(mut addr: SocketAddr, tls: bool) -> String {
    if addr.ip().is_unspecified() {
        addr.set_ip(match addr {
            SocketAddr::V4(_) => std::net::Ipv4Addr::LOCALHOST.into(),
            SocketAddr::V6(_) => std::net::Ipv6Addr::LOCALHOST.into(),
        });
    }
    let scheme = if tls { "https" } else { "http" };
    format!("{scheme}://{addr}")
}

/// An error and its sources on one line (tonic's transport errors hide the cause).
fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}
