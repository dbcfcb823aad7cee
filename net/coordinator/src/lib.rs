//! # tessera-coordinator — the networked world coordinator
//!
//! This crate owns the coordinator process: the links to scene servers,
//! gates and tools, login (connect tokens, resume keys, the queue) and the
//! HTTP API, and the **data service** over redb. It drives the pure
//! [`ClusterState`] of `tessera-cluster` with what the links say and the
//! time, and carries out the effects it returns; placement and the avatar
//! directory are decided there, not here. It must never simulate a scene
//! or touch client packets: clients reach it only through the HTTP login,
//! and everything in-game flows between gates and scene servers.
//!
//! One process (or one role inside `tessera up`) that
//!
//! * accepts links from scene servers, gates and tools ([`serve`]) and feeds
//!   what they say — registrations, heartbeats, scene events, session
//!   requests — into the pure [`ClusterState`], carrying out the
//!   [`Effect`]s it returns, in order;
//! * is the **data service**: it owns the redb [`Store`], persists placement
//!   epochs before anything carrying them is sent, loads a scene's last
//!   flushed states for every placement (sent after its `PlaceScene` in
//!   `SceneStates` chunks, so a scene of any size places), and writes
//!   scene servers' save batches through a write-behind [`Writer`] —
//!   refusing batches from a stale placement (the epoch fence);
//! * serves the HTTP API (axum): `GET /v1/status`, registration, login and
//!   its queue; and the admin API (operator kicks and bans, scene
//!   snapshots, the live map) under its own bearer token, on the same
//!   listener or one of its own.
//!
//! ```text
//!  link task ×N ──(redb reads, off the lock)──(lock)──▶ Core { ClusterState, Writer, links } ──try_send──▶ link queues
//!  ticker (every tick_ms) ──(lock)──▶ Core::tick                          │ effects that need the disk
//!  axum /v1/… ──(lock)──▶ Core::{status, admit, poll, kick}               ▼
//!  data thread ◀── one job at a time: epoch write, flush + scene load, portal move ──(lock)──▶ the rest
//! ```
//!
//! **Invariant:** no redb call and no writer flush runs under the lock
//! (`SharedCore` measures every hold: `tessera_coordinator_lock_hold_seconds`).
//!
//! `core/` holds everything behind the lock (one file per concern);
//! `login/` is admission's bookkeeping, `http.rs` the API, `ids.rs` the
//! random ids both hand out.
//!
//! # Invariants
//!
//! **Invariant:** an epoch is durable in redb before any message carrying it
//! leaves (effects are applied in order; a failed `PersistEpoch` stops the
//! rest of that batch of effects and is counted).
//!
//! **Invariant:** a save batch is written only if its epoch is the scene's
//! latest; the writer is flushed before a scene's states are loaded for a
//! new placement, so a placement always starts from everything acknowledged
//! before it, and nothing from an older placement lands after it.
//!
//! **Invariant:** nothing the coordinator does waits on a peer: every send
//! is `try_send` into the link's bounded queue, and a refused send is
//! counted ([`CoordinatorStats::sends_failed`]); the cluster state reconciles
//! lost placements and attaches through claims and `SyncAttached`.
//!
//! **Invariant:** one live link per node name; a second one is refused.

mod config;
mod core;
mod http;
mod ids;
#[cfg(test)]
mod lock_tests;
pub mod login;
mod metrics;
mod password;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tracing::Instrument as _;

use tessera_persistence::{self as db, Store, Writer, WriterConfig};
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use tessera_cluster::{ClusterConfig, ClusterState, ClusterStatus, Effect};
use tessera_link::{LinkConfig, serve};
use tessera_wire::{Role, Secret};

pub use self::config::{
    AdminToken, ChannelLimits, CoordinatorConfig, CoordinatorConfigError, DEV_ADMIN_TOKEN,
};
pub use self::core::CoordinatorStats;
use self::core::{Core, SharedCore};

/// Why the coordinator could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error(transparent)]
    Config(#[from] CoordinatorConfigError),
    #[error(transparent)]
    Cluster(#[from] tessera_cluster::ClusterConfigError),
    #[error("cannot create data directory {path}: {source}")]
    DataDir {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot open the database: {0}")]
    Open(#[from] db::OpenError),
    #[error("database: {0}")]
    Store(#[from] db::StoreError),
    #[error("cannot register scene {scene:?} in the database: {source}")]
    Scene {
        scene: String,
        source: db::CreateSceneError,
    },
    #[error("cannot start the write-behind writer: {0}")]
    Writer(std::io::Error),
    #[error("cannot start the data thread: {0}")]
    DataThread(std::io::Error),
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        addr: String,
        source: std::io::Error,
    },
    #[error(transparent)]
    Link(#[from] tessera_link::ConfigError),
}

/// A running coordinator. Stop it with [`Coordinator::shutdown`]; dropping
/// it stops serving but skips the final writer flush.
pub struct Coordinator {
    link_addr: SocketAddr,
    http_addr: SocketAddr,
    admin_addr: SocketAddr,
    core: Arc<SharedCore>,
    registry: tessera_metrics::Registry,
    /// The coordinator's own metrics source (the registry holds it weakly).
    _source: Arc<dyn tessera_metrics::Source>,
    stop: CancellationToken,
    tasks: Vec<JoinHandle<()>>,
}

impl std::fmt::Debug for Coordinator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Coordinator")
            .field("link_addr", &self.link_addr)
            .field("http_addr", &self.http_addr)
            .field("admin_addr", &self.admin_addr)
            .finish_non_exhaustive()
    }
}

/// The database file inside a data directory.
pub const DB_FILE: &str = "tessera.redb";

impl Coordinator {
    /// Opens the database under `config.data`, registers the `catalog` scenes
    /// in it, recovers placement epochs from it (a restart: placements wait
    /// for `restart_grace_ms`), binds its listeners and starts serving.
    /// The admin token must not be the cluster `secret`.
    pub async fn start(
        config: CoordinatorConfig,
        cluster: ClusterConfig,
        secret: Secret,
        catalog: Vec<String>,
    ) -> Result<Self, StartError> {
        config.validate(&cluster)?;
        cluster.validate()?;
        let admin = Secret::new(config.admin_token.get().as_bytes().to_vec());
        if admin.ct_eq(&secret) {
            return Err(CoordinatorConfigError::AdminTokenIsSecret.into());
        }
        let store = open_store(&config)?;
        let scene_ids = register_scenes(&store, &catalog)?;
        let clock = Instant::now();
        let (state, effects) = initial_state(&store, cluster, &catalog)?;
        let tick_every = Duration::from_millis(u64::from(config.tick_ms));
        let counters = Arc::new(metrics::Counters::new(tick_every));
        // The writer's thread only publishes how far commits got; a task
        // turns that into acks under the core's lock, which the writer
        // thread itself must never wait on.
        let (durable_tx, durable_rx) = tokio::sync::watch::channel(0u64);
        let on_commit = {
            let counters = Arc::clone(&counters);
            move |r: &db::CommitReport| {
                counters.commit(r);
                durable_tx.send_replace(r.through);
            }
        };
        let writer = Writer::spawn(Arc::clone(&store), WriterConfig::default(), on_commit)
            .map_err(StartError::Writer)?;
        let (link_listener, link_addr) = bind(&config.listen).await?;
        let (http_listener, http_addr) = bind(&config.http).await?;
        let (admin_listener, admin_addr) = match &config.admin_http {
            Some(a) => {
                let (l, addr) = bind(a).await?;
                (Some(l), addr)
            }
            None => (None, http_addr),
        };

        let logins = login::Logins::new(config.login.clone(), secret.derive_key("netcode"))
            .map_err(CoordinatorConfigError::Login)?;
        let api_limits = Arc::new(http::Limits::new(&config.login));
        let store_hash_cap = store.hasher().cap();
        let mut core = Core::new(
            state,
            clock,
            store,
            writer,
            scene_ids,
            config.heartbeat_ms,
            config.tick_ms,
            logins,
        );
        core.set_channel_limits(config.channels);
        core.apply(effects);
        let core = Arc::new(SharedCore::new(core));
        core.lock()
            .start_data_thread(Arc::downgrade(&core))
            .map_err(StartError::DataThread)?;
        let stop = CancellationToken::new();

        let mut link_cfg = LinkConfig::new(Role::Coordinator, "coordinator", secret);
        link_cfg.accept_roles = vec![Role::SceneServer, Role::Gate, Role::Tool];
        config.links.apply(&mut link_cfg);
        link_cfg.validate()?;
        let registry = tessera_metrics::Registry::new();
        let source: Arc<dyn tessera_metrics::Source> = Arc::new(metrics::CoordinatorMetrics {
            core: Arc::clone(&core),
            counters: Arc::clone(&counters),
            links: Arc::clone(&link_cfg.stats),
        });
        registry.register(&source);
        counters.ticked();
        let tasks = vec![
            spawn_links(Arc::clone(&core), link_listener, link_cfg, stop.clone()),
            spawn_acks(Arc::clone(&core), durable_rx, stop.clone()),
            spawn_ticker(
                Arc::clone(&core),
                Arc::clone(&counters),
                tick_every,
                stop.clone(),
            ),
            tokio::spawn(
                (http::serve(
                    http_listener,
                    admin_listener,
                    http::Api {
                        hashing: Arc::new(tokio::sync::Semaphore::new(store_hash_cap)),
                        core: Arc::clone(&core),
                        limits: api_limits,
                        admin,
                        counters,
                        game: Arc::new((config.game.clone(), config.game.hash_hex())),
                    },
                    registry.clone(),
                    stop.clone(),
                ))
                .in_current_span(),
            ),
        ];
        info!(%link_addr, %http_addr, %admin_addr, data = %config.data.display(), "coordinator up");
        Ok(Self {
            link_addr,
            http_addr,
            admin_addr,
            core,
            registry,
            _source: source,
            stop,
            tasks,
        })
    }

    /// Where the link listener is bound.
    pub fn link_addr(&self) -> SocketAddr {
        self.link_addr
    }

    /// Where the HTTP API is bound.
    pub fn http_addr(&self) -> SocketAddr {
        self.http_addr
    }

    /// Where the admin API is served: `admin_http`'s listener, or the
    /// HTTP API's when it has none of its own.
    pub fn admin_addr(&self) -> SocketAddr {
        self.admin_addr
    }

    /// The metrics served at `/metrics` on the HTTP address. Register the
    /// other roles of the process here (`tessera up` does) and that one
    /// scrape covers them all.
    pub fn metrics(&self) -> &tessera_metrics::Registry {
        &self.registry
    }

    /// The `/v1/status` snapshot.
    pub fn status(&self) -> ClusterStatus {
        self.core.lock().status()
    }

    /// How long the shared lock has been held, per acquisition, since start
    /// (what `/metrics` shows as `tessera_coordinator_lock_hold_seconds`).
    pub fn lock_hold_times(&self) -> tessera_metrics::HistogramSnapshot {
        self.core.hold_times().snapshot()
    }

    /// Counters since start.
    pub fn stats(&self) -> CoordinatorStats {
        self.core.lock().stats()
    }

    /// Stops serving, closes every link, and commits every pending save.
    pub async fn shutdown(mut self) {
        self.stop.cancel();
        for t in std::mem::take(&mut self.tasks) {
            let _ = t.await;
        }
        let core = Arc::clone(&self.core);
        let stats = tokio::task::spawn_blocking({
            let span = tracing::Span::current();
            let f = move || {
                // Taken under the lock, stopped off it: the data thread
                // may need the lock to finish its job.
                let (closing, stats) = {
                    let mut core = core.lock();
                    (core.close(), core.stats())
                };
                closing.finish();
                stats
            };
            move || span.in_scope(f)
        })
        .await;
        match stats {
            Ok(stats) => info!(?stats, "coordinator stopped"),
            Err(_) => info!("coordinator stopped"),
        }
    }
}

impl Drop for Coordinator {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

/// Opens (or creates) the database under `config.data`, with the password
/// hasher's thread count resolved.
fn open_store(config: &CoordinatorConfig) -> Result<Arc<Store>, StartError> {
    std::fs::create_dir_all(&config.data).map_err(|source| StartError::DataDir {
        path: config.data.clone(),
        source,
    })?;
    let hash_threads = match config.password_hash_threads {
        0 => std::thread::available_parallelism()
            .map_or(1, usize::from)
            .saturating_sub(1)
            .max(1),
        n => n as usize,
    };
    Ok(Arc::new(Store::open_with(
        &config.data.join(DB_FILE),
        true,
        Arc::new(db::PasswordHasher::new(hash_threads)),
    )?))
}

/// Makes sure every catalog scene has a row in the database; its id by name.
fn register_scenes(
    store: &Store,
    catalog: &[String],
) -> Result<BTreeMap<String, db::SceneId>, StartError> {
    let mut scene_ids = BTreeMap::new();
    for scene in catalog {
        let id = store
            .ensure_scene(scene)
            .map_err(|source| StartError::Scene {
                scene: scene.clone(),
                source,
            })?;
        scene_ids.insert(scene.clone(), id);
    }
    Ok(scene_ids)
}

/// The cluster state at time 0 — recovered from the stored epochs after a
/// restart, fresh otherwise — with the catalog added, and the effects that
/// adding it returned.
fn initial_state(
    store: &Store,
    cluster: ClusterConfig,
    catalog: &[String],
) -> Result<(ClusterState, Vec<Effect>), StartError> {
    let epochs = store.scene_epochs()?;
    let mut state = if epochs.is_empty() {
        ClusterState::new(cluster, 0)?
    } else {
        info!(
            scenes = epochs.len(),
            "stored placement epochs found: recovering after a restart"
        );
        ClusterState::recover(cluster, epochs, 0)?
    };
    let mut effects = Vec::new();
    for scene in catalog {
        effects.extend(state.add_scene(0, scene));
    }
    Ok((state, effects))
}

async fn bind(addr: &str) -> Result<(TcpListener, SocketAddr), StartError> {
    tessera_link::bind(addr)
        .await
        .map_err(|source| StartError::Bind {
            addr: addr.to_owned(),
            source,
        })
}

/// Serves links until `stop`: each link's messages go to the core.
fn spawn_links(
    core: Arc<SharedCore>,
    listener: TcpListener,
    config: LinkConfig,
    stop: CancellationToken,
) -> JoinHandle<()> {
    tokio::spawn(
        (async move {
            let stop_links = stop.clone();
            let handler = move |link| {
                let core = Arc::clone(&core);
                let stop = stop_links.clone();
                async move { core::handle_link(core, link, stop).await }
            };
            if let Err(e) = serve(listener, config, handler, stop.cancelled_owned()).await {
                warn!(error = %e, "link listener stopped");
            }
        })
        .in_current_span(),
    )
}

/// Acknowledges save batches as the writer makes them durable, until `stop`.
fn spawn_acks(
    core: Arc<SharedCore>,
    mut durable: tokio::sync::watch::Receiver<u64>,
    stop: CancellationToken,
) -> JoinHandle<()> {
    tokio::spawn(
        (async move {
            loop {
                tokio::select! {
                    _ = stop.cancelled() => break,
                    r = durable.changed() => {
                        if r.is_err() {
                            break;
                        }
                        let through = *durable.borrow_and_update();
                        core.lock().on_durable(through);
                    }
                }
            }
        })
        .in_current_span(),
    )
}

/// Ticks the cluster state every `every` until `stop`.
fn spawn_ticker(
    core: Arc<SharedCore>,
    counters: Arc<metrics::Counters>,
    every: Duration,
    stop: CancellationToken,
) -> JoinHandle<()> {
    tokio::spawn(
        (async move {
            let mut interval = tokio::time::interval(every);
            interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tokio::select! {
                    _ = stop.cancelled() => break,
                    _ = interval.tick() => {
                        core.lock().tick();
                        counters.ticked();
                    }
                }
            }
        })
        .in_current_span(),
    )
}

#[cfg(test)]
mod tests {
    use tessera_cluster::ClusterConfig;
    use tessera_link::Backoff;

    /// After a coordinator restart, a scene server may retry only when its
    /// backoff (at most `Backoff::max`, plus the handshake) has run; the
    /// default grace must outlast that, or its scenes are re-placed
    /// elsewhere for nothing.
    #[test]
    fn the_default_restart_grace_covers_the_links_backoff() {
        let grace = ClusterConfig::default().restart_grace_ms;
        let backoff = Backoff::default().max.as_millis() as u64;
        assert!(
            grace > backoff,
            "grace {grace} ms, backoff up to {backoff} ms"
        );
    }
}
