//! # tessera-gate — the gate: the clients' UDP transport and the gate process
//!
//! This crate owns the path between a game client's UDP socket and the
//! cluster: the datagram screen, connect tokens and their single-use nonces,
//! renet over renetcode on tokio sockets (the server side, [`Gate`]; the
//! client side, [`GateClient`] and [`ClientConn`]), and the gate process
//! ([`server::GateServer`]) that keeps one agent per client session and
//! routes it to the coordinator and the scene servers. It must never hold
//! game state or run game logic (inputs go to a scene server, whose
//! replication comes back as bytes the gate forwards unread), decide
//! sessions or placement (the coordinator does), touch the database, make
//! its agent loop wait on a peer, or trust a byte a client sends.
//!
//! * [`screen`]: the datagram screen every inbound datagram passes before
//!   netcode sees it (renetcode panics on some malformed datagrams);
//! * [`token`]: connect tokens carrying [`TokenClaims`], and the
//!   [`NonceBook`] that makes each token single-use;
//! * [`transport`]: the server side, [`Gate`] — one or more listeners, each a
//!   UDP socket with its own netcode/renet server pair (netcode caps one at
//!   1024 clients), driven by tokio without busy polling;
//! * [`pack`]: several renet packets, and unreliable messages outside renet,
//!   in one netcode payload (both ends);
//! * [`client`]: the client side for bots and tests: [`GateClient`] (a task
//!   of its own) or [`ClientConn`] (driven by its owner's task) — one socket
//!   per client, cheap enough for thousands in one process;
//! * [`server`]: the gate process — the agent loop, the coordinator link,
//!   the scene server links and replication forwarding.
//!
//! Two channels each way, the same on both ends ([`connection_config`]):
//! [`Channel::Reliable`] (id 0, reliable ordered: session, chat) and
//! [`Channel::Unreliable`] (id 1: state).
//!
//! **Invariant:** network input never panics the gate: every datagram is
//! screened ([`screen::classify`]) before renetcode parses it, and nothing a
//! peer sends is `unwrap`ped.
//!
//! **Invariant:** every queue is bounded and every drop is counted: the event
//! and command queues (`GateConfig::event_queue`, `command_queue`), renet's
//! per-channel memory (`GateConfig::client_channel_memory`), and per-client
//! inbound rate limits (governor token buckets) whose breach disconnects the
//! client. Counters are in [`GateStats`] and [`ClientStats`].
//!
//! **Invariant:** the gate process's agent loop never waits on a peer: what
//! it sends the coordinator, the scene servers and the clients goes by
//! `try_send` into bounded queues, and a drop is counted.

mod bucket;
pub mod client;
pub mod pack;
pub mod screen;
pub mod server;
pub mod token;
pub mod transport;

use std::time::Duration;

use renet::{ChannelConfig, ConnectionConfig, SendType};

/// renetcode's token and client-side disconnect reason, re-exported for callers.
pub use renetcode::{ConnectToken, DisconnectReason as NetcodeDisconnectReason};

pub use client::{
    ClientConfig, ClientConn, ClientDisconnect, ClientEvent, ClientSendError, ClientStartError,
    ClientStats, GateClient,
};
pub use screen::{Direction, PacketKind, Reject, Screen, ScreenStats, classify};
pub use token::{
    BurnError, ClaimsError, IssueError, IssuedToken, NonceBook, NonceBookStats, RecordError,
    TokenClaims, TokenDecodeError, TokenIssuer, unix_now,
};
pub use transport::{
    Admission, AdmitAll, ClientId, DisconnectReason, Gate, GateConfig, GateError, GateEvent,
    GateSendError, GateStats, GateStatsSnapshot, ListenerSocket, NetcodeRefusal, NetcodeRefusals,
    REFUSAL_LOG_INTERVAL, RateQuota, Refusal,
};

/// A message channel; the same ids both ways.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Channel {
    /// Reliable and ordered: session control, chat.
    Reliable = 0,
    /// Unreliable: state (newer replaces older).
    Unreliable = 1,
}

impl Channel {
    pub const ALL: [Channel; 2] = [Channel::Reliable, Channel::Unreliable];

    pub fn id(self) -> u8 {
        self as u8
    }
}

impl From<Channel> for u8 {
    fn from(c: Channel) -> u8 {
        c.id()
    }
}

/// The renet connection config both ends use. `send_memory` bounds what one
/// end buffers per channel for sending (unacked reliable data, queued
/// unreliable data); `receive_memory` bounds what the other end buffers per
/// channel when receiving from this one. Channels go in priority order:
/// reliable first.
pub fn connection_config(server_send_memory: usize, client_send_memory: usize) -> ConnectionConfig {
    let channels = |memory: usize| {
        vec![
            ChannelConfig {
                channel_id: Channel::Reliable.id(),
                max_memory_usage_bytes: memory,
                send_type: SendType::ReliableOrdered {
                    resend_time: Duration::from_millis(200),
                },
            },
            ChannelConfig {
                channel_id: Channel::Unreliable.id(),
                max_memory_usage_bytes: memory,
                send_type: SendType::Unreliable,
            },
        ]
    };
    ConnectionConfig {
        available_bytes_per_tick: 60_000,
        server_channels_config: channels(server_send_memory),
        client_channels_config: channels(client_send_memory),
    }
}
