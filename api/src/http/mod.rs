//! The REST/JSON API and the operator console, on the address of `[api.http]`.
//!
//! Every resource under `/api/v1/` is a call of the node's gRPC services, made in
//! process: its request message is built from the URL's path and query (GET) or JSON
//! body (POST) by the message's descriptor, and its response message is sent in the
//! canonical proto3 JSON mapping. So the REST API has the gRPC API's tokens, roles,
//! validation, forwarding across the cluster and errors; a gRPC status becomes the
//! HTTP status `google.rpc.Code` gives it, with an RFC 9457 problem body. The OpenAPI
//! document at `/api/v1/openapi.json` is generated from the same route table and
//! descriptors. Watches are server-sent events.

mod console;
mod json;
mod openapi;
mod problem;
mod routes;
mod tls;

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::extract::rejection::{PathRejection, QueryRejection};
use axum::extract::{Path, Query};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::serve::ListenerExt;
use doppel_proto::v1 as pb;
use doppel_proto::v1::alarm_service_server::AlarmService;
use doppel_proto::v1::model_service_server::ModelService;
use doppel_proto::v1::status_service_server::StatusService;
use doppel_proto::v1::twin_service_server::TwinService;
use futures_util::StreamExt;
use serde::{Deserialize, Serialize};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tonic::Code;
use tonic::service::Interceptor;

use self::json::Codec;
use self::problem::Problem;
use self::routes::{Call, Method, ROUTES, Route};
use crate::auth::{Authenticator, Caller};
use crate::config::{ApiConfig, TlsConfig};
use crate::error::ApiError;
use crate::service::TwinApi;

/// How often an idle event stream sends a comment, so proxies keep it open.
const KEEP_ALIVE: Duration = Duration::from_secs(15);
/// Twins per ListTwins page when the overview sums them up.
const OVERVIEW_PAGE: i32 = 1000;

/// `[api.http]`: the REST/JSON API and the web console, on an address of their own
/// behind the gRPC API's tokens, roles and TLS certificate.
///
/// ```toml
/// [api]
/// listen = "0.0.0.0:50051"
/// tokens = [{ name = "ann", token = "…", role = "operator" }]
///
/// [api.http]
/// listen = "0.0.0.0:8080"
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct HttpConfig {
    /// The address to serve on; port 0 picks a free port.
    pub listen: SocketAddr,
}

/// The running HTTP server.
pub(crate) struct HttpServing {
    addr: SocketAddr,
    shutdown: Option<oneshot::Sender<()>>,
    task: JoinHandle<()>,
}

impl HttpServing {
    pub(crate) fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Stops accepting, lets requests in progress finish within `drain`, then closes.
    pub(crate) async fn stop(mut self, drain: Duration) {
        if let Some(shutdown) = self.shutdown.take() {
            let _ = shutdown.send(());
        }
        if tokio::time::timeout(drain, &mut self.task).await.is_err() {
            self.task.abort();
            let _ = (&mut self.task).await;
        }
    }
}

/// Binds `http.listen`.
pub(crate) async fn bind(http: &HttpConfig) -> Result<tokio::net::TcpListener, ApiError> {
    tokio::net::TcpListener::bind(http.listen)
        .await
        .map_err(|source| ApiError::Bind {
            addr: http.listen,
            source,
        })
}

/// Serves the REST API and the console on `listener` over `service` (the node's
/// TwinService and AlarmService, local or forwarding) and `api` (status).
pub(crate) async fn serve<S: TwinService + AlarmService + ModelService>(
    listener: tokio::net::TcpListener,
    http: &HttpConfig,
    config: &ApiConfig,
    api: TwinApi,
    service: Arc<S>,
) -> Result<HttpServing, ApiError> {
    let codec = Codec::new()?;
    let openapi = openapi::document(codec.pool()).to_string();
    let rest = Arc::new(Rest {
        service,
        api,
        auth: Authenticator::new(&config.tokens),
        codec,
        openapi,
        max_body: config.limits.max_request_bytes,
    });
    let router = rest.router();
    let addr = listener.local_addr().map_err(|source| ApiError::Bind {
        addr: http.listen,
        source,
    })?;
    let (shutdown, stopped) = oneshot::channel::<()>();
    let signal = async {
        let _ = stopped.await;
    };
    let task = match &config.tls {
        Some(tls) => {
            let listener = tls::TlsListener::new(listener, server_config(tls)?);
            tokio::spawn(async move {
                if let Err(error) = axum::serve(listener, router)
                    .with_graceful_shutdown(signal)
                    .await
                {
                    tracing::error!(%error, "the HTTP server failed");
                }
            })
        }
        None => {
            let listener = listener.tap_io(|tcp| {
                let _ = tcp.set_nodelay(true);
            });
            tokio::spawn(async move {
                if let Err(error) = axum::serve(listener, router)
                    .with_graceful_shutdown(signal)
                    .await
                {
                    tracing::error!(%error, "the HTTP server failed");
                }
            })
        }
    };
    tracing::info!(%addr, tls = config.tls.is_some(), "serving the REST API and the console");
    Ok(HttpServing {
        addr,
        shutdown: Some(shutdown),
        task,
    })
}

/// The API certificate as a rustls server config speaking HTTP/2 and HTTP/1.1.
fn server_config(tls: &TlsConfig) -> Result<Arc<rustls::ServerConfig>, ApiError> {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    let read = |path: &std::path::Path| {
        std::fs::read(path).map_err(|source| ApiError::ReadFile {
            path: path.to_path_buf(),
            source,
        })
    };
    let certs = CertificateDer::pem_slice_iter(&read(&tls.cert)?)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|error| ApiError::Transport(format!("tls: {}: {error}", tls.cert.display())))?;
    let key = PrivateKeyDer::from_pem_slice(&read(&tls.key)?)
        .map_err(|error| ApiError::Transport(format!("tls: {}: {error}", tls.key.display())))?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|error| ApiError::Transport(format!("tls: {error}")))?
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .map_err(|error| ApiError::Transport(format!("tls: {error}")))?;
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

/// What every REST handler shares.
struct Rest<S> {
    service: Arc<S>,
    api: TwinApi,
    auth: Authenticator,
    codec: Codec,
    openapi: String,
    max_body: usize,
}

type PathParams = Result<Path<Vec<(String, String)>>, PathRejection>;
type QueryParams = Result<Query<Vec<(String, String)>>, QueryRejection>;

impl<S: TwinService + AlarmService + ModelService> Rest<S> {
    fn router(self: &Arc<Self>) -> Router {
        let mut router = Router::new();
        for route in ROUTES {
            let rest = Arc::clone(self);
            let handler =
                move |path: PathParams, query: QueryParams, headers: HeaderMap, body: Body| {
                    let rest = Arc::clone(&rest);
                    async move {
                        match rest.handle(route, path, query, headers, body).await {
                            Ok(response) => response,
                            Err(problem) => problem.into_response(),
                        }
                    }
                };
            router = router.route(
                route.path,
                match route.method {
                    Method::Get => get(handler),
                    Method::Post => post(handler),
                },
            );
        }
        let openapi = Arc::clone(self);
        router
            .route(
                "/api/v1/openapi.json",
                get(move || {
                    let openapi = Arc::clone(&openapi);
                    async move { json_response(openapi.openapi.clone()) }
                }),
            )
            .route("/api/v1/{*rest}", axum::routing::any(unknown_resource))
            .merge(console::router())
            .method_not_allowed_fallback(method_not_allowed)
            .layer(axum::middleware::map_response(common_headers))
    }

    #[tracing::instrument(name = "http", skip_all, fields(operation = route.operation))]
    async fn handle(
        &self,
        route: &'static Route,
        path: PathParams,
        query: QueryParams,
        headers: HeaderMap,
        body: Body,
    ) -> Result<Response, Problem> {
        let caller = self.authenticate(&headers)?;
        let Path(path) = path.map_err(|error| Problem::invalid(error.body_text()))?;
        let Query(query) = query.map_err(|error| Problem::invalid(error.body_text()))?;
        let body = match route.method {
            Method::Get => None,
            Method::Post if !query.is_empty() => {
                return Err(Problem::invalid(
                    "this resource takes no query parameters: send them in the JSON body",
                ));
            }
            Method::Post => self.body(&headers, body).await?,
        };
        let descriptor = self.codec.message(route.request)?;
        let json = json::request_json(&descriptor, body, &path, &query)?;
        macro_rules! unary {
            ($service:expr, $trait:ident :: $method:ident, $request:ty) => {{
                let request: $request = self.codec.decode(route.request, json)?;
                let response = $trait::$method($service, grpc(request, &caller))
                    .await
                    .map_err(Problem::from)?
                    .into_inner();
                self.respond(route.response, &response)
            }};
        }
        match route.call {
            Call::Caller => self.respond(
                route.response,
                &pb::Caller {
                    name: caller.name.to_string(),
                    role: caller.role.as_str().to_string(),
                },
            ),
            Call::Overview => {
                let request: pb::GetOverviewRequest = self.codec.decode(route.request, json)?;
                let overview = self.overview(request.path_prefix, &caller).await?;
                self.respond(route.response, &overview)
            }
            Call::ListTwins => {
                unary!(
                    &*self.service,
                    TwinService::list_twins,
                    pb::ListTwinsRequest
                )
            }
            Call::GetTwin => unary!(&*self.service, TwinService::get_twin, pb::GetTwinRequest),
            Call::SendCommand => {
                unary!(
                    &*self.service,
                    TwinService::send_command,
                    pb::SendCommandRequest
                )
            }
            Call::Simulate => unary!(&*self.service, TwinService::simulate, pb::SimulateRequest),
            Call::GetHistory => {
                unary!(
                    &*self.service,
                    TwinService::get_history,
                    pb::GetHistoryRequest
                )
            }
            Call::ListAudit => {
                unary!(
                    &*self.service,
                    TwinService::list_audit,
                    pb::ListAuditRequest
                )
            }
            Call::Watch => {
                let request: pb::WatchTwinsRequest = self.codec.decode(route.request, json)?;
                self.watch(request, &caller).await
            }
            Call::GetTwinType => {
                let request: pb::GetTwinTypeRequest = self.codec.decode(route.request, json)?;
                let info = self.twin_type(&request.twin_type)?;
                self.respond(route.response, &info)
            }
            Call::ListAlarms => {
                unary!(
                    &*self.service,
                    AlarmService::list_alarms,
                    pb::ListAlarmsRequest
                )
            }
            Call::AcknowledgeAlarm => unary!(
                &*self.service,
                AlarmService::acknowledge_alarm,
                pb::AcknowledgeAlarmRequest
            ),
            Call::ShelveAlarm => {
                unary!(
                    &*self.service,
                    AlarmService::shelve_alarm,
                    pb::ShelveAlarmRequest
                )
            }
            Call::UnshelveAlarm => {
                unary!(
                    &*self.service,
                    AlarmService::unshelve_alarm,
                    pb::UnshelveAlarmRequest
                )
            }
            Call::NodeStatus => {
                unary!(
                    &self.api,
                    StatusService::get_node_status,
                    pb::GetNodeStatusRequest
                )
            }
            Call::ClusterStatus => unary!(
                &self.api,
                StatusService::get_cluster_status,
                pb::GetClusterStatusRequest
            ),
            Call::Recommend => unary!(&*self.service, TwinService::recommend, pb::RecommendRequest),
            Call::ListPackages => unary!(
                &*self.service,
                ModelService::list_packages,
                pb::ListPackagesRequest
            ),
            Call::RegisterPackage => unary!(
                &*self.service,
                ModelService::register_package,
                pb::RegisterPackageRequest
            ),
            Call::GetPackage => unary!(
                &*self.service,
                ModelService::get_package,
                pb::GetPackageRequest
            ),
            Call::ListDeployments => unary!(
                &*self.service,
                ModelService::list_deployments,
                pb::ListDeploymentsRequest
            ),
            Call::Deploy => unary!(&*self.service, ModelService::deploy, pb::DeployRequest),
            Call::Withdraw => unary!(&*self.service, ModelService::withdraw, pb::WithdrawRequest),
            Call::DecideCanary => unary!(
                &*self.service,
                ModelService::decide_canary,
                pb::DecideCanaryRequest
            ),
            Call::Annotate => unary!(&*self.service, ModelService::annotate, pb::AnnotateRequest),
            Call::GetDivergence => unary!(
                &*self.service,
                ModelService::get_divergence,
                pb::GetDivergenceRequest
            ),
        }
    }

    /// The caller the request's bearer token names, as the gRPC API admits it.
    fn authenticate(&self, headers: &HeaderMap) -> Result<Caller, Problem> {
        let mut request = tonic::Request::new(());
        if let Some(value) = headers.get(header::AUTHORIZATION) {
            let value =
                tonic::metadata::AsciiMetadataValue::try_from(value.as_bytes()).map_err(|_| {
                    Problem::new(Code::Unauthenticated, "malformed authorization header")
                })?;
            request.metadata_mut().insert("authorization", value);
        }
        let request = self.auth.clone().call(request).map_err(Problem::from)?;
        request
            .extensions()
            .get::<Caller>()
            .cloned()
            .ok_or_else(|| Problem::new(Code::Unauthenticated, "missing bearer token"))
    }

    /// A POST's JSON body; `None` when it is empty.
    async fn body(
        &self,
        headers: &HeaderMap,
        body: Body,
    ) -> Result<Option<serde_json::Value>, Problem> {
        let bytes = axum::body::to_bytes(body, self.max_body)
            .await
            .map_err(|_| {
                Problem::new(
                    Code::ResourceExhausted,
                    format!("the request body is larger than {} bytes", self.max_body),
                )
                .with_status(StatusCode::PAYLOAD_TOO_LARGE)
            })?;
        if bytes.is_empty() {
            return Ok(None);
        }
        let json_type = headers
            .get(header::CONTENT_TYPE)
            .and_then(|value| value.to_str().ok())
            .and_then(|value| value.split(';').next())
            .is_some_and(|media| {
                let media = media.trim();
                media.eq_ignore_ascii_case("application/json") || media.ends_with("+json")
            });
        if !json_type {
            return Err(
                Problem::invalid("the request body must be application/json")
                    .with_status(StatusCode::UNSUPPORTED_MEDIA_TYPE),
            );
        }
        serde_json::from_slice(&bytes)
            .map(Some)
            .map_err(|error| Problem::invalid(format!("the request body is not JSON: {error}")))
    }

    /// A response message as a JSON response.
    fn respond<T: prost::Message>(&self, name: &str, message: &T) -> Result<Response, Problem> {
        Ok(json_response(self.codec.encode(name, message)?))
    }

    /// The twins under `prefix`, page by page through ListTwins (so a cloud node sums
    /// its mirrors), grouped by line.
    async fn overview(&self, prefix: String, caller: &Caller) -> Result<pb::Overview, Problem> {
        let mut groups: BTreeMap<String, pb::OverviewGroup> = BTreeMap::new();
        let mut worst: BTreeMap<String, (i32, f64)> = BTreeMap::new();
        let mut twins = 0u32;
        let mut page_token = String::new();
        loop {
            let request = pb::ListTwinsRequest {
                path_prefix: prefix.clone(),
                twin_type: String::new(),
                page_size: OVERVIEW_PAGE,
                page_token,
            };
            let page = self
                .service
                .list_twins(grpc(request, caller))
                .await
                .map_err(Problem::from)?
                .into_inner();
            for twin in &page.twins {
                twins = twins.saturating_add(1);
                let line = twin
                    .asset_path
                    .rsplit_once('/')
                    .map_or(twin.asset_path.as_str(), |(parent, _)| parent);
                let group = groups
                    .entry(line.to_string())
                    .or_insert_with(|| pb::OverviewGroup {
                        path: line.to_string(),
                        min_health: 1.0,
                        ..Default::default()
                    });
                group.twins += 1;
                match pb::RunState::try_from(twin.run_state) {
                    Ok(pb::RunState::Tripped) => group.tripped += 1,
                    Ok(pb::RunState::Stopped) => group.stopped += 1,
                    _ => group.running += 1,
                }
                group.alarms = group.alarms.saturating_add(twin.alarm_count);
                group.unacknowledged = group.unacknowledged.saturating_add(twin.unacknowledged);
                group.min_health = group.min_health.min(twin.health);
                group.worst_severity = group.worst_severity.max(twin.worst_severity);
                // The worst twin: the highest standing severity, then the lowest health.
                let rank = (twin.worst_severity, -twin.health);
                let current = worst
                    .entry(line.to_string())
                    .or_insert((-1, f64::NEG_INFINITY));
                if rank.0 > current.0 || (rank.0 == current.0 && rank.1 > current.1) {
                    *current = rank;
                    group.worst_twin.clone_from(&twin.asset_path);
                }
            }
            if page.next_page_token.is_empty() {
                break;
            }
            page_token = page.next_page_token;
        }
        Ok(pb::Overview {
            twins,
            groups: groups.into_values().collect(),
        })
    }

    /// A twin type the node knows.
    fn twin_type(&self, name: &str) -> Result<pb::TwinTypeInfo, Problem> {
        let twin_type = self.api.twins().twin_type(name).ok_or_else(|| {
            Problem::new(
                Code::NotFound,
                format!("no twin type `{name}` on this node"),
            )
        })?;
        Ok(console::type_info(twin_type))
    }

    /// A watch as server-sent events, one per message of the gRPC stream.
    async fn watch(
        &self,
        request: pb::WatchTwinsRequest,
        caller: &Caller,
    ) -> Result<Response, Problem> {
        let stream = self
            .service
            .watch_twins(grpc(request, caller))
            .await
            .map_err(Problem::from)?
            .into_inner();
        let codec = self.codec.clone();
        let events = stream.map(move |item| Ok::<Event, Infallible>(watch_event(&codec, item)));
        let mut response = Sse::new(events)
            .keep_alive(KeepAlive::new().interval(KEEP_ALIVE))
            .into_response();
        response
            .headers_mut()
            .insert("x-accel-buffering", HeaderValue::from_static("no"));
        Ok(response)
    }
}

/// One message of a watch as an event named after its field.
fn watch_event(codec: &Codec, item: Result<pb::WatchTwinsResponse, tonic::Status>) -> Event {
    use pb::watch_twins_response::Event as Watched;
    // Every watcher of a change is sent the same message: its JSON is written once.
    let encoded = match item {
        Ok(pb::WatchTwinsResponse { event: Some(event) }) => match event {
            Watched::Snapshot(twin) => ("snapshot", codec.encode_shared("doppel.v1.Twin", &twin)),
            Watched::SnapshotComplete(done) => (
                "snapshotComplete",
                codec
                    .encode("doppel.v1.SnapshotComplete", &done)
                    .map(Arc::from),
            ),
            Watched::Change(change) => (
                "change",
                codec.encode_shared("doppel.v1.TwinChange", &change),
            ),
            Watched::Coalesced(twin) => ("coalesced", codec.encode_shared("doppel.v1.Twin", &twin)),
        },
        Ok(pb::WatchTwinsResponse { event: None }) => return Event::default().comment(""),
        Err(status) => ("error", Err(Problem::from(status))),
    };
    match encoded {
        (name, Ok(data)) => Event::default().event(name).data(&*data),
        (_, Err(problem)) => Event::default().event("error").data(problem.body()),
    }
}

/// A gRPC request from `caller`, as the token interceptor would have admitted it.
fn grpc<T>(message: T, caller: &Caller) -> tonic::Request<T> {
    let mut request = tonic::Request::new(message);
    request.extensions_mut().insert(caller.clone());
    request
}

fn json_response(body: String) -> Response {
    let mut response = body.into_response();
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    response
}

async fn unknown_resource() -> Problem {
    Problem::new(
        Code::NotFound,
        "no such resource; /api/v1/openapi.json lists them",
    )
}

async fn method_not_allowed() -> Problem {
    Problem::new(
        Code::Unimplemented,
        "this resource does not take that method",
    )
    .with_status(StatusCode::METHOD_NOT_ALLOWED)
}

/// Headers on every answer: nothing is cached or sniffed.
async fn common_headers(mut response: Response) -> Response {
    let headers = response.headers_mut();
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    headers
        .entry(header::CACHE_CONTROL)
        .or_insert(HeaderValue::from_static("no-store"));
    headers.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    response
}
