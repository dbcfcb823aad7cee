//! The gate's server transport: renet over renetcode over tokio UDP sockets.
//!
//! A [`Gate`] runs one task per **listener**. A listener owns a tokio
//! `UdpSocket`, a renetcode `NetcodeServer` and a renet `RenetServer` — the
//! logic of renet_netcode's `NetcodeServerTransport`, rewritten over tokio —
//! and waits, without busy polling, on whichever comes first: a datagram, a
//! command from the [`Gate`] handle, or the next update deadline (every
//! [`GateConfig::update_interval`]: time, timeouts, keep-alives, resends,
//! acks).
//!
//! Nothing waits for the update that need not: the messages in a batch of
//! datagrams become events as soon as the batch is read, and the messages
//! queued by a batch of commands are sent as soon as the batch is applied
//! (the replication of a tick leaves in the wake that brought it). renet
//! appends an ack packet to every collection; a client gets one riding on
//! data at most every [`ACK_RIDE_AFTER`], and one alone only when none went
//! for [`ACK_INTERVAL`] (acks are cumulative ranges, so a later one covers
//! what a skipped one would have said), and the packets of one collection
//! share a datagram when the client packs too (see [`pack`](super::pack)).
//! netcode caps a server at 1024 clients, so a gate that needs more runs
//! several listeners and advertises the ones with room
//! ([`Gate::open_addresses`]).
//!
//! Every inbound datagram goes, in order, through:
//! 1. the [screen](super::screen) (framing; refusals counted by reason);
//! 2. the sender check: anything but a connection request from an address
//!    netcode knows neither as connected nor as handshaking is dropped
//!    (`stray_dropped`) — netcode could only log it as an error, and a
//!    client's redundant goodbyes are all such but the first;
//! 3. a rate limit — per connected client on datagrams
//!    ([`GateConfig::client_datagrams`]; a breach disconnects the client), or,
//!    for addresses not connected (handshakes), one per source address
//!    ([`GateConfig::handshake_per_source`], IPv6 by /64), then one per
//!    listener ([`GateConfig::handshake_datagrams`]); a breach of either
//!    drops the datagram, so a flood from a few sources spends only their
//!    own buckets;
//! 4. netcode (decryption, handshake, replay window); a datagram it refuses
//!    is counted by reason and summed up in at most one WARN line a second
//!    for the gate ([`NetcodeRefusals`]), never logged one line per datagram;
//! 5. renet (acks, reassembly, channels).
//!
//! When netcode completes a handshake the token's user data is decoded into
//! [`TokenClaims`] and handed to the [`Admission`] policy — normally a
//! [`NonceBook`](crate::NonceBook) burning the nonce — and only an admitted
//! client becomes a renet connection and a [`GateEvent::Connected`]. netcode
//! accepts a reused connect token, so this is where replays are refused.
//!
//! Messages from a client are checked against [`GateConfig::max_message_bytes`]
//! and [`GateConfig::client_messages`]; a breach disconnects it with
//! [`DisconnectReason::MessageTooLarge`] / [`DisconnectReason::MessageFlood`].
//!
//! **Invariant:** every queue is bounded and every drop counted. Commands go
//! through a bounded queue per listener ([`GateSendError::QueueFull`]).
//! Events go through one bounded queue. An unreliable message event is
//! dropped and counted (`events_dropped`) when the queue is three quarters
//! full: the last quarter is kept for what must not be lost. A connect or
//! disconnect event, or a reliable message, that finds the queue full waits
//! in a per-listener backlog that is flushed — awaiting room, which pauses
//! that listener — before the listener reads on (so the backlog holds at
//! most one wake's worth), and while it is not empty unreliable message
//! events are dropped rather than overtaking it. So every `Connected` is
//! followed by exactly one `Disconnected` for the same client, no message of
//! a client comes before its `Connected` or after its `Disconnected`, and no
//! reliable message is lost between renet and the event queue.
//!
//! **Invariant:** nothing a peer sends can panic a listener (screened before
//! netcode; no `unwrap` on peer data), and a bad or abusive client costs only
//! its own connection.
//!
//! The files: `config`, `admission` and `stats` (the settings, the
//! admission policy, the counters), `gate` (the [`Gate`] handle, which
//! starts the listeners and routes commands to them), `listener` (a
//! listener's task and wake loop), `io` (its state but the netcode server,
//! and what a netcode result does to it), `inbound` and `outbound` (messages
//! to events, commands to datagrams), `client_state` (what a listener keeps
//! per client), `handshaking` (the addresses netcode is handshaking with)
//! and `ack` (when an ack packet goes, shared with the client).

mod ack;
mod admission;
mod client_state;
mod config;
mod gate;
mod handshaking;
mod inbound;
mod io;
mod listener;
mod outbound;
mod refusals;
mod sources;
mod stats;

use std::net::SocketAddr;

use bytes::Bytes;

use crate::Channel;
use crate::token::TokenClaims;

pub use ack::{ACK_INTERVAL, ACK_RIDE_AFTER};
pub(crate) use ack::{keep_due_ack, renet_due};
pub use admission::{Admission, AdmitAll, Refusal};
pub use config::{GateConfig, RateQuota};
pub use gate::{Gate, ListenerSocket};
pub use refusals::{NetcodeRefusal, NetcodeRefusals, REFUSAL_LOG_INTERVAL};
pub use stats::{GateStats, GateStatsSnapshot};

/// netcode's client id, chosen by the token issuer; unique among connected
/// clients of a gate.
pub type ClientId = u64;

/// netcode's limit on clients per server (and so per listener).
pub const MAX_CLIENTS_PER_LISTENER: usize = 1024;

/// Why a connection ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DisconnectReason {
    /// The client said goodbye.
    ByClient,
    /// Nothing heard from the client within the token's timeout.
    TimedOut,
    /// [`Gate::disconnect`], with the caller's code.
    Kicked(u16),
    /// Too many datagrams.
    DatagramFlood,
    /// Too many messages.
    MessageFlood,
    /// A message above `max_message_bytes`.
    MessageTooLarge,
    /// A packed payload whose framing does not add up.
    MalformedPayload,
    /// Its reliable channel could not take more (the client stopped acking).
    Backlogged,
    /// renet closed the connection (bad packet, channel error).
    Protocol(renet::DisconnectReason),
    /// The gate is shutting down.
    Shutdown,
}

/// What the gate reports.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum GateEvent {
    Connected {
        client: ClientId,
        listener: usize,
        addr: SocketAddr,
        claims: TokenClaims,
    },
    Message {
        client: ClientId,
        channel: Channel,
        payload: Bytes,
    },
    Disconnected {
        client: ClientId,
        reason: DisconnectReason,
    },
}

/// Errors starting a gate.
#[derive(Debug, thiserror::Error)]
pub enum GateError {
    #[error("invalid gate config: {0}")]
    Config(String),
    #[error("no listener given")]
    NoListener,
    #[error("binding {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        source: std::io::Error,
    },
}

/// Why a command was not queued.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum GateSendError {
    #[error("no such client")]
    UnknownClient,
    #[error("the listener's command queue is full")]
    QueueFull,
    #[error("the gate is shut down")]
    Closed,
}
