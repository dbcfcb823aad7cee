//! Net id recycling: freed ids come back after the quarantine, oldest first,
//! so a long-lived scene with churn keeps its per-id arrays bounded.

#![allow(clippy::unwrap_used)] // tests: a failed unwrap is a failed run

use std::collections::BTreeMap;

use tessera_sim::components::{Directory, Net};
use tessera_sim::interest::SpatialIndex;
use tessera_sim::protocol::{MoveMode, NetId};
use tessera_sim::testing::{attach_at, input, open_world};
use tessera_sim::{Inbound, SceneEvent, SceneSettings};

#[test]
fn the_oldest_freed_id_comes_back_after_the_quarantine_with_a_new_generation() {
    let mut d = Directory::with_quarantine(3);
    let ids: Vec<NetId> = (0..4).map(|_| d.alloc_net(0)).collect();
    assert_eq!(ids, [0, 1, 2, 3]);
    d.free_net(2, 10);
    d.free_net(0, 11);
    d.free_net(2, 11); // freed twice: ignored
    d.free_net(9, 11); // never handed out: ignored
    assert_eq!(d.free_nets().collect::<Vec<_>>(), [(2, 10), (0, 11)]);
    // Up to tick 13 id 2 is in quarantine (3 ticks after tick 10).
    assert_eq!(d.alloc_net(13), 4);
    assert_eq!(d.alloc_net(14), 2);
    assert_eq!(d.net_gen(2), 1);
    assert_eq!(d.alloc_net(14), 5, "id 0 waits until tick 15");
    assert_eq!(d.alloc_net(15), 0);
    assert_eq!(d.net_gen(0), 1);
    assert_eq!(d.net_gen(1), 0);
    assert_eq!(d.next_net, 6);
    assert_eq!(d.free_nets().len(), 0);
}

#[test]
fn a_zero_quarantine_still_waits_for_the_next_tick() {
    let mut d = Directory::with_quarantine(0);
    assert_eq!(d.alloc_net(5), 0);
    d.free_net(0, 5);
    assert_eq!(d.alloc_net(5), 1, "not in the tick it was freed in");
    assert_eq!(d.alloc_net(6), 0);
    assert_eq!(d.net_gen(0), 1);
}

#[test]
fn the_default_quarantine_is_ten_seconds_of_ticks() {
    let w = open_world(100.0, SceneSettings::default());
    assert_eq!(w.world().resource::<Directory>().net_quarantine(), 200);
    let w = open_world(
        100.0,
        SceneSettings {
            tick_hz: Some(30),
            ..SceneSettings::default()
        },
    );
    assert_eq!(w.world().resource::<Directory>().net_quarantine(), 300);
}

/// What a churn run saw.
struct Churn {
    hash: u64,
    attaches: u64,
    reused: u64,
    /// The largest `population + ids freed within the last quarantine + 1
    /// ticks` over the run: the most ids that can be in use or waiting.
    bound: u64,
    next_net: NetId,
    snaps: usize,
}

/// `pop` clients, each leaving with chance `p` per tick and coming back a
/// few ticks later, for `ticks` ticks; every id handed out is checked to
/// have waited out the quarantine since it was freed.
fn churn(seed: u64, pop: u64, p: f32, quarantine: u32, ticks: u64) -> Churn {
    let mut w = open_world(
        300.0,
        SceneSettings {
            seed,
            net_id_quarantine_ticks: Some(quarantine),
            ..SceneSettings::default()
        },
    );
    let mut rng = tessera_sim::rng::SceneRng::new(seed);
    let spot = |rng: &mut tessera_sim::rng::SceneRng| {
        [rng.range_f32(20.0, 280.0), rng.range_f32(20.0, 280.0)]
    };
    for c in 0..pop {
        w.push(attach_at(c, spot(&mut rng))).unwrap();
    }
    // client → its net id; id → tick it was freed in; (tick due, client).
    let mut net_of: BTreeMap<u64, NetId> = BTreeMap::new();
    let mut freed_at: BTreeMap<NetId, u64> = BTreeMap::new();
    let mut away: Vec<(u64, u64)> = Vec::new();
    let mut freed_per_tick: Vec<u64> = Vec::new();
    let (mut attaches, mut reused, mut bound) = (0u64, 0u64, 0u64);
    for t in 0..ticks {
        let now = w.tick_count() + 1;
        away.retain(|&(due, c)| {
            if due <= now {
                w.push(attach_at(c, spot(&mut rng))).unwrap();
                false
            } else {
                true
            }
        });
        for (&c, _) in net_of.iter() {
            if rng.next_f32() < p {
                w.push(Inbound::Detach { client: c }).unwrap();
                away.push((now + 1 + rng.next_u64() % 4, c));
            } else {
                let dir = [rng.range_f32(-1.0, 1.0), rng.range_f32(-1.0, 1.0)];
                w.push(input(c, t as u32, dir, MoveMode::Run)).unwrap();
            }
        }
        let out = w.tick();
        let mut freed = 0;
        for e in &out.events {
            match e {
                SceneEvent::Attached {
                    client, net_id: id, ..
                } => {
                    attaches += 1;
                    if let Some(f) = freed_at.remove(id) {
                        reused += 1;
                        assert!(
                            out.tick > f + quarantine as u64,
                            "id {id} freed in tick {f} reused in tick {}",
                            out.tick
                        );
                    }
                    net_of.insert(*client, *id);
                }
                SceneEvent::Detached { client, .. } => {
                    let id = net_of.remove(client).unwrap();
                    freed_at.insert(id, out.tick);
                    freed += 1;
                }
                _ => {}
            }
        }
        freed_per_tick.push(freed);
        let window = freed_per_tick.iter().rev().take(quarantine as usize + 1);
        bound = bound.max(w.population() as u64 + window.sum::<u64>());
        let dir = w.world().resource::<Directory>();
        assert!(
            dir.next_net as u64 <= bound,
            "tick {}: {} ids handed out, at most {bound} can be in use or waiting",
            out.tick,
            dir.next_net
        );
    }
    // Every live entity's id is unique and below `next_net`.
    let next_net = w.world().resource::<Directory>().next_net;
    let world = w.world_mut();
    let mut ids: Vec<NetId> = world.query::<&Net>().iter(world).map(|n| n.0).collect();
    ids.sort_unstable();
    let n = ids.len();
    ids.dedup();
    assert_eq!(ids.len(), n, "two live entities share an id");
    assert!(ids.last().is_none_or(|&id| id < next_net));
    Churn {
        hash: w.state_hash(),
        attaches,
        reused,
        bound,
        next_net,
        snaps: w.world().resource::<SpatialIndex>().snaps.len(),
    }
}

#[test]
fn churn_keeps_net_ids_and_snapshots_bounded() {
    let (pop, quarantine) = (60, 20);
    let r = churn(3, pop, 0.02, quarantine, 2_000);
    // ~2 400 attaches over the run; without reuse `next_net` would follow.
    assert!(r.attaches > 2_000, "{} attaches", r.attaches);
    assert!(r.reused > 1_500, "{} reused", r.reused);
    assert!(r.bound < 2 * pop, "bound {}", r.bound);
    assert!(r.next_net as u64 <= r.bound);
    assert_eq!(r.snaps, r.next_net as usize);
}

#[test]
fn churn_with_no_quarantine_reuses_from_the_next_tick_and_stays_tight() {
    let r = churn(4, 40, 0.05, 0, 1_000);
    assert!(r.reused > 1_000, "{} reused", r.reused);
    // An id freed in one tick serves an attach in any later one, so no more
    // ids than clients ever exist.
    assert!(r.next_net <= 40, "{} ids for 40 clients", r.next_net);
}

#[test]
fn churn_with_reuse_is_deterministic() {
    let a = churn(5, 30, 0.05, 2, 300);
    let b = churn(5, 30, 0.05, 2, 300);
    let c = churn(6, 30, 0.05, 2, 300);
    assert_eq!(a.hash, b.hash);
    assert_ne!(a.hash, c.hash);
}
