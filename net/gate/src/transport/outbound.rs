//! A listener's outbound half: commands from the [`Gate`](super::Gate)
//! handle queue messages, and a client's queued messages leave as netcode
//! datagrams — packed if the client packs, less an ack that is not due.

use std::time::Instant;

use bytes::Bytes;
use tessera_link::bump;

use crate::Channel;
use crate::pack::{Outbox, fits_direct};

use super::ack::{keep_due_ack, renet_due};
use super::gate::Command;
use super::listener::Listener;
use super::{ClientId, DisconnectReason};

impl Listener {
    pub(super) fn command(&mut self, command: Command) {
        match command {
            Command::Send {
                client,
                channel,
                payload,
                sheddable,
            } => self.queue_message(client, channel, payload, sheddable),
            Command::Disconnect { client, code } => {
                self.kick(client, DisconnectReason::Kicked(code))
            }
        }
    }

    /// Queues a message for a client: outside renet if it is unreliable
    /// and the client packs, else in renet. One that does not fit is
    /// dropped and counted if unreliable, and kicks the client if reliable.
    /// A `sheddable` one is dropped and counted unless renet would still
    /// have half the channel's memory left after it: its burst never
    /// backlogs the client.
    fn queue_message(
        &mut self,
        client: ClientId,
        channel: Channel,
        payload: Bytes,
        sheddable: bool,
    ) {
        let Some(c) = self.io.clients.get_mut(&client).filter(|c| !c.is_leaving()) else {
            bump(&self.io.stats.outbound_dropped);
            return;
        };
        let len = payload.len();
        let reserve = self.config.server_channel_memory / 2;
        if sheddable
            && !self
                .io
                .renet
                .can_send_message(client, channel, len + reserve)
        {
            bump(&self.io.stats.sheddable_dropped);
            return;
        }
        if c.pending.mark_dirty() {
            self.io.dirty.push(client);
        }
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

    /// Sends the packets of the clients with messages queued in this wake.
    pub(super) fn send_dirty(&mut self, now: Instant) {
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

    /// Collects a client's renet packets and sends them with its messages
    /// outside renet, less an ack packet that is not due (see
    /// [`ACK_INTERVAL`](super::ACK_INTERVAL)).
    pub(super) fn send_packets(&mut self, client: ClientId, now: Instant) {
        let Some(c) = self.io.clients.get_mut(&client) else {
            return;
        };
        c.pending.clear_dirty();
        if c.is_leaving() {
            return;
        }
        let (last_ack, packs) = (c.last_ack, c.packs());
        let renet_dirty = c.pending.take_renet_dirty();
        let mut direct = std::mem::take(&mut c.direct);
        let since = now.saturating_duration_since(last_ack);
        let due = renet_due(renet_dirty, !direct.is_empty(), since);
        let Some(mut packets) = self.renet_packets(client, due) else {
            return;
        };
        let rides = packs && (packets.len() > 1 || !direct.is_empty());
        let acked = keep_due_ack(
            &mut packets,
            rides,
            last_ack,
            now,
            &self.io.stats.acks_deferred,
        );
        self.send_payloads(client, packs, packets, &mut direct);
        if let Some(c) = self.io.clients.get_mut(&client) {
            if acked {
                c.last_ack = now;
            }
            // Emptied: given back to keep its allocation.
            c.direct = direct;
        }
    }

    /// A client's renet packets if renet is to be asked (`due`), none if
    /// not; `None` if renet does not know the client.
    fn renet_packets(&mut self, client: ClientId, due: bool) -> Option<Vec<Vec<u8>>> {
        if !due {
            return Some(Vec::new());
        }
        self.io.renet.get_packets_to_send(client).ok()
    }

    /// Frames `packets` into payloads — packed with the `direct` messages if
    /// the client packs, one per packet if not — and sends each as a
    /// netcode datagram.
    fn send_payloads(
        &mut self,
        client: ClientId,
        packs: bool,
        packets: Vec<Vec<u8>>,
        direct: &mut Outbox,
    ) {
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
    }
}
