//! Loopback ports for tests.

use std::net::{SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::time::{Duration, Instant};

/// A free TCP port on 127.0.0.1, bound and released: a port for a server a test starts
/// a moment later (a child process, possibly restarted on the same port).
///
/// Ports come from below the kernel's ephemeral range, never handed out twice by this
/// process: a port the kernel picked for `bind(0)` is also the kind it gives outgoing
/// connections, so one of the many a busy test run makes could take it before the
/// server binds.
pub fn free_tcp_port() -> u16 {
    free_port(|port| TcpListener::bind(("127.0.0.1", port)).is_ok())
}

/// A free UDP port on 127.0.0.1, bound and released (see [`free_tcp_port`]).
pub fn free_udp_port() -> u16 {
    free_port(|port| UdpSocket::bind(("127.0.0.1", port)).is_ok())
}

/// The first port from a process-wide cursor below the ephemeral range that `free`
/// accepts.
fn free_port(free: impl Fn(u16) -> bool) -> u16 {
    use std::sync::atomic::{AtomicU32, Ordering};
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let (low, high) = private_range();
    let span = u32::from(high - low);
    if NEXT.load(Ordering::Relaxed) == 0 {
        // Processes started together begin at different places.
        let start = std::process::id().wrapping_mul(2_654_435_761) % span;
        let _ = NEXT.compare_exchange(0, start + 1, Ordering::Relaxed, Ordering::Relaxed);
    }
    for _ in 0..span {
        let next = NEXT.fetch_add(1, Ordering::Relaxed);
        let port = low + u16::try_from(next % span).expect("span fits in u16");
        if free(port) {
            return port;
        }
    }
    panic!("no free loopback port in {low}..{high}");
}

/// Ports below the kernel's ephemeral range (`ip_local_port_range`, 32768 by default)
/// and above the well-known and commonly configured ones.
fn private_range() -> (u16, u16) {
    let ephemeral_low = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|text| text.split_whitespace().next()?.parse::<u16>().ok())
        .unwrap_or(32_768);
    let high = ephemeral_low.clamp(12_000, 32_768);
    (high - 10_000, high)
}

/// Waits until something accepts TCP connections on 127.0.0.1:`port`; `false` when
/// nothing does within `timeout`.
pub fn wait_listening(port: u16, timeout: Duration) -> bool {
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if TcpStream::connect_timeout(&addr, Duration::from_millis(100)).is_ok() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    false
}
