//! What the listener keeps per connected client.

use std::net::SocketAddr;
use std::time::Instant;

use bytes::Bytes;
use governor::DefaultDirectRateLimiter;

use crate::pack::Outbox;
use crate::token::TokenClaims;

pub(super) struct ClientState {
    pub(super) addr: SocketAddr,
    pub(super) claims: TokenClaims,
    pub(super) datagrams: DefaultDirectRateLimiter,
    pub(super) messages: DefaultDirectRateLimiter,
    /// Set once the client is being disconnected: its datagrams and
    /// messages are ignored from then on.
    pub(super) leaving: bool,
    /// Messages were queued for it since its packets were last collected
    /// (it is then listed in `Io::dirty`).
    pub(super) dirty: bool,
    /// Payloads were read from it since its messages were last taken (it is
    /// then listed in `Io::touched`).
    pub(super) touched: bool,
    /// When an ack packet was last sent to it.
    pub(super) last_ack: Instant,
    /// It has sent a packed payload, so it reads them: its packets are
    /// packed too, and its unreliable messages go outside renet (`direct`).
    pub(super) packs: bool,
    /// Unreliable messages for it that skip renet (see [`pack`](crate::pack)),
    /// sent with its next packets; at most `server_channel_memory` bytes.
    pub(super) direct: Outbox,
    /// Messages were given to renet since its packets were last collected.
    pub(super) renet_dirty: bool,
    /// Unreliable messages it sent outside renet, already checked against
    /// the size and rate limits, taken with its renet messages at the end of
    /// the wake that read them (so at most a rate-limit burst).
    pub(super) inbox: Vec<Bytes>,
    /// renet packets were read from it since its messages were last taken
    /// (if not, renet has no new message of it to ask for).
    pub(super) renet_fed: bool,
}
