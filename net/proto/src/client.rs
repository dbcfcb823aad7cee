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
    /// A game action: `kind` is its index among the game's actions
    /// ([`crate::GameSchema`]), `payload` exactly its width. On either
    /// channel. A wrong kind or size ends the session; beyond its rate it is
    /// dropped.
    Action { kind: u16, payload: Vec<u8> },
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
    /// A game event sent reliably: `kind` is its index among the game's
    /// events. (Unreliable ones come on channel 1: [`GAME_EVENT_TYPE`].)
    Event {
        kind: u16,
        payload: Vec<u8>,
    },
}

/// The first byte of a game event datagram on the unreliable channel:
/// `[GAME_EVENT_TYPE, varint kind, payload…]` (a state packet's is
/// [`crate::state::STATE_PACKET_TYPE`]).
pub const GAME_EVENT_TYPE: u8 = 2;

/// An unreliable game event's datagram.
pub fn encode_event_datagram(kind: u16, payload: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(payload.len() + 4);
    out.push(GAME_EVENT_TYPE);
    let mut k = kind as u32;
    while k >= 0x80 {
        out.push(k as u8 | 0x80);
        k >>= 7;
    }
    out.push(k as u8);
    out.extend_from_slice(payload);
    out
}

/// Reads an unreliable game event's datagram: `(kind, payload)`, or `None`
/// if it is not one.
pub fn decode_event_datagram(bytes: &[u8]) -> Option<(u16, &[u8])> {
    let (&t, mut rest) = bytes.split_first()?;
    if t != GAME_EVENT_TYPE {
        return None;
    }
    let mut kind = 0u32;
    for i in 0..3 {
        let (&b, r) = rest.split_first()?;
        rest = r;
        kind |= ((b & 0x7f) as u32) << (7 * i);
        if b & 0x80 == 0 {
            return u16::try_from(kind).ok().map(|k| (k, rest));
        }
    }
    None
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
        let action = ClientMsg::Action {
            kind: 1,
            payload: vec![9, 8],
        };
        assert_eq!(action.encode(), [7, 1, 2, 9, 8]);
        assert_eq!(
            ClientMsg::decode(&action.encode()).expect("decodes"),
            action
        );
        let event = ServerMsg::Event {
            kind: 300,
            payload: vec![1],
        };
        assert_eq!(event.encode(), [9, 0xac, 0x02, 1, 1]);
        let d = encode_event_datagram(300, &[5, 6]);
        assert_eq!(d, [2, 0xac, 0x02, 5, 6]);
        assert_eq!(decode_event_datagram(&d), Some((300, &[5u8, 6][..])));
        assert_eq!(decode_event_datagram(&[1, 0]), None);
        assert_eq!(decode_event_datagram(&[2, 0xff, 0xff, 0xff]), None);
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
