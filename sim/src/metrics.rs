//! Tick metrics: per-stage and whole-tick durations in HDR histograms, and an
//! optional per-tick trace of every stage (for Chrome / Perfetto).
//!
//! Wall-clock time is observed here and only here; it never feeds back into
//! the simulation, so determinism is unaffected.

use std::time::Instant;

use bevy_app::{App, Plugin, Update};
use bevy_ecs::prelude::*;
use hdrhistogram::Histogram;

use bevy_ecs::intern::Interned;
use bevy_ecs::schedule::SystemSet;

use crate::{
    GameSystems, IngestSystems, InterestSystems, MetricsSystems, PersistSystems, ReplicateSystems,
    SimulateSystems, SpatialSystems,
};

type InternedSystemSet = Interned<dyn SystemSet>;

/// The timed stages of a tick, in order. The game's sets are timed with the
/// engine stage before them: "ingest" covers [`IngestSystems`] and
/// [`GameSystems::AfterIngest`], "simulate" covers [`SimulateSystems`] and
/// [`GameSystems::AfterSimulate`]; each game system also has its own row
/// among the systems.
pub const STAGES: [&str; 6] = [
    "ingest",
    "simulate",
    "spatial",
    "interest",
    "replicate",
    "persist",
];

/// One timed system, as registered by [`timing_mark`] or
/// [`TimedSystemsExt`]: its name in the tick report and the trace, and the
/// stage (index into [`STAGES`]) whose set it runs in, if it is one of the
/// pipeline's sets.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TimedSystem {
    pub name: String,
    pub stage: Option<usize>,
}

/// The stage (index into [`STAGES`]) a pipeline set is timed under.
fn stage_of(set: InternedSystemSet) -> Option<usize> {
    let stages: [(InternedSystemSet, usize); 8] = [
        (IngestSystems.intern(), 0),
        (GameSystems::AfterIngest.intern(), 0),
        (SimulateSystems.intern(), 1),
        (GameSystems::AfterSimulate.intern(), 1),
        (SpatialSystems.intern(), 2),
        (InterestSystems.intern(), 3),
        (ReplicateSystems.intern(), 4),
        (PersistSystems.intern(), 5),
    ];
    stages.iter().find(|(s, _)| *s == set).map(|&(_, i)| i)
}

/// Registers a timed system named `name` in `set` and returns its timing
/// mark: a system to chain right after it (the mark records the time since
/// the previous mark, so the marks of one set must run in a chain).
/// A name already taken gets a `#2`, `#3`, … suffix, so every row of the
/// report is its own. The engine's plugins time their systems with this.
pub fn timing_mark(
    app: &mut App,
    set: impl SystemSet,
    name: impl Into<String>,
) -> impl FnMut(ResMut<TickMetrics>) + Send + Sync + 'static {
    let stage = stage_of(set.intern());
    let index = app
        .world_mut()
        .get_resource_or_insert_with(|| TickMetrics::new(false))
        .register(name.into(), stage);
    move |mut m: ResMut<TickMetrics>| m.end_system(index)
}

/// A set per timed system added by [`TimedSystemsExt`] (or engine chain,
/// see [`engine_slot`]), to order the timed systems of one set after each
/// other.
#[derive(SystemSet, Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) struct TimedSlot(usize);

/// Makes the engine chain whose marks were registered last the first slot
/// of `set`, so that timed systems a game adds to the same set later run
/// after it (put the chain in the returned set). For the default movement
/// in [`SimulateSystems`], which a game may extend.
pub(crate) fn engine_slot(app: &mut App, set: impl SystemSet) -> TimedSlot {
    let set = set.intern();
    let index = app
        .world_mut()
        .get_resource_or_insert_with(|| TickMetrics::new(false))
        .names
        .len()
        // The chain's last mark: an index no other slot takes.
        .saturating_sub(1);
    app.world_mut()
        .resource_mut::<TickMetrics>()
        .set_last_slot(set, index);
    TimedSlot(index)
}

/// Adds game systems that the tick report and the trace time by name.
///
/// Each system is added to the tick (`Update`) in `set` — one of
/// [`GameSystems`], or [`SimulateSystems`] for a plugin that replaces
/// movement — followed by its timing mark. The timed systems of one set run
/// one after the other in the order they were added (their marks must not
/// interleave; it also keeps the order deterministic). They are not ordered
/// against the engine's own chains, except the default movement's: a game
/// may add timed systems to [`SimulateSystems`] after `MovementPlugin`'s,
/// or in place of them.
pub trait TimedSystemsExt {
    /// Adds `system` named after its function (`my_game::regen` → `regen`).
    fn add_timed_system<M>(
        &mut self,
        set: impl SystemSet,
        system: impl IntoSystem<(), (), M>,
    ) -> &mut Self;

    /// Adds `system` under the given name (for closures, or to disambiguate).
    fn add_timed_system_as<M>(
        &mut self,
        set: impl SystemSet,
        name: impl Into<String>,
        system: impl IntoSystem<(), (), M>,
    ) -> &mut Self;
}

/// The last path segment of a type name, without generic arguments:
/// `my_game::rules::regen` → `regen`.
fn short_name(type_name: &str) -> &str {
    let base = type_name.split('<').next().unwrap_or(type_name);
    base.rsplit("::").next().unwrap_or(base)
}

fn type_name_of<T>(_: &T) -> &'static str {
    std::any::type_name::<T>()
}

impl TimedSystemsExt for App {
    fn add_timed_system<M>(
        &mut self,
        set: impl SystemSet,
        system: impl IntoSystem<(), (), M>,
    ) -> &mut Self {
        let name = short_name(type_name_of(&system)).to_owned();
        self.add_timed_system_as(set, name, system)
    }

    fn add_timed_system_as<M>(
        &mut self,
        set: impl SystemSet,
        name: impl Into<String>,
        system: impl IntoSystem<(), (), M>,
    ) -> &mut Self {
        let set = set.intern();
        let mark = timing_mark(self, set, name);
        let index = self.world().resource::<TickMetrics>().names.len() - 1;
        let prev = self
            .world_mut()
            .resource_mut::<TickMetrics>()
            .set_last_slot(set, index);
        let configs = (IntoSystem::into_system(system), mark)
            .chain()
            .in_set(set)
            .in_set(TimedSlot(index));
        match prev {
            Some(prev) => self.add_systems(Update, configs.after(TimedSlot(prev))),
            None => self.add_systems(Update, configs),
        }
    }
}

/// What a traced span covers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SpanKind {
    Tick,
    /// Index into [`STAGES`].
    Stage(usize),
    /// Index into [`TickMetrics::names`].
    System(usize),
}

/// One traced span, start and duration in nanoseconds since the world was created.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Span {
    pub tick: u64,
    pub kind: SpanKind,
    pub start_ns: u64,
    pub dur_ns: u64,
}

#[derive(Resource, Debug)]
pub struct TickMetrics {
    origin: Instant,
    mark: Option<Instant>,
    sys_mark: Option<Instant>,
    /// Nanoseconds per stage, one histogram per entry of [`STAGES`].
    pub stages: Vec<Histogram<u64>>,
    /// Nanoseconds per timed system, one histogram per entry of `names`.
    pub systems: Vec<Histogram<u64>>,
    /// Every timed system of the tick, in the order registered (engine
    /// systems in pipeline order, then the game's).
    pub names: Vec<TimedSystem>,
    /// Nanoseconds per whole tick (measured by `SceneWorld::tick`).
    pub tick: Histogram<u64>,
    pub trace: Option<Vec<Span>>,
    /// The last tick's stage durations, ns (one per [`STAGES`]): what a host
    /// copies out at the end of a tick, say into its own histograms.
    pub last_stages: [u64; STAGES.len()],
    /// The last tick's whole duration, ns.
    pub last_tick: u64,
    current_tick: u64,
    /// The last timed slot of each set (see [`TimedSystemsExt`]). Kept
    /// here rather than in a resource of its own: adding a resource when
    /// the world is built was seen to change the default game's
    /// `state_hash`.
    slots: Vec<(InternedSystemSet, usize)>,
}

/// A nanosecond histogram: 1 ns to 60 s at 3 significant figures.
pub fn histogram() -> Histogram<u64> {
    // 1 ns .. 60 s at 3 significant figures; larger values saturate.
    Histogram::new_with_bounds(1, 60_000_000_000, 3).expect("constant, valid histogram bounds")
}

impl TickMetrics {
    pub fn new(trace: bool) -> Self {
        Self {
            origin: Instant::now(),
            mark: None,
            sys_mark: None,
            stages: STAGES.iter().map(|_| histogram()).collect(),
            systems: Vec::new(),
            names: Vec::new(),
            tick: histogram(),
            trace: trace.then(Vec::new),
            last_stages: [0; STAGES.len()],
            last_tick: 0,
            current_tick: 0,
            slots: Vec::new(),
        }
    }

    /// Adds a timed system and returns its index (see [`timing_mark`]).
    fn register(&mut self, name: String, stage: Option<usize>) -> usize {
        let taken = |n: &str| self.names.iter().any(|t| t.name == n);
        let mut unique = name.clone();
        let mut k = 2;
        while taken(&unique) {
            unique = format!("{name}#{k}");
            k += 1;
        }
        self.names.push(TimedSystem {
            name: unique,
            stage,
        });
        self.systems.push(histogram());
        self.names.len() - 1
    }

    /// Makes `index` the last timed slot of `set`; returns the one before.
    fn set_last_slot(&mut self, set: InternedSystemSet, index: usize) -> Option<usize> {
        match self.slots.iter_mut().find(|(s, _)| *s == set) {
            Some((_, last)) => Some(std::mem::replace(last, index)),
            None => {
                self.slots.push((set, index));
                None
            }
        }
    }

    /// The name of timed system `i` (as in [`SpanKind::System`]).
    pub fn system_name(&self, i: usize) -> &str {
        self.names.get(i).map_or("?", |t| t.name.as_str())
    }

    /// The timed systems with their histograms, in registration order.
    pub fn timed_systems(&self) -> impl Iterator<Item = (&TimedSystem, &Histogram<u64>)> {
        self.names.iter().zip(&self.systems)
    }

    pub(crate) fn begin(&mut self, tick: u64) {
        self.current_tick = tick;
        let now = Instant::now();
        self.mark = Some(now);
        self.sys_mark = Some(now);
    }

    /// Records the span from `start` to `now` into `hist` and the trace.
    fn record(&mut self, kind: SpanKind, start: Option<Instant>, now: Instant) {
        let Some(start) = start else { return };
        let dur = now.duration_since(start).as_nanos() as u64;
        match kind {
            SpanKind::Tick => self.last_tick = dur,
            SpanKind::Stage(i) => self.last_stages[i] = dur,
            SpanKind::System(_) => {}
        }
        let hist = match kind {
            SpanKind::Tick => &mut self.tick,
            SpanKind::Stage(i) => &mut self.stages[i],
            SpanKind::System(i) => match self.systems.get_mut(i) {
                Some(h) => h,
                None => return,
            },
        };
        hist.saturating_record(dur.max(1));
        if let Some(trace) = &mut self.trace {
            trace.push(Span {
                tick: self.current_tick,
                kind,
                start_ns: start.duration_since(self.origin).as_nanos() as u64,
                dur_ns: dur,
            });
        }
    }

    fn end_stage(&mut self, stage: usize) {
        let now = Instant::now();
        self.record(SpanKind::Stage(stage), self.mark, now);
        self.mark = Some(now);
        // The stage mark itself is not any system's time.
        self.sys_mark = Some(now);
    }

    fn end_system(&mut self, system: usize) {
        let now = Instant::now();
        self.record(SpanKind::System(system), self.sys_mark, now);
        self.sys_mark = Some(now);
    }

    pub(crate) fn record_tick(&mut self, start: Instant, end: Instant) {
        self.record(SpanKind::Tick, Some(start), end);
    }
}

fn stage_done<const S: usize>(mut m: ResMut<TickMetrics>) {
    m.end_stage(S);
}

/// Times every stage of the tick. Its marks sit between the stage sets, so
/// each covers exactly one stage (including its deferred commands). Part of
/// every scene (the builder adds it, with the [`TickMetrics`] resource): the
/// marks also order the game's sets against the engine's.
pub(crate) struct MetricsPlugin;

impl Plugin for MetricsPlugin {
    fn build(&self, app: &mut App) {
        app.add_systems(
            Update,
            (
                stage_done::<0>
                    .after(GameSystems::AfterIngest)
                    .before(SimulateSystems),
                stage_done::<1>
                    .after(GameSystems::AfterSimulate)
                    .before(SpatialSystems),
                stage_done::<2>
                    .after(SpatialSystems)
                    .before(InterestSystems),
                stage_done::<3>
                    .after(InterestSystems)
                    .before(ReplicateSystems),
                stage_done::<4>
                    .after(ReplicateSystems)
                    .before(PersistSystems),
                stage_done::<5>.after(PersistSystems).in_set(MetricsSystems),
            ),
        );
    }
}
