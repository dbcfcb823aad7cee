//! An established link: the [`Link`] handle and its halves, the bounded
//! queues between them and the socket, and the reader and writer tasks.

use std::{
    net::SocketAddr,
    sync::{
        Arc, OnceLock,
        atomic::{AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use tokio::{
    net::{
        TcpStream,
        tcp::{OwnedReadHalf, OwnedWriteHalf},
    },
    sync::{OwnedSemaphorePermit, Semaphore, TryAcquireError, mpsc},
};
use tokio_util::{
    codec::{Framed, FramedParts, FramedWrite},
    sync::CancellationToken,
    task::TaskTracker,
};
use tracing::Instrument as _;
use tracing::{debug, warn};

use tessera_wire::{LinkMsg, Role};

use super::{CloseReason, LinkConfig, SendError};
use crate::{
    frame::{FrameCodec, FrameError},
    stats::{Counter, LinkStats},
};

/// A timer that never fires: far enough, near enough not to overflow an Instant.
const NEVER: Duration = Duration::from_secs(86_400 * 365);

/// At most this many frames, or this many bytes, are written per flush.
const WRITE_BATCH_FRAMES: usize = 64;
const WRITE_BATCH_BYTES: usize = 256 << 10;

/// Who is at the other end of a link.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerInfo {
    pub role: Role,
    pub node: String,
    pub addr: SocketAddr,
}

/// State shared by a link's handles and its reader and writer tasks.
#[derive(Debug)]
pub(super) struct LinkState {
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
    keepalive: Option<Duration>,
    /// When the last message (not a keepalive) arrived: milliseconds since
    /// `opened_at`, plus one; 0 before the first.
    last_message: AtomicU64,
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

    fn message_arrived(&self) {
        let ms = u64::try_from(self.opened_at.elapsed().as_millis()).unwrap_or(u64::MAX - 1);
        self.last_message.store(ms + 1, Ordering::Relaxed);
    }

    /// When the last message arrived (read from the socket, whether or not
    /// the application has taken it yet); keepalives do not count.
    fn last_message_at(&self) -> Option<Instant> {
        match self.last_message.load(Ordering::Relaxed) {
            0 => None,
            ms => Some(self.opened_at + Duration::from_millis(ms - 1)),
        }
    }

    /// How long the link lived, if it has closed.
    pub(super) fn lifetime(&self) -> Option<Duration> {
        self.closed_at
            .get()
            .map(|c| c.saturating_duration_since(self.opened_at))
    }
}

/// One queued outbound frame, holding its share of the byte budget until the
/// writer has copied it into the socket buffer.
struct OutboundFrame {
    frame: Bytes,
    _budget: OwnedSemaphorePermit,
}

/// One received message, holding its frame's share of the inbound byte
/// budget until the application takes it.
type InboundMsg = (LinkMsg, OwnedSemaphorePermit);

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
    tx: mpsc::Sender<OutboundFrame>,
    budget: Arc<Semaphore>,
    budget_total: usize,
    max_frame: usize,
    state: Arc<LinkState>,
}

/// The receiving half of a link. The link lives as long as this half:
/// dropping it closes the link.
#[derive(Debug)]
pub struct LinkReceiver {
    rx: mpsc::Receiver<InboundMsg>,
    budget: Arc<Semaphore>,
    budget_total: usize,
    state: Arc<LinkState>,
}

impl std::fmt::Debug for OutboundFrame {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "OutboundFrame({} bytes)", self.frame.len())
    }
}

impl Link {
    pub fn peer(&self) -> &PeerInfo {
        &self.sender.state.peer
    }

    /// The state this link shares with its tasks, which outlives the link.
    pub(super) fn state(&self) -> Arc<LinkState> {
        self.sender.state.clone()
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
        let out = OutboundFrame {
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
        let out = OutboundFrame {
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

    /// When the last message from the peer arrived: read from the socket,
    /// whether or not the application has taken it yet (keepalives do not
    /// count, to millisecond precision). `None` before the first. Lets a
    /// receiver stamp liveness on arrival rather than on handling.
    pub fn last_message_at(&self) -> Option<Instant> {
        self.state.last_message_at()
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
pub(super) fn establish(
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
        keepalive: cfg.keepalive,
        last_message: AtomicU64::new(0),
        stats: cfg.stats.clone(),
    });
    cfg.stats.bump(Counter::LinksOpened);
    let (out_tx, out_rx) = mpsc::channel(cfg.send_queue);
    let (in_tx, in_rx) = mpsc::channel(cfg.recv_queue);
    let in_budget = Arc::new(Semaphore::new(cfg.recv_queue_bytes));
    tracker.spawn(read_loop(reader, in_tx, in_budget.clone(), state.clone()).in_current_span());
    tracker.spawn(write_loop(writer, out_rx, state.clone()).in_current_span());
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
    tx: mpsc::Sender<InboundMsg>,
    budget: Arc<Semaphore>,
    state: Arc<LinkState>,
) {
    let stats = &state.stats;
    let idle = tokio::time::sleep(state.idle_timeout.unwrap_or(NEVER));
    tokio::pin!(idle);
    loop {
        // Silence is measured while waiting for the socket only: time spent
        // waiting for the application to take a message does not count.
        if let Some(t) = state.idle_timeout {
            idle.as_mut().reset(tokio::time::Instant::now() + t);
        }
        let item = tokio::select! {
            biased;
            _ = state.cancel.cancelled() => break,
            item = frames.next() => item,
            _ = &mut idle => {
                stats.bump(Counter::IdleTimeouts);
                return state.close(CloseReason::Idle(state.idle_timeout.unwrap_or(NEVER)));
            }
        };
        let frame = match item {
            Some(Ok(frame)) => frame,
            None => return state.close(CloseReason::PeerClosed),
            Some(Err(e)) => return state.close(unreadable(stats, e)),
        };
        if frame.is_empty() {
            // A keepalive: it only proves the peer is there.
            stats.bump(Counter::KeepalivesIn);
            continue;
        }
        stats.frame_in(frame.len());
        let msg = match LinkMsg::decode(&frame) {
            Ok(msg) => msg,
            Err(e) => {
                stats.bump(Counter::DecodeErrors);
                return state.close(CloseReason::Decode(e.to_string()));
            }
        };
        state.message_arrived();
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

/// Counts a frame that could not be read and says why it closes the link.
fn unreadable(stats: &LinkStats, e: FrameError) -> CloseReason {
    let (counter, reason) = match e {
        FrameError::Oversized { len, max } => {
            (Counter::Oversized, CloseReason::Oversized { len, max })
        }
        FrameError::Truncated { .. } => (Counter::DecodeErrors, CloseReason::Truncated),
        FrameError::Io(e) => (Counter::IoErrors, CloseReason::Io(e.to_string())),
    };
    stats.bump(counter);
    reason
}

async fn write_loop(
    mut sink: FramedWrite<OwnedWriteHalf, FrameCodec>,
    mut rx: mpsc::Receiver<OutboundFrame>,
    state: Arc<LinkState>,
) {
    let mut draining = false;
    let keepalive = tokio::time::sleep(state.keepalive.unwrap_or(NEVER));
    tokio::pin!(keepalive);
    loop {
        // A keepalive goes when nothing else was written for a period.
        if let Some(t) = state.keepalive {
            keepalive.as_mut().reset(tokio::time::Instant::now() + t);
        }
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
            _ = &mut keepalive, if !draining => {
                let r = tokio::select! {
                    biased;
                    _ = state.cancel.cancelled() => break,
                    r = sink.send(Bytes::new()) => r,
                };
                if let Err(e) = r {
                    state.stats.bump(Counter::IoErrors);
                    return state.close(CloseReason::Io(e.to_string()));
                }
                state.stats.bump(Counter::KeepalivesOut);
                continue;
            }
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
    rx: &mut mpsc::Receiver<OutboundFrame>,
    first: OutboundFrame,
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
