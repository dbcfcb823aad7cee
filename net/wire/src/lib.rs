//! # tessera-wire — the cluster's internal link protocol
//!
//! What the coordinator, scene servers, gates and tools say to each other
//! over a link (`tessera-link`):
//!
//! * [`handshake`]: the [`Handshake`] frames that open a link (hello →
//!   challenge → response → welcome), each side proving it holds the cluster
//!   [`Secret`] without sending it, behind a preamble that lets mismatched
//!   builds refuse each other legibly;
//! * [`msg`]: every frame after the handshake, one bitcode-encoded
//!   [`LinkMsg`], and the payload types it carries;
//! * [`chunks`]: a placement's saved states split over
//!   [`LinkMsg::SceneStates`] frames;
//! * conversions (`convert.rs`) between the scene-facing wire types
//!   ([`SceneCommand`], [`WireEvent`], [`WirePcState`], [`WireSaveBatch`])
//!   and the `tessera_sim` host interface they mirror.
//!
//! **API Boundary.** This crate defines the internal link protocol and
//! nothing else: the handshake and the bitcode-encoded messages after it,
//! versioned together by [`PROTOCOL_VERSION`] — any change to an encoded
//! type or to the proof construction bumps it. It must never do I/O or
//! depend on tokio: it turns values into bytes and back, and `tessera-link`
//! moves the bytes.

pub mod chunks;
mod convert;
pub mod handshake;
pub mod msg;

pub use chunks::{
    MAX_PLACE_OBJECT_BYTES, MAX_PLACE_STATES, PLACE_CHUNK_BYTES, PLACE_CHUNK_STATES, PlacementMsgs,
    TooManyStates, game_len,
};
pub use handshake::{
    Challenge, Handshake, HandshakeDecodeError, Hello, MAGIC, NONCE_LEN, Nonce, PREAMBLE_LEN,
    Proof, RefuseCode, Response, Role, Secret, Side, Transcript,
};
pub use msg::{
    AttachedSession, Heartbeat, LinkMsg, MsgDecodeError, Placement, REPLICATION_BATCH_BYTES,
    Register, SceneCommand, SceneLoad, SessionEvent, ToClient, WireChannelOp, WireEvent,
    WireGameField, WireObjectState, WirePayload, WirePcState, WireSaveBatch,
};
pub use tessera_proto::{AvatarInfo, ChatScope, ChatTarget, Input, MoveMode};

/// The version of [`LinkMsg`]'s layout. Both ends of a link must agree exactly.
///
/// Bump it on any change to a type encoded in a [`LinkMsg`] or a handshake
/// body, or to the proof construction — including the postcard-encoded
/// `tessera_sim::SceneSnapshot` a [`LinkMsg::Snapshot`] carries (6: it gained
/// the last tick's duration and the obstacles, for the live map; 7:
/// [`LinkMsg::SceneReleased`], for planned moves; 8: a placement's states in
/// [`LinkMsg::SceneStates`] chunks; 9: channels, [`LinkMsg::ChannelOps`] and
/// [`LinkMsg::GameDataTo`], the client protocol 3's chat scopes, a game's
/// actions and events, [`LinkMsg::ToClients`], and the game a scene server
/// runs, in [`Register`]; 10: a game's persistent state — PC states' game
/// fields, and scene objects in save batches and placements).
pub const PROTOCOL_VERSION: u16 = 10;

/// The longest game name a scene server may register with, in bytes.
pub const MAX_GAME_NAME: usize = 64;

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

#[cfg(test)]
mod tests {
    use super::*;

    // Here rather than beside either codec: it feeds the same bytes to both.
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
