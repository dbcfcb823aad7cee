//! The **gate process**: UDP clients in (the [`Gate`] transport), the
//! cluster behind (a link to the coordinator for sessions, links to scene
//! servers for inputs and replication).
//!
//! One agent per client, all driven by one task that owns every agent's
//! state (no locks), fed by the transport's events, the coordinator link and
//! the scene links:
//!
//! ```text
//!  client ─UDP─▶ Gate ──GateEvent──▶ agent loop ──OpenSession/AttachAvatar/Chat…──▶ coordinator
//!                  ▲                     │ ▲                                           │
//!                  │                     │ └──────────Session{…}, ChatTo───────────────┘
//!                  │                     └──Command(Input)──▶ scene link ──▶ scene server
//!                  └──────────── Replication (unchanged bytes) ◀── scene link task
//! ```
//!
//! The flow of one client: netcode handshake with a token from login →
//! `OpenSession` with the token's client id and nonce (the coordinator burns
//! the nonce: a replayed token is refused here) → `Welcome` + avatar list →
//! create / select → `AttachAvatar` → `Routed` (connect to that scene
//! server) → `Attached` → `Entered`; inputs go to the scene server, the
//! scene's packets come back as they are. A disconnect closes the session:
//! the avatar is detached and stays in its scene, offline.
//!
//! **Invariant:** a client is disconnected — and its memory freed — when it
//! sends a message that does not decode, stays silent past the idle timeout,
//! floods (the transport's token buckets), or stops acknowledging (its
//! reliable channel backs up); each is counted in [`GateServerStats`].
//!
//! **Invariant:** the agent loop never waits on a peer: sends to the
//! coordinator and scene servers are `try_send` into bounded link queues,
//! drops are counted.
//!
//! **Invariant:** chat never disconnects anyone: a line goes to each
//! recipient through [`Gate::offer`], shed (and counted) past the
//! recipient's `chat_received_per_s` or when its listener's queue or its
//! channel is half full; a session's own requests (chat, avatar lists and
//! creations) are held to its `[gate.limits]`, refusals counted.
//!
//! The files: `config` and `stats` (the settings and counters), `agent`
//! (the agent loop and a session's `Agent`), `limits` (a session's
//! buckets), `chat` (the limits applied: requests refused, lines shed),
//! `coordinator` (the coordinator link and what comes on it), `routes` (scene server links and input
//! batches), `replication` (a scene link's task, forwarding replication to
//! the clients).

mod agent;
mod chat;
mod config;
mod coordinator;
mod limits;
mod metrics;
mod replication;
mod routes;
mod stats;
#[cfg(test)]
mod test_links;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use tracing::Instrument as _;

use tessera_link::{ConnectError, Connector, LinkConfig, LinkSender};
use tessera_proto::client::NETCODE_PROTOCOL_ID;
use tessera_wire::{LinkMsg, Role, Secret};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tracing::info;

use crate::{AdmitAll, Gate, GateConfig};

use agent::AgentLoop;
use coordinator::coordinator_task;

pub use config::{GateLimits, GateServerConfig};
pub use stats::{GateServerSnapshot, GateServerStats};

/// Disconnect codes the gate uses (the client sees "disconnected by
/// server"; a [`ServerMsg::Kicked`](tessera_proto::ServerMsg::Kicked) with
/// the reason goes first when there is one).
pub mod codes {
    pub const KICKED: u16 = 1;
    pub const PROTOCOL: u16 = 2;
    pub const IDLE: u16 = 3;
    pub const UNAVAILABLE: u16 = 4;
}

/// Why the gate could not start.
#[derive(Debug, thiserror::Error)]
pub enum GateServerError {
    #[error("{0}")]
    Config(String),
    #[error(transparent)]
    Transport(#[from] crate::GateError),
    #[error(transparent)]
    Link(#[from] tessera_link::ConfigError),
    #[error("the coordinator refused this gate for good: {0}")]
    Refused(ConnectError),
    #[error("cannot serve metrics: {0}")]
    Metrics(std::io::Error),
}

/// What the link tasks tell the agent loop.
enum Inbox {
    Coordinator(LinkMsg),
    CoordinatorUp(LinkSender),
    CoordinatorDown,
    /// Scene server link task `(server, task)`: the link is up.
    SceneUp(String, u64, LinkSender),
    /// The link is lost; the task reconnects.
    SceneDown(String, u64),
    /// The task gave up for good (a permanent refusal).
    SceneGone(String, u64),
    /// A scene could not take what this client sent (a malformed action).
    Misbehaved(u64, String),
}

/// A running gate. See the [module docs](self).
pub struct GateServer {
    name: String,
    addresses: Vec<SocketAddr>,
    stats: Arc<GateServerStats>,
    transport: Arc<crate::GateStats>,
    metrics: Arc<metrics::GateMetrics>,
    metrics_addr: Option<SocketAddr>,
    stop: CancellationToken,
    task: Option<tokio::task::JoinHandle<Result<(), GateServerError>>>,
}

impl std::fmt::Debug for GateServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GateServer")
            .field("name", &self.name)
            .field("addresses", &self.addresses)
            .finish_non_exhaustive()
    }
}

impl GateServer {
    /// Binds the UDP listeners and starts serving; connects to the coordinator.
    pub async fn start(config: GateServerConfig, secret: Secret) -> Result<Self, GateServerError> {
        config.validate().map_err(GateServerError::Config)?;
        let name = config.node_name();
        let mut gcfg = GateConfig::new(NETCODE_PROTOCOL_ID, secret.derive_key("netcode"));
        gcfg.max_message_bytes = config.max_message_bytes;
        gcfg.socket_buffer_bytes = config.socket_buffer_bytes;
        let limits = &config.limits;
        gcfg.handshake_per_source = crate::RateQuota::new(
            limits.handshake_per_source_per_s,
            limits.handshake_per_source_burst,
        );
        gcfg.handshake_exempt = limits.trusted().map_err(GateServerError::Config)?;
        let (gate, events) = Gate::bind(gcfg, &config.addrs(), Arc::new(AdmitAll)).await?;
        let addresses = gate.addresses();
        let transport = Arc::clone(gate.stats());
        let gate = Arc::new(gate);
        let stats = Arc::new(GateServerStats::default());
        let stop = CancellationToken::new();
        let mut link_cfg = LinkConfig::new(Role::Gate, name.clone(), secret);
        config.links.apply(&mut link_cfg);
        link_cfg.validate()?;
        let metrics = Arc::new(metrics::GateMetrics {
            name: name.clone(),
            gate: Arc::clone(&gate),
            stats: Arc::clone(&stats),
            transport: Arc::clone(&transport),
            links: Arc::clone(&link_cfg.stats),
        });
        let metrics_addr = match &config.metrics {
            Some(addr) => {
                let (listener, local) = tessera_metrics::http::bind(addr)
                    .await
                    .map_err(GateServerError::Metrics)?;
                let registry = tessera_metrics::Registry::new();
                registry.register(&(Arc::clone(&metrics) as Arc<dyn tessera_metrics::Source>));
                tessera_metrics::http::spawn(listener, registry, stop.clone());
                Some(local)
            }
            None => None,
        };
        let (inbox_tx, inbox_rx) = mpsc::channel(16_384);
        let coordinator = tokio::spawn(
            coordinator_task(
                Connector::new(config.coordinator.clone(), link_cfg.clone()),
                addresses.clone(),
                inbox_tx.clone(),
                stop.clone(),
            )
            .in_current_span(),
        );
        let agents = AgentLoop {
            config: config.clone(),
            gate,
            stats: Arc::clone(&stats),
            link_cfg,
            inbox_tx,
            coordinator: None,
            scenes: BTreeMap::new(),
            scene_tasks: 0,
            agents: BTreeMap::new(),
            kicks: Vec::new(),
            seq: 0,
            inputs: BTreeMap::new(),
            replay: Default::default(),
        }
        .run(events, inbox_rx, stop.clone(), coordinator);
        let done = Arc::clone(&stats);
        let task = tokio::spawn(
            (async move {
                let r = agents.await;
                done.stopped
                    .store(true, std::sync::atomic::Ordering::Relaxed);
                done.registered
                    .store(false, std::sync::atomic::Ordering::Relaxed);
                r
            })
            .in_current_span(),
        );
        info!(%name, ?addresses, coordinator = %config.coordinator, "gate up");
        Ok(Self {
            name,
            addresses,
            stats,
            transport,
            metrics,
            metrics_addr,
            stop,
            task: Some(task),
        })
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// The UDP listeners' addresses.
    pub fn addresses(&self) -> &[SocketAddr] {
        &self.addresses
    }

    /// Where `/metrics`, `/livez` and `/readyz` are served, if anywhere
    /// (`metrics` in the config).
    pub fn metrics_addr(&self) -> Option<SocketAddr> {
        self.metrics_addr
    }

    /// This gate's metrics and health, to register with a process-wide
    /// [`tessera_metrics::Registry`] (as `tessera up` does).
    pub fn metrics_source(&self) -> Arc<dyn tessera_metrics::Source> {
        Arc::clone(&self.metrics) as Arc<dyn tessera_metrics::Source>
    }

    pub fn stats(&self) -> GateServerSnapshot {
        self.stats.snapshot()
    }

    /// The transport's counters (screen, rate limits, drops).
    pub fn transport_stats(&self) -> crate::GateStatsSnapshot {
        self.transport.snapshot()
    }

    /// Resolves if the gate stops on its own (refused by the coordinator).
    pub async fn stopped(&mut self) -> Result<(), GateServerError> {
        match self.task.as_mut() {
            Some(t) => {
                let r = t.await.unwrap_or(Ok(()));
                self.task = None;
                r
            }
            None => std::future::pending().await,
        }
    }

    /// Disconnects every client (their sessions close, avatars detach) and stops.
    pub async fn shutdown(mut self) {
        self.stop.cancel();
        if let Some(t) = self.task.take() {
            let _ = t.await;
        }
        info!(
            name = %self.name,
            stats = ?self.stats.snapshot(),
            transport = ?self.transport.snapshot(),
            "gate stopped"
        );
    }
}

impl Drop for GateServer {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}
