//! Portals: a PC stepping into a portal area of the scene is handed to the
//! host for transfer. An engine piece (in [`crate::SpatialSystems`], before
//! the grid is rebuilt), so it works whatever plugin moves the PCs: it
//! reads the tick's final positions.

use bevy_ecs::prelude::*;

use crate::components::*;
use crate::protocol::SceneEvent;
use crate::world::{SceneInfo, SceneOutbox};

/// A PC stepping into a portal area is handed to the host (edge-triggered).
pub(crate) fn portals(
    info: Res<SceneInfo>,
    mut out: ResMut<SceneOutbox>,
    mut q: Query<(&Position, &mut Pc)>,
) {
    if info.def.portal.is_empty() {
        return;
    }
    for (pos, mut pc) in &mut q {
        let hit = info.def.portal.iter().find(|p| p.area.contains(pos.0));
        match hit {
            Some(portal) if !pc.in_portal => {
                pc.in_portal = true;
                out.events.push(SceneEvent::Portal {
                    client: pc.client,
                    avatar: pc.avatar,
                    target: portal.target.clone(),
                    target_pos: portal.target_pos,
                });
            }
            Some(_) => {}
            None => pc.in_portal = false,
        }
    }
}
