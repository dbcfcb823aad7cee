//! Where a scene's save batches go: a [`SaveSink`]. Batches carry the
//! placement epoch so a sink can refuse a stale writer.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, PoisonError};

use tessera_persistence as db;
use tessera_sim::SaveBatch;

use tessera_wire::Epoch;

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

    /// `scene` is being placed under `epoch` (called by
    /// [`super::SceneHost::place`] before the runner starts, on the caller's
    /// thread). A fencing sink refuses older epochs from now on, before the
    /// new placement has saved anything. Default: nothing.
    fn fence(&self, scene: &str, epoch: Epoch) {
        let _ = (scene, epoch);
    }
}

/// Raises `scene`'s fence to `epoch`; `Err(current)` if `epoch` is below it.
fn raise(fence: &mut BTreeMap<String, Epoch>, scene: &str, epoch: Epoch) -> Result<(), Epoch> {
    match fence.get_mut(scene) {
        Some(current) if epoch < *current => Err(*current),
        Some(current) => {
            *current = epoch;
            Ok(())
        }
        None => {
            fence.insert(scene.to_owned(), epoch);
            Ok(())
        }
    }
}

/// The local data service: hands batches to a [`tessera_persistence::Writer`]
/// (the embedded `tessera up` case and a scene server co-located with redb).
///
/// Scene names are mapped to the store's [`db::SceneId`] by a function the
/// caller supplies (e.g. from `Store::scene_by_name`, resolved once at
/// placement). The sink also **fences epochs**: per scene it remembers the
/// highest epoch it has seen — in a batch, or announced by
/// [`SaveSink::fence`] when the scene is placed — and refuses any batch
/// below it, so a stale host of a scene sharing this writer can never write
/// over the current one.
///
/// **Known limit** (persistence side): the `Writer` merges pending states
/// "newest tick wins", and ticks restart at 1 with every placement. A new
/// placement's state merged in the *same* commit round as an older
/// placement's state of the same avatar with a higher tick loses to it. Load
/// the scene after `Writer::flush` (so nothing older is pending) to keep the
/// window to batches the old host submits during the load; the full fix is
/// ordering by `(epoch, tick)` in the writer.
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
        states: batch.states.iter().map(|s| to_db_state(s, scene)).collect(),
        objects: batch.objects.iter().map(to_db_object).collect(),
    }
}

fn to_db_fields(game: &[tessera_sim::GameField]) -> Vec<db::GameField> {
    game.iter()
        .map(|f| db::GameField {
            name: f.name.to_string(),
            version: f.version,
            bytes: f.bytes.to_vec(),
        })
        .collect()
}

fn from_db_fields(game: Vec<db::GameField>) -> Vec<tessera_sim::GameField> {
    game.into_iter()
        .map(|f| tessera_sim::GameField {
            name: f.name.into(),
            version: f.version,
            bytes: f.bytes.into(),
        })
        .collect()
}

/// The store's form of one scene object.
pub fn to_db_object(o: &tessera_sim::ObjectState) -> db::ObjectState {
    db::ObjectState {
        key: o.key,
        tick: o.tick,
        game: to_db_fields(&o.game),
    }
}

/// The scene core's form of objects loaded from the store.
pub fn from_db_objects(
    objects: impl IntoIterator<Item = db::ObjectState>,
) -> Vec<tessera_sim::ObjectState> {
    objects
        .into_iter()
        .map(|o| tessera_sim::ObjectState {
            key: o.key,
            tick: o.tick,
            game: from_db_fields(o.game),
        })
        .collect()
}

/// The store's form of one PC state of `scene`.
pub fn to_db_state(s: &tessera_sim::PcState, scene: db::SceneId) -> db::PcState {
    db::PcState {
        avatar: s.avatar,
        scene,
        position: s.position,
        heading: s.heading,
        action: s.action,
        mount: s.mount,
        online: s.online,
        tick: s.tick,
        game: to_db_fields(&s.game),
    }
}

/// The scene core's form of states loaded from the store (for
/// [`super::SceneHost::place`]).
pub fn from_db_states(states: impl IntoIterator<Item = db::PcState>) -> Vec<tessera_sim::PcState> {
    states
        .into_iter()
        .map(|s| tessera_sim::PcState {
            avatar: s.avatar,
            position: s.position,
            heading: s.heading,
            action: s.action,
            mount: s.mount,
            online: s.online,
            tick: s.tick,
            game: from_db_fields(s.game),
        })
        .collect()
}

impl SaveSink for WriterSink {
    fn save(&self, b: EpochBatch) -> Result<(), SaveSinkError> {
        let scene = &b.batch.scene;
        raise(
            &mut self.fence.lock().unwrap_or_else(PoisonError::into_inner),
            scene,
            b.epoch,
        )
        .map_err(|current| SaveSinkError::StaleEpoch {
            scene: scene.clone(),
            epoch: b.epoch,
            current,
        })?;
        let id =
            (self.scene_id)(scene).ok_or_else(|| SaveSinkError::UnknownScene(scene.clone()))?;
        self.writer.submit_at(b.epoch, to_db_batch(&b.batch, id));
        Ok(())
    }

    fn fence(&self, scene: &str, epoch: Epoch) {
        let _ = raise(
            &mut self.fence.lock().unwrap_or_else(PoisonError::into_inner),
            scene,
            epoch,
        );
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
        if let Err(current) = raise(&mut inner.fence, &b.batch.scene, b.epoch) {
            inner.refused += 1;
            return Err(SaveSinkError::StaleEpoch {
                scene: b.batch.scene,
                epoch: b.epoch,
                current,
            });
        }
        inner.batches.push(b);
        Ok(())
    }

    fn fence(&self, scene: &str, epoch: Epoch) {
        let _ = raise(&mut self.lock().fence, scene, epoch);
    }
}
