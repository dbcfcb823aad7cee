//! [`SceneWorld`]: one scene's Bevy app, stepped one fixed tick at a time,
//! and how it is assembled: [`SceneWorld::builder`] sets up the core (the
//! scene's resources, the chained pipeline of sets, the stage timing), then
//! adds the engine's [`TesseraPlugins`] (or the group a game passes to
//! [`SceneWorldBuilder::with_engine`]) and the game's plugins.
//!
//! ```ignore
//! let world = SceneWorld::builder(def, settings)
//!     .with_engine(TesseraPlugins.build().disable::<MovementPlugin>())
//!     .add_plugins(MyMovement)
//!     .build()?;
//! ```

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use bevy_app::{App, PluginGroup, PluginGroupBuilder, Plugins, Update};
use bevy_ecs::error::{BevyError, ErrorContext};
use bevy_ecs::prelude::*;
use bevy_ecs::schedule::SingleThreadedExecutor;
use rstar::RTree;
use rstar::primitives::Rectangle;

use crate::components::*;
use crate::game::{GameRegistry, GameSnaps};
use crate::ingest::{Inbox, IngestPlugin};
use crate::interest::{InterestPlugin, SpatialPlugin};
use crate::metrics::{MetricsPlugin, TickMetrics};
use crate::movement::MovementPlugin;
use crate::persist::PersistPlugin;
use crate::protocol::{
    ClientId, Inbound, NetId, PcState, Quantized, Quantizer, SceneEvent, TickOutput,
};
use crate::replicate::ReplicatePlugin;
use crate::rng::SceneRng;
use crate::scene::{SceneDef, Vec2};
use crate::{
    GameSystems, IngestSystems, InterestSystems, MetricsSystems, PersistSystems, ReplicateSystems,
    SimulateSystems, SpatialSystems,
};

/// Tunables of one scene world. Every field has a default.
#[derive(Debug, Clone, PartialEq)]
pub struct SceneSettings {
    /// RNG seed. Default 1.
    pub seed: u64,
    /// Tick rate; `None` uses the scene's `tick_hz`.
    pub tick_hz: Option<u32>,
    /// Default AOI radius of observers. Default 50.
    pub aoi_radius: f32,
    /// Hysteresis: an entity seen at `aoi_radius` is kept until beyond
    /// `aoi_radius + aoi_margin`. Default 5; 0 allowed.
    pub aoi_margin: f32,
    /// Ticks between save batches; `None` = one second of ticks.
    pub flush_interval_ticks: Option<u32>,
    /// Inputs counted per client per tick; the rest are dropped. Default 4.
    pub max_inputs_per_tick: u32,
    /// Commands the inbox holds between ticks. Default 65 536.
    pub inbound_capacity: usize,
    /// PCs allowed in the scene. Default 20 000.
    pub max_population: u32,
    /// Units per second. Defaults 4 (walk), 8 (run); mounted ×1.5.
    pub walk_speed: f32,
    pub run_speed: f32,
    pub mount_factor: f32,
    /// Bytes per replication packet, at most [`crate::MAX_PACKET_BYTES`]. Default 1200.
    pub packet_budget: usize,
    /// Entities in one client's view at most: the nearest this many of what
    /// its AOI holds. Default 256.
    pub max_interest: usize,
    /// Record a per-stage trace for `--trace-out`. Default off.
    pub trace: bool,
    /// The placement epoch the host runs this scene under, stamped on every
    /// state packet. Default 0.
    pub epoch: u64,
    /// Ticks a despawned entity's net id waits before another entity may get
    /// it (ids are recycled so per-id arrays stop growing with churn); `None`
    /// = ten seconds of ticks. Replication stays exact with any value, 0
    /// included (generations tell a reused id from its former holder); the
    /// wait lets every packet that carried the former entity's leave settle
    /// first (the sent ring covers ~3 s at 20 Hz) and keeps a stale id in a
    /// client command or a log from naming a new entity soon after. It costs
    /// about (detaches per second × 10) ids of growth.
    pub net_id_quarantine_ticks: Option<u32>,
}

impl Default for SceneSettings {
    fn default() -> Self {
        Self {
            seed: 1,
            tick_hz: None,
            aoi_radius: 50.0,
            aoi_margin: 5.0,
            flush_interval_ticks: None,
            max_inputs_per_tick: 4,
            inbound_capacity: 65_536,
            max_population: 20_000,
            walk_speed: 4.0,
            run_speed: 8.0,
            mount_factor: 1.5,
            packet_budget: crate::MAX_PACKET_BYTES,
            max_interest: 256,
            trace: false,
            epoch: 0,
            net_id_quarantine_ticks: None,
        }
    }
}

/// The immutable description of the running scene.
#[derive(Resource, Debug)]
pub struct SceneInfo {
    pub def: SceneDef,
    pub settings: SceneSettings,
    pub tick_hz: u32,
    pub dt: f32,
    pub flush_every: u64,
    pub quantizer: Quantizer,
    /// The scene's tag on the wire ([`crate::protocol::scene_tag`] of its name).
    pub tag: u32,
    pub obstacles: RTree<Rectangle<Vec2>>,
}

impl SceneInfo {
    /// Inside the bounds and not inside an obstacle.
    pub fn is_walkable(&self, p: Vec2) -> bool {
        p[0].is_finite()
            && p[1].is_finite()
            && (0.0..=self.def.size[0]).contains(&p[0])
            && (0.0..=self.def.size[1]).contains(&p[1])
            && self.obstacles.locate_at_point(p).is_none()
    }
}

/// One entity in a [`SceneSnapshot`].
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct SnapshotEntity {
    pub id: NetId,
    pub kind: u8,
    pub figure: u32,
    pub q: Quantized,
    pub pos: Vec2,
    /// Its replicated game components as observers get them, and (a PC's)
    /// as its owner does, owner-only ones included.
    #[serde(default)]
    pub game: tessera_proto::GameVals,
    #[serde(default)]
    pub own_game: tessera_proto::GameVals,
}

/// The server's truth of one scene at one tick, for checking client views
/// (the bots' view check) and drawing the live map (`GET /map`).
///
/// [`SceneWorld::snapshot`] copies it out of the world; a host calls that on
/// the scene thread, between two ticks (`tessera-host`'s runner answers its
/// `Msg::Snapshot` in its own loop), so a snapshot never takes a lock the
/// tick holds and never sees a tick half done.
///
/// Fields added after the first version (`tick_ns`, `obstacles`) come last
/// and default when absent: readers of the JSON form accept older and newer
/// coordinators, and an older postcard reader ignores the trailing bytes.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct SceneSnapshot {
    pub scene: String,
    pub scene_tag: u32,
    pub epoch: u64,
    /// The tick whose packets were built from this state.
    pub tick: u32,
    pub aoi_radius: f32,
    pub aoi_margin: f32,
    pub max_interest: u32,
    /// What dequantizing positions needs, and how far an entity can move
    /// per tick (at most `max_speed / tick_hz`).
    pub size: Vec2,
    pub tick_hz: u32,
    pub max_speed: f32,
    /// By id.
    pub entities: Vec<SnapshotEntity>,
    /// How long the last tick took, ns (its budget is `1 / tick_hz`).
    #[serde(default)]
    pub tick_ns: u64,
    /// The scene's obstacles, as in its scene file.
    #[serde(default)]
    pub obstacles: Vec<crate::scene::Rect>,
}

/// What the current tick hands back to the host (besides packets).
#[derive(Resource, Debug, Default)]
pub struct SceneOutbox {
    pub events: Vec<SceneEvent>,
    pub game: Vec<crate::protocol::GameEventOut>,
    pub save: Option<crate::protocol::SaveBatch>,
    pub packets: crate::protocol::Packets,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum PushError {
    #[error("inbound queue full ({0} commands); command dropped")]
    Full(usize),
}

static COMMAND_ERRORS: AtomicU64 = AtomicU64::new(0);

/// bevy 0.20 panics on a failed command by default (e.g. on a despawned
/// entity). A scene must never panic on that: log it and count it.
fn log_and_count(error: BevyError, ctx: ErrorContext) {
    COMMAND_ERRORS.fetch_add(1, Ordering::Relaxed);
    tracing::warn!("ecs command failed in {}: {error}", ctx.name());
}

/// Failed ECS commands in this process (all scene worlds).
pub fn command_errors() -> u64 {
    COMMAND_ERRORS.load(Ordering::Relaxed)
}

/// One scene: a Bevy app whose `Update` schedule is the tick pipeline.
pub struct SceneWorld {
    app: App,
}

impl std::fmt::Debug for SceneWorld {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SceneWorld")
            .field("tick", &self.tick_count())
            .finish_non_exhaustive()
    }
}

/// The engine's plugins, in pipeline order. A game may disable or replace
/// [`MovementPlugin`] (the default game: PC movement with the mount check,
/// NPC wander); the others are the engine and [`SceneWorldBuilder::build`]
/// refuses a world without them (replace one only with `.set(..)`, which
/// keeps its type).
pub struct TesseraPlugins;

impl PluginGroup for TesseraPlugins {
    fn build(self) -> PluginGroupBuilder {
        PluginGroupBuilder::start::<Self>()
            .add(IngestPlugin)
            .add(MovementPlugin)
            .add(SpatialPlugin)
            .add(InterestPlugin)
            .add(ReplicatePlugin)
            .add(PersistPlugin)
    }
}

/// Why a [`SceneWorldBuilder`] could not build a world.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BuildError {
    #[error(
        "the engine plugin {0} is missing: a scene needs it (disable only MovementPlugin; replace others with `.set(..)`)"
    )]
    MissingEnginePlugin(&'static str),
    #[error("the game's protocol is not valid: {0}")]
    Protocol(#[from] tessera_proto::game::SchemaError),
}

/// A game's plugin, added after the engine's (kept until `build`, so that
/// [`SceneWorldBuilder::with_engine`] may come after it).
type AddPlugins = Box<dyn FnOnce(&mut App)>;

/// Assembles a [`SceneWorld`]: the engine's plugin group and the game's
/// plugins on top of the scene's core. See [`SceneWorld::builder`].
pub struct SceneWorldBuilder {
    app: App,
    engine: PluginGroupBuilder,
    game: Vec<AddPlugins>,
    name: &'static str,
}

impl std::fmt::Debug for SceneWorldBuilder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SceneWorldBuilder")
            .field("game_plugins", &self.game.len())
            .finish_non_exhaustive()
    }
}

impl SceneWorldBuilder {
    /// Adds the game's plugins (any bevy `Plugins`: a plugin, a tuple, a
    /// group), after the engine's, in the order given. Adding a plugin
    /// twice panics, as in bevy.
    pub fn add_plugins<M>(mut self, plugins: impl Plugins<M> + 'static) -> Self {
        self.game.push(Box::new(move |app: &mut App| {
            app.add_plugins(plugins);
        }));
        self
    }

    /// Replaces the engine's plugin group, by default [`TesseraPlugins`]:
    /// e.g. `TesseraPlugins.build().disable::<MovementPlugin>()`.
    pub fn with_engine(mut self, engine: impl PluginGroup) -> Self {
        self.engine = engine.build();
        self
    }

    /// Names the game (its protocol carries the name). Default `"default"`.
    pub fn named(mut self, game: &'static str) -> Self {
        self.name = game;
        self
    }

    /// Adds the plugins and finishes the app. Refuses a world that lacks an
    /// engine plugin other than [`MovementPlugin`], or whose game protocol
    /// is not valid (e.g. two components of one name).
    pub fn build(self) -> Result<SceneWorld, BuildError> {
        let mut app = self.app;
        app.add_plugins(self.engine);
        for add in self.game {
            add(&mut app);
        }
        let required: [(bool, &'static str); 5] = [
            (app.is_plugin_added::<IngestPlugin>(), "IngestPlugin"),
            (app.is_plugin_added::<SpatialPlugin>(), "SpatialPlugin"),
            (app.is_plugin_added::<InterestPlugin>(), "InterestPlugin"),
            (app.is_plugin_added::<ReplicatePlugin>(), "ReplicatePlugin"),
            (app.is_plugin_added::<PersistPlugin>(), "PersistPlugin"),
        ];
        if let Some(&(_, name)) = required.iter().find(|(added, _)| !added) {
            return Err(BuildError::MissingEnginePlugin(name));
        }
        seal_protocol(&mut app, self.name)?;
        app.finish();
        app.cleanup();
        Ok(SceneWorld { app })
    }
}

/// Fixes the game's protocol once every plugin registered its part: names
/// it, checks it and sizes the per-tick game snapshots.
fn seal_protocol(app: &mut App, name: &str) -> Result<(), BuildError> {
    let world = app.world_mut();
    world.init_resource::<GameRegistry>();
    let mut reg = world.resource_mut::<GameRegistry>();
    reg.schema.game = name.to_string();
    reg.schema.check()?;
    let wire = reg.wire();
    world.insert_resource(GameSnaps::for_wire(wire));
    Ok(())
}

impl SceneWorld {
    /// The default game: the engine's [`TesseraPlugins`] alone. Shorthand
    /// for `SceneWorld::builder(def, settings).build()`.
    pub fn new(def: SceneDef, settings: SceneSettings) -> Self {
        let mut app = Self::builder(def, settings).app;
        app.add_plugins(TesseraPlugins);
        // The engine registers no game components: nothing to refuse.
        let _ = seal_protocol(&mut app, "default");
        app.finish();
        app.cleanup();
        Self { app }
    }

    /// A builder for a scene made of the engine's plugins and a game's.
    ///
    /// It starts from the core every scene has: the resources of
    /// [`SceneInfo`], RNG, tick counter, directory, counters, outbox and
    /// [`TickMetrics`]; the tick pipeline, chained here and only here:
    ///
    /// ```text
    /// IngestSystems → GameSystems::AfterIngest → SimulateSystems
    ///   → GameSystems::AfterSimulate → SpatialSystems → InterestSystems
    ///   → ReplicateSystems → PersistSystems → MetricsSystems
    /// ```
    ///
    /// and the stage timing marks between the sets. [`SceneWorldBuilder::build`]
    /// adds [`TesseraPlugins`] and then the game's plugins.
    pub fn builder(def: SceneDef, settings: SceneSettings) -> SceneWorldBuilder {
        crate::compute_pool();
        let tick_hz = settings.tick_hz.unwrap_or(def.tick_hz).clamp(1, 1000);
        let flush_every = settings
            .flush_interval_ticks
            .map(u64::from)
            .unwrap_or(tick_hz as u64)
            .max(1);
        let net_quarantine = settings
            .net_id_quarantine_ticks
            .map_or(10 * tick_hz as u64, u64::from);
        let obstacles = RTree::bulk_load(
            def.obstacle
                .iter()
                .map(|r| Rectangle::from_corners(r.min, r.max))
                .collect(),
        );
        let info = SceneInfo {
            quantizer: Quantizer::new(def.size),
            tag: crate::protocol::scene_tag(&def.name),
            obstacles,
            tick_hz,
            dt: 1.0 / tick_hz as f32,
            flush_every,
            settings: SceneSettings {
                packet_budget: settings.packet_budget.min(crate::MAX_PACKET_BYTES),
                ..settings.clone()
            },
            def,
        };

        let mut app = App::new();
        app.set_error_handler(log_and_count);
        // Every stage is chained, so a multi-threaded executor has nothing to
        // overlap; worse, it runs systems on pool threads, from where their
        // `par_iter`s were seen not to spread. Systems run on the ticking
        // thread and fan out to the compute pool inside Interest and Replicate.
        app.edit_schedule(Update, |s| {
            s.set_executor(SingleThreadedExecutor::new());
        });
        app.insert_resource(SceneRng::new(settings.seed))
            .insert_resource(Inbox {
                pending: Vec::new(),
                capacity: settings.inbound_capacity,
            })
            .init_resource::<TickCount>()
            .insert_resource(Directory::with_quarantine(net_quarantine))
            .init_resource::<Counters>()
            .init_resource::<SceneOutbox>()
            .init_resource::<GameRegistry>()
            .init_resource::<crate::game::GameCounters>()
            .init_resource::<crate::game::GameMessages>()
            .init_resource::<crate::game::EventOutbox>()
            .init_resource::<crate::game::PendingActions>()
            .init_resource::<crate::channels::Channels>()
            .insert_resource(TickMetrics::new(settings.trace))
            .insert_resource(info)
            .configure_sets(
                Update,
                (
                    IngestSystems,
                    GameSystems::AfterIngest,
                    SimulateSystems,
                    GameSystems::AfterSimulate,
                    SpatialSystems,
                    InterestSystems,
                    ReplicateSystems,
                    PersistSystems,
                    MetricsSystems,
                )
                    .chain(),
            )
            .add_plugins(MetricsPlugin);
        SceneWorldBuilder {
            app,
            engine: TesseraPlugins.build(),
            game: Vec::new(),
            name: "default",
        }
    }

    /// Queues a command for the next tick.
    pub fn push(&mut self, cmd: Inbound) -> Result<(), PushError> {
        let world = self.app.world_mut();
        let mut inbox = world.resource_mut::<Inbox>();
        if inbox.pending.len() >= inbox.capacity {
            let cap = inbox.capacity;
            world.resource_mut::<Counters>().inbound_full += 1;
            return Err(PushError::Full(cap));
        }
        inbox.pending.push(cmd);
        Ok(())
    }

    /// Runs one fixed tick.
    pub fn tick(&mut self) -> TickOutput {
        let start = Instant::now();
        let tick = {
            let world = self.app.world_mut();
            let mut t = world.resource_mut::<TickCount>();
            t.0 += 1;
            let tick = t.0;
            world.resource_mut::<TickMetrics>().begin(tick);
            tick
        };
        self.app.update();
        let world = self.app.world_mut();
        let channel_ops = world
            .get_resource_mut::<crate::channels::Channels>()
            .map(|mut c| c.take())
            .unwrap_or_default();
        let mut out = world.resource_mut::<SceneOutbox>();
        let output = TickOutput {
            tick,
            packets: std::mem::take(&mut out.packets),
            events: std::mem::take(&mut out.events),
            game: std::mem::take(&mut out.game),
            save: out.save.take(),
            channel_ops,
        };
        world.resource_mut::<Counters>().command_errors = command_errors();
        world
            .resource_mut::<TickMetrics>()
            .record_tick(start, Instant::now());
        output
    }

    /// Spawns `n` wandering PCs, each an observer with its own (fake) client,
    /// so AOI and replication do the full work of `n` connected players.
    /// Client ids are `first_client..first_client + n`, avatars likewise.
    pub fn add_walkers(&mut self, n: u32, first_client: u64) {
        crate::movement::spawn_walkers(self.app.world_mut(), n, first_client);
    }

    pub fn tick_count(&self) -> u64 {
        self.app.world().resource::<TickCount>().0
    }

    pub fn tick_hz(&self) -> u32 {
        self.info().tick_hz
    }

    pub fn info(&self) -> &SceneInfo {
        self.app.world().resource::<SceneInfo>()
    }

    pub fn counters(&self) -> Counters {
        *self.app.world().resource::<Counters>()
    }

    /// The game's channel asks queued and refused so far.
    pub fn channel_stats(&self) -> crate::channels::ChannelStats {
        self.app
            .world()
            .get_resource::<crate::channels::Channels>()
            .map(|c| c.stats())
            .unwrap_or_default()
    }

    pub fn metrics(&self) -> &TickMetrics {
        self.app.world().resource::<TickMetrics>()
    }

    /// Run totals of AOI events (all observers, all ticks).
    pub fn aoi_totals(&self) -> crate::aoi::AoiTotals {
        self.app
            .world()
            .resource::<crate::interest::AoiRunTotals>()
            .0
    }

    /// Number of attached PCs.
    pub fn population(&self) -> usize {
        self.app.world().resource::<Directory>().clients.len()
    }

    /// The current state of every PC (online), sorted by avatar.
    pub fn pc_states(&mut self) -> Vec<PcState> {
        let tick = self.tick_count();
        let world = self.app.world_mut();
        let mut q = world.query::<(&Pc, &Position, &Pose, &crate::persist_game::GameFields)>();
        let mut v: Vec<PcState> = q
            .iter(world)
            .map(|(pc, pos, pose, f)| {
                let game = if crate::persist_game::game_bytes(&f.now)
                    > crate::persist_game::MAX_GAME_BYTES
                {
                    f.saved.clone()
                } else {
                    f.now.clone()
                };
                crate::persist::pc_state(pc, pos, pose, true, tick, game)
            })
            .collect();
        v.sort_by_key(|s| s.avatar);
        v
    }

    /// What `client`'s view converges to once every packet of the last tick
    /// lands (`None` if it is not attached).
    pub fn expected_view(&mut self, client: ClientId) -> Option<crate::replicate::ExpectedView> {
        crate::replicate::expected_view(self.app.world_mut(), client)
    }

    /// Every entity as the last tick's packets were built from it: the
    /// server's truth a client's view is checked against.
    pub fn snapshot(&self) -> SceneSnapshot {
        let world = self.app.world();
        let info = world.resource::<SceneInfo>();
        let index = world.resource::<crate::interest::SpatialIndex>();
        let game = world.resource::<GameSnaps>();
        let entities = index
            .snaps
            .iter()
            .enumerate()
            .filter(|(_, s)| s.alive)
            .map(|(id, s)| SnapshotEntity {
                id: id as NetId,
                kind: s.kind,
                figure: s.figure,
                q: s.q(),
                pos: s.pos,
                game: game.vals(id as NetId, false),
                own_game: if s.kind == crate::protocol::KIND_PC {
                    game.vals(id as NetId, true)
                } else {
                    Default::default()
                },
            })
            .collect();
        SceneSnapshot {
            scene: info.def.name.clone(),
            scene_tag: info.tag,
            epoch: info.settings.epoch,
            tick: self.tick_count() as u32,
            aoi_radius: info.settings.aoi_radius,
            aoi_margin: info.settings.aoi_margin,
            max_interest: info.settings.max_interest as u32,
            size: info.def.size,
            tick_hz: info.tick_hz,
            max_speed: info.settings.run_speed.max(info.settings.walk_speed)
                * info.settings.mount_factor.max(1.0),
            entities,
            tick_ns: self.metrics().last_tick,
            obstacles: info.def.obstacle.clone(),
        }
    }

    /// The game's own counters.
    pub fn game_counters(&self) -> crate::game::GameCounters {
        self.app
            .world()
            .resource::<crate::game::GameCounters>()
            .clone()
    }

    /// The game's protocol: its replicated components, actions and events.
    pub fn schema(&self) -> tessera_proto::GameSchema {
        self.app.world().resource::<GameRegistry>().schema.clone()
    }

    /// Read access for tests and tools.
    pub fn world(&self) -> &World {
        self.app.world()
    }

    pub fn world_mut(&mut self) -> &mut World {
        self.app.world_mut()
    }

    /// A hash of all simulated state: every entity's components (in net-id
    /// order), visible and known sets, the tick, the RNG and the id allocator.
    /// Two worlds with the same scene, seed and inputs hash the same.
    pub fn state_hash(&mut self) -> u64 {
        crate::hash::state_hash(self.app.world_mut())
    }
}
