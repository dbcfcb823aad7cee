//! The scene world end to end, driven tick by tick through its public API.

#![allow(clippy::unwrap_used)] // tests and benches: a failed unwrap is a failed run

use std::collections::BTreeMap;
use tessera_sim::components::{Pc, Position};
use tessera_sim::protocol::{Input, MoveMode};
use tessera_sim::scene::{Rect, SceneDef};

use tessera_sim::testing::{
    LossyLink, TestClient, attach_at, decode, input, open_world, world_with_obstacles,
};
use tessera_sim::{Inbound, MAX_PACKET_BYTES, SceneEvent, SceneSettings, SceneWorld, TickOutput};

fn settings() -> SceneSettings {
    SceneSettings {
        flush_interval_ticks: Some(10),
        ..SceneSettings::default()
    }
}

fn position_of(w: &mut SceneWorld, client: u64) -> [f32; 2] {
    let world = w.world_mut();
    let mut q = world.query::<(&Pc, &Position)>();
    q.iter(world)
        .find(|(pc, _)| pc.client == client)
        .map(|(_, p)| p.0)
        .expect("client attached")
}

fn town() -> SceneDef {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../assets/scenes/town.toml");
    let text = std::fs::read_to_string(path).expect("town.toml");
    SceneDef::from_toml(path, &text).expect("town parses")
}

fn run_hash(seed: u64, ticks: u32) -> u64 {
    let mut def = town();
    def.npc_spawner[0].count = 50;
    let mut w = SceneWorld::new(def, SceneSettings { seed, ..settings() });
    w.add_walkers(200, 1000);
    for c in 1..=5u64 {
        w.push(attach_at(c, [200.0, 200.0])).unwrap();
    }
    for t in 0..ticks {
        for c in 1..=5u64 {
            let a = (t as f32 * 0.1 + c as f32).sin();
            w.push(input(c, t, [a, 1.0 - a.abs()], MoveMode::Run))
                .unwrap();
        }
        w.tick();
    }
    w.state_hash()
}

#[test]
fn same_seed_same_hash_other_seed_other_hash() {
    let a = run_hash(42, 120);
    let b = run_hash(42, 120);
    let c = run_hash(43, 120);
    assert_eq!(a, b, "same seed and inputs must give the same state");
    assert_ne!(a, c, "another seed must give another state");
}

#[test]
fn speed_hack_is_clamped_to_the_mode_cap() {
    let mut w = open_world(1000.0, settings());
    w.push(attach_at(1, [500.0, 500.0])).unwrap();
    w.tick();
    let hz = w.tick_hz() as f32;
    let cap = SceneSettings::default().run_speed / hz;
    for t in 0..20 {
        let before = position_of(&mut w, 1);
        w.push(input(1, t, [1000.0, 0.0], MoveMode::Run)).unwrap();
        w.tick();
        let after = position_of(&mut w, 1);
        let moved = ((after[0] - before[0]).powi(2) + (after[1] - before[1]).powi(2)).sqrt();
        assert!(moved <= cap + 1e-3, "moved {moved} > cap {cap}");
        assert!(
            moved > cap * 0.9,
            "should still move at the cap, moved {moved}"
        );
    }
    assert_eq!(w.counters().inputs_speed_clamped, 20);
}

#[test]
fn input_flood_is_capped_and_counted() {
    let mut w = open_world(1000.0, settings());
    w.push(attach_at(1, [500.0, 500.0])).unwrap();
    w.tick();
    let before = position_of(&mut w, 1);
    for s in 0..100 {
        w.push(input(1, s, [1.0, 0.0], MoveMode::Run)).unwrap();
    }
    w.tick();
    let after = position_of(&mut w, 1);
    let cap = SceneSettings::default().max_inputs_per_tick as u64;
    assert_eq!(w.counters().inputs_flood_dropped, 100 - cap);
    // A flood does not buy extra movement: one tick's worth at most.
    let step = SceneSettings::default().run_speed / w.tick_hz() as f32;
    assert!(after[0] - before[0] <= step + 1e-3);
}

#[test]
fn input_cap_counts_each_client_per_tick_whatever_the_arrival_order() {
    let mut w = open_world(1000.0, settings());
    w.push(attach_at(1, [400.0, 500.0])).unwrap();
    w.push(attach_at(2, [600.0, 500.0])).unwrap();
    w.tick();
    let cap = SceneSettings::default().max_inputs_per_tick as u64;
    // Interleaved: each client's own count, not the total, meets the cap.
    for s in 0..cap as u32 {
        w.push(input(2, s, [1.0, 0.0], MoveMode::Run)).unwrap();
        w.push(input(1, s, [1.0, 0.0], MoveMode::Run)).unwrap();
    }
    w.tick();
    assert_eq!(w.counters().inputs_flood_dropped, 0);
    w.push(input(1, 100, [1.0, 0.0], MoveMode::Run)).unwrap();
    for s in 0..=cap as u32 {
        w.push(input(2, 100 + s, [1.0, 0.0], MoveMode::Run))
            .unwrap();
    }
    // The next tick starts each count again.
    w.tick();
    assert_eq!(w.counters().inputs_flood_dropped, 1);
}

#[test]
fn nan_and_infinite_inputs_are_dropped_and_counted() {
    let mut w = open_world(1000.0, settings());
    w.push(attach_at(1, [500.0, 500.0])).unwrap();
    w.tick();
    for bad in [
        [f32::NAN, 0.0],
        [0.0, f32::INFINITY],
        [f32::NEG_INFINITY, f32::NAN],
    ] {
        w.push(input(1, 1, bad, MoveMode::Run)).unwrap();
    }
    w.push(Inbound::Input {
        client: 1,
        input: Input {
            heading: f32::NAN,
            ..Default::default()
        },
    })
    .unwrap();
    w.tick();
    assert_eq!(w.counters().inputs_invalid_dropped, 4);
    let p = position_of(&mut w, 1);
    assert_eq!(p, [500.0, 500.0]);
}

#[test]
fn bounds_clamp_and_no_teleport_from_saved_state() {
    let mut w = open_world(100.0, settings());
    w.push(attach_at(1, [99.0, 50.0])).unwrap();
    // A saved state outside the scene (corrupt or hostile) is not trusted.
    w.push(attach_at(2, [5000.0, -3.0])).unwrap();
    w.tick();
    assert_eq!(
        position_of(&mut w, 2),
        [50.0, 50.0],
        "falls back to the spawn point"
    );
    for t in 0..40 {
        w.push(input(1, t, [1.0, 0.0], MoveMode::Run)).unwrap();
        w.tick();
    }
    assert_eq!(position_of(&mut w, 1)[0], 100.0);
    assert!(w.counters().bounds_clamped > 0);
}

#[test]
fn obstacles_block_movement() {
    let wall = Rect {
        min: [60.0, 0.0],
        max: [62.0, 100.0],
    };
    let mut w = world_with_obstacles(100.0, vec![wall], settings());
    w.push(attach_at(1, [55.0, 50.0])).unwrap();
    w.tick();
    for t in 0..200 {
        // Run diagonally into the wall: slides along y, never crosses x.
        w.push(input(1, t, [0.9, 0.1], MoveMode::Run)).unwrap();
        w.tick();
        let p = position_of(&mut w, 1);
        assert!(p[0] < 60.0, "went into or through the wall: {p:?}");
    }
    assert!(
        position_of(&mut w, 1)[1] > 50.0,
        "should slide along the wall"
    );
    assert!(w.counters().obstacle_blocked > 0);
}

#[test]
fn attach_detach_keep_the_world_consistent() {
    let mut w = open_world(200.0, settings());
    let mut rng = tessera_sim::rng::SceneRng::new(5);
    let mut attached = std::collections::BTreeSet::new();
    let mut saved_at = std::collections::BTreeMap::new();
    for t in 0..300u32 {
        for _ in 0..4 {
            let c = (rng.next_u64() % 30) + 1;
            let r = rng.next_f32();
            if r < 0.4 {
                let state = saved_at.get(&c).cloned();
                w.push(Inbound::Attach {
                    client: c,
                    avatar: c,
                    state,
                    figure: 0,
                })
                .unwrap();
            } else if r < 0.6 {
                w.push(Inbound::Detach { client: c }).unwrap();
            } else {
                w.push(input(
                    c,
                    t,
                    [rng.range_f32(-1.0, 1.0), rng.range_f32(-1.0, 1.0)],
                    MoveMode::Walk,
                ))
                .unwrap();
            }
        }
        let out = w.tick();
        for e in &out.events {
            match e {
                SceneEvent::Attached { client, .. } => assert!(attached.insert(*client)),
                SceneEvent::Detached { client, state } => {
                    assert!(attached.remove(client));
                    assert!(!state.online);
                    saved_at.insert(*client, state.clone());
                    // The final state is in this tick's save batch.
                    let batch = out.save.as_ref().expect("detach forces a save batch");
                    assert!(
                        batch
                            .states
                            .iter()
                            .any(|s| s.avatar == *client && !s.online)
                    );
                }
                SceneEvent::AttachRejected { client, .. } => assert!(attached.contains(client)),
                SceneEvent::Portal { .. } => {}
                SceneEvent::Misbehaved { .. } => panic!("no actions were sent: {e:?}"),
            }
        }
        assert_eq!(w.population(), attached.len());
        let world = w.world_mut();
        let n = world.query::<&Pc>().iter(world).count();
        assert_eq!(
            n,
            attached.len(),
            "every attached client has exactly one PC"
        );
        // Only attached clients get packets.
        for (c, _) in &out.packets {
            assert!(attached.contains(c));
        }
    }
    let c = w.counters();
    assert!(c.attach_rejected > 0 && c.unknown_client > 0, "{c:?}");
}

#[test]
fn reattach_comes_back_where_it_left() {
    let mut w = open_world(1000.0, settings());
    w.push(attach_at(7, [100.0, 100.0])).unwrap();
    for t in 0..30 {
        w.push(input(7, t, [1.0, 0.0], MoveMode::Walk)).unwrap();
        w.tick();
    }
    w.push(Inbound::Detach { client: 7 }).unwrap();
    let out = w.tick();
    let state = out
        .events
        .iter()
        .find_map(|e| match e {
            SceneEvent::Detached { state, .. } => Some(state.clone()),
            _ => None,
        })
        .expect("detached");
    assert!(state.position[0] > 100.0);
    w.push(Inbound::Attach {
        client: 8,
        avatar: 7,
        state: Some(state.clone()),
        figure: 0,
    })
    .unwrap();
    w.tick();
    assert_eq!(position_of(&mut w, 8), state.position);
}

#[test]
fn save_batches_come_every_flush_interval_with_dirty_pcs_only() {
    let mut w = open_world(1000.0, settings());
    w.push(attach_at(1, [100.0, 100.0])).unwrap();
    w.push(attach_at(2, [200.0, 200.0])).unwrap();
    let mut batches = Vec::new();
    for t in 1..=40u32 {
        w.push(input(1, t, [1.0, 0.0], MoveMode::Walk)).unwrap();
        let out = w.tick();
        if let Some(b) = out.save {
            batches.push(b);
        }
    }
    assert_eq!(
        batches.iter().map(|b| b.tick).collect::<Vec<_>>(),
        vec![10, 20, 30, 40]
    );
    // Both were dirty at first (attached with a state: saved), then only the mover.
    for b in &batches[1..] {
        assert_eq!(
            b.states.iter().map(|s| s.avatar).collect::<Vec<_>>(),
            vec![1]
        );
        assert_eq!(b.scene, "test");
    }
}

/// Runs one tick and carries its output over `link` to the test clients
/// (created on attach, dropped on detach); their acknowledgements go in
/// before the next tick. Returns the tick's output.
fn pump(
    w: &mut SceneWorld,
    clients: &mut BTreeMap<u64, TestClient>,
    link: &mut LossyLink,
) -> TickOutput {
    let out = w.tick();
    let now = out.tick;
    for e in &out.events {
        match e {
            SceneEvent::Attached { client, net_id, .. } => {
                let mut c = TestClient::new(*client);
                c.entered(w, *net_id);
                clients.insert(*client, c);
            }
            SceneEvent::Detached { client, .. } => {
                clients.remove(client);
            }
            _ => {}
        }
    }
    for (c, bytes) in &out.packets {
        assert!(
            bytes.len() <= MAX_PACKET_BYTES,
            "packet of {} bytes",
            bytes.len()
        );
        decode(bytes);
        clients
            .get_mut(c)
            .expect("packet for an attached client")
            .send(now, bytes, link);
    }
    for c in clients.values_mut() {
        c.receive(now);
        if let Some(ack) = c.ack(link) {
            w.push(ack).unwrap();
        }
    }
    out
}

/// Every client's view equals what the world says it must hold.
fn assert_converged(w: &mut SceneWorld, clients: &BTreeMap<u64, TestClient>, what: &str) {
    for c in clients.values() {
        if let Err(e) = c.check(w) {
            panic!("{what}: {e}");
        }
    }
}

#[test]
fn crowded_packets_fit_the_budget_decode_and_converge() {
    // 1500 PCs in a 60×60 square: ~1500 visible each, far over one packet.
    let mut w = open_world(1000.0, settings());
    let mut rng = tessera_sim::rng::SceneRng::new(3);
    for c in 0..1500u64 {
        w.push(attach_at(
            c,
            [rng.range_f32(470.0, 530.0), rng.range_f32(470.0, 530.0)],
        ))
        .unwrap();
    }
    let mut clients = BTreeMap::new();
    let mut link = LossyLink::perfect();
    let mut max_len = 0;
    for t in 0..60u32 {
        // Half the crowd moves on some ticks, then everyone stands still.
        if t < 20 {
            for c in (0..1500u64).step_by(2) {
                w.push(input(
                    c,
                    t,
                    [rng.range_f32(-1.0, 1.0), rng.range_f32(-1.0, 1.0)],
                    MoveMode::Walk,
                ))
                .unwrap();
            }
        } else if t == 20 {
            for c in 0..1500u64 {
                w.push(input(c, t, [0.0, 0.0], MoveMode::Walk)).unwrap();
            }
        }
        let out = pump(&mut w, &mut clients, &mut link);
        for (_, bytes) in &out.packets {
            max_len = max_len.max(bytes.len());
        }
    }
    assert!(
        max_len > MAX_PACKET_BYTES / 2,
        "the budget was exercised: {max_len}"
    );
    assert!(
        w.counters().items_deferred > 0,
        "budget pressure must defer items"
    );
    // Once the crowd is still, deferred items drain and every client holds
    // exactly its capped interest set.
    assert_converged(&mut w, &clients, "crowd");
    let held = clients.values().map(|c| c.view.len()).max().unwrap_or(0);
    assert_eq!(held, 256, "interest is capped at max_interest");
}

#[test]
fn crowded_out_updates_wait_but_never_starve() {
    // One still observer in a crowd that moves every tick, with room for a
    // fraction of the updates: the far ones go less often, but every one
    // goes (their priority grows while they wait).
    let mut w = open_world(
        1000.0,
        SceneSettings {
            packet_budget: 300,
            ..settings()
        },
    );
    let mut rng = tessera_sim::rng::SceneRng::new(5);
    w.push(attach_at(0, [500.0, 500.0])).unwrap();
    for c in 1..=120u64 {
        w.push(attach_at(
            c,
            [rng.range_f32(470.0, 530.0), rng.range_f32(470.0, 530.0)],
        ))
        .unwrap();
    }
    let mut clients = BTreeMap::new();
    let mut link = LossyLink::perfect();
    let mut last: BTreeMap<u32, u32> = BTreeMap::new();
    let mut worst_gap = 0;
    let (warm, end) = (40u32, 240u32);
    for t in 0..end {
        for c in 1..=120u64 {
            let dir = [rng.range_f32(-1.0, 1.0), rng.range_f32(-1.0, 1.0)];
            w.push(input(c, t, dir, MoveMode::Walk)).unwrap();
        }
        let out = pump(&mut w, &mut clients, &mut link);
        for (_, bytes) in out.packets.iter().filter(|(c, _)| **c == 0) {
            let p = decode(bytes);
            let ids = p.enters.iter().map(|e| e.id);
            for id in ids.chain(p.updates.iter().map(|u| u.id)) {
                if let Some(before) = last.insert(id, t)
                    && t >= warm
                {
                    worst_gap = worst_gap.max(t - before);
                }
            }
        }
    }
    for &at in last.values() {
        worst_gap = worst_gap.max(end - at);
    }
    assert!(
        last.len() >= 100,
        "the observer sees the crowd: {}",
        last.len()
    );
    assert!(w.counters().items_deferred > 0, "the budget defers");
    // The priority counts up to `Known::MAX_WAIT` (31) ticks of waiting.
    assert!(worst_gap <= 32, "an entity waited {worst_gap} ticks");
}

#[test]
fn inbound_queue_is_bounded_and_counts_drops() {
    let mut w = open_world(
        100.0,
        SceneSettings {
            inbound_capacity: 10,
            ..settings()
        },
    );
    let mut refused = 0;
    for s in 0..25 {
        if w.push(input(1, s, [0.0, 0.0], MoveMode::Walk)).is_err() {
            refused += 1;
        }
    }
    assert_eq!(refused, 15);
    assert_eq!(w.counters().inbound_full, 15);
    w.tick();
    assert!(
        w.push(input(1, 0, [0.0, 0.0], MoveMode::Walk)).is_ok(),
        "drained by the tick"
    );
}

#[test]
fn a_failed_command_is_logged_and_counted_not_a_panic() {
    let mut w = open_world(100.0, settings());
    let world = w.world_mut();
    let e = world.spawn(Position([1.0, 1.0])).id();
    world.despawn(e);
    let before = tessera_sim::command_errors();
    world.commands().entity(e).insert(Position([2.0, 2.0]));
    world.flush();
    w.tick();
    assert!(tessera_sim::command_errors() > before);
    assert!(w.counters().command_errors > 0);
}

#[test]
fn portal_fires_once_on_entry() {
    let mut w = SceneWorld::new(town(), settings());
    // Just inside the gap in the east wall, heading out through the portal.
    w.push(attach_at(1, [380.0, 200.0])).unwrap();
    let mut portals = 0;
    for t in 0..60 {
        w.push(input(1, t, [1.0, 0.0], MoveMode::Run)).unwrap();
        let out = w.tick();
        portals += out
            .events
            .iter()
            .filter(|e| matches!(e, SceneEvent::Portal { target, .. } if target == "field"))
            .count();
    }
    assert_eq!(portals, 1);
}

#[test]
fn the_tick_schedule_has_no_ambiguities() {
    use bevy_ecs::schedule::Schedules;
    let mut w = open_world(100.0, settings());
    w.add_walkers(10, 1);
    w.tick(); // builds the schedules
    let schedules = w.world().resource::<Schedules>();
    let update = schedules
        .get(bevy_app::Update)
        .expect("the tick runs in Update");
    let conflicts = update.graph().conflicting_systems();
    assert!(
        conflicts.is_empty(),
        "systems with conflicting access and no order: {} pair(s); order them or chain them",
        conflicts.len()
    );
}

#[test]
fn tiny_budgets_with_churn_keep_every_client_view_consistent() {
    // Budgets so small that leaves, enters and updates all get deferred, with
    // clients joining, leaving and moving at random: every packet must fit
    // the budget, and views must converge once still.
    for (seed, budget) in [(1u64, 60usize), (2, 90), (3, 130), (4, 400), (5, 1200)] {
        let mut w = open_world(
            300.0,
            SceneSettings {
                packet_budget: budget,
                aoi_radius: 40.0,
                aoi_margin: 4.0,
                seed,
                ..settings()
            },
        );
        let mut rng = tessera_sim::rng::SceneRng::new(seed);
        let mut clients = BTreeMap::new();
        let mut link = LossyLink::perfect();
        for t in 0..400u32 {
            let moving = t < 300;
            for _ in 0..8 {
                let c = rng.next_u64() % 60;
                let r = rng.next_f32();
                if moving && r < 0.15 {
                    let p = [rng.range_f32(100.0, 200.0), rng.range_f32(100.0, 200.0)];
                    w.push(attach_at(c, p)).unwrap();
                } else if moving && r < 0.25 {
                    w.push(Inbound::Detach { client: c }).unwrap();
                }
            }
            for c in 0..60u64 {
                let dir = if moving {
                    [rng.range_f32(-1.0, 1.0), rng.range_f32(-1.0, 1.0)]
                } else {
                    [0.0, 0.0]
                };
                let _ = w.push(input(c, t, dir, MoveMode::Run));
            }
            let out = pump(&mut w, &mut clients, &mut link);
            for (_, bytes) in &out.packets {
                assert!(
                    bytes.len() <= budget,
                    "packet of {} bytes over budget {budget}",
                    bytes.len()
                );
            }
        }
        if budget < 200 {
            assert!(
                w.counters().items_deferred > 0,
                "budget {budget} never deferred anything"
            );
        }
        assert_converged(&mut w, &clients, &format!("seed {seed} budget {budget}"));
    }
}

#[test]
fn acks_of_the_future_or_of_another_placement_are_counted_drops() {
    let mut w = open_world(100.0, settings());
    w.push(attach_at(1, [50.0, 50.0])).unwrap();
    w.push(attach_at(2, [52.0, 50.0])).unwrap();
    let out = w.tick();
    assert!(out.packets.get(1).is_some());
    let (scene, epoch) = (w.info().tag, w.info().settings.epoch);
    let ack = |tick: u32, scene: u32| Inbound::Ack {
        client: 1,
        ack: tessera_sim::protocol::StateAck {
            scene,
            epoch,
            tick,
            mask: u32::MAX,
        },
    };
    w.push(ack(out.tick as u32 + 50, scene)).unwrap();
    w.push(ack(out.tick as u32, scene ^ 1)).unwrap();
    w.push(ack(out.tick as u32, scene)).unwrap();
    w.tick();
    let c = w.counters();
    assert_eq!((c.acks_invalid, c.acks_stale), (1, 1), "{c:?}");
}

/// Acknowledgements wait for the packet build (`AckInbox`); a second one
/// from the same client in one tick must not drop the first, and one for a
/// client not here is counted.
#[test]
fn two_acks_in_one_tick_both_count_and_unknown_clients_are_counted() {
    let mut w = open_world(100.0, settings());
    w.push(attach_at(1, [50.0, 50.0])).unwrap();
    w.push(attach_at(2, [52.0, 50.0])).unwrap();
    w.tick();
    // Unacknowledged, every packet carries the own state: one went in tick 2.
    let out = w.tick();
    assert!(out.packets.get(1).is_some());
    let (scene, epoch) = (w.info().tag, w.info().settings.epoch);
    let ack = |client, tick: u32| Inbound::Ack {
        client,
        ack: tessera_sim::protocol::StateAck {
            scene,
            epoch,
            tick,
            mask: u32::MAX,
        },
    };
    let now = out.tick as u32 + 1;
    // Not in the future of the clock, but of the packets sent: the ring
    // refuses it, once it is applied.
    w.push(ack(1, now)).unwrap();
    w.push(ack(1, now - 1)).unwrap();
    w.push(ack(99, now - 1)).unwrap();
    w.tick();
    let c = w.counters();
    assert_eq!(
        (c.acks_invalid, c.acks_stale, c.unknown_client),
        (0, 1, 1),
        "{c:?}"
    );
}

#[test]
fn a_snapshot_holds_what_the_live_map_draws() {
    let def = town();
    let obstacles = def.obstacle.clone();
    let npcs: u32 = def.npc_spawner.iter().map(|s| s.count).sum();
    let mut w = SceneWorld::new(def, settings());
    w.push(attach_at(1, [200.0, 200.0])).unwrap();
    for _ in 0..3 {
        w.tick();
    }
    let snap = w.snapshot();
    assert_eq!(snap.obstacles, obstacles);
    assert!(!snap.obstacles.is_empty(), "town has walls");
    assert!(snap.tick_ns > 0, "the last tick's duration");
    let players = snap.entities.iter().filter(|e| e.kind == 0).count();
    let others = snap.entities.iter().filter(|e| e.kind == 1).count();
    assert_eq!((players, others), (1, npcs as usize));
    assert_eq!(snap.aoi_radius, SceneSettings::default().aoi_radius);
}

/// A client standing still still learns its inputs were applied: a packet
/// goes with the new input ack even when nothing else changed.
#[test]
fn an_applied_input_is_acknowledged_when_nothing_changes() {
    let mut w = open_world(100.0, settings());
    w.push(tessera_sim::testing::attach_at(1, [50.0, 50.0]))
        .unwrap();
    let tag = w.info().tag;
    // Attach, acknowledge everything, and let the world go quiet.
    let mut quiet = false;
    for _ in 0..40 {
        let out = w.tick();
        let t = out.tick as u32;
        if out.packets.get(1).is_some() {
            let ack = tessera_sim::protocol::StateAck {
                scene: tag,
                epoch: 0,
                tick: t,
                mask: u32::MAX,
            };
            w.push(Inbound::Ack { client: 1, ack }).unwrap();
        }
        quiet = out.packets.get(1).is_none();
    }
    assert!(quiet, "the world never went quiet");
    w.push(input(1, 7, [0.0, 0.0], MoveMode::Walk)).unwrap();
    let out = w.tick();
    let p = tessera_sim::testing::decode(out.packets.get(1).expect("a packet with the ack"));
    assert_eq!(p.ack, 7);
    assert!(p.you.is_none() && p.enters.is_empty() && p.updates.is_empty());
    // And none the tick after: nothing new.
    assert!(w.tick().packets.get(1).is_none());
}
