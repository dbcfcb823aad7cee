//! Effects that need the disk, carried out off the lock.
//!
//! Three effects wait on redb: storing an epoch (`PersistEpoch`), reading
//! a scene's saved states for a placement (`PlaceScene`: a writer flush,
//! then a load), and moving an avatar to its portal's target with its
//! arrival state (`PersistAvatarScene`: one transaction). Under the lock,
//! [`Core::apply`] queues every batch of effects on one ordered backlog and
//! carries them out up to the first that needs the disk; that one becomes an
//! [`IoJob`] for the data thread, which runs it **without the lock**, then
//! locks again to hand back the [`IoDone`] and go on with the backlog. While
//! a job is out, later effects wait behind it, so every message still
//! leaves in the order the cluster state decided (a `PlaceScene` before the
//! `AttachAt`s that follow it, an epoch durable before anything carrying
//! it). Only the lock is free meanwhile: heartbeats, logins, status and
//! save batches go on.
//!
//! On its way back a job re-checks the world: a placement superseded while
//! its states were read is not sent (the newer one has its own effects).

use std::sync::mpsc::{Receiver, SyncSender, TrySendError, sync_channel};
use std::sync::{Arc, Weak};
use std::thread::JoinHandle;

use tessera_cluster::{Effect, NodeId};
use tessera_persistence::{self as db, Store, Writer};
use tessera_sim::protocol::AvatarId;
use tessera_wire::{Epoch, WireObjectState, WirePcState};
use tracing::{debug, info, warn};

use super::data::{LoadStatesError, db_state};
use super::{Core, SharedCore};

/// Batches of effects that may wait behind a disk job at most; past it a
/// new batch is dropped and counted (`CoordinatorStats::effects_dropped`).
pub(crate) const MAX_BACKLOG_BATCHES: usize = 16_384;

/// Disk work taken out of the lock, with what it needs.
pub(super) enum IoJob {
    PersistEpoch {
        scene: String,
        epoch: Epoch,
    },
    LoadScene {
        server: NodeId,
        scene: String,
        epoch: Epoch,
        id: Option<db::SceneId>,
        writer: Option<Arc<Writer>>,
    },
    MoveAvatar {
        avatar: AvatarId,
        scene: String,
        id: db::SceneId,
        arrival: Option<db::PcState>,
        writer: Option<Arc<Writer>>,
    },
}

/// What a job found, back under the lock.
pub(super) enum IoDone {
    PersistEpoch {
        scene: String,
        epoch: Epoch,
        result: Result<(), db::StoreError>,
    },
    LoadScene {
        server: NodeId,
        scene: String,
        epoch: Epoch,
        result: Result<Loaded, LoadStatesError>,
    },
    MoveAvatar {
        avatar: AvatarId,
        scene: String,
        result: Result<(), String>,
    },
}

impl IoJob {
    /// Does the disk work. Blocks: runs on the data thread, never under the lock.
    fn run(self, store: &Store) -> IoDone {
        match self {
            IoJob::PersistEpoch { scene, epoch } => {
                let result = store.set_scene_epoch(&scene, epoch);
                IoDone::PersistEpoch {
                    scene,
                    epoch,
                    result,
                }
            }
            IoJob::LoadScene {
                server,
                scene,
                epoch,
                id,
                writer,
            } => {
                let result = load_states(store, writer.as_deref(), &scene, id);
                IoDone::LoadScene {
                    server,
                    scene,
                    epoch,
                    result,
                }
            }
            IoJob::MoveAvatar {
                avatar,
                scene,
                id,
                arrival,
                writer,
            } => {
                // Flushed first: a state of the avatar's from an earlier
                // stay in `scene`, still in the writer, must not land over
                // the arrival state after the move.
                let result = flush(writer.as_deref())
                    .map_err(|e| e.to_string())
                    .and_then(|()| {
                        store
                            .move_avatar(avatar, id, arrival.as_ref())
                            .map_err(|e| e.to_string())
                    });
                IoDone::MoveAvatar {
                    avatar,
                    scene,
                    result,
                }
            }
        }
    }
}

/// A scene's last flushed PC states and objects, for its placement.
pub(super) type Loaded = (Vec<WirePcState>, Vec<WireObjectState>);

fn flush(writer: Option<&Writer>) -> Result<(), db::writer::FlushError> {
    writer
        .ok_or(db::writer::FlushError::Stopped)
        .and_then(Writer::flush)
}

/// A scene's last flushed states: the writer is flushed first, so every
/// batch accepted before this placement was decided is in (and none from an
/// older placement is accepted since: the epoch fence). A failed flush or
/// load is an error, never an empty scene: placing it empty would overwrite
/// its players' real states with the ones they get on attach.
fn load_states(
    store: &Store,
    writer: Option<&Writer>,
    scene: &str,
    id: Option<db::SceneId>,
) -> Result<Loaded, LoadStatesError> {
    flush(writer).map_err(LoadStatesError::Flush)?;
    let id = id.ok_or_else(|| LoadStatesError::UnknownScene(scene.to_owned()))?;
    let states = store.load_scene(id).map_err(LoadStatesError::Load)?;
    let objects = store
        .load_scene_objects(id)
        .map_err(LoadStatesError::Load)?;
    let states = tessera_host::from_db_states(states)
        .into_iter()
        .map(Into::into)
        .collect();
    let objects = tessera_host::from_db_objects(objects)
        .into_iter()
        .map(Into::into)
        .collect();
    Ok((states, objects))
}

/// The data thread's end: a wake-up when the backlog has a job, and the
/// thread to join at shutdown.
pub(super) struct DataThread {
    wake: SyncSender<()>,
    thread: Option<JoinHandle<()>>,
}

impl DataThread {
    /// Starts the thread over `store`; it reaches the core through `core`
    /// (weak: the core owns this end, and dropping it ends the thread).
    pub(crate) fn spawn(store: Arc<Store>, core: Weak<SharedCore>) -> std::io::Result<Self> {
        let (wake, woken) = sync_channel(1);
        let span = tracing::Span::current();
        // What it carries out may spawn tasks (a placement's chunks stream
        // from a task): it runs inside the caller's runtime, when there is one.
        let rt = tokio::runtime::Handle::try_current().ok();
        let thread = std::thread::Builder::new()
            .name("tessera-data".into())
            .spawn(move || {
                let _rt = rt.as_ref().map(|rt| rt.enter());
                span.in_scope(|| run(&store, &core, &woken))
            })?;
        Ok(Self {
            wake,
            thread: Some(thread),
        })
    }

    /// Makes sure the thread looks at the backlog (a wake-up already
    /// waiting does).
    pub(super) fn wake(&self) {
        match self.wake.try_send(()) {
            Ok(()) | Err(TrySendError::Full(())) => {}
            Err(TrySendError::Disconnected(())) => warn!("the data thread has stopped"),
        }
    }

    /// Stops the thread: returns its handle to join, off the lock.
    pub(super) fn stop(self) -> Option<JoinHandle<()>> {
        let Self { wake, mut thread } = self;
        drop(wake);
        thread.take()
    }
}

/// The data thread: takes the backlog's job, runs it off the lock, hands
/// back what it found; until the core is gone or stopped.
fn run(store: &Store, core: &Weak<SharedCore>, woken: &Receiver<()>) {
    while woken.recv().is_ok() {
        loop {
            let Some(shared) = core.upgrade() else {
                return;
            };
            let Some(job) = shared.lock().take_io() else {
                break;
            };
            let done = job.run(store);
            shared.lock().io_done(done);
        }
    }
}

/// What carrying out one effect came to.
pub(super) enum Step {
    Done,
    /// A durable write failed: the rest of the effect's batch is dropped.
    NotDurable,
    /// The effect needs the disk: the backlog waits for this job.
    Io(IoJob),
}

impl Core {
    /// Carries out effects in order, after any still waiting: up to the
    /// first that needs the disk now, the rest once the data thread has
    /// done it. A failed durable write drops the rest of its batch.
    pub(crate) fn apply(&mut self, effects: Vec<Effect>) {
        if effects.is_empty() {
            return;
        }
        if self.backlog.len() >= MAX_BACKLOG_BATCHES {
            // A stuck disk: like a send that does not fit a link's queue,
            // what is dropped is reconciled (placed again after the
            // heartbeat timeout, attached again by the next sync).
            self.stats.effects_dropped += effects.len() as u64;
            warn!(
                effects = effects.len(),
                "effects dropped: too many wait behind the disk"
            );
            return;
        }
        self.backlog.push_back(effects.into());
        if self.io.is_none() {
            self.run_backlog();
        }
    }

    /// Carries out the backlog until it is empty or a job is out.
    fn run_backlog(&mut self) {
        while let Some(batch) = self.backlog.front_mut() {
            let Some(effect) = batch.pop_front() else {
                self.backlog.pop_front();
                continue;
            };
            match self.apply_one(effect) {
                Step::Done => {}
                Step::NotDurable => {
                    self.stats.persist_errors += 1;
                    self.backlog.pop_front();
                }
                Step::Io(job) => {
                    // The batch stays at the front (even if now empty) so
                    // that a failure drops the rest of this batch only.
                    self.io = Some(IoState::Queued(job));
                    if let Some(d) = &self.data {
                        d.wake();
                    }
                    return;
                }
            }
        }
    }

    /// The job waiting for the data thread, if any (it is then out).
    fn take_io(&mut self) -> Option<IoJob> {
        match self.io.take() {
            Some(IoState::Queued(job)) => {
                self.io = Some(IoState::Out);
                Some(job)
            }
            other => {
                self.io = other;
                None
            }
        }
    }

    /// The data thread did a job: its result is carried out, then the rest
    /// of the backlog.
    fn io_done(&mut self, done: IoDone) {
        self.io = None;
        let ok = match done {
            IoDone::PersistEpoch {
                scene,
                epoch,
                result,
            } => result.map_err(|e| {
                warn!(%scene, epoch, error = %e, "cannot persist epoch; placement held back");
            }),
            IoDone::LoadScene {
                server,
                scene,
                epoch,
                result,
            } => {
                self.placement_loaded(server, scene, epoch, result);
                Ok(())
            }
            IoDone::MoveAvatar {
                avatar,
                scene,
                result,
            } => result.map_err(|e| {
                warn!(avatar, %scene, error = %e, "cannot persist the avatar's scene and arrival state");
            }),
        };
        if ok.is_err() {
            self.stats.persist_errors += 1;
            self.backlog.pop_front();
        }
        self.run_backlog();
    }

    /// `PersistEpoch`: stored by the data thread before anything after it.
    pub(super) fn persist_epoch(&mut self, scene: String, epoch: Epoch) -> Step {
        Step::Io(IoJob::PersistEpoch { scene, epoch })
    }

    /// `PlaceScene`: its states are read by the data thread, unless the
    /// placement is already superseded (then nothing is read or sent).
    pub(super) fn place_scene(&mut self, server: NodeId, scene: String, epoch: Epoch) -> Step {
        if self.cluster.placement(&scene) != Some((server, epoch)) {
            debug!(%scene, epoch, %server, "placement superseded before its states were read");
            return Step::Done;
        }
        let id = self.scene_ids.get(&scene).copied();
        Step::Io(IoJob::LoadScene {
            server,
            scene,
            epoch,
            id,
            writer: self.writer.clone(),
        })
    }

    /// A placement's states were read (or not): it is sent if still current.
    fn placement_loaded(
        &mut self,
        server: NodeId,
        scene: String,
        epoch: Epoch,
        result: Result<Loaded, LoadStatesError>,
    ) {
        let (states, objects) = match result {
            Ok(loaded) => loaded,
            Err(e) => {
                self.stats.placements_refused += 1;
                warn!(%scene, epoch, %server, error = %e, "placement held back: the scene's saved states cannot be read");
                return;
            }
        };
        if self.cluster.placement(&scene) != Some((server, epoch)) {
            debug!(%scene, epoch, %server, "placement superseded while its states were read");
            return;
        }
        self.place_loaded(server, scene, epoch, states, objects);
    }

    /// `PersistAvatarScene`: the avatar's new scene and the state it arrives
    /// with, in one transaction by the data thread.
    pub(super) fn persist_avatar_scene(&mut self, avatar: AvatarId, scene: String) -> Step {
        let Some(&id) = self.scene_ids.get(&scene) else {
            return Step::NotDurable;
        };
        let arrival = self.arrival_states.get(&avatar).map(|st| db_state(id, st));
        Step::Io(IoJob::MoveAvatar {
            avatar,
            scene,
            id,
            arrival,
            writer: self.writer.clone(),
        })
    }

    /// Effects waiting behind a disk job.
    pub(crate) fn backlog_len(&self) -> usize {
        self.backlog
            .iter()
            .map(std::collections::VecDeque::len)
            .sum()
    }
}

/// Where the backlog's disk job is.
pub(super) enum IoState {
    /// Waiting for the data thread to take it.
    Queued(IoJob),
    /// Taken: the data thread runs it.
    Out,
}

/// Logs what shutdown leaves undone.
pub(super) fn log_left(core: &Core) {
    let left = core.backlog_len();
    if left > 0 {
        info!(effects = left, "effects left undone at shutdown");
    }
}
