//! Deterministic randomness.
//!
//! Hand-written on purpose: a simulation replay must give the same numbers on
//! every platform and every future build, so the generator's algorithm is part
//! of the save format, not a dependency's implementation detail.
//! [`SceneRng`] is a xoshiro256++ stream seeded through SplitMix64; [`mix`] is
//! a stateless hash for per-entity, per-tick draws that must not depend on the
//! order in which entities are visited (so systems may run them in parallel).

use bevy_ecs::prelude::Resource;

/// SplitMix64 step: the standard seeder for the xoshiro family.
fn splitmix64(state: &mut u64) -> u64 {
    *state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
    let mut z = *state;
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// Stateless 64-bit mix of a seed and two keys (e.g. an entity id and a tick).
pub fn mix(seed: u64, a: u64, b: u64) -> u64 {
    let mut s =
        seed ^ a.wrapping_mul(0xA24B_AED4_963E_E407) ^ b.wrapping_mul(0x9FB2_1C65_1E98_DF25);
    splitmix64(&mut s)
}

/// A uniform float in `[0, 1)` from 64 random bits.
pub fn unit_f32(bits: u64) -> f32 {
    ((bits >> 40) as f32) * (1.0 / (1u64 << 24) as f32)
}

/// The scene's seeded random stream (xoshiro256++). It is simulated state:
/// it is part of [`crate::SceneWorld::state_hash`].
#[derive(Resource, Clone, Debug, PartialEq, Eq)]
pub struct SceneRng {
    seed: u64,
    s: [u64; 4],
}

impl SceneRng {
    pub fn new(seed: u64) -> Self {
        let mut sm = seed;
        let s = [
            splitmix64(&mut sm),
            splitmix64(&mut sm),
            splitmix64(&mut sm),
            splitmix64(&mut sm),
        ];
        Self { seed, s }
    }

    /// The seed this stream started from (for order-independent [`mix`] draws).
    pub fn seed(&self) -> u64 {
        self.seed
    }

    pub fn next_u64(&mut self) -> u64 {
        let result = self.s[0]
            .wrapping_add(self.s[3])
            .rotate_left(23)
            .wrapping_add(self.s[0]);
        let t = self.s[1] << 17;
        self.s[2] ^= self.s[0];
        self.s[3] ^= self.s[1];
        self.s[1] ^= self.s[2];
        self.s[0] ^= self.s[3];
        self.s[2] ^= t;
        self.s[3] = self.s[3].rotate_left(45);
        result
    }

    /// Uniform in `[0, 1)`.
    pub fn next_f32(&mut self) -> f32 {
        unit_f32(self.next_u64())
    }

    /// Uniform in `[lo, hi)`.
    pub fn range_f32(&mut self, lo: f32, hi: f32) -> f32 {
        lo + (hi - lo) * self.next_f32()
    }

    pub fn state_words(&self) -> [u64; 4] {
        self.s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_seed_same_stream_other_seed_other_stream() {
        let mut a = SceneRng::new(7);
        let mut b = SceneRng::new(7);
        let mut c = SceneRng::new(8);
        let xs: Vec<u64> = (0..16).map(|_| a.next_u64()).collect();
        let ys: Vec<u64> = (0..16).map(|_| b.next_u64()).collect();
        let zs: Vec<u64> = (0..16).map(|_| c.next_u64()).collect();
        assert_eq!(xs, ys);
        assert_ne!(xs, zs);
    }

    #[test]
    fn unit_floats_stay_in_range() {
        let mut r = SceneRng::new(1);
        for _ in 0..10_000 {
            let f = r.next_f32();
            assert!((0.0..1.0).contains(&f), "{f}");
        }
        assert!(unit_f32(u64::MAX) < 1.0);
    }
}
