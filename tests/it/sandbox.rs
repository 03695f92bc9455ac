//! A sandbox of real `doppel node` processes on loopback: add nodes, wait until N are
//! live, kill (SIGKILL) and restart them. Each node has its own data directory, fixed
//! ports (a restart reuses them) and a public API with an admin and a planner token.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use doppel_proto::v1::model_service_client::ModelServiceClient;
use doppel_proto::v1::twin_service_client::TwinServiceClient;
use parking_lot::Mutex;
use tonic::metadata::MetadataValue;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::Channel;

use doppel_testkit::net::free_udp_port;
use doppel_testkit::proxy::PartitionProxy;
use doppel_testkit::tls::CertificateAuthority;

use crate::brokers::free_port;
use crate::support::{PLANT, types};

/// The admin token every sandbox node accepts.
pub const ADMIN_TOKEN: &str = "sandbox-admin-token-0123456789";
/// A planner token every sandbox node accepts (principal `fleet-script`).
pub const PLANNER_TOKEN: &str = "sandbox-planner-token-0123456789";

/// A client of a node's public API that sends a token.
pub type Client = TwinServiceClient<InterceptedService<Channel, Bearer>>;

/// A client of a node's ModelService that sends a token.
pub type ModelClient = ModelServiceClient<InterceptedService<Channel, Bearer>>;

/// Sends a bearer token with every call.
#[derive(Clone)]
pub struct Bearer(MetadataValue<tonic::metadata::Ascii>);

impl tonic::service::Interceptor for Bearer {
    fn call(
        &mut self,
        mut request: tonic::Request<()>,
    ) -> Result<tonic::Request<()>, tonic::Status> {
        request
            .metadata_mut()
            .insert("authorization", self.0.clone());
        Ok(request)
    }
}

/// One node of the sandbox.
pub struct SandboxNode {
    /// The node's id.
    pub id: String,
    /// Its config file.
    pub config: PathBuf,
    /// Its public API address.
    pub api: SocketAddr,
    /// Its REST API and console address.
    pub http: SocketAddr,
    child: Option<Child>,
    output: Arc<Mutex<Vec<String>>>,
}

impl SandboxNode {
    /// Every stdout and stderr line so far.
    pub fn output(&self) -> String {
        self.output.lock().join("\n")
    }

    /// The latest `members: N live: …` line's N.
    pub fn live(&self) -> usize {
        self.output
            .lock()
            .iter()
            .rev()
            .find_map(|line| line.strip_prefix("members: "))
            .and_then(|rest| rest.split(' ').next())
            .and_then(|n| n.parse().ok())
            .unwrap_or(0)
    }

    /// The latest `planners here: […]` line.
    pub fn planners(&self) -> String {
        self.output
            .lock()
            .iter()
            .rev()
            .find_map(|line| line.strip_prefix("planners here: "))
            .unwrap_or("[]")
            .to_string()
    }

    /// Whether the process is still running.
    pub fn running(&mut self) -> bool {
        self.child
            .as_mut()
            .is_some_and(|child| child.try_wait().ok().flatten().is_none())
    }
}

/// Node processes of one cluster on loopback.
pub struct Sandbox {
    /// The sandbox directory (configs and data).
    pub dir: tempfile::TempDir,
    cluster_id: String,
    seed: Option<SocketAddr>,
    nodes: BTreeMap<String, SandboxNode>,
    ca: Option<Authority>,
    /// The gossip key files nodes added from now on seal with (`cluster.gossip_keys`).
    gossip_keys: Vec<PathBuf>,
}

/// The cluster's certificate authority, for mutual TLS. Its certificate is written as
/// `<name>-ca.pem`.
pub enum Authority {
    /// A CA the test kit makes, named.
    Kit {
        /// Its name, for file names.
        name: String,
        /// The CA.
        ca: Box<CertificateAuthority>,
    },
    /// The CA and certificates `doppel cluster certs` makes, as a user would.
    Command,
}

impl Authority {
    /// A new CA named `name`.
    pub fn new(name: &str) -> Self {
        Authority::Kit {
            name: name.to_string(),
            ca: Box::new(CertificateAuthority::new(name)),
        }
    }

    /// Writes the CA certificate and a certificate for node `id` (valid for
    /// 127.0.0.1 and localhost) into `dir`; the `[cluster.tls]` table using them.
    pub fn issue(&self, dir: &std::path::Path, id: &str) -> String {
        let (ca_path, cert_path, key_path) = match self {
            Authority::Kit { name, ca } => {
                let ca_path = ca.write_certificate(&dir.join(format!("{name}-ca.pem")));
                let (cert_path, key_path) =
                    ca.issue(id, &["127.0.0.1", "localhost"]).write(dir, id);
                (ca_path, cert_path, key_path)
            }
            Authority::Command => {
                let certs = dir.join("certs");
                let output = Command::new(env!("CARGO_BIN_EXE_doppel"))
                    .args(["cluster", "certs", "--out"])
                    .arg(&certs)
                    .args(["--node", &format!("{id}=127.0.0.1,localhost")])
                    .output()
                    .unwrap();
                assert!(
                    output.status.success(),
                    "doppel cluster certs: {}",
                    String::from_utf8_lossy(&output.stderr)
                );
                (
                    certs.join("ca.pem"),
                    certs.join(format!("{id}.pem")),
                    certs.join(format!("{id}.key")),
                )
            }
        };
        format!(
            "\n[cluster.tls]\ncert = \"{}\"\nkey = \"{}\"\nca = \"{}\"\n",
            cert_path.display(),
            key_path.display(),
            ca_path.display()
        )
    }
}

impl Sandbox {
    /// An empty sandbox for cluster `cluster_id`, with the test twin types and plant
    /// (acme/plant-a: line-1 with press-1 and press-2, line-2 with press-3).
    pub fn new(cluster_id: &str) -> Self {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("types.toml"), types()).unwrap();
        std::fs::write(dir.path().join("plant.toml"), PLANT).unwrap();
        Self {
            dir,
            cluster_id: cluster_id.to_string(),
            seed: None,
            nodes: BTreeMap::new(),
            ca: None,
            gossip_keys: Vec::new(),
        }
    }

    /// Nodes added from now on seal gossip with the key files `names` (in the
    /// sandbox's directory, written by `doppel cluster key` if missing); none: in clear.
    pub fn with_gossip_keys(&mut self, names: &[&str]) -> &mut Self {
        self.gossip_keys = names
            .iter()
            .map(|name| {
                let path = self.dir.path().join(name);
                if !path.exists() {
                    let output = Command::new(env!("CARGO_BIN_EXE_doppel"))
                        .args(["cluster", "key", "--out"])
                        .arg(&path)
                        .output()
                        .unwrap();
                    assert!(
                        output.status.success(),
                        "doppel cluster key: {}",
                        String::from_utf8_lossy(&output.stderr)
                    );
                }
                path
            })
            .collect();
        self
    }

    /// Nodes added from now on seed from `seed` (a gossip address), e.g. a relay that
    /// forwards to the first node's.
    pub fn seed_through(&mut self, seed: SocketAddr) -> Option<SocketAddr> {
        self.seed.replace(seed)
    }

    /// The gossip address nodes seed from.
    pub fn seed(&self) -> Option<SocketAddr> {
        self.seed
    }

    /// Nodes added from now on talk mutual TLS with certificates of one cluster CA.
    pub fn with_tls(mut self) -> Self {
        self.ca = Some(Authority::new("cluster"));
        self
    }

    /// The sandbox's directory (configs, data, certificates).
    pub fn dir(&self) -> &std::path::Path {
        self.dir.path()
    }

    /// Mutual TLS with the CA and certificates `doppel cluster certs` makes.
    pub fn with_certs_command(mut self) -> Self {
        self.ca = Some(Authority::Command);
        self
    }

    /// Adds a cloud node of this cluster id whose certificate another CA signed (and
    /// which trusts only that CA).
    pub fn add_untrusted(&mut self, id: &str) -> &mut SandboxNode {
        let own = self.ca.replace(Authority::new("rogue"));
        self.add(id, "cloud", "", false, "");
        self.ca = own;
        self.nodes.get_mut(id).unwrap()
    }

    /// Adds and starts an edge node owning `owns`; `extra` is appended to its config
    /// (connectors, settings).
    pub fn add_edge(&mut self, id: &str, owns: &[&str], extra: &str) -> &mut SandboxNode {
        let owns = owns
            .iter()
            .map(|o| format!("\"{o}\""))
            .collect::<Vec<_>>()
            .join(", ");
        self.add(id, "edge", &format!("owns = [{owns}]\n"), true, extra)
    }

    /// Adds and starts a cloud node; `cluster_extra` is appended to its `[cluster]`
    /// table (planners).
    pub fn add_cloud(&mut self, id: &str, cluster_extra: &str) -> &mut SandboxNode {
        self.add(id, "cloud", cluster_extra, false, "")
    }

    /// Adds and starts a cloud node with `extra` appended to its config (outside its
    /// `[cluster]` table, e.g. `[models]`).
    pub fn add_cloud_with(&mut self, id: &str, extra: &str) -> &mut SandboxNode {
        self.add(id, "cloud", "", false, extra)
    }

    /// Adds and starts an edge node whose peers reach its NodeService through a
    /// [`PartitionProxy`] the test controls.
    pub async fn add_edge_behind_proxy(
        &mut self,
        id: &str,
        owns: &[&str],
        extra: &str,
    ) -> PartitionProxy {
        let owns = owns
            .iter()
            .map(|o| format!("\"{o}\""))
            .collect::<Vec<_>>()
            .join(", ");
        self.add_behind_proxy(id, "edge", &format!("owns = [{owns}]\n"), true, extra)
            .await
    }

    /// Adds and starts a cloud node whose peers reach its NodeService through a
    /// [`PartitionProxy`] the test controls.
    pub async fn add_cloud_behind_proxy(
        &mut self,
        id: &str,
        cluster_extra: &str,
    ) -> PartitionProxy {
        self.add_behind_proxy(id, "cloud", cluster_extra, false, "")
            .await
    }

    async fn add_behind_proxy(
        &mut self,
        id: &str,
        role: &str,
        cluster_extra: &str,
        hosts: bool,
        extra: &str,
    ) -> PartitionProxy {
        let node_addr: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
        let proxy = PartitionProxy::start(node_addr).await;
        let cluster_extra = format!("advertise = \"{}\"\n{cluster_extra}", proxy.addr);
        self.add_at(id, role, &cluster_extra, hosts, extra, node_addr);
        proxy
    }

    /// Adds a node of another cluster id that seeds from this sandbox.
    pub fn add_foreign(&mut self, id: &str, cluster_id: &str) -> &mut SandboxNode {
        let own = std::mem::replace(&mut self.cluster_id, cluster_id.to_string());
        self.add(id, "cloud", "", false, "");
        self.cluster_id = own;
        self.nodes.get_mut(id).unwrap()
    }

    fn add(
        &mut self,
        id: &str,
        role: &str,
        cluster_extra: &str,
        hosts: bool,
        extra: &str,
    ) -> &mut SandboxNode {
        let node_addr: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
        self.add_at(id, role, cluster_extra, hosts, extra, node_addr)
    }

    fn add_at(
        &mut self,
        id: &str,
        role: &str,
        cluster_extra: &str,
        hosts: bool,
        extra: &str,
        node_addr: SocketAddr,
    ) -> &mut SandboxNode {
        let api: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
        let http: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
        let gossip: SocketAddr = format!("127.0.0.1:{}", free_udp_port()).parse().unwrap();
        let seeds = match self.seed {
            Some(seed) => format!("[\"{seed}\"]"),
            None => "[]".to_string(),
        };
        self.seed.get_or_insert(gossip);
        let plant = if hosts {
            "plant = \"plant.toml\"\n"
        } else {
            ""
        };
        let tls = self
            .ca
            .as_ref()
            .map(|ca| ca.issue(self.dir.path(), id))
            .unwrap_or_default();
        let gossip_keys = if self.gossip_keys.is_empty() {
            String::new()
        } else {
            let quoted: Vec<String> = self
                .gossip_keys
                .iter()
                .map(|path| format!("{:?}", path.display().to_string()))
                .collect();
            format!("gossip_keys = [{}]", quoted.join(", "))
        };
        let config = format!(
            r#"[node]
data_dir = "data-{id}"
types = "types.toml"
{plant}
[settings.journal]
batch_interval_ms = 2

[api]
listen = "{api}"
tokens = [
  {{ name = "admin", token = "{ADMIN_TOKEN}", role = "admin" }},
  {{ name = "fleet-script", token = "{PLANNER_TOKEN}", role = "planner" }},
]
http = {{ listen = "{http}" }}

{extra}

[cluster]
id = "{cluster}"
node_id = "{id}"
role = "{role}"
listen = "{node_addr}"
gossip = "{gossip}"
seeds = {seeds}
{gossip_keys}
{cluster_extra}
{tls}
"#,
            cluster = self.cluster_id,
        );
        let path = self.dir.path().join(format!("{id}.toml"));
        std::fs::write(&path, config).unwrap();
        let mut node = SandboxNode {
            id: id.to_string(),
            config: path,
            api,
            http,
            child: None,
            output: Arc::default(),
        };
        spawn(&mut node);
        self.nodes.insert(id.to_string(), node);
        self.nodes.get_mut(id).unwrap()
    }

    /// A node by id.
    pub fn node(&self, id: &str) -> &SandboxNode {
        &self.nodes[id]
    }

    /// A node by id, to check whether it runs.
    pub fn node_mut(&mut self, id: &str) -> &mut SandboxNode {
        self.nodes.get_mut(id).unwrap()
    }

    /// Waits until every running node sees `n` live members.
    pub async fn wait_live(&mut self, n: usize, timeout: Duration) {
        let start = Instant::now();
        loop {
            let mut all = true;
            for node in self.nodes.values_mut() {
                if node.running() && node.live() != n {
                    all = false;
                }
            }
            if all {
                return;
            }
            if start.elapsed() > timeout {
                let report: Vec<String> = self
                    .nodes
                    .values()
                    .map(|n| format!("--- {} sees {} live:\n{}", n.id, n.live(), n.output()))
                    .collect();
                panic!("not {n} live after {timeout:?}\n{}", report.join("\n"));
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Kills a node with SIGKILL.
    pub fn kill(&mut self, id: &str) {
        let node = self.nodes.get_mut(id).unwrap();
        if let Some(mut child) = node.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Stalls a node's process (SIGSTOP): it holds its sockets and answers nothing.
    pub fn pause(&self, id: &str) {
        let child = self.nodes[id].child.as_ref().expect("a running node");
        doppel_testkit::process::signal(child.id(), "STOP");
    }

    /// Lets a stalled node run on (SIGCONT).
    pub fn resume(&self, id: &str) {
        let child = self.nodes[id].child.as_ref().expect("a running node");
        doppel_testkit::process::signal(child.id(), "CONT");
    }

    /// Starts a killed or stopped node again with the same config and ports.
    pub fn restart(&mut self, id: &str) {
        let node = self.nodes.get_mut(id).unwrap();
        assert!(node.child.is_none(), "{id} is still running");
        spawn(node);
    }

    /// A client of a node's public API with the admin token.
    pub async fn client(&self, id: &str) -> Client {
        self.client_with(id, ADMIN_TOKEN).await
    }

    /// A client of a node's public API with `token`.
    pub async fn client_with(&self, id: &str, token: &str) -> Client {
        let (channel, bearer) = self.channel(id, token).await;
        TwinServiceClient::with_interceptor(channel, bearer)
    }

    /// A client of a node's ModelService with the admin token.
    pub async fn models(&self, id: &str) -> ModelClient {
        let (channel, bearer) = self.channel(id, ADMIN_TOKEN).await;
        ModelServiceClient::with_interceptor(channel, bearer)
    }

    /// A channel to a node's public API, once it answers, and `token` as a bearer.
    async fn channel(&self, id: &str, token: &str) -> (Channel, Bearer) {
        let addr = self.nodes[id].api;
        let channel = tokio::time::timeout(Duration::from_secs(20), async {
            loop {
                match Channel::from_shared(format!("http://{addr}"))
                    .unwrap()
                    .connect()
                    .await
                {
                    Ok(channel) => return channel,
                    Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
                }
            }
        })
        .await
        .unwrap_or_else(|_| {
            panic!(
                "{id}'s API at {addr} never answered:\n{}",
                self.nodes[id].output()
            )
        });
        (channel, Bearer(format!("Bearer {token}").parse().unwrap()))
    }
}

impl Drop for Sandbox {
    fn drop(&mut self) {
        for node in self.nodes.values_mut() {
            if let Some(mut child) = node.child.take() {
                let _ = child.kill();
                let _ = child.wait();
            }
        }
    }
}

fn spawn(node: &mut SandboxNode) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_doppel"))
        .args(["node", "--config"])
        .arg(&node.config)
        .env("RUST_LOG", "info,chitchat=warn")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let stderr = child.stderr.take().unwrap();
    for (stream, tag) in [
        (Box::new(stdout) as Box<dyn std::io::Read + Send>, ""),
        (Box::new(stderr), "! "),
    ] {
        let output = node.output.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stream).lines().map_while(Result::ok) {
                output.lock().push(format!("{tag}{line}"));
            }
        });
    }
    node.child = Some(child);
}
