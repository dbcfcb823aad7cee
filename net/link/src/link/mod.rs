//! Framed, authenticated TCP links between cluster processes.
//!
//! A link is one TCP connection carrying length-prefixed frames
//! ([`FrameCodec`]): a four-step [`Handshake`] (hello, challenge, response,
//! welcome — each side proves it holds the cluster secret without sending
//! it), then bitcode-encoded [`LinkMsg`]s. The accepting side ([`serve`])
//! checks the peer's protocol version, role and proof and answers a
//! `Refused` frame with a reason when one is wrong; the connecting side
//! ([`connect`], [`connect_with_backoff`], [`Connector`]) checks the
//! acceptor's role and proof the same way.
//!
//! ## Guarantees
//!
//! * **Bounded memory per link.** Outbound: a queue of at most
//!   [`LinkConfig::send_queue`] frames *and* [`LinkConfig::send_queue_bytes`]
//!   bytes. Inbound: at most [`LinkConfig::recv_queue`] decoded messages *and*
//!   [`LinkConfig::recv_queue_bytes`] bytes of their frames; when the
//!   application does not read, the reader stops reading the socket, TCP
//!   flow control pushes back on the peer, and the peer's own send queue
//!   fills.
//! * **Send policy.** [`LinkSender::try_send`] never waits: when the queue is
//!   full the message is dropped, counted in
//!   [`LinkStatsSnapshot::queue_full_drops`](crate::LinkStatsSnapshot::queue_full_drops), and the caller gets
//!   [`SendError::QueueFull`] (use it for replication and heartbeats, where a
//!   newer message supersedes a lost one). [`LinkSender::send`] waits for room
//!   instead (use it for commands and save batches, which must not be lost
//!   while the link lives). Both refuse a message over the frame cap with
//!   [`SendError::TooLarge`]; nothing oversized is ever written.
//! * **Bad input closes only its own link.** An undecodable frame, an
//!   oversized declared length, a stream cut inside a frame, a wrong version,
//!   secret or role, or a handshake timeout closes that link with a logged
//!   reason and a counter bump in [`LinkStats`]; the listener keeps serving
//!   the others. Nothing a peer sends can panic the process.
//! * **Ordering.** Messages arrive in the order they were queued, on one link.
//!   Nothing is retransmitted across links: after a reconnect, the
//!   application re-registers and re-sends what it must.
//! * **The secret** never crosses the wire and is never logged; proofs are
//!   bound to fresh nonces from both sides and checked in constant time.

use std::{
    future::Future,
    hash::{BuildHasher, RandomState},
    io,
    net::SocketAddr,
    sync::{Arc, OnceLock},
    time::{Duration, Instant},
};

use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use tokio::{
    net::{
        TcpListener, TcpStream,
        tcp::{OwnedReadHalf, OwnedWriteHalf},
    },
    sync::{OwnedSemaphorePermit, Semaphore, TryAcquireError, mpsc},
};
use tokio_util::{
    codec::{Framed, FramedParts, FramedWrite},
    sync::CancellationToken,
    task::TaskTracker,
};
use tracing::{debug, info, warn};

use tessera_wire::{
    Challenge, Handshake, HandshakeDecodeError, Hello, LinkMsg, MAX_NODE_NAME, NONCE_LEN, Nonce,
    PROTOCOL_VERSION, RefuseCode, Response, Role, Secret, Side, Transcript,
};

use crate::{
    frame::{DEFAULT_MAX_FRAME, FrameCodec, FrameError},
    stats::{Counter, LinkStats},
};

/// The smallest frame cap a config may set: room for any handshake.
pub const MIN_MAX_FRAME: usize = 256;
/// The largest frame cap a config may set: 64 MiB.
pub const MAX_MAX_FRAME: usize = 64 << 20;

/// At most this many frames, or this many bytes, are written per flush.
const WRITE_BATCH_FRAMES: usize = 64;
const WRITE_BATCH_BYTES: usize = 256 << 10;

/// The cap on handshake frames, whatever `max_frame` is: a peer that has not
/// authenticated can make us buffer no more than this.
const HANDSHAKE_MAX_FRAME: usize = 4096;

/// How long a refusal frame may take to write before the link is dropped anyway.
const REFUSAL_WRITE_TIMEOUT: Duration = Duration::from_secs(1);

/// Settings of one side of a link: who we are, whom we accept, and the limits.
///
/// Cloning shares [`LinkConfig::stats`]: every link made with a config and
/// its clones counts into the same [`LinkStats`].
#[derive(Debug, Clone)]
pub struct LinkConfig {
    /// Our role, announced in the handshake.
    pub role: Role,
    /// Our node name (1..=64 bytes, no control characters).
    pub node: String,
    /// The cluster secret. Both sides must hold the same one.
    pub secret: Secret,
    /// Roles we accept from the other side. Default: all.
    pub accept_roles: Vec<Role>,
    /// Largest frame payload sent or received, in bytes. Default 1 MiB.
    pub max_frame: usize,
    /// Outbound queue capacity per link, in frames. Default 1024.
    pub send_queue: usize,
    /// Outbound queue capacity per link, in bytes (≥ `max_frame`). Default 8 MiB.
    pub send_queue_bytes: usize,
    /// Inbound queue capacity per link, in decoded messages. Default 1024.
    pub recv_queue: usize,
    /// Inbound queue capacity per link, in frame bytes (≥ `max_frame`).
    /// Default 8 MiB.
    pub recv_queue_bytes: usize,
    /// Time allowed for the whole handshake (and the TCP connect). Default 5 s.
    pub handshake_timeout: Duration,
    /// Most concurrent links a listener serves; more wait in the accept
    /// backlog. Default 1024.
    pub max_links: usize,
    /// How long [`Link::close`] waits for queued frames to be written and the
    /// peer to hang up. Default 5 s.
    pub linger: Duration,
    /// Close an established link when no frame arrives for this long
    /// ([`CloseReason::Idle`]). Catches a peer whose host vanished without a
    /// FIN or RST, or a stopped process. Only useful when the peer sends
    /// something periodically (heartbeats): set it to a few heartbeat
    /// intervals. Default `None`: links never time out for silence.
    pub idle_timeout: Option<Duration>,
    /// Reconnect policy for [`connect_with_backoff`] and [`Connector`].
    pub backoff: Backoff,
    /// Counters of every link made with this config.
    pub stats: Arc<LinkStats>,
}

impl LinkConfig {
    /// A config with every limit at its default.
    pub fn new(role: Role, node: impl Into<String>, secret: impl Into<Secret>) -> Self {
        Self {
            role,
            node: node.into(),
            secret: secret.into(),
            accept_roles: Role::ALL.to_vec(),
            max_frame: DEFAULT_MAX_FRAME,
            send_queue: 1024,
            send_queue_bytes: 8 << 20,
            recv_queue: 1024,
            recv_queue_bytes: 8 << 20,
            handshake_timeout: Duration::from_secs(5),
            max_links: 1024,
            linger: Duration::from_secs(5),
            idle_timeout: None,
            backoff: Backoff::default(),
            stats: Arc::new(LinkStats::new()),
        }
    }

    /// Checks every setting; [`serve`] and the connect functions call it.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if !valid_node_name(&self.node) {
            return Err(ConfigError::NodeName(self.node.clone()));
        }
        if self.secret.is_empty() {
            return Err(ConfigError::EmptySecret);
        }
        if self.accept_roles.is_empty() {
            return Err(ConfigError::NoRoles);
        }
        if !(MIN_MAX_FRAME..=MAX_MAX_FRAME).contains(&self.max_frame) {
            return Err(ConfigError::MaxFrame(self.max_frame));
        }
        for (name, bytes) in [
            ("send_queue_bytes", self.send_queue_bytes),
            ("recv_queue_bytes", self.recv_queue_bytes),
        ] {
            if bytes < self.max_frame || bytes > u32::MAX as usize {
                return Err(ConfigError::QueueBytes {
                    name,
                    bytes,
                    max_frame: self.max_frame,
                });
            }
        }
        for (name, v) in [
            ("send_queue", self.send_queue),
            ("recv_queue", self.recv_queue),
            ("max_links", self.max_links),
        ] {
            if v == 0 || v > Semaphore::MAX_PERMITS {
                return Err(ConfigError::Zero(name));
            }
        }
        if self.handshake_timeout.is_zero() {
            return Err(ConfigError::Zero("handshake_timeout"));
        }
        if self.idle_timeout.is_some_and(|t| t.is_zero()) {
            return Err(ConfigError::Zero("idle_timeout"));
        }
        self.backoff.validate()
    }
}

/// A setting out of range.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConfigError {
    #[error("node name {0:?} must be 1..={MAX_NODE_NAME} bytes without control characters")]
    NodeName(String),
    #[error("the cluster secret is empty")]
    EmptySecret,
    #[error("accept_roles is empty: no peer could ever connect")]
    NoRoles,
    #[error("max_frame {0} is outside {MIN_MAX_FRAME}..={MAX_MAX_FRAME}")]
    MaxFrame(usize),
    #[error("{name} {bytes} must be at least max_frame ({max_frame}) and fit in a u32")]
    QueueBytes {
        name: &'static str,
        bytes: usize,
        max_frame: usize,
    },
    #[error("{0} must be greater than zero")]
    Zero(&'static str),
    #[error("backoff: {0}")]
    Backoff(&'static str),
}

fn valid_node_name(name: &str) -> bool {
    !name.is_empty() && name.len() <= MAX_NODE_NAME && !name.chars().any(char::is_control)
}

/// Exponential reconnect backoff with jitter.
///
/// Attempt `n` (from 0) waits a base of `initial × factorⁿ`, capped at `max`,
/// then "equal jitter": a uniformly random time between half the base and the
/// base, so a cluster of clients that lost the same peer does not reconnect
/// in lockstep.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Backoff {
    /// Base delay before the first retry. Default 100 ms.
    pub initial: Duration,
    /// Cap on the base delay. Default 5 s.
    pub max: Duration,
    /// Growth per attempt. Default 2.
    pub factor: u32,
    /// Give up after this many failed attempts in one `connect` call.
    /// Default `None`: retry until connected or refused for good.
    pub max_attempts: Option<u32>,
}

impl Default for Backoff {
    fn default() -> Self {
        Self {
            initial: Duration::from_millis(100),
            max: Duration::from_secs(5),
            factor: 2,
            max_attempts: None,
        }
    }
}

impl Backoff {
    fn validate(&self) -> Result<(), ConfigError> {
        if self.initial.is_zero() || self.max < self.initial {
            return Err(ConfigError::Backoff("need 0 < initial <= max"));
        }
        if self.factor == 0 {
            return Err(ConfigError::Backoff("factor must be at least 1"));
        }
        Ok(())
    }

    /// The base delay before retry `attempt` (from 0), without jitter.
    pub fn base(&self, attempt: u32) -> Duration {
        self.initial
            .saturating_mul(self.factor.saturating_pow(attempt))
            .min(self.max)
    }

    /// The jittered delay before retry `attempt`: in `[base / 2, base]`.
    pub fn delay(&self, attempt: u32) -> Duration {
        jittered(self.base(attempt), random_u64())
    }
}

fn jittered(base: Duration, r: u64) -> Duration {
    let half = base / 2;
    let span = u64::try_from(half.as_nanos()).unwrap_or(u64::MAX);
    half + Duration::from_nanos(r % span.saturating_add(1))
}

/// Randomness for jitter only (not for anything secret): std's per-process
/// random hash keys applied to the current instant.
fn random_u64() -> u64 {
    RandomState::new().hash_one(Instant::now())
}

/// Who is at the other end of a link.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerInfo {
    pub role: Role,
    pub node: String,
    pub addr: SocketAddr,
}

/// Why a link closed. The first reason recorded wins.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CloseReason {
    #[error("the peer closed the link")]
    PeerClosed,
    #[error("closed locally")]
    Local,
    #[error("shutting down")]
    Shutdown,
    #[error("undecodable frame: {0}")]
    Decode(String),
    #[error("frame of {len} bytes exceeds the {max}-byte limit")]
    Oversized { len: u64, max: usize },
    #[error("the stream ended inside a frame")]
    Truncated,
    #[error("nothing received for {0:?}")]
    Idle(Duration),
    #[error("i/o error: {0}")]
    Io(String),
}

impl CloseReason {
    /// Whether the close was caused by bad input or a failure, rather than an
    /// orderly end.
    pub fn is_error(&self) -> bool {
        !matches!(self, Self::PeerClosed | Self::Local | Self::Shutdown)
    }
}

/// A handshake failed.
#[derive(Debug, thiserror::Error)]
pub enum HandshakeError {
    #[error("no handshake within {0:?}")]
    Timeout(Duration),
    #[error("the peer closed the connection during the handshake")]
    PeerClosed,
    #[error("handshake frame: {0}")]
    Frame(#[from] FrameError),
    #[error("malformed handshake: {0}")]
    Malformed(String),
    #[error("peer speaks protocol version {theirs}, this node {PROTOCOL_VERSION}")]
    Version { theirs: u16 },
    #[error("the peer's proof of the cluster secret does not match")]
    Secret,
    #[error("no randomness for a nonce: {0}")]
    Random(String),
    #[error("peer role {0} is not accepted")]
    Role(Role),
    #[error("refused by the peer ({code}): {reason}")]
    Refused { code: RefuseCode, reason: String },
}

impl HandshakeError {
    /// Whether trying again later might succeed (the peer may be restarting)
    /// as opposed to a refusal that will repeat until a config changes.
    pub fn is_transient(&self) -> bool {
        match self {
            Self::Timeout(_) | Self::PeerClosed | Self::Frame(_) | Self::Random(_) => true,
            Self::Refused { code, .. } => matches!(code, RefuseCode::Timeout | RefuseCode::Other),
            Self::Malformed(_) | Self::Version { .. } | Self::Secret | Self::Role(_) => false,
        }
    }

    /// What to tell the peer, if anything.
    fn refusal(&self, cfg: &LinkConfig) -> Option<(RefuseCode, String)> {
        Some(match self {
            Self::Timeout(t) => (
                RefuseCode::Timeout,
                format!("handshake not completed within {t:?}"),
            ),
            Self::Version { .. } => (
                RefuseCode::Version,
                format!("{} speaks protocol version {PROTOCOL_VERSION}", cfg.node),
            ),
            Self::Secret => (RefuseCode::Secret, "cluster secret does not match".into()),
            Self::Role(r) => (
                RefuseCode::Role,
                format!("{} does not accept {r} links", cfg.node),
            ),
            Self::Malformed(m) => (RefuseCode::Malformed, m.clone()),
            Self::Frame(FrameError::Oversized { len, max }) => (
                RefuseCode::Malformed,
                format!("handshake frame of {len} bytes exceeds the {max}-byte limit"),
            ),
            Self::Frame(_) | Self::PeerClosed | Self::Refused { .. } | Self::Random(_) => {
                return None;
            }
        })
    }
}

/// Connecting failed.
#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    #[error("invalid link config: {0}")]
    Config(#[from] ConfigError),
    #[error("connect: {0}")]
    Io(#[from] io::Error),
    #[error("connect timed out after {0:?}")]
    Timeout(Duration),
    #[error("handshake: {0}")]
    Handshake(#[from] HandshakeError),
    #[error("gave up after {attempts} attempts; last error: {last}")]
    GaveUp {
        attempts: u32,
        #[source]
        last: Box<ConnectError>,
    },
}

impl ConnectError {
    /// Whether [`Connector`] retries after this error.
    pub fn is_transient(&self) -> bool {
        match self {
            Self::Io(_) | Self::Timeout(_) => true,
            Self::Handshake(h) => h.is_transient(),
            Self::Config(_) | Self::GaveUp { .. } => false,
        }
    }
}

/// Sending a message failed. Nothing was queued.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SendError {
    #[error("message of {len} bytes exceeds the {max}-byte frame limit")]
    TooLarge { len: usize, max: usize },
    #[error("send queue full: message dropped")]
    QueueFull,
    #[error("link closed")]
    Closed,
}

// ---------------------------------------------------------------------------
// An established link.
// ---------------------------------------------------------------------------

/// State shared by a link's handles and its reader and writer tasks.
#[derive(Debug)]
struct LinkState {
    peer: PeerInfo,
    /// Fired once the link is closed: both tasks stop.
    cancel: CancellationToken,
    /// Fired by [`Link::close`]: the writer flushes the queue and hangs up.
    drain: CancellationToken,
    reason: OnceLock<CloseReason>,
    opened_at: Instant,
    closed_at: OnceLock<Instant>,
    linger: Duration,
    idle_timeout: Option<Duration>,
    stats: Arc<LinkStats>,
}

impl LinkState {
    /// Records `reason` if none is recorded yet, without stopping the tasks.
    fn record(&self, reason: CloseReason) {
        if self.reason.set(reason.clone()).is_ok() {
            let _ = self.closed_at.set(Instant::now());
            self.stats.bump(Counter::LinksClosed);
            let p = &self.peer;
            if reason.is_error() {
                warn!(peer = %p.addr, node = ?p.node, role = %p.role, "link closed: {reason}");
            } else {
                debug!(peer = %p.addr, node = ?p.node, role = %p.role, "link closed: {reason}");
            }
        }
    }

    /// Records `reason` (if first) and stops the link.
    fn close(&self, reason: CloseReason) {
        self.record(reason);
        self.cancel.cancel();
    }

    fn reason(&self) -> CloseReason {
        self.reason.get().cloned().unwrap_or(CloseReason::Shutdown)
    }

    /// How long the link lived, if it has closed.
    fn lifetime(&self) -> Option<Duration> {
        self.closed_at
            .get()
            .map(|c| c.saturating_duration_since(self.opened_at))
    }
}

/// One queued outbound frame, holding its share of the byte budget until the
/// writer has copied it into the socket buffer.
struct Outbound {
    frame: Bytes,
    _budget: OwnedSemaphorePermit,
}

/// One received message, holding its frame's share of the inbound byte
/// budget until the application takes it.
type Inbound = (LinkMsg, OwnedSemaphorePermit);

/// An established link: a [`LinkSender`] and a [`LinkReceiver`].
///
/// Dropping the link closes it at once, dropping anything still queued; call
/// [`Link::close`] to flush the queue first.
#[derive(Debug)]
pub struct Link {
    sender: LinkSender,
    receiver: LinkReceiver,
}

/// The sending half of a link. Cheap to clone; every clone feeds the same
/// bounded queue.
#[derive(Debug, Clone)]
pub struct LinkSender {
    tx: mpsc::Sender<Outbound>,
    budget: Arc<Semaphore>,
    budget_total: usize,
    max_frame: usize,
    state: Arc<LinkState>,
}

/// The receiving half of a link. The link lives as long as this half:
/// dropping it closes the link.
#[derive(Debug)]
pub struct LinkReceiver {
    rx: mpsc::Receiver<Inbound>,
    budget: Arc<Semaphore>,
    budget_total: usize,
    state: Arc<LinkState>,
}

impl std::fmt::Debug for Outbound {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Outbound({} bytes)", self.frame.len())
    }
}

impl Link {
    pub fn peer(&self) -> &PeerInfo {
        &self.sender.state.peer
    }

    /// A handle to send on this link from elsewhere.
    pub fn sender(&self) -> LinkSender {
        self.sender.clone()
    }

    /// See [`LinkSender::send`].
    pub async fn send(&self, msg: &LinkMsg) -> Result<(), SendError> {
        self.sender.send(msg).await
    }

    /// See [`LinkSender::try_send`].
    pub fn try_send(&self, msg: &LinkMsg) -> Result<(), SendError> {
        self.sender.try_send(msg)
    }

    /// See [`LinkReceiver::recv`].
    pub async fn recv(&mut self) -> Option<LinkMsg> {
        self.receiver.recv().await
    }

    /// Bytes queued to send: see [`LinkSender::queued_bytes`].
    pub fn queued_out_bytes(&self) -> usize {
        self.sender.queued_bytes()
    }

    /// Bytes received and not yet read: see [`LinkReceiver::queued_bytes`].
    pub fn queued_in_bytes(&self) -> usize {
        self.receiver.queued_bytes()
    }

    pub fn is_closed(&self) -> bool {
        self.sender.is_closed()
    }

    /// Why the link closed, once it has.
    pub fn close_reason(&self) -> Option<CloseReason> {
        self.sender.state.reason.get().cloned()
    }

    /// Resolves when the link closes, with the reason.
    pub async fn closed(&self) -> CloseReason {
        self.sender.closed().await
    }

    /// Closes the link in order: stops accepting sends, writes everything
    /// already queued, hangs up, and waits for the peer to hang up too — at
    /// most [`LinkConfig::linger`] in all, after which it closes abruptly.
    /// Messages that arrive meanwhile are discarded.
    pub async fn close(self) -> CloseReason {
        let Link {
            sender,
            mut receiver,
        } = self;
        let state = sender.state.clone();
        drop(sender);
        state.drain.cancel();
        let deadline = tokio::time::sleep(state.linger);
        tokio::pin!(deadline);
        loop {
            tokio::select! {
                biased;
                _ = state.cancel.cancelled() => break,
                _ = &mut deadline => {
                    state.close(CloseReason::Local);
                    break;
                }
                // Keep the reader moving so it sees the peer hang up. It only
                // ends after closing the link, which the first branch sees.
                _ = receiver.rx.recv() => {}
            }
        }
        state.reason()
    }

    /// Splits into halves, e.g. to read in one task and send from others.
    pub fn split(self) -> (LinkSender, LinkReceiver) {
        (self.sender, self.receiver)
    }

    /// Puts the halves of [`Link::split`] back together (e.g. to
    /// [`close`](Link::close) in order). `sender` should be a clone from the
    /// same link as `receiver`.
    pub fn from_parts(sender: LinkSender, receiver: LinkReceiver) -> Self {
        Self { sender, receiver }
    }
}

impl LinkSender {
    pub fn peer(&self) -> &PeerInfo {
        &self.state.peer
    }

    /// Queues `msg`, waiting for room if the queue is full. Use it for
    /// messages that must not be lost while the link lives.
    pub async fn send(&self, msg: &LinkMsg) -> Result<(), SendError> {
        self.send_encoded(msg.encode()).await
    }

    /// Queues `msg` if there is room now; otherwise drops it, counts the drop
    /// and returns [`SendError::QueueFull`]. Never waits.
    pub fn try_send(&self, msg: &LinkMsg) -> Result<(), SendError> {
        self.try_send_encoded(msg.encode())
    }

    /// [`LinkSender::send`] for a payload already made by [`LinkMsg::encode`]
    /// (encode once, send to many links).
    pub async fn send_encoded(&self, payload: Bytes) -> Result<(), SendError> {
        let n = self.check_size(&payload)?;
        let cancel = &self.state.cancel;
        let permit = tokio::select! {
            biased;
            _ = cancel.cancelled() => return Err(SendError::Closed),
            p = self.budget.clone().acquire_many_owned(n) => p.map_err(|_| SendError::Closed)?,
        };
        let out = Outbound {
            frame: payload,
            _budget: permit,
        };
        tokio::select! {
            biased;
            _ = cancel.cancelled() => Err(SendError::Closed),
            r = self.tx.send(out) => r.map_err(|_| SendError::Closed),
        }
    }

    /// [`LinkSender::try_send`] for a payload already made by [`LinkMsg::encode`].
    pub fn try_send_encoded(&self, payload: Bytes) -> Result<(), SendError> {
        let n = self.check_size(&payload)?;
        if self.is_closed() {
            return Err(SendError::Closed);
        }
        let permit = match self.budget.clone().try_acquire_many_owned(n) {
            Ok(p) => p,
            Err(TryAcquireError::NoPermits) => return Err(self.dropped()),
            Err(TryAcquireError::Closed) => return Err(SendError::Closed),
        };
        let out = Outbound {
            frame: payload,
            _budget: permit,
        };
        match self.tx.try_send(out) {
            Ok(()) => Ok(()),
            Err(mpsc::error::TrySendError::Full(_)) => Err(self.dropped()),
            Err(mpsc::error::TrySendError::Closed(_)) => Err(SendError::Closed),
        }
    }

    fn check_size(&self, payload: &Bytes) -> Result<u32, SendError> {
        if payload.len() > self.max_frame {
            self.state.stats.bump(Counter::SendTooLarge);
            return Err(SendError::TooLarge {
                len: payload.len(),
                max: self.max_frame,
            });
        }
        // max_frame <= MAX_MAX_FRAME, so this always fits.
        u32::try_from(payload.len()).map_err(|_| SendError::TooLarge {
            len: payload.len(),
            max: self.max_frame,
        })
    }

    fn dropped(&self) -> SendError {
        self.state.stats.bump(Counter::QueueFullDrops);
        SendError::QueueFull
    }

    /// Payload bytes queued and not yet handed to the socket.
    pub fn queued_bytes(&self) -> usize {
        self.budget_total
            .saturating_sub(self.budget.available_permits())
    }

    pub fn is_closed(&self) -> bool {
        self.state.cancel.is_cancelled() || self.state.drain.is_cancelled()
    }

    /// Resolves when the link closes, with the reason.
    pub async fn closed(&self) -> CloseReason {
        self.state.cancel.cancelled().await;
        self.state.reason()
    }
}

impl LinkReceiver {
    pub fn peer(&self) -> &PeerInfo {
        &self.state.peer
    }

    /// The next message, or `None` once the link has closed and everything
    /// received before has been read.
    pub async fn recv(&mut self) -> Option<LinkMsg> {
        self.rx.recv().await.map(|(msg, _budget)| msg)
    }

    /// Why the link closed, once it has.
    pub fn close_reason(&self) -> Option<CloseReason> {
        self.state.reason.get().cloned()
    }

    /// Frame bytes of messages received and not yet taken by [`recv`](Self::recv).
    pub fn queued_bytes(&self) -> usize {
        self.budget_total
            .saturating_sub(self.budget.available_permits())
    }
}

impl Drop for LinkReceiver {
    fn drop(&mut self) {
        self.state.close(CloseReason::Local);
    }
}

/// Starts the reader and writer tasks of a link whose handshake is done.
fn establish(
    framed: Framed<TcpStream, FrameCodec>,
    peer: PeerInfo,
    cfg: &LinkConfig,
    cancel: CancellationToken,
    tracker: &TaskTracker,
) -> Link {
    let parts = framed.into_parts();
    let (rd, wr) = parts.io.into_split();
    // Keep anything the peer sent right behind its handshake frame. Built from
    // parts so the reader decodes that buffer before it waits on the socket.
    let mut read_parts = FramedParts::new::<Bytes>(rd, FrameCodec::new(cfg.max_frame));
    read_parts.read_buf = parts.read_buf;
    let reader = Framed::from_parts(read_parts);
    let writer = FramedWrite::new(wr, FrameCodec::new(cfg.max_frame));

    let state = Arc::new(LinkState {
        peer,
        cancel,
        drain: CancellationToken::new(),
        reason: OnceLock::new(),
        opened_at: Instant::now(),
        closed_at: OnceLock::new(),
        linger: cfg.linger,
        idle_timeout: cfg.idle_timeout,
        stats: cfg.stats.clone(),
    });
    cfg.stats.bump(Counter::LinksOpened);
    let (out_tx, out_rx) = mpsc::channel(cfg.send_queue);
    let (in_tx, in_rx) = mpsc::channel(cfg.recv_queue);
    let in_budget = Arc::new(Semaphore::new(cfg.recv_queue_bytes));
    tracker.spawn(read_loop(reader, in_tx, in_budget.clone(), state.clone()));
    tracker.spawn(write_loop(writer, out_rx, state.clone()));
    Link {
        sender: LinkSender {
            tx: out_tx,
            budget: Arc::new(Semaphore::new(cfg.send_queue_bytes)),
            budget_total: cfg.send_queue_bytes,
            max_frame: cfg.max_frame,
            state: state.clone(),
        },
        receiver: LinkReceiver {
            rx: in_rx,
            budget: in_budget,
            budget_total: cfg.recv_queue_bytes,
            state,
        },
    }
}

async fn read_loop(
    mut frames: Framed<OwnedReadHalf, FrameCodec>,
    tx: mpsc::Sender<Inbound>,
    budget: Arc<Semaphore>,
    state: Arc<LinkState>,
) {
    let stats = &state.stats;
    // Far enough to never fire, near enough not to overflow an Instant.
    let never = Duration::from_secs(86_400 * 365);
    let idle = tokio::time::sleep(state.idle_timeout.unwrap_or(never));
    tokio::pin!(idle);
    loop {
        let item = tokio::select! {
            biased;
            _ = state.cancel.cancelled() => break,
            item = frames.next() => item,
            _ = &mut idle => {
                stats.bump(Counter::IdleTimeouts);
                return state.close(CloseReason::Idle(state.idle_timeout.unwrap_or(never)));
            }
        };
        if let Some(t) = state.idle_timeout {
            idle.as_mut().reset(tokio::time::Instant::now() + t);
        }
        let frame = match item {
            Some(Ok(frame)) => frame,
            None => return state.close(CloseReason::PeerClosed),
            Some(Err(FrameError::Oversized { len, max })) => {
                stats.bump(Counter::Oversized);
                return state.close(CloseReason::Oversized { len, max });
            }
            Some(Err(FrameError::Truncated { .. })) => {
                stats.bump(Counter::DecodeErrors);
                return state.close(CloseReason::Truncated);
            }
            Some(Err(FrameError::Io(e))) => {
                stats.bump(Counter::IoErrors);
                return state.close(CloseReason::Io(e.to_string()));
            }
        };
        stats.frame_in(frame.len());
        let msg = match LinkMsg::decode(&frame) {
            Ok(msg) => msg,
            Err(e) => {
                stats.bump(Counter::DecodeErrors);
                return state.close(CloseReason::Decode(e.to_string()));
            }
        };
        // Frame length bounds the decoded size; max_frame <= recv_queue_bytes,
        // and both fit in a u32 (validated), so this always fits.
        let weight = u32::try_from(frame.len()).unwrap_or(u32::MAX);
        drop(frame);
        let permit = tokio::select! {
            biased;
            _ = state.cancel.cancelled() => break,
            p = budget.clone().acquire_many_owned(weight) => match p {
                Ok(p) => p,
                Err(_) => break, // never closed
            },
        };
        tokio::select! {
            biased;
            _ = state.cancel.cancelled() => break,
            r = tx.send((msg, permit)) => if r.is_err() {
                return state.close(CloseReason::Local);
            },
        }
    }
    // Cancelled from outside: by a server shutdown unless a reason is set.
    state.close(CloseReason::Shutdown);
}

async fn write_loop(
    mut sink: FramedWrite<OwnedWriteHalf, FrameCodec>,
    mut rx: mpsc::Receiver<Outbound>,
    state: Arc<LinkState>,
) {
    let mut draining = false;
    loop {
        let next = tokio::select! {
            biased;
            _ = state.cancel.cancelled() => break,
            _ = state.drain.cancelled(), if !draining => {
                // Refuse new sends; what is queued still comes out below.
                draining = true;
                rx.close();
                continue;
            }
            next = rx.recv() => next,
        };
        let result = match next {
            Some(first) => tokio::select! {
                biased;
                _ = state.cancel.cancelled() => break,
                r = write_batch(&mut sink, &mut rx, first, &state.stats) => r,
            },
            None => {
                // Draining, or every sender is gone: flush and send FIN. The
                // reader stays up until the peer hangs up in turn, so nothing
                // it sent is reset away.
                let r = tokio::select! {
                    biased;
                    _ = state.cancel.cancelled() => break,
                    r = sink.close() => r,
                };
                if r.is_ok() {
                    state.record(CloseReason::Local);
                    return;
                }
                r
            }
        };
        if let Err(e) = result {
            state.stats.bump(Counter::IoErrors);
            return state.close(CloseReason::Io(e.to_string()));
        }
    }
    state.close(CloseReason::Shutdown);
}

/// Writes `first` and whatever else is queued right now, up to a batch
/// limit, then flushes once.
async fn write_batch(
    sink: &mut FramedWrite<OwnedWriteHalf, FrameCodec>,
    rx: &mut mpsc::Receiver<Outbound>,
    first: Outbound,
    stats: &LinkStats,
) -> Result<(), FrameError> {
    let mut frames = 0u64;
    let mut bytes = 0usize;
    let mut next = Some(first);
    while let Some(out) = next.take() {
        let len = out.frame.len();
        // The permit drops after this: the bytes now sit in the codec's
        // write buffer, which is flushed before it grows past a batch.
        sink.feed(out.frame).await?;
        frames += 1;
        bytes += len + crate::frame::HEADER_LEN;
        if (frames as usize) < WRITE_BATCH_FRAMES && bytes < WRITE_BATCH_BYTES {
            next = rx.try_recv().ok();
        }
    }
    sink.flush().await?;
    stats.frames_out(frames, bytes as u64);
    Ok(())
}

// ---------------------------------------------------------------------------
// Handshakes.
// ---------------------------------------------------------------------------

/// Reads one handshake frame.
async fn read_handshake(
    framed: &mut Framed<TcpStream, FrameCodec>,
) -> Result<Result<Handshake, HandshakeDecodeError>, HandshakeError> {
    match framed.next().await {
        None => Err(HandshakeError::PeerClosed),
        Some(Err(e)) => Err(HandshakeError::Frame(e)),
        Some(Ok(frame)) => Ok(Handshake::decode(&frame)),
    }
}

/// A fresh nonce from the operating system's CSPRNG.
fn fresh_nonce() -> Result<Nonce, HandshakeError> {
    let mut n = [0u8; NONCE_LEN];
    getrandom::fill(&mut n).map_err(|e| HandshakeError::Random(e.to_string()))?;
    Ok(n)
}

fn unexpected(expected: &str, got: Result<Handshake, HandshakeDecodeError>) -> HandshakeError {
    match got {
        Ok(Handshake::Refused { code, reason }) => HandshakeError::Refused { code, reason },
        Ok(other) => HandshakeError::Malformed(format!(
            "expected {expected}, got {}",
            handshake_kind(&other)
        )),
        Err(HandshakeDecodeError::Version { theirs }) => HandshakeError::Version { theirs },
        Err(e) => HandshakeError::Malformed(e.to_string()),
    }
}

async fn send_handshake(
    framed: &mut Framed<TcpStream, FrameCodec>,
    h: &Handshake,
) -> Result<(), HandshakeError> {
    Ok(framed.send(Bytes::from(h.encode())).await?)
}

/// The accepting side: hello in, challenge out, response in, welcome out.
async fn accept_hello(
    framed: &mut Framed<TcpStream, FrameCodec>,
    cfg: &LinkConfig,
) -> Result<Hello, HandshakeError> {
    let hello = match read_handshake(framed).await? {
        Ok(Handshake::Hello(h)) => h,
        other => return Err(unexpected("a hello", other)),
    };
    if !valid_node_name(&hello.node) {
        return Err(HandshakeError::Malformed(format!(
            "node name must be 1..={MAX_NODE_NAME} bytes without control characters"
        )));
    }
    if !cfg.accept_roles.contains(&hello.role) {
        return Err(HandshakeError::Role(hello.role));
    }
    let nonce = fresh_nonce()?;
    let transcript = Transcript {
        connecting_role: hello.role,
        connecting_node: &hello.node,
        connecting_nonce: &hello.nonce,
        accepting_role: cfg.role,
        accepting_node: &cfg.node,
        accepting_nonce: &nonce,
    };
    let challenge = Handshake::Challenge(Challenge {
        role: cfg.role,
        node: cfg.node.clone(),
        nonce,
        proof: cfg.secret.proof(Side::Accepting, &transcript),
    });
    send_handshake(framed, &challenge).await?;
    let response = match read_handshake(framed).await? {
        Ok(Handshake::Response(r)) => r,
        other => return Err(unexpected("a response", other)),
    };
    if !cfg
        .secret
        .verify(Side::Connecting, &transcript, &response.proof)
    {
        return Err(HandshakeError::Secret);
    }
    send_handshake(framed, &Handshake::Welcome).await?;
    Ok(hello)
}

/// The connecting side: hello out, challenge in (the acceptor proves it holds
/// the secret first), response out, welcome in.
async fn offer_hello(
    framed: &mut Framed<TcpStream, FrameCodec>,
    cfg: &LinkConfig,
) -> Result<Challenge, HandshakeError> {
    let nonce = fresh_nonce()?;
    let hello = Hello {
        role: cfg.role,
        node: cfg.node.clone(),
        nonce,
    };
    send_handshake(framed, &Handshake::Hello(hello)).await?;
    let challenge = match read_handshake(framed).await? {
        Ok(Handshake::Challenge(c)) => c,
        other => return Err(unexpected("a challenge", other)),
    };
    if !valid_node_name(&challenge.node) {
        return Err(HandshakeError::Malformed(
            "bad node name in the challenge".into(),
        ));
    }
    if !cfg.accept_roles.contains(&challenge.role) {
        return Err(HandshakeError::Role(challenge.role));
    }
    let transcript = Transcript {
        connecting_role: cfg.role,
        connecting_node: &cfg.node,
        connecting_nonce: &nonce,
        accepting_role: challenge.role,
        accepting_node: &challenge.node,
        accepting_nonce: &challenge.nonce,
    };
    if !cfg
        .secret
        .verify(Side::Accepting, &transcript, &challenge.proof)
    {
        // The acceptor does not hold our secret: it gets nothing from us.
        return Err(HandshakeError::Secret);
    }
    let response = Handshake::Response(Response {
        proof: cfg.secret.proof(Side::Connecting, &transcript),
    });
    send_handshake(framed, &response).await?;
    match read_handshake(framed).await? {
        Ok(Handshake::Welcome) => Ok(challenge),
        other => Err(unexpected("a welcome", other)),
    }
}

fn handshake_kind(h: &Handshake) -> &'static str {
    match h {
        Handshake::Hello(_) => "a hello",
        Handshake::Challenge(_) => "a challenge",
        Handshake::Response(_) => "a response",
        Handshake::Welcome => "a welcome",
        Handshake::Refused { .. } => "a refusal",
    }
}

/// Counts a failed handshake under the right counters.
fn count_handshake_failure(stats: &LinkStats, e: &HandshakeError) {
    match e {
        HandshakeError::Timeout(_) => stats.bump(Counter::HandshakeTimeouts),
        HandshakeError::Frame(FrameError::Oversized { .. }) => {
            stats.bump(Counter::Oversized);
            stats.bump(Counter::HandshakesRefused);
        }
        HandshakeError::Frame(FrameError::Truncated { .. }) => {
            stats.bump(Counter::DecodeErrors);
        }
        HandshakeError::Frame(FrameError::Io(_)) => stats.bump(Counter::IoErrors),
        HandshakeError::Malformed(_) => {
            stats.bump(Counter::DecodeErrors);
            stats.bump(Counter::HandshakesRefused);
        }
        HandshakeError::Version { .. }
        | HandshakeError::Secret
        | HandshakeError::Role(_)
        | HandshakeError::Refused { .. } => stats.bump(Counter::HandshakesRefused),
        HandshakeError::PeerClosed | HandshakeError::Random(_) => {}
    }
}

// ---------------------------------------------------------------------------
// The accepting side.
// ---------------------------------------------------------------------------

/// Binds a TCP listener on `addr` (`host:port`; port 0 = any free port) and
/// returns it with the address it got.
pub async fn bind(addr: &str) -> std::io::Result<(TcpListener, SocketAddr)> {
    let listener = TcpListener::bind(addr).await?;
    let local = listener.local_addr()?;
    Ok((listener, local))
}

/// Serves links on `listener` until `shutdown` completes.
///
/// Each accepted connection gets its own task: the handshake (bounded by
/// [`LinkConfig::handshake_timeout`]), then `handler` with the established
/// [`Link`]. At most [`LinkConfig::max_links`] connections are served at once;
/// further ones wait in the accept backlog. A refused or broken connection is
/// logged and counted in [`LinkConfig::stats`] and never affects the others.
///
/// On shutdown, every link is closed with [`CloseReason::Shutdown`] (its
/// `recv` returns `None`) and `serve` returns once every handler has
/// returned — so a handler must end when its link does.
pub async fn serve<H, Fut>(
    listener: TcpListener,
    cfg: LinkConfig,
    handler: H,
    shutdown: impl Future,
) -> Result<(), ConfigError>
where
    H: Fn(Link) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = ()> + Send + 'static,
{
    cfg.validate()?;
    let cfg = Arc::new(cfg);
    let handler = Arc::new(handler);
    let limit = Arc::new(Semaphore::new(cfg.max_links));
    let root = CancellationToken::new();
    let tracker = TaskTracker::new();
    let local = listener.local_addr().ok();
    info!(addr = ?local, node = ?cfg.node, role = %cfg.role, "serving links");
    tokio::pin!(shutdown);
    let mut accept_delay = Duration::from_millis(10);
    loop {
        let permit = tokio::select! {
            biased;
            _ = &mut shutdown => break,
            p = limit.clone().acquire_owned() => match p {
                Ok(p) => p,
                Err(_) => break, // never closed; defensive
            },
        };
        let (stream, addr) = tokio::select! {
            biased;
            _ = &mut shutdown => break,
            r = listener.accept() => match r {
                Ok(conn) => {
                    accept_delay = Duration::from_millis(10);
                    conn
                }
                Err(e) => {
                    // Usually out of file descriptors: wait for some links
                    // to close rather than spin.
                    cfg.stats.bump(Counter::AcceptErrors);
                    warn!(error = %e, "accept failed; retrying in {accept_delay:?}");
                    tokio::select! {
                        biased;
                        _ = &mut shutdown => break,
                        _ = tokio::time::sleep(accept_delay) => {}
                    }
                    accept_delay = (accept_delay * 2).min(Duration::from_secs(1));
                    continue;
                }
            },
        };
        let cfg = cfg.clone();
        let handler = handler.clone();
        let token = root.child_token();
        let link_tracker = tracker.clone();
        tracker.spawn(async move {
            let _permit = permit;
            let link = tokio::select! {
                biased;
                _ = token.cancelled() => return,
                link = accept_link(stream, addr, &cfg, token.clone(), &link_tracker) => link,
            };
            if let Some(link) = link {
                handler(link).await;
            }
        });
    }
    drop(listener);
    root.cancel();
    tracker.close();
    tracker.wait().await;
    info!(addr = ?local, "link server stopped");
    Ok(())
}

/// Runs the accepting handshake on one connection; logs and counts failure.
async fn accept_link(
    stream: TcpStream,
    addr: SocketAddr,
    cfg: &LinkConfig,
    cancel: CancellationToken,
    tracker: &TaskTracker,
) -> Option<Link> {
    let _ = stream.set_nodelay(true);
    let mut framed = Framed::new(stream, FrameCodec::new(HANDSHAKE_MAX_FRAME));
    let result =
        match tokio::time::timeout(cfg.handshake_timeout, accept_hello(&mut framed, cfg)).await {
            Ok(r) => r,
            Err(_) => Err(HandshakeError::Timeout(cfg.handshake_timeout)),
        };
    match result {
        Ok(hello) => {
            info!(peer = %addr, node = ?hello.node, role = %hello.role, "link up");
            let peer = PeerInfo {
                role: hello.role,
                node: hello.node,
                addr,
            };
            Some(establish(framed, peer, cfg, cancel, tracker))
        }
        Err(e) => {
            count_handshake_failure(&cfg.stats, &e);
            if matches!(e, HandshakeError::PeerClosed) {
                // A port probe or health check: nothing to refuse.
                debug!(peer = %addr, "connection closed before a hello");
            } else {
                warn!(peer = %addr, "link refused: {e}");
            }
            if let Some((code, reason)) = e.refusal(cfg) {
                let frame = Bytes::from(Handshake::Refused { code, reason }.encode());
                // Best effort: the peer may already be gone.
                let _ = tokio::time::timeout(REFUSAL_WRITE_TIMEOUT, framed.send(frame)).await;
            }
            None
        }
    }
}

// ---------------------------------------------------------------------------
// The connecting side.
// ---------------------------------------------------------------------------

/// One attempt: connect to `addr` and run the handshake, both within
/// [`LinkConfig::handshake_timeout`].
pub async fn connect(addr: &str, cfg: &LinkConfig) -> Result<Link, ConnectError> {
    cfg.validate()?;
    let t = cfg.handshake_timeout;
    let stream = tokio::time::timeout(t, TcpStream::connect(addr))
        .await
        .map_err(|_| ConnectError::Timeout(t))??;
    let _ = stream.set_nodelay(true);
    let peer_addr = stream.peer_addr()?;
    let mut framed = Framed::new(stream, FrameCodec::new(HANDSHAKE_MAX_FRAME));
    let result = match tokio::time::timeout(t, offer_hello(&mut framed, cfg)).await {
        Ok(r) => r,
        Err(_) => Err(HandshakeError::Timeout(t)),
    };
    match result {
        Ok(acceptor) => {
            info!(peer = %peer_addr, node = ?acceptor.node, role = %acceptor.role, "link up");
            let peer = PeerInfo {
                role: acceptor.role,
                node: acceptor.node,
                addr: peer_addr,
            };
            // Client links are not part of any server's task set.
            let tracker = TaskTracker::new();
            let link = establish(framed, peer, cfg, CancellationToken::new(), &tracker);
            tracker.close();
            Ok(link)
        }
        Err(e) => {
            count_handshake_failure(&cfg.stats, &e);
            if let Some((code, reason)) = e.refusal(cfg) {
                // Tell the acceptor why we hang up (best effort).
                let frame = Bytes::from(Handshake::Refused { code, reason }.encode());
                let _ = tokio::time::timeout(REFUSAL_WRITE_TIMEOUT, framed.send(frame)).await;
            }
            Err(e.into())
        }
    }
}

/// Connects with retries: see [`Connector::connect`].
pub async fn connect_with_backoff(
    addr: impl Into<String>,
    cfg: &LinkConfig,
) -> Result<Link, ConnectError> {
    Connector::new(addr, cfg.clone()).connect().await
}

/// A client that keeps coming back to one address.
///
/// Call [`Connector::connect`] for the first link and again each time the
/// link closes; then re-register, since the peer may have restarted and
/// forgotten us. Backoff carries over between calls: a link that dies
/// within [`Backoff::max`] of being established counts as a failure, so a peer
/// that accepts and immediately drops us is not hammered.
#[derive(Debug)]
pub struct Connector {
    addr: String,
    cfg: LinkConfig,
    failures: u32,
    last: Option<Arc<LinkState>>,
}

impl Connector {
    pub fn new(addr: impl Into<String>, cfg: LinkConfig) -> Self {
        Self {
            addr: addr.into(),
            cfg,
            failures: 0,
            last: None,
        }
    }

    pub fn addr(&self) -> &str {
        &self.addr
    }

    /// Connects, retrying transient failures (refused connections, timeouts,
    /// a peer that hangs up mid-handshake) with [`Backoff`] until a link is up.
    /// Returns at once on a permanent refusal (wrong secret, version or
    /// role), or after [`Backoff::max_attempts`] failures.
    ///
    /// Cancel-safe: drop the future to stop trying.
    pub async fn connect(&mut self) -> Result<Link, ConnectError> {
        self.cfg.validate()?;
        let backoff = self.cfg.backoff.clone();
        if let Some(prev) = self.last.take() {
            let lived = prev.lifetime().unwrap_or(Duration::MAX);
            if lived < backoff.max {
                let d = backoff.delay(self.failures);
                self.failures = self.failures.saturating_add(1);
                debug!(addr = %self.addr, "previous link lived {lived:?}; reconnecting in {d:?}");
                tokio::time::sleep(d).await;
            } else {
                self.failures = 0;
            }
        }
        let mut attempts = 0u32;
        loop {
            match connect(&self.addr, &self.cfg).await {
                Ok(link) => {
                    if attempts > 0 {
                        info!(addr = %self.addr, attempts, "reconnected");
                    }
                    self.last = Some(link.sender.state.clone());
                    return Ok(link);
                }
                Err(e) => {
                    self.cfg.stats.bump(Counter::ConnectFailures);
                    attempts = attempts.saturating_add(1);
                    if !e.is_transient() {
                        warn!(addr = %self.addr, "not retrying: {e}");
                        return Err(e);
                    }
                    if backoff.max_attempts.is_some_and(|m| attempts >= m) {
                        return Err(ConnectError::GaveUp {
                            attempts,
                            last: Box::new(e),
                        });
                    }
                    let d = backoff.delay(self.failures);
                    self.failures = self.failures.saturating_add(1);
                    if attempts == 1 {
                        info!(addr = %self.addr, "connect failed: {e}; retrying in {d:?}");
                    } else {
                        debug!(addr = %self.addr, attempts, "connect failed: {e}; retrying in {d:?}");
                    }
                    tokio::time::sleep(d).await;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_caps_and_jitters_within_bounds() {
        let b = Backoff::default();
        assert_eq!(b.base(0), Duration::from_millis(100));
        assert_eq!(b.base(1), Duration::from_millis(200));
        assert_eq!(b.base(5), Duration::from_millis(3200));
        assert_eq!(b.base(6), Duration::from_secs(5));
        assert_eq!(b.base(u32::MAX), Duration::from_secs(5));
        for attempt in [0, 3, 40] {
            let base = b.base(attempt);
            for r in [0, 1, u64::MAX / 3, u64::MAX] {
                let d = jittered(base, r);
                assert!(d >= base / 2 && d <= base, "{d:?} vs {base:?}");
            }
            let d = b.delay(attempt);
            assert!(d >= base / 2 && d <= base, "{d:?} vs {base:?}");
        }
    }

    #[test]
    fn configs_are_validated() {
        let ok = LinkConfig::new(Role::Coordinator, "coord", "secret");
        assert_eq!(ok.validate(), Ok(()));
        let mut c = ok.clone();
        c.node = String::new();
        assert!(matches!(c.validate(), Err(ConfigError::NodeName(_))));
        let mut c = ok.clone();
        c.node = "a\nb".into();
        assert!(matches!(c.validate(), Err(ConfigError::NodeName(_))));
        let mut c = ok.clone();
        c.secret = Secret::default();
        assert_eq!(c.validate(), Err(ConfigError::EmptySecret));
        let mut c = ok.clone();
        c.max_frame = 10;
        assert_eq!(c.validate(), Err(ConfigError::MaxFrame(10)));
        let mut c = ok.clone();
        c.send_queue_bytes = c.max_frame - 1;
        assert!(matches!(
            c.validate(),
            Err(ConfigError::QueueBytes {
                name: "send_queue_bytes",
                ..
            })
        ));
        let mut c = ok.clone();
        c.send_queue = 0;
        assert_eq!(c.validate(), Err(ConfigError::Zero("send_queue")));
        let mut c = ok.clone();
        c.accept_roles.clear();
        assert_eq!(c.validate(), Err(ConfigError::NoRoles));
        let mut c = ok;
        c.backoff.max = Duration::ZERO;
        assert!(matches!(c.validate(), Err(ConfigError::Backoff(_))));
    }
}
