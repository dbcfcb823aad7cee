//! A listener's task: waits on its socket, its command queue and its
//! update deadline, and drives netcode and renet from them. Each wake
//! handles a batch and then does what the batch made due: the messages read
//! become events ([`inbound`](super::inbound)), the messages queued are sent
//! ([`outbound`](super::outbound)).

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Instant;

use renetcode::{NETCODE_MAX_PACKET_BYTES, NetcodeServer, ServerResult};
use tessera_link::{bump, lock};
use tokio::sync::{mpsc, watch};

use crate::screen::{Direction, PacketKind, classify, request_expire_timestamp};
use crate::token::TokenClaims;

use super::ack::ACK_INTERVAL;
use super::client_state::ClientState;
use super::gate::Command;
use super::handshaking::Handshaking;
use super::io::{Handshaken, Io};
use super::sources::SourceLimits;
use super::{Admission, ClientId, DisconnectReason, GateConfig, NetcodeRefusal, Refusal};

/// Receive buffer: larger than any legal datagram, so an oversized one is
/// seen as oversized rather than silently truncated to a legal size.
pub(super) const RECV_BUFFER_BYTES: usize = 2048;

// `NETCODE_MAX_PACKET_BYTES` must fit the receive buffer with room to spare.
const _: () = assert!(RECV_BUFFER_BYTES > NETCODE_MAX_PACKET_BYTES);

pub(super) struct Listener {
    pub(super) index: usize,
    pub(super) netcode: NetcodeServer,
    pub(super) buf: Box<[u8]>,
    pub(super) io: Io,
    pub(super) admission: Arc<dyn Admission>,
    pub(super) config: Arc<GateConfig>,
    pub(super) commands: mpsc::Receiver<Command>,
    pub(super) shutdown: watch::Receiver<bool>,
    pub(super) last_update: Instant,
    /// The addresses netcode is handshaking with (see [`Handshaking`]).
    pub(super) handshaking: Handshaking,
    /// The per-source handshake buckets (see [`SourceLimits`]).
    pub(super) sources: SourceLimits,
}

impl Listener {
    pub(super) async fn run(mut self) {
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
                    Some(command) => self.on_commands(command),
                    // The Gate handle is gone.
                    None => break,
                },
                received = self.io.socket.recv_from(&mut self.buf) => self.on_datagrams(received),
                _ = ticker.tick() => self.update(),
            }
            self.io.flush_backlog().await;
        }
        self.stop().await;
    }

    /// A wake by a command: applies it and those queued behind it, up to
    /// `max_commands_per_wake`, then sends the packets they queued.
    fn on_commands(&mut self, first: Command) {
        self.command(first);
        for _ in 1..self.config.max_commands_per_wake {
            match self.commands.try_recv() {
                Ok(command) => self.command(command),
                Err(_) => break,
            }
        }
        self.send_dirty(Instant::now());
    }

    /// A wake by a datagram: handles it and those already waiting, up to
    /// `max_datagrams_per_wake`, then turns the messages they brought into
    /// events.
    fn on_datagrams(&mut self, first: std::io::Result<(usize, SocketAddr)>) {
        match first {
            Ok((len, addr)) => self.datagram(len, addr),
            Err(_) => bump(&self.io.stats.recv_errors),
        }
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
    }

    /// One datagram, `len` bytes in `buf`: the screen, the sender check,
    /// the rate limit, then netcode (and renet, through [`Io::apply`]).
    fn datagram(&mut self, len: usize, addr: SocketAddr) {
        let stats = &self.io.stats;
        bump(&stats.datagrams_in);
        stats.bytes_in.fetch_add(len as u64, Ordering::Relaxed);
        let Some(kind) = self.screen(len) else {
            return;
        };
        if !self.sender_known(kind, addr) || !self.within_rate(addr) {
            return;
        }
        let Some(datagram) = self.buf.get_mut(..len) else {
            return;
        };
        let expire = match kind {
            PacketKind::ConnectionRequest => request_expire_timestamp(datagram),
            _ => None,
        };
        let result = match self.netcode.try_process_packet(addr, datagram) {
            Ok(result) => result,
            Err(e) => {
                // The sender's doing, one per datagram: counted, and summed
                // up in the log by `update`.
                self.io.stats.netcode.record(NetcodeRefusal::of(&e));
                return;
            }
        };
        // netcode answers a request only once the token decrypted: it now
        // holds a pending client for `addr`.
        if let (Some(expire), ServerResult::PacketToSend { .. }) = (expire, &result)
            && !self.handshaking.record(addr, expire)
        {
            bump(&self.io.stats.handshaking_full);
        }
        if let Some(handshaken) = self.io.apply(result, DisconnectReason::ByClient) {
            self.admit(handshaken);
        }
        while let Some((client, reason)) = self.io.to_kick.pop() {
            self.kick(client, reason);
        }
    }

    /// The kind of the first `len` bytes of `buf` if they pass the screen
    /// (counted either way).
    fn screen(&self, len: usize) -> Option<PacketKind> {
        let datagram = self.buf.get(..len)?;
        let now_secs = self.netcode.current_time().as_secs();
        let outcome = classify(
            datagram,
            Direction::ToServer,
            self.config.protocol_id,
            now_secs,
        );
        self.io.stats.screen.record(outcome);
        outcome.ok()
    }

    /// Whether netcode knows `addr` (a connected client or a handshake
    /// under way), or the datagram is a connection request. Anything else
    /// netcode could only log as an error (it has no key for the address):
    /// the redundant goodbyes of a client that left, the last datagrams of
    /// one kicked. Dropped and counted here instead.
    fn sender_known(&self, kind: PacketKind, addr: SocketAddr) -> bool {
        let known = kind == PacketKind::ConnectionRequest
            || self.io.by_addr.contains_key(&addr)
            || self.handshaking.contains(&addr);
        if !known {
            bump(&self.io.stats.stray_dropped);
        }
        known
    }

    /// Whether a datagram from `addr` may go on: a connected client's own
    /// limit (a breach kicks it; a leaving client's datagrams go no
    /// further), or for a handshake its source's, then the listener's (a
    /// breach drops it).
    fn within_rate(&mut self, addr: SocketAddr) -> bool {
        let Some(client) = self.io.by_addr.get(&addr).copied() else {
            if !self.sources.check(addr.ip(), Instant::now()) {
                bump(&self.io.stats.handshake_source_throttled);
                return false;
            }
            if self.io.handshake.check().is_err() {
                bump(&self.io.stats.handshake_throttled);
                return false;
            }
            return true;
        };
        let Some(c) = self.io.clients.get(&client) else {
            return false;
        };
        if c.is_leaving() {
            return false;
        }
        if c.datagrams.check().is_err() {
            bump(&self.io.stats.kicked_datagram_flood);
            self.kick(client, DisconnectReason::DatagramFlood);
            return false;
        }
        true
    }

    /// A client completed the netcode handshake: decodes its claims and
    /// asks the admission policy.
    fn admit(&mut self, h: Handshaken) {
        self.handshaking.remove(&h.addr);
        let verdict = TokenClaims::decode(&h.user_data)
            .map_err(|_| Refusal::BadClaims)
            .and_then(|claims| self.admission.admit(h.client, &claims).map(|()| claims));
        match verdict {
            Ok(claims) => self.accept(h, claims),
            Err(refusal) => self.refuse(&h, refusal),
        }
    }

    /// An admitted client becomes a renet connection (and so a `Connected`
    /// event).
    fn accept(&mut self, h: Handshaken, claims: TokenClaims) {
        self.io.send_to(&h.reply, h.addr);
        self.io.clients.insert(
            h.client,
            ClientState::new(h.addr, claims, &self.config, Instant::now()),
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

    /// A refused client is told goodbye. The keep-alive goes first, so the
    /// client is connected and understands the goodbye (netcode ignores a
    /// disconnect packet while still handshaking). Never added to renet: no
    /// gate events for it.
    fn refuse(&mut self, h: &Handshaken, refusal: Refusal) {
        self.io.stats.refused(refusal);
        tracing::debug!(client = h.client, addr = %h.addr, %refusal, "gate refused a connection");
        self.io.send_to(&h.reply, h.addr);
        let result = self.netcode.disconnect(h.client);
        self.io.apply(result, DisconnectReason::Shutdown);
    }

    /// Disconnects a client now (goodbye packet included) for `reason`.
    pub(super) fn kick(&mut self, client: ClientId, reason: DisconnectReason) {
        let Some(c) = self.io.clients.get_mut(&client) else {
            return;
        };
        if !c.lifecycle.leave() {
            return;
        }
        self.io.reasons.insert(client, reason);
        let result = self.netcode.disconnect(client);
        self.io.apply(result, reason);
        // If netcode had already let go, renet still has it.
        self.io.renet.remove_connection(client);
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
        self.handshaking
            .purge(self.netcode.current_time().as_secs());
        self.sources.purge(now);
        self.io.stats.netcode.log_summary(now);

        let ids: Vec<ClientId> = self.io.clients.keys().copied().collect();
        for &client in &ids {
            let result = self.netcode.update_client(client);
            self.io.apply(result, DisconnectReason::TimedOut);
        }
        self.close_renet_disconnections();
        self.io.drain_renet_events(self.index);

        // Normally taken in the wake that read them already.
        self.take_touched_messages();

        for &client in &ids {
            if self.packets_due(client, now) {
                self.send_packets(client, now);
            }
        }
        self.io.dirty.clear();
    }

    /// Closes the connections renet closed itself (bad packet, channel
    /// error) in netcode too.
    fn close_renet_disconnections(&mut self) {
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
    }

    /// Whether an update sends `client` its packets: it is not leaving, and
    /// has messages queued or an ack due alone.
    fn packets_due(&self, client: ClientId, now: Instant) -> bool {
        self.io.clients.get(&client).is_some_and(|c| {
            !c.is_leaving()
                && (c.pending.is_dirty()
                    || now.saturating_duration_since(c.last_ack) >= ACK_INTERVAL)
        })
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
