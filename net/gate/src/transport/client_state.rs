//! What the listener keeps per connected client: its limits, its
//! [`Lifecycle`], its [`Packing`] and the work [`Pending`] for it in the
//! current wake.

use std::net::SocketAddr;
use std::time::Instant;

use bytes::Bytes;
use governor::DefaultDirectRateLimiter;

use crate::pack::Outbox;
use crate::token::TokenClaims;

use super::GateConfig;

/// Where an admitted client is in its life on the listener.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Lifecycle {
    /// Its datagrams and messages are handled, and messages go to it.
    Active,
    /// It is being disconnected: its datagrams and messages are ignored from
    /// then on, and nothing more is sent to it. There is no way back.
    Leaving,
}

impl Lifecycle {
    /// Starts leaving; says whether this call did it (false if it already was).
    pub(super) fn leave(&mut self) -> bool {
        let was_active = *self == Lifecycle::Active;
        *self = Lifecycle::Leaving;
        was_active
    }
}

/// How the listener frames what it sends a client.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Packing {
    /// One renet packet per payload, as renet_netcode's own client reads.
    Plain,
    /// The client has sent a packed payload, so it reads them: its packets
    /// are packed too, and its unreliable messages go outside renet (see
    /// [`pack`](crate::pack)). There is no way back.
    Packed,
}

impl Packing {
    /// Notes a payload read from the client: a packed one makes it `Packed`.
    pub(super) fn saw_payload(&mut self, packed: bool) {
        if packed {
            *self = Packing::Packed;
        }
    }
}

/// The work waiting for a client in the current wake. Each flag is set by
/// the step that makes the work and taken by the step that does it, so a
/// client is listed in `Io::dirty` or `Io::touched` at most once.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(super) struct Pending {
    /// Messages were queued for it since its packets were last collected.
    dirty: bool,
    /// Of those, some were given to renet (if not, renet is asked for its
    /// packets only when an ack is due).
    renet_dirty: bool,
    /// Payloads were read from it since its messages were last taken.
    touched: bool,
    /// Of those, some were renet packets (if not, renet has no new message
    /// of it to ask for).
    renet_fed: bool,
}

impl Pending {
    /// A message was queued for the client; true if it was not dirty yet
    /// (then list it in `Io::dirty`).
    pub(super) fn mark_dirty(&mut self) -> bool {
        !std::mem::replace(&mut self.dirty, true)
    }

    pub(super) fn is_dirty(&self) -> bool {
        self.dirty
    }

    /// Its packets are being collected.
    pub(super) fn clear_dirty(&mut self) {
        self.dirty = false;
    }

    /// A message for the client was given to renet.
    pub(super) fn mark_renet_dirty(&mut self) {
        self.renet_dirty = true;
    }

    /// Whether renet was given a message since the last call; clears it.
    pub(super) fn take_renet_dirty(&mut self) -> bool {
        std::mem::take(&mut self.renet_dirty)
    }

    /// A payload was read from the client; true if it was not touched yet
    /// (then list it in `Io::touched`).
    pub(super) fn mark_touched(&mut self) -> bool {
        !std::mem::replace(&mut self.touched, true)
    }

    /// Its messages are being taken.
    pub(super) fn clear_touched(&mut self) {
        self.touched = false;
    }

    /// A renet packet from the client was given to renet.
    pub(super) fn mark_renet_fed(&mut self) {
        self.renet_fed = true;
    }

    /// Whether renet was fed since the last call; clears it.
    pub(super) fn take_renet_fed(&mut self) -> bool {
        std::mem::take(&mut self.renet_fed)
    }
}

pub(super) struct ClientState {
    pub(super) addr: SocketAddr,
    pub(super) claims: TokenClaims,
    pub(super) datagrams: DefaultDirectRateLimiter,
    pub(super) messages: DefaultDirectRateLimiter,
    pub(super) lifecycle: Lifecycle,
    pub(super) packing: Packing,
    pub(super) pending: Pending,
    /// When an ack packet was last sent to it.
    pub(super) last_ack: Instant,
    /// Unreliable messages for it that skip renet (see [`pack`](crate::pack)),
    /// sent with its next packets; at most `server_channel_memory` bytes.
    pub(super) direct: Outbox,
    /// Unreliable messages it sent outside renet, already checked against
    /// the size and rate limits, taken with its renet messages at the end of
    /// the wake that read them (so at most a rate-limit burst).
    pub(super) inbox: Vec<Bytes>,
}

impl ClientState {
    /// A client just admitted: active, plain, nothing pending, its rate
    /// limits full, its ack clock starting `now`.
    pub(super) fn new(
        addr: SocketAddr,
        claims: TokenClaims,
        config: &GateConfig,
        now: Instant,
    ) -> Self {
        Self {
            addr,
            claims,
            datagrams: config.client_datagrams.limiter(),
            messages: config.client_messages.limiter(),
            lifecycle: Lifecycle::Active,
            packing: Packing::Plain,
            pending: Pending::default(),
            last_ack: now,
            direct: Outbox::default(),
            inbox: Vec::new(),
        }
    }

    pub(super) fn is_leaving(&self) -> bool {
        self.lifecycle == Lifecycle::Leaving
    }

    pub(super) fn packs(&self) -> bool {
        self.packing == Packing::Packed
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn leaving_happens_once_and_for_good() {
        let mut l = Lifecycle::Active;
        assert!(l.leave());
        assert_eq!(l, Lifecycle::Leaving);
        assert!(!l.leave());
        assert_eq!(l, Lifecycle::Leaving);
    }

    #[test]
    fn one_packed_payload_makes_a_client_packed_for_good() {
        let mut p = Packing::Plain;
        p.saw_payload(false);
        assert_eq!(p, Packing::Plain);
        p.saw_payload(true);
        assert_eq!(p, Packing::Packed);
        p.saw_payload(false);
        assert_eq!(p, Packing::Packed);
    }

    #[test]
    fn dirty_and_touched_ask_to_be_listed_once_until_cleared() {
        let mut p = Pending::default();
        assert!(!p.is_dirty());
        assert!(p.mark_dirty());
        assert!(!p.mark_dirty());
        assert!(p.is_dirty());
        p.clear_dirty();
        assert!(!p.is_dirty());
        assert!(p.mark_dirty());

        assert!(p.mark_touched());
        assert!(!p.mark_touched());
        p.clear_touched();
        assert!(p.mark_touched());
    }

    #[test]
    fn renet_flags_are_taken_once() {
        let mut p = Pending::default();
        assert!(!p.take_renet_dirty());
        p.mark_renet_dirty();
        assert!(p.take_renet_dirty());
        assert!(!p.take_renet_dirty());

        assert!(!p.take_renet_fed());
        p.mark_renet_fed();
        assert!(p.take_renet_fed());
        assert!(!p.take_renet_fed());
    }

    #[test]
    fn flags_are_independent() {
        let mut p = Pending::default();
        p.mark_dirty();
        p.mark_renet_fed();
        // Clearing or taking one leaves the others as they were.
        p.clear_touched();
        assert!(!p.take_renet_dirty());
        assert!(p.is_dirty());
        p.clear_dirty();
        assert!(p.take_renet_fed());
        assert!(p.mark_touched());
        assert_eq!(
            p,
            Pending {
                touched: true,
                ..Pending::default()
            }
        );
    }

    #[test]
    fn a_new_client_is_active_plain_and_has_nothing_pending() {
        let config = GateConfig::new(1, [0; 32]);
        let claims = TokenClaims {
            account: 1,
            nonce: [0; 16],
            issued_at: 0,
        };
        let addr = SocketAddr::from(([127, 0, 0, 1], 1));
        let c = ClientState::new(addr, claims, &config, Instant::now());
        assert_eq!(c.lifecycle, Lifecycle::Active);
        assert!(!c.is_leaving());
        assert!(!c.packs());
        assert_eq!(c.pending, Pending::default());
        assert!(c.direct.is_empty() && c.inbox.is_empty());
    }
}
