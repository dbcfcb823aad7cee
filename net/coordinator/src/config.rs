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
    /// HTTP API: login, status, metrics, and the admin API unless
    /// `admin_http` gives it a listener of its own. Default `127.0.0.1:7080`.
    pub http: String,
    /// A listener of its own for the admin API (kick, ban, scene snapshots,
    /// the live map): set, `http` serves none of it. Default none.
    pub admin_http: Option<String>,
    /// The admin API's bearer token: its own credential, never the cluster
    /// secret. Default: a development token, allowed only while the admin
    /// API listens on loopback. `TESSERA_ADMIN_TOKEN` overrides the file.
    pub admin_token: AdminToken,
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
    /// Bounds of the channels games create (`[coordinator.channels]`).
    pub channels: ChannelLimits,
    /// Keepalives and idle timeout of every link (from `[links]`).
    #[serde(skip)]
    pub links: tessera_link::LinkTimeouts,
    /// The game's protocol: a login must carry its hash, and
    /// `GET /v1/protocol` serves it. Set by the game's binary.
    #[serde(skip)]
    pub game: tessera_proto::GameSchema,
}

/// Bounds of the channels games create: what the coordinator holds for
/// them stays under `max_channels × max_members` memberships.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ChannelLimits {
    /// Channels at once, in the whole cluster. Default 10 000.
    pub max_channels: u32,
    /// Members of one channel. Default 100.
    pub max_members: u32,
    /// Channels one avatar belongs to at once. Default 16.
    pub max_per_avatar: u32,
}

impl Default for ChannelLimits {
    fn default() -> Self {
        Self {
            max_channels: 10_000,
            max_members: 100,
            max_per_avatar: 16,
        }
    }
}

impl Default for CoordinatorConfig {
    fn default() -> Self {
        Self {
            listen: "127.0.0.1:7000".into(),
            http: "127.0.0.1:7080".into(),
            admin_http: None,
            admin_token: AdminToken::default(),
            data: PathBuf::from("./data"),
            heartbeat_ms: 500,
            tick_ms: 100,
            password_hash_threads: 0,
            login: login::LoginConfig::default(),
            channels: ChannelLimits::default(),
            links: tessera_link::LinkTimeouts::default(),
            game: tessera_proto::GameSchema::new("default"),
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
    #[error("coordinator.admin_http {0:?} is not an address (host:port)")]
    AdminHttp(String),
    #[error("coordinator.admin_token must be at least {MIN_ADMIN_TOKEN} characters")]
    AdminTokenShort,
    #[error(
        "no coordinator.admin_token configured and the admin API listens on {0}, which is not \
         loopback: set coordinator.admin_token or TESSERA_ADMIN_TOKEN"
    )]
    DevAdminToken(String),
    #[error("coordinator.admin_token must not be the cluster secret: give the admin API its own")]
    AdminTokenIsSecret,
    #[error("{0}")]
    Login(String),
    #[error("coordinator.channels: max_channels, max_members and max_per_avatar must be above 0")]
    Channels,
}

/// The admin token used when none is configured; refused unless the admin
/// API listens on loopback.
pub const DEV_ADMIN_TOKEN: &str = "tessera-development-admin-token";

/// The shortest admin token accepted.
const MIN_ADMIN_TOKEN: usize = 16;

/// The admin API's bearer token. Never printed: `Debug` hides it.
#[derive(Clone, Default, PartialEq, Eq, serde::Deserialize)]
#[serde(transparent)]
pub struct AdminToken(String);

impl AdminToken {
    pub fn new(token: impl Into<String>) -> Self {
        Self(token.into())
    }

    /// Whether one is configured (else [`DEV_ADMIN_TOKEN`] is used).
    pub fn is_set(&self) -> bool {
        !self.0.is_empty()
    }

    /// The token a client sends: the configured one, or [`DEV_ADMIN_TOKEN`].
    pub fn get(&self) -> &str {
        if self.0.is_empty() {
            DEV_ADMIN_TOKEN
        } else {
            &self.0
        }
    }
}

impl std::fmt::Debug for AdminToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(if self.is_set() {
            "AdminToken(<hidden>)"
        } else {
            "AdminToken(<development>)"
        })
    }
}

impl CoordinatorConfig {
    /// Checks the settings against each other and the cluster's.
    pub fn validate(&self, cluster: &ClusterConfig) -> Result<(), CoordinatorConfigError> {
        if self.listen.parse::<SocketAddr>().is_err() {
            return Err(CoordinatorConfigError::Listen(self.listen.clone()));
        }
        let Ok(http) = self.http.parse::<SocketAddr>() else {
            return Err(CoordinatorConfigError::Http(self.http.clone()));
        };
        let admin = match &self.admin_http {
            None => http,
            Some(a) => a
                .parse::<SocketAddr>()
                .map_err(|_| CoordinatorConfigError::AdminHttp(a.clone()))?,
        };
        if !self.admin_token.is_set() && !admin.ip().is_loopback() {
            return Err(CoordinatorConfigError::DevAdminToken(admin.to_string()));
        }
        if self.admin_token.is_set() && self.admin_token.0.len() < MIN_ADMIN_TOKEN {
            return Err(CoordinatorConfigError::AdminTokenShort);
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
        let c = &self.channels;
        if c.max_channels == 0 || c.max_members == 0 || c.max_per_avatar == 0 {
            return Err(CoordinatorConfigError::Channels);
        }
        if u64::from(self.heartbeat_ms) >= cluster.heartbeat_timeout_ms {
            return Err(CoordinatorConfigError::HeartbeatAboveTimeout {
                heartbeat: self.heartbeat_ms,
                timeout: cluster.heartbeat_timeout_ms,
            });
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(c: CoordinatorConfig) -> Result<(), CoordinatorConfigError> {
        c.validate(&ClusterConfig::default())
    }

    #[test]
    fn the_development_admin_token_is_loopback_only() {
        assert_eq!(check(CoordinatorConfig::default()), Ok(()));
        let public = CoordinatorConfig {
            http: "0.0.0.0:7080".into(),
            ..CoordinatorConfig::default()
        };
        assert_eq!(
            check(public.clone()),
            Err(CoordinatorConfigError::DevAdminToken("0.0.0.0:7080".into()))
        );
        // The admin API on its own loopback listener: the public one may be anywhere.
        let split = CoordinatorConfig {
            admin_http: Some("127.0.0.1:7081".into()),
            ..public.clone()
        };
        assert_eq!(check(split), Ok(()));
        let set = CoordinatorConfig {
            admin_token: AdminToken::new("an-operator-token-of-length"),
            ..public
        };
        assert_eq!(check(set.clone()), Ok(()));
        assert_eq!(
            check(CoordinatorConfig {
                admin_token: AdminToken::new("short"),
                ..set.clone()
            }),
            Err(CoordinatorConfigError::AdminTokenShort)
        );
        let e = check(CoordinatorConfig {
            admin_http: Some("nowhere".into()),
            ..set
        })
        .expect_err("not an address");
        assert!(e.to_string().contains("coordinator.admin_http"), "{e}");
    }

    #[test]
    fn the_admin_token_is_never_printed() {
        let c = CoordinatorConfig {
            admin_token: AdminToken::new("do-not-print-this-token"),
            ..CoordinatorConfig::default()
        };
        assert!(!format!("{c:?}").contains("do-not-print"));
    }
}
