//! Framed, authenticated TCP links between cluster processes.
//!
//! A link is one TCP connection carrying length-prefixed frames
//! ([`FrameCodec`](crate::FrameCodec)): a four-step
//! [`Handshake`](tessera_wire::Handshake) (hello, challenge, response,
//! welcome — each side proves it holds the cluster secret without sending
//! it), then bitcode-encoded [`LinkMsg`](tessera_wire::LinkMsg)s. The
//! accepting side ([`serve`]) checks the peer's protocol version, role and
//! proof and answers a `Refused` frame with a reason when one is wrong; the
//! connecting side ([`connect`], [`connect_with_backoff`], [`Connector`])
//! checks the acceptor's role and proof the same way.
//!
//! ## Guarantees
//!
//! * **Bounded memory per link.** Outbound: a queue of at most
//!   [`LinkConfig::send_queue`] frames *and* [`LinkConfig::send_queue_bytes`]
//!   bytes. Inbound: at most [`LinkConfig::recv_queue`] decoded messages *and*
//!   [`LinkConfig::recv_queue_bytes`] bytes of their frames; when the
//!   application does not read, the reader stops reading the socket, TCP
//!   flow control pushes back on the peer, and the peer's own send queue
//!   fills.
//! * **Send policy.** [`LinkSender::try_send`] never waits: when the queue is
//!   full the message is dropped, counted in
//!   [`LinkStatsSnapshot::queue_full_drops`](crate::LinkStatsSnapshot::queue_full_drops),
//!   and the caller gets [`SendError::QueueFull`] (use it for replication and
//!   heartbeats, where a newer message supersedes a lost one). [`LinkSender::send`] waits for room
//!   instead (use it for commands and save batches, which must not be lost
//!   while the link lives). Both refuse a message over the frame cap with
//!   [`SendError::TooLarge`]; nothing oversized is ever written.
//! * **Bad input closes only its own link.** An undecodable frame, an
//!   oversized declared length, a stream cut inside a frame, a wrong version,
//!   secret or role, or a handshake timeout closes that link with a logged
//!   reason and a counter bump in [`LinkStats`](crate::LinkStats); the
//!   listener keeps serving the others. Nothing a peer sends can panic the
//!   process.
//! * **Ordering.** Messages arrive in the order they were queued, on one link.
//!   Nothing is retransmitted across links: after a reconnect, the
//!   application re-registers and re-sends what it must.
//! * **The secret** never crosses the wire and is never logged; proofs are
//!   bound to fresh nonces from both sides and checked in constant time.
//!
//! ## Files
//!
//! * `config.rs`: [`LinkConfig`], its validation, and the error types;
//! * `handshake.rs`: the four-step exchange, from either side;
//! * `io.rs`: an established [`Link`], its halves and its reader and writer
//!   tasks behind bounded queues;
//! * `serve.rs`: the accepting side, [`bind`] and [`serve`];
//! * `connect.rs`: the connecting side, [`connect`], [`Connector`] and its
//!   [`Backoff`].

mod config;
mod connect;
mod handshake;
mod io;
mod serve;

pub use config::{
    CloseReason, ConfigError, ConnectError, DEFAULT_IDLE_TIMEOUT, DEFAULT_KEEPALIVE,
    HandshakeError, LinkConfig, LinkTimeouts, MAX_MAX_FRAME, MIN_MAX_FRAME, SendError,
};
pub use connect::{Backoff, Connector, connect, connect_with_backoff};
pub use io::{Link, LinkReceiver, LinkSender, PeerInfo};
pub use serve::{bind, serve};
