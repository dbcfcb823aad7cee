//! A listener's inbound half: the messages read from clients become gate
//! events, held to the size and rate limits.

use tessera_link::bump;

use crate::Channel;

use super::listener::Listener;
use super::{ClientId, DisconnectReason, GateEvent};

/// Why taking a client's messages stopped before the last.
enum Stopped {
    /// The client is gone or leaving: nothing more of it is reported.
    Gone,
    /// One of its messages broke a limit: it is to be kicked.
    Breach(DisconnectReason),
}

impl Listener {
    /// Turns the messages of the clients read from in this wake into events.
    pub(super) fn take_touched_messages(&mut self) {
        if self.io.touched.is_empty() {
            return;
        }
        let touched = std::mem::take(&mut self.io.touched);
        self.take_messages(&touched);
        // Keep the allocation.
        self.io.touched = touched;
        self.io.touched.clear();
    }

    /// Turns `clients`' received messages into events, then kicks those
    /// that broke a limit.
    fn take_messages(&mut self, clients: &[ClientId]) {
        let mut kicks = Vec::new();
        for &client in clients {
            if let Err(Stopped::Breach(reason)) = self.take_client_messages(client) {
                kicks.push((client, reason));
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

    /// Turns one client's received messages into events: renet's first, by
    /// channel, then those outside renet (which met the limits when read).
    /// When it stops early, the client's remaining messages are dropped.
    fn take_client_messages(&mut self, client: ClientId) -> Result<(), Stopped> {
        let Some(c) = self.io.clients.get_mut(&client) else {
            return Ok(());
        };
        c.pending.clear_touched();
        let fed = c.pending.take_renet_fed();
        let mut inbox = std::mem::take(&mut c.inbox);
        // Only a renet packet read can have given renet a new message.
        if fed {
            for channel in Channel::ALL {
                self.take_renet_messages(client, channel)?;
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
        Ok(())
    }

    /// Turns a client's renet messages on `channel` into events, enforcing
    /// the size and rate limits.
    fn take_renet_messages(&mut self, client: ClientId, channel: Channel) -> Result<(), Stopped> {
        let max = self.config.max_message_bytes;
        while let Some(payload) = self.io.renet.receive_message(client, channel) {
            let Some(c) = self.io.clients.get(&client) else {
                return Err(Stopped::Gone);
            };
            if c.is_leaving() {
                return Err(Stopped::Gone);
            }
            if payload.len() > max {
                bump(&self.io.stats.kicked_message_too_large);
                return Err(Stopped::Breach(DisconnectReason::MessageTooLarge));
            }
            if c.messages.check().is_err() {
                bump(&self.io.stats.kicked_message_flood);
                return Err(Stopped::Breach(DisconnectReason::MessageFlood));
            }
            bump(&self.io.stats.messages_in);
            self.io.emit(GateEvent::Message {
                client,
                channel,
                payload,
            });
        }
        Ok(())
    }
}
