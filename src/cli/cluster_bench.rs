//! `tessera cluster-bench`: the coordinator's capacity report — attach +
//! detach round trips per second through it, HTTP logins per second
//! (`bench_logins.rs`), the save batches it takes per second, and how long
//! its shared lock is held (p99 per acquisition), while every scene server
//! ticks a scene full of synthetic walkers.
//!
//! Everything runs in this process over loopback (a coordinator, N scene
//! servers with capacity 1 so each hosts one scene, `workers` tool clients,
//! `login_clients` HTTP clients and a stand-in gate), on a fresh database
//! in a temporary folder that is removed afterwards.

use std::collections::BTreeMap;
use std::path::Path;
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::Context;
use clap::{Args, ValueEnum};
use hdrhistogram::Histogram;
use serde::Serialize;
use tessera_bots::tool::SessionClient;
use tessera_cluster::ClusterConfig;
use tessera_coordinator::login::LoginConfig;
use tessera_coordinator::{Coordinator, CoordinatorConfig, DB_FILE};
use tessera_host::{LoadReport, RunnerPhase};
use tessera_persistence::{AccountId, AvatarId, NewAvatar, Store};
use tessera_scene_server::{SceneServer, SceneServerConfig};
use tessera_sim::{Game, SceneDef};
use tessera_wire::Secret;

use super::bench_logins::{self, Logins};
use super::report::{MsSummary, new_histogram};
use crate::config::Config;

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ReportFormat {
    Text,
    Json,
}

#[derive(Debug, Args)]
pub struct ClusterBenchArgs {
    /// Scene servers, one scene each (at most the number of scenes).
    #[arg(long, default_value_t = 3)]
    scene_servers: u32,
    /// Scenes to host, one per server, comma-separated (default: the largest).
    #[arg(long, value_delimiter = ',')]
    scenes: Vec<String>,
    /// Synthetic walkers in every scene.
    #[arg(long, default_value_t = 5000)]
    walkers: u32,
    /// Concurrent tool clients doing attach + detach round trips.
    #[arg(long, default_value_t = 8)]
    workers: u32,
    /// Concurrent HTTP clients logging in again and again (half with their
    /// password, half with their resume key); 0 for none.
    #[arg(long, default_value_t = 4)]
    login_clients: u32,
    /// Measured seconds.
    #[arg(long, default_value_t = 20)]
    duration: u64,
    /// Seconds of load before measuring.
    #[arg(long, default_value_t = 3)]
    warmup: u64,
    #[arg(long, value_enum, default_value_t = ReportFormat::Text)]
    report: ReportFormat,
}

#[derive(Debug, Serialize)]
struct SceneFigures {
    scene: String,
    server: String,
    population: u32,
    /// Largest 1-second-window tick p99 seen while measuring, ms.
    tick_p99_ms_worst_window: f64,
    /// Median of the 1-second-window tick p99s while measuring, ms.
    tick_p99_ms_median_window: f64,
    /// Tick p99 since the scene started, ms.
    tick_p99_ms_total: f64,
    budget_ms: f64,
    within_budget: bool,
    late_ticks: u64,
    skipped_ticks: u64,
}

#[derive(Debug, Serialize)]
struct Report {
    scene_servers: u32,
    walkers_per_scene: u32,
    workers: u32,
    seconds: f64,
    round_trips: u64,
    round_trips_per_s: f64,
    /// Attach (request → scene spawned it) + detach (request → saved), ms.
    round_trip_ms: MsSummary,
    failures: u64,
    login_clients: u32,
    /// Logins answered with a token while measuring, per second: with a
    /// password (argon2id), with a resume key, and both.
    logins_password_per_s: f64,
    logins_resumed_per_s: f64,
    logins_per_s: f64,
    login_failures: u64,
    /// Save batches the coordinator handed to its writer, per second.
    save_batches_per_s: f64,
    /// Acknowledgements sent to scene servers once their batches were
    /// durable (cumulative: one per link per commit that covered some).
    save_acks_per_s: f64,
    lock: LockFigures,
    scenes: Vec<SceneFigures>,
}

/// How the coordinator's shared lock was held while measuring.
#[derive(Debug, Serialize)]
struct LockFigures {
    acquisitions: u64,
    acquisitions_per_s: f64,
    mean_us: f64,
    /// The upper bound of the histogram bucket holding the 99th percentile.
    p99_us_at_most: f64,
    /// The upper bound of the bucket holding the longest hold (infinite if
    /// past the last bound, 1 s).
    max_us_at_most: f64,
    /// Holds longer than 1 ms.
    over_1ms: u64,
}

pub fn run(args: ClusterBenchArgs, game: Arc<dyn Game>) -> anyhow::Result<ExitCode> {
    validate(&args)?;
    let config = Config::load(None)?;
    let defs = config.scene_defs()?;
    anyhow::ensure!(
        args.scene_servers as usize <= defs.len(),
        "--scene-servers {} exceeds the {} scenes in {}",
        args.scene_servers,
        defs.len(),
        config.scenes_dir().display()
    );
    let dir = std::env::temp_dir().join(format!("tessera-cluster-bench-{}", std::process::id()));
    let _cleanup = RemoveOnDrop(dir.clone());
    std::fs::create_dir_all(&dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let scenes = choose_scenes(&args, &defs, &config)?;
    let accounts = provision(&dir, &scenes, args.workers, args.login_clients)?;

    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    let report = rt.block_on(async {
        let (coord, servers) = start_cluster(&args, &config, &defs, &dir, &scenes, game).await?;
        let link = coord.link_addr().to_string();
        let load = Load::start(&link, &config, &accounts);
        let logins = Logins::start(
            coord.http_addr(),
            &link,
            config.secret(),
            args.login_clients,
            Arc::clone(&load.measuring),
        )
        .await?;
        tokio::time::sleep(Duration::from_secs(args.warmup)).await;
        let (stats0, lock0) = (coord.stats(), coord.lock_hold_times());
        let measured = measure(&args, &servers, &scenes, &load).await;
        let (stats1, lock1) = (coord.stats(), coord.lock_hold_times());
        let (all, failures) = load.finish().await?;
        let tally = logins.finish().await?;
        let scenes = scene_figures(&servers, &defs, &measured);
        for s in servers {
            s.shutdown().await?;
        }
        coord.shutdown().await;
        let round_trips = all.len();
        let seconds = measured.seconds;
        let per_s = |n: u64| (n as f64 / seconds * 10.0).round() / 10.0;
        anyhow::Ok(Report {
            scene_servers: args.scene_servers,
            walkers_per_scene: args.walkers,
            workers: args.workers,
            seconds,
            round_trips,
            round_trips_per_s: (round_trips as f64 / seconds * 10.0).round() / 10.0,
            round_trip_ms: MsSummary::of(&all),
            failures,
            login_clients: args.login_clients,
            logins_password_per_s: per_s(tally.password),
            logins_resumed_per_s: per_s(tally.resumed),
            logins_per_s: per_s(tally.password + tally.resumed),
            login_failures: tally.failed,
            save_batches_per_s: per_s(stats1.batches.saturating_sub(stats0.batches)),
            save_acks_per_s: per_s(stats1.save_acks.saturating_sub(stats0.save_acks)),
            lock: lock_figures(&lock0, &lock1, seconds),
            scenes,
        })
    })?;
    print_report(&report, args.report)?;
    Ok(ExitCode::SUCCESS)
}

/// The lock's holds between two snapshots of its histogram.
fn lock_figures(
    before: &tessera_metrics::HistogramSnapshot,
    after: &tessera_metrics::HistogramSnapshot,
    seconds: f64,
) -> LockFigures {
    let buckets: Vec<(f64, u64)> = after
        .buckets()
        .zip(before.buckets())
        .map(|((bound, a), (_, b))| (bound, a.saturating_sub(b)))
        .collect();
    let n = after.count().saturating_sub(before.count());
    let first_reaching = |k: u64| {
        buckets
            .iter()
            .find(|&&(_, c)| c >= k)
            .map_or(f64::INFINITY, |&(bound, _)| bound)
    };
    let us = |s: f64| (s * 1e6 * 100.0).round() / 100.0;
    LockFigures {
        acquisitions: n,
        acquisitions_per_s: (n as f64 / seconds).round(),
        mean_us: us((after.sum() - before.sum()) / (n.max(1) as f64)),
        p99_us_at_most: us(first_reaching((n as f64 * 0.99).ceil() as u64)),
        max_us_at_most: us(first_reaching(n)),
        over_1ms: n.saturating_sub(
            buckets
                .iter()
                .take_while(|&&(bound, _)| bound <= 1e-3)
                .last()
                .map_or(0, |&(_, c)| c),
        ),
    }
}

fn validate(args: &ClusterBenchArgs) -> anyhow::Result<()> {
    anyhow::ensure!(
        (1..=16).contains(&args.scene_servers),
        "--scene-servers must be between 1 and 16"
    );
    anyhow::ensure!(
        (1..=256).contains(&args.workers),
        "--workers must be between 1 and 256"
    );
    anyhow::ensure!(args.walkers <= 100_000, "--walkers must be at most 100000");
    anyhow::ensure!(
        args.login_clients <= 256,
        "--login-clients must be at most 256"
    );
    anyhow::ensure!(
        (1..=3600).contains(&args.duration),
        "--duration must be 1..=3600 s"
    );
    Ok(())
}

/// The hosted scenes: the given ones, else the largest (by area, then name),
/// so that walker density stays comparable between scenes.
fn choose_scenes(
    args: &ClusterBenchArgs,
    defs: &BTreeMap<String, SceneDef>,
    config: &Config,
) -> anyhow::Result<Vec<String>> {
    if args.scenes.is_empty() {
        let mut by_area: Vec<(&String, f32)> = defs
            .iter()
            .map(|(n, d)| (n, d.size[0] * d.size[1]))
            .collect();
        by_area.sort_by(|a, b| b.1.total_cmp(&a.1).then_with(|| a.0.cmp(b.0)));
        return Ok(by_area
            .into_iter()
            .take(args.scene_servers as usize)
            .map(|(n, _)| n.clone())
            .collect());
    }
    for s in &args.scenes {
        anyhow::ensure!(
            defs.contains_key(s),
            "no scene {s:?} in {}",
            config.scenes_dir().display()
        );
    }
    anyhow::ensure!(
        args.scenes.len() == args.scene_servers as usize,
        "--scenes names {} scenes for {} scene servers",
        args.scenes.len(),
        args.scene_servers
    );
    Ok(args.scenes.clone())
}

/// One account and avatar per worker, spread over the hosted scenes, and
/// one account per login client.
fn provision(
    dir: &Path,
    scenes: &[String],
    workers: u32,
    login_clients: u32,
) -> anyhow::Result<Vec<(AccountId, AvatarId)>> {
    let store = Store::open(dir.join(DB_FILE))?;
    for i in 0..login_clients {
        store.register(&bench_logins::email(i), bench_logins::PASSWORD, None)?;
    }
    let mut accounts = Vec::new();
    for w in 0..workers {
        let scene = &scenes[w as usize % scenes.len()];
        let scene_id = store.ensure_scene(scene)?;
        let account = store.register(
            &format!("bench{w}@example.com"),
            "correct horse battery",
            None,
        )?;
        let avatar = store.provision_avatars(
            account,
            &[NewAvatar {
                name: format!("Bench{w}"),
                figure: "f".into(),
                scene: scene_id,
            }],
        )?[0];
        accounts.push((account, avatar));
    }
    Ok(accounts)
}

/// A coordinator and one scene server per scene (capacity 1), returned once
/// every scene is placed and ticking with its walkers.
async fn start_cluster(
    args: &ClusterBenchArgs,
    config: &Config,
    defs: &BTreeMap<String, SceneDef>,
    dir: &Path,
    scenes: &[String],
    game: Arc<dyn Game>,
) -> anyhow::Result<(Coordinator, Vec<SceneServer>)> {
    let coord = Coordinator::start(
        CoordinatorConfig {
            listen: "127.0.0.1:0".into(),
            http: "127.0.0.1:0".into(),
            data: dir.to_path_buf(),
            login: LoginConfig {
                // Each login client logs its one account in as fast as it
                // is answered: the per-account limit would measure itself.
                per_account_per_s: 1_000_000,
                per_account_burst: 1_000_000,
                ..LoginConfig::default()
            },
            ..CoordinatorConfig::default()
        },
        ClusterConfig {
            // The synthetic walkers count as population: keep every
            // scene open for attaches.
            busy_population: 200_000,
            full_population: 200_000,
            ..ClusterConfig::default()
        },
        config.secret(),
        scenes.to_vec(),
    )
    .await?;
    let link = coord.link_addr().to_string();
    let mut servers = Vec::new();
    for i in 1..=args.scene_servers {
        let cfg = SceneServerConfig {
            coordinator: link.clone(),
            name: format!("scene-{i}"),
            capacity: 1,
            walkers: args.walkers,
            ..SceneServerConfig::default()
        };
        servers
            .push(SceneServer::start(cfg, config.secret(), defs.clone(), Arc::clone(&game)).await?);
    }
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let loads: Vec<_> = servers.iter().flat_map(SceneServer::load).collect();
        if loads.len() == scenes.len()
            && loads
                .iter()
                .all(|l| l.phase == RunnerPhase::Running && l.population >= args.walkers)
        {
            break;
        }
        anyhow::ensure!(Instant::now() < deadline, "scenes not running after 60 s");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    eprintln!(
        "{} scene servers × {} walkers running; {} s warm-up, then {} s measured",
        args.scene_servers, args.walkers, args.warmup, args.duration
    );
    Ok((coord, servers))
}

/// The tool clients, each doing attach + detach round trips until stopped,
/// recording them only while `measuring`.
struct Load {
    measuring: Arc<AtomicBool>,
    stop: Arc<AtomicBool>,
    tasks: Vec<tokio::task::JoinHandle<(Histogram<u64>, u64)>>,
}

impl Load {
    fn start(link: &str, config: &Config, accounts: &[(AccountId, AvatarId)]) -> Self {
        let measuring = Arc::new(AtomicBool::new(false));
        let stop = Arc::new(AtomicBool::new(false));
        let tasks = accounts
            .iter()
            .copied()
            .enumerate()
            .map(|(w, (account, avatar))| {
                tokio::spawn(round_trips(
                    link.to_owned(),
                    format!("bench-{w}"),
                    config.secret(),
                    account,
                    avatar,
                    Arc::clone(&measuring),
                    Arc::clone(&stop),
                ))
            })
            .collect();
        Self {
            measuring,
            stop,
            tasks,
        }
    }

    /// Stops the clients; their round trips merged, and the failures.
    async fn finish(self) -> anyhow::Result<(Histogram<u64>, u64)> {
        self.stop.store(true, Ordering::Relaxed);
        let mut all = new_histogram();
        let mut failures = 0;
        for t in self.tasks {
            let (h, f) = t.await?;
            all.add(&h)?;
            failures += f;
        }
        Ok((all, failures))
    }
}

/// One tool client's loop. A client that cannot connect or open its
/// session counts one failure.
async fn round_trips(
    link: String,
    name: String,
    secret: Secret,
    account: AccountId,
    avatar: AvatarId,
    measuring: Arc<AtomicBool>,
    stop: Arc<AtomicBool>,
) -> (Histogram<u64>, u64) {
    let mut h = new_histogram();
    let mut failures = 0u64;
    let Ok(mut tool) = SessionClient::connect(&link, &name, secret).await else {
        return (h, 1);
    };
    let Ok(session) = tool.open_session(tessera_proto::AccountId(account)).await else {
        return (h, 1);
    };
    while !stop.load(Ordering::Relaxed) {
        let t0 = Instant::now();
        let ok = tool.attach(session, avatar).await.is_ok() && tool.detach(session).await.is_ok();
        if !measuring.load(Ordering::Relaxed) {
            continue;
        }
        if ok {
            let ns = u64::try_from(t0.elapsed().as_nanos()).unwrap_or(u64::MAX);
            let _ = h.record(ns.max(1));
        } else {
            failures += 1;
        }
    }
    (h, failures)
}

/// What the measured period saw of the scenes.
struct Measured {
    seconds: f64,
    /// Per scene, in `servers`' load order: the tick p99 of each 1 s window.
    windows: Vec<Vec<u32>>,
    before: Vec<LoadReport>,
    after: Vec<LoadReport>,
}

/// Measures for `--duration` seconds, sampling every scene's tick p99 once a
/// second.
async fn measure(
    args: &ClusterBenchArgs,
    servers: &[SceneServer],
    scenes: &[String],
    load: &Load,
) -> Measured {
    load.measuring.store(true, Ordering::Relaxed);
    let start = Instant::now();
    let mut windows: Vec<Vec<u32>> = vec![Vec::new(); scenes.len()];
    let before: Vec<_> = servers.iter().flat_map(SceneServer::load).collect();
    while start.elapsed() < Duration::from_secs(args.duration) {
        tokio::time::sleep(Duration::from_secs(1)).await;
        for (i, l) in servers.iter().flat_map(SceneServer::load).enumerate() {
            if let Some(w) = windows.get_mut(i) {
                w.push(l.tick_p99_us);
            }
        }
    }
    load.measuring.store(false, Ordering::Relaxed);
    let seconds = start.elapsed().as_secs_f64();
    let after: Vec<_> = servers.iter().flat_map(SceneServer::load).collect();
    Measured {
        seconds,
        windows,
        before,
        after,
    }
}

fn scene_figures(
    servers: &[SceneServer],
    defs: &BTreeMap<String, SceneDef>,
    m: &Measured,
) -> Vec<SceneFigures> {
    let ms = |us: u32| (f64::from(us) / 10.0).round() / 100.0;
    servers
        .iter()
        .flat_map(|s| s.load().into_iter().map(move |l| (s.name().to_owned(), l)))
        .enumerate()
        .map(|(i, (server, l))| {
            let mut w = m.windows.get(i).cloned().unwrap_or_default();
            w.sort_unstable();
            let worst = w.last().copied().unwrap_or(0);
            let median = w.get(w.len() / 2).copied().unwrap_or(0);
            let hz = defs.get(&l.scene).map_or(20, |d| d.tick_hz);
            let budget_ms = 1000.0 / f64::from(hz.max(1));
            let b = m.before.get(i).map(|b| b.pacer).unwrap_or_default();
            let a = m.after.get(i).map(|a| a.pacer).unwrap_or_default();
            SceneFigures {
                scene: l.scene.clone(),
                server,
                population: l.population,
                tick_p99_ms_worst_window: ms(worst),
                tick_p99_ms_median_window: ms(median),
                tick_p99_ms_total: ms(l.tick_p99_total_us),
                budget_ms,
                within_budget: ms(worst) <= budget_ms,
                late_ticks: a.late.saturating_sub(b.late),
                skipped_ticks: a.skipped.saturating_sub(b.skipped),
            }
        })
        .collect()
}

fn print_report(report: &Report, format: ReportFormat) -> anyhow::Result<()> {
    println!(
        "attach + detach round trips: {} in {:.1} s = {:.1}/s ({} workers); round trip ms p50 {:.2} p99 {:.2} max {:.2}; failures {}",
        report.round_trips,
        report.seconds,
        report.round_trips_per_s,
        report.workers,
        report.round_trip_ms.p50,
        report.round_trip_ms.p99,
        report.round_trip_ms.max,
        report.failures
    );
    println!(
        "  {:<10} {:<10} {:>10} {:>14} {:>14} {:>12} {:>8} {:>6} {:>8}",
        "scene",
        "server",
        "population",
        "p99 worst 1s",
        "p99 median 1s",
        "p99 total",
        "budget",
        "late",
        "skipped"
    );
    println!(
        "logins: {:.1}/s ({:.1}/s with a password, {:.1}/s with a resume key; {} clients), failures {}",
        report.logins_per_s,
        report.logins_password_per_s,
        report.logins_resumed_per_s,
        report.login_clients,
        report.login_failures
    );
    println!(
        "save batches: {:.1}/s taken, {:.1} acks/s; lock: {} holds ({:.0}/s), mean {:.2} µs, p99 ≤ {} µs, max ≤ {} µs, {} over 1 ms",
        report.save_batches_per_s,
        report.save_acks_per_s,
        report.lock.acquisitions,
        report.lock.acquisitions_per_s,
        report.lock.mean_us,
        report.lock.p99_us_at_most,
        report.lock.max_us_at_most,
        report.lock.over_1ms
    );
    for s in &report.scenes {
        println!(
            "  {:<10} {:<10} {:>10} {:>11.2} ms {:>11.2} ms {:>9.2} ms {:>5.0} ms {:>6} {:>8}",
            s.scene,
            s.server,
            s.population,
            s.tick_p99_ms_worst_window,
            s.tick_p99_ms_median_window,
            s.tick_p99_ms_total,
            s.budget_ms,
            s.late_ticks,
            s.skipped_ticks
        );
    }
    if format == ReportFormat::Json {
        println!("{}", serde_json::to_string(report)?);
    }
    Ok(())
}

struct RemoveOnDrop(std::path::PathBuf);

impl Drop for RemoveOnDrop {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}
