//! Helpers for tests, benches and tools: small scenes, fake clients and a
//! packet decoder that checks the size cap.

use crate::protocol::{ClientId, Inbound, Input, MoveMode, StatePacket};
use crate::scene::{Rect, SceneDef};
use crate::{SceneSettings, SceneWorld};

/// An open square field of side `side` with one spawn point in the middle.
pub fn open_world(side: f32, settings: SceneSettings) -> SceneWorld {
    SceneWorld::new(SceneDef::open_field("test", side), settings)
}

/// A field with the given obstacles.
pub fn world_with_obstacles(
    side: f32,
    obstacles: Vec<Rect>,
    settings: SceneSettings,
) -> SceneWorld {
    let mut def = SceneDef::open_field("test", side);
    def.obstacle = obstacles;
    SceneWorld::new(def, settings)
}

/// An attach command at a given position.
pub fn attach_at(client: ClientId, pos: [f32; 2]) -> Inbound {
    Inbound::Attach {
        client,
        avatar: client,
        state: Some(crate::PcState {
            avatar: client,
            position: pos,
            ..Default::default()
        }),
        figure: 0,
    }
}

/// A movement input.
pub fn input(client: ClientId, seq: u32, dir: [f32; 2], mode: MoveMode) -> Inbound {
    Inbound::Input {
        client,
        input: Input {
            seq,
            dir,
            mode,
            ..Default::default()
        },
    }
}

/// Decodes a packet, panicking with a clear message if it is over the cap
/// or malformed (for tests).
pub fn decode(bytes: &[u8]) -> StatePacket {
    match StatePacket::decode(bytes) {
        Ok(p) => p,
        Err(e) => panic!("packet of {} bytes does not decode: {e}", bytes.len()),
    }
}
