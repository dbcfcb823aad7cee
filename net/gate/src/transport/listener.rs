//! A listener's task: waits on its socket, its command queue and its
//! update deadline, and drives netcode and renet from them.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Instant;

use renetcode::{NETCODE_MAX_PACKET_BYTES, NetcodeServer};
use tessera_link::{bump, lock};
use tokio::sync::{mpsc, watch};

use crate::Channel;
use crate::pack::fits_direct;
use crate::screen::{Direction, classify};
use crate::token::TokenClaims;

use super::ack::{ACK_INTERVAL, keep_due_ack, renet_due};
use super::client_state::ClientState;
use super::gate::Command;
use super::io::{Handshaken, Io};
use super::{Admission, ClientId, DisconnectReason, GateConfig, GateEvent, Refusal};

/// Receive buffer: larger than any legal datagram, so an oversized one is
/// seen as oversized rather than silently truncated to a legal size.
pub(super) const RECV_BUFFER_BYTES: usize = 2048;

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
                if c.is_leaving() {
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

    /// Disconnects a client now (goodbye packet included) for `reason`.
    fn kick(&mut self, client: ClientId, reason: DisconnectReason) {
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

    fn command(&mut self, command: Command) {
        match command {
            Command::Send {
                client,
                channel,
                payload,
            } => {
                let Some(c) = self.io.clients.get_mut(&client).filter(|c| !c.is_leaving()) else {
                    bump(&self.io.stats.outbound_dropped);
                    return;
                };
                if c.pending.mark_dirty() {
                    self.io.dirty.push(client);
                }
                let len = payload.len();
                if channel == Channel::Unreliable && c.packs() && fits_direct(len) {
                    // Outside renet, bounded like renet's channel memory.
                    if c.direct.push(payload, self.config.server_channel_memory) {
                        bump(&self.io.stats.messages_out);
                    } else {
                        bump(&self.io.stats.outbound_dropped);
                    }
                } else if self.io.renet.can_send_message(client, channel, len) {
                    c.pending.mark_renet_dirty();
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
                !c.is_leaving()
                    && (c.pending.is_dirty()
                        || now.saturating_duration_since(c.last_ack) >= ACK_INTERVAL)
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
                    c.pending.clear_touched();
                    (c.pending.take_renet_fed(), std::mem::take(&mut c.inbox))
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
                    if c.is_leaving() {
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
                c.pending.clear_dirty();
                if c.is_leaving() {
                    return;
                }
                (
                    c.last_ack,
                    c.packs(),
                    c.pending.take_renet_dirty(),
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
