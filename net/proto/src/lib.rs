//! # tessera-proto — the client protocol, defined once
//!
//! Every type a game client and the cluster exchange lives here, so the
//! scene core, the gate, the coordinator and the bots agree by type:
//!
//! * [`login`]: the JSON bodies of the coordinator's login API;
//! * [`client`]: session messages on the gate's reliable channel
//!   ([`ClientMsg`], [`ServerMsg`]);
//! * [`state`]: the client's movement [`Input`] and the per-tick
//!   [`StatePacket`] with its quantization;
//! * the ids both sides name things by ([`SessionId`], [`AccountId`], …).
//!
//! **API Boundary.** This crate owns encodings and nothing else: it must
//! never do I/O, depend on tokio, sockets, bevy or a database, or hold
//! state. A change to a type here is a change of the client protocol: bump
//! [`CLIENT_PROTOCOL`].

pub mod client;
pub mod login;
pub mod state;

use bitcode::{Decode, Encode};
use serde::{Deserialize, Serialize};

pub use client::{
    AvatarInfo, CLIENT_PROTOCOL, ChatScope, ChatTarget, ClientMsg, MAX_CHAT_BYTES, ServerMsg,
};
pub use state::{Input, MoveMode, StatePacket};

/// A 2D vector, `[x, y]` in world units.
pub type Vec2 = [f32; 2];
/// A connected client, as a scene host names it (its session id).
pub type ClientId = u64;
/// A player's avatar, as the data service names it.
pub type AvatarId = u64;
/// The wire id of an entity inside one scene.
pub type NetId = u32;

/// A client session, as issued by login (also the netcode client id).
#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    PartialOrd,
    Ord,
    Hash,
    Default,
    Encode,
    Decode,
    Serialize,
    Deserialize,
)]
#[serde(transparent)]
pub struct SessionId(pub u64);

/// An account, as the data service names it.
#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    PartialOrd,
    Ord,
    Hash,
    Default,
    Encode,
    Decode,
    Serialize,
    Deserialize,
)]
#[serde(transparent)]
pub struct AccountId(pub u64);

impl std::fmt::Display for SessionId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.fmt(f)
    }
}

impl std::fmt::Display for AccountId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.fmt(f)
    }
}
