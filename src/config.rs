//! `tessera.toml`: one file for every role. Every setting has a default;
//! values are validated with messages that name the setting; command-line
//! flags override the file.
//!
//! ```toml
//! secret = "a long random string"   # shared by every process of a cluster
//! scenes_dir = "assets/scenes"      # default: see `scenes::scenes_dir`
//! log_format = "text"               # or "json"; `--log-format` overrides it
//!
//! [coordinator]   # tessera_coordinator::CoordinatorConfig
//! listen = "127.0.0.1:7000"
//! http = "127.0.0.1:7080"
//! data = "./data"
//! admin_token = "another long random string"  # the admin API's bearer token
//! # admin_http = "127.0.0.1:7081"  # the admin API on a listener of its own
//!
//! [cluster]       # tessera_cluster::ClusterConfig
//! heartbeat_timeout_ms = 3000
//!
//! [scene]         # tessera_scene_server::SceneServerConfig
//! coordinator = "127.0.0.1:7000"
//! walkers = 0
//! # metrics = "127.0.0.1:9100"   # /metrics, /livez, /readyz
//!
//! [gate]          # tessera_gate::server::GateServerConfig
//! listen = "127.0.0.1:7300"
//! listeners = 3
//!
//! [links]       # every internal link of the process (tessera_link)
//! keepalive_ms = 1000
//! idle_timeout_ms = 5000
//! reconnect_max_ms = 5000    # cluster.restart_grace_ms must cover it
//!
//! [up]
//! scene_servers = 1
//! ```

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use tessera_cluster::ClusterConfig;
use tessera_coordinator::CoordinatorConfig;
use tessera_gate::server::GateServerConfig;
use tessera_scene_server::SceneServerConfig;
use tessera_sim::SceneDef;
use tessera_wire::Secret;

/// The development secret used when none is configured. Refused on any
/// address that is not loopback.
pub const DEV_SECRET: &str = "tessera-development-secret";

/// The config file read when `--config` is not given, if it exists.
pub const DEFAULT_FILE: &str = "tessera.toml";

#[derive(Debug, Clone, Default, serde::Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// The cluster secret every process must share. Default: a development
    /// secret, allowed on loopback only. `TESSERA_SECRET` overrides the file.
    pub secret: String,
    /// Folder of scene definitions. Default: `$TESSERA_ASSETS/scenes`, else
    /// `./assets/scenes`.
    pub scenes_dir: Option<PathBuf>,
    /// Log lines as `text` (default) or `json`, for the cluster roles;
    /// `--log-format` overrides it.
    pub log_format: Option<crate::cli::LogFormat>,
    pub coordinator: CoordinatorConfig,
    pub cluster: ClusterConfig,
    pub scene: SceneServerConfig,
    pub gate: GateServerConfig,
    pub links: LinksConfig,
    pub up: UpConfig,
}

/// `[links]`: how every internal link of the process notices a silent
/// peer (see `docs/links.md`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LinksConfig {
    /// Send a keepalive after this long without writing anything, ms; 0 =
    /// never. Default 1000.
    pub keepalive_ms: u64,
    /// Close a link on which nothing arrives for this long, ms; 0 = never.
    /// Must be above `keepalive_ms` (the peer's). Default 5000.
    pub idle_timeout_ms: u64,
    /// The cap on a lost link's reconnect backoff, ms: a peer that comes
    /// back (a restarted coordinator) is found at most this late. The
    /// coordinator's `cluster.restart_grace_ms` must cover it. Default 5000.
    pub reconnect_max_ms: u64,
}

impl Default for LinksConfig {
    fn default() -> Self {
        Self {
            keepalive_ms: 1000,
            idle_timeout_ms: 5000,
            reconnect_max_ms: 5000,
        }
    }
}

/// What `cluster.restart_grace_ms` must leave beyond `links.reconnect_max_ms`:
/// the reconnect's handshake, then the registrations and the gates' session
/// replays.
const RESTART_GRACE_SLACK_MS: u64 = 1000;

impl LinksConfig {
    fn validate(&self) -> anyhow::Result<()> {
        for (name, ms) in [
            ("keepalive_ms", self.keepalive_ms),
            ("idle_timeout_ms", self.idle_timeout_ms),
        ] {
            if ms != 0 && !(10..=600_000).contains(&ms) {
                bail!("links.{name} must be 0 (off) or between 10 and 600000");
            }
        }
        if !(10..=600_000).contains(&self.reconnect_max_ms) {
            bail!("links.reconnect_max_ms must be between 10 and 600000");
        }
        if self.keepalive_ms != 0
            && self.idle_timeout_ms != 0
            && self.keepalive_ms >= self.idle_timeout_ms
        {
            bail!(
                "links.keepalive_ms ({}) must be below links.idle_timeout_ms ({}), \
                 or a quiet link would time out",
                self.keepalive_ms,
                self.idle_timeout_ms
            );
        }
        Ok(())
    }

    fn timeouts(&self) -> tessera_link::LinkTimeouts {
        let ms = |v: u64| (v != 0).then(|| std::time::Duration::from_millis(v));
        tessera_link::LinkTimeouts {
            keepalive: ms(self.keepalive_ms),
            idle_timeout: ms(self.idle_timeout_ms),
            reconnect_max: std::time::Duration::from_millis(self.reconnect_max_ms),
        }
    }
}

/// `[up]`: the all-in-one cluster.
#[derive(Debug, Clone, PartialEq, Eq, serde::Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct UpConfig {
    /// Scene servers started in the process. Default 1.
    pub scene_servers: u32,
}

impl Default for UpConfig {
    fn default() -> Self {
        Self { scene_servers: 1 }
    }
}

impl Config {
    /// Reads `path`, or `./tessera.toml` if it exists, or the defaults.
    pub fn load(path: Option<&Path>) -> anyhow::Result<Self> {
        let mut config = match path {
            Some(p) => Self::from_file(p)?,
            None if Path::new(DEFAULT_FILE).is_file() => Self::from_file(Path::new(DEFAULT_FILE))?,
            None => Self::default(),
        };
        if let Ok(secret) = std::env::var("TESSERA_SECRET") {
            config.secret = secret;
        }
        if let Ok(token) = std::env::var("TESSERA_ADMIN_TOKEN") {
            config.coordinator.admin_token = tessera_coordinator::AdminToken::new(token);
        }
        Ok(config)
    }

    fn from_file(path: &Path) -> anyhow::Result<Self> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("cannot read config file {}", path.display()))?;
        Self::parse(&path.display().to_string(), &text)
    }

    /// Parses a config; `origin` names it in errors.
    pub fn parse(origin: &str, text: &str) -> anyhow::Result<Self> {
        let mut config: Self =
            toml::from_str(text).map_err(|e| anyhow::anyhow!("config {origin}: {e}"))?;
        let links = config.links.timeouts();
        config.coordinator.links = links;
        config.scene.links = links;
        config.gate.links = links;
        Ok(config)
    }

    /// The cluster secret (the development one when unset).
    pub fn secret(&self) -> Secret {
        if self.secret.is_empty() {
            Secret::new(DEV_SECRET)
        } else {
            Secret::new(self.secret.as_bytes().to_vec())
        }
    }

    /// The coordinator's admin API as a base URL: `admin_http` if it has
    /// a listener of its own, else `http`.
    pub fn admin_url(&self) -> String {
        let c = &self.coordinator;
        format!("http://{}", c.admin_http.as_deref().unwrap_or(&c.http))
    }

    /// The scene folder.
    pub fn scenes_dir(&self) -> PathBuf {
        self.scenes_dir
            .clone()
            .unwrap_or_else(crate::scenes::scenes_dir)
    }

    /// Checks every setting a role uses; `addrs` are the addresses it will
    /// listen on or connect to (the development secret is refused on
    /// anything but loopback).
    pub fn validate(&self, addrs: &[&str]) -> anyhow::Result<()> {
        self.cluster.validate().context("[cluster]")?;
        self.coordinator
            .validate(&self.cluster)
            .context("[coordinator]")?;
        self.scene.validate().context("[scene]")?;
        self.gate
            .validate()
            .map_err(|e| anyhow::anyhow!("[gate] {e}"))?;
        self.links.validate().context("[links]")?;
        self.restart_grace_covers_backoff()?;
        if self.up.scene_servers == 0 || self.up.scene_servers > 16 {
            bail!("[up] scene_servers must be between 1 and 16");
        }
        if self.secret.is_empty() {
            for a in addrs {
                if !is_loopback(a) {
                    bail!(
                        "no cluster secret configured and {a} is not a loopback address: \
                         set `secret` in tessera.toml or TESSERA_SECRET"
                    );
                }
            }
        } else if self.secret.len() < 16 {
            bail!("secret must be at least 16 characters");
        }
        Ok(())
    }

    /// After a coordinator restart, scene servers and gates reconnect up
    /// to `links.reconnect_max_ms` late (their backoff grew while it was
    /// down); the restart grace must outlast that, or their scenes are
    /// placed again elsewhere and their players' sessions refused.
    fn restart_grace_covers_backoff(&self) -> anyhow::Result<()> {
        let grace = self.cluster.restart_grace_ms;
        let backoff = self.links.reconnect_max_ms;
        let need = backoff.saturating_add(RESTART_GRACE_SLACK_MS);
        if grace < need {
            bail!(
                "cluster.restart_grace_ms ({grace}) must be at least links.reconnect_max_ms \
                 ({backoff}) + {RESTART_GRACE_SLACK_MS} = {need}: after a coordinator restart, \
                 scene servers and gates reconnect up to links.reconnect_max_ms late, and \
                 would lose their scenes and sessions; raise the grace or lower the backoff"
            );
        }
        Ok(())
    }

    /// Every scene definition in the scene folder, by name.
    pub fn scene_defs(&self) -> anyhow::Result<BTreeMap<String, SceneDef>> {
        let dir = self.scenes_dir();
        let mut paths: Vec<PathBuf> = std::fs::read_dir(&dir)
            .with_context(|| format!("cannot read scene folder {}", dir.display()))?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|x| x == "toml"))
            .collect();
        paths.sort();
        let mut defs = BTreeMap::new();
        for p in paths {
            let def = crate::scenes::load(&p.display().to_string())?;
            if let Some(old) = defs.insert(def.name.clone(), def) {
                bail!(
                    "two scene files in {} are named {:?}",
                    dir.display(),
                    old.name
                );
            }
        }
        if defs.is_empty() {
            bail!("no scene files (*.toml) in {}", dir.display());
        }
        Ok(defs)
    }
}

/// Whether `addr` (host:port, or a URL) names a loopback host.
fn is_loopback(addr: &str) -> bool {
    let host_port = addr
        .split("://")
        .nth(1)
        .unwrap_or(addr)
        .split('/')
        .next()
        .unwrap_or("");
    if let Ok(sa) = host_port.parse::<std::net::SocketAddr>() {
        return sa.ip().is_loopback();
    }
    let host = host_port.rsplit_once(':').map_or(host_port, |(h, _)| h);
    host == "localhost"
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid_on_loopback() {
        let c = Config::parse("test", "").expect("empty config");
        c.validate(&["127.0.0.1:7000", "http://127.0.0.1:7080"])
            .expect("valid");
        assert_eq!(c.coordinator.listen, "127.0.0.1:7000");
        assert_eq!(c.up.scene_servers, 1);
    }

    #[test]
    fn errors_name_the_setting() {
        let e = Config::parse("t.toml", "[coordinator]\nlisten = 7").expect_err("type");
        assert!(format!("{e:#}").contains("t.toml"), "{e:#}");
        let e = Config::parse("t.toml", "[scene]\nwalkerz = 7").expect_err("unknown key");
        assert!(format!("{e:#}").contains("walkerz"), "{e:#}");
        let c = Config::parse(
            "t.toml",
            "[cluster]\nbusy_population = 900\nfull_population = 10",
        )
        .expect("parses");
        let e = c.validate(&[]).expect_err("busy above full");
        assert!(format!("{e:#}").contains("busy_population"), "{e:#}");
        let c = Config::parse("t.toml", "[coordinator]\nlisten = \"nowhere\"").expect("parses");
        let e = c.validate(&[]).expect_err("bad address");
        assert!(format!("{e:#}").contains("coordinator.listen"), "{e:#}");
        let c = Config::parse("t.toml", "[scene]\naoi_radius = -1.0").expect("parses");
        assert!(c.validate(&[]).is_err());
        let c = Config::parse("t.toml", "[links]\nkeepalive_ms = 6000").expect("parses");
        let e = c.validate(&[]).expect_err("keepalive above idle");
        assert!(format!("{e:#}").contains("links.keepalive_ms"), "{e:#}");
    }

    /// `[links]` reaches every role's link configs.
    #[test]
    fn link_timeouts_apply_to_every_role() {
        let c =
            Config::parse("t", "[links]\nkeepalive_ms = 200\nidle_timeout_ms = 0").expect("parses");
        c.validate(&[]).expect("valid");
        let want = tessera_link::LinkTimeouts {
            keepalive: Some(std::time::Duration::from_millis(200)),
            idle_timeout: None,
            reconnect_max: std::time::Duration::from_millis(5000),
        };
        assert_eq!(
            (c.coordinator.links, c.scene.links, c.gate.links),
            (want, want, want)
        );
        let d = Config::parse("t", "").expect("parses");
        assert_eq!(d.scene.links, tessera_link::LinkTimeouts::default());
    }

    /// The restart grace covers the links' reconnect backoff: a config
    /// that does not is refused, naming both settings.
    #[test]
    fn the_restart_grace_must_cover_the_reconnect_backoff() {
        Config::default().validate(&[]).expect("the defaults agree");
        let c = Config::parse("t", "[cluster]\nrestart_grace_ms = 1500").expect("parses");
        let e = format!("{:#}", c.validate(&[]).expect_err("grace below backoff"));
        assert!(
            e.contains("cluster.restart_grace_ms (1500)") && e.contains("links.reconnect_max_ms"),
            "{e}"
        );
        let c = Config::parse(
            "t",
            "[cluster]\nrestart_grace_ms = 1500\n[links]\nreconnect_max_ms = 500",
        )
        .expect("parses");
        c.validate(&[]).expect("a shorter backoff fits");
        let want = std::time::Duration::from_millis(500);
        assert_eq!(
            (
                c.coordinator.links.reconnect_max,
                c.scene.links.reconnect_max,
                c.gate.links.reconnect_max
            ),
            (want, want, want)
        );
        let mut link = tessera_link::LinkConfig::new(tessera_wire::Role::Gate, "g", "secret");
        c.gate.links.apply(&mut link);
        assert_eq!(link.backoff.max, want);
        assert!(link.backoff.initial <= want);
    }

    #[test]
    fn the_dev_secret_is_loopback_only() {
        let c = Config::default();
        let e = c.validate(&["0.0.0.0:7000"]).expect_err("public");
        assert!(format!("{e:#}").contains("secret"), "{e:#}");
        let c = Config::parse("t", "secret = \"short\"").expect("parses");
        assert!(c.validate(&["127.0.0.1:1"]).is_err());
        let c = Config::parse("t", "secret = \"a-long-enough-secret-123\"").expect("parses");
        c.validate(&["10.0.0.1:7000"])
            .expect("real secret anywhere");
    }

    #[test]
    fn the_admin_api_has_its_own_token_and_address() {
        let c = Config::parse("t", "[coordinator]\nhttp = \"0.0.0.0:7080\"").expect("parses");
        let e = c
            .validate(&[])
            .expect_err("development admin token in public");
        assert!(format!("{e:#}").contains("admin_token"), "{e:#}");
        assert_eq!(c.admin_url(), "http://0.0.0.0:7080");
        let c = Config::parse(
            "t",
            "[coordinator]\nhttp = \"0.0.0.0:7080\"\nadmin_http = \"127.0.0.1:7081\"",
        )
        .expect("parses");
        c.validate(&[]).expect("the admin API on loopback");
        assert_eq!(c.admin_url(), "http://127.0.0.1:7081");
        assert_eq!(
            c.coordinator.admin_token.get(),
            tessera_coordinator::DEV_ADMIN_TOKEN
        );
    }
}
