//! Replicate: one packet per client per tick, at most `packet_budget` bytes.
//!
//! Each client has a [`ClientView`]: the entities it has been told about and
//! the state last sent for each. Every tick the view is diffed against the
//! client's AOI set: known but no longer visible → leave; visible but unknown
//! → enter with full state; known and changed since last sent → update. Leaves
//! go first; enters and updates are taken nearest first until the budget is
//! spent. Whatever does not fit is simply still different next tick, so it is
//! carried over without any extra queue.

use bevy_app::{App, Plugin, Update};
use bevy_ecs::prelude::*;

use crate::metrics::{done, sys};

use crate::ReplicateSystems;
use crate::components::*;
use crate::interest::SpatialIndex;
use crate::protocol::{ClientId, EnterState, NetId, Quantized, StatePacket, UpdateState};
use crate::world::{SceneInfo, SceneOutbox};

/// Conservative upper bounds of the encoded size of each item (bitcode packs
/// columns, so real packets come out smaller). The encoded packet is checked
/// against the budget anyway and trimmed if the estimate was ever wrong.
pub const HEADER_BYTES: usize = 24;
pub const LEAVE_BYTES: usize = 5;
pub const UPDATE_BYTES: usize = 11;
pub const ENTER_BYTES: usize = 16;

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
    /// Squared distance (as an integer key: sorts fast and deterministically).
    key: u32,
    id: NetId,
    enter: bool,
    kind: u8,
    figure: u32,
    q: Quantized,
}

impl Cand {
    fn cost(&self) -> usize {
        if self.enter {
            ENTER_BYTES
        } else {
            UPDATE_BYTES
        }
    }
}

/// Per-thread scratch for [`build_packet`].
#[derive(Default)]
pub struct ReplScratch {
    buf: bitcode::Buffer,
    cands: Vec<Cand>,
    packet: StatePacket,
    leave_slots: Vec<u32>,
    /// Per id, side by side so one look-up touches one cache line:
    /// `.0` the stamp (`e` = known, not (yet) seen visible; `e + 1` = known
    /// and visible), `.1` the id's index in `ClientView::known`.
    marks: Vec<(u32, u32)>,
    epoch: u32,
    /// This chunk's counts, summed into `Counters` after the stage.
    deferred: u64,
    trimmed: u64,
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
}

impl std::fmt::Debug for ReplScratch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ReplScratch")
    }
}

/// What [`build_packet`] did besides encoding.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct BuildStats {
    pub deferred: u64,
    pub trimmed: bool,
}

/// Builds one client's packet, updates its view, and appends the encoded bytes
/// to `out`, returning how many (0 when there is nothing to tell).
///
/// The steps: start the packet with the client's own state; diff the view
/// against the visible set; choose leaves, then enters and updates nearest
/// first within the estimated budget; encode, trimming if the estimate was
/// ever short; grow once into the room the real encoding left; commit what
/// was sent into the view.
pub fn build_packet(
    index: &SpatialIndex,
    tick: u64,
    own: NetId,
    own_pos: [f32; 2],
    ack: u32,
    visible: &[NetId],
    view: &mut ClientView,
    budget: usize,
    s: &mut ReplScratch,
    out: &mut Vec<u8>,
) -> (usize, BuildStats) {
    let mut stats = BuildStats::default();
    let e = s.begin(index.snaps.len());
    let mut used = start_packet(&mut s.packet, index, tick, own, ack, view);
    let est_budget = estimate_budget(budget, view.ratio);
    let wanted = diff_view(index, own_pos, visible, view, s, e);
    let deferred_leaves = choose_leaves(view, &s.marks, e, &mut s.packet, &mut used, est_budget);
    let mut taken = choose_nearest(&mut s.cands, &mut used, wanted, est_budget);
    let mut deferred = deferred_leaves + (s.cands.len() - taken) as u64;
    fill_items(&mut s.packet, &s.cands[..taken]);
    let p = &s.packet;
    if p.you.is_none() && p.leaves.is_empty() && p.enters.is_empty() && p.updates.is_empty() {
        return (0, stats);
    }
    let start = out.len();
    encode_within_budget(s, budget, &mut taken, &mut deferred, &mut stats, out);
    if !stats.trimmed {
        grow_into_room(s, budget, start, &mut taken, &mut used, &mut deferred, out);
    }
    stats.deferred = deferred;
    let len = out.len() - start;
    commit_view(view, s, len);
    (len, stats)
}

/// Resets the packet and sets its header and the client's own state (when it
/// changed since last sent); returns the estimated bytes used so far.
fn start_packet(
    p: &mut StatePacket,
    index: &SpatialIndex,
    tick: u64,
    own: NetId,
    ack: u32,
    view: &ClientView,
) -> usize {
    p.tick = tick as u32;
    p.ack = ack;
    p.leaves.clear();
    p.enters.clear();
    p.updates.clear();
    p.you = match index.snap(own).map(|s| s.q) {
        Some(q) if view.you_sent != Some(q) => Some(UpdateState { id: own, q }),
        _ => None,
    };
    HEADER_BYTES + if p.you.is_some() { UPDATE_BYTES } else { 0 }
}

/// The budget to select against in estimated bytes. Estimates are worst-case
/// item sizes and bitcode packs tighter, so the budget is scaled by what this
/// client's last packet actually cost per estimated byte (plus a margin), and
/// one encode usually fits exactly. The encoded size is still checked against
/// the real budget.
fn estimate_budget(budget: usize, ratio: f32) -> usize {
    let scale = if ratio > 0.0 {
        (ratio * 1.08).clamp(0.3, 1.0)
    } else {
        1.0
    };
    (budget as f32 / scale) as usize
}

/// Diffs the view against the visible set with epoch stamps (no sorting, no
/// hashing): every visible entity that is unknown (an enter) or changed (an
/// update) becomes a candidate in `s.cands`; known entities seen visible are
/// stamped `e + 1`, so those left at `e` are leaves. Returns the candidates'
/// estimated cost.
fn diff_view(
    index: &SpatialIndex,
    own_pos: [f32; 2],
    visible: &[NetId],
    view: &ClientView,
    s: &mut ReplScratch,
    e: u32,
) -> usize {
    s.cands.clear();
    for (k, &(id, _)) in view.known.iter().enumerate() {
        let i = id as usize;
        // A despawned id may lie beyond this tick's snapshot array.
        if i >= s.marks.len() {
            s.marks.resize(i + 1, (0, 0));
        }
        s.marks[i] = (e, k as u32);
    }
    let mut wanted = 0;
    for &id in visible {
        let Some(snap) = index.snap(id) else { continue };
        let mark = &mut s.marks[id as usize];
        let enter = mark.0 != e;
        if !enter {
            mark.0 = e + 1;
            if snap.q == view.known[mark.1 as usize].1 {
                continue;
            }
        }
        let (dx, dy) = (snap.pos[0] - own_pos[0], snap.pos[1] - own_pos[1]);
        let c = Cand {
            key: (dx * dx + dy * dy).min(4.0e9) as u32,
            id,
            enter,
            kind: snap.kind,
            figure: snap.figure,
            q: snap.q,
        };
        wanted += c.cost();
        s.cands.push(c);
    }
    wanted
}

/// Puts the leaves (known ids still stamped `e`) in the packet while they
/// fit; returns how many did not.
fn choose_leaves(
    view: &ClientView,
    marks: &[(u32, u32)],
    e: u32,
    p: &mut StatePacket,
    used: &mut usize,
    est_budget: usize,
) -> u64 {
    let mut deferred = 0u64;
    for &(id, _) in &view.known {
        if marks[id as usize].0 == e {
            if *used + LEAVE_BYTES <= est_budget {
                p.leaves.push(id);
                *used += LEAVE_BYTES;
            } else {
                deferred += 1;
            }
        }
    }
    deferred
}

/// How many candidates fit, nearest first when not all of them do (ties by
/// id, so the choice is deterministic).
fn choose_nearest(cands: &mut [Cand], used: &mut usize, wanted: usize, est_budget: usize) -> usize {
    if *used + wanted > est_budget {
        cands.sort_unstable_by_key(|c| (c.key, c.id));
    }
    let mut taken = 0;
    for c in cands.iter() {
        if *used + c.cost() > est_budget {
            break;
        }
        *used += c.cost();
        taken += 1;
    }
    taken
}

/// Sets the packet's enters and updates to `cands`.
fn fill_items(p: &mut StatePacket, cands: &[Cand]) {
    p.enters.clear();
    p.updates.clear();
    for c in cands {
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
}

/// Encodes the packet into `out`. The estimate is an upper bound, so the
/// trimming loop should never run; if it ever does, it sheds the farthest
/// items (then half the leaves) until the packet fits.
fn encode_within_budget(
    s: &mut ReplScratch,
    budget: usize,
    taken: &mut usize,
    deferred: &mut u64,
    stats: &mut BuildStats,
    out: &mut Vec<u8>,
) {
    let p = &mut s.packet;
    let mut bytes = s.buf.encode(&*p);
    while bytes.len() > budget {
        stats.trimmed = true;
        let n = p.enters.len() + p.updates.len();
        if n > 0 {
            let keep = n - n.div_ceil(8);
            *deferred += (*taken - keep) as u64;
            *taken = keep;
            fill_items(p, &s.cands[..keep]);
        } else if !p.leaves.is_empty() {
            let keep = p.leaves.len() / 2;
            *deferred += (p.leaves.len() - keep) as u64;
            p.leaves.truncate(keep);
        } else {
            break;
        }
        bytes = s.buf.encode(&*p);
    }
    out.extend_from_slice(bytes);
}

/// The estimate assumed worst-case item sizes; real packets pack much
/// tighter. While items are still waiting and there is room, adds more
/// (nearest first), scaled by what the encoding actually cost, and keeps the
/// larger packet only if it fits. One try per tick.
fn grow_into_room(
    s: &mut ReplScratch,
    budget: usize,
    start: usize,
    taken: &mut usize,
    used: &mut usize,
    deferred: &mut u64,
    out: &mut Vec<u8>,
) {
    let len = out.len() - start;
    if *taken >= s.cands.len() || len >= budget {
        return;
    }
    let ratio = len as f32 / (*used).max(1) as f32;
    let room = ((budget - len) as f32 / ratio.max(0.05) * 0.9) as usize;
    let mut extra = 0;
    let mut more = *taken;
    for c in &s.cands[*taken..] {
        if extra + c.cost() > room {
            break;
        }
        extra += c.cost();
        more += 1;
    }
    if more == *taken {
        return;
    }
    fill_items(&mut s.packet, &s.cands[..more]);
    let bigger = s.buf.encode(&s.packet);
    if bigger.len() <= budget {
        out.truncate(start);
        out.extend_from_slice(bigger);
        *deferred -= (more - *taken) as u64;
        *used += extra;
        *taken = more;
    } else {
        fill_items(&mut s.packet, &s.cands[..*taken]);
    }
}

/// Commits what was sent into the view: the own state, updated and entered
/// states, removed leaves, and the encoded-per-estimated-byte ratio the next
/// packet's budget is scaled by.
fn commit_view(view: &mut ClientView, s: &mut ReplScratch, len: usize) {
    let p = &s.packet;
    let estimated = HEADER_BYTES
        + p.you.map_or(0, |_| UPDATE_BYTES)
        + p.leaves.len() * LEAVE_BYTES
        + p.enters.len() * ENTER_BYTES
        + p.updates.len() * UPDATE_BYTES;
    view.ratio = len as f32 / estimated as f32;
    if let Some(u) = p.you {
        view.you_sent = Some(u.q);
    }
    // In place: most of a view survives a tick, so no full rebuild.
    for u in &p.updates {
        view.known[s.marks[u.id as usize].1 as usize].1 = u.q;
    }
    // Remove sent leaves highest index first, so a swap_remove never moves
    // an entry that is still to be removed.
    s.leave_slots.clear();
    s.leave_slots
        .extend(p.leaves.iter().map(|&id| s.marks[id as usize].1));
    s.leave_slots.sort_unstable_by(|a, b| b.cmp(a));
    for &k in &s.leave_slots {
        view.known.swap_remove(k as usize);
    }
    view.known.extend(p.enters.iter().map(|en| (en.id, en.q)));
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
    let budget = info.settings.packet_budget;
    let t = tick.0;
    let mut items: Vec<_> = q.iter_mut().collect();
    crate::par_chunks(&mut items, &mut scratch, |s, chunk| {
        let mut buf = std::mem::take(&mut s.out);
        buf.clear();
        s.out_index.clear();
        for (net, pos, pc, interest, view) in chunk {
            let start = buf.len() as u32;
            let (len, stats) = build_packet(
                &index,
                t,
                net.0,
                pos.0,
                pc.ack,
                &interest.visible,
                view,
                budget,
                s,
                &mut buf,
            );
            if len > 0 {
                s.out_index.push((pc.client, start, len as u32));
            }
            s.deferred += stats.deferred;
            s.trimmed += stats.trimmed as u64;
        }
        s.out = buf;
    });
    for s in scratch.iter_mut() {
        counters.items_deferred += std::mem::take(&mut s.deferred);
        counters.packets_trimmed += std::mem::take(&mut s.trimmed);
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
