//! The OPC UA connector against a real async-opcua server in this process, on
//! loopback: values in, writes and method calls out, certificate trust, a server
//! replaced on the same port, and bad input.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use doppel::connectors::DropKind;
use doppel::connectors::opcua::{OpcUaConfig, OpcUaConnector, OpcUaError, OpcUaHandle};
use doppel::{
    AuditKind, ChannelCondition, Command, Delivery, DeliveryState, Origin, Quality, Runtime,
    Sample, Severity, Timestamp, Value, Verdict,
};
use opcua::core::config::Config;
use opcua::crypto::{CertificateStore, SecurityPolicy, X509Data};
use opcua::server::address_space::{MethodBuilder, ObjectBuilder, VariableBuilder};
use opcua::server::diagnostics::NamespaceMetadata;
use opcua::server::node_manager::memory::{SimpleNodeManager, simple_node_manager};
use opcua::server::{ANONYMOUS_USER_TOKEN_ID, ServerBuilder, ServerHandle, ServerUserToken};
use opcua::types::{
    ApplicationDescription, DataEncoding, DataTypeId, DataValue, DateTime, MessageSecurityMode,
    NodeId, NumericRange, ObjectId, StatusCode, TimestampsToReturn, Variant,
};
use tokio::net::TcpListener;
use tokio::sync::OnceCell;
use tokio::task::JoinHandle;

use crate::support::{self, press, wait_until};

const WAIT: Duration = Duration::from_secs(10);
const NAMESPACE: &str = "urn:doppel:test:press-line";
const USER: &str = "doppel";
const PASSWORD: &str = "line-1-secret";

/// Method calls the server received: method name and arguments.
type Calls = Arc<Mutex<Vec<(String, Vec<Variant>)>>>;

/// An OPC UA server standing in for press-1's controller.
pub(crate) struct Plc {
    handle: ServerHandle,
    task: JoinHandle<Result<(), String>>,
    pub(crate) manager: Arc<SimpleNodeManager>,
    namespace: u16,
    port: u16,
    calls: Calls,
}

impl Plc {
    /// Starts a server on 127.0.0.1:`port` (0 for any free port) with its PKI under
    /// `pki`, offering the secure endpoints and, if `insecure`, one without security.
    /// With `trust_clients` unknown client certificates are accepted; without, they are
    /// put in the server's `rejected/` folder for an administrator.
    pub(crate) async fn start(pki: &Path, port: u16, insecure: bool, trust_clients: bool) -> Plc {
        let listener = bind(port).await;
        let port = listener.local_addr().unwrap().port();
        let url = format!("opc.tcp://127.0.0.1:{port}/");
        let tokens: &[&str] = &[ANONYMOUS_USER_TOKEN_ID, USER];
        let mut builder = ServerBuilder::new()
            .application_name("press-1 controller")
            .application_uri("urn:doppel:test:press-1-controller")
            .product_uri("urn:doppel:test")
            .host("127.0.0.1")
            .port(port)
            .pki_dir(pki)
            .create_sample_keypair(true)
            .trust_client_certs(trust_clients)
            .discovery_urls(vec![url])
            .add_user_token(USER, ServerUserToken::user_pass(USER, PASSWORD))
            .add_endpoint(
                "basic256sha256",
                (
                    "/",
                    SecurityPolicy::Basic256Sha256,
                    MessageSecurityMode::SignAndEncrypt,
                    tokens,
                ),
            )
            .add_endpoint(
                "aes256sha256rsapss",
                (
                    "/",
                    SecurityPolicy::Aes256Sha256RsaPss,
                    MessageSecurityMode::Sign,
                    tokens,
                ),
            )
            .with_node_manager(simple_node_manager(
                NamespaceMetadata {
                    namespace_uri: NAMESPACE.to_string(),
                    ..Default::default()
                },
                "press-line",
            ));
        if insecure {
            builder = builder.add_endpoint(
                "none",
                ("/", SecurityPolicy::None, MessageSecurityMode::None, tokens),
            );
        }
        install(
            server_keys(builder.config().application_description()).await,
            pki,
        );
        let (server, handle) = builder.build().unwrap();
        let manager = handle
            .node_managers()
            .get_of_type::<SimpleNodeManager>()
            .unwrap();
        let namespace = handle.get_namespace_index(NAMESPACE).unwrap();
        assert_eq!(namespace, 2, "the connector config names ns=2");
        let calls = Calls::default();
        populate(&manager, namespace, &calls);
        let task = tokio::spawn(server.run_with(listener));
        Plc {
            handle,
            task,
            manager,
            namespace,
            port,
            calls,
        }
    }

    pub(crate) fn endpoint(&self) -> String {
        format!("opc.tcp://127.0.0.1:{}/", self.port)
    }

    pub(crate) fn node(&self, name: &str) -> NodeId {
        NodeId::new(self.namespace, name)
    }

    /// Sets a variable as the controller would, notifying subscribers.
    pub(crate) fn set(&self, name: &str, value: DataValue) {
        self.manager
            .set_value(self.handle.subscriptions(), &self.node(name), None, value)
            .unwrap();
    }

    /// A variable's current value.
    pub(crate) fn value(&self, name: &str) -> Option<Variant> {
        let space = self.manager.address_space().read();
        let opcua::server::address_space::NodeType::Variable(variable) =
            space.find(&self.node(name))?
        else {
            return None;
        };
        variable
            .value(
                TimestampsToReturn::Neither,
                &NumericRange::None,
                &DataEncoding::Binary,
                0.0,
            )
            .value
    }

    pub(crate) fn calls(&self) -> Vec<(String, Vec<Variant>)> {
        self.calls.lock().unwrap().clone()
    }

    /// Records every value written to a variable (which then keeps its value).
    fn record_writes(&self, name: &str) -> Arc<Mutex<Vec<Variant>>> {
        let writes: Arc<Mutex<Vec<Variant>>> = Arc::default();
        let sink = writes.clone();
        self.manager
            .inner()
            .add_write_callback(self.node(name), move |value, _| {
                sink.lock().unwrap().extend(value.value);
                StatusCode::Good
            });
        writes
    }

    /// Stops the server and waits until its port is free.
    pub(crate) async fn stop(self) {
        self.handle.cancel();
        tokio::time::timeout(WAIT, self.task)
            .await
            .expect("server stops")
            .unwrap()
            .unwrap();
    }
}

/// A certificate (DER) and its private key (PEM).
struct KeyPair {
    certificate: Vec<u8>,
    private_key: Vec<u8>,
}

/// The servers' key pair, made once per test binary: generating an RSA key takes
/// seconds in a debug build. Every test server has the same application description.
async fn server_keys(description: ApplicationDescription) -> &'static KeyPair {
    static KEYS: OnceCell<KeyPair> = OnceCell::const_new();
    KEYS.get_or_init(|| async move {
        tokio::task::spawn_blocking(move || {
            let dir = tempfile::tempdir().unwrap();
            let (certificate, private_key) =
                (dir.path().join("cert.der"), dir.path().join("key.pem"));
            CertificateStore::create_certificate_and_key(
                &X509Data::from(description),
                true,
                &certificate,
                &private_key,
            )
            .unwrap();
            KeyPair {
                certificate: std::fs::read(certificate).unwrap(),
                private_key: std::fs::read(private_key).unwrap(),
            }
        })
        .await
        .unwrap()
    })
    .await
}

/// Puts a key pair where a server's certificate store looks for its own.
fn install(keys: &KeyPair, pki: &Path) {
    for (file, bytes) in [
        ("own/cert.der", &keys.certificate),
        ("private/private.pem", &keys.private_key),
    ] {
        let path = pki.join(file);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, bytes).unwrap();
    }
}

/// Binds a loopback listener, retrying while a stopped server's port is released.
async fn bind(port: u16) -> TcpListener {
    let address = SocketAddr::from(([127, 0, 0, 1], port));
    let mut last_error = None;
    for _ in 0..50 {
        match TcpListener::bind(address).await {
            Ok(listener) => return listener,
            Err(error) => last_error = Some(error),
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("cannot bind {address}: {last_error:?}");
}

/// Press1 with a temperature and a vibration (Double), a mode text (String), a speed
/// setpoint (Double) and a running flag (Boolean) that can be written, and two methods:
/// Stop() and Ramp(rpm: Float).
fn populate(manager: &SimpleNodeManager, ns: u16, calls: &Calls) {
    let press = NodeId::new(ns, "Press1");
    {
        let mut space = manager.address_space().write();
        ObjectBuilder::new(&press, "Press1", "Press1")
            .organized_by(ObjectId::ObjectsFolder)
            .insert(&mut *space);
        let variables: [(&str, Variant, DataTypeId, bool); 5] = [
            (
                "Press1.Temperature",
                Variant::Double(20.0),
                DataTypeId::Double,
                false,
            ),
            (
                "Press1.Vibration",
                Variant::Double(1.0),
                DataTypeId::Double,
                false,
            ),
            (
                "Press1.Mode",
                Variant::from("idle"),
                DataTypeId::String,
                false,
            ),
            (
                "Press1.Speed",
                Variant::Double(1200.0),
                DataTypeId::Double,
                true,
            ),
            (
                "Press1.Running",
                Variant::Boolean(true),
                DataTypeId::Boolean,
                true,
            ),
        ];
        for (name, value, data_type, writable) in variables {
            let mut variable = VariableBuilder::new(&NodeId::new(ns, name), name, name)
                .data_type(data_type)
                .value(value)
                .component_of(press.clone());
            if writable {
                variable = variable.writable();
            }
            assert!(variable.insert(&mut *space), "{name} inserted");
        }
        for (name, args) in [
            ("Press1.Stop", None),
            ("Press1.Ramp", Some(("rpm", DataTypeId::Float))),
        ] {
            let method_id = NodeId::new(ns, name);
            let mut method = MethodBuilder::new(&method_id, name, name).component_of(press.clone());
            if let Some(arg) = args {
                method = method.input_args(
                    &mut *space,
                    &NodeId::new(ns, format!("{name}.InputArguments")),
                    &[arg.into()],
                );
            }
            method.insert(&mut *space);
        }
    }
    for name in ["Press1.Stop", "Press1.Ramp"] {
        let calls = calls.clone();
        manager
            .inner()
            .add_method_callback(NodeId::new(ns, name), move |args| {
                calls
                    .lock()
                    .unwrap()
                    .push((name.to_string(), args.to_vec()));
                Ok(Vec::new())
            });
    }
}

/// The connector's config: press-1's temperature, vibration and (wrongly typed) mode
/// monitored, speed and running written, stop and set_speed calling methods.
fn config(endpoint: &str, security: &str, extra: &str) -> OpcUaConfig {
    OpcUaConfig::from_toml(&config_text(endpoint, security, extra))
        .unwrap()
        .remove(0)
}

/// The text of [`config`].
fn config_text(endpoint: &str, security: &str, extra: &str) -> String {
    format!(
        r#"
        [[opcua]]
        name = "press-line"
        endpoint = "{endpoint}"
        {security}
        reconnect = {{ initial_ms = 100, max_ms = 400 }}
        publishing_ms = 50
        keep_alive_ms = 1000
        {extra}

        [[opcua.asset]]
        path = "acme/plant-a/line-1/press-1"
        channels = [
            {{ channel = "temperature", node = "ns=2;s=Press1.Temperature", sampling_ms = 50 }},
            {{ channel = "vibration", node = "ns=2;s=Press1.Vibration", sampling_ms = 50, deadband = 0.5 }},
            {{ channel = "throughput", node = "ns=2;s=Press1.Mode", sampling_ms = 50 }},
        ]
        writes = [
            {{ desired = "speed", node = "ns=2;s=Press1.Speed" }},
            {{ desired = "running", node = "ns=2;s=Press1.Running" }},
        ]
        methods = [
            {{ command = "stop", object = "ns=2;s=Press1", method = "ns=2;s=Press1.Stop" }},
            {{ command = "set_speed", object = "ns=2;s=Press1", method = "ns=2;s=Press1.Ramp", args = [{{ param = "rpm", type = "Float" }}] }},
        ]
        "#
    )
}

const INSECURE: &str =
    "security_policy = \"None\"\nsecurity_mode = \"None\"\nallow_insecure = true";

async fn sample(runtime: &Runtime, channel: &str) -> Option<Sample> {
    let report = runtime.twins().report(&press(1)).await.unwrap();
    report
        .reported
        .iter()
        .find(|reported| reported.channel == channel)
        .and_then(|reported| reported.sample)
}

async fn condition(runtime: &Runtime, channel: &str) -> Option<ChannelCondition> {
    let report = runtime.twins().report(&press(1)).await.unwrap();
    report
        .reported
        .into_iter()
        .find(|reported| reported.channel == channel)
        .and_then(|reported| reported.condition)
}

async fn value_of(runtime: &Runtime, channel: &str) -> Option<f64> {
    sample(runtime, channel).await.map(|sample| sample.value)
}

async fn command(runtime: &Runtime, command: Command) {
    let outcome = runtime.twins().command(command).await.unwrap();
    assert_eq!(outcome.verdict, Verdict::Accepted);
}

/// Copies a server's own certificate into a client PKI's trust list, named as the
/// certificate store expects.
fn trust(server_pki: &Path, client_pki: &Path) {
    let certificate = CertificateStore::read_cert(&server_pki.join("own/cert.der")).unwrap();
    let trusted = client_pki.join("trusted");
    std::fs::create_dir_all(&trusted).unwrap();
    std::fs::copy(
        server_pki.join("own/cert.der"),
        trusted.join(CertificateStore::cert_file_name(&certificate)),
    )
    .unwrap();
}

/// The files in a directory.
fn files_in(dir: &Path) -> Vec<PathBuf> {
    std::fs::read_dir(dir)
        .map(|entries| entries.flatten().map(|entry| entry.path()).collect())
        .unwrap_or_default()
}

/// Basic256Sha256 with SignAndEncrypt, a user name and password, and explicit trust on
/// both sides: the server's certificate is in the connector's trust list before it
/// starts; the connector's own certificate, created on first start, is first rejected
/// by the server and then moved to its trust list by an "administrator". Values flow
/// to the twin; commands become writes and method calls.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn signed_and_encrypted_session_carries_values_and_commands() {
    tokio::time::timeout(Duration::from_secs(60), async {
        let dir = tempfile::tempdir().unwrap();
        let server_pki = dir.path().join("server-pki");
        let client_pki = dir.path().join("client-pki");
        let plc = Plc::start(&server_pki, 0, false, false).await;
        trust(&server_pki, &client_pki);
        let runtime = support::start(&dir.path().join("node")).await;
        let extra = format!(
            "pki_dir = \"{}\"\nuser = \"{USER}\"\npassword = \"{PASSWORD}\"",
            client_pki.display()
        );
        let connector = OpcUaConnector::start(
            config(
                &plc.endpoint(),
                "security_policy = \"Basic256Sha256\"\nsecurity_mode = \"SignAndEncrypt\"",
                &extra,
            ),
            runtime.twins().clone(),
            dir.path(),
        )
        .await
        .unwrap();
        assert!(client_pki.join("own/cert.der").is_file());
        assert!(client_pki.join("private/private.pem").is_file());
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = |path: &Path| std::fs::metadata(path).unwrap().permissions().mode() & 0o777;
            assert_eq!(mode(&client_pki.join("private")), 0o700);
            assert_eq!(mode(&client_pki.join("private/private.pem")), 0o600);
        }

        // The server does not know the connector yet: it files the certificate under
        // rejected/, and an administrator moves it to trusted/.
        let rejected = server_pki.join("rejected");
        wait_until("the server rejects the unknown client", WAIT, || {
            let rejected = rejected.clone();
            async move { !files_in(&rejected).is_empty() }
        })
        .await;
        assert!(!connector.connected());
        std::fs::create_dir_all(server_pki.join("trusted")).unwrap();
        for file in files_in(&rejected) {
            std::fs::rename(
                &file,
                server_pki.join("trusted").join(file.file_name().unwrap()),
            )
            .unwrap();
        }
        assert!(
            connector.wait_connected(WAIT).await,
            "connector did not connect"
        );
        assert_eq!(connector.connection().monitored_items, 3);

        plc.set("Press1.Temperature", DataValue::new_now(61.5));
        wait_until("the twin follows the temperature", WAIT, || async {
            value_of(&runtime, "temperature").await == Some(61.5)
        })
        .await;
        let reading = sample(&runtime, "temperature").await.unwrap();
        assert_eq!(reading.quality, Quality::Good);
        assert!(
            reading.source_time.as_micros() as u64 == reading.seq,
            "seq is the source time in microseconds"
        );

        // Asked 2800 rpm, the envelope clamps to 2400: the write and the method call
        // carry 2400, never the value as requested.
        let outcome = runtime
            .twins()
            .command(
                Command::new(press(1), "set_speed", Origin::operator("ann"))
                    .param("rpm", Value::Float(2800.0)),
            )
            .await
            .unwrap();
        assert!(
            matches!(&outcome.verdict, Verdict::Clamped { clamps } if clamps[0].applied == Value::Float(2400.0)),
            "{:?}",
            outcome.verdict
        );
        wait_until("the clamped speed setpoint is written", WAIT, || async {
            plc.value("Press1.Speed") == Some(Variant::Double(2400.0))
        })
        .await;
        wait_until("the ramp method is called with the clamped value", WAIT, || async {
            plc.calls()
                .contains(&("Press1.Ramp".to_string(), vec![Variant::Float(2400.0)]))
        })
        .await;
        assert!(
            !plc.calls()
                .iter()
                .any(|(_, args)| args.contains(&Variant::Float(2800.0))),
            "the requested value never reaches the machine: {:?}",
            plc.calls()
        );

        command(
            &runtime,
            Command::new(press(1), "stop", Origin::operator("ann")),
        )
        .await;
        wait_until(
            "running is written false and stop is called",
            WAIT,
            || async {
                plc.value("Press1.Running") == Some(Variant::Boolean(false))
                    && plc
                        .calls()
                        .iter()
                        .any(|(method, _)| method == "Press1.Stop")
            },
        )
        .await;
        // The server records a write or call before its reply reaches the connector,
        // which counts it then.
        wait_until(
            "the connector counts both writes and calls",
            WAIT,
            || async {
                let counts = connector.actuations();
                counts.writes >= 2 && counts.calls >= 2
            },
        )
        .await;
        let counts = connector.actuations();
        assert_eq!((counts.writes, counts.write_failures), (2, 0), "{counts:?}");
        assert_eq!((counts.calls, counts.call_failures), (2, 0), "{counts:?}");

        connector.stop().await;
        plc.stop().await;
        runtime.shutdown().await;
    })
    .await
    .expect("test finished in time");
}

/// Aes256Sha256RsaPss with Sign only, trusting the server's certificate on first use:
/// it lands in the connector's trust list and values flow.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn signed_session_trusts_the_server_on_first_use_when_told_to() {
    tokio::time::timeout(Duration::from_secs(60), async {
        let dir = tempfile::tempdir().unwrap();
        let plc = Plc::start(&dir.path().join("server-pki"), 0, false, true).await;
        let runtime = support::start(&dir.path().join("node")).await;
        let connector = OpcUaConnector::start(
            config(
                &plc.endpoint(),
                "security_policy = \"Aes256Sha256RsaPss\"\nsecurity_mode = \"Sign\"",
                "trust_server_certificate = true",
            ),
            runtime.twins().clone(),
            dir.path(),
        )
        .await
        .unwrap();
        assert!(
            connector.wait_connected(WAIT).await,
            "connector did not connect"
        );
        let pki = dir.path().join("opcua/press-line/pki");
        assert_eq!(
            files_in(&pki.join("trusted")).len(),
            1,
            "server certificate trusted"
        );

        plc.set("Press1.Temperature", DataValue::new_now(48.25));
        wait_until("the twin follows the temperature", WAIT, || async {
            value_of(&runtime, "temperature").await == Some(48.25)
        })
        .await;

        connector.stop().await;
        plc.stop().await;
        runtime.shutdown().await;
    })
    .await
    .expect("test finished in time");
}

/// The server goes away and a new one starts on the same port: the connector
/// reconnects with backoff and re-creates its subscription, and values set on the new
/// server reach the twin. An actuation while disconnected is counted, not queued.
/// A desired value's delivery as the twin holds it.
async fn delivery(runtime: &Runtime, desired: &str) -> Delivery {
    let report = runtime.twins().report(&press(1)).await.unwrap();
    report
        .desired
        .into_iter()
        .find(|(name, _)| name == desired)
        .map(|(_, value)| value.delivery)
        .unwrap()
}

/// Waits until `desired`'s delivery is in `state`; returns it.
async fn delivery_reaches(runtime: &Runtime, desired: &str, state: DeliveryState) -> Delivery {
    let mut last = None;
    let reached = tokio::time::timeout(WAIT, async {
        loop {
            let now = delivery(runtime, desired).await;
            if now.state == state {
                return now;
            }
            last = Some(now);
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await;
    reached.unwrap_or_else(|_| panic!("{desired} never became {state}; last {last:?}"))
}

/// Stops press-1's controller the way it goes down: the port stays reserved so a new
/// controller can take it.
async fn reserved_port(pki: &Path) -> u16 {
    let plc = Plc::start(pki, 0, true, true).await;
    let port = plc.port;
    plc.stop().await;
    port
}

/// A command sent while the controller is down is `pending`, not failed; once a new
/// controller takes the port, the connector writes it exactly once (the server sees
/// one write and one Ramp call) and the twin shows it `delivered`. A command whose
/// deadline passed during the outage is never written, and fails. A safety action
/// that cannot be delivered raises a critical alarm, and is sent first, before any
/// command, when the controller is back; its delivery clears the alarm.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_command_during_a_plc_outage_is_pending_then_written_once() {
    tokio::time::timeout(Duration::from_secs(90), async {
        let dir = tempfile::tempdir().unwrap();
        let server_pki = dir.path().join("server-pki");
        let plc = Plc::start(&server_pki, 0, true, true).await;
        let port = plc.port;
        let mut settings = support::settings();
        settings.delivery.safety_bound_ms = 300;
        let runtime = support::start_with(&dir.path().join("node"), settings, |b| b).await;
        let twins = runtime.twins().clone();
        let connector = OpcUaConnector::start(
            config(&plc.endpoint(), INSECURE, ""),
            twins.clone(),
            dir.path(),
        )
        .await
        .unwrap();
        assert!(
            connector.wait_connected(WAIT).await,
            "connector did not connect"
        );
        assert_eq!(
            delivery(&runtime, "speed").await.state,
            DeliveryState::Initial
        );

        command(
            &runtime,
            Command::new(press(1), "set_speed", Origin::operator("ann"))
                .param("rpm", Value::Float(1000.0)),
        )
        .await;
        let delivered = delivery_reaches(&runtime, "speed", DeliveryState::Delivered).await;
        assert_eq!(delivered.by, "opcua:press-line");
        plc.set("Press1.Temperature", DataValue::new_now(64.0));
        wait_until("the controller's temperature arrives", WAIT, || async {
            value_of(&runtime, "temperature").await == Some(64.0)
        })
        .await;

        plc.stop().await;
        let mut state = connector.watch_connection();
        tokio::time::timeout(WAIT, state.wait_for(|state| !state.connected))
            .await
            .expect("the connector notices the server is gone")
            .unwrap();
        // What the controller reported is stale now, and says why.
        wait_until("the controller's channels go stale", WAIT, || async {
            condition(&runtime, "temperature").await.is_some_and(|c| {
                c.quality == Quality::Stale && c.reason.contains("lost its session")
            })
        })
        .await;

        command(
            &runtime,
            Command::new(press(1), "set_speed", Origin::operator("ann"))
                .param("rpm", Value::Float(900.0)),
        )
        .await;
        command(
            &runtime,
            Command::new(press(1), "stop", Origin::operator("ann"))
                .deadline(Timestamp::now().plus(Duration::from_millis(200))),
        )
        .await;
        let expired = delivery_reaches(&runtime, "running", DeliveryState::Failed).await;
        assert!(expired.reason.contains("deadline"), "{expired:?}");
        let pending = delivery(&runtime, "speed").await;
        assert_eq!(pending.state, DeliveryState::Pending, "{pending:?}");

        // Over-temperature on both sensors: the trip stops the press, and nothing can
        // carry the stop to the machine.
        let source = twins.source("test-bench").unwrap();
        for (seq, channel) in [(1, "temperature"), (2, "temperature_b")] {
            twins
                .ingest(&press(1), channel, support::reading(120.0, source, seq))
                .await
                .unwrap()
                .durable()
                .await
                .unwrap();
        }
        let safety = delivery_reaches(&runtime, "running", DeliveryState::Failed).await;
        assert!(safety.safety, "{safety:?}");
        let report = twins.report(&press(1)).await.unwrap();
        let alarm = report
            .alarms
            .iter()
            .find(|a| a.code == "undelivered:running")
            .expect("the undelivered safety action raises an alarm");
        assert_eq!(alarm.severity, Severity::Critical);

        let plc = Plc::start(&server_pki, port, true, true).await;
        let speed_writes = plc.record_writes("Press1.Speed");
        let running_writes = plc.record_writes("Press1.Running");
        tokio::time::timeout(
            WAIT,
            state.wait_for(|state| state.connected && state.sessions == 2),
        )
        .await
        .expect("the connector reconnects to the new server")
        .unwrap();
        wait_until("the controller's values are fresh again", WAIT, || async {
            condition(&runtime, "temperature").await.is_none()
        })
        .await;
        let speed = delivery_reaches(&runtime, "speed", DeliveryState::Delivered).await;
        let running = delivery_reaches(&runtime, "running", DeliveryState::Delivered).await;
        assert!(running.safety);
        assert_eq!(speed.by, "opcua:press-line");
        // Let any duplicate arrive before counting.
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert_eq!(
            speed_writes.lock().unwrap().clone(),
            vec![Variant::Double(900.0)]
        );
        assert_eq!(
            running_writes.lock().unwrap().clone(),
            vec![Variant::Boolean(false)]
        );
        let calls = plc.calls();
        assert_eq!(
            calls,
            vec![
                ("Press1.Stop".to_string(), Vec::new()),
                ("Press1.Ramp".to_string(), vec![Variant::Float(900.0)]),
            ],
            "the safety action first, the expired stop never"
        );
        let report = twins.report(&press(1)).await.unwrap();
        assert!(
            !report.has_alarm("undelivered:running"),
            "{:?}",
            report.alarms
        );
        let audit = twins
            .audit(
                &press(1),
                Timestamp::now().minus(Duration::from_secs(600)),
                Timestamp::now().plus(Duration::from_secs(60)),
                1000,
            )
            .unwrap();
        assert!(
            audit
                .iter()
                .any(|r| r.kind == AuditKind::Delivered
                    && r.reason == "delivered by opcua:press-line"),
            "every delivery outcome is audited"
        );
        assert!(audit.iter().any(|r| r.kind == AuditKind::DeliveryFailed));

        connector.stop().await;
        plc.stop().await;
        runtime.shutdown().await;
    })
    .await
    .expect("test finished in time");
}

/// A speed setpoint the machine reports back: after a controller restart that comes up
/// at its power-on speed, the twin sees that the machine disagrees with the delivered
/// value and the connector writes it again, once.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_machine_that_disagrees_after_a_restart_gets_its_setpoint_again() {
    tokio::time::timeout(Duration::from_secs(90), async {
        let dir = tempfile::tempdir().unwrap();
        let server_pki = dir.path().join("server-pki");
        let plc = Plc::start(&server_pki, 0, true, true).await;
        let port = plc.port;
        let types = support::types().replacen(
            "[types.press.desired.speed]\n",
            "[types.press.channels.speed]\nunit = \"rpm\"\nrange = [0.0, 3000.0]\n\n\
             [types.press.desired.speed]\nreported = \"speed\"\ntolerance = 5.0\n",
            1,
        );
        let runtime =
            support::start_custom(&dir.path().join("node"), &types, support::settings(), |b| b)
                .await;
        let text = config_text(&plc.endpoint(), INSECURE, "").replacen(
            "channels = [",
            "channels = [\n{ channel = \"speed\", node = \"ns=2;s=Press1.Speed\", sampling_ms = 50 },",
            1,
        );
        let config = OpcUaConfig::from_toml(&text).unwrap().remove(0);
        let connector = OpcUaConnector::start(config.clone(), runtime.twins().clone(), dir.path())
            .await
            .unwrap();
        assert!(connector.wait_connected(WAIT).await);
        command(
            &runtime,
            Command::new(press(1), "set_speed", Origin::operator("ann"))
                .param("rpm", Value::Float(1300.0)),
        )
        .await;
        delivery_reaches(&runtime, "speed", DeliveryState::Delivered).await;
        wait_until("the machine reports the setpoint back", WAIT, || async {
            agrees(&runtime).await == Some(true)
        })
        .await;

        plc.stop().await;
        // The new controller comes up at its power-on speed, 1200.
        let plc = Plc::start(&server_pki, port, true, true).await;
        let speed_writes = plc.record_writes("Press1.Speed");
        wait_until("the setpoint is written again", WAIT, || async {
            !speed_writes.lock().unwrap().is_empty()
        })
        .await;
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert_eq!(speed_writes.lock().unwrap().clone(), vec![Variant::Double(1300.0)]);
        let report = runtime.twins().report(&press(1)).await.unwrap();
        let (_, speed) = report.desired.iter().find(|(n, _)| n == "speed").unwrap();
        assert_eq!(speed.delivery.state, DeliveryState::Delivered);

        connector.stop().await;
        plc.stop().await;
        runtime.shutdown().await;
    })
    .await
    .expect("test finished in time");
}

/// Whether press-1's reported speed agrees with its desired speed.
async fn agrees(runtime: &Runtime) -> Option<bool> {
    let report = runtime.twins().report(&press(1)).await.unwrap();
    report
        .desired
        .iter()
        .find(|(name, _)| name == "speed")
        .and_then(|(_, value)| value.agrees)
}

/// A delivery pending when the node stops is pending after it starts again, and is
/// written exactly once when the controller comes up.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_delivery_pending_across_a_restart_is_written_once() {
    tokio::time::timeout(Duration::from_secs(90), async {
        let dir = tempfile::tempdir().unwrap();
        let server_pki = dir.path().join("server-pki");
        let port = reserved_port(&server_pki).await;
        let endpoint = format!("opc.tcp://127.0.0.1:{port}/");
        let node = dir.path().join("node");

        let runtime = support::start(&node).await;
        let connector = OpcUaConnector::start(
            config(&endpoint, INSECURE, ""),
            runtime.twins().clone(),
            dir.path(),
        )
        .await
        .unwrap();
        command(
            &runtime,
            Command::new(press(1), "set_speed", Origin::operator("ann"))
                .param("rpm", Value::Float(900.0))
                .deadline(Timestamp::now().plus(Duration::from_secs(600))),
        )
        .await;
        let pending = delivery(&runtime, "speed").await;
        assert_eq!(pending.state, DeliveryState::Pending);
        connector.stop().await;
        runtime.shutdown().await;

        let runtime = support::start(&node).await;
        let recovered = delivery(&runtime, "speed").await;
        assert_eq!(
            recovered, pending,
            "the pending delivery, its deadline included, survives"
        );
        let plc = Plc::start(&server_pki, port, true, true).await;
        let speed_writes = plc.record_writes("Press1.Speed");
        let connector = OpcUaConnector::start(
            config(&endpoint, INSECURE, ""),
            runtime.twins().clone(),
            dir.path(),
        )
        .await
        .unwrap();
        delivery_reaches(&runtime, "speed", DeliveryState::Delivered).await;
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert_eq!(
            speed_writes.lock().unwrap().clone(),
            vec![Variant::Double(900.0)]
        );
        assert_eq!(
            plc.calls(),
            vec![("Press1.Ramp".to_string(), vec![Variant::Float(900.0)])]
        );

        connector.stop().await;
        plc.stop().await;
        runtime.shutdown().await;
    })
    .await
    .expect("test finished in time");
}

/// A data change with a Bad status arrives with quality Bad; a Bad status without a
/// value marks the channel bad by name; a String variable mapped to a channel is
/// dropped as WrongType and leaves the twin alone.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn bad_status_is_bad_quality_and_strings_are_dropped() {
    tokio::time::timeout(Duration::from_secs(60), async {
        let dir = tempfile::tempdir().unwrap();
        let plc = Plc::start(&dir.path().join("server-pki"), 0, true, true).await;
        let runtime = support::start(&dir.path().join("node")).await;
        let connector = OpcUaConnector::start(
            config(&plc.endpoint(), INSECURE, ""),
            runtime.twins().clone(),
            dir.path(),
        )
        .await
        .unwrap();
        assert!(
            connector.wait_connected(WAIT).await,
            "connector did not connect"
        );
        let drops = connector.drops();

        // The initial value of the mode ("idle") is already a String.
        wait_until("the mode text is dropped", WAIT, || async {
            drops.count(DropKind::WrongType) >= 1
        })
        .await;
        plc.set("Press1.Mode", DataValue::new_now("running"));
        wait_until("the new mode text is dropped too", WAIT, || async {
            drops.count(DropKind::WrongType) >= 2
        })
        .await;

        let now = DateTime::now();
        plc.set(
            "Press1.Temperature",
            DataValue {
                value: Some(Variant::Double(70.0)),
                status: Some(StatusCode::BadSensorFailure),
                source_timestamp: Some(now),
                server_timestamp: Some(now),
                ..Default::default()
            },
        );
        wait_until("the bad reading arrives", WAIT, || async {
            value_of(&runtime, "temperature").await == Some(70.0)
        })
        .await;
        assert_eq!(
            sample(&runtime, "temperature").await.unwrap().quality,
            Quality::Bad
        );

        // A failure reported without a value (Part 4 §7.7.1): the channel is bad, by
        // the status's name, its last value kept; the next good reading lifts it.
        let failed_at = DateTime::now();
        plc.set(
            "Press1.Temperature",
            // A null Variant on the wire (the in-memory server drops the status of a
            // value that is absent altogether).
            DataValue {
                value: Some(Variant::Empty),
                status: Some(StatusCode::BadSensorFailure),
                source_timestamp: Some(failed_at),
                server_timestamp: Some(failed_at),
                ..Default::default()
            },
        );
        wait_until("the failure marks the channel bad", WAIT, || async {
            condition(&runtime, "temperature")
                .await
                .is_some_and(|c| c.quality == Quality::Bad && c.reason == "BadSensorFailure")
        })
        .await;
        let report = runtime.twins().report(&press(1)).await.unwrap();
        assert!(
            report.alarms.iter().any(|a| a.code == "bad:temperature"),
            "{:?}",
            report.alarms
        );
        assert_eq!(value_of(&runtime, "temperature").await, Some(70.0));
        plc.set("Press1.Temperature", DataValue::new_now(71.5));
        wait_until("a new reading lifts it", WAIT, || async {
            sample(&runtime, "temperature")
                .await
                .is_some_and(|s| s.value == 71.5 && s.quality == Quality::Good)
        })
        .await;
        assert_eq!(condition(&runtime, "temperature").await, None);

        plc.set(
            "Press1.Vibration",
            DataValue::new_now_status(2.0, StatusCode::UncertainSensorNotAccurate),
        );
        wait_until("the uncertain reading arrives", WAIT, || async {
            sample(&runtime, "vibration")
                .await
                .is_some_and(|s| s.value == 2.0 && s.quality == Quality::Uncertain)
        })
        .await;

        assert_eq!(value_of(&runtime, "throughput").await, None);
        assert_eq!(
            drops.total(),
            drops.count(DropKind::WrongType),
            "{:?}",
            drops.snapshot()
        );

        connector.stop().await;
        plc.stop().await;
        runtime.shutdown().await;
    })
    .await
    .expect("test finished in time");
}

/// Configuration errors are typed and name what is wrong, before anything connects.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_configurations_are_refused_at_start() {
    tokio::time::timeout(Duration::from_secs(30), async {
        let dir = tempfile::tempdir().unwrap();
        // `calibrate` takes a parameter that sets no desired value.
        let types = format!(
            "{}\n[types.press.commands.calibrate]\nparams.offset = {{ type = \"float\", min = -1, max = 1 }}\n",
            support::types()
        );
        let runtime =
            support::start_custom(dir.path(), &types, support::settings(), |builder| builder)
                .await;
        let start = |config: OpcUaConfig| {
            let twins = runtime.twins().clone();
            let dir = dir.path().to_path_buf();
            async move {
                OpcUaConnector::start(config, twins, &dir)
                    .await
                    .map(|_running: OpcUaHandle| ())
            }
        };
        let endpoint = "opc.tcp://127.0.0.1:4840/";

        let insecure = config(
            endpoint,
            "security_policy = \"None\"\nsecurity_mode = \"None\"",
            "",
        );
        let error = start(insecure).await.unwrap_err();
        assert!(
            matches!(error, OpcUaError::InsecureEndpoint { .. }),
            "{error}"
        );
        assert!(error.to_string().contains("allow_insecure"), "{error}");

        let mut unknown_channel = config(endpoint, INSECURE, "");
        unknown_channel.assets[0].channels[0].channel = "pressure".to_string();
        let error = start(unknown_channel).await.unwrap_err();
        assert!(
            matches!(&error, OpcUaError::UnknownChannel { asset, channel, .. }
                if *asset == press(1) && channel == "pressure"),
            "{error}"
        );

        let mut unknown_asset = config(endpoint, INSECURE, "");
        unknown_asset.assets[0].path = support::path("acme/plant-a/line-9/press-9");
        let error = start(unknown_asset).await.unwrap_err();
        assert!(matches!(error, OpcUaError::UnknownAsset { .. }), "{error}");

        let mut bad_node = config(endpoint, INSECURE, "");
        bad_node.assets[0].writes[0].node = "ns=two;s=Speed".to_string();
        let error = start(bad_node).await.unwrap_err();
        assert!(
            matches!(&error, OpcUaError::InvalidNodeId { node, .. } if node == "ns=two;s=Speed"),
            "{error}"
        );

        let mut unknown_param = config(endpoint, INSECURE, "");
        unknown_param.assets[0].methods[1].args[0] =
            doppel::connectors::opcua::MethodArg::Param("torque".to_string());
        let error = start(unknown_param).await.unwrap_err();
        assert!(matches!(error, OpcUaError::UnknownParam { .. }), "{error}");

        // A parameter that sets no desired value is reviewed by no governor: it cannot
        // become a method argument.
        let mut ungoverned = config(endpoint, INSECURE, "");
        ungoverned.assets[0].methods[1].command = "calibrate".to_string();
        ungoverned.assets[0].methods[1].args[0] =
            doppel::connectors::opcua::MethodArg::Param("offset".to_string());
        let error = start(ungoverned).await.unwrap_err();
        assert!(
            matches!(&error, OpcUaError::UngovernedParam { command, param, .. }
                if command == "calibrate" && param == "offset"),
            "{error}"
        );

        runtime.shutdown().await;
    })
    .await
    .expect("test finished in time");
}

/// A node config (types, plant, one OPC UA connector with `security`) in `dir`.
fn node_config(dir: &Path, endpoint: &str, security: &str) -> PathBuf {
    std::fs::write(dir.join("types.toml"), support::types()).unwrap();
    std::fs::write(dir.join("plant.toml"), support::PLANT).unwrap();
    let text = format!(
        "[node]\ndata_dir = \"data\"\ntypes = \"types.toml\"\nplant = \"plant.toml\"\n{}",
        config_text(endpoint, security, "")
    );
    let path = dir.join("node.toml");
    std::fs::write(&path, text).unwrap();
    path
}

/// Runs the `doppel` binary with `args`; returns its exit status and its output.
pub(crate) async fn doppel(args: Vec<std::ffi::OsString>) -> std::process::Output {
    tokio::task::spawn_blocking(move || {
        std::process::Command::new(env!("CARGO_BIN_EXE_doppel"))
            .args(args)
            .output()
            .unwrap()
    })
    .await
    .unwrap()
}

/// A security mismatch says what the server offers. Then, in one step, `doppel opcua
/// trust` shows the certificate a server presents and trusts it: the copy a refused
/// connection left in `rejected/` is gone, and the waiting connector connects.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn doppel_opcua_trust_shows_the_thumbprint_and_the_connector_connects() {
    tokio::time::timeout(Duration::from_secs(120), async {
        let dir = tempfile::tempdir().unwrap();
        let server_pki = dir.path().join("server-pki");
        let plc = Plc::start(&server_pki, 0, false, true).await;
        let thumbprint = CertificateStore::read_cert(&server_pki.join("own/cert.der"))
            .unwrap()
            .thumbprint()
            .as_hex_string();

        let mismatched = node_config(
            dir.path(),
            &plc.endpoint(),
            "security_policy = \"Aes256Sha256RsaPss\"\nsecurity_mode = \"SignAndEncrypt\"",
        );
        let output = doppel(vec![
            "node".into(),
            "--duration".into(),
            "3".into(),
            "--config".into(),
            mismatched.into(),
        ])
        .await;
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(
            stderr.contains("it offers: Aes256Sha256RsaPss Sign, Basic256Sha256 SignAndEncrypt"),
            "{stderr}"
        );

        let config_file = node_config(dir.path(), &plc.endpoint(), "");
        let data = dir.path().join("data");
        let runtime = support::start(&dir.path().join("node")).await;
        let connector = OpcUaConnector::start(
            config(&plc.endpoint(), "", ""),
            runtime.twins().clone(),
            &data,
        )
        .await
        .unwrap();
        let pki = data.join("opcua/press-line/pki");
        wait_until("the unknown certificate is rejected", WAIT, || async {
            !files_in(&pki.join("rejected")).is_empty()
        })
        .await;
        assert!(!connector.connected());

        let output = doppel(vec![
            "opcua".into(),
            "trust".into(),
            "--config".into(),
            config_file.clone().into(),
        ])
        .await;
        assert!(
            !output.status.success(),
            "not trusted without --yes off a terminal"
        );
        let stdout = String::from_utf8_lossy(&output.stdout);
        assert!(stdout.contains(&thumbprint), "{stdout}");
        assert!(files_in(&pki.join("trusted")).is_empty());

        let output = doppel(vec![
            "opcua".into(),
            "trust".into(),
            "--yes".into(),
            "--config".into(),
            config_file.into(),
        ])
        .await;
        let stdout = String::from_utf8_lossy(&output.stdout);
        assert!(
            output.status.success(),
            "{stdout}{}",
            String::from_utf8_lossy(&output.stderr)
        );
        assert!(
            stdout.contains(&format!("thumbprint   {thumbprint}")),
            "{stdout}"
        );
        assert!(stdout.contains("Basic256Sha256 SignAndEncrypt"), "{stdout}");
        assert!(files_in(&pki.join("rejected")).is_empty());
        assert_eq!(files_in(&pki.join("trusted")).len(), 1);
        assert!(
            connector.wait_connected(WAIT).await,
            "the connector connects once the server is trusted"
        );

        connector.stop().await;
        plc.stop().await;
        runtime.shutdown().await;
    })
    .await
    .expect("test finished in time");
}
