//! The networked **world coordinator**: [`ClusterState`] driven over links.
//!
//! One process (or one role inside `tessera up`) that
//!
//! * accepts links from scene servers, gates and tools ([`serve`]) and feeds
//!   what they say — registrations, heartbeats, scene events, session
//!   requests — into the pure [`ClusterState`], carrying out the
//!   [`Effect`](tessera_cluster::Effect)s it returns, in order;
//! * is the **data service**: it owns the redb [`Store`], persists placement
//!   epochs before anything carrying them is sent, loads a scene's last
//!   flushed states into every `PlaceScene`, and writes scene servers' save
//!   batches through a write-behind [`Writer`] — refusing batches from a
//!   stale placement (the epoch fence);
//! * serves `GET /v1/status` over HTTP (axum).
//!
//! ```text
//!  link task ×N ──(lock)──▶ Core { ClusterState, Store, Writer, links } ──try_send──▶ link queues
//!  ticker (every tick_ms) ──(lock)──▶ Core::tick
//!  axum GET /v1/status ──(lock)──▶ ClusterState::status
//! ```
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

mod core;
mod http;
pub mod login;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tessera_link::lock;

use tessera_persistence::{self as db, Store, Writer, WriterConfig};
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use tessera_cluster::{ClusterConfig, ClusterState, ClusterStatus};
use tessera_link::{LinkConfig, serve};
use tessera_wire::{Role, Secret};

pub use self::core::CoordinatorStats;
use self::core::Core;

/// The coordinator's settings (the `[coordinator]` section of
/// `tessera.toml`). Every field has a default.
#[derive(Debug, Clone, PartialEq, serde::Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct CoordinatorConfig {
    /// Link listener for scene servers, gates and tools. Default `127.0.0.1:7000`.
    pub listen: String,
    /// HTTP admin API. Default `127.0.0.1:7080`.
    pub http: String,
    /// Data directory holding `tessera.redb`. Default `./data`.
    pub data: PathBuf,
    /// How often nodes heartbeat, ms. Default 500.
    pub heartbeat_ms: u32,
    /// How often the cluster state is ticked (silent nodes expire), ms. Default 100.
    pub tick_ms: u32,
    /// Password hashes (argon2id, ~15 ms of CPU each) computed at once;
    /// 0 = one less than the cores (at least 1), so a login storm leaves a
    /// core to the game. Default 0.
    pub password_hash_threads: u32,
    /// Login, tokens, queue and rate limits (`[coordinator.login]`).
    pub login: login::LoginConfig,
}

impl Default for CoordinatorConfig {
    fn default() -> Self {
        Self {
            listen: "127.0.0.1:7000".into(),
            http: "127.0.0.1:7080".into(),
            data: PathBuf::from("./data"),
            heartbeat_ms: 500,
            tick_ms: 100,
            password_hash_threads: 0,
            login: login::LoginConfig::default(),
        }
    }
}

/// A [`CoordinatorConfig`] that makes no sense.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CoordinatorConfigError {
    #[error("coordinator.listen {0:?} is not an address (host:port)")]
    Listen(String),
    #[error("coordinator.http {0:?} is not an address (host:port)")]
    Http(String),
    #[error("coordinator.heartbeat_ms must be between 10 and 60000")]
    HeartbeatMs,
    #[error("coordinator.tick_ms must be between 10 and 10000")]
    TickMs,
    #[error(
        "coordinator.heartbeat_ms ({heartbeat}) must be below cluster.heartbeat_timeout_ms ({timeout})"
    )]
    HeartbeatAboveTimeout { heartbeat: u32, timeout: u64 },
    #[error("{0}")]
    Login(String),
}

impl CoordinatorConfig {
    /// Checks the settings against each other and the cluster's.
    pub fn validate(&self, cluster: &ClusterConfig) -> Result<(), CoordinatorConfigError> {
        if self.listen.parse::<SocketAddr>().is_err() {
            return Err(CoordinatorConfigError::Listen(self.listen.clone()));
        }
        if self.http.parse::<SocketAddr>().is_err() {
            return Err(CoordinatorConfigError::Http(self.http.clone()));
        }
        if !(10..=60_000).contains(&self.heartbeat_ms) {
            return Err(CoordinatorConfigError::HeartbeatMs);
        }
        if !(10..=10_000).contains(&self.tick_ms) {
            return Err(CoordinatorConfigError::TickMs);
        }
        self.login
            .validate()
            .map_err(CoordinatorConfigError::Login)?;
        if u64::from(self.heartbeat_ms) >= cluster.heartbeat_timeout_ms {
            return Err(CoordinatorConfigError::HeartbeatAboveTimeout {
                heartbeat: self.heartbeat_ms,
                timeout: cluster.heartbeat_timeout_ms,
            });
        }
        Ok(())
    }
}

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
#[derive(Debug)]
pub struct Coordinator {
    link_addr: SocketAddr,
    http_addr: SocketAddr,
    core: Arc<Mutex<Core>>,
    stop: CancellationToken,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

/// The database file inside a data directory.
pub const DB_FILE: &str = "tessera.redb";

impl Coordinator {
    /// Opens the database under `config.data`, registers the `catalog` scenes
    /// in it, recovers placement epochs from it (a restart: placements wait
    /// for `restart_grace_ms`), binds both listeners and starts serving.
    pub async fn start(
        config: CoordinatorConfig,
        cluster: ClusterConfig,
        secret: Secret,
        catalog: Vec<String>,
    ) -> Result<Self, StartError> {
        config.validate(&cluster)?;
        cluster.validate()?;
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
        let store = Arc::new(Store::open_with(
            &config.data.join(DB_FILE),
            true,
            Arc::new(db::PasswordHasher::new(hash_threads)),
        )?);
        let mut scene_ids = std::collections::BTreeMap::new();
        for scene in &catalog {
            let id = store
                .ensure_scene(scene)
                .map_err(|source| StartError::Scene {
                    scene: scene.clone(),
                    source,
                })?;
            scene_ids.insert(scene.clone(), id);
        }
        let epochs = store.scene_epochs()?;
        let clock = std::time::Instant::now();
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
        for scene in &catalog {
            effects.extend(state.add_scene(0, scene));
        }
        let writer = Writer::spawn(Arc::clone(&store), WriterConfig::default(), |_| {})
            .map_err(StartError::Writer)?;

        let bind = |addr: &str| {
            let addr = addr.to_owned();
            async move {
                tessera_link::bind(&addr)
                    .await
                    .map_err(|source| StartError::Bind { addr, source })
            }
        };
        let (link_listener, link_addr) = bind(&config.listen).await?;
        let (http_listener, http_addr) = bind(&config.http).await?;

        let logins = login::Logins::new(config.login.clone(), secret.derive_key("netcode"))
            .map_err(CoordinatorConfigError::Login)?;
        let limits = http::Limits::new(&config.login);
        let admin = secret.clone();
        let mut core = Core::new(
            state,
            clock,
            store,
            writer,
            scene_ids,
            config.heartbeat_ms,
            logins,
        );
        core.apply(effects);
        let core = Arc::new(Mutex::new(core));
        let stop = CancellationToken::new();

        let mut link_cfg = LinkConfig::new(Role::Coordinator, "coordinator", secret);
        link_cfg.accept_roles = vec![Role::SceneServer, Role::Gate, Role::Tool];
        link_cfg.validate()?;
        let mut tasks = Vec::new();
        {
            let core = Arc::clone(&core);
            let stop_links = stop.clone();
            let stopped = stop.clone();
            tasks.push(tokio::spawn(async move {
                let handler = move |link| {
                    let core = Arc::clone(&core);
                    let stop = stop_links.clone();
                    async move { core::handle_link(core, link, stop).await }
                };
                if let Err(e) =
                    serve(link_listener, link_cfg, handler, stopped.cancelled_owned()).await
                {
                    warn!(error = %e, "link listener stopped");
                }
            }));
        }
        {
            let core = Arc::clone(&core);
            let stop = stop.clone();
            let every = Duration::from_millis(u64::from(config.tick_ms));
            tasks.push(tokio::spawn(async move {
                let mut interval = tokio::time::interval(every);
                interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
                loop {
                    tokio::select! {
                        _ = stop.cancelled() => break,
                        _ = interval.tick() => lock(&core).tick(),
                    }
                }
            }));
        }
        tasks.push(tokio::spawn(http::serve(
            http_listener,
            http::Api {
                core: Arc::clone(&core),
                limits: Arc::new(limits),
                admin,
            },
            stop.clone(),
        )));
        info!(%link_addr, %http_addr, data = %config.data.display(), "coordinator up");
        Ok(Self {
            link_addr,
            http_addr,
            core,
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

    /// The `/v1/status` snapshot.
    pub fn status(&self) -> ClusterStatus {
        lock(&self.core).status()
    }

    /// Counters since start.
    pub fn stats(&self) -> CoordinatorStats {
        lock(&self.core).stats()
    }

    /// Stops serving, closes every link, and commits every pending save.
    pub async fn shutdown(mut self) {
        self.stop.cancel();
        for t in std::mem::take(&mut self.tasks) {
            let _ = t.await;
        }
        let core = Arc::clone(&self.core);
        let stats = tokio::task::spawn_blocking(move || {
            let mut core = lock(&core);
            core.close();
            core.stats()
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
