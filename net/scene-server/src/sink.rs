//! [`LinkSink`]: save batches from the scene threads to the data service over
//! the coordinator link.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, MutexGuard, PoisonError};

use tessera_sim::protocol::AvatarId;
use tessera_sim::{ObjectState, PcState, SaveBatch};
use tokio::sync::Notify;

use tessera_host::{EpochBatch, SaveSink, SaveSinkError};
use tessera_link::{LinkSender, SendError};
use tessera_wire::{Epoch, LinkMsg, WireSaveBatch};

/// Most PC states in one save-batch message: about 40 bytes each encoded,
/// so a chunk stays far below the link's default 1 MiB frame cap.
pub const SAVE_CHUNK_STATES: usize = 4096;

/// Most PC states sent and not yet confirmed durable by the coordinator.
/// Past it, [`LinkSink::drain`] sends nothing more: new states wait, merged
/// (one per avatar), until acks make room. At least one chunk is always
/// allowed, so a scene larger than this still saves.
pub const MAX_UNACKED_STATES: usize = 16 * SAVE_CHUNK_STATES;

/// How far [`LinkSink::drain`] got with one scene.
enum Drained {
    /// Every state was queued.
    All,
    /// A single state does not fit a frame: the scene stays pending.
    TooLarge,
    /// The link's queue is full or closed, or too much waits for acks: try
    /// again at the next drain.
    Stopped,
}

/// The states of one scene not yet handed to the link.
#[derive(Debug, Default)]
struct Pending {
    epoch: Epoch,
    tick: u64,
    /// Newest state per avatar: a later batch of the same placement replaces
    /// an earlier state of the same avatar, so memory is bounded by the
    /// scene's avatars however long the link is down.
    states: BTreeMap<AvatarId, PcState>,
    /// Newest state per scene object (a game's keyed entity), likewise.
    objects: BTreeMap<u64, ObjectState>,
}

impl Pending {
    fn is_empty(&self) -> bool {
        self.states.is_empty() && self.objects.is_empty()
    }
}

/// One batch on the link, kept until the coordinator says it is durable.
#[derive(Debug)]
struct Sent {
    scene: String,
    epoch: Epoch,
    tick: u64,
    states: Vec<PcState>,
    objects: Vec<ObjectState>,
}

impl Sent {
    /// What counts against [`MAX_UNACKED_STATES`].
    fn len(&self) -> usize {
        self.states.len() + self.objects.len()
    }
}

#[derive(Debug, Default)]
struct Inner {
    fence: BTreeMap<String, Epoch>,
    pending: BTreeMap<String, Pending>,
    /// Batches sent on the current link and not acknowledged, by number.
    sent: BTreeMap<u64, Sent>,
    /// States and objects in `sent`.
    sent_states: usize,
    /// The last batch number used.
    seq: u64,
}

/// Counters of a [`LinkSink`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize)]
pub struct LinkSinkStats {
    /// Batches the scenes handed in.
    pub batches_in: u64,
    /// Batches sent to the data service (a batch sent again counts again).
    pub batches_sent: u64,
    /// Batches the coordinator confirmed durable.
    pub batches_acked: u64,
    /// Sent batches whose link was lost before their ack: their states went
    /// back to pending, to be sent again.
    pub batches_resent: u64,
    /// Batches refused for a stale epoch (below the scene's fence).
    pub stale: u64,
    /// States discarded because their placement was dropped as stale (or
    /// superseded by a newer placement's before they were confirmed).
    pub discarded: u64,
    /// States sent and waiting for the coordinator's ack, now.
    pub unacked_states: u64,
    /// Drains held back because [`MAX_UNACKED_STATES`] were waiting for acks.
    pub held_for_acks: u64,
}

/// A [`SaveSink`] that never blocks the scene thread: batches are merged per
/// scene (newest state per avatar) and handed to the coordinator link by
/// [`LinkSink::drain`], which the server's link task calls whenever
/// [`LinkSink::notified`] fires. A state is kept until the coordinator
/// confirms it durable ([`LinkSink::ack`]); while the link is down nothing
/// is lost: states wait, merged, and what was sent but not confirmed goes
/// back to them ([`LinkSink::requeue`]) to be sent on the next link.
#[derive(Debug, Default)]
pub struct LinkSink {
    inner: Mutex<Inner>,
    notify: Notify,
    batches_in: AtomicU64,
    batches_sent: AtomicU64,
    batches_acked: AtomicU64,
    batches_resent: AtomicU64,
    stale: AtomicU64,
    discarded: AtomicU64,
    held_for_acks: AtomicU64,
}

impl LinkSink {
    pub fn new() -> Self {
        Self::default()
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Resolves when a batch arrives.
    pub async fn notified(&self) {
        self.notify.notified().await;
    }

    /// Whether states are waiting to be sent or to be confirmed durable.
    pub fn has_pending(&self) -> bool {
        let inner = self.lock();
        !inner.pending.is_empty() || !inner.sent.is_empty()
    }

    /// Whether states of `scene` wait to be sent or to be confirmed durable.
    pub fn holds(&self, scene: &str) -> bool {
        let inner = self.lock();
        inner.pending.contains_key(scene) || inner.sent.values().any(|b| b.scene == scene)
    }

    /// Sends every waiting scene's states over `link`, in messages of at
    /// most [`SAVE_CHUNK_STATES`] states, so a large scene never makes a
    /// frame over the cap. What does not fit the link's queue, or past
    /// [`MAX_UNACKED_STATES`] waiting for acks, stays pending for the next
    /// drain; a scene whose states cannot be sent at all (a link with a tiny
    /// frame cap) stays pending without holding up the others.
    pub fn drain(&self, link: &LinkSender) {
        let mut inner = self.lock();
        let scenes: Vec<String> = inner.pending.keys().cloned().collect();
        for scene in scenes {
            let Some(mut p) = inner.pending.remove(&scene) else {
                continue;
            };
            let drained = self.send_chunks(&mut inner, &scene, &mut p, link);
            if !p.is_empty() {
                inner.pending.insert(scene, p);
            }
            if matches!(drained, Drained::Stopped) {
                return;
            }
        }
    }

    /// Sends `p`'s states in chunks, moving each chunk to `sent` once it is
    /// queued.
    fn send_chunks(
        &self,
        inner: &mut Inner,
        scene: &str,
        p: &mut Pending,
        link: &LinkSender,
    ) -> Drained {
        let mut chunk = SAVE_CHUNK_STATES;
        while !p.is_empty() {
            if inner.sent_states >= MAX_UNACKED_STATES {
                self.held_for_acks.fetch_add(1, Ordering::Relaxed);
                return Drained::Stopped;
            }
            let avatars: Vec<AvatarId> = p.states.keys().take(chunk).copied().collect();
            let keys: Vec<u64> = p
                .objects
                .keys()
                .take(chunk - avatars.len())
                .copied()
                .collect();
            let seq = inner.seq + 1;
            let msg = LinkMsg::SaveBatch(WireSaveBatch {
                seq,
                scene: scene.to_owned(),
                epoch: p.epoch,
                tick: p.tick,
                states: avatars.iter().map(|a| p.states[a].clone().into()).collect(),
                objects: keys.iter().map(|k| p.objects[k].clone().into()).collect(),
            });
            match link.try_send(&msg) {
                Ok(()) => {
                    let states: Vec<PcState> =
                        avatars.iter().filter_map(|a| p.states.remove(a)).collect();
                    let objects: Vec<ObjectState> =
                        keys.iter().filter_map(|k| p.objects.remove(k)).collect();
                    let sent = Sent {
                        scene: scene.to_owned(),
                        epoch: p.epoch,
                        tick: p.tick,
                        states,
                        objects,
                    };
                    inner.seq = seq;
                    inner.sent_states += sent.len();
                    inner.sent.insert(seq, sent);
                    self.batches_sent.fetch_add(1, Ordering::Relaxed);
                }
                Err(SendError::TooLarge { .. }) if chunk > 1 => chunk /= 2,
                Err(SendError::TooLarge { .. }) => return Drained::TooLarge,
                Err(SendError::QueueFull | SendError::Closed) => return Drained::Stopped,
            }
        }
        Drained::All
    }

    /// The coordinator confirmed every batch numbered up to `through`
    /// durable: their states are forgotten.
    pub fn ack(&self, through: u64) {
        let mut inner = self.lock();
        let done: Vec<u64> = inner.sent.range(..=through).map(|(&seq, _)| seq).collect();
        for seq in &done {
            if let Some(b) = inner.sent.remove(seq) {
                inner.sent_states -= b.len();
            }
        }
        self.batches_acked
            .fetch_add(done.len() as u64, Ordering::Relaxed);
    }

    /// The link that carried the unacknowledged batches is gone: their
    /// states go back to pending (where a newer state of the same avatar
    /// wins), to be sent again on the next link.
    pub fn requeue(&self) {
        let mut inner = self.lock();
        let sent = std::mem::take(&mut inner.sent);
        inner.sent_states = 0;
        if sent.is_empty() {
            return;
        }
        self.batches_resent
            .fetch_add(sent.len() as u64, Ordering::Relaxed);
        for b in sent.into_values() {
            let fence = inner.fence.get(&b.scene).copied().unwrap_or(0);
            let p = inner
                .pending
                .entry(b.scene.clone())
                .or_insert_with(|| Pending {
                    epoch: b.epoch,
                    tick: b.tick,
                    ..Pending::default()
                });
            if b.epoch < fence || b.epoch < p.epoch {
                self.discarded.fetch_add(b.len() as u64, Ordering::Relaxed);
                continue;
            }
            if b.epoch > p.epoch {
                p.states.clear();
                p.objects.clear();
                p.epoch = b.epoch;
            }
            p.tick = p.tick.max(b.tick);
            for s in b.states {
                match p.states.get_mut(&s.avatar) {
                    Some(old) if s.tick <= old.tick => {}
                    Some(old) => *old = s,
                    None => {
                        p.states.insert(s.avatar, s);
                    }
                }
            }
            for o in b.objects {
                match p.objects.get_mut(&o.key) {
                    Some(old) if o.tick <= old.tick => {}
                    Some(old) => *old = o,
                    None => {
                        p.objects.insert(o.key, o);
                    }
                }
            }
        }
        inner.pending.retain(|_, p| !p.is_empty());
        drop(inner);
        self.notify.notify_one();
    }

    /// `scene` was dropped as stale: its waiting states, sent or not, must
    /// never be written.
    pub fn discard(&self, scene: &str) {
        let mut inner = self.lock();
        let mut n = inner
            .pending
            .remove(scene)
            .map_or(0, |p| p.states.len() + p.objects.len());
        let gone: Vec<u64> = inner
            .sent
            .iter()
            .filter(|(_, b)| b.scene == scene)
            .map(|(&seq, _)| seq)
            .collect();
        for seq in gone {
            if let Some(b) = inner.sent.remove(&seq) {
                inner.sent_states -= b.len();
                n += b.len();
            }
        }
        self.discarded.fetch_add(n as u64, Ordering::Relaxed);
    }

    pub fn stats(&self) -> LinkSinkStats {
        let unacked = self.lock().sent_states as u64;
        LinkSinkStats {
            batches_in: self.batches_in.load(Ordering::Relaxed),
            batches_sent: self.batches_sent.load(Ordering::Relaxed),
            batches_acked: self.batches_acked.load(Ordering::Relaxed),
            batches_resent: self.batches_resent.load(Ordering::Relaxed),
            stale: self.stale.load(Ordering::Relaxed),
            discarded: self.discarded.load(Ordering::Relaxed),
            unacked_states: unacked,
            held_for_acks: self.held_for_acks.load(Ordering::Relaxed),
        }
    }
}

fn merge(p: &mut Pending, epoch: Epoch, batch: SaveBatch) {
    if epoch > p.epoch {
        // A newer placement of the scene on this server: what the older one
        // left is superseded by what the new one loaded and saves.
        p.states.clear();
        p.objects.clear();
        p.epoch = epoch;
    }
    p.tick = p.tick.max(batch.tick);
    for s in batch.states {
        p.states.insert(s.avatar, s);
    }
    for o in batch.objects {
        p.objects.insert(o.key, o);
    }
}

impl SaveSink for LinkSink {
    fn save(&self, b: EpochBatch) -> Result<(), SaveSinkError> {
        self.batches_in.fetch_add(1, Ordering::Relaxed);
        {
            let mut inner = self.lock();
            let scene = b.batch.scene.clone();
            let fence = inner.fence.get(&scene).copied().unwrap_or(0);
            if b.epoch < fence {
                self.stale.fetch_add(1, Ordering::Relaxed);
                return Err(SaveSinkError::StaleEpoch {
                    scene,
                    epoch: b.epoch,
                    current: fence,
                });
            }
            let p = inner.pending.entry(scene).or_insert_with(|| Pending {
                epoch: b.epoch,
                ..Pending::default()
            });
            merge(p, b.epoch, b.batch);
        }
        self.notify.notify_one();
        Ok(())
    }

    fn fence(&self, scene: &str, epoch: Epoch) {
        let mut inner = self.lock();
        let f = inner.fence.entry(scene.to_owned()).or_insert(0);
        *f = (*f).max(epoch);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn state(avatar: AvatarId, x: f32, tick: u64) -> PcState {
        PcState {
            game: Vec::new(),
            avatar,
            position: [x, 0.0],
            heading: 0.0,
            action: 0,
            mount: 0,
            online: true,
            tick,
        }
    }

    fn batch(scene: &str, tick: u64, states: Vec<PcState>) -> SaveBatch {
        SaveBatch {
            objects: Vec::new(),
            scene: scene.into(),
            tick,
            states,
        }
    }

    #[test]
    fn merges_newest_state_per_avatar_and_fences_old_epochs() {
        let sink = LinkSink::new();
        sink.fence("field", 2);
        sink.save(EpochBatch {
            epoch: 2,
            batch: batch("field", 10, vec![state(1, 1.0, 10), state(2, 2.0, 10)]),
        })
        .expect("saved");
        sink.save(EpochBatch {
            epoch: 2,
            batch: batch("field", 20, vec![state(1, 5.0, 20)]),
        })
        .expect("saved");
        let err = sink
            .save(EpochBatch {
                epoch: 1,
                batch: batch("field", 30, vec![state(1, 9.0, 30)]),
            })
            .expect_err("stale");
        assert!(matches!(err, SaveSinkError::StaleEpoch { current: 2, .. }));
        let inner = sink.lock();
        let p = &inner.pending["field"];
        assert_eq!(p.tick, 20);
        assert_eq!(p.states[&1].position, [5.0, 0.0]);
        assert_eq!(p.states[&2].position, [2.0, 0.0]);
        drop(inner);
        sink.discard("field");
        assert!(!sink.has_pending());
        assert_eq!(sink.stats().discarded, 2);
        assert_eq!(sink.stats().stale, 1);
    }

    /// Drains `sink` over a real loopback link whose sending side caps
    /// frames at `max_frame`; returns every save batch the other side got.
    fn drain_over_link(sink: &LinkSink, max_frame: usize) -> Vec<WireSaveBatch> {
        use tessera_link::{LinkConfig, connect, serve};
        use tessera_wire::Role;
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        rt.block_on(async {
            let (listener, addr) = tessera_link::bind("127.0.0.1:0").await.expect("bind");
            let mut accept = LinkConfig::new(Role::Coordinator, "coord", "sink-test-secret-0123");
            accept.accept_roles = vec![Role::SceneServer];
            let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
            let stop = tokio_util::sync::CancellationToken::new();
            let server = tokio::spawn(serve(
                listener,
                accept,
                move |mut link| {
                    let tx = tx.clone();
                    async move {
                        while let Some(LinkMsg::SaveBatch(b)) = link.recv().await {
                            let _ = tx.send(b);
                        }
                    }
                },
                stop.clone().cancelled_owned(),
            ));
            let mut cfg = LinkConfig::new(Role::SceneServer, "scene-1", "sink-test-secret-0123");
            cfg.max_frame = max_frame;
            let link = connect(&addr.to_string(), &cfg).await.expect("connect");
            let (sender, receiver) = link.split();
            sink.drain(&sender);
            // Closing waits for the peer to hang up, which it does once it
            // has read (and forwarded) everything.
            let link = tessera_link::Link::from_parts(sender, receiver);
            let _ = link.close().await;
            stop.cancel();
            let _ = server.await;
            let mut got = Vec::new();
            while let Ok(b) = rx.try_recv() {
                got.push(b);
            }
            got
        })
    }

    fn save(sink: &LinkSink, scene: &str, avatars: std::ops::Range<u64>) {
        sink.fence(scene, 1);
        let states = avatars.map(|a| state(a, a as f32, 7)).collect();
        sink.save(EpochBatch {
            epoch: 1,
            batch: batch(scene, 7, states),
        })
        .expect("saved");
    }

    #[test]
    fn a_large_scene_goes_in_chunks_and_every_state_arrives_once() {
        let sink = LinkSink::new();
        save(&sink, "field", 1..10_001);
        save(&sink, "town", 1..4);
        let got = drain_over_link(&sink, tessera_link::DEFAULT_MAX_FRAME);
        assert!(got.iter().all(|b| b.states.len() <= SAVE_CHUNK_STATES));
        let mut field: Vec<u64> = got
            .iter()
            .filter(|b| b.scene == "field")
            .flat_map(|b| b.states.iter().map(|s| s.avatar))
            .collect();
        field.sort_unstable();
        assert_eq!(field, (1..10_001).collect::<Vec<_>>());
        assert_eq!(got.iter().filter(|b| b.scene == "town").count(), 1);
        // Sent, but kept until the coordinator says they are durable.
        assert_eq!(sink.stats().unacked_states, 10_003);
        sink.ack(got.iter().map(|b| b.seq).max().expect("sent"));
        assert!(!sink.has_pending());
    }

    /// PC states' game fields and the scene's objects go out with the
    /// batches, in frames under the cap even when large, are kept until
    /// acked and sent again (the newest of each object) after a lost link.
    #[test]
    fn game_fields_and_objects_travel_and_are_kept_until_acked() {
        use tessera_sim::GameField;
        // Bytes that do not pack: bitcode squeezes repeated ones.
        let field = |n: usize| GameField {
            name: "bag".into(),
            version: 1,
            bytes: (0..n as u64)
                .map(|i| (i.wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 56) as u8)
                .collect(),
        };
        let object = |key: u64, tick: u64| ObjectState {
            key,
            tick,
            game: vec![field(8)],
        };
        let sink = LinkSink::new();
        sink.fence("field", 1);
        let states = (1..601)
            .map(|a| PcState {
                game: vec![field(1000)],
                ..state(a, 1.0, 7)
            })
            .collect();
        let objects = (1..101).map(|k| object(k, 7)).collect();
        sink.save(EpochBatch {
            epoch: 1,
            batch: SaveBatch {
                scene: "field".into(),
                tick: 7,
                states,
                objects,
            },
        })
        .expect("saved");
        let first = drain_over_link(&sink, 256 * 1024);
        let sizes: Vec<(usize, usize)> = first
            .iter()
            .map(|b| (b.states.len(), b.objects.len()))
            .collect();
        assert!(
            first.len() > 2,
            "600 KB of fields split under the frame cap: {sizes:?} {:?}",
            sink.stats()
        );
        let n: usize = first.iter().map(|b| b.states.len()).sum();
        assert_eq!(n, 600);
        assert!(
            first
                .iter()
                .flat_map(|b| &b.states)
                .all(|s| s.game[0].bytes.len() == 1000)
        );
        let keys: Vec<u64> = first
            .iter()
            .flat_map(|b| b.objects.iter().map(|o| o.key))
            .collect();
        assert_eq!(keys, (1..101).collect::<Vec<_>>());
        assert_eq!(sink.stats().unacked_states, 700);

        // Lost link: object 5 changed meanwhile; the newest goes again.
        sink.save(EpochBatch {
            epoch: 1,
            batch: SaveBatch {
                scene: "field".into(),
                tick: 9,
                objects: vec![object(5, 9)],
                ..SaveBatch::default()
            },
        })
        .expect("saved");
        sink.requeue();
        let second = drain_over_link(&sink, 256 * 1024);
        let again: BTreeMap<u64, u64> = second
            .iter()
            .flat_map(|b| b.objects.iter().map(|o| (o.key, o.tick)))
            .collect();
        assert_eq!(again.len(), 100);
        assert_eq!(again[&5], 9);
        sink.ack(second.iter().map(|b| b.seq).max().expect("sent"));
        assert!(!sink.has_pending());
    }

    fn positions(got: &[WireSaveBatch]) -> BTreeMap<AvatarId, (u64, f32)> {
        got.iter()
            .flat_map(|b| b.states.iter().map(|s| (s.avatar, (s.tick, s.position[0]))))
            .collect()
    }

    /// A state handed to the link is not forgotten: it waits for the
    /// coordinator's ack, and goes out again on the next link if the one
    /// that carried it is lost first (a newer state of the same avatar
    /// winning over it).
    #[test]
    fn states_are_kept_until_acked_and_sent_again_after_a_lost_link() {
        let sink = LinkSink::new();
        save(&sink, "field", 1..4);
        let first = drain_over_link(&sink, tessera_link::DEFAULT_MAX_FRAME);
        assert_eq!(positions(&first).len(), 3);
        assert!(sink.has_pending(), "sent is not durable");
        assert_eq!(sink.stats().unacked_states, 3);

        // Avatar 1 moves on while the link is down; the link never acked.
        sink.save(EpochBatch {
            epoch: 1,
            batch: batch("field", 9, vec![state(1, 50.0, 9)]),
        })
        .expect("saved");
        sink.requeue();
        let second = drain_over_link(&sink, tessera_link::DEFAULT_MAX_FRAME);
        let got = positions(&second);
        assert_eq!(
            got,
            BTreeMap::from([(1, (9, 50.0)), (2, (7, 2.0)), (3, (7, 3.0))]),
            "everything unconfirmed is sent again, the newest state of each avatar"
        );
        let last_first = first.iter().map(|b| b.seq).max().expect("sent");
        assert!(second.iter().all(|b| b.seq > last_first), "fresh numbers");

        // A stale ack (from the first link's numbers) confirms nothing new.
        sink.ack(last_first);
        assert_eq!(sink.stats().unacked_states, 3);
        sink.ack(second.iter().map(|b| b.seq).max().expect("sent"));
        assert!(!sink.has_pending());
        let s = sink.stats();
        assert_eq!(
            (s.batches_resent, s.batches_acked, s.unacked_states),
            (1, 1, 0)
        );
    }

    /// What waits for acks is bounded: past the cap nothing more is sent,
    /// and new states wait merged until acks make room.
    #[test]
    fn unacknowledged_states_are_capped() {
        let sink = LinkSink::new();
        let total = MAX_UNACKED_STATES as u64 + 10;
        save(&sink, "field", 1..total + 1);
        let first = drain_over_link(&sink, tessera_link::DEFAULT_MAX_FRAME);
        assert_eq!(positions(&first).len(), MAX_UNACKED_STATES);
        let s = sink.stats();
        assert_eq!(s.unacked_states, MAX_UNACKED_STATES as u64);
        assert!(s.held_for_acks >= 1);
        sink.ack(first.iter().map(|b| b.seq).max().expect("sent"));
        let rest = drain_over_link(&sink, tessera_link::DEFAULT_MAX_FRAME);
        assert_eq!(positions(&rest).len(), 10);
    }

    /// A scene is held (not released for a move) while any of its states
    /// waits to be sent or acknowledged; other scenes do not hold it up.
    #[test]
    fn a_scene_is_held_until_every_state_of_it_is_acknowledged() {
        let sink = LinkSink::new();
        assert!(!sink.holds("field"));
        save(&sink, "field", 1..3);
        save(&sink, "town", 1..2);
        assert!(sink.holds("field"), "pending");
        let got = drain_over_link(&sink, tessera_link::DEFAULT_MAX_FRAME);
        assert!(sink.holds("field"), "sent, not acknowledged");
        let field = got.iter().find(|b| b.scene == "field").expect("field");
        let town = got.iter().find(|b| b.scene == "town").expect("town");
        assert!(field.seq < town.seq, "scenes drain in name order");
        sink.ack(field.seq);
        assert!(!sink.holds("field") && sink.holds("town"));
        sink.ack(town.seq);
        assert!(!sink.holds("field") && !sink.holds("town"));
    }

    /// A scene dropped as stale forgets its states, sent or not.
    #[test]
    fn discarding_a_scene_forgets_its_unacknowledged_states() {
        let sink = LinkSink::new();
        save(&sink, "field", 1..3);
        save(&sink, "town", 1..2);
        drain_over_link(&sink, tessera_link::DEFAULT_MAX_FRAME);
        sink.discard("field");
        let s = sink.stats();
        assert_eq!((s.unacked_states, s.discarded), (1, 2));
    }

    #[test]
    fn a_batch_too_large_for_the_link_does_not_hold_up_the_others() {
        let sink = LinkSink::new();
        // Its name alone is over the 256-byte frame cap: never sendable.
        let huge = "a".repeat(300);
        save(&sink, &huge, 1..3);
        save(&sink, "town", 1..200);
        let got = drain_over_link(&sink, 256);
        let town: usize = got
            .iter()
            .filter(|b| b.scene == "town")
            .map(|b| b.states.len())
            .sum();
        assert_eq!(town, 199, "town's states all arrive, in small chunks");
        assert!(got.iter().all(|b| b.scene != huge));
        assert!(sink.has_pending(), "the unsendable scene waits, not lost");
    }
}
