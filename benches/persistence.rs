//! save_batch of 1k and 10k PC states into a warmed database (durable commits).
#![allow(clippy::unwrap_used)]

use std::hint::black_box;
use std::time::Duration;

use criterion::{BenchmarkId, Criterion, criterion_group, criterion_main};
use tessera_persistence::{NewAvatar, PcState, SaveBatch, Store};

fn save_batch(c: &mut Criterion) {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path().join("bench.redb")).unwrap();
    let account = store
        .register("bench@tessera.invalid", "bench password", None)
        .unwrap();
    let mut group = c.benchmark_group("save_batch");
    group
        .sample_size(20)
        .measurement_time(Duration::from_secs(5));
    for pcs in [1_000usize, 10_000] {
        let scene = store.create_scene(&format!("bench-{pcs}")).unwrap();
        let new: Vec<NewAvatar> = (0..pcs)
            .map(|i| NewAvatar {
                name: format!("b{pcs}x{i}"),
                figure: String::new(),
                scene,
            })
            .collect();
        let avatars = store.provision_avatars(account, &new).unwrap();
        let mut tick = 0u64;
        let mut batch = move || {
            tick += 1;
            SaveBatch {
                objects: Vec::new(),
                scene,
                states: avatars
                    .iter()
                    .map(|&avatar| PcState {
                        game: Vec::new(),
                        avatar,
                        scene,
                        position: [tick as f32, (avatar % 1000) as f32],
                        heading: 1.0,
                        action: 1,
                        mount: 0,
                        online: true,
                        tick,
                    })
                    .collect(),
            }
        };
        // Warm: the rows exist, so the bench measures the steady state of overwrites.
        store.save_batch(&batch()).unwrap();
        group.bench_with_input(BenchmarkId::from_parameter(pcs), &pcs, |b, _| {
            b.iter_batched(
                &mut batch,
                |batch| black_box(store.save_batch(&batch).unwrap()),
                criterion::BatchSize::LargeInput,
            );
        });
    }
    group.finish();
}

criterion_group!(benches, save_batch);
criterion_main!(benches);
