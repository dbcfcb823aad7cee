//! The gate's server transport: renet over renetcode over tokio UDP sockets.
//!
//! A [`Gate`] runs one task per **listener**. A listener owns a tokio
//! `UdpSocket`, a renetcode `NetcodeServer` and a renet `RenetServer` — the
//! logic of renet_netcode's `NetcodeServerTransport`, rewritten over tokio —
//! and waits, without busy polling, on whichever comes first: a datagram, a
//! command from the [`Gate`] handle, or the next update deadline (every
//! [`GateConfig::update_interval`]: time, timeouts, keep-alives, resends,
//! acks).
//!
//! Nothing waits for the update that need not: the messages in a batch of
//! datagrams become events as soon as the batch is read, and the messages
//! queued by a batch of commands are sent as soon as the batch is applied
//! (the replication of a tick leaves in the wake that brought it). renet
//! appends an ack packet to every collection; a client gets one riding on
//! data at most every [`ACK_RIDE_AFTER`], and one alone only when none went
//! for [`ACK_INTERVAL`] (acks are cumulative ranges, so a later one covers
//! what a skipped one would have said), and the packets of one collection
//! share a datagram when the client packs too (see [`pack`](super::pack)).
//! netcode caps a server at 1024 clients, so a gate that needs more runs
//! several listeners and advertises the ones with room
//! ([`Gate::open_addresses`]).
//!
//! Every inbound datagram goes, in order, through:
//! 1. the [screen](super::screen) (framing; refusals counted by reason);
//! 2. a rate limit — per connected client on datagrams
//!    ([`GateConfig::client_datagrams`]; a breach disconnects the client), or,
//!    for addresses not connected (handshakes), one per listener
//!    ([`GateConfig::handshake_datagrams`]; a breach drops the datagram);
//! 3. netcode (decryption, handshake, replay window);
//! 4. renet (acks, reassembly, channels).
//!
//! When netcode completes a handshake the token's user data is decoded into
//! [`TokenClaims`] and handed to the [`Admission`] policy — normally a
//! [`NonceBook`] burning the nonce — and only an admitted
//! client becomes a renet connection and a [`GateEvent::Connected`]. netcode
//! accepts a reused connect token, so this is where replays are refused.
//!
//! Messages from a client are checked against [`GateConfig::max_message_bytes`]
//! and [`GateConfig::client_messages`]; a breach disconnects it with
//! [`DisconnectReason::MessageTooLarge`] / [`DisconnectReason::MessageFlood`].
//!
//! **Invariant:** every queue is bounded and every drop counted. Commands go
//! through a bounded queue per listener ([`GateSendError::QueueFull`]).
//! Events go through one bounded queue. An unreliable message event is
//! dropped and counted (`events_dropped`) when the queue is three quarters
//! full: the last quarter is kept for what must not be lost. A connect or
//! disconnect event, or a reliable message, that finds the queue full waits
//! in a per-listener backlog that is flushed — awaiting room, which pauses
//! that listener — before the listener reads on (so the backlog holds at
//! most one wake's worth), and while it is not empty unreliable message
//! events are dropped rather than overtaking it. So every `Connected` is
//! followed by exactly one `Disconnected` for the same client, no message of
//! a client comes before its `Connected` or after its `Disconnected`, and no
//! reliable message is lost between renet and the event queue.
//!
//! **Invariant:** nothing a peer sends can panic a listener (screened before
//! netcode; no `unwrap` on peer data), and a bad or abusive client costs only
//! its own connection.

use std::collections::{BTreeMap, VecDeque};
use std::net::SocketAddr;
use std::num::NonZeroU32;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};
use tessera_link::{bump, lock};

use bytes::Bytes;
use governor::{DefaultDirectRateLimiter, Quota, RateLimiter};
use renet::RenetServer;
use renetcode::{
    NETCODE_KEY_BYTES, NETCODE_MAX_PACKET_BYTES, NETCODE_USER_DATA_BYTES, NetcodeServer,
    ServerAuthentication, ServerConfig, ServerResult,
};
use tokio::net::UdpSocket;
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;

use super::pack::{Outbox, Part, fits_direct, is_packed, unpack};
use super::screen::{Direction, ScreenStats, classify};
use super::token::{BurnError, NonceBook, TokenClaims, unix_now};
use super::{Channel, connection_config};

/// netcode's client id, chosen by the token issuer; unique among connected
/// clients of a gate.
pub type ClientId = u64;

/// netcode's limit on clients per server (and so per listener).
pub const MAX_CLIENTS_PER_LISTENER: usize = 1024;

/// Receive buffer: larger than any legal datagram, so an oversized one is
/// seen as oversized rather than silently truncated to a legal size.
const RECV_BUFFER_BYTES: usize = 2048;

/// A token bucket: `per_second` sustained, `burst` at once.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RateQuota {
    pub per_second: u32,
    pub burst: u32,
}

impl RateQuota {
    pub const fn new(per_second: u32, burst: u32) -> Self {
        Self { per_second, burst }
    }

    fn quota(self) -> Option<Quota> {
        let rate = NonZeroU32::new(self.per_second)?;
        let burst = NonZeroU32::new(self.burst)?;
        Some(Quota::per_second(rate).allow_burst(burst))
    }

    fn limiter(self) -> DefaultDirectRateLimiter {
        // `GateConfig::validate` refused zero rates; 1/s is only a fallback.
        let quota = self
            .quota()
            .unwrap_or_else(|| Quota::per_second(NonZeroU32::MIN));
        RateLimiter::direct(quota)
    }
}

/// Settings for a [`Gate`].
#[derive(Clone)]
pub struct GateConfig {
    /// netcode protocol id; tokens for another id are refused by the screen.
    pub protocol_id: u64,
    /// The key shared with the token issuer. Never logged.
    pub private_key: [u8; NETCODE_KEY_BYTES],
    /// Clients per listener, 1..=1024. Default 1024.
    pub max_clients_per_listener: usize,
    /// How often each listener updates netcode and renet: time-outs,
    /// keep-alives, resends and acks (messages are sent and received as they
    /// come, not at updates). Default 50 ms.
    pub update_interval: Duration,
    /// Largest message a client may send, in bytes. Default 1024.
    pub max_message_bytes: usize,
    /// Inbound datagrams per connected client. Default 300/s, burst 600.
    pub client_datagrams: RateQuota,
    /// Inbound messages per connected client. Default 200/s, burst 400.
    pub client_messages: RateQuota,
    /// Inbound datagrams from addresses not connected (handshakes), per
    /// listener. Default 2000/s, burst 4000.
    pub handshake_datagrams: RateQuota,
    /// Renet memory per channel per client for messages being sent. Default 256 KiB.
    pub server_channel_memory: usize,
    /// Renet memory per channel per client for messages being received. Default 32 KiB.
    pub client_channel_memory: usize,
    /// Capacity of the event queue (all listeners). Default 8192.
    pub event_queue: usize,
    /// Capacity of each listener's command queue. Default 8192. Unreliable
    /// messages may fill three quarters of it; the rest is kept for reliable
    /// messages and disconnects, which a burst of state must not crowd out.
    pub command_queue: usize,
    /// Datagrams read per wake-up before other work gets a turn. Default 256.
    pub max_datagrams_per_wake: usize,
    /// Commands applied per wake-up before their messages are sent and other
    /// work gets a turn. Default 1024.
    pub max_commands_per_wake: usize,
    /// Kernel receive and send buffer asked for on each listener socket.
    /// Default 4 MiB. The kernel's default (~208 KiB on Linux) holds a few
    /// hundred datagrams: a few milliseconds of a full listener, so a busy
    /// moment loses datagrams in the kernel (`RcvbufErrors` in
    /// `/proc/net/snmp`). Linux caps it at `net.core.rmem_max` / `wmem_max`.
    /// 0 keeps the kernel's default.
    pub socket_buffer_bytes: usize,
}

impl std::fmt::Debug for GateConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GateConfig")
            .field("protocol_id", &self.protocol_id)
            .field("max_clients_per_listener", &self.max_clients_per_listener)
            .field("update_interval", &self.update_interval)
            .field("max_message_bytes", &self.max_message_bytes)
            .field("client_datagrams", &self.client_datagrams)
            .field("client_messages", &self.client_messages)
            .field("handshake_datagrams", &self.handshake_datagrams)
            .field("event_queue", &self.event_queue)
            .field("command_queue", &self.command_queue)
            .finish_non_exhaustive()
    }
}

impl GateConfig {
    /// Defaults for everything but the protocol id and the key.
    pub fn new(protocol_id: u64, private_key: [u8; NETCODE_KEY_BYTES]) -> Self {
        Self {
            protocol_id,
            private_key,
            max_clients_per_listener: MAX_CLIENTS_PER_LISTENER,
            update_interval: Duration::from_millis(50),
            max_message_bytes: 1024,
            client_datagrams: RateQuota::new(300, 600),
            client_messages: RateQuota::new(200, 400),
            handshake_datagrams: RateQuota::new(2000, 4000),
            server_channel_memory: 256 * 1024,
            client_channel_memory: 32 * 1024,
            event_queue: 8192,
            command_queue: 8192,
            max_datagrams_per_wake: 256,
            max_commands_per_wake: 1024,
            socket_buffer_bytes: 4 << 20,
        }
    }

    /// Checks every field; the message names the field.
    pub fn validate(&self) -> Result<(), GateError> {
        let bad = |m: &str| Err(GateError::Config(m.to_owned()));
        if !(1..=MAX_CLIENTS_PER_LISTENER).contains(&self.max_clients_per_listener) {
            return bad("max_clients_per_listener must be 1..=1024");
        }
        if self.update_interval.is_zero() {
            return bad("update_interval must be above zero");
        }
        if self.max_message_bytes == 0 || self.max_message_bytes > self.client_channel_memory {
            return bad("max_message_bytes must be 1..=client_channel_memory");
        }
        for (name, q) in [
            ("client_datagrams", self.client_datagrams),
            ("client_messages", self.client_messages),
            ("handshake_datagrams", self.handshake_datagrams),
        ] {
            if q.quota().is_none() {
                return Err(GateError::Config(format!(
                    "{name}: rate and burst must be above zero"
                )));
            }
        }
        if self.event_queue == 0
            || self.command_queue == 0
            || self.max_datagrams_per_wake == 0
            || self.max_commands_per_wake == 0
        {
            return bad(
                "event_queue, command_queue, max_datagrams_per_wake and max_commands_per_wake must be above zero",
            );
        }
        if self.server_channel_memory == 0 || self.client_channel_memory == 0 {
            return bad("channel memories must be above zero");
        }
        Ok(())
    }
}

/// Why a connection ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DisconnectReason {
    /// The client said goodbye.
    ByClient,
    /// Nothing heard from the client within the token's timeout.
    TimedOut,
    /// [`Gate::disconnect`], with the caller's code.
    Kicked(u16),
    /// Too many datagrams.
    DatagramFlood,
    /// Too many messages.
    MessageFlood,
    /// A message above `max_message_bytes`.
    MessageTooLarge,
    /// A packed payload whose framing does not add up.
    MalformedPayload,
    /// Its reliable channel could not take more (the client stopped acking).
    Backlogged,
    /// renet closed the connection (bad packet, channel error).
    Protocol(renet::DisconnectReason),
    /// The gate is shutting down.
    Shutdown,
}

/// Why a connection was refused after the netcode handshake.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    #[error("token already used")]
    Replayed,
    #[error("token expired")]
    Expired,
    #[error("token unknown")]
    Unknown,
    #[error("token user data holds no valid claims")]
    BadClaims,
    #[error("refused by policy")]
    Denied,
}

impl From<BurnError> for Refusal {
    fn from(e: BurnError) -> Self {
        match e {
            BurnError::Replayed => Refusal::Replayed,
            BurnError::Expired => Refusal::Expired,
            BurnError::Unknown => Refusal::Unknown,
        }
    }
}

/// Decides whether a client that completed the netcode handshake may stay.
/// Called on the listener's task: keep it quick (a map lookup, not I/O).
pub trait Admission: Send + Sync + 'static {
    fn admit(&self, client: ClientId, claims: &TokenClaims) -> Result<(), Refusal>;
}

/// Admits everyone with valid claims (tests, single-process setups).
#[derive(Clone, Copy, Debug, Default)]
pub struct AdmitAll;

impl Admission for AdmitAll {
    fn admit(&self, _: ClientId, _: &TokenClaims) -> Result<(), Refusal> {
        Ok(())
    }
}

/// Burns the token's nonce: each token connects once.
impl Admission for Mutex<NonceBook> {
    fn admit(&self, _: ClientId, claims: &TokenClaims) -> Result<(), Refusal> {
        let mut book = self.lock().unwrap_or_else(PoisonError::into_inner);
        book.burn(&claims.nonce, unix_now()).map_err(Refusal::from)
    }
}

/// What the gate reports.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum GateEvent {
    Connected {
        client: ClientId,
        listener: usize,
        addr: SocketAddr,
        claims: TokenClaims,
    },
    Message {
        client: ClientId,
        channel: Channel,
        payload: Bytes,
    },
    Disconnected {
        client: ClientId,
        reason: DisconnectReason,
    },
}

/// Errors starting a gate.
#[derive(Debug, thiserror::Error)]
pub enum GateError {
    #[error("invalid gate config: {0}")]
    Config(String),
    #[error("no listener given")]
    NoListener,
    #[error("binding {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        source: std::io::Error,
    },
}

/// Why a command was not queued.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum GateSendError {
    #[error("no such client")]
    UnknownClient,
    #[error("the listener's command queue is full")]
    QueueFull,
    #[error("the gate is shut down")]
    Closed,
}

/// The gate's counters (all listeners). Read with [`GateStats::snapshot`].
#[derive(Debug, Default)]
pub struct GateStats {
    /// Screen outcomes by reason.
    pub screen: ScreenStats,
    datagrams_in: AtomicU64,
    bytes_in: AtomicU64,
    datagrams_out: AtomicU64,
    send_errors: AtomicU64,
    recv_errors: AtomicU64,
    handshake_throttled: AtomicU64,
    admitted: AtomicU64,
    disconnects: AtomicU64,
    kicked_datagram_flood: AtomicU64,
    kicked_message_flood: AtomicU64,
    kicked_message_too_large: AtomicU64,
    kicked_backlogged: AtomicU64,
    kicked_malformed: AtomicU64,
    refused_replayed: AtomicU64,
    refused_expired: AtomicU64,
    refused_unknown: AtomicU64,
    refused_bad_claims: AtomicU64,
    refused_denied: AtomicU64,
    messages_in: AtomicU64,
    messages_in_direct: AtomicU64,
    messages_out: AtomicU64,
    events_dropped: AtomicU64,
    outbound_dropped: AtomicU64,
    acks_deferred: AtomicU64,
}

/// A copy of [`GateStats`] (screen counters aside).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct GateStatsSnapshot {
    pub datagrams_in: u64,
    pub bytes_in: u64,
    pub datagrams_out: u64,
    pub send_errors: u64,
    pub recv_errors: u64,
    /// Handshake datagrams dropped by the per-listener limit.
    pub handshake_throttled: u64,
    /// Clients admitted (each gets one `Connected` event).
    pub admitted: u64,
    /// Admitted clients gone again (each gets one `Disconnected` event).
    pub disconnects: u64,
    pub kicked_datagram_flood: u64,
    pub kicked_message_flood: u64,
    pub kicked_message_too_large: u64,
    pub kicked_backlogged: u64,
    /// Clients disconnected for a malformed packed payload.
    pub kicked_malformed: u64,
    pub refused_replayed: u64,
    pub refused_expired: u64,
    pub refused_unknown: u64,
    pub refused_bad_claims: u64,
    pub refused_denied: u64,
    pub messages_in: u64,
    /// Of `messages_in`, the unreliable ones that came outside renet
    /// (see [`pack`](super::pack)).
    pub messages_in_direct: u64,
    pub messages_out: u64,
    /// Unreliable message events dropped because the event queue was (three
    /// quarters) full.
    pub events_dropped: u64,
    /// Unreliable messages to clients dropped because the channel was full,
    /// or addressed to a client that had just left.
    pub outbound_dropped: u64,
    /// renet ack packets not sent because the client had one shortly before
    /// ([`ACK_RIDE_AFTER`], [`ACK_INTERVAL`]; a later ack covers them).
    pub acks_deferred: u64,
    /// Datagrams that passed the screen.
    pub screen_passed: u64,
    /// Datagrams the screen refused, all reasons.
    pub screen_rejected: u64,
}

impl GateStats {
    pub fn snapshot(&self) -> GateStatsSnapshot {
        let l = |c: &AtomicU64| c.load(Ordering::Relaxed);
        GateStatsSnapshot {
            datagrams_in: l(&self.datagrams_in),
            bytes_in: l(&self.bytes_in),
            datagrams_out: l(&self.datagrams_out),
            send_errors: l(&self.send_errors),
            recv_errors: l(&self.recv_errors),
            handshake_throttled: l(&self.handshake_throttled),
            admitted: l(&self.admitted),
            disconnects: l(&self.disconnects),
            kicked_datagram_flood: l(&self.kicked_datagram_flood),
            kicked_message_flood: l(&self.kicked_message_flood),
            kicked_message_too_large: l(&self.kicked_message_too_large),
            kicked_backlogged: l(&self.kicked_backlogged),
            kicked_malformed: l(&self.kicked_malformed),
            refused_replayed: l(&self.refused_replayed),
            refused_expired: l(&self.refused_expired),
            refused_unknown: l(&self.refused_unknown),
            refused_bad_claims: l(&self.refused_bad_claims),
            refused_denied: l(&self.refused_denied),
            messages_in: l(&self.messages_in),
            messages_in_direct: l(&self.messages_in_direct),
            messages_out: l(&self.messages_out),
            events_dropped: l(&self.events_dropped),
            outbound_dropped: l(&self.outbound_dropped),
            acks_deferred: l(&self.acks_deferred),
            screen_passed: self.screen.passed(),
            screen_rejected: self.screen.rejected_total(),
        }
    }

    fn refused(&self, r: Refusal) {
        bump(match r {
            Refusal::Replayed => &self.refused_replayed,
            Refusal::Expired => &self.refused_expired,
            Refusal::Unknown => &self.refused_unknown,
            Refusal::BadClaims => &self.refused_bad_claims,
            Refusal::Denied => &self.refused_denied,
        });
    }
}

/// Asks the kernel for `bytes` of receive and send buffer on `socket`; a
/// kernel that grants less (Linux caps at `net.core.rmem_max`) is logged,
/// not an error.
pub(crate) fn size_buffers(socket: &UdpSocket, bytes: usize, addr: SocketAddr) {
    if bytes == 0 {
        return;
    }
    let sock = socket2::SockRef::from(socket);
    let _ = sock.set_recv_buffer_size(bytes);
    let _ = sock.set_send_buffer_size(bytes);
    // Linux reports twice what it granted (bookkeeping overhead included).
    let granted = sock.recv_buffer_size().unwrap_or(0);
    if granted < bytes {
        tracing::info!(
            %addr,
            asked = bytes,
            granted,
            "UDP receive buffer smaller than asked (raise net.core.rmem_max to allow more)"
        );
    }
}

/// A bound socket and the address clients reach it at (the one put in
/// tokens; it differs from the local address behind NAT or a wildcard bind).
#[derive(Debug)]
pub struct ListenerSocket {
    pub socket: UdpSocket,
    pub public_addr: SocketAddr,
}

enum Command {
    Send {
        client: ClientId,
        channel: Channel,
        payload: Bytes,
    },
    Disconnect {
        client: ClientId,
        code: u16,
    },
}

struct ListenerHandle {
    public_addr: SocketAddr,
    local_addr: SocketAddr,
    commands: mpsc::Sender<Command>,
    connected: Arc<AtomicUsize>,
    task: JoinHandle<()>,
}

/// Client id → listener index, for routing commands.
type Routes = Arc<Mutex<BTreeMap<ClientId, usize>>>;

/// The running gate: a handle on its listeners. Dropping it without
/// [`shutdown`](Self::shutdown) stops the listeners too (their command
/// queues close), without goodbye packets.
#[derive(Debug)]
pub struct Gate {
    listeners: Vec<ListenerHandle>,
    routes: Routes,
    stats: Arc<GateStats>,
    shutdown: watch::Sender<bool>,
    max_clients: usize,
}

impl std::fmt::Debug for ListenerHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Listener")
            .field("public_addr", &self.public_addr)
            .field("connected", &self.connected.load(Ordering::Relaxed))
            .finish_non_exhaustive()
    }
}

impl Gate {
    /// Binds one listener per address (public address = the bound one; use
    /// [`start`](Self::start) to give others) and starts them.
    pub async fn bind(
        config: GateConfig,
        addrs: &[SocketAddr],
        admission: Arc<dyn Admission>,
    ) -> Result<(Gate, mpsc::Receiver<GateEvent>), GateError> {
        let mut sockets = Vec::with_capacity(addrs.len());
        for &addr in addrs {
            let socket = UdpSocket::bind(addr)
                .await
                .map_err(|source| GateError::Bind { addr, source })?;
            let public_addr = socket
                .local_addr()
                .map_err(|source| GateError::Bind { addr, source })?;
            sockets.push(ListenerSocket {
                socket,
                public_addr,
            });
        }
        Self::start(config, sockets, admission)
    }

    /// Starts one listener task per socket on the current tokio runtime.
    /// Returns the handle and the gate's event queue.
    pub fn start(
        config: GateConfig,
        sockets: Vec<ListenerSocket>,
        admission: Arc<dyn Admission>,
    ) -> Result<(Gate, mpsc::Receiver<GateEvent>), GateError> {
        config.validate()?;
        if sockets.is_empty() {
            return Err(GateError::NoListener);
        }
        let (events_tx, events_rx) = mpsc::channel(config.event_queue);
        let (shutdown_tx, _) = watch::channel(false);
        let stats = Arc::new(GateStats::default());
        let routes: Routes = Arc::default();
        let config = Arc::new(config);
        let now = unix_now();
        let mut listeners = Vec::with_capacity(sockets.len());
        for (
            index,
            ListenerSocket {
                socket,
                public_addr,
            },
        ) in sockets.into_iter().enumerate()
        {
            let local_addr = socket.local_addr().map_err(|source| GateError::Bind {
                addr: public_addr,
                source,
            })?;
            size_buffers(&socket, config.socket_buffer_bytes, local_addr);
            let (commands_tx, commands_rx) = mpsc::channel(config.command_queue);
            let connected = Arc::new(AtomicUsize::new(0));
            let netcode = NetcodeServer::new(ServerConfig {
                current_time: now,
                max_clients: config.max_clients_per_listener,
                protocol_id: config.protocol_id,
                public_addresses: vec![public_addr],
                authentication: ServerAuthentication::Secure {
                    private_key: config.private_key,
                },
            });
            let renet = RenetServer::new(connection_config(
                config.server_channel_memory,
                config.client_channel_memory,
            ));
            let listener = Listener {
                index,
                netcode,
                buf: vec![0u8; RECV_BUFFER_BYTES].into_boxed_slice(),
                io: Io {
                    socket,
                    renet,
                    clients: BTreeMap::new(),
                    by_addr: BTreeMap::new(),
                    reasons: BTreeMap::new(),
                    handshake: config.handshake_datagrams.limiter(),
                    backlog: VecDeque::new(),
                    events: events_tx.clone(),
                    stats: stats.clone(),
                    routes: routes.clone(),
                    connected: connected.clone(),
                    dirty: Vec::new(),
                    touched: Vec::new(),
                    to_kick: Vec::new(),
                    payloads: Vec::new(),
                    max_message_bytes: config.max_message_bytes,
                },
                admission: admission.clone(),
                config: config.clone(),
                commands: commands_rx,
                shutdown: shutdown_tx.subscribe(),
                last_update: Instant::now(),
            };
            let task = tokio::spawn(listener.run());
            listeners.push(ListenerHandle {
                public_addr,
                local_addr,
                commands: commands_tx,
                connected,
                task,
            });
        }
        Ok((
            Gate {
                listeners,
                routes,
                stats,
                shutdown: shutdown_tx,
                max_clients: config.max_clients_per_listener,
            },
            events_rx,
        ))
    }

    /// Every listener's public address, in listener order.
    pub fn addresses(&self) -> Vec<SocketAddr> {
        self.listeners.iter().map(|l| l.public_addr).collect()
    }

    /// Every listener's bound local address, in listener order.
    pub fn local_addresses(&self) -> Vec<SocketAddr> {
        self.listeners.iter().map(|l| l.local_addr).collect()
    }

    /// Public addresses of the listeners with room, in listener order: what
    /// to put in new tokens (a full listener denies, and a netcode client does
    /// not move on to the next address after a denial).
    pub fn open_addresses(&self) -> Vec<SocketAddr> {
        self.listeners
            .iter()
            .filter(|l| l.connected.load(Ordering::Relaxed) < self.max_clients)
            .map(|l| l.public_addr)
            .collect()
    }

    /// Connected clients on each listener.
    pub fn connected_per_listener(&self) -> Vec<usize> {
        self.listeners
            .iter()
            .map(|l| l.connected.load(Ordering::Relaxed))
            .collect()
    }

    /// Connected clients, all listeners.
    pub fn connected(&self) -> usize {
        self.connected_per_listener().iter().sum()
    }

    pub fn stats(&self) -> &Arc<GateStats> {
        &self.stats
    }

    /// Queues a message to a connected client. The listener sends it as soon
    /// as it has applied the commands queued with it. An unreliable message that finds its channel full is dropped
    /// and counted; a reliable one disconnects the client
    /// ([`DisconnectReason::Backlogged`]).
    pub fn send(
        &self,
        client: ClientId,
        channel: Channel,
        payload: impl Into<Bytes>,
    ) -> Result<(), GateSendError> {
        self.command(
            client,
            Command::Send {
                client,
                channel,
                payload: payload.into(),
            },
        )
    }

    /// Disconnects a client; its `Disconnected` event carries
    /// [`DisconnectReason::Kicked`] with `code`.
    pub fn disconnect(&self, client: ClientId, code: u16) -> Result<(), GateSendError> {
        self.command(client, Command::Disconnect { client, code })
    }

    fn command(&self, client: ClientId, command: Command) -> Result<(), GateSendError> {
        let listener = lock(&self.routes)
            .get(&client)
            .copied()
            .ok_or(GateSendError::UnknownClient)?;
        let Some(l) = self.listeners.get(listener) else {
            return Err(GateSendError::UnknownClient);
        };
        let unreliable = matches!(
            command,
            Command::Send {
                channel: Channel::Unreliable,
                ..
            }
        );
        if unreliable && l.commands.capacity() <= l.commands.max_capacity() / 4 {
            return Err(GateSendError::QueueFull);
        }
        l.commands.try_send(command).map_err(|e| match e {
            mpsc::error::TrySendError::Full(_) => GateSendError::QueueFull,
            mpsc::error::TrySendError::Closed(_) => GateSendError::Closed,
        })
    }

    /// Disconnects every client (each gets a `Disconnected` event with
    /// [`DisconnectReason::Shutdown`] if the event queue is still read) and
    /// waits for the listeners to stop.
    /// Asks every listener to stop (clients are disconnected with
    /// [`DisconnectReason::Shutdown`]) without waiting for them; for a gate
    /// shared behind an `Arc`. [`shutdown`](Self::shutdown) also waits.
    pub fn stop(&self) {
        let _ = self.shutdown.send(true);
    }

    pub async fn shutdown(self) {
        let _ = self.shutdown.send(true);
        for l in self.listeners {
            if let Err(e) = l.task.await {
                tracing::error!(addr = %l.public_addr, "gate listener task failed: {e}");
            }
        }
    }
}

struct ClientState {
    addr: SocketAddr,
    claims: TokenClaims,
    datagrams: DefaultDirectRateLimiter,
    messages: DefaultDirectRateLimiter,
    /// Set once the client is being disconnected: its datagrams and
    /// messages are ignored from then on.
    leaving: bool,
    /// Messages were queued for it since its packets were last collected
    /// (it is then listed in `Io::dirty`).
    dirty: bool,
    /// Payloads were read from it since its messages were last taken (it is
    /// then listed in `Io::touched`).
    touched: bool,
    /// When an ack packet was last sent to it.
    last_ack: Instant,
    /// It has sent a packed payload, so it reads them: its packets are
    /// packed too, and its unreliable messages go outside renet (`direct`).
    packs: bool,
    /// Unreliable messages for it that skip renet (see [`pack`](super::pack)),
    /// sent with its next packets; at most `server_channel_memory` bytes.
    direct: Outbox,
    /// Messages were given to renet since its packets were last collected.
    renet_dirty: bool,
    /// Unreliable messages it sent outside renet, already checked against
    /// the size and rate limits, taken with its renet messages at the end of
    /// the wake that read them (so at most a rate-limit burst).
    inbox: Vec<Bytes>,
    /// renet packets were read from it since its messages were last taken
    /// (if not, renet has no new message of it to ask for).
    renet_fed: bool,
}

/// A renet ack packet that would go alone (a datagram of its own) waits this
/// long after the last ack, and one goes at least this often while there is
/// something to ack. renet appends a separate ack packet to every collection
/// of packets, so without this every message sent would cost two datagrams
/// (measured before: ~40 of ~60 datagrams per second per client were acks
/// at 25 ms updates). renet's acks are cumulative ranges (kept until the
/// peer acks the ack), so a skipped ack is said by the next. Under the
/// reliable channel's resend time (200 ms, [`connection_config`]), so a
/// deferred ack does not make the peer resend.
///
/// [`connection_config`]: super::connection_config
pub const ACK_INTERVAL: Duration = Duration::from_millis(150);

/// An ack that can ride in a packed datagram with other packets (costing no
/// datagram of its own) goes this long after the last one. A peer that sends
/// data at least every `ACK_INTERVAL` (a client's inputs, a scene's state)
/// so never sends an ack alone: with both at 100 ms, the two timers raced
/// and about 2 of a bot's 12 datagrams per second were lone acks.
pub const ACK_RIDE_AFTER: Duration = Duration::from_millis(50);

/// renet's packet type byte for an ack packet (`Packet::Ack`, renet 2.0).
pub(crate) const RENET_ACK_PACKET: u8 = 4;

/// Whether to ask renet for a peer's packets now (both ends): when it has
/// messages of its own, when an ack is due alone ([`ACK_INTERVAL`] since the
/// last), or when one can ride with unreliable messages going outside renet
/// — after half that, not after [`ACK_RIDE_AFTER`] (one 20 Hz tick: renet
/// would be asked every tick just to build an ack). Unreliable messages
/// alone cost renet nothing.
pub(crate) fn renet_due(renet_dirty: bool, direct: bool, since_ack: Duration) -> bool {
    renet_dirty || since_ack >= ACK_INTERVAL || (direct && since_ack >= ACK_INTERVAL / 2)
}

/// Drops from `packets` (one renet collection) an ack packet that is not
/// due, and says whether one stays. An ack is due [`ACK_INTERVAL`] after the
/// last one; when it `rides` (other data goes in the same packed datagram,
/// so it costs no datagram of its own), already [`ACK_RIDE_AFTER`] after it,
/// so acks ride on data rather than wait for the next update and go alone.
pub(crate) fn keep_due_ack(
    packets: &mut Vec<Vec<u8>>,
    rides: bool,
    last_ack: Instant,
    now: Instant,
    deferred: &AtomicU64,
) -> bool {
    let is_ack = |p: &Vec<u8>| p.first() == Some(&RENET_ACK_PACKET);
    let Some(at) = packets.iter().position(is_ack) else {
        return false;
    };
    let since = now.saturating_duration_since(last_ack);
    let due = if rides {
        since >= ACK_RIDE_AFTER
    } else {
        since >= ACK_INTERVAL
    };
    if !due {
        packets.remove(at);
        deferred.fetch_add(1, Ordering::Relaxed);
    }
    due
}

/// Everything of a listener but the netcode server, so a `ServerResult`
/// (which borrows the netcode server) can be applied to it.
struct Io {
    socket: UdpSocket,
    renet: RenetServer,
    clients: BTreeMap<ClientId, ClientState>,
    by_addr: BTreeMap<SocketAddr, ClientId>,
    /// Why a client left, recorded when we know better than renet.
    reasons: BTreeMap<ClientId, DisconnectReason>,
    handshake: DefaultDirectRateLimiter,
    /// Lifecycle events and reliable messages that found the event queue
    /// full (see module docs).
    backlog: VecDeque<GateEvent>,
    events: mpsc::Sender<GateEvent>,
    stats: Arc<GateStats>,
    routes: Routes,
    connected: Arc<AtomicUsize>,
    /// Clients with messages queued since their last collection.
    dirty: Vec<ClientId>,
    /// Clients with payloads read since their messages were last taken.
    touched: Vec<ClientId>,
    /// Clients to disconnect once the datagram is handled: a malformed packed
    /// payload, or a message outside renet over a limit.
    to_kick: Vec<(ClientId, DisconnectReason)>,
    /// Scratch for the payloads of one collection.
    payloads: Vec<Vec<u8>>,
    /// [`GateConfig::max_message_bytes`].
    max_message_bytes: usize,
}

/// A client netcode has just admitted, waiting for the admission policy.
struct Handshaken {
    client: ClientId,
    addr: SocketAddr,
    user_data: Box<[u8; NETCODE_USER_DATA_BYTES]>,
    /// netcode's first keep-alive, sent if the client is admitted.
    reply: Vec<u8>,
}

impl Io {
    fn send_to(&self, datagram: &[u8], addr: SocketAddr) {
        match self.socket.try_send_to(datagram, addr) {
            Ok(_) => bump(&self.stats.datagrams_out),
            // Includes WouldBlock: UDP may drop, and so may we (counted).
            Err(_) => bump(&self.stats.send_errors),
        }
    }

    /// Carries out a netcode result; `leave_reason` names why a disconnect
    /// coming out of this call happened, unless a reason is already known.
    fn apply(
        &mut self,
        result: ServerResult<'_, '_>,
        leave_reason: DisconnectReason,
    ) -> Option<Handshaken> {
        match result {
            ServerResult::None => None,
            ServerResult::PacketToSend { addr, payload } => {
                self.send_to(payload, addr);
                None
            }
            ServerResult::Payload { client_id, payload } => {
                let c = self.clients.get_mut(&client_id)?;
                if c.leaving {
                    return None;
                }
                let (renet, stats, max) = (&mut self.renet, &self.stats, self.max_message_bytes);
                let mut breach = None;
                let unpacked = unpack(payload, |part| match part {
                    // process_packet_from fails only for an unknown client.
                    Part::Packet(packet) => {
                        c.renet_fed = true;
                        let _ = renet.process_packet_from(packet, client_id);
                    }
                    // The limits renet's messages meet in `take_messages`,
                    // met here so the inbox never holds more than a burst.
                    Part::Unreliable(_) if breach.is_some() => {}
                    Part::Unreliable(m) if m.len() > max => {
                        bump(&stats.kicked_message_too_large);
                        breach = Some(DisconnectReason::MessageTooLarge);
                    }
                    Part::Unreliable(_) if c.messages.check().is_err() => {
                        bump(&stats.kicked_message_flood);
                        breach = Some(DisconnectReason::MessageFlood);
                    }
                    Part::Unreliable(m) => c.inbox.push(Bytes::copy_from_slice(m)),
                });
                if unpacked.is_err() {
                    bump(&self.stats.kicked_malformed);
                    breach = Some(DisconnectReason::MalformedPayload);
                }
                if let Some(reason) = breach {
                    c.inbox.clear();
                    self.to_kick.push((client_id, reason));
                    return None;
                }
                c.packs |= is_packed(payload);
                if !c.touched {
                    c.touched = true;
                    self.touched.push(client_id);
                }
                None
            }
            ServerResult::ClientConnected {
                client_id,
                addr,
                user_data,
                payload,
            } => Some(Handshaken {
                client: client_id,
                addr,
                user_data,
                reply: payload.to_vec(),
            }),
            ServerResult::ClientDisconnected {
                client_id,
                addr,
                payload,
            } => {
                if let Some(payload) = payload {
                    self.send_to(payload, addr);
                }
                if self.clients.contains_key(&client_id) {
                    self.reasons.entry(client_id).or_insert(leave_reason);
                    self.by_addr.remove(&addr);
                    lock(&self.routes).remove(&client_id);
                    if let Some(c) = self.clients.get_mut(&client_id) {
                        c.leaving = true;
                    }
                }
                // Queues renet's ClientDisconnected event (if it knew the client).
                self.renet.remove_connection(client_id);
                None
            }
        }
    }

    /// Queues an event (see the module docs for the drop rules).
    fn emit(&mut self, event: GateEvent) {
        let keep = !matches!(
            event,
            GateEvent::Message {
                channel: Channel::Unreliable,
                ..
            }
        );
        if !self.backlog.is_empty() {
            if keep {
                self.backlog.push_back(event);
            } else {
                bump(&self.stats.events_dropped);
            }
            return;
        }
        if !keep && self.events.capacity() <= self.events.max_capacity() / 4 {
            bump(&self.stats.events_dropped);
            return;
        }
        match self.events.try_send(event) {
            Ok(()) => {}
            Err(mpsc::error::TrySendError::Full(event)) => {
                if keep {
                    self.backlog.push_back(event);
                } else {
                    bump(&self.stats.events_dropped);
                }
            }
            // Nobody listens any more: nothing to keep.
            Err(mpsc::error::TrySendError::Closed(_)) => {}
        }
    }

    /// Waits until the lifecycle backlog is in the event queue.
    async fn flush_backlog(&mut self) {
        while let Some(event) = self.backlog.pop_front() {
            if self.events.send(event).await.is_err() {
                self.backlog.clear();
            }
        }
    }

    /// Turns renet's connection events into gate events.
    fn drain_renet_events(&mut self, listener: usize) {
        while let Some(event) = self.renet.get_event() {
            match event {
                renet::ServerEvent::ClientConnected { client_id } => {
                    if let Some(c) = self.clients.get(&client_id) {
                        let event = GateEvent::Connected {
                            client: client_id,
                            listener,
                            addr: c.addr,
                            claims: c.claims,
                        };
                        self.emit(event);
                    }
                }
                renet::ServerEvent::ClientDisconnected { client_id, reason } => {
                    let reason = self.reasons.remove(&client_id).unwrap_or(match reason {
                        renet::DisconnectReason::DisconnectedByClient => DisconnectReason::ByClient,
                        renet::DisconnectReason::Transport => DisconnectReason::TimedOut,
                        other => DisconnectReason::Protocol(other),
                    });
                    if let Some(c) = self.clients.remove(&client_id) {
                        self.by_addr.remove(&c.addr);
                    }
                    lock(&self.routes).remove(&client_id);
                    self.connected.store(self.clients.len(), Ordering::Relaxed);
                    bump(&self.stats.disconnects);
                    self.emit(GateEvent::Disconnected {
                        client: client_id,
                        reason,
                    });
                }
            }
        }
    }
}

struct Listener {
    index: usize,
    netcode: NetcodeServer,
    buf: Box<[u8]>,
    io: Io,
    admission: Arc<dyn Admission>,
    config: Arc<GateConfig>,
    commands: mpsc::Receiver<Command>,
    shutdown: watch::Receiver<bool>,
    last_update: Instant,
}

impl Listener {
    async fn run(mut self) {
        let mut ticker = tokio::time::interval(self.config.update_interval);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            // Not `biased`: among ready branches tokio picks at random, so
            // a continuous datagram flood cannot starve updates or commands
            // (and a busy command queue cannot starve the socket).
            tokio::select! {
                changed = self.shutdown.changed() => {
                    if changed.is_err() || *self.shutdown.borrow() {
                        break;
                    }
                }
                command = self.commands.recv() => match command {
                    Some(command) => {
                        self.command(command);
                        for _ in 1..self.config.max_commands_per_wake {
                            match self.commands.try_recv() {
                                Ok(command) => self.command(command),
                                Err(_) => break,
                            }
                        }
                        self.send_dirty(Instant::now());
                    }
                    // The Gate handle is gone.
                    None => break,
                },
                received = self.io.socket.recv_from(&mut self.buf) => {
                    match received {
                        Ok((len, addr)) => self.datagram(len, addr),
                        Err(_) => bump(&self.io.stats.recv_errors),
                    }
                    // Drain what is already there, up to a bound.
                    for _ in 1..self.config.max_datagrams_per_wake {
                        match self.io.socket.try_recv_from(&mut self.buf) {
                            Ok((len, addr)) => self.datagram(len, addr),
                            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break,
                            Err(_) => {
                                bump(&self.io.stats.recv_errors);
                                break;
                            }
                        }
                    }
                    self.take_touched_messages();
                },
                _ = ticker.tick() => self.update(),
            }
            self.io.flush_backlog().await;
        }
        self.stop().await;
    }

    fn datagram(&mut self, len: usize, addr: SocketAddr) {
        let stats = &self.io.stats;
        bump(&stats.datagrams_in);
        stats.bytes_in.fetch_add(len as u64, Ordering::Relaxed);
        let Some(datagram) = self.buf.get_mut(..len) else {
            return;
        };
        let now_secs = self.netcode.current_time().as_secs();
        let outcome = classify(
            datagram,
            Direction::ToServer,
            self.config.protocol_id,
            now_secs,
        );
        stats.screen.record(outcome);
        if outcome.is_err() {
            return;
        }
        match self.io.by_addr.get(&addr).copied() {
            Some(client) => {
                let Some(c) = self.io.clients.get(&client) else {
                    return;
                };
                if c.leaving {
                    return;
                }
                if c.datagrams.check().is_err() {
                    bump(&self.io.stats.kicked_datagram_flood);
                    self.kick(client, DisconnectReason::DatagramFlood);
                    return;
                }
            }
            None => {
                if self.io.handshake.check().is_err() {
                    bump(&self.io.stats.handshake_throttled);
                    return;
                }
            }
        }
        let result = self.netcode.process_packet(addr, datagram);
        if let Some(handshaken) = self.io.apply(result, DisconnectReason::ByClient) {
            self.admit(handshaken);
        }
        while let Some((client, reason)) = self.io.to_kick.pop() {
            self.kick(client, reason);
        }
    }

    fn admit(&mut self, h: Handshaken) {
        let verdict = TokenClaims::decode(&h.user_data)
            .map_err(|_| Refusal::BadClaims)
            .and_then(|claims| self.admission.admit(h.client, &claims).map(|()| claims));
        let claims = match verdict {
            Ok(claims) => claims,
            Err(refusal) => {
                self.io.stats.refused(refusal);
                tracing::debug!(client = h.client, addr = %h.addr, %refusal, "gate refused a connection");
                // The keep-alive first, so the client is connected and
                // understands the goodbye (netcode ignores a disconnect
                // packet while still handshaking). Never added to renet: no
                // gate events for it.
                self.io.send_to(&h.reply, h.addr);
                let result = self.netcode.disconnect(h.client);
                self.io.apply(result, DisconnectReason::Shutdown);
                return;
            }
        };
        self.io.send_to(&h.reply, h.addr);
        self.io.clients.insert(
            h.client,
            ClientState {
                addr: h.addr,
                claims,
                datagrams: self.config.client_datagrams.limiter(),
                messages: self.config.client_messages.limiter(),
                leaving: false,
                dirty: false,
                touched: false,
                last_ack: Instant::now(),
                packs: false,
                direct: Outbox::default(),
                renet_dirty: false,
                inbox: Vec::new(),
                renet_fed: false,
            },
        );
        self.io.by_addr.insert(h.addr, h.client);
        lock(&self.io.routes).insert(h.client, self.index);
        self.io
            .connected
            .store(self.io.clients.len(), Ordering::Relaxed);
        bump(&self.io.stats.admitted);
        self.io.renet.add_connection(h.client);
        self.io.drain_renet_events(self.index);
    }

    /// Disconnects a client now (goodbye packet included) for `reason`.
    fn kick(&mut self, client: ClientId, reason: DisconnectReason) {
        let Some(c) = self.io.clients.get_mut(&client) else {
            return;
        };
        if c.leaving {
            return;
        }
        c.leaving = true;
        self.io.reasons.insert(client, reason);
        let result = self.netcode.disconnect(client);
        self.io.apply(result, reason);
        // If netcode had already let go, renet still has it.
        self.io.renet.remove_connection(client);
    }

    fn command(&mut self, command: Command) {
        match command {
            Command::Send {
                client,
                channel,
                payload,
            } => {
                let Some(c) = self.io.clients.get_mut(&client).filter(|c| !c.leaving) else {
                    bump(&self.io.stats.outbound_dropped);
                    return;
                };
                if !c.dirty {
                    c.dirty = true;
                    self.io.dirty.push(client);
                }
                let len = payload.len();
                if channel == Channel::Unreliable && c.packs && fits_direct(len) {
                    // Outside renet, bounded like renet's channel memory.
                    if c.direct.push(payload, self.config.server_channel_memory) {
                        bump(&self.io.stats.messages_out);
                    } else {
                        bump(&self.io.stats.outbound_dropped);
                    }
                } else if self.io.renet.can_send_message(client, channel, len) {
                    c.renet_dirty = true;
                    self.io.renet.send_message(client, channel, payload);
                    bump(&self.io.stats.messages_out);
                } else if channel == Channel::Unreliable {
                    bump(&self.io.stats.outbound_dropped);
                } else {
                    bump(&self.io.stats.kicked_backlogged);
                    self.kick(client, DisconnectReason::Backlogged);
                }
            }
            Command::Disconnect { client, code } => {
                self.kick(client, DisconnectReason::Kicked(code))
            }
        }
    }

    /// One update: time, timeouts and keep-alives, renet's own disconnects,
    /// events, inbound messages not taken yet, then packets for every client
    /// with messages queued or an ack due.
    fn update(&mut self) {
        let now = Instant::now();
        let dt = now.saturating_duration_since(self.last_update);
        self.last_update = now;
        self.netcode.update(dt);
        self.io.renet.update(dt);

        let ids: Vec<ClientId> = self.io.clients.keys().copied().collect();
        for &client in &ids {
            let result = self.netcode.update_client(client);
            self.io.apply(result, DisconnectReason::TimedOut);
        }
        // Connections renet closed itself (bad packet, channel error).
        for client in self.io.renet.disconnections_id() {
            let reason = self
                .io
                .renet
                .disconnect_reason(client)
                .map_or(DisconnectReason::TimedOut, DisconnectReason::Protocol);
            let result = self.netcode.disconnect(client);
            self.io.apply(result, reason);
            self.io.renet.remove_connection(client);
        }
        self.io.drain_renet_events(self.index);

        // Normally taken in the wake that read them already.
        self.take_touched_messages();

        for &client in &ids {
            let due = self.io.clients.get(&client).is_some_and(|c| {
                !c.leaving && (c.dirty || now.saturating_duration_since(c.last_ack) >= ACK_INTERVAL)
            });
            if due {
                self.send_packets(client, now);
            }
        }
        self.io.dirty.clear();
    }

    /// Turns the messages of the clients read from in this wake into events.
    fn take_touched_messages(&mut self) {
        if self.io.touched.is_empty() {
            return;
        }
        let touched = std::mem::take(&mut self.io.touched);
        self.take_messages(&touched);
        // Keep the allocation.
        self.io.touched = touched;
        self.io.touched.clear();
    }

    /// Turns `clients`' received messages into events, enforcing the size
    /// and rate limits on renet's (a breach kicks; those outside renet met
    /// them when read): renet's first, by channel, then those outside it.
    fn take_messages(&mut self, clients: &[ClientId]) {
        let mut kicks = Vec::new();
        let max = self.config.max_message_bytes;
        'clients: for &client in clients {
            let (fed, mut inbox) = match self.io.clients.get_mut(&client) {
                Some(c) => {
                    c.touched = false;
                    (
                        std::mem::take(&mut c.renet_fed),
                        std::mem::take(&mut c.inbox),
                    )
                }
                None => continue,
            };
            // Only a renet packet read can have given renet a new message.
            let channels = if fed { &Channel::ALL[..] } else { &[] };
            for &channel in channels {
                while let Some(payload) = self.io.renet.receive_message(client, channel) {
                    let Some(c) = self.io.clients.get(&client) else {
                        continue 'clients;
                    };
                    if c.leaving {
                        continue 'clients;
                    }
                    if payload.len() > max {
                        bump(&self.io.stats.kicked_message_too_large);
                        kicks.push((client, DisconnectReason::MessageTooLarge));
                        continue 'clients;
                    }
                    if c.messages.check().is_err() {
                        bump(&self.io.stats.kicked_message_flood);
                        kicks.push((client, DisconnectReason::MessageFlood));
                        continue 'clients;
                    }
                    bump(&self.io.stats.messages_in);
                    self.io.emit(GateEvent::Message {
                        client,
                        channel,
                        payload,
                    });
                }
            }
            for payload in inbox.drain(..) {
                bump(&self.io.stats.messages_in);
                bump(&self.io.stats.messages_in_direct);
                self.io.emit(GateEvent::Message {
                    client,
                    channel: Channel::Unreliable,
                    payload,
                });
            }
            // Give the allocation back.
            if let Some(c) = self.io.clients.get_mut(&client) {
                c.inbox = inbox;
            }
        }
        if kicks.is_empty() {
            return;
        }
        for (client, reason) in kicks {
            self.kick(client, reason);
        }
        self.io.drain_renet_events(self.index);
    }

    /// Sends the packets of the clients with messages queued in this wake.
    fn send_dirty(&mut self, now: Instant) {
        if self.io.dirty.is_empty() {
            return;
        }
        let dirty = std::mem::take(&mut self.io.dirty);
        for &client in &dirty {
            self.send_packets(client, now);
        }
        self.io.dirty = dirty;
        self.io.dirty.clear();
    }

    /// Collects a client's renet packets and sends them (packed if it packs),
    /// less an ack packet that is not due (see [`ACK_INTERVAL`]).
    fn send_packets(&mut self, client: ClientId, now: Instant) {
        let (last_ack, packs, renet_dirty, mut direct) = match self.io.clients.get_mut(&client) {
            Some(c) => {
                c.dirty = false;
                if c.leaving {
                    return;
                }
                (
                    c.last_ack,
                    c.packs,
                    std::mem::take(&mut c.renet_dirty),
                    std::mem::take(&mut c.direct),
                )
            }
            None => return,
        };
        let since = now.saturating_duration_since(last_ack);
        let mut packets = if renet_due(renet_dirty, !direct.is_empty(), since) {
            match self.io.renet.get_packets_to_send(client) {
                Ok(p) => p,
                Err(_) => return,
            }
        } else {
            Vec::new()
        };
        let rides = packs && (packets.len() > 1 || !direct.is_empty());
        let acked = keep_due_ack(
            &mut packets,
            rides,
            last_ack,
            now,
            &self.io.stats.acks_deferred,
        );
        let mut payloads = std::mem::take(&mut self.io.payloads);
        payloads.clear();
        if packs {
            direct.pack_with(&packets, &mut payloads);
        } else {
            payloads.extend(packets);
        }
        for payload in &payloads {
            match self.netcode.generate_payload_packet(client, payload) {
                Ok((addr, datagram)) => self.io.send_to(datagram, addr),
                Err(_) => bump(&self.io.stats.send_errors),
            }
        }
        self.io.payloads = payloads;
        if let Some(c) = self.io.clients.get_mut(&client) {
            if acked {
                c.last_ack = now;
            }
            // Emptied: given back to keep its allocation.
            c.direct = direct;
        }
    }

    /// Says goodbye to every client and reports it.
    async fn stop(&mut self) {
        let ids: Vec<ClientId> = self.io.clients.keys().copied().collect();
        for client in ids {
            self.kick(client, DisconnectReason::Shutdown);
        }
        self.io.drain_renet_events(self.index);
        self.io.flush_backlog().await;
        lock(&self.io.routes).retain(|_, l| *l != self.index);
        self.io.connected.store(0, Ordering::Relaxed);
    }
}

// `NETCODE_MAX_PACKET_BYTES` must fit the receive buffer with room to spare.
const _: () = assert!(RECV_BUFFER_BYTES > NETCODE_MAX_PACKET_BYTES);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renet_is_asked_for_its_own_messages_or_a_due_ack_only() {
        let ms = Duration::from_millis;
        // Its own messages: at once.
        assert!(renet_due(true, false, ms(0)));
        // Unreliable messages alone: not before half the ack interval.
        assert!(!renet_due(false, true, ACK_INTERVAL / 2 - ms(1)));
        assert!(renet_due(false, true, ACK_INTERVAL / 2));
        // Nothing to send: only for an ack alone.
        assert!(!renet_due(false, false, ACK_INTERVAL - ms(1)));
        assert!(renet_due(false, false, ACK_INTERVAL));
    }

    #[test]
    fn an_ack_rides_on_data_early_and_goes_alone_only_when_long_due() {
        let ack = vec![RENET_ACK_PACKET, 1, 2];
        let data = vec![1u8, 9, 9];
        let t0 = Instant::now();
        let deferred = AtomicU64::new(0);
        let run = |packets: &[&Vec<u8>], packed: bool, since: Duration| {
            let mut p: Vec<Vec<u8>> = packets.iter().map(|v| (*v).clone()).collect();
            // As the transports call it: the ack rides if other packets
            // share its packed datagram.
            let rides = packed && p.len() > 1;
            let kept = keep_due_ack(&mut p, rides, t0, t0 + since, &deferred);
            (kept, p.iter().any(|v| v[0] == RENET_ACK_PACKET), p.len())
        };
        let ride = ACK_RIDE_AFTER;
        // With data to ride on (packed): due after ACK_RIDE_AFTER.
        assert_eq!(run(&[&data, &ack], true, ride), (true, true, 2));
        assert_eq!(run(&[&data, &ack], true, ride / 2), (false, false, 1));
        // Alone: not before ACK_INTERVAL, however packed.
        assert_eq!(run(&[&ack], true, ride), (false, false, 0));
        assert_eq!(run(&[&ack], true, ACK_INTERVAL), (true, true, 1));
        // Not packed: every ack costs a datagram, so ACK_INTERVAL applies.
        assert_eq!(run(&[&data, &ack], false, ride), (false, false, 1));
        assert_eq!(run(&[&data, &ack], false, ACK_INTERVAL), (true, true, 2));
        // No ack in the collection: nothing kept, nothing dropped.
        assert_eq!(run(&[&data], true, ACK_INTERVAL), (false, false, 1));
        assert_eq!(deferred.load(Ordering::Relaxed), 3);
        // The ride threshold is below the lone one, and both under the
        // reliable channel's resend time (else a deferred ack means a resend).
        assert!(ACK_RIDE_AFTER < ACK_INTERVAL);
        let config = super::super::connection_config(1, 1);
        for channels in [config.server_channels_config, config.client_channels_config] {
            for c in channels {
                if let renet::SendType::ReliableOrdered { resend_time } = c.send_type {
                    assert!(ACK_INTERVAL < resend_time, "{resend_time:?}");
                }
            }
        }
    }

    #[test]
    fn config_validation_names_the_field() {
        let ok = GateConfig::new(1, [0; 32]);
        assert!(ok.validate().is_ok());
        let cases: [(&str, fn(&mut GateConfig)); 6] = [
            ("max_clients_per_listener", |c| {
                c.max_clients_per_listener = 1025
            }),
            ("update_interval", |c| c.update_interval = Duration::ZERO),
            ("max_message_bytes", |c| c.max_message_bytes = 0),
            ("client_messages", |c| {
                c.client_messages = RateQuota::new(0, 1)
            }),
            ("handshake_datagrams", |c| {
                c.handshake_datagrams = RateQuota::new(1, 0)
            }),
            ("event_queue", |c| c.event_queue = 0),
        ];
        for (field, tweak) in cases {
            let mut c = ok.clone();
            tweak(&mut c);
            let err = c.validate().unwrap_err().to_string();
            assert!(err.contains(field), "{field}: {err}");
        }
        // The key never shows in Debug output.
        let c = GateConfig::new(1, [0xAB; 32]);
        assert!(!format!("{c:?}").contains("171"));
    }

    #[test]
    fn quotas_refuse_past_the_burst() {
        let limiter = RateQuota::new(1, 3).limiter();
        assert!((0..3).all(|_| limiter.check().is_ok()));
        assert!(limiter.check().is_err());
    }

    #[test]
    fn nonce_book_admission_burns_once() {
        let book = Mutex::new(NonceBook::new(4, Duration::from_secs(30)));
        let claims = TokenClaims {
            account: 1,
            nonce: [7; 16],
            issued_at: 0,
        };
        assert_eq!(book.admit(1, &claims), Err(Refusal::Unknown));
        book.lock()
            .unwrap()
            .record(claims.nonce, unix_now())
            .unwrap();
        assert_eq!(book.admit(1, &claims), Ok(()));
        assert_eq!(book.admit(1, &claims), Err(Refusal::Replayed));
    }
}
