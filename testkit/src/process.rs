//! Child processes in tests: bounded waits and signals.

use std::process::{Child, Command, Output};
use std::time::Duration;

/// Sends the signal named `signal` (`INT`, `TERM`, `KILL`) to process `pid`, through
/// `kill(1)`: the workspace forbids the unsafe `libc::kill`.
pub fn signal(pid: u32, signal: &str) {
    let _ = Command::new("kill")
        .arg(format!("-{signal}"))
        .arg(pid.to_string())
        .status();
}

/// Waits for `child` to exit and collects its output; kills it and fails the test when
/// it is still running after `limit`.
pub fn wait_for_exit(child: Child, limit: Duration) -> Output {
    let pid = child.id();
    let (done, result) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = done.send(child.wait_with_output());
    });
    match result.recv_timeout(limit) {
        Ok(output) => output.expect("the child's output is readable"),
        Err(_) => {
            signal(pid, "KILL");
            panic!("process {pid} still running after {limit:?}");
        }
    }
}

/// A child process killed (and reaped) when dropped, so a failing test leaves none
/// behind.
pub struct KillOnDrop(pub Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}
