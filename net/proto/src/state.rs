//! The **state channel**: the client's movement intent ([`Input`]) and the
//! per-client, per-tick replication packet ([`StatePacket`]) with its codec
//! and quantization.

use bitcode::{Decode, Encode};

use crate::{NetId, Vec2};

/// The hard cap on one replication packet, in bytes.
pub const MAX_PACKET_BYTES: usize = 1200;

/// Movement speed mode.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Encode, Decode)]
pub enum MoveMode {
    #[default]
    Walk,
    Run,
}

/// A client's movement intent. Clients never send positions: the server
/// integrates intent under its own speed caps.
#[derive(Debug, Clone, Copy, PartialEq, Default, Encode, Decode)]
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
}

/// Kind of a replicated entity.
pub const KIND_PC: u8 = 0;
pub const KIND_NPC: u8 = 1;

/// An entity entering a client's view, with its full state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Encode, Decode)]
pub struct EnterState {
    pub id: NetId,
    pub kind: u8,
    pub figure: u32,
    pub q: Quantized,
}

/// A changed entity's quantized state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Encode, Decode)]
pub struct UpdateState {
    pub id: NetId,
    pub q: Quantized,
}

/// Position and pose quantized for the wire: positions to 1/65535 of the
/// scene side, heading to 1/256 of a turn.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Encode, Decode)]
pub struct Quantized {
    pub x: u16,
    pub y: u16,
    pub heading: u8,
    pub action: u8,
    pub mount: u8,
}

/// The per-client, per-tick replication packet (≤ [`MAX_PACKET_BYTES`] encoded).
#[derive(Debug, Clone, PartialEq, Eq, Default, Encode, Decode)]
pub struct StatePacket {
    pub tick: u32,
    /// Last input sequence number applied for this client.
    pub ack: u32,
    /// The client's own entity id and state, when it changed.
    pub you: Option<UpdateState>,
    /// Leaves come first: a client applies them before enters.
    pub leaves: Vec<NetId>,
    pub enters: Vec<EnterState>,
    pub updates: Vec<UpdateState>,
}

#[derive(Debug, thiserror::Error)]
pub enum DecodeError {
    #[error("packet of {0} bytes exceeds the {MAX_PACKET_BYTES}-byte limit")]
    TooLarge(usize),
    #[error("malformed packet: {0}")]
    Malformed(String),
}

impl StatePacket {
    pub fn encode(&self) -> Vec<u8> {
        bitcode::encode(self)
    }

    pub fn decode(bytes: &[u8]) -> Result<Self, DecodeError> {
        if bytes.len() > MAX_PACKET_BYTES {
            return Err(DecodeError::TooLarge(bytes.len()));
        }
        bitcode::decode(bytes).map_err(|e| DecodeError::Malformed(e.to_string()))
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
mod tests {
    use super::*;

    #[test]
    fn quantize_round_trips_within_a_step() {
        let q = Quantizer::new([1000.0, 500.0]);
        let s = q.quantize([123.456, 499.9], 1.0, 3, 1);
        let p = q.position(&s);
        assert!(
            (p[0] - 123.456).abs() < 0.02 && (p[1] - 499.9).abs() < 0.01,
            "{p:?}"
        );
        assert_eq!((s.action, s.mount), (3, 1));
        let neg = q.quantize([-5.0, 1e9], -0.1, 0, 0);
        assert_eq!((neg.x, neg.y), (0, 65535));
    }

    #[test]
    fn garbage_never_decodes_into_a_panic() {
        let mut seed = 1u64;
        for len in 0..300 {
            let bytes: Vec<u8> = (0..len)
                .map(|_| {
                    seed = seed.wrapping_mul(6364136223846793005).wrapping_add(1);
                    (seed >> 56) as u8
                })
                .collect();
            let _ = StatePacket::decode(&bytes);
        }
        assert!(matches!(
            StatePacket::decode(&[0u8; MAX_PACKET_BYTES + 1]),
            Err(DecodeError::TooLarge(_))
        ));
    }
}
