//! The whole scene tick with N walkers, each an observer with its own client,
//! on the 1000 × 1000 field: a seeded world warmed past the initial enter storm.

#![allow(clippy::unwrap_used)] // tests and benches: a failed unwrap is a failed run

use criterion::{BenchmarkId, Criterion, criterion_group, criterion_main};
use tessera_sim::{SceneDef, SceneSettings, SceneWorld};

fn warmed(n: u32) -> SceneWorld {
    let mut w = SceneWorld::new(
        SceneDef::open_field("field", 1000.0),
        SceneSettings {
            seed: 1,
            max_population: n,
            ..SceneSettings::default()
        },
    );
    w.add_walkers(n, 1);
    for _ in 0..40 {
        w.tick();
    }
    w
}

fn tick(c: &mut Criterion) {
    let mut g = c.benchmark_group("scene_tick");
    g.sample_size(20);
    for n in [1_000u32, 10_000] {
        let mut w = warmed(n);
        g.bench_with_input(BenchmarkId::from_parameter(n), &n, |b, _| {
            b.iter(|| w.tick())
        });
    }
    g.finish();
}

criterion_group!(benches, tick);
criterion_main!(benches);
