//! The **client protocol**: what a game client (or bot) and a gate say to
//! each other over renet, once netcode has connected them.
//!
//! * `Channel::Reliable` (id 0) carries [`ClientMsg`] /
//!   [`ServerMsg`] (session, avatar choice, chat, errors), bitcode-encoded,
//!   one message per renet message.
//! * `Channel::Unreliable` (id 1) carries, from the
//!   client, [`ClientMsg::Input`] (bitcode), and from the gate the scene's
//!   replication packets **unchanged** ([`StatePacket`](crate::state::StatePacket), as the
//!   scene encoded it).
//!
//! A message that does not decode is a protocol error: the gate counts it
//! and disconnects the client. Bump [`CLIENT_PROTOCOL`] on any change to
//! these types; logins with another client version get an upgrade error.

use bitcode::{Decode, Encode};

use crate::state::Input;
use crate::{AccountId, AvatarId, SessionId};

/// The client protocol version a login must announce as `client_version`.
pub const CLIENT_PROTOCOL: u32 = 1;

/// The netcode protocol id of Tessera's client protocol: connect tokens and
/// the gate's netcode servers carry it.
pub const NETCODE_PROTOCOL_ID: u64 = 0x5445_5353_0000_0000 | CLIENT_PROTOCOL as u64;

/// Longest chat text, in bytes.
pub const MAX_CHAT_BYTES: usize = 256;

/// Client → gate.
#[derive(Debug, Clone, PartialEq, Encode, Decode)]
pub enum ClientMsg {
    /// The account's avatars (answered with [`ServerMsg::Avatars`]).
    ListAvatars,
    /// Creates an avatar (answered with [`ServerMsg::Avatars`] or an error).
    CreateAvatar { name: String },
    /// Enters the world with one of the account's avatars, in its scene,
    /// where it was (answered with [`ServerMsg::Entered`] or an error).
    Select { avatar: AvatarId },
    /// Movement intent (usually on the unreliable channel).
    Input(Input),
    /// A chat line.
    Chat { to: ChatTarget, text: String },
    /// Leaves the world: the avatar is detached and stays in its scene,
    /// offline; the session stays open (select again, or disconnect).
    Leave,
}

/// Where a chat line goes.
#[derive(Debug, Clone, PartialEq, Eq, Encode, Decode)]
pub enum ChatTarget {
    /// Everyone online in the sender's scene.
    Scene,
    /// Everyone online.
    Global,
    /// One avatar by name, wherever it is.
    Whisper(String),
}

/// One avatar in [`ServerMsg::Avatars`].
#[derive(Debug, Clone, PartialEq, Eq, Encode, Decode)]
pub struct AvatarInfo {
    pub id: AvatarId,
    pub name: String,
    pub scene: String,
}

/// Gate → client.
#[derive(Debug, Clone, PartialEq, Encode, Decode)]
pub enum ServerMsg {
    /// The session is open; the avatar list follows.
    Welcome {
        account: AccountId,
        session: SessionId,
    },
    Avatars(Vec<AvatarInfo>),
    /// The avatar is in `scene` as entity `net_id`: replication follows on
    /// the unreliable channel. Also sent after a portal or a failover.
    Entered {
        avatar: AvatarId,
        scene: String,
        net_id: u32,
    },
    /// The avatar is moving to another scene through a portal.
    Moving {
        scene: String,
    },
    /// The avatar was detached (answer to [`ClientMsg::Leave`]).
    Left {
        avatar: AvatarId,
    },
    /// A chat line. `scope` says how it was sent.
    Chat {
        from: String,
        scope: ChatScope,
        text: String,
    },
    /// A request failed; `code` is stable for programs, `text` for people.
    Error {
        code: String,
        text: String,
    },
    /// The session is ending (another login of the account, an operator
    /// kick or ban, a protocol violation); the gate disconnects next.
    Kicked {
        reason: String,
    },
}

/// How a chat line was sent, as its receivers see it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Encode, Decode)]
pub enum ChatScope {
    Scene,
    Global,
    Whisper,
}

impl ClientMsg {
    pub fn encode(&self) -> Vec<u8> {
        bitcode::encode(self)
    }

    /// Never panics, whatever the bytes.
    pub fn decode(bytes: &[u8]) -> Result<Self, bitcode::Error> {
        bitcode::decode(bytes)
    }
}

impl ServerMsg {
    pub fn encode(&self) -> Vec<u8> {
        bitcode::encode(self)
    }

    /// Never panics, whatever the bytes.
    pub fn decode(bytes: &[u8]) -> Result<Self, bitcode::Error> {
        bitcode::decode(bytes)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_round_trip_and_garbage_is_an_error() {
        let msgs = [
            ClientMsg::ListAvatars,
            ClientMsg::CreateAvatar { name: "Ann".into() },
            ClientMsg::Select { avatar: 7 },
            ClientMsg::Input(Input::default()),
            ClientMsg::Chat {
                to: ChatTarget::Whisper("Bob".into()),
                text: "hi".into(),
            },
            ClientMsg::Leave,
        ];
        for m in &msgs {
            assert_eq!(&ClientMsg::decode(&m.encode()).expect("decodes"), m);
        }
        let s = ServerMsg::Entered {
            avatar: 1,
            scene: "field".into(),
            net_id: 3,
        };
        assert_eq!(ServerMsg::decode(&s.encode()).expect("decodes"), s);
        assert!(ClientMsg::decode(&[0xff; 7]).is_err());
        assert!(ClientMsg::decode(&[]).is_err());
    }
}
