//! MQTT brokers for tests: the embedded rumqttd and a Mosquitto child process.
//!
//! Mosquitto is a system peer: a test that needs it finds it on PATH (or in
//! /usr/sbin) and says loudly that it skipped when it is missing, unless
//! `DOPPEL_REQUIRE_PEERS=1`, under which a missing peer fails the test.

use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use doppel::connectors::broker::EmbeddedBroker;
use rumqttc::{AsyncClient, EventLoop, MqttOptions};

/// A free loopback port (bound and released).
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// An embedded broker on a free loopback port.
pub fn embedded() -> EmbeddedBroker {
    EmbeddedBroker::start(SocketAddr::from(([127, 0, 0, 1], 0))).unwrap()
}

/// Where the Mosquitto binary is, if installed.
fn mosquitto_binary() -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain([PathBuf::from("/usr/sbin"), PathBuf::from("/usr/local/sbin")])
        .map(|dir| dir.join("mosquitto"))
        .find(|candidate| candidate.is_file())
}

/// Whether missing peers fail tests instead of skipping them.
fn peers_required() -> bool {
    std::env::var("DOPPEL_REQUIRE_PEERS").is_ok_and(|v| v == "1")
}

/// A Mosquitto broker child process on a loopback port, with persistence in a
/// directory of its own. Killed when dropped.
pub struct Mosquitto {
    binary: PathBuf,
    dir: tempfile::TempDir,
    port: u16,
    child: Option<Child>,
}

impl Mosquitto {
    /// Starts Mosquitto on a free port, or returns `None` (after saying so loudly)
    /// when it is not installed and peers are not required.
    pub fn start(test: &str) -> Option<Mosquitto> {
        let Some(binary) = mosquitto_binary() else {
            assert!(
                !peers_required(),
                "{test}: mosquitto is not installed and DOPPEL_REQUIRE_PEERS=1"
            );
            eprintln!(
                "\n*** SKIPPED {test}: mosquitto is not on PATH (apt-get install mosquitto) ***\n"
            );
            return None;
        };
        let dir = tempfile::tempdir().unwrap();
        // Started as root, Mosquitto drops to its own user, which must be able to
        // write its persistence file here.
        std::fs::set_permissions(
            dir.path(),
            std::os::unix::fs::PermissionsExt::from_mode(0o777),
        )
        .unwrap();
        let mut broker = Mosquitto {
            binary,
            dir,
            port: free_port(),
            child: None,
        };
        broker.launch();
        Some(broker)
    }

    fn launch(&mut self) {
        let config = self.dir.path().join("mosquitto.conf");
        std::fs::write(
            &config,
            format!(
                "listener {port} 127.0.0.1\nallow_anonymous true\npersistence true\n\
                 persistence_location {dir}/\nautosave_interval 1\nmax_inflight_messages 0\n\
                 max_queued_messages 0\nmessage_size_limit 4194304\n",
                port = self.port,
                dir = self.dir.path().display()
            ),
        )
        .unwrap();
        let child = Command::new(&self.binary)
            .arg("-c")
            .arg(&config)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        self.child = Some(child);
        wait_listening(self.port);
    }

    /// The broker's URL.
    pub fn url(&self) -> String {
        format!("mqtt://127.0.0.1:{}", self.port)
    }

    /// Stops the broker gracefully (it saves its persistent sessions) and waits.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = Command::new("kill")
                .arg("-TERM")
                .arg(child.id().to_string())
                .status();
            let deadline = Instant::now() + Duration::from_secs(10);
            while Instant::now() < deadline {
                if let Ok(Some(_)) = child.try_wait() {
                    return;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts it again on the same port with the same persistence.
    pub fn restart(&mut self) {
        self.stop();
        self.launch();
    }
}

impl Drop for Mosquitto {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

fn wait_listening(port: u16) {
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    let deadline = Instant::now() + Duration::from_secs(10);
    while Instant::now() < deadline {
        if TcpStream::connect_timeout(&addr, Duration::from_millis(100)).is_ok() {
            return;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    panic!("broker did not listen on {addr}");
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
