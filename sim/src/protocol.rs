//! What crosses the boundary of a scene world: commands in, packets and save
//! batches out. The client-facing types (input, the state packet and its
//! codec, ids) are defined once in [`tessera_proto`] and re-exported here.

use crate::scene::Vec2;

pub use tessera_proto::game::GAME_BLOCK_MAX_BYTES;
pub use tessera_proto::state::{
    ACK_WINDOW, DecodeError, ENTER_MAX_BYTES, EnterState, HEADER_MAX_BYTES, Input, KIND_NPC,
    KIND_PC, LEAVE_MAX_BYTES, MAX_PACKET_BYTES, MoveMode, Quantized, Quantizer, StateAck,
    StateEncoder, StateHeader, StatePacket, UPDATE_MAX_BYTES, UpdateList, UpdateState, WireState,
    advance_mask, scene_tag, varint_len,
};
pub use tessera_proto::view::WorldView;
pub use tessera_proto::{AvatarId, ClientId, NetId};

/// The saved state of a PC: what the data service stores per avatar per scene.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct PcState {
    pub avatar: AvatarId,
    pub position: Vec2,
    pub heading: f32,
    pub action: u8,
    pub mount: u8,
    pub online: bool,
    /// Tick at which this state was taken.
    pub tick: u64,
    /// The game's persistent components of the PC, sorted by name (see
    /// [`crate::persist_game`]).
    pub game: Vec<GameField>,
}

/// One persistent component of a game, encoded: its registered name and
/// version, and its postcard bytes. Shared, not copied: every save of
/// every PC clones its fields on the tick thread (10,000 PCs a second).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct GameField {
    pub name: std::sync::Arc<str>,
    pub version: u16,
    pub bytes: std::sync::Arc<[u8]>,
}

/// The saved state of a keyed scene object ([`crate::persist_game::Persistent`]):
/// its persistent components, sorted by name. An empty `game` erases the
/// object's saved state (its entity despawned).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ObjectState {
    pub key: u64,
    /// Tick at which this state was taken.
    pub tick: u64,
    pub game: Vec<GameField>,
}

/// A command from the host, applied at the start of the next tick.
#[derive(Debug, Clone, PartialEq)]
pub enum Inbound {
    /// Put `avatar` in the scene for `client`. `state` is its saved state in
    /// this scene, if any; without it the avatar appears at a spawn point.
    Attach {
        client: ClientId,
        avatar: AvatarId,
        state: Option<PcState>,
        figure: u32,
    },
    /// Take the client's avatar out (it is saved in this tick's batch).
    Detach { client: ClientId },
    /// A movement intent (with the state it acknowledges).
    Input { client: ClientId, input: Input },
    /// An acknowledgement of state packets, alone.
    Ack { client: ClientId, ack: StateAck },
    /// A game action (`kind` is its index in the game's schema), checked
    /// and decoded in ingest (`game::ClientAction`).
    Action {
        client: ClientId,
        kind: u16,
        payload: Vec<u8>,
    },
}

/// Something the host must act on.
#[derive(Debug, Clone, PartialEq)]
pub enum SceneEvent {
    Attached {
        client: ClientId,
        avatar: AvatarId,
        net_id: NetId,
    },
    /// The attach was refused: client or avatar already present, or a full scene.
    AttachRejected {
        client: ClientId,
        avatar: AvatarId,
        reason: &'static str,
    },
    /// The avatar left the scene; `state` is also in this tick's save batch.
    Detached { client: ClientId, state: PcState },
    /// The PC walked into a portal. The host transfers it (detach here, attach there).
    Portal {
        client: ClientId,
        avatar: AvatarId,
        target: String,
        target_pos: Vec2,
    },
    /// The client sent what the game cannot take (a malformed action): the
    /// host disconnects it, saying why.
    Misbehaved { client: ClientId, reason: String },
}

/// A game event for one client (`kind`: its index in the game's schema).
/// One event to many clients shares its payload.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GameEventOut {
    pub client: ClientId,
    pub kind: u16,
    pub reliable: bool,
    pub payload: std::sync::Arc<[u8]>,
}

/// One flush of changed PC states, sorted by avatar, and of changed scene
/// objects, sorted by key.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct SaveBatch {
    pub scene: String,
    pub tick: u64,
    pub states: Vec<PcState>,
    pub objects: Vec<ObjectState>,
}

/// What one tick returns.
#[derive(Debug, Default)]
pub struct TickOutput {
    pub tick: u64,
    /// At most one encoded [`StatePacket`] per client, sorted by client.
    pub packets: Packets,
    pub events: Vec<SceneEvent>,
    /// Game events, in the order sent, one per receiving client.
    pub game: Vec<GameEventOut>,
    pub save: Option<SaveBatch>,
    /// The game's channel asks of this tick, in order (see
    /// [`crate::channels`]): the host forwards them to the coordinator.
    pub channel_ops: Vec<crate::channels::ChannelOp>,
}

/// One tick's packets: encoded back to back in a few large buffers (one per
/// worker chunk, so building them allocates nothing per client), indexed by
/// client. Iterate with `for (client, bytes) in &packets`.
#[derive(Debug, Default, Clone)]
pub struct Packets {
    buffers: Vec<Vec<u8>>,
    /// (client, buffer, start, len), sorted by client once sealed.
    index: Vec<(ClientId, u32, u32, u32)>,
}

impl Packets {
    /// Adds a buffer and the `(client, start, len)` of each packet in it.
    pub fn push_buffer(
        &mut self,
        buf: Vec<u8>,
        entries: impl IntoIterator<Item = (ClientId, u32, u32)>,
    ) {
        let b = self.buffers.len() as u32;
        self.buffers.push(buf);
        self.index
            .extend(entries.into_iter().map(|(c, s, l)| (c, b, s, l)));
    }

    pub(crate) fn sort(&mut self) {
        self.index.sort_unstable_by_key(|e| e.0);
    }

    pub fn len(&self) -> usize {
        self.index.len()
    }

    pub fn is_empty(&self) -> bool {
        self.index.is_empty()
    }

    fn slice(&self, e: &(ClientId, u32, u32, u32)) -> &[u8] {
        let (start, len) = (e.2 as usize, e.3 as usize);
        self.buffers
            .get(e.1 as usize)
            .and_then(|b| b.get(start..start + len))
            .unwrap_or(&[])
    }

    /// The packet for `client`, if it has one this tick.
    pub fn get(&self, client: ClientId) -> Option<&[u8]> {
        let i = self.index.binary_search_by_key(&client, |e| e.0).ok()?;
        Some(self.slice(&self.index[i]))
    }

    /// `(client, packet)` pairs in client order.
    pub fn iter(&self) -> impl Iterator<Item = (&ClientId, &[u8])> + '_ {
        self.index.iter().map(|e| (&e.0, self.slice(e)))
    }
}

impl<'a> IntoIterator for &'a Packets {
    type Item = (&'a ClientId, &'a [u8]);
    type IntoIter = Box<dyn Iterator<Item = (&'a ClientId, &'a [u8])> + 'a>;

    fn into_iter(self) -> Self::IntoIter {
        Box::new(self.iter())
    }
}
