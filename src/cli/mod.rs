//! The command line: clap derive, one module per subcommand.

use std::io::IsTerminal;
use std::process::ExitCode;
use std::sync::Arc;

use clap::{Parser, Subcommand, ValueEnum};

mod admin;
mod aoi;
mod bench_logins;
mod bots;
pub mod cluster;
mod cluster_bench;
mod db;
mod report;
mod sim;

#[derive(Debug, Parser)]
#[command(
    name = "tessera",
    version,
    about = "Tessera: an authoritative MMO simulation cluster"
)]
pub struct Cli {
    /// How log lines are written to stderr: `text` for people, `json` for
    /// log shippers (one JSON object per line). Default: the config file's
    /// `log_format` for the cluster roles, else `text`.
    #[arg(long, global = true, value_enum)]
    log_format: Option<LogFormat>,
    #[command(subcommand)]
    command: Command,
}

/// The format of log lines (`--log-format`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, ValueEnum, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// One human-readable line per event.
    #[default]
    Text,
    /// One JSON object per line: `timestamp`, `level`, `target`, `fields`
    /// (with `message`) and the spans.
    Json,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run one scene headless, as fast as it can, and report the tick budget.
    Sim(sim::SimArgs),
    /// Run the scene's AOI stage over a recorded position trace.
    Aoi(aoi::AoiArgs),
    /// Generate a random-walk position trace for `tessera aoi`.
    AoiTrace(aoi::AoiTraceArgs),
    /// Operator tools for the redb database: stats, check, export, import, accounts, bench.
    Db(db::DbArgs),
    /// Run every role in one process over loopback: the coordinator (database
    /// under ./data) and scene servers.
    Up(cluster::UpArgs),
    /// Run the world coordinator: registry, placement, avatar directory, data service, HTTP API.
    Coordinator(cluster::CoordinatorArgs),
    /// Run a scene server: hosts the scenes the coordinator places on it.
    Scene(cluster::SceneArgs),
    /// Run a gate: UDP client sessions (renet + netcode tokens) bridged into the cluster.
    Gate(cluster::GateArgs),
    /// Show the cluster's servers, scenes, epochs, populations and tick p99.
    Status(cluster::StatusArgs),
    /// Operator actions: kick or ban a player, move a scene, drain a scene server.
    Admin(admin::AdminArgs),
    /// Speed report: attach + detach round trips, logins and save batches
    /// through the coordinator, and its lock's hold times, while scene
    /// servers tick scenes full of walkers (all in this process).
    ClusterBench(cluster_bench::ClusterBenchArgs),
    /// Load test: N bot clients log in (registering the first time), enter the
    /// world through the gate and play; reports round trips, traffic and drops.
    Bots(bots::BotsArgs),
}

impl Cli {
    /// The log format: `--log-format`, else `log_format` in the config file
    /// of a cluster role (`up`, `coordinator`, `scene`, `gate`), else text.
    /// A config file that does not load counts as none here: the
    /// subcommand reports it when it loads it.
    pub fn log_format(&self) -> LogFormat {
        if let Some(format) = self.log_format {
            return format;
        }
        let path = match &self.command {
            Command::Up(args) => args.config_path(),
            Command::Coordinator(args) => args.config_path(),
            Command::Scene(args) => args.config_path(),
            Command::Gate(args) => args.config_path(),
            _ => return LogFormat::Text,
        };
        crate::config::Config::load(path)
            .ok()
            .and_then(|c| c.log_format)
            .unwrap_or_default()
    }

    /// Runs the subcommand; every scene world it builds is `game`'s.
    pub fn run(self, game: Arc<dyn tessera_sim::Game>) -> anyhow::Result<ExitCode> {
        match self.command {
            Command::Sim(args) => sim::run(args, &*game),
            Command::Aoi(args) => aoi::run(args),
            Command::AoiTrace(args) => aoi::run_trace(args),
            Command::Db(args) => args.run(),
            Command::Up(args) => cluster::up(args, game),
            Command::Coordinator(args) => cluster::coordinator(args),
            Command::Scene(args) => cluster::scene(args, game),
            Command::Gate(args) => cluster::gate(args),
            Command::Status(args) => cluster::status(args),
            Command::Admin(args) => admin::admin(args),
            Command::ClusterBench(args) => cluster_bench::run(args, game),
            Command::Bots(args) => bots::run(args, game),
        }
    }
}

/// Logs go to stderr (stdout is for reports) in `format`; `RUST_LOG`
/// filters them, default `warn`. The `log` records of dependencies
/// (renetcode) go through the same subscriber, under their module as target.
pub fn init_tracing(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal());
    let _ = match format {
        LogFormat::Text => builder.try_init(),
        LogFormat::Json => builder
            .json()
            .with_current_span(true)
            .with_span_list(false)
            .try_init(),
    };
}
