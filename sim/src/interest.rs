//! Spatial and Interest: portal detection and the per-tick grid of all
//! entities from their final positions, and every observer's enter / leave
//! / stay diff (see [`crate::aoi`] for the rules).

use bevy_app::{App, Plugin, Update};
use bevy_ecs::prelude::*;

use crate::metrics::timing_mark;

use crate::aoi::{AoiTotals, Grid, Scratch, update_observer};
use crate::components::*;
use crate::protocol::{KIND_NPC, KIND_PC, NetId, Quantized, WireState, varint_len};
use crate::world::SceneInfo;
use crate::{InterestSystems, SpatialSystems};

/// One entity's replicable snapshot for this tick: 32 bytes, aligned, so
/// each is one cache line's quarter (every observer of it reads it).
#[derive(Debug, Clone, Copy, Default, PartialEq)]
#[repr(align(32))]
pub struct Snap {
    pub alive: bool,
    /// Its state or holder differs from the last tick's (or it was not
    /// alive then): every client that knows it is behind.
    pub changed: bool,
    pub kind: u8,
    /// Its size in a state packet as an update and as an enter, at most
    /// (the id counted in full; it goes as a difference): computed once a
    /// tick here rather than once per observer.
    pub update_cost: u8,
    pub enter_cost: u8,
    /// The lengths of its full and changed game blocks
    /// ([`crate::game::GameSnaps`]), counted in the costs above; 0 for a
    /// game that replicates no components.
    pub game_full: u8,
    pub game_changed: u8,
    /// The generation of the entity holding this id ([`Directory::net_gen`]).
    pub net_gen: u32,
    pub figure: u32,
    pub pos: [f32; 2],
    /// Its quantized state as it goes in a packet ([`Snap::wire`]).
    wire: u64,
    wire_len: u8,
}

const _: () = assert!(std::mem::size_of::<Snap>() == 32);

impl Snap {
    #[inline]
    pub fn wire(&self) -> WireState {
        WireState {
            bytes: self.wire,
            len: self.wire_len,
        }
    }

    /// Its quantized state.
    pub fn q(&self) -> Quantized {
        self.wire().quantized()
    }
}

/// The grid, plus each entity's snapshot indexed by net id (net ids are dense
/// and recycled, so a `Vec` beats a map here and stays the size of the peak
/// population plus the ids in quarantine).
#[derive(Resource, Debug)]
pub struct SpatialIndex {
    pub grid: Grid,
    pub snaps: Vec<Snap>,
    items: Vec<(u32, f32, f32)>,
}

impl SpatialIndex {
    pub fn snap(&self, id: NetId) -> Option<&Snap> {
        self.snaps.get(id as usize).filter(|s| s.alive)
    }
}

/// AOI event totals over the whole run.
#[derive(Resource, Debug, Default, Clone, Copy)]
pub struct AoiRunTotals(pub AoiTotals);

pub struct SpatialPlugin;

impl Plugin for SpatialPlugin {
    fn build(&self, app: &mut App) {
        let portaled = timing_mark(app, SpatialSystems, "portals");
        let rebuilt = timing_mark(app, SpatialSystems, "rebuild_index");
        let info = app.world().resource::<SceneInfo>();
        let s = &info.settings;
        let cell = Grid::cell_for_reach(s.aoi_radius + s.aoi_margin);
        let grid = Grid::new([0.0, 0.0], info.def.size, cell);
        app.insert_resource(SpatialIndex {
            grid,
            snaps: Vec::new(),
            items: Vec::new(),
        })
        .add_systems(
            Update,
            (
                crate::portal::portals,
                portaled,
                rebuild_index,
                crate::game::snap_game,
                rebuilt,
            )
                .chain()
                .in_set(SpatialSystems),
        );
    }
}

pub struct InterestPlugin;

impl Plugin for InterestPlugin {
    fn build(&self, app: &mut App) {
        let updated = timing_mark(app, InterestSystems, "update_interest");
        let summed = timing_mark(app, InterestSystems, "sum_interest");
        app.init_resource::<AoiRunTotals>().add_systems(
            Update,
            (update_interest, updated, sum_interest, summed)
                .chain()
                .in_set(InterestSystems),
        );
    }
}

fn rebuild_index(
    info: Res<SceneInfo>,
    dir: Res<Directory>,
    mut index: ResMut<SpatialIndex>,
    q: Query<(&Net, &Position, &Pose, Option<&Pc>, Option<&Npc>)>,
) {
    let index = &mut *index;
    index.items.clear();
    // `changed` holds whether it was alive until the snap is rewritten.
    for s in index.snaps.iter_mut() {
        s.changed = s.alive;
        s.alive = false;
    }
    index.snaps.resize(dir.next_net as usize, Snap::default());
    for (net, pos, pose, pc, npc) in &q {
        index.items.push((net.0, pos.0[0], pos.0[1]));
        let (kind, figure) = match (pc, npc) {
            (Some(pc), _) => (KIND_PC, pc.figure),
            (None, Some(npc)) => (KIND_NPC, npc.figure),
            _ => (KIND_NPC, 0),
        };
        if let Some(s) = index.snaps.get_mut(net.0 as usize) {
            let q = info
                .quantizer
                .quantize(pos.0, pose.heading, pose.action, pose.mount);
            let wire = q.wire();
            let update_cost = varint_len(net.0 as u64) + wire.len as usize;
            let net_gen = dir.net_gen(net.0);
            let was_alive = s.changed;
            *s = Snap {
                alive: true,
                changed: !(was_alive && s.net_gen == net_gen && s.wire() == wire),
                kind,
                update_cost: update_cost as u8,
                enter_cost: (update_cost + 1 + varint_len(figure as u64)) as u8,
                game_full: 0,
                game_changed: 0,
                net_gen,
                figure,
                pos: pos.0,
                wire: wire.bytes,
                wire_len: wire.len,
            };
        }
    }
    let SpatialIndex { grid, items, .. } = index;
    grid.rebuild(items);
}

fn update_interest(
    info: Res<SceneInfo>,
    index: Res<SpatialIndex>,
    mut q: Query<(&Net, &Position, &Sight, &mut Interest)>,
    mut scratch: Local<Vec<Scratch>>,
) {
    let margin = info.settings.aoi_margin;
    let grid = &index.grid;
    let mut items: Vec<_> = q.iter_mut().collect();
    crate::par_chunks(&mut items, &mut scratch, |scratch, chunk| {
        for (net, pos, sight, interest) in chunk {
            let Interest { visible, diff } = &mut **interest;
            update_observer(
                grid,
                net.0,
                pos.0,
                sight.radius,
                margin,
                visible,
                diff,
                scratch,
            );
        }
    });
}

fn sum_interest(q: Query<&Interest>, mut run: ResMut<AoiRunTotals>) {
    for i in &q {
        run.0.add(&i.diff);
    }
}
