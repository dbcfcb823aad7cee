//! [`WorldView`]: a client's picture of its scene, built from state packets.
//!
//! It applies the packets of one placement (the `(scene_tag, epoch)` of the
//! last [`ServerMsg::Entered`](crate::ServerMsg::Entered)) in increasing
//! tick order, drops the rest, and produces the [`StateAck`] the server
//! needs to repair what was lost. Bots, tests and tools all use it; a client
//! in another language implements the same rules (`docs/protocol.md`).

use std::collections::BTreeMap;

use crate::NetId;
use crate::game::{GameVals, GameWire};
use crate::state::{DecodeError, Quantized, StateAck, StatePacket, advance_mask};

/// One entity as the client holds it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ViewEntity {
    pub kind: u8,
    pub figure: u32,
    pub q: Quantized,
    /// Tick of the packet that last set its state.
    pub tick: u32,
}

/// What happened to one packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Applied {
    Applied,
    /// Not newer than the newest applied (a duplicate or a late one).
    Stale,
    /// Of another scene or placement epoch than the one entered.
    Foreign,
}

/// Packets the view dropped or could not use, by reason.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ViewCounters {
    pub applied: u64,
    pub stale: u64,
    pub foreign: u64,
    pub malformed: u64,
    /// Updates for an entity the view does not hold (its enter was lost:
    /// the server sends it again).
    pub unknown_updates: u64,
}

/// A client's view of one scene placement.
#[derive(Debug, Clone, Default)]
pub struct WorldView {
    placement: Option<(u32, u64)>,
    own: Option<NetId>,
    you: Option<Quantized>,
    entities: BTreeMap<NetId, ViewEntity>,
    latest: u32,
    mask: u32,
    input_ack: u32,
    ack_due: bool,
    /// The game's replicated components, if it has any: each entity's
    /// values, and the own ones (public and owner-only).
    wire: GameWire,
    game: BTreeMap<NetId, GameVals>,
    you_game: GameVals,
    pub counters: ViewCounters,
}

impl WorldView {
    pub fn new() -> Self {
        Self::default()
    }

    /// A view of a game that replicates the components of `wire`
    /// ([`crate::GameSchema::wire`]).
    pub fn with_game(wire: GameWire) -> Self {
        Self {
            wire,
            ..Self::default()
        }
    }

    /// Starts over in a placement (on every `Entered`): an empty view that
    /// applies only packets tagged `(scene_tag, epoch)`.
    pub fn enter(&mut self, scene_tag: u32, epoch: u64, own: NetId) {
        let counters = self.counters;
        let wire = std::mem::take(&mut self.wire);
        *self = Self {
            placement: Some((scene_tag, epoch)),
            own: Some(own),
            counters,
            wire,
            ..Self::default()
        };
    }

    /// Leaves the scene: nothing is applied until the next [`Self::enter`].
    pub fn clear(&mut self) {
        let counters = self.counters;
        let wire = std::mem::take(&mut self.wire);
        *self = Self {
            counters,
            wire,
            ..Self::default()
        };
    }

    /// Decodes and applies one datagram of the state channel.
    pub fn apply_bytes(&mut self, bytes: &[u8]) -> Result<Applied, DecodeError> {
        match StatePacket::decode_with(bytes, &self.wire) {
            Ok(p) => Ok(self.apply(&p)),
            Err(e) => {
                self.counters.malformed += 1;
                Err(e)
            }
        }
    }

    /// Applies a packet if it belongs to the entered placement and is newer
    /// than every packet applied so far.
    pub fn apply(&mut self, p: &StatePacket) -> Applied {
        if self.placement != Some((p.scene, p.epoch)) {
            self.counters.foreign += 1;
            return Applied::Foreign;
        }
        if p.tick == 0 || p.tick <= self.latest {
            self.counters.stale += 1;
            return Applied::Stale;
        }
        // The first packet of an attach always carries the client's own
        // state under its new net id: one that does not may be a late packet
        // of an earlier attach to the same placement.
        if self.latest == 0 && p.you.is_none_or(|u| Some(u.id) != self.own) {
            self.counters.stale += 1;
            return Applied::Stale;
        }
        self.mask = advance_mask(self.latest, self.mask, p.tick);
        self.latest = p.tick;
        self.input_ack = self.input_ack.max(p.ack);
        self.ack_due = true;
        for id in &p.leaves {
            self.entities.remove(id);
            self.game.remove(id);
        }
        for (i, e) in p.enters.iter().enumerate() {
            match p.enter_game.get(i) {
                Some(b) => self.game.insert(e.id, GameVals::from_block(b)),
                None => self.game.remove(&e.id),
            };
            self.entities.insert(
                e.id,
                ViewEntity {
                    kind: e.kind,
                    figure: e.figure,
                    q: e.q,
                    tick: p.tick,
                },
            );
        }
        for (i, u) in p.updates.iter().enumerate() {
            match self.entities.get_mut(&u.id) {
                Some(e) => {
                    e.q = u.q;
                    e.tick = p.tick;
                    if let Some(b) = p.update_game.get(i) {
                        self.game.entry(u.id).or_default().apply(b, &self.wire);
                    }
                }
                None => self.counters.unknown_updates += 1,
            }
        }
        if let Some(u) = p.you {
            self.you = Some(u.q);
            if let Some(b) = &p.you_game {
                self.you_game.apply(b, &self.wire);
            }
        }
        self.counters.applied += 1;
        Applied::Applied
    }

    /// The acknowledgement of everything applied (send it on every input).
    pub fn ack(&self) -> StateAck {
        let (scene, epoch) = self.placement.unwrap_or_default();
        StateAck {
            scene,
            epoch,
            tick: self.latest,
            mask: self.mask,
        }
    }

    /// The acknowledgement, if a packet was applied since the last call:
    /// send it alone when no input goes out this tick.
    pub fn take_ack_due(&mut self) -> Option<StateAck> {
        std::mem::take(&mut self.ack_due).then(|| self.ack())
    }

    /// Marks the acknowledgement as sent (it rode on an input).
    pub fn ack_sent(&mut self) {
        self.ack_due = false;
    }

    /// The entered placement, `(scene_tag, epoch)`.
    pub fn placement(&self) -> Option<(u32, u64)> {
        self.placement
    }

    /// The client's own entity id and last known state.
    pub fn own(&self) -> Option<(NetId, Option<Quantized>)> {
        self.own.map(|id| (id, self.you))
    }

    /// The newest applied tick (0 = none).
    pub fn tick(&self) -> u32 {
        self.latest
    }

    /// The last input sequence the server said it applied.
    pub fn input_ack(&self) -> u32 {
        self.input_ack
    }

    /// An entity's replicated game components (empty for a game without
    /// any, or an entity that has none).
    pub fn game(&self, id: NetId) -> GameVals {
        self.game.get(&id).cloned().unwrap_or_default()
    }

    /// The own replicated components, public and owner-only.
    pub fn you_game(&self) -> &GameVals {
        &self.you_game
    }

    /// The game's components as this view reads them.
    pub fn game_wire(&self) -> &GameWire {
        &self.wire
    }

    pub fn get(&self, id: NetId) -> Option<&ViewEntity> {
        self.entities.get(&id)
    }

    /// The entities held (the own one is not among them), by id.
    pub fn entities(&self) -> impl Iterator<Item = (NetId, &ViewEntity)> + '_ {
        self.entities.iter().map(|(&id, e)| (id, e))
    }

    pub fn len(&self) -> usize {
        self.entities.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entities.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state::{EnterState, UpdateState};

    fn q(x: u16) -> Quantized {
        Quantized {
            x,
            ..Default::default()
        }
    }

    fn packet(tick: u32) -> StatePacket {
        StatePacket {
            scene: 5,
            epoch: 2,
            tick,
            ..Default::default()
        }
    }

    #[test]
    fn packets_apply_in_order_and_the_ack_says_which() {
        let mut v = WorldView::new();
        v.enter(5, 2, 9);
        // Before the attach's first packet (it carries the own state), a
        // packet without it may be an earlier attach's: not applied.
        assert_eq!(v.apply(&packet(8)), Applied::Stale);
        let mut p = packet(10);
        p.you = Some(UpdateState { id: 9, q: q(0) });
        p.enters.push(EnterState {
            id: 1,
            kind: 0,
            figure: 3,
            q: q(1),
        });
        assert_eq!(v.apply(&p), Applied::Applied);
        let mut p = packet(12);
        p.updates.push(UpdateState { id: 1, q: q(2) });
        p.updates.push(UpdateState { id: 4, q: q(2) });
        assert_eq!(v.apply(&p), Applied::Applied);
        assert_eq!(v.get(1).map(|e| e.q.x), Some(2));
        assert_eq!(v.counters.unknown_updates, 1);
        // 11 arrives late: dropped, so 11 stays unacknowledged.
        assert_eq!(v.apply(&packet(11)), Applied::Stale);
        assert_eq!(v.apply(&packet(12)), Applied::Stale);
        let a = v.ack();
        assert_eq!((a.tick, a.mask), (12, 0b10));
        assert!(a.covers(10) && !a.covers(11) && a.covers(12));
        assert_eq!(v.take_ack_due(), Some(a));
        assert_eq!(v.take_ack_due(), None);
        // Another placement's packet is never applied; a new one resets.
        let mut other = packet(99);
        other.epoch = 1;
        assert_eq!(v.apply(&other), Applied::Foreign);
        v.enter(5, 3, 9);
        assert!(v.is_empty() && v.tick() == 0);
        let mut far = packet(50);
        far.epoch = 3;
        far.you = Some(UpdateState { id: 9, q: q(0) });
        v.apply(&far);
        far.tick = 90; // more than the window later: the mask starts over
        v.apply(&far);
        assert_eq!(v.ack().mask, 0);
    }
}
