//! Components and shared resources of a scene world.

use std::collections::BTreeMap;

use bevy_ecs::prelude::*;

use crate::aoi::Diff;
use crate::protocol::{AvatarId, ClientId, MoveMode, NetId, Quantized};
use crate::scene::Vec2;

/// The entity's wire id, unique in the scene for its whole life (never reused).
#[derive(Component, Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Net(pub NetId);

#[derive(Component, Debug, Clone, Copy, PartialEq, Default)]
pub struct Position(pub Vec2);

/// Units per second, set by Simulate from intent or behaviour.
#[derive(Component, Debug, Clone, Copy, PartialEq, Default)]
pub struct Velocity(pub Vec2);

#[derive(Component, Debug, Clone, Copy, PartialEq, Default)]
pub struct Pose {
    pub heading: f32,
    pub action: u8,
    pub mount: u8,
}

/// The latest validated movement intent of a PC.
#[derive(Component, Debug, Clone, Copy, PartialEq, Default)]
pub struct Intent {
    pub dir: Vec2,
    pub mode: MoveMode,
}

/// A player character, attached for a client.
#[derive(Component, Debug, Clone, Copy, PartialEq, Eq)]
pub struct Pc {
    pub client: ClientId,
    pub avatar: AvatarId,
    pub figure: u32,
    /// Last input sequence applied.
    pub ack: u32,
    /// Inside a portal area last tick (portal events fire on entry only).
    pub in_portal: bool,
}

#[derive(Component, Debug, Clone, Copy, PartialEq, Eq)]
pub struct Npc {
    pub figure: u32,
}

/// Seeded wander behaviour (NPCs, and the walkers of `tessera sim`).
#[derive(Component, Debug, Clone, Copy, PartialEq)]
pub struct Wander {
    /// Stay within `radius` of `home`; `radius <= 0` means anywhere.
    pub home: Vec2,
    pub radius: f32,
    pub speed: f32,
    pub next_turn: u64,
}

/// An entity that has an area of interest.
#[derive(Component, Debug, Clone, Copy, PartialEq)]
pub struct Sight {
    pub radius: f32,
}

/// What an observer sees (ids, in grid-scan order) and this tick's diff.
#[derive(Component, Debug, Default, Clone)]
pub struct Interest {
    pub visible: Vec<NetId>,
    pub diff: Diff,
}

/// What a client has been told: the entities it knows and the state last sent
/// for each (in no particular order).
#[derive(Component, Debug, Default, Clone)]
pub struct ClientView {
    pub known: Vec<(NetId, Quantized)>,
    pub you_sent: Option<Quantized>,
    /// Encoded bytes per estimated byte in this client's last packet (0 = none
    /// yet): how much tighter than the worst case its packets really pack.
    pub ratio: f32,
}

/// Persistence bookkeeping of a PC: the state last handed to the data service.
#[derive(Component, Debug, Default, Clone, Copy, PartialEq)]
pub struct SaveTrack {
    pub saved: Option<(Vec2, f32, u8, u8)>,
    pub dirty: bool,
}

/// The current tick (time, for the simulation).
#[derive(Resource, Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct TickCount(pub u64);

/// Who is where: client and avatar lookups, and the next net id.
#[derive(Resource, Debug, Default)]
pub struct Directory {
    pub clients: BTreeMap<ClientId, Entity>,
    pub avatars: BTreeMap<AvatarId, Entity>,
    pub next_net: NetId,
}

impl Directory {
    pub fn alloc_net(&mut self) -> NetId {
        let id = self.next_net;
        self.next_net = self.next_net.wrapping_add(1);
        id
    }
}

/// Everything dropped, clamped or refused, counted. Never reset during a run.
#[derive(Resource, Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Counters {
    /// Commands refused because the inbound queue was full.
    pub inbound_full: u64,
    /// Inputs beyond the per-client per-tick cap.
    pub inputs_flood_dropped: u64,
    /// Inputs with NaN / infinite fields.
    pub inputs_invalid_dropped: u64,
    /// Inputs whose direction was longer than 1 (a speed hack) and got clamped.
    pub inputs_speed_clamped: u64,
    /// Inputs or detaches for a client that is not attached.
    pub unknown_client: u64,
    pub attach_rejected: u64,
    /// Moves stopped or shortened by an obstacle.
    pub obstacle_blocked: u64,
    /// Moves clamped to the scene bounds.
    pub bounds_clamped: u64,
    /// Replication items (enter / leave / update) deferred to a later tick by the byte budget.
    pub items_deferred: u64,
    /// Packets that had to be re-encoded smaller after the size estimate.
    pub packets_trimmed: u64,
    /// Failed ECS commands, process-wide (bevy's fallback error handler is a
    /// plain `fn` with no world context, so it cannot tell scenes apart).
    pub command_errors: u64,
}
