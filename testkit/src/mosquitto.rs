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
    child: Option<Child>,
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

    fn launch_new(test: &str, persistent: bool) -> Option<Mosquitto> {
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
        let mut broker = Mosquitto {
            binary,
            dir,
            port: free_tcp_port(),
            persistent,
            child: None,
        };
        broker.launch();
        Some(broker)
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
        assert!(
            wait_listening(self.port, Duration::from_secs(10)),
            "mosquitto did not listen on 127.0.0.1:{}",
            self.port
        );
    }

    /// The broker's URL, `mqtt://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("mqtt://127.0.0.1:{}", self.port)
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
