//! The cluster's tunables and how crowded a scene is.

use thiserror::Error;

/// Tunables of the cluster state. Every field has a default; it
/// deserializes from the coordinator's section of `tessera.toml` (unknown
/// keys are an error); check it with [`validate`](Self::validate).
#[derive(Debug, Clone, PartialEq, Eq, serde::Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ClusterConfig {
    /// A node without a heartbeat for this long is dead. Default 3000 ms.
    pub heartbeat_timeout_ms: u64,
    /// A scene with at least this population is `busy`. Default 1500.
    pub busy_population: u32,
    /// A scene with at least this population is `full`: new attaches and
    /// transfers into it are refused (reconnects are not). Default 4000.
    pub full_population: u32,
    /// After [`ClusterState::recover`](crate::ClusterState::recover), how
    /// long new placements wait for servers to re-register and keep their
    /// scenes, and gates to replay their sessions. It must cover the links'
    /// reconnect backoff (`links.reconnect_max_ms`, default 5 s) with a
    /// second to spare, or a server that retries just after the restart
    /// loses its scenes to a needless re-placement and a gate's players
    /// are kicked; `tessera` refuses a config where it does not. Default
    /// 6000 ms.
    pub restart_grace_ms: u64,
    /// Hand scenes to a scene server that registers while others host at
    /// least two scenes more than it, one planned move at a time. Off, a
    /// server that joins late gets scenes only when they are placed again
    /// (failover) or moved by an operator. Default true.
    pub rebalance: bool,
}

impl Default for ClusterConfig {
    fn default() -> Self {
        Self {
            heartbeat_timeout_ms: 3000,
            busy_population: 1500,
            full_population: 4000,
            restart_grace_ms: 6000,
            rebalance: true,
        }
    }
}

/// A [`ClusterConfig`] that makes no sense.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum ClusterConfigError {
    #[error("heartbeat_timeout_ms must be greater than 0")]
    ZeroHeartbeatTimeout,
    #[error("full_population must be greater than 0")]
    ZeroFull,
    #[error("busy_population ({busy}) must not exceed full_population ({full})")]
    BusyAboveFull { busy: u32, full: u32 },
}

impl ClusterConfig {
    /// Checks the settings, with a message naming the field.
    pub fn validate(&self) -> Result<(), ClusterConfigError> {
        if self.heartbeat_timeout_ms == 0 {
            return Err(ClusterConfigError::ZeroHeartbeatTimeout);
        }
        if self.full_population == 0 {
            return Err(ClusterConfigError::ZeroFull);
        }
        if self.busy_population > self.full_population {
            return Err(ClusterConfigError::BusyAboveFull {
                busy: self.busy_population,
                full: self.full_population,
            });
        }
        Ok(())
    }

    /// The status of a scene with `population` avatars.
    pub fn status_of(&self, population: u32) -> SceneStatus {
        if population >= self.full_population {
            SceneStatus::Full
        } else if population >= self.busy_population {
            SceneStatus::Busy
        } else {
            SceneStatus::Open
        }
    }
}

/// How crowded a scene is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SceneStatus {
    Open,
    Busy,
    Full,
}
