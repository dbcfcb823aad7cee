//! Replicate: one packet per client per tick, at most `packet_budget` bytes,
//! repaired on loss.
//!
//! Each client has a [`ClientView`]: the entities it has been sent (in id
//! order), with the state last sent and the tick of the packet that carried
//! it, the leaves not yet acknowledged, and a ring of recent packets with
//! their fates from the client's acknowledgements
//! ([`crate::protocol::StateAck`]). Every tick:
//!
//! 1. **Interest.** The AOI's visible set, capped at the `max_interest`
//!    nearest, is stamped in a per-thread id array.
//! 2. **Walk the known entities**, once, in id order. Each is settled first:
//!    whatever a lost packet carried is flagged to go again — an enter as an
//!    enter, an update as an update — with the *current* state (dirty-mask
//!    repair, as Tribes and Torque do: nothing is queued, nothing waits
//!    behind a reliable channel). Then: out of interest → leave; its enter
//!    lost, or its id reused by another entity → enter; changed since last
//!    sent, or its update lost → update.
//! 3. **Enters.** Ids of interest not known → enter.
//! 4. **Leaves settle**: delivered, or known again, they are done; lost, they
//!    go again.
//! 5. **Choose.** Leaves first, then enters nearest first, then updates by
//!    priority: squared distance divided by `(1 + ticks waited)²` (ticks
//!    counted up to [`Known::MAX_WAIT`]), so far or crowded-out entities go
//!    less often but never starve.
//! 6. **Encode and commit.** Item sizes are counted as in the layout of
//!    `docs/protocol.md` with each id at its full size, an upper bound (the
//!    encoder writes ascending ids as differences; the walk already yields
//!    them in order), so the packet fits the byte budget in one pass.
//!
//! The client applies a placement's packets in tick order only and
//! acknowledges the newest with a mask of the 32 before it; so every tick up
//! to the newest acknowledged one is settled as delivered or lost. A packet
//! older than the ring ([`SENT_RING`]) counts as lost. When the newest packet
//! stays unacknowledged for [`PROBE_TICKS`] and there is nothing new to say,
//! an empty packet goes, so its acknowledgement settles the ones before.
//!
//! **Reused ids.** A net id may name another entity after its first one
//! despawned ([`Directory`]); the client may still hold the former one (its
//! leave lost or deferred). Every known entry remembers the generation it
//! was sent with ([`Known::same_gen`]); a known entry of another generation than the id's
//! current holder is the former entity, so the current one goes as an enter,
//! which overwrites kind, figure and state on the client. A pending leave is
//! dropped once the id is known again (the enter sent since overrides it,
//! and packets apply in tick order); otherwise it goes again, and rightly
//! removes whatever the client holds under the id, for the server then
//! knows nothing the client should hold under it.

use bevy_app::{App, Plugin, Update};
use bevy_ecs::prelude::*;

use crate::metrics::timing_mark;

use crate::ReplicateSystems;
use crate::components::*;
use crate::game::GameSnaps;
use crate::interest::SpatialIndex;
use crate::protocol::{
    ClientId, ENTER_MAX_BYTES, LEAVE_MAX_BYTES, NetId, StateEncoder, StateHeader, UPDATE_MAX_BYTES,
    UpdateList, UpdateState, varint_len,
};

mod expected;
mod stage;

pub use expected::{ExpectedView, expected_view};
use stage::{build_packets, collect_packets};

/// Leaves a view keeps waiting for acknowledgement. A client that never
/// acknowledges would otherwise grow the list with every entity it saw go;
/// beyond this the oldest are forgotten (and counted).
pub const MAX_LEAVING: usize = 1024;

/// Ticks after an unacknowledged packet before an empty one probes its fate.
pub const PROBE_TICKS: u32 = 4;

pub struct ReplicatePlugin;

impl Plugin for ReplicatePlugin {
    fn build(&self, app: &mut App) {
        let built = timing_mark(app, ReplicateSystems, "build_packets");
        let collected = timing_mark(app, ReplicateSystems, "collect_packets");
        let routed = timing_mark(app, ReplicateSystems, "route_events");
        app.add_systems(
            Update,
            (
                build_packets,
                built,
                collect_packets,
                collected,
                crate::game::route_events,
                routed,
            )
                .chain()
                .in_set(ReplicateSystems),
        );
    }
}

/// An enter, or an update when not everything fits (see
/// [`materialize_updates`]), waiting for room in the packet. What it sends (state,
/// kind, figure, generation) and its distance (for the priority, needed
/// only when not everything fits) are read from the entity's snapshot when
/// needed, so a candidate stays 16 bytes.
#[derive(Debug, Clone, Copy)]
struct Cand {
    id: NetId,
    /// Index in `ClientView::known`, or [`NONE`] for an entity not known.
    slot: u32,
    /// Ticks this update waited for room (0 for enters).
    wait: u8,
    /// Its size in the packet, at most (its id counted in full).
    cost: u8,
    enter: bool,
    /// It goes in this packet (see [`choose_items`]).
    taken: bool,
    /// An update's known entry before the walk recorded it sent
    /// ([`Known::save`]), restored if it does not go after all.
    saved: u32,
}

/// Per-thread scratch for [`build_packet`].
#[derive(Default)]
pub struct ReplScratch {
    /// The enters; and the updates too once [`materialize_updates`] ran
    /// (only when not everything fits).
    cands: Vec<Cand>,
    /// The updates of the walk, encoded as it goes (all of them go when
    /// everything fits), how many of them were resends, and their sizes.
    upd: UpdateList,
    upd_resent: u64,
    upd_cost: usize,
    /// Per update of the walk, in id order: its slot in
    /// `ClientView::known` and its entry before the walk ([`Known::save`]).
    /// Candidates are made of them only when not everything fits.
    upd_slots: Vec<(u32, u32)>,
    /// `cands` holds the updates too.
    materialized: bool,
    /// The buffer `cands` was before [`materialize_updates`].
    spare: Vec<Cand>,
    /// `cands[..walked]` came from the known walk, in id order; the rest
    /// are new enters, in id order.
    walked: usize,
    /// When not every candidate fits: each one's priority and index, as one
    /// integer each (sorts fast).
    order: Vec<u64>,
    /// The packet's leaves, in ascending id order.
    leaves: Vec<NetId>,
    /// Entities entering the view this packet, to join `ClientView::known`.
    added: Vec<Known>,
    /// The visible set capped to the nearest `max_interest`: (dist², id).
    near: Vec<u64>,
    /// Indices in `ClientView::known` of the entities out of interest (in
    /// ascending order), and how many of them, and of the lost leaves sent
    /// again, fit in the packet.
    leave_slots: Vec<u32>,
    fresh_sent: usize,
    again_sent: usize,
    /// Per id, this tick's stamp: `e` = of interest, `e + 1` = of interest
    /// and known (anything else: neither).
    marks: Vec<u32>,
    /// Ids stamped of interest, and how many of them the walk found known:
    /// when equal, nothing enters and the ids need no second look.
    stamped: usize,
    stamped_known: usize,
    epoch: u32,
    /// This chunk's counts, summed into `Counters` after the stage.
    deferred: u64,
    resent: u64,
    forgotten: u64,
    /// Acknowledgements found in the `AckInbox`, and those the rings refused.
    acks_taken: u64,
    stale: u64,
    /// This chunk's packets, back to back, and (client, start, len) of each.
    out: Vec<u8>,
    out_index: Vec<(ClientId, u32, u32)>,
}

impl ReplScratch {
    /// Enters and updates wanting to go.
    fn total(&self) -> usize {
        if self.materialized {
            self.cands.len()
        } else {
            self.cands.len() + self.upd_slots.len()
        }
    }

    fn begin(&mut self, bound: usize) -> u32 {
        if self.marks.len() < bound {
            self.marks.resize(bound, 0);
        }
        if self.epoch >= u32::MAX - 2 {
            self.marks.fill(0);
            self.epoch = 0;
        }
        self.epoch += 2;
        self.epoch
    }

    fn mark(&mut self, id: NetId) -> &mut u32 {
        let i = id as usize;
        // A despawned id may lie beyond this tick's snapshot array.
        if i >= self.marks.len() {
            self.marks.resize(i + 1, 0);
        }
        &mut self.marks[i]
    }
}

impl std::fmt::Debug for ReplScratch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ReplScratch")
    }
}

/// What [`build_packet`] did besides encoding.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct BuildStats {
    /// Items that wanted to go and did not fit.
    pub deferred: u64,
    /// Items that went again because a packet carrying them was lost.
    pub resent: u64,
    /// Leaves forgotten beyond [`MAX_LEAVING`].
    pub forgotten: u64,
}

/// Who the packet is for and what it is stamped with.
#[derive(Debug, Clone, Copy)]
pub struct PacketCtx {
    pub scene: u32,
    pub epoch: u64,
    pub tick: u32,
    pub own: NetId,
    pub own_pos: [f32; 2],
    /// Last input sequence applied for this client.
    pub input_ack: u32,
    pub budget: usize,
    /// At most this many entities in the client's view.
    pub max_interest: usize,
}

/// Builds one client's packet, updates its view, and appends the encoded
/// bytes to `out`, returning how many (0 when there is nothing to tell).
#[allow(clippy::too_many_arguments)]
pub fn build_packet(
    index: &SpatialIndex,
    game: &GameSnaps,
    ctx: &PacketCtx,
    visible: &[NetId],
    view: &mut ClientView,
    s: &mut ReplScratch,
    out: &mut Vec<u8>,
) -> (usize, BuildStats) {
    let mut stats = BuildStats::default();
    let e = s.begin(index.snaps.len());
    settle_you(view, ctx.tick);
    let header = header(index, game, ctx, view);
    let you_block = match header.you {
        Some(_) if game.enabled() => game.you(ctx.own),
        _ => &[],
    };
    let mut used = header.budget_len() + you_block.len();
    let capped = visible.len() > ctx.max_interest;
    stamp_interest(index, ctx, visible, &mut view.near_key, s, e, capped);
    walk_known(index, game, ctx, view, s, e);
    add_enters(index, visible, s, e, capped);
    settle_leaving(view, ctx.tick);
    let budget = ctx.budget.min(crate::MAX_PACKET_BYTES);
    stats.deferred += choose_leaves(view, s, &mut used, budget);
    let taken = choose_items(index, game, ctx, view, s, &mut used, budget);
    let total = s.total();
    stats.deferred += (total - taken) as u64;
    if taken < total {
        undo_untaken(view, s);
    }
    let empty = header.you.is_none() && s.leaves.is_empty() && taken == 0;
    // A client whose input was applied since its last packet learns so
    // even when nothing else changed (a player standing still, fighting):
    // it reconciles its prediction by the input ack.
    let ack_news = ctx.input_ack != view.input_ack_sent;
    if empty && !ack_news && !probe_due(view, ctx.tick) {
        s.fresh_sent = 0;
        s.again_sent = 0;
        age_untaken(view, &s.cands);
        return (0, stats);
    }
    let start = out.len();
    view.input_ack_sent = ctx.input_ack;
    stats.resent = write_packet(index, game, &header, view, s, taken, ctx.tick, out);
    let len = out.len() - start;
    debug_assert!(len <= budget, "sizing overshot: {len} > {budget}");
    stats.resent += commit_view(view, s, ctx.tick);
    stats.forgotten = forget_oldest_leaves(view);
    (len, stats)
}

/// Whether an empty packet must go to learn the fate of the unacknowledged
/// ones: the client acknowledges only what it applies, so when the last
/// packets were lost and nothing changed since, only a newer packet's
/// acknowledgement can tell the server they were lost.
fn probe_due(view: &ClientView, now: u32) -> bool {
    let r = &view.ring;
    r.last_sent > r.acked && now >= r.last_sent.saturating_add(PROBE_TICKS)
}

/// Step 1a: the own state's packet, settled.
fn settle_you(view: &mut ClientView, now: u32) {
    if view.you_at != NONE {
        match view.ring.fate(view.you_at, now) {
            Fate::Delivered => view.you_at = NONE,
            Fate::Lost => {
                view.you_at = NONE;
                view.you_resend = true;
            }
            Fate::InFlight => {}
        }
    }
}

/// Step 1b: a leave settles when delivered, or when the entity is known again
/// (the enter sent since overrides it); a lost one is flagged to go again.
/// `known` is in id order, so "known again" is a binary search.
fn settle_leaving(view: &mut ClientView, now: u32) {
    let ClientView {
        known,
        leaving,
        ring,
        ..
    } = &mut *view;
    let mut i = 0;
    while i < leaving.len() {
        let (id, at) = leaving[i];
        let keep = match ring.fate(at, now) {
            Fate::Delivered => false,
            _ if known.binary_search_by_key(&id, |k| k.id).is_ok() => false,
            Fate::Lost => {
                leaving[i].1 = NONE;
                true
            }
            Fate::InFlight => true,
        };
        if keep {
            i += 1;
        } else {
            leaving.swap_remove(i);
        }
    }
}

/// The packet's header, with the client's own state when it changed since
/// last sent or its packet was lost.
fn header(
    index: &SpatialIndex,
    game: &GameSnaps,
    ctx: &PacketCtx,
    view: &ClientView,
) -> StateHeader {
    // Until the client acknowledges a packet, each carries its own state:
    // a client takes an attach's first packet by it (see `WorldView`).
    // Every own state carries all the own game components, so the newest
    // one landed is enough.
    let game_changed = game.enabled() && view.you_game != digest(game.you(ctx.own));
    let you = match index.snap(ctx.own).map(|s| s.q()) {
        Some(q)
            if view.you_resend
                || view.ring.acked == 0
                || view.you_sent != Some(q)
                || game_changed =>
        {
            Some(UpdateState { id: ctx.own, q })
        }
        _ => None,
    };
    StateHeader {
        scene: ctx.scene,
        epoch: ctx.epoch,
        tick: ctx.tick,
        ack: ctx.input_ack,
        you,
    }
}

/// The visible set, or its `max_interest` nearest when larger (ties by id,
/// so the choice is deterministic), as `dist² << 32 | id` (one integer:
/// selects fast).
///
/// `hint`: the distance key of last tick's farthest pick (0: none). When
/// capped, only the ids within it (plus a tick's worth of movement) are
/// ranked, if at least `max_interest` are: the nearest are all among them,
/// so the pick is the same as ranking everyone, and a crowd's observers
/// select from a few hundred instead of thousands. Returns this tick's
/// farthest pick when capped, else 0.
fn nearest_interest(
    index: &SpatialIndex,
    ctx: &PacketCtx,
    visible: &[NetId],
    near: &mut Vec<u64>,
    hint: u32,
) -> u32 {
    near.clear();
    let cap = ctx.max_interest;
    let key = |id: NetId| {
        index
            .snap(id)
            .map(|snap| (dist_key(snap.pos, ctx.own_pos) as u64) << 32 | id as u64)
    };
    if visible.len() <= cap {
        near.extend(visible.iter().filter_map(|&id| key(id)));
        return 0;
    }
    if hint != 0 {
        let within = ((hint.saturating_add(hint / 4).saturating_add(NEAR_SLACK) as u64) << 32)
            | u32::MAX as u64;
        near.extend(
            visible
                .iter()
                .filter_map(|&id| key(id))
                .filter(|&k| k <= within),
        );
        if near.len() < cap {
            near.clear();
        }
    }
    if near.is_empty() {
        near.extend(visible.iter().filter_map(|&id| key(id)));
    }
    if near.len() > cap {
        near.select_nth_unstable(cap);
        near.truncate(cap);
    }
    near.iter().max().map_or(0, |&k| (k >> 32) as u32)
}

/// [`nearest_interest`]'s margin beyond last tick's farthest pick, in
/// squared metres, besides a quarter of it: room for a tick's movement of
/// both the observer and the entity near the observer.
const NEAR_SLACK: u32 = 64;

/// Squared distance as a sort key (an integer: sorts fast and deterministically).
#[inline]
fn dist_key(pos: [f32; 2], own: [f32; 2]) -> u32 {
    crate::aoi::dist2(pos[0] - own[0], pos[1] - own[1]).min(4.0e9) as u32
}

/// Step 2: stamps the ids of interest `e` in `s.marks`: the visible set, or
/// (capped) its `max_interest` nearest, kept in `s.near`.
fn stamp_interest(
    index: &SpatialIndex,
    ctx: &PacketCtx,
    visible: &[NetId],
    near_key: &mut u32,
    s: &mut ReplScratch,
    e: u32,
    capped: bool,
) {
    if capped {
        let mut near = std::mem::take(&mut s.near);
        *near_key = nearest_interest(index, ctx, visible, &mut near, *near_key);
        for &n in &near {
            let id = n as NetId;
            *s.mark(id) = e;
        }
        s.stamped = near.len();
        s.near = near;
    } else {
        *near_key = 0;
        // The visible set comes from this tick's grid: every id is alive.
        for &id in visible {
            *s.mark(id) = e;
        }
        s.stamped = visible.len();
    }
}

/// Step 3a: one pass over the known entities, in id order: settles each,
/// and makes it an update (changed, or its update lost), an enter (its
/// enter lost, or its id now names another entity) or a leave (out of
/// interest, into `s.leave_slots`). Known ids of interest are stamped
/// `e + 1`, so those still at `e` afterwards are unknown: enters. Items come
/// out in id order, as the encoder wants them.
fn walk_known(
    index: &SpatialIndex,
    game: &GameSnaps,
    ctx: &PacketCtx,
    view: &mut ClientView,
    s: &mut ReplScratch,
    e: u32,
) {
    s.cands.clear();
    s.upd.clear();
    s.upd_resent = 0;
    s.upd_cost = 0;
    s.upd_slots.clear();
    s.materialized = false;
    s.stamped_known = 0;
    s.leave_slots.clear();
    let ClientView { known, ring, .. } = &mut *view;
    for (slot, k) in known.iter_mut().enumerate() {
        k.settle(ring, ctx.tick);
        let mark = s.mark(k.id);
        let snap = if *mark == e { index.snap(k.id) } else { None };
        let Some(snap) = snap else {
            s.leave_slots.push(slot as u32);
            continue;
        };
        *mark = e + 1;
        s.stamped_known += 1;
        // Another generation under a known id: the client may hold the
        // former entity, so only an enter (kind, figure, state) is right.
        let reused = !k.same_gen(snap.net_gen);
        if !reused && !snap.changed && !k.behind() {
            continue;
        }
        if !(reused || k.entering()) {
            // Written and recorded now, while the entry and the snapshot
            // are at hand: when everything fits (nearly always) the packet
            // copies the list; else `undo_untaken` restores what stays out.
            s.upd_resent += k.resend() as u64;
            s.upd_slots.push((slot as u32, k.save()));
            if game.enabled() && snap.game_changed == 1 && !k.needs_full_game() {
                // The common case: no component changed and none to repair,
                // so the block is the one byte 0 (no look-up).
                s.upd.push_byte(k.id, snap.wire(), 0);
                s.upd_cost += snap.update_cost as usize;
                k.sent(ctx.tick, snap.net_gen, false);
            } else if game.enabled() {
                let full = k.needs_full_game();
                let block = if full {
                    game.full(k.id)
                } else {
                    game.changed(k.id)
                };
                s.upd.push_game(k.id, snap.wire(), block);
                s.upd_cost += update_cost(snap, full);
                k.sent(ctx.tick, snap.net_gen, false);
                if block.first().is_some_and(|&c| c != 0) {
                    k.carried_game();
                }
            } else {
                s.upd.push(k.id, snap.wire());
                s.upd_cost += snap.update_cost as usize;
                k.sent(ctx.tick, snap.net_gen, false);
            }
            continue;
        }
        s.cands.push(Cand {
            id: k.id,
            slot: slot as u32,
            wait: 0,
            cost: snap.enter_cost,
            enter: true,
            taken: true,
            saved: 0,
        });
    }
    s.walked = s.cands.len();
}

/// Step 3b: the ids of interest still stamped `e` are not known: enters,
/// appended in id order.
fn add_enters(index: &SpatialIndex, visible: &[NetId], s: &mut ReplScratch, e: u32, capped: bool) {
    if s.stamped_known == s.stamped {
        return;
    }
    let first = s.cands.len();
    let near = std::mem::take(&mut s.near);
    if capped {
        push_enters(index, near.iter().map(|&n| n as NetId), s, e);
    } else {
        push_enters(index, visible.iter().copied(), s, e);
    }
    s.near = near;
    s.cands[first..].sort_unstable_by_key(|c| c.id);
}

/// The ids of `ids` still stamped `e` become enters (generic, not `dyn`:
/// this loop runs over a client's whole interest whenever one enters).
#[inline]
fn push_enters(
    index: &SpatialIndex,
    ids: impl Iterator<Item = NetId>,
    s: &mut ReplScratch,
    e: u32,
) {
    for id in ids {
        if s.marks.get(id as usize).is_none_or(|&m| m != e) {
            continue;
        }
        let Some(snap) = index.snap(id) else { continue };
        s.cands.push(Cand {
            id,
            slot: NONE,
            wait: 0,
            cost: snap.enter_cost,
            enter: true,
            taken: true,
            saved: 0,
        });
    }
}

/// Step 4a: the leaves — known entities out of interest, then lost leaves
/// of ids not known again — while they fit; returns how many did not. How
/// many of each went is kept for [`commit_view`].
fn choose_leaves(view: &ClientView, s: &mut ReplScratch, used: &mut usize, budget: usize) -> u64 {
    let mut deferred = 0u64;
    s.leaves.clear();
    s.fresh_sent = 0;
    s.again_sent = 0;
    for &slot in &s.leave_slots {
        let id = view.known[slot as usize].id;
        let cost = varint_len(id as u64);
        if *used + cost <= budget {
            s.leaves.push(id);
            *used += cost;
            s.fresh_sent += 1;
        } else {
            deferred += 1;
        }
    }
    for l in view.leaving.iter().filter(|l| l.1 == NONE) {
        let cost = varint_len(l.0 as u64);
        if s.fresh_sent == s.leave_slots.len() && *used + cost <= budget {
            s.leaves.push(l.0);
            *used += cost;
            s.again_sent += 1;
        } else {
            deferred += 1;
        }
    }
    if !s.leaves.is_sorted() {
        s.leaves.sort_unstable();
    }
    deferred
}

/// Step 4b: which candidates go, and how many. All of them when they fit;
/// else they go by priority — enters nearest first, then updates by squared
/// distance divided by `(1 + ticks waited)²`, ties by position (id order
/// within the walk), so the choice is deterministic — and the rest are
/// flagged not `taken`. The candidates stay in place, in the order the
/// packet wants.
fn choose_items(
    index: &SpatialIndex,
    game: &GameSnaps,
    ctx: &PacketCtx,
    view: &ClientView,
    s: &mut ReplScratch,
    used: &mut usize,
    budget: usize,
) -> usize {
    let wanted: usize = s.cands.iter().map(|c| c.cost as usize).sum::<usize>() + s.upd_cost;
    if *used + wanted <= budget {
        *used += wanted;
        return s.total();
    }
    materialize_updates(index, game, view, s);
    let cands = &mut s.cands;
    s.order.clear();
    let mut cheapest = u8::MAX;
    for (i, c) in cands.iter_mut().enumerate() {
        c.taken = false;
        cheapest = cheapest.min(c.cost);
        let key = dist_key(index.snaps[c.id as usize].pos, ctx.own_pos);
        let priority = if c.enter {
            key
        } else {
            let w = c.wait as u32 + 1;
            key / (w * w)
        };
        let later = !c.enter as u64;
        s.order
            .push(later << 63 | (priority.min(i32::MAX as u32) as u64) << 32 | i as u64);
    }
    // No more than this many can fit: only they need sorting.
    let most = (budget.saturating_sub(*used) / cheapest.max(1) as usize).min(s.order.len());
    if most < s.order.len() {
        s.order.select_nth_unstable(most);
    }
    s.order[..most].sort_unstable();
    let mut taken = 0;
    for &o in &s.order[..most] {
        let c = &mut cands[o as u32 as usize];
        if *used + c.cost as usize > budget {
            break;
        }
        *used += c.cost as usize;
        c.taken = true;
        taken += 1;
    }
    taken
}

/// Not everything fits: the walk's updates become candidates, merged with
/// the walk's enters in id (= slot) order, before the new enters.
fn materialize_updates(
    index: &SpatialIndex,
    game: &GameSnaps,
    view: &ClientView,
    s: &mut ReplScratch,
) {
    let mut merged = std::mem::take(&mut s.spare);
    merged.clear();
    let (walked, new) = s.cands.split_at(s.walked);
    let mut e = 0;
    for &(slot, saved) in &s.upd_slots {
        while e < walked.len() && walked[e].slot < slot {
            merged.push(walked[e]);
            e += 1;
        }
        let id = view.known[slot as usize].id;
        merged.push(Cand {
            id,
            slot,
            wait: (saved >> 24) as u8,
            cost: update_cost(
                &index.snaps[id as usize],
                game.enabled() && Known::saved_needs_full_game(saved),
            ) as u8,
            enter: false,
            taken: true,
            saved,
        });
    }
    merged.extend_from_slice(&walked[e..]);
    s.walked = merged.len();
    merged.extend_from_slice(new);
    s.spare = std::mem::replace(&mut s.cands, merged);
    s.materialized = true;
}

/// An update's size at most: with all game components (`full`) or only
/// those that changed.
#[inline]
fn update_cost(snap: &crate::interest::Snap, full: bool) -> usize {
    if full {
        snap.update_cost as usize - snap.game_changed as usize + snap.game_full as usize
    } else {
        snap.update_cost as usize
    }
}

/// FNV-1a of an own game block, to tell whether it changed since sent.
fn digest(block: &[u8]) -> u64 {
    block.iter().fold(0xcbf2_9ce4_8422_2325, |h, &b| {
        (h ^ b as u64).wrapping_mul(0x0000_0100_0000_01b3)
    })
}

/// Updates the walk recorded as sent that stay out of the packet get their
/// known entries back (and are no longer counted as resends).
fn undo_untaken(view: &mut ClientView, s: &mut ReplScratch) {
    for c in s.cands[..s.walked].iter().filter(|c| !c.taken && !c.enter) {
        let k = &mut view.known[c.slot as usize];
        k.restore(c.saved);
        s.upd_resent -= k.resend() as u64;
    }
}

/// Known candidates left out wait one tick more (their priority grows).
fn age_untaken(view: &mut ClientView, cands: &[Cand]) {
    for c in cands.iter().filter(|c| !c.taken) {
        if c.slot != NONE {
            view.known[c.slot as usize].age();
        }
    }
}

/// Step 5a: writes the packet of tick `t` — the header, the leaves, then
/// the `taken` candidates with their states read from the snapshots — and
/// records in the view what it carries: the own state, and each known
/// entity's state and tick (new ones go to `s.added`). Returns how many
/// items went again because of a loss.
#[allow(clippy::too_many_arguments)]
fn write_packet(
    index: &SpatialIndex,
    game: &GameSnaps,
    h: &StateHeader,
    view: &mut ClientView,
    s: &mut ReplScratch,
    taken: usize,
    t: u32,
    out: &mut Vec<u8>,
) -> u64 {
    view.ring.record_sent(t);
    let mut resent = 0u64;
    let mut you_block: &[u8] = &[];
    if let Some(u) = h.you {
        resent += view.you_resend as u64;
        view.you_sent = Some(u.q);
        view.you_at = t;
        view.you_resend = false;
        if game.enabled() {
            you_block = game.you(u.id);
            view.you_game = digest(you_block);
        }
    }
    let entering = s.cands.iter().filter(|c| c.taken && c.enter).count();
    let g = if game.enabled() {
        crate::protocol::GAME_BLOCK_MAX_BYTES
    } else {
        0
    };
    let max = s.leaves.len() * LEAVE_MAX_BYTES
        + entering * (ENTER_MAX_BYTES + g)
        + (taken - entering) * (UPDATE_MAX_BYTES + g);
    let mut enc = StateEncoder::begin_game(out, h, you_block, max);
    enc.leaves(s.leaves.len());
    for &id in &s.leaves {
        enc.leave(id);
    }
    // Enters in id order: those of the walk merged with the new ones.
    let (walked, new) = s.cands.split_at(s.walked);
    enc.enters(entering);
    s.added.clear();
    let mut again = walked.iter().filter(|c| c.taken && c.enter).peekable();
    let mut new = new.iter().filter(|c| c.taken).peekable();
    loop {
        let c = match (again.peek(), new.peek()) {
            (Some(a), Some(n)) if n.id < a.id => new.next(),
            (Some(_), _) => again.next(),
            (None, _) => new.next(),
        };
        let Some(c) = c else { break };
        let snap = &index.snaps[c.id as usize];
        enc.enter_wire(c.id, snap.kind, snap.figure, snap.wire());
        if game.enabled() {
            enc.game_block(game.full(c.id));
        }
        if c.slot == NONE {
            s.added.push(Known::entered(c.id, snap.net_gen, t));
        } else {
            let k = &mut view.known[c.slot as usize];
            resent += k.resend() as u64;
            k.sent(t, snap.net_gen, true);
        }
    }
    // Updates: written and recorded by the walk; when some stay out, the
    // list is written again from those that go.
    resent += s.upd_resent;
    if taken == s.total() {
        debug_assert_eq!(s.upd.len(), taken - entering);
        enc.update_list(&s.upd);
    } else {
        enc.updates(taken - entering);
        for c in walked.iter().filter(|c| c.taken && !c.enter) {
            enc.update_wire(c.id, index.snaps[c.id as usize].wire());
            if game.enabled() {
                enc.game_block(if Known::saved_needs_full_game(c.saved) {
                    game.full(c.id)
                } else {
                    game.changed(c.id)
                });
            }
        }
    }
    enc.finish();
    resent
}

/// Step 5b: candidates left out wait one tick more; the leaves sent move
/// from `known` to `leaving` (or get the new tick, sent again); the new
/// entities join `known`. Returns how many leaves went again because of a
/// loss. `known` stays in id order.
fn commit_view(view: &mut ClientView, s: &mut ReplScratch, t: u32) -> u64 {
    let mut resent = 0u64;
    age_untaken(view, &s.cands);
    // Lost leaves sent again get the new tick.
    for l in view
        .leaving
        .iter_mut()
        .filter(|l| l.1 == NONE)
        .take(s.again_sent)
    {
        l.1 = t;
        resent += 1;
    }
    // Fresh leaves leave `known` (their slots ascend: one compacting pass).
    let gone = &s.leave_slots[..s.fresh_sent];
    if !gone.is_empty() {
        let mut next = 0;
        let mut w = 0;
        for r in 0..view.known.len() {
            if next < gone.len() && gone[next] as usize == r {
                next += 1;
                view.leaving.push((view.known[r].id, t));
                continue;
            }
            view.known[w] = view.known[r];
            w += 1;
        }
        view.known.truncate(w);
    }
    // New entities join `known` at their place in id order.
    if s.added.len() > 8 {
        view.known.extend_from_slice(&s.added);
        view.known.sort_unstable_by_key(|k| k.id);
    } else {
        for k in &s.added {
            let at = view.known.partition_point(|o| o.id < k.id);
            view.known.insert(at, *k);
        }
    }
    resent
}

/// Drops the oldest pending leaves beyond [`MAX_LEAVING`]; returns how many.
fn forget_oldest_leaves(view: &mut ClientView) -> u64 {
    let over = view.leaving.len().saturating_sub(MAX_LEAVING);
    if over > 0 {
        view.leaving.drain(..over);
    }
    over as u64
}
