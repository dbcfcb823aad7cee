//! Tessera networking.
//!
//! So far: the **internal link layer** that coordinator, scene servers, gates
//! and tools use to talk to each other —
//!
//! * [`wire`]: the versioned messages ([`LinkMsg`]) and the handshake
//!   ([`Handshake`]), bitcode-encoded;
//! * [`frame`]: length-prefixed framing with a size cap ([`FrameCodec`]);
//! * [`link`]: authenticated TCP links with bounded queues, a listener
//!   ([`serve`]) and a reconnecting client ([`Connector`]);
//! * [`stats`]: the counters every link bumps ([`LinkStats`]).
//!
//! See `net/README.md` for the guarantees, the wire format and the limits.

pub mod cluster;
pub mod frame;
pub mod link;
pub mod stats;
pub mod wire;

pub use cluster::{ClusterConfig, ClusterState, Effect};
pub use frame::{DEFAULT_MAX_FRAME, FrameCodec, FrameError};
pub use link::{
    Backoff, CloseReason, ConfigError, ConnectError, Connector, HandshakeError, Link, LinkConfig,
    LinkReceiver, LinkSender, PeerInfo, SendError, connect, connect_with_backoff, serve,
};
pub use stats::{LinkStats, LinkStatsSnapshot};
pub use wire::{Epoch, Handshake, LinkMsg, PROTOCOL_VERSION, RefuseCode, Role, Secret};
