//! The gate's counters: [`GateStats`] and its copy, [`GateStatsSnapshot`].

use std::sync::atomic::{AtomicU64, Ordering};

use tessera_link::bump;

use crate::screen::ScreenStats;

use super::{NetcodeRefusals, Refusal};

/// The gate's counters (all listeners). Read with [`GateStats::snapshot`].
#[derive(Debug, Default)]
pub struct GateStats {
    /// Screen outcomes by reason.
    pub screen: ScreenStats,
    /// Datagrams netcode refused after the screen, by reason.
    pub netcode: NetcodeRefusals,
    pub(super) datagrams_in: AtomicU64,
    pub(super) bytes_in: AtomicU64,
    pub(super) datagrams_out: AtomicU64,
    pub(super) bytes_out: AtomicU64,
    pub(super) send_errors: AtomicU64,
    pub(super) recv_errors: AtomicU64,
    pub(super) handshake_throttled: AtomicU64,
    pub(super) stray_dropped: AtomicU64,
    pub(super) handshaking_full: AtomicU64,
    pub(super) admitted: AtomicU64,
    pub(super) disconnects: AtomicU64,
    pub(super) kicked_datagram_flood: AtomicU64,
    pub(super) kicked_message_flood: AtomicU64,
    pub(super) kicked_message_too_large: AtomicU64,
    pub(super) kicked_backlogged: AtomicU64,
    pub(super) kicked_malformed: AtomicU64,
    pub(super) refused_replayed: AtomicU64,
    pub(super) refused_expired: AtomicU64,
    pub(super) refused_unknown: AtomicU64,
    pub(super) refused_bad_claims: AtomicU64,
    pub(super) refused_denied: AtomicU64,
    pub(super) messages_in: AtomicU64,
    pub(super) messages_in_direct: AtomicU64,
    pub(super) messages_out: AtomicU64,
    pub(super) events_dropped: AtomicU64,
    pub(super) outbound_dropped: AtomicU64,
    pub(super) sheddable_dropped: AtomicU64,
    pub(super) handshake_source_throttled: AtomicU64,
    pub(super) acks_deferred: AtomicU64,
}

/// A copy of [`GateStats`] (screen counters aside).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct GateStatsSnapshot {
    pub datagrams_in: u64,
    pub bytes_in: u64,
    pub datagrams_out: u64,
    /// Bytes of the datagrams sent (UDP payloads).
    pub bytes_out: u64,
    pub send_errors: u64,
    pub recv_errors: u64,
    /// Handshake datagrams dropped by the per-listener limit.
    pub handshake_throttled: u64,
    /// Datagrams other than connection requests from addresses netcode
    /// knows neither as connected nor as handshaking (a client's redundant
    /// disconnect packets after the first, a kicked client's last ones),
    /// dropped before netcode.
    pub stray_dropped: u64,
    /// Handshakes not tracked because the listener's table of handshaking
    /// addresses was full (their responses then count as strays).
    pub handshaking_full: u64,
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
    /// (see [`pack`](crate::pack)).
    pub messages_in_direct: u64,
    pub messages_out: u64,
    /// Unreliable message events dropped because the event queue was (three
    /// quarters) full.
    pub events_dropped: u64,
    /// Unreliable messages to clients dropped because the channel was full,
    /// or addressed to a client that had just left.
    pub outbound_dropped: u64,
    /// Sheddable messages ([`Gate::offer`](super::Gate::offer): chat)
    /// dropped because the client's channel was half full.
    pub sheddable_dropped: u64,
    /// Handshake datagrams dropped by the per-source limit (before the
    /// listener's).
    pub handshake_source_throttled: u64,
    /// renet ack packets not sent because the client had one shortly before
    /// ([`ACK_RIDE_AFTER`](super::ACK_RIDE_AFTER),
    /// [`ACK_INTERVAL`](super::ACK_INTERVAL); a later ack covers them).
    pub acks_deferred: u64,
    /// Datagrams that passed the screen.
    pub screen_passed: u64,
    /// Datagrams the screen refused, all reasons.
    pub screen_rejected: u64,
    /// Datagrams that passed the screen and netcode refused (undecryptable,
    /// replayed, malformed, a bad token), all reasons.
    pub netcode_refused: u64,
}

impl GateStats {
    pub fn snapshot(&self) -> GateStatsSnapshot {
        let l = |c: &AtomicU64| c.load(Ordering::Relaxed);
        GateStatsSnapshot {
            datagrams_in: l(&self.datagrams_in),
            bytes_in: l(&self.bytes_in),
            datagrams_out: l(&self.datagrams_out),
            bytes_out: l(&self.bytes_out),
            send_errors: l(&self.send_errors),
            recv_errors: l(&self.recv_errors),
            handshake_throttled: l(&self.handshake_throttled),
            stray_dropped: l(&self.stray_dropped),
            handshaking_full: l(&self.handshaking_full),
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
            sheddable_dropped: l(&self.sheddable_dropped),
            handshake_source_throttled: l(&self.handshake_source_throttled),
            acks_deferred: l(&self.acks_deferred),
            screen_passed: self.screen.passed(),
            screen_rejected: self.screen.rejected_total(),
            netcode_refused: self.netcode.total(),
        }
    }

    pub(super) fn refused(&self, r: Refusal) {
        bump(match r {
            Refusal::Replayed => &self.refused_replayed,
            Refusal::Expired => &self.refused_expired,
            Refusal::Unknown => &self.refused_unknown,
            Refusal::BadClaims => &self.refused_bad_claims,
            Refusal::Denied => &self.refused_denied,
        });
    }
}
