//! The running connector: a session loop that connects, subscribes and ingests, and an
//! actuator that turns actuations into writes and method calls.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use doppel_runtime::metrics::{ConnectorReport, ConnectorStatus, SourceCounts};
use doppel_runtime::twin::{Actuation, Twins};
use doppel_runtime::{AssetPath, ChannelCondition, Quality, Reading, SourceId, Timestamp};
use opcua::client::{Client, ClientBuilder, IdentityToken, OnSubscriptionNotificationCore};
use opcua::client::{MonitoredItemMap, Session};
use opcua::types::{
    AttributeId, CallMethodRequest, DataChangeFilter, DataChangeNotification, DataChangeTrigger,
    DataValue, DeadbandType, EndpointDescription, ExtensionObject, MonitoredItemCreateRequest,
    MonitoringMode, MonitoringParameters, NodeId, NotificationMessage, ReadValueId,
    StatusChangeNotification, StatusCode, TimestampsToReturn, Variant, WriteValue,
};
use tokio::sync::{broadcast, mpsc, watch};
use tokio::task::JoinHandle;
use tracing::{debug, error, info, warn};

use super::config::{OpcUaConfig, ScalarType};
use super::convert::{Undecodable, decode, seq_of};
use super::error::OpcUaError;
use super::plan::{AssetActuation, MethodTarget, Plan};
use crate::delivery::{Reporter, Resend, SentGuard, past_deadline};
use crate::drops::{DropKind, Drops};
use crate::reach::Reach;

/// Values the server may queue per monitored item between two publish responses.
const QUEUE_SIZE: u32 = 10;
/// Notification batches merged into one ingest.
const MAX_MERGED_BATCHES: usize = 64;
/// How long a stopping connector waits for the server to close the session.
const CLOSE_TIMEOUT: Duration = Duration::from_secs(2);
/// How long `stop` waits for a task before aborting it.
const STOP_TIMEOUT: Duration = Duration::from_secs(5);
/// Failed keep-alive reads in a row that end a session.
const MAX_FAILED_KEEP_ALIVES: u64 = 3;

/// The connection as observed from outside.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ConnectionState {
    /// A session is established and its subscription created.
    pub connected: bool,
    /// Sessions established since the connector started.
    pub sessions: u64,
    /// Monitored items the server accepted in the current or last session.
    pub monitored_items: usize,
}

/// What actuations became so far.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ActuationCounts {
    /// Variable writes the server accepted.
    pub writes: u64,
    /// Writes that failed: not connected, value out of the node's range, refused by the
    /// server, or the request failed.
    pub write_failures: u64,
    /// Method calls that succeeded.
    pub calls: u64,
    /// Calls that failed: not connected, missing parameter, refused by the server, or the
    /// request failed.
    pub call_failures: u64,
    /// Actuations missed because the connector fell behind the actuation bus.
    pub missed: u64,
}

#[derive(Debug, Default)]
struct Counters {
    writes: AtomicU64,
    write_failures: AtomicU64,
    calls: AtomicU64,
    call_failures: AtomicU64,
    missed: AtomicU64,
}

impl Counters {
    fn add(counter: &AtomicU64, n: u64) {
        counter.fetch_add(n, Ordering::Relaxed);
    }

    fn snapshot(&self) -> ActuationCounts {
        ActuationCounts {
            writes: self.writes.load(Ordering::Relaxed),
            write_failures: self.write_failures.load(Ordering::Relaxed),
            calls: self.calls.load(Ordering::Relaxed),
            call_failures: self.call_failures.load(Ordering::Relaxed),
            missed: self.missed.load(Ordering::Relaxed),
        }
    }
}

/// A connector's input counters, as its status reports them.
struct Intake {
    drops: Arc<Drops>,
    received: Arc<AtomicU64>,
    state: watch::Receiver<ConnectionState>,
}

impl ConnectorReport for Intake {
    fn status(&self, sources: &[(String, SourceCounts)]) -> ConnectorStatus {
        self.drops.status(
            "opcua",
            self.state.borrow().connected,
            self.received.load(Ordering::Relaxed),
            sources,
        )
    }
}

/// The live session, as the actuator sees it.
struct Live {
    session: Arc<Session>,
    /// The scalar type of each written variable, read from its DataType attribute.
    types: HashMap<NodeId, ScalarType>,
}

/// What a subscription delivers to the session loop.
enum Notice {
    /// Data changes of one publish response, by client handle.
    Data(Vec<(u32, DataValue)>),
    /// The subscription's status changed on the server (it timed out or was closed).
    Status(StatusCode),
}

/// Forwards subscription notifications to the session loop; one per session.
struct Forward(mpsc::UnboundedSender<Notice>);

impl OnSubscriptionNotificationCore for Forward {
    fn on_subscription_notification(
        &mut self,
        notification: NotificationMessage,
        _monitored_items: MonitoredItemMap<'_>,
    ) {
        for object in notification.notification_data.into_iter().flatten() {
            if let Some(status) = object.inner_as::<StatusChangeNotification>() {
                let _ = self.0.send(Notice::Status(status.status));
            } else if let Some(changes) = object.into_inner_as::<DataChangeNotification>() {
                let batch: Vec<(u32, DataValue)> = changes
                    .monitored_items
                    .into_iter()
                    .flatten()
                    .map(|item| (item.client_handle, item.value))
                    .collect();
                let _ = self.0.send(Notice::Data(batch));
            }
        }
    }
}

/// How a session ended.
enum SessionEnd {
    /// The connector is stopping.
    Stopped,
    /// No session could be established.
    Failed(String),
    /// An established session was lost.
    Lost(String),
}

/// One OPC UA connector: a client of one server endpoint that monitors mapped variables
/// into channels and writes or calls what accepted commands and safety actions ask.
/// It runs in tasks owned by its [`OpcUaHandle`].
pub struct OpcUaConnector {
    config: OpcUaConfig,
    plan: Arc<Plan>,
    client: Client,
    twins: Twins,
    source: SourceId,
    drops: Arc<Drops>,
    /// Data-change values received.
    received: Arc<AtomicU64>,
    state: watch::Sender<ConnectionState>,
    live: watch::Sender<Option<Arc<Live>>>,
    /// Counts sessions whose first values have reached the twins.
    settled: watch::Sender<u64>,
    pki_dir: PathBuf,
}

/// Controls a running connector: its state, its counters, and stopping it. Dropping the
/// handle stops the connector too, without waiting.
pub struct OpcUaHandle {
    name: String,
    drops: Arc<Drops>,
    /// What the node's status reads; registered with the twins while the handle lives.
    _intake: Arc<Intake>,
    counters: Arc<Counters>,
    state: watch::Receiver<ConnectionState>,
    stop: watch::Sender<bool>,
    tasks: Vec<JoinHandle<()>>,
}

impl OpcUaConnector {
    /// Validates `config` (security first: an insecure endpoint is refused unless
    /// `allow_insecure`), resolves its mapping against `twins`, prepares the PKI
    /// directory and the connector's own certificate (created on first start), and
    /// starts connecting in the background. `data_dir` is the node's data directory;
    /// relative PKI paths live under it.
    ///
    /// The server need not be reachable: the connector keeps trying with backoff.
    pub async fn start(
        config: OpcUaConfig,
        twins: Twins,
        data_dir: &Path,
    ) -> Result<OpcUaHandle, OpcUaError> {
        config.validate()?;
        let plan = Arc::new(Plan::resolve(&config, &twins)?);
        let pki_dir = pki_dir(&config, data_dir);
        let client = client_for(&config, &pki_dir).await?;
        let source = twins
            .source(&format!("opcua:{}", config.name))
            .map_err(|source| OpcUaError::Runtime {
                connector: config.name.clone(),
                source,
            })?;
        let name = config.name.clone();
        let drops = Arc::new(Drops::new(format!("opcua:{name}")));
        let received = Arc::new(AtomicU64::new(0));
        let counters = Arc::new(Counters::default());
        let (state, state_rx) = watch::channel(ConnectionState::default());
        let (live, live_rx) = watch::channel(None);
        let (settled, settled_rx) = watch::channel(0u64);
        let (stop, stop_rx) = watch::channel(false);
        let actuations = twins.actuations();
        info!(
            connector = %name,
            endpoint = %config.endpoint,
            policy = %config.security_policy,
            mode = %config.security_mode,
            pki = %pki_dir.display(),
            trust = %format!("server certificates in {}", pki_dir.join("trusted").display()),
            channels = plan.channels.len(),
            "opcua connector starting"
        );
        if config.is_insecure() {
            warn!(
                connector = %name,
                endpoint = %config.endpoint,
                "opcua connector runs without message security (allow_insecure = true)"
            );
        }
        let actuator = Actuator {
            reporter: Reporter::new(twins.clone(), format!("opcua:{name}")),
            name: name.clone(),
            assets: plan.assets.keys().cloned().collect(),
            plan: plan.clone(),
            counters: counters.clone(),
            live: live_rx,
            settled: settled_rx,
            twins: twins.clone(),
            resend: config.resend,
            guard: SentGuard::default(),
            reach: config.reach(),
        };
        let intake = Arc::new(Intake {
            drops: drops.clone(),
            received: received.clone(),
            state: state_rx.clone(),
        });
        let report: Arc<dyn ConnectorReport> = intake.clone();
        twins.register_connector(&report);
        let connector = OpcUaConnector {
            config,
            plan,
            client,
            twins,
            source,
            drops: drops.clone(),
            received: received.clone(),
            state,
            live,
            settled,
            pki_dir,
        };
        let tasks = vec![
            tokio::spawn(connector.run(stop_rx.clone())),
            tokio::spawn(actuator.run(actuations, stop_rx)),
        ];
        Ok(OpcUaHandle {
            name,
            drops,
            _intake: intake,
            counters,
            state: state_rx,
            stop,
            tasks,
        })
    }

    /// Connects, serves the session until it ends, and reconnects with backoff until
    /// stopped.
    async fn run(mut self, mut stop: watch::Receiver<bool>) {
        let initial = Duration::from_millis(self.config.reconnect.initial_ms);
        let max = Duration::from_millis(self.config.reconnect.max_ms);
        let mut delay = initial;
        let mut failures: u32 = 0;
        loop {
            let rejected_before = files_in(&self.pki_dir.join("rejected"));
            let end = self.session(&mut stop).await;
            for file in files_in(&self.pki_dir.join("rejected")) {
                if !rejected_before.contains(&file) {
                    warn!(
                        connector = %self.config.name,
                        endpoint = %self.config.endpoint,
                        rejected = %file.display(),
                        trusted = %self.pki_dir.join("trusted").display(),
                        "the server's certificate is not trusted; it was stored under rejected/. Check its thumbprint (in the file name) with the server's administrator, then move the file to trusted/ keeping its name, which must be `<common name> [<thumbprint>].der` (or `<thumbprint>.der`)"
                    );
                }
            }
            match end {
                SessionEnd::Stopped => break,
                SessionEnd::Lost(reason) => {
                    warn!(connector = %self.config.name, %reason, "opcua session lost; reconnecting");
                    self.twins.sources_lost(
                        &[self.source],
                        &format!("opcua `{}` lost its session", self.config.name),
                    );
                    delay = initial;
                    failures = 0;
                }
                SessionEnd::Failed(reason) => {
                    failures = failures.saturating_add(1);
                    // The first failures, then every power of two, to keep an outage
                    // from flooding the log.
                    if failures <= 3 || failures.is_power_of_two() {
                        warn!(
                            connector = %self.config.name,
                            endpoint = %self.config.endpoint,
                            attempt = failures,
                            retry_in_ms = delay.as_millis() as u64,
                            %reason,
                            "opcua connect failed"
                        );
                    } else {
                        debug!(connector = %self.config.name, attempt = failures, %reason, "opcua connect failed");
                    }
                }
            }
            tokio::select! {
                _ = tokio::time::sleep(delay) => {}
                _ = stopped(&mut stop) => break,
            }
            if failures > 0 {
                delay = (delay * 2).min(max);
            }
        }
        info!(connector = %self.config.name, "opcua connector stopped");
    }

    /// One session: connect, read the written variables' types, subscribe, then ingest
    /// until the connection is lost or the connector stops.
    async fn session(&mut self, stop: &mut watch::Receiver<bool>) -> SessionEnd {
        let timeout = Duration::from_millis(self.config.request_timeout_ms);
        let endpoint: EndpointDescription = (
            self.config.endpoint.as_str(),
            self.config.security_policy.to_opcua().to_uri(),
            self.config.security_mode.to_opcua(),
        )
            .into();
        let identity = match (&self.config.user, &self.config.password) {
            (Some(user), Some(password)) => {
                IdentityToken::new_user_name(user.clone(), password.expose())
            }
            _ => IdentityToken::Anonymous,
        };
        let wanted = (endpoint.security_policy_uri.clone(), endpoint.security_mode);
        let connect = self.client.connect_to_matching_endpoint(endpoint, identity);
        let (session, event_loop) = tokio::select! {
            connected = tokio::time::timeout(timeout, connect) => match connected {
                Ok(Ok(pair)) => pair,
                Ok(Err(error)) => return SessionEnd::Failed(offered_instead(&self.client, &self.config, &wanted, timeout).await.unwrap_or_else(|| error.to_string())),
                Err(_) => return SessionEnd::Failed("timed out asking for endpoints".to_string()),
            },
            _ = stopped(stop) => return SessionEnd::Stopped,
        };
        // Reconnects are this loop's job: it re-reads endpoints and types and
        // re-creates the subscription from scratch.
        session.disable_reconnects();
        let mut event_loop = AbortOnDrop(event_loop.spawn());
        tokio::select! {
            connected = tokio::time::timeout(timeout, session.wait_for_connection()) => {
                if !matches!(connected, Ok(true)) {
                    return SessionEnd::Failed("timed out opening the session".to_string());
                }
            }
            status = &mut event_loop.0 => return SessionEnd::Failed(loop_status(status)),
            _ = stopped(stop) => return SessionEnd::Stopped,
        }

        let (notices, mut received) = mpsc::unbounded_channel();
        let (live, items) = match self.subscribe(&session, Forward(notices)).await {
            Ok(subscribed) => subscribed,
            Err(reason) => {
                close(&session).await;
                return SessionEnd::Failed(reason);
            }
        };
        self.live.send_replace(Some(Arc::new(live)));
        self.state.send_modify(|state| {
            state.connected = true;
            state.sessions += 1;
            state.monitored_items = items;
        });
        info!(
            connector = %self.config.name,
            endpoint = %self.config.endpoint,
            policy = %self.config.security_policy,
            mode = %self.config.security_mode,
            monitored_items = items,
            "opcua session established"
        );

        let mut first_values = true;
        let end = loop {
            tokio::select! {
                _ = stopped(stop) => break SessionEnd::Stopped,
                status = &mut event_loop.0 => break SessionEnd::Lost(loop_status(status)),
                notice = received.recv() => match notice {
                    Some(Notice::Data(batch)) => {
                        if let Some(status) = self.ingest(batch, &mut received).await {
                            break SessionEnd::Lost(format!("subscription ended: {status}"));
                        }
                        if std::mem::take(&mut first_values) {
                            // The machine's values as it runs now are in the twins: the
                            // actuator can tell which delivered values it disagrees with.
                            self.settled.send_modify(|count| *count += 1);
                        }
                    }
                    Some(Notice::Status(status)) if status.is_bad() => {
                        break SessionEnd::Lost(format!("subscription ended: {status}"));
                    }
                    Some(Notice::Status(status)) => {
                        debug!(connector = %self.config.name, %status, "subscription status changed");
                    }
                    None => break SessionEnd::Lost("subscription closed".to_string()),
                },
            }
        };
        self.live.send_replace(None);
        self.state.send_modify(|state| state.connected = false);
        // Data that arrived before the end still reaches the twins.
        while let Ok(notice) = received.try_recv() {
            if let Notice::Data(batch) = notice {
                self.ingest(batch, &mut received).await;
            }
        }
        // A session whose connection still stands (stopping, or its subscription died)
        // is closed, so the server can free it now rather than at its timeout.
        if !event_loop.0.is_finished() {
            close(&session).await;
        }
        end
    }

    /// Reads the written variables' types, creates the subscription and its monitored
    /// items; returns the live session and how many items the server accepted.
    async fn subscribe(
        &self,
        session: &Arc<Session>,
        forward: Forward,
    ) -> Result<(Live, usize), String> {
        let types = self.read_types(session).await;
        let publishing = Duration::from_millis(self.config.publishing_ms);
        let keep_alive_count =
            (self.config.keep_alive_ms / self.config.publishing_ms).clamp(1, 1000) as u32;
        let subscription = session
            .create_subscription(
                publishing,
                keep_alive_count * 3,
                keep_alive_count,
                0,
                0,
                true,
                forward,
            )
            .await
            .map_err(|error| format!("creating the subscription: {error}"))?;
        let mut items = 0;
        if !self.plan.channels.is_empty() {
            let requests: Vec<MonitoredItemCreateRequest> = self
                .plan
                .channels
                .iter()
                .enumerate()
                .map(|(index, channel)| monitored_item(index, channel))
                .collect();
            let results = session
                .create_monitored_items(subscription, TimestampsToReturn::Both, requests)
                .await
                .map_err(|error| format!("creating monitored items: {error}"))?;
            for (channel, created) in self.plan.channels.iter().zip(&results) {
                let status = created.result.status_code;
                if status.is_good() {
                    items += 1;
                } else {
                    error!(
                        connector = %self.config.name,
                        asset = %channel.asset,
                        channel = %channel.channel,
                        node = %channel.node,
                        %status,
                        "server refused the monitored item"
                    );
                }
            }
        }
        Ok((
            Live {
                session: session.clone(),
                types,
            },
            items,
        ))
    }

    /// The scalar type of every written variable, from its DataType attribute. A node
    /// whose type cannot be read or is not a scalar the connector knows is left out;
    /// its writes go as the value's natural type.
    async fn read_types(&self, session: &Session) -> HashMap<NodeId, ScalarType> {
        let nodes = self.plan.write_nodes();
        let mut types = HashMap::new();
        if nodes.is_empty() {
            return types;
        }
        let reads: Vec<ReadValueId> = nodes
            .iter()
            .map(|node| ReadValueId {
                node_id: node.clone(),
                attribute_id: AttributeId::DataType as u32,
                ..Default::default()
            })
            .collect();
        match session.read(&reads, TimestampsToReturn::Neither, 0.0).await {
            Ok(values) => {
                for (node, value) in nodes.iter().zip(values) {
                    let scalar = match &value.value {
                        Some(Variant::NodeId(data_type)) => ScalarType::of_data_type(data_type),
                        _ => None,
                    };
                    match scalar {
                        Some(scalar) => {
                            types.insert(node.clone(), scalar);
                        }
                        None => warn!(
                            connector = %self.config.name,
                            %node,
                            data_type = ?value.value,
                            status = ?value.status,
                            "written variable has no known scalar type; values go as their natural type"
                        ),
                    }
                }
            }
            Err(error) => warn!(
                connector = %self.config.name,
                %error,
                "reading the data types of written variables failed; values go as their natural type"
            ),
        }
        types
    }

    /// Turns data changes into readings and ingests them in one batch; everything
    /// dropped is counted by kind. Returns a bad subscription status met while merging
    /// queued batches: the subscription is gone.
    async fn ingest(
        &self,
        first: Vec<(u32, DataValue)>,
        received: &mut mpsc::UnboundedReceiver<Notice>,
    ) -> Option<StatusCode> {
        let mut changes = first;
        let mut ended = None;
        // Data changes that queued up while the last batch was ingested travel together.
        for _ in 0..MAX_MERGED_BATCHES {
            match received.try_recv() {
                Ok(Notice::Data(more)) => changes.extend(more),
                Ok(Notice::Status(status)) if status.is_bad() => {
                    ended = Some(status);
                    break;
                }
                Ok(Notice::Status(_)) => {}
                Err(_) => break,
            }
        }
        self.received
            .fetch_add(changes.len() as u64, Ordering::Relaxed);
        let receive_time = Timestamp::now();
        let mut readings = Vec::with_capacity(changes.len());
        let mut origins = Vec::with_capacity(changes.len());
        let mut conditions = Vec::new();
        for (handle, data) in changes {
            let index = (handle as usize).wrapping_sub(1);
            let Some(channel) = self.plan.channels.get(index) else {
                self.drops.record(
                    DropKind::UnknownChannel,
                    &format_args!("monitored item handle {handle}"),
                );
                continue;
            };
            match decode(&data, receive_time) {
                Ok(decoded) => {
                    readings.push((
                        channel.target,
                        Reading {
                            value: decoded.value,
                            source_time: decoded.source_time,
                            quality: decoded.quality,
                            source: self.source,
                            epoch: 0,
                            seq: seq_of(decoded.source_time),
                            stamped: decoded.stamped,
                        },
                    ));
                    origins.push(index);
                }
                Err(Undecodable::NoValue {
                    quality: Quality::Bad,
                    status,
                    at,
                }) => conditions.push((
                    channel.target,
                    ChannelCondition {
                        quality: Quality::Bad,
                        reason: status,
                        since: at,
                    },
                )),
                Err(why) => self.drops.record(
                    DropKind::WrongType,
                    &format_args!(
                        "{} {} ({}): {why}",
                        channel.asset, channel.channel, channel.node
                    ),
                ),
            }
        }
        if !conditions.is_empty() {
            // Its twins take it before the readings that follow.
            let _durable = self.twins.mark(conditions);
        }
        if readings.is_empty() {
            return ended;
        }
        match self.twins.ingest_batch(readings.iter().copied()).await {
            Ok(batch) => {
                for (position, reason) in batch.rejected {
                    let channel = &self.plan.channels[origins[position]];
                    self.drops.refuse(
                        reason,
                        &format_args!(
                            "{} {} ({}) = {}: {}",
                            channel.asset,
                            channel.channel,
                            channel.node,
                            readings[position].1.value,
                            reason.as_str()
                        ),
                    );
                }
            }
            Err(error) => {
                warn!(connector = %self.config.name, %error, "ingest refused the batch")
            }
        }
        ended
    }
}

/// The input arguments of `method` for `actuation`: each argument is the governed value
/// of the desired value its parameter sets, converted to the argument's type.
pub(crate) fn method_arguments(
    actuation: &Actuation,
    method: &MethodTarget,
) -> Result<Vec<Variant>, String> {
    method
        .args
        .iter()
        .map(|arg| {
            let value = actuation.value(&arg.desired).ok_or_else(|| {
                format!("desired value `{}` is not set by the verdict", arg.desired)
            })?;
            arg.data_type
                .unwrap_or_else(|| ScalarType::natural(value))
                .variant(value)
                .map_err(|error| error.to_string())
        })
        .collect()
}

/// Turns actuations of mapped assets into writes and method calls on the live session,
/// reports each outcome to the twin, and sends again what did not reach the server
/// when a session is established.
struct Actuator {
    name: String,
    plan: Arc<Plan>,
    counters: Arc<Counters>,
    live: watch::Receiver<Option<Arc<Live>>>,
    /// Changes once a session's first values have reached the twins.
    settled: watch::Receiver<u64>,
    twins: Twins,
    reporter: Reporter,
    resend: Resend,
    guard: SentGuard,
    /// What it writes and calls, per asset.
    reach: Reach,
    /// The assets the plan actuates.
    assets: Vec<AssetPath>,
}

/// How one write or call fared.
enum Fate {
    /// The server accepted it.
    Done,
    /// The server refused it (or the value could not be converted), and why.
    Refused(String),
    /// It is not known whether it reached the server (the request failed); the value
    /// stays pending and is sent again with the next session.
    Unknown,
}

impl Actuator {
    async fn run(
        mut self,
        mut actuations: broadcast::Receiver<Actuation>,
        mut stop: watch::Receiver<bool>,
    ) {
        loop {
            tokio::select! {
                _ = stopped(&mut stop) => break,
                changed = self.live.changed() => {
                    if changed.is_err() {
                        break;
                    }
                    let live = self.live.borrow_and_update().clone();
                    if let Some(live) = live {
                        self.guard.reconnected();
                        self.catch_up(&live).await;
                    }
                }
                changed = self.settled.changed() => {
                    if changed.is_err() {
                        break;
                    }
                    self.settled.borrow_and_update();
                    // Again, now that the machine reported back: values it disagrees
                    // with since their delivery go out too (each once per session).
                    let live = self.live.borrow().clone();
                    if let Some(live) = live {
                        self.catch_up(&live).await;
                    }
                }
                received = actuations.recv() => match received {
                    Ok(actuation) => self.actuate(&actuation).await,
                    Err(broadcast::error::RecvError::Lagged(missed)) => {
                        Counters::add(&self.counters.missed, missed);
                        error!(connector = %self.name, missed, "opcua connector fell behind the actuation bus; the missed values stay pending and are sent with the next session");
                    }
                    Err(broadcast::error::RecvError::Closed) => break,
                },
            }
        }
    }

    /// A new session: sends again what did not reach the server, by the resend policy.
    async fn catch_up(&mut self, live: &Live) {
        let undelivered = self.twins.undelivered(Some(&self.assets)).await;
        let mut sent = 0;
        for actuation in &undelivered {
            let covered = self.reach.carried(actuation);
            if covered.is_empty() {
                continue;
            }
            if past_deadline(actuation) {
                continue;
            }
            match self.resend {
                Resend::Never => self.reporter.failed(
                    actuation,
                    covered,
                    "not sent again when the session came back (resend = \"never\")",
                ),
                Resend::Latest => {
                    sent += 1;
                    self.deliver(actuation, live).await;
                }
            }
        }
        if sent > 0 {
            info!(connector = %self.name, actuations = sent, "sent again what had not reached the server");
        }
    }

    async fn actuate(&mut self, actuation: &Actuation) {
        let covered = self.reach.carried(actuation);
        if covered.is_empty() {
            return;
        }
        if past_deadline(actuation) {
            Counters::add(&self.counters.write_failures, 1);
            let reason = "its deadline passed before it reached the connector; not sent";
            self.failed(actuation, "write", reason);
            self.reporter.failed(actuation, covered, reason);
            return;
        }
        let live = self.live.borrow().clone();
        match live {
            Some(live) => self.deliver(actuation, &live).await,
            None if self.resend == Resend::Never => {
                let reason = "not connected, and resend = \"never\"";
                self.failed(actuation, "write", reason);
                self.reporter.failed(actuation, covered, reason);
            }
            None => {
                if actuation.is_safety() {
                    error!(connector = %self.name, asset = %actuation.asset(), command = %actuation.command(), "safety action pending: not connected; it is sent first when the session is back");
                } else {
                    warn!(connector = %self.name, asset = %actuation.asset(), command = %actuation.command(), command_id = %actuation.command_id(), "actuation pending: not connected; it is sent when the session is back");
                }
            }
        }
    }

    /// Writes and calls what `actuation` sets (the values this connection has not sent
    /// and no newer actuation has), then reports each value's outcome.
    async fn deliver(&mut self, actuation: &Actuation, live: &Live) {
        let Some(mapping) = self.plan.assets.get(actuation.asset()) else {
            return;
        };
        let admitted = self.guard.admit(actuation);
        if admitted.is_empty() {
            return;
        }
        let actuation = &actuation.only(&admitted);
        let mut fates: Vec<(String, Fate)> = self.write(actuation, mapping, live).await;
        if let Some(method) = mapping.methods.get(actuation.command()) {
            let fate = self.call(actuation, method, live).await;
            for desired in &admitted {
                let mine = match &fate {
                    Fate::Done => Fate::Done,
                    Fate::Refused(reason) => Fate::Refused(reason.clone()),
                    Fate::Unknown => Fate::Unknown,
                };
                match fates.iter_mut().find(|(name, _)| name == desired) {
                    // A value written and carried by the call reached the machine if
                    // either did.
                    Some((_, earlier)) => {
                        if !matches!(earlier, Fate::Done) && !matches!(mine, Fate::Unknown) {
                            *earlier = mine;
                        }
                    }
                    None => fates.push((desired.clone(), mine)),
                }
            }
        }
        let mut delivered = Vec::new();
        let mut refused: Vec<(String, String)> = Vec::new();
        for (desired, fate) in fates {
            match fate {
                Fate::Done => delivered.push(desired),
                Fate::Refused(reason) => refused.push((desired, reason)),
                Fate::Unknown => {}
            }
        }
        self.reporter
            .delivered(actuation.asset(), actuation.version(), delivered);
        for (desired, reason) in refused {
            self.reporter.failed(actuation, vec![desired], &reason);
        }
    }

    /// Writes every desired value of `actuation` that has a variable.
    async fn write(
        &self,
        actuation: &Actuation,
        mapping: &AssetActuation,
        live: &Live,
    ) -> Vec<(String, Fate)> {
        let mut fates = Vec::new();
        let mut writes = Vec::new();
        let mut written = Vec::new();
        for (desired, value) in actuation.values() {
            let Some(node) = mapping.writes.get(desired) else {
                continue;
            };
            let scalar = live
                .types
                .get(node)
                .copied()
                .unwrap_or_else(|| ScalarType::natural(*value));
            match scalar.variant(*value) {
                Ok(variant) => {
                    writes.push(WriteValue {
                        node_id: node.clone(),
                        attribute_id: AttributeId::Value as u32,
                        index_range: Default::default(),
                        value: DataValue::value_only(variant),
                    });
                    written.push((desired.clone(), node));
                }
                Err(error) => {
                    Counters::add(&self.counters.write_failures, 1);
                    self.failed(actuation, desired, &error.to_string());
                    fates.push((desired.clone(), Fate::Refused(error.to_string())));
                }
            }
        }
        if writes.is_empty() {
            return fates;
        }
        match live.session.write(&writes).await {
            Ok(statuses) => {
                for (index, (desired, node)) in written.into_iter().enumerate() {
                    let status = statuses
                        .get(index)
                        .copied()
                        .unwrap_or(StatusCode::BadUnexpectedError);
                    if status.is_good() {
                        Counters::add(&self.counters.writes, 1);
                        debug!(connector = %self.name, asset = %actuation.asset(), desired, %node, "written");
                        fates.push((desired, Fate::Done));
                    } else {
                        Counters::add(&self.counters.write_failures, 1);
                        let reason = format!("server refused the write to {node}: {status}");
                        self.failed(actuation, &desired, &reason);
                        fates.push((desired, Fate::Refused(reason)));
                    }
                }
            }
            Err(error) => {
                Counters::add(&self.counters.write_failures, written.len() as u64);
                self.failed(
                    actuation,
                    "write",
                    &format!("{error}; pending until the next session"),
                );
                fates.extend(
                    written
                        .into_iter()
                        .map(|(desired, _)| (desired, Fate::Unknown)),
                );
            }
        }
        fates
    }

    /// Calls the command's method with the governed values of its parameters as
    /// arguments.
    async fn call(&self, actuation: &Actuation, method: &MethodTarget, live: &Live) -> Fate {
        let arguments = match method_arguments(actuation, method) {
            Ok(arguments) => arguments,
            Err(problem) => {
                Counters::add(&self.counters.call_failures, 1);
                self.failed(actuation, "call", &problem);
                return Fate::Refused(problem);
            }
        };
        let request = CallMethodRequest {
            object_id: method.object.clone(),
            method_id: method.method.clone(),
            input_arguments: Some(arguments),
        };
        match live.session.call_one(request).await {
            Ok(result) if result.status_code.is_good() => {
                Counters::add(&self.counters.calls, 1);
                debug!(connector = %self.name, asset = %actuation.asset(), command = %actuation.command(), method = %method.method, "called");
                Fate::Done
            }
            Ok(result) => {
                Counters::add(&self.counters.call_failures, 1);
                let reason = format!(
                    "server refused the call of {}: {}",
                    method.method, result.status_code
                );
                self.failed(actuation, "call", &reason);
                Fate::Refused(reason)
            }
            Err(error) => {
                Counters::add(&self.counters.call_failures, 1);
                self.failed(
                    actuation,
                    "call",
                    &format!("{error}; pending until the next session"),
                );
                Fate::Unknown
            }
        }
    }

    /// Logs an actuation that did not reach the machine; loudly for a safety action.
    fn failed(&self, actuation: &Actuation, what: &str, reason: &str) {
        if actuation.is_safety() {
            error!(
                connector = %self.name,
                asset = %actuation.asset(),
                command = %actuation.command(),
                what,
                reason,
                "safety action not delivered to the machine"
            );
        } else {
            warn!(
                connector = %self.name,
                asset = %actuation.asset(),
                command = %actuation.command(),
                command_id = %actuation.command_id(),
                what,
                reason,
                "actuation not delivered to the machine"
            );
        }
    }
}

impl OpcUaHandle {
    /// The connector's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Values dropped so far, by kind, and refused, by reason.
    pub fn drops(&self) -> Arc<Drops> {
        self.drops.clone()
    }

    /// True while a session is established and subscribed.
    pub fn connected(&self) -> bool {
        self.state.borrow().connected
    }

    /// The connection state now.
    pub fn connection(&self) -> ConnectionState {
        *self.state.borrow()
    }

    /// A watch of the connection state, to wait for a change.
    pub fn watch_connection(&self) -> watch::Receiver<ConnectionState> {
        self.state.clone()
    }

    /// Waits up to `timeout` for a session to be established; true if one is.
    pub async fn wait_connected(&self, timeout: Duration) -> bool {
        let mut state = self.state.clone();
        tokio::time::timeout(timeout, state.wait_for(|state| state.connected))
            .await
            .is_ok_and(|waited| waited.is_ok())
    }

    /// What actuations became so far.
    pub fn actuations(&self) -> ActuationCounts {
        self.counters.snapshot()
    }

    /// Stops the connector: closes the session and waits for its tasks to end.
    pub async fn stop(mut self) {
        let _ = self.stop.send(true);
        for mut task in std::mem::take(&mut self.tasks) {
            if tokio::time::timeout(STOP_TIMEOUT, &mut task).await.is_err() {
                warn!(connector = %self.name, "opcua connector task did not stop in time; aborting it");
                task.abort();
            }
        }
    }
}

impl Drop for OpcUaHandle {
    fn drop(&mut self) {
        let _ = self.stop.send(true);
    }
}

/// Aborts the session's event loop when the session is left.
pub(crate) struct AbortOnDrop(pub(crate) JoinHandle<StatusCode>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Resolves once the connector is told to stop (or its handle is gone).
async fn stopped(stop: &mut watch::Receiver<bool>) {
    let _ = stop.wait_for(|stop| *stop).await;
}

/// Closes a session politely, without waiting long for a server that is going away.
pub(crate) async fn close(session: &Session) {
    let _ = tokio::time::timeout(CLOSE_TIMEOUT, session.disconnect()).await;
}

pub(crate) fn loop_status(status: Result<StatusCode, tokio::task::JoinError>) -> String {
    match status {
        Ok(status) if status.is_good() => "connection closed".to_string(),
        Ok(status) => status.to_string(),
        Err(error) => format!("session event loop ended: {error}"),
    }
}

fn monitored_item(
    index: usize,
    channel: &super::plan::MonitoredChannel,
) -> MonitoredItemCreateRequest {
    let filter = if channel.deadband > 0.0 {
        ExtensionObject::from_message(DataChangeFilter {
            trigger: DataChangeTrigger::StatusValue,
            deadband_type: DeadbandType::Absolute as u32,
            deadband_value: channel.deadband,
        })
    } else {
        ExtensionObject::null()
    };
    MonitoredItemCreateRequest {
        item_to_monitor: ReadValueId {
            node_id: channel.node.clone(),
            attribute_id: AttributeId::Value as u32,
            ..Default::default()
        },
        monitoring_mode: MonitoringMode::Reporting,
        requested_parameters: MonitoringParameters {
            client_handle: index as u32 + 1,
            sampling_interval: channel.sampling_ms as f64,
            filter,
            queue_size: QUEUE_SIZE,
            discard_oldest: true,
        },
    }
}

/// The connector's PKI directory under the node's data directory.
pub(crate) fn pki_dir(config: &OpcUaConfig, data_dir: &Path) -> PathBuf {
    match &config.pki_dir {
        Some(dir) if dir.is_absolute() => dir.clone(),
        Some(dir) => data_dir.join(dir),
        None => data_dir.join("opcua").join(&config.name).join("pki"),
    }
}

/// The endpoints the server at the configured URL offers, asked within `timeout`;
/// `None` when it does not answer.
pub(crate) async fn server_endpoints(
    client: &Client,
    config: &OpcUaConfig,
    timeout: Duration,
) -> Option<Vec<opcua::types::EndpointDescription>> {
    tokio::time::timeout(
        timeout,
        client.get_server_endpoints_from_url(config.endpoint.as_str()),
    )
    .await
    .ok()?
    .ok()
}

/// Why a connect failed when the server offers no endpoint with the configured
/// security policy and mode: what it offers instead. `None` when it offers a match
/// (the failure was something else) or cannot be asked.
pub(crate) async fn offered_instead(
    client: &Client,
    config: &OpcUaConfig,
    (policy, mode): &(opcua::types::UAString, opcua::types::MessageSecurityMode),
    timeout: Duration,
) -> Option<String> {
    let endpoints = server_endpoints(client, config, timeout).await?;
    if endpoints
        .iter()
        .any(|e| e.security_policy_uri == *policy && e.security_mode == *mode)
    {
        return None;
    }
    Some(format!(
        "the server offers no endpoint with security policy {} and mode {}; it offers: {} (set security_policy and security_mode to one of these)",
        config.security_policy,
        config.security_mode,
        super::trust::offered(&endpoints).join(", ")
    ))
}

/// The client of `config` with its PKI in `pki_dir`, built on a blocking thread:
/// creating the key pair on first use is seconds of CPU.
pub(crate) async fn client_for(config: &OpcUaConfig, pki_dir: &Path) -> Result<Client, OpcUaError> {
    let built = {
        let config = config.clone();
        let pki_dir = pki_dir.to_path_buf();
        tokio::task::spawn_blocking(move || build_client(&config, &pki_dir))
    };
    built.await.map_err(|error| OpcUaError::Pki {
        connector: config.name.clone(),
        dir: pki_dir.to_path_buf(),
        problem: error.to_string(),
    })?
}

/// Builds the async-opcua client. With message security, the connector's own
/// certificate and key are created in the PKI directory if missing.
pub(crate) fn build_client(config: &OpcUaConfig, pki_dir: &Path) -> Result<Client, OpcUaError> {
    let pki_error = |problem: String| OpcUaError::Pki {
        connector: config.name.clone(),
        dir: pki_dir.to_path_buf(),
        problem,
    };
    for sub in ["own", "private", "trusted", "rejected"] {
        std::fs::create_dir_all(pki_dir.join(sub)).map_err(|e| pki_error(e.to_string()))?;
    }
    // The private key's directory is closed to everyone else before the key is
    // written into it.
    restrict(&pki_dir.join("private"), 0o700).map_err(|e| pki_error(e.to_string()))?;
    let secure = !config.is_insecure();
    let client = ClientBuilder::new()
        .application_name(format!("Doppel OPC UA connector {}", config.name))
        .application_uri(format!("urn:doppel:opcua:{}", config.name))
        .product_uri("urn:doppel")
        .session_name(format!("doppel:{}", config.name))
        .pki_dir(pki_dir)
        .create_sample_keypair(secure)
        .trust_server_certs(config.trust_server_certificate)
        .verify_server_certs(true)
        .session_retry_limit(0)
        .keep_alive_interval(Duration::from_millis(config.keep_alive_ms))
        .max_failed_keep_alive_count(MAX_FAILED_KEEP_ALIVES)
        .request_timeout(Duration::from_millis(config.request_timeout_ms))
        .client()
        .map_err(|problems| OpcUaError::Client {
            connector: config.name.clone(),
            problem: problems.join("; "),
        })?;
    if secure {
        for file in ["own/cert.der", "private/private.pem"] {
            if !pki_dir.join(file).is_file() {
                return Err(pki_error(format!(
                    "the connector's certificate could not be read or created ({file} is missing)"
                )));
            }
        }
        restrict(&pki_dir.join("private/private.pem"), 0o600)
            .map_err(|e| pki_error(e.to_string()))?;
    }
    Ok(client)
}

/// The files in `dir` (none when it cannot be read).
fn files_in(dir: &Path) -> Vec<PathBuf> {
    std::fs::read_dir(dir)
        .map(|entries| entries.flatten().map(|entry| entry.path()).collect())
        .unwrap_or_default()
}

/// Gives `path` the Unix permission bits `mode` (owner only); nothing elsewhere.
fn restrict(path: &Path, mode: u32) -> std::io::Result<()> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
    }
    #[cfg(not(unix))]
    {
        let _ = (path, mode);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use doppel_runtime::twin::ChannelTarget;
    use doppel_runtime::{AssetPath, ChannelId};

    use super::super::plan::MonitoredChannel;
    use super::*;

    fn channel(deadband: f64) -> MonitoredChannel {
        MonitoredChannel {
            asset: AssetPath::parse("acme/plant-a/line-1/press-1").unwrap(),
            channel: "temperature".to_string(),
            node: NodeId::new(2, "Press1.Temperature"),
            target: ChannelTarget {
                twin: 0,
                channel: ChannelId(0),
            },
            sampling_ms: 250,
            deadband,
        }
    }

    #[test]
    fn monitored_items_carry_handle_interval_and_absolute_deadband() {
        let item = monitored_item(4, &channel(0.5));
        assert_eq!(item.requested_parameters.client_handle, 5);
        assert_eq!(item.requested_parameters.sampling_interval, 250.0);
        assert_eq!(item.item_to_monitor.attribute_id, AttributeId::Value as u32);
        let filter = item
            .requested_parameters
            .filter
            .inner_as::<DataChangeFilter>()
            .expect("a data change filter");
        assert_eq!(filter.deadband_type, DeadbandType::Absolute as u32);
        assert_eq!(filter.deadband_value, 0.5);
        assert_eq!(filter.trigger, DataChangeTrigger::StatusValue);

        let every_change = monitored_item(0, &channel(0.0));
        assert!(every_change.requested_parameters.filter.is_null());
    }

    #[test]
    fn pki_directory_defaults_under_the_data_directory() {
        let mut config = OpcUaConfig::from_toml(
            "[opcua]\nname = \"press-line\"\nendpoint = \"opc.tcp://127.0.0.1:4840/\"\n",
        )
        .unwrap()
        .remove(0);
        let data = Path::new("/var/lib/doppel");
        assert_eq!(
            pki_dir(&config, data),
            Path::new("/var/lib/doppel/opcua/press-line/pki")
        );
        config.pki_dir = Some(PathBuf::from("pki"));
        assert_eq!(pki_dir(&config, data), Path::new("/var/lib/doppel/pki"));
        config.pki_dir = Some(PathBuf::from("/etc/doppel/pki"));
        assert_eq!(pki_dir(&config, data), Path::new("/etc/doppel/pki"));
    }
}
