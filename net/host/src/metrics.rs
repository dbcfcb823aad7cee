//! [`SceneMetrics`]: one hosted scene's figures for Prometheus, copied out
//! by its scene thread at the end of every tick into atomics, so a scrape
//! reads them without ever making the tick wait.

use std::sync::Arc;
use std::sync::atomic::{AtomicU8, AtomicU64, Ordering};
use std::time::Duration;

use tessera_metrics::{Exposition, Histogram};
use tessera_sim::components::Counters;
use tessera_sim::metrics::STAGES;
use tessera_sim::{SceneWorld, TickOutput};
use tessera_wire::Epoch;

use crate::clock::Clock;
use crate::output::OutputStats;
use crate::pacer::PacerStats;
use crate::runner::RunnerPhase;

/// Whole-tick buckets, seconds: fine below the 50 ms budget of a 20 Hz
/// scene, coarse above it. Fixed, so histograms add up across processes.
pub const TICK_BUCKETS: [f64; 14] = [
    0.001, 0.0025, 0.005, 0.01, 0.015, 0.02, 0.03, 0.04, 0.05, 0.06, 0.075, 0.1, 0.25, 1.0,
];

/// Stage buckets, seconds: a stage is a share of the tick.
pub const STAGE_BUCKETS: [f64; 12] = [
    0.000_05, 0.0001, 0.000_25, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25,
];

/// A scene counts as stalled when it has not ticked for this long (or for
/// this many tick periods, whichever is longer) while running.
pub const STALL_AFTER: Duration = Duration::from_secs(5);
const STALL_AFTER_TICKS: u32 = 20;

macro_rules! counters {
    ($($field:ident),* $(,)?) => {
        /// Cumulative counts, as the scene thread last copied them.
        #[derive(Debug, Default)]
        struct Cells {
            $($field: AtomicU64,)*
        }
    };
}

counters!(
    population,
    online,
    offline,
    ticks,
    late,
    caught_up,
    skipped,
    aoi_enters,
    aoi_leaves,
    repl_bytes,
    repl_packets,
    items_deferred,
    items_resent,
    packets_trimmed,
    leaves_forgotten,
    acks_stale,
    acks_invalid,
    queue_full,
    inbox_full,
    inputs_flood,
    inputs_invalid,
    unknown_client,
    speed_clamped,
    bounds_clamped,
    obstacle_blocked,
    mounts_refused,
    attach_rejected,
    channel_ops,
    actions_taken,
    actions_flood,
    actions_malformed,
    game_events_sent,
    game_events_dropped,
    game_events_unrouted,
    channel_refused_rate,
    channel_refused_bounds,
    output_packets_dropped,
    output_events_dropped,
    saves,
    save_errors,
);

/// One hosted scene's metrics. Written by its scene thread only (and the
/// command path for refusals); read by scrapes.
pub struct SceneMetrics {
    scene: String,
    epoch: Epoch,
    clock: Arc<dyn Clock>,
    tick: Histogram,
    stages: [Histogram; STAGES.len()],
    c: Cells,
    phase: AtomicU8,
    /// The game's own counters, as of the last tick.
    game: std::sync::Mutex<Vec<(&'static str, u64)>>,
    /// Clock time of the last tick, ns; 0 before the first.
    last_tick_ns: AtomicU64,
    tick_period_ns: AtomicU64,
}

impl std::fmt::Debug for SceneMetrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SceneMetrics")
            .field("scene", &self.scene)
            .field("epoch", &self.epoch)
            .finish_non_exhaustive()
    }
}

fn phase_code(p: RunnerPhase) -> u8 {
    match p {
        RunnerPhase::Loading => 0,
        RunnerPhase::Running => 1,
        RunnerPhase::Stopped => 2,
        RunnerPhase::Failed => 3,
    }
}

impl SceneMetrics {
    pub(crate) fn new(scene: String, epoch: Epoch, clock: Arc<dyn Clock>) -> Self {
        Self {
            scene,
            epoch,
            clock,
            tick: Histogram::seconds(&TICK_BUCKETS),
            stages: std::array::from_fn(|_| Histogram::seconds(&STAGE_BUCKETS)),
            c: Cells::default(),
            phase: AtomicU8::new(0),
            game: std::sync::Mutex::new(Vec::new()),
            last_tick_ns: AtomicU64::new(0),
            tick_period_ns: AtomicU64::new(0),
        }
    }

    pub fn scene(&self) -> &str {
        &self.scene
    }

    pub fn epoch(&self) -> Epoch {
        self.epoch
    }

    pub fn phase(&self) -> RunnerPhase {
        match self.phase.load(Ordering::Relaxed) {
            0 => RunnerPhase::Loading,
            1 => RunnerPhase::Running,
            2 => RunnerPhase::Stopped,
            _ => RunnerPhase::Failed,
        }
    }

    pub(crate) fn set_phase(&self, p: RunnerPhase) {
        self.phase.store(phase_code(p), Ordering::Relaxed);
    }

    pub(crate) fn started(&self, tick_hz: u32) {
        let period = 1_000_000_000 / u64::from(tick_hz.max(1));
        self.tick_period_ns.store(period, Ordering::Relaxed);
        self.stamp();
    }

    fn stamp(&self) {
        let now = u64::try_from(self.clock.now().as_nanos()).unwrap_or(u64::MAX);
        self.last_tick_ns.store(now.max(1), Ordering::Relaxed);
    }

    /// Copies what one tick did. Called on the scene thread right after
    /// the tick: relaxed stores and adds only.
    pub(crate) fn record_tick(
        &self,
        world: &SceneWorld,
        out: &TickOutput,
        online: usize,
        offline: usize,
        pacer: PacerStats,
        queue_full: u64,
    ) {
        self.stamp();
        let m = world.metrics();
        self.tick.observe(m.last_tick);
        for (h, &ns) in self.stages.iter().zip(&m.last_stages) {
            h.observe(ns);
        }
        let (mut packets, mut bytes) = (0u64, 0u64);
        for (_, p) in out.packets.iter() {
            packets += 1;
            bytes += p.len() as u64;
        }
        let set = |a: &AtomicU64, v: u64| a.store(v, Ordering::Relaxed);
        let c = &self.c;
        c.repl_packets.fetch_add(packets, Ordering::Relaxed);
        c.repl_bytes.fetch_add(bytes, Ordering::Relaxed);
        set(&c.population, world.population() as u64);
        set(&c.online, online as u64);
        set(&c.offline, offline as u64);
        set(&c.ticks, world.tick_count());
        set(&c.late, pacer.late);
        set(&c.caught_up, pacer.caught_up);
        set(&c.skipped, pacer.skipped);
        let aoi = world.aoi_totals();
        set(&c.aoi_enters, aoi.enter);
        set(&c.aoi_leaves, aoi.leave);
        let k: Counters = world.counters();
        set(&c.items_deferred, k.items_deferred);
        set(&c.items_resent, k.items_resent);
        set(&c.packets_trimmed, k.packets_trimmed);
        set(&c.leaves_forgotten, k.leaves_forgotten);
        set(&c.acks_stale, k.acks_stale);
        set(&c.acks_invalid, k.acks_invalid);
        set(&c.queue_full, queue_full);
        set(&c.inbox_full, k.inbound_full);
        set(&c.inputs_flood, k.inputs_flood_dropped);
        set(&c.inputs_invalid, k.inputs_invalid_dropped);
        set(&c.unknown_client, k.unknown_client);
        set(&c.speed_clamped, k.inputs_speed_clamped);
        set(&c.bounds_clamped, k.bounds_clamped);
        set(&c.obstacle_blocked, k.obstacle_blocked);
        set(&c.mounts_refused, k.mounts_refused);
        set(&c.attach_rejected, k.attach_rejected);
        let ch = world.channel_stats();
        set(&c.channel_ops, ch.queued);
        set(&c.channel_refused_rate, ch.refused_rate);
        set(&c.channel_refused_bounds, ch.refused_bounds);
        set(&c.actions_taken, k.actions_taken);
        set(&c.actions_flood, k.actions_flood_dropped);
        set(&c.actions_malformed, k.actions_malformed);
        set(&c.game_events_sent, k.events_sent);
        set(&c.game_events_dropped, k.events_dropped);
        set(&c.game_events_unrouted, k.events_unrouted);
        let counters = world.game_counters();
        if counters.iter().next().is_some() {
            let mut game = self.game.lock().unwrap_or_else(|e| e.into_inner());
            game.clear();
            game.extend(counters.iter());
        }
    }

    /// Copies the slower-moving figures (at each load report).
    pub(crate) fn record_report(&self, output: OutputStats, saves: u64, save_errors: u64) {
        let set = |a: &AtomicU64, v: u64| a.store(v, Ordering::Relaxed);
        set(&self.c.output_packets_dropped, output.packets_dropped);
        set(&self.c.output_events_dropped, output.events_dropped);
        set(&self.c.saves, saves);
        set(&self.c.save_errors, save_errors);
    }

    /// `Err` when the scene thread failed, or has not ticked for
    /// [`STALL_AFTER`] (or 20 periods) while running.
    pub fn live(&self) -> Result<(), String> {
        match self.phase() {
            RunnerPhase::Failed => return Err(format!("scene {} failed", self.scene)),
            RunnerPhase::Running => {}
            RunnerPhase::Loading | RunnerPhase::Stopped => return Ok(()),
        }
        let last = self.last_tick_ns.load(Ordering::Relaxed);
        let now = u64::try_from(self.clock.now().as_nanos()).unwrap_or(u64::MAX);
        let limit = (self.tick_period_ns.load(Ordering::Relaxed) * u64::from(STALL_AFTER_TICKS))
            .max(STALL_AFTER.as_nanos() as u64);
        let idle = now.saturating_sub(last);
        if last != 0 && idle > limit {
            return Err(format!(
                "scene {} has not ticked for {:.1} s",
                self.scene,
                idle as f64 / 1e9
            ));
        }
        Ok(())
    }

    /// Writes this scene's samples, labelled `server` and `scene`.
    pub fn collect(&self, server: &str, out: &mut Exposition) {
        let l = [("server", server), ("scene", self.scene.as_str())];
        let c = &self.c;
        let g = |a: &AtomicU64| a.load(Ordering::Relaxed);
        out.histogram(
            "tessera_scene_tick_duration_seconds",
            "Whole-tick wall time of a hosted scene (the budget is 1/tick_hz: 50 ms at 20 Hz).",
            &l,
            &self.tick.snapshot(),
        );
        for (stage, h) in STAGES.iter().zip(&self.stages) {
            out.histogram(
                "tessera_scene_stage_duration_seconds",
                "Wall time of one stage of the tick pipeline.",
                &[l[0], l[1], ("stage", stage)],
                &h.snapshot(),
            );
        }
        out.gauge(
            "tessera_scene_epoch",
            "Placement epoch of the hosted scene.",
            &l,
            self.epoch as f64,
        );
        out.gauge(
            "tessera_scene_population",
            "PCs in the scene (players and synthetic walkers).",
            &l,
            g(&c.population) as f64,
        );
        out.gauge(
            "tessera_scene_online",
            "Avatars attached for a player session.",
            &l,
            g(&c.online) as f64,
        );
        out.gauge(
            "tessera_scene_offline_avatars",
            "Offline avatars whose state the scene keeps for their next attach.",
            &l,
            g(&c.offline) as f64,
        );
        out.counter("tessera_scene_ticks_total", "Ticks run.", &l, g(&c.ticks));
        out.counter(
            "tessera_scene_ticks_late_total",
            "Ticks a full period overdue when the scene thread woke (each caught up or skipped).",
            &l,
            g(&c.late),
        );
        out.counter(
            "tessera_scene_ticks_caught_up_total",
            "Late ticks run in a catch-up burst.",
            &l,
            g(&c.caught_up),
        );
        out.counter(
            "tessera_scene_ticks_skipped_total",
            "Late ticks given up because the burst limit was reached.",
            &l,
            g(&c.skipped),
        );
        for (kind, v) in [("enter", g(&c.aoi_enters)), ("leave", g(&c.aoi_leaves))] {
            out.counter(
                "tessera_scene_aoi_events_total",
                "Entities entering or leaving an observer's area of interest.",
                &[l[0], l[1], ("event", kind)],
                v,
            );
        }
        out.counter(
            "tessera_scene_replication_bytes_total",
            "Bytes of state packets built for clients.",
            &l,
            g(&c.repl_bytes),
        );
        out.counter(
            "tessera_scene_replication_packets_total",
            "State packets built for clients.",
            &l,
            g(&c.repl_packets),
        );
        for (fate, v) in [
            ("deferred", g(&c.items_deferred)),
            ("resent", g(&c.items_resent)),
            ("forgotten", g(&c.leaves_forgotten)),
        ] {
            out.counter(
                "tessera_scene_replication_items_total",
                "Replication items by fate: deferred to a later tick by the byte budget, resent after a lost packet, leaves forgotten for a client that does not acknowledge.",
                &[l[0], l[1], ("fate", fate)],
                v,
            );
        }
        out.counter(
            "tessera_scene_replication_packets_trimmed_total",
            "Packets re-encoded smaller after the size estimate.",
            &l,
            g(&c.packets_trimmed),
        );
        for (reason, v) in [("stale", g(&c.acks_stale)), ("invalid", g(&c.acks_invalid))] {
            out.counter(
                "tessera_scene_acks_ignored_total",
                "Client acknowledgements ignored: stale (another scene, placement or stay) or invalid (a tick still to come).",
                &[l[0], l[1], ("reason", reason)],
                v,
            );
        }
        for (reason, v) in [
            ("queue_full", g(&c.queue_full)),
            ("inbox_full", g(&c.inbox_full)),
            ("flood", g(&c.inputs_flood)),
            ("invalid", g(&c.inputs_invalid)),
            ("unknown_client", g(&c.unknown_client)),
        ] {
            out.counter(
                "tessera_scene_inputs_refused_total",
                "Commands refused: the host queue or the world inbox full, inputs beyond the per-tick cap, non-finite inputs, or for a client not attached.",
                &[l[0], l[1], ("reason", reason)],
                v,
            );
        }
        for (reason, v) in [
            ("speed", g(&c.speed_clamped)),
            ("bounds", g(&c.bounds_clamped)),
            ("obstacle", g(&c.obstacle_blocked)),
            ("mount", g(&c.mounts_refused)),
        ] {
            out.counter(
                "tessera_scene_moves_clamped_total",
                "Moves clamped: a direction longer than 1 (a speed hack), the scene bounds, an obstacle, a mount the scene does not allow (ridden on foot).",
                &[l[0], l[1], ("reason", reason)],
                v,
            );
        }
        out.counter(
            "tessera_scene_attaches_rejected_total",
            "Attaches the scene refused.",
            &l,
            g(&c.attach_rejected),
        );
        out.counter(
            "tessera_scene_channel_ops_total",
            "Channel asks the game queued for the coordinator.",
            &l,
            g(&c.channel_ops),
        );
        for (reason, v) in [
            ("rate", g(&c.channel_refused_rate)),
            ("bounds", g(&c.channel_refused_bounds)),
        ] {
            out.counter(
                "tessera_scene_channel_ops_refused_total",
                "Channel asks refused in the scene: over the per-tick cap, or a name, message or recipient list out of bounds.",
                &[l[0], l[1], ("reason", reason)],
                v,
            );
        }
        for (outcome, v) in [
            ("taken", g(&c.actions_taken)),
            ("flood", g(&c.actions_flood)),
            ("malformed", g(&c.actions_malformed)),
        ] {
            out.counter(
                "tessera_scene_actions_total",
                "Game actions: handed to the game, dropped over their rate, or malformed (the sender kicked).",
                &[l[0], l[1], ("outcome", outcome)],
                v,
            );
        }
        for (fate, v) in [
            ("sent", g(&c.game_events_sent)),
            ("dropped", g(&c.game_events_dropped)),
            ("unrouted", g(&c.game_events_unrouted)),
        ] {
            out.counter(
                "tessera_scene_game_events_total",
                "Game events: sent (one per receiving client), dropped (unregistered, too large, over the tick's cap), or with nobody to go to.",
                &[l[0], l[1], ("fate", fate)],
                v,
            );
        }
        for (name, v) in self.game.lock().unwrap_or_else(|e| e.into_inner()).iter() {
            out.counter(
                "tessera_scene_game_counter_total",
                "The game's own counters (what its rules refused, what happened), by name.",
                &[l[0], l[1], ("name", name)],
                *v,
            );
        }
        for (what, v) in [
            ("packets", g(&c.output_packets_dropped)),
            ("events", g(&c.output_events_dropped)),
        ] {
            out.counter(
                "tessera_scene_output_dropped_total",
                "Tick output dropped because the networking side fell behind.",
                &[l[0], l[1], ("kind", what)],
                v,
            );
        }
        out.counter(
            "tessera_scene_save_batches_total",
            "Save batches handed to the save sink.",
            &l,
            g(&c.saves),
        );
        out.counter(
            "tessera_scene_save_errors_total",
            "Save batches the save sink refused.",
            &l,
            g(&c.save_errors),
        );
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use std::time::Instant;

    use tessera_sim::{SceneDef, SceneSettings};

    use super::*;
    use crate::{ManualClock, MemorySink, RunnerSettings, SceneHost};

    const PERIOD: Duration = Duration::from_millis(50);

    fn host(clock: &ManualClock) -> SceneHost {
        let settings = RunnerSettings {
            report_every_ticks: 1,
            scene: SceneSettings::default(),
            ..Default::default()
        };
        SceneHost::new(
            settings,
            Arc::new(clock.clone()),
            Arc::new(MemorySink::new()),
        )
    }

    fn wait_for(what: &str, mut cond: impl FnMut() -> bool) {
        let until = Instant::now() + Duration::from_secs(20);
        while !cond() {
            assert!(Instant::now() < until, "timed out waiting for {what}");
            std::thread::sleep(Duration::from_millis(1));
        }
    }

    fn ticks(m: &SceneMetrics) -> u64 {
        m.c.ticks.load(Ordering::Relaxed)
    }

    #[test]
    fn every_tick_is_copied_out_and_exposed_with_the_scene_and_server() {
        let clock = ManualClock::new();
        let mut h = host(&clock);
        h.place("a", SceneDef::open_field("a", 200.0), 3, Vec::new())
            .unwrap();
        h.command(
            "a",
            tessera_sim::Inbound::Attach {
                client: 1,
                avatar: 1,
                state: None,
                figure: 0,
            },
        )
        .unwrap();
        let m = Arc::clone(&h.metrics()[0]);
        for n in 1..=5 {
            clock.advance(PERIOD);
            wait_for("a tick", || ticks(&m) >= n);
        }
        let mut out = Exposition::new();
        m.collect("s1", &mut out);
        let text = out.render();
        let l = "{server=\"s1\",scene=\"a\"}";
        assert!(
            text.contains(&format!("tessera_scene_tick_duration_seconds_count{l} 5\n"))
                || text.contains(&format!("tessera_scene_tick_duration_seconds_count{l} 6\n")),
            "{text}"
        );
        assert!(
            text.contains(&format!("tessera_scene_epoch{l} 3\n")),
            "{text}"
        );
        assert!(
            text.contains(&format!("tessera_scene_population{l} 1\n")),
            "{text}"
        );
        assert!(
            text.contains(&format!("tessera_scene_online{l} 1\n")),
            "{text}"
        );
        assert!(
            text.contains("tessera_scene_stage_duration_seconds_count{server=\"s1\",scene=\"a\",stage=\"interest\"}"),
            "{text}"
        );
        assert!(m.c.repl_packets.load(Ordering::Relaxed) > 0);
        assert!(m.c.repl_bytes.load(Ordering::Relaxed) > 0);
        assert_eq!(m.live(), Ok(()));
        h.shutdown();
    }

    #[test]
    fn a_scene_that_stops_ticking_is_not_live_until_it_ticks_again() {
        let clock = ManualClock::new();
        let mut h = host(&clock);
        h.place("a", SceneDef::open_field("a", 200.0), 1, Vec::new())
            .unwrap();
        let m = Arc::clone(&h.metrics()[0]);
        clock.advance(PERIOD);
        wait_for("a tick", || ticks(&m) >= 1);
        let resume = h.runner("a").unwrap().pause();
        clock.advance(STALL_AFTER + PERIOD);
        let why = m.live().unwrap_err();
        assert!(why.contains("scene a has not ticked"), "{why}");
        drop(resume);
        wait_for("the scene to tick again", || m.live().is_ok());
        h.runner("a").unwrap().inject_panic();
        wait_for("the scene to fail", || m.phase() == RunnerPhase::Failed);
        assert_eq!(m.live(), Err("scene a failed".into()));
        let _ = h.drop_scene("a", true);
    }
}
