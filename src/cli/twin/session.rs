//! The connection to a node: its address (plain or TLS), the bearer token sent with
//! every call, and the timeout every call runs under.

use std::future::Future;
use std::path::{Path, PathBuf};
use std::time::Duration;

use doppel::proto::v1::alarm_service_client::AlarmServiceClient;
use doppel::proto::v1::model_service_client::ModelServiceClient;
use doppel::proto::v1::status_service_client::StatusServiceClient;
use doppel::proto::v1::twin_service_client::TwinServiceClient;
use tonic::metadata::{Ascii, MetadataValue};
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint};
use tonic::{Code, Request, Response, Status, Streaming};

use super::failure::Failure;

/// Where the CA bundle of the system usually is, first match wins (Debian and Ubuntu,
/// Fedora and RHEL, Alpine and macOS, openSUSE, the RHEL extracted bundle).
const SYSTEM_CA_BUNDLES: &[&str] = &[
    "/etc/ssl/certs/ca-certificates.crt",
    "/etc/pki/tls/certs/ca-bundle.crt",
    "/etc/ssl/cert.pem",
    "/etc/ssl/ca-bundle.pem",
    "/etc/pki/ca-trust/extracted/pem/tls-ca-bundle.pem",
];

/// How to reach a node.
#[derive(Debug, Clone)]
pub struct Target {
    /// `http://HOST:PORT` or `https://HOST:PORT`; a bare `HOST:PORT` means `http://`.
    pub addr: String,
    /// The bearer token, if any.
    pub token: Option<String>,
    /// CA certificates (PEM) to trust instead of the system's, for `https://`.
    pub ca: Option<PathBuf>,
    /// Deadline of connecting and of every unary call.
    pub timeout: Duration,
}

/// A connected client of one node's `TwinService` and `StatusService`.
pub struct Session {
    /// The generated client over one HTTP/2 connection.
    client: TwinServiceClient<Channel>,
    /// The status service's client, over the same connection.
    status: StatusServiceClient<Channel>,
    /// The alarm service's client, over the same connection.
    alarms: AlarmServiceClient<Channel>,
    models: ModelServiceClient<Channel>,
    /// `Bearer <token>`, marked sensitive so it is never logged.
    authorization: Option<MetadataValue<Ascii>>,
    /// Deadline of every unary call.
    timeout: Duration,
    /// W3C trace context to continue (`TRACEPARENT`, `TRACESTATE` in the environment,
    /// as a calling script or CI job sets them), sent with every call.
    trace_context: Vec<(&'static str, MetadataValue<Ascii>)>,
    /// The address, for messages.
    addr: String,
}

impl Session {
    /// Checks the target (a usage error when the address, token or `--ca` cannot
    /// work) and connects.
    pub async fn connect(target: &Target) -> Result<Self, Failure> {
        let addr = if target.addr.contains("://") {
            target.addr.trim().to_string()
        } else {
            format!("http://{}", target.addr.trim())
        };
        let authorization = match target.token.as_deref().map(str::trim) {
            None | Some("") => None,
            Some(token) if !token.bytes().all(|b| b.is_ascii_graphic()) => {
                return Err(Failure::usage(
                    "--token: only printable ASCII is allowed, without spaces",
                ));
            }
            Some(token) => {
                let mut value =
                    MetadataValue::try_from(format!("Bearer {token}")).map_err(|_| {
                        Failure::usage("--token: only printable ASCII is allowed, without spaces")
                    })?;
                value.set_sensitive(true);
                Some(value)
            }
        };
        let endpoint = Endpoint::from_shared(addr.clone())
            .map_err(|_| Failure::usage(format!("--addr `{}`: not a URL", target.addr)))?;
        let endpoint = match endpoint.uri().scheme_str() {
            Some("http") => {
                if target.ca.is_some() {
                    return Err(Failure::usage("--ca: only used with an https:// address"));
                }
                endpoint
            }
            Some("https") => {
                let roots = match &target.ca {
                    Some(path) => read_pem("--ca", path)?,
                    None => system_roots()?,
                };
                endpoint
                    .tls_config(ClientTlsConfig::new().ca_certificate(roots))
                    .map_err(|error| Failure::other(format!("TLS for {addr}"), &error))?
            }
            _ => {
                return Err(Failure::usage(format!(
                    "--addr `{}`: use http://HOST:PORT or https://HOST:PORT",
                    target.addr
                )));
            }
        };
        if endpoint.uri().host().is_none_or(str::is_empty) {
            return Err(Failure::usage(format!("--addr `{}`: no host", target.addr)));
        }
        // The whole connection (TCP, TLS, HTTP/2) under the timeout: a port that
        // accepts and then stays silent must not hang the command.
        let endpoint = endpoint.connect_timeout(target.timeout).tcp_nodelay(true);
        let channel = match tokio::time::timeout(target.timeout, endpoint.connect()).await {
            Ok(Ok(channel)) => channel,
            Ok(Err(error)) => {
                return Err(Failure::other(format!("cannot connect to {addr}"), &error));
            }
            Err(_) => {
                return Err(Failure::failed(format!(
                    "cannot connect to {addr}: no answer within {} (see --timeout)",
                    super::render::duration_text(target.timeout)
                )));
            }
        };
        let trace_context = [("traceparent", "TRACEPARENT"), ("tracestate", "TRACESTATE")]
            .into_iter()
            .filter_map(|(key, var)| {
                let value = std::env::var(var).ok()?;
                Some((key, MetadataValue::try_from(value.trim()).ok()?))
            })
            .collect();
        Ok(Self {
            client: TwinServiceClient::new(channel.clone()),
            status: StatusServiceClient::new(channel.clone()),
            alarms: AlarmServiceClient::new(channel.clone()),
            models: ModelServiceClient::new(channel),
            authorization,
            timeout: target.timeout,
            trace_context,
            addr,
        })
    }

    /// A request carrying the token and, when `timeout` is set, a gRPC deadline.
    fn request<T>(&self, message: T, timeout: Option<Duration>) -> Request<T> {
        let mut request = Request::new(message);
        if let Some(authorization) = &self.authorization {
            request
                .metadata_mut()
                .insert("authorization", authorization.clone());
        }
        for (key, value) in &self.trace_context {
            request.metadata_mut().insert(*key, value.clone());
        }
        // And the context of the current span, when this process traces.
        doppel::telemetry::inject_current(request.metadata_mut());
        if let Some(timeout) = timeout {
            request.set_timeout(timeout);
        }
        request
    }

    /// Runs one unary call under the session's timeout, enforced here as well as
    /// sent to the node: a node that never answers still ends the call.
    pub async fn unary<Req, Resp, Call, Fut>(
        &self,
        message: Req,
        call: Call,
    ) -> Result<Resp, Status>
    where
        Call: FnOnce(TwinServiceClient<Channel>, Request<Req>) -> Fut,
        Fut: Future<Output = Result<Response<Resp>, Status>>,
    {
        self.unary_on(self.client.clone(), message, call).await
    }

    /// Like [`Session::unary`], on the node's `StatusService`.
    pub async fn status_unary<Req, Resp, Call, Fut>(
        &self,
        message: Req,
        call: Call,
    ) -> Result<Resp, Status>
    where
        Call: FnOnce(StatusServiceClient<Channel>, Request<Req>) -> Fut,
        Fut: Future<Output = Result<Response<Resp>, Status>>,
    {
        self.unary_on(self.status.clone(), message, call).await
    }

    /// Like [`Session::unary`], on the node's `AlarmService`.
    pub async fn alarm_unary<Req, Resp, Call, Fut>(
        &self,
        message: Req,
        call: Call,
    ) -> Result<Resp, Status>
    where
        Call: FnOnce(AlarmServiceClient<Channel>, Request<Req>) -> Fut,
        Fut: Future<Output = Result<Response<Resp>, Status>>,
    {
        self.unary_on(self.alarms.clone(), message, call).await
    }

    /// Like [`Session::unary`], on the node's `ModelService`.
    pub async fn model_unary<Req, Resp, Call, Fut>(
        &self,
        message: Req,
        call: Call,
    ) -> Result<Resp, Status>
    where
        Call: FnOnce(ModelServiceClient<Channel>, Request<Req>) -> Fut,
        Fut: Future<Output = Result<Response<Resp>, Status>>,
    {
        self.unary_on(self.models.clone(), message, call).await
    }

    async fn unary_on<Client, Req, Resp, Call, Fut>(
        &self,
        client: Client,
        message: Req,
        call: Call,
    ) -> Result<Resp, Status>
    where
        Call: FnOnce(Client, Request<Req>) -> Fut,
        Fut: Future<Output = Result<Response<Resp>, Status>>,
    {
        let request = self.request(message, Some(self.timeout));
        let started = tokio::time::Instant::now();
        match tokio::time::timeout(self.timeout, call(client, request)).await {
            // tonic ends a call past its `grpc-timeout` itself, as CANCELLED.
            Ok(Err(status))
                if status.code() == Code::Cancelled && started.elapsed() >= self.timeout =>
            {
                Err(self.no_answer())
            }
            Ok(result) => result.map(Response::into_inner),
            Err(_) => Err(self.no_answer()),
        }
    }

    /// Opens a server stream with no deadline on the stream itself; only getting the
    /// stream started runs under the session's timeout.
    pub async fn stream<Req, Item, Call, Fut>(
        &self,
        message: Req,
        call: Call,
    ) -> Result<Streaming<Item>, Status>
    where
        Call: FnOnce(TwinServiceClient<Channel>, Request<Req>) -> Fut,
        Fut: Future<Output = Result<Response<Streaming<Item>>, Status>>,
    {
        let request = self.request(message, None);
        match tokio::time::timeout(self.timeout, call(self.client.clone(), request)).await {
            Ok(result) => result.map(Response::into_inner),
            Err(_) => Err(self.no_answer()),
        }
    }

    /// The status of a call that got no answer in time.
    fn no_answer(&self) -> Status {
        Status::deadline_exceeded(format!(
            "no answer from {} within {} (see --timeout)",
            self.addr,
            super::render::duration_text(self.timeout)
        ))
    }
}

/// Reads PEM certificates from `path`.
fn read_pem(flag: &str, path: &Path) -> Result<Certificate, Failure> {
    let pem = std::fs::read(path)
        .map_err(|error| Failure::other(format!("{flag} {}", path.display()), &error))?;
    if !String::from_utf8_lossy(&pem).contains("-----BEGIN CERTIFICATE-----") {
        return Err(Failure::usage(format!(
            "{flag} {}: no PEM certificate in it",
            path.display()
        )));
    }
    Ok(Certificate::from_pem(pem))
}

/// The system's CA bundle: `SSL_CERT_FILE` when set, else the first bundle found in
/// the usual places.
fn system_roots() -> Result<Certificate, Failure> {
    if let Some(path) = std::env::var_os("SSL_CERT_FILE") {
        return read_pem("SSL_CERT_FILE", Path::new(&path));
    }
    SYSTEM_CA_BUNDLES
        .iter()
        .map(Path::new)
        .find(|path| path.is_file())
        .map(|path| read_pem("system CA bundle", path))
        .unwrap_or_else(|| {
            Err(Failure::failed(
                "https: no system CA bundle found; name the CA certificates with --ca FILE",
            ))
        })
}
