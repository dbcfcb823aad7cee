//! `tessera sim`: one scene world, no network, as fast as it can (or in real
//! time), with a tick-budget report.

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::Context;
use clap::{Args, ValueEnum};
use serde_json::json;
use std::collections::BTreeMap;
use tessera_sim::metrics::{STAGES, SpanKind};

use tessera_sim::components::{Net, Pc};
use tessera_sim::protocol::{StateAck, advance_mask};
use tessera_sim::testing::{LossyLink, TestClient};
use tessera_sim::{Game, Inbound, MAX_PACKET_BYTES, SceneSettings, SceneWorld};

use super::report::MsSummary;

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ReportFormat {
    Text,
    Json,
}

#[derive(Debug, Args)]
pub struct SimArgs {
    /// Scene name (in assets/scenes) or path to a scene TOML file.
    #[arg(long, default_value = "field")]
    scene: String,
    /// Walkers to spawn; each is an observer with its own client, as if connected.
    #[arg(long, default_value_t = 1000)]
    entities: u32,
    /// Ticks to run.
    #[arg(long, default_value_t = 1000, value_parser = clap::value_parser!(u64).range(1..=10_000_000))]
    ticks: u64,
    /// RNG seed.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// AOI radius of every walker.
    #[arg(long, default_value_t = 50.0)]
    radius: f32,
    /// AOI hysteresis margin.
    #[arg(long, default_value_t = 5.0)]
    hysteresis: f32,
    /// Tick rate (default: the scene's).
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..=1000))]
    tick_hz: Option<u32>,
    /// Pace ticks at the tick rate instead of running flat out.
    #[arg(long)]
    realtime: bool,
    /// Lose this fraction (0 to 1) of the state packets on the way to the
    /// walkers' clients, at seeded random. Every client acknowledges what it
    /// gets before the next tick (a one-tick round trip).
    #[arg(long, default_value_t = 0.0)]
    loss: f32,
    /// Lose packets only during the first this many ticks (default: all).
    #[arg(long)]
    loss_ticks: Option<u64>,
    /// Give every walker's client a real view (`WorldView`) and, once the
    /// loss stops, report after how many ticks every view equals the truth.
    #[arg(long)]
    check_views: bool,
    /// Report format; json prints one JSON object as the last stdout line.
    #[arg(long, value_enum, default_value_t = ReportFormat::Text)]
    report: ReportFormat,
    /// Write a Chrome trace-event JSON of every stage of every tick (open in Perfetto).
    #[arg(long)]
    trace_out: Option<PathBuf>,
}

pub fn run(args: SimArgs, game: &dyn Game) -> anyhow::Result<ExitCode> {
    validate(&args)?;
    let def = crate::scenes::load(&args.scene)?;
    let scene_name = def.name.clone();
    let settings = SceneSettings {
        seed: args.seed,
        tick_hz: args.tick_hz,
        aoi_radius: args.radius,
        aoi_margin: args.hysteresis,
        max_population: args.entities.max(1),
        trace: args.trace_out.is_some(),
        ..SceneSettings::default()
    };
    let mut world = SceneWorld::for_game(game, def, settings)
        .with_context(|| format!("game {:?} cannot build scene {scene_name:?}", game.name()))?;
    world.add_walkers(args.entities, 1);
    let mut acks = Acker::new(args.loss, args.seed, args.loss_ticks);
    if args.check_views {
        acks.check_views(&mut world);
    }
    let mut run = run_ticks(&mut world, args.ticks, args.realtime, &mut acks);
    run.lost = acks.lost;
    run.views = acks.views_report(args.ticks);
    if let Some(path) = &args.trace_out {
        write_trace(path, world.metrics())
            .with_context(|| format!("cannot write trace to {}", path.display()))?;
    }
    let mut stdout = std::io::stdout().lock();
    match args.report {
        ReportFormat::Json => writeln!(
            stdout,
            "{}",
            json_report(&args, game.name(), &scene_name, &world, &run)
        )?,
        ReportFormat::Text => {
            print_text(&mut stdout, &args, game.name(), &scene_name, &world, &run)?
        }
    }
    Ok(if run.over_budget > 0 {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    })
}

fn validate(args: &SimArgs) -> anyhow::Result<()> {
    if !(args.radius.is_finite() && args.radius > 0.0 && args.radius <= 10_000.0) {
        anyhow::bail!(
            "--radius must be a number in (0, 10000], got {}",
            args.radius
        );
    }
    if !(args.hysteresis.is_finite() && args.hysteresis >= 0.0 && args.hysteresis <= 10_000.0) {
        anyhow::bail!(
            "--hysteresis must be a number in [0, 10000], got {}",
            args.hysteresis
        );
    }
    if !(0.0..=1.0).contains(&args.loss) {
        anyhow::bail!("--loss must be between 0 and 1, got {}", args.loss);
    }
    if args.entities > 200_000 {
        anyhow::bail!("--entities must be at most 200000, got {}", args.entities);
    }
    Ok(())
}

/// The walkers' clients, reduced to what acknowledging needs: each packet
/// arrives (in order, at once) or is lost; the newest tick applied and the
/// mask of the 32 before it go back as the client's acknowledgement.
struct Acker {
    loss: f32,
    /// The loss stops after this tick (`--loss-ticks`).
    loss_until: Option<u64>,
    rng: tessera_sim::rng::SceneRng,
    clients: BTreeMap<u64, (u32, u32)>,
    lost: u64,
    /// `--check-views`: a real client per walker instead of the two numbers.
    views: Option<ViewCheck>,
}

/// `--check-views`: every walker's client, and when their views converged.
struct ViewCheck {
    clients: BTreeMap<u64, TestClient>,
    link: LossyLink,
    /// Ticks after the loss stopped until every view equalled the truth.
    converged_after: Option<u64>,
    /// Views that differed from the truth at the last tick checked.
    unconverged: u64,
}

impl Acker {
    fn new(loss: f32, seed: u64, loss_until: Option<u64>) -> Self {
        Self {
            loss,
            loss_until,
            rng: tessera_sim::rng::SceneRng::new(seed ^ 0xac4),
            clients: BTreeMap::new(),
            lost: 0,
            views: None,
        }
    }

    /// Gives every walker's client a view (walkers have no attach event).
    fn check_views(&mut self, world: &mut SceneWorld) {
        let mut q = world.world_mut().query::<(&Pc, &Net)>();
        let ids: Vec<(u64, u32)> = q
            .iter(world.world())
            .map(|(pc, net)| (pc.client, net.0))
            .collect();
        let mut clients = BTreeMap::new();
        for (client, net) in ids {
            let mut tc = TestClient::new(client);
            tc.entered(world, net);
            clients.insert(client, tc);
        }
        self.views = Some(ViewCheck {
            clients,
            link: LossyLink::new(self.rng.next_u64(), self.loss, 0.0, 0),
            converged_after: None,
            unconverged: 0,
        });
    }

    fn views_report(&self, ticks: u64) -> Option<serde_json::Value> {
        let v = self.views.as_ref()?;
        Some(json!({
            "clients": v.clients.len(),
            "loss_stopped_after_tick": self.loss_until.unwrap_or(ticks).min(ticks),
            "converged_after_ticks": v.converged_after,
            "unconverged_at_end": v.unconverged,
        }))
    }

    fn losing(&self, tick: u64) -> bool {
        self.loss > 0.0 && self.loss_until.is_none_or(|n| tick <= n)
    }

    fn acknowledge(&mut self, world: &mut SceneWorld, out: &tessera_sim::TickOutput) {
        let losing = self.losing(out.tick);
        if let Some(v) = &mut self.views {
            v.link.loss = if losing { self.loss } else { 0.0 };
            for (client, bytes) in &out.packets {
                if let Some(tc) = v.clients.get_mut(client)
                    && tc.send(out.tick, bytes, &mut v.link) == 0
                {
                    self.lost += 1;
                }
            }
            for tc in v.clients.values_mut() {
                tc.receive(out.tick);
                if let Some(ack) = tc.ack(&mut v.link) {
                    let _ = world.push(ack);
                }
            }
            if !losing && v.converged_after.is_none() {
                v.unconverged = v
                    .clients
                    .values()
                    .filter(|tc| tc.check(world).is_err())
                    .count() as u64;
                if v.unconverged == 0 {
                    let stop = self.loss_until.unwrap_or(0);
                    v.converged_after = Some(out.tick.saturating_sub(stop));
                }
            }
            return;
        }
        let (scene, epoch) = (world.info().tag, world.info().settings.epoch);
        let tick = out.tick as u32;
        for (&client, _) in &out.packets {
            if losing && self.rng.next_f32() < self.loss {
                self.lost += 1;
                continue;
            }
            let (latest, mask) = self.clients.entry(client).or_insert((0, 0));
            *mask = advance_mask(*latest, *mask, tick);
            *latest = tick;
            let ack = StateAck {
                scene,
                epoch,
                tick,
                mask: *mask,
            };
            // A full inbox refuses it, as the host would: counted by the world.
            let _ = world.push(Inbound::Ack { client, ack });
        }
    }
}

/// What a run's ticks produced, besides the world's own metrics.
struct RunTotals {
    bytes_total: u64,
    max_packet: usize,
    over_budget: u64,
    saves: u64,
    wall: Duration,
    state_hash: u64,
    /// Packets lost on purpose (`--loss`).
    lost: u64,
    /// `--check-views`: the views' convergence once the loss stopped.
    views: Option<serde_json::Value>,
}

/// Runs `ticks` ticks, flat out or paced at the tick rate (a late tick is
/// not caught up: a sim has no backlog to honour).
fn run_ticks(world: &mut SceneWorld, ticks: u64, realtime: bool, acks: &mut Acker) -> RunTotals {
    let period = Duration::from_secs_f64(1.0 / world.tick_hz() as f64);
    let mut run = RunTotals {
        bytes_total: 0,
        max_packet: 0,
        over_budget: 0,
        saves: 0,
        wall: Duration::ZERO,
        state_hash: 0,
        lost: 0,
        views: None,
    };
    let started = Instant::now();
    let mut next = Instant::now();
    for _ in 0..ticks {
        let out = world.tick();
        for (_, p) in &out.packets {
            run.bytes_total += p.len() as u64;
            run.max_packet = run.max_packet.max(p.len());
            if p.len() > MAX_PACKET_BYTES {
                run.over_budget += 1;
            }
        }
        acks.acknowledge(world, &out);
        run.saves += out.save.map_or(0, |b| b.states.len() as u64);
        if realtime {
            next += period;
            let now = Instant::now();
            if next > now {
                std::thread::sleep(next - now);
            } else {
                next = now;
            }
        }
    }
    run.wall = started.elapsed();
    run.state_hash = world.state_hash();
    run
}

/// The report's "systems" map: every timed system, the game's too, by its
/// registered name (mean and p99, µs).
fn systems_json(
    metrics: &tessera_sim::metrics::TickMetrics,
) -> serde_json::Map<String, serde_json::Value> {
    let us = |ns: f64| (ns / 10.0).round() / 100.0;
    metrics
        .timed_systems()
        .map(|(t, h)| {
            let timing =
                json!({"mean_us": us(h.mean()), "p99_us": us(h.value_at_quantile(0.99) as f64)});
            (t.name.clone(), timing)
        })
        .collect()
}

fn json_report(
    args: &SimArgs,
    game: &str,
    scene_name: &str,
    world: &SceneWorld,
    run: &RunTotals,
) -> serde_json::Value {
    let metrics = world.metrics();
    let aoi = world.aoi_totals();
    let us = |ns: f64| (ns / 10.0).round() / 100.0;
    let timing = |h: &hdrhistogram::Histogram<u64>| json!({"mean_us": us(h.mean()), "p99_us": us(h.value_at_quantile(0.99) as f64)});
    let stages: serde_json::Map<String, serde_json::Value> = STAGES
        .iter()
        .zip(&metrics.stages)
        .map(|(name, h)| (name.to_string(), timing(h)))
        .collect();
    let systems = systems_json(metrics);
    json!({
        "game": game,
        "scene": scene_name,
        "entities": args.entities,
        "ticks": args.ticks,
        "seed": args.seed,
        "tick_hz": world.tick_hz(),
        "tick_ms": MsSummary::of(&metrics.tick),
        "stages": stages,
        "systems": systems,
        "aoi": {"enter": aoi.enter, "leave": aoi.leave, "stay": aoi.stay},
        "replication": {
            "bytes_per_tick": run.bytes_total / args.ticks,
            "max_packet_bytes": run.max_packet,
            "packets_over_budget": run.over_budget,
            "items_deferred": world.counters().items_deferred,
            "packets_lost": run.lost,
            "views": run.views,
            "items_resent": world.counters().items_resent,
        },
        "saved_states": run.saves,
        "wall_s": (run.wall.as_secs_f64() * 1000.0).round() / 1000.0,
        "state_hash": format!("{:016x}", run.state_hash),
    })
}

/// The text report: a row per stage and per system (mean, p99, share of the
/// tick budget), then the whole tick, AOI and replication totals.
fn print_text(
    stdout: &mut std::io::StdoutLock,
    args: &SimArgs,
    game: &str,
    scene_name: &str,
    world: &SceneWorld,
    run: &RunTotals,
) -> std::io::Result<()> {
    let tick_hz = world.tick_hz();
    let budget_ms = 1000.0 / tick_hz as f64;
    let metrics = world.metrics();
    let tick = MsSummary::of(&metrics.tick);
    let aoi = world.aoi_totals();
    writeln!(
        stdout,
        "scene {scene_name} (game {game}): {} walkers, {} ticks at {tick_hz} Hz (budget {budget_ms:.1} ms), seed {}, wall {:.2} s",
        args.entities,
        args.ticks,
        args.seed,
        run.wall.as_secs_f64()
    )?;
    let row = |out: &mut std::io::StdoutLock, name: &str, h| -> std::io::Result<()> {
        let s = MsSummary::of(h);
        let share = 100.0 * s.mean / budget_ms;
        writeln!(
            out,
            "{name:<22} {:>10.3} {:>10.3} {share:>8.1}%",
            s.mean, s.p99
        )
    };
    writeln!(
        stdout,
        "{:<22} {:>10} {:>10} {:>9}",
        "stage / system", "mean ms", "p99 ms", "% budget"
    )?;
    for (i, (name, h)) in STAGES.iter().zip(&metrics.stages).enumerate() {
        row(stdout, name, h)?;
        for (t, h) in metrics.timed_systems().filter(|(t, _)| t.stage == Some(i)) {
            row(stdout, &format!("  {}", t.name), h)?;
        }
    }
    // Systems timed in a set outside the pipeline's (if a game did so).
    for (t, h) in metrics.timed_systems().filter(|(t, _)| t.stage.is_none()) {
        row(stdout, &format!("  {}", t.name), h)?;
    }
    writeln!(
        stdout,
        "{:<22} {:>10.3} {:>10.3} {:>8.1}%   (p50 {:.3}, max {:.3})",
        "whole tick",
        tick.mean,
        tick.p99,
        100.0 * tick.mean / budget_ms,
        tick.p50,
        tick.max
    )?;
    writeln!(
        stdout,
        "aoi: {} enter, {} leave, {} stay",
        aoi.enter, aoi.leave, aoi.stay
    )?;
    writeln!(
        stdout,
        "replication: {} bytes/tick, largest packet {} B (cap {MAX_PACKET_BYTES}), {} items deferred, {} packets lost, {} items resent",
        run.bytes_total / args.ticks,
        run.max_packet,
        world.counters().items_deferred,
        run.lost,
        world.counters().items_resent
    )?;
    writeln!(stdout, "state_hash {:016x}", run.state_hash)
}

/// Chrome trace-event format: one complete ("X") event per stage per tick.
fn write_trace(
    path: &std::path::Path,
    metrics: &tessera_sim::metrics::TickMetrics,
) -> anyhow::Result<()> {
    let Some(spans) = &metrics.trace else {
        return Ok(());
    };
    let file = std::fs::File::create(path)?;
    let mut w = std::io::BufWriter::new(file);
    write!(w, "{{\"displayTimeUnit\":\"ms\",\"traceEvents\":[")?;
    for (i, s) in spans.iter().enumerate() {
        // One track: Perfetto nests tick ⊃ stage ⊃ system by time.
        let (name, tid) = match s.kind {
            SpanKind::Tick => ("tick", 1),
            SpanKind::Stage(i) => (STAGES[i], 1),
            SpanKind::System(i) => (metrics.system_name(i), 1),
        };
        // A game names its systems: escape the name for JSON.
        let name = serde_json::Value::from(name);
        if i > 0 {
            write!(w, ",")?;
        }
        write!(
            w,
            "{{\"name\":{name},\"cat\":\"tick\",\"ph\":\"X\",\"ts\":{:.3},\"dur\":{:.3},\"pid\":1,\"tid\":{tid},\"args\":{{\"tick\":{}}}}}",
            s.start_ns as f64 / 1000.0,
            s.dur_ns as f64 / 1000.0,
            s.tick
        )?;
    }
    writeln!(w, "]}}")?;
    w.flush()?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use tessera_sim::scene::SceneDef;
    use tessera_sim::testing::ProbeGame;

    #[test]
    fn a_game_system_is_in_the_report_and_the_trace_by_name() -> anyhow::Result<()> {
        let settings = SceneSettings {
            trace: true,
            ..SceneSettings::default()
        };
        let mut world = SceneWorld::builder(SceneDef::open_field("probe", 100.0), settings)
            .add_plugins(ProbeGame)
            .build()?;
        world.add_walkers(5, 1);
        for _ in 0..3 {
            world.tick();
        }
        let systems = systems_json(world.metrics());
        for name in ["probe_after_ingest", "probe_after_simulate", "integrate"] {
            assert!(systems[name]["mean_us"].is_number(), "{name}: {systems:?}");
        }
        let dir = tempfile::tempdir()?;
        let path = dir.path().join("trace.json");
        write_trace(&path, world.metrics())?;
        let trace: serde_json::Value = serde_json::from_slice(&std::fs::read(&path)?)?;
        let events = trace["traceEvents"].as_array().context("traceEvents")?;
        let probes = events
            .iter()
            .filter(|e| e["name"] == "probe_after_simulate")
            .count();
        assert_eq!(probes, 3);
        Ok(())
    }
}
