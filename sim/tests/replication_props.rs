//! Replication under loss, duplication and reordering, against a
//! brute-force model: after a spell of loss-free ticks every client's view
//! equals the server's truth, whatever happened to the packets before.

#![allow(clippy::unwrap_used)] // tests: a failed unwrap is a failed run

use std::collections::BTreeMap;

use proptest::prelude::*;
use tessera_sim::components::{Net, Pc, Pose, Position};
use tessera_sim::protocol::{MoveMode, NetId, Quantized};
use tessera_sim::testing::{LossyLink, TestClient, attach_at, input, open_world};
use tessera_sim::{Inbound, SceneEvent, SceneSettings, SceneWorld};

/// Loss-free ticks after which every view must have converged.
const SETTLE_TICKS: u64 = 30;

/// The truth by brute force: every PC within the radius (no hysteresis
/// margin in these worlds), capped at the `max_interest` nearest by the
/// documented key (squared distance in f32, truncated to u32; ties by id).
fn brute_force(w: &mut SceneWorld, client: u64) -> (NetId, Vec<(NetId, Quantized)>) {
    let info = w.info();
    let (r, k, quant) = (
        info.settings.aoi_radius,
        info.settings.max_interest,
        info.quantizer,
    );
    let world = w.world_mut();
    let mut q = world.query::<(&Net, &Position, &Pose, &Pc)>();
    let all: Vec<(NetId, [f32; 2], Quantized, u64)> = q
        .iter(world)
        .map(|(n, p, pose, pc)| {
            let qz = quant.quantize(p.0, pose.heading, pose.action, pose.mount);
            (n.0, p.0, qz, pc.client)
        })
        .collect();
    let me = all.iter().find(|e| e.3 == client).unwrap();
    let mut near: Vec<(u32, NetId, Quantized)> = all
        .iter()
        .filter(|e| e.0 != me.0)
        .filter_map(|e| {
            let (dx, dy) = (e.1[0] - me.1[0], e.1[1] - me.1[1]);
            let d2 = dx * dx + dy * dy;
            (d2 <= r * r).then(|| (d2.min(4.0e9) as u32, e.0, e.2))
        })
        .collect();
    near.sort_unstable_by_key(|e| (e.0, e.1));
    near.truncate(k);
    let mut v: Vec<(NetId, Quantized)> = near.into_iter().map(|e| (e.1, e.2)).collect();
    v.sort_unstable_by_key(|e| e.0);
    (me.0, v)
}

fn run(
    seed: u64,
    n: u64,
    loss: f32,
    dup: f32,
    delay: u64,
    chaos: u64,
    budget: usize,
    k: usize,
) -> Result<(), TestCaseError> {
    let mut w = open_world(
        200.0,
        SceneSettings {
            seed,
            aoi_radius: 40.0,
            aoi_margin: 0.0,
            packet_budget: budget,
            max_interest: k,
            ..SceneSettings::default()
        },
    );
    let mut rng = tessera_sim::rng::SceneRng::new(seed ^ 0x5eed);
    let mut link = LossyLink::new(seed, loss, dup, delay);
    let mut clients: BTreeMap<u64, TestClient> = BTreeMap::new();
    for c in 0..n {
        w.push(attach_at(
            c,
            [rng.range_f32(60.0, 140.0), rng.range_f32(60.0, 140.0)],
        ))
        .unwrap();
    }
    let mut gone = Vec::new();
    for t in 0..chaos + SETTLE_TICKS {
        let calm = t >= chaos;
        if calm {
            link = LossyLink::perfect();
        }
        // Churn while the network is bad: some clients leave, and come back
        // the tick after (a detach is applied after the tick's attaches).
        for c in gone.drain(..) {
            let p = [rng.range_f32(60.0, 140.0), rng.range_f32(60.0, 140.0)];
            w.push(attach_at(c, p)).unwrap();
        }
        for c in 0..n {
            if !calm && rng.next_f32() < 0.01 {
                w.push(Inbound::Detach { client: c }).unwrap();
                gone.push(c);
            }
            let dir = if calm {
                [0.0, 0.0]
            } else {
                [rng.range_f32(-1.0, 1.0), rng.range_f32(-1.0, 1.0)]
            };
            let _ = w.push(input(c, t as u32, dir, MoveMode::Run));
        }
        let out = w.tick();
        let now = out.tick;
        for e in &out.events {
            match e {
                SceneEvent::Attached { client, net_id, .. } => {
                    let mut tc = TestClient::new(*client);
                    tc.entered(&w, *net_id);
                    clients.insert(*client, tc);
                }
                SceneEvent::Detached { client, .. } => {
                    clients.remove(client);
                }
                _ => {}
            }
        }
        for (c, bytes) in &out.packets {
            if let Some(tc) = clients.get_mut(c) {
                tc.send(now, bytes, &mut link);
            }
        }
        for tc in clients.values_mut() {
            tc.receive(now);
            if let Some(a) = tc.ack(&mut link) {
                w.push(a).unwrap();
            }
        }
    }
    for (c, tc) in &clients {
        let (own, want) = brute_force(&mut w, *c);
        let have: Vec<(NetId, Quantized)> = tc.view.entities().map(|(id, e)| (id, e.q)).collect();
        prop_assert_eq!(tc.view.own().map(|o| o.0), Some(own));
        prop_assert_eq!(
            &have,
            &want,
            "client {} (loss {}, dup {}, delay {}) {:?} {:?} tick {}",
            c,
            loss,
            dup,
            delay,
            tc.view.counters,
            w.counters(),
            tc.view.tick()
        );
        prop_assert!(tc.check(&mut w).is_ok(), "{:?}", tc.check(&mut w));
    }
    let counters = w.counters();
    prop_assert_eq!(counters.acks_invalid, 0);
    if loss > 0.05 && chaos > 40 {
        prop_assert!(counters.items_resent > 0, "loss never repaired anything");
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 24, ..ProptestConfig::default() })]

    #[test]
    fn views_converge_after_any_loss_duplication_and_reordering(
        seed in 1u64..1_000_000,
        n in 4u64..40,
        loss in prop_oneof![Just(0.0f32), 0.01f32..0.6],
        dup in prop_oneof![Just(0.0f32), 0.0f32..0.3],
        delay in 0u64..5,
        chaos in 10u64..120,
        budget in prop_oneof![Just(1200usize), 60usize..400],
        k in prop_oneof![Just(256usize), 2usize..12],
    ) {
        run(seed, n, loss, dup, delay, chaos, budget, k)?;
    }
}

/// The case the issue measured: one lost packet used to leave a ghost or a
/// missing entity for ever.
#[test]
fn heavy_loss_then_calm_converges() {
    run(7, 30, 0.2, 0.05, 3, 200, 1200, 256).unwrap();
    run(8, 30, 0.5, 0.0, 0, 200, 120, 8).unwrap();
}
