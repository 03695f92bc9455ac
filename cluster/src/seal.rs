//! Sealed gossip: chitchat's UDP datagrams authenticated and encrypted with the
//! cluster's gossip key.
//!
//! Chitchat has no encryption of its own, so membership runs over [`SealedTransport`]:
//! every datagram chitchat would send in clear is sealed with ChaCha20-Poly1305 (ring)
//! under the cluster's gossip key, and a datagram that does not open under a key this
//! node holds is dropped, counted and logged before chitchat sees it. A node without the
//! key is therefore never seen by anyone, and what an observer of the network sees of
//! gossip is its size, its timing and the endpoints' addresses.
//!
//! # Datagram
//!
//! ```text
//! version (1) | key id (4) | nonce (12) | sealed: sent at, ms (8) | message (4) | part (1) | parts (1) | bytes … | tag (16)
//! ```
//!
//! The clear header (version, key id, random nonce) is authenticated with the sealed
//! part. The key id is the first four bytes of a SHA-256 of the key: it names which key
//! opens the datagram without saying anything about the key. A chitchat message that
//! would not fit in one datagram once sealed (chitchat fills datagrams up to the UDP
//! limit) travels in two parts that the receiver joins.
//!
//! Chitchat encodes and decodes its messages only on a socket of its own, so that
//! socket lives on loopback: the sealed socket takes what it encodes there, and hands it
//! what opened from a loopback socket per peer, by which chitchat learns the sender.
//! Nothing reaches chitchat from loopback except through those sockets.
//!
//! # Replays
//!
//! A datagram sealed more than [`REPLAY_WINDOW`] away from the receiver's clock is
//! dropped. Inside the window a recorded datagram can be sent again; it carries only
//! membership state its receiver has seen, and chitchat ignores versions it already has.
//!
//! # Rotation
//!
//! A node holds one or two keys: the first seals what it sends, each opens. Rotating
//! takes three rolling restarts: every node given `[old, new]` (all still seal with the
//! old key, all open both), then `[new, old]` (all seal with the new one), then `[new]`.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use async_trait::async_trait;
use chitchat::ChitchatEnvelope;
use chitchat::transport::{RecvOutcome, SendOutcome, Socket, Transport};
use parking_lot::Mutex;
use ring::aead::{Aad, CHACHA20_POLY1305, LessSafeKey, NONCE_LEN, Nonce, UnboundKey};
use ring::rand::{SecureRandom, SystemRandom};
use tokio::task::JoinHandle;
use tracing::warn;

use crate::error::ClusterError;

/// The largest UDP payload over IPv4, as chitchat sizes its datagrams.
pub const MAX_DATAGRAM: usize = 65_507;
/// How far from the receiver's clock a datagram may have been sealed.
pub const REPLAY_WINDOW: Duration = Duration::from_secs(60);
/// Bytes of a gossip key.
pub const KEY_LEN: usize = 32;

/// The datagram format's version.
const VERSION: u8 = 1;
/// Version, key id and nonce.
const HEADER_LEN: usize = 1 + 4 + NONCE_LEN;
/// Sent-at time, message number, part and parts.
const FRAME_LEN: usize = 8 + 4 + 1 + 1;
/// Poly1305's tag.
const TAG_LEN: usize = 16;
/// What sealing adds to each datagram.
pub const OVERHEAD: usize = HEADER_LEN + FRAME_LEN + TAG_LEN;
/// The most chitchat bytes one datagram carries.
const PART_LEN: usize = MAX_DATAGRAM - OVERHEAD;
/// Messages in parts waiting for their other part, at most.
const MAX_PARTIAL: usize = 32;
/// How long a part waits for the rest of its message.
const PARTIAL_TTL: Duration = Duration::from_secs(2);
/// At most one warning per reason this often.
const WARN_EVERY: Duration = Duration::from_secs(60);
/// Longest a message takes from chitchat's encoder to the sealer on loopback.
const HANDOVER: Duration = Duration::from_secs(1);

/// One gossip key: 32 random bytes.
pub struct GossipKey {
    id: [u8; 4],
    key: LessSafeKey,
}

impl GossipKey {
    /// Makes a new random key, as the 64 hexadecimal digits a key file holds.
    pub fn generate() -> Result<String, ClusterError> {
        let mut bytes = [0u8; KEY_LEN];
        SystemRandom::new()
            .fill(&mut bytes)
            .map_err(|_| key_error("the system's random number generator failed".into()))?;
        Ok(bytes.iter().map(|b| format!("{b:02x}")).collect())
    }

    /// Parses a key file's text: 64 hexadecimal digits (surrounding whitespace and
    /// `#` comment lines are ignored).
    pub fn parse(text: &str) -> Result<GossipKey, String> {
        let digits: String = text
            .lines()
            .map(str::trim)
            .filter(|line| !line.starts_with('#'))
            .collect();
        if digits.len() != KEY_LEN * 2 || !digits.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(format!(
                "a gossip key is {} hexadecimal digits (make one with `doppel cluster key`)",
                KEY_LEN * 2
            ));
        }
        let mut bytes = [0u8; KEY_LEN];
        for (i, byte) in bytes.iter_mut().enumerate() {
            *byte = u8::from_str_radix(&digits[i * 2..i * 2 + 2], 16)
                .map_err(|_| "not hexadecimal".to_string())?;
        }
        Ok(GossipKey::from_bytes(&bytes))
    }

    /// A key from its bytes.
    pub fn from_bytes(bytes: &[u8; KEY_LEN]) -> GossipKey {
        let mut context = ring::digest::Context::new(&ring::digest::SHA256);
        context.update(b"doppel gossip key id\0");
        context.update(bytes);
        let digest = context.finish();
        let mut id = [0u8; 4];
        id.copy_from_slice(&digest.as_ref()[..4]);
        let key = UnboundKey::new(&CHACHA20_POLY1305, bytes)
            .map(LessSafeKey::new)
            .expect("a 32-byte key is valid for ChaCha20-Poly1305");
        GossipKey { id, key }
    }

    /// Reads a key file.
    pub fn from_file(path: &Path) -> Result<GossipKey, ClusterError> {
        let text = std::fs::read_to_string(path).map_err(|source| ClusterError::ReadFile {
            path: path.to_path_buf(),
            source,
        })?;
        GossipKey::parse(&text)
            .map_err(|problem| key_error(format!("{}: {problem}", path.display())))
    }

    /// The key's id, as it appears in the clear header of what it seals.
    pub fn id(&self) -> [u8; 4] {
        self.id
    }
}

impl std::fmt::Debug for GossipKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "GossipKey({:02x?})", self.id)
    }
}

fn key_error(problem: String) -> ClusterError {
    ClusterError::Config {
        key: "cluster.gossip_keys",
        problem,
    }
}

/// The keys a node holds: the first seals, each opens.
#[derive(Debug)]
pub struct GossipKeys {
    keys: Vec<GossipKey>,
}

impl GossipKeys {
    /// One key, or two while a rotation is under way (the first seals).
    pub fn new(keys: Vec<GossipKey>) -> Result<GossipKeys, ClusterError> {
        match keys.len() {
            1 | 2 => Ok(GossipKeys { keys }),
            n => Err(key_error(format!(
                "lists {n} keys: give one, or two while rotating (the first seals)"
            ))),
        }
    }

    /// Reads the key files.
    pub fn from_files(paths: &[impl AsRef<Path>]) -> Result<GossipKeys, ClusterError> {
        let keys = paths
            .iter()
            .map(|path| GossipKey::from_file(path.as_ref()))
            .collect::<Result<Vec<_>, _>>()?;
        GossipKeys::new(keys)
    }

    fn sealing(&self) -> &GossipKey {
        &self.keys[0]
    }

    fn opening(&self, id: &[u8]) -> Option<&GossipKey> {
        self.keys.iter().find(|key| key.id[..] == *id)
    }
}

/// Gossip datagrams sealed, opened and dropped by one node, since it started.
#[derive(Debug, Default)]
pub struct SealCounters {
    /// Datagrams sealed and sent.
    pub sent: AtomicU64,
    /// Datagrams opened.
    pub opened: AtomicU64,
    /// Dropped: sealed under a key this node does not hold (or not sealed at all).
    pub unknown_key: AtomicU64,
    /// Dropped: did not authenticate under the key its header names.
    pub forged: AtomicU64,
    /// Dropped: sealed further from this node's clock than the replay window.
    pub outside_window: AtomicU64,
    /// Dropped: opened, but its parts do not make a message (what chitchat cannot
    /// decode, it drops and logs itself).
    pub malformed: AtomicU64,
}

/// A chitchat transport whose datagrams are sealed with the cluster's gossip key.
pub struct SealedTransport {
    keys: Arc<GossipKeys>,
    counters: Arc<SealCounters>,
}

impl SealedTransport {
    /// A transport sealing with `keys`, counting into `counters`.
    pub fn new(keys: GossipKeys, counters: Arc<SealCounters>) -> SealedTransport {
        SealedTransport {
            keys: Arc::new(keys),
            counters,
        }
    }
}

/// Chitchat encodes and decodes its messages itself, on its own UDP socket, so the
/// sealed socket hands them to it over loopback: what chitchat sends goes to `outbox`
/// and is sealed there; what opens is sent to chitchat's socket from a loopback socket
/// of the peer's own (its relay), which names the peer when chitchat receives it.
#[async_trait]
impl Transport for SealedTransport {
    async fn open(&self, listen_addr: SocketAddr) -> anyhow::Result<Box<dyn Socket>> {
        let external = tokio::net::UdpSocket::bind(listen_addr)
            .await
            .map_err(|error| {
                anyhow::anyhow!("cannot bind {listen_addr}/UDP for gossip: {error}")
            })?;
        let external = Arc::new(external);
        let loopback = SocketAddr::from(([127, 0, 0, 1], 0));
        let codec = chitchat::transport::UdpSocket::open(loopback).await?;
        let codec_addr = codec.local_addr()?;
        let outbox = tokio::net::UdpSocket::bind(loopback).await?;
        let outbox_addr = outbox.local_addr()?;
        let relays = Arc::new(Mutex::new(Relays::default()));
        let opener = Opener {
            keys: self.keys.clone(),
            partial: HashMap::new(),
            counters: self.counters.clone(),
            warned: HashMap::new(),
        };
        let receiving = tokio::spawn(receive(
            external.clone(),
            opener,
            relays.clone(),
            codec_addr,
        ));
        Ok(Box::new(SealedSocket {
            external,
            codec,
            codec_addr,
            outbox,
            outbox_addr,
            sealer: Sealer {
                keys: self.keys.clone(),
                rng: SystemRandom::new(),
                next_message: 0,
            },
            relays,
            receiving,
            counters: self.counters.clone(),
            buf: vec![0; MAX_DATAGRAM + 1].into_boxed_slice(),
        }))
    }
}

/// The most peers a node keeps a relay socket for; past it, they are made anew.
const MAX_RELAYS: usize = 1024;

/// A loopback socket per peer that sealed gossip arrived from.
#[derive(Default)]
struct Relays {
    by_peer: HashMap<SocketAddr, Arc<tokio::net::UdpSocket>>,
    peer_of: HashMap<SocketAddr, SocketAddr>,
}

impl Relays {
    fn relay(&mut self, peer: SocketAddr) -> std::io::Result<Arc<tokio::net::UdpSocket>> {
        if let Some(relay) = self.by_peer.get(&peer) {
            return Ok(relay.clone());
        }
        if self.by_peer.len() >= MAX_RELAYS {
            self.by_peer.clear();
            self.peer_of.clear();
        }
        let socket = std::net::UdpSocket::bind(SocketAddr::from(([127, 0, 0, 1], 0)))?;
        socket.set_nonblocking(true)?;
        let relay = Arc::new(tokio::net::UdpSocket::from_std(socket)?);
        self.peer_of.insert(relay.local_addr()?, peer);
        self.by_peer.insert(peer, relay.clone());
        Ok(relay)
    }
}

/// Opens what arrives on the gossip address and hands each message to chitchat through
/// its sender's relay.
async fn receive(
    external: Arc<tokio::net::UdpSocket>,
    mut opener: Opener,
    relays: Arc<Mutex<Relays>>,
    codec_addr: SocketAddr,
) {
    let mut buf = vec![0u8; MAX_DATAGRAM + 1];
    loop {
        let (len, from) = match external.recv_from(&mut buf).await {
            Ok(received) => received,
            Err(error) if is_transient(&error) => continue,
            Err(error) => {
                tracing::error!(%error, "gossip receive failed; no more gossip is received");
                return;
            }
        };
        let Some(message) = opener.open(from, &mut buf[..len], unix_ms()) else {
            continue;
        };
        let relay = relays.lock().relay(from);
        match relay {
            Ok(relay) => {
                if let Err(error) = relay.send_to(&message, codec_addr).await {
                    warn!(%error, "gossip message not handed over");
                }
            }
            Err(error) => warn!(%error, "no loopback socket for a gossip peer"),
        }
    }
}

struct SealedSocket {
    external: Arc<tokio::net::UdpSocket>,
    /// Chitchat's own socket on loopback: it encodes what chitchat sends (to `outbox`)
    /// and decodes what the relays hand it.
    codec: chitchat::transport::UdpSocket,
    codec_addr: SocketAddr,
    /// Receives what `codec` encodes, to be sealed.
    outbox: tokio::net::UdpSocket,
    outbox_addr: SocketAddr,
    sealer: Sealer,
    relays: Arc<Mutex<Relays>>,
    receiving: JoinHandle<()>,
    counters: Arc<SealCounters>,
    buf: Box<[u8]>,
}

impl std::ops::Drop for SealedSocket {
    fn drop(&mut self) {
        self.receiving.abort();
    }
}

#[async_trait]
impl Socket for SealedSocket {
    fn local_addr(&self) -> anyhow::Result<SocketAddr> {
        Ok(self.external.local_addr()?)
    }

    async fn send(
        &mut self,
        to: SocketAddr,
        envelope: ChitchatEnvelope,
    ) -> anyhow::Result<SendOutcome> {
        // What a send cut short left behind is not this message.
        while self.outbox.try_recv_from(&mut self.buf).is_ok() {}
        self.codec.send(self.outbox_addr, envelope).await?;
        let len = loop {
            let received =
                tokio::time::timeout(HANDOVER, self.outbox.recv_from(&mut self.buf)).await;
            match received {
                Ok(Ok((len, from))) if from == self.codec_addr => break len,
                Ok(Ok(_)) => continue,
                Ok(Err(error)) => return Err(anyhow::anyhow!("gossip encode: {error}")),
                // Lost on loopback: as if lost on the network.
                Err(_) => return Ok(SendOutcome { num_bytes_sent: 0 }),
            }
        };
        let datagrams = self.sealer.seal(&self.buf[..len], unix_ms())?;
        let mut num_bytes_sent = 0;
        for datagram in &datagrams {
            match self.external.send_to(datagram, to).await {
                Ok(sent) => {
                    num_bytes_sent += sent;
                    self.counters.sent.fetch_add(1, Ordering::Relaxed);
                }
                // A peer that is gone or unreachable is the failure detector's to judge.
                Err(error) if is_transient(&error) => {}
                Err(error) => return Err(anyhow::anyhow!("gossip send to {to}: {error}")),
            }
        }
        Ok(SendOutcome { num_bytes_sent })
    }

    async fn recv(&mut self) -> anyhow::Result<RecvOutcome> {
        loop {
            let outcome = self.codec.recv().await?;
            // Only what a relay handed over came sealed; anything else on loopback is
            // dropped.
            let peer = self.relays.lock().peer_of.get(&outcome.from_addr).copied();
            if let Some(peer) = peer {
                return Ok(RecvOutcome {
                    from_addr: peer,
                    ..outcome
                });
            }
        }
    }
}

fn is_transient(error: &std::io::Error) -> bool {
    matches!(
        error.kind(),
        std::io::ErrorKind::ConnectionRefused
            | std::io::ErrorKind::ConnectionReset
            | std::io::ErrorKind::OutOfMemory
    )
}

fn unix_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

/// Seals chitchat messages into datagrams.
struct Sealer {
    keys: Arc<GossipKeys>,
    rng: SystemRandom,
    next_message: u32,
}

impl Sealer {
    /// The datagrams that carry `message` (one, or two for a message near the UDP
    /// limit), sealed at `now_ms`.
    fn seal(&mut self, message: &[u8], now_ms: i64) -> anyhow::Result<Vec<Vec<u8>>> {
        let key = self.keys.sealing();
        let parts = message.len().div_ceil(PART_LEN).max(1);
        let parts = u8::try_from(parts)
            .map_err(|_| anyhow::anyhow!("gossip message of {} bytes", message.len()))?;
        self.next_message = self.next_message.wrapping_add(1);
        let mut datagrams = Vec::with_capacity(parts as usize);
        for part in 0..parts {
            let start = part as usize * PART_LEN;
            let chunk = &message[start..(start + PART_LEN).min(message.len())];
            let mut datagram = Vec::with_capacity(OVERHEAD + chunk.len());
            let mut nonce = [0u8; NONCE_LEN];
            self.rng
                .fill(&mut nonce)
                .map_err(|_| anyhow::anyhow!("the system's random number generator failed"))?;
            datagram.push(VERSION);
            datagram.extend_from_slice(&key.id);
            datagram.extend_from_slice(&nonce);
            datagram.extend_from_slice(&now_ms.to_le_bytes());
            datagram.extend_from_slice(&self.next_message.to_le_bytes());
            datagram.push(part);
            datagram.push(parts);
            datagram.extend_from_slice(chunk);
            let (header, sealed) = datagram.split_at_mut(HEADER_LEN);
            let tag = key
                .key
                .seal_in_place_separate_tag(
                    Nonce::assume_unique_for_key(nonce),
                    Aad::from(&*header),
                    sealed,
                )
                .map_err(|_| anyhow::anyhow!("sealing a gossip datagram failed"))?;
            datagram.extend_from_slice(tag.as_ref());
            datagrams.push(datagram);
        }
        Ok(datagrams)
    }
}

/// Why a datagram was dropped.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Dropped {
    UnknownKey,
    Forged,
    OutsideWindow,
    Malformed,
}

/// A message whose parts are arriving.
struct Partial {
    parts: Vec<Option<Vec<u8>>>,
    since: Instant,
}

/// Opens datagrams and joins messages sent in parts.
struct Opener {
    keys: Arc<GossipKeys>,
    partial: HashMap<(SocketAddr, u32), Partial>,
    counters: Arc<SealCounters>,
    /// When each reason was last logged, and how many drops since.
    warned: HashMap<Dropped, (Option<Instant>, u64)>,
}

impl Opener {
    /// The chitchat message `datagram` completes, if it opens and completes one.
    fn open(&mut self, from: SocketAddr, datagram: &mut [u8], now_ms: i64) -> Option<Vec<u8>> {
        let counters = self.counters.clone();
        if datagram.len() < OVERHEAD || datagram[0] != VERSION {
            counters.unknown_key.fetch_add(1, Ordering::Relaxed);
            self.warn(Dropped::UnknownKey, from, "not a sealed gossip datagram");
            return None;
        }
        let keys = self.keys.clone();
        let (header, sealed) = datagram.split_at_mut(HEADER_LEN);
        let Some(key) = keys.opening(&header[1..5]) else {
            counters.unknown_key.fetch_add(1, Ordering::Relaxed);
            self.warn(
                Dropped::UnknownKey,
                from,
                "sealed under a key this node does not hold",
            );
            return None;
        };
        let mut nonce = [0u8; NONCE_LEN];
        nonce.copy_from_slice(&header[5..]);
        let Ok(frame) = key.key.open_in_place(
            Nonce::assume_unique_for_key(nonce),
            Aad::from(&*header),
            sealed,
        ) else {
            counters.forged.fetch_add(1, Ordering::Relaxed);
            self.warn(Dropped::Forged, from, "did not authenticate");
            return None;
        };
        let sent_ms = i64::from_le_bytes(frame[..8].try_into().expect("8 bytes"));
        let message = u32::from_le_bytes(frame[8..12].try_into().expect("4 bytes"));
        let (part, parts) = (frame[12], frame[13]);
        let bytes = &frame[FRAME_LEN..];
        let window = REPLAY_WINDOW.as_millis() as i64;
        if now_ms.saturating_sub(sent_ms).abs() > window {
            counters.outside_window.fetch_add(1, Ordering::Relaxed);
            let detail = format!(
                "sealed {} s from this node's clock (replayed, or clocks apart)",
                now_ms.saturating_sub(sent_ms) / 1000
            );
            self.warn(Dropped::OutsideWindow, from, &detail);
            return None;
        }
        if parts == 0 || part >= parts || parts > 2 {
            counters.malformed.fetch_add(1, Ordering::Relaxed);
            self.warn(Dropped::Malformed, from, "bad part number");
            return None;
        }
        counters.opened.fetch_add(1, Ordering::Relaxed);
        if parts == 1 {
            return Some(bytes.to_vec());
        }
        self.join(from, message, part, parts, bytes)
    }

    fn join(
        &mut self,
        from: SocketAddr,
        message: u32,
        part: u8,
        parts: u8,
        bytes: &[u8],
    ) -> Option<Vec<u8>> {
        let now = Instant::now();
        self.partial
            .retain(|_, p| now.duration_since(p.since) < PARTIAL_TTL);
        if self.partial.len() >= MAX_PARTIAL
            && !self.partial.contains_key(&(from, message))
            && let Some(oldest) = self
                .partial
                .iter()
                .min_by_key(|(_, p)| p.since)
                .map(|(k, _)| *k)
        {
            self.partial.remove(&oldest);
        }
        let entry = self
            .partial
            .entry((from, message))
            .or_insert_with(|| Partial {
                parts: vec![None; parts as usize],
                since: now,
            });
        if entry.parts.len() != parts as usize {
            self.partial.remove(&(from, message));
            self.counters.malformed.fetch_add(1, Ordering::Relaxed);
            self.warn(Dropped::Malformed, from, "parts disagree on their number");
            return None;
        }
        entry.parts[part as usize] = Some(bytes.to_vec());
        if entry.parts.iter().any(Option::is_none) {
            return None;
        }
        let entry = self.partial.remove(&(from, message))?;
        Some(entry.parts.into_iter().flatten().flatten().collect())
    }

    /// Logs a drop: the first of each reason, then at most once a minute with the
    /// count since.
    fn warn(&mut self, reason: Dropped, from: SocketAddr, detail: &str) {
        let now = Instant::now();
        let (last, since) = self.warned.entry(reason).or_insert((None, 0));
        *since += 1;
        if last.is_none_or(|last| now.duration_since(last) >= WARN_EVERY) {
            warn!(
                %from,
                reason = ?reason,
                dropped = *since,
                "gossip datagram dropped: {detail}"
            );
            *last = Some(now);
            *since = 0;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(byte: u8) -> GossipKey {
        GossipKey::from_bytes(&[byte; KEY_LEN])
    }

    fn pair(seal: Vec<GossipKey>, open: Vec<GossipKey>) -> (Sealer, Opener, Arc<SealCounters>) {
        let counters = Arc::new(SealCounters::default());
        let sealer = Sealer {
            keys: Arc::new(GossipKeys::new(seal).unwrap()),
            rng: SystemRandom::new(),
            next_message: 0,
        };
        let opener = Opener {
            keys: Arc::new(GossipKeys::new(open).unwrap()),
            partial: HashMap::new(),
            counters: counters.clone(),
            warned: HashMap::new(),
        };
        (sealer, opener, counters)
    }

    fn from() -> SocketAddr {
        "127.0.0.1:7101".parse().unwrap()
    }

    #[test]
    fn a_sealed_message_opens_under_the_same_key_and_hides_its_bytes() {
        let (mut sealer, mut opener, counters) = pair(vec![key(1)], vec![key(1)]);
        let message = b"edge-a 127.0.0.1:7100 acme/plant-a".to_vec();
        let mut datagrams = sealer.seal(&message, 1_000_000).unwrap();
        assert_eq!(datagrams.len(), 1);
        assert_eq!(datagrams[0].len(), message.len() + OVERHEAD);
        assert!(
            !datagrams[0].windows(6).any(|w| w == b"edge-a"),
            "the node id is not in clear"
        );
        let opened = opener.open(from(), &mut datagrams[0], 1_000_500).unwrap();
        assert_eq!(opened, message);
        assert_eq!(counters.opened.load(Ordering::Relaxed), 1);
    }

    #[test]
    fn another_key_a_flipped_bit_or_an_old_datagram_is_dropped_and_counted() {
        let (mut sealer, mut opener, counters) = pair(vec![key(2)], vec![key(1)]);
        let mut datagram = sealer.seal(b"hello", 0).unwrap().remove(0);
        assert!(opener.open(from(), &mut datagram, 0).is_none());
        assert_eq!(counters.unknown_key.load(Ordering::Relaxed), 1);

        let (mut sealer, mut opener, counters) = pair(vec![key(1)], vec![key(1)]);
        let mut datagram = sealer.seal(b"hello", 0).unwrap().remove(0);
        let last = datagram.len() - 1;
        datagram[last] ^= 1;
        assert!(opener.open(from(), &mut datagram, 0).is_none());
        assert_eq!(counters.forged.load(Ordering::Relaxed), 1);

        let mut datagram = sealer.seal(b"hello", 0).unwrap().remove(0);
        let later = REPLAY_WINDOW.as_millis() as i64 + 1;
        assert!(opener.open(from(), &mut datagram, later).is_none());
        assert_eq!(counters.outside_window.load(Ordering::Relaxed), 1);

        let mut plain = b"\x00plain chitchat bytes, never sealed".to_vec();
        assert!(opener.open(from(), &mut plain, 0).is_none());
        assert_eq!(counters.unknown_key.load(Ordering::Relaxed), 1);
        assert_eq!(counters.opened.load(Ordering::Relaxed), 0);
    }

    #[test]
    fn during_a_rotation_both_keys_open() {
        let (mut old_sealer, _, _) = pair(vec![key(1)], vec![key(1)]);
        let (mut new_sealer, mut opener, counters) =
            pair(vec![key(2), key(1)], vec![key(2), key(1)]);
        let mut from_old = old_sealer.seal(b"old", 0).unwrap().remove(0);
        let mut from_new = new_sealer.seal(b"new", 0).unwrap().remove(0);
        assert_eq!(opener.open(from(), &mut from_old, 0).unwrap(), b"old");
        assert_eq!(opener.open(from(), &mut from_new, 0).unwrap(), b"new");
        assert_eq!(counters.opened.load(Ordering::Relaxed), 2);
        assert!(GossipKeys::new(vec![key(1), key(2), key(3)]).is_err());
        assert!(GossipKeys::new(vec![]).is_err());
    }

    #[test]
    fn a_message_at_the_udp_limit_travels_in_two_parts_in_any_order() {
        let (mut sealer, mut opener, _) = pair(vec![key(1)], vec![key(1)]);
        let message: Vec<u8> = (0..MAX_DATAGRAM).map(|i| (i % 251) as u8).collect();
        let mut datagrams = sealer.seal(&message, 0).unwrap();
        assert_eq!(datagrams.len(), 2);
        assert!(datagrams.iter().all(|d| d.len() <= MAX_DATAGRAM));
        let (first, second) = datagrams.split_at_mut(1);
        assert!(opener.open(from(), &mut second[0], 0).is_none());
        assert_eq!(opener.open(from(), &mut first[0], 0).unwrap(), message);
        assert!(opener.partial.is_empty());
    }

    #[test]
    fn key_files_hold_64_hex_digits() {
        let text = GossipKey::generate().unwrap();
        assert_eq!(text.len(), 64);
        let parsed = GossipKey::parse(&format!("# gossip key\n{text}\n")).unwrap();
        assert_eq!(parsed.id(), GossipKey::parse(&text).unwrap().id());
        assert!(GossipKey::parse("abc").is_err());
        assert!(GossipKey::parse(&"zz".repeat(32)).is_err());
        assert_ne!(key(1).id(), key(2).id());
    }
}
