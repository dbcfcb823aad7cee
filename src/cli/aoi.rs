//! `tessera aoi`: the scene's own AOI stage over a recorded position trace,
//! and `tessera aoi-trace` to generate such a trace.
//!
//! Trace format: little-endian f32, laid out `[ticks + 1][entities][2]`
//! (x, y), no header.

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Instant;

use anyhow::{Context, bail};
use clap::Args;
use serde_json::json;
use tessera_sim::aoi::{AoiStage, AoiTotals};
use tessera_sim::rng::SceneRng;

use super::report::{MsSummary, new_histogram};

#[derive(Debug, Args)]
pub struct AoiArgs {
    /// Position trace: little-endian f32 `[ticks+1][entities][2]`, no header.
    #[arg(long)]
    trace: PathBuf,
    /// Entities per tick in the trace.
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..=10_000_000))]
    entities: u32,
    /// AOI radius: an entity sees another at distance <= R.
    #[arg(long)]
    radius: f32,
    /// Hysteresis margin: once seen, kept until beyond R + M.
    #[arg(long, default_value_t = 0.0)]
    hysteresis: f32,
    /// Print one JSON object as the last stdout line.
    #[arg(long)]
    json: bool,
}

/// Reads and validates a trace into one `Vec<[f32; 2]>` per tick.
pub fn read_trace(path: &std::path::Path, entities: usize) -> anyhow::Result<Vec<Vec<[f32; 2]>>> {
    let bytes =
        std::fs::read(path).with_context(|| format!("cannot read trace {}", path.display()))?;
    let frame = entities * 2 * 4;
    if bytes.len() % frame != 0 {
        bail!(
            "trace {}: {} bytes is not a whole number of frames of {entities} entities × 2 × f32 ({frame} bytes each)",
            path.display(),
            bytes.len()
        );
    }
    let frames = bytes.len() / frame;
    if frames < 2 {
        bail!(
            "trace {}: holds {frames} frame(s); need at least 2 (tick 0 plus one tick)",
            path.display()
        );
    }
    let mut out = Vec::with_capacity(frames);
    for (f, chunk) in bytes.chunks_exact(frame).enumerate() {
        let mut tick = Vec::with_capacity(entities);
        for (e, xy) in chunk.chunks_exact(8).enumerate() {
            let x = f32::from_le_bytes([xy[0], xy[1], xy[2], xy[3]]);
            let y = f32::from_le_bytes([xy[4], xy[5], xy[6], xy[7]]);
            if !(x.is_finite() && y.is_finite()) {
                bail!(
                    "trace {}: tick {f}, entity {e}: position ({x}, {y}) is not finite",
                    path.display()
                );
            }
            tick.push([x, y]);
        }
        out.push(tick);
    }
    Ok(out)
}

pub fn run(args: AoiArgs) -> anyhow::Result<ExitCode> {
    if !(args.radius.is_finite() && args.radius >= 0.0) {
        bail!("--radius must be a finite number >= 0, got {}", args.radius);
    }
    if !(args.hysteresis.is_finite() && args.hysteresis >= 0.0) {
        bail!(
            "--hysteresis must be a finite number >= 0, got {}",
            args.hysteresis
        );
    }
    let n = args.entities as usize;
    let frames = read_trace(&args.trace, n)?;
    let ticks = frames.len() - 1;
    // Grid bounds from the data (exactness does not depend on them).
    let (mut lo, mut hi) = ([f32::MAX; 2], [f32::MIN; 2]);
    for p in frames.iter().flatten() {
        for k in 0..2 {
            lo[k] = lo[k].min(p[k]);
            hi[k] = hi[k].max(p[k]);
        }
    }
    let size = [(hi[0] - lo[0]).max(1.0), (hi[1] - lo[1]).max(1.0)];
    let mut stage = AoiStage::new(n, lo, size, args.radius, args.hysteresis);
    stage.step(&frames[0]);
    let mut hist = new_histogram();
    let mut totals = AoiTotals::default();
    for frame in &frames[1..] {
        let t0 = Instant::now();
        let t = stage.step(frame);
        hist.saturating_record((t0.elapsed().as_nanos() as u64).max(1));
        totals.merge(t);
    }
    let ms = MsSummary::of(&hist);
    let mut stdout = std::io::stdout().lock();
    if args.json {
        let report = json!({
            "entities": n, "ticks": ticks, "radius": args.radius, "hysteresis": args.hysteresis,
            "enter": totals.enter, "leave": totals.leave, "stay": totals.stay,
            "ms_per_tick": ms,
        });
        writeln!(stdout, "{report}")?;
    } else {
        writeln!(
            stdout,
            "aoi: {n} entities, {ticks} ticks, radius {}, hysteresis {}",
            args.radius, args.hysteresis
        )?;
        writeln!(
            stdout,
            "events: {} enter, {} leave, {} stay",
            totals.enter, totals.leave, totals.stay
        )?;
        writeln!(
            stdout,
            "ms per tick: mean {:.3}, p50 {:.3}, p99 {:.3}, max {:.3}",
            ms.mean, ms.p50, ms.p99, ms.max
        )?;
    }
    Ok(ExitCode::SUCCESS)
}

#[derive(Debug, Args)]
pub struct AoiTraceArgs {
    /// Output file.
    #[arg(long)]
    out: PathBuf,
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..=1_000_000))]
    entities: u32,
    /// Ticks after tick 0 (the file holds ticks + 1 frames).
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..=100_000))]
    ticks: u32,
    /// Side of the square map.
    #[arg(long, default_value_t = 1000.0)]
    size: f32,
    /// Units moved per tick.
    #[arg(long, default_value_t = 5.0)]
    speed: f32,
    #[arg(long, default_value_t = 1)]
    seed: u64,
}

/// Random walkers in a square: each moves `speed` per tick, turns now and
/// then, and bounces off the edges.
pub fn run_trace(args: AoiTraceArgs) -> anyhow::Result<ExitCode> {
    if !(args.size.is_finite() && args.size > 0.0 && args.speed.is_finite() && args.speed >= 0.0) {
        bail!("--size must be > 0 and --speed >= 0");
    }
    let n = args.entities as usize;
    let mut rng = SceneRng::new(args.seed);
    let side = args.size;
    let mut pos: Vec<[f32; 2]> = (0..n)
        .map(|_| [rng.range_f32(0.0, side), rng.range_f32(0.0, side)])
        .collect();
    let mut dir: Vec<f32> = (0..n)
        .map(|_| rng.range_f32(0.0, std::f32::consts::TAU))
        .collect();
    let file = std::fs::File::create(&args.out)
        .with_context(|| format!("cannot create {}", args.out.display()))?;
    let mut w = std::io::BufWriter::new(file);
    for t in 0..=args.ticks {
        if t > 0 {
            for i in 0..n {
                if rng.next_f32() < 0.05 {
                    dir[i] = rng.range_f32(0.0, std::f32::consts::TAU);
                }
                let mut p = [
                    pos[i][0] + dir[i].cos() * args.speed,
                    pos[i][1] + dir[i].sin() * args.speed,
                ];
                if !(0.0..=side).contains(&p[0]) || !(0.0..=side).contains(&p[1]) {
                    dir[i] = (dir[i] + std::f32::consts::PI).rem_euclid(std::f32::consts::TAU);
                    p = [p[0].clamp(0.0, side), p[1].clamp(0.0, side)];
                }
                pos[i] = p;
            }
        }
        for p in &pos {
            w.write_all(&p[0].to_le_bytes())?;
            w.write_all(&p[1].to_le_bytes())?;
        }
    }
    w.flush()?;
    eprintln!(
        "wrote {} ({} entities × {} frames)",
        args.out.display(),
        n,
        args.ticks + 1
    );
    Ok(ExitCode::SUCCESS)
}
