//! AOI equals the brute-force all-pairs answer, tick after tick, on random and
//! adversarial layouts: cell borders, exact radius boundaries, everyone in one
//! cell, points outside the grid, hysteresis, radius changes, and entities
//! joining and leaving.

#![allow(clippy::unwrap_used)] // tests and benches: a failed unwrap is a failed run

use proptest::prelude::*;
use tessera_sim::aoi::{AoiStage, Diff, Grid, Scratch, brute_force_update, update_observer};

fn sorted(mut v: Vec<u32>) -> Vec<u32> {
    v.sort_unstable();
    v
}

/// One entity's position at each step, or `None` when absent (left the scene).
type Track = Vec<Option<(f32, f32)>>;

/// Runs grid and brute force side by side over all steps and compares every
/// observer's visible set and diff at every step.
fn check(tracks: &[Track], radii: &[f32], margin: f32, cell: f32) -> Result<(), TestCaseError> {
    let n = tracks.len();
    let steps = tracks[0].len();
    let mut grid = Grid::new([0.0, 0.0], [100.0, 100.0], cell);
    let mut vis_g: Vec<Vec<u32>> = vec![Vec::new(); n];
    let mut vis_b: Vec<Vec<u32>> = vec![Vec::new(); n];
    let (mut dg, mut db, mut scratch) = (Diff::default(), Diff::default(), Scratch::default());
    for step in 0..steps {
        let items: Vec<(u32, f32, f32)> = tracks
            .iter()
            .enumerate()
            .filter_map(|(i, t)| t[step].map(|(x, y)| (i as u32, x, y)))
            .collect();
        grid.rebuild(&items);
        let radius = radii[step % radii.len()];
        for &(id, x, y) in &items {
            let i = id as usize;
            update_observer(
                &grid,
                id,
                [x, y],
                radius,
                margin,
                &mut vis_g[i],
                &mut dg,
                &mut scratch,
            );
            brute_force_update(&items, id, [x, y], radius, margin, &mut vis_b[i], &mut db);
            prop_assert_eq!(
                sorted(vis_g[i].clone()),
                sorted(vis_b[i].clone()),
                "visible, step {} obs {}",
                step,
                id
            );
            prop_assert_eq!(
                sorted(dg.enters.clone()),
                sorted(db.enters.clone()),
                "enters, step {} obs {}",
                step,
                id
            );
            prop_assert_eq!(
                sorted(dg.leaves.clone()),
                sorted(db.leaves.clone()),
                "leaves, step {} obs {}",
                step,
                id
            );
            prop_assert_eq!(dg.stays, db.stays, "stays, step {} obs {}", step, id);
            prop_assert!(!vis_g[i].contains(&id), "an observer never sees itself");
            // Diff is consistent with the set: |new| = stays + enters.
            prop_assert_eq!(vis_g[i].len(), dg.stays as usize + dg.enters.len());
        }
        // Absent observers keep their set untouched (they are not updated).
    }
    Ok(())
}

/// Coordinates biased to the nasty places: cell borders (multiples of the cell
/// size), the grid edges, and outside the grid.
fn coord(cell: f32) -> impl Strategy<Value = f32> {
    prop_oneof![
        4 => 0.0f32..100.0,
        2 => (0u32..=10).prop_map(move |k| k as f32 * cell),
        1 => prop_oneof![Just(0.0f32), Just(100.0f32), Just(-25.0f32), Just(130.0f32), Just(99.999f32)],
    ]
}

fn tracks(n: usize, steps: usize, cell: f32) -> impl Strategy<Value = Vec<Track>> {
    prop::collection::vec(
        prop::collection::vec(
            prop::option::weighted(0.85, (coord(cell), coord(cell))),
            steps,
        ),
        1..n,
    )
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 200, .. ProptestConfig::default() })]

    #[test]
    fn grid_equals_brute_force_no_margin(t in tracks(40, 6, 10.0), r in 0.0f32..40.0) {
        check(&t, &[r], 0.0, 10.0)?;
    }

    #[test]
    fn grid_equals_brute_force_with_hysteresis(t in tracks(40, 8, 10.0), r in 1.0f32..30.0, m in 0.0f32..10.0) {
        check(&t, &[r], m, 10.0)?;
    }

    #[test]
    fn grid_equals_brute_force_radius_changes(t in tracks(30, 8, 7.5), radii in prop::collection::vec(0.0f32..50.0, 1..5), m in 0.0f32..5.0) {
        // The grid cell is unrelated to the radius: small and large radii both.
        check(&t, &radii, m, 7.5)?;
    }

    #[test]
    fn exact_radius_boundaries(n in 2usize..30, r in 1u32..20) {
        // Points on an integer lattice: many pairs sit exactly at distance r.
        let tracks: Vec<Track> = (0..n).map(|i| {
            let (x, y) = ((i % 6) as f32 * r as f32, (i / 6) as f32 * r as f32);
            vec![Some((x, y)), Some((x + r as f32, y)), Some((x, y))]
        }).collect();
        check(&tracks, &[r as f32], 0.0, r as f32)?;
        check(&tracks, &[r as f32], 1.0, 5.0)?;
    }

    #[test]
    fn everyone_in_one_cell(n in 2usize..60, jitter in prop::collection::vec((0.0f32..0.5, 0.0f32..0.5), 60)) {
        let tracks: Vec<Track> = (0..n).map(|i| vec![Some((50.0 + jitter[i].0, 50.0 + jitter[i].1)); 3]).collect();
        check(&tracks, &[0.3, 1.0], 0.1, 10.0)?;
    }
}

#[test]
fn stage_matches_brute_force_over_a_random_walk() {
    // The parallel AoiStage (what `tessera aoi` runs) against brute force.
    let n = 400;
    let mut rng = tessera_sim::rng::SceneRng::new(9);
    let mut pos: Vec<[f32; 2]> = (0..n)
        .map(|_| [rng.range_f32(0.0, 200.0), rng.range_f32(0.0, 200.0)])
        .collect();
    let mut stage = AoiStage::new(n, [0.0, 0.0], [200.0, 200.0], 20.0, 3.0);
    let mut brute: Vec<Vec<u32>> = vec![Vec::new(); n];
    let mut d = Diff::default();
    for _ in 0..20 {
        let totals = stage.step(&pos);
        let items: Vec<(u32, f32, f32)> = pos
            .iter()
            .enumerate()
            .map(|(i, p)| (i as u32, p[0], p[1]))
            .collect();
        let mut enter = 0;
        for i in 0..n {
            brute_force_update(&items, i as u32, pos[i], 20.0, 3.0, &mut brute[i], &mut d);
            enter += d.enters.len() as u64;
            assert_eq!(sorted(stage.visible(i).to_vec()), sorted(brute[i].clone()));
        }
        assert_eq!(totals.enter, enter);
        for p in pos.iter_mut() {
            p[0] = (p[0] + rng.range_f32(-4.0, 4.0)).clamp(0.0, 200.0);
            p[1] = (p[1] + rng.range_f32(-4.0, 4.0)).clamp(0.0, 200.0);
        }
    }
}
