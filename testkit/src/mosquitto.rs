//! Mosquitto, the independent MQTT broker the tests and benches check Doppel against.
//!
//! Mosquitto is a system peer: a test that needs it finds it on PATH (or in
//! /usr/sbin) and says loudly that it skipped when it is missing, unless
//! `DOPPEL_REQUIRE_PEERS=1`, under which a missing peer fails the test.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::net::{free_tcp_port, wait_listening};
use crate::process::signal;

/// Whether missing system peers fail tests instead of skipping them
/// (`DOPPEL_REQUIRE_PEERS=1`, as CI sets it).
pub fn peers_required() -> bool {
    std::env::var("DOPPEL_REQUIRE_PEERS").is_ok_and(|v| v == "1")
}

/// Where the Mosquitto binary is, if installed.
fn binary() -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain([PathBuf::from("/usr/sbin"), PathBuf::from("/usr/local/sbin")])
        .map(|dir| dir.join("mosquitto"))
        .find(|candidate| candidate.is_file())
}

/// A Mosquitto broker child process on a loopback port, with no limit on messages in
/// flight or queued (as a Doppel node's broker should be configured) and, when asked,
/// persistence in a directory of its own. Killed when dropped.
pub struct Mosquitto {
    binary: PathBuf,
    dir: tempfile::TempDir,
    port: u16,
    persistent: bool,
    /// A second listener speaking TLS, when started with one: its port.
    tls_port: Option<u16>,
    child: Option<Child>,
}

/// A TLS listener that requires client certificates: the CA that signs the clients'
/// certificates, and the broker's own certificate and key, all PEM.
pub struct TlsListener {
    /// The CA client certificates must chain to.
    pub ca_pem: String,
    /// The broker's certificate.
    pub cert_pem: String,
    /// The broker's private key.
    pub key_pem: String,
}

impl Mosquitto {
    /// Starts a persistent Mosquitto (sessions survive [`Mosquitto::restart`]) on a
    /// free port, or returns `None` after saying loudly that `test` is skipped when it
    /// is not installed and peers are not required.
    pub fn start(test: &str) -> Option<Mosquitto> {
        Self::launch_new(test, true)
    }

    /// Like [`Mosquitto::start`], keeping everything in memory (for benchmarks, where
    /// periodic saves would only add noise).
    pub fn start_in_memory(test: &str) -> Option<Mosquitto> {
        Self::launch_new(test, false)
    }

    /// Like [`Mosquitto::start`], with a second loopback listener that speaks TLS and
    /// requires a client certificate signed by the listener's CA
    /// ([`Mosquitto::tls_url`]).
    pub fn start_tls(test: &str, tls: &TlsListener) -> Option<Mosquitto> {
        let mut broker = Self::prepare(test, true)?;
        // Mosquitto drops to its own user: the files live in its world-readable dir.
        for (name, pem) in [
            ("ca.pem", &tls.ca_pem),
            ("broker.pem", &tls.cert_pem),
            ("broker.key", &tls.key_pem),
        ] {
            std::fs::write(broker.dir.path().join(name), pem).expect("a TLS file is written");
        }
        broker.tls_port = Some(free_tcp_port());
        broker.launch();
        Some(broker)
    }

    fn launch_new(test: &str, persistent: bool) -> Option<Mosquitto> {
        let mut broker = Self::prepare(test, persistent)?;
        broker.launch();
        Some(broker)
    }

    fn prepare(test: &str, persistent: bool) -> Option<Mosquitto> {
        let Some(binary) = binary() else {
            assert!(
                !peers_required(),
                "{test}: mosquitto is not installed and DOPPEL_REQUIRE_PEERS=1"
            );
            eprintln!(
                "\n*** SKIPPED {test}: mosquitto is not on PATH (apt-get install mosquitto) ***\n"
            );
            return None;
        };
        let dir = tempfile::tempdir().expect("a temp dir for mosquitto");
        // Started as root, Mosquitto drops to its own user, which must be able to
        // write its persistence file here.
        std::fs::set_permissions(
            dir.path(),
            std::os::unix::fs::PermissionsExt::from_mode(0o777),
        )
        .expect("the temp dir's mode can be set");
        Some(Mosquitto {
            binary,
            dir,
            port: free_tcp_port(),
            persistent,
            tls_port: None,
            child: None,
        })
    }

    fn launch(&mut self) {
        let config = self.dir.path().join("mosquitto.conf");
        let mut text = format!(
            "listener {port} 127.0.0.1\nallow_anonymous true\nmax_inflight_messages 0\n\
             max_queued_messages 0\nmessage_size_limit 33554432\n",
            port = self.port
        );
        if self.persistent {
            text.push_str(&format!(
                "persistence true\npersistence_location {}/\nautosave_interval 1\n",
                self.dir.path().display()
            ));
        }
        if let Some(port) = self.tls_port {
            let dir = self.dir.path().display();
            text.push_str(&format!(
                "listener {port} 127.0.0.1\ncafile {dir}/ca.pem\ncertfile {dir}/broker.pem\n\
                 keyfile {dir}/broker.key\nrequire_certificate true\n"
            ));
        }
        std::fs::write(&config, text).expect("the mosquitto config is written");
        let child = Command::new(&self.binary)
            .arg("-c")
            .arg(&config)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("mosquitto starts");
        self.child = Some(child);
        for port in std::iter::once(self.port).chain(self.tls_port) {
            assert!(
                wait_listening(port, Duration::from_secs(10)),
                "mosquitto did not listen on 127.0.0.1:{port}"
            );
        }
    }

    /// The broker's URL, `mqtt://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("mqtt://127.0.0.1:{}", self.port)
    }

    /// The TLS listener's URL, `mqtts://127.0.0.1:PORT`, when started with one.
    pub fn tls_url(&self) -> Option<String> {
        self.tls_port
            .map(|port| format!("mqtts://127.0.0.1:{port}"))
    }

    /// Stops the broker gracefully (it saves its persistent sessions) and waits.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            signal(child.id(), "TERM");
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
