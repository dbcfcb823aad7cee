//! `state_hash`: FNV-1a over all simulated state in a fixed order.

use bevy_ecs::prelude::*;

use crate::components::*;
use crate::rng::SceneRng;

struct Fnv(u64);

impl Fnv {
    fn u64(&mut self, v: u64) {
        for b in v.to_le_bytes() {
            self.0 ^= b as u64;
            self.0 = self.0.wrapping_mul(0x0000_0100_0000_01B3);
        }
    }
    fn f32(&mut self, v: f32) {
        self.u64(v.to_bits() as u64);
    }
}

pub(crate) fn state_hash(world: &mut World) -> u64 {
    let mut h = Fnv(0xCBF2_9CE4_8422_2325);
    h.u64(world.resource::<TickCount>().0);
    for w in world.resource::<SceneRng>().state_words() {
        h.u64(w);
    }
    // The id allocator: what the next spawns get, and each entity's generation.
    let dir = world.resource::<Directory>();
    h.u64(dir.next_net as u64);
    h.u64(dir.free_nets().len() as u64);
    for (id, freed) in dir.free_nets() {
        h.u64(id as u64);
        h.u64(freed);
    }
    let gens: Vec<u32> = (0..dir.next_net).map(|id| dir.net_gen(id)).collect();
    let mut q = world.query::<(
        &Net,
        &Position,
        &Velocity,
        &Pose,
        Option<&Pc>,
        Option<&Wander>,
        Option<&Interest>,
        Option<&ClientView>,
    )>();
    let mut rows: Vec<_> = q.iter(world).collect();
    rows.sort_by_key(|r| r.0.0);
    for (net, pos, vel, pose, pc, wander, interest, view) in rows {
        h.u64(net.0 as u64);
        h.u64(gens.get(net.0 as usize).copied().unwrap_or(0) as u64);
        h.f32(pos.0[0]);
        h.f32(pos.0[1]);
        h.f32(vel.0[0]);
        h.f32(vel.0[1]);
        h.f32(pose.heading);
        h.u64(((pose.action as u64) << 8) | pose.mount as u64);
        if let Some(pc) = pc {
            h.u64(pc.client);
            h.u64(pc.avatar);
            h.u64(pc.ack as u64);
        }
        if let Some(w) = wander {
            h.u64(w.next_turn);
        }
        if let Some(i) = interest {
            h.u64(i.visible.len() as u64);
            for &v in &i.visible {
                h.u64(v as u64);
            }
        }
        if let Some(v) = view {
            h.u64(v.known.len() as u64);
            for k in &v.known {
                for w in k.words() {
                    h.u64(w);
                }
            }
            h.u64(v.leaving.len() as u64);
            h.u64(((v.ring.acked as u64) << 32) | v.ring.last_sent as u64);
        }
    }
    // The game's replicated components, as last snapshotted.
    if let Some(game) = world.get_resource::<crate::game::GameSnaps>() {
        for w in game.hash_words() {
            h.u64(w);
        }
    }
    h.0
}
