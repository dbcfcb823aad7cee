//! The [`Gate`] handle: starts one listener task per socket, routes
//! commands to the listener that holds the client, and stops them.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tracing::Instrument as _;

use bytes::Bytes;
use renetcode::{NetcodeServer, ServerAuthentication, ServerConfig};
use tessera_link::lock;
use tokio::net::UdpSocket;
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;

use crate::Channel;
use crate::token::unix_now;

#[cfg(doc)]
use super::DisconnectReason;
use super::handshaking::Handshaking;
use super::io::Io;
use super::listener::{Listener, RECV_BUFFER_BYTES};
use super::sources::SourceLimits;
use super::{Admission, ClientId, GateConfig, GateError, GateEvent, GateSendError, GateStats};

/// Asks the kernel for `bytes` of receive and send buffer on `socket`; a
/// kernel that grants less (Linux caps at `net.core.rmem_max`) is logged,
/// not an error.
fn size_buffers(socket: &UdpSocket, bytes: usize, addr: SocketAddr) {
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

pub(super) enum Command {
    Send {
        client: ClientId,
        channel: Channel,
        payload: Bytes,
        /// Dropped (and counted) rather than disconnecting the client when
        /// its channel is half full: see [`Gate::offer`].
        sheddable: bool,
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
pub(super) type Routes = Arc<Mutex<BTreeMap<ClientId, usize>>>;

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
        let (events, events_rx) = mpsc::channel(config.event_queue);
        let (shutdown, _) = watch::channel(false);
        let max_clients = config.max_clients_per_listener;
        let wiring = GateWiring {
            config: Arc::new(config),
            admission,
            events,
            stats: Arc::new(GateStats::default()),
            routes: Routes::default(),
            shutdown,
            now: unix_now(),
        };
        let listeners = sockets
            .into_iter()
            .enumerate()
            .map(|(index, socket)| wiring.start_listener(index, socket))
            .collect::<Result<Vec<_>, _>>()?;
        Ok((
            Gate {
                listeners,
                routes: wiring.routes,
                stats: wiring.stats,
                shutdown: wiring.shutdown,
                max_clients,
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
    /// as it has applied the commands queued with it. An unreliable message
    /// that finds its channel full is dropped and counted; a reliable one
    /// disconnects the client ([`DisconnectReason::Backlogged`]).
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
                sheddable: false,
            },
        )
    }

    /// Queues a message a client can do without (a chat line): refused
    /// with [`GateSendError::QueueFull`] once the listener's command queue
    /// is half full, and dropped by the listener (counted in
    /// `sheddable_dropped`) if the client's channel is half full. So a
    /// burst of such messages never crowds out what must not be lost, and
    /// never disconnects the client ([`DisconnectReason::Backlogged`]).
    pub fn offer(
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
                sheddable: true,
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
        // Room kept free for what must not be lost: a quarter from
        // unreliable messages (state), half from sheddable ones (chat).
        let keep = match &command {
            Command::Send {
                sheddable: true, ..
            } => l.commands.max_capacity() / 2,
            Command::Send {
                channel: Channel::Unreliable,
                ..
            } => l.commands.max_capacity() / 4,
            _ => 0,
        };
        if keep > 0 && l.commands.capacity() <= keep {
            return Err(GateSendError::QueueFull);
        }
        l.commands.try_send(command).map_err(|e| match e {
            mpsc::error::TrySendError::Full(_) => GateSendError::QueueFull,
            mpsc::error::TrySendError::Closed(_) => GateSendError::Closed,
        })
    }

    /// Asks every listener to stop (clients are disconnected with
    /// [`DisconnectReason::Shutdown`]) without waiting for them; for a gate
    /// shared behind an `Arc`. [`shutdown`](Self::shutdown) also waits.
    pub fn stop(&self) {
        let _ = self.shutdown.send(true);
    }

    /// Disconnects every client (each gets a `Disconnected` event with
    /// [`DisconnectReason::Shutdown`] if the event queue is still read) and
    /// waits for the listeners to stop.
    pub async fn shutdown(self) {
        let _ = self.shutdown.send(true);
        for l in self.listeners {
            if let Err(e) = l.task.await {
                tracing::error!(addr = %l.public_addr, "gate listener task failed: {e}");
            }
        }
    }
}

/// What every listener of a gate is wired to.
struct GateWiring {
    config: Arc<GateConfig>,
    admission: Arc<dyn Admission>,
    events: mpsc::Sender<GateEvent>,
    stats: Arc<GateStats>,
    routes: Routes,
    shutdown: watch::Sender<bool>,
    /// netcode's clock at the start (time since the Unix epoch).
    now: Duration,
}

impl GateWiring {
    /// Sizes the socket's buffers and starts the task of the gate's
    /// `index`th listener on it.
    fn start_listener(
        &self,
        index: usize,
        ListenerSocket {
            socket,
            public_addr,
        }: ListenerSocket,
    ) -> Result<ListenerHandle, GateError> {
        let config = &self.config;
        let local_addr = socket.local_addr().map_err(|source| GateError::Bind {
            addr: public_addr,
            source,
        })?;
        size_buffers(&socket, config.socket_buffer_bytes, local_addr);
        let (commands_tx, commands_rx) = mpsc::channel(config.command_queue);
        let connected = Arc::new(AtomicUsize::new(0));
        let netcode = NetcodeServer::new(ServerConfig {
            current_time: self.now,
            max_clients: config.max_clients_per_listener,
            protocol_id: config.protocol_id,
            public_addresses: vec![public_addr],
            authentication: ServerAuthentication::Secure {
                private_key: config.private_key,
            },
        });
        let io = Io::new(
            socket,
            config,
            self.events.clone(),
            self.stats.clone(),
            self.routes.clone(),
            connected.clone(),
        );
        let listener = Listener {
            index,
            netcode,
            buf: vec![0u8; RECV_BUFFER_BYTES].into_boxed_slice(),
            io,
            admission: self.admission.clone(),
            config: config.clone(),
            commands: commands_rx,
            shutdown: self.shutdown.subscribe(),
            last_update: Instant::now(),
            handshaking: Handshaking::default(),
            sources: SourceLimits::new(
                config.handshake_per_source,
                config.handshake_sources,
                &config.handshake_exempt,
            ),
        };
        let task = tokio::spawn(listener.run().in_current_span());
        Ok(ListenerHandle {
            public_addr,
            local_addr,
            commands: commands_tx,
            connected,
            task,
        })
    }
}
