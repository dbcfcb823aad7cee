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

/// One traced span: stage index (or `usize::MAX` for the whole tick), start
/// and duration in nanoseconds since the world was created.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Span {
    pub tick: u64,
    pub stage: usize,
    pub start_ns: u64,
    pub dur_ns: u64,
}

#[derive(Resource, Debug)]
pub struct TickMetrics {
    origin: Instant,
    mark: Option<Instant>,
    /// Nanoseconds per stage, one histogram per entry of [`STAGES`].
    pub stages: Vec<Histogram<u64>>,
    /// Nanoseconds per whole tick (measured by `SceneWorld::tick`).
    pub tick: Histogram<u64>,
    pub trace: Option<Vec<Span>>,
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
            stages: STAGES.iter().map(|_| histogram()).collect(),
            tick: histogram(),
            trace: trace.then(Vec::new),
            current_tick: 0,
        }
    }

    pub(crate) fn begin(&mut self, tick: u64) {
        self.current_tick = tick;
        self.mark = Some(Instant::now());
    }

    fn end_stage(&mut self, stage: usize) {
        let now = Instant::now();
        if let Some(start) = self.mark {
            let dur = now.duration_since(start).as_nanos() as u64;
            self.stages[stage].saturating_record(dur.max(1));
            if let Some(trace) = &mut self.trace {
                trace.push(Span {
                    tick: self.current_tick,
                    stage,
                    start_ns: start.duration_since(self.origin).as_nanos() as u64,
                    dur_ns: dur,
                });
            }
        }
        self.mark = Some(now);
    }

    pub(crate) fn record_tick(&mut self, start: Instant, end: Instant) {
        let dur = end.duration_since(start).as_nanos() as u64;
        self.tick.saturating_record(dur.max(1));
        if let Some(trace) = &mut self.trace {
            trace.push(Span {
                tick: self.current_tick,
                stage: usize::MAX,
                start_ns: start.duration_since(self.origin).as_nanos() as u64,
                dur_ns: dur,
            });
        }
    }
}

fn stage_done<const S: usize>(mut m: ResMut<TickMetrics>) {
    m.end_stage(S);
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
