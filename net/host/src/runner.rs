//! [`SceneRunner`]: one scene world on its own OS thread, ticking on a
//! fixed-step clock.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU8, AtomicU64, AtomicUsize, Ordering};
use std::sync::mpsc::{self, Receiver, SyncSender, TryRecvError, TrySendError};
use std::sync::{Arc, Mutex, PoisonError};
use std::thread::JoinHandle;

use hdrhistogram::Histogram;
use tessera_sim::{
    AvatarId, ClientId, Game, Inbound, NetId, ObjectState, PcState, SaveBatch, SceneDef,
    SceneEvent, SceneSettings, SceneWorld,
};

use super::clock::Clock;
use super::metrics::SceneMetrics;
use super::output::{OutputQueue, OutputStats, TickBatch};
use super::pacer::{Pacer, PacerStats};
use super::sink::{EpochBatch, SaveSink};
use tessera_wire::Epoch;

/// Longest nap of a scene thread between reads of its command queue, so a
/// slow-ticking scene still drains it often (it is bounded).
const MAX_NAP: std::time::Duration = std::time::Duration::from_millis(10);

/// Settings of the runners a host starts. Every field has a default.
#[derive(Debug, Clone, PartialEq)]
pub struct RunnerSettings {
    /// Commands the input queue holds; beyond, [`SceneRunner::command`]
    /// refuses. Inputs may fill at most three quarters of it: the rest is
    /// kept for attaches and detaches, which a burst of inputs (a scene
    /// thread held up while gates keep sending) must not crowd out — a lost
    /// input is replaced by the next, a lost attach leaves a player outside.
    /// Default 4096.
    pub command_capacity: usize,
    /// Ticks of output the output queue holds before the oldest packets are
    /// dropped. Default 64.
    pub output_capacity: usize,
    /// Events the output queue holds before new ones are dropped. Default 65 536.
    pub max_pending_events: usize,
    /// Most ticks run back to back at one wake-up when late (≥ 1). Default 4.
    pub max_burst: u32,
    /// Ticks between two refreshes of the load report; 0 = one second of ticks.
    /// Default 0.
    pub report_every_ticks: u32,
    /// Synthetic walkers spawned in every scene at start (load tests): each
    /// is an observer with its own client id in `1..=walkers`, moving and
    /// replicated as if connected. Default 0.
    pub walkers: u32,
    /// The scene world's own settings.
    pub scene: SceneSettings,
}

impl Default for RunnerSettings {
    fn default() -> Self {
        Self {
            command_capacity: 4096,
            output_capacity: 64,
            max_pending_events: 65_536,
            max_burst: 4,
            report_every_ticks: 0,
            walkers: 0,
            scene: SceneSettings::default(),
        }
    }
}

/// Where a runner is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum RunnerPhase {
    /// The thread is building the world.
    #[default]
    Loading,
    /// Ticking: the host may report the scene ready.
    Running,
    /// Stopped on request (flushed or dropped).
    Stopped,
    /// The scene thread panicked; nothing more will be ticked or saved.
    Failed,
}

/// A cheap snapshot of one scene's load, refreshed by the scene thread every
/// `report_every_ticks` ticks (and at start and stop).
#[derive(Debug, Clone, PartialEq, Default)]
pub struct LoadReport {
    pub scene: String,
    pub epoch: Epoch,
    pub phase: RunnerPhase,
    /// Attached PCs.
    pub population: u32,
    /// Ticks run by the world.
    pub ticks: u64,
    /// 99th percentile tick time since the previous report, µs (0 before any tick).
    pub tick_p99_us: u32,
    /// 99th percentile tick time since the start, µs.
    pub tick_p99_total_us: u32,
    /// Schedule counters: late = caught up + skipped.
    pub pacer: PacerStats,
    /// Commands refused because the input queue was full.
    pub commands_refused: u64,
    /// Commands the world's inbox refused (`PushError::Full`).
    pub inbox_full: u64,
    pub output: OutputStats,
    /// Save batches the sink accepted.
    pub saves: u64,
    /// Save batches the sink refused (the error is logged).
    pub save_errors: u64,
    /// Save batches suppressed because a stale drop had been requested.
    pub saves_suppressed: u64,
    /// Offline avatars whose saved state the host keeps for their next attach.
    pub offline: u32,
}

impl LoadReport {
    /// The heartbeat's form of this report.
    pub fn to_wire(&self) -> tessera_wire::SceneLoad {
        tessera_wire::SceneLoad {
            scene: self.scene.clone(),
            epoch: self.epoch,
            population: self.population,
            tick_p99_us: self.tick_p99_us,
        }
    }
}

/// What a stopped runner reports.
#[derive(Debug, Clone, PartialEq)]
pub struct RunnerReport {
    pub load: LoadReport,
    /// States in the final save batch (0 for a stale drop).
    pub final_states: usize,
    /// Whether the final batch reached the sink.
    pub final_saved: bool,
    /// Commands still queued when the runner stopped, discarded.
    pub commands_discarded: u64,
}

/// A command the runner would not take.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CommandError {
    #[error("scene {0:?}: command queue full")]
    Full(String),
    #[error("scene {0:?} is stopped")]
    Stopped(String),
    #[error("scene {0:?} is not hosted here")]
    UnknownScene(String),
}

/// The scene thread ended abnormally.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RunError {
    #[error("scene {scene:?} thread panicked: {message}")]
    Panicked { scene: String, message: String },
    /// The game's plugins do not make a scene world (`BuildError`).
    #[error("game {game:?} cannot build scene {scene:?}: {message}")]
    Build {
        game: &'static str,
        scene: String,
        message: String,
    },
}

pub(crate) enum Msg {
    Cmd(Inbound),
    /// The world's snapshot, taken between ticks.
    Snapshot(tokio::sync::oneshot::Sender<tessera_sim::SceneSnapshot>),
    /// Test hook: panic on the scene thread.
    #[cfg(test)]
    Panic,
    /// Test hook: say so on `paused`, then block until `resume` yields or closes.
    #[cfg(test)]
    Pause {
        paused: SyncSender<()>,
        resume: Receiver<()>,
    },
}

const RUN: u8 = 0;
const STOP_FLUSH: u8 = 1;
const STOP_STALE: u8 = 2;

#[derive(Debug)]
struct RunnerShared {
    control: AtomicU8,
    refused: AtomicU64,
    /// Commands sent and not yet taken by the scene thread.
    queued: AtomicUsize,
    report: Mutex<LoadReport>,
    metrics: Arc<SceneMetrics>,
}

impl RunnerShared {
    fn report(&self) -> std::sync::MutexGuard<'_, LoadReport> {
        self.report.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// One hosted scene: a [`SceneWorld`] on its own thread.
///
/// **Invariant:** the world is touched only by its thread; everything else
/// talks to it through the bounded command queue, the output queue, the save
/// sink and the load report.
///
/// **Invariant:** after [`SceneRunner::drop_stale`] is called the runner hands
/// the sink nothing more — not even a batch of a tick already under way.
///
/// Dropping a runner that was not stopped stops it **without writing** (as
/// [`SceneRunner::drop_stale`]): writing is explicit, because a runner being
/// torn down may hold a stale placement.
pub struct SceneRunner {
    scene: String,
    epoch: Epoch,
    tx: SyncSender<Msg>,
    /// Queued commands beyond which inputs are refused.
    input_limit: usize,
    shared: Arc<RunnerShared>,
    output: Arc<OutputQueue>,
    thread: Option<JoinHandle<Result<RunnerReport, RunError>>>,
}

impl std::fmt::Debug for SceneRunner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SceneRunner")
            .field("scene", &self.scene)
            .field("epoch", &self.epoch)
            .finish_non_exhaustive()
    }
}

impl SceneRunner {
    /// Starts the scene thread. The world, `game`'s, is built there
    /// (`RunnerPhase::Loading` until then; a game whose plugins do not build
    /// fails the runner with [`RunError::Build`]); `states` are the scene's
    /// saved PC states: their avatars are offline until an attach arrives,
    /// which then uses the saved state when it carries none. `def` must be
    /// valid (`SceneDef::validate`).
    pub fn start(
        game: Arc<dyn Game>,
        def: SceneDef,
        epoch: Epoch,
        states: Vec<PcState>,
        settings: RunnerSettings,
        clock: Arc<dyn Clock>,
        sink: Arc<dyn SaveSink>,
    ) -> std::io::Result<Self> {
        Self::start_restoring(game, def, epoch, states, Vec::new(), settings, clock, sink)
    }

    /// [`SceneRunner::start`] with the scene's saved objects, handed to
    /// the world before its first tick ([`SceneWorld::restore_objects`]).
    pub fn start_restoring(
        game: Arc<dyn Game>,
        def: SceneDef,
        epoch: Epoch,
        states: Vec<PcState>,
        objects: Vec<ObjectState>,
        settings: RunnerSettings,
        clock: Arc<dyn Clock>,
        sink: Arc<dyn SaveSink>,
    ) -> std::io::Result<Self> {
        let scene = def.name.clone();
        let capacity = settings.command_capacity.max(1);
        let (tx, rx) = mpsc::sync_channel(capacity);
        let input_limit = (capacity - capacity / 4).max(1);
        let shared = Arc::new(RunnerShared {
            control: AtomicU8::new(RUN),
            refused: AtomicU64::new(0),
            queued: AtomicUsize::new(0),
            report: Mutex::new(LoadReport {
                scene: scene.clone(),
                epoch,
                ..Default::default()
            }),
            metrics: Arc::new(SceneMetrics::new(scene.clone(), epoch, Arc::clone(&clock))),
        });
        let output = Arc::new(OutputQueue::new(
            settings.output_capacity,
            settings.max_pending_events,
        ));
        let ctx = ThreadCtx {
            game,
            def,
            epoch,
            states,
            objects,
            settings,
            clock,
            sink,
            rx,
            shared: Arc::clone(&shared),
            output: Arc::clone(&output),
        };
        // The thread logs under the span it was started in (its node's).
        let span = tracing::Span::current();
        let thread = std::thread::Builder::new()
            .name(format!("scene-{scene}"))
            .spawn(move || span.in_scope(|| ctx.run()))?;
        Ok(Self {
            scene,
            epoch,
            tx,
            input_limit,
            shared,
            output,
            thread: Some(thread),
        })
    }

    pub fn scene(&self) -> &str {
        &self.scene
    }

    pub fn epoch(&self) -> Epoch {
        self.epoch
    }

    /// Queues a command for the next tick; never blocks. A full queue refuses
    /// (and counts) it.
    pub fn command(&self, cmd: Inbound) -> Result<(), CommandError> {
        if self.shared.control.load(Ordering::SeqCst) != RUN {
            return Err(CommandError::Stopped(self.scene.clone()));
        }
        let full = || {
            self.shared.refused.fetch_add(1, Ordering::Relaxed);
            Err(CommandError::Full(self.scene.clone()))
        };
        if matches!(cmd, Inbound::Input { .. } | Inbound::Ack { .. })
            && self.shared.queued.load(Ordering::Relaxed) >= self.input_limit
        {
            return full();
        }
        // Counted before it can be taken, so the count never goes below zero.
        self.shared.queued.fetch_add(1, Ordering::Relaxed);
        match self.tx.try_send(Msg::Cmd(cmd)) {
            Ok(()) => Ok(()),
            Err(e) => {
                self.shared.queued.fetch_sub(1, Ordering::Relaxed);
                match e {
                    TrySendError::Full(_) => full(),
                    TrySendError::Disconnected(_) => Err(CommandError::Stopped(self.scene.clone())),
                }
            }
        }
    }

    /// Asks the scene thread for a snapshot of the world (taken between two
    /// ticks); `None` when its queue is full or it stopped. Await the
    /// receiver (it fails if the thread stops first).
    pub fn snapshot(&self) -> Option<tokio::sync::oneshot::Receiver<tessera_sim::SceneSnapshot>> {
        let (tx, rx) = tokio::sync::oneshot::channel();
        self.tx.try_send(Msg::Snapshot(tx)).ok()?;
        self.wake();
        Some(rx)
    }

    /// This scene's Prometheus figures, refreshed by its thread every tick.
    pub fn metrics(&self) -> &Arc<SceneMetrics> {
        &self.shared.metrics
    }

    /// The tick outputs (packets, events) for the networking side.
    pub fn output(&self) -> &Arc<OutputQueue> {
        &self.output
    }

    /// The latest load report (live counters for refusals and output).
    pub fn load(&self) -> LoadReport {
        let mut r = self.shared.report().clone();
        r.commands_refused = self.shared.refused.load(Ordering::Relaxed);
        r.output = self.output.stats();
        r
    }

    #[cfg(test)]
    pub(crate) fn inject_panic(&self) {
        let _ = self.tx.try_send(Msg::Panic);
        self.wake();
    }

    /// Blocks the scene thread until the returned sender is dropped or sends;
    /// returns once the thread is blocked.
    #[cfg(test)]
    pub(crate) fn pause(&self) -> SyncSender<()> {
        let (paused_tx, paused_rx) = mpsc::sync_channel(1);
        let (resume_tx, resume_rx) = mpsc::sync_channel(1);
        self.tx
            .send(Msg::Pause {
                paused: paused_tx,
                resume: resume_rx,
            })
            .expect("runner alive");
        self.wake();
        paused_rx.recv().expect("runner paused");
        resume_tx
    }

    fn request(&self, mode: u8) {
        // Keep the first request: a stale drop is never turned into a flush.
        let _ = self
            .shared
            .control
            .compare_exchange(RUN, mode, Ordering::SeqCst, Ordering::SeqCst);
        self.wake();
    }

    /// Ends the scene thread's nap now (it otherwise reads its queue at the
    /// next tick or after [`MAX_NAP`]).
    fn wake(&self) {
        if let Some(thread) = &self.thread {
            thread.thread().unpark();
        }
    }

    fn join(&mut self) -> Result<RunnerReport, RunError> {
        let Some(thread) = self.thread.take() else {
            return Err(RunError::Panicked {
                scene: self.scene.clone(),
                message: "already joined".into(),
            });
        };
        thread.join().map_err(|payload| {
            let message = payload
                .downcast_ref::<&str>()
                .map(|s| (*s).to_owned())
                .or_else(|| payload.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "non-string panic payload".into());
            tracing::error!(scene = %self.scene, "scene thread panicked: {message}");
            RunError::Panicked {
                scene: self.scene.clone(),
                message,
            }
        })?
    }

    /// Stops ticking, hands the sink one final batch with the state of every
    /// online PC (tagged with this runner's epoch), joins the thread.
    pub fn stop_and_flush(mut self) -> Result<RunnerReport, RunError> {
        self.request(STOP_FLUSH);
        self.join()
    }

    /// Stops ticking **without writing anything**: for a placement found
    /// stale. Joins the thread.
    pub fn drop_stale(mut self) -> Result<RunnerReport, RunError> {
        self.request(STOP_STALE);
        self.join()
    }
}

impl Drop for SceneRunner {
    fn drop(&mut self) {
        if self.thread.is_some() {
            tracing::warn!(scene = %self.scene, "scene runner dropped without a stop: not writing");
            self.request(STOP_STALE);
            let _ = self.join();
        }
    }
}

struct ThreadCtx {
    game: Arc<dyn Game>,
    def: SceneDef,
    epoch: Epoch,
    states: Vec<PcState>,
    objects: Vec<ObjectState>,
    settings: RunnerSettings,
    clock: Arc<dyn Clock>,
    sink: Arc<dyn SaveSink>,
    rx: Receiver<Msg>,
    shared: Arc<RunnerShared>,
    output: Arc<OutputQueue>,
}

/// Marks the runner failed and closes its output if the thread unwinds.
struct FailGuard {
    shared: Arc<RunnerShared>,
    output: Arc<OutputQueue>,
}

impl Drop for FailGuard {
    fn drop(&mut self) {
        if std::thread::panicking() {
            self.shared.report().phase = RunnerPhase::Failed;
            self.shared.metrics.set_phase(RunnerPhase::Failed);
        }
        self.output.close();
    }
}

struct Core {
    world: SceneWorld,
    scene: String,
    epoch: Epoch,
    sink: Arc<dyn SaveSink>,
    shared: Arc<RunnerShared>,
    output: Arc<OutputQueue>,
    offline: BTreeMap<AvatarId, PcState>,
    /// Attached avatars: client and net id (from the world's events).
    attached: BTreeMap<AvatarId, (ClientId, NetId)>,
    /// Attaches handed to the world since the last tick.
    pending: BTreeMap<AvatarId, ClientId>,
    /// Attaches to retry after the next tick (re-binds, conflicts).
    deferred: Vec<Inbound>,
    /// `Attached` answers to repeated attaches, for the next output.
    replies: Vec<SceneEvent>,
    pacer: Pacer,
    report_every: u64,
    window_base: Histogram<u64>,
    saves: u64,
    save_errors: u64,
    saves_suppressed: u64,
}

impl ThreadCtx {
    fn run(self) -> Result<RunnerReport, RunError> {
        let _guard = FailGuard {
            shared: Arc::clone(&self.shared),
            output: Arc::clone(&self.output),
        };
        let scene = self.def.name.clone();
        let settings = tessera_sim::SceneSettings {
            epoch: self.epoch,
            ..self.settings.scene.clone()
        };
        let mut world = match SceneWorld::for_game(&*self.game, self.def, settings) {
            Ok(world) => world,
            Err(e) => {
                let game = self.game.name();
                tracing::error!(%scene, game, "the game cannot build the scene: {e}");
                self.shared.report().phase = RunnerPhase::Failed;
                self.shared.metrics.set_phase(RunnerPhase::Failed);
                return Err(RunError::Build {
                    game,
                    scene,
                    message: e.to_string(),
                });
            }
        };
        world.restore_objects(self.objects);
        if self.settings.walkers > 0 {
            // Synthetic load: observers with client ids 1..=walkers (session
            // ids have the top bit set, so they never collide).
            world.add_walkers(self.settings.walkers, 1);
        }
        let hz = world.tick_hz();
        let report_every = match self.settings.report_every_ticks {
            0 => u64::from(hz),
            n => u64::from(n),
        };
        let offline = self.states.into_iter().map(|s| (s.avatar, s)).collect();
        let mut core = Core {
            window_base: world.metrics().tick.clone(),
            world,
            scene,
            epoch: self.epoch,
            sink: self.sink,
            shared: self.shared,
            output: self.output,
            offline,
            attached: BTreeMap::new(),
            pending: BTreeMap::new(),
            deferred: Vec::new(),
            replies: Vec::new(),
            pacer: Pacer::new(self.clock.now(), hz, self.settings.max_burst),
            report_every,
            saves: 0,
            save_errors: 0,
            saves_suppressed: 0,
        };
        core.shared.metrics.started(hz);
        core.publish(RunnerPhase::Running);
        let rx = self.rx;
        let clock = self.clock;
        let drain_max = self.settings.command_capacity.max(1);
        loop {
            let mode = core.shared.control.load(Ordering::SeqCst);
            if mode != RUN {
                let discarded = rx.try_iter().filter(|m| matches!(m, Msg::Cmd(_))).count();
                return Ok(core.finish(mode == STOP_FLUSH, discarded as u64));
            }
            // At most one queue's worth per wake-up: a sender that keeps the
            // queue full must not keep the tick from running.
            for _ in 0..drain_max {
                match rx.try_recv() {
                    Ok(msg) => core.handle(msg),
                    Err(TryRecvError::Empty) => break,
                    // Every handle is gone: nobody can stop us, so stop
                    // without writing.
                    Err(TryRecvError::Disconnected) => return Ok(core.finish(false, 0)),
                }
            }
            let plan = core.pacer.poll(clock.now());
            for _ in 0..plan.run {
                core.tick();
            }
            let wait = clock.max_wait(core.pacer.next_deadline());
            if wait.is_zero() {
                continue;
            }
            // Nap rather than block on the queue: a command waits for the
            // next tick anyway, and blocking would cost a wake-up (a futex
            // call on the sender's side and a context switch here) per
            // command — ~4,000 a second in a 2,000-player scene. Stop
            // requests unpark the thread.
            std::thread::park_timeout(wait.min(MAX_NAP));
        }
    }
}

impl Core {
    fn handle(&mut self, msg: Msg) {
        match msg {
            Msg::Cmd(cmd) => {
                self.shared.queued.fetch_sub(1, Ordering::Relaxed);
                self.push(cmd)
            }
            Msg::Snapshot(reply) => {
                let _ = reply.send(self.world.snapshot());
            }
            #[cfg(test)]
            Msg::Panic => panic!("test hook: scene {} panics", self.scene),
            #[cfg(test)]
            Msg::Pause { paused, resume } => {
                let _ = paused.send(());
                let _ = resume.recv();
            }
        }
    }

    /// Hands a command to the world, making attaches idempotent (the
    /// coordinator's `AttachAt` contract):
    ///
    /// * an attach of an avatar already attached for the same client is
    ///   answered with its `Attached` event again, and not passed on;
    /// * an attach of an avatar attached for **another** client re-binds it:
    ///   the old client is detached (saving the avatar) in the next tick, and
    ///   the attach is applied in the tick after, from the detached state;
    /// * an attach without a state gets the avatar's kept offline state.
    fn push(&mut self, cmd: Inbound) {
        let Inbound::Attach {
            client,
            avatar,
            figure,
            ..
        } = cmd
        else {
            // A full inbox is counted by the world (`Counters::inbound_full`).
            let _ = self.world.push(cmd);
            return;
        };
        if let Some(&pending) = self.pending.get(&avatar) {
            if pending != client {
                // Decide after the pending attach has been applied.
                self.deferred.push(cmd);
            }
            // Same client: the pending attach's event answers both.
            return;
        }
        match self.attached.get(&avatar) {
            Some(&(c, net_id)) if c == client => {
                self.replies.push(SceneEvent::Attached {
                    client,
                    avatar,
                    net_id,
                });
                return;
            }
            Some(&(c, _)) => {
                let _ = self.world.push(Inbound::Detach { client: c });
                self.deferred.push(cmd);
                return;
            }
            None => {}
        }
        let Inbound::Attach { state, .. } = cmd else {
            return;
        };
        let state = state.or_else(|| self.offline.get(&avatar).cloned());
        if self
            .world
            .push(Inbound::Attach {
                client,
                avatar,
                state,
                figure,
            })
            .is_ok()
        {
            self.pending.insert(avatar, client);
        }
    }

    fn tick(&mut self) {
        let out = self.world.tick();
        for e in &out.events {
            match e {
                SceneEvent::Attached {
                    client,
                    avatar,
                    net_id,
                } => {
                    self.offline.remove(avatar);
                    self.attached.insert(*avatar, (*client, *net_id));
                }
                SceneEvent::Detached { state, .. } => {
                    self.offline.insert(state.avatar, state.clone());
                    self.attached.remove(&state.avatar);
                }
                SceneEvent::AttachRejected { .. }
                | SceneEvent::Portal { .. }
                | SceneEvent::Misbehaved { .. } => {}
            }
        }
        self.pending.clear();
        self.shared.metrics.record_tick(
            &self.world,
            &out,
            self.attached.len(),
            self.offline.len(),
            self.pacer.stats(),
            self.shared.refused.load(Ordering::Relaxed),
        );
        if let Some(batch) = out.save {
            self.save(batch);
        }
        let mut events = std::mem::take(&mut self.replies);
        events.extend(out.events);
        if !out.packets.is_empty()
            || !events.is_empty()
            || !out.game.is_empty()
            || !out.channel_ops.is_empty()
        {
            self.output.push(TickBatch {
                epoch: self.epoch,
                tick: out.tick,
                packets: out.packets,
                events,
                game: out.game,
                dropped_for: Vec::new(),
                channel_ops: out.channel_ops,
            });
        }
        // Attaches waiting for this tick's detaches or attaches, for the next tick.
        for cmd in std::mem::take(&mut self.deferred) {
            self.push(cmd);
        }
        if out.tick.is_multiple_of(self.report_every) {
            self.publish(RunnerPhase::Running);
        }
    }

    fn save(&mut self, batch: SaveBatch) {
        // Checked right before the hand-over: once a stale drop is requested,
        // not even the batch of a tick already under way is written.
        if self.shared.control.load(Ordering::SeqCst) == STOP_STALE {
            self.saves_suppressed += 1;
            return;
        }
        let tick = batch.tick;
        match self.sink.save(EpochBatch {
            epoch: self.epoch,
            batch,
        }) {
            Ok(()) => self.saves += 1,
            Err(e) => {
                self.save_errors += 1;
                tracing::warn!(scene = %self.scene, epoch = self.epoch, tick, "save batch refused: {e}");
            }
        }
    }

    /// Refreshes the shared load report.
    fn publish(&mut self, phase: RunnerPhase) {
        let us = |ns: u64| u32::try_from(ns / 1000).unwrap_or(u32::MAX);
        let total = &self.world.metrics().tick;
        let total_p99 = if total.is_empty() {
            0
        } else {
            total.value_at_quantile(0.99)
        };
        let mut window = total.clone();
        let window_p99 = match window.subtract(&self.window_base) {
            Ok(()) if !window.is_empty() => window.value_at_quantile(0.99),
            _ => total_p99,
        };
        self.window_base = total.clone();
        let counters = self.world.counters();
        let mut r = self.shared.report();
        r.phase = phase;
        r.population = u32::try_from(self.world.population()).unwrap_or(u32::MAX);
        r.ticks = self.world.tick_count();
        r.tick_p99_us = us(window_p99);
        r.tick_p99_total_us = us(total_p99);
        r.pacer = self.pacer.stats();
        r.inbox_full = counters.inbound_full;
        r.saves = self.saves;
        r.save_errors = self.save_errors;
        r.saves_suppressed = self.saves_suppressed;
        r.offline = u32::try_from(self.offline.len()).unwrap_or(u32::MAX);
        drop(r);
        let m = &self.shared.metrics;
        m.record_report(self.output.stats(), self.saves, self.save_errors);
        m.set_phase(phase);
    }

    fn finish(mut self, flush: bool, commands_discarded: u64) -> RunnerReport {
        let mut final_states = 0;
        let mut final_saved = false;
        if flush {
            let states = self.world.pc_states();
            let objects = self.world.object_states();
            final_states = states.len();
            if !states.is_empty() || !objects.is_empty() {
                let before = self.saves;
                self.save(SaveBatch {
                    scene: self.scene.clone(),
                    tick: self.world.tick_count(),
                    states,
                    objects,
                });
                final_saved = self.saves > before;
            }
        }
        self.publish(RunnerPhase::Stopped);
        let mut load = self.shared.report().clone();
        load.commands_refused = self.shared.refused.load(Ordering::Relaxed);
        load.output = self.output.stats();
        RunnerReport {
            load,
            final_states,
            final_saved,
            commands_discarded,
        }
    }
}
