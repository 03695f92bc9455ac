//! The MQTT connector: one actor per broker connection.
//!
//! The connection subscribes with QoS 1 on a persistent session and reads the layouts
//! its config enables (Unified Namespace JSON, Sparkplug B). A message is acknowledged
//! to the broker only after the journal batch holding its samples has committed, so a
//! crash never loses a message the broker considers delivered; the broker redelivers
//! the rest, and the twins recognise redelivered readings by their sequence numbers.
//! Messages that cannot be used are counted, logged once per kind per minute and
//! acknowledged, so they are not redelivered forever. Verdicts are published with
//! QoS 1 on the same connection; accepted commands and safety actions go out with QoS 1
//! on a second connection of their own (client id `<client id>-act`), where each
//! PUBACK marks the values it carried delivered in their twin.

mod actuate;
mod codec;
mod config;
pub mod sparkplug;
mod tls;
mod uns;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use doppel_runtime::journal::Receipt;
use doppel_runtime::metrics::{ConnectorReport, ConnectorStatus, SourceCounts};
use doppel_runtime::twin::Twins;
use doppel_runtime::{SourceId, Timestamp};
use parking_lot::Mutex;
use ractor::{Actor, ActorProcessingErr, ActorRef};
use rumqttc::{AsyncClient, Event, EventLoop, LastWill, MqttOptions, Packet, Publish, QoS};
use tokio::sync::{broadcast, mpsc, watch};
use tokio::task::JoinHandle;
use tracing::Instrument;

pub use codec::{Codec, Inbound, Outgoing, Resolver};
pub use config::{FieldNames, MqttConfig, UnsConfig};
pub use sparkplug::{SparkplugCodec, SparkplugConfig};
pub use tls::MqttTls;
pub use uns::{UnsCodec, UnsSources};

use crate::drops::{DropKind, Drops};

/// Why a connector could not start.
#[derive(Debug, thiserror::Error)]
pub enum MqttError {
    /// The configuration is invalid.
    #[error("{0}")]
    Config(String),
    /// The runtime refused (registering the data source failed).
    #[error(transparent)]
    Runtime(#[from] doppel_runtime::Error),
    /// The connection actor could not be spawned.
    #[error("mqtt connector: {0}")]
    Spawn(String),
}

/// Messages a connection's ingest stage reads from the network stage at once, at most.
const DRAIN: usize = 1024;

/// Capacity of the client's request channel (acknowledgements and publishes).
const REQUESTS: usize = 65_536;

/// Live figures of one connection.
#[derive(Debug, Default)]
pub struct MqttStats {
    /// Messages received.
    pub received: AtomicU64,
    /// Messages acknowledged to the broker after their samples became durable.
    pub acknowledged: AtomicU64,
    /// Messages published (actuations, verdicts, replies).
    pub published: AtomicU64,
    /// Actuation publishes the broker acknowledged.
    pub delivered: AtomicU64,
    /// Actuations or verdicts missed because the connector fell behind.
    pub lagged: AtomicU64,
    /// Connections established.
    pub connections: AtomicU64,
}

struct Shared {
    name: String,
    drops: Drops,
    stats: MqttStats,
    connected: watch::Sender<bool>,
    /// Incremented on every (re)connection; acknowledgements for messages of an
    /// earlier connection are not sent (the broker redelivers those messages).
    epoch: AtomicU64,
    /// Set when the ingest stage asks for a fresh connection.
    reconnect: AtomicBool,
    /// Set when the connector stops: the connection's end is expected.
    stopping: AtomicBool,
    /// The sources this connector's readings come from.
    sources: Vec<SourceId>,
    /// Why the last connection attempt failed, until one succeeds.
    last_error: Mutex<Option<String>>,
    /// Largest payload decoded; a bigger message is dropped as oversized.
    max_payload: usize,
}

impl ConnectorReport for Shared {
    fn status(&self, sources: &[(String, SourceCounts)]) -> ConnectorStatus {
        self.drops.status(
            "mqtt",
            *self.connected.borrow(),
            self.stats.received.load(Ordering::Relaxed),
            sources,
        )
    }
}

/// A running MQTT connector.
pub struct MqttConnector {
    actor: ActorRef<ConnectionMsg>,
    handle: JoinHandle<()>,
    shared: Arc<Shared>,
}

impl MqttConnector {
    /// Connects to the broker of `config` and starts feeding `twins`. Returns once the
    /// connection actor runs; the connection itself is established in the background
    /// and re-established with backoff whenever it drops.
    pub async fn start(config: MqttConfig, twins: Twins) -> Result<Self, MqttError> {
        config.validate()?;
        let transport = config.transport()?;
        let source = twins.source(&format!("mqtt:{}", config.name))?;
        let uns_sources = UnsSources {
            explicit: source,
            timestamped: twins.source(&format!("mqtt:{}/ts", config.name))?,
            arrival: twins.source(&format!("mqtt:{}/arrival", config.name))?,
        };
        let sources = vec![source, uns_sources.timestamped, uns_sources.arrival];
        let mut codecs: Vec<Box<dyn Codec>> = Vec::new();
        if config.uns.enabled {
            codecs.push(Box::new(UnsCodec::new(
                config.uns.clone(),
                Resolver::new(twins.clone()),
                uns_sources,
            )));
        }
        if let Some(sparkplug) = &config.sparkplug {
            let codec = SparkplugCodec::new(sparkplug, Resolver::new(twins.clone()), source)
                .map_err(|error| MqttError::Config(format!("mqtt `{}`: {error}", config.name)))?;
            // First: its claims are exact (namespace and mapped group), so a Sparkplug
            // topic is never taken for Unified Namespace telemetry.
            codecs.insert(0, Box::new(codec));
        }
        let (connected, _) = watch::channel(false);
        let shared = Arc::new(Shared {
            name: config.name.clone(),
            drops: Drops::new(format!("mqtt:{}", config.name)),
            stats: MqttStats::default(),
            connected,
            epoch: AtomicU64::new(0),
            reconnect: AtomicBool::new(false),
            stopping: AtomicBool::new(false),
            sources,
            last_error: Mutex::new(None),
            max_payload: config.max_payload,
        });
        let report: Arc<dyn ConnectorReport> = shared.clone();
        twins.register_connector(&report);
        let args = ConnectionArgs {
            config,
            transport,
            twins,
            codecs,
            shared: shared.clone(),
        };
        let (actor, handle) = Actor::spawn(None, Connection, args)
            .await
            .map_err(|error| MqttError::Spawn(error.to_string()))?;
        Ok(Self {
            actor,
            handle,
            shared,
        })
    }

    /// The connector's name.
    pub fn name(&self) -> &str {
        &self.shared.name
    }

    /// Dropped input by kind.
    pub fn drops(&self) -> &Drops {
        &self.shared.drops
    }

    /// Live figures.
    pub fn stats(&self) -> &MqttStats {
        &self.shared.stats
    }

    /// Why the last attempt to connect to the broker failed (the TLS handshake, a
    /// refused CONNECT, an unreachable host), until a connection succeeds.
    pub fn last_error(&self) -> Option<String> {
        self.shared.last_error.lock().clone()
    }

    /// Whether the connection to the broker is up and its subscriptions acknowledged.
    pub fn is_connected(&self) -> bool {
        *self.shared.connected.borrow()
    }

    /// Waits until the connection is up and subscribed; false if it was not within
    /// `timeout`.
    pub async fn wait_connected(&self, timeout: Duration) -> bool {
        let mut connected = self.shared.connected.subscribe();
        tokio::time::timeout(timeout, connected.wait_for(|up| *up))
            .await
            .is_ok_and(|result| result.is_ok())
    }

    /// Stops the connector: disconnects and waits for the actor to end. Messages not
    /// yet acknowledged stay with the broker's session and are redelivered to the next
    /// connection with the same client id.
    pub async fn stop(self) {
        self.actor.stop(None);
        let _ = self.handle.await;
    }
}

/// The connection actor.
struct Connection;

struct ConnectionArgs {
    config: MqttConfig,
    /// TLS for an `mqtts://` broker, built when the connector started.
    transport: Option<rumqttc::Transport>,
    twins: Twins,
    codecs: Vec<Box<dyn Codec>>,
    shared: Arc<Shared>,
}

/// What the connection actor owns.
struct ConnectionState {
    client: AsyncClient,
    tasks: Vec<JoinHandle<()>>,
    shared: Arc<Shared>,
    codecs: Arc<Mutex<Vec<Box<dyn Codec>>>>,
}

/// Messages to the connection actor.
enum ConnectionMsg {
    /// One of the connection's stages ended; the actor fails so its supervisor sees.
    StageEnded(&'static str),
}

/// A received message waiting for its samples to become durable.
/// A message from the broker on its way to decoding. An oversized one has already been
/// counted and its payload released; it is only acknowledged, in its turn.
struct Received {
    publish: Publish,
    oversized: bool,
}

/// The largest packet MQTT 3.1.1 can frame (a remaining length of 268,435,455 bytes,
/// §2.2.3). The connector reads every packet a broker can send, so a message above
/// `max_payload` is dropped and acknowledged instead of breaking the connection, which
/// would have the broker redeliver it forever and stall intake behind it.
const MQTT_MAX_PACKET: usize = 268_435_455;

struct PendingAck {
    epoch: u64,
    publish: Publish,
}

impl Actor for Connection {
    type Msg = ConnectionMsg;
    type State = ConnectionState;
    type Arguments = ConnectionArgs;

    async fn pre_start(
        &self,
        myself: ActorRef<ConnectionMsg>,
        args: ConnectionArgs,
    ) -> Result<ConnectionState, ActorProcessingErr> {
        let ConnectionArgs {
            config,
            transport,
            twins,
            codecs,
            shared,
        } = args;
        let (host, port) = config.broker()?;
        let mut options = MqttOptions::new(client_id_of(&config), host.clone(), port);
        options
            .set_keep_alive(Duration::from_secs(config.keep_alive_secs.max(5)))
            .set_clean_session(false)
            .set_manual_acks(true)
            .set_max_packet_size(MQTT_MAX_PACKET, config.max_packet)
            .set_inflight(u16::MAX)
            .set_request_channel_capacity(REQUESTS);
        if let (Some(user), Some(password)) = (&config.username, &config.password) {
            options.set_credentials(user.clone(), password.clone());
        }
        if let Some(transport) = &transport {
            options.set_transport(transport.clone());
        }
        let mut codecs = codecs;
        if let Some(will) = next_will(&mut codecs) {
            options.set_last_will(will);
        }
        let actuation_options =
            actuate::options(&config, host, port, &client_id_of(&config), transport);
        let (client, eventloop) = AsyncClient::new(options, REQUESTS);
        let codecs = Arc::new(Mutex::new(codecs));
        let (inbound_tx, inbound_rx) = mpsc::channel::<Received>(DRAIN * 4);
        let (ack_tx, ack_rx) = mpsc::unbounded_channel::<(Receipt, Vec<PendingAck>)>();
        let span = tracing::info_span!("mqtt", connector = %config.name);
        let stage =
            |name: &'static str,
             future: std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send>>| {
                let myself = myself.clone();
                let span = span.clone();
                tokio::spawn(
                    async move {
                        future.await;
                        let _ = myself.cast(ConnectionMsg::StageEnded(name));
                    }
                    .instrument(span),
                )
            };
        let stopping = shared.clone();
        let stopping_codecs = codecs.clone();
        let tasks = vec![
            stage(
                "network",
                Box::pin(network(
                    eventloop,
                    client.clone(),
                    twins.clone(),
                    codecs.clone(),
                    inbound_tx,
                    shared.clone(),
                    config.backoff(),
                )),
            ),
            stage(
                "ingest",
                Box::pin(ingest(
                    inbound_rx,
                    ack_tx,
                    client.clone(),
                    codecs.clone(),
                    twins.clone(),
                    shared.clone(),
                )),
            ),
            stage(
                "acknowledge",
                Box::pin(acknowledge(ack_rx, client.clone(), shared.clone())),
            ),
            stage(
                "publish",
                Box::pin(publish(
                    client.clone(),
                    codecs.clone(),
                    twins.clone(),
                    shared.clone(),
                )),
            ),
            stage(
                "actuate",
                Box::pin(actuate::run(
                    actuation_options,
                    codecs,
                    twins,
                    shared,
                    config.resend,
                    config.reach(),
                    config.backoff(),
                )),
            ),
        ];
        Ok(ConnectionState {
            client,
            tasks,
            shared: stopping,
            codecs: stopping_codecs,
        })
    }

    async fn handle(
        &self,
        _myself: ActorRef<ConnectionMsg>,
        message: ConnectionMsg,
        _state: &mut ConnectionState,
    ) -> Result<(), ActorProcessingErr> {
        match message {
            ConnectionMsg::StageEnded(stage) => {
                Err(format!("mqtt connection stage `{stage}` ended").into())
            }
        }
    }

    async fn post_stop(
        &self,
        _myself: ActorRef<ConnectionMsg>,
        state: &mut ConnectionState,
    ) -> Result<(), ActorProcessingErr> {
        state.shared.stopping.store(true, Ordering::Release);
        let mut farewell = Vec::new();
        for codec in state.codecs.lock().iter_mut() {
            codec.on_stopping(&mut farewell);
        }
        for message in farewell {
            send(&state.client, message, &state.shared);
        }
        let _ = state.client.try_disconnect();
        // Give the network stage a moment to send the DISCONNECT.
        tokio::time::sleep(Duration::from_millis(20)).await;
        for task in &state.tasks {
            task.abort();
        }
        Ok(())
    }
}

/// Drives the connection: reconnects with backoff, subscribes on every connection,
/// and hands received messages to the ingest stage.
async fn network(
    mut eventloop: EventLoop,
    client: AsyncClient,
    twins: Twins,
    codecs: Arc<Mutex<Vec<Box<dyn Codec>>>>,
    inbound: mpsc::Sender<Received>,
    shared: Arc<Shared>,
    (min_backoff, max_backoff): (Duration, Duration),
) {
    let max_payload = shared.max_payload;
    let mut backoff = min_backoff;
    let mut was_up = false;
    loop {
        if shared.reconnect.swap(false, Ordering::AcqRel) {
            tracing::warn!("reconnecting so the broker redelivers unacknowledged messages");
            eventloop.clean();
            shared.connected.send_replace(false);
            renew_will(&mut eventloop, &codecs);
        }
        match eventloop.poll().await {
            Ok(Event::Incoming(Packet::Publish(mut publish))) => {
                shared.stats.received.fetch_add(1, Ordering::Relaxed);
                let size = publish.payload.len();
                let oversized = size > max_payload;
                if oversized {
                    shared.drops.record(
                        DropKind::Oversized,
                        &format_args!("`{}`: {size} bytes (limit {max_payload})", publish.topic),
                    );
                    publish.payload = Default::default();
                }
                let received = Received { publish, oversized };
                if inbound.send(received).await.is_err() {
                    return;
                }
            }
            Ok(Event::Incoming(Packet::ConnAck(ack))) => {
                backoff = min_backoff;
                was_up = true;
                *shared.last_error.lock() = None;
                shared.epoch.fetch_add(1, Ordering::AcqRel);
                let before = shared.stats.connections.fetch_add(1, Ordering::Relaxed);
                tracing::info!(
                    session_present = ack.session_present,
                    "connected to the broker"
                );
                if before > 0 && !ack.session_present {
                    tracing::warn!(
                        "the broker kept no session for this connector: what was published while it was away is lost"
                    );
                }
                let (filters, hello) = {
                    let mut codecs = codecs.lock();
                    let mut hello = Vec::new();
                    let mut filters = Vec::new();
                    for codec in codecs.iter_mut() {
                        filters.extend(codec.filters());
                        codec.on_connected(&mut hello);
                    }
                    (filters, hello)
                };
                let subscribing = !filters.is_empty();
                let subscriptions = filters
                    .into_iter()
                    .map(|filter| rumqttc::SubscribeFilter::new(filter, QoS::AtLeastOnce));
                if let Err(error) = client.try_subscribe_many(subscriptions) {
                    tracing::error!(%error, "cannot queue the subscriptions");
                }
                for message in hello {
                    send(&client, message, &shared);
                }
                // Up once the subscriptions hold: what is published from then on
                // reaches the connector.
                if !subscribing {
                    shared.connected.send_replace(true);
                }
            }
            Ok(Event::Incoming(Packet::SubAck(ack))) => {
                shared.connected.send_replace(true);
                let refused = ack
                    .return_codes
                    .iter()
                    .filter(|code| matches!(code, rumqttc::SubscribeReasonCode::Failure))
                    .count();
                if refused > 0 {
                    tracing::error!(
                        refused,
                        "the broker refused subscriptions; their channels go stale"
                    );
                    twins.sources_lost(
                        &shared.sources,
                        &format!(
                            "mqtt `{}`: the broker refused {refused} subscription(s)",
                            shared.name
                        ),
                    );
                }
            }
            Ok(_) => {}
            Err(_) if shared.stopping.load(Ordering::Acquire) => return,
            Err(error) => {
                if was_up {
                    tracing::warn!(%error, "connection to the broker lost; reconnecting");
                    was_up = false;
                    twins.sources_lost(
                        &shared.sources,
                        &format!("mqtt `{}` lost its broker", shared.name),
                    );
                }
                let why = error_chain(&error);
                let previous = shared.last_error.lock().replace(why.clone());
                if previous.as_deref() == Some(why.as_str()) {
                    tracing::debug!(error = %why, ?backoff, "broker still unreachable; retrying");
                } else {
                    tracing::warn!(error = %why, ?backoff, "cannot connect to the broker; retrying");
                }
                shared.connected.send_replace(false);
                renew_will(&mut eventloop, &codecs);
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(max_backoff);
            }
        }
    }
}

/// An error and its causes, one sentence: a TLS failure says what about the
/// certificate or the handshake went wrong.
fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        let cause_text = cause.to_string();
        if !text.contains(&cause_text) {
            text.push_str(": ");
            text.push_str(&cause_text);
        }
        source = cause.source();
    }
    text
}

/// The last will of the next connection, if a layout has one.
fn next_will(codecs: &mut [Box<dyn Codec>]) -> Option<LastWill> {
    let now = Timestamp::now();
    let will = codecs.iter_mut().find_map(|codec| codec.last_will(now))?;
    let qos = will.qos();
    Some(LastWill::new(will.topic, will.payload, qos, will.retain))
}

/// Gives the next CONNECT its own last will (a Sparkplug STATE timestamp per
/// connection).
fn renew_will(eventloop: &mut EventLoop, codecs: &Mutex<Vec<Box<dyn Codec>>>) {
    if let Some(will) = next_will(&mut codecs.lock()) {
        eventloop.mqtt_options.set_last_will(will);
    }
}

/// Queues a publish without waiting; counts it.
fn send(client: &AsyncClient, message: Outgoing, shared: &Shared) {
    let qos = message.qos();
    match client.try_publish(message.topic, qos, message.retain, message.payload) {
        Ok(()) => {
            shared.stats.published.fetch_add(1, Ordering::Relaxed);
        }
        Err(error) => tracing::warn!(%error, "cannot queue a publish; dropped"),
    }
}

/// Decodes received messages in batches, hands their readings to the twins, and
/// queues the messages for acknowledgement once their samples are durable.
async fn ingest(
    mut inbound: mpsc::Receiver<Received>,
    acks: mpsc::UnboundedSender<(Receipt, Vec<PendingAck>)>,
    client: AsyncClient,
    codecs: Arc<Mutex<Vec<Box<dyn Codec>>>>,
    twins: Twins,
    shared: Arc<Shared>,
) {
    let mut batch = Vec::with_capacity(DRAIN);
    let mut decoded = Inbound::default();
    while inbound.recv_many(&mut batch, DRAIN).await > 0 {
        let epoch = shared.epoch.load(Ordering::Acquire);
        let now = Timestamp::now();
        {
            let mut codecs = codecs.lock();
            for Received { publish, oversized } in &batch {
                if *oversized {
                    continue;
                }
                let topic = publish.topic.as_str();
                match codecs.iter_mut().find(|codec| codec.claims(topic)) {
                    Some(codec) => {
                        codec.decode(topic, &publish.payload, now, &mut decoded, &shared.drops)
                    }
                    None => shared
                        .drops
                        .record(DropKind::UnknownTopic, &format_args!("`{topic}`")),
                }
            }
        }
        for reply in decoded.replies.drain(..) {
            send(&client, reply, &shared);
        }
        if !decoded.conditions.is_empty() {
            // Acknowledged in order: the messages of this batch wait for these too.
            let receipt = twins.mark(decoded.conditions.drain(..));
            if acks.send((receipt, Vec::new())).is_err() {
                return;
            }
        }
        let pending = batch
            .drain(..)
            .map(|received| PendingAck {
                epoch,
                publish: received.publish,
            })
            .collect();
        let result = twins.ingest_batch(decoded.readings.iter().copied()).await;
        let receipt = match result {
            Ok(result) => {
                for (position, reason) in &result.rejected {
                    let (target, reading) = decoded.readings[*position];
                    let value = reading.value;
                    match twins.describe(target) {
                        Some((asset, channel)) => shared.drops.refuse(
                            *reason,
                            &format_args!("{asset} {channel} = {value}: {}", reason.as_str()),
                        ),
                        None => shared
                            .drops
                            .refuse(*reason, &format_args!("= {value}: {}", reason.as_str())),
                    }
                }
                result.receipt
            }
            Err(error) => {
                tracing::error!(%error, "the twins refused a batch; stopping intake");
                return;
            }
        };
        decoded.readings.clear();
        if acks.send((receipt, pending)).is_err() {
            return;
        }
    }
}

/// Acknowledges messages, in the order received, once their samples are durable.
async fn acknowledge(
    mut queue: mpsc::UnboundedReceiver<(Receipt, Vec<PendingAck>)>,
    client: AsyncClient,
    shared: Arc<Shared>,
) {
    while let Some((receipt, pending)) = queue.recv().await {
        if let Err(error) = receipt.durable().await {
            // Not durable: leave the messages unacknowledged and start a new session
            // so the broker delivers them again.
            tracing::warn!(%error, messages = pending.len(), "samples not durable; the broker will redeliver");
            shared.reconnect.store(true, Ordering::Release);
            continue;
        }
        let epoch = shared.epoch.load(Ordering::Acquire);
        for ack in pending {
            if ack.epoch != epoch || ack.publish.qos == QoS::AtMostOnce {
                continue;
            }
            if client.ack(&ack.publish).await.is_err() {
                return;
            }
            shared.stats.acknowledged.fetch_add(1, Ordering::Relaxed);
        }
    }
}

/// Publishes verdicts through every layout.
async fn publish(
    client: AsyncClient,
    codecs: Arc<Mutex<Vec<Box<dyn Codec>>>>,
    twins: Twins,
    shared: Arc<Shared>,
) {
    let mut verdicts = twins.verdicts();
    let mut outgoing = Vec::new();
    loop {
        match verdicts.recv().await {
            Ok(verdict) => {
                for codec in codecs.lock().iter_mut() {
                    codec.verdict(&verdict, &mut outgoing);
                }
            }
            Err(broadcast::error::RecvError::Lagged(missed)) => {
                shared.stats.lagged.fetch_add(missed, Ordering::Relaxed);
                tracing::warn!(missed, "verdicts missed: the connector fell behind");
            }
            Err(broadcast::error::RecvError::Closed) => return,
        }
        for message in outgoing.drain(..) {
            if client
                .publish(
                    message.topic,
                    QoS::AtLeastOnce,
                    message.retain,
                    message.payload,
                )
                .await
                .is_err()
            {
                return;
            }
            shared.stats.published.fetch_add(1, Ordering::Relaxed);
        }
    }
}

/// The connection's client id: configured, or `doppel-<name>`.
fn client_id_of(config: &MqttConfig) -> String {
    config
        .client_id
        .clone()
        .unwrap_or_else(|| format!("doppel-{}", config.name))
}
