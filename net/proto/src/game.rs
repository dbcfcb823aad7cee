//! A game's protocol: the components it replicates, the actions clients
//! send and the events the server sends ([`GameSchema`]), its hash (a login
//! whose hash differs is refused), and the **game block** that carries
//! replicated components inside state packets ([`GameBlock`],
//! `docs/protocol.md`, "Game components").

use serde::{Deserialize, Serialize};

/// Components a game may replicate, at most (bits of a `u32` mask).
pub const MAX_GAME_COMPONENTS: usize = 32;
/// Bytes of one replicated component on the wire, at most.
pub const MAX_COMPONENT_WIDTH: usize = 16;
/// Bytes of all of an entity's replicated components together, at most.
pub const MAX_GAME_BYTES: usize = 64;
/// A game block's size at most: two 5-byte masks and the fields.
pub const GAME_BLOCK_MAX_BYTES: usize = 10 + MAX_GAME_BYTES;
/// Bytes of one client action's payload, at most.
pub const MAX_ACTION_BYTES: usize = 256;
/// Bytes of one server event's payload, at most.
pub const MAX_EVENT_BYTES: usize = 1024;

/// Who is sent a replicated component.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Scope {
    /// Every observer of the entity, and its owner.
    Public,
    /// Only the client whose PC it is (in its own state, `you`).
    Owner,
}

/// One replicated component: its name, its fixed width on the wire and who
/// gets it. Its index in [`GameSchema::components`] is its bit in a game
/// block's masks.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ComponentDesc {
    pub name: String,
    pub width: u8,
    pub scope: Scope,
}

/// One client action: a fixed-size payload and its rate limit.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ActionDesc {
    pub name: String,
    pub width: u16,
    /// Sustained actions of this kind per second per client, and the burst.
    pub per_second: u16,
    pub burst: u16,
}

/// One server event: its payload is at most `max_bytes`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EventDesc {
    pub name: String,
    pub max_bytes: u16,
}

/// Everything a client of a game must agree on with its server, in
/// registration order (an index is the wire's kind number).
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct GameSchema {
    pub game: String,
    pub components: Vec<ComponentDesc>,
    pub actions: Vec<ActionDesc>,
    pub events: Vec<EventDesc>,
}

/// Why a schema is not valid.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SchemaError {
    #[error("more than {MAX_GAME_COMPONENTS} replicated components")]
    TooManyComponents,
    #[error("component {0}: width must be 1..={MAX_COMPONENT_WIDTH} bytes")]
    BadWidth(String),
    #[error("replicated components take more than {MAX_GAME_BYTES} bytes together")]
    TooWide,
    #[error("{0} is registered twice")]
    Duplicate(String),
    #[error("action {0}: width must be 1..={MAX_ACTION_BYTES} bytes and its rate at least 1/s")]
    BadAction(String),
    #[error("event {0}: at most {MAX_EVENT_BYTES} bytes")]
    BadEvent(String),
    #[error("more than 65536 actions or events")]
    TooManyKinds,
}

impl GameSchema {
    /// An empty schema for `game` (the default game's: nothing beyond the
    /// engine's state).
    pub fn new(game: &str) -> Self {
        Self {
            game: game.to_string(),
            ..Self::default()
        }
    }

    pub fn check(&self) -> Result<(), SchemaError> {
        if self.components.len() > MAX_GAME_COMPONENTS {
            return Err(SchemaError::TooManyComponents);
        }
        if self.actions.len() > 1 << 16 || self.events.len() > 1 << 16 {
            return Err(SchemaError::TooManyKinds);
        }
        let mut total = 0;
        for c in &self.components {
            if !(1..=MAX_COMPONENT_WIDTH).contains(&(c.width as usize)) {
                return Err(SchemaError::BadWidth(c.name.clone()));
            }
            total += c.width as usize;
        }
        if total > MAX_GAME_BYTES {
            return Err(SchemaError::TooWide);
        }
        for a in &self.actions {
            if !(1..=MAX_ACTION_BYTES).contains(&(a.width as usize)) || a.per_second == 0 {
                return Err(SchemaError::BadAction(a.name.clone()));
            }
        }
        if let Some(e) = self
            .events
            .iter()
            .find(|e| e.max_bytes as usize > MAX_EVENT_BYTES)
        {
            return Err(SchemaError::BadEvent(e.name.clone()));
        }
        let mut names: Vec<(&str, &str)> = self
            .components
            .iter()
            .map(|c| ("component", c.name.as_str()))
            .chain(self.actions.iter().map(|a| ("action", a.name.as_str())))
            .chain(self.events.iter().map(|e| ("event", e.name.as_str())))
            .collect();
        names.sort_unstable();
        if let Some(w) = names.windows(2).find(|w| w[0] == w[1]) {
            return Err(SchemaError::Duplicate(format!("{} {}", w[0].0, w[0].1)));
        }
        Ok(())
    }

    /// The protocol hash: FNV-1a (64-bit) of the schema's canonical bytes
    /// (`docs/protocol.md`, "Protocol hash"). Any change a client must know
    /// of (a name, a width, a scope, an order, a rate) changes it.
    pub fn hash(&self) -> u64 {
        let mut h = Fnv64::new();
        h.bytes(b"tessera-game-1");
        h.str(&self.game);
        h.u32(self.components.len() as u32);
        for c in &self.components {
            h.str(&c.name);
            h.bytes(&[c.width, c.scope as u8]);
        }
        h.u32(self.actions.len() as u32);
        for a in &self.actions {
            h.str(&a.name);
            h.u32(a.width as u32);
            h.u32(a.per_second as u32);
            h.u32(a.burst as u32);
        }
        h.u32(self.events.len() as u32);
        for e in &self.events {
            h.str(&e.name);
            h.u32(e.max_bytes as u32);
        }
        h.0
    }

    /// The protocol hash as a login carries it: 16 lowercase hex digits.
    pub fn hash_hex(&self) -> String {
        format!("{:016x}", self.hash())
    }

    /// What decoding game blocks needs.
    pub fn wire(&self) -> GameWire {
        GameWire {
            widths: self.components.iter().map(|c| c.width).collect(),
            public: self
                .components
                .iter()
                .enumerate()
                .filter(|(_, c)| c.scope == Scope::Public)
                .fold(0, |m, (i, _)| m | 1 << i),
        }
    }

    pub fn component(&self, name: &str) -> Option<usize> {
        self.components.iter().position(|c| c.name == name)
    }

    pub fn action(&self, name: &str) -> Option<usize> {
        self.actions.iter().position(|a| a.name == name)
    }

    pub fn event(&self, name: &str) -> Option<usize> {
        self.events.iter().position(|e| e.name == name)
    }
}

struct Fnv64(u64);

impl Fnv64 {
    fn new() -> Self {
        Self(0xcbf2_9ce4_8422_2325)
    }

    fn bytes(&mut self, b: &[u8]) {
        for &x in b {
            self.0 ^= x as u64;
            self.0 = self.0.wrapping_mul(0x0000_0100_0000_01b3);
        }
    }

    fn u32(&mut self, v: u32) {
        self.bytes(&v.to_le_bytes());
    }

    fn str(&mut self, s: &str) {
        self.u32(s.len() as u32);
        self.bytes(s.as_bytes());
    }
}

/// The widths of a game's replicated components and which are public: what
/// reading game blocks takes. Empty for a game that replicates nothing
/// (its packets have no game blocks).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct GameWire {
    pub widths: Vec<u8>,
    /// Bit `i`: component `i` is [`Scope::Public`].
    pub public: u32,
}

impl GameWire {
    /// Whether packets carry game blocks at all.
    pub fn enabled(&self) -> bool {
        !self.widths.is_empty()
    }

    /// Every component's bit.
    pub fn all(&self) -> u32 {
        if self.widths.len() >= 32 {
            u32::MAX
        } else {
            (1u32 << self.widths.len()) - 1
        }
    }

    fn bytes_of(&self, mask: u32) -> usize {
        bits(mask).map(|i| self.widths[i] as usize).sum()
    }
}

/// The set bits of `mask`, lowest first.
pub fn bits(mask: u32) -> impl Iterator<Item = usize> {
    let mut m = mask;
    std::iter::from_fn(move || {
        (m != 0).then(|| {
            let i = m.trailing_zeros() as usize;
            m &= m - 1;
            i
        })
    })
}

/// One game block as read from a packet: the components it `carried`, of
/// which those `present` follow with their bytes (concatenated, lowest bit
/// first); a carried component not present was removed.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct GameBlock {
    pub carried: u32,
    pub present: u32,
    pub bytes: Vec<u8>,
}

impl GameBlock {
    /// Appends the block's encoding: `carried` as a varint; if not 0,
    /// `present` as a varint and the present fields' bytes.
    pub fn encode_into(&self, out: &mut Vec<u8>) {
        put_varint(out, self.carried as u64);
        if self.carried != 0 {
            put_varint(out, self.present as u64);
            out.extend_from_slice(&self.bytes);
        }
    }

    /// Reads one block from the front of `bytes`; `allowed` are the bits it
    /// may carry. Returns the block and the bytes it took. Never panics.
    pub fn decode(bytes: &[u8], wire: &GameWire, allowed: u32) -> Option<(Self, usize)> {
        let (carried, mut at) = get_varint(bytes)?;
        let carried = u32::try_from(carried).ok()?;
        if carried & !allowed != 0 {
            return None;
        }
        if carried == 0 {
            return Some((Self::default(), at));
        }
        let (present, n) = get_varint(bytes.get(at..)?)?;
        at += n;
        let present = u32::try_from(present).ok()?;
        if present & !carried != 0 {
            return None;
        }
        let len = wire.bytes_of(present);
        let data = bytes.get(at..at + len)?;
        Some((
            Self {
                carried,
                present,
                bytes: data.to_vec(),
            },
            at + len,
        ))
    }

    /// Its encoded size.
    pub fn len(&self) -> usize {
        varint_len(self.carried as u64)
            + if self.carried != 0 {
                varint_len(self.present as u64) + self.bytes.len()
            } else {
                0
            }
    }

    pub fn is_empty(&self) -> bool {
        self.carried == 0
    }
}

/// The replicated components an entity holds, as a client knows them: the
/// present ones' bytes, concatenated lowest bit first. Two views agree on
/// an entity's game state exactly when these are equal.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct GameVals {
    pub present: u32,
    pub bytes: Vec<u8>,
}

impl GameVals {
    /// The values a block sets from nothing (an enter).
    pub fn from_block(b: &GameBlock) -> Self {
        Self {
            present: b.present,
            bytes: b.bytes.clone(),
        }
    }

    /// Applies a block: each carried component is set (present) or removed.
    pub fn apply(&mut self, b: &GameBlock, wire: &GameWire) {
        if b.carried == 0 {
            return;
        }
        let present = (self.present & !b.carried) | b.present;
        let mut bytes = Vec::with_capacity(wire.bytes_of(present));
        let (mut old, mut new) = (0usize, 0usize);
        for i in bits(self.present | b.present) {
            let w = wire.widths.get(i).copied().unwrap_or(0) as usize;
            let from_new = b.present & 1 << i != 0;
            let from_old = self.present & 1 << i != 0;
            if from_new {
                bytes.extend_from_slice(b.bytes.get(new..new + w).unwrap_or(&[]));
                new += w;
            } else if from_old && b.carried & 1 << i == 0 {
                bytes.extend_from_slice(self.bytes.get(old..old + w).unwrap_or(&[]));
            }
            if from_old {
                old += w;
            }
        }
        *self = Self { present, bytes };
    }

    /// Component `i`'s bytes, if present.
    pub fn get<'a>(&'a self, i: usize, wire: &GameWire) -> Option<&'a [u8]> {
        if self.present & 1 << i == 0 {
            return None;
        }
        let at = wire.bytes_of(self.present & ((1u32 << i) - 1));
        self.bytes.get(at..at + *wire.widths.get(i)? as usize)
    }

    /// Only the components of `mask`.
    pub fn masked(&self, mask: u32, wire: &GameWire) -> Self {
        let mut out = Self::default();
        for i in bits(self.present & mask) {
            if let Some(b) = self.get(i, wire) {
                out.bytes.extend_from_slice(b);
                out.present |= 1 << i;
            }
        }
        out
    }
}

fn put_varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push(v as u8 | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

fn get_varint(bytes: &[u8]) -> Option<(u64, usize)> {
    let mut v = 0u64;
    for (i, &b) in bytes.iter().enumerate().take(10) {
        v |= ((b & 0x7f) as u64) << (7 * i);
        if b & 0x80 == 0 {
            return Some((v, i + 1));
        }
    }
    None
}

fn varint_len(v: u64) -> usize {
    crate::state::varint_len(v)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn schema() -> GameSchema {
        GameSchema {
            game: "t".into(),
            components: vec![
                ComponentDesc {
                    name: "Hp".into(),
                    width: 2,
                    scope: Scope::Public,
                },
                ComponentDesc {
                    name: "Gold".into(),
                    width: 4,
                    scope: Scope::Owner,
                },
                ComponentDesc {
                    name: "Team".into(),
                    width: 1,
                    scope: Scope::Public,
                },
            ],
            ..GameSchema::default()
        }
    }

    #[test]
    fn blocks_round_trip_and_apply() {
        let wire = schema().wire();
        assert_eq!(wire.public, 0b101);
        let b = GameBlock {
            carried: 0b101,
            present: 0b101,
            bytes: vec![10, 0, 3],
        };
        let mut out = Vec::new();
        b.encode_into(&mut out);
        assert_eq!(out, [5, 5, 10, 0, 3]);
        assert_eq!(b.len(), out.len());
        assert_eq!(
            GameBlock::decode(&out, &wire, wire.public),
            Some((b.clone(), 5))
        );
        // An owner component in an observer's block is malformed.
        let bad = [2, 2, 0, 0, 0, 0];
        assert_eq!(GameBlock::decode(&bad, &wire, wire.public), None);
        assert!(GameBlock::decode(&bad, &wire, wire.all()).is_some());
        // Truncated and present-not-carried are refused.
        assert_eq!(GameBlock::decode(&out[..4], &wire, wire.all()), None);
        assert_eq!(GameBlock::decode(&[1, 3, 0, 0], &wire, wire.all()), None);
        let mut v = GameVals::from_block(&b);
        // Hp changes, Team removed, Gold added.
        v.apply(
            &GameBlock {
                carried: 0b111,
                present: 0b011,
                bytes: vec![9, 0, 1, 2, 3, 4],
            },
            &wire,
        );
        assert_eq!(v.present, 0b011);
        assert_eq!(v.get(0, &wire), Some(&[9, 0][..]));
        assert_eq!(v.get(1, &wire), Some(&[1, 2, 3, 4][..]));
        assert_eq!(v.get(2, &wire), None);
        // A block carrying nothing changes nothing; one carrying Team only
        // keeps the rest.
        v.apply(&GameBlock::default(), &wire);
        v.apply(
            &GameBlock {
                carried: 0b100,
                present: 0b100,
                bytes: vec![7],
            },
            &wire,
        );
        assert_eq!(v.bytes, [9, 0, 1, 2, 3, 4, 7]);
        assert_eq!(v.masked(wire.public, &wire).bytes, [9, 0, 7]);
    }

    #[test]
    fn the_hash_changes_with_anything_a_client_must_know() {
        let s = schema();
        assert!(s.check().is_ok());
        let h = s.hash();
        assert_eq!(h, schema().hash(), "stable");
        let mut t = schema();
        t.components[0].width = 3;
        assert_ne!(t.hash(), h);
        let mut t = schema();
        t.components[1].scope = Scope::Public;
        assert_ne!(t.hash(), h);
        let mut t = schema();
        t.components.swap(0, 2);
        assert_ne!(t.hash(), h);
        let mut t = schema();
        t.actions.push(ActionDesc {
            name: "Attack".into(),
            width: 4,
            per_second: 2,
            burst: 2,
        });
        assert_ne!(t.hash(), h);
        assert_eq!(GameSchema::new("default").hash_hex().len(), 16);
        t.components.push(t.components[0].clone());
        assert!(matches!(t.check(), Err(SchemaError::Duplicate(_))));
    }
}
