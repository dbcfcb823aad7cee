//! The gate process's settings: [`GateServerConfig`], the `[gate]` section
//! of `tessera.toml`.

use std::net::{IpAddr, SocketAddr};

/// The gate's settings (the `[gate]` section of `tessera.toml`).
#[derive(Debug, Clone, PartialEq, serde::Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct GateServerConfig {
    /// The coordinator's link address. Default `127.0.0.1:7000`.
    pub coordinator: String,
    /// Node name, unique in the cluster. Default `gate-<pid>`.
    pub name: String,
    /// First UDP listener address. Default `127.0.0.1:7300`.
    pub listen: String,
    /// UDP listeners (on consecutive ports from `listen`, or each on a free
    /// port when `listen` has port 0); netcode takes 1024 clients per
    /// listener. Default 3.
    pub listeners: u16,
    /// A client silent for this long is disconnected, ms. Default 30000.
    pub idle_timeout_ms: u64,
    /// A client that has not completed its session this long after
    /// connecting is disconnected, ms. Default 10000.
    pub open_timeout_ms: u64,
    /// Heartbeat period, ms. Default 500.
    pub heartbeat_ms: u32,
    /// Largest message a client may send, bytes. Default 1024.
    pub max_message_bytes: usize,
    /// Kernel receive and send buffer per UDP listener, bytes; 0 keeps the
    /// kernel's default. Default 4 MiB (Linux grants at most
    /// `net.core.rmem_max`). The kernel's ~208 KiB default overflows when
    /// the gate is busy for a few milliseconds.
    pub socket_buffer_bytes: usize,
    /// Where to serve `/metrics`, `/livez` and `/readyz` over HTTP
    /// (`host:port`). Default: nowhere.
    pub metrics: Option<String>,
    /// Per-source and per-session limits (`[gate.limits]`).
    pub limits: GateLimits,
    /// Keepalives and idle timeout of every link (from `[links]`).
    #[serde(skip)]
    pub links: tessera_link::LinkTimeouts,
    /// The game's protocol: which actions clients may send, their sizes and
    /// rates. Set by the game's binary.
    #[serde(skip)]
    pub game: tessera_proto::GameSchema,
}

/// What one source address or one session may ask of the gate (the
/// `[gate.limits]` section of `tessera.toml`).
#[derive(Debug, Clone, PartialEq, serde::Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct GateLimits {
    /// Handshake datagrams per source address (IPv6: per /64) per second,
    /// per listener; a netcode client sends a few per connect. Default 20.
    pub handshake_per_source_per_s: u32,
    /// Burst of `handshake_per_source_per_s`. Default 40.
    pub handshake_per_source_burst: u32,
    /// Sources exempt from the per-source handshake limit (the listener's
    /// still applies): bots and tools on this host. Default loopback
    /// (`127.0.0.1`, `::1`).
    pub trusted_ips: Vec<String>,
    /// Chat lines a session may say per minute (scene, global and whisper
    /// alike); past it a line is refused and the client told
    /// `rate_limited`. Default 30.
    pub chat_per_minute: u32,
    /// Chat lines a session may say at once. Default 5.
    pub chat_burst: u32,
    /// Chat lines a client is sent per second at most; the rest are shed
    /// (counted). No one reads faster, and it bounds a crowd's fan-out.
    /// Default 10.
    pub chat_received_per_s: u32,
    /// Burst of `chat_received_per_s`. Default 20.
    pub chat_received_burst: u32,
    /// Channel lines a session may say per second (each also counts as a
    /// chat line); past it a line is refused and the client told
    /// `rate_limited`. Default 1.
    pub channel_lines_per_s: u32,
    /// Channel lines a session may say at once. Default 3.
    pub channel_lines_burst: u32,
    /// Avatar list requests per session per minute (each reads the
    /// database under the coordinator's lock). Default 20.
    pub avatar_lists_per_minute: u32,
    /// Burst of `avatar_lists_per_minute`. Default 5.
    pub avatar_lists_burst: u32,
    /// Avatar creations per session per minute (each a durable write under
    /// the coordinator's lock). Default 6.
    pub avatar_creations_per_minute: u32,
    /// Burst of `avatar_creations_per_minute`. Default 3.
    pub avatar_creations_burst: u32,
}

impl Default for GateLimits {
    fn default() -> Self {
        Self {
            handshake_per_source_per_s: 20,
            handshake_per_source_burst: 40,
            trusted_ips: vec!["127.0.0.1".into(), "::1".into()],
            chat_per_minute: 30,
            chat_burst: 5,
            chat_received_per_s: 10,
            chat_received_burst: 20,
            channel_lines_per_s: 1,
            channel_lines_burst: 3,
            avatar_lists_per_minute: 20,
            avatar_lists_burst: 5,
            avatar_creations_per_minute: 6,
            avatar_creations_burst: 3,
        }
    }
}

impl GateLimits {
    /// Checks every field; the message names it.
    pub fn validate(&self) -> Result<(), String> {
        for (name, v) in [
            (
                "handshake_per_source_per_s",
                self.handshake_per_source_per_s,
            ),
            (
                "handshake_per_source_burst",
                self.handshake_per_source_burst,
            ),
        ] {
            if v == 0 {
                return Err(format!("gate.limits.{name} must be above zero"));
            }
        }
        self.trusted().map(|_| ())
    }

    /// `trusted_ips`, parsed.
    pub fn trusted(&self) -> Result<Vec<IpAddr>, String> {
        self.trusted_ips
            .iter()
            .map(|s| {
                s.parse()
                    .map_err(|_| format!("gate.limits.trusted_ips: {s:?} is not an IP address"))
            })
            .collect()
    }
}

impl Default for GateServerConfig {
    fn default() -> Self {
        Self {
            coordinator: "127.0.0.1:7000".into(),
            name: String::new(),
            listen: "127.0.0.1:7300".into(),
            listeners: 3,
            idle_timeout_ms: 30_000,
            open_timeout_ms: 10_000,
            heartbeat_ms: 500,
            max_message_bytes: 1024,
            socket_buffer_bytes: 4 << 20,
            metrics: None,
            limits: GateLimits::default(),
            links: tessera_link::LinkTimeouts::default(),
            game: tessera_proto::GameSchema::new("default"),
        }
    }
}

impl GateServerConfig {
    pub fn node_name(&self) -> String {
        if self.name.is_empty() {
            format!("gate-{}", std::process::id())
        } else {
            self.name.clone()
        }
    }

    /// Checks every field; the message names it.
    pub fn validate(&self) -> Result<(), String> {
        let first: SocketAddr = self.listen.parse().map_err(|_| {
            format!(
                "gate.listen {:?} is not an address (host:port)",
                self.listen
            )
        })?;
        if !(1..=64).contains(&self.listeners) {
            return Err("gate.listeners must be between 1 and 64".into());
        }
        if first.port() != 0 && u32::from(first.port()) + u32::from(self.listeners) > 65_536 {
            return Err("gate.listen: not enough ports above it for gate.listeners".into());
        }
        if self.coordinator.trim().is_empty() {
            return Err("gate.coordinator must not be empty".into());
        }
        if self.idle_timeout_ms < 1000 || self.open_timeout_ms < 1000 {
            return Err("gate.idle_timeout_ms and gate.open_timeout_ms must be ≥ 1000".into());
        }
        if !(10..=60_000).contains(&self.heartbeat_ms) {
            return Err("gate.heartbeat_ms must be between 10 and 60000".into());
        }
        if !(64..=16_384).contains(&self.max_message_bytes) {
            return Err("gate.max_message_bytes must be between 64 and 16384".into());
        }
        if self.socket_buffer_bytes > 1 << 30 {
            return Err(
                "gate.socket_buffer_bytes must be at most 1 GiB (0 keeps the kernel's)".into(),
            );
        }
        self.limits.validate()?;
        let name = self.node_name();
        if !tessera_wire::is_config_node_name(&name) {
            return Err(format!("gate.name {name:?} is invalid"));
        }
        if let Some(m) = &self.metrics
            && m.parse::<SocketAddr>().is_err()
        {
            return Err(format!("gate.metrics {m:?} is not an address (host:port)"));
        }
        Ok(())
    }

    pub(super) fn addrs(&self) -> Vec<SocketAddr> {
        let Ok(first) = self.listen.parse::<SocketAddr>() else {
            return Vec::new();
        };
        (0..self.listeners)
            .map(|i| {
                let mut a = first;
                if first.port() != 0 {
                    a.set_port(first.port() + i);
                }
                a
            })
            .collect()
    }
}
