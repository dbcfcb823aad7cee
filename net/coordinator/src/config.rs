//! The coordinator's settings and their checks.

use std::net::SocketAddr;
use std::path::PathBuf;

use tessera_cluster::ClusterConfig;

use crate::login;

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
    /// Password hashes (argon2id, CPU-bound) computed at once; 0 = one less
    /// than the cores (at least 1), so a login storm leaves a core to the
    /// game. Default 0.
    pub password_hash_threads: u32,
    /// Login, tokens, queue and rate limits (`[coordinator.login]`).
    pub login: login::LoginConfig,
    /// Keepalives and idle timeout of every link (from `[links]`).
    #[serde(skip)]
    pub links: tessera_link::LinkTimeouts,
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
            links: tessera_link::LinkTimeouts::default(),
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
