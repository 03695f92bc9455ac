//! How nodes reach each other: NodeService clients and servers with the cluster id on
//! every call and, when certificates are configured, mutual TLS.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use doppel_proto::v1::node_service_client::NodeServiceClient;
use tonic::metadata::MetadataValue;
use tonic::service::Interceptor;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::{
    Certificate, Channel, ClientTlsConfig, Endpoint, Identity, Server, ServerTlsConfig,
};
use tonic::{Request, Status};

use crate::config::{ClusterConfig, ClusterTls};
use crate::error::ClusterError;

/// The metadata entry carrying the cluster id on every node-to-node call.
pub const CLUSTER_HEADER: &str = "x-doppel-cluster";
/// The metadata entry carrying the calling node's id.
pub const NODE_HEADER: &str = "x-doppel-node";

/// A NodeService client that sends the cluster id and node id with every call.
pub type NodeClient = NodeServiceClient<InterceptedService<Channel, Stamp>>;

/// Adds the cluster id and the calling node's id to outgoing calls.
#[derive(Clone)]
pub struct Stamp {
    cluster: MetadataValue<tonic::metadata::Ascii>,
    node: MetadataValue<tonic::metadata::Ascii>,
}

impl Interceptor for Stamp {
    fn call(&mut self, mut request: Request<()>) -> Result<Request<()>, Status> {
        request
            .metadata_mut()
            .insert(CLUSTER_HEADER, self.cluster.clone());
        request
            .metadata_mut()
            .insert(NODE_HEADER, self.node.clone());
        // Continue the current trace on the peer.
        doppel_telemetry::inject_current(request.metadata_mut());
        Ok(request)
    }
}

/// Node-to-node transport settings: cluster id, node id, TLS.
#[derive(Clone)]
pub struct Transport {
    cluster_id: Arc<str>,
    node_id: Arc<str>,
    client_tls: Option<ClientTlsConfig>,
    server_tls: Option<ServerTlsConfig>,
}

impl std::fmt::Debug for Transport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Transport")
            .field("cluster_id", &self.cluster_id)
            .field("node_id", &self.node_id)
            .field("tls", &self.client_tls.is_some())
            .finish()
    }
}

impl Transport {
    /// The transport a node's config describes (reads its certificates).
    pub fn new(config: &ClusterConfig) -> Result<Self, ClusterError> {
        let mut transport = Self::plaintext(&config.id, &config.node_id);
        if let Some(tls) = &config.tls {
            transport = transport.with_tls(tls)?;
        }
        Ok(transport)
    }

    /// A transport without TLS (loopback development clusters).
    pub fn plaintext(cluster_id: &str, node_id: &str) -> Self {
        Self {
            cluster_id: cluster_id.into(),
            node_id: node_id.into(),
            client_tls: None,
            server_tls: None,
        }
    }

    /// Adds mutual TLS: this node presents `cert`, and accepts and dials only peers
    /// whose certificate the cluster CA signed.
    pub fn with_tls(mut self, tls: &ClusterTls) -> Result<Self, ClusterError> {
        let read = |path: &std::path::Path| {
            std::fs::read(path).map_err(|source| ClusterError::ReadFile {
                path: path.to_path_buf(),
                source,
            })
        };
        let identity = Identity::from_pem(read(&tls.cert)?, read(&tls.key)?);
        let ca = Certificate::from_pem(read(&tls.ca)?);
        let mut client = ClientTlsConfig::new()
            .ca_certificate(ca.clone())
            .identity(identity.clone());
        if let Some(name) = &tls.server_name {
            client = client.domain_name(name.clone());
        }
        self.client_tls = Some(client);
        self.server_tls = Some(ServerTlsConfig::new().identity(identity).client_ca_root(ca));
        Ok(self)
    }

    /// The cluster id.
    pub fn cluster_id(&self) -> &str {
        &self.cluster_id
    }

    /// This node's id.
    pub fn node_id(&self) -> &str {
        &self.node_id
    }

    /// True when node-to-node traffic uses mutual TLS.
    pub fn is_tls(&self) -> bool {
        self.client_tls.is_some()
    }

    /// A client for the node at `addr`. The connection is made on first use and
    /// re-made after failures.
    pub fn client(&self, addr: SocketAddr) -> Result<NodeClient, ClusterError> {
        let scheme = if self.client_tls.is_some() {
            "https"
        } else {
            "http"
        };
        let mut endpoint = Endpoint::from_shared(format!("{scheme}://{addr}"))
            .map_err(ClusterError::Transport)?
            .connect_timeout(Duration::from_secs(2))
            .tcp_nodelay(true)
            .http2_keep_alive_interval(Duration::from_secs(5))
            .keep_alive_timeout(Duration::from_secs(5))
            .keep_alive_while_idle(true);
        if let Some(tls) = &self.client_tls {
            endpoint = endpoint
                .tls_config(tls.clone())
                .map_err(ClusterError::Transport)?;
        }
        let stamp = Stamp {
            cluster: ascii("cluster.id", &self.cluster_id)?,
            node: ascii("cluster.node_id", &self.node_id)?,
        };
        Ok(
            NodeServiceClient::with_interceptor(endpoint.connect_lazy(), stamp)
                .max_decoding_message_size(64 << 20)
                .max_encoding_message_size(64 << 20),
        )
    }

    /// A server builder for NodeService, with mutual TLS when configured.
    pub fn server(&self) -> Result<Server, ClusterError> {
        let mut server = Server::builder()
            .tcp_nodelay(true)
            .http2_keepalive_interval(Some(Duration::from_secs(5)))
            .http2_keepalive_timeout(Some(Duration::from_secs(5)));
        if let Some(tls) = &self.server_tls {
            server = server
                .tls_config(tls.clone())
                .map_err(ClusterError::Transport)?;
        }
        Ok(server)
    }

    /// Refuses a call from another cluster (PERMISSION_DENIED) and returns the calling
    /// node's id.
    pub fn check<T>(&self, request: &Request<T>) -> Result<String, Status> {
        let cluster = request
            .metadata()
            .get(CLUSTER_HEADER)
            .and_then(|v| v.to_str().ok());
        if cluster != Some(&*self.cluster_id) {
            tracing::warn!(peer = ?request.remote_addr(), cluster = ?cluster, "refused a node call from another cluster");
            return Err(Status::permission_denied(format!(
                "this node belongs to cluster `{}`",
                self.cluster_id
            )));
        }
        Ok(request
            .metadata()
            .get(NODE_HEADER)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_string())
    }
}

fn ascii(
    key: &'static str,
    text: &str,
) -> Result<MetadataValue<tonic::metadata::Ascii>, ClusterError> {
    text.parse().map_err(|_| ClusterError::Config {
        key,
        problem: format!("`{text}` is not valid in gRPC metadata"),
    })
}
