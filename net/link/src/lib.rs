//! # tessera-link — the cluster's internal links
//!
//! Authenticated, framed TCP links between the coordinator, scene servers,
//! gates and tools:
//!
//! * [`frame`]: length-prefixed framing with a size cap ([`FrameCodec`]);
//! * [`link`]: the handshake over the cluster secret, links with bounded
//!   queues, a listener ([`serve`]) and a reconnecting client ([`Connector`]);
//! * [`stats`]: the counters every link bumps ([`LinkStats`]), and the
//!   poison-tolerant [`lock`] and relaxed [`bump`] every role uses for its
//!   own counters.
//!
//! **API Boundary.** This crate owns the transport between cluster
//! processes — sockets, framing, the handshake exchange, bounded queues and
//! their counters — and hands each decoded [`tessera_wire::LinkMsg`] on
//! unread: it must never interpret a message beyond the handshake, decide
//! anything about the cluster, or touch client traffic. What goes on the
//! wire (message types, the handshake codec, [`PROTOCOL_VERSION`]) is
//! `tessera-wire`'s.
//!
//! ```no_run
//! use tessera_link::{Connector, LinkConfig, LinkMsg, Role, serve};
//! use tessera_wire::Register;
//!
//! # async fn example() -> Result<(), Box<dyn std::error::Error>> {
//! // Accepting side (the coordinator): one task per link, until shutdown.
//! let cfg = LinkConfig::new(Role::Coordinator, "coord", "a long random secret");
//! let listener = tokio::net::TcpListener::bind("127.0.0.1:7000").await?;
//! let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
//! let server = tokio::spawn(serve(
//!     listener,
//!     cfg,
//!     |mut link| async move {
//!         while let Some(msg) = link.recv().await {
//!             // handle msg; reply with link.send(&reply).await
//!             let _ = msg;
//!         }
//!     },
//!     async move {
//!         let _ = stopped.await;
//!     },
//! ));
//!
//! // Connecting side (a scene server): reconnect and re-register forever.
//! let cfg = LinkConfig::new(Role::SceneServer, "scene-1", "a long random secret");
//! let mut connector = Connector::new("127.0.0.1:7000", cfg);
//! loop {
//!     // Errs only on a permanent refusal (secret, version, role) or a bad config.
//!     let mut link = connector.connect().await?;
//!     link.send(&LinkMsg::Register(Register::default())).await?;
//!     while let Some(msg) = link.recv().await {
//!         let _ = msg;
//!     }
//!     // Closed: link.close_reason() says why. Loop to reconnect.
//! #   break;
//! }
//! let _ = stop.send(());
//! server.await??;
//! # Ok(())
//! # }
//! ```

pub mod frame;
pub mod link;
pub mod stats;

pub use frame::{DEFAULT_MAX_FRAME, FrameCodec, FrameError};
pub use link::{
    Backoff, CloseReason, ConfigError, ConnectError, Connector, DEFAULT_IDLE_TIMEOUT,
    DEFAULT_KEEPALIVE, HandshakeError, Link, LinkConfig, LinkReceiver, LinkSender, LinkTimeouts,
    PeerInfo, SendError, bind, connect, connect_with_backoff, serve,
};
pub use stats::{LinkStats, LinkStatsSnapshot, bump, lock};
pub use tessera_wire::{Epoch, Handshake, LinkMsg, PROTOCOL_VERSION, RefuseCode, Role, Secret};
