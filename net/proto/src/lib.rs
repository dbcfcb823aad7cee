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
pub mod game;
pub mod login;
pub mod state;
pub mod view;

use bitcode::{Decode, Encode};
use serde::{Deserialize, Serialize};

pub use client::{
    AvatarInfo, CLIENT_PROTOCOL, ChatScope, ChatTarget, ClientMsg, MAX_CHAT_BYTES, ServerMsg,
};
pub use game::{GameBlock, GameSchema, GameVals, GameWire, Scope};
pub use state::{Input, MoveMode, StateAck, StatePacket, Uplink};
pub use view::WorldView;

/// A 2D vector, `[x, y]` in world units.
pub type Vec2 = [f32; 2];
/// A connected client, as a scene host names it (its session id).
pub type ClientId = u64;
/// A player's avatar, as the data service names it.
pub type AvatarId = u64;
/// The wire id of an entity inside one scene.
pub type NetId = u32;

/// Declares an id newtype over `u64`: ordered, hashable, encoded as its
/// number (bitcode and JSON alike), displayed as its number.
macro_rules! id_type {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(
            Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default, Encode, Decode,
            Serialize, Deserialize,
        )]
        #[serde(transparent)]
        pub struct $name(pub u64);

        impl std::fmt::Display for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                self.0.fmt(f)
            }
        }
    };
}

id_type!(
    /// A client session, as issued by login (also the netcode client id).
    SessionId
);
id_type!(
    /// An account, as the data service names it.
    AccountId
);

#[cfg(test)]
mod tests {
    use super::*;

    /// The ids replaced raw `u64`s on the wire: their encodings must be the
    /// number's, so a peer's bytes and the login JSON read the same.
    #[test]
    fn ids_encode_as_their_number() {
        for n in [0, 7, 1 << 40, u64::MAX] {
            assert_eq!(bitcode::encode(&SessionId(n)), bitcode::encode(&n));
            assert_eq!(bitcode::encode(&AccountId(n)), bitcode::encode(&n));
            assert_eq!(
                serde_json::to_string(&AccountId(n)).expect("encodes"),
                n.to_string()
            );
        }
        let ids = vec![SessionId(1), SessionId(u64::MAX)];
        assert_eq!(
            bitcode::encode(&ids),
            bitcode::encode(&vec![1u64, u64::MAX])
        );
        assert_eq!(AccountId(42).to_string(), "42");
    }
}
