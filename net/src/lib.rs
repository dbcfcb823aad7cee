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
//! * [`stats`]: the counters every link bumps ([`LinkStats`]);
//! * [`host`]: the scene host — scene worlds on their own threads with a
//!   fixed-step clock, bounded queues in and out, save sinks ([`SceneHost`]).
//!
//! See `net/README.md` for the guarantees, the wire format and the limits.
//!
//! ```no_run
//! use tessera_net::{Connector, LinkConfig, LinkMsg, Role, serve, wire::Register};
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

pub mod bot;
pub mod cluster;
pub mod coordinator;
pub mod frame;
pub mod gate;
pub mod host;
pub mod http_client;
pub mod link;
pub mod login;
pub mod scene_server;
pub mod stats;
pub mod tool;
pub mod wire;

pub use cluster::{ClusterConfig, ClusterState, Effect};
pub use frame::{DEFAULT_MAX_FRAME, FrameCodec, FrameError};
pub use host::{
    Clock, CommandError, EpochBatch, LoadReport, ManualClock, MemorySink, OutputQueue, Phase,
    RunError, RunnerReport, RunnerSettings, SaveSink, SaveSinkError, SceneHost, SceneRunner,
    SystemClock, TickBatch, WriterSink,
};
pub use link::{
    Backoff, CloseReason, ConfigError, ConnectError, Connector, HandshakeError, Link, LinkConfig,
    LinkReceiver, LinkSender, PeerInfo, SendError, connect, connect_with_backoff, serve,
};
pub use stats::{LinkStats, LinkStatsSnapshot};
pub use wire::{Epoch, Handshake, LinkMsg, PROTOCOL_VERSION, RefuseCode, Role, Secret};
