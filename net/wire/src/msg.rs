//! The messages of an established link: one bitcode-encoded [`LinkMsg`] per
//! frame, after the handshake. Their layout is tied to
//! [`PROTOCOL_VERSION`](crate::PROTOCOL_VERSION): any change to these types
//! bumps it.

use bitcode::{Decode, Encode};
use bytes::Bytes;

use tessera_proto::{
    AccountId, AvatarInfo, ChatScope, ChatTarget, Input, SessionId, StateAck, Uplink,
};
use tessera_sim::protocol::{AvatarId, ClientId, NetId};

use crate::Epoch;

/// One message on an established link.
///
/// Direction is by convention, not enforced by the type: the receiver decides
/// what it accepts from which role and answers [`LinkMsg::Refused`] otherwise.
#[derive(Debug, Clone, PartialEq, Encode, Decode)]
pub enum LinkMsg {
    /// Liveness and load, sent periodically by scene servers (and gates) to
    /// the coordinator. Missing heartbeats are how a dead node is noticed.
    Heartbeat(Heartbeat),
    /// A node asks to join the registry. After a coordinator restart, a scene
    /// server re-registers with the placements it still holds, so placement
    /// can be rebuilt without hosting a scene twice.
    Register(Register),
    /// The coordinator accepted a [`LinkMsg::Register`].
    Registered {
        /// How often the coordinator expects a heartbeat, in milliseconds.
        heartbeat_ms: u32,
    },
    /// A node leaves the registry on purpose (e.g. SIGTERM after a final flush).
    Deregister { reason: String },
    /// Coordinator → scene server: host `scene` under `epoch`, starting from
    /// the scene's last flushed PC states, read from the data service (the
    /// coordinator) when the placement was sent. They follow in `chunks`
    /// [`LinkMsg::SceneStates`] frames holding `states` states in all (none
    /// when both are 0): a scene of any size places, and no frame nears the
    /// cap. See [`crate::chunks`]. `objects` are the scene's saved objects
    /// (a game's keyed scene entities), at most
    /// [`MAX_PLACE_OBJECT_BYTES`](crate::MAX_PLACE_OBJECT_BYTES) of them.
    PlaceScene {
        scene: String,
        epoch: Epoch,
        chunks: u32,
        states: u32,
        objects: Vec<WireObjectState>,
    },
    /// Coordinator → scene server: chunk `seq` (from 0) of the states a
    /// [`LinkMsg::PlaceScene`] of `scene` at `epoch` announced, sent right
    /// after it, in order. The scene is placed once the last one is in.
    SceneStates {
        scene: String,
        epoch: Epoch,
        seq: u32,
        states: Vec<WirePcState>,
    },
    /// Scene server → coordinator: `scene` is loaded and ticking under `epoch`.
    SceneReady { scene: String, epoch: Epoch },
    /// Coordinator → scene server: stop hosting `scene` (flush first), and
    /// answer [`LinkMsg::SceneReleased`] once the flushed states are durable.
    DropScene { scene: String, epoch: Epoch },
    /// Scene server → coordinator: `scene`, hosted here at `epoch`, is
    /// dropped and every state it saved is acknowledged durable
    /// ([`LinkMsg::SaveAck`]): a planned move may place it elsewhere now.
    SceneReleased { scene: String, epoch: Epoch },
    /// Your placement of `scene` is older than `current`: drop it without
    /// writing its state.
    EpochStale { scene: String, current: Epoch },
    /// Coordinator → scene server: the scene's state as its last tick's
    /// packets were built from it, for checking client views and drawing the
    /// live map (admin only).
    SnapshotRequest { request: u64, scene: String },
    /// Scene server → coordinator: the answer, a postcard-encoded
    /// `tessera_sim::SceneSnapshot`, or `None` when the scene is not hosted
    /// here (or its thread did not answer). The scene thread copies it
    /// between two ticks; encoding happens off that thread.
    Snapshot {
        request: u64,
        scene: String,
        snapshot: Option<Vec<u8>>,
    },
    /// A command for one scene, tagged with the placement epoch it was meant
    /// for; a host holding another epoch answers [`LinkMsg::EpochStale`].
    Command {
        scene: String,
        epoch: Epoch,
        command: SceneCommand,
    },
    /// Gate → scene server: many clients' inputs (and acknowledgements of
    /// state sent alone) for one scene at one placement epoch, gathered over
    /// a few milliseconds (one frame instead of one per input).
    Inputs {
        scene: String,
        epoch: Epoch,
        inputs: Vec<(ClientId, Uplink)>,
    },
    /// Something a scene reported to its host (attached, rejected, portal…).
    Event {
        scene: String,
        epoch: Epoch,
        event: WireEvent,
    },
    /// One encoded replication packet for one client, forwarded as-is.
    Replication { client: ClientId, bytes: Vec<u8> },
    /// Many clients' replication packets of one tick for one gate, each
    /// forwarded as-is (one frame instead of one per client; split so a
    /// frame stays under [`REPLICATION_BATCH_BYTES`]).
    ReplicationBatch { packets: Vec<(ClientId, Vec<u8>)> },
    /// A scene's write-behind batch for the data service. The scene server
    /// keeps its states until a [`LinkMsg::SaveAck`] covers its `seq`, and
    /// sends them again on its next link if this one is lost first.
    SaveBatch(WireSaveBatch),
    /// Coordinator → scene server: every [`LinkMsg::SaveBatch`] this link
    /// carried with `seq <= through` is durable (or was refused, and the
    /// refusal sent first). Cumulative: a lost ack is covered by the next.
    SaveAck { through: u64 },
    /// A request was refused; the text says why.
    Refused { reason: String },

    // --- Sessions: gate (or tool) ↔ coordinator -------------------------
    /// Gate → coordinator: open a session for `account`. Single sign-on: an
    /// older session of the same account is ended and kicked. Answered with
    /// [`LinkMsg::Session`] carrying [`SessionEvent::Opened`] or
    /// [`SessionEvent::Refused`] for the same `request`.
    ///
    /// A gate passes the connect token's `client` id (which becomes the
    /// session id) and its single-use `nonce`, which the coordinator burns:
    /// a token connects once. A tool passes `client: 0` and a zero nonce
    /// (tools are trusted by the cluster secret alone).
    OpenSession {
        request: u64,
        account: AccountId,
        client: SessionId,
        nonce: [u8; 16],
    },
    /// Gate → coordinator: the session's account's avatars
    /// ([`SessionEvent::Avatars`]).
    ListAvatars { session: SessionId },
    /// Gate → coordinator: create an avatar for the session's account
    /// (answered with [`SessionEvent::Avatars`] or a refusal).
    CreateAvatar { session: SessionId, name: String },
    /// Gate → coordinator: a chat line from the session's avatar.
    Chat {
        session: SessionId,
        to: ChatTarget,
        text: String,
    },
    /// Coordinator → gate: deliver a chat line to these sessions.
    ChatTo {
        sessions: Vec<SessionId>,
        from: String,
        scope: ChatScope,
        text: String,
    },
    /// Gate → coordinator: `session` ended (logout or disconnect): its avatar
    /// is detached and stays in its scene, offline.
    CloseSession { session: SessionId },
    /// Gate → coordinator: attach `avatar` for `session` in the avatar's
    /// scene. Answered with [`SessionEvent::Routed`] (where to send inputs),
    /// then [`SessionEvent::Attached`] once the scene spawned it — or
    /// [`SessionEvent::Refused`].
    AttachAvatar {
        session: SessionId,
        avatar: AvatarId,
    },
    /// Gate → coordinator: detach the session's avatar (it is saved and stays
    /// in its scene, offline). Answered with [`SessionEvent::Detached`].
    DetachAvatar { session: SessionId },
    /// Coordinator → gate: something happened to one session.
    Session {
        session: SessionId,
        event: SessionEvent,
    },

    // --- Attaches: coordinator → scene server -----------------------------
    /// Attach `avatar` as client `session` in `scene` (placement `epoch`);
    /// replication for it goes to the link of gate node `gate`. `state`,
    /// when set, overrides the state the scene holds (a portal's arrival).
    /// Idempotent for the same session.
    AttachAt {
        scene: String,
        epoch: Epoch,
        session: SessionId,
        avatar: AvatarId,
        gate: String,
        state: Option<WirePcState>,
    },
    /// Detach client `session` from `scene`: the scene saves its state and
    /// keeps it as offline.
    DetachAt {
        scene: String,
        epoch: Epoch,
        session: SessionId,
        avatar: AvatarId,
    },
    /// `scene` at `epoch` must have exactly `attached` attached: detach
    /// (saving) any other client, attach the missing ones.
    SyncAttached {
        scene: String,
        epoch: Epoch,
        attached: Vec<AttachedSession>,
    },

    // --- Channels -----------------------------------------------------------
    /// Scene server → coordinator: the channel asks a tick of `scene` at
    /// `epoch` made, in order (see `tessera_sim::channels`).
    ChannelOps {
        scene: String,
        epoch: Epoch,
        ops: Vec<WireChannelOp>,
    },
    /// Coordinator → gate: deliver the game's opaque bytes to these
    /// sessions (as `ServerMsg::GameData`). Text goes as [`LinkMsg::ChatTo`].
    GameDataTo {
        sessions: Vec<SessionId>,
        channel: Option<String>,
        data: Vec<u8>,
    },

    // --- A game's messages: scene server → gate -----------------------------
    /// Game events for clients of this gate, and clients to disconnect for
    /// sending what their game cannot take (one frame per tick and gate).
    ToClients { items: Vec<ToClient> },
}

/// One item of [`LinkMsg::ToClients`].
#[derive(Debug, Clone, PartialEq, Eq, Encode, Decode)]
pub enum ToClient {
    /// A game event (`kind`: its index in the game's schema).
    Event {
        client: ClientId,
        kind: u16,
        reliable: bool,
        payload: Vec<u8>,
    },
    /// The client misbehaved (a malformed action): kick it.
    Kick { client: ClientId, reason: String },
}

/// A game's message (mirrors [`tessera_sim::ChannelPayload`]).
#[derive(Debug, Clone, PartialEq, Eq, Encode, Decode)]
pub enum WirePayload {
    Text(String),
    Bytes(Vec<u8>),
}

/// A game's channel ask (mirrors [`tessera_sim::ChannelOp`]).
#[derive(Debug, Clone, PartialEq, Eq, Encode, Decode)]
pub enum WireChannelOp {
    Create {
        channel: String,
    },
    Add {
        channel: String,
        avatar: AvatarId,
    },
    Remove {
        channel: String,
        avatar: AvatarId,
    },
    Disband {
        channel: String,
    },
    Send {
        channel: String,
        payload: WirePayload,
    },
    SendTo {
        avatars: Vec<AvatarId>,
        payload: WirePayload,
    },
}

/// One attached session in [`LinkMsg::SyncAttached`].
#[derive(Debug, Clone, PartialEq, Eq, Encode, Decode)]
pub struct AttachedSession {
    pub avatar: AvatarId,
    pub session: SessionId,
    pub gate: String,
}

/// What the coordinator tells a gate about one of its sessions.
#[derive(Debug, Clone, PartialEq, Encode, Decode)]
pub enum SessionEvent {
    /// The session is open (answer to [`LinkMsg::OpenSession`] `request`).
    Opened { request: u64, account: AccountId },
    /// The avatar's scene is `scene` at `epoch` on scene server `server`,
    /// whose link listens on `addr`: send inputs there as
    /// [`LinkMsg::Command`]s; replication comes back on that link.
    Routed {
        avatar: AvatarId,
        scene: String,
        epoch: Epoch,
        server: String,
        addr: String,
    },
    /// The scene spawned the avatar as `net_id`.
    Attached {
        avatar: AvatarId,
        scene: String,
        net_id: NetId,
    },
    /// The avatar was detached and saved; it stays in `scene`, offline.
    Detached { avatar: AvatarId, scene: String },
    /// The avatar is moving to `scene` through a portal; a `Routed` and an
    /// `Attached` for the new scene follow.
    Transferring { avatar: AvatarId, scene: String },
    /// The account's avatars.
    Avatars(Vec<AvatarInfo>),
    /// A request was refused (`request` is 0 unless it answers
    /// [`LinkMsg::OpenSession`]).
    Refused { request: u64, reason: String },
    /// The session was ended by the cluster (single sign-on, operator kick).
    Kicked { reason: String },
}

/// Payload bytes above which a scene server starts another
/// [`LinkMsg::ReplicationBatch`] for the same gate and tick.
pub const REPLICATION_BATCH_BYTES: usize = 256 * 1024;

/// Load report of one node.
#[derive(Debug, Clone, PartialEq, Eq, Default, Encode, Decode)]
pub struct Heartbeat {
    /// Sender's monotonically increasing heartbeat number.
    pub seq: u64,
    pub scenes: Vec<SceneLoad>,
    /// A gate's connected clients.
    pub online: u32,
    /// A gate's client-facing addresses that still take clients.
    pub addrs: Vec<String>,
}

/// Load of one hosted scene.
#[derive(Debug, Clone, PartialEq, Eq, Encode, Decode)]
pub struct SceneLoad {
    pub scene: String,
    pub epoch: Epoch,
    pub population: u32,
    /// 99th percentile tick duration over the last report interval, µs.
    pub tick_p99_us: u32,
}

/// A node's registration.
#[derive(Debug, Clone, PartialEq, Eq, Default, Encode, Decode)]
pub struct Register {
    /// Where this node's link listener is, for gates to connect to (a scene
    /// server), or its client-facing address (a gate). May be empty (tools).
    pub addr: String,
    /// How many scenes this node is willing to host (0 = no limit).
    pub capacity: u32,
    /// Placements the node already holds (non-empty after a coordinator restart).
    pub hosted: Vec<Placement>,
    /// The game a scene server runs (`Game::name`, at most
    /// [`MAX_GAME_NAME`](crate::MAX_GAME_NAME) bytes); empty for gates and tools.
    pub game: String,
}

/// One scene placed under one epoch.
#[derive(Debug, Clone, PartialEq, Eq, Encode, Decode)]
pub struct Placement {
    pub scene: String,
    pub epoch: Epoch,
}

/// A PC's saved state on the wire (mirrors [`tessera_sim::protocol::PcState`]).
#[derive(Debug, Clone, PartialEq, Default, Encode, Decode)]
pub struct WirePcState {
    pub avatar: AvatarId,
    pub position: [f32; 2],
    pub heading: f32,
    pub action: u8,
    pub mount: u8,
    pub online: bool,
    pub tick: u64,
    pub game: Vec<WireGameField>,
}

/// One persistent component of a game (mirrors [`tessera_sim::GameField`]).
#[derive(Debug, Clone, PartialEq, Eq, Default, Encode, Decode)]
pub struct WireGameField {
    pub name: String,
    pub version: u16,
    pub bytes: Vec<u8>,
}

/// A scene object's saved state (mirrors [`tessera_sim::ObjectState`]):
/// an empty `game` erases it.
#[derive(Debug, Clone, PartialEq, Eq, Default, Encode, Decode)]
pub struct WireObjectState {
    pub key: u64,
    pub tick: u64,
    pub game: Vec<WireGameField>,
}

/// A command for a scene (mirrors [`tessera_sim::protocol::Inbound`]).
#[derive(Debug, Clone, PartialEq, Encode, Decode)]
pub enum SceneCommand {
    Attach {
        client: ClientId,
        avatar: AvatarId,
        state: Option<WirePcState>,
        figure: u32,
    },
    Detach {
        client: ClientId,
    },
    Input {
        client: ClientId,
        input: Input,
    },
    Ack {
        client: ClientId,
        ack: StateAck,
    },
    Action {
        client: ClientId,
        kind: u16,
        payload: Vec<u8>,
    },
}

/// Something a scene reported (mirrors [`tessera_sim::protocol::SceneEvent`]).
#[derive(Debug, Clone, PartialEq, Encode, Decode)]
pub enum WireEvent {
    Attached {
        client: ClientId,
        avatar: AvatarId,
        net_id: NetId,
    },
    AttachRejected {
        client: ClientId,
        avatar: AvatarId,
        reason: String,
    },
    Detached {
        client: ClientId,
        state: WirePcState,
    },
    Portal {
        client: ClientId,
        avatar: AvatarId,
        target: String,
        target_pos: [f32; 2],
    },
}

/// A write-behind batch on the wire (mirrors [`tessera_sim::protocol::SaveBatch`]
/// plus the placement epoch, so the data service can reject a stale writer).
#[derive(Debug, Clone, PartialEq, Default, Encode, Decode)]
pub struct WireSaveBatch {
    /// The sender's number for this batch, increasing over all its links
    /// (what [`LinkMsg::SaveAck`] confirms).
    pub seq: u64,
    pub scene: String,
    pub epoch: Epoch,
    pub tick: u64,
    pub states: Vec<WirePcState>,
    /// The scene's changed objects.
    pub objects: Vec<WireObjectState>,
}

thread_local! {
    /// bitcode's scratch space, reused across messages on one thread: it
    /// saves the allocations `bitcode::encode`/`decode` make per call. It
    /// keeps the capacity of the largest message seen, at most one frame cap
    /// per thread.
    static CODEC_BUFFER: std::cell::RefCell<bitcode::Buffer> =
        std::cell::RefCell::new(bitcode::Buffer::new());
}

/// A message that could not be decoded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("undecodable link message ({len} bytes): {detail}")]
pub struct MsgDecodeError {
    pub len: usize,
    pub detail: String,
}

impl LinkMsg {
    /// Encodes one message as a frame payload.
    pub fn encode(&self) -> Bytes {
        CODEC_BUFFER.with(|buf| match buf.try_borrow_mut() {
            Ok(mut buf) => Bytes::copy_from_slice(buf.encode(self)),
            Err(_) => Bytes::from(bitcode::encode(self)),
        })
    }

    /// Decodes one frame payload. Never panics, whatever the bytes.
    pub fn decode(payload: &[u8]) -> Result<Self, MsgDecodeError> {
        let result = CODEC_BUFFER.with(|buf| match buf.try_borrow_mut() {
            Ok(mut buf) => buf.decode(payload),
            Err(_) => bitcode::decode(payload),
        });
        result.map_err(|e| MsgDecodeError {
            len: payload.len(),
            detail: e.to_string(),
        })
    }

    /// A short name for logs and metrics.
    pub fn kind(&self) -> &'static str {
        match self {
            LinkMsg::Heartbeat(_) => "heartbeat",
            LinkMsg::Register(_) => "register",
            LinkMsg::Registered { .. } => "registered",
            LinkMsg::Deregister { .. } => "deregister",
            LinkMsg::PlaceScene { .. } => "place-scene",
            LinkMsg::SceneStates { .. } => "scene-states",
            LinkMsg::SceneReady { .. } => "scene-ready",
            LinkMsg::DropScene { .. } => "drop-scene",
            LinkMsg::SceneReleased { .. } => "scene-released",
            LinkMsg::EpochStale { .. } => "epoch-stale",
            LinkMsg::SnapshotRequest { .. } => "snapshot-request",
            LinkMsg::Snapshot { .. } => "snapshot",
            LinkMsg::Command { .. } => "command",
            LinkMsg::Event { .. } => "event",
            LinkMsg::Replication { .. } => "replication",
            LinkMsg::Inputs { .. } => "inputs",
            LinkMsg::ReplicationBatch { .. } => "replication-batch",
            LinkMsg::SaveBatch(_) => "save-batch",
            LinkMsg::SaveAck { .. } => "save-ack",
            LinkMsg::Refused { .. } => "refused",
            LinkMsg::OpenSession { .. } => "open-session",
            LinkMsg::ListAvatars { .. } => "list-avatars",
            LinkMsg::CreateAvatar { .. } => "create-avatar",
            LinkMsg::Chat { .. } => "chat",
            LinkMsg::ChatTo { .. } => "chat-to",
            LinkMsg::CloseSession { .. } => "close-session",
            LinkMsg::AttachAvatar { .. } => "attach-avatar",
            LinkMsg::DetachAvatar { .. } => "detach-avatar",
            LinkMsg::Session { .. } => "session",
            LinkMsg::AttachAt { .. } => "attach-at",
            LinkMsg::DetachAt { .. } => "detach-at",
            LinkMsg::SyncAttached { .. } => "sync-attached",
            LinkMsg::ToClients { .. } => "to-clients",
            LinkMsg::ChannelOps { .. } => "channel-ops",
            LinkMsg::GameDataTo { .. } => "game-data-to",
        }
    }
}
