//! The **state channel**: the client's movement intent ([`Input`]), the
//! per-client, per-tick replication packet ([`StatePacket`]) with its codec
//! and quantization, and the client's acknowledgement of it ([`StateAck`]).
//!
//! The state packet has its own byte layout, written down in
//! `docs/protocol.md` (little-endian fixed fields, LEB128 varints for counts
//! and ids) so a client in any language can read it.

use bitcode::{Decode, Encode};
use serde::{Deserialize, Serialize};

use crate::game::{GameBlock, GameWire};
use crate::{NetId, Vec2};

/// The hard cap on one replication packet, in bytes.
pub const MAX_PACKET_BYTES: usize = 1200;

/// The first byte of a state packet.
pub const STATE_PACKET_TYPE: u8 = 1;

/// How many packets before the acknowledged one [`StateAck::mask`] covers.
pub const ACK_WINDOW: u32 = 32;

/// Movement speed mode.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Encode, Decode, Serialize, Deserialize)]
pub enum MoveMode {
    #[default]
    Walk,
    Run,
}

/// What a client has applied of one scene placement's state packets: the
/// newest packet's tick and, in bit `i` of `mask`, whether the packet of
/// tick `tick - 1 - i` was applied. A client applies a placement's packets
/// in increasing tick order only (an older one arriving late is dropped,
/// unacknowledged), so every tick up to `tick` that is not acknowledged
/// here is lost for good and its content is sent again.
///
/// `tick == 0` means "nothing yet" and is ignored.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Encode, Decode, Serialize, Deserialize)]
pub struct StateAck {
    /// [`StatePacket::scene`] of the acknowledged packets.
    pub scene: u32,
    /// [`StatePacket::epoch`] of the acknowledged packets.
    pub epoch: u64,
    pub tick: u32,
    pub mask: u32,
}

impl StateAck {
    /// Whether this acknowledges the packet of tick `t`.
    pub fn covers(&self, t: u32) -> bool {
        if self.tick == 0 || t > self.tick {
            return false;
        }
        match self.tick - t {
            0 => true,
            d if d <= ACK_WINDOW => self.mask & (1 << (d - 1)) != 0,
            _ => false,
        }
    }
}

/// The mask of a client that applied ticks up to `latest` (with `mask`, as
/// in [`StateAck`]) and now applies `tick`, newer: the old newest tick and
/// the ticks it covered shift into the window. `latest == 0` means none.
pub fn advance_mask(latest: u32, mask: u32, tick: u32) -> u32 {
    match tick.checked_sub(latest) {
        Some(d) if latest != 0 && (1..=ACK_WINDOW).contains(&d) => {
            ((u64::from(mask) << d) | 1 << (d - 1)) as u32
        }
        _ => 0,
    }
}

/// A client's movement intent. Clients never send positions: the server
/// integrates intent under its own speed caps.
#[derive(Debug, Clone, Copy, PartialEq, Default, Encode, Decode, Serialize, Deserialize)]
pub struct Input {
    /// Client sequence number, echoed back as `StatePacket::ack`.
    pub seq: u32,
    /// Desired direction; length above 1 is clamped to 1, `[0, 0]` stops.
    pub dir: Vec2,
    pub mode: MoveMode,
    /// Facing, radians.
    pub heading: f32,
    /// Animation / action id (emote, attack…), opaque to the scene.
    pub action: u8,
    /// Mount id, 0 = on foot. Mounted movement is faster.
    pub mount: u8,
    /// The state packets applied so far (riding on the input).
    pub state_ack: StateAck,
}

/// What a client sends towards its scene, as the scene receives it: an
/// input (with its acknowledgement), an acknowledgement alone when it has
/// no input to send, or a game action.
#[derive(Debug, Clone, PartialEq, Encode, Decode)]
pub enum Uplink {
    Input(Input),
    Ack(StateAck),
    /// A game action, checked by the gate (kind, size, rate).
    Action {
        kind: u16,
        payload: Vec<u8>,
    },
}

/// Kind of a replicated entity.
pub const KIND_PC: u8 = 0;
pub const KIND_NPC: u8 = 1;

/// An entity entering a client's view, with its full state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct EnterState {
    pub id: NetId,
    pub kind: u8,
    pub figure: u32,
    pub q: Quantized,
}

/// A changed entity's quantized state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct UpdateState {
    pub id: NetId,
    pub q: Quantized,
}

/// Position and pose quantized for the wire: positions to 1/65535 of the
/// scene side, heading to 1/256 of a turn. Seven bytes on the wire.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Quantized {
    pub x: u16,
    pub y: u16,
    pub heading: u8,
    pub action: u8,
    pub mount: u8,
}

/// The per-client, per-tick replication packet (≤ [`MAX_PACKET_BYTES`]
/// encoded). `(scene, epoch, tick)` names it: a client applies only packets
/// of the placement it was last told it is in ([`crate::ServerMsg::Entered`]),
/// in increasing tick order.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct StatePacket {
    /// The scene's tag ([`scene_tag`] of its name).
    pub scene: u32,
    /// The scene's placement epoch (a failover or re-placement raises it).
    pub epoch: u64,
    /// The scene tick the packet was built in: its sequence number.
    pub tick: u32,
    /// Last input sequence applied for this client.
    pub ack: u32,
    /// The client's own entity id and state, when it changed or was lost.
    pub you: Option<UpdateState>,
    /// Leaves come first: a client applies them before enters.
    pub leaves: Vec<NetId>,
    pub enters: Vec<EnterState>,
    pub updates: Vec<UpdateState>,
    /// A game that replicates components ([`GameWire::enabled`]): the game
    /// block after `you`, and one per enter and per update, in the same
    /// order. Empty otherwise.
    pub you_game: Option<GameBlock>,
    pub enter_game: Vec<GameBlock>,
    pub update_game: Vec<GameBlock>,
}

/// A scene's 32-bit tag on the wire: FNV-1a of its name's UTF-8 bytes.
pub fn scene_tag(name: &str) -> u32 {
    let mut h: u32 = 0x811c_9dc5;
    for b in name.bytes() {
        h ^= b as u32;
        h = h.wrapping_mul(0x0100_0193);
    }
    h
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum DecodeError {
    #[error("packet of {0} bytes exceeds the {MAX_PACKET_BYTES}-byte limit")]
    TooLarge(usize),
    #[error("not a state packet (type byte {0})")]
    WrongType(u8),
    #[error("packet ends early")]
    Truncated,
    #[error("varint too long or out of range")]
    BadVarint,
    #[error("{0} trailing bytes")]
    Trailing(usize),
    #[error("pose byte {0:#04x} is neither short (< 0x80) nor 0x80")]
    BadPose(u8),
    #[error("game block malformed or carrying a component it may not")]
    BadGameBlock,
}

/// Upper bounds of the encoded size of each part, used to budget a packet
/// before encoding it.
pub const HEADER_MAX_BYTES: usize = 1 + 4 + 10 + 4 + 5 + 1 + 3;
pub const QUANTIZED_MAX_BYTES: usize = 8;
pub const LEAVE_MAX_BYTES: usize = 5;
pub const UPDATE_MAX_BYTES: usize = 5 + QUANTIZED_MAX_BYTES;
pub const ENTER_MAX_BYTES: usize = 5 + 1 + 5 + QUANTIZED_MAX_BYTES;

impl Quantized {
    /// Its encoded size: 6 bytes when action < 16 and mount < 8 (one pose
    /// byte holds both), else 8.
    pub fn wire_len(&self) -> usize {
        if self.action < 16 && self.mount < 8 {
            6
        } else {
            8
        }
    }
}

/// Bytes of `v` as a LEB128 varint.
pub fn varint_len(v: u64) -> usize {
    (64 - (v | 1).leading_zeros() as usize).div_ceil(7)
}

impl StatePacket {
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(64);
        self.encode_into(&mut out);
        out
    }

    /// Appends the encoding to `out` (see `docs/protocol.md`).
    /// A packet with game blocks writes one after `you` and after each
    /// enter and update (missing ones as empty blocks): it is encoded as
    /// for a game that replicates components.
    pub fn encode_into(&self, out: &mut Vec<u8>) {
        let game =
            self.you_game.is_some() || !self.enter_game.is_empty() || !self.update_game.is_empty();
        let block = |b: Option<&GameBlock>| {
            let mut v = Vec::new();
            if game {
                b.cloned().unwrap_or_default().encode_into(&mut v);
            }
            v
        };
        let g = if game {
            crate::game::GAME_BLOCK_MAX_BYTES
        } else {
            0
        };
        let max = self.leaves.len() * LEAVE_MAX_BYTES
            + self.enters.len() * (ENTER_MAX_BYTES + g)
            + self.updates.len() * (UPDATE_MAX_BYTES + g);
        let you = block(self.you_game.as_ref());
        let mut enc = StateEncoder::begin_game(out, &self.header(), &you, max);
        enc.leaves(self.leaves.len());
        for &id in &self.leaves {
            enc.leave(id);
        }
        enc.enters(self.enters.len());
        for (i, e) in self.enters.iter().enumerate() {
            enc.enter(e);
            enc.game_block(&block(self.enter_game.get(i)));
        }
        enc.updates(self.updates.len());
        for (i, u) in self.updates.iter().enumerate() {
            enc.update(u.id, &u.q);
            enc.game_block(&block(self.update_game.get(i)));
        }
        enc.finish();
    }

    /// Its fields before the lists.
    pub fn header(&self) -> StateHeader {
        StateHeader {
            scene: self.scene,
            epoch: self.epoch,
            tick: self.tick,
            ack: self.ack,
            you: self.you,
        }
    }

    /// Puts every list in ascending id order, the order that encodes
    /// smallest.
    pub fn sort_lists(&mut self) {
        self.leaves.sort_unstable();
        self.enters.sort_unstable_by_key(|e| e.id);
        self.updates.sort_unstable_by_key(|u| u.id);
    }

    /// Never panics, whatever the bytes; lists are bounded by the packet's
    /// size, so a hostile count cannot make it allocate more.
    pub fn decode(bytes: &[u8]) -> Result<Self, DecodeError> {
        Self::decode_with(bytes, &GameWire::default())
    }

    /// Decodes a packet of a game whose components are `wire` (with game
    /// blocks when [`GameWire::enabled`]). Never panics.
    pub fn decode_with(bytes: &[u8], wire: &GameWire) -> Result<Self, DecodeError> {
        let game = wire.enabled();
        let block = |r: &mut Reader, allowed: u32| -> Result<GameBlock, DecodeError> {
            let (b, n) = GameBlock::decode(r.0, wire, allowed).ok_or(DecodeError::BadGameBlock)?;
            r.0 = &r.0[n..];
            Ok(b)
        };
        let mut you_game = None;
        let mut enter_game = Vec::new();
        let mut update_game = Vec::new();
        if bytes.len() > MAX_PACKET_BYTES {
            return Err(DecodeError::TooLarge(bytes.len()));
        }
        let mut r = Reader(bytes);
        let t = r.u8()?;
        if t != STATE_PACKET_TYPE {
            return Err(DecodeError::WrongType(t));
        }
        let scene = r.u32_le()?;
        let epoch = r.varint()?;
        let tick = r.u32_le()?;
        let ack = r.varint_u32()?;
        let you = match r.u8()? {
            0 => None,
            _ => {
                let u = UpdateState {
                    id: r.varint_u32()?,
                    q: r.q()?,
                };
                if game {
                    you_game = Some(block(&mut r, wire.all())?);
                }
                Some(u)
            }
        };
        let n = r.count(1)?;
        let mut leaves = Vec::with_capacity(n);
        let mut prev = 0u32;
        for _ in 0..n {
            prev = prev.wrapping_add(r.varint_u32()?);
            leaves.push(prev);
        }
        let n = r.count(1 + 1 + 1 + 6)?;
        let mut enters = Vec::with_capacity(n);
        prev = 0;
        for _ in 0..n {
            prev = prev.wrapping_add(r.varint_u32()?);
            enters.push(EnterState {
                id: prev,
                kind: r.u8()?,
                figure: r.varint_u32()?,
                q: r.q()?,
            });
            if game {
                enter_game.push(block(&mut r, wire.public)?);
            }
        }
        let n = r.count(1 + 6)?;
        let mut updates = Vec::with_capacity(n);
        prev = 0;
        for _ in 0..n {
            prev = prev.wrapping_add(r.varint_u32()?);
            updates.push(UpdateState {
                id: prev,
                q: r.q()?,
            });
            if game {
                update_game.push(block(&mut r, wire.public)?);
            }
        }
        if !r.0.is_empty() {
            return Err(DecodeError::Trailing(r.0.len()));
        }
        Ok(Self {
            scene,
            epoch,
            tick,
            ack,
            you,
            leaves,
            enters,
            updates,
            you_game,
            enter_game,
            update_game,
        })
    }
}

/// Writes into a slice sized for the worst case (see `encode_into`).
struct Writer<'a> {
    buf: &'a mut [u8],
    pos: usize,
}

/// The pose byte's long form: action and mount follow in a byte each.
const POSE_LONG: u8 = 0x80;

impl Writer<'_> {
    #[inline]
    fn byte(&mut self, b: u8) {
        self.buf[self.pos] = b;
        self.pos += 1;
    }

    #[inline]
    fn bytes(&mut self, b: &[u8]) {
        self.buf[self.pos..self.pos + b.len()].copy_from_slice(b);
        self.pos += b.len();
    }

    #[inline]
    fn varint(&mut self, mut v: u64) {
        while v >= 0x80 {
            self.byte((v as u8) | 0x80);
            v >>= 7;
        }
        self.byte(v as u8);
    }

    #[inline]
    fn q(&mut self, q: &Quantized) {
        let [x0, x1] = q.x.to_le_bytes();
        let [y0, y1] = q.y.to_le_bytes();
        if q.wire_len() == 6 {
            self.bytes(&[x0, x1, y0, y1, q.heading, q.action | q.mount << 4]);
        } else {
            self.bytes(&[x0, x1, y0, y1, q.heading, POSE_LONG, q.action, q.mount]);
        }
    }
}

/// A state packet's fields before its lists.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct StateHeader {
    pub scene: u32,
    pub epoch: u64,
    pub tick: u32,
    pub ack: u32,
    pub you: Option<UpdateState>,
}

impl StateHeader {
    /// Its encoded size, counting the three list counts at 2 bytes each (a
    /// packet of at most [`MAX_PACKET_BYTES`] holds fewer than 16 384 items).
    pub fn budget_len(&self) -> usize {
        let you = self
            .you
            .map_or(0, |u| varint_len(u.id as u64) + u.q.wire_len());
        1 + 4 + varint_len(self.epoch) + 4 + varint_len(self.ack as u64) + 1 + you + 3 * 2
    }
}

/// Writes a state packet straight from its parts, for a caller that holds
/// the items elsewhere than in a [`StatePacket`] (the scene's replication).
/// [`StatePacket::encode_into`] is written with it: one encoder.
///
/// Call, in this order: [`begin`](Self::begin), then `leaves(n)` and `n`
/// times `leave`, `enters(n)` and `n` times `enter`, `updates(n)` and `n`
/// times `update`, then [`finish`](Self::finish). Each list packs tightest
/// in ascending id order (ids go as differences from the one before); any
/// order decodes.
pub struct StateEncoder<'a> {
    out: &'a mut Vec<u8>,
    base: usize,
    pos: usize,
    prev: u32,
    /// Items announced by the last count and not yet written.
    left: usize,
}

impl<'a> StateEncoder<'a> {
    /// Appends the header to `out`, with room for `max_items` bytes of
    /// items (sum their `*_MAX_BYTES`, or any larger bound).
    pub fn begin(out: &'a mut Vec<u8>, h: &StateHeader, max_items: usize) -> Self {
        Self::begin_game(out, h, &[], max_items)
    }

    /// [`Self::begin`] for a game that replicates components: `you_block`
    /// (an encoded [`GameBlock`]) follows the own state when there is one.
    pub fn begin_game(
        out: &'a mut Vec<u8>,
        h: &StateHeader,
        you_block: &[u8],
        max_items: usize,
    ) -> Self {
        // Sized once for the worst case, written by index, cut to length in
        // `finish`: no capacity check or copy call per field.
        let base = out.len();
        out.resize(
            base + HEADER_MAX_BYTES + you_block.len() + 3 * 9 + max_items + 8,
            0,
        );
        let mut enc = Self {
            out,
            base,
            pos: 0,
            prev: 0,
            left: 0,
        };
        let mut w = enc.writer();
        w.byte(STATE_PACKET_TYPE);
        w.bytes(&h.scene.to_le_bytes());
        w.varint(h.epoch);
        w.bytes(&h.tick.to_le_bytes());
        w.varint(h.ack as u64);
        match &h.you {
            Some(u) => {
                w.byte(1);
                w.varint(u.id as u64);
                w.q(&u.q);
                w.bytes(you_block);
            }
            None => w.byte(0),
        }
        enc.pos = w.pos;
        enc
    }

    #[inline]
    fn writer(&mut self) -> Writer<'_> {
        Writer {
            buf: &mut self.out[self.base..],
            pos: self.pos,
        }
    }

    /// Starts a list of `n` items.
    #[inline]
    fn list(&mut self, n: usize) {
        debug_assert_eq!(self.left, 0, "fewer items than the last count");
        let mut w = self.writer();
        w.varint(n as u64);
        self.pos = w.pos;
        self.prev = 0;
        self.left = n;
    }

    /// Writes the low `len` bytes of `bytes` (at most 8): one bounds check
    /// and one 8-byte store, for `begin` leaves 8 bytes of slack past the
    /// worst case.
    #[inline]
    fn put(&mut self, bytes: u64, len: usize) {
        let at = self.base + self.pos;
        self.out[at..at + 8].copy_from_slice(&bytes.to_le_bytes());
        self.pos += len;
    }

    /// An item's id, as the difference from the one before (modulo 2³²).
    #[inline]
    fn id(&mut self, id: NetId) -> (u64, usize) {
        debug_assert!(self.left > 0, "more items than the count");
        self.left -= 1;
        let d = id.wrapping_sub(self.prev);
        self.prev = id;
        varint32(d)
    }

    pub fn leaves(&mut self, n: usize) {
        self.list(n);
    }

    #[inline]
    pub fn leave(&mut self, id: NetId) {
        let (v, n) = self.id(id);
        self.put(v, n);
    }

    pub fn enters(&mut self, n: usize) {
        self.list(n);
    }

    #[inline]
    pub fn enter(&mut self, e: &EnterState) {
        self.enter_wire(e.id, e.kind, e.figure, e.q.wire());
    }

    /// [`Self::enter`] with the state already in wire form
    /// ([`Quantized::wire`]: a server computes it once per entity, not
    /// once per observer).
    #[inline]
    pub fn enter_wire(&mut self, id: NetId, kind: u8, figure: u32, q: WireState) {
        let (v, n) = self.id(id);
        self.put(v, n);
        self.put(kind as u64, 1);
        let (f, fl) = varint32(figure);
        self.put(f, fl);
        self.put(q.bytes, q.len as usize);
    }

    pub fn updates(&mut self, n: usize) {
        self.list(n);
    }

    #[inline]
    pub fn update(&mut self, id: NetId, q: &Quantized) {
        self.update_wire(id, q.wire());
    }

    /// [`Self::update`] with the state already in wire form.
    #[inline]
    pub fn update_wire(&mut self, id: NetId, q: WireState) {
        let (v, n) = self.id(id);
        self.put(v, n);
        self.put(q.bytes, q.len as usize);
    }

    /// An encoded [`GameBlock`], right after the enter or update it belongs
    /// to (count it in `begin`'s `max_items`).
    #[inline]
    pub fn game_block(&mut self, block: &[u8]) {
        let at = self.base + self.pos;
        self.out[at..at + block.len()].copy_from_slice(block);
        self.pos += block.len();
    }

    /// The updates list, already encoded: its count, then its bytes.
    pub fn update_list(&mut self, list: &UpdateList) {
        self.list(list.n);
        let at = self.base + self.pos;
        self.out[at..at + list.pos].copy_from_slice(&list.bytes[..list.pos]);
        self.pos += list.pos;
        self.left = 0;
    }

    /// Cuts `out` to the packet's end; returns the packet's length.
    pub fn finish(self) -> usize {
        debug_assert_eq!(self.left, 0, "fewer items than the last count");
        self.out.truncate(self.base + self.pos);
        self.pos
    }
}

/// A packet's updates list encoded ahead of the packet, as
/// [`StateEncoder::update`] would write it (ids ascending, as differences
/// from the one before, starting from 0), for [`StateEncoder::update_list`].
/// A server can write each update while it decides what goes, and copy the
/// list when everything fits. Reused across packets: it keeps its memory.
#[derive(Debug, Default, Clone)]
pub struct UpdateList {
    bytes: Vec<u8>,
    pos: usize,
    prev: NetId,
    n: usize,
}

impl UpdateList {
    pub fn clear(&mut self) {
        self.pos = 0;
        self.prev = 0;
        self.n = 0;
    }

    /// Updates in the list.
    pub fn len(&self) -> usize {
        self.n
    }

    pub fn is_empty(&self) -> bool {
        self.n == 0
    }

    /// Appends an update; ids must ascend.
    #[inline]
    pub fn push(&mut self, id: NetId, q: WireState) {
        debug_assert!(self.n == 0 || id > self.prev, "ids must ascend");
        // Room for two 8-byte stores; grows once, then stays.
        if self.bytes.len() < self.pos + 16 {
            self.bytes.resize(self.pos + 256, 0);
        }
        let (v, n) = varint32(id.wrapping_sub(self.prev));
        self.prev = id;
        self.bytes[self.pos..self.pos + 8].copy_from_slice(&v.to_le_bytes());
        self.pos += n;
        self.bytes[self.pos..self.pos + 8].copy_from_slice(&q.bytes.to_le_bytes());
        self.pos += q.len as usize;
        self.n += 1;
    }

    /// Appends an update followed by one byte (a game block that carries
    /// nothing is the byte 0); ids must ascend.
    #[inline]
    pub fn push_byte(&mut self, id: NetId, q: WireState, byte: u8) {
        // `push` left room for two 8-byte stores; id and state took at
        // most 13 bytes of it.
        self.push(id, q);
        self.bytes[self.pos] = byte;
        self.pos += 1;
    }

    /// Appends an update followed by its game block; ids must ascend.
    #[inline]
    pub fn push_game(&mut self, id: NetId, q: WireState, block: &[u8]) {
        self.push(id, q);
        if self.bytes.len() < self.pos + block.len() + 16 {
            self.bytes.resize(self.pos + block.len() + 256, 0);
        }
        self.bytes[self.pos..self.pos + block.len()].copy_from_slice(block);
        self.pos += block.len();
    }
}

/// `v` as a LEB128 varint: its bytes, first in the low byte, and how many.
#[inline]
fn varint32(mut v: u32) -> (u64, usize) {
    let mut out = 0u64;
    let mut n = 0;
    loop {
        let b = (v & 0x7f) as u64;
        v >>= 7;
        if v == 0 {
            return (out | b << (8 * n), n + 1);
        }
        out |= (b | 0x80) << (8 * n);
        n += 1;
    }
}

/// A quantized state's wire bytes (see [`Quantized::wire_len`]), first in
/// the low byte, and how many.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct WireState {
    pub bytes: u64,
    pub len: u8,
}

impl WireState {
    /// The state these bytes hold.
    #[inline]
    pub fn quantized(&self) -> Quantized {
        let b = self.bytes;
        let (action, mount) = if self.len == 6 {
            let pose = (b >> 40) as u8;
            (pose & 0x0f, pose >> 4)
        } else {
            ((b >> 48) as u8, (b >> 56) as u8)
        };
        Quantized {
            x: b as u16,
            y: (b >> 16) as u16,
            heading: (b >> 32) as u8,
            action,
            mount,
        }
    }
}

impl Quantized {
    /// Its bytes in a state packet.
    #[inline]
    pub fn wire(&self) -> WireState {
        let base = self.x as u64 | (self.y as u64) << 16 | (self.heading as u64) << 32;
        if self.wire_len() == 6 {
            WireState {
                bytes: base | ((self.action | self.mount << 4) as u64) << 40,
                len: 6,
            }
        } else {
            WireState {
                bytes: base
                    | (POSE_LONG as u64) << 40
                    | (self.action as u64) << 48
                    | (self.mount as u64) << 56,
                len: 8,
            }
        }
    }
}

struct Reader<'a>(&'a [u8]);

impl Reader<'_> {
    fn take<const N: usize>(&mut self) -> Result<[u8; N], DecodeError> {
        let (head, rest) = self
            .0
            .split_first_chunk::<N>()
            .ok_or(DecodeError::Truncated)?;
        self.0 = rest;
        Ok(*head)
    }

    fn u8(&mut self) -> Result<u8, DecodeError> {
        Ok(self.take::<1>()?[0])
    }

    fn u32_le(&mut self) -> Result<u32, DecodeError> {
        Ok(u32::from_le_bytes(self.take()?))
    }

    fn varint(&mut self) -> Result<u64, DecodeError> {
        let mut v = 0u64;
        for i in 0..10 {
            let b = self.u8()?;
            let part = (b & 0x7f) as u64;
            if i == 9 && part > 1 {
                return Err(DecodeError::BadVarint);
            }
            v |= part << (7 * i);
            if b & 0x80 == 0 {
                return Ok(v);
            }
        }
        Err(DecodeError::BadVarint)
    }

    fn varint_u32(&mut self) -> Result<u32, DecodeError> {
        u32::try_from(self.varint()?).map_err(|_| DecodeError::BadVarint)
    }

    /// A list count, refused when the bytes left cannot hold that many
    /// items of at least `min_item` bytes.
    fn count(&mut self, min_item: usize) -> Result<usize, DecodeError> {
        let n = self.varint()?;
        if n > (self.0.len() / min_item) as u64 {
            return Err(DecodeError::Truncated);
        }
        Ok(n as usize)
    }

    fn q(&mut self) -> Result<Quantized, DecodeError> {
        let b = self.take::<6>()?;
        let (action, mount) = match b[5] {
            POSE_LONG => (self.u8()?, self.u8()?),
            p if p < POSE_LONG => (p & 0x0f, p >> 4),
            p => return Err(DecodeError::BadPose(p)),
        };
        Ok(Quantized {
            x: u16::from_le_bytes([b[0], b[1]]),
            y: u16::from_le_bytes([b[2], b[3]]),
            heading: b[4],
            action,
            mount,
        })
    }
}
/// Quantizes world state against the scene's size.
#[derive(Debug, Clone, Copy)]
pub struct Quantizer {
    scale: Vec2,
    inv_scale: Vec2,
}

impl Quantizer {
    pub fn new(size: Vec2) -> Self {
        let sx = 65535.0 / size[0].max(1.0);
        let sy = 65535.0 / size[1].max(1.0);
        Self {
            scale: [sx, sy],
            inv_scale: [1.0 / sx, 1.0 / sy],
        }
    }

    pub fn quantize(&self, pos: Vec2, heading: f32, action: u8, mount: u8) -> Quantized {
        let turn = heading.rem_euclid(std::f32::consts::TAU) / std::f32::consts::TAU;
        Quantized {
            x: (pos[0] * self.scale[0]).round().clamp(0.0, 65535.0) as u16,
            y: (pos[1] * self.scale[1]).round().clamp(0.0, 65535.0) as u16,
            heading: ((turn * 256.0).round() as u32 % 256) as u8,
            action,
            mount,
        }
    }

    pub fn position(&self, q: &Quantized) -> Vec2 {
        [
            q.x as f32 * self.inv_scale[0],
            q.y as f32 * self.inv_scale[1],
        ]
    }
}

#[cfg(test)]
mod tests;
