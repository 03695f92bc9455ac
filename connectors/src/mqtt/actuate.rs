//! The actuation connection: a second MQTT connection of the connector that carries
//! only actuations, so each publish can be followed to its PUBACK.
//!
//! rumqttc reports an outgoing publish by packet id only, in the order the client
//! queued them; on this connection one task queues every publish and records, in the
//! same order under one lock, which actuation it carries. The broker's PUBACK then
//! marks that actuation's values delivered. The connection has a clean session and
//! never lets the client retransmit on its own: what was not acknowledged when the
//! connection dropped stays pending in the twin and is sent again (by the resend
//! policy, never past its deadline, safety actions first) once the connection is back.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use doppel_runtime::AssetPath;
use doppel_runtime::twin::{Actuation, Twins};
use parking_lot::Mutex;
use rumqttc::{AsyncClient, Event, EventLoop, MqttOptions, Outgoing as Sent, Packet};
use tokio::sync::{broadcast, watch};

use super::codec::{Codec, Outgoing};
use super::{MqttConfig, Shared};
use crate::delivery::{Reporter, Resend, SentGuard, past_deadline};
use crate::reach::Reach;

/// Publishes the actuation connection may keep unacknowledged: the whole packet id
/// space, so a publish never waits on an id still in flight.
const INFLIGHT: u16 = u16::MAX;

/// What one queued publish carries.
#[derive(Debug, Clone)]
struct Token {
    asset: AssetPath,
    version: u64,
    desired: Vec<String>,
}

/// The publishes queued and not yet sent, in order, and those sent and not yet
/// acknowledged, by packet id.
#[derive(Default)]
struct Tracking {
    connected: bool,
    queued: VecDeque<Token>,
    inflight: HashMap<u16, Token>,
}

/// The options of the actuation connection: the main connection's broker and
/// credentials, client id `<client id>-act`, a clean session.
pub(super) fn options(
    config: &MqttConfig,
    host: String,
    port: u16,
    client_id: &str,
    transport: Option<rumqttc::Transport>,
) -> MqttOptions {
    let mut options = MqttOptions::new(format!("{client_id}-act"), host, port);
    options
        .set_keep_alive(Duration::from_secs(config.keep_alive_secs.max(5)))
        .set_clean_session(true)
        .set_max_packet_size(config.max_packet, config.max_packet)
        .set_inflight(INFLIGHT);
    if let (Some(user), Some(password)) = (&config.username, &config.password) {
        options.set_credentials(user.clone(), password.clone());
    }
    if let Some(transport) = transport {
        options.set_transport(transport);
    }
    options
}

/// Runs the actuation connection until the connector stops: its network loop and its
/// publisher.
pub(super) async fn run(
    options: MqttOptions,
    codecs: Arc<Mutex<Vec<Box<dyn Codec>>>>,
    twins: Twins,
    shared: Arc<Shared>,
    resend: Resend,
    reach: Reach,
    backoff: (Duration, Duration),
) {
    let (client, eventloop) = AsyncClient::new(options, 1024);
    let tracking = Arc::new(Mutex::new(Tracking::default()));
    let (connections, connected) = watch::channel(0u64);
    let reporter = Reporter::new(twins.clone(), format!("mqtt:{}", shared.name));
    let network = network(
        eventloop,
        tracking.clone(),
        reporter.clone(),
        shared.clone(),
        connections,
        backoff,
    );
    let publisher = Publisher {
        client: client.clone(),
        codecs,
        twins,
        shared,
        tracking,
        reporter,
        resend,
        guard: SentGuard::default(),
        reach,
        outgoing: Vec::new(),
    };
    tokio::select! {
        () = network => {}
        () = publisher.run(connected) => {}
    }
    let _ = client.try_disconnect();
}

/// Polls the actuation connection: pairs each sent publish with its token, reports
/// acknowledged ones delivered, and on a lost connection drops everything the client
/// still holds (the twins keep those values pending).
async fn network(
    mut eventloop: EventLoop,
    tracking: Arc<Mutex<Tracking>>,
    reporter: Reporter,
    shared: Arc<Shared>,
    connections: watch::Sender<u64>,
    (min_backoff, max_backoff): (Duration, Duration),
) {
    let mut backoff = min_backoff;
    loop {
        match eventloop.poll().await {
            Ok(Event::Incoming(Packet::ConnAck(_))) => {
                backoff = min_backoff;
                tracking.lock().connected = true;
                tracing::info!("actuation connection to the broker established");
                connections.send_modify(|count| *count += 1);
            }
            Ok(Event::Outgoing(Sent::Publish(pkid))) => {
                let token = {
                    let mut tracking = tracking.lock();
                    match tracking.queued.pop_front() {
                        // QoS 0 (Sparkplug commands): no acknowledgement will come;
                        // written to the broker connection is as far as it is known.
                        Some(token) if pkid == 0 => Some(token),
                        Some(token) => {
                            tracking.inflight.insert(pkid, token);
                            None
                        }
                        None => None,
                    }
                };
                if let Some(token) = token {
                    shared.stats.delivered.fetch_add(1, Ordering::Relaxed);
                    reporter.delivered(&token.asset, token.version, token.desired);
                }
            }
            Ok(Event::Incoming(Packet::PubAck(ack))) => {
                let token = tracking.lock().inflight.remove(&ack.pkid);
                if let Some(token) = token {
                    shared.stats.delivered.fetch_add(1, Ordering::Relaxed);
                    reporter.delivered(&token.asset, token.version, token.desired);
                }
            }
            Ok(_) => {}
            Err(_) if shared.stopping.load(Ordering::Acquire) => return,
            Err(error) => {
                let dropped = {
                    let mut tracking = tracking.lock();
                    let was_connected = std::mem::replace(&mut tracking.connected, false);
                    // Nothing the client holds goes out later on its own: the twins keep
                    // these values pending, and the resend policy decides.
                    eventloop.clean();
                    eventloop.pending.clear();
                    let dropped = tracking.queued.len() + tracking.inflight.len();
                    tracking.queued.clear();
                    tracking.inflight.clear();
                    if was_connected {
                        tracing::warn!(%error, unacknowledged = dropped, "actuation connection lost; unacknowledged actuations stay pending");
                    } else {
                        tracing::debug!(%error, ?backoff, "broker unreachable for actuations; retrying");
                    }
                    dropped
                };
                let _ = dropped;
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(max_backoff);
            }
        }
    }
}

/// Queues actuations on the actuation connection, each publish paired with its token.
struct Publisher {
    client: AsyncClient,
    codecs: Arc<Mutex<Vec<Box<dyn Codec>>>>,
    twins: Twins,
    shared: Arc<Shared>,
    tracking: Arc<Mutex<Tracking>>,
    reporter: Reporter,
    resend: Resend,
    guard: SentGuard,
    /// Which twins' desired values its layouts publish.
    reach: Reach,
    outgoing: Vec<Outgoing>,
}

impl Publisher {
    async fn run(mut self, mut connections: watch::Receiver<u64>) {
        let mut actuations = self.twins.actuations();
        loop {
            tokio::select! {
                changed = connections.changed() => {
                    if changed.is_err() {
                        return;
                    }
                    connections.borrow_and_update();
                    self.guard.reconnected();
                    self.catch_up().await;
                }
                received = actuations.recv() => match received {
                    Ok(actuation) => self.actuate(&actuation),
                    Err(broadcast::error::RecvError::Lagged(missed)) => {
                        self.shared.stats.lagged.fetch_add(missed, Ordering::Relaxed);
                        tracing::error!(missed, "actuations missed: the connector fell behind; they stay pending and are sent with the next connection");
                    }
                    Err(broadcast::error::RecvError::Closed) => return,
                },
            }
        }
    }

    /// A new connection: sends again what did not reach the broker, by the resend policy.
    async fn catch_up(&mut self) {
        let undelivered = self.twins.undelivered(None).await;
        let mut sent = 0;
        for actuation in &undelivered {
            let carried = self.reach.carried(actuation);
            if past_deadline(actuation) || carried.is_empty() {
                continue;
            }
            match self.resend {
                Resend::Never => self.reporter.failed(
                    actuation,
                    carried,
                    "not sent again when the connection came back (resend = \"never\")",
                ),
                Resend::Latest => {
                    sent += 1;
                    self.send(actuation);
                }
            }
        }
        if sent > 0 {
            tracing::info!(
                actuations = sent,
                "sent again what had not reached the broker"
            );
        }
    }

    fn actuate(&mut self, actuation: &Actuation) {
        let _span = tracing::info_span!("mqtt_actuation", asset = %actuation.asset(), command_id = %actuation.command_id()).entered();
        if past_deadline(actuation) {
            let reason = "its deadline passed before it reached the connector; not published";
            tracing::warn!(command = actuation.command(), "{reason}");
            self.reporter
                .failed(actuation, self.reach.carried(actuation), reason);
            return;
        }
        let connected = self.tracking.lock().connected;
        if connected {
            self.send(actuation);
        } else if !self.reach.carried(actuation).is_empty() {
            if self.resend == Resend::Never {
                self.reporter.failed(
                    actuation,
                    self.reach.carried(actuation),
                    "not connected, and resend = \"never\"",
                );
            } else if actuation.is_safety() {
                tracing::error!(
                    command = actuation.command(),
                    "safety action pending: the broker is unreachable; it is sent first when the connection is back"
                );
            } else {
                tracing::warn!(
                    command = actuation.command(),
                    "actuation pending: the broker is unreachable; it is sent when the connection is back"
                );
            }
        }
    }

    /// Queues the publishes of the values of `actuation` this connection has not sent
    /// and no newer actuation has, each with its token.
    fn send(&mut self, actuation: &Actuation) {
        let admitted = self.guard.admit(actuation);
        if admitted.is_empty() {
            return;
        }
        let actuation = actuation.only(&admitted);
        for codec in self.codecs.lock().iter_mut() {
            codec.actuation(&actuation, &mut self.outgoing);
        }
        let mut tracking = self.tracking.lock();
        for message in self.outgoing.drain(..) {
            if !tracking.connected {
                break;
            }
            tracking.queued.push_back(Token {
                asset: actuation.asset().clone(),
                version: actuation.version(),
                desired: admitted.clone(),
            });
            let qos = message.qos();
            match self
                .client
                .try_publish(message.topic, qos, message.retain, message.payload)
            {
                Ok(()) => {
                    self.shared.stats.published.fetch_add(1, Ordering::Relaxed);
                }
                Err(error) => {
                    tracking.queued.pop_back();
                    tracing::warn!(%error, "cannot queue an actuation; it stays pending");
                }
            }
        }
        self.outgoing.clear();
    }
}
