//! The scene server's settings (`[scene]` in `tessera.toml`) and its errors.

use std::net::SocketAddr;

use tessera_host::RunnerSettings;
use tessera_link::ConnectError;

/// The scene server's settings (the `[scene]` section of `tessera.toml`).
#[derive(Debug, Clone, PartialEq, serde::Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SceneServerConfig {
    /// The coordinator's link address. Default `127.0.0.1:7000`.
    pub coordinator: String,
    /// This server's node name, unique in the cluster. Default: `scene-<pid>`.
    pub name: String,
    /// Link listener for gates. Default `127.0.0.1:0` (any free port; the
    /// address is registered with the coordinator, which hands it to gates).
    pub listen: String,
    /// Most scenes this server hosts (0 = no limit). Default 0.
    pub capacity: u32,
    /// Synthetic walkers spawned in every scene placed here (load tests). Default 0.
    pub walkers: u32,
    /// AOI radius of observers. Default 50.
    pub aoi_radius: f32,
    /// Heartbeat period before the coordinator says otherwise, ms. Default 500.
    pub heartbeat_ms: u32,
    /// Where to serve `/metrics`, `/livez` and `/readyz` over HTTP
    /// (`host:port`). Default: nowhere.
    pub metrics: Option<String>,
    /// Keepalives and idle timeout of every link (from `[links]`).
    #[serde(skip)]
    pub links: tessera_link::LinkTimeouts,
}

impl Default for SceneServerConfig {
    fn default() -> Self {
        Self {
            coordinator: "127.0.0.1:7000".into(),
            name: String::new(),
            listen: "127.0.0.1:0".into(),
            capacity: 0,
            walkers: 0,
            aoi_radius: 50.0,
            heartbeat_ms: 500,
            metrics: None,
            links: tessera_link::LinkTimeouts::default(),
        }
    }
}

/// A [`SceneServerConfig`] that makes no sense.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SceneServerConfigError {
    #[error("scene.listen {0:?} is not an address (host:port)")]
    Listen(String),
    #[error("scene.coordinator must not be empty")]
    Coordinator,
    #[error("scene.name {0:?} is invalid: 1–64 characters of letters, digits, '-', '_' or '.'")]
    Name(String),
    #[error("scene.aoi_radius must be a finite number between 1 and 1000")]
    AoiRadius,
    #[error("scene.heartbeat_ms must be between 10 and 60000")]
    HeartbeatMs,
    #[error("scene.walkers must be at most 100000")]
    Walkers,
    #[error("scene.metrics {0:?} is not an address (host:port)")]
    Metrics(String),
}

impl SceneServerConfig {
    /// The node name, defaulting to `scene-<pid>`.
    pub fn node_name(&self) -> String {
        if self.name.is_empty() {
            format!("scene-{}", std::process::id())
        } else {
            self.name.clone()
        }
    }

    pub fn validate(&self) -> Result<(), SceneServerConfigError> {
        if self.listen.parse::<SocketAddr>().is_err() {
            return Err(SceneServerConfigError::Listen(self.listen.clone()));
        }
        if self.coordinator.trim().is_empty() {
            return Err(SceneServerConfigError::Coordinator);
        }
        let name = self.node_name();
        if !tessera_wire::is_config_node_name(&name) {
            return Err(SceneServerConfigError::Name(name));
        }
        if !self.aoi_radius.is_finite() || !(1.0..=1000.0).contains(&self.aoi_radius) {
            return Err(SceneServerConfigError::AoiRadius);
        }
        if !(10..=60_000).contains(&self.heartbeat_ms) {
            return Err(SceneServerConfigError::HeartbeatMs);
        }
        if self.walkers > 100_000 {
            return Err(SceneServerConfigError::Walkers);
        }
        if let Some(m) = &self.metrics
            && m.parse::<SocketAddr>().is_err()
        {
            return Err(SceneServerConfigError::Metrics(m.clone()));
        }
        Ok(())
    }

    pub(crate) fn runner_settings(&self) -> RunnerSettings {
        let mut s = RunnerSettings {
            walkers: self.walkers,
            ..RunnerSettings::default()
        };
        s.scene.aoi_radius = self.aoi_radius;
        s
    }
}

/// Why a scene server could not start, or stopped.
#[derive(Debug, thiserror::Error)]
pub enum SceneServerError {
    #[error(transparent)]
    Config(#[from] SceneServerConfigError),
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        addr: String,
        source: std::io::Error,
    },
    #[error(transparent)]
    Link(#[from] tessera_link::ConfigError),
    #[error("the coordinator refused this server for good: {0}")]
    Refused(ConnectError),
    #[error(
        "game name {0:?} must be 1 to {max} bytes",
        max = tessera_wire::MAX_GAME_NAME
    )]
    GameName(&'static str),
    #[error("game {game:?} cannot build a scene world: {source}")]
    Game {
        game: &'static str,
        source: tessera_sim::BuildError,
    },
}
