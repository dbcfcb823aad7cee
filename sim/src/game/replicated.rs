//! Replicated game components: `app.replicate::<C, Q>()` registers a
//! component with its quantizer; every tick its quantized bytes join the
//! entity's snapshot and ride in the state packets, after the entity's
//! position, with the same acknowledgement, priority and byte budget
//! (`docs/protocol.md`, "Game components").
//!
//! Per entity and tick three **game blocks** are encoded once, here, and
//! copied into every observer's packet that needs one:
//! - *full*: every public component present (an enter, or an update that
//!   must repair: the entry is behind, or a packet carrying its game state
//!   is still unacknowledged);
//! - *changed*: only the public components that changed this tick (a plain
//!   update; one byte when none did);
//! - *you*: every component, owner-only ones too (the owner's own state).

use bevy_app::App;
use bevy_ecs::prelude::*;
use bevy_ecs::query::QueryState;

use tessera_proto::game::{
    ComponentDesc, GAME_BLOCK_MAX_BYTES, GameSchema, GameVals, GameWire, MAX_COMPONENT_WIDTH,
    Scope, bits,
};

use crate::components::{Directory, Net};
use crate::interest::{Snap, SpatialIndex};

/// How a component goes on the wire: a fixed number of bytes.
pub trait ComponentQuantizer<C>: Send + Sync + 'static {
    /// Bytes on the wire, 1 to 16.
    const WIDTH: u8;
    /// Writes `c` into `out` (exactly [`Self::WIDTH`] bytes).
    fn quantize(c: &C, out: &mut [u8]);
}

/// One byte: a component convertible to `u8`.
pub struct AsU8;
/// Two bytes, little-endian: a component convertible to `u16`.
pub struct AsU16;
/// Four bytes, little-endian: a component convertible to `u32`.
pub struct AsU32;

impl<C: Copy + Into<u8>> ComponentQuantizer<C> for AsU8 {
    const WIDTH: u8 = 1;
    fn quantize(c: &C, out: &mut [u8]) {
        out[0] = (*c).into();
    }
}

impl<C: Copy + Into<u16>> ComponentQuantizer<C> for AsU16 {
    const WIDTH: u8 = 2;
    fn quantize(c: &C, out: &mut [u8]) {
        out.copy_from_slice(&(*c).into().to_le_bytes());
    }
}

impl<C: Copy + Into<u32>> ComponentQuantizer<C> for AsU32 {
    const WIDTH: u8 = 4;
    fn quantize(c: &C, out: &mut [u8]) {
        out.copy_from_slice(&(*c).into().to_le_bytes());
    }
}

/// Writes one registered component of every entity that has it.
type Collect = Box<dyn FnMut(&World, &mut GameSnaps) + Send + Sync>;

/// The game's protocol as registered so far, and how to read each
/// replicated component. [`crate::SceneWorldBuilder::build`] checks the
/// schema ([`GameSchema::check`]).
#[derive(Resource, Default)]
pub struct GameRegistry {
    pub schema: GameSchema,
    collect: Vec<Collect>,
}

impl std::fmt::Debug for GameRegistry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GameRegistry")
            .field("schema", &self.schema)
            .finish_non_exhaustive()
    }
}

/// Registration of replicated components on a scene's `App`.
pub trait ReplicateAppExt {
    /// Replicates `C` to every observer of an entity that has it (and to
    /// its owner), as `Q` quantizes it. Named by its type's last path
    /// segment; the registration order is the wire's.
    fn replicate<C: Component, Q: ComponentQuantizer<C>>(&mut self) -> &mut Self;
    /// Replicates `C` only to the client whose PC has it.
    fn replicate_to_owner<C: Component, Q: ComponentQuantizer<C>>(&mut self) -> &mut Self;
}

impl ReplicateAppExt for App {
    fn replicate<C: Component, Q: ComponentQuantizer<C>>(&mut self) -> &mut Self {
        register::<C, Q>(self, Scope::Public);
        self
    }

    fn replicate_to_owner<C: Component, Q: ComponentQuantizer<C>>(&mut self) -> &mut Self {
        register::<C, Q>(self, Scope::Owner);
        self
    }
}

/// The last path segment of a type's name, generics cut off.
pub(crate) fn short_name<T>() -> String {
    let full = std::any::type_name::<T>();
    let base = full.split('<').next().unwrap_or(full);
    base.rsplit("::").next().unwrap_or(base).to_string()
}

fn register<C: Component, Q: ComponentQuantizer<C>>(app: &mut App, scope: Scope) {
    let world = app.world_mut();
    let mut state: QueryState<(&Net, &C)> = world.query::<(&Net, &C)>();
    world.init_resource::<GameRegistry>();
    let mut reg = world.resource_mut::<GameRegistry>();
    let bit = reg.schema.components.len();
    reg.schema.components.push(ComponentDesc {
        name: short_name::<C>(),
        width: Q::WIDTH,
        scope,
    });
    let width = Q::WIDTH as usize;
    if !(1..=MAX_COMPONENT_WIDTH).contains(&width) || bit >= 32 {
        // `build()` refuses the schema; nothing to collect.
        return;
    }
    reg.collect
        .push(Box::new(move |world: &World, snaps: &mut GameSnaps| {
            let off = snaps.offsets[bit] as usize;
            for (net, c) in state.iter(world) {
                let id = net.0 as usize;
                let Some(p) = snaps.present.get_mut(id) else {
                    continue;
                };
                *p |= 1 << bit;
                let at = id * snaps.stride + off;
                Q::quantize(c, &mut snaps.raw[at..at + width]);
            }
        }));
}

impl GameRegistry {
    pub fn wire(&self) -> GameWire {
        self.schema.wire()
    }
}

/// Every entity's replicated components this tick, by net id, and their
/// game blocks ready to copy into packets. Empty for a game that
/// replicates nothing.
#[derive(Resource, Debug, Default)]
pub struct GameSnaps {
    wire: GameWire,
    /// Byte offset of each component in an entity's row of `raw`.
    offsets: Vec<u16>,
    stride: usize,
    raw: Vec<u8>,
    present: Vec<u32>,
    prev_raw: Vec<u8>,
    prev_present: Vec<u32>,
    /// Per id: where its blocks start in `arena`, and the lengths of its
    /// full, changed and own blocks (back to back).
    at: Vec<u32>,
    lens: Vec<[u8; 3]>,
    arena: Vec<u8>,
}

impl GameSnaps {
    pub(crate) fn for_wire(wire: GameWire) -> Self {
        let mut offsets = Vec::with_capacity(wire.widths.len());
        let mut stride = 0usize;
        for &w in &wire.widths {
            offsets.push(stride as u16);
            stride += w as usize;
        }
        Self {
            wire,
            offsets,
            stride,
            ..Self::default()
        }
    }

    /// Whether packets carry game blocks.
    #[inline]
    pub fn enabled(&self) -> bool {
        self.wire.enabled()
    }

    pub fn wire(&self) -> &GameWire {
        &self.wire
    }

    #[inline]
    fn block(&self, id: NetId, which: usize) -> &[u8] {
        let i = id as usize;
        let (Some(&at), Some(lens)) = (self.at.get(i), self.lens.get(i)) else {
            return &[];
        };
        let start = at as usize + lens[..which].iter().map(|&l| l as usize).sum::<usize>();
        self.arena
            .get(start..start + lens[which] as usize)
            .unwrap_or(&[])
    }

    /// The entity's public components, all of them (an enter's block).
    #[inline]
    pub fn full(&self, id: NetId) -> &[u8] {
        self.block(id, 0)
    }

    /// The public components that changed this tick.
    #[inline]
    pub fn changed(&self, id: NetId) -> &[u8] {
        self.block(id, 1)
    }

    /// Every component, owner-only ones too (the owner's `you` block).
    #[inline]
    pub fn you(&self, id: NetId) -> &[u8] {
        self.block(id, 2)
    }

    /// The entity's values as a client holds them: the public components,
    /// or (`own`) all of them.
    pub fn vals(&self, id: NetId, own: bool) -> GameVals {
        let mask = if own {
            self.wire.all()
        } else {
            self.wire.public
        };
        let i = id as usize;
        let present = self.present.get(i).copied().unwrap_or(0) & mask;
        let mut v = GameVals {
            present,
            bytes: Vec::new(),
        };
        for b in bits(present) {
            let at = i * self.stride + self.offsets[b] as usize;
            v.bytes
                .extend_from_slice(&self.raw[at..at + self.wire.widths[b] as usize]);
        }
        v
    }

    /// Starts a tick of `n` ids: last tick's rows become the previous ones.
    fn begin(&mut self, n: usize) {
        std::mem::swap(&mut self.raw, &mut self.prev_raw);
        std::mem::swap(&mut self.present, &mut self.prev_present);
        self.raw.clear();
        self.raw.resize(n * self.stride, 0);
        self.present.clear();
        self.present.resize(n, 0);
    }

    /// Encodes each live entity's blocks and folds them into its snapshot:
    /// its costs grow by the blocks', and a public component that changed
    /// makes it changed.
    fn finish(&mut self, snaps: &mut [Snap]) {
        let n = self.present.len().min(snaps.len());
        self.at.clear();
        self.at.resize(n, 0);
        self.lens.clear();
        self.lens.resize(n, [0; 3]);
        self.arena.clear();
        let public = self.wire.public;
        let all = self.wire.all();
        for (id, snap) in snaps.iter_mut().enumerate().take(n) {
            if !snap.alive {
                continue;
            }
            let p = self.present[id];
            let pp = self.prev_present.get(id).copied().unwrap_or(0);
            let mut changed = p ^ pp;
            let row = id * self.stride;
            for b in bits(p & pp) {
                let at = row + self.offsets[b] as usize;
                let w = self.wire.widths[b] as usize;
                if self.prev_raw.get(at..at + w) != Some(&self.raw[at..at + w]) {
                    changed |= 1 << b;
                }
            }
            let changed = changed & public;
            self.at[id] = self.arena.len() as u32;
            // Every public bit carried: an update that repairs must also
            // remove what the client may still hold.
            let full = self.put_block(row, public, p & public);
            let delta = self.put_block(row, changed, p & changed);
            let you = self.put_block(row, all, p);
            self.lens[id] = [full, delta, you];
            snap.game_full = full;
            snap.game_changed = delta;
            snap.enter_cost = snap.enter_cost.saturating_add(full);
            snap.update_cost = snap.update_cost.saturating_add(delta);
            snap.changed |= changed != 0;
        }
    }

    /// Appends one block (`docs/protocol.md`: carried, present, bytes);
    /// returns its length.
    fn put_block(&mut self, row: usize, carried: u32, present: u32) -> u8 {
        let start = self.arena.len();
        put_varint(&mut self.arena, carried);
        if carried != 0 {
            put_varint(&mut self.arena, present);
            for b in bits(present) {
                let at = row + self.offsets[b] as usize;
                let w = self.wire.widths[b] as usize;
                self.arena.extend_from_slice(&self.raw[at..at + w]);
            }
        }
        let len = self.arena.len() - start;
        debug_assert!(len <= GAME_BLOCK_MAX_BYTES);
        len as u8
    }

    /// A digest of every id's row, for the state hash.
    pub(crate) fn hash_words(&self) -> impl Iterator<Item = u64> + '_ {
        self.present
            .iter()
            .map(|&p| p as u64)
            .chain(self.raw.chunks(8).map(|c| {
                let mut w = [0u8; 8];
                w[..c.len()].copy_from_slice(c);
                u64::from_le_bytes(w)
            }))
    }
}

use crate::protocol::NetId;

fn put_varint(out: &mut Vec<u8>, mut v: u32) {
    while v >= 0x80 {
        out.push(v as u8 | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

/// Spatial stage, after the snapshots: every registered component into
/// [`GameSnaps`], and the blocks into the snapshots.
pub(crate) fn snap_game(world: &mut World) {
    world.resource_scope(|world, mut reg: Mut<GameRegistry>| {
        if reg.collect.is_empty() {
            return;
        }
        world.resource_scope(|world, mut snaps: Mut<GameSnaps>| {
            let n = world.resource::<Directory>().next_net as usize;
            snaps.begin(n);
            for c in reg.collect.iter_mut() {
                c(world, &mut snaps);
            }
            let mut index = world.resource_mut::<SpatialIndex>();
            snaps.finish(&mut index.snaps);
        });
    });
}
