//! An embedded MQTT broker (rumqttd) for development and tests: `doppel dev` runs one
//! so nothing needs installing.
//!
//! It speaks MQTT 3.1.1 on one TCP address and keeps messages in memory. It cannot be
//! stopped: it lives until the process ends, which suits a development node and a test
//! process. Production nodes point at a real broker (Mosquitto, EMQX, HiveMQ).

use std::collections::HashMap;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::time::{Duration, Instant};

use rumqttd::{Broker, Config, ConnectionSettings, RouterConfig, ServerSettings};

/// Why the broker could not start.
#[derive(Debug, thiserror::Error)]
pub enum BrokerError {
    /// The address is taken or cannot be bound.
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// The system's reason.
        source: std::io::Error,
    },
    /// The broker did not accept connections in time.
    #[error("the embedded broker did not come up on {0}")]
    NotReady(SocketAddr),
}

/// A running embedded broker.
#[derive(Debug, Clone, Copy)]
pub struct EmbeddedBroker {
    addr: SocketAddr,
}

/// Largest payload the embedded broker accepts.
pub const MAX_PAYLOAD: usize = 1024 * 1024;

impl EmbeddedBroker {
    /// Starts a broker on `addr` and waits until it accepts connections.
    pub fn start(addr: SocketAddr) -> Result<Self, BrokerError> {
        // rumqttd binds on its own thread and only logs a failure: find out here.
        let probe = TcpListener::bind(addr).map_err(|source| BrokerError::Bind { addr, source })?;
        let addr = probe
            .local_addr()
            .map_err(|source| BrokerError::Bind { addr, source })?;
        drop(probe);
        let server = ServerSettings {
            name: "doppel".into(),
            listen: addr,
            tls: None,
            next_connection_delay_ms: 1,
            connections: ConnectionSettings {
                connection_timeout_ms: 10_000,
                max_payload_size: MAX_PAYLOAD,
                max_inflight_count: 10_000,
                auth: None,
                external_auth: None,
                dynamic_filters: true,
            },
        };
        let config = Config {
            id: 0,
            router: RouterConfig {
                max_connections: 10_010,
                max_outgoing_packet_count: 1000,
                max_segment_size: 16 * 1024 * 1024,
                max_segment_count: 4,
                custom_segment: None,
                initialized_filters: None,
                shared_subscriptions_strategy: Default::default(),
            },
            v4: Some(HashMap::from([("1".to_string(), server)])),
            v5: None,
            ws: None,
            cluster: None,
            console: None,
            bridge: None,
            prometheus: None,
            metrics: None,
        };
        std::thread::Builder::new()
            .name("mqtt-broker".into())
            .spawn(move || {
                let mut broker = Broker::new(config);
                if let Err(error) = broker.start() {
                    tracing::error!(%error, "embedded MQTT broker stopped");
                }
            })
            .map_err(|source| BrokerError::Bind { addr, source })?;
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok() {
                return Ok(Self { addr });
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        Err(BrokerError::NotReady(addr))
    }

    /// The address it listens on.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Its URL for an MQTT connector config.
    pub fn url(&self) -> String {
        format!("mqtt://{}", self.addr)
    }
}
