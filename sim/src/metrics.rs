//! Tick metrics: per-stage and whole-tick durations in HDR histograms, and an
//! optional per-tick trace of every stage (for Chrome / Perfetto).
//!
//! Wall-clock time is observed here and only here; it never feeds back into
//! the simulation, so determinism is unaffected.

use std::time::Instant;

use bevy_app::{App, Plugin, Update};
use bevy_ecs::prelude::*;
use hdrhistogram::Histogram;

use crate::{
    IngestSystems, InterestSystems, MetricsSystems, PersistSystems, ReplicateSystems,
    SimulateSystems, SpatialSystems,
};

/// The timed stages of a tick, in order.
pub const STAGES: [&str; 6] = [
    "ingest",
    "simulate",
    "spatial",
    "interest",
    "replicate",
    "persist",
];

/// Every timed system of the tick, in order, with the index of its stage.
/// Each plugin puts `done::<{ sys::NAME }>` right after the system in its chain.
pub const SYSTEMS: [(usize, &str); 15] = [
    (0, "drain_inbox"),
    (0, "apply_attaches"),
    (0, "apply_inputs"),
    (0, "apply_detaches"),
    (1, "intent_to_velocity"),
    (1, "wander"),
    (1, "integrate"),
    (1, "portals"),
    (2, "rebuild_index"),
    (3, "update_interest"),
    (3, "sum_interest"),
    (4, "build_packets"),
    (4, "collect_packets"),
    (5, "mark_dirty"),
    (5, "flush"),
];

/// Indices into [`SYSTEMS`].
pub mod sys {
    pub const DRAIN_INBOX: usize = 0;
    pub const APPLY_ATTACHES: usize = 1;
    pub const APPLY_INPUTS: usize = 2;
    pub const APPLY_DETACHES: usize = 3;
    pub const INTENT_TO_VELOCITY: usize = 4;
    pub const WANDER: usize = 5;
    pub const INTEGRATE: usize = 6;
    pub const PORTALS: usize = 7;
    pub const REBUILD_INDEX: usize = 8;
    pub const UPDATE_INTEREST: usize = 9;
    pub const SUM_INTEREST: usize = 10;
    pub const BUILD_PACKETS: usize = 11;
    pub const COLLECT_PACKETS: usize = 12;
    pub const MARK_DIRTY: usize = 13;
    pub const FLUSH: usize = 14;
}

/// What a traced span covers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SpanKind {
    Tick,
    /// Index into [`STAGES`].
    Stage(usize),
    /// Index into [`SYSTEMS`].
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
    /// Nanoseconds per system, one histogram per entry of [`SYSTEMS`].
    pub systems: Vec<Histogram<u64>>,
    /// Nanoseconds per whole tick (measured by `SceneWorld::tick`).
    pub tick: Histogram<u64>,
    pub trace: Option<Vec<Span>>,
    /// The last tick's stage durations, ns (one per [`STAGES`]): what a host
    /// copies out at the end of a tick, say into its own histograms.
    pub last_stages: [u64; STAGES.len()],
    /// The last tick's whole duration, ns.
    pub last_tick: u64,
    current_tick: u64,
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
            systems: SYSTEMS.iter().map(|_| histogram()).collect(),
            tick: histogram(),
            trace: trace.then(Vec::new),
            last_stages: [0; STAGES.len()],
            last_tick: 0,
            current_tick: 0,
        }
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
            SpanKind::System(i) => &mut self.systems[i],
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

/// The timing mark a plugin chains right after its system number `I`
/// (an index into [`SYSTEMS`]).
pub fn done<const I: usize>(mut m: ResMut<TickMetrics>) {
    m.end_system(I);
}

/// Times every stage of the tick. Its marks sit between the stage sets, so
/// each covers exactly one set (including its deferred commands).
pub struct MetricsPlugin {
    pub trace: bool,
}

impl Plugin for MetricsPlugin {
    fn build(&self, app: &mut App) {
        app.insert_resource(TickMetrics::new(self.trace));
        app.add_systems(
            Update,
            (
                stage_done::<0>.after(IngestSystems).before(SimulateSystems),
                stage_done::<1>
                    .after(SimulateSystems)
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
