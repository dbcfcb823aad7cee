//! A link's settings ([`LinkConfig`]) and the errors of its operations.

use std::{io, sync::Arc, time::Duration};

use tokio::sync::Semaphore;

use tessera_wire::{MAX_NODE_NAME, PROTOCOL_VERSION, RefuseCode, Role, Secret};

use super::Backoff;
use crate::{
    frame::{DEFAULT_MAX_FRAME, FrameError},
    stats::LinkStats,
};

/// The smallest frame cap a config may set: room for any handshake.
pub const MIN_MAX_FRAME: usize = 256;
/// The largest frame cap a config may set: 64 MiB.
pub const MAX_MAX_FRAME: usize = 64 << 20;
/// [`LinkConfig::idle_timeout`]'s default: five keepalive intervals.
pub const DEFAULT_IDLE_TIMEOUT: Duration = Duration::from_secs(5);
/// [`LinkConfig::keepalive`]'s default.
pub const DEFAULT_KEEPALIVE: Duration = Duration::from_secs(1);

/// Settings of one side of a link: who we are, whom we accept, and the limits.
///
/// Cloning shares [`LinkConfig::stats`]: every link made with a config and
/// its clones counts into the same [`LinkStats`].
#[derive(Debug, Clone)]
pub struct LinkConfig {
    /// Our role, announced in the handshake.
    pub role: Role,
    /// Our node name (1..=64 bytes, no control characters).
    pub node: String,
    /// The cluster secret. Both sides must hold the same one.
    pub secret: Secret,
    /// Roles we accept from the other side. Default: all.
    pub accept_roles: Vec<Role>,
    /// Largest frame payload sent or received, in bytes. Default 1 MiB.
    pub max_frame: usize,
    /// Outbound queue capacity per link, in frames. Default 1024.
    pub send_queue: usize,
    /// Outbound queue capacity per link, in bytes (≥ `max_frame`). Default 8 MiB.
    pub send_queue_bytes: usize,
    /// Inbound queue capacity per link, in decoded messages. Default 1024.
    pub recv_queue: usize,
    /// Inbound queue capacity per link, in frame bytes (≥ `max_frame`).
    /// Default 8 MiB.
    pub recv_queue_bytes: usize,
    /// Time allowed for the whole handshake (and the TCP connect). Default 5 s.
    pub handshake_timeout: Duration,
    /// Most concurrent links a listener serves; more wait in the accept
    /// backlog. Default 1024.
    pub max_links: usize,
    /// How long [`Link::close`](super::Link::close) waits for queued frames
    /// to be written and the peer to hang up. Default 5 s.
    pub linger: Duration,
    /// Close an established link when no frame (keepalives included)
    /// arrives for this long ([`CloseReason::Idle`]). Catches a half-open
    /// link: a peer whose host vanished without a FIN or RST, or a stopped
    /// process. Must be longer than the peer's [`keepalive`](Self::keepalive).
    /// Default 5 s; `None` never times out.
    pub idle_timeout: Option<Duration>,
    /// Send a keepalive frame (an empty payload, never handed to the
    /// application) when nothing else was written for this long, so a quiet
    /// but healthy link never reaches the peer's `idle_timeout`. Must be
    /// shorter than `idle_timeout`. Default 1 s; `None` sends none.
    pub keepalive: Option<Duration>,
    /// Reconnect policy for [`connect_with_backoff`](super::connect_with_backoff) and
    /// [`Connector`](super::Connector).
    pub backoff: Backoff,
    /// Counters of every link made with this config.
    pub stats: Arc<LinkStats>,
}

impl LinkConfig {
    /// A config with every limit at its default.
    pub fn new(role: Role, node: impl Into<String>, secret: impl Into<Secret>) -> Self {
        Self {
            role,
            node: node.into(),
            secret: secret.into(),
            accept_roles: Role::ALL.to_vec(),
            max_frame: DEFAULT_MAX_FRAME,
            send_queue: 1024,
            send_queue_bytes: 8 << 20,
            recv_queue: 1024,
            recv_queue_bytes: 8 << 20,
            handshake_timeout: Duration::from_secs(5),
            max_links: 1024,
            linger: Duration::from_secs(5),
            idle_timeout: Some(DEFAULT_IDLE_TIMEOUT),
            keepalive: Some(DEFAULT_KEEPALIVE),
            backoff: Backoff::default(),
            stats: Arc::new(LinkStats::new()),
        }
    }

    /// Checks every setting; [`serve`](super::serve) and the connect
    /// functions call it.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if !valid_node_name(&self.node) {
            return Err(ConfigError::NodeName(self.node.clone()));
        }
        if self.secret.is_empty() {
            return Err(ConfigError::EmptySecret);
        }
        if self.accept_roles.is_empty() {
            return Err(ConfigError::NoRoles);
        }
        if !(MIN_MAX_FRAME..=MAX_MAX_FRAME).contains(&self.max_frame) {
            return Err(ConfigError::MaxFrame(self.max_frame));
        }
        for (name, bytes) in [
            ("send_queue_bytes", self.send_queue_bytes),
            ("recv_queue_bytes", self.recv_queue_bytes),
        ] {
            if bytes < self.max_frame || bytes > u32::MAX as usize {
                return Err(ConfigError::QueueBytes {
                    name,
                    bytes,
                    max_frame: self.max_frame,
                });
            }
        }
        for (name, v) in [
            ("send_queue", self.send_queue),
            ("recv_queue", self.recv_queue),
            ("max_links", self.max_links),
        ] {
            if v == 0 || v > Semaphore::MAX_PERMITS {
                return Err(ConfigError::Zero(name));
            }
        }
        if self.handshake_timeout.is_zero() {
            return Err(ConfigError::Zero("handshake_timeout"));
        }
        if self.idle_timeout.is_some_and(|t| t.is_zero()) {
            return Err(ConfigError::Zero("idle_timeout"));
        }
        if self.keepalive.is_some_and(|t| t.is_zero()) {
            return Err(ConfigError::Zero("keepalive"));
        }
        if let (Some(keepalive), Some(idle)) = (self.keepalive, self.idle_timeout)
            && keepalive >= idle
        {
            return Err(ConfigError::KeepaliveNotBelowIdle { keepalive, idle });
        }
        self.backoff.validate()
    }
}

/// How a link notices a silent peer ([`LinkConfig::keepalive`] and
/// [`LinkConfig::idle_timeout`]) and how long a lost one may wait to
/// reconnect (the cap of [`LinkConfig::backoff`]), chosen once per process
/// (`[links]` in `tessera.toml`) and applied to every link config it makes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LinkTimeouts {
    /// See [`LinkConfig::keepalive`]. Default 1 s.
    pub keepalive: Option<Duration>,
    /// See [`LinkConfig::idle_timeout`]. Default 5 s.
    pub idle_timeout: Option<Duration>,
    /// The cap on the reconnect backoff ([`Backoff::max`](super::Backoff)):
    /// a peer that comes back is found at most this late. Default 5 s.
    pub reconnect_max: Duration,
}

impl Default for LinkTimeouts {
    fn default() -> Self {
        Self {
            keepalive: Some(DEFAULT_KEEPALIVE),
            idle_timeout: Some(DEFAULT_IDLE_TIMEOUT),
            reconnect_max: super::Backoff::default().max,
        }
    }
}

impl LinkTimeouts {
    /// Sets `cfg`'s keepalive, idle timeout and backoff cap (the first
    /// delay no longer than the cap).
    pub fn apply(&self, cfg: &mut LinkConfig) {
        cfg.keepalive = self.keepalive;
        cfg.idle_timeout = self.idle_timeout;
        cfg.backoff.max = self.reconnect_max;
        cfg.backoff.initial = cfg.backoff.initial.min(self.reconnect_max);
    }
}

/// A setting out of range.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConfigError {
    #[error("node name {0:?} must be 1..={MAX_NODE_NAME} bytes without control characters")]
    NodeName(String),
    #[error("the cluster secret is empty")]
    EmptySecret,
    #[error("accept_roles is empty: no peer could ever connect")]
    NoRoles,
    #[error("max_frame {0} is outside {MIN_MAX_FRAME}..={MAX_MAX_FRAME}")]
    MaxFrame(usize),
    #[error("{name} {bytes} must be at least max_frame ({max_frame}) and fit in a u32")]
    QueueBytes {
        name: &'static str,
        bytes: usize,
        max_frame: usize,
    },
    #[error("{0} must be greater than zero")]
    Zero(&'static str),
    #[error("backoff: {0}")]
    Backoff(&'static str),
    #[error(
        "keepalive ({keepalive:?}) must be shorter than idle_timeout ({idle:?}), \
         or a quiet link would time out"
    )]
    KeepaliveNotBelowIdle { keepalive: Duration, idle: Duration },
}

pub(super) fn valid_node_name(name: &str) -> bool {
    !name.is_empty() && name.len() <= MAX_NODE_NAME && !name.chars().any(char::is_control)
}

/// Why a link closed. The first reason recorded wins.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CloseReason {
    #[error("the peer closed the link")]
    PeerClosed,
    #[error("closed locally")]
    Local,
    #[error("shutting down")]
    Shutdown,
    #[error("undecodable frame: {0}")]
    Decode(String),
    #[error("frame of {len} bytes exceeds the {max}-byte limit")]
    Oversized { len: u64, max: usize },
    #[error("the stream ended inside a frame")]
    Truncated,
    #[error("nothing received for {0:?}")]
    Idle(Duration),
    #[error("i/o error: {0}")]
    Io(String),
}

impl CloseReason {
    /// Whether the close was caused by bad input or a failure, rather than an
    /// orderly end.
    pub fn is_error(&self) -> bool {
        !matches!(self, Self::PeerClosed | Self::Local | Self::Shutdown)
    }
}

/// A handshake failed.
#[derive(Debug, thiserror::Error)]
pub enum HandshakeError {
    #[error("no handshake within {0:?}")]
    Timeout(Duration),
    #[error("the peer closed the connection during the handshake")]
    PeerClosed,
    #[error("handshake frame: {0}")]
    Frame(#[from] FrameError),
    #[error("malformed handshake: {0}")]
    Malformed(String),
    #[error("peer speaks protocol version {theirs}, this node {PROTOCOL_VERSION}")]
    Version { theirs: u16 },
    #[error("the peer's proof of the cluster secret does not match")]
    Secret,
    #[error("no randomness for a nonce: {0}")]
    Random(String),
    #[error("peer role {0} is not accepted")]
    Role(Role),
    #[error("refused by the peer ({code}): {reason}")]
    Refused { code: RefuseCode, reason: String },
}

impl HandshakeError {
    /// Whether trying again later might succeed (the peer may be restarting)
    /// as opposed to a refusal that will repeat until a config changes.
    pub fn is_transient(&self) -> bool {
        match self {
            Self::Timeout(_) | Self::PeerClosed | Self::Frame(_) | Self::Random(_) => true,
            Self::Refused { code, .. } => matches!(code, RefuseCode::Timeout | RefuseCode::Other),
            Self::Malformed(_) | Self::Version { .. } | Self::Secret | Self::Role(_) => false,
        }
    }

    /// What to tell the peer, if anything.
    pub(super) fn refusal(&self, cfg: &LinkConfig) -> Option<(RefuseCode, String)> {
        Some(match self {
            Self::Timeout(t) => (
                RefuseCode::Timeout,
                format!("handshake not completed within {t:?}"),
            ),
            Self::Version { .. } => (
                RefuseCode::Version,
                format!("{} speaks protocol version {PROTOCOL_VERSION}", cfg.node),
            ),
            Self::Secret => (RefuseCode::Secret, "cluster secret does not match".into()),
            Self::Role(r) => (
                RefuseCode::Role,
                format!("{} does not accept {r} links", cfg.node),
            ),
            Self::Malformed(m) => (RefuseCode::Malformed, m.clone()),
            Self::Frame(FrameError::Oversized { len, max }) => (
                RefuseCode::Malformed,
                format!("handshake frame of {len} bytes exceeds the {max}-byte limit"),
            ),
            Self::Frame(_) | Self::PeerClosed | Self::Refused { .. } | Self::Random(_) => {
                return None;
            }
        })
    }
}

/// Connecting failed.
#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    #[error("invalid link config: {0}")]
    Config(#[from] ConfigError),
    #[error("connect: {0}")]
    Io(#[from] io::Error),
    #[error("connect timed out after {0:?}")]
    Timeout(Duration),
    #[error("handshake: {0}")]
    Handshake(#[from] HandshakeError),
    #[error("gave up after {attempts} attempts; last error: {last}")]
    GaveUp {
        attempts: u32,
        #[source]
        last: Box<ConnectError>,
    },
}

impl ConnectError {
    /// Whether [`Connector`](super::Connector) retries after this error.
    pub fn is_transient(&self) -> bool {
        match self {
            Self::Io(_) | Self::Timeout(_) => true,
            Self::Handshake(h) => h.is_transient(),
            Self::Config(_) | Self::GaveUp { .. } => false,
        }
    }
}

/// Sending a message failed. Nothing was queued.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SendError {
    #[error("message of {len} bytes exceeds the {max}-byte frame limit")]
    TooLarge { len: usize, max: usize },
    #[error("send queue full: message dropped")]
    QueueFull,
    #[error("link closed")]
    Closed,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn configs_are_validated() {
        let ok = LinkConfig::new(Role::Coordinator, "coord", "secret");
        assert_eq!(ok.validate(), Ok(()));
        let mut c = ok.clone();
        c.node = String::new();
        assert!(matches!(c.validate(), Err(ConfigError::NodeName(_))));
        let mut c = ok.clone();
        c.node = "a\nb".into();
        assert!(matches!(c.validate(), Err(ConfigError::NodeName(_))));
        let mut c = ok.clone();
        c.secret = Secret::default();
        assert_eq!(c.validate(), Err(ConfigError::EmptySecret));
        let mut c = ok.clone();
        c.max_frame = 10;
        assert_eq!(c.validate(), Err(ConfigError::MaxFrame(10)));
        let mut c = ok.clone();
        c.send_queue_bytes = c.max_frame - 1;
        assert!(matches!(
            c.validate(),
            Err(ConfigError::QueueBytes {
                name: "send_queue_bytes",
                ..
            })
        ));
        let mut c = ok.clone();
        c.send_queue = 0;
        assert_eq!(c.validate(), Err(ConfigError::Zero("send_queue")));
        let mut c = ok.clone();
        c.accept_roles.clear();
        assert_eq!(c.validate(), Err(ConfigError::NoRoles));
        let mut c = ok.clone();
        c.backoff.max = Duration::ZERO;
        assert!(matches!(c.validate(), Err(ConfigError::Backoff(_))));
        let mut c = ok.clone();
        c.keepalive = Some(Duration::ZERO);
        assert_eq!(c.validate(), Err(ConfigError::Zero("keepalive")));
        let mut c = ok;
        c.keepalive = c.idle_timeout;
        assert!(matches!(
            c.validate(),
            Err(ConfigError::KeepaliveNotBelowIdle { .. })
        ));
    }

    /// Every link notices a half-open peer by default, and a quiet healthy
    /// one keeps itself alive well within the peer's timeout.
    #[test]
    fn links_time_out_and_keep_alive_by_default() {
        let c = LinkConfig::new(Role::Gate, "gate", "secret");
        let (Some(idle), Some(keepalive)) = (c.idle_timeout, c.keepalive) else {
            panic!(
                "idle timeout {:?}, keepalive {:?}",
                c.idle_timeout, c.keepalive
            );
        };
        assert!(keepalive * 3 <= idle, "{keepalive:?} vs {idle:?}");
        assert_eq!(c.validate(), Ok(()));
    }
}
