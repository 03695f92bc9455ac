//! A UDP relay that records what it forwards: what an observer of the network between
//! two gossiping nodes sees, without a packet capture.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use tokio::net::UdpSocket;
use tokio::task::JoinHandle;

/// Forwards datagrams between one client and `target`, keeping a copy of each. A
/// datagram from anyone but the target is sent on to the target, and makes its sender
/// the client the target's datagrams go back to.
pub struct UdpRelay {
    /// The address to send to instead of the target.
    pub addr: SocketAddr,
    seen: Arc<Mutex<Vec<Vec<u8>>>>,
    task: JoinHandle<()>,
}

impl UdpRelay {
    /// A relay on a free loopback port in front of `target`.
    pub async fn start(target: SocketAddr) -> Self {
        let socket = UdpSocket::bind("127.0.0.1:0")
            .await
            .expect("a loopback port for the relay");
        let addr = socket.local_addr().expect("the relay's address");
        let seen = Arc::new(Mutex::new(Vec::new()));
        let kept = seen.clone();
        let task = tokio::spawn(async move {
            let mut buf = vec![0u8; 65_536];
            let mut client = None;
            loop {
                let Ok((len, from)) = socket.recv_from(&mut buf).await else {
                    continue;
                };
                kept.lock()
                    .unwrap_or_else(|poisoned| poisoned.into_inner())
                    .push(buf[..len].to_vec());
                let to = if from == target {
                    match client {
                        Some(client) => client,
                        None => continue,
                    }
                } else {
                    client = Some(from);
                    target
                };
                let _ = socket.send_to(&buf[..len], to).await;
            }
        });
        Self { addr, seen, task }
    }

    /// Every datagram forwarded so far, in both directions.
    pub fn datagrams(&self) -> Vec<Vec<u8>> {
        self.seen
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .clone()
    }
}

impl Drop for UdpRelay {
    fn drop(&mut self) {
        self.task.abort();
    }
}
