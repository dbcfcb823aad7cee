//! [`LinkSink`]: save batches from the scene threads to the data service over
//! the coordinator link.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, MutexGuard, PoisonError};

use tessera_sim::protocol::AvatarId;
use tessera_sim::{PcState, SaveBatch};
use tokio::sync::Notify;

use tessera_host::{EpochBatch, SaveSink, SaveSinkError};
use tessera_link::LinkSender;
use tessera_wire::{Epoch, LinkMsg, WireSaveBatch};

/// The states of one scene not yet handed to the link.
#[derive(Debug, Default)]
struct Pending {
    epoch: Epoch,
    tick: u64,
    /// Newest state per avatar: a later batch of the same placement replaces
    /// an earlier state of the same avatar, so memory is bounded by the
    /// scene's avatars however long the link is down.
    states: BTreeMap<AvatarId, PcState>,
}

#[derive(Debug, Default)]
struct Inner {
    fence: BTreeMap<String, Epoch>,
    pending: BTreeMap<String, Pending>,
}

/// Counters of a [`LinkSink`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize)]
pub struct LinkSinkStats {
    /// Batches the scenes handed in.
    pub batches_in: u64,
    /// Batches sent to the data service.
    pub batches_sent: u64,
    /// Batches refused for a stale epoch (below the scene's fence).
    pub stale: u64,
    /// States discarded because their placement was dropped as stale.
    pub discarded: u64,
}

/// A [`SaveSink`] that never blocks the scene thread: batches are merged per
/// scene (newest state per avatar) and handed to the coordinator link by
/// [`LinkSink::drain`], which the server's link task calls whenever
/// [`LinkSink::notified`] fires. While the link is down nothing is lost:
/// states wait, merged, until it is back.
#[derive(Debug, Default)]
pub struct LinkSink {
    inner: Mutex<Inner>,
    notify: Notify,
    batches_in: AtomicU64,
    batches_sent: AtomicU64,
    stale: AtomicU64,
    discarded: AtomicU64,
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

    /// Whether states are waiting.
    pub fn has_pending(&self) -> bool {
        !self.lock().pending.is_empty()
    }

    /// Sends every waiting scene's states over `link` (one message per
    /// scene). What does not fit the link's queue stays pending.
    pub fn drain(&self, link: &LinkSender) {
        let mut inner = self.lock();
        let scenes: Vec<String> = inner.pending.keys().cloned().collect();
        for scene in scenes {
            let Some(p) = inner.pending.get(&scene) else {
                continue;
            };
            let msg = LinkMsg::SaveBatch(WireSaveBatch {
                scene: scene.clone(),
                epoch: p.epoch,
                tick: p.tick,
                states: p.states.values().map(|s| (*s).into()).collect(),
            });
            if link.try_send(&msg).is_err() {
                return;
            }
            inner.pending.remove(&scene);
            self.batches_sent.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// `scene` was dropped as stale: its waiting states must never be written.
    pub fn discard(&self, scene: &str) {
        if let Some(p) = self.lock().pending.remove(scene) {
            self.discarded
                .fetch_add(p.states.len() as u64, Ordering::Relaxed);
        }
    }

    pub fn stats(&self) -> LinkSinkStats {
        LinkSinkStats {
            batches_in: self.batches_in.load(Ordering::Relaxed),
            batches_sent: self.batches_sent.load(Ordering::Relaxed),
            stale: self.stale.load(Ordering::Relaxed),
            discarded: self.discarded.load(Ordering::Relaxed),
        }
    }
}

fn merge(p: &mut Pending, epoch: Epoch, batch: SaveBatch) {
    if epoch > p.epoch {
        // A newer placement of the scene on this server: what the older one
        // left is superseded by what the new one loaded and saves.
        p.states.clear();
        p.epoch = epoch;
    }
    p.tick = p.tick.max(batch.tick);
    for s in batch.states {
        p.states.insert(s.avatar, s);
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
}
