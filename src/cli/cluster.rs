//! `tessera coordinator`, `tessera scene`, `tessera gate`, `tessera up`,
//! `tessera status`.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;
use tracing::Instrument as _;

use anyhow::Context;
use clap::Args;
use tessera_bots::http_client::{HttpClient, HttpError};
use tessera_cluster::ClusterStatus;
use tessera_coordinator::Coordinator;
use tessera_gate::server::GateServer;
use tessera_scene_server::SceneServer;
use tessera_sim::Game;
use tracing::info;

use crate::config::Config;

#[derive(Debug, Args)]
pub struct CoordinatorArgs {
    /// Config file (default: ./tessera.toml if it exists).
    #[arg(long)]
    config: Option<PathBuf>,
    /// Link listener for scene servers and gates (default 127.0.0.1:7000).
    #[arg(long)]
    listen: Option<String>,
    /// HTTP API: login, status, metrics, and admin unless --admin-http
    /// (default 127.0.0.1:7080).
    #[arg(long)]
    http: Option<String>,
    /// The admin API on a listener of its own (default: on --http).
    #[arg(long, value_name = "ADDR")]
    admin_http: Option<String>,
    /// Data directory holding tessera.redb (default ./data).
    #[arg(long)]
    data: Option<PathBuf>,
}

#[derive(Debug, Args)]
pub struct SceneArgs {
    /// Config file (default: ./tessera.toml if it exists).
    #[arg(long)]
    config: Option<PathBuf>,
    /// The coordinator's link address (default 127.0.0.1:7000).
    #[arg(long)]
    coordinator: Option<String>,
    /// This server's node name, unique in the cluster (default `scene-<pid>`).
    #[arg(long)]
    name: Option<String>,
    /// Link listener for gates (default 127.0.0.1:0, any free port).
    #[arg(long)]
    listen: Option<String>,
    /// Synthetic walkers spawned in every scene placed here (load tests).
    #[arg(long)]
    walkers: Option<u32>,
    /// Serve /metrics, /livez and /readyz over HTTP here (default: nowhere).
    #[arg(long, value_name = "ADDR")]
    metrics: Option<String>,
}

#[derive(Debug, Args)]
pub struct UpArgs {
    /// Config file (default: ./tessera.toml if it exists).
    #[arg(long)]
    config: Option<PathBuf>,
    /// Data directory holding tessera.redb (default ./data).
    #[arg(long)]
    data: Option<PathBuf>,
    /// Scene servers to run in the process (default 1).
    #[arg(long)]
    scene_servers: Option<u32>,
    /// Synthetic walkers spawned in every scene (load tests).
    #[arg(long)]
    walkers: Option<u32>,
    /// Link listener of the coordinator (default 127.0.0.1:7000).
    #[arg(long)]
    listen: Option<String>,
    /// HTTP API: login, status, metrics, and admin unless --admin-http
    /// (default 127.0.0.1:7080).
    #[arg(long)]
    http: Option<String>,
    /// The admin API on a listener of its own (default: on --http).
    #[arg(long, value_name = "ADDR")]
    admin_http: Option<String>,
    /// The gate's first UDP listener (default 127.0.0.1:7300).
    #[arg(long)]
    gate_listen: Option<String>,
}

#[derive(Debug, Args)]
pub struct GateArgs {
    /// Config file (default: ./tessera.toml if it exists).
    #[arg(long)]
    config: Option<PathBuf>,
    /// The coordinator's link address (default 127.0.0.1:7000).
    #[arg(long)]
    coordinator: Option<String>,
    /// First UDP listener (default 127.0.0.1:7300; more listeners on the next ports).
    #[arg(long)]
    listen: Option<String>,
    /// This gate's node name, unique in the cluster (default `gate-<pid>`).
    #[arg(long)]
    name: Option<String>,
    /// Serve /metrics, /livez and /readyz over HTTP here (default: nowhere).
    #[arg(long, value_name = "ADDR")]
    metrics: Option<String>,
}

#[derive(Debug, Args)]
pub struct StatusArgs {
    /// The coordinator's HTTP API.
    #[arg(long, default_value = "http://127.0.0.1:7080")]
    http: String,
    /// Print the /v1/status JSON object as the last line.
    #[arg(long)]
    json: bool,
}

fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")
}

/// Resolves on SIGINT or SIGTERM.
async fn terminated() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        let Ok(mut term) = signal(SignalKind::terminate()) else {
            let _ = tokio::signal::ctrl_c().await;
            return;
        };
        tokio::select! {
            _ = term.recv() => {}
            _ = tokio::signal::ctrl_c() => {}
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}

pub fn coordinator(args: CoordinatorArgs) -> anyhow::Result<ExitCode> {
    let mut config = Config::load(args.config.as_deref())?;
    if let Some(v) = args.listen {
        config.coordinator.listen = v;
    }
    if let Some(v) = args.http {
        config.coordinator.http = v;
    }
    if let Some(v) = args.admin_http {
        config.coordinator.admin_http = Some(v);
    }
    if let Some(v) = args.data {
        config.coordinator.data = v;
    }
    config.validate(&[&config.coordinator.listen, &config.coordinator.http])?;
    let catalog: Vec<String> = config.scene_defs()?.into_keys().collect();
    runtime()?.block_on(async {
        let coord = Coordinator::start(
            config.coordinator.clone(),
            config.cluster.clone(),
            config.secret(),
            catalog,
        )
        .instrument(node_span("coordinator"))
        .await?;
        println!(
            "coordinator: links on {}, HTTP on http://{}{}",
            coord.link_addr(),
            coord.http_addr(),
            admin_note(&coord)
        );
        info!(
            "metrics at http://{0}/metrics, probes at /livez and /readyz",
            coord.http_addr()
        );
        terminated().await;
        info!("stopping");
        coord.shutdown().instrument(node_span("coordinator")).await;
        Ok(ExitCode::SUCCESS)
    })
}

pub fn scene(args: SceneArgs, game: Arc<dyn Game>) -> anyhow::Result<ExitCode> {
    let mut config = Config::load(args.config.as_deref())?;
    if let Some(v) = args.coordinator {
        config.scene.coordinator = v;
    }
    if let Some(v) = args.name {
        config.scene.name = v;
    }
    if let Some(v) = args.listen {
        config.scene.listen = v;
    }
    if let Some(v) = args.walkers {
        config.scene.walkers = v;
    }
    if let Some(v) = args.metrics {
        config.scene.metrics = Some(v);
    }
    config.validate(&[&config.scene.coordinator, &config.scene.listen])?;
    let defs = config.scene_defs()?;
    runtime()?.block_on(async {
        let span = node_span(&config.scene.node_name());
        let mut server = SceneServer::start(config.scene.clone(), config.secret(), defs, game)
            .instrument(span)
            .await?;
        println!(
            "scene server {}: gates connect to {}{}",
            server.name(),
            server.link_addr(),
            metrics_note(", ", server.metrics_addr())
        );
        tokio::select! {
            _ = terminated() => {
                let span = node_span(server.name());
                span.in_scope(|| info!("SIGTERM: flushing every scene, then deregistering"));
                server.shutdown().instrument(span).await?;
                Ok(ExitCode::SUCCESS)
            }
            r = server.stopped() => {
                r?;
                Ok(ExitCode::FAILURE)
            }
        }
    })
}

pub fn up(args: UpArgs, game: Arc<dyn Game>) -> anyhow::Result<ExitCode> {
    let mut config = Config::load(args.config.as_deref())?;
    if let Some(v) = args.data {
        config.coordinator.data = v;
    }
    if let Some(v) = args.scene_servers {
        config.up.scene_servers = v;
    }
    if let Some(v) = args.walkers {
        config.scene.walkers = v;
    }
    if let Some(v) = args.listen {
        config.coordinator.listen = v;
    }
    if let Some(v) = args.http {
        config.coordinator.http = v;
    }
    if let Some(v) = args.admin_http {
        config.coordinator.admin_http = Some(v);
    }
    if let Some(v) = args.gate_listen {
        config.gate.listen = v;
    }
    config.validate(&[
        &config.coordinator.listen,
        &config.coordinator.http,
        &config.gate.listen,
    ])?;
    let defs = config.scene_defs()?;
    let catalog: Vec<String> = defs.keys().cloned().collect();
    runtime()?.block_on(async {
        let coord = Coordinator::start(
            config.coordinator.clone(),
            config.cluster.clone(),
            config.secret(),
            catalog,
        )
        .instrument(node_span("coordinator"))
        .await?;
        // One process, one scrape: every role reports through the
        // coordinator's /metrics, so the roles serve none of their own.
        let mut servers = Vec::new();
        for i in 1..=config.up.scene_servers {
            let mut sc = config.scene.clone();
            sc.coordinator = coord.link_addr().to_string();
            sc.name = format!("scene-{i}");
            sc.listen = "127.0.0.1:0".into();
            sc.metrics = None;
            let span = node_span(&sc.node_name());
            let server = SceneServer::start(sc, config.secret(), defs.clone(), Arc::clone(&game))
                .instrument(span)
                .await?;
            coord.metrics().register(&server.metrics_source());
            servers.push(server);
        }
        let mut gc = config.gate.clone();
        gc.coordinator = coord.link_addr().to_string();
        gc.name = "gate-1".into();
        gc.metrics = None;
        let span = node_span(&gc.name);
        let gate = GateServer::start(gc, config.secret())
            .instrument(span)
            .await?;
        coord.metrics().register(&gate.metrics_source());
        let udp: Vec<String> = gate.addresses().iter().map(ToString::to_string).collect();
        println!(
            "tessera up: coordinator on {}, {} scene server(s), status at http://{}/v1/status, data in {}, gate on udp {}{}",
            coord.link_addr(),
            servers.len(),
            coord.http_addr(),
            config.coordinator.data.display(),
            udp.join(","),
            admin_note(&coord)
        );
        println!(
            "log in at http://{}/v1/login; load-test with: tessera bots --count 100 --login http://{}",
            coord.http_addr(),
            coord.http_addr()
        );

        println!("press Ctrl-C to stop (every scene is flushed first)");
        terminated().await;
        let span = node_span(gate.name());
        gate.shutdown().instrument(span).await;
        for s in servers {
            let span = node_span(s.name());
            s.shutdown().instrument(span).await?;
        }
        coord.shutdown().instrument(node_span("coordinator")).await;
        Ok(ExitCode::SUCCESS)
    })
}

pub fn gate(args: GateArgs) -> anyhow::Result<ExitCode> {
    let mut config = Config::load(args.config.as_deref())?;
    if let Some(v) = args.coordinator {
        config.gate.coordinator = v;
    }
    if let Some(v) = args.listen {
        config.gate.listen = v;
    }
    if let Some(v) = args.name {
        config.gate.name = v;
    }
    if let Some(v) = args.metrics {
        config.gate.metrics = Some(v);
    }
    config.validate(&[&config.gate.coordinator, &config.gate.listen])?;
    runtime()?.block_on(async {
        let mut gate = GateServer::start(config.gate.clone(), config.secret())
            .instrument(node_span(&config.gate.name))
            .await?;
        let udp: Vec<String> = gate.addresses().iter().map(ToString::to_string).collect();
        println!(
            "gate {}: clients connect over udp to {}{}",
            gate.name(),
            udp.join(","),
            metrics_note("; ", gate.metrics_addr())
        );
        tokio::select! {
            _ = terminated() => {
                let span = node_span(gate.name());
                gate.shutdown().instrument(span).await;
                Ok(ExitCode::SUCCESS)
            }
            r = gate.stopped() => {
                r?;
                Ok(ExitCode::FAILURE)
            }
        }
    })
}

/// `, admin API on http://ADDR` when the admin API has a listener of its
/// own, else nothing.
fn admin_note(coord: &Coordinator) -> String {
    if coord.admin_addr() == coord.http_addr() {
        String::new()
    } else {
        format!(", admin API on http://{}", coord.admin_addr())
    }
}

/// `{sep}metrics on http://ADDR` when a role serves its metrics, else nothing.
fn metrics_note(sep: &str, addr: Option<std::net::SocketAddr>) -> String {
    addr.map(|a| format!("{sep}metrics on http://{a}"))
        .unwrap_or_default()
}

/// A client for the coordinator's HTTP API at `base` (`http://host:port`).
pub(crate) fn api_client(base: &str, timeout: Duration) -> anyhow::Result<HttpClient> {
    let uri: hyper::Uri = base
        .parse()
        .with_context(|| format!("{base:?} is not a URL"))?;
    anyhow::ensure!(
        uri.scheme_str() == Some("http") && uri.host().is_some(),
        "{base:?} is not a URL of the form http://host:port"
    );
    Ok(HttpClient::new(base, timeout, 1).with_max_body(16 << 20))
}

/// Fetches `/v1/status` from the coordinator's HTTP API.
pub async fn fetch_status(base: &str) -> anyhow::Result<ClusterStatus> {
    let client = api_client(base, Duration::from_secs(5))?;
    let url = format!("{}/v1/status", client.base());
    client.get_json(V1_STATUS).await.map_err(|e| match e {
        HttpError::Transport(why) => anyhow::anyhow!("cannot reach {url}: {why}"),
        HttpError::Timeout => anyhow::anyhow!("{url}: no answer within 5 s"),
        HttpError::Json(why) => anyhow::anyhow!("{url}: not a /v1/status object: {why}"),
        other => anyhow::anyhow!("{url}: {other}"),
    })
}

const V1_STATUS: &str = "/v1/status";

pub fn status(args: StatusArgs) -> anyhow::Result<ExitCode> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    let status = rt.block_on(fetch_status(&args.http))?;
    println!("scene servers{}:", games_note(&status));
    println!("  {:<20} {:<6} {:<9} scenes", "name", "alive", "draining");
    for s in &status.scene_servers {
        println!(
            "  {:<20} {:<6} {:<9} {}",
            s.name,
            if s.alive { "yes" } else { "NO" },
            if s.draining { "yes" } else { "no" },
            s.scenes.join(", ")
        );
    }
    println!("gates:");
    println!("  {:<20} {:<6} {:>8}", "name", "alive", "online");
    for g in &status.gates {
        println!(
            "  {:<20} {:<6} {:>8}",
            g.name,
            if g.alive { "yes" } else { "NO" },
            g.online
        );
    }
    println!("scenes:");
    println!(
        "  {:<16} {:<20} {:>6} {:<6} {:>10} {:>7} {:>12}",
        "name", "server", "epoch", "status", "population", "online", "tick p99 ms"
    );
    for s in &status.scenes {
        let st = serde_json::to_value(s.status)
            .ok()
            .and_then(|v| v.as_str().map(str::to_owned))
            .unwrap_or_default();
        let moving = s
            .moving_to
            .as_ref()
            .map(|to| format!("  (moving to {to})"))
            .unwrap_or_default();
        println!(
            "  {:<16} {:<20} {:>6} {:<6} {:>10} {:>7} {:>12.2}{moving}",
            s.name,
            if s.server.is_empty() {
                "(unplaced)"
            } else {
                &s.server
            },
            s.epoch,
            st,
            s.population,
            s.online,
            s.tick_p99_ms
        );
    }
    if args.json {
        println!("{}", serde_json::to_string(&status)?);
    }
    Ok(ExitCode::SUCCESS)
}

/// ` (game NAME)` when every scene server runs the game NAME, ` (games
/// differ: scene-1 a, scene-2 b)` when they do not, else nothing.
fn games_note(status: &ClusterStatus) -> String {
    let servers = &status.scene_servers;
    match servers.first() {
        None => String::new(),
        Some(first) if servers.iter().all(|s| s.game == first.game) => {
            format!(" (game {})", first.game)
        }
        Some(_) => {
            let each: Vec<String> = servers
                .iter()
                .map(|s| format!("{} {}", s.name, s.game))
                .collect();
            format!(" (games differ: {})", each.join(", "))
        }
    }
}

/// The `--config` of the cluster roles, for `Cli::log_format`.
macro_rules! config_path {
    ($($args:ty),*) => {$(
        impl $args {
            pub fn config_path(&self) -> Option<&std::path::Path> {
                self.config.as_deref()
            }
        }
    )*};
}
config_path!(CoordinatorArgs, SceneArgs, UpArgs, GateArgs);

/// The span a role runs in: every line it logs, from any of its tasks and
/// threads, names its node (`node{node=scene-1}` in text, `"spans"` in JSON).
fn node_span(name: &str) -> tracing::Span {
    tracing::info_span!("node", node = %name)
}

#[cfg(test)]
mod tests {
    use tessera_cluster::{ClusterStatus, ServerRow};

    fn status(games: &[&str]) -> ClusterStatus {
        ClusterStatus {
            scene_servers: games
                .iter()
                .enumerate()
                .map(|(i, game)| ServerRow {
                    name: format!("scene-{}", i + 1),
                    alive: true,
                    scenes: Vec::new(),
                    draining: false,
                    game: (*game).to_owned(),
                })
                .collect(),
            scenes: Vec::new(),
            gates: Vec::new(),
        }
    }

    #[test]
    fn status_names_the_game_once_or_each_servers_when_they_differ() {
        assert_eq!(super::games_note(&status(&[])), "");
        assert_eq!(
            super::games_note(&status(&["arena", "arena"])),
            " (game arena)"
        );
        assert_eq!(
            super::games_note(&status(&["arena", "default"])),
            " (games differ: scene-1 arena, scene-2 default)"
        );
    }
}
