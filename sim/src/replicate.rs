//! Replicate: one packet per client per tick, at most `packet_budget` bytes,
//! repaired on loss.
//!
//! Each client has a [`ClientView`]: the entities it has been sent, with the
//! state last sent and the tick of the packet that carried it, the leaves not
//! yet acknowledged, and a ring of recent packets with their fates from the
//! client's acknowledgements ([`crate::protocol::StateAck`]). Every tick:
//!
//! 1. **Settle.** Each pending item whose packet turned out lost is flagged
//!    to go again — an enter as an enter, an update as an update, a leave as
//!    a leave — with the *current* state (dirty-mask repair, as Tribes and
//!    Torque do: nothing is queued, nothing waits behind a reliable channel).
//! 2. **Interest.** The AOI's visible set, capped at the `max_interest`
//!    nearest; known entities outside it leave.
//! 3. **Diff.** Visible but unknown (or whose enter was lost, or known under
//!    the same id but of another generation: the id was reused) → enter;
//!    known and changed since last sent (or whose update was lost) → update.
//! 4. **Choose.** Leaves first, then enters nearest first, then updates by
//!    priority: squared distance divided by `(1 + ticks waited)²`, so far
//!    or crowded-out entities go less often but never starve.
//! 5. **Encode and commit.** Item sizes are counted as in the layout of
//!    `docs/protocol.md` with each id at its full size, an upper bound (the
//!    encoder writes ascending ids as differences), so the packet fits the
//!    byte budget in one pass.
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
//! leave lost or deferred). Every id the server sends is of the generation
//! in [`Known::net_gen`]; a known entry of another generation than the id's
//! current holder is the former entity, so the current one goes as an enter,
//! which overwrites kind, figure and state on the client. A pending leave is
//! dropped once the id is known again (the enter sent since overrides it,
//! and packets apply in tick order); otherwise it goes again, and rightly
//! removes whatever the client holds under the id, for the server then
//! knows nothing the client should hold under it.

use bevy_app::{App, Plugin, Update};
use bevy_ecs::prelude::*;

use crate::metrics::{done, sys};

use crate::ReplicateSystems;
use crate::components::*;
use crate::interest::SpatialIndex;
use crate::protocol::{
    ClientId, EnterState, HEADER_MAX_BYTES, NetId, Quantized, StatePacket, UpdateState, varint_len,
};
use crate::world::{SceneInfo, SceneOutbox};

/// Leaves a view keeps waiting for acknowledgement. A client that never
/// acknowledges would otherwise grow the list with every entity it saw go;
/// beyond this the oldest are forgotten (and counted).
pub const MAX_LEAVING: usize = 1024;

/// Ticks after an unacknowledged packet before an empty one probes its fate.
pub const PROBE_TICKS: u32 = 4;

pub struct ReplicatePlugin;

impl Plugin for ReplicatePlugin {
    fn build(&self, app: &mut App) {
        app.add_systems(
            Update,
            (
                build_packets,
                done::<{ sys::BUILD_PACKETS }>,
                collect_packets,
                done::<{ sys::COLLECT_PACKETS }>,
            )
                .chain()
                .in_set(ReplicateSystems),
        );
    }
}

/// An enter or update waiting for room in the packet, with the state to send.
#[derive(Debug, Clone, Copy)]
struct Cand {
    /// Sort key: enters before updates, then priority (smaller goes first).
    key: (bool, u32),
    id: NetId,
    /// The generation of the entity sent.
    net_gen: u32,
    /// Index in `ClientView::known`, or [`NONE`] for an entity not known.
    slot: u32,
    enter: bool,
    kind: u8,
    figure: u32,
    q: Quantized,
    cost: u16,
}

/// Per-thread scratch for [`build_packet`].
#[derive(Default)]
pub struct ReplScratch {
    cands: Vec<Cand>,
    packet: StatePacket,
    /// The visible set capped to the nearest `max_interest`: (dist², id).
    near: Vec<(u32, NetId)>,
    leave_slots: Vec<u32>,
    /// Scratch of [`fill_items`]: `(id << 32) | index` of the items taken.
    order: Vec<u64>,
    /// Per id, side by side so one look-up touches one cache line:
    /// `.0` the stamp (`e` = known, not (yet) seen in interest; `e + 1` =
    /// known and in interest), `.1` the id's index in `ClientView::known`.
    marks: Vec<(u32, u32)>,
    epoch: u32,
    /// This chunk's counts, summed into `Counters` after the stage.
    deferred: u64,
    resent: u64,
    forgotten: u64,
    /// This chunk's packets, back to back, and (client, start, len) of each.
    out: Vec<u8>,
    out_index: Vec<(ClientId, u32, u32)>,
}

impl ReplScratch {
    fn begin(&mut self, bound: usize) -> u32 {
        if self.marks.len() < bound {
            self.marks.resize(bound, (0, 0));
        }
        if self.epoch >= u32::MAX - 2 {
            self.marks.fill((0, 0));
            self.epoch = 0;
        }
        self.epoch += 2;
        self.epoch
    }

    fn mark(&mut self, id: NetId) -> &mut (u32, u32) {
        let i = id as usize;
        // A despawned id may lie beyond this tick's snapshot array.
        if i >= self.marks.len() {
            self.marks.resize(i + 1, (0, 0));
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
pub fn build_packet(
    index: &SpatialIndex,
    ctx: &PacketCtx,
    visible: &[NetId],
    view: &mut ClientView,
    s: &mut ReplScratch,
    out: &mut Vec<u8>,
) -> (usize, BuildStats) {
    let mut stats = BuildStats::default();
    let e = s.begin(index.snaps.len());
    settle(view, s, e);
    let mut used = start_packet(&mut s.packet, index, ctx, view);
    if visible.len() > ctx.max_interest {
        nearest_interest(index, ctx, visible, &mut s.near);
        diff_view(index, ctx, view, s, e, None);
    } else {
        // Under the cap (the common case) the visible set is the interest:
        // one pass, distances only for what is sent.
        diff_view(index, ctx, view, s, e, Some(visible));
    }
    let budget = ctx.budget.min(crate::MAX_PACKET_BYTES);
    stats.deferred += choose_leaves(view, s, e, &mut used, budget);
    let taken = choose_items(&mut s.cands, &mut used, budget);
    stats.deferred += (s.cands.len() - taken) as u64;
    fill_items(&mut s.packet, &s.cands[..taken], &mut s.order);
    let p = &s.packet;
    let empty =
        p.you.is_none() && p.leaves.is_empty() && p.enters.is_empty() && p.updates.is_empty();
    if empty && !probe_due(view, ctx.tick) {
        return (0, stats);
    }
    let start = out.len();
    s.packet.encode_into(out);
    let len = out.len() - start;
    debug_assert!(len <= budget, "exact sizing overshot: {len} > {budget}");
    stats.resent = commit_view(view, s, taken, ctx.tick);
    stats.forgotten = forget_oldest_leaves(view);
    (len, stats)
}

/// Whether an empty packet must go to learn the fate of the unacknowledged
/// ones: the client acknowledges only what it applies, so when the last
/// packets were lost and nothing changed since, only a newer packet's
/// acknowledgement can tell the server they were lost.
fn probe_due(view: &ClientView, now: u32) -> bool {
    view.last_sent > view.acked && now >= view.last_sent.saturating_add(PROBE_TICKS)
}

/// Step 1: turns what the acknowledgements say into flags. Stamps every
/// known id in `s.marks` with `e` (and its index) on the way.
fn settle(view: &mut ClientView, s: &mut ReplScratch, e: u32) {
    if view.you_at != NONE {
        match view.fate(view.you_at) {
            Fate::Delivered => view.you_at = NONE,
            Fate::Lost => {
                view.you_at = NONE;
                view.you_resend = true;
            }
            Fate::InFlight => {}
        }
    }
    for k in 0..view.known.len() {
        let fate_enter =
            (view.known[k].enter_at != NONE).then(|| view.fate(view.known[k].enter_at));
        let fate_sent = (view.known[k].sent_at != NONE).then(|| view.fate(view.known[k].sent_at));
        let entry = &mut view.known[k];
        match fate_enter {
            Some(Fate::Delivered) => entry.enter_at = NONE,
            Some(Fate::Lost) => {
                entry.enter_at = NONE;
                entry.resend = Resend::Enter;
            }
            _ => {}
        }
        match fate_sent {
            Some(Fate::Delivered) => entry.sent_at = NONE,
            Some(Fate::Lost) => {
                entry.sent_at = NONE;
                if entry.resend == Resend::Nothing {
                    entry.resend = Resend::Update;
                }
            }
            _ => {}
        }
        let id = entry.id;
        *s.mark(id) = (e, k as u32);
    }
    // A leave settles when delivered, or when the entity is known again (the
    // enter sent since overrides it); a lost one is flagged to go again.
    let marks = &s.marks;
    let known_now = |id: NetId| marks.get(id as usize).is_some_and(|m| m.0 == e);
    let ClientView {
        leaving,
        sent,
        delivered,
        acked,
        ..
    } = &mut *view;
    let mut i = 0;
    while i < leaving.len() {
        let (id, at) = leaving[i];
        let fate = if at == NONE {
            Fate::Lost
        } else {
            fate_of(sent, *delivered, *acked, at)
        };
        let keep = match fate {
            Fate::Delivered => false,
            _ if known_now(id) => false,
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

/// [`ClientView::fate`] on borrowed parts (so `leaving` can be edited meanwhile).
fn fate_of(sent: &[u32; SENT_RING], delivered: u64, acked: u32, t: u32) -> Fate {
    let slot = t as usize % SENT_RING;
    if sent[slot] != t {
        Fate::Lost
    } else if delivered & (1 << slot) != 0 {
        Fate::Delivered
    } else if t <= acked {
        Fate::Lost
    } else {
        Fate::InFlight
    }
}

/// Resets the packet, sets its header and the client's own state (when it
/// changed since last sent, or its packet was lost); returns the bytes used
/// so far, counting each list's count at its largest.
fn start_packet(
    p: &mut StatePacket,
    index: &SpatialIndex,
    ctx: &PacketCtx,
    view: &ClientView,
) -> usize {
    p.scene = ctx.scene;
    p.epoch = ctx.epoch;
    p.tick = ctx.tick;
    p.ack = ctx.input_ack;
    p.leaves.clear();
    p.enters.clear();
    p.updates.clear();
    p.you = match index.snap(ctx.own).map(|s| s.q) {
        Some(q) if view.you_resend || view.you_sent != Some(q) => {
            Some(UpdateState { id: ctx.own, q })
        }
        _ => None,
    };
    let header = 1 + 4 + varint_len(ctx.epoch) + 4 + varint_len(ctx.input_ack as u64) + 1;
    // Three counts of at most 2 bytes each (a packet holds < 16 384 items).
    let you = p
        .you
        .map_or(0, |u| varint_len(u.id as u64) + u.q.wire_len());
    debug_assert!(header + 6 <= HEADER_MAX_BYTES + 3);
    header + 6 + you
}

/// Step 2: the visible set, or its `max_interest` nearest when larger
/// (ties by id, so the choice is deterministic), as (dist², id).
fn nearest_interest(
    index: &SpatialIndex,
    ctx: &PacketCtx,
    visible: &[NetId],
    near: &mut Vec<(u32, NetId)>,
) {
    near.clear();
    for &id in visible {
        let Some(snap) = index.snap(id) else { continue };
        let (dx, dy) = (snap.pos[0] - ctx.own_pos[0], snap.pos[1] - ctx.own_pos[1]);
        near.push(((dx * dx + dy * dy).min(4.0e9) as u32, id));
    }
    if near.len() > ctx.max_interest {
        near.select_nth_unstable(ctx.max_interest);
        near.truncate(ctx.max_interest);
    }
}

/// Step 3: every entity of interest that is unknown or must be entered again
/// becomes an enter, every known one that changed or must be updated again
/// an update. Known ids seen in interest are stamped `e + 1`, so those left
/// at `e` are leaves.
fn diff_view(
    index: &SpatialIndex,
    ctx: &PacketCtx,
    view: &ClientView,
    s: &mut ReplScratch,
    e: u32,
    all: Option<&[NetId]>,
) {
    s.cands.clear();
    let n = all.map_or(s.near.len(), <[NetId]>::len);
    for i in 0..n {
        let (near_d2, id) = match all {
            Some(v) => (None, v[i]),
            None => (Some(s.near[i].0), s.near[i].1),
        };
        let Some(snap) = index.snap(id) else { continue };
        let mark = s.mark(id);
        let known = mark.0 == e;
        let slot = if known { mark.1 } else { NONE };
        if known {
            mark.0 = e + 1;
        }
        let entry = known.then(|| &view.known[slot as usize]);
        // Another generation under a known id: the client may hold the
        // former entity, so only an enter (kind, figure, state) is right.
        let enter = entry.is_none_or(|k| k.resend == Resend::Enter || k.net_gen != snap.net_gen);
        if !enter {
            let k = entry.expect("known");
            if snap.q == k.q && k.resend == Resend::Nothing {
                continue;
            }
        }
        let d2 = near_d2.unwrap_or_else(|| {
            let (dx, dy) = (snap.pos[0] - ctx.own_pos[0], snap.pos[1] - ctx.own_pos[1]);
            (dx * dx + dy * dy).min(4.0e9) as u32
        });
        let id_len = varint_len(id as u64);
        let (key, cost) = if enter {
            (
                (false, d2),
                id_len + 1 + varint_len(snap.figure as u64) + snap.q.wire_len(),
            )
        } else {
            let wait = entry.map_or(0, |k| k.wait as u32) + 1;
            (
                (true, d2 / wait.saturating_mul(wait)),
                id_len + snap.q.wire_len(),
            )
        };
        s.cands.push(Cand {
            key,
            id,
            net_gen: snap.net_gen,
            slot,
            enter,
            kind: snap.kind,
            figure: snap.figure,
            q: snap.q,
            cost: cost as u16,
        });
    }
}

/// Step 4a: the leaves — known ids out of interest, and lost leaves of ids
/// not known again — while they fit; returns how many did not.
fn choose_leaves(
    view: &ClientView,
    s: &mut ReplScratch,
    e: u32,
    used: &mut usize,
    budget: usize,
) -> u64 {
    let mut deferred = 0u64;
    let p = &mut s.packet;
    let fresh = view
        .known
        .iter()
        .map(|k| k.id)
        .filter(|&id| s.marks[id as usize].0 == e);
    let again = view.leaving.iter().filter(|l| l.1 == NONE).map(|l| l.0);
    for id in fresh.chain(again) {
        let cost = varint_len(id as u64);
        if *used + cost <= budget {
            p.leaves.push(id);
            *used += cost;
        } else {
            deferred += 1;
        }
    }
    deferred
}

/// Step 4b: how many candidates fit, in key order when not all of them do
/// (ties by id, so the choice is deterministic).
fn choose_items(cands: &mut [Cand], used: &mut usize, budget: usize) -> usize {
    let wanted: usize = cands.iter().map(|c| c.cost as usize).sum();
    if *used + wanted > budget {
        cands.sort_unstable_by_key(|c| (c.key, c.id));
    }
    let mut taken = 0;
    for c in cands.iter() {
        if *used + c.cost as usize > budget {
            break;
        }
        *used += c.cost as usize;
        taken += 1;
    }
    taken
}

/// Sets the packet's enters and updates to `cands`, and its lists in
/// ascending id order (the encoder writes ids as differences, so sorted
/// lists pack tightest). Sorting `(id, index)` pairs as plain integers is
/// several times cheaper than sorting the items by a key.
fn fill_items(p: &mut StatePacket, cands: &[Cand], order: &mut Vec<u64>) {
    p.enters.clear();
    p.updates.clear();
    order.clear();
    order.extend(
        cands
            .iter()
            .enumerate()
            .map(|(i, c)| (c.id as u64) << 32 | i as u64),
    );
    order.sort_unstable();
    for &o in order.iter() {
        let c = &cands[(o & 0xffff_ffff) as usize];
        if c.enter {
            p.enters.push(EnterState {
                id: c.id,
                kind: c.kind,
                figure: c.figure,
                q: c.q,
            });
        } else {
            p.updates.push(UpdateState { id: c.id, q: c.q });
        }
    }
    p.leaves.sort_unstable();
}

/// Step 5: records the packet as sent in tick `t` and what it carried in the
/// view; candidates left out wait one tick more. Returns how many items went
/// again because of a loss.
fn commit_view(view: &mut ClientView, s: &mut ReplScratch, taken: usize, t: u32) -> u64 {
    view.record_sent(t);
    let mut resent = 0u64;
    if let Some(u) = s.packet.you {
        resent += view.you_resend as u64;
        view.you_sent = Some(u.q);
        view.you_at = t;
        view.you_resend = false;
    }
    for c in &s.cands[..taken] {
        if c.slot == NONE {
            continue;
        }
        let k = &mut view.known[c.slot as usize];
        resent += (k.resend != Resend::Nothing) as u64;
        k.net_gen = c.net_gen;
        k.q = c.q;
        k.sent_at = t;
        if c.enter {
            k.enter_at = t;
        }
        k.resend = Resend::Nothing;
        k.wait = 0;
    }
    for c in &s.cands[taken..] {
        if c.slot != NONE {
            let k = &mut view.known[c.slot as usize];
            k.wait = k.wait.saturating_add(1);
        }
    }
    // Leaves: lost ones resent get the new tick; fresh ones leave `known`
    // (highest index first, so a swap_remove never moves one still to go).
    s.leave_slots.clear();
    for &id in &s.packet.leaves {
        let m = s.marks[id as usize];
        if let Some(l) = view.leaving.iter_mut().find(|l| l.0 == id && l.1 == NONE) {
            l.1 = t;
            resent += 1;
        } else {
            s.leave_slots.push(m.1);
        }
    }
    s.leave_slots.sort_unstable_by(|a, b| b.cmp(a));
    for &k in &s.leave_slots {
        let gone = view.known.swap_remove(k as usize);
        view.leaving.push((gone.id, t));
    }
    for c in &s.cands[..taken] {
        if c.slot == NONE {
            view.known.push(Known {
                id: c.id,
                net_gen: c.net_gen,
                q: c.q,
                sent_at: t,
                enter_at: t,
                resend: Resend::Nothing,
                wait: 0,
            });
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

/// What a client's view must hold once every packet lands: its own state
/// and, by id, the entities of its capped interest with their states.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ExpectedView {
    pub own: NetId,
    pub you: Option<Quantized>,
    pub entities: Vec<EnterState>,
}

/// The view `client` converges to as of the last tick (its AOI set capped
/// the same way [`build_packet`] caps it), or `None` if not attached.
pub fn expected_view(world: &mut World, client: ClientId) -> Option<ExpectedView> {
    let max_interest = world.resource::<SceneInfo>().settings.max_interest;
    let entity = *world.resource::<Directory>().clients.get(&client)?;
    let (net, pos, interest) = {
        let e = world.get_entity(entity).ok()?;
        (
            *e.get::<Net>()?,
            *e.get::<Position>()?,
            e.get::<Interest>()?.visible.clone(),
        )
    };
    let index = world.resource::<SpatialIndex>();
    let ctx = PacketCtx {
        scene: 0,
        epoch: 0,
        tick: 0,
        own: net.0,
        own_pos: pos.0,
        input_ack: 0,
        budget: 0,
        max_interest,
    };
    let mut near = Vec::new();
    nearest_interest(index, &ctx, &interest, &mut near);
    let mut entities: Vec<EnterState> = near
        .iter()
        .filter_map(|&(_, id)| {
            index.snap(id).map(|s| EnterState {
                id,
                kind: s.kind,
                figure: s.figure,
                q: s.q,
            })
        })
        .collect();
    entities.sort_unstable_by_key(|e| e.id);
    Some(ExpectedView {
        own: net.0,
        you: index.snap(net.0).map(|s| s.q),
        entities,
    })
}

fn build_packets(
    info: Res<SceneInfo>,
    tick: Res<TickCount>,
    index: Res<SpatialIndex>,
    mut counters: ResMut<Counters>,
    mut out: ResMut<SceneOutbox>,
    mut q: Query<(&Net, &Position, &Pc, &Interest, &mut ClientView)>,
    mut scratch: Local<Vec<ReplScratch>>,
) {
    let base = PacketCtx {
        scene: info.tag,
        epoch: info.settings.epoch,
        tick: tick.0 as u32,
        own: 0,
        own_pos: [0.0; 2],
        input_ack: 0,
        budget: info.settings.packet_budget,
        max_interest: info.settings.max_interest,
    };
    let mut items: Vec<_> = q.iter_mut().collect();
    crate::par_chunks(&mut items, &mut scratch, |s, chunk| {
        let mut buf = std::mem::take(&mut s.out);
        buf.clear();
        s.out_index.clear();
        for (net, pos, pc, interest, view) in chunk {
            let start = buf.len() as u32;
            let ctx = PacketCtx {
                own: net.0,
                own_pos: pos.0,
                input_ack: pc.ack,
                ..base
            };
            let (len, stats) = build_packet(&index, &ctx, &interest.visible, view, s, &mut buf);
            if len > 0 {
                s.out_index.push((pc.client, start, len as u32));
            }
            s.deferred += stats.deferred;
            s.resent += stats.resent;
            s.forgotten += stats.forgotten;
        }
        s.out = buf;
    });
    for s in scratch.iter_mut() {
        counters.items_deferred += std::mem::take(&mut s.deferred);
        counters.items_resent += std::mem::take(&mut s.resent);
        counters.leaves_forgotten += std::mem::take(&mut s.forgotten);
        if !s.out_index.is_empty() {
            // The buffer leaves with the tick's output; the next tick starts a
            // new one of the same capacity.
            let cap = s.out.capacity();
            let buf = std::mem::replace(&mut s.out, Vec::with_capacity(cap));
            out.packets.push_buffer(buf, s.out_index.drain(..));
        }
    }
}

/// Seals the tick's packets: sorted by client.
fn collect_packets(mut out: ResMut<SceneOutbox>) {
    out.packets.sort();
}
