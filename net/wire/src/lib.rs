//! The internal wire protocol: what coordinator, scene servers, gates and
//! tools say to each other over a link (`tessera-link`).
//!
//! A link carries two kinds of frame payload:
//!
//! * **Handshake frames** ([`Handshake`]): hello → challenge → response →
//!   welcome, a mutual challenge–response over the cluster secret (see
//!   [`Secret::proof`]): each side proves it holds the secret with a keyed
//!   BLAKE2b MAC over both sides' fresh nonces and identities, so the secret
//!   itself never crosses the wire and a recorded handshake cannot be
//!   replayed. Handshake frames start with a fixed, never-changing preamble — [`MAGIC`], the sender's protocol
//!   version (u16 big-endian), a kind byte — so that two builds with different
//!   [`PROTOCOL_VERSION`]s can still tell each other *why* they cannot talk,
//!   instead of failing on a body they cannot decode. A refusal's body is plain
//!   UTF-8 for the same reason.
//! * **Messages** ([`LinkMsg`]): every frame after the handshake, one
//!   bitcode-encoded `LinkMsg` per frame. Their layout is tied to
//!   [`PROTOCOL_VERSION`]: any change to these types bumps it.
//!
//! The scene-facing types ([`SceneCommand`], [`WireEvent`], [`WirePcState`])
//! mirror `tessera_sim`'s host interface with conversions both ways, so the
//! sim crate stays free of wire concerns and a wire change never silently
//! follows a sim refactor. A client's [`Input`] is the client protocol's own
//! type (`tessera_proto`), forwarded unchanged.

use std::fmt;

use bitcode::{Decode, Encode};
use blake2::{
    Blake2b512, Blake2bMac, Digest,
    digest::{Mac, consts::U32},
};
use bytes::Bytes;

pub use tessera_proto::{AvatarInfo, ChatScope, ChatTarget, Input, MoveMode};
use tessera_sim::protocol::{AvatarId, ClientId, Inbound, NetId, PcState, SaveBatch, SceneEvent};

/// The version of [`LinkMsg`]'s layout. Both ends of a link must agree exactly.
///
/// Bump it on any change to a type encoded in a [`LinkMsg`] or a handshake
/// body, or to the proof construction.
pub const PROTOCOL_VERSION: u16 = 5;

/// The first four bytes of every handshake frame.
pub const MAGIC: [u8; 4] = *b"TSLK";

/// Length of the handshake preamble: magic, version, kind.
pub const PREAMBLE_LEN: usize = MAGIC.len() + 2 + 1;

/// The longest node name a peer may announce, in bytes.
pub const MAX_NODE_NAME: usize = 64;

/// Whether `name` is a node name a config may set: 1 to [`MAX_NODE_NAME`]
/// bytes of ASCII letters, digits, `-`, `_` and `.` (stricter than what a
/// link accepts from a peer, so names read well in logs and status).
pub fn is_config_node_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= MAX_NODE_NAME
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
}

/// A placement generation. Every placement of a scene on a server carries a
/// higher epoch than the one before; a message for an older epoch is stale.
pub type Epoch = u64;

/// What a process is, as it announces itself in the handshake.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Encode, Decode)]
pub enum Role {
    Coordinator,
    SceneServer,
    Gate,
    /// An operator tool or a test harness (e.g. attaching avatars directly
    /// until the gate exists).
    Tool,
}

impl Role {
    /// Every role, for configs that accept any peer.
    pub const ALL: [Role; 4] = [Role::Coordinator, Role::SceneServer, Role::Gate, Role::Tool];
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Role::Coordinator => "coordinator",
            Role::SceneServer => "scene-server",
            Role::Gate => "gate",
            Role::Tool => "tool",
        })
    }
}

/// The cluster's shared secret. It never goes on the wire (only proofs made
/// with it do), its `Debug` never shows the bytes, and comparisons take time
/// independent of where the first difference is.
#[derive(Clone, Default)]
pub struct Secret(Vec<u8>);

impl Secret {
    pub fn new(bytes: impl Into<Vec<u8>>) -> Self {
        Self(bytes.into())
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Constant-time comparison: the time taken depends only on the lengths,
    /// never on the contents.
    pub fn ct_eq(&self, other: &Secret) -> bool {
        let (a, b) = (&self.0, &other.0);
        // Compare over the longer length so a short guess costs as much as a
        // long one; the length difference itself folds into the result.
        let n = a.len().max(b.len());
        let mut diff = u8::from(a.len() != b.len());
        for i in 0..n {
            let x = a.get(i).copied().unwrap_or(0);
            let y = b.get(i).copied().unwrap_or(0);
            diff |= x ^ y;
        }
        std::hint::black_box(diff) == 0
    }

    /// The proof that `side` holds this secret, bound to one handshake's
    /// `transcript`: BLAKE2b-256 keyed with BLAKE2b-512(secret), personalised
    /// `tessera-link`, over the side's label and the transcript.
    pub fn proof(&self, side: Side, transcript: &Transcript<'_>) -> Proof {
        self.mac(side, transcript).finalize().into_bytes().into()
    }

    /// A 32-byte key for `purpose`, derived from the secret (BLAKE2b-256
    /// keyed with BLAKE2b-512(secret), personalised `tessera-key`): e.g. the
    /// netcode key that the coordinator signs connect tokens with and the
    /// gates decrypt them with. Never the secret itself.
    pub fn derive_key(&self, purpose: &str) -> [u8; 32] {
        let key = Blake2b512::digest(&self.0);
        let mut mac = Blake2bMac::<U32>::new_with_salt_and_personal(&key, &[], b"tessera-key")
            .unwrap_or_else(|_| unreachable!("BLAKE2b parameters are within limits"));
        mac.update(purpose.as_bytes());
        mac.finalize().into_bytes().into()
    }

    /// Checks a peer's proof, in constant time.
    pub fn verify(&self, side: Side, transcript: &Transcript<'_>, proof: &Proof) -> bool {
        self.mac(side, transcript).verify_slice(proof).is_ok()
    }

    fn mac(&self, side: Side, transcript: &Transcript<'_>) -> Blake2bMac<U32> {
        let key = Blake2b512::digest(&self.0);
        // A 64-byte key, an empty salt and a 12-byte persona are all within
        // BLAKE2b's limits, so this cannot fail.
        let mut mac = Blake2bMac::<U32>::new_with_salt_and_personal(&key, &[], b"tessera-link")
            .unwrap_or_else(|_| unreachable!("BLAKE2b parameters are within limits"));
        mac.update(match side {
            Side::Accepting => b"accepting",
            Side::Connecting => b"connecting",
        });
        transcript.feed(&mut mac);
        mac
    }
}

/// Bytes of a handshake nonce.
pub const NONCE_LEN: usize = 32;
/// A fresh random value per handshake and side.
pub type Nonce = [u8; NONCE_LEN];
/// A MAC proving knowledge of the cluster secret.
pub type Proof = [u8; 32];

/// Which side of a handshake a proof is for. Each side's proof is labelled,
/// so one side's proof can never be reflected back as the other's.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Side {
    Connecting,
    Accepting,
}

/// Everything a handshake's proofs are bound to: protocol version, both
/// identities and both nonces.
#[derive(Debug, Clone, Copy)]
pub struct Transcript<'a> {
    pub connecting_role: Role,
    pub connecting_node: &'a str,
    pub connecting_nonce: &'a Nonce,
    pub accepting_role: Role,
    pub accepting_node: &'a str,
    pub accepting_nonce: &'a Nonce,
}

impl Transcript<'_> {
    fn feed(&self, mac: &mut Blake2bMac<U32>) {
        mac.update(&PROTOCOL_VERSION.to_be_bytes());
        for (role, node, nonce) in [
            (
                self.connecting_role,
                self.connecting_node,
                self.connecting_nonce,
            ),
            (
                self.accepting_role,
                self.accepting_node,
                self.accepting_nonce,
            ),
        ] {
            mac.update(&[role as u8]);
            // Length-prefixed, so no two transcripts share a byte string.
            mac.update(&(node.len() as u64).to_be_bytes());
            mac.update(node.as_bytes());
            mac.update(nonce);
        }
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Secret(<{} bytes redacted>)", self.0.len())
    }
}

impl From<&str> for Secret {
    fn from(s: &str) -> Self {
        Self::new(s.as_bytes())
    }
}

/// Step 1: the connecting side's first frame, who it is and a fresh nonce.
#[derive(Debug, Clone, PartialEq, Eq, Encode, Decode)]
pub struct Hello {
    pub role: Role,
    /// The node's name in the cluster (≤ [`MAX_NODE_NAME`] bytes, not empty).
    pub node: String,
    pub nonce: Nonce,
}

/// Step 2: the accepting side's answer to an acceptable [`Hello`], who it is,
/// its own nonce, and its proof ([`Side::Accepting`]) of holding the secret.
#[derive(Debug, Clone, PartialEq, Eq, Encode, Decode)]
pub struct Challenge {
    pub role: Role,
    pub node: String,
    pub nonce: Nonce,
    pub proof: Proof,
}

/// Step 3: the connecting side's proof ([`Side::Connecting`]), sent only once
/// the accepting side has proved itself.
#[derive(Debug, Clone, PartialEq, Eq, Encode, Decode)]
pub struct Response {
    pub proof: Proof,
}

/// Why a handshake was refused. The code is stable across versions.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum RefuseCode {
    /// The protocol versions differ.
    Version = 1,
    /// The secret proof did not match.
    Secret = 2,
    /// This side does not accept peers of that role.
    Role = 3,
    /// The hello was malformed (bad preamble, undecodable body, bad name).
    Malformed = 4,
    /// No hello arrived within the handshake timeout.
    Timeout = 5,
    /// Something else; the text says what.
    Other = 255,
}

impl RefuseCode {
    fn from_u8(b: u8) -> Self {
        match b {
            1 => Self::Version,
            2 => Self::Secret,
            3 => Self::Role,
            4 => Self::Malformed,
            5 => Self::Timeout,
            _ => Self::Other,
        }
    }
}

impl fmt::Display for RefuseCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Version => "version",
            Self::Secret => "secret",
            Self::Role => "role",
            Self::Malformed => "malformed",
            Self::Timeout => "timeout",
            Self::Other => "other",
        })
    }
}

/// A handshake frame.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Handshake {
    Hello(Hello),
    Challenge(Challenge),
    Response(Response),
    /// Step 4: the accepting side took the response, and the link is up.
    Welcome,
    /// Either side's refusal, at any step; the sender hangs up after it.
    Refused {
        code: RefuseCode,
        reason: String,
    },
}

const KIND_HELLO: u8 = 1;
const KIND_WELCOME: u8 = 2;
const KIND_REFUSED: u8 = 3;
const KIND_CHALLENGE: u8 = 4;
const KIND_RESPONSE: u8 = 5;

/// A handshake frame that could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HandshakeDecodeError {
    #[error("not a handshake frame (bad magic or {0}-byte frame)")]
    NotHandshake(usize),
    /// The preamble is fine but the versions differ: the body is not read.
    #[error("peer speaks protocol version {theirs}, this node {PROTOCOL_VERSION}")]
    Version { theirs: u16 },
    #[error("unknown handshake kind {0}")]
    Kind(u8),
    #[error("undecodable handshake body: {0}")]
    Body(String),
}

impl Handshake {
    /// Encodes with this build's [`PROTOCOL_VERSION`].
    pub fn encode(&self) -> Vec<u8> {
        self.encode_versioned(PROTOCOL_VERSION)
    }

    /// Encodes claiming `version`: for tools and tests that must speak to, or
    /// pretend to be, another build.
    pub fn encode_versioned(&self, version: u16) -> Vec<u8> {
        let mut out = Vec::with_capacity(64);
        out.extend_from_slice(&MAGIC);
        out.extend_from_slice(&version.to_be_bytes());
        match self {
            Handshake::Hello(h) => {
                out.push(KIND_HELLO);
                out.extend_from_slice(&bitcode::encode(h));
            }
            Handshake::Challenge(c) => {
                out.push(KIND_CHALLENGE);
                out.extend_from_slice(&bitcode::encode(c));
            }
            Handshake::Response(r) => {
                out.push(KIND_RESPONSE);
                out.extend_from_slice(&bitcode::encode(r));
            }
            Handshake::Welcome => out.push(KIND_WELCOME),
            Handshake::Refused { code, reason } => {
                out.push(KIND_REFUSED);
                out.push(*code as u8);
                out.extend_from_slice(reason.as_bytes());
            }
        }
        out
    }

    /// Decodes a handshake frame. A refusal is read whatever its version (so
    /// a peer's "wrong version" reaches us); anything else only at ours.
    pub fn decode(frame: &[u8]) -> Result<Self, HandshakeDecodeError> {
        if frame.len() < PREAMBLE_LEN || frame[..MAGIC.len()] != MAGIC {
            return Err(HandshakeDecodeError::NotHandshake(frame.len()));
        }
        let version = u16::from_be_bytes([frame[4], frame[5]]);
        let kind = frame[6];
        let body = &frame[PREAMBLE_LEN..];
        if kind == KIND_REFUSED {
            let (code, text) = match body.split_first() {
                Some((c, rest)) => (RefuseCode::from_u8(*c), rest),
                None => (RefuseCode::Other, &[][..]),
            };
            return Ok(Handshake::Refused {
                code,
                reason: String::from_utf8_lossy(text).into_owned(),
            });
        }
        if version != PROTOCOL_VERSION {
            return Err(HandshakeDecodeError::Version { theirs: version });
        }
        let body_err = |e: bitcode::Error| HandshakeDecodeError::Body(e.to_string());
        match kind {
            KIND_HELLO => Ok(Handshake::Hello(bitcode::decode(body).map_err(body_err)?)),
            KIND_CHALLENGE => Ok(Handshake::Challenge(
                bitcode::decode(body).map_err(body_err)?,
            )),
            KIND_RESPONSE => Ok(Handshake::Response(
                bitcode::decode(body).map_err(body_err)?,
            )),
            KIND_WELCOME if body.is_empty() => Ok(Handshake::Welcome),
            KIND_WELCOME => Err(HandshakeDecodeError::Body("welcome with a body".into())),
            k => Err(HandshakeDecodeError::Kind(k)),
        }
    }
}

// ---------------------------------------------------------------------------
// Messages after the handshake.
// ---------------------------------------------------------------------------

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
    /// `states` — the scene's last flushed PC states, read from the data
    /// service (the coordinator) when the placement was sent.
    PlaceScene {
        scene: String,
        epoch: Epoch,
        states: Vec<WirePcState>,
    },
    /// Scene server → coordinator: `scene` is loaded and ticking under `epoch`.
    SceneReady { scene: String, epoch: Epoch },
    /// Coordinator → scene server: stop hosting `scene` (flush first).
    DropScene { scene: String, epoch: Epoch },
    /// Your placement of `scene` is older than `current`: drop it without
    /// writing its state.
    EpochStale { scene: String, current: Epoch },
    /// A command for one scene, tagged with the placement epoch it was meant
    /// for; a host holding another epoch answers [`LinkMsg::EpochStale`].
    Command {
        scene: String,
        epoch: Epoch,
        command: SceneCommand,
    },
    /// Gate → scene server: many clients' inputs for one scene at one
    /// placement epoch, gathered over a few milliseconds (one frame instead
    /// of one per input).
    Inputs {
        scene: String,
        epoch: Epoch,
        inputs: Vec<(ClientId, Input)>,
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
    /// A scene's write-behind batch for the data service.
    SaveBatch(WireSaveBatch),
    /// The data service stored a batch.
    SaveAck {
        scene: String,
        epoch: Epoch,
        tick: u64,
    },
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
        account: u64,
        client: u64,
        nonce: [u8; 16],
    },
    /// Gate → coordinator: the session's account's avatars
    /// ([`SessionEvent::Avatars`]).
    ListAvatars { session: u64 },
    /// Gate → coordinator: create an avatar for the session's account
    /// (answered with [`SessionEvent::Avatars`] or a refusal).
    CreateAvatar { session: u64, name: String },
    /// Gate → coordinator: a chat line from the session's avatar.
    Chat {
        session: u64,
        to: ChatTarget,
        text: String,
    },
    /// Coordinator → gate: deliver a chat line to these sessions.
    ChatTo {
        sessions: Vec<u64>,
        from: String,
        scope: ChatScope,
        text: String,
    },
    /// Gate → coordinator: `session` ended (logout or disconnect): its avatar
    /// is detached and stays in its scene, offline.
    CloseSession { session: u64 },
    /// Gate → coordinator: attach `avatar` for `session` in the avatar's
    /// scene. Answered with [`SessionEvent::Routed`] (where to send inputs),
    /// then [`SessionEvent::Attached`] once the scene spawned it — or
    /// [`SessionEvent::Refused`].
    AttachAvatar { session: u64, avatar: AvatarId },
    /// Gate → coordinator: detach the session's avatar (it is saved and stays
    /// in its scene, offline). Answered with [`SessionEvent::Detached`].
    DetachAvatar { session: u64 },
    /// Coordinator → gate: something happened to one session.
    Session { session: u64, event: SessionEvent },

    // --- Attaches: coordinator → scene server -----------------------------
    /// Attach `avatar` as client `session` in `scene` (placement `epoch`);
    /// replication for it goes to the link of gate node `gate`. `state`,
    /// when set, overrides the state the scene holds (a portal's arrival).
    /// Idempotent for the same session.
    AttachAt {
        scene: String,
        epoch: Epoch,
        session: u64,
        avatar: AvatarId,
        gate: String,
        state: Option<WirePcState>,
    },
    /// Detach client `session` from `scene`: the scene saves its state and
    /// keeps it as offline.
    DetachAt {
        scene: String,
        epoch: Epoch,
        session: u64,
        avatar: AvatarId,
    },
    /// `scene` at `epoch` must have exactly `attached` attached: detach
    /// (saving) any other client, attach the missing ones.
    SyncAttached {
        scene: String,
        epoch: Epoch,
        attached: Vec<AttachedSession>,
    },
}

/// One attached session in [`LinkMsg::SyncAttached`].
#[derive(Debug, Clone, PartialEq, Eq, Encode, Decode)]
pub struct AttachedSession {
    pub avatar: AvatarId,
    pub session: u64,
    pub gate: String,
}

/// What the coordinator tells a gate about one of its sessions.
#[derive(Debug, Clone, PartialEq, Encode, Decode)]
pub enum SessionEvent {
    /// The session is open (answer to [`LinkMsg::OpenSession`] `request`).
    Opened { request: u64, account: u64 },
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
}

/// One scene placed under one epoch.
#[derive(Debug, Clone, PartialEq, Eq, Encode, Decode)]
pub struct Placement {
    pub scene: String,
    pub epoch: Epoch,
}

/// A PC's saved state on the wire (mirrors [`tessera_sim::protocol::PcState`]).
#[derive(Debug, Clone, Copy, PartialEq, Default, Encode, Decode)]
pub struct WirePcState {
    pub avatar: AvatarId,
    pub position: [f32; 2],
    pub heading: f32,
    pub action: u8,
    pub mount: u8,
    pub online: bool,
    pub tick: u64,
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
    pub scene: String,
    pub epoch: Epoch,
    pub tick: u64,
    pub states: Vec<WirePcState>,
}

thread_local! {
    /// bitcode's scratch space, reused across messages on one thread: it
    /// saves the allocations `bitcode::encode`/`decode` make per call (about
    /// half the cost of a small message). It keeps the capacity of the largest
    /// message seen, at most one frame cap per thread.
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
            LinkMsg::SceneReady { .. } => "scene-ready",
            LinkMsg::DropScene { .. } => "drop-scene",
            LinkMsg::EpochStale { .. } => "epoch-stale",
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
        }
    }
}

// ---------------------------------------------------------------------------
// Conversions to and from the scene core's types.
// ---------------------------------------------------------------------------

impl From<PcState> for WirePcState {
    fn from(s: PcState) -> Self {
        Self {
            avatar: s.avatar,
            position: s.position,
            heading: s.heading,
            action: s.action,
            mount: s.mount,
            online: s.online,
            tick: s.tick,
        }
    }
}

impl From<WirePcState> for PcState {
    fn from(s: WirePcState) -> Self {
        Self {
            avatar: s.avatar,
            position: s.position,
            heading: s.heading,
            action: s.action,
            mount: s.mount,
            online: s.online,
            tick: s.tick,
        }
    }
}

impl From<&Inbound> for SceneCommand {
    fn from(c: &Inbound) -> Self {
        match *c {
            Inbound::Attach {
                client,
                avatar,
                state,
                figure,
            } => Self::Attach {
                client,
                avatar,
                state: state.map(Into::into),
                figure,
            },
            Inbound::Detach { client } => Self::Detach { client },
            Inbound::Input { client, input } => Self::Input { client, input },
        }
    }
}

impl From<SceneCommand> for Inbound {
    fn from(c: SceneCommand) -> Self {
        match c {
            SceneCommand::Attach {
                client,
                avatar,
                state,
                figure,
            } => Self::Attach {
                client,
                avatar,
                state: state.map(Into::into),
                figure,
            },
            SceneCommand::Detach { client } => Self::Detach { client },
            SceneCommand::Input { client, input } => Self::Input { client, input },
        }
    }
}

impl From<&SceneEvent> for WireEvent {
    fn from(e: &SceneEvent) -> Self {
        match e {
            SceneEvent::Attached {
                client,
                avatar,
                net_id,
            } => Self::Attached {
                client: *client,
                avatar: *avatar,
                net_id: *net_id,
            },
            SceneEvent::AttachRejected {
                client,
                avatar,
                reason,
            } => Self::AttachRejected {
                client: *client,
                avatar: *avatar,
                reason: (*reason).to_owned(),
            },
            SceneEvent::Detached { client, state } => Self::Detached {
                client: *client,
                state: (*state).into(),
            },
            SceneEvent::Portal {
                client,
                avatar,
                target,
                target_pos,
            } => Self::Portal {
                client: *client,
                avatar: *avatar,
                target: target.clone(),
                target_pos: *target_pos,
            },
        }
    }
}

impl WireSaveBatch {
    /// The wire form of a scene's batch, tagged with the placement epoch.
    pub fn from_sim(batch: &SaveBatch, epoch: Epoch) -> Self {
        Self {
            scene: batch.scene.clone(),
            epoch,
            tick: batch.tick,
            states: batch.states.iter().map(|s| (*s).into()).collect(),
        }
    }

    /// The scene core's form (the epoch is dropped: check it first).
    pub fn to_sim(&self) -> SaveBatch {
        SaveBatch {
            scene: self.scene.clone(),
            tick: self.tick,
            states: self.states.iter().map(|s| (*s).into()).collect(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hello() -> Hello {
        Hello {
            role: Role::SceneServer,
            node: "scene-a".into(),
            nonce: [7; NONCE_LEN],
        }
    }

    #[test]
    fn handshake_round_trips() {
        for h in [
            Handshake::Hello(hello()),
            Handshake::Challenge(Challenge {
                role: Role::Coordinator,
                node: "coord".into(),
                nonce: [1; NONCE_LEN],
                proof: [2; 32],
            }),
            Handshake::Response(Response { proof: [3; 32] }),
            Handshake::Welcome,
            Handshake::Refused {
                code: RefuseCode::Secret,
                reason: "bad secret".into(),
            },
        ] {
            assert_eq!(Handshake::decode(&h.encode()), Ok(h));
        }
    }

    #[test]
    fn a_refusal_is_read_from_any_version_but_a_hello_is_not() {
        let refused = Handshake::Refused {
            code: RefuseCode::Version,
            reason: "speak v1".into(),
        };
        assert_eq!(
            Handshake::decode(&refused.encode_versioned(PROTOCOL_VERSION + 7)),
            Ok(refused)
        );
        assert_eq!(
            Handshake::decode(&Handshake::Hello(hello()).encode_versioned(PROTOCOL_VERSION + 1)),
            Err(HandshakeDecodeError::Version {
                theirs: PROTOCOL_VERSION + 1
            })
        );
        assert!(matches!(
            Handshake::decode(b"TSL"),
            Err(HandshakeDecodeError::NotHandshake(3))
        ));
        assert!(matches!(
            Handshake::decode(b"GET / HTTP/1.1\r\n"),
            Err(HandshakeDecodeError::NotHandshake(_))
        ));
        let mut bad_body = Handshake::Hello(hello()).encode();
        bad_body.truncate(PREAMBLE_LEN + 2);
        assert!(matches!(
            Handshake::decode(&bad_body),
            Err(HandshakeDecodeError::Body(_))
        ));
    }

    #[test]
    fn secrets_compare_by_value_and_never_print() {
        let a = Secret::from("correct horse");
        assert!(a.ct_eq(&Secret::from("correct horse")));
        assert!(!a.ct_eq(&Secret::from("correct hors")));
        assert!(!a.ct_eq(&Secret::from("correct horsf")));
        assert!(!a.ct_eq(&Secret::from("")));
        assert!(Secret::from("").ct_eq(&Secret::default()));
        let shown = format!("{:?}", Secret::from("s3cret"));
        assert!(!shown.contains("s3cret"), "{shown}");
        assert!(shown.contains("redacted"), "{shown}");
    }

    #[test]
    fn proofs_bind_the_secret_the_side_and_the_whole_transcript() {
        let secret = Secret::from("s3cret");
        let t = Transcript {
            connecting_role: Role::SceneServer,
            connecting_node: "scene-a",
            connecting_nonce: &[1; NONCE_LEN],
            accepting_role: Role::Coordinator,
            accepting_node: "coord",
            accepting_nonce: &[2; NONCE_LEN],
        };
        let p = secret.proof(Side::Connecting, &t);
        assert!(secret.verify(Side::Connecting, &t, &p));
        // Deterministic for one transcript.
        assert_eq!(p, secret.proof(Side::Connecting, &t));
        // Another secret, the other side's label, or any transcript change fails.
        assert!(!Secret::from("s3cres").verify(Side::Connecting, &t, &p));
        assert!(!secret.verify(Side::Accepting, &t, &p));
        let changed = [
            Transcript {
                connecting_role: Role::Gate,
                ..t
            },
            Transcript {
                connecting_node: "scene-b",
                ..t
            },
            Transcript {
                connecting_nonce: &[9; NONCE_LEN],
                ..t
            },
            Transcript {
                accepting_role: Role::Tool,
                ..t
            },
            Transcript {
                accepting_node: "coorc",
                ..t
            },
            Transcript {
                accepting_nonce: &[9; NONCE_LEN],
                ..t
            },
            // Moving a byte between names must not collide.
            Transcript {
                connecting_node: "scene-ac",
                accepting_node: "oord",
                ..t
            },
        ];
        for c in &changed {
            assert!(!secret.verify(Side::Connecting, c, &p), "{c:?}");
        }
        let mut flipped = p;
        flipped[31] ^= 1;
        assert!(!secret.verify(Side::Connecting, &t, &flipped));
    }

    #[test]
    fn sim_types_convert_both_ways() {
        let state = PcState {
            avatar: 7,
            position: [1.5, -2.0],
            heading: 0.25,
            action: 3,
            mount: 1,
            online: true,
            tick: 99,
        };
        let input = Input {
            seq: 5,
            dir: [0.0, 1.0],
            mode: MoveMode::Run,
            heading: 1.0,
            action: 2,
            mount: 0,
        };
        for cmd in [
            Inbound::Attach {
                client: 1,
                avatar: 7,
                state: Some(state),
                figure: 4,
            },
            Inbound::Attach {
                client: 1,
                avatar: 7,
                state: None,
                figure: 4,
            },
            Inbound::Detach { client: 1 },
            Inbound::Input { client: 1, input },
        ] {
            let wire = SceneCommand::from(&cmd);
            let msg = LinkMsg::Command {
                scene: "meadow".into(),
                epoch: 3,
                command: wire,
            };
            let Ok(LinkMsg::Command { command, .. }) = LinkMsg::decode(&msg.encode()) else {
                panic!("command did not round-trip");
            };
            assert_eq!(Inbound::from(command), cmd);
        }
        let batch = SaveBatch {
            scene: "meadow".into(),
            tick: 10,
            states: vec![state],
        };
        assert_eq!(WireSaveBatch::from_sim(&batch, 2).to_sim(), batch);
        let ev = WireEvent::from(&SceneEvent::AttachRejected {
            client: 1,
            avatar: 2,
            reason: "scene full",
        });
        assert_eq!(
            ev,
            WireEvent::AttachRejected {
                client: 1,
                avatar: 2,
                reason: "scene full".into()
            }
        );
    }

    #[test]
    fn garbage_never_decodes_into_a_panic() {
        let mut seed = 0x9e37_79b9_7f4a_7c15u64;
        for len in 0..512 {
            let bytes: Vec<u8> = (0..len)
                .map(|_| {
                    seed ^= seed << 13;
                    seed ^= seed >> 7;
                    seed ^= seed << 17;
                    seed as u8
                })
                .collect();
            let _ = LinkMsg::decode(&bytes);
            let _ = Handshake::decode(&bytes);
        }
    }
}
