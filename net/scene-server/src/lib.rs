//! The networked **scene server**: a [`SceneHost`] driven by the coordinator
//! over a link, and serving gates (and tools) over links of its own.
//!
//! ```text
//!               coordinator link (reconnects, re-registers with what it hosts)
//!  coordinator ◀──────────────────────────────▶ coordinator task ── place / drop / attach ──▶ SceneHost
//!      ▲   Register, Heartbeat(load), SceneReady,       │  ▲                                   │ per scene thread
//!      │   Event, SaveBatch, Deregister                 │  └── LinkSink (merged save batches) ◀─┤
//!      │                                                └── pending events ◀── pump task ◀──────┤ OutputQueue
//!  gates ──Command(Input)──▶ gate link tasks ──command()──▶ SceneHost            │
//!  gates ◀──Replication──────────────────────────────────── pump task (routes client → gate)
//! ```
//!
//! * **Placement** comes from the coordinator with the scene's last flushed
//!   states (`PlaceScene`, then the states in `SceneStates` chunks that
//!   [`assembly`] puts back together; heartbeats list the scene meanwhile);
//!   the server answers `SceneReady` once the scene ticks. A placement of a scene already hosted at an older epoch replaces
//!   it **without writing** (the old one is stale by definition).
//!   `DropScene` stops the scene with a final flush; once the sink holds
//!   none of its states (all acknowledged durable) the server answers
//!   `SceneReleased`, and a planned move places the scene elsewhere.
//! * **Attaches** come from the coordinator (`AttachAt`, `DetachAt`,
//!   `SyncAttached`); each names the gate node whose link gets the client's
//!   replication. Gates send only inputs, and only for their own clients.
//! * **Saves** go through [`LinkSink`] to the coordinator (the data service),
//!   merged per avatar while the link is down, so a coordinator restart loses
//!   nothing. `EpochStale` — for a save or a placement — drops the scene
//!   without writing anything more.
//! * **Shutdown** ([`SceneServer::shutdown`], SIGTERM in the binary): every
//!   scene is stopped with a final flush, every pending state is handed to
//!   the coordinator, then the server deregisters and closes the link.
//!
//! **API Boundary.** `tessera-scene-server` owns the networked shell
//! around [`SceneHost`]; it never talks to clients directly, never decides
//! placement (the coordinator does), and never writes to the database
//! (saves go to the coordinator's data service).
//!
//! # Invariants
//!
//! **Invariant:** every queue is bounded and every drop is counted
//! ([`SceneServerStats`]): commands refused by a scene's queue, replication
//! that had no route or did not fit a gate link, events beyond
//! [`MAX_PENDING_EVENTS`] while the coordinator is unreachable.
//!
//! **Invariant:** a scene is hosted at most once here, under one epoch; a
//! stale placement writes nothing after it is known to be stale.

pub mod assembly;
mod config;
mod coordinator;
mod gates;
mod metrics;
mod placing;
mod sink;
mod state;

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tracing::Instrument as _;

use tessera_host::{SceneHost, SystemClock};
use tessera_link::{Connector, LinkConfig, lock, serve};
use tessera_sim::{Game, SceneDef};
use tessera_wire::{Epoch, Role, Secret};
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

pub use config::{SceneServerConfig, SceneServerConfigError, SceneServerError};
pub use sink::{LinkSink, LinkSinkStats, MAX_UNACKED_STATES, SAVE_CHUNK_STATES};
pub use state::SceneServerStats;

use coordinator::coordinator_loop;
use gates::gate_link;
use state::{Routes, ServerCounters, ServerState};

/// Scene events kept while the coordinator link is down; older ones are
/// dropped (and counted) beyond this.
pub const MAX_PENDING_EVENTS: usize = 65_536;

/// A running scene server. See the [module docs](self).
pub struct SceneServer {
    shared: Arc<ServerState>,
    link_addr: SocketAddr,
    metrics_addr: Option<SocketAddr>,
    stop: CancellationToken,
    shutdown: CancellationToken,
    coordinator_task: Option<tokio::task::JoinHandle<Result<(), SceneServerError>>>,
    gate_task: Option<tokio::task::JoinHandle<()>>,
}

impl std::fmt::Debug for SceneServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SceneServer")
            .field("name", &self.shared.name)
            .field("link_addr", &self.link_addr)
            .finish_non_exhaustive()
    }
}

impl SceneServer {
    /// Binds the gate listener and starts connecting to the coordinator.
    /// `defs` are the scenes this server can host, by name; `game` builds
    /// their worlds (checked first: [`SceneServerError::Game`]).
    pub async fn start(
        config: SceneServerConfig,
        secret: Secret,
        defs: BTreeMap<String, SceneDef>,
        game: Arc<dyn Game>,
    ) -> Result<Self, SceneServerError> {
        config.validate()?;
        if game.name().is_empty() || game.name().len() > tessera_wire::MAX_GAME_NAME {
            return Err(SceneServerError::GameName(game.name()));
        }
        tessera_host::check_game(&*game).map_err(|source| SceneServerError::Game {
            game: game.name(),
            source,
        })?;
        let name = config.node_name();
        let settings = config.runner_settings();
        let sink = Arc::new(LinkSink::new());
        let host = SceneHost::new(
            settings.clone(),
            Arc::new(SystemClock::new()),
            Arc::clone(&sink) as Arc<dyn tessera_host::SaveSink>,
        )
        .with_game(game);
        let mut gate_cfg = LinkConfig::new(Role::SceneServer, name.clone(), secret.clone());
        gate_cfg.accept_roles = vec![Role::Gate, Role::Tool];
        config.links.apply(&mut gate_cfg);
        gate_cfg.validate()?;
        let mut coord_cfg = LinkConfig::new(Role::SceneServer, name.clone(), secret);
        config.links.apply(&mut coord_cfg);
        coord_cfg.validate()?;
        let shared = Arc::new(ServerState {
            name: name.clone(),
            walkers: config.walkers,
            defs,
            settings,
            host: Mutex::new(host),
            routes: Mutex::new(Routes::default()),
            sink,
            events: Mutex::new(VecDeque::new()),
            events_ready: Notify::new(),
            ready: Mutex::new(BTreeSet::new()),
            releasing: Mutex::new(Vec::new()),
            assembly: Mutex::new(assembly::Assembly::default()),
            counters: ServerCounters::default(),
            registered: AtomicBool::new(false),
            coordinator_done: AtomicBool::new(false),
            gate_links: Arc::clone(&gate_cfg.stats),
            coordinator_links: Arc::clone(&coord_cfg.stats),
        });
        let (listener, link_addr) =
            tessera_link::bind(&config.listen)
                .await
                .map_err(|source| SceneServerError::Bind {
                    addr: config.listen.clone(),
                    source,
                })?;
        let stop = CancellationToken::new();
        let shutdown = CancellationToken::new();
        let metrics_addr = match &config.metrics {
            Some(addr) => {
                let (listener, local) =
                    tessera_metrics::http::bind(addr).await.map_err(|source| {
                        SceneServerError::Bind {
                            addr: addr.clone(),
                            source,
                        }
                    })?;
                let registry = tessera_metrics::Registry::new();
                registry.register(&(Arc::clone(&shared) as Arc<dyn tessera_metrics::Source>));
                tessera_metrics::http::spawn(listener, registry, stop.clone());
                Some(local)
            }
            None => None,
        };
        let gate_task = {
            let shared = Arc::clone(&shared);
            let stop = stop.clone();
            let stopped = stop.clone();
            tokio::spawn(
                (async move {
                    let handler = move |link| {
                        let shared = Arc::clone(&shared);
                        let stop = stop.clone();
                        async move { gate_link(shared, link, stop).await }
                    };
                    if let Err(e) =
                        serve(listener, gate_cfg, handler, stopped.cancelled_owned()).await
                    {
                        warn!(error = %e, "gate listener stopped");
                    }
                })
                .in_current_span(),
            )
        };
        let coordinator_task = {
            let shared = Arc::clone(&shared);
            let run = coordinator_loop(
                Arc::clone(&shared),
                Connector::new(config.coordinator.clone(), coord_cfg),
                link_addr,
                config.capacity,
                Duration::from_millis(u64::from(config.heartbeat_ms)),
                stop.clone(),
                shutdown.clone(),
            );
            tokio::spawn(
                (async move {
                    let r = run.await;
                    shared.coordinator_done.store(true, Ordering::Relaxed);
                    shared.registered.store(false, Ordering::Relaxed);
                    r
                })
                .in_current_span(),
            )
        };
        let game = lock(&shared.host).game().name();
        info!(%name, %link_addr, coordinator = %config.coordinator, game, "scene server up");
        Ok(Self {
            shared,
            link_addr,
            metrics_addr,
            stop,
            shutdown,
            coordinator_task: Some(coordinator_task),
            gate_task: Some(gate_task),
        })
    }

    pub fn name(&self) -> &str {
        &self.shared.name
    }

    /// Where gates connect.
    pub fn link_addr(&self) -> SocketAddr {
        self.link_addr
    }

    /// Where `/metrics`, `/livez` and `/readyz` are served, if anywhere
    /// (`metrics` in the config).
    pub fn metrics_addr(&self) -> Option<SocketAddr> {
        self.metrics_addr
    }

    /// This server's metrics and health, to register with a process-wide
    /// [`tessera_metrics::Registry`] (as `tessera up` does).
    pub fn metrics_source(&self) -> Arc<dyn tessera_metrics::Source> {
        Arc::clone(&self.shared) as Arc<dyn tessera_metrics::Source>
    }

    /// `(scene, epoch)` of every hosted scene.
    pub fn placements(&self) -> Vec<(String, Epoch)> {
        lock(&self.shared.host).placements()
    }

    pub fn stats(&self) -> SceneServerStats {
        self.shared.stats()
    }

    /// The load report of every hosted scene.
    pub fn load(&self) -> Vec<tessera_host::LoadReport> {
        lock(&self.shared.host).load()
    }

    /// Resolves when the server stops on its own: the coordinator refused it
    /// for good (wrong secret or version), which is returned as an error.
    pub async fn stopped(&mut self) -> Result<(), SceneServerError> {
        match self.coordinator_task.as_mut() {
            Some(t) => {
                let r = t.await.unwrap_or(Ok(()));
                self.coordinator_task = None;
                r
            }
            None => std::future::pending().await,
        }
    }

    /// SIGTERM: every scene is stopped with a final flush, every pending
    /// state goes to the coordinator, then the server deregisters.
    pub async fn shutdown(mut self) -> Result<(), SceneServerError> {
        self.shutdown.cancel();
        let result = match self.coordinator_task.take() {
            Some(t) => t.await.unwrap_or(Ok(())),
            None => Ok(()),
        };
        self.stop.cancel();
        if let Some(t) = self.gate_task.take() {
            let _ = t.await;
        }
        info!(name = %self.shared.name, stats = ?self.shared.stats(), "scene server stopped");
        result
    }
}

impl Drop for SceneServer {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}
