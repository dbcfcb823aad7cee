//! `tessera bots`: N bot clients through the real login API and gate, in
//! this process, with a progress line on stderr and a report on stdout.
//! Exits 1 when no bot entered the world, 2 on bad arguments or an
//! unreachable login API.

use std::io::{IsTerminal, Write};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use clap::{Args, ValueEnum};
use tessera_bots::bot::{self, Behaviour, BotConfig, DEFAULT_LOGIN, Progress};
use tessera_sim::Game;

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum BehaviourArg {
    /// Walk, turning every few seconds.
    Wander,
    /// Wander and say a chat line every 4–6 s (one in ten global): the
    /// pace of the chattiest players, every bot at once.
    Chat,
    /// Log in, wander 5–15 s, leave, disconnect, repeat.
    Churn,
    /// Close in on the nearest player and send the game's `Attack` at it
    /// twice a second (a game with an `Attack` action, e.g. the arena).
    Fight,
}

impl From<BehaviourArg> for Behaviour {
    fn from(b: BehaviourArg) -> Self {
        match b {
            BehaviourArg::Wander => Behaviour::Wander,
            BehaviourArg::Chat => Behaviour::Chat,
            BehaviourArg::Churn => Behaviour::Churn,
            BehaviourArg::Fight => Behaviour::Fight,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ReportFormat {
    Text,
    /// One JSON object as the last line of stdout.
    Json,
}

#[derive(Debug, Args)]
pub struct BotsArgs {
    /// How many bots (1 to 10000).
    #[arg(long)]
    count: usize,
    /// The coordinator's HTTP API (login and status).
    #[arg(long, default_value = DEFAULT_LOGIN)]
    login: String,
    /// Seconds measured, after the warm-up (1 to 3600).
    #[arg(long, default_value_t = 60)]
    duration: u64,
    /// Seconds between the last bot entering (or failing) and the measured
    /// period, while the login storm's backlog drains; round trips then are
    /// reported apart (0 to 3600).
    #[arg(long, default_value_t = 10)]
    warmup: u64,
    #[arg(long, value_enum, default_value_t = BehaviourArg::Wander)]
    behaviour: BehaviourArg,
    #[arg(long, value_enum, default_value_t = ReportFormat::Text)]
    report: ReportFormat,
    /// Bots use accounts bot{first}@… to bot{first+count-1}@….
    #[arg(long, default_value_t = 0)]
    first: usize,
    /// Most bots logging in at once (each login costs the server a password hash).
    #[arg(long, default_value_t = 100)]
    logins_in_flight: usize,
    /// Seed of the bots' choices (directions, timings); default: a new one
    /// each run, shown in the report, so that a run can be repeated.
    #[arg(long)]
    seed: Option<u64>,
    /// Drop this fraction (0 to 1) of the datagrams each bot receives, at
    /// seeded random, as a lossy network would.
    #[arg(long, default_value_t = 0.0)]
    loss: f32,
    /// Config file whose `coordinator.admin_token` (or
    /// `TESSERA_ADMIN_TOKEN`) reads the scenes' snapshots for the view
    /// check at the end of the run (default: ./tessera.toml if present,
    /// else the development admin token).
    #[arg(long)]
    config: Option<std::path::PathBuf>,
    /// The admin API, if it has a listener of its own (`admin_http`);
    /// default: the login URL.
    #[arg(long, value_name = "URL")]
    admin_http: Option<String>,
    /// Skip the view check (and its few seconds at the end of the run).
    #[arg(long)]
    no_view_check: bool,
}

/// `game` is the game the bots play: they log in with its protocol hash,
/// read its replicated components and send its actions.
pub fn run(args: BotsArgs, game: Arc<dyn Game>) -> anyhow::Result<ExitCode> {
    tracing::info!(game = game.name(), count = args.count, "starting bots");
    let mut config = BotConfig::new(
        args.count,
        &args.login,
        args.duration,
        args.behaviour.into(),
    )?;
    config.first_index = args.first;
    config.logins_in_flight = args.logins_in_flight;
    config.warmup = Duration::from_secs(args.warmup);
    config.loss = args.loss;
    config.game = tessera_sim::game::game_schema(&*game)
        .map_err(|e| anyhow::anyhow!("game {} has no valid protocol: {e}", game.name()))?;
    if args.behaviour == BehaviourArg::Fight && config.game.action("Attack").is_none() {
        anyhow::bail!(
            "--behaviour fight needs a game with an Attack action; {} has none",
            game.name()
        );
    }
    if !args.no_view_check {
        let cluster = crate::config::Config::load(args.config.as_deref())?;
        let url = match &args.admin_http {
            Some(url) => tessera_bots::bot::normalize_login_url(url)?,
            None => config.login.clone(),
        };
        config.admin = Some(tessera_bots::bot::AdminAccess {
            url,
            token: cluster.coordinator.admin_token.get().to_owned(),
        });
    }
    if let Some(seed) = args.seed {
        config.seed = seed;
    }
    config.validate()?;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    let report = rt.block_on(async {
        bot::check_reachable(&config)
            .await
            .map_err(|e| anyhow::anyhow!("the login API does not answer: {e}"))?;
        let mut line = ProgressLine::new();
        let ctrl_c = async {
            if tokio::signal::ctrl_c().await.is_err() {
                std::future::pending::<()>().await;
            }
        };
        let report = bot::run_until(config, |p| line.show(p), ctrl_c).await?;
        line.done();
        anyhow::Ok(report)
    })?;
    match args.report {
        ReportFormat::Text => print!("{report}"),
        ReportFormat::Json => println!("{}", serde_json::to_string(&report)?),
    }
    // A load test in which no bot got in is a failed run (the report says why).
    Ok(if report.connected == 0 {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    })
}

/// A `\r`-rewritten line on a terminal; elsewhere (a log, a pipe) a plain
/// line every five seconds.
struct ProgressLine {
    tty: bool,
    last: Option<Instant>,
    width: usize,
}

impl ProgressLine {
    fn new() -> Self {
        Self {
            tty: std::io::stderr().is_terminal(),
            last: None,
            width: 0,
        }
    }

    fn show(&mut self, p: &Progress) {
        let text = p.to_string();
        let mut err = std::io::stderr().lock();
        if self.tty {
            let pad = self.width.saturating_sub(text.len());
            let _ = write!(err, "\r{text}{:pad$}", "");
            let _ = err.flush();
            self.width = text.len();
        } else if self
            .last
            .is_none_or(|t| t.elapsed() >= Duration::from_secs(5))
        {
            self.last = Some(Instant::now());
            let _ = writeln!(err, "{text}");
        }
    }

    fn done(&mut self) {
        if self.tty && self.width > 0 {
            let _ = writeln!(std::io::stderr());
        }
    }
}
