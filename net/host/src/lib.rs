//! # tessera-host — the scene host
//!
//! The part of a scene server that runs the scenes placed on it: scene
//! threads, the fixed-step pacer, bounded command and output queues, save
//! sinks.
//!
//! **API Boundary.** This crate owns threads and queues, not the network:
//! it must never open a socket, speak a link protocol or decide placement
//! (the networked scene server does), and nothing it owns may block a tick.
//!
//! A [`SceneHost`] holds one [`SceneRunner`] per hosted scene, keyed by scene
//! name. Each runner owns one [`tessera_sim::SceneWorld`] on its **own OS
//! thread** (the tick is CPU-bound and must never stall the tokio runtime)
//! and ticks it on a fixed-step schedule ([`pacer::Pacer`]) read from an
//! injectable [`Clock`]. Around the world:
//!
//! ```text
//!  networking side ──command()──▶ bounded queue ──▶ scene thread ──tick()──▶ OutputQueue (packets, events) ──▶ networking side
//!                                                       │
//!                                                       ├──▶ SaveSink (save batches + epoch; Writer or link)
//!                                                       └──▶ LoadReport (population, p99, late/skip, drops)
//! ```
//!
//! # What the networked scene server must know
//!
//! * **Placement** ([`SceneHost::place`]) is non-blocking: the world is built
//!   on the new thread. Report `SceneReady` once [`LoadReport::phase`] is
//!   [`RunnerPhase::Running`]. The PC states loaded for the scene are kept by the
//!   runner as **offline** avatars (the design: offline avatars stay in their
//!   scene, invisible); an `Attach` for such an avatar that carries no state
//!   is completed with the kept state, and a `Detached` event refreshes it, so
//!   a re-attach during the same hosting resumes where the avatar left.
//! * **Commands** ([`SceneHost::command`]) never block: a full queue refuses
//!   with [`CommandError::Full`] and counts it. Commands are applied at the
//!   start of the next tick, in order.
//! * **Outputs** ([`SceneHost::output`]): one [`TickBatch`] per tick that
//!   produced packets or events, in a bounded [`OutputQueue`] per scene. A
//!   full queue drops the **oldest packets**, never events (up to a cap) and
//!   never save batches; clients that lost packets are listed in
//!   [`TickBatch::dropped_for`] and need a resync (detach + attach), since
//!   replication is a diff against what was sent.
//! * **Save batches** go straight from the scene thread to the
//!   [`SaveSink`], tagged with the placement epoch. A sink must not block
//!   (see its contract); [`WriterSink`] hands them to the persistence
//!   `Writer`, which coalesces. Save batches are never dropped by the host.
//! * **Stopping**: `DropScene` for a move or shutdown →
//!   [`SceneHost::drop_scene`] with `stale = false` (final batch of every
//!   online PC, then join); `DropScene{Stale}` / `EpochStale` → `stale =
//!   true`, which writes **nothing** from the moment it is called.
//! * A panic on a scene thread is caught at join and returned as
//!   [`RunError::Panicked`]; meanwhile the load report shows
//!   [`RunnerPhase::Failed`] and the output queue is closed. Other scenes go on.
//! * **The game** ([`SceneHost::with_game`], default
//!   [`tessera_sim::DefaultGame`]) builds every world. A game whose plugins
//!   do not build fails the runner as a panic would, as [`RunError::Build`];
//!   [`check_game`] finds that out before anything is placed.
//! * **Attaches are idempotent** (the coordinator's `AttachAt` contract):
//!   an attach of an avatar already attached (or being attached) for the
//!   same client is answered with `Attached` again; one attached for another
//!   client is re-bound — `Detached` for the old client in the next tick,
//!   `Attached` for the new one in the tick after, from the detached state.
//! * The gate-session ↔ client mapping and `SyncAttached` belong to the
//!   networked scene server, which reconciles with the commands above.
//!
//! # Invariants
//!
//! **Invariant:** a tick is due at `start + k / tick_hz`; the schedule never
//! drifts. Late ticks are caught up (at most `max_burst` per wake-up) or
//! skipped, and counted: `late == caught_up + skipped`.
//!
//! **Invariant:** nothing the host owns blocks the tick: the command queue is
//! read with `try_recv`, outputs are pushed without waiting, the sink must
//! not block.
//!
//! **Invariant:** every queue is bounded and every drop is counted — commands
//! refused (`commands_refused`), the world's inbox (`inbox_full`), output
//! packets and events (`output.packets_dropped`, `output.events_dropped`),
//! save batches refused by the sink (`save_errors`).
//!
//! **Invariant:** every save batch carries the epoch of the placement that
//! wrote it, and a runner told to drop a stale placement writes nothing more.
//!
//! **Invariant:** one runner per scene name on a host; a scene is placed
//! again only after its runner has been dropped.

pub mod clock;
pub mod metrics;
pub mod output;
pub mod pacer;
mod runner;
pub mod sink;

#[cfg(test)]
mod game_tests;
#[cfg(test)]
mod tests;

use std::collections::BTreeMap;
use std::sync::Arc;

use tessera_sim::{
    BuildError, DefaultGame, Game, Inbound, ObjectState, PcState, SceneDef, SceneError,
    SceneSettings, SceneWorld,
};

pub use clock::{Clock, ManualClock, SystemClock};
pub use output::{OutputQueue, OutputStats, TickBatch};
pub use pacer::{Pacer, PacerStats, Plan};
pub use runner::{
    CommandError, LoadReport, RunError, RunnerPhase, RunnerReport, RunnerSettings, SceneRunner,
};
pub use sink::{
    EpochBatch, MemorySink, SaveSink, SaveSinkError, WriterSink, from_db_objects, from_db_states,
    to_db_batch, to_db_object,
};

use tessera_wire::Epoch;

/// A placement the host could not start.
#[derive(Debug, thiserror::Error)]
pub enum PlaceError {
    #[error("scene {scene:?} is already hosted here at epoch {epoch}")]
    AlreadyHosted { scene: String, epoch: Epoch },
    #[error("scene definition is named {found:?}, expected {expected:?}")]
    NameMismatch { expected: String, found: String },
    #[error(transparent)]
    InvalidScene(#[from] SceneError),
    #[error("could not start the scene thread: {0}")]
    Spawn(#[from] std::io::Error),
}

/// `drop_scene` of a scene this host does not hold.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DropError {
    #[error("scene {0:?} is not hosted here")]
    UnknownScene(String),
    #[error(transparent)]
    Run(#[from] RunError),
}

/// The scenes placed on one scene server. See the [module docs](self).
///
/// Dropping a host stops its scenes **without writing** (see
/// [`SceneRunner`]); call [`SceneHost::shutdown`] to flush them first.
pub struct SceneHost {
    game: Arc<dyn Game>,
    settings: RunnerSettings,
    clock: Arc<dyn Clock>,
    sink: Arc<dyn SaveSink>,
    runners: BTreeMap<String, SceneRunner>,
}

impl std::fmt::Debug for SceneHost {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SceneHost")
            .field("game", &self.game.name())
            .field("scenes", &self.runners.keys().collect::<Vec<_>>())
            .finish_non_exhaustive()
    }
}

impl SceneHost {
    /// A host of the default game whose runners use `settings`, `clock` and
    /// `sink`.
    pub fn new(settings: RunnerSettings, clock: Arc<dyn Clock>, sink: Arc<dyn SaveSink>) -> Self {
        Self {
            game: Arc::new(DefaultGame),
            settings,
            clock,
            sink,
            runners: BTreeMap::new(),
        }
    }

    /// This host with every world it places built by `game`.
    pub fn with_game(mut self, game: Arc<dyn Game>) -> Self {
        self.game = game;
        self
    }

    /// The game whose worlds this host builds.
    pub fn game(&self) -> &Arc<dyn Game> {
        &self.game
    }

    /// Starts hosting `scene` under `epoch` with its loaded PC states, with
    /// the host's settings.
    pub fn place(
        &mut self,
        scene: &str,
        def: SceneDef,
        epoch: Epoch,
        states: Vec<PcState>,
    ) -> Result<(), PlaceError> {
        let settings = self.settings.clone();
        self.place_with(scene, def, epoch, states, settings)
    }

    /// [`SceneHost::place`] with settings for this scene only.
    pub fn place_with(
        &mut self,
        scene: &str,
        def: SceneDef,
        epoch: Epoch,
        states: Vec<PcState>,
        settings: RunnerSettings,
    ) -> Result<(), PlaceError> {
        self.place_restoring(scene, def, epoch, states, Vec::new(), settings)
    }

    /// [`SceneHost::place_with`] and the scene's saved objects (a game's
    /// keyed scene entities), restored into the world before its first tick.
    pub fn place_restoring(
        &mut self,
        scene: &str,
        def: SceneDef,
        epoch: Epoch,
        states: Vec<PcState>,
        objects: Vec<ObjectState>,
        settings: RunnerSettings,
    ) -> Result<(), PlaceError> {
        if let Some(r) = self.runners.get(scene) {
            return Err(PlaceError::AlreadyHosted {
                scene: scene.to_owned(),
                epoch: r.epoch(),
            });
        }
        if def.name != scene {
            return Err(PlaceError::NameMismatch {
                expected: scene.to_owned(),
                found: def.name,
            });
        }
        def.validate(scene)?;
        self.sink.fence(scene, epoch);
        let runner = SceneRunner::start_restoring(
            Arc::clone(&self.game),
            def,
            epoch,
            states,
            objects,
            settings,
            Arc::clone(&self.clock),
            Arc::clone(&self.sink),
        )?;
        self.runners.insert(scene.to_owned(), runner);
        Ok(())
    }

    /// Stops hosting `scene`: with `stale = false` the final states of its
    /// online PCs are saved first; with `stale = true` nothing is written.
    pub fn drop_scene(&mut self, scene: &str, stale: bool) -> Result<RunnerReport, DropError> {
        let runner = self
            .runners
            .remove(scene)
            .ok_or_else(|| DropError::UnknownScene(scene.to_owned()))?;
        let result = if stale {
            runner.drop_stale()
        } else {
            runner.stop_and_flush()
        };
        Ok(result?)
    }

    /// Queues a command for `scene`; never blocks.
    pub fn command(&self, scene: &str, cmd: Inbound) -> Result<(), CommandError> {
        self.runners
            .get(scene)
            .ok_or_else(|| CommandError::UnknownScene(scene.to_owned()))?
            .command(cmd)
    }

    /// The output queue of `scene`.
    pub fn output(&self, scene: &str) -> Option<Arc<OutputQueue>> {
        self.runners.get(scene).map(|r| Arc::clone(r.output()))
    }

    pub fn runner(&self, scene: &str) -> Option<&SceneRunner> {
        self.runners.get(scene)
    }

    /// `(scene, epoch)` of every hosted scene: the claim a heartbeat carries.
    pub fn placements(&self) -> Vec<(String, Epoch)> {
        self.runners
            .iter()
            .map(|(s, r)| (s.clone(), r.epoch()))
            .collect()
    }

    /// The metrics of every hosted scene, in scene order (cheap: `Arc`s).
    pub fn metrics(&self) -> Vec<Arc<metrics::SceneMetrics>> {
        self.runners
            .values()
            .map(|r| Arc::clone(r.metrics()))
            .collect()
    }

    /// The load report of every hosted scene, in scene order.
    pub fn load(&self) -> Vec<LoadReport> {
        self.runners.values().map(SceneRunner::load).collect()
    }

    /// Stops every scene with a final flush (SIGTERM), in scene order.
    pub fn shutdown(mut self) -> Vec<(String, Result<RunnerReport, RunError>)> {
        std::mem::take(&mut self.runners)
            .into_iter()
            .map(|(scene, r)| (scene, r.stop_and_flush()))
            .collect()
    }
}

/// Whether `game`'s plugins make a scene world, tried on a small open
/// field: what a server checks at start, so that a game missing an engine
/// plugin stops it with an error instead of failing every placement.
pub fn check_game(game: &dyn Game) -> Result<(), BuildError> {
    let def = SceneDef::open_field("game-check", 64.0);
    SceneWorld::for_game(game, def, SceneSettings::default()).map(drop)
}
