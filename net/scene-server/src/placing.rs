//! Placements from the coordinator: a `PlaceScene` announcing the scene's
//! saved states, the `SceneStates` chunks carrying them (put back together
//! by [`Assembly`](crate::assembly::Assembly)), and the scene placed on the
//! host once the last one is in.

use std::sync::Arc;
use std::time::Instant;

use tessera_link::{LinkSender, bump, lock};
use tessera_wire::{Epoch, LinkMsg, WireObjectState, WirePcState};
use tracing::{Instrument as _, debug, error, info, warn};

use crate::assembly::{ChunkError, Progress};
use crate::coordinator::{drop_blocking, obey_attachment};
use crate::gates::pump;
use crate::state::ServerState;

/// A placement of `scene` at `epoch`, whose `states` saved states follow
/// in `chunks` chunks. A newer or equal placement hosted here wins; an
/// older one is dropped without writing, at once (it is stale whether or
/// not the new one completes).
pub(crate) async fn on_place_scene(
    shared: &Arc<ServerState>,
    sender: &LinkSender,
    scene: String,
    epoch: Epoch,
    chunks: u32,
    states: u32,
    objects: Vec<WireObjectState>,
) {
    if !shared.defs.contains_key(&scene) {
        warn!(%scene, "placement of a scene this server does not know");
        let _ = sender.try_send(&LinkMsg::Refused {
            reason: format!("scene {scene:?} is not in this server's scene folder"),
        });
        return;
    }
    match shared.epoch_of(&scene) {
        Some(e) if e >= epoch => return,
        Some(_) => drop_blocking(shared, scene.clone(), true).await,
        None => {}
    }
    let progress = lock(&shared.assembly).announce_objects(
        &scene,
        epoch,
        chunks,
        states,
        objects,
        Instant::now(),
    );
    if progress == Ok(Progress::Waiting) {
        info!(%scene, epoch, chunks, states, "placement announced; its states follow");
    }
    went_on(shared, scene, epoch, progress);
}

/// Chunk `seq` of the states of `scene`'s placement at `epoch`.
pub(crate) fn on_scene_states(
    shared: &Arc<ServerState>,
    scene: String,
    epoch: Epoch,
    seq: u32,
    states: Vec<WirePcState>,
) {
    let progress = lock(&shared.assembly).chunk(&scene, epoch, seq, states, Instant::now());
    went_on(shared, scene, epoch, progress);
}

/// Places the scene once its states are whole; logs a refusal (counted
/// by the assembly).
fn went_on(
    shared: &Arc<ServerState>,
    scene: String,
    epoch: Epoch,
    progress: Result<Progress, ChunkError>,
) {
    match progress {
        Ok(Progress::Waiting) => {}
        Ok(Progress::Complete(states, held, objects)) => {
            place(shared, scene, epoch, states, objects);
            for msg in held {
                obey_attachment(shared, msg);
            }
        }
        Err(e) => warn!(%scene, epoch, error = %e, reason = e.reason(), "placement states refused"),
    }
}

/// Hosts `scene` under `epoch` from its last flushed states.
fn place(
    shared: &Arc<ServerState>,
    scene: String,
    epoch: Epoch,
    states: Vec<WirePcState>,
    objects: Vec<WireObjectState>,
) {
    let Some(def) = shared.defs.get(&scene).cloned() else {
        return;
    };
    let (n, m) = (states.len(), objects.len());
    let states = states.into_iter().map(Into::into).collect();
    let objects = objects.into_iter().map(Into::into).collect();
    let placed = lock(&shared.host).place_restoring(
        &scene,
        def,
        epoch,
        states,
        objects,
        shared.settings.clone(),
    );
    match placed {
        Ok(()) => {
            bump(&shared.counters.placed);
            info!(%scene, epoch, states = n, objects = m, "placed");
            if let Some(output) = lock(&shared.host).output(&scene) {
                tokio::spawn(pump(Arc::clone(shared), scene, epoch, output).in_current_span());
            }
        }
        Err(e) => error!(%scene, epoch, error = %e, "placement failed"),
    }
}

/// Drops the placements whose chunks stopped coming: heartbeats stop
/// listing them, and the coordinator places them again.
pub(crate) fn expire_assemblies(shared: &ServerState) {
    for (scene, epoch) in lock(&shared.assembly).expire(Instant::now()) {
        warn!(%scene, epoch, "placement dropped: its states stopped arriving");
    }
}

/// Forgets the unfinished placement of `scene` at `through` or older (the
/// coordinator dropped it, or said it is stale); returns its epoch.
pub(crate) fn forget_assembly(shared: &ServerState, scene: &str, through: Epoch) -> Option<Epoch> {
    let dropped = lock(&shared.assembly).drop_scene(scene, through);
    if let Some(epoch) = dropped {
        debug!(%scene, epoch, "unfinished placement dropped");
    }
    dropped
}

/// `msg`, unless it is an attach message for a placement still being
/// assembled: such a message is held until the placement is whole.
pub(crate) fn hold_for_assembly(shared: &ServerState, msg: LinkMsg) -> Option<LinkMsg> {
    let (scene, epoch) = match &msg {
        LinkMsg::AttachAt { scene, epoch, .. }
        | LinkMsg::DetachAt { scene, epoch, .. }
        | LinkMsg::SyncAttached { scene, epoch, .. } => (scene.clone(), *epoch),
        _ => return Some(msg),
    };
    if shared.epoch_of(&scene) == Some(epoch) {
        return Some(msg);
    }
    let mut assembly = lock(&shared.assembly);
    if assembly.epoch_of(&scene) != Some(epoch) {
        return Some(msg);
    }
    assembly.hold(&scene, epoch, msg);
    debug!(%scene, epoch, "attach message held until the placement is whole");
    None
}
