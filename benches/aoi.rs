//! AOI: the grid stage against brute force, on random walkers at the density
//! of the reference workload (10 000 on 1000 × 1000, radius 50).

#![allow(clippy::unwrap_used)] // tests and benches: a failed unwrap is a failed run

use criterion::{BenchmarkId, Criterion, criterion_group, criterion_main};
use tessera_sim::aoi::{AoiStage, Diff, brute_force_update};
use tessera_sim::rng::SceneRng;

/// `n` walkers on a square sized to keep ~78 neighbours within radius 50.
fn walk(n: usize, ticks: usize) -> (f32, Vec<Vec<[f32; 2]>>) {
    let side = (n as f32 / 10_000.0).sqrt() * 1000.0;
    let mut rng = SceneRng::new(7);
    let mut pos: Vec<[f32; 2]> = (0..n)
        .map(|_| [rng.range_f32(0.0, side), rng.range_f32(0.0, side)])
        .collect();
    let mut frames = Vec::new();
    for _ in 0..ticks {
        for p in pos.iter_mut() {
            let a = rng.range_f32(0.0, std::f32::consts::TAU);
            p[0] = (p[0] + a.cos() * 5.0).clamp(0.0, side);
            p[1] = (p[1] + a.sin() * 5.0).clamp(0.0, side);
        }
        frames.push(pos.clone());
    }
    (side, frames)
}

fn aoi(c: &mut Criterion) {
    let mut g = c.benchmark_group("aoi_step");
    g.sample_size(20);
    for n in [1_000usize, 10_000] {
        let (side, frames) = walk(n, 16);
        let mut stage = AoiStage::new(n, [0.0, 0.0], [side, side], 50.0, 0.0);
        stage.step(&frames[0]);
        let mut k = 0;
        g.bench_with_input(BenchmarkId::new("grid", n), &n, |b, _| {
            b.iter(|| {
                k = (k + 1) % frames.len();
                stage.step(&frames[k])
            })
        });
        if n <= 1_000 {
            let mut vis: Vec<Vec<u32>> = vec![Vec::new(); n];
            let mut d = Diff::default();
            g.bench_with_input(BenchmarkId::new("brute_force", n), &n, |b, _| {
                b.iter(|| {
                    k = (k + 1) % frames.len();
                    let f = &frames[k];
                    let items: Vec<(u32, f32, f32)> = f
                        .iter()
                        .enumerate()
                        .map(|(i, p)| (i as u32, p[0], p[1]))
                        .collect();
                    for i in 0..n {
                        brute_force_update(&items, i as u32, f[i], 50.0, 0.0, &mut vis[i], &mut d);
                    }
                })
            });
        }
    }
    g.finish();
}

criterion_group!(benches, aoi);
criterion_main!(benches);
