//! The **client protocol**: what a game client (or bot) and a gate say to
//! each other over renet, once netcode has connected them.
//!
//! * `Channel::Reliable` (id 0) carries [`ClientMsg`] /
//!   [`ServerMsg`] (session, avatar choice, chat, errors), encoded with
//!   postcard (a format with a published specification), one message per
//!   renet message.
//! * `Channel::Unreliable` (id 1) carries, from the client,
//!   [`ClientMsg::Input`] and [`ClientMsg::Ack`] (postcard), and from the
//!   gate the scene's replication packets **unchanged**
//!   ([`StatePacket`](crate::state::StatePacket), as the scene encoded it).
//!
//! `docs/protocol.md` describes all of it byte by byte.
//!
//! A message that does not decode is a protocol error: the gate counts it
//! and disconnects the client. Bump [`CLIENT_PROTOCOL`] on any change to
//! these types; logins with another client version get an upgrade error.

use bitcode::{Decode, Encode};
use serde::{Deserialize, Serialize};

use crate::state::{Input, StateAck};
use crate::{AccountId, AvatarId, SessionId};

/// The client protocol version a login must announce as `client_version`.
pub const CLIENT_PROTOCOL: u32 = 3;

/// The netcode protocol id of Tessera's client protocol: connect tokens and
/// the gate's netcode servers carry it.
pub const NETCODE_PROTOCOL_ID: u64 = 0x5445_5353_0000_0000 | CLIENT_PROTOCOL as u64;

/// Longest chat text, in bytes.
pub const MAX_CHAT_BYTES: usize = 256;

/// Client → gate. Variant order is the wire's: append, never reorder.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum ClientMsg {
    /// The account's avatars (answered with [`ServerMsg::Avatars`]).
    ListAvatars,
    /// Creates an avatar (answered with [`ServerMsg::Avatars`] or an error).
    CreateAvatar { name: String },
    /// Enters the world with one of the account's avatars, in its scene,
    /// where it was (answered with [`ServerMsg::Entered`] or an error).
    Select { avatar: AvatarId },
    /// Movement intent, with the state packets applied so far (on the
    /// unreliable channel).
    Input(Input),
    /// A chat line.
    Chat { to: ChatTarget, text: String },
    /// Leaves the world: the avatar is detached and stays in its scene,
    /// offline; the session stays open (select again, or disconnect).
    Leave,
    /// The state packets applied so far, alone: sent on the unreliable
    /// channel after applying a packet when no input goes out that tick.
    Ack(StateAck),
}

/// Where a chat line goes.
#[derive(Debug, Clone, PartialEq, Eq, Encode, Decode, Serialize, Deserialize)]
pub enum ChatTarget {
    /// Everyone online in the sender's scene.
    Scene,
    /// Everyone online.
    Global,
    /// One avatar by name, wherever it is.
    Whisper(String),
    /// Every online member of a channel the game made the sender a member
    /// of (a party, a guild), wherever they are.
    Channel(String),
}

/// One avatar in [`ServerMsg::Avatars`].
#[derive(Debug, Clone, PartialEq, Eq, Encode, Decode, Serialize, Deserialize)]
pub struct AvatarInfo {
    pub id: AvatarId,
    pub name: String,
    pub scene: String,
}

/// Gate → client. Variant order is the wire's: append, never reorder.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum ServerMsg {
    /// The session is open; the avatar list follows.
    Welcome {
        account: AccountId,
        session: SessionId,
    },
    Avatars(Vec<AvatarInfo>),
    /// The avatar is in `scene` as entity `net_id`: replication follows on
    /// the unreliable channel. Also sent after a portal or a failover. The
    /// client drops its view and from now on applies only state packets
    /// tagged `(scene_tag, epoch)`.
    Entered {
        avatar: AvatarId,
        scene: String,
        net_id: u32,
        scene_tag: u32,
        epoch: u64,
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
    /// Opaque bytes the game sent this avatar, as a member of `channel` or
    /// (`None`) by name; the game's client interprets them.
    GameData {
        channel: Option<String>,
        data: Vec<u8>,
    },
}

/// How a chat line was sent, as its receivers see it.
#[derive(Debug, Clone, PartialEq, Eq, Encode, Decode, Serialize, Deserialize)]
pub enum ChatScope {
    Scene,
    Global,
    Whisper,
    /// On this channel: by a member (`from` is its name) or by the game
    /// (`from` is empty).
    Channel(String),
    /// By the game to this avatar (`from` is empty).
    Game,
}

/// Why a message did not decode.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MsgDecodeError {
    #[error("malformed message: {0}")]
    Malformed(String),
    #[error("{0} bytes after the message")]
    Trailing(usize),
}

/// postcard cannot fail on these types (no maps, no custom serializers, no
/// size limit), so encoding has no error to report.
fn encode_msg<T: Serialize>(msg: &T) -> Vec<u8> {
    postcard::to_allocvec(msg).unwrap_or_default()
}

/// Decodes one whole message: trailing bytes are an error too.
fn decode_msg<'a, T: Deserialize<'a>>(bytes: &'a [u8]) -> Result<T, MsgDecodeError> {
    let (msg, rest) =
        postcard::take_from_bytes(bytes).map_err(|e| MsgDecodeError::Malformed(e.to_string()))?;
    if !rest.is_empty() {
        return Err(MsgDecodeError::Trailing(rest.len()));
    }
    Ok(msg)
}

impl ClientMsg {
    pub fn encode(&self) -> Vec<u8> {
        encode_msg(self)
    }

    /// Never panics, whatever the bytes.
    pub fn decode(bytes: &[u8]) -> Result<Self, MsgDecodeError> {
        decode_msg(bytes)
    }
}

impl ServerMsg {
    pub fn encode(&self) -> Vec<u8> {
        encode_msg(self)
    }

    /// Never panics, whatever the bytes.
    pub fn decode(bytes: &[u8]) -> Result<Self, MsgDecodeError> {
        decode_msg(bytes)
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
            scene_tag: 9,
            epoch: 2,
        };
        assert_eq!(ServerMsg::decode(&s.encode()).expect("decodes"), s);
        assert!(ClientMsg::decode(&[0xff; 7]).is_err());
        assert!(ClientMsg::decode(&[]).is_err());
        assert!(ClientMsg::decode(&[5, 0]).is_err(), "trailing byte");
    }

    /// The bytes docs/protocol.md promises, for a few messages.
    #[test]
    fn messages_have_the_documented_postcard_bytes() {
        assert_eq!(ClientMsg::ListAvatars.encode(), [0]);
        assert_eq!(ClientMsg::Select { avatar: 300 }.encode(), [2, 0xac, 0x02]);
        assert_eq!(
            ClientMsg::Chat {
                to: ChatTarget::Whisper("Al".into()),
                text: "hi".into()
            }
            .encode(),
            [4, 2, 2, b'A', b'l', 2, b'h', b'i']
        );
        assert_eq!(
            ClientMsg::Chat {
                to: ChatTarget::Channel("p".into()),
                text: "yo".into()
            }
            .encode(),
            [4, 3, 1, b'p', 2, b'y', b'o']
        );
        assert_eq!(
            ServerMsg::Chat {
                from: "Al".into(),
                scope: ChatScope::Channel("p".into()),
                text: "yo".into()
            }
            .encode(),
            [5, 2, b'A', b'l', 3, 1, b'p', 2, b'y', b'o']
        );
        assert_eq!(
            ServerMsg::Chat {
                from: String::new(),
                scope: ChatScope::Game,
                text: "yo".into()
            }
            .encode(),
            [5, 0, 4, 2, b'y', b'o']
        );
        assert_eq!(
            ServerMsg::GameData {
                channel: Some("p".into()),
                data: vec![7, 8]
            }
            .encode(),
            [8, 1, 1, b'p', 2, 7, 8]
        );
        let input = Input {
            seq: 1,
            dir: [1.0, 0.0],
            mode: crate::MoveMode::Run,
            heading: 0.0,
            action: 2,
            mount: 3,
            state_ack: StateAck {
                scene: 1,
                epoch: 2,
                tick: 3,
                mask: 4,
            },
        };
        let mut want = vec![3, 1, 0, 0, 0x80, 0x3f, 0, 0, 0, 0, 1, 0, 0, 0, 0, 2, 3];
        want.extend_from_slice(&[1, 2, 3, 4]);
        assert_eq!(ClientMsg::Input(input).encode(), want);
        assert_eq!(
            ServerMsg::Left { avatar: 1 }.encode(),
            [4, 1],
            "variant index then fields"
        );
    }
}
