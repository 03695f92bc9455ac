//! A TCP proxy a test can partition: the network between two nodes, under the test's
//! control.

use std::net::SocketAddr;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::JoinHandle;

/// A TCP proxy that can stall: while partitioned it keeps its connections and accepts
/// new ones but moves no bytes in either direction (a network that drops every
/// packet); healed, everything held back flows.
pub struct PartitionProxy {
    /// The address to dial instead of the target.
    pub addr: SocketAddr,
    partitioned: watch::Sender<bool>,
    task: JoinHandle<()>,
}

impl PartitionProxy {
    /// A proxy on a free loopback port forwarding to `target`.
    pub async fn start(target: SocketAddr) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("a loopback port for the proxy");
        let addr = listener.local_addr().expect("the proxy's address");
        let (partitioned, watch) = watch::channel(false);
        let task = tokio::spawn(async move {
            while let Ok((inbound, _)) = listener.accept().await {
                let watch = watch.clone();
                tokio::spawn(async move {
                    let Ok(outbound) = TcpStream::connect(target).await else {
                        return;
                    };
                    let _ = inbound.set_nodelay(true);
                    let _ = outbound.set_nodelay(true);
                    let (a_read, a_write) = inbound.into_split();
                    let (b_read, b_write) = outbound.into_split();
                    tokio::join!(
                        pump(a_read, b_write, watch.clone()),
                        pump(b_read, a_write, watch)
                    );
                });
            }
        });
        Self {
            addr,
            partitioned,
            task,
        }
    }

    /// Stops moving bytes.
    pub fn partition(&self) {
        self.partitioned.send_replace(true);
    }

    /// Moves bytes again, held-back ones first.
    pub fn heal(&self) {
        self.partitioned.send_replace(false);
    }
}

impl Drop for PartitionProxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Copies `from` to `to` while the link is healed.
async fn pump(
    mut from: OwnedReadHalf,
    mut to: OwnedWriteHalf,
    mut partitioned: watch::Receiver<bool>,
) {
    let mut buffer = vec![0u8; 256 * 1024];
    loop {
        // Wait out a partition before reading: the bytes stay in the socket buffers.
        while *partitioned.borrow_and_update() {
            if partitioned.changed().await.is_err() {
                return;
            }
        }
        let read = tokio::select! {
            read = from.read(&mut buffer) => read,
            _ = partitioned.changed() => continue,
        };
        let n = match read {
            Ok(0) | Err(_) => {
                let _ = to.shutdown().await;
                return;
            }
            Ok(n) => n,
        };
        // Bytes read just before a partition are held until it heals.
        while *partitioned.borrow_and_update() {
            if partitioned.changed().await.is_err() {
                return;
            }
        }
        if to.write_all(&buffer[..n]).await.is_err() {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[tokio::test]
    async fn holds_bytes_while_partitioned_and_delivers_them_healed() {
        let echo = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let target = echo.local_addr().unwrap();
        tokio::spawn(async move {
            let (mut socket, _) = echo.accept().await.unwrap();
            let mut buffer = [0u8; 5];
            socket.read_exact(&mut buffer).await.unwrap();
            socket.write_all(&buffer).await.unwrap();
        });
        let proxy = PartitionProxy::start(target).await;
        let mut client = TcpStream::connect(proxy.addr).await.unwrap();
        proxy.partition();
        client.write_all(b"hello").await.unwrap();
        let mut reply = [0u8; 5];
        let held = tokio::time::timeout(Duration::from_millis(200), client.read_exact(&mut reply));
        assert!(held.await.is_err(), "bytes crossed a partition");
        proxy.heal();
        tokio::time::timeout(Duration::from_secs(10), client.read_exact(&mut reply))
            .await
            .expect("bytes flow once healed")
            .unwrap();
        assert_eq!(&reply, b"hello");
    }
}
