//! Where a scene's save batches go: a [`SaveSink`]. Batches carry the
//! placement epoch so a sink can refuse a stale writer.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, PoisonError};

use tessera_persistence as db;
use tessera_sim::SaveBatch;

use crate::wire::Epoch;

/// One save batch of one scene, tagged with the placement epoch it was
/// written under.
#[derive(Debug, Clone, PartialEq)]
pub struct EpochBatch {
    pub epoch: Epoch,
    pub batch: SaveBatch,
}

/// Why a sink refused a batch. The runner counts and logs it; the tick goes on.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SaveSinkError {
    #[error("scene {0:?} is unknown to the data service")]
    UnknownScene(String),
    #[error("stale epoch {epoch} for scene {scene:?} (already saw {current})")]
    StaleEpoch {
        scene: String,
        epoch: Epoch,
        current: Epoch,
    },
    #[error("save sink closed")]
    Closed,
}

/// The destination of save batches.
///
/// Called on the scene's own thread, right after the tick that produced the
/// batch. **Contract:** `save` must not block on I/O or wait for a commit:
/// queue, coalesce or forward, and return (the persistence `Writer` merges
/// into an overflow buffer rather than wait). A returned error is counted
/// in the scene's load report; the batch is then lost — as a crash would
/// lose it — so a sink should only refuse what must not be written.
pub trait SaveSink: Send + Sync + 'static {
    fn save(&self, batch: EpochBatch) -> Result<(), SaveSinkError>;
}

/// The local data service: hands batches to a [`tessera_persistence::Writer`]
/// (the embedded `tessera up` case and a scene server co-located with redb).
///
/// Scene names are mapped to the store's [`db::SceneId`] by a function the
/// caller supplies (e.g. from `Store::scene_by_name`, resolved once at
/// placement). The sink also **fences epochs**: per scene it remembers the
/// highest epoch it has seen and refuses any batch below it, so two hosts of
/// one scene in one process can never interleave their writes.
pub struct WriterSink {
    writer: Arc<db::Writer>,
    scene_id: Box<dyn Fn(&str) -> Option<db::SceneId> + Send + Sync>,
    fence: Mutex<BTreeMap<String, Epoch>>,
}

impl std::fmt::Debug for WriterSink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WriterSink").finish_non_exhaustive()
    }
}

impl WriterSink {
    pub fn new(
        writer: Arc<db::Writer>,
        scene_id: impl Fn(&str) -> Option<db::SceneId> + Send + Sync + 'static,
    ) -> Self {
        Self {
            writer,
            scene_id: Box::new(scene_id),
            fence: Mutex::new(BTreeMap::new()),
        }
    }

    pub fn writer(&self) -> &Arc<db::Writer> {
        &self.writer
    }
}

/// The store's form of a scene's batch.
pub fn to_db_batch(batch: &SaveBatch, scene: db::SceneId) -> db::SaveBatch {
    db::SaveBatch {
        scene,
        states: batch
            .states
            .iter()
            .map(|s| db::PcState {
                avatar: s.avatar,
                scene,
                position: s.position,
                heading: s.heading,
                action: s.action,
                mount: s.mount,
                online: s.online,
                tick: s.tick,
            })
            .collect(),
    }
}

impl SaveSink for WriterSink {
    fn save(&self, b: EpochBatch) -> Result<(), SaveSinkError> {
        let scene = &b.batch.scene;
        {
            let mut fence = self.fence.lock().unwrap_or_else(PoisonError::into_inner);
            let current = fence.entry(scene.clone()).or_insert(b.epoch);
            if b.epoch < *current {
                return Err(SaveSinkError::StaleEpoch {
                    scene: scene.clone(),
                    epoch: b.epoch,
                    current: *current,
                });
            }
            *current = b.epoch;
        }
        let id =
            (self.scene_id)(scene).ok_or_else(|| SaveSinkError::UnknownScene(scene.clone()))?;
        self.writer.submit(to_db_batch(&b.batch, id));
        Ok(())
    }
}

/// A sink that records every batch in memory: for tests and tools. It
/// refuses (and records nothing for) a batch whose epoch is below the
/// highest it has seen for the scene, like [`WriterSink`].
#[derive(Debug, Default, Clone)]
pub struct MemorySink {
    inner: Arc<Mutex<MemoryInner>>,
}

#[derive(Debug, Default)]
struct MemoryInner {
    batches: Vec<EpochBatch>,
    fence: BTreeMap<String, Epoch>,
    refused: u64,
}

impl MemorySink {
    pub fn new() -> Self {
        Self::default()
    }

    /// Every accepted batch, in arrival order.
    pub fn batches(&self) -> Vec<EpochBatch> {
        self.lock().batches.clone()
    }

    /// Batches refused as stale.
    pub fn refused(&self) -> u64 {
        self.lock().refused
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, MemoryInner> {
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl SaveSink for MemorySink {
    fn save(&self, b: EpochBatch) -> Result<(), SaveSinkError> {
        let mut inner = self.lock();
        let current = *inner.fence.entry(b.batch.scene.clone()).or_insert(b.epoch);
        if b.epoch < current {
            inner.refused += 1;
            return Err(SaveSinkError::StaleEpoch {
                scene: b.batch.scene,
                epoch: b.epoch,
                current,
            });
        }
        inner.fence.insert(b.batch.scene.clone(), b.epoch);
        inner.batches.push(b);
        Ok(())
    }
}
