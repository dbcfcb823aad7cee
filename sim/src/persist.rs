//! Persist: PCs whose saved state changed are marked dirty; every flush
//! interval the tick returns one [`SaveBatch`] of them. Detached PCs' final
//! states are added to the batch of the tick they leave in, which is then
//! flushed at once. Writing to disk is the host's job, off the tick.

use bevy_app::{App, Plugin, Update};
use bevy_ecs::prelude::*;

use crate::metrics::timing_mark;

use crate::PersistSystems;
use crate::components::*;
use crate::persist_game::{GameFields, PersistStats};
use crate::protocol::{GameField, PcState, SaveBatch};
use crate::world::{SceneInfo, SceneOutbox};

/// Final states of PCs detached this tick.
#[derive(Resource, Debug, Default)]
pub struct PendingSaves(pub Vec<PcState>);

pub struct PersistPlugin;

impl Plugin for PersistPlugin {
    fn build(&self, app: &mut App) {
        let marked = timing_mark(app, PersistSystems, "mark_dirty");
        let flushed = timing_mark(app, PersistSystems, "flush");
        crate::persist_game::init(app);
        app.init_resource::<PendingSaves>().add_systems(
            Update,
            (mark_dirty, marked, flush, flushed)
                .chain()
                .in_set(PersistSystems),
        );
    }
}

pub fn pc_state(
    pc: &Pc,
    pos: &Position,
    pose: &Pose,
    online: bool,
    tick: u64,
    game: Vec<GameField>,
) -> PcState {
    PcState {
        avatar: pc.avatar,
        position: pos.0,
        heading: pose.heading,
        action: pose.action,
        mount: pose.mount,
        online,
        tick,
        game,
    }
}

pub(crate) fn mark_dirty(mut q: Query<(&Position, &Pose, &mut SaveTrack)>) {
    for (pos, pose, mut track) in &mut q {
        let now = Some((pos.0, pose.heading, pose.action, pose.mount));
        if track.saved != now && !track.dirty {
            track.dirty = true;
        }
    }
}

pub(crate) fn flush(
    info: Res<SceneInfo>,
    tick: Res<TickCount>,
    mut pending: ResMut<PendingSaves>,
    mut out: ResMut<SceneOutbox>,
    mut stats: ResMut<PersistStats>,
    mut q: Query<(&Pc, &Position, &Pose, &mut SaveTrack, &mut GameFields)>,
) {
    let due = tick.0.is_multiple_of(info.flush_every);
    if !due && pending.0.is_empty() {
        return;
    }
    let mut states = std::mem::take(&mut pending.0);
    if due {
        for (pc, pos, pose, mut track, mut fields) in &mut q {
            if track.dirty {
                let game = fields.to_save(&mut stats);
                if fields.saved != game {
                    fields.saved = game.clone();
                }
                states.push(pc_state(pc, pos, pose, true, tick.0, game));
                track.saved = Some((pos.0, pose.heading, pose.action, pose.mount));
                track.dirty = false;
            }
        }
    }
    if states.is_empty() {
        return;
    }
    states.sort_by_key(|s| s.avatar);
    out.save = Some(SaveBatch {
        scene: info.def.name.clone(),
        tick: tick.0,
        states,
        objects: Vec::new(),
    });
}
