//! The client side of the gate transport, for bots (and tests): renet's
//! `RenetClient` over renetcode's `NetcodeClient` over a tokio `UdpSocket` —
//! renet_netcode's `NetcodeClientTransport` rewritten over tokio.
//!
//! Two ways to drive one connection, with the same logic underneath:
//! * [`GateClient::connect`] binds a socket and spawns a task, which waits
//!   without busy polling on a datagram, a command, or the next update
//!   deadline ([`ClientConfig::update_interval`]); commands and events go
//!   through bounded queues;
//! * [`ClientConn::connect`] has no task: its owner's task waits in
//!   [`ClientConn::recv`] (cancel-safe, so a `select!` branch) and sends with
//!   [`ClientConn::send`] — no cross-task wake-up per message, which is what
//!   thousands of bots in one process want (`tessera bots` uses it).
//!
//! Each wake ends in an update: the messages in received datagrams are
//! reported and queued messages are sent in the wake that brought them, not
//! at the next deadline. Ack packets ride on data, alone only when none went
//! for [`ACK_INTERVAL`], as on the gate.
//! Unreliable messages go outside renet as flagged entries of the packed
//! payload (see [`pack`](super::pack)), as the gate's come; renet is asked
//! for packets only when it has messages of its own or an ack is due.
//!
//! **Invariant:** inbound datagrams are screened
//! ([`Direction::ToClient`](super::Direction)) and must come from the server
//! the client is talking to; nothing from the network can panic the client.
//!
//! **Invariant:** the queues are bounded: commands
//! ([`ClientSendError::QueueFull`]), events ([`ClientConfig::event_queue`]:
//! unreliable message events that find it full are dropped and counted; a
//! [`GateClient`]'s reliable ones, `Connected` and `Disconnected` wait for
//! room), renet's channel memory, and the unreliable messages waiting to go
//! outside renet (at most `send_memory` bytes; an unreliable message that
//! does not fit is dropped and counted).

use std::collections::VecDeque;
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};
use tessera_link::bump;

use bytes::Bytes;
use renet::RenetClient;
use renetcode::{ClientAuthentication, ConnectToken, NetcodeClient, NetcodeError};
use tokio::net::UdpSocket;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use super::pack::{Outbox, Part, fits_direct};
use super::screen::{Direction, ScreenStats, classify};
use super::transport::{ACK_INTERVAL, keep_due_ack, renet_due};
use super::{Channel, connection_config};

/// Settings for a [`GateClient`].
#[derive(Clone, Debug)]
pub struct ClientConfig {
    /// How often the client updates when nothing else wakes it (time-outs,
    /// keep-alives, acks, resends). Default 100 ms.
    pub update_interval: Duration,
    /// Event queue capacity. Default 1024.
    pub event_queue: usize,
    /// Command queue capacity. Default 1024.
    pub command_queue: usize,
    /// Renet memory per channel for messages being sent. Default 32 KiB
    /// (match the gate's `client_channel_memory`).
    pub send_memory: usize,
    /// Renet memory per channel for messages being received. Default 256 KiB
    /// (match the gate's `server_channel_memory`).
    pub receive_memory: usize,
    /// Test and load tools: the chance each incoming datagram is dropped on
    /// arrival, as a lossy network would (seeded by `loss_seed`). Default 0.
    pub loss: f32,
    pub loss_seed: u64,
}

impl Default for ClientConfig {
    fn default() -> Self {
        Self {
            update_interval: Duration::from_millis(100),
            event_queue: 1024,
            command_queue: 1024,
            send_memory: 32 * 1024,
            receive_memory: 256 * 1024,
            loss: 0.0,
            loss_seed: 1,
        }
    }
}

/// Why a client's connection ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ClientDisconnect {
    /// netcode ended it: denied, timed out, token expired, server goodbye…
    Netcode(renetcode::DisconnectReason),
    /// renet ended it (bad packet, channel full).
    Renet(renet::DisconnectReason),
    /// [`GateClient::disconnect`].
    ByUser,
    /// The socket failed.
    Io(std::io::ErrorKind),
}

/// What a client reports.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ClientEvent {
    Connected,
    Message { channel: Channel, payload: Bytes },
    Disconnected(ClientDisconnect),
}

/// Why a command was not queued.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ClientSendError {
    #[error("the client's command queue is full")]
    QueueFull,
    #[error("the client has stopped")]
    Closed,
}

/// A client's counters.
#[derive(Debug, Default)]
pub struct ClientStats {
    pub screen: ScreenStats,
    pub datagrams_in: AtomicU64,
    pub datagrams_out: AtomicU64,
    /// UDP payload bytes received from and sent to the server (what the
    /// network carries, less IP/UDP headers).
    pub bytes_in: AtomicU64,
    pub bytes_out: AtomicU64,
    pub foreign_datagrams: AtomicU64,
    /// Datagrams dropped on purpose by [`ClientConfig::loss`].
    pub loss_dropped: AtomicU64,
    pub send_errors: AtomicU64,
    pub messages_in: AtomicU64,
    pub messages_out: AtomicU64,
    pub outbound_dropped: AtomicU64,
    pub events_dropped: AtomicU64,
    /// Ack packets not sent because one went out shortly before (see the
    /// gate's `ACK_INTERVAL` and `ACK_RIDE_AFTER`).
    pub acks_deferred: AtomicU64,
    /// Packed payloads from the server whose framing did not add up (dropped).
    pub malformed_payloads: AtomicU64,
}

/// Sends one datagram and counts it (sent, with its bytes, or failed).
fn send_counted(socket: &UdpSocket, stats: &ClientStats, datagram: &[u8], addr: SocketAddr) {
    match socket.try_send_to(datagram, addr) {
        Ok(n) => {
            bump(&stats.datagrams_out);
            stats.bytes_out.fetch_add(n as u64, Ordering::Relaxed);
        }
        Err(_) => bump(&stats.send_errors),
    }
}

enum Command {
    Send { channel: Channel, payload: Bytes },
    Raw(Vec<u8>),
    Disconnect,
}

/// A connection to a gate, driven by its own task.
#[derive(Debug)]
pub struct GateClient {
    client_id: u64,
    local_addr: SocketAddr,
    commands: mpsc::Sender<Command>,
    events: mpsc::Receiver<ClientEvent>,
    stats: Arc<ClientStats>,
    task: JoinHandle<()>,
}

/// Why a client could not start.
#[derive(Debug, thiserror::Error)]
pub enum ClientStartError {
    #[error("binding the client socket: {0}")]
    Bind(std::io::Error),
    #[error("netcode refused the token: {0}")]
    Token(NetcodeError),
    #[error("the token lists no server address")]
    NoServer,
}

impl GateClient {
    /// Binds a socket (wildcard address of the first server's family, port 0)
    /// and starts connecting with `token`.
    pub async fn connect(
        token: ConnectToken,
        config: ClientConfig,
    ) -> Result<Self, ClientStartError> {
        let socket = bind_for(&token).await?;
        Self::start(token, socket, config)
    }

    /// Starts connecting with `token` over an already bound socket.
    pub fn start(
        token: ConnectToken,
        socket: UdpSocket,
        config: ClientConfig,
    ) -> Result<Self, ClientStartError> {
        let (commands_tx, commands_rx) = mpsc::channel(config.command_queue.max(1));
        let (events_tx, events_rx) = mpsc::channel(config.event_queue.max(1));
        // The same connection, handed to a task of its own.
        let ClientConn {
            client_id,
            local_addr,
            driver,
            ..
        } = ClientConn::start(token, socket, config)?;
        let stats = driver.stats.clone();
        let task = tokio::spawn(driver.run(commands_rx, events_tx));
        Ok(Self {
            client_id,
            local_addr,
            commands: commands_tx,
            events: events_rx,
            stats,
            task,
        })
    }

    /// The netcode client id from the token: 0 for a token read from the
    /// standard form ([`read_standard`](crate::token::read_standard)), which
    /// does not carry it (the gate knows it from the encrypted part).
    pub fn client_id(&self) -> u64 {
        self.client_id
    }

    /// The local socket address (the gate sees this one).
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    pub fn stats(&self) -> &Arc<ClientStats> {
        &self.stats
    }

    /// Queues a message; sent at once when connected (messages queued
    /// earlier wait in renet's channel).
    pub fn send(&self, channel: Channel, payload: impl Into<Bytes>) -> Result<(), ClientSendError> {
        self.command(Command::Send {
            channel,
            payload: payload.into(),
        })
    }

    /// Sends a raw datagram to the server from this client's socket, as is —
    /// for attack simulation in tests and load tools.
    pub fn send_raw(&self, datagram: Vec<u8>) -> Result<(), ClientSendError> {
        self.command(Command::Raw(datagram))
    }

    /// Says goodbye to the server; a `Disconnected(ByUser)` event follows.
    pub fn disconnect(&self) -> Result<(), ClientSendError> {
        self.command(Command::Disconnect)
    }

    fn command(&self, command: Command) -> Result<(), ClientSendError> {
        self.commands.try_send(command).map_err(|e| match e {
            mpsc::error::TrySendError::Full(_) => ClientSendError::QueueFull,
            mpsc::error::TrySendError::Closed(_) => ClientSendError::Closed,
        })
    }

    /// The next event; `None` once the client has stopped and every event
    /// was read.
    pub async fn recv(&mut self) -> Option<ClientEvent> {
        self.events.recv().await
    }

    /// The next event if one is ready.
    pub fn try_recv(&mut self) -> Option<ClientEvent> {
        self.events.try_recv().ok()
    }

    /// Stops the task (without a goodbye if still connected: call
    /// [`disconnect`](Self::disconnect) first for one) and waits for it.
    pub async fn close(self) {
        self.task.abort();
        let _ = self.task.await;
    }
}

/// A connection to a gate driven by its owner's task, not one of its own:
/// [`GateClient`]'s logic without the task and the two queues between it
/// and its owner. [`recv`](Self::recv) does the waiting (a datagram or the
/// next update deadline) and [`send`](Self::send) sends at once. For load
/// tools running thousands of clients in one process — each message costs no
/// cross-task wake-up — and for anyone whose task loop already waits on
/// other things: `recv` is cancel-safe, so it can be a `select!` branch.
pub struct ClientConn {
    client_id: u64,
    local_addr: SocketAddr,
    driver: Driver,
    /// The connection is over: its `Disconnected` event is (or was) in
    /// `pending`, and `recv` returns `None` once that is read.
    ended: bool,
}

impl std::fmt::Debug for ClientConn {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClientConn")
            .field("client_id", &self.client_id)
            .field("local_addr", &self.local_addr)
            .field("ended", &self.ended)
            .finish_non_exhaustive()
    }
}

impl ClientConn {
    /// Binds a socket as [`GateClient::connect`] does and starts connecting.
    pub async fn connect(
        token: ConnectToken,
        config: ClientConfig,
    ) -> Result<Self, ClientStartError> {
        let socket = bind_for(&token).await?;
        Self::start(token, socket, config)
    }

    /// Starts connecting with `token` over an already bound socket.
    pub fn start(
        token: ConnectToken,
        socket: UdpSocket,
        config: ClientConfig,
    ) -> Result<Self, ClientStartError> {
        let local_addr = socket.local_addr().map_err(ClientStartError::Bind)?;
        let protocol_id = token.protocol_id;
        let netcode = NetcodeClient::new(
            Duration::ZERO,
            ClientAuthentication::Secure {
                connect_token: token,
            },
        )
        .map_err(ClientStartError::Token)?;
        Ok(Self {
            client_id: netcode.client_id(),
            local_addr,
            driver: Driver::new(netcode, socket, protocol_id, &config),
            ended: false,
        })
    }

    /// Changes the simulated loss of incoming datagrams ([`ClientConfig::loss`]).
    pub fn set_loss(&mut self, loss: f32) {
        self.driver.loss.0 = loss;
    }

    /// The netcode client id from the token: 0 for a token read from the
    /// standard form ([`read_standard`](crate::token::read_standard)), which
    /// does not carry it (the gate knows it from the encrypted part).
    pub fn client_id(&self) -> u64 {
        self.client_id
    }

    /// The local socket address (the gate sees this one).
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    pub fn stats(&self) -> &Arc<ClientStats> {
        &self.driver.stats
    }

    /// Queues a message and sends what is due now (when connected; messages
    /// queued earlier wait, bounded as in [`GateClient`]).
    pub fn send(
        &mut self,
        channel: Channel,
        payload: impl Into<Bytes>,
    ) -> Result<(), ClientSendError> {
        if self.ended {
            return Err(ClientSendError::Closed);
        }
        self.driver.command(Command::Send {
            channel,
            payload: payload.into(),
        });
        if let Err(reason) = self.driver.end_wake() {
            self.end(reason);
        }
        Ok(())
    }

    /// Says goodbye to the server; a `Disconnected(ByUser)` event follows.
    pub fn disconnect(&mut self) -> Result<(), ClientSendError> {
        if self.ended {
            return Err(ClientSendError::Closed);
        }
        let reason = self.driver.goodbye();
        self.end(reason);
        Ok(())
    }

    /// The next event, waiting for it; `None` once the connection is over
    /// and every event was read. Cancel-safe.
    pub async fn recv(&mut self) -> Option<ClientEvent> {
        loop {
            if let Some(event) = self.driver.pending.pop_front() {
                return Some(event);
            }
            if self.ended {
                return None;
            }
            let woke = self.driver.wait().await;
            if let Err(reason) = woke.and_then(|()| self.driver.end_wake()) {
                self.end(reason);
            }
        }
    }

    /// The next event if one is ready (nothing is read from the socket).
    pub fn try_recv(&mut self) -> Option<ClientEvent> {
        self.driver.pending.pop_front()
    }

    fn end(&mut self, reason: ClientDisconnect) {
        self.ended = true;
        self.driver
            .pending
            .push_back(ClientEvent::Disconnected(reason));
    }
}

/// A socket for talking to the token's first server: the wildcard address
/// of its family, port 0.
async fn bind_for(token: &ConnectToken) -> Result<UdpSocket, ClientStartError> {
    let first = token.server_addresses.iter().flatten().next().copied();
    let Some(server) = first else {
        return Err(ClientStartError::NoServer);
    };
    let bind: SocketAddr = match server {
        SocketAddr::V4(_) => (Ipv4Addr::UNSPECIFIED, 0).into(),
        SocketAddr::V6(_) => (Ipv6Addr::UNSPECIFIED, 0).into(),
    };
    UdpSocket::bind(bind).await.map_err(ClientStartError::Bind)
}

struct Driver {
    socket: UdpSocket,
    /// Simulated loss: the chance, and an xorshift state.
    loss: (f32, u64),
    netcode: NetcodeClient,
    renet: RenetClient,
    protocol_id: u64,
    stats: Arc<ClientStats>,
    /// Wakes the client when nothing else does (`update_interval`).
    ticker: tokio::time::Interval,
    /// When the last update ran.
    last: Instant,
    connected: bool,
    /// Events of the wakes so far, not yet taken (a wake's worth at most
    /// when a task forwards them; an unreliable message that finds
    /// `event_queue` of them is dropped and counted).
    pending: VecDeque<ClientEvent>,
    event_queue: usize,
    buf: Box<[u8]>,
    /// Messages queued since packets were last collected.
    dirty: bool,
    /// Of those, some went to renet (if not, renet is asked for packets
    /// only when an ack is due).
    renet_dirty: bool,
    /// renet packets were read in this wake (if not, renet has no new
    /// message to report).
    renet_fed: bool,
    /// When an ack packet was last sent.
    last_ack: Instant,
    /// Unreliable messages the gate sent outside renet (see
    /// [`pack`](super::pack)), reported with renet's at the end of the wake
    /// (at most a wake's datagrams' worth).
    direct: Vec<Bytes>,
    /// Unreliable messages to send outside renet with the next packets, at
    /// most `send_memory` bytes.
    outbox: Outbox,
    send_memory: usize,
}

impl Driver {
    fn new(
        netcode: NetcodeClient,
        socket: UdpSocket,
        protocol_id: u64,
        config: &ClientConfig,
    ) -> Self {
        let renet = RenetClient::new(connection_config(config.receive_memory, config.send_memory));
        let mut ticker =
            tokio::time::interval(config.update_interval.max(Duration::from_millis(1)));
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        Self {
            socket,
            loss: (config.loss, config.loss_seed | 1),
            netcode,
            renet,
            protocol_id,
            stats: Arc::new(ClientStats::default()),
            ticker,
            last: Instant::now(),
            connected: false,
            pending: VecDeque::new(),
            event_queue: config.event_queue.max(1),
            buf: vec![0u8; 2048].into_boxed_slice(),
            dirty: false,
            renet_dirty: false,
            renet_fed: false,
            last_ack: Instant::now(),
            direct: Vec::new(),
            outbox: Outbox::default(),
            send_memory: config.send_memory,
        }
    }

    /// The spawned task of a [`GateClient`]: commands in, events out.
    async fn run(
        mut self,
        mut commands: mpsc::Receiver<Command>,
        events: mpsc::Sender<ClientEvent>,
    ) {
        let reason = loop {
            // Not `biased`: among ready branches tokio picks at random, so
            // a continuous datagram flood cannot starve updates or commands
            // (and a busy command queue cannot starve the socket).
            let woke = tokio::select! {
                command = commands.recv() => {
                    let Some(command) = command else {
                        break self.goodbye();
                    };
                    let mut bye = self.command(command);
                    for _ in 1..64 {
                        if bye {
                            break;
                        }
                        match commands.try_recv() {
                            Ok(command) => bye = self.command(command),
                            Err(_) => break,
                        }
                    }
                    if bye {
                        break self.goodbye();
                    }
                    Ok(())
                },
                woke = self.wait() => woke,
            };
            if let Err(reason) = woke.and_then(|()| self.end_wake()) {
                break reason;
            }
            // Reliable messages (and `Connected`) wait for room; unreliable
            // ones that find the queue full are dropped and counted.
            while let Some(event) = self.pending.pop_front() {
                let unreliable = matches!(
                    event,
                    ClientEvent::Message {
                        channel: Channel::Unreliable,
                        ..
                    }
                );
                if !unreliable {
                    if events.send(event).await.is_err() {
                        return;
                    }
                } else if let Err(e) = events.try_send(event) {
                    if matches!(e, mpsc::error::TrySendError::Closed(_)) {
                        return;
                    }
                    bump(&self.stats.events_dropped);
                }
            }
        };
        let _ = events.send(ClientEvent::Disconnected(reason)).await;
    }

    /// Waits for datagrams (and reads what is there, up to a bound) or the
    /// next update deadline. Cancel-safe: nothing is read across an await.
    async fn wait(&mut self) -> Result<(), ClientDisconnect> {
        tokio::select! {
            received = self.socket.recv_from(&mut self.buf) => {
                let (len, addr) = received.map_err(|e| ClientDisconnect::Io(e.kind()))?;
                self.datagram(len, addr);
                for _ in 0..64 {
                    match self.socket.try_recv_from(&mut self.buf) {
                        Ok((len, addr)) => self.datagram(len, addr),
                        Err(_) => break,
                    }
                }
            },
            _ = self.ticker.tick() => {}
        }
        Ok(())
    }

    /// Ends a wake with an update: what came in becomes events (in
    /// `pending`), and what was queued goes out now.
    fn end_wake(&mut self) -> Result<(), ClientDisconnect> {
        let now = Instant::now();
        let dt = now.saturating_duration_since(self.last);
        self.last = now;
        if let Some(reason) = self.update(now, dt) {
            return Err(reason);
        }
        if self.netcode.is_connected() && !self.connected {
            self.connected = true;
            self.pending.push_back(ClientEvent::Connected);
        }
        self.take_messages();
        Ok(())
    }

    /// Applies a command; true for a goodbye.
    fn command(&mut self, command: Command) -> bool {
        match command {
            Command::Send { channel, payload } => {
                let len = payload.len();
                if channel == Channel::Unreliable && fits_direct(len) {
                    // Outside renet, bounded like renet's channel memory.
                    if self.outbox.push(payload, self.send_memory) {
                        self.dirty = true;
                        bump(&self.stats.messages_out);
                    } else {
                        bump(&self.stats.outbound_dropped);
                    }
                } else if self.renet.can_send_message(channel, len) {
                    self.renet.send_message(channel, payload);
                    self.dirty = true;
                    self.renet_dirty = true;
                    bump(&self.stats.messages_out);
                } else {
                    // Reliable: renet would disconnect; unreliable: drop.
                    bump(&self.stats.outbound_dropped);
                }
                false
            }
            Command::Raw(datagram) => {
                self.send_to_server(&datagram);
                false
            }
            Command::Disconnect => true,
        }
    }

    fn send_to_server(&self, datagram: &[u8]) {
        send_counted(
            &self.socket,
            &self.stats,
            datagram,
            self.netcode.server_addr(),
        );
    }

    fn datagram(&mut self, len: usize, addr: SocketAddr) {
        bump(&self.stats.datagrams_in);
        self.stats.bytes_in.fetch_add(len as u64, Ordering::Relaxed);
        if addr != self.netcode.server_addr() {
            bump(&self.stats.foreign_datagrams);
            return;
        }
        if self.loss.0 > 0.0 {
            let x = &mut self.loss.1;
            *x ^= *x << 13;
            *x ^= *x >> 7;
            *x ^= *x << 17;
            if ((*x >> 40) as f32 / (1u64 << 24) as f32) < self.loss.0 {
                bump(&self.stats.loss_dropped);
                return;
            }
        }
        let Some(datagram) = self.buf.get_mut(..len) else {
            return;
        };
        // The clock only matters for connection requests, never sent to clients.
        let outcome = classify(datagram, Direction::ToClient, self.protocol_id, 0);
        self.stats.screen.record(outcome);
        if outcome.is_err() {
            return;
        }
        if let Some(payload) = self.netcode.process_packet(datagram) {
            let (renet, direct, fed) = (&mut self.renet, &mut self.direct, &mut self.renet_fed);
            let unpacked = super::pack::unpack(payload, |part| match part {
                Part::Packet(packet) => {
                    *fed = true;
                    renet.process_packet(packet);
                }
                // Delivered with renet's messages at the end of this wake.
                Part::Unreliable(message) => direct.push(Bytes::copy_from_slice(message)),
            });
            if unpacked.is_err() {
                bump(&self.stats.malformed_payloads);
            }
        }
    }

    /// renet_netcode's client update then send, in that order.
    fn update(&mut self, now: Instant, dt: Duration) -> Option<ClientDisconnect> {
        if let Some(reason) = self.netcode.disconnect_reason() {
            self.renet.disconnect_due_to_transport();
            return Some(ClientDisconnect::Netcode(reason));
        }
        if let Some(reason) = self.renet.disconnect_reason() {
            if let Ok((addr, packet)) = self.netcode.disconnect() {
                let _ = self.socket.try_send_to(packet, addr);
            }
            return Some(ClientDisconnect::Renet(reason));
        }
        if self.netcode.is_connected() {
            self.renet.set_connected();
        } else if self.netcode.is_connecting() {
            self.renet.set_connecting();
        }
        if let Some((packet, addr)) = self.netcode.update(dt) {
            send_counted(&self.socket, &self.stats, packet, addr);
        }
        self.renet.update(dt);
        // Send when there is something to send, and at least every
        // ACK_INTERVAL for acks; renet is asked only when it has messages
        // or for an ack, as on the gate (`renet_due`), so an input alone
        // costs renet nothing.
        let since = now.saturating_duration_since(self.last_ack);
        let due = self.dirty || since >= ACK_INTERVAL;
        if self.netcode.is_connected() && due {
            self.dirty = false;
            let renet_dirty = std::mem::take(&mut self.renet_dirty);
            let mut packets = if renet_due(renet_dirty, !self.outbox.is_empty(), since) {
                self.renet.get_packets_to_send()
            } else {
                Vec::new()
            };
            let rides = packets.len() > 1 || !self.outbox.is_empty();
            let acked = keep_due_ack(
                &mut packets,
                rides,
                self.last_ack,
                now,
                &self.stats.acks_deferred,
            );
            // Always packed: that is how the gate learns this client reads
            // packed payloads.
            let mut payloads = Vec::new();
            self.outbox.pack_with(&packets, &mut payloads);
            for payload in &payloads {
                match self.netcode.generate_payload_packet(payload) {
                    Ok((addr, datagram)) => send_counted(&self.socket, &self.stats, datagram, addr),
                    Err(_) => bump(&self.stats.send_errors),
                }
            }
            if acked {
                self.last_ack = now;
            }
        }
        None
    }

    /// Turns received messages into events: those outside renet first, then
    /// renet's by channel.
    fn take_messages(&mut self) {
        // Taken and put back to keep the allocation.
        let mut direct = std::mem::take(&mut self.direct);
        for payload in direct.drain(..) {
            self.push_message(Channel::Unreliable, payload);
        }
        self.direct = direct;
        // Only a renet packet read can have given renet a new message.
        if !std::mem::take(&mut self.renet_fed) {
            return;
        }
        for channel in Channel::ALL {
            while let Some(payload) = self.renet.receive_message(channel) {
                self.push_message(channel, payload);
            }
        }
    }

    fn push_message(&mut self, channel: Channel, payload: Bytes) {
        bump(&self.stats.messages_in);
        if channel == Channel::Unreliable && self.pending.len() >= self.event_queue {
            bump(&self.stats.events_dropped);
            return;
        }
        self.pending
            .push_back(ClientEvent::Message { channel, payload });
    }

    fn goodbye(&mut self) -> ClientDisconnect {
        if !self.netcode.is_disconnected()
            && let Ok((addr, packet)) = self.netcode.disconnect()
        {
            let _ = self.socket.try_send_to(packet, addr);
        }
        self.renet.disconnect();
        ClientDisconnect::ByUser
    }
}
