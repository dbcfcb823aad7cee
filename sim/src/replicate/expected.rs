//! What a client's view must converge to: the truth the tests and the
//! bots' view check compare a client's view with.

use bevy_ecs::prelude::*;
use tessera_proto::GameVals;

use super::{PacketCtx, nearest_interest};
use crate::components::*;
use crate::game::GameSnaps;
use crate::interest::SpatialIndex;
use crate::protocol::{ClientId, EnterState, NetId, Quantized};
use crate::world::SceneInfo;

/// What a client's view must hold once every packet lands: its own state
/// and, by id, the entities of its capped interest with their states.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ExpectedView {
    pub own: NetId,
    pub you: Option<Quantized>,
    pub entities: Vec<EnterState>,
    /// The own replicated game components (owner-only ones too), and each
    /// entity's public ones, in the order of `entities` (empty for a game
    /// that replicates none).
    pub you_game: GameVals,
    pub game: Vec<GameVals>,
}

/// The view `client` converges to as of the last tick (its AOI set capped
/// the same way [`build_packet`](super::build_packet) caps it), or `None` if not attached.
pub fn expected_view(world: &mut World, client: ClientId) -> Option<ExpectedView> {
    let max_interest = world.resource::<SceneInfo>().settings.max_interest;
    let entity = *world.resource::<Directory>().clients.get(&client)?;
    let (net, pos, interest) = {
        let e = world.get_entity(entity).ok()?;
        (
            *e.get::<Net>()?,
            *e.get::<Position>()?,
            e.get::<Interest>()?.visible.clone(),
        )
    };
    let index = world.resource::<SpatialIndex>();
    let ctx = PacketCtx {
        scene: 0,
        epoch: 0,
        tick: 0,
        own: net.0,
        own_pos: pos.0,
        input_ack: 0,
        budget: 0,
        max_interest,
    };
    let mut near = Vec::new();
    nearest_interest(index, &ctx, &interest, &mut near, 0);
    let mut entities: Vec<EnterState> = near
        .iter()
        .filter_map(|&n| {
            let id = n as NetId;
            index.snap(id).map(|s| EnterState {
                id,
                kind: s.kind,
                figure: s.figure,
                q: s.q(),
            })
        })
        .collect();
    entities.sort_unstable_by_key(|e| e.id);
    let game = world.resource::<GameSnaps>();
    let (you_game, vals) = if game.enabled() {
        (
            game.vals(net.0, true),
            entities.iter().map(|e| game.vals(e.id, false)).collect(),
        )
    } else {
        (GameVals::default(), Vec::new())
    };
    Some(ExpectedView {
        own: net.0,
        you: index.snap(net.0).map(|s| s.q()),
        entities,
        you_game,
        game: vals,
    })
}
