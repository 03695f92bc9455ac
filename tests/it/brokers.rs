//! MQTT brokers for tests: the embedded rumqttd, Mosquitto (from the test kit, a
//! system peer), and test clients.

use std::net::SocketAddr;
use std::time::Duration;

use doppel::connectors::broker::EmbeddedBroker;
use rumqttc::{AsyncClient, EventLoop, MqttOptions};

pub use doppel_testkit::mosquitto::Mosquitto;
pub use doppel_testkit::net::free_tcp_port as free_port;

/// An embedded broker on a free loopback port.
pub fn embedded() -> EmbeddedBroker {
    EmbeddedBroker::start(SocketAddr::from(([127, 0, 0, 1], 0))).unwrap()
}

/// A test MQTT client on `url` (`mqtt://127.0.0.1:PORT`).
pub fn client(url: &str, id: &str, clean: bool) -> (AsyncClient, EventLoop) {
    let port: u16 = url.rsplit(':').next().unwrap().parse().unwrap();
    let mut options = MqttOptions::new(id, "127.0.0.1", port);
    options
        .set_keep_alive(Duration::from_secs(10))
        .set_clean_session(clean)
        .set_max_packet_size(8 << 20, 8 << 20)
        // The whole packet id space: rumqttc stalls a publisher whose next id is still
        // unacknowledged (a "collision") and can lose that publish.
        .set_inflight(u16::MAX);
    AsyncClient::new(options, 100_000)
}
