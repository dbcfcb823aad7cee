//! A listener's state but the netcode server: the clients, renet, the
//! socket and the event queue, and the effects of a netcode result on them.

use std::collections::{BTreeMap, VecDeque};
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use bytes::Bytes;
use governor::DefaultDirectRateLimiter;
use renet::RenetServer;
use renetcode::{NETCODE_USER_DATA_BYTES, ServerResult};
use tessera_link::{bump, lock};
use tokio::net::UdpSocket;
use tokio::sync::mpsc;

use crate::pack::{Part, is_packed, unpack};
use crate::{Channel, connection_config};

use super::client_state::ClientState;
use super::gate::Routes;
use super::{ClientId, DisconnectReason, GateConfig, GateEvent, GateStats};

/// Everything of a listener but the netcode server, so a `ServerResult`
/// (which borrows the netcode server) can be applied to it.
pub(super) struct Io {
    pub(super) socket: UdpSocket,
    pub(super) renet: RenetServer,
    pub(super) clients: BTreeMap<ClientId, ClientState>,
    pub(super) by_addr: BTreeMap<SocketAddr, ClientId>,
    /// Why a client left, recorded when we know better than renet.
    pub(super) reasons: BTreeMap<ClientId, DisconnectReason>,
    pub(super) handshake: DefaultDirectRateLimiter,
    /// Lifecycle events and reliable messages that found the event queue
    /// full (see the [transport](super) docs).
    pub(super) backlog: VecDeque<GateEvent>,
    pub(super) events: mpsc::Sender<GateEvent>,
    pub(super) stats: Arc<GateStats>,
    pub(super) routes: Routes,
    pub(super) connected: Arc<AtomicUsize>,
    /// Clients with messages queued since their last collection.
    pub(super) dirty: Vec<ClientId>,
    /// Clients with payloads read since their messages were last taken.
    pub(super) touched: Vec<ClientId>,
    /// Clients to disconnect once the datagram is handled: a malformed packed
    /// payload, or a message outside renet over a limit.
    pub(super) to_kick: Vec<(ClientId, DisconnectReason)>,
    /// Scratch for the payloads of one collection.
    pub(super) payloads: Vec<Vec<u8>>,
    /// [`GateConfig::max_message_bytes`].
    pub(super) max_message_bytes: usize,
}

/// A client netcode has just admitted, waiting for the admission policy.
pub(super) struct Handshaken {
    pub(super) client: ClientId,
    pub(super) addr: SocketAddr,
    pub(super) user_data: Box<[u8; NETCODE_USER_DATA_BYTES]>,
    /// netcode's first keep-alive, sent if the client is admitted.
    pub(super) reply: Vec<u8>,
}

impl Io {
    /// A listener's io over `socket`, reporting to `events` and `stats`,
    /// recording its clients in `routes` and their count in `connected`.
    pub(super) fn new(
        socket: UdpSocket,
        config: &GateConfig,
        events: mpsc::Sender<GateEvent>,
        stats: Arc<GateStats>,
        routes: Routes,
        connected: Arc<AtomicUsize>,
    ) -> Self {
        Self {
            socket,
            renet: RenetServer::new(connection_config(
                config.server_channel_memory,
                config.client_channel_memory,
            )),
            clients: BTreeMap::new(),
            by_addr: BTreeMap::new(),
            reasons: BTreeMap::new(),
            handshake: config.handshake_datagrams.limiter(),
            backlog: VecDeque::new(),
            events,
            stats,
            routes,
            connected,
            dirty: Vec::new(),
            touched: Vec::new(),
            to_kick: Vec::new(),
            payloads: Vec::new(),
            max_message_bytes: config.max_message_bytes,
        }
    }

    pub(super) fn send_to(&self, datagram: &[u8], addr: SocketAddr) {
        match self.socket.try_send_to(datagram, addr) {
            Ok(n) => {
                bump(&self.stats.datagrams_out);
                self.stats
                    .bytes_out
                    .fetch_add(n as u64, std::sync::atomic::Ordering::Relaxed);
            }
            // Includes WouldBlock: UDP may drop, and so may we (counted).
            Err(_) => bump(&self.stats.send_errors),
        }
    }

    /// Carries out a netcode result; `leave_reason` names why a disconnect
    /// coming out of this call happened, unless a reason is already known.
    /// A completed handshake is handed back for the admission policy.
    pub(super) fn apply(
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
                self.on_payload(client_id, payload);
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
                self.on_netcode_disconnected(client_id, addr, payload.as_deref(), leave_reason);
                None
            }
        }
    }

    /// A payload from a client: its renet packets go to renet, its
    /// unreliable messages outside renet to its inbox once checked against
    /// the limits renet's meet in `take_messages` (so the inbox never holds
    /// more than a burst). A breach, or a payload that does not unpack,
    /// empties the inbox and queues the client in `to_kick`.
    fn on_payload(&mut self, client_id: ClientId, payload: &[u8]) {
        let Some(c) = self.clients.get_mut(&client_id) else {
            return;
        };
        if c.is_leaving() {
            return;
        }
        let (renet, stats, max) = (&mut self.renet, &self.stats, self.max_message_bytes);
        let mut breach = None;
        let unpacked = unpack(payload, |part| match part {
            // process_packet_from fails only for an unknown client.
            Part::Packet(packet) => {
                c.pending.mark_renet_fed();
                let _ = renet.process_packet_from(packet, client_id);
            }
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
            return;
        }
        c.packing.saw_payload(is_packed(payload));
        if c.pending.mark_touched() {
            self.touched.push(client_id);
        }
    }

    /// netcode let a client go: its goodbye goes out, it stops being
    /// routed and starts leaving, and renet is told (renet's event then
    /// removes it and reports it, see `drain_renet_events`).
    fn on_netcode_disconnected(
        &mut self,
        client_id: ClientId,
        addr: SocketAddr,
        goodbye: Option<&[u8]>,
        leave_reason: DisconnectReason,
    ) {
        if let Some(payload) = goodbye {
            self.send_to(payload, addr);
        }
        if self.clients.contains_key(&client_id) {
            self.reasons.entry(client_id).or_insert(leave_reason);
            self.by_addr.remove(&addr);
            lock(&self.routes).remove(&client_id);
            if let Some(c) = self.clients.get_mut(&client_id) {
                c.lifecycle.leave();
            }
        }
        // Queues renet's ClientDisconnected event (if it knew the client).
        self.renet.remove_connection(client_id);
    }

    /// Queues an event (see the [transport](super) docs for the drop rules).
    pub(super) fn emit(&mut self, event: GateEvent) {
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
    pub(super) async fn flush_backlog(&mut self) {
        while let Some(event) = self.backlog.pop_front() {
            if self.events.send(event).await.is_err() {
                self.backlog.clear();
            }
        }
    }

    /// Turns renet's connection events into gate events.
    pub(super) fn drain_renet_events(&mut self, listener: usize) {
        while let Some(event) = self.renet.get_event() {
            match event {
                renet::ServerEvent::ClientConnected { client_id } => {
                    self.on_renet_connected(client_id, listener);
                }
                renet::ServerEvent::ClientDisconnected { client_id, reason } => {
                    self.on_renet_disconnected(client_id, reason);
                }
            }
        }
    }

    /// renet took an admitted client: it is reported connected.
    fn on_renet_connected(&mut self, client_id: ClientId, listener: usize) {
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

    /// renet let a client go: it is forgotten and reported gone, for the
    /// reason recorded when we knew better than renet.
    fn on_renet_disconnected(&mut self, client_id: ClientId, reason: renet::DisconnectReason) {
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
