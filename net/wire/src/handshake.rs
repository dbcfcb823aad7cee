//! The handshake that opens every link: hello → challenge → response →
//! welcome, a mutual challenge–response over the cluster [`Secret`].
//!
//! Each side proves it holds the secret with a keyed BLAKE2b MAC
//! ([`Secret::proof`]) over both sides' fresh nonces and identities (the
//! [`Transcript`]), so the secret itself never crosses the wire and a
//! recorded handshake cannot be replayed.
//!
//! Handshake frames start with a fixed, never-changing preamble — [`MAGIC`],
//! the sender's protocol version (u16 big-endian), a kind byte — so that two
//! builds with different [`PROTOCOL_VERSION`]s can still tell each other
//! *why* they cannot talk, instead of failing on a body they cannot decode.
//! A refusal's body is plain UTF-8 for the same reason.

use std::fmt;

use bitcode::{Decode, Encode};
use blake2::{
    Blake2b512, Blake2bMac, Digest,
    digest::{Mac, consts::U32},
};

use crate::PROTOCOL_VERSION;

/// The first four bytes of every handshake frame.
pub const MAGIC: [u8; 4] = *b"TSLK";

/// Length of the handshake preamble: magic, version, kind.
pub const PREAMBLE_LEN: usize = MAGIC.len() + 2 + 1;

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
    /// The node's name in the cluster (≤
    /// [`MAX_NODE_NAME`](crate::MAX_NODE_NAME) bytes, not empty).
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
}
