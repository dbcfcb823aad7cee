//! The Replicate stage's systems: every client's packet built in parallel
//! chunks ([`super::build_packet`]), then the tick's packets sealed.

use bevy_ecs::prelude::*;

use super::{PacketCtx, ReplScratch, build_packet};
use crate::components::*;
use crate::game::GameSnaps;
use crate::interest::SpatialIndex;
use crate::protocol::NetId;
use crate::world::{SceneInfo, SceneOutbox};

pub(super) fn build_packets(
    info: Res<SceneInfo>,
    tick: Res<TickCount>,
    index: Res<SpatialIndex>,
    game: Res<GameSnaps>,
    mut counters: ResMut<Counters>,
    mut out: ResMut<SceneOutbox>,
    mut acks: ResMut<AckInbox>,
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
        // Each client's arrays come from memory (see `warm_lines`): the
        // next client's are fetched before this one is built, so the
        // fetches overlap with the work.
        if let Some((_, _, _, interest, view)) = chunk.first() {
            warm(view, &interest.visible);
        }
        for i in 0..chunk.len() {
            if let Some((_, _, _, interest, view)) = chunk.get(i + 1) {
                warm(view, &interest.visible);
                warm_snaps(&index, view);
            }
            let (net, pos, pc, interest, view) = &mut chunk[i];
            if let Some(ack) = acks.get(&pc.client) {
                s.acks_taken += 1;
                if ack.apply(&mut view.ring).is_err() {
                    s.stale += 1;
                }
            }
            let start = buf.len() as u32;
            let ctx = PacketCtx {
                own: net.0,
                own_pos: pos.0,
                input_ack: pc.ack,
                ..base
            };
            let (len, stats) =
                build_packet(&index, &game, &ctx, &interest.visible, view, s, &mut buf);
            if len > 0 {
                s.out_index.push((pc.client, start, len as u32));
            }
            s.deferred += stats.deferred;
            s.resent += stats.resent;
            s.forgotten += stats.forgotten;
        }
        s.out = buf;
    });
    let mut taken = 0;
    for s in scratch.iter_mut() {
        counters.items_deferred += std::mem::take(&mut s.deferred);
        counters.items_resent += std::mem::take(&mut s.resent);
        counters.leaves_forgotten += std::mem::take(&mut s.forgotten);
        counters.acks_stale += std::mem::take(&mut s.stale);
        taken += std::mem::take(&mut s.acks_taken);
        if !s.out_index.is_empty() {
            // The buffer leaves with the tick's output; the next tick starts a
            // new one of the same capacity.
            let cap = s.out.capacity();
            let buf = std::mem::replace(&mut s.out, Vec::with_capacity(cap));
            out.packets.push_buffer(buf, s.out_index.drain(..));
        }
    }
    // Those no client here took were for clients not (or no longer) here.
    counters.unknown_client += acks.len() as u64 - taken;
    acks.clear();
}

/// Reads a client's arrays one word per cache line (see `warm_lines`).
#[inline]
fn warm(view: &ClientView, visible: &[NetId]) {
    crate::warm_lines(&view.known, |k| k.id);
    crate::warm_lines(visible, |&id| id);
    crate::warm_lines(&view.leaving, |l| l.0);
}

/// Reads the snapshot of each entity a client knows, so the walk finds
/// them in cache.
#[inline]
fn warm_snaps(index: &SpatialIndex, view: &ClientView) {
    let mut acc = 0u32;
    for k in &view.known {
        if let Some(s) = index.snaps.get(k.id as usize) {
            acc ^= s.net_gen;
        }
    }
    std::hint::black_box(acc);
}

/// Seals the tick's packets: sorted by client.
pub(super) fn collect_packets(mut out: ResMut<SceneOutbox>) {
    out.packets.sort();
}
